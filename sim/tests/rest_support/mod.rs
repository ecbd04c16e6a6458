//! Test support for the REST integration tests: a deterministic in-memory catalog implementing
//! `MarketView`, a hub stand-in implementing `ExchangeQuery`, a loopback server, and a minimal
//! HTTP/1.1 client over `TcpStream` (one request per connection, `Connection: close`), so the
//! tests speak real HTTP without another client dependency.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use kdp_sim::market::model::{
    BookLevels, BookSide, EventInfo, Level, MarketId, MarketInfo, MarketStatus, PriceGrid,
    SeriesInfo, Side, TickerState,
};
use kdp_sim::market::{RecentTrade, TradePage, TradeQuery};
use kdp_sim::transport::rest::{self, ExchangeQuery, MarketView, RestConfig, RestFaults};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// 2026-11-29T12:00:00Z in ns: the fixture's "now".
pub const NOW_NS: i64 = 1_795_953_600 * 1_000_000_000;
const HOUR_NS: i64 = 3_600 * 1_000_000_000;

/// The statuses the fixture cycles through, market by market.
pub const STATUS_CYCLE: [MarketStatus; 6] = [
    MarketStatus::Initialized,
    MarketStatus::Active,
    MarketStatus::Inactive,
    MarketStatus::Closed,
    MarketStatus::Determined,
    MarketStatus::Finalized,
];

/// An in-memory exchange catalog.
#[derive(Debug, Default)]
pub struct Fixture {
    pub now_ns: i64,
    pub markets: Vec<MarketInfo>,
    pub events: Vec<EventInfo>,
    pub series: Vec<SeriesInfo>,
    pub books: Vec<BookLevels>,
    /// Oldest first; `ordinal` 1, 2, 3, ...
    pub trades: Vec<RecentTrade>,
    index: HashMap<String, MarketId>,
}

impl Fixture {
    /// `n_series` series (categories alternate), each with `events_per_series` events of
    /// `markets_per_event` markets. Market `i` has status `STATUS_CYCLE[i % 6]`, grid
    /// `i % 3`, and a book of `i % 5` levels a side.
    pub fn catalog(n_series: usize, events_per_series: usize, markets_per_event: usize) -> Fixture {
        let mut fx = Fixture { now_ns: NOW_NS, ..Fixture::default() };
        for s in 0..n_series {
            fx.series.push(SeriesInfo {
                ticker: format!("KXS{s:03}"),
                title: format!("Series {s}"),
                category: if s % 2 == 0 { "Climate and Weather" } else { "Economics" }.to_owned(),
                frequency: "daily".to_owned(),
            });
            for e in 0..events_per_series {
                let event_id = fx.events.len() as u32;
                fx.events.push(EventInfo {
                    ticker: format!("KXS{s:03}-26NOV{e:03}"),
                    series: s as u32,
                    title: format!("Event {s}/{e}"),
                    sub_title: format!("On Nov {e}"),
                    mutually_exclusive: e % 2 == 0,
                });
                for _ in 0..markets_per_event {
                    fx.push_market(event_id);
                }
            }
        }
        fx
    }

    /// Appends one market to `event` (the way the engine lists new markets).
    pub fn push_market(&mut self, event: u32) -> MarketId {
        let i = self.markets.len();
        let id = i as MarketId;
        let ticker = format!("{}-M{i:05}", self.events[event as usize].ticker);
        let status = STATUS_CYCLE[i % STATUS_CYCLE.len()];
        let grid = [PriceGrid::LinearCent, PriceGrid::DeciCent, PriceGrid::TaperedDeciCent][i % 3];
        let levels = i % 5;
        let book = BookLevels {
            yes: (0..levels)
                .map(|k| Level {
                    price_micros: 100_000 + 10_000 * k as u32,
                    size_centi: 1_000 + k as i64,
                })
                .collect(),
            no: (0..levels)
                .map(|k| Level {
                    price_micros: 500_000 + 10_000 * k as u32,
                    size_centi: 250 + k as i64,
                })
                .collect(),
        };
        let determined = matches!(status, MarketStatus::Determined | MarketStatus::Finalized);
        let ticker_state = TickerState {
            last_price_micros: i.is_multiple_of(2).then_some(420_000),
            yes_bid_micros: book.yes.last().map_or(0, |l| l.price_micros),
            yes_ask_micros: book.no.last().map_or(1_000_000, |l| 1_000_000 - l.price_micros),
            yes_bid_size_centi: book.yes.last().map_or(0, |l| l.size_centi),
            yes_ask_size_centi: book.no.last().map_or(0, |l| l.size_centi),
            last_trade_size_centi: None,
            volume_centi: 12_345,
            open_interest_centi: 678,
            dollar_volume: 50,
            dollar_open_interest: 3,
        };
        self.markets.push(MarketInfo {
            ticker: ticker.clone(),
            event,
            grid,
            fractional: i % 2 == 1,
            status,
            created_ts_ns: NOW_NS - 48 * HOUR_NS,
            open_ts_ns: NOW_NS - 24 * HOUR_NS,
            close_ts_ns: NOW_NS + 24 * HOUR_NS + 500_000,
            determined_ts_ns: determined.then_some(NOW_NS - HOUR_NS),
            settled_ts_ns: (status == MarketStatus::Finalized).then_some(NOW_NS - HOUR_NS / 2),
            result: determined.then_some(if i.is_multiple_of(2) { Side::Yes } else { Side::No }),
            ticker_state,
            yes_sub_title: format!("Outcome {i}"),
        });
        self.books.push(book);
        self.index.insert(ticker, id);
        id
    }

    /// Appends `n` trades round-robin over the first `markets` markets, one second apart,
    /// `exch_seq` 10, 20, 30, ... (gaps like the engine's, where other events interleave).
    pub fn push_trades(&mut self, n: usize, markets: usize) {
        for k in 0..n {
            let seq = (self.trades.len() as u64 + 1) * 10;
            let mut trade_id = [0u8; 16];
            trade_id[8..].copy_from_slice(&seq.to_be_bytes());
            self.trades.push(RecentTrade {
                ordinal: self.trades.len() as u64 + 1,
                exch_seq: seq,
                ts_ns: NOW_NS - HOUR_NS + seq as i64 * 100_000_000 + 123_000,
                market: (k % markets) as MarketId,
                trade_id,
                yes_price_micros: 360_000 + (k as u32 % 10) * 10_000,
                count_centi: 13_600 + k as i64,
                taker_side: if k % 2 == 0 { Side::No } else { Side::Yes },
                taker_book_side: if k % 2 == 0 { BookSide::Ask } else { BookSide::Bid },
            });
        }
    }
}

impl MarketView for Fixture {
    fn now_ns(&self) -> i64 {
        self.now_ns
    }
    fn markets(&self) -> &[MarketInfo] {
        &self.markets
    }
    fn events(&self) -> &[EventInfo] {
        &self.events
    }
    fn series(&self) -> &[SeriesInfo] {
        &self.series
    }
    fn market_id(&self, ticker: &str) -> Option<MarketId> {
        self.index.get(ticker).copied()
    }
    fn event_id(&self, ticker: &str) -> Option<u32> {
        self.events.iter().position(|e| e.ticker == ticker).map(|p| p as u32)
    }
    fn series_id(&self, ticker: &str) -> Option<u32> {
        self.series.iter().position(|s| s.ticker == ticker).map(|p| p as u32)
    }
    fn book(&self, market: MarketId, depth: Option<usize>) -> BookLevels {
        let book = self.books[market as usize].clone();
        let Some(depth) = depth else { return book };
        let top = |v: Vec<Level>| v[v.len().saturating_sub(depth)..].to_vec();
        BookLevels { yes: top(book.yes), no: top(book.no) }
    }
    /// The engine's contract: newest first, older than `cursor` (an ordinal), next cursor =
    /// ordinal of the last listed trade when more match.
    fn trades_page(&self, query: &TradeQuery, cursor: Option<u64>, limit: usize) -> TradePage {
        let mut trades = Vec::new();
        let mut next = None;
        let matching = self.trades.iter().rev().filter(|t| {
            cursor.is_none_or(|c| t.ordinal < c)
                && query.market.is_none_or(|m| m == t.market)
                && query.min_ts_ns.is_none_or(|min| t.ts_ns >= min)
                && query.max_ts_ns.is_none_or(|max| t.ts_ns <= max)
        });
        for t in matching {
            if trades.len() == limit {
                next = trades.last().map(|l: &RecentTrade| l.ordinal);
                break;
            }
            trades.push(*t);
        }
        TradePage { trades, cursor: next }
    }
}

/// The hub stand-in: runs the closure under a lock; `closed` makes every query fail.
#[derive(Debug, Clone)]
pub struct FixtureHub {
    pub fixture: Arc<Mutex<Fixture>>,
    pub closed: bool,
}

impl FixtureHub {
    pub fn new(fixture: Fixture) -> FixtureHub {
        FixtureHub { fixture: Arc::new(Mutex::new(fixture)), closed: false }
    }
}

impl ExchangeQuery for FixtureHub {
    type View = Fixture;
    fn query<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Fixture) -> R + Send + 'static,
    ) -> impl Future<Output = Option<R>> + Send {
        let out = if self.closed { None } else { Some(f(&self.fixture.lock().unwrap())) };
        std::future::ready(out)
    }
}

/// Serves the router on an ephemeral loopback port.
pub async fn serve<Q: ExchangeQuery>(hub: Q, cfg: RestConfig, faults: RestFaults) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = rest::router(hub, cfg, faults);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// One HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// `GET {path}` (path includes the query) over a fresh connection.
pub async fn get(addr: SocketAddr, path: &str) -> Answer {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("no header end");
    let head = std::str::from_utf8(&raw[..split]).unwrap();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status: u16 = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked")) {
        body = dechunk(&body);
    } else if let Some((_, len)) = headers.iter().find(|(k, _)| k == "content-length") {
        assert_eq!(body.len(), len.parse::<usize>().unwrap(), "content-length mismatch");
    }
    Answer { status, headers, body: String::from_utf8(body).unwrap() }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = data.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&data[..eol]).unwrap().trim(), 16).unwrap();
        data = &data[eol + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// `GET` under `/trade-api/v2`.
pub async fn api(addr: SocketAddr, path: &str) -> Answer {
    get(addr, &format!("{}{path}", rest::API_PREFIX)).await
}
