//! The two times of every query: `as_of` (effective time) and `known_at` (recorded time).
//!
//! An event counts when `effective_at ≤ as_of` and `recorded_at ≤ known_at`; a retraction counts
//! by its own `recorded_at`, so at a `known_at` before it the retracted event still stands.

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

/// Something an event made true, with the event's two times and, once retracted, the
/// retraction's recorded time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fact {
    pub effective_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub position: u64,
    pub retracted_at: Option<DateTime<Utc>>,
}

impl Fact {
    /// Recorded by `known_at` and not retracted by then (whatever `as_of`).
    pub fn stands(&self, at: &At) -> bool {
        at.known(self.recorded_at) && !self.retracted_at.is_some_and(|retracted| at.known(retracted))
    }

    /// Stands, and in effect by `as_of`.
    pub fn holds(&self, at: &At) -> bool {
        self.stands(at) && at.in_effect(self.effective_at)
    }
}
