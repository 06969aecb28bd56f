//! The key layout of the single sled tree. All integers are big-endian so that sled's byte order
//! is numeric order.

pub const EVENT_PREFIX: u8 = b'e';
pub const STREAM_PREFIX: u8 = b's';
pub const IDEMPOTENCY_PREFIX: u8 = b'i';

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

/// `s` + stream + `0x00`: the prefix of every index entry of one stream. Stream names never
/// contain `0x00` (checked on append), so one stream's prefix is never another's.
pub fn stream_prefix(stream: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(stream.len() + 10);
    key.push(STREAM_PREFIX);
    key.extend_from_slice(stream.as_bytes());
    key.push(0);
    key
}

/// `s` + stream + `0x00` + version.
pub fn stream_key(stream: &str, version: u64) -> Vec<u8> {
    let mut key = stream_prefix(stream);
    key.extend_from_slice(&version.to_be_bytes());
    key
}

/// The version at the end of a stream index key.
pub fn version_of_stream_key(key: &[u8]) -> Option<u64> {
    let tail = key.len().checked_sub(8)?;
    Some(u64::from_be_bytes(key[tail..].try_into().ok()?))
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
    fn one_stream_prefix_is_never_another_streams() {
        let a = stream_key("member/a", 1);
        assert!(a.starts_with(&stream_prefix("member/a")));
        assert!(!a.starts_with(&stream_prefix("member/")));
        assert_eq!(version_of_stream_key(&stream_key("x", 7)), Some(7));
    }
}
