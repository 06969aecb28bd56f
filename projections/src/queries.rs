//! Answers, in the shapes of API.md's read endpoints.
//!
//! Latest-state answers read the current-state models directly; answers `as_of`/`known_at`
//! filter the bitemporal facts (rosters) or fold one member's short stream (member state).
//! Neither replays the log.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use flowbook_core::{
    BranchId, BranchKind, DiscoverySource, EventData, MemberId, MemberState, MemberStatus, MemberStream,
    RecordedEvent, TransferId,
};
use serde::Serialize;

use crate::daily::{day_of, Buckets, Counts, Day, DAYS, MONTHS};
use crate::dense::{BranchNo, MemberNo};
use crate::engine::{
    visiting_branch, Destination, FlowRecord, PocketKind, Projections, Relation, TransferFacts, TransferRow,
    TransferState,
};
use crate::flags::{branch_flags, member_flags};
use crate::time::{from_nanos, nanos, At};

#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MemberView {
    pub member_id: MemberId,
    pub name: String,
    pub status: MemberStatus,
    pub branch_id: Option<BranchId>,
    pub verified: bool,
    pub pocket: bool,
    pub contact_lost: bool,
    pub mobile: Option<MobileView>,
    pub open_transfer: Option<OpenTransferView>,
    pub flags: Vec<&'static str>,
    pub version: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MobileView {
    pub destination_region: String,
    /// Where the member has reported, or else where the departure planned them to.
    pub inflow_branch_id: Option<BranchId>,
    pub since: DateTime<Utc>,
    pub reported: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OpenTransferView {
    pub transfer_id: flowbook_core::TransferId,
    pub to_branch_id: Option<BranchId>,
    pub to_external: Option<String>,
    pub valid_until: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RosterEntry {
    pub member_id: MemberId,
    pub name: String,
    pub status: MemberStatus,
    pub relation: Relation,
    pub since: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BranchRow {
    pub branch_id: BranchId,
    pub name: String,
    pub kind: BranchKind,
    pub region: String,
    pub parent_id: Option<BranchId>,
    pub dissolved: bool,
    pub home_count: usize,
    pub full_count: usize,
    pub visiting_count: usize,
    pub flags: Vec<&'static str>,
}

/// Which transfers to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferFilter {
    /// Open letters, overdue ones included (shown as `overdue`).
    Open,
    Overdue,
    Completed,
    Cancelled,
    Expired,
}

/// How flows are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowGrouping {
    Branch,
    Region,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FlowRow {
    pub key: String,
    pub transfers_in: u64,
    pub transfers_out: u64,
    pub net: i64,
    pub departures: u64,
    pub arrivals: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MatrixCell {
    pub from: String,
    pub to: String,
    pub count: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Flows {
    pub rows: Vec<FlowRow>,
    pub matrix: Vec<MatrixCell>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegionCount {
    pub region: String,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BranchCount {
    pub branch_id: BranchId,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FlaggedMember {
    pub member_id: MemberId,
    pub flags: Vec<&'static str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MobileStats {
    pub total: u64,
    pub reported: u64,
    pub by_destination_region: Vec<RegionCount>,
    pub by_inflow_branch: Vec<BranchCount>,
    pub flagged: Vec<FlaggedMember>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BySource {
    pub expired_letter: u64,
    pub self_declared: u64,
    pub survey: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PocketStats {
    pub discovered: u64,
    pub placed: u64,
    pub open: u64,
    pub by_source: BySource,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MemberSummary {
    pub member_id: MemberId,
    pub name: String,
    pub branch_id: Option<BranchId>,
    pub status: MemberStatus,
}

/// Results one name search returns at most.
pub const SEARCH_RESULTS_MAX: usize = 100;

impl Projections {
    /// An established branch's facts.
    fn branch_facts(&self, id: BranchId) -> Option<&crate::engine::BranchFacts> {
        let number = self.branch_numbers.get(&id)?;
        self.branches.get(number as usize)?.as_ref()
    }

    /// A member's name: the write model's, or the one kept when the creation was retracted.
    fn member_name(&self, member: MemberNo) -> &str {
        match self.world.member_by_number(member.0) {
            Some(state) => &state.name,
            None => self.names_of_retracted.get(&member).map(|name| &**name).unwrap_or_default(),
        }
    }

    /// The answer's shape of a letter.
    fn transfer_row(&self, transfer_id: TransferId, facts: &TransferFacts) -> TransferRow {
        let (to_branch_id, to_external) = match facts.to {
            Destination::Key(branch) => (Some(*self.branch_numbers.id(branch.0)), None),
            Destination::External(name) => (None, Some(self.external_names.id(name).to_string())),
            Destination::Unnamed => (None, None),
        };
        TransferRow {
            transfer_id,
            member_id: self.world.member_id(facts.member.0),
            from_branch_id: *self.branch_numbers.id(facts.from.0),
            to_branch_id,
            to_external,
            state: facts.state,
            initiated_at: from_nanos(facts.initiated_at),
            valid_until: from_nanos(facts.valid_until),
        }
    }

    /// A member now, with flags as of `now`.
    pub fn member(&self, id: MemberId, now: DateTime<Utc>) -> Option<MemberView> {
        let stream = self.world.member_stream(id)?;
        let member = stream.member.as_ref()?;
        Some(member_view(member, stream.version, member_flags(member, now, &self.config)))
    }

    /// A member as of `at`, from its stream (`history`, all of it, in stream order). Flags are
    /// evaluated at `as_of`, else at `known_at`, else at `now`.
    pub fn member_at(&self, history: &[RecordedEvent], at: &At, now: DateTime<Utc>) -> Option<MemberView> {
        let known: Vec<&RecordedEvent> = history.iter().filter(|e| at.known(e.recorded_at)).collect();
        let retracted: HashSet<u64> = known
            .iter()
            .filter_map(|e| match e.data {
                EventData::EventRetracted { position, .. } => Some(position),
                _ => None,
            })
            .collect();
        let live: Vec<RecordedEvent> = known
            .iter()
            .filter(|e| !matches!(e.data, EventData::EventRetracted { .. }))
            .filter(|e| !retracted.contains(&e.position) && at.in_effect(e.effective_at))
            .map(|e| (*e).clone())
            .collect();
        let stream = MemberStream::fold(&live);
        let member = stream.member.as_ref()?;
        let version = known.iter().map(|e| e.version).max().unwrap_or(0);
        let flags_at = at.as_of.or(at.known_at).unwrap_or(now);
        Some(member_view(member, version, member_flags(member, flags_at, &self.config)))
    }

    pub fn branches(&self) -> Vec<BranchRow> {
        let mut rows: Vec<BranchRow> =
            self.world.branches().filter_map(|b| self.branch(b.branch_id)).collect();
        rows.sort_by(|a, b| a.name.cmp(&b.name).then(a.branch_id.cmp(&b.branch_id)));
        rows
    }

    pub fn branch(&self, id: BranchId) -> Option<BranchRow> {
        let branch = self.world.branch(id)?;
        let facts = self.branch_facts(id)?;
        let dissolved = branch.is_dissolved();
        // Visitors of a dissolved inflow branch stay mobile but are no longer reported there.
        let visiting_count = if dissolved { 0 } else { facts.visitors.len() };
        Some(BranchRow {
            branch_id: id,
            name: branch.name.clone(),
            kind: branch.kind,
            region: branch.region.clone(),
            parent_id: branch.parent_id,
            dissolved,
            home_count: facts.home_count,
            full_count: facts.full_count,
            visiting_count,
            flags: branch_flags(branch.kind, dissolved, facts.home_count, facts.full_count),
        })
    }

    /// A branch's roster at `at` (`None`: no such branch). Sorted home first, then by member.
    pub fn roster(&self, id: BranchId, at: &At) -> Option<Vec<RosterEntry>> {
        if !at.is_latest() {
            return self.roster_from_facts(id, at);
        }
        let branch = self.world.branch(id)?;
        let facts = self.branch_facts(id)?;
        let mut entries: Vec<RosterEntry> = self
            .world
            .home_members(id)
            .filter_map(|member| self.world.member(member))
            .map(|m| roster_entry(m, Relation::Home, m.home_since.unwrap_or(m.created_at)))
            .collect();
        if !branch.is_dissolved() {
            entries.extend(
                facts.visitors.iter().filter_map(|member| self.world.member_by_number(member.0)).map(|m| {
                    let since =
                        m.mobile.as_ref().and_then(|mobile| mobile.arrived_at).unwrap_or(m.created_at);
                    roster_entry(m, Relation::Visiting, since)
                }),
            );
        }
        entries.sort_by_key(|e| (e.relation == Relation::Visiting, e.member_id));
        Some(entries)
    }

    /// The roster computed from the bitemporal facts, whatever `at` is. `roster` uses it for
    /// every past view; tests check that it agrees with the current-state path at the latest.
    pub fn roster_from_facts(&self, id: BranchId, at: &At) -> Option<Vec<RosterEntry>> {
        let facts = self.branch_facts(id)?;
        if !facts.established.holds(at) {
            return Some(Vec::new());
        }
        let dissolved = facts.dissolved.is_some_and(|fact| fact.holds(at));
        let intervals = self.branch_numbers.get(&id).map(|branch| &self.intervals[branch as usize]);
        let mut entries: Vec<RosterEntry> = intervals
            .into_iter()
            .flatten()
            .filter(|interval| interval.holds(at))
            .filter(|interval| !(dissolved && interval.relation == Relation::Visiting))
            .filter_map(|interval| {
                let facts = &self.members[interval.member.index()];
                Some(RosterEntry {
                    member_id: self.world.member_id(interval.member.0),
                    name: self.member_name(interval.member).to_owned(),
                    status: facts.status_at(at)?,
                    relation: interval.relation,
                    since: interval.start.effective_at(),
                })
            })
            .collect();
        entries.sort_by_key(|e| (e.relation == Relation::Visiting, e.member_id));
        Some(entries)
    }

    /// Letters in one state, oldest first; `now` decides which open ones are overdue.
    pub fn transfers(&self, filter: TransferFilter, now: DateTime<Utc>) -> Vec<TransferRow> {
        let mut rows: Vec<TransferRow> = self
            .transfers
            .iter()
            .enumerate()
            .filter_map(|(number, facts)| Some((self.world.transfer(number as u32).0, facts.as_ref()?)))
            .map(|(transfer_id, facts)| {
                let mut row = self.transfer_row(transfer_id, facts);
                if row.state == TransferState::Open && row.valid_until < now {
                    row.state = TransferState::Overdue;
                }
                row
            })
            .filter(|row| match filter {
                TransferFilter::Open => matches!(row.state, TransferState::Open | TransferState::Overdue),
                TransferFilter::Overdue => row.state == TransferState::Overdue,
                TransferFilter::Completed => row.state == TransferState::Completed,
                TransferFilter::Cancelled => row.state == TransferState::Cancelled,
                TransferFilter::Expired => row.state == TransferState::Expired,
            })
            .collect();
        rows.sort_by_key(|row| (row.initiated_at, row.transfer_id));
        rows
    }

    /// Completed transfers, departures and arrivals with effective time in `[from, to)`, as
    /// known at `known_at`, grouped by branch or region.
    pub fn flows(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        by: FlowGrouping,
        known_at: Option<DateTime<Utc>>,
    ) -> Flows {
        if from >= to {
            return Flows::default();
        }
        let at = At::new(None, known_at);
        let daily = &self.daily_flows;
        match by {
            FlowGrouping::Branch => self.flows_by(
                (&daily.by_branch, MONTHS),
                from,
                to,
                &at,
                |branch| branch,
                |branch: BranchNo| self.branch_numbers.id(branch.0).to_string(),
            ),
            FlowGrouping::Region => {
                let region = |branch| daily.regions.of(branch).expect("every flow's branches have a region");
                self.flows_by((&daily.by_region, DAYS), from, to, &at, region, |index| {
                    daily.regions.name(index).to_owned()
                })
            }
        }
    }

    /// Flows in `[from, to)` counted under `key(branch)`, rows and matrix named by `name(key)`.
    /// Whole buckets (days or months) come from the counts; the partial buckets at the edges, and any `known_at`
    /// view, from the records.
    fn flows_by<K: Copy + Eq + std::hash::Hash>(
        &self,
        (counts, buckets): (&BTreeMap<i64, Day<K>>, Buckets),
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        at: &At,
        key: impl Fn(BranchNo) -> K + Copy,
        name: impl Fn(K) -> String,
    ) -> Flows {
        let mut total = Day::default();
        let walk = |total: &mut Day<K>, from: DateTime<Utc>, to: DateTime<Utc>| {
            let records = self.flows.range(day_of(from)..=day_of(to)).flat_map(|(_, records)| records);
            let (from, to) = (nanos(from), nanos(to));
            let in_period =
                |r: &&FlowRecord| from <= r.fact.effective_nanos() && r.fact.effective_nanos() < to;
            for record in records.filter(in_period).filter(|r| r.fact.stands(at)) {
                total.add(&record.kind, 1, key);
            }
        };
        let first_whole = (buckets.of)(from) + i64::from((buckets.start)((buckets.of)(from)) < from);
        let end_whole = (buckets.of)(to);
        if at.known_at.is_some() || first_whole >= end_whole {
            walk(&mut total, from, to);
        } else {
            walk(&mut total, from, (buckets.start)(first_whole));
            for day in counts.range(first_whole..end_whole).map(|(_, day)| day) {
                total.merge(day);
            }
            walk(&mut total, (buckets.start)(end_whole), to);
        }
        let mut rows: Vec<FlowRow> = total
            .per_key
            .into_iter()
            .filter(|(_, counts)| *counts != Counts::default())
            .map(|(key, c)| {
                let (transfers_in, transfers_out) =
                    (c.transfers_in.max(0) as u64, c.transfers_out.max(0) as u64);
                FlowRow {
                    key: name(key),
                    transfers_in,
                    transfers_out,
                    net: transfers_in as i64 - transfers_out as i64,
                    departures: c.departures.max(0) as u64,
                    arrivals: c.arrivals.max(0) as u64,
                }
            })
            .collect();
        rows.sort_by(|a, b| a.key.cmp(&b.key));
        let mut matrix: Vec<MatrixCell> = total
            .pairs
            .into_iter()
            .filter(|(_, count)| *count > 0)
            .map(|((origin, destination), count)| MatrixCell {
                from: name(origin),
                to: match destination {
                    Destination::Key(key) => name(key),
                    Destination::External(external) => {
                        format!("external:{}", self.external_names.id(external))
                    }
                    Destination::Unnamed => "external:".to_owned(),
                },
                count: count as u64,
            })
            .collect();
        matrix.sort_by(|a, b| (&a.from, &a.to).cmp(&(&b.from, &b.to)));
        Flows { rows, matrix }
    }

    /// Mobile members now: how many, where they went, who reported, who is flagged.
    pub fn mobile_stats(&self, now: DateTime<Utc>) -> MobileStats {
        let mut regions: BTreeMap<&str, u64> = BTreeMap::new();
        let mut inflow: BTreeMap<BranchId, u64> = BTreeMap::new();
        let (mut total, mut reported) = (0, 0);
        let mut flagged = Vec::new();
        for member in self.mobile.iter().filter_map(|number| self.world.member_by_number(number.0)) {
            let Some(mobile) = &member.mobile else { continue };
            total += 1;
            *regions.entry(&mobile.destination_region).or_default() += 1;
            if let Some(branch) = visiting_branch(Some(member)) {
                reported += 1;
                if self.world.branch(branch).is_some_and(|b| !b.is_dissolved()) {
                    *inflow.entry(branch).or_default() += 1;
                }
            }
            let flags = member_flags(member, now, &self.config);
            if !flags.is_empty() {
                flagged.push(FlaggedMember { member_id: member.member_id, flags });
            }
        }
        flagged.sort_by_key(|flagged| flagged.member_id);
        MobileStats {
            total,
            reported,
            by_destination_region: regions
                .into_iter()
                .map(|(region, count)| RegionCount { region: region.to_owned(), count })
                .collect(),
            by_inflow_branch: inflow
                .into_iter()
                .map(|(branch_id, count)| BranchCount { branch_id, count })
                .collect(),
            flagged,
        }
    }

    /// Pocket members discovered and placed with effective time in `[from, to)` (either bound
    /// may be open), and those still open now.
    pub fn pocket_stats(&self, from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> PocketStats {
        let mut stats = PocketStats { open: self.pocket.len() as u64, ..PocketStats::default() };
        let in_period = |at: DateTime<Utc>| from.is_none_or(|from| at >= from) && to.is_none_or(|to| at < to);
        for record in &self.pocket_records {
            if record.fact.is_retracted() || !in_period(record.fact.effective_at()) {
                continue;
            }
            match record.kind {
                PocketKind::Discovered(source) => {
                    stats.discovered += 1;
                    *match source {
                        DiscoverySource::ExpiredLetter => &mut stats.by_source.expired_letter,
                        DiscoverySource::SelfDeclared => &mut stats.by_source.self_declared,
                        DiscoverySource::Survey => &mut stats.by_source.survey,
                    } += 1;
                }
                PocketKind::Placed => stats.placed += 1,
            }
        }
        stats
    }

    /// Members whose name contains `query` (any script; case-insensitive), or whose id is it.
    pub fn search(&self, query: &str, limit: usize) -> Vec<MemberSummary> {
        let query = query.trim();
        if query.is_empty() {
            return Vec::new();
        }
        let summary = |m: &MemberState| MemberSummary {
            member_id: m.member_id,
            name: m.name.to_string(),
            branch_id: m.branch_id,
            status: m.status,
        };
        if let Ok(id) = query.parse::<MemberId>() {
            return self.world.member(id).map(summary).into_iter().collect();
        }
        let needle = query.to_lowercase();
        let mut found: Vec<MemberSummary> =
            self.world.members().filter(|m| m.name.to_lowercase().contains(&needle)).map(summary).collect();
        found.sort_by(|a, b| a.name.cmp(&b.name).then(a.member_id.cmp(&b.member_id)));
        found.truncate(limit.min(SEARCH_RESULTS_MAX));
        found
    }
}

fn member_view(member: &MemberState, version: u64, flags: Vec<&'static str>) -> MemberView {
    MemberView {
        member_id: member.member_id,
        name: member.name.to_string(),
        status: member.status,
        branch_id: member.branch_id,
        verified: member.verified,
        pocket: member.pocket.is_some(),
        contact_lost: member.contact_lost_since.is_some(),
        mobile: member.mobile.as_ref().map(|mobile| MobileView {
            destination_region: mobile.destination_region.clone(),
            inflow_branch_id: mobile.inflow_branch_id.or(mobile.planned_inflow_branch_id),
            since: mobile.departed_at,
            reported: mobile.inflow_branch_id.is_some(),
        }),
        open_transfer: member.open_transfer.as_ref().map(|open| OpenTransferView {
            transfer_id: open.transfer_id,
            to_branch_id: open.to_branch_id,
            to_external: open.to_external.clone(),
            valid_until: open.valid_until,
        }),
        flags,
        version,
    }
}

fn roster_entry(member: &MemberState, relation: Relation, since: DateTime<Utc>) -> RosterEntry {
    RosterEntry {
        member_id: member.member_id,
        name: member.name.to_string(),
        status: member.status,
        relation,
        since,
    }
}
