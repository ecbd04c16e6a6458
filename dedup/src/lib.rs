//! The deduplicator: merges the three gatherer streams into production (issue 5; not built yet).
