//! The registry thread: market discovery and lifecycle, and the REST snapshot poller, on one
//! plain thread that owns the gatherer's [`RestClient`] (so the registry's listings and the
//! poller's order books share one token bucket: the account's read budget).
//!
//! ```text
//! shard 0: market_lifecycle_v2 session ──LifecycleQueue──┐
//!                                                         ▼
//!   REST (token bucket) ◄── registry thread: Registry (discovery, lifecycle, reconcile,
//!                           exchange status) ──ShardCommand──► shards (bounded channels)
//!                           Poller (gap hints first, round robin) ──Record::Snapshot──► ring
//! shards ──gap hints (bounded, drop-oldest)──┘
//! ```
//!
//! One turn of the loop: apply queued lifecycle events (a change goes to the shards at once),
//! force a reconciliation if the lifecycle stream lost something, run the registry's due work
//! (exchange status, discovery/reconciliation), take gap hints, then poll one order book (which
//! waits for a token). A lifecycle event therefore waits at most one poll (a token period,
//! 50 ms at 20/s; longer only while the client backs off after a 429 or a listing runs).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use kdp_engine::event::{LifecycleKind, MarketLifecycle};

use super::shard::{ShardCommand, shard_of};
use crate::poller::Poller;
use crate::registry::{Registry, RegistryChange, RegistryConfig, RegistryUpdate};
use crate::rest::{Clock, RestClient, RestError, SystemClock};
use crate::store::Record;

/// Lifecycle events waiting for the registry thread. Beyond it an event is dropped, counted,
/// and a reconciliation is forced (the listing repairs whatever the event would have done),
/// so a registry thread busy with a long listing never stalls the shard reading the lifecycle
/// stream. 65,536 events = minutes of Kalshi's busiest lifecycle traffic.
pub const LIFECYCLE_QUEUE_CAPACITY: usize = 65_536;
/// Gap-market hints from the shards to the poller. Full → the oldest hint is dropped (the
/// shards use `force_push`): a hint only moves a market ahead in the poller's order; its data
/// is resynced over WebSocket and its gap row is stored regardless. 4,096 is ~3.4 min of the
/// Basic budget, more than the poller can serve before newer hints matter more.
pub const GAP_HINTS_CAPACITY: usize = 4_096;
/// Sleep of an idle registry thread (nothing to poll): the latency it adds to a lifecycle event.
pub const IDLE_SLEEP: Duration = Duration::from_millis(5);
/// Wait after a failed registry step (the REST client already retried with backoff) before
/// the next attempt.
pub const REGISTRY_RETRY_NS: i64 = 5_000_000_000;
/// Sleep slice of the registry thread's clock: how fast a stop interrupts a token wait or a
/// REST backoff.
const STOP_SLICE: Duration = Duration::from_millis(10);
/// Backoff of a push onto a full ring (the writer frees slots in bulk).
const RING_FULL_SLEEP: Duration = Duration::from_millis(1);

/// One market lifecycle event the registry cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LifecycleNote {
    market: Arc<str>,
    kind: LifecycleKind<'static>,
}

/// The bounded hand-off of lifecycle events from the lifecycle session to the registry thread.
#[derive(Debug)]
pub(crate) struct LifecycleQueue {
    queue: ArrayQueue<LifecycleNote>,
    reconcile: AtomicBool,
    overflows: AtomicU64,
    lost: AtomicU64,
}

impl LifecycleQueue {
    pub(crate) fn new() -> LifecycleQueue {
        LifecycleQueue {
            queue: ArrayQueue::new(LIFECYCLE_QUEUE_CAPACITY),
            reconcile: AtomicBool::new(false),
            overflows: AtomicU64::new(0),
            lost: AtomicU64::new(0),
        }
    }

    /// A lifecycle event arrived (kinds that cannot change membership are ignored).
    pub(crate) fn note(&self, event: &MarketLifecycle<'_>) {
        let kind = match event.kind {
            LifecycleKind::Created => LifecycleKind::Created,
            LifecycleKind::Activated => LifecycleKind::Activated,
            LifecycleKind::Deactivated => LifecycleKind::Deactivated,
            LifecycleKind::Determined => LifecycleKind::Determined,
            LifecycleKind::Settled => LifecycleKind::Settled,
            _ => return,
        };
        let note = LifecycleNote { market: Arc::from(event.market), kind };
        if self.queue.push(note).is_err() {
            self.overflows.fetch_add(1, Ordering::Relaxed);
            self.reconcile.store(true, Ordering::Release);
        }
    }

    /// The lifecycle stream lost something (a seq gap, a dropped subscription, a disconnect):
    /// only a listing can tell what.
    pub(crate) fn lost(&self) {
        self.lost.fetch_add(1, Ordering::Relaxed);
        self.reconcile.store(true, Ordering::Release);
    }
}

/// Counters of the registry thread.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RegistryStats {
    /// Markets the registry tracks now.
    pub markets: u64,
    /// Lifecycle events applied.
    pub lifecycle_events: u64,
    /// Lifecycle events dropped on a full queue (each forced a reconciliation).
    pub lifecycle_overflows: u64,
    /// Losses seen on the lifecycle stream (each forced a reconciliation).
    pub lifecycle_losses: u64,
    /// Complete listings applied (the discovery and every reconciliation).
    pub listings: u64,
    /// Markets sent to the shards to add.
    pub added: u64,
    /// Markets sent to the shards to remove.
    pub removed: u64,
    /// Registry steps that failed (after the client's retries).
    pub registry_errors: u64,
    /// The exchange is paused now.
    pub paused: bool,
    /// REST snapshots produced by the poller.
    pub snapshots: u64,
    /// Of those, for gap-hinted markets.
    pub gap_snapshots: u64,
    /// Polls that failed.
    pub poll_failures: u64,
    /// HTTP requests sent by the client (every attempt).
    pub requests: u64,
    /// 429 answers received.
    pub rate_limited: u64,
}

#[derive(Debug, Default)]
struct Counters {
    markets: AtomicU64,
    lifecycle_events: AtomicU64,
    listings: AtomicU64,
    added: AtomicU64,
    removed: AtomicU64,
    registry_errors: AtomicU64,
    paused: AtomicBool,
    snapshots: AtomicU64,
    gap_snapshots: AtomicU64,
    poll_failures: AtomicU64,
    requests: AtomicU64,
    rate_limited: AtomicU64,
}

/// What the registry thread runs.
pub(crate) struct DriverPlan {
    /// The REST client (built at start, so a bad URL or CA fails the start).
    pub client: RestClient,
    /// The registry's filters and intervals.
    pub registry: RegistryConfig,
    /// Run the snapshot poller.
    pub poll: bool,
    /// Markets from the config: always captured, never removed.
    pub static_markets: Vec<Arc<str>>,
    /// One control channel per shard (index = shard).
    pub shards: Vec<SyncSender<ShardCommand>>,
    /// Lifecycle events from the lifecycle session.
    pub notes: Arc<LifecycleQueue>,
    /// Gap hints from the shards.
    pub gap_hints: Arc<ArrayQueue<Arc<str>>>,
    /// The poller's ring to the writer.
    pub ring: Arc<ArrayQueue<Record>>,
}

/// The running registry thread.
pub(crate) struct DriverThread {
    pub thread: JoinHandle<()>,
    counters: Arc<Counters>,
    notes: Arc<LifecycleQueue>,
}

impl DriverThread {
    pub(crate) fn stats(&self) -> RegistryStats {
        let c = &self.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RegistryStats {
            markets: load(&c.markets),
            lifecycle_events: load(&c.lifecycle_events),
            lifecycle_overflows: load(&self.notes.overflows),
            lifecycle_losses: load(&self.notes.lost),
            listings: load(&c.listings),
            added: load(&c.added),
            removed: load(&c.removed),
            registry_errors: load(&c.registry_errors),
            paused: c.paused.load(Ordering::Relaxed),
            snapshots: load(&c.snapshots),
            gap_snapshots: load(&c.gap_snapshots),
            poll_failures: load(&c.poll_failures),
            requests: load(&c.requests),
            rate_limited: load(&c.rate_limited),
        }
    }
}

/// Real time whose sleeps end early once `stop` is set, so a token wait or a REST backoff
/// cannot hold up shutdown.
pub(crate) struct StopClock {
    inner: SystemClock,
    stop: Arc<AtomicBool>,
}

impl StopClock {
    pub(crate) fn new(stop: Arc<AtomicBool>) -> StopClock {
        StopClock { inner: SystemClock::new(), stop }
    }
}

impl Clock for StopClock {
    fn now_ns(&self) -> i64 {
        self.inner.now_ns()
    }
    fn unix_ns(&self) -> i64 {
        self.inner.unix_ns()
    }
    fn sleep_ns(&self, ns: i64) {
        let until = self.inner.now_ns().saturating_add(ns);
        loop {
            let left = until.saturating_sub(self.inner.now_ns());
            if left <= 0 || self.stop.load(Ordering::Acquire) {
                return;
            }
            let left = Duration::from_nanos(u64::try_from(left).unwrap_or(0));
            std::thread::sleep(left.min(STOP_SLICE));
        }
    }
}

/// Starts the registry thread.
pub(crate) fn spawn(
    plan: DriverPlan,
    stop: Arc<AtomicBool>,
    abandon: Arc<AtomicBool>,
) -> std::io::Result<DriverThread> {
    let counters = Arc::new(Counters::default());
    let notes = Arc::clone(&plan.notes);
    let thread = {
        let counters = Arc::clone(&counters);
        std::thread::Builder::new()
            .name("kdp-registry".into())
            .spawn(move || Driver::new(plan, counters, stop, abandon).run())?
    };
    Ok(DriverThread { thread, counters, notes })
}

struct Driver {
    client: RestClient,
    registry: Registry,
    poller: Poller,
    poll: bool,
    static_markets: HashSet<Arc<str>>,
    shards: Vec<SyncSender<ShardCommand>>,
    notes: Arc<LifecycleQueue>,
    gap_hints: Arc<ArrayQueue<Arc<str>>>,
    ring: Arc<ArrayQueue<Record>>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    abandon: Arc<AtomicBool>,
    paused: bool,
    retry_at_ns: i64,
}

impl Driver {
    fn new(
        plan: DriverPlan,
        counters: Arc<Counters>,
        stop: Arc<AtomicBool>,
        abandon: Arc<AtomicBool>,
    ) -> Driver {
        let mut poller = Poller::new();
        poller.apply(&RegistryChange { add: plan.static_markets.clone(), remove: Vec::new() });
        Driver {
            client: plan.client,
            registry: Registry::new(plan.registry),
            poller,
            poll: plan.poll,
            static_markets: plan.static_markets.into_iter().collect(),
            shards: plan.shards,
            notes: plan.notes,
            gap_hints: plan.gap_hints,
            ring: plan.ring,
            counters,
            stop,
            abandon,
            paused: false,
            retry_at_ns: i64::MIN,
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    fn run(mut self) {
        while !self.stopped() {
            self.lifecycle();
            self.registry_step();
            while let Some(m) = self.gap_hints.pop() {
                self.poller.mark_gap(&m);
            }
            let polled = self.poll && !self.paused && !self.poller.is_empty() && self.poll_one();
            self.publish_client_stats();
            if !polled {
                std::thread::sleep(IDLE_SLEEP);
            }
        }
    }

    fn lifecycle(&mut self) {
        let now_ns = self.client.clock().now_ns();
        while let Some(note) = self.notes.queue.pop() {
            self.counters.lifecycle_events.fetch_add(1, Ordering::Relaxed);
            if let Some(change) = self.registry.on_lifecycle_kind(&note.market, &note.kind, now_ns)
            {
                self.dispatch(change);
            }
        }
        if self.notes.reconcile.swap(false, Ordering::AcqRel) {
            tracing::info!("lifecycle stream lost messages: reconciling now");
            self.registry.reconcile_now();
            self.retry_at_ns = i64::MIN;
        }
        self.counters.markets.store(self.registry.len() as u64, Ordering::Relaxed);
    }

    fn registry_step(&mut self) {
        let now_ns = self.client.clock().now_ns();
        if now_ns < self.registry.next_due_ns() || now_ns < self.retry_at_ns {
            return;
        }
        match self.registry.poll(&mut self.client, now_ns) {
            Ok(updates) => {
                for update in updates {
                    match update {
                        RegistryUpdate::Change(change) => self.dispatch(change),
                        RegistryUpdate::Paused { estimated_resume_time } => {
                            tracing::warn!(
                                ?estimated_resume_time,
                                "exchange inactive: REST polling paused"
                            );
                            self.paused = true;
                        }
                        RegistryUpdate::Resumed => {
                            tracing::info!("exchange active again: REST polling resumed");
                            self.paused = false;
                        }
                    }
                }
            }
            Err(e) => {
                self.counters.registry_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("market registry step failed, retrying in 5 s: {e}");
                self.retry_at_ns = now_ns.saturating_add(REGISTRY_RETRY_NS);
            }
        }
        self.counters.listings.store(self.registry.listings(), Ordering::Relaxed);
        self.counters.paused.store(self.paused, Ordering::Relaxed);
        self.counters.markets.store(self.registry.len() as u64, Ordering::Relaxed);
    }

    /// Sends a registry change to the shards (grouped by [`shard_of`]) and the poller.
    /// Markets from the config are never removed.
    fn dispatch(&mut self, mut change: RegistryChange) {
        change.remove.retain(|m| !self.static_markets.contains(m));
        if change.is_empty() {
            return;
        }
        self.poller.apply(&change);
        let n = self.shards.len();
        let mut adds: HashMap<usize, Vec<Arc<str>>> = HashMap::new();
        let mut removes: HashMap<usize, Vec<Arc<str>>> = HashMap::new();
        for m in &change.add {
            adds.entry(shard_of(m, n)).or_default().push(Arc::clone(m));
        }
        for m in &change.remove {
            removes.entry(shard_of(m, n)).or_default().push(Arc::clone(m));
        }
        self.counters.added.fetch_add(change.add.len() as u64, Ordering::Relaxed);
        self.counters.removed.fetch_add(change.remove.len() as u64, Ordering::Relaxed);
        tracing::info!(add = change.add.len(), remove = change.remove.len(), "market changes");
        for (shard, markets) in removes {
            self.send(shard, ShardCommand::Remove(markets));
        }
        for (shard, markets) in adds {
            self.send(shard, ShardCommand::Add(markets));
        }
    }

    /// Sends to a shard, waiting while its channel is full (never drops; gives up at stop).
    fn send(&self, shard: usize, mut command: ShardCommand) {
        let Some(tx) = self.shards.get(shard) else { return };
        loop {
            match tx.try_send(command) {
                Ok(()) => return,
                Err(TrySendError::Disconnected(_)) => return,
                Err(TrySendError::Full(back)) => {
                    if self.stopped() {
                        return;
                    }
                    command = back;
                    std::thread::sleep(IDLE_SLEEP);
                }
            }
        }
    }

    /// Polls one order book; false when there was nothing to do.
    fn poll_one(&mut self) -> bool {
        let before = self.poller.stats();
        match self.poller.poll_one(&mut self.client) {
            Ok(Some(record)) => {
                let after = self.poller.stats();
                self.counters.snapshots.fetch_add(1, Ordering::Relaxed);
                if after.gap_snapshots > before.gap_snapshots {
                    self.counters.gap_snapshots.fetch_add(1, Ordering::Relaxed);
                }
                self.push(record);
                true
            }
            Ok(None) => false,
            Err(e) => {
                self.counters.poll_failures.fetch_add(1, Ordering::Relaxed);
                if !e.is_not_found() {
                    tracing::warn!("snapshot poll failed: {e}");
                }
                if let RestError::RateLimited { .. } = e {
                    tracing::warn!("REST budget exhausted after retries; the poller continues");
                }
                true
            }
        }
    }

    /// Pushes onto the poller's ring, waiting while it is full (backpressure, never a drop).
    fn push(&self, mut record: Record) {
        loop {
            match self.ring.push(record) {
                Ok(()) => return,
                Err(back) => {
                    if self.abandon.load(Ordering::Acquire) {
                        return;
                    }
                    record = back;
                    std::thread::sleep(RING_FULL_SLEEP);
                }
            }
        }
    }

    fn publish_client_stats(&self) {
        let s = self.client.stats();
        self.counters.requests.store(s.requests, Ordering::Relaxed);
        self.counters.rate_limited.store(s.rate_limited, Ordering::Relaxed);
    }
}
