//! The projection engine: every read model, kept current event by event.
//!
//! Two kinds of state are kept, each updated in the way that makes retraction simple:
//!
//! - **Current state** (branch counts, open transfers, mobile and pocket members) is derived by
//!   diffing the member before and after each event in the core's `World`. A retraction refolds
//!   the member in `World`, so the same diff undoes it.
//! - **Bitemporal facts** (membership intervals per branch, each member's status timeline, flow
//!   and pocket records) are never removed: each carries its event's effective and recorded times
//!   and, once retracted, the retraction's recorded time. As-of queries filter them; nothing is
//!   replayed. Only a member's latest live event can be retracted, so the facts a retraction marks
//!   are the member's latest: found by the event's position among the member's own intervals and
//!   statuses, and by the event's effective time among the flow and pocket records.

use std::collections::{BTreeMap, BTreeSet};

use foldhash::HashMap;

use chrono::{DateTime, Utc};
use flowbook_core::{
    BranchId, DiscoverySource, EventData, MemberId, MemberState, MemberStatus, RecordedEvent, RulesConfig,
    StreamId, TransferId, World,
};

use crate::time::{At, Fact};

/// Whether a member is on a roster as a home member or as a visiting mobile member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Relation {
    Home,
    Visiting,
}

/// A member on a branch's roster from `start` until its standing end (if any).
#[derive(Debug, Clone)]
pub(crate) struct Interval {
    pub member: MemberId,
    pub relation: Relation,
    pub start: Fact,
    /// Ends in recorded order; at any `known_at` at most one stands (an end is retracted before
    /// the interval can be ended again).
    pub ends: Vec<Fact>,
}

impl Interval {
    /// On the roster at `at`.
    pub fn holds(&self, at: &At) -> bool {
        self.start.holds(at) && !self.ends.iter().any(|end| end.holds(at))
    }
}

#[derive(Debug, Clone)]
pub(crate) struct BranchFacts {
    pub established: Fact,
    pub dissolved: Option<Fact>,
    /// Current direct home members, full members among them, and arrived visitors.
    pub home_count: usize,
    pub full_count: usize,
    pub visitors: BTreeSet<MemberId>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct MemberFacts {
    /// The member's name, kept only once the creating event is retracted: past views still show
    /// the member, and the write model no longer has it. Otherwise the name is the write model's.
    pub name_of_retracted: Option<Box<str>>,
    /// Status as of each status-setting event, in recorded order.
    pub statuses: Vec<(Fact, MemberStatus)>,
    open_home: Option<(BranchId, u32)>,
    open_visit: Option<(BranchId, u32)>,
    /// Every interval the member has had, oldest first: where a retraction looks for the
    /// intervals its event started or ended (the latest ones).
    intervals: Vec<(BranchId, u32)>,
}

impl MemberFacts {
    /// The member's status at `at`, if one was set by then.
    pub fn status_at(&self, at: &At) -> Option<MemberStatus> {
        self.statuses.iter().rev().find(|(fact, _)| fact.holds(at)).map(|(_, status)| *status)
    }
}

/// The state of one letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TransferState {
    Open,
    Overdue,
    Completed,
    Cancelled,
    Expired,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TransferRow {
    pub transfer_id: TransferId,
    pub member_id: MemberId,
    pub from_branch_id: BranchId,
    pub to_branch_id: Option<BranchId>,
    pub to_external: Option<String>,
    pub state: TransferState,
    pub initiated_at: DateTime<Utc>,
    pub valid_until: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum FlowKind {
    Transfer { from: BranchId, to: Option<BranchId>, external: Option<String> },
    Departure { home: BranchId },
    Arrival { inflow: BranchId },
}

impl FlowKind {
    /// The branches the flow names.
    pub fn branches(&self) -> impl Iterator<Item = BranchId> {
        let (first, second) = match self {
            FlowKind::Transfer { from, to, .. } => (*from, *to),
            FlowKind::Departure { home } => (*home, None),
            FlowKind::Arrival { inflow } => (*inflow, None),
        };
        std::iter::once(first).chain(second)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct FlowRecord {
    pub fact: Fact,
    pub kind: FlowKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PocketKind {
    Discovered(DiscoverySource),
    Placed,
}

#[derive(Debug, Clone)]
pub(crate) struct PocketRecord {
    pub fact: Fact,
    pub kind: PocketKind,
}

/// Every read model, as of the last position applied.
#[derive(Debug, Clone, Default)]
pub struct Projections {
    pub(crate) config: RulesConfig,
    pub(crate) world: World,
    pub(crate) branches: HashMap<BranchId, BranchFacts>,
    pub(crate) intervals: HashMap<BranchId, Vec<Interval>>,
    pub(crate) members: HashMap<MemberId, MemberFacts>,
    /// Boxed: a hash table sizes its slots for up to twice its entries, and every letter ever
    /// issued stays listed.
    pub(crate) transfers: HashMap<TransferId, Box<TransferRow>>,
    pub(crate) mobile: BTreeSet<MemberId>,
    pub(crate) pocket: BTreeSet<MemberId>,
    /// Flow records by the day they took effect (in a B-tree keyed per record, each cost ~240
    /// bytes; in a list per day, ~120).
    pub(crate) flows: BTreeMap<i64, Vec<FlowRecord>>,
    /// The same flows counted per day and branch (latest knowledge), for period queries.
    pub(crate) daily_flows: crate::daily::Daily,
    pub(crate) pocket_records: BTreeMap<(DateTime<Utc>, u64), PocketRecord>,
    position: u64,
}

impl Projections {
    pub fn new(config: RulesConfig) -> Projections {
        Projections { config, ..Projections::default() }
    }

    /// The last position applied (the checkpoint).
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The write model the projections are built on, for deciding commands.
    pub fn world(&self) -> &World {
        &self.world
    }

    pub fn config(&self) -> &RulesConfig {
        &self.config
    }

    /// Applies the next event of the log. `history` returns a member's whole stream up to and
    /// including this event; it is called for retractions only.
    ///
    /// Events must come in position order, each once: one already applied is ignored, so
    /// replaying an overlap after a restart is harmless.
    pub fn apply<F>(&mut self, event: &RecordedEvent, history: F)
    where
        F: FnOnce(MemberId) -> Vec<RecordedEvent>,
    {
        if event.position <= self.position {
            return;
        }
        self.position = event.position;
        let fact = Fact::new(event.effective_at, event.recorded_at, event.position);
        match event.stream {
            StreamId::Branch(branch) => {
                self.world.apply(event, |_| Vec::new());
                match &event.data {
                    EventData::BranchEstablished { region, .. } => {
                        self.daily_flows.regions.assign(branch, region);
                        self.branches.insert(
                            branch,
                            BranchFacts {
                                established: fact,
                                dissolved: None,
                                home_count: 0,
                                full_count: 0,
                                visitors: BTreeSet::new(),
                            },
                        );
                    }
                    EventData::BranchDissolved { .. } => {
                        if let Some(facts) = self.branches.get_mut(&branch) {
                            facts.dissolved = Some(fact);
                        }
                    }
                    _ => {}
                }
            }
            StreamId::Member(member) => {
                let before = Snapshot::of(self.world.member(member));
                match &event.data {
                    EventData::EventRetracted { position, .. } => {
                        let stream = history(member);
                        let retracted_effective_at =
                            stream.iter().find(|e| e.position == *position).map(|e| e.effective_at);
                        let name = self.world.member(member).map(|m| Box::<str>::from(m.name.as_str()));
                        self.world.apply(event, |_| stream);
                        let after = Snapshot::of(self.world.member(member));
                        self.update_current(member, &before, &after, event);
                        if after.status.is_none() {
                            self.members.entry(member).or_default().name_of_retracted = name;
                        }
                        if let Some(effective_at) = retracted_effective_at {
                            self.undo(member, *position, effective_at, event.recorded_at);
                        }
                    }
                    data => {
                        self.world.apply(event, history);
                        let after = Snapshot::of(self.world.member(member));
                        self.update_current(member, &before, &after, event);
                        self.record_facts(member, &before, &after, data, fact);
                    }
                }
            }
        }
    }

    /// Current-state read models, from the member before and after the event.
    fn update_current(
        &mut self,
        member: MemberId,
        before: &Snapshot,
        after: &Snapshot,
        event: &RecordedEvent,
    ) {
        let home = |s: &Snapshot| s.home.map(|(branch, _)| (branch, s.full));
        if home(before) != home(after) {
            if let Some((branch, full)) = home(before) {
                if let Some(facts) = self.branches.get_mut(&branch) {
                    facts.home_count -= 1;
                    facts.full_count -= usize::from(full);
                }
            }
            if let Some((branch, full)) = home(after) {
                if let Some(facts) = self.branches.get_mut(&branch) {
                    facts.home_count += 1;
                    facts.full_count += usize::from(full);
                }
            }
        }
        let visiting = |s: &Snapshot| s.visit.map(|(branch, _)| branch);
        if visiting(before) != visiting(after) {
            if let Some(facts) = visiting(before).and_then(|branch| self.branches.get_mut(&branch)) {
                facts.visitors.remove(&member);
            }
            if let Some(facts) = visiting(after).and_then(|branch| self.branches.get_mut(&branch)) {
                facts.visitors.insert(member);
            }
        }
        if before.open_transfer != after.open_transfer {
            if let Some(closed) = before.open_transfer {
                let state = match event.data {
                    EventData::TransferCompleted { .. } => Some(TransferState::Completed),
                    EventData::TransferCancelled { .. } => Some(TransferState::Cancelled),
                    EventData::TransferExpired { .. } => Some(TransferState::Expired),
                    // A retraction that closes a letter retracted its issue: as if never issued.
                    _ => None,
                };
                match state {
                    Some(state) => {
                        if let Some(row) = self.transfers.get_mut(&closed) {
                            row.state = state;
                        }
                    }
                    None => {
                        self.transfers.remove(&closed);
                    }
                }
            }
            let opened = self.world.member(member).and_then(|m| m.open_transfer.as_ref());
            if let Some(opened) = opened {
                self.transfers.insert(
                    opened.transfer_id,
                    Box::new(TransferRow {
                        transfer_id: opened.transfer_id,
                        member_id: member,
                        from_branch_id: opened.from_branch_id,
                        to_branch_id: opened.to_branch_id,
                        to_external: opened.to_external.clone(),
                        state: TransferState::Open,
                        initiated_at: opened.initiated_at,
                        valid_until: opened.valid_until,
                    }),
                );
            }
        }
        if before.mobile != after.mobile {
            set_membership(&mut self.mobile, member, after.mobile);
        }
        if before.pocket != after.pocket {
            set_membership(&mut self.pocket, member, after.pocket);
        }
    }

    /// Bitemporal facts created by a (non-retraction) member event.
    fn record_facts(
        &mut self,
        member: MemberId,
        before: &Snapshot,
        after: &Snapshot,
        data: &EventData,
        fact: Fact,
    ) {
        let event_effective_at = fact.effective_at();
        let facts = self.members.entry(member).or_default();
        if after.status.is_some() {
            facts.name_of_retracted = None;
        }
        // An interval is keyed by branch *and* since: a placement back into the branch that
        // already holds a pocket member makes that branch the home anew, from the placement.
        for (relation, was, now) in
            [(Relation::Home, before.home, after.home), (Relation::Visiting, before.visit, after.visit)]
        {
            if was == now {
                continue;
            }
            let now = now.map(|(branch, _)| branch);
            let open = match relation {
                Relation::Home => &mut facts.open_home,
                Relation::Visiting => &mut facts.open_visit,
            };
            if let Some((branch, index)) = open.take() {
                let list = self.intervals.get_mut(&branch).expect("open interval exists");
                push_exact(&mut list[index as usize].ends, fact);
            }
            if let Some(branch) = now {
                let list = self.intervals.entry(branch).or_default();
                push_gently(list, Interval { member, relation, start: fact, ends: Vec::new() });
                let index = u32::try_from(list.len() - 1).expect("fewer than 2^32 intervals per branch");
                *open = Some((branch, index));
                push_exact(&mut facts.intervals, (branch, index));
            }
        }
        if let Some(status) = after.status.filter(|status| before.status != Some(*status)) {
            push_exact(&mut facts.statuses, (fact, status));
        }
        let key = (event_effective_at, fact.position);
        let flow = match data {
            EventData::TransferCompleted { from_branch_id, to_branch_id, to_external, .. } => {
                Some(FlowKind::Transfer {
                    from: *from_branch_id,
                    to: *to_branch_id,
                    external: to_external.clone(),
                })
            }
            EventData::MemberDeparted { home_branch_id, .. } => {
                Some(FlowKind::Departure { home: *home_branch_id })
            }
            EventData::MemberArrived { inflow_branch_id, .. } => {
                Some(FlowKind::Arrival { inflow: *inflow_branch_id })
            }
            _ => None,
        };
        if let Some(kind) = flow {
            for branch in kind.branches() {
                // Rules only let flows name established branches; should an imported log name
                // another, its id stands in for the region.
                self.daily_flows.regions.assign(branch, &branch.to_string());
            }
            self.daily_flows.add(event_effective_at, &kind, 1);
            let day = self.flows.entry(crate::daily::day_of(event_effective_at)).or_default();
            push_gently(day, FlowRecord { fact, kind });
        }
        let pocket = match data {
            EventData::PocketMemberDiscovered { source, .. } => Some(PocketKind::Discovered(*source)),
            EventData::PocketMemberPlaced { .. } => Some(PocketKind::Placed),
            _ => None,
        };
        if let Some(kind) = pocket {
            self.pocket_records.insert(key, PocketRecord { fact, kind });
        }
    }

    /// Marks the facts the event at `position` created as retracted at `retracted_at`. Only a
    /// member's latest live event can be retracted, so its facts are the member's latest ones.
    fn undo(
        &mut self,
        member: MemberId,
        position: u64,
        effective_at: DateTime<Utc>,
        retracted_at: DateTime<Utc>,
    ) {
        let Some(facts) = self.members.get_mut(&member) else { return };
        let live = |fact: &Fact| fact.position == position && !fact.is_retracted();
        // Intervals the event started close first, then those it ended reopen: within one
        // relation, an event that moved the member ended one interval and started the next.
        for ended in [false, true] {
            for slot in (0..facts.intervals.len()).rev() {
                let (branch, index) = facts.intervals[slot];
                let Some(interval) =
                    self.intervals.get_mut(&branch).and_then(|list| list.get_mut(index as usize))
                else {
                    continue;
                };
                let relation = interval.relation;
                if !ended && live(&interval.start) {
                    interval.start.retract(retracted_at);
                    *open_slot(facts, relation) = None;
                } else if let Some(end) = interval.ends.last_mut().filter(|end| ended && live(end)) {
                    end.retract(retracted_at);
                    *open_slot(facts, relation) = Some((branch, index));
                }
            }
        }
        for (fact, _) in facts.statuses.iter_mut().rev().filter(|(fact, _)| live(fact)) {
            fact.retract(retracted_at);
        }
        let key = (effective_at, position);
        let day = self.flows.get_mut(&crate::daily::day_of(effective_at));
        if let Some(record) = day.and_then(|records| records.iter_mut().find(|r| r.fact.position == position))
        {
            if !record.fact.is_retracted() {
                record.fact.retract(retracted_at);
                self.daily_flows.add(effective_at, &record.kind, -1);
            }
        }
        if let Some(record) = self.pocket_records.get_mut(&key) {
            record.fact.retract(retracted_at);
        }
    }
}

/// Pushes without the spare room `Vec::push` leaves: a million members' short lists (an
/// interval's ends, a member's statuses and intervals: one to three entries each) would otherwise
/// each hold room for four.
/// Pushes onto a long list (a day's flow records, a branch's intervals) growing it by a quarter
/// rather than doubling: millions of records would otherwise carry up to as much spare room.
fn push_gently<T>(list: &mut Vec<T>, item: T) {
    if list.len() == list.capacity() {
        list.reserve_exact((list.len() / 4).max(8));
    }
    list.push(item);
}

fn push_exact<T>(list: &mut Vec<T>, item: T) {
    list.reserve_exact(1);
    list.push(item);
}

fn open_slot(facts: &mut MemberFacts, relation: Relation) -> &mut Option<(BranchId, u32)> {
    match relation {
        Relation::Home => &mut facts.open_home,
        Relation::Visiting => &mut facts.open_visit,
    }
}

/// What the read models need of a member before and after an event: small and `Copy`, so no
/// member is cloned per event.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Snapshot {
    /// `None` when the member does not exist.
    status: Option<MemberStatus>,
    full: bool,
    home: Option<(BranchId, Option<DateTime<Utc>>)>,
    visit: Option<(BranchId, Option<DateTime<Utc>>)>,
    open_transfer: Option<TransferId>,
    mobile: bool,
    pocket: bool,
}

impl Snapshot {
    fn of(member: Option<&MemberState>) -> Snapshot {
        Snapshot {
            status: member.map(|m| m.status),
            full: member.is_some_and(|m| m.status == MemberStatus::Full),
            home: member.and_then(|m| Some((m.branch_id?, m.home_since))),
            visit: member
                .and_then(|m| m.mobile.as_ref())
                .and_then(|mobile| Some((mobile.inflow_branch_id?, mobile.arrived_at))),
            open_transfer: member.and_then(|m| m.open_transfer.as_ref()).map(|open| open.transfer_id),
            mobile: member.is_some_and(|m| m.mobile.is_some()),
            pocket: member.is_some_and(|m| m.pocket.is_some()),
        }
    }
}

/// The branch where a mobile member has reported (an arrival), if any.
pub(crate) fn visiting_branch(state: Option<&MemberState>) -> Option<BranchId> {
    state.and_then(|s| s.mobile.as_ref()).and_then(|mobile| mobile.inflow_branch_id)
}

fn set_membership(set: &mut BTreeSet<MemberId>, member: MemberId, present: bool) {
    if present {
        set.insert(member);
    } else {
        set.remove(&member);
    }
}
#[cfg(test)]
mod size_probe {
    #[test]
    fn sizes() {
        use super::*;
        eprintln!("Fact {} Interval {} FlowRecord {} FlowKind {} MemberFacts {} TransferRow {} BranchFacts {} PocketRecord {} MemberStream {} MemberState {} Mobility {}",
            std::mem::size_of::<Fact>(), std::mem::size_of::<Interval>(), std::mem::size_of::<FlowRecord>(), std::mem::size_of::<FlowKind>(),
            std::mem::size_of::<MemberFacts>(), std::mem::size_of::<TransferRow>(), std::mem::size_of::<BranchFacts>(), std::mem::size_of::<PocketRecord>(),
            std::mem::size_of::<flowbook_core::MemberStream>(), std::mem::size_of::<MemberState>(), 0);
    }
}
