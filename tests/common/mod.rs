//! Shared helpers of the integration tests: the reference verdicts (what
//! YARA-X itself says about the same bytes) and a comparable form of ours.

#![allow(dead_code)]

use yaraflow::{RuleSet, StreamResults};

/// A verdict reduced to what the contract compares: per matching rule, per
/// pattern, the (offset, length) of every match.
pub type Verdict = Vec<(String, Vec<(String, Vec<(u64, usize)>)>)>;

fn keep(rules: &RuleSet, identifier: &str) -> bool {
    rules.is_exact("default", identifier)
}

/// Most rule sets [`unchanged`] keeps compiled on a thread.
const MAX_UNCHANGED: usize = 16;

/// Compiled rule sets, by fingerprint.
type RulesCache =
    std::cell::RefCell<std::collections::HashMap<[u8; 32], std::rc::Rc<yara_x::Rules>>>;

thread_local! {
    /// The rule sets' sources compiled as they are, by fingerprint.
    static UNCHANGED: RulesCache = Default::default();
    /// The same without the rule that forces the search.
    static UNSEARCHED: RulesCache = Default::default();
}

/// The rules as YARA-X compiles the sources the user wrote: not the rule
/// set's own compiled rules, in which `filesize` and header reads are
/// rewritten into values the scanner sets (the references must not depend
/// on that rewrite).
///
/// One private rule is added, in a namespace of its own, evaluated first:
/// it counts a pattern's matches, so YARA-X always searches. YARA-X
/// searches only when a condition reaches a pattern: when every rule is
/// decided by header reads, `filesize` or externals, it lists no match,
/// even for a matching rule whose patterns are in the data. A stream's
/// verdict lists them (README, "What a verdict lists").
pub fn unchanged(rules: &RuleSet) -> std::rc::Rc<yara_x::Rules> {
    cached(&UNCHANGED, rules, compile_searching)
}

/// The rules exactly as YARA-X compiles the sources the user wrote: what
/// a whole-buffer verdict of a retaining stream scans with (it lists what
/// YARA-X lists, README, "What a verdict lists").
pub fn unsearched(rules: &RuleSet) -> std::rc::Rc<yara_x::Rules> {
    cached(&UNSEARCHED, rules, |rules| {
        rules.compile_unchanged().expect("the sources compile")
    })
}

/// `rules` compiled by `compile`, kept in `cache`.
fn cached(
    cache: &'static std::thread::LocalKey<RulesCache>,
    rules: &RuleSet,
    compile: fn(&RuleSet) -> yara_x::Rules,
) -> std::rc::Rc<yara_x::Rules> {
    cache.with(|cache| {
        let mut cache = cache.borrow_mut();
        // A property test compiles new rules for each case: a cache that
        // kept them all held about 0.7 MB per case, and a run of 20,000
        // cases was killed for want of memory (24 GiB).
        if cache.len() >= MAX_UNCHANGED && !cache.contains_key(&rules.fingerprint()) {
            cache.clear();
        }
        cache
            .entry(rules.fingerprint())
            .or_insert_with(|| std::rc::Rc::new(compile(rules)))
            .clone()
    })
}

fn compile_searching(rules: &RuleSet) -> yara_x::Rules {
    use yaraflow::ExternalValue;
    let mut compiler = yara_x::Compiler::new();
    compiler.new_namespace("reference_search");
    compiler
        .add_source(r#"private rule search { strings: $a = "a" condition: #a >= 0 }"#)
        .unwrap();
    compiler.new_namespace("default");
    for external in rules.externals() {
        let name = external.name.as_str();
        match &external.value {
            ExternalValue::Bool(b) => compiler.define_global(name, *b),
            ExternalValue::Integer(i) => compiler.define_global(name, *i),
            ExternalValue::Float(f) => compiler.define_global(name, *f),
            ExternalValue::String(s) => compiler.define_global(name, s.as_str()),
        }
        .expect("an external of the rule set");
    }
    for (origin, text) in rules.sources() {
        let code = yara_x::SourceCode::from(text.as_str()).with_origin(origin.as_str());
        compiler.add_source(code).expect("the sources compile");
    }
    compiler.build()
}

/// Whole-buffer YARA-X scan of `data`, restricted to supported rules.
pub fn reference(rules: &RuleSet, data: &[u8]) -> Verdict {
    scan_supported(rules, &unchanged(rules), data)
}

/// Whole-buffer YARA-X scan of `data` as YARA-X lists it (no forced
/// search), restricted to supported rules: the reference of a verdict that
/// is a whole-buffer scan of a retaining stream's bytes.
pub fn reference_unsearched(rules: &RuleSet, data: &[u8]) -> Verdict {
    scan_supported(rules, &unsearched(rules), data)
}

/// A whole-buffer scan of `data` with `compiled` (`rules`' sources),
/// restricted to `rules`' supported rules.
fn scan_supported(rules: &RuleSet, compiled: &yara_x::Rules, data: &[u8]) -> Verdict {
    let mut scanner = yara_x::Scanner::new(compiled);
    let results = scanner.scan(data).expect("reference scan");
    verdict_of(rules, &results)
}

/// Whole-buffer YARA-X scan of `data`, every rule (whole-data ones too).
pub fn reference_all(rules: &RuleSet, data: &[u8]) -> Verdict {
    reference_all_with(rules, &[], data)
}

/// [`reference_all`], with the values of some externals set first (a
/// stream's own: a file's name, say).
pub fn reference_all_with(
    rules: &RuleSet,
    externals: &[yaraflow::External],
    data: &[u8],
) -> Verdict {
    use yaraflow::ExternalValue;
    let compiled = unchanged(rules);
    let mut scanner = yara_x::Scanner::new(&compiled);
    for external in externals {
        let name = external.name.as_str();
        match &external.value {
            ExternalValue::Bool(b) => scanner.set_global(name, *b),
            ExternalValue::Integer(i) => scanner.set_global(name, *i),
            ExternalValue::Float(f) => scanner.set_global(name, *f),
            ExternalValue::String(s) => scanner.set_global(name, s.as_str()),
        }
        .expect("the rules declare it");
    }
    let results = scanner.scan(data).expect("reference scan");
    verdict_where(&results, |_| true)
}

fn verdict_of(rules: &RuleSet, results: &yara_x::ScanResults<'_, '_>) -> Verdict {
    verdict_where(results, |identifier| keep(rules, identifier))
}

fn verdict_where(results: &yara_x::ScanResults<'_, '_>, keep: impl Fn(&str) -> bool) -> Verdict {
    let mut verdict: Verdict = results
        .matching_rules()
        .filter(|r| keep(r.identifier()))
        .map(|r| {
            let patterns = r
                .patterns()
                .map(|p| {
                    (
                        p.identifier().to_string(),
                        p.matches()
                            .map(|m| (m.range().start as u64, m.range().len()))
                            .collect(),
                    )
                })
                .collect();
            (r.identifier().to_string(), patterns)
        })
        .collect();
    verdict.sort();
    verdict
}

/// Each line scanned as its own block at its offset (the line-mode
/// contract), with one condition evaluation over all of them.
pub fn reference_lines(rules: &RuleSet, lines: &[Vec<u8>]) -> Verdict {
    let compiled = unchanged(rules);
    let mut scanner = yara_x::blocks::Scanner::new(&compiled);
    let mut offset = 0;
    for line in lines {
        scanner.scan(offset, line).expect("line scan");
        offset += line.len();
    }
    // An empty block after the lines: `finish()` without any `scan()` panics
    // in YARA-X 1.22. (Before the lines, at offset 0, it would apply header
    // constraints to empty data.)
    scanner.scan(offset, b"").expect("empty block");
    let results = scanner.finish().expect("finish");
    verdict_of(rules, &results)
}

/// Our verdict in the same form.
pub fn ours(rules: &RuleSet, results: &StreamResults) -> Verdict {
    ours_where(results, |identifier| keep(rules, identifier))
}

/// Our verdict of every rule, in the same form.
pub fn ours_all(results: &StreamResults) -> Verdict {
    ours_where(results, |_| true)
}

fn ours_where(results: &StreamResults, keep: impl Fn(&str) -> bool) -> Verdict {
    let mut verdict: Verdict = results
        .rules
        .iter()
        .filter(|r| keep(&r.identifier))
        .map(|r| {
            let patterns = r
                .patterns
                .iter()
                .map(|p| {
                    (
                        p.identifier.clone(),
                        p.matches.iter().map(|m| (m.offset, m.length)).collect(),
                    )
                })
                .collect();
            (r.identifier.clone(), patterns)
        })
        .collect();
    verdict.sort();
    verdict
}

/// The verdict of one JSON line the CLI printed, in the same form,
/// restricted to supported rules (as [`reference`]).
pub fn printed(rules: &RuleSet, line: &serde_json::Value) -> Verdict {
    printed_where(line, |identifier| keep(rules, identifier))
}

/// The verdict of one JSON line the CLI printed, every rule (as
/// [`reference_all`]).
pub fn printed_all(line: &serde_json::Value) -> Verdict {
    printed_where(line, |_| true)
}

fn printed_where(line: &serde_json::Value, keep: impl Fn(&str) -> bool) -> Verdict {
    let mut verdict: Verdict = line["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| keep(r["identifier"].as_str().unwrap()))
        .map(|r| {
            let patterns = r["patterns"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    let matches = p["matches"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|m| {
                            (
                                m["offset"].as_u64().unwrap(),
                                m["length"].as_u64().unwrap() as usize,
                            )
                        })
                        .collect();
                    (p["identifier"].as_str().unwrap().to_string(), matches)
                })
                .collect();
            (r["identifier"].as_str().unwrap().to_string(), patterns)
        })
        .collect();
    verdict.sort();
    verdict
}

/// Whether tshark is installed. When it is not, a test skips what needs
/// it (saying `what` on stderr), unless `YARAFLOW_REQUIRE_TSHARK` is set
/// (`.ci/run` sets it): then it fails.
pub fn tshark_installed(what: &str) -> bool {
    tool_installed("tshark", "YARAFLOW_REQUIRE_TSHARK", what)
}

/// Whether `program` runs (`program --version`). When it does not, a test
/// skips what needs it (saying `what` on stderr), unless the environment
/// variable `required` is set (`.ci/run` sets it): then it fails.
pub fn tool_installed(program: &str, required: &str, what: &str) -> bool {
    let found = std::process::Command::new(program)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok();
    if !found {
        assert!(
            std::env::var_os(required).is_none(),
            "{program} is required ({required} is set) but not installed"
        );
        eprintln!("{program} not installed: {what} (skipped)");
    }
    found
}

/// A free loopback port (for a server a test starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Compiles rules with the default window cap.
pub fn compile(src: &str) -> RuleSet {
    RuleSet::from_source(src, yaraflow::ScannerConfig::default().max_pattern_len)
        .expect("rules compile")
}

/// Compiles rules with the default options, or `None` when YARA-X rejects
/// them.
pub fn compile_opt(src: &str) -> Option<RuleSet> {
    RuleSet::from_source(src, yaraflow::ScannerConfig::default().max_pattern_len).ok()
}

/// Compiles rules for the tests of the stream search, or `None` when
/// YARA-X rejects them (random rule sets sometimes combine modifiers
/// YARA-X refuses). Dense rules are searched chunk by chunk like the
/// others (`RuleOptions::whole_scan_dense` off): streams that retain their
/// bytes for them would bypass the search these tests check (retention
/// for dense rules has tests of its own, in `whole_data.rs`).
pub fn compile_searched(src: &str) -> Option<RuleSet> {
    let options = yaraflow::RuleOptions {
        whole_scan_dense: false,
        ..yaraflow::RuleOptions::new(yaraflow::ScannerConfig::default().max_pattern_len)
    };
    RuleSet::from_sources_with(vec![("<string>".into(), src.into())], &options).ok()
}

/// A service on ephemeral loopback ports with the bundled rules, two
/// shards, per-rule metrics and a 5 ms batch delay (the dashboard tests').
#[cfg(feature = "service")]
pub fn start_bundled_service() -> yaraflow::service::Service {
    use yaraflow::service::{Service, ServiceConfig};
    let config = ServiceConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        metrics_listen: Some(([127, 0, 0, 1], 0).into()),
        rule_paths: vec!["data/rules".into()],
        engine: yaraflow::EngineConfig {
            shards: 2,
            rule_metrics: true,
            scanner: yaraflow::ScannerConfig {
                max_batch_delay: std::time::Duration::from_millis(5),
                ..yaraflow::ScannerConfig::default()
            },
            ..yaraflow::EngineConfig::default()
        },
        ..ServiceConfig::default()
    };
    let rules = RuleSet::from_paths(&["data/rules"], 1024).unwrap();
    Service::start(rules, config).expect("service starts")
}

/// The PromQL of every panel target of the bundled Grafana dashboard (rows
/// included), with the title of its panel.
pub fn dashboard_panel_queries() -> Vec<(String, String)> {
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string("grafana/dashboards/yaraflow.json").unwrap())
            .unwrap();
    let mut queries = Vec::new();
    let mut panels: Vec<&serde_json::Value> =
        dashboard["panels"].as_array().unwrap().iter().collect();
    while let Some(panel) = panels.pop() {
        panels.extend(panel["panels"].as_array().into_iter().flatten());
        for target in panel["targets"].as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap().to_string();
            queries.push((title, target["expr"].as_str().unwrap().to_string()));
        }
    }
    queries
}

/// Metric names in a PromQL expression: identifiers that start with one of
/// the prefixes yaraflow's metrics have.
pub fn metric_names(expr: &str, names: &mut std::collections::BTreeSet<String>) {
    for prefix in ["yaraflow_", "process_"] {
        let mut rest = expr;
        while let Some(at) = rest.find(prefix) {
            let preceded = rest[..at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            if !preceded {
                names.insert(tail[..end].to_string());
            }
            rest = &tail[end..];
        }
    }
}

/// Every PromQL expression of the dashboard: panel targets (rows
/// included) and variable queries, with the panel title each comes from.
fn dashboard_queries() -> Vec<(String, String)> {
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string("grafana/dashboards/yaraflow.json").unwrap())
            .unwrap();
    let mut queries = dashboard_panel_queries();
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(query) = variable["query"]["query"].as_str() {
            queries.push((format!("variable {}", variable["name"]), query.to_string()));
        }
    }
    queries
}

/// The `expr:` of every alert rule (each on one line).
pub fn alert_queries() -> Vec<String> {
    std::fs::read_to_string("grafana/alerts.yml")
        .unwrap()
        .lines()
        .filter_map(|line| line.trim().strip_prefix("expr:"))
        .map(|expr| {
            let expr = expr.trim();
            assert!(
                !expr.is_empty() && expr != "|",
                "keep each expr on its line"
            );
            expr.to_string()
        })
        .collect()
}

/// Every metric name the dashboard's queries (panels and variables) and
/// the alert rules use.
pub fn dashboard_and_alert_metrics() -> std::collections::BTreeSet<String> {
    let mut used = std::collections::BTreeSet::new();
    for (_, expr) in dashboard_queries() {
        metric_names(&expr, &mut used);
    }
    for expr in alert_queries() {
        metric_names(&expr, &mut used);
    }
    used
}

/// Names of the series a `/metrics` URL exposes.
#[cfg(feature = "cli")]
pub fn exposed_metrics(url: &str) -> std::collections::BTreeSet<String> {
    let text = ureq::get(url).call().unwrap().into_string().unwrap();
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| line.split(['{', ' ']).next().unwrap().to_string())
        .collect()
}

/// Runs the `yaraflow` binary with `args`; its exit status and output.
#[cfg(feature = "cli")]
pub fn run_yaraflow(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_yaraflow"))
        .args(args)
        .output()
        .expect("run yaraflow")
}

/// The JSON lines a command printed on stdout.
pub fn json_lines(out: &std::process::Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A scratch folder for a stream store, in memory (`/dev/shm`) where the
/// machine has one. The store tests check what the store holds, not the
/// disk: their thousands of durable commits took minutes on a busy disk.
pub fn store_dir() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::tempdir_in(shm) {
            return dir;
        }
    }
    tempfile::tempdir().unwrap()
}

/// A property-test runner for tests that cost a second or more per case:
/// `PROPTEST_CASES` cases (`default` when unset), at most `cap`. The
/// `proptest!` macro applies `PROPTEST_CASES` over any configuration
/// given to it, so these tests run through this runner instead. Failing
/// cases are kept in (and replayed from) `regressions`, as `proptest!`
/// keeps them.
pub fn capped_runner(
    default: u32,
    cap: u32,
    regressions: &'static str,
) -> proptest::test_runner::TestRunner {
    use proptest::test_runner::{Config, FileFailurePersistence, TestRunner};
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(default)
        .min(cap);
    TestRunner::new(Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(regressions))),
        ..Config::default()
    })
}

/// Status and JSON body of an HTTP answer, errors included (`Null` for an
/// empty body; a body that is not JSON fails the test).
#[cfg(feature = "cli")]
pub fn answer(result: Result<ureq::Response, ureq::Error>) -> (u16, serde_json::Value) {
    let response = match result {
        Ok(response) => response,
        Err(ureq::Error::Status(_, response)) => response,
        Err(other) => panic!("transport error: {other}"),
    };
    let status = response.status();
    let text = response.into_string().unwrap();
    let json = if text.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    };
    (status, json)
}

/// The same pseudo-random numbers on every machine (xorshift64), for tests
/// that draw many cases of their own.
pub fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    }
}
