//! TCP reassembly: one direction of one connection into an ordered byte
//! stream.
//!
//! A [`Direction`] receives the segments of one direction of a TCP
//! connection in capture order (which is not sequence order: segments are
//! reordered, duplicated, retransmitted with different boundaries) and
//! hands out the payload bytes in sequence order, each byte once.
//!
//! Sequence numbers are compared with wrapping arithmetic, relative to the
//! first sequence number seen (the SYN's, or the first data segment's when
//! the capture starts mid-connection). Segments ahead of the next expected
//! byte wait in a bounded buffer; when the buffer is full, or the
//! connection ends with bytes still missing, the hole is skipped and
//! counted in [`Direction::missing_bytes`], so that the caller can say the
//! stream is incomplete instead of pretending otherwise.

use std::collections::BTreeMap;

/// Bytes of bookkeeping counted for each waiting segment, on top of its
/// payload, against the buffer's bound (a flood of 1-byte segments must
/// not hold 80 times the bound).
const ENTRY_COST: usize = 64;

/// How a direction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum End {
    /// A FIN (bytes before it may be missing: see
    /// [`Direction::missing_bytes`]).
    Fin,
    /// A RST.
    Rst,
    /// The capture ended first.
    Open,
    /// No segment came for the flow table's idle timeout (capture time).
    Idle,
    /// The flow table was full and this direction was among the least
    /// recently active.
    Evicted,
}

/// One direction of a TCP connection being reassembled.
#[derive(Debug)]
pub struct Direction {
    /// The sequence number of the first payload byte, once known.
    base: Option<u32>,
    /// Offset (from `base`) of the next byte to hand out.
    next: u64,
    /// Segments ahead of `next`, by offset.
    pending: BTreeMap<u64, Vec<u8>>,
    pending_bytes: usize,
    max_pending: usize,
    /// Offset of the FIN, once seen.
    fin_at: Option<u64>,
    ended: Option<End>,
    missing: u64,
}

impl Direction {
    /// A direction that buffers at most `max_pending` bytes behind a hole
    /// (each waiting segment counts its payload plus 64 bytes).
    pub fn new(max_pending: usize) -> Direction {
        Direction {
            base: None,
            next: 0,
            pending: BTreeMap::new(),
            pending_bytes: 0,
            max_pending,
            fin_at: None,
            ended: None,
            missing: 0,
        }
    }

    /// Bytes skipped because they never arrived.
    pub fn missing_bytes(&self) -> u64 {
        self.missing
    }

    /// Whether a byte of data (or a SYN) has placed the direction in
    /// sequence space yet.
    pub fn started(&self) -> bool {
        self.base.is_some()
    }

    /// How the direction ended, if it did.
    pub fn end(&self) -> Option<End> {
        self.ended
    }

    /// Offset of `seq` from the base: the segment's place in the stream.
    /// Sequence numbers before the base (old retransmissions) map below 0.
    fn offset(&self, base: u32, seq: u32) -> i64 {
        // The stream so far spans `next` bytes; a sequence number is read as
        // the nearest offset to that point (sequence space wraps at 4 GiB).
        let near = self.next as i64;
        let delta = seq.wrapping_sub(base.wrapping_add(self.next as u32)) as i32 as i64;
        near + delta
    }

    /// Takes one segment: its flags, sequence number and payload. Returns
    /// the bytes that are now in order (possibly none). A segment that
    /// comes in order, with nothing waiting, is handed out as it is, not
    /// copied.
    pub fn segment(
        &mut self,
        syn: bool,
        fin: bool,
        rst: bool,
        seq: u32,
        payload: impl Into<Vec<u8>>,
    ) -> Vec<u8> {
        let payload = payload.into();
        if self.ended.is_some() {
            return Vec::new();
        }
        if rst {
            // The sender resets: nothing it sent before will be resent, so
            // what waits behind a hole is handed out now.
            let ready = self.flush_pending();
            self.ended = Some(End::Rst);
            return ready;
        }
        // The SYN takes one sequence number; data starts after it.
        let data_seq = if syn { seq.wrapping_add(1) } else { seq };
        if self.base.is_none() && !syn && !fin && payload.is_empty() {
            // A bare ACK or keepalive (whose sequence number can be one
            // before the next byte) says nothing about where data starts.
            return Vec::new();
        }
        let base = *self.base.get_or_insert(data_seq);
        let start = self.offset(base, data_seq);
        if fin && self.fin_at.is_none() {
            self.fin_at = Some((start + payload.len() as i64).max(0) as u64);
        }
        // Nothing follows the FIN.
        let keep = match self.fin_at {
            Some(fin_at) => (fin_at as i64 - start).clamp(0, payload.len() as i64) as usize,
            None => payload.len(),
        };
        let mut ready = if self.pending.is_empty() && start == self.next as i64 {
            let mut in_order = payload;
            in_order.truncate(keep);
            self.next += keep as u64;
            in_order
        } else {
            self.store(start, &payload[..keep]);
            self.drain()
        };
        while self.pending_bytes > self.max_pending {
            // Too much waits behind a hole: give up on the hole.
            self.skip_hole();
            ready.extend(self.drain());
        }
        if self.fin_at.is_some_and(|fin| self.next >= fin) {
            self.ended = Some(End::Fin);
        }
        ready
    }

    /// Keeps the part of a segment not handed out yet.
    fn store(&mut self, start: i64, payload: &[u8]) {
        let skip = (self.next as i64 - start).clamp(0, payload.len() as i64) as usize;
        let fresh = &payload[skip..];
        if fresh.is_empty() {
            return; // a retransmission of bytes already handed out
        }
        // `start + skip` is at least `next`, so not negative.
        let at = (start + skip as i64) as u64;
        let longer = self
            .pending
            .get(&at)
            .is_none_or(|old| old.len() < fresh.len());
        if longer {
            let old = self.pending.insert(at, fresh.to_vec());
            self.pending_bytes += fresh.len() + ENTRY_COST;
            self.pending_bytes -= old.map_or(0, |o| o.len() + ENTRY_COST);
        }
    }

    /// Hands out the bytes that follow `next` without a hole.
    fn drain(&mut self) -> Vec<u8> {
        let mut ready = Vec::new();
        while let Some(entry) = self.pending.first_entry() {
            let at = *entry.key();
            if at > self.next {
                break;
            }
            let bytes = entry.remove();
            self.pending_bytes -= bytes.len() + ENTRY_COST;
            let skip = (self.next - at) as usize;
            if skip < bytes.len() {
                ready.extend_from_slice(&bytes[skip..]);
                self.next = at + bytes.len() as u64;
            }
        }
        ready
    }

    /// Gives up on the bytes before the first waiting segment.
    fn skip_hole(&mut self) {
        if let Some(&at) = self.pending.keys().next() {
            if at > self.next {
                self.missing += at - self.next;
                self.next = at;
            }
        }
    }

    /// Whether a SYN with this sequence number starts a new connection
    /// (the 4-tuple reused) rather than repeating this one's SYN.
    pub fn is_new_connection(&self, syn: bool, seq: u32) -> bool {
        syn && self.base.is_some_and(|base| seq.wrapping_add(1) != base)
    }

    /// The connection was reset (by the other side): hands out what waits
    /// behind holes and ends the direction with [`End::Rst`].
    pub fn reset(&mut self) -> Vec<u8> {
        self.segment(false, false, true, 0, b"")
    }

    /// Hands out everything that waits, skipping (and counting) holes.
    fn flush_pending(&mut self) -> Vec<u8> {
        let mut ready = Vec::new();
        while !self.pending.is_empty() {
            self.skip_hole();
            ready.extend(self.drain());
        }
        ready
    }

    /// Ended early by the flow table's bounds: hands out what waits behind
    /// holes (counting them as missing) and marks the direction `end`.
    pub fn end_early(&mut self, end: End) -> Vec<u8> {
        let ready = self.flush_pending();
        self.ended.get_or_insert(end);
        ready
    }

    /// At the end of the capture: hands out what waits behind holes
    /// (counting the holes as missing) and marks the direction ended.
    pub fn finish(&mut self) -> Vec<u8> {
        let ready = self.flush_pending();
        let end = match self.fin_at {
            Some(_) => End::Fin,
            None => End::Open,
        };
        self.ended.get_or_insert(end);
        ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Feeds `(seq offset, len)` segments of `data` after a SYN at `isn`.
    fn reassemble(
        data: &[u8],
        isn: u32,
        segments: &[(usize, usize)],
        fin: bool,
    ) -> (Vec<u8>, Direction) {
        let mut direction = Direction::new(1 << 20);
        let mut out = direction.segment(true, false, false, isn, b"");
        for &(start, len) in segments {
            let end = (start + len).min(data.len());
            let last = fin && end == data.len();
            let seq = isn.wrapping_add(1).wrapping_add(start as u32);
            out.extend(direction.segment(false, last, false, seq, &data[start..end]));
        }
        (out, direction)
    }

    #[test]
    fn in_order_segments_pass_through() {
        let (out, direction) = reassemble(b"hello world", 7, &[(0, 5), (5, 6)], true);
        assert_eq!(out, b"hello world");
        assert_eq!(direction.end(), Some(End::Fin));
    }

    #[test]
    fn reordered_duplicated_and_overlapping_segments_give_each_byte_once() {
        let data = b"0123456789abcdef";
        let segments = [(8, 8), (0, 4), (2, 4), (0, 4), (4, 6), (12, 4)];
        let (out, direction) = reassemble(data, u32::MAX - 5, &segments, true);
        assert_eq!(out, data, "sequence numbers wrap in the middle");
        assert_eq!(direction.missing_bytes(), 0);
        assert_eq!(direction.end(), Some(End::Fin));
    }

    #[test]
    fn a_hole_is_skipped_at_the_end_and_counted() {
        let (mut out, mut direction) = reassemble(b"abcdefgh", 100, &[(0, 2), (5, 3)], false);
        assert_eq!(out, b"ab");
        out.extend(direction.finish());
        assert_eq!(out, b"abfgh");
        assert_eq!(direction.missing_bytes(), 3);
        assert_eq!(direction.end(), Some(End::Open));
    }

    #[test]
    fn a_capture_starting_mid_connection_starts_at_the_first_data() {
        let mut direction = Direction::new(1024);
        assert_eq!(direction.segment(false, false, false, 5000, b"xyz"), b"xyz");
        assert_eq!(direction.segment(false, false, false, 5003, b"w"), b"w");
        assert_eq!(direction.segment(false, false, false, 5006, b"uv"), b"");
        // The reset hands out what waited behind the hole.
        assert_eq!(direction.segment(false, false, true, 5008, b""), b"uv");
        assert_eq!(direction.missing_bytes(), 2);
        assert_eq!(direction.end(), Some(End::Rst));
        assert!(direction
            .segment(false, false, false, 5004, b"late")
            .is_empty());
    }

    #[test]
    fn bytes_before_the_first_seen_sequence_number_are_dropped() {
        // A capture that starts mid-connection, then an old retransmission
        // reaching back before the first byte seen.
        let mut direction = Direction::new(1024);
        assert_eq!(direction.segment(false, false, false, 1000, b"abc"), b"abc");
        assert_eq!(
            direction.segment(false, false, false, 995, b"xxxxxabcde"),
            b"de"
        );
        // A SYN, then data at the SYN's own sequence number.
        let mut direction = Direction::new(1024);
        assert!(direction.segment(true, false, false, 50, b"").is_empty());
        assert_eq!(
            direction.segment(false, false, false, 50, b"Zhello"),
            b"hello"
        );
    }

    #[test]
    fn a_keepalive_first_does_not_set_where_data_starts() {
        let mut direction = Direction::new(1024);
        assert!(direction.segment(false, false, false, 99, b"").is_empty());
        assert_eq!(
            direction.segment(false, false, false, 100, b"data"),
            b"data"
        );
    }

    #[test]
    fn nothing_follows_the_first_fin() {
        let mut direction = Direction::new(1024);
        direction.segment(true, false, false, 0, b"");
        // Bytes 1..3 are missing; the FIN comes at 6; junk after it.
        assert!(direction.segment(false, true, false, 4, b"def").is_empty());
        assert!(direction
            .segment(false, true, false, 7, b"later")
            .is_empty());
        assert!(direction.segment(false, false, false, 7, b"zz").is_empty());
        assert_eq!(direction.segment(false, false, false, 1, b"abc"), b"abcdef");
        assert_eq!(direction.end(), Some(End::Fin));
    }

    #[test]
    fn a_different_syn_is_a_new_connection() {
        let mut direction = Direction::new(1024);
        direction.segment(true, false, false, 7, b"");
        assert!(!direction.is_new_connection(true, 7), "a repeated SYN");
        assert!(direction.is_new_connection(true, 7000));
        assert!(!direction.is_new_connection(false, 7000));
    }

    #[test]
    fn a_flood_of_tiny_segments_counts_their_bookkeeping() {
        let mut direction = Direction::new(1000);
        direction.segment(true, false, false, 0, b"");
        // Twenty 1-byte segments behind a hole count 1300 bytes, not 20.
        for i in 0..20u32 {
            direction.segment(false, false, false, 100 + 2 * i, b"x");
        }
        assert!(direction.missing_bytes() > 0, "the hole was given up on");
    }

    #[test]
    fn a_full_buffer_gives_up_on_the_hole() {
        let mut direction = Direction::new(4 + 2 * ENTRY_COST);
        direction.segment(true, false, false, 0, b"");
        assert!(direction.segment(false, false, false, 11, b"ab").is_empty());
        // Two bytes wait (and one entry): one more segment and the hole
        // (10 bytes) is skipped.
        assert_eq!(direction.segment(false, false, false, 13, b"cde"), b"abcde");
        assert_eq!(direction.missing_bytes(), 10);
    }

    proptest! {
        #[test]
        fn any_segmentation_order_and_duplication_reassembles_the_stream(
            data in proptest::collection::vec(any::<u8>(), 1..2000),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..30),
            order in any::<prop::sample::Index>(),
            duplicates in proptest::collection::vec(any::<prop::sample::Index>(), 0..10),
            isn in any::<u32>(),
        ) {
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(data.len())).collect();
            points.extend([0, data.len()]);
            points.sort();
            points.dedup();
            let mut segments: Vec<(usize, usize)> =
                points.windows(2).map(|w| (w[0], w[1] - w[0])).collect();
            for dup in &duplicates {
                let (start, len) = segments[dup.index(segments.len())];
                // A retransmission with other boundaries.
                segments.push((start / 2, len + start - start / 2));
            }
            let rotate = order.index(segments.len());
            segments.rotate_left(rotate);
            segments.reverse();
            let (mut out, mut direction) = reassemble(&data, isn, &segments, false);
            out.extend(direction.finish());
            prop_assert_eq!(out, data);
            prop_assert_eq!(direction.missing_bytes(), 0);
        }
    }
}
