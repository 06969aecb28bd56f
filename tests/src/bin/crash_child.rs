//! The victim of the crash test: appends from several threads as fast as it can and prints one
//! line per acknowledged event (`ack <position> <hash> <thread> <seq> <index>`) until it is killed.
//! Every append carries an idempotency key (`flowbook_tests::crash_key`).
//! Usage: crash_child DIR THREADS ROUND

use std::io::Write;
use std::sync::{Arc, Mutex};

use chrono::Utc;
use flowbook_store::{AppendRequest, NewEvent, Store, StoreOptions};
use flowbook_tests::crash_key;
use serde_json::value::RawValue;
use uuid::Uuid;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(threads), Some(round)) = (
        args.next(),
        args.next().and_then(|t| t.parse::<usize>().ok()),
        args.next().and_then(|r| r.parse::<usize>().ok()),
    ) else {
        eprintln!("usage: crash_child DIR THREADS ROUND");
        std::process::exit(2);
    };
    let store = match Store::open(&dir, StoreOptions::default()) {
        Ok(store) => Arc::new(store),
        Err(error) => {
            eprintln!("crash_child: cannot open {dir}: {error}");
            std::process::exit(2);
        }
    };
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let workers: Vec<_> = (0..threads)
        .map(|thread| {
            let store = Arc::clone(&store);
            let out = Arc::clone(&out);
            std::thread::spawn(move || {
                for seq in 0u64.. {
                    // Batches of 1 to 4 events, some spanning two streams.
                    let size = 1 + (seq % 4) as usize;
                    let events = (0..size)
                        .map(|index| NewEvent {
                            event_id: Uuid::now_v7(),
                            stream: format!("member/{thread}-{}", index % 2),
                            event_type: "crash_probe".into(),
                            effective_at: Utc::now(),
                            actor: "crash".into(),
                            data: RawValue::from_string(format!(
                                r#"{{"thread":{thread},"seq":{seq},"index":{index}}}"#
                            ))
                            .unwrap(),
                        })
                        .collect();
                    let request = AppendRequest {
                        events,
                        idempotency: Some(crash_key(round, thread, seq)),
                        ..Default::default()
                    };
                    let appended = match store.append(request) {
                        Ok(appended) => appended,
                        Err(error) => {
                            eprintln!("crash_child: append failed: {error}");
                            std::process::exit(3);
                        }
                    };
                    let mut out = out.lock().unwrap();
                    for (index, event) in appended.events().iter().enumerate() {
                        writeln!(out, "ack {} {} {thread} {seq} {index}", event.position, event.hash)
                            .unwrap();
                    }
                    out.flush().unwrap();
                }
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.join();
    }
}
