//! The heads of streams named `<prefix>/<uuid>` (every stream flowbook writes), in a table of our
//! own rather than a `HashMap`.
//!
//! Why: finding a head in a map of hundreds of thousands of streams is a cache miss whatever the
//! map, and hashbrown's lookup is two in series (its control bytes, then the entry they point
//! to). Here a slot holds the whole entry in 32 bytes and a lookup reads slots from the key's home
//! on, so it is one miss, and the writer can start that miss early: [`PackedHeads::prefetch`]
//! for the events after the one it is stamping. The lookups were ~10 % of a batched append's CPU
//! on the writer and the syncer, nearly all of it waiting for those misses (BENCHMARKS.md,
//! seventeenth session).
//!
//! Robin Hood linear probing: an entry is never further from its home than one inserted past it,
//! so a lookup for a name not in the table stops as soon as it meets an entry closer to its home
//! than the probe is. Full at 7/8, like hashbrown; no removals (a stream's head is never
//! forgotten). Memory: 32 bytes a slot, so 37–73 bytes a stream (hashbrown's was 41 bytes a
//! bucket, 47–94 a stream).

use std::hash::BuildHasher;

use super::{Head, PackedName};

/// A version is kept in the 56 bits below the prefix's number. It is at most its event's
/// position, and a log of 2^56 events would be exabytes on disk; `load` and the snapshot reader
/// refuse anything else before it gets here.
const VERSION_BITS: u32 = 56;
pub(crate) const VERSION_MAX: u64 = (1 << VERSION_BITS) - 1;

/// Slots of the first allocation.
const SLOTS_MIN: usize = 16;

/// Events are at most 7/8 of the slots: probes stay short, and an empty slot always ends one.
const LOAD_NUMERATOR: usize = 7;
const LOAD_DENOMINATOR: usize = 8;

#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
#[repr(C, align(32))]
struct Slot {
    id: [u8; 16],
    /// The prefix's number in the top byte, the version below it; 0 in an empty slot (a kept
    /// version is at least 1).
    prefix_and_version: u64,
    position: u64,
}

impl Slot {
    fn new(name: &PackedName, head: Head) -> Slot {
        assert!(
            (1..=VERSION_MAX).contains(&head.version),
            "a kept version is 1..=2^56-1 (checked where heads are read)"
        );
        Slot {
            id: name.id,
            prefix_and_version: u64::from(name.prefix) << VERSION_BITS | head.version,
            position: head.position,
        }
    }

    fn is_empty(&self) -> bool {
        self.prefix_and_version == 0
    }

    fn name(&self) -> PackedName {
        PackedName { prefix: (self.prefix_and_version >> VERSION_BITS) as u8, id: self.id }
    }

    fn holds(&self, name: &PackedName) -> bool {
        !self.is_empty()
            && self.id == name.id
            && (self.prefix_and_version >> VERSION_BITS) as u8 == name.prefix
    }

    fn head(&self) -> Head {
        Head { version: self.prefix_and_version & VERSION_MAX, position: self.position }
    }
}

pub(crate) struct PackedHeads {
    /// A power of two of them, or none before the first insert.
    slots: Vec<Slot>,
    len: usize,
    hasher: foldhash::fast::RandomState,
}

impl Default for PackedHeads {
    fn default() -> Self {
        PackedHeads::with_capacity(0)
    }
}

impl PackedHeads {
    pub fn with_capacity(streams: usize) -> PackedHeads {
        let slots = if streams == 0 { Vec::new() } else { vec![Slot::default(); slots_for(streams)] };
        PackedHeads { slots, len: 0, hasher: foldhash::fast::RandomState::default() }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn get(&self, name: &PackedName) -> Option<Head> {
        self.find(name).map(|index| self.slots[index].head())
    }

    /// Sets a stream's head.
    ///
    /// # Panics
    /// If `head.version` is 0 or above [`VERSION_MAX`] (see there).
    pub fn insert(&mut self, name: &PackedName, head: Head) {
        let slot = Slot::new(name, head);
        if (self.len + 1) * LOAD_DENOMINATOR > self.slots.len() * LOAD_NUMERATOR {
            // At the load factor: grow only for a name not yet kept (rare: the table doubles).
            if let Some(index) = self.find(name) {
                self.slots[index] = slot;
                return;
            }
            self.grow();
        }
        // One probe that updates the name's slot, or stops where Robin Hood would place it: the
        // syncer sets every head of a commit, most of them new streams, and a find then a place
        // walked (and hashed) the same slots twice.
        let mask = self.slots.len() - 1;
        let mut index = self.home(name);
        for probed in 0..self.slots.len() {
            let resident = &self.slots[index];
            if resident.is_empty() {
                self.slots[index] = slot;
                self.len += 1;
                return;
            }
            if resident.holds(name) {
                self.slots[index] = slot;
                return;
            }
            let resident_distance = self.distance(index);
            if resident_distance < probed {
                // Not in the table (it would sit before a richer entry): take this slot and carry
                // the resident on.
                let displaced = std::mem::replace(&mut self.slots[index], slot);
                self.carry(displaced, (index + 1) & mask, resident_distance + 1);
                self.len += 1;
                return;
            }
            index = (index + 1) & mask;
        }
        unreachable!("a table below its load factor has an empty slot");
    }

    /// Starts loading the cache line where `name`'s lookup begins, so that a lookup a few hundred
    /// nanoseconds later finds it there. Only a hint: it changes nothing and cannot fault.
    pub fn prefetch(&self, name: &PackedName) {
        if self.slots.is_empty() {
            return;
        }
        let slot: *const Slot = &self.slots[self.home(name)];
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch reads nothing into the program and cannot fault (on any address);
        // SSE, which it needs, is part of every x86_64.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(slot.cast());
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = slot;
    }

    pub fn iter(&self) -> impl Iterator<Item = (PackedName, Head)> + '_ {
        self.slots.iter().filter(|slot| !slot.is_empty()).map(|slot| (slot.name(), slot.head()))
    }

    fn home(&self, name: &PackedName) -> usize {
        self.hasher.hash_one(name) as usize & (self.slots.len() - 1)
    }

    /// How far the entry in slot `index` is from its home.
    fn distance(&self, index: usize) -> usize {
        let home = self.home(&self.slots[index].name());
        index.wrapping_sub(home) & (self.slots.len() - 1)
    }

    fn find(&self, name: &PackedName) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut index = self.home(name);
        // Bounded by the table (an empty slot ends the probe long before).
        for probed in 0..self.slots.len() {
            let slot = &self.slots[index];
            if slot.is_empty() {
                return None;
            }
            if slot.holds(name) {
                return Some(index);
            }
            if self.distance(index) < probed {
                return None;
            }
            index = (index + 1) & mask;
        }
        None
    }

    /// Puts a slot not yet in the table where Robin Hood probing says, moving richer entries on.
    /// There is room (the load factor is kept).
    fn place(&mut self, carried: Slot) {
        let home = self.home(&carried.name());
        self.carry(carried, home, 0);
    }

    /// Places `carried`, whose probe has reached `index` at `carried_distance` from its home,
    /// moving richer entries on.
    fn carry(&mut self, mut carried: Slot, mut index: usize, mut carried_distance: usize) {
        let mask = self.slots.len() - 1;
        for _ in 0..self.slots.len() {
            if self.slots[index].is_empty() {
                self.slots[index] = carried;
                return;
            }
            let resident_distance = self.distance(index);
            if resident_distance < carried_distance {
                std::mem::swap(&mut self.slots[index], &mut carried);
                carried_distance = resident_distance;
            }
            index = (index + 1) & mask;
            carried_distance += 1;
        }
        unreachable!("a table below its load factor has an empty slot");
    }

    fn grow(&mut self) {
        let size = (self.slots.len() * 2).max(SLOTS_MIN);
        let old = std::mem::replace(&mut self.slots, vec![Slot::default(); size]);
        for slot in old.into_iter().filter(|slot| !slot.is_empty()) {
            self.place(slot);
        }
    }
}

/// Slots for `streams` entries within the load factor.
fn slots_for(streams: usize) -> usize {
    (streams.saturating_mul(LOAD_DENOMINATOR) / LOAD_NUMERATOR + 1).next_power_of_two().max(SLOTS_MIN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn name(prefix: u8, n: u64) -> PackedName {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&n.to_le_bytes());
        PackedName { prefix, id }
    }

    #[test]
    fn a_slot_is_half_a_cache_line_and_never_straddles_one() {
        assert_eq!(std::mem::size_of::<Slot>(), 32);
        assert_eq!(std::mem::align_of::<Slot>(), 32);
    }

    #[test]
    fn heads_are_found_updated_and_listed_across_growth() {
        let mut table = PackedHeads::default();
        assert_eq!(table.get(&name(0, 1)), None, "empty, nothing allocated");
        table.prefetch(&name(0, 1));
        for n in 0..10_000u64 {
            table.insert(&name((n % 3) as u8, n), Head { version: n + 1, position: 2 * n + 1 });
        }
        assert_eq!(table.len(), 10_000);
        assert!(table.slots.len() * 7 >= table.len() * 8, "within the load factor");
        for n in 0..10_000u64 {
            table.prefetch(&name((n % 3) as u8, n));
            assert_eq!(
                table.get(&name((n % 3) as u8, n)),
                Some(Head { version: n + 1, position: 2 * n + 1 })
            );
            assert_eq!(table.get(&name((n % 3) as u8 + 3, n)), None, "same id, another prefix");
        }
        table.insert(&name(1, 7), Head { version: 99, position: 12_345 });
        assert_eq!(table.get(&name(1, 7)), Some(Head { version: 99, position: 12_345 }));
        assert_eq!(table.len(), 10_000, "an update adds nothing");
        assert_eq!(table.iter().count(), 10_000);
        let largest = name(255, u64::MAX);
        table.insert(&largest, Head { version: VERSION_MAX, position: u64::MAX });
        assert_eq!(table.get(&largest), Some(Head { version: VERSION_MAX, position: u64::MAX }));
        assert_eq!(
            table.iter().find(|(kept, _)| *kept == largest).map(|(_, head)| head.version),
            Some(VERSION_MAX)
        );
    }

    #[test]
    #[should_panic(expected = "a kept version")]
    fn a_version_of_zero_is_refused() {
        PackedHeads::default().insert(&name(0, 1), Head { version: 0, position: 1 });
    }

    #[test]
    fn sized_up_front_it_does_not_grow() {
        let mut table = PackedHeads::with_capacity(1_000);
        let slots = table.slots.len();
        for n in 0..1_000u64 {
            table.insert(&name(0, n), Head { version: 1, position: n + 1 });
        }
        assert_eq!(table.slots.len(), slots);
    }

    proptest! {
        /// The table answers exactly as a `HashMap` given the same inserts, present or absent.
        #[test]
        fn answers_as_a_hash_map_does(
            inserts in proptest::collection::vec((0u8..4, 0u64..300, 1u64..1_000, any::<u64>()), 0..600),
            probes in proptest::collection::vec((0u8..4, 0u64..300), 0..200),
        ) {
            let mut table = PackedHeads::default();
            let mut model = HashMap::new();
            for (prefix, n, version, position) in inserts {
                let head = Head { version, position };
                table.insert(&name(prefix, n), head);
                model.insert(name(prefix, n), head);
            }
            prop_assert_eq!(table.len(), model.len());
            for (prefix, n) in probes {
                prop_assert_eq!(table.get(&name(prefix, n)), model.get(&name(prefix, n)).copied());
            }
            let listed: HashMap<PackedName, Head> = table.iter().collect();
            prop_assert_eq!(listed, model);
            // Robin Hood's order, which a lookup's early stop relies on: along a run of entries
            // each is at most one further from its home than the one before it.
            for index in 0..table.slots.len() {
                let next = (index + 1) & (table.slots.len() - 1);
                if !table.slots[next].is_empty() {
                    let before = if table.slots[index].is_empty() { 0 } else { table.distance(index) + 1 };
                    prop_assert!(table.distance(next) <= before, "slot {} is out of order", next);
                }
            }
        }
    }
}
