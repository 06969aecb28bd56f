//! The key layout of the single sled tree: `e` + first position → a chunk of events,
//! `i` + idempotency key → what that request appended, `c` → the last position of the last whole
//! commit. All integers are big-endian so that sled's byte order
//! is numeric order.

pub const EVENT_PREFIX: u8 = b'e';
pub const IDEMPOTENCY_PREFIX: u8 = b'i';

/// The commit mark: the last position of the last commit written whole. A commit's chunks are
/// inserted as they are sealed and the mark moves in one batch with its idempotency entries, last:
/// chunks past the mark belong to a commit that never finished, and opening removes them.
pub const COMMIT_MARK: &[u8] = b"c";

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
}
