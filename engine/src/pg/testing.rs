//! Test support (not for production use): every test gets its own freshly created database on
//! one process-wide server, and the database is dropped when the test's handle is.
//!
//! The server is chosen once per process: the one named by `KDP_DATABASE_URL` if set, else an
//! ephemeral embedded cluster. Both `cargo test` (tests as threads of one process, sharing the
//! server) and `cargo nextest` (one process per test, each with its own cluster) work. A static
//! is never dropped, so the embedded cluster is stopped by a process-exit hook; if the process is
//! killed instead, the server's parent-death signal stops it and the next cluster start removes
//! the leftover directory.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use super::server::connect;
use super::{DatabaseServer, EmbeddedOptions, PgError, database_url_from_env, random_suffix, sys};

/// The process-wide test server, or why it could not be started (reported to every test).
static SERVER: OnceLock<Result<DatabaseServer, String>> = OnceLock::new();
/// Makes database names unique within the process; the random part covers other processes.
static NEXT_DATABASE: AtomicU64 = AtomicU64::new(0);

/// The process-wide server test databases are created on, started on first use.
pub fn test_server() -> Result<&'static DatabaseServer, PgError> {
    SERVER
        .get_or_init(start_test_server)
        .as_ref()
        .map_err(|message| PgError::TestServerUnavailable(message.clone()))
}

fn start_test_server() -> Result<DatabaseServer, String> {
    let url = database_url_from_env();
    let server = DatabaseServer::resolve(url.as_deref(), EmbeddedOptions::ephemeral())
        .map_err(|error| error.to_string())?;
    if let DatabaseServer::Embedded(pg) = &server {
        if let Err(error) = sys::at_exit(stop_test_server) {
            tracing::warn!(%error, "no exit hook; the test server stops by parent-death signal");
        }
        tracing::info!(port = pg.port(), "test database server started");
    }
    Ok(server)
}

/// Process-exit hook: stops the embedded test server and removes its directory.
extern "C" fn stop_test_server() {
    if let Some(Ok(DatabaseServer::Embedded(pg))) = SERVER.get()
        && let Err(error) = pg.shutdown()
    {
        tracing::error!(%error, "stopping the test database server at exit");
    }
}

/// A database of its own for one test, `kdp_t_<pid>_<counter>_<random>`, dropped (with
/// `WITH (FORCE)`, ending open connections) when this value is dropped.
#[derive(Debug)]
pub struct TestDatabase {
    name: String,
    admin: postgres::Config,
    config: postgres::Config,
    url: String,
}

impl TestDatabase {
    /// Creates a fresh database on the process-wide [`test_server`].
    pub fn new() -> Result<Self, PgError> {
        Self::create_on(test_server()?)
    }

    /// Creates a fresh database on `server`. Dropping it needs `server` still running.
    pub fn create_on(server: &DatabaseServer) -> Result<Self, PgError> {
        let name = format!(
            "kdp_t_{}_{}_{}",
            std::process::id(),
            NEXT_DATABASE.fetch_add(1, Ordering::Relaxed),
            random_suffix()?
        );
        let admin = server.config();
        connect(&admin)?
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .map_err(|e| PgError::postgres(format!("CREATE DATABASE {name}"), e))?;
        Ok(Self { config: server.config_for(&name), url: server.url_for(&name), name, admin })
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Connection settings for this database.
    pub fn config(&self) -> postgres::Config {
        self.config.clone()
    }

    /// A URL for this database (for code that takes a URL, such as the CLI).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Opens a new connection to this database.
    pub fn connect(&self) -> Result<postgres::Client, PgError> {
        connect(&self.config)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let dropped = connect(&self.admin).and_then(|mut client| {
            client.batch_execute(&sql).map_err(|e| PgError::postgres(sql.as_str(), e))
        });
        if let Err(error) = dropped {
            tracing::warn!(%error, database = %self.name, "could not drop test database");
        }
    }
}

/// A LOGIN role of its own for one test, member of a group role (e.g. `kdp_gatherer_writer`), to
/// prove what a least-privilege role may and may not do. Named `<database>_<suffix>`: unique in
/// the cluster because the database name is. Dropped with the handle (its sessions ended first).
/// Test support: panics on failure, like an assertion.
#[derive(Debug)]
pub struct LoginUser {
    name: String,
    config: postgres::Config,
    admin: postgres::Config,
}

/// How long dropping a [`LoginUser`] retries while the role's ended sessions finish their exit
/// cleanup (their temporary tables belong to the role).
const LOGIN_USER_DROP_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

impl LoginUser {
    /// Creates the role in `db`'s cluster and grants it `group`; connections as it go to `db`.
    pub fn new(db: &TestDatabase, group: &str, suffix: &str) -> LoginUser {
        let name = format!("{}_{suffix}", db.name());
        let mut admin = db.connect().unwrap_or_else(|e| panic!("connect as the owner: {e}"));
        admin
            .batch_execute(&format!("CREATE ROLE {name} LOGIN; GRANT {group} TO {name}"))
            .unwrap_or_else(|e| panic!("create {name}: {e}"));
        let mut config = db.config();
        config.user(&name);
        LoginUser { name, config, admin: db.config() }
    }

    /// Connection settings as this role.
    pub fn config(&self) -> postgres::Config {
        self.config.clone()
    }

    /// A connection as this role.
    pub fn connect(&self) -> postgres::Client {
        self.config
            .connect(postgres::NoTls)
            .unwrap_or_else(|e| panic!("connect as {}: {e}", self.name))
    }
}

impl Drop for LoginUser {
    fn drop(&mut self) {
        let Ok(mut admin) = self.admin.connect(postgres::NoTls) else { return };
        let _ = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
            &[&self.name],
        );
        let deadline = std::time::Instant::now() + LOGIN_USER_DROP_WAIT;
        while let Err(error) = admin.batch_execute(&format!("DROP ROLE IF EXISTS {}", self.name)) {
            if std::time::Instant::now() > deadline {
                tracing::warn!(role = %self.name, %error, "could not drop a test login role");
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// Runs `sql` and asserts PostgreSQL refused it for lack of privilege (SQLSTATE 42501).
pub fn assert_refused(client: &mut postgres::Client, sql: &str) {
    match client.batch_execute(sql) {
        Ok(()) => panic!("{sql:?} was allowed"),
        Err(e) => assert_eq!(
            e.code(),
            Some(&postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
            "{sql:?} failed otherwise: {:?}",
            e.as_db_error()
        ),
    }
}
