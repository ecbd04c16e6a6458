//! End-to-end latency harness: the simulator, three gatherers and the deduplicator in one
//! process, with their PostgreSQL databases, at a fixed offered load; what is measured is the
//! time from the exchange's send to the production commit of every merged row. See
//! BENCHMARKS.md ("End to end (three gatherers → dedup → production)").
//!
//! ```sh
//! cargo run --release -p kdp-bench --bin e2e -- --markets 2000 --rate 10000 --duration 30s
//! ```
//!
//! What it runs:
//! - PostgreSQL: **one** embedded cluster (`engine::pg`, durable by default) holding four
//!   databases — the three gatherer buffers and production. In deployment each gatherer has its
//!   own host and production its own server; here they share one server, its WAL and its fsyncs.
//! - The simulator (`kdp_sim`) on its real-time clock (speed 1; exchange time = wall time from
//!   its start, the start offset measured and removed), `--markets` markets at `--rate` events/s.
//! - Three gatherers (`Gatherer::start`, one unpinned shard each, wss with the signed handshake),
//!   each subscribed to every market of the initial catalog (`orderbook_delta`, `trade`,
//!   `ticker`), each writing its own database.
//! - The deduplicator (`kdp_dedup::service::Dedup`, default batch bounds: 8,192 rows or 10 ms)
//!   reading the three and writing production.
//!
//! How the commit time of each production row is known: the harness adds to production a
//! statement-level `AFTER INSERT` trigger on `delta`, `trade` and `ticker` that calls
//! `pg_notify('kdp_e2e_commit', <transaction id>)`; PostgreSQL delivers a notification when its
//! transaction commits, and a `LISTEN` thread notes when each arrives (a slight over-estimate of
//! the commit time). Every production row's `xmin` is its transaction's id, so each row in the
//! window gets its commit time. Exchange send time = the row's `ts_exch_ns` plus the measured
//! offset between the simulator's exchange clock and the wall clock (the hub publishes an event
//! within its 1 ms tick of its exchange time; trades carry whole milliseconds, so their latency
//! is over-stated by up to 1 ms). The dedup's own `kdp_dedup_exch_to_commit_us` (whole run,
//! offset not removed) is printed beside it.
//!
//! The window: rows whose exchange time falls in the `--duration` window after the initial
//! snapshots, the dedup's catch-up and `--warmup`. Every such row is found committed after the
//! gatherers are stopped and the dedup has drained (a row missing a commit time is reported).
//!
//! Progress goes to stderr once a second; the summary to stdout.

#![allow(clippy::print_stdout, reason = "a load harness reports on stdout")]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use clap::Parser;
use kdp_bench::harness::{
    self, BenchSim, Listener, PgMode, ProcessSample, cpu_s, gatherer_toml, ms3, parse_duration,
    pct, per_s, quantiles, sample_until, scrape, start_postgres, start_sim, summary_quantiles,
    thousands, wall_ns, work_dir,
};
use kdp_dedup::config::DedupConfig;
use kdp_dedup::service::{Dedup, DedupHandle};
use kdp_ingest::gatherer::{Gatherer, GathererConfig, GathererHandle};
use kdp_sim::market::MarketConfig;
use kdp_sim::market::config::RATE_MSGS_PER_S_MAX;
use kdp_sim::transport::SimHandle;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// API key id the simulator accepts and the gatherers sign with.
const KEY_ID: &str = "kdp-e2e";
/// The gatherer databases (and the dedup's gatherer names) and production.
const GATHERERS: [&str; 3] = ["a", "b", "c"];
const PRODUCTION_DB: &str = "production";
/// The channel the harness's commit trigger notifies.
const COMMIT_CHANNEL: &str = "kdp_e2e_commit";
/// Longest wait for the initial snapshots, and for the dedup to catch up.
const READY_TIMEOUT: Duration = Duration::from_secs(300);
/// Unread rows (all gatherers) below which the dedup counts as caught up.
const CAUGHT_UP_ROWS: u64 = 20_000;

/// The trigger: one notification per COPY statement, delivered at COMMIT, carrying the
/// transaction id modulo 2^32 (= the rows' `xmin`).
const COMMIT_TRIGGER_SQL: &str = "\
    CREATE FUNCTION kdp_e2e_notify() RETURNS trigger LANGUAGE plpgsql AS $$ \
    BEGIN PERFORM pg_notify('kdp_e2e_commit', (txid_current() % 4294967296)::text); \
    RETURN NULL; END $$; \
    CREATE TRIGGER kdp_e2e_delta AFTER INSERT ON delta \
        FOR EACH STATEMENT EXECUTE FUNCTION kdp_e2e_notify(); \
    CREATE TRIGGER kdp_e2e_trade AFTER INSERT ON trade \
        FOR EACH STATEMENT EXECUTE FUNCTION kdp_e2e_notify(); \
    CREATE TRIGGER kdp_e2e_ticker AFTER INSERT ON ticker \
        FOR EACH STATEMENT EXECUTE FUNCTION kdp_e2e_notify();";

fn parse_rate(s: &str) -> Result<u64, String> {
    let n: u64 = s.replace('_', "").parse().map_err(|_| format!("{s:?}: a number"))?;
    if n == 0 || n > RATE_MSGS_PER_S_MAX {
        return Err(format!("{n}: 1..={RATE_MSGS_PER_S_MAX}"));
    }
    Ok(n)
}

/// End-to-end harness: simulator → three gatherers → dedup → production, in one process.
#[derive(Debug, Parser)]
#[command(name = "e2e")]
struct Args {
    /// Markets in the simulator's initial catalog; every gatherer subscribes to all of them.
    #[arg(long, default_value_t = 2_000)]
    markets: usize,
    /// Offered load: exchange events per second (all markets).
    #[arg(long, default_value = "10000", value_parser = parse_rate)]
    rate: u64,
    /// Measured window (by exchange time).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    duration: Duration,
    /// Warm-up after the dedup caught up, before the window.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    warmup: Duration,
    /// PostgreSQL durability.
    #[arg(long, value_enum, default_value = "durable")]
    pg: PgMode,
    /// Simulator seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

// ---------------------------------------------------------------------------------------------
// CPU groups

const GROUPS: [&str; 5] =
    ["gatherers (3)", "dedup", "simulator", "harness/other", "postgres (4 DBs)"];

fn group_of(thread: &str) -> usize {
    if thread.starts_with("kdp-shard") || thread.starts_with("kdp-writer") {
        0
    } else if thread.starts_with("kdp-dedup") {
        1
    } else if thread.starts_with("sim-rt") {
        2
    } else {
        3
    }
}

#[derive(Debug, Clone)]
struct Sample {
    wall_ns: u64,
    produced: u64,
    overflows: u64,
    /// delta + trade + ticker rows committed, per gatherer.
    gathered: [u64; 3],
    batches: u64,
    process: ProcessSample,
}

struct Rig {
    sim_rt: tokio::runtime::Runtime,
    sim: SimHandle,
    gatherers: Vec<GathererHandle>,
    dedup: DedupHandle,
}

fn sample(rig: &Rig) -> Sample {
    let produced = harness::produced(&rig.sim_rt, &rig.sim);
    let conns = rig.sim.registry().connections();
    let mut gathered = [0u64; 3];
    for (g, out) in rig.gatherers.iter().zip(&mut gathered) {
        let r = g.stats().writer.rows;
        *out = r.delta + r.trade + r.ticker;
    }
    Sample {
        wall_ns: wall_ns(),
        produced,
        overflows: conns.iter().map(|c| c.overflows).sum(),
        gathered,
        batches: rig.dedup.health().production.batches_committed,
        process: ProcessSample::now(),
    }
}

fn cpu_between(a: &Sample, b: &Sample) -> ([u64; 5], Vec<(String, u64)>) {
    a.process.cpu_between(&b.process, group_of)
}

fn elapsed_ms(a: &Sample, b: &Sample) -> u64 {
    a.process.elapsed_ms(&b.process)
}

fn lag_rows(dedup: &DedupHandle) -> u64 {
    dedup.health().gatherers.iter().map(|g| g.lag_rows).sum()
}

fn progress(label: &str, rig: &Rig, a: &Sample, b: &Sample) {
    let ms = elapsed_ms(a, b);
    let (g, _) = cpu_between(a, b);
    let gathered: Vec<String> =
        (0..3).map(|i| per_s(b.gathered[i] - a.gathered[i], ms).to_string()).collect();
    eprintln!(
        "[{label}] produced {:>6}/s  gathered {}/s  dedup batches {:>4}/s  lag {:>7} rows  \
         overflows {}  cpu: gatherers {} dedup {} sim {} pg {} other {}",
        per_s(b.produced - a.produced, ms),
        gathered.join("/"),
        per_s(b.batches - a.batches, ms),
        lag_rows(&rig.dedup),
        b.overflows,
        pct(g[0], ms),
        pct(g[1], ms),
        pct(g[2], ms),
        pct(g[4], ms),
        pct(g[3], ms),
    );
}

// ---------------------------------------------------------------------------------------------
// Commit times

struct Latencies {
    rows: u64,
    uncommitted: u64,
    by_table: Vec<(&'static str, u64)>,
    exch_to_commit_us: Option<[u64; 4]>,
    exch_to_recv_us: Option<[u64; 4]>,
    recv_to_commit_us: Option<[u64; 4]>,
    transactions: usize,
}

/// Latencies of the production rows whose exchange time (as wall time) lies in
/// `[from_wall_ns, to_wall_ns)`.
fn latencies(
    url: &str,
    from_wall_ns: u64,
    to_wall_ns: u64,
    commits: &HashMap<i64, u64>,
    exch_offset_ns: i64,
) -> Latencies {
    let mut client = postgres::Client::connect(url, postgres::NoTls).expect("query connection");
    let to_exch = |wall: u64| i64::try_from(wall).unwrap_or(i64::MAX) - exch_offset_ns;
    let (lo, hi) = (to_exch(from_wall_ns), to_exch(to_wall_ns));
    let mut e2c = Vec::new();
    let mut e2r = Vec::new();
    let mut r2c = Vec::new();
    let mut uncommitted = 0u64;
    let mut by_table = Vec::new();
    let mut xids = std::collections::HashSet::new();
    for table in ["delta", "trade", "ticker"] {
        let q = format!(
            "SELECT xmin::text::bigint, ts_exch_ns, ts_recv_ns FROM {table} \
             WHERE ts_exch_ns >= $1 AND ts_exch_ns < $2"
        );
        let rows = client.query(&q, &[&lo, &hi]).expect("read production rows");
        by_table.push((table, rows.len() as u64));
        for r in rows {
            let (xid, exch_ns, recv_ns): (i64, i64, i64) = (r.get(0), r.get(1), r.get(2));
            let sent_ns = u64::try_from(exch_ns.saturating_add(exch_offset_ns)).unwrap_or(0);
            let recv_ns = u64::try_from(recv_ns).unwrap_or(0);
            e2r.push(recv_ns.saturating_sub(sent_ns) / 1_000);
            match commits.get(&xid) {
                Some(&at) => {
                    xids.insert(xid);
                    e2c.push(at.saturating_sub(sent_ns) / 1_000);
                    r2c.push(at.saturating_sub(recv_ns) / 1_000);
                }
                None => uncommitted += 1,
            }
        }
    }
    for v in [&mut e2c, &mut e2r, &mut r2c] {
        v.sort_unstable();
    }
    Latencies {
        rows: by_table.iter().map(|(_, n)| n).sum(),
        uncommitted,
        by_table,
        exch_to_commit_us: quantiles(&e2c),
        exch_to_recv_us: quantiles(&e2r),
        recv_to_commit_us: quantiles(&r2c),
        transactions: xids.len(),
    }
}

// ---------------------------------------------------------------------------------------------

fn main() {
    let args = Args::parse();
    harness::init_tracing();
    let dir = work_dir("e2e");
    eprintln!("e2e: work dir {}", dir.display());

    // PostgreSQL: one cluster, four databases.
    let databases: Vec<String> =
        GATHERERS.iter().map(|g| format!("gatherer_{g}")).chain([PRODUCTION_DB.into()]).collect();
    let pg = start_postgres(args.pg, &dir, &databases);
    let prod_url = pg.url(PRODUCTION_DB);
    {
        let mut prod = postgres::Client::connect(&prod_url, postgres::NoTls).expect("production");
        kdp_engine::pg::migrate::migrate(&mut prod, &kdp_dedup::schema::PRODUCTION)
            .expect("production schema");
        prod.batch_execute(COMMIT_TRIGGER_SQL).expect("commit trigger");
    }
    let listener = Listener::start(&prod_url, COMMIT_CHANNEL, "e2e-listen");

    // Simulator on its real-time clock.
    let market = MarketConfig {
        seed: args.seed,
        markets: args.markets,
        rate_msgs_per_s: args.rate,
        ..MarketConfig::default()
    };
    let BenchSim { rt: sim_rt, handle: sim, key_path, exch_offset_ns, tickers } =
        start_sim(&dir, KEY_ID, 1, market, |cfg| {
            cfg.clock = kdp_sim::transport::hub::Clock::RealTime { speed: 1 };
            cfg.ws_addr = None;
        });
    let ws_url = sim.wss_url().expect("wss listener");

    // Three gatherers, one after the other (each waits for its initial snapshots).
    let mut gatherers = Vec::new();
    let markets = u64::try_from(tickers.len()).unwrap_or(u64::MAX);
    for g in GATHERERS {
        let text = gatherer_toml(
            &ws_url,
            KEY_ID,
            &key_path,
            Some(sim.cert_pem_path()),
            &pg.url(&format!("gatherer_{g}")),
            "shard_count = 1\nmetrics_addr = \"off\"\n",
        );
        let mut config = GathererConfig::from_toml(&text).expect("gatherer config");
        config.markets.clone_from(&tickers);
        let handle = Gatherer::start(&config).expect("gatherer starts");
        let started = Instant::now();
        while handle.stats().writer.rows.snapshot < markets {
            if let Some(fatal) = handle.stats().fatal() {
                panic!("gatherer {g}: session failed: {fatal}");
            }
            assert!(started.elapsed() < READY_TIMEOUT, "gatherer {g}: snapshots not committed");
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("e2e: gatherer {g}: {} initial snapshots in {:?}", markets, started.elapsed());
        gatherers.push(handle);
    }

    // The deduplicator.
    let mut text =
        format!("production_database_url = {prod_url:?}\nmetrics_addr = \"127.0.0.1:0\"\n");
    for (id, g) in GATHERERS.iter().enumerate() {
        text.push_str(&format!(
            "[[gatherers]]\nname = \"{g}\"\nid = {id}\ndatabase_url = {:?}\n",
            pg.url(&format!("gatherer_{g}"))
        ));
    }
    let dedup_config = DedupConfig::from_toml(&text).expect("dedup config").check().expect("check");
    let dedup = Dedup::start(dedup_config).expect("dedup starts");
    let dedup_metrics = dedup.metrics_addr();
    let rig = Rig { sim_rt, sim, gatherers, dedup };

    // Caught up: every reader connected and the unread rows small.
    let started = Instant::now();
    let mut last = sample(&rig);
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = sample(&rig);
        progress("catch-up", &rig, &last, &now);
        last = now;
        let h = rig.dedup.health();
        if let Some(fatal) = h.fatal {
            panic!("dedup failed: {fatal}");
        }
        if h.gatherers.iter().all(|g| g.connected) && lag_rows(&rig.dedup) < CAUGHT_UP_ROWS {
            break;
        }
        assert!(started.elapsed() < READY_TIMEOUT, "the dedup did not catch up");
    }
    eprintln!("e2e: dedup caught up in {:?}", started.elapsed());
    sample_until(
        Instant::now() + args.warmup,
        last,
        || sample(&rig),
        |a, b| {
            progress("warm-up", &rig, a, b);
        },
    );

    // The window.
    let a = sample(&rig);
    let b = sample_until(
        a.process.at + args.duration,
        a.clone(),
        || sample(&rig),
        |a, b| {
            progress("measure", &rig, a, b);
        },
    );
    let scraped = dedup_metrics.map(scrape).unwrap_or_default();

    // Stop: gatherers (ordered: every received row committed), simulator, then the dedup once
    // it has read every gatherer's head (its shutdown writes what it holds), then the listener.
    let Rig { sim_rt, sim, gatherers, dedup } = rig;
    for g in gatherers {
        let stats = g.shutdown().expect("gatherer shuts down");
        assert_eq!(stats.fatal(), None);
    }
    sim_rt.block_on(sim.shutdown());
    let drain = Instant::now();
    while lag_rows(&dedup) > 0 && drain.elapsed() < READY_TIMEOUT {
        std::thread::sleep(Duration::from_millis(20));
    }
    let stats = dedup.shutdown().expect("dedup shuts down");
    // Transaction id → wall ns of its first notification.
    let mut commits: HashMap<i64, u64> = HashMap::new();
    for (payload, at) in listener.finish() {
        if let Ok(xid) = payload.parse() {
            commits.entry(xid).or_insert(at);
        }
    }
    let lat = latencies(&prod_url, a.wall_ns, b.wall_ns, &commits, exch_offset_ns);

    report(&args, &a, &b, &lat, &scraped, exch_offset_ns, stats.batches);

    drop(pg);
    let _ = std::fs::remove_dir_all(&dir);
}

fn quantile_line(label: &str, q: Option<[u64; 4]>) {
    match q {
        Some([p50, p99, p999, max]) => println!(
            "| {label} | p50 {} · p99 {} · p99.9 {} · max {} |",
            ms3(p50),
            ms3(p99),
            ms3(p999),
            ms3(max)
        ),
        None => println!("| {label} | no rows |"),
    }
}

fn report(
    args: &Args,
    a: &Sample,
    b: &Sample,
    lat: &Latencies,
    scraped: &HashMap<String, String>,
    exch_offset_ns: i64,
    batches_total: u64,
) {
    let ms = elapsed_ms(a, b);
    let (cpu, threads) = cpu_between(a, b);
    let merged = lat.rows;
    println!();
    println!(
        "end to end: {} markets, offered {} events/s, 3 gatherers (1 shard each, wss), dedup, \
         {:?} PostgreSQL (one cluster, 4 databases)",
        thousands(args.markets as u64),
        thousands(args.rate),
        args.pg
    );
    println!(
        "window {ms} ms after the initial snapshots, the dedup's catch-up and {:?} warm-up",
        args.warmup
    );
    println!();
    println!("| quantity | value |");
    println!("|---|---:|");
    println!(
        "| exchange events produced (hub) | {}/s |",
        thousands(per_s(b.produced - a.produced, ms))
    );
    for (i, g) in GATHERERS.iter().enumerate() {
        println!(
            "| gatherer {g}: msgs committed | {}/s |",
            thousands(per_s(b.gathered[i] - a.gathered[i], ms))
        );
    }
    println!(
        "| **production rows merged** (delta + trade + ticker with exchange time in the window) | \
         **{}/s** ({}) |",
        thousands(per_s(merged, ms)),
        lat.by_table
            .iter()
            .map(|(t, n)| format!("{t} {}", thousands(*n)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "| dedup batches committed | {}/s, {} rows each on average ({} transactions with window rows; {} batches in the run) |",
        thousands(per_s(b.batches - a.batches, ms)),
        merged / u64::try_from(lat.transactions).unwrap_or(1).max(1),
        thousands(lat.transactions as u64),
        thousands(batches_total)
    );
    quantile_line(
        &format!(
            "**exchange send → production commit** (every window row, {} rows; start offset {} removed)",
            thousands(merged),
            ms3(u64::try_from(exch_offset_ns / 1_000).unwrap_or(0))
        ),
        lat.exch_to_commit_us,
    );
    quantile_line("  of which exchange → gatherer received (first deliverer)", lat.exch_to_recv_us);
    quantile_line("  of which gatherer received → production commit", lat.recv_to_commit_us);
    println!("| window rows without a commit time | {} |", lat.uncommitted);
    println!(
        "| dedup kdp_dedup_exch_to_commit_us (whole run, offset not removed) | {} |",
        summary_quantiles(scraped, "kdp_dedup_exch_to_commit_us")
    );
    println!(
        "| dedup kdp_dedup_recv_to_commit_us (whole run) | {} |",
        summary_quantiles(scraped, "kdp_dedup_recv_to_commit_us")
    );
    for (i, name) in GROUPS.iter().enumerate() {
        println!(
            "| CPU {name} | {} of a core, {} per 100k rows merged |",
            pct(cpu[i], ms),
            cpu_s(cpu[i] * 100_000 / merged.max(1))
        );
    }
    let total: u64 = cpu.iter().sum();
    println!(
        "| CPU total (2 cores = 200%) | {} of a core, {} per 100k rows merged |",
        pct(total, ms),
        cpu_s(total * 100_000 / merged.max(1))
    );
    println!("| error-25 overflows (sim) whole run | {} |", b.overflows);
    println!();
    println!("CPU by thread over the window (% of one core):");
    for (name, t) in threads.iter().take(14) {
        println!("  {name:<16} {}", pct(*t, ms));
    }
    println!("  {:<16} {}", "postgres (all)", pct(cpu[4], ms));
}
