//! Where a commit's time goes, stage by stage: opt-in timing of the write path for one appender
//! waiting on each commit (the bench's waiting phase, [`crate::Store::time_commit_stages`]).
//!
//! Each thread marks the moment its stage ends (time since the clock was made, in nanoseconds);
//! when the next commit is submitted, the last one's stages are added up, each from the mark
//! before it. Commits that overlap would mix their marks, so the figures mean something only with
//! one commit in flight at a time. Off, a mark is one relaxed load.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

/// The moments marked, in the order a commit passes them.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Mark {
    /// The caller submitted it.
    Submitted,
    /// The writer took it off the queue.
    Taken,
    /// The writer handed its end to the sealer: checked, stamped, chained, chunked.
    Staged,
    /// The sealer inserted its last chunk and its commit mark.
    Applied,
    /// The syncer took it.
    Syncing,
    /// sled's flush returned.
    Flushed,
    /// `fdatasync` returned.
    Synced,
    /// Its stream heads and the committed head are published; its callers are answered next.
    Published,
    /// The caller has the answer.
    Answered,
    /// The caller has its envelopes.
    Enveloped,
}

/// One per [`Mark`], by its order.
const MARKS: usize = Mark::Enveloped as usize + 1;

/// What each stage is, ending at the mark of the same index (the first: from the last commit's
/// envelopes to this one's submission, the caller's own time between commits).
pub const COMMIT_STAGES: [&str; MARKS] = [
    "between commits (the caller)",
    "queued until the writer takes it",
    "the writer: check, stamp, chain, chunk",
    "the sealer's last inserts and mark",
    "handed to the syncer",
    "sled's flush",
    "fdatasync",
    "publishing the heads",
    "the answer reaching the caller",
    "the caller's envelopes",
];

/// The average time of each of [`COMMIT_STAGES`] over the commits timed.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CommitStages {
    pub commits: u64,
    /// Microseconds a commit, stage by stage, in the order of [`COMMIT_STAGES`].
    pub micros: Vec<f64>,
}

impl CommitStages {
    /// Microseconds a commit, all stages together.
    pub fn total_micros(&self) -> f64 {
        self.micros.iter().sum()
    }
}

pub(crate) struct StageClock {
    on: AtomicBool,
    origin: Instant,
    /// The last commit's marks (0: not marked).
    marks: [AtomicU64; MARKS],
    /// Nanoseconds of each stage, summed over the commits closed.
    sums: [AtomicU64; MARKS],
    commits: AtomicU64,
}

impl StageClock {
    pub fn new() -> StageClock {
        StageClock {
            on: AtomicBool::new(false),
            origin: Instant::now(),
            marks: Default::default(),
            sums: Default::default(),
            commits: AtomicU64::new(0),
        }
    }

    pub fn mark(&self, mark: Mark) {
        if !self.on.load(Ordering::Relaxed) {
            return;
        }
        // From 1, so that 0 means "not marked".
        let now = self.origin.elapsed().as_nanos() as u64 + 1;
        if mark == Mark::Submitted {
            self.close_last(now);
        }
        self.marks[mark as usize].store(now, Ordering::Relaxed);
    }

    /// Clears what was timed and starts timing.
    pub fn start(&self) {
        for (mark, sum) in self.marks.iter().zip(&self.sums) {
            mark.store(0, Ordering::Relaxed);
            sum.store(0, Ordering::Relaxed);
        }
        self.commits.store(0, Ordering::Relaxed);
        self.on.store(true, Ordering::Relaxed);
    }

    /// Stops timing and answers the averages over the commits closed (each is closed when the
    /// next is submitted, so the last one timed is not among them).
    pub fn stop(&self) -> CommitStages {
        self.on.store(false, Ordering::Relaxed);
        let commits = self.commits.load(Ordering::Relaxed);
        let micros = self
            .sums
            .iter()
            .map(|sum| sum.load(Ordering::Relaxed) as f64 / commits.max(1) as f64 / 1_000.0)
            .collect();
        CommitStages { commits, micros }
    }

    /// Adds up the last commit's stages, and the caller's time from its envelopes to the next
    /// submission, if it went the whole way while the clock ran.
    fn close_last(&self, next_submitted: u64) {
        let marks: [u64; MARKS] = std::array::from_fn(|stage| self.marks[stage].load(Ordering::Relaxed));
        if marks.contains(&0) {
            return; // the clock started during it, or it was refused before the writer took it
        }
        for stage in 1..MARKS {
            let took = marks[stage].saturating_sub(marks[stage - 1]);
            self.sums[stage].fetch_add(took, Ordering::Relaxed);
        }
        let between = next_submitted.saturating_sub(marks[MARKS - 1]);
        self.sums[0].fetch_add(between, Ordering::Relaxed);
        self.commits.fetch_add(1, Ordering::Relaxed);
        for mark in &self.marks {
            mark.store(0, Ordering::Relaxed);
        }
    }
}
