//! The `kdp` binary: command-line wiring only. Each subcommand hands off to a crate; this file
//! is the only place that reads flags, files and the environment.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    /// Run a gatherer: take every market over WebSocket into the gatherer's own database.
    Gatherer,
    /// Run the deduplicator: merge the gatherer databases into production.
    Dedup,
    /// Run the Kalshi exchange simulator on loopback.
    Sim,
    /// Run the whole pipeline locally (embedded PostgreSQL, simulator, 3 gatherers, dedup).
    Demo,
    /// Compare production with the simulator's truth and the gatherer databases.
    Verify,
    /// Apply the schema migrations to a database.
    Migrate,
    /// Reconstruct the order book of a market at a point in time.
    Book,
    /// Print the trades of a market over a time range.
    Trades,
    /// Print the coverage ledger of a market over a time range.
    Coverage,
    /// Validate a configuration file and test connectivity and authentication.
    CheckConfig,
}

impl Command {
    /// The issue that builds this subcommand, named in the "not yet available" message.
    fn planned_in(&self) -> &'static str {
        match self {
            Command::Sim => "the exchange simulator (issue 3)",
            Command::Gatherer | Command::Migrate => "the gatherer (issue 4)",
            Command::Dedup | Command::Verify | Command::Coverage => "the deduplicator (issue 5)",
            Command::Demo | Command::Book | Command::Trades | Command::CheckConfig => {
                "the demo and operations work (issue 6)"
            }
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let name = format!("{:?}", cli.command).to_lowercase();
    eprintln!(
        "kdp {name}: not yet available in this build; it arrives with {}.",
        cli.command.planned_in()
    );
    ExitCode::from(2)
}
