//! Helpers for damage tests: they open a closed store's sled files directly and alter the chunk
//! holding one position, the way a bad disk or a hand edit would. Not part of the API; never
//! used by the product.

use std::path::Path;

use crate::chunks::required_chunk;
use crate::keys;
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
            let forged = chunk.reframed(|at, canonical| {
                let text = String::from_utf8_lossy(canonical);
                if at == position { text.replace(&from, &to) } else { text.into_owned() }.into_bytes()
            });
            tree.insert(key, forged)?;
        }
        Damage::Delete => {
            tree.remove(key)?;
        }
    }
    db.flush()?;
    Ok(())
}

/// Moves the commit mark of the (closed) store in `dir` back to `position`: the state a crash
/// leaves when a commit's chunks were inserted and its end was not.
pub fn unfinish_commits_after(dir: &Path, position: u64) -> Result<()> {
    let db = crate::store::open_waiting_for_lock(&sled::Config::new().path(dir))?;
    let tree = db.open_tree("log")?;
    tree.insert(keys::COMMIT_MARK, &position.to_be_bytes())?;
    db.flush()?;
    Ok(())
}
