//! The running deduplicator (`kdp dedup`): readers → rings → merge thread → production sink.
//!
//! ```text
//! reader a ─ring─┐
//! reader b ─ring─┼─► merge thread: pop → MergeCore::push → take_batch (full or aged)
//! reader c ─ring─┘      (Ledger::push around it; Ledger::take_batch → batch + ledger delta)
//!                                   → Sink::write_with_ledger (retry with backoff while
//!                                     production is down; the pair is retried together)
//!                                   → committed cursors back to the readers (lag)
//! HTTP thread: /metrics (the merge thread's recorder), /health (atomics)
//! ```
//!
//! **Start.** The merge thread connects to production (migrating it when asked), reads the
//! cursors, rebuilds the seen-key index from production's rows in the watermark window (the
//! latest exchange time minus the slack), restores the coverage ledger from production's
//! uncovered intervals (open ones and those ending within [`LEDGER_RETAIN_NS`] of the latest
//! exchange time: [`Ledger::restore`]), then starts one reader per gatherer at its cursor,
//! primed from the same window. Production down at start: it retries with backoff, `/health`
//! says so, nothing is read yet.
//!
//! **Run.** Each loop pops at most [`POP_BURST`] rows per ring in turn (no gatherer can starve
//! another) and pushes them into the core; a gatherer is *live* for the core while its reader is
//! connected, and for `live_grace` (default [`crate::config::LIVE_GRACE_MS_DEFAULT`], 30 s) after
//! its connection drops: a reader that reconnects within the grace is never marked not-live, so
//! the keys the other gatherers delivered meanwhile keep waiting for its bit and its re-reads are
//! plain duplicates (not evicted, re-emitted and redone through the staging backstop). Every
//! gatherer starts live the same way, so readers connecting one by one at start do not either.
//! A batch is cut when it holds the mode's row bound (`batch_rows_max`, or
//! `catchup_batch_rows_max` while more than `catchup_lag_rows` rows wait in the gatherers), when
//! [`PUSHED_PER_BATCH_MAX`] rows were decided since the last one (duplicates only move cursors),
//! or when its first row is `batch_age` old. A failed write keeps the batch and retries with
//! backoff: meanwhile nothing is popped, the rings fill and the readers pause, and the gatherers
//! keep buffering in their own databases. Rows and cursors commit together, so nothing read but
//! uncommitted is ever lost: it is read again after a restart.
//!
//! **Stop.** [`DedupHandle::shutdown`] stops the readers, merges what their rings hold, writes
//! the last batches (up to [`FINAL_WRITE_ATTEMPTS`] attempts each) and joins everything.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_queue::ArrayQueue;
use kdp_engine::telemetry::http::HttpServer;
use kdp_engine::telemetry::{Recorder, Telemetry};
use kdp_ingest::session::backoff::{Backoff, BackoffConfig};

use crate::config::Checked;
use crate::crash::{self, CrashAt};
use crate::ledger::{LEDGER_RETAIN_NS, Ledger, LedgerDelta};
use crate::limits::GATHERERS_MAX;
use crate::merge::{Batch, GathererId, MergeCore, MergeError, MergeStats};
use crate::metadata::{self, MetadataThread};
use crate::reader::{self, Item, ReaderSettings, ReaderState, ReaderStatus};
use crate::sink::{Sink, SinkError, SinkOptions, SinkStats, Written};
use crate::telemetry::{self, GathererHealth, Health, Metrics, ProductionHealth};

/// Rows popped from one ring before the next ring's turn: small enough that three rings
/// interleave finely, large enough to amortise the loop.
pub const POP_BURST: usize = 1_024;
/// Rows decided (emitted or dropped) since the last batch that cut a batch even when few were
/// emitted: a stream of duplicates still moves its cursors in bounded steps.
pub const PUSHED_PER_BATCH_MAX: usize = 262_144;
/// Idle merge thread: sleeps this long when every ring is empty and no batch is due, doubling to
/// [`IDLE_SLEEP_MAX`]; 1 ms is far below the 10 ms batch age, so it adds no visible latency.
pub const IDLE_SLEEP_MIN: Duration = Duration::from_micros(50);
/// See [`IDLE_SLEEP_MIN`].
pub const IDLE_SLEEP_MAX: Duration = Duration::from_millis(1);
/// Production retry backoff: 100 ms first, doubling to 5 s (a restarted production database is
/// used again within 5 s of its return); 10 s of successful writes counts as healthy.
pub const PRODUCTION_BACKOFF: BackoffConfig = BackoffConfig {
    delay_min: Duration::from_millis(100),
    delay_max: Duration::from_secs(5),
    healthy_after: Duration::from_secs(10),
};
/// While idle, production is checked (a cursor read) this often, so `/health` does not report a
/// stale "connected".
pub const PRODUCTION_CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// Attempts per remaining batch once a stop was asked: a stop with production down ends after
/// a few seconds; the unwritten rows are read again from the cursors at the next start.
pub const FINAL_WRITE_ATTEMPTS: u32 = 5;
/// Production connection settings: an unreachable host cannot stall the merge thread.
pub const PRODUCTION_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the deduplicator could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The telemetry server or a thread could not start.
    #[error("cannot start: {0}")]
    Start(String),
    /// Production refused in a way retrying cannot fix (schema, inconsistent cursors).
    #[error("production: {0}")]
    Production(#[source] SinkError),
    /// A reader handed rows out of order (a bug).
    #[error("merge: {0}")]
    Merge(#[from] MergeError),
    /// A stop was asked while production was down: the last rows stay in the gatherers and are
    /// read again from the cursors at the next start.
    #[error(
        "stopped with {rows} merged rows not written (production unreachable: {last}); they are \
         read again from the gatherers at the next start"
    )]
    Unflushed {
        /// Rows in the batches not written.
        rows: usize,
        /// The last production error.
        last: String,
    },
    /// The merge thread panicked.
    #[error("the merge thread panicked")]
    Panicked,
}

/// Final counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DedupStats {
    /// The merge core's counters.
    pub merge: MergeStats,
    /// The sink's counters.
    pub sink: SinkStats,
    /// Batches committed.
    pub batches: u64,
    /// Per gatherer, in config order: its name and its reader's final state.
    pub readers: Vec<(String, ReaderState)>,
}

/// State shared by the merge thread, the readers, the HTTP thread and the handle.
#[derive(Debug)]
struct Shared {
    stop: AtomicBool,
    running: AtomicBool,
    readers: Vec<Arc<ReaderStatus>>,
    production_connected: AtomicBool,
    /// Wall-clock ms of the last commit (0: none).
    last_commit_ms: AtomicI64,
    started_ms: i64,
    batches: AtomicU64,
    catch_up: AtomicBool,
    fatal: Mutex<Option<String>>,
}

fn wall_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

fn wall_ms() -> i64 {
    wall_ns() / 1_000_000
}

impl Shared {
    fn health(&self) -> Health {
        let now_ms = wall_ms();
        let gatherers = self
            .readers
            .iter()
            .map(|r| {
                let s = r.state();
                GathererHealth {
                    name: r.name.clone(),
                    id: r.id,
                    connected: s.connected,
                    lag_rows: s.lag_rows(),
                    lag_seconds: s.lag_ms(now_ms) / 1_000,
                    head_gseq: s.head_gseq,
                    read_gseq: s.read_gseq,
                    committed_gseq: s.committed_gseq,
                    last_error: s.last_error,
                }
            })
            .collect();
        let last = self.last_commit_ms.load(Ordering::Relaxed);
        Health {
            running: self.running.load(Ordering::Relaxed),
            catch_up: self.catch_up.load(Ordering::Relaxed),
            production: ProductionHealth {
                connected: self.production_connected.load(Ordering::Relaxed),
                last_commit_age_seconds: (last > 0)
                    .then(|| u64::try_from(now_ms.saturating_sub(last) / 1_000).unwrap_or(0)),
                batches_committed: self.batches.load(Ordering::Relaxed),
            },
            gatherers,
            fatal: self.fatal.lock().unwrap_or_else(PoisonError::into_inner).clone(),
        }
    }
}

/// The deduplicator.
#[derive(Debug)]
pub struct Dedup;

/// A running deduplicator.
#[derive(Debug)]
pub struct DedupHandle {
    shared: Arc<Shared>,
    merge: Option<JoinHandle<Result<DedupStats, ServiceError>>>,
    http: Option<HttpServer>,
    /// The metadata sync thread, when `rest_url` is set (stopped by its own Drop too).
    metadata: Option<MetadataThread>,
}

impl Dedup {
    /// Starts the telemetry server and the merge thread (which connects to production, rebuilds
    /// its index and starts the readers).
    pub fn start(config: Checked) -> Result<DedupHandle, ServiceError> {
        if let Some(point) = config.crash {
            crash::arm(point);
        }
        let readers: Vec<Arc<ReaderStatus>> = config
            .gatherers
            .iter()
            .map(|g| Arc::new(ReaderStatus::new(&g.name, g.id, 0)))
            .collect();
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            running: AtomicBool::new(true),
            readers,
            production_connected: AtomicBool::new(false),
            last_commit_ms: AtomicI64::new(0),
            started_ms: wall_ms(),
            batches: AtomicU64::new(0),
            catch_up: AtomicBool::new(false),
            fatal: Mutex::new(None),
        });
        let metadata = match &config.metadata {
            Some(m) => Some(
                metadata::spawn(m, config.production.clone())
                    .map_err(|e| ServiceError::Start(format!("metadata sync: {e}")))?,
            ),
            None => None,
        };
        let names: Vec<String> = config.gatherers.iter().map(|g| g.name.clone()).collect();
        let (schema, metrics) = telemetry::schema(&names);
        let mut hub = Telemetry::new(schema);
        let recorder = hub.recorder("merge", u64::try_from(wall_ns()).unwrap_or(0));
        let http = match config.metrics_addr {
            None => None,
            Some(addr) => {
                let health = Arc::clone(&shared);
                Some(
                    HttpServer::start(
                        &addr.to_string(),
                        hub.exporter(),
                        move || health.health(),
                        None,
                    )
                    .map_err(|e| ServiceError::Start(e.to_string()))?,
                )
            }
        };
        let merge = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("kdp-dedup-merge".to_owned())
                .spawn(move || {
                    let result = Merger::new(config, Arc::clone(&shared), recorder, metrics).run();
                    if let Err(e) = &result {
                        tracing::error!("dedup stopped: {e}");
                        *shared.fatal.lock().unwrap_or_else(PoisonError::into_inner) =
                            Some(e.to_string());
                    }
                    shared.running.store(false, Ordering::Relaxed);
                    result
                })
                .map_err(|e| ServiceError::Start(format!("merge thread: {e}")))?
        };
        Ok(DedupHandle { shared, merge: Some(merge), http, metadata })
    }
}

impl DedupHandle {
    /// The `/health` report now.
    pub fn health(&self) -> Health {
        self.shared.health()
    }

    /// Where `/metrics` and `/health` are served, if they are.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(HttpServer::local_addr)
    }

    /// Whether the merge thread has ended (on an error: see [`DedupHandle::fatal`]).
    pub fn finished(&self) -> bool {
        self.merge.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Why the merge thread ended, if it did on an error.
    pub fn fatal(&self) -> Option<String> {
        self.shared.fatal.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Stops reading, merges and writes what was read, joins every thread.
    pub fn shutdown(mut self) -> Result<DedupStats, ServiceError> {
        self.shared.stop.store(true, Ordering::Release);
        let result = match self.merge.take() {
            Some(merge) => merge.join().unwrap_or(Err(ServiceError::Panicked)),
            None => Err(ServiceError::Panicked),
        };
        if let Some(http) = self.http.take() {
            http.shutdown();
        }
        if let Some(m) = self.metadata.take() {
            m.shutdown();
        }
        result
    }
}

impl Drop for DedupHandle {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(merge) = self.merge.take() {
            let _ = merge.join();
        }
    }
}

/// One gatherer as the merge thread sees it.
struct Input {
    id: GathererId,
    ring: Arc<ArrayQueue<Item>>,
    status: Arc<ReaderStatus>,
    live: bool,
    /// Since when its reader has been seen disconnected while live (the grace period runs).
    down_since: Option<Instant>,
    /// Published values, to add counter increments.
    rows_read_published: u64,
    failures_published: u64,
}

struct Merger {
    config: Checked,
    shared: Arc<Shared>,
    recorder: Recorder,
    metrics: Metrics,
    sink: Sink,
    backoff: Backoff,
    started: Instant,
    inputs: Vec<Input>,
    readers: Vec<JoinHandle<()>>,
    reader_stop: Arc<AtomicBool>,
    duplicates_published: u64,
    sink_published: SinkStats,
    last_production_check: Instant,
    /// When the gauges were last set: at most every [`METRICS_SET_INTERVAL`].
    metrics_set: Option<Instant>,
}

/// How often the merge thread refreshes its gauges and counters from the shared state: four
/// times per one-second publication, without reading every atomic on every loop.
pub const METRICS_SET_INTERVAL: Duration = Duration::from_millis(250);

impl Merger {
    fn new(config: Checked, shared: Arc<Shared>, recorder: Recorder, metrics: Metrics) -> Merger {
        let mut production = config.production.clone();
        production
            .application_name("kdp-dedup")
            .connect_timeout(PRODUCTION_CONNECT_TIMEOUT)
            .keepalives(true)
            .keepalives_idle(reader::KEEPALIVE_IDLE);
        let sink = Sink::new(production, SinkOptions { migrate: config.migrate });
        Merger {
            config,
            shared,
            recorder,
            metrics,
            sink,
            backoff: Backoff::new(PRODUCTION_BACKOFF, 0x6465_6475_7073_696e),
            started: Instant::now(),
            inputs: Vec::new(),
            readers: Vec::new(),
            reader_stop: Arc::new(AtomicBool::new(false)),
            duplicates_published: 0,
            sink_published: SinkStats::default(),
            last_production_check: Instant::now(),
            metrics_set: None,
        }
    }

    fn stopping(&self) -> bool {
        self.shared.stop.load(Ordering::Acquire)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Sleeps up to `total` in slices, publishing metrics, until a stop (if `until_stop`).
    fn pause(&mut self, total: Duration, until_stop: bool) {
        let until = Instant::now() + total;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() || (until_stop && self.stopping()) {
                break;
            }
            std::thread::sleep(left.min(reader::STOP_CHECK_INTERVAL));
            self.publish(None);
        }
    }

    fn production_failed(&mut self, what: &str, error: &SinkError) -> Duration {
        let was = self.shared.production_connected.swap(false, Ordering::Relaxed);
        let delay = self.backoff.failed(self.now_ms());
        if was || self.backoff.failures() == 1 {
            tracing::warn!("production: {what}: {error}; retrying in {delay:?}");
        } else {
            tracing::debug!("production: {what}: {error}; retrying in {delay:?}");
        }
        delay
    }

    fn production_ok(&mut self) {
        if !self.shared.production_connected.swap(true, Ordering::Relaxed) {
            tracing::info!("production connected");
            self.backoff.connected(self.now_ms());
        }
    }

    /// Cursors and the index from production, retried until it answers or a stop.
    fn init(&mut self) -> Result<Option<(MergeCore, Ledger)>, ServiceError> {
        let slack = self.config.limits.watermark_slack_ns;
        loop {
            if self.stopping() {
                return Ok(None);
            }
            let read = (|| {
                let cursors = self.sink.read_cursors()?;
                let latest = self.sink.latest_ts_exch_ns()?;
                let from = latest.map(|l| l.saturating_sub(slack));
                let keys = match from {
                    Some(from) => self.sink.read_window(from)?,
                    None => Vec::new(),
                };
                let held = self.sink.read_uncovered(
                    latest.map_or(i64::MIN, |t| t.saturating_sub(LEDGER_RETAIN_NS)),
                )?;
                Ok::<_, SinkError>((cursors, from, keys, held))
            })();
            match read {
                Ok((cursors, prime_from_ns, keys, held)) => {
                    self.production_ok();
                    let core = self.start_readers(&cursors, prime_from_ns, keys)?;
                    let ledger = Ledger::restore(self.slots(), &held);
                    return Ok(Some((core, ledger)));
                }
                Err(e @ SinkError::Schema(_)) => return Err(ServiceError::Production(e)),
                Err(e) => {
                    let delay = self.production_failed("start", &e);
                    self.pause(delay, true);
                }
            }
        }
    }

    /// Gatherer slots of the merge core and the ledger: ids 0..=the largest configured.
    fn slots(&self) -> usize {
        self.config.gatherers.iter().map(|g| usize::from(g.id) + 1).max().unwrap_or(1)
    }

    fn start_readers(
        &mut self,
        cursors: &[Option<i64>; GATHERERS_MAX],
        prime_from_ns: Option<i64>,
        keys: Vec<crate::merge::ProductionKey>,
    ) -> Result<MergeCore, ServiceError> {
        let slots = self.slots();
        let start: Vec<i64> = (0..slots).map(|i| cursors[i].unwrap_or(0)).collect();
        let mut core = MergeCore::new(self.config.limits, &start)?;
        for id in 0..slots {
            // Unconfigured slots are never live.
            core.set_live(u8::try_from(id).unwrap_or(0), false)?;
        }
        for g in &self.config.gatherers {
            // Every configured gatherer starts live, as if its reader had just dropped: readers
            // connect one by one, and a gatherer alone live would take every key it delivers
            // as complete (not held), so the next reader's copies would be emitted again.
            // Within `live_grace` it connects; past it, it is not live until it does.
            core.set_live(g.id, true)?;
        }
        let rebuilt = keys.len();
        for key in keys {
            core.load_production(key);
        }
        tracing::info!(
            keys = rebuilt,
            cursors = ?start,
            "index rebuilt from production; starting readers"
        );
        for (g, status) in self.config.gatherers.iter().zip(&self.shared.readers) {
            let cursor = start[usize::from(g.id)];
            status.reset_committed(cursor);
            let ring = Arc::new(ArrayQueue::new(self.config.ring_capacity));
            let handle = reader::spawn(ReaderSettings {
                database: g.database.clone(),
                start_gseq: cursor,
                prime_from_ns,
                chunk_rows: self.config.read_chunk_rows,
                poll_interval: self.config.poll_interval,
                ring: Arc::clone(&ring),
                status: Arc::clone(status),
                stop: Arc::clone(&self.reader_stop),
            })
            .map_err(|e| ServiceError::Start(format!("reader {}: {e}", g.name)))?;
            self.readers.push(handle);
            self.inputs.push(Input {
                id: g.id,
                ring,
                status: Arc::clone(status),
                live: true,
                down_since: Some(Instant::now()),
                rows_read_published: 0,
                failures_published: 0,
            });
        }
        Ok(core)
    }

    fn run(mut self) -> Result<DedupStats, ServiceError> {
        let Some((mut core, mut ledger)) = self.init()? else {
            return Ok(self.stats(None));
        };
        let result = self.merge(&mut core, &mut ledger);
        self.reader_stop.store(true, Ordering::Release);
        for handle in self.readers.drain(..) {
            let _ = handle.join();
        }
        result.map(|()| self.stats(Some(&core)))
    }

    fn stats(&self, core: Option<&MergeCore>) -> DedupStats {
        DedupStats {
            merge: core.map(MergeCore::stats).unwrap_or_default(),
            sink: self.sink.stats(),
            batches: self.shared.batches.load(Ordering::Relaxed),
            readers: self.shared.readers.iter().map(|r| (r.name.clone(), r.state())).collect(),
        }
    }

    /// Unread rows over every gatherer: head − committed.
    fn lag_rows(&self) -> u64 {
        self.inputs.iter().map(|i| i.status.state().lag_rows()).sum()
    }

    fn merge(&mut self, core: &mut MergeCore, ledger: &mut Ledger) -> Result<(), ServiceError> {
        let mut opened: Option<Instant> = None;
        let mut pushed = 0usize;
        let mut idle = IDLE_SLEEP_MIN;
        let mut next = 0usize;
        let mut threshold = self.config.batch_rows_max;
        let mut mode_checked = Instant::now();
        let mut draining = false;
        loop {
            if !draining && self.stopping() {
                // Stop reading; merge and write what the rings hold.
                self.reader_stop.store(true, Ordering::Release);
                for handle in self.readers.drain(..) {
                    let _ = handle.join();
                }
                draining = true;
            }
            let now = Instant::now();
            for input in &mut self.inputs {
                let connected = input.status.connected();
                let live = if connected {
                    input.down_since = None;
                    true
                } else if input.live {
                    // Still live within the grace period after its connection dropped.
                    let since = *input.down_since.get_or_insert(now);
                    now.duration_since(since) < self.config.live_grace
                } else {
                    false
                };
                if live != input.live {
                    core.set_live(input.id, live)?;
                    input.live = live;
                    if !live {
                        tracing::warn!(
                            gatherer = %input.status.name,
                            grace = ?self.config.live_grace,
                            "gatherer not live: its reader stayed disconnected past the grace"
                        );
                    }
                }
            }
            if mode_checked.elapsed() >= reader::LAG_INTERVAL {
                mode_checked = Instant::now();
                let catch_up = self.lag_rows() > self.config.catchup_lag_rows;
                if catch_up != self.shared.catch_up.swap(catch_up, Ordering::Relaxed) {
                    tracing::info!(catch_up, "batch mode changed");
                }
                threshold = if catch_up {
                    self.config.catchup_batch_rows_max
                } else {
                    self.config.batch_rows_max
                };
            }
            // Pop: each ring in turn, a burst at a time, until the batch is full.
            let mut popped = 0usize;
            let n = self.inputs.len();
            for k in 0..n {
                let input = &self.inputs[(next + k) % n];
                for _ in 0..POP_BURST {
                    let Some(item) = input.ring.pop() else { break };
                    popped += 1;
                    match item {
                        Item::Prime(row) => core.prime(input.id, &row)?,
                        Item::Row(gseq, row) => {
                            ledger.push(core, input.id, gseq, row)?;
                            pushed += 1;
                            opened.get_or_insert_with(Instant::now);
                        }
                    }
                    if core.batch_rows() >= threshold {
                        break;
                    }
                }
                if core.batch_rows() >= threshold {
                    break;
                }
            }
            next = (next + 1) % n.max(1);
            let due = core.batch_rows() >= threshold
                || pushed >= PUSHED_PER_BATCH_MAX
                || opened.is_some_and(|t| t.elapsed() >= self.config.batch_age)
                || (draining && popped == 0 && opened.is_some());
            if due {
                if let Some((batch, delta)) = ledger.take_batch(core) {
                    self.write(batch, delta)?;
                }
                opened = None;
                pushed = 0;
            }
            if draining && popped == 0 && opened.is_none() {
                self.publish(Some(core));
                return Ok(());
            }
            self.publish(Some(core));
            if popped == 0 && !due {
                if opened.is_none()
                    && self.last_production_check.elapsed() >= PRODUCTION_CHECK_INTERVAL
                {
                    self.check_production();
                }
                std::thread::sleep(idle);
                idle = (idle * 2).min(IDLE_SLEEP_MAX);
            } else {
                idle = IDLE_SLEEP_MIN;
            }
        }
    }

    fn check_production(&mut self) {
        self.last_production_check = Instant::now();
        match self.sink.read_cursors() {
            Ok(_) => self.production_ok(),
            Err(e) => {
                // The next batch retries with backoff; here only the health changes.
                let _ = self.production_failed("check", &e);
            }
        }
    }

    /// Writes one batch with its coverage-ledger delta in one transaction, retrying the pair while
    /// production is down ([`crate::sink::Written::AlreadyCommitted`]: both were committed);
    /// after a stop, at most [`FINAL_WRITE_ATTEMPTS`] attempts.
    fn write(&mut self, batch: Batch, delta: LedgerDelta) -> Result<(), ServiceError> {
        let mut attempts_since_stop = 0u32;
        loop {
            let t0 = Instant::now();
            match self.sink.write_with_ledger(&batch, &delta) {
                Ok(written) => {
                    crash::reached(CrashAt::AfterCommit);
                    let latency_us = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
                    self.committed(&batch, written, latency_us);
                    return Ok(());
                }
                Err(e @ (SinkError::Schema(_) | SinkError::Cursors(_))) => {
                    return Err(ServiceError::Production(e));
                }
                Err(e) => {
                    let delay = self.production_failed("write", &e);
                    if self.stopping() {
                        attempts_since_stop += 1;
                        if attempts_since_stop >= FINAL_WRITE_ATTEMPTS {
                            return Err(ServiceError::Unflushed {
                                rows: batch.rows(),
                                last: e.to_string(),
                            });
                        }
                    }
                    self.pause(delay, false);
                }
            }
        }
    }

    fn committed(&mut self, batch: &Batch, written: Written, latency_us: u64) {
        self.production_ok();
        self.last_production_check = Instant::now();
        let now_ns = wall_ns();
        self.shared.last_commit_ms.store(now_ns / 1_000_000, Ordering::Relaxed);
        self.shared.batches.fetch_add(1, Ordering::Relaxed);
        for input in &self.inputs {
            if let Some(gseq) = batch.cursors[usize::from(input.id)] {
                input.status.set_committed(gseq);
            }
        }
        let m = &self.metrics;
        let r = &mut self.recorder;
        r.incr(m.batches);
        r.record(m.commit_latency_us, latency_us);
        let rows = match written {
            Written::Direct { rows } => rows,
            Written::Staged { rows, conflicts } => rows + conflicts,
            Written::AlreadyCommitted => batch.rows() as u64,
        };
        if rows > 0 {
            r.record(m.batch_rows, rows);
        }
        r.add(m.rows_merged, batch.rows() as u64);
        let us =
            |since_ns: i64| u64::try_from(now_ns.saturating_sub(since_ns) / 1_000).unwrap_or(0);
        for d in &batch.deltas {
            r.record(m.exch_to_commit_us, us(d.row.ts_exch_ns));
            r.record(m.recv_to_commit_us, us(d.row.ts_recv_ns));
        }
        for t in &batch.trades {
            r.record(m.exch_to_commit_us, us(t.row.ts_exch_ns));
            r.record(m.recv_to_commit_us, us(t.row.ts_recv_ns));
        }
        for t in &batch.tickers {
            r.record(m.exch_to_commit_us, us(t.row.ts_exch_ns));
            r.record(m.recv_to_commit_us, us(t.row.ts_recv_ns));
        }
    }

    /// Sets the gauges and counters from the shared state; publishes once a second.
    fn publish(&mut self, core: Option<&MergeCore>) {
        if self.metrics_set.is_some_and(|at| at.elapsed() < METRICS_SET_INTERVAL) {
            return;
        }
        self.metrics_set = Some(Instant::now());
        let now_ns = u64::try_from(wall_ns()).unwrap_or(0);
        let now_ms = wall_ms();
        let m = &self.metrics;
        let r = &mut self.recorder;
        for (input, gm) in self.inputs.iter_mut().zip(&m.gatherers) {
            let s = input.status.state();
            r.set(gm.lag_rows, i64::try_from(s.lag_rows()).unwrap_or(i64::MAX));
            r.set(gm.lag_seconds, i64::try_from(s.lag_ms(now_ms) / 1_000).unwrap_or(i64::MAX));
            r.set(gm.connected, i64::from(s.connected));
            r.set(gm.ring_rows, i64::try_from(input.ring.len()).unwrap_or(i64::MAX));
            r.add(gm.rows_read, s.rows_read.saturating_sub(input.rows_read_published));
            input.rows_read_published = s.rows_read;
            r.add(gm.failures, s.failures.saturating_sub(input.failures_published));
            input.failures_published = s.failures;
        }
        if self.inputs.is_empty() {
            // Before the readers start: every gatherer reads as disconnected.
            for gm in &m.gatherers {
                r.set(gm.connected, 0);
            }
        }
        if let Some(core) = core {
            let stats = core.stats();
            let duplicates = stats.duplicates + stats.repeats;
            r.add(m.duplicates, duplicates.saturating_sub(self.duplicates_published));
            self.duplicates_published = duplicates;
            r.set(m.index_keys, i64::try_from(stats.index_keys).unwrap_or(i64::MAX));
        }
        let sink = self.sink.stats();
        r.add(
            m.batches_staged,
            sink.batches_staged.saturating_sub(self.sink_published.batches_staged),
        );
        r.add(
            m.rows_conflicted,
            sink.rows_conflicted.saturating_sub(self.sink_published.rows_conflicted),
        );
        r.add(m.sink_failures, sink.failures.saturating_sub(self.sink_published.failures));
        self.sink_published = sink;
        let last = self.shared.last_commit_ms.load(Ordering::Relaxed);
        let since = if last > 0 { last } else { self.shared.started_ms };
        r.set(m.last_commit_age, now_ms.saturating_sub(since) / 1_000);
        r.set(
            m.production_connected,
            i64::from(self.shared.production_connected.load(Ordering::Relaxed)),
        );
        r.set(m.catch_up, i64::from(self.shared.catch_up.load(Ordering::Relaxed)));
        r.publish_if_due(now_ns);
    }
}
