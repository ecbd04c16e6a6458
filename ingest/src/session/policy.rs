//! Session policy: what each Kalshi error code makes the session do, the command rate limiter,
//! and how a shard's markets are cut into subscriptions.
//!
//! Kalshi's limits (protocol note §7) are configured values with documented defaults: connections
//! per key, markets per subscription (unpublished: code 26 says it was exceeded, and the session
//! halves its batch size, giving up a market refused alone), commands per second (10k/s per session; code 27 says it was exceeded,
//! and the limiter pauses). Pure: the caller passes the time.

use std::time::Duration;

/// Kalshi's default connection limit per user (tier-based; 200 as of 2025-09).
pub const CONNECTIONS_PER_KEY_DEFAULT: usize = 200;
/// Markets kdp puts in one subscription. Kalshi caps it (code 26) without publishing the value;
/// 500 keeps a subscribe command small (tens of KiB) and a 1M-market exchange within 2,000
/// subscriptions. Code 26 halves it.
pub const MARKETS_PER_SUBSCRIPTION_DEFAULT: usize = 500;
/// Kalshi's command limit per session (10k/s, 2026-06).
pub const COMMANDS_PER_S_DEFAULT: u32 = 10_000;
/// How long the limiter refuses commands after a code 27: one refill period, so the server's
/// window has certainly rolled over.
pub const COMMAND_PAUSE_AFTER_27: Duration = Duration::from_secs(1);
/// Highest error code documented (28, underlying tickers required).
pub const ERROR_CODE_MAX: u32 = 28;

/// Kalshi's limits as this session applies them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections per API key.
    pub connections_per_key: usize,
    /// Markets per subscribe / add_markets command.
    pub markets_per_subscription: usize,
    /// Commands per second per session (also the burst size).
    pub commands_per_s: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            connections_per_key: CONNECTIONS_PER_KEY_DEFAULT,
            markets_per_subscription: MARKETS_PER_SUBSCRIPTION_DEFAULT,
            commands_per_s: COMMANDS_PER_S_DEFAULT,
        }
    }
}

/// What the session does about an error frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorAction {
    /// The subscription is gone (10 channel error, 25 buffer overflow): write a gap marker for
    /// its markets and subscribe them again.
    Resubscribe,
    /// Too many markets in one subscription (26): halve the batch size and send the refused
    /// command's markets again (`subscribe` or `add_markets`) in smaller batches; a single
    /// refused market is given up with a gap row ([`refused_add`]).
    SplitSubscription,
    /// Too many commands (27): pause the command limiter, then resend.
    BackOffCommands,
    /// Anything else: a bug on our side or a transient server state; log and count.
    Log,
}

/// The action for Kalshi error `code` (protocol note §2). Unknown codes are logged.
pub fn action_for(code: u32) -> ErrorAction {
    match code {
        10 | 25 => ErrorAction::Resubscribe,
        26 => ErrorAction::SplitSubscription,
        27 => ErrorAction::BackOffCommands,
        _ => ErrorAction::Log,
    }
}

/// Kalshi's name for error `code`, for logs.
pub fn describe(code: u32) -> &'static str {
    match code {
        1 => "unable to process message",
        2 => "params required",
        3 => "channels required",
        4 => "subscription ids required",
        5 => "unknown command",
        6 => "already subscribed",
        7 => "unknown subscription id",
        8 => "unknown channel name",
        9 => "authentication required",
        10 => "channel error",
        11 => "invalid parameter",
        12 => "exactly one subscription id is required",
        13 => "unsupported action",
        14 => "market ticker required",
        15 => "action required",
        16 => "market not found",
        17 => "internal error",
        18 => "command timeout",
        19..=22 => "shard_factor/shard_key validation",
        23 => "match ids required",
        24 => "index ids required",
        25 => "subscription buffer overflow (reading too slowly)",
        26 => "per-subscription market limit exceeded",
        27 => "too many requests",
        28 => "underlying tickers required",
        _ => "undocumented error code",
    }
}

/// Error frames counted by code; undocumented codes share one bucket.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ErrorCounts {
    by_code: [u64; ERROR_CODE_MAX as usize + 1],
    undocumented: u64,
}

impl ErrorCounts {
    /// Counts one error frame with `code`.
    pub fn count(&mut self, code: u32) {
        match usize::try_from(code).ok().filter(|&c| (1..self.by_code.len()).contains(&c)) {
            Some(c) => self.by_code[c] += 1,
            None => self.undocumented += 1,
        }
    }

    /// Errors seen with `code` (a documented one).
    pub fn get(&self, code: u32) -> u64 {
        usize::try_from(code).ok().and_then(|c| self.by_code.get(c)).copied().unwrap_or(0)
    }

    /// Errors with codes outside 1..=28.
    pub fn undocumented(&self) -> u64 {
        self.undocumented
    }
}

/// Nanoseconds per second: the token bucket counts in token-nanoseconds to stay in integers.
const NS_PER_S: u64 = 1_000_000_000;

/// A token bucket for commands: `rate` per second, bursts of up to `rate`.
#[derive(Debug, Clone)]
pub struct CommandLimiter {
    /// Tokens per second.
    rate_per_s: u64,
    /// Current tokens × 1e9.
    tokens_scaled: u64,
    /// Full bucket × 1e9.
    capacity_scaled: u64,
    /// Time of the last refill (ns, caller's clock).
    refilled_at_ns: u64,
    /// No tokens before this time (set by code 27).
    paused_until_ns: u64,
}

impl CommandLimiter {
    /// A full bucket at `now_ns`, allowing `commands_per_s` (at least 1).
    pub fn new(commands_per_s: u32, now_ns: u64) -> Self {
        let rate_per_s = u64::from(commands_per_s.max(1));
        let capacity_scaled = rate_per_s * NS_PER_S;
        Self {
            rate_per_s,
            tokens_scaled: capacity_scaled,
            capacity_scaled,
            refilled_at_ns: now_ns,
            paused_until_ns: 0,
        }
    }

    fn refill(&mut self, now_ns: u64) {
        if now_ns <= self.refilled_at_ns {
            return;
        }
        // Elapsed time beyond one second refills nothing more: clamp before multiplying.
        let elapsed_ns = (now_ns - self.refilled_at_ns).min(NS_PER_S);
        self.tokens_scaled = self
            .tokens_scaled
            .saturating_add(elapsed_ns * self.rate_per_s)
            .min(self.capacity_scaled);
        self.refilled_at_ns = now_ns;
    }

    /// Takes one token at `now_ns`, or says how long to wait for one.
    pub fn try_acquire(&mut self, now_ns: u64) -> Result<(), Duration> {
        if now_ns < self.paused_until_ns {
            return Err(Duration::from_nanos(self.paused_until_ns - now_ns));
        }
        self.refill(now_ns);
        if self.tokens_scaled >= NS_PER_S {
            self.tokens_scaled -= NS_PER_S;
            Ok(())
        } else {
            let missing = NS_PER_S - self.tokens_scaled;
            Err(Duration::from_nanos(missing.div_ceil(self.rate_per_s)))
        }
    }

    /// The server said too many requests (code 27) at `now_ns`: empty the bucket and refuse
    /// commands for [`COMMAND_PAUSE_AFTER_27`].
    pub fn throttled(&mut self, now_ns: u64) {
        let pause_ns = u64::try_from(COMMAND_PAUSE_AFTER_27.as_nanos()).unwrap_or(u64::MAX);
        self.paused_until_ns = now_ns.saturating_add(pause_ns);
        self.tokens_scaled = 0;
        self.refilled_at_ns = self.paused_until_ns;
    }
}

/// Cuts `markets` into subscribe batches of at most `per_subscription` (at least 1) markets.
pub fn batches<T>(markets: &[T], per_subscription: usize) -> std::slice::Chunks<'_, T> {
    markets.chunks(per_subscription.max(1))
}

/// The batch size after a code 26: half the size that was refused, at least 1.
pub fn split_size(refused_len: usize) -> usize {
    (refused_len / 2).max(1)
}

/// What to do with a `subscribe` or `update_subscription` `add_markets` the server refused
/// with code 26 (the subscription would exceed its market limit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefusedAdd<T> {
    /// Send the markets again in these smaller batches (each at most `size`): the subscription
    /// may still have room for some of them.
    Split {
        /// The new batch size ([`split_size`] of the refused one).
        size: usize,
        /// The batches, in order.
        batches: Vec<Vec<T>>,
    },
    /// A single market was refused: the subscription is full. Retrying cannot succeed, so the
    /// session stops asking and records the market as not covered (a gap row), rather than
    /// loop on code 26.
    GiveUp(T),
}

/// The decision for a refused `add_markets` of `markets` (empty: nothing to do).
pub fn refused_add<T: Clone>(markets: &[T]) -> Option<RefusedAdd<T>> {
    match markets {
        [] => None,
        [one] => Some(RefusedAdd::GiveUp(one.clone())),
        _ => {
            let size = split_size(markets.len());
            let batches = batches(markets, size).map(<[T]>::to_vec).collect();
            Some(RefusedAdd::Split { size, batches })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server subscription that holds at most `room` more markets and refuses (26) any
    /// `add_markets` that would exceed it, as Kalshi (and the simulator) do.
    fn run_refusals(markets: Vec<u32>, mut room: usize) -> (Vec<u32>, Vec<u32>, usize) {
        let (mut accepted, mut given_up, mut commands) = (Vec::new(), Vec::new(), 0);
        let mut queue = std::collections::VecDeque::from([markets]);
        while let Some(batch) = queue.pop_front() {
            commands += 1;
            if batch.len() <= room {
                room -= batch.len();
                accepted.extend(batch);
                continue;
            }
            match refused_add(&batch) {
                Some(RefusedAdd::Split { size, batches }) => {
                    assert!(batches.iter().all(|b| b.len() <= size) && size < batch.len());
                    assert_eq!(
                        batches.concat(),
                        batch,
                        "every market is asked for again, in order"
                    );
                    queue.extend(batches);
                }
                Some(RefusedAdd::GiveUp(m)) => given_up.push(m),
                None => unreachable!("a refused command names markets"),
            }
        }
        (accepted, given_up, commands)
    }

    #[test]
    fn a_refused_add_is_split_until_the_subscription_is_full_then_given_up() {
        assert_eq!(refused_add::<u32>(&[]), None);
        assert_eq!(refused_add(&[7]), Some(RefusedAdd::GiveUp(7)));
        assert_eq!(
            refused_add(&[1, 2, 3, 4, 5, 6]),
            Some(RefusedAdd::Split { size: 3, batches: vec![vec![1, 2, 3], vec![4, 5, 6]] })
        );
        assert_eq!(
            refused_add(&[1, 2, 3]),
            Some(RefusedAdd::Split { size: 1, batches: vec![vec![1], vec![2], vec![3]] })
        );
        // Against a subscription with room for `room` of 10 markets (retries queued behind
        // each other, as the session does): exactly `room` are accepted, every other one is
        // given up once, and the retries end (fewer than 2n commands: each split halves).
        for room in 0..=10 {
            let (accepted, given_up, commands) = run_refusals((0..10).collect(), room);
            assert_eq!(accepted.len(), room, "room {room}: {accepted:?}");
            let mut all = [accepted, given_up].concat();
            all.sort_unstable();
            assert_eq!(all, (0..10).collect::<Vec<u32>>(), "room {room}: each market once");
            assert!(commands < 2 * 10, "room {room}: {commands} commands");
        }
    }

    #[test]
    fn every_documented_code_has_an_action_and_a_name() {
        for code in 1..=ERROR_CODE_MAX {
            let expected = match code {
                10 | 25 => ErrorAction::Resubscribe,
                26 => ErrorAction::SplitSubscription,
                27 => ErrorAction::BackOffCommands,
                _ => ErrorAction::Log,
            };
            assert_eq!(action_for(code), expected, "code {code}");
            assert_ne!(describe(code), "undocumented error code", "code {code}");
        }
        for code in [0, 29, 1000, u32::MAX] {
            assert_eq!(action_for(code), ErrorAction::Log);
            assert_eq!(describe(code), "undocumented error code");
        }
    }

    #[test]
    fn errors_are_counted_by_code() {
        let mut c = ErrorCounts::default();
        for code in [25, 25, 7, 0, 29, 28, 1] {
            c.count(code);
        }
        assert_eq!((c.get(25), c.get(7), c.get(28), c.get(1), c.get(2)), (2, 1, 1, 1, 0));
        assert_eq!(c.undocumented(), 2);
        assert_eq!(c.get(500), 0);
    }

    #[test]
    fn the_limiter_allows_a_burst_of_rate_then_refills_at_rate() {
        let mut l = CommandLimiter::new(4, 0);
        for _ in 0..4 {
            assert_eq!(l.try_acquire(0), Ok(()));
        }
        assert_eq!(l.try_acquire(0), Err(Duration::from_millis(250)));
        assert_eq!(l.try_acquire(100_000_000), Err(Duration::from_millis(150)));
        assert_eq!(l.try_acquire(250_000_000), Ok(()));
        assert_eq!(l.try_acquire(250_000_000), Err(Duration::from_millis(250)));
        // A long idle refills to the burst size, no more.
        for _ in 0..4 {
            assert_eq!(l.try_acquire(10 * NS_PER_S), Ok(()));
        }
        assert!(l.try_acquire(10 * NS_PER_S).is_err());
    }

    #[test]
    fn kalshis_default_rate_allows_ten_thousand_a_second() {
        let mut l = CommandLimiter::new(COMMANDS_PER_S_DEFAULT, 0);
        let ok = (0..20_000).filter(|_| l.try_acquire(0).is_ok()).count();
        assert_eq!(ok, 10_000);
        assert_eq!(l.try_acquire(100_000), Ok(()));
    }

    #[test]
    fn code_27_pauses_the_limiter_then_it_refills() {
        let mut l = CommandLimiter::new(10, 0);
        l.throttled(500);
        assert_eq!(l.try_acquire(500), Err(COMMAND_PAUSE_AFTER_27));
        assert_eq!(l.try_acquire(NS_PER_S + 500), Err(Duration::from_millis(100)));
        assert_eq!(l.try_acquire(NS_PER_S + 500 + 100_000_000), Ok(()));
    }

    #[test]
    fn a_clock_going_backwards_refills_nothing() {
        let mut l = CommandLimiter::new(1, 1_000);
        assert_eq!(l.try_acquire(1_000), Ok(()));
        assert!(l.try_acquire(0).is_err());
        assert!(l.try_acquire(1_000).is_err());
    }

    #[test]
    fn batches_respect_the_per_subscription_limit() {
        let markets: Vec<u32> = (0..7).collect();
        let got: Vec<&[u32]> = batches(&markets, 3).collect();
        assert_eq!(got, vec![&[0, 1, 2][..], &[3, 4, 5][..], &[6][..]]);
        assert_eq!(batches(&markets, 0).count(), 7);
        assert_eq!(batches(&markets, 100).count(), 1);
        assert_eq!(batches::<u32>(&[], 3).count(), 0);
    }

    #[test]
    fn code_26_halves_the_batch_down_to_one() {
        assert_eq!(split_size(500), 250);
        assert_eq!(split_size(3), 1);
        assert_eq!(split_size(1), 1);
        assert_eq!(split_size(0), 1);
    }

    #[test]
    fn default_limits_are_kalshis() {
        let l = Limits::default();
        assert_eq!((l.connections_per_key, l.commands_per_s), (200, 10_000));
        assert_eq!(l.markets_per_subscription, 500);
    }
}
