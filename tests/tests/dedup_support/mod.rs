//! The deduplicator's end-to-end checks, shared by `dedup_pipeline.rs` and `dedup_crash.rs`:
//! production's cursors, production = the union by maximum multiplicity of the gatherer
//! databases (computed here from the databases, independently of the merge core) with every
//! delta key's occurrence ordinals 0..n, snapshots and gap markers kept with their source, and
//! production against the simulator's truth; and the pieces both rigs are built of (the dedup's
//! TOML, gatherers started with their simulator connections, stepping the exchange, cutting a
//! database off).

#![allow(dead_code, clippy::unwrap_used, clippy::print_stdout)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use kdp_engine::pg::testing::TestDatabase;
use kdp_ingest::gatherer::{Gatherer, GathererHandle};

use crate::gatherer_support::{MARKETS, Sim, Truth, columns_text, wait_for};

/// Longest the dedup may take to reach every gatherer's head once they stopped.
pub const DEDUP_WAIT: Duration = Duration::from_secs(60);
pub const CHANNELS: &[&str] = &["orderbook_delta", "trade", "ticker"];
/// The gatherers' names in the dedup's config (id = index).
pub const NAMES: [&str; 3] = ["a", "b", "c"];

/// The dedup's TOML: `extra` lines first, then production and the gatherers [`NAMES`] on `dbs`.
pub fn dedup_toml(
    extra: &str,
    production_url: &str,
    metrics_addr: &str,
    dbs: &[TestDatabase],
) -> String {
    let mut text = format!(
        "{extra}production_database_url = {production_url:?}\nmetrics_addr = \"{metrics_addr}\"\n\
         poll_interval_ms = 200\n"
    );
    for (i, (name, db)) in NAMES.iter().zip(dbs).enumerate() {
        text.push_str(&format!(
            "[[gatherers]]\nname = \"{name}\"\nid = {i}\ndatabase_url = {:?}\n",
            db.url()
        ));
    }
    text
}

/// Starts an in-process gatherer of `markets` on `db` and waits for its initial snapshots;
/// returns it with the simulator connections it opened.
pub fn start_gatherer(
    sim: &Sim,
    db: &TestDatabase,
    markets: &[String],
) -> (GathererHandle, BTreeSet<u64>) {
    let before: BTreeSet<u64> = sim.conns().into_iter().collect();
    let g = Gatherer::start(&sim.gatherer_config(db, markets.to_vec(), CHANNELS)).unwrap();
    wait_for("a gatherer's initial snapshots", || g.stats().writer.rows.snapshot >= MARKETS as u64);
    let after: BTreeSet<u64> = sim.conns().into_iter().collect();
    (g, after.difference(&before).copied().collect())
}

/// A rig that steps the simulator's exchange and waits for its gatherers.
pub trait Stepped {
    fn sim(&self) -> &Sim;

    /// Waits until the gatherers committed every frame sent up to `exch_seq`.
    fn caught_up(&mut self, exch_seq: u64);

    /// Advances the exchange `steps` times by `events`, each time waiting for
    /// [`Stepped::caught_up`].
    fn flow(&mut self, steps: usize, events: u64) {
        for _ in 0..steps {
            let exch_seq = self.sim().advance(events);
            self.caught_up(exch_seq);
        }
    }
}

/// A gatherer database's last committed gseq (0 before its first batch).
pub fn batch_head(c: &mut postgres::Client) -> i64 {
    c.query_one("SELECT coalesce(max(last_gseq), 0) FROM batch", &[]).unwrap().get(0)
}

/// `ALTER DATABASE db WITH ALLOW_CONNECTIONS allow`, through `admin` (a connection to another
/// database of the server).
pub fn allow_connections(admin: &mut postgres::Client, db: &str, allow: bool) {
    admin.batch_execute(&format!("ALTER DATABASE {db} WITH ALLOW_CONNECTIONS {allow}")).unwrap();
}

/// Terminates the dedup's connections to database `db`; returns how many there were.
pub fn cut_dedup_connections(admin: &mut postgres::Client, db: &str) -> i64 {
    admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = $1 AND application_name = 'kdp-dedup'",
            &[&db],
        )
        .unwrap()
        .get(0)
}

/// Production's cursors by gatherer id.
pub fn cursors(prod: &mut postgres::Client) -> BTreeMap<i16, i64> {
    prod.query("SELECT gatherer, gseq FROM dedup_cursor", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Waits until production's cursor for each listed gatherer reaches its head; returns the time
/// it took.
pub fn wait_cursors(prod: &postgres::Config, heads: &[(i16, i64)]) -> Duration {
    let t0 = Instant::now();
    let mut c = prod.connect(postgres::NoTls).unwrap();
    let deadline = t0 + DEDUP_WAIT;
    loop {
        let now = cursors(&mut c);
        if heads.iter().all(|(id, head)| now.get(id).copied().unwrap_or(0) >= *head) {
            for (id, head) in heads {
                assert_eq!(now.get(id), Some(head), "a cursor never passes its gatherer's head");
            }
            return t0.elapsed();
        }
        assert!(Instant::now() < deadline, "dedup cursors {now:?} did not reach {heads:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub type Multiset = BTreeMap<String, u64>;

pub const TICKER_CONTENT: &str = "price_micros, yes_bid_micros, yes_ask_micros, yes_bid_size_centi, \
     yes_ask_size_centi, last_trade_size_centi, volume_centi, open_interest_centi, dollar_volume, \
     dollar_open_interest, clock";

/// Counts one for each row of `sql` (with `params`) in `m`, under `key` of the row.
fn count_rows(
    m: &mut Multiset,
    c: &mut postgres::Client,
    sql: &str,
    params: &[&(dyn postgres::types::ToSql + Sync)],
    mut key: impl FnMut(&postgres::Row) -> String,
) {
    for r in c.query(sql, params).unwrap() {
        *m.entry(key(&r)).or_default() += 1;
    }
}

/// A gatherer database's events with their full identities, as a multiset; a ticker equal to its
/// market's previous ticker (a repeated frame) counts once, as DESIGN §4 / the occ module say.
pub fn gatherer_events(c: &mut postgres::Client) -> Multiset {
    gatherer_events_through(c, i64::MAX)
}

/// [`gatherer_events`] of the rows with gseq ≤ `through` (what the dedup consumed of a gatherer
/// whose database went away: production's cursor).
pub fn gatherer_events_through(c: &mut postgres::Client, through: i64) -> Multiset {
    let mut m = Multiset::new();
    count_rows(
        &mut m,
        c,
        "SELECT market, ts_exch_ns, side_yes, price_micros, delta_centi FROM delta \
         WHERE gseq <= $1",
        &[&through],
        |r| format!("delta {}", columns_text(r, 0..5)),
    );
    count_rows(
        &mut m,
        c,
        "SELECT trade_id, market, yes_price_micros, no_price_micros, count_centi, ts_exch_ns \
         FROM trade WHERE gseq <= $1",
        &[&through],
        |r| format!("trade {}", columns_text(r, 0..6)),
    );
    let mut last: BTreeMap<String, String> = BTreeMap::new();
    for r in c
        .query(
            &format!(
                "SELECT market, ts_exch_ns, {TICKER_CONTENT} FROM ticker WHERE gseq <= $1 \
                 ORDER BY gseq"
            ),
            &[&through],
        )
        .unwrap()
    {
        let market: String = r.get(0);
        let key = format!("ticker {}", columns_text(&r, 0..13));
        if last.get(&market) == Some(&key) {
            continue;
        }
        last.insert(market, key.clone());
        *m.entry(key).or_default() += 1;
    }
    m
}

/// Production's events as the same multiset; checks each delta key's occs are 0..n.
pub fn production_events(c: &mut postgres::Client) -> Multiset {
    let mut m = Multiset::new();
    let mut occs: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    count_rows(
        &mut m,
        c,
        "SELECT market, ts_exch_ns, side_yes, price_micros, delta_centi, occ FROM delta",
        &[],
        |r| {
            let key = format!("delta {}", columns_text(r, 0..5));
            occs.entry(key.clone()).or_default().push(r.get(5));
            key
        },
    );
    for (key, mut o) in occs {
        o.sort_unstable();
        let want: Vec<i32> = (0..i32::try_from(o.len()).unwrap()).collect();
        assert_eq!(o, want, "occurrence ordinals of {key}");
    }
    count_rows(
        &mut m,
        c,
        "SELECT trade_id, market, yes_price_micros, no_price_micros, count_centi, ts_exch_ns \
         FROM trade",
        &[],
        |r| format!("trade {}", columns_text(r, 0..6)),
    );
    count_rows(
        &mut m,
        c,
        &format!("SELECT market, ts_exch_ns, {TICKER_CONTENT} FROM ticker"),
        &[],
        |r| format!("ticker {}", columns_text(r, 0..13)),
    );
    m
}

/// Production rows in the harness's truth format, per (market, row text).
pub fn production_truth_rows(c: &mut postgres::Client) -> Multiset {
    let mut m = Multiset::new();
    for (kind, columns) in [
        ("delta", "side_yes, price_micros, delta_centi"),
        ("trade", "trade_id, yes_price_micros, count_centi"),
        (
            "ticker",
            "yes_bid_micros, yes_ask_micros, volume_centi, open_interest_centi, dollar_volume",
        ),
    ] {
        let sql = format!("SELECT market, {columns}, ts_exch_ns FROM {kind}");
        count_rows(&mut m, c, &sql, &[], |r| {
            format!("{} {kind} {}", columns_text(r, 0..1), columns_text(r, 1..r.len()))
        });
    }
    m
}

pub fn union_by_max(sets: &[Multiset]) -> Multiset {
    let mut u = Multiset::new();
    for s in sets {
        for (k, n) in s {
            let e = u.entry(k.clone()).or_default();
            *e = (*e).max(*n);
        }
    }
    u
}

pub fn total(m: &Multiset) -> u64 {
    m.values().sum()
}

/// Snapshots and gap markers of every gatherer are in production with their source.
pub fn assert_kept_rows(prod: &mut postgres::Client, dbs: &[TestDatabase]) {
    let mut clients: Vec<postgres::Client> = dbs.iter().map(|db| db.connect().unwrap()).collect();
    let mut all: Vec<(&mut postgres::Client, i64)> =
        clients.iter_mut().map(|c| (c, i64::MAX)).collect();
    assert_kept_rows_through(prod, &mut all);
}

/// [`assert_kept_rows`] for each gatherer's rows with gseq ≤ its bound, read through the given
/// connections (gatherer id = index).
pub fn assert_kept_rows_through(
    prod: &mut postgres::Client,
    gatherers: &mut [(&mut postgres::Client, i64)],
) {
    for (id, (c, through)) in gatherers.iter_mut().enumerate() {
        let id = i16::try_from(id).unwrap();
        for table in ["snapshot", "gap"] {
            let want: Vec<i64> = c
                .query(
                    &format!("SELECT gseq FROM {table} WHERE gseq <= $1 ORDER BY gseq"),
                    &[&*through],
                )
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            let prod_table = if table == "gap" { "gatherer_gap" } else { table };
            let got: Vec<i64> = prod
                .query(
                    &format!("SELECT gseq FROM {prod_table} WHERE gatherer = $1 ORDER BY gseq"),
                    &[&id],
                )
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            assert_eq!(got, want, "gatherer {id}: every {table} row is in production");
        }
    }
}

/// Production = union by maximum multiplicity of the gatherer databases, exactly.
pub fn assert_union(
    prod: &mut postgres::Client,
    dbs: &[TestDatabase],
) -> (Multiset, Vec<Multiset>) {
    let mut clients: Vec<postgres::Client> = dbs.iter().map(|db| db.connect().unwrap()).collect();
    let mut all: Vec<(&mut postgres::Client, i64)> =
        clients.iter_mut().map(|c| (c, i64::MAX)).collect();
    assert_union_through(prod, &mut all)
}

/// [`assert_union`] over each gatherer's rows with gseq ≤ its bound, read through the given
/// connections (one opened before a database went away still reads it); returns production's
/// events and each gatherer's.
pub fn assert_union_through(
    prod: &mut postgres::Client,
    gatherers: &mut [(&mut postgres::Client, i64)],
) -> (Multiset, Vec<Multiset>) {
    let per: Vec<Multiset> =
        gatherers.iter_mut().map(|(c, through)| gatherer_events_through(c, *through)).collect();
    let union = union_by_max(&per);
    let got = production_events(prod);
    let missing: Vec<(&String, &u64)> =
        union.iter().filter(|(k, n)| got.get(*k).copied().unwrap_or(0) < **n).take(5).collect();
    let extra: Vec<(&String, &u64)> =
        got.iter().filter(|(k, n)| union.get(*k).copied().unwrap_or(0) < **n).take(5).collect();
    assert!(missing.is_empty() && extra.is_empty(), "missing {missing:?}, extra {extra:?}");
    assert_eq!(got, union, "production = union by maximum multiplicity");
    println!(
        "gatherer events {:?}, union {}, production {}",
        per.iter().map(total).collect::<Vec<_>>(),
        total(&union),
        total(&got)
    );
    (got, per)
}

/// Every event delivered to a gatherer is in production at least as often as that gatherer was
/// sent it, and nothing more often than the exchange sent it.
pub fn assert_truth(prod: &mut postgres::Client, truth: &Truth, conns: &[BTreeSet<u64>]) {
    assert_truth_min(prod, truth, conns, 2_000);
}

/// [`assert_truth`], where the most any one gatherer was sent must exceed `min_delivered`.
pub fn assert_truth_min(
    prod: &mut postgres::Client,
    truth: &Truth,
    conns: &[BTreeSet<u64>],
    min_delivered: u64,
) {
    let text: BTreeMap<u64, String> = truth
        .delivered
        .iter()
        .flat_map(|(m, rows)| rows.iter().map(move |(s, r)| (*s, format!("{m} {r}"))))
        .collect();
    let got = production_truth_rows(prod);
    let mut delivered_any = 0;
    for (g, set) in conns.iter().enumerate() {
        let mut sent = Multiset::new();
        for conn in set {
            for (_, s) in truth.by_conn.get(conn).into_iter().flatten() {
                *sent.entry(text[s].clone()).or_default() += 1;
            }
        }
        for (k, n) in &sent {
            assert!(
                got.get(k).copied().unwrap_or(0) >= *n,
                "gatherer {g} was sent {k} {n} times; production has {:?}",
                got.get(k)
            );
        }
        delivered_any = delivered_any.max(total(&sent));
    }
    let mut exchange = Multiset::new();
    for (m, rows) in &truth.all_events {
        for (_, r) in rows {
            *exchange.entry(format!("{m} {r}")).or_default() += 1;
        }
    }
    for (k, n) in &got {
        assert!(exchange.get(k).copied().unwrap_or(0) >= *n, "production has {k} {n} times");
    }
    assert!(
        delivered_any > min_delivered,
        "the run delivered enough events to mean something: {delivered_any}"
    );
}
