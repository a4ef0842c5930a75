//! The command-line program: argument parsing and one module per command.
//!
//! `scan` feeds files to the multi-stream scanner as streams and prints one
//! JSON line per stream; `check` prints what rule analysis says about rules;
//! `bench` measures yaraflow against plain YARA-X; `pcap` scans the TCP
//! flows of captures; `serve` runs the HTTP service; `loadtest` drives a
//! running service; `worker` and `verdicts` (feature `cluster`) run a
//! worker of a NATS cluster and print its verdicts.

mod bench;
mod bench_store;
mod check;
#[cfg(feature = "cluster")]
mod cluster;
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
    /// Join a NATS JetStream cluster as a worker: claim partitions, scan
    /// their streams, publish verdicts (until SIGINT/SIGTERM).
    #[cfg(feature = "cluster")]
    Worker(cluster::WorkerArgs),
    /// Print the verdicts a cluster's workers published, one JSON line each.
    #[cfg(feature = "cluster")]
    Verdicts(cluster::VerdictsArgs),
}

/// Rule locations and the window cap, shared by the commands.
#[derive(Debug, clap::Args)]
struct RuleArgs {
    /// Longest match (bytes) the scanner guarantees across chunk boundaries
    /// (at least 16).
    #[arg(long, default_value_t = yaraflow::ScannerConfig::default().max_pattern_len,
          value_parser = parse_pattern_len)]
    max_pattern_len: usize,
    /// Defines an external variable the rules read, as `yr --define`
    /// (`NAME=VALUE`: true/false, an integer, a float, or else a string);
    /// repeat for several.
    #[arg(long = "define", short = 'd', value_name = "NAME=VALUE")]
    defines: Vec<yaraflow::External>,
    /// Search dense rules (whose patterns match every few bytes of
    /// ordinary data, as `yaraflow check` lists them) chunk by chunk like
    /// the others, instead of retaining each stream's bytes for them and
    /// scanning them whole at its end
    #[arg(long)]
    stream_dense_rules: bool,
}

impl RuleArgs {
    /// The compile options these arguments ask for.
    fn options(&self) -> yaraflow::RuleOptions {
        yaraflow::RuleOptions {
            max_pattern_len: self.max_pattern_len,
            externals: self.defines.clone(),
            whole_scan_dense: !self.stream_dense_rules,
        }
    }
}

/// Smallest `--max-pattern-len` accepted. A window shorter than YARA-X's
/// atoms (4 bytes) misses matches that cross a chunk boundary while the
/// results say `exact: true`: on 7743e89, caps 0 to 3 missed an HTTP Basic
/// credential fed in 3-byte chunks, 4 found it. From 4 up, rule analysis
/// reports every rule whose patterns are longer than the window as
/// inexact; 16 leaves a margin and costs nothing worth saving.
const MIN_PATTERN_LEN: usize = 16;

fn parse_pattern_len(text: &str) -> Result<usize, String> {
    let value: usize = text
        .parse()
        .map_err(|e| format!("{text:?} is not a byte count: {e}"))?;
    if value < MIN_PATTERN_LEN {
        return Err(format!(
            "{value} is too small to keep verdicts exact: matches across chunk boundaries would be missed; use at least {MIN_PATTERN_LEN} (the default is {})",
            yaraflow::ScannerConfig::default().max_pattern_len
        ));
    }
    Ok(value)
}

/// Compiles the rules at `paths`, saying where it looked when a path is
/// missing (relative paths are relative to the current directory), and
/// warning on stderr about empty rule files and a rule set with no rule.
fn load_rules(paths: &[PathBuf], args: &RuleArgs) -> anyhow::Result<yaraflow::RuleSet> {
    for path in paths {
        if !path.exists() {
            let full = std::env::current_dir().map_or_else(|_| path.clone(), |dir| dir.join(path));
            anyhow::bail!(
                "no rules at {} (looked for {}; relative paths are relative to the current directory): pass --rules PATH, a .yar file or a directory of them",
                path.display(),
                full.display()
            );
        }
        let empty = std::fs::read_to_string(path).is_ok_and(|text| text.trim().is_empty());
        if path.is_file() && empty {
            eprintln!("warning: the rule file {} is empty", path.display());
        }
    }
    let rules = yaraflow::RuleSet::from_paths_with(paths, &args.options())?;
    eprintln!("{}", rules.analysis().classes());
    if rules.analysis().rules.is_empty() {
        eprintln!(
            "warning: the rules at {} define no rule: nothing will ever match",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(rules)
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
    let token = text.trim();
    // An empty token would let `Authorization: Bearer ` through: refuse it
    // rather than start with a check that checks nothing.
    anyhow::ensure!(
        !token.is_empty(),
        "the token file {} is empty: write a token into it (e.g. `openssl rand -hex 32 > {}`) or drop --token-file",
        path.display(),
        path.display()
    );
    Ok(Some(token.to_string()))
}

/// An error and its causes on one line, each cause once: a message that
/// already quotes its cause (`cannot listen on X: address in use`) is not
/// followed by it again.
fn error_chain(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

/// Whether writing the output failed because its reader closed it.
pub(crate) fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
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
        #[cfg(feature = "cluster")]
        Command::Worker(args) => cluster::worker(args),
        #[cfg(feature = "cluster")]
        Command::Verdicts(args) => cluster::verdicts(args),
    };
    match result {
        Ok(code) => code,
        // The reader of the output went away (`yaraflow pcap ... | head`):
        // nothing is wrong, and no one is left to tell.
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", error_chain(&err));
            ExitCode::from(2)
        }
    }
}
