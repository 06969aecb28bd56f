//! The write path's middle stage: compresses and frames each chunk the writer hands over, and
//! applies each commit as one sled batch — sled writes a batch atomically, so a crash leaves a
//! commit whole or absent (see `writer.rs` for the whole path).

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
        let mut batch = sled::Batch::default();
        for message in from_writer {
            match message {
                ToSeal::Chunk(chunk) => {
                    batch.insert(&keys::event_key(chunk.first_position), chunk.seal());
                    // Full: the writer has buffers enough; this one is freed.
                    let _ = spare.try_send(chunk.raw);
                }
                ToSeal::End(flight) => {
                    let mut flight = *flight;
                    let commit = std::mem::take(&mut batch);
                    if flight.writes > 0 {
                        flight.applied = self.apply(commit, &mut flight);
                    }
                    if to_sync.send(flight).is_err() {
                        break; // the syncer is gone: it panicked
                    }
                }
            }
        }
    }

    /// Applies a commit's batch unless the log is poisoned: a commit staged after one that failed
    /// must not reach the tree.
    fn apply(&self, mut commit: sled::Batch, flight: &mut Flight) -> crate::Result<()> {
        if let Some(reason) = poison_reason(&self.poison) {
            return Err(StoreError::Poisoned(reason));
        }
        for (key, seen) in flight.idempotency.drain(..) {
            commit.insert(key, &seen[..]);
        }
        let applied = self.shared.tree.apply_batch(commit).map_err(StoreError::from);
        if let Err(error) = &applied {
            set_poison(&self.poison, error.to_string());
        }
        applied
    }
}
