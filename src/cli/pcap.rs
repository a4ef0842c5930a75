//! `yaraflow pcap`: each direction of each TCP connection in a capture is a
//! stream, scanned through the engine; one JSON line per direction when it
//! ends (FIN, RST, or the end of the capture), with its 4-tuple, how it
//! ended, the bytes that never arrived, and its results. Each file inside a
//! direction (an HTTP/1.x body, an SMTP attachment) is a stream too, with a
//! line of its own (`object`: its flow, protocol, index, type, name, size,
//! and whether it was cut); the bridge is [`yaraflow::pcap::FlowFeed`].
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

use indicatif::ProgressBar;
use yaraflow::objects::ObjectLimits;
use yaraflow::pcap::{
    CaptureReader, Ended, FlowCounters, FlowEvent, FlowFeed, FlowLimits, FlowSummary, FlowTable,
    Frame, Verdict,
};
use yaraflow::{Engine, EngineConfig, EngineError, StreamResults};

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
    /// Do not look for files inside the directions (HTTP/1.x bodies, SMTP
    /// attachments), which are otherwise streams of their own, each
    /// printed as a line with an `object` field.
    #[arg(long)]
    no_objects: bool,
    /// Largest file inside a direction, decoded; a larger one is scanned
    /// up to this size and marked `"cut": "size_cap"`.
    #[arg(long, default_value = "64MiB")]
    max_object_size: bytesize::ByteSize,
    /// No progress bar and no summary on stderr (errors are still
    /// reported).
    #[arg(long, short)]
    quiet: bool,
    #[command(flatten)]
    rule_args: super::RuleArgs,
    #[cfg(feature = "cluster")]
    #[command(flatten)]
    publish: super::cluster::PublishArgs,
    /// Capture files (pcap or pcapng).
    #[arg(required = true)]
    captures: Vec<PathBuf>,
}

pub fn run(args: PcapArgs) -> anyhow::Result<ExitCode> {
    #[cfg(feature = "cluster")]
    if args.publish.nats.is_some() {
        return publish(&args);
    }
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
    let objects = (!args.no_objects).then(|| ObjectLimits {
        max_object_bytes: args.max_object_size.as_u64(),
        ..ObjectLimits::default()
    });
    let mut failed = false;
    for path in &args.captures {
        let mut feed = Feed {
            flows: FlowFeed::new(engine.handle().blocking(), objects),
            ended: EndedCounts::default(),
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
    skipped: std::collections::BTreeMap<String, u64>,
}

/// Reads one capture through its flow table into the engine. A corrupt
/// capture still has its directions closed and printed.
fn read_capture(args: &PcapArgs, path: &Path, feed: &mut dyn FlowSink) -> anyhow::Result<()> {
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
        feed.take(&mut events, &progress)?;
        progress.set_position(reader.bytes_read());
    };
    // Directions that end now end because the capture did (or broke).
    feed.flush()?;
    feed.capture_broke(outcome.is_err());
    table.finish(&mut events);
    feed.take(&mut events, &progress)?;
    feed.flush()?;
    progress.finish_and_clear();
    if !args.quiet {
        print_tally(
            path,
            reader.frames(),
            &tally,
            feed.ended(),
            table.counters(),
        );
    }
    Ok(outcome?)
}

/// Where a capture's flow events go: the engine here ([`Feed`]), or a
/// cluster (`--nats`).
trait FlowSink {
    /// Acts on flow events (and drains them).
    fn take(&mut self, events: &mut Vec<FlowEvent>, progress: &ProgressBar) -> anyhow::Result<()>;
    /// Sends what is gathered.
    fn flush(&mut self) -> anyhow::Result<()>;
    /// From now on, directions end because the capture broke.
    fn capture_broke(&mut self, broke: bool);
    /// What ended so far.
    fn ended(&self) -> EndedCounts;
}

impl FlowSink for Feed<'_> {
    fn take(&mut self, events: &mut Vec<FlowEvent>, progress: &ProgressBar) -> anyhow::Result<()> {
        let verdicts = self.flows.take(events)?;
        progress.suspend(|| self.print_all(verdicts))
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        let verdicts = self.flows.flush()?;
        self.print_all(verdicts)
    }

    fn capture_broke(&mut self, broke: bool) {
        self.capture_error = broke;
    }

    fn ended(&self) -> EndedCounts {
        self.ended
    }
}

/// `--nats`: every capture's directions published to the cluster, one line
/// per direction (its stream id and flow) on stdout.
#[cfg(feature = "cluster")]
fn publish(args: &PcapArgs) -> anyhow::Result<ExitCode> {
    let mut publisher = super::cluster::FlowPublisher::connect(&args.publish)?;
    let mut failed = false;
    for path in &args.captures {
        let mut sink = Published {
            publisher: &mut publisher,
            capture: path,
            capture_error: false,
            out: std::io::stdout().lock(),
            ended: EndedCounts::default(),
        };
        if let Err(err) = read_capture(args, path, &mut sink) {
            eprintln!("error: {}: {err:#}", path.display());
            failed = true;
        }
    }
    let closed = publisher.closed;
    let published = publisher.finish()?;
    if !args.quiet {
        eprintln!("published {closed} directions in {published} messages; their verdicts come from the cluster's workers (`yaraflow verdicts`)");
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Flow events published to a cluster.
#[cfg(feature = "cluster")]
struct Published<'a> {
    publisher: &'a mut super::cluster::FlowPublisher,
    capture: &'a Path,
    capture_error: bool,
    out: std::io::StdoutLock<'static>,
    ended: EndedCounts,
}

#[cfg(feature = "cluster")]
impl FlowSink for Published<'_> {
    fn take(&mut self, events: &mut Vec<FlowEvent>, _: &ProgressBar) -> anyhow::Result<()> {
        for event in events.drain(..) {
            match event {
                FlowEvent::Opened(_) => {}
                FlowEvent::Data(stream, bytes) => self.publisher.data(stream, &bytes)?,
                FlowEvent::Ended(summary) => {
                    self.publisher.close(summary.stream)?;
                    self.ended.directions += 1;
                    let mut line = serde_json::json!({
                        "stream": summary.stream,
                        "published": true,
                    });
                    line["flow"] = flow_value(&summary)?;
                    mark_capture(&mut line, self.capture, self.capture_error);
                    writeln!(self.out, "{line}")?;
                }
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        Ok(())
    }

    fn capture_broke(&mut self, broke: bool) {
        self.capture_error = broke;
    }

    fn ended(&self) -> EndedCounts {
        self.ended
    }
}

fn print_tally(path: &Path, frames: u64, tally: &Tally, ended: EndedCounts, early: FlowCounters) {
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
        "{}: {frames} frames, {} TCP segments, {} directions, {} files inside them{}{bounds}",
        path.display(),
        tally.segments,
        ended.directions,
        ended.objects,
        match skipped.is_empty() {
            true => String::new(),
            false => format!("; skipped: {}", skipped.join(", ")),
        }
    );
}

/// Streams that ended and were printed, by kind.
#[derive(Debug, Default, Clone, Copy)]
struct EndedCounts {
    directions: u64,
    objects: u64,
}

/// Flow events into the engine, results out as JSON lines.
struct Feed<'a> {
    flows: FlowFeed,
    ended: EndedCounts,
    capture: &'a Path,
    capture_error: bool,
    out: std::io::StdoutLock<'static>,
    failed: bool,
}

impl Feed<'_> {
    /// Prints the lines of what ended, and counts them.
    fn print_all(&mut self, verdicts: Vec<Verdict>) -> anyhow::Result<()> {
        for (ended, closed) in verdicts {
            match ended {
                Ended::Flow(..) => self.ended.directions += 1,
                Ended::Object(_) => self.ended.objects += 1,
            }
            self.print(&ended, closed)?;
        }
        Ok(())
    }

    /// Prints a closed stream's line: its results, and what it was.
    fn print(
        &mut self,
        ended: &Ended,
        closed: Result<Option<StreamResults>, EngineError>,
    ) -> anyhow::Result<()> {
        let results = match closed {
            Ok(Some(results)) => results,
            closed => {
                let err = match closed {
                    Err(err) => err.to_string(),
                    _ => "its stream was not open (lost?)".to_string(),
                };
                eprintln!("error: {} {}: {err}", self.capture.display(), what(ended));
                self.failed = true;
                return Ok(());
            }
        };
        let mut line = serde_json::to_value(&results)?;
        match ended {
            Ended::Flow(summary, objects) => {
                line["flow"] = flow_value(summary)?;
                if let Some(objects) = objects {
                    line["objects"] = serde_json::to_value(objects)?;
                }
            }
            Ended::Object(summary) => line["object"] = serde_json::to_value(summary)?,
        }
        mark_capture(&mut line, self.capture, self.capture_error);
        writeln!(self.out, "{line}")?;
        Ok(())
    }
}

/// A direction's summary as its line's `flow` (its stream id is the
/// line's `stream`).
fn flow_value(summary: &FlowSummary) -> serde_json::Result<serde_json::Value> {
    let mut flow = serde_json::to_value(summary)?;
    flow.as_object_mut().map(|f| f.remove("stream"));
    Ok(flow)
}

/// Names a line's capture, and says when the capture broke before the
/// stream ended.
fn mark_capture(line: &mut serde_json::Value, capture: &Path, broke: bool) {
    line["capture"] = capture.display().to_string().into();
    if broke {
        line["capture_error"] = true.into();
    }
}

/// Names a direction or an object in an error message.
fn what(ended: &Ended) -> String {
    match ended {
        Ended::Flow(summary, _) => format!("flow {} > {}", summary.src, summary.dst),
        Ended::Object(summary) => format!(
            "object {} of flow {}",
            summary.info.index, summary.info.flow
        ),
    }
}
