//! A packet reassembly backend feeding TCP payloads to yaraflow.
//!
//! The backend reassembles TCP itself and hands each direction's in-order
//! payload to [`FlowFeed`], the bridge `yaraflow pcap` uses: each direction
//! is a stream named as `yaraflow pcap` names it ([`flow_uuid`] of its
//! 4-tuple), and each file inside an HTTP or SMTP direction (here an HTTP
//! download) is a stream of its own, so that rules written for files see
//! the file from its first byte. Payload of several flows arrives
//! interleaved; verdicts come back when directions end. Run with:
//!
//! ```sh
//! cargo run --example flow_reassembler
//! ```

use std::net::SocketAddr;

use yaraflow::objects::ObjectLimits;
use yaraflow::pcap::{
    flow_uuid, End, Ended, FlowEvent, FlowFeed, FlowKey, FlowOpened, FlowSummary, Role,
};
use yaraflow::{Engine, EngineConfig, RuleSet};

/// One direction as the backend tracks it.
struct Direction {
    key: FlowKey,
    role: Role,
    bytes: u64,
    packets: u64,
}

impl Direction {
    fn new(src: &str, dst: &str, role: Role) -> Direction {
        let key = FlowKey {
            src: src.parse::<SocketAddr>().unwrap(),
            dst: dst.parse::<SocketAddr>().unwrap(),
        };
        Direction {
            key,
            role,
            bytes: 0,
            packets: 0,
        }
    }

    fn opened(&self) -> FlowEvent {
        FlowEvent::Opened(FlowOpened {
            stream: flow_uuid(&self.key, 0),
            src: self.key.src,
            dst: self.key.dst,
            role: self.role,
        })
    }

    fn payload(&mut self, bytes: &[u8]) -> FlowEvent {
        self.bytes += bytes.len() as u64;
        self.packets += 1;
        FlowEvent::Data(flow_uuid(&self.key, 0), bytes.to_vec())
    }

    fn fin(&self) -> FlowEvent {
        FlowEvent::Ended(FlowSummary {
            stream: flow_uuid(&self.key, 0),
            src: self.key.src,
            dst: self.key.dst,
            role: self.role,
            packets: self.packets,
            bytes: self.bytes,
            missing_bytes: 0,
            end: End::Fin,
        })
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rules = RuleSet::from_paths(&["data/rules"], 1024)?;
    let engine = Engine::start(rules, EngineConfig::default())?;
    let mut feed = FlowFeed::new(engine.handle().blocking(), Some(ObjectLimits::default()));

    let mut request = Direction::new("10.0.0.5:51000", "10.0.0.80:80", Role::Client);
    let mut response = Direction::new("10.0.0.80:80", "10.0.0.5:51000", Role::Server);
    let mut ssh = Direction::new("10.0.0.7:40022", "10.0.0.22:22", Role::Client);
    let eicar = std::fs::read("data/samples/eicar.com")?;
    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", eicar.len());
    // The credentials header is split across two segments, and the
    // download across two more, interleaved with another flow: yaraflow
    // sees each whole, and the download as a file of its own.
    let mut events = vec![request.opened(), response.opened(), ssh.opened()];
    events.push(request.payload(b"GET /eicar.com HTTP/1.1\r\nHost: intranet\r\nAuthoriza"));
    events.push(ssh.payload(b"SSH-2.0-OpenSSH_9.6\r\n"));
    events.push(request.payload(b"tion: Basic YWRtaW46aHVudGVyMg==\r\n\r\n"));
    events.push(response.payload(&[head.as_bytes(), &eicar[..20]].concat()));
    events.push(response.payload(&eicar[20..]));
    events.extend([ssh.fin(), request.fin(), response.fin()]);

    let mut verdicts = feed.take(&mut events)?;
    verdicts.extend(feed.flush()?);
    for (ended, results) in verdicts {
        let Some(results) = results? else { continue };
        let rules: Vec<&str> = results
            .rules
            .iter()
            .map(|r| r.identifier.as_str())
            .collect();
        match ended {
            Ended::Flow(flow, _) => println!(
                "flow {} > {}: {} bytes, matched {rules:?}",
                flow.src, flow.dst, flow.bytes
            ),
            Ended::Object(object) => println!(
                "file {:?} in flow {} ({} bytes): matched {rules:?}",
                object.info.file_name, object.info.flow, object.size
            ),
        }
    }
    engine.shutdown()?;
    Ok(())
}
