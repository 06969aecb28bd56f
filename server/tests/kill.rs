//! Kill -9 under concurrent HTTP writes, several rounds: every write the server acknowledged
//! (201) must be in the log after a restart, and the hash chain must verify.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

const ROUNDS: usize = 6;
const CLIENTS: usize = 8;

fn start(data: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_flowbook"))
        .args(["serve", "--data", data.to_str().unwrap(), "--addr", "127.0.0.1:0", "--sweep-every", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.trim().split("http://").nth(1).and_then(|r| r.split(' ').next()).expect(&line).to_owned();
    (child, addr)
}

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

fn get(addr: &str, path: &str) -> Value {
    let mut stream = TcpStream::connect(addr).unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: k\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let body = text.split_once("\r\n\r\n").unwrap().1;
    let body = if text.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if size == 0 {
                break;
            }
            out.push_str(&tail[..size]);
            rest = &tail[size + 2..];
        }
        out
    } else {
        body.to_owned()
    };
    serde_json::from_str(&body).unwrap()
}

#[test]
fn acknowledged_http_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = start(dir.path());
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
    let _ = child.kill();
    let _ = child.wait();
    // (event_id, position) of every acknowledged registration.
    let acknowledged: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    for round in 0..ROUNDS {
        let (mut child, addr) = start(dir.path());
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
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        for client in clients {
            client.join().unwrap();
        }
        // Restart and check everything acknowledged so far.
        let (mut child, addr) = start(dir.path());
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
        let _ = child.kill();
        let _ = child.wait();
        assert!(!acknowledged.is_empty() || round < 2, "nothing was acknowledged");
        println!("round {round}: {} acknowledged writes present after kill -9", acknowledged.len());
    }
}
