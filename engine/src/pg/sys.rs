//! The few POSIX calls the embedded cluster needs that std does not offer: effective uid, user
//! lookup, signals, the parent-death signal and process-exit hooks. All `unsafe` in `pg` lives
//! here, one small function per call, each covered by a test below.

use std::ffi::CString;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// First buffer size for `getpwnam_r`; glibc's suggested `_SC_GETPW_R_SIZE_MAX` is 1 KiB.
const PASSWD_BUF_BYTES_INITIAL: usize = 4 * 1024;
/// Upper bound when `getpwnam_r` keeps asking for more room (ERANGE): no sane entry is larger.
const PASSWD_BUF_BYTES_MAX: usize = 1024 * 1024;

/// Numeric ids of a system user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UserIds {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

/// True when this process runs with effective uid 0.
#[allow(unsafe_code)]
pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Looks up a user by name in the system user database; `Ok(None)` if there is no such user.
#[allow(unsafe_code)]
pub(crate) fn lookup_user(name: &str) -> io::Result<Option<UserIds>> {
    let c_name = CString::new(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut buf_len = PASSWD_BUF_BYTES_INITIAL;
    loop {
        let mut buf: Vec<libc::c_char> = vec![0; buf_len];
        // SAFETY: `passwd` is plain integers and raw pointers, for which all-zero is valid.
        let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the duration of the call; `buf.len()` is the true
        // length of `buf`; the strings `entry` points into live in `buf`, which we do not read.
        let rc = unsafe {
            libc::getpwnam_r(c_name.as_ptr(), &mut entry, buf.as_mut_ptr(), buf.len(), &mut found)
        };
        if rc == libc::ERANGE && buf_len < PASSWD_BUF_BYTES_MAX {
            buf_len *= 2;
            continue;
        }
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        if found.is_null() {
            return Ok(None);
        }
        return Ok(Some(UserIds { uid: entry.pw_uid, gid: entry.pw_gid }));
    }
}

/// Sends `signal` to process `pid`.
#[allow(unsafe_code)]
pub(crate) fn send_signal(pid: u32, signal: libc::c_int) -> io::Result<()> {
    let pid =
        libc::pid_t::try_from(pid).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: kill has no memory-safety preconditions; a bad pid is reported through errno.
    if unsafe { libc::kill(pid, signal) } == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// True if a process with this pid exists (even one we may not signal).
pub(crate) fn process_exists(pid: u32) -> bool {
    match send_signal(pid, 0) {
        Ok(()) => true,
        Err(e) => e.raw_os_error() == Some(libc::EPERM),
    }
}

/// Arranges for the child spawned by `command` to receive SIGINT (PostgreSQL's fast shutdown)
/// when the *thread* that spawns it exits, which includes this whole process dying, even by
/// SIGKILL. Callers must spawn from a thread that outlives the child.
///
/// Std applies `uid`/`gid` before running `pre_exec` closures, and a credential change clears
/// the parent-death signal, so setting it here is what makes it survive the drop to `postgres`.
#[allow(unsafe_code)]
pub(crate) fn die_with_parent(command: &mut Command) {
    let parent_pid = std::process::id();
    let hook = move || {
        // SAFETY (of the calls below): prctl and getppid are async-signal-safe and touch no
        // memory of ours, as required between fork and exec.
        if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT as libc::c_ulong) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // The parent may have died between fork and prctl; then no signal will ever come.
        if u32::try_from(unsafe { libc::getppid() }).ok() != Some(parent_pid) {
            return Err(io::Error::other("parent exited before the server started"));
        }
        Ok(())
    };
    // SAFETY: the closure only makes async-signal-safe calls and does not allocate on success
    // (`io::Error::last_os_error` does not allocate; the `other` error path allocates but the
    // child then fails to exec, which std reports to the parent).
    unsafe {
        command.pre_exec(hook);
    }
}

/// Registers `hook` to run when the process exits normally (`exit` or return from `main`).
#[allow(unsafe_code)]
pub(crate) fn at_exit(hook: extern "C" fn()) -> io::Result<()> {
    // SAFETY: `hook` is a plain function with no captured state; it stays valid until exit.
    if unsafe { libc::atexit(hook) } == 0 {
        Ok(())
    } else {
        Err(io::Error::other("atexit refused the hook"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn looks_up_root_and_misses_unknown_users() {
        assert_eq!(lookup_user("root").expect("lookup"), Some(UserIds { uid: 0, gid: 0 }));
        assert_eq!(lookup_user("kdp-no-such-user-7f3a").expect("lookup"), None);
    }

    #[test]
    fn is_root_matches_proc_self_owner() {
        use std::os::unix::fs::MetadataExt;
        let euid = std::fs::metadata("/proc/self").expect("procfs").uid();
        assert_eq!(is_root(), euid == 0);
    }

    #[test]
    fn process_exists_for_self_and_signal_zero_works() {
        assert!(process_exists(std::process::id()));
        send_signal(std::process::id(), 0).expect("signal 0 to self");
    }

    #[test]
    fn child_gets_sigint_when_spawning_thread_exits() {
        // `sleep` would run for 60 s; the parent-death signal must end it as soon as the thread
        // that spawned it is gone, which is exactly why the server gets a dedicated thread.
        let child = std::thread::spawn(|| {
            let mut command = Command::new("sleep");
            command.arg("60");
            die_with_parent(&mut command);
            command.spawn().expect("spawn sleep")
        })
        .join()
        .expect("spawning thread");
        let mut child = child;
        let status = child.wait().expect("wait for sleep");
        assert_eq!(status.signal(), Some(libc::SIGINT));
    }

    #[test]
    fn at_exit_accepts_a_hook() {
        extern "C" fn noop() {}
        at_exit(noop).expect("atexit");
    }
}
