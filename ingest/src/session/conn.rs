//! One WebSocket session on a glommio shard: connect, subscribe, read, check sequence, reconnect.
//!
//! Markets can change while the session runs ([`SessionMarkets`]): the shard edits the wanted
//! set and wakes the session, which sends batched `update_subscription` `add_markets` /
//! `delete_markets` (one per channel sid, batches of `markets_per_subscription`, through the
//! command limiter); a reconnect subscribes exactly the wanted set of that moment.
//!
//! TCP (glommio) → TLS (futures-rustls, optional) → WebSocket (async-tungstenite) with the
//! `KALSHI-ACCESS-*` headers signed by [`Signer`]. Every frame is parsed by [`FrameParser`] and
//! sequenced frames pass the [`SeqTracker`]; events, gap markers and unparsed frames go to a
//! [`SessionSink`]. The stale timer reconnects a connection that sent no frame and no ping for
//! `stale_after`; reconnects wait on [`Backoff`] and resubscribe exactly the configured markets;
//! the first snapshot after a reconnect closes the disconnect window as a gap marker. Error
//! codes are handled by [`policy::action_for`]; commands pass the [`CommandLimiter`].
//!
//! The session runs until the sink returns [`Flow::Stop`] or the server refuses the handshake
//! with 401/403 (a key problem retrying cannot fix).

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::client::IntoClientRequest as _;
use async_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use async_tungstenite::tungstenite::{self, Message as WsMessage};
use futures_rustls::rustls::ClientConfig;
use futures_util::future::{Either, select};
use futures_util::io::{AsyncRead, AsyncWrite};
use futures_util::{SinkExt as _, StreamExt as _};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use kdp_engine::event::Event;
use rustls_pki_types::ServerName;

use super::backoff::{Backoff, BackoffConfig};
use super::policy::{self, CommandLimiter, ErrorAction, ErrorCounts, Limits};
use super::seq::{DisconnectGap, Gap, SeqTracker, Verdict};
use crate::auth::Signer;
use crate::wire::{
    Channel, Command, FrameParser, MarketFilter, Message, UpdateAction, encode_command,
};

/// No frame and no ping for this long means the connection is dead: Kalshi pings every 10 s, so
/// three missed heartbeats.
pub const STALE_AFTER_DEFAULT: Duration = Duration::from_secs(30);
/// TCP + TLS + WebSocket handshake must finish within this; a stuck handshake counts as a
/// failure and backs off.
pub const CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
/// At most one resync (`get_snapshot`) per sid per this period, so a burst of gaps cannot turn
/// into a storm of snapshot requests; gaps in between are covered by the pending resync.
pub const RESYNC_INTERVAL_MIN_DEFAULT: Duration = Duration::from_secs(1);
/// Commands waiting for a rate-limiter token: a full shard's subscribe batches plus resyncs;
/// beyond it the connection is restarted (which resubscribes everything anyway).
pub const COMMAND_QUEUE_MAX: usize = 65_536;

/// Wake-ups a session's market channel holds: one pending wake-up says "the wanted set
/// changed", so a second one carries no information. Capacity 1 bounds it and makes the
/// shard's sends coalesce (the set itself holds the changes).
pub const MARKETS_WAKE_CAPACITY: usize = 1;

/// The markets a session should carry, shared on one executor between the shard (which edits
/// it) and the session (which subscribes it). Each edit bumps a version; the session compares
/// versions to know that something changed.
#[derive(Debug, Default)]
struct MarketSet {
    wanted: BTreeSet<String>,
    version: u64,
}

/// The shard's side of a session's markets: edit the wanted set and wake the session.
#[derive(Debug)]
pub struct MarketsHandle {
    set: Rc<RefCell<MarketSet>>,
    wake: LocalSender<()>,
}

/// The session's side: the wanted set and the wake-up it waits on.
#[derive(Debug)]
pub struct SessionMarkets {
    set: Rc<RefCell<MarketSet>>,
    wake: LocalReceiver<()>,
}

/// A session's market set, starting with `initial`: the shard keeps the handle, the session
/// runs with the other side ([`run_with`]).
pub fn markets_channel(
    initial: impl IntoIterator<Item = String>,
) -> (MarketsHandle, SessionMarkets) {
    let set =
        Rc::new(RefCell::new(MarketSet { wanted: initial.into_iter().collect(), version: 0 }));
    let (tx, rx) = local_channel::new_bounded(MARKETS_WAKE_CAPACITY);
    (MarketsHandle { set: Rc::clone(&set), wake: tx }, SessionMarkets { set, wake: rx })
}

impl MarketsHandle {
    /// Adds `markets`; returns how many were new.
    pub fn add<'m>(&self, markets: impl IntoIterator<Item = &'m str>) -> usize {
        let mut set = self.set.borrow_mut();
        let added = markets.into_iter().filter(|m| set.wanted.insert((*m).to_owned())).count();
        if added > 0 {
            set.version += 1;
            drop(set);
            self.wake();
        }
        added
    }

    /// Removes `markets`; returns how many were present.
    pub fn remove<'m>(&self, markets: impl IntoIterator<Item = &'m str>) -> usize {
        let mut set = self.set.borrow_mut();
        let removed = markets.into_iter().filter(|m| set.wanted.remove(*m)).count();
        if removed > 0 {
            set.version += 1;
            drop(set);
            self.wake();
        }
        removed
    }

    /// Markets wanted now.
    pub fn len(&self) -> usize {
        self.set.borrow().wanted.len()
    }

    /// No market wanted.
    pub fn is_empty(&self) -> bool {
        self.set.borrow().wanted.is_empty()
    }

    fn wake(&self) {
        // Full = a wake-up is already pending; the session reads the whole set when it runs.
        let _ = self.wake.try_send(());
    }
}

/// Where to connect.
#[derive(Clone)]
pub struct Endpoint {
    /// Host name (also the TLS server name).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Path from the host root, e.g. `/trade-api/ws/v2` (signed without its query).
    pub path: String,
    /// TLS client configuration (`None`: plain `ws://`, for tests and local simulators).
    pub tls: Option<Arc<ClientConfig>>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls.is_some() { "wss" } else { "ws" };
        write!(f, "{scheme}://{}:{}{}", self.host, self.port, self.path)
    }
}

/// A session's configuration: what to subscribe, Kalshi's limits, every timeout.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Where to connect.
    pub endpoint: Endpoint,
    /// Channels subscribed for every market batch.
    pub channels: Vec<Channel>,
    /// The markets this session owns (resubscribed exactly on every reconnect).
    pub markets: Vec<String>,
    /// Kalshi's limits.
    pub limits: Limits,
    /// Reconnect delays.
    pub backoff: BackoffConfig,
    /// Seed of the backoff jitter.
    pub jitter_seed: u64,
    /// See [`STALE_AFTER_DEFAULT`].
    pub stale_after: Duration,
    /// See [`CONNECT_TIMEOUT_DEFAULT`].
    pub connect_timeout: Duration,
    /// See [`RESYNC_INTERVAL_MIN_DEFAULT`].
    pub resync_interval_min: Duration,
    /// Subscribe the channels for the whole exchange (no market filter; lifecycle channels),
    /// ignoring `markets`.
    pub whole_exchange: bool,
}

impl SessionConfig {
    /// Defaults (Kalshi's limits, 1 s → 5 min backoff) for `markets` on `channels`.
    pub fn new(endpoint: Endpoint, channels: Vec<Channel>, markets: Vec<String>) -> Self {
        Self {
            endpoint,
            channels,
            markets,
            limits: Limits::default(),
            backoff: BackoffConfig::default(),
            jitter_seed: 0,
            stale_after: STALE_AFTER_DEFAULT,
            connect_timeout: CONNECT_TIMEOUT_DEFAULT,
            resync_interval_min: RESYNC_INTERVAL_MIN_DEFAULT,
            whole_exchange: false,
        }
    }
}

/// Whether the session goes on after a sink call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep reading.
    Continue,
    /// Close the connection and return from [`run`].
    Stop,
}

/// One accepted market-data event with its connection-local envelope and receive time.
#[derive(Debug)]
pub struct Received<'a> {
    /// Subscription id (connection-local).
    pub sid: Option<u64>,
    /// Sequence number within the sid (absent on unsequenced channels such as `ticker`).
    pub seq: Option<u64>,
    /// Wall-clock receive time, ns since the epoch.
    pub ts_recv_ns: u64,
    /// The normalized event.
    pub event: &'a Event<'a>,
}

/// A stretch of data that may be missing, and the markets it concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GapMarker<'a> {
    /// A sequence gap on one sid.
    Seq {
        /// The gap.
        gap: Gap,
        /// Every market on the sid (the gap does not say which one lost data).
        markets: &'a [String],
    },
    /// The server dropped a subscription (code 10 or 25); it is being resubscribed.
    SubscriptionLost {
        /// The dropped sid.
        sid: u64,
        /// The error code.
        code: u32,
        /// When the error arrived (wall clock, ns).
        ts_recv_ns: u64,
        /// The sid's markets.
        markets: &'a [String],
    },
    /// The connection was down between these times.
    Disconnect {
        /// The window.
        gap: DisconnectGap,
        /// Every market of the session.
        markets: &'a [String],
    },
}

/// Session life events, for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// The handshake succeeded (attempt 1 is the first connection).
    Connected {
        /// Connection attempts so far, this one included.
        attempt: u64,
    },
    /// The connection ended; the next attempt starts after `retry_in`.
    Disconnected {
        /// What happened.
        reason: String,
        /// The backoff delay.
        retry_in: Duration,
    },
    /// The server sent an error frame.
    ServerError {
        /// Kalshi's code.
        code: u32,
        /// Kalshi's text.
        message: String,
        /// The sid it concerns, if any.
        sid: Option<u64>,
        /// What the session does about it.
        action: ErrorAction,
    },
}

/// Where a session's output goes. The gatherer's implementation pushes records into its shard's
/// bounded ring; tests collect them.
pub trait SessionSink {
    /// An accepted event (duplicates and stale frames never reach the sink).
    fn event(&mut self, received: &Received<'_>) -> Flow;
    /// A gap marker, written before the frame that revealed it.
    fn gap(&mut self, marker: &GapMarker<'_>) -> Flow;
    /// A frame that could not be parsed or has an unknown type: keep it raw.
    fn unparsed(&mut self, frame: &[u8], ts_recv_ns: u64, why: &str) -> Flow;
    /// A life event of the session.
    fn status(&mut self, status: &Status) -> Flow;
    /// A data frame (text or binary) arrived, before it is parsed; for metrics.
    fn frame_received(&mut self, _ts_recv_ns: u64) {}
    /// `n` resyncs (`get_snapshot` commands) were queued; for metrics.
    fn resyncs_queued(&mut self, _n: u64) {}
}

/// Why [`run`] gave up.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The server refused the handshake's credentials.
    #[error(
        "{endpoint:?} refused the WebSocket handshake with HTTP {status} ({body}); check the key id \
         and private key, and that the clock is right (the signature covers the time)"
    )]
    Rejected {
        /// The endpoint.
        endpoint: Endpoint,
        /// HTTP status (401 or 403).
        status: u16,
        /// The response body.
        body: String,
    },
    /// The endpoint's host is not a valid TLS server name.
    #[error("{0:?} is not a valid TLS server name")]
    ServerName(String),
    /// The configuration cannot work.
    #[error("invalid session configuration: {0}")]
    Config(&'static str),
}

/// Counters of one session, for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionCounts {
    /// Error frames by code.
    pub errors: ErrorCounts,
    /// Frames that failed to parse or had an unknown type.
    pub unparsed: u64,
    /// `get_snapshot` resyncs sent.
    pub resyncs: u64,
    /// Connections established.
    pub connects: u64,
}

/// Runs the session on the fixed `config.markets` until the sink says stop. Returns the
/// counters, or why it gave up.
pub async fn run(
    config: &SessionConfig,
    signer: &Signer,
    sink: &mut impl SessionSink,
) -> Result<SessionCounts, SessionError> {
    let (_handle, markets) = markets_channel(config.markets.iter().cloned());
    run_with(config, signer, sink, &markets).await
}

/// Runs the session on the market set `markets` (edited by its [`MarketsHandle`] while the
/// session runs; `config.markets` is ignored) until the sink says stop.
pub async fn run_with(
    config: &SessionConfig,
    signer: &Signer,
    sink: &mut impl SessionSink,
    markets: &SessionMarkets,
) -> Result<SessionCounts, SessionError> {
    if config.channels.is_empty() {
        return Err(SessionError::Config("no channels to subscribe"));
    }
    let mut shared = Shared {
        tracker: SeqTracker::new(),
        counts: SessionCounts::default(),
        markets_per_subscription: config.limits.markets_per_subscription.max(1),
        epoch: Instant::now(),
    };
    let mut backoff = Backoff::new(config.backoff, config.jitter_seed);
    let mut attempt = 0u64;
    loop {
        attempt += 1;
        let reason = match connect(config, signer).await {
            Ok(Connected::Tls(ws)) => {
                backoff.connected(shared.now_ms());
                shared.counts.connects += 1;
                if sink.status(&Status::Connected { attempt }) == Flow::Stop {
                    return Ok(shared.counts);
                }
                match Conn::new(config, &mut shared, *ws, markets).run(sink).await {
                    Ended::Stop => return Ok(shared.counts),
                    Ended::Lost(reason) => reason,
                }
            }
            Ok(Connected::Plain(ws)) => {
                backoff.connected(shared.now_ms());
                shared.counts.connects += 1;
                if sink.status(&Status::Connected { attempt }) == Flow::Stop {
                    return Ok(shared.counts);
                }
                match Conn::new(config, &mut shared, *ws, markets).run(sink).await {
                    Ended::Stop => return Ok(shared.counts),
                    Ended::Lost(reason) => reason,
                }
            }
            Err(ConnectError::Fatal(e)) => return Err(e),
            Err(ConnectError::Transient(reason)) => reason,
        };
        shared.tracker.disconnect();
        let retry_in = backoff.failed(shared.now_ms());
        if sink.status(&Status::Disconnected { reason, retry_in }) == Flow::Stop {
            return Ok(shared.counts);
        }
        glommio::timer::sleep(retry_in).await;
    }
}

/// State that outlives one connection.
struct Shared {
    tracker: SeqTracker,
    counts: SessionCounts,
    /// Current batch size (halved by code 26).
    markets_per_subscription: usize,
    /// Origin of the monotonic clock used for the limiter and backoff.
    epoch: Instant,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn now_ms(&self) -> u64 {
        self.now_ns() / 1_000_000
    }
}

fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

type TlsStream = futures_rustls::client::TlsStream<glommio::net::TcpStream>;

/// Boxed: the streams are hundreds of bytes to ~1.5 KiB (rustls's buffers); made once per connect.
enum Connected {
    Tls(Box<WebSocketStream<TlsStream>>),
    Plain(Box<WebSocketStream<glommio::net::TcpStream>>),
}

enum ConnectError {
    Fatal(SessionError),
    Transient(String),
}

async fn connect(config: &SessionConfig, signer: &Signer) -> Result<Connected, ConnectError> {
    let timeout = config.connect_timeout;
    let attempt = async {
        let ep = &config.endpoint;
        let tcp = glommio::net::TcpStream::connect((ep.host.as_str(), ep.port))
            .await
            .map_err(|e| ConnectError::Transient(format!("TCP connect to {ep:?} failed: {e}")))?;
        let request = signed_request(config, signer)?;
        match &ep.tls {
            Some(tls) => {
                let name = ServerName::try_from(ep.host.clone())
                    .map_err(|_| ConnectError::Fatal(SessionError::ServerName(ep.host.clone())))?;
                let stream = futures_rustls::TlsConnector::from(Arc::clone(tls))
                    .connect(name, tcp)
                    .await
                    .map_err(|e| {
                        ConnectError::Transient(format!("TLS handshake with {ep:?} failed: {e}"))
                    })?;
                let (ws, _) = async_tungstenite::client_async(request, stream)
                    .await
                    .map_err(|e| handshake_error(ep, e))?;
                Ok(Connected::Tls(Box::new(ws)))
            }
            None => {
                let (ws, _) = async_tungstenite::client_async(request, tcp)
                    .await
                    .map_err(|e| handshake_error(ep, e))?;
                Ok(Connected::Plain(Box::new(ws)))
            }
        }
    };
    match select(Box::pin(attempt), Box::pin(glommio::timer::sleep(timeout))).await {
        Either::Left((result, _)) => result,
        Either::Right(_) => Err(ConnectError::Transient(format!(
            "connecting to {:?} took longer than {timeout:?}",
            config.endpoint
        ))),
    }
}

fn signed_request(
    config: &SessionConfig,
    signer: &Signer,
) -> Result<tungstenite::handshake::client::Request, ConnectError> {
    let ep = &config.endpoint;
    let scheme = if ep.tls.is_some() { "wss" } else { "ws" };
    let url = format!("{scheme}://{}:{}{}", ep.host, ep.port, ep.path);
    let mut request = url
        .into_client_request()
        .map_err(|_| ConnectError::Fatal(SessionError::Config("endpoint is not a valid URL")))?;
    let now_ms = wall_ns() / 1_000_000;
    let headers = signer
        .headers("GET", &ep.path, now_ms)
        .map_err(|_| ConnectError::Fatal(SessionError::Config("endpoint path cannot be signed")))?;
    for (name, value) in headers.pairs() {
        let value = HeaderValue::from_str(value)
            .map_err(|_| ConnectError::Fatal(SessionError::Config("auth header is not ASCII")))?;
        request.headers_mut().insert(name, value);
    }
    Ok(request)
}

fn handshake_error(ep: &Endpoint, e: tungstenite::Error) -> ConnectError {
    match e {
        tungstenite::Error::Http(response)
            if matches!(response.status(), StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) =>
        {
            let body = response
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            ConnectError::Fatal(SessionError::Rejected {
                endpoint: ep.clone(),
                status: response.status().as_u16(),
                body,
            })
        }
        tungstenite::Error::Http(response) => ConnectError::Transient(format!(
            "{ep:?} refused the WebSocket handshake with HTTP {}",
            response.status()
        )),
        other => {
            ConnectError::Transient(format!("WebSocket handshake with {ep:?} failed: {other}"))
        }
    }
}

enum Ended {
    Stop,
    Lost(String),
}

/// A command sent and not yet answered.
#[derive(Debug, Clone)]
enum Pending {
    Subscribe { channels: Vec<Channel>, markets: Vec<String> },
    SubscribeAll { channels: Vec<Channel> },
    Update { sid: u64, action: UpdateAction, markets: Vec<String> },
    Snapshot { sid: u64, markets: Vec<String> },
}

/// One subscription of this connection.
#[derive(Debug)]
struct Sub {
    channel: Channel,
    markets: Vec<String>,
    /// Monotonic ns of the last resync sent, and whether another is owed.
    resync_at_ns: Option<u64>,
    resync_owed: bool,
}

/// One live connection.
struct Conn<'c, S> {
    config: &'c SessionConfig,
    shared: &'c mut Shared,
    markets: &'c SessionMarkets,
    /// Markets named in a subscribe or add_markets command of this connection (sent or queued)
    /// and not deleted since.
    requested: BTreeSet<String>,
    /// Version of the wanted set `requested` was last brought up to.
    applied_version: Option<u64>,
    ws: WebSocketStream<S>,
    parser: FrameParser,
    limiter: CommandLimiter,
    next_id: u64,
    pending: HashMap<u64, Pending>,
    subs: HashMap<u64, Sub>,
    queue: VecDeque<(u64, Pending)>,
    last_frame: Instant,
    buf: Vec<u8>,
}

impl<'c, S: AsyncRead + AsyncWrite + Unpin> Conn<'c, S> {
    fn new(
        config: &'c SessionConfig,
        shared: &'c mut Shared,
        ws: WebSocketStream<S>,
        markets: &'c SessionMarkets,
    ) -> Self {
        let limiter = CommandLimiter::new(config.limits.commands_per_s, shared.now_ns());
        Self {
            config,
            shared,
            markets,
            requested: BTreeSet::new(),
            applied_version: None,
            ws,
            parser: FrameParser::new(),
            limiter,
            next_id: 1,
            pending: HashMap::new(),
            subs: HashMap::new(),
            queue: VecDeque::new(),
            last_frame: Instant::now(),
            buf: Vec::new(),
        }
    }

    async fn run(mut self, sink: &mut impl SessionSink) -> Ended {
        if self.config.whole_exchange {
            let id = self.alloc_id();
            let channels = self.config.channels.clone();
            self.queue.push_back((id, Pending::SubscribeAll { channels }));
        } else {
            // Exactly the markets wanted at this moment (a reconnect resubscribes the set the
            // shard owns now, not the one it started with).
            let (markets, version) = {
                let set = self.markets.set.borrow();
                (set.wanted.iter().cloned().collect::<Vec<String>>(), set.version)
            };
            let per = self.shared.markets_per_subscription;
            for batch in policy::batches(&markets, per) {
                self.enqueue_subscribe(self.config.channels.clone(), batch.to_vec());
            }
            self.requested = markets.into_iter().collect();
            self.applied_version = Some(version);
        }
        loop {
            if !self.config.whole_exchange {
                self.apply_market_changes();
            }
            let wait = match self.send_queued().await {
                Ok(wait) => wait,
                Err(reason) => return Ended::Lost(reason),
            };
            let stale_in = self.config.stale_after.saturating_sub(self.last_frame.elapsed());
            if stale_in.is_zero() {
                return Ended::Lost(format!(
                    "no frame or ping for {:?}: connection stale",
                    self.config.stale_after
                ));
            }
            let sleep_for = wait.map_or(stale_in, |w| w.min(stale_in));
            let wake = std::pin::pin!(self.markets.wake.recv());
            let woken = select(Box::pin(glommio::timer::sleep(sleep_for)), wake);
            let next = select(self.ws.next(), woken).await;
            let message = match next {
                Either::Right(_) => continue,
                Either::Left((None, _)) => {
                    return Ended::Lost("the server closed the stream".into());
                }
                Either::Left((Some(Err(e)), _)) => return Ended::Lost(format!("read failed: {e}")),
                Either::Left((Some(Ok(m)), _)) => m,
            };
            self.last_frame = Instant::now();
            let flow = match message {
                WsMessage::Text(text) => self.frame(text.as_bytes(), sink),
                WsMessage::Binary(bytes) => self.frame(&bytes, sink),
                WsMessage::Ping(_) => {
                    // tungstenite queued the pong; flush it now rather than at the next write.
                    if let Err(e) = self.ws.flush().await {
                        return Ended::Lost(format!("pong failed: {e}"));
                    }
                    Flow::Continue
                }
                WsMessage::Pong(_) | WsMessage::Frame(_) => Flow::Continue,
                WsMessage::Close(frame) => {
                    return Ended::Lost(match frame {
                        Some(f) => {
                            format!("the server closed with {} ({})", u16::from(f.code), f.reason)
                        }
                        None => "the server closed without a code".into(),
                    });
                }
            };
            if flow == Flow::Stop {
                let _ = self.ws.close(None).await;
                return Ended::Stop;
            }
            let queued = self.shared.counts.resyncs;
            self.due_resyncs();
            if self.shared.counts.resyncs > queued {
                sink.resyncs_queued(self.shared.counts.resyncs - queued);
            }
        }
    }

    fn enqueue_subscribe(&mut self, channels: Vec<Channel>, markets: Vec<String>) {
        let id = self.alloc_id();
        self.queue.push_back((id, Pending::Subscribe { channels, markets }));
    }

    /// Brings the connection's subscriptions to the wanted set: new markets are added with
    /// `update_subscription` `add_markets` on every channel's sid (or, while a channel has no
    /// sid yet, with a `subscribe` the server merges into it); markets no longer wanted are
    /// deleted with `delete_markets` once every channel's sid is known.
    fn apply_market_changes(&mut self) {
        let version = self.markets.set.borrow().version;
        if self.applied_version == Some(version) {
            return;
        }
        let (add, remove): (Vec<String>, Vec<String>) = {
            let set = self.markets.set.borrow();
            (
                set.wanted.difference(&self.requested).cloned().collect(),
                self.requested.difference(&set.wanted).cloned().collect(),
            )
        };
        let sids: Option<Vec<u64>> = self
            .config
            .channels
            .iter()
            .map(|c| self.subs.iter().find(|(_, s)| s.channel == *c).map(|(sid, _)| *sid))
            .collect();
        let per = self.shared.markets_per_subscription;
        if !add.is_empty() {
            match &sids {
                Some(sids) => {
                    for batch in policy::batches(&add, per) {
                        for &sid in sids {
                            self.enqueue_update(sid, UpdateAction::AddMarkets, batch.to_vec());
                        }
                    }
                }
                None => {
                    for batch in policy::batches(&add, per) {
                        self.enqueue_subscribe(self.config.channels.clone(), batch.to_vec());
                    }
                }
            }
            self.requested.extend(add);
        }
        let mut done = true;
        if !remove.is_empty() {
            match &sids {
                Some(sids) => {
                    for batch in policy::batches(&remove, per) {
                        for &sid in sids {
                            self.enqueue_update(sid, UpdateAction::DeleteMarkets, batch.to_vec());
                        }
                    }
                    for m in &remove {
                        self.requested.remove(m);
                    }
                }
                // A channel's subscription is still being made: delete once its sid is known
                // (the version stays unapplied, so this runs again after the next frame).
                None => done = false,
            }
        }
        if done {
            self.applied_version = Some(version);
        }
    }

    /// Queues an `update_subscription` and applies it to the sid's market list at once (the
    /// `ok` reply, when it lists the markets, replaces the list with the server's).
    fn enqueue_update(&mut self, sid: u64, action: UpdateAction, markets: Vec<String>) {
        if let Some(sub) = self.subs.get_mut(&sid) {
            match action {
                UpdateAction::AddMarkets => {
                    for m in &markets {
                        if !sub.markets.contains(m) {
                            sub.markets.push(m.clone());
                        }
                    }
                }
                UpdateAction::DeleteMarkets => sub.markets.retain(|m| !markets.contains(m)),
                UpdateAction::GetSnapshot => {}
            }
        }
        let id = self.alloc_id();
        self.queue.push_back((id, Pending::Update { sid, action, markets }));
    }

    fn alloc_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Sends queued commands while the limiter allows; returns how long until the next token
    /// if some are left.
    async fn send_queued(&mut self) -> Result<Option<Duration>, String> {
        if self.queue.len() > COMMAND_QUEUE_MAX {
            return Err(format!(
                "{} commands queued (bound {COMMAND_QUEUE_MAX})",
                self.queue.len()
            ));
        }
        let mut sent = false;
        while let Some((id, pending)) = self.queue.front() {
            if let Err(wait) = self.limiter.try_acquire(self.shared.now_ns()) {
                if sent {
                    self.ws.flush().await.map_err(|e| format!("send failed: {e}"))?;
                }
                return Ok(Some(wait));
            }
            self.buf.clear();
            let id = *id;
            match pending {
                Pending::Subscribe { channels, markets } => encode_command(
                    &Command::Subscribe {
                        id,
                        channels,
                        markets: MarketFilter::Many(markets),
                        send_initial_snapshot: false,
                        skip_ticker_ack: false,
                    },
                    &mut self.buf,
                ),
                Pending::SubscribeAll { channels } => encode_command(
                    &Command::Subscribe {
                        id,
                        channels,
                        markets: MarketFilter::<&str>::All,
                        send_initial_snapshot: false,
                        skip_ticker_ack: false,
                    },
                    &mut self.buf,
                ),
                Pending::Update { sid, action, markets } => encode_command(
                    &Command::UpdateSubscription {
                        id,
                        sid: *sid,
                        market_tickers: markets,
                        action: *action,
                    },
                    &mut self.buf,
                ),
                Pending::Snapshot { sid, markets } => encode_command(
                    &Command::UpdateSubscription {
                        id,
                        sid: *sid,
                        market_tickers: markets,
                        action: UpdateAction::GetSnapshot,
                    },
                    &mut self.buf,
                ),
            }
            if let Some((_, pending)) = self.queue.pop_front() {
                let text = String::from_utf8_lossy(&self.buf).into_owned();
                self.pending.insert(id, pending);
                self.ws
                    .feed(WsMessage::text(text))
                    .await
                    .map_err(|e| format!("send failed: {e}"))?;
                sent = true;
            }
        }
        if sent {
            self.ws.flush().await.map_err(|e| format!("send failed: {e}"))?;
        }
        Ok(None)
    }

    /// Sends a `get_snapshot` for every sid owed a resync whose interval has passed.
    fn due_resyncs(&mut self) {
        let now_ns = self.shared.now_ns();
        let interval_ns =
            u64::try_from(self.config.resync_interval_min.as_nanos()).unwrap_or(u64::MAX);
        let mut due = Vec::new();
        for (&sid, sub) in &mut self.subs {
            let ready = sub.resync_at_ns.is_none_or(|at| now_ns.saturating_sub(at) >= interval_ns);
            if sub.resync_owed && ready {
                sub.resync_owed = false;
                sub.resync_at_ns = Some(now_ns);
                due.push((sid, sub.markets.clone()));
            }
        }
        for (sid, markets) in due {
            for batch in policy::batches(&markets, self.shared.markets_per_subscription) {
                let id = self.alloc_id();
                self.shared.counts.resyncs += 1;
                self.queue.push_back((id, Pending::Snapshot { sid, markets: batch.to_vec() }));
            }
        }
    }

    fn frame(&mut self, bytes: &[u8], sink: &mut impl SessionSink) -> Flow {
        let ts_recv_ns = wall_ns();
        sink.frame_received(ts_recv_ns);
        let frame = match self.parser.parse(bytes) {
            Ok(frame) => frame,
            Err(e) => {
                self.shared.counts.unparsed += 1;
                self.shared.tracker.saw_frame(ts_recv_ns);
                return sink.unparsed(bytes, ts_recv_ns, &e.to_string());
            }
        };
        let env = frame.envelope;
        match &frame.message {
            Message::Event(event) => {
                let (Some(sid), Some(seq)) = (env.sid, env.seq) else {
                    self.shared.tracker.saw_frame(ts_recv_ns);
                    return sink.event(&Received { sid: env.sid, seq: env.seq, ts_recv_ns, event });
                };
                let is_snapshot = matches!(event, Event::Snapshot(_));
                let verdict = self.shared.tracker.feed(sid, seq, ts_recv_ns, is_snapshot);
                if let Verdict::Stale { .. } = verdict {
                    return Flow::Continue;
                }
                if is_snapshot && let Some(gap) = self.shared.tracker.resumed(ts_recv_ns) {
                    let markets: Vec<String> = self.requested.iter().cloned().collect();
                    let marker = GapMarker::Disconnect { gap, markets: &markets };
                    if sink.gap(&marker) == Flow::Stop {
                        return Flow::Stop;
                    }
                }
                if let Verdict::Gap(gap) = verdict {
                    let flow = seq_gap(&mut self.subs, gap, sink);
                    if flow == Flow::Stop {
                        return flow;
                    }
                }
                sink.event(&Received { sid: Some(sid), seq: Some(seq), ts_recv_ns, event })
            }
            Message::Subscribed { channel, sid } => {
                self.shared.tracker.saw_frame(ts_recv_ns);
                let markets = match env.id.and_then(|id| self.pending.get(&id)) {
                    Some(Pending::Subscribe { markets, .. }) => markets.clone(),
                    _ => Vec::new(),
                };
                if let Some(channel) = Channel::from_wire(channel) {
                    let sub = self.subs.entry(*sid).or_insert(Sub {
                        channel,
                        markets: Vec::new(),
                        resync_at_ns: None,
                        resync_owed: false,
                    });
                    for m in markets {
                        if !sub.markets.contains(&m) {
                            sub.markets.push(m);
                        }
                    }
                }
                Flow::Continue
            }
            Message::Ok(ok) => {
                if let Some(id) = env.id {
                    self.pending.remove(&id);
                }
                if let (Some(sid), Some(tickers)) = (env.sid, &ok.market_tickers)
                    && let Some(sub) = self.subs.get_mut(&sid)
                {
                    sub.markets = tickers.iter().map(|t| (*t).to_owned()).collect();
                }
                match (env.sid, env.seq) {
                    (Some(sid), Some(seq)) => match self.shared.tracker.reply(sid, seq, ts_recv_ns)
                    {
                        Some(gap) => seq_gap(&mut self.subs, gap, sink),
                        None => Flow::Continue,
                    },
                    _ => {
                        self.shared.tracker.saw_frame(ts_recv_ns);
                        Flow::Continue
                    }
                }
            }
            Message::Unsubscribed => {
                self.shared.tracker.saw_frame(ts_recv_ns);
                if let Some(sid) = env.sid {
                    self.shared.tracker.remove(sid);
                    self.subs.remove(&sid);
                }
                Flow::Continue
            }
            Message::Error { code, message, .. } => {
                self.shared.tracker.saw_frame(ts_recv_ns);
                let (code, message) = (*code, (*message).to_owned());
                self.error(code, message, env.id, env.sid, ts_recv_ns, sink)
            }
            Message::Unknown { type_name } => {
                self.shared.counts.unparsed += 1;
                self.shared.tracker.saw_frame(ts_recv_ns);
                let why = format!("unknown message type {type_name:?}");
                sink.unparsed(bytes, ts_recv_ns, &why)
            }
        }
    }

    fn error(
        &mut self,
        code: u32,
        message: String,
        id: Option<u64>,
        sid: Option<u64>,
        ts_recv_ns: u64,
        sink: &mut impl SessionSink,
    ) -> Flow {
        self.shared.counts.errors.count(code);
        let action = policy::action_for(code);
        if sink.status(&Status::ServerError { code, message, sid, action }) == Flow::Stop {
            return Flow::Stop;
        }
        let pending = id.and_then(|id| self.pending.remove(&id));
        match action {
            ErrorAction::Resubscribe => {
                if let Some(sid) = sid
                    && let Some(sub) = self.subs.remove(&sid)
                {
                    self.shared.tracker.remove(sid);
                    let marker = GapMarker::SubscriptionLost {
                        sid,
                        code,
                        ts_recv_ns,
                        markets: &sub.markets,
                    };
                    if sink.gap(&marker) == Flow::Stop {
                        return Flow::Stop;
                    }
                    if self.config.whole_exchange {
                        let id = self.alloc_id();
                        let channels = vec![sub.channel];
                        self.queue.push_back((id, Pending::SubscribeAll { channels }));
                    } else {
                        self.enqueue_subscribe(vec![sub.channel], sub.markets);
                    }
                } else if let Some(Pending::Subscribe { channels, markets }) = pending {
                    self.enqueue_subscribe(channels, markets);
                } else if let Some(Pending::SubscribeAll { channels }) = pending {
                    let id = self.alloc_id();
                    self.queue.push_back((id, Pending::SubscribeAll { channels }));
                }
            }
            // Code 26: resend the refused markets in smaller batches; a single refused market
            // means the subscription is full, and is given up (gap row) instead of retried.
            ErrorAction::SplitSubscription => match pending {
                Some(Pending::Subscribe { channels, markets }) => {
                    match policy::refused_add(&markets) {
                        Some(policy::RefusedAdd::Split { size, batches }) => {
                            self.shared.markets_per_subscription =
                                self.shared.markets_per_subscription.min(size);
                            for batch in batches {
                                self.enqueue_subscribe(channels.clone(), batch);
                            }
                        }
                        Some(policy::RefusedAdd::GiveUp(market)) => {
                            let sid = sid.unwrap_or(0);
                            return self.add_refused(sid, code, market, ts_recv_ns, sink);
                        }
                        None => {}
                    }
                }
                Some(Pending::Update { sid, action: UpdateAction::AddMarkets, markets }) => {
                    match policy::refused_add(&markets) {
                        Some(policy::RefusedAdd::Split { size, batches }) => {
                            self.shared.markets_per_subscription =
                                self.shared.markets_per_subscription.min(size);
                            for batch in batches {
                                self.enqueue_update(sid, UpdateAction::AddMarkets, batch);
                            }
                        }
                        Some(policy::RefusedAdd::GiveUp(market)) => {
                            return self.add_refused(sid, code, market, ts_recv_ns, sink);
                        }
                        None => {}
                    }
                }
                _ => {}
            },
            ErrorAction::BackOffCommands => {
                self.limiter.throttled(self.shared.now_ns());
                if let Some(pending) = pending {
                    let id = self.alloc_id();
                    self.queue.push_back((id, pending));
                }
            }
            ErrorAction::Log => {}
        }
        Flow::Continue
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<'_, S> {
    /// The server refused a single market (`subscribe` or `add_markets`, code 26: the
    /// subscription `sid` is full; 0 when the error named none):
    /// retrying cannot succeed, so the market is dropped from the sid and from what this
    /// connection asked for (a later change of the wanted set asks again), and a
    /// subscription-lost gap row records that it is not covered on this channel.
    fn add_refused(
        &mut self,
        sid: u64,
        code: u32,
        market: String,
        ts_recv_ns: u64,
        sink: &mut impl SessionSink,
    ) -> Flow {
        if let Some(sub) = self.subs.get_mut(&sid) {
            sub.markets.retain(|m| *m != market);
        }
        self.requested.remove(&market);
        tracing::error!(
            sid,
            market = %market,
            "the server refused to add the market (code {code}: subscription full); it is not \
             captured on this channel until the shard's markets change; lower \
             markets_per_connection"
        );
        let markets = [market];
        sink.gap(&GapMarker::SubscriptionLost { sid, code, ts_recv_ns, markets: &markets })
    }
}

/// Reports a sequence gap with the sid's markets and owes the sid a resync (order books only:
/// trades and lifecycle events cannot be fetched again over WebSocket).
fn seq_gap(subs: &mut HashMap<u64, Sub>, gap: Gap, sink: &mut impl SessionSink) -> Flow {
    let Some(sub) = subs.get_mut(&gap.sid) else {
        return sink.gap(&GapMarker::Seq { gap, markets: &[] });
    };
    if sub.channel == Channel::OrderbookDelta {
        sub.resync_owed = true;
    }
    sink.gap(&GapMarker::Seq { gap, markets: &sub.markets })
}
