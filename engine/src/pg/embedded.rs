//! `EmbeddedPostgres`: a private PostgreSQL cluster run from the installed server binaries, used
//! when no database URL is configured (DESIGN §5, "Embedded default").
//!
//! Layout under the cluster root: `data/` (the cluster), `sock/` (a private unix socket
//! directory) and `postgres.log` (the server's stderr). The root is either a caller-given
//! persistent directory, reused when already initialised, or an ephemeral `kdp-pg-<pid>-<rand>`
//! directory under the system temp dir that is removed on stop.
//!
//! The server runs as a direct child (`postgres`, not `pg_ctl`), so we hold its pid. It listens
//! on 127.0.0.1 only, on a free port. As root, `initdb` and `postgres` run as the `postgres`
//! system user. Nothing is ever orphaned: `stop`/`Drop` send SIGINT (fast shutdown), then SIGKILL
//! after a bound; if this process dies first, the kernel sends the server SIGINT (parent-death
//! signal, see `sys::die_with_parent`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, TryRecvError};
use std::sync::{Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use super::bindir::BinSearch;
use super::sys::{self, UserIds};
use super::{PgError, random_suffix};

/// The only address the server listens on: the cluster is private to this machine.
pub const HOST: &str = "127.0.0.1";
/// The superuser `initdb` creates; every connection to the embedded server uses it.
pub const SUPERUSER: &str = "postgres";
/// The database that always exists, used for readiness probes and `CREATE DATABASE`.
pub const MAINTENANCE_DB: &str = "postgres";
/// As root, the server must run unprivileged; the postgresql packages create this user.
const SERVICE_USER: &str = "postgres";

/// Connections the server accepts: parallel tests each hold a few (the default 100 runs out).
const MAX_CONNECTIONS: u32 = 300;
/// Start attempts: a port picked by binding :0 is rarely taken before the server binds it, so
/// losing it this many times in a row means something else is wrong.
const START_ATTEMPTS_MAX: u32 = 5;
/// Time from spawning the server to its first accepted connection, per attempt; covers crash
/// recovery of a persistent cluster on a slow disk.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Gap between readiness probes; a fresh ephemeral cluster is ready in well under a second.
const READY_POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Bound on one connection attempt (readiness probes and `config()` users alike).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Fast shutdown writes a checkpoint; a busy persistent cluster can take tens of seconds.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// After SIGKILL the kernel reaps the process promptly; waiting longer cannot help.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);
/// Lines of the server log or initdb output quoted in errors.
const LOG_TAIL_LINES: usize = 30;
/// Unix socket paths must fit `sun_path` (108 bytes on Linux, 104 on the BSDs); stay clear.
const SOCKET_PATH_MAX_BYTES: usize = 100;
/// Longest socket file name PostgreSQL creates in the socket dir (`.s.PGSQL.65535`).
const SOCKET_FILE_NAME_MAX: &str = ".s.PGSQL.65535";
/// Prefix of ephemeral roots under the temp dir; the janitor only touches these.
const EPHEMERAL_PREFIX: &str = "kdp-pg-";

/// Where the embedded cluster keeps its data and which binaries it uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EmbeddedOptions {
    root: Option<PathBuf>,
    bin_search: BinSearch,
}

impl EmbeddedOptions {
    /// A throw-away cluster under the system temp dir, removed on stop; durability settings off.
    pub fn ephemeral() -> Self {
        Self::default()
    }

    /// A durable cluster in `root` (created if missing, reused if already initialised).
    pub fn persistent(root: impl Into<PathBuf>) -> Self {
        Self { root: Some(root.into()), bin_search: BinSearch::default() }
    }

    /// Overrides where the server binaries are looked for (default: [`BinSearch::System`]).
    pub fn bin_search(mut self, bin_search: BinSearch) -> Self {
        self.bin_search = bin_search;
        self
    }
}

/// A running private PostgreSQL server. Stopped by [`EmbeddedPostgres::stop`] or on drop.
#[derive(Debug)]
pub struct EmbeddedPostgres {
    root: PathBuf,
    /// Where `initdb` and `postgres` were found (kept for [`EmbeddedPostgres::restart_immediate`]).
    bin_dir: PathBuf,
    ephemeral: bool,
    port: u16,
    pid: u32,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    process: ServerProcess,
    root_removed: bool,
}

impl EmbeddedPostgres {
    /// Starts a throw-away cluster; see [`EmbeddedOptions::ephemeral`].
    pub fn ephemeral() -> Result<Self, PgError> {
        Self::start(EmbeddedOptions::ephemeral())
    }

    /// Starts (initialising if needed) a durable cluster in `root`.
    pub fn persistent(root: impl Into<PathBuf>) -> Result<Self, PgError> {
        Self::start(EmbeddedOptions::persistent(root))
    }

    /// Finds the binaries, prepares the root, runs `initdb` if needed and starts the server,
    /// returning once it accepts connections.
    pub fn start(options: EmbeddedOptions) -> Result<Self, PgError> {
        Self::start_with_ports(options, &mut free_port)
    }

    /// `start`, taking ports from `pick_port` (tests inject a taken port to exercise retries).
    fn start_with_ports(
        options: EmbeddedOptions,
        pick_port: PortPicker<'_>,
    ) -> Result<Self, PgError> {
        let bin_dir = options.bin_search.find()?;
        let user = ServerUser::for_this_process()?;
        match options.root {
            Some(root) => {
                Self::start_in(&bin_dir, &user, prepare_root(&root, &user)?, false, pick_port)
            }
            None => {
                let temp = std::env::temp_dir();
                remove_stale_ephemeral_roots(&temp);
                let root = temp.join(format!(
                    "{EPHEMERAL_PREFIX}{}-{}",
                    std::process::id(),
                    random_suffix()?
                ));
                let root = prepare_root(&root, &user)?;
                let started = Self::start_in(&bin_dir, &user, root.clone(), true, pick_port);
                if started.is_err() {
                    remove_root(&root);
                }
                started
            }
        }
    }

    fn start_in(
        bin_dir: &Path,
        user: &ServerUser,
        root: PathBuf,
        ephemeral: bool,
        pick_port: PortPicker<'_>,
    ) -> Result<Self, PgError> {
        let layout = Layout::new(&root)?;
        make_private_dir(&layout.sock, user)?;
        if !layout.data.join("PG_VERSION").is_file() {
            run_initdb(bin_dir, user, &layout, ephemeral)?;
        }
        let (process, port) = launch(bin_dir, user, &layout, ephemeral, pick_port)?;
        tracing::info!(pid = process.pid, port, root = %root.display(), ephemeral, "embedded PostgreSQL ready");
        Ok(Self {
            root,
            bin_dir: bin_dir.to_owned(),
            ephemeral,
            port,
            pid: process.pid,
            state: Mutex::new(State { process, root_removed: false }),
        })
    }

    /// Always `127.0.0.1`.
    pub fn host(&self) -> &str {
        HOST
    }

    /// The TCP port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The superuser to connect as (`postgres`; trust authentication, no password).
    pub fn user(&self) -> &str {
        SUPERUSER
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The cluster root (holds `data/`, `sock/` and `postgres.log`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// True for a throw-away cluster whose root is removed on stop.
    pub fn is_ephemeral(&self) -> bool {
        self.ephemeral
    }

    /// `postgres://postgres@127.0.0.1:PORT/DBNAME`; `dbname` must be a plain identifier.
    pub fn url(&self, dbname: &str) -> String {
        format!("postgres://{SUPERUSER}@{HOST}:{}/{dbname}", self.port)
    }

    /// Connection settings for database `dbname` on this server.
    pub fn config(&self, dbname: &str) -> postgres::Config {
        connection_config(self.port, dbname)
    }

    /// Stops the server (SIGINT, then SIGKILL after a bound) and removes an ephemeral root.
    pub fn stop(self) -> Result<(), PgError> {
        self.shutdown()
    }

    /// Crash tests: stops the server in **immediate** mode (SIGQUIT to the postmaster, what
    /// `pg_ctl stop -m immediate` sends: every session is cut, no shutdown checkpoint, so the
    /// next start runs crash recovery from the WAL) and starts it again on the same data
    /// directory and the same port, returning once it accepts connections. Clients see their
    /// connections fail and then reconnect to the same address. Only a persistent cluster keeps
    /// every acknowledged commit: an ephemeral one runs with `synchronous_commit=off` and may lose
    /// its last fraction of a second of commits here.
    pub fn restart_immediate(&mut self) -> Result<(), PgError> {
        let user = ServerUser::for_this_process()?;
        let layout = Layout::new(&self.root)?;
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        if state.process.poll_exit().is_none() {
            sys::send_signal(state.process.pid, libc::SIGQUIT).map_err(|e| {
                PgError::io("send SIGQUIT (immediate shutdown) to", &layout.data, e)
            })?;
            if !state.process.wait_exit(STOP_TIMEOUT) {
                state.process.stop()?;
            }
        }
        let port = self.port;
        let mut same_port = || Ok(port);
        let (process, _) = launch(&self.bin_dir, &user, &layout, self.ephemeral, &mut same_port)?;
        tracing::info!(
            pid = process.pid,
            port,
            "embedded PostgreSQL restarted after an immediate stop"
        );
        self.pid = process.pid;
        state.process = process;
        Ok(())
    }

    /// Idempotent stop usable through a shared reference (by `Drop` and the test server's
    /// process-exit hook).
    pub(crate) fn shutdown(&self) -> Result<(), PgError> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.process.stop()?;
        if self.ephemeral && !state.root_removed {
            state.root_removed = true;
            remove_root(&self.root);
        }
        Ok(())
    }
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        if let Err(error) = self.shutdown() {
            tracing::error!(%error, "stopping embedded PostgreSQL");
        }
    }
}

fn connection_config(port: u16, dbname: &str) -> postgres::Config {
    let mut config = postgres::Config::new();
    config.host(HOST).port(port).user(SUPERUSER).dbname(dbname).connect_timeout(CONNECT_TIMEOUT);
    config
}

/// The user `initdb` and the server run as: ourselves, or `postgres` when we are root.
#[derive(Debug)]
struct ServerUser {
    drop_to: Option<UserIds>,
}

impl ServerUser {
    fn for_this_process() -> Result<Self, PgError> {
        if !sys::is_root() {
            return Ok(Self { drop_to: None });
        }
        let ids = sys::lookup_user(SERVICE_USER)
            .map_err(|e| PgError::io("look up the system user", SERVICE_USER, e))?
            .ok_or_else(|| PgError::ServiceUserMissing { user: SERVICE_USER.to_owned() })?;
        Ok(Self { drop_to: Some(ids) })
    }

    fn apply(&self, command: &mut Command) {
        if let Some(ids) = self.drop_to {
            command.uid(ids.uid).gid(ids.gid);
        }
    }

    fn chown(&self, path: &Path) -> Result<(), PgError> {
        match self.drop_to {
            Some(ids) => std::os::unix::fs::chown(path, Some(ids.uid), Some(ids.gid))
                .map_err(|e| PgError::io("chown to the postgres user", path, e)),
            None => Ok(()),
        }
    }

    /// Checks every ancestor of `root` can be entered by the server's user. Only the primary
    /// group counts: std drops supplementary groups when it changes uid.
    fn check_reachable(&self, root: &Path) -> Result<(), PgError> {
        let Some(ids) = self.drop_to else { return Ok(()) };
        for dir in root.ancestors().skip(1) {
            let meta = fs::metadata(dir).map_err(|e| PgError::io("stat", dir, e))?;
            let mode = meta.mode();
            let bit = if meta.uid() == ids.uid {
                0o100
            } else if meta.gid() == ids.gid {
                0o010
            } else {
                0o001
            };
            if mode & bit == 0 {
                return Err(PgError::DirNotTraversable {
                    user: SERVICE_USER.to_owned(),
                    root: root.to_owned(),
                    blocked: dir.to_owned(),
                    mode: mode & 0o7777,
                });
            }
        }
        Ok(())
    }
}

/// Creates `root` if needed, returns its canonical path, checked reachable and owned by the
/// server's user (as root, a directory the user asked for is handed to `postgres`).
fn prepare_root(root: &Path, user: &ServerUser) -> Result<PathBuf, PgError> {
    fs::create_dir_all(root).map_err(|e| PgError::io("create directory", root, e))?;
    let root = fs::canonicalize(root).map_err(|e| PgError::io("resolve path", root, e))?;
    user.check_reachable(&root)?;
    user.chown(&root)?;
    Ok(root)
}

fn make_private_dir(dir: &Path, user: &ServerUser) -> Result<(), PgError> {
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(PgError::io("create directory", dir, e)),
    }
    user.chown(dir)
}

fn remove_root(root: &Path) {
    if let Err(error) = fs::remove_dir_all(root)
        && error.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(%error, root = %root.display(), "could not remove embedded PostgreSQL directory");
    }
}

/// Paths inside a cluster root.
#[derive(Debug)]
struct Layout {
    root: PathBuf,
    data: PathBuf,
    sock: PathBuf,
    log: PathBuf,
}

impl Layout {
    fn new(root: &Path) -> Result<Self, PgError> {
        let sock = root.join("sock");
        let socket_path = sock.join(SOCKET_FILE_NAME_MAX);
        let len = socket_path.as_os_str().len();
        if len >= SOCKET_PATH_MAX_BYTES {
            return Err(PgError::SocketPathTooLong {
                path: socket_path,
                len,
                max: SOCKET_PATH_MAX_BYTES,
            });
        }
        Ok(Self {
            root: root.to_owned(),
            data: root.join("data"),
            sock,
            log: root.join("postgres.log"),
        })
    }
}

fn run_initdb(
    bin_dir: &Path,
    user: &ServerUser,
    layout: &Layout,
    ephemeral: bool,
) -> Result<(), PgError> {
    let program = bin_dir.join("initdb");
    let mut command = Command::new(&program);
    command
        .arg("-D")
        .arg(&layout.data)
        .args(["-A", "trust", "-U", SUPERUSER, "-E", "UTF8", "--locale=C"])
        .current_dir(&layout.root)
        .stdin(Stdio::null());
    if ephemeral {
        command.arg("--no-sync");
    }
    user.apply(&mut command);
    let output = command.output().map_err(|e| PgError::io("run", &program, e))?;
    if output.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    Err(PgError::InitdbFailed {
        data_dir: layout.data.clone(),
        status: output.status.to_string(),
        output: tail_lines(&text),
    })
}

/// Starts the server on a free port, retrying when another process takes the port first.
fn launch(
    bin_dir: &Path,
    user: &ServerUser,
    layout: &Layout,
    ephemeral: bool,
    pick_port: PortPicker<'_>,
) -> Result<(ServerProcess, u16), PgError> {
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(&layout.log)
        .map_err(|e| PgError::io("open server log", &layout.log, e))?;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let port = pick_port()?;
        let log_start =
            log.seek(SeekFrom::End(0)).map_err(|e| PgError::io("seek", &layout.log, e))?;
        let command = server_command(bin_dir, user, layout, ephemeral, port, &log)?;
        let mut process = ServerProcess::spawn(command)?;
        let outcome = wait_ready(&mut process, &layout.sock, port);
        let log_text = read_from(&mut log, log_start);
        match outcome {
            Readiness::Ready => return Ok((process, port)),
            Readiness::Exited(status) => {
                if !port_was_taken(&log_text) {
                    return Err(PgError::ServerExited {
                        status,
                        log: layout.log.clone(),
                        tail: tail_lines(&log_text),
                    });
                }
                if attempt >= START_ATTEMPTS_MAX {
                    return Err(PgError::PortsExhausted {
                        attempts: attempt,
                        log: layout.log.clone(),
                        tail: tail_lines(&log_text),
                    });
                }
                tracing::warn!(port, attempt, "port taken before PostgreSQL bound it; retrying");
            }
            Readiness::TimedOut(last_error) => {
                process.stop()?;
                return Err(PgError::StartTimeout {
                    port,
                    timeout_s: READY_TIMEOUT.as_secs(),
                    last_error,
                    log: layout.log.clone(),
                    tail: tail_lines(&read_from(&mut log, log_start)),
                });
            }
        }
    }
}

fn server_command(
    bin_dir: &Path,
    user: &ServerUser,
    layout: &Layout,
    ephemeral: bool,
    port: u16,
    log: &File,
) -> Result<Command, PgError> {
    let stdout = log.try_clone().map_err(|e| PgError::io("duplicate handle of", &layout.log, e))?;
    let stderr = log.try_clone().map_err(|e| PgError::io("duplicate handle of", &layout.log, e))?;
    let mut command = Command::new(bin_dir.join("postgres"));
    command
        .arg("-D")
        .arg(&layout.data)
        .arg("-p")
        .arg(port.to_string())
        .arg("-k")
        .arg(&layout.sock)
        .arg("-c")
        .arg(format!("listen_addresses={HOST}"))
        .arg("-c")
        .arg(format!("max_connections={MAX_CONNECTIONS}"))
        .current_dir(&layout.root)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        // Its own process group, so a terminal's Ctrl-C reaches only kdp, which then stops the
        // server last, after its own orderly shutdown has flushed to it.
        .process_group(0);
    if ephemeral {
        // Test clusters trade crash safety for speed; persistent clusters stay durable.
        for setting in ["fsync=off", "synchronous_commit=off", "full_page_writes=off"] {
            command.arg("-c").arg(setting);
        }
    }
    user.apply(&mut command);
    sys::die_with_parent(&mut command);
    Ok(command)
}

/// Source of ports to try, one per start attempt.
type PortPicker<'a> = &'a mut dyn FnMut() -> Result<u16, PgError>;

/// True if the server log says it lost its port to another process.
fn port_was_taken(log_text: &str) -> bool {
    log_text.contains("Address already in use")
}

/// A port that was free a moment ago: the kernel's pick for a socket bound to port 0.
fn free_port() -> Result<u16, PgError> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| PgError::io("bind a free port on", HOST, e))?;
    let port = listener.local_addr().map_err(|e| PgError::io("read address of", HOST, e))?.port();
    Ok(port)
}

enum Readiness {
    Ready,
    Exited(String),
    TimedOut(String),
}

/// Polls connections until one succeeds, the server exits, or `READY_TIMEOUT` passes.
///
/// Probes go through the private unix socket, never TCP: if another process took the port, a
/// TCP probe would reach *it* and could wait forever for a PostgreSQL handshake, while the
/// socket in `sock_dir` can only be our server's. The postmaster creates it after binding TCP,
/// so an answer there also means the port is ours.
fn wait_ready(process: &mut ServerProcess, sock_dir: &Path, port: u16) -> Readiness {
    let mut config = postgres::Config::new();
    config
        .host_path(sock_dir)
        .port(port)
        .user(SUPERUSER)
        .dbname(MAINTENANCE_DB)
        .connect_timeout(CONNECT_TIMEOUT);
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(status) = process.poll_exit() {
            return Readiness::Exited(status.to_owned());
        }
        let last_error = match config.connect(postgres::NoTls) {
            Ok(_client) => return Readiness::Ready,
            Err(error) => error.to_string(),
        };
        if Instant::now() >= deadline {
            return Readiness::TimedOut(last_error);
        }
        thread::sleep(READY_POLL_INTERVAL);
    }
}

/// The server child, spawned by and waited on from its own thread.
///
/// The parent-death signal fires when the *thread* that forked the child exits, not the
/// process. So the spawning thread is dedicated: it blocks in `wait()` for the server's whole
/// life and ends only after the server has exited. It outlives every other owner, and dies early
/// only with the whole process — exactly when the signal should fire.
#[derive(Debug)]
struct ServerProcess {
    pid: u32,
    exit_rx: Receiver<io::Result<ExitStatus>>,
    exit_status: Option<String>,
}

impl ServerProcess {
    fn spawn(mut command: Command) -> Result<Self, PgError> {
        let program = PathBuf::from(command.get_program());
        // Capacity 1 so the server thread never blocks on a send nobody receives.
        let (started_tx, started_rx) = mpsc::sync_channel(1);
        let (exit_tx, exit_rx) = mpsc::sync_channel(1);
        thread::Builder::new()
            .name("kdp-postgres".to_owned())
            .spawn(move || {
                let mut child = match command.spawn() {
                    Ok(child) => child,
                    Err(error) => {
                        let _ = started_tx.send(Err(error));
                        return;
                    }
                };
                let _ = started_tx.send(Ok(child.id()));
                let _ = exit_tx.send(child.wait());
            })
            .map_err(|e| PgError::io("start the server thread for", &program, e))?;
        let pid = started_rx
            .recv()
            .unwrap_or_else(|_| Err(io::Error::other("server thread ended before spawning")))
            .map_err(|e| PgError::io("start", &program, e))?;
        Ok(Self { pid, exit_rx, exit_status: None })
    }

    /// The exit status if the server has exited, without blocking.
    fn poll_exit(&mut self) -> Option<&str> {
        if self.exit_status.is_none() {
            match self.exit_rx.try_recv() {
                Ok(result) => self.exit_status = Some(describe_exit(result)),
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::Disconnected) => self.exit_status = Some(thread_gone()),
            }
        }
        self.exit_status.as_deref()
    }

    /// Waits up to `timeout` for the server to exit; true once it has.
    fn wait_exit(&mut self, timeout: Duration) -> bool {
        if self.exit_status.is_none() {
            match self.exit_rx.recv_timeout(timeout) {
                Ok(result) => self.exit_status = Some(describe_exit(result)),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => self.exit_status = Some(thread_gone()),
            }
        }
        self.exit_status.is_some()
    }

    /// SIGINT (fast shutdown), then SIGKILL if it has not exited within `STOP_TIMEOUT`.
    /// Signals are only sent while the child is unreaped, so its pid cannot have been reused.
    fn stop(&mut self) -> Result<(), PgError> {
        if self.poll_exit().is_some() {
            return Ok(());
        }
        if let Err(error) = sys::send_signal(self.pid, libc::SIGINT) {
            tracing::warn!(%error, pid = self.pid, "SIGINT to PostgreSQL failed");
        }
        if self.wait_exit(STOP_TIMEOUT) {
            return Ok(());
        }
        tracing::warn!(
            pid = self.pid,
            timeout_s = STOP_TIMEOUT.as_secs(),
            "PostgreSQL ignored SIGINT; sending SIGKILL"
        );
        if let Err(error) = sys::send_signal(self.pid, libc::SIGKILL) {
            tracing::warn!(%error, pid = self.pid, "SIGKILL to PostgreSQL failed");
        }
        if self.wait_exit(KILL_TIMEOUT) {
            return Ok(());
        }
        Err(PgError::StopTimeout {
            pid: self.pid,
            timeout_s: (STOP_TIMEOUT + KILL_TIMEOUT).as_secs(),
        })
    }
}

fn describe_exit(result: io::Result<ExitStatus>) -> String {
    match result {
        Ok(status) => status.to_string(),
        Err(error) => format!("waiting for it failed: {error}"),
    }
}

fn thread_gone() -> String {
    "unknown: its waiting thread ended".to_owned()
}

/// Reads `file` from byte `start` to its end, lossily as UTF-8 (empty on error).
fn read_from(file: &mut File, start: u64) -> String {
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(start)).and_then(|_| file.read_to_end(&mut bytes)).is_err() {
        return String::new();
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn tail_lines(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

/// Removes `kdp-pg-<pid>-*` directories under `temp` left by processes that no longer exist
/// (killed before their exit hooks ran). Skips any whose server still runs. Errors are logged.
fn remove_stale_ephemeral_roots(temp: &Path) {
    let Ok(entries) = fs::read_dir(temp) else { return };
    for entry in entries.filter_map(Result::ok) {
        let Some(owner_pid) = ephemeral_owner(&entry.file_name().to_string_lossy()) else {
            continue;
        };
        // `file_type` does not follow symlinks: only real directories are candidates.
        if !entry.file_type().is_ok_and(|t| t.is_dir()) || sys::process_exists(owner_pid) {
            continue;
        }
        let root = entry.path();
        if postmaster_pid(&root.join("data")).is_some_and(sys::process_exists) {
            continue;
        }
        tracing::info!(root = %root.display(), owner_pid, "removing stale embedded PostgreSQL directory");
        remove_root(&root);
    }
}

/// The owner pid recorded in an ephemeral root's name, `kdp-pg-<pid>-<random>`.
fn ephemeral_owner(name: &str) -> Option<u32> {
    let (pid, _random) = name.strip_prefix(EPHEMERAL_PREFIX)?.split_once('-')?;
    pid.parse().ok()
}

/// The pid on the first line of `DATA/postmaster.pid`, if the server left one.
fn postmaster_pid(data: &Path) -> Option<u32> {
    let text = fs::read_to_string(data.join("postmaster.pid")).ok()?;
    text.lines().next()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ephemeral_owner_parses_only_our_names() {
        assert_eq!(ephemeral_owner("kdp-pg-1234-9f8e7d"), Some(1234));
        assert_eq!(ephemeral_owner("kdp-pg-x-9f8e7d"), None);
        assert_eq!(ephemeral_owner("kdp-pg-1234"), None);
        assert_eq!(ephemeral_owner("other-1234-9f"), None);
    }

    #[test]
    fn janitor_removes_dirs_of_dead_owners_only() {
        let temp = tempfile::tempdir().expect("tempdir");
        // pid_max is at most 2^22 on Linux, so this owner cannot exist.
        let dead = temp.path().join("kdp-pg-999999999-aa");
        let alive = temp.path().join(format!("kdp-pg-{}-bb", std::process::id()));
        let unrelated = temp.path().join("kdp-other-999999999-cc");
        for dir in [&dead, &alive, &unrelated] {
            fs::create_dir_all(dir.join("data")).expect("mkdir");
        }
        remove_stale_ephemeral_roots(temp.path());
        assert!(!dead.exists());
        assert!(alive.exists());
        assert!(unrelated.exists());
    }

    #[test]
    fn long_roots_are_refused_before_anything_starts() {
        let root = PathBuf::from(format!("/tmp/{}", "d".repeat(80)));
        let err = Layout::new(&root).expect_err("too long");
        assert!(matches!(err, PgError::SocketPathTooLong { len: 105, max: 100, .. }), "{err}");
    }

    #[test]
    fn retries_on_a_fresh_port_when_the_first_is_taken() {
        let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let taken_port = taken.local_addr().expect("addr").port();
        let mut offered = vec![taken_port];
        let mut picker = || offered.pop().map_or_else(free_port, Ok);
        let pg = EmbeddedPostgres::start_with_ports(EmbeddedOptions::ephemeral(), &mut picker)
            .expect("second attempt starts");
        assert_ne!(pg.port(), taken_port);
        let log = fs::read_to_string(pg.root().join("postgres.log")).expect("log");
        assert!(port_was_taken(&log), "{log}");
        let one: i32 = pg
            .config(MAINTENANCE_DB)
            .connect(postgres::NoTls)
            .expect("connect")
            .query_one("SELECT 1", &[])
            .expect("query")
            .get(0);
        assert_eq!(one, 1);
    }

    #[test]
    fn restart_immediate_keeps_committed_data_port_and_address() {
        // Durable settings: an ephemeral cluster's synchronous_commit=off may lose the last
        // commits to an immediate stop. A plain temp path (tempdir() is 0700: unreachable for
        // the postgres user when the tests run as root).
        let root = std::env::temp_dir().join(format!(
            "kdp-pg-restart-test-{}-{}",
            std::process::id(),
            random_suffix().expect("random")
        ));
        let mut pg = EmbeddedPostgres::persistent(&root).expect("start");
        let (port, pid) = (pg.port(), pg.pid());
        let mut client = pg.config(MAINTENANCE_DB).connect(postgres::NoTls).expect("connect");
        client
            .batch_execute("CREATE TABLE t (v int); INSERT INTO t VALUES (1), (2)")
            .expect("write");
        pg.restart_immediate().expect("restart");
        assert!(client.query_one("SELECT 1", &[]).is_err(), "the old session was cut");
        assert_eq!(pg.port(), port);
        assert_ne!(pg.pid(), pid);
        let log = fs::read_to_string(pg.root().join("postgres.log")).expect("log");
        assert!(log.contains("immediate shutdown request"), "{log}");
        let mut client = pg.config(MAINTENANCE_DB).connect(postgres::NoTls).expect("reconnect");
        let sum: i64 = client.query_one("SELECT sum(v) FROM t", &[]).expect("read").get(0);
        assert_eq!(sum, 3, "committed rows survive the immediate stop (crash recovery)");
        drop(client);
        pg.stop().expect("stop");
        remove_root(&root);
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let text: String = (1..=40).map(|i| format!("line {i}\n")).collect();
        let tail = tail_lines(&text);
        assert_eq!(tail.lines().count(), LOG_TAIL_LINES);
        assert_eq!(tail.lines().next(), Some("line 11"));
        assert_eq!(tail.lines().last(), Some("line 40"));
    }
}
