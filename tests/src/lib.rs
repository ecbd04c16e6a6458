//! End-to-end tests of kdp live in `tests/`; this library holds their shared fixtures.
