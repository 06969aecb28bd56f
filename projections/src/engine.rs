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
//!   are the member's latest: its open intervals (those it started), its latest intervals in the
//!   branches the refolded member is back in (those it ended), its statuses by the event's
//!   position, and its flow and pocket records by the event's effective time and position.

use std::collections::BTreeMap;

use foldhash::HashMap;

use chrono::{DateTime, Utc};
use flowbook_core::{
    BranchId, DiscoverySource, EventData, MemberId, MemberState, MemberStatus, RecordedEvent, RulesConfig,
    StreamId, TransferId, World,
};

use flowbook_core::grow::{grow_table_to, push_exact, push_gently};
use flowbook_core::sorted::SortedSet;

use crate::dense::{BranchNo, Dense, MemberNo, MemberSet};
use crate::time::{nanos, At, Fact, Nanos};

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
    pub member: MemberNo,
    pub relation: Relation,
    pub start: Fact,
    /// The latest end. At any `known_at` at most one end stands: an end is retracted before the
    /// interval can be ended again.
    pub end: Option<Fact>,
    /// Ends recorded before `end` (each retracted since): rare, so out of line.
    pub earlier_ends: Option<Box<Vec<Fact>>>,
}

impl Interval {
    /// On the roster at `at`.
    pub fn holds(&self, at: &At) -> bool {
        self.start.holds(at)
            && !self.end.is_some_and(|end| end.holds(at))
            && !self.earlier_ends.iter().flat_map(|ends| ends.iter()).any(|end| end.holds(at))
    }

    fn close(&mut self, end: Fact) {
        if let Some(earlier) = self.end.replace(end) {
            self.earlier_ends.get_or_insert_default().push(earlier);
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct BranchFacts {
    pub established: Fact,
    pub dissolved: Option<Fact>,
    /// Current direct home members, full members among them, and arrived visitors.
    pub home_count: usize,
    pub full_count: usize,
    /// By number: a roster reads them in full, a rebuild moves members in and out of them.
    pub visitors: SortedSet<MemberNo>,
}

/// Where an interval is kept: its branch's list and its place in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IntervalRef {
    branch: BranchNo,
    index: u32,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct MemberFacts {
    /// Status as of each status-setting event, in recorded order.
    pub statuses: Vec<(Fact, MemberStatus)>,
    /// The member's open intervals: where the next move ends them and where a retraction finds
    /// those its event started. The intervals its event ended are found in their branch's list
    /// (see `undo`), so no member keeps a list of every interval it has had: a million such
    /// lists cost ~50 MiB and a reallocation on every move.
    open_home: Option<IntervalRef>,
    open_visit: Option<IntervalRef>,
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

/// A letter as the read models keep it: 40 bytes, numbers for member and branches (there are
/// millions of letters); [`TransferRow`] is what queries answer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TransferFacts {
    pub member: MemberNo,
    pub from: BranchNo,
    pub to: Destination<BranchNo>,
    pub state: TransferState,
    pub initiated_at: Nanos,
    pub valid_until: Nanos,
}

/// Where a letter or a completed transfer goes: a branch (or its region, in counts by region),
/// an outside organisation (numbered by name), or — never from the rules — nowhere named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Destination<K> {
    Key(K),
    External(u32),
    Unnamed,
}

impl<K> Destination<K> {
    pub fn map<L>(self, key: impl Fn(K) -> L) -> Destination<L> {
        match self {
            Destination::Key(k) => Destination::Key(key(k)),
            Destination::External(name) => Destination::External(name),
            Destination::Unnamed => Destination::Unnamed,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum FlowKind {
    Transfer { from: BranchNo, to: Destination<BranchNo> },
    Departure { home: BranchNo },
    Arrival { inflow: BranchNo },
}

impl FlowKind {
    /// The branches the flow names.
    pub fn branches(&self) -> impl Iterator<Item = BranchNo> {
        let (first, second) = match *self {
            FlowKind::Transfer { from, to: Destination::Key(to) } => (from, Some(to)),
            FlowKind::Transfer { from, .. } => (from, None),
            FlowKind::Departure { home } => (home, None),
            FlowKind::Arrival { inflow } => (inflow, None),
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
    /// Branches and outside organisations numbered for the facts (see `dense`); members carry
    /// the write model's numbers.
    pub(crate) branch_numbers: Dense<BranchId>,
    pub(crate) external_names: Dense<Box<str>>,
    /// The branches looked up last: a moving event names the same one or two branches several
    /// times over (its counts, its interval, its flow), each a probe of a 20,000-entry table.
    recent_branches: [Option<(BranchId, BranchNo)>; 2],
    /// By branch number; `None` for a branch named but never established.
    pub(crate) branches: Vec<Option<BranchFacts>>,
    /// Every membership interval, by branch number.
    pub(crate) intervals: Vec<Vec<Interval>>,
    /// By member number.
    pub(crate) members: Vec<MemberFacts>,
    /// A member's name, kept only once its creating event is retracted: past views still show
    /// the member, and the write model no longer has it. Otherwise the name is the write model's.
    pub(crate) names_of_retracted: HashMap<MemberNo, Box<str>>,
    /// By the write model's letter number; `None`: not issued as far as the read models know (the
    /// issue was retracted).
    pub(crate) transfers: Vec<Option<TransferFacts>>,
    pub(crate) mobile: MemberSet,
    pub(crate) pocket: MemberSet,
    /// Flow records by the day they took effect (in a B-tree keyed per record, each cost ~240
    /// bytes; in a list per day, 48).
    pub(crate) flows: BTreeMap<i64, Vec<FlowRecord>>,
    /// The same flows counted per day and branch (latest knowledge), for period queries.
    pub(crate) daily_flows: crate::daily::Daily,
    /// Discoveries and placements in position order (the order they are applied in): a period's
    /// statistics walk them all, and a retraction finds its record by position.
    pub(crate) pocket_records: Vec<PocketRecord>,
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
        self.apply_numbered(event, None, history)
    }

    /// `apply`, with the member stream's number given as `World::apply_numbered` takes it (the
    /// caller then hands its numbers over with `adopt_member_numbers`).
    pub(crate) fn apply_numbered<F>(&mut self, event: &RecordedEvent, number: Option<u32>, history: F)
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
                        let number = self.branch_number(branch);
                        self.daily_flows.regions.assign(number, region);
                        self.branches[number.index()] = Some(BranchFacts {
                            established: fact,
                            dissolved: None,
                            home_count: 0,
                            full_count: 0,
                            visitors: SortedSet::default(),
                        });
                    }
                    EventData::BranchDissolved { .. } => {
                        if let Some(facts) = self.branch_facts_mut(branch) {
                            facts.dissolved = Some(fact);
                        }
                    }
                    _ => {}
                }
            }
            StreamId::Member(member) => {
                // At most one lookup by id (none when the number is given): the rest go by number.
                let known = match number {
                    Some(number) => (number < self.world.next_member_number()).then_some(number),
                    None => self.world.member_number(member),
                };
                let before = Snapshot::of(known.and_then(|number| self.world.member_by_number(number)));
                match &event.data {
                    EventData::EventRetracted { position, .. } => {
                        let stream = history(member);
                        let retracted_effective_at =
                            stream.iter().find(|e| e.position == *position).map(|e| e.effective_at);
                        let name = known
                            .and_then(|number| self.world.member_by_number(number))
                            .map(|m| m.name.clone());
                        self.world.apply_numbered(event, number, |_| stream);
                        let number = self.member_number(member, known.or(number));
                        let after = Snapshot::of(self.world.member_by_number(number.0));
                        self.update_current(number, &before, &after, event);
                        if after.status.is_none() {
                            if let Some(name) = name {
                                self.names_of_retracted.insert(number, name);
                            }
                        }
                        if let Some(effective_at) = retracted_effective_at {
                            // As if never applied: the member is back where it was before the
                            // retracted event, so the intervals that event ended are there.
                            let restored = [
                                (Relation::Home, after.home.map(|(branch, _)| branch)),
                                (Relation::Visiting, after.visit.map(|(branch, _)| branch)),
                            ]
                            .map(|(relation, branch)| (relation, branch.and_then(|b| self.known_branch(b))));
                            self.undo(number, *position, effective_at, event.recorded_at, restored);
                        }
                    }
                    data => {
                        self.world.apply_numbered(event, number, history);
                        let number = self.member_number(member, known.or(number));
                        let after = Snapshot::of(self.world.member_by_number(number.0));
                        self.update_current(number, &before, &after, event);
                        self.record_facts(number, &before, &after, data, fact);
                    }
                }
            }
        }
    }

    /// What applying `event` of member stream `number` reads first, read ahead
    /// (`World::touch_member`): the member's state, its facts, the interval its next move
    /// closes, and the letter the event names.
    pub(crate) fn touch_event(&self, event: &RecordedEvent, number: u32) -> u64 {
        let letter = match &event.data {
            EventData::TransferInitiated { transfer_id, .. }
            | EventData::TransferCompleted { transfer_id, .. }
            | EventData::TransferCancelled { transfer_id, .. }
            | EventData::TransferExpired { transfer_id, .. } => self.world.transfer_number(*transfer_id),
            _ => None,
        };
        let facts = letter
            .and_then(|letter| self.transfers.get(letter as usize))
            .map_or(0, |facts| facts.as_ref().map_or(1, |facts| facts.valid_until as u64));
        self.touch_member(number) ^ facts
    }

    fn touch_member(&self, number: u32) -> u64 {
        let facts = self.members.get(number as usize);
        let interval = facts.and_then(|facts| facts.open_home).and_then(|at| {
            self.intervals.get(at.branch.index()).and_then(|list| list.get(at.index as usize))
        });
        self.world.touch_member(number)
            ^ facts.map_or(0, |facts| facts.statuses.len() as u64)
            ^ interval.map_or(0, |interval| interval.start.position())
    }

    /// See `World::defer_home_index`.
    pub(crate) fn defer_home_index(&mut self) {
        self.world.defer_home_index();
    }

    /// See `World::index_homes`.
    pub(crate) fn index_homes(&mut self) {
        self.world.index_homes();
    }

    /// See `World::adopt_member_numbers`.
    pub(crate) fn adopt_member_numbers(&mut self, numbers: flowbook_core::MemberNumbers) {
        self.world.adopt_member_numbers(numbers);
    }

    /// The member's number — the write model's, given at its first event, which has been applied
    /// to it — with a place for its facts.
    fn member_number(&mut self, member: MemberId, known: Option<u32>) -> MemberNo {
        let number = known
            .or_else(|| self.world.member_number(member))
            .expect("the write model has applied the member's event");
        grow_table_to(&mut self.members, number as usize + 1, MemberFacts::default);
        MemberNo(number)
    }

    /// The branch's number, numbering it (with no intervals and no facts) if it is new.
    pub(crate) fn branch_number(&mut self, branch: BranchId) -> BranchNo {
        if let Some(number) = self.recent_branch(branch) {
            return number;
        }
        let (number, new) = self.branch_numbers.number(&branch);
        if new {
            self.intervals.push(Vec::new());
            self.branches.push(None);
        }
        self.remember_branch(branch, BranchNo(number))
    }

    /// The branch's number if it has one (numbering nothing).
    fn known_branch(&mut self, branch: BranchId) -> Option<BranchNo> {
        if let Some(number) = self.recent_branch(branch) {
            return Some(number);
        }
        let number = BranchNo(self.branch_numbers.get(&branch)?);
        Some(self.remember_branch(branch, number))
    }

    fn recent_branch(&self, branch: BranchId) -> Option<BranchNo> {
        self.recent_branches.iter().flatten().find(|(id, _)| *id == branch).map(|(_, number)| *number)
    }

    fn remember_branch(&mut self, branch: BranchId, number: BranchNo) -> BranchNo {
        self.recent_branches = [Some((branch, number)), self.recent_branches[0]];
        number
    }

    /// An established branch's facts.
    fn branch_facts_mut(&mut self, branch: BranchId) -> Option<&mut BranchFacts> {
        let number = self.known_branch(branch)?;
        self.branches[number.index()].as_mut()
    }

    /// Where a letter or transfer goes, numbered.
    fn destination(&mut self, to: Option<BranchId>, external: Option<&str>) -> Destination<BranchNo> {
        match (to, external) {
            (Some(branch), _) => Destination::Key(self.branch_number(branch)),
            (None, Some(name)) => Destination::External(self.external_names.number(&Box::from(name)).0),
            (None, None) => Destination::Unnamed,
        }
    }

    /// Current-state read models, from the member before and after the event.
    fn update_current(
        &mut self,
        number: MemberNo,
        before: &Snapshot,
        after: &Snapshot,
        event: &RecordedEvent,
    ) {
        let home = |s: &Snapshot| s.home.map(|(branch, _)| (branch, s.full));
        if home(before) != home(after) {
            if let Some((branch, full)) = home(before) {
                if let Some(facts) = self.branch_facts_mut(branch) {
                    facts.home_count -= 1;
                    facts.full_count -= usize::from(full);
                }
            }
            if let Some((branch, full)) = home(after) {
                if let Some(facts) = self.branch_facts_mut(branch) {
                    facts.home_count += 1;
                    facts.full_count += usize::from(full);
                }
            }
        }
        let visiting = |s: &Snapshot| s.visit.map(|(branch, _)| branch);
        if visiting(before) != visiting(after) {
            if let Some(facts) = visiting(before).and_then(|branch| self.branch_facts_mut(branch)) {
                facts.visitors.remove(&number);
            }
            if let Some(facts) = visiting(after).and_then(|branch| self.branch_facts_mut(branch)) {
                facts.visitors.insert(number);
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
                let number = self.world.transfer_number(closed).expect("the write model numbered it");
                if let Some(slot) = self.transfers.get_mut(number as usize) {
                    match state {
                        Some(state) => {
                            if let Some(row) = slot {
                                row.state = state;
                            }
                        }
                        None => *slot = None,
                    }
                }
            }
            let opened =
                self.world.member_by_number(number.0).and_then(|m| m.open_transfer.as_deref()).cloned();
            if let Some(opened) = opened {
                let facts = TransferFacts {
                    member: number,
                    from: self.branch_number(opened.from_branch_id),
                    to: self.destination(opened.to_branch_id, opened.to_external.as_deref()),
                    state: TransferState::Open,
                    initiated_at: nanos(opened.initiated_at),
                    valid_until: nanos(opened.valid_until),
                };
                let number =
                    self.world.transfer_number(opened.transfer_id).expect("the write model numbered it");
                grow_table_to(&mut self.transfers, number as usize + 1, || None);
                self.transfers[number as usize] = Some(facts);
            }
        }
        if before.mobile != after.mobile {
            self.mobile.set(number, after.mobile);
        }
        if before.pocket != after.pocket {
            self.pocket.set(number, after.pocket);
        }
    }

    /// Bitemporal facts created by a (non-retraction) member event.
    fn record_facts(
        &mut self,
        member: MemberNo,
        before: &Snapshot,
        after: &Snapshot,
        data: &EventData,
        fact: Fact,
    ) {
        let event_effective_at = fact.effective_at();
        if after.status.is_some() {
            self.names_of_retracted.remove(&member);
        }
        // An interval is keyed by branch *and* since: a placement back into the branch that
        // already holds a pocket member makes that branch the home anew, from the placement.
        for (relation, was, now) in
            [(Relation::Home, before.home, after.home), (Relation::Visiting, before.visit, after.visit)]
        {
            if was == now {
                continue;
            }
            let now = now.map(|(branch, _)| self.branch_number(branch));
            let facts = &mut self.members[member.index()];
            let open = open_slot(facts, relation);
            if let Some(IntervalRef { branch, index }) = open.take() {
                self.intervals[branch.index()][index as usize].close(fact);
            }
            if let Some(branch) = now {
                let list = &mut self.intervals[branch.index()];
                push_gently(list, Interval { member, relation, start: fact, end: None, earlier_ends: None });
                let index = u32::try_from(list.len() - 1).expect("fewer than 2^32 intervals per branch");
                let opened = IntervalRef { branch, index };
                *open_slot(facts, relation) = Some(opened);
            }
        }
        if let Some(status) = after.status.filter(|status| before.status != Some(*status)) {
            push_exact(&mut self.members[member.index()].statuses, (fact, status));
        }
        let flow = match data {
            EventData::TransferCompleted { from_branch_id, to_branch_id, to_external, .. } => {
                Some(FlowKind::Transfer {
                    from: self.branch_number(*from_branch_id),
                    to: self.destination(*to_branch_id, to_external.as_deref()),
                })
            }
            EventData::MemberDeparted { home_branch_id, .. } => {
                Some(FlowKind::Departure { home: self.branch_number(*home_branch_id) })
            }
            EventData::MemberArrived { inflow_branch_id, .. } => {
                Some(FlowKind::Arrival { inflow: self.branch_number(*inflow_branch_id) })
            }
            _ => None,
        };
        if let Some(kind) = flow {
            for branch in kind.branches() {
                // Rules only let flows name established branches; should an imported log name
                // another, its id stands in for the region (formatted only that once).
                if self.daily_flows.regions.of(branch).is_none() {
                    let id = self.branch_numbers.id(branch.0).to_string();
                    self.daily_flows.regions.assign(branch, &id);
                }
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
            push_gently(&mut self.pocket_records, PocketRecord { fact, kind });
        }
    }

    /// Marks the facts the event at `position` created as retracted at `retracted_at`. Only a
    /// member's latest live event can be retracted, so its facts are the member's latest ones:
    /// the intervals it started are the member's open ones, and those it ended are the member's
    /// latest in the branches it is back in (`restored`, by relation: where the refolded member
    /// is now).
    fn undo(
        &mut self,
        member: MemberNo,
        position: u64,
        effective_at: DateTime<Utc>,
        retracted_at: DateTime<Utc>,
        restored: [(Relation, Option<BranchNo>); 2],
    ) {
        let facts = &mut self.members[member.index()];
        let live = |fact: &Fact| fact.position() == position && !fact.is_retracted();
        // Intervals the event started close first, then those it ended reopen: within one
        // relation, an event that moved the member ended one interval and started the next.
        for relation in [Relation::Home, Relation::Visiting] {
            let slot = open_slot(facts, relation);
            if let Some(at) = *slot {
                let interval = &mut self.intervals[at.branch.index()][at.index as usize];
                if live(&interval.start) {
                    interval.start.retract(retracted_at);
                    *slot = None;
                }
            }
        }
        for (relation, branch) in restored {
            let Some(branch) = branch else { continue };
            let list = &mut self.intervals[branch.index()];
            // The one the retracted event ended, searched from the list's end (lists are in
            // position order): a retraction is rare and a branch's list a few thousand
            // intervals, so the walk costs microseconds where a per-member list cost the
            // rebuild a reallocation on every move.
            let ended = list.iter().enumerate().rev().find(|(_, interval)| {
                interval.member == member
                    && interval.relation == relation
                    && interval.end.as_ref().is_some_and(|end| live(end))
            });
            if let Some((index, _)) = ended {
                let interval = &mut list[index];
                interval.end.as_mut().expect("found by its end").retract(retracted_at);
                let index = u32::try_from(index).expect("fewer than 2^32 intervals per branch");
                *open_slot(facts, relation) = Some(IntervalRef { branch, index });
            }
        }
        for (fact, _) in facts.statuses.iter_mut().rev().filter(|(fact, _)| live(fact)) {
            fact.retract(retracted_at);
        }
        let day = self.flows.get_mut(&crate::daily::day_of(effective_at));
        if let Some(record) =
            day.and_then(|records| records.iter_mut().find(|r| r.fact.position() == position))
        {
            if !record.fact.is_retracted() {
                record.fact.retract(retracted_at);
                self.daily_flows.add(effective_at, &record.kind, -1);
            }
        }
        if let Ok(found) =
            self.pocket_records.binary_search_by_key(&position, |record| record.fact.position())
        {
            self.pocket_records[found].fact.retract(retracted_at);
        }
    }
}

fn open_slot(facts: &mut MemberFacts, relation: Relation) -> &mut Option<IntervalRef> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The 2 GiB budget at 10 M events rests on these sizes (BENCHMARKS.md, third session): a
    /// field added to a fact or record multiplies by millions.
    #[test]
    fn facts_and_records_keep_their_sizes() {
        use std::mem::size_of;
        assert_eq!(size_of::<Fact>(), 32);
        assert_eq!(size_of::<Option<Fact>>(), 32, "a fact's position is never 0");
        assert_eq!(size_of::<FlowRecord>(), 48);
        assert_eq!(size_of::<PocketRecord>(), 40);
        assert_eq!(size_of::<Interval>(), 80);
        assert_eq!(size_of::<Option<TransferFacts>>(), 40);
        assert_eq!(size_of::<MemberFacts>(), 48);
    }
}
