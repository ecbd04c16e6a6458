//! Deterministic simulation of the whole dedup path over many seeds (issue 5, first acceptance
//! item): the simulator's pure market engine (identical-delta option on) is the truth; three
//! modelled gatherers each store it as the real gatherer would, with independent random drops,
//! duplicates and disconnects; their rows go through the merge core and the coverage ledger into
//! an in-memory production that applies a batch as the sink does (rows, cursors, ledger, unique
//! backstop); the merge core crashes and restarts from production's cursors in some seeds. Then
//! `kdp verify`'s logic checks DESIGN §4's invariants 1–5 against the truth.
//!
//! The gatherer model is a test double of the gatherer (what ingest's session, seq tracker and
//! writer store), not of the exchange:
//! - a market connection (conn_id 1) with three sids: orderbook (deltas, snapshots; sequenced),
//!   trade (sequenced), ticker (unsequenced); and the whole-exchange lifecycle connection
//!   (conn_id 2, sequenced, market and event lifecycle): its gap markers name no market, i.e.
//!   every market;
//! - a dropped sequenced frame is noticed at the sid's next frame: a `seq` gap row (expected,
//!   got, the sid's last in-order receive time, the sid's markets) before that frame; an
//!   orderbook gap is followed by resync snapshots; the end of the run unsubscribes, and the
//!   `unsubscribed` reply's seq reveals a trailing loss the same way (`SeqTracker::reply`);
//! - a duplicated sequenced frame is stale (seq ≤ last) and dropped; a duplicated ticker is
//!   stored twice (unsequenced: the gatherer cannot tell);
//! - tickers are never lost alone: without a seq no gatherer could notice, so a lone ticker loss
//!   is outside what any gap marker can record (only disconnects lose tickers here);
//! - a disconnect (of both connections: a network outage) loses everything until the
//!   reconnect; then a `disconnect` row per connection (sid 0, its markets, the earliest last
//!   in-order receive time over its sids, written at the first snapshot) and a snapshot of
//!   every market, with every sid's seq starting over;
//! - receive time = exchange time + 0–20 ms, never decreasing on the connection.
//!
//! Replay one seed: `KDP_SEED=0x… cargo test -p kdp-dedup --test sim_seeds`; run more:
//! `KDP_SEEDS=5000`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use kdp_dedup::inspect;
use kdp_dedup::ledger::{GapInterval, Ledger, LedgerDelta, MINUTE_NS, Uncovered};
use kdp_dedup::limits::MergeLimits;
use kdp_dedup::merge::{Batch, MergeCore, ProductionKey};
use kdp_dedup::row::{
    Delta, EventLifecycle, Gap, MarketLifecycle, Row, Snapshot, SnapshotAnchor, Ticker,
    TickerContent, Trade,
};
use kdp_dedup::sink::{Sink, SinkOptions};
use kdp_dedup::verify::{self, EventKey, Kind, RecordedGap, Report, Truth, TruthEvent};
use kdp_engine::event::{BookSide, Side};
use kdp_engine::pg::testing::TestDatabase;
use kdp_sim::market::model::{self as sim, ExchEventKind};
use kdp_sim::market::truth::{lifecycle_name, uuid_text};
use kdp_sim::market::{Exchange, MarketConfig};

/// Seeds per run (CI): `KDP_SEEDS` overrides.
const SEEDS_DEFAULT: u64 = 400;
/// Exchange events per seed.
const EVENTS: usize = 1_200;
const GATHERERS: usize = 3;

// ---- a small seeded generator (splitmix64) ---------------------------------------------------

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
    fn ppm(&mut self, ppm: u64) -> bool {
        self.below(1_000_000) < ppm
    }
}

// ---- truth ------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Channel {
    Book,
    Trade,
    Ticker,
    Lifecycle,
}

impl Channel {
    fn sid(self) -> u64 {
        match self {
            Channel::Book => 1,
            Channel::Trade => 2,
            Channel::Ticker => 3,
            Channel::Lifecycle => 4,
        }
    }
    fn index(self) -> usize {
        match self {
            Channel::Book => 0,
            Channel::Trade => 1,
            Channel::Ticker => 2,
            Channel::Lifecycle => 3,
        }
    }
}

struct World {
    /// Every exchange event as a perfect gatherer would store it (receive time unset).
    events: Vec<(Channel, i64, Row)>,
    markets: Vec<Arc<str>>,
    truth: Truth,
    identical_deltas: u64,
    end_ns: i64,
}

fn side(s: sim::Side) -> Side {
    match s {
        sim::Side::Yes => Side::Yes,
        sim::Side::No => Side::No,
    }
}

fn world(seed: u64) -> World {
    let cfg = MarketConfig {
        seed,
        markets: 12,
        markets_per_event_max: 3,
        rate_msgs_per_s: 20,
        identical_delta_ppm: 150_000,
        lifetime_s_min: 20,
        lifetime_s_max: 90,
        open_delay_s_max: 10,
        determine_delay_s_max: 10,
        settle_delay_s_max: 10,
        ..MarketConfig::default()
    };
    let mut exch = Exchange::new(cfg);
    let mut events = Vec::with_capacity(EVENTS);
    let mut tickers: Vec<Arc<str>> = Vec::new();
    let mut ticker_of = |exch: &Exchange, id: u32| -> Arc<str> {
        let i = id as usize;
        while tickers.len() <= i {
            let next = tickers.len() as u32;
            tickers.push(Arc::from(exch.market(next).ticker.as_str()));
        }
        Arc::clone(&tickers[i])
    };
    let mut last_delta = None;
    let mut identical_deltas = 0;
    let mut end_ns = 0;
    for _ in 0..EVENTS {
        let ev = exch.next_event();
        let ts = ev.ts_ns;
        end_ns = ts;
        let item = match ev.kind {
            ExchEventKind::Delta { market, side: s, price_micros, delta_centi } => {
                let key = (market, ts, s, price_micros, delta_centi);
                if last_delta == Some(key) {
                    identical_deltas += 1;
                }
                last_delta = Some(key);
                let row = Row::Delta(Delta {
                    market: ticker_of(&exch, market),
                    side: side(s),
                    price_micros,
                    delta_centi,
                    ts_exch_ns: ts,
                    ts_recv_ns: 0,
                    client_order_id: None,
                });
                (Channel::Book, row)
            }
            ExchEventKind::Trade {
                market,
                trade_id,
                yes_price_micros,
                count_centi,
                taker_side,
                taker_book_side,
            } => (
                Channel::Trade,
                Row::Trade(Box::new(Trade {
                    trade_id: uuid_text(&trade_id).into(),
                    market: ticker_of(&exch, market),
                    yes_price_micros,
                    no_price_micros: sim::DOLLAR_MICROS - yes_price_micros,
                    count_centi,
                    taker_side: Some(side(taker_side)),
                    taker_book_side: Some(match taker_book_side {
                        sim::BookSide::Ask => BookSide::Ask,
                        sim::BookSide::Bid => BookSide::Bid,
                    }),
                    is_block_trade: None,
                    ts_exch_ns: ts,
                    ts_recv_ns: 0,
                })),
            ),
            ExchEventKind::Ticker { market, state } => (
                Channel::Ticker,
                Row::Ticker(Box::new(Ticker {
                    market: ticker_of(&exch, market),
                    content: TickerContent {
                        price_micros: state.last_price_micros,
                        yes_bid_micros: Some(state.yes_bid_micros),
                        yes_ask_micros: Some(state.yes_ask_micros),
                        yes_bid_size_centi: Some(state.yes_bid_size_centi),
                        yes_ask_size_centi: Some(state.yes_ask_size_centi),
                        last_trade_size_centi: state.last_trade_size_centi,
                        volume_centi: Some(state.volume_centi),
                        open_interest_centi: Some(state.open_interest_centi),
                        dollar_volume: Some(state.dollar_volume),
                        dollar_open_interest: Some(state.dollar_open_interest),
                        clock: None,
                    },
                    ts_exch_ns: ts,
                    ts_recv_ns: 0,
                })),
            ),
            ExchEventKind::MarketLifecycle { market, kind } => {
                let t = ticker_of(&exch, market);
                let name = lifecycle_name(kind);
                (
                    Channel::Lifecycle,
                    Row::MarketLifecycle(Box::new(MarketLifecycle {
                        market: Arc::clone(&t),
                        kind: name.into(),
                        multivariate: false,
                        open_ts_s: None,
                        close_ts_s: None,
                        determination_ts_s: None,
                        settled_ts_s: None,
                        result: None,
                        settlement_value_micros: None,
                        price_level_structure: None,
                        payload: format!(
                            "{{\"market_ticker\":\"{t}\",\"event_type\":\"{name}\",\"ts\":{ts}}}"
                        )
                        .into(),
                        ts_recv_ns: 0,
                    })),
                )
            }
            ExchEventKind::EventCreated { event } => {
                let e = exch.events()[event as usize].ticker.clone();
                (
                    Channel::Lifecycle,
                    Row::EventLifecycle(Box::new(EventLifecycle {
                        payload: format!("{{\"event_ticker\":\"{e}\",\"ts\":{ts}}}").into(),
                        event_ticker: e.into(),
                        ts_recv_ns: 0,
                    })),
                )
            }
        };
        events.push((item.0, ts, item.1));
    }
    let markets: Vec<Arc<str>> =
        (0..exch.markets().len() as u32).map(|id| ticker_of(&exch, id)).collect();
    let truth_events = events
        .iter()
        .filter_map(|(_, ts, row)| {
            let market = match row {
                Row::Delta(d) => Some(Arc::clone(&d.market)),
                Row::Trade(t) => Some(Arc::clone(&t.market)),
                Row::Ticker(t) => Some(Arc::clone(&t.market)),
                Row::MarketLifecycle(m) => Some(Arc::clone(&m.market)),
                _ => None,
            };
            EventKey::of(row).map(|key| TruthEvent { key, market, ts_exch_ns: *ts })
        })
        .collect();
    World {
        events,
        markets,
        truth: Truth {
            events: truth_events,
            kinds: vec![
                Kind::Delta,
                Kind::Trade,
                Kind::Ticker,
                Kind::MarketLifecycle,
                Kind::EventLifecycle,
            ],
        },
        identical_deltas,
        end_ns,
    }
}

// ---- the gatherer model -----------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct Faults {
    drop_ppm: u64,
    dup_ppm: u64,
    disconnect_ppm: u64,
    down_ns_max: u64,
}

fn with_recv(row: &Row, recv: i64) -> Row {
    let mut row = row.clone();
    match &mut row {
        Row::Delta(d) => d.ts_recv_ns = recv,
        Row::Trade(t) => t.ts_recv_ns = recv,
        Row::Ticker(t) => t.ts_recv_ns = recv,
        Row::MarketLifecycle(m) => m.ts_recv_ns = recv,
        Row::EventLifecycle(e) => e.ts_recv_ns = recv,
        Row::Snapshot(_) | Row::Gap(_) => {}
    }
    row
}

struct Conn<'a> {
    markets: &'a [Arc<str>],
    rows: Vec<Row>,
    /// Per channel: the server's last seq, the tracker's last in-order seq and its receive time.
    server_seq: [u64; 4],
    last_ok: [u64; 4],
    last_ok_recv: [Option<i64>; 4],
    /// Receive time of the last frame of any kind on the market connection (conn_id 1) and on
    /// the lifecycle connection (conn_id 2).
    last_recv: Option<i64>,
    last_recv_lifecycle: Option<i64>,
    clock: i64,
}

impl Conn<'_> {
    fn sid_markets(&self, ch: Channel) -> Box<[Arc<str>]> {
        match ch {
            Channel::Lifecycle => Box::new([]),
            _ => self.markets.iter().cloned().collect(),
        }
    }

    fn snapshots(&mut self, recv: i64) {
        for m in self.markets {
            self.server_seq[0] += 1;
            let seq = self.server_seq[0];
            self.last_ok[0] = seq;
            self.last_ok_recv[0] = Some(recv);
            self.rows.push(Row::Snapshot(Box::new(Snapshot {
                market: Arc::clone(m),
                anchor: SnapshotAnchor::Ws { conn_id: 1, sid: 1, seq },
                yes: Box::new([]),
                no: Box::new([]),
                ts_recv_ns: recv,
            })));
        }
        self.last_recv = Some(recv);
    }

    /// A sequenced frame of `ch` numbered `seq` arrives at `recv`.
    fn sequenced(&mut self, ch: Channel, seq: u64, recv: i64) {
        let i = ch.index();
        if seq > self.last_ok[i] + 1 {
            self.rows.push(Row::Gap(Box::new(Gap {
                conn_id: if ch == Channel::Lifecycle { 2 } else { 1 },
                sid: ch.sid(),
                expected_seq: self.last_ok[i] + 1,
                got_seq: Some(seq),
                ts_recv_last_good_ns: self.last_ok_recv[i],
                markets: self.sid_markets(ch),
                ts_recv_ns: recv,
            })));
        }
        self.last_ok[i] = seq;
        self.last_ok_recv[i] = Some(recv);
        if ch == Channel::Lifecycle {
            self.last_recv_lifecycle = Some(recv);
        } else {
            self.last_recv = Some(recv);
        }
    }

    fn resume(&mut self, at: i64) {
        let recv = self.clock.max(at);
        self.clock = recv;
        // Both connections come back: the market one names its markets, the whole-exchange
        // lifecycle one none (every market).
        // Like `SeqTracker::disconnect`: the window starts at the earliest last in-order frame
        // over the connection's sequenced sids (a trailing drop on a quiet sid is inside it),
        // else at its last frame of any kind.
        let market_start =
            [0, 1].iter().filter_map(|&i| self.last_ok_recv[i]).min().or(self.last_recv);
        let lifecycle_start = self.last_ok_recv[3].or(self.last_recv_lifecycle);
        for (conn_id, last, markets) in [
            (1, market_start, self.markets.iter().cloned().collect()),
            (2, lifecycle_start, Box::default()),
        ] {
            self.rows.push(Row::Gap(Box::new(Gap {
                conn_id,
                sid: 0,
                expected_seq: 0,
                got_seq: None,
                ts_recv_last_good_ns: last,
                markets,
                ts_recv_ns: recv,
            })));
        }
        self.server_seq = [0; 4];
        self.last_ok = [0; 4];
        self.last_ok_recv = [None; 4];
        self.snapshots(recv);
    }
}

/// What gatherer `g` stores of the world, in gseq order (gseq = index + 1).
fn gather(seed: u64, g: usize, world: &World, faults: Faults) -> Vec<Row> {
    let mut rng = Rng::new(seed ^ (0xa076_1d64_78bd_642f_u64.wrapping_mul(g as u64 + 1)));
    let start = world.events.first().map_or(0, |e| e.1);
    let mut conn = Conn {
        markets: &world.markets,
        rows: Vec::new(),
        server_seq: [0; 4],
        last_ok: [0; 4],
        last_ok_recv: [None; 4],
        last_recv: None,
        last_recv_lifecycle: None,
        clock: start,
    };
    conn.snapshots(start);
    let mut down_until: Option<i64> = None;
    for (ch, ts, row) in &world.events {
        let ts = *ts;
        if let Some(until) = down_until {
            if ts < until {
                continue;
            }
            down_until = None;
            conn.resume(until);
        }
        if rng.ppm(faults.disconnect_ppm) {
            down_until = Some(ts + 1 + rng.below(faults.down_ns_max) as i64);
            continue;
        }
        let recv = conn.clock.max(ts + rng.below(20_000_000) as i64);
        if *ch == Channel::Ticker {
            conn.clock = recv;
            conn.last_recv = Some(recv);
            conn.rows.push(with_recv(row, recv));
            if rng.ppm(faults.dup_ppm) {
                conn.rows.push(with_recv(row, recv));
            }
            continue;
        }
        let i = ch.index();
        conn.server_seq[i] += 1;
        let seq = conn.server_seq[i];
        if rng.ppm(faults.drop_ppm) {
            continue;
        }
        conn.clock = recv;
        let gap = seq > conn.last_ok[i] + 1;
        conn.sequenced(*ch, seq, recv);
        conn.rows.push(with_recv(row, recv));
        if gap && *ch == Channel::Book {
            // Resync: get_snapshot for the sid's markets, answered right away.
            conn.snapshots(recv);
        }
        // A duplicated sequenced frame is stale at the tracker: dropped, nothing stored.
        let _ = rng.ppm(faults.dup_ppm);
    }
    if let Some(until) = down_until {
        conn.resume(until.max(world.end_ns));
    }
    // The end of the run unsubscribes: each reply's seq reveals a trailing loss.
    let end = conn.clock.max(world.end_ns) + 1;
    for ch in [Channel::Book, Channel::Trade, Channel::Lifecycle] {
        let i = ch.index();
        if conn.server_seq[i] > conn.last_ok[i] {
            let seq = conn.server_seq[i] + 1;
            conn.sequenced(ch, seq, end);
        }
    }
    conn.rows
}

// ---- production ---------------------------------------------------------------------------------

/// Where batches go: the in-memory production or PostgreSQL through the sink.
trait Production {
    fn write(&mut self, batch: &Batch, delta: &LedgerDelta);
    fn cursors(&mut self) -> Vec<i64>;
    fn latest_ts(&mut self) -> Option<i64>;
    fn window(&mut self, from_ns: i64) -> Vec<ProductionKey>;
    fn held(&mut self, since_ns: i64) -> Vec<Uncovered>;
}

type Identity = (EventKey, u32);
/// (gatherer, gap gseq, market).
type UncoveredKey = (u8, i64, Option<Arc<str>>);

#[derive(Default)]
struct Memory {
    identities: HashSet<Identity>,
    keys: Vec<(EventKey, u32, i64)>,
    window: Vec<(i64, ProductionKey)>,
    cursors: [Option<i64>; 8],
    conflicts: u64,
    market_conflicts: u64,
    minutes: BTreeMap<(i64, Arc<str>, u8), (u64, u64)>,
    uncovered: BTreeMap<UncoveredKey, (i64, Option<i64>)>,
    gaps: BTreeMap<(Option<Arc<str>>, i64), Option<i64>>,
}

impl Memory {
    fn insert(&mut self, key: EventKey, occ: u32, ts: i64, pkey: ProductionKey) {
        if self.identities.insert((key.clone(), occ)) {
            self.keys.push((key, occ, ts));
            self.window.push((ts, pkey));
        } else {
            // The unique backstop (a key the index had evicted, emitted again).
            self.conflicts += 1;
            if !matches!(key, EventKey::EventLifecycle { .. }) {
                self.market_conflicts += 1;
            }
        }
    }

    fn coverage_gaps(&self) -> Vec<RecordedGap> {
        self.gaps
            .iter()
            .map(|((market, from_ns), to_ns)| RecordedGap {
                market: market.clone(),
                interval: GapInterval { from_ns: *from_ns, to_ns: *to_ns },
            })
            .collect()
    }
}

impl Production for Memory {
    fn write(&mut self, batch: &Batch, delta: &LedgerDelta) {
        for (g, c) in batch.cursors.iter().enumerate() {
            if let Some(c) = c {
                assert!(self.cursors[g].is_none_or(|old| old < *c), "cursor of {g} must advance");
                self.cursors[g] = Some(*c);
            }
        }
        for m in &batch.deltas {
            let d = &m.row;
            let key = EventKey::of(&Row::Delta(d.clone())).expect("key");
            let pkey = ProductionKey::Delta {
                market: Arc::clone(&d.market),
                ts_exch_ns: d.ts_exch_ns,
                side: d.side,
                price_micros: d.price_micros,
                delta_centi: d.delta_centi,
                occ: m.occ,
            };
            self.insert(key, m.occ, d.ts_exch_ns, pkey);
        }
        for m in &batch.trades {
            let t = &m.row;
            let pkey =
                ProductionKey::Trade { trade_id: t.trade_id.clone(), ts_exch_ns: t.ts_exch_ns };
            let key = EventKey::of(&Row::Trade(Box::new(t.clone()))).expect("key");
            self.insert(key, 0, t.ts_exch_ns, pkey);
        }
        for m in &batch.tickers {
            let t = &m.row;
            let pkey = ProductionKey::Ticker {
                market: Arc::clone(&t.market),
                ts_exch_ns: t.ts_exch_ns,
                content: t.content,
                occ: m.occ,
            };
            let key = EventKey::of(&Row::Ticker(Box::new(t.clone()))).expect("key");
            self.insert(key, m.occ, t.ts_exch_ns, pkey);
        }
        for m in &batch.market_lifecycles {
            let l = &m.row;
            let pkey = ProductionKey::MarketLifecycle {
                market: Arc::clone(&l.market),
                kind: l.kind.clone(),
                payload: l.payload.clone(),
                ts_recv_ns: l.ts_recv_ns,
            };
            let key = EventKey::of(&Row::MarketLifecycle(Box::new(l.clone()))).expect("key");
            self.insert(key, 0, i64::MIN, pkey);
        }
        for m in &batch.event_lifecycles {
            let e = &m.row;
            let pkey = ProductionKey::EventLifecycle {
                event_ticker: e.event_ticker.clone(),
                payload: e.payload.clone(),
                ts_recv_ns: e.ts_recv_ns,
            };
            let key = EventKey::of(&Row::EventLifecycle(Box::new(e.clone()))).expect("key");
            self.insert(key, 0, i64::MIN, pkey);
        }
        for c in &delta.counts {
            let e =
                self.minutes.entry((c.minute_ns, Arc::clone(&c.market), c.gatherer)).or_default();
            e.0 += c.delivered;
            e.1 += c.merged;
        }
        for u in &delta.uncovered {
            self.uncovered.insert((u.gatherer, u.gap_gseq, u.market.clone()), (u.from_ns, u.to_ns));
        }
        for gaps in &delta.coverage_gaps {
            self.gaps.retain(|(m, from), _| !(*m == gaps.market && *from >= gaps.from_ns));
            for g in &gaps.gaps {
                self.gaps.insert((gaps.market.clone(), g.from_ns), g.to_ns);
            }
        }
    }

    fn cursors(&mut self) -> Vec<i64> {
        (0..GATHERERS).map(|g| self.cursors[g].unwrap_or(0)).collect()
    }

    fn latest_ts(&mut self) -> Option<i64> {
        self.keys.iter().map(|k| k.2).filter(|&t| t != i64::MIN).max()
    }

    fn window(&mut self, from_ns: i64) -> Vec<ProductionKey> {
        self.window
            .iter()
            .filter(|(ts, k)| match k {
                ProductionKey::MarketLifecycle { ts_recv_ns, .. }
                | ProductionKey::EventLifecycle { ts_recv_ns, .. } => *ts_recv_ns >= from_ns,
                _ => *ts >= from_ns,
            })
            .map(|(_, k)| k.clone())
            .collect()
    }

    fn held(&mut self, since_ns: i64) -> Vec<Uncovered> {
        self.uncovered
            .iter()
            .filter(|(_, (_, to))| to.is_none_or(|t| t >= since_ns))
            .map(|((gatherer, gap_gseq, market), (from_ns, to_ns))| Uncovered {
                gatherer: *gatherer,
                gap_gseq: *gap_gseq,
                market: market.clone(),
                from_ns: *from_ns,
                to_ns: *to_ns,
            })
            .collect()
    }
}

// ---- the merge driver ---------------------------------------------------------------------------

struct Merging {
    core: MergeCore,
    ledger: Ledger,
    next: Vec<usize>,
}

/// Starts (or restarts) the merge from production's cursors, as the service does: rebuild the
/// index from the slack window, prime every gatherer with its rows up to its cursor, restore the
/// ledger's held intervals.
fn start(limits: MergeLimits, streams: &[Vec<Row>], prod: &mut dyn Production) -> Merging {
    let cursors = prod.cursors();
    let mut core = MergeCore::new(limits, &cursors).expect("core");
    if let Some(latest) = prod.latest_ts() {
        for key in prod.window(latest.saturating_sub(limits.watermark_slack_ns)) {
            core.load_production(key);
        }
    }
    for (g, rows) in streams.iter().enumerate() {
        for row in rows.iter().take(cursors[g] as usize) {
            core.prime(g as u8, row).expect("prime");
        }
    }
    let ledger = Ledger::restore(streams.len(), &prod.held(i64::MIN));
    Merging { core, ledger, next: cursors.iter().map(|&c| c as usize).collect() }
}

/// Merges every stream into `prod`; crashes the merge core (losing its open batch) at random
/// points when `crashes` > 0. Returns how many crashes happened.
fn merge(seed: u64, streams: &[Vec<Row>], prod: &mut dyn Production, crashes: u32) -> u32 {
    let mut rng = Rng::new(seed ^ 0x5bd1_e995);
    let limits = MergeLimits {
        index_keys_max: 16 + rng.below(2_000) as usize,
        watermark_slack_ns: 1_000_000_000 + rng.below(20_000_000_000) as i64,
        batch_rows_max: 8 + rng.below(300) as usize,
    };
    let mut m = start(limits, streams, prod);
    let mut crashed = 0;
    loop {
        let open: Vec<usize> =
            (0..streams.len()).filter(|&g| m.next[g] < streams[g].len()).collect();
        if open.is_empty() {
            break;
        }
        let g = open[rng.below(open.len() as u64) as usize];
        let chunk = 1 + rng.below(40) as usize;
        for _ in 0..chunk {
            let i = m.next[g];
            let Some(row) = streams[g].get(i) else { break };
            m.ledger.push(&mut m.core, g as u8, i as i64 + 1, row.clone()).expect("push");
            m.next[g] += 1;
            if m.core.batch_full()
                && let Some((batch, delta)) = m.ledger.take_batch(&mut m.core)
            {
                prod.write(&batch, &delta);
            }
        }
        if rng.ppm(150_000)
            && let Some((batch, delta)) = m.ledger.take_batch(&mut m.core)
        {
            prod.write(&batch, &delta);
        }
        if crashed < crashes && rng.ppm(20_000) {
            crashed += 1;
            m = start(limits, streams, prod);
        }
    }
    if let Some((batch, delta)) = m.ledger.take_batch(&mut m.core) {
        prod.write(&batch, &delta);
    }
    crashed
}

// ---- one seed -----------------------------------------------------------------------------------

struct Outcome {
    report: Report,
    identical_deltas: u64,
    crashes: u32,
}

fn faults(rng: &mut Rng) -> Faults {
    // Some seeds are calm, some stormy: storms make all three gatherers lose the same events.
    let storm = rng.below(4) == 0;
    Faults {
        drop_ppm: if storm { 20_000 + rng.below(100_000) } else { rng.below(10_000) },
        dup_ppm: rng.below(50_000),
        disconnect_ppm: if storm { 2_000 + rng.below(10_000) } else { rng.below(2_000) },
        down_ns_max: 1_000_000_000 + rng.below(20_000_000_000),
    }
}

fn gatherer_streams(seed: u64, world: &World) -> Vec<Vec<Row>> {
    let mut rng = Rng::new(seed);
    (0..GATHERERS).map(|g| gather(seed, g, world, faults(&mut rng))).collect()
}

/// Checks what the ledger stored against the streams: per gatherer, delivered = its event rows
/// (its own repeated tickers and event lifecycles aside); merged = production's market events.
fn check_counts(seed: u64, memory: &Memory, streams: &[Vec<Row>]) {
    for (g, rows) in streams.iter().enumerate() {
        let mut last: HashMap<Arc<str>, (i64, TickerContent)> = HashMap::new();
        let mut expected = 0u64;
        for row in rows {
            match row {
                Row::Delta(_) | Row::Trade(_) | Row::MarketLifecycle(_) => expected += 1,
                Row::Ticker(t) => {
                    let state = (t.ts_exch_ns, t.content);
                    if last.get(&t.market) != Some(&state) {
                        expected += 1;
                    }
                    last.insert(Arc::clone(&t.market), state);
                }
                _ => {}
            }
        }
        let delivered: u64 =
            memory.minutes.iter().filter(|(k, _)| usize::from(k.2) == g).map(|(_, v)| v.0).sum();
        assert_eq!(delivered, expected, "seed {seed:#x}: gatherer {g} delivered count");
    }
    let merged: u64 = memory.minutes.values().map(|v| v.1).sum();
    let market_events = memory
        .keys
        .iter()
        .filter(|(k, _, _)| !matches!(k, EventKey::EventLifecycle { .. }))
        .count() as u64;
    // The ledger counts the merge core's first deliveries; a row the unique backstop skipped was
    // one too (counted by the sink as a conflict).
    assert_eq!(merged, market_events + memory.market_conflicts, "seed {seed:#x}: merged count");
    for (minute, _, _) in memory.minutes.keys() {
        assert_eq!(minute.rem_euclid(MINUTE_NS), 0);
    }
}

fn run_seed(seed: u64) -> Outcome {
    let world = world(seed);
    let streams = gatherer_streams(seed, &world);
    let crashes = if (seed ^ (seed >> 17)).is_multiple_of(3) { 2 } else { 0 };
    let mut memory = Memory::default();
    let crashes = merge(seed, &streams, &mut memory, crashes);
    let production: Vec<EventKey> = memory.keys.iter().map(|k| k.0.clone()).collect();
    let gaps = memory.coverage_gaps();
    let report = verify::verify(verify::Inputs {
        truth: Some(&world.truth),
        gatherers: &streams,
        production: &production,
        coverage_gaps: &gaps,
    });
    if report.ok() {
        // Identical deltas are never collapsed: each key's rows are numbered 0..n.
        let mut occs: HashMap<&EventKey, Vec<u32>> = HashMap::new();
        for (k, occ, _) in &memory.keys {
            occs.entry(k).or_default().push(*occ);
        }
        for (k, mut list) in occs {
            list.sort_unstable();
            let want: Vec<u32> = (0..list.len() as u32).collect();
            assert_eq!(list, want, "seed {seed:#x}: occ of {k:?}");
        }
        check_counts(seed, &memory, &streams);
    }
    Outcome { report, identical_deltas: world.identical_deltas, crashes }
}

fn replay_hint(seed: u64) -> String {
    format!("replay: KDP_SEED={seed:#x} cargo test -p kdp-dedup --test sim_seeds")
}

fn seeds() -> Vec<u64> {
    if let Ok(s) = std::env::var("KDP_SEED") {
        let s = s.trim();
        let seed = match s.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16),
            None => s.parse(),
        }
        .expect("KDP_SEED: a decimal or 0x-hex u64");
        return vec![seed];
    }
    let count =
        std::env::var("KDP_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(SEEDS_DEFAULT);
    let base = 0x6b64_7000_0000_0000u64;
    (0..count).map(|i| base + i * 0x9e37_79b9).collect()
}

#[test]
fn invariants_hold_for_every_seed() {
    let started = Instant::now();
    let seeds = seeds();
    let (mut identical, mut crashes, mut missing_in_gaps, mut gappy_seeds) = (0, 0, 0, 0);
    for &seed in &seeds {
        let outcome = std::panic::catch_unwind(|| run_seed(seed)).unwrap_or_else(|_| {
            panic!("seed {seed:#x} panicked; {}", replay_hint(seed));
        });
        if !outcome.report.ok() {
            let mut text = Vec::new();
            outcome.report.write_to(&mut text, 10).expect("report");
            panic!(
                "seed {seed:#x} failed:\n{}{}",
                String::from_utf8_lossy(&text),
                replay_hint(seed)
            );
        }
        identical += outcome.identical_deltas;
        crashes += u64::from(outcome.crashes);
        missing_in_gaps += outcome.report.missing_in_gaps;
        gappy_seeds += u64::from(outcome.report.missing_in_gaps > 0);
    }
    eprintln!(
        "sim_seeds: {} seeds in {:.2?}: {} identical deltas in the truth, {} merge-core crashes, \
         {} events missing inside coverage gaps ({} seeds)",
        seeds.len(),
        started.elapsed(),
        identical,
        crashes,
        missing_in_gaps,
        gappy_seeds
    );
    if seeds.len() as u64 == SEEDS_DEFAULT {
        assert!(identical > 0 && crashes > 0 && gappy_seeds > 0, "the seeds must exercise it all");
    }
}

// ---- the same seed through PostgreSQL -----------------------------------------------------------

/// Production in PostgreSQL through the real sink (`write_with_ledger`), read back with the
/// sink's and `inspect`'s queries.
struct Postgres {
    sink: Sink,
}

impl Production for Postgres {
    fn write(&mut self, batch: &Batch, delta: &LedgerDelta) {
        self.sink.write_with_ledger(batch, delta).expect("write");
    }

    fn cursors(&mut self) -> Vec<i64> {
        let cursors = self.sink.read_cursors().expect("cursors");
        (0..GATHERERS).map(|g| cursors[g].unwrap_or(0)).collect()
    }

    fn latest_ts(&mut self) -> Option<i64> {
        self.sink.latest_ts_exch_ns().expect("latest")
    }

    fn window(&mut self, from_ns: i64) -> Vec<ProductionKey> {
        self.sink.read_window(from_ns).expect("window")
    }

    fn held(&mut self, since_ns: i64) -> Vec<Uncovered> {
        self.sink.read_uncovered(since_ns).expect("uncovered")
    }
}

/// Picks a seed that crashes the merge core and has coverage gaps, runs it through both
/// productions, and compares everything stored.
#[test]
fn postgres_production_matches_the_in_memory_one() {
    let seed = std::env::var("KDP_PG_SEED")
        .ok()
        .and_then(|s| u64::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok())
        .unwrap_or_else(|| {
            seeds()
                .into_iter()
                .chain((0..).map(|i| 0x6b64_7000_0000_0000u64 + i * 0x9e37_79b9))
                .find(|&s| {
                    (s ^ (s >> 17)).is_multiple_of(3) && {
                        let o = run_seed(s);
                        o.crashes > 0 && o.report.missing_in_gaps > 0
                    }
                })
                .expect("a seed with crashes and coverage gaps")
        });
    eprintln!("postgres seed {seed:#x} (replay: KDP_PG_SEED={seed:#x})");
    let world = world(seed);
    let streams = gatherer_streams(seed, &world);
    let mut memory = Memory::default();
    let crashes = merge(seed, &streams, &mut memory, 2);
    let db = TestDatabase::new().expect("test database");
    let mut pg = Postgres { sink: Sink::new(db.config(), SinkOptions { migrate: true }) };
    assert_eq!(merge(seed, &streams, &mut pg, 2), crashes);
    assert!(crashes > 0);
    let mut client = db.connect().expect("connect");
    let mut want: Vec<EventKey> = memory.keys.iter().map(|k| k.0.clone()).collect();
    want.sort();
    assert_eq!(inspect::production_events(&mut client).expect("events"), want);
    assert_eq!(inspect::coverage_gaps(&mut client, None).expect("gaps"), memory.coverage_gaps());
    assert_eq!(inspect::uncovered(&mut client, None, i64::MIN).expect("uncovered"), {
        let mut held = memory.held(i64::MIN);
        held.sort_by(|a, b| {
            (a.gatherer, a.gap_gseq, a.market.as_deref().unwrap_or("")).cmp(&(
                b.gatherer,
                b.gap_gseq,
                b.market.as_deref().unwrap_or(""),
            ))
        });
        held
    });
    let counts: Vec<(i64, String, u8, u64, u64)> =
        inspect::minute_counts(&mut client, None, i64::MIN, i64::MAX)
            .expect("counts")
            .into_iter()
            .map(|c| (c.minute_ns, c.market.to_string(), c.gatherer, c.delivered, c.merged))
            .collect();
    let want: Vec<(i64, String, u8, u64, u64)> = memory
        .minutes
        .iter()
        .map(|((m, market, g), (d, n))| (*m, market.to_string(), *g, *d, *n))
        .collect();
    assert_eq!(counts, want);
    // And verify over what PostgreSQL holds agrees.
    let production = inspect::production_events(&mut client).expect("events");
    let gaps = inspect::coverage_gaps(&mut client, None).expect("gaps");
    let report = verify::verify(verify::Inputs {
        truth: Some(&world.truth),
        gatherers: &streams,
        production: &production,
        coverage_gaps: &gaps,
    });
    assert!(report.ok(), "seed {seed:#x}: {report:?}");
    assert!(report.missing_in_gaps > 0);
}
