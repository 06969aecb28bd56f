//! The read endpoints: thin shapes over the projections. `as_of` and `known_at` are accepted on
//! every read that shows state.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use flowbook_core::{BranchId, MemberId};
use flowbook_projections::{At, FlowGrouping, TransferFilter, SEARCH_RESULTS_MAX};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::{ApiPath, ApiQuery, AppState};
use crate::error::ApiError;
use crate::time::instant;

/// Events one page of `/v1/events` returns by default, and at most.
pub const EVENTS_PAGE_DEFAULT: usize = 1_000;
pub const EVENTS_PAGE_MAX: usize = 10_000;

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TimeQuery {
    #[serde(default, deserialize_with = "instant::option")]
    as_of: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "instant::option")]
    known_at: Option<DateTime<Utc>>,
}

impl TimeQuery {
    fn at(&self) -> At {
        At::new(self.as_of, self.known_at)
    }
}

pub async fn member(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<MemberId>,
    ApiQuery(query): ApiQuery<TimeQuery>,
) -> Result<Response, ApiError> {
    let now = Utc::now();
    let at = query.at();
    let view = if at.is_latest() {
        state.live.read().member(id, now)
    } else {
        let history = state.live.member_stream(id)?;
        state.live.read().member_at(&history, &at, now)
    };
    let view = view.ok_or_else(|| ApiError::not_found("member"))?;
    Ok(Json(view).into_response())
}

pub async fn history(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<MemberId>,
    ApiQuery(query): ApiQuery<TimeQuery>,
) -> Result<Response, ApiError> {
    let entries = state.live.member_history(id, query.known_at)?;
    if entries.is_empty() {
        return Err(ApiError::not_found("member"));
    }
    let events: Vec<Value> = entries
        .into_iter()
        .map(|entry| {
            let mut value = serde_json::to_value(&entry.envelope).unwrap_or(Value::Null);
            if entry.retracted {
                value["retracted"] = Value::Bool(true);
            }
            value
        })
        .collect();
    Ok(Json(json!({ "events": events })).into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    #[serde(default)]
    q: String,
}

pub async fn search(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<SearchQuery>,
) -> Result<Response, ApiError> {
    let members = state.live.read().search(&query.q, SEARCH_RESULTS_MAX);
    Ok(Json(json!({ "members": members })).into_response())
}

pub async fn branches(State(state): State<AppState>) -> Result<Response, ApiError> {
    Ok(Json(json!({ "branches": state.live.read().branches() })).into_response())
}

pub async fn branch(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<BranchId>,
) -> Result<Response, ApiError> {
    let row = state.live.read().branch(id).ok_or_else(|| ApiError::not_found("branch"))?;
    Ok(Json(row).into_response())
}

pub async fn roster(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<BranchId>,
    ApiQuery(query): ApiQuery<TimeQuery>,
) -> Result<Response, ApiError> {
    let members = state.live.read().roster(id, &query.at()).ok_or_else(|| ApiError::not_found("branch"))?;
    Ok(Json(json!({ "branch_id": id, "as_of": query.as_of, "known_at": query.known_at, "members": members }))
        .into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TransfersQuery {
    state: Option<String>,
}

pub async fn transfers(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<TransfersQuery>,
) -> Result<Response, ApiError> {
    let filter = match query.state.as_deref().unwrap_or("open") {
        "open" => TransferFilter::Open,
        "overdue" => TransferFilter::Overdue,
        "completed" => TransferFilter::Completed,
        "cancelled" => TransferFilter::Cancelled,
        "expired" => TransferFilter::Expired,
        other => return Err(ApiError::malformed(format!("unknown state {other:?}"))),
    };
    Ok(Json(json!({ "transfers": state.live.read().transfers(filter, Utc::now()) })).into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FlowsQuery {
    #[serde(default, deserialize_with = "instant::option")]
    from: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "instant::option")]
    to: Option<DateTime<Utc>>,
    by: Option<String>,
    #[serde(default, deserialize_with = "instant::option")]
    known_at: Option<DateTime<Utc>>,
}

pub async fn flows(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<FlowsQuery>,
) -> Result<Response, ApiError> {
    let (Some(from), Some(to)) = (query.from, query.to) else {
        return Err(ApiError::malformed("from and to are required"));
    };
    let by = match query.by.as_deref().unwrap_or("branch") {
        "branch" => FlowGrouping::Branch,
        "region" => FlowGrouping::Region,
        other => return Err(ApiError::malformed(format!("by must be branch or region, not {other:?}"))),
    };
    Ok(Json(state.live.read().flows(from, to, by, query.known_at)).into_response())
}

pub async fn mobile(State(state): State<AppState>) -> Result<Response, ApiError> {
    Ok(Json(state.live.read().mobile_stats(Utc::now())).into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PeriodQuery {
    #[serde(default, deserialize_with = "instant::option")]
    from: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "instant::option")]
    to: Option<DateTime<Utc>>,
}

pub async fn pocket(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<PeriodQuery>,
) -> Result<Response, ApiError> {
    Ok(Json(state.live.read().pocket_stats(query.from, query.to)).into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    after: Option<u64>,
    limit: Option<usize>,
}

pub async fn events(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> Result<Response, ApiError> {
    let limit = query.limit.unwrap_or(EVENTS_PAGE_DEFAULT).min(EVENTS_PAGE_MAX);
    let events = state.live.store().read_log(query.after.unwrap_or(0), limit)?;
    Ok(Json(json!({ "events": events })).into_response())
}

pub async fn audit_verify(State(state): State<AppState>) -> Result<Response, ApiError> {
    let store = std::sync::Arc::clone(state.live.store());
    let report = tokio::task::spawn_blocking(move || store.verify())
        .await
        .map_err(|error| ApiError::internal("verify", error))??;
    Ok(Json(json!({
        "ok": report.ok,
        "checked": report.checked,
        "first_bad_position": report.first_bad_position,
    }))
    .into_response())
}

pub async fn healthz(State(state): State<AppState>) -> Response {
    Json(json!({ "ok": true, "position": state.live.read().position() })).into_response()
}

/// Events a live stream reads from the log at a time: all a client can cost in memory, since the
/// stream is pulled at the client's pace and never buffers beyond one page.
pub const STREAM_PAGE_EVENTS: usize = 256;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    after: Option<u64>,
}

/// `/v1/events/stream`: the log as Server-Sent Events from `after` (or `Last-Event-ID`), then
/// live. Each event's SSE id is its position, so a reconnecting client resumes with no gap and no
/// duplicate.
///
/// A task reads the log ahead of the client into a buffer of [`STREAM_PAGE_EVENTS`]; when the
/// client stops reading and the buffer stays full for the stall limit, the stream is cut off (the
/// client resumes from its last id). A slow client costs at most that buffer and one page.
pub async fn stream(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<StreamQuery>,
    headers: axum::http::HeaderMap,
) -> Result<
    axum::response::sse::Sse<
        impl futures_util::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>,
    >,
    ApiError,
> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let resume =
        headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok());
    let after = resume.or(query.after).unwrap_or(0);
    // Held by the stream until it ends: an open stream counts against the streams' limit.
    let permit = state.limits.open_stream()?;
    let mut tail = state.live.store().tail(after);
    let stall = state.limits.stream_stall;
    let (sender, receiver) = tokio::sync::mpsc::channel::<flowbook_store::Envelope>(STREAM_PAGE_EVENTS);
    tokio::spawn(async move {
        loop {
            let batch = tokio::select! {
                batch = tail.next_batch(STREAM_PAGE_EVENTS) => batch,
                () = sender.closed() => return, // the client went away
            };
            // The log is closing (shutdown) or damaged: end the stream; the client resumes.
            let Ok(batch) = batch else { return };
            for envelope in batch {
                match tokio::time::timeout(stall, sender.send(envelope)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return,
                    Err(_) => {
                        tracing::info!(
                            stalled_seconds = stall.as_secs(),
                            "event stream cut off: the client stopped reading"
                        );
                        return;
                    }
                }
            }
        }
    });
    let events = futures_util::stream::unfold((receiver, permit), |(mut receiver, permit)| async move {
        let envelope = receiver.recv().await?;
        let event = Event::default()
            .id(envelope.position.to_string())
            .event("event")
            .json_data(&envelope)
            .unwrap_or_else(|_| Event::default().comment("unserialisable event"));
        Some((Ok(event), (receiver, permit)))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}
