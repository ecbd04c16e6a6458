//! Server resolution: an explicit database URL (from `KDP_DATABASE_URL` or the config) always
//! wins; without one, kdp starts its own embedded cluster.

use super::{EmbeddedOptions, EmbeddedPostgres, PgError, embedded};

/// Environment variable naming an existing server, e.g. `postgres://kdp@db:5432/kdp`.
pub const DATABASE_URL_ENV: &str = "KDP_DATABASE_URL";

/// Where kdp's database lives.
// One value per process, so the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum DatabaseServer {
    /// A server someone else runs, named by URL.
    External(ExternalServer),
    /// A private cluster kdp started and will stop when this value is dropped.
    Embedded(EmbeddedPostgres),
}

/// A server named by a validated URL (or libpq `key=value` string).
#[derive(Clone)]
pub struct ExternalServer {
    url: String,
    config: postgres::Config,
}

impl std::fmt::Debug for ExternalServer {
    // The URL may carry a password; `postgres::Config`'s Debug redacts it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalServer").field("config", &self.config).finish_non_exhaustive()
    }
}

impl ExternalServer {
    /// Parses `url`; fails with [`PgError::InvalidUrl`] (which does not echo the URL).
    pub fn new(url: &str) -> Result<Self, PgError> {
        let config = url.parse().map_err(|source| PgError::InvalidUrl { source })?;
        Ok(Self { url: url.to_owned(), config })
    }

    /// The URL as given.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// The value of `KDP_DATABASE_URL`, if set and not blank. The only place kdp reads it.
pub fn database_url_from_env() -> Option<String> {
    std::env::var(DATABASE_URL_ENV).ok().filter(|url| !url.trim().is_empty())
}

impl DatabaseServer {
    /// `url` (if given and not blank) wins; otherwise starts an embedded cluster per `embedded`.
    pub fn resolve(url: Option<&str>, embedded: EmbeddedOptions) -> Result<Self, PgError> {
        match url.map(str::trim).filter(|url| !url.is_empty()) {
            Some(url) => Ok(Self::External(ExternalServer::new(url)?)),
            None => Ok(Self::Embedded(EmbeddedPostgres::start(embedded)?)),
        }
    }

    /// [`DatabaseServer::resolve`] with the URL from `KDP_DATABASE_URL`.
    pub fn from_env(embedded: EmbeddedOptions) -> Result<Self, PgError> {
        Self::resolve(database_url_from_env().as_deref(), embedded)
    }

    /// Connection settings for the server's default database (the URL's, or `postgres`).
    pub fn config(&self) -> postgres::Config {
        match self {
            Self::External(server) => server.config.clone(),
            Self::Embedded(pg) => pg.config(embedded::MAINTENANCE_DB),
        }
    }

    /// Connection settings for database `dbname` on this server.
    pub fn config_for(&self, dbname: &str) -> postgres::Config {
        let mut config = self.config();
        config.dbname(dbname);
        config
    }

    /// A URL (or `key=value` string, if that is what was configured) for database `dbname`;
    /// `dbname` must be a plain identifier.
    pub fn url_for(&self, dbname: &str) -> String {
        match self {
            Self::External(server) => url_with_dbname(&server.url, dbname),
            Self::Embedded(pg) => pg.url(dbname),
        }
    }

    /// Connects to the server's default database.
    pub fn connect(&self) -> Result<postgres::Client, PgError> {
        connect(&self.config())
    }
}

/// Connects with `config`, naming the target (never the password) on failure.
pub(crate) fn connect(config: &postgres::Config) -> Result<postgres::Client, PgError> {
    config.connect(postgres::NoTls).map_err(|e| PgError::postgres(describe(config), e))
}

/// `connect to HOST:PORT/DBNAME` for error messages.
pub(crate) fn describe(config: &postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(host)) => host.clone(),
        Some(postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let dbname = config.get_dbname().or(config.get_user()).unwrap_or("?");
    format!("connect to {host}:{port}/{dbname}")
}

/// `url` with its database replaced by `dbname`: the path of a `postgres://` URL, or an added
/// `dbname=` pair (the last one wins) in a `key=value` string.
fn url_with_dbname(url: &str, dbname: &str) -> String {
    for scheme in ["postgres://", "postgresql://"] {
        if let Some(rest) = url.strip_prefix(scheme) {
            let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
            let (authority, tail) = rest.split_at(authority_end);
            let query = tail.find('?').map_or("", |i| &tail[i..]);
            return format!("{scheme}{authority}/{dbname}{query}");
        }
    }
    format!("{url} dbname={dbname}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_with_dbname_replaces_only_the_database() {
        let cases = [
            ("postgres://u:p@h:5432/old", "postgres://u:p@h:5432/new"),
            ("postgres://u@h", "postgres://u@h/new"),
            ("postgresql://h/old?sslmode=disable", "postgresql://h/new?sslmode=disable"),
            ("postgres://h?application_name=x", "postgres://h/new?application_name=x"),
            ("host=h user=u dbname=old", "host=h user=u dbname=old dbname=new"),
        ];
        for (url, expected) in cases {
            assert_eq!(url_with_dbname(url, "new"), expected, "for {url}");
        }
    }

    #[test]
    fn rewritten_urls_parse_to_the_new_database() {
        for url in ["postgres://u@h:5433/old?connect_timeout=3", "host=h port=5433 dbname=old"] {
            let config: postgres::Config = url_with_dbname(url, "new").parse().expect("parses");
            assert_eq!(config.get_dbname(), Some("new"));
            assert_eq!(config.get_ports(), &[5433]);
        }
    }

    #[test]
    fn a_given_url_wins_and_is_validated() {
        let options =
            EmbeddedOptions::ephemeral().bin_search(super::super::BinSearch::Dirs(vec![]));
        let server = DatabaseServer::resolve(
            Some(" postgres://kdp:secret@db.example:6543/kdp "),
            options.clone(),
        )
        .expect("external");
        assert!(matches!(&server, DatabaseServer::External(_)));
        assert_eq!(server.url_for("other"), "postgres://kdp:secret@db.example:6543/other");
        assert_eq!(server.config_for("other").get_dbname(), Some("other"));
        assert_eq!(describe(&server.config()), "connect to db.example:6543/kdp");
        assert!(!format!("{server:?}").contains("secret"));

        let err = DatabaseServer::resolve(Some("postgres://h:notaport/db"), options.clone())
            .expect_err("bad port");
        assert!(matches!(err, PgError::InvalidUrl { .. }), "{err}");

        // Blank means "not configured": with no binaries allowed, that is the embedded error.
        let err = DatabaseServer::resolve(Some("  "), options).expect_err("no binaries");
        assert!(matches!(err, PgError::BinariesNotFound { .. }), "{err}");
    }
}
