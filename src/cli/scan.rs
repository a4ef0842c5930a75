//! `yaraflow scan`: each file is one stream, fed to one multi-stream scanner
//! in chunks (a typical packet, 1460 bytes, by default; or random sizes;
//! or lines), one file after the other or round-robin (`--interleave`) as
//! concurrent streams. Prints one JSON line per stream when it closes.
//!
//! Files are read as they are scanned, never whole, so files larger than
//! memory work (a line longer than the chunk limit is refused, not read
//! whole). A file that cannot be read or scanned to its end is reported on
//! stderr with results for the bytes before; the others are still scanned,
//! and the exit code is 1.
//!
//! Each file's stream has the file externals of its path (`filename`,
//! `filepath`, `extension`), as file scanners set them, but for those the
//! user defined with `--define`, which hold for every file.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use indicatif::ProgressBar;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use yaraflow::{
    External, FileInfo, MultiStreamScanner, ScannerConfig, StreamMode, StreamResults, Uuid,
};

use super::{load_rules, RuleArgs};

/// Arguments of `yaraflow scan`.
#[derive(Debug, clap::Args)]
pub struct ScanArgs {
    /// Rule file, or directory searched for .yar/.yara files (repeatable).
    #[arg(long, short, required = true)]
    rules: Vec<PathBuf>,
    /// Chunk size in bytes.
    #[arg(long, default_value_t = 1460, conflicts_with = "lines")]
    chunk_size: usize,
    /// Cut chunks of random sizes (1 to 2 x chunk size) from this seed.
    #[arg(long, value_name = "SEED", conflicts_with = "lines")]
    random_chunks: Option<u64>,
    /// Feed each file line by line (line streams: no match spans lines).
    #[arg(long)]
    lines: bool,
    /// Feed the files' chunks round-robin, as concurrent streams.
    #[arg(long)]
    interleave: bool,
    /// No progress bar on stderr (errors are still reported).
    #[arg(long, short)]
    quiet: bool,
    /// Most matched bytes printed per match.
    #[arg(long, default_value_t = ScannerConfig::default().max_snippet_bytes)]
    snippet_bytes: usize,
    #[command(flatten)]
    rule_args: RuleArgs,
    /// Files to scan, one stream each (`-` reads standard input).
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

/// One file being fed as a stream.
struct Feed {
    id: Uuid,
    path: PathBuf,
    reader: Box<dyn BufRead>,
    done: bool,
}

/// Cuts the next piece of a file.
struct Cutter {
    chunk_size: usize,
    max_line: usize,
    rng: Option<StdRng>,
    lines: bool,
}

impl Cutter {
    /// Reads the next chunk (or line) into `buf`; an empty `buf` means the
    /// end of the file.
    fn next(&mut self, reader: &mut dyn BufRead, buf: &mut Vec<u8>) -> std::io::Result<()> {
        buf.clear();
        if self.lines {
            // One byte past the longest line accepted: a longer one is
            // refused by the scanner, and never read whole.
            (&mut *reader)
                .take(self.max_line as u64 + 1)
                .read_until(b'\n', buf)?;
            return Ok(());
        }
        let size = match &mut self.rng {
            Some(rng) => rng.gen_range(1..=2 * self.chunk_size),
            None => self.chunk_size,
        };
        reader.take(size as u64).read_to_end(buf)?;
        Ok(())
    }
}

pub fn run(args: ScanArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.chunk_size > 0, "--chunk-size must be at least 1");
    let rules = load_rules(&args.rules, &args.rule_args)?;
    let config = ScannerConfig {
        max_snippet_bytes: args.snippet_bytes,
        ..ScannerConfig::default()
    };
    let mut scanner = MultiStreamScanner::new(&rules, config);
    let mut cutter = Cutter {
        chunk_size: args.chunk_size,
        max_line: scanner.config().max_chunk_bytes,
        rng: args.random_chunks.map(StdRng::seed_from_u64),
        lines: args.lines,
    };
    let mode = if args.lines {
        StreamMode::Lines
    } else {
        StreamMode::Chunks
    };
    let mut failed = false;
    let mut feeds = Vec::new();
    for path in &args.files {
        match open(path) {
            Ok(reader) => feeds.push(Feed {
                id: Uuid::new_v4(),
                path: path.clone(),
                reader,
                done: false,
            }),
            Err(err) => {
                eprintln!("error: cannot open {}: {err}", path.display());
                failed = true;
            }
        }
    }
    let progress = progress_bar(&args);
    let mut out = std::io::stdout().lock();
    let group = if args.interleave {
        feeds.len().max(1)
    } else {
        1
    };
    for batch in feeds.chunks_mut(group) {
        for feed in batch.iter() {
            scanner.open_stream(feed.id, mode)?;
            let externals = file_externals(&feed.path, &args.rule_args.defines);
            scanner.set_stream_externals(feed.id, externals)?;
        }
        let feeding = Feeding {
            cutter: &mut cutter,
            mode,
            progress: &progress,
        };
        failed |= feed_round_robin(&mut scanner, batch, feeding, &mut out)?;
    }
    progress.finish_and_clear();
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The file externals of `path` (none for standard input), but for those
/// `defined` for every file.
fn file_externals(path: &std::path::Path, defined: &[External]) -> Vec<External> {
    if path.as_os_str() == "-" {
        return Vec::new();
    }
    let info = FileInfo {
        name: path.file_name().map(|n| n.to_string_lossy().into_owned()),
        path: Some(path.display().to_string()),
        content_type: None,
    };
    let mut externals = info.externals();
    externals.retain(|e| !defined.iter().any(|d| d.name == e.name));
    externals
}

/// A bar on stderr over the bytes of every file (a spinner when one is
/// standard input).
fn progress_bar(args: &ScanArgs) -> ProgressBar {
    let sizes: Option<u64> = args
        .files
        .iter()
        .map(|path| match path.as_os_str() == "-" {
            true => None,
            false => std::fs::metadata(path).ok().map(|m| m.len()),
        })
        .sum();
    super::byte_progress(args.quiet, sizes)
}

/// How the files are fed: cut, in which mode, with progress shown.
struct Feeding<'a> {
    cutter: &'a mut Cutter,
    mode: StreamMode,
    progress: &'a ProgressBar,
}

/// Feeds the files one piece each in turn until all are done, printing each
/// stream's results as it closes. Returns whether a file failed.
fn feed_round_robin(
    scanner: &mut MultiStreamScanner<'_>,
    feeds: &mut [Feed],
    feeding: Feeding<'_>,
    out: &mut impl Write,
) -> anyhow::Result<bool> {
    let Feeding {
        cutter,
        mode,
        progress,
    } = feeding;
    let mut buf = Vec::new();
    let mut failed = false;
    while feeds.iter().any(|f| !f.done) {
        for feed in feeds.iter_mut().filter(|f| !f.done) {
            if let Err(err) = cutter.next(&mut feed.reader, &mut buf) {
                progress.suspend(|| {
                    eprintln!(
                        "error: reading {}: {err}; its results cover the bytes read so far",
                        feed.path.display()
                    )
                });
                failed = true;
                buf.clear();
            }
            let scanned = match mode {
                _ if buf.is_empty() => Ok(()),
                StreamMode::Lines => scanner.scan_line(feed.id, &buf),
                StreamMode::Chunks => scanner.scan_chunk(feed.id, &buf),
            };
            progress.inc(buf.len() as u64);
            if let Err(err) = scanned {
                progress.suspend(|| {
                    eprintln!(
                        "error: {}: {err}; its results cover the bytes before",
                        feed.path.display()
                    )
                });
                failed = true;
                buf.clear();
            }
            if buf.is_empty() {
                feed.done = true;
                let results = scanner.close_stream(&feed.id)?.context("stream vanished")?;
                print_results(out, &results, feed)?;
            }
        }
    }
    Ok(failed)
}

fn print_results(out: &mut impl Write, results: &StreamResults, feed: &Feed) -> anyhow::Result<()> {
    let mut value = serde_json::to_value(results)?;
    value["file"] = serde_json::Value::String(feed.path.display().to_string());
    writeln!(out, "{}", serde_json::to_string(&value)?)?;
    Ok(())
}

/// A file, or standard input for `-`.
fn open(path: &std::path::Path) -> std::io::Result<Box<dyn BufRead>> {
    if path.as_os_str() == "-" {
        return Ok(Box::new(BufReader::new(std::io::stdin())));
    }
    Ok(Box::new(BufReader::new(File::open(path)?)))
}
