//! Flow counts per period — per day by region, per calendar month by branch — so that a period's
//! flows sum whole buckets instead of walking every record. Kept for the latest knowledge only: a
//! retraction takes its count back out; a query `as known at` an earlier time walks the records.
//!
//! Regions get their own counts because a quarter by branch can hold a hundred thousand
//! origin-destination pairs, while the same quarter by region holds a few hundred: summing
//! regions per day is what keeps the district's quarterly report fast. Branches are counted per
//! month: per day, 20,000 branches' counts over two years cost hundreds of megabytes; a report by
//! branch walks the records of its partial months at the edges instead (quarters and months are
//! whole months and walk nothing).

use std::collections::BTreeMap;

use foldhash::{HashMap, HashMapExt};
use std::hash::Hash;

use chrono::{DateTime, Datelike, Utc};

use crate::dense::BranchNo;
use crate::engine::{Destination, FlowKind};

const SECONDS_PER_DAY: i64 = 86_400;

/// Days since 1970-01-01 (UTC) of an instant.
pub(crate) fn day_of(at: DateTime<Utc>) -> i64 {
    at.timestamp().div_euclid(SECONDS_PER_DAY)
}

/// The instant a day starts.
pub(crate) fn start_of(day: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(day * SECONDS_PER_DAY, 0).expect("days in range")
}

/// Months since year 0 (UTC) of an instant.
pub(crate) fn month_of(at: DateTime<Utc>) -> i64 {
    i64::from(at.year()) * 12 + i64::from(at.month0())
}

/// The instant a month starts.
pub(crate) fn start_of_month(month: i64) -> DateTime<Utc> {
    let (year, month0) = (month.div_euclid(12), month.rem_euclid(12));
    chrono::NaiveDate::from_ymd_opt(year as i32, month0 as u32 + 1, 1)
        .expect("months in range")
        .and_time(chrono::NaiveTime::MIN)
        .and_utc()
}

/// How a period is cut into whole buckets: a bucket's number for an instant, and its start.
#[derive(Clone, Copy)]
pub(crate) struct Buckets {
    pub of: fn(DateTime<Utc>) -> i64,
    pub start: fn(i64) -> DateTime<Utc>,
}

pub(crate) const DAYS: Buckets = Buckets { of: day_of, start: start_of };
pub(crate) const MONTHS: Buckets = Buckets { of: month_of, start: start_of_month };

/// One branch's (or region's) flows, as signed counts so that a retraction can subtract.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub transfers_in: i64,
    pub transfers_out: i64,
    pub departures: i64,
    pub arrivals: i64,
}

impl Counts {
    fn merge(&mut self, other: &Counts) {
        self.transfers_in += other.transfers_in;
        self.transfers_out += other.transfers_out;
        self.departures += other.departures;
        self.arrivals += other.arrivals;
    }
}

/// Flows summed over some span, keyed by branch id or by region index.
#[derive(Debug, Clone)]
pub(crate) struct Day<K> {
    pub per_key: HashMap<K, Counts>,
    pub pairs: HashMap<(K, Destination<K>), i64>,
}

impl<K> Default for Day<K> {
    fn default() -> Self {
        Day { per_key: HashMap::new(), pairs: HashMap::new() }
    }
}

impl<K: Copy + Eq + Hash> Day<K> {
    /// Adds (`sign` = 1) or takes back (`sign` = -1) one flow, each branch counted under
    /// `key(branch)`.
    pub fn add(&mut self, kind: &FlowKind, sign: i64, key: impl Fn(BranchNo) -> K) {
        match *kind {
            FlowKind::Transfer { from, to } => {
                let origin = key(from);
                self.per_key.entry(origin).or_default().transfers_out += sign;
                let destination = to.map(&key);
                if let Destination::Key(to) = destination {
                    self.per_key.entry(to).or_default().transfers_in += sign;
                }
                *self.pairs.entry((origin, destination)).or_default() += sign;
            }
            FlowKind::Departure { home } => self.per_key.entry(key(home)).or_default().departures += sign,
            FlowKind::Arrival { inflow } => self.per_key.entry(key(inflow)).or_default().arrivals += sign,
        }
    }

    /// Adds another span's counts into this one.
    pub fn merge(&mut self, other: &Day<K>) {
        for (key, counts) in &other.per_key {
            self.per_key.entry(*key).or_default().merge(counts);
        }
        for (pair, count) in &other.pairs {
            *self.pairs.entry(*pair).or_default() += count;
        }
    }
}

/// Region names, numbered in order of first appearance; a branch's region never changes.
#[derive(Debug, Clone, Default)]
pub(crate) struct Regions {
    names: Vec<String>,
    index_of_name: HashMap<String, u32>,
    /// By branch number (dense): looked up twice for every flow a rebuild counts.
    of_branch: Vec<Option<u32>>,
}

impl Regions {
    /// Records the region of a branch (its id stands in for a branch the log never established).
    pub fn assign(&mut self, branch: BranchNo, region: &str) -> u32 {
        if let Some(index) = self.of(branch) {
            return index;
        }
        let index = match self.index_of_name.get(region) {
            Some(index) => *index,
            None => {
                self.names.push(region.to_owned());
                let index = u32::try_from(self.names.len() - 1).expect("fewer than 2^32 regions");
                self.index_of_name.insert(region.to_owned(), index);
                index
            }
        };
        flowbook_core::grow::grow_to(&mut self.of_branch, branch.index() + 1, || None);
        self.of_branch[branch.index()] = Some(index);
        index
    }

    /// The region index of a branch that has been assigned one.
    pub fn of(&self, branch: BranchNo) -> Option<u32> {
        self.of_branch.get(branch.index()).copied().flatten()
    }

    pub fn name(&self, index: u32) -> &str {
        &self.names[index as usize]
    }
}

/// The flows of every month by branch and of every day by region.
#[derive(Debug, Clone, Default)]
pub(crate) struct Daily {
    pub by_branch: BTreeMap<i64, Day<BranchNo>>,
    pub by_region: BTreeMap<i64, Day<u32>>,
    pub regions: Regions,
}

impl Daily {
    /// Counts a flow in the month and on the day it took effect; every branch it names must have
    /// a region.
    pub fn add(&mut self, effective_at: DateTime<Utc>, kind: &FlowKind, sign: i64) {
        let day = day_of(effective_at);
        self.by_branch.entry(month_of(effective_at)).or_default().add(kind, sign, |branch| branch);
        let regions = &self.regions;
        let region = |branch| regions.of(branch).expect("every flow's branches have a region");
        self.by_region.entry(day).or_default().add(kind, sign, region);
    }
}
