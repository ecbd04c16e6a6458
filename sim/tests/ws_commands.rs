//! Every WebSocket command and reply, driven with kdp's own command encoder and frame parser over
//! real TLS (raw JSON only where kdp's encoder cannot express the malformed command), and the
//! data path: per-sid `seq`, snapshots before deltas, snapshot + deltas = the engine's book at
//! the same exchange position, `get_snapshot`, and frame counts equal to what the hub published.
//!
//! The simulator runs on a manual clock: `advance(n)` publishes events, and a
//! `list_subscriptions` round trip ([`Client::barrier`]) returns every frame of the events
//! published before it, so nothing here waits on time.

#![allow(clippy::unwrap_used)]

mod ws_support;

use std::collections::HashMap;

use kdp_ingest::wire::{Channel, Command, MarketFilter, UpdateAction};
use kdp_sim::transport::hub::{Batch, EventChannel};
use kdp_sim::transport::session::SessionLimits;
use tokio::sync::broadcast;
use ws_support::{Book, Client, Frame, Kind, busy_markets, client, start};

fn sub<'a>(id: u64, channels: &'a [Channel], markets: MarketFilter<'a>) -> Command<'a> {
    Command::Subscribe {
        id,
        channels,
        markets,
        send_initial_snapshot: false,
        skip_ticker_ack: false,
    }
}

fn update<'a>(id: u64, sid: u64, tickers: &'a [&'a str], action: UpdateAction) -> Command<'a> {
    Command::UpdateSubscription { id, sid, market_tickers: tickers, action }
}

async fn error_code(c: &mut Client, raw: &str) -> (Option<u64>, u32) {
    c.send_text(raw.to_owned()).await;
    let f = c.frame().await;
    match f.kind {
        Kind::Error { code, .. } => (f.id, code),
        other => panic!("expected an error for {raw}, got {other:?}: {}", f.text),
    }
}

fn snapshot_market(f: &Frame) -> &str {
    match &f.kind {
        Kind::Snapshot { market, .. } => market,
        other => panic!("expected a snapshot, got {other:?}: {}", f.text),
    }
}

#[tokio::test]
async fn every_command_gets_its_documented_reply() {
    let sim = start(21, |_| {}).await;
    let ms = busy_markets(&sim.handle, 4).await;
    let m: Vec<&str> = ms.iter().map(String::as_str).collect();
    let mut c = client(&sim).await;

    // subscribe: one `subscribed` per channel with the command id; a snapshot per market.
    c.send(&sub(1, &[Channel::OrderbookDelta, Channel::Trade], MarketFilter::Many(&m[..2]))).await;
    let mut f = Vec::new();
    for _ in 0..3 {
        f.push(c.frame().await);
    }
    assert_eq!(f[0].kind, Kind::Subscribed { channel: "orderbook_delta".into(), sid: 1 });
    assert_eq!((f[0].id, f[1].seq, f[2].seq), (Some(1), Some(1), Some(2)));
    assert_eq!((snapshot_market(&f[1]), snapshot_market(&f[2])), (m[0], m[1]));
    let f = c.frame().await;
    assert_eq!((f.id, f.kind), (Some(1), Kind::Subscribed { channel: "trade".into(), sid: 2 }));

    // list_subscriptions.
    c.send(&Command::ListSubscriptions { id: 2 }).await;
    let f = c.frame().await;
    let expected = vec![("orderbook_delta".to_owned(), 1), ("trade".to_owned(), 2)];
    assert_eq!((f.id, f.kind), (Some(2), Kind::Ok { tickers: None, subs: Some(expected) }));

    // A repeated subscribe merges into the active sid; the added market's snapshot follows.
    c.send(&sub(3, &[Channel::OrderbookDelta], MarketFilter::One(m[2]))).await;
    let f = c.until_reply(3).await;
    assert_eq!(f[0].kind, Kind::Subscribed { channel: "orderbook_delta".into(), sid: 1 });
    let f = c.frame().await;
    assert_eq!((snapshot_market(&f), f.sid, f.seq), (m[2], Some(1), Some(3)));

    // add_markets: ok with the full list, then the new market's snapshot.
    c.send(&update(4, 1, &[m[3]], UpdateAction::AddMarkets)).await;
    let f = c.frame().await;
    let all: Vec<String> = m.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(
        (f.id, f.sid, f.kind),
        (Some(4), Some(1), Kind::Ok { tickers: Some(all), subs: None })
    );
    let f = c.frame().await;
    assert_eq!((snapshot_market(&f), f.seq), (m[3], Some(4)));

    // delete_markets through a one-element `sids`.
    c.send_text(format!(
        r#"{{"id":5,"cmd":"update_subscription","params":{{"sids":[1],"market_tickers":["{}"],"action":"delete_markets"}}}}"#,
        m[1]
    ))
    .await;
    let f = c.frame().await;
    let left = vec![m[0].to_owned(), m[2].to_owned(), m[3].to_owned()];
    assert_eq!((f.id, f.kind), (Some(5), Kind::Ok { tickers: Some(left), subs: None }));

    // get_snapshot: a snapshot carrying the command id, on the sid's next seq.
    c.send(&update(6, 1, &[m[0]], UpdateAction::GetSnapshot)).await;
    let f = c.frame().await;
    assert_eq!((snapshot_market(&f), f.id, f.sid, f.seq), (m[0], Some(6), Some(1), Some(5)));

    // unsubscribe: one reply per sid; unknown sids are error 7.
    c.send(&Command::Unsubscribe { id: 7, sids: &[2, 99] }).await;
    let f = c.frame().await;
    assert_eq!((f.id, f.sid, f.kind), (Some(7), Some(2), Kind::Unsubscribed));
    let f = c.frame().await;
    assert!(matches!(f.kind, Kind::Error { code: 7, .. }), "{}", f.text);
    assert_eq!((f.id, f.sid), (Some(7), Some(99)));

    // ticker with send_initial_snapshot and skip_ticker_ack: one unsequenced ticker per
    // market at once; later `ok` replies carry no ticker list.
    c.send(&Command::Subscribe {
        id: 8,
        channels: &[Channel::Ticker],
        markets: MarketFilter::Many(&m[..2]),
        send_initial_snapshot: true,
        skip_ticker_ack: true,
    })
    .await;
    let f = c.frame().await;
    assert_eq!(f.kind, Kind::Subscribed { channel: "ticker".into(), sid: 3 });
    for want in &m[..2] {
        let f = c.frame().await;
        assert_eq!(
            (f.kind, f.sid, f.seq),
            (Kind::Ticker { market: (*want).into() }, Some(3), None)
        );
    }
    c.send(&update(9, 3, &[m[2]], UpdateAction::AddMarkets)).await;
    let f = c.frame().await;
    assert_eq!((f.id, f.sid, f.kind), (Some(9), Some(3), Kind::Ok { tickers: None, subs: None }));
    sim.handle.shutdown().await;
}

#[tokio::test]
async fn malformed_commands_get_the_documented_error_codes() {
    let sim = start(22, |cfg| {
        cfg.session = SessionLimits { markets_per_subscription_max: 3, commands_per_s_max: 1_000 }
    })
    .await;
    let ms = busy_markets(&sim.handle, 4).await;
    let mut c = client(&sim).await;
    c.send(&sub(1, &[Channel::OrderbookDelta], MarketFilter::One(&ms[0]))).await;
    c.until_reply(1).await;
    c.frame().await; // its snapshot
    let cases: Vec<(String, u32)> = vec![
        ("{not json".into(), 1),
        (r#"{"id":11,"cmd":"subscribe"}"#.into(), 2),
        (r#"{"id":12,"cmd":"subscribe","params":{"market_ticker":"X"}}"#.into(), 3),
        (r#"{"id":13,"cmd":"unsubscribe","params":{}}"#.into(), 4),
        (r#"{"id":14,"cmd":"frobnicate"}"#.into(), 5),
        (r#"{"id":15,"cmd":"update_subscription","params":{"sid":42,"market_tickers":["X"],"action":"add_markets"}}"#.into(), 7),
        (r#"{"id":16,"cmd":"subscribe","params":{"channels":["ticker_v2"]}}"#.into(), 8),
        (r#"{"id":17,"cmd":"subscribe","params":{"channels":["trade"],"market_ticker":"A","market_tickers":["B"]}}"#.into(), 11),
        (r#"{"id":18,"cmd":"update_subscription","params":{"sids":[1,2],"market_tickers":["X"],"action":"add_markets"}}"#.into(), 12),
        (r#"{"id":19,"cmd":"update_subscription","params":{"sid":1,"market_tickers":["X"],"action":"frobnicate"}}"#.into(), 13),
        (r#"{"id":20,"cmd":"subscribe","params":{"channels":["orderbook_delta"]}}"#.into(), 14),
        (r#"{"id":21,"cmd":"update_subscription","params":{"sid":1,"market_tickers":["X"]}}"#.into(), 15),
        (format!(r#"{{"id":22,"cmd":"subscribe","params":{{"channels":["trade"],"market_tickers":["{}","{}","{}","{}"]}}}}"#, ms[0], ms[1], ms[2], ms[3]), 26),
        (format!(r#"{{"id":23,"cmd":"update_subscription","params":{{"sid":1,"market_tickers":["{}","{}","{}"],"action":"add_markets"}}}}"#, ms[1], ms[2], ms[3]), 26),
    ];
    for (raw, want) in cases {
        let (id, code) = error_code(&mut c, &raw).await;
        assert_eq!(code, want, "error code for {raw}");
        if !raw.starts_with("{not") {
            assert!(id.is_some(), "the error for {raw} carries the command id");
        }
    }
    // Nothing above changed the subscription.
    c.send(&Command::ListSubscriptions { id: 30 }).await;
    let f = c.frame().await;
    assert_eq!(f.kind, Kind::Ok { tickers: None, subs: Some(vec![("orderbook_delta".into(), 1)]) });
    sim.handle.shutdown().await;
}

#[tokio::test]
async fn command_rate_beyond_the_limit_is_error_27() {
    let sim = start(23, |cfg| {
        cfg.session = SessionLimits { markets_per_subscription_max: 100, commands_per_s_max: 5 }
    })
    .await;
    let mut c = client(&sim).await;
    for id in 1..=10 {
        c.send(&Command::ListSubscriptions { id }).await;
    }
    let mut codes = Vec::new();
    for _ in 1..=10 {
        let f = c.frame().await;
        codes.push(match f.kind {
            Kind::Ok { .. } => 0,
            Kind::Error { code, .. } => code,
            other => panic!("unexpected {other:?}"),
        });
    }
    // Ten commands inside one second: the first five pass, the rest are refused (a window
    // boundary inside the burst can only let more through, never refuse the first five).
    assert_eq!(&codes[..5], &[0; 5]);
    assert!(codes[5..].contains(&27), "no command refused with 27: {codes:?}");
    sim.handle.shutdown().await;
}

/// Counts of the hub's published events by channel (and, for deltas, by market).
#[derive(Default, Debug)]
struct Published {
    trades: usize,
    trades_by_market: HashMap<String, usize>,
    tickers: usize,
    lifecycle: usize,
    deltas: HashMap<String, usize>,
}

fn drain(tap: &mut broadcast::Receiver<Batch>, p: &mut Published) {
    while let Ok(batch) = tap.try_recv() {
        for ev in batch.iter() {
            match ev.channel {
                EventChannel::Trade => {
                    p.trades += 1;
                    let market = ev.market.as_deref().unwrap_or("").to_owned();
                    *p.trades_by_market.entry(market).or_default() += 1;
                }
                EventChannel::Ticker => p.tickers += 1,
                EventChannel::Lifecycle => p.lifecycle += 1,
                EventChannel::Orderbook => {
                    *p.deltas.entry(ev.market.as_deref().unwrap_or("").to_owned()).or_default() +=
                        1;
                }
            }
        }
    }
}

#[tokio::test]
async fn snapshot_plus_deltas_is_the_engine_book_and_seq_is_per_sid() {
    let sim = start(24, |_| {}).await;
    let ms = busy_markets(&sim.handle, 3).await;
    let m: Vec<&str> = ms.iter().map(String::as_str).collect();
    let mut tap = sim.handle.hub().subscribe();
    let mut c = client(&sim).await;
    c.send(&sub(1, &[Channel::OrderbookDelta, Channel::Trade], MarketFilter::Many(&m))).await;
    let mut frames = c.until_reply(1).await;
    frames.extend(c.until_reply(1).await);
    let mut books: HashMap<String, Book> = HashMap::new();
    let mut last_seq: HashMap<u64, u64> = HashMap::new();
    let (mut deltas, mut trades) = (HashMap::<String, usize>::new(), 0usize);
    let mut published = Published::default();
    for round in 0..6 {
        sim.handle.hub().advance(3_000).await.unwrap();
        frames.extend(c.barrier().await);
        for f in frames.drain(..) {
            if let (Some(sid), Some(seq)) = (f.sid, f.seq) {
                let last = last_seq.entry(sid).or_insert(0);
                assert_eq!(seq, *last + 1, "sid {sid}: seq must be contiguous: {}", f.text);
                *last = seq;
            }
            match f.kind {
                Kind::Snapshot { market, yes, no } => {
                    assert_eq!(f.sid, Some(1));
                    books.insert(market, Book::from_levels(&yes, &no));
                }
                Kind::Delta { market, side, price, delta, .. } => {
                    assert_eq!(f.sid, Some(1));
                    let book = books.get_mut(&market).unwrap_or_else(|| {
                        panic!("delta for {market} before its snapshot: {}", f.text)
                    });
                    book.apply(side, price, delta);
                    *deltas.entry(market).or_default() += 1;
                }
                Kind::Trade { .. } => {
                    assert_eq!(f.sid, Some(2));
                    trades += 1;
                }
                Kind::Subscribed { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        drain(&mut tap, &mut published);
        let engine: Vec<Book> = {
            let ms = ms.clone();
            sim.handle
                .hub()
                .query(move |ex| {
                    ms.iter()
                        .map(|t| Book::from_engine(&ex.book(ex.market_id(t).unwrap(), None)))
                        .collect()
                })
                .await
                .unwrap()
        };
        for (t, want) in ms.iter().zip(&engine) {
            assert_eq!(books.get(t), Some(want), "round {round}: client book of {t} != engine");
        }
    }
    // Every trade and every delta the hub published for a subscribed market reached its sid
    // (the subscription started before the first advance, so nothing was published before its
    // snapshots).
    assert_eq!(trades, ms.iter().filter_map(|t| published.trades_by_market.get(t)).sum::<usize>());
    assert!(trades > 0, "the run produced no trade; pick another seed");
    for t in &ms {
        assert_eq!(deltas.get(t), published.deltas.get(t), "delta count of {t}");
    }
    assert!(deltas.values().sum::<usize>() > 0, "the run produced no delta");
    // Two sids, independent counters from 1: the orderbook sid counted 3 snapshots + deltas.
    assert_eq!(last_seq[&1] as usize, 3 + deltas.values().sum::<usize>());
    assert_eq!(last_seq[&2] as usize, trades);

    // get_snapshot mid-stream equals the book the client maintained.
    c.send(&update(50, 1, &[m[0]], UpdateAction::GetSnapshot)).await;
    let f = c.frame().await;
    assert_eq!((f.id, f.seq), (Some(50), Some(last_seq[&1] + 1)));
    match f.kind {
        Kind::Snapshot { market, yes, no } => {
            assert_eq!(Some(&Book::from_levels(&yes, &no)), books.get(&market));
        }
        other => panic!("expected a snapshot, got {other:?}"),
    }
    sim.handle.shutdown().await;
}

#[tokio::test]
async fn lifecycle_and_ticker_channels_cover_the_exchange() {
    // A slow exchange clock: 20 events per virtual second, so lifecycle changes happen.
    let sim = start(25, |cfg| cfg.market.rate_msgs_per_s = 20).await;
    let mut tap = sim.handle.hub().subscribe();
    let mut c = client(&sim).await;
    c.send(&sub(1, &[Channel::MarketLifecycleV2, Channel::Ticker], MarketFilter::All)).await;
    c.until_reply(1).await;
    c.until_reply(1).await;
    sim.handle.hub().advance(20_000).await.unwrap();
    let frames = c.barrier().await;
    let mut published = Published::default();
    drain(&mut tap, &mut published);
    let (mut lifecycle, mut tickers, mut seq) = (0, 0, 0);
    for f in &frames {
        match f.kind {
            Kind::Lifecycle { .. } | Kind::EventLifecycle => {
                lifecycle += 1;
                seq += 1;
                assert_eq!((f.sid, f.seq), (Some(1), Some(seq)), "{}", f.text);
            }
            Kind::Ticker { .. } => {
                tickers += 1;
                assert_eq!((f.sid, f.seq), (Some(2), None), "ticker is unsequenced: {}", f.text);
            }
            ref other => panic!("unexpected {other:?}"),
        }
    }
    assert!(published.lifecycle > 0, "no lifecycle event in the run; pick another seed");
    assert_eq!((lifecycle, tickers), (published.lifecycle, published.tickers));
    sim.handle.shutdown().await;
}

#[tokio::test]
async fn two_connections_receive_identical_content() {
    let sim = start(26, |_| {}).await;
    let ms = busy_markets(&sim.handle, 2).await;
    let m: Vec<&str> = ms.iter().map(String::as_str).collect();
    let mut a = client(&sim).await;
    let mut b = client(&sim).await;
    for c in [&mut a, &mut b] {
        c.send(&sub(1, &[Channel::Trade], MarketFilter::All)).await;
        c.until_reply(1).await;
    }
    // b subscribes to the orderbook, shifting its trade sid; content must not change.
    b.send(&sub(2, &[Channel::OrderbookDelta], MarketFilter::Many(&m))).await;
    b.until_reply(2).await;
    sim.handle.hub().advance(2_000).await.unwrap();
    let msg = |f: &Frame| {
        let v: serde_json::Value = serde_json::from_str(&f.text).unwrap();
        v["msg"].to_string()
    };
    let ta: Vec<String> = a
        .barrier()
        .await
        .iter()
        .filter(|f| matches!(f.kind, Kind::Trade { .. }))
        .map(msg)
        .collect();
    let tb: Vec<String> = b
        .barrier()
        .await
        .iter()
        .filter(|f| matches!(f.kind, Kind::Trade { .. }))
        .map(msg)
        .collect();
    assert!(!ta.is_empty(), "no trades in the run");
    assert_eq!(ta, tb);
    sim.handle.shutdown().await;
}
