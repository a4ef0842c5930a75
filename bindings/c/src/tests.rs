//! The C API called as C calls it: statuses, messages, and results equal
//! to the Rust scanner's JSON.

use std::ffi::{c_char, CStr, CString};
use std::ptr::{null, null_mut};

use super::*;

const RULES: &str = r#"rule basic_auth { strings: $a = "Authorization: Basic" condition: $a }
rule named { condition: filename == "x.bin" }"#;

fn last_error() -> String {
    unsafe { CStr::from_ptr(yf_last_error()) }
        .to_str()
        .unwrap()
        .to_string()
}

fn compile(source: &str, externals: &[&str]) -> (YfStatus, *mut YfRules) {
    let source = CString::new(source).unwrap();
    let externals: Vec<CString> = externals
        .iter()
        .map(|e| CString::new(*e).unwrap())
        .collect();
    let pointers: Vec<*const c_char> = externals.iter().map(|e| e.as_ptr()).collect();
    let mut rules = null_mut();
    let status = unsafe {
        yf_rules_compile(
            source.as_ptr(),
            pointers.as_ptr(),
            pointers.len(),
            &mut rules,
        )
    };
    (status, rules)
}

/// Takes a JSON string from the API and frees it.
fn take(json: *mut c_char) -> serde_json::Value {
    assert!(!json.is_null());
    let value = serde_json::from_str(unsafe { CStr::from_ptr(json) }.to_str().unwrap()).unwrap();
    unsafe { yf_string_free(json) };
    value
}

#[test]
fn a_pattern_across_chunks_gives_the_rust_scanners_json() {
    let (status, rules) = compile(RULES, &["filename=x.bin"]);
    assert_eq!(status, YfStatus::Ok, "{}", last_error());
    let mut scanner = null_mut();
    assert_eq!(unsafe { yf_scanner_new(rules, &mut scanner) }, YfStatus::Ok);
    // The scanner keeps its own share of the rules.
    unsafe { yf_rules_free(rules) };
    let id = [7u8; 16];
    let chunks: [&[u8]; 2] = [
        b"GET / HTTP/1.1\r\nAuthorization: Ba",
        b"sic YWRtaW46aHVudGVyMg==\r\n",
    ];
    for chunk in chunks {
        let status =
            unsafe { yf_scanner_scan_chunk(scanner, id.as_ptr(), chunk.as_ptr(), chunk.len()) };
        assert_eq!(status, YfStatus::Ok);
    }
    let mut json = null_mut();
    assert_eq!(
        unsafe { yf_scanner_close_stream(scanner, id.as_ptr(), &mut json) },
        YfStatus::Ok
    );
    let got = take(json);

    // The same through the Rust library.
    let mut options = RuleOptions::new(ScannerConfig::default().max_pattern_len);
    options.externals = vec!["filename=x.bin".parse().unwrap()];
    let rules =
        RuleSet::from_sources_with(vec![("<string>".into(), RULES.into())], &options).unwrap();
    let mut reference = MultiStreamScanner::new(&rules, ScannerConfig::default());
    let uuid = Uuid::from_bytes(id);
    for chunk in chunks {
        reference.scan_chunk(uuid, chunk).unwrap();
    }
    let mut want = serde_json::to_value(reference.close_stream(&uuid).unwrap().unwrap()).unwrap();
    // Times differ between the two runs.
    for key in ["opened_at_ms", "last_seen_ms"] {
        want[key] = got[key].clone();
    }
    assert_eq!(got, want);
    let names: Vec<&str> = got["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["identifier"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["basic_auth", "named"]);
    assert_eq!(got["rules"][0]["patterns"][0]["matches"][0]["offset"], 16);
    unsafe { yf_scanner_free(scanner) };
}

#[test]
fn errors_are_codes_with_messages() {
    let (status, rules) = compile("rule broken { condition: $nope }", &[]);
    assert_eq!(status, YfStatus::Rules);
    assert!(rules.is_null());
    assert!(last_error().contains("$nope"), "{}", last_error());

    let (status, _) = compile(RULES, &["not an external"]);
    assert_eq!(status, YfStatus::InvalidArgument);
    assert!(last_error().contains("NAME=VALUE"), "{}", last_error());

    let (status, rules) = compile(RULES, &["filename=x"]);
    assert_eq!(status, YfStatus::Ok);
    let mut scanner = null_mut();
    assert_eq!(
        unsafe { yf_scanner_new(null(), &mut scanner) },
        YfStatus::NullArgument
    );
    assert_eq!(last_error(), "`rules` is NULL");
    assert_eq!(unsafe { yf_scanner_new(rules, &mut scanner) }, YfStatus::Ok);
    let id = [1u8; 16];
    let mut json = null_mut();
    assert_eq!(
        unsafe { yf_scanner_get_results(scanner, id.as_ptr(), &mut json) },
        YfStatus::UnknownStream
    );
    assert!(json.is_null());
    assert!(last_error().contains("is not open"), "{}", last_error());
    assert_eq!(
        unsafe { yf_scanner_scan_line(scanner, id.as_ptr(), b"x".as_ptr(), 1) },
        YfStatus::Ok
    );
    assert_eq!(
        unsafe { yf_scanner_scan_chunk(scanner, id.as_ptr(), b"x".as_ptr(), 1) },
        YfStatus::ModeMismatch
    );
    assert_eq!(
        unsafe { yf_scanner_scan_chunk(scanner, null(), b"x".as_ptr(), 1) },
        YfStatus::NullArgument
    );
    assert_eq!(
        unsafe { yf_scanner_scan_chunk(scanner, id.as_ptr(), null(), 1) },
        YfStatus::NullArgument
    );
    assert_eq!(
        unsafe { yf_scanner_close_stream(scanner, id.as_ptr(), null_mut()) },
        YfStatus::Ok
    );
    assert_eq!(
        unsafe { yf_scanner_close_stream(scanner, id.as_ptr(), null_mut()) },
        YfStatus::UnknownStream
    );
    unsafe { yf_scanner_free(scanner) };
    unsafe { yf_rules_free(rules) };
}

#[test]
fn the_engine_scans_from_many_threads() {
    let (status, rules) = compile(RULES, &["filename=x"]);
    assert_eq!(status, YfStatus::Ok);
    let mut engine = null_mut();
    assert_eq!(
        unsafe { yf_engine_start(rules, 2, &mut engine) },
        YfStatus::Ok
    );
    unsafe { yf_rules_free(rules) };
    let shared = engine as usize;
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            std::thread::spawn(move || {
                let engine = shared as *const YfEngine;
                let id = [t; 16];
                let body = format!("GET / HTTP/1.1\r\nAuthorization: Basic {t}\r\n");
                for chunk in body.as_bytes().chunks(5) {
                    let status = unsafe {
                        yf_engine_scan_chunk(engine, id.as_ptr(), chunk.as_ptr(), chunk.len())
                    };
                    assert_eq!(status, YfStatus::Ok);
                }
                let mut json = null_mut();
                assert_eq!(
                    unsafe { yf_engine_close_stream(engine, id.as_ptr(), &mut json) },
                    YfStatus::Ok
                );
                take(json)
            })
        })
        .collect();
    for thread in threads {
        let results = thread.join().unwrap();
        assert_eq!(results["rules"][0]["identifier"], "basic_auth");
    }
    let id = [9u8; 16];
    let mut json = null_mut();
    assert_eq!(
        unsafe { yf_engine_close_stream(engine, id.as_ptr(), &mut json) },
        YfStatus::UnknownStream
    );
    let mut count = 1;
    assert_eq!(
        unsafe { yf_engine_active_streams(engine, &mut count) },
        YfStatus::Ok
    );
    assert_eq!(count, 0);
    unsafe { yf_engine_free(engine) };
}

#[test]
fn a_scanner_refuses_other_threads() {
    let (status, rules) = compile(RULES, &["filename=x"]);
    assert_eq!(status, YfStatus::Ok);
    let mut scanner = null_mut();
    assert_eq!(unsafe { yf_scanner_new(rules, &mut scanner) }, YfStatus::Ok);
    unsafe { yf_rules_free(rules) };
    let shared = scanner as usize;
    let (status, message) = std::thread::spawn(move || {
        let id = [3u8; 16];
        let status = unsafe {
            yf_scanner_scan_chunk(shared as *mut YfScanner, id.as_ptr(), b"x".as_ptr(), 1)
        };
        (status, last_error())
    })
    .join()
    .unwrap();
    assert_eq!(status, YfStatus::WrongThread);
    assert!(message.contains("thread that created it"), "{message}");
    // Its own thread still may.
    let id = [3u8; 16];
    assert_eq!(
        unsafe { yf_scanner_scan_chunk(scanner, id.as_ptr(), b"x".as_ptr(), 1) },
        YfStatus::Ok
    );
    unsafe { yf_scanner_free(scanner) };
}

fn rule_names(json: &serde_json::Value) -> Vec<String> {
    json["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["identifier"].as_str().unwrap().to_string())
        .collect()
}

/// A stream said to be a file gets its file externals, on a scanner and
/// on an engine; a name that is not UTF-8 and a stream not open are
/// refused with their codes.
#[test]
fn a_file_stream_gets_its_name_and_type() {
    let source = r#"rule exe { strings: $a = "MZ" condition: $a and extension == ".exe" }
rule typed { condition: filetype == "application/pdf" }"#;
    let (status, rules) = compile(source, &[]);
    assert_eq!(status, YfStatus::Ok, "{}", last_error());
    let name = CString::new("Setup.EXE").unwrap();
    let pdf = CString::new("application/pdf; charset=binary").unwrap();
    let bad = [0xffu8, 0];
    let (exe, typed) = ([1u8; 16], [2u8; 16]);

    let mut scanner = null_mut();
    assert_eq!(unsafe { yf_scanner_new(rules, &mut scanner) }, YfStatus::Ok);
    let set = |id: &[u8; 16], name: *const c_char, kind: *const c_char| unsafe {
        yf_scanner_set_file(scanner, id.as_ptr(), name, null(), kind)
    };
    assert_eq!(set(&exe, name.as_ptr(), null()), YfStatus::UnknownStream);
    for id in [&exe, &typed] {
        let status = unsafe { yf_scanner_open_stream(scanner, id.as_ptr(), YfStreamMode::Chunks) };
        assert_eq!(status, YfStatus::Ok);
    }
    assert_eq!(
        set(&exe, bad.as_ptr().cast(), null()),
        YfStatus::InvalidArgument
    );
    assert_eq!(set(&exe, name.as_ptr(), null()), YfStatus::Ok);
    assert_eq!(set(&typed, null(), pdf.as_ptr()), YfStatus::Ok);
    let mut verdicts = Vec::new();
    for id in [&exe, &typed] {
        let chunk = b"xMZx";
        let status =
            unsafe { yf_scanner_scan_chunk(scanner, id.as_ptr(), chunk.as_ptr(), chunk.len()) };
        assert_eq!(status, YfStatus::Ok);
        let mut json = null_mut();
        let status = unsafe { yf_scanner_close_stream(scanner, id.as_ptr(), &mut json) };
        assert_eq!(status, YfStatus::Ok);
        verdicts.push(rule_names(&take(json)));
    }
    assert_eq!(verdicts, [vec!["exe"], vec!["typed"]]);
    unsafe { yf_scanner_free(scanner) };

    let mut engine = null_mut();
    assert_eq!(
        unsafe { yf_engine_start(rules, 2, &mut engine) },
        YfStatus::Ok
    );
    let status =
        unsafe { yf_engine_open_file(engine, exe.as_ptr(), name.as_ptr(), null(), null()) };
    assert_eq!(status, YfStatus::Ok, "{}", last_error());
    let chunk = b"xMZx";
    let status = unsafe { yf_engine_scan_chunk(engine, exe.as_ptr(), chunk.as_ptr(), chunk.len()) };
    assert_eq!(status, YfStatus::Ok);
    let mut json = null_mut();
    let status = unsafe { yf_engine_close_stream(engine, exe.as_ptr(), &mut json) };
    assert_eq!(status, YfStatus::Ok);
    assert_eq!(rule_names(&take(json)), ["exe"]);
    unsafe { yf_engine_free(engine) };
    unsafe { yf_rules_free(rules) };
}

/// An engine's open answers at once: a stream open in the other mode (its
/// line sent just before) is a mode mismatch, the engine's stream limit is
/// too many streams, and a second open of the same mode is fine.
#[test]
fn an_engine_open_reports_the_mode_and_the_limit_at_once() {
    let (status, rules) = compile(r#"rule a { strings: $a = "x" condition: $a }"#, &[]);
    assert_eq!(status, YfStatus::Ok, "{}", last_error());
    let mut engine = null_mut();
    assert_eq!(
        unsafe { yf_engine_start(rules, 2, &mut engine) },
        YfStatus::Ok
    );
    let (log, flow) = ([7u8; 16], [8u8; 16]);
    let line = b"a line";
    let status = unsafe { yf_engine_scan_line(engine, log.as_ptr(), line.as_ptr(), line.len()) };
    assert_eq!(status, YfStatus::Ok, "the append itself does not wait");
    let open = |id: &[u8; 16], mode| unsafe { yf_engine_open_stream(engine, id.as_ptr(), mode) };
    assert_eq!(open(&log, YfStreamMode::Chunks), YfStatus::ModeMismatch);
    assert!(last_error().contains("mode"), "{}", last_error());
    assert_eq!(open(&log, YfStreamMode::Lines), YfStatus::Ok);
    assert_eq!(open(&flow, YfStreamMode::Chunks), YfStatus::Ok);
    let mut count = 0;
    assert_eq!(
        unsafe { yf_engine_active_streams(engine, &mut count) },
        YfStatus::Ok
    );
    assert_eq!(count, 2);
    unsafe { yf_engine_free(engine) };

    let limits = YfLimits {
        max_open_streams: 1,
        max_chunk_bytes: 4,
    };
    let mut engine = null_mut();
    assert_eq!(
        unsafe { yf_engine_start_with_limits(rules, 1, &limits, &mut engine) },
        YfStatus::Ok
    );
    let open =
        |id: &[u8; 16]| unsafe { yf_engine_open_stream(engine, id.as_ptr(), YfStreamMode::Chunks) };
    assert_eq!(open(&flow), YfStatus::Ok);
    assert_eq!(open(&log), YfStatus::TooManyStreams);
    let status = unsafe { yf_engine_scan_chunk(engine, flow.as_ptr(), line.as_ptr(), line.len()) };
    assert_eq!(status, YfStatus::ChunkTooLarge);
    unsafe { yf_engine_free(engine) };
    unsafe { yf_rules_free(rules) };
}

/// A scanner's limits hold; a zero field keeps its default.
#[test]
fn a_scanner_keeps_its_limits() {
    let (status, rules) = compile(r#"rule a { strings: $a = "x" condition: $a }"#, &[]);
    assert_eq!(status, YfStatus::Ok, "{}", last_error());
    let limits = YfLimits {
        max_open_streams: 1,
        max_chunk_bytes: 0,
    };
    let mut scanner = null_mut();
    assert_eq!(
        unsafe { yf_scanner_new_with_limits(rules, &limits, &mut scanner) },
        YfStatus::Ok
    );
    let big = vec![b'x'; 1 << 20];
    let append = |id: &[u8; 16], data: &[u8]| unsafe {
        yf_scanner_scan_chunk(scanner, id.as_ptr(), data.as_ptr(), data.len())
    };
    assert_eq!(append(&[1; 16], &big), YfStatus::Ok, "{}", last_error());
    assert_eq!(append(&[2; 16], b"x"), YfStatus::TooManyStreams);
    unsafe { yf_scanner_free(scanner) };
    unsafe { yf_rules_free(rules) };
}
