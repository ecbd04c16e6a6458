//! `kdp verify`'s logic (issue 5 item 7), pure: compares production with the gatherer
//! databases and, when given, the exchange's ground truth, and checks DESIGN §4's invariants.
//!
//! Events are compared by **content** ([`EventKey`]: the §4 identity without `occ`), counted
//! with multiplicity: production holds a content key as often as it has rows with it (occ 0, 1,
//! ...), a gatherer as often as it stored it — except a ticker equal to the previous ticker of its
//! market in that gatherer's stream, which is a duplicated frame, not an event (the merge core's
//! rule; Kalshi sends a ticker only when a field changed).
//!
//! - **lost**: some gatherer stored a key more often than production holds it (invariant 1; with
//!   identical deltas, also invariant 3: two real events merged into one).
//! - **duplicated**: production holds a key more often than the truth (or, without truth, the
//!   most any gatherer stored) allows (invariant 1).
//! - **unexpected**: production holds a key the truth (or, without truth, no gatherer) never had
//!   (invariant 2).
//! - **uncovered missing**: the truth has a key more often than production, and the event's
//!   time lies in no recorded coverage gap of its market (invariant 5). Missing events inside a
//!   gap are counted, not violations: no gatherer listened then.
//!
//! Truth may leave out kinds it cannot render exactly as a gatherer stores them
//! ([`Truth::kinds`]); those are then checked against the gatherers only.

use std::collections::HashMap;
use std::io::{self, Write};
use std::sync::Arc;

use crate::ledger::GapInterval;
use crate::row::{Row, TickerContent};

/// An event's content identity (DESIGN §4 without the occurrence ordinal).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(missing_docs)]
pub enum EventKey {
    Delta { market: Arc<str>, ts_exch_ns: i64, side_yes: bool, price_micros: u32, delta_centi: i64 },
    Trade { trade_id: Box<str> },
    Ticker { market: Arc<str>, ts_exch_ns: i64, content: TickerKey },
    MarketLifecycle { market: Arc<str>, kind: Box<str>, payload: Box<str> },
    EventLifecycle { event_ticker: Box<str>, payload: Box<str> },
}

/// A ticker's content as an ordered tuple (for sorted reports).
pub type TickerKey = [Option<i64>; 11];

/// A ticker's content as a [`TickerKey`].
pub fn ticker_key(c: &TickerContent) -> TickerKey {
    [
        c.price_micros.map(i64::from),
        c.yes_bid_micros.map(i64::from),
        c.yes_ask_micros.map(i64::from),
        c.yes_bid_size_centi,
        c.yes_ask_size_centi,
        c.last_trade_size_centi,
        c.volume_centi,
        c.open_interest_centi,
        c.dollar_volume,
        c.dollar_open_interest,
        c.clock.map(|v| i64::from_ne_bytes(v.to_ne_bytes())),
    ]
}

/// The kinds of event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(missing_docs)]
pub enum Kind {
    Delta,
    Trade,
    Ticker,
    MarketLifecycle,
    EventLifecycle,
}

impl EventKey {
    /// The key of an event row (`None` for snapshots and gap markers).
    pub fn of(row: &Row) -> Option<EventKey> {
        Some(match row {
            Row::Delta(d) => EventKey::Delta {
                market: Arc::clone(&d.market),
                ts_exch_ns: d.ts_exch_ns,
                side_yes: d.side == kdp_engine::event::Side::Yes,
                price_micros: d.price_micros,
                delta_centi: d.delta_centi,
            },
            Row::Trade(t) => EventKey::Trade { trade_id: t.trade_id.clone() },
            Row::Ticker(t) => EventKey::Ticker {
                market: Arc::clone(&t.market),
                ts_exch_ns: t.ts_exch_ns,
                content: ticker_key(&t.content),
            },
            Row::MarketLifecycle(m) => EventKey::MarketLifecycle {
                market: Arc::clone(&m.market),
                kind: m.kind.clone(),
                payload: m.payload.clone(),
            },
            Row::EventLifecycle(e) => EventKey::EventLifecycle {
                event_ticker: e.event_ticker.clone(),
                payload: e.payload.clone(),
            },
            Row::Snapshot(_) | Row::Gap(_) => return None,
        })
    }

    /// Its kind.
    pub fn kind(&self) -> Kind {
        match self {
            EventKey::Delta { .. } => Kind::Delta,
            EventKey::Trade { .. } => Kind::Trade,
            EventKey::Ticker { .. } => Kind::Ticker,
            EventKey::MarketLifecycle { .. } => Kind::MarketLifecycle,
            EventKey::EventLifecycle { .. } => Kind::EventLifecycle,
        }
    }
}

/// One exchange event of the truth: its key, market (if any) and exchange time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TruthEvent {
    /// Content identity.
    pub key: EventKey,
    /// The market it concerns (`None`: an event lifecycle change).
    pub market: Option<Arc<str>>,
    /// Exchange time, ns.
    pub ts_exch_ns: i64,
}

/// The exchange's ground truth.
#[derive(Debug, Clone, Default)]
pub struct Truth {
    /// Every event the exchange sent, in order (identical events appear as often as sent).
    pub events: Vec<TruthEvent>,
    /// The kinds `events` covers completely; other kinds are checked against the gatherers only.
    pub kinds: Vec<Kind>,
}

/// A recorded coverage gap (production's `coverage_gap`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedGap {
    /// The market (`None`: every market).
    pub market: Option<Arc<str>>,
    /// The interval.
    pub interval: GapInterval,
}

/// What verify reads.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// The truth, when there is one.
    pub truth: Option<&'a Truth>,
    /// Each gatherer's stored rows in gseq order (gap markers and snapshots are skipped).
    pub gatherers: &'a [Vec<Row>],
    /// Production's event rows (one key per row).
    pub production: &'a [EventKey],
    /// Production's coverage gaps.
    pub coverage_gaps: &'a [RecordedGap],
}

/// One violation: a key, how often production has it and how often it should.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The event.
    pub key: EventKey,
    /// Rows in production.
    pub production: u64,
    /// Rows expected (truth; else the most any gatherer stored).
    pub expected: u64,
    /// Exchange time, when known (truth).
    pub ts_exch_ns: Option<i64>,
}

/// The verdict.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Report {
    /// Events in the truth (0 without truth).
    pub truth_events: u64,
    /// Event rows in production.
    pub production_events: u64,
    /// Event rows per gatherer (after its own repeats).
    pub gatherer_events: Vec<u64>,
    /// Received by at least one gatherer, missing in production.
    pub lost: Vec<Finding>,
    /// In production more often than allowed.
    pub duplicated: Vec<Finding>,
    /// In production, never sent.
    pub unexpected: Vec<Finding>,
    /// In the truth, missing in production, outside every recorded coverage gap.
    pub uncovered_missing: Vec<Finding>,
    /// Truth events missing from production inside a recorded coverage gap.
    pub missing_in_gaps: u64,
}

impl Report {
    /// Whether every invariant held.
    pub fn ok(&self) -> bool {
        self.lost.is_empty()
            && self.duplicated.is_empty()
            && self.unexpected.is_empty()
            && self.uncovered_missing.is_empty()
    }

    /// The short report: counts, then at most `examples` findings of each class.
    pub fn write_to(&self, w: &mut dyn Write, examples: usize) -> io::Result<()> {
        writeln!(
            w,
            "verify: {} (truth {} events, production {}, gatherers {:?})",
            if self.ok() { "OK" } else { "FAILED" },
            self.truth_events,
            self.production_events,
            self.gatherer_events
        )?;
        writeln!(
            w,
            "  lost {}  duplicated {}  unexpected {}  missing outside coverage gaps {}  missing \
             inside coverage gaps {}",
            self.lost.len(),
            self.duplicated.len(),
            self.unexpected.len(),
            self.uncovered_missing.len(),
            self.missing_in_gaps
        )?;
        for (name, list) in [
            ("lost", &self.lost),
            ("duplicated", &self.duplicated),
            ("unexpected", &self.unexpected),
            ("missing outside coverage gaps", &self.uncovered_missing),
        ] {
            for f in list.iter().take(examples) {
                writeln!(
                    w,
                    "  {name}: {:?} production {} expected {}{}",
                    f.key,
                    f.production,
                    f.expected,
                    f.ts_exch_ns.map_or(String::new(), |t| format!(" at {t} ns"))
                )?;
            }
            if list.len() > examples {
                writeln!(w, "  {name}: … {} more", list.len() - examples)?;
            }
        }
        Ok(())
    }
}

/// How often each gatherer stored each key, after dropping its repeated tickers.
fn gatherer_counts(rows: &[Row]) -> HashMap<EventKey, u64> {
    let mut counts = HashMap::new();
    let mut last_ticker: HashMap<Arc<str>, (i64, TickerContent)> = HashMap::new();
    for row in rows {
        if let Row::Ticker(t) = row {
            let state = (t.ts_exch_ns, t.content);
            if last_ticker.get(&t.market) == Some(&state) {
                continue;
            }
            last_ticker.insert(Arc::clone(&t.market), state);
        }
        if let Some(key) = EventKey::of(row) {
            *counts.entry(key).or_insert(0u64) += 1;
        }
    }
    counts
}

/// Checks the invariants; see the module note. Findings are sorted by key.
pub fn verify(inputs: Inputs<'_>) -> Report {
    let mut report = Report::default();
    let mut production: HashMap<EventKey, u64> = HashMap::new();
    for key in inputs.production {
        *production.entry(key.clone()).or_insert(0) += 1;
    }
    report.production_events = inputs.production.len() as u64;
    let per_gatherer: Vec<HashMap<EventKey, u64>> =
        inputs.gatherers.iter().map(|rows| gatherer_counts(rows)).collect();
    report.gatherer_events = per_gatherer.iter().map(|c| c.values().sum()).collect();
    let mut received: HashMap<&EventKey, u64> = HashMap::new();
    for counts in &per_gatherer {
        for (key, &n) in counts {
            let max = received.entry(key).or_insert(0);
            *max = (*max).max(n);
        }
    }
    // Lost: received more often than production holds.
    for (&key, &n) in &received {
        let p = production.get(key).copied().unwrap_or(0);
        if n > p {
            report.lost.push(Finding {
                key: key.clone(),
                production: p,
                expected: n,
                ts_exch_ns: None,
            });
        }
    }
    // Truth side.
    let mut truth: HashMap<&EventKey, (u64, Option<&Arc<str>>, i64)> = HashMap::new();
    let truth_kinds: &[Kind] = inputs.truth.map_or(&[], |t| &t.kinds);
    if let Some(t) = inputs.truth {
        report.truth_events = t.events.len() as u64;
        for e in &t.events {
            let entry = truth.entry(&e.key).or_insert((0, e.market.as_ref(), e.ts_exch_ns));
            entry.0 += 1;
        }
    }
    let mut gaps: HashMap<Option<&str>, Vec<GapInterval>> = HashMap::new();
    for g in inputs.coverage_gaps {
        gaps.entry(g.market.as_deref()).or_default().push(g.interval);
    }
    let in_gap = |market: Option<&Arc<str>>, ts: i64| {
        let own = market.and_then(|m| gaps.get(&Some(&**m)));
        let every = gaps.get(&None);
        own.into_iter().chain(every).flatten().any(|g| g.contains(ts))
    };
    for (key, &p) in &production {
        let by_truth = truth_kinds.contains(&key.kind());
        let (allowed, ts) = if by_truth {
            truth.get(key).map_or((0, None), |&(n, _, ts)| (n, Some(ts)))
        } else {
            (received.get(key).copied().unwrap_or(0), None)
        };
        let finding =
            Finding { key: key.clone(), production: p, expected: allowed, ts_exch_ns: ts };
        if allowed == 0 {
            report.unexpected.push(finding);
        } else if p > allowed {
            report.duplicated.push(finding);
        }
    }
    for (&key, &(n, market, ts)) in &truth {
        let p = production.get(key).copied().unwrap_or(0);
        if n > p {
            if in_gap(market, ts) {
                report.missing_in_gaps += n - p;
            } else {
                report.uncovered_missing.push(Finding {
                    key: key.clone(),
                    production: p,
                    expected: n,
                    ts_exch_ns: Some(ts),
                });
            }
        }
    }
    for list in [
        &mut report.lost,
        &mut report.duplicated,
        &mut report.unexpected,
        &mut report.uncovered_missing,
    ] {
        list.sort_by(|a, b| a.key.cmp(&b.key));
    }
    report
}
