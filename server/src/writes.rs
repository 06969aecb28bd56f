//! The write endpoints: each parses its body, turns it into a core `Command` (generating v7 ids
//! the client did not supply), and hands it to the processor. Answers `201 {"events": [...]}`
//! with the created id where one was created.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use flowbook_core::{
    BranchId, BranchKind, Command, CommandBody, DiscoverySource, DiscoverySubject, MemberId, MemberStatus,
    RetractTarget, StreamId, TransferId, TransferTarget,
};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::access::{Principal, Role};
use crate::app::{Actor, ApiBody, ApiPath, AppState};
use crate::error::ApiError;
use crate::processor::Write;
use crate::time::instant;

/// Parses a JSON body; an empty body is `{}`.
pub fn parse_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    let text: &[u8] = if body.iter().all(|b| b.is_ascii_whitespace()) { b"{}" } else { body };
    serde_json::from_slice(text)
        .map_err(|error| ApiError::malformed(format!("the body is not a valid request: {error}")))
}

/// `effective_at` and `expected_version`, which every write may carry.
#[derive(Debug, Default, Deserialize)]
struct Common {
    #[serde(default, deserialize_with = "instant::option")]
    effective_at: Option<DateTime<Utc>>,
    expected_version: Option<u64>,
}

/// Reads the body twice: once for the write's own fields (unknown ones refused), once for the
/// common ones.
fn bodies<T: DeserializeOwned>(body: &Bytes) -> Result<(T, Common), ApiError> {
    #[derive(Deserialize)]
    struct WithCommon<T> {
        #[serde(flatten)]
        own: T,
        #[serde(flatten)]
        common: Common,
    }
    let both: WithCommon<T> = parse_body(body)?;
    Ok((both.own, both.common))
}

/// Submits a write and shapes the answer.
async fn run(
    state: &AppState,
    principal: Principal,
    headers: &HeaderMap,
    path: &str,
    body: &Bytes,
    command: Command,
    member: Option<MemberId>,
    expected_version: Option<u64>,
    created: Option<(&'static str, Uuid)>,
) -> Result<Response, ApiError> {
    let actor = principal.name.clone();
    let idempotency = idempotency_key(headers, &actor, path, body)?;
    let expected_version = match (expected_version, member) {
        (Some(version), Some(member)) => Some((StreamId::Member(member), version)),
        (Some(_), None) => return Err(ApiError::malformed("expected_version applies to member writes")),
        (None, _) => None,
    };
    let written = state
        .processor
        .write(|reply| Write { principal, command, expected_version, idempotency, reply })
        .await?;
    let mut answer = json!({ "events": written.events });
    if let Some((field, id)) = created {
        // A replay answers with the id the first request created.
        let id = if written.replayed { created_id(&written.events, field).unwrap_or(id) } else { id };
        answer[field] = json!(id);
    }
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

fn created_id(events: &[flowbook_store::Envelope], field: &str) -> Option<Uuid> {
    let data: Value = serde_json::from_str(events.first()?.data.get()).ok()?;
    data.get(field)?.as_str()?.parse().ok()
}

/// The `Idempotency-Key` header, scoped to the actor; the fingerprint covers path and body.
fn idempotency_key(
    headers: &HeaderMap,
    actor: &str,
    path: &str,
    body: &Bytes,
) -> Result<Option<flowbook_store::IdempotencyKey>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else { return Ok(None) };
    let key = value.to_str().map_err(|_| ApiError::malformed("Idempotency-Key must be text"))?;
    if key.is_empty() || key.len() > 200 {
        return Err(ApiError::malformed("Idempotency-Key must be 1 to 200 characters"));
    }
    let mut hasher = Sha256::new();
    hasher.update(path.as_bytes());
    hasher.update([0]);
    hasher.update(body);
    Ok(Some(flowbook_store::IdempotencyKey {
        key: format!("{actor}\u{1f}{key}"),
        fingerprint: hasher.finalize().into(),
    }))
}

fn new_id(now: DateTime<Utc>) -> Uuid {
    let random: [u8; 10] = *Uuid::new_v4().as_bytes().first_chunk().expect("16 bytes");
    uuid::Builder::from_unix_timestamp_millis(u64::try_from(now.timestamp_millis()).unwrap_or(0), &random)
        .into_uuid()
}

fn command(common: &Common, body: CommandBody) -> Command {
    Command { effective_at: common.effective_at, body }
}

// ---- branches ------------------------------------------------------------------------------------

#[derive(Deserialize)]
pub struct EstablishBody {
    name: String,
    kind: BranchKind,
    region: String,
    parent_id: Option<BranchId>,
    #[serde(default)]
    organizations: Vec<String>,
    branch_id: Option<BranchId>,
}

pub async fn establish(
    State(state): State<AppState>,
    Actor(actor): Actor,
    headers: HeaderMap,
    ApiBody(body): ApiBody,
) -> Result<Response, ApiError> {
    let (own, common): (EstablishBody, Common) = bodies(&body)?;
    let branch_id = own.branch_id.unwrap_or_else(|| BranchId(new_id(Utc::now())));
    let body_command = CommandBody::EstablishBranch {
        branch_id,
        name: own.name,
        kind: own.kind,
        region: own.region,
        parent_id: own.parent_id,
        organizations: own.organizations,
    };
    let cmd = command(&common, body_command);
    run(
        &state,
        actor,
        &headers,
        "branches",
        &body,
        cmd,
        None,
        common.expected_version,
        Some(("branch_id", branch_id.0)),
    )
    .await
}

#[derive(Deserialize)]
pub struct ReclassifyBody {
    kind: BranchKind,
}

pub async fn reclassify(
    State(state): State<AppState>,
    Actor(actor): Actor,
    ApiPath(id): ApiPath<BranchId>,
    headers: HeaderMap,
    ApiBody(body): ApiBody,
) -> Result<Response, ApiError> {
    let (own, common): (ReclassifyBody, Common) = bodies(&body)?;
    let cmd = command(&common, CommandBody::ReclassifyBranch { branch_id: id, kind: own.kind });
    run(
        &state,
        actor,
        &headers,
        &format!("branches/{id}/reclassify"),
        &body,
        cmd,
        None,
        common.expected_version,
        None,
    )
    .await
}

#[derive(Deserialize)]
pub struct DissolveBody {
    successor_id: Option<BranchId>,
}

pub async fn dissolve(
    State(state): State<AppState>,
    Actor(actor): Actor,
    ApiPath(id): ApiPath<BranchId>,
    headers: HeaderMap,
    ApiBody(body): ApiBody,
) -> Result<Response, ApiError> {
    let (own, common): (DissolveBody, Common) = bodies(&body)?;
    let cmd = command(&common, CommandBody::DissolveBranch { branch_id: id, successor_id: own.successor_id });
    run(
        &state,
        actor,
        &headers,
        &format!("branches/{id}/dissolve"),
        &body,
        cmd,
        None,
        common.expected_version,
        None,
    )
    .await
}

// ---- members -------------------------------------------------------------------------------------

#[derive(Deserialize)]
pub struct RegisterBody {
    name: String,
    branch_id: BranchId,
    status: MemberStatus,
    member_id: Option<MemberId>,
}

pub async fn register(
    State(state): State<AppState>,
    Actor(actor): Actor,
    headers: HeaderMap,
    ApiBody(body): ApiBody,
) -> Result<Response, ApiError> {
    let (own, common): (RegisterBody, Common) = bodies(&body)?;
    let member_id = own.member_id.unwrap_or_else(|| MemberId(new_id(Utc::now())));
    let cmd = command(
        &common,
        CommandBody::RegisterMember {
            member_id,
            name: own.name,
            branch_id: own.branch_id,
            status: own.status,
        },
    );
    let created = Some(("member_id", member_id.0));
    run(&state, actor, &headers, "members", &body, cmd, Some(member_id), common.expected_version, created)
        .await
}

#[derive(Deserialize)]
pub struct Empty {}

/// A member write whose own body is empty (`verify`, `returns`).
async fn member_only(
    state: AppState,
    actor: Principal,
    headers: HeaderMap,
    body: Bytes,
    path: String,
    member: MemberId,
    make: impl FnOnce(MemberId) -> CommandBody,
) -> Result<Response, ApiError> {
    let (_, common): (Empty, Common) = bodies(&body)?;
    let cmd = command(&common, make(member));
    run(&state, actor, &headers, &path, &body, cmd, Some(member), common.expected_version, None).await
}

pub async fn verify(
    State(state): State<AppState>,
    Actor(actor): Actor,
    ApiPath(id): ApiPath<MemberId>,
    headers: HeaderMap,
    ApiBody(body): ApiBody,
) -> Result<Response, ApiError> {
    member_only(state, actor, headers, body, format!("members/{id}/verify"), id, |member_id| {
        CommandBody::VerifyMember { member_id }
    })
    .await
}

pub async fn return_home(
    State(state): State<AppState>,
    Actor(actor): Actor,
    ApiPath(id): ApiPath<MemberId>,
    headers: HeaderMap,
    ApiBody(body): ApiBody,
) -> Result<Response, ApiError> {
    member_only(state, actor, headers, body, format!("members/{id}/returns"), id, |member_id| {
        CommandBody::Return { member_id }
    })
    .await
}

#[derive(Deserialize)]
pub struct TransferBody {
    to_branch_id: Option<BranchId>,
    to_external: Option<String>,
    letter_no: Option<String>,
    #[serde(default, deserialize_with = "instant::option")]
    valid_until: Option<DateTime<Utc>>,
    transfer_id: Option<TransferId>,
}

pub async fn issue_transfer(
    State(state): State<AppState>,
    Actor(actor): Actor,
    ApiPath(id): ApiPath<MemberId>,
    headers: HeaderMap,
    ApiBody(body): ApiBody,
) -> Result<Response, ApiError> {
    let (own, common): (TransferBody, Common) = bodies(&body)?;
    let to = match (own.to_branch_id, own.to_external) {
        (Some(branch), None) => TransferTarget::Branch(branch),
        (None, Some(external)) => TransferTarget::External(external),
        _ => return Err(ApiError::malformed("give exactly one of to_branch_id and to_external")),
    };
    let transfer_id = own.transfer_id.unwrap_or_else(|| TransferId(new_id(Utc::now())));
    let cmd = command(
        &common,
        CommandBody::IssueTransfer {
            member_id: id,
            transfer_id,
            to,
            letter_no: own.letter_no,
            valid_until: own.valid_until,
        },
    );
    let created = Some(("transfer_id", transfer_id.0));
    run(
        &state,
        actor,
        &headers,
        &format!("members/{id}/transfers"),
        &body,
        cmd,
        Some(id),
        common.expected_version,
        created,
    )
    .await
}

pub async fn complete_transfer(
    State(state): State<AppState>,
    Actor(actor): Actor,
    ApiPath(id): ApiPath<TransferId>,
    headers: HeaderMap,
    ApiBody(body): ApiBody,
) -> Result<Response, ApiError> {
    let (_, common): (Empty, Common) = bodies(&body)?;
    let member = state.live.read().world().transfer_member(id);
    let cmd = command(&common, CommandBody::CompleteTransfer { transfer_id: id });
    run(
        &state,
        actor,
        &headers,
        &format!("transfers/{id}/complete"),
        &body,
        cmd,
        member,
        common.expected_version,
        None,
    )
    .await
}

#[derive(Deserialize)]
pub struct CancelBody {
    reason: String,
}

pub async fn cancel_transfer(
    State(state): State<AppState>,
    Actor(actor): Actor,
    ApiPath(id): ApiPath<TransferId>,
    headers: HeaderMap,
    ApiBody(body): ApiBody,
) -> Result<Response, ApiError> {
    let (own, common): (CancelBody, Common) = bodies(&body)?;
    let member = state.live.read().world().transfer_member(id);
    let cmd = command(&common, CommandBody::CancelTransfer { transfer_id: id, reason: own.reason });
    run(
        &state,
        actor,
        &headers,
        &format!("transfers/{id}/cancel"),
        &body,
        cmd,
        member,
        common.expected_version,
        None,
    )
    .await
}

#[derive(Deserialize)]
pub struct DepartureBody {
    destination_region: String,
    destination_organization: Option<String>,
    inflow_branch_id: Option<BranchId>,
    certificate_no: Option<String>,
    #[serde(default, deserialize_with = "instant::option")]
    expected_return: Option<DateTime<Utc>>,
}

pub async fn depart(
    State(state): State<AppState>,
    Actor(actor): Actor,
    ApiPath(id): ApiPath<MemberId>,
    headers: HeaderMap,
    ApiBody(body): ApiBody,
) -> Result<Response, ApiError> {
    let (own, common): (DepartureBody, Common) = bodies(&body)?;
    let cmd = command(
        &common,
        CommandBody::Depart {
            member_id: id,
            destination_region: own.destination_region,
            destination_organization: own.destination_organization,
            inflow_branch_id: own.inflow_branch_id,
            certificate_no: own.certificate_no,
            expected_return: own.expected_return,
        },
    );
    run(
        &state,
        actor,
        &headers,
        &format!("members/{id}/departures"),
        &body,
        cmd,
        Some(id),
        common.expected_version,
        None,
    )
    .await
}

#[derive(Deserialize)]
pub struct ArrivalBody {
    inflow_branch_id: BranchId,
}

pub async fn arrive(
    State(state): State<AppState>,
    Actor(actor): Actor,
    ApiPath(id): ApiPath<MemberId>,
    headers: HeaderMap,
    ApiBody(body): ApiBody,
) -> Result<Response, ApiError> {
    let (own, common): (ArrivalBody, Common) = bodies(&body)?;
    let cmd = command(&common, CommandBody::Arrive { member_id: id, inflow_branch_id: own.inflow_branch_id });
    run(
        &state,
        actor,
        &headers,
        &format!("members/{id}/arrivals"),
        &body,
        cmd,
        Some(id),
        common.expected_version,
        None,
    )
    .await
}

#[derive(Deserialize)]
pub struct PocketBody {
    source: DiscoverySource,
    member_id: Option<MemberId>,
    name: Option<String>,
    status: Option<MemberStatus>,
    new_member_id: Option<MemberId>,
    found_region: Option<String>,
    found_organization: Option<String>,
}

pub async fn discover(
    State(state): State<AppState>,
    Actor(actor): Actor,
    headers: HeaderMap,
    ApiBody(body): ApiBody,
) -> Result<Response, ApiError> {
    let (own, common): (PocketBody, Common) = bodies(&body)?;
    let (subject, member, created) = match (own.member_id, own.name) {
        (Some(member), None) if own.new_member_id.is_none() && own.status.is_none() => {
            (DiscoverySubject::Known(member), member, None)
        }
        (None, Some(name)) => {
            let new_member_id = own.new_member_id.unwrap_or_else(|| MemberId(new_id(Utc::now())));
            let status = own.status.unwrap_or(MemberStatus::Full);
            (DiscoverySubject::Unknown { new_member_id, name, status }, new_member_id, Some(("member_id", new_member_id.0)))
        }
        (None, None) => return Err(ApiError::malformed("name is required when member_id is not given")),
        _ => return Err(ApiError::malformed("give member_id for a known member, or name (and status, new_member_id) for a person unknown to the system")),
    };
    let cmd = command(
        &common,
        CommandBody::DiscoverPocketMember {
            subject,
            source: own.source,
            found_region: own.found_region,
            found_organization: own.found_organization,
        },
    );
    run(&state, actor, &headers, "pocket-members", &body, cmd, Some(member), common.expected_version, created)
        .await
}

#[derive(Deserialize)]
pub struct PlacementBody {
    branch_id: BranchId,
}

pub async fn place(
    State(state): State<AppState>,
    Actor(actor): Actor,
    ApiPath(id): ApiPath<MemberId>,
    headers: HeaderMap,
    ApiBody(body): ApiBody,
) -> Result<Response, ApiError> {
    let (own, common): (PlacementBody, Common) = bodies(&body)?;
    let cmd = command(&common, CommandBody::PlacePocketMember { member_id: id, branch_id: own.branch_id });
    run(
        &state,
        actor,
        &headers,
        &format!("members/{id}/placement"),
        &body,
        cmd,
        Some(id),
        common.expected_version,
        None,
    )
    .await
}

#[derive(Deserialize)]
pub struct ContactBody {
    lost: bool,
    reason: Option<String>,
}

pub async fn contact(
    State(state): State<AppState>,
    Actor(actor): Actor,
    ApiPath(id): ApiPath<MemberId>,
    headers: HeaderMap,
    ApiBody(body): ApiBody,
) -> Result<Response, ApiError> {
    let (own, common): (ContactBody, Common) = bodies(&body)?;
    let cmd = command(&common, CommandBody::SetContact { member_id: id, lost: own.lost, reason: own.reason });
    run(
        &state,
        actor,
        &headers,
        &format!("members/{id}/contact"),
        &body,
        cmd,
        Some(id),
        common.expected_version,
        None,
    )
    .await
}

#[derive(Deserialize)]
pub struct StatusBody {
    to: MemberStatus,
    reason: String,
}

pub async fn status(
    State(state): State<AppState>,
    Actor(actor): Actor,
    ApiPath(id): ApiPath<MemberId>,
    headers: HeaderMap,
    ApiBody(body): ApiBody,
) -> Result<Response, ApiError> {
    let (own, common): (StatusBody, Common) = bodies(&body)?;
    let cmd = command(&common, CommandBody::ChangeStatus { member_id: id, to: own.to, reason: own.reason });
    run(
        &state,
        actor,
        &headers,
        &format!("members/{id}/status"),
        &body,
        cmd,
        Some(id),
        common.expected_version,
        None,
    )
    .await
}

#[derive(Deserialize)]
pub struct RetractBody {
    reason: String,
}

pub async fn retract(
    State(state): State<AppState>,
    Actor(actor): Actor,
    ApiPath(position): ApiPath<u64>,
    headers: HeaderMap,
    ApiBody(body): ApiBody,
) -> Result<Response, ApiError> {
    let (own, common): (RetractBody, Common) = bodies(&body)?;
    let target = state.live.store().event(position)?.map(|envelope| {
        let stream = envelope.stream.parse::<StreamId>().ok();
        stream.map(|stream| RetractTarget { position, stream, event_type: envelope.event_type })
    });
    let target = target.flatten();
    let cmd = command(&common, CommandBody::Retract { target, reason: own.reason });
    run(
        &state,
        actor,
        &headers,
        &format!("events/{position}/retract"),
        &body,
        cmd,
        None,
        common.expected_version,
        None,
    )
    .await
}

pub async fn sweep(
    State(state): State<AppState>,
    Actor(actor): Actor,
    ApiBody(body): ApiBody,
) -> Result<Response, ApiError> {
    let _: Empty = parse_body(&body)?;
    if actor.role != Role::Admin {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "sweeps are the admin's"));
    }
    let expired = state.processor.sweep(Utc::now()).await?;
    Ok((StatusCode::OK, Json(json!({ "expired": expired }))).into_response())
}
