//! An event's chain hash as envelopes carry it: the 32 bytes themselves, written as 64 lower-case
//! hex digits only when an envelope is serialized or printed. Held as text, every envelope cost an
//! allocation and a hex encoding when an append was answered or a record read — ~50 µs of a
//! 1,000-event commit's ~1.7 ms for an appender waiting on it (BENCHMARKS.md, issue 5, twentieth
//! session) — and another allocation to free, for a hash most callers never look at.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// SHA-256 over the previous event's hash and this event's canonical bytes (API.md).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChainHash(pub [u8; 32]);

const HEX_DIGITS: usize = 64;

impl ChainHash {
    /// The 64 lower-case hex digits, without allocating.
    pub fn hex(&self) -> HexDigits {
        let mut digits = [0u8; HEX_DIGITS];
        hex::encode_to_slice(self.0, &mut digits).expect("64 hex digits for 32 bytes");
        HexDigits(digits)
    }
}

/// A chain hash's hex digits, on the stack.
pub struct HexDigits([u8; HEX_DIGITS]);

impl HexDigits {
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("hex digits are ASCII")
    }
}

impl fmt::Display for ChainHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.hex().as_str())
    }
}

impl fmt::Debug for ChainHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChainHash({self})")
    }
}

/// Text that is not 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotAChainHash;

impl fmt::Display for NotAChainHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a chain hash is 64 hex digits")
    }
}

impl std::error::Error for NotAChainHash {}

impl FromStr for ChainHash {
    type Err = NotAChainHash;

    fn from_str(text: &str) -> Result<ChainHash, NotAChainHash> {
        let mut bytes = [0u8; 32];
        match text.len() == HEX_DIGITS && hex::decode_to_slice(text, &mut bytes).is_ok() {
            true => Ok(ChainHash(bytes)),
            false => Err(NotAChainHash),
        }
    }
}

impl Serialize for ChainHash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.hex().as_str())
    }
}

impl<'de> Deserialize<'de> for ChainHash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ChainHash, D::Error> {
        // Borrowed where the input allows, owned where it has escapes: either is parsed the same.
        let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ChainHash {
        ChainHash(std::array::from_fn(|i| (i as u8).wrapping_mul(37)))
    }

    #[test]
    fn shown_as_lower_case_hex_and_read_back() {
        let hash = sample();
        let text = hash.to_string();
        assert_eq!(text.len(), 64);
        assert!(text.starts_with("00254a6f"), "{text}");
        assert_eq!(text, hex::encode(hash.0));
        assert_eq!(text.parse::<ChainHash>(), Ok(hash));
        let json = serde_json::to_string(&hash).unwrap();
        assert_eq!(json, format!("\"{text}\""));
        assert_eq!(serde_json::from_str::<ChainHash>(&json).unwrap(), hash);
    }

    #[test]
    fn anything_but_64_hex_digits_is_refused() {
        let good = sample().to_string();
        for bad in [&good[..63], &format!("{good}0"), &good.replacen('0', "g", 1), "", "00"] {
            assert_eq!(bad.parse::<ChainHash>(), Err(NotAChainHash), "{bad:?}");
            assert!(serde_json::from_str::<ChainHash>(&format!("\"{bad}\"")).is_err(), "{bad:?}");
        }
        assert!(serde_json::from_str::<ChainHash>("42").is_err());
    }
}
