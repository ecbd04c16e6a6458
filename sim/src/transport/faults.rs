//! Fault injection for the WebSocket side, seeded per connection so every decision reproduces:
//! the fault seed is mixed with the connection's ordinal (1, 2, 3, ... in order of established
//! connections), so three gatherers connected to one simulator lose different things, and a
//! run with the same seed and the same traffic loses the same things again.
//!
//! Kinds: drop a data frame (the client sees a `seq` gap), duplicate one (a repeated `seq`),
//! close the connection (codes 1000/1001/1011 with a close frame, 1006 by dropping TCP), go
//! silent for a while (no data, no pings), slow-reader overflow (error 25, subscriptions
//! dropped), refuse new connections for a while (exchange outage), refuse a handshake as if
//! its signature were bad (401). Rates are parts per million per data frame, per second of
//! connection, or per handshake; every kind can also be triggered at run time through the
//! [`Registry`] (which the control endpoint in `control.rs` drives).
//!
//! The [`Registry`] is also the table of live connections: ids, subscriptions and counters.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot};

use super::rest::RestFaults;
use super::session::{SubMarkets, SubSummary};

/// Parts per million: the unit of every fault rate.
pub const PPM: u32 = 1_000_000;
/// Close codes a random close picks from (1006 = TCP dropped without a close frame).
pub const CLOSE_CODES: [u16; 4] = [1000, 1001, 1006, 1011];
/// Control messages queued for one connection; the control endpoint waits when full.
pub const CONTROL_QUEUE_MAX: usize = 16;
/// Longest a control request waits for the connection to act on it (a connection blocked on a
/// client that does not read may take up to `ws::WRITE_STALL_MAX`; then it is gone anyway).
pub const CONTROL_ACK_TIMEOUT: Duration = Duration::from_secs(40);

/// A control message and the acknowledgement the connection sends once it has acted on it.
pub type ControlMsg = (Control, oneshot::Sender<()>);
/// Longest silence or outage a request may ask for: a longer one is a test mistake, and the
/// cap keeps a typo from wedging a run for hours.
pub const FAULT_PERIOD_MAX: Duration = Duration::from_secs(600);

/// Random fault rates and the seed. All zero (the default) = no random faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FaultConfig {
    /// Seed, mixed with each connection's ordinal.
    pub seed: u64,
    /// Per data frame: drop it.
    pub drop_frame_ppm: u32,
    /// Per data frame: send it twice.
    pub dup_frame_ppm: u32,
    /// Per second of a connection: close it (code from [`CLOSE_CODES`]).
    pub close_ppm_per_s: u32,
    /// Per second of a connection: go silent for `silence_ms`.
    pub silence_ppm_per_s: u32,
    /// Length of a random silence.
    pub silence_ms: u64,
    /// Per second of a connection: slow-reader overflow (error 25 on every subscription).
    pub overflow_ppm_per_s: u32,
    /// Per second of the exchange: an outage of `outage_ms` (connections dropped, handshakes
    /// refused with 503).
    pub outage_ppm_per_s: u32,
    /// Length of a random outage.
    pub outage_ms: u64,
    /// Per handshake: refuse it with 401 as if the signature were bad.
    pub bad_signature_ppm: u32,
}

/// SplitMix64: a small, fast, well-mixed generator; enough for fault decisions.
#[derive(Debug, Clone)]
pub struct FaultRng(u64);

impl FaultRng {
    /// A generator for `seed` and a stream number (the connection ordinal; 0 = handshakes,
    /// `u64::MAX` = the exchange-wide outage roll).
    pub fn new(seed: u64, stream: u64) -> Self {
        Self(mix64(seed ^ mix64(stream.wrapping_add(0x5eed))))
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.0)
    }

    /// True with probability `ppm` / 10⁶. Always draws, so decisions stay aligned.
    pub fn chance_ppm(&mut self, ppm: u32) -> bool {
        let draw = self.next_u64() % u64::from(PPM);
        draw < u64::from(ppm.min(PPM))
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What happens to one data frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Sent once.
    Send,
    /// Not sent (its `seq` is used up).
    Drop,
    /// Sent twice.
    Duplicate,
}

/// A fault a connection acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Close with this code (1006 = drop TCP without a close frame).
    Close(u16),
    /// No data and no pings for this long.
    Silence(Duration),
    /// Drop the next n data frames.
    DropNext(u64),
    /// Duplicate the next n data frames.
    DupNext(u64),
    /// Slow-reader overflow: error 25 on the sid (all when `None`) and drop it.
    Overflow(Option<u64>),
}

/// One connection's fault state: its generator and pending forced faults.
#[derive(Debug)]
pub struct ConnFaults {
    cfg: FaultConfig,
    rng: FaultRng,
    drop_next: u64,
    dup_next: u64,
}

impl ConnFaults {
    /// Fault state of connection `conn` (its ordinal).
    pub fn new(cfg: FaultConfig, conn: u64) -> Self {
        Self { cfg, rng: FaultRng::new(cfg.seed, conn), drop_next: 0, dup_next: 0 }
    }

    /// Applies a forced-frame control (`DropNext`/`DupNext`); other kinds are the driver's.
    pub fn force(&mut self, control: Control) {
        match control {
            Control::DropNext(n) => self.drop_next = self.drop_next.saturating_add(n),
            Control::DupNext(n) => self.dup_next = self.dup_next.saturating_add(n),
            _ => {}
        }
    }

    /// The fate of the next data frame: forced faults first, then the random rates.
    pub fn frame_fate(&mut self) -> Fate {
        if self.drop_next > 0 {
            self.drop_next -= 1;
            return Fate::Drop;
        }
        if self.dup_next > 0 {
            self.dup_next -= 1;
            return Fate::Duplicate;
        }
        if self.cfg.drop_frame_ppm == 0 && self.cfg.dup_frame_ppm == 0 {
            return Fate::Send;
        }
        let drop = self.rng.chance_ppm(self.cfg.drop_frame_ppm);
        let dup = self.rng.chance_ppm(self.cfg.dup_frame_ppm);
        match (drop, dup) {
            (true, _) => Fate::Drop,
            (false, true) => Fate::Duplicate,
            (false, false) => Fate::Send,
        }
    }

    /// The random fault of one second of this connection, if any.
    pub fn second(&mut self) -> Option<Control> {
        let c = self.cfg;
        if c.close_ppm_per_s == 0 && c.silence_ppm_per_s == 0 && c.overflow_ppm_per_s == 0 {
            return None;
        }
        let close = self.rng.chance_ppm(c.close_ppm_per_s);
        let code = CLOSE_CODES[self.rng.below(CLOSE_CODES.len() as u64) as usize];
        let silence = self.rng.chance_ppm(c.silence_ppm_per_s);
        let overflow = self.rng.chance_ppm(c.overflow_ppm_per_s);
        if close {
            Some(Control::Close(code))
        } else if silence {
            Some(Control::Silence(Duration::from_millis(c.silence_ms)))
        } else if overflow {
            Some(Control::Overflow(None))
        } else {
            None
        }
    }
}

/// Counters and subscriptions of one live connection, shared with the control endpoint.
#[derive(Debug, Default)]
pub struct ConnStats {
    /// Data frames written (a duplicate counts twice).
    pub frames_sent: AtomicU64,
    /// Data frames dropped by a fault.
    pub frames_dropped: AtomicU64,
    /// Data frames sent a second time by a fault.
    pub frames_duplicated: AtomicU64,
    /// Frames (data or replies) swallowed while silent.
    pub frames_silenced: AtomicU64,
    /// Commands received.
    pub commands: AtomicU64,
    /// Pings sent.
    pub pings: AtomicU64,
    /// Slow-reader overflows (error 25 sent).
    pub overflows: AtomicU64,
    /// Current subscriptions.
    pub subscriptions: Mutex<Vec<SubSummary>>,
    /// Markets of the market-filtered subscriptions, updated after each command and overflow
    /// (never per data frame, so the data path pays nothing for it).
    pub markets: Mutex<Vec<SubMarkets>>,
}

/// A live connection as the control endpoint lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConnInfo {
    /// Connection ordinal.
    pub conn: u64,
    /// Over TLS (`wss`).
    pub tls: bool,
    /// Client address.
    pub peer: String,
    /// API key id it authenticated with, if any.
    pub key_id: Option<String>,
    /// Subscriptions.
    pub subscriptions: Vec<SubSummary>,
    /// See [`ConnStats`].
    pub frames_sent: u64,
    /// See [`ConnStats`].
    pub frames_dropped: u64,
    /// See [`ConnStats`].
    pub frames_duplicated: u64,
    /// See [`ConnStats`].
    pub frames_silenced: u64,
    /// See [`ConnStats`].
    pub commands: u64,
    /// See [`ConnStats`].
    pub pings: u64,
    /// See [`ConnStats`].
    pub overflows: u64,
}

struct ConnEntry {
    tls: bool,
    peer: String,
    key_id: Option<String>,
    control: mpsc::Sender<ControlMsg>,
    stats: Arc<ConnStats>,
}

/// Why a control request could not be carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// No live connection has this id.
    #[error("no live connection {0}")]
    NoConnection(u64),
    /// A period longer than [`FAULT_PERIOD_MAX`].
    #[error("period of {0} ms exceeds the {max} ms bound", max = FAULT_PERIOD_MAX.as_millis())]
    PeriodTooLong(u64),
}

/// Live connections, handshake admission (connection limit, outage, forced rejections) and the
/// fault configuration. Shared by the listeners, every connection and the control endpoint.
pub struct Registry {
    cfg: FaultConfig,
    connections_max: usize,
    conns: Mutex<BTreeMap<u64, ConnEntry>>,
    next_conn: AtomicU64,
    /// Connections holding a slot: established ones plus handshakes past admission.
    slots: AtomicUsize,
    outage_until: Mutex<Option<Instant>>,
    /// The REST server's switches: an outage also reports the exchange inactive there.
    rest: RestFaults,
    reject_next: AtomicU64,
    handshake_rng: Mutex<FaultRng>,
    outage_rng: Mutex<FaultRng>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("cfg", &self.cfg)
            .field("connections_max", &self.connections_max)
            .field("slots", &self.slots)
            .finish_non_exhaustive()
    }
}

/// Why a handshake is refused before its signature is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Go ahead (a slot is held by the returned guard).
    Admit,
    /// Exchange outage: 503.
    Outage,
    /// Connection limit reached: 429.
    Full,
}

/// A held connection slot; released on drop.
#[derive(Debug)]
pub struct Slot(Arc<Registry>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.slots.fetch_sub(1, Ordering::SeqCst);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Registry {
    /// A registry admitting at most `connections_max` connections at once; its outages also
    /// show on the REST server through `rest`.
    pub fn new(cfg: FaultConfig, connections_max: usize, rest: RestFaults) -> Arc<Self> {
        Arc::new(Self {
            cfg,
            connections_max,
            conns: Mutex::new(BTreeMap::new()),
            next_conn: AtomicU64::new(1),
            slots: AtomicUsize::new(0),
            outage_until: Mutex::new(None),
            rest,
            reject_next: AtomicU64::new(0),
            handshake_rng: Mutex::new(FaultRng::new(cfg.seed, 0)),
            outage_rng: Mutex::new(FaultRng::new(cfg.seed, u64::MAX)),
        })
    }

    /// The fault configuration.
    pub fn config(&self) -> FaultConfig {
        self.cfg
    }

    /// Whether a handshake may proceed now; on `Admit` the slot is taken.
    pub fn admit(self: &Arc<Self>) -> (Admission, Option<Slot>) {
        if lock(&self.outage_until).is_some_and(|until| Instant::now() < until) {
            return (Admission::Outage, None);
        }
        let taken = self.slots.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
            (n < self.connections_max).then_some(n + 1)
        });
        match taken {
            Ok(_) => (Admission::Admit, Some(Slot(self.clone()))),
            Err(_) => (Admission::Full, None),
        }
    }

    /// Whether this handshake is refused as a bad signature (forced, then random).
    pub fn reject_handshake(&self) -> bool {
        let forced = self
            .reject_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let random = self.cfg.bad_signature_ppm > 0
            && lock(&self.handshake_rng).chance_ppm(self.cfg.bad_signature_ppm);
        forced || random
    }

    /// Registers an established connection; returns its ordinal, its control receiver and
    /// its counters.
    pub fn register(
        &self,
        tls: bool,
        peer: String,
        key_id: Option<String>,
    ) -> (u64, mpsc::Receiver<ControlMsg>, Arc<ConnStats>) {
        let conn = self.next_conn.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = mpsc::channel(CONTROL_QUEUE_MAX);
        let stats = Arc::new(ConnStats::default());
        lock(&self.conns)
            .insert(conn, ConnEntry { tls, peer, key_id, control: tx, stats: stats.clone() });
        (conn, rx, stats)
    }

    /// Removes a connection that ended.
    pub fn unregister(&self, conn: u64) {
        lock(&self.conns).remove(&conn);
    }

    /// Live connections, by ordinal.
    pub fn connections(&self) -> Vec<ConnInfo> {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        lock(&self.conns)
            .iter()
            .map(|(&conn, e)| ConnInfo {
                conn,
                tls: e.tls,
                peer: e.peer.clone(),
                key_id: e.key_id.clone(),
                subscriptions: lock(&e.stats.subscriptions).clone(),
                frames_sent: load(&e.stats.frames_sent),
                frames_dropped: load(&e.stats.frames_dropped),
                frames_duplicated: load(&e.stats.frames_duplicated),
                frames_silenced: load(&e.stats.frames_silenced),
                commands: load(&e.stats.commands),
                pings: load(&e.stats.pings),
                overflows: load(&e.stats.overflows),
            })
            .collect()
    }

    /// The markets each live connection's market-filtered subscriptions hold, by ordinal, as of
    /// the last command (or overflow) each connection handled.
    pub fn subscribed_markets(&self) -> Vec<(u64, Vec<SubMarkets>)> {
        lock(&self.conns).iter().map(|(&conn, e)| (conn, lock(&e.stats.markets).clone())).collect()
    }

    /// Sends a fault to one connection and waits until the connection has acted on it, so
    /// whatever the caller does next happens after the fault took effect.
    pub async fn control(&self, conn: u64, control: Control) -> Result<(), ControlError> {
        if let Control::Silence(d) = control {
            check_period(d)?;
        }
        let tx = lock(&self.conns)
            .get(&conn)
            .map(|e| e.control.clone())
            .ok_or(ControlError::NoConnection(conn))?;
        let (ack, acked) = oneshot::channel();
        tx.send((control, ack)).await.map_err(|_| ControlError::NoConnection(conn))?;
        match tokio::time::timeout(CONTROL_ACK_TIMEOUT, acked).await {
            Ok(Ok(())) => Ok(()),
            // The connection ended while acting on it (a close) or is stuck: either way the
            // fault is applied as far as it can be.
            Ok(Err(_)) | Err(_) => Ok(()),
        }
    }

    /// Exchange outage: refuse handshakes (503) and report the exchange inactive on REST
    /// (`GET /exchange/status`, with the resume time) for `period`; when `close_code` is given,
    /// every live connection is closed with it as well.
    pub async fn outage(
        &self,
        period: Duration,
        close_code: Option<u16>,
    ) -> Result<(), ControlError> {
        check_period(period)?;
        let until = Instant::now() + period;
        let resume_ns = SystemTime::now()
            .checked_add(period)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        *lock(&self.outage_until) = Some(until);
        self.rest.set_outage(until, resume_ns);
        if let Some(code) = close_code {
            let conns: Vec<u64> = lock(&self.conns).keys().copied().collect();
            for conn in conns {
                let _ = self.control(conn, Control::Close(code)).await;
            }
        }
        Ok(())
    }

    /// Refuse the next `n` handshakes with 401 (bad signature).
    pub fn reject_next(&self, n: u64) {
        self.reject_next.fetch_add(n, Ordering::SeqCst);
    }

    /// One second of the exchange-wide random outage roll.
    pub async fn outage_second(&self) {
        let c = self.cfg;
        if c.outage_ppm_per_s > 0 && lock(&self.outage_rng).chance_ppm(c.outage_ppm_per_s) {
            let period = Duration::from_millis(c.outage_ms).min(FAULT_PERIOD_MAX);
            let _ = self.outage(period, Some(1006)).await;
        }
    }
}

fn check_period(d: Duration) -> Result<(), ControlError> {
    if d > FAULT_PERIOD_MAX {
        return Err(ControlError::PeriodTooLong(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_reproduce_per_connection_and_differ_between_connections() {
        let cfg = FaultConfig { seed: 42, drop_frame_ppm: 100_000, ..FaultConfig::default() };
        let fates = |conn| {
            let mut f = ConnFaults::new(cfg, conn);
            (0..1000).map(|_| f.frame_fate()).collect::<Vec<_>>()
        };
        assert_eq!(fates(1), fates(1));
        assert_ne!(fates(1), fates(2));
        let drops = fates(1).iter().filter(|f| **f == Fate::Drop).count();
        assert!((50..200).contains(&drops), "10% of 1000 frames expected, got {drops}");
    }

    #[test]
    fn forced_faults_come_first() {
        let mut f = ConnFaults::new(FaultConfig::default(), 1);
        f.force(Control::DropNext(2));
        f.force(Control::DupNext(1));
        let fates: Vec<_> = (0..4).map(|_| f.frame_fate()).collect();
        assert_eq!(fates, [Fate::Drop, Fate::Drop, Fate::Duplicate, Fate::Send]);
    }

    #[test]
    fn slots_are_bounded_and_released() {
        let r = Registry::new(FaultConfig::default(), 1, RestFaults::new());
        let (a, slot) = r.admit();
        assert_eq!(a, Admission::Admit);
        assert_eq!(r.admit().0, Admission::Full);
        drop(slot);
        assert_eq!(r.admit().0, Admission::Admit);
    }
}
