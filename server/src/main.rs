//! The `flowbook` command line. Every command turns its errors into one line on standard error
//! and an exit code; nothing here panics on user input.
//!
//! So far: `verify` and `rebuild`. The HTTP server (`serve`) and the other commands of API.md
//! come with the server issue.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use std::sync::Arc;
use std::time::Instant;

use clap::{Parser, Subcommand};
use flowbook_core::RulesConfig;
use flowbook_store::{Store, StoreOptions};

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
    /// Check every record's checksum and the hash chain. Exit 0: sound; 1: damaged (the first
    /// bad position is named); 2: could not check (no store, or it is in use).
    Verify {
        /// The data directory.
        #[arg(long, default_value = "./flowbook-data")]
        data: PathBuf,
    },
    /// Rebuild every projection from the log, with progress, and report how long it took.
    Rebuild {
        /// The data directory.
        #[arg(long, default_value = "./flowbook-data")]
        data: PathBuf,
    },
}

/// Exit codes of `flowbook verify` (API.md).
const EXIT_DAMAGED: u8 = 1;
const EXIT_COULD_NOT_CHECK: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Verify { data } => verify(&data),
        Command::Rebuild { data } => rebuild(&data),
    }
}

/// Progress lines every this many events while rebuilding.
const PROGRESS_EVERY_EVENTS: u64 = 1_000_000;

fn rebuild(data: &Path) -> ExitCode {
    let store = match open_existing(data) {
        Ok(store) => Arc::new(store),
        Err(code) => return code,
    };
    let started = Instant::now();
    let mut next_report = PROGRESS_EVERY_EVENTS;
    let progress = |applied: u64, total: u64| {
        if applied >= next_report || applied == total {
            eprintln!(
                "rebuild: {applied} of {total} events ({:.0} %)",
                applied as f64 * 100.0 / total.max(1) as f64
            );
            next_report = applied + PROGRESS_EVERY_EVENTS;
        }
    };
    match flowbook_projections::rebuild(&store, RulesConfig::default(), progress) {
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
