//! The configurable numbers of DOMAIN.md, with their documented defaults. Everything not here is
//! a fixed rule (for example a letter is never valid for more than 90 days).

use chrono::TimeDelta;
use serde::{Deserialize, Serialize};

/// A letter's validity can be configured, but never beyond this (DOMAIN.md: "never more than
/// 90 days").
pub const LETTER_VALIDITY_DAYS_MAX: i64 = 90;

/// How far ahead of now an `effective_at` may be (clock skew between clients and server).
pub const EFFECTIVE_AHEAD_MINUTES_MAX: i64 = 5;

/// The deployment's numbers. Durations are whole days: "6 months" is 183 days, "1 year" 365.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RulesConfig {
    /// Default validity of an introduction letter (capped at [`LETTER_VALIDITY_DAYS_MAX`]).
    pub letter_validity_days: i64,
    /// At the same inflow branch longer than this → `should_transfer`.
    pub should_transfer_after_days: i64,
    /// No departure, arrival or restored contact for longer than this → `report_overdue`.
    pub report_overdue_after_days: i64,
    /// Contact lost for longer than this → `should_suspend`.
    pub should_suspend_after_days: i64,
    /// Probationary without conversion or extension for longer than this → `probation_overdue`.
    pub probation_days: i64,
    /// Registered and not verified for longer than this → `unverified`.
    pub unverified_after_days: i64,
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig {
            letter_validity_days: 30,
            should_transfer_after_days: 183,
            report_overdue_after_days: 365,
            should_suspend_after_days: 183,
            probation_days: 365,
            unverified_after_days: 30,
        }
    }
}

impl RulesConfig {
    pub fn letter_validity(&self) -> TimeDelta {
        TimeDelta::days(self.letter_validity_days.clamp(1, LETTER_VALIDITY_DAYS_MAX))
    }
}
