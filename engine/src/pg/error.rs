//! `PgError`: everything that can go wrong finding, starting, stopping or using a PostgreSQL
//! server. Each message says what happened and what to do about it.

use std::io;
use std::path::PathBuf;

/// Errors from the embedded cluster, server resolution and test databases.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// No directory holding both `initdb` and `postgres` was found.
    #[error(
        "PostgreSQL server binaries (initdb, postgres) not found (searched: {searched}); install \
         them: `apt-get install postgresql` (Debian/Ubuntu) or `dnf install postgresql-server` \
         (Fedora/RHEL), or set KDP_DATABASE_URL to use an existing server"
    )]
    BinariesNotFound {
        /// Where we looked, in search order.
        searched: String,
    },

    /// Running as root, but the unprivileged user to run the server as does not exist.
    #[error(
        "running as root, so the embedded PostgreSQL must run as the `{user}` system user, but \
         that user does not exist; install the postgresql package (it creates the user), run kdp \
         as a non-root user, or set KDP_DATABASE_URL to use an existing server"
    )]
    ServiceUserMissing {
        /// The user name looked up.
        user: String,
    },

    /// A parent directory of the cluster root cannot be entered by the server's user.
    #[error(
        "the `{user}` user that runs the embedded PostgreSQL cannot reach {root}: {blocked} \
         (mode {mode:o}) is not traversable by it; choose a data directory outside a 0700 home \
         such as /root (for example under /var/lib or /tmp)"
    )]
    DirNotTraversable {
        /// The server's user.
        user: String,
        /// The cluster root directory asked for.
        root: PathBuf,
        /// The first ancestor that blocks traversal.
        blocked: PathBuf,
        /// That ancestor's permission bits.
        mode: u32,
    },

    /// The unix socket path would exceed the kernel's limit.
    #[error(
        "the server's unix socket path {path} would be {len} bytes, over the {max}-byte limit; \
         choose a data directory with a shorter path"
    )]
    SocketPathTooLong {
        /// The socket path that would be used.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },

    /// A filesystem or process operation failed.
    #[error("{action} {path} failed: {source}")]
    Io {
        /// What we were doing, e.g. "create directory".
        action: &'static str,
        /// The path (or program) involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// `initdb` ran but failed.
    #[error("initdb failed ({status}) for {data_dir}; its output:\n{output}")]
    InitdbFailed {
        /// The data directory being initialised.
        data_dir: PathBuf,
        /// Its exit status.
        status: String,
        /// The tail of its stdout and stderr.
        output: String,
    },

    /// The server process exited before it accepted connections.
    #[error("PostgreSQL server exited during startup ({status}); last lines of {log}:\n{tail}")]
    ServerExited {
        /// Its exit status.
        status: String,
        /// The server log file.
        log: PathBuf,
        /// The tail of that log.
        tail: String,
    },

    /// The server kept running but never accepted a connection.
    #[error(
        "PostgreSQL server did not accept connections on 127.0.0.1:{port} within {timeout_s} s \
         (last error: {last_error}); last lines of {log}:\n{tail}"
    )]
    StartTimeout {
        /// The port it was started on.
        port: u16,
        /// The bound that was exceeded.
        timeout_s: u64,
        /// The last connection error seen.
        last_error: String,
        /// The server log file.
        log: PathBuf,
        /// The tail of that log.
        tail: String,
    },

    /// Every start attempt lost its port to another process.
    #[error(
        "PostgreSQL server could not bind a free port on 127.0.0.1 in {attempts} attempts; last \
         lines of {log}:\n{tail}"
    )]
    PortsExhausted {
        /// How many ports were tried.
        attempts: u32,
        /// The server log file.
        log: PathBuf,
        /// The tail of that log.
        tail: String,
    },

    /// The server ignored SIGINT and SIGKILL.
    #[error(
        "PostgreSQL server (pid {pid}) did not exit within {timeout_s} s of SIGINT and SIGKILL; \
         check it with `ps -p {pid}` and kill it by hand"
    )]
    StopTimeout {
        /// The server's process id.
        pid: u32,
        /// The total time waited.
        timeout_s: u64,
    },

    /// A database URL could not be parsed. The URL itself is not echoed: it may hold a password.
    #[error(
        "invalid database URL ({source}); expected e.g. postgres://user@host:5432/dbname or \
         `host=... user=... dbname=...`"
    )]
    InvalidUrl {
        /// The parse error.
        #[source]
        source: postgres::Error,
    },

    /// A connection or SQL statement failed.
    #[error("{what} failed: {source}")]
    Postgres {
        /// What we were doing, e.g. "connect to 127.0.0.1:5432/postgres".
        what: String,
        /// The underlying error.
        #[source]
        source: postgres::Error,
    },

    /// The process-wide test server could not be started earlier; every test sees this.
    #[error("the shared test database server is unavailable: {0}")]
    TestServerUnavailable(String),
}

impl PgError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        PgError::Io { action, path: path.into(), source }
    }

    pub(crate) fn postgres(what: impl Into<String>, source: postgres::Error) -> Self {
        PgError::Postgres { what: what.into(), source }
    }
}
