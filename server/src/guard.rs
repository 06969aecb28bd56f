//! What every request passes first: a request id, a limit on requests in flight, a time limit,
//! and a log line when something went wrong. Each refusal answers in the API's error shape.
//!
//! The limit sheds load instead of queueing it: past the limit a request is answered 503 at once
//! (with `Retry-After`), so a burst cannot pile up thousands of waiting requests, each holding a
//! connection and memory, only to time out later. Event streams hold a permit of their own for as
//! long as they stay open, from a separate, smaller pool.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

use crate::app::AppState;
use crate::error::ApiError;

/// Requests being handled at once (event streams not counted once their answer has started).
pub const REQUESTS_IN_FLIGHT_MAX: u32 = 1024;

/// Event streams open at once.
pub const STREAMS_OPEN_MAX: u32 = 256;

/// How long one request may take before it is answered 503. A write that times out may still
/// be appended; retry it with the same `Idempotency-Key`.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How long an event stream's buffer may stay full, its client not reading, before the stream is
/// cut off.
pub const STREAM_STALL_SECONDS: u64 = 30;

/// Characters of a client's own request id kept; a longer or non-printable one is replaced.
pub const REQUEST_ID_CHARS_MAX: usize = 64;

/// A request slower than this is logged, with its id.
const SLOW_REQUEST: Duration = Duration::from_secs(1);

pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The permits of the two pools.
pub struct Limits {
    requests: Arc<Semaphore>,
    streams: Arc<Semaphore>,
    requests_max: usize,
    streams_max: usize,
    /// See [`STREAM_STALL_SECONDS`].
    pub stream_stall: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits::new(
            REQUESTS_IN_FLIGHT_MAX as usize,
            STREAMS_OPEN_MAX as usize,
            Duration::from_secs(STREAM_STALL_SECONDS),
        )
    }
}

impl Limits {
    pub fn new(requests: usize, streams: usize, stream_stall: Duration) -> Limits {
        Limits {
            requests: Arc::new(Semaphore::new(requests)),
            streams: Arc::new(Semaphore::new(streams)),
            requests_max: requests,
            streams_max: streams,
            stream_stall,
        }
    }

    /// A permit to keep one event stream open; drop it when the stream ends.
    pub fn open_stream(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        Arc::clone(&self.streams).try_acquire_owned().map_err(|_| {
            busy(format!("the server is at its limit of {} open event streams", self.streams_max))
        })
    }
}

fn busy(message: String) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", format!("{message}; retry shortly"))
}

/// The client's `X-Request-Id` if it is short and printable, else a fresh one.
fn request_id(request: &Request) -> HeaderValue {
    request
        .headers()
        .get(&REQUEST_ID)
        .filter(|value| {
            let bytes = value.as_bytes();
            !bytes.is_empty()
                && bytes.len() <= REQUEST_ID_CHARS_MAX
                && bytes.iter().all(|b| b.is_ascii_graphic())
        })
        .cloned()
        .unwrap_or_else(|| {
            let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
            let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text);
            HeaderValue::from_str(id).expect("a UUID is a header value")
        })
}

/// The outermost layer: id, limit, time limit, log.
pub async fn admit(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let id = request_id(&request);
    request.headers_mut().insert(REQUEST_ID.clone(), id.clone());
    let span = tracing::info_span!(
        "request",
        id = %String::from_utf8_lossy(id.as_bytes()),
        method = %request.method(),
        path = %request.uri().path(),
    );
    async move {
        let started = Instant::now();
        let mut response = match Arc::clone(&state.limits.requests).try_acquire_owned() {
            Err(_) => {
                let limit = state.limits.requests_max;
                let mut response =
                    busy(format!("the server is at its limit of {limit} requests in flight")).into_response();
                response.headers_mut().insert(axum::http::header::RETRY_AFTER, HeaderValue::from_static("1"));
                response
            }
            Ok(_permit) => match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
                Ok(response) => response,
                Err(_) => ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "timeout",
                    format!(
                        "no answer within {} s; a write may still be applied — retry it with the same Idempotency-Key",
                        REQUEST_TIMEOUT.as_secs()
                    ),
                )
                .into_response(),
            },
        };
        let elapsed = started.elapsed();
        let status = response.status();
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), ms = elapsed.as_millis() as u64, "request failed");
        } else if elapsed >= SLOW_REQUEST {
            tracing::info!(status = status.as_u16(), ms = elapsed.as_millis() as u64, "slow request");
        }
        response.headers_mut().insert(REQUEST_ID.clone(), id);
        response
    }
    .instrument(span)
    .await
}
