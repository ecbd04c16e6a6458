//! `kdp demo`: the whole pipeline on one machine, in one command (issue 6 item 1).
//!
//! - **PostgreSQL**: one embedded cluster (`engine::pg`, durable) in `--dir`/pg, created on the
//!   first run and started again on the next; the demo databases (`gatherer_a`, `gatherer_b`,
//!   `gatherer_c`, `production`) are dropped and created afresh each run (the banner says so).
//!   As root the server runs as the `postgres` user, which must pass through every parent of
//!   `--dir`; when it cannot (the engine's check names the blocking directory), the cluster lives
//!   in `/var/tmp/kdp-demo-<hash of --dir>/pg` instead, said on stderr and reused next time.
//! - **The simulator** in this process on its real-time clock: `--markets` markets at `--rate`
//!   events/s, a generated Ed25519 key registered (the gatherers sign their wss handshake with
//!   it), light random faults on every connection (`--faults light`: dropped and duplicated
//!   frames, closes, silences, overflows, outages), its truth file in `--dir`.
//! - **Three gatherers**, each a separate `kdp gatherer --config DIR/gatherer-X.toml` process (in
//!   its own process group, so a terminal Ctrl-C reaches only the demo, which stops them in
//!   order; interrupted by the kernel if the demo dies), logs in `DIR/gatherer-X.log`, metrics on
//!   free loopback ports. `--kill-gatherer-every` SIGKILLs one (round robin) and restarts it
//!   after [`RESTART_PAUSE`]; a gatherer that exits on its own is restarted the same way.
//! - **The deduplicator** in this process (`kdp_dedup::service`), its log in `DIR/demo.log`.
//!
//! Once a second a progress line on stderr: per gatherer msgs/s, gaps, reconnects (its
//! `/metrics`), dedup rows/s, lag, duplicates dropped and the end-to-end (exchange → production
//! commit) p50/p99 (the dedup's `/metrics`).
//!
//! The stop (Ctrl-C, SIGTERM or `--duration`): the simulator first (its connections close with
//! 1001 after sending what they hold, so each gatherer records the disconnect as a gap and the
//! truth file is complete), then SIGTERM to every gatherer and wait (they drain and commit),
//! then the dedup runs until production's cursor of every gatherer reaches that gatherer's last
//! committed gseq, then it stops, and `kdp verify`'s own code checks production against the
//! truth file and the three gatherer databases. Exit 0 when it passes, 1 otherwise.

use std::fs::OpenOptions;
use std::io::{Read as _, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Args;
use kdp_engine::pg::{EmbeddedPostgres, PgError};
use kdp_ingest::gatherer::shard::fnv1a64;
use kdp_sim::market::MarketConfig;
use kdp_sim::transport::auth::generate_demo_key;
use kdp_sim::transport::faults::FaultConfig;
use kdp_sim::transport::hub::Clock;
use kdp_sim::transport::{SimConfig, SimHandle, Simulator};

use crate::{FaultPreset, LIGHT_FAULTS, VerifyArgs};

/// The gatherers' names: databases `gatherer_<name>`, configs `gatherer-<name>.toml`.
const GATHERERS: [&str; 3] = ["a", "b", "c"];
/// The production database.
const PRODUCTION_DB: &str = "production";
/// The API key id the simulator accepts and the gatherers sign with.
const KEY_ID: &str = "kdp-demo";
/// How long a killed (or exited) gatherer stays down before it is started again.
pub const RESTART_PAUSE: Duration = Duration::from_secs(1);
/// The shortest `--kill-gatherer-every`: a gatherer must be back before the next one is killed,
/// so two are never down together.
const KILL_EVERY_MIN: Duration = Duration::from_secs(2);
/// How long a gatherer gets to drain and commit after SIGTERM before it is killed.
const GATHERER_STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// The dedup must advance some cursor at least this often while catching up, or the demo fails.
const CATCH_UP_STALL: Duration = Duration::from_secs(60);
/// Bound on one `/metrics` scrape.
const SCRAPE_TIMEOUT: Duration = Duration::from_millis(500);
/// Progress line interval.
const TICK: Duration = Duration::from_secs(1);
/// Findings of each class `verify` prints as examples.
const VERIFY_EXAMPLES: usize = 5;
/// Environment variables that would override the generated configs of the gatherer processes.
const CHILD_ENV_OVERRIDES: [&str; 4] =
    ["KDP_DATABASE_URL", "KDP_KEY_ID", "KDP_PRIVATE_KEY_PATH", "KDP_PRODUCTION_DATABASE_URL"];

/// `kdp demo` flags.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where the demo keeps everything: the PostgreSQL cluster (reused by the next run), the
    /// generated configs and key, the truth file and the logs. As root, every parent directory
    /// must be traversable by the `postgres` user.
    #[arg(long, value_name = "DIR", default_value = "./kdp-data")]
    dir: PathBuf,
    /// How long the pipeline runs before it is stopped and verified (e.g. 60s, 2m); Ctrl-C
    /// stops it earlier.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// Markets in the simulated exchange; every gatherer subscribes to all of them.
    #[arg(long, default_value_t = 2_000)]
    markets: usize,
    /// Exchange events per second, all markets together.
    #[arg(long = "rate", value_name = "MSGS_PER_S", default_value_t = 3_000)]
    rate: u64,
    /// Random faults on every connection: `light` (dropped and duplicated frames, closes,
    /// silences, overflows, outages; no refused handshakes, which stop a gatherer by design)
    /// or `none`.
    #[arg(long, value_enum, default_value_t = FaultPreset::Light)]
    faults: FaultPreset,
    /// SIGKILL one gatherer (round robin) this often and restart it 1 s later: the other two
    /// keep production complete (at least 2s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    kill_gatherer_every: Option<Duration>,
    /// Seed of the simulated exchange (catalog, order flow, faults).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// After the report, keep PostgreSQL running (for psql) until Ctrl-C.
    #[arg(long)]
    keep_running: bool,
}

/// `30s`, `500ms`, `2m` or plain seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("expected a duration such as 60s, 500ms or 2m, got {s:?}");
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let d = match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        _ => return Err(bad()),
    };
    if d.is_zero() {
        return Err(format!("{s:?}: the duration must be positive"));
    }
    Ok(d)
}

fn wall_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `n` events over `ms` milliseconds, per second.
fn per_s(n: u64, ms: u64) -> u64 {
    n.saturating_mul(1_000) / ms.max(1)
}

/// µs as milliseconds with one decimal.
fn ms1(us: u64) -> String {
    format!("{}.{} ms", us / 1_000, us % 1_000 / 100)
}

/// A line on stderr (progress); write errors (a closed terminal) are ignored.
fn note(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{text}");
}

/// Runs the demo; `Err` carries the message for a failure (exit 1).
pub fn run(args: &DemoArgs) -> Result<(), String> {
    if let Some(every) = args.kill_gatherer_every
        && every < KILL_EVERY_MIN
    {
        return Err(format!(
            "kdp demo: --kill-gatherer-every {every:?} is shorter than {KILL_EVERY_MIN:?}; a killed \
             gatherer must be back before the next is killed"
        ));
    }
    let dir = prepare_dir(&args.dir)?;
    init_log(&dir)?;
    let stop = Arc::new(AtomicBool::new(false));
    let sim_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("sim-rt")
        .enable_all()
        .build()
        .map_err(|e| format!("kdp demo: cannot start the tokio runtime: {e}"))?;
    watch_signals(&sim_rt, Arc::clone(&stop))?;

    // PostgreSQL.
    let (pg_root, reused, pg) = start_cluster(&dir)?;
    note(&format!(
        "kdp demo: PostgreSQL {} in {} (port {}); databases {} dropped and created afresh (the \
         cluster is kept)",
        if reused { "cluster reused" } else { "cluster created" },
        pg_root.display(),
        pg.port(),
        database_names().join(", ")
    ));
    recreate_databases(&pg)?;

    // Simulator.
    let key = generate_demo_key().map_err(|e| format!("kdp demo: {e}"))?;
    let key_path = dir.join("kdp-demo.key");
    write_private(&key_path, &key.private_pkcs8_pem)?;
    let truth_path = dir.join("demo.truth");
    let faults = match args.faults {
        FaultPreset::None => FaultConfig::default(),
        // A refused handshake (401) stops a gatherer by design (a key problem no retry fixes).
        FaultPreset::Light => FaultConfig { seed: args.seed, bad_signature_ppm: 0, ..LIGHT_FAULTS },
    };
    let market = MarketConfig {
        seed: args.seed,
        markets: args.markets,
        rate_msgs_per_s: args.rate,
        start_ts_ns: wall_ns(),
        ..MarketConfig::default()
    };
    let mut cfg = SimConfig::new(market, dir.join("sim-cert.pem"));
    cfg.clock = Clock::RealTime { speed: 1 };
    cfg.ws_addr = None;
    cfg.rest_addr = None;
    cfg.keys
        .insert_pem(KEY_ID, &key.public_spki_pem)
        .map_err(|e| format!("kdp demo: the generated key does not load: {e}"))?;
    cfg.faults = faults;
    cfg.truth_path = Some(truth_path.clone());
    let sim = sim_rt.block_on(Simulator::start(cfg)).map_err(|e| format!("kdp demo: {e}"))?;
    let tickers: Vec<String> = sim_rt
        .block_on(sim.hub().query(|ex| ex.markets().iter().map(|m| m.ticker.clone()).collect()))
        .map_err(|_| "kdp demo: the simulator stopped at start".to_owned())?;
    let ws_url = sim.wss_url().ok_or("kdp demo: the simulator has no wss listener")?;
    note(&format!(
        "kdp demo: simulator {ws_url}: {} markets, {} events/s, faults {}{}",
        tickers.len(),
        args.rate,
        match args.faults {
            FaultPreset::None => "none",
            FaultPreset::Light => "light",
        },
        sim.control_addr()
            .map(|a| format!(" (inject more: POST http://{a}/faults/...)"))
            .unwrap_or_default()
    ));

    // Gatherers.
    let exe = std::env::current_exe()
        .map_err(|e| format!("kdp demo: cannot find the kdp executable: {e}"))?;
    let mut gatherers = Vec::with_capacity(GATHERERS.len());
    for name in GATHERERS {
        let metrics = free_port()?;
        let config = dir.join(format!("gatherer-{name}.toml"));
        let text = gatherer_toml(&GathererSettings {
            ws_url: &ws_url,
            key: &key_path,
            ca: sim.cert_pem_path(),
            database_url: &pg.url(&format!("gatherer_{name}")),
            metrics,
            markets: &tickers,
        });
        std::fs::write(&config, text)
            .map_err(|e| format!("kdp demo: cannot write {}: {e}", config.display()))?;
        let log = dir.join(format!("gatherer-{name}.log"));
        let mut g = GathererProc::new(name, exe.clone(), config, log, metrics);
        g.spawn()?;
        gatherers.push(g);
    }
    note(&format!(
        "kdp demo: 3 gatherers started (kdp gatherer --config {}/gatherer-{{a,b,c}}.toml; logs \
         gatherer-{{a,b,c}}.log)",
        dir.display()
    ));

    // Deduplicator.
    let dedup = start_dedup(&pg)?;
    note(&format!(
        "kdp demo: dedup started (in this process; log {}); running for {:?}{}; Ctrl-C stops \
         earlier",
        dir.join("demo.log").display(),
        args.duration,
        args.kill_gatherer_every
            .map(|d| format!(", one gatherer SIGKILLed every {d:?} and restarted"))
            .unwrap_or_default()
    ));

    let mut rig = Rig { gatherers, dedup, started: Instant::now(), kill_next: 0 };
    let result = rig.run_until(&stop, args.duration, args.kill_gatherer_every);
    let stopped = rig.stop(&sim_rt, sim, &pg);
    result.and(stopped)?;

    // Verify.
    let mut out = std::io::stdout().lock();
    let write = |e: std::io::Error| format!("kdp demo: cannot write the report: {e}");
    writeln!(out, "\nkdp demo: verify (the same check as `kdp verify`)").map_err(write)?;
    let verify_args = VerifyArgs {
        production: pg.url(PRODUCTION_DB),
        gatherers: GATHERERS.iter().map(|g| pg.url(&format!("gatherer_{g}"))).collect(),
        truth: Some(truth_path),
        examples: VERIFY_EXAMPLES,
    };
    let verified = crate::verify(&verify_args, &mut out);
    write_query_help(&mut out, &pg, args.keep_running).map_err(write)?;
    drop(out);
    if args.keep_running {
        stop.store(false, Ordering::Release);
        while !stop.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    pg.stop().map_err(|e| format!("kdp demo: stopping PostgreSQL: {e}"))?;
    verified.map_err(|f| match f {
        crate::Failure::Failed(m) | crate::Failure::Usage(m) => m,
    })
}

fn database_names() -> Vec<String> {
    GATHERERS.iter().map(|g| format!("gatherer_{g}")).chain([PRODUCTION_DB.to_owned()]).collect()
}

/// Where the demo's cluster lives when `DIR/pg` cannot: as root the server runs as `postgres`,
/// which cannot pass through a 0700 parent such as root's home (a fresh clone under `/root`).
/// One directory per `--dir` (named by a hash of its path), so the next run finds it again.
const FALLBACK_CLUSTER_PARENT: &str = "/var/tmp";

/// Starts (or creates) the demo's cluster in `DIR/pg`, or, when the `postgres` user cannot reach
/// `DIR`, in `/var/tmp/kdp-demo-<hash of DIR>/pg` (said on stderr). Returns its root, whether it
/// existed, and the running server.
fn start_cluster(dir: &Path) -> Result<(PathBuf, bool, EmbeddedPostgres), String> {
    let start = |root: PathBuf| {
        let reused = root.join("data").join("PG_VERSION").is_file();
        EmbeddedPostgres::persistent(&root).map(|pg| (root, reused, pg))
    };
    let fail = |root: &Path, e: PgError| format!("kdp demo: PostgreSQL in {}: {e}", root.display());
    let pg_root = dir.join("pg");
    match start(pg_root.clone()) {
        Ok(started) => Ok(started),
        Err(PgError::DirNotTraversable { blocked, mode, .. }) => {
            let hash = fnv1a64(dir.as_os_str().as_encoded_bytes());
            let parent = Path::new(FALLBACK_CLUSTER_PARENT).join(format!("kdp-demo-{hash:016x}"));
            note(&format!(
                "kdp demo: the postgres user cannot reach {} ({} has mode {mode:o}); the cluster \
                 lives in {} instead (kept for the next run with this --dir)",
                pg_root.display(),
                blocked.display(),
                parent.join("pg").display()
            ));
            std::fs::create_dir_all(&parent)
                .and_then(|()| {
                    std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o755))
                })
                .map_err(|e| format!("kdp demo: cannot create {}: {e}", parent.display()))?;
            let root = parent.join("pg");
            start(root.clone()).map_err(|e| fail(&root, e))
        }
        Err(e) => Err(fail(&pg_root, e)),
    }
}

/// Creates `dir` (traversable: as root the `postgres` user must pass through it to `pg/`) and
/// returns its absolute path.
fn prepare_dir(dir: &Path) -> Result<PathBuf, String> {
    let existed = dir.is_dir();
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("kdp demo: cannot create --dir {}: {e}", dir.display()))?;
    if !existed {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("kdp demo: cannot set the mode of {}: {e}", dir.display()))?;
    }
    std::fs::canonicalize(dir)
        .map_err(|e| format!("kdp demo: cannot resolve --dir {}: {e}", dir.display()))
}

/// Logs (the dedup's, the simulator's) go to `DIR/demo.log`: stderr carries the progress.
fn init_log(dir: &Path) -> Result<(), String> {
    let path = dir.join("demo.log");
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| format!("kdp demo: cannot open {}: {e}", path.display()))?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file))
        .init();
    Ok(())
}

/// Sets `stop` at the first SIGINT (Ctrl-C) or SIGTERM, and again at each later one.
fn watch_signals(rt: &tokio::runtime::Runtime, stop: Arc<AtomicBool>) -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut interrupt, mut terminate) = rt
        .block_on(async {
            Ok::<_, std::io::Error>((
                signal(SignalKind::interrupt())?,
                signal(SignalKind::terminate())?,
            ))
        })
        .map_err(|e| format!("kdp demo: cannot listen for Ctrl-C: {e}"))?;
    rt.spawn(async move {
        loop {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            stop.store(true, Ordering::Release);
        }
    });
    Ok(())
}

/// Drops and creates the demo databases, with their schemas.
fn recreate_databases(pg: &EmbeddedPostgres) -> Result<(), String> {
    let fail = |what: &str, e: &dyn std::fmt::Display| format!("kdp demo: {what}: {e}");
    let mut admin = pg
        .config(kdp_engine::pg::MAINTENANCE_DB)
        .connect(postgres::NoTls)
        .map_err(|e| fail("cannot connect to PostgreSQL", &pg_error(&e)))?;
    for db in database_names() {
        for sql in
            [format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"), format!("CREATE DATABASE {db}")]
        {
            admin
                .batch_execute(&sql)
                .map_err(|e| fail(&format!("cannot recreate database {db}"), &pg_error(&e)))?;
        }
    }
    for g in GATHERERS {
        let db = format!("gatherer_{g}");
        let mut c =
            pg.config(&db).connect(postgres::NoTls).map_err(|e| fail(&db, &pg_error(&e)))?;
        kdp_engine::pg::migrate::migrate(&mut c, &kdp_ingest::store::GATHERER)
            .map_err(|e| fail(&db, &e))?;
    }
    let mut c = pg
        .config(PRODUCTION_DB)
        .connect(postgres::NoTls)
        .map_err(|e| fail(PRODUCTION_DB, &pg_error(&e)))?;
    kdp_engine::pg::migrate::migrate(&mut c, &kdp_dedup::schema::PRODUCTION)
        .map_err(|e| fail(PRODUCTION_DB, &e))?;
    Ok(())
}

/// A PostgreSQL error with the server's message (`Display` alone says only "db error").
fn pg_error(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{e}: {}", db.message()),
        None => e.to_string(),
    }
}

/// Writes a private key file readable by its owner only (the gatherer refuses looser ones).
fn write_private(path: &Path, pem: &str) -> Result<(), String> {
    let write = || -> std::io::Result<()> {
        let mut f =
            OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(pem.as_bytes())?;
        f.sync_all()
    };
    write().map_err(|e| format!("kdp demo: cannot write the key {}: {e}", path.display()))
}

/// A free loopback port for a gatherer's `/metrics` (bound and released: a restarted gatherer
/// binds the same one again).
fn free_port() -> Result<SocketAddr, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("kdp demo: cannot find a free port: {e}"))
}

struct GathererSettings<'a> {
    ws_url: &'a str,
    key: &'a Path,
    ca: &'a Path,
    database_url: &'a str,
    metrics: SocketAddr,
    markets: &'a [String],
}

/// A gatherer's TOML config (see `ingest/src/gatherer/config.rs`).
fn gatherer_toml(s: &GathererSettings<'_>) -> String {
    let quote = |v: &str| {
        let mut out = String::with_capacity(v.len() + 2);
        out.push('"');
        for c in v.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c => out.push(c),
            }
        }
        out.push('"');
        out
    };
    let markets: Vec<String> = s.markets.iter().map(|m| quote(m)).collect();
    format!(
        "# Generated by kdp demo (rewritten each run).\nws_url = {}\nkey_id = {}\n\
         private_key_path = {}\nca_cert_path = {}\ndatabase_url = {}\nshard_count = 1\n\
         metrics_addr = {}\nmarkets = [{}]\n",
        quote(s.ws_url),
        quote(KEY_ID),
        quote(&s.key.display().to_string()),
        quote(&s.ca.display().to_string()),
        quote(s.database_url),
        quote(&s.metrics.to_string()),
        markets.join(", ")
    )
}

fn start_dedup(pg: &EmbeddedPostgres) -> Result<kdp_dedup::service::DedupHandle, String> {
    let mut text = format!(
        "production_database_url = {:?}\nmetrics_addr = \"127.0.0.1:0\"\n",
        pg.url(PRODUCTION_DB)
    );
    for (id, g) in GATHERERS.iter().enumerate() {
        text.push_str(&format!(
            "[[gatherers]]\nname = \"{g}\"\nid = {id}\ndatabase_url = {:?}\n",
            pg.url(&format!("gatherer_{g}"))
        ));
    }
    let config = kdp_dedup::config::DedupConfig::from_toml(&text)
        .map_err(|e| e.to_string())
        .and_then(|c| c.check().map_err(|e| e.to_string()))
        .map_err(|e| format!("kdp demo: dedup config: {e}"))?;
    kdp_dedup::service::Dedup::start(config).map_err(|e| format!("kdp demo: dedup: {e}"))
}

/// Counters a gatherer's `/metrics` reports (since its process started).
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    msgs: u64,
    gaps: u64,
    reconnects: u64,
}

impl Counters {
    fn plus(self, o: Counters) -> Counters {
        Counters {
            msgs: self.msgs.saturating_add(o.msgs),
            gaps: self.gaps.saturating_add(o.gaps),
            reconnects: self.reconnects.saturating_add(o.reconnects),
        }
    }
}

/// One gatherer process.
#[derive(Debug)]
struct GathererProc {
    name: &'static str,
    exe: PathBuf,
    config: PathBuf,
    log: PathBuf,
    metrics: SocketAddr,
    child: Option<Child>,
    restart_at: Option<Instant>,
    /// Counters of the earlier processes (a restart starts from zero).
    base: Counters,
    /// The last scrape of the running process.
    last: Counters,
    /// `base + last` at the previous progress line.
    shown: Counters,
    kills: u32,
    exits: u32,
}

impl GathererProc {
    fn new(
        name: &'static str,
        exe: PathBuf,
        config: PathBuf,
        log: PathBuf,
        metrics: SocketAddr,
    ) -> Self {
        Self {
            name,
            exe,
            config,
            log,
            metrics,
            child: None,
            restart_at: None,
            base: Counters::default(),
            last: Counters::default(),
            shown: Counters::default(),
            kills: 0,
            exits: 0,
        }
    }

    fn total(&self) -> Counters {
        self.base.plus(self.last)
    }

    /// Starts `kdp gatherer --config` in its own process group (a terminal Ctrl-C reaches only
    /// the demo), interrupted by the kernel if the demo dies. Call from the main thread.
    fn spawn(&mut self) -> Result<(), String> {
        let fail = |e: std::io::Error| format!("kdp demo: gatherer {}: {e}", self.name);
        let log = OpenOptions::new().create(true).append(true).open(&self.log).map_err(fail)?;
        let mut cmd = Command::new(&self.exe);
        cmd.arg("gatherer")
            .arg("--config")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(fail)?)
            .stderr(log)
            .process_group(0);
        for var in CHILD_ENV_OVERRIDES {
            cmd.env_remove(var);
        }
        kdp_engine::pg::interrupt_when_parent_exits(&mut cmd);
        self.child = Some(cmd.spawn().map_err(fail)?);
        self.restart_at = None;
        Ok(())
    }

    /// SIGKILL, then a restart after [`RESTART_PAUSE`].
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            self.kills += 1;
            self.base = self.total();
            self.last = Counters::default();
            self.restart_at = Some(Instant::now() + RESTART_PAUSE);
        }
    }

    /// Notices a process that ended on its own; schedules its restart.
    fn check_exit(&mut self) -> Option<String> {
        let status = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())?;
        self.child = None;
        self.exits += 1;
        self.base = self.total();
        self.last = Counters::default();
        self.restart_at = Some(Instant::now() + RESTART_PAUSE);
        Some(format!(
            "kdp demo: gatherer {} exited ({status}); restarting it (see {})",
            self.name,
            self.log.display()
        ))
    }

    fn scrape(&mut self) {
        if self.child.is_none() {
            return;
        }
        if let Some(m) = scrape(self.metrics) {
            self.last = Counters {
                msgs: m.sum("kdp_events_total"),
                gaps: m.sum("kdp_gaps_total"),
                reconnects: m.sum("kdp_reconnects_total"),
            };
        }
    }
}

/// A `/metrics` page: `name{labels} value` lines.
struct Metrics(Vec<(String, String)>);

impl Metrics {
    /// The sum of every series of `name` (any labels), integer parts.
    fn sum(&self, name: &str) -> u64 {
        self.0
            .iter()
            .filter(|(k, _)| k.split('{').next() == Some(name))
            .filter_map(|(_, v)| v.split('.').next().and_then(|v| v.parse::<u64>().ok()))
            .fold(0, u64::saturating_add)
    }

    /// A summary's quantile (`q` as exported, e.g. "0.99"), `None` while empty (NaN).
    fn quantile(&self, name: &str, q: &str) -> Option<u64> {
        let label = format!("quantile=\"{q}\"");
        self.0
            .iter()
            .find(|(k, _)| k.split('{').next() == Some(name) && k.contains(&label))
            .and_then(|(_, v)| v.split('.').next().and_then(|v| v.parse::<u64>().ok()))
    }
}

/// `GET /metrics` from `addr`; `None` when it does not answer (yet).
fn scrape(addr: SocketAddr) -> Option<Metrics> {
    let mut s = TcpStream::connect_timeout(&addr, SCRAPE_TIMEOUT).ok()?;
    s.set_read_timeout(Some(SCRAPE_TIMEOUT)).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (_, body) = text.split_once("\r\n\r\n")?;
    Some(Metrics(
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' '))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    ))
}

/// The running pipeline (the simulator and PostgreSQL are owned by [`run`]).
struct Rig {
    gatherers: Vec<GathererProc>,
    dedup: kdp_dedup::service::DedupHandle,
    started: Instant,
    kill_next: usize,
}

/// The dedup figures of one progress line.
#[derive(Debug, Default, Clone, Copy)]
struct DedupFigures {
    merged: u64,
    duplicates: u64,
    lag_rows: u64,
    p50_us: Option<u64>,
    p99_us: Option<u64>,
}

impl Rig {
    fn dedup_figures(&self) -> DedupFigures {
        let Some(m) = self.dedup.metrics_addr().and_then(scrape) else {
            return DedupFigures::default();
        };
        DedupFigures {
            merged: m.sum("kdp_dedup_rows_merged_total"),
            duplicates: m.sum("kdp_dedup_duplicates_dropped_total"),
            lag_rows: m.sum("kdp_dedup_lag_rows"),
            p50_us: m.quantile("kdp_dedup_exch_to_commit_us", "0.5"),
            p99_us: m.quantile("kdp_dedup_exch_to_commit_us", "0.99"),
        }
    }

    /// Runs until `stop` or `duration`: a progress line a second, kills and restarts.
    fn run_until(
        &mut self,
        stop: &AtomicBool,
        duration: Duration,
        kill_every: Option<Duration>,
    ) -> Result<(), String> {
        let end = self.started + duration;
        let mut next_kill = kill_every.map(|d| self.started + d);
        let mut last_tick = Instant::now();
        let mut shown = self.dedup_figures();
        let mut next_tick = last_tick + TICK;
        loop {
            let now = Instant::now();
            if stop.load(Ordering::Acquire) {
                note("kdp demo: stop requested");
                return Ok(());
            }
            if now >= end {
                return Ok(());
            }
            if self.dedup.finished() {
                return Err(format!(
                    "kdp demo: the dedup stopped: {}",
                    self.dedup.fatal().unwrap_or_else(|| "no reason given".to_owned())
                ));
            }
            for g in &mut self.gatherers {
                if let Some(msg) = g.check_exit() {
                    note(&msg);
                }
                if g.restart_at.is_some_and(|at| now >= at) {
                    g.spawn()?;
                    note(&format!("kdp demo: gatherer {} restarted", g.name));
                }
            }
            if let (Some(every), Some(at)) = (kill_every, next_kill)
                && now >= at
            {
                let i = self.kill_next % self.gatherers.len();
                self.kill_next += 1;
                next_kill = Some(at + every);
                if let Some(g) = self.gatherers.get_mut(i) {
                    g.kill();
                    note(&format!(
                        "kdp demo: gatherer {} SIGKILLed (kill {}); restarting it in {:?}",
                        g.name, g.kills, RESTART_PAUSE
                    ));
                }
            }
            if now >= next_tick {
                next_tick += TICK;
                let ms = millis(now - last_tick);
                last_tick = now;
                for g in &mut self.gatherers {
                    g.scrape();
                }
                let figures = self.dedup_figures();
                note(&self.progress_line(now, ms, shown, figures));
                shown = figures;
                for g in &mut self.gatherers {
                    g.shown = g.total();
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn progress_line(
        &self,
        now: Instant,
        ms: u64,
        before: DedupFigures,
        d: DedupFigures,
    ) -> String {
        let mut line = format!("[{:>4}s]", (now - self.started).as_secs());
        for g in &self.gatherers {
            let t = g.total();
            let state = if g.child.is_some() { "" } else { " DOWN" };
            line.push_str(&format!(
                " {}{state}: {:>5} msg/s gaps {} rc {} |",
                g.name,
                per_s(t.msgs.saturating_sub(g.shown.msgs), ms),
                t.gaps,
                t.reconnects
            ));
        }
        let q = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), ms1);
        line.push_str(&format!(
            " dedup {:>5} rows/s lag {} dup dropped {} | e2e p50 {} p99 {}",
            per_s(d.merged.saturating_sub(before.merged), ms),
            d.lag_rows,
            d.duplicates,
            q(d.p50_us),
            q(d.p99_us)
        ));
        line
    }

    /// The ordered stop: simulator, gatherers (SIGTERM, wait), dedup once it has merged every
    /// gatherer's last commit.
    fn stop(
        self,
        rt: &tokio::runtime::Runtime,
        sim: SimHandle,
        pg: &EmbeddedPostgres,
    ) -> Result<(), String> {
        let elapsed = self.started.elapsed().as_secs();
        note("kdp demo: stopping: the simulator (connections closed, truth file completed)");
        rt.block_on(sim.shutdown());
        let Rig { mut gatherers, dedup, .. } = self;
        note("kdp demo: stopping: SIGTERM to the gatherers (they drain and commit)");
        for g in &gatherers {
            if let Some(child) = &g.child {
                let _ = kdp_engine::pg::terminate(child.id());
            }
        }
        let deadline = Instant::now() + GATHERER_STOP_TIMEOUT;
        for g in &mut gatherers {
            let Some(mut child) = g.child.take() else { continue };
            loop {
                match child.try_wait() {
                    Ok(Some(status)) if !status.success() => {
                        note(&format!(
                            "kdp demo: gatherer {} stopped with {status} (see {})",
                            g.name,
                            g.log.display()
                        ));
                        break;
                    }
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Ok(None) | Err(_) => {
                        note(&format!(
                            "kdp demo: gatherer {} did not stop within {GATHERER_STOP_TIMEOUT:?}; \
                             killed",
                            g.name
                        ));
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
        let caught_up = catch_up(&dedup, pg);
        let stats = dedup.shutdown().map_err(|e| format!("kdp demo: dedup shutdown: {e}"));
        caught_up?;
        let stats = stats?;
        let killed: u32 = gatherers.iter().map(|g| g.kills).sum();
        let exited: u32 = gatherers.iter().map(|g| g.exits).sum();
        note(&format!(
            "kdp demo: stopped after {}s: gatherers {} gaps, {} reconnects, {} SIGKILLs, {} \
             unexpected exits; dedup merged {} rows into production in {} batches, {} duplicates \
             dropped",
            elapsed,
            gatherers.iter().map(|g| g.total().gaps).sum::<u64>(),
            gatherers.iter().map(|g| g.total().reconnects).sum::<u64>(),
            killed,
            exited,
            stats.sink.rows_written,
            stats.batches,
            stats.merge.duplicates
        ));
        Ok(())
    }
}

/// Waits until production's cursor of every gatherer reaches that gatherer's last committed
/// gseq; fails when no cursor moves for [`CATCH_UP_STALL`].
fn catch_up(dedup: &kdp_dedup::service::DedupHandle, pg: &EmbeddedPostgres) -> Result<(), String> {
    let fail = |what: &str, e: &dyn std::fmt::Display| format!("kdp demo: catch-up: {what}: {e}");
    let mut heads = Vec::with_capacity(GATHERERS.len());
    for g in GATHERERS {
        let db = format!("gatherer_{g}");
        let mut c =
            pg.config(&db).connect(postgres::NoTls).map_err(|e| fail(&db, &pg_error(&e)))?;
        let head: i64 = c
            .query_one("SELECT coalesce(max(last_gseq), 0)::bigint FROM batch", &[])
            .map_err(|e| fail(&db, &pg_error(&e)))?
            .get(0);
        heads.push(head);
    }
    let mut prod = pg
        .config(PRODUCTION_DB)
        .connect(postgres::NoTls)
        .map_err(|e| fail(PRODUCTION_DB, &pg_error(&e)))?;
    let mut best = vec![-1i64; GATHERERS.len()];
    let mut moved = Instant::now();
    let mut last_note = Instant::now();
    loop {
        let mut cursors = Vec::with_capacity(GATHERERS.len());
        for id in 0..GATHERERS.len() {
            let id = i16::try_from(id).unwrap_or(i16::MAX);
            let cursor: i64 = prod
                .query_one(
                    "SELECT coalesce(max(gseq), 0)::bigint FROM dedup_cursor WHERE gatherer = $1",
                    &[&id],
                )
                .map_err(|e| fail(PRODUCTION_DB, &pg_error(&e)))?
                .get(0);
            cursors.push(cursor);
        }
        if cursors.iter().zip(&heads).all(|(c, h)| c >= h) {
            note("kdp demo: dedup caught up with every gatherer's last commit");
            return Ok(());
        }
        for (b, c) in best.iter_mut().zip(&cursors) {
            if *c > *b {
                *b = *c;
                moved = Instant::now();
            }
        }
        if let Some(why) = dedup.fatal() {
            return Err(format!("kdp demo: the dedup stopped while catching up: {why}"));
        }
        if moved.elapsed() > CATCH_UP_STALL {
            return Err(format!(
                "kdp demo: the dedup made no progress for {CATCH_UP_STALL:?}: production cursors \
                 {cursors:?}, gatherer heads {heads:?}"
            ));
        }
        if last_note.elapsed() >= TICK {
            last_note = Instant::now();
            note(&format!(
                "kdp demo: dedup catching up: production cursors {cursors:?} of gatherer heads \
                 {heads:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The psql connection string and two example queries.
fn write_query_help(
    out: &mut impl Write,
    pg: &EmbeddedPostgres,
    keep_running: bool,
) -> std::io::Result<()> {
    let url = pg.url(PRODUCTION_DB);
    writeln!(out, "\nquery the data (production; gatherer_a/b/c hold each gatherer's copy):")?;
    writeln!(out, "  psql {url}")?;
    writeln!(
        out,
        "  -- the busiest markets:\n  SELECT market, count(*) AS deltas FROM delta GROUP BY market \
         ORDER BY deltas DESC LIMIT 5;"
    )?;
    writeln!(
        out,
        "  -- the last trades (prices in micro-dollars, sizes in hundredths of a contract):\n  \
         SELECT to_timestamp(ts_exch_ns / 1e9) AS at, market, yes_price_micros, count_centi \
         FROM trade ORDER BY ts_exch_ns DESC LIMIT 5;"
    )?;
    if keep_running {
        writeln!(out, "PostgreSQL keeps running until Ctrl-C (--keep-running).")?;
    } else {
        writeln!(
            out,
            "PostgreSQL stops with the demo: add --keep-running to query it afterwards; the \
             cluster in {} is reused by the next run.",
            pg.root().display()
        )?;
    }
    out.flush()
}
