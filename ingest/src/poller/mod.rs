//! The snapshot poller: REST order books as a backstop to the WebSocket stream, stored as
//! snapshots with `source = rest`.
//!
//! Order: markets marked with a recent gap ([`Poller::mark_gap`]) first, oldest mark first,
//! each once however often it was marked; then every tracked market round-robin. Every
//! request goes through the [`RestClient`]'s token bucket, so the poller cannot exceed the
//! configured read budget; a 429 or 5xx is backed off and retried inside the client, and a
//! market whose poll still fails is put back where it was (a gap market stays first).
//! Membership follows the registry's [`RegistryChange`]s.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use crate::registry::RegistryChange;
use crate::rest::{RestClient, RestError};
use crate::store::{Record, SnapshotRecord, SnapshotSource};

/// Gap marks held at once: a storm of gaps on a 1M-market gatherer must not grow the queue
/// without bound; beyond this, marks are dropped (counted) and those markets wait their
/// round-robin turn. 100,000 marks = 83 min of the Basic budget, far more than can be served.
pub const GAP_QUEUE_MAX: usize = 100_000;

/// Counters of one poller.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PollerStats {
    /// Snapshots produced.
    pub snapshots: u64,
    /// Of those, for gap-marked markets.
    pub gap_snapshots: u64,
    /// Polls that failed (after the client's retries).
    pub failures: u64,
    /// Gap marks dropped because the queue was full.
    pub gap_marks_dropped: u64,
}

/// The poller state: tracked markets (round-robin ring) and the gap queue.
#[derive(Debug, Default)]
pub struct Poller {
    ring: VecDeque<Arc<str>>,
    tracked: HashSet<Arc<str>>,
    gaps: VecDeque<Arc<str>>,
    gap_set: HashSet<Arc<str>>,
    stats: PollerStats,
}

impl Poller {
    /// No markets.
    pub fn new() -> Poller {
        Poller::default()
    }

    /// Counters so far.
    pub fn stats(&self) -> PollerStats {
        self.stats
    }

    /// Markets tracked.
    pub fn len(&self) -> usize {
        self.tracked.len()
    }

    /// No market tracked.
    pub fn is_empty(&self) -> bool {
        self.tracked.is_empty()
    }

    /// Applies a registry change: new markets join the end of the round, removed ones leave
    /// (and lose any gap mark).
    pub fn apply(&mut self, change: &RegistryChange) {
        for t in &change.add {
            if self.tracked.insert(t.clone()) {
                self.ring.push_back(t.clone());
            }
        }
        if !change.remove.is_empty() {
            for t in &change.remove {
                self.tracked.remove(t);
                self.gap_set.remove(t);
            }
            self.ring.retain(|t| self.tracked.contains(t));
            self.gaps.retain(|t| self.gap_set.contains(t));
        }
    }

    /// Marks a market as having had a recent gap: it is polled before the round-robin. An
    /// untracked market is ignored; a market already marked keeps its place.
    pub fn mark_gap(&mut self, ticker: &str) {
        let Some(t) = self.tracked.get(ticker).cloned() else { return };
        if self.gap_set.contains(&t) {
            return;
        }
        if self.gaps.len() >= GAP_QUEUE_MAX {
            self.stats.gap_marks_dropped += 1;
            return;
        }
        self.gap_set.insert(t.clone());
        self.gaps.push_back(t);
    }

    /// The next market to poll and whether it is a gap market (taken off the gap queue, or
    /// rotated to the back of the round).
    pub fn next_market(&mut self) -> Option<(Arc<str>, bool)> {
        if let Some(t) = self.gaps.pop_front() {
            self.gap_set.remove(&t);
            return Some((t, true));
        }
        let t = self.ring.pop_front()?;
        self.ring.push_back(t.clone());
        Some((t, false))
    }

    /// Polls the next market's book through `client`; `Ok(None)` when nothing is tracked. A
    /// failed gap market goes back to the front of the gap queue.
    pub fn poll_one(&mut self, client: &mut RestClient) -> Result<Option<Record>, RestError> {
        let Some((market, gap)) = self.next_market() else { return Ok(None) };
        match client.orderbook(&market) {
            Ok(book) => {
                let ts_recv_ns = client.clock().unix_ns();
                self.stats.snapshots += 1;
                if gap {
                    self.stats.gap_snapshots += 1;
                }
                Ok(Some(Record::Snapshot(Box::new(SnapshotRecord {
                    source: SnapshotSource::Rest { ts_recv_ns },
                    market,
                    yes: book.yes.into_boxed_slice(),
                    no: book.no.into_boxed_slice(),
                }))))
            }
            Err(e) => {
                self.stats.failures += 1;
                if gap && self.gap_set.insert(market.clone()) {
                    self.gaps.push_front(market);
                }
                Err(e)
            }
        }
    }
}
