//! WebSocket sessions: the part of a shard that holds connections to Kalshi.
//!
//! Pure decision logic lives in its own modules so it is tested without I/O, with time passed in:
//! - [`seq`]: per-sid sequence tracking (accept, drop stale, report gaps and disconnect windows);
//! - [`backoff`]: reconnect delays (exponential, jittered, reset after a healthy period);
//! - [`policy`]: the action for every Kalshi error code, the command rate limiter, subscription
//!   batching within Kalshi's limits.
//!
//! [`conn`] is the I/O: one WebSocket session on a glommio executor, built on those modules.

pub mod backoff;
pub mod conn;
pub mod policy;
pub mod seq;
