//! The harness shared by the end-to-end tests (`gatherer_*.rs`, `dedup_*.rs`): the simulator on
//! its own tokio runtime with a manual clock and a truth file, a seeded replica of its exchange
//! that tells how many data frames were sent, the gatherer against a `TestDatabase`, the
//! comparisons of stored rows with the truth's per-connection delivery logs, and `kdp` as a
//! child process ([`process`]). Every wait is on an observable condition with a deadline.

#![allow(dead_code, clippy::unwrap_used, clippy::print_stdout)]

pub mod process;

use std::collections::{BTreeMap, HashMap};
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use kdp_engine::pg::testing::TestDatabase;
use kdp_ingest::gatherer::{Gatherer, GathererConfig, GathererHandle};
use kdp_sim::market::model::{ExchEventKind, MarketStatus, Side};
use kdp_sim::market::truth::{DeliveryItem, TruthReader, TruthRecord, uuid_text};
use kdp_sim::market::{Exchange, MarketConfig};
use kdp_sim::transport::auth::generate_demo_key;
use kdp_sim::transport::hub::Clock;
use kdp_sim::transport::{SimConfig, SimHandle, Simulator};

/// Longest any single wait may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(30);
/// Poll interval of the waits.
pub const POLL: Duration = Duration::from_millis(10);
pub const KEY_ID: &str = "gatherer-test-ed25519";
pub const MARKETS: usize = 20;
/// The test gatherers' shards and connections: 20 markets make at least 4 connections.
const LAYOUT: &str = "shard_count = 2\nmarkets_per_connection = 6\nmarkets_per_subscription = 4\n";

pub struct Sim {
    pub rt: tokio::runtime::Runtime,
    pub handle: SimHandle,
    dir: tempfile::TempDir,
    key_path: PathBuf,
    truth_path: PathBuf,
}

impl Sim {
    pub fn start(seed: u64) -> Sim {
        Sim::start_with(market_config(seed), false)
    }

    /// The simulator on `market`, with its REST server when `rest` is set.
    pub fn start_with(market: MarketConfig, rest: bool) -> Sim {
        Sim::start_configured(market, rest, |_| {})
    }

    /// [`Sim::start_with`], with `adjust` applied to the simulator's config last.
    pub fn start_configured(
        market: MarketConfig,
        rest: bool,
        adjust: impl FnOnce(&mut SimConfig),
    ) -> Sim {
        let seed = market.seed;
        println!("simulator seed {seed:#x}");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let demo = generate_demo_key().unwrap();
        let key_path = dir.path().join("gatherer-key.pem");
        let mut key = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&key_path)
            .unwrap();
        key.write_all(demo.private_pkcs8_pem.as_bytes()).unwrap();
        let truth_path = dir.path().join("truth.bin");
        let mut cfg = SimConfig::new(market, dir.path().join("sim-cert.pem"));
        cfg.clock = Clock::Manual;
        if !rest {
            cfg.rest_addr = None;
        }
        cfg.truth_path = Some(truth_path.clone());
        cfg.keys.insert_pem(KEY_ID, &demo.public_spki_pem).unwrap();
        adjust(&mut cfg);
        let handle = rt.block_on(Simulator::start(cfg)).unwrap();
        Sim { rt, handle, dir, key_path, truth_path }
    }

    /// The `n` active markets with the deepest books.
    pub fn busy_markets(&self, n: usize) -> Vec<String> {
        self.rt
            .block_on(self.handle.hub().query(move |ex| {
                let mut ms: Vec<(usize, String)> = (0..)
                    .zip(ex.markets())
                    .filter(|(_, m)| m.status == MarketStatus::Active)
                    .map(|(id, m)| {
                        let b = ex.book(id, None);
                        (b.yes.len() + b.no.len(), m.ticker.clone())
                    })
                    .collect();
                ms.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
                ms.into_iter().take(n).map(|(_, t)| t).collect()
            }))
            .unwrap()
    }

    /// The TOML lines every test gatherer on this simulator starts with: the simulator's wss
    /// URL and certificate, the key it knows, and `db`.
    pub fn gatherer_toml_head(&self, db: &TestDatabase) -> String {
        let port = self.handle.wss_addr().unwrap().port();
        format!(
            "ws_url = \"wss://localhost:{port}/trade-api/ws/v2\"\n\
             key_id = \"{KEY_ID}\"\n\
             private_key_path = {key:?}\n\
             ca_cert_path = {ca:?}\n\
             database_url = {url:?}\n",
            key = self.key_path.display().to_string(),
            ca = self.handle.cert_pem_path().display().to_string(),
            url = db.url(),
        )
    }

    pub fn gatherer_config(
        &self,
        db: &TestDatabase,
        markets: Vec<String>,
        channels: &[&str],
    ) -> GathererConfig {
        let text = format!("{}{LAYOUT}", self.gatherer_toml_head(db));
        let mut config = GathererConfig::from_toml(&text).unwrap();
        config.markets = markets;
        config.channels = channels.iter().map(|c| (*c).to_owned()).collect();
        config
    }

    /// The same gatherer as [`Sim::gatherer_config`] as a TOML file's text, for a `kdp gatherer`
    /// process (telemetry off, so parallel processes do not share a port).
    pub fn gatherer_toml(
        &self,
        db: &TestDatabase,
        markets: &[String],
        channels: &[&str],
    ) -> String {
        format!(
            "{}{LAYOUT}metrics_addr = \"off\"\nmarkets = {markets:?}\nchannels = {channels:?}\n",
            self.gatherer_toml_head(db)
        )
    }

    /// Advances the exchange; returns its last exch_seq.
    pub fn advance(&self, events: u64) -> u64 {
        self.rt.block_on(self.handle.hub().advance(events)).unwrap()
    }

    /// Data frames withheld by faults (dropped, or swallowed while silent) on all live
    /// connections.
    pub fn frames_dropped(&self) -> u64 {
        self.handle
            .registry()
            .connections()
            .iter()
            .map(|c| c.frames_dropped + c.frames_silenced)
            .sum()
    }

    /// Live connection ordinals.
    pub fn conns(&self) -> Vec<u64> {
        self.handle.registry().connections().iter().map(|c| c.conn).collect()
    }

    /// A fault through the control endpoint, as an operator would send it.
    pub fn control(&self, path: &str, body: &str) {
        let addr: SocketAddr = self.handle.control_addr().unwrap();
        let mut s = TcpStream::connect(addr).unwrap();
        write!(
            s,
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "control {path} {body}: {answer}");
    }

    /// Stops the simulator (which finishes the truth file) and reads the truth back.
    pub fn finish(self) -> Truth {
        let Sim { rt, handle, dir, truth_path, .. } = self;
        rt.block_on(handle.shutdown());
        let truth = Truth::read(&truth_path);
        drop(dir);
        truth
    }
}

pub fn market_config(seed: u64) -> MarketConfig {
    MarketConfig { seed, markets: 60, ..MarketConfig::default() }
}

/// A replica of the simulator's seeded exchange (the same config gives the same stream): tells
/// how many data frames the subscribed markets were sent up to an exchange position, which is
/// what the test waits for (the simulator's own counters lag its broadcast).
pub struct Replica {
    exchange: Exchange,
    markets: std::collections::HashSet<String>,
    trades: bool,
    tickers: bool,
    last_seq: u64,
    /// Data events of the subscribed markets and channels so far.
    expected: u64,
}

impl Replica {
    pub fn new(seed: u64, markets: &[String], channels: &[&str]) -> Replica {
        Replica {
            exchange: Exchange::new(market_config(seed)),
            markets: markets.iter().cloned().collect(),
            trades: channels.contains(&"trade"),
            tickers: channels.contains(&"ticker"),
            last_seq: 0,
            expected: 0,
        }
    }

    /// Data events of the subscribed markets and channels up to the last `run_to`.
    pub fn expected(&self) -> u64 {
        self.expected
    }

    pub fn run_to(&mut self, exch_seq: u64) {
        while self.last_seq < exch_seq {
            let event = self.exchange.next_event();
            self.last_seq = event.exch_seq;
            let (market, counted) = match event.kind {
                ExchEventKind::Delta { market, .. } => (market, true),
                ExchEventKind::Trade { market, .. } => (market, self.trades),
                ExchEventKind::Ticker { market, .. } => (market, self.tickers),
                _ => continue,
            };
            let ticker = &self.exchange.markets()[usize::try_from(market).unwrap()].ticker;
            if counted && self.markets.contains(ticker) {
                self.expected += 1;
            }
        }
    }
}

pub fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out after {WAIT:?} waiting for {what}");
        std::thread::sleep(POLL);
    }
}

/// One stored or expected event, as comparable text.
pub type Row = String;

pub fn side_yes(side: Side) -> bool {
    side == Side::Yes
}

/// What the simulator delivered and withheld, per market, in delivery order.
pub struct Truth {
    /// Market → (exch_seq, row) delivered.
    pub delivered: BTreeMap<String, Vec<(u64, Row)>>,
    /// exch_seqs the transport sent a second time.
    pub duplicates: Vec<u64>,
    /// Market → every data event the exchange produced for it (exch_seq, row), in order.
    pub all_events: BTreeMap<String, Vec<(u64, Row)>>,
    /// (connection, market, exch_seq) withheld, with the connection's neighbouring delivered
    /// exch_seqs (before, after).
    pub withheld: Vec<(String, u64, Option<u64>, Option<u64>)>,
    /// Simulator connection → (market, exch_seq) delivered, in delivery order.
    pub by_conn: BTreeMap<u64, Vec<(String, u64)>>,
}

impl Truth {
    pub fn read(path: &PathBuf) -> Truth {
        let mut reader = TruthReader::new(std::fs::File::open(path).unwrap()).unwrap();
        let mut events = HashMap::new();
        let mut all_events: BTreeMap<String, Vec<(u64, Row)>> = BTreeMap::new();
        let mut logs: BTreeMap<u64, Vec<DeliveryItem>> = BTreeMap::new();
        let mut lifecycle = std::collections::HashSet::new();
        while let Some(record) = reader.next() {
            match record.unwrap() {
                TruthRecord::Exch(e) => {
                    let catalog = reader.catalog();
                    let ticker = |m: &kdp_sim::market::model::MarketId| {
                        catalog.markets[usize::try_from(*m).unwrap()].clone()
                    };
                    let ts = e.event.ts_ns;
                    let row = match &e.event.kind {
                        ExchEventKind::Delta { market, side, price_micros, delta_centi } => Some((
                            ticker(market),
                            format!("delta {} {price_micros} {delta_centi} {ts}", side_yes(*side)),
                        )),
                        ExchEventKind::Trade {
                            market,
                            trade_id,
                            yes_price_micros,
                            count_centi,
                            ..
                        } => {
                            // Trades carry `ts_ms` at best: the stored time is the millisecond.
                            let ts_ms = ts.div_euclid(1_000_000) * 1_000_000;
                            Some((
                                ticker(market),
                                format!(
                                    "trade {} {yes_price_micros} {count_centi} {ts_ms}",
                                    uuid_text(trade_id)
                                ),
                            ))
                        }
                        ExchEventKind::Ticker { market, state } => Some((
                            ticker(market),
                            format!(
                                "ticker {} {} {} {} {} {ts}",
                                state.yes_bid_micros,
                                state.yes_ask_micros,
                                state.volume_centi,
                                state.open_interest_centi,
                                state.dollar_volume
                            ),
                        )),
                        ExchEventKind::MarketLifecycle { .. }
                        | ExchEventKind::EventCreated { .. } => {
                            lifecycle.insert(e.event.exch_seq);
                            None
                        }
                    };
                    if let Some(row) = row {
                        all_events
                            .entry(row.0.clone())
                            .or_default()
                            .push((e.event.exch_seq, row.1.clone()));
                        events.insert(e.event.exch_seq, row);
                    }
                }
                TruthRecord::Delivery(log) => {
                    logs.entry(log.conn_id).or_default().extend(log.items);
                }
                _ => {}
            }
        }
        let mut delivered: BTreeMap<String, Vec<(u64, Row)>> = BTreeMap::new();
        let mut withheld = Vec::new();
        let mut duplicates = Vec::new();
        let mut by_conn: BTreeMap<u64, Vec<(String, u64)>> = BTreeMap::new();
        for (conn, items) in &logs {
            let mut before = None;
            let mut open: Vec<(String, u64, Option<u64>)> = Vec::new();
            for item in items {
                match *item {
                    DeliveryItem::Delivered(s) => {
                        // Lifecycle frames (on the registry's session) are not data rows.
                        if lifecycle.contains(&s) {
                            continue;
                        }
                        let (market, row) =
                            events.get(&s).cloned().expect("a delivered event is a data event");
                        by_conn.entry(*conn).or_default().push((market.clone(), s));
                        delivered.entry(market).or_default().push((s, row));
                        for (m, w, b) in open.drain(..) {
                            withheld.push((m, w, b, Some(s)));
                        }
                        before = Some(s);
                    }
                    DeliveryItem::Duplicate(s) => duplicates.push(s),
                    DeliveryItem::Gap { first, last } => {
                        for s in (first..=last).filter(|s| !lifecycle.contains(s)) {
                            let (market, _) =
                                events.get(&s).cloned().expect("a withheld data event");
                            open.push((market, s, before));
                        }
                    }
                }
            }
            for (m, w, b) in open {
                withheld.push((m, w, b, None));
            }
        }
        Truth { delivered, duplicates, withheld, by_conn, all_events }
    }
}

/// Columns `cols` of a row as text, space-separated: integers (NULL as `-`), booleans and text
/// as they print.
pub fn columns_text(r: &postgres::Row, cols: std::ops::Range<usize>) -> String {
    use postgres::types::Type;
    cols.map(|i| match *r.columns()[i].type_() {
        Type::BOOL => r.get::<_, bool>(i).to_string(),
        Type::INT8 => r.get::<_, Option<i64>>(i).map_or("-".to_owned(), |v| v.to_string()),
        _ => r.get::<_, String>(i),
    })
    .collect::<Vec<_>>()
    .join(" ")
}

/// Stored data rows per market in gseq order: (gseq, row); plus all gseqs seen.
pub fn stored_rows(client: &mut postgres::Client) -> BTreeMap<String, Vec<(i64, Row)>> {
    let mut rows: Vec<(i64, String, Row)> = Vec::new();
    for (kind, columns) in [
        ("delta", "side_yes, price_micros, delta_centi"),
        ("trade", "trade_id, yes_price_micros, count_centi"),
        (
            "ticker",
            "yes_bid_micros, yes_ask_micros, volume_centi, open_interest_centi, dollar_volume",
        ),
    ] {
        let sql = format!("SELECT gseq, market, {columns}, ts_exch_ns FROM {kind}");
        for r in client.query(&sql, &[]).unwrap() {
            let row = format!("{kind} {}", columns_text(&r, 2..r.len()));
            rows.push((r.get(0), r.get(1), row));
        }
    }
    rows.sort_by_key(|r| r.0);
    let mut by_market: BTreeMap<String, Vec<(i64, Row)>> = BTreeMap::new();
    for (gseq, market, row) in rows {
        by_market.entry(market).or_default().push((gseq, row));
    }
    by_market
}

/// Every gseq of every table is distinct, and the batches cover 1..=last contiguously.
pub fn assert_gseq_contiguous(client: &mut postgres::Client) {
    let row = client
        .query_one(
            "SELECT count(*), count(DISTINCT gseq), min(gseq), max(gseq) FROM (\
               SELECT gseq FROM delta UNION ALL SELECT gseq FROM trade UNION ALL \
               SELECT gseq FROM ticker UNION ALL SELECT gseq FROM snapshot UNION ALL \
               SELECT gseq FROM gap UNION ALL SELECT gseq FROM raw_frame UNION ALL \
               SELECT gseq FROM market_lifecycle UNION ALL SELECT gseq FROM event_lifecycle) g",
            &[],
        )
        .unwrap();
    let (n, distinct, min, max): (i64, i64, Option<i64>, Option<i64>) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!(n, distinct, "every gseq is used once");
    assert_eq!((min, max), (Some(1), Some(n)), "gseqs are 1..=rows with no hole");
}

/// Compares the database with the truth; returns exch_seq → stored gseq.
pub fn assert_stored_equals_delivered(
    truth: &Truth,
    client: &mut postgres::Client,
    markets: &[String],
) -> HashMap<u64, i64> {
    let stored = stored_rows(client);
    let mut gseq_of = HashMap::new();
    let mut total = 0;
    for m in markets {
        let want: Vec<&Row> =
            truth.delivered.get(m).map(|v| v.iter().map(|(_, r)| r).collect()).unwrap_or_default();
        let got: Vec<&Row> =
            stored.get(m).map(|v| v.iter().map(|(_, r)| r).collect()).unwrap_or_default();
        assert_eq!(
            got, want,
            "market {m}: stored rows (gseq order) = delivered events (delivery order)"
        );
        for ((s, _), (g, _)) in
            truth.delivered.get(m).into_iter().flatten().zip(stored.get(m).into_iter().flatten())
        {
            gseq_of.insert(*s, *g);
        }
        total += want.len();
    }
    let stored_markets: Vec<&String> = stored.keys().collect();
    let subscribed: Vec<&String> =
        markets.iter().collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    assert_eq!(
        stored_markets.iter().filter(|m| !subscribed.contains(m)).count(),
        0,
        "only subscribed markets are stored"
    );
    assert!(total > 500, "the run delivered enough events to mean something: {total}");
    gseq_of
}

pub struct Run {
    pub sim: Sim,
    pub db: TestDatabase,
    pub gatherer: GathererHandle,
    pub markets: Vec<String>,
    pub replica: Replica,
}

pub fn start(seed: u64, channels: &[&str]) -> Run {
    println!("replica seed {seed:#x}");
    let sim = Sim::start(seed);
    let db = TestDatabase::new().unwrap();
    let markets = sim.busy_markets(MARKETS);
    assert_eq!(markets.len(), MARKETS);
    let gatherer = Gatherer::start(&sim.gatherer_config(&db, markets.clone(), channels)).unwrap();
    // 20 markets over 2 shards, at most 6 per connection: at least 4 connections.
    let stats = gatherer.stats();
    assert_eq!(stats.shards.iter().map(|s| s.markets).sum::<usize>(), MARKETS);
    assert!(stats.shards.iter().map(|s| s.connections).sum::<usize>() >= 4, "{stats:?}");
    // Every market's initial book arrives and is committed.
    wait_for("the initial snapshots", || gatherer.stats().writer.rows.snapshot >= MARKETS as u64);
    let replica = Replica::new(seed, &markets, channels);
    Run { sim, db, gatherer, markets, replica }
}

/// Advances the exchange `steps` times by `events`, each time waiting until the gatherer has
/// committed every frame the simulator sent.
pub fn flow(run: &mut Run, steps: usize, events: u64) {
    for _ in 0..steps {
        let exch_seq = run.sim.advance(events);
        caught_up(run, exch_seq);
    }
}

/// Waits until every data frame sent up to `exch_seq` is committed (stored + withheld =
/// the replica's count: neither side can reach it early).
pub fn caught_up(run: &mut Run, exch_seq: u64) {
    run.replica.run_to(exch_seq);
    let expected = run.replica.expected;
    wait_for("the gatherer to commit every frame sent", || {
        let rows = run.gatherer.stats().writer.rows;
        rows.delta + rows.trade + rows.ticker + run.sim.frames_dropped() == expected
    });
}

/// Waits until every gap row's markets have a snapshot stored after it (resyncs wait for a
/// frame on the sid, so the exchange keeps moving while we wait).
pub fn wait_resynced(run: &mut Run) {
    wait_gaps_resynced(run, None);
}

/// Markets of gap rows (of the given sids, or all) with no snapshot stored after the gap.
pub fn unsynced(client: &mut postgres::Client, sids: Option<&[i64]>) -> Vec<(i64, i64, String)> {
    let all = sids.is_none();
    let sids = sids.unwrap_or_default().to_vec();
    client
        .query(
            "SELECT g.gseq, g.sid, m.market FROM gap g, unnest(g.markets) AS m(market) \
             WHERE ($1 OR g.sid = ANY($2)) AND NOT EXISTS \
             (SELECT 1 FROM snapshot s WHERE s.market = m.market AND s.gseq > g.gseq) \
             ORDER BY 1, 3",
            &[&all, &sids],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// [`wait_resynced`] for the gap rows of `sids` only (or all).
pub fn wait_gaps_resynced(run: &mut Run, sids: Option<&[i64]>) {
    let mut client = run.db.connect().unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let left = unsynced(&mut client, sids);
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "gap markets (gap gseq, sid, market) still without a resync: {left:?}"
        );
        let exch_seq = run.sim.advance(50);
        caught_up(run, exch_seq);
    }
}

/// A stored gap row.
#[derive(Debug)]
pub struct GapRow {
    pub gseq: i64,
    pub conn_id: i64,
    pub sid: i64,
    pub expected_seq: i64,
    pub got_seq: Option<i64>,
    pub markets: Vec<String>,
}

pub fn gap_rows(client: &mut postgres::Client) -> Vec<GapRow> {
    client
        .query(
            "SELECT gseq, conn_id, sid, expected_seq, got_seq, markets FROM gap ORDER BY gseq",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| GapRow {
            gseq: r.get(0),
            conn_id: r.get(1),
            sid: r.get(2),
            expected_seq: r.get(3),
            got_seq: r.get(4),
            markets: r.get(5),
        })
        .collect()
}

/// Every withheld event lies inside a gap row naming its market, between the connection's
/// neighbouring delivered events.
pub fn assert_withheld_in_gaps(
    truth: &Truth,
    client: &mut postgres::Client,
    gseq_of: &HashMap<u64, i64>,
) {
    let gaps = gap_rows(client);
    for (market, exch_seq, before, after) in &truth.withheld {
        let lo = before.map_or(0, |s| gseq_of[&s]);
        let hi = gseq_of[&after.expect("a withheld frame is followed by a delivered one")];
        assert!(
            gaps.iter().any(|g| lo < g.gseq && g.gseq < hi && g.markets.contains(market)),
            "withheld event {exch_seq} of {market} lies in no gap between gseq {lo} and {hi}: {gaps:?}"
        );
    }
}
