//! A command for every write of API.md. Ids are filled in by the caller before `decide` (the
//! server generates v7 ids when the client supplies none), so `decide` stays pure.

use chrono::{DateTime, Utc};

use crate::event::{BranchKind, DiscoverySource, MemberStatus};
use crate::ids::{BranchId, MemberId, StreamId, TransferId};

/// A write, with the `effective_at` the client asked for (if any).
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub effective_at: Option<DateTime<Utc>>,
    pub body: CommandBody,
}

impl Command {
    pub fn now(body: CommandBody) -> Command {
        Command { effective_at: None, body }
    }

    pub fn at(effective_at: DateTime<Utc>, body: CommandBody) -> Command {
        Command { effective_at: Some(effective_at), body }
    }
}

/// Where a letter sends the member.
#[derive(Debug, Clone, PartialEq)]
pub enum TransferTarget {
    Branch(BranchId),
    /// An organisation outside the system (free text); the transfer completes when its receipt
    /// is recorded.
    External(String),
}

/// Who a pocket discovery is about.
#[derive(Debug, Clone, PartialEq)]
pub enum DiscoverySubject {
    Known(MemberId),
    /// A person the system does not know: the discovery creates the member.
    Unknown {
        new_member_id: MemberId,
        name: String,
        status: MemberStatus,
    },
}

/// The event a retraction names, as the caller found it in the log (`None`: no such position).
#[derive(Debug, Clone, PartialEq)]
pub struct RetractTarget {
    pub position: u64,
    pub stream: StreamId,
    pub event_type: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CommandBody {
    EstablishBranch {
        branch_id: BranchId,
        name: String,
        kind: BranchKind,
        region: String,
        parent_id: Option<BranchId>,
        organizations: Vec<String>,
    },
    ReclassifyBranch {
        branch_id: BranchId,
        kind: BranchKind,
    },
    DissolveBranch {
        branch_id: BranchId,
        successor_id: Option<BranchId>,
    },
    RegisterMember {
        member_id: MemberId,
        name: String,
        branch_id: BranchId,
        status: MemberStatus,
    },
    VerifyMember {
        member_id: MemberId,
    },
    IssueTransfer {
        member_id: MemberId,
        transfer_id: TransferId,
        to: TransferTarget,
        letter_no: Option<String>,
        valid_until: Option<DateTime<Utc>>,
    },
    CompleteTransfer {
        transfer_id: TransferId,
    },
    CancelTransfer {
        transfer_id: TransferId,
        reason: String,
    },
    Depart {
        member_id: MemberId,
        destination_region: String,
        destination_organization: Option<String>,
        inflow_branch_id: Option<BranchId>,
        certificate_no: Option<String>,
        expected_return: Option<DateTime<Utc>>,
    },
    Arrive {
        member_id: MemberId,
        inflow_branch_id: BranchId,
    },
    Return {
        member_id: MemberId,
    },
    DiscoverPocketMember {
        subject: DiscoverySubject,
        source: DiscoverySource,
        found_region: Option<String>,
        found_organization: Option<String>,
    },
    PlacePocketMember {
        member_id: MemberId,
        branch_id: BranchId,
    },
    SetContact {
        member_id: MemberId,
        lost: bool,
        reason: Option<String>,
    },
    ChangeStatus {
        member_id: MemberId,
        to: MemberStatus,
        reason: String,
    },
    Retract {
        target: Option<RetractTarget>,
        reason: String,
    },
}
