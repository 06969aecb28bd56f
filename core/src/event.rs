//! The events of API.md: their `type` names and `data` fields, exactly.
//!
//! An [`EventData`] serialises adjacently tagged, `{"type": "...", "data": {...}}`, which is how
//! the envelope carries it; [`EventData::to_parts`] and [`EventData::from_parts`] split and join
//! that pair for the log, which stores `type` and `data` as separate envelope fields.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{BranchId, MemberId, StreamId, TransferId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum BranchKind {
    Branch,
    GeneralBranch,
    Committee,
    JointBranch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum MemberStatus {
    Probationary,
    Full,
    Suspended,
    Left,
    Deceased,
}

impl MemberStatus {
    /// `left` and `deceased` close the record: no further write but a retraction.
    pub fn is_final(self) -> bool {
        matches!(self, MemberStatus::Left | MemberStatus::Deceased)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DiscoverySource {
    ExpiredLetter,
    SelfDeclared,
    Survey,
}

/// The `type` and `data` of every event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case", deny_unknown_fields)]
pub enum EventData {
    BranchEstablished {
        branch_id: BranchId,
        name: String,
        kind: BranchKind,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent_id: Option<BranchId>,
        region: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        organizations: Vec<String>,
    },
    BranchReclassified {
        branch_id: BranchId,
        kind: BranchKind,
    },
    BranchDissolved {
        branch_id: BranchId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        successor_id: Option<BranchId>,
    },
    MemberRegistered {
        member_id: MemberId,
        name: String,
        branch_id: BranchId,
        status: MemberStatus,
    },
    MemberVerified {
        member_id: MemberId,
    },
    TransferInitiated {
        transfer_id: TransferId,
        member_id: MemberId,
        from_branch_id: BranchId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to_branch_id: Option<BranchId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to_external: Option<String>,
        letter_no: String,
        valid_until: DateTime<Utc>,
    },
    TransferCompleted {
        transfer_id: TransferId,
        member_id: MemberId,
        from_branch_id: BranchId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to_branch_id: Option<BranchId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to_external: Option<String>,
    },
    TransferCancelled {
        transfer_id: TransferId,
        member_id: MemberId,
        reason: String,
    },
    TransferExpired {
        transfer_id: TransferId,
        member_id: MemberId,
    },
    MemberReassigned {
        member_id: MemberId,
        from_branch_id: BranchId,
        to_branch_id: BranchId,
        reason: String,
    },
    MemberDeparted {
        member_id: MemberId,
        home_branch_id: BranchId,
        destination_region: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        destination_organization: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        inflow_branch_id: Option<BranchId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        certificate_no: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expected_return: Option<DateTime<Utc>>,
    },
    MemberArrived {
        member_id: MemberId,
        inflow_branch_id: BranchId,
    },
    MemberReturned {
        member_id: MemberId,
    },
    PocketMemberDiscovered {
        member_id: MemberId,
        source: DiscoverySource,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        found_region: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        found_organization: Option<String>,
        /// Set when the discovery creates the member (a person unknown to the system).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<MemberStatus>,
    },
    PocketMemberPlaced {
        member_id: MemberId,
        branch_id: BranchId,
    },
    ContactLost {
        member_id: MemberId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    ContactRestored {
        member_id: MemberId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    StatusChanged {
        member_id: MemberId,
        from: MemberStatus,
        to: MemberStatus,
        reason: String,
    },
    EventRetracted {
        position: u64,
        reason: String,
    },
}

impl EventData {
    /// The `type` name.
    pub fn event_type(&self) -> &'static str {
        match self {
            EventData::BranchEstablished { .. } => "branch_established",
            EventData::BranchReclassified { .. } => "branch_reclassified",
            EventData::BranchDissolved { .. } => "branch_dissolved",
            EventData::MemberRegistered { .. } => "member_registered",
            EventData::MemberVerified { .. } => "member_verified",
            EventData::TransferInitiated { .. } => "transfer_initiated",
            EventData::TransferCompleted { .. } => "transfer_completed",
            EventData::TransferCancelled { .. } => "transfer_cancelled",
            EventData::TransferExpired { .. } => "transfer_expired",
            EventData::MemberReassigned { .. } => "member_reassigned",
            EventData::MemberDeparted { .. } => "member_departed",
            EventData::MemberArrived { .. } => "member_arrived",
            EventData::MemberReturned { .. } => "member_returned",
            EventData::PocketMemberDiscovered { .. } => "pocket_member_discovered",
            EventData::PocketMemberPlaced { .. } => "pocket_member_placed",
            EventData::ContactLost { .. } => "contact_lost",
            EventData::ContactRestored { .. } => "contact_restored",
            EventData::StatusChanged { .. } => "status_changed",
            EventData::EventRetracted { .. } => "event_retracted",
        }
    }

    /// `(type, data JSON)` as the envelope carries them, `data`'s fields in declaration order.
    ///
    /// Cut out of the adjacently tagged text (`{"type":"…","data":{…}}`, every variant has
    /// fields) rather than taken from a `serde_json::Value`: the tree, its copy of `data` and the
    /// second serialisation were ~4 % of the instructions of a 64-client HTTP write (callgrind,
    /// BENCHMARKS.md). Logs written before hold `data` with its keys sorted (the `Value`'s
    /// order); JSON objects are unordered, and readers parse them either way.
    pub fn to_parts(&self) -> (&'static str, String) {
        let event_type = self.event_type();
        let mut text = serde_json::to_string(self).expect("event data always serialises");
        let head = r#"{"type":""#.len() + event_type.len() + r#"","data":"#.len();
        debug_assert!(text.starts_with(&format!(r#"{{"type":"{event_type}","data":"#)), "{text}");
        text.truncate(text.len() - 1);
        text.drain(..head);
        (event_type, text)
    }

    /// Reads an event back from its envelope's `type` and `data`.
    pub fn from_parts(event_type: &str, data: &str) -> Result<EventData, serde_json::Error> {
        // Type names are plain identifiers; anything else is not one of ours. Joining the two
        // parts as text and parsing once is the cheapest path through serde's tagged enum.
        if event_type.is_empty() || !event_type.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
            return Err(serde::de::Error::custom(format!("unknown event type {event_type:?}")));
        }
        let mut joined = String::with_capacity(event_type.len() + data.len() + 20);
        joined.push_str("{\"type\":\"");
        joined.push_str(event_type);
        joined.push_str("\",\"data\":");
        joined.push_str(data);
        joined.push('}');
        serde_json::from_str(&joined)
    }

    /// The member an event is about, for member-stream events.
    pub fn member_id(&self) -> Option<MemberId> {
        match self {
            EventData::MemberRegistered { member_id, .. }
            | EventData::MemberVerified { member_id }
            | EventData::TransferInitiated { member_id, .. }
            | EventData::TransferCompleted { member_id, .. }
            | EventData::TransferCancelled { member_id, .. }
            | EventData::TransferExpired { member_id, .. }
            | EventData::MemberReassigned { member_id, .. }
            | EventData::MemberDeparted { member_id, .. }
            | EventData::MemberArrived { member_id, .. }
            | EventData::MemberReturned { member_id }
            | EventData::PocketMemberDiscovered { member_id, .. }
            | EventData::PocketMemberPlaced { member_id, .. }
            | EventData::ContactLost { member_id, .. }
            | EventData::ContactRestored { member_id, .. }
            | EventData::StatusChanged { member_id, .. } => Some(*member_id),
            _ => None,
        }
    }
}

/// An event decided by the rules, before the log gives it a position, version, `recorded_at`
/// and hash. The caller adds the actor and the event id.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub stream: StreamId,
    pub effective_at: DateTime<Utc>,
    pub data: EventData,
}

/// An event as the log recorded it, typed.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    pub position: u64,
    pub stream: StreamId,
    pub version: u64,
    pub effective_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub actor: String,
    pub data: EventData,
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn events_serialise_with_the_api_names_and_skip_absent_options() {
        let event = EventData::TransferInitiated {
            transfer_id: TransferId(Uuid::from_u128(1)),
            member_id: MemberId(Uuid::from_u128(2)),
            from_branch_id: BranchId(Uuid::from_u128(3)),
            to_branch_id: None,
            to_external: Some("上海某公司".into()),
            letter_no: "L-1".into(),
            valid_until: DateTime::from_timestamp(1_790_000_000, 0).unwrap(),
        };
        let (event_type, data) = event.to_parts();
        assert_eq!(event_type, "transfer_initiated");
        assert!(!data.contains("to_branch_id"), "{data}");
        assert!(data.contains(r#""to_external":"上海某公司""#), "{data}");
        assert!(data.contains(r#""valid_until":"2026-09-21T14:13:20Z""#), "{data}");
        assert_eq!(EventData::from_parts(event_type, &data).unwrap(), event);
    }

    #[test]
    fn parts_are_the_data_of_the_tagged_form_for_every_kind_of_event() {
        let id = Uuid::from_u128(7);
        let at = DateTime::from_timestamp(1_790_000_000, 5_000_000).unwrap();
        let events = [
            EventData::BranchDissolved { branch_id: BranchId(id), successor_id: None },
            EventData::MemberVerified { member_id: MemberId(id) },
            EventData::ContactLost { member_id: MemberId(id), reason: Some("走了 \"远\"".into()) },
            EventData::MemberDeparted {
                member_id: MemberId(id),
                home_branch_id: BranchId(id),
                destination_region: "深圳".into(),
                destination_organization: None,
                inflow_branch_id: Some(BranchId(id)),
                certificate_no: None,
                expected_return: Some(at),
            },
            EventData::EventRetracted { position: 12, reason: "typo".into() },
        ];
        for event in events {
            let (event_type, data) = event.to_parts();
            let tagged = serde_json::to_value(&event).unwrap();
            assert_eq!(tagged["type"], event_type);
            let data: serde_json::Value = serde_json::from_str(&data).unwrap();
            assert_eq!(data, tagged["data"], "{event_type}");
            let (_, text) = event.to_parts();
            assert_eq!(EventData::from_parts(event_type, &text).unwrap(), event);
        }
    }

    #[test]
    fn unknown_types_and_fields_do_not_parse() {
        assert!(EventData::from_parts("member_teleported", "{}").is_err());
        let id = Uuid::from_u128(2);
        assert!(
            EventData::from_parts("member_returned", &format!(r#"{{"member_id":"{id}","x":1}}"#)).is_err()
        );
        assert!(EventData::from_parts("member_returned", &format!(r#"{{"member_id":"{id}"}}"#)).is_ok());
    }
}
