//! A seeded generator of realistic Kalshi market-data frames, with the event each must parse to.
//!
//! Frames are written by hand here, in the current wire shape of the protocol note (§4),
//! including the `market_id` the live feed sends and the parser ignores, with the field order the
//! exchange uses. They are deliberately not produced by `kdp_ingest::wire::encode_event`, so a
//! misreading shared by the parser and its encoder cannot hide behind a green check. Each frame
//! keeps the values it was built from ([`Spec`]), so a test can check every parser against the
//! truth, not only against each other.
//!
//! Randomness is a SplitMix64 stream from one seed ([`SEED`]): the same seed gives byte-identical
//! frames on every machine.

use std::collections::HashSet;
use std::fmt::Write as _;

use kdp_engine::event::{
    BookDelta, BookSide, BookSnapshot, DOLLAR_MICROS, Event, Level, Side, Ticker, Trade,
};
use kdp_ingest::wire::{Envelope, Frame, Message, write_rfc3339, write_scaled};

/// The seed of the published benchmark runs ("kdpbench" in ASCII).
pub const SEED: u64 = 0x6b64_7062_656e_6368;
/// Distinct markets the frames are spread over: a busy shard's share of the exchange.
pub const MARKETS: usize = 1_000;
/// `orderbook_delta` frames per set: the bulk of the live feed.
pub const DELTAS: usize = 10_000;
/// `trade` frames per set.
pub const TRADES: usize = 1_000;
/// `ticker` frames per set.
pub const TICKERS: usize = 1_000;
/// `orderbook_snapshot` frames per set.
pub const SNAPSHOTS: usize = 1_000;
/// Levels per snapshot side: 5..=20, so 10..=40 levels per snapshot.
const SIDE_LEVELS_MIN: u64 = 5;
const SIDE_LEVELS_MAX: u64 = 20;

/// First exchange time of a set: 2026-09-25T19:16:20Z.
const TS_START_NS: i64 = 1_790_363_780_000_000_000;
const NS_PER_US: i64 = 1_000;
const NS_PER_MS: i64 = 1_000_000;
const NS_PER_S: i64 = 1_000_000_000;
/// Micro-dollars per cent (Kalshi's usual tick) and per tenth of a cent (the fine tick some
/// markets use near $0 and $1).
const MICROS_PER_CENT: u32 = 10_000;
const MICROS_PER_MILLICENT_10: u32 = 1_000;

/// Subscription ids as a shard would see them: one for the book channel, one for trades and
/// tickers.
const SID_BOOK: u64 = 2;
const SID_TRADE: u64 = 11;
const SID_TICKER: u64 = 12;

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, good enough for test data.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A stream from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`; the modulo bias is irrelevant here).
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `percent / 100`.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// One market: its ticker and the exchange's UUID for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Market {
    /// Market ticker, e.g. `KXBTCD-26SEP2517-T114999.99`.
    pub ticker: String,
    /// Market UUID (sent as `market_id`, ignored by the parser).
    pub id: String,
}

/// What a frame was built from: the normalized event it must parse to, minus borrowed text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spec {
    /// An `orderbook_delta`; `market` is empty, the ticker is `markets[market_idx]`.
    Delta { market_idx: usize, delta: BookDelta<'static> },
    /// A `trade`; `trade_id` and `market` are empty and filled from the owned fields.
    Trade { market_idx: usize, trade_id: String, trade: Trade<'static> },
    /// A `ticker`; `market` is empty.
    Ticker { market_idx: usize, ticker: Ticker<'static> },
    /// An `orderbook_snapshot`; levels ascending, as sent.
    Snapshot { market_idx: usize, yes: Vec<Level>, no: Vec<Level> },
}

/// One generated frame and its truth.
#[derive(Debug, Clone)]
pub struct Generated {
    /// The frame's bytes, exactly as a WebSocket text frame would carry them.
    pub frame: Vec<u8>,
    /// The envelope it carries.
    pub envelope: Envelope,
    /// The values it was built from.
    pub spec: Spec,
}

/// A full benchmark set: markets and frames of each timed type.
#[derive(Debug, Clone)]
pub struct FrameSet {
    /// The seed this set was generated from.
    pub seed: u64,
    /// All markets the frames refer to.
    pub markets: Vec<Market>,
    /// `orderbook_delta` frames.
    pub deltas: Vec<Generated>,
    /// `trade` frames.
    pub trades: Vec<Generated>,
    /// `ticker` frames.
    pub tickers: Vec<Generated>,
    /// `orderbook_snapshot` frames.
    pub snapshots: Vec<Generated>,
}

impl FrameSet {
    /// Generates the standard set ([`DELTAS`], [`TRADES`], [`TICKERS`], [`SNAPSHOTS`] frames over
    /// [`MARKETS`] markets) from `seed`.
    pub fn generate(seed: u64) -> Self {
        let mut rng = SplitMix64::new(seed);
        let markets = markets(&mut rng, MARKETS);
        let mut clock = Clock { ts_ns: TS_START_NS };
        let mut seq_book = 0;
        let deltas = (0..DELTAS)
            .map(|_| {
                seq_book += 1;
                delta(&mut rng, &markets, &mut clock, seq_book)
            })
            .collect();
        let snapshots = (0..SNAPSHOTS)
            .map(|_| {
                seq_book += 1;
                snapshot(&mut rng, &markets, seq_book)
            })
            .collect();
        let trades =
            (1..=TRADES as u64).map(|seq| trade(&mut rng, &markets, &mut clock, seq)).collect();
        let tickers = (0..TICKERS).map(|_| ticker(&mut rng, &markets, &mut clock)).collect();
        Self { seed, markets, deltas, trades, tickers, snapshots }
    }

    /// The frame `g` must parse to: its envelope and normalized event, borrowing this set's
    /// markets and `g`'s owned text.
    pub fn expected<'a>(&'a self, g: &'a Generated) -> Frame<'a> {
        let ticker = |idx: usize| self.markets[idx].ticker.as_str();
        let event = match &g.spec {
            Spec::Delta { market_idx, delta } => {
                Event::Delta(BookDelta { market: ticker(*market_idx), ..*delta })
            }
            Spec::Trade { market_idx, trade_id, trade } => Event::Trade(Trade {
                trade_id: trade_id.as_str(),
                market: ticker(*market_idx),
                ..*trade
            }),
            Spec::Ticker { market_idx, ticker: t } => {
                Event::Ticker(Ticker { market: ticker(*market_idx), ..*t })
            }
            Spec::Snapshot { market_idx, yes, no } => {
                Event::Snapshot(BookSnapshot { market: ticker(*market_idx), yes, no })
            }
        };
        Frame { envelope: g.envelope, message: Message::Event(event) }
    }

    /// Every frame of the set with its type name, in a fixed order.
    pub fn all(&self) -> impl Iterator<Item = (&'static str, &Generated)> {
        let deltas = self.deltas.iter().map(|g| ("delta", g));
        let trades = self.trades.iter().map(|g| ("trade", g));
        let tickers = self.tickers.iter().map(|g| ("ticker", g));
        let snapshots = self.snapshots.iter().map(|g| ("snapshot", g));
        deltas.chain(trades).chain(tickers).chain(snapshots)
    }
}

/// The exchange clock: moves forward a random 0–2 ms per message, at µs precision (what Kalshi
/// sends in delta `ts` today).
struct Clock {
    ts_ns: i64,
}

impl Clock {
    fn tick(&mut self, rng: &mut SplitMix64) -> i64 {
        self.ts_ns += rng.below(2_000) as i64 * NS_PER_US;
        self.ts_ns
    }
}

const MONTHS: [&str; 12] =
    ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"];
const TEAMS: [&str; 16] = [
    "NYY", "BOS", "LAD", "SF", "SD", "CHC", "HOU", "ATL", "KC", "BUF", "PHI", "DAL", "MIA", "SEA",
    "DET", "MIN",
];
const CITIES: [&str; 6] = ["NY", "CHI", "MIA", "AUS", "LAX", "DEN"];

/// `n` distinct tickers shaped like the series that dominate the live feed (crypto ranges,
/// weather brackets, games, rates, index ranges) with their UUIDs.
fn markets(rng: &mut SplitMix64, n: usize) -> Vec<Market> {
    let mut seen = HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let date = format!("26{}{:02}", MONTHS[rng.below(12) as usize], rng.range(1, 28));
        let ticker = match rng.below(6) {
            0 => format!("KXBTCD-{date}{:02}-T{}999.99", rng.range(0, 23), rng.range(90, 140)),
            1 => format!("KXETHD-{date}{:02}-T{}99.99", rng.range(0, 23), rng.range(30, 59)),
            2 => format!(
                "KXHIGH{}-{date}-B{}.5",
                CITIES[rng.below(CITIES.len() as u64) as usize],
                rng.range(40, 99)
            ),
            3 => {
                let home = TEAMS[rng.below(TEAMS.len() as u64) as usize];
                let away = TEAMS[rng.below(TEAMS.len() as u64) as usize];
                let pick = if rng.percent(50) { home } else { away };
                format!("KXMLBGAME-{date}{away}{home}-{pick}")
            }
            4 => format!(
                "FED-26{}-T{}.{:02}",
                MONTHS[rng.below(12) as usize],
                rng.range(2, 5),
                rng.below(4) * 25
            ),
            _ => format!("INXD-{date}-B{}", rng.range(5_000, 7_500)),
        };
        if seen.insert(ticker.clone()) {
            out.push(Market { ticker, id: uuid(rng) });
        }
    }
    out
}

/// A random UUID v4 in its lowercase text form.
fn uuid(rng: &mut SplitMix64) -> String {
    let hi = rng.next_u64();
    let lo = rng.next_u64();
    let hi = (hi & !0xf000) | 0x4000;
    let lo = (lo & !(0xc << 60)) | (0x8 << 60);
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xffff,
        hi & 0xffff,
        lo >> 48,
        lo & 0xffff_ffff_ffff
    )
}

/// A book price strictly inside ($0, $1): whole cents mostly, a tenth-of-a-cent tick on one
/// price in ten (as the fine-tick markets send).
fn book_price(rng: &mut SplitMix64) -> u32 {
    if rng.percent(10) {
        rng.range(1, 999) as u32 * MICROS_PER_MILLICENT_10
    } else {
        rng.range(1, 99) as u32 * MICROS_PER_CENT
    }
}

/// A size in hundredths: mostly whole contracts over a wide range, sometimes fractional.
fn size_centi(rng: &mut SplitMix64) -> i64 {
    let contracts = match rng.below(10) {
        0..=5 => rng.range(1, 100),
        6..=8 => rng.range(100, 5_000),
        _ => rng.range(5_000, 250_000),
    } as i64;
    let frac = if rng.percent(5) { rng.range(1, 99) as i64 } else { 0 };
    contracts * 100 + frac
}

/// Dollar text the way Kalshi writes it: four decimals, six when sub-hundredth-cent.
fn dollars(out: &mut String, micros: u32) {
    if micros.is_multiple_of(100) {
        write_scaled(out, i64::from(micros / 100), 4);
    } else {
        write_scaled(out, i64::from(micros), 6);
    }
}

fn side(rng: &mut SplitMix64) -> Side {
    if rng.percent(50) { Side::Yes } else { Side::No }
}

fn generated(frame: String, envelope: Envelope, spec: Spec) -> Generated {
    Generated { frame: frame.into_bytes(), envelope, spec }
}

fn delta(rng: &mut SplitMix64, markets: &[Market], clock: &mut Clock, seq: u64) -> Generated {
    let market_idx = rng.below(markets.len() as u64) as usize;
    let m = &markets[market_idx];
    let ts_exch_ns = clock.tick(rng);
    let size = size_centi(rng);
    let delta = BookDelta {
        market: "",
        side: side(rng),
        price_micros: book_price(rng),
        delta_centi: if rng.percent(50) { -size } else { size },
        ts_exch_ns,
        client_order_id: None,
    };
    let mut f = format!(
        r#"{{"type":"orderbook_delta","sid":{SID_BOOK},"seq":{seq},"msg":{{"market_ticker":"{}","market_id":"{}","price_dollars":""#,
        m.ticker, m.id
    );
    dollars(&mut f, delta.price_micros);
    f.push_str(r#"","delta_fp":""#);
    write_scaled(&mut f, delta.delta_centi, 2);
    let _ = write!(f, r#"","side":"{}","ts":""#, delta.side.as_str());
    write_rfc3339(&mut f, ts_exch_ns, 6);
    let _ = write!(f, r#"","ts_ms":{}}}}}"#, ts_exch_ns / NS_PER_MS);
    let envelope = Envelope { sid: Some(SID_BOOK), seq: Some(seq), ..Envelope::default() };
    generated(f, envelope, Spec::Delta { market_idx, delta })
}

fn trade(rng: &mut SplitMix64, markets: &[Market], clock: &mut Clock, seq: u64) -> Generated {
    let market_idx = rng.below(markets.len() as u64) as usize;
    let m = &markets[market_idx];
    // Trades carry ms (`ts_ms`) and whole seconds (`ts`): the ms time is the truth.
    let ts_exch_ns = clock.tick(rng) / NS_PER_MS * NS_PER_MS;
    let yes = book_price(rng);
    let taker = side(rng);
    let book = if rng.percent(50) { BookSide::Ask } else { BookSide::Bid };
    let trade = Trade {
        trade_id: "",
        market: "",
        yes_price_micros: yes,
        no_price_micros: DOLLAR_MICROS - yes,
        count_centi: size_centi(rng),
        taker_side: Some(taker),
        taker_book_side: Some(book),
        is_block_trade: Some(rng.percent(1)),
        ts_exch_ns,
    };
    let trade_id = uuid(rng);
    let mut f = format!(
        r#"{{"type":"trade","sid":{SID_TRADE},"seq":{seq},"msg":{{"trade_id":"{trade_id}","market_ticker":"{}","yes_price_dollars":""#,
        m.ticker
    );
    dollars(&mut f, trade.yes_price_micros);
    f.push_str(r#"","no_price_dollars":""#);
    dollars(&mut f, trade.no_price_micros);
    f.push_str(r#"","count_fp":""#);
    write_scaled(&mut f, trade.count_centi, 2);
    let _ = write!(
        f,
        r#"","taker_side":"{t}","taker_outcome_side":"{t}","taker_book_side":"{}","is_block_trade":{},"ts":{},"ts_ms":{}}}}}"#,
        book.as_str(),
        trade.is_block_trade == Some(true),
        ts_exch_ns / NS_PER_S,
        ts_exch_ns / NS_PER_MS,
        t = taker.as_str(),
    );
    let envelope = Envelope { sid: Some(SID_TRADE), seq: Some(seq), ..Envelope::default() };
    generated(f, envelope, Spec::Trade { market_idx, trade_id, trade })
}

fn ticker(rng: &mut SplitMix64, markets: &[Market], clock: &mut Clock) -> Generated {
    let market_idx = rng.below(markets.len() as u64) as usize;
    let m = &markets[market_idx];
    // `time` is sent at µs; it beats `ts_ms` and `ts`.
    let ts_exch_ns = clock.tick(rng);
    let bid_cents = rng.range(0, 98) as u32;
    let ask_cents = rng.range(u64::from(bid_cents) + 1, 100) as u32;
    let volume = size_centi(rng) * 10;
    let oi = size_centi(rng) * 5;
    let t = Ticker {
        market: "",
        // No trade yet: the wire sends `"price_dollars":""`.
        price_micros: if rng.percent(5) {
            None
        } else {
            Some(rng.range(u64::from(bid_cents), u64::from(ask_cents)) as u32 * MICROS_PER_CENT)
        },
        yes_bid_micros: Some(bid_cents * MICROS_PER_CENT),
        yes_ask_micros: Some(ask_cents * MICROS_PER_CENT),
        yes_bid_size_centi: Some(size_centi(rng)),
        yes_ask_size_centi: Some(size_centi(rng)),
        last_trade_size_centi: Some(size_centi(rng)),
        volume_centi: Some(volume),
        open_interest_centi: Some(oi),
        dollar_volume: Some(volume / 200),
        dollar_open_interest: Some(oi / 200),
        clock: None,
        ts_exch_ns,
    };
    let mut f = format!(
        r#"{{"type":"ticker","sid":{SID_TICKER},"msg":{{"market_id":"{}","market_ticker":"{}","price_dollars":""#,
        m.id, m.ticker
    );
    if let Some(p) = t.price_micros {
        dollars(&mut f, p);
    }
    for (name, v) in [("yes_bid_dollars", t.yes_bid_micros), ("yes_ask_dollars", t.yes_ask_micros)]
    {
        let _ = write!(f, r#"","{name}":""#);
        dollars(&mut f, v.unwrap_or_default());
    }
    for (name, v) in [("volume_fp", volume), ("open_interest_fp", oi)] {
        let _ = write!(f, r#"","{name}":""#);
        write_scaled(&mut f, v, 2);
    }
    let _ = write!(f, r#"","dollar_volume":{},"dollar_open_interest":{}"#, volume / 200, oi / 200);
    for (name, v) in [
        ("yes_bid_size_fp", t.yes_bid_size_centi),
        ("yes_ask_size_fp", t.yes_ask_size_centi),
        ("last_trade_size_fp", t.last_trade_size_centi),
    ] {
        let _ = write!(f, r#","{name}":""#);
        write_scaled(&mut f, v.unwrap_or_default(), 2);
        f.push('"');
    }
    let _ =
        write!(f, r#","ts":{},"ts_ms":{},"time":""#, ts_exch_ns / NS_PER_S, ts_exch_ns / NS_PER_MS);
    write_rfc3339(&mut f, ts_exch_ns, 6);
    f.push_str(r#""}}"#);
    let envelope = Envelope { sid: Some(SID_TICKER), ..Envelope::default() };
    generated(f, envelope, Spec::Ticker { market_idx, ticker: t })
}

/// One side's ladder: `n` distinct whole-cent prices stepping down 1–2 cents from `best_cents`,
/// returned ascending (best bid last) as the exchange sends them.
fn ladder(rng: &mut SplitMix64, best_cents: u32, n: u64) -> Vec<Level> {
    let mut out = Vec::with_capacity(n as usize);
    let mut cents = best_cents;
    for _ in 0..n {
        debug_assert!(cents >= 1);
        out.push(Level { price_micros: cents * MICROS_PER_CENT, size_centi: size_centi(rng) });
        cents = cents.saturating_sub(1 + rng.below(2) as u32);
    }
    out.reverse();
    out
}

fn snapshot(rng: &mut SplitMix64, markets: &[Market], seq: u64) -> Generated {
    let market_idx = rng.below(markets.len() as u64) as usize;
    let m = &markets[market_idx];
    let yes_n = rng.range(SIDE_LEVELS_MIN, SIDE_LEVELS_MAX);
    let no_n = rng.range(SIDE_LEVELS_MIN, SIDE_LEVELS_MAX);
    // Each ladder needs up to 2n cents below its best bid; the book must not cross
    // (best YES bid + best NO bid < $1).
    let (yes_min, no_min) = (2 * yes_n as u32, 2 * no_n as u32);
    let yes_best = yes_min + rng.below(u64::from(99 - yes_min - no_min)) as u32;
    let no_best = no_min + rng.below(u64::from(99 - yes_best - no_min)) as u32;
    let yes = ladder(rng, yes_best, yes_n);
    let no = ladder(rng, no_best, no_n);
    let mut f = format!(
        r#"{{"type":"orderbook_snapshot","sid":{SID_BOOK},"seq":{seq},"msg":{{"market_ticker":"{}","market_id":"{}""#,
        m.ticker, m.id
    );
    for (name, levels) in [("yes_dollars_fp", &yes), ("no_dollars_fp", &no)] {
        let _ = write!(f, r#","{name}":["#);
        for (i, l) in levels.iter().enumerate() {
            if i > 0 {
                f.push(',');
            }
            f.push_str(r#"[""#);
            dollars(&mut f, l.price_micros);
            f.push_str(r#"",""#);
            write_scaled(&mut f, l.size_centi, 2);
            f.push_str(r#""]"#);
        }
        f.push(']');
    }
    f.push_str("}}");
    let envelope = Envelope { sid: Some(SID_BOOK), seq: Some(seq), ..Envelope::default() };
    generated(f, envelope, Spec::Snapshot { market_idx, yes, no })
}
