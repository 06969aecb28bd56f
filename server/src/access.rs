//! Who may do what: the auth file, bearer tokens, the three roles and registrar branch scopes
//! (API.md, "Access").
//!
//! The file keeps only SHA-256 hashes of tokens, never the tokens. A registrar's write is allowed
//! when its scope holds the branch that acts: the home branch for most member writes, the
//! receiving branch for completing a transfer (the sending branch for a transfer out of the
//! system), the inflow branch for an arrival, the placement branch for a placement. Branch writes,
//! retractions and sweeps are the admin's; auditors only read.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, LazyLock};

use axum::http::StatusCode;
use flowbook_core::{BranchId, CommandBody, DiscoverySubject, MemberId, World};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// Tokens one auth file may hold.
pub const TOKENS_MAX: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Registrar,
    Auditor,
}

/// The acting token: its name (recorded as `actor`), role and branch scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub role: Role,
    pub branches: BTreeSet<BranchId>,
}

impl Principal {
    /// Local mode: everyone is `local`, with the admin role. One principal for the process:
    /// a request carries a reference to it to the processor, not a copy of its own.
    pub fn local() -> Arc<Principal> {
        static LOCAL: LazyLock<Arc<Principal>> = LazyLock::new(|| {
            Arc::new(Principal {
                name: flowbook_core::LOCAL_ACTOR.into(),
                role: Role::Admin,
                branches: BTreeSet::new(),
            })
        });
        Arc::clone(&LOCAL)
    }
}

/// One entry of the auth file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenEntry {
    pub name: String,
    pub role: Role,
    #[serde(default)]
    pub branches: Vec<BranchId>,
    /// Lower-case hex SHA-256 of the token.
    pub sha256: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct AuthFile {
    pub tokens: Vec<TokenEntry>,
}

pub fn hash_token(token: &str) -> String {
    hex_encode(&Sha256::digest(token.as_bytes()))
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl AuthFile {
    pub fn load(path: &Path) -> Result<AuthFile, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let file: AuthFile = serde_json::from_str(&text)
            .map_err(|e| format!("{} is not an auth file: {e}", path.display()))?;
        if file.tokens.len() > TOKENS_MAX {
            return Err(format!("{} holds more than {TOKENS_MAX} tokens", path.display()));
        }
        Ok(file)
    }

    /// Writes the file atomically (a temporary file renamed over it).
    pub fn save(&self, path: &Path) -> Result<(), String> {
        let text = serde_json::to_string_pretty(self).expect("serialisable");
        let temp = path.with_extension("tmp");
        std::fs::write(&temp, text).map_err(|e| format!("cannot write {}: {e}", temp.display()))?;
        std::fs::rename(&temp, path).map_err(|e| format!("cannot write {}: {e}", path.display()))
    }
}

/// Token hashes to principals, for the server. Each principal is shared by the requests made
/// with its token (its branches are a set: a copy a request would be an allocation per branch).
#[derive(Debug, Clone)]
pub struct Tokens(HashMap<String, Arc<Principal>>);

impl Tokens {
    pub fn from_file(file: &AuthFile) -> Tokens {
        Tokens(
            file.tokens
                .iter()
                .map(|entry| {
                    let principal = Arc::new(Principal {
                        name: entry.name.clone(),
                        role: entry.role,
                        branches: entry.branches.iter().copied().collect(),
                    });
                    (entry.sha256.to_ascii_lowercase(), principal)
                })
                .collect(),
        )
    }

    /// The principal of an `Authorization` header value.
    pub fn authenticate(&self, header: Option<&str>) -> Result<Arc<Principal>, ApiError> {
        let unauthenticated =
            || ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", "a valid bearer token is required");
        let token = header.and_then(|value| value.strip_prefix("Bearer ")).ok_or_else(unauthenticated)?;
        self.0.get(&hash_token(token.trim())).cloned().ok_or_else(unauthenticated)
    }
}

fn forbidden(message: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
}

/// Whether `principal` may send `command`, judged on the state it will be decided on. Unknown
/// members or transfers pass: the rules answer them with `not_found`.
pub fn may_write(principal: &Principal, command: &CommandBody, world: &World) -> Result<(), ApiError> {
    match principal.role {
        Role::Admin => return Ok(()),
        Role::Auditor => return Err(forbidden("auditors only read")),
        Role::Registrar => {}
    }
    let in_scope = |branch: Option<BranchId>| match branch {
        Some(branch) if principal.branches.contains(&branch) => Ok(()),
        Some(_) => Err(forbidden("that branch is outside this token's scope")),
        None => Err(forbidden("a member with no home branch is the admin's")),
    };
    // The home branch of a member; `None` → the member is unknown and the rules will say so.
    let home = |member: MemberId| world.member(member).map(|m| m.branch_id);
    let member_home = |member: MemberId| match home(member) {
        None => Ok(()),
        Some(branch) => in_scope(branch),
    };
    match command {
        CommandBody::EstablishBranch { .. }
        | CommandBody::ReclassifyBranch { .. }
        | CommandBody::DissolveBranch { .. }
        | CommandBody::Retract { .. } => Err(forbidden("branch writes and retractions are the admin's")),
        CommandBody::RegisterMember { branch_id, .. } => in_scope(Some(*branch_id)),
        CommandBody::VerifyMember { member_id }
        | CommandBody::IssueTransfer { member_id, .. }
        | CommandBody::Depart { member_id, .. }
        | CommandBody::Return { member_id }
        | CommandBody::SetContact { member_id, .. }
        | CommandBody::ChangeStatus { member_id, .. } => member_home(*member_id),
        CommandBody::CancelTransfer { transfer_id, .. } => match world.transfer_member(*transfer_id) {
            Some(member) => member_home(member),
            None => Ok(()),
        },
        CommandBody::CompleteTransfer { transfer_id } => {
            let open = world
                .transfer_member(*transfer_id)
                .and_then(|member| world.member(member))
                .and_then(|member| member.open_transfer.as_ref())
                .filter(|open| open.transfer_id == *transfer_id);
            match open {
                // The receiving side accepts; for a transfer out of the system the sender records
                // the receipt.
                Some(open) => in_scope(Some(open.to_branch_id.unwrap_or(open.from_branch_id))),
                None => Ok(()),
            }
        }
        CommandBody::Arrive { inflow_branch_id, .. } => in_scope(Some(*inflow_branch_id)),
        CommandBody::PlacePocketMember { branch_id, .. } => in_scope(Some(*branch_id)),
        CommandBody::DiscoverPocketMember { subject, .. } => match subject {
            DiscoverySubject::Known(member) => member_home(*member),
            DiscoverySubject::Unknown { .. } => Ok(()),
        },
    }
}

/// Creates a token: 32 random bytes as hex. The caller prints it once; only its hash is kept.
pub fn new_token() -> String {
    let a = uuid::Uuid::new_v4();
    let b = uuid::Uuid::new_v4();
    format!("fb_{}{}", a.simple(), b.simple())
}
