//! A set of numbers kept as one sorted vector: a branch's home members, its visitors.
//!
//! The models hold tens of thousands of such sets (one per branch) and a rebuild moves members in
//! and out of them millions of times. As B-trees each move walked two or three separately
//! allocated nodes — a cache miss each — and was ~15 % of the rebuild's applying thread at
//! 10 M events; one sorted vector is one allocation, searched in place. An insert or removal in
//! the middle moves the numbers after it: a few hundred bytes for a branch of a hundred members,
//! 4 KiB for one of a thousand, which is still cheaper than the misses it replaces. Most inserts
//! are at the end (new members get the next number).

use crate::grow::{insert_gently, push_gently};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortedSet<T> {
    items: Vec<T>,
}

impl<T> Default for SortedSet<T> {
    fn default() -> Self {
        SortedSet { items: Vec::new() }
    }
}

impl<T: Ord + Copy> SortedSet<T> {
    /// Adds `item`; `false` when it was there already.
    pub fn insert(&mut self, item: T) -> bool {
        // The common case first: a number above every other goes at the end.
        if self.items.last().is_none_or(|last| *last < item) {
            push_gently(&mut self.items, item);
            return true;
        }
        match self.items.binary_search(&item) {
            Ok(_) => false,
            Err(at) => {
                insert_gently(&mut self.items, at, item);
                true
            }
        }
    }

    /// Removes `item`; `false` when it was not there.
    pub fn remove(&mut self, item: &T) -> bool {
        match self.items.binary_search(item) {
            Ok(at) => {
                self.items.remove(at);
                true
            }
            Err(_) => false,
        }
    }

    pub fn contains(&self, item: &T) -> bool {
        self.items.binary_search(item).is_ok()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// In ascending order.
    pub fn iter(&self) -> std::iter::Copied<std::slice::Iter<'_, T>> {
        self.items.iter().copied()
    }
}

impl<'a, T: Ord + Copy> IntoIterator for &'a SortedSet<T> {
    type Item = T;
    type IntoIter = std::iter::Copied<std::slice::Iter<'a, T>>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Against the standard B-tree set, on a mix that inserts at the end, in the middle, twice,
    /// and removes present and absent numbers.
    #[test]
    fn behaves_as_a_btree_set() {
        let mut ours = SortedSet::default();
        let mut theirs = BTreeSet::new();
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for step in 0..20_000u32 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let number = match seed % 4 {
                0 => step,                       // a new member: the end
                _ => (seed >> 8) as u32 % 2_000, // anyone
            };
            if seed % 3 == 0 {
                assert_eq!(ours.remove(&number), theirs.remove(&number), "remove {number}");
            } else {
                assert_eq!(ours.insert(number), theirs.insert(number), "insert {number}");
            }
            assert_eq!(ours.len(), theirs.len());
        }
        assert!(ours.iter().eq(theirs.iter().copied()));
        assert!(theirs.iter().all(|number| ours.contains(number)));
        assert!(!ours.contains(&u32::MAX));
        assert!(!ours.is_empty());
    }

    #[test]
    fn grows_by_a_quarter_in_the_middle_too() {
        let mut set = SortedSet::default();
        for number in (0..1_000u32).rev() {
            set.insert(number);
        }
        assert_eq!(set.len(), 1_000);
        assert!(set.items.capacity() <= 1_000 + 1_000 / 4, "capacity {}", set.items.capacity());
        assert!(set.iter().eq(0..1_000));
    }
}
