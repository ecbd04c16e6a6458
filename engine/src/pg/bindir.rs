//! Finding the PostgreSQL server binaries (`initdb`, `postgres`) for the embedded cluster.
//!
//! The system search tries, in order: `pg_config --bindir`, each directory on `PATH`, then the
//! highest version under `/usr/lib/postgresql/*/bin` (Debian/Ubuntu keep the server off `PATH`).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::PgError;

/// Where Debian and Ubuntu install one `bin` directory per PostgreSQL major version.
const DEBIAN_VERSIONS_ROOT: &str = "/usr/lib/postgresql";

/// How to look for the server binaries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum BinSearch {
    /// `pg_config --bindir`, then `PATH`, then the highest `/usr/lib/postgresql/*/bin`.
    #[default]
    System,
    /// Only these directories, in order. An empty list never finds anything (for tests).
    Dirs(Vec<PathBuf>),
}

impl BinSearch {
    /// Returns the first directory holding executable `initdb` and `postgres`.
    pub fn find(&self) -> Result<PathBuf, PgError> {
        let candidates = match self {
            BinSearch::System => system_candidates(),
            BinSearch::Dirs(dirs) => dirs.clone(),
        };
        if let Some(dir) = candidates.iter().find(|dir| has_server_binaries(dir)) {
            return Ok(dir.clone());
        }
        let searched = if candidates.is_empty() {
            "nothing".to_owned()
        } else {
            candidates.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
        };
        Err(PgError::BinariesNotFound { searched })
    }
}

/// All system candidates in search order; duplicates are harmless.
fn system_candidates() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    dirs.extend(pg_config_bindir());
    dirs.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
    dirs.extend(versioned_bin_dirs(Path::new(DEBIAN_VERSIONS_ROOT)));
    dirs
}

/// `pg_config --bindir`, if `pg_config` is on `PATH` and answers.
fn pg_config_bindir() -> Option<PathBuf> {
    let output = Command::new("pg_config").arg("--bindir").output().ok()?;
    if !output.status.success() {
        return None;
    }
    let dir = String::from_utf8(output.stdout).ok()?;
    let dir = dir.trim();
    (!dir.is_empty()).then(|| PathBuf::from(dir))
}

/// `ROOT/<version>/bin` for each numeric version directory, highest version first.
fn versioned_bin_dirs(root: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(root) else { return Vec::new() };
    let mut versions: Vec<(Vec<u32>, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let version: Vec<u32> =
                name.split('.').map(str::parse).collect::<Result<_, _>>().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versions.sort_by(|a, b| b.0.cmp(&a.0));
    versions.into_iter().map(|(_, dir)| dir).collect()
}

fn has_server_binaries(dir: &Path) -> bool {
    is_executable(&dir.join("initdb")) && is_executable(&dir.join("postgres"))
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_bin_dir(root: &Path, name: &str, programs: &[&str]) -> PathBuf {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).expect("mkdir");
        for program in programs {
            let path = dir.join(program);
            std::fs::write(&path, "#!/bin/sh\n").expect("write");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        dir
    }

    #[test]
    fn dirs_search_takes_the_first_complete_dir() {
        let root = tempfile::tempdir().expect("tempdir");
        let only_initdb = fake_bin_dir(root.path(), "a", &["initdb"]);
        let complete = fake_bin_dir(root.path(), "b", &["initdb", "postgres"]);
        let also_complete = fake_bin_dir(root.path(), "c", &["initdb", "postgres"]);
        let search = BinSearch::Dirs(vec![only_initdb, complete.clone(), also_complete]);
        assert_eq!(search.find().expect("found"), complete);
    }

    #[test]
    fn non_executable_binaries_do_not_count() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = fake_bin_dir(root.path(), "a", &["initdb", "postgres"]);
        std::fs::set_permissions(dir.join("postgres"), std::fs::Permissions::from_mode(0o644))
            .expect("chmod");
        let err = BinSearch::Dirs(vec![dir.clone()]).find().expect_err("not executable");
        assert!(
            matches!(&err, PgError::BinariesNotFound { searched } if *searched == dir.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn versioned_dirs_are_ordered_highest_first() {
        let root = tempfile::tempdir().expect("tempdir");
        for version in ["9.6", "15", "16", "notaversion"] {
            std::fs::create_dir_all(root.path().join(version).join("bin")).expect("mkdir");
        }
        let found = versioned_bin_dirs(root.path());
        let expected: Vec<PathBuf> =
            ["16", "15", "9.6"].iter().map(|v| root.path().join(v).join("bin")).collect();
        assert_eq!(found, expected);
    }
}
