//! The Kalshi exchange simulator (issue 3; not built yet).
