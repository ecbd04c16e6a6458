//! The gatherer against the simulator, end to end: 2 shards, ~20 markets over several wss
//! connections with the signed Ed25519 handshake, into a real PostgreSQL database.
//!
//! The simulator runs on its own tokio runtime with a manual clock and records its ground truth
//! (every exchange event, and what each connection was delivered). After the run, the gatherer
//! database must hold exactly the delivered events, per market in delivery order, with gseq
//! strictly increasing; with frames withheld (`drop_next` through the control endpoint) every
//! loss must lie inside a recorded gap and be followed by a resync snapshot. Every wait is on an
//! observable condition (simulator counters, gatherer counters, database rows) with a deadline.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod gatherer_support;

use gatherer_support::{
    MARKETS, Run, assert_gseq_contiguous, assert_stored_equals_delivered, assert_withheld_in_gaps,
    flow, start, wait_resynced,
};

#[test]
fn without_faults_the_database_holds_exactly_what_was_delivered() {
    let mut run = start(0x6761_7468_6572_0001, &["orderbook_delta", "trade", "ticker"]);
    flow(&mut run, 10, 1_000);
    let Run { sim, db, gatherer, markets, .. } = run;
    let stats = gatherer.shutdown().unwrap();
    println!("gatherer stats {stats:?}");
    assert_eq!(stats.writer.rows.gap, 0, "no faults, no gaps");
    assert_eq!(stats.writer.rows.total(), stats.records());
    assert_eq!(stats.fatal(), None);
    let truth = sim.finish();
    assert!(truth.withheld.is_empty());
    assert!(truth.duplicates.is_empty());
    let mut client = db.connect().unwrap();
    assert_stored_equals_delivered(&truth, &mut client, &markets);
    assert_gseq_contiguous(&mut client);
    let snapshots: i64 = client.query_one("SELECT count(*) FROM snapshot", &[]).unwrap().get(0);
    assert_eq!(snapshots, MARKETS as i64, "one initial snapshot per market, no resyncs");
}

#[test]
fn withheld_frames_lie_inside_gaps_and_are_resynced() {
    let mut run = start(0x6761_7468_6572_0002, &["orderbook_delta"]);
    flow(&mut run, 3, 1_000);
    let conns = run.sim.conns();
    for conn in conns.iter().take(2) {
        run.sim.control("/faults/drop_next", &format!("{{\"conn\":{conn},\"frames\":3}}"));
    }
    flow(&mut run, 8, 1_000);
    // Every gap's markets get a resync snapshot after it.
    wait_resynced(&mut run);
    let Run { sim, db, gatherer, markets, .. } = run;
    let stats = gatherer.shutdown().unwrap();
    println!("gatherer stats {stats:?}");
    assert!(stats.writer.rows.gap >= 2, "both faulted connections reported a gap: {stats:?}");
    let truth = sim.finish();
    assert_eq!(truth.withheld.len(), 6, "3 frames withheld on each of 2 connections");
    let mut client = db.connect().unwrap();
    let gseq_of = assert_stored_equals_delivered(&truth, &mut client, &markets);
    assert_gseq_contiguous(&mut client);
    assert_withheld_in_gaps(&truth, &mut client, &gseq_of);
}
