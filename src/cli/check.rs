//! `yaraflow check RULES... [--json]`: compiles rules and prints the rule
//! analysis: per rule, whether stream verdicts are exact and why not; the
//! window and head the scanner will use.

use std::path::PathBuf;
use std::process::ExitCode;

use super::{load_rules, RuleArgs};

/// Arguments of `yaraflow check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Rule files, or directories searched for .yar/.yara files.
    #[arg(required = true)]
    rules: Vec<PathBuf>,
    /// Print the analysis as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    rule_args: RuleArgs,
}

pub fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let rules = load_rules(&args.rules, &args.rule_args)?;
    let analysis = rules.analysis();
    if args.json {
        println!("{}", serde_json::to_string_pretty(analysis)?);
        return Ok(ExitCode::SUCCESS);
    }
    let inexact = analysis.rules.iter().filter(|r| !r.supported).count();
    for rule in &analysis.rules {
        let verdict = if rule.supported { "exact" } else { "INEXACT" };
        println!(
            "{verdict:8} {}:{} ({})",
            rule.namespace, rule.identifier, rule.origin
        );
        for issue in &rule.issues {
            println!("         - {issue}");
        }
    }
    println!(
        "{} rules, {} exact on streams, {inexact} not; window {} bytes, head {} bytes",
        analysis.rules.len(),
        analysis.rules.len() - inexact,
        analysis.window,
        analysis.head_len
    );
    Ok(ExitCode::SUCCESS)
}
