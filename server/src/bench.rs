//! `flowbook bench`: the workloads users care about, measured in one run on this machine, printed
//! as a table and written as a JSON report.
//!
//! 1. **Build**: the demo's district, at the size asked for, written through the import path
//!    (every command decided by the rules, appended durably in batches).
//! 2. **Batched append**: the district's own events appended again, as they are, to a fresh log in
//!    transactions of 1,000 events — the workload an event store's importer runs, and what a
//!    PostgreSQL event store is compared on: by 1 appender waiting for each transaction, by 1
//!    keeping `--in-flight` transactions submitted (an importer's way: the log stamps and seals
//!    the next while the disk makes the last durable; each is still answered, in order, only
//!    once durable) and by 4 appenders waiting for each.
//! 3. **The physical bound**: the same events' bytes written sequentially with one `fdatasync` per
//!    1,000 — what the disk allows for that workload; and **sled alone**: the log's own sealed
//!    chunks of those events given to sled as the log gives them (inserts, mark, flush,
//!    `fdatasync`), on one thread with nothing of ours around it — what the embedded store allows,
//!    beside the log's own CPU for a commit (`flowbook_store::measure_commit_parts`).
//! 4. **HTTP writes**: the server on a loopback port, 64 keep-alive clients, one command a request,
//!    each durable before its answer; flat out, then at half that rate for latency.
//! 5. **Rebuild** of every read model from the district's log, then **queries** on them.
//! 6. Disk bytes per event and peak memory.
//!
//! With `--postgres`, the same events go to PostgreSQL too (see `bench_postgres.rs`), each of its
//! timed runs right after flowbook's own; the peer settles after each of its runs (vacuum,
//! checkpoint: `Peer::settle`), so every timed run of either starts with it idle. Steps 2–4 (and
//! the peer's runs) repeat `--rounds` times; the report keeps every round and gives their medians.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use flowbook_core::MemberStatus;
use flowbook_projections::{At, FlowGrouping, Live};
use flowbook_store::{
    AppendRequest, CommitParts, CommitStages, Envelope, NewEvent, Store, StoreOptions, Submitted,
    PARTS_EVENTS_MAX,
};
use rand::seq::IndexedRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::app::AppState;

/// Events per transaction in the batched workloads.
pub const BATCH_EVENTS: usize = 1_000;

/// Concurrent appenders of the second batched run (and PostgreSQL clients).
pub const BATCH_APPENDERS: usize = 4;

/// Transactions the pipelined appender keeps in flight by default: while the disk makes one
/// durable, the log stamps and seals the next (`--in-flight`). 4 rather than 2: in three passes
/// of 2, 4 and 8, against the waiting appender in the same run, 2 gave 0.94–1.12×, 4 1.08–1.30×
/// and 8 1.10–1.24× (BENCHMARKS.md, issue 5, sixteenth session).
pub const PIPELINE_IN_FLIGHT: usize = 4;

/// The most `--in-flight` takes: the log's queue holds this many and more, and beyond a few the
/// only change is memory.
pub const PIPELINE_IN_FLIGHT_MAX: usize = 16;

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub dir: PathBuf,
    pub members: usize,
    pub clients: usize,
    pub seconds: f64,
    pub seed: u64,
    /// A PostgreSQL connection string: run the peer's workloads there too.
    pub postgres: Option<String>,
    /// sled's cache for every store of the bench, set explicitly so that peak memory means
    /// something.
    pub cache_bytes: u64,
    /// Times the timed comparisons run, each of flowbook's workloads followed at once by the
    /// peer's; the report gives each round and their medians.
    pub rounds: usize,
    /// Transactions the pipelined appender keeps submitted and not yet durable.
    pub in_flight: usize,
}

#[derive(Debug, Default, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub samples: usize,
}

impl Latency {
    pub fn of(mut samples_ms: Vec<f64>) -> Latency {
        if samples_ms.is_empty() {
            return Latency::default();
        }
        samples_ms.sort_by(f64::total_cmp);
        let at = |q: f64| samples_ms[((samples_ms.len() - 1) as f64 * q).round() as usize];
        Latency { p50_ms: at(0.5), p99_ms: at(0.99), samples: samples_ms.len() }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct Throughput {
    pub per_s: f64,
    #[serde(flatten)]
    pub latency: Latency,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub members: usize,
    pub events: u64,
    pub build_commands_per_s: f64,
    pub build_events_per_s: f64,
    /// One appender waiting for each transaction before the next.
    pub append_batched_1_per_s: f64,
    /// Its commits' stages, each the median of the rounds' (microseconds a commit).
    pub waiting_commit_stages: Option<CommitStages>,
    /// One appender keeping `append_in_flight` transactions submitted and not yet durable.
    pub append_pipelined_1_per_s: f64,
    pub append_in_flight: usize,
    pub append_batched_4_per_s: f64,
    pub physical_bound_per_s: f64,
    pub physical_fdatasyncs_per_s: f64,
    pub event_bytes: f64,
    /// sled alone with the log's sealed chunks, commits of 1,000 (median of the rounds).
    pub sled_alone_per_s: f64,
    /// A 1,000-event commit's parts measured alone, in the last round.
    pub commit_parts: CommitParts,
    pub http_clients: usize,
    pub http_flat_out: Throughput,
    pub http_half_load: Throughput,
    pub rebuild_events_per_s: f64,
    pub history: Latency,
    pub roster_now: Latency,
    pub roster_year_ago: Latency,
    pub flows_quarter_by_region: Latency,
    pub disk_bytes_per_event: f64,
    pub peak_memory_mib: f64,
    pub postgres: Option<crate::bench_postgres::PostgresReport>,
    /// The timed comparisons round by round; the figures above are their medians (the HTTP
    /// latencies are those of the median round).
    pub rounds: Vec<Round>,
}

/// One round of the timed comparisons: each of flowbook's workloads, and the peer's (when there
/// is one) run right after it, so that a ratio compares two runs minutes apart at most rather than
/// the two ends of the bench — the machine drifts (±30 % here) within minutes.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Round {
    pub append_batched_1_per_s: f64,
    /// Where the waiting appender's commits spent their time.
    pub waiting_commit_stages: Option<CommitStages>,
    pub postgres_batched_1_per_s: Option<f64>,
    pub append_pipelined_1_per_s: f64,
    pub postgres_pipelined_1_per_s: Option<f64>,
    pub append_batched_4_per_s: f64,
    pub postgres_batched_4_per_s: Option<f64>,
    pub physical_bound_per_s: f64,
    pub physical_fdatasyncs_per_s: f64,
    pub sled_alone_per_s: f64,
    pub http_flat_out_per_s: f64,
    pub postgres_single_commits_per_s: Option<f64>,
}

/// The median of some figures (the mean of the middle two for an even count); 0 for none.
pub fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len() % 2 == 1 {
        values[middle]
    } else {
        (values[middle - 1] + values[middle]) / 2.0
    }
}

/// Peak resident memory of this process so far (Linux `VmHWM`), in MiB.
pub fn peak_memory_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|kib| kib.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

fn store_options(cache_bytes: u64) -> StoreOptions {
    StoreOptions { cache_capacity_bytes: cache_bytes, ..StoreOptions::default() }
}

/// Events of the district the append workloads copy: enough for their mix, few enough to hold
/// in memory at any size of district.
pub const APPEND_SET_EVENTS_MAX: usize = 1_000_000;

/// The district's events as the log holds them: all of them, or [`APPEND_SET_EVENTS_MAX`] in
/// pages spread evenly over the log, so that the mix stays the whole story's.
pub fn district_events(store: &Store) -> Result<Vec<Envelope>, String> {
    const PAGE: u64 = 10_000;
    let head = store.head();
    let pages = (APPEND_SET_EVENTS_MAX as u64 / PAGE).max(1);
    let step = if head <= APPEND_SET_EVENTS_MAX as u64 { PAGE } else { head / pages };
    let mut events = Vec::new();
    let mut after = 0;
    while after < head && events.len() < APPEND_SET_EVENTS_MAX {
        events.extend(store.read_log(after, PAGE as usize).map_err(|e| e.to_string())?);
        after += step;
    }
    Ok(events)
}

/// The `round`-th copy of an event: the same type, times and data on a stream of its own, so
/// that every copy appends at the versions the original did.
pub fn copy_of(event: &Envelope, round: u64) -> NewEvent {
    NewEvent {
        event_id: uuid::Uuid::from_u64_pair(round, event.position),
        stream: copy_stream(&event.stream, round),
        event_type: event.event_type.clone(),
        effective_at: event.effective_at,
        actor: event.actor.clone(),
        data: event.data.clone(),
    }
}

/// The name of a stream's `round`-th copy. A `<prefix>/<uuid>` stream — every stream flowbook
/// writes — is copied to another uuid (the original's bits mixed with the round's), so that the
/// copies are named as real streams are and take the log's path for them (stream heads kept
/// packed); a name of any other form gets `~round` appended.
pub fn copy_stream(stream: &str, round: u64) -> String {
    if round == 0 {
        return stream.to_owned();
    }
    let parsed =
        stream.split_once('/').and_then(|(prefix, id)| Some((prefix, uuid::Uuid::try_parse(id).ok()?)));
    match parsed {
        Some((prefix, id)) => {
            // Odd multipliers: distinct rounds give distinct masks, so a stream's copies never meet.
            let mask = u128::from(round).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835);
            // Written into one allocation of the right size: `format!` here was ~4 % of the
            // pipelined append's CPU, on the appending thread (the peer copies the same way).
            let mut buffer = uuid::Uuid::encode_buffer();
            let copied = uuid::Uuid::from_u128(id.as_u128() ^ mask).hyphenated().encode_lower(&mut buffer);
            let mut name = String::with_capacity(prefix.len() + 1 + copied.len());
            name.push_str(prefix);
            name.push('/');
            name.push_str(copied);
            name
        }
        None => format!("{stream}~{round}"),
    }
}

/// Appends copies of `events` in transactions of [`BATCH_EVENTS`] from `appenders` threads for
/// `seconds`, each thread keeping up to `in_flight` of its transactions submitted and not yet
/// answered (1: it waits for each before the next); answers events per second made durable and,
/// for one appender waiting for each, the commits' stages.
fn append_batched(
    dir: &Path,
    events: &Arc<Vec<Envelope>>,
    appenders: usize,
    in_flight: usize,
    seconds: f64,
    cache_bytes: u64,
) -> Result<(f64, Option<CommitStages>), String> {
    let store = Arc::new(Store::open(dir, store_options(cache_bytes)).map_err(|e| e.to_string())?);
    // Stages mean something only with one commit in flight at a time.
    let timed = appenders == 1 && in_flight <= 1;
    if timed {
        store.time_commit_stages();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let appended = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..appenders)
        .map(|worker| {
            let (store, stop, appended, events) =
                (Arc::clone(&store), Arc::clone(&stop), Arc::clone(&appended), Arc::clone(events));
            std::thread::spawn(move || -> Result<(), String> {
                // Answered in the order submitted (the log commits in that order), so the oldest
                // is the one to wait for.
                let mut waiting: VecDeque<Submitted> = VecDeque::with_capacity(in_flight);
                let settle_oldest = |waiting: &mut VecDeque<Submitted>| -> Result<(), String> {
                    let oldest = waiting.pop_front().expect("a transaction in flight");
                    let count = oldest.wait().map_err(|e| e.to_string())?.events().len();
                    appended.fetch_add(count as u64, Ordering::Relaxed);
                    Ok(())
                };
                // Each appender writes its own rounds, so no two touch the same stream.
                let mut round = 1 + worker as u64;
                'run: loop {
                    for batch in events.chunks(BATCH_EVENTS) {
                        if stop.load(Ordering::Relaxed) {
                            break 'run;
                        }
                        let request = AppendRequest {
                            events: batch.iter().map(|event| copy_of(event, round)).collect(),
                            ..Default::default()
                        };
                        waiting.push_back(store.submit(request).map_err(|e| e.to_string())?);
                        if waiting.len() >= in_flight.max(1) {
                            settle_oldest(&mut waiting)?;
                        }
                    }
                    round += appenders as u64;
                }
                // What is still in flight counts once durable, and the time it takes counts too.
                while !waiting.is_empty() {
                    settle_oldest(&mut waiting)?;
                }
                Ok(())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.join().map_err(|_| "an appender panicked".to_owned())??;
    }
    let per_s = appended.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    let stages = timed.then(|| store.timed_commit_stages());
    // Closed (its threads joined) before its files go: each round's stores would add up.
    drop(store);
    std::fs::remove_dir_all(dir).map_err(|e| format!("cannot remove {}: {e}", dir.display()))?;
    Ok((per_s, stages))
}

/// The same events' bytes written sequentially, one `fdatasync` per batch: (events/s, syncs/s,
/// bytes per event).
fn physical_bound(dir: &Path, events: &[Envelope], seconds: f64) -> Result<(f64, f64, f64), String> {
    let batches: Vec<Vec<u8>> = events
        .chunks(BATCH_EVENTS)
        .map(|batch| {
            let mut bytes = Vec::new();
            for event in batch {
                serde_json::to_writer(&mut bytes, event).expect("an envelope serialises");
                bytes.push(b'\n');
            }
            bytes
        })
        .collect();
    let total_bytes: usize = batches.iter().map(Vec::len).sum();
    let path = dir.join("physical-bound.bin");
    let mut file = std::fs::File::create(&path).map_err(|e| e.to_string())?;
    let (mut written, mut syncs) = (0u64, 0u64);
    let started = Instant::now();
    'outer: loop {
        for (batch, bytes) in events.chunks(BATCH_EVENTS).zip(&batches) {
            file.write_all(bytes).map_err(|e| e.to_string())?;
            file.sync_data().map_err(|e| e.to_string())?;
            written += batch.len() as u64;
            syncs += 1;
            if started.elapsed().as_secs_f64() >= seconds {
                break 'outer;
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    drop(file);
    let _ = std::fs::remove_file(&path);
    Ok((written as f64 / elapsed, syncs as f64 / elapsed, total_bytes as f64 / events.len().max(1) as f64))
}

/// A keep-alive HTTP/1.1 client over a plain socket: it costs little next to the server. Its
/// buffers are kept from one request to the next (a fresh string per header line and per request
/// was a tenth of a write's allocations in the bench process).
struct Connection {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    request: Vec<u8>,
    line: String,
    body: Vec<u8>,
}

impl Connection {
    fn open(addr: &str) -> std::io::Result<Connection> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
            request: Vec::new(),
            line: String::new(),
            body: Vec::new(),
        })
    }

    /// Sends one request; answers its status and body (valid until the next call).
    fn call(&mut self, method: &str, path: &str, body: &str) -> std::io::Result<(u16, &str)> {
        self.request.clear();
        write!(
            self.request,
            "{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
        self.writer.write_all(&self.request)?;
        self.line.clear();
        self.reader.read_line(&mut self.line)?;
        let status = self.line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let mut length = 0;
        loop {
            self.line.clear();
            self.reader.read_line(&mut self.line)?;
            if self.line == "\r\n" || self.line.is_empty() {
                break;
            }
            let (name, value) = self.line.split_once(':').unwrap_or((&self.line, ""));
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        self.body.resize(length, 0);
        self.reader.read_exact(&mut self.body)?;
        let body = std::str::from_utf8(&self.body).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "an answer that is not UTF-8")
        })?;
        Ok((status, body))
    }
}

/// Each client owns one member and toggles its contact (lost / restored); `pace` is each
/// client's interval between requests (`None`: flat out).
fn http_clients(
    addr: &str,
    members: &[(String, bool)],
    seconds: f64,
    pace: Option<Duration>,
) -> Result<Throughput, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let workers: Vec<_> = members
        .iter()
        .cloned()
        .map(|(member, contact_lost)| {
            let (addr, stop) = (addr.to_owned(), Arc::clone(&stop));
            std::thread::spawn(move || -> Result<(Vec<f64>, bool), String> {
                let mut connection = Connection::open(&addr).map_err(|e| e.to_string())?;
                let path = format!("/v1/members/{member}/contact");
                let mut latencies = Vec::new();
                let mut lost = contact_lost;
                let mut next = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    if let Some(pace) = pace {
                        let now = Instant::now();
                        if next > now {
                            std::thread::sleep(next - now);
                        }
                        next += pace;
                    }
                    let body = if lost { r#"{"lost":false}"# } else { r#"{"lost":true}"# };
                    let sent = Instant::now();
                    let (status, answer) = connection.call("POST", &path, body).map_err(|e| e.to_string())?;
                    if status != 201 {
                        return Err(format!("a write was refused: {status} {answer}"));
                    }
                    latencies.push(sent.elapsed().as_secs_f64() * 1e3);
                    lost = !lost;
                }
                Ok((latencies, lost))
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for worker in workers {
        let (mine, _) = worker.join().map_err(|_| "a client panicked".to_owned())??;
        latencies.extend(mine);
    }
    let per_s = latencies.len() as f64 / started.elapsed().as_secs_f64();
    Ok(Throughput { per_s, latency: Latency::of(latencies) })
}

/// Times `f` once, in milliseconds.
fn time_ms(f: impl FnOnce()) -> f64 {
    let started = Instant::now();
    f();
    started.elapsed().as_secs_f64() * 1e3
}

/// Runs every workload; `progress` hears each phase's name as it starts.
pub fn run(
    options: &BenchOptions,
    state: &AppState,
    runtime: &tokio::runtime::Runtime,
    mut progress: impl FnMut(&str),
) -> Result<Report, String> {
    let mut report = Report { members: options.members, http_clients: options.clients, ..Report::default() };
    let seconds = options.seconds;

    progress("build: the demo district through the import path");
    let started = Instant::now();
    let demo = runtime.block_on(crate::demo::run(
        state,
        options.seed,
        options.members,
        Utc::now() - TimeDelta::days(1),
    ));
    if let Some((op, code, message)) = demo.refused.first() {
        return Err(format!("the district's story was refused at {op}: {code} ({message})"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let store = Arc::clone(state.live.store());
    report.build_commands_per_s = demo.writes as f64 / elapsed;
    report.build_events_per_s = store.head() as f64 / elapsed;

    let events = Arc::new(district_events(&store)?);
    let parts_events: Vec<NewEvent> = events.iter().take(PARTS_EVENTS_MAX).map(|e| copy_of(e, 0)).collect();
    let mut peer = match &options.postgres {
        Some(url) => Some(crate::bench_postgres::Peer::connect(url)?),
        None => None,
    };
    let members: Vec<String> = {
        let projections = state.live.read();
        let mut candidates: Vec<_> = projections
            .world()
            .members()
            .filter(|m| !m.status.is_final() && m.status != MemberStatus::Suspended)
            .map(|m| m.member_id.to_string())
            .collect();
        candidates.sort();
        candidates.into_iter().take(options.clients).collect()
    };
    // Each client toggles its member's contact; a run may leave it either way, so each run
    // starts from the member as the world has it.
    let with_contact = |members: &[String]| -> Vec<(String, bool)> {
        let projections = state.live.read();
        members
            .iter()
            .map(|id| {
                let lost = id
                    .parse()
                    .ok()
                    .and_then(|id| projections.world().member(id))
                    .is_some_and(|m| m.contact_lost_since.is_some());
                (id.clone(), lost)
            })
            .collect()
    };
    let (addr, stop_server, served) = serve_in_background(state, runtime)?;
    let mut flat_outs = Vec::new();
    let mut peer_single_commits = Vec::new();
    for round in 0..options.rounds.max(1) {
        let tag = if options.rounds > 1 {
            format!(" (round {} of {})", round + 1, options.rounds)
        } else {
            String::new()
        };
        let mut figures = Round::default();
        progress(&format!("append: the same events in transactions of 1,000, 1 appender{tag}"));
        (figures.append_batched_1_per_s, figures.waiting_commit_stages) =
            append_batched(&options.dir.join("append-1"), &events, 1, 1, seconds, options.cache_bytes)?;
        if let Some(peer) = &mut peer {
            progress(&format!("postgres: batched, 1 client{tag}"));
            figures.postgres_batched_1_per_s =
                Some(peer.append_batched(&events, 1, seconds, round as u64)?);
        }
        progress(&format!(
            "append: 1 appender, {} transactions in flight, as an importer keeps them{tag}",
            options.in_flight
        ));
        figures.append_pipelined_1_per_s = append_batched(
            &options.dir.join("append-1-pipelined"),
            &events,
            1,
            options.in_flight,
            seconds,
            options.cache_bytes,
        )?
        .0;
        if let Some(peer) = &mut peer {
            progress(&format!(
                "postgres: batched, 1 client, {} transactions pipelined{tag}",
                options.in_flight
            ));
            figures.postgres_pipelined_1_per_s =
                Some(peer.append_pipelined(&events, options.in_flight, seconds, round as u64)?);
        }
        progress(&format!("append: 4 appenders{tag}"));
        figures.append_batched_4_per_s = append_batched(
            &options.dir.join("append-4"),
            &events,
            BATCH_APPENDERS,
            1,
            seconds,
            options.cache_bytes,
        )?
        .0;
        if let Some(peer) = &mut peer {
            progress(&format!("postgres: batched, 4 clients{tag}"));
            figures.postgres_batched_4_per_s =
                Some(peer.append_batched(&events, BATCH_APPENDERS, seconds, round as u64)?);
        }
        progress(&format!("physical bound: the same bytes, one fdatasync per 1,000 events{tag}"));
        (figures.physical_bound_per_s, figures.physical_fdatasyncs_per_s, report.event_bytes) =
            physical_bound(&options.dir, &events, seconds)?;
        progress(&format!(
            "sled alone: the log's sealed chunks, one flush and fdatasync per 1,000 events{tag}"
        ));
        report.commit_parts = flowbook_store::measure_commit_parts(
            &options.dir.join("sled-alone"),
            &parts_events,
            events.iter().map(|event| event.stream.as_str()),
            BATCH_EVENTS,
            seconds,
            options.cache_bytes,
        )
        .map_err(|e| e.to_string())?;
        figures.sled_alone_per_s = report.commit_parts.sled_events_per_s;
        progress(&format!("http: {} clients, one durable command a request{tag}", options.clients));
        let flat_out = http_clients(&addr, &with_contact(&members), seconds, None)?;
        figures.http_flat_out_per_s = flat_out.per_s;
        flat_outs.push(flat_out);
        if let Some(peer) = &mut peer {
            progress(&format!("postgres: single-event commits, {} clients{tag}", options.clients));
            let single = peer.single_commits(&events, options.clients, seconds, round as u64)?;
            figures.postgres_single_commits_per_s = Some(single.per_s);
            peer_single_commits.push(single);
        }
        report.rounds.push(figures);
    }
    let of_rounds = |figure: fn(&Round) -> f64| median(report.rounds.iter().map(figure).collect());
    report.append_batched_1_per_s = of_rounds(|r| r.append_batched_1_per_s);
    report.waiting_commit_stages =
        median_stages(report.rounds.iter().filter_map(|r| r.waiting_commit_stages.as_ref()));
    report.append_pipelined_1_per_s = of_rounds(|r| r.append_pipelined_1_per_s);
    report.append_in_flight = options.in_flight;
    report.append_batched_4_per_s = of_rounds(|r| r.append_batched_4_per_s);
    report.physical_bound_per_s = of_rounds(|r| r.physical_bound_per_s);
    report.physical_fdatasyncs_per_s = of_rounds(|r| r.physical_fdatasyncs_per_s);
    report.sled_alone_per_s = of_rounds(|r| r.sled_alone_per_s);
    report.http_flat_out = take_median(flat_outs);
    let pace = Duration::from_secs_f64(members.len() as f64 / (report.http_flat_out.per_s / 2.0).max(1.0));
    progress("http: half that load, for latency");
    report.http_half_load = http_clients(&addr, &with_contact(&members), seconds, Some(pace))?;
    let _ = stop_server.send(());
    runtime.block_on(served).map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;

    progress("rebuild: every read model from the log");
    let started = Instant::now();
    let live = Live::open(Arc::clone(&store), flowbook_core::RulesConfig::default(), |_, _| {})
        .map_err(|e| e.to_string())?;
    report.rebuild_events_per_s = store.head() as f64 / started.elapsed().as_secs_f64();
    report.events = store.head();

    progress("queries: history, rosters, flows");
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let (member_ids, biggest) = {
        let projections = live.read();
        let mut ids: Vec<_> = projections.world().members().map(|m| m.member_id).collect();
        ids.sort();
        let biggest = projections.branches().into_iter().max_by_key(|b| b.home_count).map(|b| b.branch_id);
        (ids, biggest.ok_or("the district has no branch")?)
    };
    report.history = Latency::of(
        (0..1_000)
            .filter_map(|_| member_ids.choose(&mut rng).copied())
            .map(|id| time_ms(|| drop(live.member_history(id, None))))
            .collect(),
    );
    let now = Utc::now();
    report.roster_now =
        Latency::of((0..300).map(|_| time_ms(|| drop(live.read().roster(biggest, &At::LATEST)))).collect());
    let year_ago = At::new(Some(now - TimeDelta::days(365)), None);
    report.roster_year_ago =
        Latency::of((0..300).map(|_| time_ms(|| drop(live.read().roster(biggest, &year_ago)))).collect());
    let quarter = now - TimeDelta::days(365);
    report.flows_quarter_by_region = Latency::of(
        (0..100)
            .map(|_| {
                time_ms(|| {
                    drop(live.read().flows(
                        quarter,
                        quarter + TimeDelta::days(91),
                        FlowGrouping::Region,
                        None,
                    ))
                })
            })
            .collect(),
    );
    report.disk_bytes_per_event =
        flowbook_store::disk_bytes(&options.dir.join("district")) as f64 / store.head().max(1) as f64;
    report.peak_memory_mib = peak_memory_mib();
    if let Some(peer) = peer {
        progress("postgres: stream reads and disk");
        let of_rounds =
            |figure: fn(&Round) -> Option<f64>| median(report.rounds.iter().filter_map(figure).collect());
        report.postgres = Some(peer.finish(
            options.seed,
            of_rounds(|r| r.postgres_batched_1_per_s),
            of_rounds(|r| r.postgres_pipelined_1_per_s),
            of_rounds(|r| r.postgres_batched_4_per_s),
            take_median(peer_single_commits),
        )?);
    }
    Ok(report)
}

/// Each stage's median over several timings, and the commits they timed together.
fn median_stages<'a>(timings: impl Iterator<Item = &'a CommitStages>) -> Option<CommitStages> {
    let timings: Vec<&CommitStages> = timings.collect();
    let first = timings.first()?;
    let micros = (0..first.micros.len())
        .map(|stage| median(timings.iter().map(|t| t.micros[stage]).collect()))
        .collect();
    Some(CommitStages { commits: timings.iter().map(|t| t.commits).sum(), micros })
}

/// The run of median throughput among several (its own latencies with it).
fn take_median(mut runs: Vec<Throughput>) -> Throughput {
    runs.sort_by(|a, b| a.per_s.total_cmp(&b.per_s));
    let middle = runs.len().saturating_sub(1) / 2;
    if runs.is_empty() {
        Throughput::default()
    } else {
        runs.swap_remove(middle)
    }
}

type Served = tokio::task::JoinHandle<std::io::Result<()>>;

/// The API on a free loopback port until the sender fires.
fn serve_in_background(
    state: &AppState,
    runtime: &tokio::runtime::Runtime,
) -> Result<(String, tokio::sync::oneshot::Sender<()>, Served), String> {
    let listener =
        runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?.to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let router = crate::app::router(state.clone());
    let served = runtime.spawn(async move {
        axum::serve(crate::app::without_nagle(listener), router)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });
    Ok((addr, stop, served))
}

/// The human table.
pub fn table(report: &Report) -> String {
    let mut out = String::new();
    let mut row = |what: &str, value: String| out.push_str(&format!("| {what} | {value} |\n"));
    row("members / events in the log at the end", format!("{} / {}", report.members, report.events));
    if report.rounds.len() > 1 {
        row("timed workloads", format!("{} rounds; their medians below", report.rounds.len()));
    }
    row(
        "build through the rules (import path)",
        format!("{:.0} commands/s, {:.0} events/s", report.build_commands_per_s, report.build_events_per_s),
    );
    row(
        "batched append, 1 appender, waiting for each transaction",
        format!("{:.0} events/s", report.append_batched_1_per_s),
    );
    if let Some(stages) = &report.waiting_commit_stages {
        let each: Vec<String> = flowbook_store::COMMIT_STAGES
            .iter()
            .zip(&stages.micros)
            .map(|(stage, micros)| format!("{stage} {micros:.0}"))
            .collect();
        row(
            "a waiting commit, stage by stage (µs; medians of the rounds' means)",
            format!("{:.0} µs: {} ({} commits)", stages.total_micros(), each.join(", "), stages.commits),
        );
    }
    row(
        &format!("batched append, 1 appender, {} transactions in flight", report.append_in_flight),
        format!("{:.0} events/s", report.append_pipelined_1_per_s),
    );
    row("batched append, 4 appenders", format!("{:.0} events/s", report.append_batched_4_per_s));
    row(
        "physical bound (same bytes, fdatasync per 1,000)",
        format!(
            "{:.0} events/s ({:.0} fdatasync/s, {:.0} bytes/event)",
            report.physical_bound_per_s, report.physical_fdatasyncs_per_s, report.event_bytes
        ),
    );
    let parts = &report.commit_parts;
    row(
        "sled alone (the log's sealed chunks, 1 thread, flush + fdatasync per 1,000)",
        format!(
            "{:.0} events/s ({:.2} ms a commit: inserts {:.2}, flush {:.2}, fdatasync {:.2}; {:.0} bytes/event sealed of {:.0})",
            report.sled_alone_per_s,
            parts.sled_commit_ms,
            parts.sled_insert_ms,
            parts.sled_flush_ms,
            parts.sled_fdatasync_ms,
            parts.sealed_bytes_per_event,
            parts.raw_bytes_per_event
        ),
    );
    row(
        "the log's CPU for 1,000 events before sled, 1 thread",
        format!(
            "render {:.2} ms, stamp + chain {:.2} ms, stream heads {:.2} ms ({:.2} not prefetched; {} streams), seal {:.2} ms",
            parts.render_ms,
            parts.stamp_ms,
            parts.heads_ms,
            parts.heads_unprefetched_ms,
            parts.streams,
            parts.seal_ms
        ),
    );
    let http = |t: &Throughput| {
        format!("{:.0} commands/s, p50 {:.2} ms, p99 {:.2} ms", t.per_s, t.latency.p50_ms, t.latency.p99_ms)
    };
    row(&format!("HTTP, {} clients, flat out", report.http_clients), http(&report.http_flat_out));
    row(&format!("HTTP, {} clients, half load", report.http_clients), http(&report.http_half_load));
    row("rebuild", format!("{:.0} events/s", report.rebuild_events_per_s));
    let latency = |l: &Latency| format!("p50 {:.3} ms, p99 {:.3} ms", l.p50_ms, l.p99_ms);
    row("member history", latency(&report.history));
    row("roster now (largest branch)", latency(&report.roster_now));
    row("roster a year ago", latency(&report.roster_year_ago));
    row("flows for a quarter by region", latency(&report.flows_quarter_by_region));
    row("disk", format!("{:.0} bytes/event", report.disk_bytes_per_event));
    row("peak memory (VmHWM)", format!("{:.0} MiB", report.peak_memory_mib));
    let mut text = format!("| measure | flowbook |\n|---|---|\n{out}");
    if let Some(pg) = &report.postgres {
        text.push_str(&crate::bench_postgres::table(report, pg));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_are_named_as_streams_are_and_never_meet() {
        let original = "member/0191e6a4-1c2b-7d3e-8f40-123456789abc";
        assert_eq!(copy_stream(original, 0), original);
        let copies: std::collections::HashSet<String> =
            (1..2_000).map(|round| copy_stream(original, round)).collect();
        assert_eq!(copies.len(), 1_999, "every round its own stream");
        for copy in &copies {
            let id = copy.strip_prefix("member/").expect("the prefix kept");
            assert_eq!(
                uuid::Uuid::try_parse(id).unwrap().hyphenated().to_string(),
                id,
                "a uuid as flowbook writes it"
            );
            assert_ne!(copy, original);
        }
        assert_eq!(copy_stream("imported-ledger", 3), "imported-ledger~3");
    }

    #[test]
    fn medians_take_the_middle_or_the_mean_of_the_middle_two() {
        assert_eq!(median(vec![]), 0.0);
        assert_eq!(median(vec![3.0]), 3.0);
        assert_eq!(median(vec![9.0, 1.0, 5.0]), 5.0);
        assert_eq!(median(vec![4.0, 1.0, 9.0, 2.0]), 3.0);
        let run = |per_s: f64| Throughput {
            per_s,
            latency: Latency { p99_ms: per_s / 10.0, ..Latency::default() },
        };
        let middle = take_median(vec![run(30.0), run(10.0), run(20.0)]);
        assert_eq!(
            (middle.per_s, middle.latency.p99_ms),
            (20.0, 2.0),
            "the median run, with its own latencies"
        );
        assert_eq!(take_median(Vec::new()).per_s, 0.0);
    }
}
