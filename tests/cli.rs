//! The `yaraflow scan` command on the bundled rules and samples: every
//! way of feeding the files gives YARA-X's own verdict for each file.

mod common;

use std::process::Command;

use yaraflow::RuleSet;

fn samples() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir("data/samples")
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    files.sort();
    files
}

#[test]
fn scan_prints_the_whole_buffer_verdict_of_every_file() {
    let rules = RuleSet::from_paths(&["data/rules"], 1024).unwrap();
    let files = samples();
    for extra in [
        &[][..],
        &["--interleave"],
        &["--interleave", "--random-chunks", "7"],
        &["--chunk-size", "1"],
    ] {
        let mut args = vec!["scan", "--rules", "data/rules"];
        args.extend_from_slice(extra);
        args.extend(files.iter().map(String::as_str));
        let out = common::run_yaraflow(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines = common::json_lines(&out);
        assert_eq!(lines.len(), files.len());
        for line in &lines {
            let file = line["file"].as_str().unwrap();
            let data = std::fs::read(file).unwrap();
            assert_eq!(line["bytes"].as_u64().unwrap(), data.len() as u64);
            assert_eq!(
                common::printed(&rules, line),
                common::reference(&rules, &data),
                "{file} with {extra:?}"
            );
        }
        let matched: usize = lines
            .iter()
            .map(|l| l["rules"].as_array().unwrap().len())
            .sum();
        assert!(matched >= 6, "the samples exercise the bundled rules");
    }
}

#[test]
fn scan_reads_standard_input_for_a_dash() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_yaraflow"))
        .args(["scan", "--rules", "data/rules", "--lines", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"GET / HTTP/1.1\r\nAuthorization: Basic YWRtaW46aHVudGVyMg==\r\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["file"], "-");
    assert_eq!(line["rules"][0]["identifier"], "http_basic_auth");
    assert_eq!(line["lines"], 2);
}

#[test]
fn bench_json_has_every_figure_for_every_contender() {
    let out = common::run_yaraflow(&[
        "bench",
        "--streams",
        "300",
        "--synthetic-rules",
        "20",
        "--shards",
        "1,2",
        "--blocks-cap",
        "40",
        "--match-fraction",
        "0.3",
        "--json",
        "--hop",
        "--rounds",
        "3",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for field in ["streams", "chunk_size", "rules", "bytes"] {
        assert!(!report[field].is_null(), "{field}");
    }
    let contenders = report["contenders"].as_array().unwrap();
    let names: Vec<&str> = contenders
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 6, "{names:?}");
    for contender in contenders {
        assert_eq!(
            contender["verdicts_equal_whole_buffer"], true,
            "{contender}"
        );
        assert!(contender["mb_per_s"].as_f64().unwrap() > 0.0);
        for field in [
            "ratio_to_whole_buffer",
            "rss_bytes_per_stream",
            "open_ns_per_stream",
            "close_ns_per_stream",
            "p99_chunk_latency_us",
        ] {
            assert!(contender.get(field).is_some(), "{field} in {contender}");
        }
    }
    assert_eq!(contenders[2]["streams"], 40, "blocks scanners are capped");
    let scanner = contenders
        .iter()
        .find(|c| c["name"].as_str().unwrap().contains("multi-stream scanner"))
        .unwrap();
    assert!(scanner["bulk_close_ns_per_stream"].as_f64().unwrap() > 0.0);
    assert!(report["actor_hop"]["query_round_trip_us"].as_f64().unwrap() > 0.0);
    let rounds = &report["scanner_rounds"];
    let ratios: Vec<f64> = rounds["ratios"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_f64().unwrap())
        .collect();
    assert_eq!(ratios.len(), 3, "{rounds}");
    let median = rounds["median"].as_f64().unwrap();
    assert!(ratios.iter().all(|&r| r > 0.0), "{rounds}");
    assert!(
        ratios.contains(&median),
        "the median of 3 is one of them: {rounds}"
    );
    assert_eq!(rounds["verdicts_equal"], true);
}

/// Real rules' atoms hit text differently from random bytes: the HTTP
/// workload runs, says so, and every contender agrees with YARA-X on it.
#[test]
fn bench_runs_on_http_traffic_and_reports_the_rule_classes() {
    let out = common::run_yaraflow(&[
        "bench",
        "--streams",
        "200",
        "--rules",
        "data/rules",
        "--workload",
        "http",
        "--shards",
        "1",
        "--blocks-cap",
        "0",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["traffic"], "http");
    assert_eq!(report["rule_sets"], serde_json::json!(["rules"]));
    let rules = RuleSet::from_paths(&["data/rules"], 1024).unwrap();
    let exact = rules
        .analysis()
        .rules
        .iter()
        .filter(|r| r.supported)
        .count();
    let classes = &report["rule_classes"];
    assert_eq!(classes["stream_exact"], exact);
    assert_eq!(
        classes["whole_data_gated"].as_u64().unwrap()
            + classes["whole_data_ungated"].as_u64().unwrap(),
        (rules.analysis().rules.len() - exact) as u64
    );
    for contender in report["contenders"].as_array().unwrap() {
        assert_eq!(
            contender["verdicts_equal_whole_buffer"], true,
            "{contender}"
        );
    }
}

#[test]
fn bench_store_evicts_restores_and_keeps_every_stream() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("bench.redb");
    let out = common::run_yaraflow(&[
        "bench-store",
        "--streams",
        "3000",
        "--synthetic-rules",
        "20",
        "--max-resident-bytes",
        "200KiB",
        "--sample",
        "200",
        "--shards",
        "2",
        "--json",
        "--store",
        store.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let field = |name: &str| report[name].as_u64().unwrap_or_else(|| panic!("{name}"));
    assert_eq!(field("streams"), 3000);
    assert!(field("stored_streams") > 1000, "{report}");
    assert_eq!(field("stored_streams") + field("resident_streams"), 3000);
    assert_eq!(field("verdicts_checked"), 400);
    assert_eq!(field("verdicts_differing"), 0);
    assert_eq!(field("kept_streams"), 2600);
    assert_eq!(field("restarted_streams"), 2600);
    assert!(!store.exists(), "the bench removes its store");
}

/// Issue 14: a rule nested deeper than YARA-X parses was dropped in
/// silence (exit 0, "1 rules"); it must fail loudly, naming where.
#[test]
fn check_refuses_a_rule_nested_too_deeply_naming_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deep.yar");
    let depth = 10_000;
    let text = format!(
        "rule ok {{ condition: true }}\nrule deep {{ condition: {}true{} }}\n",
        "(".repeat(depth),
        ")".repeat(depth)
    );
    std::fs::write(&path, text).unwrap();
    let out = common::run_yaraflow(&["check", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("deep.yar:2"), "{stderr}");
    assert!(stderr.contains("nest"), "{stderr}");
}

/// Issue 14: the flow table's bounds end directions early, and say so.
#[test]
fn pcap_bounds_its_flow_table_and_counts_what_ended_early() {
    let out = common::run_yaraflow(&["pcap", "--max-flows", "1", "data/pcap/lossy-link.pcap"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let ends: Vec<String> = common::json_lines(&out)
        .iter()
        .map(|l| l["flow"]["end"].as_str().unwrap().to_string())
        .collect();
    let evicted = ends.iter().filter(|e| *e == "evicted").count();
    assert!(evicted > 0, "{ends:?}");
    assert!(stderr.contains(&format!("{evicted} evicted")), "{stderr}");
    // In capture time: the lossy capture spans seconds, so a 1 ms idle
    // timeout ends directions between their segments.
    let out = common::run_yaraflow(&[
        "pcap",
        "--flow-idle-timeout",
        "1ms",
        "data/pcap/lossy-link.pcap",
    ]);
    let lines = common::json_lines(&out);
    assert!(lines.iter().any(|l| l["flow"]["end"] == "idle"));
}

/// The checks for rules YARA-X would drop (nesting, a parser that stops
/// early) must not refuse what real rule sets hold: each set of
/// `../shared/rules` loads whole. Skipped, saying so, when it is absent.
#[test]
fn real_rule_sets_load_whole() {
    let sets = [
        ("bartblaze", 134),
        ("reversinglabs", 1204),
        ("yara-rules", 12670),
    ];
    for (set, rules) in sets {
        let path = format!("../shared/rules/{set}");
        if !std::path::Path::new(&path).exists() {
            eprintln!("skipped: {path} is absent (real rule sets are not part of the repository)");
            continue;
        }
        let loaded = RuleSet::from_paths(&[&path], 1024).unwrap();
        assert_eq!(loaded.rules().iter().count(), rules, "{set}");
    }
}

/// Rules that read external variables load with `--define` (and without
/// it fail, saying how to define them); `scan` uses the values, sets the
/// file externals of each file's path but for those defined, and `check`
/// prints the rule classes and gates.
#[test]
fn externals_are_defined_on_the_command_line() {
    let dir = std::env::temp_dir().join(format!("yaraflow-externals-{}", yaraflow::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let rules = dir.join("ext.yar");
    std::fs::write(
        &rules,
        "import \"math\"\n\
         rule named { condition: filename == \"x.exe\" and size_limit > 3 }\n\
         rule mz { condition: uint16(0) == 0x5A4D and math.entropy(0, filesize) >= 0 }\n\
         rule by_path { condition: extension == \".bin\" and filepath endswith \"/sample.bin\" }\n",
    )
    .unwrap();
    let sample = dir.join("sample.bin");
    std::fs::write(&sample, b"MZ and more").unwrap();
    let (rules, sample) = (rules.to_str().unwrap(), sample.to_str().unwrap());
    let out = common::run_yaraflow(&["check", rules]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("--define NAME=VALUE"), "{stderr}");
    let defines = ["--define", "filename=x.exe", "-d", "size_limit=10"];
    let out =
        common::run_yaraflow(&[&["scan", "--rules", rules][..], &defines, &[sample]].concat());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = &common::json_lines(&out)[0];
    let matched: Vec<&str> = line["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["identifier"].as_str().unwrap())
        .collect();
    // `filename` is the one defined, not the file's; the others are the
    // file's own.
    assert_eq!(matched, ["named", "mz", "by_path"]);
    assert_eq!(line["whole_data"]["state"], "scanned");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "3 rules: 2 stream-exact, 1 whole-data with a gate, 0 whole-data without a gate"
        ),
        "{stderr}"
    );
    let out = common::run_yaraflow(&[&["check", rules][..], &defines].concat());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(r#"gate: [{"header":[[{"offset":0,"bytes":"4d5a"}]]}]"#),
        "{stdout}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--max-flows` holds whatever the number of flow threads: they share it
/// out, and a bound too small to share runs on one thread, where it is
/// exact.
#[test]
fn pcap_max_flows_holds_with_many_flow_threads() {
    let evicted = |threads: &str| {
        let args = ["pcap", "--max-flows", "2", "--flow-threads", threads];
        let capture = "data/pcap/objects-loopback.pcapng";
        let out = common::run_yaraflow(&[&args[..], &[capture]].concat());
        assert!(out.status.success());
        let lines = common::json_lines(&out);
        lines
            .iter()
            .filter(|l| l["flow"]["end"] == "evicted")
            .count()
    };
    let one = evicted("1");
    assert!(one > 0);
    assert_eq!(evicted("8"), one);
}

/// `yaraflow pcap CAPTURE | head`: when the output's reader goes away,
/// the program stops quietly, with success, as `grep` does.
#[test]
fn pcap_stops_quietly_when_its_output_is_closed() {
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_yaraflow"))
        .args(["pcap", "--quiet", "data/pcap/lossy-link.pcap"])
        .args([
            "data/pcap/http-loopback.pcapng",
            "data/pcap/objects-loopback.pcapng",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Closed before the first line is written.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("error"), "{stderr}");
}
