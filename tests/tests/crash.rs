//! Crash test: a child process appends concurrently and reports every acknowledged event; it is
//! SIGKILLed at a random moment; after reopening, every acknowledged event must be there and
//! byte-identical, positions must be a gapless prefix, and the hash chain must verify; every
//! acknowledged append's idempotency key must replay exactly its events, and a key of an append
//! cut short must name nothing or its own events. Rounds reuse the same directory, so recovery
//! after a crash is itself crashed into.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flowbook_store::{Store, StoreOptions};
use flowbook_tests::crash_key;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const ROUNDS: usize = 24;
const THREADS: &str = "8";

struct Ack {
    hash: String,
    round: usize,
    thread: u64,
    seq: u64,
    index: u64,
}

/// Appends of the round past each thread's last acknowledged one whose keys are asked for.
const UNACKED_SEQS_CHECKED: u64 = 64;

#[test]
fn every_acknowledged_event_survives_sigkill() {
    let seed = std::env::var("CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    println!("crash test seed {seed} (set CRASH_SEED to replay)");
    // Kill times, reproducible from the printed seed.
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut acked: HashMap<u64, Ack> = HashMap::new();
    let mut total_lost_unacked = 0u64;
    for round in 0..ROUNDS {
        let mut child = Command::new(env!("CARGO_BIN_EXE_crash_child"))
            .arg(dir.path())
            .arg(THREADS)
            .arg(round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the crash child");
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(line) => lines.push(line),
                    Err(_) => break,
                }
            }
            lines
        });
        // Let it open (and recover) the store and write for a while, then kill it mid-stride.
        let started = Instant::now();
        let wait = Duration::from_millis(rng.random_range(50..450));
        std::thread::sleep(wait);
        child.kill().expect("SIGKILL the child");
        let status = child.wait().unwrap();
        assert!(!status.success(), "round {round}: the child exited on its own: {status}");
        let lines = reader.join().unwrap();
        let mut round_acks = 0;
        for line in lines {
            // A line cut by the kill is not an acknowledgement anyone saw whole.
            let parts: Vec<&str> = line.split(' ').collect();
            if parts.len() != 6 || parts[0] != "ack" || parts[2].len() != 64 {
                continue;
            }
            let (Ok(position), Ok(thread), Ok(seq), Ok(index)) =
                (parts[1].parse::<u64>(), parts[3].parse(), parts[4].parse(), parts[5].parse())
            else {
                continue;
            };
            acked.insert(position, Ack { hash: parts[2].into(), round, thread, seq, index });
            round_acks += 1;
        }

        let store = Store::open(dir.path(), StoreOptions::default())
            .unwrap_or_else(|e| panic!("round {round}: reopen failed: {e}"));
        let report = store.verify().unwrap();
        assert!(report.ok, "round {round}: verify after crash: {report:?}");
        let head = store.head();
        assert_eq!(report.checked, head, "round {round}: verify and head disagree");
        let mut stored = Vec::with_capacity(head as usize);
        let mut after = 0;
        loop {
            let page = store.read_log(after, 10_000).unwrap();
            let Some(last) = page.last() else { break };
            after = last.position;
            stored.extend(page);
        }
        for (i, event) in stored.iter().enumerate() {
            assert_eq!(event.position, i as u64 + 1, "round {round}: positions are not a gapless prefix");
        }
        for (position, ack) in &acked {
            let event = stored.get(*position as usize - 1).unwrap_or_else(|| {
                panic!("round {round}: acknowledged position {position} lost (head {head})")
            });
            assert_eq!(event.hash.to_string(), ack.hash, "round {round}: position {position} changed");
            let expected = format!(r#"{{"thread":{},"seq":{},"index":{}}}"#, ack.thread, ack.seq, ack.index);
            assert_eq!(event.data.get(), expected, "round {round}: position {position} changed");
        }
        check_idempotency_keys(&store, &acked, round);
        total_lost_unacked += head - acked.keys().copied().max().unwrap_or(0).min(head);
        println!(
            "round {round}: killed after {:?}, {round_acks} acks, log head {head}, all {} acks present",
            started.elapsed(),
            acked.len()
        );
    }
    assert!(acked.len() > ROUNDS, "the child acknowledged too little to prove anything");
    println!("{} acknowledged events checked over {ROUNDS} crashes ({total_lost_unacked} stored past the last ack)", acked.len());
}

/// Every acknowledged append's key replays exactly its acknowledged positions; the keys of this
/// round's appends past the last acknowledgement name nothing, or the append's own events (it may
/// have been written whole and not yet answered) — never positions the log lost or reused.
fn check_idempotency_keys(store: &Store, acked: &HashMap<u64, Ack>, round: usize) {
    let mut appends: HashMap<(usize, u64, u64), Vec<u64>> = HashMap::new();
    for (position, ack) in acked {
        appends.entry((ack.round, ack.thread, ack.seq)).or_default().push(*position);
    }
    for ((of_round, thread, seq), positions) in &mut appends {
        positions.sort_unstable();
        let replayed = store
            .idempotent_result(&crash_key(*of_round, *thread as usize, *seq))
            .unwrap_or_else(|e| panic!("round {round}: key of {of_round}/{thread}/{seq}: {e}"))
            .unwrap_or_else(|| panic!("round {round}: acknowledged key {of_round}/{thread}/{seq} lost"));
        let replayed_positions: Vec<u64> = replayed.iter().map(|event| event.position).collect();
        // A line cut by the kill may hide the last events of an append: a prefix must match.
        assert!(
            replayed_positions.starts_with(positions),
            "round {round}: key {of_round}/{thread}/{seq} replays {replayed_positions:?}, acknowledged {positions:?}"
        );
    }
    let threads: u64 = THREADS.parse().unwrap();
    for thread in 0..threads {
        let last_acked = appends.keys().filter(|(r, t, _)| *r == round && *t == thread).map(|k| k.2).max();
        let from = last_acked.map_or(0, |seq| seq + 1);
        for seq in from..from + UNACKED_SEQS_CHECKED {
            let answer = store
                .idempotent_result(&crash_key(round, thread as usize, seq))
                .unwrap_or_else(|e| panic!("round {round}: unacknowledged key {thread}/{seq}: {e}"));
            for (index, event) in answer.iter().flatten().enumerate() {
                let expected = format!(r#"{{"thread":{thread},"seq":{seq},"index":{index}}}"#);
                assert_eq!(
                    event.data.get(),
                    expected,
                    "round {round}: key {thread}/{seq} names another append"
                );
            }
        }
    }
}
