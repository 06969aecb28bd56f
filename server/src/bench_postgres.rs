//! The peer of `flowbook bench`: the same events in PostgreSQL, in the layout a typical
//! PostgreSQL event store uses (Marten, postgres-es and most in-house stores) — one `events`
//! table, `unique (stream, version)`, JSONB data, `synchronous_commit = on` — appended in
//! transactions of 1,000 by 1 and 4 clients (and by 1 connection with transactions pipelined) and
//! one event per commit by 64 clients, and the comparable read: one stream's events in order.
//!
//! The bench connects to a server it is given (`--postgres "host=127.0.0.1 port=… user=…"`);
//! `scripts/bench-vs-postgres.sh` makes a throwaway one.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::future::try_join3;
use futures_util::stream::{FuturesOrdered, StreamExt};
use postgres::{Client, NoTls};
use rand::seq::IndexedRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::bench::{median, Latency, Report, Round, Throughput, BATCH_EVENTS};
use flowbook_store::Envelope;

#[derive(Debug, Default, Serialize)]
pub struct PostgresReport {
    pub version: String,
    pub synchronous_commit: String,
    pub append_batched_1_per_s: f64,
    /// One connection with the bench's `--in-flight` transactions pipelined.
    pub append_pipelined_1_per_s: f64,
    pub append_batched_4_per_s: f64,
    pub single_commits: Throughput,
    pub history: Latency,
    pub disk_bytes_per_event: f64,
}

/// One event as a row: what every client sends.
#[derive(Clone)]
struct Row {
    event_id: uuid::Uuid,
    stream: String,
    version: i64,
    event_type: String,
    effective_at: DateTime<Utc>,
    actor: String,
    data: serde_json::Value,
}

type Param<'a> = &'a (dyn postgres::types::ToSql + Sync);

impl Row {
    /// The row's values, in the order of [`insert_statement`]'s columns.
    fn params(&self) -> [Param<'_>; 7] {
        [
            &self.event_id,
            &self.stream,
            &self.version,
            &self.event_type,
            &self.effective_at,
            &self.actor,
            &self.data,
        ]
    }

    fn copy_of(event: &Envelope, round: u64) -> Row {
        let copy = crate::bench::copy_of(event, round);
        Row {
            event_id: copy.event_id,
            stream: copy.stream,
            version: event.version as i64,
            event_type: copy.event_type,
            effective_at: copy.effective_at,
            actor: copy.actor,
            data: serde_json::from_str(copy.data.get()).unwrap_or(serde_json::Value::Null),
        }
    }
}

/// How long [`Peer::settle`] waits for autovacuum before checkpointing anyway.
const SETTLE_WAIT_MAX: Duration = Duration::from_secs(60);

const SCHEMA: &str = "
    DROP TABLE IF EXISTS events;
    CREATE TABLE events (
        position     bigserial PRIMARY KEY,
        event_id     uuid NOT NULL,
        stream       text NOT NULL,
        version      bigint NOT NULL,
        type         text NOT NULL,
        effective_at timestamptz NOT NULL,
        recorded_at  timestamptz NOT NULL DEFAULT now(),
        actor        text NOT NULL,
        data         jsonb NOT NULL,
        UNIQUE (stream, version)
    );";

/// `INSERT … VALUES (…), (…), …` for `rows` rows of 7 parameters.
fn insert_statement(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO events (event_id, stream, version, type, effective_at, actor, data) VALUES ",
    );
    for row in 0..rows {
        let base = row * 7;
        if row > 0 {
            sql.push(',');
        }
        sql.push_str(&format!(
            "(${},${},${},${},${},${},${})",
            base + 1,
            base + 2,
            base + 3,
            base + 4,
            base + 5,
            base + 6,
            base + 7
        ));
    }
    sql
}

fn connect(url: &str) -> Result<Client, String> {
    Client::connect(url, NoTls).map_err(|e| format!("cannot connect to PostgreSQL ({url}): {e}"))
}

/// Inserts `rows` in one transaction.
fn insert(client: &mut Client, statement: &postgres::Statement, rows: &[Row]) -> Result<(), String> {
    let params: Vec<Param<'_>> = rows.iter().flat_map(Row::params).collect();
    let mut transaction = client.transaction().map_err(|e| e.to_string())?;
    transaction.execute(statement, &params).map_err(|e| e.to_string())?;
    transaction.commit().map_err(|e| e.to_string())
}

/// `rows` in one transaction whose three statements go out at once, without waiting for each
/// other's answers; the number of rows once committed.
async fn pipelined_transaction(
    client: &tokio_postgres::Client,
    statement: &tokio_postgres::Statement,
    rows: Vec<Row>,
) -> Result<usize, String> {
    let params: Vec<Param<'_>> = rows.iter().flat_map(Row::params).collect();
    try_join3(
        client.batch_execute("BEGIN"),
        client.execute(statement, &params),
        client.batch_execute("COMMIT"),
    )
    .await
    .map_err(|e| e.to_string())?;
    Ok(rows.len())
}

/// A PostgreSQL server ready for the peer's workloads: its `events` table made afresh, and checked
/// to commit durably. The bench runs each workload right after flowbook's own (see `bench.rs`),
/// then [`Peer::finish`] measures the reads and the disk.
pub struct Peer {
    url: String,
    client: Client,
    version: String,
    synchronous_commit: String,
}

impl Peer {
    pub fn connect(url: &str) -> Result<Peer, String> {
        let mut client = connect(url)?;
        client.batch_execute(SCHEMA).map_err(|e| e.to_string())?;
        let mut one = |sql: &str| -> Result<String, String> {
            let row = client.query_one(sql, &[]).map_err(|e| e.to_string())?;
            Ok(row.get::<_, String>(0))
        };
        let (version, synchronous_commit) = (one("SHOW server_version")?, one("SHOW synchronous_commit")?);
        if synchronous_commit != "on" {
            return Err(format!(
                "synchronous_commit is {synchronous_commit}, not on: commits would not be durable"
            ));
        }
        Ok(Peer { url: url.to_owned(), client, version, synchronous_commit })
    }

    /// Leaves the peer idle after each of its timed runs, for the next — flowbook's or its own
    /// (untimed; flowbook's runs leave the peer nothing to do): waits for autovacuum
    /// workers to finish (bounded by [`SETTLE_WAIT_MAX`]), vacuums and analyses the table itself
    /// (so that autovacuum, which looks once a minute, finds nothing due during the next run),
    /// then checkpoints. Without it, the checkpoint and vacuum that the peer's previous run left
    /// due write its gigabyte of dirty buffers during the next run, whosever it is; in one run on
    /// this machine the disk's bound measured right after the peer's batched appends fell to
    /// 596,000 events/s from 1,100,000 measured alone.
    fn settle(&mut self) -> Result<(), String> {
        let started = Instant::now();
        loop {
            let row = self
                .client
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'",
                    &[],
                )
                .map_err(|e| e.to_string())?;
            if row.get::<_, i64>(0) == 0 || started.elapsed() > SETTLE_WAIT_MAX {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // Two queries: one with both would run them in one implicit transaction, where VACUUM
        // is refused.
        self.client.batch_execute("VACUUM (ANALYZE) events").map_err(|e| e.to_string())?;
        self.client.batch_execute("CHECKPOINT").map_err(|e| e.to_string())
    }

    /// The events in transactions of [`BATCH_EVENTS`] from `clients` connections, into an empty
    /// table — as flowbook's batched runs each start a fresh log — so that later rounds do not
    /// insert into a larger index than the first; events/s.
    pub fn append_batched(
        &mut self,
        events: &Arc<Vec<Envelope>>,
        clients: usize,
        seconds: f64,
        bench_round: u64,
    ) -> Result<f64, String> {
        self.client.batch_execute("TRUNCATE events").map_err(|e| e.to_string())?;
        let url = &self.url;
        let stop = Arc::new(AtomicBool::new(false));
        let appended = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let workers: Vec<_> = (0..clients)
            .map(|worker| {
                let (url, stop, appended, events) =
                    (url.to_owned(), Arc::clone(&stop), Arc::clone(&appended), Arc::clone(events));
                std::thread::spawn(move || -> Result<(), String> {
                    let mut client = connect(&url)?;
                    let full = client.prepare(&insert_statement(BATCH_EVENTS)).map_err(|e| e.to_string())?;
                    // Copies far from flowbook's, so that no two runs (1 or 4 clients, any round of
                    // the bench) write the same stream.
                    let mut round =
                        1_000_000_000 * (bench_round + 1) + 1_000_000 * (clients as u64) + 1 + worker as u64;
                    while !stop.load(Ordering::Relaxed) {
                        for batch in events.chunks(BATCH_EVENTS) {
                            if stop.load(Ordering::Relaxed) {
                                break;
                            }
                            let rows: Vec<Row> =
                                batch.iter().map(|event| Row::copy_of(event, round)).collect();
                            if rows.len() == BATCH_EVENTS {
                                insert(&mut client, &full, &rows)?;
                            } else {
                                let tail = client
                                    .prepare(&insert_statement(rows.len()))
                                    .map_err(|e| e.to_string())?;
                                insert(&mut client, &tail, &rows)?;
                            }
                            appended.fetch_add(rows.len() as u64, Ordering::Relaxed);
                        }
                        round += clients as u64;
                    }
                    Ok(())
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs_f64(seconds));
        stop.store(true, Ordering::Relaxed);
        for worker in workers {
            worker.join().map_err(|_| "a PostgreSQL client panicked".to_owned())??;
        }
        let per_s = appended.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
        self.settle()?;
        Ok(per_s)
    }

    /// One connection keeping `in_flight` transactions sent and not yet answered: the client
    /// sends the next transaction's `BEGIN`, `INSERT` and `COMMIT` while the server commits the
    /// last (tokio-postgres sends a request when its future is first polled, and the answers come
    /// in order) — the most one connection can do, and what flowbook's pipelined appender is
    /// compared with. It gains the round trips and the client's own work on the next
    /// transaction (its rows encoded while the server works); the server still runs a
    /// connection's statements one after the other, answering `COMMIT` once the WAL is flushed.
    pub fn append_pipelined(
        &mut self,
        events: &Arc<Vec<Envelope>>,
        in_flight: usize,
        seconds: f64,
        bench_round: u64,
    ) -> Result<f64, String> {
        self.client.batch_execute("TRUNCATE events").map_err(|e| e.to_string())?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the pipelined client's runtime: {e}"))?;
        let per_s = runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
                .await
                .map_err(|e| format!("cannot connect to PostgreSQL ({}): {e}", self.url))?;
            let connection = tokio::spawn(connection);
            let full = client.prepare(&insert_statement(BATCH_EVENTS)).await.map_err(|e| e.to_string())?;
            let tail_rows = events.len() % BATCH_EVENTS;
            let tail = match tail_rows {
                0 => None,
                rows => Some(client.prepare(&insert_statement(rows)).await.map_err(|e| e.to_string())?),
            };
            // Copies far from every other run's (see `append_batched`).
            let mut round = 1_000_000_000 * (bench_round + 1) + 900_000_000;
            let mut waiting = FuturesOrdered::new();
            let mut appended = 0usize;
            let started = Instant::now();
            let deadline = started + Duration::from_secs_f64(seconds);
            'run: loop {
                for batch in events.chunks(BATCH_EVENTS) {
                    if Instant::now() >= deadline {
                        break 'run;
                    }
                    let rows: Vec<Row> = batch.iter().map(|event| Row::copy_of(event, round)).collect();
                    let statement =
                        if rows.len() == BATCH_EVENTS { &full } else { tail.as_ref().expect("prepared") };
                    waiting.push_back(pipelined_transaction(&client, statement, rows));
                    if waiting.len() >= in_flight.max(1) {
                        appended += waiting.next().await.expect("a transaction in flight")?;
                    }
                }
                round += 1;
            }
            while let Some(answered) = waiting.next().await {
                appended += answered?;
            }
            let per_s = appended as f64 / started.elapsed().as_secs_f64();
            // The connection's task ends once its client is gone.
            drop(waiting);
            drop(client);
            let _ = connection.await;
            Ok::<f64, String>(per_s)
        })?;
        self.settle()?;
        Ok(per_s)
    }

    /// Each of `clients` connections commits one event at a time (autocommitted `INSERT`s) on a
    /// stream of its own.
    pub fn single_commits(
        &mut self,
        events: &Arc<Vec<Envelope>>,
        clients: usize,
        seconds: f64,
        bench_round: u64,
    ) -> Result<Throughput, String> {
        let url = &self.url;
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let workers: Vec<_> = (0..clients)
            .map(|worker| {
                let (url, stop, events) = (url.to_owned(), Arc::clone(&stop), Arc::clone(events));
                std::thread::spawn(move || -> Result<Vec<f64>, String> {
                    let mut client = connect(&url)?;
                    let statement = client.prepare(&insert_statement(1)).map_err(|e| e.to_string())?;
                    let mut latencies = Vec::new();
                    let mut version = 0i64;
                    for event in events.iter().cycle() {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        version += 1;
                        let mut row = Row::copy_of(event, 0);
                        row.stream = format!("single/{bench_round}/{worker}");
                        row.version = version;
                        let sent = Instant::now();
                        // Autocommit: one durable commit per event.
                        client.execute(&statement, &row.params()).map_err(|e| e.to_string())?;
                        latencies.push(sent.elapsed().as_secs_f64() * 1e3);
                    }
                    Ok(latencies)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs_f64(seconds));
        stop.store(true, Ordering::Relaxed);
        let mut latencies = Vec::new();
        for worker in workers {
            latencies.extend(worker.join().map_err(|_| "a PostgreSQL client panicked".to_owned())??);
        }
        let per_s = latencies.len() as f64 / started.elapsed().as_secs_f64();
        self.settle()?;
        Ok(Throughput { per_s, latency: Latency::of(latencies) })
    }

    /// The comparable read (one member's stream, in order) and the table's bytes per event; the
    /// rounds' figures are the bench's (medians) and go into the report as they are.
    pub fn finish(
        mut self,
        seed: u64,
        append_batched_1_per_s: f64,
        append_pipelined_1_per_s: f64,
        append_batched_4_per_s: f64,
        single_commits: Throughput,
    ) -> Result<PostgresReport, String> {
        let client = &mut self.client;
        let streams: Vec<String> = client
            .query("SELECT DISTINCT stream FROM events WHERE stream LIKE 'member/%' LIMIT 10000", &[])
            .map_err(|e| e.to_string())?
            .iter()
            .map(|row| row.get::<_, String>(0))
            .collect();
        let read = client
            .prepare("SELECT position, event_id, stream, version, type, effective_at, recorded_at, actor, data FROM events WHERE stream = $1 ORDER BY version")
            .map_err(|e| e.to_string())?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut latencies = Vec::new();
        for _ in 0..1_000 {
            let Some(stream) = streams.choose(&mut rng) else { break };
            let started = Instant::now();
            client.query(&read, &[stream]).map_err(|e| e.to_string())?;
            latencies.push(started.elapsed().as_secs_f64() * 1e3);
        }
        client.batch_execute("VACUUM ANALYZE events").map_err(|e| e.to_string())?;
        let sizes = client
            .query_one("SELECT pg_total_relation_size('events')::float8, count(*)::float8 FROM events", &[])
            .map_err(|e| e.to_string())?;
        Ok(PostgresReport {
            version: self.version,
            synchronous_commit: self.synchronous_commit,
            append_batched_1_per_s,
            append_pipelined_1_per_s,
            append_batched_4_per_s,
            single_commits,
            history: Latency::of(latencies),
            disk_bytes_per_event: sizes.get::<_, f64>(0) / sizes.get::<_, f64>(1).max(1.0),
        })
    }
}

/// The side-by-side rows, with the ratios the issue sets targets on. A timed ratio is the median
/// of the rounds' own ratios (each round's two runs back to back), listed when there are several.
pub fn table(flowbook: &Report, pg: &PostgresReport) -> String {
    let ratio = |ours: f64, theirs: f64| if theirs > 0.0 { ours / theirs } else { f64::NAN };
    // `unit` turns a ratio into its printed form: "2.41×", or "73 %".
    let per_round = |ours: fn(&Round) -> f64, theirs: fn(&Round) -> Option<f64>, unit: fn(f64) -> String| {
        let ratios: Vec<f64> =
            flowbook.rounds.iter().filter_map(|r| theirs(r).map(|theirs| ratio(ours(r), theirs))).collect();
        let listed = if ratios.len() > 1 {
            let each: Vec<String> = ratios.iter().map(|r| unit(*r)).collect();
            format!(" (rounds: {})", each.join(", "))
        } else {
            String::new()
        };
        format!("{}{listed}", unit(median(ratios)))
    };
    let times = |r: f64| format!("{r:.2}×");
    let mut out = String::new();
    out.push_str(&format!(
        "\n| PostgreSQL {} (synchronous_commit = {}) | PostgreSQL | flowbook | ratio |\n|---|---|---|---|\n",
        pg.version, pg.synchronous_commit
    ));
    let mut row = |what: &str, theirs: String, ours: String, ratio: String| {
        out.push_str(&format!("| {what} | {theirs} | {ours} | {ratio} |\n"));
    };
    row(
        "batched append, 1 client waiting for each transaction (events/s)",
        format!("{:.0}", pg.append_batched_1_per_s),
        format!("{:.0}", flowbook.append_batched_1_per_s),
        per_round(|r| r.append_batched_1_per_s, |r| r.postgres_batched_1_per_s, times),
    );
    // Both sides pipelined on one connection: PostgreSQL's client encodes the next transaction
    // while the server commits the last, flowbook's log stamps and seals the next while sled
    // makes the last durable.
    row(
        &format!("batched append, 1 client, {} transactions in flight (events/s)", flowbook.append_in_flight),
        format!("{:.0}", pg.append_pipelined_1_per_s),
        format!("{:.0}", flowbook.append_pipelined_1_per_s),
        per_round(|r| r.append_pipelined_1_per_s, |r| r.postgres_pipelined_1_per_s, times),
    );
    row(
        "batched append, 4 clients (events/s)",
        format!("{:.0}", pg.append_batched_4_per_s),
        format!("{:.0}", flowbook.append_batched_4_per_s),
        per_round(|r| r.append_batched_4_per_s, |r| r.postgres_batched_4_per_s, times),
    );
    row(
        &format!("single-event commits vs HTTP commands, {} clients (/s)", flowbook.http_clients),
        format!("{:.0} (p99 {:.1} ms)", pg.single_commits.per_s, pg.single_commits.latency.p99_ms),
        format!("{:.0} (p99 {:.1} ms)", flowbook.http_flat_out.per_s, flowbook.http_flat_out.latency.p99_ms),
        per_round(|r| r.http_flat_out_per_s, |r| r.postgres_single_commits_per_s, times),
    );
    row(
        "one stream's events, p99 (ms)",
        format!("{:.3}", pg.history.p99_ms),
        format!("{:.3}", flowbook.history.p99_ms),
        times(ratio(pg.history.p99_ms, flowbook.history.p99_ms)),
    );
    row(
        "disk bytes per event (lower is better; ratio = theirs / ours)",
        format!("{:.0}", pg.disk_bytes_per_event),
        format!("{:.0}", flowbook.disk_bytes_per_event),
        times(ratio(pg.disk_bytes_per_event, flowbook.disk_bytes_per_event)),
    );
    let best =
        |r: &Round| r.append_batched_4_per_s.max(r.append_batched_1_per_s).max(r.append_pipelined_1_per_s);
    let share = per_round(best, |r| Some(r.physical_bound_per_s), |r| format!("{:.0} %", 100.0 * r));
    out.push_str(&format!(
        "| flowbook batched append (the best of its three runs) against the physical bound | | {:.0} of {:.0} | {share} |\n",
        flowbook
            .append_batched_4_per_s
            .max(flowbook.append_batched_1_per_s)
            .max(flowbook.append_pipelined_1_per_s),
        flowbook.physical_bound_per_s,
    ));
    let of_sled = per_round(
        |r| r.append_batched_1_per_s,
        |r| Some(r.sled_alone_per_s),
        |r| format!("{:.0} %", 100.0 * r),
    );
    out.push_str(&format!(
        "| flowbook batched append, 1 appender, against sled alone (5× PostgreSQL's would be {:.0} %) | | {:.0} of {:.0} | {of_sled} |\n",
        100.0 * 5.0 * pg.append_batched_1_per_s / flowbook.sled_alone_per_s,
        flowbook.append_batched_1_per_s,
        flowbook.sled_alone_per_s,
    ));
    out
}
