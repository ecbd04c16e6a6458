//! The exchange: a pure, seeded market engine in virtual time. It owns the catalog (series,
//! events, markets), one two-sided book per market, the order flow that moves them, the
//! lifecycle schedule, and the recent-trade ring; the protocol layer pulls [`ExchEvent`]s from it
//! ([`Exchange::next_event`] or a whole order action at a time with [`Exchange::next_batch`]) and
//! queries it for snapshots and REST answers.
//!
//! # The model
//! - Time: virtual ns. Each order action happens at one instant; after an action that produced
//!   `k` events the clock advances by `k` exponential inter-arrival draws of mean
//!   `1 s / rate_msgs_per_s`, so the long-run event rate is the configured one. Exchange times
//!   are the virtual time truncated to µs (or to whole seconds in legacy mode). Lifecycle actions
//!   run at their scheduled instants between order actions.
//! - Activity: each market has a Zipf-like weight (`scale / (1 + k)`, `k` uniform), sampled
//!   through a Fenwick tree; only `Active` markets carry weight.
//! - An order action on a market is one of: a resting bid near the top of one ladder
//!   (`Delta` +size), a cancel (`Delta` −size, never more than rests), or a crossing bid that
//!   trades against the other ladder (`Trade`s at the resting prices, then the resting side's
//!   `Delta`s, then a `Delta` for any remainder that rests), then at most one `Ticker` if the
//!   ticker state changed. All events of one action share its exchange time. Every taker buys
//!   an outcome, so trades report `taker_book_side = Ask`.
//! - Lifecycle: markets are created (`EventCreated`, `Created`), open (`Activated`), may pause
//!   (`Deactivated`, `Activated`) or have their close moved (`CloseDateUpdated`), stop trading at
//!   their close time (status `Closed`, no event, as on Kalshi), then `Determined` and `Settled`.
//!   When the last market of an event settles, its series lists a new event, so the live catalog
//!   keeps its size. Books are left as they were at close (no deltas after close).
//!
//! Queries (`book`, `market`, ...) reflect every event of the latest order action, including
//! events of it not yet pulled; pull whole actions with `next_batch` when a snapshot must match
//! the stream exactly.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};

use super::book::Book;
use super::catalog::{SeriesNaming, make_series};
use super::config::{
    ACTIVITY_WEIGHT_SCALE, ConfigError, LEVELS_PER_SIDE_MAX, MarketConfig, SWEEP_LEVELS_MAX,
    TRADES_RECENT_MAX,
};
use super::model::{
    BookLevels, BookSide, DOLLAR_MICROS, EventId, EventInfo, ExchEvent, ExchEventKind,
    LifecycleFields, LifecycleKind, MarketId, MarketInfo, MarketStatus, PriceGrid, SeriesId,
    SeriesInfo, Side, TickerState,
};
use super::rng::{PPM, Rng};
use super::weights::Weights;

const NS_PER_S: i64 = 1_000_000_000;
const NS_PER_US: i64 = 1_000;

/// Share (ppm) of order actions that cross the spread: Kalshi books see many more quotes and
/// cancels than trades.
const CROSS_PPM: u64 = 100_000;
/// Share (ppm) of order actions that cancel (the rest add): slightly below adds plus trades so
/// books stay populated.
const CANCEL_PPM: u64 = 400_000;
/// Share (ppm) of cancels that remove a whole level.
const CANCEL_WHOLE_LEVEL_PPM: u32 = 400_000;
/// Share (ppm) of crossing orders whose unfilled remainder rests (the rest are immediate-or-cancel).
const REMAINDER_RESTS_PPM: u32 = 500_000;
/// Share (ppm) of trades that open new positions (open interest up); the rest close positions.
const TRADE_OPENS_PPM: u32 = 600_000;
/// Order sizes in whole contracts, drawn uniformly: many small orders, a heavy tail of big ones.
const SIZE_TABLE_CONTRACTS: [i64; 32] = [
    1, 1, 2, 3, 5, 5, 10, 10, 10, 15, 20, 25, 25, 50, 50, 75, 100, 100, 150, 200, 250, 300, 500,
    500, 750, 1_000, 1_000, 1_500, 2_500, 5_000, 10_000, 25_000,
];
/// Levels per ladder of an initial book: `INITIAL_LEVELS_MIN..=INITIAL_LEVELS_MAX`.
const INITIAL_LEVELS_MIN: u64 = 2;
/// See [`INITIAL_LEVELS_MIN`].
const INITIAL_LEVELS_MAX: u64 = 12;
/// A market's initial fair YES price lies in `FAIR_MIN_MICROS..=FAIR_MAX_MICROS`.
const FAIR_MIN_MICROS: u64 = 50_000;
/// See [`FAIR_MIN_MICROS`].
const FAIR_MAX_MICROS: u64 = 950_000;
/// A close-date update moves the close later by 60 s up to this many seconds.
const CLOSE_MOVE_S_MAX: u64 = 3_600;
/// Hundredths per contract.
const CENTI: i64 = 100;
/// Dollar-notional divisor: `size_centi × price_micros / 1e8` is whole dollars.
const NOTIONAL_PER_DOLLAR: i128 = 100 * 1_000_000;

/// A lifecycle step scheduled for a market.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    Open,
    Pause,
    Resume,
    MoveClose,
    Close,
    Determine,
    Settle,
}

/// A scheduled lifecycle step; ordered by time, then by scheduling order (deterministic ties).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Scheduled {
    due_ns: i64,
    order: u64,
    market: MarketId,
    action: Action,
}

/// Per-market engine state kept apart from the catalog entry (hot in the order-flow path).
#[derive(Debug, Clone)]
struct MarketState {
    book: Book,
    grid: PriceGrid,
    fractional: bool,
    /// Fair YES price the order flow gravitates around (the last trade, once there is one).
    fair_micros: u32,
    /// Activity weight while active.
    activity: u64,
    /// Traded notional in hundredths × micro-dollars.
    notional: i128,
}

/// One trade in the recent-trade ring (REST `/markets/trades`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecentTrade {
    /// Position in the run's trades, 1, 2, 3, ... (the paging cursor).
    pub ordinal: u64,
    /// The `Trade` event's exchange sequence.
    pub exch_seq: u64,
    /// Exchange time.
    pub ts_ns: i64,
    /// Market.
    pub market: MarketId,
    /// Trade id.
    pub trade_id: [u8; 16],
    /// YES price.
    pub yes_price_micros: u32,
    /// Contracts.
    pub count_centi: i64,
    /// The outcome the taker bought.
    pub taker_side: Side,
    /// The book side the taker hit.
    pub taker_book_side: BookSide,
}

/// Which recent trades a page lists.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TradeQuery {
    /// Only this market.
    pub market: Option<MarketId>,
    /// Only trades at or after this time.
    pub min_ts_ns: Option<i64>,
    /// Only trades at or before this time.
    pub max_ts_ns: Option<i64>,
}

/// One page of recent trades, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TradePage {
    /// The trades.
    pub trades: Vec<RecentTrade>,
    /// Pass back to get the next (older) page; `None` on the last page.
    pub cursor: Option<u64>,
}

/// Counters of what the engine produced (for tests and reports).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Order actions run.
    pub order_actions: u64,
    /// Deltas emitted as exact repeats of the previous one (`identical_delta_ppm`).
    pub identical_deltas: u64,
    /// Trades emitted.
    pub trades: u64,
    /// Lifecycle events emitted (`MarketLifecycle` and `EventCreated`).
    pub lifecycle_events: u64,
    /// Events created after the start (replacements).
    pub events_spawned: u64,
}

/// The simulated exchange.
#[derive(Debug)]
pub struct Exchange {
    cfg: MarketConfig,
    rng: Rng,
    series: Vec<SeriesInfo>,
    naming: Vec<SeriesNaming>,
    events: Vec<EventInfo>,
    /// Markets of each event not yet settled.
    event_live: Vec<u32>,
    markets: Vec<MarketInfo>,
    state: Vec<MarketState>,
    market_by_ticker: HashMap<String, MarketId>,
    event_by_ticker: HashMap<String, EventId>,
    series_by_ticker: HashMap<String, SeriesId>,
    weights: Weights,
    schedule: BinaryHeap<Reverse<Scheduled>>,
    schedule_order: u64,
    /// Virtual time of the current action.
    clock_ns: i64,
    /// Virtual time of the next order action.
    next_flow_ns: i64,
    /// Mean inter-arrival time per event, ns in Q32.
    mean_gap_ns_q32: u64,
    /// Events of the current action not yet pulled.
    pending: VecDeque<ExchEvent>,
    /// Sequence of the last event generated.
    gen_seq: u64,
    /// Sequence and time of the last event pulled.
    last_seq: u64,
    last_ts_ns: i64,
    trades: VecDeque<RecentTrade>,
    trades_total: u64,
    stats: EngineStats,
}

/// The phase an initial event starts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InitialPhase {
    Unopened,
    Active,
    Closed,
    Determined,
    Settled,
}

impl Exchange {
    /// Builds the initial catalog and books for `cfg`.
    ///
    /// # Panics
    /// If `cfg` is invalid (see [`MarketConfig::validate`]); use [`Exchange::try_new`] to get the
    /// error instead.
    pub fn new(cfg: MarketConfig) -> Exchange {
        match Self::try_new(cfg) {
            Ok(x) => x,
            Err(e) => panic!("{e}"),
        }
    }

    /// Builds the initial catalog and books, or says which config field is out of range.
    pub fn try_new(cfg: MarketConfig) -> Result<Exchange, ConfigError> {
        cfg.validate()?;
        let mean_gap_ns_q32 =
            ((u128::from(NS_PER_S as u64) << 32) / u128::from(cfg.rate_msgs_per_s)) as u64;
        let mut x = Exchange {
            rng: Rng::new(cfg.seed),
            series: Vec::new(),
            naming: Vec::new(),
            events: Vec::new(),
            event_live: Vec::new(),
            markets: Vec::with_capacity(cfg.markets),
            state: Vec::with_capacity(cfg.markets),
            market_by_ticker: HashMap::with_capacity(cfg.markets),
            event_by_ticker: HashMap::new(),
            series_by_ticker: HashMap::new(),
            weights: Weights::with_capacity(cfg.markets),
            schedule: BinaryHeap::new(),
            schedule_order: 0,
            clock_ns: cfg.start_ts_ns,
            next_flow_ns: cfg.start_ts_ns,
            mean_gap_ns_q32,
            pending: VecDeque::new(),
            gen_seq: 0,
            last_seq: 0,
            last_ts_ns: cfg.start_ts_ns,
            trades: VecDeque::with_capacity(TRADES_RECENT_MAX),
            trades_total: 0,
            stats: EngineStats::default(),
            cfg,
        };
        x.build_initial_catalog();
        x.next_flow_ns = x.cfg.start_ts_ns + x.gap_ns(1);
        Ok(x)
    }

    // ---- queries -------------------------------------------------------------------------

    /// The configuration.
    pub fn config(&self) -> &MarketConfig {
        &self.cfg
    }

    /// Both ladders of `market`, ascending (best last); `depth` keeps the best N of each.
    ///
    /// # Panics
    /// If `market` is not in the catalog.
    pub fn book(&self, market: MarketId, depth: Option<usize>) -> BookLevels {
        self.state[market as usize].book.levels(depth)
    }

    /// The catalog entry of `market`, with its current status and ticker state.
    ///
    /// # Panics
    /// If `market` is not in the catalog.
    pub fn market(&self, market: MarketId) -> &MarketInfo {
        &self.markets[market as usize]
    }

    /// Every market, indexed by [`MarketId`].
    pub fn markets(&self) -> &[MarketInfo] {
        &self.markets
    }

    /// Every event, indexed by [`EventId`].
    pub fn events(&self) -> &[EventInfo] {
        &self.events
    }

    /// Every series, indexed by [`SeriesId`].
    pub fn series(&self) -> &[SeriesInfo] {
        &self.series
    }

    /// The market with this ticker.
    pub fn market_id(&self, ticker: &str) -> Option<MarketId> {
        self.market_by_ticker.get(ticker).copied()
    }

    /// The event with this ticker.
    pub fn event_id(&self, ticker: &str) -> Option<EventId> {
        self.event_by_ticker.get(ticker).copied()
    }

    /// The series with this ticker.
    pub fn series_id(&self, ticker: &str) -> Option<SeriesId> {
        self.series_by_ticker.get(ticker).copied()
    }

    /// The lifecycle fields of `market` as of the latest event pulled: call it right after
    /// pulling a `MarketLifecycle` event to get that event's fields.
    ///
    /// # Panics
    /// If `market` is not in the catalog.
    pub fn lifecycle_fields(&self, market: MarketId) -> LifecycleFields {
        let m = &self.markets[market as usize];
        LifecycleFields {
            open_ts_ns: m.open_ts_ns,
            close_ts_ns: m.close_ts_ns,
            determined_ts_ns: m.determined_ts_ns,
            settled_ts_ns: m.settled_ts_ns,
            result: m.result,
            settlement_value_micros: m
                .result
                .map(|r| if r == Side::Yes { DOLLAR_MICROS } else { 0 }),
            is_deactivated: m.status == MarketStatus::Inactive,
        }
    }

    /// Recent trades (the last [`TRADES_RECENT_MAX`]) matching `query`, newest first, at most
    /// `limit`, older than `cursor` (a cursor from the previous page; `None` = newest).
    pub fn trades_page(&self, query: &TradeQuery, cursor: Option<u64>, limit: usize) -> TradePage {
        let Some(front) = self.trades.front() else {
            return TradePage { trades: Vec::new(), cursor: None };
        };
        let end = match cursor {
            Some(c) => (c.saturating_sub(front.ordinal) as usize).min(self.trades.len()),
            None => self.trades.len(),
        };
        let mut trades = Vec::with_capacity(limit.min(end));
        let mut next = None;
        for t in self.trades.range(..end).rev() {
            if query.market.is_some_and(|m| m != t.market)
                || query.min_ts_ns.is_some_and(|min| t.ts_ns < min)
                || query.max_ts_ns.is_some_and(|max| t.ts_ns > max)
            {
                continue;
            }
            if trades.len() == limit {
                next = trades.last().map(|l: &RecentTrade| l.ordinal);
                break;
            }
            trades.push(*t);
        }
        TradePage { trades, cursor: next }
    }

    /// Virtual time of the last event pulled (the start time before any).
    pub fn now_ns(&self) -> i64 {
        self.last_ts_ns
    }

    /// Sequence of the last event pulled (0 before any).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Counters of what was produced so far (including events generated but not yet pulled).
    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    // ---- the pull API --------------------------------------------------------------------

    /// The next exchange event: `exch_seq` 1, 2, 3, ...; exchange times non-decreasing.
    pub fn next_event(&mut self) -> ExchEvent {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                debug_assert_eq!(ev.exch_seq, self.last_seq + 1);
                debug_assert!(ev.ts_ns >= self.last_ts_ns);
                self.last_seq = ev.exch_seq;
                self.last_ts_ns = ev.ts_ns;
                return ev;
            }
            self.step();
        }
    }

    /// Appends the rest of the current action's events to `out` (all of the next action's if
    /// none is pending): afterwards the queries match the stream pulled so far exactly.
    pub fn next_batch(&mut self, out: &mut Vec<ExchEvent>) {
        out.push(self.next_event());
        while !self.pending.is_empty() {
            out.push(self.next_event());
        }
    }

    /// Runs the next action (a lifecycle step or an order action), which may emit no event.
    fn step(&mut self) {
        let flow_possible = self.weights.total() > 0;
        match self.schedule.peek() {
            Some(&Reverse(s)) if !flow_possible || s.due_ns <= self.next_flow_ns => {
                self.schedule.pop();
                self.clock_ns = self.clock_ns.max(s.due_ns);
                self.run_lifecycle(s);
                self.next_flow_ns = self.next_flow_ns.max(self.clock_ns);
            }
            None if !flow_possible => {
                // Nothing trades and nothing is scheduled (e.g. a tiny catalog that started
                // settled): list a new event so the run goes on.
                let s = self.rng.below(self.series.len() as u64) as SeriesId;
                self.spawn_event(s, self.clock_ns, true, InitialPhase::Unopened);
                self.stats.events_spawned += 1;
            }
            _ => {
                self.clock_ns = self.next_flow_ns;
                let before = self.pending.len();
                self.order_action();
                let produced = (self.pending.len() - before).max(1);
                self.next_flow_ns = self.clock_ns + self.gap_ns(produced);
            }
        }
    }

    /// Sum of `k` exponential inter-arrival times, ns.
    fn gap_ns(&mut self, k: usize) -> i64 {
        let mut sum: u128 = 0;
        for _ in 0..k {
            sum += (u128::from(self.mean_gap_ns_q32) * u128::from(self.rng.exp_q32())) >> 64;
        }
        sum as i64
    }

    /// The exchange time of the current action.
    fn ts_now(&self) -> i64 {
        let unit = if self.cfg.legacy_whole_second_times { NS_PER_S } else { NS_PER_US };
        self.clock_ns - self.clock_ns.rem_euclid(unit)
    }

    fn emit(&mut self, kind: ExchEventKind) {
        self.gen_seq += 1;
        let ts_ns = self.ts_now();
        self.pending.push_back(ExchEvent { exch_seq: self.gen_seq, ts_ns, kind });
    }

    fn schedule_at(&mut self, due_ns: i64, market: MarketId, action: Action) {
        self.schedule_order += 1;
        self.schedule.push(Reverse(Scheduled {
            due_ns,
            order: self.schedule_order,
            market,
            action,
        }));
    }

    // ---- catalog -------------------------------------------------------------------------

    fn build_initial_catalog(&mut self) {
        let start = self.cfg.start_ts_ns;
        while self.markets.len() < self.cfg.markets {
            let index = self.series.len();
            let offset = self.rng.below(24) as i64;
            let (naming, info) = make_series(index, start, offset);
            let previous = self.series_by_ticker.insert(info.ticker.clone(), index as SeriesId);
            assert!(previous.is_none(), "duplicate series ticker {}", info.ticker);
            self.series.push(info);
            self.naming.push(naming);
            let n_events = self.rng.range_inclusive(1, u64::from(self.cfg.events_per_series_max));
            for _ in 0..n_events {
                if self.markets.len() >= self.cfg.markets {
                    break;
                }
                let phase = self.initial_phase();
                self.spawn_event(index as SeriesId, start, false, phase);
            }
        }
    }

    fn initial_phase(&mut self) -> InitialPhase {
        let r = self.rng.below(u64::from(PPM));
        let unopened = u64::from(self.cfg.initial_unopened_ppm);
        let closed = unopened + u64::from(self.cfg.initial_closed_ppm);
        let settled = closed + u64::from(self.cfg.initial_settled_ppm);
        if r < unopened {
            InitialPhase::Unopened
        } else if r < closed {
            if r < unopened + u64::from(self.cfg.initial_closed_ppm) / 2 {
                InitialPhase::Closed
            } else {
                InitialPhase::Determined
            }
        } else if r < settled {
            InitialPhase::Settled
        } else {
            InitialPhase::Active
        }
    }

    fn secs(&mut self, lo: u32, hi: u32) -> i64 {
        self.rng.range_inclusive(u64::from(lo), u64::from(hi.max(lo))) as i64 * NS_PER_S
    }

    /// Lists a new event of series `s` at time `now` in `phase`; `emit` sends `EventCreated` and
    /// `Created` (events created during the run start `Unopened`).
    fn spawn_event(&mut self, s: SeriesId, now: i64, emit: bool, phase: InitialPhase) {
        let cfg = self.cfg.clone();
        let mut n = self.rng.range_inclusive(1, u64::from(cfg.markets_per_event_max)) as u32;
        if !emit {
            n = n.min((cfg.markets - self.markets.len()) as u32);
        }
        let series_ticker = self.series[s as usize].ticker.clone();
        let info = self.naming[s as usize].next_event(s, &series_ticker, n);
        let event = self.events.len() as EventId;
        let previous = self.event_by_ticker.insert(info.ticker.clone(), event);
        assert!(previous.is_none(), "duplicate event ticker {}", info.ticker);
        let event_ticker = info.ticker.clone();
        self.events.push(info);
        self.event_live.push(if phase == InitialPhase::Settled { 0 } else { n });
        if emit {
            self.emit(ExchEventKind::EventCreated { event });
            self.stats.lifecycle_events += 1;
        }

        // Times shared by the event's markets, whole seconds.
        let now_s = now - now.rem_euclid(NS_PER_S);
        let lifetime = self.secs(cfg.lifetime_s_min, cfg.lifetime_s_max);
        let (created, open, close) = match phase {
            InitialPhase::Unopened => {
                let open = now_s + NS_PER_S + self.secs(0, cfg.open_delay_s_max);
                (
                    if emit { now } else { now_s - self.secs(0, cfg.open_delay_s_max) },
                    open,
                    open + lifetime,
                )
            }
            InitialPhase::Active => {
                let close = now_s + self.secs(1, cfg.lifetime_s_max);
                let open = now_s - self.secs(1, cfg.lifetime_s_max);
                (open - self.secs(0, cfg.open_delay_s_max), open, close)
            }
            InitialPhase::Closed | InitialPhase::Determined | InitialPhase::Settled => {
                let close = now_s - self.secs(1, 600);
                let open = close - lifetime;
                (open - self.secs(0, cfg.open_delay_s_max), open, close)
            }
        };
        let status = match phase {
            InitialPhase::Unopened => MarketStatus::Initialized,
            InitialPhase::Active => MarketStatus::Active,
            InitialPhase::Closed => MarketStatus::Closed,
            InitialPhase::Determined => MarketStatus::Determined,
            InitialPhase::Settled => MarketStatus::Finalized,
        };
        for i in 0..n {
            let (suffix, yes_sub_title) = self.naming[s as usize].strike(i);
            let ticker = format!("{event_ticker}-{suffix}");
            let id = self.markets.len() as MarketId;
            let previous = self.market_by_ticker.insert(ticker.clone(), id);
            assert!(previous.is_none(), "duplicate market ticker {ticker}");
            let grid = match self.rng.below(3) {
                0 => PriceGrid::LinearCent,
                1 => PriceGrid::DeciCent,
                _ => PriceGrid::TaperedDeciCent,
            };
            let fractional = self.rng.chance_ppm(cfg.fractional_market_ppm);
            let fair_micros = self.rng.range_inclusive(FAIR_MIN_MICROS, FAIR_MAX_MICROS) as u32;
            let activity = ACTIVITY_WEIGHT_SCALE / (1 + self.rng.below(cfg.markets as u64));
            let mut st = MarketState {
                book: Book::default(),
                grid,
                fractional,
                fair_micros,
                activity,
                notional: 0,
            };
            let mut ticker_state = TickerState::default();
            let mut result = None;
            let (mut determined_ts_ns, mut settled_ts_ns) = (None, None);
            if phase != InitialPhase::Unopened {
                self.initial_book(&mut st, &mut ticker_state);
            }
            if matches!(phase, InitialPhase::Determined | InitialPhase::Settled) {
                result = Some(self.draw_result(fair_micros));
                determined_ts_ns = Some(close + self.secs(1, 60));
            }
            if phase == InitialPhase::Settled {
                settled_ts_ns = determined_ts_ns.map(|d| d + NS_PER_S);
            }
            self.markets.push(MarketInfo {
                ticker,
                event,
                grid,
                fractional,
                status,
                created_ts_ns: created,
                open_ts_ns: open,
                close_ts_ns: close,
                determined_ts_ns,
                settled_ts_ns,
                result,
                ticker_state,
                yes_sub_title,
            });
            self.state.push(st);
            self.weights.push();
            if emit {
                self.emit(ExchEventKind::MarketLifecycle {
                    market: id,
                    kind: LifecycleKind::Created,
                });
                self.stats.lifecycle_events += 1;
            }
            match phase {
                InitialPhase::Unopened => {
                    self.schedule_at(open, id, Action::Open);
                    self.schedule_life(id, open, close);
                }
                InitialPhase::Active => {
                    self.weights.set(id as usize, activity);
                    self.schedule_life(id, now, close);
                }
                InitialPhase::Closed => {
                    let due = now + self.secs(1, cfg.determine_delay_s_max);
                    self.schedule_at(due, id, Action::Determine);
                }
                InitialPhase::Determined => {
                    let due = now + self.secs(1, cfg.settle_delay_s_max);
                    self.schedule_at(due, id, Action::Settle);
                }
                InitialPhase::Settled => {}
            }
        }
    }

    /// Schedules the optional pause and close move inside `(from, close)`, and the close.
    fn schedule_life(&mut self, id: MarketId, from: i64, close: i64) {
        let span = close - from;
        if span > 2 * NS_PER_S && self.rng.chance_ppm(self.cfg.pause_ppm) {
            let t1 = from + 1 + self.rng.below((span / 2) as u64) as i64;
            let pause = self.secs(1, self.cfg.pause_s_max.max(1));
            let t2 = (t1 + pause).min(close - 1);
            self.schedule_at(t1, id, Action::Pause);
            self.schedule_at(t2, id, Action::Resume);
        }
        if span > 2 * NS_PER_S && self.rng.chance_ppm(self.cfg.close_update_ppm) {
            let t = from + 1 + self.rng.below((span - 1) as u64) as i64;
            self.schedule_at(t, id, Action::MoveClose);
        }
        self.schedule_at(close, id, Action::Close);
    }

    fn draw_result(&mut self, fair_micros: u32) -> Side {
        if self.rng.below(u64::from(DOLLAR_MICROS)) < u64::from(fair_micros) {
            Side::Yes
        } else {
            Side::No
        }
    }

    fn draw_size(&mut self, fractional: bool) -> i64 {
        let contracts =
            SIZE_TABLE_CONTRACTS[self.rng.below(SIZE_TABLE_CONTRACTS.len() as u64) as usize];
        if fractional && self.rng.below(2) == 0 {
            contracts * CENTI - self.rng.below(CENTI as u64) as i64
        } else {
            contracts * CENTI
        }
    }

    /// A resting book around the market's fair price (no events: it predates the run), with
    /// some history in the ticker state.
    fn initial_book(&mut self, st: &mut MarketState, ts: &mut TickerState) {
        let g = st.grid;
        for side in [Side::Yes, Side::No] {
            let fair =
                if side == Side::Yes { st.fair_micros } else { DOLLAR_MICROS - st.fair_micros };
            let mut p = g.step_down(g.floor(fair));
            let levels = self.rng.range_inclusive(INITIAL_LEVELS_MIN, INITIAL_LEVELS_MAX);
            for _ in 0..levels {
                let size = self.draw_size(st.fractional);
                st.book.apply(side, p, size);
                let next = g.step_down(p);
                if next == p {
                    break;
                }
                p = if self.rng.below(3) == 0 { g.step_down(next) } else { next };
            }
        }
        let volume = self.draw_size(st.fractional) * (1 + self.rng.below(50) as i64);
        // The history traded at a price on the market's grid (the fair value need not be on it).
        let last_price = g.floor(st.fair_micros);
        st.notional = i128::from(volume) * i128::from(last_price);
        ts.volume_centi = volume;
        ts.open_interest_centi = volume / 2;
        ts.last_price_micros = Some(last_price);
        ts.last_trade_size_centi = Some(CENTI);
        *ts = ticker_of(st, ts);
    }

    // ---- lifecycle -----------------------------------------------------------------------

    fn lifecycle(&mut self, market: MarketId, kind: LifecycleKind) {
        self.emit(ExchEventKind::MarketLifecycle { market, kind });
        self.stats.lifecycle_events += 1;
    }

    fn run_lifecycle(&mut self, s: Scheduled) {
        let id = s.market;
        let i = id as usize;
        let status = self.markets[i].status;
        match s.action {
            Action::Open => {
                debug_assert_eq!(status, MarketStatus::Initialized);
                self.markets[i].status = MarketStatus::Active;
                self.weights.set(i, self.state[i].activity);
                self.lifecycle(id, LifecycleKind::Activated);
            }
            Action::Pause => {
                if status == MarketStatus::Active {
                    self.markets[i].status = MarketStatus::Inactive;
                    self.weights.set(i, 0);
                    self.lifecycle(id, LifecycleKind::Deactivated);
                }
            }
            Action::Resume => {
                if status == MarketStatus::Inactive {
                    self.markets[i].status = MarketStatus::Active;
                    self.weights.set(i, self.state[i].activity);
                    self.lifecycle(id, LifecycleKind::Activated);
                }
            }
            Action::MoveClose => {
                if matches!(status, MarketStatus::Active | MarketStatus::Inactive) {
                    let moved = (60 + self.rng.below(CLOSE_MOVE_S_MAX)) as i64 * NS_PER_S;
                    let close = self.markets[i].close_ts_ns + moved;
                    self.markets[i].close_ts_ns = close;
                    self.schedule_at(close, id, Action::Close);
                    self.lifecycle(id, LifecycleKind::CloseDateUpdated);
                }
            }
            Action::Close => {
                // A close entry left behind by a close-date update is stale.
                let current = self.markets[i].close_ts_ns == s.due_ns;
                if current && matches!(status, MarketStatus::Active | MarketStatus::Inactive) {
                    self.markets[i].status = MarketStatus::Closed;
                    self.weights.set(i, 0);
                    let due = self.clock_ns + self.secs(1, self.cfg.determine_delay_s_max);
                    self.schedule_at(due, id, Action::Determine);
                }
            }
            Action::Determine => {
                debug_assert_eq!(status, MarketStatus::Closed);
                let result = self.draw_result(self.state[i].fair_micros);
                let ts = self.ts_now();
                let m = &mut self.markets[i];
                m.status = MarketStatus::Determined;
                m.result = Some(result);
                m.determined_ts_ns = Some(ts);
                let due = self.clock_ns + self.secs(1, self.cfg.settle_delay_s_max);
                self.schedule_at(due, id, Action::Settle);
                self.lifecycle(id, LifecycleKind::Determined);
            }
            Action::Settle => {
                debug_assert_eq!(status, MarketStatus::Determined);
                let ts = self.ts_now();
                let m = &mut self.markets[i];
                m.status = MarketStatus::Finalized;
                m.settled_ts_ns = Some(ts);
                let event = m.event as usize;
                self.lifecycle(id, LifecycleKind::Settled);
                self.event_live[event] -= 1;
                if self.event_live[event] == 0 {
                    let series = self.events[event].series;
                    self.spawn_event(series, self.clock_ns, true, InitialPhase::Unopened);
                    self.stats.events_spawned += 1;
                }
            }
        }
    }

    // ---- order flow ----------------------------------------------------------------------

    fn order_action(&mut self) {
        let Some(i) = self.weights.sample(&mut self.rng) else { return };
        self.stats.order_actions += 1;
        let side = if self.rng.below(2) == 0 { Side::Yes } else { Side::No };
        let r = self.rng.below(u64::from(PPM));
        let before = self.markets[i].ticker_state;
        let opp = other(side);
        let book = &self.state[i].book;
        if r < CROSS_PPM && !book.ladder(opp).is_empty() {
            self.cross(i, side);
        } else if r < CROSS_PPM + CANCEL_PPM || book.ladder(side).len() >= LEVELS_PER_SIDE_MAX {
            let s = if book.ladder(side).is_empty() { opp } else { side };
            if book.ladder(s).is_empty() {
                self.add(i, side);
            } else {
                self.cancel(i, s);
            }
        } else {
            self.add(i, side);
        }
        let after = ticker_of(&self.state[i], &self.markets[i].ticker_state);
        if after != before {
            self.markets[i].ticker_state = after;
            self.emit(ExchEventKind::Ticker { market: i as MarketId, state: after });
        }
    }

    /// Emits and applies one delta, repeating it exactly with probability `identical_delta_ppm`
    /// when the repeat is valid.
    fn delta_with_repeat(&mut self, i: usize, side: Side, price_micros: u32, delta_centi: i64) {
        self.delta(i, side, price_micros, delta_centi);
        if self.rng.chance_ppm(self.cfg.identical_delta_ppm)
            && (delta_centi > 0 || self.state[i].book.size_at(side, price_micros) >= -delta_centi)
        {
            self.delta(i, side, price_micros, delta_centi);
            self.stats.identical_deltas += 1;
        }
    }

    fn delta(&mut self, i: usize, side: Side, price_micros: u32, delta_centi: i64) {
        self.state[i].book.apply(side, price_micros, delta_centi);
        self.emit(ExchEventKind::Delta { market: i as MarketId, side, price_micros, delta_centi });
    }

    /// A resting bid near the top of `side`, never crossing.
    fn add(&mut self, i: usize, side: Side) {
        let st = &self.state[i];
        let g = st.grid;
        let anchor = match st.book.best(side) {
            Some(l) => l.price_micros,
            None => {
                let fair =
                    if side == Side::Yes { st.fair_micros } else { DOLLAR_MICROS - st.fair_micros };
                g.step_down(g.floor(fair))
            }
        };
        let opp_best = st.book.best(other(side)).map(|l| l.price_micros);
        let fractional = st.fractional;
        let r = self.rng.below(100);
        let mut p = if r < 25 {
            g.step_up(anchor)
        } else if r < 55 {
            anchor
        } else {
            let mut p = anchor;
            for _ in 0..=self.rng.next_u64().trailing_zeros().min(8) {
                p = g.step_down(p);
            }
            p
        };
        if let Some(q) = opp_best {
            while p + q >= DOLLAR_MICROS && p > g.min_price_micros() {
                p = g.step_down(p);
            }
            if p + q >= DOLLAR_MICROS {
                return; // No non-crossing price exists on this side.
            }
        }
        if self.state[i].book.ladder(side).len() >= LEVELS_PER_SIDE_MAX
            && self.state[i].book.size_at(side, p) == 0
        {
            return;
        }
        let size = self.draw_size(fractional);
        self.delta_with_repeat(i, side, p, size);
    }

    /// Cancels part or all of a level near the top of `side` (non-empty).
    fn cancel(&mut self, i: usize, side: Side) {
        let ladder = self.state[i].book.ladder(side);
        let depth = (self.rng.next_u64().trailing_zeros() as usize).min(ladder.len() - 1);
        let level = ladder[ladder.len() - 1 - depth];
        let fractional = self.state[i].fractional;
        let amount = if self.rng.chance_ppm(CANCEL_WHOLE_LEVEL_PPM) {
            level.size_centi
        } else if fractional {
            1 + self.rng.below(level.size_centi as u64) as i64
        } else if level.size_centi >= CENTI {
            (1 + self.rng.below((level.size_centi / CENTI) as u64) as i64) * CENTI
        } else {
            level.size_centi
        };
        self.delta_with_repeat(i, side, level.price_micros, -amount);
    }

    /// A bid on `side` that crosses the other ladder (non-empty): trades at the resting prices,
    /// best first, then the resting side's deltas, then the remainder (if it rests).
    fn cross(&mut self, i: usize, side: Side) {
        let opp = other(side);
        let st = &self.state[i];
        let g = st.grid;
        let fractional = st.fractional;
        let Some(best) = st.book.best(opp) else { return };
        let mut limit = DOLLAR_MICROS - best.price_micros;
        for _ in 0..self.rng.below(3) {
            limit = g.step_up(limit);
        }
        let size = self.draw_size(fractional) * (1 + self.rng.below(2) as i64);
        let mut fills: [(u32, i64); SWEEP_LEVELS_MAX] = [(0, 0); SWEEP_LEVELS_MAX];
        let mut n_fills = 0;
        let mut remaining = size;
        let mut blocked = false;
        for l in self.state[i].book.ladder(opp).iter().rev() {
            if remaining == 0 || l.price_micros + limit < DOLLAR_MICROS {
                break;
            }
            if n_fills == SWEEP_LEVELS_MAX {
                blocked = true;
                break;
            }
            let fill = remaining.min(l.size_centi);
            fills[n_fills] = (l.price_micros, fill);
            n_fills += 1;
            remaining -= fill;
        }
        for &(q, fill) in &fills[..n_fills] {
            let yes_price_micros = if side == Side::Yes { DOLLAR_MICROS - q } else { q };
            self.trade(i, side, yes_price_micros, fill);
        }
        for &(q, fill) in &fills[..n_fills] {
            self.delta(i, opp, q, -fill);
        }
        let full = self.state[i].book.ladder(side).len() >= LEVELS_PER_SIDE_MAX
            && self.state[i].book.size_at(side, limit) == 0;
        if remaining > 0 && !blocked && !full && self.rng.chance_ppm(REMAINDER_RESTS_PPM) {
            self.delta(i, side, limit, remaining);
        }
    }

    fn trade(&mut self, i: usize, taker: Side, yes_price_micros: u32, count_centi: i64) {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&self.rng.next_u64().to_le_bytes());
        id[8..].copy_from_slice(&self.rng.next_u64().to_le_bytes());
        id[6] = (id[6] & 0x0F) | 0x40; // UUID version 4
        id[8] = (id[8] & 0x3F) | 0x80; // RFC 4122 variant
        let opens = self.rng.chance_ppm(TRADE_OPENS_PPM);
        let st = &mut self.state[i];
        st.notional += i128::from(count_centi) * i128::from(yes_price_micros);
        st.fair_micros = yes_price_micros;
        let ts = &mut self.markets[i].ticker_state;
        ts.volume_centi += count_centi;
        ts.open_interest_centi = if opens {
            ts.open_interest_centi + count_centi
        } else {
            (ts.open_interest_centi - count_centi).max(0)
        };
        ts.last_price_micros = Some(yes_price_micros);
        ts.last_trade_size_centi = Some(count_centi);
        let kind = ExchEventKind::Trade {
            market: i as MarketId,
            trade_id: id,
            yes_price_micros,
            count_centi,
            taker_side: taker,
            taker_book_side: BookSide::Ask,
        };
        self.emit(kind);
        self.stats.trades += 1;
        self.trades_total += 1;
        if self.trades.len() == TRADES_RECENT_MAX {
            self.trades.pop_front();
        }
        self.trades.push_back(RecentTrade {
            ordinal: self.trades_total,
            exch_seq: self.gen_seq,
            ts_ns: self.ts_now(),
            market: i as MarketId,
            trade_id: id,
            yes_price_micros,
            count_centi,
            taker_side: taker,
            taker_book_side: BookSide::Ask,
        });
    }
}

fn other(side: Side) -> Side {
    match side {
        Side::Yes => Side::No,
        Side::No => Side::Yes,
    }
}

/// The ticker state implied by a market's book and trade totals (`prev` carries volume, open
/// interest and the last trade, which the book does not know).
fn ticker_of(st: &MarketState, prev: &TickerState) -> TickerState {
    let yes = st.book.best(Side::Yes);
    let no = st.book.best(Side::No);
    let dollar_open_interest = match prev.last_price_micros {
        Some(p) => {
            (i128::from(prev.open_interest_centi) * i128::from(p) / NOTIONAL_PER_DOLLAR) as i64
        }
        None => 0,
    };
    TickerState {
        yes_bid_micros: yes.map_or(0, |l| l.price_micros),
        yes_bid_size_centi: yes.map_or(0, |l| l.size_centi),
        yes_ask_micros: no.map_or(DOLLAR_MICROS, |l| DOLLAR_MICROS - l.price_micros),
        yes_ask_size_centi: no.map_or(0, |l| l.size_centi),
        dollar_volume: (st.notional / NOTIONAL_PER_DOLLAR) as i64,
        dollar_open_interest,
        ..*prev
    }
}
