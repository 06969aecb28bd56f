//! Between the log's envelopes (opaque JSON `data`) and the core's typed events.
//!
//! The store knows envelopes, the core knows events; this is the one place that knows both.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use flowbook_core::{EventData, NewEvent, RecordedEvent, StreamId};
use flowbook_store::Envelope;
use serde::de::value::StrDeserializer;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
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

/// A record's canonical bytes (see `Store::scan`) as a typed event, without building the
/// envelope first, in one pass over the bytes: the log writes `type` before `data`, so `data` is
/// parsed straight into its event as the parser reaches it. (Keeping it raw and parsing it again
/// — a scan for its end, a UTF-8 check, a copy joined with the type, a second parse — was a
/// fifth of the rebuild's decoding thread.) A record with `data` first still decodes, through
/// the two-step path.
pub fn recorded_from_canonical(position: u64, canonical: &[u8]) -> Result<RecordedEvent, DecodeError> {
    use serde::Deserializer as _;
    let fail = |detail: String| DecodeError { position, detail };
    // Checked as UTF-8 once, whole, then parsed as text: parsed from bytes, serde_json checks
    // every string and key on its own, and those ~25 short checks a record were an eighth of
    // the decoding thread's instructions (cachegrind, 1 M-event rebuild).
    let text = std::str::from_utf8(canonical).map_err(|error| fail(format!("not UTF-8: {error}")))?;
    let mut parser = serde_json::Deserializer::from_str(text);
    let parsed = parser.deserialize_map(CanonicalVisitor).map_err(|error| fail(error.to_string()))?;
    parser.end().map_err(|error| fail(error.to_string()))?;
    if parsed.position != position {
        return Err(fail(format!("record claims position {}", parsed.position)));
    }
    let data = match parsed.data {
        Data::Typed(data) => data,
        Data::Raw(raw) => {
            EventData::from_parts(&parsed.event_type, raw.get()).map_err(|error| fail(error.to_string()))?
        }
    };
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

/// The canonical envelope, borrowed where it can be (no allocation for the stream and type).
struct Canonical<'a> {
    position: u64,
    stream: Cow<'a, str>,
    version: u64,
    event_type: Cow<'a, str>,
    effective_at: DateTime<Utc>,
    recorded_at: DateTime<Utc>,
    actor: Cow<'a, str>,
    data: Data<'a>,
}

/// `data` as parsed: typed when its `type` came first (as the log writes it), raw otherwise.
enum Data<'a> {
    Typed(EventData),
    Raw(&'a RawValue),
}

#[derive(serde::Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum Field {
    Position,
    Stream,
    Version,
    Type,
    EffectiveAt,
    RecordedAt,
    Actor,
    Data,
    /// `event_id`, and anything a later version adds: skipped.
    #[serde(other)]
    Other,
}

/// Text borrowed from the record unless it holds escapes.
#[derive(serde::Deserialize)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

#[derive(serde::Deserialize)]
struct Instant(#[serde(deserialize_with = "flowbook_store::instant")] DateTime<Utc>);

struct CanonicalVisitor;

impl<'de> Visitor<'de> for CanonicalVisitor {
    type Value = Canonical<'de>;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a stored envelope")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Canonical<'de>, A::Error> {
        let (mut position, mut stream, mut version, mut event_type) = (None, None, None, None);
        let (mut effective_at, mut recorded_at, mut actor, mut data) = (None, None, None, None);
        while let Some(field) = map.next_key::<Field>()? {
            match field {
                Field::Position => position = Some(map.next_value()?),
                Field::Stream => stream = Some(map.next_value::<Text>()?.0),
                Field::Version => version = Some(map.next_value()?),
                Field::Type => event_type = Some(map.next_value::<Text>()?.0),
                Field::EffectiveAt => effective_at = Some(map.next_value::<Instant>()?.0),
                Field::RecordedAt => recorded_at = Some(map.next_value::<Instant>()?.0),
                Field::Actor => actor = Some(map.next_value::<Text>()?.0),
                Field::Data => {
                    data = Some(map.next_value_seed(DataSeed { event_type: event_type.as_deref() })?)
                }
                Field::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let missing = <A::Error as serde::de::Error>::missing_field;
        Ok(Canonical {
            position: position.ok_or_else(|| missing("position"))?,
            stream: stream.ok_or_else(|| missing("stream"))?,
            version: version.ok_or_else(|| missing("version"))?,
            event_type: event_type.ok_or_else(|| missing("type"))?,
            effective_at: effective_at.ok_or_else(|| missing("effective_at"))?,
            recorded_at: recorded_at.ok_or_else(|| missing("recorded_at"))?,
            actor: actor.ok_or_else(|| missing("actor"))?,
            data: data.ok_or_else(|| missing("data"))?,
        })
    }
}

/// Parses `data` as the event its type (read before it) names.
struct DataSeed<'t> {
    event_type: Option<&'t str>,
}

impl<'de> DeserializeSeed<'de> for DataSeed<'_> {
    type Value = Data<'de>;

    fn deserialize<D: serde::Deserializer<'de>>(self, data: D) -> Result<Data<'de>, D::Error> {
        match self.event_type {
            Some(event_type) => EventData::deserialize(Tagged { event_type, data }).map(Data::Typed),
            None => <&RawValue>::deserialize(data).map(Data::Raw),
        }
    }
}

/// `{"type": event_type, "data": <data>}` as serde's adjacently tagged `EventData` reads it,
/// with `data` still unparsed in the record's parser: no copy, no second parse.
struct Tagged<'t, D> {
    event_type: &'t str,
    data: D,
}

impl<'de, D: serde::Deserializer<'de>> serde::Deserializer<'de> for Tagged<'_, D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        visitor.visit_map(TaggedEntries { event_type: self.event_type, data: Some(self.data), next: 0 })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
        unit unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

/// The two entries of [`Tagged`], in order.
struct TaggedEntries<'t, D> {
    event_type: &'t str,
    data: Option<D>,
    next: u8,
}

impl<'de, D: serde::Deserializer<'de>> MapAccess<'de> for TaggedEntries<'_, D> {
    type Error = D::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, D::Error> {
        let key = match self.next {
            0 => "type",
            1 => "data",
            _ => return Ok(None),
        };
        seed.deserialize(StrDeserializer::new(key)).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, D::Error> {
        self.next += 1;
        match self.next {
            1 => seed.deserialize(StrDeserializer::new(self.event_type)),
            _ => match self.data.take() {
                Some(data) => seed.deserialize(data),
                None => Err(serde::de::Error::custom("data read twice")),
            },
        }
    }
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

#[cfg(test)]
mod tests {
    use flowbook_core::{BranchId, BranchKind, MemberId, MemberStatus};

    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(seconds, 123_000_000).unwrap()
    }

    /// Canonical bytes as the log writes them (fields in its order), or with `data` first.
    fn canonical(position: u64, stream: &str, data: &EventData, data_first: bool) -> Vec<u8> {
        let (event_type, data) = data.to_parts();
        let head = format!(
            r#""position":{position},"event_id":"0190a5b2-0000-7000-8000-000000000001","stream":{},"version":3"#,
            serde_json::to_string(stream).unwrap()
        );
        let rest = format!(
            r#""type":"{event_type}","effective_at":"2024-01-02T03:04:05.123Z","recorded_at":"2024-01-03T03:04:05Z","actor":"ops\u0020desk""#
        );
        let text = if data_first {
            format!(r#"{{{head},"data":{data},{rest}}}"#)
        } else {
            format!(r#"{{{head},{rest},"data":{data}}}"#)
        };
        text.into_bytes()
    }

    fn samples() -> Vec<(String, EventData)> {
        let member = MemberId(uuid::Uuid::from_u128(7));
        let branch = BranchId(uuid::Uuid::from_u128(9));
        vec![
            (
                format!("member/{member}"),
                EventData::MemberRegistered {
                    member_id: member,
                    name: "王小明 \"小王\"\n".into(),
                    branch_id: branch,
                    status: MemberStatus::Probationary,
                },
            ),
            (
                format!("branch/{branch}"),
                EventData::BranchEstablished {
                    branch_id: branch,
                    name: "第一支部".into(),
                    kind: BranchKind::GeneralBranch,
                    parent_id: None,
                    region: "华东".into(),
                    organizations: vec!["甲公司".into(), "乙协会".into()],
                },
            ),
            (
                format!("member/{member}"),
                EventData::MemberDeparted {
                    member_id: member,
                    home_branch_id: branch,
                    destination_region: "华南".into(),
                    destination_organization: None,
                    inflow_branch_id: Some(branch),
                    certificate_no: Some("C-1".into()),
                    expected_return: Some(at(1_800_000_000)),
                },
            ),
            (format!("member/{member}"), EventData::EventRetracted { position: 41, reason: "typo".into() }),
        ]
    }

    /// The one-pass decoder, with `data` after `type` and before it, agrees with decoding the
    /// envelope in two steps.
    #[test]
    fn canonical_bytes_decode_as_the_envelope_does() {
        for (stream, data) in samples() {
            for data_first in [false, true] {
                let bytes = canonical(42, &stream, &data, data_first);
                let event = recorded_from_canonical(42, &bytes).unwrap();
                let envelope: Envelope = serde_json::from_str(&format!(
                    "{},\"hash\":\"{}\"}}",
                    std::str::from_utf8(&bytes[..bytes.len() - 1]).unwrap(),
                    "0".repeat(64)
                ))
                .unwrap();
                assert_eq!(event, recorded(&envelope).unwrap(), "{stream} data first: {data_first}");
                assert_eq!(event.data, data);
                assert_eq!(event.actor, "ops desk");
                assert_eq!(event.effective_at, at(1_704_164_645));
            }
        }
    }

    #[test]
    fn damaged_records_are_errors_not_events() {
        let (stream, data) = samples().remove(0);
        let good = String::from_utf8(canonical(42, &stream, &data, false)).unwrap();
        let cases = [
            (good.clone(), 43, "claims position 42"),
            (good.replace("member_registered", "member_renamed"), 42, "unknown variant"),
            (good.replace(r#""name":"#, r#""nickname":"#), 42, "unknown field"),
            (good.replace(r#""version":3,"#, ""), 42, "missing field `version`"),
            (good.replace("member/", "person/"), 42, "stream"),
            (format!("{good} x"), 42, "trailing"),
            (good[..good.len() - 2].to_string(), 42, "EOF"),
        ];
        let mut not_text = good.clone().into_bytes();
        let at = good.find("王").unwrap();
        not_text[at + 1] = 0xff;
        let error = recorded_from_canonical(42, &not_text).unwrap_err();
        assert!(error.detail.contains("not UTF-8"), "{}", error.detail);
        for (bytes, position, expected) in cases {
            let error = recorded_from_canonical(position, bytes.as_bytes()).unwrap_err();
            assert_eq!(error.position, position);
            assert!(error.detail.contains(expected), "{expected:?} not in {:?}", error.detail);
        }
    }
}
