//! The projections kept current against a live store: rebuild at open, catch up after appends
//! (read-your-writes), and member history straight from the log.
//!
//! Consistency: the projections and their checkpoint (the last position applied) live in one
//! structure behind one lock, so a reader sees a state that is exactly "the log up to the
//! checkpoint" — never an event applied twice or skipped. They are held in memory and rebuilt
//! from the log when the process starts, so a crash cannot leave them out of step with it.

use std::sync::{Arc, RwLock, RwLockReadGuard};

use chrono::{DateTime, Utc};
use flowbook_core::{EventData, MemberId, MemberNumbers, RecordedEvent, RulesConfig, StreamId};
use flowbook_store::{Envelope, Store, StoreError};

use crate::codec::{self, DecodeError};
use crate::engine::Projections;
use crate::time::At;

/// Events read from the log per page while rebuilding or catching up.
pub const APPLY_PAGE_EVENTS: usize = 10_000;

/// Events of one member stream read for a history or a refold.
pub const MEMBER_STREAM_EVENTS_MAX: usize = flowbook_store::limits::READ_PAGE_EVENTS_MAX;

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

/// One entry of a member's history: the stored envelope, and whether a later retraction (known
/// at the time asked about) undid it.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    pub envelope: Envelope,
    pub retracted: bool,
}

/// Projections over a store.
pub struct Live {
    store: Arc<Store>,
    projections: RwLock<Projections>,
}

impl Live {
    /// Builds every projection from the log; `progress(applied, total)` is called after each page.
    pub fn open(
        store: Arc<Store>,
        config: RulesConfig,
        progress: impl FnMut(u64, u64),
    ) -> Result<Live, LiveError> {
        let projections = rebuild(&store, config, progress)?;
        Ok(Live { store, projections: RwLock::new(projections) })
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Applies everything the log holds beyond the checkpoint. Call after an append, before
    /// answering, and every acknowledged write is visible to the next query.
    pub fn catch_up(&self) -> Result<u64, LiveError> {
        let mut projections = self.projections.write().expect("projections lock");
        self.apply_log(&mut projections)
    }

    fn apply_log(&self, projections: &mut Projections) -> Result<u64, LiveError> {
        let head = self.store.head();
        if head.saturating_sub(projections.position()) <= INLINE_CATCH_UP_EVENTS_MAX {
            apply_inline(&self.store, projections, head)?;
        } else {
            apply_until(&self.store, projections, head, &mut |_, _| {})?;
        }
        Ok(projections.position())
    }

    /// [`Live::catch_up`] given the events the log holds after the checkpoint, typed, by the one
    /// who wrote them: the server's processor (the log's only writer) decided them, and has seen
    /// them made durable, with `recorded_at` as the log stamped it. Applied as they are instead
    /// of read back and parsed — that was ~7 % of a 64-client HTTP write's instructions
    /// (callgrind, BENCHMARKS.md) on the thread every write waits for. Unless they are exactly
    /// the log's next events (positions from the checkpoint to the head, in order), the log is
    /// read as [`Live::catch_up`] does.
    pub fn catch_up_with(&self, events: &[RecordedEvent]) -> Result<u64, LiveError> {
        let mut projections = self.projections.write().expect("projections lock");
        let head = self.store.head();
        let next = projections.position() + 1;
        let exactly_the_next = events.len() as u64 == head.saturating_sub(projections.position())
            && events.iter().zip(next..).all(|(event, position)| event.position == position);
        if !exactly_the_next {
            return self.apply_log(&mut projections);
        }
        for event in events {
            apply_one(&self.store, &mut projections, event, None)?;
        }
        Ok(projections.position())
    }

    /// The projections, for reading. Hold the guard briefly: appliers wait for it.
    pub fn read(&self) -> RwLockReadGuard<'_, Projections> {
        self.projections.read().expect("projections lock")
    }

    /// A member's events in stream order as known at `known_at`, retracted ones marked.
    pub fn member_history(
        &self,
        member: MemberId,
        known_at: Option<DateTime<Utc>>,
    ) -> Result<Vec<HistoryEntry>, LiveError> {
        let at = At::new(None, known_at);
        let stream = StreamId::Member(member).to_string();
        let events: Vec<Envelope> = self
            .store
            .read_stream(&stream, 1, MEMBER_STREAM_EVENTS_MAX)?
            .into_iter()
            .filter(|e| at.known(e.recorded_at))
            .collect();
        let mut retracted = std::collections::HashSet::new();
        // Only retractions are decoded: the rest are served as stored.
        for envelope in events.iter().filter(|e| e.event_type == "event_retracted") {
            if let EventData::EventRetracted { position, .. } = codec::recorded(envelope)?.data {
                retracted.insert(position);
            }
        }
        Ok(events
            .into_iter()
            .map(|envelope| HistoryEntry { retracted: retracted.contains(&envelope.position), envelope })
            .collect())
    }

    /// A member's typed stream (for as-of views).
    pub fn member_stream(&self, member: MemberId) -> Result<Vec<RecordedEvent>, LiveError> {
        member_events(&self.store, member, u64::MAX)
    }
}

/// Builds every projection from position 1.
pub fn rebuild(
    store: &Store,
    config: RulesConfig,
    mut progress: impl FnMut(u64, u64),
) -> Result<Projections, LiveError> {
    let mut projections = Projections::new(config);
    apply_until(store, &mut projections, store.head(), &mut progress)?;
    Ok(projections)
}

/// Batches of decoded events in flight between the decoding thread and the applying one.
const DECODED_BATCHES_IN_FLIGHT: usize = 4;

/// Catch-ups of at most this many events are decoded and applied on the calling thread: the
/// server catches up after every batch of writes (a few dozen events), and starting a decoding
/// thread for each cost more than decoding them (`apply_inline`).
const INLINE_CATCH_UP_EVENTS_MAX: u64 = 4_096;

/// Events whose members' state is read into the cache together, before they are applied
/// (`Projections::touch_event`): enough for the misses to overlap, few enough that what they
/// bring in is still cached when its event is applied.
const TOUCH_AHEAD_EVENTS: usize = 32;

/// An event as the decoding thread hands it over: with its member stream's number when the
/// decoder numbers streams (see `apply_until`).
struct Decoded {
    event: RecordedEvent,
    member_number: Option<u32>,
}

/// Applies the log after the checkpoint up to `until`. Decoding (reading chunks, parsing JSON)
/// and applying cost about the same, so a second thread decodes the next page while this one
/// applies the current. The applier is the one that limits a rebuild, so work moves to the
/// decoder where it can: applied pages go back to it to be freed and refilled (freeing ten
/// million events' strings), and in a rebuild from the start it numbers member streams as the
/// write model does (in order of first event), so the applier need not look each event's member
/// up among a million ids.
fn apply_until(
    store: &Store,
    projections: &mut Projections,
    until: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(), LiveError> {
    if projections.position() >= until {
        return Ok(());
    }
    let start = projections.position();
    // From nothing, every member's home is set by this very pass: the home index is made once
    // at the end (`World::defer_home_index`), on every way out, failures included, so that the
    // projections never keep a deferred index.
    let from_nothing = start == 0 && projections.world().next_member_number() == 0;
    if from_nothing {
        projections.defer_home_index();
    }
    let applied = std::thread::scope(|scope| {
        let (sender, receiver) =
            std::sync::mpsc::sync_channel::<Result<Vec<Decoded>, LiveError>>(DECODED_BATCHES_IN_FLIGHT);
        let (recycle, recycled) = std::sync::mpsc::sync_channel::<Vec<Decoded>>(DECODED_BATCHES_IN_FLIGHT);
        // Numbering from scratch matches the write model's only when it is empty too; the
        // numbers then become the write model's when every page is applied.
        let mut numbers: Option<MemberNumbers> = from_nothing.then(Default::default);
        let decoder = scope.spawn(move || {
            let mut after = start;
            while after < until {
                let mut batch = match recycled.try_recv() {
                    Ok(mut spent) => {
                        spent.clear();
                        spent
                    }
                    Err(_) => Vec::with_capacity(APPLY_PAGE_EVENTS),
                };
                let page = APPLY_PAGE_EVENTS.min((until - after) as usize);
                let scanned = decode_after(store, after, page, |event| {
                    batch.push(Decoded { event, member_number: None })
                });
                // Numbered in a pass of their own, not between the parsing of one event and the
                // next: each number is a lookup among a million ids (a cache miss or two), and
                // a loop of nothing but lookups lets the processor have several in flight.
                if let Some(numbers) = &mut numbers {
                    for decoded in &mut batch {
                        if let StreamId::Member(member) = decoded.event.stream {
                            decoded.member_number = Some(numbers.number(member).0);
                        }
                    }
                }
                let message = match scanned {
                    Err(error) => Err(error),
                    Ok(last) if last == after => break, // the log ends here
                    Ok(last) => {
                        after = last;
                        Ok(batch)
                    }
                };
                let stop = message.is_err();
                if sender.send(message).is_err() || stop {
                    break;
                }
            }
            numbers
        });
        for batch in receiver {
            let batch = batch?;
            for group in batch.chunks(TOUCH_AHEAD_EVENTS) {
                let touched = group
                    .iter()
                    .filter_map(|decoded| Some((&decoded.event, decoded.member_number?)))
                    .fold(0, |touched, (event, number)| touched ^ projections.touch_event(event, number));
                std::hint::black_box(touched);
                for Decoded { event, member_number } in group {
                    apply_one(store, projections, event, *member_number)?;
                }
            }
            progress(projections.position(), until);
            // Full (the decoder is behind): this thread frees the page itself.
            let _ = recycle.try_send(batch);
        }
        if let Some(numbers) = decoder.join().expect("the decoding thread does not panic") {
            projections.adopt_member_numbers(numbers);
        }
        Ok(())
    });
    projections.index_homes();
    applied
}

/// [`apply_until`] for a few events: decoded and applied in turn on this thread.
fn apply_inline(store: &Store, projections: &mut Projections, until: u64) -> Result<(), LiveError> {
    if projections.position() >= until {
        return Ok(());
    }
    let after = projections.position();
    let mut decoded = Vec::with_capacity((until - after) as usize);
    decode_after(store, after, (until - after) as usize, |event| decoded.push(event))?;
    for event in &decoded {
        apply_one(store, projections, event, None)?;
    }
    Ok(())
}

/// Decodes durable records after `after`, at most `limit`, handing each to `visit`; answers the
/// last position decoded (`after` if none). The first damaged record stops it with its error.
fn decode_after(
    store: &Store,
    after: u64,
    limit: usize,
    mut visit: impl FnMut(RecordedEvent),
) -> Result<u64, LiveError> {
    let mut failure: Option<LiveError> = None;
    let scanned = store.scan(after, limit, |position, canonical| {
        match codec::recorded_from_canonical(position, canonical) {
            Ok(event) => {
                visit(event);
                Ok(())
            }
            Err(error) => {
                failure = Some(error.into());
                Err(StoreError::InvalidAppend("stop"))
            }
        }
    });
    match (failure, scanned) {
        (Some(error), _) => Err(error),
        (None, scanned) => scanned.map_err(LiveError::from),
    }
}

/// Applies one decoded event; a retraction reads its member's stream back from the log.
fn apply_one(
    store: &Store,
    projections: &mut Projections,
    event: &RecordedEvent,
    member_number: Option<u32>,
) -> Result<(), LiveError> {
    let mut failure = None;
    projections.apply_numbered(event, member_number, |member| {
        member_events(store, member, event.position).unwrap_or_else(|error| {
            failure = Some(error);
            Vec::new()
        })
    });
    failure.map_or(Ok(()), Err)
}

/// A member's events up to `until` (inclusive), typed.
fn member_events(store: &Store, member: MemberId, until: u64) -> Result<Vec<RecordedEvent>, LiveError> {
    let stream = StreamId::Member(member).to_string();
    store
        .read_stream(&stream, 1, MEMBER_STREAM_EVENTS_MAX)?
        .iter()
        .filter(|envelope| envelope.position <= until)
        .map(|envelope| codec::recorded(envelope).map_err(LiveError::from))
        .collect()
}
