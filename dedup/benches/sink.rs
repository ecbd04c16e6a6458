//! Sink throughput against a plain binary COPY of the same rows into the same table, side by
//! side in one run, on an embedded PostgreSQL (the test cluster: ephemeral, `fsync=off` for
//! both contenders alike).
//!
//! - `plain_copy`: per batch, one transaction with one binary COPY into `delta` (its unique
//!   key in place), COMMIT — encoded with the same `engine::pg::copy` encoder the sink uses, so
//!   the comparison measures what the sink adds (cursor update, ledger, batch bookkeeping), not
//!   an encoder difference.
//! - `sink`: per batch, [`Sink::write`]: the same COPY plus the cursor update, COMMIT.
//!
//! Every iteration starts from empty tables (TRUNCATE, not timed) and writes `ROWS` unique
//! deltas in merge-sized batches. Checked before timing: both leave exactly `ROWS` rows.
//!
//! `cargo bench -p kdp-dedup --bench sink`

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kdp_dedup::limits::MergeLimits;
use kdp_dedup::merge::{Batch, Merged};
use kdp_dedup::row::Delta;
use kdp_dedup::sink::{Sink, SinkOptions, Written};
use kdp_engine::event::Side;
use kdp_engine::pg::copy::{BinaryCopyIn, CopyEncoder};
use kdp_engine::pg::testing::TestDatabase;

/// Unique rows written per iteration.
const ROWS: usize = 100_000;
/// Markets the rows spread over.
const MARKETS: usize = 1_000;

/// Merge-sized batches of unique deltas, time increasing, cursors advancing.
fn batches() -> Vec<Batch> {
    let markets: Vec<Arc<str>> =
        (0..MARKETS).map(|i| Arc::from(format!("KXBENCH-26JAN01-T{i:04}"))).collect();
    let batch_rows = MergeLimits::DEFAULT.batch_rows_max;
    let mut ts = 1_767_225_600_000_000_000i64;
    (0..ROWS)
        .collect::<Vec<_>>()
        .chunks(batch_rows)
        .map(|chunk| {
            let deltas = chunk
                .iter()
                .map(|&i| {
                    ts += 100_000;
                    Merged {
                        gatherer: (i % 3) as u8,
                        occ: 0,
                        row: Delta {
                            market: Arc::clone(&markets[(i * 7919) % MARKETS]),
                            side: if i % 2 == 0 { Side::Yes } else { Side::No },
                            price_micros: 10_000 * (1 + (i % 97) as u32),
                            delta_centi: 100 * (1 + (i % 5) as i64),
                            ts_exch_ns: ts,
                            ts_recv_ns: ts + 2_000_000,
                            client_order_id: None,
                        },
                    }
                })
                .collect();
            let last = *chunk.last().expect("non-empty chunk") as i64 + 1;
            let mut cursors = [None; 8];
            for cursor in cursors.iter_mut().take(3) {
                *cursor = Some(last);
            }
            Batch { deltas, cursors, ..Batch::default() }
        })
        .collect()
}

fn plain_copy(client: &mut postgres::Client, encoder: &mut CopyEncoder, batches: &[Batch]) {
    for batch in batches {
        let mut tx = client.transaction().expect("begin");
        let sink = tx
            .copy_in(
                "COPY delta (ts_exch_ns, market, side_yes, price_micros, delta_centi, occ, \
                 ts_recv_ns, gatherer, client_order_id) FROM STDIN (FORMAT binary)",
            )
            .expect("copy");
        let mut copy = BinaryCopyIn::new(sink, encoder);
        for m in &batch.deltas {
            let d = &m.row;
            let w = copy.row(9).expect("row");
            w.i64(d.ts_exch_ns).text(&d.market).bool(d.side == Side::Yes);
            w.i64(i64::from(d.price_micros))
                .i64(d.delta_centi)
                .i32(i32::try_from(m.occ).expect("occ fits int4"));
            w.i64(d.ts_recv_ns).i16(i16::from(m.gatherer));
            w.opt_text(d.client_order_id.as_deref());
        }
        copy.finish().expect("finish");
        tx.commit().expect("commit");
    }
}

fn through_sink(sink: &mut Sink, batches: &[Batch]) {
    for batch in batches {
        match sink.write(batch).expect("write") {
            Written::Direct { .. } => {}
            other => panic!("every row is new, yet {other:?}"),
        }
    }
}

fn reset(client: &mut postgres::Client) {
    client.batch_execute("TRUNCATE delta, dedup_cursor").expect("truncate");
}

fn rows(client: &mut postgres::Client) -> i64 {
    client.query_one("SELECT count(*) FROM delta", &[]).expect("count").get(0)
}

fn bench(c: &mut Criterion) {
    let db = TestDatabase::new().expect("embedded PostgreSQL");
    let mut sink = Sink::new(db.config(), SinkOptions { migrate: true });
    sink.read_cursors().expect("connect and migrate");
    let mut client = db.connect().expect("connect");
    let mut encoder = CopyEncoder::new();
    let batches = batches();

    reset(&mut client);
    plain_copy(&mut client, &mut encoder, &batches);
    assert_eq!(rows(&mut client), ROWS as i64);
    reset(&mut client);
    through_sink(&mut sink, &batches);
    assert_eq!(rows(&mut client), ROWS as i64);

    let mut group = c.benchmark_group("sink");
    group.throughput(Throughput::Elements(ROWS as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(15));
    group.bench_function("plain_copy", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                reset(&mut client);
                let start = Instant::now();
                plain_copy(&mut client, &mut encoder, &batches);
                total += start.elapsed();
            }
            total
        })
    });
    group.bench_function("sink", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                reset(&mut client);
                let start = Instant::now();
                through_sink(&mut sink, &batches);
                total += start.elapsed();
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
