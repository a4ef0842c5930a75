//! A log pipeline feeding lines to yaraflow: each log file is one line
//! stream (no match spans two lines), and matches report their line.
//!
//! ```sh
//! cargo run --example log_tailer -- data/samples/app.log
//! ```

use std::io::BufRead;

use yaraflow::{MultiStreamScanner, RuleSet, ScannerConfig, StreamMode, Uuid};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let paths: Vec<String> = std::env::args().skip(1).collect();
    let paths = if paths.is_empty() {
        vec!["data/samples/app.log".to_string()]
    } else {
        paths
    };
    let config = ScannerConfig::default();
    let rules = RuleSet::from_paths(&["data/rules"], config.max_pattern_len)?;
    let mut scanner = MultiStreamScanner::new(&rules, config);

    for path in &paths {
        // One stream per log source, named by its path.
        let source = Uuid::new_v5(&Uuid::NAMESPACE_URL, path.as_bytes());
        scanner.open_stream(source, StreamMode::Lines)?;
        let mut reader = std::io::BufReader::new(std::fs::File::open(path)?);
        let mut line = Vec::new();
        while reader.read_until(b'\n', &mut line)? > 0 {
            scanner.scan_line(source, &line)?;
            line.clear();
        }
        let verdict = scanner.close_stream(&source)?.expect("the stream is open");
        for rule in &verdict.rules {
            for m in rule.patterns.iter().flat_map(|p| &p.matches) {
                println!(
                    "{path}:{}: {} ({} at byte {})",
                    m.line,
                    rule.identifier,
                    m.data.escape_ascii(),
                    m.offset
                );
            }
        }
        println!(
            "{path}: {} lines, {} rules matched",
            verdict.stats.lines,
            verdict.rules.len()
        );
    }
    Ok(())
}
