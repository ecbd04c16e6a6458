//! `kdp check-config FILE`: validates a gatherer or dedup configuration and tests what it
//! points at, one line per check (`OK` / `FAIL` with what to do / `SKIP`), exit 1 on any FAIL.
//!
//! Gatherer: the config (parse, environment overrides, field checks), the private key (loose
//! permissions refused), the WebSocket endpoint (TCP, TLS, a signed handshake expecting 101: a
//! 401/403 means the key id or the key is wrong or the clock is off), REST `GET
//! /exchange/status` when `rest_url` is set, and the database (connect, schema version).
//! Dedup: the config, production and every gatherer database (connect, schema version).

use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs as _};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use kdp_ingest::auth::Signer;
use kdp_ingest::gatherer::GathererConfig;
use kdp_ingest::gatherer::config::Checked;

/// Deadline of each network step.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Largest config file read.
const CONFIG_BYTES_MAX: u64 = 1 << 20;

/// Which kind of config the file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `kdp gatherer --config`.
    Gatherer,
    /// `kdp dedup --config`.
    Dedup,
}

/// The report so far.
struct Report<'w, W: Write> {
    out: &'w mut W,
    failed: u32,
}

impl<W: Write> Report<'_, W> {
    fn line(&mut self, check: &str, result: Result<String, String>) -> std::io::Result<bool> {
        match result {
            Ok(detail) => writeln!(self.out, "OK    {check}: {detail}")?,
            Err(detail) => {
                self.failed += 1;
                writeln!(self.out, "FAIL  {check}: {detail}")?;
            }
        }
        Ok(self.failed == 0)
    }

    fn skip(&mut self, check: &str, why: &str) -> std::io::Result<()> {
        writeln!(self.out, "SKIP  {check}: {why}")
    }
}

/// Tells the kind from the file's keys when not given: `ws_url` → gatherer,
/// `production_database_url` or `[[gatherers]]` → dedup.
pub fn detect(text: &str) -> Option<Kind> {
    let key = |line: &str, name: &str| {
        line.trim_start().strip_prefix(name).is_some_and(|rest| rest.trim_start().starts_with('='))
    };
    if text.lines().any(|l| key(l, "ws_url")) {
        Some(Kind::Gatherer)
    } else if text.lines().any(|l| key(l, "production_database_url") || l.trim() == "[[gatherers]]")
    {
        Some(Kind::Dedup)
    } else {
        None
    }
}

/// Runs every check of `path`, writes the report; `Ok(true)` when all passed.
pub fn run(
    path: &Path,
    kind: Option<Kind>,
    env: impl Fn(&str) -> Option<String>,
    out: &mut impl Write,
) -> std::io::Result<bool> {
    let mut report = Report { out, failed: 0 };
    let text = match read(path) {
        Ok(t) => t,
        Err(e) => {
            report.line("config", Err(e))?;
            return finish(report);
        }
    };
    let kind = match kind.or_else(|| detect(&text)) {
        Some(k) => k,
        None => {
            report.line(
                "config",
                Err(format!(
                    "{}: cannot tell a gatherer config (ws_url) from a dedup config \
                     (production_database_url, [[gatherers]]); pass --kind gatherer|dedup",
                    path.display()
                )),
            )?;
            return finish(report);
        }
    };
    match kind {
        Kind::Gatherer => gatherer(&mut report, path, &text, env)?,
        Kind::Dedup => dedup(&mut report, path, &text, env)?,
    }
    finish(report)
}

fn finish<W: Write>(report: Report<'_, W>) -> std::io::Result<bool> {
    let ok = report.failed == 0;
    if ok {
        writeln!(report.out, "all checks passed")?;
    } else {
        writeln!(report.out, "{} check(s) failed", report.failed)?;
    }
    report.out.flush()?;
    Ok(ok)
}

fn read(path: &Path) -> Result<String, String> {
    let fail = |e: String| format!("config file {}: {e}", path.display());
    let len = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?.len();
    if len > CONFIG_BYTES_MAX {
        return Err(fail(format!("{len} bytes, more than {CONFIG_BYTES_MAX}")));
    }
    std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))
}

fn gatherer<W: Write>(
    report: &mut Report<'_, W>,
    path: &Path,
    text: &str,
    env: impl Fn(&str) -> Option<String>,
) -> std::io::Result<()> {
    let checked = GathererConfig::from_toml(text).and_then(|mut c| {
        c.apply_env(env);
        c.check().map(|checked| (c, checked))
    });
    let (config, checked) = match checked {
        Ok(c) => c,
        Err(e) => {
            report.line("config", Err(format!("{}: {e}", path.display())))?;
            return Ok(());
        }
    };
    report.line("config", Ok(format!("{} is a valid gatherer config", path.display())))?;
    let signer = Signer::from_pem_file(&checked.key_id, &checked.private_key_path);
    let signer = match signer {
        Ok(s) => {
            report.line(
                "key",
                Ok(format!(
                    "{} key {} loaded for key id {}",
                    s.kind(),
                    checked.private_key_path.display(),
                    checked.key_id
                )),
            )?;
            Some(Arc::new(s))
        }
        Err(e) => {
            report.line("key", Err(e.to_string()))?;
            None
        }
    };
    match &signer {
        Some(s) => {
            report.line("websocket", websocket(&checked, s))?;
        }
        None => report.skip("websocket", "needs the key")?,
    }
    match (&config.rest_url, &signer) {
        (Some(url), Some(s)) => {
            report.line("rest", rest(url, checked.ca_cert_path.as_deref(), s))?;
        }
        (Some(_), None) => report.skip("rest", "needs the key")?,
        (None, _) => report.skip("rest", "no rest_url configured (static market list)")?,
    }
    report.line("database", database(&checked.database_url, "gatherer"))?;
    Ok(())
}

fn tls_config(ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(path) => {
            let fail = |e: String| {
                format!("CA file {} ({e}); set ca_cert_path to a PEM certificate", path.display())
            };
            let pem = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                roots
                    .add(cert.map_err(|e| fail(e.to_string()))?)
                    .map_err(|e| fail(e.to_string()))?;
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
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

trait Stream: std::io::Read + std::io::Write {}
impl<T: std::io::Read + std::io::Write> Stream for T {}

/// TCP, TLS and a signed WebSocket handshake to `ws_url`, expecting 101.
fn websocket(c: &Checked, signer: &Signer) -> Result<String, String> {
    use tungstenite::client::IntoClientRequest as _;
    let ws = &c.ws;
    let url = format!("{}://{}:{}{}", if ws.tls { "wss" } else { "ws" }, ws.host, ws.port, ws.path);
    let addr = (ws.host.as_str(), ws.port)
        .to_socket_addrs()
        .map_err(|e| format!("{url}: cannot resolve {} ({e}); check ws_url's host", ws.host))?
        .next()
        .ok_or_else(|| format!("{url}: {} has no address; check ws_url's host", ws.host))?;
    let tcp = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| {
        format!(
            "{url}: cannot connect to {addr} ({e}); check ws_url's host and port and the network"
        )
    })?;
    tcp.set_read_timeout(Some(TIMEOUT)).map_err(|e| e.to_string())?;
    tcp.set_write_timeout(Some(TIMEOUT)).map_err(|e| e.to_string())?;
    let stream: Box<dyn Stream> = if ws.tls {
        let config = tls_config(c.ca_cert_path.as_deref())?;
        let name = rustls_pki_types::ServerName::try_from(ws.host.clone())
            .map_err(|e| format!("{url}: {e}"))?;
        let conn = rustls::ClientConnection::new(config, name).map_err(|e| e.to_string())?;
        Box::new(rustls::StreamOwned::new(conn, tcp))
    } else {
        Box::new(tcp)
    };
    let mut request = url.as_str().into_client_request().map_err(|e| format!("{url}: {e}"))?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_millis();
    let headers = signer
        .headers("GET", &ws.path, u64::try_from(now_ms).unwrap_or(u64::MAX))
        .map_err(|e| e.to_string())?;
    for (name, value) in headers.pairs() {
        let value = tungstenite::http::HeaderValue::from_str(value).map_err(|e| e.to_string())?;
        request.headers_mut().insert(name, value);
    }
    match tungstenite::client(request, stream) {
        Ok((mut socket, response)) => {
            let _ = socket.close(None);
            Ok(format!(
                "{url}: TLS {} and signed handshake accepted (HTTP {})",
                if ws.tls { "verified" } else { "not used (ws://)" },
                response.status().as_u16()
            ))
        }
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
            let status = response.status().as_u16();
            let body = response
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            if status == 401 || status == 403 {
                Err(format!(
                    "{url}: handshake refused with HTTP {status} ({body}): the exchange does not \
                     accept this signature; check key_id ({}) belongs to private_key_path, the \
                     key is registered for this environment, and the clock is synchronised",
                    signer.key_id()
                ))
            } else {
                Err(format!("{url}: handshake refused with HTTP {status} ({body}); check ws_url"))
            }
        }
        Err(tungstenite::HandshakeError::Failure(e)) => Err(format!(
            "{url}: TLS or WebSocket handshake failed ({e}); check ws_url (wss:// for Kalshi) \
             and ca_cert_path"
        )),
        Err(tungstenite::HandshakeError::Interrupted(_)) => {
            Err(format!("{url}: handshake interrupted; check the network"))
        }
    }
}

/// One signed `GET /exchange/status`.
fn rest(url: &str, ca: Option<&Path>, signer: &Arc<Signer>) -> Result<String, String> {
    use kdp_ingest::rest::{RestClient, RestConfig, RestLimits, SystemClock};
    let mut config = RestConfig::new(url);
    config.ca_file = ca.map(Path::to_path_buf);
    config.signer = Some(Arc::clone(signer));
    config.limits = RestLimits {
        attempts_max: 1,
        request_timeout_ms: u64::try_from(TIMEOUT.as_millis()).unwrap_or(u64::MAX),
        ..RestLimits::default()
    };
    let mut client = RestClient::new(config, Arc::new(SystemClock::new()))
        .map_err(|e| format!("{e}; check rest_url"))?;
    let status = client.exchange_status().map_err(|e| format!("{url}: {e}"))?;
    Ok(format!(
        "{url}/exchange/status answered: exchange {}",
        if status.is_active() { "active" } else { "not active (maintenance)" }
    ))
}

/// Connects to `url` and reads the applied schema version of `schema`.
fn database(url: &str, schema: &str) -> Result<String, String> {
    let mut config: postgres::Config =
        url.parse().map_err(|e| format!("{url:?} is not a PostgreSQL URL ({e})"))?;
    config.connect_timeout(TIMEOUT);
    let mut client = config.connect(postgres::NoTls).map_err(|e| {
        format!(
            "cannot connect to the {schema} database ({e}); check the URL, that the server is \
             running and reachable, and the user's password"
        )
    })?;
    let exists: bool = client
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
        .map_err(|e| e.to_string())?
        .get(0);
    let version: Option<i32> = if exists {
        client
            .query_one(
                "SELECT max(version)::int FROM schema_migrations WHERE schema = $1",
                &[&schema],
            )
            .map_err(|e| e.to_string())?
            .get(0)
    } else {
        None
    };
    Ok(match version {
        Some(v) => format!("connected; {schema} schema at version {v}"),
        None => format!("connected; no {schema} schema yet (applied at the first start)"),
    })
}

fn dedup<W: Write>(
    report: &mut Report<'_, W>,
    path: &Path,
    text: &str,
    env: impl Fn(&str) -> Option<String>,
) -> std::io::Result<()> {
    use kdp_dedup::config::DedupConfig;
    let checked = DedupConfig::from_toml(text).and_then(|mut c| {
        c.apply_env(env);
        c.check().map(|_| c)
    });
    let config = match checked {
        Ok(c) => c,
        Err(e) => {
            report.line("config", Err(format!("{}: {e}", path.display())))?;
            return Ok(());
        }
    };
    report.line("config", Ok(format!("{} is a valid dedup config", path.display())))?;
    let production = config.production_database_url.clone().unwrap_or_default();
    report.line("production database", database(&production, "production"))?;
    for g in &config.gatherers {
        report.line(
            &format!("gatherer database {} (id {})", g.name, g.id),
            database(&g.database_url, "gatherer"),
        )?;
    }
    Ok(())
}
