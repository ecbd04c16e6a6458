//! The gatherer's configuration: a TOML file, secrets overridable from the environment, checked
//! once at start with errors that name the field and the fix.
//!
//! ```toml
//! ws_url = "wss://api.elections.kalshi.com/trade-api/ws/v2"
//! rest_url = "https://api.elections.kalshi.com/trade-api/v2"   # for the market registry
//! key_id = "a952bcbe-..."                    # or KDP_KEY_ID
//! private_key_path = "/etc/kdp/kalshi.pem"   # or KDP_PRIVATE_KEY_PATH (mode 0600)
//! # ca_cert_path = "kdp-data/sim-cert.pem"   # trust only this CA (the simulator's certificate)
//! database_url = "postgres://kdp@127.0.0.1/gatherer1"   # or KDP_DATABASE_URL
//! shard_cpus = [0, 1]                        # pinned shards; or shard_count = 2 (unbound)
//! markets = ["KXHIGHNY-25JAN01-B40", "INXD-25DEC31-T5000"]   # may be [] with rest_url: all
//! # rest_rate_per_s = 20                    # REST read budget (Kalshi Basic), shared by the
//! # rest_burst = 40                         #   registry's listings and the snapshot poller
//! # snapshot_poller = true                  # REST order books (needs rest_url)
//! # reconcile_interval_ms = 300000          # registry reconciliation against a full listing
//! # exchange_status_interval_ms = 10000     # GET /exchange/status (pause / resume)
//! # stale_after_ms = 30000                  # no frame or ping for this long: reconnect
//! # histogram_log = "/var/log/kdp/gatherer-1"   # HdrHistogram interval log: a path prefix
//! #   (files gatherer-1-<run start, unix s>-<n>.hlog) or an existing directory (files
//! #   kdp-gatherer-...); one file per run, rotated hourly or at 64 MiB, 48 kept; needs metrics_addr
//! # channels = ["orderbook_delta", "trade", "ticker"]
//! # markets_per_connection = 2000
//! # markets_per_subscription = 500
//! # connections_per_key = 200
//! # commands_per_s = 10000
//! ```

use std::path::PathBuf;

use serde::Deserialize;

use crate::registry::{RECONCILE_INTERVAL_NS_DEFAULT, STATUS_INTERVAL_NS_DEFAULT};
use crate::rest::{READ_CAPACITY_DEFAULT, READ_REFILL_PER_S_DEFAULT};
use crate::session::conn::STALE_AFTER_DEFAULT;
use crate::session::policy::{
    COMMANDS_PER_S_DEFAULT, CONNECTIONS_PER_KEY_DEFAULT, MARKETS_PER_SUBSCRIPTION_DEFAULT,
};
use crate::wire::Channel;

/// Environment variable overriding `key_id`.
pub const ENV_KEY_ID: &str = "KDP_KEY_ID";
/// Environment variable overriding `private_key_path`.
pub const ENV_PRIVATE_KEY_PATH: &str = "KDP_PRIVATE_KEY_PATH";
/// Environment variable overriding `database_url`.
pub const ENV_DATABASE_URL: &str = "KDP_DATABASE_URL";
/// Markets one WebSocket connection carries by default: a reconnect re-snapshots all of them,
/// so this bounds the burst one lost connection causes, while 1,000,000 markets still fit in
/// 500 connections (spread over several keys' `connections_per_key`).
pub const MARKETS_PER_CONNECTION_DEFAULT: usize = 2_000;
/// Largest shard count accepted: far above any core count this runs on; a typo guard.
pub const SHARDS_MAX: usize = 256;

/// The configuration as written in the file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GathererConfig {
    /// WebSocket URL (`wss://host[:port]/path`, or `ws://` for a local simulator).
    pub ws_url: String,
    /// REST base URL (`https://host/trade-api/v2`): runs the market registry (discovery,
    /// lifecycle, reconciliation) and the snapshot poller.
    #[serde(default)]
    pub rest_url: Option<String>,
    /// REST read budget, requests per second (token refill).
    #[serde(default = "default_rest_rate_per_s")]
    pub rest_rate_per_s: u32,
    /// REST read budget, largest burst (bucket size).
    #[serde(default = "default_rest_burst")]
    pub rest_burst: u32,
    /// Poll REST order books (needs `rest_url`).
    #[serde(default = "default_true")]
    pub snapshot_poller: bool,
    /// Time between registry reconciliations, ms.
    #[serde(default = "default_reconcile_interval_ms")]
    pub reconcile_interval_ms: u64,
    /// Time between exchange-status checks, ms.
    #[serde(default = "default_exchange_status_interval_ms")]
    pub exchange_status_interval_ms: u64,
    /// A connection with no frame and no ping for this long is reconnected, ms.
    #[serde(default = "default_stale_after_ms")]
    pub stale_after_ms: u64,
    /// API key id.
    #[serde(default)]
    pub key_id: Option<String>,
    /// PEM private key file (must not be readable by group or others).
    #[serde(default)]
    pub private_key_path: Option<PathBuf>,
    /// Trust exactly the certificates in this PEM file instead of the public web roots.
    #[serde(default)]
    pub ca_cert_path: Option<PathBuf>,
    /// The gatherer's own PostgreSQL database.
    #[serde(default)]
    pub database_url: Option<String>,
    /// One pinned shard per listed CPU.
    #[serde(default)]
    pub shard_cpus: Option<Vec<usize>>,
    /// This many unbound shards (when `shard_cpus` is absent).
    #[serde(default)]
    pub shard_count: Option<usize>,
    /// Markets to capture.
    #[serde(default)]
    pub markets: Vec<String>,
    /// Channels subscribed for every market.
    #[serde(default = "default_channels")]
    pub channels: Vec<String>,
    /// Markets per WebSocket connection.
    #[serde(default = "default_markets_per_connection")]
    pub markets_per_connection: usize,
    /// Markets per `subscribe` command (Kalshi's limit).
    #[serde(default = "default_markets_per_subscription")]
    pub markets_per_subscription: usize,
    /// Connections allowed per API key (Kalshi's limit).
    #[serde(default = "default_connections_per_key")]
    pub connections_per_key: usize,
    /// Commands per second per connection (Kalshi's limit).
    #[serde(default = "default_commands_per_s")]
    pub commands_per_s: u32,
    /// Address of the telemetry HTTP server (`/metrics`, `/health`): absent →
    /// [`METRICS_ADDR_DEFAULT`]; port 0 picks a free port; [`METRICS_OFF`] runs no server.
    #[serde(default)]
    pub metrics_addr: Option<String>,
    /// HdrHistogram interval log of the latency histograms (frame received → committed,
    /// exchange → received, writer batch rows), one interval per second: a path prefix whose
    /// directory exists (`/var/log/kdp/gatherer-1` → `gatherer-1-<run start>-<n>.hlog`), or an
    /// existing directory (prefix [`HISTOGRAM_LOG_PREFIX_DEFAULT`]). Written by the telemetry
    /// thread, so `metrics_addr` must not be `"off"`. Absent: no log.
    #[serde(default)]
    pub histogram_log: Option<PathBuf>,
}

/// File name prefix of the interval log when `histogram_log` names a directory.
pub const HISTOGRAM_LOG_PREFIX_DEFAULT: &str = "kdp-gatherer";

/// Telemetry listen address when the file names none: loopback only, Prometheus's
/// conventional exporter port range.
pub const METRICS_ADDR_DEFAULT: &str = kdp_engine::telemetry::http::DEFAULT_ADDR;
/// The `metrics_addr` value that disables the telemetry HTTP server.
pub const METRICS_OFF: &str = "off";

fn default_rest_rate_per_s() -> u32 {
    READ_REFILL_PER_S_DEFAULT
}
fn default_rest_burst() -> u32 {
    READ_CAPACITY_DEFAULT
}
fn default_true() -> bool {
    true
}
fn default_reconcile_interval_ms() -> u64 {
    u64::try_from(RECONCILE_INTERVAL_NS_DEFAULT / 1_000_000).unwrap_or(u64::MAX)
}
fn default_exchange_status_interval_ms() -> u64 {
    u64::try_from(STATUS_INTERVAL_NS_DEFAULT / 1_000_000).unwrap_or(u64::MAX)
}
fn default_stale_after_ms() -> u64 {
    u64::try_from(STALE_AFTER_DEFAULT.as_millis()).unwrap_or(u64::MAX)
}
fn default_channels() -> Vec<String> {
    ["orderbook_delta", "trade", "ticker"].map(String::from).to_vec()
}
fn default_markets_per_connection() -> usize {
    MARKETS_PER_CONNECTION_DEFAULT
}
fn default_markets_per_subscription() -> usize {
    MARKETS_PER_SUBSCRIPTION_DEFAULT
}
fn default_connections_per_key() -> usize {
    CONNECTIONS_PER_KEY_DEFAULT
}
fn default_commands_per_s() -> u32 {
    COMMANDS_PER_S_DEFAULT
}

/// A configuration that cannot work, with what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The file is not valid TOML for this struct.
    #[error("gatherer config is not valid: {0}")]
    Parse(String),
    /// A field is missing or wrong.
    #[error("gatherer config field `{field}`: {problem}")]
    Field {
        /// The field.
        field: &'static str,
        /// What is wrong and how to fix it.
        problem: String,
    },
}

fn field(field: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Field { field, problem: problem.into() }
}

/// A parsed `ws://` / `wss://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsUrl {
    /// `wss`.
    pub tls: bool,
    /// Host name or IPv4 address.
    pub host: String,
    /// Port (default 443 / 80).
    pub port: u16,
    /// Path from the root, `/` at least.
    pub path: String,
}

/// How the shards are placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardLayout {
    /// One shard pinned to each CPU.
    Pinned(Vec<usize>),
    /// This many unbound shards.
    Unbound(usize),
}

impl ShardLayout {
    /// Number of shards.
    pub fn count(&self) -> usize {
        match self {
            ShardLayout::Pinned(cpus) => cpus.len(),
            ShardLayout::Unbound(n) => *n,
        }
    }

    /// The CPU of shard `i`, if pinned.
    pub fn cpu(&self, i: usize) -> Option<usize> {
        match self {
            ShardLayout::Pinned(cpus) => cpus.get(i).copied(),
            ShardLayout::Unbound(_) => None,
        }
    }
}

/// The REST side (registry and poller), when `rest_url` is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestSettings {
    /// Base URL.
    pub url: String,
    /// Requests per second.
    pub rate_per_s: u32,
    /// Burst.
    pub burst: u32,
    /// Run the snapshot poller.
    pub poller: bool,
    /// Reconciliation interval, ns.
    pub reconcile_interval_ns: i64,
    /// Exchange-status interval, ns.
    pub status_interval_ns: i64,
}

/// The checked configuration [`crate::gatherer::Gatherer::start`] runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// WebSocket endpoint.
    pub ws: WsUrl,
    /// API key id.
    pub key_id: String,
    /// Private key file.
    pub private_key_path: PathBuf,
    /// CA file, if any.
    pub ca_cert_path: Option<PathBuf>,
    /// Database URL.
    pub database_url: String,
    /// Shards.
    pub shards: ShardLayout,
    /// Markets, sorted, without duplicates.
    pub markets: Vec<String>,
    /// Channels.
    pub channels: Vec<Channel>,
    /// See [`GathererConfig::markets_per_connection`].
    pub markets_per_connection: usize,
    /// See [`GathererConfig::markets_per_subscription`].
    pub markets_per_subscription: usize,
    /// See [`GathererConfig::connections_per_key`].
    pub connections_per_key: usize,
    /// See [`GathererConfig::commands_per_s`].
    pub commands_per_s: u32,
    /// Telemetry listen address; `None` when turned off.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Registry and poller, when `rest_url` is set.
    pub rest: Option<RestSettings>,
    /// See [`GathererConfig::stale_after_ms`].
    pub stale_after: std::time::Duration,
    /// Interval log (directory, file name prefix), when configured.
    pub histogram_log: Option<(PathBuf, String)>,
}

impl GathererConfig {
    /// Parses the TOML text of a config file.
    pub fn from_toml(text: &str) -> Result<GathererConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))
    }

    /// Applies the secrets' environment overrides ([`ENV_KEY_ID`], [`ENV_PRIVATE_KEY_PATH`],
    /// [`ENV_DATABASE_URL`]); `lookup` reads a variable (the CLI passes `std::env::var`), so
    /// this crate never touches the process environment itself.
    pub fn apply_env(&mut self, lookup: impl Fn(&str) -> Option<String>) {
        if let Some(v) = lookup(ENV_KEY_ID) {
            self.key_id = Some(v);
        }
        if let Some(v) = lookup(ENV_PRIVATE_KEY_PATH) {
            self.private_key_path = Some(PathBuf::from(v));
        }
        if let Some(v) = lookup(ENV_DATABASE_URL) {
            self.database_url = Some(v);
        }
    }

    /// Checks every field; the first problem found is the error.
    pub fn check(&self) -> Result<Checked, ConfigError> {
        let ws = parse_ws_url(&self.ws_url)?;
        let key_id = self
            .key_id
            .clone()
            .filter(|k| !k.trim().is_empty())
            .ok_or_else(|| field("key_id", format!("missing; set it or {ENV_KEY_ID}")))?;
        let private_key_path = self.private_key_path.clone().ok_or_else(|| {
            field("private_key_path", format!("missing; set it or {ENV_PRIVATE_KEY_PATH}"))
        })?;
        let database_url =
            self.database_url.clone().filter(|u| !u.trim().is_empty()).ok_or_else(|| {
                field("database_url", format!("missing; set it or {ENV_DATABASE_URL}"))
            })?;
        database_url.parse::<postgres::Config>().map_err(|e| {
            field("database_url", format!("not a PostgreSQL URL or key=value string: {e}"))
        })?;
        let shards = match (&self.shard_cpus, self.shard_count) {
            (Some(_), Some(_)) => {
                return Err(field("shard_cpus", "give shard_cpus or shard_count, not both"));
            }
            (Some(cpus), None) => {
                let mut sorted = cpus.clone();
                sorted.sort_unstable();
                sorted.dedup();
                if cpus.is_empty() || sorted.len() != cpus.len() || cpus.len() > SHARDS_MAX {
                    return Err(field(
                        "shard_cpus",
                        format!("list 1 to {SHARDS_MAX} distinct CPU numbers, got {cpus:?}"),
                    ));
                }
                ShardLayout::Pinned(cpus.clone())
            }
            (None, Some(n)) if (1..=SHARDS_MAX).contains(&n) => ShardLayout::Unbound(n),
            (None, Some(n)) => {
                return Err(field("shard_count", format!("must be 1 to {SHARDS_MAX}, got {n}")));
            }
            (None, None) => ShardLayout::Unbound(1),
        };
        let mut markets = self.markets.clone();
        if let Some(bad) =
            markets.iter().find(|m| m.is_empty() || m.chars().any(char::is_whitespace))
        {
            return Err(field("markets", format!("{bad:?} is not a market ticker")));
        }
        markets.sort();
        markets.dedup();
        if markets.is_empty() && self.rest_url.is_none() {
            return Err(field(
                "markets",
                "list at least one market ticker, or set rest_url to capture all markets",
            ));
        }
        let mut channels = Vec::with_capacity(self.channels.len());
        for name in &self.channels {
            match Channel::from_wire(name) {
                Some(c) if !channels.contains(&c) => channels.push(c),
                Some(_) => {}
                None => {
                    return Err(field("channels", format!("unknown channel {name:?}")));
                }
            }
        }
        if channels.is_empty() {
            return Err(field("channels", "list at least one channel"));
        }
        for (name, v) in [
            ("markets_per_connection", self.markets_per_connection),
            ("markets_per_subscription", self.markets_per_subscription),
            ("connections_per_key", self.connections_per_key),
        ] {
            if v == 0 {
                return Err(field(name, "must be at least 1"));
            }
        }
        if self.commands_per_s == 0 {
            return Err(field("commands_per_s", "must be at least 1"));
        }
        let ms_to_ns = |ms: u64| i64::try_from(ms).unwrap_or(i64::MAX / 1_000_000) * 1_000_000;
        for (name, v) in [
            ("rest_rate_per_s", u64::from(self.rest_rate_per_s)),
            ("rest_burst", u64::from(self.rest_burst)),
            ("reconcile_interval_ms", self.reconcile_interval_ms),
            ("exchange_status_interval_ms", self.exchange_status_interval_ms),
            ("stale_after_ms", self.stale_after_ms),
        ] {
            if v == 0 {
                return Err(field(name, "must be at least 1"));
            }
        }
        let rest = match &self.rest_url {
            None => None,
            Some(url) if url.starts_with("https://") || url.starts_with("http://") => {
                Some(RestSettings {
                    url: url.clone(),
                    rate_per_s: self.rest_rate_per_s,
                    burst: self.rest_burst,
                    poller: self.snapshot_poller,
                    reconcile_interval_ns: ms_to_ns(self.reconcile_interval_ms),
                    status_interval_ns: ms_to_ns(self.exchange_status_interval_ms),
                })
            }
            Some(url) => {
                return Err(field(
                    "rest_url",
                    format!("{url:?} must start with https:// (or http:// for a local simulator)"),
                ));
            }
        };
        // Connections the static markets need at start (+1: the registry's lifecycle session).
        let mut per_shard = vec![0usize; shards.count()];
        for m in &markets {
            per_shard[super::shard_of(m, shards.count())] += 1;
        }
        let needed: usize =
            per_shard.iter().map(|n| n.div_ceil(self.markets_per_connection)).sum::<usize>()
                + usize::from(rest.is_some());
        if needed > self.connections_per_key {
            return Err(field(
                "connections_per_key",
                format!(
                    "{} markets at {} per connection over {} shards need {needed} connections \
                     (the lifecycle session included), more than the {} allowed; raise \
                     markets_per_connection or connections_per_key",
                    markets.len(),
                    self.markets_per_connection,
                    shards.count(),
                    self.connections_per_key
                ),
            ));
        }
        let metrics_addr = match self.metrics_addr.as_deref() {
            Some(METRICS_OFF) => None,
            addr => {
                let addr = addr.unwrap_or(METRICS_ADDR_DEFAULT);
                Some(addr.parse().map_err(|_| {
                    field(
                        "metrics_addr",
                        format!("{addr:?} is not IP:PORT (e.g. \"{METRICS_ADDR_DEFAULT}\"; port 0 picks a free port) or \"{METRICS_OFF}\""),
                    )
                })?)
            }
        };
        let histogram_log = match &self.histogram_log {
            None => None,
            Some(_) if metrics_addr.is_none() => {
                return Err(field(
                    "histogram_log",
                    format!(
                        "the interval log is written by the telemetry thread, which                          metrics_addr = \"{METRICS_OFF}\" turns off; set metrics_addr                          (\"127.0.0.1:0\" picks a free port) or remove histogram_log"
                    ),
                ));
            }
            Some(path) => Some(histogram_log_target(path)?),
        };
        Ok(Checked {
            ws,
            key_id,
            private_key_path,
            ca_cert_path: self.ca_cert_path.clone(),
            database_url,
            shards,
            markets,
            channels,
            markets_per_connection: self.markets_per_connection,
            markets_per_subscription: self.markets_per_subscription,
            connections_per_key: self.connections_per_key,
            commands_per_s: self.commands_per_s,
            metrics_addr,
            rest,
            stale_after: std::time::Duration::from_millis(self.stale_after_ms),
            histogram_log,
        })
    }
}

/// `histogram_log` → (directory, file name prefix): an existing directory takes the default
/// prefix; otherwise the last component is the prefix and its parent must be a directory.
fn histogram_log_target(path: &std::path::Path) -> Result<(PathBuf, String), ConfigError> {
    let bad = |problem: String| field("histogram_log", problem);
    let text = path.to_string_lossy();
    if text.trim().is_empty() {
        return Err(bad("is empty; give an existing directory or a path prefix such as \
             \"/var/log/kdp/gatherer-1\", or remove the key"
            .to_owned()));
    }
    if path.is_dir() {
        return Ok((path.to_path_buf(), HISTOGRAM_LOG_PREFIX_DEFAULT.to_owned()));
    }
    if text.ends_with('/') {
        return Err(bad(format!("directory {text:?} does not exist; create it or fix the path")));
    }
    let prefix = path
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| !n.is_empty() && !n.chars().any(|c| c.is_whitespace() || c == ','))
        .ok_or_else(|| {
            bad(format!(
                "{text:?} does not end in a usable file name prefix (no spaces or commas), \
                 e.g. \"/var/log/kdp/gatherer-1\""
            ))
        })?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(bad(format!(
            "directory {} of {text:?} does not exist or is not a directory; create it \
             (writable by the gatherer) or fix the path",
            dir.display()
        )));
    }
    Ok((dir, prefix.to_owned()))
}

/// Parses `ws[s]://host[:port][/path]` (IPv6 literals are not supported).
pub fn parse_ws_url(url: &str) -> Result<WsUrl, ConfigError> {
    let bad = |why: &str| field("ws_url", format!("{url:?} {why}"));
    let (tls, rest) = if let Some(rest) = url.strip_prefix("wss://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("ws://") {
        (false, rest)
    } else {
        return Err(bad("must start with wss:// (or ws:// for a local simulator)"));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => {
            (host, port.parse::<u16>().map_err(|_| bad("has a port that is not a number"))?)
        }
        None => (authority, if tls { 443 } else { 80 }),
    };
    if host.is_empty() || host.contains(['[', ']', '@']) {
        return Err(bad("needs a host name or IPv4 address"));
    }
    Ok(WsUrl { tls, host: host.to_owned(), port, path: path.to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        ws_url = "wss://localhost:8443/trade-api/ws/v2"
        key_id = "k"
        private_key_path = "/keys/k.pem"
        database_url = "postgres://kdp@127.0.0.1/g1"
        markets = ["B", "A", "B"]
    "#;

    #[test]
    fn a_minimal_file_gets_the_defaults() {
        let c = GathererConfig::from_toml(MINIMAL).unwrap_or_else(|e| panic!("{e}"));
        let c = c.check().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            c.ws,
            WsUrl {
                tls: true,
                host: "localhost".into(),
                port: 8443,
                path: "/trade-api/ws/v2".into()
            }
        );
        assert_eq!(c.markets, ["A", "B"]);
        assert_eq!(c.shards, ShardLayout::Unbound(1));
        assert_eq!(c.channels, [Channel::OrderbookDelta, Channel::Trade, Channel::Ticker]);
        assert_eq!(c.markets_per_connection, MARKETS_PER_CONNECTION_DEFAULT);
    }

    #[test]
    fn the_environment_overrides_the_secrets() {
        let mut c = GathererConfig::from_toml(MINIMAL).unwrap_or_else(|e| panic!("{e}"));
        c.apply_env(|name| (name != ENV_KEY_ID).then(|| format!("env-{name}")));
        assert_eq!(c.key_id.as_deref(), Some("k"));
        assert_eq!(c.private_key_path, Some(PathBuf::from("env-KDP_PRIVATE_KEY_PATH")));
        assert_eq!(c.database_url.as_deref(), Some("env-KDP_DATABASE_URL"));
    }

    #[test]
    fn problems_name_the_field() {
        let with = |extra: &str| {
            let text = format!("{MINIMAL}\n{extra}");
            GathererConfig::from_toml(&text).and_then(|c| c.check()).map(|_| ())
        };
        let field_of = |r: Result<(), ConfigError>| match r {
            Err(ConfigError::Field { field, .. }) => field,
            other => panic!("expected a field error, got {other:?}"),
        };
        assert_eq!(field_of(with("shard_cpus = [0, 0]")), "shard_cpus");
        assert_eq!(field_of(with("shard_cpus = [0]\nshard_count = 1")), "shard_cpus");
        assert_eq!(field_of(with("shard_count = 0")), "shard_count");
        assert_eq!(field_of(with("channels = [\"fills\"]")), "channels");
        assert_eq!(field_of(with("markets_per_connection = 0")), "markets_per_connection");
        assert!(matches!(with("colour = 1"), Err(ConfigError::Parse(_))));
        let no_key = MINIMAL.replace("key_id = \"k\"", "");
        let e = GathererConfig::from_toml(&no_key).and_then(|c| c.check()).err();
        assert_eq!(
            e.map(|e| e.to_string()),
            Some("gatherer config field `key_id`: missing; set it or KDP_KEY_ID".into())
        );
        assert_eq!(with("").map(|()| 1), Ok(1), "the minimal file itself is valid");
    }

    #[test]
    fn ws_urls() {
        let u = parse_ws_url("ws://127.0.0.1/x?y=1").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            u,
            WsUrl { tls: false, host: "127.0.0.1".into(), port: 80, path: "/x?y=1".into() }
        );
        assert_eq!(parse_ws_url("wss://h").map(|u| (u.port, u.path)), Ok((443, "/".into())));
        assert!(parse_ws_url("https://h/").is_err());
        assert!(parse_ws_url("wss://h:x/").is_err());
        assert!(parse_ws_url("wss://:1/").is_err());
    }

    #[test]
    fn histogram_log_is_a_prefix_in_an_existing_directory_or_a_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let check = |log: &str, metrics: &str| {
            let text = format!("{MINIMAL}\nhistogram_log = {log:?}\nmetrics_addr = {metrics:?}");
            GathererConfig::from_toml(&text).and_then(|c| c.check()).map(|c| c.histogram_log)
        };
        let d = dir.path().display().to_string();
        assert_eq!(
            check(&format!("{d}/gatherer-1"), "127.0.0.1:0"),
            Ok(Some((dir.path().to_path_buf(), "gatherer-1".to_owned())))
        );
        assert_eq!(
            check(&d, "127.0.0.1:0"),
            Ok(Some((dir.path().to_path_buf(), HISTOGRAM_LOG_PREFIX_DEFAULT.to_owned())))
        );
        let err = |log: &str, metrics: &str| match check(log, metrics) {
            Err(e) => e.to_string(),
            Ok(c) => panic!("{log:?} accepted: {c:?}"),
        };
        let e = err(&format!("{d}/missing/gatherer-1"), "127.0.0.1:0");
        assert!(
            e.contains("histogram_log") && e.contains("does not exist") && e.contains("create it"),
            "{e}"
        );
        let e = err(&format!("{d}/missing/"), "127.0.0.1:0");
        assert!(e.contains("does not exist; create it"), "{e}");
        let e = err("", "127.0.0.1:0");
        assert!(e.contains("is empty") && e.contains("remove the key"), "{e}");
        let e = err(&format!("{d}/two words"), "127.0.0.1:0");
        assert!(e.contains("usable file name prefix"), "{e}");
        let e = err(&format!("{d}/gatherer-1"), "off");
        assert!(e.contains("set metrics_addr") && e.contains("or remove histogram_log"), "{e}");
        let text = format!("{MINIMAL}\nmetrics_addr = \"off\"");
        let off = GathererConfig::from_toml(&text).and_then(|c| c.check()).map(|c| c.histogram_log);
        assert_eq!(off, Ok(None));
    }

    #[test]
    fn metrics_addr_defaults_to_loopback_9464_and_can_be_off_or_port_0() {
        let check = |extra: &str| {
            GathererConfig::from_toml(&format!("{MINIMAL}{extra}"))
                .unwrap_or_else(|e| panic!("{e}"))
                .check()
                .map(|c| c.metrics_addr.map(|a| a.to_string()))
        };
        assert_eq!(check(""), Ok(Some("127.0.0.1:9464".to_owned())));
        assert_eq!(check("metrics_addr = \"off\""), Ok(None));
        assert_eq!(check("metrics_addr = \"127.0.0.1:0\""), Ok(Some("127.0.0.1:0".to_owned())));
        let Err(err) = check("metrics_addr = \"localhost\"") else { panic!("accepted") };
        let err = err.to_string();
        assert!(err.contains("metrics_addr") && err.contains("IP:PORT"), "{err}");
    }
}
