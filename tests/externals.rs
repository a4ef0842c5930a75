//! Per-stream external variables: a stream that says what file it is
//! (`FileInfo`: its name, path and content type) has the verdict of a
//! whole-buffer YARA-X scan with those values set, under any chunking and
//! interleaving, and through the store; the streams around it keep the
//! rule set's values. The tallies check that every rule matched and failed
//! to match, and that streams were stored and restored, in the cases run.

mod common;

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use yaraflow::test_support::codec;
use yaraflow::{
    External, FileInfo, MultiStreamScanner, RuleOptions, RuleSet, ScanError, ScannerConfig, Uuid,
};

/// Rules reading the file externals (and one the user defines), with and
/// without patterns, stream-exact and whole-data.
const RULES: &str = r#"
rule exe_by_name { condition: extension == ".exe" }
rule named_mark { strings: $m = "MARK" condition: $m and filename contains "a" }
rule pdf_or_marks { strings: $m = "MARK" condition: filetype == "application/pdf" or #m > 2 }
rule mz_exe { condition: uint16(0) == 0x5A4D and extension == ".exe" }
rule nameless { condition: filename == "" }
rule downloaded_mark { strings: $m = "MARK" condition: filepath startswith "/dl/" and $m }
rule enough_marks { strings: $m = "MARK" condition: #m >= min_marks }
"#;

const NAMES: &[&str] = &[
    "exe_by_name",
    "named_mark",
    "pdf_or_marks",
    "mz_exe",
    "nameless",
    "downloaded_mark",
    "enough_marks",
];

fn rules() -> RuleSet {
    let options = RuleOptions {
        externals: vec!["min_marks=2".parse().unwrap()],
        ..RuleOptions::new(ScannerConfig::default().max_pattern_len)
    };
    RuleSet::from_sources_with(vec![("<test>".into(), RULES.into())], &options).unwrap()
}

/// What a stream is: none, or a file with some of name, path, type, and
/// maybe its own `min_marks`.
fn random_externals(rng: &mut StdRng) -> Vec<External> {
    if rng.gen_bool(0.25) {
        return Vec::new();
    }
    let pick = |rng: &mut StdRng, options: &[&str]| {
        let i = rng.gen_range(0..=options.len());
        options.get(i).map(|s| s.to_string())
    };
    let name = pick(rng, &["a.exe", "setup.EXE", "report.pdf", "data", "b.bin"]);
    let info = FileInfo {
        path: match (&name, rng.gen_bool(0.5)) {
            (Some(name), true) => Some(format!("/dl/{name}")),
            _ => None,
        },
        name,
        content_type: pick(rng, &["application/pdf", "text/plain; charset=utf-8"]),
    };
    let mut externals = info.externals();
    if rng.gen_bool(0.3) {
        externals.push("min_marks=1".parse().unwrap());
    }
    externals
}

/// Random bytes with an MZ header sometimes and a few `MARK`s.
fn random_data(rng: &mut StdRng) -> Vec<u8> {
    let len = rng.gen_range(0..3000);
    let mut data: Vec<u8> = (0..len).map(|_| rng.gen_range(b'a'..=b'z')).collect();
    if len >= 2 && rng.gen_bool(0.4) {
        data[..2].copy_from_slice(b"MZ");
    }
    for _ in 0..rng.gen_range(0..4) {
        if len >= 4 {
            let at = rng.gen_range(0..=len - 4);
            data[at..at + 4].copy_from_slice(b"MARK");
        }
    }
    data
}

struct Stream {
    id: Uuid,
    externals: Vec<External>,
    data: Vec<u8>,
    sent: usize,
}

/// Streams fed in random chunks, interleaved, some stored and restored on
/// the way; every verdict compared. Returns how often each rule matched,
/// and how many streams went through the store.
fn run_case(
    rules: &RuleSet,
    rng: &mut StdRng,
    tally: &mut BTreeMap<&'static str, [u32; 2]>,
) -> u32 {
    let config = ScannerConfig {
        max_batch_bytes: rng.gen_range(1..20_000),
        ..ScannerConfig::default()
    };
    let mut scanner = MultiStreamScanner::new(rules, config);
    let mut streams: Vec<Stream> = (0..rng.gen_range(1..12))
        .map(|_| Stream {
            id: Uuid::from_u128(rng.gen()),
            externals: random_externals(rng),
            data: random_data(rng),
            sent: 0,
        })
        .collect();
    for stream in &streams {
        scanner
            .open_stream(stream.id, yaraflow::StreamMode::Chunks)
            .unwrap();
        scanner
            .set_stream_externals(stream.id, stream.externals.clone())
            .unwrap();
    }
    let mut stored = 0;
    while streams.iter().any(|s| s.sent < s.data.len()) {
        let pick = rng.gen_range(0..streams.len());
        let stream = &mut streams[pick];
        let len = rng.gen_range(1..1500).min(stream.data.len() - stream.sent);
        let chunk = &stream.data[stream.sent..stream.sent + len];
        scanner.scan_chunk(stream.id, chunk).unwrap();
        stream.sent += len;
        if rng.gen_bool(0.05) {
            let context = scanner.evict_streams(&[stream.id]).unwrap().remove(0);
            let mut entry = Vec::new();
            codec::encode(&context, [0; 8], &mut entry);
            let (context, _) = codec::decode(stream.id, &entry).unwrap();
            scanner.restore_stream(context).unwrap();
            stored += 1;
        }
    }
    for stream in &streams {
        let results = scanner.close_stream(&stream.id).unwrap().unwrap();
        let ours = common::ours_all(&results);
        let expected = common::reference_all_with(rules, &stream.externals, &stream.data);
        assert_eq!(
            ours,
            expected,
            "stream with {:?}, {} bytes",
            stream.externals,
            stream.data.len()
        );
        for name in NAMES {
            let matched = expected.iter().any(|(rule, _)| rule == name);
            tally.get_mut(name).unwrap()[matched as usize] += 1;
        }
    }
    stored
}

#[test]
fn verdicts_with_a_streams_own_externals_equal_whole_buffer_scans_with_them_set() {
    let rules = rules();
    let cases: u64 = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200)
        .min(400);
    let mut tally: BTreeMap<&'static str, [u32; 2]> = NAMES.iter().map(|n| (*n, [0, 0])).collect();
    let mut stored = 0;
    for seed in 0..cases {
        let mut rng = StdRng::seed_from_u64(seed);
        stored += run_case(&rules, &mut rng, &mut tally);
    }
    eprintln!("rule: [streams it did not match, streams it matched]: {tally:?}; {stored} streams stored and restored");
    for (rule, [missed, matched]) in &tally {
        assert!(*matched > 0, "{rule} never matched");
        assert!(*missed > 0, "{rule} matched every stream");
    }
    assert!(stored > 0, "no stream went through the store");
}

#[test]
fn a_refused_external_names_itself_and_changes_nothing() {
    let rules = rules();
    let mut scanner = MultiStreamScanner::new(&rules, ScannerConfig::default());
    let stream = Uuid::from_u128(7);
    let name = FileInfo {
        name: Some("a.exe".into()),
        ..FileInfo::default()
    };
    assert!(matches!(
        scanner.set_stream_externals(stream, name.externals()),
        Err(ScanError::UnknownStream(_))
    ));
    scanner.scan_chunk(stream, b"MARK").unwrap();
    scanner
        .set_stream_externals(stream, name.externals())
        .unwrap();
    let refused = scanner
        .set_stream_externals(stream, vec!["min_marks=many".parse().unwrap()])
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("`min_marks` is an integer in the rules, not a string"),
        "{refused}"
    );
    let unknown = scanner
        .set_stream_externals(stream, vec!["owner=root".parse().unwrap()])
        .unwrap_err();
    assert!(
        unknown.to_string().contains("no external `owner`"),
        "{unknown}"
    );
    // The refusals changed nothing: the name set before still counts.
    let context = scanner.stream_context(&stream).unwrap();
    assert_eq!(context.externals(), name.externals().as_slice());
    // A reset starts the bytes over, not what the stream is.
    scanner.reset_stream(&stream).unwrap();
    scanner.scan_chunk(stream, b"xMARK").unwrap();
    let verdict = scanner.close_stream(&stream).unwrap().unwrap();
    let matched: Vec<&str> = verdict
        .rules
        .iter()
        .map(|r| r.identifier.as_str())
        .collect();
    assert_eq!(matched, ["exe_by_name", "named_mark"]);
}

/// The engine takes a stream's externals when it opens it (on any shard),
/// refuses bad ones without harm to the stream, and its verdicts equal the
/// reference with them set.
#[test]
fn the_engine_opens_streams_with_their_externals() {
    let rules = rules();
    let config = yaraflow::EngineConfig {
        shards: 2,
        ..yaraflow::EngineConfig::default()
    };
    let engine = yaraflow::Engine::start(rules, config).unwrap();
    let handle = engine.handle().blocking();
    let mut rng = StdRng::seed_from_u64(99);
    let streams: Vec<(Uuid, Vec<External>, Vec<u8>)> = (0..200)
        .map(|_| {
            let id = Uuid::from_u128(rng.gen());
            (id, random_externals(&mut rng), random_data(&mut rng))
        })
        .collect();
    let mode = yaraflow::StreamMode::Chunks;
    for (id, externals, data) in &streams {
        handle.open_stream(*id, mode, externals.clone()).unwrap();
        let refused = handle
            .open_stream(*id, mode, vec!["owner=root".parse().unwrap()])
            .unwrap_err();
        assert_eq!(refused.kind(), yaraflow::ErrorKind::BadExternal);
        for chunk in data.chunks(700) {
            handle.scan_chunk(*id, chunk.to_vec()).unwrap();
        }
    }
    let lines = handle
        .open_stream(streams[0].0, yaraflow::StreamMode::Lines, Vec::new())
        .unwrap_err();
    assert_eq!(lines.kind(), yaraflow::ErrorKind::ModeMismatch);
    let reference_rules = self::rules();
    let ids: Vec<Uuid> = streams.iter().map(|(id, _, _)| *id).collect();
    let mut matched = 0;
    for ((_, externals, data), result) in streams.iter().zip(handle.close_streams(&ids)) {
        let results = result.unwrap().unwrap();
        let expected = common::reference_all_with(&reference_rules, externals, data);
        assert_eq!(common::ours_all(&results), expected, "{externals:?}");
        matched += expected.iter().filter(|(r, _)| r == "exe_by_name").count();
    }
    assert!(matched > 0, "no stream was an .exe");
    handle.shutdown().unwrap();
}
