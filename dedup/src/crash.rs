//! Named crash points: a **test-only** facility that makes `kdp dedup` die at an exact place in
//! a batch's life, so the crash tests (`tests/tests/dedup_crash.rs`) can prove that a kill at
//! any of them loses and duplicates nothing (DESIGN §4 invariant 4; issue 5 acceptance).
//!
//! | point | where the process dies |
//! |---|---|
//! | `mid_copy` | inside a binary COPY into a production table, after half its rows were handed to the driver (the server is in COPY IN state; its transaction is open) |
//! | `after_copy` | every COPY and the cursor upsert done, before COMMIT |
//! | `after_commit` | COMMIT acknowledged, before the merge thread uses the result (committed cursors, metrics) |
//!
//! The binary reads [`ENV_CRASH_AT`] once at start (`KDP_DEDUP_CRASH_AT=after_copy` or
//! `after_copy:3`: on the 3rd arrival at that point, counted from 1) and hands the parsed
//! [`CrashPoint`] in through [`crate::config::Checked::crash`]; [`crate::service::Dedup::start`]
//! arms it. Unset (production), nothing is armed and each hook is one atomic load of an empty
//! `OnceLock`. The process dies by [`std::process::abort`]: no destructor, no flush, no
//! `Terminate` message — the kernel closes the sockets exactly as after SIGKILL.
//!
//! The armed point is process-wide (a `OnceLock`): the process is what dies, and the hooks sit
//! deep in the sink's COPY path where threading a parameter through would touch every COPY
//! function. Only the first [`arm`] takes effect.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The environment variable the binary reads.
pub const ENV_CRASH_AT: &str = "KDP_DEDUP_CRASH_AT";

/// Where to die.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashAt {
    /// Inside a COPY into a production table (half its rows sent).
    MidCopy,
    /// After every COPY and the cursor upsert, before COMMIT.
    AfterCopy,
    /// After COMMIT, before the result is used.
    AfterCommit,
}

impl CrashAt {
    /// The name used in [`ENV_CRASH_AT`].
    pub fn name(self) -> &'static str {
        match self {
            CrashAt::MidCopy => "mid_copy",
            CrashAt::AfterCopy => "after_copy",
            CrashAt::AfterCommit => "after_commit",
        }
    }
}

/// A crash point and on which arrival (1-based) to die.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrashPoint {
    /// Where.
    pub at: CrashAt,
    /// On the nth arrival at `at` (1: the first).
    pub nth: u64,
}

impl CrashPoint {
    /// Parses `point` or `point:N` (see the module note).
    pub fn parse(text: &str) -> Result<CrashPoint, String> {
        let text = text.trim();
        let (name, nth) = match text.split_once(':') {
            Some((name, n)) => (name, n.parse::<u64>().ok().filter(|n| *n >= 1)),
            None => (text, Some(1)),
        };
        let at = [CrashAt::MidCopy, CrashAt::AfterCopy, CrashAt::AfterCommit]
            .into_iter()
            .find(|a| a.name() == name);
        match (at, nth) {
            (Some(at), Some(nth)) => Ok(CrashPoint { at, nth }),
            _ => Err(format!(
                "{ENV_CRASH_AT}={text:?}: expected mid_copy, after_copy or after_commit, \
                 optionally with :N (N ≥ 1, the arrival to die on); unset it outside crash tests"
            )),
        }
    }

    /// The point named by `lookup(`[`ENV_CRASH_AT`]`)` (the binary passes `std::env::var`);
    /// `None` when unset or empty.
    pub fn from_env(lookup: impl Fn(&str) -> Option<String>) -> Result<Option<CrashPoint>, String> {
        match lookup(ENV_CRASH_AT).filter(|v| !v.trim().is_empty()) {
            Some(v) => CrashPoint::parse(&v).map(Some),
            None => Ok(None),
        }
    }
}

/// An armed point and its arrivals so far.
#[derive(Debug)]
struct Armed {
    point: CrashPoint,
    arrivals: AtomicU64,
}

impl Armed {
    /// Counts an arrival at `at`; true on the armed point's nth.
    fn arrive(&self, at: CrashAt) -> bool {
        self.point.at == at && self.arrivals.fetch_add(1, Ordering::Relaxed) + 1 == self.point.nth
    }
}

static ARMED: OnceLock<Armed> = OnceLock::new();

/// Arms `point` for this process (the first call wins).
pub fn arm(point: CrashPoint) {
    if ARMED.set(Armed { point, arrivals: AtomicU64::new(0) }).is_ok() {
        tracing::warn!(
            point = point.at.name(),
            nth = point.nth,
            "crash point armed ({ENV_CRASH_AT}): this process will abort there"
        );
    }
}

/// A hook: aborts the process if `at` is armed and this is its nth arrival.
pub(crate) fn reached(at: CrashAt) {
    if ARMED.get().is_some_and(|armed| armed.arrive(at)) {
        tracing::error!(point = at.name(), "crash point reached: aborting");
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_counts() {
        assert_eq!(CrashPoint::parse("mid_copy"), Ok(CrashPoint { at: CrashAt::MidCopy, nth: 1 }));
        assert_eq!(
            CrashPoint::parse(" after_copy:3 "),
            Ok(CrashPoint { at: CrashAt::AfterCopy, nth: 3 })
        );
        assert_eq!(
            CrashPoint::parse("after_commit:12"),
            Ok(CrashPoint { at: CrashAt::AfterCommit, nth: 12 })
        );
        for bad in ["after_copy:0", "after_copy:x", "before_copy", "mid_copy:", ""] {
            assert!(CrashPoint::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(CrashPoint::from_env(|_| None), Ok(None));
        assert_eq!(CrashPoint::from_env(|_| Some(" ".into())), Ok(None));
        assert_eq!(
            CrashPoint::from_env(|n| (n == ENV_CRASH_AT).then(|| "after_commit:2".into())),
            Ok(Some(CrashPoint { at: CrashAt::AfterCommit, nth: 2 }))
        );
    }

    #[test]
    fn only_the_nth_arrival_at_the_armed_point_fires() {
        // Not the process-wide ARMED: other tests of this binary write batches.
        let armed = Armed {
            point: CrashPoint { at: CrashAt::AfterCopy, nth: 3 },
            arrivals: AtomicU64::new(0),
        };
        let fired: Vec<bool> = [
            CrashAt::MidCopy,
            CrashAt::AfterCopy,
            CrashAt::AfterCommit,
            CrashAt::AfterCopy,
            CrashAt::AfterCopy,
            CrashAt::AfterCopy,
        ]
        .into_iter()
        .map(|at| armed.arrive(at))
        .collect();
        assert_eq!(fired, [false, false, false, false, true, false]);
    }
}
