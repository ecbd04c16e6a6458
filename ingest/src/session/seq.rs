//! Per-sid sequence tracking: the check every sequenced frame passes before its event is emitted.
//!
//! Kalshi numbers the frames of each subscription (`sid`) 1, 2, 3, ... with one counter shared by
//! every market on the sid (protocol note §3). The tracker decides, per frame:
//! - **accept**: the expected number (or a snapshot that skips numbers: a snapshot fully replaces
//!   its market's book, and markets merged into an existing sid are reported to skip numbers, so
//!   "gap before a snapshot" is a resync, not a loss);
//! - **drop**: a duplicate or stale number (≤ the last accepted), counted;
//! - **gap**: numbers were skipped before a non-snapshot frame. The tracker reports the gap and
//!   goes on from the new number (the stream is never stalled waiting for recovery); the session
//!   writes a gap marker and resyncs the sid's books.
//!
//! `ok`/`unsubscribed` replies carry a `seq` too, and whether they consume a number is not
//! documented. The tracker accepts both readings: a reply at `last + 1` may be the next number,
//! so the next data frame may be `last + 1` (the reply did not consume it) or `last + 2` (it did);
//! neither is a gap nor a duplicate.
//!
//! Sids are connection-local. [`SeqTracker::disconnect`] forgets them all and remembers the
//! earliest last accepted frame over them (the last point every sid is known complete); the first
//! snapshot after the reconnect closes that window as a [`DisconnectGap`]. Pure: receive times
//! are passed in.

use std::collections::HashMap;

/// A sequence gap on one sid: the frames `expected..got` never arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// The subscription the gap is on.
    pub sid: u64,
    /// The number that should have come next.
    pub expected: u64,
    /// The number that came.
    pub got: u64,
    /// Receive time of the last frame accepted on the sid before the gap (`None`: the gap is at
    /// the start of the sid).
    pub ts_recv_last_ok_ns: Option<u64>,
    /// Receive time of the frame that revealed the gap.
    pub ts_recv_ns: u64,
}

/// The window a connection was down: from the earliest last accepted frame over the old
/// connection's sids to the first snapshot of the new one. Everything the shard owns may have
/// changed in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DisconnectGap {
    /// Receive time of the last frame before the disconnect (`None`: no frame ever arrived).
    pub ts_recv_last_ns: Option<u64>,
    /// Receive time of the first snapshot after the reconnect.
    pub ts_recv_resumed_ns: u64,
}

/// What to do with one sequenced frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// In order: emit it.
    Accept,
    /// A snapshot that skipped numbers `expected..got`: emit it (it replaces its market's book);
    /// counted, not a gap.
    AcceptSnapshotSkip {
        /// The number that should have come next.
        expected: u64,
        /// The snapshot's number.
        got: u64,
    },
    /// Numbers were skipped before a non-snapshot frame: emit the frame, write a gap marker and
    /// resync the sid's markets.
    Gap(Gap),
    /// A duplicate or stale number (≤ the last accepted): drop the frame; counted.
    Stale {
        /// The last number accepted on the sid.
        last: u64,
    },
}

/// Counters of what the tracker saw (published once per interval by the session).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SeqCounts {
    /// Frames accepted in order (including snapshot skips).
    pub accepted: u64,
    /// Snapshots accepted across a skip.
    pub snapshot_skips: u64,
    /// Gaps reported.
    pub gaps: u64,
    /// Frames dropped as duplicate or stale.
    pub stale: u64,
    /// `ok`/`unsubscribed` replies carrying a seq.
    pub replies: u64,
    /// Disconnect gaps closed.
    pub disconnects: u64,
}

#[derive(Debug, Clone, Copy)]
struct SidState {
    /// Last number accepted (0: none yet; Kalshi numbers from 1).
    last: u64,
    /// Receive time of the last accepted frame.
    ts_recv_last_ns: Option<u64>,
    /// A reply arrived with this number (`last + 1`); it may or may not have consumed it.
    reply_seq: Option<u64>,
}

/// Sequence state of every sid of one connection.
#[derive(Debug, Default)]
pub struct SeqTracker {
    sids: HashMap<u64, SidState>,
    /// Receive time of the last frame of any kind on this connection (or the one before).
    ts_recv_last_ns: Option<u64>,
    /// Set by [`disconnect`](Self::disconnect); closed by the first snapshot after it.
    disconnected: Option<Option<u64>>,
    counts: SeqCounts,
}

impl SeqTracker {
    /// An empty tracker (a fresh connection, no disconnect pending).
    pub fn new() -> Self {
        Self::default()
    }

    /// Notes that a frame without a seq (a ticker, a reply, an error) arrived at `ts_recv_ns`: a
    /// later disconnect gap starts there when no sequenced frame arrived yet.
    pub fn saw_frame(&mut self, ts_recv_ns: u64) {
        self.ts_recv_last_ns = Some(ts_recv_ns);
    }

    /// Checks a data frame (`is_snapshot`: an `orderbook_snapshot`) numbered `seq` on `sid`.
    pub fn feed(&mut self, sid: u64, seq: u64, ts_recv_ns: u64, is_snapshot: bool) -> Verdict {
        self.ts_recv_last_ns = Some(ts_recv_ns);
        let state = self.sids.entry(sid).or_insert(SidState {
            last: 0,
            ts_recv_last_ns: None,
            reply_seq: None,
        });
        let expected = state.last.saturating_add(1);
        let verdict = if seq <= state.last {
            return self.stale(sid);
        } else if seq == expected {
            Verdict::Accept
        } else if state.reply_seq == Some(expected) && seq == expected.saturating_add(1) {
            // The reply consumed `expected`: no loss.
            Verdict::Accept
        } else if is_snapshot {
            Verdict::AcceptSnapshotSkip { expected, got: seq }
        } else {
            Verdict::Gap(Gap {
                sid,
                expected,
                got: seq,
                ts_recv_last_ok_ns: state.ts_recv_last_ns,
                ts_recv_ns,
            })
        };
        state.last = seq;
        state.ts_recv_last_ns = Some(ts_recv_ns);
        state.reply_seq = None;
        self.counts.accepted += u64::from(!matches!(verdict, Verdict::Gap(_)));
        match verdict {
            Verdict::AcceptSnapshotSkip { .. } => self.counts.snapshot_skips += 1,
            Verdict::Gap(_) => self.counts.gaps += 1,
            Verdict::Accept | Verdict::Stale { .. } => {}
        }
        verdict
    }

    fn stale(&mut self, sid: u64) -> Verdict {
        self.counts.stale += 1;
        let last = self.sids.get(&sid).map_or(0, |s| s.last);
        Verdict::Stale { last }
    }

    /// Closes the disconnect window if one is open: call with the receive time of the first
    /// snapshot after a reconnect. Returns the window once; `None` afterwards (and when the
    /// connection never dropped).
    pub fn resumed(&mut self, ts_recv_ns: u64) -> Option<DisconnectGap> {
        let ts_recv_last_ns = self.disconnected.take()?;
        self.counts.disconnects += 1;
        Some(DisconnectGap { ts_recv_last_ns, ts_recv_resumed_ns: ts_recv_ns })
    }

    /// Checks an `ok`/`unsubscribed` reply carrying `seq` on `sid`. A reply is never dropped; it
    /// reports a gap only if it proves data frames before it were lost (`seq > last + 1`).
    pub fn reply(&mut self, sid: u64, seq: u64, ts_recv_ns: u64) -> Option<Gap> {
        self.ts_recv_last_ns = Some(ts_recv_ns);
        self.counts.replies += 1;
        let state = self.sids.entry(sid).or_insert(SidState {
            last: 0,
            ts_recv_last_ns: None,
            reply_seq: None,
        });
        let expected = state.last.saturating_add(1);
        if seq < expected {
            return None;
        }
        let gap = (seq > expected).then_some(Gap {
            sid,
            expected,
            got: seq,
            ts_recv_last_ok_ns: state.ts_recv_last_ns,
            ts_recv_ns,
        });
        // Everything before the reply's number is settled; the number itself may be the reply's.
        state.last = seq - 1;
        state.reply_seq = Some(seq);
        if gap.is_some() {
            state.ts_recv_last_ns = Some(ts_recv_ns);
            self.counts.gaps += 1;
        }
        gap
    }

    /// Forgets a sid (unsubscribed, or dropped by the server with code 10/25): its numbers start
    /// again at 1 if the sid is reused.
    pub fn remove(&mut self, sid: u64) {
        self.sids.remove(&sid);
    }

    /// The connection dropped: forget every sid (they are connection-local) and open a
    /// disconnect window. A second disconnect before any snapshot keeps the first window's start.
    ///
    /// The window starts at the earliest "last accepted frame" over the sequenced sids, not at
    /// the connection's last frame of any kind: a frame the server dropped at the end of one
    /// sid's stream (no later frame on that sid revealed the skip) is lost somewhere after that
    /// sid's last accepted frame, even if other sids delivered later frames. Starting earlier can
    /// over-report (a quiet sid widens the window), never hide a loss. With no sequenced frame
    /// yet, the window starts at the last frame of any kind.
    pub fn disconnect(&mut self) {
        let earliest_sid_last = self.sids.values().filter_map(|s| s.ts_recv_last_ns).min();
        self.sids.clear();
        if self.disconnected.is_none() {
            self.disconnected = Some(earliest_sid_last.or(self.ts_recv_last_ns));
        }
    }

    /// Whether a disconnect window is open.
    pub fn is_disconnected(&self) -> bool {
        self.disconnected.is_some()
    }

    /// The last number accepted on `sid`, if it has one.
    pub fn last(&self, sid: u64) -> Option<u64> {
        self.sids.get(&sid).map(|s| s.last).filter(|&l| l > 0)
    }

    /// What the tracker saw so far.
    pub fn counts(&self) -> SeqCounts {
        self.counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_frames_are_accepted() {
        let mut t = SeqTracker::new();
        assert_eq!(t.feed(1, 1, 10, true), Verdict::Accept);
        assert_eq!(t.feed(1, 2, 11, true), Verdict::Accept);
        assert_eq!(t.feed(1, 3, 12, false), Verdict::Accept);
        assert_eq!(t.last(1), Some(3));
        assert_eq!(t.counts(), SeqCounts { accepted: 3, ..SeqCounts::default() });
    }

    #[test]
    fn sids_are_independent() {
        let mut t = SeqTracker::new();
        assert_eq!(t.feed(1, 1, 10, true), Verdict::Accept);
        assert_eq!(t.feed(2, 1, 11, false), Verdict::Accept);
        assert_eq!(t.feed(1, 2, 12, false), Verdict::Accept);
        assert_eq!(t.feed(2, 2, 13, false), Verdict::Accept);
        assert_eq!((t.last(1), t.last(2), t.last(3)), (Some(2), Some(2), None));
    }

    #[test]
    fn a_skip_before_a_delta_is_a_gap_and_tracking_goes_on_from_it() {
        let mut t = SeqTracker::new();
        t.feed(4, 1, 100, true);
        t.feed(4, 2, 200, false);
        let gap = t.feed(4, 5, 300, false);
        assert_eq!(
            gap,
            Verdict::Gap(Gap {
                sid: 4,
                expected: 3,
                got: 5,
                ts_recv_last_ok_ns: Some(200),
                ts_recv_ns: 300
            })
        );
        assert_eq!(t.feed(4, 6, 400, false), Verdict::Accept);
        assert_eq!(t.counts().gaps, 1);
        assert_eq!(t.counts().accepted, 3);
    }

    #[test]
    fn a_first_frame_above_one_is_a_gap_from_one() {
        let mut t = SeqTracker::new();
        assert_eq!(
            t.feed(7, 3, 50, false),
            Verdict::Gap(Gap {
                sid: 7,
                expected: 1,
                got: 3,
                ts_recv_last_ok_ns: None,
                ts_recv_ns: 50
            })
        );
    }

    #[test]
    fn a_snapshot_that_skips_numbers_is_a_resync_not_a_gap() {
        let mut t = SeqTracker::new();
        t.feed(1, 1, 10, true);
        assert_eq!(t.feed(1, 4, 20, true), Verdict::AcceptSnapshotSkip { expected: 2, got: 4 });
        assert_eq!(t.feed(1, 5, 30, false), Verdict::Accept);
        let c = t.counts();
        assert_eq!((c.accepted, c.snapshot_skips, c.gaps), (3, 1, 0));
    }

    #[test]
    fn duplicates_and_stale_numbers_are_dropped_and_counted() {
        let mut t = SeqTracker::new();
        t.feed(1, 1, 10, true);
        t.feed(1, 2, 11, false);
        assert_eq!(t.feed(1, 2, 12, false), Verdict::Stale { last: 2 });
        assert_eq!(t.feed(1, 1, 13, true), Verdict::Stale { last: 2 });
        assert_eq!(t.feed(1, 0, 14, false), Verdict::Stale { last: 2 });
        assert_eq!(t.feed(1, 3, 15, false), Verdict::Accept);
        assert_eq!(t.counts().stale, 3);
        assert_eq!(t.last(1), Some(3));
    }

    #[test]
    fn a_reply_that_consumes_a_number_is_not_a_gap() {
        let mut t = SeqTracker::new();
        t.feed(1, 1, 10, true);
        assert_eq!(t.reply(1, 2, 11), None);
        assert_eq!(t.feed(1, 3, 12, false), Verdict::Accept);
        assert_eq!(t.counts().gaps, 0);
    }

    #[test]
    fn a_reply_that_does_not_consume_its_number_is_not_a_duplicate() {
        let mut t = SeqTracker::new();
        t.feed(1, 1, 10, true);
        assert_eq!(t.reply(1, 2, 11), None);
        assert_eq!(t.feed(1, 2, 12, false), Verdict::Accept);
        assert_eq!(t.feed(1, 3, 13, false), Verdict::Accept);
        assert_eq!((t.counts().gaps, t.counts().stale), (0, 0));
    }

    #[test]
    fn a_reply_repeating_the_last_number_changes_nothing() {
        let mut t = SeqTracker::new();
        t.feed(1, 1, 10, true);
        t.feed(1, 2, 11, false);
        assert_eq!(t.reply(1, 2, 12), None);
        assert_eq!(t.reply(1, 1, 13), None);
        assert_eq!(t.feed(1, 3, 14, false), Verdict::Accept);
        assert_eq!(t.feed(1, 3, 15, false), Verdict::Stale { last: 3 });
        assert_eq!(t.counts().replies, 2);
    }

    #[test]
    fn a_reply_past_a_hole_reports_the_lost_frames() {
        let mut t = SeqTracker::new();
        t.feed(1, 1, 10, true);
        assert_eq!(
            t.reply(1, 4, 20),
            Some(Gap { sid: 1, expected: 2, got: 4, ts_recv_last_ok_ns: Some(10), ts_recv_ns: 20 })
        );
        assert_eq!(t.feed(1, 5, 30, false), Verdict::Accept);
        assert_eq!(t.counts().gaps, 1);
    }

    #[test]
    fn a_reply_consumed_number_does_not_excuse_a_larger_skip() {
        // The loss window starts at the last data frame: the reply may have come after the loss.
        let mut t = SeqTracker::new();
        t.feed(1, 1, 10, true);
        t.reply(1, 2, 11);
        assert_eq!(
            t.feed(1, 4, 12, false),
            Verdict::Gap(Gap {
                sid: 1,
                expected: 2,
                got: 4,
                ts_recv_last_ok_ns: Some(10),
                ts_recv_ns: 12
            })
        );
    }

    #[test]
    fn unsubscribed_sid_numbers_from_one_again() {
        let mut t = SeqTracker::new();
        t.feed(1, 1, 10, true);
        t.feed(1, 2, 11, false);
        t.reply(1, 3, 12);
        t.remove(1);
        assert_eq!(t.last(1), None);
        assert_eq!(t.feed(1, 1, 13, true), Verdict::Accept);
    }

    #[test]
    fn a_disconnect_window_runs_from_the_last_sequenced_frame_to_the_first_snapshot_after() {
        let mut t = SeqTracker::new();
        t.feed(1, 1, 10, true);
        t.feed(1, 2, 20, false);
        t.saw_frame(25);
        t.disconnect();
        assert!(t.is_disconnected());
        assert_eq!(t.last(1), None);
        // The new connection reuses sid 1 from seq 1: not stale, not a gap.
        assert_eq!(t.feed(1, 1, 100, true), Verdict::Accept);
        assert_eq!(
            t.resumed(100),
            Some(DisconnectGap { ts_recv_last_ns: Some(20), ts_recv_resumed_ns: 100 })
        );
        assert_eq!(t.resumed(101), None);
        assert!(!t.is_disconnected());
        assert_eq!(t.counts().disconnects, 1);
    }

    #[test]
    fn a_disconnect_window_starts_at_the_quietest_sids_last_frame() {
        // Sid 2's frame after seq 1 may have been dropped by the server with no later frame on
        // sid 2 to reveal it: sid 1's later frames do not prove sid 2 complete.
        let mut t = SeqTracker::new();
        t.feed(1, 1, 10, true);
        t.feed(2, 1, 15, true);
        t.feed(1, 2, 20, false);
        t.feed(1, 3, 30, false);
        t.saw_frame(35);
        t.disconnect();
        assert_eq!(
            t.resumed(100),
            Some(DisconnectGap { ts_recv_last_ns: Some(15), ts_recv_resumed_ns: 100 })
        );
    }

    #[test]
    fn repeated_disconnects_keep_the_first_window_start() {
        let mut t = SeqTracker::new();
        t.feed(1, 1, 10, true);
        t.disconnect();
        t.disconnect();
        assert_eq!(
            t.resumed(500),
            Some(DisconnectGap { ts_recv_last_ns: Some(10), ts_recv_resumed_ns: 500 })
        );
    }

    #[test]
    fn a_disconnect_before_any_frame_has_no_start_and_no_resume_without_disconnect() {
        let mut t = SeqTracker::new();
        assert_eq!(t.resumed(5), None);
        t.disconnect();
        assert_eq!(
            t.resumed(9),
            Some(DisconnectGap { ts_recv_last_ns: None, ts_recv_resumed_ns: 9 })
        );
    }
}
