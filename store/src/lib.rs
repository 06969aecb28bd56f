//! flowbook's event log: an append-only sequence of envelopes on sled `=0.34.7`.
//!
//! This crate owns positions, stream versions, idempotency keys, per-record checksums, the SHA-256
//! hash chain, durability and reading (by stream, by position, live tail). It deliberately knows
//! nothing of what the events mean: `data` is opaque JSON handed in by the caller.
//!
//! # Layout
//!
//! One sled tree holds everything, under key prefixes (see [`keys`]):
//!
//! - `e` + first position → a chunk of up to 16 consecutive records (LZ4, one CRC-32), each with
//!   its chain hash, its stream's previous position and the canonical envelope JSON (the exact
//!   bytes the hash covers);
//! - `i` + idempotency key → request fingerprint and the positions it appended;
//! - `c` → the commit mark: where the last whole commit ends;
//! - `k` → the idempotency keys of the last commit that wrote any, and where that commit ends.
//!
//! A commit's chunks are inserted as they are sealed; the list of its keys, its idempotency
//! entries and the new commit mark follow, the mark last, each a plain insert from the one
//! sealing thread. sled recovers a prefix of what it was given, so after a crash anything past the
//! mark is a commit that never finished — never acknowledged — and opening removes it (its chunks
//! by position, its entries through `k`): a commit is whole or absent. (Not one `apply_batch`:
//! sled writes and syncs its I/O buffer before and after each batch's manifest, three device
//! waits a commit instead of one — see `seal.rs`.)
//!
//! # Durability: what "acknowledged" rests on
//!
//! An append returns only after its events are on stable storage. sled 0.34's `flush` writes its
//! buffers with `pwrite` and then calls `sync_file_range(WAIT_BEFORE | WRITE | WAIT_AFTER)` on
//! Linux (sled issues #1351, #1452). `sync_file_range` pushes the data pages to the device but does
//! not flush the device's volatile write cache and does not persist the file's metadata (its
//! size), so after a power cut the tail of the log can be missing although `flush` returned.
//! sled also writes "blobs" — log items over a quarter of a segment (128 KiB by default), which a
//! leaf of large records can reach — to separate files under `blobs/` that it never fsyncs.
//!
//! So after every `flush` the writer calls `fdatasync` on sled's `db` file (a full data sync, with
//! a cache flush, on the same inode sled wrote through) and `fsync` on every blob file it has not
//! synced yet, then on the `blobs/` directory so their names are durable too. Only then are the
//! callers answered. The crash test (`tests/tests/crash.rs`) kills a writer at random moments and
//! checks that every acknowledged event is back, byte-identical, as a gapless prefix.
//!
//! # Group commit
//!
//! One writer thread owns the write path. Appends wait in a bounded queue — one message per
//! `append`, or one per `submit_all` group, which the writer takes whole so that a caller's batch
//! is one commit —; the writer takes everything that has accumulated (up to
//! [`limits::COMMIT_EVENTS_MAX`] events, a larger group carried over to the next commit), checks and stamps each
//! request in order and hands the commit on: a sealer thread compresses its chunks (while the
//! writer is still stamping), inserts them and ends the commit (see Layout), and a syncer thread makes it
//! durable — with every other commit applied meanwhile, in one flush — and then answers every
//! caller. A request that fails its checks writes nothing and is answered with its commit.

mod chain;
mod chunks;
mod heads;
pub mod keys;
pub mod limits;
mod parts;
mod record;
mod seal;
mod stages;
mod store;
mod sync;
mod writer;

#[doc(hidden)]
pub mod testing;

pub use chain::{ChainHash, NotAChainHash};
pub use parts::{measure_commit_parts, CommitParts, PARTS_EVENTS_MAX};
pub use record::{instant, parse_instant, Envelope, NewEvent};
pub use stages::{CommitStages, COMMIT_STAGES};

/// Bytes a store's directory holds on disk (sled's files, its blobs, the heads snapshot): what
/// "bytes per event" is measured on.
pub fn disk_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| match entry.metadata() {
                    Ok(meta) if meta.is_dir() => disk_bytes(&entry.path()),
                    Ok(meta) => meta.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}
pub use store::{
    AppendRequest, Appended, Clock, IdempotencyKey, Store, StoreOptions, Submitted, Tail, VerifyReport,
    DEFAULT_CACHE_BYTES,
};

/// Everything that can go wrong in the log. Callers map these to their own errors; none of them is
/// a panic.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("stream {stream} is at version {actual}, not the expected {expected}")]
    VersionConflict { stream: String, expected: u64, actual: u64 },
    #[error("the idempotency key was used before with another request")]
    IdempotencyKeyReused,
    #[error("{what} is over its limit of {limit}")]
    LimitExceeded { what: &'static str, limit: usize },
    #[error("invalid append: {0}")]
    InvalidAppend(&'static str),
    #[error("the append queue is full ({0} requests); try again")]
    Busy(usize),
    #[error("the record at position {position} is damaged: {detail}")]
    Corrupt { position: u64, detail: String },
    #[error("storage error: {0}")]
    Io(String),
    #[error("the log stopped accepting writes after a storage error: {0}")]
    Poisoned(String),
    #[error("the log is closed")]
    Closed,
}

impl From<sled::Error> for StoreError {
    fn from(error: sled::Error) -> Self {
        StoreError::Io(error.to_string())
    }
}

impl From<std::io::Error> for StoreError {
    fn from(error: std::io::Error) -> Self {
        StoreError::Io(error.to_string())
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
