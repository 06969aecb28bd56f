//! flowbook's read models (rosters, member state and history, flows, as-of answers), built from
//! the log. Not built yet: issue 3 delivers them. This crate exists so the workspace has its final
//! shape from the first commit.
