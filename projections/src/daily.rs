//! Flow counts per day and branch, so that a period's flows sum whole days instead of walking
//! every record. Kept for the latest knowledge only: a retraction takes its count back out; a
//! query `as known at` an earlier time walks the records instead.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use flowbook_core::BranchId;

use crate::engine::FlowKind;

const SECONDS_PER_DAY: i64 = 86_400;

/// Days since 1970-01-01 (UTC) of an instant.
pub(crate) fn day_of(at: DateTime<Utc>) -> i64 {
    at.timestamp().div_euclid(SECONDS_PER_DAY)
}

/// The instant a day starts.
pub(crate) fn start_of(day: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(day * SECONDS_PER_DAY, 0).expect("days in range")
}

/// One branch's flows, as signed counts so that a retraction can subtract.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub transfers_in: i64,
    pub transfers_out: i64,
    pub departures: i64,
    pub arrivals: i64,
}

/// Where a completed transfer went.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Destination {
    Branch(BranchId),
    External(String),
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Day {
    pub per_branch: HashMap<BranchId, Counts>,
    pub pairs: HashMap<(BranchId, Destination), i64>,
}

impl Day {
    /// Adds (`sign` = 1) or takes back (`sign` = -1) one flow.
    pub fn add(&mut self, kind: &FlowKind, sign: i64) {
        match kind {
            FlowKind::Transfer { from, to, external } => {
                self.per_branch.entry(*from).or_default().transfers_out += sign;
                let destination = match to {
                    Some(to) => {
                        self.per_branch.entry(*to).or_default().transfers_in += sign;
                        Destination::Branch(*to)
                    }
                    None => Destination::External(external.clone().unwrap_or_default()),
                };
                *self.pairs.entry((*from, destination)).or_default() += sign;
            }
            FlowKind::Departure { home } => self.per_branch.entry(*home).or_default().departures += sign,
            FlowKind::Arrival { inflow } => self.per_branch.entry(*inflow).or_default().arrivals += sign,
        }
    }

    /// Adds another day's (or partial day's) counts into this one.
    pub fn merge(&mut self, other: &Day) {
        for (branch, counts) in &other.per_branch {
            let sum = self.per_branch.entry(*branch).or_default();
            sum.transfers_in += counts.transfers_in;
            sum.transfers_out += counts.transfers_out;
            sum.departures += counts.departures;
            sum.arrivals += counts.arrivals;
        }
        for (pair, count) in &other.pairs {
            *self.pairs.entry(pair.clone()).or_default() += count;
        }
    }
}

pub(crate) type Daily = BTreeMap<i64, Day>;
