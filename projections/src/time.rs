//! The two times of every query: `as_of` (effective time) and `known_at` (recorded time).
//!
//! An event counts when `effective_at ≤ as_of` and `recorded_at ≤ known_at`; a retraction counts
//! by its own `recorded_at`, so at a `known_at` before it the retracted event still stands.

use std::num::NonZeroU64;

use chrono::{DateTime, Utc};

/// A point in both times; `None` means "everything" on that axis (the latest state).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct At {
    pub as_of: Option<DateTime<Utc>>,
    pub known_at: Option<DateTime<Utc>>,
}

impl At {
    pub const LATEST: At = At { as_of: None, known_at: None };

    pub fn new(as_of: Option<DateTime<Utc>>, known_at: Option<DateTime<Utc>>) -> At {
        At { as_of, known_at }
    }

    pub fn is_latest(&self) -> bool {
        self.as_of.is_none() && self.known_at.is_none()
    }

    pub fn in_effect(&self, effective_at: DateTime<Utc>) -> bool {
        self.as_of.is_none_or(|as_of| effective_at <= as_of)
    }

    pub fn known(&self, recorded_at: DateTime<Utc>) -> bool {
        self.known_at.is_none_or(|known_at| recorded_at <= known_at)
    }
}

/// A time as whole nanoseconds since 1970 (UTC), the form facts keep: 8 bytes against
/// `DateTime`'s 12 (16 as an `Option`), and millions of facts carry three each. Times outside
/// 1677–2262 saturate at the ends; comparisons with times inside stay exact.
pub(crate) type Nanos = i64;

/// The retracted-at of a fact never retracted.
const NEVER: Nanos = Nanos::MAX;

pub(crate) fn nanos(at: DateTime<Utc>) -> Nanos {
    at.timestamp_nanos_opt().unwrap_or(if at.timestamp() < 0 { Nanos::MIN } else { Nanos::MAX - 1 })
}

pub(crate) fn from_nanos(at: Nanos) -> DateTime<Utc> {
    DateTime::from_timestamp_nanos(at)
}

/// Something an event made true, with the event's two times and, once retracted, the
/// retraction's recorded time. 32 bytes: there are several per event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fact {
    effective_at: Nanos,
    recorded_at: Nanos,
    /// Never 0 (positions start at 1), which lets `Option<Fact>` take no more room than a fact.
    position: NonZeroU64,
    retracted_at: Nanos,
}

impl Fact {
    pub fn new(effective_at: DateTime<Utc>, recorded_at: DateTime<Utc>, position: u64) -> Fact {
        Fact {
            effective_at: nanos(effective_at),
            recorded_at: nanos(recorded_at),
            position: NonZeroU64::new(position).expect("log positions start at 1"),
            retracted_at: NEVER,
        }
    }

    /// The position of the event that made the fact true.
    pub fn position(&self) -> u64 {
        self.position.get()
    }

    pub fn effective_at(&self) -> DateTime<Utc> {
        from_nanos(self.effective_at)
    }

    pub(crate) fn effective_nanos(&self) -> Nanos {
        self.effective_at
    }

    pub fn is_retracted(&self) -> bool {
        self.retracted_at != NEVER
    }

    /// Marks the fact retracted at `at`, unless it already is.
    pub fn retract(&mut self, at: DateTime<Utc>) {
        if !self.is_retracted() {
            self.retracted_at = nanos(at).min(NEVER - 1);
        }
    }

    /// Recorded by `known_at` and not retracted by then (whatever `as_of`).
    pub fn stands(&self, at: &At) -> bool {
        match at.known_at.map(nanos) {
            None => !self.is_retracted(),
            Some(known_at) => self.recorded_at <= known_at && !(self.retracted_at <= known_at),
        }
    }

    /// Stands, and in effect by `as_of`.
    pub fn holds(&self, at: &At) -> bool {
        self.stands(at) && at.as_of.is_none_or(|as_of| self.effective_at <= nanos(as_of))
    }
}
