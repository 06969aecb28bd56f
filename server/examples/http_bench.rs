//! HTTP write throughput and latency against a running `flowbook serve` (loopback only).
//!
//! cargo run --release -p flowbook-server -- serve --data D --addr 127.0.0.1:8080 --sweep-every 0 &
//! cargo run --release -p flowbook-server --example http_bench -- [--addr 127.0.0.1:8080] [--clients 64] [--seconds 10]
//!
//! Each client owns one member and toggles its contact (lost / restored): one command per
//! request, each acknowledged only once durable. First as fast as the clients go (throughput),
//! then each client paced so that together they send half that rate (latency at half load).
//! Keep-alive HTTP/1.1 over plain sockets: the client costs little next to the server.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Connection {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Connection {
    fn open(addr: &str) -> Connection {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).unwrap();
        Connection { reader: BufReader::new(stream.try_clone().unwrap()), writer: stream }
    }

    /// One keep-alive request; returns the status and body.
    fn call(&mut self, method: &str, path: &str, body: &str) -> (u16, String) {
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.writer.write_all(request.as_bytes()).unwrap();
        let mut status_line = String::new();
        self.reader.read_line(&mut status_line).unwrap();
        let status = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let mut length = 0;
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

fn id_field(body: &str, field: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(body).expect("json");
    value[field].as_str().expect(field).to_owned()
}

/// Runs the clients; `pace` is each client's interval between requests (None: flat out).
fn run(addr: &str, members: &[String], seconds: f64, pace: Option<Duration>) -> (f64, Vec<f64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let workers: Vec<_> = members
        .iter()
        .cloned()
        .map(|member| {
            let (addr, stop) = (addr.to_owned(), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut connection = Connection::open(&addr);
                let mut latencies = Vec::new();
                // Continue from the member's contact state (an earlier pass may have left it lost).
                let (_, view) = connection.call("GET", &format!("/v1/members/{member}"), "");
                let view: serde_json::Value = serde_json::from_str(&view).expect("json");
                let mut lost = !view["contact_lost"].as_bool().unwrap_or(false);
                let mut next = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    if let Some(pace) = pace {
                        let now = Instant::now();
                        if next > now {
                            std::thread::sleep(next - now);
                        }
                        next += pace;
                    }
                    let body = format!(r#"{{"lost":{lost}}}"#);
                    let sent = Instant::now();
                    let (status, answer) =
                        connection.call("POST", &format!("/v1/members/{member}/contact"), &body);
                    assert_eq!(status, 201, "{answer}");
                    latencies.push(sent.elapsed().as_secs_f64() * 1e3);
                    lost = !lost;
                }
                latencies
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    stop.store(true, Ordering::Relaxed);
    let latencies: Vec<f64> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    (latencies.len() as f64 / started.elapsed().as_secs_f64(), latencies)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn main() {
    let (mut addr, mut clients, mut seconds) = ("127.0.0.1:8080".to_owned(), 64usize, 10.0);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().expect("a value");
        match flag.as_str() {
            "--addr" => addr = value,
            "--clients" => clients = value.parse().expect("--clients N"),
            "--seconds" => seconds = value.parse().expect("--seconds S"),
            _ => panic!("unknown flag {flag}"),
        }
    }
    assert!(addr.starts_with("127.") || addr.starts_with("localhost"), "loopback only");
    let mut setup = Connection::open(&addr);
    let (status, branch) = setup.call(
        "POST",
        "/v1/branches",
        r#"{"name":"压测支部","kind":"branch","region":"东城区","effective_at":"2020-01-01"}"#,
    );
    assert_eq!(status, 201, "{branch}");
    let branch = id_field(&branch, "branch_id");
    let members: Vec<String> = (0..clients)
        .map(|n| {
            let body = format!(r#"{{"name":"成员{n}","branch_id":"{branch}","status":"full"}}"#);
            let (status, answer) = setup.call("POST", "/v1/members", &body);
            assert_eq!(status, 201, "{answer}");
            id_field(&answer, "member_id")
        })
        .collect();
    let (throughput, mut flat_out) = run(&addr, &members, seconds, None);
    flat_out.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!("| load | clients | commands/s | p50 ms | p99 ms |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| flat out | {clients} | {throughput:.0} | {:.2} | {:.2} |",
        percentile(&flat_out, 0.5),
        percentile(&flat_out, 0.99)
    );
    let pace = Duration::from_secs_f64(clients as f64 / (throughput / 2.0));
    let (half_rate, mut half) = run(&addr, &members, seconds, Some(pace));
    half.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "| half load | {clients} | {half_rate:.0} | {:.2} | {:.2} |",
        percentile(&half, 0.5),
        percentile(&half, 0.99)
    );
}
