//! The migration runner against a real PostgreSQL: the gatherer schema applies once, reruns are
//! no-ops, an edited or unknown migration is refused, and a failing migration leaves the ones
//! before it applied (each runs in its own transaction).

use kdp_engine::pg::migrate::{Migration, Schema, migrate};
use kdp_engine::pg::testing::TestDatabase;
use kdp_ingest::store::GATHERER;

fn db() -> (TestDatabase, postgres::Client) {
    let db = TestDatabase::new().unwrap_or_else(|e| panic!("{e}"));
    let client = db.connect().unwrap_or_else(|e| panic!("{e}"));
    (db, client)
}

fn tables(client: &mut postgres::Client) -> Vec<String> {
    client
        .query("SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1", &[])
        .unwrap_or_else(|e| panic!("{e}"))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[test]
fn gatherer_schema_applies_once_and_reruns_are_no_ops() {
    let (_db, mut client) = db();
    let first = migrate(&mut client, &GATHERER).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        first.applied.iter().map(|m| m.name).collect::<Vec<_>>(),
        ["0001_gatherer_tables", "0002_gatherer_runs", "0003_roles"]
    );
    assert_eq!(first.version, 3);
    assert_eq!(
        tables(&mut client),
        [
            "batch",
            "delta",
            "event_lifecycle",
            "gap",
            "market_lifecycle",
            "raw_frame",
            "run",
            "run_conn",
            "schema_migrations",
            "snapshot",
            "ticker",
            "trade"
        ]
    );
    let second = migrate(&mut client, &GATHERER).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((second.applied.len(), second.version), (0, 3));
    let recorded: Vec<(String, i32, String, String)> = client
        .query(
            "SELECT schema, version, name, checksum FROM schema_migrations ORDER BY version",
            &[],
        )
        .unwrap_or_else(|e| panic!("{e}"))
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        recorded,
        [
            (
                "gatherer".to_string(),
                1,
                "0001_gatherer_tables".to_string(),
                GATHERER.migrations[0].checksum()
            ),
            (
                "gatherer".to_string(),
                2,
                "0002_gatherer_runs".to_string(),
                GATHERER.migrations[1].checksum()
            ),
            (
                "gatherer".to_string(),
                3,
                "0003_roles".to_string(),
                GATHERER.migrations[2].checksum()
            )
        ]
    );
}

#[test]
fn an_edited_migration_is_refused() {
    let (_db, mut client) = db();
    migrate(&mut client, &GATHERER).unwrap_or_else(|e| panic!("{e}"));
    client
        .execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1", &[])
        .unwrap_or_else(|e| panic!("{e}"));
    let error = migrate(&mut client, &GATHERER).err().map(|e| e.to_string());
    assert_eq!(
        error,
        Some(format!(
            "schema gatherer: migration 1 (0001_gatherer_tables) was applied with checksum edited \
             but this build's file has {}; the file was changed after it was applied. Restore the \
             original file and put the change in a new migration, or migrate a fresh database",
            GATHERER.migrations[0].checksum()
        ))
    );
}

#[test]
fn a_database_from_a_newer_build_is_refused() {
    let (_db, mut client) = db();
    migrate(&mut client, &GATHERER).unwrap_or_else(|e| panic!("{e}"));
    client
        .execute(
            "INSERT INTO schema_migrations (schema, version, name, checksum) \
             VALUES ('gatherer', 4, '0004_future', 'x')",
            &[],
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let error = migrate(&mut client, &GATHERER).err().map(|e| e.to_string());
    assert_eq!(
        error.as_deref(),
        Some(
            "schema gatherer: the database has migration 4 (0004_future) applied, which this \
             build does not know (it knows up to 3); use the kdp build that migrated it"
        )
    );
}

#[test]
fn each_migration_is_its_own_transaction() {
    const BROKEN: Schema = Schema {
        name: "broken",
        migrations: &[
            Migration { version: 1, name: "0001_ok", sql: "CREATE TABLE one (x int);" },
            Migration {
                version: 2,
                name: "0002_fails",
                sql: "CREATE TABLE two (x int); SELECT no_such_function();",
            },
        ],
    };
    let (_db, mut client) = db();
    let error = migrate(&mut client, &BROKEN).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(error.starts_with("schema broken: migration 2 (0002_fails) failed: "), "{error}");
    assert_eq!(tables(&mut client), ["one", "schema_migrations"]);
    let versions: Vec<i32> = client
        .query("SELECT version FROM schema_migrations WHERE schema = 'broken'", &[])
        .unwrap_or_else(|e| panic!("{e}"))
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, [1]);
}
