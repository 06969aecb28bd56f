//! How the models' lists grow. A model of a million members holds millions of lists; `Vec::push`
//! doubles, so each would carry up to as much spare room as content.

/// Pushes onto a long list (a day's flow records, a branch's intervals, every member), growing it
/// by a quarter rather than doubling.
pub fn push_gently<T>(list: &mut Vec<T>, item: T) {
    if list.len() == list.capacity() {
        list.reserve_exact((list.len() / 4).max(8));
    }
    list.push(item);
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
}
