//! `yaraflow bench-store`: the stream store's figures (streams held under a
//! resident bound, restore cost, checkpoint, shutdown and restart times).

use std::path::PathBuf;
use std::process::ExitCode;

use yaraflow::bench::store::{self, StoreBenchSpec, StoreReport};

/// Arguments of `yaraflow bench-store`.
#[derive(Debug, clap::Args)]
pub struct BenchStoreArgs {
    /// Streams opened (each gets two chunks).
    #[arg(long, default_value_t = 100_000)]
    streams: usize,
    /// Chunk size in bytes.
    #[arg(long, default_value_t = 1460)]
    chunk_size: usize,
    /// Random rules: this many 10-byte hex patterns.
    #[arg(long, default_value_t = 1000)]
    synthetic_rules: usize,
    /// Most bytes of stream contexts in memory (e.g. 64MiB, 1GiB).
    #[arg(long, default_value = "1GiB")]
    max_resident_bytes: bytesize::ByteSize,
    /// Most stream contexts in memory.
    #[arg(long, default_value_t = usize::MAX)]
    max_resident_streams: usize,
    /// Engine shards.
    #[arg(long, default_value_t = 1)]
    shards: usize,
    /// Streams per timed sample (stored and resident).
    #[arg(long, default_value_t = 10_000)]
    sample: usize,
    /// The store's file (created, and removed at the end; default: in the
    /// system's temporary folder).
    #[arg(long)]
    store: Option<PathBuf>,
    /// One JSON object on stdout instead of a table.
    #[arg(long)]
    json: bool,
    /// Seed of the rules and the data.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

pub fn run(args: BenchStoreArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.streams > 0 && args.chunk_size > 0,
        "--streams and --chunk-size must be positive"
    );
    let path = args.store.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("yaraflow-bench-store-{}.redb", std::process::id()))
    });
    let spec = StoreBenchSpec {
        streams: args.streams,
        chunk_size: args.chunk_size,
        rules: args.synthetic_rules,
        max_resident_bytes: usize::try_from(args.max_resident_bytes.as_u64())?,
        max_resident_streams: args.max_resident_streams,
        shards: args.shards,
        sample: args.sample,
        path,
        seed: args.seed,
    };
    let report = store::run(&spec, &|phase| eprintln!("bench-store: {phase}"))?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_table(&report);
    }
    Ok(match report.verdicts_differing {
        0 => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    })
}

fn print_table(r: &StoreReport) {
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!("streams                 {}", r.streams);
    println!(
        "resident bound          {:.0} MiB of contexts",
        mib(r.max_resident_bytes as u64)
    );
    println!("fill                    {:.2} s", r.fill_seconds);
    println!(
        "resident / stored       {} / {}",
        r.resident_streams, r.stored_streams
    );
    println!("engine RSS growth       {:.0} MiB", mib(r.engine_rss_bytes));
    println!("store file              {:.0} MiB", mib(r.store_file_bytes));
    println!(
        "checkpoint              {:.2} s for {} streams",
        r.checkpoint_seconds, r.checkpoint_streams
    );
    println!("chunk, resident stream  {:.0} ns", r.resident_chunk_ns);
    println!("chunk, stored stream    {:.0} ns", r.stored_chunk_ns);
    println!("restore per stream      {:.0} ns", r.restore_ns_per_stream);
    println!(
        "verdicts checked        {} ({} differ)",
        r.verdicts_checked, r.verdicts_differing
    );
    println!(
        "shutdown                {:.2} s, {} streams kept",
        r.shutdown_seconds, r.kept_streams
    );
    println!(
        "restart                 {:.2} s, {} streams open",
        r.restart_seconds, r.restarted_streams
    );
}
