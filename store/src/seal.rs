//! The write path's middle stage: compresses, frames and inserts each chunk the writer hands over
//! while the writer stamps the next, then ends the commit with one sled batch — its idempotency
//! entries and the commit mark (see `keys::COMMIT_MARK`). sled recovers a prefix of what it was
//! given, so after a crash a commit is whole (the mark covers it) or past the mark, where opening
//! removes it: never half there (see `writer.rs` for the whole path).

use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;

use crate::keys;
use crate::store::Shared;
use crate::writer::{poison_reason, set_poison, Flight, Poison, ToSeal};
use crate::StoreError;

pub(crate) struct Sealer {
    shared: Arc<Shared>,
    poison: Poison,
}

impl Sealer {
    pub fn new(shared: Arc<Shared>, poison: Poison) -> Sealer {
        Sealer { shared, poison }
    }

    /// Seals chunks as they come; at each commit's end applies its batch and passes it on. Spent
    /// chunk buffers go back to the writer through `spare`.
    pub fn run(self, from_writer: Receiver<ToSeal>, to_sync: SyncSender<Flight>, spare: SyncSender<Vec<u8>>) {
        for message in from_writer {
            match message {
                ToSeal::Chunk(chunk) => {
                    // After a failure nothing more reaches the tree (the commit's end says so).
                    if poison_reason(&self.poison).is_none() {
                        let inserted =
                            self.shared.tree.insert(keys::event_key(chunk.first_position), chunk.seal());
                        if let Err(error) = inserted {
                            set_poison(&self.poison, error.to_string());
                        }
                    }
                    // Full: the writer has buffers enough; this one is freed.
                    let _ = spare.try_send(chunk.raw);
                }
                ToSeal::End(flight) => {
                    let mut flight = *flight;
                    if flight.writes > 0 {
                        flight.applied = self.end(&mut flight);
                    }
                    if to_sync.send(flight).is_err() {
                        break; // the syncer is gone: it panicked
                    }
                }
            }
        }
    }

    /// Ends a commit whose chunks are in: its idempotency entries and the commit mark, in one
    /// batch — unless the log is poisoned, when the commit stays unfinished (a commit staged after
    /// one that failed must not count).
    fn end(&self, flight: &mut Flight) -> crate::Result<()> {
        if let Some(reason) = poison_reason(&self.poison) {
            return Err(StoreError::Poisoned(reason));
        }
        let mut commit = sled::Batch::default();
        for (key, seen) in flight.idempotency.drain(..) {
            commit.insert(key, &seen[..]);
        }
        commit.insert(keys::COMMIT_MARK, &flight.last_position.to_be_bytes());
        let applied = self.shared.tree.apply_batch(commit).map_err(StoreError::from);
        if let Err(error) = &applied {
            set_poison(&self.poison, error.to_string());
        }
        applied
    }
}
