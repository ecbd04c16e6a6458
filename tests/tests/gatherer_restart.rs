//! `kdp gatherer` as a real process, killed and restarted (issue 4 acceptance: "Killing the
//! gatherer (SIGKILL) loses at most the uncommitted tail, which is reported as a gap on restart;
//! restart resumes gseq correctly").
//!
//! The simulator runs in this process (manual clock, truth file); the gatherer is the workspace's
//! `kdp` binary, built once by `gatherer_support::process::kdp_binary`, started three times against one database:
//! 1. run 1 captures, then gets SIGKILL while the frames of an exchange step are in flight;
//! 2. run 2 starts behind a `crash` gap, captures, and stops cleanly on SIGTERM;
//! 3. run 3 starts behind a `restart` gap, captures, and stops cleanly on SIGTERM.
//!
//! Then: gseqs are 1..=n without a hole or a reuse, each restart gap takes exactly the gseq after
//! the previous run's last committed one, and each run's rows follow its gap; each gap spans
//! from the earliest last receive time of the previous run's connections (so every connection's
//! uncommitted tail lies inside it) to before the first row of the new run; per simulator
//! connection, run 1's stored events are a prefix of what the connection was delivered (the
//! rest is the uncommitted tail), and runs 2 and 3 stored exactly what they were delivered,
//! once each. Every wait polls the database or the simulator with a deadline.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod gatherer_support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::Command;

use gatherer_support::process::{KdpProcess, kdp_binary};
use gatherer_support::{MARKETS, Replica, Row, Sim, assert_gseq_contiguous, stored_rows, wait_for};

const SEED: u64 = 0x6761_7468_6572_0301;
const CHANNELS: &[&str] = &["orderbook_delta", "trade", "ticker"];

fn count(client: &mut postgres::Client, sql: &str, after_gseq: i64) -> i64 {
    client.query_one(sql, &[&after_gseq]).unwrap().get(0)
}

/// Data rows (deltas, trades, tickers) with gseq above `after`.
fn data_rows_after(client: &mut postgres::Client, after: i64) -> i64 {
    count(
        client,
        "SELECT (SELECT count(*) FROM delta WHERE gseq > $1) \
              + (SELECT count(*) FROM trade WHERE gseq > $1) \
              + (SELECT count(*) FROM ticker WHERE gseq > $1)",
        after,
    )
}

fn snapshots_after(client: &mut postgres::Client, after: i64) -> i64 {
    count(client, "SELECT count(*) FROM snapshot WHERE gseq > $1", after)
}

fn gaps_after(client: &mut postgres::Client, after: i64) -> i64 {
    count(client, "SELECT count(*) FROM gap WHERE gseq > $1", after)
}

fn last_committed(client: &mut postgres::Client) -> i64 {
    client.query_one("SELECT coalesce(max(last_gseq), 0) FROM batch", &[]).unwrap().get(0)
}

/// Advances the exchange `steps` times by 1,000 events, each time waiting until the data rows
/// above `after` are the replica's count less `base` (the events before this run subscribed).
fn flow(
    sim: &Sim,
    replica: &mut Replica,
    run: &mut KdpProcess,
    client: &mut postgres::Client,
    after: i64,
    base: u64,
    steps: usize,
) {
    for _ in 0..steps {
        let exch_seq = sim.advance(1_000);
        replica.run_to(exch_seq);
        let want = i64::try_from(replica.expected() - base).unwrap();
        run.wait("every frame sent committed", || data_rows_after(client, after) == want);
    }
}

/// A restart gap row.
#[derive(Debug)]
struct Gap {
    gseq: i64,
    kind: String,
    conn_id: i64,
    sid: i64,
    expected_seq: i64,
    got_seq: Option<i64>,
    ts_recv_ns: i64,
    ts_recv_last_good_ns: Option<i64>,
    markets: Vec<String>,
}

fn gaps(client: &mut postgres::Client) -> Vec<Gap> {
    client
        .query(
            "SELECT gseq, kind, conn_id, sid, expected_seq, got_seq, ts_recv_ns, \
             ts_recv_last_good_ns, markets FROM gap ORDER BY gseq",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| Gap {
            gseq: r.get(0),
            kind: r.get(1),
            conn_id: r.get(2),
            sid: r.get(3),
            expected_seq: r.get(4),
            got_seq: r.get(5),
            ts_recv_ns: r.get(6),
            ts_recv_last_good_ns: r.get(7),
            markets: r.get(8),
        })
        .collect()
}

/// (gseq, conn_id, ts_recv_ns) of every row with a connection, in gseq order.
fn conn_rows(client: &mut postgres::Client) -> Vec<(i64, i64, i64)> {
    client
        .query(
            "SELECT gseq, conn_id, ts_recv_ns FROM ( \
               SELECT gseq, conn_id, ts_recv_ns FROM delta UNION ALL \
               SELECT gseq, conn_id, ts_recv_ns FROM trade UNION ALL \
               SELECT gseq, conn_id, ts_recv_ns FROM ticker UNION ALL \
               SELECT gseq, conn_id, ts_recv_ns FROM snapshot UNION ALL \
               SELECT gseq, conn_id, ts_recv_ns FROM market_lifecycle UNION ALL \
               SELECT gseq, conn_id, ts_recv_ns FROM event_lifecycle UNION ALL \
               SELECT gseq, conn_id, ts_recv_ns FROM gap UNION ALL \
               SELECT gseq, conn_id, ts_recv_ns FROM raw_frame) r \
             WHERE conn_id > 0 ORDER BY gseq",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// Checks the gap written at the start of a run against the rows around it (`previous`: the
/// previous run's first and last gseq): its gseq follows
/// the previous run's last committed one; it starts at the earliest of the previous run's
/// per-connection progress, which is consistent with the stored rows and never ahead of any
/// connection's last row (exactly each last row when the previous run stopped cleanly); it
/// ends before the new run's first row and after the previous run's last.
fn check_gap(
    client: &mut postgres::Client,
    gap: &Gap,
    kind: &str,
    previous: (i64, i64),
    next_first_recv: i64,
    markets: &[String],
) {
    let (lo, hi) = previous;
    assert_eq!(gap.gseq, hi + 1, "the gap takes the gseq after the last committed one: {gap:?}");
    assert_eq!(gap.kind, kind, "{gap:?}");
    assert_eq!((gap.conn_id, gap.sid, gap.expected_seq, gap.got_seq), (0, 0, 0, None), "{gap:?}");
    let mut want: Vec<String> = markets.to_vec();
    want.sort();
    let mut named = gap.markets.clone();
    named.sort();
    // A static market list is named (empty would mean every market of the gatherer, which is
    // what a gatherer following the registry, `rest_url`, records).
    assert_eq!(named, want, "the gap names the run's markets");
    let rows: Vec<(i64, i64, i64)> =
        conn_rows(client).into_iter().filter(|(g, _, _)| *g >= lo && *g <= hi).collect();
    let mut last: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
    for (gseq, conn, recv) in &rows {
        last.insert(*conn, (*gseq, *recv));
    }
    let progress: BTreeMap<i64, (i64, i64)> = client
        .query(
            "SELECT conn_id, last_gseq, last_recv_ns FROM run_conn \
             WHERE run_id = (SELECT run_id FROM run WHERE first_gseq = $1)",
            &[&lo],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    assert_eq!(
        progress.keys().collect::<Vec<_>>(),
        last.keys().collect::<Vec<_>>(),
        "every connection with rows has its progress recorded"
    );
    let by_gseq: HashMap<i64, (i64, i64)> = rows.iter().map(|(g, c, r)| (*g, (*c, *r))).collect();
    for (conn, (gseq, recv)) in &progress {
        assert_eq!(by_gseq.get(gseq), Some(&(*conn, *recv)), "progress of conn {conn} is a row");
        let (last_gseq, _) = last[conn];
        assert!(*gseq <= last_gseq, "progress of conn {conn} never ahead of its rows");
        if kind == "restart" {
            assert_eq!(*gseq, last_gseq, "a clean stop records each connection's last row");
        }
    }
    let start = progress.values().map(|(_, recv)| *recv).min();
    assert_eq!(gap.ts_recv_last_good_ns, start, "the gap starts at the earliest progress");
    let start = start.unwrap();
    assert!(last.values().all(|(_, recv)| start <= *recv), "inside the gap: every tail");
    let prev_max = rows.iter().map(|(_, _, r)| *r).max().unwrap();
    assert!(prev_max < gap.ts_recv_ns, "the new run starts after the old one's last row");
    assert!(gap.ts_recv_ns < next_first_recv, "the gap ends before the new run's first row");
}

#[test]
fn a_killed_gatherer_loses_at_most_its_uncommitted_tail_and_resumes_behind_a_gap() {
    println!("seed {SEED:#x}");
    kdp_binary();
    let sim = Sim::start(SEED);
    let db = kdp_engine::pg::testing::TestDatabase::new().unwrap();
    let markets = sim.busy_markets(MARKETS);
    assert_eq!(markets.len(), MARKETS);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gatherer.toml");
    std::fs::write(&config, sim.gatherer_toml(&db, &markets, CHANNELS)).unwrap();
    let mut replica = Replica::new(SEED, &markets, CHANNELS);
    // The schema first, as an operator would (the gatherer would also apply it at start).
    let migrated = Command::new(kdp_binary())
        .args(["migrate", "--schema", "gatherer", "--database-url", db.url()])
        .env_remove("KDP_DATABASE_URL")
        .output()
        .unwrap();
    assert!(migrated.status.success(), "kdp migrate: {migrated:?}");
    let mut client = db.connect().unwrap();
    let snapshots = i64::try_from(MARKETS).unwrap();

    // Run 1: capture, then SIGKILL once the first rows of a large step are committed.
    let mut run1 = KdpProcess::gatherer(&config, dir.path(), "run1");
    run1.wait("run 1's initial snapshots", || snapshots_after(&mut client, 0) >= snapshots);
    let conns1: BTreeSet<u64> = sim.conns().into_iter().collect();
    flow(&sim, &mut replica, &mut run1, &mut client, 0, 0, 3);
    let before = i64::try_from(replica.expected()).unwrap();
    let exch_seq = sim.advance(5_000);
    replica.run_to(exch_seq);
    run1.wait("the first rows of the last step", || data_rows_after(&mut client, 0) > before);
    run1.kill();
    let sent1 = replica.expected();
    let last1 = last_committed(&mut client);
    let stored1 = data_rows_after(&mut client, 0);
    println!("run 1: {sent1} data frames sent, {stored1} stored, last gseq {last1}");
    wait_for("the simulator to drop run 1's connections", || {
        sim.conns().iter().all(|c| !conns1.contains(c))
    });

    // Run 2: a crash gap, then everything sent from its subscription on; SIGTERM.
    let mut run2 = KdpProcess::gatherer(&config, dir.path(), "run2");
    run2.wait("run 2's gap and initial snapshots", || {
        gaps_after(&mut client, 0) == 1 && snapshots_after(&mut client, last1 + 1) >= snapshots
    });
    let conns2: BTreeSet<u64> = sim.conns().into_iter().collect();
    flow(&sim, &mut replica, &mut run2, &mut client, last1 + 1, sent1, 3);
    let sent2 = replica.expected();
    println!("run 2 stopped:\n{}", run2.terminate());
    let last2 = last_committed(&mut client);

    // Run 3: after a clean stop, a restart gap; SIGTERM.
    let mut run3 = KdpProcess::gatherer(&config, dir.path(), "run3");
    run3.wait("run 3's gap and initial snapshots", || {
        gaps_after(&mut client, 0) == 2 && snapshots_after(&mut client, last2 + 1) >= snapshots
    });
    let conns3: BTreeSet<u64> = sim.conns().into_iter().collect();
    flow(&sim, &mut replica, &mut run3, &mut client, last2 + 1, sent2, 2);
    println!("run 3 stopped:\n{}", run3.terminate());
    let last3 = last_committed(&mut client);
    let truth = sim.finish();

    // gseq: 1..=n, no hole, no reuse; each run resumes right after the last committed gseq.
    assert_gseq_contiguous(&mut client);
    let rows = conn_rows(&mut client);
    assert_eq!(rows.last().map(|r| r.0), Some(last3));
    let runs: Vec<(i64, Option<i64>)> = client
        .query("SELECT first_gseq, last_gseq FROM run ORDER BY run_id", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(runs, [(1, None), (last1 + 1, Some(last2)), (last2 + 1, Some(last3))]);
    let first_recv_after = |gseq: i64| rows.iter().find(|r| r.0 > gseq).map(|r| r.2).unwrap();
    let gaps = gaps(&mut client);
    println!("gaps {gaps:?}");
    assert_eq!(gaps.len(), 2, "no faults: only the two restart gaps");
    assert_eq!(rows.iter().find(|r| r.0 > last1).map(|r| r.0), Some(last1 + 2));
    assert_eq!(rows.iter().find(|r| r.0 > last2).map(|r| r.0), Some(last2 + 2));
    check_gap(&mut client, &gaps[0], "crash", (1, last1), first_recv_after(last1 + 1), &markets);
    check_gap(
        &mut client,
        &gaps[1],
        "restart",
        (last1 + 1, last2),
        first_recv_after(last2 + 1),
        &markets,
    );

    // Events: per run, what each simulator connection was delivered against what is stored.
    assert!(truth.duplicates.is_empty() && truth.withheld.is_empty(), "no faults injected");
    let all: BTreeSet<u64> = conns1.iter().chain(&conns2).chain(&conns3).copied().collect();
    assert_eq!(truth.by_conn.keys().copied().collect::<BTreeSet<_>>(), all);
    let row_of: HashMap<u64, &Row> =
        truth.delivered.values().flatten().map(|(s, row)| (*s, row)).collect();
    let stored = stored_rows(&mut client);
    assert!(stored.keys().all(|m| markets.contains(m)), "only subscribed markets are stored");
    let segment = |lo: i64, hi: i64| -> BTreeMap<&str, Vec<&Row>> {
        let mut by_market: BTreeMap<&str, Vec<&Row>> = BTreeMap::new();
        for (m, rows) in &stored {
            by_market
                .entry(m)
                .or_default()
                .extend(rows.iter().filter(|(g, _)| *g >= lo && *g <= hi).map(|(_, row)| row));
        }
        by_market
    };
    let delivered = |conns: &BTreeSet<u64>| -> Vec<(u64, Vec<(&str, u64)>)> {
        conns
            .iter()
            .map(|c| (*c, truth.by_conn[c].iter().map(|(m, s)| (m.as_str(), *s)).collect()))
            .collect()
    };
    // Run 1: per connection, the stored events are a prefix of its delivery log.
    let kept = segment(1, last1);
    let mut lost = 0;
    for (conn, log) in delivered(&conns1) {
        let mut next: HashMap<&str, usize> = HashMap::new();
        let mut tail = false;
        for (market, s) in log {
            let i = next.entry(market).or_default();
            let row = kept.get(market).and_then(|rows| rows.get(*i));
            *i += 1;
            match row {
                Some(row) => {
                    assert!(!tail, "conn {conn}: event {s} of {market} stored after a lost one");
                    assert_eq!(*row, row_of[&s], "conn {conn}: {market}'s events in order");
                }
                None => {
                    tail = true;
                    lost += 1;
                }
            }
        }
        for (market, n) in next {
            let stored_n = kept.get(market).map_or(0, Vec::len);
            assert!(stored_n <= n, "{market}: {stored_n} stored of {n} delivered on conn {conn}");
        }
    }
    let delivered1: usize = conns1.iter().map(|c| truth.by_conn[c].len()).sum();
    println!("run 1: {delivered1} events delivered, {lost} lost in the uncommitted tail");
    assert_eq!(i64::try_from(delivered1 - lost).unwrap(), stored1);
    assert!(u64::try_from(delivered1).unwrap() <= sent1);
    // Runs 2 and 3: exactly what was delivered, once, per market in delivery order.
    for (conns, lo, hi) in [(&conns2, last1 + 2, last2), (&conns3, last2 + 2, last3)] {
        let kept = segment(lo, hi);
        let mut want: BTreeMap<&str, Vec<&Row>> = BTreeMap::new();
        for (_, log) in delivered(conns) {
            for (market, s) in log {
                want.entry(market).or_default().push(row_of[&s]);
            }
        }
        for m in &markets {
            let got = kept.get(m.as_str()).cloned().unwrap_or_default();
            let exp = want.get(m.as_str()).cloned().unwrap_or_default();
            assert_eq!(got, exp, "market {m}, gseq {lo}..={hi}: stored = delivered");
        }
        let n: usize = want.values().map(Vec::len).sum();
        assert!(n > 500, "the run delivered enough events to mean something: {n}");
    }
}
