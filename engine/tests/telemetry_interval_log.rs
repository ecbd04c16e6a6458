//! HdrHistogram interval logs: read back by the crate's own `IntervalLogIterator` with exact
//! counts; rotation by size and by age with the run's file bound.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use kdp_engine::telemetry::interval_log::{IntervalLog, IntervalLogConfig};
use kdp_engine::telemetry::metrics::{EXCH_TO_RECV_US, FRAME_RECV_TO_COMMIT_US};
use kdp_engine::telemetry::{SchemaBuilder, Telemetry};

fn run_start() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn secs(s: u64) -> SystemTime {
    run_start() + Duration::from_secs(s)
}

struct Read {
    start_time_s: Option<Duration>,
    base_time_s: Option<Duration>,
    /// (tag, start since base, duration, histogram)
    intervals: Vec<(String, Duration, Duration, Histogram<u64>)>,
}

fn read(path: &std::path::Path) -> Read {
    let bytes = std::fs::read(path).expect("read log");
    let mut out = Read { start_time_s: None, base_time_s: None, intervals: Vec::new() };
    let mut de = Deserializer::new();
    for entry in IntervalLogIterator::new(&bytes) {
        match entry.expect("log parses") {
            LogEntry::StartTime(t) => out.start_time_s = Some(t),
            LogEntry::BaseTime(t) => out.base_time_s = Some(t),
            LogEntry::Interval(i) => {
                let raw = STANDARD.decode(i.encoded_histogram()).expect("base64");
                let h: Histogram<u64> = de.deserialize(&mut raw.as_slice()).expect("histogram");
                let tag = i.tag().map(|t| t.as_str().to_owned()).unwrap_or_default();
                out.intervals.push((tag, i.start_timestamp(), i.duration(), h));
            }
        }
    }
    out
}

#[test]
fn interval_log_round_trips_through_the_crates_reader() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut schema = SchemaBuilder::new();
    let commit = schema.histogram(FRAME_RECV_TO_COMMIT_US, &[]);
    let exch = schema.histogram(EXCH_TO_RECV_US, &[("channel", "order book")]);
    let mut t = Telemetry::new(schema.build());
    let exporter = t.exporter();
    let mut shards: Vec<_> = (0..2).map(|i| t.recorder(&i.to_string(), 0)).collect();
    let mut log =
        IntervalLog::create(IntervalLogConfig::new(dir.path(), "gatherer-1"), run_start())
            .expect("create");

    let mut expected = Vec::new();
    for second in 1..=3u64 {
        let mut want = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("h");
        for (i, r) in shards.iter_mut().enumerate() {
            for v in 0..(100 * second) {
                let value = 1 + v * 997 * (i as u64 + 1);
                r.record(commit, value);
                want.record(value).expect("in range");
            }
            r.record(exch, 5_000 * second);
            r.publish(second * 1_000_000_000);
        }
        log.write_interval(secs(second), &exporter.take_interval()).expect("write");
        expected.push(want);
    }

    let files: Vec<_> = log.files().map(|p| p.to_owned()).collect();
    assert_eq!(files.len(), 1);
    assert_eq!(
        files[0].file_name().and_then(|n| n.to_str()),
        Some("gatherer-1-1800000000-0000.hlog")
    );
    let text = std::fs::read_to_string(&files[0]).expect("text");
    assert!(text.contains("#[StartTime: 1800000000.000 (seconds since epoch)]\n"), "{text}");
    assert!(text.contains("#[BaseTime: 1800000000.000 (seconds since epoch)]\n"), "{text}");
    // V2 deflate-compressed encoding ("HISTF..." in base64) as the Java tools write it.
    assert!(text.contains(",HISTF"), "{text}");

    let back = read(&files[0]);
    assert_eq!(back.start_time_s, Some(Duration::from_secs(1_800_000_000)));
    assert_eq!(back.base_time_s, Some(Duration::from_secs(1_800_000_000)));
    assert_eq!(back.intervals.len(), 6);
    for (second, want) in (1..=3u64).zip(&expected) {
        let idx = usize::try_from(second - 1).expect("small") * 2;
        let (tag, start, duration, h) = &back.intervals[idx];
        assert_eq!(tag, "kdp_frame_recv_to_commit_us");
        assert_eq!(*start, Duration::from_secs(second - 1));
        assert_eq!(*duration, Duration::from_secs(1));
        assert_eq!(h.len(), 2 * 100 * second);
        // Exactly the recorded counts, bucket for bucket.
        assert_eq!(h, want);
        let (tag, _, _, h) = &back.intervals[idx + 1];
        assert_eq!(tag, "kdp_exch_to_recv_us{channel=order_book}");
        assert_eq!(h.len(), 2);
        assert_eq!(h.count_at(5_000 * second), 2);
    }
}

fn one_interval() -> Vec<(String, Histogram<u64>)> {
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("h");
    h.record(1234).expect("record");
    vec![("kdp_frame_recv_to_commit_us".to_owned(), h)]
}

#[test]
fn rotates_by_age_and_keeps_at_most_files_max() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = IntervalLogConfig::new(dir.path(), "g");
    config.file_age_ms_max = 10_000;
    config.files_max = 2;
    let mut log = IntervalLog::create(config, run_start()).expect("create");
    // Seconds 1..=9 stay in file 0; 10 opens file 1; 20 opens file 2 and deletes file 0.
    for s in 1..=25 {
        log.write_interval(secs(s), &one_interval()).expect("write");
    }
    let names: Vec<String> = log
        .files()
        .map(|p| p.file_name().and_then(|n| n.to_str()).unwrap_or("").to_owned())
        .collect();
    assert_eq!(names, ["g-1800000000-0001.hlog", "g-1800000000-0002.hlog"]);
    let mut on_disk: Vec<String> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    assert_eq!(on_disk, names);
    let files: Vec<_> = log.files().map(|p| p.to_owned()).collect();
    let first = read(&files[0]);
    let second = read(&files[1]);
    // File 1 holds the intervals ending at 10..=19, file 2 those ending at 20..=25; both keep
    // the run's time base, so interval starts continue across files.
    assert_eq!(first.intervals.len(), 10);
    assert_eq!(first.intervals[0].1, Duration::from_secs(9));
    assert_eq!(second.intervals.len(), 6);
    assert_eq!(second.intervals[0].1, Duration::from_secs(19));
    assert_eq!(second.base_time_s, Some(Duration::from_secs(1_800_000_000)));
    for (_, _, _, h) in first.intervals.iter().chain(&second.intervals) {
        assert_eq!(h.len(), 1);
        assert_eq!(h.count_at(1234), 1);
    }
}

#[test]
fn rotates_by_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = IntervalLogConfig::new(dir.path(), "g");
    // The header alone is under 400 bytes; each interval line adds some tens of bytes.
    config.file_bytes_max = 400;
    let mut log = IntervalLog::create(config, run_start()).expect("create");
    for s in 1..=20 {
        log.write_interval(secs(s), &one_interval()).expect("write");
    }
    let files: Vec<_> = log.files().map(|p| p.to_owned()).collect();
    assert!(files.len() >= 2, "{files:?}");
    let mut total = 0;
    for (i, f) in files.iter().enumerate() {
        let len = std::fs::metadata(f).expect("meta").len();
        let intervals = read(f).intervals.len();
        assert!(intervals >= 1);
        // A file is closed at the first write that finds it at or over the bound, so only its
        // last line may cross it.
        if i + 1 < files.len() {
            let text = std::fs::read_to_string(f).expect("text");
            let last_line = text.trim_end().rsplit('\n').next().unwrap_or("").len() as u64 + 1;
            assert!(len >= 400, "{f:?} rotated at {len} bytes");
            assert!(len - last_line < 400, "{f:?} should have rotated before its last line");
        }
        total += intervals;
    }
    assert_eq!(total, 20);
}
