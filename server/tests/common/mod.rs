//! What the server's end-to-end tests share: the real binary on a free port, raw HTTP/1.1
//! requests, chunked bodies, a seeded random stream.
#![allow(dead_code)] // each test file uses its own part

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

pub struct Server {
    pub child: Child,
    pub addr: String,
}

impl Server {
    pub fn start(data: &std::path::Path) -> Server {
        Server::start_with(data, &[])
    }

    pub fn start_with(data: &std::path::Path, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_flowbook"))
            .args(["serve", "--data", data.to_str().unwrap(), "--addr", "127.0.0.1:0", "--sweep-every", "0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start flowbook serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .expect(&line)
            .to_owned();
        Server { child, addr }
    }

    /// One HTTP/1.1 request; returns status and JSON body.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut stream = TcpStream::connect(&self.addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        request.push_str(&body);
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
        let text = String::from_utf8_lossy(&response);
        let status: u16 = text.split(' ').nth(1).unwrap().parse().unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
            dechunk(body)
        } else {
            body.to_owned()
        };
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    pub fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("POST", path, Some(&body), &[])
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, None, &[])
    }
}

impl Server {
    /// A branch and a full member in it; returns their ids.
    pub fn branch_and_member(&self, name: &str) -> (String, String) {
        let (_, branch) = self.post(
            "/v1/branches",
            json!({"name": "一支部", "kind": "branch", "region": "东城区", "effective_at": "2020-01-01"}),
        );
        let branch = branch["branch_id"].as_str().unwrap().to_owned();
        let (_, member) =
            self.post("/v1/members", json!({"name": name, "branch_id": branch, "status": "full"}));
        (branch, member["member_id"].as_str().unwrap().to_owned())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn dechunk(body: &str) -> String {
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
}

/// Sends raw bytes (any method, path, headers, body) and returns the status, or 0 when the server
/// closed the connection without an answer (allowed for garbage that is not HTTP).
pub fn raw(addr: &str, request: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let _ = stream.write_all(request);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}
