//! The production sink: one transaction per merge batch.
//!
//! Pipeline: **encode + deliver** (binary COPY of each table's new rows straight into the real
//! table, then one statement moving every consumed gatherer's cursor) → **acknowledge**
//! (COMMIT; only then does [`Sink::write`] return `Ok`, and only then may the caller drop the
//! batch).
//!
//! - **Backstop**: the merge core writes only rows it believes new, but after a restart (before
//!   the index covered everything) or after an index eviction a row can already be in
//!   production. Its unique violation aborts the transaction; the batch is then redone through
//!   session-local staging tables with `INSERT … SELECT … ON CONFLICT DO NOTHING`, and the rows
//!   that were already there are counted ([`SinkStats::rows_conflicted`]).
//! - **Lost COMMIT**: a connection that breaks mid-batch may or may not have committed. Every
//!   new connection first reads the cursors: if they already cover the batch, it was committed
//!   ([`Written::AlreadyCommitted`]) and is not written again.
//! - **Failures** are returned ([`SinkError`]) with the batch untouched; the caller waits
//!   (backoff) and calls [`Sink::write`] again with the same batch. Batches must be written in
//!   the order the merge core took them.

use kdp_engine::event::{BookSide, Level, Side};
use kdp_engine::pg::copy::{BinaryCopyIn, CopyEncoder};
use kdp_engine::pg::migrate::{self, MigrateError};
use postgres::error::SqlState;
use postgres::{Client, NoTls, Transaction};
use sha2::{Digest, Sha256};

use crate::crash::{self, CrashAt};
use crate::ledger::{LedgerDelta, Uncovered};
use crate::limits::GATHERERS_MAX;
use crate::merge::{Batch, GathererId, Kept, Merged, ProductionKey};
use crate::row::{
    Delta, EventLifecycle, Gap, MarketLifecycle, Snapshot, SnapshotAnchor, Ticker, TickerContent,
    Trade,
};
use crate::schema::PRODUCTION;

/// How a batch reached production.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Binary COPY straight into the tables: every row was new.
    Direct {
        /// Rows written.
        rows: u64,
    },
    /// A unique violation sent it through staging + `ON CONFLICT DO NOTHING`.
    Staged {
        /// Rows written.
        rows: u64,
        /// Rows already in production, skipped.
        conflicts: u64,
    },
    /// An earlier attempt whose answer was lost had committed it (the cursors cover it).
    AlreadyCommitted,
}

/// Counters, cumulative since the sink was built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SinkStats {
    /// Batches written directly.
    pub batches_direct: u64,
    /// Batches redone through staging after a unique violation.
    pub batches_staged: u64,
    /// Batches found committed on reconnect.
    pub batches_already_committed: u64,
    /// Rows written.
    pub rows_written: u64,
    /// Rows skipped by the staging path because production had them.
    pub rows_conflicted: u64,
    /// Successful connections.
    pub connects: u64,
    /// Attempts that failed (connection or statement); each batch is retried by the caller.
    pub failures: u64,
}

/// Why a batch was not written. The batch is untouched: retry it after a pause.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The production schema cannot be used by this build (needs an operator).
    #[error("production database schema refused: {0}")]
    Schema(#[source] MigrateError),
    /// A statement or the connection failed; the transaction did not commit, or (connection
    /// lost) the next attempt finds out from the cursors.
    #[error("production database: {what}: {message}; the batch will be retried")]
    Postgres {
        /// What the sink was doing.
        what: &'static str,
        /// The server's or the driver's message.
        message: String,
        /// Whether the connection is gone (it is reopened on the next attempt).
        connection_lost: bool,
    },
    /// The cursor table disagrees with the batch in a way one transaction per batch cannot
    /// produce (some of its cursors committed, others not), or would move a cursor backwards.
    #[error("production cursors inconsistent with the batch: {0}")]
    Cursors(String),
}

/// How to run a sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SinkOptions {
    /// Apply the production migrations on every connect.
    pub migrate: bool,
}

/// The production sink. Connects lazily; one connection, reopened after a failure.
pub struct Sink {
    config: postgres::Config,
    options: SinkOptions,
    client: Option<Client>,
    staging_ready: bool,
    stats: SinkStats,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink")
            .field("connected", &self.client.as_ref().is_some_and(|c| !c.is_closed()))
            .field("options", &self.options)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

const STAGING_TABLES: &str = "\
    CREATE TEMP TABLE IF NOT EXISTS stage_delta (LIKE delta) ON COMMIT DELETE ROWS;\
    CREATE TEMP TABLE IF NOT EXISTS stage_trade (LIKE trade) ON COMMIT DELETE ROWS;\
    CREATE TEMP TABLE IF NOT EXISTS stage_ticker (LIKE ticker) ON COMMIT DELETE ROWS;\
    CREATE TEMP TABLE IF NOT EXISTS stage_market_lifecycle (LIKE market_lifecycle) \
        ON COMMIT DELETE ROWS;\
    CREATE TEMP TABLE IF NOT EXISTS stage_event_lifecycle (LIKE event_lifecycle) \
        ON COMMIT DELETE ROWS;\
    CREATE TEMP TABLE IF NOT EXISTS stage_snapshot (LIKE snapshot) ON COMMIT DELETE ROWS;\
    CREATE TEMP TABLE IF NOT EXISTS stage_gatherer_gap (LIKE gatherer_gap) ON COMMIT DELETE ROWS;";

/// The refusal raised when a batch would not move a cursor forward (a batch written twice).
const CURSOR_NOT_ADVANCED: &str = "a dedup cursor would not advance: batch already written";

/// Production tables in write order.
const TABLES: [&str; 7] =
    ["delta", "trade", "ticker", "market_lifecycle", "event_lifecycle", "snapshot", "gatherer_gap"];

fn pg_error(what: &'static str, error: &postgres::Error, client_closed: bool) -> SinkError {
    if let Some(db) = error.as_db_error()
        && db.code() == &SqlState::RAISE_EXCEPTION
        && db.message() == CURSOR_NOT_ADVANCED
    {
        return SinkError::Cursors(CURSOR_NOT_ADVANCED.into());
    }
    let message = match error.as_db_error() {
        Some(db) => format!("{}: {} ({})", db.severity(), db.message(), db.code().code()),
        None => error.to_string(),
    };
    let connection_lost = client_closed
        || error.is_closed()
        || error.as_db_error().is_some_and(|db| {
            // Class 08: connection exception; class 57: operator intervention (the server
            // terminated the session or is shutting down); FATAL ends the session.
            let code = db.code().code();
            code.starts_with("08") || code.starts_with("57") || db.severity() == "FATAL"
        });
    SinkError::Postgres { what, message, connection_lost }
}

fn is_unique_violation(error: &postgres::Error) -> bool {
    error.code() == Some(&SqlState::UNIQUE_VIOLATION)
}

impl Sink {
    /// A sink for the database `config` names (not connected yet).
    pub fn new(config: postgres::Config, options: SinkOptions) -> Sink {
        Sink { config, options, client: None, staging_ready: false, stats: SinkStats::default() }
    }

    /// The counters so far.
    pub fn stats(&self) -> SinkStats {
        self.stats
    }

    /// Opens the connection if there is none (applying migrations if asked).
    fn connect(&mut self) -> Result<&mut Client, SinkError> {
        if self.client.as_ref().is_some_and(Client::is_closed) {
            self.client = None;
        }
        if self.client.is_none() {
            let mut client = self.config.connect(NoTls).map_err(|e| {
                self.stats.failures += 1;
                pg_error("connect", &e, true)
            })?;
            if self.options.migrate {
                migrate::migrate(&mut client, &PRODUCTION).map_err(|e| match e {
                    MigrateError::Postgres { source, .. } => pg_error("migrate", &source, false),
                    other => SinkError::Schema(other),
                })?;
            }
            self.stats.connects += 1;
            self.staging_ready = false;
            self.client = Some(client);
        }
        self.client.as_mut().ok_or_else(|| SinkError::Postgres {
            what: "connect",
            message: "no connection".into(),
            connection_lost: true,
        })
    }

    /// Every gatherer's committed cursor (`None`: never written).
    pub fn read_cursors(&mut self) -> Result<[Option<i64>; GATHERERS_MAX], SinkError> {
        read_cursors(self.connect()?)
    }

    /// The latest exchange time in production (deltas, trades, tickers), if any: a restart
    /// rebuilds the index from this minus the slack.
    pub fn latest_ts_exch_ns(&mut self) -> Result<Option<i64>, SinkError> {
        let client = self.connect()?;
        let row = client
            .query_one(
                "SELECT greatest((SELECT max(ts_exch_ns) FROM delta), \
                 (SELECT max(ts_exch_ns) FROM trade), (SELECT max(ts_exch_ns) FROM ticker))",
                &[],
            )
            .map_err(|e| pg_error("read the latest exchange time", &e, false))?;
        Ok(row.get(0))
    }

    /// The identities of every event from `from_ns` on (exchange time; receive time for
    /// lifecycle rows), to rebuild the merge core's index on start.
    pub fn read_window(&mut self, from_ns: i64) -> Result<Vec<ProductionKey>, SinkError> {
        let client = self.connect()?;
        let mut keys = Vec::new();
        let err = |e: postgres::Error| pg_error("read the rebuild window", &e, false);
        for row in client
            .query(
                "SELECT market, ts_exch_ns, side_yes, price_micros, delta_centi, occ FROM delta \
                 WHERE ts_exch_ns >= $1",
                &[&from_ns],
            )
            .map_err(err)?
        {
            let market: &str = row.get(0);
            keys.push(ProductionKey::Delta {
                market: market.into(),
                ts_exch_ns: row.get(1),
                side: if row.get(2) { Side::Yes } else { Side::No },
                price_micros: from_db_u32(row.get(3)),
                delta_centi: row.get(4),
                occ: from_db_u32(i64::from(row.get::<_, i32>(5))),
            });
        }
        for row in client
            .query("SELECT trade_id, ts_exch_ns FROM trade WHERE ts_exch_ns >= $1", &[&from_ns])
            .map_err(err)?
        {
            let trade_id: &str = row.get(0);
            keys.push(ProductionKey::Trade { trade_id: trade_id.into(), ts_exch_ns: row.get(1) });
        }
        for row in client
            .query(
                "SELECT market, ts_exch_ns, occ, price_micros, yes_bid_micros, yes_ask_micros, \
                 yes_bid_size_centi, yes_ask_size_centi, last_trade_size_centi, volume_centi, \
                 open_interest_centi, dollar_volume, dollar_open_interest, clock FROM ticker \
                 WHERE ts_exch_ns >= $1",
                &[&from_ns],
            )
            .map_err(err)?
        {
            let market: &str = row.get(0);
            let u32_at = |i: usize| row.get::<_, Option<i64>>(i).map(from_db_u32);
            keys.push(ProductionKey::Ticker {
                market: market.into(),
                ts_exch_ns: row.get(1),
                occ: from_db_u32(i64::from(row.get::<_, i32>(2))),
                content: TickerContent {
                    price_micros: u32_at(3),
                    yes_bid_micros: u32_at(4),
                    yes_ask_micros: u32_at(5),
                    yes_bid_size_centi: row.get(6),
                    yes_ask_size_centi: row.get(7),
                    last_trade_size_centi: row.get(8),
                    volume_centi: row.get(9),
                    open_interest_centi: row.get(10),
                    dollar_volume: row.get(11),
                    dollar_open_interest: row.get(12),
                    clock: row.get::<_, Option<i64>>(13).map(bits_u64),
                },
            });
        }
        for row in client
            .query(
                "SELECT market, kind, payload, ts_recv_ns FROM market_lifecycle \
                 WHERE ts_recv_ns >= $1",
                &[&from_ns],
            )
            .map_err(err)?
        {
            let (market, kind, payload): (&str, &str, &str) = (row.get(0), row.get(1), row.get(2));
            keys.push(ProductionKey::MarketLifecycle {
                market: market.into(),
                kind: kind.into(),
                payload: payload.into(),
                ts_recv_ns: row.get(3),
            });
        }
        for row in client
            .query(
                "SELECT event_ticker, payload, ts_recv_ns FROM event_lifecycle \
                 WHERE ts_recv_ns >= $1",
                &[&from_ns],
            )
            .map_err(err)?
        {
            let (event_ticker, payload): (&str, &str) = (row.get(0), row.get(1));
            keys.push(ProductionKey::EventLifecycle {
                event_ticker: event_ticker.into(),
                payload: payload.into(),
                ts_recv_ns: row.get(2),
            });
        }
        Ok(keys)
    }

    /// The stored uncovered intervals a restarted ledger needs ([`crate::ledger::Ledger::restore`]):
    /// open ones and those ending at or after `since_ns` (the latest exchange time in production
    /// minus [`crate::ledger::LEDGER_RETAIN_NS`]).
    pub fn read_uncovered(&mut self, since_ns: i64) -> Result<Vec<Uncovered>, SinkError> {
        let client = self.connect()?;
        crate::inspect::uncovered(client, None, since_ns)
            .map_err(|e| pg_error("read the coverage ledger", &e, false))
    }

    /// Writes one batch in one transaction and moves its cursors; see the module note. On
    /// `Err` nothing of the batch is committed by this attempt (or, connection lost, the next
    /// call finds out): call again with the same batch after a pause.
    pub fn write(&mut self, batch: &Batch) -> Result<Written, SinkError> {
        self.write_with_ledger(batch, &LedgerDelta::default())
    }

    /// [`Sink::write`] with the batch's coverage-ledger rows ([`crate::ledger::Ledger::take_batch`]
    /// hands both over) in the same transaction: minute counts added to the stored ones, uncovered
    /// intervals upserted, each recomputed market's coverage gaps replaced. Retry with the same
    /// batch and delta; [`Written::AlreadyCommitted`] means both were committed.
    pub fn write_with_ledger(
        &mut self,
        batch: &Batch,
        ledger: &LedgerDelta,
    ) -> Result<Written, SinkError> {
        if batch.is_empty() {
            return Ok(Written::Direct { rows: 0 });
        }
        let fresh = self.client.as_ref().is_none_or(Client::is_closed);
        let client = self.connect()?;
        if fresh {
            // The previous attempt may have committed before its answer was lost.
            let cursors = read_cursors(client)?;
            if committed(batch, &cursors)? {
                self.stats.batches_already_committed += 1;
                return Ok(Written::AlreadyCommitted);
            }
        }
        let result = match write_direct(client, batch, ledger) {
            Ok(rows) => Ok(Written::Direct { rows }),
            Err(error) if is_unique_violation(&error) => {
                let closed = client.is_closed();
                if closed {
                    Err(pg_error("write the batch", &error, closed))
                } else {
                    self.write_staged(batch, ledger)
                }
            }
            Err(error) => Err(pg_error("write the batch", &error, client.is_closed())),
        };
        match result {
            Ok(Written::Direct { rows }) => {
                self.stats.batches_direct += 1;
                self.stats.rows_written += rows;
            }
            Ok(Written::Staged { rows, conflicts }) => {
                self.stats.batches_staged += 1;
                self.stats.rows_written += rows;
                self.stats.rows_conflicted += conflicts;
            }
            Ok(Written::AlreadyCommitted) => {}
            Err(ref error) => {
                self.stats.failures += 1;
                if matches!(error, SinkError::Postgres { connection_lost: true, .. }) {
                    // Reconnect next time, and learn from the cursors whether this committed.
                    self.client = None;
                }
            }
        }
        result
    }

    fn write_staged(&mut self, batch: &Batch, ledger: &LedgerDelta) -> Result<Written, SinkError> {
        let ready = self.staging_ready;
        let client = self.connect()?;
        let err = |client: &Client, e: postgres::Error| {
            pg_error("write the batch through staging", &e, client.is_closed())
        };
        if !ready {
            client.batch_execute(STAGING_TABLES).map_err(|e| err(client, e))?;
        }
        self.staging_ready = true;
        let client = self.connect()?;
        let staged = (|| {
            let mut tx = client.transaction()?;
            copy_batch(&mut tx, batch, "stage_")?;
            let mut inserted = 0;
            for table in TABLES {
                if table_rows(batch, table) > 0 {
                    inserted += tx.execute(
                        &format!(
                            "INSERT INTO {table} SELECT * FROM stage_{table} ON CONFLICT DO NOTHING"
                        ),
                        &[],
                    )?;
                }
            }
            update_cursors(&mut tx, batch)?;
            write_ledger(&mut tx, ledger)?;
            tx.commit()?;
            Ok::<u64, postgres::Error>(inserted)
        })();
        match staged {
            Ok(inserted) => {
                let rows = batch.rows() as u64;
                Ok(Written::Staged { rows: inserted, conflicts: rows - inserted })
            }
            Err(e) => Err(err(client, e)),
        }
    }
}

fn read_cursors(client: &mut Client) -> Result<[Option<i64>; GATHERERS_MAX], SinkError> {
    let rows = client
        .query("SELECT gatherer, gseq FROM dedup_cursor", &[])
        .map_err(|e| pg_error("read the cursors", &e, client.is_closed()))?;
    let mut cursors = [None; GATHERERS_MAX];
    for row in rows {
        let gatherer: i16 = row.get(0);
        if let Some(slot) = usize::try_from(gatherer).ok().and_then(|g| cursors.get_mut(g)) {
            *slot = Some(row.get(1));
        }
    }
    Ok(cursors)
}

/// Whether production's cursors already cover every cursor the batch moves.
fn committed(batch: &Batch, db: &[Option<i64>; GATHERERS_MAX]) -> Result<bool, SinkError> {
    let moved: Vec<(usize, i64, bool)> = batch
        .cursors
        .iter()
        .enumerate()
        .filter_map(|(g, c)| c.map(|c| (g, c, db[g].is_some_and(|d| d >= c))))
        .collect();
    let covered = moved.iter().filter(|(_, _, done)| *done).count();
    if covered != 0 && covered != moved.len() {
        return Err(SinkError::Cursors(format!(
            "batch cursors {moved:?} (gatherer, gseq, committed) against production {db:?}"
        )));
    }
    Ok(covered != 0)
}

/// One transaction: COPY every table, move the cursors, COMMIT. Returns the rows written.
fn write_direct(
    client: &mut Client,
    batch: &Batch,
    ledger: &LedgerDelta,
) -> Result<u64, postgres::Error> {
    let mut tx = client.transaction()?;
    copy_batch(&mut tx, batch, "")?;
    update_cursors(&mut tx, batch)?;
    write_ledger(&mut tx, ledger)?;
    crash::reached(CrashAt::AfterCopy);
    tx.commit()?;
    Ok(batch.rows() as u64)
}

/// Moves every cursor the batch names, refusing (SQLSTATE P0001) any that would not advance.
fn update_cursors(tx: &mut Transaction<'_>, batch: &Batch) -> Result<(), postgres::Error> {
    let (gatherers, gseqs): (Vec<i16>, Vec<i64>) = batch
        .cursors
        .iter()
        .enumerate()
        .filter_map(|(g, c)| c.map(|c| (i16::try_from(g).unwrap_or(i16::MAX), c)))
        .unzip();
    let moved = tx.execute(
        "INSERT INTO dedup_cursor (gatherer, gseq) SELECT * FROM unnest($1::smallint[], \
         $2::bigint[]) ON CONFLICT (gatherer) DO UPDATE SET gseq = EXCLUDED.gseq, \
         updated_at = now() WHERE dedup_cursor.gseq < EXCLUDED.gseq",
        &[&gatherers, &gseqs],
    )?;
    if moved != gatherers.len() as u64 {
        tx.batch_execute(&format!("DO $$ BEGIN RAISE EXCEPTION '{CURSOR_NOT_ADVANCED}'; END $$"))?;
    }
    Ok(())
}

/// The ledger's market column: '' stands for every market.
fn ledger_market(market: Option<&std::sync::Arc<str>>) -> &str {
    market.map_or("", |m| &**m)
}

/// Writes a batch's coverage-ledger rows in its transaction (see [`Sink::write_with_ledger`]).
fn write_ledger(tx: &mut Transaction<'_>, ledger: &LedgerDelta) -> Result<(), postgres::Error> {
    if !ledger.counts.is_empty() {
        let mut minutes = Vec::with_capacity(ledger.counts.len());
        let mut markets = Vec::with_capacity(ledger.counts.len());
        let mut gatherers = Vec::with_capacity(ledger.counts.len());
        let mut delivered = Vec::with_capacity(ledger.counts.len());
        let mut merged = Vec::with_capacity(ledger.counts.len());
        for c in &ledger.counts {
            minutes.push(c.minute_ns);
            markets.push(&*c.market);
            gatherers.push(gatherer_col(c.gatherer));
            delivered.push(i64::try_from(c.delivered).unwrap_or(i64::MAX));
            merged.push(i64::try_from(c.merged).unwrap_or(i64::MAX));
        }
        tx.execute(
            "INSERT INTO coverage_minute (minute_ns, market, gatherer, delivered, merged) \
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::smallint[], $4::bigint[], \
             $5::bigint[]) ON CONFLICT (minute_ns, market, gatherer) DO UPDATE SET \
             delivered = coverage_minute.delivered + EXCLUDED.delivered, \
             merged = coverage_minute.merged + EXCLUDED.merged",
            &[&minutes, &markets, &gatherers, &delivered, &merged],
        )?;
    }
    if !ledger.uncovered.is_empty() {
        // A market's row may appear twice in one delta (opened, then closed): the last wins.
        let mut latest = std::collections::HashMap::new();
        for u in &ledger.uncovered {
            latest.insert((u.gatherer, u.gap_gseq, ledger_market(u.market.as_ref())), u);
        }
        let mut rows: Vec<_> = latest.into_iter().collect();
        rows.sort_by_key(|(k, _)| *k);
        let (mut gatherers, mut gseqs, mut markets, mut froms, mut tos) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for ((gatherer, gseq, market), u) in rows {
            gatherers.push(gatherer_col(gatherer));
            gseqs.push(gseq);
            markets.push(market);
            froms.push(u.from_ns);
            tos.push(u.to_ns);
        }
        tx.execute(
            "INSERT INTO gatherer_uncovered (gatherer, gap_gseq, market, ts_from_ns, ts_to_ns) \
             SELECT * FROM unnest($1::smallint[], $2::bigint[], $3::text[], $4::bigint[], \
             $5::bigint[]) ON CONFLICT (gatherer, gap_gseq, market) DO UPDATE SET \
             ts_from_ns = EXCLUDED.ts_from_ns, ts_to_ns = EXCLUDED.ts_to_ns",
            &[&gatherers, &gseqs, &markets, &froms, &tos],
        )?;
    }
    if !ledger.coverage_gaps.is_empty() {
        // One statement each for every market's replacement (not one round trip per market: a
        // gap row naming every market recomputes all of them, thousands in one batch). The
        // markets of one delta are distinct, so the upsert never touches a row twice.
        let mut markets = Vec::with_capacity(ledger.coverage_gaps.len());
        let mut since = Vec::with_capacity(ledger.coverage_gaps.len());
        let (mut gap_markets, mut froms, mut tos) = (Vec::new(), Vec::new(), Vec::new());
        for gaps in &ledger.coverage_gaps {
            let market = ledger_market(gaps.market.as_ref());
            markets.push(market);
            since.push(gaps.from_ns);
            for g in &gaps.gaps {
                gap_markets.push(market);
                froms.push(g.from_ns);
                tos.push(g.to_ns);
            }
        }
        tx.execute(
            "DELETE FROM coverage_gap c USING unnest($1::text[], $2::bigint[]) AS u(m, f) \
             WHERE c.market = u.m AND c.ts_from_ns >= u.f",
            &[&markets, &since],
        )?;
        if !froms.is_empty() {
            tx.execute(
                "INSERT INTO coverage_gap (ts_from_ns, ts_to_ns, market) \
                 SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[]) \
                 ON CONFLICT (ts_from_ns, market) DO UPDATE SET ts_to_ns = EXCLUDED.ts_to_ns",
                &[&froms, &tos, &gap_markets],
            )?;
        }
    }
    Ok(())
}

fn table_rows(batch: &Batch, table: &str) -> usize {
    match table {
        "delta" => batch.deltas.len(),
        "trade" => batch.trades.len(),
        "ticker" => batch.tickers.len(),
        "market_lifecycle" => batch.market_lifecycles.len(),
        "event_lifecycle" => batch.event_lifecycles.len(),
        "snapshot" => batch.snapshots.len(),
        "gatherer_gap" => batch.gaps.len(),
        _ => 0,
    }
}

/// COPYs every table's rows into `{prefix}{table}`.
fn copy_batch(
    tx: &mut Transaction<'_>,
    batch: &Batch,
    prefix: &str,
) -> Result<(), postgres::Error> {
    // One buffer for every table of the batch.
    let enc = &mut CopyEncoder::new();
    copy_deltas(tx, enc, prefix, &batch.deltas)?;
    copy_trades(tx, enc, prefix, &batch.trades)?;
    copy_tickers(tx, enc, prefix, &batch.tickers)?;
    copy_market_lifecycles(tx, enc, prefix, &batch.market_lifecycles)?;
    copy_event_lifecycles(tx, enc, prefix, &batch.event_lifecycles)?;
    copy_snapshots(tx, enc, prefix, &batch.snapshots)?;
    copy_gaps(tx, enc, prefix, &batch.gaps)
}

/// A u64 stored bit for bit in a bigint column.
fn u64_bits(value: u64) -> i64 {
    i64::from_ne_bytes(value.to_ne_bytes())
}

fn bits_u64(value: i64) -> u64 {
    u64::from_ne_bytes(value.to_ne_bytes())
}

/// A price or ordinal read back; the schema only ever holds values written from a u32.
fn from_db_u32(value: i64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

fn gatherer_col(gatherer: GathererId) -> i16 {
    i16::from(gatherer)
}

fn occ_col(occ: u32) -> i32 {
    i32::try_from(occ).unwrap_or(i32::MAX)
}

fn sha256(payload: &str) -> [u8; 32] {
    Sha256::digest(payload.as_bytes()).into()
}

/// One binary COPY of `rows` into `{prefix}{table} (columns)`, if there are any, each row of
/// `fields` fields encoded by `row` into `encoder`.
fn copy_rows<T>(
    tx: &mut Transaction<'_>,
    encoder: &mut CopyEncoder,
    prefix: &str,
    table_columns: &str,
    fields: i16,
    rows: &[T],
    mut row: impl FnMut(&mut CopyEncoder, &T),
) -> Result<(), postgres::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let sink = tx.copy_in(&format!("COPY {prefix}{table_columns} FROM STDIN (FORMAT binary)"))?;
    let mut copy = BinaryCopyIn::new(sink, encoder);
    for (i, r) in rows.iter().enumerate() {
        if i == rows.len() / 2 && prefix.is_empty() {
            crash::reached(CrashAt::MidCopy);
        }
        row(copy.row(fields)?, r);
    }
    copy.finish()?;
    Ok(())
}

/// The delta table's columns, in COPY order.
pub(crate) const DELTA_COLUMNS: &str = "delta (ts_exch_ns, market, side_yes, price_micros, \
     delta_centi, occ, ts_recv_ns, gatherer, client_order_id)";

fn copy_deltas(
    tx: &mut Transaction<'_>,
    enc: &mut CopyEncoder,
    prefix: &str,
    rows: &[Merged<Delta>],
) -> Result<(), postgres::Error> {
    copy_rows(tx, enc, prefix, DELTA_COLUMNS, 9, rows, |w, m| {
        let d = &m.row;
        w.i64(d.ts_exch_ns).text(&d.market).bool(d.side == Side::Yes);
        w.i64(i64::from(d.price_micros)).i64(d.delta_centi).i32(occ_col(m.occ));
        w.i64(d.ts_recv_ns).i16(gatherer_col(m.gatherer));
        w.opt_text(d.client_order_id.as_deref());
    })
}

fn copy_trades(
    tx: &mut Transaction<'_>,
    enc: &mut CopyEncoder,
    prefix: &str,
    rows: &[Merged<Trade>],
) -> Result<(), postgres::Error> {
    copy_rows(
        tx,
        enc,
        prefix,
        "trade (ts_exch_ns, trade_id, market, yes_price_micros, no_price_micros, count_centi, \
         taker_side_yes, taker_book_side_ask, is_block_trade, ts_recv_ns, gatherer)",
        11,
        rows,
        |w, m| {
            let t = &m.row;
            w.i64(t.ts_exch_ns).text(&t.trade_id).text(&t.market);
            w.i64(i64::from(t.yes_price_micros)).i64(i64::from(t.no_price_micros));
            w.i64(t.count_centi).opt_bool(t.taker_side.map(|s| s == Side::Yes));
            w.opt_bool(t.taker_book_side.map(|s| s == BookSide::Ask)).opt_bool(t.is_block_trade);
            w.i64(t.ts_recv_ns).i16(gatherer_col(m.gatherer));
        },
    )
}

fn copy_tickers(
    tx: &mut Transaction<'_>,
    enc: &mut CopyEncoder,
    prefix: &str,
    rows: &[Merged<Ticker>],
) -> Result<(), postgres::Error> {
    copy_rows(
        tx,
        enc,
        prefix,
        "ticker (ts_exch_ns, market, occ, price_micros, yes_bid_micros, yes_ask_micros, \
         yes_bid_size_centi, yes_ask_size_centi, last_trade_size_centi, volume_centi, \
         open_interest_centi, dollar_volume, dollar_open_interest, clock, ts_recv_ns, gatherer)",
        16,
        rows,
        |w, m| {
            let t = &m.row;
            let c = &t.content;
            w.i64(t.ts_exch_ns).text(&t.market).i32(occ_col(m.occ));
            w.opt_i64(c.price_micros.map(i64::from)).opt_i64(c.yes_bid_micros.map(i64::from));
            w.opt_i64(c.yes_ask_micros.map(i64::from)).opt_i64(c.yes_bid_size_centi);
            w.opt_i64(c.yes_ask_size_centi).opt_i64(c.last_trade_size_centi);
            w.opt_i64(c.volume_centi).opt_i64(c.open_interest_centi).opt_i64(c.dollar_volume);
            w.opt_i64(c.dollar_open_interest).opt_i64(c.clock.map(u64_bits));
            w.i64(t.ts_recv_ns).i16(gatherer_col(m.gatherer));
        },
    )
}

fn copy_market_lifecycles(
    tx: &mut Transaction<'_>,
    enc: &mut CopyEncoder,
    prefix: &str,
    rows: &[Merged<MarketLifecycle>],
) -> Result<(), postgres::Error> {
    copy_rows(
        tx,
        enc,
        prefix,
        "market_lifecycle (market, kind, payload_sha256, multivariate, open_ts_s, close_ts_s, \
         determination_ts_s, settled_ts_s, result, settlement_value_micros, \
         price_level_structure, payload, ts_recv_ns, gatherer)",
        14,
        rows,
        |w, m| {
            let l = &m.row;
            w.text(&l.market).text(&l.kind).bytea(&sha256(&l.payload)).bool(l.multivariate);
            w.opt_i64(l.open_ts_s).opt_i64(l.close_ts_s);
            w.opt_i64(l.determination_ts_s).opt_i64(l.settled_ts_s);
            w.opt_text(l.result.as_deref()).opt_i64(l.settlement_value_micros.map(i64::from));
            w.opt_text(l.price_level_structure.as_deref()).text(&l.payload);
            w.i64(l.ts_recv_ns).i16(gatherer_col(m.gatherer));
        },
    )
}

fn copy_event_lifecycles(
    tx: &mut Transaction<'_>,
    enc: &mut CopyEncoder,
    prefix: &str,
    rows: &[Merged<EventLifecycle>],
) -> Result<(), postgres::Error> {
    copy_rows(
        tx,
        enc,
        prefix,
        "event_lifecycle (event_ticker, payload_sha256, payload, ts_recv_ns, gatherer)",
        5,
        rows,
        |w, m| {
            let e = &m.row;
            w.text(&e.event_ticker).bytea(&sha256(&e.payload)).text(&e.payload);
            w.i64(e.ts_recv_ns).i16(gatherer_col(m.gatherer));
        },
    )
}

fn copy_snapshots(
    tx: &mut Transaction<'_>,
    enc: &mut CopyEncoder,
    prefix: &str,
    rows: &[Kept<Snapshot>],
) -> Result<(), postgres::Error> {
    copy_rows(
        tx,
        enc,
        prefix,
        "snapshot (gatherer, gseq, ts_recv_ns, source, conn_id, sid, seq, market, \
         yes_price_micros, yes_size_centi, no_price_micros, no_size_centi)",
        12,
        rows,
        |w, k| {
            let s = &k.row;
            let (source, position) = match s.anchor {
                SnapshotAnchor::Ws { conn_id, sid, seq } => {
                    ("ws", Some((u64_bits(conn_id), u64_bits(sid), u64_bits(seq))))
                }
                SnapshotAnchor::Rest => ("rest", None),
            };
            w.i16(gatherer_col(k.gatherer)).i64(k.gseq).i64(s.ts_recv_ns).text(source);
            w.opt_i64(position.map(|p| p.0)).opt_i64(position.map(|p| p.1));
            w.opt_i64(position.map(|p| p.2)).text(&s.market);
            w.i64_array(s.yes.iter().map(|l: &Level| i64::from(l.price_micros)));
            w.i64_array(s.yes.iter().map(|l| l.size_centi));
            w.i64_array(s.no.iter().map(|l| i64::from(l.price_micros)));
            w.i64_array(s.no.iter().map(|l| l.size_centi));
        },
    )
}

fn copy_gaps(
    tx: &mut Transaction<'_>,
    enc: &mut CopyEncoder,
    prefix: &str,
    rows: &[Kept<Gap>],
) -> Result<(), postgres::Error> {
    copy_rows(
        tx,
        enc,
        prefix,
        "gatherer_gap (gatherer, gseq, ts_recv_ns, conn_id, sid, expected_seq, got_seq, \
         ts_recv_last_good_ns, markets)",
        9,
        rows,
        |w, k| {
            let g = &k.row;
            w.i16(gatherer_col(k.gatherer)).i64(k.gseq).i64(g.ts_recv_ns);
            w.i64(u64_bits(g.conn_id)).i64(u64_bits(g.sid)).i64(u64_bits(g.expected_seq));
            w.opt_i64(g.got_seq.map(u64_bits)).opt_i64(g.ts_recv_last_good_ns);
            w.text_array(g.markets.iter().map(|m| &**m));
        },
    )
}
