//! Property: for random per-gatherer subsets and duplications of one truth sequence, fed in a
//! random interleaving, the merge emits exactly the union-by-maximum of the gatherers' keys.
//!
//! Each case is built from one `u64` seed by a small generator of our own, so a failure prints
//! the seed (in the assertion message and as proptest's minimal input) and `replay(seed)` in a
//! test reproduces it exactly.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use kdp_dedup::limits::MergeLimits;
use kdp_dedup::merge::{Batch, MergeCore};
use kdp_dedup::row::Row;
use kdp_engine::event::Side;
use proptest::prelude::*;
use support::{delta, ticker, trade};

/// xorshift64*: deterministic, seedable, good enough to shuffle test cases.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15 | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// One truth event, small value ranges so identical events are common.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Delta { market: u8, ts: i64, yes: bool, price: u32, change: i64 },
    Ticker { market: u8, ts: i64, bid: u32 },
    Trade { id: u32, ts: i64 },
}

const MARKETS: [&str; 2] = ["KXA-1", "KXB-1"];

fn row(ev: Ev) -> Row {
    match ev {
        Ev::Delta { market, ts, yes, price, change } => delta(
            MARKETS[usize::from(market)],
            ts,
            if yes { Side::Yes } else { Side::No },
            price,
            change,
        ),
        Ev::Ticker { market, ts, bid } => ticker(MARKETS[usize::from(market)], ts, bid),
        Ev::Trade { id, ts } => trade(&format!("trade-{id}"), ts),
    }
}

/// A truth sequence: times never go backwards per market; a market never reports the same
/// ticker (time, content) twice in a row (Kalshi sends a ticker when something changed).
fn truth(rng: &mut Rng) -> Vec<Ev> {
    let len = 1 + rng.below(120) as usize;
    let mut ts = [1_000i64; 2];
    let mut last_ticker: [Option<(i64, u32)>; 2] = [None; 2];
    let mut events = Vec::with_capacity(len);
    let mut next_trade = 0;
    while events.len() < len {
        let m = rng.below(2) as u8;
        let mi = usize::from(m);
        if rng.chance(30) {
            ts[mi] += 1 + rng.below(3) as i64;
        }
        let ev = match rng.below(10) {
            0..=5 => Ev::Delta {
                market: m,
                ts: ts[mi],
                yes: rng.chance(50),
                price: 1 + rng.below(2) as u32,
                change: if rng.chance(50) { 1 } else { -1 },
            },
            6..=8 => {
                let bid = 1 + rng.below(2) as u32;
                if last_ticker[mi] == Some((ts[mi], bid)) {
                    continue;
                }
                last_ticker[mi] = Some((ts[mi], bid));
                Ev::Ticker { market: m, ts: ts[mi], bid }
            }
            _ => {
                next_trade += 1;
                Ev::Trade { id: next_trade, ts: ts[mi] }
            }
        };
        events.push(ev);
    }
    events
}

/// What one gatherer stored: a subset of the truth; an unsequenced ticker frame may be
/// stored twice, back to back. Gatherer 0 is complete in about a third of the cases.
fn gatherer_stream(rng: &mut Rng, truth: &[Ev], complete: bool) -> Vec<Ev> {
    let loss = if complete { 0 } else { rng.below(40) };
    let mut out = Vec::new();
    for &ev in truth {
        if rng.chance(loss) {
            continue;
        }
        out.push(ev);
        if matches!(ev, Ev::Ticker { .. }) && rng.chance(15) {
            out.push(ev);
        }
    }
    out
}

/// Identity of an event without its ordinal.
type Key = Ev;

/// The reference: per gatherer, count each key (tickers equal to the market's previous ticker
/// in that stream are one report); per key the maximum over gatherers.
fn union_by_max(streams: &[Vec<Ev>]) -> BTreeMap<Key, u32> {
    let mut max: BTreeMap<Key, u32> = BTreeMap::new();
    for stream in streams {
        let mut counts: BTreeMap<Key, u32> = BTreeMap::new();
        let mut last_ticker: [Option<Ev>; 2] = [None; 2];
        for &ev in stream {
            match ev {
                Ev::Ticker { market, .. } => {
                    let last = &mut last_ticker[usize::from(market)];
                    if *last == Some(ev) {
                        continue;
                    }
                    *last = Some(ev);
                    *counts.entry(ev).or_default() += 1;
                }
                Ev::Trade { .. } => {
                    counts.insert(ev, 1);
                }
                Ev::Delta { .. } => *counts.entry(ev).or_default() += 1,
            }
        }
        for (key, n) in counts {
            let slot = max.entry(key).or_default();
            *slot = (*slot).max(n);
        }
    }
    max
}

/// Every (key, occ) the merge emitted, with how many times.
fn emitted(batches: &[Batch]) -> BTreeMap<(Key, u32), u32> {
    let mut out: BTreeMap<(Key, u32), u32> = BTreeMap::new();
    let market = |m: &str| MARKETS.iter().position(|x| *x == m).map_or(u8::MAX, |p| p as u8);
    for b in batches {
        for d in &b.deltas {
            let r = &d.row;
            let key = Ev::Delta {
                market: market(&r.market),
                ts: r.ts_exch_ns,
                yes: r.side == Side::Yes,
                price: r.price_micros,
                change: r.delta_centi,
            };
            *out.entry((key, d.occ)).or_default() += 1;
        }
        for t in &b.tickers {
            let r = &t.row;
            let key = Ev::Ticker {
                market: market(&r.market),
                ts: r.ts_exch_ns,
                bid: r.content.yes_bid_micros.unwrap_or(0),
            };
            *out.entry((key, t.occ)).or_default() += 1;
        }
        for t in &b.trades {
            let id = t.row.trade_id.trim_start_matches("trade-").parse().unwrap_or(u32::MAX);
            *out.entry((Ev::Trade { id, ts: t.row.ts_exch_ns }, 0)).or_default() += 1;
        }
    }
    out
}

/// (expected union-by-max, emitted (key, occ) counts, truth if some gatherer was complete).
type Outcome = (BTreeMap<Key, u32>, BTreeMap<(Key, u32), u32>, Option<Vec<Ev>>);

/// Runs one case; returns (expected union-by-max, emitted (key, occ) counts, truth if some
/// gatherer was complete).
fn run(seed: u64, limits: MergeLimits) -> Outcome {
    let mut rng = Rng::new(seed);
    let truth = truth(&mut rng);
    let gatherers = 1 + rng.below(3) as usize;
    let complete = rng.chance(33);
    let streams: Vec<Vec<Ev>> =
        (0..gatherers).map(|g| gatherer_stream(&mut rng, &truth, complete && g == 0)).collect();
    let mut core = MergeCore::new(limits, &vec![0; gatherers]).expect("core");
    let mut next = vec![0usize; gatherers];
    let mut batches = Vec::new();
    let total: usize = streams.iter().map(Vec::len).sum();
    for _ in 0..total {
        // A random gatherer with rows left: readers run at independent speeds.
        let mut g = rng.below(gatherers as u64) as usize;
        while next[g] == streams[g].len() {
            g = (g + 1) % gatherers;
        }
        let ev = streams[g][next[g]];
        next[g] += 1;
        let gseq = next[g] as i64;
        core.push(g as u8, gseq, row(ev)).expect("push");
        if rng.chance(10) {
            batches.extend(core.take_batch());
        }
    }
    batches.extend(core.take_batch());
    for (g, stream) in streams.iter().enumerate() {
        assert_eq!(
            batches.iter().filter_map(|b| b.cursors[g]).max(),
            (!stream.is_empty()).then_some(stream.len() as i64),
            "seed {seed:#x}: gatherer {g}'s cursor must reach its last row"
        );
    }
    (union_by_max(&streams), emitted(&batches), complete.then_some(truth))
}

/// Expected (key, occ) set: occ 0..n for each key's maximum multiplicity n.
fn with_occ(expected: &BTreeMap<Key, u32>) -> BTreeSet<(Key, u32)> {
    expected.iter().flat_map(|(k, n)| (0..*n).map(move |occ| (*k, occ))).collect()
}

fn check_exact(seed: u64) {
    let (expected, emitted, truth) = run(seed, MergeLimits::DEFAULT);
    let twice: Vec<_> = emitted.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "seed {seed:#x}: emitted more than once: {twice:?}");
    let got: BTreeSet<(Key, u32)> = emitted.keys().copied().collect();
    assert_eq!(got, with_occ(&expected), "seed {seed:#x}: merge != union by max");
    if let Some(truth) = truth {
        let mut counts: BTreeMap<Key, u32> = BTreeMap::new();
        for ev in truth {
            *counts.entry(ev).or_default() += 1;
        }
        assert_eq!(expected, counts, "seed {seed:#x}: a complete gatherer must give the truth");
    }
}

/// Tiny index and slack: keys are forgotten early and emitted again, never lost; after the
/// production unique constraint (set semantics on (key, occ)) the result is exact.
fn check_lossless_under_pressure(seed: u64) {
    let limits = MergeLimits { index_keys_max: 3, watermark_slack_ns: 2, batch_rows_max: 8 };
    let (expected, emitted, _) = run(seed, limits);
    let got: BTreeSet<(Key, u32)> = emitted.keys().copied().collect();
    assert_eq!(got, with_occ(&expected), "seed {seed:#x}: lost or invented under pressure");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn merge_is_the_union_by_maximum(seed in any::<u64>()) {
        check_exact(seed);
    }

    #[test]
    fn eviction_pressure_never_loses_or_invents(seed in any::<u64>()) {
        check_lossless_under_pressure(seed);
    }
}

/// Fixed seeds, also run on every build (add a failing seed here when one is found).
#[test]
fn replay() {
    for seed in [0, 1, 0xdead_beef, 0x5eed_0005] {
        check_exact(seed);
        check_lossless_under_pressure(seed);
    }
}
