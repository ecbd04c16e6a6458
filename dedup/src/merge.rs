//! The merge core: the exact semantics of DESIGN §4 over up to [`GATHERERS_MAX`] gatherer
//! streams. Pure and single-owner: no I/O, no clock, no locks; rows in, batches out.
//!
//! ```text
//! reader g ──ring──► push(g, gseq, row) ─► occ (per gatherer, per market) ─► seen-key index
//!                                                 │ new: into the batch; seen: dropped, bit set
//!                                                 ▼
//!                    take_batch() ─► Batch { rows by table, cursor per gatherer } ─► sink
//! ```
//!
//! Identity (DESIGN §4): trade by `trade_id`; delta by (market, ts_exch_ns, side, price,
//! change, occ); ticker by (market, ts_exch_ns, content, occ); market lifecycle by (market,
//! kind, payload) — the payload holds its times; event lifecycle by (event ticker, payload).
//! Snapshots and gap markers are not events: each is kept with its gatherer and gseq.
//!
//! Every row's fate is decided when it is pushed (emitted into the open batch, or dropped
//! because an earlier row — in this batch, an earlier one, or production — carries its key), so
//! a batch's cursor for a gatherer is the last gseq pushed from it. Batches must be committed in
//! the order they were taken.
//!
//! A gatherer's *progress* is the latest exchange time it delivered (deltas, trades, tickers) or
//! that its reader reported ([`MergeCore::note_progress`]); the *watermark* is the slowest live
//! gatherer's progress minus [`MergeLimits::watermark_slack_ns`]. Lifecycle keys have no exchange
//! time and age by their first receive time.

use std::collections::HashMap;
use std::sync::Arc;

use foldhash::fast::FixedState;
use kdp_engine::event::Side;

pub use crate::index::Evictions;
use crate::index::{Seen, SeenIndex};
use crate::limits::{GATHERERS_MAX, MergeLimits};
use crate::occ::{OccCounter, TickerOcc};
use crate::row::{
    Delta, EventLifecycle, Gap, MarketLifecycle, Row, Snapshot, Ticker, TickerContent, Trade,
};

/// A gatherer's number in the merge: 0..[`GATHERERS_MAX`], its bit in the seen-key bitmaps.
pub type GathererId = u8;

/// An emitted event with the gatherer that delivered it first and its occurrence ordinal (0 for
/// kinds without one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged<T> {
    /// The first gatherer to deliver it.
    pub gatherer: GathererId,
    /// Its occurrence ordinal (deltas and tickers; 0 otherwise).
    pub occ: u32,
    /// The row as that gatherer delivered it.
    pub row: T,
}

/// A per-gatherer row (snapshot, gap marker) with its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept<T> {
    /// The gatherer it came from.
    pub gatherer: GathererId,
    /// Its gseq there.
    pub gseq: i64,
    /// The row.
    pub row: T,
}

/// What a batch hands the sink: new rows by table and how far each gatherer was consumed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Batch {
    /// New deltas.
    pub deltas: Vec<Merged<Delta>>,
    /// New trades.
    pub trades: Vec<Merged<Trade>>,
    /// New tickers.
    pub tickers: Vec<Merged<Ticker>>,
    /// New market lifecycle changes.
    pub market_lifecycles: Vec<Merged<MarketLifecycle>>,
    /// New event lifecycle changes.
    pub event_lifecycles: Vec<Merged<EventLifecycle>>,
    /// Snapshots, per gatherer.
    pub snapshots: Vec<Kept<Snapshot>>,
    /// Gap markers, per gatherer.
    pub gaps: Vec<Kept<Gap>>,
    /// For each gatherer consumed since the previous batch: the gseq through which its stream is
    /// decided (`None`: untouched).
    pub cursors: [Option<i64>; GATHERERS_MAX],
}

impl Batch {
    /// Rows to write.
    pub fn rows(&self) -> usize {
        self.deltas.len()
            + self.trades.len()
            + self.tickers.len()
            + self.market_lifecycles.len()
            + self.event_lifecycles.len()
            + self.snapshots.len()
            + self.gaps.len()
    }

    /// Whether it advances no cursor (and so holds no rows).
    pub fn is_empty(&self) -> bool {
        self.cursors.iter().all(Option::is_none)
    }
}

/// What happened to one pushed row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// First delivery: it is in the open batch.
    Emitted,
    /// Another gatherer (or production) delivered it already.
    Duplicate,
    /// This gatherer delivered it already (a duplicated ticker frame, a re-read).
    Repeat,
    /// A snapshot or gap marker: kept with its gatherer.
    Kept,
}

/// A key read back from production to rebuild the index on start.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum ProductionKey {
    Delta {
        market: Arc<str>,
        ts_exch_ns: i64,
        side: Side,
        price_micros: u32,
        delta_centi: i64,
        occ: u32,
    },
    Trade {
        trade_id: Box<str>,
        ts_exch_ns: i64,
    },
    Ticker {
        market: Arc<str>,
        ts_exch_ns: i64,
        content: TickerContent,
        occ: u32,
    },
    MarketLifecycle {
        market: Arc<str>,
        kind: Box<str>,
        payload: Box<str>,
        ts_recv_ns: i64,
    },
    EventLifecycle {
        event_ticker: Box<str>,
        payload: Box<str>,
        ts_recv_ns: i64,
    },
}

/// Misuse of the core by its caller (a reader bug); the row was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    /// The gatherer id is not one the core was built with.
    #[error("gatherer {gatherer} is unknown: the merge core has gatherers 0..{count}")]
    UnknownGatherer {
        /// The id pushed.
        gatherer: GathererId,
        /// How many the core has.
        count: usize,
    },
    /// A gatherer's rows must come in strictly increasing gseq order.
    #[error(
        "gatherer {gatherer}: gseq {gseq} pushed after {last}; a reader must stream each \
         gatherer in gseq order from its cursor"
    )]
    GseqNotIncreasing {
        /// The gatherer.
        gatherer: GathererId,
        /// The gseq pushed.
        gseq: i64,
        /// The last gseq taken from it.
        last: i64,
    },
    /// A core takes at most [`GATHERERS_MAX`] gatherers.
    #[error("{0} gatherers: a merge core takes 1..=8")]
    GathererCount(usize),
    /// The limits are unusable.
    #[error("invalid merge limits: {0}")]
    Limits(String),
}

/// Counters, cumulative since the core was built.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MergeStats {
    /// Rows pushed, per gatherer.
    pub rows_in: [u64; GATHERERS_MAX],
    /// Events emitted (first deliveries).
    pub emitted: u64,
    /// Rows dropped because another gatherer or production delivered them first.
    pub duplicates: u64,
    /// Rows dropped because their own gatherer delivered them already.
    pub repeats: u64,
    /// Snapshots and gap markers kept.
    pub kept: u64,
    /// Rows whose exchange time went backwards within their market (see the `occ` module).
    pub order_violations: u64,
    /// Index evictions by cause, all kinds together.
    pub evictions: Evictions,
    /// Keys held now, all kinds together.
    pub index_keys: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct DeltaKey {
    ts_exch_ns: i64,
    delta_centi: i64,
    market: u32,
    price_micros: u32,
    occ: u32,
    side: Side,
}

/// A trade id: a canonical (lowercase, hyphenated) UUID packed into 128 bits, which maps one to
/// one onto its text, or the text itself for anything else.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum TradeKey {
    Uuid(u128),
    Text(Box<str>),
}

impl TradeKey {
    fn of(id: &str) -> TradeKey {
        parse_canonical_uuid(id).map_or_else(|| TradeKey::Text(id.into()), TradeKey::Uuid)
    }
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` in lowercase hex, else `None`.
fn parse_canonical_uuid(id: &str) -> Option<u128> {
    let bytes = id.as_bytes();
    if bytes.len() != 36 {
        return None;
    }
    let mut value: u128 = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            if b != b'-' {
                return None;
            }
            continue;
        }
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => return None,
        };
        value = (value << 4) | u128::from(digit);
    }
    Some(value)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct TickerKey {
    ts_exch_ns: i64,
    market: u32,
    occ: u32,
    content: TickerContent,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct MarketLifecycleKey {
    market: u32,
    kind: Box<str>,
    payload: Box<str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct EventLifecycleKey {
    event_ticker: Box<str>,
    payload: Box<str>,
}

#[derive(Debug)]
struct GathererState {
    occ: OccCounter,
    markets: MarketCache,
    /// The last gseq taken (the cursor the core started from, before any).
    last_gseq: i64,
    /// Whether rows were taken since the last batch.
    advanced: bool,
    /// Latest exchange time delivered or reported, ns (`i64::MIN`: none yet).
    progress_ns: i64,
}

/// The merge core. Build it with the production cursors, rebuild its index with
/// [`MergeCore::load_production`], prime occurrence state with [`MergeCore::prime`], then feed
/// it with [`MergeCore::push`] and drain it with [`MergeCore::take_batch`].
#[derive(Debug)]
pub struct MergeCore {
    limits: MergeLimits,
    markets: HashMap<Arc<str>, u32, FixedState>,
    gatherers: Vec<GathererState>,
    live: u8,
    deltas: SeenIndex<DeltaKey>,
    trades: SeenIndex<TradeKey>,
    tickers: SeenIndex<TickerKey>,
    market_lifecycles: SeenIndex<MarketLifecycleKey>,
    event_lifecycles: SeenIndex<EventLifecycleKey>,
    batch: Batch,
    stats: MergeStats,
}

/// A gatherer's market ids by the address of its `Arc<str>`: a reader interns its tickers (one
/// `Arc<str>` per market, as gatherer shards do), so most rows find their id by one integer
/// lookup instead of hashing and comparing the text. The cache holds a clone of each `Arc`, so
/// an address cannot be reused for another ticker while it is cached.
#[derive(Debug, Default)]
struct MarketCache {
    by_address: HashMap<usize, (Arc<str>, u32), FixedState>,
}

impl MarketCache {
    /// The id of `market`, through the cache, else the interner.
    fn id(&mut self, markets: &mut HashMap<Arc<str>, u32, FixedState>, market: &Arc<str>) -> u32 {
        let address = Arc::as_ptr(market).cast::<u8>().addr();
        if let Some((_, id)) = self.by_address.get(&address) {
            return *id;
        }
        let id = intern(markets, market);
        // A reader that does not intern makes every row a new address: bound the cache.
        if self.by_address.len() >= 2 * markets.len() + MARKET_CACHE_SLACK {
            self.by_address.clear();
        }
        self.by_address.insert(address, (Arc::clone(market), id));
        id
    }
}

/// Cache entries beyond twice the market count before a cache is cleared.
const MARKET_CACHE_SLACK: usize = 1024;

/// The market's id, interning it on first sight.
fn intern(markets: &mut HashMap<Arc<str>, u32, FixedState>, market: &Arc<str>) -> u32 {
    if let Some(&id) = markets.get(&**market) {
        return id;
    }
    let id = u32::try_from(markets.len()).unwrap_or(u32::MAX);
    markets.insert(Arc::clone(market), id);
    id
}

impl MergeCore {
    /// A core for `cursors.len()` gatherers (ids 0, 1, ...), each resuming after its production
    /// cursor (0: from the start). All start live.
    pub fn new(limits: MergeLimits, cursors: &[i64]) -> Result<MergeCore, MergeError> {
        limits.check().map_err(MergeError::Limits)?;
        if cursors.is_empty() || cursors.len() > GATHERERS_MAX {
            return Err(MergeError::GathererCount(cursors.len()));
        }
        let gatherers = cursors
            .iter()
            .map(|&last_gseq| GathererState {
                occ: OccCounter::default(),
                markets: MarketCache::default(),
                last_gseq,
                advanced: false,
                progress_ns: i64::MIN,
            })
            .collect();
        let keys = limits.index_keys_max;
        Ok(MergeCore {
            limits,
            markets: HashMap::with_hasher(FixedState::default()),
            gatherers,
            live: u8::MAX >> (GATHERERS_MAX - cursors.len()),
            deltas: SeenIndex::new(keys),
            trades: SeenIndex::new(keys),
            tickers: SeenIndex::new(keys),
            market_lifecycles: SeenIndex::new(keys),
            event_lifecycles: SeenIndex::new(keys),
            batch: Batch::default(),
            stats: MergeStats::default(),
        })
    }

    fn state(&mut self, gatherer: GathererId) -> Result<&mut GathererState, MergeError> {
        let count = self.gatherers.len();
        self.gatherers
            .get_mut(usize::from(gatherer))
            .ok_or(MergeError::UnknownGatherer { gatherer, count })
    }

    /// Marks a gatherer live (its reader is connected and streaming) or not. Keys wait for the
    /// bits of live gatherers only, and only live gatherers hold the watermark back.
    pub fn set_live(&mut self, gatherer: GathererId, live: bool) -> Result<(), MergeError> {
        self.state(gatherer)?;
        let bit = 1u8 << gatherer;
        self.live = if live { self.live | bit } else { self.live & !bit };
        Ok(())
    }

    /// A reader's report that its gatherer has delivered everything up to exchange time `ts_ns`
    /// (e.g. it is caught up and the gatherer's latest row is that recent): lets the watermark
    /// advance over a quiet stream.
    pub fn note_progress(&mut self, gatherer: GathererId, ts_ns: i64) -> Result<(), MergeError> {
        let state = self.state(gatherer)?;
        state.progress_ns = state.progress_ns.max(ts_ns);
        Ok(())
    }

    /// Remembers a key already in production (read back for the watermark window on start):
    /// a gatherer delivering it later is a duplicate.
    pub fn load_production(&mut self, key: ProductionKey) {
        let live = self.live;
        match key {
            ProductionKey::Delta { market, ts_exch_ns, side, price_micros, delta_centi, occ } => {
                let market = intern(&mut self.markets, &market);
                let key = DeltaKey { ts_exch_ns, delta_centi, market, price_micros, occ, side };
                self.deltas.observe(key, ts_exch_ns, 0, live);
            }
            ProductionKey::Trade { trade_id, ts_exch_ns } => {
                self.trades.observe(TradeKey::of(&trade_id), ts_exch_ns, 0, live);
            }
            ProductionKey::Ticker { market, ts_exch_ns, content, occ } => {
                let market = intern(&mut self.markets, &market);
                let key = TickerKey { ts_exch_ns, market, occ, content };
                self.tickers.observe(key, ts_exch_ns, 0, live);
            }
            ProductionKey::MarketLifecycle { market, kind, payload, ts_recv_ns } => {
                let market = intern(&mut self.markets, &market);
                let key = MarketLifecycleKey { market, kind, payload };
                self.market_lifecycles.observe(key, ts_recv_ns, 0, live);
            }
            ProductionKey::EventLifecycle { event_ticker, payload, ts_recv_ns } => {
                let key = EventLifecycleKey { event_ticker, payload };
                self.event_lifecycles.observe(key, ts_recv_ns, 0, live);
            }
        }
    }

    /// Replays a row a gatherer delivered *at or before* its cursor through that gatherer's
    /// occurrence state only (nothing is emitted, the cursor does not move). After a restart a
    /// reader primes each gatherer with its rows from the slack window before the cursor, so a
    /// run of identical deltas cut by the cursor keeps numbering where it left off.
    pub fn prime(&mut self, gatherer: GathererId, row: &Row) -> Result<(), MergeError> {
        let count = self.gatherers.len();
        let state = self
            .gatherers
            .get_mut(usize::from(gatherer))
            .ok_or(MergeError::UnknownGatherer { gatherer, count })?;
        match row {
            Row::Delta(d) => {
                let market = state.markets.id(&mut self.markets, &d.market);
                state.occ.delta(market, d.ts_exch_ns, d.side, d.price_micros, d.delta_centi);
            }
            Row::Ticker(t) => {
                let market = state.markets.id(&mut self.markets, &t.market);
                state.occ.ticker(market, t.ts_exch_ns, &t.content);
            }
            _ => {}
        }
        Ok(())
    }

    /// Takes the next row of `gatherer`'s stream (`gseq` above every earlier one) and decides it.
    pub fn push(&mut self, gatherer: GathererId, gseq: i64, row: Row) -> Result<Fate, MergeError> {
        let count = self.gatherers.len();
        let Some(state) = self.gatherers.get_mut(usize::from(gatherer)) else {
            return Err(MergeError::UnknownGatherer { gatherer, count });
        };
        if gseq <= state.last_gseq {
            return Err(MergeError::GseqNotIncreasing { gatherer, gseq, last: state.last_gseq });
        }
        state.last_gseq = gseq;
        state.advanced = true;
        self.stats.rows_in[usize::from(gatherer)] += 1;
        let bit = 1u8 << gatherer;
        let live = self.live;
        let batch = &mut self.batch;
        let (seen, emit): (Seen, Option<Emit>) = match row {
            Row::Delta(d) => {
                let market = state.markets.id(&mut self.markets, &d.market);
                let occ =
                    state.occ.delta(market, d.ts_exch_ns, d.side, d.price_micros, d.delta_centi);
                state.progress_ns = state.progress_ns.max(d.ts_exch_ns);
                let key = DeltaKey {
                    ts_exch_ns: d.ts_exch_ns,
                    delta_centi: d.delta_centi,
                    market,
                    price_micros: d.price_micros,
                    occ,
                    side: d.side,
                };
                let seen = self.deltas.observe(key, d.ts_exch_ns, bit, live);
                if seen == Seen::New {
                    batch.deltas.push(Merged { gatherer, occ, row: d });
                }
                (seen, None)
            }
            Row::Trade(t) => {
                state.progress_ns = state.progress_ns.max(t.ts_exch_ns);
                let seen = self.trades.observe(TradeKey::of(&t.trade_id), t.ts_exch_ns, bit, live);
                (seen, Some(Emit::Trade(t)))
            }
            Row::Ticker(t) => {
                let market = state.markets.id(&mut self.markets, &t.market);
                state.progress_ns = state.progress_ns.max(t.ts_exch_ns);
                match state.occ.ticker(market, t.ts_exch_ns, &t.content) {
                    TickerOcc::Repeat => (Seen::Repeat, None),
                    TickerOcc::Occ(occ) => {
                        let key =
                            TickerKey { ts_exch_ns: t.ts_exch_ns, market, occ, content: t.content };
                        let seen = self.tickers.observe(key, t.ts_exch_ns, bit, live);
                        (seen, Some(Emit::Ticker(occ, t)))
                    }
                }
            }
            Row::MarketLifecycle(m) => {
                let market = state.markets.id(&mut self.markets, &m.market);
                let key =
                    MarketLifecycleKey { market, kind: m.kind.clone(), payload: m.payload.clone() };
                let seen = self.market_lifecycles.observe(key, m.ts_recv_ns, bit, live);
                (seen, Some(Emit::MarketLifecycle(m)))
            }
            Row::EventLifecycle(e) => {
                let key = EventLifecycleKey {
                    event_ticker: e.event_ticker.clone(),
                    payload: e.payload.clone(),
                };
                let seen = self.event_lifecycles.observe(key, e.ts_recv_ns, bit, live);
                (seen, Some(Emit::EventLifecycle(e)))
            }
            Row::Snapshot(s) => {
                batch.snapshots.push(Kept { gatherer, gseq, row: *s });
                self.stats.kept += 1;
                return Ok(Fate::Kept);
            }
            Row::Gap(g) => {
                batch.gaps.push(Kept { gatherer, gseq, row: *g });
                self.stats.kept += 1;
                return Ok(Fate::Kept);
            }
        };
        Ok(match seen {
            Seen::New => {
                match emit {
                    Some(Emit::Trade(t)) => batch.trades.push(Merged { gatherer, occ: 0, row: *t }),
                    Some(Emit::Ticker(occ, t)) => {
                        batch.tickers.push(Merged { gatherer, occ, row: *t })
                    }
                    Some(Emit::MarketLifecycle(m)) => {
                        batch.market_lifecycles.push(Merged { gatherer, occ: 0, row: *m })
                    }
                    Some(Emit::EventLifecycle(e)) => {
                        batch.event_lifecycles.push(Merged { gatherer, occ: 0, row: *e })
                    }
                    None => {}
                }
                self.stats.emitted += 1;
                Fate::Emitted
            }
            Seen::Again => {
                self.stats.duplicates += 1;
                Fate::Duplicate
            }
            Seen::Repeat => {
                self.stats.repeats += 1;
                Fate::Repeat
            }
        })
    }

    /// Whether the open batch reached [`MergeLimits::batch_rows_max`]: take it before pushing
    /// more (a reader's ring then fills and its reader waits: backpressure, never loss).
    pub fn batch_full(&self) -> bool {
        self.batch.rows() >= self.limits.batch_rows_max
    }

    /// Rows in the open batch.
    pub fn batch_rows(&self) -> usize {
        self.batch.rows()
    }

    /// Closes the open batch: its rows and, for each gatherer pushed since the last batch, the
    /// gseq through which it is decided. `None` when nothing was pushed. Then evicts keys behind
    /// the watermark.
    pub fn take_batch(&mut self) -> Option<Batch> {
        let mut cursors = [None; GATHERERS_MAX];
        for (cursor, state) in cursors.iter_mut().zip(self.gatherers.iter_mut()) {
            if state.advanced {
                *cursor = Some(state.last_gseq);
                state.advanced = false;
            }
        }
        let batch = if cursors.iter().any(Option::is_some) {
            let mut batch = std::mem::take(&mut self.batch);
            batch.cursors = cursors;
            // Deltas are most rows: size the next batch's once rather than grow it by doubling.
            self.batch.deltas.reserve(self.limits.batch_rows_max);
            Some(batch)
        } else {
            None
        };
        if let Some(watermark_ns) = self.watermark_ns() {
            self.deltas.evict_before(watermark_ns);
            self.trades.evict_before(watermark_ns);
            self.tickers.evict_before(watermark_ns);
            self.market_lifecycles.evict_before(watermark_ns);
            self.event_lifecycles.evict_before(watermark_ns);
        }
        batch
    }

    /// The slowest live gatherer's progress minus the slack; `None` while no gatherer is live.
    pub fn watermark_ns(&self) -> Option<i64> {
        self.gatherers
            .iter()
            .enumerate()
            .filter(|(g, _)| self.live & (1u8 << g) != 0)
            .map(|(_, s)| s.progress_ns)
            .min()
            .map(|p| p.saturating_sub(self.limits.watermark_slack_ns))
    }

    /// The counters so far.
    pub fn stats(&self) -> MergeStats {
        let mut stats = self.stats.clone();
        stats.order_violations = self.gatherers.iter().map(|g| g.occ.order_violations).sum();
        let mut evictions = Evictions::default();
        for e in [
            self.deltas.evictions,
            self.trades.evictions,
            self.tickers.evictions,
            self.market_lifecycles.evictions,
            self.event_lifecycles.evictions,
        ] {
            evictions.full += e.full;
            evictions.watermark += e.watermark;
            evictions.limit += e.limit;
        }
        stats.evictions = evictions;
        stats.index_keys = self.deltas.len()
            + self.trades.len()
            + self.tickers.len()
            + self.market_lifecycles.len()
            + self.event_lifecycles.len();
        stats
    }
}

/// A row waiting for its index's verdict.
enum Emit {
    Trade(Box<Trade>),
    Ticker(u32, Box<Ticker>),
    MarketLifecycle(Box<MarketLifecycle>),
    EventLifecycle(Box<EventLifecycle>),
}
