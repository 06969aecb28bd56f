//! The envelope and its stored form: canonical bytes, checksum and chain hash.
//!
//! The canonical bytes of an event are its envelope serialised as JSON without the `hash` field,
//! exactly as stored; the chain hash is `SHA-256(previous hash ‖ canonical bytes)`, the first event
//! chaining from 32 zero bytes. Because the stored bytes *are* the hashed bytes, verification never
//! depends on re-serialising JSON the same way twice.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{Result, StoreError};

/// The hash the first event chains from.
pub const GENESIS_HASH: [u8; 32] = [0; 32];

const FORMAT_V1: u8 = 1;
const HEADER_BYTES: usize = 1 + 4 + 32;

/// An event as a caller hands it to [`crate::Store::append`]; the store adds position, version,
/// `recorded_at` and hash.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub stream: String,
    pub event_type: String,
    pub effective_at: DateTime<Utc>,
    pub actor: String,
    pub data: Box<RawValue>,
}

/// An event as stored and served: the envelope of API.md.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    pub position: u64,
    pub event_id: Uuid,
    pub stream: String,
    pub version: u64,
    #[serde(rename = "type")]
    pub event_type: String,
    pub effective_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub actor: String,
    pub data: Box<RawValue>,
    /// Lower-case hex of the chain hash.
    pub hash: String,
}

impl PartialEq for Envelope {
    fn eq(&self, other: &Self) -> bool {
        self.position == other.position
            && self.event_id == other.event_id
            && self.stream == other.stream
            && self.version == other.version
            && self.event_type == other.event_type
            && self.effective_at == other.effective_at
            && self.recorded_at == other.recorded_at
            && self.actor == other.actor
            && self.data.get() == other.data.get()
            && self.hash == other.hash
    }
}

impl Eq for Envelope {}

/// The hashed part of an envelope, in its fixed field order.
#[derive(Serialize)]
struct CanonicalRef<'a> {
    position: u64,
    event_id: Uuid,
    stream: &'a str,
    version: u64,
    #[serde(rename = "type")]
    event_type: &'a str,
    effective_at: &'a DateTime<Utc>,
    recorded_at: &'a DateTime<Utc>,
    actor: &'a str,
    data: &'a RawValue,
}

#[derive(Deserialize)]
struct CanonicalOwned {
    position: u64,
    event_id: Uuid,
    stream: String,
    version: u64,
    #[serde(rename = "type")]
    event_type: String,
    effective_at: DateTime<Utc>,
    recorded_at: DateTime<Utc>,
    actor: String,
    data: Box<RawValue>,
}

/// The stamps the writer gives an event.
pub(crate) struct Stamp {
    pub position: u64,
    pub version: u64,
    pub recorded_at: DateTime<Utc>,
}

/// A record ready for sled, with the hash the next event chains from.
pub(crate) struct Encoded {
    pub bytes: Vec<u8>,
    pub hash: [u8; 32],
}

pub(crate) fn chain_hash(previous: &[u8; 32], canonical: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(previous);
    hasher.update(canonical);
    hasher.finalize().into()
}

fn checksum(rest: &[u8]) -> [u8; 4] {
    crc32fast::hash(rest).to_be_bytes()
}

/// Encodes an event: canonical JSON, chain hash, checksum (computed before the bytes leave us —
/// the disk-boundary assertion is paired with [`decode`] on every read).
pub(crate) fn encode(event: &NewEvent, stamp: &Stamp, previous_hash: &[u8; 32]) -> Encoded {
    let canonical = CanonicalRef {
        position: stamp.position,
        event_id: event.event_id,
        stream: &event.stream,
        version: stamp.version,
        event_type: &event.event_type,
        effective_at: &event.effective_at,
        recorded_at: &stamp.recorded_at,
        actor: &event.actor,
        data: &event.data,
    };
    let mut bytes = Vec::with_capacity(HEADER_BYTES + 256 + event.data.get().len());
    bytes.extend_from_slice(&[FORMAT_V1, 0, 0, 0, 0]);
    bytes.extend_from_slice(&[0; 32]);
    serde_json::to_writer(&mut bytes, &canonical).expect("serialising to a Vec cannot fail");
    let hash = chain_hash(previous_hash, &bytes[HEADER_BYTES..]);
    bytes[5..HEADER_BYTES].copy_from_slice(&hash);
    let crc = checksum(&bytes[5..]);
    bytes[1..5].copy_from_slice(&crc);
    Encoded { bytes, hash }
}

/// A record read back and checked: its checksum matched and its position is the key's.
pub(crate) struct Decoded<'a> {
    pub envelope: Envelope,
    pub hash: [u8; 32],
    pub canonical: &'a [u8],
}

/// Decodes a stored record, failing loudly (never panicking) on any damage.
pub(crate) fn decode(position: u64, bytes: &[u8]) -> Result<Decoded<'_>> {
    let corrupt = |detail: String| StoreError::Corrupt { position, detail };
    if bytes.len() < HEADER_BYTES + 2 {
        return Err(corrupt(format!("record is {} bytes, shorter than a header", bytes.len())));
    }
    if bytes[0] != FORMAT_V1 {
        return Err(corrupt(format!("unknown record format {}", bytes[0])));
    }
    if bytes[1..5] != checksum(&bytes[5..]) {
        return Err(corrupt("checksum mismatch".into()));
    }
    let hash: [u8; 32] = bytes[5..HEADER_BYTES].try_into().expect("slice of 32 bytes");
    let canonical = &bytes[HEADER_BYTES..];
    let owned: CanonicalOwned = serde_json::from_slice(canonical)
        .map_err(|error| corrupt(format!("envelope does not parse: {error}")))?;
    if owned.position != position {
        return Err(corrupt(format!("record claims position {}", owned.position)));
    }
    let envelope = Envelope {
        position: owned.position,
        event_id: owned.event_id,
        stream: owned.stream,
        version: owned.version,
        event_type: owned.event_type,
        effective_at: owned.effective_at,
        recorded_at: owned.recorded_at,
        actor: owned.actor,
        data: owned.data,
        hash: hex::encode(hash),
    };
    Ok(Decoded { envelope, hash, canonical })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> NewEvent {
        NewEvent {
            event_id: Uuid::nil(),
            stream: "member/x".into(),
            event_type: "member_verified".into(),
            effective_at: DateTime::from_timestamp(1_790_000_000, 0).unwrap(),
            actor: "alice".into(),
            data: RawValue::from_string(r#"{"member_id":"x","名":"张三"}"#.into()).unwrap(),
        }
    }

    fn stamp() -> Stamp {
        Stamp { position: 7, version: 2, recorded_at: DateTime::from_timestamp(1_790_000_001, 0).unwrap() }
    }

    #[test]
    fn a_record_round_trips_and_chains_from_its_predecessor() {
        let encoded = encode(&sample(), &stamp(), &GENESIS_HASH);
        let decoded = decode(7, &encoded.bytes).unwrap();
        assert_eq!(decoded.hash, encoded.hash);
        assert_eq!(decoded.hash, chain_hash(&GENESIS_HASH, decoded.canonical));
        assert_eq!(decoded.envelope.data.get(), r#"{"member_id":"x","名":"张三"}"#);
        assert_eq!(decoded.envelope.version, 2);
        let text = std::str::from_utf8(decoded.canonical).unwrap();
        assert!(text.starts_with(r#"{"position":7,"event_id":"#), "{text}");
        assert!(text.contains(r#""effective_at":"2026-09-21T"#), "{text}");
    }

    #[test]
    fn damage_is_reported_not_panicked() {
        let encoded = encode(&sample(), &stamp(), &GENESIS_HASH);
        let mut flipped = encoded.bytes.clone();
        let last = flipped.len() - 3;
        flipped[last] ^= 0x20;
        assert!(matches!(decode(7, &flipped), Err(StoreError::Corrupt { position: 7, .. })));
        for cut in [0, 3, 40, encoded.bytes.len() - 1] {
            assert!(matches!(decode(7, &encoded.bytes[..cut]), Err(StoreError::Corrupt { .. })));
        }
        assert!(matches!(decode(8, &encoded.bytes), Err(StoreError::Corrupt { position: 8, .. })));
    }
}
