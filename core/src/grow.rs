//! How the models' lists grow. A model of a million members holds millions of lists; `Vec::push`
//! doubles, so each would carry up to as much spare room as content.
//!
//! The few tables of a row per member or per letter (megabytes each) are the exception: they
//! double. Their spare room is never written, so the OS never backs it with memory, while growing
//! them by a quarter would copy each table — into freshly faulted pages — about four times over
//! on its way to full size.

/// Pushes onto a long list (a day's flow records, a branch's intervals, every member), growing it
/// by a quarter rather than doubling.
pub fn push_gently<T>(list: &mut Vec<T>, item: T) {
    reserve_gently(list);
    list.push(item);
}

/// Inserts into a long list at `index`, growing it as `push_gently` does.
pub fn insert_gently<T>(list: &mut Vec<T>, index: usize, item: T) {
    reserve_gently(list);
    list.insert(index, item);
}

/// Room for one more, by a quarter of the list when it is full.
fn reserve_gently<T>(list: &mut Vec<T>) {
    if list.len() == list.capacity() {
        list.reserve_exact((list.len() / 4).max(8));
    }
}

/// Pushes onto a table of a row per member or letter (see the module docs: it doubles).
pub fn push_to_table<T>(table: &mut Vec<T>, row: T) {
    table.push(row);
}

/// Makes a table at least `len` rows long, filling with `fill` (for tables indexed by a number
/// given elsewhere, such as the write model's member numbers); it doubles as it grows.
pub fn grow_table_to<T>(table: &mut Vec<T>, len: usize, fill: impl FnMut() -> T) {
    if table.len() < len {
        table.resize_with(len, fill);
    }
}

/// Makes a long list at least `len` long, filling with `fill`, growing as `push_gently` does (for
/// tables indexed by a number given elsewhere, such as the write model's member numbers).
pub fn grow_to<T>(list: &mut Vec<T>, len: usize, mut fill: impl FnMut() -> T) {
    while list.len() < len {
        push_gently(list, fill());
    }
}

/// Pushes onto a short list (a member's statuses and intervals: one to three entries each)
/// without spare room; `Vec::push` would leave room for four.
pub fn push_exact<T>(list: &mut Vec<T>, item: T) {
    list.reserve_exact(1);
    list.push(item);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lists_grow_by_a_quarter_and_short_ones_not_at_all() {
        let mut long: Vec<u32> = Vec::new();
        for n in 0..1_000 {
            push_gently(&mut long, n);
        }
        assert!(long.capacity() <= 1_000 + 1_000 / 4, "capacity {}", long.capacity());
        let mut short = Vec::new();
        for n in 0..3 {
            push_exact(&mut short, n);
            assert_eq!(short.capacity(), short.len());
        }
        assert_eq!(long[999], 999);
        grow_to(&mut long, 1_500, || 7);
        assert_eq!((long.len(), long[1_499], long[999]), (1_500, 7, 999));
        assert!(long.capacity() <= 1_500 + 1_500 / 4, "capacity {}", long.capacity());
    }

    #[test]
    fn tables_keep_their_rows_and_fill_the_new_ones() {
        let mut table = vec![1u8, 2];
        grow_table_to(&mut table, 5, || 9);
        grow_table_to(&mut table, 3, || 7);
        push_to_table(&mut table, 4);
        assert_eq!(table, vec![1, 2, 9, 9, 9, 4]);
    }
}
