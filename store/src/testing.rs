//! Helpers for damage tests: they open a closed store's sled files directly and alter one record,
//! the way a bad disk or a hand edit would. Not part of the API; never used by the product.

use std::path::Path;

use crate::keys;
use crate::{Result, StoreError};

/// How to damage a record.
pub enum Damage {
    /// Flip one bit of the envelope JSON; the checksum no longer matches.
    FlipBit,
    /// Cut the record short.
    Truncate,
    /// Replace `from` by `to` in the envelope JSON and recompute the checksum, as a forger
    /// would: only the hash chain can tell.
    Rewrite { from: String, to: String },
    /// Remove the record.
    Delete,
}

/// Damages the record at `position` of the (closed) store in `dir`.
pub fn damage_record(dir: &Path, position: u64, damage: Damage) -> Result<()> {
    let db = sled::Config::new().path(dir).open()?;
    let tree = db.open_tree("log")?;
    let key = keys::event_key(position);
    let mut bytes = tree
        .get(key)?
        .ok_or(StoreError::Corrupt { position, detail: "no such record to damage".into() })?
        .to_vec();
    match damage {
        Damage::FlipBit => {
            let last = bytes.len() - 2;
            bytes[last] ^= 0x01;
            tree.insert(key, bytes)?;
        }
        Damage::Truncate => {
            bytes.truncate(bytes.len() / 2);
            tree.insert(key, bytes)?;
        }
        Damage::Rewrite { from, to } => {
            let text = String::from_utf8_lossy(&bytes[37..]).replace(&from, &to);
            bytes.truncate(37);
            bytes.extend_from_slice(text.as_bytes());
            let crc = crc32fast::hash(&bytes[5..]).to_be_bytes();
            bytes[1..5].copy_from_slice(&crc);
            tree.insert(key, bytes)?;
        }
        Damage::Delete => {
            tree.remove(key)?;
        }
    }
    db.flush()?;
    Ok(())
}
