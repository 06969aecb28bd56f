//! The `flowbook` command line. Every command turns its errors into one line on standard error
//! and an exit code; nothing here panics on user input.
//!
//! So far: `serve` (local mode), `verify` and `rebuild`. Tokens, import, export and demo come
//! with the rest of the server issue.

mod access;
mod app;
mod bench;
mod bench_postgres;
mod demo;
mod error;
mod export;
mod guard;
mod metrics;
mod openapi;
mod processor;
mod progress;
mod reads;
mod time;
mod writes;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use std::sync::Arc;
use std::time::Instant;

use clap::{Parser, Subcommand};
use flowbook_core::RulesConfig;
use flowbook_store::{Store, StoreOptions, DEFAULT_CACHE_BYTES};

/// See the workspace's Cargo.toml for why not glibc's malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// sled's page cache by default, in MiB (the store's default).
const DEFAULT_CACHE_MIB: u64 = DEFAULT_CACHE_BYTES >> 20;

#[derive(Parser)]
#[command(
    name = "flowbook",
    version,
    about = "An event-sourced tracker of where an organisation's members are"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server. Without an auth file it runs in local mode: loopback only, and every
    /// request acts as `local` with the admin role.
    Serve {
        /// The data directory (created if missing).
        #[arg(long, default_value = "./flowbook-data")]
        data: PathBuf,
        /// Where to listen.
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: std::net::SocketAddr,
        /// Minutes between expiry sweeps (0: only on demand).
        #[arg(long, default_value_t = 60)]
        sweep_every: u64,
        /// The auth file (see `token add`). Without one: local mode.
        #[arg(long)]
        auth: Option<PathBuf>,
        /// Requests handled at once; more are answered 503 `unavailable` at once.
        #[arg(long, default_value_t = guard::REQUESTS_IN_FLIGHT_MAX, value_parser = clap::value_parser!(u32).range(1..=65_536))]
        max_requests: u32,
        /// Event streams (`/v1/events/stream`) open at once.
        #[arg(long, default_value_t = guard::STREAMS_OPEN_MAX, value_parser = clap::value_parser!(u32).range(1..=65_536))]
        max_streams: u32,
        /// Seconds an event stream's client may stop reading before the stream is cut off.
        #[arg(long, default_value_t = guard::STREAM_STALL_SECONDS, value_parser = clap::value_parser!(u64).range(1..=86_400))]
        stream_stall_seconds: u64,
        /// sled's page cache, in MiB. A log that fits in it reads member histories from memory;
        /// on a log of millions of events 64 MiB reads as fast and saves memory.
        #[arg(long, default_value_t = DEFAULT_CACHE_MIB, value_parser = clap::value_parser!(u64).range(1..=65_536))]
        cache_mib: u64,
    },
    /// Manage access tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Check every record's checksum and the hash chain. Exit 0: sound; 1: damaged (the first
    /// bad position is named); 2: could not check (no store, or it is in use).
    Verify {
        /// The data directory.
        #[arg(long, default_value = "./flowbook-data")]
        data: PathBuf,
    },
    /// Import an NDJSON file of writes (`{"op": "<path after /v1/>", "body": {…}}` a line) as
    /// `local`, each line on its own; reports accepted and rejected lines.
    Import {
        file: PathBuf,
        /// The data directory (created if missing).
        #[arg(long, default_value = "./flowbook-data")]
        data: PathBuf,
    },
    /// Export the log as NDJSON, or a report as CSV (UTF-8 with BOM, for spreadsheets).
    Export {
        /// The data directory.
        #[arg(long, default_value = "./flowbook-data")]
        data: PathBuf,
        /// ndjson (every event) or csv (a report).
        #[arg(long, default_value = "ndjson")]
        format: String,
        /// With csv: roster, flows or ledger (the mobile members now).
        #[arg(long)]
        report: Option<String>,
        /// The branch of a roster.
        #[arg(long)]
        branch: Option<flowbook_core::BranchId>,
        /// A roster as of this date or time.
        #[arg(long)]
        as_of: Option<String>,
        /// A roster as known at this time.
        #[arg(long)]
        known_at: Option<String>,
        /// The period of a flows report: [from, to).
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        to: Option<String>,
        /// Flows by branch or region.
        #[arg(long, default_value = "branch")]
        by: String,
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Fill an empty data directory with a realistic district: ~200 branches, members with
    /// Chinese names and two years of history, generated from the seed through the rules.
    Demo {
        /// The data directory (created if missing; must hold no events).
        #[arg(long, default_value = "./flowbook-data")]
        data: PathBuf,
        /// The same seed (and end date) gives the same district.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Members to register.
        #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=demo::MEMBERS_MAX as i64))]
        members: u32,
        /// The last day of the history (a date, not in the future; default: today).
        #[arg(long)]
        end: Option<String>,
    },
    /// Measure the workloads users care about on this machine, in one run: building a district
    /// through the rules, batched appends, the disk's bound, HTTP writes from many clients,
    /// rebuild and queries — optionally side by side with a PostgreSQL event store.
    Bench {
        /// A scratch directory (created; must be empty; removed afterwards).
        #[arg(long, default_value = "./flowbook-bench")]
        dir: PathBuf,
        /// Members of the generated district (~2.7 events each).
        #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(64..=demo::MEMBERS_MAX as i64))]
        members: u32,
        /// Concurrent HTTP clients (and PostgreSQL single-commit clients).
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1024))]
        clients: u32,
        /// Seconds each timed workload runs.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Also write the report as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Run the same workloads against PostgreSQL at this connection string
        /// (e.g. "host=127.0.0.1 port=55432 user=postgres").
        #[arg(long)]
        postgres: Option<String>,
        /// sled's page cache of every store the bench opens, in MiB.
        #[arg(long, default_value_t = DEFAULT_CACHE_MIB, value_parser = clap::value_parser!(u64).range(1..=65_536))]
        cache_mib: u64,
        /// Rounds of the timed comparisons (batched appends, the disk's bound, HTTP writes and,
        /// with --postgres, the peer's right after each); the report gives each and the medians.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=20))]
        rounds: u32,
        /// Transactions the pipelined appender keeps submitted and not yet durable, as an
        /// importer does (the other appenders wait for each).
        #[arg(long, default_value_t = bench::PIPELINE_IN_FLIGHT as u32, value_parser = clap::value_parser!(u32).range(2..=bench::PIPELINE_IN_FLIGHT_MAX as i64))]
        in_flight: u32,
    },
    /// Rebuild every projection from the log, with progress, and report how long it took.
    Rebuild {
        /// The data directory.
        #[arg(long, default_value = "./flowbook-data")]
        data: PathBuf,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token; the file is created if needed. The token is printed once, alone on the
    /// last line; only its SHA-256 is stored.
    Add {
        #[arg(long)]
        auth: PathBuf,
        #[arg(long)]
        name: String,
        /// admin, registrar or auditor.
        #[arg(long)]
        role: String,
        /// A branch in a registrar's scope (repeat for several).
        #[arg(long = "branch")]
        branches: Vec<flowbook_core::BranchId>,
    },
}

/// Exit codes of `flowbook verify` (API.md).
const EXIT_DAMAGED: u8 = 1;
const EXIT_COULD_NOT_CHECK: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            data,
            addr,
            sweep_every,
            auth,
            max_requests,
            max_streams,
            stream_stall_seconds,
            cache_mib,
        } => {
            let limits = guard::Limits::new(
                max_requests as usize,
                max_streams as usize,
                std::time::Duration::from_secs(stream_stall_seconds),
            );
            let store = StoreOptions { cache_capacity_bytes: cache_mib << 20, ..StoreOptions::default() };
            serve(&data, addr, sweep_every, auth.as_deref(), limits, store)
        }
        Command::Token { command: TokenCommand::Add { auth, name, role, branches } } => {
            token_add(&auth, &name, &role, branches)
        }
        Command::Verify { data } => verify(&data),
        Command::Rebuild { data } => rebuild(&data),
        Command::Bench {
            dir,
            members,
            clients,
            seconds,
            seed,
            json,
            postgres,
            cache_mib,
            rounds,
            in_flight,
        } => bench_command(
            bench::BenchOptions {
                dir,
                members: members as usize,
                clients: clients as usize,
                seconds,
                seed,
                postgres,
                cache_bytes: cache_mib << 20,
                rounds: rounds as usize,
                in_flight: in_flight as usize,
            },
            json.as_deref(),
        ),
        Command::Demo { data, seed, members, end } => {
            demo_command(&data, seed, members as usize, end.as_deref())
        }
        Command::Import { file, data } => import(&file, &data),
        Command::Export { data, format, report, branch, as_of, known_at, from, to, by, out } => {
            export_command(
                &data,
                &format,
                report.as_deref(),
                branch,
                [as_of, known_at, from, to],
                &by,
                out.as_deref(),
            )
        }
    }
}

fn token_add(auth: &Path, name: &str, role: &str, branches: Vec<flowbook_core::BranchId>) -> ExitCode {
    let role = match role {
        "admin" => access::Role::Admin,
        "registrar" => access::Role::Registrar,
        "auditor" => access::Role::Auditor,
        other => {
            eprintln!("flowbook: --role must be admin, registrar or auditor, not {other:?}");
            return ExitCode::from(EXIT_COULD_NOT_CHECK);
        }
    };
    let name = name.trim();
    if name.is_empty()
        || name.chars().count() > 200
        || name == flowbook_core::SYSTEM_ACTOR
        || name == flowbook_core::LOCAL_ACTOR
    {
        eprintln!("flowbook: --name must be 1 to 200 characters and not `system` or `local`");
        return ExitCode::from(EXIT_COULD_NOT_CHECK);
    }
    let mut file = if auth.exists() {
        match access::AuthFile::load(auth) {
            Ok(file) => file,
            Err(error) => {
                eprintln!("flowbook: {error}");
                return ExitCode::from(EXIT_COULD_NOT_CHECK);
            }
        }
    } else {
        access::AuthFile::default()
    };
    if file.tokens.iter().any(|entry| entry.name == name) {
        eprintln!("flowbook: a token named {name:?} already exists");
        return ExitCode::from(EXIT_COULD_NOT_CHECK);
    }
    let token = access::new_token();
    file.tokens.push(access::TokenEntry {
        name: name.to_owned(),
        role,
        branches,
        sha256: access::hash_token(&token),
    });
    if let Err(error) = file.save(auth) {
        eprintln!("flowbook: {error}");
        return ExitCode::FAILURE;
    }
    println!("token for {name} ({role:?}) added to {}; it is shown only now:", auth.display());
    println!("{token}");
    ExitCode::SUCCESS
}

fn serve(
    data: &Path,
    addr: std::net::SocketAddr,
    sweep_every: u64,
    auth: Option<&Path>,
    limits: guard::Limits,
    store_options: StoreOptions,
) -> ExitCode {
    let tokens = match auth {
        Some(path) => match access::AuthFile::load(path) {
            Ok(file) => Some(Arc::new(access::Tokens::from_file(&file))),
            Err(error) => {
                eprintln!("flowbook: {error}");
                return ExitCode::from(EXIT_COULD_NOT_CHECK);
            }
        },
        None => None,
    };
    if tokens.is_none() && !addr.ip().is_loopback() {
        eprintln!("flowbook: local mode (no --auth file) listens on loopback only, not {addr}");
        return ExitCode::from(EXIT_COULD_NOT_CHECK);
    }
    let mode = if tokens.is_some() { "tokens" } else { "local mode" };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "flowbook=info,warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let store = match Store::open(data, store_options) {
        Ok(store) => Arc::new(store),
        Err(error) => {
            eprintln!("flowbook: cannot open the store at {}: {error}", data.display());
            return ExitCode::from(EXIT_COULD_NOT_CHECK);
        }
    };
    let started = Instant::now();
    let live = match flowbook_projections::Live::open(store, RulesConfig::default(), |_, _| {}) {
        Ok(live) => Arc::new(live),
        Err(error) => {
            eprintln!("flowbook: cannot build the read models: {error}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        events = live.read().position(),
        seconds = started.elapsed().as_secs_f64(),
        "read models built"
    );
    let processor = match processor::Processor::start(Arc::clone(&live), RulesConfig::default()) {
        Ok(processor) => processor,
        Err(error) => {
            eprintln!("flowbook: {}", error.message);
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("flowbook: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let state = app::AppState::new(app::Shared {
        live,
        processor: processor.clone(),
        tokens,
        metrics: Default::default(),
        limits: Arc::new(limits),
    });
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => listener,
            Err(error) => {
                eprintln!("flowbook: cannot listen on {addr}: {error}");
                return ExitCode::from(EXIT_COULD_NOT_CHECK);
            }
        };
        let bound = listener.local_addr().map_or(addr.to_string(), |a| a.to_string());
        println!("flowbook listening on http://{bound} ({mode})");
        if sweep_every > 0 {
            let processor = processor.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(std::time::Duration::from_secs(sweep_every * 60));
                loop {
                    every.tick().await;
                    match processor.sweep(chrono::Utc::now()).await {
                        Ok(expired) if expired > 0 => tracing::info!(expired, "expiry sweep"),
                        Ok(_) => {}
                        Err(error) => tracing::error!("expiry sweep failed: {}", error.message),
                    }
                }
            });
        }
        let served = axum::serve(app::without_nagle(listener), app::router(state))
            .with_graceful_shutdown(shutdown_signal())
            .await;
        match served {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("flowbook: the server stopped: {error}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Resolves on SIGINT or SIGTERM: stop accepting, let in-flight requests finish.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down");
}

/// The server's write path without a socket, acting as `local`: for `import` and `demo`.
fn local_writer(
    data: &Path,
    options: StoreOptions,
) -> Result<(tokio::runtime::Runtime, app::AppState), ExitCode> {
    let store = match Store::open(data, options) {
        Ok(store) => Arc::new(store),
        Err(error) => {
            eprintln!("flowbook: cannot open the store at {}: {error}", data.display());
            return Err(ExitCode::from(EXIT_COULD_NOT_CHECK));
        }
    };
    let live = match flowbook_projections::Live::open(store, RulesConfig::default(), |_, _| {}) {
        Ok(live) => Arc::new(live),
        Err(error) => {
            eprintln!("flowbook: cannot build the read models: {error}");
            return Err(ExitCode::FAILURE);
        }
    };
    let processor = match processor::Processor::start(Arc::clone(&live), RulesConfig::default()) {
        Ok(processor) => processor,
        Err(error) => {
            eprintln!("flowbook: {}", error.message);
            return Err(ExitCode::FAILURE);
        }
    };
    let Ok(runtime) = tokio::runtime::Builder::new_multi_thread().enable_all().build() else {
        eprintln!("flowbook: cannot start the runtime");
        return Err(ExitCode::FAILURE);
    };
    let state = app::AppState::new(app::Shared {
        live,
        processor,
        tokens: None,
        metrics: Default::default(),
        limits: Default::default(),
    });
    Ok((runtime, state))
}

fn bench_command(options: bench::BenchOptions, json: Option<&Path>) -> ExitCode {
    if !(0.05..=3600.0).contains(&options.seconds) {
        eprintln!("flowbook: --seconds must be between 0.05 and 3600");
        return ExitCode::from(EXIT_COULD_NOT_CHECK);
    }
    let empty = std::fs::read_dir(&options.dir).map_or(true, |mut entries| entries.next().is_none());
    if !empty {
        eprintln!("flowbook: {} is not empty; the bench needs a scratch directory", options.dir.display());
        return ExitCode::from(EXIT_COULD_NOT_CHECK);
    }
    let options_for_store =
        StoreOptions { cache_capacity_bytes: options.cache_bytes, ..StoreOptions::default() };
    let (runtime, state) = match local_writer(&options.dir.join("district"), options_for_store) {
        Ok(writer) => writer,
        Err(code) => return code,
    };
    let report = bench::run(&options, &state, &runtime, |phase| eprintln!("bench: {phase}"));
    // The processor thread lets go of the store only once it sees its queue closed, and the
    // store's last owner closes it (a final heads snapshot): be that owner, so that the close is
    // over before the directory goes.
    let store = Arc::clone(state.live.store());
    drop(state);
    drop(runtime);
    let closing = std::time::Instant::now();
    while Arc::strong_count(&store) > 1 && closing.elapsed() < std::time::Duration::from_secs(30) {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    drop(store);
    let _ = std::fs::remove_dir_all(&options.dir);
    let report = match report {
        Ok(report) => report,
        Err(error) => {
            eprintln!("flowbook: bench failed: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!("{}", bench::table(&report));
    if let Some(path) = json {
        let written = serde_json::to_vec_pretty(&report)
            .map_err(|e| e.to_string())
            .and_then(|bytes| std::fs::write(path, bytes).map_err(|e| e.to_string()));
        if let Err(error) = written {
            eprintln!("flowbook: cannot write {}: {error}", path.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

fn demo_command(data: &Path, seed: u64, members: usize, end: Option<&str>) -> ExitCode {
    let today = chrono::Utc::now().date_naive();
    let end_day = match end.map(|text| chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")) {
        None => today,
        Some(Ok(day)) if day <= today => day,
        Some(Ok(_)) => {
            eprintln!("flowbook: --end is in the future; history cannot be");
            return ExitCode::from(EXIT_COULD_NOT_CHECK);
        }
        Some(Err(_)) => {
            eprintln!("flowbook: --end must be a date like 2026-06-30");
            return ExitCode::from(EXIT_COULD_NOT_CHECK);
        }
    };
    let (runtime, state) = match local_writer(data, StoreOptions::default()) {
        Ok(writer) => writer,
        Err(code) => return code,
    };
    if state.live.store().head() > 0 {
        eprintln!(
            "flowbook: {} already holds events; the demo needs an empty data directory",
            data.display()
        );
        return ExitCode::from(EXIT_COULD_NOT_CHECK);
    }
    let started = Instant::now();
    let end = end_day.and_time(chrono::NaiveTime::MIN).and_utc();
    let report = runtime.block_on(demo::run(&state, seed, members, end));
    for (op, code, message) in &report.refused {
        eprintln!("refused {op}: {code} ({message})");
    }
    println!(
        "demo district (seed {seed}): {} branches, {} members, {} writes ({} events) over {} days to {end_day}; \
         {} letters expired into pocket members, {} retractions; {} refused; {:.1} s",
        report.branches,
        report.members,
        report.writes,
        state.live.store().head(),
        demo::DAYS,
        report.expired,
        report.retracted,
        report.refused.len(),
        started.elapsed().as_secs_f64()
    );
    if report.refused.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn import(file: &Path, data: &Path) -> ExitCode {
    let text = match std::fs::read(file) {
        Ok(text) => text,
        Err(error) => {
            eprintln!("flowbook: cannot read {}: {error}", file.display());
            return ExitCode::from(EXIT_COULD_NOT_CHECK);
        }
    };
    let (runtime, state) = match local_writer(data, StoreOptions::default()) {
        Ok(writer) => writer,
        Err(code) => return code,
    };
    let started = Instant::now();
    let lines = text.split(|b| *b == b'\n').filter(|line| !line.iter().all(u8::is_ascii_whitespace)).count();
    let mut progress = progress::Progress::new("import", "lines", lines as u64);
    let (accepted, rejected) =
        runtime.block_on(writes::import_lines(&state, &access::Principal::local(), &text, &mut |done| {
            progress.set(done)
        }));
    progress.finish();
    for rejection in &rejected {
        eprintln!(
            "line {}: {} ({})",
            rejection["line"],
            rejection["error"]["code"].as_str().unwrap_or(""),
            rejection["error"]["message"].as_str().unwrap_or("")
        );
    }
    println!(
        "imported {accepted} lines, rejected {} in {:.2} s",
        rejected.len(),
        started.elapsed().as_secs_f64()
    );
    if rejected.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn export_command(
    data: &Path,
    format: &str,
    report: Option<&str>,
    branch: Option<flowbook_core::BranchId>,
    [as_of, known_at, from, to]: [Option<String>; 4],
    by: &str,
    out: Option<&Path>,
) -> ExitCode {
    let fail = |message: String| {
        eprintln!("flowbook: {message}");
        ExitCode::from(EXIT_COULD_NOT_CHECK)
    };
    let when = |text: &Option<String>, what: &str| -> Result<Option<chrono::DateTime<chrono::Utc>>, String> {
        text.as_deref()
            .map(|t| time::parse(t).ok_or(format!("--{what} {t:?} is not a date or time")))
            .transpose()
    };
    let (as_of, known_at, from, to) =
        match (when(&as_of, "as-of"), when(&known_at, "known-at"), when(&from, "from"), when(&to, "to")) {
            (Ok(a), Ok(k), Ok(f), Ok(t)) => (a, k, f, t),
            (Err(e), ..) | (_, Err(e), ..) | (_, _, Err(e), _) | (.., Err(e)) => return fail(e),
        };
    let by = match by {
        "branch" => flowbook_projections::FlowGrouping::Branch,
        "region" => flowbook_projections::FlowGrouping::Region,
        other => return fail(format!("--by must be branch or region, not {other:?}")),
    };
    let store = match open_existing(data) {
        Ok(store) => Arc::new(store),
        Err(code) => return code,
    };
    let live = match flowbook_projections::Live::open(store, RulesConfig::default(), |_, _| {}) {
        Ok(live) => live,
        Err(error) => return fail(format!("cannot build the read models: {error}")),
    };
    let mut sink: Box<dyn std::io::Write> = match out {
        Some(path) => match std::fs::File::create(path) {
            Ok(file) => Box::new(std::io::BufWriter::new(file)),
            Err(error) => return fail(format!("cannot write {}: {error}", path.display())),
        },
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let result = match (format, report) {
        ("ndjson", None) => export::events_ndjson(&live, &mut sink),
        ("csv", Some("roster")) => match branch {
            Some(branch) => {
                export::roster_csv(&live, branch, &flowbook_projections::At::new(as_of, known_at), &mut sink)
            }
            None => return fail("a roster needs --branch".into()),
        },
        ("csv", Some("flows")) => match (from, to) {
            (Some(from), Some(to)) => export::flows_csv(&live, from, to, by, &mut sink),
            _ => return fail("a flows report needs --from and --to".into()),
        },
        ("csv", Some("ledger")) => export::ledger_csv(&live, chrono::Utc::now(), &mut sink),
        ("csv", _) => return fail("--format csv needs --report roster, flows or ledger".into()),
        ("ndjson", Some(_)) => return fail("reports are csv; ndjson exports every event".into()),
        (other, _) => return fail(format!("--format must be ndjson or csv, not {other:?}")),
    };
    match result.and_then(|rows| sink.flush().map(|()| rows).map_err(|e| e.to_string())) {
        Ok(rows) => {
            eprintln!("exported {rows} rows");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("flowbook: export failed: {error}");
            ExitCode::FAILURE
        }
    }
}

fn rebuild(data: &Path) -> ExitCode {
    let store = match open_existing(data) {
        Ok(store) => Arc::new(store),
        Err(code) => return code,
    };
    let started = Instant::now();
    let mut progress = progress::Progress::new("rebuild", "events", store.head());
    let rebuilt =
        flowbook_projections::rebuild(&store, RulesConfig::default(), |applied, _| progress.set(applied));
    progress.finish();
    match rebuilt {
        Ok(projections) => {
            let seconds = started.elapsed().as_secs_f64();
            println!(
                "rebuilt {} events in {seconds:.2} s ({:.0} events/s): {} branches, {} members",
                projections.position(),
                projections.position() as f64 / seconds.max(1e-9),
                projections.world().branches().count(),
                projections.world().members().count()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("flowbook: rebuild failed: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Opens the store in `data`, refusing to create one.
fn open_existing(data: &Path) -> Result<Store, ExitCode> {
    if !data.join("db").is_file() {
        eprintln!("flowbook: no store at {}", data.display());
        return Err(ExitCode::from(EXIT_COULD_NOT_CHECK));
    }
    Store::open(data, StoreOptions::default()).map_err(|error| {
        eprintln!("flowbook: cannot open the store at {}: {error}", data.display());
        ExitCode::from(EXIT_COULD_NOT_CHECK)
    })
}

fn verify(data: &Path) -> ExitCode {
    // Opening creates a store where there is none; verifying must not.
    let store = match open_existing(data) {
        Ok(store) => store,
        Err(code) => return code,
    };
    match store.verify() {
        Ok(report) if report.ok => {
            println!("ok: {} events checked, checksums and hash chain sound", report.checked);
            ExitCode::SUCCESS
        }
        Ok(report) => {
            println!(
                "damaged: first bad position {} ({}); the {} events before it are sound",
                report.first_bad_position.unwrap_or(0),
                report.detail.as_deref().unwrap_or("unknown damage"),
                report.checked
            );
            ExitCode::from(EXIT_DAMAGED)
        }
        Err(error) => {
            eprintln!("flowbook: could not finish checking: {error}");
            ExitCode::from(EXIT_COULD_NOT_CHECK)
        }
    }
}
