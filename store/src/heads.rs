//! Stream heads: each stream's version and the position of its last event, in memory.
//!
//! They answer `expected_version` checks and are where stream reads start (each record links
//! back to its stream's previous event). They are derived data: the log alone can rebuild them.
//! To keep opening fast, a snapshot file (`heads.snapshot`) is written on a clean close and every
//! [`crate::limits::HEADS_SNAPSHOT_EVERY_EVENTS`] events; opening loads it and replays only the
//! log after it. A missing, damaged or impossible snapshot just means a longer replay.
//!
//! Memory: about 100 bytes per stream (a member or a branch).

use foldhash::{HashMap, HashMapExt};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use crate::chunks;
use crate::{Result, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Head {
    pub version: u64,
    pub position: u64,
}

pub(crate) type HeadMap = HashMap<Box<str>, Head>;

const SNAPSHOT_FILE: &str = "heads.snapshot";
const SNAPSHOT_TEMP_FILE: &str = "heads.snapshot.tmp";
const SNAPSHOT_MAGIC: &[u8; 8] = b"FBHEADS1";

/// Loads the heads as of `committed`: the snapshot (if sound and not ahead of the log) plus a
/// replay of the log after it. Damage met in the replay is skipped and returned, so that reads
/// still reach (and report) it; the caller refuses appends.
pub(crate) fn load(dir: &Path, tree: &sled::Tree, committed: u64) -> Result<(HeadMap, Option<StoreError>)> {
    let (mut heads, from) = match read_snapshot(dir) {
        Some((position, heads)) if position <= committed => (heads, position),
        _ => (HeadMap::new(), 0),
    };
    let mut damage = None;
    let mut after = from;
    while after < committed {
        let outcome = chunks::for_each_record(tree, after, committed, |record| {
            let (stream, version) = record.stream_and_version()?;
            let head = Head { version, position: record.position };
            match heads.get_mut(stream) {
                Some(existing) => *existing = head,
                None => {
                    heads.insert(stream.into(), head);
                }
            }
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
        for (stream, head) in heads {
            let length = u16::try_from(stream.len()).expect("stream names are bounded by NAME_BYTES_MAX");
            put(&length.to_be_bytes())?;
            put(stream.as_bytes())?;
            put(&head.version.to_be_bytes())?;
            put(&head.position.to_be_bytes())?;
        }
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
        let version = u64_of(take(8)?);
        let head_position = u64_of(take(8)?);
        heads.insert(stream.into(), Head { version, position: head_position });
    }
    Some((position, heads))
}
