//! Schema migrations: versioned SQL files, embedded in the binary with `include_str!`, applied in
//! order, each in its own transaction, and recorded in `schema_migrations` with a checksum.
//!
//! A [`Schema`] names a list of [`Migration`]s (the gatherer buffer is one; production will be
//! another). [`migrate`] applies the ones a database lacks and refuses a database whose record
//! of an applied migration differs from the embedded file (the file was edited after it was
//! applied) or that holds a version this build does not know (a newer kdp migrated it). Runs are
//! serialised per database by a session advisory lock, so concurrent `kdp migrate`s are safe.

use sha2::{Digest, Sha256};

/// One versioned migration: plain SQL, run in one transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    /// 1, 2, 3, ... in application order, without holes.
    pub version: i32,
    /// The file's name without `.sql`, e.g. `0001_gatherer_tables`.
    pub name: &'static str,
    /// The file's contents.
    pub sql: &'static str,
}

impl Migration {
    /// Hex SHA-256 of the SQL text: any edit to an applied file is detected.
    pub fn checksum(&self) -> String {
        Sha256::digest(self.sql.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// A named, ordered list of migrations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schema {
    /// The schema's name as recorded in `schema_migrations` (e.g. `gatherer`).
    pub name: &'static str,
    /// Its migrations, versions 1..=n in order.
    pub migrations: &'static [Migration],
}

/// What one [`migrate`] run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The schema migrated.
    pub schema: &'static str,
    /// Migrations applied by this run, in order.
    pub applied: Vec<Migration>,
    /// The database's version afterwards (0: no migrations).
    pub version: i32,
}

/// Why a migration run failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The embedded list is not versions 1..=n in order (a build mistake).
    #[error(
        "schema {schema}: embedded migration {name} has version {version}, expected {expected} \
         (versions must run 1, 2, 3, ... without holes)"
    )]
    BadList {
        /// The schema.
        schema: &'static str,
        /// The offending migration's name.
        name: &'static str,
        /// Its version.
        version: i32,
        /// The version its position calls for.
        expected: i32,
    },
    /// An applied migration's checksum differs from the embedded file.
    #[error(
        "schema {schema}: migration {version} ({name}) was applied with checksum {applied} but \
         this build's file has {embedded}; the file was changed after it was applied. Restore \
         the original file and put the change in a new migration, or migrate a fresh database"
    )]
    ChecksumMismatch {
        /// The schema.
        schema: &'static str,
        /// The migration's version.
        version: i32,
        /// The migration's name in this build.
        name: &'static str,
        /// Checksum recorded in the database.
        applied: String,
        /// Checksum of the embedded file.
        embedded: String,
    },
    /// The database holds a migration this build does not have.
    #[error(
        "schema {schema}: the database has migration {version} ({name}) applied, which this \
         build does not know (it knows up to {known}); use the kdp build that migrated it"
    )]
    UnknownVersion {
        /// The schema.
        schema: &'static str,
        /// The unknown version.
        version: i32,
        /// Its recorded name.
        name: String,
        /// The highest version this build knows.
        known: i32,
    },
    /// A statement failed.
    #[error("schema {schema}: {what} failed: {source}")]
    Postgres {
        /// The schema.
        schema: &'static str,
        /// What we were doing.
        what: String,
        /// The underlying error.
        #[source]
        source: postgres::Error,
    },
}

/// Advisory lock key serialising migration runs on one database (`"kdpmigr"` in ASCII).
const MIGRATE_LOCK_KEY: i64 = 0x006b_6470_6d69_6772;

const CREATE_LEDGER: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (\
     schema text NOT NULL, version integer NOT NULL, name text NOT NULL, \
     checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now(), \
     PRIMARY KEY (schema, version))";

/// Applies the migrations of `schema` that `client`'s database lacks, in order, each in its own
/// transaction; verifies the checksums of those already applied first.
pub fn migrate(client: &mut postgres::Client, schema: &Schema) -> Result<Report, MigrateError> {
    check_list(schema)?;
    let pg = |what: &str| {
        let what = what.to_owned();
        move |source| MigrateError::Postgres { schema: schema.name, what, source }
    };
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATE_LOCK_KEY])
        .map_err(pg("take the migration lock"))?;
    let result = migrate_locked(client, schema);
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATE_LOCK_KEY])
        .map_err(pg("release the migration lock"));
    let report = result?;
    unlocked?;
    Ok(report)
}

fn check_list(schema: &Schema) -> Result<(), MigrateError> {
    for (expected, migration) in (1..).zip(schema.migrations) {
        if migration.version != expected {
            return Err(MigrateError::BadList {
                schema: schema.name,
                name: migration.name,
                version: migration.version,
                expected,
            });
        }
    }
    Ok(())
}

fn migrate_locked(client: &mut postgres::Client, schema: &Schema) -> Result<Report, MigrateError> {
    let pg =
        |what: String| move |source| MigrateError::Postgres { schema: schema.name, what, source };
    // Only when absent: `CREATE TABLE IF NOT EXISTS` still needs CREATE on the schema, which a
    // least-privilege role (kdp_gatherer_writer, kdp_dedup) does not have; an up-to-date
    // database then needs nothing beyond SELECT on the ledger.
    let ledger: Option<String> = client
        .query_one("SELECT to_regclass('schema_migrations')::text", &[])
        .map_err(pg("look for schema_migrations".into()))?
        .get(0);
    if ledger.is_none() {
        client.batch_execute(CREATE_LEDGER).map_err(pg("create schema_migrations".into()))?;
    }
    let rows = client
        .query(
            "SELECT version, name, checksum FROM schema_migrations WHERE schema = $1 \
             ORDER BY version",
            &[&schema.name],
        )
        .map_err(pg("read schema_migrations".into()))?;
    let known = i32::try_from(schema.migrations.len()).unwrap_or(i32::MAX);
    let mut version = 0;
    for row in &rows {
        let applied_version: i32 = row.get(0);
        let Some(migration) = schema.migrations.iter().find(|m| m.version == applied_version)
        else {
            return Err(MigrateError::UnknownVersion {
                schema: schema.name,
                version: applied_version,
                name: row.get(1),
                known,
            });
        };
        let applied: String = row.get(2);
        let embedded = migration.checksum();
        if applied != embedded {
            return Err(MigrateError::ChecksumMismatch {
                schema: schema.name,
                version: applied_version,
                name: migration.name,
                applied,
                embedded,
            });
        }
        version = version.max(applied_version);
    }
    let mut applied = Vec::new();
    let from = version;
    for migration in schema.migrations.iter().filter(|m| m.version > from) {
        let what = format!("migration {} ({})", migration.version, migration.name);
        let mut tx = client.transaction().map_err(pg(what.clone()))?;
        tx.batch_execute(migration.sql).map_err(pg(what.clone()))?;
        tx.execute(
            "INSERT INTO schema_migrations (schema, version, name, checksum) \
             VALUES ($1, $2, $3, $4)",
            &[&schema.name, &migration.version, &migration.name, &migration.checksum()],
        )
        .map_err(pg(format!("record {what}")))?;
        tx.commit().map_err(pg(format!("commit {what}")))?;
        version = migration.version;
        applied.push(*migration);
    }
    Ok(Report { schema: schema.name, applied, version })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_is_hex_sha256_of_the_sql() {
        let m = Migration { version: 1, name: "0001_x", sql: "abc" };
        assert_eq!(
            m.checksum(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn lists_must_number_from_one_without_holes() {
        const HOLE: &[Migration] = &[
            Migration { version: 1, name: "0001_a", sql: "" },
            Migration { version: 3, name: "0003_c", sql: "" },
        ];
        let error = check_list(&Schema { name: "s", migrations: HOLE }).err();
        assert_eq!(
            error.map(|e| e.to_string()).as_deref(),
            Some(
                "schema s: embedded migration 0003_c has version 3, expected 2 (versions must run \
                 1, 2, 3, ... without holes)"
            )
        );
    }
}
