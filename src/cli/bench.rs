//! `yaraflow bench`: yaraflow against what a user would otherwise pick, on
//! the same generated workload, in one run (see `yaraflow::bench`): YARA-X
//! scanning each stream as one whole buffer (the ceiling and the reference
//! verdicts), one `blocks::Scanner` per stream, yaraflow's single-threaded
//! scanner, and its engine with N shards. Prints a table, or with `--json`
//! one JSON object; `--hop` adds the cost of the actor hop. Progress lines
//! go to stderr, the report to stdout.

use std::path::PathBuf;
use std::time::Instant;

use yaraflow::bench::{
    contenders, synthetic_rules, PairedRounds, Report, ReportHeader, Traffic, Workload,
    WorkloadSpec,
};
use yaraflow::RuleSet;

/// Arguments of `yaraflow bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Concurrent streams.
    #[arg(long, default_value_t = 10_000)]
    streams: usize,
    /// Chunk size in bytes.
    #[arg(long, default_value_t = 1460)]
    chunk_size: usize,
    /// Bytes over all streams (default: 10 chunks per stream).
    #[arg(long)]
    bytes: Option<u64>,
    /// Many short streams (5 to 20 chunks each, closed as they end)
    /// instead of all streams as long; `--bytes` is then ignored.
    #[arg(long)]
    short_streams: bool,
    /// Random rules: this many 10-byte hex patterns.
    #[arg(long, default_value_t = 1000, conflicts_with = "rules")]
    synthetic_rules: usize,
    /// Rule files or directories instead of synthetic rules (repeatable).
    #[arg(long)]
    rules: Vec<PathBuf>,
    /// Files whose bytes are planted in the data (default with `--rules`:
    /// the files of data/samples up to 64 KiB; with synthetic rules: their
    /// patterns).
    #[arg(long)]
    plant: Vec<PathBuf>,
    /// What the streams' bytes look like: random bytes, HTTP-like text
    /// (headers, HTML and JSON bodies) or executable-like binary.
    #[arg(long, value_enum, default_value_t = Traffic::Random)]
    workload: Traffic,
    /// Fraction of streams that hold a planted pattern.
    #[arg(long, default_value_t = 0.1)]
    match_fraction: f64,
    /// Plant the files at the very start of the streams that hold one (as
    /// files inside flows start: rules that read headers and modules see
    /// them), cut to the stream's length.
    #[arg(long)]
    plant_at_start: bool,
    /// Search every chunk as it comes, also in streams that retain their
    /// bytes for whole-data rules (`ScannerConfig::eager_search`).
    #[arg(long)]
    eager_search: bool,
    /// Search dense rules chunk by chunk instead of retaining each stream's
    /// bytes for them (`RuleOptions::whole_scan_dense`; see `yaraflow
    /// check`)
    #[arg(long)]
    stream_dense_rules: bool,
    /// Shard counts of the engine runs, comma-separated (empty: none).
    #[arg(long, default_value = "1,2", value_parser = shard_counts)]
    shards: ShardCounts,
    /// Most streams given a `blocks::Scanner` each (each is a WASM
    /// instance; 0 skips that contender).
    #[arg(long, default_value_t = 2000)]
    blocks_cap: usize,
    /// Also measure the actor hop (chunk sent, query round trip).
    #[arg(long)]
    hop: bool,
    /// After the table's run, run the reference and the single-threaded
    /// scanner this many more times, back to back, and print the median of
    /// the scanner's ratios with their range: the figure to quote on a
    /// shared, noisy machine.
    #[arg(long, default_value_t = 0)]
    rounds: usize,
    /// In each of those rounds, also run the design's floor (each chunk
    /// copied after its stream's tail into a shared batch, batches searched
    /// as one block, nothing else: no verdicts) and print its median ratio:
    /// how close to whole-buffer YARA-X a scanner of this design can come.
    #[arg(long, requires = "rounds")]
    floor: bool,
    /// Also write the workload (bytes, streams, schedule, patterns) to this
    /// folder, for the peer in benches/peer (synthetic rules only).
    #[arg(long, value_name = "DIR")]
    dump_workload: Option<PathBuf>,
    /// One JSON object on stdout instead of a table.
    #[arg(long)]
    json: bool,
    /// Seed of the rules, the data and the interleaving.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

pub fn run(args: BenchArgs) -> anyhow::Result<std::process::ExitCode> {
    anyhow::ensure!(
        args.streams > 0 && args.chunk_size > 0,
        "--streams and --chunk-size must be positive"
    );
    let (source, plants, label) = rule_source(&args)?;
    let options = yaraflow::RuleOptions {
        whole_scan_dense: !args.stream_dense_rules,
        ..yaraflow::RuleOptions::new(1024)
    };
    let compile = || -> anyhow::Result<RuleSet> {
        Ok(match &source {
            Some(source) => {
                RuleSet::from_sources_with(vec![("<string>".into(), source.clone())], &options)?
            }
            None => RuleSet::from_paths_with(&args.rules, &options)?,
        })
    };
    let rules = compile()?;
    eprintln!("{}", rules.analysis().classes());
    let spec = WorkloadSpec {
        streams: args.streams,
        chunk_size: args.chunk_size,
        total_bytes: args
            .bytes
            .unwrap_or(args.streams as u64 * 10 * args.chunk_size as u64),
        short_streams: args.short_streams,
        match_fraction: args.match_fraction,
        seed: args.seed,
        traffic: args.workload,
        plant_at_start: args.plant_at_start,
    };
    let started = Instant::now();
    let workload = Workload::generate(&spec, &plants);
    eprintln!(
        "workload: {} streams, {:.1} MiB, {} chunks of up to {} bytes, generated in {:.1?}",
        workload.streams(),
        workload.bytes() as f64 / (1 << 20) as f64,
        workload.schedule().len(),
        args.chunk_size,
        started.elapsed()
    );
    if let Some(dir) = &args.dump_workload {
        dump(dir, &workload, &args)?;
    }
    let outcomes = run_contenders(&args, &rules, &compile, &workload)?;
    let mut report = Report::new(
        ReportHeader {
            streams: workload.streams(),
            chunk_size: args.chunk_size,
            rules: label,
            rule_count: rules.rules().iter().count(),
            rule_sets: rule_set_names(&args),
            rule_classes: rules.analysis().classes(),
            bytes: workload.bytes(),
            workload: if args.short_streams {
                "short_streams"
            } else {
                "interleaved"
            }
            .into(),
            traffic: args.workload,
            plant_at_start: args.plant_at_start,
        },
        &outcomes,
    );
    if args.hop {
        report.actor_hop = Some(contenders::actor_hop(args.streams)?);
    }
    if args.rounds > 0 {
        let (scanner, floor) = paired_rounds(args.rounds, &args, &rules, &workload)?;
        report.scanner_rounds = Some(scanner);
        report.floor_rounds = floor;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    let all_equal = report
        .contenders
        .iter()
        .all(|c| c.verdicts_equal_whole_buffer)
        && report
            .scanner_rounds
            .as_ref()
            .is_none_or(|r| r.verdicts_equal != Some(false));
    Ok(match all_equal {
        true => std::process::ExitCode::SUCCESS,
        false => std::process::ExitCode::FAILURE,
    })
}

/// The rule sets' names for the report: each path's last component.
fn rule_set_names(args: &BenchArgs) -> Vec<String> {
    if args.rules.is_empty() {
        return vec!["synthetic".into()];
    }
    args.rules
        .iter()
        .map(|p| {
            p.file_name()
                .map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into())
        })
        .collect()
}

/// The synthetic rules' source (or `None` for rule files), the bytes to
/// plant, and how to name the rules in the report.
fn rule_source(args: &BenchArgs) -> anyhow::Result<(Option<String>, Vec<Vec<u8>>, String)> {
    let mut plants = Vec::new();
    let planted: Vec<PathBuf> = match (args.plant.is_empty(), args.rules.is_empty()) {
        (false, _) => args.plant.clone(),
        (true, false) if std::path::Path::new("data/samples").is_dir() => {
            vec!["data/samples".into()]
        }
        _ => Vec::new(),
    };
    for path in planted {
        let files: Vec<PathBuf> = match path.is_dir() {
            true => std::fs::read_dir(&path)?
                .map(|e| Ok(e?.path()))
                .collect::<std::io::Result<_>>()?,
            false => vec![path],
        };
        for file in files {
            if file
                .metadata()
                .map(|m| m.len() <= 64 << 10)
                .unwrap_or(false)
            {
                plants.push(std::fs::read(&file)?);
            }
        }
    }
    if !args.rules.is_empty() {
        let label = args
            .rules
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(",");
        return Ok((None, plants, label));
    }
    let (source, patterns) = synthetic_rules(args.synthetic_rules, args.seed);
    plants.extend(patterns);
    Ok((
        Some(source),
        plants,
        format!("{} synthetic", args.synthetic_rules),
    ))
}

/// Writes the workload and the synthetic rules' patterns (one hex line
/// each) for a peer.
fn dump(dir: &std::path::Path, workload: &Workload, args: &BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.rules.is_empty(),
        "--dump-workload needs synthetic rules (a peer gets their patterns as literals)"
    );
    workload.dump(dir)?;
    let (_, patterns) = synthetic_rules(args.synthetic_rules, args.seed);
    let hex: Vec<String> = patterns
        .iter()
        .map(|p| p.iter().map(|b| format!("{b:02x}")).collect())
        .collect();
    std::fs::write(dir.join("patterns.txt"), hex.join("\n") + "\n")?;
    Ok(())
}

/// Runs every contender, the reference first.
fn run_contenders(
    args: &BenchArgs,
    rules: &RuleSet,
    compile: &dyn Fn() -> anyhow::Result<RuleSet>,
    workload: &Workload,
) -> anyhow::Result<Vec<contenders::Outcome>> {
    // The references run the rules as written (the rule set's own are
    // rewritten for streams: see `rules::data_values`).
    let plain = rules.compile_unchanged()?;
    contenders::warm_up(&plain, workload, 20_000)?;
    let mut outcomes = vec![contenders::whole_buffer(&plain, workload)?];
    eprintln!("  {}: {:.0} MB/s", outcomes[0].name, outcomes[0].mb_per_s());
    if args.blocks_cap > 0 {
        let overlap = rules.analysis().window.saturating_sub(1);
        outcomes.push(contenders::blocks_per_stream(
            &plain,
            workload,
            args.blocks_cap,
            overlap,
        )?);
    }
    outcomes.push(contenders::multi_stream(
        rules,
        workload,
        args.eager_search,
    )?);
    for &shards in &args.shards.0 {
        let engine_rules = compile()?;
        let mut outcome = contenders::engine(|| engine_rules, workload, shards, args.eager_search)?;
        let parallel = contenders::parallel_whole_buffers(&plain, workload, shards)?;
        let note = outcome.note.take().unwrap_or_default();
        outcome.note = Some(format!(
            "{note}; {shards} thread(s) of whole-buffer scans: {parallel:.0} MB/s, engine / that = {:.2}",
            outcome.mb_per_s() / parallel
        ));
        outcomes.push(outcome);
    }
    // Run last, listed second: the buffers it frees would blur the
    // resident bytes that the others measure.
    outcomes.insert(1, contenders::buffered_whole_buffer(&plain, workload)?);
    for outcome in &outcomes[1..] {
        eprintln!("  {}: {:.0} MB/s", outcome.name, outcome.mb_per_s());
    }
    Ok(outcomes)
}

/// `rounds` more runs of the reference and the scanner, back to back, the
/// scanner first in every other round; with `--floor`, the design floor
/// after them in each round.
fn paired_rounds(
    rounds: usize,
    args: &BenchArgs,
    rules: &RuleSet,
    workload: &Workload,
) -> anyhow::Result<(PairedRounds, Option<PairedRounds>)> {
    let plain = rules.compile_unchanged()?;
    let mut ratios = Vec::with_capacity(rounds);
    let mut floor_ratios = Vec::new();
    let floor_tail = rules.analysis().window.saturating_sub(1);
    let floor_batch = contenders::floor_batch_bytes(rules);
    let mut verdicts_equal = true;
    for round in 0..rounds {
        let scanner_first = round % 2 == 1;
        let mut scanner = None;
        if scanner_first {
            scanner = Some(contenders::multi_stream(
                rules,
                workload,
                args.eager_search,
            )?);
        }
        let reference = contenders::whole_buffer(&plain, workload)?;
        let scanner = match scanner {
            Some(scanner) => scanner,
            None => contenders::multi_stream(rules, workload, args.eager_search)?,
        };
        let ratio = scanner.mb_per_s() / reference.mb_per_s().max(1e-9);
        let mut floor = String::new();
        if args.floor {
            let (outcome, _) = contenders::design_floor(&plain, workload, floor_tail, floor_batch)?;
            let floor_ratio = outcome.mb_per_s() / reference.mb_per_s().max(1e-9);
            floor = format!(
                ", design floor {:.0} MB/s, ratio {floor_ratio:.2}",
                outcome.mb_per_s()
            );
            floor_ratios.push(floor_ratio);
        }
        eprintln!(
            "  round {}/{rounds}: reference {:.0} MB/s, scanner {:.0} MB/s, ratio {ratio:.2}{floor}",
            round + 1,
            reference.mb_per_s(),
            scanner.mb_per_s()
        );
        verdicts_equal &= scanner.verdicts == reference.verdicts;
        ratios.push(ratio);
    }
    let floor = (!floor_ratios.is_empty()).then(|| PairedRounds::new(floor_ratios, None));
    Ok((PairedRounds::new(ratios, Some(verdicts_equal)), floor))
}

fn print_table(report: &Report) {
    println!(
        "yaraflow bench: {} streams, {} workload of {} bytes{}, {:.1} MiB in chunks of up to {} bytes; rules: {} ({} compiled)",
        report.header.streams,
        report.header.workload,
        report.header.traffic.name(),
        match report.header.plant_at_start {
            true => " with files at stream starts",
            false => "",
        },
        report.header.bytes as f64 / (1 << 20) as f64,
        report.header.chunk_size,
        report.header.rules,
        report.header.rule_count
    );
    println!("{}", report.header.rule_classes);
    println!(
        "{:<44} {:>8} {:>9} {:>7} {:>10} {:>9} {:>9} {:>9} {:>9} {:>8}",
        "contender",
        "streams",
        "MB/s",
        "ratio",
        "RSS/strm",
        "open ns",
        "close ns",
        "bulk ns",
        "p99 us",
        "verdicts"
    );
    let figure = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}"));
    for c in &report.contenders {
        println!(
            "{:<44} {:>8} {:>9.0} {:>7.2} {:>10} {:>9} {:>9} {:>9} {:>9} {:>8}",
            c.name,
            c.streams,
            c.mb_per_s,
            c.ratio_to_whole_buffer,
            figure(c.rss_bytes_per_stream),
            figure(c.open_ns_per_stream),
            figure(c.close_ns_per_stream),
            figure(c.bulk_close_ns_per_stream),
            c.p99_chunk_latency_us
                .map_or("-".to_string(), |v| format!("{v:.1}")),
            match c.verdicts_equal_whole_buffer {
                true => "equal".to_string(),
                false => format!("{} DIFFER", c.verdicts_differing),
            }
        );
    }
    for c in &report.contenders {
        if let Some(note) = &c.note {
            println!("  {}: {note}", c.name);
        }
    }
    let matching = report.contenders[0].streams_matching;
    println!("  streams with a matching rule (reference): {matching}");
    if let Some(rounds) = &report.scanner_rounds {
        println!(
            "\nscanner / whole-buffer YARA-X over {} more rounds, back to back: median {:.2} (range {:.2} to {:.2}); verdicts {}",
            rounds.ratios.len(),
            rounds.median,
            rounds.min,
            rounds.max,
            match rounds.verdicts_equal {
                Some(false) => "DIFFER in some round",
                _ => "equal in every round",
            }
        );
    }
    if let Some(floor) = &report.floor_rounds {
        println!(
            "design floor (copy and search only, no verdicts) / whole-buffer YARA-X over the same rounds: median {:.2} (range {:.2} to {:.2})",
            floor.median, floor.min, floor.max
        );
    }
    if let Some(hop) = &report.actor_hop {
        println!("\nactor hop, empty rules, 64-byte chunks, 1 shard:");
        println!(
            "  chunk to a scanner directly: {:.0} ns; through the engine (do_send, no reply): {:.0} ns; hop cost {:.0} ns per chunk",
            hop.direct_ns_per_chunk,
            hop.engine_ns_per_chunk,
            hop.engine_ns_per_chunk - hop.direct_ns_per_chunk
        );
        println!(
            "  query round trip (get_matches, blocking): {:.1} us",
            hop.query_round_trip_us
        );
    }
}

/// The shard counts of `--shards`: none when it is empty.
#[derive(Debug, Clone)]
struct ShardCounts(Vec<usize>);

fn shard_counts(text: &str) -> Result<ShardCounts, String> {
    let counts = text
        .split(',')
        .filter(|part| !part.trim().is_empty())
        .map(|part| match part.trim().parse::<usize>() {
            Ok(0) | Err(_) => Err(format!("{part:?} is not a shard count (1 or more)")),
            Ok(count) => Ok(count),
        });
    counts.collect::<Result<_, _>>().map(ShardCounts)
}
