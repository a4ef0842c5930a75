//! `yaraflow serve` against hostile and careless clients, over loopback:
//! raw requests on a `TcpStream` (as `curl --path-as-is` sends them), so
//! that paths, headers and bodies are exactly what the test wrote.
//!
//! Each test runs its own `yaraflow serve` (one shard, ephemeral ports) and
//! takes seconds. Bounds on time and memory are generous: they separate
//! "bounded" from "grows without bound", not fast from slow.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use yaraflow::Uuid;

const RULES: &str = r#"
rule secret { strings: $a = "secret" condition: $a }
"#;

/// A `yaraflow serve` child on ephemeral loopback ports, killed on drop.
struct Server {
    child: Child,
    api: SocketAddr,
    dir: PathBuf,
    stderr: Option<mpsc::Receiver<String>>,
}

impl Server {
    /// `serve --rules DIR` (DIR holding [`RULES`]) with `args` added.
    fn start(args: &[&str]) -> Server {
        Server::start_limited(args, None)
    }

    /// The same, with at most `nofile` file handles.
    fn start_limited(args: &[&str], nofile: Option<u64>) -> Server {
        let dir = temp_dir();
        std::fs::write(dir.join("rules.yar"), RULES).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_yaraflow"));
        command
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(["--metrics-listen", "127.0.0.1:0"])
            .arg("--rules")
            .arg(&dir)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(nofile) = nofile {
            // SAFETY: setrlimit is async-signal-safe; nothing else runs
            // between fork and exec.
            unsafe {
                command.pre_exec(move || {
                    let limit = libc::rlimit {
                        rlim_cur: nofile,
                        rlim_max: nofile,
                    };
                    match libc::setrlimit(libc::RLIMIT_NOFILE, &limit) {
                        0 => Ok(()),
                        _ => Err(std::io::Error::last_os_error()),
                    }
                });
            }
        }
        let mut child = command.spawn().expect("run yaraflow serve");
        let stderr = child.stderr.take().unwrap();
        // Killed and waited for on drop, whatever happens below.
        let mut server = Server {
            child,
            api: ([127, 0, 0, 1], 0).into(),
            dir,
            stderr: None,
        };
        let (lines, seen) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
        loop {
            let line = seen
                .recv_timeout(Duration::from_secs(120))
                .expect("yaraflow serve says where it listens");
            if let Some(rest) = line.split("serving the API on http://").nth(1) {
                server.api = rest.split_whitespace().next().unwrap().parse().unwrap();
                server.stderr = Some(seen);
                // Both servers' workers start after that line: wait until
                // each answers (a worker that starts with no file handle
                // left panics inside actix-server).
                let metrics = rest.split("metrics on ").nth(1).unwrap();
                let metrics = metrics.split_whitespace().next().unwrap().to_string();
                for url in [server.url("/healthz"), metrics] {
                    let started = Instant::now();
                    while ureq::get(&url).call().is_err() {
                        assert!(started.elapsed() < WAIT, "{url} does not answer");
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
                return server;
            }
        }
    }

    /// The server's resident memory, in KiB.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS")
    }

    /// What the server wrote on stderr since it started listening.
    fn stderr(&self) -> String {
        let lines = self
            .stderr
            .as_ref()
            .map(|r| r.try_iter().collect::<Vec<_>>());
        lines.unwrap_or_default().join("\n")
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.api)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("yaraflow-hostile-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// An answer read off the wire.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn parse(raw: &[u8]) -> Option<Answer> {
        let text = String::from_utf8_lossy(raw);
        let (head, body) = text.split_once("\r\n\r\n")?;
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        Some(Answer {
            status,
            head: head.to_string(),
            body: body.to_string(),
        })
    }

    /// The `error.code` of a JSON error body.
    fn code(&self) -> String {
        let json: serde_json::Value =
            serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"));
        json["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name)
                .then(|| value.trim().to_string())
        })
    }
}

/// Sends `request` on a new connection and reads until the server closes
/// it or `wait` passes; the answer, if one came.
fn exchange(addr: SocketAddr, request: &[u8], wait: Duration) -> Option<Answer> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(request).unwrap();
    let (raw, _) = read_until_closed(&mut stream, wait);
    Answer::parse(&raw)
}

/// Reads until the peer closes or `wait` passes: what came, and whether
/// the peer closed.
fn read_until_closed(stream: &mut TcpStream, wait: Duration) -> (Vec<u8>, bool) {
    let until = Instant::now() + wait;
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (raw, false);
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return (raw, true),
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (raw, true),
            Err(_) => return (raw, false),
        }
    }
}

fn request(method: &str, path: &str, headers: &[&str], body: &[u8]) -> Vec<u8> {
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for header in headers {
        text.push_str(header);
        text.push_str("\r\n");
    }
    if !body.is_empty() || method == "POST" {
        text.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    text.push_str("\r\n");
    let mut bytes = text.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

const WAIT: Duration = Duration::from_secs(10);

fn token_file(dir: &Path) -> PathBuf {
    let path = dir.join("token");
    std::fs::write(&path, "s3cr3t-token\n").unwrap();
    path
}

#[test]
fn no_spelling_of_a_v1_path_passes_the_token_check() {
    let dir = temp_dir();
    let token = token_file(&dir);
    let server = Server::start(&["--token-file", token.to_str().unwrap()]);
    let id = Uuid::new_v4();
    let auth = "Authorization: Bearer s3cr3t-token";
    let fed = exchange(
        server.api,
        &request(
            "POST",
            &format!("/v1/streams/{id}/chunks"),
            &[auth],
            b"a secret",
        ),
        WAIT,
    )
    .unwrap();
    assert_eq!(fed.status, 200, "{fed:?}");

    let mut probes: Vec<(&str, String)> = Vec::new();
    for prefix in [
        "/v1", "/%761", "/v%31", "/%76%31", "/%56%31", "/V1", "//v1", "/v1/", "/./v1", "/x/../v1",
        "/v1/.", "/%2e/v1", "/v1/x/..",
    ] {
        probes.push(("GET", format!("{prefix}/streams/{id}")));
        probes.push(("GET", format!("{prefix}/streams")));
        probes.push(("GET", format!("{prefix}/events")));
        probes.push(("DELETE", format!("{prefix}/streams/{id}")));
        probes.push(("POST", format!("{prefix}/streams/{id}/chunks")));
        probes.push(("POST", format!("{prefix}/chunks")));
        probes.push(("POST", format!("{prefix}/rules/reload")));
    }
    probes.push(("GET", format!("/v1/streams/{}", id.simple())));
    probes.push(("GET", format!("/v1/streams/urn:uuid:{id}")));
    for (method, path) in &probes {
        let answer = exchange(server.api, &request(method, path, &[], b"x"), WAIT)
            .unwrap_or_else(|| panic!("{method} {path}: no answer"));
        assert!(
            [401, 404].contains(&answer.status),
            "{method} {path} without the token: {answer:?}"
        );
        assert!(!answer.code().is_empty(), "{method} {path}: {answer:?}");
    }
    // Nothing above reached the stream: it is still open, with its match.
    let kept = exchange(
        server.api,
        &request("GET", &format!("/v1/streams/{id}"), &[auth], b""),
        WAIT,
    )
    .unwrap();
    assert_eq!(kept.status, 200, "{kept:?}");
    assert!(kept.body.contains("\"secret\""), "{kept:?}");

    // `/readyz` is open to anyone, and says no more than "ready".
    let ready = exchange(server.api, &request("GET", "/readyz", &[], b""), WAIT).unwrap();
    assert_eq!(ready.status, 200);
    let json: serde_json::Value = serde_json::from_str(&ready.body).unwrap();
    assert_eq!(json, serde_json::json!({"status": "ready"}));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn every_refusal_is_the_documented_json() {
    let server = Server::start(&["--max-body-bytes", "4096"]);
    let id = Uuid::new_v4();
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (request("GET", "/nope", &[], b""), 404, "not_found"),
        (request("GET", "/v1/nope", &[], b""), 404, "not_found"),
        (
            request("PATCH", &format!("/v1/streams/{id}"), &[], b"x"),
            405,
            "method_not_allowed",
        ),
        (
            request("PUT", &format!("/v1/streams/{id}"), &[], b"x"),
            400,
            "bad_body",
        ),
        (
            request("GET", "/v1/chunks", &[], b""),
            405,
            "method_not_allowed",
        ),
        (
            request(
                "POST",
                &format!("/v1/streams/{id}/chunks"),
                &["Content-Encoding: br"],
                b"x",
            ),
            415,
            "unsupported_encoding",
        ),
    ];
    for (raw, status, code) in cases {
        let answer = exchange(server.api, &raw, WAIT).unwrap();
        let line = String::from_utf8_lossy(&raw[..raw.len().min(60)]).to_string();
        assert_eq!(
            (answer.status, answer.code().as_str()),
            (status, code),
            "{line}: {answer:?}"
        );
        if status == 405 {
            assert!(answer.header("allow").is_some(), "{answer:?}");
        }
    }
    let patch = exchange(
        server.api,
        &request("PATCH", &format!("/v1/streams/{id}"), &[], b""),
        WAIT,
    )
    .unwrap();
    assert_eq!(patch.header("allow").as_deref(), Some("GET, PUT, DELETE"));
}

#[test]
fn a_declared_length_over_the_limit_is_refused_before_the_body() {
    let server = Server::start(&["--max-body-bytes", "4096", "--body-timeout", "60s"]);
    let id = Uuid::new_v4();
    let head = format!(
        "POST /v1/streams/{id}/chunks HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000000\r\n\r\n"
    );
    let started = Instant::now();
    // Nothing of the body is sent: the answer cannot wait for it.
    let answer = exchange(server.api, head.as_bytes(), WAIT).expect("an answer without the body");
    assert_eq!(
        (answer.status, answer.code().as_str()),
        (413, "body_too_large")
    );
    assert!(started.elapsed() < WAIT);
}

#[test]
fn gzip_and_deflate_bodies_are_decoded_under_the_limit() {
    use flate2::write::{GzEncoder, ZlibEncoder};
    let server = Server::start(&["--max-body-bytes", "4096"]);
    let plain = b"..a secret in a compressed body..".repeat(4);
    let mut gzip = GzEncoder::new(Vec::new(), flate2::Compression::best());
    gzip.write_all(&plain).unwrap();
    let mut zlib = ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    zlib.write_all(&plain).unwrap();
    for (encoding, body) in [
        ("gzip", gzip.finish().unwrap()),
        ("deflate", zlib.finish().unwrap()),
    ] {
        let id = Uuid::new_v4();
        let header = format!("Content-Encoding: {encoding}");
        let raw = request(
            "POST",
            &format!("/v1/streams/{id}/chunks"),
            &[&header],
            &body,
        );
        let answer = exchange(server.api, &raw, WAIT).unwrap();
        assert_eq!(answer.status, 200, "{encoding}: {answer:?}");
        let json: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
        assert_eq!(
            json["accepted_bytes"],
            plain.len(),
            "{encoding}: the decoded bytes"
        );
        let results = exchange(
            server.api,
            &request("GET", &format!("/v1/streams/{id}"), &[], b""),
            WAIT,
        )
        .unwrap();
        assert!(
            results.body.contains("\"secret\""),
            "{encoding}: {results:?}"
        );
    }
    // A small body that decodes past the limit.
    let mut bomb = GzEncoder::new(Vec::new(), flate2::Compression::best());
    bomb.write_all(&vec![0u8; 1 << 20]).unwrap();
    let bomb = bomb.finish().unwrap();
    assert!(bomb.len() < 4096);
    let raw = request(
        "POST",
        &format!("/v1/streams/{}/chunks", Uuid::new_v4()),
        &["Content-Encoding: gzip"],
        &bomb,
    );
    let answer = exchange(server.api, &raw, WAIT).unwrap();
    assert_eq!(
        (answer.status, answer.code().as_str()),
        (413, "body_too_large")
    );
}

/// A request whose body stops: 10 of 100 declared bytes, or a chunked body
/// with one chunk and no end.
fn stalled(id: Uuid, chunked: bool) -> Vec<u8> {
    match chunked {
        false => format!(
            "POST /v1/streams/{id}/chunks HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n0123456789"
        ),
        true => format!(
            "POST /v1/streams/{id}/chunks HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n"
        ),
    }
    .into_bytes()
}

#[test]
fn stalled_bodies_and_idle_connections_are_let_go() {
    let server = Server::start(&[
        "--body-timeout",
        "1s",
        "--request-timeout",
        "1s",
        "--keep-alive",
        "1s",
    ]);
    for chunked in [false, true] {
        let mut stream = TcpStream::connect(server.api).unwrap();
        stream.write_all(&stalled(Uuid::new_v4(), chunked)).unwrap();
        let (raw, closed) = read_until_closed(&mut stream, WAIT);
        let answer = Answer::parse(&raw).unwrap_or_else(|| panic!("chunked {chunked}: no answer"));
        assert_eq!(
            (answer.status, answer.code().as_str()),
            (408, "body_timeout")
        );
        assert!(
            closed,
            "chunked {chunked}: the connection is closed after the 408"
        );
    }
    // A route that reads no body, and a refusal, with a chunked body that
    // stops: answered, then let go (actix would drain it forever).
    for path in ["/healthz", "/v1/nope"] {
        let mut stream = TcpStream::connect(server.api).unwrap();
        let head = format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n"
        );
        stream.write_all(head.as_bytes()).unwrap();
        let (raw, closed) = read_until_closed(&mut stream, WAIT);
        assert!(Answer::parse(&raw).is_some(), "{path}: no answer");
        assert!(closed, "{path}: a stalled unread body holds the connection");
    }
    // A connection that sends nothing, and one idle after an answer.
    let mut silent = TcpStream::connect(server.api).unwrap();
    assert!(
        read_until_closed(&mut silent, WAIT).1,
        "a silent connection is closed"
    );
    let mut idle = TcpStream::connect(server.api).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let (raw, closed) = read_until_closed(&mut idle, WAIT);
    assert!(String::from_utf8_lossy(&raw).starts_with("HTTP/1.1 200"));
    assert!(closed, "an idle keep-alive connection is closed");
}

#[test]
fn stalled_clients_cannot_exhaust_the_file_handles() {
    // 64 handles, and more stalled requests than that: each is let go
    // after the body timeout, and a client that comes after them is served.
    let server = Server::start_limited(
        &[
            "--body-timeout",
            "1s",
            "--request-timeout",
            "1s",
            "--shards",
            "1",
        ],
        Some(64),
    );
    let stalls: Vec<TcpStream> = (0..100)
        .map(|n| {
            let mut stream = TcpStream::connect(server.api).unwrap();
            stream
                .write_all(&stalled(Uuid::new_v4(), n % 2 == 1))
                .unwrap();
            stream
        })
        .collect();
    let started = Instant::now();
    let answer = exchange(
        server.api,
        &request("GET", "/healthz", &[], b""),
        Duration::from_secs(30),
    );
    assert_eq!(
        answer.map(|a| a.status),
        Some(200),
        "after {:?}; the server said: {}",
        started.elapsed(),
        server.stderr()
    );
    drop(stalls);
}

/// Opens an event subscription; the connection and the answer's head.
fn subscribe(addr: SocketAddr) -> (TcpStream, Answer) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .write_all(b"GET /v1/events HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    while !raw.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream
            .read(&mut buf)
            .expect("an answer to the subscription");
        assert!(n > 0, "closed before answering");
        raw.extend_from_slice(&buf[..n]);
    }
    // A refusal has a body after its head.
    if !raw.starts_with(b"HTTP/1.1 200") {
        let (rest, _) = read_until_closed(&mut stream, Duration::from_secs(2));
        raw.extend_from_slice(&rest);
    }
    (stream, Answer::parse(&raw).unwrap())
}

#[test]
fn two_hundred_subscribers_cost_little_and_the_limit_holds() {
    let server = Server::start(&["--max-event-subscribers", "200", "--shards", "2"]);
    let before = server.rss_kib();
    let subscribers: Vec<TcpStream> = (0..200)
        .map(|n| {
            let (stream, answer) = subscribe(server.api);
            assert_eq!(answer.status, 200, "subscriber {n}: {answer:?}");
            stream
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let after = server.rss_kib();
    eprintln!("RSS {before} KiB before, {after} KiB with 200 subscribers");
    // 7 MB each before: 1.4 GB. Now a few KiB each.
    assert!(
        after.saturating_sub(before) < 64 * 1024,
        "200 subscribers took {} KiB",
        after - before
    );
    let (_, refused) = subscribe(server.api);
    assert_eq!(
        (refused.status, refused.code().as_str()),
        (503, "too_many_subscribers")
    );
    // Gone subscribers give their places back promptly.
    drop(subscribers);
    let started = Instant::now();
    loop {
        let (_stream, answer) = subscribe(server.api);
        if answer.status == 200 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "places not given back: {answer:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Asks the server to reload its rules.
fn reload(server: &Server) -> Answer {
    exchange(
        server.api,
        &request("POST", "/v1/rules/reload", &[], b""),
        WAIT,
    )
    .unwrap()
}

#[test]
fn reload_errors_name_the_file_but_never_echo_it() {
    let server = Server::start(&[]);
    let secret = server.dir.join("shadow.txt");
    std::fs::write(&secret, "root:hunter2-not-yara:19000:0:99999:7:::\n").unwrap();
    std::fs::write(
        server.dir.join("evil.yar"),
        format!("include \"{}\"\n", secret.display()),
    )
    .unwrap();
    let answer = reload(&server);
    assert_eq!(
        (answer.status, answer.code().as_str()),
        (400, "bad_rules"),
        "{answer:?}"
    );
    assert!(
        !answer.body.contains("hunter2"),
        "the file's content echoed: {answer:?}"
    );
    assert!(
        answer.body.contains("shadow.txt"),
        "the file is named: {answer:?}"
    );

    // A reload to no rule at all is refused; the rules in force stay.
    std::fs::remove_file(server.dir.join("evil.yar")).unwrap();
    std::fs::write(server.dir.join("rules.yar"), "// nothing\n").unwrap();
    let answer = reload(&server);
    assert_eq!(
        (answer.status, answer.code().as_str()),
        (400, "empty_rules"),
        "{answer:?}"
    );
    let id = Uuid::new_v4();
    exchange(
        server.api,
        &request("POST", &format!("/v1/streams/{id}/chunks"), &[], b"secret"),
        WAIT,
    )
    .unwrap();
    let results = exchange(
        server.api,
        &request("GET", &format!("/v1/streams/{id}"), &[], b""),
        WAIT,
    )
    .unwrap();
    assert!(results.body.contains("\"secret\""), "{results:?}");
}

/// Sends bulk requests of many tiny frames (each chunk is one sample of
/// the scan-latency histogram) for `seconds`.
fn bulk_load(url: &str, seconds: u64) -> u64 {
    let ids: Vec<Uuid> = (0..500).map(|_| Uuid::new_v4()).collect();
    let body =
        yaraflow::service::framing::encode((0..4000).map(|n| (ids[n % ids.len()], &b"....."[..])));
    let agent = ureq::AgentBuilder::new().timeout(WAIT).build();
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut sent = 0;
    while Instant::now() < until {
        agent.post(url).send_bytes(&body).expect("a bulk request");
        sent += 1;
    }
    sent
}

/// Histogram samples of chunks (about 8 bytes each) piled up between
/// scrapes: without the upkeep thread, the peak grows by about 130 to 160
/// MB from one 12-second window to the next at this load (a debug build,
/// measured by taking the thread out). With it, memory plateaus once the
/// allocator's arenas have filled (samples of up to one upkeep period are
/// pending at any time, and the allocator keeps that much): the peaks of
/// the two windows after a warm-up usually differ by about 1 MB, but a slow
/// machine may still be filling its arenas in the last window (12 MB seen
/// on CI, on its way to the same 136 MB plateau). The bound, 40 MB, sits
/// between the two. RSS is sampled all along and peaks are compared
/// because a single reading lands at a random phase of the upkeep and of
/// the allocator's trimming, which made a two-reading version flaky (33 MB
/// apart on one CI machine).
#[test]
fn memory_stays_flat_under_load_with_no_scraper() {
    // A small mailbox, so that the queued chunks (which cost far more than
    // their bytes) stay bounded and the test sees the metrics alone.
    let config = temp_dir().join("engine.json");
    std::fs::write(
        &config,
        r#"{"shards": 1, "mailbox_messages": 4, "mailbox_bytes": 1048576}"#,
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let server = Server::start(&["--max-body-bytes", "1000000", "--config", config]);
    // A warm-up while the allocator's arenas fill, then two windows.
    let windows = [16, 12, 12];
    let peaks: Vec<u64> = std::thread::scope(|scope| {
        let url = server.url("/v1/chunks");
        let load = scope.spawn(move || bulk_load(&url, windows.iter().sum()));
        let started = Instant::now();
        let mut peaks = vec![0; windows.len()];
        while !load.is_finished() {
            let elapsed = started.elapsed().as_secs();
            let at = windows
                .iter()
                .scan(0, |end, w| {
                    *end += w;
                    Some(*end)
                })
                .position(|end| elapsed < end)
                .unwrap_or(windows.len() - 1);
            peaks[at] = peaks[at].max(server.rss_kib());
            std::thread::sleep(Duration::from_millis(200));
        }
        eprintln!("{} bulk requests of 4000 chunks", load.join().unwrap());
        peaks
    });
    eprintln!("peak RSS in windows of {windows:?} s of load: {peaks:?} KiB");
    let growth = peaks[2].saturating_sub(peaks[1]);
    assert!(
        growth < 40 * 1024,
        "peak RSS grew by {growth} KiB from one window to the next with nobody scraping /metrics"
    );
}

/// A client that pipelines thousands of requests and never reads the
/// answers fills its own socket buffers and stalls only itself: other
/// clients are served meanwhile, and the server goes on after it leaves.
#[test]
fn a_client_that_pipelines_without_reading_stalls_only_itself() {
    let server = Server::start(&["--shards", "1"]);
    let mut hog = TcpStream::connect(server.api).unwrap();
    hog.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let chunk = [b'x'; 2048];
    let path = format!("/v1/streams/{}/chunks", Uuid::new_v4());
    let one = request("POST", &path, &[], &chunk);
    // 100 MB of requests: far more than the socket buffers hold, so the
    // server must stop reading this client (its writes then block until
    // the timeout, or fail when the server closes the connection).
    let writer = std::thread::spawn(move || {
        let mut sent = 0;
        let mut stopped = None;
        while sent < 50_000 {
            if let Err(error) = hog.write_all(&one) {
                stopped = Some(error.kind());
                break;
            }
            sent += 1;
        }
        (hog, sent, stopped)
    });
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..20 {
        let answer = exchange(server.api, &request("GET", "/healthz", &[], b""), WAIT);
        assert_eq!(answer.map(|a| a.status), Some(200), "{}", server.stderr());
    }
    let (hog, sent, stopped) = writer.join().unwrap();
    eprintln!("the client pipelined {sent} requests before its writes stopped ({stopped:?})");
    // Its writes stop when the buffers are full (a timeout) or when the
    // server lets it go (the connection reset or its pipe broken, its
    // answers marked `connection: close`); how many went before depends on
    // the machine's load and buffer sizes (a timeout after about 22,000 on
    // an idle machine; let go after 2 to 10,000 under CI's load), so only
    // "some but not all" is asserted.
    let let_go = matches!(
        stopped,
        Some(std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset)
    );
    let fewest = if let_go { 1 } else { 100 };
    assert!(
        (fewest..50_000).contains(&sent),
        "the server read {sent} of 50,000 requests of a client that reads nothing ({stopped:?})"
    );
    drop(hog);
    let answer = exchange(server.api, &request("GET", "/readyz", &[], b""), WAIT);
    assert_eq!(answer.map(|a| a.status), Some(200), "{}", server.stderr());
}
