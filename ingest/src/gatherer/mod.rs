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
//! Telemetry ([`telemetry`]): each shard and the writer own a recorder; the HTTP server
//! (`/metrics`, `/health` on `metrics_addr`) starts with the gatherer and stops at shutdown,
//! after the final publications.

pub mod config;
pub mod shard;
pub mod telemetry;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use futures_rustls::rustls;
use kdp_engine::telemetry::Telemetry;
use kdp_engine::telemetry::http::HttpServer;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;

pub use config::{
    Checked, ConfigError, GathererConfig, METRICS_ADDR_DEFAULT, METRICS_OFF, ShardLayout, WsUrl,
};
pub use shard::{ShardStats, shard_of};

use crate::auth::{AuthError, Signer};
use crate::session::conn::{Endpoint, SessionConfig};
use crate::session::policy::Limits;
use crate::store::writer::WriterWatch;
use crate::store::{RING_CAPACITY, Record, Writer, WriterError, WriterOptions, WriterStats};
use shard::{ShardCounters, ShardPlan};
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
}

/// The gatherer's stats: one entry per shard and the writer's.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GathererStats {
    /// Per shard.
    pub shards: Vec<ShardStats>,
    /// The writer.
    pub writer: WriterStats,
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

/// Entry point: see [`Gatherer::start`].
#[derive(Debug)]
pub struct Gatherer;

struct ShardThread {
    index: usize,
    markets: usize,
    connections: usize,
    counters: Arc<ShardCounters>,
    thread: JoinHandle<()>,
}

/// A running gatherer.
pub struct GathererHandle {
    stop: Arc<AtomicBool>,
    abandon: Arc<AtomicBool>,
    shards: Vec<ShardThread>,
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
        let plans = plan(&checked, tls.as_ref());
        let pg: postgres::Config = checked
            .database_url
            .parse()
            .map_err(|e| ConfigError::Field { field: "database_url", problem: format!("{e}") })?;
        let rings: Vec<Arc<ArrayQueue<Record>>> =
            plans.iter().map(|_| Arc::new(ArrayQueue::new(RING_CAPACITY))).collect();
        let (schema, shard_ids, writer_ids) = telemetry::schema();
        let mut hub = Telemetry::new(schema);
        let now_ns = telemetry::wall_ns();
        let writer = Writer::start_with_telemetry(
            pg,
            rings.clone(),
            WriterOptions { migrate: true, ..WriterOptions::default() },
            Some(writer_ids.telemetry(hub.recorder("writer", now_ns))),
        )?;
        let stop = Arc::new(AtomicBool::new(false));
        let abandon = Arc::new(AtomicBool::new(false));
        let mut handle = GathererHandle { stop, abandon, shards: Vec::new(), writer, http: None };
        for (plan, ring) in plans.into_iter().zip(rings) {
            let counters = Arc::new(ShardCounters::default());
            let index = plan.index;
            let markets = plan.sessions.iter().map(|(_, s)| s.markets.len()).sum();
            let connections = plan.sessions.len();
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
                Ok(thread) => {
                    handle.shards.push(ShardThread {
                        index,
                        markets,
                        connections,
                        counters,
                        thread,
                    });
                }
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
        if let Some(addr) = checked.metrics_addr {
            let shards: Vec<(Arc<ShardCounters>, usize)> =
                handle.shards.iter().map(|s| (Arc::clone(&s.counters), s.connections)).collect();
            let watch = handle.writer.watch();
            let health = move || health(&shards, &watch);
            // Telemetry never stops ingestion: a taken port is reported, the gatherer runs on.
            match HttpServer::start(&addr.to_string(), hub.exporter(), health, None) {
                Ok(server) => handle.http = Some(server),
                Err(e) => tracing::error!("{e}; the gatherer runs without /metrics and /health"),
            }
        }
        tracing::info!(
            shards = handle.shards.len(),
            markets = checked.markets.len(),
            metrics = ?handle.metrics_addr(),
            "gatherer started"
        );
        Ok(handle)
    }
}

fn health(shards: &[(Arc<ShardCounters>, usize)], writer: &WriterWatch) -> Health {
    let now_ns = telemetry::wall_ns();
    let per_shard: Vec<_> =
        shards.iter().map(|(c, sessions)| c.health(*sessions, now_ns)).collect();
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
            shards: self
                .shards
                .iter()
                .map(|s| s.counters.snapshot(s.index, s.markets, s.connections))
                .collect(),
            writer: self.writer.stats(),
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
            shards.push(s.counters.snapshot(s.index, s.markets, s.connections));
        }
        let writer = self.writer.shutdown();
        if let Some(http) = self.http {
            http.shutdown();
        }
        let writer = writer?;
        if let Some(index) = panicked {
            return Err(GathererError::ShardPanicked(index));
        }
        Ok(GathererStats { shards, writer })
    }
}

/// Splits the markets over shards ([`shard_of`]) and each shard's markets over connections.
fn plan(c: &Checked, tls: Option<&Arc<rustls::ClientConfig>>) -> Vec<ShardPlan> {
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
    let mut conn_id = 0u64;
    per_shard
        .into_iter()
        .enumerate()
        .map(|(index, markets)| {
            let sessions = markets
                .chunks(c.markets_per_connection)
                .map(|chunk| {
                    conn_id += 1;
                    let mut s =
                        SessionConfig::new(endpoint.clone(), c.channels.clone(), chunk.to_vec());
                    s.limits = limits;
                    s.jitter_seed = conn_id;
                    (conn_id, s)
                })
                .collect();
            ShardPlan { index, cpu: c.shards.cpu(index), sessions }
        })
        .collect()
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
