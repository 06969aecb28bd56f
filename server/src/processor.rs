//! The write path: one thread decides every command, in batches, so decisions never race and the
//! log's group commit still gets many appends per fsync.
//!
//! For each batch the processor takes everything queued, decides each command against its own
//! write model (`World`) — applying accepted events to it at once, with the positions the log will
//! give them (the processor is the log's only writer) — and submits each command's append without
//! waiting. Then it waits for all of them (one durable flush serves the lot), brings the read
//! models up to date (read-your-writes), and answers. Should an append fail, the write model is
//! rebuilt from the log before the next batch, so it never stays ahead of what is durable.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use flowbook_core::{
    decide, expire_overdue_letters, Command, Context, MemberId, NewEvent, RecordedEvent, RulesConfig,
    StreamId, World, SYSTEM_ACTOR,
};
use flowbook_projections::{codec, Live};
use flowbook_store::{AppendRequest, Envelope, IdempotencyKey, Store, StoreError, Submitted};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::access::{may_write, Principal};
use crate::error::ApiError;

/// Commands waiting for the processor. A full queue answers 503 rather than growing.
pub const QUEUE_COMMANDS_MAX: usize = 4_096;

/// Commands decided per batch.
pub const BATCH_COMMANDS_MAX: usize = 512;

/// Letters one step of an expiry sweep expires (each one append of two events). A sweep of more
/// runs in steps, each its own batch, so that writers queued meanwhile go in between and no
/// batch outgrows the log's queue: one batch of every overdue letter — tens of thousands after a
/// long stop, at a million members — overflowed it (`busy`), failed the sweep and, by the
/// failure path's fresh copy of the write model, took the server past 2 GiB.
pub const SWEEP_LETTERS_PER_STEP: usize = 500;

/// One write, as the HTTP layer hands it over.
pub struct Write {
    pub principal: Arc<Principal>,
    pub command: Command,
    /// The member stream's version the client expects (`expected_version`).
    pub expected_version: Option<(StreamId, u64)>,
    pub idempotency: Option<IdempotencyKey>,
    pub reply: oneshot::Sender<Result<Written, ApiError>>,
}

/// What a write appended (or, replayed, what its first sending appended).
#[derive(Debug, Clone)]
pub struct Written {
    pub events: Vec<Envelope>,
    pub replayed: bool,
}

enum Job {
    Write(Box<Write>),
    Sweep { now: DateTime<Utc>, reply: oneshot::Sender<Result<SweepStep, ApiError>> },
}

/// What one step of a sweep did.
#[derive(Debug, Clone, Copy)]
struct SweepStep {
    expired: usize,
    /// Overdue letters were left for the next step.
    more: bool,
}

/// The handle the HTTP layer holds.
#[derive(Clone)]
pub struct Processor {
    sender: mpsc::Sender<Job>,
    /// Commands per batch, for `/metrics`.
    pub batch_sizes: Arc<crate::metrics::BatchSizes>,
}

impl Processor {
    /// Starts the processor thread over a store whose read models `live` keeps.
    pub fn start(live: Arc<Live>, config: RulesConfig) -> Result<Processor, ApiError> {
        let world = live.read().world().clone();
        let (sender, receiver) = mpsc::channel(QUEUE_COMMANDS_MAX);
        let batch_sizes = Arc::new(crate::metrics::BatchSizes::default());
        let state = State { live, config, world, batch_sizes: Arc::clone(&batch_sizes) };
        std::thread::Builder::new()
            .name("flowbook-processor".into())
            .spawn(move || state.run(receiver))
            .map_err(|error| ApiError::internal("starting the processor", error))?;
        Ok(Processor { sender, batch_sizes })
    }

    pub async fn write(
        &self,
        write: impl FnOnce(oneshot::Sender<Result<Written, ApiError>>) -> Write,
    ) -> Result<Written, ApiError> {
        let (reply, answer) = oneshot::channel();
        self.enqueue(Job::Write(Box::new(write(reply))))?;
        answer.await.map_err(|_| ApiError::internal("processor", "stopped"))?
    }

    /// Queues a write, waiting for room in the queue (not refusing when full), and returns where
    /// its answer will come. Writes queued one after another are decided in that order.
    pub async fn queue(
        &self,
        write: impl FnOnce(oneshot::Sender<Result<Written, ApiError>>) -> Write,
    ) -> Result<oneshot::Receiver<Result<Written, ApiError>>, ApiError> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(Job::Write(Box::new(write(reply))))
            .await
            .map_err(|_| ApiError::internal("processor", "stopped"))?;
        Ok(answer)
    }

    /// Expires overdue letters now; answers how many. Runs in steps of at most
    /// [`SWEEP_LETTERS_PER_STEP`] letters until none is left.
    pub async fn sweep(&self, now: DateTime<Utc>) -> Result<usize, ApiError> {
        let mut expired = 0;
        loop {
            let (reply, answer) = oneshot::channel();
            self.enqueue(Job::Sweep { now, reply })?;
            let step = answer.await.map_err(|_| ApiError::internal("processor", "stopped"))??;
            expired += step.expired;
            // A step that expired nothing would find the same letters again (their commands
            // failed: logged): stop rather than loop.
            if !step.more || step.expired == 0 {
                return Ok(expired);
            }
        }
    }

    fn enqueue(&self, job: Job) -> Result<(), ApiError> {
        self.sender.try_send(job).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "too many writes queued; try again",
            ),
            mpsc::error::TrySendError::Closed(_) => ApiError::internal("processor", "stopped"),
        })
    }
}

struct State {
    live: Arc<Live>,
    config: RulesConfig,
    world: World,
    batch_sizes: Arc<crate::metrics::BatchSizes>,
}

/// Whom to answer, in the order of the batch. A write's and a sweep's appends are the batch's next
/// ones, in that same order.
enum Outcome {
    Submitted(oneshot::Sender<Result<Written, ApiError>>),
    /// How many appends the sweep's step made, and whether letters were left for the next.
    Sweep {
        submitted: usize,
        more: bool,
        reply: oneshot::Sender<Result<SweepStep, ApiError>>,
    },
    /// Same key and body as an earlier write of this batch: answered with its result.
    FollowerOf(usize, oneshot::Sender<Result<Written, ApiError>>),
}

impl State {
    fn run(mut self, mut receiver: mpsc::Receiver<Job>) {
        while let Some(first) = receiver.blocking_recv() {
            let mut jobs = vec![first];
            while jobs.len() < BATCH_COMMANDS_MAX {
                match receiver.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            self.batch_sizes.record(jobs.len());
            self.batch(jobs);
        }
    }

    fn batch(&mut self, jobs: Vec<Job>) {
        let store = Arc::clone(self.live.store());
        let mut next_position = store.head() + 1;
        let mut pending: Vec<RecordedEvent> = Vec::new();
        let mut keys: HashMap<String, ([u8; 32], usize)> = HashMap::new();
        let mut outcomes: Vec<Outcome> = Vec::new();
        // Queued together once the batch is decided, so the log commits them as one.
        let mut appends: Vec<AppendRequest> = Vec::new();
        for job in jobs {
            match job {
                Job::Write(write) => {
                    let write = *write;
                    if let Some(key) = &write.idempotency {
                        if let Some((fingerprint, index)) = keys.get(&key.key) {
                            if *fingerprint == key.fingerprint {
                                outcomes.push(Outcome::FollowerOf(*index, write.reply));
                            } else {
                                let _ = write.reply.send(Err(StoreError::IdempotencyKeyReused.into()));
                            }
                            continue;
                        }
                        match store.idempotent_result(key) {
                            Ok(Some(events)) => {
                                let _ = write.reply.send(Ok(Written { events, replayed: true }));
                                continue;
                            }
                            Ok(None) => {}
                            Err(error) => {
                                let _ = write.reply.send(Err(error.into()));
                                continue;
                            }
                        }
                    }
                    if let Some((stream, expected)) = write.expected_version {
                        let actual = self.world.stream_version(stream);
                        if actual != expected {
                            let error =
                                StoreError::VersionConflict { stream: stream.to_string(), expected, actual };
                            let _ = write.reply.send(Err(error.into()));
                            continue;
                        }
                    }
                    if let Err(error) = may_write(&write.principal, &write.command.body, &self.world) {
                        let _ = write.reply.send(Err(error));
                        continue;
                    }
                    let actor = write.principal.name.as_str();
                    let context = Context { now: Utc::now(), actor, config: &self.config };
                    let events = match decide(&self.world, &write.command, &context) {
                        Ok(events) => events,
                        Err(rejection) => {
                            let _ = write.reply.send(Err(rejection.into()));
                            continue;
                        }
                    };
                    match self.decided(actor, &events, write.idempotency, &mut next_position, &mut pending) {
                        Ok(append) => {
                            if let Some(key) = &append.idempotency {
                                keys.insert(key.key.clone(), (key.fingerprint, outcomes.len()));
                            }
                            outcomes.push(Outcome::Submitted(write.reply));
                            appends.push(append);
                        }
                        Err(error) => {
                            let _ = write.reply.send(Err(error));
                        }
                    }
                }
                Job::Sweep { now, reply } => {
                    let mut submitted = 0;
                    let due = expire_overdue_letters(&self.world, now);
                    let more = due.len() > SWEEP_LETTERS_PER_STEP;
                    for events in due.into_iter().take(SWEEP_LETTERS_PER_STEP) {
                        match self.decided(SYSTEM_ACTOR, &events, None, &mut next_position, &mut pending) {
                            Ok(append) => {
                                submitted += 1;
                                appends.push(append);
                            }
                            Err(error) => tracing::error!("sweep: {}", error.message),
                        }
                    }
                    outcomes.push(Outcome::Sweep { submitted, more, reply });
                }
            }
        }
        let submitted = store.submit_all(appends);
        let mut touched: Vec<u32> = pending
            .iter()
            .filter_map(|event| match event.stream {
                StreamId::Member(id) => self.world.member_number(id),
                StreamId::Branch(_) => None,
            })
            .collect();
        touched.sort_unstable();
        touched.dedup();
        self.finish(outcomes, submitted, pending, touched);
    }

    /// Applies decided events to the write model with the positions the log will give them, and
    /// makes them one atomic append with the versions they were decided on. An append the log
    /// would refuse by its checks is refused here, before the write model sees it.
    fn decided(
        &mut self,
        actor: &str,
        events: &[NewEvent],
        idempotency: Option<IdempotencyKey>,
        next_position: &mut u64,
        pending: &mut Vec<RecordedEvent>,
    ) -> Result<AppendRequest, ApiError> {
        let mut expected_versions: Vec<(String, u64)> = Vec::new();
        for event in events {
            let name = event.stream.to_string();
            if !expected_versions.iter().any(|(stream, _)| *stream == name) {
                expected_versions.push((name, self.world.stream_version(event.stream)));
            }
        }
        let request = AppendRequest {
            events: events.iter().map(|e| codec::to_store(e, actor, Uuid::now_v7())).collect(),
            expected_versions,
            idempotency,
        };
        Store::check(&request)?;
        let now = Utc::now();
        for event in events {
            let recorded = RecordedEvent {
                position: *next_position,
                stream: event.stream,
                version: self.world.stream_version(event.stream) + 1,
                effective_at: event.effective_at,
                recorded_at: now,
                actor: actor.to_owned(),
                data: event.data.clone(),
            };
            *next_position += 1;
            pending.push(recorded);
            let (live, recorded) = (&self.live, pending.last().expect("just pushed"));
            self.world.apply(recorded, |member| member_history(live, member, pending));
        }
        Ok(request)
    }

    /// Waits for every append of the batch, catches the read models up, and answers.
    /// `pending`: the batch's events as decided, in log order; `touched`: the numbers of the
    /// member streams the batch wrote to.
    fn finish(
        &mut self,
        outcomes: Vec<Outcome>,
        submitted: Vec<Result<Submitted, StoreError>>,
        mut pending: Vec<RecordedEvent>,
        touched: Vec<u32>,
    ) {
        let mut submitted = submitted.into_iter();
        // Each decided event gets the `recorded_at` the log gave it, so that the read models can
        // take the events as decided instead of reading them back (`Live::catch_up_with`).
        let first_pending = pending.first().map_or(0, |event| event.position);
        let mut stamped = 0;
        let mut wait = || -> Result<flowbook_store::Appended, StoreError> {
            let appended = submitted
                .next()
                .expect("an append for each write and sweep step")
                .and_then(Submitted::wait)?;
            for envelope in appended.events() {
                let index = envelope.position.checked_sub(first_pending).map(|index| index as usize);
                if let Some(event) = index.and_then(|index| pending.get_mut(index)) {
                    if event.position == envelope.position {
                        event.recorded_at = envelope.recorded_at;
                        stamped += 1;
                    }
                }
            }
            Ok(appended)
        };
        let mut results: Vec<Option<Result<Written, ApiError>>> = Vec::with_capacity(outcomes.len());
        let mut failed = false;
        let mut answers = Vec::new();
        for outcome in outcomes {
            match outcome {
                Outcome::Submitted(reply) => {
                    let result = wait()
                        .map(|appended| Written { events: appended.into_events(), replayed: false })
                        .map_err(ApiError::from);
                    failed |= result.is_err();
                    results.push(Some(result));
                    answers.push(Answer::Write(reply, results.len() - 1));
                }
                Outcome::FollowerOf(index, reply) => {
                    results.push(None);
                    answers.push(Answer::Follower(reply, index));
                }
                Outcome::Sweep { submitted, more, reply } => {
                    let mut expired = 0;
                    let mut error = None;
                    for _ in 0..submitted {
                        match wait() {
                            Ok(_) => expired += 1,
                            Err(e) => error = Some(ApiError::from(e)),
                        }
                    }
                    failed |= error.is_some();
                    results.push(None);
                    answers.push(Answer::Sweep(reply, error.map_or(Ok(SweepStep { expired, more }), Err)));
                }
            }
        }
        if failed {
            // The write model ran ahead of the log: start again from what is durable.
            tracing::error!("an append failed; rebuilding the write model from the log");
            if let Err(error) = self.live.catch_up() {
                tracing::error!("catching up failed: {error}");
            }
            self.world = self.live.read().world().clone();
        } else {
            let caught_up = if stamped == pending.len() {
                self.live.catch_up_with(&pending)
            } else {
                self.live.catch_up()
            };
            match caught_up {
                // The read models now hold what this world decided: each member the batch changed
                // is kept once again, not once here and once there (at a million members the two
                // copies were ~300 MiB).
                Ok(_) => {
                    self.world.share_members_with(self.live.read().world(), touched);
                }
                Err(error) => tracing::error!("catching up failed: {error}"),
            }
        }
        // Followers (replays of a write in the same batch) first: each copies its leader's
        // result, which the leader's own answer then takes without a copy — an answer's envelopes
        // are several allocations each, once per command under 64 writing clients.
        let (followers, others): (Vec<Answer>, Vec<Answer>) =
            answers.into_iter().partition(|answer| matches!(answer, Answer::Follower(..)));
        for answer in followers.into_iter().chain(others) {
            match answer {
                Answer::Write(reply, index) => {
                    let _ = reply.send(results[index].take().expect("a write has a result"));
                }
                Answer::Follower(reply, index) => {
                    let result = results
                        .get(index)
                        .cloned()
                        .flatten()
                        .map(|r| r.map(|written| Written { replayed: true, ..written }));
                    let _ = reply
                        .send(result.unwrap_or_else(|| Err(ApiError::internal("batch", "lost a result"))));
                }
                Answer::Sweep(reply, result) => {
                    let _ = reply.send(result);
                }
            }
        }
    }
}

enum Answer {
    Write(oneshot::Sender<Result<Written, ApiError>>, usize),
    Follower(oneshot::Sender<Result<Written, ApiError>>, usize),
    Sweep(oneshot::Sender<Result<SweepStep, ApiError>>, Result<SweepStep, ApiError>),
}

/// A member's stream for a refold: what is durable, plus this batch's events not yet written.
fn member_history(live: &Live, member: MemberId, pending: &[RecordedEvent]) -> Vec<RecordedEvent> {
    let mut events = live.member_stream(member).unwrap_or_default();
    let stream = StreamId::Member(member);
    events.extend(pending.iter().filter(|e| e.stream == stream).cloned());
    events
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use flowbook_store::StoreOptions;
    use serde_json::Value;
    use tower::ServiceExt;

    use super::*;
    use crate::app::{self, AppState, Shared};

    fn state_over(live: Arc<Live>) -> AppState {
        let processor = Processor::start(Arc::clone(&live), RulesConfig::default()).unwrap();
        AppState::new(Shared {
            live,
            processor,
            tokens: None,
            metrics: Default::default(),
            limits: Default::default(),
        })
    }

    /// The answer to a GET, with its status (a member known before it was registered is 404).
    async fn get(state: &AppState, path: &str) -> (u16, Value) {
        let request = Request::get(path).body(Body::empty()).unwrap();
        let response = app::router(state.clone()).oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }

    /// Reads over every read model: statistics, transfers, a sample of rosters (now, as of a
    /// past day, as known on an earlier one) and of members (views and histories), the log.
    async fn every_read(state: &AppState) -> Vec<(String, (u16, Value))> {
        let mut paths: Vec<String> = vec![
            "/v1/branches".into(),
            "/v1/stats/mobile".into(),
            "/v1/stats/pocket?from=2020-01-01&to=2030-01-01".into(),
            "/v1/stats/flows?from=2024-01-01&to=2027-01-01&by=branch".into(),
            "/v1/stats/flows?from=2025-03-01&to=2025-06-01&by=region".into(),
        ];
        for state in ["open", "overdue", "completed", "cancelled", "expired"] {
            paths.push(format!("/v1/transfers?state={state}"));
        }
        let (_, branches) = get(state, "/v1/branches").await;
        for branch in branches["branches"].as_array().unwrap().iter().step_by(5) {
            let id = branch["branch_id"].as_str().unwrap();
            paths.push(format!("/v1/branches/{id}/roster"));
            paths.push(format!("/v1/branches/{id}/roster?as_of=2025-06-30"));
            paths.push(format!("/v1/branches/{id}/roster?as_of=2025-06-30&known_at=2025-01-01T00:00:00Z"));
        }
        let (_, log) = get(state, "/v1/events?after=0&limit=10000").await;
        for event in log["events"].as_array().unwrap().iter().step_by(13) {
            if let Some(member) = event["stream"].as_str().unwrap().strip_prefix("member/") {
                paths.push(format!("/v1/members/{member}"));
                paths.push(format!("/v1/members/{member}/history"));
                paths.push(format!("/v1/members/{member}?as_of=2025-06-30"));
            }
            // The rosters this event changes, known just before and at the instant the log
            // recorded it: the read models must hold the log's `recorded_at`, to the nanosecond.
            let recorded: DateTime<Utc> = event["recorded_at"].as_str().unwrap().parse().unwrap();
            let branches = ["branch_id", "to_branch_id", "from_branch_id", "home_branch_id"]
                .into_iter()
                .filter_map(|field| event["data"][field].as_str());
            for branch in branches {
                for known_at in [recorded - chrono::TimeDelta::nanoseconds(1), recorded] {
                    let known_at = known_at.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
                    paths.push(format!("/v1/branches/{branch}/roster?known_at={known_at}"));
                }
            }
        }
        let mut answers = vec![("/v1/events".to_owned(), (200, log))];
        for path in paths {
            let answer = get(state, &path).await;
            answers.push((path, answer));
        }
        answers
    }

    /// The read models the processor keeps current — each batch's events applied as decided,
    /// not read back (`Live::catch_up_with`) — answer every read as models rebuilt from the log.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn read_models_kept_from_decided_events_equal_a_rebuild_from_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), StoreOptions::default()).unwrap());
        let live = Arc::new(Live::open(Arc::clone(&store), RulesConfig::default(), |_, _| {}).unwrap());
        let kept = state_over(Arc::clone(&live));
        let end = "2026-06-30T00:00:00Z".parse().unwrap();
        let report = crate::demo::run(&kept, 3, 300, end).await;
        assert!(report.refused.is_empty(), "{:?}", report.refused);
        assert!(report.expired > 0 && report.retracted > 0, "sweeps and retractions are covered");
        assert_eq!(live.read().position(), store.head(), "caught up");
        assert!(store.head() > 1_000 && store.head() < 10_000, "one page of the log: {}", store.head());

        let rebuilt = Live::open(Arc::clone(&store), RulesConfig::default(), |_, _| {}).unwrap();
        let rebuilt = state_over(Arc::new(rebuilt));
        let (kept, rebuilt) = (every_read(&kept).await, every_read(&rebuilt).await);
        assert!(kept.len() > 100, "a real sample: {} answers", kept.len());
        let found = kept.iter().filter(|(_, (status, _))| *status == 200).count();
        assert!(found * 10 > kept.len() * 9, "mostly found: {found} of {}", kept.len());
        assert_eq!(kept.len(), rebuilt.len());
        for ((path, kept), (_, rebuilt)) in kept.iter().zip(&rebuilt) {
            assert_eq!(kept, rebuilt, "{path}");
        }
    }
}
