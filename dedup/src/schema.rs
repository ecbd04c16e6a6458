//! The production database's schema: its migrations, embedded in the binary and applied with
//! [`kdp_engine::pg::migrate::migrate`].

use kdp_engine::pg::migrate::{Migration, Schema};

/// The production database's schema (`kdp migrate --schema production`).
pub const PRODUCTION: Schema = Schema {
    name: "production",
    migrations: &[
        Migration {
            version: 1,
            name: "0001_production_tables",
            sql: include_str!("../migrations/production/0001_production_tables.sql"),
        },
        Migration {
            version: 2,
            name: "0002_coverage",
            sql: include_str!("../migrations/production/0002_coverage.sql"),
        },
        Migration {
            version: 3,
            name: "0003_metadata",
            sql: include_str!("../migrations/production/0003_metadata.sql"),
        },
        Migration {
            version: 4,
            name: "0004_roles",
            sql: include_str!("../migrations/production/0004_roles.sql"),
        },
    ],
};
