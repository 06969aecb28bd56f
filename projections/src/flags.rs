//! The advisory flags of DOMAIN.md, as pure functions of a state and a moment. Flags advise;
//! they never block a write.

use chrono::{DateTime, TimeDelta, Utc};
use flowbook_core::{BranchKind, MemberState, MemberStatus, RulesConfig};

/// Full members a branch (or joint branch) needs to stand alone.
pub const BRANCH_FULL_MEMBERS_MIN: usize = 3;
/// Home members from which a branch should consider becoming a general branch.
pub const GENERAL_BRANCH_MEMBERS: usize = 50;
/// Home members from which a branch or general branch should consider becoming a committee.
pub const COMMITTEE_MEMBERS: usize = 100;

/// A member's flags at `at` ("more than N days" is strict).
pub fn member_flags(member: &MemberState, at: DateTime<Utc>, config: &RulesConfig) -> Vec<&'static str> {
    let over = |since: Option<DateTime<Utc>>, days: i64| {
        since.is_some_and(|since| at - since > TimeDelta::days(days))
    };
    let mut flags = Vec::new();
    if let Some(mobile) = &member.mobile {
        if over(mobile.arrived_at, config.should_transfer_after_days) {
            flags.push("should_transfer");
        }
        if over(member.last_report_at, config.report_overdue_after_days) {
            flags.push("report_overdue");
        }
    }
    if over(member.contact_lost_since, config.should_suspend_after_days) {
        flags.push("should_suspend");
    }
    if member.status == MemberStatus::Probationary && over(member.probation_since, config.probation_days) {
        flags.push("probation_overdue");
    }
    if !member.verified && over(Some(member.created_at), config.unverified_after_days) {
        flags.push("unverified");
    }
    flags
}

/// A branch's flags from its direct home counts. Dissolved branches have none.
pub fn branch_flags(
    kind: BranchKind,
    dissolved: bool,
    home_count: usize,
    full_count: usize,
) -> Vec<&'static str> {
    let mut flags = Vec::new();
    if dissolved {
        return flags;
    }
    if matches!(kind, BranchKind::Branch | BranchKind::JointBranch) && full_count < BRANCH_FULL_MEMBERS_MIN {
        flags.push("below_minimum");
    }
    if kind == BranchKind::Branch && home_count >= GENERAL_BRANCH_MEMBERS {
        flags.push("consider_general_branch");
    }
    if matches!(kind, BranchKind::Branch | BranchKind::GeneralBranch) && home_count >= COMMITTEE_MEMBERS {
        flags.push("consider_committee");
    }
    flags
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branch_flags_at_their_boundaries() {
        use BranchKind::*;
        assert_eq!(branch_flags(Branch, false, 2, 2), ["below_minimum"]);
        assert!(branch_flags(Branch, false, 3, 3).is_empty());
        assert_eq!(branch_flags(JointBranch, false, 10, 2), ["below_minimum"]);
        assert!(branch_flags(Committee, false, 0, 0).is_empty(), "committees may hold no members directly");
        assert!(branch_flags(GeneralBranch, false, 0, 0).is_empty());
        assert!(branch_flags(Branch, false, 49, 49).is_empty());
        assert_eq!(branch_flags(Branch, false, 50, 50), ["consider_general_branch"]);
        assert_eq!(branch_flags(Branch, false, 100, 100), ["consider_general_branch", "consider_committee"]);
        assert!(branch_flags(GeneralBranch, false, 99, 99).is_empty());
        assert_eq!(branch_flags(GeneralBranch, false, 100, 100), ["consider_committee"]);
        assert!(branch_flags(JointBranch, false, 100, 100).is_empty());
        assert!(branch_flags(Branch, true, 0, 0).is_empty(), "dissolved branches have no flags");
    }
}
