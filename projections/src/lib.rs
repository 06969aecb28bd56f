//! flowbook's read models, built from the log: member state and history, branches and rosters
//! (now, or as of any effective time as known at any recorded time), transfers, flows, mobile and
//! pocket statistics, name search — and their rebuild.
//!
//! Layout: [`engine`] applies events; [`queries`] answers; [`time`] holds the two-times filter;
//! [`flags`] the advisory flags; [`live`] keeps the projections current against a store;
//! [`codec`] translates between envelopes and typed events. Deliberately absent: HTTP.

pub mod codec;
mod daily;
mod dense;
pub mod engine;
pub mod flags;
pub mod live;
pub mod queries;
pub mod time;

pub use engine::{Projections, Relation, TransferRow, TransferState};
pub use live::{rebuild, HistoryEntry, Live, LiveError};
pub use queries::*;
pub use time::At;
