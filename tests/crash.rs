//! The crash test of the stream store: a `yaraflow serve` with a store and
//! periodic checkpoints is killed with SIGKILL in the middle of a load,
//! restarted on the same store, and every producer resends its stream from
//! the durable offset the restarted server reports. Every stream's final
//! verdict must equal a whole-buffer YARA-X scan of its data, and the
//! checkpoints must have made real progress durable (the producers do not
//! simply start over).

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{printed, reference};
use yaraflow::{RuleSet, Uuid};

/// A running `yaraflow serve` and its API address.
struct Server {
    child: Child,
    api: String,
}

impl Server {
    fn start(store: &Path) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_yaraflow"))
            .args(["serve", "--shards", "2", "--listen", "127.0.0.1:0"])
            .args(["--metrics-listen", "127.0.0.1:0", "--store"])
            .arg(store)
            .args([
                "--checkpoint-interval",
                "50ms",
                "--max-resident-streams",
                "16",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("yaraflow serve starts");
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        // The rule classes come first, then the banner with the address.
        let banner = lines
            .by_ref()
            .map_while(Result::ok)
            .find(|line| line.contains("http://"))
            .expect("a banner");
        let api = banner
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no address in {banner:?}"))
            .to_string();
        // Keep draining stderr so that the server never blocks on it.
        std::thread::spawn(move || lines.for_each(drop));
        Server { child, api }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.api)
    }

    fn send(&self, stream: Uuid, chunk: &[u8]) {
        ureq::post(&self.url(&format!("/v1/streams/{stream}/chunks")))
            .send_bytes(chunk)
            .unwrap_or_else(|e| panic!("chunk for {stream}: {e}"));
    }

    /// The durable offset the server reports (0 for a stream it does not
    /// know: resend it whole).
    fn durable_offset(&self, stream: Uuid) -> u64 {
        match ureq::get(&self.url(&format!("/v1/streams/{stream}/offset"))).call() {
            Ok(response) => {
                let body: serde_json::Value =
                    serde_json::from_str(&response.into_string().unwrap()).unwrap();
                body["durable_offset"].as_u64().unwrap_or(0)
            }
            Err(ureq::Error::Status(404, _)) => 0,
            Err(e) => panic!("offset of {stream}: {e}"),
        }
    }

    fn close(&self, stream: Uuid) -> serde_json::Value {
        let response = ureq::delete(&self.url(&format!("/v1/streams/{stream}")))
            .call()
            .unwrap_or_else(|e| panic!("close {stream}: {e}"));
        serde_json::from_str(&response.into_string().unwrap()).unwrap()
    }
}

/// Stream data: pieces of the bundled samples (which the bundled rules
/// match) between runs of text, different for every stream.
fn stream_data(index: usize) -> Vec<u8> {
    let samples: Vec<Vec<u8>> = ["eicar.com", "http_session.txt", "app.log"]
        .iter()
        .map(|name| std::fs::read(Path::new("data/samples").join(name)).unwrap())
        .collect();
    let mut data = Vec::new();
    for round in 0..6 {
        data.extend(
            format!("stream {index} round {round} ")
                .repeat(20)
                .into_bytes(),
        );
        let sample = &samples[(index + round) % samples.len()];
        data.extend_from_slice(&sample[..sample.len().min(600 + 37 * index)]);
    }
    data
}

#[test]
fn every_stream_resumes_from_its_durable_offset_after_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("streams.redb");
    let rules = RuleSet::from_paths(&["data/rules"], 1024).unwrap();
    let streams: Vec<(Uuid, Vec<u8>)> = (0..40).map(|i| (Uuid::new_v4(), stream_data(i))).collect();
    const CHUNK: usize = 97;

    // Send about two thirds of every stream, pausing so that checkpoints
    // run, then kill the server in the middle of the next round.
    let mut server = Server::start(&store);
    let longest = streams.iter().map(|(_, d)| d.len()).max().unwrap();
    let kill_at = longest * 2 / 3;
    let mut offset = 0;
    while offset < kill_at {
        for (id, data) in &streams {
            if offset < data.len() {
                server.send(*id, &data[offset..(offset + CHUNK).min(data.len())]);
            }
        }
        offset += CHUNK;
        if (offset / CHUNK).is_multiple_of(8) {
            std::thread::sleep(Duration::from_millis(60));
        }
    }
    for (id, data) in streams.iter().take(20) {
        if offset < data.len() {
            server.send(*id, &data[offset..(offset + CHUNK).min(data.len())]);
        }
    }
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();

    let server = Server::start(&store);
    let mut resumed_bytes = 0;
    for (id, data) in &streams {
        let durable = server.durable_offset(*id) as usize;
        assert!(
            durable <= data.len(),
            "durable offset {durable} past the data"
        );
        resumed_bytes += durable;
        for chunk in data[durable..].chunks(CHUNK) {
            server.send(*id, chunk);
        }
    }
    let total: usize = streams.iter().map(|(_, d)| d.len()).sum();
    assert!(
        resumed_bytes > total / 3,
        "checkpoints made only {resumed_bytes} of {total} bytes durable"
    );
    for (id, data) in &streams {
        let results = server.close(*id);
        assert_eq!(results["bytes"].as_u64(), Some(data.len() as u64));
        assert_eq!(
            printed(&rules, &results),
            reference(&rules, data),
            "stream {id}"
        );
    }
    let matched = streams
        .iter()
        .filter(|(_, data)| !reference(&rules, data).is_empty())
        .count();
    assert!(
        matched > 20,
        "only {matched} streams match the bundled rules"
    );
    let mut server = server;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}
