//! `yaraflow pcap`: each direction of each TCP connection in a capture is a
//! stream, scanned through the engine; one JSON line per direction when it
//! ends (FIN, RST, or the end of the capture), with its 4-tuple, how it
//! ended, the bytes that never arrived, and its results. Each file inside a
//! direction (an HTTP/1.x body, an SMTP attachment) is a stream too, with a
//! line of its own (`object`: its flow, protocol, index, type, name, size,
//! and whether it was cut); the bridge is [`yaraflow::pcap::FlowFeed`].
//!
//! Captures are read one after the other, each by a reader thread and
//! `--flow-threads` flow threads ([`yaraflow::pcap::read_capture`]), and
//! streamed: a direction's bytes go to the engine as soon as they are in
//! order (in bursts of many directions' chunks, one message per shard), and
//! its results are printed when it ends, so memory holds the open
//! directions and their reordering buffers, not the capture. A corrupt
//! capture is reported with where it broke; the directions still open
//! there are closed and printed, marked `"capture_error": true`, and the
//! exit code is 1.

use std::fs::File;
use std::io::{BufWriter, StdoutLock, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::Serialize;
use yaraflow::objects::{DirectionObjects, ObjectLimits, ObjectSummary};
use yaraflow::pcap::{
    CaptureReader, CaptureRun, End, Ended, FlowCounters, FlowFeed, FlowLimits, FlowStage,
    FlowSummary, Role, Verdict,
};
#[cfg(feature = "cluster")]
use yaraflow::pcap::{FlowEvent, PassEvents};
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
    /// Threads following connections (reassembly, files inside flows, the
    /// hand-off to the engine), each a share of them by connection hash;
    /// 0: one per core. With more than one, the lines of different
    /// connections come out in a different order. Each thread's table holds
    /// its share of `--max-flows`, at least 1,024 (fewer threads run when
    /// it is smaller).
    #[arg(long, default_value_t = 0)]
    flow_threads: usize,
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
        let stages = (0..flow_threads(&args))
            .map(|_| FlowFeed::new(engine.handle().blocking(), objects))
            .collect();
        let mut printer = Printer {
            ended: EndedCounts::default(),
            capture: path,
            out: BufWriter::new(std::io::stdout().lock()),
            failed: false,
        };
        let read = read_capture(&args, path, stages, |verdicts, broke| {
            printer.print_all(verdicts, broke)
        });
        failed |= report(&args, path, read, printer.ended)? | printer.failed;
    }
    engine.shutdown()?;
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The flow tables' bounds, from the arguments.
fn flow_limits(args: &PcapArgs) -> FlowLimits {
    FlowLimits {
        max_pending: args.max_pending,
        max_open: usize::try_from(args.max_flows).unwrap_or(usize::MAX),
        idle_timeout: Some(args.flow_idle_timeout).filter(|t| !t.is_zero()),
    }
}

/// Flow threads to run: `--flow-threads`, fewer for a small `--max-flows`
/// ([`yaraflow::pcap::flow_threads`]).
fn flow_threads(args: &PcapArgs) -> usize {
    yaraflow::pcap::flow_threads(args.flow_threads, &flow_limits(args))
}

/// Reads one capture through its flow threads (one per stage), each with
/// its share of the flow table's bounds; `consume` takes their outputs on
/// this thread. A corrupt capture still has its directions closed and
/// handed on: its error is the returned run's `outcome`.
fn read_capture<S>(
    args: &PcapArgs,
    path: &Path,
    stages: Vec<S>,
    mut consume: impl FnMut(Vec<S::Output>, bool) -> anyhow::Result<()>,
) -> anyhow::Result<CaptureRun>
where
    S: FlowStage,
    anyhow::Error: From<S::Error>,
{
    let file = File::open(path)?;
    let progress = super::byte_progress(args.quiet, Some(file.metadata()?.len()));
    let reader = CaptureReader::new(file)?;
    let run = yaraflow::pcap::read_capture(
        reader,
        flow_limits(args),
        stages,
        &|bytes| progress.set_position(bytes),
        |outputs, broke| progress.suspend(|| consume(outputs, broke)),
    )?;
    progress.finish_and_clear();
    Ok(run)
}

/// Reports how reading a capture went (its tally on stderr unless
/// `--quiet`, its error); returns whether it failed, or the error that
/// ends the run (the output's reader went away).
fn report(
    args: &PcapArgs,
    path: &Path,
    read: anyhow::Result<CaptureRun>,
    ended: EndedCounts,
) -> anyhow::Result<bool> {
    let outcome = read.and_then(|run| {
        if !args.quiet {
            print_tally(path, &run, ended);
        }
        Ok(run.outcome?)
    });
    match outcome {
        Ok(()) => Ok(false),
        Err(err) if super::is_broken_pipe(&err) => Err(err),
        Err(err) => {
            eprintln!("error: {}: {err:#}", path.display());
            Ok(true)
        }
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
            out: BufWriter::new(std::io::stdout().lock()),
            ended: EndedCounts::default(),
        };
        let stages = vec![PassEvents; flow_threads(args)];
        let read = read_capture(args, path, stages, |events, broke| sink.take(events, broke));
        let ended = sink.ended;
        failed |= report(args, path, read, ended)?;
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
    out: BufWriter<StdoutLock<'static>>,
    ended: EndedCounts,
}

/// What a published direction's line starts with.
#[cfg(feature = "cluster")]
#[derive(Serialize)]
struct PublishedHead {
    stream: uuid::Uuid,
    published: bool,
}

#[cfg(feature = "cluster")]
impl Published<'_> {
    /// Publishes flow events; prints a line per direction that ended
    /// (`broke`: the capture's damage ended it).
    fn take(&mut self, events: Vec<FlowEvent>, broke: bool) -> anyhow::Result<()> {
        for event in events {
            match event {
                FlowEvent::Opened(_) => {}
                FlowEvent::Data(stream, bytes) => self.publisher.data(stream, &bytes)?,
                FlowEvent::Ended(summary) => {
                    self.publisher.close(summary.stream)?;
                    self.ended.directions += 1;
                    let head = PublishedHead {
                        stream: summary.stream,
                        published: true,
                    };
                    let mut line = Line::new(head, self.capture, broke);
                    line.flow = Some(FlowFields::of(&summary));
                    write_line(&mut self.out, &line)?;
                }
            }
        }
        Ok(self.out.flush()?)
    }
}

fn print_tally(path: &Path, run: &CaptureRun, ended: EndedCounts) {
    let by_reason: std::collections::BTreeMap<String, u64> = run
        .skipped
        .iter()
        .map(|(reason, n)| (reason.to_string(), *n))
        .collect();
    let skipped: Vec<String> = by_reason
        .iter()
        .map(|(reason, n)| format!("{n} {reason}"))
        .collect();
    let early = run.counters;
    let bounds = match early == FlowCounters::default() {
        true => String::new(),
        false => format!(
            "; ended early: {} idle, {} evicted (table full); {} ended entries forgotten",
            early.idle_closed, early.evicted, early.forgotten
        ),
    };
    eprintln!(
        "{}: {} frames, {} TCP segments, {} directions, {} files inside them{}{bounds}",
        path.display(),
        run.frames,
        run.segments,
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

/// Verdicts out as JSON lines.
struct Printer<'a> {
    ended: EndedCounts,
    capture: &'a Path,
    /// Flushed after each batch of verdicts: a line per write would be a
    /// system call per stream.
    out: BufWriter<StdoutLock<'static>>,
    failed: bool,
}

impl Printer<'_> {
    /// Prints the lines of what ended (`broke`: the capture's damage ended
    /// it), and counts them.
    fn print_all(&mut self, verdicts: Vec<Verdict>, broke: bool) -> anyhow::Result<()> {
        for (ended, closed) in verdicts {
            match ended {
                Ended::Flow(..) => self.ended.directions += 1,
                Ended::Object(_) => self.ended.objects += 1,
            }
            self.print(&ended, closed, broke)?;
        }
        Ok(self.out.flush()?)
    }

    /// Prints a closed stream's line: its results, and what it was.
    fn print(
        &mut self,
        ended: &Ended,
        closed: Result<Option<StreamResults>, EngineError>,
        broke: bool,
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
        let mut line = Line::new(&results, self.capture, broke);
        match ended {
            Ended::Flow(summary, objects) => {
                line.flow = Some(FlowFields::of(summary));
                line.objects = objects.as_ref();
            }
            Ended::Object(summary) => line.object = Some(summary),
        }
        write_line(&mut self.out, &line)
    }
}

/// One line of output: how it starts (a stream's results), what the
/// stream was, and the capture it came from.
#[derive(Serialize)]
struct Line<'a, Head: Serialize> {
    #[serde(flatten)]
    head: Head,
    #[serde(skip_serializing_if = "Option::is_none")]
    flow: Option<FlowFields>,
    #[serde(skip_serializing_if = "Option::is_none")]
    objects: Option<&'a DirectionObjects>,
    #[serde(skip_serializing_if = "Option::is_none")]
    object: Option<&'a ObjectSummary>,
    #[serde(serialize_with = "path_as_text")]
    capture: &'a Path,
    /// The capture broke before the stream ended.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    capture_error: bool,
}

impl<'a, Head: Serialize> Line<'a, Head> {
    fn new(head: Head, capture: &'a Path, broke: bool) -> Self {
        Line {
            head,
            flow: None,
            objects: None,
            object: None,
            capture,
            capture_error: broke,
        }
    }
}

/// A path as its text (lossy, as printed elsewhere).
fn path_as_text<S: serde::Serializer>(path: &&Path, to: S) -> Result<S::Ok, S::Error> {
    to.collect_str(&path.display())
}

fn write_line<Head: Serialize>(out: &mut impl Write, line: &Line<'_, Head>) -> anyhow::Result<()> {
    serde_json::to_writer(&mut *out, line)?;
    Ok(out.write_all(b"\n")?)
}

/// A direction's summary as its line's `flow` (its stream id is the
/// line's `stream`).
#[derive(Serialize)]
struct FlowFields {
    src: SocketAddr,
    dst: SocketAddr,
    role: Role,
    packets: u64,
    bytes: u64,
    missing_bytes: u64,
    end: End,
}

impl FlowFields {
    fn of(summary: &FlowSummary) -> FlowFields {
        FlowFields {
            src: summary.src,
            dst: summary.dst,
            role: summary.role,
            packets: summary.packets,
            bytes: summary.bytes,
            missing_bytes: summary.missing_bytes,
            end: summary.end,
        }
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
