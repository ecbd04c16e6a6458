//! PostgreSQL helpers: the embedded private cluster and isolated test databases.
