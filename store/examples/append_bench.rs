//! Durable append throughput of the log, for batches of 1, 10, 100 and 1,000 events with 1 and 64
//! concurrent appenders, plus the disk's own bound measured in the same run (sequential writes of
//! the same bytes with one `fdatasync` per write).
//!
//! cargo run --release -p flowbook-store --example append_bench -- [--seconds S] [--dir DIR]
//!
//! Events are ~330-byte envelopes of realistic domain data (a transfer letter) spread over
//! 10,000 member streams. The store's directory is on the same disk as the working directory
//! unless `--dir` says otherwise (tmpfs would measure nothing).

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use flowbook_store::{AppendRequest, NewEvent, Store, StoreOptions};
use serde_json::value::RawValue;
use uuid::Uuid;

/// The allocator the `flowbook` binary uses (see the workspace's Cargo.toml).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn event(n: u64) -> NewEvent {
    let member = Uuid::from_u64_pair(7, n % 10_000);
    let data = format!(
        r#"{{"transfer_id":"{}","member_id":"{member}","from_branch_id":"{}","to_branch_id":"{}","letter_no":"L{n:08}","valid_until":"2026-12-01T00:00:00Z"}}"#,
        Uuid::from_u64_pair(8, n),
        Uuid::from_u64_pair(9, n % 200),
        Uuid::from_u64_pair(9, (n + 1) % 200),
    );
    NewEvent {
        // Counter-based ids: Uuid::now_v7 asks the kernel for randomness per id, which would
        // measure the benchmark's own event generation rather than the log.
        event_id: Uuid::from_u64_pair(0xE, n),
        stream: format!("member/{member}"),
        event_type: "transfer_initiated".into(),
        effective_at: Utc::now(),
        actor: "bench".into(),
        data: RawValue::from_string(data).unwrap(),
    }
}

struct Run {
    events_per_s: f64,
    appends_per_s: f64,
    bytes_per_event: f64,
}

fn measure(dir: &std::path::Path, batch: usize, appenders: usize, seconds: f64) -> Run {
    let path = dir.join(format!("store-b{batch}-c{appenders}"));
    let store = Arc::new(Store::open(&path, StoreOptions::default()).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let appended = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..appenders)
        .map(|worker| {
            let (store, stop, appended) = (Arc::clone(&store), Arc::clone(&stop), Arc::clone(&appended));
            std::thread::spawn(move || {
                let mut n = worker as u64 * 1_000_000_000;
                let mut appends = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let events = (0..batch)
                        .map(|_| {
                            n += 1;
                            event(n)
                        })
                        .collect();
                    store.append(AppendRequest { events, ..Default::default() }).unwrap();
                    appended.fetch_add(batch as u64, Ordering::Relaxed);
                    appends += 1;
                }
                appends
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    stop.store(true, Ordering::Relaxed);
    let appends: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    let elapsed = started.elapsed().as_secs_f64();
    let events = appended.load(Ordering::Relaxed);
    drop(store);
    let bytes = flowbook_store::disk_bytes(&path);
    let _ = std::fs::remove_dir_all(&path);
    Run {
        events_per_s: events as f64 / elapsed,
        appends_per_s: appends as f64 / elapsed,
        bytes_per_event: bytes as f64 / events as f64,
    }
}

/// The disk's bound: the same number of bytes per write, appended sequentially, one fdatasync each.
fn physical_bound(dir: &std::path::Path, write_bytes: usize, seconds: f64) -> (f64, f64) {
    let path = dir.join("physical-bound");
    let mut file = OpenOptions::new().create(true).truncate(true).write(true).open(&path).unwrap();
    let buffer = vec![0x5au8; write_bytes];
    let started = Instant::now();
    let mut writes = 0u64;
    while started.elapsed().as_secs_f64() < seconds {
        file.write_all(&buffer).unwrap();
        file.sync_data().unwrap();
        writes += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    drop(file);
    let _ = std::fs::remove_file(&path);
    (writes as f64 / elapsed, writes as f64 * write_bytes as f64 / elapsed / 1e6)
}

fn main() {
    let mut seconds = 3.0;
    let mut only: Option<(usize, usize)> = None;
    let mut dir = std::env::current_dir().unwrap().join("target/bench-store");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--seconds", Some(value)) => seconds = value.parse().expect("--seconds takes a number"),
            ("--dir", Some(value)) => dir = value.into(),
            ("--only", Some(value)) => {
                let (batch, appenders) = value.split_once(',').expect("--only BATCH,APPENDERS");
                only = Some((batch.parse().unwrap(), appenders.parse().unwrap()));
            }
            _ => {
                eprintln!("usage: append_bench [--seconds S] [--dir DIR] [--only BATCH,APPENDERS]");
                std::process::exit(2);
            }
        }
    }
    std::fs::create_dir_all(&dir).unwrap();
    let probe = event(1);
    let envelope_bytes = probe.data.get().len() + 260;
    println!("durable append, {seconds} s a cell, store in {}", dir.display());
    println!("| batch | appenders | events/s | appends/s | disk bytes/event |");
    println!("|---:|---:|---:|---:|---:|");
    for batch in [1usize, 10, 100, 1_000] {
        for appenders in [1usize, 64] {
            if only.is_some_and(|cell| cell != (batch, appenders)) {
                continue;
            }
            let run = measure(&dir, batch, appenders, seconds);
            println!(
                "| {batch} | {appenders} | {:.0} | {:.0} | {:.0} |",
                run.events_per_s, run.appends_per_s, run.bytes_per_event
            );
        }
    }
    if only.is_some() {
        return;
    }
    println!();
    println!("physical bound (sequential write + fdatasync, same disk):");
    println!("| bytes per write | fdatasync/s | MB/s | events/s at ~{envelope_bytes} B |");
    println!("|---:|---:|---:|---:|");
    for events in [1usize, 1_000] {
        let (syncs, mbps) = physical_bound(&dir, envelope_bytes * events, seconds);
        println!("| {} | {syncs:.0} | {mbps:.0} | {:.0} |", envelope_bytes * events, syncs * events as f64);
    }
}
