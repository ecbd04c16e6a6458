//! Prometheus text exposition format 0.0.4 of a [`Merged`] state.
//!
//! Counters (`_total`) are sums over recorders. Gauges carry a `shard` label naming their
//! recorder. Histograms are exported as summaries — quantiles 0.5, 0.9, 0.99, 0.999 of the whole
//! run, computed from the merged HdrHistogram, plus exact `_sum` and `_count` — rather than
//! Prometheus buckets: the HdrHistogram already has bounded relative error at every quantile,
//! and fixed buckets would coarsen exactly the tail (p99.9) the targets are stated in. Empty
//! histograms export `NaN` quantiles, as Prometheus client libraries do.

use std::fmt::Write as _;

use super::metrics::{Merged, Schema, Series};

/// Quantiles exported for every histogram.
pub const SUMMARY_QUANTILES: [(&str, f64); 4] =
    [("0.5", 0.5), ("0.9", 0.9), ("0.99", 0.99), ("0.999", 0.999)];

/// The `Content-Type` of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

fn escape_label_value(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_help(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn header(out: &mut String, last: &mut Option<&'static str>, series: &Series, kind: &str) {
    if *last == Some(series.name) {
        return;
    }
    *last = Some(series.name);
    out.push_str("# HELP ");
    out.push_str(series.name);
    out.push(' ');
    escape_help(out, series.help);
    out.push('\n');
    // Writes to a String cannot fail.
    let _ = writeln!(out, "# TYPE {} {kind}", series.name);
}

fn sample(
    out: &mut String,
    name: &str,
    suffix: &str,
    first: Option<(&str, &str)>,
    labels: &[(&'static str, String)],
    last: Option<(&str, &str)>,
    value: &str,
) {
    out.push_str(name);
    out.push_str(suffix);
    let pairs = first.into_iter().chain(labels.iter().map(|(k, v)| (*k, v.as_str()))).chain(last);
    let mut open = false;
    for (k, v) in pairs {
        out.push(if open { ',' } else { '{' });
        open = true;
        out.push_str(k);
        out.push_str("=\"");
        escape_label_value(out, v);
        out.push('"');
    }
    if open {
        out.push('}');
    }
    out.push(' ');
    out.push_str(value);
    out.push('\n');
}

/// Renders `merged` (which must come from `schema`). Series of one family are adjacent because
/// the output follows declaration order grouped by name.
pub fn render(schema: &Schema, merged: &Merged) -> String {
    let mut out = String::new();
    let mut last = None;
    for (i, series) in grouped(&schema.counters) {
        header(&mut out, &mut last, series, "counter");
        let v = merged.counters[i].to_string();
        sample(&mut out, series.name, "", None, &series.labels, None, &v);
    }
    for (i, series) in grouped(&schema.gauges) {
        header(&mut out, &mut last, series, "gauge");
        for (source, values) in &merged.gauges {
            let v = values[i].to_string();
            let shard = Some(("shard", source.as_str()));
            sample(&mut out, series.name, "", shard, &series.labels, None, &v);
        }
    }
    let histogram_series: Vec<Series> = schema.histograms.iter().map(|(_, s)| s.clone()).collect();
    for (i, series) in grouped(&histogram_series) {
        header(&mut out, &mut last, series, "summary");
        let h = &merged.histograms[i];
        for (label, q) in SUMMARY_QUANTILES {
            let v =
                if h.is_empty() { "NaN".to_owned() } else { h.value_at_quantile(q).to_string() };
            sample(&mut out, series.name, "", None, &series.labels, Some(("quantile", label)), &v);
        }
        let sum = merged.sums[i].to_string();
        sample(&mut out, series.name, "_sum", None, &series.labels, None, &sum);
        let count = h.len().to_string();
        sample(&mut out, series.name, "_count", None, &series.labels, None, &count);
    }
    out
}

/// Series indices in declaration order, with all series of a family moved next to its first.
fn grouped(series: &[Series]) -> Vec<(usize, &Series)> {
    let mut order: Vec<(usize, &Series)> = Vec::with_capacity(series.len());
    for (i, s) in series.iter().enumerate() {
        if order.iter().any(|(_, o)| o.name == s.name) {
            continue;
        }
        order.extend(series.iter().enumerate().skip(i).filter(|(_, o)| o.name == s.name));
    }
    order
}
