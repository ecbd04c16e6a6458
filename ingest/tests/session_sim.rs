//! The WebSocket session against the simulator: real TLS, the signed Ed25519 handshake, faults.
//!
//! The simulator runs on its own tokio runtime (background threads) with a manual clock; the
//! session runs on a glommio executor in the test thread and reports through a sink that
//! forwards owned records over a local channel. The test advances the exchange and waits on
//! those records; every wait is bounded and fails with a message.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::{LocalExecutorBuilder, Placement};
use kdp_engine::event::Event;
use kdp_ingest::auth::Signer;
use kdp_ingest::session::backoff::BackoffConfig;
use kdp_ingest::session::conn::{
    Endpoint, Flow, GapMarker, Received, SessionConfig, SessionError, SessionSink, Status, run,
};
use kdp_ingest::session::seq::{DisconnectGap, Gap};
use kdp_ingest::wire::Channel;
use kdp_sim::market::MarketConfig;
use kdp_sim::market::model::MarketStatus;
use kdp_sim::transport::auth::generate_demo_key;
use kdp_sim::transport::faults::Control;
use kdp_sim::transport::hub::Clock;
use kdp_sim::transport::{SimConfig, SimHandle, Simulator, tls};

/// Longest any single wait may take before the test fails.
const WAIT: Duration = Duration::from_secs(20);
/// How long to wait for the next record before advancing the exchange again.
const QUANTUM: Duration = Duration::from_millis(100);
const KEY_ID: &str = "session-test-ed25519";
const PATH: &str = "/trade-api/ws/v2";
/// glommio's default io_memory (10 MiB) exceeds this machine's 8 MiB memlock limit.
const IO_MEMORY_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Record {
    Snapshot { sid: u64, seq: u64, market: String },
    Delta { sid: u64, seq: u64 },
    Other,
    Gap(Gap, Vec<String>),
    Disconnect(DisconnectGap, Vec<String>),
    Lost(u64, u32),
    Status(Status),
    Unparsed(String),
}

struct Forward {
    tx: LocalSender<Record>,
    stop: Rc<Cell<bool>>,
}

impl Forward {
    fn send(&mut self, r: Record) -> Flow {
        let _ = self.tx.try_send(r);
        if self.stop.get() { Flow::Stop } else { Flow::Continue }
    }
}

impl SessionSink for Forward {
    fn event(&mut self, r: &Received<'_>) -> Flow {
        let rec = match (r.event, r.sid, r.seq) {
            (Event::Snapshot(s), Some(sid), Some(seq)) => {
                Record::Snapshot { sid, seq, market: s.market.to_owned() }
            }
            (Event::Delta(_), Some(sid), Some(seq)) => Record::Delta { sid, seq },
            _ => Record::Other,
        };
        self.send(rec)
    }
    fn gap(&mut self, m: &GapMarker<'_>) -> Flow {
        self.send(match *m {
            GapMarker::Seq { gap, markets } => Record::Gap(gap, markets.to_vec()),
            GapMarker::Disconnect { gap, markets } => Record::Disconnect(gap, markets.to_vec()),
            GapMarker::SubscriptionLost { sid, code, .. } => Record::Lost(sid, code),
        })
    }
    fn unparsed(&mut self, _: &[u8], _: u64, why: &str) -> Flow {
        self.send(Record::Unparsed(why.to_owned()))
    }
    fn status(&mut self, s: &Status) -> Flow {
        self.send(Record::Status(s.clone()))
    }
}

struct Sim {
    rt: tokio::runtime::Runtime,
    handle: SimHandle,
    _dir: tempfile::TempDir,
    key_pem: String,
}

impl Sim {
    fn start(seed: u64) -> Sim {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let demo = generate_demo_key().unwrap();
        let market = MarketConfig { seed, markets: 24, ..MarketConfig::default() };
        let mut cfg = SimConfig::new(market, dir.path().join("sim.pem"));
        cfg.clock = Clock::Manual;
        cfg.rest_addr = None;
        cfg.keys.insert_pem(KEY_ID, &demo.public_spki_pem).unwrap();
        let handle = rt.block_on(Simulator::start(cfg)).unwrap();
        Sim { rt, handle, _dir: dir, key_pem: demo.private_pkcs8_pem }
    }

    fn signer(&self) -> Signer {
        Signer::from_pem(KEY_ID, &self.key_pem).unwrap()
    }

    /// The `n` active markets with the deepest books (they see deltas).
    fn busy_markets(&self, n: usize) -> Vec<String> {
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

    fn config(&self, markets: Vec<String>) -> SessionConfig {
        let addr = self.handle.wss_addr().unwrap();
        let tls = tls::client_config_from_pem_file(self.handle.cert_pem_path()).unwrap();
        let endpoint = Endpoint {
            host: "localhost".into(),
            port: addr.port(),
            path: PATH.into(),
            tls: Some(tls),
        };
        let mut cfg = SessionConfig::new(endpoint, vec![Channel::OrderbookDelta], markets);
        cfg.backoff = BackoffConfig {
            delay_min: Duration::from_millis(20),
            delay_max: Duration::from_millis(200),
            healthy_after: Duration::from_secs(5),
        };
        cfg
    }

    fn advance(&self, events: u64) {
        self.rt.block_on(self.handle.hub().advance(events)).unwrap();
    }

    fn control(&self, conn: u64, c: Control) {
        self.rt.block_on(self.handle.registry().control(conn, c)).unwrap();
    }

    fn shutdown(self) {
        let Sim { rt, handle, .. } = self;
        rt.block_on(handle.shutdown());
    }
}

/// Runs `script` on a glommio executor next to a session over `cfg`.
fn with_session<F, Fut>(sim: &Sim, cfg: SessionConfig, script: F)
where
    F: FnOnce(Script) -> Fut + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let signer = sim.signer();
    let ex =
        LocalExecutorBuilder::new(Placement::Unbound).io_memory(IO_MEMORY_BYTES).make().unwrap();
    ex.run(async move {
        let (tx, rx) = local_channel::new_unbounded();
        let stop = Rc::new(Cell::new(false));
        let mut sink = Forward { tx, stop: Rc::clone(&stop) };
        let session = glommio::spawn_local(async move { run(&cfg, &signer, &mut sink).await });
        script(Script { rx }).await;
        stop.set(true);
        drop(session);
    });
}

struct Script {
    rx: LocalReceiver<Record>,
}

impl Script {
    /// The next record, advancing the exchange (via `advance`) while none comes.
    async fn next(&mut self, what: &str, advance: &dyn Fn()) -> Record {
        let deadline = Instant::now() + WAIT;
        loop {
            let got = glommio::timer::timeout(QUANTUM, async { Ok(self.rx.recv().await) }).await;
            match got {
                Ok(Some(r)) => return r,
                Ok(None) => panic!("the session ended while waiting for {what}"),
                Err(_) if Instant::now() < deadline => advance(),
                Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
            }
        }
    }
}

fn expect_connected(r: Record, attempt: u64) {
    assert_eq!(r, Record::Status(Status::Connected { attempt }));
}

/// Reads `n` snapshots; returns (sid, last seq, markets in order).
async fn snapshots(s: &mut Script, n: usize, advance: &dyn Fn()) -> (u64, u64, Vec<String>) {
    let mut markets = Vec::new();
    let mut last = (0, 0);
    while markets.len() < n {
        match s.next("the initial snapshots", advance).await {
            Record::Snapshot { sid, seq, market } => {
                markets.push(market);
                last = (sid, seq);
            }
            other => panic!("expected a snapshot, got {other:?}"),
        }
    }
    (last.0, last.1, markets)
}

#[test]
fn snapshots_then_contiguous_deltas_over_wss() {
    let sim = Sim::start(41);
    let markets = sim.busy_markets(3);
    let cfg = sim.config(markets.clone());
    let sim = Arc::new(sim);
    let s2 = Arc::clone(&sim);
    with_session(&sim, cfg, move |mut s| async move {
        let adv = move || s2.advance(50);
        expect_connected(s.next("the connection", &adv).await, 1);
        let (sid, seq, mut got) = snapshots(&mut s, 3, &adv).await;
        assert_eq!(seq, 3, "snapshots are seq 1..=3");
        got.sort();
        let mut want = markets.clone();
        want.sort();
        assert_eq!(got, want);
        let mut expected = seq + 1;
        while expected < 30 {
            match s.next("deltas", &adv).await {
                Record::Delta { sid: d_sid, seq } => {
                    assert_eq!((d_sid, seq), (sid, expected), "deltas contiguous on the sid");
                    expected += 1;
                }
                Record::Other => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    });
    Arc::into_inner(sim).unwrap().shutdown();
}

#[test]
fn a_dropped_frame_is_exactly_one_gap_then_a_resync() {
    let sim = Arc::new(Sim::start(42));
    let markets = sim.busy_markets(3);
    let cfg = sim.config(markets.clone());
    let s2 = Arc::clone(&sim);
    with_session(&sim, cfg, move |mut s| async move {
        let adv = {
            let s2 = Arc::clone(&s2);
            move || s2.advance(50)
        };
        expect_connected(s.next("the connection", &adv).await, 1);
        let (sid, mut last, _) = snapshots(&mut s, 3, &adv).await;
        s2.control(1, Control::DropNext(1));
        let gap = loop {
            match s.next("the gap", &adv).await {
                Record::Delta { seq, .. } => {
                    panic!("delta {seq} arrived before the gap (last {last})")
                }
                Record::Gap(gap, on) => break (gap, on),
                Record::Other => {}
                other => panic!("unexpected {other:?}"),
            }
        };
        assert_eq!((gap.0.sid, gap.0.expected, gap.0.got), (sid, last + 1, last + 2));
        assert!(gap.0.ts_recv_last_ok_ns.unwrap() <= gap.0.ts_recv_ns);
        let mut on = gap.1;
        on.sort();
        let mut want = markets.clone();
        want.sort();
        assert_eq!(on, want, "the gap names every market on the sid");
        last = gap.0.got - 1;
        // The frame that revealed the gap, then the resync's snapshots of all three markets.
        let mut resynced = Vec::new();
        while resynced.len() < 3 {
            match s.next("the resync snapshots", &adv).await {
                Record::Delta { seq, .. } | Record::Snapshot { seq, .. } if seq <= last => {
                    panic!("seq {seq} not after {last}")
                }
                Record::Delta { seq, .. } => last = seq,
                Record::Snapshot { seq, market, .. } => {
                    last = seq;
                    resynced.push(market);
                }
                Record::Other => {}
                Record::Gap(g, _) => panic!("a second gap: {g:?}"),
                other => panic!("unexpected {other:?}"),
            }
        }
        resynced.sort();
        assert_eq!(resynced, want);
    });
    Arc::into_inner(sim).unwrap().shutdown();
}

#[test]
fn a_closed_connection_reconnects_resubscribes_and_reports_the_window() {
    let sim = Arc::new(Sim::start(43));
    let markets = sim.busy_markets(2);
    let cfg = sim.config(markets.clone());
    let s2 = Arc::clone(&sim);
    with_session(&sim, cfg, move |mut s| async move {
        let adv = {
            let s2 = Arc::clone(&s2);
            move || s2.advance(50)
        };
        expect_connected(s.next("the connection", &adv).await, 1);
        let (_, _, mut first) = snapshots(&mut s, 2, &adv).await;
        s2.control(1, Control::Close(1011));
        let reason = loop {
            match s.next("the disconnect", &adv).await {
                Record::Status(Status::Disconnected { reason, retry_in }) => {
                    assert!(retry_in <= Duration::from_millis(20), "{retry_in:?}");
                    break reason;
                }
                Record::Delta { .. } | Record::Other => {}
                other => panic!("unexpected {other:?}"),
            }
        };
        assert!(reason.contains("1011"), "{reason}");
        expect_connected(s.next("the reconnection", &adv).await, 2);
        let window = match s.next("the disconnect window", &adv).await {
            Record::Disconnect(gap, on) => {
                assert_eq!(on, markets);
                gap
            }
            other => panic!("expected the disconnect window, got {other:?}"),
        };
        assert!(window.ts_recv_last_ns.unwrap() < window.ts_recv_resumed_ns);
        let mut again = Vec::new();
        for want_seq in 1..=2 {
            match s.next("the snapshots after reconnecting", &adv).await {
                Record::Snapshot { seq, market, .. } => {
                    assert_eq!(seq, want_seq, "a fresh connection numbers from 1");
                    again.push(market);
                }
                other => panic!("expected a snapshot, got {other:?}"),
            }
        }
        first.sort();
        again.sort();
        assert_eq!(again, first, "exactly the same markets are resubscribed");
    });
    Arc::into_inner(sim).unwrap().shutdown();
}

#[test]
fn a_key_the_server_does_not_know_is_a_clear_401() {
    let sim = Sim::start(44);
    let cfg = sim.config(vec!["NOPE".into()]);
    let other = generate_demo_key().unwrap();
    let signer = Signer::from_pem(KEY_ID, &other.private_pkcs8_pem).unwrap();
    let ex =
        LocalExecutorBuilder::new(Placement::Unbound).io_memory(IO_MEMORY_BYTES).make().unwrap();
    let result = ex.run(async move {
        let (tx, _rx) = local_channel::new_unbounded();
        let mut sink = Forward { tx, stop: Rc::new(Cell::new(false)) };
        glommio::timer::timeout(WAIT, async { Ok(run(&cfg, &signer, &mut sink).await) }).await
    });
    match result {
        Ok(Err(e @ SessionError::Rejected { status: 401, .. })) => {
            let text = e.to_string();
            println!("{text}");
            assert!(text.contains("HTTP 401") && text.contains("check the key id"), "{text}");
        }
        Ok(other) => panic!("expected a 401 rejection, got {other:?}"),
        Err(e) => panic!("the session did not give up on a bad key within {WAIT:?}: {e}"),
    }
    sim.shutdown();
}
