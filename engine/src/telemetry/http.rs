//! The telemetry HTTP endpoint: `GET /metrics` (Prometheus text 0.0.4) and `GET /health`
//! (JSON from a caller-supplied function; 200 when healthy, 503 when not). Anything else is 404
//! (405 for a known path with another method).
//!
//! One plain thread runs a blocking `tiny_http` server. Between requests (at least every
//! [`EXPORT_DRAIN_INTERVAL_MS`]) it drains the recorders' publication queue and, if given an
//! [`IntervalLog`], appends the drained interval histograms to it once per
//! [`INTERVAL_LOG_PERIOD_MS`], and once more when it stops (so a log of a run that stopped
//! cleanly holds everything its recorders published).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tiny_http::{Header, Method, Response, Server};

use super::TelemetryError;
use super::interval_log::IntervalLog;
use super::metrics::{EXPORT_DRAIN_INTERVAL_MS, Exporter};
use super::prometheus::CONTENT_TYPE;

/// Default listen address: loopback only; exposing telemetry beyond the host is a decision.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9464";

/// Interval-log period: 1 s, the recorders' publish interval (finer gives empty intervals).
pub const INTERVAL_LOG_PERIOD_MS: u64 = 1_000;

/// A health report: any serialisable struct that says whether the process is healthy.
pub trait HealthReport: Serialize {
    /// `true` → HTTP 200, `false` → HTTP 503.
    fn healthy(&self) -> bool;
}

/// The running server; [`HttpServer::shutdown`] (or drop) stops its thread.
pub struct HttpServer {
    addr: SocketAddr,
    server: Arc<Server>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Listens on `addr` (`"127.0.0.1:0"` picks a free port) and serves on a new thread.
    pub fn start<H, F>(
        addr: &str,
        exporter: Exporter,
        health: F,
        mut log: Option<IntervalLog>,
    ) -> Result<HttpServer, TelemetryError>
    where
        H: HealthReport,
        F: Fn() -> H + Send + 'static,
    {
        let bind_error = |reason: String| TelemetryError::Bind { addr: addr.to_owned(), reason };
        let server = Server::http(addr).map_err(|e| bind_error(e.to_string()))?;
        let local = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| bind_error("not an IP listener".to_owned()))?;
        let server = Arc::new(server);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let server = Arc::clone(&server);
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("kdp-telemetry".to_owned())
                .spawn(move || {
                    let drain = Duration::from_millis(EXPORT_DRAIN_INTERVAL_MS);
                    let period = Duration::from_millis(INTERVAL_LOG_PERIOD_MS);
                    let mut logged_at = Instant::now();
                    while !stop.load(Ordering::Acquire) {
                        match server.recv_timeout(drain) {
                            Ok(Some(request)) => respond(request, &exporter, &health),
                            Ok(None) => exporter.drain(),
                            Err(e) => {
                                tracing::warn!("telemetry HTTP server stopped accepting: {e}");
                                break;
                            }
                        }
                        if let Some(log) = log.as_mut()
                            && logged_at.elapsed() >= period
                        {
                            logged_at = Instant::now();
                            let interval = exporter.take_interval();
                            if let Err(e) = log.write_interval(SystemTime::now(), &interval) {
                                tracing::warn!("{e}");
                            }
                        }
                    }
                    // The last (short) interval: whatever the recorders published before the
                    // server was stopped (their final publications at shutdown) is logged too.
                    if let Some(log) = log.as_mut() {
                        let interval = exporter.take_interval();
                        if let Err(e) = log.write_interval(SystemTime::now(), &interval) {
                            tracing::warn!("{e}");
                        }
                    }
                })
                .map_err(|e| bind_error(format!("cannot start the thread: {e}")))?
        };
        Ok(HttpServer { addr: local, server, stop, thread: Some(thread) })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the server and joins its thread.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.server.unblock();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("telemetry HTTP thread panicked");
        }
    }
}

impl std::fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpServer").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

fn header(name: &str, value: &str) -> Option<Header> {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).ok()
}

fn respond<H: HealthReport>(
    request: tiny_http::Request,
    exporter: &Exporter,
    health: &impl Fn() -> H,
) {
    let path = request.url().split('?').next().unwrap_or("").to_owned();
    let get = *request.method() == Method::Get;
    let (status, content_type, body) = match (path.as_str(), get) {
        ("/metrics", true) => (200, CONTENT_TYPE, exporter.render_prometheus()),
        ("/health", true) => {
            let report = health();
            let status = if report.healthy() { 200 } else { 503 };
            match serde_json::to_string(&report) {
                Ok(json) => (status, "application/json", json),
                Err(e) => (500, "text/plain; charset=utf-8", format!("health report: {e}\n")),
            }
        }
        ("/metrics" | "/health", false) => {
            (405, "text/plain; charset=utf-8", "use GET\n".to_owned())
        }
        _ => (404, "text/plain; charset=utf-8", "not found: try /metrics or /health\n".to_owned()),
    };
    let mut response = Response::from_string(body).with_status_code(status);
    if let Some(h) = header("Content-Type", content_type) {
        response = response.with_header(h);
    }
    if let Err(e) = request.respond(response) {
        tracing::debug!("telemetry response to {path} not delivered: {e}");
    }
}
