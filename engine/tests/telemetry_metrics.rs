//! Telemetry metrics: per-thread recorders merged exactly; the Prometheus text for a known state.

use std::thread;

use kdp_engine::telemetry::metrics::{EXCH_TO_RECV_US, FRAME_RECV_TO_COMMIT_US};
use kdp_engine::telemetry::{
    CounterId, GaugeId, HistogramId, PUBLISH_INTERVAL_NS, PUBLISH_QUEUE_CAPACITY, PublishOutcome,
    SchemaBuilder, Telemetry,
};

struct Ids {
    frames: CounterId,
    deltas: CounterId,
    trades: CounterId,
    ring: GaugeId,
    commit: HistogramId,
    exch: HistogramId,
}

fn telemetry() -> (Telemetry, Ids) {
    let mut s = SchemaBuilder::new();
    let ids = Ids {
        frames: s.counter("kdp_frames_total", "Frames received.", &[]),
        deltas: s.counter("kdp_events_total", "Events by type.", &[("type", "delta")]),
        trades: s.counter("kdp_events_total", "Events by type.", &[("type", "trade")]),
        ring: s.gauge("kdp_ring_occupancy_records", "Records in the shard's ring.", &[]),
        commit: s.histogram(FRAME_RECV_TO_COMMIT_US, &[]),
        exch: s.histogram(EXCH_TO_RECV_US, &[]),
    };
    (Telemetry::new(s.build()), ids)
}

#[test]
fn three_threads_merge_to_exact_totals_and_quantiles() {
    let (mut t, ids) = telemetry();
    let exporter = t.exporter();
    let recorders: Vec<_> = (0..3).map(|i| t.recorder(&i.to_string(), 0)).collect();
    let handles: Vec<_> = recorders
        .into_iter()
        .enumerate()
        .map(|(i, mut r)| {
            let ids = Ids { ..ids };
            thread::spawn(move || {
                // Two publication intervals per thread: the second publishes only what was
                // recorded after the first, and counters are cumulative.
                for v in 1..=500u64 {
                    r.incr(ids.frames);
                    r.record(ids.commit, v);
                }
                assert_eq!(r.publish_if_due(PUBLISH_INTERVAL_NS - 1), None);
                assert_eq!(r.publish_if_due(PUBLISH_INTERVAL_NS), Some(PublishOutcome::Sent));
                for v in 501..=1000u64 {
                    r.incr(ids.frames);
                    r.record(ids.commit, v);
                }
                r.add(ids.deltas, 10 * (i as u64 + 1));
                r.add(ids.trades, 7);
                r.set(ids.ring, 100 + i as i64);
                r.record(ids.exch, 2_000_000_000); // above the 600 s bound: clamped
                assert_eq!(r.publish(2 * PUBLISH_INTERVAL_NS), PublishOutcome::Sent);
            })
        })
        .collect();
    for h in handles {
        h.join().expect("recorder thread");
    }
    let m = exporter.merged();
    assert_eq!(m.counters, vec![3000, 60, 21]);
    assert_eq!(
        m.gauges,
        vec![("0".to_owned(), vec![100]), ("1".to_owned(), vec![101]), ("2".to_owned(), vec![102])]
    );
    let commit = &m.histograms[0];
    assert_eq!(commit.len(), 3000);
    // Every value 1..=1000 three times; values below 2048 are exact at 3 significant figures.
    assert_eq!(commit.value_at_quantile(0.5), 500);
    assert_eq!(commit.value_at_quantile(0.9), 900);
    assert_eq!(commit.value_at_quantile(0.99), 990);
    assert_eq!(commit.value_at_quantile(0.999), 999);
    assert_eq!(commit.min(), 1);
    assert_eq!(commit.max(), 1000);
    assert_eq!(m.sums[0], 3 * 500_500);
    assert_eq!(m.histograms[1].len(), 3);
    assert_eq!(m.sums[1], 3 * 600_000_000);
    assert!(m.histograms[1].equivalent(m.histograms[1].max(), 600_000_000));
}

#[test]
fn a_full_queue_defers_without_losing_anything() {
    let (mut t, ids) = telemetry();
    let exporter = t.exporter();
    let mut r = t.recorder("0", 0);
    for i in 0..PUBLISH_QUEUE_CAPACITY as u64 {
        r.record(ids.commit, 7);
        assert_eq!(r.publish(i), PublishOutcome::Sent);
    }
    r.record(ids.commit, 7);
    r.incr(ids.frames);
    assert_eq!(r.publish(100), PublishOutcome::Deferred);
    r.record(ids.commit, 7);
    exporter.drain();
    assert_eq!(r.publish(101), PublishOutcome::Sent);
    let m = exporter.merged();
    assert_eq!(m.histograms[0].len(), PUBLISH_QUEUE_CAPACITY as u64 + 2);
    assert_eq!(m.sums[0], 7 * (PUBLISH_QUEUE_CAPACITY as u64 + 2));
    assert_eq!(m.counters[0], 1);
}

#[test]
fn interval_histograms_are_taken_once() {
    let (mut t, ids) = telemetry();
    let exporter = t.exporter();
    let mut r = t.recorder("0", 0);
    r.record(ids.commit, 42);
    r.publish(1);
    let first = exporter.take_interval();
    assert_eq!(first[0].0, "kdp_frame_recv_to_commit_us");
    assert_eq!(first[0].1.len(), 1);
    let second = exporter.take_interval();
    assert_eq!(second[0].1.len(), 0);
    // The run total keeps it.
    assert_eq!(exporter.merged().histograms[0].len(), 1);
}

fn known_state_text() -> String {
    let (mut t, ids) = telemetry();
    let exporter = t.exporter();
    let mut a = t.recorder("0", 0);
    let mut b = t.recorder("writer", 0);
    a.add(ids.frames, 5);
    b.add(ids.frames, 2);
    a.add(ids.deltas, 3);
    a.set(ids.ring, 12);
    b.set(ids.ring, -1);
    for v in [100, 200, 300, 400] {
        a.record(ids.commit, v);
    }
    b.record(ids.commit, 1000);
    a.publish(1);
    b.publish(1);
    exporter.render_prometheus()
}

#[test]
fn prometheus_text_for_a_known_state() {
    let text = known_state_text();
    let expected = "\
# HELP kdp_frames_total Frames received.
# TYPE kdp_frames_total counter
kdp_frames_total 7
# HELP kdp_events_total Events by type.
# TYPE kdp_events_total counter
kdp_events_total{type=\"delta\"} 3
kdp_events_total{type=\"trade\"} 0
# HELP kdp_ring_occupancy_records Records in the shard's ring.
# TYPE kdp_ring_occupancy_records gauge
kdp_ring_occupancy_records{shard=\"0\"} 12
kdp_ring_occupancy_records{shard=\"writer\"} -1
# HELP kdp_frame_recv_to_commit_us Frame received to its rows committed locally, microseconds.
# TYPE kdp_frame_recv_to_commit_us summary
kdp_frame_recv_to_commit_us{quantile=\"0.5\"} 300
kdp_frame_recv_to_commit_us{quantile=\"0.9\"} 1000
kdp_frame_recv_to_commit_us{quantile=\"0.99\"} 1000
kdp_frame_recv_to_commit_us{quantile=\"0.999\"} 1000
kdp_frame_recv_to_commit_us_sum 2000
kdp_frame_recv_to_commit_us_count 5
# HELP kdp_exch_to_recv_us Exchange event time to frame received, microseconds (negative skew recorded as 0).
# TYPE kdp_exch_to_recv_us summary
kdp_exch_to_recv_us{quantile=\"0.5\"} NaN
kdp_exch_to_recv_us{quantile=\"0.9\"} NaN
kdp_exch_to_recv_us{quantile=\"0.99\"} NaN
kdp_exch_to_recv_us{quantile=\"0.999\"} NaN
kdp_exch_to_recv_us_sum 0
kdp_exch_to_recv_us_count 0
";
    assert_eq!(text, expected);
    check_exposition_format(&text);
}

/// A line-format check of the text format 0.0.4 (promtool is not installed here): every line
/// is a HELP or TYPE comment or a sample `name{label="value",...} value`, each family's TYPE
/// precedes its samples, summaries only add `_sum`/`_count`, and no family is declared twice.
pub fn check_exposition_format(text: &str) {
    let mut declared: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or("");
            assert!(valid_metric_name(name), "bad HELP line {line:?}");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let (name, kind) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            assert!(valid_metric_name(name), "bad TYPE line {line:?}");
            assert!(
                ["counter", "gauge", "summary", "histogram", "untyped"].contains(&kind),
                "bad type in {line:?}"
            );
            assert!(parts.next().is_none(), "extra tokens in {line:?}");
            assert!(!declared.iter().any(|(n, _)| n == name), "{name} declared twice");
            declared.push((name.to_owned(), kind.to_owned()));
        } else {
            assert!(!line.starts_with('#') && !line.is_empty(), "stray line {line:?}");
            let (series, value) = line.rsplit_once(' ').expect("sample has a value");
            assert!(
                value == "NaN" || value.parse::<i64>().is_ok() || value.parse::<u64>().is_ok(),
                "bad value in {line:?}"
            );
            let name = match series.split_once('{') {
                Some((name, labels)) => {
                    check_labels(labels.strip_suffix('}').expect("labels closed"), line);
                    name
                }
                None => series,
            };
            let (family, kind) = declared.last().expect("a TYPE line precedes samples");
            let ok = match kind.as_str() {
                "summary" => [family.clone(), format!("{family}_sum"), format!("{family}_count")]
                    .contains(&name.to_owned()),
                _ => name == family,
            };
            assert!(ok, "sample {name} is not of the current family {family}");
        }
    }
}

fn valid_metric_name(n: &str) -> bool {
    let mut c = n.chars();
    c.next().is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
}

fn check_labels(labels: &str, line: &str) {
    let mut rest = labels;
    while !rest.is_empty() {
        let (name, after) = rest.split_once("=\"").expect("label has =\"");
        assert!(valid_metric_name(name) && !name.contains(':'), "bad label name in {line:?}");
        let mut end = None;
        let mut escaped = false;
        for (i, ch) in after.char_indices() {
            match (escaped, ch) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let end = end.expect("label value closed");
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

#[test]
fn label_values_are_escaped() {
    let mut s = SchemaBuilder::new();
    let c = s.counter("kdp_x_total", "Help with \\ and\nnewline.", &[("k", "a\"b\\c\nd")]);
    let mut t = Telemetry::new(s.build());
    let mut r = t.recorder("0", 0);
    r.incr(c);
    r.publish(0);
    let text = t.exporter().render_prometheus();
    assert_eq!(
        text,
        "# HELP kdp_x_total Help with \\\\ and\\nnewline.\n# TYPE kdp_x_total counter\nkdp_x_total{k=\"a\\\"b\\\\c\\nd\"} 1\n"
    );
    check_exposition_format(&text);
}
