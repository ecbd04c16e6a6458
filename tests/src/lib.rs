//! End-to-end tests of kdp live in `tests/tests/`: each one drives several crates together
//! (wire parser, PostgreSQL, later the simulator, gatherers and deduplicator) against real
//! components. This library is empty until fixtures are shared between those tests.
