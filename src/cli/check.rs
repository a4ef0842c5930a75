//! `yaraflow check RULES... [--json]`: compiles rules and prints the rule
//! analysis: per rule, its class (stream-exact, or whole-data: evaluated on
//! the bytes a chunk stream retains), why, and its gate, or whether it is
//! dense (`rules::density`); the window and head the scanner will use.

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
        let report = serde_json::json!({
            "classes": analysis.classes(),
            "rules": analysis.rules,
            "window": analysis.window,
            "head_len": analysis.head_len,
            "tail_floor": rules.tail_plan().floor(),
            "tail_most": rules.tail_plan().most(),
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    for rule in &analysis.rules {
        let class = if rule.supported { "exact" } else { "whole" };
        println!(
            "{class:8} {}:{} ({})",
            rule.namespace, rule.identifier, rule.origin
        );
        for issue in &rule.issues {
            println!("         - {issue}");
        }
        match &rule.gate {
            Some(gate) => println!("         gate: {}", serde_json::to_string(gate)?),
            None if !rule.supported => println!(
                "         no gate: every chunk stream retains its bytes for it, up to the cap"
            ),
            None => {}
        }
        if let Some(per_kib) = rule.dense {
            println!(
                "         dense: {per_kib} matches per KiB of a sample; every chunk stream retains its bytes for it (until a cap, or half the retention budget) and is scanned whole (--stream-dense-rules: searched chunk by chunk)"
            );
        }
    }
    println!(
        "{}; window {} bytes, head {} bytes, tail {} to {} bytes",
        analysis.classes(),
        analysis.window,
        analysis.head_len,
        rules.tail_plan().floor(),
        rules.tail_plan().most(),
    );
    Ok(ExitCode::SUCCESS)
}
