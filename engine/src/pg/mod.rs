//! PostgreSQL helpers: the embedded private cluster and isolated test databases.
//!
//! [`DatabaseServer::resolve`] picks the server: an explicit URL always wins, otherwise an
//! [`EmbeddedPostgres`] cluster is started from the installed server binaries (found by
//! [`BinSearch`]). [`testing::TestDatabase`] gives each test a database of its own.

mod bindir;
pub mod copy;
mod embedded;
mod error;
pub mod migrate;
mod server;
mod sys;
pub mod testing;

pub use bindir::BinSearch;
pub use embedded::{EmbeddedOptions, EmbeddedPostgres, HOST, MAINTENANCE_DB, SUPERUSER};
pub use error::PgError;
pub use server::{DATABASE_URL_ENV, DatabaseServer, ExternalServer, database_url_from_env};

/// Bytes of OS randomness in generated names: 64 bits make collisions across processes moot.
const RANDOM_SUFFIX_BYTES: usize = 8;

/// Arranges for the child process `command` spawns to get SIGINT (a clean stop for kdp's own
/// processes, fast shutdown for PostgreSQL) when the spawning thread exits, which includes this
/// process dying, even by SIGKILL: `kdp demo` starts its gatherers and deduplicator this way so
/// none outlives it. Spawn from a thread that outlives the child (e.g. the main thread).
pub fn interrupt_when_parent_exits(command: &mut std::process::Command) {
    sys::die_with_parent(command);
}

/// Sends SIGTERM (kdp's ordered stop: drain, commit, exit) to process `pid`.
pub fn terminate(pid: u32) -> std::io::Result<()> {
    sys::send_signal(pid, libc::SIGTERM)
}

/// A random lowercase hex string for unique directory and database names.
pub(crate) fn random_suffix() -> Result<String, PgError> {
    let mut bytes = [0u8; RANDOM_SUFFIX_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| {
        PgError::io("read random bytes from", "the OS", std::io::Error::other(e.to_string()))
    })?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
