//! The deduplicator's configuration: a TOML file, the production URL overridable from the
//! environment, checked once at start with errors that name the field and the fix.
//!
//! ```toml
//! production_database_url = "postgres://kdp_dedup@db/kdp"  # or KDP_PRODUCTION_DATABASE_URL
//! # batch_rows_max = 8192            # rows per production transaction (normal mode)
//! # batch_age_ms = 10                # a batch is cut at this age even when not full
//! # catchup_batch_rows_max = 65536   # rows per transaction while far behind (catch-up mode)
//! # catchup_lag_rows = 100000        # unread rows (all gatherers) that switch catch-up on
//! # metrics_addr = "127.0.0.1:9465"  # /metrics and /health; "off"; port 0 picks a free port
//! # poll_interval_ms = 1000          # reader polling fallback when no NOTIFY arrives
//! # read_chunk_rows = 8192           # gseqs a reader fetches per round
//! # ring_capacity = 65536            # rows buffered per reader for the merge thread
//! # migrate = true                   # apply the production migrations at start
//! # live_grace_ms = 30000            # a disconnected gatherer stays live this long (keys wait)
//!
//! # Metadata sync (series, events, markets from REST into production; none without rest_url):
//! # rest_url = "https://api.elections.kalshi.com/trade-api/v2"
//! # rest_ca_cert_path = "kdp-data/sim-cert.pem"  # trust only this CA (the simulator's)
//! # metadata_interval_ms = 300000    # time between the starts of two syncs
//! # rest_rate_per_s = 2              # REST read budget: a small share of Kalshi Basic (20/s)
//! # rest_burst = 2                   #   and its burst, requests
//!
//! # [limits]
//! # index_keys_max = 1000000         # seen-key index size per event kind
//! # watermark_slack_ms = 10000       # how far behind the slowest live gatherer keys are kept
//!
//! [[gatherers]]
//! name = "a"      # metrics label; stable for the life of the gatherer's database
//! id = 0          # production cursor slot 0..7; never reuse one for another database
//! database_url = "postgres://kdp_dedup@10.0.1.10/kdp_gatherer"
//! ```
//!
//! Why an explicit `id`: production's cursor table is keyed by a small integer (the seen-key
//! bitmap bit). Taking it from the list position would silently hand one gatherer's cursor to
//! another when an operator reorders or removes an entry; an explicit id cannot move.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::crash::CrashPoint;
use crate::limits::{GATHERERS_MAX, MergeLimits};
use crate::metadata::{
    METADATA_INTERVAL_MS_DEFAULT, MetadataSettings, REST_BURST_DEFAULT, REST_RATE_PER_S_DEFAULT,
};

/// Environment variable overriding `production_database_url`.
pub const ENV_PRODUCTION_DATABASE_URL: &str = "KDP_PRODUCTION_DATABASE_URL";
/// Telemetry listen address when the file names none: loopback only; 9465 (the gatherer
/// uses 9464, so both fit on one host).
pub const METRICS_ADDR_DEFAULT: &str = "127.0.0.1:9465";
/// The `metrics_addr` value that disables the telemetry HTTP server.
pub const METRICS_OFF: &str = "off";
/// Rows per production transaction in normal mode: ~35 ms of binary COPY at the measured
/// 240k rows/s (DESIGN §3), as for the gatherer writer.
pub const BATCH_ROWS_MAX_DEFAULT: usize = MergeLimits::DEFAULT.batch_rows_max;
/// A batch is cut at this age: the latency a quiet stream adds, at most 100 commits/s.
pub const BATCH_AGE_MS_DEFAULT: u64 = 10;
/// Rows per transaction in catch-up mode: 8x fewer commits (each ~2 ms of fixed cost) while
/// far behind; ~270 ms of COPY per transaction, still far below any timeout.
pub const CATCHUP_BATCH_ROWS_MAX_DEFAULT: usize = 65_536;
/// Unread rows over all gatherers that switch catch-up mode on: ~10 s of the exchange at
/// 10,000 events/s, far above the few batches a healthy pipeline has in flight.
pub const CATCHUP_LAG_ROWS_DEFAULT: u64 = 100_000;
/// Reader polling fallback: a lost NOTIFY (LISTEN connection replaced, notification queue
/// overflow) delays rows by at most a second.
pub const POLL_INTERVAL_MS_DEFAULT: u64 = 1_000;
/// Gseqs a reader fetches per round: one query per table over a gseq span of this many rows
/// (gseqs are dense across tables, so the span bounds the rows exactly); 8,192 rows are a few
/// MB in memory and ~20 ms of reading.
pub const READ_CHUNK_ROWS_DEFAULT: usize = 8_192;
/// Rows buffered per reader for the merge thread: 65,536 are ~0.5 s of a busy exchange and
/// ~10 MB; a full ring pauses that reader (backpressure, never loss).
pub const RING_CAPACITY_DEFAULT: usize = 65_536;
/// How long a gatherer whose reader lost its connection stays *live* for the merge core (keys
/// wait for its bit; it holds the watermark back): a brief drop (a gatherer database restart, a
/// cut connection, reconnected within the reader's backoff of 0.1–5 s) must not evict the keys
/// the others deliver meanwhile, or its re-reads of them are emitted again and redone through
/// the staging backstop (~2x slower). 30 s covers a PostgreSQL restart; past it, a dead gatherer
/// costs at most 30 s of keys held for it (~300k at 10,000 events/s, below `index_keys_max`).
pub const LIVE_GRACE_MS_DEFAULT: u64 = 30_000;
/// Largest read chunk and ring accepted: typo guards (16M rows would be GBs of memory).
pub const ROWS_SETTING_MAX: usize = 1 << 24;

/// The configuration as written in the file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupConfig {
    /// Production PostgreSQL.
    #[serde(default)]
    pub production_database_url: Option<String>,
    /// Rows per production transaction in normal mode.
    #[serde(default = "default_batch_rows_max")]
    pub batch_rows_max: usize,
    /// A batch is cut at this age, ms.
    #[serde(default = "default_batch_age_ms")]
    pub batch_age_ms: u64,
    /// Rows per production transaction in catch-up mode.
    #[serde(default = "default_catchup_batch_rows_max")]
    pub catchup_batch_rows_max: usize,
    /// Unread rows (all gatherers together) above which catch-up mode is on.
    #[serde(default = "default_catchup_lag_rows")]
    pub catchup_lag_rows: u64,
    /// Telemetry address: absent → [`METRICS_ADDR_DEFAULT`]; [`METRICS_OFF`] runs no server.
    #[serde(default)]
    pub metrics_addr: Option<String>,
    /// Reader polling fallback, ms.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// Gseqs a reader fetches per round.
    #[serde(default = "default_read_chunk_rows")]
    pub read_chunk_rows: usize,
    /// Rows buffered per reader.
    #[serde(default = "default_ring_capacity")]
    pub ring_capacity: usize,
    /// Apply the production migrations at start.
    #[serde(default = "default_true")]
    pub migrate: bool,
    /// A disconnected reader's gatherer stays live this long, ms (0: not live at once).
    #[serde(default = "default_live_grace_ms")]
    pub live_grace_ms: u64,
    /// Merge core bounds.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// The gatherer databases.
    #[serde(default)]
    pub gatherers: Vec<GathererEntry>,
    /// Kalshi's REST base URL for the metadata sync; absent: no sync.
    #[serde(default)]
    pub rest_url: Option<String>,
    /// PEM CA file the REST client trusts instead of the Mozilla roots.
    #[serde(default)]
    pub rest_ca_cert_path: Option<PathBuf>,
    /// Time between the starts of two metadata syncs, ms.
    #[serde(default = "default_metadata_interval_ms")]
    pub metadata_interval_ms: u64,
    /// REST read budget of the metadata sync, requests per second.
    #[serde(default = "default_rest_rate_per_s")]
    pub rest_rate_per_s: u32,
    /// REST bucket capacity of the metadata sync, requests.
    #[serde(default = "default_rest_burst")]
    pub rest_burst: u32,
}

fn default_metadata_interval_ms() -> u64 {
    METADATA_INTERVAL_MS_DEFAULT
}
fn default_rest_rate_per_s() -> u32 {
    REST_RATE_PER_S_DEFAULT
}
fn default_rest_burst() -> u32 {
    REST_BURST_DEFAULT
}

/// `[limits]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// See [`MergeLimits::index_keys_max`].
    #[serde(default = "default_index_keys_max")]
    pub index_keys_max: usize,
    /// See [`MergeLimits::watermark_slack_ns`], in ms.
    #[serde(default = "default_watermark_slack_ms")]
    pub watermark_slack_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            index_keys_max: default_index_keys_max(),
            watermark_slack_ms: default_watermark_slack_ms(),
        }
    }
}

/// One `[[gatherers]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GathererEntry {
    /// Metrics label and log name.
    pub name: String,
    /// Production cursor slot and seen-key bit, 0..7.
    pub id: u8,
    /// The gatherer's database.
    pub database_url: String,
}

fn default_batch_rows_max() -> usize {
    BATCH_ROWS_MAX_DEFAULT
}
fn default_batch_age_ms() -> u64 {
    BATCH_AGE_MS_DEFAULT
}
fn default_catchup_batch_rows_max() -> usize {
    CATCHUP_BATCH_ROWS_MAX_DEFAULT
}
fn default_catchup_lag_rows() -> u64 {
    CATCHUP_LAG_ROWS_DEFAULT
}
fn default_poll_interval_ms() -> u64 {
    POLL_INTERVAL_MS_DEFAULT
}
fn default_read_chunk_rows() -> usize {
    READ_CHUNK_ROWS_DEFAULT
}
fn default_ring_capacity() -> usize {
    RING_CAPACITY_DEFAULT
}
fn default_live_grace_ms() -> u64 {
    LIVE_GRACE_MS_DEFAULT
}
fn default_true() -> bool {
    true
}
fn default_index_keys_max() -> usize {
    MergeLimits::DEFAULT.index_keys_max
}
fn default_watermark_slack_ms() -> u64 {
    u64::try_from(MergeLimits::DEFAULT.watermark_slack_ns / 1_000_000).unwrap_or(10_000)
}

/// A config problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The file is not valid TOML for this struct.
    #[error("dedup config is not valid: {0}")]
    Parse(String),
    /// A field is missing or wrong.
    #[error("dedup config field `{field}`: {problem}")]
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

/// One checked gatherer.
#[derive(Clone)]
pub struct GathererSettings {
    /// Metrics label.
    pub name: String,
    /// Cursor slot and seen-key bit.
    pub id: u8,
    /// Connection settings (the URL may carry a password: never printed).
    pub database: postgres::Config,
}

impl std::fmt::Debug for GathererSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // postgres::Config's Debug redacts the password.
        f.debug_struct("GathererSettings")
            .field("name", &self.name)
            .field("id", &self.id)
            .field("database", &self.database)
            .finish()
    }
}

/// A checked configuration, ready for [`crate::service::Dedup::start`].
#[derive(Debug, Clone)]
pub struct Checked {
    /// Production connection settings.
    pub production: postgres::Config,
    /// Merge core bounds (its `batch_rows_max` is the catch-up size: the largest batch).
    pub limits: MergeLimits,
    /// Rows per transaction in normal mode.
    pub batch_rows_max: usize,
    /// Rows per transaction in catch-up mode.
    pub catchup_batch_rows_max: usize,
    /// Unread rows that switch catch-up mode on.
    pub catchup_lag_rows: u64,
    /// Batch age bound.
    pub batch_age: Duration,
    /// Telemetry listen address; `None` when turned off.
    pub metrics_addr: Option<SocketAddr>,
    /// Reader polling fallback.
    pub poll_interval: Duration,
    /// Gseqs per read round.
    pub read_chunk_rows: usize,
    /// Rows per reader ring.
    pub ring_capacity: usize,
    /// Apply the production migrations at start.
    pub migrate: bool,
    /// How long a gatherer stays live after its reader's connection dropped.
    pub live_grace: Duration,
    /// The gatherers, in file order.
    pub gatherers: Vec<GathererSettings>,
    /// Test-only: where the process aborts ([`crate::crash`]); never from the file, set by the
    /// binary from `KDP_DEDUP_CRASH_AT`. `None` (always in production) arms nothing.
    pub crash: Option<CrashPoint>,
    /// The metadata sync, when `rest_url` is set.
    pub metadata: Option<MetadataSettings>,
}

impl DedupConfig {
    /// Parses the TOML text of a config file.
    pub fn from_toml(text: &str) -> Result<DedupConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))
    }

    /// Applies [`ENV_PRODUCTION_DATABASE_URL`]; `lookup` reads a variable (the CLI passes
    /// `std::env::var`), so this crate never touches the process environment itself.
    pub fn apply_env(&mut self, lookup: impl Fn(&str) -> Option<String>) {
        if let Some(v) = lookup(ENV_PRODUCTION_DATABASE_URL).filter(|v| !v.trim().is_empty()) {
            self.production_database_url = Some(v);
        }
    }

    /// Checks every field; the first problem found is the error.
    pub fn check(&self) -> Result<Checked, ConfigError> {
        let url = self
            .production_database_url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .ok_or_else(|| {
                field(
                    "production_database_url",
                    format!("missing; set it or {ENV_PRODUCTION_DATABASE_URL}"),
                )
            })?;
        let production = parse_url("production_database_url", url)?;
        for (name, v) in [
            ("batch_rows_max", self.batch_rows_max),
            ("catchup_batch_rows_max", self.catchup_batch_rows_max),
            ("read_chunk_rows", self.read_chunk_rows),
            ("ring_capacity", self.ring_capacity),
            ("limits.index_keys_max", self.limits.index_keys_max),
        ] {
            if v == 0 {
                return Err(field(name, "must be at least 1, got 0"));
            }
            if name != "limits.index_keys_max" && v > ROWS_SETTING_MAX {
                return Err(field(name, format!("must be 1 to {ROWS_SETTING_MAX}, got {v}")));
            }
        }
        if self.catchup_batch_rows_max < self.batch_rows_max {
            return Err(field(
                "catchup_batch_rows_max",
                format!(
                    "{} is below batch_rows_max ({}): catch-up batches are the larger ones",
                    self.catchup_batch_rows_max, self.batch_rows_max
                ),
            ));
        }
        for (name, v) in
            [("batch_age_ms", self.batch_age_ms), ("poll_interval_ms", self.poll_interval_ms)]
        {
            if v == 0 {
                return Err(field(name, "must be at least 1"));
            }
        }
        let slack_ns = i64::try_from(self.limits.watermark_slack_ms)
            .ok()
            .and_then(|ms| ms.checked_mul(1_000_000))
            .ok_or_else(|| field("limits.watermark_slack_ms", "too large"))?;
        let limits = MergeLimits {
            index_keys_max: self.limits.index_keys_max,
            watermark_slack_ns: slack_ns,
            batch_rows_max: self.catchup_batch_rows_max,
        };
        limits.check().map_err(|e| field("limits", e))?;
        if self.gatherers.is_empty() || self.gatherers.len() > GATHERERS_MAX {
            return Err(field(
                "gatherers",
                format!(
                    "list 1 to {GATHERERS_MAX} [[gatherers]] entries (name, id, database_url), \
                     got {}",
                    self.gatherers.len()
                ),
            ));
        }
        let mut gatherers: Vec<GathererSettings> = Vec::with_capacity(self.gatherers.len());
        for g in &self.gatherers {
            if g.name.is_empty()
                || !g.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(field(
                    "gatherers.name",
                    format!("{:?}: use letters, digits, '_' and '-' only", g.name),
                ));
            }
            if usize::from(g.id) >= GATHERERS_MAX {
                return Err(field(
                    "gatherers.id",
                    format!("gatherer {:?}: id {} is not 0 to {}", g.name, g.id, GATHERERS_MAX - 1),
                ));
            }
            if let Some(other) = gatherers.iter().find(|o| o.name == g.name) {
                return Err(field("gatherers.name", format!("{:?} is listed twice", other.name)));
            }
            if let Some(other) = gatherers.iter().find(|o| o.id == g.id) {
                return Err(field(
                    "gatherers.id",
                    format!("gatherers {:?} and {:?} both have id {}", other.name, g.name, g.id),
                ));
            }
            let database = parse_url("gatherers.database_url", &g.database_url)?;
            gatherers.push(GathererSettings { name: g.name.clone(), id: g.id, database });
        }
        let metrics_addr = match self.metrics_addr.as_deref() {
            Some(METRICS_OFF) => None,
            addr => {
                let addr = addr.unwrap_or(METRICS_ADDR_DEFAULT);
                Some(addr.parse().map_err(|_| {
                    field(
                        "metrics_addr",
                        format!(
                            "{addr:?} is not IP:PORT (e.g. \"{METRICS_ADDR_DEFAULT}\"; port 0 \
                             picks a free port) or \"{METRICS_OFF}\""
                        ),
                    )
                })?)
            }
        };
        let metadata = self.metadata_settings()?;
        Ok(Checked {
            production,
            limits,
            batch_rows_max: self.batch_rows_max,
            catchup_batch_rows_max: self.catchup_batch_rows_max,
            catchup_lag_rows: self.catchup_lag_rows,
            batch_age: Duration::from_millis(self.batch_age_ms),
            metrics_addr,
            poll_interval: Duration::from_millis(self.poll_interval_ms),
            read_chunk_rows: self.read_chunk_rows,
            ring_capacity: self.ring_capacity,
            migrate: self.migrate,
            live_grace: Duration::from_millis(self.live_grace_ms),
            gatherers,
            crash: None,
            metadata,
        })
    }

    fn metadata_settings(&self) -> Result<Option<MetadataSettings>, ConfigError> {
        let Some(url) = self.rest_url.as_deref().map(str::trim).filter(|u| !u.is_empty()) else {
            return Ok(None);
        };
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(field(
                "rest_url",
                format!("{url:?} must start with https:// (or http:// for a local simulator)"),
            ));
        }
        for (name, v) in [
            ("metadata_interval_ms", self.metadata_interval_ms),
            ("rest_rate_per_s", u64::from(self.rest_rate_per_s)),
            ("rest_burst", u64::from(self.rest_burst)),
        ] {
            if v == 0 {
                return Err(field(name, "must be at least 1"));
            }
        }
        Ok(Some(MetadataSettings {
            rest_url: url.to_owned(),
            ca_file: self.rest_ca_cert_path.clone(),
            budget: kdp_ingest::rest::RateBudget {
                capacity: self.rest_burst,
                refill_per_s: self.rest_rate_per_s,
            },
            interval: Duration::from_millis(self.metadata_interval_ms),
            migrate: self.migrate,
        }))
    }
}

fn parse_url(name: &'static str, url: &str) -> Result<postgres::Config, ConfigError> {
    // The parse error does not echo the URL (it may carry a password).
    url.trim()
        .parse::<postgres::Config>()
        .map_err(|e| field(name, format!("not a PostgreSQL URL or key=value string: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        production_database_url = "postgres://kdp@127.0.0.1/prod"
        [[gatherers]]
        name = "a"
        id = 0
        database_url = "postgres://kdp@127.0.0.1/g1"
    "#;

    fn check(text: &str) -> Result<Checked, ConfigError> {
        DedupConfig::from_toml(text)?.check()
    }

    fn problem(text: &str) -> String {
        check(text).map(|_| ()).err().map(|e| e.to_string()).unwrap_or_default()
    }

    #[test]
    fn defaults() {
        let c = check(MINIMAL).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.batch_rows_max, 8_192);
        assert_eq!(c.catchup_batch_rows_max, 65_536);
        assert_eq!(c.catchup_lag_rows, 100_000);
        assert_eq!(c.batch_age, Duration::from_millis(10));
        assert_eq!(
            c.metrics_addr,
            Some("127.0.0.1:9465".parse().unwrap_or_else(|e| panic!("{e}")))
        );
        assert_eq!(c.poll_interval, Duration::from_secs(1));
        assert_eq!((c.read_chunk_rows, c.ring_capacity), (8_192, 65_536));
        assert!(c.migrate);
        assert_eq!(c.live_grace, Duration::from_secs(30));
        assert_eq!(c.limits, MergeLimits { batch_rows_max: 65_536, ..MergeLimits::DEFAULT });
        assert_eq!(c.gatherers.len(), 1);
        assert_eq!((c.gatherers[0].name.as_str(), c.gatherers[0].id), ("a", 0));
        assert_eq!(c.gatherers[0].database.get_dbname(), Some("g1"));
        assert_eq!(c.production.get_dbname(), Some("prod"));
        assert_eq!(c.metadata, None, "no rest_url: no metadata sync");
    }

    #[test]
    fn metadata_keys() {
        let c = check(&format!("rest_url = \"http://127.0.0.1:1/trade-api/v2\"\n{MINIMAL}"))
            .unwrap_or_else(|e| panic!("{e}"));
        let m = c.metadata.unwrap_or_else(|| panic!("metadata settings"));
        assert_eq!(m.rest_url, "http://127.0.0.1:1/trade-api/v2");
        assert_eq!(m.interval, Duration::from_secs(300));
        assert_eq!(
            m.budget,
            kdp_ingest::rest::RateBudget { capacity: 2, refill_per_s: 2 },
            "a tenth of Kalshi Basic"
        );
        assert_eq!(m.ca_file, None);
        assert!(m.migrate);
        let c = check(&format!(
            "rest_url = \"https://h/trade-api/v2\"\nrest_ca_cert_path = \"/x.pem\"\n\
             metadata_interval_ms = 1000\nrest_rate_per_s = 5\nrest_burst = 7\nmigrate = false\n\
             {MINIMAL}"
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        let m = c.metadata.unwrap_or_else(|| panic!("metadata settings"));
        assert_eq!(m.interval, Duration::from_secs(1));
        assert_eq!(m.budget, kdp_ingest::rest::RateBudget { capacity: 7, refill_per_s: 5 });
        assert_eq!(m.ca_file, Some(PathBuf::from("/x.pem")));
        assert!(!m.migrate);
        assert_eq!(
            problem(&format!("rest_url = \"ftp://h\"\n{MINIMAL}")),
            "dedup config field `rest_url`: \"ftp://h\" must start with https:// (or http:// for \
             a local simulator)"
        );
        assert_eq!(
            problem(&format!("rest_url = \"https://h/x\"\nrest_burst = 0\n{MINIMAL}")),
            "dedup config field `rest_burst`: must be at least 1"
        );
    }

    #[test]
    fn the_environment_wins_for_production() {
        let mut c = DedupConfig::from_toml(MINIMAL).unwrap_or_else(|e| panic!("{e}"));
        c.apply_env(|name| {
            (name == ENV_PRODUCTION_DATABASE_URL).then(|| "postgres://x@h/fromenv".to_owned())
        });
        let checked = c.check().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(checked.production.get_dbname(), Some("fromenv"));
        let mut c = DedupConfig::from_toml(MINIMAL).unwrap_or_else(|e| panic!("{e}"));
        c.production_database_url = None;
        assert_eq!(
            c.check().err().map(|e| e.to_string()),
            Some(
                "dedup config field `production_database_url`: missing; set it or \
                 KDP_PRODUCTION_DATABASE_URL"
                    .to_owned()
            )
        );
    }

    #[test]
    fn problems_name_the_field() {
        let two = |a: &str, b: &str| {
            format!(
                "production_database_url = \"postgres://h/p\"\n\
                 [[gatherers]]\n{a}\ndatabase_url = \"postgres://h/g1\"\n\
                 [[gatherers]]\n{b}\ndatabase_url = \"postgres://h/g2\"\n"
            )
        };
        assert_eq!(
            problem(&two("name = \"a\"\nid = 0", "name = \"a\"\nid = 1")),
            "dedup config field `gatherers.name`: \"a\" is listed twice"
        );
        assert_eq!(
            problem(&two("name = \"a\"\nid = 1", "name = \"b\"\nid = 1")),
            "dedup config field `gatherers.id`: gatherers \"a\" and \"b\" both have id 1"
        );
        assert_eq!(
            problem(&two("name = \"a\"\nid = 8", "name = \"b\"\nid = 1")),
            "dedup config field `gatherers.id`: gatherer \"a\": id 8 is not 0 to 7"
        );
        assert_eq!(
            problem(&two("name = \"a b\"\nid = 0", "name = \"b\"\nid = 1")),
            "dedup config field `gatherers.name`: \"a b\": use letters, digits, '_' and '-' only"
        );
        assert_eq!(
            problem("production_database_url = \"postgres://h/p\"\n"),
            "dedup config field `gatherers`: list 1 to 8 [[gatherers]] entries (name, id, \
             database_url), got 0"
        );
        assert_eq!(
            problem(&format!("batch_rows_max = 0\n{MINIMAL}")),
            "dedup config field `batch_rows_max`: must be at least 1, got 0"
        );
        assert_eq!(
            problem(&format!("batch_rows_max = 100000\n{MINIMAL}")),
            "dedup config field `catchup_batch_rows_max`: 65536 is below batch_rows_max \
             (100000): catch-up batches are the larger ones"
        );
        assert_eq!(
            problem(&format!("metrics_addr = \"nowhere\"\n{MINIMAL}")),
            "dedup config field `metrics_addr`: \"nowhere\" is not IP:PORT (e.g. \
             \"127.0.0.1:9465\"; port 0 picks a free port) or \"off\""
        );
        assert!(problem(&format!("bogus = 1\n{MINIMAL}")).starts_with("dedup config is not valid"));
        let off =
            check(&format!("metrics_addr = \"off\"\n{MINIMAL}")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(off.metrics_addr, None);
    }

    #[test]
    fn the_deploy_example_is_a_valid_config() {
        let text = include_str!("../../deploy/config/dedup.toml");
        let c = check(text).unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<(&str, u8)> = c.gatherers.iter().map(|g| (g.name.as_str(), g.id)).collect();
        assert_eq!(names, [("a", 0), ("b", 1), ("c", 2)]);
        assert_eq!(c.metrics_addr.map(|a| a.port()), Some(9465));
    }
}
