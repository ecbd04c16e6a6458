//! HdrHistogram interval logs: every interval's merged histograms, one line per histogram,
//! in the standard log format (V2 deflate-compressed, base64, `Tag=` per metric), readable by
//! HistogramLogAnalyzer, `hdr-plot` and `hdrhistogram`'s own `IntervalLogIterator`.
//!
//! One run writes `PREFIX-<run start, unix s>-<index>.hlog` files in a directory, opening the
//! next index when the current file reaches [`IntervalLogConfig::file_bytes_max`] or
//! [`IntervalLogConfig::file_age_ms_max`], and deleting the run's oldest file beyond
//! [`IntervalLogConfig::files_max`]. Every file carries `#[StartTime]` and `#[BaseTime]` equal
//! to the run's start, so interval timestamps are seconds since the run started in every file
//! and the files of one run plot on one time axis. Values are in each metric's unit (µs for
//! latencies). The caller passes the time, so tests drive rotation without sleeping.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::interval_log::{
    IntervalLogIterator, IntervalLogWriterBuilder, LogEntry, Tag,
};
use hdrhistogram::serialization::{Deserializer, V2DeflateSerializer};

use super::TelemetryError;

/// Default size bound of one file: 64 MiB ≈ 9 hours of 3 histograms at ~2 KiB per second.
pub const FILE_BYTES_MAX_DEFAULT: u64 = 64 * 1024 * 1024;
/// Default age bound of one file: 1 hour, so an offline look at one incident opens one file.
pub const FILE_AGE_MS_MAX_DEFAULT: u64 = 3_600_000;
/// Default number of files kept per run: 48 (two days at the age bound, ≤ 3 GiB at the size bound).
pub const FILES_MAX_DEFAULT: usize = 48;

/// Where and how much to log.
#[derive(Debug, Clone)]
pub struct IntervalLogConfig {
    /// Directory for the files (must exist).
    pub dir: PathBuf,
    /// File name prefix, e.g. `gatherer-1`.
    pub prefix: String,
    /// Start the next file once the current one holds at least this many bytes.
    pub file_bytes_max: u64,
    /// Start the next file once the current one is this old.
    pub file_age_ms_max: u64,
    /// Delete this run's oldest file when more would be kept.
    pub files_max: usize,
}

impl IntervalLogConfig {
    /// Defaults for `dir` and `prefix`.
    pub fn new(dir: impl Into<PathBuf>, prefix: &str) -> Self {
        IntervalLogConfig {
            dir: dir.into(),
            prefix: prefix.to_owned(),
            file_bytes_max: FILE_BYTES_MAX_DEFAULT,
            file_age_ms_max: FILE_AGE_MS_MAX_DEFAULT,
            files_max: FILES_MAX_DEFAULT,
        }
    }
}

/// An open interval log of one run.
pub struct IntervalLog {
    config: IntervalLogConfig,
    run_start: SystemTime,
    interval_start: SystemTime,
    file: File,
    file_opened: SystemTime,
    file_bytes: u64,
    index: u32,
    files: VecDeque<PathBuf>,
    serializer: V2DeflateSerializer,
    line: Vec<u8>,
}

impl std::fmt::Debug for IntervalLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntervalLog")
            .field("config", &self.config)
            .field("files", &self.files)
            .field("file_bytes", &self.file_bytes)
            .finish_non_exhaustive()
    }
}

fn since(later: SystemTime, earlier: SystemTime) -> Duration {
    later.duration_since(earlier).unwrap_or(Duration::ZERO)
}

impl IntervalLog {
    /// Opens the run's first file; `run_start` is the run's start and the first interval's.
    pub fn create(
        config: IntervalLogConfig,
        run_start: SystemTime,
    ) -> Result<Self, TelemetryError> {
        assert!(config.files_max >= 1, "interval log files_max must be at least 1");
        let (file, path, bytes) = open(&config, run_start, 0)?;
        Ok(IntervalLog {
            config,
            run_start,
            interval_start: run_start,
            file,
            file_opened: run_start,
            file_bytes: bytes,
            index: 0,
            files: VecDeque::from([path]),
            serializer: V2DeflateSerializer::new(),
            line: Vec::new(),
        })
    }

    /// The files of this run still on disk, oldest first; the last is being written.
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(PathBuf::as_path)
    }

    /// Appends one interval ending at `now` (it began at the previous call, or the run start):
    /// one line per `(tag, histogram)`. Rotates first if the current file is full or old.
    pub fn write_interval(
        &mut self,
        now: SystemTime,
        histograms: &[(String, Histogram<u64>)],
    ) -> Result<(), TelemetryError> {
        let age_ms = since(now, self.file_opened).as_millis();
        if self.file_bytes >= self.config.file_bytes_max
            || age_ms >= u128::from(self.config.file_age_ms_max)
        {
            self.rotate(now)?;
        }
        let start = since(self.interval_start, self.run_start);
        let duration = since(now, self.interval_start);
        self.line.clear();
        {
            let mut writer = IntervalLogWriterBuilder::new()
                .begin_log_with(&mut self.line, &mut self.serializer)
                .map_err(|e| io_error(&self.files, e))?;
            for (tag, h) in histograms {
                let tag_ok = Tag::new(tag);
                assert!(
                    tag_ok.is_some(),
                    "interval log tag {tag:?} holds ',', space or a line break"
                );
                writer.write_histogram(h, start, duration, tag_ok).map_err(|e| {
                    TelemetryError::Serialize { tag: tag.clone(), reason: e.to_string() }
                })?;
            }
        }
        self.file.write_all(&self.line).map_err(|e| io_error(&self.files, e))?;
        self.file_bytes = self.file_bytes.saturating_add(self.line.len() as u64);
        self.interval_start = now;
        Ok(())
    }

    fn rotate(&mut self, now: SystemTime) -> Result<(), TelemetryError> {
        let index = self.index.saturating_add(1);
        let (file, path, bytes) = open(&self.config, self.run_start, index)?;
        self.file = file;
        self.file_opened = now;
        self.file_bytes = bytes;
        self.index = index;
        self.files.push_back(path);
        while self.files.len() > self.config.files_max {
            if let Some(old) = self.files.pop_front() {
                std::fs::remove_file(&old)
                    .map_err(|source| TelemetryError::LogIo { path: old, source })?;
            }
        }
        Ok(())
    }
}

/// One interval line of a log, read back.
#[derive(Debug, Clone)]
pub struct LoggedInterval {
    /// The histogram's tag (metric name, with `{labels}` when it has some).
    pub tag: String,
    /// Interval start, relative to the log's base time (the run's start).
    pub start: Duration,
    /// Interval length.
    pub duration: Duration,
    /// The interval's histogram.
    pub histogram: Histogram<u64>,
}

/// A log file read back with `hdrhistogram`'s own `IntervalLogIterator`.
#[derive(Debug, Clone, Default)]
pub struct LogContents {
    /// `#[StartTime: ...]`, seconds since the epoch.
    pub start_time: Option<Duration>,
    /// `#[BaseTime: ...]`, seconds since the epoch.
    pub base_time: Option<Duration>,
    /// Every interval line, in file order.
    pub intervals: Vec<LoggedInterval>,
}

/// Parses the text of an interval log file (for tests and offline checks); the first line that
/// does not parse is the error.
pub fn read(bytes: &[u8]) -> Result<LogContents, String> {
    let mut out = LogContents::default();
    let mut de = Deserializer::new();
    for entry in IntervalLogIterator::new(bytes) {
        match entry.map_err(|e| format!("interval log does not parse: {e:?}"))? {
            LogEntry::StartTime(t) => out.start_time = Some(t),
            LogEntry::BaseTime(t) => out.base_time = Some(t),
            LogEntry::Interval(i) => {
                let raw = STANDARD
                    .decode(i.encoded_histogram())
                    .map_err(|e| format!("interval histogram is not base64: {e}"))?;
                let histogram: Histogram<u64> = de
                    .deserialize(&mut raw.as_slice())
                    .map_err(|e| format!("interval histogram does not decode: {e:?}"))?;
                out.intervals.push(LoggedInterval {
                    tag: i.tag().map(|t| t.as_str().to_owned()).unwrap_or_default(),
                    start: i.start_timestamp(),
                    duration: i.duration(),
                    histogram,
                });
            }
        }
    }
    Ok(out)
}

fn io_error(files: &VecDeque<PathBuf>, source: std::io::Error) -> TelemetryError {
    TelemetryError::LogIo { path: files.back().cloned().unwrap_or_default(), source }
}

fn open(
    config: &IntervalLogConfig,
    run_start: SystemTime,
    index: u32,
) -> Result<(File, PathBuf, u64), TelemetryError> {
    let run_s = since(run_start, SystemTime::UNIX_EPOCH).as_secs();
    let path = config.dir.join(format!("{}-{run_s}-{index:04}.hlog", config.prefix));
    let fail = |source| TelemetryError::LogIo { path: path.clone(), source };
    let mut file = File::create_new(&path).map_err(fail)?;
    let mut header = Vec::new();
    let mut serializer = V2DeflateSerializer::new();
    IntervalLogWriterBuilder::new()
        .add_comment(&format!("[Logged with kdp {}]", env!("CARGO_PKG_VERSION")))
        .add_comment("[Histogram log format version 1.3]")
        .with_start_time(run_start)
        .with_base_time(run_start)
        .begin_log_with(&mut header, &mut serializer)
        .map_err(fail)?;
    header.extend_from_slice(
        b"\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"\n",
    );
    file.write_all(&header).map_err(fail)?;
    Ok((file, path, header.len() as u64))
}
