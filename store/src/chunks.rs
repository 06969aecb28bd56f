//! Finding and walking chunks in the tree: the chunk that holds a position, and every record
//! in a range of positions, in order, with gaps reported as damage.

use crate::keys;
use crate::record::{Chunk, Record};
use crate::{Result, StoreError};

/// The chunk holding `position`, if one does.
pub(crate) fn chunk_at(tree: &sled::Tree, position: u64) -> Result<Option<Chunk>> {
    let Some(entry) = tree.range(keys::event_key(0)..=keys::event_key(position)).next_back() else {
        return Ok(None);
    };
    let (key, value) = entry?;
    let first = keys::position_of_event_key(&key)
        .ok_or_else(|| StoreError::Corrupt { position, detail: "unreadable chunk key".into() })?;
    let chunk = Chunk::decode(first, &value)?;
    Ok(chunk.contains(position).then_some(chunk))
}

/// The chunk holding `position`; its absence (below the head) is damage.
pub(crate) fn required_chunk(tree: &sled::Tree, position: u64) -> Result<Chunk> {
    chunk_at(tree, position)?.ok_or(StoreError::Corrupt { position, detail: "record missing".into() })
}

/// Calls `visit` for every record with `after < position <= until`, in order. A position with no
/// record is damage (`Corrupt` at that position).
pub(crate) fn for_each_record(
    tree: &sled::Tree,
    after: u64,
    until: u64,
    mut visit: impl FnMut(&Record<'_>) -> Result<()>,
) -> Result<()> {
    if after >= until {
        return Ok(());
    }
    let mut expected = after + 1;
    // The chunk holding the first wanted position may start before it.
    let start = match chunk_at(tree, expected)? {
        Some(chunk) => chunk.first_position,
        None => expected,
    };
    for entry in tree.range(keys::event_key(start)..=keys::event_key(until)) {
        let (key, value) = entry?;
        let first = keys::position_of_event_key(&key).ok_or_else(|| StoreError::Corrupt {
            position: expected,
            detail: "unreadable chunk key".into(),
        })?;
        if first > expected {
            return Err(StoreError::Corrupt { position: expected, detail: "record missing".into() });
        }
        let chunk = Chunk::decode(first, &value)?;
        let skip_to = expected;
        for record in chunk.records().filter(|record| record.position >= skip_to) {
            if record.position > until {
                return Ok(());
            }
            visit(&record)?;
            expected = record.position + 1;
        }
    }
    if expected <= until {
        return Err(StoreError::Corrupt { position: expected, detail: "record missing".into() });
    }
    Ok(())
}
