//! The HTTP API end to end against the real binary on a free port: a five-minute tour of writes
//! and reads, error shapes, idempotency, and persistence across a restart.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::{dechunk, raw, Server};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

fn error_code(answer: &(u16, Value)) -> (u16, &str) {
    (answer.0, answer.1["error"]["code"].as_str().unwrap_or("<no error code>"))
}

#[test]
fn the_tour_register_transfer_history_roster_as_of_and_flows() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let founded = json!({"name": "城东社区联合党支部", "kind": "joint_branch", "region": "东城区",
        "organizations": ["甲公司", "乙协会"], "effective_at": "2015-07-01"});
    let (status, east) = server.post("/v1/branches", founded);
    assert_eq!(status, 201, "{east}");
    let east = east["branch_id"].as_str().unwrap().to_owned();
    let (_, west) = server.post(
        "/v1/branches",
        json!({"name": "科技园第二支部", "kind": "branch", "region": "西城区", "effective_at": "2016-01-01"}),
    );
    let west = west["branch_id"].as_str().unwrap().to_owned();

    let (status, registered) = server.post(
        "/v1/members",
        json!({"name": "张三", "branch_id": east, "status": "full", "effective_at": "2020-03-01"}),
    );
    assert_eq!(status, 201, "{registered}");
    let member = registered["member_id"].as_str().unwrap().to_owned();
    assert_eq!(registered["events"][0]["type"], "member_registered");
    assert_eq!(registered["events"][0]["actor"], "local");
    assert_eq!(registered["events"][0]["hash"].as_str().unwrap().len(), 64);

    let (status, letter) =
        server.post(&format!("/v1/members/{member}/transfers"), json!({"to_branch_id": west}));
    assert_eq!(status, 201, "{letter}");
    let transfer = letter["transfer_id"].as_str().unwrap().to_owned();
    let (_, open) = server.get("/v1/transfers?state=open");
    assert_eq!(open["transfers"][0]["transfer_id"], transfer.as_str());
    let (status, done) = server.post(&format!("/v1/transfers/{transfer}/complete"), json!({}));
    assert_eq!(status, 201, "{done}");

    let (_, view) = server.get(&format!("/v1/members/{member}"));
    assert_eq!(view["branch_id"], west.as_str());
    let (_, then) = server.get(&format!("/v1/members/{member}?as_of=2021-01-01"));
    assert_eq!(then["branch_id"], east.as_str(), "as of 2021 the member was still in the east branch");
    let (_, history) = server.get(&format!("/v1/members/{member}/history"));
    let types: Vec<&str> =
        history["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["member_registered", "transfer_initiated", "transfer_completed"]);

    let (_, roster) = server.get(&format!("/v1/branches/{east}/roster?as_of=2021-01-01"));
    assert_eq!(roster["members"][0]["name"], "张三");
    assert_eq!(roster["members"][0]["relation"], "home");
    let (_, roster_now) = server.get(&format!("/v1/branches/{east}/roster"));
    assert_eq!(roster_now["members"], json!([]));

    let (_, flows) = server.get("/v1/stats/flows?from=2020-01-01&to=2100-01-01&by=region");
    let matrix = flows["matrix"].as_array().unwrap();
    assert_eq!(matrix[0], json!({"from": "东城区", "to": "西城区", "count": 1}));
    let (_, search) = server.get(&format!("/v1/members?q={}", "%E5%BC%A0"));
    assert_eq!(search["members"][0]["member_id"], member.as_str());
    let (_, audit) = server.get("/v1/audit/verify");
    assert_eq!(audit, json!({"ok": true, "checked": 5, "first_bad_position": null}));
}

#[test]
fn errors_answer_in_the_api_shape_and_append_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let (branch, member) = server.branch_and_member("李四");
    let (_, before) = server.get("/v1/events");
    let cases = [
        (server.call("POST", "/v1/members", None, &[]), (400, "malformed")),
        (
            server.post("/v1/members", json!({"name": "", "branch_id": branch, "status": "full"})),
            (400, "malformed"),
        ),
        (
            server.post("/v1/members", json!({"name": "x", "branch_id": "not-a-uuid", "status": "full"})),
            (400, "malformed"),
        ),
        (server.post("/v1/members/not-a-uuid/verify", json!({})), (400, "malformed")),
        (server.post(&format!("/v1/members/{}/verify", uuid_zero()), json!({})), (404, "not_found")),
        (
            server.post(&format!("/v1/members/{member}/transfers"), json!({"to_branch_id": branch})),
            (422, "same_branch"),
        ),
        (server.post(&format!("/v1/members/{member}/returns"), json!({})), (422, "not_mobile")),
        (
            server.post(
                &format!("/v1/members/{member}/contact"),
                json!({"lost": false, "expected_version": 7}),
            ),
            (409, "version_conflict"),
        ),
        (
            server.post(
                "/v1/members",
                json!({"name": "x", "branch_id": branch, "status": "full", "member_id": member}),
            ),
            (409, "already_exists"),
        ),
        (
            server.post(
                "/v1/members",
                json!({"name": "x", "branch_id": branch, "status": "full", "effective_at": "2999-01-01"}),
            ),
            (422, "effective_in_future"),
        ),
        (server.get("/v1/nowhere"), (404, "not_found")),
        (server.get("/v1/transfers?state=lost"), (400, "malformed")),
    ];
    for (answer, wanted) in &cases {
        assert_eq!(error_code(answer), *wanted, "{answer:?}");
        assert!(answer.1["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let big = "x".repeat(2 * 1024 * 1024);
    assert_eq!(error_code(&server.post("/v1/members", json!({"name": big}))), (413, "too_large"));
    let (_, after) = server.get("/v1/events");
    assert_eq!(before, after, "a refused request appends nothing");
}

#[test]
fn an_idempotency_key_replays_and_refuses_another_body() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let body = json!({"name": "一支部", "kind": "branch", "region": "东城区"});
    let first = server.call("POST", "/v1/branches", Some(&body), &[("Idempotency-Key", "k-1")]);
    let again = server.call("POST", "/v1/branches", Some(&body), &[("Idempotency-Key", "k-1")]);
    assert_eq!(first.0, 201);
    assert_eq!(first, again);
    let other = json!({"name": "二支部", "kind": "branch", "region": "东城区"});
    let reused = server.call("POST", "/v1/branches", Some(&other), &[("Idempotency-Key", "k-1")]);
    assert_eq!(error_code(&reused), (422, "idempotency_key_reused"));
    let (_, branches) = server.get("/v1/branches");
    assert_eq!(branches["branches"].as_array().unwrap().len(), 1);
}

/// Many clients repeating one keyed write at once: the repeats land in the same batch as the first
/// or in later ones, while it is being written or after. Every one must get the first's answer,
/// never be decided again (a branch with the same id would be refused as existing).
#[test]
fn repeats_of_a_keyed_write_racing_it_get_its_answer() {
    let dir = tempfile::tempdir().unwrap();
    let server = std::sync::Arc::new(Server::start(dir.path()));
    for round in 0..6 {
        let id = format!("0190f000-0000-7000-8000-{round:012}");
        let key = format!("same-{round}");
        let body =
            json!({"branch_id": id, "name": format!("支部{round}"), "kind": "branch", "region": "东城区"});
        let clients: Vec<_> = (0..24)
            .map(|client| {
                let (server, body, key) = (std::sync::Arc::clone(&server), body.clone(), key.clone());
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_micros(200 * (client % 8)));
                    server.call("POST", "/v1/branches", Some(&body), &[("Idempotency-Key", &key)])
                })
            })
            .collect();
        let answers: Vec<(u16, Value)> = clients.into_iter().map(|c| c.join().unwrap()).collect();
        for answer in &answers {
            assert_eq!(answer.0, 201, "round {round}: {answer:?}");
            assert_eq!(answer.1["events"], answers[0].1["events"], "round {round}");
        }
    }
    let (_, branches) = server.get("/v1/branches");
    assert_eq!(branches["branches"].as_array().unwrap().len(), 6);
}

#[test]
fn everything_is_there_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (branches, member) = {
        let server = Server::start(dir.path());
        let (_, b) = server.post(
            "/v1/branches",
            json!({"name": "一支部", "kind": "branch", "region": "东城区", "effective_at": "2020-01-01"}),
        );
        let b = b["branch_id"].as_str().unwrap().to_owned();
        let (_, m) =
            server.post("/v1/members", json!({"name": "王五", "branch_id": b, "status": "probationary"}));
        let m = m["member_id"].as_str().unwrap().to_owned();
        server.post(&format!("/v1/members/{m}/departures"), json!({"destination_region": "广东省"}));
        (server.get("/v1/branches").1, server.get(&format!("/v1/members/{m}")).1)
    };
    let server = Server::start(dir.path());
    assert_eq!(server.get("/v1/branches").1, branches);
    let id = member["member_id"].as_str().unwrap();
    assert_eq!(server.get(&format!("/v1/members/{id}")).1, member);
    assert_eq!(server.get("/v1/stats/mobile").1["total"], 1);
}

#[test]
fn local_mode_refuses_a_public_address() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_flowbook"))
        .args(["serve", "--data", dir.path().to_str().unwrap(), "--addr", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("loopback"));
}

fn uuid_zero() -> &'static str {
    "00000000-0000-0000-0000-000000000000"
}

/// `flowbook token add`; returns the token (the last line of its output).
fn add_token(auth: &std::path::Path, name: &str, role: &str, branches: &[&str]) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_flowbook"));
    command.args(["token", "add", "--auth", auth.to_str().unwrap(), "--name", name, "--role", role]);
    for branch in branches {
        command.args(["--branch", branch]);
    }
    let output = command.output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).unwrap();
    stdout.lines().last().unwrap().to_owned()
}

#[test]
fn tokens_roles_and_registrar_scopes() {
    let dir = tempfile::tempdir().unwrap();
    let auth = dir.path().join("auth.json");
    let (b1, b2) = ("00000000-0000-0000-0000-0000000000b1", "00000000-0000-0000-0000-0000000000b2");
    let admin = add_token(&auth, "admin", "admin", &[]);
    let registrar = add_token(&auth, "王书记", "registrar", &[b1]);
    let auditor = add_token(&auth, "auditor", "auditor", &[]);
    let stored = std::fs::read_to_string(&auth).unwrap();
    assert!(!stored.contains(&admin) && !stored.contains(&registrar), "only hashes are stored");

    let server = Server::start_with(&dir.path().join("data"), &["--auth", auth.to_str().unwrap()]);
    let bearer = |token: &str| format!("Bearer {token}");
    let as_ = |token: &str, method: &str, path: &str, body: Option<Value>| {
        server.call(method, path, body.as_ref(), &[("Authorization", &bearer(token))])
    };

    assert_eq!(error_code(&server.get("/v1/branches")), (401, "unauthenticated"));
    assert_eq!(error_code(&as_("not-a-token", "GET", "/v1/branches", None)), (401, "unauthenticated"));
    assert_eq!(server.get("/healthz").0, 200, "healthz needs no token");

    for (branch, name) in [(b1, "一支部"), (b2, "二支部")] {
        let body = json!({"branch_id": branch, "name": name, "kind": "branch", "region": "东城区", "effective_at": "2020-01-01"});
        assert_eq!(
            error_code(&as_(&registrar, "POST", "/v1/branches", Some(body.clone()))),
            (403, "forbidden")
        );
        assert_eq!(as_(&admin, "POST", "/v1/branches", Some(body)).0, 201);
    }
    assert_eq!(as_(&auditor, "GET", "/v1/branches", None).0, 200);
    let register = |branch: &str| json!({"name": "赵六", "branch_id": branch, "status": "full"});
    assert_eq!(error_code(&as_(&auditor, "POST", "/v1/members", Some(register(b1)))), (403, "forbidden"));
    assert_eq!(error_code(&as_(&registrar, "POST", "/v1/members", Some(register(b2)))), (403, "forbidden"));
    let (status, registered) = as_(&registrar, "POST", "/v1/members", Some(register(b1)));
    assert_eq!(status, 201, "{registered}");
    assert_eq!(registered["events"][0]["actor"], "王书记");
    let member = registered["member_id"].as_str().unwrap().to_owned();

    let verify = format!("/v1/members/{member}/verify");
    assert_eq!(error_code(&as_(&registrar, "POST", &verify, Some(json!({})))), (422, "same_actor"));
    assert_eq!(as_(&admin, "POST", &verify, Some(json!({}))).0, 201);
    as_(
        &registrar,
        "POST",
        &format!("/v1/members/{member}/departures"),
        Some(json!({"destination_region": "广东省"})),
    );
    let arrive = json!({"inflow_branch_id": b2});
    let arrival = as_(&registrar, "POST", &format!("/v1/members/{member}/arrivals"), Some(arrive));
    assert_eq!(error_code(&arrival), (403, "forbidden"), "an arrival is the inflow branch's to record");
    assert_eq!(
        error_code(&as_(&registrar, "POST", "/v1/sweeps/expiry", Some(json!({})))),
        (403, "forbidden")
    );
    assert_eq!(as_(&admin, "POST", "/v1/sweeps/expiry", Some(json!({}))).1, json!({"expired": 0}));
    let unknown = format!("/v1/members/{}/verify", uuid_zero());
    assert_eq!(error_code(&as_(&registrar, "POST", &unknown, Some(json!({})))), (404, "not_found"));
}

#[test]
fn the_event_stream_catches_up_then_follows_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    for n in 0..3 {
        server
            .post("/v1/branches", json!({"name": format!("支部{n}"), "kind": "branch", "region": "东城区"}));
    }
    let open_stream = |headers: &str| {
        let mut stream = TcpStream::connect(&server.addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let request = format!("GET /v1/events/stream?after=1 HTTP/1.1\r\nHost: x\r\n{headers}\r\n");
        stream.write_all(request.as_bytes()).unwrap();
        stream
    };
    // Reads until `count` more SSE ids have arrived; returns them.
    let read_ids = |stream: &mut TcpStream, count: usize| {
        let mut text = String::new();
        let mut buffer = [0u8; 4096];
        loop {
            let ids: Vec<u64> =
                text.lines().filter_map(|l| l.strip_prefix("id: ")).filter_map(|v| v.parse().ok()).collect();
            if ids.len() >= count {
                return ids;
            }
            let n = stream.read(&mut buffer).expect("the stream stalled");
            assert!(n > 0, "the stream ended: {text}");
            text.push_str(&String::from_utf8_lossy(&buffer[..n]));
        }
    };
    let mut stream = open_stream("");
    assert_eq!(read_ids(&mut stream, 2), vec![2, 3], "catch-up after position 1");
    server.post("/v1/branches", json!({"name": "新支部", "kind": "branch", "region": "西城区"}));
    assert_eq!(read_ids(&mut stream, 1), vec![4], "then live");
    let mut resumed = open_stream("Last-Event-ID: 3\r\n");
    assert_eq!(read_ids(&mut resumed, 1), vec![4], "Last-Event-ID wins over after");
}

#[test]
fn fuzzed_requests_never_get_a_5xx_and_only_accepted_writes_append() {
    let requests: u64 = std::env::var("FUZZ_REQUESTS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let seed = std::env::var("FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x5EED);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let (branch, member) = server.branch_and_member("张三");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let ids = [
        branch.as_str(),
        member.as_str(),
        "00000000-0000-0000-0000-000000000000",
        "not-a-uuid",
        "",
        "%00",
        "../..",
        "1",
        "99999999999999999999",
    ];
    let paths = [
        "/v1/branches",
        "/v1/branches/{id}",
        "/v1/branches/{id}/reclassify",
        "/v1/branches/{id}/dissolve",
        "/v1/branches/{id}/roster",
        "/v1/members",
        "/v1/members/{id}",
        "/v1/members/{id}/history",
        "/v1/members/{id}/verify",
        "/v1/members/{id}/transfers",
        "/v1/members/{id}/departures",
        "/v1/members/{id}/arrivals",
        "/v1/members/{id}/returns",
        "/v1/members/{id}/placement",
        "/v1/members/{id}/contact",
        "/v1/members/{id}/status",
        "/v1/transfers",
        "/v1/transfers/{id}/complete",
        "/v1/transfers/{id}/cancel",
        "/v1/pocket-members",
        "/v1/events",
        "/v1/events/{id}/retract",
        "/v1/sweeps/expiry",
        "/v1/stats/flows",
        "/v1/stats/mobile",
        "/v1/stats/pocket",
        "/healthz",
        "/v1/nope",
    ];
    let queries = [
        "",
        "?as_of=2021-01-01",
        "?known_at=garbage",
        "?from=2020-01-01&to=2030-01-01&by=region",
        "?state=open",
        "?limit=99999999&after=-1",
        "?q=%E5%BC%A0",
        "?as_of=",
    ];
    let fields = [
        "name",
        "branch_id",
        "status",
        "kind",
        "region",
        "to_branch_id",
        "to_external",
        "reason",
        "lost",
        "to",
        "source",
        "destination_region",
        "inflow_branch_id",
        "effective_at",
        "expected_version",
        "valid_until",
        "member_id",
        "successor_id",
    ];
    let values = [
        json!(null),
        json!(true),
        json!(-1),
        json!(1.5),
        json!(""),
        json!("full"),
        json!("probationary"),
        json!("branch"),
        json!("survey"),
        json!("2020-01-01"),
        json!("2999-01-01T00:00:00Z"),
        json!([1, 2]),
        json!({"a": 1}),
        json!("张三".repeat(70)),
        json!(branch),
        json!(member),
        json!(u64::MAX),
    ];
    let mut accepted_events = 0u64;
    let (_, before) = server.get("/v1/events?limit=10000");
    let before = before["events"].as_array().unwrap().len() as u64;
    for n in 0..requests {
        let method = *["GET", "POST", "POST", "POST", "PUT", "DELETE", "PATCH"].choose(&mut rng).unwrap();
        let id = *ids.choose(&mut rng).unwrap();
        let template = *paths.choose(&mut rng).unwrap();
        let query = *queries.choose(&mut rng).unwrap();
        let path = format!("{}{query}", template.replace("{id}", id));
        let body = match rng.random_range(0..6) {
            0 => String::new(),
            1 => "{not json".to_owned(),
            2 => String::from_utf8_lossy(
                &(0..rng.random_range(0..64)).map(|_| rng.random::<u8>()).collect::<Vec<u8>>(),
            )
            .into_owned(),
            _ => {
                let mut object = serde_json::Map::new();
                for _ in 0..rng.random_range(0..5) {
                    object.insert(
                        (*fields.choose(&mut rng).unwrap()).to_owned(),
                        values.choose(&mut rng).unwrap().clone(),
                    );
                }
                Value::Object(object).to_string()
            }
        };
        let mut headers = String::new();
        if rng.random_ratio(1, 4) {
            headers.push_str(&format!("Idempotency-Key: k{}\r\n", rng.random_range(0..8)));
        }
        if rng.random_ratio(1, 8) {
            headers.push_str("Authorization: Bearer nonsense\r\n");
        }
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\nContent-Type: application/json\r\n{headers}Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let (status, text) = raw(&server.addr, request.as_bytes());
        assert!(status < 500, "request {n} ({method} {path} {body:?}) got {status}: {text}");
        if status == 201 {
            let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
            let body = if text.to_ascii_lowercase().contains("transfer-encoding: chunked") {
                dechunk(body)
            } else {
                body.to_owned()
            };
            let answer: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            let replayed = headers.contains("Idempotency-Key")
                && answer["events"][0]["position"].as_u64().is_some_and(|p| p <= before + accepted_events);
            if !replayed {
                accepted_events += answer["events"].as_array().map_or(0, |e| e.len() as u64);
            }
        }
    }
    assert_eq!(server.get("/healthz").0, 200, "the server is still up");
    assert!(accepted_events > 0, "the fuzz should get some writes accepted, or the last check proves little");
    let (_, after) = server.get("/v1/events?limit=10000");
    assert_eq!(
        after["events"].as_array().unwrap().len() as u64,
        before + accepted_events,
        "only accepted writes appended"
    );
    assert!(server.get("/v1/audit/verify").1["ok"].as_bool().unwrap());
}

/// Posts NDJSON lines to `/v1/import` (raw: the test client speaks JSON) and answers its report.
fn import(server: &Server, lines: &[String]) -> Value {
    let body = lines.join("\n");
    let request = format!(
        "POST /v1/import HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (status, text) = raw(&server.addr, request.as_bytes());
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(text.split_once("\r\n\r\n").unwrap().1).unwrap()
}

#[test]
fn an_import_runs_each_line_on_its_own_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let (b1, b2, m1) = (
        "00000000-0000-0000-0000-0000000000b1",
        "00000000-0000-0000-0000-0000000000b2",
        "00000000-0000-0000-0000-0000000000a1",
    );
    let lines = [
        json!({"op": "branches", "body": {"branch_id": b1, "name": "一支部", "kind": "branch", "region": "东城区", "effective_at": "2020-01-01"}}).to_string(),
        json!({"op": "branches", "body": {"branch_id": b2, "name": "二支部", "kind": "branch", "region": "西城区", "effective_at": "2020-01-01"}}).to_string(),
        json!({"op": "members", "body": {"member_id": m1, "name": "张三", "branch_id": b1, "status": "full"}}).to_string(),
        "{not json".to_owned(),
        json!({"op": format!("members/{m1}/transfers"), "body": {"to_branch_id": b1}}).to_string(),
        String::new(),
        json!({"op": format!("members/{m1}/departures"), "body": {"destination_region": "广东省"}}).to_string(),
        json!({"op": "nowhere", "body": {}}).to_string(),
        json!({"op": "sweeps/expiry", "body": {}}).to_string(),
    ];
    let answer = import(&server, &lines);
    assert_eq!(answer["accepted"], 4, "{answer}");
    let rejected: Vec<(u64, String)> = answer["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["line"].as_u64().unwrap(), r["error"]["code"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(
        rejected,
        vec![
            (4, "malformed".into()),
            (5, "same_branch".into()),
            (8, "not_found".into()),
            (9, "malformed".into())
        ]
    );
    let (_, member) = server.get(&format!("/v1/members/{m1}"));
    assert_eq!(member["mobile"]["destination_region"], "广东省", "line 7 ran after line 3");
}

#[test]
fn a_sweep_of_more_letters_than_one_step_expires_them_all() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let (b1, b2) = ("00000000-0000-0000-0000-0000000000b1", "00000000-0000-0000-0000-0000000000b2");
    // Far more letters than the log queues appends (4,096): as one batch of an append a letter,
    // the sweep outran the log's writer and failed `busy` (it did here, and on the 10 M-event
    // log). In the processor's steps of 500 letters it runs 25.
    let letters = 12_001;
    let mut lines = vec![
        json!({"op": "branches", "body": {"branch_id": b1, "name": "一支部", "kind": "branch", "region": "东城区", "effective_at": "2020-01-01"}}).to_string(),
        json!({"op": "branches", "body": {"branch_id": b2, "name": "二支部", "kind": "branch", "region": "西城区", "effective_at": "2020-01-01"}}).to_string(),
    ];
    for n in 0..letters {
        let member = format!("00000000-0000-0000-0000-{n:012}");
        lines.push(json!({"op": "members", "body": {"member_id": member, "name": format!("成员{n}"), "branch_id": b1, "status": "full", "effective_at": "2020-01-01"}}).to_string());
        lines.push(json!({"op": format!("members/{member}/transfers"), "body": {"to_branch_id": b2, "valid_until": "2020-03-01", "effective_at": "2020-01-02"}}).to_string());
    }
    let answer = import(&server, &lines);
    assert_eq!(answer["accepted"], 2 + 2 * letters, "{answer}");
    let (_, overdue) = server.get("/v1/transfers?state=overdue");
    assert_eq!(overdue["transfers"].as_array().unwrap().len(), letters);

    assert_eq!(server.post("/v1/sweeps/expiry", json!({})).1, json!({"expired": letters}));
    let (_, expired) = server.get("/v1/transfers?state=expired");
    assert_eq!(expired["transfers"].as_array().unwrap().len(), letters);
    let (_, overdue) = server.get("/v1/transfers?state=overdue");
    assert_eq!(overdue["transfers"], json!([]));
    assert_eq!(server.post("/v1/sweeps/expiry", json!({})).1, json!({"expired": 0}), "nothing left");
}

#[test]
fn metrics_count_requests_by_route_and_show_the_log_and_the_lag() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    server.post("/v1/branches", json!({"name": "一支部", "kind": "branch", "region": "东城区"}));
    server.post("/v1/branches", json!({"name": "", "kind": "branch", "region": "东城区"}));
    server.get(&format!("/v1/branches/{}", uuid_zero()));
    let (status, text) = raw(&server.addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 200);
    for line in [
        r#"flowbook_http_request_duration_seconds_count{method="POST",route="/v1/branches",status="201"} 1"#,
        r#"flowbook_http_request_duration_seconds_count{method="POST",route="/v1/branches",status="400"} 1"#,
        r#"flowbook_http_request_duration_seconds_count{method="GET",route="/v1/branches/{id}",status="404"} 1"#,
        "flowbook_log_events 1",
        "flowbook_projection_lag_events 0",
        // Both writes reached the processor (the rules refused the second), one at a time.
        r#"flowbook_write_batch_commands_bucket{le="1"} 2"#,
        "flowbook_write_batch_commands_count 2",
        "flowbook_write_batch_commands_sum 2",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
}

#[test]
fn every_answer_carries_a_request_id_the_clients_own_when_it_is_sane() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let request_id = |header: &str| {
        let request = format!("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{header}\r\n");
        let (status, text) = raw(&server.addr, request.as_bytes());
        assert_eq!(status, 200, "{text}");
        text.lines()
            .find_map(|line| line.to_ascii_lowercase().strip_prefix("x-request-id: ").map(str::to_owned))
            .expect("an x-request-id header")
    };
    assert_eq!(request_id("X-Request-Id: trace-42\r\n"), "trace-42");
    let fresh = request_id("");
    assert!(uuid::Uuid::parse_str(&fresh).is_ok(), "a generated id is a UUID: {fresh}");
    assert_ne!(request_id(""), fresh, "each request gets its own");
    let too_long = "x".repeat(65);
    assert_ne!(request_id(&format!("X-Request-Id: {too_long}\r\n")), too_long);
}

#[test]
fn past_the_limits_requests_and_streams_are_refused_at_once_with_503() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &["--max-requests", "1", "--max-streams", "1"]);
    // A client that announces a body and never sends it holds the one request permit.
    let mut stalled = TcpStream::connect(&server.addr).unwrap();
    stalled
        .write_all(b"POST /v1/branches HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let refused = server.get("/healthz");
    assert_eq!(error_code(&refused), (503, "unavailable"), "{refused:?}");
    let (_, text) = raw(&server.addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(text.to_ascii_lowercase().contains("retry-after: 1"), "{text}");
    drop(stalled);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(server.get("/healthz").0, 200, "the permit comes back when the client goes");
    assert_eq!(server.get("/v1/events").1["events"], json!([]), "the stalled write appended nothing");

    // An open event stream holds the one stream permit, but no request permit.
    let mut stream = TcpStream::connect(&server.addr).unwrap();
    stream.write_all(b"GET /v1/events/stream HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    assert_eq!(server.get("/healthz").0, 200);
    assert_eq!(error_code(&server.get("/v1/events/stream")), (503, "unavailable"));
}

/// Every path and method of API.md (the contract), plus the docs page.
const API_OPERATIONS: [(&str, &str); 35] = [
    ("post", "/v1/branches"),
    ("get", "/v1/branches"),
    ("get", "/v1/branches/{id}"),
    ("post", "/v1/branches/{id}/reclassify"),
    ("post", "/v1/branches/{id}/dissolve"),
    ("get", "/v1/branches/{id}/roster"),
    ("post", "/v1/members"),
    ("get", "/v1/members"),
    ("get", "/v1/members/{id}"),
    ("get", "/v1/members/{id}/history"),
    ("post", "/v1/members/{id}/verify"),
    ("post", "/v1/members/{id}/transfers"),
    ("post", "/v1/members/{id}/departures"),
    ("post", "/v1/members/{id}/arrivals"),
    ("post", "/v1/members/{id}/returns"),
    ("post", "/v1/members/{id}/placement"),
    ("post", "/v1/members/{id}/contact"),
    ("post", "/v1/members/{id}/status"),
    ("get", "/v1/transfers"),
    ("post", "/v1/transfers/{id}/complete"),
    ("post", "/v1/transfers/{id}/cancel"),
    ("post", "/v1/pocket-members"),
    ("get", "/v1/events"),
    ("get", "/v1/events/stream"),
    ("post", "/v1/events/{position}/retract"),
    ("post", "/v1/sweeps/expiry"),
    ("post", "/v1/import"),
    ("get", "/v1/stats/flows"),
    ("get", "/v1/stats/mobile"),
    ("get", "/v1/stats/pocket"),
    ("get", "/v1/audit/verify"),
    ("get", "/healthz"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
    ("get", "/docs"),
];

#[test]
fn the_openapi_document_describes_every_route_and_the_docs_page_needs_no_network() {
    let dir = tempfile::tempdir().unwrap();
    let auth = dir.path().join("auth.json");
    let admin = add_token(&auth, "管理员", "admin", &[]);
    let server = Server::start_with(&dir.path().join("data"), &["--auth", auth.to_str().unwrap()]);
    let (status, document) = server.get("/openapi.json");
    assert_eq!(status, 200, "no token needed for the document");
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));

    let paths = document["paths"].as_object().unwrap();
    let documented: Vec<(String, String)> = paths
        .iter()
        .flat_map(|(path, item)| item.as_object().unwrap().keys().map(move |m| (m.clone(), path.clone())))
        .collect();
    for (method, path) in API_OPERATIONS {
        assert!(documented.contains(&(method.to_owned(), path.to_owned())), "{method} {path} is documented");
    }
    assert_eq!(documented.len(), API_OPERATIONS.len(), "and nothing else: {documented:?}");

    // Every documented operation is routed: the server knows it (no 404 "no such endpoint", no 405).
    let bearer = format!("Bearer {admin}");
    for (method, path) in &documented {
        if path.ends_with("/stream") {
            continue; // an open stream never ends; the stream tests cover it
        }
        let concrete = path.replace("{id}", uuid_zero()).replace("{position}", "1");
        let body = (method == "post").then(|| json!({}));
        let (status, answer) =
            server.call(&method.to_uppercase(), &concrete, body.as_ref(), &[("Authorization", &bearer)]);
        assert_ne!(status, 405, "{method} {path}");
        assert!(
            !(status == 404 && answer["error"]["message"] == "no such endpoint"),
            "{method} {path} is routed: {answer}"
        );
    }

    // Every reference resolves, and every write names its body's fields.
    let schemas = document["components"]["schemas"].as_object().unwrap();
    let text = document.to_string();
    for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().unwrap();
        assert!(schemas.contains_key(name), "#/components/schemas/{name} exists");
    }
    let register = &schemas["RegisterBody"]["properties"];
    for field in ["name", "branch_id", "status", "member_id"] {
        assert!(register.get(field).is_some(), "RegisterBody has {field}: {register}");
    }
    assert_eq!(
        schemas["MemberStatus"]["enum"],
        json!(["probationary", "full", "suspended", "left", "deceased"])
    );
    assert!(schemas["MemberView"]["properties"].get("flags").is_some());

    let (status, page) = raw(&server.addr, b"GET /docs HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 200, "no token needed for the page");
    assert!(page.contains("/openapi.json"), "the page renders the document");
    for external in ["src=\"http", "href=\"http", "@import", "url(http", "src=\"//"] {
        assert!(!page.contains(external), "the page loads nothing from elsewhere ({external})");
    }
}

/// Every read answer worth comparing on a store: the log, every projection's endpoints, a sample
/// of members with their histories.
fn every_read(server: &Server) -> Vec<(String, Value)> {
    let mut paths: Vec<String> = vec![
        "/v1/branches".into(),
        "/v1/stats/mobile".into(),
        "/v1/stats/pocket?from=2020-01-01&to=2030-01-01".into(),
        "/v1/stats/flows?from=2024-01-01&to=2027-01-01&by=branch".into(),
        "/v1/stats/flows?from=2025-03-01&to=2025-06-01&by=region".into(),
        "/v1/members?q=王".into(),
        "/v1/audit/verify".into(),
    ];
    for state in ["open", "overdue", "completed", "cancelled", "expired"] {
        paths.push(format!("/v1/transfers?state={state}"));
    }
    let (_, branches) = server.get("/v1/branches");
    for branch in branches["branches"].as_array().unwrap().iter().step_by(7) {
        let id = branch["branch_id"].as_str().unwrap();
        paths.push(format!("/v1/branches/{id}/roster"));
        paths.push(format!("/v1/branches/{id}/roster?as_of=2025-06-30"));
        paths.push(format!("/v1/branches/{id}/roster?as_of=2025-06-30&known_at=2025-01-01T00:00:00Z"));
    }
    let mut after = 0;
    loop {
        let (_, page) = server.get(&format!("/v1/events?after={after}&limit=10000"));
        let events = page["events"].as_array().unwrap().clone();
        let Some(last) = events.last() else { break };
        after = last["position"].as_u64().unwrap();
        for event in events.iter().filter(|e| e["position"].as_u64().unwrap() % 97 == 0) {
            if let Some(member) = event["stream"].as_str().unwrap().strip_prefix("member/") {
                paths.push(format!("/v1/members/{member}"));
                paths.push(format!("/v1/members/{member}/history"));
                paths.push(format!("/v1/members/{member}?as_of=2025-06-30"));
            }
        }
        paths.push(format!("/v1/events?after={}&limit=10000", after - events.len() as u64));
    }
    paths
        .into_iter()
        .map(|path| {
            let (status, answer) = server.get(&path);
            assert_eq!(status, 200, "{path}: {answer}");
            (path, answer)
        })
        .collect()
}

#[test]
fn the_log_and_every_read_model_are_the_same_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_flowbook"))
        .args(["demo", "--data", dir.path().to_str().unwrap(), "--members", "400", "--end", "2026-06-30"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let before = {
        let server = Server::start(dir.path());
        // A few writes through the server too, so the restart also covers what it appended.
        let (_, branches) = server.get("/v1/branches");
        let branch = branches["branches"][3]["branch_id"].as_str().unwrap().to_owned();
        server.post("/v1/members", json!({"name": "重启测试", "branch_id": branch, "status": "full"}));
        server.post("/v1/sweeps/expiry", json!({}));
        every_read(&server)
    };
    assert!(before.len() > 100, "a real sample: {} answers", before.len());
    let after = every_read(&Server::start(dir.path()));
    assert_eq!(before.len(), after.len());
    for ((path, was), (_, is)) in before.iter().zip(&after) {
        assert_eq!(was, is, "{path} changed across the restart");
    }
}

#[test]
fn an_event_stream_whose_client_stops_reading_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &["--stream-stall-seconds", "1"]);
    // ~12 MB of events: more than the socket buffers between a client that does not read and us.
    let lines: Vec<String> = (0..20_000)
        .map(|n| {
            format!(
                r#"{{"op":"branches","body":{{"name":"支部{n:05}{}","kind":"branch","region":"东城区"}}}}"#,
                "长".repeat(150)
            )
        })
        .collect();
    let (status, answer) = raw(
        &server.addr,
        format!(
            "POST /v1/import HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{}",
            lines.join("\n").len(),
            lines.join("\n")
        )
        .as_bytes(),
    );
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains(r#""accepted":20000"#), "{answer}");

    let mut stream = TcpStream::connect(&server.addr).unwrap();
    stream.write_all(b"GET /v1/events/stream HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_secs(4)); // not reading: the server's buffer stays full
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 65536];
    let ended = loop {
        match stream.read(&mut buffer) {
            Ok(0) => break true,
            Ok(n) => {
                received.extend_from_slice(&buffer[..n]);
                // The end of a chunked body: the stream was closed by the server.
                if received.ends_with(b"\r\n0\r\n\r\n") {
                    break true;
                }
            }
            Err(_) => break false, // stalled without an end: still open
        }
    };
    let text = String::from_utf8_lossy(&received);
    let ids = text.lines().filter(|l| l.starts_with("id: ")).count();
    assert!(ended, "the stream ended after {ids} events");
    assert!(ids > 0 && ids < 20_000, "cut off part way: {ids} of 20,000 events");
    let last: u64 = text.lines().filter_map(|l| l.strip_prefix("id: ")).next_back().unwrap().parse().unwrap();
    let (_, resumed) = server.get(&format!("/v1/events?after={last}&limit=1"));
    assert_eq!(resumed["events"][0]["position"], last + 1, "and the client can resume from its last id");
}
