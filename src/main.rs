//! The `kdp` binary: command-line wiring only. Each subcommand hands off to a crate; this file
//! is the only place that reads flags, files and the environment.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use kdp_sim::market::MarketConfig;
use kdp_sim::transport::auth::{self, KeyStore};
use kdp_sim::transport::faults::FaultConfig;
use kdp_sim::transport::hub::{Clock, HUB_SPEED_MAX};
use kdp_sim::transport::proto::Shape;
use kdp_sim::transport::{SimConfig, SimHandle, Simulator};

mod check;
mod demo;
mod truth;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// kdp, the Kalshi Data Platform: captures every order-book change, trade, ticker update and
/// lifecycle event of every Kalshi market into PostgreSQL, with three independent gatherers and a
/// deduplicator.
#[derive(Debug, Parser)]
#[command(name = "kdp", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a gatherer: take every market over WebSocket into the gatherer's own database, until
    /// Ctrl-C or SIGTERM (then stop reading, drain, commit, and print the final counts).
    Gatherer(GathererArgs),
    /// Run the deduplicator: merge the gatherer databases into production, until Ctrl-C or
    /// SIGTERM (then stop reading, merge and commit what was read, print the final counts).
    Dedup(DedupArgs),
    /// Run the Kalshi exchange simulator on loopback until Ctrl-C.
    Sim(Box<SimArgs>),
    /// Run the whole pipeline locally: embedded PostgreSQL, the simulator, 3 gatherer
    /// processes and the deduplicator, with live progress; then verify (exit 0: verified).
    Demo(demo::DemoArgs),
    /// Compare production with the simulator's truth and the gatherer databases (exit 0: every
    /// invariant holds; 1: a violation; 2: bad arguments or a database/file that cannot be read).
    Verify(VerifyArgs),
    /// Apply the schema migrations to a database.
    Migrate(MigrateArgs),
    /// Reconstruct the order book of a market at a point in time from production (the nearest
    /// snapshot placed at or before it + the merged deltas up to it).
    Book(BookArgs),
    /// Print the trades of a market over a time range.
    Trades(TradesArgs),
    /// Print the coverage ledger of a market over a time range.
    Coverage(CoverageArgs),
    /// Validate a gatherer or dedup configuration file and test connectivity and authentication
    /// (exit 0: every check passed; 1: a check failed).
    CheckConfig(CheckConfigArgs),
}

/// `kdp gatherer` flags.
#[derive(Debug, Args)]
struct GathererArgs {
    /// The gatherer's TOML configuration file. KDP_KEY_ID, KDP_PRIVATE_KEY_PATH and
    /// KDP_DATABASE_URL override its key_id, private_key_path and database_url.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
}

/// `kdp dedup` flags.
#[derive(Debug, Args)]
struct DedupArgs {
    /// The deduplicator's TOML configuration file. KDP_PRODUCTION_DATABASE_URL overrides its
    /// production_database_url.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
}

/// `kdp verify` flags.
#[derive(Debug, Args)]
struct VerifyArgs {
    /// The production database, e.g. postgres://kdp@127.0.0.1:5432/production.
    #[arg(long, value_name = "URL")]
    production: String,
    /// A gatherer database (repeat for each gatherer).
    #[arg(long = "gatherer", value_name = "URL", required = true)]
    gatherers: Vec<String>,
    /// The simulator's truth file (`kdp sim --truth FILE`): also check production against what
    /// the exchange sent.
    #[arg(long, value_name = "FILE")]
    truth: Option<PathBuf>,
    /// Findings of each class printed as examples.
    #[arg(long, default_value_t = 5)]
    examples: usize,
}

/// Output formats of `kdp coverage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum CoverageFormat {
    /// Aligned columns for a terminal.
    Table,
    /// Comma-separated values with a header row.
    Csv,
    /// One JSON object.
    Json,
}

/// `kdp coverage` flags.
#[derive(Debug, Args)]
struct CoverageArgs {
    /// The market ticker.
    #[arg(long, value_name = "TICKER")]
    market: String,
    /// Start (RFC 3339, e.g. 2026-01-05T14:00:00Z); its whole minute is included.
    #[arg(long, value_name = "TIME", value_parser = parse_time_arg)]
    from: i64,
    /// End (RFC 3339), exclusive.
    #[arg(long, value_name = "TIME", value_parser = parse_time_arg)]
    to: i64,
    /// Output format.
    #[arg(long, value_enum, default_value_t = CoverageFormat::Table)]
    format: CoverageFormat,
    /// The production database, e.g. postgres://kdp@127.0.0.1:5432/production.
    #[arg(long, value_name = "URL")]
    production: String,
}

fn parse_time_arg(s: &str) -> Result<i64, String> {
    kdp_ingest::wire::parse_rfc3339_ns(s.as_bytes()).map_err(|e| {
        format!("expected an RFC 3339 time such as 2026-01-05T14:00:00Z, got {s:?} ({e:?})")
    })
}

/// `kdp book` flags.
#[derive(Debug, Args)]
struct BookArgs {
    /// The market ticker.
    #[arg(long, value_name = "TICKER")]
    market: String,
    /// The time (RFC 3339, e.g. 2026-01-05T14:00:00.25Z); deltas at exactly this exchange
    /// time are included.
    #[arg(long, value_name = "TIME", value_parser = parse_time_arg)]
    at: i64,
    /// Output format.
    #[arg(long, value_enum, default_value_t = CoverageFormat::Table)]
    format: CoverageFormat,
    /// The production database, e.g. postgres://kdp@127.0.0.1:5432/production.
    #[arg(long, value_name = "URL")]
    production: String,
}

/// `kdp trades` flags.
#[derive(Debug, Args)]
struct TradesArgs {
    /// The market ticker.
    #[arg(long, value_name = "TICKER")]
    market: String,
    /// Start (RFC 3339), included.
    #[arg(long, value_name = "TIME", value_parser = parse_time_arg)]
    from: i64,
    /// End (RFC 3339), excluded.
    #[arg(long, value_name = "TIME", value_parser = parse_time_arg)]
    to: i64,
    /// Output format.
    #[arg(long, value_enum, default_value_t = CoverageFormat::Table)]
    format: CoverageFormat,
    /// The production database, e.g. postgres://kdp@127.0.0.1:5432/production.
    #[arg(long, value_name = "URL")]
    production: String,
}

/// `kdp check-config` flags.
#[derive(Debug, Args)]
struct CheckConfigArgs {
    /// The configuration file (KDP_* environment overrides applied as by the service).
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// The file's kind; by default told from its keys (ws_url: gatherer;
    /// production_database_url or [[gatherers]]: dedup).
    #[arg(long, value_enum)]
    kind: Option<ConfigKind>,
}

/// Config kinds `kdp check-config` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ConfigKind {
    /// `kdp gatherer --config`.
    Gatherer,
    /// `kdp dedup --config`.
    Dedup,
}

/// `kdp migrate` flags.
#[derive(Debug, Args)]
struct MigrateArgs {
    /// The database to migrate, e.g. postgres://kdp@127.0.0.1:5432/gatherer1 (default: the
    /// KDP_DATABASE_URL environment variable).
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// Which schema to apply.
    #[arg(long, value_enum, default_value_t = SchemaName::Gatherer)]
    schema: SchemaName,
}

/// Schemas `kdp migrate` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SchemaName {
    /// A gatherer's buffer database.
    Gatherer,
    /// The deduplicator's production database.
    Production,
}

/// File names `--gen-key DIR` writes, and the key id it registers.
const DEMO_KEY_ID: &str = "kdp-demo";
const DEMO_PRIVATE_FILE: &str = "kdp-demo.key";
const DEMO_PUBLIC_FILE: &str = "kdp-demo.pub";
/// Largest public-key file read: a 4096-bit RSA SPKI PEM is under 1 KiB; anything far larger is
/// not a public key.
const PUBLIC_KEY_FILE_BYTES_MAX: u64 = 64 * 1024;

/// Random-fault presets for `--faults`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FaultPreset {
    /// No random faults (faults can still be triggered through the control endpoint).
    None,
    /// A few of every kind per hour of a busy connection: drop and duplicate 1 frame in 10,000,
    /// close a connection about every 17 minutes, 15 s silences and error-25 overflows about
    /// every hour, an exchange outage about every 3 hours, 1 % of handshakes refused with 401.
    Light,
}

/// `kdp sim` flags.
#[derive(Debug, Args)]
struct SimArgs {
    /// Seed of every random choice (catalog, order flow, lifecycle, faults): the same seed and
    /// flags replay the same exchange.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Markets in the initial catalog (1..=10,000,000).
    #[arg(long, default_value_t = 1_000)]
    markets: usize,
    /// Exchange events per second, all markets together (deltas, trades, tickers, lifecycle).
    #[arg(long = "rate", value_name = "MSGS_PER_S", default_value_t = 5_000)]
    rate_msgs_per_s: u64,
    /// Virtual seconds per real second (1 = real time; at most 1,000,000).
    #[arg(long, default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(HUB_SPEED_MAX)))]
    speed: u32,
    /// Plain WebSocket listener (loopback only; port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8700")]
    ws_addr: SocketAddr,
    /// TLS WebSocket listener (loopback only; port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8701")]
    wss_addr: SocketAddr,
    /// REST listener (loopback only; port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8702")]
    rest_addr: SocketAddr,
    /// Fault-control HTTP endpoint (loopback only; port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8703")]
    control_addr: SocketAddr,
    /// Where to write the self-signed certificate (PEM) that wss clients must trust.
    #[arg(long, value_name = "PATH", default_value = "kdp-sim-cert.pem")]
    cert_out: PathBuf,
    /// An API key accepted in the signed WebSocket handshake: key id and a PEM public key file
    /// (RSA or Ed25519, SPKI or PKCS#1). Repeatable.
    #[arg(long = "public-key", value_name = "ID=PATH", value_parser = parse_public_key_arg)]
    public_keys: Vec<(String, PathBuf)>,
    /// Accept unsigned WebSocket connections (as Kalshi did until Sept 2025).
    #[arg(long)]
    no_auth: bool,
    /// Generate a demo Ed25519 key pair: write DIR/kdp-demo.key (mode 0600) and
    /// DIR/kdp-demo.pub, print the key id and paths, and accept that key.
    #[arg(long, value_name = "DIR")]
    gen_key: Option<PathBuf>,
    /// Random-fault preset; the individual rates below override it.
    #[arg(long, value_enum, default_value_t = FaultPreset::None)]
    faults: FaultPreset,
    /// Per data frame: drop it (the client sees a seq gap), parts per million.
    #[arg(long)]
    drop_ppm: Option<u32>,
    /// Per data frame: send it twice, parts per million.
    #[arg(long)]
    dup_ppm: Option<u32>,
    /// Per second of a connection: close it (1000/1001/1006/1011), parts per million.
    #[arg(long)]
    close_ppm_per_s: Option<u32>,
    /// Per second of a connection: go silent (no data, no pings), parts per million.
    #[arg(long)]
    silence_ppm_per_s: Option<u32>,
    /// Length of a random silence, milliseconds.
    #[arg(long)]
    silence_ms: Option<u64>,
    /// Per second of a connection: slow-reader overflow (error 25), parts per million.
    #[arg(long)]
    overflow_ppm_per_s: Option<u32>,
    /// Per second of the exchange: an outage (connections dropped, handshakes refused with
    /// 503), parts per million.
    #[arg(long)]
    outage_ppm_per_s: Option<u32>,
    /// Length of a random outage, milliseconds.
    #[arg(long)]
    outage_ms: Option<u64>,
    /// Per handshake: refuse it with 401 as if the signature were bad, parts per million.
    #[arg(long)]
    bad_signature_ppm: Option<u32>,
    /// Truncate exchange times to whole seconds, as the legacy feed did.
    #[arg(long)]
    legacy_times: bool,
    /// Also send the pre-2026-03 integer fields (cents, whole counts) next to the current ones.
    #[arg(long)]
    legacy_fields: bool,
    /// Probability (parts per million) that a delta is immediately repeated exactly: genuine
    /// identical events that merge code must keep.
    #[arg(long, default_value_t = MarketConfig::default().identical_delta_ppm)]
    identical_delta_ppm: u32,
    /// Write the ground truth (every exchange event, and what each connection was sent) to this
    /// file, in kdp's binary truth format; it is complete once the simulator stops.
    #[arg(long, value_name = "PATH")]
    truth: Option<PathBuf>,
}

fn parse_public_key_arg(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((id, path)) if !id.is_empty() && !path.is_empty() => {
            Ok((id.to_owned(), PathBuf::from(path)))
        }
        _ => Err(format!("expected ID=PATH (an API key id and a PEM public key file), got {s:?}")),
    }
}

#[cfg(test)]
impl Command {
    /// The subcommand's name on the command line.
    fn name(&self) -> &'static str {
        match self {
            Command::Sim(_) => "sim",
            Command::Gatherer(_) => "gatherer",
            Command::Migrate(_) => "migrate",
            Command::Dedup(_) => "dedup",
            Command::Verify(_) => "verify",
            Command::Coverage(_) => "coverage",
            Command::Demo(_) => "demo",
            Command::Book(_) => "book",
            Command::Trades(_) => "trades",
            Command::CheckConfig(_) => "check-config",
        }
    }
}

/// How a command failed; `main` prints the text and exits with the status.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    /// The command ran and failed (status 1).
    Failed(String),
    /// The command could not run: bad arguments, a file or database it cannot read (status 2).
    Usage(String),
}

/// Runs a parsed command line.
fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Sim(args) => sim(*args).map_err(Failure::Failed),
        Command::Gatherer(args) => gatherer(&args).map_err(Failure::Failed),
        Command::Dedup(args) => dedup(&args).map_err(Failure::Failed),
        Command::Migrate(args) => migrate(&args, &mut std::io::stdout()).map_err(Failure::Failed),
        Command::Verify(args) => verify(&args, &mut std::io::stdout().lock()),
        Command::Coverage(args) => coverage(&args, &mut std::io::stdout().lock()),
        Command::Demo(args) => demo::run(&args).map_err(Failure::Failed),
        Command::Book(args) => book(&args, &mut std::io::stdout().lock()),
        Command::Trades(args) => trades(&args, &mut std::io::stdout().lock()),
        Command::CheckConfig(args) => check_config(&args, &mut std::io::stdout().lock()),
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            eprintln!("{message}");
            ExitCode::from(2)
        }
        Err(Failure::Failed(message)) => {
            eprintln!("{message}");
            ExitCode::from(1)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// kdp verify, kdp coverage
// ---------------------------------------------------------------------------------------------

/// Connects to the database at `url` for `command`; `what` names it in the error (status 2).
fn connect_db(command: &str, what: &str, url: &str) -> Result<postgres::Client, Failure> {
    let server = kdp_engine::pg::ExternalServer::new(url)
        .map(kdp_engine::pg::DatabaseServer::External)
        .map_err(|e| Failure::Usage(format!("kdp {command}: {what}: {e}")))?;
    server.connect().map_err(|e| {
        Failure::Usage(format!(
            "kdp {command}: cannot reach the {what} database ({e}); check the URL and that the \
             server is running"
        ))
    })
}

/// A read that failed after connecting (status 2: nothing was verified).
fn read_failed(command: &str, what: &str) -> impl Fn(postgres::Error) -> Failure {
    move |e| Failure::Usage(format!("kdp {command}: cannot read the {what} database: {e}"))
}

/// `kdp verify`: reads production, the gatherers and the truth, prints the report; a violation
/// fails with status 1, anything unreadable with status 2.
fn verify(args: &VerifyArgs, out: &mut impl Write) -> Result<(), Failure> {
    use kdp_dedup::{inspect, verify};
    let loaded = match &args.truth {
        Some(path) => {
            Some(truth::load(path).map_err(|e| Failure::Usage(format!("kdp verify: {e}")))?)
        }
        None => None,
    };
    let mut production = connect_db("verify", "production", &args.production)?;
    let events =
        inspect::production_events(&mut production).map_err(read_failed("verify", "production"))?;
    let gaps = inspect::coverage_gaps(&mut production, None)
        .map_err(read_failed("verify", "production"))?;
    let mut gatherers = Vec::with_capacity(args.gatherers.len());
    for (i, url) in args.gatherers.iter().enumerate() {
        let what = format!("gatherer {i}");
        let mut client = connect_db("verify", &what, url)?;
        gatherers.push(inspect::gatherer_rows(&mut client).map_err(read_failed("verify", &what))?);
    }
    let report = verify::verify(verify::Inputs {
        truth: loaded.as_ref().map(|l| &l.truth),
        gatherers: &gatherers,
        production: &events,
        coverage_gaps: &gaps,
    });
    let write =
        |e: std::io::Error| Failure::Usage(format!("kdp verify: cannot write the report: {e}"));
    report.write_to(out, args.examples).map_err(write)?;
    match &loaded {
        Some(l) => writeln!(
            out,
            "  truth: {} delta/trade/ticker events checked in the subscribed windows, {} outside \
             them not checked; {} lifecycle events checked against the gatherers only (the \
             truth file does not carry their payloads)",
            l.truth.events.len(),
            l.outside,
            l.lifecycle
        ),
        None => writeln!(
            out,
            "  no truth given: checked against the gatherers only (lost, duplicated, unexpected)"
        ),
    }
    .map_err(write)?;
    out.flush().map_err(write)?;
    if report.ok() {
        Ok(())
    } else {
        Err(Failure::Failed(format!(
            "kdp verify: FAILED: {} lost, {} duplicated, {} unexpected, {} missing outside \
             coverage gaps",
            report.lost.len(),
            report.duplicated.len(),
            report.unexpected.len(),
            report.uncovered_missing.len()
        )))
    }
}

/// RFC 3339 UTC with `digits` fraction digits.
fn rfc3339(ts_ns: i64, digits: u32) -> String {
    let mut s = String::with_capacity(32);
    kdp_ingest::wire::write_rfc3339(&mut s, ts_ns, digits);
    s
}

/// A JSON string literal.
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// `kdp coverage`: the market's per-minute coverage over `[from, to)` and the coverage gaps
/// intersecting it, from production's ledger.
fn coverage(args: &CoverageArgs, out: &mut impl Write) -> Result<(), Failure> {
    use kdp_dedup::{inspect, ledger};
    if args.to <= args.from {
        return Err(Failure::Usage(format!(
            "kdp coverage: --to ({}) must be after --from ({})",
            rfc3339(args.to, 9),
            rfc3339(args.from, 9)
        )));
    }
    let mut db = connect_db("coverage", "production", &args.production)?;
    let failed = read_failed("coverage", "production");
    let market = Some(args.market.as_str());
    // Gatherer ids: every one with a cursor or a ledger row.
    let max_id: i16 = db
        .query_one(
            "SELECT coalesce(max(g), 0)::smallint FROM (SELECT gatherer AS g FROM dedup_cursor \
             UNION ALL SELECT gatherer FROM coverage_minute UNION ALL \
             SELECT gatherer FROM gatherer_uncovered) ids",
            &[],
        )
        .map_err(&failed)?
        .get(0);
    let gatherers = usize::try_from(max_id).unwrap_or(0) + 1;
    let counts = inspect::minute_counts(&mut db, market, args.from, args.to).map_err(&failed)?;
    let uncovered = inspect::uncovered(&mut db, market, args.from).map_err(&failed)?;
    let gaps: Vec<ledger::GapInterval> = inspect::coverage_gaps(&mut db, market)
        .map_err(&failed)?
        .into_iter()
        .map(|g| g.interval)
        .collect();
    let minutes =
        ledger::minute_coverage(gatherers, args.from, args.to, &counts, &uncovered, &gaps);
    let gaps: Vec<ledger::GapInterval> =
        gaps.into_iter().filter(|g| g.overlaps(args.from, args.to.saturating_sub(1))).collect();
    let write =
        |e: std::io::Error| Failure::Usage(format!("kdp coverage: cannot write the output: {e}"));
    write_coverage(out, args, gatherers, &minutes, &gaps).map_err(write)
}

fn write_coverage(
    out: &mut impl Write,
    args: &CoverageArgs,
    gatherers: usize,
    minutes: &[kdp_dedup::ledger::MinuteCoverage],
    gaps: &[kdp_dedup::ledger::GapInterval],
) -> std::io::Result<()> {
    let minute_end = |m: i64| m.saturating_add(kdp_dedup::ledger::MINUTE_NS);
    let gap_to = |g: &kdp_dedup::ledger::GapInterval| g.to_ns.map(|t| rfc3339(t, 9));
    match args.format {
        CoverageFormat::Table => {
            writeln!(
                out,
                "coverage of {} from {} to {} ({gatherers} gatherers; covered = no gap marker \
                 or disconnect of that gatherer overlaps the minute)",
                args.market,
                rfc3339(args.from, 0),
                rfc3339(args.to, 0)
            )?;
            let mut header = format!("{:<22}", "minute");
            for g in 0..gatherers {
                header.push_str(&format!("{:>8}{:>12}", format!("g{g}"), format!("g{g} events")));
            }
            header.push_str(&format!("{:>9}{:>5}", "merged", "gap"));
            writeln!(out, "{header}")?;
            for m in minutes {
                let mut line = format!("{:<22}", rfc3339(m.minute_ns, 0));
                for (covered, delivered) in m.covered.iter().zip(&m.delivered) {
                    line.push_str(&format!("{:>8}{delivered:>12}", yes_no(*covered)));
                }
                line.push_str(&format!("{:>9}{:>5}", m.merged, yes_no(m.gap)));
                writeln!(out, "{line}")?;
            }
            if gaps.is_empty() {
                writeln!(out, "no coverage gap in the range")?;
            }
            for g in gaps {
                writeln!(
                    out,
                    "coverage gap (no gatherer covered): {} to {}",
                    rfc3339(g.from_ns, 9),
                    gap_to(g).unwrap_or_else(|| "open".to_owned())
                )?;
            }
        }
        CoverageFormat::Csv => {
            let mut header = "kind,from,to".to_owned();
            for g in 0..gatherers {
                header.push_str(&format!(",g{g}_covered,g{g}_delivered"));
            }
            writeln!(out, "{header},merged,gap")?;
            for m in minutes {
                let mut line = format!(
                    "minute,{},{}",
                    rfc3339(m.minute_ns, 0),
                    rfc3339(minute_end(m.minute_ns), 0)
                );
                for (covered, delivered) in m.covered.iter().zip(&m.delivered) {
                    line.push_str(&format!(",{},{delivered}", yes_no(*covered)));
                }
                writeln!(out, "{line},{},{}", m.merged, yes_no(m.gap))?;
            }
            for g in gaps {
                let empty = ",".repeat(2 * gatherers + 1);
                writeln!(
                    out,
                    "gap,{},{}{empty},yes",
                    rfc3339(g.from_ns, 9),
                    gap_to(g).unwrap_or_default()
                )?;
            }
        }
        CoverageFormat::Json => {
            let minutes: Vec<String> = minutes
                .iter()
                .map(|m| {
                    let covered: Vec<&str> =
                        m.covered.iter().map(|&c| if c { "true" } else { "false" }).collect();
                    let delivered: Vec<String> = m.delivered.iter().map(u64::to_string).collect();
                    format!(
                        "{{\"minute\":{},\"covered\":[{}],\"delivered\":[{}],\"merged\":{},\
                         \"gap\":{}}}",
                        json_str(&rfc3339(m.minute_ns, 0)),
                        covered.join(","),
                        delivered.join(","),
                        m.merged,
                        m.gap
                    )
                })
                .collect();
            let gaps: Vec<String> = gaps
                .iter()
                .map(|g| {
                    format!(
                        "{{\"from\":{},\"to\":{}}}",
                        json_str(&rfc3339(g.from_ns, 9)),
                        gap_to(g).map_or_else(|| "null".to_owned(), |t| json_str(&t))
                    )
                })
                .collect();
            writeln!(
                out,
                "{{\"market\":{},\"from\":{},\"to\":{},\"gatherers\":{gatherers},\"minutes\":[{}],\
                 \"gaps\":[{}]}}",
                json_str(&args.market),
                json_str(&rfc3339(args.from, 9)),
                json_str(&rfc3339(args.to, 9)),
                minutes.join(","),
                gaps.join(",")
            )?;
        }
    }
    out.flush()
}

// ---------------------------------------------------------------------------------------------
// kdp book, kdp trades
// ---------------------------------------------------------------------------------------------

fn query_format(format: CoverageFormat) -> kdp_dedup::query::Format {
    match format {
        CoverageFormat::Table => kdp_dedup::query::Format::Table,
        CoverageFormat::Csv => kdp_dedup::query::Format::Csv,
        CoverageFormat::Json => kdp_dedup::query::Format::Json,
    }
}

/// `kdp book`: the market's book at `--at` (dedup::query::read_book); no snapshot placed that
/// early fails with status 1.
fn book(args: &BookArgs, out: &mut impl Write) -> Result<(), Failure> {
    use kdp_dedup::query::{self, QueryError};
    let mut db = connect_db("book", "production", &args.production)?;
    let book = query::read_book(&mut db, &args.market, args.at).map_err(|e| match e {
        QueryError::NoSnapshot { .. } => Failure::Failed(format!("kdp book: {e}")),
        other => Failure::Usage(format!("kdp book: {other}")),
    })?;
    query::write_book(out, &book, query_format(args.format))
        .map_err(|e| Failure::Usage(format!("kdp book: cannot write the output: {e}")))
}

/// `kdp trades`: the market's trades over `[--from, --to)`.
fn trades(args: &TradesArgs, out: &mut impl Write) -> Result<(), Failure> {
    use kdp_dedup::query;
    if args.to <= args.from {
        return Err(Failure::Usage(format!(
            "kdp trades: --to ({}) must be after --from ({})",
            rfc3339(args.to, 9),
            rfc3339(args.from, 9)
        )));
    }
    let mut db = connect_db("trades", "production", &args.production)?;
    let trades = query::read_trades(&mut db, &args.market, args.from, args.to)
        .map_err(|e| Failure::Usage(format!("kdp trades: {e}")))?;
    query::write_trades(out, &args.market, args.from, args.to, &trades, query_format(args.format))
        .map_err(|e| Failure::Usage(format!("kdp trades: cannot write the output: {e}")))
}

// ---------------------------------------------------------------------------------------------
// kdp check-config
// ---------------------------------------------------------------------------------------------

/// `kdp check-config`: the per-check report (src/check.rs); any failed check exits 1.
fn check_config(args: &CheckConfigArgs, out: &mut impl Write) -> Result<(), Failure> {
    let kind = args.kind.map(|k| match k {
        ConfigKind::Gatherer => check::Kind::Gatherer,
        ConfigKind::Dedup => check::Kind::Dedup,
    });
    let env = |name: &str| std::env::var(name).ok();
    match check::run(&args.file, kind, env, out) {
        Ok(true) => Ok(()),
        Ok(false) => Err(Failure::Failed(format!(
            "kdp check-config: {} has problems: see the FAIL lines above",
            args.file.display()
        ))),
        Err(e) => Err(Failure::Usage(format!("kdp check-config: cannot write the report: {e}"))),
    }
}

// ---------------------------------------------------------------------------------------------
// kdp migrate
// ---------------------------------------------------------------------------------------------

/// `kdp migrate`: applies the schema's missing migrations and prints each one applied.
fn migrate(args: &MigrateArgs, out: &mut impl Write) -> Result<(), String> {
    let url =
        args.database_url.clone().or_else(kdp_engine::pg::database_url_from_env).ok_or(
            "kdp migrate: no database given; pass --database-url URL or set KDP_DATABASE_URL",
        )?;
    let schema = match args.schema {
        SchemaName::Gatherer => &kdp_ingest::store::GATHERER,
        SchemaName::Production => &kdp_dedup::schema::PRODUCTION,
    };
    let server = kdp_engine::pg::ExternalServer::new(&url)
        .map(kdp_engine::pg::DatabaseServer::External)
        .map_err(|e| format!("kdp migrate: {e}"))?;
    let mut client = server.connect().map_err(|e| {
        format!("kdp migrate: cannot reach the database ({e}); check the URL and that the server is running")
    })?;
    let report = kdp_engine::pg::migrate::migrate(&mut client, schema)
        .map_err(|e| format!("kdp migrate: {e}"))?;
    let write = |e: std::io::Error| format!("kdp migrate: cannot write the report: {e}");
    for migration in &report.applied {
        writeln!(out, "applied {} {}", report.schema, migration.name).map_err(write)?;
    }
    writeln!(out, "{} schema at version {}", report.schema, report.version).map_err(write)
}

// ---------------------------------------------------------------------------------------------
// kdp gatherer
// ---------------------------------------------------------------------------------------------

/// Largest gatherer config file read: a million market tickers is ~30 MB of TOML.
const GATHERER_CONFIG_BYTES_MAX: u64 = 64 << 20;
/// How often `kdp gatherer` checks for a session that gave up (a refused key).
const GATHERER_HEALTH_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// `kdp gatherer`: load the config (file + environment), start, run until Ctrl-C or SIGTERM or
/// a fatal session error, shut down in order, print the final counts.
fn gatherer(args: &GathererArgs) -> Result<(), String> {
    init_stderr_logging("info");
    let config = gatherer_config(&args.config, |name| std::env::var(name).ok())?;
    // The handlers are installed before the gatherer starts, so a signal during start-up is
    // kept, not fatal.
    let (runtime, stop) = signal_runtime("kdp gatherer")?;
    let handle =
        kdp_ingest::gatherer::Gatherer::start(&config).map_err(|e| format!("kdp gatherer: {e}"))?;
    let fatal = runtime.block_on(async {
        tokio::pin!(stop);
        let mut tick = tokio::time::interval(GATHERER_HEALTH_POLL);
        loop {
            tokio::select! {
                stopped = &mut stop => {
                    break stopped.err().map(|e| format!("kdp gatherer: stop signal failed: {e}"));
                }
                _ = tick.tick() => {
                    if let Some(why) = handle.stats().fatal() {
                        break Some(format!("kdp gatherer: {why}"));
                    }
                    if handle.writer_finished() {
                        break Some("kdp gatherer: the writer stopped; see the log".to_owned());
                    }
                }
            }
        }
    });
    let stats = handle.shutdown().map_err(|e| format!("kdp gatherer: shutdown: {e}"))?;
    write_gatherer_stats(&mut std::io::stdout(), &stats)
        .map_err(|e| format!("kdp gatherer: cannot write the final counts: {e}"))?;
    fatal.map_or(Ok(()), Err)
}

/// Reads and parses the config file, then applies the environment overrides from `env`.
fn gatherer_config(
    path: &Path,
    env: impl Fn(&str) -> Option<String>,
) -> Result<kdp_ingest::gatherer::GathererConfig, String> {
    let fail = |e: String| format!("kdp gatherer: config file {}: {e}", path.display());
    let len = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?.len();
    if len > GATHERER_CONFIG_BYTES_MAX {
        return Err(fail(format!("{len} bytes, more than {GATHERER_CONFIG_BYTES_MAX}")));
    }
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let mut config =
        kdp_ingest::gatherer::GathererConfig::from_toml(&text).map_err(|e| fail(e.to_string()))?;
    config.apply_env(env);
    config.check().map_err(|e| fail(e.to_string()))?;
    Ok(config)
}

/// The final counts, one line per shard and one for the writer.
fn write_gatherer_stats(
    out: &mut impl Write,
    stats: &kdp_ingest::gatherer::GathererStats,
) -> std::io::Result<()> {
    for s in &stats.shards {
        writeln!(
            out,
            "shard {}: {} markets on {} connections, {} records ({} events, {} gaps, {} raw), \
             {} connects, {} disconnects, {} ring-full stalls ({} us)",
            s.index,
            s.markets,
            s.connections,
            s.records,
            s.events,
            s.gaps,
            s.unparsed,
            s.connects,
            s.disconnects,
            s.ring_full_stalls,
            s.ring_full_wait_us
        )?;
    }
    let w = &stats.writer;
    writeln!(
        out,
        "writer: {} rows committed in {} batches (last gseq {}), {} batch failures, {} reconnects",
        w.rows.total(),
        w.batches_committed,
        w.last_committed_gseq,
        w.batch_failures,
        w.connects.saturating_sub(1)
    )?;
    out.flush()
}

// ---------------------------------------------------------------------------------------------
// kdp dedup
// ---------------------------------------------------------------------------------------------

/// Largest dedup config file read: a handful of keys and at most 8 gatherers.
const DEDUP_CONFIG_BYTES_MAX: u64 = 1 << 20;
/// How often `kdp dedup` checks that its merge thread still runs.
const DEDUP_HEALTH_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// `kdp dedup`: load the config (file + environment), start, run until Ctrl-C or SIGTERM or a
/// fatal error (production schema refused, a reader bug), shut down in order (merge and commit
/// what was read), print the final counts.
fn dedup(args: &DedupArgs) -> Result<(), String> {
    init_stderr_logging("info");
    let config = dedup_config(&args.config, |name| std::env::var(name).ok())?;
    // Handlers first, so a signal during start-up is kept, not fatal.
    let (runtime, stop) = signal_runtime("kdp dedup")?;
    let handle = kdp_dedup::service::Dedup::start(config).map_err(|e| format!("kdp dedup: {e}"))?;
    let fatal = runtime.block_on(async {
        tokio::pin!(stop);
        let mut tick = tokio::time::interval(DEDUP_HEALTH_POLL);
        loop {
            tokio::select! {
                stopped = &mut stop => {
                    break stopped.err().map(|e| format!("kdp dedup: stop signal failed: {e}"));
                }
                _ = tick.tick() => {
                    if handle.finished() {
                        let why = handle.fatal().unwrap_or_else(|| "the merge thread ended".into());
                        break Some(format!("kdp dedup: {why}"));
                    }
                }
            }
        }
    });
    let stats = handle.shutdown().map_err(|e| format!("kdp dedup: shutdown: {e}"))?;
    write_dedup_stats(&mut std::io::stdout(), &stats)
        .map_err(|e| format!("kdp dedup: cannot write the final counts: {e}"))?;
    fatal.map_or(Ok(()), Err)
}

/// Reads and parses the dedup config file, then applies the environment override from `env`.
fn dedup_config(
    path: &Path,
    env: impl Fn(&str) -> Option<String>,
) -> Result<kdp_dedup::config::Checked, String> {
    let fail = |e: String| format!("kdp dedup: config file {}: {e}", path.display());
    let len = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?.len();
    if len > DEDUP_CONFIG_BYTES_MAX {
        return Err(fail(format!("{len} bytes, more than {DEDUP_CONFIG_BYTES_MAX}")));
    }
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let mut config =
        kdp_dedup::config::DedupConfig::from_toml(&text).map_err(|e| fail(e.to_string()))?;
    config.apply_env(&env);
    let mut checked = config.check().map_err(|e| fail(e.to_string()))?;
    // Test-only crash points (kdp_dedup::crash); unset in production.
    checked.crash =
        kdp_dedup::crash::CrashPoint::from_env(&env).map_err(|e| format!("kdp dedup: {e}"))?;
    Ok(checked)
}

/// The final counts: one line per gatherer, one for the merge, one for production.
fn write_dedup_stats(
    out: &mut impl Write,
    stats: &kdp_dedup::service::DedupStats,
) -> std::io::Result<()> {
    for (name, r) in &stats.readers {
        writeln!(
            out,
            "gatherer {name}: {} rows read (through gseq {}), production cursor {}, {} connects, {} \
             failures",
            r.rows_read, r.read_gseq, r.committed_gseq, r.connects, r.failures
        )?;
    }
    let m = &stats.merge;
    writeln!(
        out,
        "merge: {} emitted, {} duplicates, {} repeats, {} kept (snapshots, gaps)",
        m.emitted, m.duplicates, m.repeats, m.kept
    )?;
    let s = &stats.sink;
    writeln!(
        out,
        "production: {} rows in {} batches ({} staged, {} rows already there), {} failures",
        s.rows_written, stats.batches, s.batches_staged, s.rows_conflicted, s.failures
    )?;
    out.flush()
}

// ---------------------------------------------------------------------------------------------
// kdp sim
// ---------------------------------------------------------------------------------------------

/// `kdp sim`: start, print the banner on stdout, run until Ctrl-C (or SIGTERM), shut down.
fn sim(args: SimArgs) -> Result<(), String> {
    init_stderr_logging("warn");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("kdp sim: cannot start the tokio runtime: {e}"))?;
    runtime.block_on(async {
        let stop = stop_signal().map_err(|e| format!("kdp sim: cannot listen for Ctrl-C: {e}"))?;
        run_sim(args, &mut std::io::stdout(), stop).await
    })
}

/// Logs (tracing) to stderr, filtered by `RUST_LOG`, else at `default_level`.
fn init_stderr_logging(default_level: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// A current-thread runtime with the stop-signal handlers already installed in it (see
/// [`stop_signal`]); `command` names the subcommand in errors.
fn signal_runtime(
    command: &str,
) -> Result<(tokio::runtime::Runtime, impl Future<Output = std::io::Result<()>>), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("{command}: cannot start the signal runtime: {e}"))?;
    let stop = runtime
        .block_on(async { stop_signal() })
        .map_err(|e| format!("{command}: cannot listen for Ctrl-C: {e}"))?;
    Ok((runtime, stop))
}

/// Completes at the first SIGINT (Ctrl-C) or SIGTERM. Both handlers are installed before this
/// returns, so a signal that arrives while the simulator starts is not lost (nor fatal).
fn stop_signal() -> std::io::Result<impl Future<Output = std::io::Result<()>>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        Ok(())
    })
}

/// What the banner reports besides the bound addresses.
#[derive(Debug)]
struct Accepted {
    key_ids: Vec<String>,
    demo: Option<DemoKeyFiles>,
    require_auth: bool,
    faults: FaultConfig,
    truth: Option<PathBuf>,
}

#[derive(Debug)]
struct DemoKeyFiles {
    private: PathBuf,
    public: PathBuf,
}

/// Starts the simulator from `args`, writes the banner to `out`, and shuts it down when `stop`
/// completes (Ctrl-C or SIGTERM in the binary).
async fn run_sim(
    args: SimArgs,
    out: &mut impl Write,
    stop: impl Future<Output = std::io::Result<()>>,
) -> Result<(), String> {
    let (cfg, accepted) = sim_config(args)?;
    let handle = Simulator::start(cfg).await.map_err(|e| format!("kdp sim: {e}"))?;
    let printed = write_banner(out, &handle, &accepted)
        .map_err(|e| format!("kdp sim: cannot write the banner to stdout: {e}"));
    let stopped = match printed {
        Ok(()) => stop.await.map_err(|e| format!("kdp sim: stop signal failed: {e}")),
        Err(e) => Err(e),
    };
    handle.shutdown().await;
    stopped
}

/// The simulator configuration the flags ask for; reads the key files and writes `--gen-key`'s.
fn sim_config(args: SimArgs) -> Result<(SimConfig, Accepted), String> {
    let market = MarketConfig {
        seed: args.seed,
        markets: args.markets,
        rate_msgs_per_s: args.rate_msgs_per_s,
        legacy_whole_second_times: args.legacy_times,
        identical_delta_ppm: args.identical_delta_ppm,
        ..MarketConfig::default()
    };
    let mut keys = KeyStore::new();
    let mut key_ids = Vec::new();
    for (id, path) in &args.public_keys {
        let pem = read_public_key(path)?;
        keys.insert_pem(id.as_str(), &pem)
            .map_err(|e| format!("kdp sim: --public-key {id}={}: {e}", path.display()))?;
        key_ids.push(id.clone());
    }
    let demo = match &args.gen_key {
        Some(dir) => {
            let (files, public_pem) = gen_demo_key(dir)?;
            keys.insert_pem(DEMO_KEY_ID, &public_pem)
                .map_err(|e| format!("kdp sim: the generated demo key does not load: {e}"))?;
            key_ids.push(DEMO_KEY_ID.to_owned());
            Some(files)
        }
        None => None,
    };
    let faults = fault_config(&args);
    let mut cfg = SimConfig::new(market, args.cert_out);
    cfg.clock = Clock::RealTime { speed: args.speed };
    cfg.shape = if args.legacy_fields { Shape::WithLegacy } else { Shape::Current };
    cfg.ws_addr = Some(args.ws_addr);
    cfg.wss_addr = Some(args.wss_addr);
    cfg.rest_addr = Some(args.rest_addr);
    cfg.control_addr = Some(args.control_addr);
    cfg.keys = keys;
    cfg.require_auth = !args.no_auth;
    cfg.faults = faults;
    cfg.truth_path = args.truth.clone();
    let accepted =
        Accepted { key_ids, demo, require_auth: cfg.require_auth, faults, truth: args.truth };
    Ok((cfg, accepted))
}

fn read_public_key(path: &Path) -> Result<String, String> {
    let cannot = |e: &dyn std::fmt::Display| {
        format!("kdp sim: cannot read public key {}: {e}", path.display())
    };
    let len = std::fs::metadata(path).map_err(|e| cannot(&e))?.len();
    if len > PUBLIC_KEY_FILE_BYTES_MAX {
        return Err(cannot(&format_args!(
            "{len} bytes is too large for a PEM public key (at most {PUBLIC_KEY_FILE_BYTES_MAX})"
        )));
    }
    std::fs::read_to_string(path).map_err(|e| cannot(&e))
}

/// Writes a fresh demo key pair into `dir`; returns the paths and the public PEM.
fn gen_demo_key(dir: &Path) -> Result<(DemoKeyFiles, String), String> {
    let key = auth::generate_demo_key().map_err(|e| format!("kdp sim: {e}"))?;
    std::fs::create_dir_all(dir).map_err(|e| {
        format!("kdp sim: cannot create --gen-key directory {}: {e}", dir.display())
    })?;
    let private = dir.join(DEMO_PRIVATE_FILE);
    let public = dir.join(DEMO_PUBLIC_FILE);
    let write_private = || -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&private)?;
        // An existing file keeps its old mode through `open`: narrow it before writing.
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(key.private_pkcs8_pem.as_bytes())?;
        f.sync_all()
    };
    write_private()
        .map_err(|e| format!("kdp sim: cannot write private key {}: {e}", private.display()))?;
    std::fs::write(&public, &key.public_spki_pem)
        .map_err(|e| format!("kdp sim: cannot write public key {}: {e}", public.display()))?;
    Ok((DemoKeyFiles { private, public }, key.public_spki_pem))
}

/// Rates of the `light` preset (see [`FaultPreset::Light`]).
const LIGHT_FAULTS: FaultConfig = FaultConfig {
    seed: 0,
    drop_frame_ppm: 100,
    dup_frame_ppm: 100,
    close_ppm_per_s: 1_000,
    silence_ppm_per_s: 300,
    silence_ms: 15_000,
    overflow_ppm_per_s: 300,
    outage_ppm_per_s: 100,
    outage_ms: 5_000,
    bad_signature_ppm: 10_000,
};

fn fault_config(args: &SimArgs) -> FaultConfig {
    let base = match args.faults {
        FaultPreset::None => FaultConfig::default(),
        FaultPreset::Light => LIGHT_FAULTS,
    };
    FaultConfig {
        seed: args.seed,
        drop_frame_ppm: args.drop_ppm.unwrap_or(base.drop_frame_ppm),
        dup_frame_ppm: args.dup_ppm.unwrap_or(base.dup_frame_ppm),
        close_ppm_per_s: args.close_ppm_per_s.unwrap_or(base.close_ppm_per_s),
        silence_ppm_per_s: args.silence_ppm_per_s.unwrap_or(base.silence_ppm_per_s),
        silence_ms: args.silence_ms.unwrap_or(base.silence_ms),
        overflow_ppm_per_s: args.overflow_ppm_per_s.unwrap_or(base.overflow_ppm_per_s),
        outage_ppm_per_s: args.outage_ppm_per_s.unwrap_or(base.outage_ppm_per_s),
        outage_ms: args.outage_ms.unwrap_or(base.outage_ms),
        bad_signature_ppm: args.bad_signature_ppm.unwrap_or(base.bad_signature_ppm),
    }
}

/// `path` from the root, so a client started elsewhere can use it as printed.
fn full_path(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

/// The startup banner: where to connect, what to trust, which keys are accepted.
fn write_banner(
    out: &mut impl Write,
    handle: &SimHandle,
    accepted: &Accepted,
) -> std::io::Result<()> {
    let none = || "off".to_owned();
    writeln!(out, "kdp sim: Kalshi exchange simulator running; Ctrl-C stops it.")?;
    writeln!(out, "  ws       {}", handle.ws_url().unwrap_or_else(none))?;
    writeln!(out, "  wss      {}", handle.wss_url().unwrap_or_else(none))?;
    writeln!(out, "  rest     {}", handle.rest_url().unwrap_or_else(none))?;
    let control = handle.control_addr().map_or_else(none, |a| format!("http://{a}"));
    writeln!(out, "  control  {control}  (GET /connections, POST /faults/...)")?;
    let cert = full_path(handle.cert_pem_path());
    writeln!(out, "  cert     {}  (trust it for wss)", cert.display())?;
    if let Some(truth) = &accepted.truth {
        writeln!(out, "  truth    {}  (complete after Ctrl-C)", full_path(truth).display())?;
    }
    let ids =
        if accepted.key_ids.is_empty() { "none".to_owned() } else { accepted.key_ids.join(", ") };
    if accepted.require_auth {
        writeln!(out, "  auth     signed handshake required; accepted key ids: {ids}")?;
    } else {
        writeln!(out, "  auth     off (--no-auth): unsigned connections accepted; key ids: {ids}")?;
    }
    if let Some(demo) = &accepted.demo {
        writeln!(out, "  demo key id {DEMO_KEY_ID}")?;
        let (private, public) = (full_path(&demo.private), full_path(&demo.public));
        writeln!(out, "           private key {}  (Ed25519, PKCS#8 PEM)", private.display())?;
        writeln!(out, "           public key  {}", public.display())?;
    }
    let f = &accepted.faults;
    writeln!(
        out,
        "  faults   drop {} ppm/frame, dup {} ppm/frame, close {} ppm/s, silence {} ppm/s \
         ({} ms), overflow {} ppm/s, outage {} ppm/s ({} ms), bad signature {} ppm/handshake",
        f.drop_frame_ppm,
        f.dup_frame_ppm,
        f.close_ppm_per_s,
        f.silence_ppm_per_s,
        f.silence_ms,
        f.overflow_ppm_per_s,
        f.outage_ppm_per_s,
        f.outage_ms,
        f.bad_signature_ppm
    )?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sim_args(extra: &[&str]) -> SimArgs {
        let mut argv = vec!["kdp", "sim"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).map(|c| c.command) {
            Ok(Command::Sim(args)) => *args,
            other => panic!("expected kdp sim, got {other:?}"),
        }
    }

    #[test]
    fn gatherer_needs_a_config_file() {
        assert!(Cli::try_parse_from(["kdp", "gatherer"]).is_err());
        let cli = Cli::try_parse_from(["kdp", "gatherer", "--config", "g.toml"]);
        let Ok(Cli { command: Command::Gatherer(args) }) = cli else { panic!("{cli:?}") };
        assert_eq!(args.config, PathBuf::from("g.toml"));
    }

    #[test]
    fn gatherer_config_reads_the_file_then_the_environment() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("g.toml");
        let missing = gatherer_config(&path, |_| None).err();
        assert!(
            missing.as_deref().is_some_and(
                |m| m.starts_with(&format!("kdp gatherer: config file {}: ", path.display()))
            ),
            "{missing:?}"
        );
        std::fs::write(
            &path,
            "ws_url = \"wss://localhost:1/ws\"\nprivate_key_path = \"/k.pem\"\n\
             database_url = \"postgres://kdp@127.0.0.1/g\"\nmarkets = [\"M\"]\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            gatherer_config(&path, |_| None).err(),
            Some(format!(
                "kdp gatherer: config file {}: gatherer config field `key_id`: missing; set it \
                 or KDP_KEY_ID",
                path.display()
            ))
        );
        let env = |name: &str| (name == "KDP_KEY_ID").then(|| "from-env".to_owned());
        let config = gatherer_config(&path, env).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.key_id.as_deref(), Some("from-env"));
    }

    #[test]
    fn dedup_config_reads_the_file_then_the_environment() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("d.toml");
        std::fs::write(
            &path,
            "[[gatherers]]\nname = \"a\"\nid = 0\ndatabase_url = \"postgres://kdp@h/g\"\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            dedup_config(&path, |_| None).err(),
            Some(format!(
                "kdp dedup: config file {}: dedup config field `production_database_url`: \
                 missing; set it or KDP_PRODUCTION_DATABASE_URL",
                path.display()
            ))
        );
        let env = |name: &str| {
            (name == "KDP_PRODUCTION_DATABASE_URL").then(|| "postgres://kdp@h/prod".to_owned())
        };
        let config = dedup_config(&path, env).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.production.get_dbname(), Some("prod"));
        assert_eq!(config.gatherers.len(), 1);
        assert_eq!(config.crash, None, "no crash point unless KDP_DEDUP_CRASH_AT is set");
        let crash_env = |name: &str| match name {
            "KDP_DEDUP_CRASH_AT" => Some("after_copy:2".to_owned()),
            _ => env(name),
        };
        let config = dedup_config(&path, crash_env).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            config.crash,
            Some(kdp_dedup::crash::CrashPoint { at: kdp_dedup::crash::CrashAt::AfterCopy, nth: 2 })
        );
        let bad_env = |name: &str| match name {
            "KDP_DEDUP_CRASH_AT" => Some("sometime".to_owned()),
            _ => env(name),
        };
        assert!(dedup_config(&path, bad_env).is_err_and(|e| e.contains("KDP_DEDUP_CRASH_AT")));
    }

    #[test]
    fn gatherer_final_counts() {
        let mut stats = kdp_ingest::gatherer::GathererStats::default();
        stats.shards.push(kdp_ingest::gatherer::ShardStats {
            index: 0,
            markets: 3,
            connections: 1,
            records: 10,
            events: 9,
            gaps: 1,
            connects: 1,
            ..Default::default()
        });
        stats.writer.rows.delta = 10;
        stats.writer.batches_committed = 2;
        stats.writer.last_committed_gseq = 10;
        stats.writer.connects = 1;
        let mut out = Vec::new();
        write_gatherer_stats(&mut out, &stats).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            String::from_utf8_lossy(&out),
            "shard 0: 3 markets on 1 connections, 10 records (9 events, 1 gaps, 0 raw), 1 \
             connects, 0 disconnects, 0 ring-full stalls (0 us)\nwriter: 10 rows committed in 2 \
             batches (last gseq 10), 0 batch failures, 0 reconnects\n"
        );
    }

    #[test]
    fn migrate_applies_then_reports_up_to_date() {
        let db = kdp_engine::pg::testing::TestDatabase::new().unwrap_or_else(|e| panic!("{e}"));
        let cli = Cli::try_parse_from(["kdp", "migrate", "--database-url", db.url()]);
        let Ok(Cli { command: Command::Migrate(args) }) = cli else { panic!("{cli:?}") };
        assert_eq!(args.schema, SchemaName::Gatherer);
        let mut out = Vec::new();
        migrate(&args, &mut out).unwrap_or_else(|e| panic!("{e}"));
        migrate(&args, &mut out).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            String::from_utf8_lossy(&out),
            "applied gatherer 0001_gatherer_tables\napplied gatherer 0002_gatherer_runs\n\
             applied gatherer 0003_roles\n\
             gatherer schema at version 3\ngatherer schema at version 3\n"
        );
    }

    #[test]
    fn migrate_applies_the_production_schema() {
        let db = kdp_engine::pg::testing::TestDatabase::new().unwrap_or_else(|e| panic!("{e}"));
        let cli = Cli::try_parse_from([
            "kdp",
            "migrate",
            "--database-url",
            db.url(),
            "--schema",
            "production",
        ]);
        let Ok(Cli { command: Command::Migrate(args) }) = cli else { panic!("{cli:?}") };
        let mut out = Vec::new();
        migrate(&args, &mut out).unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<String> = kdp_dedup::schema::PRODUCTION
            .migrations
            .iter()
            .map(|m| format!("applied production {}\n", m.name))
            .collect();
        assert_eq!(
            String::from_utf8_lossy(&out),
            format!(
                "{}production schema at version {}\n",
                names.concat(),
                kdp_dedup::schema::PRODUCTION.migrations.len()
            )
        );
    }

    #[test]
    fn migrate_names_an_unreachable_database() {
        // Port 1 on loopback: nothing listens there, so the connection is refused at once.
        let url = "postgres://kdp@127.0.0.1:1/gatherer";
        let cli =
            Cli::try_parse_from(["kdp", "migrate", "--database-url", url, "--schema", "gatherer"]);
        let Ok(Cli { command: Command::Migrate(args) }) = cli else { panic!("{cli:?}") };
        let error = migrate(&args, &mut Vec::new()).err().unwrap_or_default();
        assert!(
            error.starts_with("kdp migrate: cannot reach the database (connect to "),
            "{error}"
        );
        assert!(error.ends_with("check the URL and that the server is running"), "{error}");
    }

    #[test]
    fn every_subcommand_parses() {
        for name in ["sim", "demo", "migrate"] {
            let cli = Cli::try_parse_from(["kdp", name]);
            assert_eq!(cli.map(|c| c.command.name()).ok(), Some(name));
        }
        let gatherer = Cli::try_parse_from(["kdp", "gatherer", "--config", "g.toml"]);
        assert_eq!(gatherer.map(|c| c.command.name()).ok(), Some("gatherer"));
        let dedup = Cli::try_parse_from(["kdp", "dedup", "--config", "d.toml"]);
        assert_eq!(dedup.map(|c| c.command.name()).ok(), Some("dedup"));
        assert!(Cli::try_parse_from(["kdp", "dedup"]).is_err(), "dedup needs --config");
        let verify = Cli::try_parse_from([
            "kdp",
            "verify",
            "--production=postgres://p",
            "--gatherer=postgres://a",
            "--gatherer=postgres://b",
            "--truth=t.bin",
        ]);
        let Ok(Cli { command: Command::Verify(args) }) = verify else { panic!("{verify:?}") };
        assert_eq!(args.gatherers, ["postgres://a", "postgres://b"]);
        assert_eq!(args.truth, Some(PathBuf::from("t.bin")));
        assert_eq!(args.examples, 5);
        for argv in [
            &["kdp", "verify"][..],
            &["kdp", "verify", "--production=postgres://p"],
            &["kdp", "coverage", "--market=M", "--from=2026-01-05T14:00:00Z"],
            &["kdp", "coverage", "--market=M", "--from=yesterday", "--to=2026-01-05T14:00:00Z"],
        ] {
            let err = Cli::try_parse_from(argv).map(|_| ()).map_err(|e| e.exit_code());
            assert_eq!(err, Err(2), "{argv:?}");
        }
        let coverage = Cli::try_parse_from([
            "kdp",
            "coverage",
            "--market=M",
            "--from=2026-01-05T14:00:30Z",
            "--to=2026-01-05T14:02:00+01:00",
            "--format=csv",
            "--production=postgres://p",
        ]);
        let Ok(Cli { command: Command::Coverage(args) }) = coverage else { panic!("{coverage:?}") };
        assert_eq!(args.from, 1_767_621_630_000_000_000);
        assert_eq!(args.to, 1_767_618_120_000_000_000);
        assert_eq!(args.format, CoverageFormat::Csv);
        assert!(Cli::try_parse_from(["kdp", "nonsense"]).is_err());
    }

    #[test]
    fn sim_defaults() {
        let a = sim_args(&[]);
        assert_eq!(a.seed, 1);
        assert_eq!(a.markets, 1_000);
        assert_eq!(a.rate_msgs_per_s, 5_000);
        assert_eq!(a.speed, 1);
        assert_eq!(a.ws_addr.to_string(), "127.0.0.1:8700");
        assert_eq!(a.wss_addr.to_string(), "127.0.0.1:8701");
        assert_eq!(a.rest_addr.to_string(), "127.0.0.1:8702");
        assert_eq!(a.control_addr.to_string(), "127.0.0.1:8703");
        assert_eq!(a.cert_out, PathBuf::from("kdp-sim-cert.pem"));
        assert_eq!(a.public_keys, Vec::<(String, PathBuf)>::new());
        assert!(!a.no_auth && !a.legacy_times && !a.legacy_fields);
        assert_eq!(a.gen_key, None);
        assert_eq!(a.identical_delta_ppm, 2_000);
        assert_eq!(a.truth, None);
        assert_eq!(fault_config(&a), FaultConfig { seed: 1, ..FaultConfig::default() });
        assert_eq!(sim_args(&["--truth", "run.truth"]).truth, Some(PathBuf::from("run.truth")));
    }

    #[test]
    fn sim_flags_parse() {
        let a = sim_args(&[
            "--seed=7",
            "--markets=10000",
            "--rate=250000",
            "--speed=60",
            "--ws-addr=127.0.0.1:0",
            "--wss-addr=[::1]:9001",
            "--public-key",
            "k1=/keys/a.pem",
            "--public-key=k2=/keys/b=c.pem",
            "--no-auth",
            "--gen-key=/tmp/d",
            "--legacy-times",
            "--legacy-fields",
            "--identical-delta-ppm=0",
        ]);
        assert_eq!(a.seed, 7);
        assert_eq!(a.markets, 10_000);
        assert_eq!(a.rate_msgs_per_s, 250_000);
        assert_eq!(a.speed, 60);
        assert_eq!(a.ws_addr.to_string(), "127.0.0.1:0");
        assert_eq!(a.wss_addr.to_string(), "[::1]:9001");
        assert_eq!(
            a.public_keys,
            vec![
                ("k1".to_owned(), PathBuf::from("/keys/a.pem")),
                ("k2".to_owned(), PathBuf::from("/keys/b=c.pem")),
            ]
        );
        assert!(a.no_auth && a.legacy_times && a.legacy_fields);
        assert_eq!(a.gen_key, Some(PathBuf::from("/tmp/d")));
        assert_eq!(a.identical_delta_ppm, 0);
    }

    #[test]
    fn fault_preset_and_overrides() {
        let light = sim_args(&["--faults=light", "--seed=9"]);
        assert_eq!(fault_config(&light), FaultConfig { seed: 9, ..LIGHT_FAULTS });
        let mixed = sim_args(&["--faults", "light", "--drop-ppm=5", "--outage-ppm-per-s=0"]);
        assert_eq!(
            fault_config(&mixed),
            FaultConfig { seed: 1, drop_frame_ppm: 5, outage_ppm_per_s: 0, ..LIGHT_FAULTS }
        );
        let single = sim_args(&["--dup-ppm=1000000", "--silence-ms=3"]);
        assert_eq!(
            fault_config(&single),
            FaultConfig {
                seed: 1,
                dup_frame_ppm: 1_000_000,
                silence_ms: 3,
                ..FaultConfig::default()
            }
        );
    }

    #[test]
    fn bad_sim_flags_are_usage_errors() {
        for argv in [
            &["kdp", "sim", "--ws-addr=localhost:80"][..],
            &["kdp", "sim", "--ws-addr=127.0.0.1"],
            &["kdp", "sim", "--public-key=nokey"],
            &["kdp", "sim", "--public-key==/path"],
            &["kdp", "sim", "--public-key=id="],
            &["kdp", "sim", "--faults=heavy"],
            &["kdp", "sim", "--drop-ppm=-1"],
            &["kdp", "sim", "--markets=many"],
            &["kdp", "sim", "--speed=0"],
            &["kdp", "sim", "--speed=1000001"],
        ] {
            let err = Cli::try_parse_from(argv).map(|_| ()).map_err(|e| e.exit_code());
            assert_eq!(err, Err(2), "{argv:?}");
        }
    }

    /// Every listener on a free loopback port, the certificate in `dir`.
    fn free_ports(dir: &Path, extra: &[&str]) -> SimArgs {
        let cert = format!("--cert-out={}", dir.join("cert.pem").display());
        let mut argv = vec![
            "--ws-addr=127.0.0.1:0",
            "--wss-addr=127.0.0.1:0",
            "--rest-addr=127.0.0.1:0",
            "--control-addr=127.0.0.1:0",
            cert.as_str(),
        ];
        argv.extend_from_slice(extra);
        sim_args(&argv)
    }

    async fn run_until_stopped(args: SimArgs) -> Result<(), String> {
        let mut out = Vec::new();
        run_sim(args, &mut out, std::future::ready(Ok(()))).await
    }

    #[tokio::test]
    async fn sim_errors_are_messages() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.pem");
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "-----BEGIN PUBLIC KEY-----\nnot a key\n").expect("write");
        let key = |p: &Path| format!("--public-key=k={}", p.display());

        let err = run_until_stopped(free_ports(dir.path(), &[&key(&missing)])).await;
        assert_eq!(
            err,
            Err(format!(
                "kdp sim: cannot read public key {}: No such file or directory (os error 2)",
                missing.display()
            ))
        );
        let err = run_until_stopped(free_ports(dir.path(), &[&key(&garbage)])).await;
        let prefix =
            format!("kdp sim: --public-key k={}: public key PEM is neither", garbage.display());
        assert!(err.as_ref().is_err_and(|e| e.starts_with(&prefix)), "{err:?}");

        let mut remote = free_ports(dir.path(), &[]);
        remote.rest_addr = SocketAddr::from(([10, 1, 2, 3], 80));
        let err = run_until_stopped(remote).await;
        assert_eq!(
            err,
            Err("kdp sim: REST address 10.1.2.3:80 is not a loopback address; the simulator \
                 listens on loopback only"
                .to_owned())
        );
        let err = run_until_stopped(free_ports(dir.path(), &["--markets=0"])).await;
        assert_eq!(
            err,
            Err("kdp sim: market configuration: market config: markets = 0 is outside \
                 1..=10,000,000; fix the value"
                .to_owned())
        );
    }

    #[tokio::test]
    async fn stop_signal_keeps_a_signal_sent_before_it_is_awaited() {
        let stop = stop_signal().expect("handlers installed");
        // Sent before the future is first polled, as a Ctrl-C during start-up would be.
        let kill = std::process::Command::new("kill")
            .args(["-INT", &std::process::id().to_string()])
            .status()
            .expect("run kill");
        assert!(kill.success());
        let stopped = tokio::time::timeout(std::time::Duration::from_secs(30), stop).await;
        assert_eq!(stopped.expect("stops within 30 s").map_err(|e| e.kind()), Ok(()));
    }

    /// Sends `GET path` with HTTP/1.1 and returns the whole response.
    async fn http_get(addr: &str, path: &str) -> String {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read");
        response
    }

    /// The value after `label` on the banner line that starts with it.
    fn banner_field<'a>(banner: &'a str, label: &str) -> &'a str {
        banner
            .lines()
            .find_map(|l| l.trim_start().strip_prefix(label))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no {label:?} line in the banner:\n{banner}"))
    }

    #[tokio::test]
    async fn sim_starts_prints_banner_serves_rest_and_stops() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = dir.path().join("keys");
        let gen_key = format!("--gen-key={}", keys.display());
        let args = free_ports(dir.path(), &["--markets=50", &gen_key]);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (banner_tx, banner_rx) = tokio::sync::oneshot::channel::<String>();
        let sim = tokio::spawn(async move {
            let mut out = BannerTap { buf: Vec::new(), done: Some(banner_tx) };
            let stop = async move { stop_rx.await.map_err(std::io::Error::other) };
            run_sim(args, &mut out, stop).await
        });
        let banner = tokio::time::timeout(std::time::Duration::from_secs(30), banner_rx)
            .await
            .expect("banner within 30 s")
            .expect("banner sent");

        assert!(banner.starts_with("kdp sim: Kalshi exchange simulator running"), "{banner}");
        let ws = banner_field(&banner, "ws ");
        assert!(ws.starts_with("ws://127.0.0.1:") && ws.ends_with("/trade-api/ws/v2"), "{ws}");
        let wss = banner_field(&banner, "wss ");
        assert!(wss.starts_with("wss://localhost:") && wss.ends_with("/trade-api/ws/v2"), "{wss}");
        let cert = dir.path().join("cert.pem");
        assert_eq!(banner_field(&banner, "cert "), cert.display().to_string());
        assert!(
            std::fs::read_to_string(&cert).expect("cert").starts_with("-----BEGIN CERTIFICATE")
        );
        assert!(banner.contains("signed handshake required; accepted key ids: kdp-demo\n"));
        let private = keys.join("kdp-demo.key");
        assert_eq!(banner_field(&banner, "private key"), private.display().to_string());
        assert_eq!(
            std::fs::metadata(&private).expect("private key").permissions().mode() & 0o777,
            0o600
        );
        let public = std::fs::read_to_string(keys.join("kdp-demo.pub")).expect("public key");
        assert!(public.starts_with("-----BEGIN PUBLIC KEY-----"), "{public}");

        let rest = banner_field(&banner, "rest ");
        let authority = rest
            .strip_prefix("http://")
            .and_then(|r| r.strip_suffix("/trade-api/v2"))
            .expect("rest URL");
        let response = http_get(authority, "/trade-api/v2/exchange/status").await;
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(response.contains(r#""exchange_active":true"#), "{response}");

        stop_tx.send(()).expect("simulator waiting");
        let ended = tokio::time::timeout(std::time::Duration::from_secs(30), sim).await;
        assert_eq!(ended.expect("stops within 30 s").expect("task"), Ok(()));
    }

    /// A `Write` that hands over everything written so far at the first flush (the banner's end).
    struct BannerTap {
        buf: Vec<u8>,
        done: Option<tokio::sync::oneshot::Sender<String>>,
    }

    impl Write for BannerTap {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            self.buf.extend_from_slice(data);
            Ok(data.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            if let Some(done) = self.done.take() {
                let _ = done.send(String::from_utf8_lossy(&self.buf).into_owned());
            }
            Ok(())
        }
    }
}
