//! Gatherer load harness: the simulator, a gatherer and an embedded PostgreSQL in one process,
//! a fixed offered load, and what the gatherer sustained. See BENCHMARKS.md ("Gatherer load
//! harness") for the command and the figures.
//!
//! ```sh
//! cargo run --release -p kdp-bench --bin load -- --markets 10000 --rate 20000 --duration 30s
//! cargo run --release -p kdp-bench --bin load -- --markets 10000 --rate max --duration 30s
//! ```
//!
//! What it does: starts a PostgreSQL cluster (`engine::pg`, durable by default, as a gatherer
//! runs it), the simulator with `--markets` markets producing `--rate` exchange events per second
//! (`max`: as fast as its hub can), and a gatherer subscribed to every market of the initial
//! catalog (`orderbook_delta`, `trade`, `ticker`) over `wss` with the signed handshake. It waits
//! for every initial snapshot to be committed, warms up, then measures over `--duration`:
//!
//! - offered events/s (the hub's exchange positions), frames/s the simulator wrote to the
//!   gatherer's sockets, rows/s the writer committed (its stats);
//! - CPU per thread of this process (`/proc/self/task/*/stat`), grouped as gatherer
//!   (`kdp-shard-*`, `kdp-writer`, `kdp-telemetry`), simulator (`sim-rt`) and the rest, and the
//!   CPU of the PostgreSQL processes (every descendant process, `/proc/<pid>/stat`, with the
//!   times of reaped children);
//! - frame received → committed over the window: every committed row's `ts_recv_ns` against the
//!   time this harness received the writer's `NOTIFY` for its batch (delivered at COMMIT), so the
//!   figure is a slight over-estimate; plus the writer's own `kdp_frame_recv_to_commit_us` and the
//!   shards' `kdp_exch_to_recv_us` from `/metrics` (whole run, warm-up and initial snapshots
//!   included: the summary cannot be cut to a window);
//! - exchange → received over the window (`ts_recv_ns - ts_exch_ns` of the stored rows, the
//!   simulator's exchange clock started at the wall clock, the measured start offset removed);
//! - whether the gatherer kept up: writer backlog, ring-full stalls, gap rows, error-25
//!   overflows on the simulator's side.
//!
//! Progress goes to stderr once a second; the summary to stdout.

#![allow(clippy::print_stdout, reason = "a load harness reports on stdout")]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use kdp_bench::harness::{
    self, BenchSim, Listener, PgMode, ProcessSample, cpu_s, gatherer_toml, ms3, parse_duration,
    pct, per_s, quantiles, sample_until, scrape, start_postgres, start_sim, summary_quantiles,
    thousands, work_dir,
};
use kdp_ingest::gatherer::{Gatherer, GathererConfig, GathererHandle, GathererStats};
use kdp_ingest::store::NOTIFY_CHANNEL;
use kdp_sim::market::MarketConfig;
use kdp_sim::market::config::RATE_MSGS_PER_S_MAX;
use kdp_sim::transport::SimHandle;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// API key id the simulator accepts and the gatherer signs with.
const KEY_ID: &str = "kdp-load";
/// The gatherer's database in the cluster.
const DB_NAME: &str = "gatherer";
/// Longest wait for every initial snapshot to be committed.
const READY_TIMEOUT: Duration = Duration::from_secs(300);

/// Offered load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rate {
    /// Exchange events per second.
    PerSecond(u64),
    /// As fast as the simulator's hub produces.
    Max,
}

fn parse_rate(s: &str) -> Result<Rate, String> {
    if s == "max" {
        return Ok(Rate::Max);
    }
    let n: u64 = s.replace('_', "").parse().map_err(|_| format!("{s:?}: a number or `max`"))?;
    if n == 0 || n > RATE_MSGS_PER_S_MAX {
        return Err(format!("{n}: 1..={RATE_MSGS_PER_S_MAX} or `max`"));
    }
    Ok(Rate::PerSecond(n))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Transport {
    /// TLS WebSocket with the signed handshake, as against Kalshi.
    Wss,
    /// Plain WebSocket (no TLS cost).
    Ws,
}

/// Gatherer load harness: simulator → gatherer → PostgreSQL, in one process.
#[derive(Debug, Parser)]
#[command(name = "load")]
struct Args {
    /// Markets in the simulator's initial catalog; the gatherer subscribes to all of them.
    #[arg(long, default_value_t = 10_000)]
    markets: usize,
    /// Offered load: exchange events per second (all markets), or `max`.
    #[arg(long, default_value = "20000", value_parser = parse_rate)]
    rate: Rate,
    /// Measured window.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    duration: Duration,
    /// Warm-up after every initial snapshot is committed, before the window.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    warmup: Duration,
    /// Gatherer shards (unpinned), or see --shard-cpus.
    #[arg(long, default_value_t = 1)]
    shards: usize,
    /// Pin shards to these CPUs (comma-separated), instead of --shards unpinned.
    #[arg(long, value_delimiter = ',')]
    shard_cpus: Option<Vec<usize>>,
    /// Worker threads of the simulator's tokio runtime.
    #[arg(long, default_value_t = 1)]
    sim_threads: usize,
    /// WebSocket transport between simulator and gatherer.
    #[arg(long, value_enum, default_value = "wss")]
    transport: Transport,
    /// PostgreSQL durability.
    #[arg(long, value_enum, default_value = "durable")]
    pg: PgMode,
    /// Simulator seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

// ---------------------------------------------------------------------------------------------
// CPU accounting (kdp_bench::harness)

/// Thread groups the CPU is split into.
const GROUPS: [&str; 4] = ["gatherer", "simulator", "harness/other", "postgres"];

fn group_of(thread: &str) -> usize {
    if thread.starts_with("kdp-shard") || thread == "kdp-writer" || thread == "kdp-telemetry" {
        0
    } else if thread.starts_with("sim-rt") {
        1
    } else {
        2
    }
}

// ---------------------------------------------------------------------------------------------
// Samples

#[derive(Debug, Clone)]
struct Sample {
    /// Exchange events produced by the hub (its last exchange position).
    produced: u64,
    /// Frames the simulator wrote to the gatherer's connections.
    sent: u64,
    /// Error-25 overflows the simulator sent (a connection fell behind its broadcast).
    overflows: u64,
    gatherer: GathererStats,
    process: ProcessSample,
}

impl Sample {
    /// delta + trade + ticker rows committed: the messages.
    fn msgs(&self) -> u64 {
        let r = &self.gatherer.writer.rows;
        r.delta + r.trade + r.ticker
    }

    fn rows(&self) -> u64 {
        self.gatherer.writer.rows.total()
    }

    fn gaps(&self) -> u64 {
        self.gatherer.writer.rows.gap
    }

    fn stalls(&self) -> (u64, u64) {
        let s = &self.gatherer.shards;
        (s.iter().map(|s| s.ring_full_stalls).sum(), s.iter().map(|s| s.ring_full_wait_us).sum())
    }
}

struct Rig {
    sim_rt: tokio::runtime::Runtime,
    sim: SimHandle,
    gatherer: GathererHandle,
}

fn sample(rig: &Rig) -> Sample {
    let produced = harness::produced(&rig.sim_rt, &rig.sim);
    let conns = rig.sim.registry().connections();
    Sample {
        produced,
        sent: conns.iter().map(|c| c.frames_sent).sum(),
        overflows: conns.iter().map(|c| c.overflows).sum(),
        gatherer: rig.gatherer.stats(),
        process: ProcessSample::now(),
    }
}

/// CPU ms per group between two samples, plus per thread name.
fn cpu_between(a: &Sample, b: &Sample) -> ([u64; 4], Vec<(String, u64)>) {
    a.process.cpu_between(&b.process, group_of)
}

fn elapsed_ms(a: &Sample, b: &Sample) -> u64 {
    a.process.elapsed_ms(&b.process)
}

fn progress(label: &str, a: &Sample, b: &Sample) {
    let ms = elapsed_ms(a, b);
    let (g, _) = cpu_between(a, b);
    let (stalls, _) = b.stalls();
    eprintln!(
        "[{label}] produced {:>8}/s  sent {:>8}/s  committed {:>8} msgs/s  buffered {:>7}  \
         ring stalls {}  gaps {}  overflows {}  cpu: gatherer {} sim {} pg {} other {}",
        per_s(b.produced - a.produced, ms),
        per_s(b.sent - a.sent, ms),
        per_s(b.msgs() - a.msgs(), ms),
        b.gatherer.writer.buffered_rows,
        stalls,
        b.gaps(),
        b.overflows,
        pct(g[0], ms),
        pct(g[1], ms),
        pct(g[3], ms),
        pct(g[2], ms),
    );
}

// ---------------------------------------------------------------------------------------------
// Commit times from NOTIFY

struct Latencies {
    rows: usize,
    recv_to_commit_us: Option<[u64; 4]>,
    exch_to_recv_us: Option<[u64; 4]>,
}

/// Frame received → committed (from the NOTIFY times) and exchange → received for the rows
/// with gseq in `(lo, hi]`.
fn latencies(
    url: &str,
    lo: i64,
    hi: i64,
    commits: &[(i64, u64)],
    exch_offset_ns: i64,
) -> Latencies {
    let mut client = postgres::Client::connect(url, postgres::NoTls).expect("query connection");
    let mut recv = Vec::new();
    let mut exch = Vec::new();
    for table in ["delta", "trade", "ticker"] {
        let q = format!(
            "SELECT gseq, ts_recv_ns, ts_exch_ns FROM {table} WHERE gseq > $1 AND gseq <= $2"
        );
        for r in client.query(&q, &[&lo, &hi]).expect("read rows") {
            let (gseq, recv_ns, exch_ns): (i64, i64, i64) = (r.get(0), r.get(1), r.get(2));
            recv.push((gseq, recv_ns));
            // The exchange clock started behind the wall clock by `exch_offset_ns`.
            let lag = recv_ns - exch_ns.saturating_add(exch_offset_ns);
            exch.push(u64::try_from(lag / 1_000).unwrap_or(0));
        }
    }
    for table in ["snapshot", "gap", "raw_frame", "market_lifecycle", "event_lifecycle"] {
        let q = format!("SELECT gseq, ts_recv_ns FROM {table} WHERE gseq > $1 AND gseq <= $2");
        for r in client.query(&q, &[&lo, &hi]).expect("read rows") {
            recv.push((r.get(0), r.get(1)));
        }
    }
    let mut r2c = Vec::with_capacity(recv.len());
    for (gseq, recv_ns) in &recv {
        // The first commit whose batch reaches this gseq (commits arrive in gseq order).
        let i = commits.partition_point(|(last, _)| last < gseq);
        if let Some((_, at)) = commits.get(i) {
            let recv_ns = u64::try_from(*recv_ns).unwrap_or(0);
            r2c.push(at.saturating_sub(recv_ns) / 1_000);
        }
    }
    r2c.sort_unstable();
    exch.sort_unstable();
    Latencies {
        rows: recv.len(),
        recv_to_commit_us: quantiles(&r2c),
        exch_to_recv_us: quantiles(&exch),
    }
}

// ---------------------------------------------------------------------------------------------

fn main() {
    let args = Args::parse();
    harness::init_tracing();
    let dir = work_dir("load");
    eprintln!("load: work dir {}", dir.display());

    let pg = start_postgres(args.pg, &dir, &[DB_NAME.to_owned()]);
    let db_url = pg.url(DB_NAME);

    // Simulator.
    let rate = match args.rate {
        Rate::PerSecond(n) => n,
        Rate::Max => RATE_MSGS_PER_S_MAX,
    };
    let market = MarketConfig {
        seed: args.seed,
        markets: args.markets,
        rate_msgs_per_s: rate,
        ..MarketConfig::default()
    };
    let BenchSim { rt: sim_rt, handle: sim, key_path, exch_offset_ns, tickers } =
        start_sim(&dir, KEY_ID, args.sim_threads, market, |cfg| match args.transport {
            Transport::Wss => cfg.ws_addr = None,
            Transport::Ws => cfg.wss_addr = None,
        });
    let ws_url = match args.transport {
        Transport::Wss => sim.wss_url(),
        Transport::Ws => sim.ws_url(),
    }
    .expect("listener");

    // Commit times.
    let listener = Listener::start(&db_url, NOTIFY_CHANNEL, "load-listen");

    // Gatherer.
    let shards = match &args.shard_cpus {
        Some(cpus) => {
            let list: Vec<String> = cpus.iter().map(ToString::to_string).collect();
            format!("shard_cpus = [{}]", list.join(", "))
        }
        None => format!("shard_count = {}", args.shards),
    };
    let ca = match args.transport {
        Transport::Wss => Some(sim.cert_pem_path()),
        Transport::Ws => None,
    };
    let text = gatherer_toml(
        &ws_url,
        KEY_ID,
        &key_path,
        ca,
        &db_url,
        &format!("{shards}\nmetrics_addr = \"127.0.0.1:0\"\n"),
    );
    let mut config = GathererConfig::from_toml(&text).expect("gatherer config");
    config.markets.clone_from(&tickers);
    let gatherer = Gatherer::start(&config).expect("gatherer starts");
    let metrics_addr = gatherer.metrics_addr();
    let rig = Rig { sim_rt, sim, gatherer };

    // Ready: every initial snapshot committed.
    let started = Instant::now();
    let mut last = sample(&rig);
    let markets = u64::try_from(tickers.len()).unwrap_or(u64::MAX);
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = sample(&rig);
        progress("subscribe", &last, &now);
        if let Some(fatal) = now.gatherer.fatal() {
            panic!("gatherer session failed: {fatal}");
        }
        let ready = now.gatherer.writer.rows.snapshot >= markets;
        last = now;
        if ready {
            break;
        }
        assert!(started.elapsed() < READY_TIMEOUT, "initial snapshots not committed in time");
    }
    eprintln!(
        "load: {} initial snapshots committed in {} ms",
        thousands(markets),
        started.elapsed().as_millis()
    );
    sample_until(
        Instant::now() + args.warmup,
        last,
        || sample(&rig),
        |a, b| {
            progress("warm-up", a, b);
        },
    );

    // The window.
    let a = sample(&rig);
    let b = sample_until(
        a.process.at + args.duration,
        a.clone(),
        || sample(&rig),
        |a, b| {
            progress("measure", a, b);
        },
    );
    let scraped = metrics_addr.map(scrape).unwrap_or_default();

    // Stop: gatherer (ordered), simulator, listener (once the last NOTIFY arrived).
    let Rig { sim_rt, sim, gatherer } = rig;
    let final_stats = gatherer.shutdown().expect("gatherer shuts down");
    sim_rt.block_on(sim.shutdown());
    let commits: Vec<(i64, u64)> = listener
        .finish()
        .into_iter()
        .filter_map(|(payload, at)| payload.parse().ok().map(|gseq| (gseq, at)))
        .collect();
    let lo = a.gatherer.writer.last_committed_gseq;
    let hi = b.gatherer.writer.last_committed_gseq;
    let lat = latencies(&db_url, lo, hi, &commits, exch_offset_ns);

    report(&args, &a, &b, &final_stats, &lat, &scraped, exch_offset_ns);

    drop(pg);
    let _ = std::fs::remove_dir_all(&dir);
}

fn report(
    args: &Args,
    a: &Sample,
    b: &Sample,
    final_stats: &GathererStats,
    lat: &Latencies,
    scraped: &HashMap<String, String>,
    exch_offset_ns: i64,
) {
    let ms = elapsed_ms(a, b);
    let msgs = b.msgs() - a.msgs();
    let (cpu, threads) = cpu_between(a, b);
    let rate = match args.rate {
        Rate::PerSecond(n) => format!("{} events/s", thousands(n)),
        Rate::Max => "max (as fast as the hub produces)".to_owned(),
    };
    let shards = args.shard_cpus.as_ref().map_or_else(
        || format!("{} unpinned", args.shards),
        |cpus| format!("{} pinned to {cpus:?}", cpus.len()),
    );
    println!();
    println!(
        "gatherer load: {} markets, offered {rate}, {shards} shard(s), {:?} transport, {:?} PostgreSQL, {} sim thread(s)",
        thousands(args.markets as u64),
        args.transport,
        args.pg,
        args.sim_threads
    );
    println!("window {ms} ms after the initial snapshots and {:?} warm-up", args.warmup);
    println!();
    println!("| quantity | value |");
    println!("|---|---:|");
    println!(
        "| exchange events produced (hub) | {}/s |",
        thousands(per_s(b.produced - a.produced, ms))
    );
    println!(
        "| frames sent to the gatherer (sim sockets) | {}/s |",
        thousands(per_s(b.sent - a.sent, ms))
    );
    println!(
        "| **msgs committed** (delta + trade + ticker rows) | **{}/s** |",
        thousands(per_s(msgs, ms))
    );
    println!("| all rows committed | {}/s |", thousands(per_s(b.rows() - a.rows(), ms)));
    let batches = b.gatherer.writer.batches_committed - a.gatherer.writer.batches_committed;
    println!(
        "| batches committed | {}/s, {} rows each on average |",
        thousands(per_s(batches, ms)),
        (b.rows() - a.rows()) / batches.max(1)
    );
    for (i, name) in GROUPS.iter().enumerate() {
        println!(
            "| CPU {name} | {} of a core, {} per 100k msgs |",
            pct(cpu[i], ms),
            cpu_s(cpu[i] * 100_000 / msgs.max(1))
        );
    }
    let total: u64 = cpu.iter().sum();
    println!(
        "| CPU total (2 cores = 200%) | {} of a core, {} per 100k msgs |",
        pct(total, ms),
        cpu_s(total * 100_000 / msgs.max(1))
    );
    match lat.recv_to_commit_us {
        Some([p50, p99, p999, max]) => println!(
            "| frame received → committed (window, {} rows, NOTIFY time) | p50 {} · p99 {} · p99.9 {} · max {} |",
            thousands(lat.rows as u64),
            ms3(p50),
            ms3(p99),
            ms3(p999),
            ms3(max)
        ),
        None => println!("| frame received → committed (window) | no rows |"),
    }
    match (lat.exch_to_recv_us, args.rate) {
        (Some([p50, p99, p999, max]), Rate::PerSecond(_)) => println!(
            "| exchange → received (window; start offset {} removed) | p50 {} · p99 {} · p99.9 {} · max {} |",
            ms3(u64::try_from(exch_offset_ns / 1_000).unwrap_or(0)),
            ms3(p50),
            ms3(p99),
            ms3(p999),
            ms3(max)
        ),
        _ => println!(
            "| exchange → received | n/a (at `max` the exchange clock does not follow the wall clock) |"
        ),
    }
    println!(
        "| writer kdp_frame_recv_to_commit_us (whole run) | {} |",
        summary_quantiles(scraped, "kdp_frame_recv_to_commit_us")
    );
    println!(
        "| shards kdp_exch_to_recv_us (whole run) | {} |",
        summary_quantiles(scraped, "kdp_exch_to_recv_us")
    );
    let (stalls_a, wait_a) = a.stalls();
    let (stalls_b, wait_b) = b.stalls();
    println!(
        "| ring-full stalls in window | {} ({} ms waiting) |",
        stalls_b - stalls_a,
        (wait_b - wait_a) / 1000
    );
    println!(
        "| writer backlog at window start / end | {} / {} rows |",
        a.gatherer.writer.buffered_rows, b.gatherer.writer.buffered_rows
    );
    println!(
        "| gap rows in window / whole run | {} / {} |",
        b.gaps() - a.gaps(),
        final_stats.writer.rows.gap
    );
    println!("| error-25 overflows (sim) whole run | {} |", b.overflows);
    let sent = b.sent - a.sent;
    let kept_up = b.gaps() == a.gaps()
        && b.overflows == 0
        && stalls_b == stalls_a
        && b.gatherer.writer.buffered_rows <= a.gatherer.writer.buffered_rows.max(50_000)
        && msgs * 100 >= sent * 98;
    println!(
        "| kept up (no gap, no overflow, no ring stall, backlog not growing, committed ≥ 98% of sent) | {} |",
        if kept_up { "yes" } else { "NO" }
    );
    println!();
    println!("CPU by thread over the window (% of one core):");
    for (name, t) in threads.iter().take(12) {
        println!("  {name:<16} {}", pct(*t, ms));
    }
    println!("  {:<16} {}", "postgres (all)", pct(cpu[3], ms));
}
