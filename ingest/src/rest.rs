//! Blocking client for Kalshi's REST read endpoints: `GET /exchange/status`, `GET /markets`
//! (paged) and `GET /markets/{ticker}/orderbook`, used by the market registry and the snapshot
//! poller on plain threads (never on a glommio executor).
//!
//! Flow of one request: client-side token bucket (waits for a token on the injected
//! [`Clock`]) → optional `KALSHI-ACCESS-*` signing → HTTP over ureq (rustls; a custom CA file
//! for the simulator's self-signed certificate) → 429 or 5xx: back off exponentially and retry
//! up to [`RestLimits::attempts_max`] → typed response parsed exactly (prices and sizes through
//! [`parse_scaled`]: micro-dollars and hundredths, never floats).
//!
//! Time is injected ([`Clock`]) so a test on a manual clock sees exact token counts and
//! backoff delays; [`SystemClock`] is the production clock.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kdp_engine::event::Level;
use serde::Deserialize;
use serde_json::Value;

use crate::auth::{AuthError, Signer};
use crate::wire::parse_scaled;

/// Kalshi's production REST base URL (the signed path is everything after the host).
pub const KALSHI_BASE_URL: &str = "https://api.elections.kalshi.com/trade-api/v2";

/// Default read budget, requests per second: Kalshi's Basic tier (200 tokens/s at the default
/// cost of 10 tokens a GET ≈ 20 GET/s; before 2026-04 it was 20 req/s flat).
pub const READ_REFILL_PER_S_DEFAULT: u32 = 20;
/// Default bucket capacity, requests: Basic read buckets hold 2 s of budget.
pub const READ_CAPACITY_DEFAULT: u32 = 2 * READ_REFILL_PER_S_DEFAULT;
/// Largest `limit` `GET /markets` accepts (Kalshi answers 400 above it).
pub const MARKETS_PAGE_LIMIT_MAX: u32 = 1000;
/// First delay after a 429/5xx/transport failure: two refill periods of the Basic bucket
/// (50 ms each), enough for the server's bucket to hold a token again.
pub const BACKOFF_MS_MIN: u64 = 100;
/// Longest delay between retries: a rate-limited key recovers within its 2 s bucket, a
/// restarting endpoint within seconds; waiting longer only delays the registry's next step.
pub const BACKOFF_MS_MAX: u64 = 10_000;
/// Tries per request (1 + retries): 100 ms doubling reaches the 10 s ceiling on the 8th try,
/// ≈ 23 s in all, before the caller gets the error and decides.
pub const ATTEMPTS_MAX: u32 = 8;
/// Deadline of one HTTP exchange (connect, send, read): a stalled server cannot hang a thread.
pub const REQUEST_TIMEOUT_MS: u64 = 15_000;
/// Largest response body read: a full `/markets` page (1000 markets × ~1.5 KiB) is ~1.5 MiB;
/// 16 MiB leaves room without letting a broken server exhaust memory.
pub const RESPONSE_BYTES_MAX: u64 = 16 << 20;
/// How much of an error body an error message quotes.
const ERROR_BODY_CHARS_MAX: usize = 300;

const NS_PER_S: i64 = 1_000_000_000;
const NS_PER_MS: i64 = 1_000_000;
/// $1 in micro-dollars.
const DOLLAR_MICROS: i64 = 1_000_000;

// ---------------------------------------------------------------------------------------------
// Time.
// ---------------------------------------------------------------------------------------------

/// The time source of the token bucket, the backoff and receive times.
pub trait Clock: Send + Sync {
    /// Monotonic reading, ns (any origin).
    fn now_ns(&self) -> i64;
    /// Wall-clock time, ns since the Unix epoch (receive times, signing).
    fn unix_ns(&self) -> i64;
    /// Waits `ns` (a manual clock advances itself instead).
    fn sleep_ns(&self, ns: i64);
}

/// Real time: `Instant` for the bucket, `SystemTime` for receive times, `thread::sleep`.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    /// A clock whose monotonic reading starts at 0 now.
    pub fn new() -> SystemClock {
        SystemClock { origin: Instant::now() }
    }
}

impl Default for SystemClock {
    fn default() -> SystemClock {
        SystemClock::new()
    }
}

impl Clock for SystemClock {
    fn now_ns(&self) -> i64 {
        i64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(i64::MAX)
    }
    fn unix_ns(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
    }
    fn sleep_ns(&self, ns: i64) {
        if let Ok(ns) = u64::try_from(ns) {
            std::thread::sleep(Duration::from_nanos(ns));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Token bucket.
// ---------------------------------------------------------------------------------------------

/// Read budget: a token bucket of `capacity` requests refilled at `refill_per_s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateBudget {
    /// Largest burst, requests.
    pub capacity: u32,
    /// Requests added per second.
    pub refill_per_s: u32,
}

impl Default for RateBudget {
    fn default() -> RateBudget {
        RateBudget { capacity: READ_CAPACITY_DEFAULT, refill_per_s: READ_REFILL_PER_S_DEFAULT }
    }
}

/// Client-side token bucket in nano-requests: a request costs `NS_PER_S` units and every
/// elapsed ns adds `refill_per_s` units, so refill is exact in integers (the same arithmetic
/// as the simulator's server-side limiter, so equal budgets on one clock never disagree).
#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity_units: i64,
    refill_per_s: i64,
    units: i64,
    last_ns: i64,
}

impl TokenBucket {
    /// A full bucket at `now_ns`. Panics on a zero budget (it could never send).
    pub fn new(budget: RateBudget, now_ns: i64) -> TokenBucket {
        assert!(budget.capacity > 0 && budget.refill_per_s > 0, "zero read budget: {budget:?}");
        let capacity_units = i64::from(budget.capacity) * NS_PER_S;
        TokenBucket {
            capacity_units,
            refill_per_s: i64::from(budget.refill_per_s),
            units: capacity_units,
            last_ns: now_ns,
        }
    }

    fn refill(&mut self, now_ns: i64) {
        let elapsed_ns = now_ns.saturating_sub(self.last_ns).max(0);
        self.last_ns = self.last_ns.max(now_ns);
        let added = elapsed_ns.saturating_mul(self.refill_per_s);
        self.units = self.units.saturating_add(added).min(self.capacity_units);
    }

    /// Takes a token at `now_ns`; otherwise returns how many ns until one is available.
    pub fn try_take(&mut self, now_ns: i64) -> Result<(), i64> {
        self.refill(now_ns);
        if self.units >= NS_PER_S {
            self.units -= NS_PER_S;
            Ok(())
        } else {
            let missing = NS_PER_S - self.units;
            Err((missing + self.refill_per_s - 1) / self.refill_per_s)
        }
    }

    /// Empties the bucket: the server said 429, so our view of the budget was too generous
    /// (another client on the key, or a clock skew); start again from nothing.
    pub fn drain(&mut self, now_ns: i64) {
        self.refill(now_ns);
        self.units = 0;
    }

    /// Whole requests available at `now_ns`.
    pub fn available(&mut self, now_ns: i64) -> i64 {
        self.refill(now_ns);
        self.units / NS_PER_S
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration and errors.
// ---------------------------------------------------------------------------------------------

/// Retry and size bounds of the client (defaults: the named constants above).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestLimits {
    /// Tries per request, including the first.
    pub attempts_max: u32,
    /// First backoff delay, ms.
    pub backoff_ms_min: u64,
    /// Backoff ceiling, ms.
    pub backoff_ms_max: u64,
    /// Deadline of one HTTP exchange, ms.
    pub request_timeout_ms: u64,
    /// Largest body read, bytes.
    pub response_bytes_max: u64,
}

impl Default for RestLimits {
    fn default() -> RestLimits {
        RestLimits {
            attempts_max: ATTEMPTS_MAX,
            backoff_ms_min: BACKOFF_MS_MIN,
            backoff_ms_max: BACKOFF_MS_MAX,
            request_timeout_ms: REQUEST_TIMEOUT_MS,
            response_bytes_max: RESPONSE_BYTES_MAX,
        }
    }
}

/// Everything the client needs.
#[derive(Clone)]
pub struct RestConfig {
    /// Base URL including the API prefix, e.g. [`KALSHI_BASE_URL`] or the simulator's
    /// `http://127.0.0.1:PORT/trade-api/v2`.
    pub base_url: String,
    /// PEM CA certificate(s) to trust instead of the Mozilla roots (the simulator's
    /// self-signed certificate); `None` = Mozilla roots.
    pub ca_file: Option<PathBuf>,
    /// Signs every request when set.
    pub signer: Option<Arc<Signer>>,
    /// Client-side read budget.
    pub budget: RateBudget,
    /// Retry, timeout and size bounds.
    pub limits: RestLimits,
}

impl std::fmt::Debug for RestConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestConfig")
            .field("base_url", &self.base_url)
            .field("ca_file", &self.ca_file)
            .field("signed", &self.signer.is_some())
            .field("budget", &self.budget)
            .field("limits", &self.limits)
            .finish()
    }
}

impl RestConfig {
    /// Unsigned, default budget and limits, Mozilla roots.
    pub fn new(base_url: impl Into<String>) -> RestConfig {
        RestConfig {
            base_url: base_url.into(),
            ca_file: None,
            signer: None,
            budget: RateBudget::default(),
            limits: RestLimits::default(),
        }
    }
}

/// Why a REST call failed.
#[derive(Debug, thiserror::Error)]
pub enum RestError {
    /// The base URL is not `http(s)://host[:port]/prefix`.
    #[error("REST base URL {0:?} is not of the form https://host[:port]/trade-api/v2")]
    BadBaseUrl(String),
    /// The CA file could not be read or holds no certificate.
    #[error("cannot use CA file {path}: {detail}; pass a PEM certificate file")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// Signing failed.
    #[error("cannot sign the request: {0}")]
    Auth(#[from] AuthError),
    /// Still 429 after every attempt: the key's read budget is exhausted (another client on
    /// the same key, or a budget configured above the account's tier).
    #[error(
        "GET {path}: rate limited (429) on all {attempts} attempts; lower the configured read budget or check other clients on this key"
    )]
    RateLimited {
        /// Request path.
        path: String,
        /// Tries made.
        attempts: u32,
    },
    /// Still 5xx after every attempt.
    #[error("GET {path}: server error {status} on all {attempts} attempts: {body}")]
    Server {
        /// Request path.
        path: String,
        /// Last status.
        status: u16,
        /// Tries made.
        attempts: u32,
        /// Start of the last body.
        body: String,
    },
    /// A 4xx other than 429 (400 bad parameter, 401 bad signature, 404 unknown ticker): not
    /// retried.
    #[error("GET {path}: HTTP {status}: {body}")]
    Status {
        /// Request path.
        path: String,
        /// The status.
        status: u16,
        /// Start of the body.
        body: String,
    },
    /// Connection-level failure on every attempt (refused, reset, timeout, TLS).
    #[error("GET {path}: {detail} (after {attempts} attempts); check the REST URL and network")]
    Transport {
        /// Request path.
        path: String,
        /// Tries made.
        attempts: u32,
        /// The last error.
        detail: String,
    },
    /// The body does not have the documented shape.
    #[error("GET {path}: unexpected response: {detail}")]
    Decode {
        /// Request path.
        path: String,
        /// What did not parse.
        detail: String,
    },
}

impl RestError {
    /// Whether this is a 404 (e.g. a market just created, or gone).
    pub fn is_not_found(&self) -> bool {
        matches!(self, RestError::Status { status: 404, .. })
    }
}

// ---------------------------------------------------------------------------------------------
// Typed responses.
// ---------------------------------------------------------------------------------------------

/// `GET /exchange/status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeStatus {
    /// `exchange_active`: false during maintenance.
    pub exchange_active: bool,
    /// `trading_active`: false outside trading hours or during a pause.
    pub trading_active: bool,
    /// `exchange_estimated_resume_time` as sent (RFC 3339), when paused.
    pub estimated_resume_time: Option<String>,
}

impl ExchangeStatus {
    /// Both switches on.
    pub fn is_active(&self) -> bool {
        self.exchange_active && self.trading_active
    }
}

/// A `status=` filter value of `GET /markets` (one per request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ListStatus {
    /// `unopened` → `initialized`.
    Unopened,
    /// `open` → `active`.
    Open,
    /// `paused` → `inactive`.
    Paused,
    /// `closed` → closed, determined, disputed, amended.
    Closed,
    /// `settled` → `finalized`.
    Settled,
}

impl ListStatus {
    /// The filter value on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ListStatus::Unopened => "unopened",
            ListStatus::Open => "open",
            ListStatus::Paused => "paused",
            ListStatus::Closed => "closed",
            ListStatus::Settled => "settled",
        }
    }

    /// Parses a filter value (config files).
    pub fn parse(text: &str) -> Option<ListStatus> {
        [
            ListStatus::Unopened,
            ListStatus::Open,
            ListStatus::Paused,
            ListStatus::Closed,
            ListStatus::Settled,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }

    /// The filter a market's `status` field falls under (`None` for an unknown status).
    pub fn of_market_status(status: &str) -> Option<ListStatus> {
        match status {
            "initialized" => Some(ListStatus::Unopened),
            "active" => Some(ListStatus::Open),
            "inactive" => Some(ListStatus::Paused),
            "closed" | "determined" | "disputed" | "amended" => Some(ListStatus::Closed),
            "finalized" => Some(ListStatus::Settled),
            _ => None,
        }
    }
}

/// One market of a `GET /markets` page: the fields the registry needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarketSummary {
    /// Market ticker.
    pub ticker: String,
    /// Event ticker.
    pub event_ticker: String,
    /// `status` as sent (`active`, `initialized`, ...).
    pub status: String,
}

/// One page of `GET /markets`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarketsPage {
    /// The markets, in the server's order.
    pub markets: Vec<MarketSummary>,
    /// Cursor of the next page; `None` on the last page (absent or empty on the wire).
    pub cursor: Option<String>,
}

/// `GET /markets/{ticker}/orderbook`: the two bid ladders, ascending, best last, as sent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OrderBook {
    /// YES bids, YES prices.
    pub yes: Vec<Level>,
    /// NO bids, NO prices.
    pub no: Vec<Level>,
}

#[derive(Deserialize)]
struct WireStatus {
    exchange_active: bool,
    trading_active: bool,
    #[serde(default)]
    exchange_estimated_resume_time: Option<String>,
}

#[derive(Deserialize)]
struct WireMarket {
    ticker: String,
    #[serde(default)]
    event_ticker: String,
    status: String,
}

#[derive(Deserialize)]
struct WireMarketsPage {
    markets: Option<Vec<WireMarket>>,
    #[serde(default)]
    cursor: Option<String>,
}

/// Parses a `GET /markets` body.
pub fn parse_markets_page(body: &str) -> Result<MarketsPage, String> {
    let page: WireMarketsPage = serde_json::from_str(body).map_err(|e| e.to_string())?;
    Ok(MarketsPage {
        markets: page
            .markets
            .unwrap_or_default()
            .into_iter()
            .map(|m| MarketSummary {
                ticker: m.ticker,
                event_ticker: m.event_ticker,
                status: m.status,
            })
            .collect(),
        cursor: page.cursor.filter(|c| !c.is_empty()),
    })
}

/// Parses a `GET /exchange/status` body.
pub fn parse_exchange_status(body: &str) -> Result<ExchangeStatus, String> {
    let s: WireStatus = serde_json::from_str(body).map_err(|e| e.to_string())?;
    Ok(ExchangeStatus {
        exchange_active: s.exchange_active,
        trading_active: s.trading_active,
        estimated_resume_time: s.exchange_estimated_resume_time,
    })
}

/// Parses a `GET /markets/{ticker}/orderbook` body: the current `orderbook_fp` shape
/// (`yes_dollars`/`no_dollars` of `[price, size]` strings) or the pre-2026-03-12 `orderbook`
/// shape (`yes_dollars` with string prices and integer or string counts). A side absent or
/// `null` is empty. Prices must lie strictly inside ($0, $1); sizes must be positive.
pub fn parse_orderbook(body: &str) -> Result<OrderBook, String> {
    let root: Value = serde_json::from_str(body).map_err(|e| e.to_string())?;
    let book = match (root.get("orderbook_fp"), root.get("orderbook")) {
        (Some(fp), _) if !fp.is_null() => fp,
        (_, Some(legacy)) if !legacy.is_null() => legacy,
        _ => return Err("neither `orderbook_fp` nor `orderbook` present".to_owned()),
    };
    Ok(OrderBook { yes: ladder(book, "yes_dollars")?, no: ladder(book, "no_dollars")? })
}

fn ladder(book: &Value, key: &str) -> Result<Vec<Level>, String> {
    let levels = match book.get(key) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(levels)) => levels,
        Some(other) => return Err(format!("`{key}` is not an array: {other}")),
    };
    levels
        .iter()
        .map(|level| {
            let pair = level.as_array().filter(|p| p.len() == 2);
            let Some([price, size]) = pair.map(|p| [&p[0], &p[1]]) else {
                return Err(format!("`{key}` level is not [price, size]: {level}"));
            };
            let price_micros = price
                .as_str()
                .ok_or_else(|| format!("`{key}` price is not a decimal string: {price}"))
                .and_then(|p| {
                    parse_scaled(p.as_bytes(), 6).map_err(|e| format!("`{key}` price {p:?}: {e:?}"))
                })?;
            if !(1..DOLLAR_MICROS).contains(&price_micros) {
                return Err(format!("`{key}` price {price} outside ($0, $1)"));
            }
            let size_centi = match size {
                Value::String(s) => parse_scaled(s.as_bytes(), 2)
                    .map_err(|e| format!("`{key}` size {s:?}: {e:?}"))?,
                // Legacy integer counts are whole contracts.
                Value::Number(n) => n
                    .as_i64()
                    .and_then(|c| c.checked_mul(100))
                    .ok_or_else(|| format!("`{key}` size {n} is not an integer count"))?,
                other => return Err(format!("`{key}` size is not a decimal: {other}")),
            };
            if size_centi <= 0 {
                return Err(format!("`{key}` size {size} is not positive"));
            }
            let price_micros = u32::try_from(price_micros).map_err(|e| e.to_string())?;
            Ok(Level { price_micros, size_centi })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The client.
// ---------------------------------------------------------------------------------------------

/// Counters of one client, for tests and telemetry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestStats {
    /// HTTP requests sent (every attempt).
    pub requests: u64,
    /// 429 answers.
    pub rate_limited: u64,
    /// 5xx answers.
    pub server_errors: u64,
    /// Connection-level failures.
    pub transport_errors: u64,
    /// Total time slept in backoff, ns.
    pub backoff_ns: i64,
    /// Total time waited for a token, ns.
    pub throttled_ns: i64,
}

/// The blocking REST client. One per thread (it is `Send`, not shared).
pub struct RestClient {
    agent: ureq::Agent,
    base_url: String,
    path_prefix: String,
    signer: Option<Arc<Signer>>,
    limits: RestLimits,
    clock: Arc<dyn Clock>,
    bucket: TokenBucket,
    stats: RestStats,
}

impl std::fmt::Debug for RestClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestClient")
            .field("base_url", &self.base_url)
            .field("signed", &self.signer.is_some())
            .field("stats", &self.stats)
            .finish()
    }
}

enum Outcome {
    Body(String),
    Retry { status: Option<u16>, detail: String },
}

impl RestClient {
    /// Builds the client (reads the CA file now, so a bad path fails at start).
    pub fn new(cfg: RestConfig, clock: Arc<dyn Clock>) -> Result<RestClient, RestError> {
        let base_url = cfg.base_url.trim_end_matches('/').to_owned();
        let path_prefix =
            path_of(&base_url).ok_or_else(|| RestError::BadBaseUrl(base_url.clone()))?;
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(path) = &cfg.ca_file {
            tls = tls.root_certs(ureq::tls::RootCerts::Specific(Arc::new(read_ca(path)?)));
        }
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_millis(cfg.limits.request_timeout_ms)))
            .tls_config(tls.build())
            .build()
            .new_agent();
        let bucket = TokenBucket::new(cfg.budget, clock.now_ns());
        Ok(RestClient {
            agent,
            base_url,
            path_prefix,
            signer: cfg.signer,
            limits: cfg.limits,
            clock,
            bucket,
            stats: RestStats::default(),
        })
    }

    /// Counters so far.
    pub fn stats(&self) -> RestStats {
        self.stats
    }

    /// The injected clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// `GET /exchange/status`.
    pub fn exchange_status(&mut self) -> Result<ExchangeStatus, RestError> {
        let path = "/exchange/status";
        let body = self.get(path, "")?;
        parse_exchange_status(&body)
            .map_err(|detail| RestError::Decode { path: path.into(), detail })
    }

    /// One page of `GET /markets` (`limit` clamped to 1..=[`MARKETS_PAGE_LIMIT_MAX`]).
    pub fn markets_page(
        &mut self,
        status: Option<ListStatus>,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<MarketsPage, RestError> {
        let path = "/markets";
        let mut query = format!("limit={}", limit.clamp(1, MARKETS_PAGE_LIMIT_MAX));
        if let Some(status) = status {
            query.push_str("&status=");
            query.push_str(status.as_str());
        }
        if let Some(cursor) = cursor {
            query.push_str("&cursor=");
            query.push_str(&percent_encode(cursor));
        }
        let body = self.get(path, &query)?;
        parse_markets_page(&body).map_err(|detail| RestError::Decode { path: path.into(), detail })
    }

    /// Every market with `status`, page by page (limit 1000, cursor); calls `page` for each.
    /// Bounded by the server's cursor: a cursor repeated is refused (it would loop forever).
    pub fn for_each_market(
        &mut self,
        status: Option<ListStatus>,
        mut page: impl FnMut(Vec<MarketSummary>),
    ) -> Result<(), RestError> {
        let mut cursor: Option<String> = None;
        let mut seen = std::collections::HashSet::new();
        loop {
            let p = self.markets_page(status, MARKETS_PAGE_LIMIT_MAX, cursor.as_deref())?;
            page(p.markets);
            match p.cursor {
                None => return Ok(()),
                Some(next) => {
                    if !seen.insert(next.clone()) {
                        return Err(RestError::Decode {
                            path: "/markets".into(),
                            detail: format!("cursor {next:?} repeated; paging would not end"),
                        });
                    }
                    cursor = Some(next);
                }
            }
        }
    }

    /// `GET /markets/{ticker}/orderbook` (all levels).
    pub fn orderbook(&mut self, ticker: &str) -> Result<OrderBook, RestError> {
        let path = format!("/markets/{}/orderbook", percent_encode(ticker));
        let body = self.get(&path, "")?;
        parse_orderbook(&body).map_err(|detail| RestError::Decode { path, detail })
    }

    /// Waits for a token on the injected clock; returns the time waited.
    fn acquire(&mut self) {
        loop {
            match self.bucket.try_take(self.clock.now_ns()) {
                Ok(()) => return,
                Err(wait_ns) => {
                    self.stats.throttled_ns += wait_ns;
                    self.clock.sleep_ns(wait_ns);
                }
            }
        }
    }

    /// Delay before retry number `retry` (1-based): min × 2^(retry−1), capped.
    fn backoff_ns(&self, retry: u32) -> i64 {
        let shift = retry.saturating_sub(1).min(30);
        let ms =
            self.limits.backoff_ms_min.saturating_mul(1 << shift).min(self.limits.backoff_ms_max);
        i64::try_from(ms).unwrap_or(i64::MAX / NS_PER_MS) * NS_PER_MS
    }

    /// `GET {prefix}{path}?{query}` through the bucket, with retries.
    fn get(&mut self, path: &str, query: &str) -> Result<String, RestError> {
        let attempts_max = self.limits.attempts_max.max(1);
        let mut last = Outcome::Retry { status: None, detail: String::new() };
        for attempt in 1..=attempts_max {
            if attempt > 1 {
                let delay = self.backoff_ns(attempt - 1);
                self.stats.backoff_ns += delay;
                self.clock.sleep_ns(delay);
            }
            self.acquire();
            match self.attempt(path, query)? {
                Outcome::Body(body) => return Ok(body),
                retry => {
                    if let Outcome::Retry { status: Some(429), .. } = retry {
                        self.bucket.drain(self.clock.now_ns());
                    }
                    tracing::debug!(path, attempt, "REST retry");
                    last = retry;
                }
            }
        }
        let path = path.to_owned();
        Err(match last {
            Outcome::Retry { status: Some(429), .. } => {
                RestError::RateLimited { path, attempts: attempts_max }
            }
            Outcome::Retry { status: Some(status), detail } => {
                RestError::Server { path, status, attempts: attempts_max, body: detail }
            }
            Outcome::Retry { status: None, detail } => {
                RestError::Transport { path, attempts: attempts_max, detail }
            }
            Outcome::Body(body) => return Ok(body),
        })
    }

    fn attempt(&mut self, path: &str, query: &str) -> Result<Outcome, RestError> {
        let mut url = format!("{}{path}", self.base_url);
        if !query.is_empty() {
            url.push('?');
            url.push_str(query);
        }
        let mut request = self.agent.get(&url);
        if let Some(signer) = &self.signer {
            let now_ms = u64::try_from(self.clock.unix_ns() / NS_PER_MS).unwrap_or(0);
            let signed_path = format!("{}{path}", self.path_prefix);
            let headers = signer.headers("GET", &signed_path, now_ms)?;
            for (name, value) in headers.pairs() {
                request = request.header(name, value);
            }
        }
        self.stats.requests += 1;
        let mut response = match request.call() {
            Ok(r) => r,
            Err(e) => {
                self.stats.transport_errors += 1;
                return Ok(Outcome::Retry { status: None, detail: e.to_string() });
            }
        };
        let status = response.status().as_u16();
        let body = match response
            .body_mut()
            .with_config()
            .limit(self.limits.response_bytes_max)
            .read_to_string()
        {
            Ok(body) => body,
            Err(e) => {
                self.stats.transport_errors += 1;
                return Ok(Outcome::Retry { status: None, detail: format!("reading body: {e}") });
            }
        };
        match status {
            200..=299 => Ok(Outcome::Body(body)),
            429 => {
                self.stats.rate_limited += 1;
                Ok(Outcome::Retry { status: Some(429), detail: clip(&body) })
            }
            500..=599 => {
                self.stats.server_errors += 1;
                Ok(Outcome::Retry { status: Some(status), detail: clip(&body) })
            }
            _ => Err(RestError::Status { path: path.to_owned(), status, body: clip(&body) }),
        }
    }
}

fn clip(body: &str) -> String {
    body.chars().take(ERROR_BODY_CHARS_MAX).collect()
}

/// The path part of `scheme://host[:port]/path` (`""` when there is none).
fn path_of(url: &str) -> Option<String> {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"))?;
    let (host, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, ""),
    };
    (!host.is_empty()).then(|| path.to_owned())
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn read_ca(path: &Path) -> Result<Vec<ureq::tls::Certificate<'static>>, RestError> {
    let err = |detail: String| RestError::CaFile { path: path.to_owned(), detail };
    let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        if let ureq::tls::PemItem::Certificate(cert) = item.map_err(|e| err(e.to_string()))? {
            certs.push(cert);
        }
    }
    if certs.is_empty() {
        return Err(err("no CERTIFICATE block found".to_owned()));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills_exactly_and_reports_the_wait() {
        let mut b = TokenBucket::new(RateBudget { capacity: 2, refill_per_s: 20 }, 0);
        assert_eq!(b.try_take(0), Ok(()));
        assert_eq!(b.try_take(0), Ok(()));
        assert_eq!(b.try_take(0), Err(50_000_000));
        assert_eq!(b.try_take(49_999_999), Err(1));
        assert_eq!(b.try_take(50_000_000), Ok(()));
        b.drain(10 * NS_PER_S);
        assert_eq!(b.available(10 * NS_PER_S), 0);
        assert_eq!(b.available(20 * NS_PER_S), 2);
    }

    #[test]
    fn orderbook_shapes_parse_exactly() {
        let current = r#"{"orderbook_fp":{"yes_dollars":[["0.4100","10.00"],["0.4200","13.57"]],"no_dollars":[["0.5600","17.00"]]}}"#;
        let book = parse_orderbook(current).unwrap_or_default();
        assert_eq!(
            book.yes,
            [
                Level { price_micros: 410_000, size_centi: 1_000 },
                Level { price_micros: 420_000, size_centi: 1_357 }
            ]
        );
        assert_eq!(book.no, [Level { price_micros: 560_000, size_centi: 1_700 }]);
        let legacy = r#"{"orderbook":{"yes":[[41,10]],"no":null,"yes_dollars":[["0.4100",10]],"no_dollars":null}}"#;
        let book = parse_orderbook(legacy).unwrap_or_default();
        assert_eq!(book.yes, [Level { price_micros: 410_000, size_centi: 1_000 }]);
        assert!(book.no.is_empty());
        assert_eq!(parse_orderbook(r#"{"orderbook_fp":{}}"#), Ok(OrderBook::default()));
        for bad in [
            r#"{"orderbook_fp":{"yes_dollars":[[0.41,"1.00"]]}}"#,
            r#"{"orderbook_fp":{"yes_dollars":[["0.41","1.005"]]}}"#,
            r#"{"orderbook_fp":{"yes_dollars":[["1.0000","1.00"]]}}"#,
            r#"{"orderbook_fp":{"yes_dollars":[["0.4100","0.00"]]}}"#,
            r#"{"orderbook_fp":{"yes_dollars":[["0.4100"]]}}"#,
            r#"{"markets":[]}"#,
        ] {
            assert!(parse_orderbook(bad).is_err(), "accepted {bad}");
        }
    }

    #[test]
    fn markets_page_cursor_and_status_vocabulary() {
        let page = parse_markets_page(
            r#"{"markets":[{"ticker":"A-1","event_ticker":"A","status":"active","yes_bid_dollars":"0.1000"}],"cursor":""}"#,
        );
        assert_eq!(
            page,
            Ok(MarketsPage {
                markets: vec![MarketSummary {
                    ticker: "A-1".into(),
                    event_ticker: "A".into(),
                    status: "active".into()
                }],
                cursor: None
            })
        );
        assert_eq!(ListStatus::of_market_status("determined"), Some(ListStatus::Closed));
        assert_eq!(ListStatus::parse("unopened"), Some(ListStatus::Unopened));
        assert_eq!(ListStatus::parse("active"), None);
        assert_eq!(path_of("https://h.example/trade-api/v2").as_deref(), Some("/trade-api/v2"));
        assert_eq!(path_of("ftp://h/x"), None);
        assert_eq!(percent_encode("a b/+="), "a%20b%2F%2B%3D");
    }
}
