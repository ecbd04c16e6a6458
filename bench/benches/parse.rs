//! Frame parse + normalize throughput: kdp's simd-json tape parser against typed serde_json and
//! sonic-rs parsers (naive and tuned), on the same seeded frames, after checking all five read
//! every frame the same. See BENCHMARKS.md for the command and the figures.
//!
//! Per frame type (`delta`, `trade`, `ticker`, `snapshot`) one group times, over the whole frame
//! set per iteration:
//! - `kdp_simd_json`: `FrameParser::parse` (copy, tape, read, normalize),
//! - `serde_json_naive` / `sonic_rs_naive`: the idiomatic client parser of
//!   `kdp_bench::baseline::naive` (`#[serde(tag = "type")]` enum, owned strings),
//! - `serde_json_tuned` / `sonic_rs_tuned`: the one-pass borrowing parser of
//!   `kdp_bench::baseline`,
//!
//! and the `delta` group also times
//! - `tape_only`: copy + `simd_json::fill_tape_padded`, no message reading (kdp's fixed cost),
//! - `tape_in_place`: `fill_tape_padded` on pre-padded frames, without the copy.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kdp_bench::baseline::naive::{SerdeJsonNaiveParser, SonicNaiveParser};
use kdp_bench::baseline::{SerdeJsonTunedParser, SonicTunedParser};
use kdp_bench::check::parsers_agree;
use kdp_bench::frames::{FrameSet, Generated, SEED};
use kdp_bench::stages::{TapeInPlace, TapeOnly, padded};
use kdp_ingest::wire::FrameParser;

/// Times the five parsers on `frames`, and with `stages` the two partial pipelines too.
fn group(c: &mut Criterion, name: &str, frames: &[Generated], stages: bool) {
    let bytes: Vec<&[u8]> = frames.iter().map(|g| g.frame.as_slice()).collect();
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(bytes.len() as u64));

    group.bench_function("kdp_simd_json", |b| {
        let mut parser = FrameParser::new();
        b.iter(|| {
            for f in &bytes {
                black_box(parser.parse(black_box(f)).is_ok());
            }
        });
    });
    // One function per baseline parser type: each `parse` borrows its parser differently.
    macro_rules! baseline {
        ($name:literal, $parser:ty) => {
            group.bench_function($name, |b| {
                let mut parser = <$parser>::default();
                b.iter(|| {
                    for f in &bytes {
                        black_box(parser.parse(black_box(f)).is_ok());
                    }
                });
            });
        };
    }
    baseline!("serde_json_naive", SerdeJsonNaiveParser);
    baseline!("sonic_rs_naive", SonicNaiveParser);
    baseline!("serde_json_tuned", SerdeJsonTunedParser);
    baseline!("sonic_rs_tuned", SonicTunedParser);
    if !stages {
        group.finish();
        return;
    }
    group.bench_function("tape_only", |b| {
        let mut stage = TapeOnly::default();
        b.iter(|| {
            for f in &bytes {
                black_box(stage.run(black_box(f)));
            }
        });
    });
    group.bench_function("tape_in_place", |b| {
        let mut stage = TapeInPlace::default();
        let mut bufs: Vec<(Vec<u8>, usize)> = bytes.iter().map(|f| (padded(f), f.len())).collect();
        b.iter(|| {
            for (buf, len) in &mut bufs {
                black_box(stage.run(black_box(buf), *len));
            }
        });
        // The in-place parse must not have changed a frame (no escapes to undo).
        assert!(bufs.iter().zip(&bytes).all(|((buf, len), f)| &buf[..*len] == *f));
    });
    group.finish();
}

fn parse(c: &mut Criterion) {
    let set = FrameSet::generate(SEED);
    // Correctness before timing: every parser must read every frame as generated.
    match parsers_agree(&set) {
        Ok(n) => eprintln!("seed {SEED:#x}: all parsers agree on {n} frames"),
        Err(e) => panic!("parsers disagree, refusing to time them: {e}"),
    }
    group(c, "delta", &set.deltas, true);
    group(c, "trade", &set.trades, false);
    group(c, "ticker", &set.tickers, false);
    group(c, "snapshot", &set.snapshots, false);
}

criterion_group!(benches, parse);
criterion_main!(benches);
