//! flowbook's read models, built from the log.
//!
//! So far this crate holds the [`codec`] between the log's envelopes and the core's typed events,
//! which every read model starts from. The read models themselves (rosters, member state and
//! history, flows, as-of answers, rebuild) are issue 3's.

pub mod codec;
