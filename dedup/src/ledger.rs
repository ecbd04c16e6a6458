//! The coverage ledger (DESIGN §3 "Coverage ledger", §4 invariant 5; issue 5 item 4). Pure: no
//! I/O, no clock; it watches what the merge core decides and hands the sink a [`LedgerDelta`]
//! with every batch, written in the batch's own transaction.
//!
//! ```text
//! reader g ─► Ledger::push(core, g, gseq, row) ─► MergeCore::push ─► Fate
//!                 │ counts (market, minute, g): delivered (Emitted + Duplicate), merged (Emitted)
//!                 │ gap markers → per-gatherer uncovered intervals (closed by snapshots)
//!                 ▼
//!             Ledger::take_batch(core) ─► (Batch, LedgerDelta) ─► Sink::write_with_ledger
//! ```
//!
//! **Time axis.** Everything is in exchange time, ns. Gap markers carry receive times; a
//! gatherer receives an event some milliseconds after the exchange stamped it, and the two clocks
//! differ a little, so each bound taken from a receive time is widened by
//! [`GAP_TIME_SLACK_NS`] (an event the gatherer lost has an exchange time at or after the last
//! frame it got in order, which it received at most the slack after that frame's exchange time).
//!
//! **Uncovered intervals** (one per gap marker and market; the empty market list of a marker
//! means every market of that gatherer, stored as market `None` / `''`), by the marker's shape
//! (gatherer schema 0002 spells the kinds out; the shape tells them apart in either version):
//! - `seq` (a sid's seq jumped: frames in between lost, the stream went on) and `disconnect`
//!   (sid 0; the marker is written at the first snapshot after the reconnect):
//!   `[last good − slack, seen + slack]`.
//! - `subscription_lost` (expected 0, no got) and `restart`/`crash` (conn_id 0): nothing flows
//!   for the market until it is subscribed again, so the interval is open from `last good −
//!   slack` until the market's first snapshot from that gatherer after the marker (its receive
//!   time + slack). For a marker naming every market, each market closes on its own snapshot: a
//!   closed row for that market then replaces the open every-market row of the same marker for
//!   that market. A market that never gets a snapshot again stays uncovered (nothing proves the
//!   gatherer listened to it).
//! - An unknown start (`ts_recv_last_good_ns` NULL) starts at the beginning of time.
//!
//! **Coverage gaps**: for each market, the intersection over every gatherer of the union of its
//! uncovered intervals (its own and its every-market ones): the times when no gatherer had
//! coverage. `None`/`''` holds the intersection of the every-market intervals, which applies to
//! every market; a reader takes a market's rows together with the `''` rows. Open intervals make
//! open gaps (`to = None`). Whenever a market's intervals change, its gaps from the earliest
//! interval the ledger still holds are recomputed and replace the stored ones.
//!
//! **Per-minute coverage** ("which gatherers had unbroken coverage of market M in minute m") is
//! derived when asked ([`minute_coverage`]) from the stored intervals, because a gap marker can
//! reach the ledger after the minute's events did.
//!
//! **Bounds.** The ledger holds the intervals of the last [`LEDGER_RETAIN_NS`] of the slowest
//! gatherer's progress (and open ones); older ones are final in the database and dropped from
//! memory. Counts are held only until the next batch.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use foldhash::fast::FixedState;

use crate::merge::{Batch, Fate, GathererId, MergeCore, MergeError};
use crate::row::{Gap, Row};

/// One minute in ns: the ledger's counting unit.
pub const MINUTE_NS: i64 = 60_000_000_000;

/// The start of the minute holding `ts_ns` (saturating at the ends of time).
pub fn minute_start(ts_ns: i64) -> i64 {
    ts_ns.saturating_sub(ts_ns.rem_euclid(MINUTE_NS))
}

/// How far a receive-time bound of a gap marker is widened on each side to bound exchange times:
/// covers the exchange → gatherer latency of the frame the bound comes from (milliseconds; seconds
/// under a heavy backlog) and the offset between the exchange's clock and the gatherer's (NTP
/// keeps it within milliseconds). Widening only ever over-reports a gap, never hides one.
pub const GAP_TIME_SLACK_NS: i64 = 2_000_000_000;

/// How long closed uncovered intervals stay in memory behind the slowest gatherer's progress: a
/// gap marker reaches the deduplicator within seconds of the events around it, so an hour is far
/// more than needed for recomputed gaps to merge with their neighbours.
pub const LEDGER_RETAIN_NS: i64 = 3_600_000_000_000;

/// What a gap marker means for coverage, told apart by its shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GapKind {
    /// A sid's seq jumped (or its stream ended before the expected number).
    Seq,
    /// The server dropped a subscription.
    SubscriptionLost,
    /// The connection dropped; the marker is written at the first snapshot after the reconnect.
    Disconnect,
    /// The gatherer (re)started over an existing history (`restart` or `crash`).
    Restart,
}

impl GapKind {
    /// The kind of a gatherer gap row (the same rule as gatherer migration 0002).
    pub fn of(gap: &Gap) -> GapKind {
        if gap.conn_id == 0 {
            GapKind::Restart
        } else if gap.sid == 0 {
            GapKind::Disconnect
        } else if gap.expected_seq == 0 && gap.got_seq.is_none() {
            GapKind::SubscriptionLost
        } else {
            GapKind::Seq
        }
    }

    /// Whether coverage resumes only with the market's next snapshot.
    pub fn open_until_snapshot(self) -> bool {
        matches!(self, GapKind::SubscriptionLost | GapKind::Restart)
    }
}

/// Events of one market in one minute from one gatherer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MinuteCount {
    /// Market ticker.
    pub market: Arc<str>,
    /// The minute's start, exchange time ns (lifecycle rows: receive time).
    pub minute_ns: i64,
    /// The gatherer.
    pub gatherer: GathererId,
    /// Events it delivered (first deliveries and duplicates; its own repeats not counted).
    pub delivered: u64,
    /// Events it delivered first (emitted into production).
    pub merged: u64,
}

/// One gatherer's uncovered interval of one market (`None`: every market of the gatherer) for
/// one gap marker. Stored keyed by (gatherer, gap_gseq, market): a later row with the same key
/// replaces it (an open interval closed by a snapshot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uncovered {
    /// The gatherer.
    pub gatherer: GathererId,
    /// The gap marker's gseq in that gatherer.
    pub gap_gseq: i64,
    /// The market (`None`: every market).
    pub market: Option<Arc<str>>,
    /// Start, exchange time ns (inclusive).
    pub from_ns: i64,
    /// End, exchange time ns (inclusive); `None`: still open.
    pub to_ns: Option<i64>,
}

/// An interval of one market in which no gatherer had coverage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GapInterval {
    /// Start, exchange time ns (inclusive).
    pub from_ns: i64,
    /// End, exchange time ns (inclusive); `None`: still open.
    pub to_ns: Option<i64>,
}

impl GapInterval {
    /// Whether `ts_ns` lies in it.
    pub fn contains(&self, ts_ns: i64) -> bool {
        ts_ns >= self.from_ns && self.to_ns.is_none_or(|to| ts_ns <= to)
    }

    /// Whether it overlaps `[from_ns, to_ns]`.
    pub fn overlaps(&self, from_ns: i64, to_ns: i64) -> bool {
        self.from_ns <= to_ns && self.to_ns.is_none_or(|to| to >= from_ns)
    }
}

/// The recomputed coverage gaps of one market: replace its stored gaps with `ts_from_ns >=
/// from_ns` by `gaps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoverageGaps {
    /// The market (`None`: every market).
    pub market: Option<Arc<str>>,
    /// Stored gaps starting here or later are replaced.
    pub from_ns: i64,
    /// The gaps, ascending, disjoint.
    pub gaps: Vec<GapInterval>,
}

/// What one batch adds to the ledger: written by [`crate::sink::Sink::write_with_ledger`] in the
/// batch's transaction (counts added to the stored ones, intervals and gaps upserted).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LedgerDelta {
    /// Counts to add, one per (market, minute, gatherer).
    pub counts: Vec<MinuteCount>,
    /// New and closed uncovered intervals.
    pub uncovered: Vec<Uncovered>,
    /// Recomputed coverage gaps, per market.
    pub coverage_gaps: Vec<CoverageGaps>,
}

impl LedgerDelta {
    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty() && self.uncovered.is_empty() && self.coverage_gaps.is_empty()
    }
}

/// What the ledger needs of a row, taken before the row moves into the merge core.
enum Seen {
    Event { market: Arc<str>, ts_ns: i64 },
    Unmarketed,
    Snapshot { market: Arc<str>, ts_recv_ns: i64 },
    Gap(Box<Gap>),
}

impl Seen {
    fn of(row: &Row) -> Seen {
        match row {
            Row::Delta(d) => Seen::Event { market: Arc::clone(&d.market), ts_ns: d.ts_exch_ns },
            Row::Trade(t) => Seen::Event { market: Arc::clone(&t.market), ts_ns: t.ts_exch_ns },
            Row::Ticker(t) => Seen::Event { market: Arc::clone(&t.market), ts_ns: t.ts_exch_ns },
            Row::MarketLifecycle(m) => {
                Seen::Event { market: Arc::clone(&m.market), ts_ns: m.ts_recv_ns }
            }
            Row::EventLifecycle(_) => Seen::Unmarketed,
            Row::Snapshot(s) => {
                Seen::Snapshot { market: Arc::clone(&s.market), ts_recv_ns: s.ts_recv_ns }
            }
            Row::Gap(g) => Seen::Gap(g.clone()),
        }
    }
}

/// An open marker waiting for snapshots.
#[derive(Debug)]
struct OpenGap {
    gap_gseq: i64,
    from_ns: i64,
    /// `None`: every market.
    markets: Option<HashSet<Arc<str>, FixedState>>,
    /// Markets already closed by a snapshot (every-market markers).
    closed: HashSet<Arc<str>, FixedState>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Held {
    gatherer: GathererId,
    gap_gseq: i64,
    from_ns: i64,
    to_ns: Option<i64>,
}

/// (market, minute start, gatherer).
type CountKey = (Arc<str>, i64, GathererId);

/// The coverage ledger of one merge core; see the module note.
#[derive(Debug)]
pub struct Ledger {
    gatherers: usize,
    /// (delivered, merged) by (market, minute, gatherer).
    counts: HashMap<CountKey, (u64, u64), FixedState>,
    open: Vec<Vec<OpenGap>>,
    /// Held intervals by market (`None`: every market).
    held: HashMap<Option<Arc<str>>, Vec<Held>, FixedState>,
    dirty: HashSet<Option<Arc<str>>, FixedState>,
    uncovered: Vec<Uncovered>,
    /// Latest time each gatherer delivered (events: exchange time; markers, snapshots: receive).
    progress_ns: Vec<i64>,
}

impl Ledger {
    /// A ledger for `gatherers` gatherers (ids 0..gatherers), as many as the merge core has.
    pub fn new(gatherers: usize) -> Ledger {
        Ledger {
            gatherers,
            counts: HashMap::with_hasher(FixedState::default()),
            open: (0..gatherers).map(|_| Vec::new()).collect(),
            held: HashMap::with_hasher(FixedState::default()),
            dirty: HashSet::with_hasher(FixedState::default()),
            uncovered: Vec::new(),
            progress_ns: vec![i64::MIN; gatherers],
        }
    }

    /// A ledger for a restarted deduplicator: `held` are the stored uncovered intervals that may
    /// still change a coverage gap (`Sink::read_uncovered`: open ones and those ending within
    /// [`LEDGER_RETAIN_NS`] of the latest). Open ones wait for their snapshots again; all of them
    /// take part in recomputed gaps, so a restart never shrinks a stored gap.
    pub fn restore(gatherers: usize, held: &[Uncovered]) -> Ledger {
        let mut ledger = Ledger::new(gatherers);
        let mut sorted: Vec<&Uncovered> = held.iter().collect();
        // Every-market rows first, so a market's own row of the same marker can mark it closed.
        sorted.sort_by(|a, b| {
            (a.gatherer, a.gap_gseq, a.market.is_some(), &a.market).cmp(&(
                b.gatherer,
                b.gap_gseq,
                b.market.is_some(),
                &b.market,
            ))
        });
        for u in sorted {
            let h = Held {
                gatherer: u.gatherer,
                gap_gseq: u.gap_gseq,
                from_ns: u.from_ns,
                to_ns: u.to_ns,
            };
            ledger.held.entry(u.market.clone()).or_default().push(h);
            let Some(open) = ledger.open.get_mut(usize::from(u.gatherer)) else { continue };
            let marker = open.iter_mut().find(|o| o.gap_gseq == u.gap_gseq);
            match (&u.market, u.to_ns, marker) {
                (None, None, _) => open.push(OpenGap {
                    gap_gseq: u.gap_gseq,
                    from_ns: u.from_ns,
                    markets: None,
                    closed: HashSet::with_hasher(FixedState::default()),
                }),
                (Some(m), Some(_), Some(o)) if o.markets.is_none() => {
                    o.closed.insert(Arc::clone(m));
                }
                (Some(m), None, Some(o)) => {
                    if let Some(markets) = &mut o.markets {
                        markets.insert(Arc::clone(m));
                    }
                }
                (Some(m), None, None) => open.push(OpenGap {
                    gap_gseq: u.gap_gseq,
                    from_ns: u.from_ns,
                    markets: Some(std::iter::once(Arc::clone(m)).collect()),
                    closed: HashSet::with_hasher(FixedState::default()),
                }),
                _ => {}
            }
        }
        ledger
    }

    /// Pushes `row` into `core` ([`MergeCore::push`]) and records what it means for the ledger.
    pub fn push(
        &mut self,
        core: &mut MergeCore,
        gatherer: GathererId,
        gseq: i64,
        row: Row,
    ) -> Result<Fate, MergeError> {
        let seen = Seen::of(&row);
        let fate = core.push(gatherer, gseq, row)?;
        self.record(gatherer, gseq, seen, fate);
        Ok(fate)
    }

    /// Takes the core's next batch ([`MergeCore::take_batch`]) together with the ledger rows of
    /// the rows pushed since the last one: write both with
    /// [`crate::sink::Sink::write_with_ledger`] (and retry both together).
    pub fn take_batch(&mut self, core: &mut MergeCore) -> Option<(Batch, LedgerDelta)> {
        let batch = core.take_batch()?;
        Some((batch, self.take_delta()))
    }

    fn progress(&mut self, gatherer: GathererId, ts_ns: i64) {
        if let Some(p) = self.progress_ns.get_mut(usize::from(gatherer)) {
            *p = (*p).max(ts_ns);
        }
    }

    fn record(&mut self, gatherer: GathererId, gseq: i64, seen: Seen, fate: Fate) {
        match seen {
            Seen::Event { market, ts_ns } => {
                self.progress(gatherer, ts_ns);
                let (delivered, merged) = match fate {
                    Fate::Emitted => (1, 1),
                    Fate::Duplicate => (1, 0),
                    Fate::Repeat | Fate::Kept => return,
                };
                let minute_ns = minute_start(ts_ns);
                let count = self.counts.entry((market, minute_ns, gatherer)).or_default();
                count.0 += delivered;
                count.1 += merged;
            }
            Seen::Unmarketed => {}
            Seen::Snapshot { market, ts_recv_ns } => {
                self.progress(gatherer, ts_recv_ns);
                self.snapshot(gatherer, &market, ts_recv_ns);
            }
            Seen::Gap(gap) => {
                self.progress(gatherer, gap.ts_recv_ns);
                self.gap(gatherer, gseq, &gap);
            }
        }
    }

    fn hold(&mut self, market: Option<Arc<str>>, held: Held) {
        self.uncovered.push(Uncovered {
            gatherer: held.gatherer,
            gap_gseq: held.gap_gseq,
            market: market.clone(),
            from_ns: held.from_ns,
            to_ns: held.to_ns,
        });
        let list = self.held.entry(market.clone()).or_default();
        match list.iter_mut().find(|h| h.gatherer == held.gatherer && h.gap_gseq == held.gap_gseq) {
            Some(h) => *h = held,
            None => list.push(held),
        }
        self.dirty.insert(market);
    }

    fn gap(&mut self, gatherer: GathererId, gseq: i64, gap: &Gap) {
        let kind = GapKind::of(gap);
        let from_ns =
            gap.ts_recv_last_good_ns.map_or(i64::MIN, |t| t.saturating_sub(GAP_TIME_SLACK_NS));
        let to_ns = (!kind.open_until_snapshot())
            .then(|| gap.ts_recv_ns.saturating_add(GAP_TIME_SLACK_NS).max(from_ns));
        let held = Held { gatherer, gap_gseq: gseq, from_ns, to_ns };
        if gap.markets.is_empty() {
            self.hold(None, held);
        } else {
            for market in &gap.markets {
                self.hold(Some(Arc::clone(market)), held);
            }
        }
        if to_ns.is_none()
            && let Some(open) = self.open.get_mut(usize::from(gatherer))
        {
            open.push(OpenGap {
                gap_gseq: gseq,
                from_ns,
                markets: (!gap.markets.is_empty()).then(|| gap.markets.iter().cloned().collect()),
                closed: HashSet::with_hasher(FixedState::default()),
            });
        }
    }

    fn snapshot(&mut self, gatherer: GathererId, market: &Arc<str>, ts_recv_ns: i64) {
        let Some(open) = self.open.get_mut(usize::from(gatherer)) else { return };
        let mut close = Vec::new();
        open.retain_mut(|o| {
            let applies = match &mut o.markets {
                Some(markets) => markets.remove(&**market),
                None => o.closed.insert(Arc::clone(market)),
            };
            if applies {
                close.push((o.gap_gseq, o.from_ns));
            }
            o.markets.as_ref().is_none_or(|m| !m.is_empty())
        });
        for (gap_gseq, from_ns) in close {
            let to_ns = Some(ts_recv_ns.saturating_add(GAP_TIME_SLACK_NS).max(from_ns));
            self.hold(Some(Arc::clone(market)), Held { gatherer, gap_gseq, from_ns, to_ns });
        }
    }

    /// The ledger rows of everything recorded since the last call.
    pub fn take_delta(&mut self) -> LedgerDelta {
        let mut counts: Vec<MinuteCount> = self
            .counts
            .drain()
            .map(|((market, minute_ns, gatherer), (delivered, merged))| MinuteCount {
                market,
                minute_ns,
                gatherer,
                delivered,
                merged,
            })
            .collect();
        counts.sort_by(|a, b| {
            (a.minute_ns, &a.market, a.gatherer).cmp(&(b.minute_ns, &b.market, b.gatherer))
        });
        let uncovered = std::mem::take(&mut self.uncovered);
        let mut markets: Vec<Option<Arc<str>>> = if self.dirty.contains(&None) {
            // Every-market intervals changed: every market's gaps may have.
            self.dirty.clear();
            self.held.keys().cloned().collect()
        } else {
            self.dirty.drain().collect()
        };
        markets.sort();
        let coverage_gaps = markets.into_iter().filter_map(|m| self.gaps_of(m)).collect();
        self.prune();
        LedgerDelta { counts, uncovered, coverage_gaps }
    }

    /// Recomputes one market's gaps from the held intervals.
    fn gaps_of(&self, market: Option<Arc<str>>) -> Option<CoverageGaps> {
        let own = self.held.get(&market).map_or(&[][..], Vec::as_slice);
        let every = match market {
            Some(_) => self.held.get(&None).map_or(&[][..], Vec::as_slice),
            None => &[][..],
        };
        let mut per_gatherer = vec![Vec::new(); self.gatherers];
        let mut from_ns = i64::MAX;
        for h in own {
            from_ns = from_ns.min(h.from_ns);
            if let Some(list) = per_gatherer.get_mut(usize::from(h.gatherer)) {
                list.push(GapInterval { from_ns: h.from_ns, to_ns: h.to_ns });
            }
        }
        for h in every {
            // A market's own row of the same marker replaces the every-market row.
            if own.iter().any(|o| o.gatherer == h.gatherer && o.gap_gseq == h.gap_gseq) {
                continue;
            }
            from_ns = from_ns.min(h.from_ns);
            if let Some(list) = per_gatherer.get_mut(usize::from(h.gatherer)) {
                list.push(GapInterval { from_ns: h.from_ns, to_ns: h.to_ns });
            }
        }
        if from_ns == i64::MAX {
            return None;
        }
        Some(CoverageGaps { market, from_ns, gaps: intersect_all(&per_gatherer) })
    }

    /// Drops closed intervals far behind every gatherer.
    fn prune(&mut self) {
        let Some(slowest) = self.progress_ns.iter().copied().min() else { return };
        let before = slowest.saturating_sub(LEDGER_RETAIN_NS);
        self.held.retain(|_, list| {
            list.retain(|h| h.to_ns.is_none_or(|to| to >= before));
            !list.is_empty()
        });
    }
}

/// The union of one gatherer's intervals: ascending, disjoint, touching ones joined.
pub fn union(intervals: &[GapInterval]) -> Vec<GapInterval> {
    let mut sorted = intervals.to_vec();
    sorted.sort_by_key(|i| i.from_ns);
    let mut out: Vec<GapInterval> = Vec::with_capacity(sorted.len());
    for i in sorted {
        match out.last_mut() {
            Some(last) if last.to_ns.is_none_or(|to| i.from_ns <= to.saturating_add(1)) => {
                last.to_ns = match (last.to_ns, i.to_ns) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    _ => None,
                };
            }
            _ => out.push(i),
        }
    }
    out
}

/// The intersection of two unions (ascending, disjoint).
fn intersect(a: &[GapInterval], b: &[GapInterval]) -> Vec<GapInterval> {
    let end = |i: &GapInterval| i.to_ns.unwrap_or(i64::MAX);
    let (mut x, mut y) = (0, 0);
    let mut out = Vec::new();
    while let (Some(p), Some(q)) = (a.get(x), b.get(y)) {
        let from_ns = p.from_ns.max(q.from_ns);
        let to = end(p).min(end(q));
        if from_ns <= to {
            let open = p.to_ns.is_none() && q.to_ns.is_none();
            out.push(GapInterval { from_ns, to_ns: (!open).then_some(to) });
        }
        if end(p) < end(q) {
            x += 1;
        } else {
            y += 1;
        }
    }
    out
}

/// The times when every gatherer was uncovered: the intersection over gatherers of the union of
/// each one's intervals. A gatherer without intervals had full coverage: no gaps.
pub fn intersect_all(per_gatherer: &[Vec<GapInterval>]) -> Vec<GapInterval> {
    let mut iter = per_gatherer.iter();
    let Some(first) = iter.next() else { return Vec::new() };
    let mut acc = union(first);
    for list in iter {
        if acc.is_empty() {
            break;
        }
        acc = intersect(&acc, &union(list));
    }
    acc
}

/// Per-minute coverage of one market, as `kdp coverage` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MinuteCoverage {
    /// The minute's start, ns.
    pub minute_ns: i64,
    /// Per gatherer: whether no uncovered interval of it overlaps the minute.
    pub covered: Vec<bool>,
    /// Per gatherer: events it delivered.
    pub delivered: Vec<u64>,
    /// Events merged (all gatherers).
    pub merged: u64,
    /// Whether a coverage gap overlaps the minute.
    pub gap: bool,
}

/// Builds the per-minute coverage of one market over `[from_ns, to_ns)` (whole minutes) from
/// stored ledger rows: `counts` of the market, `uncovered` intervals of the market and of every
/// market (`market` None), and its `gaps` (own and every-market). Pure.
pub fn minute_coverage(
    gatherers: usize,
    from_ns: i64,
    to_ns: i64,
    counts: &[MinuteCount],
    uncovered: &[Uncovered],
    gaps: &[GapInterval],
) -> Vec<MinuteCoverage> {
    // A market's own row of a marker replaces the every-market row of the same marker.
    let own: HashSet<(GathererId, i64)> =
        uncovered.iter().filter(|u| u.market.is_some()).map(|u| (u.gatherer, u.gap_gseq)).collect();
    let effective: Vec<&Uncovered> = uncovered
        .iter()
        .filter(|u| u.market.is_some() || !own.contains(&(u.gatherer, u.gap_gseq)))
        .collect();
    let mut out = Vec::new();
    let mut minute_ns = minute_start(from_ns);
    while minute_ns < to_ns {
        let end_ns = minute_ns.saturating_add(MINUTE_NS - 1);
        let mut row = MinuteCoverage {
            minute_ns,
            covered: vec![true; gatherers],
            delivered: vec![0; gatherers],
            merged: 0,
            gap: gaps.iter().any(|g| g.overlaps(minute_ns, end_ns)),
        };
        for u in &effective {
            let interval = GapInterval { from_ns: u.from_ns, to_ns: u.to_ns };
            if interval.overlaps(minute_ns, end_ns)
                && let Some(c) = row.covered.get_mut(usize::from(u.gatherer))
            {
                *c = false;
            }
        }
        for c in counts.iter().filter(|c| c.minute_ns == minute_ns) {
            if let Some(d) = row.delivered.get_mut(usize::from(c.gatherer)) {
                *d += c.delivered;
            }
            row.merged += c.merged;
        }
        out.push(row);
        minute_ns = minute_ns.saturating_add(MINUTE_NS);
    }
    out
}
