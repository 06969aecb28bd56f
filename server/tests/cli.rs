//! The `flowbook` binary's command line, driven as a user would.

use std::process::Command;

use chrono::Utc;
use flowbook_store::testing::{damage_record, Damage};
use flowbook_store::{AppendRequest, NewEvent, Store, StoreOptions};
use serde_json::value::RawValue;

fn flowbook(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_flowbook")).args(args).output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn store_with_events(dir: &std::path::Path, count: u64) {
    let store = Store::open(dir, StoreOptions::default()).unwrap();
    for n in 0..count {
        let event = NewEvent {
            event_id: uuid::Uuid::now_v7(),
            stream: format!("member/{n}"),
            event_type: "member_verified".into(),
            effective_at: Utc::now(),
            actor: "alice".into(),
            data: RawValue::from_string(format!(r#"{{"n":{n}}}"#)).unwrap(),
        };
        store.append(AppendRequest { events: vec![event], ..Default::default() }).unwrap();
    }
}

#[test]
fn verify_says_ok_for_a_sound_store() {
    let dir = tempfile::tempdir().unwrap();
    store_with_events(dir.path(), 3);
    let (code, out, _) = flowbook(&["verify", "--data", dir.path().to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(out.contains("3 events checked"), "{out}");
}

#[test]
fn verify_names_the_first_bad_position_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    store_with_events(dir.path(), 4);
    damage_record(dir.path(), 3, Damage::FlipBit).unwrap();
    let (code, out, _) = flowbook(&["verify", "--data", dir.path().to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("first bad position 3"), "{out}");
}

#[test]
fn verify_exits_2_when_it_cannot_check() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing-here");
    let (code, _, err) = flowbook(&["verify", "--data", missing.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert_eq!(err.lines().count(), 1, "one clear line: {err}");
    assert!(!missing.exists(), "verify must not create a store");
    // A store held open by another process is locked.
    store_with_events(dir.path(), 1);
    let _held = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let (code, _, err) = flowbook(&["verify", "--data", dir.path().to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn bad_arguments_are_refused_without_a_panic() {
    let (code, _, err) = flowbook(&["verify", "--nonsense"]);
    assert_eq!(code, 2);
    assert!(!err.contains("panicked"), "{err}");
    for cache in ["0", "65537", "lots"] {
        let (code, _, err) = flowbook(&["serve", "--cache-mib", cache]);
        assert_eq!(code, 2, "--cache-mib {cache}");
        assert!(err.contains("--cache-mib") && !err.contains("panicked"), "{err}");
    }
}

#[test]
fn rebuild_reports_what_it_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let store = Store::open(&data, StoreOptions::default()).unwrap();
    let branch = flowbook_core::BranchId(uuid::Uuid::from_u128(1));
    let event = flowbook_core::NewEvent {
        stream: flowbook_core::StreamId::Branch(branch),
        effective_at: Utc::now(),
        data: flowbook_core::EventData::BranchEstablished {
            branch_id: branch,
            name: "一支部".into(),
            kind: flowbook_core::BranchKind::Branch,
            parent_id: None,
            region: "东城区".into(),
            organizations: vec![],
        },
    };
    let request = AppendRequest {
        events: vec![flowbook_projections::codec::to_store(&event, "admin", uuid::Uuid::now_v7())],
        ..Default::default()
    };
    store.append(request).unwrap();
    drop(store);
    let (code, out, err) = flowbook(&["rebuild", "--data", data.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("rebuilt 1 events") && out.contains("1 branches, 0 members"), "{out}");
    assert!(err.contains("rebuild: 1 of 1 events (100 %)"), "{err}");
    let (code, _, err) = flowbook(&["rebuild", "--data", dir.path().join("none").to_str().unwrap()]);
    assert_eq!((code, err.lines().count()), (2, 1));
}

#[test]
fn import_reads_a_file_and_reports_rejected_lines() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("district.ndjson");
    let b1 = "00000000-0000-0000-0000-0000000000b1";
    let lines = [
        format!(
            r#"{{"op":"branches","body":{{"branch_id":"{b1}","name":"一支部","kind":"branch","region":"东城区","effective_at":"2020-01-01"}}}}"#
        ),
        format!(r#"{{"op":"members","body":{{"name":"张三","branch_id":"{b1}","status":"full"}}}}"#),
        r#"{"op":"members","body":{"name":"","branch_id":"x","status":"full"}}"#.to_owned(),
    ];
    std::fs::write(&file, lines.join("\n")).unwrap();
    let data = dir.path().join("data");
    let (code, out, err) = flowbook(&["import", file.to_str().unwrap(), "--data", data.to_str().unwrap()]);
    assert_eq!(code, 1, "a rejected line makes the exit code 1: {out} {err}");
    assert!(out.contains("imported 2 lines, rejected 1"), "{out}");
    assert!(err.contains("line 3: malformed"), "{err}");
    assert!(err.contains("import: 3 of 3 lines (100 %)"), "plain progress lines off a terminal: {err}");
    let (code, out, _) = flowbook(&["verify", "--data", data.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(out.contains("2 events checked"), "{out}");
}

#[test]
fn export_writes_ndjson_events_and_csv_reports_with_a_bom() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("district.ndjson");
    let (b1, m1) = ("00000000-0000-0000-0000-0000000000b1", "00000000-0000-0000-0000-0000000000a1");
    let lines = [
        format!(
            r#"{{"op":"branches","body":{{"branch_id":"{b1}","name":"城东, 联合支部","kind":"joint_branch","region":"东城区","effective_at":"2020-01-01"}}}}"#
        ),
        format!(
            r#"{{"op":"members","body":{{"member_id":"{m1}","name":"张三","branch_id":"{b1}","status":"full","effective_at":"2020-02-01"}}}}"#
        ),
        format!(
            r#"{{"op":"members/{m1}/departures","body":{{"destination_region":"广东省深圳市","certificate_no":"流001"}}}}"#
        ),
    ];
    std::fs::write(&file, lines.join("\n")).unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    assert_eq!(flowbook(&["import", file.to_str().unwrap(), "--data", data]).0, 0);

    let (code, out, _) = flowbook(&["export", "--data", data]);
    assert_eq!(code, 0);
    let events: Vec<&str> = out.lines().collect();
    assert_eq!(events.len(), 3);
    assert!(events[1].contains(r#""type":"member_registered""#) && events[1].contains("张三"));

    let (code, out, _) = flowbook(&[
        "export",
        "--data",
        data,
        "--format",
        "csv",
        "--report",
        "roster",
        "--branch",
        b1,
        "--as-of",
        "2020-03-01",
    ]);
    assert_eq!(code, 0);
    assert!(out.starts_with('\u{feff}'), "a UTF-8 byte-order mark first");
    assert_eq!(
        out.trim_start_matches('\u{feff}').lines().collect::<Vec<_>>(),
        ["member_id,name,status,relation,since", &format!("{m1},张三,full,home,2020-02-01T00:00:00Z"),]
    );
    let (_, ledger, _) = flowbook(&["export", "--data", data, "--format", "csv", "--report", "ledger"]);
    let ledger: Vec<&str> = ledger.trim_start_matches('\u{feff}').lines().collect();
    assert!(ledger[1].starts_with(&format!("{m1},张三,\"城东, 联合支部\",广东省深圳市,")), "{ledger:?}");
    assert!(ledger[1].contains(",流001,"), "{ledger:?}");
    let (code, _, err) = flowbook(&["export", "--data", data, "--format", "csv"]);
    assert_eq!((code, err.lines().count()), (2, 1), "{err}");
}

/// The story of a demo log: every event's stream, type, data, effective time and actor (the
/// ids of the events and the times they were recorded differ from run to run).
fn demo_story(dir: &std::path::Path, seed: &str) -> Vec<serde_json::Value> {
    let data = dir.to_str().unwrap();
    let (code, out, err) =
        flowbook(&["demo", "--data", data, "--seed", seed, "--members", "1500", "--end", "2026-06-30"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("0 refused"), "the rules accept every write of the story: {out}{err}");
    let (code, ndjson, err) = flowbook(&["export", "--data", data]);
    assert_eq!(code, 0, "{err}");
    ndjson
        .lines()
        .map(|line| {
            let event: serde_json::Value = serde_json::from_str(line).unwrap();
            serde_json::json!([
                event["stream"],
                event["type"],
                event["data"],
                event["effective_at"],
                event["actor"]
            ])
        })
        .collect()
}

#[test]
fn demo_writes_a_whole_district_the_same_way_for_the_same_seed() {
    let (first, second, other) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let story = demo_story(first.path(), "7");
    assert_eq!(story, demo_story(second.path(), "7"), "same seed, same story");
    assert_ne!(story, demo_story(other.path(), "8"), "another seed, another story");

    let count = |kind: &str| story.iter().filter(|event| event[1] == kind).count();
    assert_eq!(count("branch_established"), 200);
    for kind in [
        "member_registered",
        "member_verified",
        "transfer_initiated",
        "transfer_completed",
        "transfer_cancelled",
        "transfer_expired",
        "member_departed",
        "member_arrived",
        "member_returned",
        "pocket_member_discovered",
        "pocket_member_placed",
        "contact_lost",
        "contact_restored",
        "status_changed",
        "event_retracted",
        "branch_reclassified",
    ] {
        assert!(count(kind) > 0, "the story has {kind}: {:?}", story.len());
    }
    assert!(count("member_registered") >= 1_400, "about the members asked for");
    let kinds: std::collections::HashSet<&str> =
        story.iter().filter(|e| e[1] == "branch_established").filter_map(|e| e[2]["kind"].as_str()).collect();
    assert_eq!(kinds.len(), 4, "committees, general, joint and plain branches: {kinds:?}");
    assert!(story.iter().any(|e| e[1] == "transfer_completed" && e[2]["to_external"].is_string()));
    let sources: std::collections::HashSet<&str> =
        story.iter().filter_map(|e| e[2]["source"].as_str()).collect();
    assert_eq!(sources.len(), 3, "discovered by expired letter, survey and self-declaration: {sources:?}");
    let name = story.iter().find(|e| e[1] == "member_registered").unwrap()[2]["name"].as_str().unwrap();
    assert!(name.chars().all(|c| ('\u{4e00}'..='\u{9fff}').contains(&c)), "a Chinese name: {name}");
    let effective: Vec<&str> = story.iter().filter_map(|e| e[3].as_str()).collect();
    assert!(effective.iter().any(|at| at.starts_with("2024-07")), "two years of history");
    assert!(effective.iter().all(|at| *at <= "2026-07-01"), "nothing after the end");

    let data = first.path().to_str().unwrap();
    let (code, out, _) = flowbook(&["verify", "--data", data]);
    assert_eq!(code, 0, "{out}");
    let (code, _, err) = flowbook(&["demo", "--data", data]);
    assert_eq!((code, err.lines().count()), (2, 1), "a second demo into the same store is refused: {err}");
    assert!(err.contains("empty"), "{err}");
    let (code, _, err) = flowbook(&["demo", "--data", data, "--end", "2999-01-01"]);
    assert_eq!((code, err.lines().count()), (2, 1), "{err}");
}

/// `flowbook bench` at its smallest: 300 members, 8 clients, 0.3 s a workload, 2 rounds, its
/// report written to `report`; `extra` flags after those.
fn seconds_long_bench(
    scratch: &std::path::Path,
    report: &std::path::Path,
    extra: &[&str],
) -> (i32, String, String) {
    let mut args = vec![
        "bench",
        "--dir",
        scratch.to_str().unwrap(),
        "--members",
        "300",
        "--clients",
        "8",
        "--seconds",
        "0.3",
        "--rounds",
        "2",
        "--json",
        report.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    flowbook(&args)
}

#[test]
fn bench_runs_every_workload_in_seconds_and_writes_its_report() {
    let dir = tempfile::tempdir().unwrap();
    let (scratch, report) = (dir.path().join("scratch"), dir.path().join("report.json"));
    let (code, out, err) = seconds_long_bench(&scratch, &report, &["--in-flight", "3"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("| timed workloads | 2 rounds; their medians below |"), "{out}");
    assert!(out.contains("| batched append, 4 appenders |") && out.contains("| rebuild |"), "{out}");
    assert!(out.contains("| batched append, 1 appender, 3 transactions in flight |"), "{out}");
    assert!(!scratch.exists(), "the scratch directory is removed");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    for figure in [
        "build_events_per_s",
        "append_batched_1_per_s",
        "append_pipelined_1_per_s",
        "append_batched_4_per_s",
        "physical_bound_per_s",
        "sled_alone_per_s",
        "rebuild_events_per_s",
        "disk_bytes_per_event",
        "peak_memory_mib",
    ] {
        assert!(report[figure].as_f64().unwrap() > 0.0, "{figure} was measured: {report}");
    }
    for part in [
        "sled_commit_ms",
        "sled_insert_ms",
        "sled_flush_ms",
        "render_ms",
        "stamp_ms",
        "seal_ms",
        "sealed_bytes_per_event",
    ] {
        assert!(report["commit_parts"][part].as_f64().unwrap() > 0.0, "{part} was measured: {report}");
    }
    assert!(out.contains("| sled alone ("), "{out}");
    assert!(out.contains("| a waiting commit, stage by stage ("), "{out}");
    let stages = &report["waiting_commit_stages"];
    assert!(stages["commits"].as_u64().unwrap() > 0, "the waiting commits were timed: {report}");
    let micros = stages["micros"].as_array().unwrap();
    assert_eq!(micros.len(), flowbook_store::COMMIT_STAGES.len(), "{stages}");
    assert!(micros.iter().all(|m| m.as_f64().unwrap() >= 0.0), "{stages}");
    assert!(micros.iter().map(|m| m.as_f64().unwrap()).sum::<f64>() > 0.0, "{stages}");
    assert!(report["http_flat_out"]["per_s"].as_f64().unwrap() > 0.0);
    assert!(report["history"]["samples"].as_u64().unwrap() > 0);
    assert_eq!(report["append_in_flight"], 3, "--in-flight is the pipelined appender's window");
    assert!(report["postgres"].is_null(), "no PostgreSQL unless asked");
    let rounds = report["rounds"].as_array().expect("the rounds are listed");
    assert_eq!(rounds.len(), 2, "{report}");
    let mut batched: Vec<f64> =
        rounds.iter().map(|r| r["append_batched_1_per_s"].as_f64().unwrap()).collect();
    for round in rounds {
        for figure in [
            "append_batched_1_per_s",
            "append_pipelined_1_per_s",
            "append_batched_4_per_s",
            "physical_bound_per_s",
            "sled_alone_per_s",
            "http_flat_out_per_s",
        ] {
            assert!(round[figure].as_f64().unwrap() > 0.0, "{figure} in each round: {round}");
        }
        assert!(round["postgres_batched_1_per_s"].is_null(), "{round}");
        assert!(round["waiting_commit_stages"]["commits"].as_u64().unwrap() > 0, "{round}");
    }
    batched.sort_by(f64::total_cmp);
    let reported = report["append_batched_1_per_s"].as_f64().unwrap();
    assert!((reported - (batched[0] + batched[1]) / 2.0).abs() < 1e-6, "the figure is the rounds' median");

    let busy = dir.path().join("busy");
    std::fs::create_dir_all(busy.join("something")).unwrap();
    let (code, _, err) = flowbook(&["bench", "--dir", busy.to_str().unwrap()]);
    assert_eq!((code, err.lines().count()), (2, 1), "a non-empty scratch directory is refused: {err}");
    let (code, _, err) = flowbook(&["bench", "--dir", scratch.to_str().unwrap(), "--in-flight", "1"]);
    assert_eq!(code, 2, "a window of one is the waiting appender, not a pipeline: {err}");
    assert!(!scratch.exists(), "a refused bench makes nothing");
    let (code, _, err) = flowbook(&[
        "bench",
        "--dir",
        scratch.to_str().unwrap(),
        "--postgres",
        "host=127.0.0.1 port=1 user=nobody",
        "--members",
        "64",
        "--seconds",
        "0.1",
        "--clients",
        "2",
    ]);
    assert_eq!(code, 1, "an unreachable PostgreSQL is one clear failure: {err}");
    assert!(err.contains("cannot connect to PostgreSQL"), "{err}");
}

/// The comparison with PostgreSQL, seconds long: every peer workload runs and lands in the
/// report and the table. Needs a PostgreSQL server: `.ci/run` runs it inside
/// `scripts/with-postgres.sh`, which starts a throwaway one and sets `FLOWBOOK_POSTGRES`.
#[test]
#[ignore = "needs a PostgreSQL server: scripts/with-postgres.sh cargo test -p flowbook-server --test cli -- --ignored"]
fn bench_runs_the_postgres_peer_beside_flowbook() {
    let url = std::env::var("FLOWBOOK_POSTGRES")
        .expect("FLOWBOOK_POSTGRES names the server (scripts/with-postgres.sh)");
    let dir = tempfile::tempdir().unwrap();
    let (scratch, report) = (dir.path().join("scratch"), dir.path().join("report.json"));
    let (code, out, err) = seconds_long_bench(&scratch, &report, &["--postgres", &url]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("| batched append, 1 client, 4 transactions in flight (events/s) |"), "{out}");
    assert!(out.contains("| single-event commits vs HTTP commands, 8 clients (/s) |"), "{out}");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let peer = &report["postgres"];
    assert_eq!(peer["synchronous_commit"], "on", "{peer}");
    for figure in [
        "append_batched_1_per_s",
        "append_pipelined_1_per_s",
        "append_batched_4_per_s",
        "disk_bytes_per_event",
    ] {
        assert!(peer[figure].as_f64().unwrap() > 0.0, "{figure} was measured: {peer}");
    }
    assert!(peer["single_commits"]["per_s"].as_f64().unwrap() > 0.0, "{peer}");
    assert!(peer["history"]["samples"].as_u64().unwrap() > 0, "{peer}");
    for round in report["rounds"].as_array().expect("the rounds are listed") {
        for figure in [
            "postgres_batched_1_per_s",
            "postgres_pipelined_1_per_s",
            "postgres_batched_4_per_s",
            "postgres_single_commits_per_s",
        ] {
            assert!(round[figure].as_f64().unwrap() > 0.0, "{figure} in each round: {round}");
        }
    }
}
