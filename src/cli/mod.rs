//! The command-line program: argument parsing and one module per command.
//!
//! `scan` feeds files to the multi-stream scanner as streams and prints one
//! JSON line per stream; `check` prints what rule analysis says about rules;
//! `bench` measures yaraflow against plain YARA-X; `pcap` scans the TCP
//! flows of captures; `serve` runs the HTTP service; `loadtest` drives a
//! running service.

mod bench;
mod bench_store;
mod check;
mod loadtest;
mod pcap;
mod scan;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Scan many concurrent byte streams with YARA-X rules.
#[derive(Debug, Parser)]
#[command(name = "yaraflow", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Scan files as streams, one JSON line of results per file.
    Scan(scan::ScanArgs),
    /// Compile rules and report, per rule, whether stream scanning is exact.
    Check(check::CheckArgs),
    /// Measure memory, open time and throughput against plain YARA-X.
    Bench(bench::BenchArgs),
    /// Measure the stream store: streams held under a resident bound,
    /// restore cost, checkpoint, shutdown and restart times.
    BenchStore(bench_store::BenchStoreArgs),
    /// Scan the TCP flows of pcap/pcapng captures, one JSON line per direction.
    Pcap(pcap::PcapArgs),
    /// Drive a running `yaraflow serve` on loopback with concurrent streams.
    Loadtest(loadtest::LoadtestArgs),
    /// Serve the HTTP API (and Prometheus metrics) until SIGINT/SIGTERM.
    Serve(serve::ServeArgs),
}

/// Rule locations and the window cap, shared by the commands.
#[derive(Debug, clap::Args)]
struct RuleArgs {
    /// Longest match (bytes) the scanner guarantees across chunk boundaries.
    #[arg(long, default_value_t = yaraflow::ScannerConfig::default().max_pattern_len)]
    max_pattern_len: usize,
}

fn load_rules(paths: &[PathBuf], args: &RuleArgs) -> anyhow::Result<yaraflow::RuleSet> {
    Ok(yaraflow::RuleSet::from_paths(paths, args.max_pattern_len)?)
}

/// A bar on stderr over `total` bytes (a spinner when the total is not
/// known, as for standard input); drawn only when stderr is a terminal,
/// never with `quiet`.
fn byte_progress(quiet: bool, total: Option<u64>) -> indicatif::ProgressBar {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    if quiet {
        return ProgressBar::hidden();
    }
    let (bar, template) = match total {
        Some(total) => (
            ProgressBar::new(total),
            "{bar:40} {bytes}/{total_bytes} ({bytes_per_sec}, {eta} left)",
        ),
        None => (
            ProgressBar::new_spinner(),
            "{spinner} {bytes} ({bytes_per_sec})",
        ),
    };
    bar.set_draw_target(ProgressDrawTarget::stderr());
    bar.set_style(ProgressStyle::with_template(template).expect("a valid template"));
    bar
}

/// The bearer token kept in `path` (surrounding whitespace trimmed), if a
/// token file was given.
fn read_token(path: Option<&std::path::Path>) -> anyhow::Result<Option<String>> {
    let Some(path) = path else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read the token file {}: {e}", path.display()))?;
    Ok(Some(text.trim().to_string()))
}

/// Parses the arguments and runs the command.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Scan(args) => scan::run(args),
        Command::Check(args) => check::run(args),
        Command::Bench(args) => bench::run(args),
        Command::BenchStore(args) => bench_store::run(args),
        Command::Pcap(args) => pcap::run(args),
        Command::Loadtest(args) => loadtest::run(args),
        Command::Serve(args) => serve::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
