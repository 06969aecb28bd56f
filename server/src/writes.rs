//! The write endpoints. Every write — from HTTP or from an import line — is an *op* (the path
//! after `/v1/`) and a JSON body; [`prepare`] turns the pair into a core `Command` (generating v7
//! ids the client did not supply), and the processor decides it. Answers `201 {"events": [...]}`
//! with the created id where one was created.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use flowbook_core::{
    BranchId, BranchKind, Command, CommandBody, DiscoverySource, DiscoverySubject, MemberId, MemberStatus,
    RetractTarget, StreamId, TransferId, TransferTarget,
};
use flowbook_projections::Live;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::access::{Principal, Role};
use crate::app::{Actor, ApiBody, AppState};
use crate::error::ApiError;
use crate::processor::{Write, Written};
use crate::time::instant;

/// Parses a JSON body; an empty body is `{}`.
pub fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let text: &[u8] = if body.iter().all(|b| b.is_ascii_whitespace()) { b"{}" } else { body };
    serde_json::from_slice(text)
        .map_err(|error| ApiError::malformed(format!("the body is not a valid request: {error}")))
}

/// `effective_at` and `expected_version`, which every write may carry.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct Common {
    /// When it took effect (a date or a time; default: now, or the member's latest effective
    /// time if that is later).
    #[serde(default, deserialize_with = "instant::option")]
    effective_at: Option<DateTime<Utc>>,
    /// The member stream's version the client expects (member writes only): else 409.
    expected_version: Option<u64>,
}

/// Reads the body for the op's own fields and the common ones.
fn bodies<T: DeserializeOwned>(body: &[u8]) -> Result<(T, Common), ApiError> {
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

/// A write ready for the processor.
pub struct Prepared {
    command: Command,
    /// The member stream `expected_version` refers to.
    member: Option<MemberId>,
    expected_version: Option<u64>,
    /// The id field and value of what the write creates.
    created: Option<(&'static str, Uuid)>,
}

impl Prepared {
    fn new(common: Common, member: Option<MemberId>, body: CommandBody) -> Prepared {
        Prepared {
            command: Command { effective_at: common.effective_at, body },
            member,
            expected_version: common.expected_version,
            created: None,
        }
    }

    /// The command and the member stream version the client expects, if any.
    fn expected(self) -> Result<(Command, Option<(StreamId, u64)>), ApiError> {
        let expected = match (self.expected_version, self.member) {
            (Some(version), Some(member)) => Some((StreamId::Member(member), version)),
            (Some(_), None) => return Err(ApiError::malformed("expected_version applies to member writes")),
            (None, _) => None,
        };
        Ok((self.command, expected))
    }

    fn creating(mut self, field: &'static str, id: Uuid) -> Prepared {
        self.created = Some((field, id));
        self
    }
}

fn parse_id<T: std::str::FromStr>(text: &str, what: &str) -> Result<T, ApiError> {
    text.parse().map_err(|_| ApiError::malformed(format!("{text:?} is not a valid {what} id")))
}

fn new_id(now: DateTime<Utc>) -> Uuid {
    let random: [u8; 10] = *Uuid::new_v4().as_bytes().first_chunk().expect("16 bytes");
    uuid::Builder::from_unix_timestamp_millis(u64::try_from(now.timestamp_millis()).unwrap_or(0), &random)
        .into_uuid()
}

/// Turns an op (`members/<id>/transfers`, …) and its body into a command.
pub fn prepare(live: &Live, op: &str, body: &[u8]) -> Result<Prepared, ApiError> {
    let parts: Vec<&str> = op.trim_matches('/').split('/').collect();
    let unknown = || ApiError::not_found("write");
    Ok(match parts.as_slice() {
        ["branches"] => {
            let (own, common): (EstablishBody, Common) = bodies(body)?;
            let branch_id = own.branch_id.unwrap_or_else(|| BranchId(new_id(Utc::now())));
            let body = CommandBody::EstablishBranch {
                branch_id,
                name: own.name,
                kind: own.kind,
                region: own.region,
                parent_id: own.parent_id,
                organizations: own.organizations,
            };
            Prepared::new(common, None, body).creating("branch_id", branch_id.0)
        }
        ["branches", id, action] => {
            let branch_id: BranchId = parse_id(id, "branch")?;
            match *action {
                "reclassify" => {
                    let (own, common): (ReclassifyBody, Common) = bodies(body)?;
                    Prepared::new(common, None, CommandBody::ReclassifyBranch { branch_id, kind: own.kind })
                }
                "dissolve" => {
                    let (own, common): (DissolveBody, Common) = bodies(body)?;
                    Prepared::new(
                        common,
                        None,
                        CommandBody::DissolveBranch { branch_id, successor_id: own.successor_id },
                    )
                }
                _ => return Err(unknown()),
            }
        }
        ["members"] => {
            let (own, common): (RegisterBody, Common) = bodies(body)?;
            let member_id = own.member_id.unwrap_or_else(|| MemberId(new_id(Utc::now())));
            let body = CommandBody::RegisterMember {
                member_id,
                name: own.name,
                branch_id: own.branch_id,
                status: own.status,
            };
            Prepared::new(common, Some(member_id), body).creating("member_id", member_id.0)
        }
        ["members", id, action] => prepare_member(parse_id(id, "member")?, action, body)?,
        ["transfers", id, action] => {
            let transfer_id: TransferId = parse_id(id, "transfer")?;
            let member = live.read().world().transfer_member(transfer_id);
            match *action {
                "complete" => {
                    let (_, common): (Empty, Common) = bodies(body)?;
                    Prepared::new(common, member, CommandBody::CompleteTransfer { transfer_id })
                }
                "cancel" => {
                    let (own, common): (CancelBody, Common) = bodies(body)?;
                    Prepared::new(
                        common,
                        member,
                        CommandBody::CancelTransfer { transfer_id, reason: own.reason },
                    )
                }
                _ => return Err(unknown()),
            }
        }
        ["pocket-members"] => prepare_discovery(body)?,
        ["events", position, "retract"] => {
            let position: u64 =
                position.parse().map_err(|_| ApiError::malformed("the position must be a number"))?;
            let (own, common): (RetractBody, Common) = bodies(body)?;
            let target = live.store().event(position)?.and_then(|envelope| {
                let stream = envelope.stream.parse::<StreamId>().ok()?;
                Some(RetractTarget { position, stream, event_type: envelope.event_type })
            });
            Prepared::new(common, None, CommandBody::Retract { target, reason: own.reason })
        }
        _ => return Err(unknown()),
    })
}

fn prepare_member(member_id: MemberId, action: &str, body: &[u8]) -> Result<Prepared, ApiError> {
    let member = Some(member_id);
    Ok(match action {
        "verify" => {
            let (_, common): (Empty, Common) = bodies(body)?;
            Prepared::new(common, member, CommandBody::VerifyMember { member_id })
        }
        "returns" => {
            let (_, common): (Empty, Common) = bodies(body)?;
            Prepared::new(common, member, CommandBody::Return { member_id })
        }
        "transfers" => {
            let (own, common): (TransferBody, Common) = bodies(body)?;
            let to = match (own.to_branch_id, own.to_external) {
                (Some(branch), None) => TransferTarget::Branch(branch),
                (None, Some(external)) => TransferTarget::External(external),
                _ => return Err(ApiError::malformed("give exactly one of to_branch_id and to_external")),
            };
            let transfer_id = own.transfer_id.unwrap_or_else(|| TransferId(new_id(Utc::now())));
            let body = CommandBody::IssueTransfer {
                member_id,
                transfer_id,
                to,
                letter_no: own.letter_no,
                valid_until: own.valid_until,
            };
            Prepared::new(common, member, body).creating("transfer_id", transfer_id.0)
        }
        "departures" => {
            let (own, common): (DepartureBody, Common) = bodies(body)?;
            let body = CommandBody::Depart {
                member_id,
                destination_region: own.destination_region,
                destination_organization: own.destination_organization,
                inflow_branch_id: own.inflow_branch_id,
                certificate_no: own.certificate_no,
                expected_return: own.expected_return,
            };
            Prepared::new(common, member, body)
        }
        "arrivals" => {
            let (own, common): (ArrivalBody, Common) = bodies(body)?;
            Prepared::new(
                common,
                member,
                CommandBody::Arrive { member_id, inflow_branch_id: own.inflow_branch_id },
            )
        }
        "placement" => {
            let (own, common): (PlacementBody, Common) = bodies(body)?;
            Prepared::new(
                common,
                member,
                CommandBody::PlacePocketMember { member_id, branch_id: own.branch_id },
            )
        }
        "contact" => {
            let (own, common): (ContactBody, Common) = bodies(body)?;
            Prepared::new(
                common,
                member,
                CommandBody::SetContact { member_id, lost: own.lost, reason: own.reason },
            )
        }
        "status" => {
            let (own, common): (StatusBody, Common) = bodies(body)?;
            Prepared::new(
                common,
                member,
                CommandBody::ChangeStatus { member_id, to: own.to, reason: own.reason },
            )
        }
        _ => return Err(ApiError::not_found("write")),
    })
}

fn prepare_discovery(body: &[u8]) -> Result<Prepared, ApiError> {
    let (own, common): (PocketBody, Common) = bodies(body)?;
    let (subject, member, created) = match (own.member_id, own.name) {
        (Some(member), None) if own.new_member_id.is_none() && own.status.is_none() => {
            (DiscoverySubject::Known(member), member, None)
        }
        (None, Some(name)) => {
            let new_member_id = own.new_member_id.unwrap_or_else(|| MemberId(new_id(Utc::now())));
            let status = own.status.unwrap_or(MemberStatus::Full);
            (DiscoverySubject::Unknown { new_member_id, name, status }, new_member_id, Some(new_member_id.0))
        }
        (None, None) => return Err(ApiError::malformed("name is required when member_id is not given")),
        _ => {
            return Err(ApiError::malformed(
                "give member_id for a known member, or name (and status, new_member_id) for a person unknown to the system",
            ))
        }
    };
    let body = CommandBody::DiscoverPocketMember {
        subject,
        source: own.source,
        found_region: own.found_region,
        found_organization: own.found_organization,
    };
    let prepared = Prepared::new(common, Some(member), body);
    Ok(match created {
        Some(id) => prepared.creating("member_id", id),
        None => prepared,
    })
}

/// Submits a prepared write as `principal`, with an optional idempotency key.
pub async fn submit(
    state: &AppState,
    principal: Arc<Principal>,
    prepared: Prepared,
    idempotency: Option<flowbook_store::IdempotencyKey>,
) -> Result<WriteAnswer, ApiError> {
    let created = prepared.created;
    let (command, expected_version) = prepared.expected()?;
    let written: Written = state
        .processor
        .write(|reply| Write { principal, command, expected_version, idempotency, reply })
        .await?;
    // A replay answers with the id the first request created.
    let created = created.map(|(field, id)| {
        (field, if written.replayed { created_id(&written.events, field).unwrap_or(id) } else { id })
    });
    Ok(WriteAnswer { events: written.events, created })
}

/// A write's answer, `{"events": [...], "<id field>": id}` with the id of what it created,
/// serialised straight from the envelopes: built as a `serde_json::Value` first, every event's
/// `data` was parsed into a tree and written out again (~10 % of the HTTP workers' time under 64
/// writing clients).
pub struct WriteAnswer {
    events: Vec<flowbook_store::Envelope>,
    created: Option<(&'static str, Uuid)>,
}

impl serde::Serialize for WriteAnswer {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(1 + usize::from(self.created.is_some())))?;
        map.serialize_entry("events", &self.events)?;
        if let Some((field, id)) = &self.created {
            map.serialize_entry(field, id)?;
        }
        map.end()
    }
}

fn created_id(events: &[flowbook_store::Envelope], field: &str) -> Option<Uuid> {
    let data: Value = serde_json::from_str(events.first()?.data.get()).ok()?;
    data.get(field)?.as_str()?.parse().ok()
}

/// The `Idempotency-Key` header, scoped to the actor; the fingerprint covers op and body.
fn idempotency_key(
    header: Option<&HeaderValue>,
    actor: &str,
    op: &str,
    body: &[u8],
) -> Result<Option<flowbook_store::IdempotencyKey>, ApiError> {
    let Some(value) = header else { return Ok(None) };
    let key = value.to_str().map_err(|_| ApiError::malformed("Idempotency-Key must be text"))?;
    if key.is_empty() || key.len() > 200 {
        return Err(ApiError::malformed("Idempotency-Key must be 1 to 200 characters"));
    }
    let mut hasher = Sha256::new();
    hasher.update(op.as_bytes());
    hasher.update([0]);
    hasher.update(body);
    Ok(Some(flowbook_store::IdempotencyKey {
        key: format!("{actor}\u{1f}{key}"),
        fingerprint: hasher.finalize().into(),
    }))
}

/// The `Idempotency-Key` header, the only one a write reads: taking the whole `HeaderMap` copied
/// every header of every command.
pub struct IdempotencyHeader(Option<HeaderValue>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for IdempotencyHeader {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(IdempotencyHeader(parts.headers.get("idempotency-key").cloned()))
    }
}

/// Every `POST /v1/…` write: the op is the path after `/v1/`.
pub async fn write(
    State(state): State<AppState>,
    Actor(actor): Actor,
    uri: Uri,
    IdempotencyHeader(header): IdempotencyHeader,
    ApiBody(body): ApiBody,
) -> Result<Response, ApiError> {
    let op = uri.path().trim_start_matches("/v1/");
    let prepared = prepare(&state.live, op, &body)?;
    let idempotency = idempotency_key(header.as_ref(), &actor.name, op, &body)?;
    let answer = submit(&state, actor, prepared, idempotency).await?;
    Ok((StatusCode::CREATED, Json(answer)).into_response())
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

/// Bytes of one import body (API.md: 64 MiB) and of one line in it.
pub const IMPORT_BYTES_MAX: usize = 64 * 1024 * 1024;
pub const IMPORT_LINE_BYTES_MAX: usize = 1024 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportLine {
    op: String,
    #[serde(default)]
    body: Value,
}

/// `POST /v1/import`: NDJSON, one write a line, each on its own: a rejected line does not stop
/// the others. Lines are submitted in order without waiting for each other, so the processor
/// batches them (one fsync per batch).
pub async fn import(
    State(state): State<AppState>,
    Actor(actor): Actor,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (accepted, rejected) = import_lines(&state, &actor, &body, &mut |_| {}).await;
    Ok(Json(json!({ "accepted": accepted, "rejected": rejected })).into_response())
}

/// Runs every line of an NDJSON import, in order; returns the count accepted and the
/// rejections (lines numbered from 1). `progress` hears how many writes have been answered.
pub async fn import_lines(
    state: &AppState,
    actor: &Arc<Principal>,
    text: &[u8],
    progress: &mut (dyn FnMut(u64) + Send),
) -> (u64, Vec<Value>) {
    let mut in_flight = std::collections::VecDeque::new();
    let mut rejected: Vec<(usize, ApiError)> = Vec::new();
    let mut accepted = 0u64;
    for (index, line) in text.split(|b| *b == b'\n').enumerate() {
        let number = index + 1;
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        let queued = match import_line(line) {
            Ok((op, body)) => queue(state, actor.clone(), &op, body.as_bytes()).await,
            Err(error) => Err(error),
        };
        match queued {
            Ok(answer) => in_flight.push_back((number, answer)),
            Err(error) => rejected.push((number, error)),
        }
        // Bound what one import holds: wait for the oldest answers once many are in flight.
        while in_flight.len() >= IMPORT_IN_FLIGHT_MAX {
            let (number, answer) = in_flight.pop_front().expect("non-empty");
            settle(number, answer, &mut accepted, &mut rejected).await;
            progress(accepted + rejected.len() as u64);
        }
    }
    while let Some((number, answer)) = in_flight.pop_front() {
        settle(number, answer, &mut accepted, &mut rejected).await;
        progress(accepted + rejected.len() as u64);
    }
    rejected.sort_by_key(|(number, _)| *number);
    let rejected = rejected
        .into_iter()
        .map(|(line, error)| json!({"line": line, "error": {"code": error.code, "message": error.message}}))
        .collect();
    (accepted, rejected)
}

/// Prepares a write and queues it behind those queued before it, without waiting for its answer
/// (so that writes queued together share a batch and its one durable flush).
pub async fn queue(
    state: &AppState,
    principal: Arc<Principal>,
    op: &str,
    body: &[u8],
) -> Result<tokio::sync::oneshot::Receiver<Result<Written, ApiError>>, ApiError> {
    let (command, expected_version) = prepare(&state.live, op, body)?.expected()?;
    state
        .processor
        .queue(|reply| Write { principal, command, expected_version, idempotency: None, reply })
        .await
}

/// One import line's op and body.
fn import_line(line: &[u8]) -> Result<(String, String), ApiError> {
    if line.len() > IMPORT_LINE_BYTES_MAX {
        return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", "the line is over 1 MiB"));
    }
    let line: ImportLine = serde_json::from_slice(line)
        .map_err(|error| ApiError::malformed(format!("not an import line: {error}")))?;
    let op = line.op.trim_matches('/');
    if op == "import" || op.starts_with("sweeps") {
        return Err(ApiError::malformed(format!("{op:?} cannot be imported")));
    }
    Ok((op.to_owned(), line.body.to_string()))
}

/// Lines of one import queued and not yet answered.
const IMPORT_IN_FLIGHT_MAX: usize = 1_024;

async fn settle(
    number: usize,
    answer: tokio::sync::oneshot::Receiver<Result<Written, ApiError>>,
    accepted: &mut u64,
    rejected: &mut Vec<(usize, ApiError)>,
) {
    match answer.await {
        Ok(Ok(_)) => *accepted += 1,
        Ok(Err(error)) => rejected.push((number, error)),
        Err(_) => rejected.push((number, ApiError::internal("import", "the processor stopped"))),
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct Empty {}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct EstablishBody {
    name: String,
    kind: BranchKind,
    region: String,
    parent_id: Option<BranchId>,
    #[serde(default)]
    organizations: Vec<String>,
    branch_id: Option<BranchId>,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct ReclassifyBody {
    kind: BranchKind,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct DissolveBody {
    successor_id: Option<BranchId>,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct RegisterBody {
    name: String,
    branch_id: BranchId,
    status: MemberStatus,
    member_id: Option<MemberId>,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct TransferBody {
    to_branch_id: Option<BranchId>,
    to_external: Option<String>,
    letter_no: Option<String>,
    #[serde(default, deserialize_with = "instant::option")]
    valid_until: Option<DateTime<Utc>>,
    transfer_id: Option<TransferId>,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct CancelBody {
    reason: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct DepartureBody {
    destination_region: String,
    destination_organization: Option<String>,
    inflow_branch_id: Option<BranchId>,
    certificate_no: Option<String>,
    #[serde(default, deserialize_with = "instant::option")]
    expected_return: Option<DateTime<Utc>>,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct ArrivalBody {
    inflow_branch_id: BranchId,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct PocketBody {
    source: DiscoverySource,
    member_id: Option<MemberId>,
    name: Option<String>,
    status: Option<MemberStatus>,
    new_member_id: Option<MemberId>,
    found_region: Option<String>,
    found_organization: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct PlacementBody {
    branch_id: BranchId,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct ContactBody {
    lost: bool,
    reason: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct StatusBody {
    to: MemberStatus,
    reason: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct RetractBody {
    reason: String,
}
