//! Helpers for damage tests: they open a closed store's sled files directly and alter the chunk
//! holding one position, the way a bad disk or a hand edit would. Not part of the API; never
//! used by the product.

use std::path::Path;

use crate::chunks::required_chunk;
use crate::keys;
use crate::record::Locator;
use crate::Result;

/// How to damage the chunk holding a position.
pub enum Damage {
    /// Flip one bit; the checksum no longer matches.
    FlipBit,
    /// Cut the chunk short.
    Truncate,
    /// Replace `from` by `to` in that position's envelope JSON and frame the chunk again with a
    /// fresh checksum, as a forger would: only the hash chain can tell.
    Rewrite { from: String, to: String },
    /// Remove the chunk.
    Delete,
    /// Make that position's backlink claim a wrong place for the stream's previous event (the
    /// backlink is outside the hash chain: reads must not trust it blindly, verify must see it).
    MisplaceBacklink,
    /// Frame the chunk as logs written before locators did: bare positions as backlinks.
    AsBeforeLocators,
}

/// Damages the chunk holding `position` in the (closed) store in `dir`.
pub fn damage_record(dir: &Path, position: u64, damage: Damage) -> Result<()> {
    let db = crate::store::open_waiting_for_lock(&sled::Config::new().path(dir))?;
    let tree = db.open_tree("log")?;
    let chunk = required_chunk(&tree, position)?;
    let key = keys::event_key(chunk.first_position);
    let mut value = tree.get(key)?.expect("the chunk was just read").to_vec();
    match damage {
        Damage::FlipBit => {
            let last = value.len() - 2;
            value[last] ^= 0x01;
            tree.insert(key, value)?;
        }
        Damage::Truncate => {
            value.truncate(value.len() / 2);
            tree.insert(key, value)?;
        }
        Damage::Rewrite { from, to } => {
            let forged = chunk.reframed(false, |record| {
                let text = String::from_utf8_lossy(record.canonical);
                let text =
                    if record.position == position { text.replace(&from, &to) } else { text.into_owned() };
                (text.into_bytes(), record.previous_in_stream)
            });
            tree.insert(key, forged)?;
        }
        Damage::MisplaceBacklink => {
            let forged = chunk.reframed(false, |record| {
                let backlink = record.previous_in_stream;
                let backlink = match backlink.chunk_first() {
                    // One before the true chunk start: a place, but not where the event is.
                    Some(first) if record.position == position => {
                        Locator::new(backlink.position(), first.saturating_sub(1))
                    }
                    _ => backlink,
                };
                (record.canonical.to_vec(), backlink)
            });
            tree.insert(key, forged)?;
        }
        Damage::AsBeforeLocators => {
            let older = chunk.reframed(true, |record| {
                (record.canonical.to_vec(), Locator::from_bits(record.previous_in_stream.position()))
            });
            tree.insert(key, older)?;
        }
        Damage::Delete => {
            tree.remove(key)?;
        }
    }
    db.flush()?;
    Ok(())
}
