//! Shared helpers of the cross-crate tests.

/// The idempotency key of the crash child's append `seq` of `thread` in `round`: the crash test
/// asks the reopened log for it.
pub fn crash_key(round: usize, thread: usize, seq: u64) -> flowbook_store::IdempotencyKey {
    flowbook_store::IdempotencyKey { key: format!("crash/{round}/{thread}/{seq}"), fingerprint: [7; 32] }
}
