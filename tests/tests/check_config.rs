//! `kdp check-config` as a real process against the simulator (wss with its own CA, signed
//! handshake, REST) and a `TestDatabase` (issue 6 item 3): one all-OK run, then one wrong
//! setting at a time, each with its precise FAIL line and exit 1. Then `--kind dedup` (and the
//! kind told from the keys) against a production and two gatherer `TestDatabase`s: all OK, the
//! production URL from KDP_PRODUCTION_DATABASE_URL, a config error, an unreachable gatherer
//! database, and a file of neither kind.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod gatherer_support;

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::process::Command;

use gatherer_support::process::kdp_binary;
use gatherer_support::{KEY_ID, Sim, market_config};
use kdp_engine::pg::testing::TestDatabase;
use kdp_sim::transport::auth::generate_demo_key;

const SEED: u64 = 0x6368_6563_6b00_0006;

/// Runs `kdp check-config FILE` with the KDP_* overrides cleared: (exit code, stdout).
fn check(file: &Path) -> (i32, String) {
    let out = Command::new(kdp_binary())
        .arg("check-config")
        .arg(file)
        .env_remove("KDP_KEY_ID")
        .env_remove("KDP_PRIVATE_KEY_PATH")
        .env_remove("KDP_DATABASE_URL")
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    println!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap(), stdout)
}

/// `text` with the line of `key` set to `value` (TOML literal).
fn with(text: &str, key: &str, value: &str) -> String {
    text.lines()
        .map(|l| {
            if l.starts_with(&format!("{key} =")) {
                format!("{key} = {value}")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

fn write_key(path: &Path, pem: &str, mode: u32) {
    let mut f =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(path).unwrap();
    f.write_all(pem.as_bytes()).unwrap();
}

#[test]
fn check_config_reports_each_wrong_setting_precisely() {
    let sim = Sim::start_with(market_config(SEED), true);
    let db = TestDatabase::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let markets = sim.busy_markets(2);
    let base = sim.gatherer_toml(&db, &markets, &["orderbook_delta"])
        + &format!("rest_url = {:?}\n", sim.handle.rest_url().unwrap());
    let file = dir.path().join("gatherer.toml");
    let run = |text: &str| {
        std::fs::write(&file, text).unwrap();
        check(&file)
    };
    let wss_port = sim.handle.wss_addr().unwrap().port();
    let url = format!("wss://localhost:{wss_port}/trade-api/ws/v2");

    // Everything right.
    let (code, out) = run(&base);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 6, "{out}");
    assert_eq!(lines[0], format!("OK    config: {} is a valid gatherer config", file.display()));
    assert!(lines[1].starts_with("OK    key: Ed25519 key "), "{out}");
    assert!(lines[1].ends_with(&format!(" loaded for key id {KEY_ID}")), "{out}");
    assert_eq!(
        lines[2],
        format!("OK    websocket: {url}: TLS verified and signed handshake accepted (HTTP 101)")
    );
    assert_eq!(
        lines[3],
        format!(
            "OK    rest: {}/exchange/status answered: exchange active",
            sim.handle.rest_url().unwrap()
        )
    );
    assert!(lines[4].starts_with("OK    database: connected; "), "{out}");
    assert_eq!(lines[5], "all checks passed");

    // Bad URL.
    let (code, out) = run(&with(&base, "ws_url", "\"https://localhost:1/trade-api/ws/v2\""));
    assert_eq!(code, 1);
    assert!(out.starts_with(&format!(
        "FAIL  config: {}: gatherer config field `ws_url`: \"https://localhost:1/trade-api/ws/v2\" \
         must start with wss:// (or ws:// for a local simulator)\n",
        file.display()
    )), "{out}");

    // A well-formed URL where nothing listens.
    let (code, out) = run(&with(&base, "ws_url", "\"wss://127.0.0.1:1/trade-api/ws/v2\""));
    assert_eq!(code, 1);
    assert!(
        out.contains(
            "FAIL  websocket: wss://127.0.0.1:1/trade-api/ws/v2: cannot connect to 127.0.0.1:1 ("
        ),
        "{out}"
    );
    assert!(out.contains("check ws_url's host and port and the network\n"), "{out}");

    // Missing key file.
    let missing = dir.path().join("nope.pem");
    let (code, out) =
        run(&with(&base, "private_key_path", &format!("{:?}", missing.display().to_string())));
    assert_eq!(code, 1);
    assert!(
        out.contains(&format!(
            "FAIL  key: key file {} does not exist; check the configured key path\n\
         SKIP  websocket: needs the key\nSKIP  rest: needs the key\n",
            missing.display()
        )),
        "{out}"
    );

    // Loose permissions.
    let demo = generate_demo_key().unwrap();
    let loose = dir.path().join("loose.pem");
    write_key(&loose, &demo.private_pkcs8_pem, 0o644);
    std::fs::set_permissions(&loose, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let (code, out) =
        run(&with(&base, "private_key_path", &format!("{:?}", loose.display().to_string())));
    assert_eq!(code, 1);
    assert!(
        out.contains(&format!(
            "FAIL  key: key file {p} has mode 0644, so group or others can read or write it; \
         restrict it with `chmod 600 {p}`\n",
            p = loose.display()
        )),
        "{out}"
    );

    // A key the simulator does not know under our key id: bad signature.
    let other = dir.path().join("other.pem");
    write_key(&other, &demo.private_pkcs8_pem, 0o600);
    let (code, out) =
        run(&with(&base, "private_key_path", &format!("{:?}", other.display().to_string())));
    assert_eq!(code, 1);
    assert!(
        out.contains(&format!(
            "FAIL  websocket: {url}: handshake refused with HTTP 401 \
         ({{\"error\":{{\"code\":\"invalid_signature\",\"message\":\"signature does not match \
         timestamp + method + path for this key\"}}}}): the exchange does not accept this \
         signature; check key_id ({KEY_ID}) belongs to private_key_path"
        )),
        "{out}"
    );

    // A wrong key id.
    let (code, out) = run(&with(&base, "key_id", "\"no-such-key\""));
    assert_eq!(code, 1);
    assert!(
        out.contains(&format!(
            "FAIL  websocket: {url}: handshake refused with HTTP 401 \
         ({{\"error\":{{\"code\":\"unknown_api_key\",\"message\":\"unknown API key id\"}}}}): \
         the exchange does not accept this signature; check key_id (no-such-key)"
        )),
        "{out}"
    );

    // Unreachable database.
    let (code, out) = run(&with(&base, "database_url", "\"postgres://kdp@127.0.0.1:1/gatherer\""));
    assert_eq!(code, 1);
    assert!(out.contains("FAIL  database: cannot connect to the gatherer database ("), "{out}");
    assert!(
        out.contains(
            "check the URL, that the server is running and reachable, and the user's password\n\
         1 check(s) failed\n"
        ),
        "{out}"
    );
}

/// Runs `kdp check-config FILE ARGS` with the KDP_* overrides cleared and `env` set:
/// (exit code, stdout).
fn check_with(file: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut command = Command::new(kdp_binary());
    command.arg("check-config").arg(file).args(args);
    for var in
        ["KDP_KEY_ID", "KDP_PRIVATE_KEY_PATH", "KDP_DATABASE_URL", "KDP_PRODUCTION_DATABASE_URL"]
    {
        command.env_remove(var);
    }
    command.envs(env.iter().copied());
    let out = command.output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    println!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap(), stdout)
}

/// A dedup config: `production` (None: no key) and `(name, id, database_url)` gatherers.
fn dedup_toml(production: Option<&str>, gatherers: &[(&str, u8, &str)]) -> String {
    let mut text = String::from("metrics_addr = \"off\"\n");
    if let Some(url) = production {
        text += &format!("production_database_url = {url:?}\n");
    }
    for (name, id, url) in gatherers {
        text += &format!("\n[[gatherers]]\nname = {name:?}\nid = {id}\ndatabase_url = {url:?}\n");
    }
    text
}

#[test]
fn check_config_dedup_reports_each_database_and_wrong_setting_precisely() {
    let production = TestDatabase::new().unwrap();
    let (ga, gb) = (TestDatabase::new().unwrap(), TestDatabase::new().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dedup.toml");
    let run = |text: &str, args: &[&str], env: &[(&str, &str)]| {
        std::fs::write(&file, text).unwrap();
        check_with(&file, args, env)
    };
    let all_ok = |out: &str| {
        format!(
            "OK    config: {} is a valid dedup config\n\
             OK    production database: connected; no production schema yet (applied at the \
             first start)\n\
             OK    gatherer database a (id 0): connected; no gatherer schema yet (applied at the \
             first start)\n\
             OK    gatherer database b (id 1): connected; no gatherer schema yet (applied at the \
             first start)\n\
             all checks passed\n",
            file.display()
        ) == out
    };
    let good = dedup_toml(Some(production.url()), &[("a", 0, ga.url()), ("b", 1, gb.url())]);

    // Everything right, with --kind dedup and with the kind told from the keys.
    for args in [&["--kind", "dedup"][..], &[]] {
        let (code, out) = run(&good, args, &[]);
        assert_eq!(code, 0, "{args:?}\n{out}");
        assert!(all_ok(&out), "{args:?}\n{out}");
    }
    // Production only from the environment: the kind is told from [[gatherers]].
    let no_production = dedup_toml(None, &[("a", 0, ga.url()), ("b", 1, gb.url())]);
    let (code, out) =
        run(&no_production, &[], &[("KDP_PRODUCTION_DATABASE_URL", production.url())]);
    assert_eq!(code, 0, "{out}");
    assert!(all_ok(&out), "{out}");

    // Missing production database URL.
    let (code, out) = run(&no_production, &[], &[]);
    assert_eq!(code, 1);
    assert_eq!(
        out,
        format!(
            "FAIL  config: {}: dedup config field `production_database_url`: missing; set it or \
             KDP_PRODUCTION_DATABASE_URL\n1 check(s) failed\n",
            file.display()
        )
    );

    // Two gatherers with one id.
    let (code, out) = run(
        &dedup_toml(Some(production.url()), &[("a", 1, ga.url()), ("b", 1, gb.url())]),
        &["--kind", "dedup"],
        &[],
    );
    assert_eq!(code, 1);
    assert_eq!(
        out,
        format!(
            "FAIL  config: {}: dedup config field `gatherers.id`: gatherers \"a\" and \"b\" both \
             have id 1\n1 check(s) failed\n",
            file.display()
        )
    );

    // Gatherer b's database where nothing listens: the others still pass.
    let (code, out) = run(
        &dedup_toml(
            Some(production.url()),
            &[("a", 0, ga.url()), ("b", 1, "postgres://kdp@127.0.0.1:1/gatherer")],
        ),
        &["--kind", "dedup"],
        &[],
    );
    assert_eq!(code, 1);
    assert_eq!(
        out,
        format!(
            "OK    config: {} is a valid dedup config\n\
             OK    production database: connected; no production schema yet (applied at the \
             first start)\n\
             OK    gatherer database a (id 0): connected; no gatherer schema yet (applied at the \
             first start)\n\
             FAIL  gatherer database b (id 1): cannot connect to the gatherer database (error \
             connecting to server); check the URL, that the server is running and reachable, \
             and the user's password\n\
             1 check(s) failed\n",
            file.display()
        )
    );

    // Neither kind's keys and no --kind.
    let (code, out) = run("metrics_addr = \"off\"\n", &[], &[]);
    assert_eq!(code, 1);
    assert_eq!(
        out,
        format!(
            "FAIL  config: {}: cannot tell a gatherer config (ws_url) from a dedup config \
             (production_database_url, [[gatherers]]); pass --kind gatherer|dedup\n\
             1 check(s) failed\n",
            file.display()
        )
    );
}
