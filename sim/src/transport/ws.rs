//! WebSocket listeners (plain `ws` and TLS `wss`, loopback) and the per-connection driver.
//!
//! Handshake, in order: path must be [`WS_PATH`] (404), no exchange outage (503), a free
//! connection slot (429), no forced bad-signature fault (401), valid signed headers (401 with a
//! JSON body saying why). Every refusal is an HTTP response before any WebSocket frame.
//!
//! A connection then runs one task: it reads commands, receives event batches from the hub's
//! broadcast, pings every `ping_interval` with payload `heartbeat`, and acts on faults. What the
//! [`Session`] returns is written in order; snapshots are fetched from the hub inline, so no
//! event is routed between a snapshot request and its frames. Before a command is handled,
//! every batch already broadcast is routed first: a reply therefore follows every frame of the
//! events published before the command arrived (tests use a `list_subscriptions` round trip as
//! a barrier).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{StatusCode, header};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Bytes, Message};

use super::auth::{AuthReject, KeyStore};
use super::faults::{Admission, ConnFaults, ConnStats, Control, ControlMsg, Fate, Registry, Slot};
use super::hub::{Batch, HubHandle};
use super::proto::{self, Shape};
use super::session::{self, Out, Session, SessionLimits, SnapshotKind};
use crate::market::truth::DeliveryItem;

/// The WebSocket path, as on Kalshi.
pub const WS_PATH: &str = "/trade-api/ws/v2";
/// Kalshi's ping interval (and payload): every 10 s, `heartbeat`.
pub const PING_INTERVAL_DEFAULT: Duration = Duration::from_secs(10);
/// The ping payload.
pub const PING_PAYLOAD: &[u8] = b"heartbeat";
/// Longest TLS + WebSocket handshake: a client that stalls mid-handshake holds a task and a
/// slot; 10 s is far beyond any loopback handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a write may block on a client that does not read. Meanwhile the hub's broadcast
/// fills (error 25 follows); past this the connection is dropped so a dead client cannot hold
/// a slot forever.
pub const WRITE_STALL_MAX: Duration = Duration::from_secs(30);
/// Delivery-log items a connection collects before handing them to the hub's truth file; it
/// also hands over whatever it has when it ends. Bounds the memory of a long connection.
pub const DELIVERY_CHUNK_ITEMS: usize = 65_536;
/// How long a stopping listener waits for its connections to close and hand over their
/// delivery logs (a close frame on loopback takes microseconds; a stuck client is abandoned).
pub const CONNECTIONS_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How often per-second random faults are rolled.
pub const FAULT_TICK: Duration = Duration::from_secs(1);

/// Everything a connection needs; shared by the listeners.
#[derive(Debug, Clone)]
pub struct WsContext {
    /// The exchange.
    pub hub: HubHandle,
    /// Live connections, admission and faults.
    pub registry: Arc<Registry>,
    /// Configured API keys.
    pub keys: Arc<KeyStore>,
    /// Refuse handshakes without valid signed headers.
    pub require_auth: bool,
    /// Server ping interval.
    pub ping_interval: Duration,
    /// Per-session limits.
    pub limits: SessionLimits,
    /// Field shapes.
    pub shape: Shape,
}

/// Accepts connections until `shutdown` turns true; `tls` = `wss`.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    ctx: Arc<WsContext>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let ctx = ctx.clone();
                let tls = tls.clone();
                let shutdown = shutdown.clone();
                conns.spawn(async move {
                    connection(stream, peer.to_string(), tls, ctx, shutdown).await;
                });
            }
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
        }
    }
    drop(listener);
    // Connections close (1001) and hand their delivery logs to the hub before it stops.
    let _ = tokio::time::timeout(CONNECTIONS_DRAIN_TIMEOUT, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
}

async fn connection(
    stream: TcpStream,
    peer: String,
    tls: Option<TlsAcceptor>,
    ctx: Arc<WsContext>,
    shutdown: watch::Receiver<bool>,
) {
    match tls {
        Some(acceptor) => {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(s)) => upgrade(s, peer, true, ctx, shutdown).await,
                Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        }
        None => upgrade(stream, peer, false, ctx, shutdown).await,
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A refused handshake: status and JSON body.
struct Refusal(StatusCode, String);

fn refuse(status: StatusCode, body: String) -> Refusal {
    Refusal(status, body)
}

fn error_response(Refusal(status, body): Refusal) -> ErrorResponse {
    let mut resp = ErrorResponse::new(Some(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    resp
}

fn error_body(code: &str, message: &str) -> String {
    serde_json::json!({"error": {"code": code, "message": message}}).to_string()
}

/// The handshake checks; on success the held slot and the key id.
fn admit(ctx: &Arc<WsContext>, req: &Request) -> Result<(Slot, Option<String>), Refusal> {
    if req.uri().path() != WS_PATH {
        return Err(refuse(
            StatusCode::NOT_FOUND,
            error_body("not_found", &format!("no WebSocket endpoint at {}", req.uri().path())),
        ));
    }
    let (admission, slot) = ctx.registry.admit();
    let slot = match (admission, slot) {
        (Admission::Admit, Some(slot)) => slot,
        (Admission::Outage, _) => {
            return Err(refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                error_body("service_unavailable", "exchange unavailable (simulated outage)"),
            ));
        }
        _ => {
            return Err(refuse(
                StatusCode::TOO_MANY_REQUESTS,
                error_body("too_many_connections", "connection limit reached"),
            ));
        }
    };
    if ctx.registry.reject_handshake() {
        return Err(refuse(StatusCode::UNAUTHORIZED, AuthReject::InjectedFault.body()));
    }
    if !ctx.require_auth {
        return Ok((slot, None));
    }
    let path = req.uri().path();
    match ctx.keys.verify(req.headers(), req.method().as_str(), path, unix_ms()) {
        Ok(key_id) => Ok((slot, Some(key_id.to_owned()))),
        Err(reject) => Err(refuse(StatusCode::UNAUTHORIZED, reject.body())),
    }
}

async fn upgrade<S>(
    stream: S,
    peer: String,
    tls: bool,
    ctx: Arc<WsContext>,
    shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut admitted = None;
    // The error type is tungstenite's (its `Callback` contract), large or not.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        let (slot, key_id) = admit(&ctx, req).map_err(error_response)?;
        admitted = Some((slot, key_id));
        Ok(resp)
    };
    let ws = match tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        tokio_tungstenite::accept_hdr_async(stream, callback),
    )
    .await
    {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            tracing::debug!(%peer, "WebSocket handshake refused or failed: {e}");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "WebSocket handshake timed out");
            return;
        }
    };
    let Some((slot, key_id)) = admitted else { return };
    let (conn, control, stats) = ctx.registry.register(tls, peer.clone(), key_id);
    tracing::debug!(conn, %peer, tls, "connection established");
    let driver = Driver {
        conn,
        faults: ConnFaults::new(ctx.registry.config(), conn),
        session: Session::new(ctx.limits),
        stats,
        silent_until: None,
        delivery: Vec::new(),
        started: Instant::now(),
        ctx: ctx.clone(),
    };
    driver.run(ws, control, shutdown).await;
    ctx.registry.unregister(conn);
    drop(slot);
}

/// How a connection ends.
enum End {
    /// Close frame with this code, then drop.
    Close(u16, &'static str),
    /// Drop TCP without a close frame (the client sees 1006).
    Drop,
    /// The client closed: send what is queued (the closing reply), then drop.
    Flush,
}

struct Driver {
    conn: u64,
    faults: ConnFaults,
    session: Session,
    stats: Arc<ConnStats>,
    silent_until: Option<Instant>,
    /// Delivery-log items not yet handed to the hub.
    delivery: Vec<DeliveryItem>,
    started: Instant,
    ctx: Arc<WsContext>,
}

type Sink<S> = futures_util::stream::SplitSink<WebSocketStream<S>, Message>;

fn bump(counter: &std::sync::atomic::AtomicU64) {
    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

impl Driver {
    async fn run<S>(
        mut self,
        ws: WebSocketStream<S>,
        mut control: mpsc::Receiver<ControlMsg>,
        mut shutdown: watch::Receiver<bool>,
    ) where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let (mut sink, mut stream) = ws.split();
        let mut events = self.ctx.hub.subscribe();
        let mut ping = tokio::time::interval_at(
            tokio::time::Instant::now() + self.ctx.ping_interval,
            self.ctx.ping_interval,
        );
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut fault_tick =
            tokio::time::interval_at(tokio::time::Instant::now() + FAULT_TICK, FAULT_TICK);
        let mut out = Vec::new();
        let mut acks = Vec::new();
        let end = loop {
            let step: Result<(), End> = tokio::select! {
                msg = stream.next() => match msg {
                    Some(Ok(Message::Text(text))) => {
                        bump(&self.stats.commands);
                        self.drain_events(&mut events, &mut out);
                        let now_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
                        self.session.on_command(&text, now_ms, &mut out);
                        self.publish_markets();
                        Ok(())
                    }
                    Some(Ok(Message::Binary(_))) => {
                        out.push(Out::Reply(proto::error(None, None, session::code::UNPROCESSABLE, "Unable to process binary message")));
                        Ok(())
                    }
                    // tungstenite queues the pong; the flush below sends it.
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => Ok(()),
                    // tungstenite queued the closing reply; the flush below sends it.
                    Some(Ok(Message::Close(_))) => Err(End::Flush),
                    None | Some(Err(_)) => Err(End::Drop),
                },
                batch = events.recv() => match batch {
                    Ok(batch) => {
                        self.session.on_batch(&batch, &mut out);
                        Ok(())
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        self.overflow(None, &mut out);
                        Ok(())
                    }
                    Err(broadcast::error::RecvError::Closed) => Err(End::Close(1001, "exchange stopped")),
                },
                _ = ping.tick() => {
                    if self.silent() {
                        Ok(())
                    } else {
                        bump(&self.stats.pings);
                        sink.feed(Message::Ping(Bytes::from_static(PING_PAYLOAD))).await.map_err(|_| End::Drop)
                    }
                }
                ctl = control.recv() => match ctl {
                    Some((c, ack)) => {
                        acks.push(ack);
                        self.act(c, &mut out)
                    }
                    None => Ok(()),
                },
                _ = fault_tick.tick() => match self.faults.second() {
                    Some(c) => self.act(c, &mut out),
                    None => Ok(()),
                },
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        Err(End::Close(1001, "simulator shutting down"))
                    } else {
                        Ok(())
                    }
                }
            };
            let written =
                tokio::time::timeout(WRITE_STALL_MAX, self.write_out(&mut sink, &mut out)).await;
            // Acknowledged once what the fault produced (error 25, ...) is written; a closing
            // fault is acknowledged after the close below.
            if step.is_ok() {
                for ack in acks.drain(..) {
                    let _ = ack.send(());
                }
            }
            match (step, written) {
                (Ok(()), Ok(Ok(()))) => {}
                (Err(end), _) => break end,
                (_, Ok(Err(end))) => break end,
                (_, Err(_)) => break End::Drop,
            }
        };
        match end {
            End::Close(code, reason) => {
                let frame = CloseFrame { code: CloseCode::from(code), reason: reason.into() };
                let close = sink.send(Message::Close(Some(frame)));
                let _ = tokio::time::timeout(HANDSHAKE_TIMEOUT, close).await;
            }
            End::Flush => {
                let _ = tokio::time::timeout(HANDSHAKE_TIMEOUT, sink.flush()).await;
            }
            End::Drop => {}
        }
        let log = std::mem::take(&mut self.delivery);
        let _ = self.ctx.hub.deliver(self.conn, log).await;
        for ack in acks {
            let _ = ack.send(());
        }
        tracing::debug!(conn = self.conn, "connection ended");
    }

    fn silent(&mut self) -> bool {
        match self.silent_until {
            Some(until) if Instant::now() < until => true,
            Some(_) => {
                self.silent_until = None;
                false
            }
            None => false,
        }
    }

    /// Routes every batch already broadcast, so a reply follows the events published before
    /// its command arrived.
    fn drain_events(&mut self, events: &mut broadcast::Receiver<Batch>, out: &mut Vec<Out>) {
        loop {
            match events.try_recv() {
                Ok(batch) => self.session.on_batch(&batch, out),
                Err(broadcast::error::TryRecvError::Lagged(_)) => self.overflow(None, out),
                Err(_) => break,
            }
        }
    }

    fn overflow(&mut self, sid: Option<u64>, out: &mut Vec<Out>) {
        if self.session.overflow(sid, out) {
            bump(&self.stats.overflows);
            self.publish_markets();
        }
    }

    /// Publishes the subscriptions' market lists (after a command or an overflow changed them).
    fn publish_markets(&self) {
        *self.stats.markets.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
            self.session.market_lists();
    }

    fn act(&mut self, control: Control, out: &mut Vec<Out>) -> Result<(), End> {
        match control {
            Control::Close(1006) => Err(End::Drop),
            Control::Close(code) => Err(End::Close(code, "")),
            Control::Silence(d) => {
                self.silent_until = Some(Instant::now() + d);
                Ok(())
            }
            Control::DropNext(_) | Control::DupNext(_) => {
                self.faults.force(control);
                Ok(())
            }
            Control::Overflow(sid) => {
                self.overflow(sid, out);
                Ok(())
            }
        }
    }

    /// Hands a full chunk of the delivery log (exactly [`DELIVERY_CHUNK_ITEMS`] items) to the
    /// hub. Called after each data frame, so where the log is cut depends only on what was
    /// delivered (not on how many batches one pass routed), and the chunk is queued at the hub
    /// before any later reply reaches the client: a reproduced run writes a byte-identical truth
    /// file.
    async fn hand_off_delivery(&mut self) -> Result<(), End> {
        if self.delivery.len() < DELIVERY_CHUNK_ITEMS {
            return Ok(());
        }
        let rest = self.delivery.split_off(DELIVERY_CHUNK_ITEMS);
        let log = std::mem::replace(&mut self.delivery, rest);
        self.ctx.hub.deliver(self.conn, log).await.map_err(|_| End::Close(1011, "exchange stopped"))
    }

    /// Writes what the session produced: replies as they are, data frames through the frame
    /// faults, snapshots fetched from the hub first. One flush at the end.
    async fn write_out<S>(&mut self, sink: &mut Sink<S>, out: &mut Vec<Out>) -> Result<(), End>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut i = 0;
        while i < out.len() {
            let item = std::mem::replace(&mut out[i], Out::Reply(String::new()));
            i += 1;
            match item {
                Out::Snapshot(req) => {
                    let shape = self.ctx.shape;
                    let snap = match req.kind {
                        SnapshotKind::Book => {
                            self.ctx.hub.book_snapshot(req.tickers.clone(), shape).await
                        }
                        SnapshotKind::Ticker => {
                            self.ctx.hub.ticker_snapshot(req.tickers.clone(), shape).await
                        }
                    }
                    .map_err(|_| End::Close(1011, "exchange stopped"))?;
                    let mut frames = Vec::new();
                    self.session.apply_snapshot(&req, &snap, &mut frames);
                    // Snapshot frames go out before anything queued after the request.
                    let rest = out.split_off(i);
                    out.extend(frames);
                    out.extend(rest);
                }
                Out::Reply(text) => {
                    if self.silent() {
                        bump(&self.stats.frames_silenced);
                    } else {
                        sink.feed(Message::text(text)).await.map_err(|_| End::Drop)?;
                    }
                }
                Out::Data(frame) => {
                    let gap = frame.exch_seq.map(|s| DeliveryItem::Gap { first: s, last: s });
                    if self.silent() {
                        bump(&self.stats.frames_silenced);
                        self.delivery.extend(gap);
                        self.hand_off_delivery().await?;
                        continue;
                    }
                    let copies = match self.faults.frame_fate() {
                        Fate::Send => {
                            self.delivery.extend(frame.exch_seq.map(DeliveryItem::Delivered));
                            1
                        }
                        Fate::Drop => {
                            bump(&self.stats.frames_dropped);
                            self.delivery.extend(gap);
                            0
                        }
                        Fate::Duplicate => {
                            bump(&self.stats.frames_duplicated);
                            if let Some(s) = frame.exch_seq {
                                self.delivery.push(DeliveryItem::Delivered(s));
                                self.delivery.push(DeliveryItem::Duplicate(s));
                            }
                            2
                        }
                    };
                    for _ in 0..copies {
                        bump(&self.stats.frames_sent);
                        sink.feed(Message::text(frame.text.clone()))
                            .await
                            .map_err(|_| End::Drop)?;
                    }
                    self.hand_off_delivery().await?;
                }
            }
        }
        let changed = !out.is_empty();
        out.clear();
        if changed {
            *self.stats.subscriptions.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                self.session.summary();
        }
        sink.flush().await.map_err(|_| End::Drop)
    }
}
