//! What users ask of production (issue 6 item 4): `kdp book` (the order book of a market at a
//! point in time) and `kdp trades` (a market's trades over a range), with their SQL reads, the
//! pure reconstruction and the table / CSV / JSON renderings. Units as everywhere in kdp:
//! micro-dollars, hundredths of a contract, ns since the epoch; printed exactly (no floating
//! point): prices in dollars with at least 4 and at most 6 fraction digits (`0.4200`,
//! `0.0015`, `0.420125`), sizes in contracts with 2 (`136.00`).
//!
//! # Reconstructing a book
//!
//! A book at `T` = the nearest snapshot placed at or before `T` + every merged delta after that
//! place up to `T` (inclusive, by exchange time). Production keeps every gatherer's snapshots
//! with their anchor in *that gatherer's* stream (a WebSocket snapshot applies just before the
//! deltas that followed it on its connection, a REST one before the market's deltas with a
//! greater gseq), while the merged deltas carry only their exchange time and the first
//! deliverer's receive time and gatherer. So a snapshot is placed in the merged stream by
//! exchange time: its **anchor** is the exchange time `X` such that the snapshot holds exactly
//! the market's deltas with `ts_exch_ns <= X` ([`anchor_ns`]):
//!
//! - the snapshot's own gatherer `g` received it at `R` (its `ts_recv_ns`); `g`'s deltas and
//!   snapshots of one market come in exchange order on one connection (REST: gseq order), so the
//!   deltas production got first from `g` with `ts_recv_ns <= R` precede it and those received
//!   after `R` follow it: `lo` = the latest exchange time of the first kind, `hi` = the earliest
//!   of the second;
//! - deltas first delivered by another gatherer carry that gatherer's receive time; between `lo`
//!   and `hi` they count as preceding the snapshot when received at or before `R` (gatherer
//!   clocks are assumed synchronised, NTP, to well within the time between two changes of one
//!   market);
//! - `X` = the latest exchange time of a preceding delta, searched within
//!   [`ANCHOR_WINDOW_NS`] before `R` (the bound assumed on exchange → receive latency plus clock
//!   skew); none there = the market was quiet: `X = R - ANCHOR_WINDOW_NS - 1`.
//!
//! Limits, by construction of what production stores: a snapshot taken between two deltas
//! with the *same* exchange time (µs on Kalshi; whole seconds in the legacy feed) cannot be
//! placed exactly, and clock skew between gatherers beyond the time between two changes of a
//! market can misplace a snapshot whose own gatherer delivered none of the nearby deltas first.
//! A negative level after replay (a delta removing more than rests) is reported, never hidden.
//! The delta table is keyed by exchange time first, so a replay reads the index range `(X, T]`
//! of every market and filters by market: cheap for the minutes after a snapshot, slow over
//! hours of a busy exchange.

use std::collections::BTreeMap;
use std::io::Write;

use kdp_engine::event::{Level, Side};
use postgres::Client;

/// Bound on exchange → receive latency plus clock skew used to place snapshots (see the module
/// note): 60 s.
pub const ANCHOR_WINDOW_NS: i64 = 60_000_000_000;
/// Snapshots read per round while looking for the nearest one.
const SNAPSHOT_PAGE: i64 = 32;

/// Output format of `kdp book` and `kdp trades`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns for a terminal.
    Table,
    /// Comma-separated values with a header row.
    Csv,
    /// One JSON object.
    Json,
}

/// Where a stored snapshot came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotSource {
    /// An `orderbook_snapshot` frame on a gatherer connection.
    Ws {
        /// Connection number in the gatherer.
        conn_id: i64,
        /// Subscription.
        sid: i64,
        /// The frame's seq.
        seq: i64,
    },
    /// A REST order book.
    Rest,
}

/// A production snapshot's identity and place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// The gatherer that stored it.
    pub gatherer: i16,
    /// Its gseq there.
    pub gseq: i64,
    /// When that gatherer received it, ns.
    pub ts_recv_ns: i64,
    /// WebSocket position or REST.
    pub source: SnapshotSource,
}

/// One merged delta as the reconstruction needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeltaRow {
    /// Exchange time, ns.
    pub ts_exch_ns: i64,
    /// Receive time at the first deliverer, ns.
    pub ts_recv_ns: i64,
    /// The first deliverer.
    pub gatherer: i16,
    /// Book side.
    pub side: Side,
    /// Level price, micro-dollars.
    pub price_micros: u32,
    /// Signed change, hundredths.
    pub delta_centi: i64,
}

/// The exchange time a snapshot is placed at (see the module note): the snapshot holds exactly
/// the deltas with `ts_exch_ns <= anchor`. `window` = the market's deltas with exchange times
/// in `[R - ANCHOR_WINDOW_NS, R + ANCHOR_WINDOW_NS]`, any order.
pub fn anchor_ns(snapshot: &SnapshotMeta, window: &[DeltaRow]) -> i64 {
    let r = snapshot.ts_recv_ns;
    let own = |d: &&DeltaRow| d.gatherer == snapshot.gatherer;
    let lo = window.iter().filter(own).filter(|d| d.ts_recv_ns <= r).map(|d| d.ts_exch_ns).max();
    let hi = window.iter().filter(own).filter(|d| d.ts_recv_ns > r).map(|d| d.ts_exch_ns).min();
    let others = window
        .iter()
        .filter(|d| d.ts_recv_ns <= r && hi.is_none_or(|h| d.ts_exch_ns < h))
        .map(|d| d.ts_exch_ns)
        .max();
    lo.max(others).unwrap_or(r.saturating_sub(ANCHOR_WINDOW_NS).saturating_sub(1))
}

/// A level left negative by the replay (a delta removed more than rested): production is
/// missing an event or the snapshot was misplaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NegativeLevel {
    /// Side.
    pub side: Side,
    /// Price, micro-dollars.
    pub price_micros: u32,
    /// The negative size, hundredths.
    pub size_centi: i64,
}

/// A reconstructed book.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Book {
    /// Market ticker.
    pub market: String,
    /// The time asked, ns (deltas at exactly this exchange time are included).
    pub at_ns: i64,
    /// The snapshot it starts from.
    pub snapshot: SnapshotMeta,
    /// Where that snapshot was placed (exchange time, ns).
    pub anchor_ns: i64,
    /// Deltas applied after the snapshot.
    pub deltas_applied: u64,
    /// YES bids, best (highest price) first.
    pub yes: Vec<Level>,
    /// NO bids, best first.
    pub no: Vec<Level>,
    /// Levels the replay left negative (not in `yes`/`no`).
    pub negative: Vec<NegativeLevel>,
}

/// Applies `deltas` to the snapshot's ladders: the book, best first on each side.
pub fn replay(
    yes: &[Level],
    no: &[Level],
    deltas: &[DeltaRow],
) -> (Vec<Level>, Vec<Level>, Vec<NegativeLevel>) {
    let mut levels: BTreeMap<(bool, u32), i64> = BTreeMap::new();
    for (side_yes, ladder) in [(true, yes), (false, no)] {
        for l in ladder {
            *levels.entry((side_yes, l.price_micros)).or_default() += l.size_centi;
        }
    }
    for d in deltas {
        *levels.entry((d.side == Side::Yes, d.price_micros)).or_default() += d.delta_centi;
    }
    let (mut yes, mut no, mut negative) = (Vec::new(), Vec::new(), Vec::new());
    for (&(side_yes, price_micros), &size_centi) in levels.iter().rev() {
        let side = if side_yes { Side::Yes } else { Side::No };
        if size_centi > 0 {
            let level = Level { price_micros, size_centi };
            if side_yes { yes.push(level) } else { no.push(level) }
        } else if size_centi < 0 {
            negative.push(NegativeLevel { side, price_micros, size_centi });
        }
    }
    (yes, no, negative)
}

/// Why `kdp book` or `kdp trades` could not answer.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// No snapshot of the market can be placed at or before the time.
    #[error(
        "no snapshot of {market} is placed at or before {at}: production holds no book state \
         of this market that early (check the ticker and the time; a market's history starts \
         with a gatherer's first snapshot of it)"
    )]
    NoSnapshot {
        /// Market.
        market: String,
        /// The time, RFC 3339.
        at: String,
    },
    /// A stored row does not have the schema's shape.
    #[error("production row is malformed: {0}")]
    Malformed(String),
    /// The database failed.
    #[error("cannot read the production database: {0}")]
    Postgres(#[from] postgres::Error),
}

fn ladder(prices: &[i64], sizes: &[i64]) -> Result<Vec<Level>, QueryError> {
    if prices.len() != sizes.len() {
        return Err(QueryError::Malformed(
            "snapshot price and size arrays differ in length".into(),
        ));
    }
    prices
        .iter()
        .zip(sizes)
        .map(|(&p, &size_centi)| {
            let price_micros = u32::try_from(p)
                .map_err(|_| QueryError::Malformed(format!("snapshot price {p}")))?;
            Ok(Level { price_micros, size_centi })
        })
        .collect()
}

fn deltas(
    client: &mut Client,
    market: &str,
    from_excl: i64,
    to_incl: i64,
) -> Result<Vec<DeltaRow>, QueryError> {
    let rows = client.query(
        "SELECT ts_exch_ns, ts_recv_ns, gatherer, side_yes, price_micros, delta_centi FROM delta \
         WHERE ts_exch_ns > $2 AND ts_exch_ns <= $3 AND market = $1",
        &[&market, &from_excl, &to_incl],
    )?;
    rows.iter()
        .map(|r| {
            let p: i64 = r.get(4);
            Ok(DeltaRow {
                ts_exch_ns: r.get(0),
                ts_recv_ns: r.get(1),
                gatherer: r.get(2),
                side: if r.get(3) { Side::Yes } else { Side::No },
                price_micros: u32::try_from(p)
                    .map_err(|_| QueryError::Malformed(format!("delta price {p}")))?,
                delta_centi: r.get(5),
            })
        })
        .collect()
}

struct Candidate {
    meta: SnapshotMeta,
    yes: Vec<Level>,
    no: Vec<Level>,
}

fn snapshots(
    client: &mut Client,
    market: &str,
    recv_max: i64,
    offset: i64,
) -> Result<Vec<Candidate>, QueryError> {
    let rows = client.query(
        "SELECT gatherer, gseq, ts_recv_ns, source, conn_id, sid, seq, yes_price_micros, \
         yes_size_centi, no_price_micros, no_size_centi FROM snapshot \
         WHERE market = $1 AND ts_recv_ns <= $2 \
         ORDER BY ts_recv_ns DESC, gatherer, gseq DESC LIMIT $3 OFFSET $4",
        &[&market, &recv_max, &SNAPSHOT_PAGE, &offset],
    )?;
    rows.iter()
        .map(|r| {
            let source: &str = r.get(3);
            let source = match (source, r.get(4), r.get(5), r.get(6)) {
                ("rest", _, _, _) => SnapshotSource::Rest,
                ("ws", Some(conn_id), Some(sid), Some(seq)) => {
                    SnapshotSource::Ws { conn_id, sid, seq }
                }
                (other, ..) => {
                    return Err(QueryError::Malformed(format!("snapshot source {other:?}")));
                }
            };
            Ok(Candidate {
                meta: SnapshotMeta {
                    gatherer: r.get(0),
                    gseq: r.get(1),
                    ts_recv_ns: r.get(2),
                    source,
                },
                yes: ladder(&r.get::<_, Vec<i64>>(7), &r.get::<_, Vec<i64>>(8))?,
                no: ladder(&r.get::<_, Vec<i64>>(9), &r.get::<_, Vec<i64>>(10))?,
            })
        })
        .collect()
}

/// Reconstructs `market`'s book at `at_ns` from production (see the module note).
pub fn read_book(client: &mut Client, market: &str, at_ns: i64) -> Result<Book, QueryError> {
    let recv_max = at_ns.saturating_add(ANCHOR_WINDOW_NS);
    let mut best: Option<(i64, Candidate)> = None;
    let mut offset = 0;
    'pages: loop {
        let page = snapshots(client, market, recv_max, offset)?;
        let last_page = page.len() < usize::try_from(SNAPSHOT_PAGE).unwrap_or(usize::MAX);
        for c in page {
            // A snapshot's anchor is at or before its receive time: an older one cannot be
            // placed later than the best so far.
            if best.as_ref().is_some_and(|(x, _)| c.meta.ts_recv_ns < *x) {
                break 'pages;
            }
            let r = c.meta.ts_recv_ns;
            let window = deltas(
                client,
                market,
                r.saturating_sub(ANCHOR_WINDOW_NS).saturating_sub(1),
                r.saturating_add(ANCHOR_WINDOW_NS),
            )?;
            let x = anchor_ns(&c.meta, &window);
            if x <= at_ns && best.as_ref().is_none_or(|(b, _)| x > *b) {
                best = Some((x, c));
            }
        }
        if last_page {
            break;
        }
        offset += SNAPSHOT_PAGE;
    }
    let Some((anchor, snap)) = best else {
        return Err(QueryError::NoSnapshot { market: market.to_owned(), at: rfc3339(at_ns) });
    };
    let after = deltas(client, market, anchor, at_ns)?;
    let (yes, no, negative) = replay(&snap.yes, &snap.no, &after);
    Ok(Book {
        market: market.to_owned(),
        at_ns,
        snapshot: snap.meta,
        anchor_ns: anchor,
        deltas_applied: after.len() as u64,
        yes,
        no,
        negative,
    })
}

/// One trade as `kdp trades` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TradeRow {
    /// Exchange time, ns.
    pub ts_exch_ns: i64,
    /// Trade id.
    pub trade_id: String,
    /// YES price, micro-dollars.
    pub yes_price_micros: i64,
    /// NO price, micro-dollars.
    pub no_price_micros: i64,
    /// Contracts, hundredths.
    pub count_centi: i64,
    /// Outcome the taker bought (true = YES), when sent.
    pub taker_side_yes: Option<bool>,
    /// Book side the taker hit (true = ask), when sent.
    pub taker_book_side_ask: Option<bool>,
    /// Block trade flag, when sent.
    pub is_block_trade: Option<bool>,
}

/// `market`'s trades with `from_ns <= ts_exch_ns < to_ns`, by exchange time then trade id.
pub fn read_trades(
    client: &mut Client,
    market: &str,
    from_ns: i64,
    to_ns: i64,
) -> Result<Vec<TradeRow>, QueryError> {
    let rows = client.query(
        "SELECT ts_exch_ns, trade_id, yes_price_micros, no_price_micros, count_centi, \
         taker_side_yes, taker_book_side_ask, is_block_trade FROM trade \
         WHERE ts_exch_ns >= $2 AND ts_exch_ns < $3 AND market = $1 \
         ORDER BY ts_exch_ns, trade_id",
        &[&market, &from_ns, &to_ns],
    )?;
    Ok(rows
        .iter()
        .map(|r| TradeRow {
            ts_exch_ns: r.get(0),
            trade_id: r.get(1),
            yes_price_micros: r.get(2),
            no_price_micros: r.get(3),
            count_centi: r.get(4),
            taker_side_yes: r.get(5),
            taker_book_side_ask: r.get(6),
            is_block_trade: r.get(7),
        })
        .collect())
}

// ---------------------------------------------------------------------------------------------
// Exact formatting.
// ---------------------------------------------------------------------------------------------

/// Micro-dollars as dollars, exact: 4 fraction digits at least (Kalshi's `_dollars` style),
/// 6 at most, trailing zeros beyond the fourth dropped (`420000` → `0.4200`, `1500` →
/// `0.0015`, `420125` → `0.420125`).
pub fn dollars(micros: i64) -> String {
    let mut s = String::with_capacity(12);
    kdp_ingest::wire::write_scaled(&mut s, micros, 6);
    for _ in 0..2 {
        if s.ends_with('0') {
            s.pop();
        }
    }
    s
}

/// Hundredths of a contract as contracts with 2 fraction digits (`13600` → `136.00`).
pub fn contracts(centi: i64) -> String {
    let mut s = String::with_capacity(12);
    kdp_ingest::wire::write_scaled(&mut s, centi, 2);
    s
}

/// RFC 3339 UTC with 9 fraction digits.
pub fn rfc3339(ts_ns: i64) -> String {
    let mut s = String::with_capacity(32);
    kdp_ingest::wire::write_rfc3339(&mut s, ts_ns, 9);
    s
}

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn side_name(side: Side) -> &'static str {
    match side {
        Side::Yes => "yes",
        Side::No => "no",
    }
}

fn source_text(s: &SnapshotMeta) -> String {
    match s.source {
        SnapshotSource::Ws { conn_id, sid, seq } => {
            format!("ws conn {conn_id} sid {sid} seq {seq}")
        }
        SnapshotSource::Rest => "rest".to_owned(),
    }
}

/// Writes `book` in `format`.
pub fn write_book(out: &mut impl Write, book: &Book, format: Format) -> std::io::Result<()> {
    let sides = [(Side::Yes, &book.yes), (Side::No, &book.no)];
    match format {
        Format::Table => {
            writeln!(out, "order book of {} at {}", book.market, rfc3339(book.at_ns))?;
            writeln!(
                out,
                "from the snapshot of gatherer {} gseq {} ({}) received {}, placed after \
                 exchange time {}; {} deltas applied after it",
                book.snapshot.gatherer,
                book.snapshot.gseq,
                source_text(&book.snapshot),
                rfc3339(book.snapshot.ts_recv_ns),
                rfc3339(book.anchor_ns),
                book.deltas_applied
            )?;
            writeln!(out, "{:<6}{:>10}{:>14}", "side", "price", "size")?;
            for (side, levels) in sides {
                if levels.is_empty() {
                    writeln!(out, "{:<6}{:>10}{:>14}", side_name(side), "-", "-")?;
                }
                for l in levels {
                    writeln!(
                        out,
                        "{:<6}{:>10}{:>14}",
                        side_name(side),
                        dollars(i64::from(l.price_micros)),
                        contracts(l.size_centi)
                    )?;
                }
            }
            for n in &book.negative {
                writeln!(
                    out,
                    "WARNING: {} {} left at {} contracts: production misses an event of this \
                     market or the snapshot is misplaced",
                    side_name(n.side),
                    dollars(i64::from(n.price_micros)),
                    contracts(n.size_centi)
                )?;
            }
        }
        Format::Csv => {
            writeln!(out, "side,price,size")?;
            for (side, levels) in sides {
                for l in levels {
                    writeln!(
                        out,
                        "{},{},{}",
                        side_name(side),
                        dollars(i64::from(l.price_micros)),
                        contracts(l.size_centi)
                    )?;
                }
            }
        }
        Format::Json => {
            let list = |levels: &[Level]| {
                levels
                    .iter()
                    .map(|l| {
                        format!(
                            "{{\"price\":\"{}\",\"size\":\"{}\"}}",
                            dollars(i64::from(l.price_micros)),
                            contracts(l.size_centi)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let negative = book
                .negative
                .iter()
                .map(|n| {
                    format!(
                        "{{\"side\":\"{}\",\"price\":\"{}\",\"size\":\"{}\"}}",
                        side_name(n.side),
                        dollars(i64::from(n.price_micros)),
                        contracts(n.size_centi)
                    )
                })
                .collect::<Vec<_>>()
                .join(",");
            let source = match book.snapshot.source {
                SnapshotSource::Ws { conn_id, sid, seq } => {
                    format!("{{\"kind\":\"ws\",\"conn_id\":{conn_id},\"sid\":{sid},\"seq\":{seq}}}")
                }
                SnapshotSource::Rest => "{\"kind\":\"rest\"}".to_owned(),
            };
            writeln!(
                out,
                "{{\"market\":{},\"at\":{},\"snapshot\":{{\"gatherer\":{},\"gseq\":{},\
                 \"source\":{source},\"received\":{},\"anchor\":{}}},\"deltas_applied\":{},\
                 \"yes\":[{}],\"no\":[{}],\"negative\":[{negative}]}}",
                json_str(&book.market),
                json_str(&rfc3339(book.at_ns)),
                book.snapshot.gatherer,
                book.snapshot.gseq,
                json_str(&rfc3339(book.snapshot.ts_recv_ns)),
                json_str(&rfc3339(book.anchor_ns)),
                book.deltas_applied,
                list(&book.yes),
                list(&book.no)
            )?;
        }
    }
    out.flush()
}

fn opt_flag(v: Option<bool>, yes: &'static str, no: &'static str) -> &'static str {
    match v {
        Some(true) => yes,
        Some(false) => no,
        None => "",
    }
}

/// Writes `market`'s `trades` over `[from_ns, to_ns)` in `format`.
pub fn write_trades(
    out: &mut impl Write,
    market: &str,
    from_ns: i64,
    to_ns: i64,
    trades: &[TradeRow],
    format: Format,
) -> std::io::Result<()> {
    match format {
        Format::Table => {
            writeln!(
                out,
                "trades of {market} from {} to {} (end excluded): {}",
                rfc3339(from_ns),
                rfc3339(to_ns),
                trades.len()
            )?;
            writeln!(
                out,
                "{:<32}{:<38}{:>10}{:>10}{:>14}{:>7}{:>6}{:>7}",
                "time", "trade_id", "yes", "no", "count", "taker", "hit", "block"
            )?;
            for t in trades {
                let dash = |s: &'static str| if s.is_empty() { "-" } else { s };
                writeln!(
                    out,
                    "{:<32}{:<38}{:>10}{:>10}{:>14}{:>7}{:>6}{:>7}",
                    rfc3339(t.ts_exch_ns),
                    t.trade_id,
                    dollars(t.yes_price_micros),
                    dollars(t.no_price_micros),
                    contracts(t.count_centi),
                    dash(opt_flag(t.taker_side_yes, "yes", "no")),
                    dash(opt_flag(t.taker_book_side_ask, "ask", "bid")),
                    dash(opt_flag(t.is_block_trade, "yes", "no"))
                )?;
            }
        }
        Format::Csv => {
            writeln!(
                out,
                "time,trade_id,yes_price,no_price,count,taker_side,taker_book_side,block_trade"
            )?;
            for t in trades {
                writeln!(
                    out,
                    "{},{},{},{},{},{},{},{}",
                    rfc3339(t.ts_exch_ns),
                    t.trade_id,
                    dollars(t.yes_price_micros),
                    dollars(t.no_price_micros),
                    contracts(t.count_centi),
                    opt_flag(t.taker_side_yes, "yes", "no"),
                    opt_flag(t.taker_book_side_ask, "ask", "bid"),
                    opt_flag(t.is_block_trade, "true", "false")
                )?;
            }
        }
        Format::Json => {
            let opt = |v: Option<bool>, yes: &str, no: &str| match v {
                Some(true) => json_str(yes),
                Some(false) => json_str(no),
                None => "null".to_owned(),
            };
            let rows: Vec<String> = trades
                .iter()
                .map(|t| {
                    format!(
                        "{{\"time\":{},\"trade_id\":{},\"yes_price\":\"{}\",\"no_price\":\"{}\",\
                         \"count\":\"{}\",\"taker_side\":{},\"taker_book_side\":{},\
                         \"block_trade\":{}}}",
                        json_str(&rfc3339(t.ts_exch_ns)),
                        json_str(&t.trade_id),
                        dollars(t.yes_price_micros),
                        dollars(t.no_price_micros),
                        contracts(t.count_centi),
                        opt(t.taker_side_yes, "yes", "no"),
                        opt(t.taker_book_side_ask, "ask", "bid"),
                        t.is_block_trade.map_or_else(|| "null".to_owned(), |b| b.to_string())
                    )
                })
                .collect();
            writeln!(
                out,
                "{{\"market\":{},\"from\":{},\"to\":{},\"trades\":[{}]}}",
                json_str(market),
                json_str(&rfc3339(from_ns)),
                json_str(&rfc3339(to_ns)),
                rows.join(",")
            )?;
        }
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_decimals() {
        assert_eq!(dollars(420_000), "0.4200");
        assert_eq!(dollars(1_500), "0.0015");
        assert_eq!(dollars(420_125), "0.420125");
        assert_eq!(dollars(420_120), "0.42012");
        assert_eq!(dollars(1_000_000), "1.0000");
        assert_eq!(contracts(13_600), "136.00");
        assert_eq!(contracts(1), "0.01");
        assert_eq!(contracts(-250), "-2.50");
    }

    fn d(ts_exch_ns: i64, ts_recv_ns: i64, gatherer: i16) -> DeltaRow {
        DeltaRow {
            ts_exch_ns,
            ts_recv_ns,
            gatherer,
            side: Side::Yes,
            price_micros: 500_000,
            delta_centi: 100,
        }
    }

    #[test]
    fn anchors_by_the_own_gatherer_then_receive_time() {
        let snap =
            SnapshotMeta { gatherer: 1, gseq: 9, ts_recv_ns: 1_000, source: SnapshotSource::Rest };
        // Own deltas straddle it: 500 before, 900 after. Another gatherer's delta at 700 was
        // received (by it) at 990, before R: it precedes; one at 800 received at 1_010 follows.
        assert_eq!(anchor_ns(&snap, &[d(500, 950, 1), d(900, 1_005, 1), d(700, 990, 0)]), 700);
        assert_eq!(anchor_ns(&snap, &[d(500, 950, 1), d(900, 1_005, 1), d(800, 1_010, 0)]), 500);
        // Another gatherer's clock runs ahead: its delta at 950 (received "at" 999) is after
        // the own gatherer's first delta after the snapshot (900), so it cannot precede.
        assert_eq!(anchor_ns(&snap, &[d(500, 950, 1), d(900, 1_005, 1), d(950, 999, 0)]), 500);
        // No delta near: a quiet market, placed before the window.
        assert_eq!(anchor_ns(&snap, &[]), 1_000 - ANCHOR_WINDOW_NS - 1);
    }

    #[test]
    fn replay_sums_levels_best_first_and_reports_negatives() {
        let yes = [Level { price_micros: 400_000, size_centi: 500 }];
        let no = [Level { price_micros: 300_000, size_centi: 200 }];
        let mut ds = vec![d(1, 1, 0), d(2, 2, 0)];
        ds.push(DeltaRow {
            side: Side::No,
            price_micros: 300_000,
            delta_centi: -300,
            ..d(3, 3, 0)
        });
        ds.push(DeltaRow { price_micros: 400_000, delta_centi: -500, ..d(4, 4, 0) });
        let (y, n, neg) = replay(&yes, &no, &ds);
        assert_eq!(y, [Level { price_micros: 500_000, size_centi: 200 }]);
        assert_eq!(n, []);
        assert_eq!(
            neg,
            [NegativeLevel { side: Side::No, price_micros: 300_000, size_centi: -100 }]
        );
    }
}
