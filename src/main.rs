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
    /// The subcommand's name and the work that builds it, for the "not yet available" message.
    fn planned(&self) -> (&'static str, &'static str) {
        const SIM: &str = "the exchange simulator (issue 3)";
        const GATHERER: &str = "the gatherer (issue 4)";
        const DEDUP: &str = "the deduplicator (issue 5)";
        const OPS: &str = "the demo and operations work (issue 6)";
        match self {
            Command::Sim => ("sim", SIM),
            Command::Gatherer => ("gatherer", GATHERER),
            Command::Migrate => ("migrate", GATHERER),
            Command::Dedup => ("dedup", DEDUP),
            Command::Verify => ("verify", DEDUP),
            Command::Coverage => ("coverage", DEDUP),
            Command::Demo => ("demo", OPS),
            Command::Book => ("book", OPS),
            Command::Trades => ("trades", OPS),
            Command::CheckConfig => ("check-config", OPS),
        }
    }
}

/// Runs a parsed command line; the error text is printed by `main`.
fn run(cli: Cli) -> Result<(), String> {
    let (name, planned) = cli.command.planned();
    Err(format!("kdp {name}: not yet available in this build; it arrives with {planned}."))
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{message}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unbuilt_subcommands_say_so_and_fail() {
        for (args, expected) in [
            (
                ["kdp", "sim"],
                "kdp sim: not yet available in this build; it arrives with the exchange simulator (issue 3).",
            ),
            (
                ["kdp", "gatherer"],
                "kdp gatherer: not yet available in this build; it arrives with the gatherer (issue 4).",
            ),
            (
                ["kdp", "check-config"],
                "kdp check-config: not yet available in this build; it arrives with the demo and operations work (issue 6).",
            ),
        ] {
            let cli = Cli::try_parse_from(args).map_err(|e| e.to_string());
            assert_eq!(cli.and_then(run), Err(expected.to_string()));
        }
    }

    #[test]
    fn every_subcommand_parses() {
        for name in [
            "gatherer",
            "dedup",
            "sim",
            "demo",
            "verify",
            "migrate",
            "book",
            "trades",
            "coverage",
            "check-config",
        ] {
            let cli = Cli::try_parse_from(["kdp", name]);
            assert_eq!(cli.map(|c| c.command.planned().0).ok(), Some(name));
        }
        assert!(Cli::try_parse_from(["kdp", "nonsense"]).is_err());
    }
}
