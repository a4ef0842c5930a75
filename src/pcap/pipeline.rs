//! A capture read by several threads: one reads and decodes its frames,
//! several follow its connections, the caller's thread takes the results.
//!
//! One thread doing everything (parse, decode, reassemble, find the files
//! inside flows, hand bytes to the engine, wait for verdicts) is the limit
//! of `yaraflow pcap` long before the engine's shards are. Here the reader
//! thread parses and decodes frames and hands each TCP segment to a flow
//! thread chosen by a hash of its connection (both directions of a
//! connection go to the same thread: a RST ends both, and each direction's
//! acknowledgments tell about the other). Each flow thread has its own
//! [`FlowTable`] and its own [`FlowStage`] (a [`FlowFeed`] into the engine,
//! or anything else that takes flow events); what the stages give back
//! goes to the caller's thread, which prints or publishes it.
//!
//! The hand-offs are `crossbeam` channels between plain threads, bounded:
//! the reader runs at most [`BATCHES_IN_FLIGHT`] batches ahead of each flow
//! thread, and a slow consumer slows the flow threads, which slow the
//! reader. Nothing is dropped on the way.
//!
//! What changes with more than one flow thread: the results of different
//! connections come out interleaved in a different order (each
//! direction's own events stay in order); each table holds at most its
//! share of [`FlowLimits::max_open`]; and a table's clock, which ends idle
//! directions, is the capture time the reader had reached when it sent the
//! table's latest batch.

use std::collections::HashMap;
use std::convert::Infallible;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use super::capture::{CaptureReader, Frame};
use super::feed::{FlowFeed, Verdict};
use super::flows::{FlowCounters, FlowEvent, FlowLimits, FlowTable};
use super::packet::{FlowKey, Skip, TcpSegment};
use crate::error::{CaptureError, EngineError};

/// Segments gathered for one flow thread before they are handed over.
const BATCH_SEGMENTS: usize = 256;
/// Batches the reader may run ahead of each flow thread.
pub const BATCHES_IN_FLIGHT: usize = 8;

/// What a flow thread does with its directions' events.
pub trait FlowStage: Send {
    /// What it gives back to the caller's thread (verdicts, events...).
    type Output: Send;
    /// Why it failed; the pipeline stops.
    type Error: Send;

    /// Acts on flow events (draining them); returns what is ready.
    fn take(&mut self, events: &mut Vec<FlowEvent>) -> Result<Vec<Self::Output>, Self::Error>;

    /// Hands over everything still gathered.
    fn flush(&mut self) -> Result<Vec<Self::Output>, Self::Error>;
}

impl FlowStage for FlowFeed {
    type Output = Verdict;
    type Error = EngineError;

    fn take(&mut self, events: &mut Vec<FlowEvent>) -> Result<Vec<Verdict>, EngineError> {
        FlowFeed::take(self, events)
    }

    fn flush(&mut self) -> Result<Vec<Verdict>, EngineError> {
        FlowFeed::flush(self)
    }
}

/// A stage that passes the events on as they are: the caller's thread acts
/// on them (publishes them, for instance).
#[derive(Debug, Default, Clone, Copy)]
pub struct PassEvents;

impl FlowStage for PassEvents {
    type Output = FlowEvent;
    type Error = Infallible;

    fn take(&mut self, events: &mut Vec<FlowEvent>) -> Result<Vec<FlowEvent>, Infallible> {
        Ok(std::mem::take(events))
    }

    fn flush(&mut self) -> Result<Vec<FlowEvent>, Infallible> {
        Ok(Vec::new())
    }
}

/// What a capture held, once read.
#[derive(Debug)]
pub struct CaptureRun {
    /// Frames read.
    pub frames: u64,
    /// TCP segments among them.
    pub segments: u64,
    /// Frames skipped, by reason.
    pub skipped: HashMap<Skip, u64>,
    /// What the tables' bounds ended or forgot, summed over the tables.
    pub counters: FlowCounters,
    /// How the reading ended: a capture that broke was read up to the
    /// damage, and its open directions were still ended and handed on.
    pub outcome: Result<(), CaptureError>,
}

/// From the reader to a flow thread.
enum ToFlows {
    /// Segments of this thread's connections, in capture order, and the
    /// capture time the reader had reached.
    Segments(Vec<TcpSegment>, Option<Duration>),
    /// The capture ended (`true`: it broke); end every open direction.
    End(bool),
}

/// The smallest share of [`FlowLimits::max_open`] worth a flow thread of
/// its own. Tables that each hold a share of a small bound evict long
/// before one table holding all of it would (a connection's two directions
/// share a table).
pub const MIN_OPEN_PER_THREAD: usize = 1024;

/// How many flow threads (stages) to give [`read_capture`]: `wanted` (0:
/// one per core), but no more than leave each table at least
/// [`MIN_OPEN_PER_THREAD`] of `limits.max_open`; down to one, where the
/// bound is exact.
pub fn flow_threads(wanted: usize, limits: &FlowLimits) -> usize {
    let wanted = match wanted {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    wanted.min((limits.max_open / MIN_OPEN_PER_THREAD).max(1))
}

/// Reads a capture through `stages.len()` flow threads (at least one
/// stage; [`flow_threads`] says how many), each with its own [`FlowTable`]
/// holding its share of `limits` (`max_open / stages`, at least 1).
/// `consume` runs on the caller's thread with each batch of outputs and
/// whether the capture had broken when they were made (the directions the
/// damage ended); `progress` is called with the bytes read so far. Stops at
/// the first error of a stage or of `consume`.
pub fn read_capture<S, E>(
    reader: CaptureReader,
    limits: FlowLimits,
    stages: Vec<S>,
    progress: &(dyn Fn(u64) + Sync),
    mut consume: impl FnMut(Vec<S::Output>, bool) -> Result<(), E>,
) -> Result<CaptureRun, E>
where
    S: FlowStage,
    E: From<S::Error>,
{
    assert!(!stages.is_empty(), "read_capture needs at least one stage");
    let limits = FlowLimits {
        max_open: (limits.max_open / stages.len()).max(1),
        ..limits
    };
    let (out_tx, out_rx) = crossbeam_channel::bounded(stages.len() * BATCHES_IN_FLIGHT);
    std::thread::scope(|scope| {
        let mut inputs = Vec::new();
        let mut flow_threads = Vec::new();
        for (n, stage) in stages.into_iter().enumerate() {
            let (tx, rx) = crossbeam_channel::bounded(BATCHES_IN_FLIGHT);
            let out_tx = out_tx.clone();
            inputs.push(tx);
            let thread = std::thread::Builder::new().name(format!("pcap-flows-{n}"));
            flow_threads.push(
                thread
                    .spawn_scoped(scope, move || follow_flows(rx, limits, stage, out_tx))
                    .expect("cannot start a flow thread"),
            );
        }
        drop(out_tx);
        let reading = std::thread::Builder::new()
            .name("pcap-reader".into())
            .spawn_scoped(scope, move || read_frames(reader, inputs, progress))
            .expect("cannot start the capture reader");
        let consumed = out_rx
            .iter()
            .try_for_each(|(outputs, broke)| consume(outputs, broke));
        // On an error here, the flow threads find no one taking their
        // results and stop, and then the reader finds no one taking its
        // segments and stops.
        drop(out_rx);
        let mut run = reading.join().expect("the capture reader panicked");
        for thread in flow_threads {
            let counters = thread.join().expect("a flow thread panicked")?;
            run.counters = add_counters(run.counters, counters);
        }
        consumed.map(|()| run)
    })
}

/// The reader thread: frames into batches of segments, each to the flow
/// thread of its connection.
fn read_frames(
    mut reader: CaptureReader,
    inputs: Vec<Sender<ToFlows>>,
    progress: &(dyn Fn(u64) + Sync),
) -> CaptureRun {
    let mut run = CaptureRun {
        frames: 0,
        segments: 0,
        skipped: HashMap::new(),
        counters: FlowCounters::default(),
        outcome: Ok(()),
    };
    let mut batches: Vec<Vec<TcpSegment>> = inputs.iter().map(|_| Vec::new()).collect();
    let mut now = None;
    run.outcome = loop {
        let segment = match reader.next_frame() {
            Ok(Some(Frame::Segment(segment))) => segment,
            Ok(Some(Frame::Skipped(skip))) => {
                *run.skipped.entry(skip).or_default() += 1;
                continue;
            }
            Ok(None) => break Ok(()),
            Err(err) => break Err(err),
        };
        run.segments += 1;
        now = segment.time.max(now);
        let thread = flow_thread(&segment.key, inputs.len());
        batches[thread].push(segment);
        if batches[thread].len() >= BATCH_SEGMENTS {
            let batch = std::mem::take(&mut batches[thread]);
            if inputs[thread].send(ToFlows::Segments(batch, now)).is_err() {
                break Ok(()); // the flow thread stopped on an error
            }
            progress(reader.bytes_read());
        }
    };
    let broke = run.outcome.is_err();
    for (input, batch) in inputs.iter().zip(batches) {
        let _ = input.send(ToFlows::Segments(batch, now));
        let _ = input.send(ToFlows::End(broke));
    }
    progress(reader.bytes_read());
    run.frames = reader.frames();
    run
}

/// A flow thread: its connections' segments through its table and its
/// stage; the stage's outputs to the caller's thread.
fn follow_flows<S: FlowStage>(
    input: Receiver<ToFlows>,
    limits: FlowLimits,
    mut stage: S,
    output: Sender<(Vec<S::Output>, bool)>,
) -> Result<FlowCounters, S::Error> {
    let mut table = FlowTable::new(limits);
    let mut events = Vec::new();
    let hand_on = |outputs: Vec<S::Output>, broke| {
        // No receiver: the consumer stopped on an error, which it reports.
        outputs.is_empty() || output.send((outputs, broke)).is_ok()
    };
    for message in input {
        match message {
            ToFlows::Segments(segments, now) => {
                for segment in segments {
                    table.segment(segment, &mut events);
                }
                if let Some(now) = now {
                    table.advance(now, &mut events);
                }
                if !hand_on(stage.take(&mut events)?, false) {
                    break;
                }
            }
            ToFlows::End(broke) => {
                // Directions that end now end because the capture did (or
                // broke): what came before goes first, unmarked.
                hand_on(stage.flush()?, false);
                table.finish(&mut events);
                let mut outputs = stage.take(&mut events)?;
                outputs.extend(stage.flush()?);
                hand_on(outputs, broke);
                break;
            }
        }
    }
    Ok(table.counters())
}

/// The flow thread of a segment: a hash of its connection (the same for
/// both directions), the same in every run.
fn flow_thread(key: &FlowKey, threads: usize) -> usize {
    if threads == 1 {
        return 0;
    }
    let connection = (key.src.min(key.dst), key.src.max(key.dst));
    let mut hasher = std::hash::DefaultHasher::new();
    connection.hash(&mut hasher);
    (hasher.finish() % threads as u64) as usize
}

fn add_counters(a: FlowCounters, b: FlowCounters) -> FlowCounters {
    FlowCounters {
        idle_closed: a.idle_closed + b.idle_closed,
        evicted: a.evicted + b.evicted,
        forgotten: a.forgotten + b.forgotten,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use etherparse::PacketBuilder;
    use uuid::Uuid;

    use super::*;
    use crate::pcap::{End, FlowSummary};

    fn key(a: &str, b: &str) -> FlowKey {
        FlowKey {
            src: a.parse().unwrap(),
            dst: b.parse().unwrap(),
        }
    }

    #[test]
    fn both_directions_of_a_connection_go_to_one_thread() {
        let mut used = std::collections::HashSet::new();
        for port in 1000..1100 {
            let forward = key(&format!("10.0.0.1:{port}"), "10.0.0.2:80");
            let thread = flow_thread(&forward, 4);
            assert_eq!(thread, flow_thread(&forward.reverse(), 4));
            used.insert(thread);
        }
        // And connections spread over the threads.
        assert_eq!(used.len(), 4);
    }

    #[test]
    fn a_small_bound_on_open_directions_runs_fewer_flow_threads() {
        let bound = |max_open| FlowLimits {
            max_open,
            ..FlowLimits::default()
        };
        assert_eq!(flow_threads(8, &bound(1_000_000)), 8);
        assert_eq!(flow_threads(8, &bound(2 * MIN_OPEN_PER_THREAD)), 2);
        assert_eq!(flow_threads(8, &bound(2 * MIN_OPEN_PER_THREAD - 1)), 1);
        assert_eq!(flow_threads(8, &bound(2)), 1);
        assert!(flow_threads(0, &bound(1_000_000)) >= 1);
    }

    /// A small deterministic generator (no dependency for a test).
    struct Lcg(u64);

    impl Lcg {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) % n
        }
    }

    /// One frame: (client to server?, seq, ack, flags "SAFR", payload).
    type Sent = (bool, u32, u32, &'static str, Vec<u8>);

    /// A connection's frames: handshake, a request and a response in
    /// segments (some swapped, some sent twice), then FIN or RST.
    fn connection(n: u32, rng: &mut Lcg, tally: &mut [usize; 2]) -> Vec<Sent> {
        let (c0, s0) = (n.wrapping_mul(7919), n.wrapping_mul(104729) ^ 0xdead_beef);
        let mut frames: Vec<Sent> = vec![
            (true, c0, 0, "S", vec![]),
            (false, s0, c0 + 1, "SA", vec![]),
        ];
        let mut seq = [c0 + 1, s0 + 1];
        for side in [true, false] {
            let mut sent: Vec<Sent> = Vec::new();
            for _ in 0..1 + rng.below(6) {
                let len = 1 + rng.below(700) as usize;
                let payload: Vec<u8> = (0..len).map(|_| rng.below(256) as u8).collect();
                let at = &mut seq[usize::from(!side)];
                sent.push((side, *at, 1, "A", payload));
                *at = at.wrapping_add(len as u32);
            }
            if sent.len() > 1 && rng.below(3) == 0 {
                sent.swap(0, 1);
                tally[0] += 1; // reordered
            }
            if rng.below(4) == 0 {
                sent.push(sent[0].clone());
                tally[1] += 1; // retransmitted
            }
            frames.extend(sent);
        }
        if n.is_multiple_of(5) {
            frames.push((false, seq[1], 0, "R", vec![]));
        } else {
            frames.push((true, seq[0], seq[1], "FA", vec![]));
            frames.push((false, seq[1], seq[0] + 1, "FA", vec![]));
        }
        frames
    }

    /// A legacy pcap (Ethernet) of `connections` interleaved connections.
    fn capture(connections: u32) -> Vec<u8> {
        let (mut rng, mut tally) = (Lcg(7), [0; 2]);
        let mut pending: Vec<(u32, std::collections::VecDeque<Sent>)> = (0..connections)
            .map(|n| (n, connection(n, &mut rng, &mut tally).into()))
            .collect();
        assert!(
            tally.iter().all(|&t| t > 0),
            "reordered, retransmitted: {tally:?}"
        );
        let mut file = Vec::new();
        for word in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 65535, 1] {
            file.extend_from_slice(&word.to_le_bytes());
        }
        let mut frame_number = 0u32;
        while !pending.is_empty() {
            let pick = rng.below(pending.len() as u64) as usize;
            let n = pending[pick].0;
            let (to_server, seq, ack, flags, payload) = pending[pick].1.pop_front().unwrap();
            let client = [10, 0, (n >> 8) as u8, n as u8];
            let (src, dst, sport, dport) = match to_server {
                true => (client, [10, 1, 0, 1], 40000 + n as u16, 80),
                false => ([10, 1, 0, 1], client, 80, 40000 + n as u16),
            };
            let mut builder = PacketBuilder::ethernet2([2; 6], [4; 6])
                .ipv4(src, dst, 64)
                .tcp(sport, dport, seq, 65535);
            for flag in flags.chars() {
                builder = match flag {
                    'S' => builder.syn(),
                    'A' => builder.ack(ack),
                    'F' => builder.fin(),
                    _ => builder.rst(),
                };
            }
            let mut frame = Vec::new();
            builder.write(&mut frame, &payload).unwrap();
            frame_number += 1;
            let header = [frame_number / 1000, frame_number % 1000 * 1000];
            for word in header.into_iter().chain([frame.len() as u32; 2]) {
                file.extend_from_slice(&word.to_le_bytes());
            }
            file.extend_from_slice(&frame);
            if pending[pick].1.is_empty() {
                pending.remove(pick);
            }
        }
        file
    }

    /// Each stream's bytes, how often it opened, and its summary.
    type Seen = BTreeMap<Uuid, (Vec<u8>, usize, Option<FlowSummary>)>;

    fn record(seen: &mut Seen, event: FlowEvent) {
        match event {
            FlowEvent::Opened(o) => seen.entry(o.stream).or_default().1 += 1,
            FlowEvent::Data(stream, bytes) => {
                seen.entry(stream).or_default().0.extend(bytes);
            }
            FlowEvent::Ended(summary) => {
                let stream = summary.stream;
                seen.entry(stream).or_default().2 = Some(summary);
            }
        }
    }

    fn reader(bytes: &[u8]) -> CaptureReader {
        CaptureReader::new(std::io::Cursor::new(bytes.to_vec())).unwrap()
    }

    /// The capture through one table on this thread, as before the
    /// pipeline.
    fn one_table(bytes: &[u8]) -> Seen {
        let (mut reader, mut table) = (reader(bytes), FlowTable::new(FlowLimits::default()));
        let (mut events, mut seen) = (Vec::new(), Seen::new());
        while let Ok(Some(frame)) = reader.next_frame() {
            if let Frame::Segment(segment) = frame {
                table.segment(segment, &mut events);
            }
        }
        table.finish(&mut events);
        events.into_iter().for_each(|e| record(&mut seen, e));
        seen
    }

    fn through_pipeline(bytes: &[u8], threads: usize) -> (Seen, CaptureRun, Vec<bool>) {
        let (mut seen, mut marks) = (Seen::new(), Vec::new());
        let run = read_capture(
            reader(bytes),
            FlowLimits::default(),
            vec![PassEvents; threads],
            &|_| {},
            |events, broke| {
                for event in events {
                    if let FlowEvent::Ended(_) = event {
                        marks.push(broke);
                    }
                    record(&mut seen, event);
                }
                Ok::<(), Infallible>(())
            },
        )
        .unwrap();
        (seen, run, marks)
    }

    #[test]
    fn every_thread_count_gives_each_direction_what_one_table_gives() {
        let bytes = capture(300);
        let reference = one_table(&bytes);
        assert_eq!(reference.len(), 600);
        // The capture holds what the pipeline must keep in order: resets,
        // FINs, and directions reassembled from reordered segments.
        let ends: Vec<End> = reference
            .values()
            .filter_map(|s| s.2.as_ref().map(|s| s.end))
            .collect();
        assert!(
            ends.contains(&End::Rst) && ends.contains(&End::Fin),
            "{ends:?}"
        );
        for threads in [1, 2, 3, 5] {
            let (seen, run, marks) = through_pipeline(&bytes, threads);
            assert!(run.outcome.is_ok());
            assert_eq!(run.segments, run.frames);
            assert!(marks.iter().all(|broke| !broke));
            assert_eq!(seen, reference, "{threads} threads");
        }
    }

    #[test]
    fn a_capture_that_breaks_still_ends_its_directions_marked() {
        let bytes = capture(100);
        let cut = &bytes[..bytes.len() / 2 + 3];
        let (seen, run, marks) = through_pipeline(cut, 3);
        assert!(
            matches!(run.outcome, Err(CaptureError::Corrupt { .. })),
            "{:?}",
            run.outcome
        );
        assert!(
            seen.values().all(|s| s.2.is_some()),
            "every direction ended"
        );
        // Those that ended before the damage are not marked; those it
        // ended are, and they ended open.
        assert!(marks.contains(&true) && marks.contains(&false));
        let open = seen
            .values()
            .filter(|s| s.2.as_ref().unwrap().end == End::Open);
        assert_eq!(open.count(), marks.iter().filter(|&&b| b).count());
    }

    #[test]
    fn an_error_of_the_consumer_or_of_a_stage_stops_every_thread() {
        let bytes = capture(200);
        #[derive(Debug, PartialEq)]
        struct GaveUp(&'static str);
        impl From<Infallible> for GaveUp {
            fn from(never: Infallible) -> GaveUp {
                match never {}
            }
        }
        let mut batches = 0;
        let stages = vec![PassEvents; 3];
        let stopped = read_capture(
            reader(&bytes),
            FlowLimits::default(),
            stages,
            &|_| {},
            |_, _| {
                batches += 1;
                Err(GaveUp("the consumer"))
            },
        );
        assert_eq!(stopped.unwrap_err(), GaveUp("the consumer"));
        assert_eq!(batches, 1);

        struct Failing;
        impl FlowStage for Failing {
            type Output = ();
            type Error = GaveUp;
            fn take(&mut self, _: &mut Vec<FlowEvent>) -> Result<Vec<()>, GaveUp> {
                Err(GaveUp("a stage"))
            }
            fn flush(&mut self) -> Result<Vec<()>, GaveUp> {
                Ok(Vec::new())
            }
        }
        let stages = vec![Failing, Failing];
        let stopped = read_capture(
            reader(&bytes),
            FlowLimits::default(),
            stages,
            &|_| {},
            |_, _| Ok::<(), GaveUp>(()),
        );
        assert_eq!(stopped.unwrap_err(), GaveUp("a stage"));
    }
}
