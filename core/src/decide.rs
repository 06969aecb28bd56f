//! The rules: `decide(world, command, context)` turns a command into the events it appends, or
//! says why not. Pure: the time and the actor are passed in, nothing is read from outside.
//!
//! Checks run in a fixed order so that answers are predictable: malformed input, unknown ids,
//! a closed record (`member_inactive`), effective time, then the command's own rules.

use chrono::{DateTime, TimeDelta, Utc};

use crate::command::{Command, CommandBody, DiscoverySubject, RetractTarget, TransferTarget};
use crate::config::{RulesConfig, EFFECTIVE_AHEAD_MINUTES_MAX, LETTER_VALIDITY_DAYS_MAX};
use crate::error::{Entity, Rejection, RuleError};
use crate::event::{DiscoverySource, EventData, MemberStatus, NewEvent};
use crate::ids::{BranchId, MemberId, StreamId};
use crate::state::{BranchState, MemberState, MemberStream, World};

/// Characters in any free-text field (name, region, organisation, reason, letter or
/// certificate number).
pub const TEXT_CHARS_MAX: usize = 200;

/// Organisations one (joint) branch may list.
pub const ORGANIZATIONS_MAX: usize = 100;

/// The actor of local mode: everyone is `local`, so the second-person check cannot apply.
pub const LOCAL_ACTOR: &str = "local";

/// The actor of events the server appends on its own (the expiry sweep).
pub const SYSTEM_ACTOR: &str = "system";

/// What `decide` is told about the moment of the write.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    pub now: DateTime<Utc>,
    pub actor: &'a str,
    pub config: &'a RulesConfig,
}

type Decision = Result<Vec<NewEvent>, Rejection>;

/// The rules of DOMAIN.md for every write of API.md.
pub fn decide(world: &World, command: &Command, context: &Context<'_>) -> Decision {
    let rules = Rules { world, context, requested: command.effective_at };
    match &command.body {
        CommandBody::EstablishBranch { branch_id, name, kind, region, parent_id, organizations } => {
            text("name", name)?;
            text("region", region)?;
            if organizations.len() > ORGANIZATIONS_MAX {
                return Err(malformed(format!("at most {ORGANIZATIONS_MAX} organizations")));
            }
            for organization in organizations {
                text("organizations", organization)?;
            }
            if world.branch(*branch_id).is_some() {
                return Err(Rejection::AlreadyExists(Entity::Branch));
            }
            let at = rules.effective(None)?;
            if let Some(parent) = parent_id {
                rules.receiving_branch(*parent, at)?;
            }
            Ok(vec![branch_event(
                *branch_id,
                at,
                EventData::BranchEstablished {
                    branch_id: *branch_id,
                    name: name.trim().to_owned(),
                    kind: *kind,
                    parent_id: *parent_id,
                    region: region.trim().to_owned(),
                    organizations: organizations.iter().map(|o| o.trim().to_owned()).collect(),
                },
            )])
        }
        CommandBody::ReclassifyBranch { branch_id, kind } => {
            let branch = rules.live_branch(*branch_id)?;
            let at = rules.effective(Some(branch.latest_effective))?;
            if branch.kind == *kind {
                return Err(RuleError::InvalidTransition.into());
            }
            Ok(vec![branch_event(
                *branch_id,
                at,
                EventData::BranchReclassified { branch_id: *branch_id, kind: *kind },
            )])
        }
        CommandBody::DissolveBranch { branch_id, successor_id } => rules.dissolve(*branch_id, *successor_id),
        CommandBody::RegisterMember { member_id, name, branch_id, status } => {
            text("name", name)?;
            if !matches!(status, MemberStatus::Probationary | MemberStatus::Full) {
                return Err(malformed("status must be probationary or full".into()));
            }
            if world.member(*member_id).is_some() {
                return Err(Rejection::AlreadyExists(Entity::Member));
            }
            let at = rules.effective(rules.stream_floor(*member_id))?;
            rules.receiving_branch(*branch_id, at)?;
            Ok(vec![member_event(
                *member_id,
                at,
                EventData::MemberRegistered {
                    member_id: *member_id,
                    name: name.trim().to_owned(),
                    branch_id: *branch_id,
                    status: *status,
                },
            )])
        }
        CommandBody::VerifyMember { member_id } => {
            let (member, at) = rules.active_member(*member_id)?;
            if member.verified {
                return Err(RuleError::InvalidTransition.into());
            }
            if *member.created_by == *context.actor && context.actor != LOCAL_ACTOR {
                return Err(RuleError::SameActor.into());
            }
            Ok(vec![member_event(*member_id, at, EventData::MemberVerified { member_id: *member_id })])
        }
        CommandBody::IssueTransfer { member_id, transfer_id, to, letter_no, valid_until } => {
            if let TransferTarget::External(name) = to {
                text("to_external", name)?;
            }
            if let Some(letter_no) = letter_no {
                text("letter_no", letter_no)?;
            }
            if let TransferTarget::Branch(target) = to {
                rules.branch(*target)?;
            }
            if world.transfer_member(*transfer_id).is_some() {
                return Err(Rejection::AlreadyExists(Entity::Transfer));
            }
            let (member, at) = rules.active_member(*member_id)?;
            let home = member.branch_id.ok_or(RuleError::NoHomeBranch)?;
            if member.open_transfer.is_some() {
                return Err(RuleError::OpenTransfer.into());
            }
            let (to_branch_id, to_external) = match to {
                TransferTarget::Branch(target) => {
                    if *target == home {
                        return Err(RuleError::SameBranch.into());
                    }
                    if rules.branch(*target)?.is_dissolved() {
                        return Err(RuleError::BranchDissolved.into());
                    }
                    (Some(*target), None)
                }
                TransferTarget::External(name) => (None, Some(name.trim().to_owned())),
            };
            let valid_until = valid_until.unwrap_or(at + context.config.letter_validity());
            if valid_until <= at || valid_until > at + TimeDelta::days(LETTER_VALIDITY_DAYS_MAX) {
                return Err(RuleError::InvalidValidity.into());
            }
            let letter_no = match letter_no {
                Some(letter_no) => letter_no.trim().to_owned(),
                None => format!("L-{}", &transfer_id.0.simple().to_string()[..12]),
            };
            Ok(vec![member_event(
                *member_id,
                at,
                EventData::TransferInitiated {
                    transfer_id: *transfer_id,
                    member_id: *member_id,
                    from_branch_id: home,
                    to_branch_id,
                    to_external,
                    letter_no,
                    valid_until,
                },
            )])
        }
        CommandBody::CompleteTransfer { transfer_id } => {
            let member_id =
                world.transfer_member(*transfer_id).ok_or(Rejection::NotFound(Entity::Transfer))?;
            let (member, at) = rules.active_member(member_id)?;
            let open = match &member.open_transfer {
                Some(open) if open.transfer_id == *transfer_id => open,
                _ => return Err(RuleError::NoOpenTransfer.into()),
            };
            if at > open.valid_until {
                return Err(RuleError::LetterExpired.into());
            }
            if let Some(target) = open.to_branch_id {
                rules.receiving_branch(target, at)?;
            }
            Ok(vec![member_event(
                member_id,
                at,
                EventData::TransferCompleted {
                    transfer_id: *transfer_id,
                    member_id,
                    from_branch_id: open.from_branch_id,
                    to_branch_id: open.to_branch_id,
                    to_external: open.to_external.clone(),
                },
            )])
        }
        CommandBody::CancelTransfer { transfer_id, reason } => {
            text("reason", reason)?;
            let member_id =
                world.transfer_member(*transfer_id).ok_or(Rejection::NotFound(Entity::Transfer))?;
            let (member, at) = rules.active_member(member_id)?;
            if member.open_transfer.as_ref().map(|open| open.transfer_id) != Some(*transfer_id) {
                return Err(RuleError::NoOpenTransfer.into());
            }
            Ok(vec![member_event(
                member_id,
                at,
                EventData::TransferCancelled {
                    transfer_id: *transfer_id,
                    member_id,
                    reason: reason.trim().to_owned(),
                },
            )])
        }
        CommandBody::Depart {
            member_id,
            destination_region,
            destination_organization,
            inflow_branch_id,
            certificate_no,
            expected_return,
        } => {
            text("destination_region", destination_region)?;
            optional_text("destination_organization", destination_organization)?;
            optional_text("certificate_no", certificate_no)?;
            if let Some(inflow) = inflow_branch_id {
                rules.branch(*inflow)?;
            }
            let (member, at) = rules.active_member(*member_id)?;
            let home = member.branch_id.ok_or(RuleError::NoHomeBranch)?;
            if member.open_transfer.is_some() {
                return Err(RuleError::OpenTransfer.into());
            }
            if member.mobile.is_some() {
                return Err(RuleError::AlreadyMobile.into());
            }
            if let Some(inflow) = inflow_branch_id {
                if *inflow == home {
                    return Err(RuleError::SameBranch.into());
                }
                if rules.branch(*inflow)?.is_dissolved() {
                    return Err(RuleError::BranchDissolved.into());
                }
            }
            if expected_return.is_some_and(|back| back < at) {
                return Err(malformed("expected_return is before the departure".into()));
            }
            Ok(vec![member_event(
                *member_id,
                at,
                EventData::MemberDeparted {
                    member_id: *member_id,
                    home_branch_id: home,
                    destination_region: destination_region.trim().to_owned(),
                    destination_organization: trimmed(destination_organization),
                    inflow_branch_id: *inflow_branch_id,
                    certificate_no: trimmed(certificate_no),
                    expected_return: *expected_return,
                },
            )])
        }
        CommandBody::Arrive { member_id, inflow_branch_id } => {
            rules.branch(*inflow_branch_id)?;
            let (member, at) = rules.active_member(*member_id)?;
            if member.mobile.is_none() {
                return Err(RuleError::NotMobile.into());
            }
            if member.branch_id == Some(*inflow_branch_id) {
                return Err(RuleError::SameBranch.into());
            }
            rules.receiving_branch(*inflow_branch_id, at)?;
            Ok(vec![member_event(
                *member_id,
                at,
                EventData::MemberArrived { member_id: *member_id, inflow_branch_id: *inflow_branch_id },
            )])
        }
        CommandBody::Return { member_id } => {
            let (member, at) = rules.active_member(*member_id)?;
            if member.mobile.is_none() {
                return Err(RuleError::NotMobile.into());
            }
            Ok(vec![member_event(*member_id, at, EventData::MemberReturned { member_id: *member_id })])
        }
        CommandBody::DiscoverPocketMember { subject, source, found_region, found_organization } => {
            optional_text("found_region", found_region)?;
            optional_text("found_organization", found_organization)?;
            let (member_id, name, status, at) = match subject {
                DiscoverySubject::Known(member_id) => {
                    let (member, at) = rules.active_member(*member_id)?;
                    if member.pocket.is_some() {
                        return Err(RuleError::InvalidTransition.into());
                    }
                    (*member_id, None, None, at)
                }
                DiscoverySubject::Unknown { new_member_id, name, status } => {
                    text("name", name)?;
                    if !matches!(status, MemberStatus::Probationary | MemberStatus::Full) {
                        return Err(malformed("status must be probationary or full".into()));
                    }
                    if world.member(*new_member_id).is_some() {
                        return Err(Rejection::AlreadyExists(Entity::Member));
                    }
                    let at = rules.effective(rules.stream_floor(*new_member_id))?;
                    (*new_member_id, Some(name.trim().to_owned()), Some(*status), at)
                }
            };
            Ok(vec![member_event(
                member_id,
                at,
                EventData::PocketMemberDiscovered {
                    member_id,
                    source: *source,
                    found_region: trimmed(found_region),
                    found_organization: trimmed(found_organization),
                    name,
                    status,
                },
            )])
        }
        CommandBody::PlacePocketMember { member_id, branch_id } => {
            rules.branch(*branch_id)?;
            let (member, at) = rules.active_member(*member_id)?;
            if member.pocket.is_none() {
                return Err(RuleError::NotPocket.into());
            }
            if member.open_transfer.is_some() {
                return Err(RuleError::OpenTransfer.into());
            }
            rules.receiving_branch(*branch_id, at)?;
            Ok(vec![member_event(
                *member_id,
                at,
                EventData::PocketMemberPlaced { member_id: *member_id, branch_id: *branch_id },
            )])
        }
        CommandBody::SetContact { member_id, lost, reason } => {
            optional_text("reason", reason)?;
            let (member, at) = rules.active_member(*member_id)?;
            if member.contact_lost_since.is_some() == *lost {
                return Err(RuleError::InvalidTransition.into());
            }
            let (member_id, reason) = (*member_id, trimmed(reason));
            let data = if *lost {
                EventData::ContactLost { member_id, reason }
            } else {
                EventData::ContactRestored { member_id, reason }
            };
            Ok(vec![member_event(member_id, at, data)])
        }
        CommandBody::ChangeStatus { member_id, to, reason } => {
            text("reason", reason)?;
            let (member, at) = rules.active_member(*member_id)?;
            if !status_transition_allowed(member.status, *to) {
                return Err(RuleError::InvalidTransition.into());
            }
            if to.is_final() && member.open_transfer.is_some() {
                return Err(RuleError::OpenTransfer.into());
            }
            Ok(vec![member_event(
                *member_id,
                at,
                EventData::StatusChanged {
                    member_id: *member_id,
                    from: member.status,
                    to: *to,
                    reason: reason.trim().to_owned(),
                },
            )])
        }
        CommandBody::Retract { target, reason } => {
            text("reason", reason)?;
            let target = target.as_ref().ok_or(Rejection::NotFound(Entity::Event))?;
            rules.retract(target, reason.trim())
        }
    }
}

/// `probationary → full` (conversion), `probationary → probationary` (extension),
/// `→ suspended`, `suspended → full` (reinstated), `→ left`, `→ deceased`.
pub fn status_transition_allowed(from: MemberStatus, to: MemberStatus) -> bool {
    use MemberStatus::*;
    match (from, to) {
        (Left | Deceased, _) => false,
        (Probationary, Full | Probationary) => true,
        (Probationary | Full, Suspended) => true,
        (Suspended, Full) => true,
        (_, Left | Deceased) => true,
        _ => false,
    }
}

/// The expiry sweep: every open letter past its validity expires, and its member is flagged as a
/// pocket member, as one atomic append per member (so each can be retracted), effective at
/// `valid_until` or the member's latest effective time, if later. Running it again finds nothing.
pub fn expire_overdue_letters(world: &World, now: DateTime<Utc>) -> Vec<Vec<NewEvent>> {
    let mut due: Vec<(&MemberState, &MemberStream)> = world
        .members()
        .filter(|member| member.open_transfer.as_ref().is_some_and(|open| open.valid_until < now))
        .filter_map(|member| Some((member, world.member_stream(member.member_id)?)))
        .collect();
    due.sort_by_key(|(member, _)| member.member_id);
    due.into_iter()
        .map(|(member, stream)| {
            let open = member.open_transfer.as_ref().expect("filtered on an open transfer");
            let at =
                stream.latest_effective().map_or(open.valid_until, |latest| latest.max(open.valid_until));
            let member_id = member.member_id;
            vec![
                member_event(
                    member_id,
                    at,
                    EventData::TransferExpired { transfer_id: open.transfer_id, member_id },
                ),
                member_event(
                    member_id,
                    at,
                    EventData::PocketMemberDiscovered {
                        member_id,
                        source: DiscoverySource::ExpiredLetter,
                        found_region: None,
                        found_organization: None,
                        name: None,
                        status: None,
                    },
                ),
            ]
        })
        .collect()
}

struct Rules<'a> {
    world: &'a World,
    context: &'a Context<'a>,
    requested: Option<DateTime<Utc>>,
}

impl<'a> Rules<'a> {
    /// The effective time of the write: as requested, or now — or the record's latest effective
    /// time if that is later. Never more than 5 minutes ahead, never before `floor`.
    fn effective(&self, floor: Option<DateTime<Utc>>) -> Result<DateTime<Utc>, Rejection> {
        let now = self.context.now;
        let at = self.requested.unwrap_or_else(|| floor.map_or(now, |floor| floor.max(now)));
        if at > now + TimeDelta::minutes(EFFECTIVE_AHEAD_MINUTES_MAX) {
            return Err(RuleError::EffectiveInFuture.into());
        }
        if floor.is_some_and(|floor| at < floor) {
            return Err(RuleError::EffectiveBeforeLatest.into());
        }
        Ok(at)
    }

    /// The latest effective time of a member stream that may not hold a member (any more).
    fn stream_floor(&self, member_id: MemberId) -> Option<DateTime<Utc>> {
        self.world.member_stream(member_id).and_then(MemberStream::latest_effective)
    }

    fn branch(&self, id: BranchId) -> Result<&'a BranchState, Rejection> {
        self.world.branch(id).ok_or(Rejection::NotFound(Entity::Branch))
    }

    fn live_branch(&self, id: BranchId) -> Result<&'a BranchState, Rejection> {
        let branch = self.branch(id)?;
        if branch.is_dissolved() {
            return Err(RuleError::BranchDissolved.into());
        }
        Ok(branch)
    }

    /// A branch that takes a member (or a child branch) at `at`: it exists, is not dissolved
    /// (however early `at` is), and was established by then.
    fn receiving_branch(&self, id: BranchId, at: DateTime<Utc>) -> Result<&'a BranchState, Rejection> {
        let branch = self.live_branch(id)?;
        if at < branch.established_at {
            return Err(RuleError::BranchNotEstablished.into());
        }
        Ok(branch)
    }

    /// A member whose record is open, and the write's effective time.
    fn active_member(&self, id: MemberId) -> Result<(&'a MemberState, DateTime<Utc>), Rejection> {
        let member = self.world.member(id).ok_or(Rejection::NotFound(Entity::Member))?;
        if member.status.is_final() {
            return Err(RuleError::MemberInactive.into());
        }
        Ok((member, self.effective(self.stream_floor(id))?))
    }

    fn dissolve(&self, branch_id: BranchId, successor_id: Option<BranchId>) -> Decision {
        let branch = self.live_branch(branch_id)?;
        let members: Vec<MemberId> = self.world.home_members(branch_id).collect();
        let floor = members
            .iter()
            .filter_map(|id| self.stream_floor(*id))
            .fold(branch.latest_effective, DateTime::max);
        let at = self.effective(Some(floor))?;
        if let Some(successor) = successor_id {
            if successor == branch_id {
                return Err(RuleError::SameBranch.into());
            }
            self.receiving_branch(successor, at)?;
        } else if !members.is_empty() {
            return Err(RuleError::SuccessorRequired.into());
        }
        let mut events =
            vec![branch_event(branch_id, at, EventData::BranchDissolved { branch_id, successor_id })];
        if let Some(successor) = successor_id {
            let reason = format!("branch {} dissolved", branch.name);
            events.extend(members.into_iter().map(|member_id| {
                member_event(
                    member_id,
                    at,
                    EventData::MemberReassigned {
                        member_id,
                        from_branch_id: branch_id,
                        to_branch_id: successor,
                        reason: reason.clone(),
                    },
                )
            }));
        }
        Ok(events)
    }

    fn retract(&self, target: &RetractTarget, reason: &str) -> Decision {
        let StreamId::Member(member_id) = target.stream else {
            // A branch is corrected by reclassifying or dissolving it.
            return Err(RuleError::InvalidTransition.into());
        };
        let stream = self.world.member_stream(member_id).ok_or(Rejection::NotFound(Entity::Event))?;
        if stream.retracted().contains(&target.position) {
            return Err(RuleError::AlreadyRetracted.into());
        }
        if matches!(target.event_type.as_str(), "event_retracted" | "member_reassigned") {
            return Err(RuleError::InvalidTransition.into());
        }
        if stream.latest_live.map(|(position, _)| position) != Some(target.position) {
            return Err(RuleError::NotLatest.into());
        }
        // Exempt from the effective-time floor; still not in the future.
        let at = self.effective(None)?;
        Ok(vec![NewEvent {
            stream: target.stream,
            effective_at: at,
            data: EventData::EventRetracted { position: target.position, reason: reason.to_owned() },
        }])
    }
}

fn member_event(member_id: MemberId, effective_at: DateTime<Utc>, data: EventData) -> NewEvent {
    NewEvent { stream: StreamId::Member(member_id), effective_at, data }
}

fn branch_event(branch_id: BranchId, effective_at: DateTime<Utc>, data: EventData) -> NewEvent {
    NewEvent { stream: StreamId::Branch(branch_id), effective_at, data }
}

fn malformed(message: String) -> Rejection {
    Rejection::Malformed(message)
}

/// A required text field: not blank, at most [`TEXT_CHARS_MAX`] characters.
fn text(field: &str, value: &str) -> Result<(), Rejection> {
    if value.trim().is_empty() {
        return Err(malformed(format!("{field} must not be empty")));
    }
    if value.chars().count() > TEXT_CHARS_MAX {
        return Err(malformed(format!("{field} is longer than {TEXT_CHARS_MAX} characters")));
    }
    Ok(())
}

fn optional_text(field: &str, value: &Option<String>) -> Result<(), Rejection> {
    value.as_deref().map_or(Ok(()), |value| text(field, value))
}

fn trimmed(value: &Option<String>) -> Option<String> {
    value.as_ref().map(|value| value.trim().to_owned())
}
