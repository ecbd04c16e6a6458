//! Shards: one glommio executor per shard, each owning the sessions of its markets and pushing
//! owned [`Record`]s onto its own bounded ring, which the gatherer writer drains.
//!
//! ```text
//! markets ──shard_of(ticker)──► shard k: glommio executor (pinned or unbound)
//!                                 ├─ session conn 1 (markets_per_connection markets) ─┐
//!                                 └─ session conn 2 ...                               ├─► RingSink ─► ring k
//! ```
//!
//! Market → shard is [`shard_of`]: FNV-1a 64 of the ticker's UTF-8 bytes modulo the shard count.
//! The function is frozen: a ticker must land on the same shard in every version (operators
//! read logs and metrics per shard, and tests pin the values below).
//!
//! Markets change at run time: the gatherer sends [`ShardCommand`]s through the shard's bounded
//! control channel ([`SHARD_CONTROL_CAPACITY`]); the shard puts a new market on the first
//! connection with room (at most `markets_per_connection`), opens a new connection when none
//! has room (within the gatherer's `connections_per_key` budget; past it the least-loaded
//! connection takes the market and a warning is logged), and edits that session's wanted set,
//! which sends the batched `update_subscription`. A removed market leaves its connection; an
//! emptied connection stays open for the next markets.
//!
//! Everything a shard owns lives on its executor thread: the sessions, their sequence state, the
//! per-shard ticker interner (`Arc<str>` per market, so a pushed record costs a refcount
//! increment), its telemetry recorder. The only cross-thread hand-off is the ring, the
//! recorder's publication channel (on the shard's timer) and a few relaxed counters.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use glommio::{LocalExecutorBuilder, Placement};

use crate::auth::Signer;
use crate::session::conn::{
    self, Flow, GapMarker, MarketsHandle, Received, SessionConfig, SessionSink, Status,
};
use crate::store::{self, Origin, RawFrame, RawReason, Record};

use super::telemetry::{self, GapWindow, ShardHealth, ShardTelemetry};

/// io_uring memory of one shard executor: glommio's default (10 MiB) exceeds this machine's
/// 8 MiB memlock limit; 1 MiB is what the session tests run with and leaves room for several
/// shards in one process.
pub const IO_MEMORY_BYTES: usize = 1 << 20;
/// How often a shard's controller checks the stop flag: the latency shutdown adds per shard.
pub const STOP_POLL: Duration = Duration::from_millis(5);
/// First sleep of a producer that found its ring full; doubles up to [`RING_FULL_SLEEP_MAX`].
pub const RING_FULL_SLEEP_MIN: Duration = Duration::from_micros(20);
/// Longest sleep between retries on a full ring: the writer frees slots in bulk (it drains
/// whole rings per turn), so 1 ms adds at most ~1 ms of latency once room appears.
pub const RING_FULL_SLEEP_MAX: Duration = Duration::from_millis(1);

/// Commands a shard's control channel holds. Each command is a whole batch (any number of
/// markets: one registry change), so 64 absorbs a burst of lifecycle changes and a
/// reconciliation while the shard drains the channel every [`STOP_POLL`]; a full channel makes
/// the registry thread wait (it never drops a change).
pub const SHARD_CONTROL_CAPACITY: usize = 64;

/// What the gatherer tells a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardCommand {
    /// Subscribe these markets (already owned ones are ignored).
    Add(Vec<Arc<str>>),
    /// Unsubscribe these markets (unknown ones are ignored).
    Remove(Vec<Arc<str>>),
}

/// Connection ids and the connection budget, shared by every shard of a gatherer.
#[derive(Debug)]
pub(crate) struct Connections {
    /// The next `conn_id`.
    next_id: AtomicU64,
    /// Connections that may still be opened (`connections_per_key` minus those open).
    left: AtomicUsize,
}

impl Connections {
    pub(crate) fn new(first_id: u64, left: usize) -> Connections {
        Connections { next_id: AtomicU64::new(first_id), left: AtomicUsize::new(left) }
    }

    /// A new connection id if the budget allows one more connection.
    fn open(&self) -> Option<u64> {
        self.left.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)).ok()?;
        Some(self.next_id.fetch_add(1, Ordering::Relaxed))
    }
}

/// FNV-1a 64-bit offset basis (frozen, see [`shard_of`]).
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a 64-bit prime (frozen, see [`shard_of`]).
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a 64 of `bytes`.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET, |h, &b| (h ^ u64::from(b)).wrapping_mul(FNV_PRIME))
}

/// The shard (0-based) that owns `ticker` among `shards` shards: `fnv1a64(ticker) % shards`.
/// Never change this function: it is part of the gatherer's operational contract.
pub fn shard_of(ticker: &str, shards: usize) -> usize {
    let shards = u64::try_from(shards.max(1)).unwrap_or(u64::MAX);
    usize::try_from(fnv1a64(ticker.as_bytes()) % shards).unwrap_or(0)
}

/// Counters of one shard, written by its thread (relaxed, uncontended) and read for stats.
#[derive(Debug, Default)]
pub struct ShardCounters {
    records: AtomicU64,
    events: AtomicU64,
    gaps: AtomicU64,
    unparsed: AtomicU64,
    connects: AtomicU64,
    disconnects: AtomicU64,
    ring_full_stalls: AtomicU64,
    ring_full_wait_us: AtomicU64,
    last_frame_ns: AtomicU64,
    sessions_up: AtomicU64,
    markets_up: AtomicU64,
    /// Markets the shard owns now.
    markets: AtomicU64,
    /// Connections the shard runs now.
    connections: AtomicU64,
    gap_window: GapWindow,
    fatal: std::sync::Mutex<Option<String>>,
}

/// A snapshot of one shard's counters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ShardStats {
    /// The shard's index.
    pub index: usize,
    /// Markets the shard owns.
    pub markets: usize,
    /// WebSocket connections (sessions) the shard runs.
    pub connections: usize,
    /// Records pushed onto the ring.
    pub records: u64,
    /// Accepted events among them.
    pub events: u64,
    /// Gap markers among them.
    pub gaps: u64,
    /// Raw (unknown or malformed) frames among them.
    pub unparsed: u64,
    /// Successful connections, reconnects included.
    pub connects: u64,
    /// Connections lost.
    pub disconnects: u64,
    /// Pushes that found the ring full and waited (backpressure episodes).
    pub ring_full_stalls: u64,
    /// Total time spent waiting on a full ring, µs.
    pub ring_full_wait_us: u64,
    /// Why a session gave up (a fatal error such as a refused key), if one did.
    pub fatal: Option<String>,
}

impl ShardCounters {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, index: usize) -> ShardStats {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let count = |a: &AtomicU64| usize::try_from(load(a)).unwrap_or(usize::MAX);
        ShardStats {
            index,
            markets: count(&self.markets),
            connections: count(&self.connections),
            records: load(&self.records),
            events: load(&self.events),
            gaps: load(&self.gaps),
            unparsed: load(&self.unparsed),
            connects: load(&self.connects),
            disconnects: load(&self.disconnects),
            ring_full_stalls: load(&self.ring_full_stalls),
            ring_full_wait_us: load(&self.ring_full_wait_us),
            fatal: self.fatal.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone(),
        }
    }

    /// The shard's part of `/health` at wall-clock `now_ns`.
    pub(crate) fn health(&self, now_ns: u64) -> ShardHealth {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ShardHealth {
            sessions: load(&self.connections),
            sessions_up: load(&self.sessions_up),
            markets_subscribed: load(&self.markets_up),
            last_frame_ns: load(&self.last_frame_ns),
            gaps_last_minute: self.gap_window.last_window(now_ns / 1_000_000_000),
        }
    }

    fn set_fatal(&self, why: String) {
        let mut fatal = self.fatal.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        fatal.get_or_insert(why);
    }
}

/// One shard's markets → `Arc<str>`, shared by the shard's sessions (same thread).
#[derive(Debug, Default)]
struct Interner(HashSet<Arc<str>>);

impl Interner {
    fn get(&mut self, ticker: &str) -> Arc<str> {
        if let Some(t) = self.0.get(ticker) {
            return Arc::clone(t);
        }
        let t: Arc<str> = Arc::from(ticker);
        self.0.insert(Arc::clone(&t));
        t
    }
}

/// The gatherer's [`SessionSink`]: turns session output into owned records on the shard ring.
struct RingSink {
    ring: Arc<ArrayQueue<Record>>,
    conn_id: u64,
    tickers: Rc<RefCell<Interner>>,
    counters: Arc<ShardCounters>,
    /// Set when the writer is gone for good: a full ring can then never drain.
    abandon: Arc<AtomicBool>,
    /// The shard's recorder, shared by its sessions (same thread).
    telemetry: Rc<RefCell<ShardTelemetry>>,
    /// Markets and up state of this connection, shared with the shard.
    state: Rc<ConnState>,
    /// Where gap markets are reported to the snapshot poller (a priority hint), if one runs.
    gap_hints: Option<Arc<ArrayQueue<Arc<str>>>>,
    /// Connected at least once (a later connection is a reconnect).
    connected_once: bool,
}

impl RingSink {
    /// Pushes `record`, waiting while the ring is full.
    ///
    /// Why this is correct backpressure: the session calls the sink synchronously from its read
    /// loop, on the shard's only thread. While this function waits, no session of the shard
    /// polls its socket, so unread frames stay in the kernel's receive buffer, TCP's window
    /// closes and the exchange's sender slows down: the pressure travels back to the source
    /// and nothing is dropped here. The wait is a bounded backoff sleep (not a spin), so a
    /// stalled writer costs no CPU. What the shard cannot do meanwhile is answer pings or run
    /// its stale timer; a stall longer than the server's patience ends in a reconnect, which the
    /// session records as a disconnect gap, the same as any other lost connection.
    fn push(&mut self, record: Record) -> Flow {
        let Err(mut record) = self.ring.push(record) else {
            ShardCounters::add(&self.counters.records, 1);
            return Flow::Continue;
        };
        ShardCounters::add(&self.counters.ring_full_stalls, 1);
        let started = std::time::Instant::now();
        let mut sleep = RING_FULL_SLEEP_MIN;
        loop {
            if self.abandon.load(Ordering::Acquire) {
                return Flow::Stop;
            }
            std::thread::sleep(sleep);
            sleep = (sleep * 2).min(RING_FULL_SLEEP_MAX);
            match self.ring.push(record) {
                Ok(()) => break,
                Err(back) => record = back,
            }
        }
        let waited_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        ShardCounters::add(&self.counters.ring_full_wait_us, waited_us);
        ShardCounters::add(&self.counters.records, 1);
        Flow::Continue
    }

    fn origin(&self, ts_recv_ns: u64, sid: Option<u64>, seq: Option<u64>) -> Origin {
        Origin { ts_recv_ns: ns_i64(ts_recv_ns), conn_id: self.conn_id, sid, seq }
    }

    fn interned(&self, markets: &[String]) -> Box<[Arc<str>]> {
        let mut tickers = self.tickers.borrow_mut();
        markets.iter().map(|m| tickers.get(m)).collect()
    }
}

fn ns_i64(ns: u64) -> i64 {
    i64::try_from(ns).unwrap_or(i64::MAX)
}

impl SessionSink for RingSink {
    fn event(&mut self, received: &Received<'_>) -> Flow {
        let origin = self.origin(received.ts_recv_ns, received.sid, received.seq);
        let record = {
            let mut tickers = self.tickers.borrow_mut();
            Record::from_event(received.event, origin, |t| tickers.get(t))
        };
        ShardCounters::add(&self.counters.events, 1);
        self.telemetry.borrow_mut().event(received.event, received.ts_recv_ns);
        self.push(record)
    }

    /// Gap rows: a sequence gap as is; a dropped subscription and a disconnect window have no
    /// seq, so they are stored with `expected_seq = 0` and no `got_seq` (seqs start at 1, so 0
    /// never names a real frame); a disconnect has no sid either (`sid = 0`) and spans every
    /// market of the connection, from the last frame before it to the first snapshot after.
    fn gap(&mut self, marker: &GapMarker<'_>) -> Flow {
        let gap = match *marker {
            GapMarker::Seq { gap, markets } => store::GapMarker {
                ts_recv_ns: ns_i64(gap.ts_recv_ns),
                conn_id: self.conn_id,
                sid: gap.sid,
                expected_seq: gap.expected,
                got_seq: Some(gap.got),
                ts_recv_last_good_ns: gap.ts_recv_last_ok_ns.map(ns_i64),
                markets: self.interned(markets),
            },
            GapMarker::SubscriptionLost { sid, ts_recv_ns, markets, .. } => store::GapMarker {
                ts_recv_ns: ns_i64(ts_recv_ns),
                conn_id: self.conn_id,
                sid,
                expected_seq: 0,
                got_seq: None,
                ts_recv_last_good_ns: None,
                markets: self.interned(markets),
            },
            GapMarker::Disconnect { gap, markets } => store::GapMarker {
                ts_recv_ns: ns_i64(gap.ts_recv_resumed_ns),
                conn_id: self.conn_id,
                sid: 0,
                expected_seq: 0,
                got_seq: None,
                ts_recv_last_good_ns: gap.ts_recv_last_ns.map(ns_i64),
                markets: self.interned(markets),
            },
        };
        if let Some(hints) = &self.gap_hints {
            // Drop-oldest when full: a hint only moves a market ahead in the poller's queue;
            // the data itself is resynced over WebSocket and the gap row is stored regardless.
            for m in &gap.markets {
                let _ = hints.force_push(Arc::clone(m));
            }
        }
        ShardCounters::add(&self.counters.gaps, 1);
        self.counters.gap_window.note(telemetry::wall_ns() / 1_000_000_000);
        self.telemetry.borrow_mut().gap();
        self.push(Record::Gap(Box::new(gap)))
    }

    fn unparsed(&mut self, frame: &[u8], ts_recv_ns: u64, why: &str) -> Flow {
        let reason = match why.strip_prefix("unknown message type ") {
            Some(type_name) => RawReason::Unknown(type_name.trim_matches('"').into()),
            None => RawReason::Malformed(why.into()),
        };
        let raw = RawFrame {
            ts_recv_ns: ns_i64(ts_recv_ns),
            conn_id: self.conn_id,
            reason,
            frame: frame.into(),
        };
        ShardCounters::add(&self.counters.unparsed, 1);
        self.push(Record::Raw(Box::new(raw)))
    }

    fn status(&mut self, status: &Status) -> Flow {
        match status {
            Status::Connected { attempt } => {
                ShardCounters::add(&self.counters.connects, 1);
                if self.connected_once {
                    self.telemetry.borrow_mut().reconnect();
                }
                if !self.state.up.get() {
                    ShardCounters::add(&self.counters.sessions_up, 1);
                    ShardCounters::add(&self.counters.markets_up, self.state.markets.get());
                }
                self.state.up.set(true);
                self.connected_once = true;
                tracing::info!(conn_id = self.conn_id, attempt, "session connected");
            }
            Status::Disconnected { reason, retry_in } => {
                ShardCounters::add(&self.counters.disconnects, 1);
                if self.state.up.get() {
                    self.counters.sessions_up.fetch_sub(1, Ordering::Relaxed);
                    self.counters.markets_up.fetch_sub(self.state.markets.get(), Ordering::Relaxed);
                }
                self.state.up.set(false);
                tracing::warn!(conn_id = self.conn_id, ?retry_in, "session lost: {reason}");
            }
            Status::ServerError { code, message, sid, action } => {
                tracing::warn!(
                    conn_id = self.conn_id,
                    code,
                    ?sid,
                    ?action,
                    "server error: {message}"
                );
            }
        }
        Flow::Continue
    }

    fn frame_received(&mut self, ts_recv_ns: u64) {
        self.counters.last_frame_ns.store(ts_recv_ns, Ordering::Relaxed);
        self.telemetry.borrow_mut().frame();
    }

    fn resyncs_queued(&mut self, n: u64) {
        self.telemetry.borrow_mut().resyncs(n);
    }
}

/// Markets and connection state of one connection, shared by its sink and the shard.
#[derive(Debug, Default)]
struct ConnState {
    markets: Cell<u64>,
    up: Cell<bool>,
}

/// The registry's `market_lifecycle_v2` session, run by shard 0.
#[derive(Debug)]
pub(crate) struct LifecyclePlan {
    /// Its connection id.
    pub conn_id: u64,
    /// Its session (whole exchange, lifecycle channel).
    pub config: SessionConfig,
    /// Where lifecycle events go to the registry thread.
    pub notes: Arc<super::driver::LifecycleQueue>,
}

/// What one shard runs.
#[derive(Debug)]
pub(crate) struct ShardPlan {
    /// Index among the shards.
    pub index: usize,
    /// A CPU to pin the executor to, or `None` for unbound.
    pub cpu: Option<usize>,
    /// One session configuration per connection, with its gatherer-wide connection id.
    pub sessions: Vec<(u64, SessionConfig)>,
    /// The session configuration of connections opened later (its `markets` is empty).
    pub template: SessionConfig,
    /// Markets one connection carries at most.
    pub markets_per_connection: usize,
    /// Connection ids and budget, shared with the other shards.
    pub connections: Arc<Connections>,
    /// Add/remove commands from the gatherer (bounded: [`SHARD_CONTROL_CAPACITY`]).
    pub control: Option<Receiver<ShardCommand>>,
    /// The lifecycle session, on one shard only.
    pub lifecycle: Option<LifecyclePlan>,
    /// Gap-market hints for the snapshot poller, when it runs.
    pub gap_hints: Option<Arc<ArrayQueue<Arc<str>>>>,
}

/// Starts a shard thread. It runs until `stop` is set, then cancels its sessions (at an await
/// point: every record a session handed over is already on the ring) and returns.
pub(crate) fn spawn(
    plan: ShardPlan,
    signer: Arc<Signer>,
    ring: Arc<ArrayQueue<Record>>,
    counters: Arc<ShardCounters>,
    telemetry: ShardTelemetry,
    stop: Arc<AtomicBool>,
    abandon: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    let name = format!("kdp-shard-{}", plan.index);
    // The start plan is counted before the thread runs, so stats taken right after start see
    // it; later changes are counted by the shard as it makes them.
    let markets: usize = plan.sessions.iter().map(|(_, s)| s.markets.len()).sum();
    let connections = plan.sessions.len() + usize::from(plan.lifecycle.is_some());
    ShardCounters::add(&counters.markets, u64::try_from(markets).unwrap_or(u64::MAX));
    ShardCounters::add(&counters.connections, u64::try_from(connections).unwrap_or(u64::MAX));
    std::thread::Builder::new().name(name.clone()).spawn(move || {
        let placement = plan.cpu.map_or(Placement::Unbound, Placement::Fixed);
        let executor = match LocalExecutorBuilder::new(placement)
            .name(&name)
            .io_memory(IO_MEMORY_BYTES)
            .make()
        {
            Ok(executor) => executor,
            Err(e) => {
                counters.set_fatal(format!("shard {} executor could not start: {e}", plan.index));
                return;
            }
        };
        let shard = Shard {
            index: plan.index,
            template: plan.template,
            markets_per_connection: plan.markets_per_connection.max(1),
            connections: plan.connections,
            signer,
            ring,
            counters,
            abandon,
            gap_hints: plan.gap_hints,
            tickers: Rc::new(RefCell::new(Interner::default())),
            telemetry: Rc::new(RefCell::new(telemetry)),
            conns: Vec::new(),
            owner: HashMap::new(),
            budget_warned: false,
        };
        executor.run(run_shard(shard, plan.sessions, plan.control, plan.lifecycle, stop));
    })
}

/// One connection of a shard.
struct ShardConn {
    conn_id: u64,
    handle: MarketsHandle,
    state: Rc<ConnState>,
    task: glommio::Task<()>,
}

/// A shard's state on its executor.
struct Shard {
    index: usize,
    template: SessionConfig,
    markets_per_connection: usize,
    connections: Arc<Connections>,
    signer: Arc<Signer>,
    ring: Arc<ArrayQueue<Record>>,
    counters: Arc<ShardCounters>,
    abandon: Arc<AtomicBool>,
    gap_hints: Option<Arc<ArrayQueue<Arc<str>>>>,
    tickers: Rc<RefCell<Interner>>,
    telemetry: Rc<RefCell<ShardTelemetry>>,
    conns: Vec<ShardConn>,
    /// Market → index in `conns`.
    owner: HashMap<Arc<str>, usize>,
    budget_warned: bool,
}

impl Shard {
    fn sink(&self, conn_id: u64, state: Rc<ConnState>) -> RingSink {
        RingSink {
            ring: Arc::clone(&self.ring),
            conn_id,
            tickers: Rc::clone(&self.tickers),
            counters: Arc::clone(&self.counters),
            abandon: Arc::clone(&self.abandon),
            telemetry: Rc::clone(&self.telemetry),
            state,
            gap_hints: self.gap_hints.clone(),
            connected_once: false,
        }
    }

    fn gauges(&self) -> telemetry::ShardGauges {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        telemetry::ShardGauges {
            ring_len: self.ring.len(),
            sessions_up: load(&self.counters.sessions_up),
            markets_subscribed: load(&self.counters.markets_up),
        }
    }

    /// Starts a session on `config` with `markets` and records it as a connection (`counted`:
    /// already in the shard's market and connection counters).
    fn open(&mut self, conn_id: u64, config: SessionConfig, markets: Vec<String>, counted: bool) {
        let state = Rc::new(ConnState::default());
        let (handle, session_markets) = conn::markets_channel(markets.iter().cloned());
        let mut sink = self.sink(conn_id, Rc::clone(&state));
        let signer = Arc::clone(&self.signer);
        let counters = Arc::clone(&self.counters);
        let task = glommio::spawn_local(async move {
            if let Err(e) = conn::run_with(&config, &signer, &mut sink, &session_markets).await {
                tracing::error!(conn_id, "session gave up: {e}");
                counters.set_fatal(format!("connection {conn_id}: {e}"));
            }
        });
        let index = self.conns.len();
        for m in &markets {
            let t = self.tickers.borrow_mut().get(m);
            self.owner.insert(t, index);
        }
        self.conns.push(ShardConn { conn_id, handle, state, task });
        if counted {
            self.conns[index].state.markets.set(u64::try_from(markets.len()).unwrap_or(u64::MAX));
        } else {
            self.set_markets(index, markets.len());
            ShardCounters::add(&self.counters.connections, 1);
        }
    }

    /// Sets connection `index`'s market count (and the markets-up gauge if it is up).
    fn set_markets(&self, index: usize, n: usize) {
        let Some(c) = self.conns.get(index) else { return };
        let n = u64::try_from(n).unwrap_or(u64::MAX);
        let old = c.state.markets.replace(n);
        if c.state.up.get() {
            ShardCounters::add(&self.counters.markets_up, n);
            self.counters.markets_up.fetch_sub(old, Ordering::Relaxed);
        }
        if n >= old {
            ShardCounters::add(&self.counters.markets, n - old);
        } else {
            self.counters.markets.fetch_sub(old - n, Ordering::Relaxed);
        }
    }

    /// Where a new market goes: the first connection with room, else a new connection, else
    /// (connection budget spent) the least-loaded connection.
    fn place(&mut self) -> usize {
        if let Some(i) =
            self.conns.iter().position(|c| c.handle.len() < self.markets_per_connection)
        {
            return i;
        }
        if let Some(conn_id) = self.connections.open() {
            let mut config = self.template.clone();
            config.jitter_seed = conn_id;
            self.open(conn_id, config, Vec::new(), false);
            tracing::info!(shard = self.index, conn_id, "connection opened for new markets");
            return self.conns.len() - 1;
        }
        if !self.budget_warned {
            self.budget_warned = true;
            tracing::warn!(
                shard = self.index,
                "connections_per_key reached: new markets go to the least-loaded connection \
                 beyond markets_per_connection"
            );
        }
        self.conns.iter().enumerate().min_by_key(|(_, c)| c.handle.len()).map_or(0, |(i, _)| i)
    }

    fn apply(&mut self, command: ShardCommand) {
        match command {
            ShardCommand::Add(markets) => {
                let mut per_conn: HashMap<usize, Vec<Arc<str>>> = HashMap::new();
                for m in markets {
                    if self.owner.contains_key(&m) {
                        continue;
                    }
                    let i = self.place();
                    if i >= self.conns.len() {
                        // No connection could be opened at all (zero budget): nothing to do.
                        continue;
                    }
                    let t = self.tickers.borrow_mut().get(&m);
                    self.owner.insert(t, i);
                    // Counted now so `place` sees the connection fill up within this batch.
                    self.conns[i].handle.add([&*m]);
                    per_conn.entry(i).or_default().push(m);
                }
                for i in per_conn.keys() {
                    self.set_markets(*i, self.conns[*i].handle.len());
                }
            }
            ShardCommand::Remove(markets) => {
                let mut touched = HashSet::new();
                for m in markets {
                    let Some(i) = self.owner.remove(&m) else { continue };
                    self.conns[i].handle.remove([&*m]);
                    touched.insert(i);
                }
                for i in touched {
                    self.set_markets(i, self.conns[i].handle.len());
                }
            }
        }
    }
}

async fn run_shard(
    mut shard: Shard,
    sessions: Vec<(u64, SessionConfig)>,
    control: Option<Receiver<ShardCommand>>,
    lifecycle: Option<LifecyclePlan>,
    stop: Arc<AtomicBool>,
) {
    for (conn_id, config) in sessions {
        let markets = config.markets.clone();
        shard.open(conn_id, config, markets, true);
    }
    let lifecycle_task = lifecycle.map(|plan| {
        let LifecyclePlan { conn_id, config, notes } = plan;
        let state = Rc::new(ConnState::default());
        let mut sink = LifecycleSink { inner: shard.sink(conn_id, state), notes };
        let signer = Arc::clone(&shard.signer);
        let counters = Arc::clone(&shard.counters);
        glommio::spawn_local(async move {
            if let Err(e) = conn::run(&config, &signer, &mut sink).await {
                tracing::error!(conn_id, "lifecycle session gave up: {e}");
                counters.set_fatal(format!("connection {conn_id} (lifecycle): {e}"));
            }
        })
    });
    let mut control = control;
    while !stop.load(Ordering::Acquire) {
        if let Some(rx) = &control {
            loop {
                match rx.try_recv() {
                    Ok(command) => shard.apply(command),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        control = None;
                        break;
                    }
                }
            }
        }
        glommio::timer::sleep(STOP_POLL).await;
        shard.telemetry.borrow_mut().tick(shard.gauges(), telemetry::wall_ns(), false);
    }
    for c in shard.conns.drain(..) {
        c.task.cancel().await;
        drop(c.handle);
    }
    if let Some(task) = lifecycle_task {
        task.cancel().await;
    }
    shard.telemetry.borrow_mut().tick(shard.gauges(), telemetry::wall_ns(), true);
}

/// The lifecycle session's sink: everything goes to the ring as on any connection (lifecycle
/// rows are stored), and market lifecycle events also go to the registry thread; a gap on the
/// lifecycle stream (a lost lifecycle message) asks the registry for a reconciliation.
struct LifecycleSink {
    inner: RingSink,
    notes: Arc<super::driver::LifecycleQueue>,
}

impl SessionSink for LifecycleSink {
    fn event(&mut self, received: &Received<'_>) -> Flow {
        if let kdp_engine::event::Event::MarketLifecycle(l) = received.event {
            self.notes.note(l);
        }
        self.inner.event(received)
    }
    fn gap(&mut self, marker: &GapMarker<'_>) -> Flow {
        self.notes.lost();
        self.inner.gap(marker)
    }
    fn unparsed(&mut self, frame: &[u8], ts_recv_ns: u64, why: &str) -> Flow {
        self.inner.unparsed(frame, ts_recv_ns, why)
    }
    fn status(&mut self, status: &Status) -> Flow {
        self.inner.status(status)
    }
    fn frame_received(&mut self, ts_recv_ns: u64) {
        self.inner.frame_received(ts_recv_ns);
    }
}

impl std::fmt::Debug for ShardConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardConn").field("conn_id", &self.conn_id).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_matches_the_reference_vectors() {
        // From the FNV reference (draft-eastlake-fnv): "", "a", "foobar".
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn shard_assignment_is_frozen() {
        // Pinned values: a change here moves markets between shards in production.
        assert_eq!(fnv1a64(b"KXHIGHNY-25JAN01-B40"), 0xb306_885e_0fed_0f50);
        assert_eq!(fnv1a64(b"INXD-25DEC31-T5000"), 0xf30c_74b4_b9a3_5054);
        let got: Vec<usize> = ["KXHIGHNY-25JAN01-B40", "INXD-25DEC31-T5000", "a", "foobar"]
            .iter()
            .map(|t| shard_of(t, 7))
            .collect();
        assert_eq!(got, [4, 2, 5, 6]);
        assert_eq!(shard_of("anything", 1), 0);
        assert_eq!(shard_of("anything", 0), 0);
    }

    #[test]
    fn the_interner_hands_out_one_arc_per_ticker() {
        let mut i = Interner::default();
        let a = i.get("M-1");
        let b = i.get("M-1");
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &i.get("M-2")));
    }

    fn raw(n: u8) -> Record {
        Record::Raw(Box::new(RawFrame {
            ts_recv_ns: 1,
            conn_id: 1,
            reason: RawReason::Malformed("x".into()),
            frame: Box::new([n]),
        }))
    }

    fn sink(ring: &Arc<ArrayQueue<Record>>, counters: &Arc<ShardCounters>) -> RingSink {
        RingSink {
            ring: Arc::clone(ring),
            conn_id: 1,
            tickers: Rc::default(),
            counters: Arc::clone(counters),
            abandon: Arc::new(AtomicBool::new(false)),
            telemetry: Rc::new(RefCell::new(test_telemetry())),
            state: Rc::default(),
            gap_hints: None,
            connected_once: false,
        }
    }

    fn test_telemetry() -> ShardTelemetry {
        let (schema, ids, _) = telemetry::schema();
        let recorder = kdp_engine::telemetry::Telemetry::new(schema).recorder("0", 0);
        ShardTelemetry::new(recorder, ids)
    }

    #[test]
    fn a_full_ring_makes_the_producer_wait_never_drop() {
        let ring = Arc::new(ArrayQueue::new(1));
        let counters = Arc::new(ShardCounters::default());
        let mut sink = sink(&ring, &counters);
        assert_eq!(sink.push(raw(1)), Flow::Continue);
        let drainer = {
            let (ring, counters) = (Arc::clone(&ring), Arc::clone(&counters));
            std::thread::spawn(move || {
                // Take the first record only once the producer is known to be waiting.
                while counters.ring_full_stalls.load(Ordering::Relaxed) == 0 {
                    std::thread::yield_now();
                }
                ring.pop()
            })
        };
        assert_eq!(sink.push(raw(2)), Flow::Continue);
        assert_eq!(drainer.join().ok().flatten(), Some(raw(1)));
        assert_eq!(ring.pop(), Some(raw(2)));
        let stats = counters.snapshot(0);
        assert_eq!((stats.records, stats.ring_full_stalls), (2, 1));
    }

    #[test]
    fn a_producer_behind_a_dead_writer_gives_up_when_told() {
        let ring = Arc::new(ArrayQueue::new(1));
        let counters = Arc::new(ShardCounters::default());
        let mut sink = sink(&ring, &counters);
        assert_eq!(sink.push(raw(1)), Flow::Continue);
        sink.abandon.store(true, Ordering::Release);
        assert_eq!(sink.push(raw(2)), Flow::Stop);
        assert_eq!(counters.snapshot(0).records, 1);
    }
}
