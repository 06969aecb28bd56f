//! The write path's last stage: makes applied commits durable, publishes them and answers, in
//! commit order (see `writer.rs` for the whole path).

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;

use foldhash::HashMap;
use tokio::sync::oneshot;

use crate::heads;
use crate::limits::HEADS_SNAPSHOT_EVERY_EVENTS;
use crate::stages::Mark;
use crate::store::{read_positions, Shared};
use crate::writer::{poison_reason, set_poison, Answer, Flight, Poison, Staged};
use crate::{Result, StoreError};

/// Applied commits made durable by one flush at most: bounds how long the first of them waits for
/// answers to be sent to the last.
const COMMITS_PER_FLUSH_MAX: usize = 64;

/// Makes what sled flushed durable: `fdatasync` of the log file and `fsync` of new blob files and
/// their directory (see the crate docs for why sled's own flush is not enough).
struct DurableFiles {
    log_file: File,
    blobs_dir: PathBuf,
    synced_blobs: HashSet<OsString>,
}

impl DurableFiles {
    fn open(dir: &Path) -> Result<DurableFiles> {
        Ok(DurableFiles {
            log_file: File::open(dir.join("db"))?,
            blobs_dir: dir.join("blobs"),
            synced_blobs: HashSet::new(),
        })
    }

    fn sync(&mut self) -> Result<()> {
        self.log_file.sync_data()?;
        let entries = match std::fs::read_dir(&self.blobs_dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(error) => return Err(error.into()),
        };
        let mut present = HashSet::new();
        let mut synced_new = false;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            if !self.synced_blobs.contains(&name) {
                File::open(entry.path())?.sync_all()?;
                synced_new = true;
            }
            present.insert(name);
        }
        if synced_new {
            File::open(&self.blobs_dir)?.sync_all()?;
        }
        // sled deletes blobs it no longer needs; forget them so the set stays bounded.
        self.synced_blobs = present;
        Ok(())
    }
}

pub(crate) struct Syncer {
    db: sled::Db,
    dir: PathBuf,
    shared: Arc<Shared>,
    files: DurableFiles,
    poison: Poison,
    /// The last commit finished, for the writer: it forgets what it remembered of commits up to it.
    finished: Arc<AtomicU64>,
    /// Events published since the last heads snapshot.
    since_snapshot: u64,
}

impl Syncer {
    pub fn new(
        db: sled::Db,
        dir: &Path,
        shared: Arc<Shared>,
        poison: Poison,
        finished: Arc<AtomicU64>,
    ) -> Result<Syncer> {
        Ok(Syncer {
            files: DurableFiles::open(dir)?,
            db,
            dir: dir.to_path_buf(),
            shared,
            poison,
            finished,
            since_snapshot: 0,
        })
    }

    /// Finishes commits as they come; takes a token out of `in_flight` for each.
    pub fn run(mut self, flights: Receiver<Flight>, in_flight: Receiver<()>) {
        while let Ok(first) = flights.recv() {
            // Every commit applied meanwhile is made durable by the same flush.
            let mut group = vec![first];
            while group.len() < COMMITS_PER_FLUSH_MAX {
                match flights.try_recv() {
                    Ok(flight) => group.push(flight),
                    Err(_) => break,
                }
            }
            let finished = group.len();
            self.finish(group);
            for _ in 0..finished {
                let _ = in_flight.try_recv();
            }
            if self.since_snapshot >= HEADS_SNAPSHOT_EVERY_EVENTS {
                self.snapshot_heads();
            }
        }
        if self.since_snapshot > 0 {
            self.snapshot_heads();
        }
        let _ = self.db.flush();
    }

    /// Makes a group of applied commits durable, publishes each and answers its callers.
    fn finish(&mut self, group: Vec<Flight>) {
        let stages = &self.shared.stages;
        stages.mark(Mark::Syncing);
        let writes = group.iter().any(|flight| flight.writes > 0 && flight.applied.is_ok());
        let durable = match poison_reason(&self.poison) {
            Some(reason) => Err(StoreError::Poisoned(reason)),
            None if writes => self.db.flush().map_err(StoreError::from).and_then(|_| {
                stages.mark(Mark::Flushed);
                self.files.sync()
            }),
            None => Ok(()),
        };
        stages.mark(Mark::Synced);
        if let Err(error) = &durable {
            set_poison(&self.poison, error.to_string());
        }
        for flight in group {
            let outcome = match (&durable, flight.applied) {
                (Err(error), _) => Err(copy_of(error)),
                (Ok(()), Err(error)) => Err(error),
                (Ok(()), Ok(())) => Ok(()),
            };
            if outcome.is_ok() && flight.writes > 0 {
                self.publish(flight.last_position, &flight.stream_heads, flight.writes);
            }
            // After publishing: the writer may now forget this commit's heads and keys.
            self.finished.store(flight.sequence, Ordering::Release);
            self.shared.stages.mark(Mark::Published);
            answer(&self.shared.tree, flight.staged, flight.replies, outcome);
        }
    }

    /// Makes a durable commit visible: its stream heads, then the committed head.
    fn publish(
        &mut self,
        committed: u64,
        stream_heads: &HashMap<heads::StreamKey, heads::Head>,
        writes: usize,
    ) {
        self.since_snapshot += writes as u64;
        let mut heads = self.shared.heads.write().expect("heads lock");
        // Each set is a cache miss in a map of every stream: start each one's a few entries
        // ahead, as the writer does for its lookups.
        for key in stream_heads.keys().take(heads::LOOKAHEAD_HEADS) {
            heads.prefetch(key);
        }
        let mut ahead = stream_heads.keys().skip(heads::LOOKAHEAD_HEADS);
        for (key, head) in stream_heads.iter() {
            if let Some(next) = ahead.next() {
                heads.prefetch(next);
            }
            heads.set_key(key, *head);
        }
        // Under the heads lock, so that a snapshot sees heads and position together.
        self.shared.committed_head.store(committed, Ordering::Release);
        drop(heads);
        self.shared.head_watch.send_replace(committed);
    }

    /// Writes the heads snapshot. A failure costs only a longer replay at the next open, so it is
    /// reported and the log carries on.
    fn snapshot_heads(&mut self) {
        if self.poison.lock().expect("poison lock").is_some() {
            return;
        }
        let heads = self.shared.heads.read().expect("heads lock");
        let committed = self.shared.committed_head.load(Ordering::Acquire);
        match heads::write_snapshot(&self.dir, committed, &heads) {
            Ok(()) => self.since_snapshot = 0,
            Err(error) => eprintln!("flowbook-store: could not write the heads snapshot: {error}"),
        }
    }
}

/// The same failure, for another caller.
fn copy_of(error: &StoreError) -> StoreError {
    match error {
        StoreError::Poisoned(reason) => StoreError::Poisoned(reason.clone()),
        other => StoreError::Io(other.to_string()),
    }
}

/// Answers every caller of a commit. Replays of a request staged in this commit or an earlier one
/// read its events back (this commit is durable, and commits are answered in order).
fn answer(
    tree: &sled::Tree,
    staged: Vec<Staged>,
    replies: Vec<oneshot::Sender<Result<Answer>>>,
    durable: Result<()>,
) {
    for (reply, outcome) in replies.into_iter().zip(staged) {
        let answer = match (outcome, &durable) {
            (Staged::Failed(error), _) => Err(error),
            (_, Err(error)) => Err(copy_of(error)),
            (Staged::Written(stamped), Ok(())) => Ok(Answer::Written(stamped)),
            (Staged::Replayed(events), Ok(())) => Ok(Answer::Replayed(events)),
            (Staged::ReplayOfEarlier { first_position, count }, Ok(())) => {
                read_positions(tree, first_position, count).map(Answer::Replayed)
            }
        };
        // A caller that gave up waiting is not an error of the log.
        let _ = reply.send(answer);
    }
}
