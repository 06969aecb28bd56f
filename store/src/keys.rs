//! The key layout of the single sled tree: `e` + first position → a chunk of events,
//! `i` + idempotency key → what that request appended, `c` → the last position of the last whole
//! commit, `k` → the idempotency keys of the last commit that wrote any. All integers are
//! big-endian so that sled's byte order is numeric order.

pub const EVENT_PREFIX: u8 = b'e';
pub const IDEMPOTENCY_PREFIX: u8 = b'i';

/// The commit mark: the last position of the last commit written whole. A commit's chunks, then
/// its idempotency entries are inserted, the mark last: whatever lies past the mark belongs to a
/// commit that never finished, and opening removes it.
pub const COMMIT_MARK: &[u8] = b"c";

/// The idempotency keys of the last commit that wrote any, inserted before its entries: how
/// opening finds the entries of a commit that never finished without reading every entry.
/// Value: the commit's last position, then each entry's tree key, length-prefixed (`u32`).
pub const COMMIT_KEYS: &[u8] = b"k";

/// The value of [`COMMIT_KEYS`].
pub fn commit_keys_value<'a>(last_position: u64, entry_keys: impl Iterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = last_position.to_be_bytes().to_vec();
    for key in entry_keys {
        let length = u32::try_from(key.len()).expect("idempotency keys are bounded far below 4 GiB");
        out.extend_from_slice(&length.to_be_bytes());
        out.extend_from_slice(key);
    }
    out
}

/// A [`COMMIT_KEYS`] value read back: the commit's last position and its entries' tree keys, or
/// `None` when the bytes are damaged.
pub fn parse_commit_keys(value: &[u8]) -> Option<(u64, Vec<&[u8]>)> {
    let (position, mut rest) = value.split_first_chunk::<8>()?;
    let mut entry_keys = Vec::new();
    while !rest.is_empty() {
        let (length, tail) = rest.split_first_chunk::<4>()?;
        let length = usize::try_from(u32::from_be_bytes(*length)).ok()?;
        if tail.len() < length {
            return None;
        }
        let (key, tail) = tail.split_at(length);
        entry_keys.push(key);
        rest = tail;
    }
    Some((u64::from_be_bytes(*position), entry_keys))
}

/// `e` + position.
pub fn event_key(position: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = EVENT_PREFIX;
    key[1..].copy_from_slice(&position.to_be_bytes());
    key
}

/// The position in an event key, or `None` when the key is not one.
pub fn position_of_event_key(key: &[u8]) -> Option<u64> {
    if key.len() != 9 || key[0] != EVENT_PREFIX {
        return None;
    }
    Some(u64::from_be_bytes(key[1..].try_into().ok()?))
}

/// `i` + key.
pub fn idempotency_key(key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 1);
    out.push(IDEMPOTENCY_PREFIX);
    out.extend_from_slice(key.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_keys_sort_by_position() {
        assert!(event_key(255) < event_key(256));
        assert_eq!(position_of_event_key(&event_key(42)), Some(42));
        assert_eq!(position_of_event_key(b"s123"), None);
    }

    #[test]
    fn commit_keys_read_back_as_written() {
        let entry_keys: [&[u8]; 3] = [b"ialpha", b"i", "i王芳".as_bytes()];
        let value = commit_keys_value(77, entry_keys.iter().copied());
        assert_eq!(parse_commit_keys(&value), Some((77, entry_keys.to_vec())));
        assert_eq!(parse_commit_keys(&commit_keys_value(5, std::iter::empty())), Some((5, vec![])));
    }

    #[test]
    fn damaged_commit_keys_are_refused() {
        let value = commit_keys_value(77, [b"ialpha".as_slice()].into_iter());
        assert_eq!(parse_commit_keys(&value[..value.len() - 1]), None, "a key cut short");
        assert_eq!(parse_commit_keys(&value[..10]), None, "a length cut short");
        assert_eq!(parse_commit_keys(&value[..7]), None, "a position cut short");
    }
}
