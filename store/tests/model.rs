//! Model-based property test: random sequences of appends (with expected versions that may be
//! wrong, idempotent replays and reused keys, multi-stream batches), reads and restarts, run
//! against the real store and against a plain in-memory model. Every answer must agree.

use std::collections::HashMap;

use chrono::DateTime;
use flowbook_store::{AppendRequest, Appended, IdempotencyKey, NewEvent, Store, StoreError, StoreOptions};
use proptest::prelude::*;
use serde_json::value::RawValue;
use uuid::Uuid;

const STREAMS: [&str; 4] = ["member/a", "member/b", "branch/c", "member/d"];

#[derive(Debug, Clone)]
enum Op {
    Append { streams: Vec<usize>, expect: Option<(usize, i64)>, key: Option<(u8, u8)> },
    ReadStream { stream: usize, from_version: u64 },
    ReadLog { after: u64, limit: usize },
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (
            prop::collection::vec(0..STREAMS.len(), 1..5),
            prop::option::of((0..STREAMS.len(), -1i64..=1)),
            prop::option::of((0u8..3, 0u8..2)),
        )
            .prop_map(|(streams, expect, key)| Op::Append { streams, expect, key }),
        2 => (0..STREAMS.len(), 0u64..5).prop_map(|(stream, from_version)| Op::ReadStream { stream, from_version }),
        2 => (0u64..25, 1usize..12).prop_map(|(after, limit)| Op::ReadLog { after, limit }),
        1 => Just(Op::Restart),
    ]
}

/// What the model remembers of one event.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    position: u64,
    stream: String,
    version: u64,
    data: String,
}

#[derive(Default)]
struct Model {
    events: Vec<Seen>,
    heads: HashMap<String, u64>,
    keys: HashMap<u8, (u8, u64, usize)>,
}

#[derive(Debug, PartialEq)]
enum Outcome {
    Written(Vec<Seen>),
    Replayed(Vec<Seen>),
    Conflict,
    KeyReused,
}

impl Model {
    fn append(
        &mut self,
        request: &[(String, String)],
        expect: Option<(String, u64)>,
        key: Option<(u8, u8)>,
    ) -> Outcome {
        if let Some((key, fingerprint)) = key {
            if let Some((seen_fingerprint, first, count)) = self.keys.get(&key) {
                if *seen_fingerprint != fingerprint {
                    return Outcome::KeyReused;
                }
                let first = (*first - 1) as usize;
                return Outcome::Replayed(self.events[first..first + count].to_vec());
            }
        }
        if let Some((stream, version)) = expect {
            if self.heads.get(&stream).copied().unwrap_or(0) != version {
                return Outcome::Conflict;
            }
        }
        let first = self.events.len() as u64 + 1;
        let mut written = Vec::new();
        for (stream, data) in request {
            let version = self.heads.entry(stream.clone()).or_insert(0);
            *version += 1;
            let seen = Seen {
                position: self.events.len() as u64 + 1,
                stream: stream.clone(),
                version: *version,
                data: data.clone(),
            };
            self.events.push(seen.clone());
            written.push(seen);
        }
        if let Some((key, fingerprint)) = key {
            self.keys.insert(key, (fingerprint, first, request.len()));
        }
        Outcome::Written(written)
    }
}

fn seen(envelopes: &[flowbook_store::Envelope]) -> Vec<Seen> {
    envelopes
        .iter()
        .map(|e| Seen {
            position: e.position,
            stream: e.stream.clone(),
            version: e.version,
            data: e.data.get().into(),
        })
        .collect()
}

fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Some(Store::open(dir.path(), StoreOptions::default()).unwrap());
    let mut model = Model::default();
    for (step, op) in ops.into_iter().enumerate() {
        let live = store.as_ref().unwrap();
        match op {
            Op::Append { streams, expect, key } => {
                let request: Vec<(String, String)> = streams
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (STREAMS[*s].to_string(), format!(r#"{{"step":{step},"i":{i}}}"#)))
                    .collect();
                let expect = expect.map(|(s, offset)| {
                    let head = model.heads.get(STREAMS[s]).copied().unwrap_or(0) as i64;
                    (STREAMS[s].to_string(), (head + offset).max(0) as u64)
                });
                let wanted = model.append(&request, expect.clone(), key);
                let events = request
                    .iter()
                    .map(|(stream, data)| NewEvent {
                        event_id: Uuid::now_v7(),
                        stream: stream.clone(),
                        event_type: "test".into(),
                        effective_at: DateTime::from_timestamp(1_790_000_000, 0).unwrap(),
                        actor: "model".into(),
                        data: RawValue::from_string(data.clone()).unwrap(),
                    })
                    .collect();
                let request = AppendRequest {
                    events,
                    expected_versions: expect.into_iter().collect(),
                    idempotency: key
                        .map(|(k, f)| IdempotencyKey { key: format!("k{k}"), fingerprint: [f; 32] }),
                };
                let got = match live.append(request) {
                    Ok(Appended::Written(events)) => Outcome::Written(seen(&events)),
                    Ok(Appended::Replayed(events)) => Outcome::Replayed(seen(&events)),
                    Err(StoreError::VersionConflict { .. }) => Outcome::Conflict,
                    Err(StoreError::IdempotencyKeyReused) => Outcome::KeyReused,
                    Err(other) => panic!("step {step}: unexpected error {other}"),
                };
                assert_eq!(got, wanted, "step {step}");
            }
            Op::ReadStream { stream, from_version } => {
                let got = seen(&live.read_stream(STREAMS[stream], from_version, 100).unwrap());
                let wanted: Vec<Seen> = model
                    .events
                    .iter()
                    .filter(|e| e.stream == STREAMS[stream] && e.version >= from_version.max(1))
                    .cloned()
                    .collect();
                assert_eq!(got, wanted, "step {step}");
                let head = model.heads.get(STREAMS[stream]).copied().unwrap_or(0);
                assert_eq!(live.stream_version(STREAMS[stream]).unwrap(), head, "step {step}");
            }
            Op::ReadLog { after, limit } => {
                let got = seen(&live.read_log(after, limit).unwrap());
                let wanted: Vec<Seen> =
                    model.events.iter().filter(|e| e.position > after).take(limit).cloned().collect();
                assert_eq!(got, wanted, "step {step}");
            }
            Op::Restart => {
                drop(store.take());
                store = Some(Store::open(dir.path(), StoreOptions::default()).unwrap());
            }
        }
    }
    let live = store.as_ref().unwrap();
    assert_eq!(live.head(), model.events.len() as u64);
    let report = live.verify().unwrap();
    assert!(report.ok && report.checked == model.events.len() as u64, "{report:?}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn the_store_behaves_like_the_model(ops in prop::collection::vec(op(), 1..40)) {
        run(ops);
    }
}
