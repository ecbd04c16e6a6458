//! Metadata sync (issue 5 item 5): series, events and markets from Kalshi's REST API into
//! production's `series`, `events` and `markets` tables (migration 0003), upserted — latest
//! wins — on a schedule, through the gatherer's token bucket ([`kdp_ingest::rest::TokenBucket`]).
//!
//! One sync = `GET /series` (one list, no paging), then every page of `GET /events` (limit 200,
//! cursor), then every page of `GET /markets` (limit 1000, cursor, every status), each page
//! upserted in its own transaction as it arrives (memory stays one page). Events go before
//! markets so a market's `series_ticker` (markets do not carry it) is filled from its event in
//! the same statement. A row changes only when its JSON differs (`IS DISTINCT FROM`), so an
//! unchanged exchange costs reads, not writes. Nothing is deleted: a market that leaves
//! `/markets` (Kalshi's historical cutoff) keeps its last state.
//!
//! Budget: every request takes a token from a client-side bucket sized by `rest_rate_per_s` /
//! `rest_burst` (default 2/s, burst 2: a tenth of Kalshi's Basic read tier, the share the three
//! gatherers leave at 6/s each). A 429 empties the bucket and backs off (100 ms doubling to
//! 10 s, 8 tries: [`kdp_ingest::rest`]'s constants), as the gatherer's client does. The requests
//! are unsigned: Kalshi's market-data reads need no key.
//!
//! Why not `kdp_ingest::rest::RestClient` itself: it returns typed summaries (ticker, event,
//! status) and has no `/series` or `/events`; this module keeps each object's whole JSON. It
//! reuses the bucket, the retry bounds and the RFC 3339 parser, and repeats only the ~40 lines
//! of the retry loop.
//!
//! Thread: [`spawn`] runs a first sync at once, then one every `metadata_interval_ms` (measured
//! from the start of the previous one); a failed sync is retried after
//! min(interval, [`RETRY_AFTER_FAILURE_MAX`]). The stop flag is checked between pages, while
//! waiting for a token and while sleeping ([`STOP_CHECK_INTERVAL`]), so a stop ends the thread
//! within ~50 ms plus one HTTP request or page transaction.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kdp_ingest::rest::{
    ATTEMPTS_MAX, BACKOFF_MS_MAX, BACKOFF_MS_MIN, Clock, REQUEST_TIMEOUT_MS, RESPONSE_BYTES_MAX,
    RateBudget, SystemClock, TokenBucket,
};
use kdp_ingest::wire::parse_rfc3339_ns;
use serde_json::{Map, Value};

use crate::schema::PRODUCTION;

/// Default sync interval: 5 minutes, the gatherer registry's reconciliation period. A full sync
/// of a Kalshi-sized catalog is a few hundred pages at most, well inside it at 2 requests/s.
pub const METADATA_INTERVAL_MS_DEFAULT: u64 = 300_000;
/// Default read budget, requests per second: a tenth of Kalshi's Basic tier (20/s); the three
/// gatherers of the deploy configs take 6/s each.
pub const REST_RATE_PER_S_DEFAULT: u32 = 2;
/// Default bucket capacity, requests: one second of the budget.
pub const REST_BURST_DEFAULT: u32 = 2;
/// `GET /events` page size: Kalshi's maximum.
pub const EVENTS_PAGE_LIMIT: u32 = 200;
/// `GET /markets` page size: Kalshi's maximum.
pub const MARKETS_PAGE_LIMIT: u32 = 1_000;
/// Pages per listing in one sync: a typo guard against a server that never ends its cursor
/// (10,000 pages are 10 M markets; a repeated cursor is refused before that).
pub const PAGES_MAX: u32 = 10_000;
/// Longest wait before retrying a failed sync (when the interval is longer).
pub const RETRY_AFTER_FAILURE_MAX: Duration = Duration::from_secs(30);
/// How often a waiting sync thread looks at its stop flag.
pub const STOP_CHECK_INTERVAL: Duration = Duration::from_millis(50);
/// Production connection timeout: an unreachable host cannot hold the thread.
pub const PRODUCTION_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How much of an error body an error message quotes.
const ERROR_BODY_CHARS_MAX: usize = 300;

/// Where and how often to sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataSettings {
    /// REST base URL, e.g. `https://api.elections.kalshi.com/trade-api/v2`.
    pub rest_url: String,
    /// PEM CA file to trust instead of the Mozilla roots (the simulator's certificate).
    pub ca_file: Option<PathBuf>,
    /// Client-side read budget.
    pub budget: RateBudget,
    /// Time between the starts of two syncs.
    pub interval: Duration,
    /// Apply the production migrations before the first sync (the merge thread does too; runs
    /// are serialised by the migration lock).
    pub migrate: bool,
}

impl MetadataSettings {
    /// Defaults around `rest_url`.
    pub fn new(rest_url: impl Into<String>) -> MetadataSettings {
        MetadataSettings {
            rest_url: rest_url.into(),
            ca_file: None,
            budget: RateBudget {
                capacity: REST_BURST_DEFAULT,
                refill_per_s: REST_RATE_PER_S_DEFAULT,
            },
            interval: Duration::from_millis(METADATA_INTERVAL_MS_DEFAULT),
            migrate: true,
        }
    }
}

/// Why a sync failed.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// The base URL is not `http(s)://host[:port]/prefix`.
    #[error("rest_url {0:?} is not of the form https://host[:port]/trade-api/v2")]
    BadUrl(String),
    /// The CA file could not be read or holds no certificate.
    #[error("cannot use CA file {path}: {detail}; pass a PEM certificate file")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// Still 429/5xx/unreachable after every attempt, or another 4xx.
    #[error("GET {path}: {detail}")]
    Http {
        /// Request path and query.
        path: String,
        /// What happened.
        detail: String,
    },
    /// The body does not have the documented shape.
    #[error("GET {path}: unexpected response: {detail}")]
    Decode {
        /// Request path and query.
        path: String,
        /// What did not parse.
        detail: String,
    },
    /// Production refused (connection, migration or upsert).
    #[error("production: {0}")]
    Production(String),
    /// A stop was asked mid-sync.
    #[error("stopped")]
    Stopped,
}

/// What one sync did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Series, events and markets received (valid objects).
    pub series: u64,
    /// See [`SyncStats::series`].
    pub events: u64,
    /// See [`SyncStats::series`].
    pub markets: u64,
    /// Rows inserted or changed in production (all three tables).
    pub rows_changed: u64,
    /// Objects skipped: not an object, or a key field missing.
    pub skipped: u64,
    /// HTTP requests sent (every attempt).
    pub requests: u64,
    /// 429 answers.
    pub rate_limited: u64,
    /// Time spent waiting for tokens, ns.
    pub throttled_ns: i64,
}

impl SyncStats {
    fn add_client(&mut self, before: ClientStats, after: ClientStats) {
        self.requests += after.requests - before.requests;
        self.rate_limited += after.rate_limited - before.rate_limited;
        self.throttled_ns += after.throttled_ns - before.throttled_ns;
    }
}

/// Totals of a sync thread.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetadataTotals {
    /// Syncs completed.
    pub syncs: u64,
    /// Syncs that failed.
    pub failures: u64,
    /// The last completed sync.
    pub last: SyncStats,
}

// ---------------------------------------------------------------------------------------------
// The HTTP side.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ClientStats {
    requests: u64,
    rate_limited: u64,
    throttled_ns: i64,
}

/// A blocking GET client behind the token bucket.
struct Client {
    agent: ureq::Agent,
    base_url: String,
    clock: Arc<dyn Clock>,
    bucket: TokenBucket,
    stats: ClientStats,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.base_url)
            .field("stats", &self.stats)
            .finish()
    }
}

enum Attempt {
    Body(String),
    Retry(String, bool),
}

impl Client {
    fn new(settings: &MetadataSettings, clock: Arc<dyn Clock>) -> Result<Client, MetadataError> {
        let base_url = settings.rest_url.trim().trim_end_matches('/').to_owned();
        let host = base_url.strip_prefix("https://").or_else(|| base_url.strip_prefix("http://"));
        if host.is_none_or(|h| h.is_empty() || h.starts_with('/')) {
            return Err(MetadataError::BadUrl(settings.rest_url.clone()));
        }
        if settings.budget.capacity == 0 || settings.budget.refill_per_s == 0 {
            return Err(MetadataError::BadUrl(format!(
                "{}: zero read budget {:?}",
                settings.rest_url, settings.budget
            )));
        }
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(path) = &settings.ca_file {
            tls = tls.root_certs(ureq::tls::RootCerts::Specific(Arc::new(read_ca(path)?)));
        }
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_millis(REQUEST_TIMEOUT_MS)))
            .tls_config(tls.build())
            .build()
            .new_agent();
        let bucket = TokenBucket::new(settings.budget, clock.now_ns());
        Ok(Client { agent, base_url, clock, bucket, stats: ClientStats::default() })
    }

    /// Waits for a token (in slices, watching `stop`).
    fn acquire(&mut self, stop: &AtomicBool) -> Result<(), MetadataError> {
        loop {
            if stop.load(Ordering::Acquire) {
                return Err(MetadataError::Stopped);
            }
            match self.bucket.try_take(self.clock.now_ns()) {
                Ok(()) => return Ok(()),
                Err(wait_ns) => {
                    let slice = i64::try_from(STOP_CHECK_INTERVAL.as_nanos()).unwrap_or(i64::MAX);
                    let ns = wait_ns.min(slice);
                    self.stats.throttled_ns += ns;
                    self.clock.sleep_ns(ns);
                }
            }
        }
    }

    /// `GET {base}{path}?{query}` with the gatherer client's retry rule: 429, 5xx and transport
    /// failures back off 100 ms doubling to 10 s over 8 tries; a 429 also empties the bucket.
    fn get(&mut self, path: &str, query: &str, stop: &AtomicBool) -> Result<String, MetadataError> {
        let what = if query.is_empty() { path.to_owned() } else { format!("{path}?{query}") };
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS_MAX {
            if attempt > 1 {
                let shift = (attempt - 2).min(30);
                let ms = BACKOFF_MS_MIN.saturating_mul(1 << shift).min(BACKOFF_MS_MAX);
                sleep_unless_stopped(Duration::from_millis(ms), stop)?;
            }
            self.acquire(stop)?;
            match self.attempt(&what)? {
                Attempt::Body(body) => return Ok(body),
                Attempt::Retry(detail, limited) => {
                    if limited {
                        self.bucket.drain(self.clock.now_ns());
                    }
                    tracing::debug!(path = what, attempt, "metadata REST retry: {detail}");
                    last = detail;
                }
            }
        }
        Err(MetadataError::Http {
            path: what,
            detail: format!("{last} (after {ATTEMPTS_MAX} attempts)"),
        })
    }

    fn attempt(&mut self, what: &str) -> Result<Attempt, MetadataError> {
        let url = format!("{}{what}", self.base_url);
        self.stats.requests += 1;
        let mut response = match self.agent.get(&url).call() {
            Ok(r) => r,
            Err(e) => return Ok(Attempt::Retry(e.to_string(), false)),
        };
        let status = response.status().as_u16();
        let body =
            match response.body_mut().with_config().limit(RESPONSE_BYTES_MAX).read_to_string() {
                Ok(body) => body,
                Err(e) => return Ok(Attempt::Retry(format!("reading body: {e}"), false)),
            };
        let clip = || body.chars().take(ERROR_BODY_CHARS_MAX).collect::<String>();
        match status {
            200..=299 => Ok(Attempt::Body(body)),
            429 => {
                self.stats.rate_limited += 1;
                Ok(Attempt::Retry(format!("rate limited (429): {}", clip()), true))
            }
            500..=599 => Ok(Attempt::Retry(format!("server error {status}: {}", clip()), false)),
            _ => Err(MetadataError::Http {
                path: what.to_owned(),
                detail: format!("HTTP {status}: {}", clip()),
            }),
        }
    }
}

fn sleep_unless_stopped(total: Duration, stop: &AtomicBool) -> Result<(), MetadataError> {
    let until = Instant::now() + total;
    loop {
        if stop.load(Ordering::Acquire) {
            return Err(MetadataError::Stopped);
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        std::thread::sleep(left.min(STOP_CHECK_INTERVAL));
    }
}

fn read_ca(path: &Path) -> Result<Vec<ureq::tls::Certificate<'static>>, MetadataError> {
    let err = |detail: String| MetadataError::CaFile { path: path.to_owned(), detail };
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

/// Percent-encodes everything but RFC 3986 unreserved characters (cursors are opaque).
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

// ---------------------------------------------------------------------------------------------
// Pages → rows.
// ---------------------------------------------------------------------------------------------

/// One listing page: its objects and the next cursor (`None` on the last page).
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// The objects, in the server's order.
    pub items: Vec<Map<String, Value>>,
    /// Objects that were not JSON objects.
    pub not_objects: u64,
    /// Next page's cursor; `None` when absent or empty.
    pub cursor: Option<String>,
}

/// Parses a listing body `{"<key>": [...], "cursor": "..."}`. A missing or `null` list is
/// empty (Kalshi sends `null` for an empty page).
pub fn parse_page(body: &str, key: &str) -> Result<Page, String> {
    let root: Value = serde_json::from_str(body).map_err(|e| e.to_string())?;
    let Value::Object(mut root) = root else { return Err("the body is not a JSON object".into()) };
    let list = match root.remove(key) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => list,
        Some(other) => return Err(format!("`{key}` is not an array: {}", kind(&other))),
    };
    let cursor = match root.remove("cursor") {
        Some(Value::String(c)) if !c.is_empty() => Some(c),
        None | Some(Value::Null | Value::String(_)) => None,
        Some(other) => return Err(format!("`cursor` is not a string: {}", kind(&other))),
    };
    let mut items = Vec::with_capacity(list.len());
    let mut not_objects = 0;
    for v in list {
        match v {
            Value::Object(o) => items.push(o),
            _ => not_objects += 1,
        }
    }
    Ok(Page { items, not_objects, cursor })
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn text(o: &Map<String, Value>, key: &str) -> Option<String> {
    o.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn required(o: &Map<String, Value>, key: &str) -> Option<String> {
    text(o, key).filter(|t| !t.is_empty())
}

/// An RFC 3339 field as ns; absent, empty or malformed → `None` (the body keeps it as sent).
fn time_ns(o: &Map<String, Value>, key: &str) -> Option<i64> {
    o.get(key).and_then(Value::as_str).and_then(|t| parse_rfc3339_ns(t.as_bytes()).ok())
}

/// Column vectors of one page, one entry per distinct key (the last object of a key wins:
/// one statement may not update a row twice).
#[derive(Debug, Default)]
struct Columns {
    key: Vec<String>,
    text: [Vec<Option<String>>; 4],
    ns: [Vec<Option<i64>>; 3],
    body: Vec<String>,
    skipped: u64,
}

impl Columns {
    /// `extract` returns the key, up to 4 text columns and up to 3 ns columns of an object, or
    /// `None` when a required field is missing.
    fn build(
        items: Vec<Map<String, Value>>,
        extract: impl Fn(&Map<String, Value>) -> Option<(String, [Option<String>; 4], [Option<i64>; 3])>,
    ) -> Columns {
        let mut c = Columns::default();
        let mut at: HashMap<String, usize> = HashMap::with_capacity(items.len());
        for item in items {
            let Some((key, texts, times)) = extract(&item) else {
                c.skipped += 1;
                continue;
            };
            let body = Value::Object(item).to_string();
            match at.get(&key) {
                Some(&i) => {
                    for (col, v) in c.text.iter_mut().zip(texts) {
                        col[i] = v;
                    }
                    for (col, v) in c.ns.iter_mut().zip(times) {
                        col[i] = v;
                    }
                    c.body[i] = body;
                }
                None => {
                    at.insert(key.clone(), c.key.len());
                    c.key.push(key);
                    for (col, v) in c.text.iter_mut().zip(texts) {
                        col.push(v);
                    }
                    for (col, v) in c.ns.iter_mut().zip(times) {
                        col.push(v);
                    }
                    c.body.push(body);
                }
            }
        }
        c
    }

    fn len(&self) -> u64 {
        self.key.len() as u64
    }
}

const UPSERT_SERIES: &str = "\
    INSERT INTO series AS s (ticker, title, category, frequency, body, updated_at) \
    SELECT u.k, u.t0, u.t1, u.t2, u.b::jsonb, now() \
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) AS u(k, t0, t1, t2, b) \
    ON CONFLICT (ticker) DO UPDATE SET title = EXCLUDED.title, category = EXCLUDED.category, \
        frequency = EXCLUDED.frequency, body = EXCLUDED.body, updated_at = EXCLUDED.updated_at \
    WHERE s.body IS DISTINCT FROM EXCLUDED.body";

const UPSERT_EVENTS: &str = "\
    INSERT INTO events AS e (event_ticker, series_ticker, title, sub_title, body, updated_at) \
    SELECT u.k, u.t0, u.t1, u.t2, u.b::jsonb, now() \
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) AS u(k, t0, t1, t2, b) \
    ON CONFLICT (event_ticker) DO UPDATE SET series_ticker = EXCLUDED.series_ticker, \
        title = EXCLUDED.title, sub_title = EXCLUDED.sub_title, body = EXCLUDED.body, \
        updated_at = EXCLUDED.updated_at \
    WHERE e.body IS DISTINCT FROM EXCLUDED.body";

const UPSERT_MARKETS: &str = "\
    INSERT INTO markets AS m (ticker, event_ticker, series_ticker, status, title, open_time_ns, \
        close_time_ns, kalshi_updated_ns, body, updated_at) \
    SELECT u.k, u.t0, ev.series_ticker, u.t1, u.t2, u.n0, u.n1, u.n2, u.b::jsonb, now() \
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], \
        $7::bigint[], $8::text[]) AS u(k, t0, t1, t2, n0, n1, n2, b) \
    LEFT JOIN events ev ON ev.event_ticker = u.t0 \
    ON CONFLICT (ticker) DO UPDATE SET event_ticker = EXCLUDED.event_ticker, \
        series_ticker = EXCLUDED.series_ticker, status = EXCLUDED.status, title = EXCLUDED.title, \
        open_time_ns = EXCLUDED.open_time_ns, close_time_ns = EXCLUDED.close_time_ns, \
        kalshi_updated_ns = EXCLUDED.kalshi_updated_ns, body = EXCLUDED.body, \
        updated_at = EXCLUDED.updated_at \
    WHERE m.body IS DISTINCT FROM EXCLUDED.body \
        OR m.series_ticker IS DISTINCT FROM EXCLUDED.series_ticker";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Series,
    Events,
    Markets,
}

impl Kind {
    fn key(self) -> &'static str {
        match self {
            Kind::Series => "series",
            Kind::Events => "events",
            Kind::Markets => "markets",
        }
    }

    fn columns(self, items: Vec<Map<String, Value>>) -> Columns {
        match self {
            Kind::Series => Columns::build(items, |o| {
                let k = required(o, "ticker")?;
                Some((
                    k,
                    [text(o, "title"), text(o, "category"), text(o, "frequency"), None],
                    [None, None, None],
                ))
            }),
            Kind::Events => Columns::build(items, |o| {
                let k = required(o, "event_ticker")?;
                Some((
                    k,
                    [text(o, "series_ticker"), text(o, "title"), text(o, "sub_title"), None],
                    [None, None, None],
                ))
            }),
            Kind::Markets => Columns::build(items, |o| {
                let k = required(o, "ticker")?;
                let event = required(o, "event_ticker")?;
                let status = required(o, "status")?;
                Some((
                    k,
                    [Some(event), Some(status), text(o, "title"), None],
                    [time_ns(o, "open_time"), time_ns(o, "close_time"), time_ns(o, "updated_time")],
                ))
            }),
        }
    }
}

fn pg_error(what: &str) -> impl Fn(postgres::Error) -> MetadataError + '_ {
    move |e| MetadataError::Production(format!("{what}: {e}"))
}

/// Upserts one page's columns in one transaction; returns the rows inserted or changed.
fn upsert(client: &mut postgres::Client, kind: Kind, c: &Columns) -> Result<u64, MetadataError> {
    if c.key.is_empty() {
        return Ok(0);
    }
    let [t0, t1, t2, _] = &c.text;
    let [n0, n1, n2] = &c.ns;
    let mut tx = client.transaction().map_err(pg_error("begin"))?;
    let changed = match kind {
        Kind::Series => tx.execute(UPSERT_SERIES, &[&c.key, t0, t1, t2, &c.body]),
        Kind::Events => tx.execute(UPSERT_EVENTS, &[&c.key, t0, t1, t2, &c.body]),
        Kind::Markets => tx.execute(UPSERT_MARKETS, &[&c.key, t0, t1, t2, n0, n1, n2, &c.body]),
    }
    .map_err(pg_error(kind.key()))?;
    tx.commit().map_err(pg_error("commit"))?;
    Ok(changed)
}

// ---------------------------------------------------------------------------------------------
// The sync.
// ---------------------------------------------------------------------------------------------

/// The sync: a REST client with its bucket and a production connection (opened on demand,
/// dropped after an error).
pub struct MetadataSync {
    client: Client,
    production: postgres::Config,
    conn: Option<postgres::Client>,
    migrate: bool,
    migrated: bool,
}

impl std::fmt::Debug for MetadataSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetadataSync")
            .field("client", &self.client)
            .field("connected", &self.conn.is_some())
            .finish()
    }
}

impl MetadataSync {
    /// Builds the client (reads the CA file now: a bad path fails at start) on the real clock.
    pub fn new(
        settings: &MetadataSettings,
        production: postgres::Config,
    ) -> Result<MetadataSync, MetadataError> {
        MetadataSync::with_clock(settings, production, Arc::new(SystemClock::new()))
    }

    /// [`MetadataSync::new`] with an injected clock for the bucket.
    pub fn with_clock(
        settings: &MetadataSettings,
        mut production: postgres::Config,
        clock: Arc<dyn Clock>,
    ) -> Result<MetadataSync, MetadataError> {
        production
            .application_name("kdp-dedup-metadata")
            .connect_timeout(PRODUCTION_CONNECT_TIMEOUT);
        Ok(MetadataSync {
            client: Client::new(settings, clock)?,
            production,
            conn: None,
            migrate: settings.migrate,
            migrated: false,
        })
    }

    fn production(&mut self) -> Result<&mut postgres::Client, MetadataError> {
        let mut conn = match self.conn.take() {
            Some(c) if !c.is_closed() => c,
            _ => self.production.connect(postgres::NoTls).map_err(pg_error("connect"))?,
        };
        if self.migrate && !self.migrated {
            kdp_engine::pg::migrate::migrate(&mut conn, &PRODUCTION)
                .map_err(|e| MetadataError::Production(e.to_string()))?;
            self.migrated = true;
        }
        Ok(self.conn.insert(conn))
    }

    /// One full sync: series, events, markets. A failure leaves what was already committed
    /// (whole pages) and drops the production connection.
    pub fn sync_once(&mut self, stop: &AtomicBool) -> Result<SyncStats, MetadataError> {
        let before = self.client.stats;
        let mut stats = SyncStats::default();
        let result = self.sync_all(stop, &mut stats);
        stats.add_client(before, self.client.stats);
        if result.is_err() {
            self.conn = None;
        }
        result.map(|()| stats)
    }

    fn sync_all(&mut self, stop: &AtomicBool, stats: &mut SyncStats) -> Result<(), MetadataError> {
        self.production()?;
        self.listing(Kind::Series, "/series", "", stop, stats)?;
        self.listing(Kind::Events, "/events", &format!("limit={EVENTS_PAGE_LIMIT}"), stop, stats)?;
        self.listing(Kind::Markets, "/markets", &format!("limit={MARKETS_PAGE_LIMIT}"), stop, stats)
    }

    /// Every page of one listing, each upserted as it arrives.
    fn listing(
        &mut self,
        kind: Kind,
        path: &str,
        query: &str,
        stop: &AtomicBool,
        stats: &mut SyncStats,
    ) -> Result<(), MetadataError> {
        let mut cursor: Option<String> = None;
        let mut seen = std::collections::HashSet::new();
        for _ in 0..PAGES_MAX {
            let mut q = query.to_owned();
            if let Some(c) = &cursor {
                if !q.is_empty() {
                    q.push('&');
                }
                q.push_str("cursor=");
                q.push_str(&percent_encode(c));
            }
            let body = self.client.get(path, &q, stop)?;
            let page = parse_page(&body, kind.key())
                .map_err(|detail| MetadataError::Decode { path: path.to_owned(), detail })?;
            let columns = kind.columns(page.items);
            stats.skipped += page.not_objects + columns.skipped;
            match kind {
                Kind::Series => stats.series += columns.len(),
                Kind::Events => stats.events += columns.len(),
                Kind::Markets => stats.markets += columns.len(),
            }
            let conn = self.production()?;
            stats.rows_changed += upsert(conn, kind, &columns)?;
            match page.cursor {
                None => return Ok(()),
                Some(next) => {
                    if !seen.insert(next.clone()) {
                        return Err(MetadataError::Decode {
                            path: path.to_owned(),
                            detail: format!("cursor {next:?} repeated; paging would not end"),
                        });
                    }
                    cursor = Some(next);
                }
            }
        }
        Err(MetadataError::Decode {
            path: path.to_owned(),
            detail: format!("more than {PAGES_MAX} pages"),
        })
    }
}

/// A running sync thread.
#[derive(Debug)]
pub struct MetadataThread {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<MetadataTotals>>,
}

impl MetadataThread {
    /// Asks the thread to stop and waits for it.
    pub fn shutdown(mut self) -> MetadataTotals {
        self.stop.store(true, Ordering::Release);
        self.handle.take().and_then(|h| h.join().ok()).unwrap_or_default()
    }
}

impl Drop for MetadataThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Starts the sync thread (`kdp-dedup-meta`): a sync at once, then every `interval`.
pub fn spawn(
    settings: &MetadataSettings,
    production: postgres::Config,
) -> Result<MetadataThread, MetadataError> {
    let mut sync = MetadataSync::new(settings, production)?;
    let interval = settings.interval;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let handle = std::thread::Builder::new()
        .name("kdp-dedup-meta".to_owned())
        .spawn(move || {
            let mut totals = MetadataTotals::default();
            loop {
                let started = Instant::now();
                let wait = match sync.sync_once(&flag) {
                    Ok(s) => {
                        totals.syncs += 1;
                        totals.last = s;
                        tracing::info!(
                            series = s.series,
                            events = s.events,
                            markets = s.markets,
                            changed = s.rows_changed,
                            skipped = s.skipped,
                            requests = s.requests,
                            ms = started.elapsed().as_millis(),
                            "metadata synced"
                        );
                        interval.saturating_sub(started.elapsed())
                    }
                    Err(MetadataError::Stopped) => break,
                    Err(e) => {
                        totals.failures += 1;
                        tracing::warn!("metadata sync failed: {e}");
                        interval.min(RETRY_AFTER_FAILURE_MAX)
                    }
                };
                if sleep_unless_stopped(wait, &flag).is_err() {
                    break;
                }
            }
            totals
        })
        .map_err(|e| MetadataError::Production(format!("cannot start the sync thread: {e}")))?;
    Ok(MetadataThread { stop, handle: Some(handle) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_parse_with_and_without_cursor() {
        let p = parse_page(r#"{"markets":[{"ticker":"A"},3],"cursor":"abc"}"#, "markets");
        let p = p.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((p.items.len(), p.not_objects, p.cursor.as_deref()), (1, 1, Some("abc")));
        let p = parse_page(r#"{"events":null,"cursor":""}"#, "events");
        let p = p.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((p.items.len(), p.cursor), (0, None));
        let p = parse_page(r#"{"series":[]}"#, "series").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.cursor, None);
        assert_eq!(
            parse_page(r#"{"markets":{}}"#, "markets"),
            Err("`markets` is not an array: an object".to_owned())
        );
        assert_eq!(
            parse_page(r#"{"markets":[],"cursor":7}"#, "markets"),
            Err("`cursor` is not a string: a number".to_owned())
        );
    }

    #[test]
    fn market_columns_take_keys_times_and_the_last_duplicate() {
        let page = parse_page(
            r#"{"markets":[
                {"ticker":"M-1","event_ticker":"E","status":"active","title":"t",
                 "open_time":"2026-01-02T03:04:05Z","close_time":"","updated_time":"bad"},
                {"ticker":"M-2","status":"active"},
                {"ticker":"M-1","event_ticker":"E","status":"closed"}
            ]}"#,
            "markets",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let c = Kind::Markets.columns(page.items);
        assert_eq!(c.key, ["M-1"]);
        assert_eq!(c.skipped, 1, "M-2 has no event_ticker");
        assert_eq!(c.text[1], [Some("closed".to_owned())], "the last object of a key wins");
        assert_eq!(c.ns[0], [None]);
        let first = parse_page(
            r#"{"markets":[{"ticker":"M-1","event_ticker":"E","status":"active",
                "open_time":"2026-01-02T03:04:05.5Z","close_time":"","updated_time":"bad"}]}"#,
            "markets",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let c = Kind::Markets.columns(first.items);
        assert_eq!(c.ns, [vec![Some(1_767_323_045_500_000_000)], vec![None], vec![None]]);
        assert_eq!(
            c.body,
            [
                r#"{"close_time":"","event_ticker":"E","open_time":"2026-01-02T03:04:05.5Z","status":"active","ticker":"M-1","updated_time":"bad"}"#
            ]
        );
    }

    #[test]
    fn bad_urls_are_refused() {
        for url in ["ftp://h/x", "https://", "h/trade-api/v2"] {
            let s = MetadataSettings::new(url);
            assert!(
                matches!(
                    Client::new(&s, Arc::new(SystemClock::new())),
                    Err(MetadataError::BadUrl(_))
                ),
                "{url}"
            );
        }
        assert_eq!(percent_encode("a b/+="), "a%20b%2F%2B%3D");
    }
}
