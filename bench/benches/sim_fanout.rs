//! Simulator fan-out load: how many messages per second the simulator delivers to 3 plain-ws
//! connections that each subscribe to `orderbook_delta` for every market of a 10,000-market
//! exchange, plus `trade` and `ticker` for the whole exchange. See BENCHMARKS.md for the command
//! and the figures.
//!
//! Not a criterion bench: the quantity is a sustained rate under load, so this binary runs a
//! fixed-duration load and prints a report. It checks before it measures: every client must have
//! its three `subscribed` replies and one `orderbook_snapshot` per market, and throughout the run
//! every sequenced frame must carry the next `seq` of its sid (no gap, no error frame, which
//! would be error 25 for a client that fell behind).
//!
//! The simulator and the clients run in this process on separate tokio runtimes (threads
//! `sim-rt` and `client-rt`), so CPU is reported per runtime and in total. Without `--bench`
//! (`cargo test --benches`) it runs a one-second smoke load on a small exchange instead.
//! `--rate=N`, `--markets=N` and `--seconds=N` (after `--`) change the load.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use kdp_sim::market::MarketConfig;
use kdp_sim::transport::hub::EventChannel;
use kdp_sim::transport::{SimConfig, SimHandle, Simulator};
use tokio_tungstenite::tungstenite::Message;

/// Load shape of one run.
#[derive(Debug, Clone, Copy)]
struct Load {
    markets: usize,
    rate_msgs_per_s: u64,
    warm_up: Duration,
    measure: Duration,
}

/// The acceptance load: 10,000 markets, exchange rate above the 200k msgs/s target, 10 s.
const FULL: Load = Load {
    markets: 10_000,
    rate_msgs_per_s: 250_000,
    warm_up: Duration::from_secs(3),
    measure: Duration::from_secs(10),
};
/// `cargo test --benches`: proves the harness works without loading the machine.
const SMOKE: Load = Load {
    markets: 500,
    rate_msgs_per_s: 5_000,
    warm_up: Duration::from_millis(200),
    measure: Duration::from_secs(1),
};
/// Connections, as the three gatherers.
const CLIENTS: usize = 3;
/// Markets per `subscribe` command: keeps one command frame near 60 KB; the commands merge
/// into one sid.
const SUBSCRIBE_BATCH_MARKETS: usize = 2_500;
/// Longest wait for the subscriptions and their initial snapshots.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// `/proc` CPU times are in USER_HZ ticks, 100 per second on every Linux ABI.
const USER_HZ: u64 = 100;
/// Threads of the simulator's and the clients' runtimes (named for the CPU split).
const SIM_THREADS: usize = 2;
const CLIENT_THREADS: usize = 2;

/// What one client has seen.
#[derive(Debug, Default)]
struct ClientStats {
    /// Data frames (deltas, snapshots, trades, tickers).
    frames: AtomicU64,
    /// `orderbook_snapshot` frames.
    snapshots: AtomicU64,
    /// `subscribed` replies.
    subscribed: AtomicU64,
    /// `error` frames (error 25 = the client fell behind).
    errors: AtomicU64,
    /// Sequenced frames whose `seq` was not the previous one + 1.
    seq_breaks: AtomicU64,
}

/// Reads an unsigned integer right after `"name":` in `text`'s envelope (before `"msg"`).
fn envelope_u64(text: &str, name: &str) -> Option<u64> {
    let head = &text[..text.find("\"msg\"").unwrap_or(text.len())];
    let at = head.find(name)? + name.len();
    let digits = head[at..].bytes().take_while(u8::is_ascii_digit).count();
    head[at..at + digits].parse().ok()
}

async fn client(
    url: String,
    tickers: Arc<Vec<String>>,
    stats: Arc<ClientStats>,
    stop: Arc<AtomicBool>,
) {
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str()).await.expect("connect");
    let mut id = 1;
    for chunk in tickers.chunks(SUBSCRIBE_BATCH_MARKETS) {
        let cmd = serde_json::json!({"id": id, "cmd": "subscribe",
            "params": {"channels": ["orderbook_delta"], "market_tickers": chunk}});
        ws.send(Message::text(cmd.to_string())).await.expect("subscribe orderbook_delta");
        id += 1;
    }
    let cmd = serde_json::json!({"id": id, "cmd": "subscribe",
        "params": {"channels": ["trade", "ticker"]}});
    ws.send(Message::text(cmd.to_string())).await.expect("subscribe trade, ticker");

    let mut last_seq: HashMap<u64, u64> = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        let Some(Ok(msg)) = ws.next().await else { break };
        let Message::Text(text) = msg else { continue };
        let text = text.as_str();
        if text.starts_with("{\"type\":\"subscribed\"") {
            stats.subscribed.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if text.starts_with("{\"type\":\"error\"") {
            stats.errors.fetch_add(1, Ordering::Relaxed);
            eprintln!("client got an error frame: {text}");
            continue;
        }
        if text.starts_with("{\"type\":\"orderbook_snapshot\"") {
            stats.snapshots.fetch_add(1, Ordering::Relaxed);
        }
        stats.frames.fetch_add(1, Ordering::Relaxed);
        if let (Some(sid), Some(seq)) =
            (envelope_u64(text, "\"sid\":"), envelope_u64(text, "\"seq\":"))
        {
            let last = last_seq.insert(sid, seq).unwrap_or(0);
            if seq != last + 1 {
                stats.seq_breaks.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    let _ = ws.close(None).await;
}

/// What the hub published: events per channel (deltas only for the subscribed markets).
#[derive(Debug, Default)]
struct HubCount {
    deltas: AtomicU64,
    trades: AtomicU64,
    tickers: AtomicU64,
    lifecycle: AtomicU64,
    lagged: AtomicBool,
}

async fn count_hub(
    sim: &SimHandle,
    tickers: Arc<Vec<String>>,
    count: Arc<HubCount>,
    stop: Arc<AtomicBool>,
) {
    let subscribed: HashSet<&str> = tickers.iter().map(String::as_str).collect();
    let mut rx = sim.hub().subscribe();
    while !stop.load(Ordering::Relaxed) {
        match rx.recv().await {
            Ok(batch) => {
                for ev in batch.iter() {
                    let counter = match ev.channel {
                        EventChannel::Orderbook
                            if ev.market.as_deref().is_some_and(|m| subscribed.contains(m)) =>
                        {
                            &count.deltas
                        }
                        EventChannel::Orderbook => continue,
                        EventChannel::Trade => &count.trades,
                        EventChannel::Ticker => &count.tickers,
                        EventChannel::Lifecycle => &count.lifecycle,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                count.lagged.store(true, Ordering::Relaxed);
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
        }
    }
}

/// CPU time (ms) of this process's threads whose name starts with `prefix` (all when empty).
fn cpu_ms(prefix: &str) -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0 };
    let mut ticks = 0;
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { continue };
        // `pid (comm) state ppid ...`: comm may hold spaces, so split after the last ')'.
        let Some((head, rest)) = stat.rsplit_once(')') else { continue };
        let comm = head.split_once('(').map_or("", |(_, c)| c);
        if !comm.starts_with(prefix) {
            continue;
        }
        // After comm: field 3 (state) is index 0, so utime (14) and stime (15) are 11 and 12.
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
        ticks += field(11) + field(12);
    }
    ticks * 1000 / USER_HZ
}

/// `part` per second over `elapsed`, in whole units.
fn per_s(part: u64, elapsed: Duration) -> u64 {
    let ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX).max(1);
    part * 1000 / ms
}

/// `cpu_ms` over `elapsed` as a percentage of one core, with one decimal.
fn core_pct(cpu_ms: u64, elapsed: Duration) -> String {
    let ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX).max(1);
    let permille = cpu_ms * 1000 / ms;
    format!("{}.{}%", permille / 10, permille % 10)
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    frames: [u64; CLIENTS],
    hub: [u64; 4],
    cpu_sim_ms: u64,
    cpu_client_ms: u64,
    cpu_all_ms: u64,
}

fn sample(stats: &[Arc<ClientStats>], hub: &HubCount) -> Sample {
    let mut frames = [0; CLIENTS];
    for (f, s) in frames.iter_mut().zip(stats) {
        *f = s.frames.load(Ordering::Relaxed);
    }
    Sample {
        at: Instant::now(),
        frames,
        hub: [
            hub.deltas.load(Ordering::Relaxed),
            hub.trades.load(Ordering::Relaxed),
            hub.tickers.load(Ordering::Relaxed),
            hub.lifecycle.load(Ordering::Relaxed),
        ],
        cpu_sim_ms: cpu_ms("sim-rt"),
        cpu_client_ms: cpu_ms("client-rt"),
        cpu_all_ms: cpu_ms(""),
    }
}

#[allow(clippy::print_stdout, reason = "a harness = false bench reports on stdout")]
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bench = args.iter().any(|a| a == "--bench");
    let mut load = if bench { FULL } else { SMOKE };
    let flag = |name: &str| {
        let prefix = format!("--{name}=");
        args.iter().find_map(|a| a.strip_prefix(&prefix)).map(|v| {
            v.parse::<u64>().unwrap_or_else(|_| panic!("--{name}: {v:?} is not a whole number"))
        })
    };
    if let Some(rate) = flag("rate") {
        load.rate_msgs_per_s = rate;
    }
    if let Some(markets) = flag("markets") {
        load.markets = usize::try_from(markets).expect("--markets fits usize");
    }
    if let Some(seconds) = flag("seconds") {
        load.measure = Duration::from_secs(seconds);
    }
    let sim_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(SIM_THREADS)
        .thread_name("sim-rt")
        .enable_all()
        .build()
        .expect("simulator runtime");
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(CLIENT_THREADS)
        .thread_name("client-rt")
        .enable_all()
        .build()
        .expect("client runtime");

    let cert_dir = std::env::temp_dir().join(format!("kdp-sim-fanout-{}", std::process::id()));
    std::fs::create_dir_all(&cert_dir).expect("cert dir");
    let market = MarketConfig {
        markets: load.markets,
        rate_msgs_per_s: load.rate_msgs_per_s,
        ..MarketConfig::default()
    };
    let mut cfg = SimConfig::new(market, cert_dir.join("cert.pem"));
    cfg.wss_addr = None;
    cfg.rest_addr = None;
    cfg.control_addr = None;
    cfg.require_auth = false;
    let sim = sim_rt.block_on(Simulator::start(cfg)).expect("simulator starts");
    let url = sim.ws_url().expect("ws listener");
    let tickers: Vec<String> = sim_rt
        .block_on(sim.hub().query(|ex| ex.markets().iter().map(|m| m.ticker.clone()).collect()))
        .expect("catalog");
    assert_eq!(tickers.len(), load.markets, "initial catalog");
    let tickers = Arc::new(tickers);
    let sim = Arc::new(sim);

    let stop = Arc::new(AtomicBool::new(false));
    let hub_count = Arc::new(HubCount::default());
    let stats: Vec<Arc<ClientStats>> = (0..CLIENTS).map(|_| Arc::default()).collect();
    let mut tasks = Vec::new();
    {
        let (sim, tickers, count, stop) =
            (sim.clone(), tickers.clone(), hub_count.clone(), stop.clone());
        tasks.push(client_rt.spawn(async move { count_hub(&sim, tickers, count, stop).await }));
    }
    for s in &stats {
        tasks.push(client_rt.spawn(client(url.clone(), tickers.clone(), s.clone(), stop.clone())));
    }

    // Check first: every client subscribed and got one snapshot per market, without errors.
    let ready_by = Instant::now() + READY_TIMEOUT;
    let markets = load.markets as u64;
    while stats.iter().any(|s| {
        s.subscribed.load(Ordering::Relaxed) < 2 || s.snapshots.load(Ordering::Relaxed) < markets
    }) {
        assert!(Instant::now() < ready_by, "clients not subscribed within {READY_TIMEOUT:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    for s in &stats {
        assert_eq!(s.snapshots.load(Ordering::Relaxed), markets, "one snapshot per market");
        assert_eq!(s.errors.load(Ordering::Relaxed), 0, "no error frame while subscribing");
        assert_eq!(s.seq_breaks.load(Ordering::Relaxed), 0, "seq contiguous from 1");
    }
    std::thread::sleep(load.warm_up);

    let a = sample(&stats, &hub_count);
    std::thread::sleep(load.measure);
    let b = sample(&stats, &hub_count);
    stop.store(true, Ordering::Relaxed);
    let elapsed = b.at - a.at;

    let hub_names = ["orderbook_delta", "trade", "ticker", "lifecycle"];
    let hub_delta: Vec<u64> = b.hub.iter().zip(a.hub).map(|(b, a)| b - a).collect();
    let expected: u64 = hub_delta[..3].iter().sum();
    let published: u64 = hub_delta.iter().sum();
    println!(
        "sim_fanout: {} markets, exchange rate {} msgs/s, {CLIENTS} plain-ws clients, {} ms measured after {} ms warm-up",
        load.markets,
        load.rate_msgs_per_s,
        elapsed.as_millis(),
        load.warm_up.as_millis()
    );
    println!("  hub published       {:>9} events/s", per_s(published, elapsed));
    for (name, n) in hub_names.iter().zip(&hub_delta) {
        println!("    {name:<17} {:>9} /s", per_s(*n, elapsed));
    }
    println!(
        "  per client expected {:>9} frames/s (subscribed deltas + trades + tickers)",
        per_s(expected, elapsed)
    );
    let mut total = 0;
    for (i, s) in stats.iter().enumerate() {
        let n = b.frames[i] - a.frames[i];
        total += n;
        println!(
            "  client {i} received   {:>9} frames/s  (errors {}, seq breaks {})",
            per_s(n, elapsed),
            s.errors.load(Ordering::Relaxed),
            s.seq_breaks.load(Ordering::Relaxed)
        );
    }
    println!("  total received      {:>9} frames/s", per_s(total, elapsed));
    println!(
        "  CPU (% of one core): simulator runtime {}, client runtime {}, whole process {} (2 cores = 200%)",
        core_pct(b.cpu_sim_ms - a.cpu_sim_ms, elapsed),
        core_pct(b.cpu_client_ms - a.cpu_client_ms, elapsed),
        core_pct(b.cpu_all_ms - a.cpu_all_ms, elapsed)
    );
    let kept_up = stats.iter().all(|s| {
        s.errors.load(Ordering::Relaxed) == 0 && s.seq_breaks.load(Ordering::Relaxed) == 0
    });
    println!(
        "  clients kept up: {}{}",
        if kept_up { "yes (no error 25, no seq gap)" } else { "NO" },
        if hub_count.lagged.load(Ordering::Relaxed) {
            "; the hub counter lagged (counts low)"
        } else {
            ""
        }
    );

    client_rt.block_on(async {
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    });
    if let Ok(sim) = Arc::try_unwrap(sim) {
        sim_rt.block_on(sim.shutdown());
    }
    let _ = std::fs::remove_dir_all(&cert_dir);
    assert!(kept_up, "a client fell behind (error frame or seq gap)");
}
