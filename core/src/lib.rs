//! flowbook's domain: typed ids, the events of API.md, a command for every write, the rules
//! ([`decide`]) and the fold ([`World::apply`], `evolve`).
//!
//! Pure by design: no I/O, no async, no clock reads — time and actor are arguments — so every
//! rule is tested as "given these events, when this command, then these events or this error".
//! What this crate deliberately does not know: how events are stored, how they are served, who
//! may send which command (access is the server's).

pub mod command;
pub mod config;
pub mod decide;
pub mod error;
pub mod event;
pub mod grow;
pub mod ids;
pub mod sorted;
pub mod state;

pub use command::{Command, CommandBody, DiscoverySubject, RetractTarget, TransferTarget};
pub use config::RulesConfig;
pub use decide::{decide, expire_overdue_letters, Context, LOCAL_ACTOR, SYSTEM_ACTOR};
pub use error::{Entity, Rejection, RuleError};
pub use event::{BranchKind, DiscoverySource, EventData, MemberStatus, NewEvent, RecordedEvent};
pub use ids::{BranchId, MemberId, StreamId, TransferId};
pub use state::{BranchState, MemberNumbers, MemberState, MemberStream, World};
