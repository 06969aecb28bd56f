//! Every bound of the log, as named constants with the unit last.
//!
//! Exceeding one is an error ([`crate::StoreError::LimitExceeded`] or [`crate::StoreError::Busy`]),
//! never a panic and never unbounded memory.

/// Bytes of one event's `data` JSON. Domain events are a few hundred bytes; 64 KiB leaves room
/// for long organisation lists while keeping a commit batch's memory bounded.
pub const EVENT_DATA_BYTES_MAX: usize = 64 * 1024;

/// Bytes of a stream name, an event type or an actor name.
pub const NAME_BYTES_MAX: usize = 256;

/// Events in one append. The largest domain write is a dissolve that reassigns every home member
/// of a branch (a committee rarely holds more than a few hundred); bulk import uses batches of
/// 1,000.
pub const APPEND_EVENTS_MAX: usize = 10_000;

/// Appends waiting for the writer. With group commit a full queue is drained in one flush, so
/// this only bounds memory when the disk stalls.
pub const QUEUE_REQUESTS_MAX: usize = 4_096;

/// Events written by one group commit (one commit mark, one durable flush). Bounds the writer's
/// memory and the latency a single commit adds for the callers queued behind it.
pub const COMMIT_EVENTS_MAX: usize = 50_000;

/// Events between two snapshots of the stream heads. Bounds how much of the log an open after a
/// crash replays (~1 s per million events); a snapshot costs ~100 bytes per stream to write.
pub const HEADS_SNAPSHOT_EVERY_EVENTS: u64 = 2_000_000;

/// Events returned by one page of [`crate::Store::read_log`] or [`crate::Store::read_stream`].
pub const READ_PAGE_EVENTS_MAX: usize = 10_000;

/// Bytes of an idempotency key.
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 512;

/// How long opening a store waits for sled's file lock (see `Store::open`).
pub const LOCK_WAIT_MILLIS_MAX: u128 = 1_000;
