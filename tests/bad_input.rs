//! Bad input gets a typed error naming the problem, never a panic, and
//! leaves every other stream as it was.

mod common;

use common::{compile, ours, reference};
use yaraflow::{
    MultiStreamScanner, RuleError, RuleIssue, RuleSet, ScanError, ScannerConfig, StreamMode, Uuid,
};

fn rules() -> RuleSet {
    compile(r#"rule r { strings: $a = "abc" condition: $a }"#)
}

/// A scanner with one healthy stream holding half a match.
fn with_bystander(rules: &RuleSet, config: ScannerConfig) -> (MultiStreamScanner<'_>, Uuid) {
    let mut scanner = MultiStreamScanner::new(rules, config);
    let bystander = Uuid::new_v4();
    scanner.scan_chunk(bystander, b"xxab").unwrap();
    (scanner, bystander)
}

fn assert_bystander_intact(rules: &RuleSet, scanner: &mut MultiStreamScanner<'_>, bystander: Uuid) {
    scanner.scan_chunk(bystander, b"cxx").unwrap();
    let results = scanner.close_stream(&bystander).unwrap().unwrap();
    assert_eq!(ours(rules, &results), reference(rules, b"xxabcxx"));
    assert_eq!(results.rules.len(), 1);
}

#[test]
fn unknown_and_closed_streams() {
    let rules = rules();
    let (mut scanner, bystander) = with_bystander(&rules, ScannerConfig::default());
    let unknown = Uuid::new_v4();
    assert!(scanner.get_matches(&unknown).unwrap().is_none());
    assert!(scanner.close_stream(&unknown).unwrap().is_none());
    assert!(
        matches!(scanner.reset_stream(&unknown), Err(ScanError::UnknownStream(id)) if id == unknown)
    );
    let closed = Uuid::new_v4();
    scanner.scan_chunk(closed, b"abc").unwrap();
    scanner.close_stream(&closed).unwrap();
    assert!(scanner.get_matches(&closed).unwrap().is_none());
    assert!(scanner.close_stream(&closed).unwrap().is_none());
    assert!(scanner.stream_stats(&closed).is_none());
    assert_bystander_intact(&rules, &mut scanner, bystander);
}

#[test]
fn empty_chunks_change_nothing() {
    let rules = rules();
    let (mut scanner, bystander) = with_bystander(&rules, ScannerConfig::default());
    let before = scanner.stream_stats(&bystander).unwrap().clone();
    scanner.scan_chunk(bystander, b"").unwrap();
    assert_eq!(scanner.stream_stats(&bystander).unwrap(), &before);
    let fresh = Uuid::new_v4();
    scanner.scan_chunk(fresh, b"").unwrap();
    let results = scanner.close_stream(&fresh).unwrap().unwrap();
    assert_eq!(
        (
            results.stats.bytes,
            results.stats.chunks,
            results.rules.len()
        ),
        (0, 0, 0)
    );
    assert_bystander_intact(&rules, &mut scanner, bystander);
}

#[test]
fn oversized_chunks_are_refused() {
    let rules = rules();
    let config = ScannerConfig {
        max_chunk_bytes: 8,
        ..ScannerConfig::default()
    };
    let (mut scanner, bystander) = with_bystander(&rules, config);
    let err = scanner.scan_chunk(bystander, &[b'c'; 9]).unwrap_err();
    assert!(
        matches!(
            err,
            ScanError::ChunkTooLarge {
                len: 9,
                limit: 8,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("exceeds the limit of 8 bytes"));
    assert!(scanner.scan_line(Uuid::new_v4(), &[b'x'; 9]).is_err());
    assert_bystander_intact(&rules, &mut scanner, bystander);
}

#[test]
fn too_many_streams_are_refused() {
    let rules = rules();
    let config = ScannerConfig {
        max_open_streams: 2,
        ..ScannerConfig::default()
    };
    let (mut scanner, bystander) = with_bystander(&rules, config);
    scanner.scan_chunk(Uuid::new_v4(), b"x").unwrap();
    let err = scanner.scan_chunk(Uuid::new_v4(), b"x").unwrap_err();
    assert!(
        matches!(err, ScanError::TooManyStreams { limit: 2, .. }),
        "{err}"
    );
    assert_bystander_intact(&rules, &mut scanner, bystander);
}

#[test]
fn one_mode_per_stream() {
    let rules = rules();
    let (mut scanner, bystander) = with_bystander(&rules, ScannerConfig::default());
    let err = scanner.scan_line(bystander, b"abc").unwrap_err();
    assert!(
        matches!(
            err,
            ScanError::ModeMismatch {
                opened: "chunk",
                attempted: "line",
                ..
            }
        ),
        "{err}"
    );
    assert!(scanner.open_stream(bystander, StreamMode::Lines).is_err());
    assert_bystander_intact(&rules, &mut scanner, bystander);
}

#[test]
fn rules_using_modules_are_reported_unsupported() {
    let rules = compile(
        r#"import "pe"
           rule uses_pe { condition: pe.number_of_sections > 2 }
           rule plain { strings: $a = "x" condition: $a }"#,
    );
    let report = &rules.analysis().rules[0];
    assert!(!report.supported);
    assert_eq!(
        report.issues,
        vec![RuleIssue::UsesModule {
            module: "pe".into()
        }]
    );
    assert!(report.issues[0].to_string().contains("module `pe`"));
    assert!(rules.is_exact("default", "plain"));
}

#[test]
fn malformed_rules_name_the_problem() {
    let err = RuleSet::from_source("rule broken { condition: $missing }", 64).unwrap_err();
    assert!(matches!(err, RuleError::Compile(_)));
    assert!(err.to_string().contains("$missing"), "{err}");
}

use common::run_yaraflow as yaraflow;

#[test]
fn cli_rejects_bad_rules_with_file_and_line() {
    let dir = std::env::temp_dir().join(format!("yaraflow-bad-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.yar");
    std::fs::write(
        &path,
        "rule ok { condition: true }\nrule bad { condition: $nope }\n",
    )
    .unwrap();
    let out = yaraflow(&[
        "scan",
        "--rules",
        path.to_str().unwrap(),
        path.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("bad.yar:2"), "{stderr}");
    let out = yaraflow(&["check", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn cli_reports_unreadable_files_and_scans_the_rest() {
    let out = yaraflow(&[
        "scan",
        "--rules",
        "data/rules",
        "/nonexistent/file",
        "data/samples/app.log",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/file"));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
}

#[test]
fn cli_check_explains_inexact_rules() {
    let dir = std::env::temp_dir().join(format!("yaraflow-check-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("m.yara"),
        "import \"math\"\nrule m { condition: math.entropy(0, 10) > 7 }\n",
    )
    .unwrap();
    let out = yaraflow(&["check", dir.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(stdout.contains("whole    default:m"), "{stdout}");
    assert!(stdout.contains("no gate"), "{stdout}");
    assert!(stdout.contains("module `math`"), "{stdout}");
    let out = yaraflow(&["check", "--json", dir.to_str().unwrap()]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["rules"][0]["supported"], false);
    assert_eq!(json["classes"]["whole_data_ungated"], 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn cli_reports_files_it_cannot_scan_and_scans_the_rest() {
    let dir = std::env::temp_dir().join(format!("yaraflow-long-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let long = dir.join("long.log");
    let mut text = b"Authorization: Basic x\n".to_vec();
    text.extend(vec![b'x'; (16 << 20) + 10]);
    std::fs::write(&long, &text).unwrap();
    let out = yaraflow(&[
        "scan",
        "--lines",
        "--rules",
        "data/rules",
        long.to_str().unwrap(),
        "data/samples/app.log",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("long.log") && stderr.contains("exceeds the limit"),
        "{stderr}"
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    // The line before the long one was scanned and matched.
    assert_eq!(lines[0]["rules"][0]["identifier"], "http_basic_auth");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `yaraflow ARGS...` in `dir` (the crate's root if `None`), with a bound
/// on how long it may take.
fn run_in(dir: Option<&std::path::Path>, args: &[&str]) -> (Option<i32>, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_yaraflow"));
    command.args(args);
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    let out = command.output().expect("run yaraflow");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn scratch() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("yaraflow-settings-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn serve_refuses_settings_it_cannot_honour_with_the_remedy() {
    let dir = scratch();
    let rules = std::env::current_dir().unwrap().join("data/rules");
    let rules = rules.to_str().unwrap();
    let serve = |extra: &[&str]| {
        let mut args = vec!["serve", "--rules", rules, "--listen", "127.0.0.1:0"];
        args.extend_from_slice(&["--metrics-listen", "127.0.0.1:0"]);
        args.extend_from_slice(extra);
        run_in(None, &args)
    };
    // Far more shards than file handles or sense allow: refused, no panic.
    let (code, stderr) = serve(&["--shards", "100000"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--shards 100000") && stderr.contains("at most"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    // A window too small for exact verdicts.
    let (code, stderr) = serve(&["--max-pattern-len", "0"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("too small to keep verdicts exact"),
        "{stderr}"
    );
    // An empty token file would check nothing.
    let empty = dir.join("token");
    std::fs::write(&empty, "\n").unwrap();
    let (code, stderr) = serve(&["--token-file", empty.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("is empty"), "{stderr}");
    // A non-loopback address without a token.
    let (code, stderr) = run_in(None, &["serve", "--rules", rules, "--listen", "0.0.0.0:0"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--allow-no-token"), "{stderr}");
    // The default rules, missing from the current directory: where it
    // looked and what to pass.
    let (code, stderr) = run_in(Some(&dir), &["serve", "--listen", "127.0.0.1:0"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--rules") && stderr.contains(dir.to_str().unwrap()),
        "{stderr}"
    );
    // An address in use: its cause said once.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap().to_string();
    let (code, stderr) = run_in(
        None,
        &[
            "serve",
            "--rules",
            rules,
            "--listen",
            &listen,
            "--metrics-listen",
            "127.0.0.1:0",
        ],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains(&listen), "{stderr}");
    assert_eq!(stderr.matches("os error").count(), 1, "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn empty_rule_files_are_warned_about() {
    let dir = scratch();
    let empty = dir.join("empty.yar");
    std::fs::write(&empty, "").unwrap();
    let (code, stderr) = run_in(None, &["check", empty.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("warning: the rule file"), "{stderr}");
    assert!(stderr.contains("define no rule"), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}
