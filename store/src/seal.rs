//! The write path's middle stage: compresses, frames and inserts each chunk the writer hands over
//! while the writer stamps the next (or only inserts it, when the writer sealed it because this
//! stage was behind: every insert stays on this one thread, in order), then ends the commit: the list of its idempotency keys
//! (`keys::COMMIT_KEYS`), their entries, and the commit mark (`keys::COMMIT_MARK`) last, each a
//! plain insert. sled recovers a prefix of what it was given, so after a crash a commit is whole
//! (the mark covers it) or past the mark, where opening removes its chunks and entries: never half
//! there (see `writer.rs` for the whole path).
//!
//! Not one `sled::Batch`, as until the eighth session: sled 0.34 seals its I/O buffer before and
//! after every batch's manifest, so each commit cost three buffer writes, each followed by its own
//! `sync_file_range` wait, instead of one (BENCHMARKS.md, issue 5, eighth session).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;

use crate::keys;
use crate::record::Sealing;
use crate::stages::Mark;
use crate::store::Shared;
use crate::writer::{poison_reason, set_poison, Flight, Poison, ToSeal};
use crate::StoreError;

pub(crate) struct Sealer {
    shared: Arc<Shared>,
    poison: Poison,
    /// Chunks handed over and not yet inserted: counted up by the writer, down here.
    backlog: Arc<AtomicUsize>,
}

impl Sealer {
    pub fn new(shared: Arc<Shared>, poison: Poison, backlog: Arc<AtomicUsize>) -> Sealer {
        Sealer { shared, poison, backlog }
    }

    /// Seals chunks as they come; at each commit's end applies its batch and passes it on. Spent
    /// chunk buffers go back to the writer through `spare`.
    pub fn run(self, from_writer: Receiver<ToSeal>, to_sync: SyncSender<Flight>, spare: SyncSender<Vec<u8>>) {
        // Every chunk is sealed into this one buffer; sled copies it into the tree.
        let mut sealing = Sealing::default();
        for message in from_writer {
            match message {
                ToSeal::Chunk(chunk) => {
                    self.insert(chunk.first_position, sealing.seal(&chunk));
                    // Full: the writer has buffers enough; this one is freed.
                    let _ = spare.try_send(chunk.raw);
                }
                ToSeal::Sealed(chunk, sealed_by_writer) => {
                    self.insert(chunk.first_position, &sealed_by_writer);
                    let _ = spare.try_send(chunk.raw);
                }
                ToSeal::End(flight) => {
                    let mut flight = *flight;
                    if flight.writes > 0 {
                        flight.applied = self.end(&mut flight);
                    }
                    self.shared.stages.mark(Mark::Applied);
                    if to_sync.send(flight).is_err() {
                        break; // the syncer is gone: it panicked
                    }
                }
            }
        }
    }

    /// Inserts a sealed chunk, unless the log is poisoned: after a failure nothing more reaches
    /// the tree (the commit's end says so).
    fn insert(&self, first_position: u64, sealed: &[u8]) {
        if poison_reason(&self.poison).is_none() {
            if let Err(error) = self.shared.tree.insert(keys::event_key(first_position), sealed) {
                set_poison(&self.poison, error.to_string());
            }
        }
        self.backlog.fetch_sub(1, Ordering::AcqRel);
    }

    /// Ends a commit whose chunks are in: the list of its idempotency keys, their entries, and
    /// the commit mark, in that order — unless the log is poisoned, when the commit stays
    /// unfinished (a commit staged after one that failed must not count).
    fn end(&self, flight: &mut Flight) -> crate::Result<()> {
        if let Some(reason) = poison_reason(&self.poison) {
            return Err(StoreError::Poisoned(reason));
        }
        let applied = self.write_end(flight);
        if let Err(error) = &applied {
            set_poison(&self.poison, error.to_string());
        }
        applied
    }

    fn write_end(&self, flight: &mut Flight) -> crate::Result<()> {
        let tree = &self.shared.tree;
        if !flight.idempotency.is_empty() {
            let entry_keys = flight.idempotency.iter().map(|(key, _)| key.as_slice());
            tree.insert(keys::COMMIT_KEYS, keys::commit_keys_value(flight.last_position, entry_keys))?;
            for (key, seen) in flight.idempotency.drain(..) {
                tree.insert(key, &seen[..])?;
            }
        }
        tree.insert(keys::COMMIT_MARK, &flight.last_position.to_be_bytes())?;
        Ok(())
    }
}
