//! Between the log's envelopes (opaque JSON `data`) and the core's typed events.
//!
//! The store knows envelopes, the core knows events; this is the one place that knows both.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use flowbook_core::{EventData, NewEvent, RecordedEvent, StreamId};
use flowbook_store::Envelope;
use serde_json::value::RawValue;
use uuid::Uuid;

/// An envelope the core cannot read: a stream name or `data` that is not one of API.md's events.
#[derive(Debug, thiserror::Error)]
#[error("event at position {position} does not decode: {detail}")]
pub struct DecodeError {
    pub position: u64,
    pub detail: String,
}

/// A stored envelope as a typed event.
pub fn recorded(envelope: &Envelope) -> Result<RecordedEvent, DecodeError> {
    let fail = |detail: String| DecodeError { position: envelope.position, detail };
    let stream: StreamId = envelope.stream.parse().map_err(fail)?;
    let data = EventData::from_parts(&envelope.event_type, envelope.data.get())
        .map_err(|error| fail(error.to_string()))?;
    Ok(RecordedEvent {
        position: envelope.position,
        stream,
        version: envelope.version,
        effective_at: envelope.effective_at,
        recorded_at: envelope.recorded_at,
        actor: envelope.actor.clone(),
        data,
    })
}

/// The canonical envelope JSON, borrowed where it can be (no allocation for the stream and type).
#[derive(serde::Deserialize)]
struct Canonical<'a> {
    position: u64,
    #[serde(borrow)]
    stream: Cow<'a, str>,
    version: u64,
    #[serde(rename = "type", borrow)]
    event_type: Cow<'a, str>,
    #[serde(deserialize_with = "flowbook_store::instant")]
    effective_at: DateTime<Utc>,
    #[serde(deserialize_with = "flowbook_store::instant")]
    recorded_at: DateTime<Utc>,
    #[serde(borrow)]
    actor: Cow<'a, str>,
    #[serde(borrow)]
    data: &'a RawValue,
}

/// A record's canonical bytes (see `Store::scan`) as a typed event, without building the
/// envelope first.
pub fn recorded_from_canonical(position: u64, canonical: &[u8]) -> Result<RecordedEvent, DecodeError> {
    let fail = |detail: String| DecodeError { position, detail };
    let parsed: Canonical<'_> = serde_json::from_slice(canonical).map_err(|error| fail(error.to_string()))?;
    if parsed.position != position {
        return Err(fail(format!("record claims position {}", parsed.position)));
    }
    let data = EventData::from_parts(&parsed.event_type, parsed.data.get())
        .map_err(|error| fail(error.to_string()))?;
    Ok(RecordedEvent {
        position,
        stream: parsed.stream.parse().map_err(fail)?,
        version: parsed.version,
        effective_at: parsed.effective_at,
        recorded_at: parsed.recorded_at,
        actor: parsed.actor.into_owned(),
        data,
    })
}

/// A decided event as the log takes it.
pub fn to_store(event: &NewEvent, actor: &str, event_id: Uuid) -> flowbook_store::NewEvent {
    let (event_type, data) = event.data.to_parts();
    flowbook_store::NewEvent {
        event_id,
        stream: event.stream.to_string(),
        event_type: event_type.to_owned(),
        effective_at: event.effective_at,
        actor: actor.to_owned(),
        data: RawValue::from_string(data).expect("serde_json output is valid JSON"),
    }
}
