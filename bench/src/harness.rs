//! Pieces shared by the load harnesses (`src/bin/load.rs`: simulator → gatherer;
//! `src/bin/e2e.rs`: simulator → three gatherers → dedup → production): CPU accounting from
//! `/proc`, exact quantiles, integer formatting, the `/metrics` scrape, duration arguments and
//! key files; and the setup both run: logging, the PostgreSQL cluster, the simulator with its
//! key and clock offset, the gatherer's TOML, the once-a-second sampling and the `LISTEN`
//! thread that notes commit times. Integer arithmetic only.

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kdp_engine::pg::EmbeddedPostgres;
use kdp_sim::market::MarketConfig;
use kdp_sim::transport::auth::generate_demo_key;
use kdp_sim::transport::{SimConfig, SimHandle, Simulator};
use postgres::fallible_iterator::FallibleIterator as _;

/// `/proc` CPU times are in USER_HZ ticks, 100 per second on every Linux ABI.
pub const USER_HZ: u64 = 100;

/// Wall-clock ns since the Unix epoch.
pub fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// `30s`, `500ms`, `2m` or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?}: a duration such as 30s, 500ms, 2m");
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits.parse().map_err(|_| bad())?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(n)),
        "ms" => Ok(Duration::from_millis(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(bad()),
    }
}

// ---------------------------------------------------------------------------------------------
// CPU accounting

/// `utime + stime` (and, with `children`, `cutime + cstime`) of a `/proc/.../stat` file, ms,
/// with the command name and the parent pid.
pub fn stat_cpu_ms(path: &Path, children: bool) -> Option<(String, u64, u32)> {
    let stat = std::fs::read_to_string(path).ok()?;
    // `pid (comm) state ppid ...`: comm may hold spaces, so split after the last ')'.
    let (head, rest) = stat.rsplit_once(')')?;
    let comm = head.split_once('(').map_or("", |(_, c)| c).to_owned();
    // After comm, field 3 (state) is index 0: ppid (4) is 1, utime (14) 11, stime (15) 12,
    // cutime (16) 13, cstime (17) 14.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    let mut ticks = field(11) + field(12);
    if children {
        ticks += field(13) + field(14);
    }
    let ppid = u32::try_from(field(1)).unwrap_or(0);
    Some((comm, ticks * 1000 / USER_HZ, ppid))
}

/// CPU ms of every thread of this process: thread id → (thread name, ms).
pub type ThreadCpu = HashMap<String, (String, u64)>;

/// CPU ms of every thread of this process, by thread id → (name, ms).
pub fn thread_cpu() -> ThreadCpu {
    let mut out = HashMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return out };
    for task in tasks.flatten() {
        if let Some((comm, ms, _)) = stat_cpu_ms(&task.path().join("stat"), false) {
            out.insert(task.file_name().to_string_lossy().into_owned(), (comm, ms));
        }
    }
    out
}

/// CPU ms of every descendant process of this one (the PostgreSQL server and its backends,
/// plus the times of children they reaped).
pub fn descendants_cpu_ms() -> u64 {
    let me = std::process::id();
    let mut procs: Vec<(u32, u32, u64)> = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0 };
    for e in entries.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        if pid == me {
            continue;
        }
        if let Some((_, ms, ppid)) = stat_cpu_ms(&e.path().join("stat"), true) {
            procs.push((pid, ppid, ms));
        }
    }
    let mut inside = vec![me];
    let mut total = 0;
    let mut grew = true;
    while grew {
        grew = false;
        for (pid, ppid, ms) in &procs {
            if inside.contains(ppid) && !inside.contains(pid) {
                inside.push(*pid);
                total += ms;
                grew = true;
            }
        }
    }
    total
}

/// CPU ms per thread group between two [`thread_cpu`] readings (`group_of` maps a thread name
/// to a group index below `N`), plus per thread name, busiest first.
pub fn cpu_between<const N: usize>(
    a: &ThreadCpu,
    b: &ThreadCpu,
    group_of: impl Fn(&str) -> usize,
) -> ([u64; N], Vec<(String, u64)>) {
    let mut groups = [0u64; N];
    let mut by_name: HashMap<String, u64> = HashMap::new();
    for (tid, (name, ms)) in b {
        let before = a.get(tid).map_or(0, |(_, ms)| *ms);
        let d = ms.saturating_sub(before);
        if let Some(g) = groups.get_mut(group_of(name)) {
            *g += d;
        }
        *by_name.entry(name.clone()).or_default() += d;
    }
    let mut names: Vec<(String, u64)> = by_name.into_iter().filter(|(_, ms)| *ms > 0).collect();
    names.sort_by(|x, y| y.1.cmp(&x.1).then_with(|| x.0.cmp(&y.0)));
    (groups, names)
}

// ---------------------------------------------------------------------------------------------
// Figures

/// Quantiles of a sorted slice: (p50, p99, p99.9, max).
pub fn quantiles(sorted: &[u64]) -> Option<[u64; 4]> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    // The smallest value with at least q of the samples at or below it.
    let at = |ppm: usize| sorted[(n * ppm).div_ceil(1_000_000).clamp(1, n) - 1];
    Some([at(500_000), at(990_000), at(999_000), sorted[n - 1]])
}

/// `n` events over `ms` milliseconds, per second.
pub fn per_s(n: u64, ms: u64) -> u64 {
    n * 1000 / ms.max(1)
}

/// `cpu_ms` over `ms` as a percentage of one core, one decimal.
pub fn pct(cpu_ms: u64, ms: u64) -> String {
    let permille = cpu_ms * 1000 / ms.max(1);
    format!("{}.{}%", permille / 10, permille % 10)
}

/// `n` with thousands separators.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// µs as milliseconds with three decimals.
pub fn ms3(us: u64) -> String {
    format!("{}.{:03} ms", us / 1000, us % 1000)
}

/// CPU ms as seconds with three decimals.
pub fn cpu_s(ms: u64) -> String {
    format!("{}.{:03} CPU-s", ms / 1000, ms % 1000)
}

// ---------------------------------------------------------------------------------------------
// /metrics

/// `name{labels} value` lines of a `/metrics` endpoint, by everything before the value.
pub fn scrape(addr: std::net::SocketAddr) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let Ok(mut s) = TcpStream::connect(addr) else { return out };
    let _ = write!(s, "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        if let Some((key, value)) = line.rsplit_once(' ') {
            out.insert(key.to_owned(), value.to_owned());
        }
    }
    out
}

/// A `/metrics` value with its decimals cut (µs are integers in practice).
pub fn metric(m: &HashMap<String, String>, key: &str) -> String {
    m.get(key).map_or("-".to_owned(), |v| v.split('.').next().unwrap_or(v).to_owned())
}

/// `p50 … p99 … p99.9 … (n = …)` of a µs summary in a scrape.
pub fn summary_quantiles(m: &HashMap<String, String>, name: &str) -> String {
    let q = |q: &str| {
        let v = metric(m, &format!("{name}{{quantile=\"{q}\"}}"));
        v.parse::<u64>().map_or(v, ms3)
    };
    let count = metric(m, &format!("{name}_count"));
    format!("p50 {}  p99 {}  p99.9 {}  (n = {count})", q("0.5"), q("0.99"), q("0.999"))
}

// ---------------------------------------------------------------------------------------------
// Files

/// A private directory `kdp-<label>-<pid>` in the system temp directory.
pub fn work_dir(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kdp-{label}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("work dir");
    dir
}

/// Writes a private key readable by its owner only (the gatherer refuses looser files).
pub fn write_key(dir: &Path, name: &str, pem: &str) -> PathBuf {
    let path = dir.join(name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .expect("key file");
    f.write_all(pem.as_bytes()).expect("write key");
    path
}

// ---------------------------------------------------------------------------------------------
// Setup

/// Logs to stderr, `RUST_LOG` or `warn`.
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// The harnesses' PostgreSQL durability (`--pg`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PgMode {
    /// fsync on, synchronous_commit on: a real database.
    Durable,
    /// fsync, synchronous_commit and full_page_writes off (the test clusters).
    Ephemeral,
}

/// Starts the cluster (durable ones in `dir/pg`) and creates `databases` in it.
pub fn start_postgres(mode: PgMode, dir: &Path, databases: &[String]) -> EmbeddedPostgres {
    let pg = match mode {
        PgMode::Durable => EmbeddedPostgres::persistent(dir.join("pg")),
        PgMode::Ephemeral => EmbeddedPostgres::ephemeral(),
    }
    .expect("PostgreSQL starts (install the server package if it is missing)");
    let mut admin = pg.config("postgres").connect(postgres::NoTls).expect("admin connection");
    for db in databases {
        admin.batch_execute(&format!("CREATE DATABASE {db}")).expect("create database");
    }
    pg
}

/// The simulator of a harness, on its own runtime (`sim-rt` threads).
#[derive(Debug)]
pub struct BenchSim {
    pub rt: tokio::runtime::Runtime,
    pub handle: SimHandle,
    /// The gatherers' private key (the simulator knows its public half as `key_id`).
    pub key_path: PathBuf,
    /// Wall clock minus exchange clock, measured once inside the hub.
    pub exch_offset_ns: i64,
    /// The initial catalog's tickers.
    pub tickers: Vec<String>,
}

/// The simulator: `markets` markets at `rate` events/s from the wall clock's now, `threads`
/// runtime threads, without REST and control endpoints, accepting a fresh demo key as `key_id`
/// (its private half written to `dir`); `adjust` applies last (listeners, clock).
pub fn start_sim(
    dir: &Path,
    key_id: &str,
    threads: usize,
    market: MarketConfig,
    adjust: impl FnOnce(&mut SimConfig),
) -> BenchSim {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name("sim-rt")
        .enable_all()
        .build()
        .expect("simulator runtime");
    let demo = generate_demo_key().expect("demo key");
    let key_path = write_key(dir, "gatherer-key.pem", &demo.private_pkcs8_pem);
    let market =
        MarketConfig { start_ts_ns: i64::try_from(wall_ns()).unwrap_or(i64::MAX), ..market };
    let mut cfg = SimConfig::new(market, dir.join("sim-cert.pem"));
    cfg.rest_addr = None;
    cfg.control_addr = None;
    cfg.keys.insert_pem(key_id, &demo.public_spki_pem).expect("public key");
    adjust(&mut cfg);
    let handle = rt.block_on(Simulator::start(cfg)).expect("simulator starts");
    // The exchange clock starts at the wall clock when the hub starts running, a little after
    // `start_ts_ns` was taken: measure the difference once, both clocks read inside the hub
    // task at the same moment.
    let ((exch_now, wall_now), _) =
        rt.block_on(handle.hub().query_at(|ex, _| (ex.now_ns(), wall_ns()))).expect("hub answers");
    let exch_offset_ns = i64::try_from(wall_now).unwrap_or(i64::MAX) - exch_now;
    let tickers = rt
        .block_on(handle.hub().query(|ex| ex.markets().iter().map(|m| m.ticker.clone()).collect()))
        .expect("catalog");
    BenchSim { rt, handle, key_path, exch_offset_ns, tickers }
}

/// A gatherer's TOML on the simulator at `ws_url` (`ca`: its certificate, for wss), signing as
/// `key_id`, writing `database_url`; `extra` lines last (shards, telemetry).
pub fn gatherer_toml(
    ws_url: &str,
    key_id: &str,
    key_path: &Path,
    ca: Option<&Path>,
    database_url: &str,
    extra: &str,
) -> String {
    let ca =
        ca.map_or(String::new(), |p| format!("ca_cert_path = {:?}\n", p.display().to_string()));
    format!(
        "ws_url = {ws_url:?}\nkey_id = {key_id:?}\nprivate_key_path = {key:?}\n{ca}\
         database_url = {database_url:?}\n{extra}",
        key = key_path.display().to_string(),
    )
}

/// Samples once a second (the last wait cut to `end`) until `end`, passing every pair of
/// consecutive samples to `progress`; returns the last sample.
pub fn sample_until<S>(
    end: Instant,
    mut last: S,
    mut sample: impl FnMut() -> S,
    mut progress: impl FnMut(&S, &S),
) -> S {
    while Instant::now() < end {
        std::thread::sleep(Duration::from_secs(1).min(end - Instant::now()));
        let now = sample();
        progress(&last, &now);
        last = now;
    }
    last
}

/// What every sample of a harness reads of this process: when, the CPU of each of its threads
/// and the CPU of the PostgreSQL processes (its descendants).
#[derive(Debug, Clone)]
pub struct ProcessSample {
    pub at: Instant,
    pub threads: ThreadCpu,
    pub pg_ms: u64,
}

impl ProcessSample {
    pub fn now() -> ProcessSample {
        ProcessSample { at: Instant::now(), threads: thread_cpu(), pg_ms: descendants_cpu_ms() }
    }

    /// Milliseconds from this sample to `later`, at least 1.
    pub fn elapsed_ms(&self, later: &ProcessSample) -> u64 {
        u64::try_from((later.at - self.at).as_millis()).unwrap_or(u64::MAX).max(1)
    }

    /// CPU ms per thread group from this sample to `later` ([`cpu_between`]), the last group
    /// being PostgreSQL's processes, plus per thread name.
    pub fn cpu_between<const N: usize>(
        &self,
        later: &ProcessSample,
        group_of: impl Fn(&str) -> usize,
    ) -> ([u64; N], Vec<(String, u64)>) {
        let (mut groups, names) = cpu_between::<N>(&self.threads, &later.threads, group_of);
        if let Some(pg) = groups.last_mut() {
            *pg = later.pg_ms.saturating_sub(self.pg_ms);
        }
        (groups, names)
    }
}

/// The simulator hub's last exchange position (events produced so far).
pub fn produced(rt: &tokio::runtime::Runtime, sim: &SimHandle) -> u64 {
    rt.block_on(sim.hub().query_at(|_, _| ())).map_or(0, |((), seq)| seq)
}

/// How often a [`Listener`] looks at its stop flag.
pub const LISTEN_POLL: Duration = Duration::from_millis(50);

/// `LISTEN channel` on a connection of its own, in a thread of its own: every notification's
/// payload with the wall ns it arrived at.
#[derive(Debug)]
pub struct Listener {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<(String, u64)>>,
}

impl Listener {
    pub fn start(url: &str, channel: &str, thread_name: &str) -> Listener {
        let mut client =
            postgres::Client::connect(url, postgres::NoTls).expect("LISTEN connection");
        client.batch_execute(&format!("LISTEN {channel}")).expect("LISTEN");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name(thread_name.into())
            .spawn(move || {
                let mut seen = Vec::new();
                while !flag.load(Ordering::Acquire) {
                    let mut n = client.notifications();
                    let mut it = n.timeout_iter(LISTEN_POLL);
                    while let Ok(Some(note)) = it.next() {
                        seen.push((note.payload().to_owned(), wall_ns()));
                    }
                }
                seen
            })
            .expect("listen thread");
        Listener { stop, thread }
    }

    /// Lets the last notifications arrive, stops; returns (payload, wall ns) in arrival order.
    pub fn finish(self) -> Vec<(String, u64)> {
        std::thread::sleep(LISTEN_POLL * 2);
        self.stop.store(true, Ordering::Release);
        self.thread.join().expect("listen thread")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_and_formatting() {
        let v: Vec<u64> = (1..=1000).collect();
        assert_eq!(quantiles(&v), Some([500, 990, 999, 1000]));
        assert_eq!(quantiles(&[]), None);
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(pct(1_234, 1_000), "123.4%");
        assert_eq!(ms3(12_345), "12.345 ms");
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("1h").is_err());
    }

    #[test]
    fn cpu_groups_add_up() {
        let mut a = ThreadCpu::new();
        let mut b = ThreadCpu::new();
        a.insert("1".into(), ("x".into(), 10));
        b.insert("1".into(), ("x".into(), 30));
        b.insert("2".into(), ("y".into(), 5));
        let (g, names) = cpu_between::<2>(&a, &b, |n| usize::from(n == "y"));
        assert_eq!(g, [20, 5]);
        assert_eq!(names, [("x".to_owned(), 20), ("y".to_owned(), 5)]);
    }
}
