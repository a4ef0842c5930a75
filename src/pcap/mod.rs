//! Packet captures as streams: TCP reassembly, for `yaraflow pcap`.
//!
//! [`reassembly`] turns the segments of one direction of a TCP connection,
//! in capture order, into its ordered byte stream (each byte once, holes
//! counted, the end told: FIN, RST or the end of the capture). Reading
//! capture files and naming each direction as a stream comes next, on top
//! of it.

pub mod reassembly;
