//! A packet reassembly backend feeding TCP payloads to yaraflow.
//!
//! Each TCP flow (its 5-tuple) is one stream, named by a UUID derived from
//! the tuple. Payload segments of many flows arrive interleaved; a flow's
//! verdict is read when it closes (FIN). Run with:
//!
//! ```sh
//! cargo run --example flow_reassembler
//! ```

use yaraflow::{MultiStreamScanner, RuleSet, ScannerConfig, Uuid};

/// A flow's 5-tuple.
#[derive(Debug, Clone, Copy)]
struct FlowKey {
    src: ([u8; 4], u16),
    dst: ([u8; 4], u16),
}

impl FlowKey {
    /// The same tuple always names the same stream.
    fn stream_id(&self) -> Uuid {
        let text = format!(
            "{:?}:{}>{:?}:{}/tcp",
            self.src.0, self.src.1, self.dst.0, self.dst.1
        );
        Uuid::new_v5(&Uuid::NAMESPACE_OID, text.as_bytes())
    }
}

/// What the capture side hands over: in-order payload, or the end of a flow.
enum Segment {
    Payload(FlowKey, &'static [u8]),
    Fin(FlowKey),
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = ScannerConfig::default();
    let rules = RuleSet::from_paths(&["data/rules"], config.max_pattern_len)?;
    let mut scanner = MultiStreamScanner::new(&rules, config);

    let web = FlowKey {
        src: ([10, 0, 0, 5], 51000),
        dst: ([10, 0, 0, 80], 80),
    };
    let ssh = FlowKey {
        src: ([10, 0, 0, 7], 40022),
        dst: ([10, 0, 0, 22], 22),
    };
    // The credentials header is split across two segments, interleaved with
    // another flow: yaraflow still sees it whole.
    let capture = [
        Segment::Payload(web, b"GET /admin HTTP/1.1\r\nHost: intranet\r\nAuthoriza"),
        Segment::Payload(ssh, b"SSH-2.0-OpenSSH_9.6\r\n"),
        Segment::Payload(web, b"tion: Basic YWRtaW46aHVudGVyMg==\r\n\r\n"),
        Segment::Fin(ssh),
        Segment::Fin(web),
    ];

    for segment in capture {
        match segment {
            Segment::Payload(flow, payload) => scanner.scan_chunk(flow.stream_id(), payload)?,
            Segment::Fin(flow) => {
                let Some(verdict) = scanner.close_stream(&flow.stream_id())? else {
                    continue;
                };
                let rules: Vec<&str> = verdict
                    .rules
                    .iter()
                    .map(|r| r.identifier.as_str())
                    .collect();
                println!(
                    "flow {flow:?}: {} bytes, matched {rules:?}",
                    verdict.stats.bytes
                );
            }
        }
    }
    Ok(())
}
