//! Reading production and gatherer databases for `kdp coverage` and `kdp verify`: the thin SQL
//! layer under the pure [`crate::ledger::minute_coverage`] and [`crate::verify::verify`]. Whole
//! tables are read into memory (a verification run's size, not the service's).

use std::collections::HashMap;
use std::sync::Arc;

use kdp_engine::event::{BookSide, Side};
use postgres::Client;

use crate::ledger::{GapInterval, MinuteCount, Uncovered, minute_start};
use crate::row::{
    Delta, EventLifecycle, Gap, MarketLifecycle, Row, Snapshot, SnapshotAnchor, Ticker,
    TickerContent, Trade,
};
use crate::verify::{EventKey, RecordedGap};

fn u32_of(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

fn u64_of(v: i64) -> u64 {
    u64::from_ne_bytes(v.to_ne_bytes())
}

fn gatherer_of(v: i16) -> u8 {
    u8::try_from(v).unwrap_or(u8::MAX)
}

fn market_of(m: &str) -> Option<Arc<str>> {
    (!m.is_empty()).then(|| Arc::from(m))
}

/// Interns tickers so keys share one `Arc<str>` per market.
#[derive(Default)]
struct Names(HashMap<String, Arc<str>>);

impl Names {
    fn get(&mut self, name: &str) -> Arc<str> {
        if let Some(a) = self.0.get(name) {
            return Arc::clone(a);
        }
        let a: Arc<str> = Arc::from(name);
        self.0.insert(name.to_owned(), Arc::clone(&a));
        a
    }
}

const TICKER_CONTENT: &str = "price_micros, yes_bid_micros, yes_ask_micros, yes_bid_size_centi, \
     yes_ask_size_centi, last_trade_size_centi, volume_centi, open_interest_centi, dollar_volume, \
     dollar_open_interest, clock";

fn ticker_content(row: &postgres::Row, at: usize) -> TickerContent {
    let u = |i: usize| row.get::<_, Option<i64>>(at + i).map(u32_of);
    let s = |i: usize| row.get::<_, Option<i64>>(at + i);
    TickerContent {
        price_micros: u(0),
        yes_bid_micros: u(1),
        yes_ask_micros: u(2),
        yes_bid_size_centi: s(3),
        yes_ask_size_centi: s(4),
        last_trade_size_centi: s(5),
        volume_centi: s(6),
        open_interest_centi: s(7),
        dollar_volume: s(8),
        dollar_open_interest: s(9),
        clock: s(10).map(u64_of),
    }
}

/// Every event row in production, as content keys (one per row).
pub fn production_events(client: &mut Client) -> Result<Vec<EventKey>, postgres::Error> {
    let mut names = Names::default();
    let mut keys = Vec::new();
    for r in client
        .query("SELECT market, ts_exch_ns, side_yes, price_micros, delta_centi FROM delta", &[])?
    {
        keys.push(EventKey::Delta {
            market: names.get(r.get(0)),
            ts_exch_ns: r.get(1),
            side_yes: r.get(2),
            price_micros: u32_of(r.get(3)),
            delta_centi: r.get(4),
        });
    }
    for r in client.query("SELECT trade_id FROM trade", &[])? {
        let id: &str = r.get(0);
        keys.push(EventKey::Trade { trade_id: id.into() });
    }
    for r in
        client.query(&format!("SELECT market, ts_exch_ns, {TICKER_CONTENT} FROM ticker"), &[])?
    {
        let content = ticker_content(&r, 2);
        keys.push(EventKey::Ticker {
            market: names.get(r.get(0)),
            ts_exch_ns: r.get(1),
            content: crate::verify::ticker_key(&content),
        });
    }
    for r in client.query("SELECT market, kind, payload FROM market_lifecycle", &[])? {
        let (kind, payload): (&str, &str) = (r.get(1), r.get(2));
        keys.push(EventKey::MarketLifecycle {
            market: names.get(r.get(0)),
            kind: kind.into(),
            payload: payload.into(),
        });
    }
    for r in client.query("SELECT event_ticker, payload FROM event_lifecycle", &[])? {
        let (event_ticker, payload): (&str, &str) = (r.get(0), r.get(1));
        keys.push(EventKey::EventLifecycle {
            event_ticker: event_ticker.into(),
            payload: payload.into(),
        });
    }
    keys.sort();
    Ok(keys)
}

/// Production's coverage gaps: every market's (`market` None) or one market's together with the
/// every-market ones.
pub fn coverage_gaps(
    client: &mut Client,
    market: Option<&str>,
) -> Result<Vec<RecordedGap>, postgres::Error> {
    let rows = client.query(
        "SELECT market, ts_from_ns, ts_to_ns FROM coverage_gap \
         WHERE $1::text IS NULL OR market = $1 OR market = '' ORDER BY market, ts_from_ns",
        &[&market],
    )?;
    Ok(rows
        .iter()
        .map(|r| RecordedGap {
            market: market_of(r.get(0)),
            interval: GapInterval { from_ns: r.get(1), to_ns: r.get(2) },
        })
        .collect())
}

/// Stored uncovered intervals that are open or end at or after `since_ns`, optionally of one
/// market (with the every-market ones).
pub fn uncovered(
    client: &mut Client,
    market: Option<&str>,
    since_ns: i64,
) -> Result<Vec<Uncovered>, postgres::Error> {
    let rows = client.query(
        "SELECT gatherer, gap_gseq, market, ts_from_ns, ts_to_ns FROM gatherer_uncovered \
         WHERE (ts_to_ns IS NULL OR ts_to_ns >= $2) \
         AND ($1::text IS NULL OR market = $1 OR market = '') \
         ORDER BY gatherer, gap_gseq, market",
        &[&market, &since_ns],
    )?;
    Ok(rows
        .iter()
        .map(|r| Uncovered {
            gatherer: gatherer_of(r.get(0)),
            gap_gseq: r.get(1),
            market: market_of(r.get(2)),
            from_ns: r.get(3),
            to_ns: r.get(4),
        })
        .collect())
}

/// The minute counts of one market (`None`: all) with minutes in `[from_ns, to_ns)`.
pub fn minute_counts(
    client: &mut Client,
    market: Option<&str>,
    from_ns: i64,
    to_ns: i64,
) -> Result<Vec<MinuteCount>, postgres::Error> {
    let from_minute = minute_start(from_ns);
    let rows = client.query(
        "SELECT market, minute_ns, gatherer, delivered, merged FROM coverage_minute \
         WHERE ($1::text IS NULL OR market = $1) AND minute_ns >= $2 AND minute_ns < $3 \
         ORDER BY minute_ns, market, gatherer",
        &[&market, &from_minute, &to_ns],
    )?;
    let mut names = Names::default();
    Ok(rows
        .iter()
        .map(|r| MinuteCount {
            market: names.get(r.get(0)),
            minute_ns: r.get(1),
            gatherer: gatherer_of(r.get(2)),
            delivered: u64::try_from(r.get::<_, i64>(3)).unwrap_or(0),
            merged: u64::try_from(r.get::<_, i64>(4)).unwrap_or(0),
        })
        .collect())
}

/// Every stored row of a gatherer database (gatherer schema), in gseq order; raw frames are
/// skipped as the deduplicator skips them.
pub fn gatherer_rows(client: &mut Client) -> Result<Vec<Row>, postgres::Error> {
    let mut names = Names::default();
    let mut rows: Vec<(i64, Row)> = Vec::new();
    for r in client.query(
        "SELECT gseq, market, side_yes, price_micros, delta_centi, ts_exch_ns, ts_recv_ns, \
         client_order_id FROM delta",
        &[],
    )? {
        let side = if r.get(2) { Side::Yes } else { Side::No };
        let coid: Option<&str> = r.get(7);
        rows.push((
            r.get(0),
            Row::Delta(Delta {
                market: names.get(r.get(1)),
                side,
                price_micros: u32_of(r.get(3)),
                delta_centi: r.get(4),
                ts_exch_ns: r.get(5),
                ts_recv_ns: r.get(6),
                client_order_id: coid.map(Into::into),
            }),
        ));
    }
    for r in client.query(
        "SELECT gseq, trade_id, market, yes_price_micros, no_price_micros, count_centi, \
         taker_side_yes, taker_book_side_ask, is_block_trade, ts_exch_ns, ts_recv_ns FROM trade",
        &[],
    )? {
        let id: &str = r.get(1);
        rows.push((
            r.get(0),
            Row::Trade(Box::new(Trade {
                trade_id: id.into(),
                market: names.get(r.get(2)),
                yes_price_micros: u32_of(r.get(3)),
                no_price_micros: u32_of(r.get(4)),
                count_centi: r.get(5),
                taker_side: r
                    .get::<_, Option<bool>>(6)
                    .map(|y| if y { Side::Yes } else { Side::No }),
                taker_book_side: r
                    .get::<_, Option<bool>>(7)
                    .map(|a| if a { BookSide::Ask } else { BookSide::Bid }),
                is_block_trade: r.get(8),
                ts_exch_ns: r.get(9),
                ts_recv_ns: r.get(10),
            })),
        ));
    }
    for r in client.query(
        &format!("SELECT gseq, market, ts_exch_ns, ts_recv_ns, {TICKER_CONTENT} FROM ticker"),
        &[],
    )? {
        rows.push((
            r.get(0),
            Row::Ticker(Box::new(Ticker {
                market: names.get(r.get(1)),
                content: ticker_content(&r, 4),
                ts_exch_ns: r.get(2),
                ts_recv_ns: r.get(3),
            })),
        ));
    }
    for r in client.query(
        "SELECT gseq, market, kind, multivariate, open_ts_s, close_ts_s, determination_ts_s, \
         settled_ts_s, result, settlement_value_micros, price_level_structure, payload, \
         ts_recv_ns FROM market_lifecycle",
        &[],
    )? {
        let text = |i: usize| r.get::<_, Option<&str>>(i).map(Into::into);
        let (kind, payload): (&str, &str) = (r.get(2), r.get(11));
        rows.push((
            r.get(0),
            Row::MarketLifecycle(Box::new(MarketLifecycle {
                market: names.get(r.get(1)),
                kind: kind.into(),
                multivariate: r.get(3),
                open_ts_s: r.get(4),
                close_ts_s: r.get(5),
                determination_ts_s: r.get(6),
                settled_ts_s: r.get(7),
                result: text(8),
                settlement_value_micros: r.get::<_, Option<i64>>(9).map(u32_of),
                price_level_structure: text(10),
                payload: payload.into(),
                ts_recv_ns: r.get(12),
            })),
        ));
    }
    for r in
        client.query("SELECT gseq, event_ticker, payload, ts_recv_ns FROM event_lifecycle", &[])?
    {
        let (event_ticker, payload): (&str, &str) = (r.get(1), r.get(2));
        rows.push((
            r.get(0),
            Row::EventLifecycle(Box::new(EventLifecycle {
                event_ticker: event_ticker.into(),
                payload: payload.into(),
                ts_recv_ns: r.get(3),
            })),
        ));
    }
    for r in
        client.query("SELECT gseq, ts_recv_ns, conn_id, sid, seq, market FROM snapshot", &[])?
    {
        // Book levels are not compared by verify: left empty.
        let anchor = match r.get::<_, Option<i64>>(2) {
            Some(conn_id) => SnapshotAnchor::Ws {
                conn_id: u64_of(conn_id),
                sid: r.get::<_, Option<i64>>(3).map_or(0, u64_of),
                seq: r.get::<_, Option<i64>>(4).map_or(0, u64_of),
            },
            None => SnapshotAnchor::Rest,
        };
        rows.push((
            r.get(0),
            Row::Snapshot(Box::new(Snapshot {
                market: names.get(r.get(5)),
                anchor,
                yes: Box::new([]),
                no: Box::new([]),
                ts_recv_ns: r.get(1),
            })),
        ));
    }
    for r in client.query(
        "SELECT gseq, ts_recv_ns, conn_id, sid, expected_seq, got_seq, ts_recv_last_good_ns, \
         markets FROM gap",
        &[],
    )? {
        let markets: Vec<String> = r.get(7);
        rows.push((
            r.get(0),
            Row::Gap(Box::new(Gap {
                conn_id: u64_of(r.get(2)),
                sid: u64_of(r.get(3)),
                expected_seq: u64_of(r.get(4)),
                got_seq: r.get::<_, Option<i64>>(5).map(u64_of),
                ts_recv_last_good_ns: r.get(6),
                markets: markets.iter().map(|m| names.get(m)).collect(),
                ts_recv_ns: r.get(1),
            })),
        ));
    }
    rows.sort_by_key(|(gseq, _)| *gseq);
    Ok(rows.into_iter().map(|(_, row)| row).collect())
}
