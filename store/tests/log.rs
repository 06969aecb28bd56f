//! The log's contract, one behaviour a test: appends, versions, idempotency, limits, restarts,
//! the committed head, and damage found by `verify` and by reads.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use flowbook_store::limits::{
    APPEND_EVENTS_MAX, COMMIT_EVENTS_MAX, EVENT_DATA_BYTES_MAX, QUEUE_REQUESTS_MAX,
};
use flowbook_store::testing::{damage_record, unfinish_commits_after, Damage};
use flowbook_store::{
    AppendRequest, Appended, Envelope, IdempotencyKey, NewEvent, Store, StoreError, StoreOptions,
};
use serde_json::value::RawValue;
use uuid::Uuid;

fn event(stream: &str, n: u64) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        stream: stream.into(),
        event_type: "member_verified".into(),
        effective_at: DateTime::from_timestamp(1_790_000_000 + n as i64, 0).unwrap(),
        actor: "alice".into(),
        data: RawValue::from_string(format!(r#"{{"n":{n},"name":"张三"}}"#)).unwrap(),
    }
}

fn append(store: &Store, events: Vec<NewEvent>) -> Vec<Envelope> {
    match store.append(AppendRequest { events, ..Default::default() }).unwrap() {
        Appended::Written(events) => events,
        other => panic!("expected a write, got {other:?}"),
    }
}

fn open(dir: &std::path::Path) -> Store {
    Store::open(dir, StoreOptions::default()).unwrap()
}

/// A store whose clock reads `seconds` (Unix time) and moves it on by `step` at every reading.
fn open_with_clock(dir: &std::path::Path, seconds: &Arc<AtomicI64>, step: i64) -> Store {
    let seconds = Arc::clone(seconds);
    let options = StoreOptions {
        clock: Arc::new(move || {
            DateTime::from_timestamp(seconds.fetch_add(step, Ordering::SeqCst), 0).unwrap()
        }),
        ..StoreOptions::default()
    };
    Store::open(dir, options).unwrap()
}

#[test]
fn positions_are_gapless_and_versions_count_per_stream() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let first = append(&store, vec![event("member/a", 1), event("member/b", 2), event("member/a", 3)]);
    let second = append(&store, vec![event("member/a", 4)]);
    let positions: Vec<u64> = first.iter().chain(&second).map(|e| e.position).collect();
    assert_eq!(positions, vec![1, 2, 3, 4]);
    let versions: Vec<u64> = first.iter().chain(&second).map(|e| e.version).collect();
    assert_eq!(versions, vec![1, 1, 2, 3]);
    assert_eq!(store.head(), 4);
    assert_eq!(store.stream_version("member/a").unwrap(), 3);
    assert_eq!(store.stream_version("member/none").unwrap(), 0);
    let stream: Vec<u64> = store.read_stream("member/a", 2, 100).unwrap().iter().map(|e| e.version).collect();
    assert_eq!(stream, vec![2, 3]);
    assert_eq!(store.read_log(1, 2).unwrap(), first[1..].to_vec());
    assert_eq!(store.event(4).unwrap().unwrap(), second[0]);
    assert_eq!(store.event(5).unwrap(), None);
}

#[test]
fn the_hash_chain_starts_from_zeros_and_links_every_event() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let events = append(&store, vec![event("s", 1), event("s", 2)]);
    assert_eq!(events[0].hash.to_string().len(), 64);
    assert_ne!(events[0].hash, events[1].hash);
    let report = store.verify().unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.checked, 2);
}

#[test]
fn an_expected_version_mismatch_appends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    append(&store, vec![event("member/a", 1)]);
    let request = AppendRequest {
        events: vec![event("member/a", 2), event("member/b", 3)],
        expected_versions: vec![("member/a".into(), 1), ("member/b".into(), 1)],
        idempotency: None,
    };
    match store.append(request) {
        Err(StoreError::VersionConflict { stream, expected: 1, actual: 0 }) => assert_eq!(stream, "member/b"),
        other => panic!("expected a version conflict, got {other:?}"),
    }
    assert_eq!(store.head(), 1);
    assert_eq!(store.stream_version("member/b").unwrap(), 0);
    let ok = AppendRequest {
        events: vec![event("member/a", 2)],
        expected_versions: vec![("member/a".into(), 1), ("member/b".into(), 0)],
        idempotency: None,
    };
    assert!(matches!(store.append(ok).unwrap(), Appended::Written(_)));
}

#[test]
fn an_idempotency_key_replays_the_first_answer_and_refuses_another_body() {
    let dir = tempfile::tempdir().unwrap();
    let key = |fingerprint: u8| IdempotencyKey { key: "alice/k1".into(), fingerprint: [fingerprint; 32] };
    let first = {
        let store = open(dir.path());
        let request = AppendRequest {
            events: vec![event("m", 1)],
            expected_versions: vec![],
            idempotency: Some(key(1)),
        };
        let first = store.append(request.clone()).unwrap();
        assert!(matches!(first, Appended::Written(_)));
        assert_eq!(store.append(request).unwrap(), Appended::Replayed(first.events().to_vec()));
        first
    };
    // Remembered across a restart.
    let store = open(dir.path());
    let replay =
        AppendRequest { events: vec![event("m", 9)], expected_versions: vec![], idempotency: Some(key(1)) };
    assert_eq!(store.append(replay).unwrap(), Appended::Replayed(first.events().to_vec()));
    assert_eq!(store.idempotent_result(&key(1)).unwrap(), Some(first.events().to_vec()));
    let other =
        AppendRequest { events: vec![event("m", 2)], expected_versions: vec![], idempotency: Some(key(2)) };
    assert!(matches!(store.append(other), Err(StoreError::IdempotencyKeyReused)));
    assert!(matches!(store.idempotent_result(&key(2)), Err(StoreError::IdempotencyKeyReused)));
    assert_eq!(store.head(), 1);
}

#[test]
fn equal_requests_racing_in_one_commit_append_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()));
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let request = AppendRequest {
                    events: vec![event("m", 1)],
                    expected_versions: vec![],
                    idempotency: Some(IdempotencyKey { key: "race".into(), fingerprint: [7; 32] }),
                };
                store.append(request).unwrap().events()[0].position
            })
        })
        .collect();
    let positions: Vec<u64> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(positions.iter().all(|p| *p == 1), "{positions:?}");
    assert_eq!(store.head(), 1);
}

/// Commits go through three threads (stamping, sealing, syncing), so a request is often checked
/// while the commit before it is applied but not yet durable, or not even applied. It must see
/// that commit's stream heads and idempotency keys all the same.
#[test]
fn requests_see_the_commits_still_in_flight_before_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for round in 0..5u64 {
        let key = |fingerprint: u8| {
            Some(IdempotencyKey { key: format!("bulk{round}"), fingerprint: [fingerprint; 32] })
        };
        let stream = format!("m{round}");
        let bulk = AppendRequest {
            events: (1..=3_000).map(|n| event(&stream, n)).collect(),
            expected_versions: vec![],
            idempotency: key(1),
        };
        let first = store.submit(bulk).unwrap();
        // Long enough for the writer to take the bulk request alone and start stamping it,
        // short of its being durable: what follows is staged while it is in flight.
        std::thread::sleep(std::time::Duration::from_millis(1 + round));
        let again =
            AppendRequest { events: vec![event(&stream, 1)], expected_versions: vec![], idempotency: key(1) };
        let again = store.submit(again).unwrap();
        let reused =
            AppendRequest { events: vec![event(&stream, 1)], expected_versions: vec![], idempotency: key(2) };
        let reused = store.submit(reused).unwrap();
        let next = AppendRequest {
            events: vec![event(&stream, 9)],
            expected_versions: vec![(stream.clone(), 3_000)],
            idempotency: None,
        };
        let next = store.submit(next).unwrap();
        let stale = AppendRequest {
            events: vec![event(&stream, 9)],
            expected_versions: vec![(stream.clone(), 3_000)],
            idempotency: None,
        };
        let stale = store.submit(stale).unwrap();

        let first = match first.wait().unwrap() {
            Appended::Written(events) => events,
            other => panic!("expected a write, got {other:?}"),
        };
        assert_eq!(again.wait().unwrap(), Appended::Replayed(first.clone()), "round {round}");
        assert!(matches!(reused.wait(), Err(StoreError::IdempotencyKeyReused)), "round {round}");
        let next = next.wait().unwrap().into_events();
        assert_eq!((next[0].version, next[0].position), (3_001, first[2_999].position + 1), "round {round}");
        match stale.wait() {
            Err(StoreError::VersionConflict { expected: 3_000, actual: 3_001, .. }) => {}
            other => panic!("round {round}: expected a conflict, got {other:?}"),
        }
        assert_eq!(store.head(), next[0].position);
    }
    assert_eq!(store.head(), 5 * 3_001);
    assert!(store.verify().unwrap().ok);
}

#[test]
fn requests_queued_together_are_answered_each_and_a_refusal_refuses_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let one = |n: u64| AppendRequest { events: vec![event("m", n)], ..Default::default() };
    let answers: Vec<_> = store.submit_all(vec![one(1), one(2), one(3)]);
    let positions: Vec<u64> =
        answers.into_iter().map(|a| a.unwrap().wait().unwrap().events()[0].position).collect();
    assert_eq!(positions, vec![1, 2, 3]);

    let too_big = AppendRequest {
        events: (0..=APPEND_EVENTS_MAX as u64).map(|n| event("m", n)).collect(),
        ..Default::default()
    };
    let answers = store.submit_all(vec![one(4), too_big, one(5)]);
    let outcomes: Vec<_> = answers.into_iter().map(|a| a.and_then(|submitted| submitted.wait())).collect();
    assert_eq!(outcomes[0].as_ref().unwrap().events()[0].version, 4);
    for refused in &outcomes[1..] {
        assert!(matches!(refused, Err(StoreError::LimitExceeded { .. })), "{refused:?}");
    }
    assert_eq!(store.head(), 4, "nothing after the refused request was written");
}

/// `submit_all` hands its requests to the writer as one group, so they are committed together:
/// one commit, one `recorded_at`, one flush. The clock here moves a second at every reading and
/// the writer reads it once a commit, so requests split over two commits would show two times.
#[test]
fn requests_submitted_together_share_one_commit() {
    let dir = tempfile::tempdir().unwrap();
    let seconds = Arc::new(AtomicI64::new(1_800_000_000));
    let store = open_with_clock(dir.path(), &seconds, 1);
    // Large groups: queueing each of 2,000 appends on its own took long enough for the writer,
    // woken by the first, to start a commit with only some of them.
    for round in 0..5u64 {
        let requests = (0..2_000)
            .map(|n| AppendRequest { events: vec![event(&format!("m{n}"), round)], ..Default::default() })
            .collect();
        let times: std::collections::BTreeSet<DateTime<Utc>> = store
            .submit_all(requests)
            .into_iter()
            .map(|answer| answer.unwrap().wait().unwrap().events()[0].recorded_at)
            .collect();
        assert_eq!(times.len(), 1, "round {round}: the group was split over commits: {times:?}");
    }
    assert_eq!(store.head(), 5 * 2_000);
}

/// The stage clock times each waiting commit's stages while on, and nothing once off.
#[test]
fn a_waiting_commit_is_timed_stage_by_stage_while_asked() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    append(&store, vec![event("m1", 0)]); // before the clock: not timed
    store.time_commit_stages();
    for n in 1..=4 {
        append(&store, (0..100).map(|i| event(&format!("m{i}"), n)).collect());
    }
    let stages = store.timed_commit_stages();
    // Each commit is closed when the next is submitted: the first three of the four.
    assert_eq!(stages.commits, 3, "{stages:?}");
    assert_eq!(stages.micros.len(), flowbook_store::COMMIT_STAGES.len());
    assert!(stages.micros.iter().all(|micros| micros.is_finite() && *micros >= 0.0), "{stages:?}");
    let flush = flowbook_store::COMMIT_STAGES.iter().position(|stage| *stage == "sled's flush").unwrap();
    assert!(stages.micros[flush] > 0.0 && stages.micros[flush + 1] > 0.0, "flush and fdatasync: {stages:?}");
    assert!(stages.total_micros() >= stages.micros[flush]);

    for n in 5..=7 {
        append(&store, vec![event("m1", n)]);
    }
    store.time_commit_stages();
    assert_eq!(store.timed_commit_stages().commits, 0, "nothing timed while off, nor since");
}

/// A group of more events than one commit takes is split over commits, in order; every request
/// is still written whole and answered.
#[test]
fn a_group_larger_than_a_commit_is_committed_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let requests: Vec<AppendRequest> = (0..6u64)
        .map(|r| AppendRequest {
            events: (0..APPEND_EVENTS_MAX as u64).map(|n| event(&format!("m{r}"), n)).collect(),
            ..Default::default()
        })
        .collect();
    assert!(6 * APPEND_EVENTS_MAX > COMMIT_EVENTS_MAX);
    let answers = store.submit_all(requests);
    let mut commits = std::collections::BTreeSet::new();
    for (r, answer) in answers.into_iter().enumerate() {
        let events = answer.unwrap().wait().unwrap().events().to_vec();
        assert_eq!(events.len(), APPEND_EVENTS_MAX);
        assert_eq!(events[0].position, (r * APPEND_EVENTS_MAX) as u64 + 1, "request {r} in order");
        assert!(events.iter().all(|e| e.recorded_at == events[0].recorded_at), "request {r} whole");
        commits.insert(events[0].recorded_at);
    }
    assert!(commits.len() >= 2, "more than one commit's worth went in one commit");
    assert!(store.verify().unwrap().ok);
}

/// A group is queued whole or not at all: one larger than the queue is refused as busy, and
/// nothing of it is written.
#[test]
fn a_group_larger_than_the_queue_is_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let requests = (0..=QUEUE_REQUESTS_MAX as u64)
        .map(|n| AppendRequest { events: vec![event("m", n)], ..Default::default() });
    let answers = store.submit_all(requests.collect());
    assert_eq!(answers.len(), QUEUE_REQUESTS_MAX + 1);
    assert!(answers.iter().all(|answer| matches!(answer, Err(StoreError::Busy(_)))));
    append(&store, vec![event("m", 1)]);
    assert_eq!(store.head(), 1, "only the append after the refusal was written");
}

#[test]
fn recorded_at_never_decreases_even_when_the_clock_steps_back() {
    let dir = tempfile::tempdir().unwrap();
    let seconds = Arc::new(AtomicI64::new(1_800_000_000));
    let store = open_with_clock(dir.path(), &seconds, 0);
    let a = append(&store, vec![event("s", 1)]);
    seconds.store(1_700_000_000, Ordering::SeqCst);
    let b = append(&store, vec![event("s", 2)]);
    seconds.store(1_800_000_100, Ordering::SeqCst);
    let c = append(&store, vec![event("s", 3)]);
    assert_eq!(a[0].recorded_at, DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap());
    assert_eq!(b[0].recorded_at, a[0].recorded_at);
    assert_eq!(c[0].recorded_at, DateTime::<Utc>::from_timestamp(1_800_000_100, 0).unwrap());
}

#[test]
fn limits_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let empty = store.append(AppendRequest::default());
    assert!(matches!(empty, Err(StoreError::InvalidAppend(_))));
    let many = (0..=APPEND_EVENTS_MAX as u64).map(|n| event("s", n)).collect();
    let too_many = store.append(AppendRequest { events: many, ..Default::default() });
    assert!(matches!(too_many, Err(StoreError::LimitExceeded { what: "events in one append", .. })));
    let mut big = event("s", 1);
    big.data = RawValue::from_string(format!("\"{}\"", "x".repeat(EVENT_DATA_BYTES_MAX))).unwrap();
    let too_big = store.append(AppendRequest { events: vec![big], ..Default::default() });
    assert!(matches!(too_big, Err(StoreError::LimitExceeded { what: "event data bytes", .. })));
    let mut nul = event("s", 1);
    nul.stream = "member/\0".into();
    assert!(matches!(
        store.append(AppendRequest { events: vec![nul], ..Default::default() }),
        Err(StoreError::InvalidAppend(_))
    ));
    assert_eq!(store.head(), 0);
}

/// A commit's chunks reach the tree while it is being written and its end (the commit mark)
/// last; a crash in between leaves chunks past the mark. They were never acknowledged: opening
/// removes them, and the log carries on from the last whole commit.
#[test]
fn an_unfinished_commit_is_gone_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let kept = {
        let store = open(dir.path());
        let kept = append(&store, (1..=20).map(|n| event("m", n)).collect());
        append(&store, (21..=60).map(|n| event("m", n)).collect());
        kept
    };
    unfinish_commits_after(dir.path(), 20).unwrap();
    let store = open(dir.path());
    assert_eq!(store.head(), 20);
    assert_eq!(store.read_log(0, 100).unwrap(), kept);
    let next = append(&store, vec![event("m", 99)]);
    assert_eq!((next[0].position, next[0].version), (21, 21));
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.head(), 21);
    let report = store.verify().unwrap();
    assert!(report.ok && report.checked == 21, "{report:?}");
}

/// A commit's idempotency entries are inserted after its chunks and before its mark; a crash in
/// between leaves entries naming positions the log does not keep. Opening forgets them, so a
/// retry of that request appends (it was never acknowledged) instead of "replaying" whatever the
/// next commit puts at those positions — while a finished commit's key still replays.
#[test]
fn an_unfinished_commits_idempotency_keys_are_forgotten_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let keyed = |key: &str, events: Vec<NewEvent>| AppendRequest {
        events,
        idempotency: Some(IdempotencyKey { key: key.into(), fingerprint: [3; 32] }),
        ..Default::default()
    };
    let finished = {
        let store = open(dir.path());
        let finished = store.append(keyed("alice/first", vec![event("m", 1), event("m", 2)])).unwrap();
        store.append(keyed("alice/torn", vec![event("m", 3), event("m", 4)])).unwrap();
        finished.events().to_vec()
    };
    unfinish_commits_after(dir.path(), 2).unwrap();

    let store = open(dir.path());
    assert_eq!(store.head(), 2);
    let torn = IdempotencyKey { key: "alice/torn".into(), fingerprint: [3; 32] };
    assert_eq!(store.idempotent_result(&torn).unwrap(), None, "the unfinished commit's key is gone");
    let first = IdempotencyKey { key: "alice/first".into(), fingerprint: [3; 32] };
    assert_eq!(store.idempotent_result(&first).unwrap(), Some(finished.clone()));
    // Another request takes positions 3-4; the retry of the torn one is written after it.
    append(&store, vec![event("other", 5), event("other", 6)]);
    let retried = store.append(keyed("alice/torn", vec![event("m", 3), event("m", 4)])).unwrap();
    let Appended::Written(retried) = retried else { panic!("the retry must append, got {retried:?}") };
    assert_eq!(retried.iter().map(|e| e.position).collect::<Vec<_>>(), vec![5, 6]);
    drop(store);

    let store = open(dir.path());
    assert_eq!(store.idempotent_result(&torn).unwrap(), Some(retried));
    assert_eq!(store.idempotent_result(&first).unwrap(), Some(finished));
    assert!(store.verify().unwrap().ok);
}

#[test]
fn a_restart_keeps_everything_and_continues_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let before = {
        let store = open(dir.path());
        append(&store, vec![event("a", 1), event("b", 2)])
    };
    let store = open(dir.path());
    assert_eq!(store.read_log(0, 100).unwrap(), before);
    let after = append(&store, vec![event("a", 3)]);
    assert_eq!((after[0].position, after[0].version), (3, 2));
    assert!(store.verify().unwrap().ok);
}

#[test]
fn a_subscriber_sees_the_head_move() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()));
    let mut head = store.subscribe();
    assert_eq!(*head.borrow_and_update(), 0);
    let writer = {
        let store = Arc::clone(&store);
        std::thread::spawn(move || append(&store, vec![event("s", 1), event("s", 2)]))
    };
    let runtime = tokio_free_wait(&mut head);
    writer.join().unwrap();
    assert_eq!(runtime, 2);
}

/// Waits for a head change without an async runtime (the store's channels are runtime-agnostic).
fn tokio_free_wait(head: &mut tokio::sync::watch::Receiver<u64>) -> u64 {
    for _ in 0..500 {
        if head.has_changed().unwrap() {
            return *head.borrow_and_update();
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("the head never moved");
}

fn damaged_store(damage: Damage, position: u64) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        for n in 1..=5 {
            append(&store, vec![event("member/a", n)]);
        }
    }
    damage_record(dir.path(), position, damage).unwrap();
    let store = open(dir.path());
    (dir, store)
}

#[test]
fn a_flipped_bit_is_found_by_verify_and_by_reads() {
    let (_dir, store) = damaged_store(Damage::FlipBit, 3);
    let report = store.verify().unwrap();
    assert_eq!((report.ok, report.first_bad_position, report.checked), (false, Some(3), 2));
    assert!(matches!(store.read_log(0, 10), Err(StoreError::Corrupt { position: 3, .. })));
    assert!(matches!(store.event(3), Err(StoreError::Corrupt { position: 3, .. })));
    assert!(matches!(store.read_stream("member/a", 1, 10), Err(StoreError::Corrupt { position: 3, .. })));
    assert_eq!(store.read_log(3, 10).unwrap().len(), 2, "records after the damage still read");
}

#[test]
fn a_truncated_record_is_found() {
    let (_dir, store) = damaged_store(Damage::Truncate, 2);
    assert_eq!(store.verify().unwrap().first_bad_position, Some(2));
    assert!(matches!(store.event(2), Err(StoreError::Corrupt { position: 2, .. })));
}

#[test]
fn a_forged_record_with_a_fresh_checksum_breaks_the_chain() {
    let (_dir, store) = damaged_store(Damage::Rewrite { from: "alice".into(), to: "mallory".into() }, 4);
    // The checksum matches, so reads accept the record; only the chain shows the forgery.
    assert_eq!(store.event(4).unwrap().unwrap().actor, "mallory");
    let report = store.verify().unwrap();
    assert_eq!(report.first_bad_position, Some(4));
    assert_eq!(report.detail.as_deref(), Some("hash chain broken"));
}

#[test]
fn a_missing_record_is_a_gap() {
    let (_dir, store) = damaged_store(Damage::Delete, 2);
    assert_eq!(store.verify().unwrap().first_bad_position, Some(2));
    assert!(matches!(store.read_log(0, 10), Err(StoreError::Corrupt { position: 2, .. })));
}

#[test]
fn a_damaged_last_record_refuses_appends_but_not_reads() {
    let (_dir, store) = damaged_store(Damage::FlipBit, 5);
    assert!(matches!(
        store.append(AppendRequest { events: vec![event("x", 1)], ..Default::default() }),
        Err(StoreError::Poisoned(_))
    ));
    assert_eq!(store.verify().unwrap().first_bad_position, Some(5));
    assert_eq!(store.read_log(0, 4).unwrap().len(), 4);
    assert!(matches!(store.event(5), Err(StoreError::Corrupt { position: 5, .. })));
}

/// Stream heads are rebuilt from the log whatever state their snapshot is in.
#[test]
fn stream_heads_survive_a_missing_stale_or_garbage_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("heads.snapshot");
    {
        let store = open(dir.path());
        append(&store, vec![event("member/a", 1), event("member/b", 2)]);
    }
    let stale = std::fs::read(&snapshot).expect("a clean close writes a snapshot");
    {
        let store = open(dir.path());
        append(&store, vec![event("member/a", 3), event("member/c", 4)]);
    }
    let check = |what: &str| {
        let store = open(dir.path());
        assert_eq!(store.stream_version("member/a").unwrap(), 2, "{what}");
        assert_eq!(store.stream_version("member/c").unwrap(), 1, "{what}");
        let versions: Vec<u64> =
            store.read_stream("member/a", 1, 10).unwrap().iter().map(|e| e.position).collect();
        assert_eq!(versions, vec![1, 3], "{what}");
        let next = append(&store, vec![event("member/a", 5)]);
        assert_eq!(next[0].version, 3, "{what}");
    };
    std::fs::write(&snapshot, &stale).unwrap();
    check("stale snapshot");
    std::fs::write(&snapshot, b"FBHEADS1 not really").unwrap();
    let store = open(dir.path());
    assert_eq!(store.stream_version("member/a").unwrap(), 3, "garbage snapshot");
    drop(store);
    std::fs::remove_file(&snapshot).unwrap();
    let store = open(dir.path());
    assert_eq!(store.stream_version("member/a").unwrap(), 3, "no snapshot");
    assert!(store.verify().unwrap().ok);
}

#[test]
fn many_events_span_chunks_and_read_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let events: Vec<NewEvent> =
        (0..1_000).map(|n| event(if n % 3 == 0 { "member/x" } else { "member/y" }, n)).collect();
    let written = append(&store, events);
    assert_eq!(store.read_log(0, 10_000).unwrap(), written);
    assert_eq!(store.read_log(500, 7).unwrap(), written[500..507].to_vec());
    let x: Vec<Envelope> = written.iter().filter(|e| e.stream == "member/x").cloned().collect();
    assert_eq!(store.read_stream("member/x", 1, 10_000).unwrap(), x);
    assert_eq!(store.read_stream("member/x", 300, 5).unwrap(), x[299..304].to_vec());
    assert_eq!(store.event(777).unwrap().unwrap(), written[776]);
    let report = store.verify().unwrap();
    assert_eq!((report.ok, report.checked), (true, 1_000));
}

#[test]
fn a_tail_catches_up_then_follows_live_without_gap_or_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()));
    for n in 0..50 {
        append(&store, vec![event("member/t", n)]);
    }
    let writer = {
        let store = Arc::clone(&store);
        std::thread::spawn(move || {
            for n in 50..250 {
                append(&store, vec![event("member/t", n), event("member/u", n)]);
            }
        })
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let seen = runtime.block_on(async {
        let mut tail = store.tail(10);
        let mut seen = Vec::new();
        while seen.len() < 40 + 400 {
            let batch = tokio::time::timeout(std::time::Duration::from_secs(10), tail.next_batch(7))
                .await
                .expect("the tail stalled")
                .unwrap();
            assert!(!batch.is_empty() && batch.len() <= 7);
            seen.extend(batch.into_iter().map(|e| e.position));
        }
        seen
    });
    writer.join().unwrap();
    assert_eq!(seen, (11..=450).collect::<Vec<u64>>());
}
