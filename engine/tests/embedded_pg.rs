//! Acceptance tests for `kdp_engine::pg`: the embedded cluster (start, restart on a persistent
//! directory, stop on drop, missing binaries), server resolution from a URL, and isolated test
//! databases (binary COPY round trip, parallel isolation).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kdp_engine::pg::testing::{TestDatabase, test_server};
use kdp_engine::pg::{BinSearch, DatabaseServer, EmbeddedOptions, EmbeddedPostgres, PgError};
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::Type;
use postgres::{Client, NoTls};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Rows written by the COPY test.
const COPY_ROWS: i64 = 10_000;
/// Databases created side by side by the isolation test.
const PARALLEL_DATABASES: usize = 3;

/// One generated row: (id bigint, qty int, name text, flag bool, ts timestamptz).
type Row = (i64, i32, String, bool, SystemTime);

fn row(i: i64) -> Row {
    let qty = i32::try_from(i % 97).expect("small") - 48;
    let ts_us = 1_700_000_000_000_000 + u64::try_from(i).expect("non-negative") * 1_001;
    (i, qty, format!("ticker-{i:05}-é"), i % 3 == 0, UNIX_EPOCH + Duration::from_micros(ts_us))
}

fn connect(config: &postgres::Config) -> Client {
    config.connect(NoTls).expect("connect")
}

/// True once the process is gone and reaped (no `/proc` entry, not even a zombie).
fn process_gone(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// A scratch directory every user can traverse (tempfile's default 0700 would block the
/// `postgres` user when we run as root).
fn open_tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("kdp-pg-test-")
        .permissions(std::fs::Permissions::from_mode(0o755))
        .tempdir()
        .expect("tempdir")
}

fn no_binaries() -> EmbeddedOptions {
    EmbeddedOptions::ephemeral().bin_search(BinSearch::Dirs(Vec::new()))
}

#[test]
fn binary_copy_round_trips_every_row_exactly() -> TestResult {
    let db = TestDatabase::new()?;
    let mut client = db.connect()?;
    client.batch_execute(
        "CREATE TABLE trades (id bigint PRIMARY KEY, qty int NOT NULL, name text NOT NULL, \
         flag bool NOT NULL, ts timestamptz NOT NULL)",
    )?;

    let sink = client.copy_in("COPY trades (id, qty, name, flag, ts) FROM STDIN BINARY")?;
    let types = [Type::INT8, Type::INT4, Type::TEXT, Type::BOOL, Type::TIMESTAMPTZ];
    let mut writer = BinaryCopyInWriter::new(sink, &types);
    for i in 0..COPY_ROWS {
        let (id, qty, name, flag, ts) = row(i);
        writer.write(&[&id, &qty, &name, &flag, &ts])?;
    }
    assert_eq!(writer.finish()?, 10_000);

    let totals = client.query_one(
        "SELECT count(*), sum(id)::bigint, sum(qty), count(*) FILTER (WHERE flag), \
         min(ts), max(ts) FROM trades",
        &[],
    )?;
    assert_eq!(totals.get::<_, i64>(0), 10_000);
    assert_eq!(totals.get::<_, i64>(1), 49_995_000);
    assert_eq!(totals.get::<_, i64>(2), -396);
    assert_eq!(totals.get::<_, i64>(3), 3_334);
    assert_eq!(totals.get::<_, SystemTime>(4), UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    assert_eq!(
        totals.get::<_, SystemTime>(5),
        UNIX_EPOCH + Duration::from_micros(1_700_000_000_000_000 + 9_999 * 1_001)
    );

    let picked =
        client.query_one("SELECT id, qty, name, flag, ts FROM trades WHERE id = 4242", &[])?;
    let expected: Row = (
        4242,
        23,
        "ticker-04242-é".to_owned(),
        true,
        UNIX_EPOCH + Duration::from_micros(1_700_000_004_246_242),
    );
    assert_eq!(
        (picked.get(0), picked.get(1), picked.get(2), picked.get(3), picked.get(4)),
        expected
    );

    let all: Vec<Row> = client
        .query("SELECT id, qty, name, flag, ts FROM trades ORDER BY id", &[])?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    let written: Vec<Row> = (0..COPY_ROWS).map(row).collect();
    assert_eq!(all, written);
    Ok(())
}

#[test]
fn parallel_test_databases_are_isolated() -> TestResult {
    let barrier = Arc::new(Barrier::new(PARALLEL_DATABASES));
    let workers: Vec<_> = (0..PARALLEL_DATABASES)
        .map(|i| {
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || -> Result<String, PgError> {
                let db = TestDatabase::new()?;
                let mut client = db.connect()?;
                let setup = format!(
                    "CREATE TABLE only_in_{i} (v int); CREATE TABLE same_name (v int); \
                     INSERT INTO same_name VALUES ({i});"
                );
                client.batch_execute(&setup).expect("setup");
                // Every database now has its tables; none may see another's.
                barrier.wait();
                let tables: Vec<String> = client
                    .query(
                        "SELECT table_name::text FROM information_schema.tables \
                         WHERE table_schema = 'public' ORDER BY table_name",
                        &[],
                    )
                    .expect("list tables")
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                assert_eq!(tables, [format!("only_in_{i}"), "same_name".to_owned()]);
                let values: Vec<i32> = client
                    .query("SELECT v FROM same_name", &[])
                    .expect("select")
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                assert_eq!(values, [i32::try_from(i).expect("small")]);
                Ok(db.name().to_owned())
            })
        })
        .collect();
    let mut names = Vec::new();
    for worker in workers {
        names.push(worker.join().expect("worker panicked")?);
    }
    let mut distinct = names.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), PARALLEL_DATABASES);
    assert!(names.iter().all(|n| n.starts_with(&format!("kdp_t_{}_", std::process::id()))));

    // Dropping each TestDatabase dropped its database.
    let left = test_server()?
        .connect()?
        .query_one("SELECT count(*) FROM pg_database WHERE datname = ANY($1)", &[&names])?;
    assert_eq!(left.get::<_, i64>(0), 0);
    Ok(())
}

#[test]
fn persistent_cluster_keeps_data_across_restarts_and_stops_on_drop() -> TestResult {
    let dir = open_tempdir();
    let root = dir.path().join("cluster");

    let pg = EmbeddedPostgres::persistent(&root)?;
    assert!(!pg.is_ephemeral());
    assert_eq!(pg.host(), "127.0.0.1");
    assert_eq!(pg.user(), "postgres");
    assert_eq!(pg.url("postgres"), format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port()));
    let first_config = pg.config("postgres");
    connect(&first_config).batch_execute(
        "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('survives restart');",
    )?;
    let first_pid = pg.pid();
    pg.stop()?;
    assert!(process_gone(first_pid));
    assert!(first_config.connect(NoTls).is_err());
    assert!(root.join("data").join("PG_VERSION").is_file());

    let pg = EmbeddedPostgres::persistent(&root)?;
    assert_eq!(pg.root(), std::fs::canonicalize(&root)?);
    let kept: Vec<String> = connect(&pg.config("postgres"))
        .query("SELECT v FROM kept", &[])?
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(kept, ["survives restart"]);
    let (second_pid, second_config) = (pg.pid(), pg.config("postgres"));
    drop(pg);
    assert!(process_gone(second_pid));
    assert!(second_config.connect(NoTls).is_err());
    assert!(root.join("data").join("PG_VERSION").is_file(), "persistent data must stay");
    Ok(())
}

#[test]
fn ephemeral_cluster_is_removed_and_stopped_on_drop() -> TestResult {
    let pg = EmbeddedPostgres::ephemeral()?;
    assert!(pg.is_ephemeral());
    let root: PathBuf = pg.root().to_owned();
    let dir_name = root.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
    assert!(dir_name.starts_with(&format!("kdp-pg-{}-", std::process::id())), "{dir_name}");
    assert!(root.join("sock").is_dir());
    let one: i32 = connect(&pg.config("postgres")).query_one("SELECT 1", &[])?.get(0);
    assert_eq!(one, 1);
    let (pid, config) = (pg.pid(), pg.config("postgres"));
    drop(pg);
    assert!(process_gone(pid));
    assert!(config.connect(NoTls).is_err());
    assert!(!root.exists());
    Ok(())
}

#[test]
fn missing_binaries_give_the_typed_error_naming_the_package() {
    let empty = open_tempdir();
    let options =
        EmbeddedOptions::ephemeral().bin_search(BinSearch::Dirs(vec![empty.path().to_owned()]));
    let err = EmbeddedPostgres::start(options).expect_err("no binaries there");
    let PgError::BinariesNotFound { searched } = &err else { panic!("wrong error: {err}") };
    assert_eq!(searched, &empty.path().display().to_string());
    let message = err.to_string();
    assert!(message.contains("apt-get install postgresql"), "{message}");
    assert!(message.contains("KDP_DATABASE_URL"), "{message}");

    let err = DatabaseServer::resolve(None, no_binaries()).expect_err("nothing to start");
    assert!(matches!(err, PgError::BinariesNotFound { ref searched } if searched == "nothing"));
}

#[test]
fn root_refuses_a_cluster_dir_the_postgres_user_cannot_reach() {
    if !running_as_root() {
        // Only root drops to the `postgres` user; for anyone else the check does not apply.
        return;
    }
    let private = tempfile::Builder::new()
        .prefix("kdp-pg-test-private-")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()
        .expect("tempdir");
    let err = EmbeddedPostgres::persistent(private.path().join("cluster"))
        .expect_err("postgres cannot traverse a 0700 root-owned dir");
    let PgError::DirNotTraversable { blocked, mode, .. } = &err else {
        panic!("wrong error: {err}")
    };
    assert_eq!(blocked, &std::fs::canonicalize(private.path()).expect("canonical"));
    assert_eq!(*mode, 0o700);
    assert!(err.to_string().contains("outside a 0700 home"), "{err}");
}

#[test]
fn an_explicit_url_wins_and_serves_test_databases() -> TestResult {
    let pg = EmbeddedPostgres::ephemeral()?;
    // With no binaries allowed, success proves resolution never tried to start a cluster.
    let server = DatabaseServer::resolve(Some(&pg.url("postgres")), no_binaries())?;
    let DatabaseServer::External(external) = &server else { panic!("expected External") };
    assert_eq!(external.url(), pg.url("postgres"));

    let db = TestDatabase::create_on(&server)?;
    assert_eq!(db.url(), pg.url(db.name()));
    db.connect()?.batch_execute("CREATE TABLE t (v int); INSERT INTO t VALUES (7), (35);")?;
    let via_url: postgres::Config = db.url().parse()?;
    let sum: i64 = connect(&via_url).query_one("SELECT sum(v) FROM t", &[])?.get(0);
    assert_eq!(sum, 42);

    let name = db.name().to_owned();
    drop(db);
    let left: i64 = connect(&pg.config("postgres"))
        .query_one("SELECT count(*) FROM pg_database WHERE datname = $1", &[&name])?
        .get(0);
    assert_eq!(left, 0);
    Ok(())
}
