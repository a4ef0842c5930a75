//! `yaraflow pcap`: each direction of each TCP connection in a capture is a
//! stream, scanned through the engine; one JSON line per direction when it
//! ends (FIN, RST, or the end of the capture), with its 4-tuple, how it
//! ended, the bytes that never arrived, and its results.
//!
//! Captures are read one after the other, each with its own flow table, and
//! streamed: a direction's bytes go to the engine as soon as they are in
//! order (in bursts of many directions' chunks, one message per shard), and
//! its results are printed when it ends, so memory holds the open
//! directions and their reordering buffers, not the capture. A corrupt
//! capture is reported with where it broke; the directions still open
//! there are closed and printed, marked `"capture_error": true`, and the
//! exit code is 1.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bytes::Bytes;
use indicatif::ProgressBar;
use yaraflow::pcap::{
    CaptureReader, FlowCounters, FlowEvent, FlowLimits, FlowSummary, FlowTable, Frame,
};
use yaraflow::{BlockingHandle, Engine, EngineConfig, EngineError, StreamResults, Uuid};

/// Arguments of `yaraflow pcap`.
#[derive(Debug, clap::Args)]
pub struct PcapArgs {
    /// Rules: `.yar`/`.yara` files or directories (default: the bundled
    /// rules in `data/rules`).
    #[arg(long, short, default_value = "data/rules")]
    rules: Vec<PathBuf>,
    /// Scanner shards (0: one per core).
    #[arg(long, default_value_t = 0)]
    shards: usize,
    /// Bytes a direction may hold behind a hole before giving up on it
    /// (the hole is then counted in `missing_bytes`).
    #[arg(long, default_value_t = 1 << 20)]
    max_pending: usize,
    /// Most directions open at once; past it the least recently active
    /// tenth end early (`"end": "evicted"`).
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    max_flows: u64,
    /// A direction with no segment for this long, in capture time, ends
    /// (`"end": "idle"`); `0s` never.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    flow_idle_timeout: std::time::Duration,
    /// No progress bar and no summary on stderr (errors are still
    /// reported).
    #[arg(long, short)]
    quiet: bool,
    #[command(flatten)]
    rule_args: super::RuleArgs,
    /// Capture files (pcap or pcapng).
    #[arg(required = true)]
    captures: Vec<PathBuf>,
}

/// Chunks (or ended directions) gathered before they go to the engine.
const BURST_CHUNKS: usize = 64;
/// Largest chunk handed to the engine (reassembly can release more at once).
const MAX_CHUNK: usize = 64 << 10;

pub fn run(args: PcapArgs) -> anyhow::Result<ExitCode> {
    let rules = super::load_rules(&args.rules, &args.rule_args)?;
    let mut config = EngineConfig {
        shards: args.shards,
        // A capture is read as fast as the shards take it: waiting for
        // room is the pace, never an error.
        overload_after: None,
        ..EngineConfig::default()
    };
    config.scanner.max_pattern_len = args.rule_args.max_pattern_len;
    let engine = Engine::start(rules, config)?;
    let mut failed = false;
    for path in &args.captures {
        let mut feed = Feed {
            handle: engine.handle().blocking(),
            burst: Vec::new(),
            ended: Vec::new(),
            capture: path,
            capture_error: false,
            out: std::io::stdout().lock(),
            failed: false,
        };
        if let Err(err) = read_capture(&args, path, &mut feed) {
            eprintln!("error: {}: {err:#}", path.display());
            failed = true;
        }
        failed |= feed.failed;
    }
    engine.shutdown()?;
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Counts of what a capture held, for the summary on stderr.
#[derive(Default)]
struct Tally {
    segments: u64,
    directions: u64,
    skipped: std::collections::BTreeMap<String, u64>,
}

/// Reads one capture through its flow table into the engine. A corrupt
/// capture still has its directions closed and printed.
fn read_capture(args: &PcapArgs, path: &Path, feed: &mut Feed<'_>) -> anyhow::Result<()> {
    let file = File::open(path)?;
    let progress = super::byte_progress(args.quiet, Some(file.metadata()?.len()));
    let mut reader = CaptureReader::new(file)?;
    let mut table = FlowTable::new(FlowLimits {
        max_pending: args.max_pending,
        max_open: usize::try_from(args.max_flows).unwrap_or(usize::MAX),
        idle_timeout: Some(args.flow_idle_timeout).filter(|t| !t.is_zero()),
    });
    let mut events = Vec::new();
    let mut tally = Tally::default();
    let outcome = loop {
        let frame = match reader.next_frame() {
            Ok(Some(frame)) => frame,
            Ok(None) => break Ok(()),
            Err(err) => break Err(err),
        };
        match frame {
            Frame::Segment(segment) => {
                tally.segments += 1;
                table.segment(segment, &mut events);
            }
            Frame::Skipped(skip) => *tally.skipped.entry(skip.to_string()).or_default() += 1,
        }
        tally.directions += feed.take(&mut events, &progress)?;
        progress.set_position(reader.bytes_read());
    };
    // Directions that end now end because the capture did (or broke).
    feed.flush()?;
    feed.capture_error = outcome.is_err();
    table.finish(&mut events);
    tally.directions += feed.take(&mut events, &progress)?;
    feed.flush()?;
    progress.finish_and_clear();
    if !args.quiet {
        print_tally(path, reader.frames(), &tally, table.counters());
    }
    Ok(outcome?)
}

fn print_tally(path: &Path, frames: u64, tally: &Tally, early: FlowCounters) {
    let skipped: Vec<String> = tally
        .skipped
        .iter()
        .map(|(reason, n)| format!("{n} {reason}"))
        .collect();
    let bounds = match early == FlowCounters::default() {
        true => String::new(),
        false => format!(
            "; ended early: {} idle, {} evicted (table full); {} ended entries forgotten",
            early.idle_closed, early.evicted, early.forgotten
        ),
    };
    eprintln!(
        "{}: {frames} frames, {} TCP segments, {} directions{}{bounds}",
        path.display(),
        tally.segments,
        tally.directions,
        match skipped.is_empty() {
            true => String::new(),
            false => format!("; skipped: {}", skipped.join(", ")),
        }
    );
}

/// Flow events into the engine, results out.
struct Feed<'a> {
    handle: BlockingHandle,
    burst: Vec<(Uuid, Bytes)>,
    /// Directions ended, to close after the burst is sent.
    ended: Vec<FlowSummary>,
    capture: &'a Path,
    capture_error: bool,
    out: std::io::StdoutLock<'static>,
    failed: bool,
}

impl Feed<'_> {
    /// Acts on flow events; returns how many directions ended.
    fn take(&mut self, events: &mut Vec<FlowEvent>, progress: &ProgressBar) -> anyhow::Result<u64> {
        let mut ended = 0;
        for event in events.drain(..) {
            match event {
                // An empty chunk opens the stream: a direction that carries
                // no byte still gets its verdict (rules like `not $a`).
                FlowEvent::Opened(stream) => self.burst.push((stream, Bytes::new())),
                FlowEvent::Data(stream, bytes) => {
                    let bytes = Bytes::from(bytes);
                    for at in (0..bytes.len()).step_by(MAX_CHUNK) {
                        let end = (at + MAX_CHUNK).min(bytes.len());
                        self.burst.push((stream, bytes.slice(at..end)));
                    }
                }
                FlowEvent::Ended(summary) => {
                    self.ended.push(summary);
                    ended += 1;
                }
            }
            if self.burst.len() >= BURST_CHUNKS || self.ended.len() >= BURST_CHUNKS {
                progress.suspend(|| self.flush())?;
            }
        }
        Ok(ended)
    }

    /// Hands the gathered chunks to the engine, then closes the ended
    /// directions (all closes sent before the first answer is awaited) and
    /// prints their lines.
    fn flush(&mut self) -> anyhow::Result<()> {
        if !self.burst.is_empty() {
            self.handle.scan_chunks(std::mem::take(&mut self.burst))?;
        }
        let ended = std::mem::take(&mut self.ended);
        let streams: Vec<Uuid> = ended.iter().map(|s| s.stream).collect();
        for (summary, closed) in ended.iter().zip(self.handle.close_streams(&streams)) {
            self.print(summary, closed)?;
        }
        Ok(())
    }

    /// Prints a closed direction's line.
    fn print(
        &mut self,
        summary: &FlowSummary,
        closed: Result<Option<StreamResults>, EngineError>,
    ) -> anyhow::Result<()> {
        let results = match closed {
            Ok(Some(results)) => results,
            closed => {
                let err = match closed {
                    Err(err) => err.to_string(),
                    _ => "its stream was not open (lost?)".to_string(),
                };
                eprintln!(
                    "error: {} flow {} > {}: {err}",
                    self.capture.display(),
                    summary.src,
                    summary.dst
                );
                self.failed = true;
                return Ok(());
            }
        };
        let mut line = serde_json::to_value(&results)?;
        let mut flow = serde_json::to_value(summary)?;
        flow.as_object_mut().map(|f| f.remove("stream"));
        line["flow"] = flow;
        line["capture"] = self.capture.display().to_string().into();
        if self.capture_error {
            line["capture_error"] = true.into();
        }
        writeln!(self.out, "{line}")?;
        Ok(())
    }
}
