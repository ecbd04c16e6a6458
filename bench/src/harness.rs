//! Pieces shared by the load harnesses (`src/bin/load.rs`: simulator → gatherer;
//! `src/bin/e2e.rs`: simulator → three gatherers → dedup → production): CPU accounting from
//! `/proc`, exact quantiles, integer formatting, the `/metrics` scrape, duration arguments and
//! key files. Integer arithmetic only.

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
