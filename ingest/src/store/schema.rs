//! The gatherer buffer's schema: its migrations, embedded in the binary.

use kdp_engine::pg::migrate::{Migration, Schema};

/// The gatherer database's schema (`kdp migrate --schema gatherer`).
pub const GATHERER: Schema = Schema {
    name: "gatherer",
    migrations: &[
        Migration {
            version: 1,
            name: "0001_gatherer_tables",
            sql: include_str!("../../migrations/gatherer/0001_gatherer_tables.sql"),
        },
        Migration {
            version: 2,
            name: "0002_gatherer_runs",
            sql: include_str!("../../migrations/gatherer/0002_gatherer_runs.sql"),
        },
        Migration {
            version: 3,
            name: "0003_roles",
            sql: include_str!("../../migrations/gatherer/0003_roles.sql"),
        },
    ],
};

/// The channel the writer notifies after each commit; the payload is the batch's last gseq.
pub const NOTIFY_CHANNEL: &str = "kdp_gatherer";
