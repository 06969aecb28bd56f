//! Typed ids: a `MemberId` is not a `BranchId`. All are UUIDs; the server generates v7 ids (time
//! ordered, so new records cluster in indexes) and a client may supply its own.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! id_type {
    ($name:ident, $what:literal) => {
        #[doc = concat!("The id of a ", $what, ".")]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A v7 id for the given instant (time is passed in: the core reads no clock).
            pub fn new_v7(at: chrono::DateTime<chrono::Utc>, random: [u8; 10]) -> Self {
                let millis = u64::try_from(at.timestamp_millis()).unwrap_or(0);
                $name(uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = uuid::Error;
            fn from_str(text: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(text).map($name)
            }
        }
    };
}

id_type!(MemberId, "member");
id_type!(BranchId, "branch");
id_type!(TransferId, "transfer (one introduction letter)");

/// The stream an event belongs to: `member/<id>` or `branch/<id>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamId {
    Member(MemberId),
    Branch(BranchId),
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamId::Member(id) => write!(f, "member/{id}"),
            StreamId::Branch(id) => write!(f, "branch/{id}"),
        }
    }
}

impl std::str::FromStr for StreamId {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || format!("not a stream name: {text}");
        let (kind, id) = text.split_once('/').ok_or_else(bad)?;
        let id = Uuid::parse_str(id).map_err(|_| bad())?;
        match kind {
            "member" => Ok(StreamId::Member(MemberId(id))),
            "branch" => Ok(StreamId::Branch(BranchId(id))),
            _ => Err(bad()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names_round_trip() {
        let member = StreamId::Member(MemberId(Uuid::from_u128(1)));
        assert_eq!(member.to_string(), "member/00000000-0000-0000-0000-000000000001");
        assert_eq!(member.to_string().parse::<StreamId>(), Ok(member));
        assert!("person/00000000-0000-0000-0000-000000000001".parse::<StreamId>().is_err());
        assert!("member/x".parse::<StreamId>().is_err());
    }

    #[test]
    fn v7_ids_carry_their_time() {
        let at = chrono::DateTime::from_timestamp(1_790_000_000, 0).unwrap();
        let id = MemberId::new_v7(at, [9; 10]);
        assert_eq!(id.0.get_version_num(), 7);
        let (seconds, _) = id.0.get_timestamp().unwrap().to_unix();
        assert_eq!(seconds, 1_790_000_000);
    }
}
