//! Stream heads: each stream's version and the position of its last event, in memory.
//!
//! They answer `expected_version` checks and are where stream reads start (each record links
//! back to its stream's previous event). They are derived data: the log alone can rebuild them.
//! To keep opening fast, a snapshot file (`heads.snapshot`) is written on a clean close and every
//! [`crate::limits::HEADS_SNAPSHOT_EVERY_EVENTS`] events; opening loads it and replays only the
//! log after it. A missing, damaged or impossible snapshot just means a longer replay.
//!
//! Memory: 37–73 bytes per stream (a member or a branch) named `<prefix>/<uuid>`, see `table.rs`.

use foldhash::HashMap;

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use crate::chunks;
use crate::{Result, StoreError};

mod table;

use table::PackedHeads;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Head {
    pub version: u64,
    pub position: u64,
}

/// Stream heads by stream name.
///
/// Names of the form `<prefix>/<uuid>` in lower-case hyphenated form — every stream flowbook
/// writes — are kept as a prefix number and the uuid's 16 bytes rather than a 43-byte string on
/// the heap, in 32-byte slots of a table of our own (`table.rs`): at a million streams 32–64 MiB
/// instead of ~130 as strings. Any other name is kept as text, in a
/// map of its own, so that looking one up needs no key built on the heap.
#[derive(Default)]
pub(crate) struct HeadMap {
    /// Prefixes seen, numbered (at most 256; names with further prefixes are kept as text).
    prefixes: Vec<Box<str>>,
    packed: PackedHeads,
    text: HashMap<Box<str>, Head>,
}

/// Heads ahead of the one being looked up whose place is prefetched: enough to cover a miss
/// (~100–300 ns) with the ~30 ns each lookup takes once its line is in, few enough not to crowd
/// the core's outstanding misses.
pub(crate) const LOOKAHEAD_HEADS: usize = 8;

/// Visits `keys` in order (with each one's index), each one's place in `heads` prefetched
/// `lookahead` keys before its visit (none with 0): the writer's lookups, and the measure of them
/// in `parts.rs`.
pub(crate) fn visit_prefetched<'k>(
    heads: &HeadMap,
    keys: &'k [StreamKey],
    lookahead: usize,
    mut visit: impl FnMut(usize, &'k StreamKey),
) {
    for key in keys.iter().take(lookahead) {
        heads.prefetch(key);
    }
    for (index, key) in keys.iter().enumerate() {
        if lookahead > 0 {
            if let Some(ahead) = keys.get(index + lookahead) {
                heads.prefetch(ahead);
            }
        }
        visit(index, key);
    }
}

/// A `<prefix>/<uuid>` name: the prefix's number and the uuid's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct PackedName {
    prefix: u8,
    id: [u8; 16],
}

/// A stream's name as the head map keeps it, worked out once per event by the writer and used
/// for every lookup of that event and for publishing it: parsing and hashing the 43-byte name
/// three times an event, and a `String` for it in the commit's map, were a quarter of the
/// writer's time. A name's key never changes form: prefixes are numbered when first keyed and
/// never renumbered, and a name kept as text stays text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum StreamKey {
    Packed(PackedName),
    Text(Box<str>),
}

/// Where a name is kept.
enum Place<'a> {
    Packed(PackedName),
    /// Packable, but its prefix is not numbered yet (there is room for it).
    NewPrefix(&'a str, [u8; 16]),
    Text,
}

impl HeadMap {
    pub fn with_capacity(streams: usize) -> HeadMap {
        HeadMap {
            prefixes: Vec::new(),
            packed: PackedHeads::with_capacity(streams),
            text: HashMap::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.packed.len() + self.text.len()
    }

    pub fn get(&self, stream: &str) -> Option<Head> {
        match self.place(stream) {
            Place::Packed(name) => self.packed.get(&name),
            Place::NewPrefix(..) => None,
            Place::Text => self.text.get(stream).copied(),
        }
    }

    /// Sets a stream's head.
    pub fn set(&mut self, stream: &str, head: Head) {
        let key = self.numbering_key(stream);
        self.set_key(&key, head);
    }

    /// The key of `stream`; `None` when its prefix has no number yet (see
    /// [`HeadMap::numbering_key`]).
    pub fn key(&self, stream: &str) -> Option<StreamKey> {
        match self.place(stream) {
            Place::Packed(name) => Some(StreamKey::Packed(name)),
            Place::NewPrefix(..) => None,
            Place::Text => Some(StreamKey::Text(stream.into())),
        }
    }

    /// The key of `stream`, numbering its prefix if it is new.
    pub fn numbering_key(&mut self, stream: &str) -> StreamKey {
        match self.place(stream) {
            Place::Packed(name) => StreamKey::Packed(name),
            Place::NewPrefix(prefix, id) => {
                self.prefixes.push(prefix.into());
                StreamKey::Packed(PackedName { prefix: (self.prefixes.len() - 1) as u8, id })
            }
            Place::Text => StreamKey::Text(stream.into()),
        }
    }

    pub fn get_key(&self, key: &StreamKey) -> Option<Head> {
        match key {
            StreamKey::Packed(name) => self.packed.get(name),
            StreamKey::Text(name) => self.text.get(name).copied(),
        }
    }

    /// Starts loading where `key`'s head is, for a lookup or a set soon after (see
    /// `table::PackedHeads::prefetch`; names kept as text are rare and not prefetched).
    pub fn prefetch(&self, key: &StreamKey) {
        if let StreamKey::Packed(name) = key {
            self.packed.prefetch(name);
        }
    }

    /// Sets a stream's head.
    ///
    /// # Panics
    /// If `head.version` is 0 or above 2^56 - 1: heads read from disk are checked first (see
    /// [`plausible`]), and the writer's are at most their position.
    pub fn set_key(&mut self, key: &StreamKey, head: Head) {
        match key {
            StreamKey::Packed(name) => self.packed.insert(name, head),
            StreamKey::Text(name) => match self.text.get_mut(name) {
                Some(kept) => *kept = head,
                None => {
                    self.text.insert(name.clone(), head);
                }
            },
        }
    }

    /// Visits every stream's name and head, each packed name written back into one reused
    /// buffer: a `String` formatted per head was most of a snapshot's time (~80 ns a head, 105
    /// ms for 765,838 heads, all of it a stall of the syncer; BENCHMARKS.md, issue 5, twentieth
    /// session).
    pub fn for_each<E>(
        &self,
        mut visit: impl FnMut(&str, Head) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        let mut name = String::with_capacity(crate::limits::NAME_BYTES_MAX);
        let mut id = uuid::Uuid::encode_buffer();
        for (packed, head) in self.packed.iter() {
            name.clear();
            name.push_str(&self.prefixes[usize::from(packed.prefix)]);
            name.push('/');
            name.push_str(uuid::Uuid::from_bytes(packed.id).hyphenated().encode_lower(&mut id));
            visit(&name, head)?;
        }
        for (name, head) in &self.text {
            visit(name, *head)?;
        }
        Ok(())
    }

    fn place<'a>(&self, stream: &'a str) -> Place<'a> {
        let Some((prefix, id)) = packed_parts(stream) else {
            return Place::Text;
        };
        match self.prefixes.iter().position(|known| **known == *prefix) {
            Some(number) => Place::Packed(PackedName { prefix: number as u8, id }),
            None if self.prefixes.len() < 256 => Place::NewPrefix(prefix, id),
            None => Place::Text,
        }
    }
}

/// `<prefix>/<uuid>` split, when the uuid is written exactly as it would be written back:
/// lower-case, hyphenated (`8-4-4-4-12` hex digits). Read here directly rather than parsed in any
/// of the forms uuid accepts and written back to compare: every append and every stream read
/// looks a head up.
fn packed_parts(stream: &str) -> Option<(&str, [u8; 16])> {
    let (prefix, id) = stream.split_once('/')?;
    let text: &[u8; 36] = id.as_bytes().try_into().ok()?;
    if [text[8], text[13], text[18], text[23]] != [b'-'; 4] {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (byte, &at) in bytes.iter_mut().zip(&HEX_PAIR_AT) {
        let (high, low) = (HEX_VALUE[usize::from(text[at])], HEX_VALUE[usize::from(text[at + 1])]);
        if (high | low) > 0xF {
            return None;
        }
        *byte = high << 4 | low;
    }
    Some((prefix, bytes))
}

/// Where each byte's two hex digits start in a hyphenated uuid.
const HEX_PAIR_AT: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];

/// A lower-case hex digit's value; `0xFF` for any other byte.
const HEX_VALUE: [u8; 256] = {
    let mut table = [0xFF; 256];
    let mut digit = 0;
    while digit < 16 {
        table[b"0123456789abcdef"[digit] as usize] = digit as u8;
        digit += 1;
    }
    table
};

const SNAPSHOT_FILE: &str = "heads.snapshot";
const SNAPSHOT_TEMP_FILE: &str = "heads.snapshot.tmp";
const SNAPSHOT_MAGIC: &[u8; 8] = b"FBHEADS1";

/// Loads the heads as of `committed`: the snapshot (if sound and not ahead of the log) plus a
/// replay of the log after it. Damage met in the replay is skipped and returned, so that reads
/// still reach (and report) it; the caller refuses appends.
pub(crate) fn load(dir: &Path, tree: &sled::Tree, committed: u64) -> Result<(HeadMap, Option<StoreError>)> {
    let (mut heads, from) = match read_snapshot(dir) {
        Some((position, heads)) if position <= committed => (heads, position),
        _ => (HeadMap::default(), 0),
    };
    let mut damage = None;
    let mut after = from;
    while after < committed {
        let outcome = chunks::for_each_record(tree, after, committed, |record| {
            let (stream, version) = record.stream_and_version()?;
            let head = Head { version, position: record.position };
            if !plausible(&head) {
                let detail = format!("version {version} of {stream} cannot be at this position");
                return Err(StoreError::Corrupt { position: record.position, detail });
            }
            heads.set(stream, head);
            after = record.position;
            Ok(())
        });
        match outcome {
            Ok(()) => break,
            Err(StoreError::Corrupt { position, detail }) => {
                damage.get_or_insert(StoreError::Corrupt { position, detail });
                // Resume at the next chunk that opens.
                after = match next_chunk_start(tree, position)? {
                    Some(start) => start - 1,
                    None => break,
                };
            }
            Err(other) => return Err(other),
        }
    }
    Ok((heads, damage))
}

/// A head the log could have: a stream's n-th event is at position n or later (and versions fit
/// the table's 56 bits, which a log's positions never outgrow).
fn plausible(head: &Head) -> bool {
    head.version >= 1 && head.version <= head.position && head.version <= table::VERSION_MAX
}

fn next_chunk_start(tree: &sled::Tree, after: u64) -> Result<Option<u64>> {
    let range = crate::keys::event_key(after + 1)..=crate::keys::event_key(u64::MAX);
    match tree.range(range).next() {
        None => Ok(None),
        Some(entry) => Ok(crate::keys::position_of_event_key(&entry?.0)),
    }
}

/// Writes the snapshot atomically: a temporary file, fsynced, renamed over the old one, and the
/// directory fsynced so the rename itself is durable.
pub(crate) fn write_snapshot(dir: &Path, position: u64, heads: &HeadMap) -> Result<()> {
    let temp = dir.join(SNAPSHOT_TEMP_FILE);
    let mut hasher = crc32fast::Hasher::new();
    {
        let file = File::create(&temp)?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let mut put = |bytes: &[u8]| -> std::io::Result<()> {
            hasher.update(bytes);
            out.write_all(bytes)
        };
        put(SNAPSHOT_MAGIC)?;
        put(&position.to_be_bytes())?;
        put(&(heads.len() as u64).to_be_bytes())?;
        heads.for_each(|stream, head| {
            let length = u16::try_from(stream.len()).expect("stream names are bounded by NAME_BYTES_MAX");
            put(&length.to_be_bytes())?;
            put(stream.as_bytes())?;
            put(&head.version.to_be_bytes())?;
            put(&head.position.to_be_bytes())
        })?;
        out.write_all(&hasher.finalize().to_be_bytes())?;
        out.into_inner().map_err(|error| error.into_error())?.sync_all()?;
    }
    std::fs::rename(&temp, dir.join(SNAPSHOT_FILE))?;
    File::open(dir)?.sync_all()?;
    Ok(())
}

/// The snapshot's position and heads, or `None` when there is none or it does not check out.
fn read_snapshot(dir: &Path) -> Option<(u64, HeadMap)> {
    let mut bytes = Vec::new();
    BufReader::new(File::open(dir.join(SNAPSHOT_FILE)).ok()?).read_to_end(&mut bytes).ok()?;
    let (body, crc) = bytes.split_at(bytes.len().checked_sub(4)?);
    if crc32fast::hash(body).to_be_bytes() != crc || !body.starts_with(SNAPSHOT_MAGIC) {
        return None;
    }
    let mut at = SNAPSHOT_MAGIC.len();
    let mut take = |n: usize| -> Option<&[u8]> {
        let slice = body.get(at..at + n)?;
        at += n;
        Some(slice)
    };
    let u64_of = |bytes: &[u8]| u64::from_be_bytes(bytes.try_into().expect("8 bytes"));
    let position = u64_of(take(8)?);
    let count = u64_of(take(8)?);
    let mut heads = HeadMap::with_capacity(usize::try_from(count).ok()?.min(1 << 24));
    for _ in 0..count {
        let length = usize::from(u16::from_be_bytes(take(2)?.try_into().ok()?));
        let stream = std::str::from_utf8(take(length)?).ok()?;
        let head = Head { version: u64_of(take(8)?), position: u64_of(take(8)?) };
        if !plausible(&head) || head.position > position {
            return None;
        }
        heads.set(stream, head);
    }
    Some((position, heads))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_names_the_same_head_as_its_name_and_keeps_its_form() {
        let id = "0191e6a4-1c2b-7d3e-8f40-123456789abc";
        let mut heads = HeadMap::default();
        let member = format!("member/{id}");
        assert_eq!(heads.key(&member), None, "its prefix has no number yet");
        let key = heads.numbering_key(&member);
        assert!(matches!(key, StreamKey::Packed(_)));
        assert_eq!(heads.key(&member), Some(key.clone()), "numbered once, the same key ever after");
        heads.set_key(&key, Head { version: 3, position: 30 });
        assert_eq!(heads.get(&member), Some(Head { version: 3, position: 30 }));
        // A second prefix gets a number of its own; the first one's keys do not change.
        let branch = format!("branch/{id}");
        let branch_key = heads.numbering_key(&branch);
        assert_ne!(branch_key, key);
        heads.set(&branch, Head { version: 1, position: 31 });
        assert_eq!(heads.get_key(&branch_key), Some(Head { version: 1, position: 31 }));
        assert_eq!(heads.key(&member), Some(key.clone()));
        // Names that do not pack are keyed as text, found by name and by key alike.
        let plain = heads.numbering_key("plain");
        assert_eq!(plain, StreamKey::Text("plain".into()));
        heads.set_key(&plain, Head { version: 2, position: 32 });
        heads.set_key(&plain, Head { version: 4, position: 33 });
        assert_eq!(heads.get("plain"), Some(Head { version: 4, position: 33 }));
        assert_eq!(heads.len(), 3);
    }

    #[test]
    fn names_are_kept_exactly_packed_or_not() {
        let id = "0191e6a4-1c2b-7d3e-8f40-123456789abc";
        let names = [
            format!("member/{id}"),
            format!("branch/{id}"),
            format!("member/{}", id.to_uppercase()),
            format!("member/{}", id.replace('-', "")),
            "member/not-a-uuid".to_owned(),
            format!("a/b/{id}"),
            format!("/{id}"),
            "plain".to_owned(),
        ];
        let mut heads = HeadMap::default();
        for (n, name) in names.iter().enumerate() {
            heads.set(name, Head { version: n as u64 + 1, position: 10 + n as u64 });
        }
        assert_eq!(heads.len(), names.len(), "no two names share a head");
        for (n, name) in names.iter().enumerate() {
            assert_eq!(
                heads.get(name),
                Some(Head { version: n as u64 + 1, position: 10 + n as u64 }),
                "{name}"
            );
        }
        assert_eq!(heads.get(&format!("other/{id}")), None);
        let mut listed: Vec<String> = Vec::new();
        heads.for_each(|name, _| Ok::<_, ()>(listed.push(name.to_owned()))).unwrap();
        listed.sort();
        let mut expected = names.to_vec();
        expected.sort();
        assert_eq!(listed, expected);
        assert!(matches!(heads.place(&names[0]), Place::Packed(_)));
        assert!(matches!(heads.place(&names[2]), Place::Text));
        heads.set(&names[0], Head { version: 9, position: 99 });
        assert_eq!(heads.get(&names[0]).map(|head| head.version), Some(9));
        assert_eq!(heads.len(), names.len());
    }

    /// What the uuid crate says a packable name is: it parses, and writes back the same.
    fn packable_by_uuid(id: &str) -> Option<[u8; 16]> {
        let uuid = uuid::Uuid::try_parse(id).ok()?;
        (uuid.hyphenated().to_string() == id).then_some(uuid.into_bytes())
    }

    #[test]
    fn names_are_packed_exactly_when_the_uuid_writes_back_the_same() {
        let mut ids: Vec<String> = (0..2_000u64)
            .map(|n| {
                uuid::Uuid::from_u64_pair(n.wrapping_mul(0x9E37_79B9_7F4A_7C15), !n).hyphenated().to_string()
            })
            .collect();
        let base = "0191e6a4-1c2b-7d3e-8f40-123456789abc";
        ids.extend([
            base.to_uppercase(),
            base.replacen('a', "A", 1),
            base.replace('-', ""),
            format!("{{{base}}}"),
            format!("urn:uuid:{base}"),
            base.replacen('a', "g", 1),
            base.replacen('-', "0", 1),
            format!("{}-{}", &base[..7], &base[8..]),
            base.replacen('b', "é", 1),
            format!("{base} "),
            format!("{base}~1"),
            base[..35].to_owned(),
            String::new(),
            "-".repeat(36),
        ]);
        for id in &ids {
            let name = format!("member/{id}");
            assert_eq!(packed_parts(&name).map(|(_, bytes)| bytes), packable_by_uuid(id), "{name}");
        }
        assert_eq!(packed_parts(&format!("member/{base}")).map(|(prefix, _)| prefix), Some("member"));
        assert_eq!(packed_parts(base), None, "no prefix");
    }

    #[test]
    fn a_snapshot_holding_a_head_no_log_could_have_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let member = "member/0191e6a4-1c2b-7d3e-8f40-123456789abc";
        let mut heads = HeadMap::default();
        heads.set(member, Head { version: 2, position: 5 });
        write_snapshot(dir.path(), 5, &heads).unwrap();
        let (position, read) = read_snapshot(dir.path()).expect("a sound snapshot is used");
        assert_eq!((position, read.get(member)), (5, Some(Head { version: 2, position: 5 })));
        let impossible = [
            (member, Head { version: 6, position: 5 }),
            (member, Head { version: 1, position: 9 }),
            ("plain", Head { version: 0, position: 1 }),
        ];
        for (stream, head) in impossible {
            let mut heads = HeadMap::default();
            heads.set(stream, head);
            write_snapshot(dir.path(), 5, &heads).unwrap();
            assert!(read_snapshot(dir.path()).is_none(), "{stream} {head:?}: the log is replayed instead");
        }
    }

    #[test]
    fn past_256_prefixes_names_are_kept_as_text() {
        let id = "0191e6a4-1c2b-7d3e-8f40-123456789abc";
        let mut heads = HeadMap::default();
        for n in 0..300u64 {
            heads.set(&format!("p{n}/{id}"), Head { version: n + 1, position: n + 1 });
        }
        assert_eq!(heads.prefixes.len(), 256);
        assert!(matches!(heads.place(&format!("p299/{id}")), Place::Text));
        for n in 0..300u64 {
            assert_eq!(heads.get(&format!("p{n}/{id}")), Some(Head { version: n + 1, position: n + 1 }));
        }
        assert_eq!(heads.len(), 300);
    }
}
