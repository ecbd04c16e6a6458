//! Crash tests of the deduplicator with real processes and a real PostgreSQL (issue 5
//! acceptance: "SIGKILL the deduplicator at named points (mid-COPY, after COPY before COMMIT,
//! after COMMIT before cursor use), restart the production PostgreSQL (immediate mode) mid-run,
//! kill and restart a gatherer: zero lost, zero duplicated" and "Two-of-three and one-of-three
//! gatherers alive: production still complete for what the survivors saw").
//!
//! The simulator runs in this process (manual clock), the gatherers in this process or as
//! `kdp gatherer` processes, and the deduplicator as a `kdp dedup --config FILE` process
//! (`gatherer_support::process`), killed at its named crash points (`KDP_DEDUP_CRASH_AT`,
//! `kdp_dedup::crash`: the process aborts there, as under SIGKILL). After every run:
//! production = the union by maximum multiplicity of the gatherer databases, exactly (computed
//! from the databases, `dedup_support`), every delta key's occurrence ordinals are 0..n (nothing
//! duplicated), every snapshot and gap marker is kept, and every event the simulator delivered
//! to a gatherer is in production (nothing lost). Every wait is on an event (a child's exit, a
//! cursor reaching a gatherer's head) with a deadline; seeds are printed.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod dedup_support;
mod gatherer_support;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Instant;

use dedup_support::{
    CHANNELS, Stepped, allow_connections, assert_kept_rows, assert_kept_rows_through,
    assert_truth_min, assert_union, assert_union_through, batch_head, cursors,
    cut_dedup_connections, dedup_toml, start_gatherer, wait_cursors,
};
use gatherer_support::process::{KdpProcess, kdp_binary};
use gatherer_support::{MARKETS, Replica, Sim, Truth, WAIT, wait_for};
use kdp_dedup::service::Dedup;
use kdp_engine::pg::testing::TestDatabase;
use kdp_engine::pg::{EmbeddedPostgres, MAINTENANCE_DB};
use kdp_ingest::gatherer::GathererHandle;
use kdp_ingest::store::GATHERER;

/// Events one gatherer must at least have been sent for a run to mean something.
const MIN_DELIVERED: u64 = 1_000;
/// What `abort()` (the crash points) kills a process with.
const SIGABRT: i32 = 6;

/// Production: a database on the shared test server, or a durable cluster of its own that the
/// test can restart (the test server runs with `synchronous_commit=off`, which an immediate stop
/// may cost its last commits: production never runs like that).
enum Production {
    Shared(Box<TestDatabase>),
    Durable { pg: Option<EmbeddedPostgres>, root: PathBuf },
}

impl Production {
    fn shared() -> Production {
        Production::Shared(Box::new(TestDatabase::new().unwrap()))
    }

    fn durable() -> Production {
        // A plain temp path: tempdir() is 0700, which the postgres user cannot enter as root.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let root =
            std::env::temp_dir().join(format!("kdp-dedup-crash-{}-{nanos}", std::process::id()));
        let pg = EmbeddedPostgres::persistent(&root).unwrap();
        let mut admin = pg.config(MAINTENANCE_DB).connect(postgres::NoTls).unwrap();
        admin.batch_execute("CREATE DATABASE kdp_prod").unwrap();
        Production::Durable { pg: Some(pg), root }
    }

    fn url(&self) -> String {
        match self {
            Production::Shared(db) => db.url().to_owned(),
            Production::Durable { pg, .. } => pg.as_ref().unwrap().url("kdp_prod"),
        }
    }

    fn config(&self) -> postgres::Config {
        match self {
            Production::Shared(db) => db.config(),
            Production::Durable { pg, .. } => pg.as_ref().unwrap().config("kdp_prod"),
        }
    }

    fn connect(&self) -> postgres::Client {
        self.config().connect(postgres::NoTls).unwrap()
    }
}

impl Drop for Production {
    fn drop(&mut self) {
        if let Production::Durable { pg, root } = self {
            if let Some(pg) = pg.take() {
                let _ = pg.stop();
            }
            let _ = std::fs::remove_dir_all(root);
        }
    }
}

/// The simulator, three gatherers (in process, each with its database) and production.
struct Rig {
    seed: u64,
    sim: Option<Sim>,
    markets: Vec<String>,
    replica: Replica,
    dbs: Vec<TestDatabase>,
    /// `None`: stopped (or run as a process by the test).
    gatherers: Vec<Option<GathererHandle>>,
    /// Simulator connections of each gatherer.
    conns: Vec<BTreeSet<u64>>,
    prod: Production,
    dir: tempfile::TempDir,
}

impl Rig {
    /// Starts the simulator and the gatherers flagged `true` in process (the others only get
    /// their database; the test runs them).
    fn start(seed: u64, in_process: [bool; 3], prod: Production) -> Rig {
        println!("seed {seed:#x}");
        kdp_binary();
        let sim = Sim::start(seed);
        let markets = sim.busy_markets(MARKETS);
        assert_eq!(markets.len(), MARKETS);
        let mut rig = Rig {
            seed,
            replica: Replica::new(seed, &markets, CHANNELS),
            markets,
            sim: Some(sim),
            dbs: Vec::new(),
            gatherers: Vec::new(),
            conns: Vec::new(),
            prod,
            dir: tempfile::tempdir().unwrap(),
        };
        // Schemas first, as an operator would (each process would also apply its own at start):
        // the test reads these tables while the processes start.
        let mut prod = rig.prod.connect();
        kdp_engine::pg::migrate::migrate(&mut prod, &kdp_dedup::schema::PRODUCTION).unwrap();
        for run in in_process {
            let db = TestDatabase::new().unwrap();
            kdp_engine::pg::migrate::migrate(&mut db.connect().unwrap(), &GATHERER).unwrap();
            rig.dbs.push(db);
            rig.gatherers.push(None);
            rig.conns.push(BTreeSet::new());
            if run {
                rig.start_gatherer(rig.dbs.len() - 1);
            }
        }
        rig
    }

    fn live_conns(&self) -> BTreeSet<u64> {
        self.sim().conns().into_iter().collect()
    }

    /// Starts gatherer `g` in process and waits for its initial snapshots.
    fn start_gatherer(&mut self, g: usize) {
        let (handle, opened) = start_gatherer(self.sim(), &self.dbs[g], &self.markets);
        self.conns[g].extend(opened);
        self.gatherers[g] = Some(handle);
    }

    /// A frame fault on `g`'s first `conns` connections: the next `frames` frames dropped.
    fn drop_frames(&self, g: usize, conns: usize, frames: u32) {
        for conn in self.conns[g].iter().take(conns) {
            self.sim()
                .control("/faults/drop_next", &format!("{{\"conn\":{conn},\"frames\":{frames}}}"));
        }
    }

    /// Stops in-process gatherer `g` (everything it received is committed).
    fn stop_gatherer(&mut self, g: usize) {
        let stats = self.gatherers[g].take().unwrap().shutdown().unwrap();
        assert_eq!(stats.fatal(), None);
    }

    /// Each gatherer's last committed gseq (-1: its database refuses connections).
    fn heads(&self) -> Vec<i64> {
        self.dbs.iter().map(|db| db.connect().map_or(-1, |mut c| batch_head(&mut c))).collect()
    }

    /// Stops the in-process gatherers and the simulator; returns the heads and the truth.
    fn stop(&mut self) -> (Vec<i64>, Truth) {
        for g in 0..self.gatherers.len() {
            if self.gatherers[g].is_some() {
                self.stop_gatherer(g);
            }
        }
        (self.heads(), self.sim.take().unwrap().finish())
    }

    /// The dedup's TOML (`extra` lines first).
    fn dedup_toml(&self, extra: &str) -> String {
        dedup_toml(extra, &self.prod.url(), "off", &self.dbs)
    }

    fn dedup_config_file(&self) -> PathBuf {
        let path = self.dir.path().join("dedup.toml");
        std::fs::write(&path, self.dedup_toml("")).unwrap();
        path
    }

    fn dedup(&self, name: &str, crash_at: Option<&str>) -> KdpProcess {
        let config = self.dedup_config_file();
        let env: Vec<(&str, &str)> =
            crash_at.map(|c| ("KDP_DEDUP_CRASH_AT", c)).into_iter().collect();
        KdpProcess::dedup(&config, self.dir.path(), name, &env)
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// All gatherers' heads as `wait_cursors` pairs.
    fn all_heads(heads: &[i64]) -> Vec<(i16, i64)> {
        (0..).zip(heads.iter().copied()).collect()
    }

    /// The final checks: union, kept rows, truth.
    fn assert_complete(&self, truth: &Truth) {
        let mut prod = self.prod.connect();
        let (got, per) = assert_union(&mut prod, &self.dbs);
        assert_kept_rows(&mut prod, &self.dbs);
        assert_truth_min(&mut prod, truth, &self.conns, MIN_DELIVERED);
        println!(
            "seed {:#x}: production holds {} events (gatherers {:?})",
            self.seed,
            got.values().sum::<u64>(),
            per.iter().map(|m| m.values().sum::<u64>()).collect::<Vec<_>>()
        );
    }
}

impl Stepped for Rig {
    fn sim(&self) -> &Sim {
        self.sim.as_ref().unwrap()
    }

    /// Every running in-process gatherer committed every frame it was sent (stored + withheld
    /// on its connections = the replica's count).
    fn caught_up(&mut self, exch_seq: u64) {
        self.replica.run_to(exch_seq);
        let expected = self.replica.expected();
        wait_for("every running gatherer to commit every frame sent", || {
            let info = self.sim().handle.registry().connections();
            self.gatherers.iter().zip(&self.conns).all(|(g, conns)| {
                let Some(g) = g else { return true };
                let r = g.stats().writer.rows;
                let withheld: u64 = info
                    .iter()
                    .filter(|c| conns.contains(&c.conn))
                    .map(|c| c.frames_dropped + c.frames_silenced)
                    .sum();
                r.delta + r.trade + r.ticker + withheld == expected
            })
        });
    }
}

/// The `production:` line of `kdp dedup`'s final counts: (rows written, batches, staged
/// batches, rows already there, failures).
fn production_counts(stdout: &str) -> (u64, u64, u64, u64, u64) {
    let line = stdout.lines().find(|l| l.starts_with("production: ")).unwrap();
    let n: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(n.len(), 5, "{line}");
    (n[0], n[1], n[2], n[3], n[4])
}

/// Flows the exchange in small steps until `dedup` exits; returns how it ended.
fn flow_until_exit(rig: &mut Rig, dedup: &mut KdpProcess) -> ExitStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = dedup.exited() {
            return status;
        }
        assert!(Instant::now() < deadline, "{} did not crash\n{}", dedup.name, dedup.logs());
        rig.flow(1, 200);
    }
}

#[test]
fn the_dedup_killed_at_each_crash_point_restarts_with_nothing_lost_or_duplicated() {
    let mut rig = Rig::start(0x6465_6475_7063_0001, [true; 3], Production::shared());
    rig.flow(1, 500);
    // Faults make the gatherers differ: a and c each miss frames the others have.
    rig.drop_frames(0, 2, 7);
    rig.drop_frames(2, 1, 11);
    let mut prod = rig.prod.connect();
    let mut previous = BTreeMap::new();
    // Arrivals count COPY statements for mid_copy (up to 7 per batch), batches for the others.
    for (i, point) in ["after_commit:2", "mid_copy:9", "after_copy:3"].into_iter().enumerate() {
        let mut dedup = rig.dedup(&format!("dedup{i}-{}", point.replace(':', "-")), Some(point));
        let status = flow_until_exit(&mut rig, &mut dedup);
        let logs = dedup.logs();
        assert_eq!(status.signal(), Some(SIGABRT), "{point}: died at its crash point\n{logs}");
        assert!(logs.contains("crash point reached: aborting"), "{logs}");
        let now = cursors(&mut prod);
        let heads = rig.heads();
        println!("{point}: {status}; production cursors {now:?}, gatherer heads {heads:?}");
        for (id, gseq) in &now {
            assert!(*gseq <= heads[usize::try_from(*id).unwrap()], "a cursor past its head");
            assert!(previous.get(id).is_none_or(|p| p <= gseq), "cursors never move back");
        }
        if point == "after_commit:2" {
            assert!(!now.is_empty(), "two batches committed before the crash");
        }
        previous = now;
    }
    // No crash point: it resumes from the cursors and catches up.
    let mut dedup = rig.dedup("dedup-final", None);
    rig.flow(3, 500);
    let (heads, truth) = rig.stop();
    wait_cursors(&rig.prod.config(), &Rig::all_heads(&heads));
    let out = dedup.terminate();
    let (rows, batches, staged, conflicts, failures) = production_counts(&out);
    println!(
        "final run: {rows} rows in {batches} batches, {staged} staged ({conflicts} rows already \
         there), {failures} failures"
    );
    // The index rebuilt from production and every gatherer live from the start: nothing
    // committed before the crash was written again.
    assert_eq!((staged, conflicts, failures), (0, 0, 0));
    rig.assert_complete(&truth);
}

#[test]
fn production_restarted_in_immediate_mode_mid_run_loses_and_duplicates_nothing() {
    let mut rig = Rig::start(0x6465_6475_7063_0002, [true; 3], Production::durable());
    let mut dedup = rig.dedup("dedup", None);
    rig.flow(2, 500);
    let mut prod = rig.prod.connect();
    dedup.wait("the first production commits", || !cursors(&mut prod).is_empty());
    // Mid-run: frames of a large step in flight while production goes down hard.
    let exch_seq = rig.sim().advance(2_000);
    let Production::Durable { pg, .. } = &mut rig.prod else { unreachable!() };
    let pg = pg.as_mut().unwrap();
    let old_pid = pg.pid();
    pg.restart_immediate().unwrap();
    println!("production restarted (immediate): pid {old_pid} → {}", pg.pid());
    rig.caught_up(exch_seq);
    rig.flow(2, 500);
    dedup.assert_running();
    let (heads, truth) = rig.stop();
    wait_cursors(&rig.prod.config(), &Rig::all_heads(&heads));
    let out = dedup.terminate();
    println!("{}", out.trim_end());
    let (rows, batches, staged, conflicts, failures) = production_counts(&out);
    println!(
        "{rows} rows in {batches} batches, {staged} staged ({conflicts} rows already there), \
         {failures} failed attempts across the restart"
    );
    assert!(failures > 0, "writes failed while production was down");
    assert_eq!((staged, conflicts), (0, 0), "no batch was written twice");
    rig.assert_complete(&truth);
}

/// Data rows of a gatherer database with gseq above `after`.
fn data_rows_after(db: &TestDatabase, after: i64) -> u64 {
    let mut c = db.connect().unwrap();
    let n: i64 = c
        .query_one(
            "SELECT (SELECT count(*) FROM delta WHERE gseq > $1) \
                  + (SELECT count(*) FROM trade WHERE gseq > $1) \
                  + (SELECT count(*) FROM ticker WHERE gseq > $1)",
            &[&after],
        )
        .unwrap()
        .get(0);
    u64::try_from(n).unwrap()
}

/// Flows `steps` steps of 1,000 events; after each, waits until the gatherer process `c` has
/// committed every frame sent since its subscription (`base` events before it; rows after gseq
/// `after`).
fn flow_c(rig: &mut Rig, c: &mut KdpProcess, after: i64, base: u64, steps: usize) {
    for _ in 0..steps {
        rig.flow(1, 1_000);
        let want = rig.replica.expected() - base;
        c.wait("c to commit every frame sent", || data_rows_after(&rig.dbs[2], after) == want);
    }
}

fn count(db: &TestDatabase, sql: &str) -> i64 {
    db.connect().unwrap().query_one(sql, &[]).unwrap().get(0)
}

#[test]
fn a_gatherer_process_killed_and_restarted_mid_run_loses_and_duplicates_nothing() {
    // a and b in process, c as a `kdp gatherer` process.
    let mut rig = Rig::start(0x6465_6475_7063_0003, [true, true, false], Production::shared());
    let config = rig.dir().join("c.toml");
    std::fs::write(&config, rig.sim().gatherer_toml(&rig.dbs[2], &rig.markets, CHANNELS)).unwrap();
    let before = rig.live_conns();
    let mut c = KdpProcess::gatherer(&config, rig.dir(), "c-run1");
    let snapshots = i64::try_from(MARKETS).unwrap();
    c.wait("c's initial snapshots", || {
        count(&rig.dbs[2], "SELECT count(*) FROM snapshot") >= snapshots
    });
    let new = rig.live_conns();
    rig.conns[2].extend(new.difference(&before));
    let mut dedup = rig.dedup("dedup", None);
    flow_c(&mut rig, &mut c, 0, 0, 2);
    // SIGKILL c while a large step's frames are being committed.
    let stored = data_rows_after(&rig.dbs[2], 0);
    let exch_seq = rig.sim().advance(3_000);
    c.wait("c's first rows of the step", || data_rows_after(&rig.dbs[2], 0) > stored);
    c.kill();
    rig.caught_up(exch_seq);
    let last1 = batch_head(&mut rig.dbs[2].connect().unwrap());
    let lost = rig.replica.expected() - data_rows_after(&rig.dbs[2], 0);
    println!("c killed: last gseq {last1}, {lost} frames of the step not committed");
    let conns1 = rig.conns[2].clone();
    wait_for("the simulator to drop c's connections", || {
        rig.live_conns().iter().all(|x| !conns1.contains(x))
    });
    // c again: a crash gap, then everything from its subscription on.
    let before = rig.live_conns();
    let mut c = KdpProcess::gatherer(&config, rig.dir(), "c-run2");
    c.wait("c's crash gap and new snapshots", || {
        count(&rig.dbs[2], "SELECT count(*) FROM gap WHERE kind = 'crash'") == 1
            && count(&rig.dbs[2], &format!("SELECT count(*) FROM snapshot WHERE gseq > {last1}"))
                >= snapshots
    });
    let new = rig.live_conns();
    rig.conns[2].extend(new.difference(&before));
    let base = rig.replica.expected();
    flow_c(&mut rig, &mut c, last1 + 1, base, 2);
    println!("c stopped:\n{}", c.terminate());
    let (heads, truth) = rig.stop();
    wait_cursors(&rig.prod.config(), &Rig::all_heads(&heads));
    let out = dedup.terminate();
    let (rows, batches, staged, conflicts, failures) = production_counts(&out);
    println!(
        "{rows} rows in {batches} batches, {staged} staged ({conflicts}), {failures} failures"
    );
    assert_eq!((staged, conflicts, failures), (0, 0, 0), "the dedup never noticed a problem");
    rig.assert_complete(&truth);
}

#[test]
fn with_two_then_one_of_three_gatherers_alive_production_has_all_the_survivors_stored() {
    let mut rig = Rig::start(0x6465_6475_7063_0004, [true; 3], Production::shared());
    let mut dedup = rig.dedup("dedup", None);
    rig.flow(1, 1_000);
    rig.drop_frames(0, 2, 9);
    rig.drop_frames(1, 1, 13);
    rig.flow(1, 1_000);
    // c goes away: its gatherer stops and its database refuses the dedup (connections cut).
    rig.stop_gatherer(2);
    // Opened before: c's rows stay readable by the test once its database refuses connections.
    let mut c_client = rig.dbs[2].connect().unwrap();
    let c_db = rig.dbs[2].name().to_owned();
    let mut admin = rig.dbs[0].connect().unwrap();
    allow_connections(&mut admin, &c_db, false);
    cut_dedup_connections(&mut admin, &c_db);
    rig.flow(2, 1_000);
    let mut prod = rig.prod.connect();
    let check = |rig: &Rig, prod: &mut postgres::Client, c: &mut postgres::Client, alive: &str| {
        let heads = rig.heads();
        wait_cursors(&rig.prod.config(), &[(0, heads[0]), (1, heads[1])]);
        let c_cursor = cursors(prod).get(&2).copied().unwrap_or(0);
        let (mut a, mut b) = (rig.dbs[0].connect().unwrap(), rig.dbs[1].connect().unwrap());
        let mut bounds = [(&mut a, i64::MAX), (&mut b, i64::MAX), (c, c_cursor)];
        let (got, per) = assert_union_through(prod, &mut bounds);
        assert_kept_rows_through(prod, &mut bounds);
        for (g, events) in per.iter().enumerate().take(2) {
            assert!(
                events.iter().all(|(k, n)| got.get(k).is_some_and(|p| p >= n)),
                "{alive}: everything gatherer {g} stored is in production"
            );
        }
        println!(
            "{alive}: production {} events; a {}, b {}, c through production's cursor \
             {c_cursor}: {}",
            got.values().sum::<u64>(),
            per[0].values().sum::<u64>(),
            per[1].values().sum::<u64>(),
            per[2].values().sum::<u64>()
        );
    };
    check(&rig, &mut prod, &mut c_client, "two of three alive");
    // b stops too: a alone.
    rig.stop_gatherer(1);
    rig.flow(2, 1_000);
    check(&rig, &mut prod, &mut c_client, "one of three alive");
    let (_, truth) = rig.stop();
    check(&rig, &mut prod, &mut c_client, "all stopped");
    dedup.assert_running();
    let out = dedup.terminate();
    println!("{}", out.trim_end());
    let (_, _, staged, conflicts, failures) = production_counts(&out);
    assert_eq!((staged, conflicts, failures), (0, 0, 0), "no key of a survivor came twice");
    // Nothing a or b was sent is missing (c's deliveries count only through its cursor).
    assert_truth_min(&mut prod, &truth, &rig.conns[..2], MIN_DELIVERED);
}

/// Runs three gatherers and an in-process dedup with `live_grace_ms`, cuts c's reader off for a
/// whole exchange step (a and b merged it meanwhile), lets it back; returns (staged batches,
/// rows already in production, events of the step).
fn brief_reader_disconnect(seed: u64, live_grace_ms: u64) -> (u64, u64, u64) {
    let mut rig = Rig::start(seed, [true; 3], Production::shared());
    let text = rig.dedup_toml(&format!("live_grace_ms = {live_grace_ms}\n"));
    let config = kdp_dedup::config::DedupConfig::from_toml(&text).unwrap().check().unwrap();
    let dedup = Dedup::start(config).unwrap();
    wait_for("every reader connected", || dedup.health().gatherers.iter().all(|g| g.connected));
    rig.flow(1, 500);
    wait_cursors(&rig.prod.config(), &Rig::all_heads(&rig.heads()));
    let c_db = rig.dbs[2].name().to_owned();
    let mut admin = rig.dbs[0].connect().unwrap();
    allow_connections(&mut admin, &c_db, false);
    let cut = cut_dedup_connections(&mut admin, &c_db);
    assert_eq!(cut, 1, "c's reader had one connection");
    wait_for("c's reader to notice", || !dedup.health().gatherers[2].connected);
    let before = rig.replica.expected();
    rig.flow(1, 1_000);
    let step = rig.replica.expected() - before;
    let heads = rig.heads();
    assert_eq!(heads[2], -1, "c's database refuses connections");
    wait_cursors(&rig.prod.config(), &[(0, heads[0]), (1, heads[1])]);
    allow_connections(&mut admin, &c_db, true);
    wait_cursors(&rig.prod.config(), &[(2, rig.heads()[2])]);
    let (heads, _truth) = rig.stop();
    wait_cursors(&rig.prod.config(), &Rig::all_heads(&heads));
    let stats = dedup.shutdown().unwrap();
    assert!(stats.readers[2].1.connects >= 2, "c's reader reconnected: {:?}", stats.readers[2]);
    let mut prod = rig.prod.connect();
    assert_union(&mut prod, &rig.dbs);
    assert_kept_rows(&mut prod, &rig.dbs);
    println!("live_grace_ms {live_grace_ms}: {:?}, step of {step} events", stats.sink);
    (stats.sink.batches_staged, stats.sink.rows_conflicted, step)
}

#[test]
fn a_brief_reader_disconnect_within_the_grace_period_stages_nothing() {
    // With the default grace (30 s), c stays live: a's and b's keys wait for c's bit, and c's
    // re-reads are plain duplicates.
    let (staged, conflicts, step) = brief_reader_disconnect(0x6465_6475_7063_0005, 30_000);
    assert!(step > 300, "the step carried {step} events");
    assert_eq!((staged, conflicts), (0, 0), "nothing went through the staging backstop");
    // Without it, every key of the step was evicted once a and b had it, and each of c's
    // copies went to production again: absorbed by the unique constraints, through staging.
    let (staged, conflicts, step) = brief_reader_disconnect(0x6465_6475_7063_0006, 0);
    assert!(staged > 0, "no grace: c's re-reads were staged");
    assert_eq!(conflicts, step, "no grace: each of the step's events came back from c");
}
