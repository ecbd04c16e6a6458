//! `kdp` as a real child process (`kdp gatherer`, `kdp dedup`): the binary built once per test
//! process by [`kdp_binary`], stdout/stderr in files shown when something goes wrong, SIGKILL,
//! SIGTERM with an ordered stop, and waiting on a crash; [`kdp`] runs a one-shot subcommand
//! (`kdp verify`, `kdp book`, ...) to its end. Used by `gatherer_restart.rs`, `dedup_crash.rs`,
//! `dedup_verify.rs`, `book.rs`, `trades.rs` and the other tests that run the binary.

use std::fs::File;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

use super::{POLL, WAIT, wait_for};

/// The workspace's `kdp` binary. A package's integration tests only get their own package's
/// binaries built (`CARGO_BIN_EXE_*`), and this crate is not the `kdp` package, so the binary is
/// built here, once per test process, by the cargo running the tests (`CARGO`), with the same
/// profile and target directory as this test executable (`<target>/<profile>/deps/<test>`):
/// on a clean clone `cargo test --workspace` builds it; when it is up to date this is a no-op.
pub fn kdp_binary() -> &'static Path {
    static KDP: OnceLock<PathBuf> = OnceLock::new();
    KDP.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().and_then(Path::parent).unwrap_or_else(|| {
            panic!("test executable {} is not in <profile>/deps", exe.display())
        });
        let target_dir = profile_dir.parent().unwrap();
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => "dev".to_owned(),
            Some(name) => name.to_owned(),
            None => panic!("no profile directory above {}", exe.display()),
        };
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
        println!("building kdp: {cargo:?} build -p kdp --bin kdp --profile {profile}");
        let status = Command::new(&cargo)
            .current_dir(workspace)
            .args(["build", "--quiet", "--package", "kdp", "--bin", "kdp", "--profile", &profile])
            .arg("--target-dir")
            .arg(target_dir)
            .status()
            .unwrap_or_else(|e| panic!("cannot run {cargo:?} to build the kdp binary: {e}"));
        assert!(
            status.success(),
            "`cargo build --bin kdp` failed ({status}): see its output above"
        );
        let bin = profile_dir.join("kdp");
        assert!(bin.is_file(), "cargo built kdp, yet {} does not exist", bin.display());
        bin
    })
}

/// Runs `kdp ARGS` to its end: (exit code, stdout, stderr).
pub fn kdp(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(kdp_binary()).args(args).output().unwrap();
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
    (out.status.code().unwrap(), text(&out.stdout), text(&out.stderr))
}

/// Environment variables the binary reads that would override a test's config file.
const OVERRIDES: [&str; 6] = [
    "KDP_DATABASE_URL",
    "KDP_KEY_ID",
    "KDP_PRIVATE_KEY_PATH",
    "KDP_PRODUCTION_DATABASE_URL",
    "KDP_DEDUP_CRASH_AT",
    "RUST_LOG",
];

/// A `kdp <subcommand> --config FILE` child process, killed when dropped (a failing test leaves
/// no process behind). Its stdout and stderr go to files shown when something goes wrong.
#[derive(Debug)]
pub struct KdpProcess {
    pub name: String,
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl KdpProcess {
    /// `kdp gatherer --config config`.
    pub fn gatherer(config: &Path, dir: &Path, name: &str) -> KdpProcess {
        KdpProcess::start("gatherer", config, dir, name, &[])
    }

    /// `kdp dedup --config config` with extra environment variables (e.g. a crash point).
    pub fn dedup(config: &Path, dir: &Path, name: &str, env: &[(&str, &str)]) -> KdpProcess {
        KdpProcess::start("dedup", config, dir, name, env)
    }

    fn start(
        subcommand: &str,
        config: &Path,
        dir: &Path,
        name: &str,
        env: &[(&str, &str)],
    ) -> KdpProcess {
        let stdout = dir.join(format!("{name}.stdout"));
        let stderr = dir.join(format!("{name}.stderr"));
        let mut command = Command::new(kdp_binary());
        command.args([subcommand, "--config"]).arg(config);
        // The config file names everything; the environment overrides must not apply.
        for var in OVERRIDES {
            command.env_remove(var);
        }
        command.env("RUST_LOG", "info");
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).unwrap())
            .stderr(File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        println!("{name}: kdp {subcommand} pid {} {env:?}", child.id());
        KdpProcess { name: name.to_owned(), child, stdout, stderr }
    }

    pub fn logs(&self) -> String {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        format!(
            "--- {} stdout ---\n{}--- {} stderr ---\n{}",
            self.name,
            read(&self.stdout),
            self.name,
            read(&self.stderr)
        )
    }

    /// The process's stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("{} exited early ({status})\n{}", self.name, self.logs());
        }
    }

    /// Its exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// Waits for `ready`, failing early if the process has exited.
    pub fn wait(&mut self, what: &str, mut ready: impl FnMut() -> bool) {
        wait_for(what, || {
            self.assert_running();
            ready()
        });
    }

    /// SIGKILL: the process gets no chance to flush anything.
    pub fn kill(&mut self) {
        self.assert_running();
        self.child.kill().unwrap();
        let status = self.child.wait().unwrap();
        println!("{}: killed ({status})", self.name);
        assert_eq!(status.signal(), Some(9), "{}: died of SIGKILL", self.name);
    }

    /// SIGTERM, then waits for the ordered shutdown; returns its stdout (the final counts).
    pub fn terminate(&mut self) -> String {
        self.assert_running();
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success(), "kill -TERM {pid}: {sent}");
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "{} still running {WAIT:?} after SIGTERM",
                self.name
            );
            std::thread::sleep(POLL);
        };
        let logs = self.logs();
        assert!(status.success(), "{} exited with {status} after SIGTERM\n{logs}", self.name);
        std::fs::read_to_string(&self.stdout).unwrap()
    }
}

impl Drop for KdpProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
