//! `yaraflow pcap` on the bundled captures (see `data/pcap/README.md`),
//! checked against an independent path: each direction's bytes as
//! tshark's "follow TCP stream" extracts them (tshark's own output, kept
//! beside each capture as `<capture>.follow` and checked against a live
//! tshark when one is installed), scanned whole by YARA-X.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Command;

use yaraflow::RuleSet;

const CAPTURES: [&str; 4] = [
    "data/pcap/http-loopback.pcapng",
    "data/pcap/lossy-link.pcap",
    "data/pcap/lossy-link-any.pcapng",
    "data/pcap/offload-loopback.pcapng",
];

/// The bytes of each direction (sender, receiver) of each connection.
type Directions = HashMap<(SocketAddr, SocketAddr), Vec<u8>>;

/// Bytes tshark says are missing from each direction (`[N bytes missing
/// in capture file]`, indented like the data of that direction).
type Missing = HashMap<(SocketAddr, SocketAddr), u64>;

/// Parses tshark's `-z follow,tcp,raw` output: per connection, two
/// `Node` lines, then one hex line per segment, indented with a tab when
/// node 1 sent it.
fn parse_follow(text: &str) -> Directions {
    parse_follow_with_gaps(text).0
}

/// [`parse_follow`], and the bytes missing per direction.
fn parse_follow_with_gaps(text: &str) -> (Directions, Missing) {
    let mut missing = Missing::new();
    let mut directions = Directions::new();
    let mut nodes: Vec<SocketAddr> = Vec::new();
    for line in text.lines() {
        if let Some(node) = line.strip_prefix("Node ") {
            if node.starts_with('0') {
                nodes.clear();
            }
            nodes.push(node[3..].trim().parse().expect("a node address"));
            if nodes.len() == 2 {
                directions.entry((nodes[0], nodes[1])).or_default();
                directions.entry((nodes[1], nodes[0])).or_default();
            }
            continue;
        }
        let hex = line.trim_start_matches('\t');
        let from_node_1 = line.starts_with('\t');
        if nodes.len() != 2 {
            continue;
        }
        let (src, dst) = match from_node_1 {
            true => (nodes[1], nodes[0]),
            false => (nodes[0], nodes[1]),
        };
        if let Some(gap) = missing_bytes(hex) {
            *missing.entry((src, dst)).or_default() += gap;
            continue;
        }
        let is_data = !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit());
        if !is_data {
            continue;
        }
        let bytes = directions.entry((src, dst)).or_default();
        for pair in hex.as_bytes().chunks(2) {
            let digits = std::str::from_utf8(pair).unwrap();
            bytes.push(u8::from_str_radix(digits, 16).unwrap());
        }
    }
    (directions, missing)
}

/// The N of tshark's `[N bytes missing in capture file]` line.
fn missing_bytes(line: &str) -> Option<u64> {
    line.strip_prefix('[')?
        .strip_suffix(" bytes missing in capture file]")?
        .parse()
        .ok()
}

#[test]
fn the_follow_parser_counts_bytes_tshark_says_are_missing() {
    let text = "Node 0: 10.0.0.1:1\nNode 1: 10.0.0.2:2\n6162\n[3 bytes missing in capture file]\n\t[5 bytes missing in capture file]\n\t63\n";
    let (directions, missing) = parse_follow_with_gaps(text);
    let (a, b): (SocketAddr, SocketAddr) =
        ("10.0.0.1:1".parse().unwrap(), "10.0.0.2:2".parse().unwrap());
    assert_eq!(directions[&(a, b)], b"ab");
    assert_eq!(directions[&(b, a)], b"c");
    assert_eq!((missing[&(a, b)], missing[&(b, a)]), (3, 5));
}

fn extraction(capture: &str) -> Directions {
    extraction_with_gaps(capture).0
}

fn extraction_with_gaps(capture: &str) -> (Directions, Missing) {
    parse_follow_with_gaps(&std::fs::read_to_string(format!("{capture}.follow")).unwrap())
}

use common::{json_lines, run_yaraflow as yaraflow};

/// The lines of directions (not of the files inside them).
fn flow_lines(out: &std::process::Output) -> Vec<serde_json::Value> {
    let lines = json_lines(out);
    assert!(lines
        .iter()
        .all(|l| l.get("flow").is_some() != l.get("object").is_some()));
    lines
        .into_iter()
        .filter(|l| l.get("flow").is_some())
        .collect()
}

fn address(line: &serde_json::Value, field: &str) -> SocketAddr {
    line["flow"][field].as_str().unwrap().parse().unwrap()
}

#[test]
fn every_direction_gets_the_verdict_of_its_bytes_scanned_whole() {
    let rules = RuleSet::from_paths(&["data/rules"], 1024).unwrap();
    let mut matched = 0;
    for capture in CAPTURES {
        let (expected, missing) = extraction_with_gaps(capture);
        let out = yaraflow(&["pcap", "--rules", "data/rules", "--shards", "2", capture]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines = flow_lines(&out);
        assert_eq!(
            lines.len(),
            expected.len(),
            "{capture}: one line per direction"
        );
        for line in &lines {
            let key = (address(line, "src"), address(line, "dst"));
            let data = &expected[&key];
            assert_eq!(
                line["bytes"].as_u64(),
                Some(data.len() as u64),
                "{capture} {key:?}"
            );
            let gap = missing.get(&key).copied().unwrap_or(0);
            assert_eq!(line["flow"]["missing_bytes"], gap, "{capture} {key:?}");
            assert_eq!(line["capture"], capture);
            assert_eq!(
                common::printed(&rules, line),
                common::reference(&rules, data),
                "{capture} {key:?}"
            );
            matched += line["rules"].as_array().unwrap().len();
        }
    }
    assert!(
        matched >= 8,
        "the captures exercise the bundled rules ({matched})"
    );
}

#[test]
fn the_lossy_captures_hold_reordered_and_retransmitted_segments() {
    // What makes them worth having: the client saw segments after holes
    // and the retransmissions after them; the server saw its own
    // retransmissions. Both reassemble to the same bytes.
    let (client, server) = (
        extraction("data/pcap/lossy-link.pcap"),
        extraction("data/pcap/lossy-link-any.pcapng"),
    );
    assert_eq!(client, server);
    let out = yaraflow(&["pcap", "data/pcap/lossy-link.pcap"]);
    let lines = flow_lines(&out);
    let packets: u64 = lines
        .iter()
        .map(|l| l["flow"]["packets"].as_u64().unwrap())
        .sum();
    let ends: Vec<&str> = lines
        .iter()
        .map(|l| l["flow"]["end"].as_str().unwrap())
        .collect();
    assert!(
        ends.contains(&"fin") && ends.contains(&"rst") && ends.contains(&"open"),
        "{ends:?}"
    );
    assert!(packets > 250, "{packets} segments");
}

#[test]
fn stream_ids_are_uuid_v5_of_the_documented_name() {
    let out = yaraflow(&["pcap", "--quiet", "data/pcap/http-loopback.pcapng"]);
    for line in flow_lines(&out) {
        let name = format!(
            "tcp {} > {}",
            line["flow"]["src"].as_str().unwrap(),
            line["flow"]["dst"].as_str().unwrap()
        );
        let id = yaraflow::Uuid::new_v5(&yaraflow::pcap::flow_namespace(), name.as_bytes());
        assert_eq!(line["stream"], id.to_string());
    }
}

#[test]
fn the_extractions_are_tsharks_own_output() {
    // `.ci/run` installs tshark and requires it, so CI always compares.
    if !common::tshark_installed("the committed extractions are not re-checked") {
        return;
    }
    for capture in CAPTURES {
        let live = Command::new("data/pcap/follow.sh")
            .arg(capture)
            .output()
            .unwrap();
        assert!(
            live.status.success(),
            "{}",
            String::from_utf8_lossy(&live.stderr)
        );
        assert_eq!(
            parse_follow(&String::from_utf8_lossy(&live.stdout)),
            extraction(capture),
            "{capture}: tshark disagrees with {capture}.follow"
        );
    }
}

#[test]
fn a_truncated_capture_reports_where_and_still_closes_its_flows() {
    let whole = std::fs::read("data/pcap/lossy-link.pcap").unwrap();
    let dir = std::env::temp_dir().join(format!("yaraflow-pcap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cut = dir.join("cut.pcap");
    std::fs::write(&cut, &whole[..whole.len() / 2]).unwrap();
    let out = yaraflow(&["pcap", "--quiet", cut.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("corrupt capture at frame"), "{stderr}");
    let lines = flow_lines(&out);
    assert!(!lines.is_empty());
    // Directions that ended before the damage are as they were; those
    // still open are closed and marked.
    let marked: Vec<_> = lines
        .iter()
        .filter(|l| l["capture_error"] == true)
        .collect();
    assert!(!marked.is_empty());
    assert!(marked.iter().all(|l| l["flow"]["end"] == "open"));

    let garbage = dir.join("garbage.pcap");
    std::fs::write(&garbage, b"this is not a capture at all, just text").unwrap();
    let empty = dir.join("empty.pcap");
    std::fs::write(&empty, b"").unwrap();
    let missing = dir.join("missing.pcap");
    for (path, message) in [
        (&garbage, "not a pcap or pcapng capture"),
        (&empty, "the capture is empty"),
        (&missing, "No such file"),
    ] {
        // A bad capture among good ones: the good ones are still scanned.
        let out = yaraflow(&["pcap", "--quiet", path.to_str().unwrap(), CAPTURES[0]]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(message), "{path:?}: {stderr}");
        assert_eq!(flow_lines(&out).len(), extraction(CAPTURES[0]).len());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The offload capture (see `data/pcap/offload.py`) is worth having only
/// if it holds what segmentation offload leaves: IPv4 frames whose total
/// length is 0, carrying TCP payload.
#[test]
fn the_offload_capture_holds_frames_with_an_ipv4_total_length_of_zero() {
    use pcap_parser::traits::PcapReaderIterator;
    use pcap_parser::{Block, PcapBlockOwned, PcapError, PcapNGReader};
    let file = std::fs::File::open("data/pcap/offload-loopback.pcapng").unwrap();
    let mut reader = PcapNGReader::new(1 << 20, file).unwrap();
    let mut zero_length = 0;
    loop {
        match reader.next() {
            Ok((size, block)) => {
                if let PcapBlockOwned::NG(Block::EnhancedPacket(packet)) = block {
                    let frame = packet.data;
                    let ipv4 = frame.len() > 54 && frame[12..14] == [8, 0];
                    if ipv4 && frame[16..18] == [0, 0] && frame[23] == 6 {
                        zero_length += 1;
                    }
                }
                reader.consume(size);
            }
            Err(PcapError::Eof) => break,
            Err(PcapError::Incomplete(_)) => reader.refill().unwrap(),
            Err(err) => panic!("{err:?}"),
        }
    }
    assert!(
        zero_length >= 10,
        "{zero_length} frames with total length 0"
    );
}

/// `--flow-threads` splits the connections over threads: the lines come
/// in another order, and are the same lines, objects included.
#[test]
fn any_number_of_flow_threads_prints_the_same_lines() {
    let mut captures: Vec<&str> = CAPTURES.to_vec();
    captures.push("data/pcap/objects-loopback.pcapng");
    let lines = |threads: &str| {
        let mut args = vec!["pcap", "--quiet", "--flow-threads", threads];
        args.extend(&captures);
        let out = yaraflow(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut lines: Vec<String> = json_lines(&out)
            .into_iter()
            .map(|mut line| {
                // When the engine saw the stream: not the same in two runs.
                let times = line.as_object_mut().unwrap();
                times.remove("opened_at_ms").unwrap();
                times.remove("last_seen_ms").unwrap();
                line.to_string()
            })
            .collect();
        lines.sort();
        lines
    };
    let one = lines("1");
    let objects = one.iter().filter(|l| l.contains("\"object\"")).count();
    assert!(
        objects > 0 && objects < one.len(),
        "{objects} of {}",
        one.len()
    );
    for threads in ["2", "3"] {
        let other = lines(threads);
        let differ: Vec<_> = other.iter().filter(|l| !one.contains(l)).collect();
        assert!(
            differ.is_empty() && other.len() == one.len(),
            "{threads} flow threads: {differ:?}"
        );
    }
}
