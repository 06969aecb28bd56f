//! `/metrics`: Prometheus text. Requests by matched route and status, with latency histograms;
//! commands per write batch; the log's length and how far the read models trail it. Route labels come from the router's
//! matched paths, so their number is bounded by the routes, not by what clients send.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::app::AppState;

/// Upper bounds of the latency histogram, in seconds.
const LATENCY_BUCKETS_SECONDS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

#[derive(Default)]
struct RouteStats {
    count: u64,
    sum_seconds: f64,
    /// Cumulative counts per bucket, as Prometheus wants them.
    buckets: [u64; LATENCY_BUCKETS_SECONDS.len()],
}

/// Upper bounds of the batch-size histogram, in commands.
const BATCH_BUCKETS: [u64; 10] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512];

/// Commands decided per batch by the processor (each batch's appends share one durable flush):
/// how well group commit is working.
#[derive(Default)]
pub struct BatchSizes {
    /// Cumulative counts per bucket.
    buckets: [AtomicU64; BATCH_BUCKETS.len()],
    count: AtomicU64,
    sum: AtomicU64,
}

impl BatchSizes {
    pub fn record(&self, commands: usize) {
        let commands = commands as u64;
        for (bucket, bound) in self.buckets.iter().zip(BATCH_BUCKETS) {
            if commands <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(commands, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String) {
        out.push_str("# HELP flowbook_write_batch_commands Commands decided per write batch (one durable flush each).\n# TYPE flowbook_write_batch_commands histogram\n");
        for (bucket, bound) in self.buckets.iter().zip(BATCH_BUCKETS) {
            let _ = writeln!(
                out,
                r#"flowbook_write_batch_commands_bucket{{le="{bound}"}} {}"#,
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, r#"flowbook_write_batch_commands_bucket{{le="+Inf"}} {count}"#);
        let _ = writeln!(out, "flowbook_write_batch_commands_sum {}", self.sum.load(Ordering::Relaxed));
        let _ = writeln!(out, "flowbook_write_batch_commands_count {count}");
    }
}

/// Method → route → status → stats: nested so that a request finds its stats by `&str`, and
/// only the first request of a kind allocates its labels (a `(String, String, u16)` key made
/// two strings for every request, and `track` two more to pass them).
type RequestStats = BTreeMap<String, BTreeMap<String, BTreeMap<u16, RouteStats>>>;

/// `map`'s value at `key`, inserted (the one allocation of the key) if it is not there.
fn entry_by_str<'a, V: Default>(map: &'a mut BTreeMap<String, V>, key: &str) -> &'a mut V {
    if !map.contains_key(key) {
        map.insert(key.to_owned(), V::default());
    }
    map.get_mut(key).expect("inserted above")
}

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<RequestStats>,
}

impl Metrics {
    fn record(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let mut requests = self.requests.lock().expect("metrics lock");
        let routes = entry_by_str(&mut requests, method);
        let stats = entry_by_str(routes, route).entry(status).or_default();
        stats.count += 1;
        stats.sum_seconds += seconds;
        for (bucket, bound) in stats.buckets.iter_mut().zip(LATENCY_BUCKETS_SECONDS) {
            if seconds <= bound {
                *bucket += 1;
            }
        }
    }

    pub fn render(&self, log_length: u64, projected: u64, batches: &BatchSizes) -> String {
        let mut out = String::new();
        out.push_str("# HELP flowbook_http_requests_total HTTP requests by route and status.\n");
        out.push_str("# TYPE flowbook_http_request_duration_seconds histogram\n");
        let requests = self.requests.lock().expect("metrics lock");
        let each = requests.iter().flat_map(|(method, routes)| {
            routes.iter().flat_map(move |(route, statuses)| {
                statuses.iter().map(move |(status, stats)| (method, route, status, stats))
            })
        });
        for (method, route, status, stats) in each {
            let labels = format!(r#"method="{method}",route="{route}",status="{status}""#);
            for (bound, count) in LATENCY_BUCKETS_SECONDS.iter().zip(stats.buckets) {
                let _ = writeln!(
                    out,
                    r#"flowbook_http_request_duration_seconds_bucket{{{labels},le="{bound}"}} {count}"#
                );
            }
            let _ = writeln!(
                out,
                r#"flowbook_http_request_duration_seconds_bucket{{{labels},le="+Inf"}} {}"#,
                stats.count
            );
            let _ =
                writeln!(out, "flowbook_http_request_duration_seconds_sum{{{labels}}} {}", stats.sum_seconds);
            let _ = writeln!(out, "flowbook_http_request_duration_seconds_count{{{labels}}} {}", stats.count);
        }
        batches.render(&mut out);
        out.push_str("# HELP flowbook_log_events Events in the log (its last position).\n# TYPE flowbook_log_events gauge\n");
        let _ = writeln!(out, "flowbook_log_events {log_length}");
        out.push_str("# HELP flowbook_projection_position Last position applied to the read models.\n# TYPE flowbook_projection_position gauge\n");
        let _ = writeln!(out, "flowbook_projection_position {projected}");
        out.push_str("# HELP flowbook_projection_lag_events Events the read models trail the log by.\n# TYPE flowbook_projection_lag_events gauge\n");
        let _ = writeln!(out, "flowbook_projection_lag_events {}", log_length.saturating_sub(projected));
        out
    }
}

/// Times every request (route = the matched path, never the raw one).
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    // Both shared, not copied: a standard method is a constant, a matched path an `Arc<str>`.
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let response = next.run(request).await;
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    state.metrics.record(method.as_str(), route, response.status().as_u16(), started.elapsed().as_secs_f64());
    response
}

pub async fn render(State(state): State<AppState>) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    let log_length = state.live.store().head();
    let projected = state.live.read().position();
    (
        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(log_length, projected, &state.processor.batch_sizes),
    )
}
