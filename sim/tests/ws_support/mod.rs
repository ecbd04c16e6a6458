//! Test support for the WebSocket tests: start a simulator on loopback with a manual clock,
//! connect to it over real TLS WebSocket with headers signed by kdp's own `Signer`, speak to it
//! with kdp's own command encoder and frame parser, and drive the control endpoint with a
//! minimal HTTP/1.1 client. Every wait is bounded by [`WAIT`] and fails with a message.

#![allow(dead_code, clippy::unwrap_used, clippy::print_stdout)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt as _, StreamExt as _};
use kdp_engine::event::{Event, Side};
use kdp_ingest::auth::Signer;
use kdp_ingest::wire::{Command, FrameParser, Message as WireMessage, encode_command};
use kdp_sim::market::MarketConfig;
use kdp_sim::market::model::MarketStatus;
use kdp_sim::transport::auth::generate_demo_key;
use kdp_sim::transport::hub::Clock;
use kdp_sim::transport::{SimConfig, SimHandle, Simulator, tls};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};

/// Longest any single wait may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(20);
/// The WebSocket path.
pub const PATH: &str = "/trade-api/ws/v2";
/// The key id the default Ed25519 key is registered under.
pub const KEY_ID: &str = "test-key-ed25519";

/// A running simulator, its temp dir and the Ed25519 signer it accepts.
pub struct Sim {
    pub handle: SimHandle,
    pub dir: tempfile::TempDir,
    pub signer: Arc<Signer>,
}

/// A small catalog (so every market sees events) with a manual clock, auth required.
pub fn config(seed: u64, dir: &Path) -> SimConfig {
    let market = MarketConfig { seed, markets: 24, ..MarketConfig::default() };
    let mut cfg = SimConfig::new(market, dir.join("sim.pem"));
    cfg.clock = Clock::Manual;
    cfg.rest_addr = None;
    cfg
}

/// Starts a simulator; `tweak` adjusts the config (the Ed25519 test key is already added).
pub async fn start(seed: u64, tweak: impl FnOnce(&mut SimConfig)) -> Sim {
    println!("simulator seed {seed}");
    let dir = tempfile::tempdir().unwrap();
    let demo = generate_demo_key().unwrap();
    let mut cfg = config(seed, dir.path());
    cfg.keys.insert_pem(KEY_ID, &demo.public_spki_pem).unwrap();
    tweak(&mut cfg);
    let handle = Simulator::start(cfg).await.unwrap();
    let signer = Arc::new(Signer::from_pem(KEY_ID, &demo.private_pkcs8_pem).unwrap());
    Sim { handle, dir, signer }
}

pub fn now_ms() -> u64 {
    u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap()
}

/// Bounds a future by [`WAIT`], failing with `what`.
pub async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

/// The outcome of a handshake attempt.
pub enum Handshake {
    Connected(Client),
    /// Refused with an HTTP status and body.
    Refused(u16, String),
}

/// How to sign the upgrade request.
#[derive(Clone)]
pub enum Headers {
    /// Signed now with this signer over the WebSocket path.
    Signed(Arc<Signer>),
    /// Signed with this signer at this timestamp.
    SignedAt(Arc<Signer>, u64),
    /// Exactly these three values.
    Raw(String, String, String),
    /// No auth headers.
    None,
}

/// Opens a `wss` connection to the simulator, trusting only its certificate.
pub async fn connect_wss(sim: &SimHandle, headers: Headers) -> Handshake {
    connect_wss_at(sim, PATH, headers).await
}

/// Opens a `wss` connection to `path`.
pub async fn connect_wss_at(sim: &SimHandle, path: &str, headers: Headers) -> Handshake {
    let addr = sim.wss_addr().unwrap();
    let config = tls::client_config_from_pem_file(sim.cert_pem_path()).unwrap();
    let tcp = within("TCP connect", TcpStream::connect(addr)).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = within("TLS handshake", tokio_rustls::TlsConnector::from(config).connect(name, tcp))
        .await
        .unwrap();
    handshake(tls, &format!("wss://localhost:{}{path}", addr.port()), headers).await
}

/// Opens a plain `ws` connection.
pub async fn connect_ws(sim: &SimHandle, headers: Headers) -> Handshake {
    let addr = sim.ws_addr().unwrap();
    let tcp = within("TCP connect", TcpStream::connect(addr)).await.unwrap();
    handshake(tcp, &format!("ws://{addr}{PATH}"), headers).await
}

async fn handshake<S>(stream: S, url: &str, headers: Headers) -> Handshake
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut req = url.into_client_request().unwrap();
    let pairs: Vec<(&'static str, String)> = match headers {
        Headers::Signed(s) => signed(&s, now_ms()),
        Headers::SignedAt(s, ts) => signed(&s, ts),
        Headers::Raw(k, t, sig) => vec![
            ("KALSHI-ACCESS-KEY", k),
            ("KALSHI-ACCESS-TIMESTAMP", t),
            ("KALSHI-ACCESS-SIGNATURE", sig),
        ],
        Headers::None => vec![],
    };
    for (name, value) in pairs {
        req.headers_mut().insert(name, HeaderValue::from_str(&value).unwrap());
    }
    match within("WebSocket handshake", tokio_tungstenite::client_async(req, stream)).await {
        Ok((ws, _)) => Handshake::Connected(Client::new(Box::new(ws))),
        Err(tungstenite::Error::Http(resp)) => {
            let body = resp.body().as_ref().map(|b| String::from_utf8_lossy(b).into_owned());
            Handshake::Refused(resp.status().as_u16(), body.unwrap_or_default())
        }
        Err(e) => panic!("handshake failed without an HTTP answer: {e}"),
    }
}

fn signed(s: &Signer, ts: u64) -> Vec<(&'static str, String)> {
    let h = s.headers("GET", PATH, ts).unwrap();
    h.pairs().into_iter().map(|(k, v)| (k, v.to_owned())).collect()
}

/// Opens a plain `ws` connection, signed with the simulator's key, whose socket receive buffer
/// is asked to be `rcvbuf_bytes` (the kernel rounds it): a client that stops reading then
/// backs the server's writes up after little data.
pub async fn client_small_rcvbuf(sim: &Sim, rcvbuf_bytes: u32) -> Client {
    let addr = sim.handle.ws_addr().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(rcvbuf_bytes).unwrap();
    let tcp = within("TCP connect", socket.connect(addr)).await.unwrap();
    match handshake(tcp, &format!("ws://{addr}{PATH}"), Headers::Signed(sim.signer.clone())).await {
        Handshake::Connected(c) => c,
        Handshake::Refused(status, body) => panic!("handshake refused: {status} {body}"),
    }
}

/// Connects over wss with the simulator's accepted key; panics if refused.
pub async fn client(sim: &Sim) -> Client {
    match connect_wss(&sim.handle, Headers::Signed(sim.signer.clone())).await {
        Handshake::Connected(c) => c,
        Handshake::Refused(status, body) => panic!("handshake refused: {status} {body}"),
    }
}

/// A parsed server frame, owned, with what the tests look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Subscribed { channel: String, sid: u64 },
    Ok { tickers: Option<Vec<String>>, subs: Option<Vec<(String, u64)>> },
    Unsubscribed,
    Error { code: u32, message: String },
    Snapshot { market: String, yes: Vec<(u32, i64)>, no: Vec<(u32, i64)> },
    Delta { market: String, side: Side, price: u32, delta: i64, ts_ns: i64 },
    Trade { market: String, trade_id: String },
    Ticker { market: String },
    Lifecycle { market: String },
    EventLifecycle,
    Unknown(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub id: Option<u64>,
    pub sid: Option<u64>,
    pub seq: Option<u64>,
    pub kind: Kind,
    pub text: String,
}

impl Frame {
    pub fn market(&self) -> Option<&str> {
        match &self.kind {
            Kind::Snapshot { market, .. }
            | Kind::Delta { market, .. }
            | Kind::Trade { market, .. }
            | Kind::Ticker { market }
            | Kind::Lifecycle { market } => Some(market),
            _ => None,
        }
    }
}

/// Anything the socket yields.
#[derive(Debug)]
pub enum Item {
    Frame(Frame),
    Ping(Vec<u8>),
    /// A close frame with its code.
    Close(Option<u16>),
    /// The connection ended without a close frame (TCP dropped: 1006).
    Abrupt(String),
}

trait Socket:
    futures_util::Stream<Item = Result<Message, tungstenite::Error>>
    + futures_util::Sink<Message, Error = tungstenite::Error>
    + Unpin
    + Send
{
}
impl<T> Socket for T where
    T: futures_util::Stream<Item = Result<Message, tungstenite::Error>>
        + futures_util::Sink<Message, Error = tungstenite::Error>
        + Unpin
        + Send
{
}

/// A WebSocket client speaking kdp's own command encoder and frame parser.
pub struct Client {
    ws: Box<dyn Socket>,
    parser: FrameParser,
    next_id: u64,
}

impl Client {
    fn new(ws: Box<dyn Socket>) -> Self {
        Self { ws, parser: FrameParser::new(), next_id: 1 }
    }

    /// A fresh command id.
    pub fn id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    pub async fn send(&mut self, cmd: &Command<'_>) {
        let mut out = Vec::new();
        encode_command(cmd, &mut out);
        self.send_text(String::from_utf8(out).unwrap()).await;
    }

    pub async fn send_text(&mut self, text: String) {
        within("send", self.ws.send(Message::text(text))).await.unwrap();
    }

    /// Sends a close frame and reads until the server's closing reply (or the end).
    pub async fn send_close(&mut self) {
        within("close", self.ws.send(Message::Close(None))).await.unwrap();
        loop {
            match self.item().await {
                Item::Close(_) | Item::Abrupt(_) => return,
                _ => continue,
            }
        }
    }

    /// The next item (frame, ping, close), bounded by [`WAIT`].
    pub async fn item(&mut self) -> Item {
        loop {
            let msg = within("a server frame", self.ws.next()).await;
            return match msg {
                Some(Ok(Message::Text(t))) => Item::Frame(self.parse(&t)),
                Some(Ok(Message::Ping(p))) => Item::Ping(p.to_vec()),
                Some(Ok(Message::Close(c))) => Item::Close(c.map(|c| u16::from(c.code))),
                Some(Ok(_)) => continue,
                Some(Err(e)) => Item::Abrupt(e.to_string()),
                None => Item::Abrupt("stream ended".into()),
            };
        }
    }

    /// The next text frame (pings skipped); panics on close.
    pub async fn frame(&mut self) -> Frame {
        loop {
            match self.item().await {
                Item::Frame(f) => return f,
                Item::Ping(_) => continue,
                other => panic!("expected a frame, got {other:?}"),
            }
        }
    }

    /// Frames until (and including) the reply with command id `id`; the reply is last.
    pub async fn until_reply(&mut self, id: u64) -> Vec<Frame> {
        let mut frames = Vec::new();
        loop {
            let f = self.frame().await;
            let done = f.id == Some(id) && !matches!(f.kind, Kind::Snapshot { .. });
            frames.push(f);
            if done {
                return frames;
            }
        }
    }

    /// Sends `list_subscriptions` and returns every frame before its reply: since the session
    /// routes every already-published event before handling a command, these are all the
    /// frames of the events published so far.
    pub async fn barrier(&mut self) -> Vec<Frame> {
        let id = self.id();
        self.send(&Command::ListSubscriptions { id }).await;
        let mut frames = self.until_reply(id).await;
        let reply = frames.pop().unwrap();
        assert!(matches!(reply.kind, Kind::Ok { .. }), "barrier reply: {}", reply.text);
        frames
    }

    fn parse(&mut self, text: &str) -> Frame {
        let f = self
            .parser
            .parse(text.as_bytes())
            .unwrap_or_else(|e| panic!("kdp's parser refused a simulator frame ({e}): {text}"));
        let kind = match f.message {
            WireMessage::Subscribed { channel, sid } => {
                Kind::Subscribed { channel: channel.to_owned(), sid }
            }
            WireMessage::Ok(ok) => Kind::Ok {
                tickers: ok.market_tickers.map(|t| t.iter().map(|s| (*s).to_owned()).collect()),
                subs: ok
                    .subscriptions
                    .map(|s| s.iter().map(|s| (s.channel.to_owned(), s.sid)).collect()),
            },
            WireMessage::Unsubscribed => Kind::Unsubscribed,
            WireMessage::Error { code, message, .. } => {
                Kind::Error { code, message: message.to_owned() }
            }
            WireMessage::Event(Event::Snapshot(s)) => Kind::Snapshot {
                market: s.market.to_owned(),
                yes: s.yes.iter().map(|l| (l.price_micros, l.size_centi)).collect(),
                no: s.no.iter().map(|l| (l.price_micros, l.size_centi)).collect(),
            },
            WireMessage::Event(Event::Delta(d)) => Kind::Delta {
                market: d.market.to_owned(),
                side: d.side,
                price: d.price_micros,
                delta: d.delta_centi,
                ts_ns: d.ts_exch_ns,
            },
            WireMessage::Event(Event::Trade(t)) => {
                Kind::Trade { market: t.market.to_owned(), trade_id: t.trade_id.to_owned() }
            }
            WireMessage::Event(Event::Ticker(t)) => Kind::Ticker { market: t.market.to_owned() },
            WireMessage::Event(Event::MarketLifecycle(l)) => {
                Kind::Lifecycle { market: l.market.to_owned() }
            }
            WireMessage::Event(Event::EventLifecycle(_)) => Kind::EventLifecycle,
            WireMessage::Unknown { type_name } => Kind::Unknown(type_name.to_owned()),
        };
        let e = f.envelope;
        Frame { id: e.id, sid: e.sid, seq: e.seq, kind, text: text.to_owned() }
    }
}

/// A book as a client keeps it: price → size per side.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Book {
    pub yes: BTreeMap<u32, i64>,
    pub no: BTreeMap<u32, i64>,
}

impl Book {
    pub fn from_levels(yes: &[(u32, i64)], no: &[(u32, i64)]) -> Self {
        Self { yes: yes.iter().copied().collect(), no: no.iter().copied().collect() }
    }

    pub fn apply(&mut self, side: Side, price: u32, delta: i64) {
        let ladder = match side {
            Side::Yes => &mut self.yes,
            Side::No => &mut self.no,
        };
        let size = ladder.entry(price).or_insert(0);
        *size += delta;
        if *size <= 0 {
            ladder.remove(&price);
        }
    }

    pub fn from_engine(b: &kdp_sim::market::model::BookLevels) -> Self {
        Self {
            yes: b.yes.iter().map(|l| (l.price_micros, l.size_centi)).collect(),
            no: b.no.iter().map(|l| (l.price_micros, l.size_centi)).collect(),
        }
    }
}

/// Tickers of the `n` markets with the most resting levels among active ones (they trade).
pub async fn busy_markets(sim: &SimHandle, n: usize) -> Vec<String> {
    sim.hub()
        .query(move |ex| {
            let mut ms: Vec<(usize, String)> = (0..)
                .zip(ex.markets())
                .filter(|(_, m)| m.status == MarketStatus::Active)
                .map(|(id, m)| {
                    let b = ex.book(id, None);
                    (b.yes.len() + b.no.len(), m.ticker.clone())
                })
                .collect();
            ms.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
            ms.into_iter().take(n).map(|(_, t)| t).collect()
        })
        .await
        .unwrap()
}

/// One HTTP/1.1 request to the control endpoint; returns status and body.
pub async fn control(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    within("control endpoint", async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).await.unwrap();
        let text = String::from_utf8(resp).unwrap();
        let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
        (status, body)
    })
    .await
}

/// POSTs to the control endpoint and expects 200.
pub async fn fault(sim: &SimHandle, path: &str, body: &str) {
    let (status, resp) = control(sim.control_addr().unwrap(), "POST", path, body).await;
    assert_eq!(status, 200, "POST {path} {body} answered {status}: {resp}");
}
