//! The envelope and its stored form: canonical bytes, chain hash, stream backlink, and the chunks
//! that pack consecutive records into one sled value.
//!
//! The canonical bytes of an event are its envelope serialised as JSON without the `hash` field,
//! exactly as stored; the chain hash is `SHA-256(previous hash ‖ canonical bytes)`, the first event
//! chaining from 32 zero bytes. Because the stored bytes *are* the hashed bytes, verification never
//! depends on re-serialising JSON the same way twice.
//!
//! Why chunks: sled 0.34 spends ~6 µs on every key it writes, plus ~6 ns per value byte (measured,
//! BENCHMARKS.md), so one key per event caps the log near 100,000 events/s whatever the disk does.
//! A chunk holds up to [`CHUNK_EVENTS_TARGET`] consecutive events of one commit, LZ4-compressed
//! (envelopes are repetitive JSON), under the key of its first position.
//!
//! Why not larger chunks: sled keeps up to 16 entries in a leaf page and reads, copies and caches
//! whole pages, and its cache accounting lags behind reads by up to 256 × 64 page accesses. A
//! chunk's size therefore sets the page size: with 64-event chunks (~13 KiB) a page was 100–200
//! KiB, every event of a member history pulled one, and after a few thousand histories at 10 M
//! events sled held ~500 MiB whatever its cache size. 16-event chunks cut that by ~450 MiB and
//! member history p50 by a third, for ~6 % of batched append throughput and ~10 % more disk
//! (BENCHMARKS.md). Logs written with 64-event chunks still read.
//!
//! Chunk value: `format (1) ‖ CRC-32 of the rest (4) ‖ first position (8) ‖ count (2) ‖ LZ4 block
//! (uncompressed size prepended)`. Inside the block, each record is `length (4) ‖ chain hash (32)
//! ‖ previous position of the same stream, 0 if none (8) ‖ canonical JSON`.

use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::chain::ChainHash;
use crate::{Result, StoreError};

/// The hash the first event chains from.
pub const GENESIS_HASH: [u8; 32] = [0; 32];

/// Events the writer puts in one chunk. Small enough that reading one event pulls little into
/// memory (see above), large enough that sled's per-key cost is spread thin.
pub const CHUNK_EVENTS_TARGET: usize = 16;

/// Uncompressed bytes after which a chunk is sealed (a chunk may exceed it by one record).
pub const CHUNK_BYTES_TARGET: usize = 8 * 1024;

/// Events a stored chunk may hold: earlier logs were written with 64 a chunk.
pub const CHUNK_EVENTS_MAX: usize = 64;

/// Uncompressed bytes a stored chunk may claim (earlier logs sealed chunks at 32 KiB); anything
/// larger is damage, not data.
const CHUNK_RAW_BYTES_MAX: usize = 32 * 1024 + crate::limits::EVENT_DATA_BYTES_MAX + 4096;

const FORMAT_CHUNK_V1: u8 = 2;
const CHUNK_HEADER_BYTES: usize = 1 + 4 + 8 + 2;
const RECORD_HEADER_BYTES: usize = 4 + 32 + 8;

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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Envelope {
    pub position: u64,
    pub event_id: Uuid,
    pub stream: String,
    pub version: u64,
    #[serde(rename = "type")]
    pub event_type: String,
    #[serde(serialize_with = "serialize_instant")]
    pub effective_at: DateTime<Utc>,
    #[serde(serialize_with = "serialize_instant")]
    pub recorded_at: DateTime<Utc>,
    pub actor: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub data: Box<RawValue>,
    /// Shown as 64 lower-case hex digits.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub hash: ChainHash,
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

#[derive(Deserialize)]
struct CanonicalOwned {
    position: u64,
    event_id: Uuid,
    stream: String,
    version: u64,
    #[serde(rename = "type")]
    event_type: String,
    #[serde(deserialize_with = "instant")]
    effective_at: DateTime<Utc>,
    #[serde(deserialize_with = "instant")]
    recorded_at: DateTime<Utc>,
    actor: String,
    data: Box<RawValue>,
}

/// Just what rebuilding stream heads needs, borrowed (no allocation per event).
#[derive(Deserialize)]
struct StreamPart<'a> {
    #[serde(borrow)]
    stream: &'a str,
    version: u64,
}

/// The text of `at` for years 0–9999 (`None` outside them: chrono writes those with a sign).
fn rfc3339<'b>(at: &DateTime<Utc>, buffer: &'b mut [u8; 32]) -> Option<&'b str> {
    use chrono::{Datelike, Timelike};
    let year = u32::try_from(at.year()).ok().filter(|year| *year <= 9999)?;
    let (mut second, mut nano) = (at.second(), at.nanosecond());
    if nano >= 1_000_000_000 {
        // A leap second, written as chrono writes it.
        second += 1;
        nano -= 1_000_000_000;
    }
    let mut text = Digits { buffer, length: 0 };
    text.number(year, 4);
    text.byte(b'-');
    text.number(at.month(), 2);
    text.byte(b'-');
    text.number(at.day(), 2);
    text.byte(b'T');
    text.number(at.hour(), 2);
    text.byte(b':');
    text.number(at.minute(), 2);
    text.byte(b':');
    text.number(second, 2);
    if nano != 0 {
        text.byte(b'.');
        match (nano % 1_000_000, nano % 1_000) {
            (0, _) => text.number(nano / 1_000_000, 3),
            (_, 0) => text.number(nano / 1_000, 6),
            _ => text.number(nano, 9),
        }
    }
    text.byte(b'Z');
    let length = text.length;
    std::str::from_utf8(&buffer[..length]).ok()
}

/// Reads an instant written as the log writes them (`rfc3339`: `YYYY-MM-DDTHH:MM:SS`, then `.`
/// and 3, 6 or 9 digits or nothing, then `Z`) without chrono's general RFC 3339 parser, which was
/// ~10 % of a rebuild's decoding. Anything else (another offset, a leap second, more digits)
/// is read by chrono.
pub fn parse_instant(text: &str) -> Option<DateTime<Utc>> {
    fast_instant(text.as_bytes()).or_else(|| DateTime::parse_from_rfc3339(text).ok().map(|at| at.to_utc()))
}

fn fast_instant(text: &[u8]) -> Option<DateTime<Utc>> {
    let number = |range: std::ops::Range<usize>| -> Option<u32> {
        text.get(range)?.iter().try_fold(0u32, |value, digit| {
            digit.is_ascii_digit().then(|| value * 10 + u32::from(digit - b'0'))
        })
    };
    let shape = text.len() >= 20
        && text[4] == b'-'
        && text[7] == b'-'
        && text[10] == b'T'
        && text[13] == b':'
        && text[16] == b':'
        && text[text.len() - 1] == b'Z';
    if !shape {
        return None;
    }
    let nano = match text.len() - 20 {
        0 => 0,
        digits @ (4 | 7 | 10) if text[19] == b'.' => number(20..19 + digits)? * 10u32.pow(10 - digits as u32),
        _ => return None,
    };
    let date = chrono::NaiveDate::from_ymd_opt(number(0..4)? as i32, number(5..7)?, number(8..10)?)?;
    let time = chrono::NaiveTime::from_hms_nano_opt(number(11..13)?, number(14..16)?, number(17..19)?, nano)?;
    Some(date.and_time(time).and_utc())
}

/// Deserializes an instant with [`parse_instant`], borrowing the text (no allocation).
pub fn instant<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<DateTime<Utc>, D::Error> {
    struct Instant;
    impl serde::de::Visitor<'_> for Instant {
        type Value = DateTime<Utc>;
        fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
            formatter.write_str("an RFC 3339 instant")
        }
        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<DateTime<Utc>, E> {
            parse_instant(text).ok_or_else(|| E::custom(format!("{text:?} is not an RFC 3339 instant")))
        }
    }
    deserializer.deserialize_str(Instant)
}

/// Serialises an instant exactly as chrono's serde does, but at once (see [`json_instant`]): an
/// envelope's two instants written by chrono, a character at a time through serde_json's
/// escaping, were ~5 % of the instructions of a 64-client HTTP write (callgrind, BENCHMARKS.md).
pub fn serialize_instant<S: serde::Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    let mut buffer = [0u8; 32];
    match rfc3339(at, &mut buffer) {
        Some(text) => serializer.serialize_str(text),
        None => at.serialize(serializer),
    }
}

/// ASCII digits written into a fixed buffer.
struct Digits<'b> {
    buffer: &'b mut [u8; 32],
    length: usize,
}

impl Digits<'_> {
    fn byte(&mut self, byte: u8) {
        self.buffer[self.length] = byte;
        self.length += 1;
    }

    /// `value` in exactly `width` digits, zero-padded (values are below 10^width).
    fn number(&mut self, mut value: u32, width: usize) {
        for place in (self.length..self.length + width).rev() {
            self.buffer[place] = b'0' + (value % 10) as u8;
            value /= 10;
        }
        self.length += width;
    }
}

/// A request's events as canonical bytes but for the writer's stamps (position, version,
/// `recorded_at`), rendered on the appending thread. Serialising was ~15 % of the writer's time,
/// and the writer is the one thread every append passes through; the stamps are spliced in
/// between the parts (`ChunkWriter::push`), giving exactly the bytes serde_json writes for the
/// whole envelope (tested against it).
///
/// A large request is rendered while the writer already stamps it (`Rendered::pending`, then
/// `fill` after queueing): the writer takes each event as soon as its slot is set, so the
/// appending thread's rendering and the writer's stamping overlap on the two cores instead of
/// running one after the other (BENCHMARKS.md, issue 5, eleventh session).
pub(crate) struct Rendered {
    /// Per event, its bytes and where its first two parts end, set once, in order. One buffer
    /// per event, not one per request: a request's worth (~330 KiB for 1,000 events) is a large
    /// allocation, which the allocator returns to the OS when freed and the kernel zeroes again
    /// for the next request.
    events: Box<[OnceLock<RenderedEvent>]>,
}

type RenderedEvent = (Vec<u8>, [usize; 2]);

/// Spins before yielding while the writer waits for an event still being rendered: rendering one
/// takes ~0.4 µs, so the wait is usually shorter than a trip through the scheduler.
const RENDER_WAIT_SPINS: u32 = 200;

impl Rendered {
    /// Every event rendered at once.
    pub fn of(events: &[NewEvent]) -> Rendered {
        let rendered = Rendered::pending(events.len());
        rendered.fill(events);
        rendered
    }

    /// Slots for `count` events, none rendered yet: [`Rendered::fill`] must follow, on the
    /// appending thread, for every one — the writer waits for each slot it reaches.
    pub fn pending(count: usize) -> Rendered {
        Rendered { events: (0..count).map(|_| OnceLock::new()).collect() }
    }

    /// Renders `events` into the slots, in order. Nothing in it can fail (it writes to `Vec`s),
    /// so a writer waiting on a slot is never left waiting.
    pub fn fill(&self, events: &[NewEvent]) {
        debug_assert_eq!(events.len(), self.events.len());
        for (slot, event) in self.events.iter().zip(events) {
            let _ = slot.set(render(event));
        }
    }

    /// The parts of the `index`th event, waiting for it to be rendered.
    fn parts(&self, index: usize) -> [&[u8]; 3] {
        let slot = &self.events[index];
        let mut spins = 0;
        let (bytes, [first, second]) = loop {
            if let Some(event) = slot.get() {
                break event;
            }
            if spins < RENDER_WAIT_SPINS {
                spins += 1;
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        };
        [&bytes[..*first], &bytes[*first..*second], &bytes[*second..]]
    }
}

/// One event's bytes and where its first two parts end.
fn render(event: &NewEvent) -> RenderedEvent {
    // The fixed text and instants take ~140 bytes; only escapes could need more.
    let estimate =
        event.data.get().len() + event.stream.len() + event.event_type.len() + event.actor.len() + 160;
    let mut bytes = Vec::with_capacity(estimate);
    // After "position": the id and the stream.
    bytes.extend_from_slice(br#","event_id":""#);
    bytes.extend_from_slice(event.event_id.hyphenated().encode_lower(&mut Uuid::encode_buffer()).as_bytes());
    bytes.extend_from_slice(br#"","stream":"#);
    json_string(&mut bytes, &event.stream);
    let first = bytes.len();
    // After "version": the type and the effective time.
    bytes.extend_from_slice(br#","type":"#);
    json_string(&mut bytes, &event.event_type);
    bytes.extend_from_slice(br#","effective_at":"#);
    json_instant(&mut bytes, &event.effective_at);
    let second = bytes.len();
    // After "recorded_at": the actor and the data, and the end.
    bytes.extend_from_slice(br#","actor":"#);
    json_string(&mut bytes, &event.actor);
    bytes.extend_from_slice(br#","data":"#);
    bytes.extend_from_slice(event.data.get().as_bytes());
    bytes.push(b'}');
    (bytes, [first, second])
}

/// `text` as a JSON string, escaped as serde_json escapes it.
fn json_string(out: &mut Vec<u8>, text: &str) {
    serde_json::to_writer(out, text).expect("writing to a Vec cannot fail");
}

/// An instant exactly as chrono's serde writes it — RFC 3339 with `Z`, and a fraction of 0, 3, 6
/// or 9 digits, whichever is the shortest exact one — but at once: chrono writes it a character
/// at a time through serde_json's escaping, which was ~9 % of the writer's time (two instants per
/// event).
fn json_instant(out: &mut Vec<u8>, at: &DateTime<Utc>) {
    let mut buffer = [0u8; 32];
    match rfc3339(at, &mut buffer) {
        Some(text) => {
            out.push(b'"');
            out.extend_from_slice(text.as_bytes());
            out.push(b'"');
        }
        None => json_string(out, &at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
    }
}

/// What the writer gave a request's events: the appending thread, which kept them, makes their
/// envelopes of it once the commit is durable — the writer neither moves them nor formats hashes.
pub(crate) struct Stamped {
    pub first_position: u64,
    pub recorded_at: DateTime<Utc>,
    /// Per event, in order: its version and chain hash.
    pub stamps: Vec<(u64, [u8; 32])>,
}

impl Stamped {
    /// The envelopes of `events`, the request these stamps are for.
    pub fn envelopes(self, events: Vec<NewEvent>) -> Vec<Envelope> {
        debug_assert_eq!(events.len(), self.stamps.len());
        let recorded_at = self.recorded_at;
        (self.first_position..)
            .zip(events.into_iter().zip(self.stamps))
            .map(|(position, (event, (version, hash)))| Envelope {
                position,
                event_id: event.event_id,
                stream: event.stream,
                version,
                event_type: event.event_type,
                effective_at: event.effective_at,
                recorded_at,
                actor: event.actor,
                data: event.data,
                hash: ChainHash(hash),
            })
            .collect()
    }
}

/// The stamps the writer gives an event.
pub(crate) struct Stamp {
    pub position: u64,
    pub version: u64,
    pub recorded_at: DateTime<Utc>,
    /// The stream's previous event (0: this is its first).
    pub previous_in_stream: u64,
}

pub(crate) fn chain_hash(previous: &[u8; 32], canonical: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(previous);
    hasher.update(canonical);
    hasher.finalize().into()
}

/// One chunk's records, stamped and chained, not yet compressed: what the writer hands the sealer.
pub(crate) struct RawChunk {
    pub first_position: u64,
    pub count: usize,
    pub raw: Vec<u8>,
}

impl RawChunk {
    /// The chunk as stored: compressed, framed and checksummed.
    #[cfg(test)]
    pub fn seal(&self) -> Vec<u8> {
        Sealing::default().seal(self).to_vec()
    }
}

/// What sealing one chunk after another reuses: LZ4's hash table (a call without one allocates
/// and zeroes 8 KiB) and the output, kept at the largest length it has had (so that it is not
/// zeroed again for LZ4's worst case, ~8.3 KiB, before every chunk). Each thread that seals
/// keeps one.
#[derive(Default)]
pub(crate) struct Sealing {
    table: lz4_flex::block::CompressTable,
    output: Vec<u8>,
}

impl Sealing {
    /// The chunk as stored: compressed, framed and checksummed (valid until the next seal).
    pub fn seal(&mut self, chunk: &RawChunk) -> &[u8] {
        let length = seal_chunk_into(chunk.first_position, chunk.count, &chunk.raw, self);
        &self.output[..length]
    }
}

/// Builds a commit's chunks, one at a time: the writer takes each as it fills.
#[derive(Default)]
pub(crate) struct ChunkWriter {
    first_position: u64,
    count: usize,
    raw: Vec<u8>,
    /// The last `recorded_at` written and its JSON: every event of a commit has the same, and
    /// formatting it per event was a twentieth of the writer's time.
    instant: Option<(DateTime<Utc>, Vec<u8>)>,
}

impl ChunkWriter {
    /// Adds the `index`th event of a rendered request; returns its chain hash.
    pub fn push(
        &mut self,
        rendered: &Rendered,
        index: usize,
        stamp: &Stamp,
        previous_hash: &[u8; 32],
    ) -> [u8; 32] {
        if self.count == 0 {
            self.first_position = stamp.position;
        }
        debug_assert_eq!(
            stamp.position,
            self.first_position + self.count as u64,
            "chunks hold consecutive events"
        );
        let [after_position, after_version, after_recorded_at] = rendered.parts(index);
        let start = self.raw.len();
        self.raw.extend_from_slice(&[0; RECORD_HEADER_BYTES]);
        let mut digits = itoa::Buffer::new();
        self.raw.extend_from_slice(br#"{"position":"#);
        self.raw.extend_from_slice(digits.format(stamp.position).as_bytes());
        self.raw.extend_from_slice(after_position);
        self.raw.extend_from_slice(br#","version":"#);
        self.raw.extend_from_slice(digits.format(stamp.version).as_bytes());
        self.raw.extend_from_slice(after_version);
        self.raw.extend_from_slice(br#","recorded_at":"#);
        match &self.instant {
            Some((at, json)) if *at == stamp.recorded_at => self.raw.extend_from_slice(json),
            _ => {
                let mut json = Vec::with_capacity(40);
                json_instant(&mut json, &stamp.recorded_at);
                self.raw.extend_from_slice(&json);
                self.instant = Some((stamp.recorded_at, json));
            }
        }
        self.raw.extend_from_slice(after_recorded_at);
        let hash = chain_hash(previous_hash, &self.raw[start + RECORD_HEADER_BYTES..]);
        let length = u32::try_from(self.raw.len() - start - 4).expect("a record is far below 4 GiB");
        self.raw[start..start + 4].copy_from_slice(&length.to_be_bytes());
        self.raw[start + 4..start + 36].copy_from_slice(&hash);
        self.raw[start + 36..start + 44].copy_from_slice(&stamp.previous_in_stream.to_be_bytes());
        self.count += 1;
        hash
    }

    /// Whether the chunk being built holds as much as a chunk should.
    pub fn is_full(&self) -> bool {
        self.count == CHUNK_EVENTS_TARGET || self.raw.len() >= CHUNK_BYTES_TARGET
    }

    /// The chunk being built (`None`: it is empty); the next one is built in `buffer` (a spent
    /// chunk's, so that a steady stream of chunks allocates nothing).
    pub fn take(&mut self, mut buffer: Vec<u8>) -> Option<RawChunk> {
        if self.count == 0 {
            return None;
        }
        buffer.clear();
        let raw = std::mem::replace(&mut self.raw, buffer);
        let chunk = RawChunk { first_position: self.first_position, count: self.count, raw };
        self.count = 0;
        Some(chunk)
    }
}

/// Compresses a chunk's records and frames them with the header and checksum.
fn seal_chunk(first_position: u64, count: usize, raw: &[u8]) -> Vec<u8> {
    let mut sealing = Sealing::default();
    let length = seal_chunk_into(first_position, count, raw, &mut sealing);
    sealing.output.truncate(length);
    sealing.output
}

/// Bytes before the LZ4 block: format, CRC-32, first position, count, raw length.
const SEALED_HEADER_BYTES: usize = CHUNK_HEADER_BYTES + 4;

/// The header, then the raw length (`u32`, little-endian: lz4_flex's size-prepended form), then
/// the LZ4 block, compressed straight into `sealing`'s output; the checksum covers all after
/// itself. Returns the sealed length (the output may be longer).
fn seal_chunk_into(first_position: u64, count: usize, raw: &[u8], sealing: &mut Sealing) -> usize {
    let raw_length = u32::try_from(raw.len()).expect("a chunk is far below 4 GiB");
    let count = u16::try_from(count).expect("at most CHUNK_EVENTS_MAX");
    let largest = SEALED_HEADER_BYTES + lz4_flex::block::get_maximum_output_size(raw.len());
    let value = &mut sealing.output;
    if value.len() < largest {
        value.resize(largest, 0);
    }
    value[0] = FORMAT_CHUNK_V1;
    value[5..13].copy_from_slice(&first_position.to_be_bytes());
    value[13..15].copy_from_slice(&count.to_be_bytes());
    value[15..SEALED_HEADER_BYTES].copy_from_slice(&raw_length.to_le_bytes());
    let written = lz4_flex::block::compress_into_with_table(
        raw,
        &mut value[SEALED_HEADER_BYTES..largest],
        &mut sealing.table,
    )
    .expect("the buffer holds LZ4's worst case");
    let length = SEALED_HEADER_BYTES + written;
    let crc = crc32fast::hash(&value[5..length]).to_be_bytes();
    value[1..5].copy_from_slice(&crc);
    length
}

/// A stored chunk, checked and decompressed.
pub(crate) struct Chunk {
    pub first_position: u64,
    raw: Vec<u8>,
    /// Offset of each record in `raw`.
    offsets: Vec<usize>,
}

/// One record of a chunk, borrowed.
pub(crate) struct Record<'a> {
    pub position: u64,
    pub hash: [u8; 32],
    pub previous_in_stream: u64,
    pub canonical: &'a [u8],
}

impl Chunk {
    /// Checks and opens a stored chunk, failing loudly (never panicking) on any damage. A damaged
    /// chunk is reported at its first position: the checksum covers the chunk as a whole.
    pub fn decode(key_position: u64, value: &[u8]) -> Result<Chunk> {
        let corrupt = |detail: String| StoreError::Corrupt { position: key_position, detail };
        if value.len() < CHUNK_HEADER_BYTES + 4 {
            return Err(corrupt(format!("chunk is {} bytes, shorter than a header", value.len())));
        }
        if value[0] != FORMAT_CHUNK_V1 {
            return Err(corrupt(format!("unknown chunk format {}", value[0])));
        }
        if value[1..5] != crc32fast::hash(&value[5..]).to_be_bytes() {
            return Err(corrupt("checksum mismatch".into()));
        }
        let first_position = u64::from_be_bytes(value[5..13].try_into().expect("8 bytes"));
        let count = usize::from(u16::from_be_bytes(value[13..15].try_into().expect("2 bytes")));
        if first_position != key_position || count == 0 || count > CHUNK_EVENTS_MAX {
            return Err(corrupt(format!("chunk header claims {count} events from {first_position}")));
        }
        let compressed = &value[CHUNK_HEADER_BYTES..];
        let claimed = u32::from_le_bytes(compressed[..4].try_into().expect("4 bytes")) as usize;
        if claimed > CHUNK_RAW_BYTES_MAX {
            return Err(corrupt(format!("chunk claims {claimed} uncompressed bytes")));
        }
        let raw = lz4_flex::block::decompress_size_prepended(compressed)
            .map_err(|error| corrupt(format!("chunk does not decompress: {error}")))?;
        let mut offsets = Vec::with_capacity(count);
        let mut at = 0;
        while at < raw.len() {
            let length = raw
                .get(at..at + 4)
                .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")) as usize)
                .filter(|length| *length >= RECORD_HEADER_BYTES - 4 + 2 && at + 4 + length <= raw.len())
                .ok_or_else(|| corrupt("record length runs past the chunk".into()))?;
            offsets.push(at);
            at += 4 + length;
        }
        if offsets.len() != count {
            return Err(corrupt(format!("chunk holds {} records, header says {count}", offsets.len())));
        }
        Ok(Chunk { first_position, raw, offsets })
    }

    pub fn last_position(&self) -> u64 {
        self.first_position + self.offsets.len() as u64 - 1
    }

    pub fn contains(&self, position: u64) -> bool {
        position >= self.first_position && position <= self.last_position()
    }

    pub fn record(&self, position: u64) -> Option<Record<'_>> {
        let index = usize::try_from(position.checked_sub(self.first_position)?).ok()?;
        let at = *self.offsets.get(index)?;
        let length = u32::from_be_bytes(self.raw[at..at + 4].try_into().expect("checked at decode")) as usize;
        Some(Record {
            position,
            hash: self.raw[at + 4..at + 36].try_into().expect("32 bytes"),
            previous_in_stream: u64::from_be_bytes(self.raw[at + 36..at + 44].try_into().expect("8 bytes")),
            canonical: &self.raw[at + RECORD_HEADER_BYTES..at + 4 + length],
        })
    }

    pub fn records(&self) -> impl Iterator<Item = Record<'_>> {
        (self.first_position..=self.last_position()).filter_map(|position| self.record(position))
    }

    /// The chunk framed again with each record's canonical bytes passed through `edit` and
    /// hashes and backlinks kept: what a forger who knows the format would store (damage tests).
    pub fn reframed(&self, mut edit: impl FnMut(u64, &[u8]) -> Vec<u8>) -> Vec<u8> {
        let mut raw = Vec::new();
        for record in self.records() {
            let canonical = edit(record.position, record.canonical);
            let length = u32::try_from(RECORD_HEADER_BYTES - 4 + canonical.len()).expect("small");
            raw.extend_from_slice(&length.to_be_bytes());
            raw.extend_from_slice(&record.hash);
            raw.extend_from_slice(&record.previous_in_stream.to_be_bytes());
            raw.extend_from_slice(&canonical);
        }
        seal_chunk(self.first_position, self.offsets.len(), &raw)
    }
}

impl Record<'_> {
    /// The served envelope; checks that the record is where it claims to be.
    pub fn envelope(&self) -> Result<Envelope> {
        let corrupt = |detail: String| StoreError::Corrupt { position: self.position, detail };
        // Checked as UTF-8 once, whole, and parsed as text: from bytes, serde_json checks each
        // string and key on its own (see `flowbook_projections::codec`, where that was measured).
        let text = std::str::from_utf8(self.canonical)
            .map_err(|error| corrupt(format!("envelope is not UTF-8: {error}")))?;
        let owned: CanonicalOwned = serde_json::from_str(text)
            .map_err(|error| corrupt(format!("envelope does not parse: {error}")))?;
        if owned.position != self.position {
            return Err(corrupt(format!("record claims position {}", owned.position)));
        }
        Ok(Envelope {
            position: owned.position,
            event_id: owned.event_id,
            stream: owned.stream,
            version: owned.version,
            event_type: owned.event_type,
            effective_at: owned.effective_at,
            recorded_at: owned.recorded_at,
            actor: owned.actor,
            data: owned.data,
            hash: ChainHash(self.hash),
        })
    }

    /// The record's stream and version, without building the envelope.
    pub fn stream_and_version(&self) -> Result<(&str, u64)> {
        let part: StreamPart<'_> =
            serde_json::from_slice(self.canonical).map_err(|error| StoreError::Corrupt {
                position: self.position,
                detail: format!("envelope does not parse: {error}"),
            })?;
        Ok((part.stream, part.version))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: u64) -> NewEvent {
        NewEvent {
            event_id: Uuid::nil(),
            stream: "member/x".into(),
            event_type: "member_verified".into(),
            effective_at: DateTime::from_timestamp(1_790_000_000, 0).unwrap(),
            actor: "alice".into(),
            data: RawValue::from_string(format!(r#"{{"n":{n},"名":"张三"}}"#)).unwrap(),
        }
    }

    fn stamp(position: u64) -> Stamp {
        Stamp {
            position,
            version: position,
            recorded_at: DateTime::from_timestamp(1_790_000_001, 0).unwrap(),
            previous_in_stream: position - 1,
        }
    }

    /// `count` sample events from position 7, stamped and chained from `rendered` into chunks.
    fn raw_chunks(rendered: &Rendered, count: u64) -> Vec<RawChunk> {
        let mut writer = ChunkWriter::default();
        let mut previous = GENESIS_HASH;
        let mut raws = Vec::new();
        for position in 7..7 + count {
            previous = writer.push(rendered, (position - 7) as usize, &stamp(position), &previous);
            if writer.is_full() {
                raws.push(writer.take(Vec::new()).expect("a full chunk"));
            }
        }
        raws.extend(writer.take(Vec::new()));
        raws
    }

    fn chunks(count: u64) -> Vec<(u64, Vec<u8>)> {
        let events: Vec<NewEvent> = (7..7 + count).map(sample).collect();
        let raws = raw_chunks(&Rendered::of(&events), count);
        raws.iter().map(|chunk| (chunk.first_position, chunk.seal())).collect()
    }

    #[test]
    fn records_round_trip_through_chunks_and_chain() {
        let sealed = chunks(100);
        let firsts: Vec<u64> = sealed.iter().map(|(first, _)| *first).collect();
        assert_eq!(firsts, (7..107).step_by(CHUNK_EVENTS_TARGET).collect::<Vec<_>>());
        let mut previous = GENESIS_HASH;
        for (first, value) in &sealed {
            let chunk = Chunk::decode(*first, value).unwrap();
            for record in chunk.records() {
                assert_eq!(record.hash, chain_hash(&previous, record.canonical));
                assert_eq!(record.previous_in_stream, record.position - 1);
                let envelope = record.envelope().unwrap();
                assert_eq!(envelope.position, record.position);
                assert_eq!(envelope.data.get(), format!(r#"{{"n":{},"名":"张三"}}"#, record.position));
                previous = record.hash;
            }
        }
        let text = std::str::from_utf8(Chunk::decode(7, &sealed[0].1).unwrap().record(7).unwrap().canonical)
            .unwrap()
            .to_owned();
        assert!(text.starts_with(r#"{"position":7,"event_id":"#), "{text}");
        assert!(text.contains(r#""effective_at":"2026-09-21T14:13:20Z""#), "{text}");
    }

    #[test]
    fn instants_are_written_exactly_as_chrono_writes_them() {
        use chrono::{NaiveDate, TimeDelta};
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let fractions = [0, 1, 999, 1_000, 120_000, 5_000_000, 123_456_789, 999_999_999];
        let mut instants: Vec<DateTime<Utc>> = (0..20_000)
            .map(|n| {
                let seconds = (next() % (10_000 * 365 * 86_400)) as i64 - 62_167_219_200;
                let nanos =
                    if n % 2 == 0 { fractions[n % fractions.len()] } else { (next() % 1_000_000_000) as u32 };
                DateTime::from_timestamp(seconds, nanos).unwrap()
            })
            .collect();
        let leap = NaiveDate::from_ymd_opt(2016, 12, 31).unwrap().and_hms_nano_opt(23, 59, 59, 1_500_000_000);
        instants.push(leap.unwrap().and_utc());
        instants.push(DateTime::<Utc>::MIN_UTC);
        instants.push(DateTime::<Utc>::MAX_UTC);
        instants.push(DateTime::from_timestamp(-62_167_219_200, 0).unwrap() - TimeDelta::nanoseconds(1));
        #[derive(Serialize)]
        struct Ours(#[serde(serialize_with = "serialize_instant")] DateTime<Utc>);
        for at in instants {
            let mut ours = Vec::new();
            json_instant(&mut ours, &at);
            let chrono = serde_json::to_vec(&at).unwrap();
            assert_eq!(ours, chrono, "{at:?}");
            assert_eq!(serde_json::to_vec(&Ours(at)).unwrap(), chrono, "{at:?}");
            // And read back exactly as chrono reads it.
            let text = std::str::from_utf8(&ours[1..ours.len() - 1]).unwrap();
            let by_chrono = DateTime::parse_from_rfc3339(text).ok().map(|at| at.to_utc());
            assert_eq!(parse_instant(text), by_chrono, "{text}");
            if by_chrono.is_some() {
                assert_eq!(parse_instant(text), Some(at), "{text}");
            }
        }
    }

    #[test]
    fn instants_not_written_by_the_log_are_read_as_chrono_reads_them() {
        for text in [
            "2026-11-23T01:02:03Z",
            "2026-11-23T01:02:03.5Z",
            "2026-11-23T01:02:03.12345Z",
            "2026-11-23T01:02:03.1234567891Z",
            "2026-11-23T01:02:03+08:00",
            "2026-11-23t01:02:03z",
            "2026-11-23 01:02:03Z",
            "2026-02-30T01:02:03Z",
            "2026-11-23T24:00:00Z",
            "2016-12-31T23:59:60Z",
            "2026-1-23T01:02:03.000Z",
            "2026-11-23T01:02:03.0a0Z",
            "+2026-11-23T01:02:03Z",
            "",
            "not a time",
        ] {
            let by_chrono = DateTime::parse_from_rfc3339(text).ok().map(|at| at.to_utc());
            assert_eq!(parse_instant(text), by_chrono, "{text:?}");
        }
    }

    /// The envelope as serde_json and chrono write it, field by field: what the canonical bytes
    /// spliced from rendered parts and stamps must equal.
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

    #[test]
    fn events_rendered_while_being_stamped_give_the_same_bytes() {
        let events: Vec<NewEvent> = (7..7 + 500).map(sample).collect();
        let bytes = |rendered: &Rendered| -> Vec<Vec<u8>> {
            raw_chunks(rendered, 500).into_iter().map(|chunk| chunk.raw).collect()
        };
        let whole = bytes(&Rendered::of(&events));
        let rendered = std::sync::Arc::new(Rendered::pending(events.len()));
        let filling = {
            let (rendered, events) = (std::sync::Arc::clone(&rendered), events.clone());
            std::thread::spawn(move || {
                // Late, so that the stamping below waits for slots on its way.
                std::thread::sleep(std::time::Duration::from_millis(20));
                rendered.fill(&events);
            })
        };
        assert_eq!(bytes(&rendered), whole);
        filling.join().unwrap();
    }

    #[test]
    fn canonical_bytes_are_exactly_what_serde_writes() {
        let awkward = [
            "",
            "plain",
            "张三 李四",
            "quote \" and \\ backslash",
            "tab\tnew\nline\u{1}\u{7f}",
            "emoji 🎉 /slash",
        ];
        let mut events = Vec::new();
        for (n, text) in awkward.iter().enumerate() {
            events.push(NewEvent {
                event_id: Uuid::from_u128(0x0191_e6a4_1c2b_7d3e_8f40_1234_5678_9abc + n as u128),
                stream: format!("member/{text}"),
                event_type: format!("type {text}"),
                effective_at: DateTime::from_timestamp(1_790_000_000 + n as i64 * 7_777, n as u32 * 1_001)
                    .unwrap(),
                actor: text.to_string(),
                data: RawValue::from_string(
                    serde_json::to_string(&serde_json::json!({"text": text, "n": [n, {"x": null}]})).unwrap(),
                )
                .unwrap(),
            });
        }
        let rendered = Rendered::of(&events);
        let mut previous = GENESIS_HASH;
        // One writer for all, each event a chunk of its own: every recorded_at differs from the
        // last one the writer formatted.
        let mut writer = ChunkWriter::default();
        for (index, event) in events.iter().enumerate() {
            let position = u64::MAX - 10 + index as u64;
            let stamp = Stamp {
                position,
                version: 1 + index as u64 * 1_000_000_007,
                recorded_at: DateTime::from_timestamp(1_800_000_000, index as u32 * 123_000).unwrap(),
                previous_in_stream: 0,
            };
            previous = writer.push(&rendered, index, &stamp, &previous);
            let expected = serde_json::to_vec(&CanonicalRef {
                position,
                event_id: event.event_id,
                stream: &event.stream,
                version: stamp.version,
                event_type: &event.event_type,
                effective_at: &event.effective_at,
                recorded_at: &stamp.recorded_at,
                actor: &event.actor,
                data: &event.data,
            })
            .unwrap();
            let raw = writer.take(Vec::new()).unwrap();
            let chunk = Chunk::decode(raw.first_position, &raw.seal()).unwrap();
            assert_eq!(chunk.record(position).unwrap().canonical, &expected[..], "event {index}");
        }
    }

    #[test]
    fn sealing_into_a_buffer_frames_as_lz4_flex_prepends_sizes() {
        // The frame every stored chunk has: header, then lz4_flex's size-prepended block.
        let (first, sealed) = chunks(16).remove(0);
        let chunk = Chunk::decode(first, &sealed).unwrap();
        let mut raw = Vec::new();
        for record in chunk.records() {
            let length = u32::try_from(RECORD_HEADER_BYTES - 4 + record.canonical.len()).unwrap();
            raw.extend_from_slice(&length.to_be_bytes());
            raw.extend_from_slice(&record.hash);
            raw.extend_from_slice(&record.previous_in_stream.to_be_bytes());
            raw.extend_from_slice(record.canonical);
        }
        let block = lz4_flex::block::compress_prepend_size(&raw);
        assert_eq!(&sealed[CHUNK_HEADER_BYTES..], &block[..]);
        // Sealing reused after a larger chunk (its output longer, its table full of that chunk's
        // places) seals the same bytes.
        let mut reused = Sealing::default();
        let larger: Vec<u8> = raw.iter().chain(raw.iter()).chain(raw.iter()).copied().collect();
        let larger_length = seal_chunk_into(first, 48, &larger, &mut reused);
        assert!(larger_length > sealed.len());
        let length = seal_chunk_into(first, 16, &raw, &mut reused);
        assert_eq!(&reused.output[..length], &sealed[..]);
    }

    #[test]
    fn chunks_of_earlier_logs_still_read() {
        // Earlier logs sealed chunks of up to 64 events: frame one such chunk by hand.
        let one_chunk = chunks(CHUNK_EVENTS_MAX as u64);
        let mut raw = Vec::new();
        for (first, value) in &one_chunk {
            let chunk = Chunk::decode(*first, value).unwrap();
            raw.extend_from_slice(&chunk.raw);
        }
        let wide = seal_chunk(7, CHUNK_EVENTS_MAX, &raw);
        let chunk = Chunk::decode(7, &wide).unwrap();
        assert_eq!(chunk.last_position(), 7 + CHUNK_EVENTS_MAX as u64 - 1);
        assert_eq!(chunk.record(70).unwrap().envelope().unwrap().position, 70);
        let too_many = seal_chunk(7, CHUNK_EVENTS_MAX + 1, &raw);
        assert!(matches!(Chunk::decode(7, &too_many), Err(StoreError::Corrupt { .. })));
    }

    #[test]
    fn damage_is_reported_not_panicked() {
        let (first, value) = chunks(3).remove(0);
        let mut flipped = value.clone();
        let last = flipped.len() - 3;
        flipped[last] ^= 0x20;
        assert!(matches!(Chunk::decode(first, &flipped), Err(StoreError::Corrupt { position: 7, .. })));
        for cut in [0, 3, 20, value.len() - 1] {
            assert!(matches!(Chunk::decode(first, &value[..cut]), Err(StoreError::Corrupt { .. })));
        }
        assert!(matches!(Chunk::decode(8, &value), Err(StoreError::Corrupt { position: 8, .. })));
    }

    /// Canonical bytes that are not UTF-8 (or not an envelope) are damage at their position.
    #[test]
    fn an_envelope_that_is_not_text_is_damage() {
        let (first, value) = chunks(1).remove(0);
        let chunk = Chunk::decode(first, &value).unwrap();
        let record = chunk.record(7).unwrap();
        assert_eq!(record.envelope().unwrap().position, 7);
        let mut bytes = record.canonical.to_vec();
        let quote = bytes.iter().rposition(|b| *b == b'"').unwrap();
        bytes[quote - 1] = 0xff;
        let damaged = Record { canonical: &bytes, ..record };
        match damaged.envelope() {
            Err(StoreError::Corrupt { position: 7, detail }) => {
                assert!(detail.contains("not UTF-8"), "{detail}")
            }
            other => panic!("{other:?}"),
        }
        let not_json = Record { canonical: b"{\"position\":7", ..record };
        assert!(matches!(not_json.envelope(), Err(StoreError::Corrupt { position: 7, .. })));
    }
}
