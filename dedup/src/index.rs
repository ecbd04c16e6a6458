//! The seen-key index: for each event key still in play, the bitmap of the gatherers that
//! delivered it.
//!
//! Keys are stored **in full** (no hashes stand in for them), so two different events can never
//! be taken for one: the hasher only decides speed. Market tickers are interned to `u32` ids by
//! the merge core, which keeps delta and ticker keys small and `Copy`.
//!
//! Eviction, all lossless (a later delivery of an evicted key is emitted again, and production's
//! unique constraint absorbs it):
//! - **full**: the key's bitmap covers every live gatherer; nobody else will deliver it;
//! - **watermark**: its time fell behind the slowest live gatherer's progress minus the slack;
//! - **limit**: the index holds `index_keys_max` keys; the oldest goes first.
//!
//! An insertion-ordered queue (key, serial, time) finds the oldest keys; the map's entry holds
//! the serial of its insertion, so a queued key that was evicted and later inserted again is not
//! evicted by its old queue entry. Keys removed as *full* leave their queue entry behind; the
//! queue is compacted when such entries outnumber live ones, keeping it within twice the map.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

use foldhash::fast::FixedState;

/// What an index says about one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    /// Nobody delivered it yet (as far as the index remembers): emit it.
    New,
    /// Another gatherer (or production, after a rebuild) already delivered it.
    Again,
    /// This gatherer already delivered it.
    Repeat,
}

#[derive(Debug, Clone, Copy)]
struct Held {
    serial: u64,
    bits: u8,
}

/// Evictions by cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Evictions {
    /// Every live gatherer had delivered the key.
    pub full: u64,
    /// The key fell behind the time watermark.
    pub watermark: u64,
    /// The index was at `index_keys_max`: the oldest key went.
    pub limit: u64,
}

/// One kind's seen-key index.
#[derive(Debug)]
pub(crate) struct SeenIndex<K> {
    map: HashMap<K, Held, FixedState>,
    queue: VecDeque<(K, u64, i64)>,
    next_serial: u64,
    keys_max: usize,
    pub(crate) evictions: Evictions,
}

/// Queue entries beyond the map's size tolerated before compaction.
const QUEUE_SLACK_ENTRIES: usize = 1024;

impl<K: Hash + Eq + Clone> SeenIndex<K> {
    pub(crate) fn new(keys_max: usize) -> Self {
        SeenIndex {
            map: HashMap::with_hasher(FixedState::default()),
            queue: VecDeque::new(),
            next_serial: 0,
            keys_max,
            evictions: Evictions::default(),
        }
    }

    /// Keys held.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Records that the gatherers in `bit` delivered `key` (time `ts_ns`); `live` is the mask of
    /// live gatherers. `bit == 0` records a key already in production (a rebuild).
    pub(crate) fn observe(&mut self, key: K, ts_ns: i64, bit: u8, live: u8) -> Seen {
        if self.map.len() >= self.keys_max && !self.map.contains_key(&key) {
            self.evict_oldest();
        }
        match self.map.entry(key) {
            Entry::Occupied(mut held) => {
                let bits = held.get().bits;
                if bits & bit != 0 {
                    return Seen::Repeat;
                }
                if (bits | bit) & live == live {
                    held.remove();
                    self.evictions.full += 1;
                    self.compact_if_sparse();
                } else {
                    held.get_mut().bits = bits | bit;
                }
                Seen::Again
            }
            Entry::Vacant(vacant) => {
                if bit != 0 && bit & live == live {
                    // The only live gatherer delivered it: nobody else will, nothing to keep.
                    return Seen::New;
                }
                let serial = self.next_serial;
                self.next_serial += 1;
                self.queue.push_back((vacant.key().clone(), serial, ts_ns));
                vacant.insert(Held { serial, bits: bit });
                Seen::New
            }
        }
    }

    /// Evicts every key whose time is below `watermark_ns` (as far as insertion order finds
    /// them: a key inserted after a younger one waits for it).
    pub(crate) fn evict_before(&mut self, watermark_ns: i64) {
        while let Some((key, serial, ts_ns)) = self.queue.front() {
            if *ts_ns >= watermark_ns {
                break;
            }
            if self.map.get(key).is_some_and(|e| e.serial == *serial) {
                self.map.remove(key);
                self.evictions.watermark += 1;
            }
            self.queue.pop_front();
        }
    }

    /// Evicts the oldest key still held (the index is at its limit).
    fn evict_oldest(&mut self) {
        while let Some((key, serial, _)) = self.queue.pop_front() {
            if self.map.get(&key).is_some_and(|e| e.serial == serial) {
                self.map.remove(&key);
                self.evictions.limit += 1;
                return;
            }
        }
    }

    /// Drops queue entries of keys no longer held once they outnumber the held keys.
    fn compact_if_sparse(&mut self) {
        if self.queue.len() > 2 * self.map.len() + QUEUE_SLACK_ENTRIES {
            let map = &self.map;
            self.queue.retain(|(key, serial, _)| map.get(key).is_some_and(|e| e.serial == *serial));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL3: u8 = 0b111;

    #[test]
    fn first_delivery_is_new_later_ones_again_and_full_keys_leave() {
        let mut index = SeenIndex::new(10);
        assert_eq!(index.observe(7u64, 100, 0b001, ALL3), Seen::New);
        assert_eq!(index.observe(7u64, 100, 0b001, ALL3), Seen::Repeat);
        assert_eq!(index.observe(7u64, 100, 0b100, ALL3), Seen::Again);
        assert_eq!(index.len(), 1);
        assert_eq!(index.observe(7u64, 100, 0b010, ALL3), Seen::Again);
        assert_eq!(index.len(), 0);
        assert_eq!(index.evictions, Evictions { full: 1, watermark: 0, limit: 0 });
        // A fourth delivery after it left: emitted again (production's constraint absorbs it).
        assert_eq!(index.observe(7u64, 100, 0b010, ALL3), Seen::New);
    }

    #[test]
    fn watermark_evicts_old_keys_only_and_ignores_stale_queue_entries() {
        let mut index = SeenIndex::new(10);
        assert_eq!(index.observe(1u64, 100, 0b001, ALL3), Seen::New);
        assert_eq!(index.observe(2u64, 200, 0b001, ALL3), Seen::New);
        assert_eq!(index.observe(2u64, 200, 0b010, ALL3), Seen::Again);
        assert_eq!(index.observe(2u64, 200, 0b100, ALL3), Seen::Again); // full: removed
        assert_eq!(index.observe(2u64, 300, 0b001, ALL3), Seen::New); // inserted again
        index.evict_before(201);
        assert_eq!(index.evictions, Evictions { full: 1, watermark: 1, limit: 0 });
        assert_eq!(index.len(), 1, "key 2's second insertion (time 300) stays");
        assert_eq!(index.observe(2u64, 300, 0b001, ALL3), Seen::Repeat);
        assert_eq!(index.observe(1u64, 100, 0b010, ALL3), Seen::New, "key 1 was evicted");
    }

    #[test]
    fn at_the_limit_the_oldest_key_is_evicted() {
        let mut index = SeenIndex::new(2);
        assert_eq!(index.observe(1u64, 1, 0b001, ALL3), Seen::New);
        assert_eq!(index.observe(2u64, 2, 0b001, ALL3), Seen::New);
        assert_eq!(index.observe(3u64, 3, 0b001, ALL3), Seen::New);
        assert_eq!(index.len(), 2);
        assert_eq!(index.evictions.limit, 1);
        assert_eq!(index.observe(1u64, 1, 0b010, ALL3), Seen::New, "forgotten: emitted again");
        assert_eq!(index.observe(3u64, 3, 0b010, ALL3), Seen::Again);
    }

    #[test]
    fn a_sole_live_gatherer_keeps_nothing_and_rebuilt_keys_carry_no_bit() {
        let mut index = SeenIndex::new(10);
        assert_eq!(index.observe(1u64, 1, 0b001, 0b001), Seen::New);
        assert_eq!(index.len(), 0);
        assert_eq!(index.observe(2u64, 1, 0, ALL3), Seen::New);
        assert_eq!(index.observe(2u64, 1, 0b001, ALL3), Seen::Again);
    }
}
