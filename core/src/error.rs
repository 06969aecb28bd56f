//! Why a command is refused. [`RuleError`] is one variant per 422 code of API.md; [`Rejection`]
//! adds the refusals that are not broken rules (malformed input, unknown or duplicate ids).

use std::fmt;

/// A broken domain rule: API.md's 422 codes, one to one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuleError {
    SameBranch,
    BranchDissolved,
    OpenTransfer,
    NoOpenTransfer,
    NotMobile,
    AlreadyMobile,
    NoHomeBranch,
    NotPocket,
    MemberInactive,
    EffectiveInFuture,
    EffectiveBeforeLatest,
    InvalidTransition,
    SuccessorRequired,
    /// Raised by the log (a reused idempotency key), listed here so the mapping is complete.
    IdempotencyKeyReused,
    AlreadyRetracted,
    InvalidValidity,
    LetterExpired,
    BranchNotEstablished,
    NotLatest,
    SameActor,
}

impl RuleError {
    pub const ALL: [RuleError; 20] = [
        RuleError::SameBranch,
        RuleError::BranchDissolved,
        RuleError::OpenTransfer,
        RuleError::NoOpenTransfer,
        RuleError::NotMobile,
        RuleError::AlreadyMobile,
        RuleError::NoHomeBranch,
        RuleError::NotPocket,
        RuleError::MemberInactive,
        RuleError::EffectiveInFuture,
        RuleError::EffectiveBeforeLatest,
        RuleError::InvalidTransition,
        RuleError::SuccessorRequired,
        RuleError::IdempotencyKeyReused,
        RuleError::AlreadyRetracted,
        RuleError::InvalidValidity,
        RuleError::LetterExpired,
        RuleError::BranchNotEstablished,
        RuleError::NotLatest,
        RuleError::SameActor,
    ];

    /// The API's error code.
    pub fn code(self) -> &'static str {
        match self {
            RuleError::SameBranch => "same_branch",
            RuleError::BranchDissolved => "branch_dissolved",
            RuleError::OpenTransfer => "open_transfer",
            RuleError::NoOpenTransfer => "no_open_transfer",
            RuleError::NotMobile => "not_mobile",
            RuleError::AlreadyMobile => "already_mobile",
            RuleError::NoHomeBranch => "no_home_branch",
            RuleError::NotPocket => "not_pocket",
            RuleError::MemberInactive => "member_inactive",
            RuleError::EffectiveInFuture => "effective_in_future",
            RuleError::EffectiveBeforeLatest => "effective_before_latest",
            RuleError::InvalidTransition => "invalid_transition",
            RuleError::SuccessorRequired => "successor_required",
            RuleError::IdempotencyKeyReused => "idempotency_key_reused",
            RuleError::AlreadyRetracted => "already_retracted",
            RuleError::InvalidValidity => "invalid_validity",
            RuleError::LetterExpired => "letter_expired",
            RuleError::BranchNotEstablished => "branch_not_established",
            RuleError::NotLatest => "not_latest",
            RuleError::SameActor => "same_actor",
        }
    }

    /// A sentence for the `message` field.
    pub fn message(self) -> &'static str {
        match self {
            RuleError::SameBranch => "the member is already in that branch",
            RuleError::BranchDissolved => "the branch is dissolved and takes no new member",
            RuleError::OpenTransfer => "the member has an open transfer; complete or cancel it first",
            RuleError::NoOpenTransfer => "the transfer is not open (already completed, cancelled or expired)",
            RuleError::NotMobile => "the member is not a mobile member",
            RuleError::AlreadyMobile => "the member is already away as a mobile member",
            RuleError::NoHomeBranch => "the member has no home branch",
            RuleError::NotPocket => "the member is not a pocket member",
            RuleError::MemberInactive => "the member has left or is deceased; the record is closed",
            RuleError::EffectiveInFuture => "effective_at is more than 5 minutes in the future",
            RuleError::EffectiveBeforeLatest => {
                "effective_at is before the latest recorded event of the record"
            }
            RuleError::InvalidTransition => "that change is not allowed from the current state",
            RuleError::SuccessorRequired => "the branch still has members; name a successor branch",
            RuleError::IdempotencyKeyReused => "the idempotency key was used before with another request",
            RuleError::AlreadyRetracted => "that event is already retracted",
            RuleError::InvalidValidity => "a letter must be valid after its issue and for at most 90 days",
            RuleError::LetterExpired => "the letter had expired at the completion's effective time",
            RuleError::BranchNotEstablished => "the branch was not yet established at that effective time",
            RuleError::NotLatest => "only the member's latest event that is not retracted can be retracted",
            RuleError::SameActor => "a registration must be verified by someone other than who registered it",
        }
    }
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for RuleError {}

/// What a command or a lookup is about, for `not_found` and `already_exists`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entity {
    Member,
    Branch,
    Transfer,
    Event,
}

impl fmt::Display for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Entity::Member => "member",
            Entity::Branch => "branch",
            Entity::Transfer => "transfer",
            Entity::Event => "event",
        })
    }
}

/// Why `decide` refused a command. Nothing is appended for any of them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// 400 `malformed`: a field is missing, empty, too long or out of its set.
    #[error("{0}")]
    Malformed(String),
    /// 404 `not_found`.
    #[error("no such {0}")]
    NotFound(Entity),
    /// 409 `already_exists`: a client-supplied id is taken.
    #[error("that {0} id already exists")]
    AlreadyExists(Entity),
    /// 422: a broken rule.
    #[error("{0}")]
    Rule(#[from] RuleError),
}

impl Rejection {
    /// The API's error code.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::Malformed(_) => "malformed",
            Rejection::NotFound(_) => "not_found",
            Rejection::AlreadyExists(_) => "already_exists",
            Rejection::Rule(rule) => rule.code(),
        }
    }
}
