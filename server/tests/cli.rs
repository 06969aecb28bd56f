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
}
