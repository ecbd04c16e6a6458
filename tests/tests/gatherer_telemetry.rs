//! The gatherer's `/metrics` and `/health` against the simulator: a small gatherer (2 shards,
//! 12 markets over several wss connections) into a real PostgreSQL database, scraped over plain
//! HTTP while it runs. Once the stream is quiet (the simulator's clock is manual, so nothing
//! arrives unless the test advances it), every counter must equal what the database holds, and
//! both latency summaries must count exactly the rows they cover; so must the HdrHistogram
//! interval log (`histogram_log`), read back with `hdrhistogram`'s own `IntervalLogIterator`.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod gatherer_support;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use gatherer_support::{Sim, wait_for};
use kdp_engine::pg::testing::TestDatabase;
use kdp_engine::telemetry::interval_log::{self, LogContents};
use kdp_ingest::gatherer::telemetry::EVENT_TYPES;
use kdp_ingest::gatherer::{Gatherer, GathererConfig};
use kdp_sim::market::MarketConfig;
use kdp_sim::market::model::MarketStatus;

const MARKETS: usize = 12;
const SEED: u64 = 0x7465_6c65_6d65_7472;

/// `GET path` over a fresh connection: (status, body).
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

/// The value of one sample line (`name{labels}` exactly as rendered).
fn sample(metrics: &str, series: &str) -> u64 {
    let line = metrics
        .lines()
        .find(|l| l.strip_prefix(series).is_some_and(|rest| rest.starts_with(' ')))
        .unwrap_or_else(|| panic!("no sample {series} in\n{metrics}"));
    line[series.len() + 1..].parse().unwrap_or_else(|e| panic!("{line}: {e}"))
}

/// Rows per table, in the order of [`TABLES`].
const TABLES: [&str; 8] = [
    "delta",
    "trade",
    "ticker",
    "snapshot",
    "market_lifecycle",
    "event_lifecycle",
    "gap",
    "raw_frame",
];

fn table_rows(client: &mut postgres::Client) -> [u64; 8] {
    TABLES.map(|t| {
        let n: i64 = client.query_one(&format!("SELECT count(*) FROM {t}"), &[]).unwrap().get(0);
        u64::try_from(n).unwrap()
    })
}

/// The interval log files of the run (`PREFIX-<run start>-<n>.hlog`), oldest first.
fn log_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("gatherer-telemetry-") && n.ends_with(".hlog"))
        })
        .collect();
    files.sort();
    files
}

fn read_log(dir: &std::path::Path) -> Vec<LogContents> {
    log_files(dir)
        .iter()
        .map(|f| interval_log::read(&std::fs::read(f).unwrap()).unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

/// The interval log's histograms: tag → (total count over every interval, intervals).
fn log_counts(logs: &[LogContents]) -> std::collections::BTreeMap<String, (u64, usize)> {
    let mut counts = std::collections::BTreeMap::new();
    for i in logs.iter().flat_map(|l| &l.intervals) {
        let e: &mut (u64, usize) = counts.entry(i.tag.clone()).or_default();
        e.0 += i.histogram.len();
        e.1 += 1;
    }
    counts
}

#[test]
fn metrics_and_health_match_the_database_while_running() {
    // The simulator without a truth file; the interval log goes in `dir`.
    let market = MarketConfig { seed: SEED, markets: 40, ..MarketConfig::default() };
    let sim = Sim::start_configured(market, false, |cfg| cfg.truth_path = None);
    let dir = tempfile::tempdir().unwrap();
    let markets: Vec<String> = sim
        .rt
        .block_on(sim.handle.hub().query(|ex| {
            ex.markets()
                .iter()
                .filter(|m| m.status == MarketStatus::Active)
                .map(|m| m.ticker.clone())
                .take(MARKETS)
                .collect()
        }))
        .unwrap();
    assert_eq!(markets.len(), MARKETS);

    let db = TestDatabase::new().unwrap();
    let text = format!(
        "{}shard_count = 2\nmarkets_per_connection = 4\nmarkets_per_subscription = 2\n\
         metrics_addr = \"127.0.0.1:0\"\nhistogram_log = {log:?}\n",
        sim.gatherer_toml_head(&db),
        log = dir.path().join("gatherer-telemetry").display().to_string(),
    );
    let mut config = GathererConfig::from_toml(&text).unwrap();
    config.markets = markets;
    let gatherer = Gatherer::start(&config).unwrap();
    let addr = gatherer.metrics_addr().unwrap();
    assert_ne!(addr.port(), 0);
    let connections: usize = gatherer.stats().shards.iter().map(|s| s.connections).sum();
    assert!(connections >= 3, "12 markets, 2 shards, at most 4 per connection");

    wait_for("every connection up and every initial snapshot committed", || {
        let stats = gatherer.stats();
        stats.writer.rows.snapshot == MARKETS as u64
            && stats.shards.iter().map(|s| s.connects).sum::<u64>() == connections as u64
    });
    for _ in 0..5 {
        sim.advance(500);
    }
    // Quiet: the shards handed over everything they read and the writer committed it.
    let mut client = db.connect().unwrap();
    let mut last = (0, Instant::now());
    wait_for("the stream to go quiet", || {
        let stats = gatherer.stats();
        let committed = stats.writer.rows.total();
        if committed != last.0 || committed != stats.records() {
            last = (committed, Instant::now());
        }
        last.1.elapsed() >= Duration::from_millis(500)
    });
    let rows = table_rows(&mut client);
    let total: u64 = rows.iter().sum();
    assert!(rows[0] > 100, "enough deltas to mean something: {rows:?}");
    let mut metrics = String::new();
    wait_for("every recorder to publish what the database holds", || {
        let (status, body) = get(addr, "/metrics");
        assert_eq!(status, 200);
        metrics = body;
        sample(&metrics, "kdp_rows_committed_total") == total
            && sample(&metrics, "kdp_events_total{type=\"delta\"}") == rows[0]
    });
    println!("{metrics}");
    let events = |t: &str| sample(&metrics, &format!("kdp_events_total{{type=\"{t}\"}}"));
    assert_eq!(
        [events("delta"), events("trade"), events("ticker"), events("snapshot")],
        [rows[0], rows[1], rows[2], rows[3]]
    );
    assert_eq!(events("lifecycle"), rows[4] + rows[5]);
    assert_eq!(sample(&metrics, "kdp_gaps_total"), rows[6]);
    assert_eq!(rows[6], 0, "no faults, no gaps");
    assert_eq!(sample(&metrics, "kdp_reconnects_total"), 0);
    assert_eq!(sample(&metrics, "kdp_resyncs_total"), 0);
    let events_total: u64 = EVENT_TYPES.iter().map(|t| events(t)).sum();
    assert!(sample(&metrics, "kdp_frames_received_total") >= events_total + rows[7]);
    // Each committed row's receive → commit latency, each exchange-timed event's skew.
    assert_eq!(sample(&metrics, "kdp_frame_recv_to_commit_us_count"), total);
    assert_eq!(sample(&metrics, "kdp_exch_to_recv_us_count"), rows[0] + rows[1] + rows[2]);
    assert_eq!(sample(&metrics, "kdp_writer_batch_rows_sum"), total);
    assert!(sample(&metrics, "kdp_writer_batch_rows_count") >= 1);
    for shard in ["0", "1"] {
        let gauge = format!("kdp_ring_occupancy_records{{shard=\"{shard}\"}}");
        assert_eq!(sample(&metrics, &gauge), 0, "a quiet shard's ring is empty");
    }
    // /health's sessions and markets as gauges, per shard; they add up to /health's totals
    // (the writer's recorder reports 0). Every session has been up since before the scrape.
    let per_shard = |metrics: &str, name: &str| -> [u64; 3] {
        ["0", "1", "writer"].map(|s| sample(metrics, &format!("{name}{{shard=\"{s}\"}}")))
    };
    let shard_stats = gatherer.stats().shards;
    let up = per_shard(&metrics, "kdp_sessions_up");
    assert_eq!(
        up,
        [shard_stats[0].connections as u64, shard_stats[1].connections as u64, 0],
        "every session of each shard is up"
    );
    let subscribed = per_shard(&metrics, "kdp_markets_subscribed");
    assert_eq!(
        subscribed,
        [shard_stats[0].markets as u64, shard_stats[1].markets as u64, 0],
        "each shard's markets are on connected sessions"
    );
    assert_eq!(up.iter().sum::<u64>(), connections as u64);
    assert_eq!(subscribed.iter().sum::<u64>(), MARKETS as u64);

    // While it runs, the interval log has its header and interval lines that parse.
    wait_for("an interval line in the histogram log", || {
        read_log(dir.path()).iter().any(|l| !l.intervals.is_empty())
    });
    let logs = read_log(dir.path());
    assert_eq!(logs.len(), 1, "one file per run (no rotation within the hour)");
    assert!(logs[0].start_time.is_some() && logs[0].start_time == logs[0].base_time);

    let (status, health) = get(addr, "/health");
    println!("{health}");
    assert_eq!(status, 200, "{health}");
    for field in [
        format!("\"sessions_up\":{connections},\"sessions\":{connections}"),
        format!("\"markets_subscribed\":{MARKETS}"),
        format!("\"running\":true,\"rows_buffered\":0,\"last_committed_gseq\":{total}"),
        "\"gaps_last_minute\":0".to_owned(),
    ] {
        assert!(health.contains(&field), "{field} not in {health}");
    }
    assert!(!health.contains("\"last_frame_age_ms\":null"), "{health}");
    assert_eq!(get(addr, "/nothing").0, 404);

    let stats = gatherer.shutdown().unwrap();
    assert_eq!(stats.writer.rows.total(), total, "nothing arrived after the scrape");
    assert_eq!(table_rows(&mut client), rows);
    assert!(TcpStream::connect(addr).is_err(), "the HTTP server stops at shutdown");
    // After the clean stop the log holds every value the recorders took: one line per histogram
    // per interval, each committed row's receive → commit latency, each exchange-timed event's
    // skew, each committed batch's size.
    let counts = log_counts(&read_log(dir.path()));
    let tags: Vec<&str> = counts.keys().map(String::as_str).collect();
    assert_eq!(
        tags,
        ["kdp_exch_to_recv_us", "kdp_frame_recv_to_commit_us", "kdp_writer_batch_rows"]
    );
    let intervals: Vec<usize> = counts.values().map(|c| c.1).collect();
    assert!(intervals.iter().all(|&n| n == intervals[0] && n >= 2), "{counts:?}");
    assert_eq!(counts["kdp_frame_recv_to_commit_us"].0, total);
    assert_eq!(counts["kdp_exch_to_recv_us"].0, rows[0] + rows[1] + rows[2]);
    assert_eq!(counts["kdp_writer_batch_rows"].0, stats.writer.batches_committed);
    println!("interval log: {counts:?} in {:?}", log_files(dir.path()));
    let Sim { rt, handle, .. } = sim;
    rt.block_on(handle.shutdown());
}
