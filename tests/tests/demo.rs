//! `kdp demo` as a real process (issue 6 item 1 and its acceptance): the README's first command
//! at a smaller size, twice in the same data directory.
//!
//! 1. Light random faults, 200 markets at 500 events/s for 8 s: the cluster is created, the run
//!    ends with exit 0 and the verify report says lost 0, duplicated 0, unexpected 0, nothing
//!    missing outside coverage gaps, and production = truth − what no gatherer could hear.
//! 2. The same with `--kill-gatherer-every 3s`: the cluster of run 1 is reused (its demo
//!    databases recreated), gatherers a and b are SIGKILLed at 3 s and 6 s and restarted, and
//!    the run still verifies with lost 0 and duplicated 0.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod gatherer_support;

use std::path::Path;
use std::process::Command;

use gatherer_support::process::kdp_binary;

/// Environment variables that would point the demo's processes elsewhere.
const OVERRIDES: [&str; 4] =
    ["KDP_DATABASE_URL", "KDP_KEY_ID", "KDP_PRIVATE_KEY_PATH", "KDP_PRODUCTION_DATABASE_URL"];

/// Runs `kdp demo --dir data ARGS`: (exit code, stdout, stderr).
fn demo(data: &Path, args: &[&str]) -> (i32, String, String) {
    let mut command = Command::new(kdp_binary());
    command.arg("demo").arg("--dir").arg(data).args(args);
    for var in OVERRIDES {
        command.env_remove(var);
    }
    let out = command.output().unwrap();
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    println!("--- kdp demo {args:?} stdout ---\n{stdout}--- stderr ---\n{stderr}");
    (out.status.code().unwrap(), stdout, stderr)
}

/// Checks the verify report on stdout; returns (truth, production, inside coverage gaps).
fn verified(stdout: &str) -> (u64, u64, u64) {
    // verify: OK (truth T events, production P, gatherers [..])
    let head = stdout
        .lines()
        .find_map(|l| l.strip_prefix("verify: OK (truth "))
        .unwrap_or_else(|| panic!("no `verify: OK` line:\n{stdout}"));
    let (truth, rest) = head.split_once(" events, production ").unwrap();
    let (production, _) = rest.split_once(", gatherers [").unwrap();
    let counts = "  lost 0  duplicated 0  unexpected 0  missing outside coverage gaps 0  missing \
                  inside coverage gaps ";
    let inside = stdout
        .lines()
        .find_map(|l| l.strip_prefix(counts))
        .unwrap_or_else(|| panic!("no `lost 0  duplicated 0 ...` line:\n{stdout}"));
    let n = |s: &str| s.parse::<u64>().unwrap_or_else(|e| panic!("{s:?}: {e}"));
    let (truth, production, inside) = (n(truth), n(production), n(inside));
    assert_eq!(production + inside, truth, "production = truth − missing inside coverage gaps");
    assert!(truth > 2_000, "{truth} events in the window");
    (truth, production, inside)
}

#[test]
fn demo_verifies_with_faults_and_with_killed_gatherers() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("kdp-data");
    let small = ["--markets=200", "--rate=500", "--duration=8s"];

    let (code, out, err) = demo(&data, &small);
    assert_eq!(code, 0, "kdp demo failed:\n{out}\n{err}");
    verified(&out);
    assert!(err.starts_with("kdp demo: PostgreSQL cluster created in "), "{err}");
    assert!(err.contains("200 markets, 500 events/s, faults light"), "{err}");
    assert!(err.contains("0 SIGKILLs, 0 unexpected exits"), "{err}");
    let port = out
        .lines()
        .find_map(|l| l.strip_prefix("  psql postgres://postgres@127.0.0.1:"))
        .and_then(|r| r.strip_suffix("/production"))
        .unwrap_or_else(|| panic!("no psql line:\n{out}"));
    assert!(port.parse::<u16>().is_ok(), "{port}");
    // One progress line a second for 8 s (the last second ends the run instead).
    let progress = err.lines().filter(|l| l.starts_with('[') && l.contains(" dedup ")).count();
    assert!((6..=8).contains(&progress), "{progress} progress lines:\n{err}");

    let mut killing = small.to_vec();
    killing.push("--kill-gatherer-every=3s");
    let (code, out, err) = demo(&data, &killing);
    assert_eq!(code, 0, "kdp demo --kill-gatherer-every failed:\n{out}\n{err}");
    verified(&out);
    assert!(err.starts_with("kdp demo: PostgreSQL cluster reused in "), "{err}");
    let kills: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("kdp demo: gatherer ") && l.contains(" SIGKILLed "))
        .collect();
    assert_eq!(
        kills,
        [
            "kdp demo: gatherer a SIGKILLed (kill 1); restarting it in 1s",
            "kdp demo: gatherer b SIGKILLed (kill 1); restarting it in 1s",
        ],
        "{err}"
    );
    let restarts: Vec<&str> = err.lines().filter(|l| l.ends_with(" restarted")).collect();
    assert_eq!(restarts, ["kdp demo: gatherer a restarted", "kdp demo: gatherer b restarted"]);
    assert!(err.contains("2 SIGKILLs, 0 unexpected exits"), "{err}");
}
