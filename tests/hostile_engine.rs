//! A hostile client against `yaraflow serve` (issue 13, finding 2): one
//! stream full of matches must not freeze its shard nor block shutdown.
//!
//! Bounded: a few megabytes on loopback, seconds.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use yaraflow::Uuid;

/// A bundled rule (`http_basic_auth`) matches every line.
const LINE: &[u8] = b"Authorization: Basic YWRtaW46cGFzcw==\r\n";

/// `yaraflow serve` with the bundled rules and one shard (every stream
/// shares it), and the API's address.
fn serve() -> (Child, String, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_yaraflow"))
        .args([
            "serve",
            "--rules",
            "data/rules",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--shards",
            "1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run yaraflow serve");
    let stderr = child.stderr.take().unwrap();
    let (addr_tx, addr_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("API on http://").nth(1) {
                let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                let _ = addr_tx.send(addr);
            }
        }
    });
    let mut stdout = child.stdout.take().unwrap();
    let (out_tx, out_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        let _ = out_tx.send(text);
    });
    let addr = addr_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("serve prints its address");
    (child, format!("http://{addr}"), out_rx)
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(120))
        .build()
}

#[test]
fn a_match_heavy_stream_neither_freezes_its_shard_nor_blocks_shutdown() {
    let (mut child, base, stdout) = serve();
    let http = agent();
    let heavy = Uuid::new_v4();
    let probe = Uuid::new_v4();
    http.post(&format!("{base}/v1/streams/{probe}/chunks"))
        .send_bytes(b"hello")
        .expect("probe stream opens");

    // A probe of another stream of the same shard, all along.
    let done = Arc::new(AtomicBool::new(false));
    let prober = {
        let (done, base, http) = (done.clone(), base.clone(), http.clone());
        std::thread::spawn(move || {
            let mut slowest = Duration::ZERO;
            let mut probes = 0;
            while !done.load(Ordering::Relaxed) {
                let started = Instant::now();
                let response = http.get(&format!("{base}/v1/streams/{probe}")).call();
                assert!(response.is_ok(), "probe failed: {response:?}");
                slowest = slowest.max(started.elapsed());
                probes += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            (slowest, probes)
        })
    };

    // 8 MiB of matches (about 220,000), in 1 MiB requests, then its verdict.
    let chunk: Vec<u8> = LINE
        .iter()
        .copied()
        .cycle()
        .take(LINE.len() * 27_000)
        .collect();
    let repeats: u64 = 8 * 27_000;
    for _ in 0..8 {
        http.post(&format!("{base}/v1/streams/{heavy}/chunks"))
            .send_bytes(&chunk)
            .expect("heavy chunk taken");
    }
    let started = Instant::now();
    let response = http
        .get(&format!("{base}/v1/streams/{heavy}"))
        .call()
        .expect("heavy verdict");
    let text = response.into_string().unwrap();
    let verdict_time = started.elapsed();
    let results: serde_json::Value = serde_json::from_str(&text).unwrap();
    done.store(true, Ordering::Relaxed);
    let (slowest, probes) = prober.join().unwrap();

    // Every settled match is counted (the last few, within the window of
    // the end of the data, settle only when more bytes come).
    let counted = results["matches"].as_u64().unwrap();
    assert!(
        counted <= repeats && counted > repeats - 50,
        "{counted} of {repeats}"
    );
    assert_eq!(results["matches_cut"], true);
    assert_eq!(results["exact"], false);
    let listed = results["rules"][0]["patterns"][0]["matches"]
        .as_array()
        .unwrap()
        .len();
    assert!(listed <= 10_000, "{listed} matches listed");
    assert!(text.len() < 4 << 20, "results of {} bytes", text.len());
    assert!(
        verdict_time < Duration::from_secs(5),
        "the verdict took {verdict_time:?}"
    );
    assert!(probes > 0);
    assert!(
        slowest < Duration::from_millis(1500),
        "another stream of the shard waited {slowest:?}"
    );

    // SIGTERM ends the process well within the shutdown timeout (20 s),
    // and every open stream gets its line.
    let stopping = Instant::now();
    // SAFETY: a plain kill(2) of our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if stopping.elapsed() > Duration::from_secs(25) {
            let _ = child.kill();
            panic!("SIGTERM did not stop yaraflow serve within 25 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    let printed = stdout.recv_timeout(Duration::from_secs(10)).unwrap();
    let streams: Vec<serde_json::Value> = printed
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ids: Vec<&str> = streams
        .iter()
        .filter_map(|s| s["stream"].as_str())
        .collect();
    assert!(ids.contains(&heavy.to_string().as_str()), "{ids:?}");
    assert!(ids.contains(&probe.to_string().as_str()), "{ids:?}");
}

/// The cap on kept matches, in the library: counts stay exact, the listed
/// matches are the first ones, and the results say they were cut; under
/// the cap the verdict is the whole-buffer one, dense matches included.
#[test]
fn a_stream_keeps_at_most_max_stream_matches() {
    use yaraflow::{MultiStreamScanner, RuleSet, ScannerConfig};
    let rules = RuleSet::from_paths(&["data/rules"], 1024).unwrap();
    let config = ScannerConfig {
        max_stream_matches: 1000,
        ..ScannerConfig::default()
    };
    let mut scanner = MultiStreamScanner::new(&rules, config);
    let (under, over) = (Uuid::new_v4(), Uuid::new_v4());
    let data_under: Vec<u8> = LINE.repeat(1000);
    let data_over: Vec<u8> = LINE.repeat(5000);
    for piece in data_under.chunks(1460) {
        scanner.scan_chunk(under, piece).unwrap();
    }
    for piece in data_over.chunks(1460) {
        scanner.scan_chunk(over, piece).unwrap();
    }
    let results = scanner.close_stream(&under).unwrap().unwrap();
    assert!(!results.matches_cut && results.exact);
    let offsets: Vec<u64> = results.rules[0].patterns[0]
        .matches
        .iter()
        .map(|m| m.offset)
        .collect();
    let expected: Vec<u64> = (0..1000).map(|i| i * LINE.len() as u64).collect();
    assert_eq!(offsets, expected);

    let results = scanner.close_stream(&over).unwrap().unwrap();
    assert!(results.stats.matches > 4950, "{}", results.stats.matches);
    assert!(results.matches_cut && !results.exact);
    let listed = &results.rules[0].patterns[0].matches;
    assert_eq!(listed.len(), 1000);
    assert_eq!(listed[999].offset, 999 * LINE.len() as u64);
    assert_eq!(listed[999].line, 1000);
}
