//! The simulator's network side: TLS, signed-handshake verification, the hub that runs the
//! exchange, WebSocket sessions, fault injection and its control endpoint, and the REST server.
//!
//! [`Simulator::start`] wires them together on the caller's tokio runtime:
//!
//! ```text
//!   Exchange ──► hub (pacing, encoding) ──broadcast──► ws/wss connections (session, faults)
//!                  ▲  requests (snapshots, queries)          ▲ control endpoint (faults)
//!                  └──────────── REST server ◄───────────────┘
//! ```
//!
//! - [`tls`]: self-signed certificate and rustls configurations.
//! - [`auth`]: the simulator's own `KALSHI-ACCESS-*` verifier; demo key generation.
//! - [`hub`]: the exchange task, its broadcast and its request handle.
//! - [`proto`]: the simulator's own frame encoding.
//! - [`session`]: one connection's protocol state (subscriptions, sids, seq, commands).
//! - [`ws`]: listeners, handshake admission, the per-connection driver.
//! - [`faults`]: seeded per-connection faults and the connection registry.
//! - [`control`]: the HTTP/JSON fault-control endpoint.
//! - [`rest`]: Kalshi's REST market-data endpoints.

pub mod auth;
pub mod control;
pub mod faults;
pub mod hub;
pub mod proto;
pub mod rest;
pub mod session;
pub mod tls;
pub mod ws;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::market::truth::{TruthHeader, TruthWriter};
use crate::market::{ConfigError, Exchange, MarketConfig};
use auth::KeyStore;
use faults::{FaultConfig, Registry};
use hub::{Clock, HubConfig, HubHandle};
use proto::Shape;
use rest::{RestConfig, RestFaults};
use session::SessionLimits;
use ws::WsContext;

/// Kalshi's default connections per user (2025-09 tier default).
pub const CONNECTIONS_MAX_DEFAULT: usize = 200;
/// How long [`SimHandle::shutdown`] waits for each task to finish after the signal.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

fn loopback_any_port() -> Option<SocketAddr> {
    Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
}

/// Everything the simulator needs to start.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The seeded market.
    pub market: MarketConfig,
    /// Virtual clock (real time × speed, or manual).
    pub clock: Clock,
    /// Field shapes of WebSocket messages.
    pub shape: Shape,
    /// Plain `ws` listener (loopback; port 0 = any); `None` = no listener.
    pub ws_addr: Option<SocketAddr>,
    /// TLS `wss` listener (loopback; port 0 = any); `None` = no listener.
    pub wss_addr: Option<SocketAddr>,
    /// REST listener (loopback; port 0 = any); `None` = no REST server.
    pub rest_addr: Option<SocketAddr>,
    /// Fault-control listener (loopback; port 0 = any); `None` = no control endpoint.
    pub control_addr: Option<SocketAddr>,
    /// Where the self-signed certificate is written (PEM) for clients to trust.
    pub cert_pem_path: PathBuf,
    /// API keys accepted in the WebSocket handshake.
    pub keys: KeyStore,
    /// Refuse WebSocket handshakes without valid signed headers (Kalshi's current rule).
    pub require_auth: bool,
    /// Connections open at once (429 beyond).
    pub connections_max: usize,
    /// Per-session limits (markets per subscription, commands per second).
    pub session: SessionLimits,
    /// Server ping interval (Kalshi: 10 s).
    pub ping_interval: Duration,
    /// Random faults and their seed.
    pub faults: FaultConfig,
    /// Event batches the hub's broadcast holds for the slowest connection; one further behind
    /// gets error 25 (subscriptions dropped). Default [`hub::HUB_BROADCAST_BATCHES_MAX`].
    pub broadcast_batches_max: usize,
    /// REST server settings.
    pub rest: RestConfig,
    /// Ground-truth file: every exchange event and each connection's delivery log; `None` =
    /// no truth recorded.
    pub truth_path: Option<PathBuf>,
}

impl SimConfig {
    /// Defaults around `market`: every listener on loopback with a free port, real time,
    /// authentication required (add keys to `keys`), Kalshi's limits and ping interval, no
    /// faults, the certificate written to `cert_pem_path`.
    pub fn new(market: MarketConfig, cert_pem_path: impl Into<PathBuf>) -> Self {
        Self {
            market,
            clock: Clock::default(),
            shape: Shape::default(),
            ws_addr: loopback_any_port(),
            wss_addr: loopback_any_port(),
            rest_addr: loopback_any_port(),
            control_addr: loopback_any_port(),
            cert_pem_path: cert_pem_path.into(),
            keys: KeyStore::new(),
            require_auth: true,
            connections_max: CONNECTIONS_MAX_DEFAULT,
            session: SessionLimits::default(),
            ping_interval: ws::PING_INTERVAL_DEFAULT,
            faults: FaultConfig::default(),
            broadcast_batches_max: hub::HUB_BROADCAST_BATCHES_MAX,
            rest: RestConfig::default(),
            truth_path: None,
        }
    }
}

/// Why the simulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The market configuration is invalid.
    #[error("market configuration: {0}")]
    Market(#[from] ConfigError),
    /// TLS material could not be made or written.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// A listener address is not loopback: the simulator never listens beyond this host.
    #[error(
        "{what} address {addr} is not a loopback address; the simulator listens on loopback only"
    )]
    NotLoopback {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
    },
    /// A listener could not bind.
    #[error("cannot listen for {what} on {addr}: {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The truth file could not be created.
    #[error("cannot create the truth file {path}: {source}")]
    Truth {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A zero limit or interval.
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
}

/// A running simulator.
#[derive(Debug)]
pub struct SimHandle {
    ws_addr: Option<SocketAddr>,
    wss_addr: Option<SocketAddr>,
    rest_addr: Option<SocketAddr>,
    control_addr: Option<SocketAddr>,
    cert_pem_path: PathBuf,
    hub: HubHandle,
    registry: Arc<Registry>,
    rest_faults: RestFaults,
    shutdown: watch::Sender<bool>,
    hub_shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    hub_task: JoinHandle<()>,
}

/// The simulator entry point.
#[derive(Debug)]
pub struct Simulator;

async fn bind(what: &'static str, addr: SocketAddr) -> Result<(TcpListener, SocketAddr), SimError> {
    if !addr.ip().is_loopback() {
        return Err(SimError::NotLoopback { what, addr });
    }
    let bind_err = |source| SimError::Bind { what, addr, source };
    let listener = TcpListener::bind(addr).await.map_err(bind_err)?;
    let local = listener.local_addr().map_err(bind_err)?;
    Ok((listener, local))
}

async fn bind_opt(
    what: &'static str,
    addr: Option<SocketAddr>,
) -> Result<Option<(TcpListener, SocketAddr)>, SimError> {
    match addr {
        Some(addr) => bind(what, addr).await.map(Some),
        None => Ok(None),
    }
}

fn serve_http(
    listener: TcpListener,
    router: axum::Router,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let stop = async move {
            while !*shutdown.borrow() {
                if shutdown.changed().await.is_err() {
                    break;
                }
            }
        };
        if let Err(e) = axum::serve(listener, router).with_graceful_shutdown(stop).await {
            tracing::warn!("simulator HTTP server stopped: {e}");
        }
    })
}

impl Simulator {
    /// Starts the hub, the listeners, the REST server and the control endpoint on the current
    /// tokio runtime. Every listener is bound before this returns.
    pub async fn start(cfg: SimConfig) -> Result<SimHandle, SimError> {
        if cfg.connections_max == 0 {
            return Err(SimError::Zero("connections_max"));
        }
        if cfg.broadcast_batches_max == 0 {
            return Err(SimError::Zero("broadcast_batches_max"));
        }
        if cfg.ping_interval.is_zero() {
            return Err(SimError::Zero("ping_interval"));
        }
        if cfg.session.commands_per_s_max == 0 || cfg.session.markets_per_subscription_max == 0 {
            return Err(SimError::Zero("session limits"));
        }
        let exchange = Exchange::try_new(cfg.market.clone())?;
        let truth = match &cfg.truth_path {
            Some(path) => {
                let err = |source| SimError::Truth { path: path.clone(), source };
                let file = std::fs::File::create(path).map_err(err)?;
                let header = TruthHeader::for_config(&cfg.market);
                Some(TruthWriter::new(std::io::BufWriter::new(file), &header).map_err(err)?)
            }
            None => None,
        };
        let cert = tls::SimCert::generate()?;
        cert.write_pem(&cfg.cert_pem_path)?;
        let server_tls = cert.server_config()?;

        let ws = bind_opt("ws", cfg.ws_addr).await?;
        let wss = bind_opt("wss", cfg.wss_addr).await?;
        let rest = bind_opt("REST", cfg.rest_addr).await?;
        let control = bind_opt("control", cfg.control_addr).await?;

        // Inputs (listeners, connections, HTTP) stop first; the hub last, so delivery logs of
        // closing connections still reach the truth file.
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (hub_shutdown, hub_shutdown_rx) = watch::channel(false);
        let (hub, hub_task) = hub::spawn(
            exchange,
            HubConfig {
                clock: cfg.clock,
                shape: cfg.shape,
                broadcast_batches_max: cfg.broadcast_batches_max,
            },
            truth,
            hub_shutdown_rx,
        );
        let rest_faults = RestFaults::new();
        let registry = Registry::new(cfg.faults, cfg.connections_max, rest_faults.clone());
        let ctx = Arc::new(WsContext {
            hub: hub.clone(),
            registry: registry.clone(),
            keys: Arc::new(cfg.keys),
            require_auth: cfg.require_auth,
            ping_interval: cfg.ping_interval,
            limits: cfg.session,
            shape: cfg.shape,
        });
        let mut tasks = Vec::new();
        let mut addr_of = |bound: Option<(TcpListener, SocketAddr)>,
                           tls: Option<tokio_rustls::TlsAcceptor>| {
            bound.map(|(listener, addr)| {
                tasks.push(tokio::spawn(ws::serve(
                    listener,
                    tls,
                    ctx.clone(),
                    shutdown_rx.clone(),
                )));
                addr
            })
        };
        let ws_addr = addr_of(ws, None);
        let wss_addr = addr_of(wss, Some(tokio_rustls::TlsAcceptor::from(server_tls)));
        let rest_addr = rest.map(|(listener, addr)| {
            let router = rest::router(hub.clone(), cfg.rest.clone(), rest_faults.clone());
            tasks.push(serve_http(listener, router, shutdown_rx.clone()));
            addr
        });
        let control_addr = control.map(|(listener, addr)| {
            let router = control::router(registry.clone(), hub.clone(), rest_faults.clone());
            tasks.push(serve_http(listener, router, shutdown_rx.clone()));
            addr
        });
        if cfg.faults.outage_ppm_per_s > 0 {
            let registry = registry.clone();
            let mut stop = shutdown_rx.clone();
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(ws::FAULT_TICK);
                loop {
                    tokio::select! {
                        _ = tick.tick() => registry.outage_second().await,
                        _ = stop.changed() => break,
                    }
                }
            }));
        }
        Ok(SimHandle {
            ws_addr,
            wss_addr,
            rest_addr,
            control_addr,
            cert_pem_path: cfg.cert_pem_path,
            hub,
            registry,
            rest_faults,
            shutdown,
            hub_shutdown,
            tasks,
            hub_task,
        })
    }
}

impl SimHandle {
    /// Bound `ws` address.
    pub fn ws_addr(&self) -> Option<SocketAddr> {
        self.ws_addr
    }

    /// Bound `wss` address.
    pub fn wss_addr(&self) -> Option<SocketAddr> {
        self.wss_addr
    }

    /// Bound REST address.
    pub fn rest_addr(&self) -> Option<SocketAddr> {
        self.rest_addr
    }

    /// Bound control-endpoint address.
    pub fn control_addr(&self) -> Option<SocketAddr> {
        self.control_addr
    }

    /// The PEM certificate clients must trust for `wss`.
    pub fn cert_pem_path(&self) -> &Path {
        &self.cert_pem_path
    }

    /// `ws://127.0.0.1:PORT/trade-api/ws/v2`.
    pub fn ws_url(&self) -> Option<String> {
        self.ws_addr.map(|a| format!("ws://{a}{}", ws::WS_PATH))
    }

    /// `wss://localhost:PORT/trade-api/ws/v2` (the certificate names `localhost`).
    pub fn wss_url(&self) -> Option<String> {
        self.wss_addr.map(|a| format!("wss://localhost:{}{}", a.port(), ws::WS_PATH))
    }

    /// `http://127.0.0.1:PORT/trade-api/v2`.
    pub fn rest_url(&self) -> Option<String> {
        self.rest_addr.map(|a| format!("http://{a}{}", rest::API_PREFIX))
    }

    /// The hub: queries on the exchange, manual clock steps, the event broadcast.
    pub fn hub(&self) -> &HubHandle {
        &self.hub
    }

    /// Live connections and fault triggers (what the control endpoint drives).
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// REST fault switches.
    pub fn rest_faults(&self) -> &RestFaults {
        &self.rest_faults
    }

    /// Ordered stop: listeners and HTTP servers stop, connections close (1001) and hand over
    /// their delivery logs, then the hub stops and finishes the truth file. Each wait is
    /// bounded by [`SHUTDOWN_TIMEOUT`].
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = tokio::time::timeout(SHUTDOWN_TIMEOUT, task).await;
        }
        let _ = self.hub_shutdown.send(true);
        let _ = tokio::time::timeout(SHUTDOWN_TIMEOUT, self.hub_task).await;
    }
}
