//! Packet captures as streams, for `yaraflow pcap`: each direction of each
//! TCP connection in a capture file is one stream.
//!
//! The pipeline, one module per step:
//! - [`capture`] reads a pcap or pcapng file frame by frame (`pcap-parser`);
//! - [`packet`] decodes a frame into a TCP segment (`etherparse`), or says
//!   why it skipped it;
//! - [`flows`] keys segments by direction, names each direction with a
//!   UUID v5 of its 4-tuple and reports when directions open and end;
//! - [`reassembly`] turns one direction's segments, in capture order, into
//!   its ordered byte stream (each byte once, holes counted, the end told);
//! - [`feed`] hands the directions, and the files inside them
//!   ([`crate::objects`]), to the engine as streams and returns their
//!   verdicts: the bridge any reassembler can use;
//! - [`pipeline`] runs these steps on several threads: a reader, flow
//!   threads by connection hash, and the caller's thread taking results.
//!
//! Trade-off: IP fragments are skipped, not reassembled (rare for TCP,
//! which sizes segments to avoid them), and a frame cut short by the
//! capture's snapshot length becomes a counted hole rather than a guess.

pub mod capture;
pub mod feed;
pub mod flows;
pub mod packet;
pub mod pipeline;
pub mod reassembly;

pub use capture::{CaptureReader, Frame};
pub use feed::{Ended, FlowFeed, Verdict};
pub use flows::{
    flow_namespace, flow_uuid, FlowCounters, FlowEvent, FlowLimits, FlowOpened, FlowSummary,
    FlowTable, Role,
};
pub use packet::{decode, FlowKey, Skip, TcpSegment};
pub use pipeline::{flow_threads, read_capture, CaptureRun, FlowStage, PassEvents};
pub use reassembly::{Direction, End};
