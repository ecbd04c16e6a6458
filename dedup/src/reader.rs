//! Readers: one plain thread per gatherer database, streaming its rows in gseq order into a
//! bounded ring for the merge thread (DESIGN §3 "Readers"; issue 5 item 1).
//!
//! ```text
//! gatherer DB ──(LISTEN kdp_gatherer / poll)──► reader thread ──ArrayQueue<Item>──► merge thread
//!                                                 │ status (atomics) ──► /health, /metrics
//! ```
//!
//! **Exact order across tables.** The gatherer's single writer numbers every row of every table
//! from one gseq sequence and commits in gseq order, logging each committed transaction in
//! `batch`. A round reads the committed high-water mark `head = max(batch.last_gseq)` first, then
//! every table's rows in `(read, hi]` with `hi = min(head, read + read_chunk_rows)`, and merges
//! them by gseq. Every row up to `hi` is committed and no later commit can add one below it, so
//! the merged chunk is exactly the gatherer's stream over that span. Gseqs are dense across the
//! tables (one sequence, no holes), so the span bounds the rows read per round exactly, with no
//! `LIMIT`. Raw frames are skipped (they are not merged; they stay in the gatherer database).
//!
//! **Why batched queries, not `COPY … TO STDOUT (FORMAT binary)`.** Both move rows in binary
//! form; a prepared statement per table is planned once per connection, takes the span as
//! parameters, is decoded by the driver's typed accessors, and is bounded by the span. COPY
//! cannot be prepared or parameterised (a query text per round) and needs a hand-written row
//! decoder per table, for no fewer bytes on the wire. At a chunk of 8,192 gseqs the per-round
//! fixed cost (7 index range scans) is well under a millisecond.
//!
//! **Waking.** Caught up, the reader waits on its connection's notifications (`LISTEN
//! kdp_gatherer`; the gatherer writer notifies at every commit) and polls every
//! `poll_interval` as a fallback, in slices of [`STOP_CHECK_INTERVAL`] so a stop is seen fast.
//!
//! **Backpressure, failures.** A full ring pauses reading (the chunk waits in the reader; at most
//! one chunk is held). Any database error drops the connection; the reader reconnects with
//! exponential backoff and jitter (`kdp_ingest::session::backoff`) and resumes right after the
//! last row it handed over, so rows already in the ring stay valid. One reader's failure or
//! slowness touches only its own ring: the merge thread never waits for one gatherer.
//!
//! **Priming.** On its first connection a reader whose cursor is past 0 replays its gatherer's
//! deltas and tickers from the rebuild window before the cursor as [`Item::Prime`], so the merge
//! core's occurrence numbering continues where the previous run stopped
//! ([`crate::merge::MergeCore::prime`]).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use kdp_engine::event::{BookSide, Level, Side};
use kdp_ingest::session::backoff::{Backoff, BackoffConfig};
use kdp_ingest::store::NOTIFY_CHANNEL;
use postgres::fallible_iterator::FallibleIterator as _;
use postgres::{Client, NoTls, Statement};

use crate::merge::GathererId;
use crate::row::{
    Delta, EventLifecycle, Gap, MarketLifecycle, Row, Snapshot, SnapshotAnchor, Ticker,
    TickerContent, Trade,
};

/// What a reader hands the merge thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A row at or before the cursor, for the occurrence state only (sent before any row).
    Prime(Row),
    /// The next row of the gatherer's stream, with its gseq.
    Row(i64, Row),
}

/// How often a waiting reader checks its stop flag: the longest a shutdown waits for it.
pub const STOP_CHECK_INTERVAL: Duration = Duration::from_millis(50);
/// Reconnect backoff: 100 ms first (a restarted PostgreSQL is back within a second), doubling to
/// 5 s (a dead host is retried often enough to be noticed within seconds of its return);
/// connected 10 s counts as healthy again.
pub const RECONNECT_BACKOFF: BackoffConfig = BackoffConfig {
    delay_min: Duration::from_millis(100),
    delay_max: Duration::from_secs(5),
    healthy_after: Duration::from_secs(10),
};
/// A connection attempt gives up after this: an unreachable host cannot stall the reader.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// TCP keepalive idle time: a gatherer host that vanished mid-query is noticed within ~a minute
/// rather than the OS default of two hours.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
/// A full ring is rechecked after this pause, doubling up to [`RING_FULL_SLEEP_MAX`]: quick
/// resumption without spinning a core while the merge thread is busy.
pub const RING_FULL_SLEEP_MIN: Duration = Duration::from_micros(50);
/// See [`RING_FULL_SLEEP_MIN`].
pub const RING_FULL_SLEEP_MAX: Duration = Duration::from_millis(1);
/// How often a connected reader measures its lag (the age of the oldest committed gatherer
/// batch not yet in production): twice per metrics publication.
pub const LAG_INTERVAL: Duration = Duration::from_millis(500);
/// Distinct market tickers a reader interns before it starts over: 4x the largest exchange
/// considered (1M markets); interning only saves allocations, so clearing is harmless.
pub const MARKET_INTERN_MAX: usize = 4_000_000;
/// Gseqs before the cursor a primed reader looks at: the rebuild window (10 s of slack) holds
/// ~100k rows at 10,000 events/s; 20x that covers bursts. Older rows cannot share an exchange
/// time with the next row of a market, except a market whose identical-time run spans more
/// than this many rows of the whole exchange.
pub const PRIME_SPAN_GSEQS: i64 = 2_000_000;

/// A reader's state for the merge thread, `/health` and `/metrics` (relaxed atomics: each value
/// is written by one thread and read as a snapshot).
#[derive(Debug)]
pub struct ReaderStatus {
    /// Metrics label.
    pub name: String,
    /// Cursor slot.
    pub id: GathererId,
    connected: AtomicBool,
    head_gseq: AtomicI64,
    read_gseq: AtomicI64,
    committed_gseq: AtomicI64,
    oldest_unmerged_commit_ms: AtomicI64,
    last_ts_exch_ns: AtomicI64,
    last_ts_recv_ns: AtomicI64,
    rows_read: AtomicU64,
    connects: AtomicU64,
    failures: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// A snapshot of a [`ReaderStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReaderState {
    /// Connected to its gatherer database now.
    pub connected: bool,
    /// The gatherer's last committed gseq as last seen (0: none yet).
    pub head_gseq: i64,
    /// The last gseq handed to the merge thread.
    pub read_gseq: i64,
    /// The gseq production's cursor holds for this gatherer.
    pub committed_gseq: i64,
    /// Wall-clock ms of the oldest gatherer commit not yet merged into production (0: none).
    pub oldest_unmerged_commit_ms: i64,
    /// Latest exchange time read (ns; 0: none).
    pub last_ts_exch_ns: i64,
    /// Latest gatherer receive time read (ns; 0: none).
    pub last_ts_recv_ns: i64,
    /// Rows handed over since start.
    pub rows_read: u64,
    /// Successful connections.
    pub connects: u64,
    /// Failed connections or rounds.
    pub failures: u64,
    /// The last failure, if any.
    pub last_error: Option<String>,
}

impl ReaderState {
    /// Rows committed in the gatherer and not yet in production's cursor.
    pub fn lag_rows(&self) -> u64 {
        u64::try_from(self.head_gseq.saturating_sub(self.committed_gseq)).unwrap_or(0)
    }

    /// Age of the oldest gatherer commit not yet merged, ms at wall-clock `now_ms` (0 when
    /// caught up).
    pub fn lag_ms(&self, now_ms: i64) -> u64 {
        if self.oldest_unmerged_commit_ms == 0 || self.lag_rows() == 0 {
            return 0;
        }
        u64::try_from(now_ms.saturating_sub(self.oldest_unmerged_commit_ms)).unwrap_or(0)
    }
}

impl ReaderStatus {
    /// A fresh status for gatherer `name` (`id`) whose production cursor is `committed`.
    pub fn new(name: &str, id: GathererId, committed: i64) -> ReaderStatus {
        ReaderStatus {
            name: name.to_owned(),
            id,
            connected: AtomicBool::new(false),
            head_gseq: AtomicI64::new(0),
            read_gseq: AtomicI64::new(committed),
            committed_gseq: AtomicI64::new(committed),
            oldest_unmerged_commit_ms: AtomicI64::new(0),
            last_ts_exch_ns: AtomicI64::new(0),
            last_ts_recv_ns: AtomicI64::new(0),
            rows_read: AtomicU64::new(0),
            connects: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }

    /// The merge thread's report that production now holds this gatherer through `gseq`.
    pub fn set_committed(&self, gseq: i64) {
        self.committed_gseq.fetch_max(gseq, Ordering::Relaxed);
    }

    /// Production's cursor at start (before any reader runs).
    pub(crate) fn reset_committed(&self, gseq: i64) {
        self.committed_gseq.store(gseq, Ordering::Relaxed);
        self.read_gseq.store(gseq, Ordering::Relaxed);
    }

    /// Whether the reader is connected now.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// A snapshot.
    pub fn state(&self) -> ReaderState {
        ReaderState {
            connected: self.connected.load(Ordering::Relaxed),
            head_gseq: self.head_gseq.load(Ordering::Relaxed),
            read_gseq: self.read_gseq.load(Ordering::Relaxed),
            committed_gseq: self.committed_gseq.load(Ordering::Relaxed),
            oldest_unmerged_commit_ms: self.oldest_unmerged_commit_ms.load(Ordering::Relaxed),
            last_ts_exch_ns: self.last_ts_exch_ns.load(Ordering::Relaxed),
            last_ts_recv_ns: self.last_ts_recv_ns.load(Ordering::Relaxed),
            rows_read: self.rows_read.load(Ordering::Relaxed),
            connects: self.connects.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            last_error: self.last_error.lock().unwrap_or_else(PoisonError::into_inner).clone(),
        }
    }

    fn fail(&self, message: String) {
        self.connected.store(false, Ordering::Relaxed);
        self.failures.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(PoisonError::into_inner) = Some(message);
    }
}

/// Everything one reader thread needs.
#[derive(Debug)]
pub struct ReaderSettings {
    /// The gatherer database.
    pub database: postgres::Config,
    /// Resume after this gseq (production's cursor).
    pub start_gseq: i64,
    /// Prime the occurrence state with the rows before the cursor from this exchange time on
    /// (`None`: no priming, e.g. production is empty).
    pub prime_from_ns: Option<i64>,
    /// Gseqs per round.
    pub chunk_rows: usize,
    /// Polling fallback.
    pub poll_interval: Duration,
    /// The hand-over ring.
    pub ring: Arc<ArrayQueue<Item>>,
    /// Shared state.
    pub status: Arc<ReaderStatus>,
    /// Set to stop the thread.
    pub stop: Arc<AtomicBool>,
}

/// Starts a reader thread.
pub fn spawn(settings: ReaderSettings) -> std::io::Result<JoinHandle<()>> {
    let name = format!("kdp-dedup-read-{}", settings.status.name);
    std::thread::Builder::new().name(name).spawn(move || Reader::new(settings).run())
}

/// Why a round failed.
#[derive(Debug)]
enum ReadError {
    Db(postgres::Error),
    /// A stored value outside what the gatherer schema promises (a corrupt row).
    Value(String),
}

impl From<postgres::Error> for ReadError {
    fn from(e: postgres::Error) -> Self {
        ReadError::Db(e)
    }
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Db(e) => match e.as_db_error() {
                Some(db) => write!(f, "{}: {} ({})", db.severity(), db.message(), db.code().code()),
                None => write!(f, "{e}"),
            },
            ReadError::Value(m) => write!(f, "{m}"),
        }
    }
}

/// The prepared statements of one connection.
struct Statements {
    head: Statement,
    oldest_unmerged: Statement,
    /// One per [`TABLES`] entry, in that order.
    tables: Vec<Statement>,
}

/// Per table: the query over `gseq > $1 AND gseq <= $2`, in gseq order.
const TABLES: [&str; 7] = [
    "SELECT gseq, ts_recv_ns, market, side_yes, price_micros, delta_centi, ts_exch_ns, \
     client_order_id FROM delta WHERE gseq > $1 AND gseq <= $2 ORDER BY gseq",
    "SELECT gseq, ts_recv_ns, trade_id, market, yes_price_micros, no_price_micros, count_centi, \
     taker_side_yes, taker_book_side_ask, is_block_trade, ts_exch_ns FROM trade \
     WHERE gseq > $1 AND gseq <= $2 ORDER BY gseq",
    "SELECT gseq, ts_recv_ns, market, price_micros, yes_bid_micros, yes_ask_micros, \
     yes_bid_size_centi, yes_ask_size_centi, last_trade_size_centi, volume_centi, \
     open_interest_centi, dollar_volume, dollar_open_interest, clock, ts_exch_ns FROM ticker \
     WHERE gseq > $1 AND gseq <= $2 ORDER BY gseq",
    "SELECT gseq, ts_recv_ns, source, conn_id, sid, seq, market, yes_price_micros, \
     yes_size_centi, no_price_micros, no_size_centi FROM snapshot \
     WHERE gseq > $1 AND gseq <= $2 ORDER BY gseq",
    "SELECT gseq, ts_recv_ns, market, kind, multivariate, open_ts_s, close_ts_s, \
     determination_ts_s, settled_ts_s, result, settlement_value_micros, price_level_structure, \
     payload FROM market_lifecycle WHERE gseq > $1 AND gseq <= $2 ORDER BY gseq",
    "SELECT gseq, ts_recv_ns, event_ticker, payload FROM event_lifecycle \
     WHERE gseq > $1 AND gseq <= $2 ORDER BY gseq",
    "SELECT gseq, ts_recv_ns, conn_id, sid, expected_seq, got_seq, ts_recv_last_good_ns, \
     markets FROM gap WHERE gseq > $1 AND gseq <= $2 ORDER BY gseq",
];

struct Reader {
    settings: ReaderSettings,
    client: Option<(Client, Statements)>,
    backoff: Backoff,
    started: Instant,
    /// The last gseq handed over (or the start cursor).
    read: i64,
    /// Rows read but not yet accepted by a full ring.
    pending: VecDeque<Item>,
    primed: bool,
    markets: HashMap<Box<str>, Arc<str>>,
    lag_measured: Option<Instant>,
}

impl Reader {
    fn new(settings: ReaderSettings) -> Reader {
        let seed = u64::from(settings.status.id) ^ 0x6b64_705f_6465_6475;
        let read = settings.start_gseq;
        let primed = settings.prime_from_ns.is_none() || read == 0;
        Reader {
            settings,
            client: None,
            backoff: Backoff::new(RECONNECT_BACKOFF, seed),
            started: Instant::now(),
            read,
            pending: VecDeque::new(),
            primed,
            markets: HashMap::new(),
            lag_measured: None,
        }
    }

    fn stopping(&self) -> bool {
        self.settings.stop.load(Ordering::Acquire)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Sleeps up to `total`, in slices, until stopped.
    fn pause(&self, total: Duration) {
        let until = Instant::now() + total;
        while !self.stopping() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(STOP_CHECK_INTERVAL));
        }
    }

    fn run(mut self) {
        while !self.stopping() {
            if !self.hand_over() {
                // Paused by a full ring: keep the head and the lag fresh meanwhile.
                if self.client.is_some()
                    && self.lag_due()
                    && let Err(error) = self.refresh()
                {
                    self.failed(&format!("read: {error}"));
                }
                continue;
            }
            if self.client.is_none() && !self.connect() {
                continue;
            }
            match self.round() {
                Ok(true) => {}
                Ok(false) => self.wait_for_rows(),
                Err(error) => self.failed(&format!("read: {error}")),
            }
        }
        let status = &self.settings.status;
        status.connected.store(false, Ordering::Relaxed);
    }

    /// Pushes the pending rows into the ring; `false` if it filled (after a short pause).
    fn hand_over(&mut self) -> bool {
        let mut sleep = RING_FULL_SLEEP_MIN;
        while let Some(item) = self.pending.pop_front() {
            match self.settings.ring.push(item) {
                Ok(()) => sleep = RING_FULL_SLEEP_MIN,
                Err(item) => {
                    self.pending.push_front(item);
                    if self.stopping() {
                        return false;
                    }
                    std::thread::sleep(sleep);
                    sleep = (sleep * 2).min(RING_FULL_SLEEP_MAX);
                    // Keep the lag fresh while paused.
                    if self.lag_due() {
                        return false;
                    }
                }
            }
        }
        true
    }

    fn lag_due(&self) -> bool {
        self.lag_measured.is_none_or(|at| at.elapsed() >= LAG_INTERVAL)
    }

    fn connect(&mut self) -> bool {
        let mut config = self.settings.database.clone();
        config
            .application_name("kdp-dedup")
            .connect_timeout(CONNECT_TIMEOUT)
            .keepalives(true)
            .keepalives_idle(KEEPALIVE_IDLE);
        let connected = (|| -> Result<(Client, Statements), postgres::Error> {
            let mut client = config.connect(NoTls)?;
            client.batch_execute(&format!("LISTEN {NOTIFY_CHANNEL}"))?;
            let head = client.prepare("SELECT coalesce(max(last_gseq), 0) FROM batch")?;
            let oldest_unmerged = client.prepare(
                "SELECT (extract(epoch FROM committed_at) * 1000)::bigint FROM batch \
                 WHERE last_gseq > $1 ORDER BY last_gseq LIMIT 1",
            )?;
            let mut tables = Vec::with_capacity(TABLES.len());
            for sql in TABLES {
                tables.push(client.prepare(sql)?);
            }
            Ok((client, Statements { head, oldest_unmerged, tables }))
        })();
        match connected {
            Ok(c) => {
                self.client = Some(c);
                self.backoff.connected(self.now_ms());
                let status = &self.settings.status;
                status.connects.fetch_add(1, Ordering::Relaxed);
                status.connected.store(true, Ordering::Relaxed);
                tracing::info!(gatherer = %status.name, from_gseq = self.read, "reader connected");
                if !self.primed {
                    match self.prime() {
                        Ok(()) => self.primed = true,
                        Err(error) => {
                            self.failed(&format!("prime: {error}"));
                            return false;
                        }
                    }
                }
                true
            }
            Err(error) => {
                self.failed(&format!("connect: {}", ReadError::Db(error)));
                false
            }
        }
    }

    fn failed(&mut self, message: &str) {
        self.client = None;
        let status = &self.settings.status;
        let first = status.connected();
        status.fail(message.to_owned());
        let delay = self.backoff.failed(self.now_ms());
        if first {
            tracing::warn!(gatherer = %status.name, "reader: {message}; retrying in {delay:?}");
        } else {
            tracing::debug!(gatherer = %status.name, "reader: {message}; retrying in {delay:?}");
        }
        self.pause(delay);
    }

    /// Replays the gatherer's deltas and tickers in the window before the cursor.
    fn prime(&mut self) -> Result<(), ReadError> {
        let Some(from_ns) = self.settings.prime_from_ns else { return Ok(()) };
        let Some((client, _)) = self.client.as_mut() else { return Ok(()) };
        let hi = self.read;
        let lo = hi.saturating_sub(PRIME_SPAN_GSEQS).max(0);
        let mut rows: Vec<(i64, Row)> = Vec::new();
        for (i, sql) in [TABLES[0], TABLES[2]].into_iter().enumerate() {
            let sql =
                format!("{} ", sql.replace("ORDER BY gseq", "AND ts_exch_ns >= $3 ORDER BY gseq"));
            for r in client.query(&sql, &[&lo, &hi, &from_ns])? {
                let row = if i == 0 {
                    delta_row(&mut self.markets, &r)?
                } else {
                    ticker_row(&mut self.markets, &r)?
                };
                rows.push(row);
            }
        }
        rows.sort_unstable_by_key(|(gseq, _)| *gseq);
        let primed = rows.len();
        self.pending.extend(rows.into_iter().map(|(_, row)| Item::Prime(row)));
        tracing::info!(gatherer = %self.settings.status.name, rows = primed, "reader primed");
        Ok(())
    }

    /// Reads the gatherer's head and, when due, the lag; returns the head.
    fn refresh(&mut self) -> Result<i64, ReadError> {
        let Some((client, statements)) = self.client.as_mut() else { return Ok(0) };
        let status = &self.settings.status;
        let head: i64 = client.query_one(&statements.head, &[])?.get(0);
        status.head_gseq.store(head, Ordering::Relaxed);
        if self.lag_measured.is_none_or(|at| at.elapsed() >= LAG_INTERVAL) {
            let committed = status.committed_gseq.load(Ordering::Relaxed);
            let oldest = if committed >= head {
                0
            } else {
                client
                    .query_opt(&statements.oldest_unmerged, &[&committed])?
                    .map_or(0, |r| r.get::<_, i64>(0))
            };
            status.oldest_unmerged_commit_ms.store(oldest, Ordering::Relaxed);
            self.lag_measured = Some(Instant::now());
        }
        Ok(head)
    }

    /// One round: head, lag, and the next chunk. `Ok(false)`: nothing new.
    fn round(&mut self) -> Result<bool, ReadError> {
        let head = self.refresh()?;
        let Some((client, statements)) = self.client.as_mut() else { return Ok(false) };
        let status = &self.settings.status;
        if head <= self.read {
            return Ok(false);
        }
        let span = i64::try_from(self.settings.chunk_rows).unwrap_or(i64::MAX);
        let lo = self.read;
        let hi = head.min(lo.saturating_add(span));
        let mut rows: Vec<(i64, Row)> = Vec::with_capacity(self.settings.chunk_rows);
        for (table, statement) in statements.tables.iter().enumerate() {
            for r in client.query(statement, &[&lo, &hi])? {
                rows.push(table_row(table, &mut self.markets, &r)?);
            }
        }
        rows.sort_unstable_by_key(|(gseq, _)| *gseq);
        if self.markets.len() > MARKET_INTERN_MAX {
            self.markets.clear();
        }
        let (mut exch, mut recv) = (0, 0);
        for (_, row) in &rows {
            let (e, r) = row_times(row);
            exch = exch.max(e);
            recv = recv.max(r);
        }
        status.last_ts_exch_ns.fetch_max(exch, Ordering::Relaxed);
        status.last_ts_recv_ns.fetch_max(recv, Ordering::Relaxed);
        status.rows_read.fetch_add(rows.len() as u64, Ordering::Relaxed);
        self.pending.extend(rows.into_iter().map(|(gseq, row)| Item::Row(gseq, row)));
        self.read = hi;
        status.read_gseq.store(hi, Ordering::Relaxed);
        Ok(true)
    }

    /// Caught up: waits for a notification, the poll interval, or a stop.
    fn wait_for_rows(&mut self) {
        let poll = self.settings.poll_interval;
        let until = Instant::now() + poll;
        let mut failure = None;
        if let Some((client, _)) = self.client.as_mut() {
            let mut notifications = client.notifications();
            // Notifications already received: the next round reads their rows.
            if !notifications.is_empty() {
                let _ = notifications.iter().count();
                return;
            }
            while !self.settings.stop.load(Ordering::Acquire) {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                let slice = left.min(STOP_CHECK_INTERVAL).min(LAG_INTERVAL);
                let woken = notifications.timeout_iter(slice).next();
                match woken {
                    Ok(Some(_)) => {
                        let _ = notifications.iter().count();
                        return;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        failure = Some(ReadError::Db(e));
                        break;
                    }
                }
                if self.lag_measured.is_none_or(|at| at.elapsed() >= LAG_INTERVAL) {
                    break;
                }
            }
        }
        if let Some(error) = failure {
            self.failed(&format!("wait for notifications: {error}"));
        }
    }
}

/// (exchange time, receive time) of a row, ns (0 where it has none).
fn row_times(row: &Row) -> (i64, i64) {
    match row {
        Row::Delta(d) => (d.ts_exch_ns, d.ts_recv_ns),
        Row::Trade(t) => (t.ts_exch_ns, t.ts_recv_ns),
        Row::Ticker(t) => (t.ts_exch_ns, t.ts_recv_ns),
        Row::MarketLifecycle(m) => (0, m.ts_recv_ns),
        Row::EventLifecycle(e) => (0, e.ts_recv_ns),
        Row::Snapshot(s) => (0, s.ts_recv_ns),
        Row::Gap(g) => (0, g.ts_recv_ns),
    }
}

fn intern(markets: &mut HashMap<Box<str>, Arc<str>>, market: &str) -> Arc<str> {
    if let Some(m) = markets.get(market) {
        return Arc::clone(m);
    }
    let m: Arc<str> = market.into();
    markets.insert(market.into(), Arc::clone(&m));
    m
}

fn price(what: &str, gseq: i64, v: i64) -> Result<u32, ReadError> {
    u32::try_from(v).map_err(|_| {
        ReadError::Value(format!("gseq {gseq}: {what} {v} is not a micro-dollar price"))
    })
}

fn opt_price(what: &str, gseq: i64, v: Option<i64>) -> Result<Option<u32>, ReadError> {
    v.map(|v| price(what, gseq, v)).transpose()
}

/// A u64 stored bit for bit in a bigint.
fn bits(v: i64) -> u64 {
    u64::from_ne_bytes(v.to_ne_bytes())
}

fn side(yes: bool) -> Side {
    if yes { Side::Yes } else { Side::No }
}

fn table_row(
    table: usize,
    markets: &mut HashMap<Box<str>, Arc<str>>,
    r: &postgres::Row,
) -> Result<(i64, Row), ReadError> {
    let gseq: i64 = r.try_get(0)?;
    let row = match table {
        0 => return delta_row(markets, r),
        1 => Row::Trade(Box::new(Trade {
            trade_id: r.try_get::<_, &str>(2)?.into(),
            market: intern(markets, r.try_get(3)?),
            yes_price_micros: price("yes_price_micros", gseq, r.try_get(4)?)?,
            no_price_micros: price("no_price_micros", gseq, r.try_get(5)?)?,
            count_centi: r.try_get(6)?,
            taker_side: r.try_get::<_, Option<bool>>(7)?.map(side),
            taker_book_side: r
                .try_get::<_, Option<bool>>(8)?
                .map(|ask| if ask { BookSide::Ask } else { BookSide::Bid }),
            is_block_trade: r.try_get(9)?,
            ts_exch_ns: r.try_get(10)?,
            ts_recv_ns: r.try_get(1)?,
        })),
        2 => return ticker_row(markets, r),
        3 => {
            let source: &str = r.try_get(2)?;
            let anchor = match source {
                "ws" => SnapshotAnchor::Ws {
                    conn_id: bits(r.try_get(3)?),
                    sid: bits(r.try_get::<_, Option<i64>>(4)?.unwrap_or(0)),
                    seq: bits(r.try_get::<_, Option<i64>>(5)?.unwrap_or(0)),
                },
                _ => SnapshotAnchor::Rest,
            };
            let levels = |p: usize, s: usize| -> Result<Box<[Level]>, ReadError> {
                let prices: Vec<i64> = r.try_get(p)?;
                let sizes: Vec<i64> = r.try_get(s)?;
                prices
                    .iter()
                    .zip(&sizes)
                    .map(|(&p, &s)| {
                        Ok(Level { price_micros: price("level price", gseq, p)?, size_centi: s })
                    })
                    .collect()
            };
            Row::Snapshot(Box::new(Snapshot {
                market: intern(markets, r.try_get(6)?),
                anchor,
                yes: levels(7, 8)?,
                no: levels(9, 10)?,
                ts_recv_ns: r.try_get(1)?,
            }))
        }
        4 => Row::MarketLifecycle(Box::new(MarketLifecycle {
            market: intern(markets, r.try_get(2)?),
            kind: r.try_get::<_, &str>(3)?.into(),
            multivariate: r.try_get(4)?,
            open_ts_s: r.try_get(5)?,
            close_ts_s: r.try_get(6)?,
            determination_ts_s: r.try_get(7)?,
            settled_ts_s: r.try_get(8)?,
            result: r.try_get::<_, Option<&str>>(9)?.map(Into::into),
            settlement_value_micros: opt_price("settlement_value_micros", gseq, r.try_get(10)?)?,
            price_level_structure: r.try_get::<_, Option<&str>>(11)?.map(Into::into),
            payload: r.try_get::<_, &str>(12)?.into(),
            ts_recv_ns: r.try_get(1)?,
        })),
        5 => Row::EventLifecycle(Box::new(EventLifecycle {
            event_ticker: r.try_get::<_, &str>(2)?.into(),
            payload: r.try_get::<_, &str>(3)?.into(),
            ts_recv_ns: r.try_get(1)?,
        })),
        _ => {
            let names: Vec<&str> = r.try_get(7)?;
            Row::Gap(Box::new(Gap {
                conn_id: bits(r.try_get(2)?),
                sid: bits(r.try_get(3)?),
                expected_seq: bits(r.try_get(4)?),
                got_seq: r.try_get::<_, Option<i64>>(5)?.map(bits),
                ts_recv_last_good_ns: r.try_get(6)?,
                markets: names.into_iter().map(|m| intern(markets, m)).collect(),
                ts_recv_ns: r.try_get(1)?,
            }))
        }
    };
    Ok((gseq, row))
}

fn delta_row(
    markets: &mut HashMap<Box<str>, Arc<str>>,
    r: &postgres::Row,
) -> Result<(i64, Row), ReadError> {
    let gseq: i64 = r.try_get(0)?;
    Ok((
        gseq,
        Row::Delta(Delta {
            market: intern(markets, r.try_get(2)?),
            side: side(r.try_get(3)?),
            price_micros: price("price_micros", gseq, r.try_get(4)?)?,
            delta_centi: r.try_get(5)?,
            ts_exch_ns: r.try_get(6)?,
            ts_recv_ns: r.try_get(1)?,
            client_order_id: r.try_get::<_, Option<&str>>(7)?.map(Into::into),
        }),
    ))
}

fn ticker_row(
    markets: &mut HashMap<Box<str>, Arc<str>>,
    r: &postgres::Row,
) -> Result<(i64, Row), ReadError> {
    let gseq: i64 = r.try_get(0)?;
    Ok((
        gseq,
        Row::Ticker(Box::new(Ticker {
            market: intern(markets, r.try_get(2)?),
            content: TickerContent {
                price_micros: opt_price("price_micros", gseq, r.try_get(3)?)?,
                yes_bid_micros: opt_price("yes_bid_micros", gseq, r.try_get(4)?)?,
                yes_ask_micros: opt_price("yes_ask_micros", gseq, r.try_get(5)?)?,
                yes_bid_size_centi: r.try_get(6)?,
                yes_ask_size_centi: r.try_get(7)?,
                last_trade_size_centi: r.try_get(8)?,
                volume_centi: r.try_get(9)?,
                open_interest_centi: r.try_get(10)?,
                dollar_volume: r.try_get(11)?,
                dollar_open_interest: r.try_get(12)?,
                clock: r.try_get::<_, Option<i64>>(13)?.map(bits),
            },
            ts_exch_ns: r.try_get(14)?,
            ts_recv_ns: r.try_get(1)?,
        })),
    ))
}
