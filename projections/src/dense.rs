//! Dense numbers for the ids and names the read models refer to millions of times.
//!
//! An id is 16 bytes and a hash-table slot keyed by it holds room for twice the entries; the
//! facts refer to members, branches and outside organisations millions of times over. Each is
//! numbered once, in order of first appearance, and the facts hold the 4-byte number: tables per
//! member or branch become plain vectors indexed by it. Numbers are never reused or removed (a
//! retracted member keeps its number), so a number stays valid for the life of the models.
//! Members carry the write model's numbers (`World::member_number`); branches and outside
//! organisations are numbered here.

use std::hash::Hash;

use foldhash::HashMap;

/// Numbers `Id`s densely from 0.
#[derive(Debug, Clone)]
pub(crate) struct Dense<Id> {
    ids: Vec<Id>,
    number_of: HashMap<Id, u32>,
}

impl<Id> Default for Dense<Id> {
    fn default() -> Self {
        Dense { ids: Vec::new(), number_of: HashMap::default() }
    }
}

impl<Id: Clone + Eq + Hash> Dense<Id> {
    /// The id's number, numbering it if it is new; `true` when it was.
    pub fn number(&mut self, id: &Id) -> (u32, bool) {
        if let Some(number) = self.number_of.get(id) {
            return (*number, false);
        }
        let number = u32::try_from(self.ids.len()).expect("fewer than 2^32 distinct ids");
        flowbook_core::grow::push_gently(&mut self.ids, id.clone());
        self.number_of.insert(id.clone(), number);
        (number, true)
    }

    /// The number of an id already numbered.
    pub fn get(&self, id: &Id) -> Option<u32> {
        self.number_of.get(id).copied()
    }

    /// The id with this number (numbers come only from this table).
    pub fn id(&self, number: u32) -> &Id {
        &self.ids[number as usize]
    }
}

/// A member's number in the read models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct MemberNo(pub u32);

/// A branch's number in the read models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct BranchNo(pub u32);

impl BranchNo {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl MemberNo {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A set of members by number, one bit each: the read models' "who is mobile", "who is a pocket
/// member now". Hundreds of thousands of members enter and leave these sets during a rebuild; a
/// B-tree of 16-byte ids cost a search with a cache miss per level each time (an eighth of the
/// applier's time at 10 M events), a bit costs one memory access.
#[derive(Debug, Clone, Default)]
pub(crate) struct MemberSet {
    words: Vec<u64>,
    len: usize,
}

impl MemberSet {
    /// Puts the member in the set or takes it out.
    pub fn set(&mut self, member: MemberNo, present: bool) {
        let (word, bit) = (member.index() / 64, 1u64 << (member.index() % 64));
        if word >= self.words.len() {
            if !present {
                return;
            }
            flowbook_core::grow::grow_to(&mut self.words, word + 1, || 0);
        }
        let was = self.words[word] & bit != 0;
        if present && !was {
            self.words[word] |= bit;
            self.len += 1;
        } else if !present && was {
            self.words[word] &= !bit;
            self.len -= 1;
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// The members in the set, in order of number.
    pub fn iter(&self) -> impl Iterator<Item = MemberNo> + '_ {
        self.words.iter().enumerate().flat_map(|(index, &word)| {
            let mut rest = word;
            std::iter::from_fn(move || {
                (rest != 0).then(|| {
                    let bit = rest.trailing_zeros();
                    rest &= rest - 1;
                    MemberNo(index as u32 * 64 + bit)
                })
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_set_counts_and_lists_what_it_holds() {
        let mut set = MemberSet::default();
        set.set(MemberNo(3), false);
        assert_eq!((set.len(), set.iter().count()), (0, 0), "taking out what is not there");
        for number in [200, 3, 64, 63, 3] {
            set.set(MemberNo(number), true);
        }
        assert_eq!(set.len(), 4, "a member put in twice counts once");
        assert_eq!(set.iter().map(|m| m.0).collect::<Vec<_>>(), [3, 63, 64, 200]);
        set.set(MemberNo(64), false);
        set.set(MemberNo(64), false);
        assert_eq!(set.len(), 3);
        set.set(MemberNo(9_999), false);
        assert_eq!(set.iter().map(|m| m.0).collect::<Vec<_>>(), [3, 63, 200]);
    }

    #[test]
    fn numbers_are_dense_stable_and_round_trip() {
        let mut dense = Dense::default();
        assert_eq!(dense.number(&"b"), (0, true));
        assert_eq!(dense.number(&"a"), (1, true));
        assert_eq!(dense.number(&"b"), (0, false));
        assert_eq!(dense.get(&"a"), Some(1));
        assert_eq!(dense.get(&"c"), None);
        assert_eq!(*dense.id(1), "a");
    }
}
