//! The flow table: every direction of every TCP connection of a capture,
//! each one stream.
//!
//! A direction is keyed by its 4-tuple (source and destination address and
//! port; the protocol is always TCP) and named by a UUID v5 of that key
//! (see [`flow_uuid`]), so the same direction of the same connection gets
//! the same stream id in every run and from every tool that follows the
//! rule. A connection that reuses a 4-tuple after the previous one ended
//! (a new SYN after FIN or RST) is a new stream: its name carries the
//! number of the reuse.
//!
//! [`FlowTable::segment`] takes segments in capture order and tells the
//! caller what happened as [`FlowEvent`]s: a direction opened, bytes are
//! ready in stream order, a direction ended (FIN, RST), with its summary.
//! [`FlowTable::finish`] ends what is still open when the capture ends.
//!
//! Ended directions keep their entry (without buffers, about 200 bytes) so
//! that late retransmissions are recognised and dropped instead of opening
//! a stream of stray bytes. A RST ends both directions of its connection;
//! a SYN that is not the open direction's own starts a new connection on
//! the same 4-tuple (the old direction's FIN or RST was not captured).
//!
//! The table is bounded ([`FlowLimits`]), since a capture of millions of
//! half-open connections would otherwise hold an entry and an open stream
//! for each until it ends: a direction that saw no segment for the idle
//! timeout, in capture time, ends ([`End::Idle`]), and ended entries that
//! old are forgotten; past the most open directions, the least recently
//! active tenth end ([`End::Evicted`]). Both are counted
//! ([`FlowTable::counters`]) and show in each summary's `end`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;
use uuid::Uuid;

use super::packet::{FlowKey, TcpSegment};
use super::reassembly::{Direction, End};

/// The namespace of flow stream ids: UUID v5 of `yaraflow:tcp` in the URL
/// namespace.
pub fn flow_namespace() -> Uuid {
    Uuid::new_v5(&Uuid::NAMESPACE_URL, b"yaraflow:tcp")
}

/// The stream id of a direction: UUID v5, in [`flow_namespace`], of
/// `tcp SRC > DST` (addresses as `1.2.3.4:80` or `[::1]:80`), followed by
/// ` #N` for the N-th reuse of the same 4-tuple.
pub fn flow_uuid(key: &FlowKey, reuse: u32) -> Uuid {
    let name = match reuse {
        0 => format!("tcp {} > {}", key.src, key.dst),
        n => format!("tcp {} > {} #{n}", key.src, key.dst),
    };
    Uuid::new_v5(&flow_namespace(), name.as_bytes())
}

/// Which side of the connection sent a direction, told by the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Its first segment was a SYN: the side that opened the connection.
    Client,
    /// Its first segment was a SYN+ACK.
    Server,
    /// The capture started after the handshake.
    Unknown,
}

/// What became of a direction, once it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlowSummary {
    /// Its stream id.
    pub stream: Uuid,
    /// Sender address.
    pub src: SocketAddr,
    /// Receiver address.
    pub dst: SocketAddr,
    /// Which side sent it.
    pub role: Role,
    /// Segments seen (retransmissions included).
    pub packets: u64,
    /// Bytes handed out in stream order.
    pub bytes: u64,
    /// Bytes that never arrived (holes skipped).
    pub missing_bytes: u64,
    /// How it ended.
    pub end: End,
}

/// A direction that opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowOpened {
    /// Its stream id.
    pub stream: Uuid,
    /// Sender address.
    pub src: SocketAddr,
    /// Receiver address.
    pub dst: SocketAddr,
    /// Which side sent it: [`Role::Unknown`] when it opened without a
    /// handshake.
    pub role: Role,
}

/// What a segment (or the end of the capture) did to the flow table.
#[derive(Debug, PartialEq, Eq)]
pub enum FlowEvent {
    /// A new direction: a new stream.
    Opened(FlowOpened),
    /// Bytes of a direction, in stream order, following the previous ones.
    Data(Uuid, Vec<u8>),
    /// A direction ended; no more events for its stream.
    Ended(FlowSummary),
}

/// Bounds of a [`FlowTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowLimits {
    /// Bytes a direction may hold behind a hole (see [`Direction::new`]).
    pub max_pending: usize,
    /// Most directions open at once; past it the least recently active
    /// tenth end ([`End::Evicted`]).
    pub max_open: usize,
    /// A direction with no segment for this long, in capture time, ends
    /// ([`End::Idle`]); `None`: never.
    pub idle_timeout: Option<Duration>,
}

impl Default for FlowLimits {
    fn default() -> Self {
        FlowLimits {
            max_pending: 1 << 20,
            max_open: 1_000_000,
            idle_timeout: Some(Duration::from_secs(600)),
        }
    }
}

/// What the table's bounds ended or forgot early.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FlowCounters {
    /// Directions ended by the idle timeout.
    pub idle_closed: u64,
    /// Directions ended because the table was full.
    pub evicted: u64,
    /// Entries of ended directions dropped (a late segment of one would
    /// now open a new stream).
    pub forgotten: u64,
}

/// One direction in the table.
#[derive(Debug)]
struct FlowState {
    stream: Uuid,
    role: Role,
    reuse: u32,
    packets: u64,
    bytes: u64,
    /// Capture time of its last segment.
    last_seen: Duration,
    /// Whether the table's bounds ended it (not its FIN or RST).
    ended_early: bool,
    /// The highest acknowledgment number its sender sent: the other
    /// direction's bytes before that were received.
    ack_sent: Option<u32>,
    /// `None` once ended (the buffers are gone).
    reassembly: Option<Direction>,
}

/// Every direction seen so far.
#[derive(Debug)]
pub struct FlowTable {
    flows: HashMap<FlowKey, FlowState>,
    /// Keys of the open directions, in the order they opened (and of
    /// some ended ones, dropped lazily).
    order: Vec<FlowKey>,
    /// Directions open now.
    open: usize,
    limits: FlowLimits,
    /// The latest capture time seen.
    now: Duration,
    /// When the next look for idle directions is due.
    next_sweep: Duration,
    counters: FlowCounters,
}

impl FlowTable {
    /// A table with these bounds.
    pub fn new(limits: FlowLimits) -> FlowTable {
        FlowTable {
            flows: HashMap::new(),
            order: Vec::new(),
            open: 0,
            limits,
            now: Duration::ZERO,
            next_sweep: Duration::ZERO,
            counters: FlowCounters::default(),
        }
    }

    /// Directions open now.
    pub fn open_flows(&self) -> usize {
        self.open
    }

    /// What the bounds ended or forgot so far.
    pub fn counters(&self) -> FlowCounters {
        self.counters
    }

    /// Takes one segment; appends what happened to `events`.
    pub fn segment(&mut self, segment: TcpSegment, events: &mut Vec<FlowEvent>) {
        if let Some(time) = segment.time {
            self.advance(time, events);
        }
        let key = segment.key;
        let (reuse, superseded) = match self.flows.get(&key) {
            Some(state) => match &state.reassembly {
                // A SYN that is not this connection's: the 4-tuple is
                // reused while the old direction looked open (its FIN or
                // RST was not captured).
                Some(r) if r.is_new_connection(segment.syn, segment.seq) => {
                    (Some(state.reuse + 1), true)
                }
                Some(_) => (None, false),
                // After an idle close or an eviction, the connection goes
                // on as a new stream.
                None if segment.syn || state.ended_early => (Some(state.reuse + 1), false),
                None => return, // a late segment of an ended direction
            },
            None => (Some(0), false),
        };
        if superseded {
            self.end(&key, false, events);
        }
        if let Some(reuse) = reuse {
            self.open(key, &segment, reuse, events);
            if self.open > self.limits.max_open.max(1) {
                self.evict_least_recent(events);
            }
        }
        let peer_acked = self.flows.get(&key.reverse()).and_then(|s| s.ack_sent);
        let state = self.flows.get_mut(&key).expect("opened above");
        state.packets += 1;
        state.last_seen = self.now;
        if segment.ack {
            let newer = |old: u32| segment.ack_number.wrapping_sub(old) as i32 > 0;
            if state.ack_sent.is_none_or(newer) {
                state.ack_sent = Some(segment.ack_number);
            }
        }
        if is_keepalive(state, peer_acked, &segment) {
            return;
        }
        let Some(reassembly) = state.reassembly.as_mut() else {
            return;
        };
        let ready = reassembly.segment(
            segment.syn,
            segment.fin,
            segment.rst,
            segment.seq,
            segment.payload,
        );
        hand_out(&mut state.bytes, state.stream, ready, events);
        if reassembly.end().is_some() {
            retire(&key, state, events);
            self.open -= 1;
        }
        if segment.rst {
            // A reset ends the connection: the other direction too.
            self.end(&key.reverse(), true, events);
        }
    }

    /// Moves the table's clock to capture time `now` (if later) and ends
    /// the directions idle for the timeout by then, as a segment of that
    /// time would: for a table that sees only some of a capture's
    /// connections ([`super::pipeline`]).
    pub fn advance(&mut self, now: Duration, events: &mut Vec<FlowEvent>) {
        self.now = self.now.max(now);
        self.sweep_idle(events);
    }

    /// Ends every open direction (the capture is over), in the order they
    /// opened; bytes waiting behind holes are handed out first.
    pub fn finish(&mut self, events: &mut Vec<FlowEvent>) {
        for key in std::mem::take(&mut self.order) {
            self.end(&key, false, events);
        }
    }

    /// Ends a direction if it is open: by a reset of its connection, or
    /// because the capture ended (or a new connection took its 4-tuple).
    fn end(&mut self, key: &FlowKey, reset: bool, events: &mut Vec<FlowEvent>) {
        let why = if reset { Ending::Reset } else { Ending::Finish };
        self.end_as(key, why, events);
    }

    /// Ends a direction if it is open, as `why` says; returns whether it
    /// was open.
    fn end_as(&mut self, key: &FlowKey, why: Ending, events: &mut Vec<FlowEvent>) -> bool {
        let Some(state) = self.flows.get_mut(key) else {
            return false;
        };
        let Some(reassembly) = state.reassembly.as_mut() else {
            return false;
        };
        let ready = match why {
            Ending::Reset => reassembly.reset(),
            Ending::Finish => reassembly.finish(),
            Ending::Early(end) => reassembly.end_early(end),
        };
        hand_out(&mut state.bytes, state.stream, ready, events);
        retire(key, state, events);
        state.ended_early = matches!(why, Ending::Early(_));
        self.open -= 1;
        true
    }

    /// Ends the directions idle for the timeout and forgets ended entries
    /// as old; runs at most every quarter of the timeout of capture time.
    fn sweep_idle(&mut self, events: &mut Vec<FlowEvent>) {
        let Some(timeout) = self.limits.idle_timeout else {
            return;
        };
        if self.now < self.next_sweep {
            return;
        }
        self.next_sweep = self.now + (timeout / 4).max(Duration::from_millis(1));
        let Some(cutoff) = self.now.checked_sub(timeout) else {
            return;
        };
        let idle: Vec<FlowKey> = self
            .order
            .iter()
            .filter(|k| self.flows.get(k).is_some_and(|f| f.last_seen <= cutoff))
            .copied()
            .collect();
        for key in idle {
            if self.end_as(&key, Ending::Early(End::Idle), events) {
                self.counters.idle_closed += 1;
            }
        }
        // Ended entries are kept for one more timeout, to recognise late
        // segments (and to number a 4-tuple's next connection).
        let forget = cutoff.saturating_sub(timeout);
        let before = self.flows.len();
        self.flows
            .retain(|_, f| f.reassembly.is_some() || f.last_seen > forget);
        self.counters.forgotten += (before - self.flows.len()) as u64;
        self.drop_ended_from_order();
    }

    /// Ends the least recently active tenth of the open directions (at
    /// least one), and forgets every ended entry if they outnumber the
    /// bound, so that the table's size stays within a few times it.
    fn evict_least_recent(&mut self, events: &mut Vec<FlowEvent>) {
        self.drop_ended_from_order();
        let mut by_age: Vec<(Duration, usize)> = self
            .order
            .iter()
            .enumerate()
            .map(|(i, k)| (self.flows[k].last_seen, i))
            .collect();
        let count = (self.open / 10).max(1);
        by_age.select_nth_unstable(count - 1);
        let oldest: Vec<FlowKey> = by_age[..count]
            .iter()
            .map(|&(_, i)| self.order[i])
            .collect();
        for key in oldest {
            if self.end_as(&key, Ending::Early(End::Evicted), events) {
                self.counters.evicted += 1;
            }
        }
        if self.flows.len() > 2 * self.limits.max_open + 1024 {
            let before = self.flows.len();
            self.flows.retain(|_, f| f.reassembly.is_some());
            self.counters.forgotten += (before - self.flows.len()) as u64;
        }
        self.drop_ended_from_order();
    }

    /// Keeps only open directions in `order`.
    fn drop_ended_from_order(&mut self) {
        let flows = &self.flows;
        self.order
            .retain(|k| flows.get(k).is_some_and(|f| f.reassembly.is_some()));
    }

    fn open(&mut self, key: FlowKey, first: &TcpSegment, reuse: u32, events: &mut Vec<FlowEvent>) {
        let role = match (first.syn, first.ack) {
            (true, false) => Role::Client,
            (true, true) => Role::Server,
            _ => Role::Unknown,
        };
        let stream = flow_uuid(&key, reuse);
        events.push(FlowEvent::Opened(FlowOpened {
            stream,
            src: key.src,
            dst: key.dst,
            role,
        }));
        // Ended directions leave `order` lazily: drop them when it doubles.
        if self.order.len() >= 64 && self.order.len() > 2 * self.open {
            self.drop_ended_from_order();
        }
        self.order.push(key);
        let state = FlowState {
            stream,
            role,
            reuse,
            packets: 0,
            bytes: 0,
            last_seen: self.now,
            ended_early: false,
            ack_sent: None,
            reassembly: Some(Direction::new(self.limits.max_pending)),
        };
        self.flows.insert(key, state);
        self.open += 1;
    }
}

/// Whether a segment is a keepalive probe that would place a direction
/// the capture joined mid-connection in sequence space: one byte, before
/// any data, that its receiver had already acknowledged (a keepalive
/// resends the byte before the next one). Later keepalives are found by
/// reassembly itself (they fall before the bytes handed out).
fn is_keepalive(state: &FlowState, peer_acked: Option<u32>, segment: &TcpSegment) -> bool {
    let unplaced = state.reassembly.as_ref().is_some_and(|r| !r.started());
    let acked =
        peer_acked.is_some_and(|ack| ack.wrapping_sub(segment.seq.wrapping_add(1)) as i32 >= 0);
    unplaced && acked && segment.payload.len() == 1 && !(segment.syn || segment.fin || segment.rst)
}

/// How a direction is ended by the table.
#[derive(Debug, Clone, Copy)]
enum Ending {
    /// Its connection was reset.
    Reset,
    /// The capture ended, or a new connection took its 4-tuple.
    Finish,
    /// The table's bounds end it: [`End::Idle`] or [`End::Evicted`].
    Early(End),
}

/// Reports bytes of a direction now in order, if any.
/// (Counted in `bytes`; the caller may hold its reassembly borrowed.)
fn hand_out(bytes: &mut u64, stream: Uuid, ready: Vec<u8>, events: &mut Vec<FlowEvent>) {
    if !ready.is_empty() {
        *bytes += ready.len() as u64;
        events.push(FlowEvent::Data(stream, ready));
    }
}

/// Reports an ended direction and drops its buffers.
fn retire(key: &FlowKey, state: &mut FlowState, events: &mut Vec<FlowEvent>) {
    events.push(FlowEvent::Ended(summary(key, state)));
    state.reassembly = None;
}

fn summary(key: &FlowKey, state: &FlowState) -> FlowSummary {
    let reassembly = state.reassembly.as_ref();
    FlowSummary {
        stream: state.stream,
        src: key.src,
        dst: key.dst,
        role: state.role,
        packets: state.packets,
        bytes: state.bytes,
        missing_bytes: reassembly.map_or(0, Direction::missing_bytes),
        end: reassembly.and_then(Direction::end).unwrap_or(End::Open),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(src: &str, dst: &str, seq: u32, flags: &str, payload: &[u8]) -> TcpSegment {
        TcpSegment {
            key: FlowKey {
                src: src.parse().unwrap(),
                dst: dst.parse().unwrap(),
            },
            seq,
            syn: flags.contains('S'),
            ack: flags.contains('A'),
            fin: flags.contains('F'),
            rst: flags.contains('R'),
            payload: payload.to_vec(),
            time: None,
            ack_number: 0,
        }
    }

    fn limits(max_pending: usize) -> FlowLimits {
        FlowLimits {
            max_pending,
            ..FlowLimits::default()
        }
    }

    fn at(seconds: u64, segment: TcpSegment) -> TcpSegment {
        TcpSegment {
            time: Some(Duration::from_secs(seconds)),
            ..segment
        }
    }

    fn ends(events: &[FlowEvent]) -> Vec<(SocketAddr, End)> {
        events
            .iter()
            .filter_map(|e| match e {
                FlowEvent::Ended(s) => Some((s.src, s.end)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn idle_directions_end_in_capture_time_and_go_on_as_new_streams() {
        let mut table = FlowTable::new(FlowLimits {
            idle_timeout: Some(Duration::from_secs(60)),
            ..limits(1 << 16)
        });
        let mut events = Vec::new();
        table.segment(at(0, segment(C, S, 1, "S", b"")), &mut events);
        table.segment(at(1, segment(C, S, 2, "A", b"abc")), &mut events);
        table.segment(at(50, segment("10.0.0.9:1", S, 7, "A", b"x")), &mut events);
        assert!(ends(&events).is_empty(), "nothing idle for 60 s yet");
        table.segment(at(100, segment("10.0.0.9:1", S, 8, "A", b"y")), &mut events);
        assert_eq!(ends(&events), [(C.parse().unwrap(), End::Idle)]);
        assert_eq!(table.counters().idle_closed, 1);
        assert_eq!(table.open_flows(), 1);
        // The idle connection speaks again: a new stream, numbered as a reuse.
        events.clear();
        table.segment(at(101, segment(C, S, 5, "A", b"more")), &mut events);
        let key = segment(C, S, 0, "", b"").key;
        let reopened = flow_uuid(&key, 1);
        assert!(events
            .iter()
            .any(|e| matches!(e, FlowEvent::Opened(o) if o.stream == reopened)));
        // Ended entries are forgotten one more timeout later.
        table.segment(at(400, segment("10.0.0.9:1", S, 9, "A", b"z")), &mut events);
        assert!(table.counters().forgotten >= 1);
    }

    #[test]
    fn a_keepalive_joined_mid_connection_is_not_data() {
        let mut table = FlowTable::new(limits(1 << 16));
        let mut events = Vec::new();
        // The server acknowledged the client's bytes up to 1000; the
        // client's keepalive resends byte 999; then real data at 1000.
        let ack = TcpSegment {
            ack_number: 1000,
            ..segment(S, C, 5000, "A", b"")
        };
        table.segment(ack, &mut events);
        table.segment(segment(C, S, 999, "A", b"\0"), &mut events);
        table.segment(segment(C, S, 1000, "A", b"GET /"), &mut events);
        let key = segment(C, S, 0, "", b"").key;
        let data: Vec<&[u8]> = events
            .iter()
            .filter_map(|e| match e {
                FlowEvent::Data(id, bytes) if *id == flow_uuid(&key, 0) => Some(&bytes[..]),
                _ => None,
            })
            .collect();
        assert_eq!(data, [b"GET /"]);
        // One byte nobody acknowledged yet is data.
        let mut table = FlowTable::new(limits(1 << 16));
        events.clear();
        table.segment(segment(C, S, 999, "A", b"x"), &mut events);
        assert!(events.contains(&FlowEvent::Data(flow_uuid(&key, 0), b"x".to_vec())));
    }

    #[test]
    fn past_the_most_open_directions_the_least_recent_end() {
        let mut table = FlowTable::new(FlowLimits {
            max_open: 20,
            ..limits(1 << 16)
        });
        let mut events = Vec::new();
        for port in 0..100u16 {
            let src = format!("10.0.0.1:{}", 1000 + port);
            table.segment(
                at(u64::from(port), segment(&src, S, 1, "S", b"")),
                &mut events,
            );
            assert!(table.open_flows() <= 20);
        }
        let evicted: Vec<_> = ends(&events)
            .into_iter()
            .filter(|(_, end)| *end == End::Evicted)
            .collect();
        assert_eq!(evicted.len() as u64, table.counters().evicted);
        assert!(evicted.len() >= 80);
        // The newest directions are still open; the first was evicted.
        assert_eq!(evicted[0].0, "10.0.0.1:1000".parse().unwrap());
        assert!(table.flows.len() <= 2 * 20 + 1024);
    }

    const C: &str = "10.0.0.1:40000";
    const S: &str = "10.0.0.2:80";

    #[test]
    fn a_connection_is_two_streams_with_roles_and_ends() {
        let mut table = FlowTable::new(limits(1 << 16));
        let mut events = Vec::new();
        table.segment(segment(C, S, 100, "S", b""), &mut events);
        table.segment(segment(S, C, 500, "SA", b""), &mut events);
        table.segment(segment(C, S, 101, "A", b"GET /"), &mut events);
        table.segment(segment(S, C, 501, "AF", b"200 OK"), &mut events);
        table.finish(&mut events);
        let up = flow_uuid(&segment(C, S, 0, "", b"").key, 0);
        let down = flow_uuid(&segment(S, C, 0, "", b"").key, 0);
        assert_ne!(up, down);
        let ended: Vec<&FlowSummary> = events
            .iter()
            .filter_map(|e| match e {
                FlowEvent::Ended(summary) => Some(summary),
                _ => None,
            })
            .collect();
        assert_eq!(ended.len(), 2);
        assert_eq!(
            (ended[0].stream, ended[0].role, ended[0].end),
            (down, Role::Server, End::Fin)
        );
        assert_eq!(
            (ended[1].stream, ended[1].role, ended[1].end),
            (up, Role::Client, End::Open)
        );
        assert_eq!((ended[1].packets, ended[1].bytes), (2, 5));
        assert!(events.contains(&FlowEvent::Data(up, b"GET /".to_vec())));
        assert!(events.contains(&FlowEvent::Data(down, b"200 OK".to_vec())));
    }

    #[test]
    fn a_reused_four_tuple_is_a_new_stream_and_late_segments_are_dropped() {
        let mut table = FlowTable::new(limits(1 << 16));
        let mut events = Vec::new();
        table.segment(segment(C, S, 1, "S", b""), &mut events);
        table.segment(segment(C, S, 2, "AR", b""), &mut events);
        table.segment(segment(C, S, 2, "A", b"late"), &mut events);
        table.segment(segment(C, S, 9000, "S", b""), &mut events);
        table.segment(segment(C, S, 9001, "A", b"again"), &mut events);
        let key = segment(C, S, 0, "", b"").key;
        let (first, second) = (flow_uuid(&key, 0), flow_uuid(&key, 1));
        let opened = |stream| {
            FlowEvent::Opened(FlowOpened {
                stream,
                src: key.src,
                dst: key.dst,
                role: Role::Client,
            })
        };
        assert_eq!(
            events,
            vec![
                opened(first),
                FlowEvent::Ended(FlowSummary {
                    stream: first,
                    src: key.src,
                    dst: key.dst,
                    role: Role::Client,
                    packets: 2,
                    bytes: 0,
                    missing_bytes: 0,
                    end: End::Rst,
                }),
                opened(second),
                FlowEvent::Data(second, b"again".to_vec()),
            ]
        );
        assert_eq!(table.open_flows(), 1);
    }

    #[test]
    fn a_reset_ends_both_directions() {
        let mut table = FlowTable::new(limits(1 << 16));
        let mut events = Vec::new();
        table.segment(segment(C, S, 1, "S", b""), &mut events);
        table.segment(segment(S, C, 9, "SA", b""), &mut events);
        table.segment(segment(C, S, 2, "A", b"req"), &mut events);
        table.segment(segment(S, C, 10, "AR", b""), &mut events);
        let ends: Vec<(SocketAddr, End)> = events
            .iter()
            .filter_map(|e| match e {
                FlowEvent::Ended(s) => Some((s.src, s.end)),
                _ => None,
            })
            .collect();
        let (c, s): (SocketAddr, SocketAddr) = (C.parse().unwrap(), S.parse().unwrap());
        assert_eq!(ends, [(s, End::Rst), (c, End::Rst)]);
        assert_eq!(table.open_flows(), 0);
    }

    #[test]
    fn a_new_syn_on_an_open_direction_starts_a_new_stream() {
        // The first connection's FIN was never captured; the client port is
        // reused with a new initial sequence number.
        let mut table = FlowTable::new(limits(1 << 16));
        let mut events = Vec::new();
        table.segment(segment(C, S, 100, "S", b""), &mut events);
        table.segment(segment(C, S, 101, "A", b"first"), &mut events);
        table.segment(segment(C, S, 100, "S", b""), &mut events); // a repeated SYN
        table.segment(segment(C, S, 5, "S", b""), &mut events);
        table.segment(segment(C, S, 6, "A", b"EVIL"), &mut events);
        let key = segment(C, S, 0, "", b"").key;
        let (first, second) = (flow_uuid(&key, 0), flow_uuid(&key, 1));
        assert!(events.contains(&FlowEvent::Data(first, b"first".to_vec())));
        assert!(events.contains(&FlowEvent::Data(second, b"EVIL".to_vec())));
        assert!(events
            .iter()
            .any(|e| matches!(e, FlowEvent::Ended(s) if s.stream == first)));
        assert_eq!(table.open_flows(), 1);
    }

    #[test]
    fn stream_ids_follow_the_documented_name() {
        let key = segment("[::1]:5000", "[::1]:80", 0, "", b"").key;
        let expected = Uuid::new_v5(&flow_namespace(), b"tcp [::1]:5000 > [::1]:80 #2");
        assert_eq!(flow_uuid(&key, 2), expected);
    }
}
