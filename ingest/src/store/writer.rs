//! The gatherer writer: one plain thread (never a glommio executor) that drains the shard rings,
//! numbers every record with the next `gseq`, and writes batches into the gatherer database.
//!
//! Pipeline, one stage at a time: **drain** (round-robin over the rings, up to the buffer
//! bound) → **batch** (flush when `batch_rows_max` rows wait or the oldest has waited
//! `flush_age_ms_max`) → **write** (one transaction: binary COPY per table, a `batch` row, a
//! `pg_notify` on [`NOTIFY_CHANNEL`] delivered at commit) → **acknowledge** (the rows leave the
//! buffer only after COMMIT succeeded).
//!
//! Guarantees: gseqs are contiguous and strictly increasing across all tables; a batch commits
//! whole or not at all; one committer means commit order = gseq order. When the database fails,
//! the batch stays in the buffer with its gseqs and is retried after a reconnect with
//! exponential backoff; on every (re)connect the writer reads the last committed gseq, so a
//! batch whose COMMIT succeeded but whose acknowledgement was lost is not written twice. While
//! the buffer is full the writer stops draining: producers see full rings. Nothing is dropped.
//!
//! Runs (schema version 2): the first connection of a writer records its run (`run` table) in
//! one transaction before any row of the run is numbered. When the database already holds a
//! history, that transaction also writes a **restart gap** with the next gseq: kind `restart`
//! when the previous run ended with a clean stop, `crash` when it did not (killed, power lost),
//! from the earliest per-connection last receive time of the previous run (`run_conn`, kept
//! within `progress_interval_ms_max` of the truth, never ahead of it) to this run's start, for
//! [`WriterOptions::markets`] (empty: every market of this gatherer). A connection's rows
//! commit in its receive order, so a crash loses at most each connection's uncommitted tail,
//! which lies inside that gap. [`Writer::shutdown`] ends with the clean-stop mark, in the same
//! transaction as the final per-connection progress.
//!
//! Telemetry (optional, [`WriterTelemetry`]): the writer owns its own [`Recorder`]; at
//! acknowledge it counts committed rows and records each row's frame-received → committed
//! latency, per batch its size, and publishes on the recorder's timer from its loop.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_queue::ArrayQueue;
use kdp_engine::event::{BookSide, Side};
use kdp_engine::pg::copy::{BinaryCopyIn, CopyEncoder};
use kdp_engine::pg::migrate::{self, MigrateError};
use kdp_engine::telemetry::{CounterId, HistogramId, Recorder};
use postgres::{Client, NoTls, Transaction};

use super::limits::WriterLimits;
use super::record::{GapKind, Origin, RawReason, Record, SnapshotSource};
use super::schema::{GATHERER, NOTIFY_CHANNEL};

/// How to run a writer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WriterOptions {
    /// Its bounds.
    pub limits: WriterLimits,
    /// Apply the gatherer migrations on every connect (schema "created at start").
    pub migrate: bool,
    /// The markets this run captures, named by its restart gap. Empty: the gap names no market,
    /// which means every market of this gatherer.
    pub markets: Arc<[Arc<str>]>,
}

/// Rows committed per table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[allow(missing_docs)]
pub struct TableRows {
    pub delta: u64,
    pub trade: u64,
    pub ticker: u64,
    pub snapshot: u64,
    pub market_lifecycle: u64,
    pub event_lifecycle: u64,
    pub gap: u64,
    pub raw_frame: u64,
}

impl TableRows {
    /// Rows in all tables.
    pub fn total(&self) -> u64 {
        self.delta
            + self.trade
            + self.ticker
            + self.snapshot
            + self.market_lifecycle
            + self.event_lifecycle
            + self.gap
            + self.raw_frame
    }

    fn count(&mut self, record: &Record) {
        let n = match record {
            Record::Delta(_) => &mut self.delta,
            Record::Trade(_) => &mut self.trade,
            Record::Ticker(_) => &mut self.ticker,
            Record::Snapshot(_) => &mut self.snapshot,
            Record::MarketLifecycle(_) => &mut self.market_lifecycle,
            Record::EventLifecycle(_) => &mut self.event_lifecycle,
            Record::Gap(_) => &mut self.gap,
            Record::Raw(_) => &mut self.raw_frame,
        };
        *n += 1;
    }
}

/// The writer's telemetry, published as a snapshot after every loop turn that changed it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WriterStats {
    /// Rows committed, by table.
    pub rows: TableRows,
    /// Batches committed (one transaction each).
    pub batches_committed: u64,
    /// Largest batch committed, in rows.
    pub batch_rows_largest: u64,
    /// Batches that failed (connection lost, statement refused); each is retried whole.
    pub batch_failures: u64,
    /// Successful connections (the first one, then reconnects).
    pub connects: u64,
    /// Connection attempts that failed.
    pub connect_failures: u64,
    /// The last committed gseq known to the writer (0: none yet).
    pub last_committed_gseq: i64,
    /// Rows numbered and held in memory, not yet committed.
    pub buffered_rows: usize,
    /// Wall-clock time of the last committed batch, ns since the epoch (0: none yet).
    pub last_commit_ns: u64,
    /// The last database error, for operators.
    pub last_error: Option<String>,
    /// This run's `run.run_id` once recorded (0: not yet).
    pub run_id: i64,
    /// The kind of the gap this run wrote for the time before it (`None`: a fresh database, or
    /// not recorded yet).
    pub restart_gap: Option<GapKind>,
    /// Whether the clean-stop mark was committed (set by [`Writer::shutdown`] only).
    pub clean_stop: bool,
}

/// Why the writer stopped without flushing everything.
#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    /// The limits are unusable.
    #[error("invalid writer limits: {0}")]
    Limits(String),
    /// The writer thread could not be started.
    #[error("cannot start the writer thread: {0}")]
    Spawn(#[source] std::io::Error),
    /// The database's schema cannot be used by this build (not retried: it needs an operator).
    #[error("gatherer database schema refused: {0}")]
    Schema(#[source] MigrateError),
    /// The database's schema is older than this build's and the writer may not migrate it.
    #[error(
        "gatherer database schema: table `{0}` is missing; run `kdp migrate --schema gatherer` \
         (or start the writer with migrate on)"
    )]
    Outdated(&'static str),
    /// The writer thread panicked.
    #[error("the writer thread panicked")]
    Panicked,
}

/// The writer's metrics: its own recorder and the series it records into.
#[derive(Debug)]
pub struct WriterTelemetry {
    /// The writer thread's recorder.
    pub recorder: Recorder,
    /// Rows committed (counter).
    pub rows_committed: CounterId,
    /// Rows per committed batch.
    pub batch_rows: HistogramId,
    /// Each committed row's frame received → committed, µs.
    pub recv_to_commit_us: HistogramId,
}

/// A running writer thread. Stop it with [`Writer::shutdown`] once the producers have stopped.
#[derive(Debug)]
pub struct Writer {
    stop: Arc<AtomicBool>,
    stats: Arc<Mutex<WriterStats>>,
    alive: Weak<()>,
    thread: JoinHandle<Result<WriterStats, WriterError>>,
}

/// A read-only view of a running writer for another thread (the `/health` endpoint).
#[derive(Debug, Clone)]
pub struct WriterWatch {
    stats: Arc<Mutex<WriterStats>>,
    alive: Weak<()>,
}

impl WriterWatch {
    /// The latest stats.
    pub fn stats(&self) -> WriterStats {
        self.stats.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Whether the writer thread still runs (its state is dropped when it returns or panics).
    pub fn running(&self) -> bool {
        self.alive.strong_count() > 0
    }
}

fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A key for this writer's `run` row, unique across processes and writers: its start time, the
/// process id and a per-process count, mixed (splitmix64).
fn run_token(started_ns: i64) -> i64 {
    static WRITERS: AtomicU64 = AtomicU64::new(0);
    let n = WRITERS.fetch_add(1, Ordering::Relaxed);
    let mut x = u64::from_ne_bytes(started_ns.to_ne_bytes())
        ^ (u64::from(std::process::id()) << 40)
        ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    u64_bits(x ^ (x >> 31))
}

impl Writer {
    /// Starts the writer thread for the database `config` names, draining `rings`.
    pub fn start(
        config: postgres::Config,
        rings: Vec<Arc<ArrayQueue<Record>>>,
        options: WriterOptions,
    ) -> Result<Writer, WriterError> {
        Self::start_with_telemetry(config, rings, options, None)
    }

    /// [`Writer::start`], recording into `telemetry` when given.
    pub fn start_with_telemetry(
        config: postgres::Config,
        rings: Vec<Arc<ArrayQueue<Record>>>,
        options: WriterOptions,
        telemetry: Option<WriterTelemetry>,
    ) -> Result<Writer, WriterError> {
        options.limits.check().map_err(WriterError::Limits)?;
        let limits = options.limits;
        let started_ns = i64::try_from(wall_ns()).unwrap_or(i64::MAX);
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Mutex::new(WriterStats::default()));
        let mut config = config;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(options.limits.connect_timeout());
        }
        let alive = Arc::new(());
        let watched = Arc::downgrade(&alive);
        let run = Run {
            _alive: alive,
            telemetry,
            config,
            rings,
            options,
            stop: Arc::clone(&stop),
            published: Arc::clone(&stats),
            client: None,
            next_gseq: None,
            pending: VecDeque::new(),
            oldest: None,
            retry_at: None,
            backoff: limits.backoff_min(),
            next_ring: 0,
            stats: WriterStats::default(),
            started_ns,
            token: run_token(started_ns),
            run_id: None,
            progress: HashMap::new(),
            progress_written: None,
            encoder: CopyEncoder::new(),
        };
        let thread = thread::Builder::new()
            .name("kdp-writer".into())
            .spawn(move || run.run())
            .map_err(WriterError::Spawn)?;
        Ok(Writer { stop, stats, alive: watched, thread })
    }

    /// A read-only view for other threads (it keeps nothing of the writer alive).
    pub fn watch(&self) -> WriterWatch {
        WriterWatch { stats: Arc::clone(&self.stats), alive: Weak::clone(&self.alive) }
    }

    /// The latest telemetry snapshot.
    pub fn stats(&self) -> WriterStats {
        self.stats.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Whether the thread has ended (only on shutdown or a fatal error).
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Ordered shutdown: call after the producers stopped. The writer drains the rings, flushes
    /// and commits everything (waiting out a database outage: nothing is dropped), and returns
    /// its final telemetry.
    pub fn shutdown(self) -> Result<WriterStats, WriterError> {
        self.stop.store(true, Ordering::Release);
        self.thread.thread().unpark();
        self.thread.join().map_err(|_| WriterError::Panicked)?
    }
}

/// The writer thread's state.
struct Run {
    /// Dropped with the state when the thread ends: [`WriterWatch::running`].
    _alive: Arc<()>,
    telemetry: Option<WriterTelemetry>,
    config: postgres::Config,
    rings: Vec<Arc<ArrayQueue<Record>>>,
    options: WriterOptions,
    stop: Arc<AtomicBool>,
    published: Arc<Mutex<WriterStats>>,
    client: Option<Client>,
    /// Unknown until the first connection tells where the database left off.
    next_gseq: Option<i64>,
    /// Numbered records not yet committed, in gseq order.
    pending: VecDeque<(i64, Record)>,
    /// When the front of `pending` was drained (approximately: reset when the buffer empties).
    oldest: Option<Instant>,
    retry_at: Option<Instant>,
    backoff: Duration,
    next_ring: usize,
    stats: WriterStats,
    /// Wall-clock start, ns: the end of the restart gap.
    started_ns: i64,
    /// This writer's key for its `run` row.
    token: i64,
    /// The `run` row, once recorded.
    run_id: Option<i64>,
    /// Per connection, (gseq, receive time) of its last committed row. A connection enters the
    /// map only through a batch that also wrote it to `run_conn`.
    progress: HashMap<u64, (i64, i64)>,
    /// When `run_conn` was last written.
    progress_written: Option<Instant>,
    /// The binary COPY buffer, reused by every COPY of every batch.
    encoder: CopyEncoder,
}

/// What recording a run found.
struct RunStart {
    run_id: i64,
    /// The last committed gseq afterwards (the restart gap's, when one was written).
    committed: i64,
    gap: Option<GapKind>,
}

impl Run {
    fn run(mut self) -> Result<WriterStats, WriterError> {
        loop {
            let stopping = self.stop.load(Ordering::Acquire);
            let now = Instant::now();
            if self.client.is_none() && self.retry_at.is_none_or(|at| now >= at) {
                self.connect()?;
            }
            let drained = self.drain();
            let flushed = self.client.is_some() && self.due(stopping) && self.flush();
            self.publish();
            if stopping && self.pending.is_empty() && self.rings.iter().all(|r| r.is_empty()) {
                self.mark_clean_stop();
                self.publish();
                if let Some(t) = self.telemetry.as_mut() {
                    t.recorder.publish(wall_ns());
                }
                return Ok(self.stats);
            }
            if drained == 0 && !flushed {
                thread::park_timeout(self.idle_wait());
            }
        }
    }

    /// Connects, applies the migrations if asked, and learns the last committed gseq: the
    /// numbering resumes after it, and buffered rows at or below it (a batch whose COMMIT
    /// succeeded though its answer was lost) are already durable and leave the buffer.
    fn connect(&mut self) -> Result<(), WriterError> {
        match self.try_connect() {
            Ok((mut client, mut committed)) => {
                if self.run_id.is_none() {
                    match self.start_run(&mut client, committed) {
                        Ok(run) => {
                            if run.committed > committed {
                                self.stats.rows.gap += 1;
                                if let Some(t) = self.telemetry.as_mut() {
                                    t.recorder.incr(t.rows_committed);
                                }
                            }
                            committed = run.committed;
                            self.run_id = Some(run.run_id);
                            self.stats.run_id = run.run_id;
                            self.stats.restart_gap = run.gap;
                            if let Some(kind) = run.gap {
                                tracing::warn!(
                                    kind = kind.as_str(),
                                    gseq = committed,
                                    run_id = run.run_id,
                                    "gatherer restarted: the time since the previous run's \
                                     last committed rows is recorded as a gap"
                                );
                            }
                        }
                        Err(error) => {
                            self.stats.connect_failures += 1;
                            self.fail(format!("record the run: {}", describe(&error)));
                            return Ok(());
                        }
                    }
                }
                self.client = Some(client);
                self.retry_at = None;
                self.stats.connects += 1;
                self.acknowledge_through(committed);
                let next = self.next_gseq.get_or_insert(committed + 1);
                debug_assert!(*next > committed, "gseq {next} not above committed {committed}");
                Ok(())
            }
            Err(ConnectError::Schema(error)) => Err(WriterError::Schema(error)),
            Err(ConnectError::Outdated(table)) => Err(WriterError::Outdated(table)),
            Err(ConnectError::Db(message)) => {
                self.stats.connect_failures += 1;
                self.fail(message);
                Ok(())
            }
        }
    }

    fn try_connect(&self) -> Result<(Client, i64), ConnectError> {
        let mut client = self.config.connect(NoTls).map_err(|e| ConnectError::db("connect", e))?;
        if self.options.migrate {
            migrate::migrate(&mut client, &GATHERER).map_err(|e| match e {
                MigrateError::Postgres { .. } => ConnectError::Db(e.to_string()),
                other => ConnectError::Schema(other),
            })?;
        }
        let row = client
            .query_one(
                "SELECT coalesce(max(last_gseq), 0), to_regclass('run') IS NULL, \
                 to_regclass('run_conn') IS NULL FROM batch",
                &[],
            )
            .map_err(|e| ConnectError::db("read the last committed gseq", e))?;
        let (committed, no_run, no_run_conn): (i64, bool, bool) =
            (row.get(0), row.get(1), row.get(2));
        if no_run || no_run_conn {
            return Err(ConnectError::Outdated(if no_run { "run" } else { "run_conn" }));
        }
        Ok((client, committed))
    }

    /// Records this run in one transaction: when the database already has a history, a restart
    /// gap with gseq `committed + 1` (its own one-row batch, notified), then the `run` row. A
    /// run found by its token was recorded by an attempt whose COMMIT answer was lost.
    fn start_run(&self, client: &mut Client, committed: i64) -> Result<RunStart, postgres::Error> {
        let mut tx = client.transaction()?;
        if let Some(row) =
            tx.query_opt("SELECT run_id, first_gseq FROM run WHERE token = $1", &[&self.token])?
        {
            let (run_id, first): (i64, i64) = (row.get(0), row.get(1));
            let kind: Option<String> = tx
                .query_opt("SELECT kind FROM gap WHERE gseq = $1 AND conn_id = 0", &[&first])?
                .map(|r| r.get(0));
            tx.commit()?;
            let gap = kind.map(|k| if k == "restart" { GapKind::Restart } else { GapKind::Crash });
            return Ok(RunStart { run_id, committed, gap });
        }
        let previous = tx.query_opt(
            "SELECT run_id, started_ns, stopped_ns IS NOT NULL FROM run \
             ORDER BY run_id DESC LIMIT 1",
            &[],
        )?;
        let gap = match previous {
            Some(row) => {
                let (run_id, started_ns, clean): (i64, i64, bool) =
                    (row.get(0), row.get(1), row.get(2));
                let last_good: Option<i64> = tx
                    .query_one(
                        "SELECT min(last_recv_ns) FROM run_conn WHERE run_id = $1",
                        &[&run_id],
                    )?
                    .get(0);
                let kind = if clean { GapKind::Restart } else { GapKind::Crash };
                Some((kind, Some(last_good.unwrap_or(started_ns))))
            }
            // Rows written before runs were recorded: how that run ended, and when its
            // connections last received, is unknown.
            None if committed > 0 => Some((GapKind::Crash, None)),
            None => None,
        };
        let first = committed + 1;
        if let Some((kind, last_good)) = gap {
            let markets: Vec<&str> = self.options.markets.iter().map(|m| &**m).collect();
            tx.execute(
                "INSERT INTO gap (gseq, ts_recv_ns, conn_id, sid, expected_seq, got_seq, \
                 ts_recv_last_good_ns, markets, kind) VALUES ($1, $2, 0, 0, 0, NULL, $3, $4, $5)",
                &[&first, &self.started_ns, &last_good, &markets, &kind.as_str()],
            )?;
            tx.execute(
                "INSERT INTO batch (last_gseq, first_gseq, rows) VALUES ($1, $1, 1)",
                &[&first],
            )?;
            tx.execute("SELECT pg_notify($1, $2)", &[&NOTIFY_CHANNEL, &first.to_string()])?;
        }
        let run_id: i64 = tx
            .query_one(
                "INSERT INTO run (token, started_ns, first_gseq) VALUES ($1, $2, $3) \
                 RETURNING run_id",
                &[&self.token, &self.started_ns, &first],
            )?
            .get(0);
        tx.commit()?;
        let committed = if gap.is_some() { first } else { committed };
        Ok(RunStart { run_id, committed, gap: gap.map(|(kind, _)| kind) })
    }

    /// The last transaction of a clean stop: the final per-connection progress and the run's
    /// stop time and last gseq. Tried once (reconnecting once if needed): if it cannot be
    /// written, the next start reports this stop as a crash, the cautious reading.
    fn mark_clean_stop(&mut self) {
        let Some(run_id) = self.run_id else { return };
        if self.client.is_none()
            && let Err(error) = self.connect()
        {
            tracing::warn!(%error, "cannot mark the clean stop; the next start reports a crash");
            return;
        }
        let progress = progress_rows(&self.progress, &HashMap::new());
        let last_gseq = self.stats.last_committed_gseq;
        let stopped_ns = i64::try_from(wall_ns()).unwrap_or(i64::MAX);
        let Some(client) = self.client.as_mut() else {
            tracing::warn!("database unreachable at stop; the next start reports a crash");
            return;
        };
        let marked = (|| {
            let mut tx = client.transaction()?;
            write_progress(&mut tx, run_id, &progress)?;
            tx.execute(
                "UPDATE run SET stopped_ns = $2, last_gseq = $3 WHERE run_id = $1",
                &[&run_id, &stopped_ns, &last_gseq],
            )?;
            tx.commit()
        })();
        match marked {
            Ok(()) => self.stats.clean_stop = true,
            Err(error) => tracing::warn!(
                error = %describe(&error),
                "cannot mark the clean stop; the next start reports a crash"
            ),
        }
    }

    /// Records a failure: drops the connection and schedules the next attempt.
    fn fail(&mut self, message: String) {
        tracing::warn!(
            error = %message,
            retry_in_ms = self.backoff.as_millis(),
            buffered_rows = self.pending.len(),
            "gatherer database unavailable; rows stay buffered"
        );
        self.stats.last_error = Some(message);
        self.client = None;
        self.retry_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(self.options.limits.backoff_max());
    }

    /// Moves records from the rings into the buffer, numbering them, round-robin, up to the
    /// buffer bound. Returns how many moved.
    fn drain(&mut self) -> usize {
        let Some(mut next) = self.next_gseq else { return 0 };
        let limits = self.options.limits;
        let mut room = limits.buffer_rows_max.saturating_sub(self.pending.len());
        let start = self.pending.len();
        let rings = self.rings.len();
        let mut idle_rings = 0;
        while room > 0 && idle_rings < rings {
            let ring = &self.rings[self.next_ring];
            self.next_ring = (self.next_ring + 1) % rings;
            let mut took = 0;
            while took < limits.batch_rows_max.min(room) {
                let Some(record) = ring.pop() else { break };
                self.pending.push_back((next, record));
                next += 1;
                took += 1;
            }
            room -= took;
            idle_rings = if took == 0 { idle_rings + 1 } else { 0 };
        }
        self.next_gseq = Some(next);
        let drained = self.pending.len() - start;
        if drained > 0 && self.oldest.is_none() {
            self.oldest = Some(Instant::now());
        }
        drained
    }

    fn due(&self, stopping: bool) -> bool {
        let Some(oldest) = self.oldest else { return false };
        stopping
            || self.pending.len() >= self.options.limits.batch_rows_max
            || oldest.elapsed() >= self.options.limits.flush_age()
    }

    /// Writes the first batch of the buffer in one transaction. Returns whether it committed.
    fn flush(&mut self) -> bool {
        let rows = self.pending.len().min(self.options.limits.batch_rows_max);
        let (front, _) = self.pending.as_slices();
        if front.len() < rows {
            self.pending.make_contiguous();
        }
        let batch = &self.pending.as_slices().0[..rows];
        let batch_progress = last_per_conn(batch);
        let persist = self.run_id.filter(|_| {
            batch_progress.keys().any(|c| !self.progress.contains_key(c))
                || self
                    .progress_written
                    .is_none_or(|at| at.elapsed() >= self.options.limits.progress_interval())
        });
        let progress =
            persist.map(|run_id| (run_id, progress_rows(&self.progress, &batch_progress)));
        let Some(client) = self.client.as_mut() else { return false };
        let progress = progress.as_ref().map(|(id, rows)| (*id, &rows[..]));
        match write_batch(client, &mut self.encoder, batch, progress) {
            Ok(()) => {
                let last = batch[rows - 1].0;
                self.progress.extend(batch_progress);
                if persist.is_some() {
                    self.progress_written = Some(Instant::now());
                }
                self.stats.last_commit_ns = wall_ns();
                if let Some(t) = self.telemetry.as_mut() {
                    t.recorder.record(t.batch_rows, u64::try_from(rows).unwrap_or(u64::MAX));
                }
                self.acknowledge_through(last);
                self.stats.batches_committed += 1;
                self.stats.batch_rows_largest =
                    self.stats.batch_rows_largest.max(u64::try_from(rows).unwrap_or(u64::MAX));
                self.backoff = self.options.limits.backoff_min();
                true
            }
            Err(error) => {
                self.stats.batch_failures += 1;
                self.fail(format!("write batch of {rows} rows: {}", describe(&error)));
                false
            }
        }
    }

    /// Removes buffered rows with gseq ≤ `committed`: they are durable.
    fn acknowledge_through(&mut self, committed: i64) {
        let now_ns = wall_ns();
        while self.pending.front().is_some_and(|(gseq, _)| *gseq <= committed) {
            if let Some((_, record)) = self.pending.pop_front() {
                self.stats.rows.count(&record);
                if let Some(t) = self.telemetry.as_mut() {
                    let recv_ns = u64::try_from(record.ts_recv_ns()).unwrap_or(0);
                    t.recorder.incr(t.rows_committed);
                    t.recorder.record(t.recv_to_commit_us, now_ns.saturating_sub(recv_ns) / 1_000);
                }
            }
        }
        self.stats.last_committed_gseq = self.stats.last_committed_gseq.max(committed);
        if self.pending.is_empty() {
            self.oldest = None;
        }
    }

    fn idle_wait(&self) -> Duration {
        let mut wait = self.options.limits.idle_park();
        if let Some(oldest) = self.oldest {
            wait = wait.min(self.options.limits.flush_age().saturating_sub(oldest.elapsed()));
        }
        if let Some(at) = self.retry_at {
            wait = wait.min(at.saturating_duration_since(Instant::now()));
        }
        wait
    }

    fn publish(&mut self) {
        if let Some(t) = self.telemetry.as_mut() {
            t.recorder.publish_if_due(wall_ns());
        }
        self.stats.buffered_rows = self.pending.len();
        let mut published = self.published.lock().unwrap_or_else(PoisonError::into_inner);
        if *published != self.stats {
            published.clone_from(&self.stats);
        }
    }
}

enum ConnectError {
    Db(String),
    Schema(MigrateError),
    Outdated(&'static str),
}

/// A `run_conn` row: (conn_id stored bit for bit, last gseq, last receive time ns).
type ProgressRow = (i64, i64, i64);

/// Per connection in `batch`, the (gseq, receive time) of its last row.
fn last_per_conn(batch: &[(i64, Record)]) -> HashMap<u64, (i64, i64)> {
    let mut last = HashMap::new();
    for (gseq, record) in batch {
        if let Some(conn) = record.conn_id() {
            last.insert(conn, (*gseq, record.ts_recv_ns()));
        }
    }
    last
}

/// `known` updated with `batch`, as (conn_id, last gseq, last receive time) rows in conn order.
fn progress_rows(
    known: &HashMap<u64, (i64, i64)>,
    batch: &HashMap<u64, (i64, i64)>,
) -> Vec<ProgressRow> {
    let mut rows: Vec<ProgressRow> = known
        .iter()
        .filter(|(conn, _)| !batch.contains_key(conn))
        .chain(batch)
        .map(|(conn, (gseq, recv))| (u64_bits(*conn), *gseq, *recv))
        .collect();
    rows.sort_unstable();
    rows
}

/// Upserts the run's per-connection progress.
fn write_progress(
    tx: &mut Transaction<'_>,
    run_id: i64,
    rows: &[ProgressRow],
) -> Result<(), postgres::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let conns: Vec<i64> = rows.iter().map(|r| r.0).collect();
    let gseqs: Vec<i64> = rows.iter().map(|r| r.1).collect();
    let recvs: Vec<i64> = rows.iter().map(|r| r.2).collect();
    tx.execute(
        "INSERT INTO run_conn (run_id, conn_id, last_gseq, last_recv_ns) \
         SELECT $1, c, g, r FROM unnest($2::bigint[], $3::bigint[], $4::bigint[]) AS u(c, g, r) \
         ON CONFLICT (run_id, conn_id) DO UPDATE \
         SET last_gseq = excluded.last_gseq, last_recv_ns = excluded.last_recv_ns",
        &[&run_id, &conns, &gseqs, &recvs],
    )?;
    Ok(())
}

impl ConnectError {
    fn db(what: &str, error: postgres::Error) -> Self {
        ConnectError::Db(format!("{what}: {}", describe(&error)))
    }
}

/// An error with the server's message when there is one (`postgres::Error`'s own Display says
/// only "db error").
fn describe(error: &postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{error}: {}: {} ({})", db.severity(), db.message(), db.code().code()),
        None => error.to_string(),
    }
}

/// One transaction: COPY each table's rows, log the batch, the run's per-connection progress
/// when given, notify, commit.
fn write_batch(
    client: &mut Client,
    encoder: &mut CopyEncoder,
    batch: &[(i64, Record)],
    progress: Option<(i64, &[ProgressRow])>,
) -> Result<(), postgres::Error> {
    let (Some((first, _)), Some((last, _))) = (batch.first(), batch.last()) else {
        return Ok(());
    };
    debug_assert!(batch.windows(2).all(|w| w[1].0 == w[0].0 + 1), "gseqs not contiguous");
    let mut tx = client.transaction()?;
    copy_deltas(&mut tx, encoder, batch)?;
    copy_trades(&mut tx, encoder, batch)?;
    copy_tickers(&mut tx, encoder, batch)?;
    copy_snapshots(&mut tx, encoder, batch)?;
    copy_market_lifecycles(&mut tx, encoder, batch)?;
    copy_event_lifecycles(&mut tx, encoder, batch)?;
    copy_gaps(&mut tx, encoder, batch)?;
    copy_raw_frames(&mut tx, encoder, batch)?;
    let rows = i32::try_from(batch.len()).unwrap_or(i32::MAX);
    tx.execute(
        "INSERT INTO batch (last_gseq, first_gseq, rows) VALUES ($1, $2, $3)",
        &[last, first, &rows],
    )?;
    if let Some((run_id, rows)) = progress {
        write_progress(&mut tx, run_id, rows)?;
    }
    tx.execute("SELECT pg_notify($1, $2)", &[&NOTIFY_CHANNEL, &last.to_string()])?;
    tx.commit()
}

/// A u64 stored bit for bit in a bigint column (see the schema's header).
fn u64_bits(value: u64) -> i64 {
    i64::from_ne_bytes(value.to_ne_bytes())
}

fn side_yes(side: Side) -> bool {
    side == Side::Yes
}

/// Runs one binary COPY of the rows `pick` selects, if there are any, encoding each row of
/// `fields` fields with `row` into `encoder` (reused across COPYs and batches).
fn copy_rows<T: ?Sized>(
    tx: &mut Transaction<'_>,
    encoder: &mut CopyEncoder,
    statement: &str,
    fields: i16,
    batch: &[(i64, Record)],
    pick: impl Fn(&Record) -> Option<&T>,
    mut row: impl FnMut(&mut CopyEncoder, i64, &T),
) -> Result<(), postgres::Error> {
    if !batch.iter().any(|(_, r)| pick(r).is_some()) {
        return Ok(());
    }
    let mut copy = BinaryCopyIn::new(tx.copy_in(statement)?, encoder);
    for (gseq, record) in batch {
        if let Some(value) = pick(record) {
            row(copy.row(fields)?, *gseq, value);
        }
    }
    copy.finish()?;
    Ok(())
}

/// The origin columns every WebSocket table starts with after gseq: ts_recv_ns, conn_id, sid,
/// seq.
fn origin_fields(w: &mut CopyEncoder, o: &Origin) {
    w.i64(o.ts_recv_ns).i64(u64_bits(o.conn_id)).opt_i64(o.sid.map(u64_bits));
    w.opt_i64(o.seq.map(u64_bits));
}

fn copy_deltas(
    tx: &mut Transaction<'_>,
    enc: &mut CopyEncoder,
    batch: &[(i64, Record)],
) -> Result<(), postgres::Error> {
    copy_rows(
        tx,
        enc,
        "COPY delta (gseq, ts_recv_ns, conn_id, sid, seq, market, side_yes, price_micros, \
         delta_centi, ts_exch_ns, client_order_id) FROM STDIN (FORMAT binary)",
        11,
        batch,
        |r| if let Record::Delta(d) = r { Some(d) } else { None },
        |w, gseq, d| {
            w.i64(gseq);
            origin_fields(w, &d.origin);
            w.text(&d.market).bool(side_yes(d.side)).i64(i64::from(d.price_micros));
            w.i64(d.delta_centi).i64(d.ts_exch_ns).opt_text(d.client_order_id.as_deref());
        },
    )
}

fn copy_trades(
    tx: &mut Transaction<'_>,
    enc: &mut CopyEncoder,
    batch: &[(i64, Record)],
) -> Result<(), postgres::Error> {
    copy_rows(
        tx,
        enc,
        "COPY trade (gseq, ts_recv_ns, conn_id, sid, seq, trade_id, market, yes_price_micros, \
         no_price_micros, count_centi, taker_side_yes, taker_book_side_ask, is_block_trade, \
         ts_exch_ns) FROM STDIN (FORMAT binary)",
        14,
        batch,
        |r| if let Record::Trade(t) = r { Some(t) } else { None },
        |w, gseq, t| {
            w.i64(gseq);
            origin_fields(w, &t.origin);
            w.text(&t.trade_id).text(&t.market);
            w.i64(i64::from(t.yes_price_micros)).i64(i64::from(t.no_price_micros));
            w.i64(t.count_centi).opt_bool(t.taker_side.map(side_yes));
            w.opt_bool(t.taker_book_side.map(|s| s == BookSide::Ask)).opt_bool(t.is_block_trade);
            w.i64(t.ts_exch_ns);
        },
    )
}

fn copy_tickers(
    tx: &mut Transaction<'_>,
    enc: &mut CopyEncoder,
    batch: &[(i64, Record)],
) -> Result<(), postgres::Error> {
    copy_rows(
        tx,
        enc,
        "COPY ticker (gseq, ts_recv_ns, conn_id, sid, seq, market, price_micros, yes_bid_micros, \
         yes_ask_micros, yes_bid_size_centi, yes_ask_size_centi, last_trade_size_centi, \
         volume_centi, open_interest_centi, dollar_volume, dollar_open_interest, clock, \
         ts_exch_ns) FROM STDIN (FORMAT binary)",
        18,
        batch,
        |r| if let Record::Ticker(t) = r { Some(&**t) } else { None },
        |w, gseq, t| {
            w.i64(gseq);
            origin_fields(w, &t.origin);
            w.text(&t.market).opt_i64(t.price_micros.map(i64::from));
            w.opt_i64(t.yes_bid_micros.map(i64::from)).opt_i64(t.yes_ask_micros.map(i64::from));
            w.opt_i64(t.yes_bid_size_centi).opt_i64(t.yes_ask_size_centi);
            w.opt_i64(t.last_trade_size_centi).opt_i64(t.volume_centi);
            w.opt_i64(t.open_interest_centi).opt_i64(t.dollar_volume);
            w.opt_i64(t.dollar_open_interest).opt_i64(t.clock.map(u64_bits)).i64(t.ts_exch_ns);
        },
    )
}

fn copy_snapshots(
    tx: &mut Transaction<'_>,
    enc: &mut CopyEncoder,
    batch: &[(i64, Record)],
) -> Result<(), postgres::Error> {
    copy_rows(
        tx,
        enc,
        "COPY snapshot (gseq, ts_recv_ns, source, conn_id, sid, seq, market, yes_price_micros, \
         yes_size_centi, no_price_micros, no_size_centi) FROM STDIN (FORMAT binary)",
        11,
        batch,
        |r| if let Record::Snapshot(s) = r { Some(&**s) } else { None },
        |w, gseq, s| {
            let (source, origin) = match s.source {
                SnapshotSource::Ws(origin) => ("ws", Some(origin)),
                SnapshotSource::Rest { .. } => ("rest", None),
            };
            w.i64(gseq).i64(s.source.ts_recv_ns()).text(source);
            w.opt_i64(origin.map(|o| u64_bits(o.conn_id)));
            w.opt_i64(origin.and_then(|o| o.sid).map(u64_bits));
            w.opt_i64(origin.and_then(|o| o.seq).map(u64_bits));
            w.text(&s.market);
            w.i64_array(s.yes.iter().map(|l| i64::from(l.price_micros)));
            w.i64_array(s.yes.iter().map(|l| l.size_centi));
            w.i64_array(s.no.iter().map(|l| i64::from(l.price_micros)));
            w.i64_array(s.no.iter().map(|l| l.size_centi));
        },
    )
}

fn copy_market_lifecycles(
    tx: &mut Transaction<'_>,
    enc: &mut CopyEncoder,
    batch: &[(i64, Record)],
) -> Result<(), postgres::Error> {
    copy_rows(
        tx,
        enc,
        "COPY market_lifecycle (gseq, ts_recv_ns, conn_id, sid, seq, market, kind, multivariate, \
         open_ts_s, close_ts_s, determination_ts_s, settled_ts_s, result, \
         settlement_value_micros, price_level_structure, payload) FROM STDIN (FORMAT binary)",
        16,
        batch,
        |r| if let Record::MarketLifecycle(m) = r { Some(&**m) } else { None },
        |w, gseq, m| {
            w.i64(gseq);
            origin_fields(w, &m.origin);
            w.text(&m.market).text(&m.kind).bool(m.multivariate);
            w.opt_i64(m.open_ts_s).opt_i64(m.close_ts_s);
            w.opt_i64(m.determination_ts_s).opt_i64(m.settled_ts_s);
            w.opt_text(m.result.as_deref()).opt_i64(m.settlement_value_micros.map(i64::from));
            w.opt_text(m.price_level_structure.as_deref()).text(&m.payload);
        },
    )
}

fn copy_event_lifecycles(
    tx: &mut Transaction<'_>,
    enc: &mut CopyEncoder,
    batch: &[(i64, Record)],
) -> Result<(), postgres::Error> {
    copy_rows(
        tx,
        enc,
        "COPY event_lifecycle (gseq, ts_recv_ns, conn_id, sid, seq, event_ticker, payload) \
         FROM STDIN (FORMAT binary)",
        7,
        batch,
        |r| if let Record::EventLifecycle(e) = r { Some(&**e) } else { None },
        |w, gseq, e| {
            w.i64(gseq);
            origin_fields(w, &e.origin);
            w.text(&e.event_ticker).text(&e.payload);
        },
    )
}

fn copy_gaps(
    tx: &mut Transaction<'_>,
    enc: &mut CopyEncoder,
    batch: &[(i64, Record)],
) -> Result<(), postgres::Error> {
    copy_rows(
        tx,
        enc,
        "COPY gap (gseq, ts_recv_ns, conn_id, sid, expected_seq, got_seq, \
         ts_recv_last_good_ns, markets, kind) FROM STDIN (FORMAT binary)",
        9,
        batch,
        |r| if let Record::Gap(g) = r { Some(&**g) } else { None },
        |w, gseq, g| {
            w.i64(gseq).i64(g.ts_recv_ns).i64(u64_bits(g.conn_id)).i64(u64_bits(g.sid));
            w.i64(u64_bits(g.expected_seq)).opt_i64(g.got_seq.map(u64_bits));
            w.opt_i64(g.ts_recv_last_good_ns).text_array(g.markets.iter().map(|m| &**m));
            w.text(g.kind().as_str());
        },
    )
}

fn copy_raw_frames(
    tx: &mut Transaction<'_>,
    enc: &mut CopyEncoder,
    batch: &[(i64, Record)],
) -> Result<(), postgres::Error> {
    copy_rows(
        tx,
        enc,
        "COPY raw_frame (gseq, ts_recv_ns, conn_id, malformed, reason, frame) \
         FROM STDIN (FORMAT binary)",
        6,
        batch,
        |r| if let Record::Raw(f) = r { Some(&**f) } else { None },
        |w, gseq, f| {
            let (malformed, reason): (bool, &str) = match &f.reason {
                RawReason::Unknown(kind) => (false, kind),
                RawReason::Malformed(error) => (true, error),
            };
            w.i64(gseq).i64(f.ts_recv_ns).i64(u64_bits(f.conn_id)).bool(malformed);
            w.text(reason).bytea(&f.frame);
        },
    )
}
