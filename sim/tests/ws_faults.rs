//! Every WebSocket fault kind, triggered through the control endpoint (HTTP/JSON) and observed
//! by a client built on kdp's own protocol code over real TLS: a dropped frame is a `seq` gap,
//! a duplicated one a repeated `seq`, closes arrive with their codes (1006 = no close frame),
//! silence stops data and pings, an outage closes connections, refuses handshakes (503) and
//! reports the exchange inactive on REST until it ends, a slow-reader overflow is error 25 with
//! the subscription gone (forced, and for real: a client that stops reading while the hub's
//! broadcast, made tiny, overtakes its connection), a forced bad signature is a 401; random
//! per-frame faults are reproducible from the seed and differ per connection.
//!
//! A control request returns once the connection has acted on the fault, and the simulator
//! runs on a manual clock, so the only waits are for frames (bounded by `ws_support::WAIT`).

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod ws_support;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use kdp_ingest::wire::{Channel, Command, MarketFilter, parse_rfc3339_ns};
use kdp_sim::transport::faults::FaultConfig;
use ws_support::{
    Client, Handshake, Headers, Item, Kind, Sim, busy_markets, client, client_small_rcvbuf,
    connect_wss, control, fault, start, within,
};

async fn trade_all(c: &mut Client) {
    c.send(&Command::Subscribe {
        id: 1,
        channels: &[Channel::Trade],
        markets: MarketFilter::All,
        send_initial_snapshot: false,
        skip_ticker_ack: false,
    })
    .await;
    let f = c.frame().await;
    assert_eq!(f.kind, Kind::Subscribed { channel: "trade".into(), sid: 1 });
}

/// Publishes events until at least `n` trades exist, and returns the trade seqs the client got.
async fn trade_seqs(sim: &Sim, c: &mut Client, n: usize) -> Vec<u64> {
    let mut seqs = Vec::new();
    for _ in 0..50 {
        sim.handle.hub().advance(500).await.unwrap();
        seqs.extend(
            c.barrier()
                .await
                .iter()
                .filter(|f| matches!(f.kind, Kind::Trade { .. }))
                .map(|f| f.seq.unwrap()),
        );
        if seqs.len() >= n {
            return seqs;
        }
    }
    panic!("fewer than {n} trades after 25k events");
}

async fn connections(sim: &Sim) -> serde_json::Value {
    let (status, body) =
        control(sim.handle.control_addr().unwrap(), "GET", "/connections", "").await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test]
async fn dropped_frame_is_a_seq_gap_and_duplicate_a_repeated_seq() {
    let sim = start(31, |_| {}).await;
    let mut c = client(&sim).await;
    trade_all(&mut c).await;
    fault(&sim.handle, "/faults/drop_next", r#"{"conn":1,"frames":2}"#).await;
    let seqs = trade_seqs(&sim, &mut c, 5).await;
    assert_eq!(&seqs[..3], &[3, 4, 5], "the first two trades are dropped: gap before 3");
    fault(&sim.handle, "/faults/dup_next", r#"{"conn":1,"frames":1}"#).await;
    let seqs = trade_seqs(&sim, &mut c, 3).await;
    assert_eq!(seqs[0], seqs[1], "the next trade arrives twice with the same seq: {seqs:?}");
    assert_eq!(seqs[2], seqs[0] + 1);
    let conns = connections(&sim).await;
    assert_eq!(conns[0]["conn"], 1);
    assert_eq!(
        (conns[0]["frames_dropped"].as_u64(), conns[0]["frames_duplicated"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(conns[0]["subscriptions"][0]["channel"], "trade");
    sim.handle.shutdown().await;
}

#[tokio::test]
async fn close_faults_arrive_with_their_codes() {
    let sim = start(32, |_| {}).await;
    for (conn, code) in [(1u64, 1000u16), (2, 1001), (3, 1011), (4, 1006)] {
        let mut c = client(&sim).await;
        assert!(c.barrier().await.is_empty());
        fault(&sim.handle, "/faults/close", &format!(r#"{{"conn":{conn},"code":{code}}}"#)).await;
        match c.item().await {
            Item::Close(got) if code != 1006 => assert_eq!(got, Some(code)),
            Item::Abrupt(why) if code == 1006 => println!("1006 seen as: {why}"),
            other => panic!("close {code}: got {other:?}"),
        }
    }
    let (status, _) = control(
        sim.handle.control_addr().unwrap(),
        "POST",
        "/faults/close",
        r#"{"conn":99,"code":1000}"#,
    )
    .await;
    assert_eq!(status, 404, "unknown connection");
    sim.handle.shutdown().await;
}

#[tokio::test]
async fn silence_stops_data_and_pings_then_seq_shows_the_loss() {
    let ping = Duration::from_millis(100);
    let sim = start(33, |cfg| cfg.ping_interval = ping).await;
    let mut c = client(&sim).await;
    trade_all(&mut c).await;
    match c.item().await {
        Item::Ping(p) => assert_eq!(p, b"heartbeat"),
        other => panic!("expected a heartbeat ping, got {other:?}"),
    }
    let silence = Duration::from_millis(1_000);
    fault(&sim.handle, "/faults/silence", r#"{"conn":1,"ms":1000}"#).await;
    let t0 = Instant::now();
    // Trades published during the silence are lost to this connection.
    sim.handle.hub().advance(3_000).await.unwrap();
    let next = c.item().await;
    let quiet = t0.elapsed();
    assert!(matches!(next, Item::Ping(_)), "first thing after the silence: {next:?}");
    assert!(
        quiet >= silence - Duration::from_millis(50),
        "no ping for the silence ({silence:?}); got one after {quiet:?} (interval {ping:?})"
    );
    let seqs = trade_seqs(&sim, &mut c, 1).await;
    let conns = connections(&sim).await;
    let silenced = conns[0]["frames_silenced"].as_u64().unwrap();
    assert!(silenced > 0, "trades published during the silence were swallowed");
    assert_eq!(seqs[0], silenced + 1, "the first trade after the silence shows the gap");
    sim.handle.shutdown().await;
}

#[tokio::test]
async fn outage_closes_connections_and_refuses_handshakes() {
    let sim = start(34, |_| {}).await;
    let mut c = client(&sim).await;
    let outage = Duration::from_millis(1500);
    fault(&sim.handle, "/faults/outage", r#"{"ms":1500,"close_code":1001}"#).await;
    // The simulator set the outage's end before answering, so it is at most `outage` from now.
    let outage_over = tokio::time::Instant::now() + outage;
    match c.item().await {
        Item::Close(code) => assert_eq!(code, Some(1001)),
        other => panic!("expected close 1001, got {other:?}"),
    }
    match connect_wss(&sim.handle, Headers::Signed(sim.signer.clone())).await {
        Handshake::Refused(status, _) => assert_eq!(status, 503),
        Handshake::Connected(_) => panic!("handshake accepted during the outage"),
    }
    // The outage is a real-time period: once it has passed, handshakes are admitted again.
    tokio::time::sleep_until(outage_over).await;
    match connect_wss(&sim.handle, Headers::Signed(sim.signer.clone())).await {
        Handshake::Connected(_) => {}
        Handshake::Refused(s, b) => panic!("refused {s} after the outage ended: {b}"),
    }
    sim.handle.shutdown().await;
}

async fn exchange_status(sim: &Sim) -> serde_json::Value {
    let (status, body) =
        control(sim.handle.rest_addr().unwrap(), "GET", "/trade-api/v2/exchange/status", "").await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn wall_ns() -> i64 {
    i64::try_from(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos(),
    )
    .unwrap()
}

#[tokio::test]
async fn outage_reports_the_exchange_inactive_on_rest_until_it_ends() {
    let sim =
        start(39, |cfg| cfg.rest_addr = Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))).await;
    let active = exchange_status(&sim).await;
    assert_eq!(
        (&active["exchange_active"], &active["trading_active"]),
        (&serde_json::json!(true), &serde_json::json!(true))
    );
    assert!(active["exchange_estimated_resume_time"].is_null(), "{active}");

    let outage = Duration::from_millis(800);
    let period_ns = i64::try_from(outage.as_nanos()).unwrap();
    let wall_before = wall_ns();
    fault(&sim.handle, "/faults/outage", r#"{"ms":800,"close_code":0}"#).await;
    let outage_over = tokio::time::Instant::now() + outage;
    let wall_after = wall_ns();
    let down = exchange_status(&sim).await;
    assert_eq!(down["exchange_active"], false, "{down}");
    assert_eq!(down["trading_active"], false, "{down}");
    assert_eq!(down["exchange_index_statuses"][0]["exchange_active"], false, "{down}");
    let resume = down["exchange_estimated_resume_time"].as_str().unwrap_or_else(|| {
        panic!("exchange_estimated_resume_time must be set during an outage: {down}")
    });
    let resume_ns = parse_rfc3339_ns(resume.as_bytes()).unwrap();
    assert!(
        (wall_before + period_ns..=wall_after + period_ns).contains(&resume_ns),
        "resume time {resume} is not the outage's end (requested {outage:?} from {wall_before} ns)"
    );
    match connect_wss(&sim.handle, Headers::Signed(sim.signer.clone())).await {
        Handshake::Refused(status, _) => assert_eq!(status, 503),
        Handshake::Connected(_) => panic!("handshake accepted during the outage"),
    }

    // The outage is a real-time period: once it has passed, REST reports the exchange active.
    tokio::time::sleep_until(outage_over).await;
    let up = exchange_status(&sim).await;
    assert_eq!(up, active, "after the outage REST reports what it did before");
    client(&sim).await;
    sim.handle.shutdown().await;
}

#[tokio::test]
async fn slow_reader_overflow_is_error_25_and_drops_the_subscription() {
    let sim = start(35, |_| {}).await;
    let mut c = client(&sim).await;
    trade_all(&mut c).await;
    fault(&sim.handle, "/faults/overflow", r#"{"conn":1}"#).await;
    let f = c.frame().await;
    assert!(matches!(f.kind, Kind::Error { code: 25, .. }), "{}", f.text);
    assert_eq!(f.sid, Some(1));
    c.send(&Command::ListSubscriptions { id: 9 }).await;
    let f = c.frame().await;
    assert_eq!(f.kind, Kind::Ok { tickers: None, subs: Some(vec![]) });
    // Nothing arrives for the dropped subscription.
    sim.handle.hub().advance(2_000).await.unwrap();
    assert!(c.barrier().await.is_empty());
    sim.handle.shutdown().await;
}

/// Broadcast capacity of the real slow-reader test: two batches, so a connection blocked on its
/// socket falls behind after a few advances.
const LAG_BROADCAST_BATCHES: usize = 2;
/// Advances made while the client does not read. Each publishes tens of KB of frames for this
/// subscription; about 2.8 MB reach the client before the overflow here (its receive buffer is
/// 4 KB; the server's send buffer grows up to Linux's `tcp_wmem` maximum, 4 MiB by default), so
/// ~20 MB leaves a wide margin for the server's writes to block and the broadcast to overtake it.
const LAG_STEPS: usize = 600;
const LAG_EVENTS_PER_STEP: u64 = 500;

#[tokio::test]
async fn a_reader_that_falls_behind_the_broadcast_gets_error_25_on_each_sid() {
    let sim = start(38, |cfg| cfg.broadcast_batches_max = LAG_BROADCAST_BATCHES).await;
    let markets = busy_markets(&sim.handle, 8).await;
    let markets_ref: Vec<&str> = markets.iter().map(String::as_str).collect();
    let mut c = client_small_rcvbuf(&sim, 4096).await;
    let id = c.id();
    c.send(&Command::Subscribe {
        id,
        channels: &[Channel::OrderbookDelta, Channel::Trade],
        markets: MarketFilter::Many(&markets_ref),
        send_initial_snapshot: false,
        skip_ticker_ack: false,
    })
    .await;
    let subscribed = c.barrier().await;
    let sids: BTreeSet<u64> = subscribed
        .iter()
        .filter_map(|f| match &f.kind {
            Kind::Subscribed { sid, .. } => Some(*sid),
            _ => None,
        })
        .collect();
    assert_eq!(sids, BTreeSet::from([1, 2]), "orderbook_delta and trade sids");

    // The client stops reading; the hub keeps publishing one batch per advance.
    for _ in 0..LAG_STEPS {
        sim.handle.hub().advance(LAG_EVENTS_PER_STEP).await.unwrap();
    }
    // Reading again: everything the server managed to write, then error 25 on each sid, then
    // the reply (the session routes pending batches, and so meets the lag, before a command).
    let id = c.id();
    c.send(&Command::ListSubscriptions { id }).await;
    let frames = within("the backlog and the list reply", c.until_reply(id)).await;
    let (reply, before) = frames.split_last().unwrap();
    assert_eq!(reply.kind, Kind::Ok { tickers: None, subs: Some(vec![]) }, "{}", reply.text);
    let errors: Vec<&ws_support::Frame> =
        before.iter().filter(|f| matches!(f.kind, Kind::Error { .. })).collect();
    println!(
        "{} frames ({} bytes) reached the client before the overflow",
        before.len() - errors.len(),
        before.iter().map(|f| f.text.len()).sum::<usize>()
    );
    assert!(
        !errors.is_empty(),
        "no error 25: the connection never fell {LAG_BROADCAST_BATCHES} batches behind; raise \
         LAG_STEPS"
    );
    for e in &errors {
        assert!(matches!(e.kind, Kind::Error { code: 25, .. }), "{}", e.text);
        assert_eq!(e.id, None, "an overflow answers no command: {}", e.text);
    }
    let error_sids: Vec<u64> = errors.iter().map(|e| e.sid.unwrap()).collect();
    assert_eq!(error_sids, [1, 2], "one error 25 per subscription, in sid order");
    let first_error = before.iter().position(|f| matches!(f.kind, Kind::Error { .. })).unwrap();
    assert!(
        before[first_error..].iter().all(|f| matches!(f.kind, Kind::Error { .. })),
        "no data follows the overflow of its subscription"
    );
    let conns = connections(&sim).await;
    assert_eq!(conns[0]["overflows"], 1);
    assert_eq!(conns[0]["subscriptions"], serde_json::json!([]));

    // The connection stays usable: a resubscribe gets a new sid, a snapshot and deltas.
    let id = c.id();
    c.send(&Command::Subscribe {
        id,
        channels: &[Channel::OrderbookDelta],
        markets: MarketFilter::One(&markets[0]),
        send_initial_snapshot: false,
        skip_ticker_ack: false,
    })
    .await;
    let f = c.frame().await;
    assert_eq!(f.kind, Kind::Subscribed { channel: "orderbook_delta".into(), sid: 3 });
    let f = c.frame().await;
    assert!(matches!(f.kind, Kind::Snapshot { .. }), "{}", f.text);
    assert_eq!((f.sid, f.seq), (Some(3), Some(1)));
    sim.handle.hub().advance(2_000).await.unwrap();
    let deltas: Vec<u64> = c
        .barrier()
        .await
        .iter()
        .filter(|f| matches!(f.kind, Kind::Delta { .. }))
        .map(|f| f.seq.unwrap())
        .collect();
    assert!(!deltas.is_empty(), "the busiest market moved in 2,000 events");
    assert_eq!(deltas, (2..2 + deltas.len() as u64).collect::<Vec<_>>(), "seq goes on from 1");
    sim.handle.shutdown().await;
}

#[tokio::test]
async fn forced_bad_signature_is_refused_once() {
    let sim = start(36, |_| {}).await;
    fault(&sim.handle, "/faults/reject_next", r#"{"handshakes":1}"#).await;
    match connect_wss(&sim.handle, Headers::Signed(sim.signer.clone())).await {
        Handshake::Refused(status, body) => {
            assert_eq!(status, 401);
            assert!(body.contains("invalid_signature"), "{body}");
        }
        Handshake::Connected(_) => panic!("forced rejection ignored"),
    }
    client(&sim).await;
    sim.handle.shutdown().await;
}

/// Missing trade seqs of one connection over a fixed run.
async fn lost_seqs(sim: &Sim, c: &mut Client) -> Vec<u64> {
    let seqs = trade_seqs(sim, c, 200).await;
    let last = *seqs.last().unwrap();
    (1..=last).filter(|s| !seqs.contains(s)).collect()
}

#[tokio::test]
async fn random_drops_reproduce_from_the_seed_and_differ_per_connection() {
    let faults = FaultConfig { seed: 0xfa17, drop_frame_ppm: 100_000, ..FaultConfig::default() };
    println!("fault seed {:#x}", faults.seed);
    let mut runs = Vec::new();
    for _ in 0..2 {
        let sim = start(37, |cfg| cfg.faults = faults).await;
        let mut a = client(&sim).await;
        let mut b = client(&sim).await;
        trade_all(&mut a).await;
        trade_all(&mut b).await;
        let lost_a = lost_seqs(&sim, &mut a).await;
        // b saw the same events; read its frames of them.
        let seqs_b: Vec<u64> = b
            .barrier()
            .await
            .iter()
            .filter(|f| matches!(f.kind, Kind::Trade { .. }))
            .map(|f| f.seq.unwrap())
            .collect();
        let last_b = seqs_b.iter().copied().max().unwrap_or(0);
        let lost_b: Vec<u64> = (1..=last_b).filter(|s| !seqs_b.contains(s)).collect();
        assert!(!lost_a.is_empty() && !lost_b.is_empty(), "10% drop rate lost nothing");
        assert_ne!(lost_a, lost_b, "connections 1 and 2 must lose different frames");
        runs.push((lost_a, lost_b));
        sim.handle.shutdown().await;
    }
    assert_eq!(runs[0], runs[1], "same seed, same traffic: same losses");
}
