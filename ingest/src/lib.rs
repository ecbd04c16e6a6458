//! The gatherer side of kdp: the Kalshi wire protocol, request signing and sessions.
