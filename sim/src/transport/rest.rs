//! The simulator's REST read API: Kalshi's `/trade-api/v2` market-data endpoints over the
//! exchange the hub task owns, in the current (post 2026-03-12) response shapes.
//!
//! Flow of one request: rate limiter (token bucket, injectable clock) → fault hooks (forced
//! 429/500/503 bursts) → parameter parsing (400 with the error body) → a closure run inside the
//! exchange task through [`ExchangeQuery`] that builds the owned response from a [`MarketView`]
//! → JSON serialisation outside the exchange task.
//!
//! The response builders (`*_page`, `market_response`, `orderbook_response`, ...) are pure
//! functions of a [`MarketView`] and typed parameters, so they are tested without a server.
//!
//! Units inside: prices in micro-dollars, sizes in hundredths of a contract, times in ns since
//! the epoch (see `market::model`). On the wire: `*_dollars` 4-dp strings, `*_fp` 2-dp
//! strings, RFC 3339 UTC times.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;

use crate::market::model::{
    BookLevels, DOLLAR_MICROS, EventId, EventInfo, MarketId, MarketInfo, MarketStatus, SeriesId,
    SeriesInfo, Side, civil_from_days,
};
use crate::market::{Exchange, RecentTrade, TradePage, TradeQuery};
use crate::transport::proto;

/// Path prefix of every endpoint, as on Kalshi.
pub const API_PREFIX: &str = "/trade-api/v2";

/// `GET /markets` and `GET /markets/trades` page size when `limit` is omitted or 0 (Kalshi's
/// default).
pub const MARKETS_LIMIT_DEFAULT: u32 = 100;
/// Largest `limit` `GET /markets` and `GET /markets/trades` accept (Kalshi's bound; above it
/// Kalshi answers 400).
pub const MARKETS_LIMIT_MAX: u32 = 1000;
/// `GET /events` page size when `limit` is omitted; also its maximum (Kalshi's bound).
pub const EVENTS_LIMIT_MAX: u32 = 200;
/// Deepest `depth` the orderbook endpoint accepts (Kalshi: 1–100, 0 = all levels).
pub const ORDERBOOK_DEPTH_MAX: u32 = 100;
/// Most tickers one `tickers=` filter may name: bounds the work of one request the way the
/// page size bounds a catalog scan (Kalshi publishes no bound; 1000 = one full page).
pub const TICKERS_FILTER_MAX: usize = 1000;

/// Default read budget in requests per second: Kalshi's Basic tier (200 tokens/s at the
/// default cost of 10 tokens a request, ≈ 20 GET/s; before 2026-04 it was 20 req/s flat).
pub const READ_REFILL_PER_S_DEFAULT: u32 = 20;
/// Default bucket capacity in requests: Basic read buckets hold 2 s of budget.
pub const READ_CAPACITY_DEFAULT: u32 = 2 * READ_REFILL_PER_S_DEFAULT;

/// Body of every 429, exactly as Kalshi sends it (no `Retry-After`, no `X-RateLimit-*`).
pub const TOO_MANY_REQUESTS_BODY: &str = r#"{"error":"too many requests"}"#;

/// Settlement delay reported while the engine has not yet both determined and settled a market
/// (Kalshi's most common `settlement_timer_seconds` for daily markets is on the order of
/// minutes; 300 s is a representative value, not a modelled one).
pub const SETTLEMENT_TIMER_S_DEFAULT: i64 = 300;
/// `latest_expiration_time` = close time + this: Kalshi sets the latest possible expiration
/// days after the scheduled close; the engine does not model expiration delays.
pub const LATEST_EXPIRATION_AFTER_CLOSE_NS: i64 = 7 * 86_400 * NS_PER_S;

const NS_PER_S: i64 = 1_000_000_000;

// ---------------------------------------------------------------------------------------------
// What the REST layer reads, and how it reaches the exchange task.
// ---------------------------------------------------------------------------------------------

/// The read-only view of the exchange the REST builders need: implemented by the engine's
/// [`Exchange`] below (and by test fixtures, to shape catalogs the generator would not).
pub trait MarketView {
    /// Exchange time now, ns since the epoch.
    fn now_ns(&self) -> i64;
    /// The market catalog, indexed by `MarketId` (append-only, so ids are stable).
    fn markets(&self) -> &[MarketInfo];
    /// The event catalog, indexed by `EventId`.
    fn events(&self) -> &[EventInfo];
    /// The series catalog, indexed by `SeriesId`.
    fn series(&self) -> &[SeriesInfo];
    /// The market with this ticker.
    fn market_id(&self, ticker: &str) -> Option<MarketId>;
    /// The event with this ticker.
    fn event_id(&self, ticker: &str) -> Option<EventId>;
    /// The series with this ticker.
    fn series_id(&self, ticker: &str) -> Option<SeriesId>;
    /// The market's two bid ladders, ascending (best last); `depth` keeps the best N a side.
    fn book(&self, market: MarketId, depth: Option<usize>) -> BookLevels;
    /// Recent trades matching `query`, newest first, at most `limit`, older than `cursor`;
    /// the page's cursor is `None` on the last page (see `Exchange::trades_page`).
    fn trades_page(&self, query: &TradeQuery, cursor: Option<u64>, limit: usize) -> TradePage;
}

impl MarketView for Exchange {
    fn now_ns(&self) -> i64 {
        Exchange::now_ns(self)
    }
    fn markets(&self) -> &[MarketInfo] {
        Exchange::markets(self)
    }
    fn events(&self) -> &[EventInfo] {
        Exchange::events(self)
    }
    fn series(&self) -> &[SeriesInfo] {
        Exchange::series(self)
    }
    fn market_id(&self, ticker: &str) -> Option<MarketId> {
        Exchange::market_id(self, ticker)
    }
    fn event_id(&self, ticker: &str) -> Option<EventId> {
        Exchange::event_id(self, ticker)
    }
    fn series_id(&self, ticker: &str) -> Option<SeriesId> {
        Exchange::series_id(self, ticker)
    }
    fn book(&self, market: MarketId, depth: Option<usize>) -> BookLevels {
        Exchange::book(self, market, depth)
    }
    fn trades_page(&self, query: &TradeQuery, cursor: Option<u64>, limit: usize) -> TradePage {
        Exchange::trades_page(self, query, cursor, limit)
    }
}

/// Runs a closure against the exchange inside the task that owns it. The hub's handle
/// implements this; `None` means the hub is gone (the endpoint answers 503).
pub trait ExchangeQuery: Clone + Send + Sync + 'static {
    /// The exchange type the closure sees.
    type View: MarketView;
    /// Runs `f` on the exchange and returns its result.
    fn query<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Self::View) -> R + Send + 'static,
    ) -> impl Future<Output = Option<R>> + Send;
}

// ---------------------------------------------------------------------------------------------
// Configuration, rate limiter and its clock.
// ---------------------------------------------------------------------------------------------

/// The clock the rate limiter refills by.
#[derive(Debug, Clone)]
pub enum RestClock {
    /// Monotonic wall time from when the router was built.
    Monotonic(Instant),
    /// A clock the test (or the simulator's virtual time) sets explicitly.
    Manual(ManualClock),
}

impl RestClock {
    /// A monotonic clock starting now.
    pub fn monotonic() -> RestClock {
        RestClock::Monotonic(Instant::now())
    }

    fn now_ns(&self) -> i64 {
        match self {
            RestClock::Monotonic(start) => {
                i64::try_from(start.elapsed().as_nanos()).unwrap_or(i64::MAX)
            }
            RestClock::Manual(clock) => clock.now_ns(),
        }
    }
}

/// A settable clock (ns) shared between the limiter and whoever drives it.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock at 0 ns.
    pub fn new() -> ManualClock {
        ManualClock::default()
    }
    /// Current reading.
    pub fn now_ns(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
    /// Moves the clock forward by `ns`.
    pub fn advance_ns(&self, ns: i64) {
        self.0.fetch_add(ns, Ordering::SeqCst);
    }
}

/// Read rate limit: a token bucket of `capacity` requests refilled at `refill_per_s`.
#[derive(Debug, Clone)]
pub struct RateLimit {
    /// Bucket size in requests (the largest burst).
    pub capacity: u32,
    /// Requests added per second.
    pub refill_per_s: u32,
    /// Refill clock.
    pub clock: RestClock,
}

impl Default for RateLimit {
    fn default() -> RateLimit {
        RateLimit {
            capacity: READ_CAPACITY_DEFAULT,
            refill_per_s: READ_REFILL_PER_S_DEFAULT,
            clock: RestClock::monotonic(),
        }
    }
}

/// REST server configuration. The default is Kalshi's Basic read limit on a monotonic clock.
#[derive(Debug, Clone)]
pub struct RestConfig {
    /// Read rate limit in front of every endpoint; `None` disables it.
    pub rate_limit: Option<RateLimit>,
}

impl Default for RestConfig {
    fn default() -> RestConfig {
        RestConfig { rate_limit: Some(RateLimit::default()) }
    }
}

/// Token bucket in nano-tokens: a request costs `NS_PER_S` units and every elapsed ns adds
/// `refill_per_s` units, so refill is exact in integers.
#[derive(Debug)]
struct TokenBucket {
    capacity_units: i64,
    refill_per_s: i64,
    clock: RestClock,
    state: Mutex<BucketState>,
}

#[derive(Debug)]
struct BucketState {
    units: i64,
    last_ns: i64,
}

impl TokenBucket {
    fn new(limit: &RateLimit) -> TokenBucket {
        let capacity_units = i64::from(limit.capacity).saturating_mul(NS_PER_S);
        TokenBucket {
            capacity_units,
            refill_per_s: i64::from(limit.refill_per_s),
            state: Mutex::new(BucketState { units: capacity_units, last_ns: limit.clock.now_ns() }),
            clock: limit.clock.clone(),
        }
    }

    /// Takes one request's worth of tokens; `false` when the bucket is short (nothing taken).
    fn try_take(&self) -> bool {
        let now_ns = self.clock.now_ns();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let elapsed_ns = now_ns.saturating_sub(state.last_ns).max(0);
        state.last_ns = state.last_ns.max(now_ns);
        let added = elapsed_ns.saturating_mul(self.refill_per_s);
        state.units = state.units.saturating_add(added).min(self.capacity_units);
        if state.units >= NS_PER_S {
            state.units -= NS_PER_S;
            true
        } else {
            false
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Fault hooks and the exchange-status switches.
// ---------------------------------------------------------------------------------------------

/// A forced failure answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestFault {
    /// 429 with Kalshi's rate-limit body.
    TooManyRequests,
    /// 500 with the error body.
    InternalError,
    /// 503 with the error body.
    ServiceUnavailable,
}

/// What `GET /exchange/status` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExchangeStatusFlags {
    /// `exchange_active`: false during maintenance.
    pub exchange_active: bool,
    /// `trading_active`: false outside trading hours or during a pause.
    pub trading_active: bool,
    /// `exchange_estimated_resume_time` (ns since the epoch), when paused.
    pub estimated_resume_ns: Option<i64>,
}

impl Default for ExchangeStatusFlags {
    fn default() -> ExchangeStatusFlags {
        ExchangeStatusFlags {
            exchange_active: true,
            trading_active: true,
            estimated_resume_ns: None,
        }
    }
}

/// Requests the REST request log keeps (oldest dropped first): a test reads a few hundred; the
/// bound keeps a long demo run's memory flat (~1.5 MiB).
pub const REQUEST_LOG_MAX: usize = 65_536;

/// One request as the REST server saw it: when it arrived and what status it got from the
/// gate (rate limiter and forced faults; 0 = passed on to the endpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestRequest {
    /// Arrival time.
    pub at: Instant,
    /// 429/500/503 from the gate, or 0 when the request reached its endpoint.
    pub gate_status: u16,
}

/// Fault switches shared between the REST server and the simulator's control plane (cheap
/// clone). Forced failures are queued bursts: `fail_next(3, ServiceUnavailable)` then
/// `fail_next(2, TooManyRequests)` answers the next three requests with 503 and the two after
/// with 429. Requests the rate limiter refuses do not consume a forced failure.
#[derive(Debug, Clone, Default)]
pub struct RestFaults(Arc<Mutex<FaultState>>);

#[derive(Debug, Default)]
struct FaultState {
    bursts: VecDeque<(u32, RestFault)>,
    /// Every request's arrival and answer status, newest last (at most [`REQUEST_LOG_MAX`]).
    log: VecDeque<RestRequest>,
    /// Requests seen, and of those refused by the rate limiter (not by a forced fault).
    requests: u64,
    rate_limited: u64,
    status: ExchangeStatusFlags,
    /// A WebSocket outage in progress: when it ends, and that time as wall-clock ns.
    outage: Option<(Instant, i64)>,
}

impl RestFaults {
    /// No faults, exchange and trading active.
    pub fn new() -> RestFaults {
        RestFaults::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FaultState> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a burst: the next `count` requests (after those already queued) get `fault`.
    pub fn fail_next(&self, count: u32, fault: RestFault) {
        if count > 0 {
            self.lock().bursts.push_back((count, fault));
        }
    }

    /// Drops every queued forced failure.
    pub fn clear(&self) {
        self.lock().bursts.clear();
    }

    /// Forced failures still queued.
    pub fn pending(&self) -> u64 {
        self.lock().bursts.iter().map(|&(n, _)| u64::from(n)).sum()
    }

    /// Sets what `GET /exchange/status` reports (outage, trading pause, resume time).
    pub fn set_exchange_status(&self, status: ExchangeStatusFlags) {
        self.lock().status = status;
    }

    /// Marks an exchange outage (the one that closes WebSocket connections and refuses their
    /// handshakes) lasting until `until`, `resume_ns` being that moment as wall-clock ns: while
    /// it lasts `GET /exchange/status` reports the exchange and trading inactive and the resume
    /// time, over whatever [`RestFaults::set_exchange_status`] set. A later outage replaces it.
    pub fn set_outage(&self, until: Instant, resume_ns: i64) {
        self.lock().outage = Some((until, resume_ns));
    }

    /// What `GET /exchange/status` reports now: the switches, overridden by an outage in
    /// progress.
    pub fn exchange_status(&self) -> ExchangeStatusFlags {
        let mut state = self.lock();
        let status = state.status;
        match state.outage {
            Some((until, resume_ns)) if Instant::now() < until => ExchangeStatusFlags {
                exchange_active: false,
                trading_active: false,
                estimated_resume_ns: Some(resume_ns),
            },
            Some(_) => {
                state.outage = None;
                status
            }
            None => status,
        }
    }

    /// Requests seen so far, and of those refused by the rate limiter with 429.
    pub fn request_counts(&self) -> (u64, u64) {
        let state = self.lock();
        (state.requests, state.rate_limited)
    }

    /// The request log, oldest first (the last [`REQUEST_LOG_MAX`]).
    pub fn request_log(&self) -> Vec<RestRequest> {
        self.lock().log.iter().copied().collect()
    }

    fn record(&self, gate_status: u16, limited: bool) {
        let mut state = self.lock();
        state.requests += 1;
        if limited {
            state.rate_limited += 1;
        }
        if state.log.len() >= REQUEST_LOG_MAX {
            state.log.pop_front();
        }
        state.log.push_back(RestRequest { at: Instant::now(), gate_status });
    }

    /// Takes the next forced failure, if any.
    fn take(&self) -> Option<RestFault> {
        let mut state = self.lock();
        let front = state.bursts.front_mut()?;
        let fault = front.1;
        front.0 -= 1;
        if front.0 == 0 {
            state.bursts.pop_front();
        }
        Some(fault)
    }
}

// ---------------------------------------------------------------------------------------------
// Wire formatting.
// ---------------------------------------------------------------------------------------------

/// A price in micro-dollars as Kalshi's `*_dollars` string: 4 decimals (`"0.4200"`), 6 when
/// the value has sub-4-dp digits (Kalshi's maximum precision).
pub fn dollars(micros: u32) -> String {
    let mut out = String::with_capacity(8);
    proto::write_dollars(&mut out, micros);
    out
}

/// A count in hundredths of a contract as Kalshi's `*_fp` string: always 2 decimals.
pub fn fp(centi: i64) -> String {
    let mut out = String::with_capacity(8);
    proto::write_fp(&mut out, centi);
    out
}

/// ns since the epoch as RFC 3339 UTC (`2026-03-01T18:44:01Z`, or with the fraction's
/// significant digits: `...:01.5Z`, `...:01.921884Z`), the way Kalshi's Go servers write times.
pub fn rfc3339(ts_ns: i64) -> String {
    let secs = ts_ns.div_euclid(NS_PER_S);
    let nanos = ts_ns.rem_euclid(NS_PER_S);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let mut out = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    );
    if nanos != 0 {
        let digits = format!("{nanos:09}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// A trade id as a lowercase hyphenated UUID.
pub fn uuid(bytes: &[u8; 16]) -> String {
    proto::uuid_text(bytes)
}

/// A market status in Kalshi's vocabulary.
pub fn status_str(status: MarketStatus) -> &'static str {
    match status {
        MarketStatus::Initialized => "initialized",
        MarketStatus::Active => "active",
        MarketStatus::Inactive => "inactive",
        MarketStatus::Closed => "closed",
        MarketStatus::Determined => "determined",
        MarketStatus::Finalized => "finalized",
    }
}

/// A `status=` filter value (`GET /markets`, `GET /events`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    /// `unopened` → initialized.
    Unopened,
    /// `open` → active.
    Open,
    /// `paused` → inactive (markets only).
    Paused,
    /// `closed` → past close, not settled (closed, determined).
    Closed,
    /// `settled` → finalized.
    Settled,
}

impl StatusFilter {
    /// Parses a filter value; `allow_paused` is false for `/events`, whose vocabulary lacks it.
    pub fn parse(text: &str, allow_paused: bool) -> Option<StatusFilter> {
        match text {
            "unopened" => Some(StatusFilter::Unopened),
            "open" => Some(StatusFilter::Open),
            "paused" if allow_paused => Some(StatusFilter::Paused),
            "closed" => Some(StatusFilter::Closed),
            "settled" => Some(StatusFilter::Settled),
            _ => None,
        }
    }

    /// Whether a market in `status` passes the filter.
    pub fn matches(self, status: MarketStatus) -> bool {
        match self {
            StatusFilter::Unopened => status == MarketStatus::Initialized,
            StatusFilter::Open => status == MarketStatus::Active,
            StatusFilter::Paused => status == MarketStatus::Inactive,
            StatusFilter::Closed => {
                matches!(status, MarketStatus::Closed | MarketStatus::Determined)
            }
            StatusFilter::Settled => status == MarketStatus::Finalized,
        }
    }
}

/// What a cursor pages over: a cursor from one listing is refused by the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CursorKind {
    /// `GET /markets`: the next market id.
    Markets,
    /// `GET /events`: the next event id.
    Events,
    /// `GET /markets/trades`: the engine's trade cursor.
    Trades,
}

impl CursorKind {
    fn tag(self) -> &'static str {
        match self {
            CursorKind::Markets => "m",
            CursorKind::Events => "e",
            CursorKind::Trades => "t",
        }
    }
}

/// An opaque cursor for position `pos` of a listing.
pub fn encode_cursor(kind: CursorKind, pos: u64) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{pos}", kind.tag()))
}

/// The position in a cursor made by [`encode_cursor`] for the same listing.
pub fn decode_cursor(kind: CursorKind, cursor: &str) -> Option<u64> {
    let raw = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let text = std::str::from_utf8(&raw).ok()?;
    let digits = text.strip_prefix(kind.tag())?.strip_prefix(':')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// Response shapes.
// ---------------------------------------------------------------------------------------------

/// One `price_ranges` entry.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PriceRangeJson {
    /// Start, dollars.
    pub start: String,
    /// End, dollars.
    pub end: String,
    /// Tick, dollars.
    pub step: String,
}

/// A Market object.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MarketJson {
    pub ticker: String,
    pub event_ticker: String,
    pub market_type: &'static str,
    pub title: String,
    pub subtitle: String,
    pub yes_sub_title: String,
    pub no_sub_title: String,
    pub created_time: String,
    pub updated_time: String,
    pub open_time: String,
    pub close_time: String,
    pub expected_expiration_time: String,
    pub latest_expiration_time: String,
    pub settlement_timer_seconds: i64,
    pub status: &'static str,
    pub yes_bid_dollars: String,
    pub yes_bid_size_fp: String,
    pub yes_ask_dollars: String,
    pub yes_ask_size_fp: String,
    pub no_bid_dollars: String,
    pub no_ask_dollars: String,
    pub last_price_dollars: String,
    pub previous_yes_bid_dollars: String,
    pub previous_yes_ask_dollars: String,
    pub previous_price_dollars: String,
    pub volume_fp: String,
    pub volume_24h_fp: String,
    pub open_interest_fp: String,
    pub notional_value_dollars: String,
    pub result: &'static str,
    pub can_close_early: bool,
    pub expiration_value: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settlement_value_dollars: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settlement_ts: Option<String>,
    pub floor_strike: Option<i64>,
    pub cap_strike: Option<i64>,
    pub custom_strike: Option<()>,
    pub rules_primary: String,
    pub rules_secondary: String,
    pub price_level_structure: &'static str,
    pub price_ranges: Vec<PriceRangeJson>,
    pub is_provisional: bool,
    pub exchange_index: u32,
    pub occurrence_datetime: Option<String>,
}

/// `GET /markets`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MarketsPage {
    /// This page.
    pub markets: Vec<MarketJson>,
    /// Next page's cursor; empty on the last page.
    pub cursor: String,
}

/// `GET /markets/{ticker}`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MarketResponse {
    /// The market.
    pub market: MarketJson,
}

/// Both bid ladders as `[price_dollars, count_fp]` pairs, ascending, best last.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct OrderbookFp {
    /// YES bids.
    pub yes_dollars: Vec<[String; 2]>,
    /// NO bids.
    pub no_dollars: Vec<[String; 2]>,
}

/// `GET /markets/{ticker}/orderbook`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct OrderbookResponse {
    /// The book.
    pub orderbook_fp: OrderbookFp,
}

/// A Trade object.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TradeJson {
    pub trade_id: String,
    pub ticker: String,
    pub count_fp: String,
    pub yes_price_dollars: String,
    pub no_price_dollars: String,
    pub taker_side: &'static str,
    pub taker_outcome_side: &'static str,
    pub taker_book_side: &'static str,
    pub is_block_trade: bool,
    pub created_time: String,
}

/// `GET /markets/trades`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TradesPage {
    /// This page, newest first.
    pub trades: Vec<TradeJson>,
    /// Next (older) page's cursor; empty on the last page.
    pub cursor: String,
}

/// An Event object.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct EventJson {
    pub event_ticker: String,
    pub series_ticker: String,
    pub title: String,
    pub sub_title: String,
    pub collateral_return_type: &'static str,
    pub mutually_exclusive: bool,
    pub category: String,
    pub available_on_brokers: bool,
    pub exchange_index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub markets: Option<Vec<MarketJson>>,
}

/// `GET /events`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct EventsPage {
    /// This page.
    pub events: Vec<EventJson>,
    /// Next page's cursor; empty on the last page.
    pub cursor: String,
    /// Always empty: the simulator has no milestones.
    pub milestones: Vec<()>,
}

/// A Series object.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SeriesJson {
    pub ticker: String,
    pub frequency: String,
    pub title: String,
    pub category: String,
    pub tags: Vec<String>,
    pub settlement_sources: Vec<()>,
    pub contract_url: String,
    pub contract_terms_url: String,
    pub fee_type: &'static str,
    pub fee_multiplier: u32,
    pub additional_prohibitions: Vec<String>,
}

/// `GET /series`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SeriesList {
    /// Every matching series.
    pub series: Vec<SeriesJson>,
}

/// `GET /series/{ticker}`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SeriesResponse {
    /// The series.
    pub series: SeriesJson,
}

/// `GET /exchange/status`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ExchangeStatusJson {
    pub exchange_active: bool,
    pub trading_active: bool,
    pub exchange_estimated_resume_time: Option<String>,
    pub intra_exchange_transfers_active: bool,
    pub exchange_index_statuses: Vec<ExchangeIndexStatusJson>,
}

/// One shard of `exchange_index_statuses`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ExchangeIndexStatusJson {
    pub exchange_index: u32,
    pub description: &'static str,
    pub exchange_active: bool,
    pub trading_active: bool,
    pub intra_exchange_transfers_active: bool,
}

/// A refused request: status and the error body `{"error":{"code":..,"message":..}}` (the
/// nested form live Kalshi sends; the spec's flat `ErrorResponse` carries the same fields).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// 400: a parameter is malformed or out of range.
    #[error("{0}")]
    BadRequest(String),
    /// 404: no such market/series/route.
    #[error("{0}")]
    NotFound(String),
    /// 503: the exchange task is gone.
    #[error("exchange unavailable")]
    Unavailable,
}

impl ApiError {
    fn status_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "service_unavailable"),
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: &'a str,
}

fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    let body = ErrorBody { error: ErrorDetail { code, message } };
    json_response(status, &body)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_code();
        error_response(status, code, &self.to_string())
    }
}

fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "REST response failed to serialise");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Typed parameters.
// ---------------------------------------------------------------------------------------------

/// `GET /markets` parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarketsQuery {
    /// Page size, 1..=1000.
    pub limit: u32,
    /// First market id to consider.
    pub start: MarketId,
    /// `status=`.
    pub status: Option<StatusFilter>,
    /// `event_ticker=`.
    pub event_ticker: Option<String>,
    /// `series_ticker=`.
    pub series_ticker: Option<String>,
    /// `tickers=` (comma list).
    pub tickers: Option<Vec<String>>,
    /// One of the timestamp windows (`min/max_created_ts`, `min/max_close_ts`,
    /// `min/max_settled_ts`), Unix seconds, inclusive.
    pub window: Option<TimeWindow>,
    /// `mve_filter=only`: the simulator lists no multivariate markets, so the page is empty.
    pub mve_only: bool,
}

/// Which market time a `GET /markets` timestamp window filters on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowField {
    /// `created_time` (`min/max_created_ts`; with `unopened`, `open` or no status).
    Created,
    /// `close_time` (`min/max_close_ts`; with `closed` or no status).
    Close,
    /// `settlement_ts` (`min/max_settled_ts`; with `settled` or no status).
    Settled,
}

/// A `GET /markets` timestamp window, Unix seconds, both ends inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeWindow {
    /// The market time it filters on.
    pub field: WindowField,
    /// Lower bound.
    pub min_s: Option<i64>,
    /// Upper bound.
    pub max_s: Option<i64>,
}

impl TimeWindow {
    fn matches(&self, m: &MarketInfo) -> bool {
        let ts_ns = match self.field {
            WindowField::Created => Some(m.created_ts_ns),
            WindowField::Close => Some(m.close_ts_ns),
            WindowField::Settled => m.settled_ts_ns.filter(|_| m.status == MarketStatus::Finalized),
        };
        ts_ns.is_some_and(|ts| {
            let s = ts.div_euclid(NS_PER_S);
            self.min_s.is_none_or(|min| s >= min) && self.max_s.is_none_or(|max| s <= max)
        })
    }
}

impl Default for MarketsQuery {
    fn default() -> MarketsQuery {
        MarketsQuery {
            limit: MARKETS_LIMIT_DEFAULT,
            start: 0,
            status: None,
            event_ticker: None,
            series_ticker: None,
            tickers: None,
            window: None,
            mve_only: false,
        }
    }
}

/// `GET /markets/trades` parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TradesQuery {
    /// Page size, 1..=1000.
    pub limit: u32,
    /// The engine's trade cursor (list trades older than it).
    pub cursor: Option<u64>,
    /// `ticker=`.
    pub ticker: Option<String>,
    /// `min_ts=` (Unix s, inclusive).
    pub min_ts_s: Option<i64>,
    /// `max_ts=` (Unix s, inclusive).
    pub max_ts_s: Option<i64>,
    /// `is_block_trade=`.
    pub is_block_trade: Option<bool>,
}

impl Default for TradesQuery {
    fn default() -> TradesQuery {
        TradesQuery {
            limit: MARKETS_LIMIT_DEFAULT,
            cursor: None,
            ticker: None,
            min_ts_s: None,
            max_ts_s: None,
            is_block_trade: None,
        }
    }
}

/// `GET /events` parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsQuery {
    /// Page size, 1..=200.
    pub limit: u32,
    /// First event id to consider.
    pub start: EventId,
    /// `status=` (any child market matches).
    pub status: Option<StatusFilter>,
    /// `series_ticker=`.
    pub series_ticker: Option<String>,
    /// `with_nested_markets=`.
    pub with_nested_markets: bool,
}

impl Default for EventsQuery {
    fn default() -> EventsQuery {
        EventsQuery {
            limit: EVENTS_LIMIT_MAX,
            start: 0,
            status: None,
            series_ticker: None,
            with_nested_markets: false,
        }
    }
}

/// Raw query pairs in request order.
type Pairs = Vec<(String, String)>;

fn param<'a>(pairs: &'a Pairs, name: &str) -> Option<&'a str> {
    pairs.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
}

fn parse_int<T: std::str::FromStr>(pairs: &Pairs, name: &str) -> Result<Option<T>, ApiError> {
    match param(pairs, name) {
        None => Ok(None),
        Some(text) => text
            .parse()
            .map(Some)
            .map_err(|_| ApiError::BadRequest(format!("{name}: not an integer: {text:?}"))),
    }
}

fn parse_bool(pairs: &Pairs, name: &str) -> Result<Option<bool>, ApiError> {
    match param(pairs, name) {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(text) => Err(ApiError::BadRequest(format!("{name}: not a boolean: {text:?}"))),
    }
}

/// `limit` for markets/trades: omitted or 0 → default, 1..=1000, else 400.
fn parse_limit(
    pairs: &Pairs,
    default: u32,
    max: u32,
    zero_is_default: bool,
) -> Result<u32, ApiError> {
    match parse_int::<i64>(pairs, "limit")? {
        None => Ok(default),
        Some(0) if zero_is_default => Ok(default),
        Some(n) if n >= 1 && n <= i64::from(max) => Ok(u32::try_from(n).unwrap_or(max)),
        Some(n) => Err(ApiError::BadRequest(format!("limit: {n} is out of range 1..={max}"))),
    }
}

fn parse_cursor(pairs: &Pairs, kind: CursorKind) -> Result<Option<u64>, ApiError> {
    match param(pairs, "cursor") {
        None => Ok(None),
        Some(text) => decode_cursor(kind, text)
            .map(Some)
            .ok_or_else(|| ApiError::BadRequest(format!("cursor: invalid cursor {text:?}"))),
    }
}

fn parse_status(pairs: &Pairs, allow_paused: bool) -> Result<Option<StatusFilter>, ApiError> {
    match param(pairs, "status") {
        None => Ok(None),
        Some(text) => StatusFilter::parse(text, allow_paused)
            .map(Some)
            .ok_or_else(|| ApiError::BadRequest(format!("status: unknown value {text:?}"))),
    }
}

fn id_from_cursor(pos: Option<u64>) -> u32 {
    pos.map_or(0, |p| u32::try_from(p).unwrap_or(u32::MAX))
}

/// Parses `GET /markets` parameters.
pub fn parse_markets_query(pairs: &Pairs) -> Result<MarketsQuery, ApiError> {
    let tickers: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k == "tickers")
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    if tickers.len() > TICKERS_FILTER_MAX {
        return Err(ApiError::BadRequest(format!(
            "tickers: {} tickers, at most {TICKERS_FILTER_MAX}",
            tickers.len()
        )));
    }
    MarketsQuery {
        limit: parse_limit(pairs, MARKETS_LIMIT_DEFAULT, MARKETS_LIMIT_MAX, true)?,
        start: id_from_cursor(parse_cursor(pairs, CursorKind::Markets)?),
        status: parse_status(pairs, true)?,
        event_ticker: param(pairs, "event_ticker").map(str::to_owned),
        series_ticker: param(pairs, "series_ticker").map(str::to_owned),
        tickers: if tickers.is_empty() { None } else { Some(tickers) },
        window: None,
        mve_only: false,
    }
    .with_window(pairs)
}

impl MarketsQuery {
    /// Adds the timestamp window and `mve_filter`, refusing the combinations Kalshi refuses:
    /// one window at a time, each only with its compatible statuses.
    fn with_window(mut self, pairs: &Pairs) -> Result<MarketsQuery, ApiError> {
        use StatusFilter::*;
        let groups = [
            (WindowField::Created, "created", &[Unopened, Open][..]),
            (WindowField::Close, "close", &[Closed][..]),
            (WindowField::Settled, "settled", &[Settled][..]),
        ];
        for (field, name, statuses) in groups {
            let min_s = parse_int(pairs, &format!("min_{name}_ts"))?;
            let max_s = parse_int(pairs, &format!("max_{name}_ts"))?;
            if min_s.is_none() && max_s.is_none() {
                continue;
            }
            if self.window.is_some() {
                return Err(ApiError::BadRequest(
                    "timestamp filters are mutually exclusive: use one of created/close/settled"
                        .to_owned(),
                ));
            }
            if self.status.is_some_and(|s| !statuses.contains(&s)) {
                return Err(ApiError::BadRequest(format!(
                    "min/max_{name}_ts is incompatible with this status filter"
                )));
            }
            self.window = Some(TimeWindow { field, min_s, max_s });
        }
        match param(pairs, "mve_filter") {
            None | Some("exclude") => {}
            Some("only") => self.mve_only = true,
            Some(other) => {
                return Err(ApiError::BadRequest(format!("mve_filter: unknown value {other:?}")));
            }
        }
        Ok(self)
    }
}

/// Parses `GET /markets/trades` parameters.
pub fn parse_trades_query(pairs: &Pairs) -> Result<TradesQuery, ApiError> {
    Ok(TradesQuery {
        limit: parse_limit(pairs, MARKETS_LIMIT_DEFAULT, MARKETS_LIMIT_MAX, true)?,
        cursor: parse_cursor(pairs, CursorKind::Trades)?,
        ticker: param(pairs, "ticker").map(str::to_owned),
        min_ts_s: parse_int(pairs, "min_ts")?,
        max_ts_s: parse_int(pairs, "max_ts")?,
        is_block_trade: parse_bool(pairs, "is_block_trade")?,
    })
}

/// Parses `GET /events` parameters.
pub fn parse_events_query(pairs: &Pairs) -> Result<EventsQuery, ApiError> {
    Ok(EventsQuery {
        limit: parse_limit(pairs, EVENTS_LIMIT_MAX, EVENTS_LIMIT_MAX, false)?,
        start: id_from_cursor(parse_cursor(pairs, CursorKind::Events)?),
        status: parse_status(pairs, false)?,
        series_ticker: param(pairs, "series_ticker").map(str::to_owned),
        with_nested_markets: parse_bool(pairs, "with_nested_markets")?.unwrap_or(false),
    })
}

/// Parses the orderbook `depth`: omitted/0 → all (0), 1..=100, else 400.
pub fn parse_depth(pairs: &Pairs) -> Result<usize, ApiError> {
    match parse_int::<i64>(pairs, "depth")? {
        None | Some(0) => Ok(0),
        Some(n) if n >= 1 && n <= i64::from(ORDERBOOK_DEPTH_MAX) => {
            Ok(usize::try_from(n).unwrap_or(0))
        }
        Some(n) => Err(ApiError::BadRequest(format!(
            "depth: {n} is out of range 0..={ORDERBOOK_DEPTH_MAX}"
        ))),
    }
}

// ---------------------------------------------------------------------------------------------
// Pure response builders.
// ---------------------------------------------------------------------------------------------

fn event_of<'v, V: MarketView>(v: &'v V, market: &MarketInfo) -> Option<&'v EventInfo> {
    v.events().get(usize::try_from(market.event).ok()?)
}

fn series_of<'v, V: MarketView>(v: &'v V, event: &EventInfo) -> Option<&'v SeriesInfo> {
    v.series().get(usize::try_from(event.series).ok()?)
}

fn market_at<V: MarketView>(v: &V, id: MarketId) -> Option<&MarketInfo> {
    v.markets().get(usize::try_from(id).ok()?)
}

/// The Market object for one catalog entry.
pub fn market_json<V: MarketView>(v: &V, m: &MarketInfo) -> MarketJson {
    let event = event_of(v, m);
    let t = &m.ticker_state;
    let now_ns = v.now_ns();
    let updated_ns = [
        Some(m.created_ts_ns),
        Some(m.open_ts_ns).filter(|&ts| ts <= now_ns),
        Some(m.close_ts_ns).filter(|&ts| ts <= now_ns),
        m.determined_ts_ns,
        m.settled_ts_ns,
    ]
    .into_iter()
    .flatten()
    .max()
    .unwrap_or(m.created_ts_ns);
    let settlement_timer_s = match (m.determined_ts_ns, m.settled_ts_ns) {
        (Some(d), Some(s)) if s >= d => (s - d) / NS_PER_S,
        _ => SETTLEMENT_TIMER_S_DEFAULT,
    };
    let determined = matches!(m.status, MarketStatus::Determined | MarketStatus::Finalized);
    let result = match m.result {
        Some(side) if determined => side.as_str(),
        _ => "",
    };
    let settlement_value = m.result.filter(|_| determined).map(|side| match side {
        Side::Yes => dollars(DOLLAR_MICROS),
        Side::No => dollars(0),
    });
    let event_title = event.map(|e| e.title.clone()).unwrap_or_default();
    MarketJson {
        ticker: m.ticker.clone(),
        event_ticker: event.map(|e| e.ticker.clone()).unwrap_or_default(),
        market_type: "binary",
        title: event_title.clone(),
        subtitle: String::new(),
        yes_sub_title: m.yes_sub_title.clone(),
        no_sub_title: m.yes_sub_title.clone(),
        created_time: rfc3339(m.created_ts_ns),
        updated_time: rfc3339(updated_ns),
        open_time: rfc3339(m.open_ts_ns),
        close_time: rfc3339(m.close_ts_ns),
        expected_expiration_time: rfc3339(m.determined_ts_ns.unwrap_or(m.close_ts_ns)),
        latest_expiration_time: rfc3339(
            m.close_ts_ns.saturating_add(LATEST_EXPIRATION_AFTER_CLOSE_NS),
        ),
        settlement_timer_seconds: settlement_timer_s,
        status: status_str(m.status),
        yes_bid_dollars: dollars(t.yes_bid_micros),
        yes_bid_size_fp: fp(t.yes_bid_size_centi),
        yes_ask_dollars: dollars(t.yes_ask_micros),
        yes_ask_size_fp: fp(t.yes_ask_size_centi),
        no_bid_dollars: dollars(DOLLAR_MICROS.saturating_sub(t.yes_ask_micros)),
        no_ask_dollars: dollars(DOLLAR_MICROS.saturating_sub(t.yes_bid_micros)),
        last_price_dollars: dollars(t.last_price_micros.unwrap_or(0)),
        previous_yes_bid_dollars: dollars(0),
        previous_yes_ask_dollars: dollars(0),
        previous_price_dollars: dollars(0),
        volume_fp: fp(t.volume_centi),
        volume_24h_fp: fp(t.volume_centi),
        open_interest_fp: fp(t.open_interest_centi),
        notional_value_dollars: dollars(DOLLAR_MICROS),
        result,
        can_close_early: false,
        expiration_value: String::new(),
        settlement_value_dollars: settlement_value,
        settlement_ts: m.settled_ts_ns.filter(|_| m.status == MarketStatus::Finalized).map(rfc3339),
        floor_strike: None,
        cap_strike: None,
        custom_strike: None,
        rules_primary: format!(
            "If {} for {}, then the market resolves to Yes.",
            m.yes_sub_title, event_title
        ),
        rules_secondary: String::new(),
        price_level_structure: m.grid.name(),
        price_ranges: m
            .grid
            .ranges()
            .iter()
            .map(|&(start, end, step)| PriceRangeJson {
                start: dollars(start),
                end: dollars(end),
                step: dollars(step),
            })
            .collect(),
        is_provisional: false,
        exchange_index: 0,
        occurrence_datetime: None,
    }
}

/// `GET /markets`: one page in catalog (market id) order.
pub fn markets_page<V: MarketView>(v: &V, q: &MarketsQuery) -> MarketsPage {
    let empty = MarketsPage { markets: Vec::new(), cursor: String::new() };
    let event_filter = match &q.event_ticker {
        Some(t) => match v.event_id(t) {
            Some(id) => Some(id),
            None => return empty,
        },
        None => None,
    };
    let series_filter = match &q.series_ticker {
        Some(t) => match v.series_id(t) {
            Some(id) => Some(id),
            None => return empty,
        },
        None => None,
    };
    if q.mve_only {
        return empty;
    }
    let matches = |m: &MarketInfo| {
        q.status.is_none_or(|s| s.matches(m.status))
            && q.window.is_none_or(|w| w.matches(m))
            && event_filter.is_none_or(|e| m.event == e)
            && series_filter.is_none_or(|s| event_of(v, m).is_some_and(|event| event.series == s))
    };
    let ids: Box<dyn Iterator<Item = MarketId> + '_> = match &q.tickers {
        Some(tickers) => {
            let mut ids: Vec<MarketId> = tickers.iter().filter_map(|t| v.market_id(t)).collect();
            ids.sort_unstable();
            ids.dedup();
            Box::new(ids.into_iter().filter(move |&id| id >= q.start))
        }
        None => {
            let len = MarketId::try_from(v.markets().len()).unwrap_or(MarketId::MAX);
            Box::new(q.start..len)
        }
    };
    let limit = usize::try_from(q.limit).unwrap_or(usize::MAX);
    let mut markets = Vec::with_capacity(limit.min(v.markets().len()));
    let mut cursor = String::new();
    for id in ids {
        let Some(m) = market_at(v, id) else { continue };
        if !matches(m) {
            continue;
        }
        if markets.len() == limit {
            cursor = encode_cursor(CursorKind::Markets, u64::from(id));
            break;
        }
        markets.push(market_json(v, m));
    }
    MarketsPage { markets, cursor }
}

/// `GET /markets/{ticker}`.
pub fn market_response<V: MarketView>(v: &V, ticker: &str) -> Result<MarketResponse, ApiError> {
    let m = v
        .market_id(ticker)
        .and_then(|id| market_at(v, id))
        .ok_or_else(|| ApiError::NotFound(format!("market {ticker} not found")))?;
    Ok(MarketResponse { market: market_json(v, m) })
}

/// `GET /markets/{ticker}/orderbook`.
pub fn orderbook_response<V: MarketView>(
    v: &V,
    ticker: &str,
    depth: usize,
) -> Result<OrderbookResponse, ApiError> {
    let id = v
        .market_id(ticker)
        .ok_or_else(|| ApiError::NotFound(format!("market {ticker} not found")))?;
    if market_at(v, id).is_none() {
        return Err(ApiError::NotFound(format!("market {ticker} not found")));
    }
    let book = v.book(id, (depth > 0).then_some(depth));
    let ladder = |levels: &[crate::market::model::Level]| {
        let skip = if depth == 0 { 0 } else { levels.len().saturating_sub(depth) };
        levels[skip..]
            .iter()
            .map(|l| [dollars(l.price_micros), fp(l.size_centi)])
            .collect::<Vec<_>>()
    };
    Ok(OrderbookResponse {
        orderbook_fp: OrderbookFp { yes_dollars: ladder(&book.yes), no_dollars: ladder(&book.no) },
    })
}

fn trade_json<V: MarketView>(v: &V, t: &RecentTrade) -> TradeJson {
    TradeJson {
        trade_id: uuid(&t.trade_id),
        ticker: market_at(v, t.market).map(|m| m.ticker.clone()).unwrap_or_default(),
        count_fp: fp(t.count_centi),
        yes_price_dollars: dollars(t.yes_price_micros),
        no_price_dollars: dollars(DOLLAR_MICROS.saturating_sub(t.yes_price_micros)),
        taker_side: t.taker_side.as_str(),
        taker_outcome_side: t.taker_side.as_str(),
        taker_book_side: t.taker_book_side.as_str(),
        is_block_trade: false,
        created_time: rfc3339(t.ts_ns),
    }
}

/// `GET /markets/trades`: newest first; the cursor continues with older trades.
pub fn trades_page<V: MarketView>(v: &V, q: &TradesQuery) -> TradesPage {
    let empty = TradesPage { trades: Vec::new(), cursor: String::new() };
    let market = match &q.ticker {
        Some(t) => match v.market_id(t) {
            Some(id) => Some(id),
            None => return empty,
        },
        None => None,
    };
    // The simulator has no block trades.
    if q.is_block_trade == Some(true) {
        return empty;
    }
    let query = TradeQuery {
        market,
        min_ts_ns: q.min_ts_s.map(|s| s.saturating_mul(NS_PER_S)),
        // Inclusive in whole seconds: every ns of the `max_ts` second.
        max_ts_ns: q.max_ts_s.map(|s| s.saturating_mul(NS_PER_S).saturating_add(NS_PER_S - 1)),
    };
    let limit = usize::try_from(q.limit).unwrap_or(usize::MAX);
    let page = v.trades_page(&query, q.cursor, limit);
    TradesPage {
        trades: page.trades.iter().map(|t| trade_json(v, t)).collect(),
        cursor: page.cursor.map(|c| encode_cursor(CursorKind::Trades, c)).unwrap_or_default(),
    }
}

fn event_json<V: MarketView>(v: &V, e: &EventInfo, markets: Option<Vec<MarketJson>>) -> EventJson {
    let series = series_of(v, e);
    EventJson {
        event_ticker: e.ticker.clone(),
        series_ticker: series.map(|s| s.ticker.clone()).unwrap_or_default(),
        title: e.title.clone(),
        sub_title: e.sub_title.clone(),
        collateral_return_type: if e.mutually_exclusive { "MECNET" } else { "DIRECNET" },
        mutually_exclusive: e.mutually_exclusive,
        category: series.map(|s| s.category.clone()).unwrap_or_default(),
        available_on_brokers: false,
        exchange_index: 0,
        markets,
    }
}

/// `GET /events`: one page in catalog (event id) order.
pub fn events_page<V: MarketView>(v: &V, q: &EventsQuery) -> EventsPage {
    let empty = EventsPage { events: Vec::new(), cursor: String::new(), milestones: Vec::new() };
    let series_filter = match &q.series_ticker {
        Some(t) => match v.series_id(t) {
            Some(id) => Some(id),
            None => return empty,
        },
        None => None,
    };
    // Child markets per event, only when a filter or the nesting needs them.
    let children: Vec<Vec<&MarketInfo>> = if q.status.is_some() || q.with_nested_markets {
        let mut children = vec![Vec::new(); v.events().len()];
        for m in v.markets() {
            if let Some(list) = usize::try_from(m.event).ok().and_then(|e| children.get_mut(e)) {
                list.push(m);
            }
        }
        children
    } else {
        Vec::new()
    };
    let no_children: Vec<&MarketInfo> = Vec::new();
    let limit = usize::try_from(q.limit).unwrap_or(usize::MAX);
    let mut events = Vec::with_capacity(limit.min(v.events().len()));
    let mut cursor = String::new();
    let start = usize::try_from(q.start).unwrap_or(usize::MAX);
    for (pos, e) in v.events().iter().enumerate().skip(start) {
        let kids = children.get(pos).unwrap_or(&no_children);
        if series_filter.is_some_and(|s| e.series != s)
            || q.status.is_some_and(|s| !kids.iter().any(|m| s.matches(m.status)))
        {
            continue;
        }
        if events.len() == limit {
            cursor = encode_cursor(CursorKind::Events, pos as u64);
            break;
        }
        let nested =
            q.with_nested_markets.then(|| kids.iter().map(|m| market_json(v, m)).collect());
        events.push(event_json(v, e, nested));
    }
    EventsPage { events, cursor, milestones: Vec::new() }
}

fn series_json(s: &SeriesInfo) -> SeriesJson {
    SeriesJson {
        ticker: s.ticker.clone(),
        frequency: s.frequency.clone(),
        title: s.title.clone(),
        category: s.category.clone(),
        tags: Vec::new(),
        settlement_sources: Vec::new(),
        contract_url: String::new(),
        contract_terms_url: String::new(),
        fee_type: "quadratic",
        fee_multiplier: 1,
        additional_prohibitions: Vec::new(),
    }
}

/// `GET /series`: every series, optionally of one category.
pub fn series_list<V: MarketView>(v: &V, category: Option<&str>) -> SeriesList {
    SeriesList {
        series: v
            .series()
            .iter()
            .filter(|s| category.is_none_or(|c| s.category == c))
            .map(series_json)
            .collect(),
    }
}

/// `GET /series/{ticker}`.
pub fn series_response<V: MarketView>(v: &V, ticker: &str) -> Result<SeriesResponse, ApiError> {
    v.series()
        .iter()
        .find(|s| s.ticker == ticker)
        .map(|s| SeriesResponse { series: series_json(s) })
        .ok_or_else(|| ApiError::NotFound(format!("series {ticker} not found")))
}

/// `GET /exchange/status`.
pub fn exchange_status_json(flags: ExchangeStatusFlags) -> ExchangeStatusJson {
    ExchangeStatusJson {
        exchange_active: flags.exchange_active,
        trading_active: flags.trading_active,
        exchange_estimated_resume_time: flags.estimated_resume_ns.map(rfc3339),
        intra_exchange_transfers_active: flags.exchange_active,
        exchange_index_statuses: vec![ExchangeIndexStatusJson {
            exchange_index: 0,
            description: "Default",
            exchange_active: flags.exchange_active,
            trading_active: flags.trading_active,
            intra_exchange_transfers_active: flags.exchange_active,
        }],
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP.
// ---------------------------------------------------------------------------------------------

struct Shared<Q> {
    query: Q,
    faults: RestFaults,
    limiter: Option<TokenBucket>,
}

type St<Q> = State<Arc<Shared<Q>>>;
type RawPairs = Result<Query<Pairs>, axum::extract::rejection::QueryRejection>;

/// The REST router: every endpoint under [`API_PREFIX`], behind the rate limiter and the fault
/// hooks. Mount it on a loopback listener with `axum::serve`.
pub fn router<Q: ExchangeQuery>(query: Q, cfg: RestConfig, faults: RestFaults) -> Router {
    let shared =
        Arc::new(Shared { query, faults, limiter: cfg.rate_limit.as_ref().map(TokenBucket::new) });
    let api = Router::new()
        .route("/exchange/status", get(get_exchange_status::<Q>))
        .route("/markets", get(get_markets::<Q>))
        .route("/markets/trades", get(get_trades::<Q>))
        .route("/markets/{ticker}", get(get_market::<Q>))
        .route("/markets/{ticker}/orderbook", get(get_orderbook::<Q>))
        .route("/events", get(get_events::<Q>))
        .route("/series", get(get_series_list::<Q>))
        .route("/series/{ticker}", get(get_series::<Q>));
    Router::new()
        .nest(API_PREFIX, api)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(shared.clone(), gate::<Q>))
        .with_state(shared)
}

/// Rate limiter, then forced faults, then the endpoint.
async fn gate<Q: ExchangeQuery>(State(st): St<Q>, req: Request, next: Next) -> Response {
    if st.limiter.as_ref().is_some_and(|l| !l.try_take()) {
        st.faults.record(429, true);
        return too_many_requests();
    }
    let fault = st.faults.take();
    let status = match fault {
        Some(RestFault::TooManyRequests) => 429,
        Some(RestFault::InternalError) => 500,
        Some(RestFault::ServiceUnavailable) => 503,
        None => 0,
    };
    st.faults.record(status, false);
    match fault {
        Some(RestFault::TooManyRequests) => too_many_requests(),
        Some(RestFault::InternalError) => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_server_error",
            "injected fault",
        ),
        Some(RestFault::ServiceUnavailable) => {
            error_response(StatusCode::SERVICE_UNAVAILABLE, "service_unavailable", "injected fault")
        }
        None => next.run(req).await,
    }
}

fn too_many_requests() -> Response {
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::CONTENT_TYPE, "application/json")],
        TOO_MANY_REQUESTS_BODY,
    )
        .into_response()
}

async fn not_found() -> Response {
    ApiError::NotFound("no such endpoint".to_owned()).into_response()
}

fn pairs(raw: RawPairs) -> Result<Pairs, ApiError> {
    raw.map(|Query(p)| p).map_err(|e| ApiError::BadRequest(format!("query string: {e}")))
}

/// Runs `build` in the exchange task and answers with its JSON.
async fn answer<Q, T, F>(q: &Q, build: F) -> Response
where
    Q: ExchangeQuery,
    T: Serialize + Send + 'static,
    F: FnOnce(&Q::View) -> Result<T, ApiError> + Send + 'static,
{
    match q.query(build).await {
        Some(Ok(body)) => json_response(StatusCode::OK, &body),
        Some(Err(e)) => e.into_response(),
        None => ApiError::Unavailable.into_response(),
    }
}

async fn get_exchange_status<Q: ExchangeQuery>(State(st): St<Q>) -> Response {
    json_response(StatusCode::OK, &exchange_status_json(st.faults.exchange_status()))
}

async fn get_markets<Q: ExchangeQuery>(State(st): St<Q>, raw: RawPairs) -> Response {
    match pairs(raw).and_then(|p| parse_markets_query(&p)) {
        Ok(q) => answer(&st.query, move |v: &Q::View| Ok(markets_page(v, &q))).await,
        Err(e) => e.into_response(),
    }
}

async fn get_market<Q: ExchangeQuery>(State(st): St<Q>, Path(ticker): Path<String>) -> Response {
    answer(&st.query, move |v: &Q::View| market_response(v, &ticker)).await
}

async fn get_orderbook<Q: ExchangeQuery>(
    State(st): St<Q>,
    Path(ticker): Path<String>,
    raw: RawPairs,
) -> Response {
    match pairs(raw).and_then(|p| parse_depth(&p)) {
        Ok(depth) => {
            answer(&st.query, move |v: &Q::View| orderbook_response(v, &ticker, depth)).await
        }
        Err(e) => e.into_response(),
    }
}

async fn get_trades<Q: ExchangeQuery>(State(st): St<Q>, raw: RawPairs) -> Response {
    match pairs(raw).and_then(|p| parse_trades_query(&p)) {
        Ok(q) => answer(&st.query, move |v: &Q::View| Ok(trades_page(v, &q))).await,
        Err(e) => e.into_response(),
    }
}

async fn get_events<Q: ExchangeQuery>(State(st): St<Q>, raw: RawPairs) -> Response {
    match pairs(raw).and_then(|p| parse_events_query(&p)) {
        Ok(q) => answer(&st.query, move |v: &Q::View| Ok(events_page(v, &q))).await,
        Err(e) => e.into_response(),
    }
}

async fn get_series_list<Q: ExchangeQuery>(State(st): St<Q>, raw: RawPairs) -> Response {
    match pairs(raw) {
        Ok(p) => {
            let category = param(&p, "category").map(str::to_owned);
            answer(&st.query, move |v: &Q::View| Ok(series_list(v, category.as_deref()))).await
        }
        Err(e) => e.into_response(),
    }
}

async fn get_series<Q: ExchangeQuery>(State(st): St<Q>, Path(ticker): Path<String>) -> Response {
    answer(&st.query, move |v: &Q::View| series_response(v, &ticker)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::model::PriceGrid;

    #[test]
    fn dollars_are_four_decimals_or_six_when_finer() {
        assert_eq!(dollars(0), "0.0000");
        assert_eq!(dollars(420_000), "0.4200");
        assert_eq!(dollars(1_000), "0.0010");
        assert_eq!(dollars(999_000), "0.9990");
        assert_eq!(dollars(DOLLAR_MICROS), "1.0000");
        assert_eq!(dollars(123_456), "0.123456");
        assert_eq!(dollars(100), "0.0001");
    }

    #[test]
    fn fp_is_always_two_decimals() {
        assert_eq!(fp(0), "0.00");
        assert_eq!(fp(1), "0.01");
        assert_eq!(fp(1_300), "13.00");
        assert_eq!(fp(7_477), "74.77");
        assert_eq!(fp(-250), "-2.50");
        assert_eq!(fp(i64::MIN), "-92233720368547758.08");
    }

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000 * NS_PER_S), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(1_709_164_800 * NS_PER_S), "2024-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_953_600 * NS_PER_S), "2026-11-29T12:00:00Z");
        assert_eq!(rfc3339(951_782_400 * NS_PER_S), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(4_107_542_399 * NS_PER_S), "2100-02-28T23:59:59Z");
        assert_eq!(rfc3339(1_772_390_641 * NS_PER_S + 921_884_000), "2026-03-01T18:44:01.921884Z");
        assert_eq!(rfc3339(1_772_390_641 * NS_PER_S + 500_000_000), "2026-03-01T18:44:01.5Z");
        assert_eq!(rfc3339(1_772_390_641 * NS_PER_S + 1), "2026-03-01T18:44:01.000000001Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999999999Z");
    }

    #[test]
    fn rfc3339_day_boundaries_walk_the_calendar() {
        // Every day from 1970 to 2100 follows the previous one: month lengths and leap years.
        let mut prev = (1969, 12, 31);
        for day in 0..47_482_i64 {
            let text = rfc3339(day * NS_PER_DAY_TEST);
            let y: i64 = text[0..4].parse().unwrap_or(0);
            let m: i64 = text[5..7].parse().unwrap_or(0);
            let d: i64 = text[8..10].parse().unwrap_or(0);
            let leap = (prev.0 % 4 == 0 && prev.0 % 100 != 0) || prev.0 % 400 == 0;
            let month_len = match prev.1 {
                2 if leap => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            let expected = if prev.2 < month_len {
                (prev.0, prev.1, prev.2 + 1)
            } else if prev.1 < 12 {
                (prev.0, prev.1 + 1, 1)
            } else {
                (prev.0 + 1, 1, 1)
            };
            assert_eq!((y, m, d), expected, "day {day}: {text}");
            prev = expected;
        }
    }

    const NS_PER_DAY_TEST: i64 = 86_400 * NS_PER_S;

    #[test]
    fn uuid_layout() {
        let mut id = [0u8; 16];
        for (i, b) in id.iter_mut().enumerate() {
            *b = u8::try_from(i * 17).unwrap_or(0);
        }
        assert_eq!(uuid(&id), "00112233-4455-6677-8899-aabbccddeeff");
    }

    #[test]
    fn status_vocabulary_and_filters() {
        use MarketStatus::*;
        let all = [Initialized, Active, Inactive, Closed, Determined, Finalized];
        let names: Vec<&str> = all.iter().map(|&s| status_str(s)).collect();
        assert_eq!(
            names,
            ["initialized", "active", "inactive", "closed", "determined", "finalized"]
        );
        let passing =
            |f: StatusFilter| all.iter().copied().filter(|&s| f.matches(s)).collect::<Vec<_>>();
        assert_eq!(passing(StatusFilter::Unopened), [Initialized]);
        assert_eq!(passing(StatusFilter::Open), [Active]);
        assert_eq!(passing(StatusFilter::Paused), [Inactive]);
        assert_eq!(passing(StatusFilter::Closed), [Closed, Determined]);
        assert_eq!(passing(StatusFilter::Settled), [Finalized]);
        assert_eq!(StatusFilter::parse("paused", true), Some(StatusFilter::Paused));
        assert_eq!(StatusFilter::parse("paused", false), None);
        assert_eq!(StatusFilter::parse("active", true), None, "`active` is not a filter value");
        assert_eq!(StatusFilter::parse("", true), None);
    }

    #[test]
    fn cursors_round_trip_and_refuse_other_listings() {
        for pos in [0, 1, 999, u64::from(u32::MAX), u64::MAX] {
            for kind in [CursorKind::Markets, CursorKind::Events, CursorKind::Trades] {
                let c = encode_cursor(kind, pos);
                assert!(c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
                assert_eq!(decode_cursor(kind, &c), Some(pos));
            }
        }
        let m = encode_cursor(CursorKind::Markets, 5);
        assert_eq!(decode_cursor(CursorKind::Events, &m), None);
        assert_eq!(decode_cursor(CursorKind::Trades, &m), None);
        for bad in ["", "!!", "bTo", "bTotMQ", "bTox_", "eDo1"] {
            assert_eq!(decode_cursor(CursorKind::Markets, bad), None, "{bad}");
        }
    }

    #[test]
    fn tapered_grid_ranges_cover_zero_to_one_without_gaps() {
        for grid in [PriceGrid::LinearCent, PriceGrid::DeciCent, PriceGrid::TaperedDeciCent] {
            let ranges = grid.ranges();
            assert_eq!(ranges.first().map(|r| r.0), Some(0));
            assert_eq!(ranges.last().map(|r| r.1), Some(DOLLAR_MICROS));
            for pair in ranges.windows(2) {
                assert_eq!(pair[0].1, pair[1].0);
            }
            for &(start, end, step) in ranges {
                assert_eq!((end - start) % step, 0);
            }
        }
    }

    #[test]
    fn token_bucket_refills_exactly() {
        let clock = ManualClock::new();
        let bucket = TokenBucket::new(&RateLimit {
            capacity: 3,
            refill_per_s: 2,
            clock: RestClock::Manual(clock.clone()),
        });
        let take = |n: usize| (0..n).filter(|_| bucket.try_take()).count();
        assert_eq!(take(5), 3);
        clock.advance_ns(499_999_999);
        assert_eq!(take(1), 0);
        clock.advance_ns(1);
        assert_eq!(take(2), 1);
        clock.advance_ns(10 * NS_PER_S);
        assert_eq!(take(10), 3);
        // A clock that steps back refills nothing and breaks nothing.
        clock.advance_ns(-NS_PER_S);
        assert_eq!(take(1), 0);
        clock.advance_ns(NS_PER_S + 500_000_000);
        assert_eq!(take(2), 1);
    }

    #[test]
    fn fault_bursts_drain_in_order() {
        let faults = RestFaults::new();
        faults.fail_next(0, RestFault::InternalError);
        faults.fail_next(2, RestFault::TooManyRequests);
        faults.fail_next(1, RestFault::ServiceUnavailable);
        assert_eq!(faults.pending(), 3);
        let drained: Vec<_> = (0..4).map(|_| faults.take()).collect();
        assert_eq!(
            drained,
            [
                Some(RestFault::TooManyRequests),
                Some(RestFault::TooManyRequests),
                Some(RestFault::ServiceUnavailable),
                None
            ]
        );
    }

    #[test]
    fn parameter_bounds() {
        let q = |s: &str| -> Pairs {
            s.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (k.to_owned(), v.to_owned())
                })
                .collect()
        };
        assert_eq!(parse_markets_query(&q("")), Ok(MarketsQuery::default()));
        assert_eq!(parse_markets_query(&q("limit=1000")).map(|m| m.limit), Ok(1000));
        assert_eq!(parse_markets_query(&q("limit=0")).map(|m| m.limit), Ok(100));
        assert!(parse_markets_query(&q("limit=1001")).is_err());
        assert_eq!(
            parse_markets_query(&q("tickers=A,,B&tickers=C")).map(|m| m.tickers),
            Ok(Some(vec!["A".to_owned(), "B".to_owned(), "C".to_owned()]))
        );
        let many = format!("tickers={}", vec!["T"; TICKERS_FILTER_MAX + 1].join(","));
        assert!(parse_markets_query(&q(&many)).is_err());
        let window = |s: &str| parse_markets_query(&q(s)).map(|m| m.window);
        assert_eq!(
            window("min_close_ts=5&status=closed"),
            Ok(Some(TimeWindow { field: WindowField::Close, min_s: Some(5), max_s: None }))
        );
        assert_eq!(
            window("max_created_ts=9&status=open"),
            Ok(Some(TimeWindow { field: WindowField::Created, min_s: None, max_s: Some(9) }))
        );
        assert!(window("min_close_ts=5&status=open").is_err());
        assert!(window("min_settled_ts=5&status=closed").is_err());
        assert!(window("min_created_ts=5&max_close_ts=9").is_err());
        assert!(parse_markets_query(&q("mve_filter=maybe")).is_err());
        assert_eq!(parse_markets_query(&q("mve_filter=only")).map(|m| m.mve_only), Ok(true));
        assert_eq!(parse_events_query(&q("")).map(|e| e.limit), Ok(200));
        assert!(parse_events_query(&q("limit=0")).is_err());
        assert!(parse_events_query(&q("limit=201")).is_err());
        assert_eq!(parse_depth(&q("")), Ok(0));
        assert_eq!(parse_depth(&q("depth=100")), Ok(100));
        assert!(parse_depth(&q("depth=101")).is_err());
        assert!(parse_depth(&q("depth=-1")).is_err());
        assert_eq!(
            parse_trades_query(&q("min_ts=5&max_ts=9")).map(|t| (t.min_ts_s, t.max_ts_s)),
            Ok((Some(5), Some(9)))
        );
    }

    /// A small seeded engine run until it has traded: (exchange, the trades it emitted in order).
    fn engine_run() -> (Exchange, Vec<crate::market::model::ExchEvent>) {
        let cfg = crate::market::MarketConfig { seed: 7, markets: 300, ..Default::default() };
        let mut ex = Exchange::new(cfg);
        let mut events = Vec::new();
        while events.len() < 30_000 {
            ex.next_batch(&mut events);
        }
        let trades = events
            .into_iter()
            .filter(|e| matches!(e.kind, crate::market::model::ExchEventKind::Trade { .. }))
            .collect();
        (ex, trades)
    }

    #[test]
    fn engine_markets_page_through_the_whole_catalog_once() {
        let (ex, _) = engine_run();
        let mut seen = Vec::new();
        let mut q = MarketsQuery { limit: 7, ..MarketsQuery::default() };
        loop {
            let page = markets_page(&ex, &q);
            seen.extend(page.markets.iter().map(|m| m.ticker.clone()));
            if page.cursor.is_empty() {
                break;
            }
            let next = decode_cursor(CursorKind::Markets, &page.cursor);
            q.start = next.and_then(|n| MarketId::try_from(n).ok()).unwrap_or(MarketId::MAX);
        }
        let all: Vec<String> = ex.markets().iter().map(|m| m.ticker.clone()).collect();
        assert!(all.len() >= 300);
        assert_eq!(seen, all);

        // Status filters partition the catalog exactly as §9 maps them.
        let filters = [
            StatusFilter::Unopened,
            StatusFilter::Open,
            StatusFilter::Paused,
            StatusFilter::Closed,
            StatusFilter::Settled,
        ];
        let mut total = 0;
        for f in filters {
            let page = markets_page(
                &ex,
                &MarketsQuery {
                    limit: MARKETS_LIMIT_MAX,
                    status: Some(f),
                    ..MarketsQuery::default()
                },
            );
            let expected = ex.markets().iter().filter(|m| f.matches(m.status)).count();
            assert_eq!(page.markets.len(), expected, "{f:?}");
            total += expected;
        }
        assert_eq!(total, ex.markets().len());
    }

    #[test]
    fn engine_market_fields_come_from_the_engine_state() {
        let (ex, _) = engine_run();
        for m in ex.markets() {
            let json = market_response(&ex, &m.ticker).map(|r| r.market);
            let Ok(json) = json else { panic!("{} not served", m.ticker) };
            let t = &m.ticker_state;
            assert_eq!(json.status, status_str(m.status));
            assert_eq!(json.event_ticker, ex.events()[m.event as usize].ticker);
            assert_eq!(json.yes_bid_dollars, dollars(t.yes_bid_micros));
            assert_eq!(json.yes_ask_dollars, dollars(t.yes_ask_micros));
            assert_eq!(json.no_bid_dollars, dollars(DOLLAR_MICROS - t.yes_ask_micros));
            assert_eq!(json.no_ask_dollars, dollars(DOLLAR_MICROS - t.yes_bid_micros));
            assert_eq!(json.volume_fp, fp(t.volume_centi));
            assert_eq!(json.open_interest_fp, fp(t.open_interest_centi));
            assert_eq!(json.close_time, rfc3339(m.close_ts_ns));
            assert_eq!(json.price_level_structure, m.grid.name());
            // The top of book the market reports is the book's.
            let book = ex.book(ex.market_id(&m.ticker).unwrap_or(0), Some(1));
            assert_eq!(
                json.yes_bid_dollars,
                dollars(book.yes.last().map_or(0, |l| l.price_micros))
            );
        }
        assert!(matches!(market_response(&ex, "KXNOPE"), Err(ApiError::NotFound(_))));
    }

    #[test]
    fn engine_orderbook_is_the_engine_book() {
        let (ex, _) = engine_run();
        let mut nonempty = 0;
        for (id, m) in ex.markets().iter().enumerate() {
            let id = MarketId::try_from(id).unwrap_or(0);
            let full = ex.book(id, None);
            for depth in [0, 1, 3] {
                let Ok(r) = orderbook_response(&ex, &m.ticker, depth) else {
                    panic!("{}", m.ticker)
                };
                let keep = |n: usize| if depth == 0 { n } else { n.min(depth) };
                assert_eq!(r.orderbook_fp.yes_dollars.len(), keep(full.yes.len()));
                assert_eq!(r.orderbook_fp.no_dollars.len(), keep(full.no.len()));
                if let (Some(best), Some(l)) = (full.yes.last(), r.orderbook_fp.yes_dollars.last())
                {
                    assert_eq!(l, &[dollars(best.price_micros), fp(best.size_centi)]);
                }
            }
            nonempty += usize::from(!full.yes.is_empty());
        }
        assert!(nonempty > 0, "no market has a book");
    }

    #[test]
    fn engine_trades_endpoint_lists_the_emitted_trades_newest_first() {
        use crate::market::model::ExchEventKind;
        let (ex, emitted) = engine_run();
        assert!(emitted.len() > 50, "only {} trades", emitted.len());
        let mut listed = Vec::new();
        let mut q = TradesQuery { limit: 37, ..TradesQuery::default() };
        loop {
            let page = trades_page(&ex, &q);
            listed.extend(page.trades);
            if page.cursor.is_empty() {
                break;
            }
            q.cursor = decode_cursor(CursorKind::Trades, &page.cursor);
        }
        let expected: Vec<TradeJson> = emitted
            .iter()
            .rev()
            .map(|e| match e.kind {
                ExchEventKind::Trade {
                    market,
                    trade_id,
                    yes_price_micros,
                    count_centi,
                    taker_side,
                    taker_book_side,
                } => TradeJson {
                    trade_id: uuid(&trade_id),
                    ticker: ex.markets()[market as usize].ticker.clone(),
                    count_fp: fp(count_centi),
                    yes_price_dollars: dollars(yes_price_micros),
                    no_price_dollars: dollars(DOLLAR_MICROS - yes_price_micros),
                    taker_side: taker_side.as_str(),
                    taker_outcome_side: taker_side.as_str(),
                    taker_book_side: taker_book_side.as_str(),
                    is_block_trade: false,
                    created_time: rfc3339(e.ts_ns),
                },
                _ => unreachable!("filtered to trades"),
            })
            .collect();
        assert_eq!(listed, expected);
    }

    #[test]
    fn engine_events_nest_every_market_once() {
        let (ex, _) = engine_run();
        let page =
            events_page(&ex, &EventsQuery { with_nested_markets: true, ..EventsQuery::default() });
        let mut nested: Vec<String> = page
            .events
            .iter()
            .flat_map(|e| e.markets.iter().flatten().map(|m| m.ticker.clone()))
            .collect();
        if ex.events().len() <= 200 {
            nested.sort();
            let mut all: Vec<String> = ex.markets().iter().map(|m| m.ticker.clone()).collect();
            all.sort();
            assert_eq!(nested, all);
        }
        let series = series_list(&ex, None);
        assert_eq!(series.series.len(), ex.series().len());
    }
}
