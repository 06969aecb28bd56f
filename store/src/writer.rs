//! The single writer: group commit, stamping, hash chaining and the durable flush.
//!
//! It takes every append queued since its last commit, checks each request in order against the
//! log as it will stand after the requests before it (so two appends in one commit see each other),
//! stages the accepted ones into one sled batch and applies it. A second thread, the syncer, then
//! makes the commit durable, publishes it (stream heads, the committed head) and only then answers.
//!
//! The two overlap: while the syncer waits for the disk on commit N, the writer stages commit
//! N+1. At most one commit is in flight — the writer hands N+1 over only once the syncer has
//! finished N — so the writer needs to remember only N's stream heads, which readers cannot see
//! yet. Readers see nothing of a commit before it is durable: every read is bounded by the
//! committed head, which only the syncer advances. If a sync fails the log is poisoned, and every
//! commit after it, already applied or not, is answered with an error.

use std::collections::HashSet;

use foldhash::{HashMap, HashMapExt};
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use tokio::sync::{mpsc, oneshot};

use crate::heads::{self, Head};
use crate::keys;
use crate::limits::{COMMIT_EVENTS_MAX, HEADS_SNAPSHOT_EVERY_EVENTS};
use crate::record::{ChunkWriter, Envelope, Rendered, Stamp, GENESIS_HASH};
use crate::store::{read_positions, AppendRequest, Appended, Clock, Shared};
use crate::{Result, StoreError};

pub(crate) struct Job {
    pub request: AppendRequest,
    /// The request's events, rendered by the appending thread.
    pub rendered: Rendered,
    pub reply: oneshot::Sender<Result<Appended>>,
}

/// Where the log ends: the next position, the hash it chains from, the last `recorded_at`.
#[derive(Clone)]
pub(crate) struct HeadState {
    pub next_position: u64,
    pub last_hash: [u8; 32],
    pub last_recorded_at: DateTime<Utc>,
}

impl HeadState {
    pub fn empty() -> Self {
        HeadState { next_position: 1, last_hash: GENESIS_HASH, last_recorded_at: DateTime::UNIX_EPOCH }
    }
}

/// A stored idempotency entry: `fingerprint ‖ first position ‖ count`.
pub(crate) struct SeenKey {
    pub fingerprint: [u8; 32],
    pub first_position: u64,
    pub count: u32,
}

const SEEN_KEY_BYTES: usize = 32 + 8 + 4;

impl SeenKey {
    fn encode(&self) -> [u8; SEEN_KEY_BYTES] {
        let mut out = [0u8; SEEN_KEY_BYTES];
        out[..32].copy_from_slice(&self.fingerprint);
        out[32..40].copy_from_slice(&self.first_position.to_be_bytes());
        out[40..].copy_from_slice(&self.count.to_be_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Result<SeenKey> {
        if bytes.len() != SEEN_KEY_BYTES {
            return Err(StoreError::Corrupt { position: 0, detail: "idempotency entry is damaged".into() });
        }
        Ok(SeenKey {
            fingerprint: bytes[..32].try_into().expect("32 bytes"),
            first_position: u64::from_be_bytes(bytes[32..40].try_into().expect("8 bytes")),
            count: u32::from_be_bytes(bytes[40..].try_into().expect("4 bytes")),
        })
    }
}

pub(crate) fn lookup_idempotency(tree: &sled::Tree, key: &str) -> Result<Option<SeenKey>> {
    match tree.get(keys::idempotency_key(key))? {
        None => Ok(None),
        Some(bytes) => SeenKey::decode(&bytes).map(Some),
    }
}

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

/// Set after a storage error or when the log was found damaged at open: the state on disk is no
/// longer known to match ours, so every later append is refused.
type Poison = Arc<Mutex<Option<String>>>;

fn poison_reason(poison: &Poison) -> Option<String> {
    poison.lock().expect("poison lock").clone()
}

pub(crate) struct Writer {
    shared: Arc<Shared>,
    /// Where the log ends once every commit handed to the syncer is durable.
    head: HeadState,
    clock: Clock,
    /// The stream heads of the commit in flight (applied, not yet published).
    /// Shared with the flight: the syncer publishes the same map, so it is never copied.
    in_flight_heads: Arc<HashMap<String, Head>>,
    poison: Poison,
    syncer: Option<Syncer>,
}

/// A commit applied to the tree, on its way to being durable and answered.
struct Flight {
    applied: Result<()>,
    head: HeadState,
    stream_heads: Arc<HashMap<String, Head>>,
    writes: usize,
    staged: Vec<Staged>,
    replies: Vec<oneshot::Sender<Result<Appended>>>,
}

/// Makes commits durable, publishes them and answers, in the order the writer applied them.
struct Syncer {
    db: sled::Db,
    dir: PathBuf,
    shared: Arc<Shared>,
    files: DurableFiles,
    poison: Poison,
    /// Events published since the last heads snapshot.
    since_snapshot: u64,
}

/// What one request in a commit comes to, before the commit is durable.
enum Staged {
    Written(Vec<Envelope>),
    /// Same key and fingerprint as an earlier request in this very commit (by index).
    ReplayOfPending(usize),
    Replayed(Vec<Envelope>),
    Failed(StoreError),
}

/// The log as it will stand once the commit being built is written.
struct Pending {
    head: HeadState,
    stream_heads: HashMap<String, Head>,
    keys: HashMap<String, ([u8; 32], usize)>,
    chunks: ChunkWriter,
    idempotency: Vec<(Vec<u8>, [u8; SEEN_KEY_BYTES])>,
    writes: usize,
}

impl Writer {
    pub fn new(
        db: sled::Db,
        dir: &Path,
        shared: Arc<Shared>,
        head: HeadState,
        clock: Clock,
        damage: Option<String>,
    ) -> Result<Writer> {
        let poison: Poison =
            Arc::new(Mutex::new(damage.map(|damage| format!("the log is damaged ({damage}); run verify"))));
        let syncer = Syncer {
            files: DurableFiles::open(dir)?,
            db,
            dir: dir.to_path_buf(),
            shared: Arc::clone(&shared),
            poison: Arc::clone(&poison),
            since_snapshot: 0,
        };
        Ok(Writer { shared, head, clock, in_flight_heads: Arc::default(), poison, syncer: Some(syncer) })
    }

    pub fn run(mut self, mut queue: mpsc::Receiver<Job>) {
        // A rendezvous: handing commit N+1 over waits until the syncer has finished commit N.
        let (flights, to_sync) = sync_channel::<Flight>(0);
        let syncer = self.syncer.take().expect("the syncer starts once");
        let syncing =
            std::thread::Builder::new().name("flowbook-log-sync".into()).spawn(move || syncer.run(to_sync));
        let syncing = match syncing {
            Ok(handle) => handle,
            Err(error) => {
                *self.poison.lock().expect("poison lock") = Some(format!("cannot start the syncer: {error}"));
                // Answer everything with the poison, synchronously.
                while let Some(job) = queue.blocking_recv() {
                    let _ = job
                        .reply
                        .send(Err(StoreError::Poisoned(poison_reason(&self.poison).unwrap_or_default())));
                }
                return;
            }
        };
        while let Some(first) = queue.blocking_recv() {
            let mut events = first.request.events.len();
            let mut jobs = vec![first];
            while events < COMMIT_EVENTS_MAX {
                match queue.try_recv() {
                    Ok(job) => {
                        events += job.request.events.len();
                        jobs.push(job);
                    }
                    Err(_) => break,
                }
            }
            let flight = self.commit(jobs);
            if flights.send(flight).is_err() {
                break; // the syncer is gone: it panicked; its callers see their answers dropped
            }
        }
        drop(flights);
        let _ = syncing.join();
    }

    /// Stages a commit and applies it to the tree; the syncer makes it durable.
    fn commit(&mut self, jobs: Vec<Job>) -> Flight {
        let mut flight = Flight {
            applied: Ok(()),
            head: self.head.clone(),
            stream_heads: Arc::default(),
            writes: 0,
            staged: Vec::with_capacity(jobs.len()),
            replies: Vec::with_capacity(jobs.len()),
        };
        if let Some(reason) = poison_reason(&self.poison) {
            for job in jobs {
                flight.staged.push(Staged::Failed(StoreError::Poisoned(reason.clone())));
                flight.replies.push(job.reply);
            }
            return flight;
        }
        // One recorded_at per commit, never before the last one (the clock may step back).
        // Microseconds: finer digits are noise in an audit trail.
        let now =
            (self.clock)().duration_trunc(TimeDelta::microseconds(1)).unwrap_or_else(|_| (self.clock)());
        let recorded_at = now.max(self.head.last_recorded_at);
        let mut pending = Pending {
            head: self.head.clone(),
            stream_heads: HashMap::new(),
            keys: HashMap::new(),
            chunks: ChunkWriter::default(),
            idempotency: Vec::new(),
            writes: 0,
        };
        for (index, job) in jobs.into_iter().enumerate() {
            let outcome = self
                .stage(job.request, &job.rendered, index, recorded_at, &mut pending)
                .unwrap_or_else(Staged::Failed);
            flight.staged.push(outcome);
            flight.replies.push(job.reply);
        }
        if pending.writes > 0 {
            let mut batch = sled::Batch::default();
            for (first, chunk) in pending.chunks.finish() {
                batch.insert(&keys::event_key(first), chunk);
            }
            for (key, seen) in pending.idempotency {
                batch.insert(key, &seen[..]);
            }
            flight.applied = self.shared.tree.apply_batch(batch).map_err(StoreError::from);
        }
        flight.stream_heads = Arc::new(pending.stream_heads);
        match &flight.applied {
            Err(error) => *self.poison.lock().expect("poison lock") = Some(error.to_string()),
            Ok(()) => {
                self.head = pending.head.clone();
                self.in_flight_heads = Arc::clone(&flight.stream_heads);
            }
        }
        flight.head = pending.head;
        flight.writes = pending.writes;
        flight
    }

    /// Checks one request against the pending state and stages its writes. Every check happens
    /// before the first write is staged, so a refused request stages nothing.
    fn stage(
        &mut self,
        request: AppendRequest,
        rendered: &Rendered,
        index: usize,
        recorded_at: DateTime<Utc>,
        pending: &mut Pending,
    ) -> Result<Staged> {
        if let Some(key) = &request.idempotency {
            if let Some((fingerprint, first)) = pending.keys.get(&key.key) {
                return if *fingerprint == key.fingerprint {
                    Ok(Staged::ReplayOfPending(*first))
                } else {
                    Err(StoreError::IdempotencyKeyReused)
                };
            }
            if let Some(seen) = lookup_idempotency(&self.shared.tree, &key.key)? {
                if seen.fingerprint != key.fingerprint {
                    return Err(StoreError::IdempotencyKeyReused);
                }
                let events = read_positions(&self.shared.tree, seen.first_position, seen.count)?;
                return Ok(Staged::Replayed(events));
            }
        }
        for (stream, expected) in &request.expected_versions {
            let actual = self.stream_head(stream, pending).version;
            if actual != *expected {
                return Err(StoreError::VersionConflict {
                    stream: stream.clone(),
                    expected: *expected,
                    actual,
                });
            }
        }
        // Every check is done: from here on the request is staged whole.
        let first_position = pending.head.next_position;
        let count = u32::try_from(request.events.len()).expect("bounded by APPEND_EVENTS_MAX");
        let mut envelopes = Vec::with_capacity(request.events.len());
        for (event_index, event) in request.events.into_iter().enumerate() {
            let previous = self.stream_head(&event.stream, pending);
            let stamp = Stamp {
                position: pending.head.next_position,
                version: previous.version + 1,
                recorded_at,
                previous_in_stream: previous.position,
            };
            let hash = pending.chunks.push(rendered, event_index, &stamp, &pending.head.last_hash);
            let head = Head { version: stamp.version, position: stamp.position };
            pending.stream_heads.insert(event.stream.clone(), head);
            pending.writes += 1;
            envelopes.push(Envelope {
                position: stamp.position,
                event_id: event.event_id,
                stream: event.stream,
                version: stamp.version,
                event_type: event.event_type,
                effective_at: event.effective_at,
                recorded_at,
                actor: event.actor,
                data: event.data,
                hash: crate::record::hash_hex(&hash),
            });
            pending.head.next_position += 1;
            pending.head.last_hash = hash;
            pending.head.last_recorded_at = recorded_at;
        }
        if let Some(key) = &request.idempotency {
            let seen = SeenKey { fingerprint: key.fingerprint, first_position, count };
            pending.idempotency.push((keys::idempotency_key(&key.key), seen.encode()));
            pending.keys.insert(key.key.clone(), (key.fingerprint, index));
        }
        Ok(Staged::Written(envelopes))
    }

    /// A stream's head as it will stand after the requests staged so far.
    fn stream_head(&self, stream: &str, pending: &Pending) -> Head {
        if let Some(head) = pending.stream_heads.get(stream).or_else(|| self.in_flight_heads.get(stream)) {
            return *head;
        }
        let heads = self.shared.heads.read().expect("heads lock");
        heads.get(stream).copied().unwrap_or(Head { version: 0, position: 0 })
    }
}

impl Syncer {
    fn run(mut self, flights: Receiver<Flight>) {
        for flight in flights {
            self.finish(flight);
            if self.since_snapshot >= HEADS_SNAPSHOT_EVERY_EVENTS {
                self.snapshot_heads();
            }
        }
        if self.since_snapshot > 0 {
            self.snapshot_heads();
        }
        let _ = self.db.flush();
    }

    /// Makes one commit durable, publishes it and answers its callers.
    fn finish(&mut self, flight: Flight) {
        let durable = match (poison_reason(&self.poison), flight.applied) {
            (Some(reason), _) => Err(StoreError::Poisoned(reason)),
            (None, Err(error)) => Err(error),
            (None, Ok(())) if flight.writes == 0 => Ok(()),
            (None, Ok(())) => self.db.flush().map_err(StoreError::from).and_then(|_| self.files.sync()),
        };
        match &durable {
            Err(error) => {
                let mut poison = self.poison.lock().expect("poison lock");
                if poison.is_none() {
                    *poison = Some(error.to_string());
                }
            }
            Ok(()) if flight.writes > 0 => {
                self.since_snapshot += flight.writes as u64;
                let committed = flight.head.next_position - 1;
                let mut heads = self.shared.heads.write().expect("heads lock");
                for (stream, head) in flight.stream_heads.iter() {
                    heads.set(stream, *head);
                }
                // Under the heads lock, so that a snapshot sees heads and position together.
                self.shared.committed_head.store(committed, Ordering::Release);
                drop(heads);
                self.shared.head_watch.send_replace(committed);
            }
            Ok(()) => {}
        }
        answer(flight.staged, flight.replies, durable);
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

/// Answers every caller of a commit. Replays of a request written in the same commit get a copy
/// of its events; nothing else is copied.
fn answer(staged: Vec<Staged>, replies: Vec<oneshot::Sender<Result<Appended>>>, durable: Result<()>) {
    let replayed_in_commit: HashMap<usize, Vec<Envelope>> = staged
        .iter()
        .filter_map(|outcome| match outcome {
            Staged::ReplayOfPending(first) => match &staged[*first] {
                Staged::Written(events) => Some((*first, events.clone())),
                _ => None,
            },
            _ => None,
        })
        .collect();
    for (reply, outcome) in replies.into_iter().zip(staged) {
        let answer = match (outcome, &durable) {
            (Staged::Failed(error), _) => Err(error),
            (_, Err(StoreError::Poisoned(reason))) => Err(StoreError::Poisoned(reason.clone())),
            (_, Err(error)) => Err(StoreError::Io(error.to_string())),
            (Staged::Written(events), Ok(())) => Ok(Appended::Written(events)),
            (Staged::Replayed(events), Ok(())) => Ok(Appended::Replayed(events)),
            (Staged::ReplayOfPending(first), Ok(())) => {
                Ok(Appended::Replayed(replayed_in_commit.get(&first).cloned().unwrap_or_default()))
            }
        };
        // A caller that gave up waiting is not an error of the log.
        let _ = reply.send(answer);
    }
}
