//! What a commit's parts cost on their own, measured with the log's own code and bytes, so that a
//! benchmark can say how much of the log's time is sled's — which nothing of ours can take away —
//! and how much is ours:
//!
//! - **sled alone**: a commit's sealed chunks inserted into a fresh tree, its commit mark, one
//!   flush and one `fdatasync` — what the sealer and the syncer ask of sled, on one thread, with
//!   nothing before it (no rendering, checks, stream heads, hashing, compression or hand-overs);
//! - **the log's CPU before sled**, on one thread: rendering the events (the appending thread's
//!   part), stamping and chaining them (the writer's, without its checks), looking up their
//!   streams' heads in a map of every stream of the events given (the writer's, prefetched as it
//!   does and, for comparison, not) and sealing the chunks (the sealer's LZ4 and framing).
//!
//! Used by `flowbook bench`; nothing here touches a store.

use std::path::Path;
use std::time::Instant;

use chrono::Utc;

use crate::heads::{self, Head, HeadMap, LOOKAHEAD_HEADS};
use crate::keys;
use crate::record::{ChunkWriter, NewEvent, RawChunk, Rendered, Sealing, Stamp, GENESIS_HASH};
use crate::store::{open_waiting_for_lock, sled_config};
use crate::Result;

/// Events sealed ahead for the sled run, at most (~30 MB sealed): the run cycles through them
/// under new keys, so memory stays bounded whatever the caller passes.
pub const PARTS_EVENTS_MAX: usize = 100_000;

/// A commit's parts, each measured alone; times are per commit of the requested size.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CommitParts {
    /// sled alone: events a second in commits of the requested size.
    pub sled_events_per_s: f64,
    /// sled alone: milliseconds a commit (inserts, mark, flush, `fdatasync`), and of them the
    /// inserts', the flush's (sled writing its buffers and waiting for them) and `fdatasync`'s.
    pub sled_commit_ms: f64,
    pub sled_insert_ms: f64,
    pub sled_flush_ms: f64,
    pub sled_fdatasync_ms: f64,
    pub render_ms: f64,
    /// Stamping and chaining (SHA-256) a commit's events into chunks.
    pub stamp_ms: f64,
    /// Looking up a commit's stream heads as the writer does (keys, prefetched lookups) in a map
    /// of `streams` streams, and the same lookups without prefetching.
    pub heads_ms: f64,
    pub heads_unprefetched_ms: f64,
    pub streams: usize,
    /// Compressing and framing a commit's chunks.
    pub seal_ms: f64,
    /// Stamped bytes per event before sealing, and sealed (as sled is given them).
    pub raw_bytes_per_event: f64,
    pub sealed_bytes_per_event: f64,
}

/// Measures [`CommitParts`] for `events` (the first [`PARTS_EVENTS_MAX`]) in commits of
/// `commit_events`, running sled for `seconds` in a fresh directory `dir` (created, then removed).
/// The stream heads are looked up in a map of `streams` (say, every stream of the log the events
/// come from; theirs are added).
pub fn measure_commit_parts<S: AsRef<str>>(
    dir: &Path,
    events: &[NewEvent],
    streams: impl IntoIterator<Item = S>,
    commit_events: usize,
    seconds: f64,
    cache_bytes: u64,
) -> Result<CommitParts> {
    let events = &events[..events.len().min(PARTS_EVENTS_MAX)];
    let commit_events = commit_events.max(1);
    let mut parts = CommitParts::default();
    time_head_lookups(streams, events, commit_events, &mut parts);
    let (commits, Bytes { raw, sealed }) = seal_commits(events, commit_events, &mut parts);
    let commit_count = commits.len().max(1) as f64;
    parts.render_ms /= commit_count;
    parts.stamp_ms /= commit_count;
    parts.seal_ms /= commit_count;
    parts.raw_bytes_per_event = raw as f64 / events.len().max(1) as f64;
    parts.sealed_bytes_per_event = sealed as f64 / events.len().max(1) as f64;
    if commits.is_empty() {
        return Ok(parts);
    }
    sled_alone(dir, &commits, seconds, cache_bytes, &mut parts)?;
    Ok(parts)
}

/// A commit's sealed chunks: (events in the chunk, its stored value).
type SealedCommit = Vec<(u64, Vec<u8>)>;

#[derive(Default)]
struct Bytes {
    raw: usize,
    sealed: usize,
}

/// Renders, stamps and seals `events` commit by commit as the log would, adding each stage's
/// milliseconds to `parts`; answers the sealed commits and their bytes.
fn seal_commits(
    events: &[NewEvent],
    commit_events: usize,
    parts: &mut CommitParts,
) -> (Vec<SealedCommit>, Bytes) {
    let recorded_at = Utc::now();
    let (mut position, mut hash) = (1u64, GENESIS_HASH);
    let mut chunks = ChunkWriter::default();
    let mut sealing = Sealing::default();
    let mut commits = Vec::new();
    let mut bytes = Bytes::default();
    for batch in events.chunks(commit_events) {
        let started = Instant::now();
        let rendered = Rendered::of(batch);
        let rendered_at = Instant::now();
        let mut raw: Vec<RawChunk> = Vec::new();
        for index in 0..batch.len() {
            let stamp = Stamp { position, version: 1, recorded_at, previous_in_stream: 0 };
            hash = chunks.push(&rendered, index, &stamp, &hash);
            position += 1;
            if chunks.is_full() {
                raw.extend(chunks.take(Vec::new()));
            }
        }
        raw.extend(chunks.take(Vec::new()));
        let stamped_at = Instant::now();
        let commit: SealedCommit =
            raw.iter().map(|chunk| (chunk.count as u64, sealing.seal(chunk).to_vec())).collect();
        let sealed_at = Instant::now();
        parts.render_ms += (rendered_at - started).as_secs_f64() * 1e3;
        parts.stamp_ms += (stamped_at - rendered_at).as_secs_f64() * 1e3;
        parts.seal_ms += (sealed_at - stamped_at).as_secs_f64() * 1e3;
        bytes.raw += raw.iter().map(|chunk| chunk.raw.len()).sum::<usize>();
        bytes.sealed += commit.iter().map(|(_, value)| value.len()).sum::<usize>();
        commits.push(commit);
    }
    (commits, bytes)
}

/// Looks up the heads of `events`' streams commit by commit, as the writer does, in a map of
/// `streams` and theirs, every other commit prefetched (so that neither kind finds the lines the
/// other just loaded); sets the milliseconds per commit of each kind in `parts`.
fn time_head_lookups<S: AsRef<str>>(
    streams: impl IntoIterator<Item = S>,
    events: &[NewEvent],
    commit_events: usize,
    parts: &mut CommitParts,
) {
    let mut published = HeadMap::default();
    let mut position = 0;
    let mut publish = |stream: &str| {
        position += 1;
        let key = published.numbering_key(stream);
        published.set_key(&key, Head { version: 1, position });
    };
    streams.into_iter().for_each(|stream| publish(stream.as_ref()));
    events.iter().for_each(|event| publish(&event.stream));
    parts.streams = published.len();
    let mut found = 0u64;
    // (milliseconds, commits) of the prefetched kind and the other.
    let mut kinds = [(0.0f64, 0usize); 2];
    for (index, batch) in events.chunks(commit_events).enumerate() {
        let started = Instant::now();
        let keys: Vec<_> =
            batch.iter().map(|event| published.key(&event.stream).expect("every prefix numbered")).collect();
        let lookahead = if index % 2 == 0 { LOOKAHEAD_HEADS } else { 0 };
        heads::visit_prefetched(&published, &keys, lookahead, |_, key| {
            found += published.get_key(key).map_or(0, |head| head.version);
        });
        let kind = &mut kinds[index % 2];
        kind.0 += started.elapsed().as_secs_f64() * 1e3;
        kind.1 += 1;
    }
    std::hint::black_box(found);
    let per_commit = |(milliseconds, commits): (f64, usize)| milliseconds / commits.max(1) as f64;
    parts.heads_ms = per_commit(kinds[0]);
    parts.heads_unprefetched_ms = per_commit(kinds[1]);
}

/// sled given `commits` over and over (under ever higher positions) for `seconds`: each commit's
/// chunks, its mark, a flush and an `fdatasync` of sled's file — the syncer's durability step.
/// Sets the `sled_` figures of `parts`.
fn sled_alone(
    dir: &Path,
    commits: &[SealedCommit],
    seconds: f64,
    cache_bytes: u64,
    parts: &mut CommitParts,
) -> Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    let db = open_waiting_for_lock(&sled_config(dir, cache_bytes))?;
    let tree = db.open_tree("log")?;
    let log_file = std::fs::File::open(dir.join("db"))?;
    let (mut next_position, mut committed) = (1u64, 0u64);
    let [mut inserting, mut flushing, mut syncing] = [0.0f64; 3];
    let started = Instant::now();
    'run: loop {
        for commit in commits {
            let began = Instant::now();
            for (count, value) in commit {
                tree.insert(keys::event_key(next_position), value.as_slice())?;
                next_position += count;
            }
            tree.insert(keys::COMMIT_MARK, &(next_position - 1).to_be_bytes())?;
            let inserted = Instant::now();
            db.flush()?;
            let flushed = Instant::now();
            log_file.sync_data()?;
            inserting += (inserted - began).as_secs_f64();
            flushing += (flushed - inserted).as_secs_f64();
            syncing += flushed.elapsed().as_secs_f64();
            committed += 1;
            if started.elapsed().as_secs_f64() >= seconds {
                break 'run;
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    drop((tree, db));
    std::fs::remove_dir_all(dir)?;
    let per_commit_ms = |seconds: f64| seconds * 1e3 / committed.max(1) as f64;
    parts.sled_events_per_s = (next_position - 1) as f64 / elapsed;
    parts.sled_commit_ms = per_commit_ms(elapsed);
    parts.sled_insert_ms = per_commit_ms(inserting);
    parts.sled_flush_ms = per_commit_ms(flushing);
    parts.sled_fdatasync_ms = per_commit_ms(syncing);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_event(stream: &str, n: u64) -> NewEvent {
        let data =
            format!(r#"{{"member_id":"{stream}","letter_no":"L{n:08}","from":"branch/1","to":"branch/2"}}"#);
        NewEvent {
            event_id: uuid::Uuid::from_u64_pair(1, n),
            stream: stream.to_owned(),
            event_type: "transfer_initiated".into(),
            effective_at: Utc::now(),
            actor: "bench".into(),
            data: serde_json::value::RawValue::from_string(data).unwrap(),
        }
    }

    #[test]
    fn every_part_is_measured_and_the_directory_is_removed() {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path().join("parts");
        let events: Vec<NewEvent> = (0..2_500).map(|n| new_event(&format!("member/{}", n % 40), n)).collect();
        let more = (40..90).map(|n| format!("member/{n}"));
        let parts = measure_commit_parts(&dir, &events, more, 1_000, 0.2, 8 << 20).unwrap();
        assert!(parts.sled_events_per_s > 0.0, "{parts:?}");
        let steps = parts.sled_insert_ms + parts.sled_flush_ms + parts.sled_fdatasync_ms;
        assert!(steps > 0.0 && steps <= parts.sled_commit_ms, "the steps are within a commit: {parts:?}");
        assert!(parts.render_ms > 0.0 && parts.stamp_ms > 0.0 && parts.seal_ms > 0.0, "{parts:?}");
        assert!(parts.heads_ms > 0.0 && parts.heads_unprefetched_ms > 0.0, "{parts:?}");
        assert_eq!(parts.streams, 90, "the heads map holds the streams given and the events'");
        // Sealed chunks are compressed: repetitive JSON takes far fewer bytes than it has.
        assert!(parts.sealed_bytes_per_event < parts.raw_bytes_per_event / 2.0, "{parts:?}");
        assert!(!dir.exists(), "the sled run's directory is removed");
    }

    #[test]
    fn sealed_commits_hold_every_event_in_order() {
        let events: Vec<NewEvent> = (0..1_234).map(|n| new_event("member/a", n)).collect();
        let (commits, _) = seal_commits(&events, 500, &mut CommitParts::default());
        assert_eq!(commits.len(), 3);
        let mut first = 1;
        for (count, value) in commits.iter().flatten() {
            let chunk = crate::record::Chunk::decode(first, value).unwrap();
            assert_eq!(chunk.last_position(), first + count - 1);
            first += count;
        }
        assert_eq!(first, 1_235);
    }
}
