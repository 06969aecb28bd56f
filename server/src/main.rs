//! The `flowbook` command line. Every command turns its errors into one line on standard error
//! and an exit code; nothing here panics on user input.
//!
//! So far: `verify`. The HTTP server (`serve`) and the other commands of API.md come with the
//! server issue.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
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
}

/// Exit codes of `flowbook verify` (API.md).
const EXIT_DAMAGED: u8 = 1;
const EXIT_COULD_NOT_CHECK: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Verify { data } => verify(&data),
    }
}

fn verify(data: &Path) -> ExitCode {
    // Opening creates a store where there is none; verifying must not.
    if !data.join("db").is_file() {
        eprintln!("flowbook: no store at {}", data.display());
        return ExitCode::from(EXIT_COULD_NOT_CHECK);
    }
    let store = match Store::open(data, StoreOptions::default()) {
        Ok(store) => store,
        Err(error) => {
            eprintln!("flowbook: cannot open the store at {}: {error}", data.display());
            return ExitCode::from(EXIT_COULD_NOT_CHECK);
        }
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
