//! The exchange task: owns the market [`Exchange`], paces its virtual time to real time, writes
//! each event to the truth log, encodes each event's `msg` body once, and fans batches out to
//! every connection through one bounded broadcast.
//!
//! Flow: tick (every [`HUB_TICK`]) → pull every event whose exchange time is at or before the
//! virtual now (start + elapsed real time × speed) → truth log → encode → broadcast as one
//! [`Batch`]. Between ticks the task answers requests from connections and the REST server
//! (bounded mpsc, [`HUB_REQUESTS_MAX`]): snapshots and generic read queries, run on the
//! exchange inside this task so nothing else ever touches it.
//!
//! Consistency: a snapshot reports the exchange position S it reflects (the last event the
//! engine produced, even one still waiting for its time to come). Every event after S is
//! broadcast after the reply, and events at or before S that a connection still has queued are
//! skipped for that market by the session, so a snapshot is followed by exactly the market's
//! events after S.
//!
//! With [`Clock::Manual`] virtual time does not run; [`HubHandle::advance`] produces a given
//! number of events. Tests use it to make every step reproducible.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::market::truth::{DeliveryItem, TruthWriter};

use super::proto::{self, Shape};
use crate::market::Exchange;
use crate::market::model::{ExchEvent, ExchEventKind, MarketId};

/// How often the real-time clock looks for due events: 1 ms keeps the added latency under a
/// millisecond without spinning (the task sleeps between ticks; missed ticks are skipped).
pub const HUB_TICK: Duration = Duration::from_millis(1);
/// Default of [`HubConfig::broadcast_batches_max`]: batches the broadcast holds for the slowest
/// connection. At ~1 batch per millisecond this is about 4 s of backlog; a connection further
/// behind has lost data and gets error 25.
pub const HUB_BROADCAST_BATCHES_MAX: usize = 4096;
/// Events in one batch: bounds the size of a single broadcast item (and the work a session does
/// before it looks at its socket again) when the engine runs fast.
pub const HUB_BATCH_EVENTS_MAX: usize = 4096;
/// Events produced per tick at most, so a clock far ahead of the engine (a stall, a huge speed
/// factor) cannot starve requests: the next tick continues.
pub const HUB_EVENTS_PER_TICK_MAX: usize = 65_536;
/// Requests (snapshots, queries) waiting for the hub. Each connection or REST handler has at
/// most one in flight, so this bounds bursts, not steady load; senders wait when it is full.
pub const HUB_REQUESTS_MAX: usize = 256;
/// Largest real-time speed factor: at 10⁶ one real millisecond is ~17 virtual minutes; more is
/// a configuration mistake.
pub const HUB_SPEED_MAX: u32 = 1_000_000;

/// How virtual time advances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// `speed` virtual nanoseconds per real nanosecond (1 = real time).
    RealTime {
        /// Speed factor, 1..=[`HUB_SPEED_MAX`].
        speed: u32,
    },
    /// Only [`HubHandle::advance`] produces events.
    Manual,
}

impl Default for Clock {
    fn default() -> Self {
        Clock::RealTime { speed: 1 }
    }
}

/// Which subscription channel an event belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventChannel {
    /// `orderbook_delta` (snapshots and deltas).
    Orderbook,
    /// `trade`.
    Trade,
    /// `ticker`.
    Ticker,
    /// `market_lifecycle_v2` (market and event lifecycle).
    Lifecycle,
}

/// One exchange event, encoded once for every connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubEvent {
    /// Global exchange position.
    pub exch_seq: u64,
    /// Channel.
    pub channel: EventChannel,
    /// Frame `type`.
    pub msg_type: &'static str,
    /// Market ticker, for market events.
    pub market: Option<Arc<str>>,
    /// The `msg` object, JSON.
    pub body: Box<str>,
}

/// A batch of events in exchange order, shared by every connection.
pub type Batch = Arc<[HubEvent]>;

/// Encoded state of some markets at one exchange position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The last exchange event the state includes.
    pub exch_seq: u64,
    /// Market ticker and encoded `msg` body, for each requested market that exists.
    pub items: Vec<(Arc<str>, String)>,
}

/// The hub has stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the simulator's exchange task has stopped")]
pub struct HubClosed;

type QueryFn = Box<dyn FnOnce(&Exchange, u64) + Send>;

enum Request {
    /// Run a closure on the exchange with the last produced exchange position.
    Query(QueryFn),
    /// Manual clock: produce this many events, reply with the last exchange position.
    Advance { events: u64, reply: oneshot::Sender<u64> },
    /// A piece of a connection's delivery log for the truth file.
    Delivery { conn: u64, items: Vec<DeliveryItem> },
}

/// The truth file the hub writes, when configured.
pub type TruthFile = TruthWriter<std::io::BufWriter<std::fs::File>>;

/// Cheap-clone handle to the hub: requests, and the event broadcast.
#[derive(Clone)]
pub struct HubHandle {
    requests: mpsc::Sender<Request>,
    events: broadcast::Sender<Batch>,
}

impl std::fmt::Debug for HubHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubHandle").finish_non_exhaustive()
    }
}

impl HubHandle {
    /// Runs `f` on the exchange inside the hub task.
    pub async fn query<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Exchange) -> R + Send + 'static,
    ) -> Result<R, HubClosed> {
        self.query_at(move |ex, _| f(ex)).await.map(|(r, _)| r)
    }

    /// Runs `f` on the exchange; also returns the last exchange position the state includes.
    pub async fn query_at<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Exchange, u64) -> R + Send + 'static,
    ) -> Result<(R, u64), HubClosed> {
        let (tx, rx) = oneshot::channel();
        let job: QueryFn = Box::new(move |ex, seq| {
            let _ = tx.send((f(ex, seq), seq));
        });
        self.requests.send(Request::Query(job)).await.map_err(|_| HubClosed)?;
        rx.await.map_err(|_| HubClosed)
    }

    /// Produces at least `events` events (then the rest of the engine's current action, so the
    /// exchange state matches what was broadcast) and returns the last exchange position. Every
    /// batch is broadcast before this returns. Meant for [`Clock::Manual`].
    pub async fn advance(&self, events: u64) -> Result<u64, HubClosed> {
        let (reply, rx) = oneshot::channel();
        self.requests.send(Request::Advance { events, reply }).await.map_err(|_| HubClosed)?;
        rx.await.map_err(|_| HubClosed)
    }

    /// Appends a piece of connection `conn`'s delivery log to the truth file (no-op without
    /// one). A connection sends its log in pieces and always at least once, when it ends.
    pub async fn deliver(&self, conn: u64, items: Vec<DeliveryItem>) -> Result<(), HubClosed> {
        self.requests.send(Request::Delivery { conn, items }).await.map_err(|_| HubClosed)
    }

    /// A receiver of every batch broadcast from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Batch> {
        self.events.subscribe()
    }

    /// Encoded books (`orderbook_snapshot` bodies) of `tickers`, unknown tickers left out.
    pub async fn book_snapshot(
        &self,
        tickers: Option<Vec<Arc<str>>>,
        shape: Shape,
    ) -> Result<Snapshot, HubClosed> {
        self.snapshot(tickers, move |ex, id, ticker| {
            proto::snapshot_body(ticker, &ex.book(id, None), shape)
        })
        .await
    }

    /// Encoded ticker states (`ticker` bodies at the exchange's current time).
    pub async fn ticker_snapshot(
        &self,
        tickers: Option<Vec<Arc<str>>>,
        shape: Shape,
    ) -> Result<Snapshot, HubClosed> {
        self.snapshot(tickers, move |ex, id, ticker| {
            proto::ticker_body(ticker, &ex.market(id).ticker_state, ex.now_ns(), shape)
        })
        .await
    }

    async fn snapshot(
        &self,
        tickers: Option<Vec<Arc<str>>>,
        encode: impl Fn(&Exchange, MarketId, &str) -> String + Send + 'static,
    ) -> Result<Snapshot, HubClosed> {
        let (items, exch_seq) = self
            .query_at(move |ex, _| {
                let ids: Vec<(MarketId, Arc<str>)> = match tickers {
                    Some(ts) => {
                        ts.into_iter().filter_map(|t| ex.market_id(&t).map(|id| (id, t))).collect()
                    }
                    None => (0..)
                        .zip(ex.markets())
                        .map(|(id, m)| (id, Arc::from(m.ticker.as_str())))
                        .collect(),
                };
                ids.into_iter()
                    .map(|(id, t)| {
                        let body = encode(ex, id, &t);
                        (t, body)
                    })
                    .collect::<Vec<_>>()
            })
            .await?;
        Ok(Snapshot { exch_seq, items })
    }
}

impl super::rest::ExchangeQuery for HubHandle {
    type View = Exchange;

    fn query<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Exchange) -> R + Send + 'static,
    ) -> impl Future<Output = Option<R>> + Send {
        let hub = self.clone();
        async move { HubHandle::query(&hub, f).await.ok() }
    }
}

/// Hub settings.
#[derive(Debug, Clone, Copy)]
pub struct HubConfig {
    /// Virtual clock.
    pub clock: Clock,
    /// Field shapes of encoded events.
    pub shape: Shape,
    /// Batches the broadcast holds for the slowest connection (at least 1); a connection that
    /// falls further behind gets error 25 on every subscription. Default
    /// [`HUB_BROADCAST_BATCHES_MAX`]; tests make it tiny to reach the slow-reader path.
    pub broadcast_batches_max: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            clock: Clock::default(),
            shape: Shape::default(),
            broadcast_batches_max: HUB_BROADCAST_BATCHES_MAX,
        }
    }
}

/// Starts the hub task on the current tokio runtime. It stops when `shutdown` turns true (or
/// its sender is dropped).
/// With `truth`, every event is recorded as it is pulled from the engine, delivery logs as
/// connections send them, and the file is finished when the hub stops.
pub fn spawn(
    exchange: Exchange,
    cfg: HubConfig,
    truth: Option<TruthFile>,
    shutdown: watch::Receiver<bool>,
) -> (HubHandle, tokio::task::JoinHandle<()>) {
    let (req_tx, req_rx) = mpsc::channel(HUB_REQUESTS_MAX);
    // tokio's broadcast panics on a zero capacity; the simulator refuses one before this.
    let (ev_tx, _) = broadcast::channel(cfg.broadcast_batches_max.max(1));
    let handle = HubHandle { requests: req_tx, events: ev_tx.clone() };
    let hub = Hub {
        exchange,
        cfg,
        truth,
        events: ev_tx,
        tickers: Vec::new(),
        pending: VecDeque::new(),
        produced_seq: 0,
        batch: Vec::new(),
    };
    let task = tokio::spawn(hub.run(req_rx, shutdown));
    (handle, task)
}

struct Hub {
    exchange: Exchange,
    cfg: HubConfig,
    truth: Option<TruthFile>,
    events: broadcast::Sender<Batch>,
    /// Interned tickers by market id (the catalog only grows).
    tickers: Vec<Arc<str>>,
    /// Events of the engine's current action not yet broadcast (their time has not come).
    pending: VecDeque<ExchEvent>,
    /// The last exchange position the engine produced (pending or broadcast).
    produced_seq: u64,
    batch: Vec<HubEvent>,
}

impl Hub {
    async fn run(
        mut self,
        mut requests: mpsc::Receiver<Request>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let speed = match self.cfg.clock {
            Clock::RealTime { speed } => Some(i64::from(speed.clamp(1, HUB_SPEED_MAX))),
            Clock::Manual => None,
        };
        let start = Instant::now();
        let start_ns = self.exchange.now_ns();
        let mut tick = tokio::time::interval(HUB_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = tick.tick(), if speed.is_some() => {
                    let elapsed_ns = i64::try_from(start.elapsed().as_nanos()).unwrap_or(i64::MAX);
                    let target_ns = start_ns
                        .saturating_add(elapsed_ns.saturating_mul(speed.unwrap_or(1)));
                    self.produce_until(target_ns);
                }
                req = requests.recv() => match req {
                    None => break,
                    Some(Request::Query(f)) => f(&self.exchange, self.produced_seq),
                    Some(Request::Advance { events, reply }) => {
                        self.produce_count(events);
                        let _ = reply.send(self.produced_seq);
                    }
                    Some(Request::Delivery { conn, items }) => {
                        self.truth_write(|t| t.write_delivery(conn, &items));
                    }
                },
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
            }
        }
        // Delivery logs already queued belong in the file.
        while let Ok(req) = requests.try_recv() {
            if let Request::Delivery { conn, items } = req {
                self.truth_write(|t| t.write_delivery(conn, &items));
            }
        }
        self.finish_truth();
    }

    /// Writes to the truth file; on an I/O error the file is abandoned (reported once), the
    /// exchange goes on.
    fn truth_write(&mut self, f: impl FnOnce(&mut TruthFile) -> std::io::Result<()>) {
        if let Some(Err(e)) = self.truth.as_mut().map(f) {
            tracing::error!("truth log write failed, no further truth is recorded: {e}");
            self.truth = None;
        }
    }

    fn finish_truth(&mut self) {
        if let Some(Err(e)) = self.truth.take().map(TruthWriter::finish) {
            tracing::error!("truth log could not be finished: {e}");
        }
    }

    /// The next event to broadcast. The engine is pulled a whole action at a time
    /// (`next_batch`), so its state always matches `produced_seq` exactly.
    fn next(&mut self) -> ExchEvent {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return ev;
            }
            let mut action = Vec::new();
            self.exchange.next_batch(&mut action);
            if let Some(last) = action.last() {
                debug_assert!(
                    last.exch_seq > self.produced_seq,
                    "exchange positions must increase"
                );
                self.produced_seq = last.exch_seq;
            }
            if let Some(mut truth) = self.truth.take() {
                let recorded = action.iter().try_for_each(|ev| truth.record(&self.exchange, ev));
                match recorded {
                    Ok(()) => self.truth = Some(truth),
                    Err(e) => tracing::error!("truth log write failed, no further truth: {e}"),
                }
            }
            self.pending.extend(action);
        }
    }

    fn produce_until(&mut self, target_ns: i64) {
        for _ in 0..HUB_EVENTS_PER_TICK_MAX {
            let ev = self.next();
            if ev.ts_ns > target_ns {
                self.pending.push_front(ev);
                break;
            }
            self.push(ev);
        }
        self.flush();
    }

    /// At least `events` events, then the rest of the engine's current action, so nothing is
    /// left pending.
    fn produce_count(&mut self, events: u64) {
        for _ in 0..events {
            let ev = self.next();
            self.push(ev);
        }
        while let Some(ev) = self.pending.pop_front() {
            self.push(ev);
        }
        self.flush();
    }

    fn ticker(&mut self, id: MarketId) -> Arc<str> {
        let idx = id as usize;
        while self.tickers.len() <= idx {
            let next = self.tickers.len() as MarketId;
            self.tickers.push(Arc::from(self.exchange.market(next).ticker.as_str()));
        }
        self.tickers[idx].clone()
    }

    fn push(&mut self, ev: ExchEvent) {
        let shape = self.cfg.shape;
        let market = ev.kind.market().map(|id| self.ticker(id));
        let t = market.as_deref().unwrap_or("");
        let (channel, msg_type, body) = match &ev.kind {
            &ExchEventKind::Delta { side, price_micros, delta_centi, .. } => (
                EventChannel::Orderbook,
                "orderbook_delta",
                proto::delta_body(t, side, price_micros, delta_centi, ev.ts_ns, shape),
            ),
            ExchEventKind::Trade {
                trade_id,
                yes_price_micros,
                count_centi,
                taker_side,
                taker_book_side,
                ..
            } => (
                EventChannel::Trade,
                "trade",
                proto::trade_body(
                    &proto::TradeFields {
                        ticker: t,
                        trade_id,
                        yes_price_micros: *yes_price_micros,
                        count_centi: *count_centi,
                        taker_side: *taker_side,
                        taker_book_side: *taker_book_side,
                        ts_ns: ev.ts_ns,
                    },
                    shape,
                ),
            ),
            ExchEventKind::Ticker { state, .. } => {
                (EventChannel::Ticker, "ticker", proto::ticker_body(t, state, ev.ts_ns, shape))
            }
            &ExchEventKind::MarketLifecycle { market, kind } => {
                let info = self.exchange.market(market);
                let event = self.exchange.events().get(info.event as usize);
                (
                    EventChannel::Lifecycle,
                    "market_lifecycle_v2",
                    proto::market_lifecycle_body(info, event, kind, ev.ts_ns),
                )
            }
            &ExchEventKind::EventCreated { event } => {
                let info = self.exchange.events().get(event as usize);
                let series = info.and_then(|i| self.exchange.series().get(i.series as usize));
                let body = info
                    .map_or_else(|| "{}".to_owned(), |i| proto::event_lifecycle_body(i, series));
                (EventChannel::Lifecycle, "event_lifecycle", body)
            }
        };
        self.batch.push(HubEvent {
            exch_seq: ev.exch_seq,
            channel,
            msg_type,
            market,
            body: body.into_boxed_str(),
        });
        if self.batch.len() >= HUB_BATCH_EVENTS_MAX {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch: Batch = std::mem::take(&mut self.batch).into();
        // No receiver (no connection yet) is fine: the events are simply not delivered.
        let _ = self.events.send(batch);
    }
}
