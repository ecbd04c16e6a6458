//! `kdp book` against the simulator's true book (issue 6 item 4, acceptance: ≥ 100 sampled
//! (market, time) points).
//!
//! Production is filled through the merge core and the real sink with rows derived from the
//! simulator's pure engine (`Exchange`, seeded): three modelled gatherers store every delta
//! and trade the way a gatherer does (exchange time, receive time, one connection), each an
//! initial WebSocket snapshot of every market, a snapshot of every market created during the
//! run, REST snapshots now and then, and — after a window of frames it lost (never all three at
//! once) — resync snapshots of the markets it missed deltas of. Snapshots are taken between two
//! exchange actions with different exchange times (a snapshot inside one exchange time cannot
//! be placed by exchange time: dedup::query's documented limit). Receive times rise along the
//! stream as on one host (each event received by every gatherer at the same time).
//!
//! Then at 160 sampled (market, time) points — exact action times (inclusive), 1 ns before
//! one, and in between — `dedup::query::read_book` equals the engine's book replayed to that
//! time (a second `Exchange` with the same seed, stepped action by action); at two points the
//! real `kdp book` binary prints exactly what `write_book` prints for that book (table and JSON).

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod gatherer_support;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use gatherer_support::process::kdp;
use kdp_dedup::limits::MergeLimits;
use kdp_dedup::merge::MergeCore;
use kdp_dedup::query::{self, Format};
use kdp_dedup::row::{Delta, Row, Snapshot, SnapshotAnchor, Trade};
use kdp_dedup::sink::{Sink, SinkOptions};
use kdp_engine::event::{BookSide, Level, Side};
use kdp_engine::pg::testing::TestDatabase;
use kdp_sim::market::model::{self, ExchEventKind, LifecycleKind, MarketId};
use kdp_sim::market::truth::uuid_text;
use kdp_sim::market::{Exchange, MarketConfig};

const SEED: u64 = 0x626f_6f6b_0000_0006;
/// Exchange actions run.
const ACTIONS: usize = 12_000;
/// Sampled points.
const SAMPLES: usize = 160;
const GATHERERS: usize = 3;

/// A small deterministic generator for the test's own choices (not the engine's).
struct Pick(u64);
impl Pick {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn config() -> MarketConfig {
    MarketConfig {
        seed: SEED,
        markets: 40,
        rate_msgs_per_s: 400,
        lifetime_s_min: 20,
        lifetime_s_max: 60,
        open_delay_s_max: 5,
        determine_delay_s_max: 5,
        settle_delay_s_max: 5,
        identical_delta_ppm: 50_000,
        ..MarketConfig::default()
    }
}

fn side(s: model::Side) -> Side {
    match s {
        model::Side::Yes => Side::Yes,
        model::Side::No => Side::No,
    }
}

fn levels(ls: &[model::Level]) -> Box<[Level]> {
    ls.iter().map(|l| Level { price_micros: l.price_micros, size_centi: l.size_centi }).collect()
}

/// One modelled gatherer's stored rows.
#[derive(Default)]
struct Store {
    rows: Vec<(i64, Row)>,
    seq: u64,
    /// Frames lost until this action index (exclusive).
    dropping_until: usize,
    /// Markets whose deltas it lost in the current window.
    missed: BTreeSet<MarketId>,
}

impl Store {
    fn push(&mut self, row: Row) {
        let gseq = i64::try_from(self.rows.len()).unwrap() + 1;
        self.rows.push((gseq, row));
    }
}

/// A snapshot a gatherer asked for: taken at the end of an action, stored if the next action
/// has a later exchange time, else taken again after that one.
#[derive(Clone, Copy)]
struct Request {
    gatherer: usize,
    market: MarketId,
    rest: bool,
}

#[test]
fn book_equals_the_engines_true_book_at_sampled_points() {
    println!("book seed {SEED:#x}");
    let mut pick = Pick(SEED);
    let mut ex = Exchange::new(config());
    let tickers = |ex: &Exchange| -> Vec<Arc<str>> {
        ex.markets().iter().map(|m| Arc::from(m.ticker.as_str())).collect()
    };
    let mut names: Vec<Arc<str>> = tickers(&ex);
    let mut stores: Vec<Store> = (0..GATHERERS).map(|_| Store::default()).collect();
    let start = ex.now_ns();
    let mut last_recv = start;
    // Initial snapshots: every gatherer subscribes to every market before the first action.
    for store in &mut stores {
        for (id, name) in names.iter().enumerate() {
            let book = ex.book(MarketId::try_from(id).unwrap(), None);
            last_recv += 1;
            store.seq += 1;
            store.push(Row::Snapshot(Box::new(Snapshot {
                market: Arc::clone(name),
                anchor: SnapshotAnchor::Ws { conn_id: 1, sid: 1, seq: store.seq },
                yes: levels(&book.yes),
                no: levels(&book.no),
                ts_recv_ns: last_recv,
            })));
        }
    }
    let mut requests: Vec<Request> = Vec::new();
    let mut pending: Vec<(Request, model::BookLevels)> = Vec::new();
    let mut action_ts: Vec<(i64, usize)> = Vec::with_capacity(ACTIONS);
    let mut delta_points: Vec<(MarketId, i64)> = Vec::new();
    let (mut placed, mut unplaceable) = (0u64, 0u64);
    let mut batch = Vec::new();
    for action in 0..ACTIONS {
        batch.clear();
        ex.next_batch(&mut batch);
        let ts = batch[0].ts_ns;
        assert!(batch.iter().all(|e| e.ts_ns == ts), "one action, one exchange time");
        // Snapshots taken after the previous action: stored now if this action's exchange time
        // differs (they can be placed), else not taken.
        let previous_ts = action_ts.last().map(|&(t, _)| t);
        for (p, book) in pending.drain(..) {
            if previous_ts.is_some_and(|t| t < ts) {
                last_recv += 1;
                let store = &mut stores[p.gatherer];
                store.seq += 1;
                let anchor = if p.rest {
                    SnapshotAnchor::Rest
                } else {
                    SnapshotAnchor::Ws { conn_id: 1, sid: 1, seq: store.seq }
                };
                store.push(Row::Snapshot(Box::new(Snapshot {
                    market: Arc::clone(&names[p.market as usize]),
                    anchor,
                    yes: levels(&book.yes),
                    no: levels(&book.no),
                    ts_recv_ns: last_recv,
                })));
                placed += 1;
            } else {
                unplaceable += 1;
                requests.push(p);
            }
        }
        action_ts.push((ts, batch.len()));
        // A gatherer starts losing frames now and then, never while another one is.
        if stores.iter().all(|s| s.dropping_until <= action) && pick.below(200) == 0 {
            let g = pick.below(GATHERERS as u64) as usize;
            stores[g].dropping_until = action + 1 + pick.below(60) as usize;
        }
        if ex.markets().len() > names.len() {
            names = tickers(&ex);
        }
        for ev in &batch {
            let lat = 200_000 + i64::try_from(pick.below(800_000)).unwrap();
            let recv = (ts + lat).max(last_recv + 1);
            last_recv = recv;
            let row = match ev.kind {
                ExchEventKind::Delta { market, side: s, price_micros, delta_centi } => {
                    delta_points.push((market, ts));
                    Some((
                        market,
                        Row::Delta(Delta {
                            market: Arc::clone(&names[market as usize]),
                            side: side(s),
                            price_micros,
                            delta_centi,
                            ts_exch_ns: ts,
                            ts_recv_ns: recv,
                            client_order_id: None,
                        }),
                    ))
                }
                ExchEventKind::Trade {
                    market,
                    trade_id,
                    yes_price_micros,
                    count_centi,
                    taker_side,
                    taker_book_side,
                } => Some((
                    market,
                    Row::Trade(Box::new(Trade {
                        trade_id: uuid_text(&trade_id).into(),
                        market: Arc::clone(&names[market as usize]),
                        yes_price_micros,
                        no_price_micros: model::DOLLAR_MICROS - yes_price_micros,
                        count_centi,
                        taker_side: Some(side(taker_side)),
                        taker_book_side: Some(match taker_book_side {
                            model::BookSide::Ask => BookSide::Ask,
                            model::BookSide::Bid => BookSide::Bid,
                        }),
                        is_block_trade: None,
                        ts_exch_ns: ts,
                        ts_recv_ns: recv,
                    })),
                )),
                ExchEventKind::MarketLifecycle { market, kind: LifecycleKind::Created } => {
                    // Every gatherer subscribes to the new market: its first snapshot.
                    for gatherer in 0..GATHERERS {
                        requests.push(Request { gatherer, market, rest: false });
                    }
                    None
                }
                _ => None,
            };
            let Some((market, row)) = row else { continue };
            for store in &mut stores {
                if store.dropping_until > action {
                    if matches!(row, Row::Delta(_)) {
                        store.missed.insert(market);
                    }
                    continue;
                }
                store.seq += 1;
                store.push(row.clone());
            }
        }
        // The end of a loss window: resync snapshots of the markets it missed.
        for (g, store) in stores.iter_mut().enumerate() {
            if store.dropping_until == action + 1 {
                for market in std::mem::take(&mut store.missed) {
                    requests.push(Request { gatherer: g, market, rest: false });
                }
            }
        }
        // REST snapshots of the market just changed, now and then.
        if let Some(market) = batch.iter().find_map(|e| e.kind.market())
            && pick.below(40) == 0
        {
            let gatherer = pick.below(GATHERERS as u64) as usize;
            requests.push(Request { gatherer, market, rest: true });
        }
        // The requested snapshots: the books after this action.
        pending.extend(requests.drain(..).map(|r| (r, ex.book(r.market, None))));
    }
    let end = ex.now_ns();
    println!(
        "{} actions, {} deltas, {} snapshots placed ({} not taken: same exchange time), {} \
         markets, {} virtual s",
        ACTIONS,
        delta_points.len(),
        placed,
        unplaceable,
        names.len(),
        (end - start) / 1_000_000_000
    );
    assert!(placed > 100, "{placed}");

    // Production through the merge core and the real sink, the gatherers interleaved in chunks.
    let prod = TestDatabase::new().unwrap();
    let mut sink = Sink::new(prod.url().parse().unwrap(), SinkOptions { migrate: true });
    let mut core = MergeCore::new(MergeLimits::default(), &[0; GATHERERS]).unwrap();
    for g in 0..GATHERERS {
        core.set_live(u8::try_from(g).unwrap(), true).unwrap();
    }
    let mut next = [0usize; GATHERERS];
    let mut round = 0usize;
    while next.iter().zip(&stores).any(|(n, s)| *n < s.rows.len()) {
        for k in 0..GATHERERS {
            let g = (round + k) % GATHERERS;
            let rows = &stores[g].rows;
            let to = (next[g] + 97 + round % 50).min(rows.len());
            for (gseq, row) in &rows[next[g]..to] {
                core.push(u8::try_from(g).unwrap(), *gseq, row.clone()).unwrap();
                if core.batch_full() {
                    sink.write(&core.take_batch().unwrap()).unwrap();
                }
            }
            next[g] = to;
        }
        round += 1;
    }
    if let Some(batch) = core.take_batch() {
        sink.write(&batch).unwrap();
    }
    let mut client = postgres::Client::connect(prod.url(), postgres::NoTls).unwrap();
    let stored: i64 = client.query_one("SELECT count(*) FROM delta", &[]).unwrap().get(0);
    assert_eq!(usize::try_from(stored).unwrap(), delta_points.len(), "every delta once");

    // Sampled points: a market that just changed, at its action's time, 1 ns before it, or a
    // little later.
    let mut samples: Vec<(i64, MarketId)> = (0..SAMPLES)
        .map(|i| {
            let (market, ts) = delta_points[pick.below(delta_points.len() as u64) as usize];
            let t = match i % 3 {
                0 => ts,
                1 => ts - 1,
                _ => ts + i64::try_from(pick.below(3_000_000_000)).unwrap(),
            };
            (t, market)
        })
        .collect();
    samples.sort_unstable();

    // The truth: the same engine replayed action by action; a point's book is read before the
    // first action after it.
    let mut replica = Exchange::new(config());
    let mut truth: HashMap<(i64, MarketId), (Vec<Level>, Vec<Level>)> = HashMap::new();
    let best_first = |ls: &[model::Level]| -> Vec<Level> {
        ls.iter()
            .rev()
            .map(|l| Level { price_micros: l.price_micros, size_centi: l.size_centi })
            .collect()
    };
    let mut s = 0;
    for &(ts, n) in &action_ts {
        while s < samples.len() && samples[s].0 < ts {
            let (t, m) = samples[s];
            let b = replica.book(m, None);
            truth.insert((t, m), (best_first(&b.yes), best_first(&b.no)));
            s += 1;
        }
        batch.clear();
        replica.next_batch(&mut batch);
        assert_eq!((batch[0].ts_ns, batch.len()), (ts, n), "the replica follows the same stream");
    }
    for &(t, m) in &samples[s..] {
        let b = replica.book(m, None);
        truth.insert((t, m), (best_first(&b.yes), best_first(&b.no)));
    }

    let (mut levels_checked, mut nonempty) = (0usize, 0usize);
    for &(t, m) in &samples {
        let ticker = &names[m as usize];
        let book = query::read_book(&mut client, ticker, t).unwrap();
        let (yes, no) = &truth[&(t, m)];
        assert_eq!(
            (&book.yes, &book.no),
            (yes, no),
            "{ticker} at {} (snapshot of gatherer {} gseq {}, anchor {}, {} deltas)",
            query::rfc3339(t),
            book.snapshot.gatherer,
            book.snapshot.gseq,
            book.anchor_ns,
            book.deltas_applied
        );
        assert!(book.negative.is_empty());
        levels_checked += yes.len() + no.len();
        nonempty += usize::from(!yes.is_empty() || !no.is_empty());
    }
    println!("{} points checked, {nonempty} non-empty books, {levels_checked} levels", SAMPLES);
    assert!(nonempty >= SAMPLES * 9 / 10, "{nonempty}");

    // The real binary at two points: exactly what write_book prints for the same book.
    for (i, format, flag) in [(7, Format::Table, "table"), (SAMPLES - 3, Format::Json, "json")] {
        let (t, m) = samples[i];
        let ticker = names[m as usize].to_string();
        let book = query::read_book(&mut client, &ticker, t).unwrap();
        let mut expected = Vec::new();
        query::write_book(&mut expected, &book, format).unwrap();
        let at = query::rfc3339(t);
        let (code, out, err) = kdp(&[
            "book",
            "--market",
            &ticker,
            "--at",
            &at,
            "--format",
            flag,
            "--production",
            prod.url(),
        ]);
        println!("{out}{err}");
        assert_eq!((code, err.as_str()), (0, ""));
        assert_eq!(out, String::from_utf8(expected).unwrap());
    }
    // Before any snapshot of the market: exit 1 with the reason.
    let first = names[0].to_string();
    let (code, _, err) = kdp(&[
        "book",
        "--market",
        &first,
        "--at",
        &query::rfc3339(start - 2 * query::ANCHOR_WINDOW_NS),
        "--production",
        prod.url(),
    ]);
    assert_eq!(code, 1);
    assert!(err.starts_with(&format!("kdp book: no snapshot of {first} is placed at or before ")));
}
