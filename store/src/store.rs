//! The handle callers hold: open, append (blocking or async), read, tail and verify.
//!
//! Reads never show an event before it is durable: they are bounded by the committed head, which
//! the writer advances only after the flush and fsync of the commit that holds it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot, watch};

use crate::chunks::{self, chunk_at, required_chunk};
use crate::heads::{self, HeadMap};
use crate::keys;
use crate::limits::*;
use crate::record::{self, Chunk, Envelope, NewEvent, GENESIS_HASH};
use crate::stages::{CommitStages, Mark, StageClock};
use crate::writer::{Answer, HeadState, Job, Writer};
use crate::{Result, StoreError};

/// Where `recorded_at` comes from. Injected so tests can drive time; the store clamps it so that
/// `recorded_at` never decreases along the log, whatever the clock does.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// sled's page cache by default. A log of a few hundred thousand events fits in it, and member
/// histories then read from memory (at 100,000 members, p99 ~0.1 ms against ~0.3–0.5 ms with 64
/// MiB). At 10 M events no cache size helps them (64 MiB, 256 MiB and 1 GiB measured alike), so a
/// large log on a tight memory budget can run with 64 MiB and save ~60 MiB (BENCHMARKS.md). sled
/// holds pages it has read beyond this (its accounting lags by up to 256 × 64 page reads).
pub const DEFAULT_CACHE_BYTES: u64 = 256 * 1024 * 1024;

/// Options passed explicitly at open rather than trusting sled's defaults.
#[derive(Clone)]
pub struct StoreOptions {
    /// sled's page cache, in bytes. Bounds most of the store's memory; reads past it go to the OS
    /// cache.
    pub cache_capacity_bytes: u64,
    pub clock: Clock,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions { cache_capacity_bytes: DEFAULT_CACHE_BYTES, clock: Arc::new(Utc::now) }
    }
}

/// An idempotency key, already scoped by the caller (for example to the acting token), and the
/// fingerprint of the request it was sent with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    pub key: String,
    pub fingerprint: [u8; 32],
}

/// One atomic append: every event is written or none is.
#[derive(Debug, Clone, Default)]
pub struct AppendRequest {
    pub events: Vec<NewEvent>,
    /// Streams whose version must be exactly this before the append (0: the stream is empty).
    pub expected_versions: Vec<(String, u64)>,
    pub idempotency: Option<IdempotencyKey>,
}

/// What an append did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// The events were written, durably, with these envelopes.
    Written(Vec<Envelope>),
    /// The idempotency key was seen before with the same fingerprint: nothing was written, and
    /// these are the events the first request appended.
    Replayed(Vec<Envelope>),
}

impl Appended {
    pub fn events(&self) -> &[Envelope] {
        match self {
            Appended::Written(events) | Appended::Replayed(events) => events,
        }
    }

    pub fn into_events(self) -> Vec<Envelope> {
        match self {
            Appended::Written(events) | Appended::Replayed(events) => events,
        }
    }
}

/// The outcome of [`Store::verify`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VerifyReport {
    pub ok: bool,
    /// Records found sound before the first bad one (all of them when `ok`).
    pub checked: u64,
    pub first_bad_position: Option<u64>,
    /// What was wrong at `first_bad_position`.
    pub detail: Option<String>,
}

/// State shared by the handle and the writer thread.
pub(crate) struct Shared {
    pub tree: sled::Tree,
    /// Every stream's durable head. Written only by the writer, after a commit is durable.
    pub heads: RwLock<HeadMap>,
    pub committed_head: AtomicU64,
    pub head_watch: watch::Sender<u64>,
    /// Times each commit's stages when asked (`Store::time_commit_stages`).
    pub stages: StageClock,
}

/// The event log. Not `Clone`: share it behind an `Arc`. Dropping it stops the writer after the
/// queued appends are committed.
pub struct Store {
    shared: Arc<Shared>,
    sender: Option<mpsc::Sender<Vec<Job>>>,
    /// Appends queued for the writer and not yet taken (at most [`QUEUE_REQUESTS_MAX`]).
    queued: Arc<AtomicUsize>,
    writer: Option<JoinHandle<()>>,
    path: PathBuf,
}

impl Store {
    /// Opens (or creates) the log in `dir`. A damaged last record does not stop the open — reads
    /// and [`Store::verify`] still work — but every append is then refused.
    pub fn open(dir: impl AsRef<Path>, options: StoreOptions) -> Result<Store> {
        let path = dir.as_ref().to_path_buf();
        let db = open_waiting_for_lock(&sled_config(&path, options.cache_capacity_bytes))?;
        let tree = db.open_tree("log")?;
        let mark_damage = settle_commit_mark(&tree)?;
        let (head, committed, mut damage) = match load_head(&tree) {
            Ok(head) => {
                let committed = head.next_position - 1;
                (head, committed, mark_damage)
            }
            // Reads still reach every stored record (and report the damage); appends are refused.
            Err(error) => (HeadState::empty(), last_chunk_position(&tree), Some(error.to_string())),
        };
        let stream_heads = match heads::load(&path, &tree, committed) {
            Ok((stream_heads, None)) => stream_heads,
            Ok((stream_heads, Some(error))) => {
                damage.get_or_insert(error.to_string());
                stream_heads
            }
            Err(error) => {
                damage.get_or_insert(error.to_string());
                HeadMap::default()
            }
        };
        let (head_watch, _) = watch::channel(committed);
        let shared = Arc::new(Shared {
            tree,
            heads: RwLock::new(stream_heads),
            committed_head: AtomicU64::new(committed),
            head_watch,
            stages: StageClock::new(),
        });
        // Messages are groups of appends, at least one each: the count below bounds the appends.
        let (sender, receiver) = mpsc::channel(QUEUE_REQUESTS_MAX);
        let queued = Arc::new(AtomicUsize::new(0));
        let writer = Writer::new(db, &path, Arc::clone(&shared), head, options.clock, damage)?;
        let taken = Arc::clone(&queued);
        let writer = std::thread::Builder::new()
            .name("flowbook-log-writer".into())
            .spawn(move || writer.run(receiver, taken))?;
        Ok(Store { shared, sender: Some(sender), queued, writer: Some(writer), path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Starts timing every commit's stages, clearing what was timed before. Meaningful only while
    /// one appender waits on each commit before the next: the stages of overlapping commits would
    /// mix. The bench's waiting phase reports it.
    pub fn time_commit_stages(&self) {
        self.shared.stages.start();
    }

    /// Stops timing commits' stages and answers their averages since
    /// [`Store::time_commit_stages`] (see [`COMMIT_STAGES`](crate::COMMIT_STAGES)).
    pub fn timed_commit_stages(&self) -> CommitStages {
        self.shared.stages.stop()
    }

    /// Appends atomically and durably; blocks the calling thread until the commit is on stable
    /// storage. Do not call from async code: use [`Store::append_async`].
    pub fn append(&self, request: AppendRequest) -> Result<Appended> {
        self.enqueue(request)?.wait()
    }

    /// [`Store::append`] for async callers.
    pub async fn append_async(&self, request: AppendRequest) -> Result<Appended> {
        self.enqueue(request)?.wait_async().await
    }

    /// Queues an append now and returns a handle to wait for it later. Appends are committed in
    /// the order they are submitted, so a single writer can submit several and wait once.
    pub fn submit(&self, request: AppendRequest) -> Result<Submitted> {
        self.enqueue(request)
    }

    /// Checks a request as [`Store::submit`] does (sizes, names, keys), without queueing it.
    pub fn check(request: &AppendRequest) -> Result<()> {
        check_request(request)
    }

    /// Queues several appends at once, in order, as one group that the writer takes whole: one
    /// commit, one durable flush (a group of more than [`crate::limits::COMMIT_EVENTS_MAX`]
    /// events is split over commits, in order). Each is still atomic on its own and answered on
    /// its own. A request refused here (by its checks) refuses every one after it too, so a caller
    /// whose later requests build on earlier ones never has a later one written without the
    /// earlier; a queue without room for the whole group refuses all of it (`Busy`; a group of
    /// more than [`QUEUE_REQUESTS_MAX`] never fits).
    pub fn submit_all(&self, requests: Vec<AppendRequest>) -> Vec<Result<Submitted>> {
        let total = requests.len();
        // The requests up to the first refused one go as one group: the writer takes them
        // together, so they share a commit and a flush. Queued one by one, the writer — woken by
        // the first, on the other core — often took the first few alone, and a batch of the
        // server's writes cost two or three flushes in a row (BENCHMARKS.md, issue 5, eighth
        // session). Those after the refused one are neither checked nor rendered.
        let mut group = Vec::with_capacity(total);
        let mut submitted = Vec::with_capacity(total);
        let mut refused: Option<StoreError> = None;
        for request in requests {
            if let Err(error) = check_request(&request) {
                refused = Some(error);
                break;
            }
            let rendered = Arc::new(record::Rendered::of(&request.events));
            let request = Arc::new(request);
            let (reply, answer) = oneshot::channel();
            group.push(Job { request: Arc::clone(&request), rendered, reply });
            submitted.push(Submitted { answer, request, shared: Arc::clone(&self.shared) });
        }
        let accepted = submitted.len();
        let mut answers = Vec::with_capacity(total);
        match self.queue(group) {
            Ok(()) => answers.extend(submitted.into_iter().map(Ok)),
            Err(error) => answers.extend((0..accepted).map(|_| Err(error.clone()))),
        }
        while answers.len() < total {
            answers.push(Err(refused.clone().expect("a request was refused")));
        }
        answers
    }

    fn enqueue(&self, request: AppendRequest) -> Result<Submitted> {
        self.shared.stages.mark(Mark::Submitted);
        check_request(&request)?;
        let count = request.events.len();
        let request = Arc::new(request);
        let (reply, answer) = oneshot::channel();
        let rendered = Arc::new(record::Rendered::pending(count));
        // A large request is queued first and rendered after: the writer stamps each event as
        // soon as it is rendered, on the other core (see `record::Rendered`).
        let render_first = count < RENDER_WHILE_STAMPING_EVENTS_MIN;
        if render_first {
            rendered.fill(&request.events);
        }
        self.queue(vec![Job { request: Arc::clone(&request), rendered: Arc::clone(&rendered), reply }])?;
        if !render_first {
            rendered.fill(&request.events);
        }
        Ok(Submitted { answer, request, shared: Arc::clone(&self.shared) })
    }

    /// Queues a group of appends for the writer, all or none.
    fn queue(&self, group: Vec<Job>) -> Result<()> {
        if group.is_empty() {
            return Ok(());
        }
        let sender = self.sender.as_ref().ok_or(StoreError::Closed)?;
        let count = group.len();
        if self.queued.fetch_add(count, Ordering::AcqRel) + count > QUEUE_REQUESTS_MAX {
            self.queued.fetch_sub(count, Ordering::AcqRel);
            return Err(StoreError::Busy(QUEUE_REQUESTS_MAX));
        }
        sender.try_send(group).map_err(|error| {
            self.queued.fetch_sub(count, Ordering::AcqRel);
            match error {
                mpsc::error::TrySendError::Full(_) => StoreError::Busy(QUEUE_REQUESTS_MAX),
                mpsc::error::TrySendError::Closed(_) => StoreError::Closed,
            }
        })
    }

    /// The position of the last durable event (0 for an empty log).
    pub fn head(&self) -> u64 {
        self.shared.committed_head.load(Ordering::Acquire)
    }

    /// Watches the committed head: for live tails that must neither miss nor repeat an event,
    /// read after your cursor up to the head, then wait for it to change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.head_watch.subscribe()
    }

    /// A live tail from `after`: first everything already durable, then each new commit as it
    /// becomes durable. Positions are consecutive across catch-up and live, with no gap and no
    /// duplicate, because the tail reads by position and only waits when it has caught up.
    pub fn tail(self: &Arc<Self>, after: u64) -> Tail {
        Tail { store: Arc::clone(self), cursor: after, head: self.subscribe() }
    }

    /// Events after `after`, in position order, at most `limit` (capped at
    /// [`READ_PAGE_EVENTS_MAX`]).
    pub fn read_log(&self, after: u64, limit: usize) -> Result<Vec<Envelope>> {
        let limit = limit.min(READ_PAGE_EVENTS_MAX) as u64;
        let until = self.head().min(after.saturating_add(limit));
        let mut events = Vec::with_capacity(until.saturating_sub(after) as usize);
        chunks::for_each_record(&self.shared.tree, after, until, |record| {
            events.push(record.envelope()?);
            Ok(())
        })?;
        Ok(events)
    }

    /// Visits durable records after `after`, at most `limit`, with each one's position and
    /// canonical envelope JSON (the hashed bytes) — no envelope is built. The fast path for
    /// rebuilding read models. Returns the last position visited (`after` if none).
    pub fn scan(
        &self,
        after: u64,
        limit: usize,
        mut visit: impl FnMut(u64, &[u8]) -> Result<()>,
    ) -> Result<u64> {
        let until = self.head().min(after.saturating_add(limit as u64));
        let mut last = after;
        chunks::for_each_record(&self.shared.tree, after, until, |record| {
            visit(record.position, record.canonical)?;
            last = record.position;
            Ok(())
        })?;
        Ok(last)
    }

    /// One event by position, if it is durable.
    pub fn event(&self, position: u64) -> Result<Option<Envelope>> {
        if position == 0 || position > self.head() {
            return Ok(None);
        }
        let chunk = required_chunk(&self.shared.tree, position)?;
        let record = chunk.record(position).expect("the chunk holds the position");
        Ok(Some(record.envelope()?))
    }

    /// A stream's events from `from_version` on (versions start at 1), at most `limit`.
    ///
    /// Walks the stream's backlinks from its head, so it costs one chunk read per event at most
    /// (consecutive events of a stream often share a chunk).
    pub fn read_stream(&self, stream: &str, from_version: u64, limit: usize) -> Result<Vec<Envelope>> {
        let Some(head) = self.shared.heads.read().expect("heads lock").get(stream) else {
            return Ok(Vec::new());
        };
        let from_version = from_version.max(1);
        let mut events = Vec::new();
        let mut chunk: Option<Chunk> = None;
        let (mut position, mut version) = (head.position, head.version);
        while position != 0 && version >= from_version {
            if !chunk.as_ref().is_some_and(|chunk| chunk.contains(position)) {
                chunk = Some(required_chunk(&self.shared.tree, position)?);
            }
            let record = chunk.as_ref().and_then(|chunk| chunk.record(position)).expect("the chunk holds it");
            let envelope = record.envelope()?;
            if envelope.stream != stream || envelope.version != version {
                return Err(StoreError::Corrupt { position, detail: "stream backlink is damaged".into() });
            }
            position = record.previous_in_stream;
            version -= 1;
            events.push(envelope);
        }
        events.reverse();
        events.truncate(limit.min(READ_PAGE_EVENTS_MAX));
        Ok(events)
    }

    /// The version of a stream's last durable event (0 when it has none).
    pub fn stream_version(&self, stream: &str) -> Result<u64> {
        Ok(self.shared.heads.read().expect("heads lock").get(stream).map_or(0, |head| head.version))
    }

    /// What a request with this idempotency key appended before: `Some(events)` when the key was
    /// used with the same fingerprint, `IdempotencyKeyReused` when with another, `None` when new.
    /// Lets a caller answer a replay without re-running its rules; the writer checks again
    /// atomically, so a race between two equal requests still appends once.
    pub fn idempotent_result(&self, key: &IdempotencyKey) -> Result<Option<Vec<Envelope>>> {
        match crate::writer::lookup_idempotency(&self.shared.tree, &key.key)? {
            None => Ok(None),
            Some(seen) if seen.fingerprint != key.fingerprint => Err(StoreError::IdempotencyKeyReused),
            Some(seen) => Ok(Some(self.read_positions(seen.first_position, seen.count)?)),
        }
    }

    pub(crate) fn read_positions(&self, first: u64, count: u32) -> Result<Vec<Envelope>> {
        read_positions(&self.shared.tree, first, count)
    }

    /// Recomputes every chunk's checksum, the hash chain and the stream backlinks from position
    /// 1, stopping at the first damage (a bad checksum, a gap, a record in the wrong place, a
    /// broken chain or backlink). A damaged chunk is reported at its first position.
    pub fn verify(&self) -> Result<VerifyReport> {
        let mut previous = GENESIS_HASH;
        let mut checked = 0u64;
        let mut streams: std::collections::HashMap<String, (u64, u64)> = Default::default();
        let last = last_chunk_position(&self.shared.tree).max(self.head());
        let mut failure = None;
        let outcome = chunks::for_each_record(&self.shared.tree, 0, u64::MAX, |record| {
            let fail =
                |detail: &str| StoreError::Corrupt { position: record.position, detail: detail.into() };
            if record::chain_hash(&previous, record.canonical) != record.hash {
                return Err(fail("hash chain broken"));
            }
            let (stream, version) = record.stream_and_version()?;
            let (last_version, last_position) = streams.get(stream).copied().unwrap_or((0, 0));
            if version != last_version + 1 || record.previous_in_stream != last_position {
                return Err(fail("stream version or backlink broken"));
            }
            record.envelope()?;
            streams.insert(stream.to_owned(), (version, record.position));
            previous = record.hash;
            checked = record.position;
            Ok(())
        });
        match outcome {
            Ok(()) => {}
            // The scan runs to u64::MAX: running out of records past the last one is the end.
            Err(StoreError::Corrupt { position, .. }) if position == checked + 1 && position > last => {}
            Err(StoreError::Corrupt { position, detail }) => failure = Some((position, detail)),
            Err(other) => return Err(other),
        }
        Ok(match failure {
            None => VerifyReport { ok: true, checked, first_bad_position: None, detail: None },
            Some((position, detail)) => {
                VerifyReport { ok: false, checked, first_bad_position: Some(position), detail: Some(detail) }
            }
        })
    }
}

/// An append queued by [`Store::submit`].
pub struct Submitted {
    answer: oneshot::Receiver<Result<Answer>>,
    /// Its events, kept here for their envelopes.
    request: Arc<AppendRequest>,
    /// For the stage clock's last two marks.
    shared: Arc<Shared>,
}

impl Submitted {
    /// Blocks until the append is durable (or refused). Not from async code: use `wait_async`.
    pub fn wait(self) -> Result<Appended> {
        let answer = self.answer.blocking_recv().map_err(|_| StoreError::Closed)?;
        Ok(appended(&self.shared, self.request, answer?))
    }

    pub async fn wait_async(self) -> Result<Appended> {
        let answer = self.answer.await.map_err(|_| StoreError::Closed)?;
        Ok(appended(&self.shared, self.request, answer?))
    }
}

/// The log's answer to `request` as its caller sees it: written events get their envelopes here,
/// on the appending thread, of the request's own events (moved out: the writer has let go of
/// them by the time it answers).
fn appended(shared: &Shared, request: Arc<AppendRequest>, answer: Answer) -> Appended {
    shared.stages.mark(Mark::Answered);
    let appended = match answer {
        Answer::Replayed(events) => Appended::Replayed(events),
        Answer::Written(stamped) => {
            let events = Arc::try_unwrap(request).map_or_else(|kept| kept.events.clone(), |own| own.events);
            Appended::Written(stamped.envelopes(events))
        }
    };
    shared.stages.mark(Mark::Enveloped);
    appended
}

/// See [`Store::tail`].
pub struct Tail {
    store: Arc<Store>,
    cursor: u64,
    head: watch::Receiver<u64>,
}

impl Tail {
    /// The position of the last event handed out.
    pub fn position(&self) -> u64 {
        self.cursor
    }

    /// The next events (at most `limit`), waiting until at least one is durable. `Err(Closed)`
    /// once the store is gone.
    pub async fn next_batch(&mut self, limit: usize) -> Result<Vec<Envelope>> {
        loop {
            // Mark the head seen *before* reading, so a commit landing after the read wakes us.
            let head = *self.head.borrow_and_update();
            if head > self.cursor {
                let events = self.store.read_log(self.cursor, limit.max(1))?;
                if let Some(last) = events.last() {
                    self.cursor = last.position;
                }
                return Ok(events);
            }
            self.head.changed().await.map_err(|_| StoreError::Closed)?;
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // Closing the queue lets the writer commit what is queued and stop.
        self.sender.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

fn check_request(request: &AppendRequest) -> Result<()> {
    if request.events.is_empty() {
        return Err(StoreError::InvalidAppend("an append needs at least one event"));
    }
    if request.events.len() > APPEND_EVENTS_MAX {
        return Err(StoreError::LimitExceeded { what: "events in one append", limit: APPEND_EVENTS_MAX });
    }
    for event in &request.events {
        if event.data.get().len() > EVENT_DATA_BYTES_MAX {
            return Err(StoreError::LimitExceeded { what: "event data bytes", limit: EVENT_DATA_BYTES_MAX });
        }
        check_name(&event.stream, "stream")?;
        check_name(&event.event_type, "event type")?;
        check_name(&event.actor, "actor")?;
    }
    for (stream, _) in &request.expected_versions {
        check_name(stream, "stream")?;
    }
    if let Some(key) = &request.idempotency {
        if key.key.is_empty() {
            return Err(StoreError::InvalidAppend("an idempotency key may not be empty"));
        }
        if key.key.len() > IDEMPOTENCY_KEY_BYTES_MAX {
            return Err(StoreError::LimitExceeded {
                what: "idempotency key bytes",
                limit: IDEMPOTENCY_KEY_BYTES_MAX,
            });
        }
    }
    Ok(())
}

fn check_name(name: &str, what: &'static str) -> Result<()> {
    if name.is_empty() || name.contains('\0') {
        return Err(StoreError::InvalidAppend(match what {
            "stream" => "a stream name must be non-empty and free of NUL",
            "event type" => "an event type must be non-empty and free of NUL",
            _ => "an actor must be non-empty and free of NUL",
        }));
    }
    if name.len() > NAME_BYTES_MAX {
        return Err(StoreError::LimitExceeded { what, limit: NAME_BYTES_MAX });
    }
    Ok(())
}

pub(crate) fn read_positions(tree: &sled::Tree, first: u64, count: u32) -> Result<Vec<Envelope>> {
    let mut events = Vec::with_capacity(count as usize);
    chunks::for_each_record(tree, first - 1, first - 1 + u64::from(count), |record| {
        events.push(record.envelope()?);
        Ok(())
    })?;
    Ok(events)
}

/// Opens sled, waiting up to [`LOCK_WAIT_MILLIS_MAX`] for its file lock. sled's I/O threads can
/// hold the file for a moment after the last handle of a closed store is dropped, so a reopen in
/// the same process (a restart in tests, a command after a close) may find it briefly locked. A
/// lock held by another live process is still refused once the wait is over.
/// Requests of this many events or more are queued before they are rendered, so that the writer
/// stamps the first while the rest render; smaller ones render first (a few microseconds), and
/// the writer never waits on them.
const RENDER_WHILE_STAMPING_EVENTS_MIN: usize = 64;

/// How the log configures sled (and `parts.rs` the sled it measures alone).
pub(crate) fn sled_config(path: &Path, cache_capacity_bytes: u64) -> sled::Config {
    sled::Config::new()
        .path(path)
        .cache_capacity(cache_capacity_bytes)
        .mode(sled::Mode::HighThroughput)
        // The writer flushes (and fsyncs) every commit itself; a background flusher would only
        // add I/O that acknowledges nothing.
        .flush_every_ms(None)
}

pub(crate) fn open_waiting_for_lock(config: &sled::Config) -> Result<sled::Db> {
    let started = std::time::Instant::now();
    loop {
        match config.open() {
            // sled reports a held lock as an `Other` I/O error with this text (config.rs).
            Err(sled::Error::Io(error))
                if error.to_string().contains("could not acquire lock")
                    && started.elapsed().as_millis() < LOCK_WAIT_MILLIS_MAX =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other.map_err(StoreError::from),
        }
    }
}

/// The first position of the last stored chunk (0 when none): where reads must reach when the
/// last chunk cannot be opened.
fn last_chunk_position(tree: &sled::Tree) -> u64 {
    let range = keys::event_key(0)..=keys::event_key(u64::MAX);
    match tree.range(range).next_back() {
        Some(Ok((key, _))) => keys::position_of_event_key(&key).unwrap_or(0),
        _ => 0,
    }
}

/// Makes the log end where its last whole commit ends: removes the chunks and idempotency
/// entries of a commit that was being written when the process stopped (past the commit mark;
/// never acknowledged), and gives a log without a mark — new, or written before marks — one at its
/// last record (such logs were written a commit to a batch, whole). Chunks inserted by later
/// commits land after the removal in sled's log, so one flush makes both durable.
///
/// Answers damage found (appends are then refused; reads still work).
fn settle_commit_mark(tree: &sled::Tree) -> Result<Option<String>> {
    let last = last_chunk_position(tree);
    let end_of_last = || chunk_at(tree, last).ok().flatten().map(|chunk| chunk.last_position());
    match tree.get(keys::COMMIT_MARK)? {
        Some(mark) => {
            let Ok(mark) = <[u8; 8]>::try_from(mark.as_ref()).map(u64::from_be_bytes) else {
                return Ok(Some("the commit mark is damaged".into()));
            };
            let mut removal: Vec<sled::IVec> = Vec::new();
            if let Some(damage) = unfinished_entries(tree, mark, &mut removal)? {
                return Ok(Some(damage));
            }
            if last > mark {
                let unfinished = keys::event_key(mark + 1)..=keys::event_key(u64::MAX);
                for entry in tree.range(unfinished) {
                    removal.push(entry?.0);
                }
            } else if last > 0 && end_of_last() != Some(mark) {
                return Ok(Some(format!("the commit mark says position {mark}, the log ends elsewhere")));
            }
            if !removal.is_empty() {
                let mut batch = sled::Batch::default();
                removal.into_iter().for_each(|key| batch.remove(key));
                tree.apply_batch(batch)?;
            }
        }
        None => {
            // A damaged last chunk gets no mark: the open reports the damage.
            let end = if last == 0 { Some(0) } else { end_of_last() };
            if let Some(end) = end {
                tree.insert(keys::COMMIT_MARK, &end.to_be_bytes())?;
            }
        }
    }
    Ok(None)
}

/// Adds to `removal` the idempotency entries of a commit past the mark (and the list naming
/// them), found through [`keys::COMMIT_KEYS`]; answers damage found.
fn unfinished_entries(tree: &sled::Tree, mark: u64, removal: &mut Vec<sled::IVec>) -> Result<Option<String>> {
    let Some(value) = tree.get(keys::COMMIT_KEYS)? else {
        return Ok(None);
    };
    let Some((end, entry_keys)) = keys::parse_commit_keys(&value) else {
        return Ok(Some("the list of the last commit's idempotency keys is damaged".into()));
    };
    if end <= mark {
        return Ok(None); // a finished commit's: its entries stand
    }
    for key in entry_keys {
        // Only the unfinished commit's own entries: a key already answered by an earlier commit
        // is a replay and never written again, but a damaged log must not lose it either.
        let entry = tree.get(key)?.map(|bytes| crate::writer::SeenKey::decode(&bytes)).transpose();
        match entry {
            Ok(Some(seen)) if seen.first_position > mark => removal.push(key.into()),
            Ok(_) => {}
            Err(_) => return Ok(Some("an idempotency entry of the last commit is damaged".into())),
        }
    }
    removal.push(keys::COMMIT_KEYS.into());
    Ok(None)
}

/// Reads the last record to learn where the log stands.
fn load_head(tree: &sled::Tree) -> Result<HeadState> {
    let last = last_chunk_position(tree);
    if last == 0 {
        return Ok(HeadState::empty());
    }
    let chunk = chunk_at(tree, last)?
        .ok_or(StoreError::Corrupt { position: last, detail: "chunk missing".into() })?;
    let record = chunk.record(chunk.last_position()).expect("a chunk holds its last position");
    let envelope = record.envelope()?;
    Ok(HeadState {
        next_position: record.position + 1,
        last_hash: record.hash,
        last_recorded_at: envelope.recorded_at,
    })
}
