//! The write model: what the rules need to know, folded from the log (`evolve`).
//!
//! [`World`] holds every branch and member as the rules see them now, plus the two indexes the
//! rules need across aggregates (a transfer's member, a branch's home members). It is rebuilt by
//! folding the log from position 1 and kept current by applying each appended event.
//!
//! Retraction: only a member's latest live event can be retracted, and every projection must then
//! behave as if it had never happened. Undoing an arbitrary event in place is not possible in
//! general, so a retraction refolds that one member from its stream (a few dozen events); the
//! caller supplies the stream, which keeps this crate free of storage.

use std::collections::HashSet;
use std::sync::Arc;

use foldhash::HashMap;

use chrono::{DateTime, Utc};

use crate::event::{BranchKind, DiscoverySource, EventData, MemberStatus, RecordedEvent};
use crate::grow::push_to_table;
use crate::ids::{BranchId, MemberId, StreamId, TransferId};
use crate::sorted::SortedSet;

#[derive(Debug, Clone, PartialEq)]
pub struct BranchState {
    pub branch_id: BranchId,
    pub name: String,
    pub kind: BranchKind,
    pub region: String,
    pub parent_id: Option<BranchId>,
    pub organizations: Vec<String>,
    pub established_at: DateTime<Utc>,
    pub dissolved_at: Option<DateTime<Utc>>,
    pub successor_id: Option<BranchId>,
    pub version: u64,
    pub latest_effective: DateTime<Utc>,
}

impl BranchState {
    pub fn is_dissolved(&self) -> bool {
        self.dissolved_at.is_some()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct OpenTransfer {
    pub transfer_id: TransferId,
    pub from_branch_id: BranchId,
    pub to_branch_id: Option<BranchId>,
    pub to_external: Option<String>,
    pub letter_no: String,
    pub valid_until: DateTime<Utc>,
    pub initiated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Mobility {
    pub destination_region: String,
    pub destination_organization: Option<String>,
    /// Named at departure: only planned until the member reports there.
    pub planned_inflow_branch_id: Option<BranchId>,
    /// Where the member has reported (an arrival), and since when.
    pub inflow_branch_id: Option<BranchId>,
    pub arrived_at: Option<DateTime<Utc>>,
    pub departed_at: DateTime<Utc>,
    pub certificate_no: Option<String>,
    pub expected_return: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Pocket {
    pub source: DiscoverySource,
    pub since: DateTime<Utc>,
}

/// One member as the rules see it.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberState {
    pub member_id: MemberId,
    /// `Box<str>`, not `String`, here and in `created_by`: 8 bytes less each, a million times.
    pub name: Box<str>,
    pub status: MemberStatus,
    /// The home branch (`None`: transferred out of the system, left, deceased, or a discovered
    /// person not yet placed).
    pub branch_id: Option<BranchId>,
    /// Effective time of the event that made `branch_id` the home.
    pub home_since: Option<DateTime<Utc>>,
    pub created_by: Box<str>,
    pub created_at: DateTime<Utc>,
    pub verified: bool,
    pub pocket: Option<Pocket>,
    pub contact_lost_since: Option<DateTime<Utc>>,
    /// Boxed, as are open letters: most members have neither at any time, and a member's size
    /// times a million members is the write model's memory.
    pub mobile: Option<Box<Mobility>>,
    pub open_transfer: Option<Box<OpenTransfer>>,
    /// Start of the current probation (registration or the latest extension).
    pub probation_since: Option<DateTime<Utc>>,
    /// The latest departure, arrival or restored contact (for `report_overdue`).
    pub last_report_at: Option<DateTime<Utc>>,
}

/// A member stream: the member (if one exists: the creating event may have been retracted), and
/// what retraction and the effective-time rule need.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemberStream {
    pub member: Option<MemberState>,
    /// The stream's version (every event counts, retractions too): for `expected_version`.
    pub version: u64,
    /// The latest event that is neither a retraction nor retracted.
    pub latest_live: Option<(u64, DateTime<Utc>)>,
    /// Positions retracted so far (set by `fold`). Rare, so one word here — none when there are
    /// none — rather than a vector's three (see `a_member_stream_stays_in_its_allocation_class`).
    retracted: Option<Box<Vec<u64>>>,
}

impl MemberStream {
    /// Positions retracted so far, in the order of their retractions.
    pub fn retracted(&self) -> &[u64] {
        self.retracted.as_deref().map_or(&[], |positions| positions.as_slice())
    }

    /// The latest effective time of the live events (the effective-time rule's floor).
    pub fn latest_effective(&self) -> Option<DateTime<Utc>> {
        self.latest_live.map(|(_, at)| at)
    }

    /// Folds a whole stream, leaving out retracted events.
    pub fn fold(history: &[RecordedEvent]) -> MemberStream {
        let retracted: HashSet<u64> = history
            .iter()
            .filter_map(|event| match event.data {
                EventData::EventRetracted { position, .. } => Some(position),
                _ => None,
            })
            .collect();
        let mut stream = MemberStream::default();
        let mut positions = Vec::new();
        for event in history {
            stream.version = event.version;
            match event.data {
                EventData::EventRetracted { position, .. } => positions.push(position),
                _ if retracted.contains(&event.position) => {}
                _ => stream.apply_live(event),
            }
        }
        stream.retracted = (!positions.is_empty()).then(|| Box::new(positions));
        stream
    }

    /// `evolve` for one live member event.
    fn apply_live(&mut self, event: &RecordedEvent) {
        self.version = event.version;
        let floor = self.latest_effective().map_or(event.effective_at, |at| at.max(event.effective_at));
        self.latest_live = Some((event.position, floor));
        let at = event.effective_at;
        if let Some(created) = create_member(event) {
            self.member = Some(created);
            return;
        }
        let Some(member) = self.member.as_mut() else { return };
        match &event.data {
            EventData::MemberVerified { .. } => member.verified = true,
            EventData::TransferInitiated {
                transfer_id,
                from_branch_id,
                to_branch_id,
                to_external,
                letter_no,
                valid_until,
                ..
            } => {
                member.open_transfer = Some(Box::new(OpenTransfer {
                    transfer_id: *transfer_id,
                    from_branch_id: *from_branch_id,
                    to_branch_id: *to_branch_id,
                    to_external: to_external.clone(),
                    letter_no: letter_no.clone(),
                    valid_until: *valid_until,
                    initiated_at: at,
                }))
            }
            EventData::TransferCompleted { to_branch_id, .. } => {
                member.open_transfer = None;
                member.mobile = None;
                member.pocket = None;
                member.branch_id = *to_branch_id;
                member.home_since = to_branch_id.map(|_| at);
            }
            EventData::TransferCancelled { .. } => member.open_transfer = None,
            EventData::TransferExpired { .. } => member.open_transfer = None,
            EventData::MemberReassigned { to_branch_id, .. } => {
                member.branch_id = Some(*to_branch_id);
                member.home_since = Some(at);
            }
            EventData::MemberDeparted {
                destination_region,
                destination_organization,
                inflow_branch_id,
                certificate_no,
                expected_return,
                ..
            } => {
                member.mobile = Some(Box::new(Mobility {
                    destination_region: destination_region.clone(),
                    destination_organization: destination_organization.clone(),
                    planned_inflow_branch_id: *inflow_branch_id,
                    inflow_branch_id: None,
                    arrived_at: None,
                    departed_at: at,
                    certificate_no: certificate_no.clone(),
                    expected_return: *expected_return,
                }));
                member.last_report_at = Some(at);
            }
            EventData::MemberArrived { inflow_branch_id, .. } => {
                if let Some(mobile) = member.mobile.as_mut() {
                    // Reporting again at the same branch does not restart the 6-month clock.
                    if mobile.inflow_branch_id != Some(*inflow_branch_id) {
                        mobile.inflow_branch_id = Some(*inflow_branch_id);
                        mobile.arrived_at = Some(at);
                    }
                }
                member.last_report_at = Some(at);
            }
            EventData::MemberReturned { .. } => member.mobile = None,
            EventData::PocketMemberDiscovered { source, .. } => {
                member.pocket = Some(Pocket { source: *source, since: at })
            }
            EventData::PocketMemberPlaced { branch_id, .. } => {
                member.pocket = None;
                member.branch_id = Some(*branch_id);
                member.home_since = Some(at);
            }
            EventData::ContactLost { .. } => member.contact_lost_since = Some(at),
            EventData::ContactRestored { .. } => {
                member.contact_lost_since = None;
                member.last_report_at = Some(at);
            }
            EventData::StatusChanged { to, .. } => {
                member.status = *to;
                member.probation_since = match to {
                    MemberStatus::Probationary => Some(at),
                    _ => None,
                };
                if to.is_final() {
                    member.branch_id = None;
                    member.home_since = None;
                    member.mobile = None;
                    member.pocket = None;
                }
            }
            // Created above; branch events and retractions never reach a member fold.
            EventData::MemberRegistered { .. }
            | EventData::BranchEstablished { .. }
            | EventData::BranchReclassified { .. }
            | EventData::BranchDissolved { .. }
            | EventData::EventRetracted { .. } => {}
        }
    }
}

/// The member a registration or a discovery of an unknown person creates.
fn create_member(event: &RecordedEvent) -> Option<MemberState> {
    let (member_id, name, status, branch_id, pocket) = match &event.data {
        EventData::MemberRegistered { member_id, name, branch_id, status } => {
            (*member_id, name.as_str().into(), *status, Some(*branch_id), None)
        }
        EventData::PocketMemberDiscovered { member_id, source, name: Some(name), status, .. } => (
            *member_id,
            name.as_str().into(),
            status.unwrap_or(MemberStatus::Full),
            None,
            Some(Pocket { source: *source, since: event.effective_at }),
        ),
        _ => return None,
    };
    Some(MemberState {
        member_id,
        name,
        status,
        branch_id,
        home_since: branch_id.map(|_| event.effective_at),
        created_by: event.actor.as_str().into(),
        created_at: event.effective_at,
        verified: false,
        pocket,
        contact_lost_since: None,
        mobile: None,
        open_transfer: None,
        probation_since: (status == MemberStatus::Probationary).then_some(event.effective_at),
        last_report_at: None,
    })
}

/// Member streams numbered in order of first appearance: the write model's rule, kept in one
/// place because a rebuild's decoding thread numbers streams with its own copy and hands it over
/// (`World::apply_numbered`, `World::adopt_member_numbers`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemberNumbers(HashMap<MemberId, u32>);

impl MemberNumbers {
    pub fn get(&self, id: MemberId) -> Option<u32> {
        self.0.get(&id).copied()
    }

    /// The stream's number, the next one if it is new (`true` then).
    pub fn number(&mut self, id: MemberId) -> (u32, bool) {
        let next = u32::try_from(self.0.len()).expect("fewer than 2^32 members");
        let number = *self.0.entry(id).or_insert(next);
        (number, number == next)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Every branch and member, and the cross-aggregate indexes the rules need.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct World {
    branches: HashMap<BranchId, BranchState>,
    /// Every member stream gets a number, in order of its first event, kept for good (a member
    /// whose creation is retracted keeps it): indexes by number are plain vectors, and the read
    /// models built on this world number their facts the same way.
    member_numbers: MemberNumbers,
    member_ids: Vec<MemberId>,
    /// By number. Behind a pointer: most members are read rarely, and a vector grown by doubling
    /// would otherwise carry up to as many empty member-sized slots as full ones. Shared (`Arc`,
    /// copied on write): a clone of the world shares every member with it until one side changes
    /// that member, so a server deciding on a clone of its read models' world does not hold each
    /// member twice (`share_members_with`).
    members: Vec<Arc<MemberStream>>,
    /// Every letter ever issued, numbered in order of issue (so an unknown id is `not_found`, a
    /// closed one `no_open_transfer`), and by number its id and its member's number.
    transfer_numbers: HashMap<TransferId, u32>,
    transfers: Vec<(TransferId, u32)>,
    /// A branch's home members by number (left and deceased members have no home). A branch
    /// whose last home member leaves loses its entry, so the index kept event by event equals
    /// the one made in one pass (`index_homes`).
    homes: HashMap<BranchId, SortedSet<u32>>,
    /// `homes` is not kept while a rebuild applies the log (`defer_home_index`).
    homes_deferred: bool,
    /// The last position applied.
    position: u64,
}

impl World {
    pub fn branch(&self, id: BranchId) -> Option<&BranchState> {
        self.branches.get(&id)
    }

    pub fn branches(&self) -> impl Iterator<Item = &BranchState> {
        self.branches.values()
    }

    pub fn member_stream(&self, id: MemberId) -> Option<&MemberStream> {
        self.member_number(id).map(|number| &*self.members[number as usize])
    }

    /// A member that exists (its creating event stands).
    pub fn member(&self, id: MemberId) -> Option<&MemberState> {
        self.member_stream(id).and_then(|stream| stream.member.as_ref())
    }

    /// Members that exist, in order of number.
    pub fn members(&self) -> impl Iterator<Item = &MemberState> {
        self.members.iter().filter_map(|stream| stream.member.as_ref())
    }

    /// The member with this number, if it exists (numbers come from this world): what callers
    /// that already hold the number use, sparing a lookup by id.
    pub fn member_by_number(&self, number: u32) -> Option<&MemberState> {
        self.members.get(number as usize).and_then(|stream| stream.member.as_ref())
    }

    /// Reads what applying an event of member stream `number` reads first — the stream, its
    /// mobility record, its open letter — so that it is in the cache when the event is applied;
    /// the answer means nothing (pass it to `std::hint::black_box`). A rebuild calls this for a
    /// few dozen events ahead of applying them: a loop of nothing but these loads keeps many
    /// cache misses in flight at once, where applying meets them one after another.
    pub fn touch_member(&self, number: u32) -> u64 {
        let Some(stream) = self.members.get(number as usize) else { return 0 };
        let member = stream.member.as_ref();
        let mobility = member.and_then(|m| m.mobile.as_ref()).map_or(0, |m| m.departed_at.timestamp());
        let letter = member.and_then(|m| m.open_transfer.as_ref()).map_or(0, |o| o.valid_until.timestamp());
        stream.version ^ mobility as u64 ^ letter as u64
    }

    /// The number of a member stream that has events (see `member_numbers`).
    pub fn member_number(&self, id: MemberId) -> Option<u32> {
        self.member_numbers.get(id)
    }

    /// The member stream with this number (numbers come from this world).
    pub fn member_id(&self, number: u32) -> MemberId {
        self.member_ids[number as usize]
    }

    /// The member of a letter ever issued.
    pub fn transfer_member(&self, id: TransferId) -> Option<MemberId> {
        self.transfer_number(id).map(|number| self.transfer(number).1)
    }

    /// The number of a letter ever issued (see `transfer_numbers`).
    pub fn transfer_number(&self, id: TransferId) -> Option<u32> {
        self.transfer_numbers.get(&id).copied()
    }

    /// The letter with this number (numbers come from this world): its id and its member.
    pub fn transfer(&self, number: u32) -> (TransferId, MemberId) {
        let (id, member) = self.transfers[number as usize];
        (id, self.member_id(member))
    }

    /// A branch's home members, in order of number.
    pub fn home_members(&self, branch: BranchId) -> impl Iterator<Item = MemberId> + '_ {
        self.homes.get(&branch).into_iter().flatten().map(|number| self.member_id(number))
    }

    /// The version of a stream (0: none), for `expected_version` checks at the log.
    pub fn stream_version(&self, stream: StreamId) -> u64 {
        match stream {
            StreamId::Member(id) => self.member_stream(id).map_or(0, |s| s.version),
            StreamId::Branch(id) => self.branches.get(&id).map_or(0, |b| b.version),
        }
    }

    /// The last position applied.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// `evolve`: applies one recorded event. A retraction needs the member's whole stream (this
    /// one included), which `history` supplies; it is called for retractions only.
    pub fn apply<F>(&mut self, event: &RecordedEvent, history: F)
    where
        F: FnOnce(MemberId) -> Vec<RecordedEvent>,
    {
        self.apply_numbered(event, None, history)
    }

    /// The number the next new member stream will get.
    pub fn next_member_number(&self) -> u32 {
        u32::try_from(self.members.len()).expect("fewer than 2^32 members")
    }

    /// `apply`, with the member stream's number given by a caller that numbers streams exactly
    /// as this world does — in order of their first event, from `next_member_number()` — and
    /// keeps the numbers by id itself: this world then neither looks the member up among every
    /// id (a cache miss per event at a million members) nor records a new stream's number by id
    /// until the caller hands its numbers over (`adopt_member_numbers`); lookups by id find only
    /// what was numbered here. A rebuild from nothing works this way, its decoding thread (which
    /// has time to spare) doing the numbering.
    ///
    /// Panics on a number this world could not have given (a caller's bug, not bad input).
    pub fn apply_numbered<F>(&mut self, event: &RecordedEvent, number: Option<u32>, history: F)
    where
        F: FnOnce(MemberId) -> Vec<RecordedEvent>,
    {
        self.position = self.position.max(event.position);
        match event.stream {
            StreamId::Branch(id) => self.apply_branch(id, event),
            StreamId::Member(id) => {
                // Only the home is needed from before: updating in place spares a clone of the
                // member per event (the fold runs millions of times in a rebuild).
                let number = match number {
                    Some(number) if number < self.next_member_number() => {
                        debug_assert_eq!(self.member_ids[number as usize], id, "numbered as this world does");
                        number
                    }
                    Some(number) => {
                        assert_eq!(number, self.next_member_number(), "new streams are numbered in order");
                        self.push_member(id)
                    }
                    None => self.number_member(id),
                };
                let stream = Arc::make_mut(&mut self.members[number as usize]);
                let open_letter = |stream: &MemberStream| {
                    stream.member.as_ref().and_then(|m| m.open_transfer.as_ref()).map(|o| o.transfer_id)
                };
                let old_home = stream.member.as_ref().and_then(|m| m.branch_id);
                let old_open = open_letter(stream);
                match &event.data {
                    EventData::EventRetracted { .. } => *stream = MemberStream::fold(&history(id)),
                    _ => stream.apply_live(event),
                }
                let new_home = stream.member.as_ref().and_then(|m| m.branch_id);
                // Only a letter just opened can be new to the index: most events leave the
                // member's letter (if any) as it was, and spare the lookup.
                let opened = open_letter(stream).filter(|open| old_open != Some(*open));
                self.reindex(number, old_home, new_home, opened);
            }
        }
    }

    fn apply_branch(&mut self, id: BranchId, event: &RecordedEvent) {
        match &event.data {
            EventData::BranchEstablished { branch_id, name, kind, parent_id, region, organizations } => {
                self.branches.insert(
                    id,
                    BranchState {
                        branch_id: *branch_id,
                        name: name.clone(),
                        kind: *kind,
                        region: region.clone(),
                        parent_id: *parent_id,
                        organizations: organizations.clone(),
                        established_at: event.effective_at,
                        dissolved_at: None,
                        successor_id: None,
                        version: event.version,
                        latest_effective: event.effective_at,
                    },
                );
            }
            other => {
                let Some(branch) = self.branches.get_mut(&id) else { return };
                branch.version = event.version;
                branch.latest_effective = branch.latest_effective.max(event.effective_at);
                match other {
                    EventData::BranchReclassified { kind, .. } => branch.kind = *kind,
                    EventData::BranchDissolved { successor_id, .. } => {
                        branch.dissolved_at = Some(event.effective_at);
                        branch.successor_id = *successor_id;
                    }
                    _ => {}
                }
            }
        }
    }

    /// Makes this world share with `other` each of `members` (by number) that both hold alike,
    /// and answers how many it shares now: a world that applied the same events as `other` —
    /// a clone kept ahead of it, say, once `other` has caught up — then holds those members once
    /// instead of twice. A member that differs, or that `other` does not have, is left alone.
    pub fn share_members_with(&mut self, other: &World, members: impl IntoIterator<Item = u32>) -> usize {
        let mut shared = 0;
        for number in members {
            let (Some(ours), Some(theirs)) =
                (self.members.get(number as usize), other.members.get(number as usize))
            else {
                continue;
            };
            if Arc::ptr_eq(ours, theirs) {
                shared += 1;
            } else if self.member_ids[number as usize] == other.member_ids[number as usize] && ours == theirs
            {
                self.members[number as usize] = Arc::clone(theirs);
                shared += 1;
            }
        }
        shared
    }

    /// Takes over the numbers by id of the member streams a caller numbered (`apply_numbered`).
    ///
    /// Panics unless they number exactly this world's member streams (a caller's bug).
    pub fn adopt_member_numbers(&mut self, numbers: MemberNumbers) {
        assert_eq!(numbers.len(), self.members.len(), "every member stream numbered once");
        debug_assert!(numbers.0.iter().all(|(id, number)| self.member_ids[*number as usize] == *id));
        self.member_numbers = numbers;
    }

    /// The member's number, numbering a new stream (with no events yet).
    fn number_member(&mut self, id: MemberId) -> u32 {
        let (number, new) = self.member_numbers.number(id);
        if new {
            let pushed = self.push_member(id);
            debug_assert_eq!(pushed, number, "numbered by id as by position");
        }
        number
    }

    /// A new member stream, numbered next (not yet recorded by id).
    fn push_member(&mut self, id: MemberId) -> u32 {
        let number = self.next_member_number();
        push_to_table(&mut self.member_ids, id);
        push_to_table(&mut self.members, Arc::default());
        number
    }

    /// Stops keeping the home index until `index_homes`. A rebuild applies every event of the
    /// log, and moving each member in and out of its branches' sets as it goes was a sixth of
    /// the rebuild's applying thread at 10 M events (a binary search of a set not in the cache
    /// per move); the sets are a function of the members' homes, made in one pass at the end.
    /// Until then `home_members` answers nothing.
    pub fn defer_home_index(&mut self) {
        self.homes_deferred = true;
        self.homes.clear();
    }

    /// Makes the home index again from every member's home, if it was deferred.
    pub fn index_homes(&mut self) {
        if !self.homes_deferred {
            return;
        }
        self.homes_deferred = false;
        self.homes.clear();
        for (number, stream) in self.members.iter().enumerate() {
            if let Some(home) = stream.member.as_ref().and_then(|member| member.branch_id) {
                let number = u32::try_from(number).expect("fewer than 2^32 members");
                // In ascending order: every insert is at the end of its set.
                self.homes.entry(home).or_default().insert(number);
            }
        }
    }

    fn reindex(
        &mut self,
        id: u32,
        old_home: Option<BranchId>,
        new_home: Option<BranchId>,
        opened: Option<TransferId>,
    ) {
        if old_home != new_home && !self.homes_deferred {
            if let Some(old) = old_home {
                if let Some(set) = self.homes.get_mut(&old) {
                    set.remove(&id);
                    if set.is_empty() {
                        self.homes.remove(&old);
                    }
                }
            }
            if let Some(new) = new_home {
                self.homes.entry(new).or_default().insert(id);
            }
        }
        if let Some(transfer) = opened {
            if !self.transfer_numbers.contains_key(&transfer) {
                let number = u32::try_from(self.transfers.len()).expect("fewer than 2^32 letters");
                self.transfer_numbers.insert(transfer, number);
                push_to_table(&mut self.transfers, (transfer, id));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A million members are a million shared streams: the allocator rounds each `Arc`'s
    /// allocation (the stream and two counts) up to its size class, so a field that pushes it
    /// over costs ~32 MiB at 10 M events, where the budget is 2 GiB. Measured with mimalloc on 1 M
    /// allocations (sixth session): `Arc`s of 216 bytes take 224 each, of 224 bytes 257.
    #[test]
    fn a_member_stream_stays_in_its_allocation_class() {
        let allocation = std::mem::size_of::<MemberStream>() + 2 * std::mem::size_of::<usize>();
        assert!(allocation <= 216, "{allocation}");
    }

    fn registered(position: u64, member: MemberId, branch: BranchId) -> RecordedEvent {
        let at = DateTime::from_timestamp(1_600_000_000 + position as i64, 0).unwrap();
        RecordedEvent {
            position,
            stream: StreamId::Member(member),
            version: 1,
            effective_at: at,
            recorded_at: at,
            actor: "test".into(),
            data: EventData::MemberRegistered {
                member_id: member,
                name: format!("成员{position}"),
                branch_id: branch,
                status: MemberStatus::Full,
            },
        }
    }

    #[test]
    fn a_clone_shares_members_until_either_changes_one_and_shares_again_when_alike() {
        let branch = BranchId(uuid::Uuid::from_u64_pair(1, 1));
        let members: Vec<MemberId> = (0..4).map(|n| MemberId(uuid::Uuid::from_u64_pair(2, n))).collect();
        let mut read_side = World::default();
        for (n, member) in members.iter().enumerate() {
            read_side.apply(&registered(n as u64 + 1, *member, branch), |_| Vec::new());
        }
        let mut deciding = read_side.clone();
        assert_eq!(deciding.share_members_with(&read_side, 0..4), 4, "a clone shares every member");

        // The deciding side runs ahead by one event: that member is its own now, the others shared.
        let lost = RecordedEvent {
            position: 5,
            stream: StreamId::Member(members[2]),
            version: 2,
            data: EventData::ContactLost { member_id: members[2], reason: None },
            ..registered(5, members[2], branch)
        };
        deciding.apply(&lost, |_| Vec::new());
        assert_ne!(deciding, read_side, "copied on write: the other side is untouched");
        assert_eq!(deciding.share_members_with(&read_side, 0..4), 3, "the changed member is not shared");
        assert!(deciding.member(members[2]).unwrap().contact_lost_since.is_some());
        assert!(read_side.member(members[2]).unwrap().contact_lost_since.is_none());

        // Once the read side has applied it too, the two are alike and share it again.
        read_side.apply(&lost, |_| Vec::new());
        assert_eq!(deciding.share_members_with(&read_side, [2]), 1);
        assert_eq!(deciding, read_side);
        assert_eq!(deciding.share_members_with(&read_side, [9]), 0, "a number neither has is passed over");
    }
}
