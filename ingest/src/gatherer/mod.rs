//! The gatherer: shards that read Kalshi over WebSocket, one writer that stores what they read.
//!
//! [`Gatherer::start`] checks the configuration, loads the key, starts the writer thread (which
//! applies the gatherer migrations) and one thread per shard; [`GathererHandle::shutdown`]
//! stops in order — shards stop reading (sessions cancelled at an await point, so every record
//! already handed over is on a ring), the writer drains the rings, flushes and commits, every
//! thread is joined — and returns the final stats.
//!
//! Connections are numbered 1, 2, ... in shard order, then in market order within a shard
//! (`conn_id` in every stored row); each connection carries at most `markets_per_connection`
//! markets, and its session splits them into `subscribe` batches of `markets_per_subscription`.
//!
//! Markets are dynamic: with `rest_url` set, a registry thread ([`driver`]) discovers markets
//! over REST, follows `market_lifecycle_v2` (a session on shard 0), reconciles periodically
//! and sends add/remove commands to the shards through bounded control channels; the same
//! thread runs the REST snapshot poller on the same token bucket. Without `rest_url` the
//! configured `markets` are captured as a fixed list.
//!
//! Telemetry ([`telemetry`]): each shard and the writer own a recorder; the HTTP server
//! (`/metrics`, `/health` on `metrics_addr`) starts with the gatherer and stops at shutdown,
//! after the final publications; with `histogram_log` it also appends the latency histograms
//! to an HdrHistogram interval log every second, and a last interval when it stops.

pub mod config;
pub mod driver;
pub mod shard;
pub mod telemetry;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use futures_rustls::rustls;
use kdp_engine::telemetry::Telemetry;
use kdp_engine::telemetry::http::HttpServer;
use kdp_engine::telemetry::interval_log::{IntervalLog, IntervalLogConfig};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;

pub use config::{
    Checked, ConfigError, GathererConfig, METRICS_ADDR_DEFAULT, METRICS_OFF, RestSettings,
    ShardLayout, WsUrl,
};
pub use driver::RegistryStats;
pub use shard::{SHARD_CONTROL_CAPACITY, ShardCommand, ShardStats, shard_of};

use crate::auth::{AuthError, Signer};
use crate::registry::RegistryConfig;
use crate::rest::{RateBudget, RestClient, RestConfig, RestError};
use crate::session::conn::{Endpoint, SessionConfig};
use crate::session::policy::Limits;
use crate::store::writer::WriterWatch;
use crate::store::{RING_CAPACITY, Record, Writer, WriterError, WriterOptions, WriterStats};
use crate::wire::Channel;
use driver::{DriverPlan, DriverThread, GAP_HINTS_CAPACITY, LifecycleQueue, StopClock};
use shard::{Connections, LifecyclePlan, ShardCounters, ShardPlan};
use telemetry::{Health, ShardTelemetry};

/// Largest CA file accepted: a bundle of a few hundred certificates; anything larger is not one.
pub const CA_FILE_BYTES_MAX: u64 = 4 << 20;
/// How often shutdown checks whether a shard is still blocked on a full ring behind a writer
/// that has died (then the shard is told to give up, since nothing can drain it).
const JOIN_POLL: Duration = Duration::from_millis(10);

/// Why the gatherer could not start or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum GathererError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The private key could not be loaded.
    #[error("gatherer private key: {0}")]
    Key(#[from] AuthError),
    /// The CA certificate file could not be used.
    #[error("gatherer CA certificate {path}: {problem}")]
    Ca {
        /// The file.
        path: String,
        /// What is wrong.
        problem: String,
    },
    /// The writer failed to start or to finish.
    #[error(transparent)]
    Writer(#[from] WriterError),
    /// A thread could not be started.
    #[error("cannot start gatherer thread {name}: {source}")]
    Spawn {
        /// Thread name.
        name: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A shard thread panicked.
    #[error("gatherer shard {0} panicked")]
    ShardPanicked(usize),
    /// The REST client could not be built (bad `rest_url` or CA file).
    #[error("gatherer REST client: {0}")]
    Rest(#[from] RestError),
    /// The registry thread panicked.
    #[error("gatherer registry thread panicked")]
    RegistryPanicked,
    /// The HdrHistogram interval log (`histogram_log`) could not be created.
    #[error("gatherer histogram_log: {0}")]
    HistogramLog(#[source] kdp_engine::telemetry::TelemetryError),
}

/// The gatherer's stats: one entry per shard and the writer's.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GathererStats {
    /// Per shard.
    pub shards: Vec<ShardStats>,
    /// The writer.
    pub writer: WriterStats,
    /// The registry thread (with `rest_url`).
    pub registry: Option<RegistryStats>,
}

impl GathererStats {
    /// Records pushed by all shards.
    pub fn records(&self) -> u64 {
        self.shards.iter().map(|s| s.records).sum()
    }

    /// The first fatal session error of any shard.
    pub fn fatal(&self) -> Option<&str> {
        self.shards.iter().find_map(|s| s.fatal.as_deref())
    }
}

/// The markets a run captures, named by the restart or crash gap its writer records: the
/// configured list when it is static; empty (= every market of this gatherer) when `rest_url`
/// is set, since the registry then adds and removes markets during the run and the configured
/// ones are only a part of them.
fn run_markets(checked: &Checked) -> Arc<[Arc<str>]> {
    if checked.rest.is_some() {
        return Arc::from([]);
    }
    checked.markets.iter().map(|m| Arc::<str>::from(m.as_str())).collect()
}

/// Entry point: see [`Gatherer::start`].
#[derive(Debug)]
pub struct Gatherer;

struct ShardThread {
    index: usize,
    counters: Arc<ShardCounters>,
    thread: JoinHandle<()>,
}

/// A running gatherer.
pub struct GathererHandle {
    stop: Arc<AtomicBool>,
    abandon: Arc<AtomicBool>,
    shards: Vec<ShardThread>,
    driver: Option<DriverThread>,
    writer: Writer,
    http: Option<HttpServer>,
}

impl std::fmt::Debug for GathererHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GathererHandle").field("shards", &self.shards.len()).finish_non_exhaustive()
    }
}

impl Gatherer {
    /// Checks `config`, loads the key and CA, starts the writer (migrating the database) and the
    /// shards. Returns once every thread runs; connections are made in the background.
    pub fn start(config: &GathererConfig) -> Result<GathererHandle, GathererError> {
        let checked = config.check()?;
        let signer = Arc::new(Signer::from_pem_file(&checked.key_id, &checked.private_key_path)?);
        let tls =
            if checked.ws.tls { Some(client_tls(checked.ca_cert_path.as_deref())?) } else { None };
        let pg: postgres::Config = checked
            .database_url
            .parse()
            .map_err(|e| ConfigError::Field { field: "database_url", problem: format!("{e}") })?;
        let stop = Arc::new(AtomicBool::new(false));
        let rest = match &checked.rest {
            Some(r) => {
                let mut cfg = RestConfig::new(r.url.clone());
                cfg.ca_file.clone_from(&checked.ca_cert_path);
                cfg.budget = RateBudget { capacity: r.burst, refill_per_s: r.rate_per_s };
                Some((r, RestClient::new(cfg, Arc::new(StopClock::new(Arc::clone(&stop))))?))
            }
            None => None,
        };
        let notes = Arc::new(LifecycleQueue::new());
        let gap_hints = rest
            .as_ref()
            .filter(|(r, _)| r.poller)
            .map(|_| Arc::new(ArrayQueue::new(GAP_HINTS_CAPACITY)));
        let (plans, controls) = plan(
            &checked,
            tls.as_ref(),
            rest.is_some().then(|| Arc::clone(&notes)),
            gap_hints.clone(),
        );
        let mut rings: Vec<Arc<ArrayQueue<Record>>> =
            plans.iter().map(|_| Arc::new(ArrayQueue::new(RING_CAPACITY))).collect();
        let rest_ring = rest.as_ref().map(|_| Arc::new(ArrayQueue::new(RING_CAPACITY)));
        rings.extend(rest_ring.clone());
        let (schema, shard_ids, writer_ids) = telemetry::schema();
        let mut hub = Telemetry::new(schema);
        let now_ns = telemetry::wall_ns();
        let writer = Writer::start_with_telemetry(
            pg,
            rings.clone(),
            WriterOptions {
                migrate: true,
                markets: run_markets(&checked),
                ..WriterOptions::default()
            },
            Some(writer_ids.telemetry(hub.recorder("writer", now_ns))),
        )?;
        // The interval log's first file is created now: a directory the gatherer cannot
        // write fails the start (the config asked for the log), before any thread runs on.
        let histogram_log = match &checked.histogram_log {
            Some((dir, prefix)) => {
                let cfg = IntervalLogConfig::new(dir, prefix);
                match IntervalLog::create(cfg, std::time::SystemTime::now()) {
                    Ok(log) => Some(log),
                    Err(e) => {
                        let _ = writer.shutdown();
                        return Err(GathererError::HistogramLog(e));
                    }
                }
            }
            None => None,
        };
        let abandon = Arc::new(AtomicBool::new(false));
        let mut handle =
            GathererHandle { stop, abandon, shards: Vec::new(), driver: None, writer, http: None };
        for (plan, ring) in plans.into_iter().zip(rings) {
            let counters = Arc::new(ShardCounters::default());
            let index = plan.index;
            let thread = shard::spawn(
                plan,
                Arc::clone(&signer),
                ring,
                Arc::clone(&counters),
                ShardTelemetry::new(hub.recorder(&index.to_string(), now_ns), shard_ids),
                Arc::clone(&handle.stop),
                Arc::clone(&handle.abandon),
            );
            match thread {
                Ok(thread) => handle.shards.push(ShardThread { index, counters, thread }),
                Err(source) => {
                    // Best effort: stop what started; the spawn failure is the error to report.
                    let _ = handle.shutdown();
                    return Err(GathererError::Spawn {
                        name: format!("kdp-shard-{index}"),
                        source,
                    });
                }
            }
        }
        if let (Some((r, client)), Some(ring)) = (rest, rest_ring) {
            let plan = DriverPlan {
                client,
                registry: RegistryConfig {
                    reconcile_interval_ns: r.reconcile_interval_ns,
                    status_interval_ns: r.status_interval_ns,
                    ..RegistryConfig::default()
                },
                poll: r.poller,
                static_markets: checked.markets.iter().map(|m| Arc::from(m.as_str())).collect(),
                shards: controls,
                notes,
                gap_hints: gap_hints.unwrap_or_else(|| Arc::new(ArrayQueue::new(1))),
                ring,
            };
            match driver::spawn(plan, Arc::clone(&handle.stop), Arc::clone(&handle.abandon)) {
                Ok(d) => handle.driver = Some(d),
                Err(source) => {
                    let _ = handle.shutdown();
                    return Err(GathererError::Spawn { name: "kdp-registry".into(), source });
                }
            }
        }
        if let Some(addr) = checked.metrics_addr {
            let shards: Vec<Arc<ShardCounters>> =
                handle.shards.iter().map(|s| Arc::clone(&s.counters)).collect();
            let watch = handle.writer.watch();
            let health = move || health(&shards, &watch);
            // Telemetry never stops ingestion: a taken port is reported, the gatherer runs on.
            match HttpServer::start(&addr.to_string(), hub.exporter(), health, histogram_log) {
                Ok(server) => handle.http = Some(server),
                Err(e) => tracing::error!("{e}; the gatherer runs without /metrics and /health"),
            }
        }
        tracing::info!(
            shards = handle.shards.len(),
            markets = checked.markets.len(),
            registry = checked.rest.is_some(),
            metrics = ?handle.metrics_addr(),
            "gatherer started"
        );
        Ok(handle)
    }
}

fn health(shards: &[Arc<ShardCounters>], writer: &WriterWatch) -> Health {
    let now_ns = telemetry::wall_ns();
    let per_shard: Vec<_> = shards.iter().map(|c| c.health(now_ns)).collect();
    Health::new(&per_shard, &writer.stats(), writer.running(), now_ns)
}

impl GathererHandle {
    /// Where `/metrics` and `/health` are served (`None`: turned off, or the address was taken).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(HttpServer::local_addr)
    }

    /// Current stats.
    pub fn stats(&self) -> GathererStats {
        GathererStats {
            shards: self.shards.iter().map(|s| s.counters.snapshot(s.index)).collect(),
            writer: self.writer.stats(),
            registry: self.driver.as_ref().map(DriverThread::stats),
        }
    }

    /// Whether the writer thread ended (it only does on shutdown or a fatal schema error).
    pub fn writer_finished(&self) -> bool {
        self.writer.is_finished()
    }

    /// Ordered shutdown: stop reading, drain the rings, flush and commit, join. Returns the
    /// final stats.
    pub fn shutdown(self) -> Result<GathererStats, GathererError> {
        self.stop.store(true, Ordering::Release);
        let mut shards = Vec::with_capacity(self.shards.len());
        let mut panicked = None;
        // The registry thread first: it may wait on a full ring (the writer still drains it)
        // or on a shard's control channel (shards drain it until they see the stop flag; the
        // thread gives up sending once it sees the flag too).
        let mut registry = None;
        let mut registry_panicked = false;
        if let Some(d) = self.driver {
            while !d.thread.is_finished() {
                if self.writer.is_finished() {
                    self.abandon.store(true, Ordering::Release);
                }
                std::thread::sleep(JOIN_POLL);
            }
            registry = Some(d.stats());
            registry_panicked = d.thread.join().is_err();
        }
        for s in self.shards {
            // A shard waiting on a full ring needs the (still running) writer to drain it; if
            // the writer has died, nothing will, so the shard is told to give up.
            while !s.thread.is_finished() {
                if self.writer.is_finished() {
                    self.abandon.store(true, Ordering::Release);
                }
                std::thread::sleep(JOIN_POLL);
            }
            if s.thread.join().is_err() {
                panicked.get_or_insert(s.index);
            }
            shards.push(s.counters.snapshot(s.index));
        }
        let writer = self.writer.shutdown();
        if let Some(http) = self.http {
            http.shutdown();
        }
        let writer = writer?;
        if let Some(index) = panicked {
            return Err(GathererError::ShardPanicked(index));
        }
        if registry_panicked {
            return Err(GathererError::RegistryPanicked);
        }
        Ok(GathererStats { shards, writer, registry })
    }
}

/// Splits the static markets over shards ([`shard_of`]) and each shard's markets over
/// connections; makes each shard's control channel; puts the lifecycle session (when the
/// registry runs) on shard 0. Returns the plans and the control senders (index = shard).
fn plan(
    c: &Checked,
    tls: Option<&Arc<rustls::ClientConfig>>,
    lifecycle: Option<Arc<LifecycleQueue>>,
    gap_hints: Option<Arc<ArrayQueue<Arc<str>>>>,
) -> (Vec<ShardPlan>, Vec<SyncSender<ShardCommand>>) {
    let n = c.shards.count();
    let mut per_shard: Vec<Vec<String>> = vec![Vec::new(); n];
    for m in &c.markets {
        per_shard[shard_of(m, n)].push(m.clone());
    }
    let endpoint = Endpoint {
        host: c.ws.host.clone(),
        port: c.ws.port,
        path: c.ws.path.clone(),
        tls: tls.cloned(),
    };
    let limits = Limits {
        connections_per_key: c.connections_per_key,
        markets_per_subscription: c.markets_per_subscription,
        commands_per_s: c.commands_per_s,
    };
    let mut template = SessionConfig::new(endpoint, c.channels.clone(), Vec::new());
    template.limits = limits;
    template.stale_after = c.stale_after;
    let mut conn_id = 0u64;
    let mut sessions: Vec<Vec<(u64, SessionConfig)>> = per_shard
        .iter()
        .map(|markets| {
            markets
                .chunks(c.markets_per_connection)
                .map(|chunk| {
                    conn_id += 1;
                    let mut s = template.clone();
                    s.markets = chunk.to_vec();
                    s.jitter_seed = conn_id;
                    (conn_id, s)
                })
                .collect()
        })
        .collect();
    let lifecycle = lifecycle.map(|notes| {
        conn_id += 1;
        let mut config = template.clone();
        config.channels = vec![Channel::MarketLifecycleV2];
        config.whole_exchange = true;
        config.jitter_seed = conn_id;
        LifecyclePlan { conn_id, config, notes }
    });
    let left = c.connections_per_key.saturating_sub(usize::try_from(conn_id).unwrap_or(usize::MAX));
    let connections = Arc::new(Connections::new(conn_id + 1, left));
    let mut lifecycle = lifecycle;
    let mut senders = Vec::with_capacity(n);
    let plans = sessions
        .iter_mut()
        .enumerate()
        .map(|(index, sessions)| {
            let (tx, rx) = sync_channel(SHARD_CONTROL_CAPACITY);
            senders.push(tx);
            ShardPlan {
                index,
                cpu: c.shards.cpu(index),
                sessions: std::mem::take(sessions),
                template: template.clone(),
                markets_per_connection: c.markets_per_connection,
                connections: Arc::clone(&connections),
                control: Some(rx),
                lifecycle: if index == 0 { lifecycle.take() } else { None },
                gap_hints: gap_hints.clone(),
            }
        })
        .collect();
    (plans, senders)
}

/// The TLS client configuration: exactly the certificates of `ca` when given (a private CA or
/// the simulator's self-signed certificate), Mozilla's web roots otherwise.
fn client_tls(ca: Option<&std::path::Path>) -> Result<Arc<rustls::ClientConfig>, GathererError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(path) => {
            let fail =
                |problem: String| GathererError::Ca { path: path.display().to_string(), problem };
            let len = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?.len();
            if len > CA_FILE_BYTES_MAX {
                return Err(fail(format!("{len} bytes, more than {CA_FILE_BYTES_MAX}")));
            }
            let pem = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| fail(format!("not PEM: {e}")))?;
                roots.add(cert).map_err(|e| fail(format!("certificate refused: {e}")))?;
            }
            if roots.is_empty() {
                return Err(fail("no CERTIFICATE section".into()));
            }
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| GathererError::Ca { path: "(TLS setup)".into(), problem: e.to_string() })?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}
