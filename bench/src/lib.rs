//! Benchmark support: realistic frame generators shared by the criterion benches.
