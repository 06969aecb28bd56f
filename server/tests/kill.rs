//! Kill -9 under concurrent HTTP writes, several rounds: every write the server acknowledged
//! (201) must be in the log after a restart, and the hash chain must verify.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{dechunk, raw, Server};
use serde_json::Value;

const ROUNDS: usize = 6;
const CLIENTS: usize = 8;

/// One request; `None` if the connection broke (the server was killed mid-request).
fn post(addr: &str, path: &str, body: &str) -> Option<(u16, Value)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: k\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let text = String::from_utf8_lossy(&response);
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n")?.1;
    Some((status, serde_json::from_str(body).ok()?))
}

/// A GET answered with JSON.
fn get(addr: &str, path: &str) -> Value {
    let (_, text) =
        raw(addr, format!("GET {path} HTTP/1.1\r\nHost: k\r\nConnection: close\r\n\r\n").as_bytes());
    let body = text.split_once("\r\n\r\n").unwrap().1;
    let body = if text.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_owned()
    };
    serde_json::from_str(&body).unwrap()
}

#[test]
fn acknowledged_http_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let addr = server.addr.clone();
    let branch = post(
        &addr,
        "/v1/branches",
        r#"{"name":"一支部","kind":"branch","region":"东城区","effective_at":"2020-01-01"}"#,
    )
    .unwrap()
    .1["branch_id"]
        .as_str()
        .unwrap()
        .to_owned();
    drop(server); // kills it
                  // (event_id, position) of every acknowledged registration.
    let acknowledged: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    for round in 0..ROUNDS {
        let mut server = Server::start(dir.path());
        let addr = server.addr.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|client| {
                let (addr, branch, stop, acknowledged) =
                    (addr.clone(), branch.clone(), Arc::clone(&stop), Arc::clone(&acknowledged));
                std::thread::spawn(move || {
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let body = format!(
                            r#"{{"name":"r{round}c{client}n{n}","branch_id":"{branch}","status":"full"}}"#
                        );
                        match post(&addr, "/v1/members", &body) {
                            Some((201, answer)) => {
                                let event = &answer["events"][0];
                                let id = event["event_id"].as_str().unwrap().to_owned();
                                acknowledged.lock().unwrap().push((id, event["position"].as_u64().unwrap()));
                            }
                            Some((status, answer)) => panic!("round {round}: {status} {answer}"),
                            None => break, // killed
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(150 + 97 * round as u64));
        server.child.kill().unwrap(); // SIGKILL
        server.child.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        for client in clients {
            client.join().unwrap();
        }
        // Restart and check everything acknowledged so far.
        let server = Server::start(dir.path());
        let addr = server.addr.clone();
        let mut stored = std::collections::HashMap::new();
        let mut after = 0;
        loop {
            let page = get(&addr, &format!("/v1/events?after={after}&limit=10000"));
            let events = page["events"].as_array().unwrap().clone();
            let Some(last) = events.last() else { break };
            after = last["position"].as_u64().unwrap();
            for event in events {
                stored.insert(
                    event["position"].as_u64().unwrap(),
                    event["event_id"].as_str().unwrap().to_owned(),
                );
            }
        }
        let acknowledged = acknowledged.lock().unwrap();
        for (id, position) in acknowledged.iter() {
            assert_eq!(
                stored.get(position),
                Some(id),
                "round {round}: acknowledged write at {position} lost"
            );
        }
        assert_eq!(get(&addr, "/v1/audit/verify")["ok"], Value::Bool(true), "round {round}");
        drop(server);
        assert!(!acknowledged.is_empty() || round < 2, "nothing was acknowledged");
        println!("round {round}: {} acknowledged writes present after kill -9", acknowledged.len());
    }
}
