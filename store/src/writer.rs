//! The write path's first stage, and what passes between the three.
//!
//! A commit goes through three threads, each handing it on as soon as its part is done:
//!
//! 1. the **writer** (here) takes every append queued since its last commit (group commit),
//!    checks each request in order against the log as it will stand after the requests before it
//!    (so two appends in one commit see each other), stamps the accepted events and chains their
//!    hashes, handing each chunk to the sealer as it fills (the appending thread renders the
//!    events — a large request's while the writer already stamps its first, `record::Rendered` —
//!    and, once answered, makes their envelopes of the writer's stamps, `record::Stamped`);
//! 2. the **sealer** (`seal.rs`) compresses, frames and inserts each chunk while the writer is
//!    still stamping the next, and at the commit's end moves the commit mark (see the crate docs:
//!    a commit is whole or absent after a crash);
//! 3. the **syncer** (`sync.rs`) makes applied commits durable — every commit waiting for it in
//!    one flush and `fdatasync` — publishes them (stream heads, the committed head) and only then
//!    answers.
//!
//! So one large commit keeps both cores busy (stamping and compressing), and while the syncer
//! waits for the disk the sealer and the writer carry on with the next commits. Readers see
//! nothing of a commit before it is durable: every read is bounded by the committed head, which
//! only the syncer advances. The writer therefore remembers what the commits in flight (handed on,
//! not yet published) did to stream heads and idempotency keys, until the syncer says each is
//! finished. If applying or syncing fails the log is poisoned, and every commit after it, applied
//! or not, is answered with an error.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use foldhash::{HashMap, HashMapExt};
use tokio::sync::{mpsc, oneshot};

use crate::heads::{self, Head, HeadMap, StreamKey, LOOKAHEAD_HEADS};
use crate::keys;
use crate::limits::COMMIT_EVENTS_MAX;
use crate::record::{ChunkWriter, Envelope, RawChunk, Rendered, Sealing, Stamp, Stamped, GENESIS_HASH};
use crate::seal::Sealer;
use crate::stages::Mark;
use crate::store::{AppendRequest, Clock, Shared};
use crate::sync::Syncer;
use crate::{Result, StoreError};

/// Messages the writer may have queued for the sealer: chunks of ~8 KiB and commit ends. Bounds
/// the memory between the two and how far the writer runs ahead.
const TO_SEAL_MESSAGES_MAX: usize = 64;

/// Applied commits queued for the syncer, beyond the one it is syncing.
const TO_SYNC_COMMITS_MAX: usize = 4;

/// Commits handed on and not yet finished by the syncer, at most: one syncing, one being applied,
/// one being staged. A writer running further ahead would only cut the queue into more, smaller
/// commits — more sled values of a few events, more bytes on disk per event — while the disk is
/// busy anyway; waiting instead lets the queue gather into the next commit.
const COMMITS_IN_FLIGHT_MAX: usize = 3;

/// Chunks the sealer may have waiting before the writer seals the next one itself.
const SEAL_BACKLOG_CHUNKS: usize = 2;

/// Events whose heads the writer looks up under one read lock of the published heads.
const HEADS_LOCK_EVENTS_MAX: usize = 256;

/// Spent chunk buffers waiting to be filled again.
const SPARE_CHUNK_BUFFERS_MAX: usize = 2 * TO_SEAL_MESSAGES_MAX;

pub(crate) struct Job {
    /// Shared with the appending thread, which keeps its events: it renders them (perhaps while
    /// the writer stamps the first) and, once answered, makes the envelopes of them.
    pub request: Arc<AppendRequest>,
    /// The request's events, rendered by the appending thread.
    pub rendered: Arc<Rendered>,
    pub reply: oneshot::Sender<Result<Answer>>,
}

/// What the log answers an append with; the appending thread turns it into
/// [`crate::Appended`] with its own events.
pub(crate) enum Answer {
    Written(Stamped),
    Replayed(Vec<Envelope>),
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

    pub(crate) fn decode(bytes: &[u8]) -> Result<SeenKey> {
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

/// Set after a storage error or when the log was found damaged at open: the state on disk is no
/// longer known to match ours, so every later append is refused.
pub(crate) type Poison = Arc<Mutex<Option<String>>>;

pub(crate) fn poison_reason(poison: &Poison) -> Option<String> {
    poison.lock().expect("poison lock").clone()
}

/// Poisons the log with `reason` unless it already is.
pub(crate) fn set_poison(poison: &Poison, reason: String) {
    poison.lock().expect("poison lock").get_or_insert(reason);
}

/// A commit on its way through the sealer and the syncer to being answered.
pub(crate) struct Flight {
    /// Its place in the order of commits, from 1.
    pub sequence: u64,
    pub applied: Result<()>,
    /// The position the log ends at once this commit is durable.
    pub last_position: u64,
    pub stream_heads: Arc<HashMap<StreamKey, Head>>,
    pub writes: usize,
    /// Idempotency entries to write with the commit's chunks.
    pub idempotency: Vec<(Vec<u8>, [u8; SEEN_KEY_BYTES])>,
    pub staged: Vec<Staged>,
    pub replies: Vec<oneshot::Sender<Result<Answer>>>,
}

/// From the writer to the sealer, in commit order.
pub(crate) enum ToSeal {
    /// A chunk of the commit being staged.
    Chunk(RawChunk),
    /// A chunk the writer sealed itself (the sealer was behind), with its sealed bytes.
    Sealed(RawChunk, Vec<u8>),
    /// The commit's end: all its chunks came before.
    End(Box<Flight>),
}

/// What one request in a commit comes to, before the commit is durable.
pub(crate) enum Staged {
    Written(Stamped),
    /// Same key and fingerprint as a request staged earlier in this commit or in one still in
    /// flight: its events are read back once this commit is durable (and with it every earlier
    /// one: commits are answered in order).
    ReplayOfEarlier {
        first_position: u64,
        count: u32,
    },
    Replayed(Vec<Envelope>),
    Failed(StoreError),
}

/// An idempotency key's request as the commit staging it (or one in flight) knows it.
#[derive(Clone, Copy)]
struct KeyedRequest {
    fingerprint: [u8; 32],
    first_position: u64,
    count: u32,
}

/// A commit handed on and not yet finished by the syncer.
struct InFlight {
    sequence: u64,
    stream_heads: Arc<HashMap<StreamKey, Head>>,
    keys: HashMap<String, KeyedRequest>,
}

/// The log as it will stand once the commit being built is written.
struct Pending {
    head: HeadState,
    stream_heads: HashMap<StreamKey, Head>,
    keys: HashMap<String, KeyedRequest>,
    idempotency: Vec<(Vec<u8>, [u8; SEEN_KEY_BYTES])>,
    writes: usize,
}

pub(crate) struct Writer {
    shared: Arc<Shared>,
    /// Where the log ends once every commit handed on is durable.
    head: HeadState,
    clock: Clock,
    /// Commits handed on and not yet finished, oldest first.
    in_flight: VecDeque<InFlight>,
    /// The last commit the syncer has finished (published, or answered with an error).
    finished: Arc<AtomicU64>,
    next_sequence: u64,
    chunks: ChunkWriter,
    poison: Poison,
    stages: Option<(Sealer, Syncer)>,
    /// Chunks handed to the sealer and not yet inserted.
    seal_backlog: Arc<AtomicUsize>,
    /// The stamps of the request being staged (kept for its capacity).
    stamps: Vec<Stamp>,
}

impl Writer {
    pub fn new(
        db: sled::Db,
        dir: &std::path::Path,
        shared: Arc<Shared>,
        head: HeadState,
        clock: Clock,
        damage: Option<String>,
    ) -> Result<Writer> {
        let poison: Poison =
            Arc::new(Mutex::new(damage.map(|damage| format!("the log is damaged ({damage}); run verify"))));
        let finished = Arc::new(AtomicU64::new(0));
        let syncer = Syncer::new(db, dir, Arc::clone(&shared), Arc::clone(&poison), Arc::clone(&finished))?;
        let seal_backlog = Arc::new(AtomicUsize::new(0));
        let sealer = Sealer::new(Arc::clone(&shared), Arc::clone(&poison), Arc::clone(&seal_backlog));
        Ok(Writer {
            shared,
            head,
            clock,
            in_flight: VecDeque::new(),
            finished,
            next_sequence: 1,
            chunks: ChunkWriter::default(),
            poison,
            stages: Some((sealer, syncer)),
            seal_backlog,
            stamps: Vec::new(),
        })
    }

    /// Commits what is queued until the queue closes. `queued` counts the appends waiting in
    /// `queue` (groups of one or more, see `Store::submit_all`); the writer takes its share off
    /// as it takes each group.
    pub fn run(mut self, mut queue: mpsc::Receiver<Vec<Job>>, queued: Arc<AtomicUsize>) {
        let (sealer, syncer) = self.stages.take().expect("the stages start once");
        let (to_seal, from_writer) = sync_channel::<ToSeal>(TO_SEAL_MESSAGES_MAX);
        let (to_sync, from_sealer) = sync_channel::<Flight>(TO_SYNC_COMMITS_MAX);
        let (spare, spares) = sync_channel::<Vec<u8>>(SPARE_CHUNK_BUFFERS_MAX);
        // A token per commit in flight: the writer puts one in before staging a commit, the
        // syncer takes one out when it has finished one.
        let (in_flight, finished_commits) = sync_channel::<()>(COMMITS_IN_FLIGHT_MAX);
        let started = std::thread::Builder::new()
            .name("flowbook-log-sync".into())
            .spawn(move || syncer.run(from_sealer, finished_commits))
            .and_then(|syncing| {
                std::thread::Builder::new()
                    .name("flowbook-log-seal".into())
                    .spawn(move || sealer.run(from_writer, to_sync, spare))
                    .map(|sealing| (sealing, syncing))
            });
        let (sealing, syncing) = match started {
            Ok(threads) => threads,
            Err(error) => {
                set_poison(&self.poison, format!("cannot start the log's threads: {error}"));
                // Answer everything with the poison, here.
                while let Some(group) = queue.blocking_recv() {
                    queued.fetch_sub(group.len(), Ordering::AcqRel);
                    for job in group {
                        let reason = poison_reason(&self.poison).unwrap_or_default();
                        let _ = job.reply.send(Err(StoreError::Poisoned(reason)));
                    }
                }
                return;
            }
        };
        let mut output =
            Output { to_seal, spares, backlog: Arc::clone(&self.seal_backlog), sealing: Sealing::default() };
        // Appends taken off the queue and not yet committed: what a group larger than one
        // commit leaves for the next.
        let mut taken: VecDeque<Job> = VecDeque::new();
        let take = |group: Vec<Job>, taken: &mut VecDeque<Job>| {
            queued.fetch_sub(group.len(), Ordering::AcqRel);
            taken.extend(group);
        };
        loop {
            if taken.is_empty() {
                match queue.blocking_recv() {
                    Some(group) => take(group, &mut taken),
                    None => break,
                }
            }
            if in_flight.send(()).is_err() {
                break; // the syncer is gone: it panicked
            }
            self.shared.stages.mark(Mark::Taken);
            let mut events = 0;
            let mut jobs = Vec::new();
            while events < COMMIT_EVENTS_MAX {
                match taken.pop_front() {
                    Some(job) => {
                        events += job.request.events.len();
                        jobs.push(job);
                    }
                    None => match queue.try_recv() {
                        Ok(group) => take(group, &mut taken),
                        Err(_) => break,
                    },
                }
            }
            if self.commit(jobs, events, &mut output).is_err() {
                break; // the sealer is gone: it panicked; its callers see their answers dropped
            }
        }
        drop(output);
        drop(in_flight);
        let _ = sealing.join();
        let _ = syncing.join();
    }

    /// Stages a commit, handing its chunks and then its end to the sealer.
    /// `events`: how many the jobs hold together.
    fn commit(
        &mut self,
        jobs: Vec<Job>,
        events: usize,
        output: &mut Output,
    ) -> std::result::Result<(), Gone> {
        let finished = self.finished.load(Ordering::Acquire);
        while self.in_flight.front().is_some_and(|commit| commit.sequence <= finished) {
            self.in_flight.pop_front();
        }
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        let mut flight = Flight {
            sequence,
            applied: Ok(()),
            last_position: self.head.next_position - 1,
            stream_heads: Arc::default(),
            writes: 0,
            idempotency: Vec::new(),
            staged: Vec::with_capacity(jobs.len()),
            replies: Vec::with_capacity(jobs.len()),
        };
        if let Some(reason) = poison_reason(&self.poison) {
            for job in jobs {
                flight.staged.push(Staged::Failed(StoreError::Poisoned(reason.clone())));
                flight.replies.push(job.reply);
            }
            return output.send(ToSeal::End(Box::new(flight)));
        }
        // One recorded_at per commit, never before the last one (the clock may step back).
        // Microseconds: finer digits are noise in an audit trail.
        let now =
            (self.clock)().duration_trunc(TimeDelta::microseconds(1)).unwrap_or_else(|_| (self.clock)());
        let recorded_at = now.max(self.head.last_recorded_at);
        // Sized for every event at once: grown from empty, the map rehashed ~10 times a
        // 1,000-event commit.
        let mut pending = Pending {
            head: self.head.clone(),
            stream_heads: HashMap::with_capacity(events),
            keys: HashMap::new(),
            idempotency: Vec::new(),
            writes: 0,
        };
        for job in jobs {
            let outcome = self
                .stage(&job.request, &job.rendered, recorded_at, &mut pending, output)?
                .unwrap_or_else(Staged::Failed);
            flight.staged.push(outcome);
            flight.replies.push(job.reply);
        }
        if let Some(last) = self.chunks.take(output.spare_buffer()) {
            output.send_chunk(last)?;
        }
        flight.stream_heads = Arc::new(pending.stream_heads);
        flight.last_position = pending.head.next_position - 1;
        flight.writes = pending.writes;
        flight.idempotency = pending.idempotency;
        self.head = pending.head;
        self.in_flight.push_back(InFlight {
            sequence,
            stream_heads: Arc::clone(&flight.stream_heads),
            keys: pending.keys,
        });
        self.shared.stages.mark(Mark::Staged);
        output.send(ToSeal::End(Box::new(flight)))
    }

    /// Checks one request against the pending state and stages its writes. Every check happens
    /// before the first write is staged, so a refused request stages nothing.
    fn stage(
        &mut self,
        request: &AppendRequest,
        rendered: &Rendered,
        recorded_at: DateTime<Utc>,
        pending: &mut Pending,
        output: &mut Output,
    ) -> std::result::Result<Result<Staged>, Gone> {
        match self.check(request, pending) {
            Ok(None) => {}
            Ok(Some(replay)) => return Ok(Ok(replay)),
            Err(error) => return Ok(Err(error)),
        }
        // Every check is done: from here on the request is staged whole.
        let first_position = pending.head.next_position;
        let count = u32::try_from(request.events.len()).expect("bounded by APPEND_EVENTS_MAX");
        let mut stamped =
            Stamped { first_position, recorded_at, stamps: Vec::with_capacity(request.events.len()) };
        let mut stamps = std::mem::take(&mut self.stamps);
        self.stamp(request, recorded_at, pending, &mut stamps);
        for (event_index, stamp) in stamps.iter().enumerate() {
            let hash = self.chunks.push(rendered, event_index, stamp, &pending.head.last_hash);
            if self.chunks.is_full() {
                let full = self.chunks.take(output.spare_buffer()).expect("a full chunk");
                output.send_chunk(full)?;
            }
            stamped.stamps.push((stamp.version, hash));
            pending.head.last_hash = hash;
        }
        self.stamps = stamps;
        pending.writes += request.events.len();
        pending.head.next_position += request.events.len() as u64;
        pending.head.last_recorded_at = recorded_at;
        if let Some(key) = &request.idempotency {
            let seen = SeenKey { fingerprint: key.fingerprint, first_position, count };
            pending.idempotency.push((keys::idempotency_key(&key.key), seen.encode()));
            let keyed = KeyedRequest { fingerprint: key.fingerprint, first_position, count };
            pending.keys.insert(key.key.clone(), keyed);
        }
        Ok(Ok(Staged::Written(stamped)))
    }

    /// A request's idempotency key and expected versions against the log as it will stand:
    /// `Some` when the key was seen before with the same request (a replay, nothing to write).
    fn check(&self, request: &AppendRequest, pending: &Pending) -> Result<Option<Staged>> {
        if let Some(key) = &request.idempotency {
            let reused = |fingerprint: &[u8; 32]| *fingerprint != key.fingerprint;
            if let Some(earlier) = pending.keys.get(&key.key) {
                if reused(&earlier.fingerprint) {
                    return Err(StoreError::IdempotencyKeyReused);
                }
                let replay =
                    Staged::ReplayOfEarlier { first_position: earlier.first_position, count: earlier.count };
                return Ok(Some(replay));
            }
            // Newest first, then the tree: a commit leaves the flight only once it is applied.
            if let Some(earlier) = self.in_flight.iter().rev().find_map(|commit| commit.keys.get(&key.key)) {
                if reused(&earlier.fingerprint) {
                    return Err(StoreError::IdempotencyKeyReused);
                }
                let replay =
                    Staged::ReplayOfEarlier { first_position: earlier.first_position, count: earlier.count };
                return Ok(Some(replay));
            }
            if let Some(seen) = lookup_idempotency(&self.shared.tree, &key.key)? {
                if reused(&seen.fingerprint) {
                    return Err(StoreError::IdempotencyKeyReused);
                }
                let events =
                    crate::store::read_positions(&self.shared.tree, seen.first_position, seen.count)?;
                return Ok(Some(Staged::Replayed(events)));
            }
        }
        for (stream, expected) in &request.expected_versions {
            let actual = self.stream_version(stream, pending);
            if actual != *expected {
                return Err(StoreError::VersionConflict {
                    stream: stream.clone(),
                    expected: *expected,
                    actual,
                });
            }
        }
        Ok(None)
    }

    /// Stamps a checked request's events into `stamps` (cleared first) and sets their streams'
    /// heads in the pending commit. The heads come first, for the whole request, apart from
    /// chaining and chunking: each published head is a cache miss in a map of every stream, and
    /// here each one's is started [`LOOKAHEAD_HEADS`] events ahead of its lookup, so they overlap
    /// instead of following each other. The heads lock is taken per [`HEADS_LOCK_EVENTS_MAX`]
    /// events, so the syncer is never kept from publishing for long.
    fn stamp(
        &self,
        request: &AppendRequest,
        recorded_at: DateTime<Utc>,
        pending: &mut Pending,
        stamps: &mut Vec<Stamp>,
    ) {
        stamps.clear();
        let keys = self.stream_keys(request);
        for run in keys.chunks(HEADS_LOCK_EVENTS_MAX) {
            let published = self.shared.heads.read().expect("heads lock");
            heads::visit_prefetched(&published, run, LOOKAHEAD_HEADS, |_, key| {
                let previous = self.head_of(key, pending, &published);
                let stamp = Stamp {
                    position: pending.head.next_position + stamps.len() as u64,
                    version: previous.version + 1,
                    recorded_at,
                    previous_in_stream: previous.position,
                };
                let head = Head { version: stamp.version, position: stamp.position };
                pending.stream_heads.insert(key.clone(), head);
                stamps.push(stamp);
            });
        }
    }

    /// The key of each event's stream, in order.
    fn stream_keys(&self, request: &AppendRequest) -> Vec<StreamKey> {
        let mut keys = Vec::with_capacity(request.events.len());
        let mut heads = self.shared.heads.read().expect("heads lock");
        for event in &request.events {
            match heads.key(&event.stream) {
                Some(key) => keys.push(key),
                None => {
                    // A prefix never seen: numbered once, under the write lock (a handful ever).
                    drop(heads);
                    keys.push(self.shared.heads.write().expect("heads lock").numbering_key(&event.stream));
                    heads = self.shared.heads.read().expect("heads lock");
                }
            }
        }
        keys
    }

    /// A stream's version as it will stand after the requests staged so far (see `head_of`); 0
    /// for a stream with none. A prefix not yet numbered has no streams, staged or published:
    /// staging numbers every prefix it writes.
    fn stream_version(&self, stream: &str, pending: &Pending) -> u64 {
        let heads = self.shared.heads.read().expect("heads lock");
        heads.key(stream).map_or(0, |key| self.head_of(&key, pending, &heads).version)
    }

    /// A stream's head as it will stand after the requests staged so far: this commit's, else the
    /// newest commit in flight that wrote it, else the published one.
    fn head_of(&self, key: &StreamKey, pending: &Pending, published: &HeadMap) -> Head {
        pending
            .stream_heads
            .get(key)
            .or_else(|| self.in_flight.iter().rev().find_map(|commit| commit.stream_heads.get(key)))
            .copied()
            .or_else(|| published.get_key(key))
            .unwrap_or(Head { version: 0, position: 0 })
    }
}

/// The sealer stopped taking messages (it panicked).
struct Gone;

/// The writer's ends of its channels to and from the sealer.
struct Output {
    to_seal: SyncSender<ToSeal>,
    spares: Receiver<Vec<u8>>,
    /// Chunks handed to the sealer and not yet inserted (the sealer counts them down).
    backlog: Arc<AtomicUsize>,
    /// For the chunks sealed here.
    sealing: Sealing,
}

impl Output {
    /// Hands a chunk on, sealed here when the sealer is behind: with one large commit the writer
    /// and the sealer are the two busy threads on two cores, and the sealer (LZ4 and sled's
    /// insert) is the slower; sealing some chunks here ends both at about the same time.
    fn send_chunk(&mut self, chunk: RawChunk) -> std::result::Result<(), Gone> {
        let message = if self.backlog.load(Ordering::Acquire) >= SEAL_BACKLOG_CHUNKS {
            let sealed = self.sealing.seal(&chunk).to_vec();
            ToSeal::Sealed(chunk, sealed)
        } else {
            ToSeal::Chunk(chunk)
        };
        self.backlog.fetch_add(1, Ordering::AcqRel);
        self.send(message)
    }

    fn send(&mut self, message: ToSeal) -> std::result::Result<(), Gone> {
        self.to_seal.send(message).map_err(|_| Gone)
    }

    /// A spent chunk buffer if the sealer has one back, else a new one.
    fn spare_buffer(&mut self) -> Vec<u8> {
        self.spares.try_recv().unwrap_or_else(|_| Vec::with_capacity(crate::record::CHUNK_BYTES_TARGET * 2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(backlog: usize) -> (Output, Receiver<ToSeal>) {
        let (to_seal, from_writer) = sync_channel(4);
        let (_spare, spares) = sync_channel(1);
        (
            Output {
                to_seal,
                spares,
                backlog: Arc::new(AtomicUsize::new(backlog)),
                sealing: Sealing::default(),
            },
            from_writer,
        )
    }

    fn chunk() -> RawChunk {
        // Bytes that need not parse: sealing frames and compresses whatever the chunk holds.
        RawChunk { first_position: 9, count: 1, raw: b"raw record bytes, raw record bytes".to_vec() }
    }

    #[test]
    fn a_chunk_is_sealed_by_the_writer_only_when_the_sealer_is_behind() {
        let (mut keeping_up, received) = output(SEAL_BACKLOG_CHUNKS - 1);
        keeping_up.send_chunk(chunk()).ok().expect("the channel is open");
        assert!(matches!(received.try_recv(), Ok(ToSeal::Chunk(_))));
        assert_eq!(keeping_up.backlog.load(Ordering::Acquire), SEAL_BACKLOG_CHUNKS, "counted up");

        let (mut behind, received) = output(SEAL_BACKLOG_CHUNKS);
        behind.send_chunk(chunk()).ok().expect("the channel is open");
        match received.try_recv() {
            Ok(ToSeal::Sealed(raw, sealed)) => assert_eq!(sealed, raw.seal(), "the sealer's own bytes"),
            _ => panic!("expected a chunk sealed by the writer"),
        }
        assert_eq!(behind.backlog.load(Ordering::Acquire), SEAL_BACKLOG_CHUNKS + 1);
    }
}
