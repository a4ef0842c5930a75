//! Whole-data rules (header reads, `filesize`, modules): under any chunking
//! and interleaving, the verdict of every rule equals a whole-buffer YARA-X
//! scan of the same bytes, whether the stream retained its bytes, was let
//! go by the gates, or was cut by a retention limit (then only the rules it
//! lists as undecided may differ). The tallies check that each rule kind
//! matched, and each retention state happened, in the cases run.

mod common;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

use common::{ours_all, reference_all, Verdict};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use yaraflow::test_support::codec;
use yaraflow::{
    MultiStreamScanner, RuleSet, ScannerConfig, ScannerStats, StreamResults, Uuid, WholeDataState,
};

/// One rule of each kind, with the marker pattern `$m`.
const RULES: &str = r#"
import "pe"
import "math"
import "hash"
import "cuckoo"
import "string"
import "time"
import "console"
rule plain { strings: $m = "MARK" condition: $m }
rule mz_and_mark { strings: $m = "MARK" condition: uint16(0) == 0x5A4D and $m }
rule elf_or_mz { condition: uint32(0) == 0x464c457f or uint16(0) == 0x5A4D }
rule big_endian_magic { condition: uint32be(0) == 0x7f454c46 and filesize > 10 }
rule small { strings: $m = "MARK" condition: filesize < 600 and $m }
rule entry_mark { strings: $m = "MARK" condition: $m at pe.entry_point }
rule one_section { condition: pe.number_of_sections == 1 and pe.is_32bit() }
rule pe_signature { condition: uint32(uint32(0x3C)) == 0x00004550 }
rule refers { condition: entry_mark and filesize > 100 }
rule mz_or_marks { strings: $m = "MARK" condition: (uint16(0) == 0x5A4D and filesize > 700) or #m > 1 }
rule mark_or_sections { strings: $m = "MARK" condition: $m or pe.number_of_sections == 1 }
rule loop_sections { condition: for any i in (0..pe.number_of_sections - 1): (pe.sections[i].name == ".text") }
rule imphash_or_marks { strings: $m = "MARK" condition: pe.imphash() == "d41d8cd98f00b204e9800998ecf8427e" or #m > 2 }
rule mz_literal { strings: $mz = "MZ" $m = "MARK" condition: $mz at 0 and $m and filesize > 1000 }
rule section_or_elf { condition: pe.sections[0].name == ".text" or uint32(0) == 0x464c457f }
rule entry_any { strings: $a = "MARK" $b = { 55 8B EC } condition: for any of ($*) : ( $ at pe.entry_point ) }
rule and_of_exact { strings: $m = "MARK" condition: ($m or pe.exports("x")) and #m >= 1 }
rule entropy { condition: math.entropy(0, filesize) > 7.5 }
rule mark_or_entropy { strings: $m = "MARKER" condition: $m or math.entropy(0, filesize) > 7.9 }
rule md5_head { condition: hash.md5(0, 2) == "ac6ad5d9b99757c3a878f2d275ace198" }
rule not_mz_mark { strings: $m = "MARK" condition: uint16(0) != 0x5A4D and $m }
rule not_mm { condition: not (uint16(1) == 0x4D4D) }
rule signed_reads { condition: int8(1) < 0 and int16be(2) > 0 }
rule odd_first { strings: $m = "MARK" condition: $m and uint8(0) & 1 == 1 }
rule mark_near_end { strings: $m = "MARK" condition: $m in (filesize - 100..filesize) }
rule md5_whole { condition: hash.md5(0, filesize) == "df88a43ce5d392a9345e55102b6aad54" }
rule sha1_and_mark { strings: $m = "MARK" condition: $m and "4418c5d1b8f45eab36a948fff94ba010ccf3010a" == hash.sha1(0, filesize) }
rule not_other_sha256 { strings: $m = "MARK" condition: $m and not (hash.sha256(0, filesize) != "0408c941ff195dc9182da172e4aa3a54759f892a1bd7b19c830f3cf6131a29e0") }
rule crc_and_sum { condition: hash.crc32(0, filesize) == 0xed3cf713 and hash.checksum32(0, filesize) == 127028 }
rule overlay { condition: pe.sections[pe.number_of_sections - 1].raw_data_offset + pe.sections[pe.number_of_sections - 1].raw_data_size < filesize }
rule mark_or_mutex { strings: $m = "MARK" condition: $m or cuckoo.sync.mutex(/Ad48qw4d6wq84d56as/) }
rule data_free_modules { strings: $m = "MARK" condition: #m > 1 and string.length("abc") == 3 and time.now() > 0 and console.log("two marks") }
"#;

/// The rules' names.
const NAMES: &[&str] = &[
    "plain",
    "mz_and_mark",
    "elf_or_mz",
    "big_endian_magic",
    "small",
    "entry_mark",
    "one_section",
    "pe_signature",
    "refers",
    "mz_or_marks",
    "mark_or_sections",
    "loop_sections",
    "imphash_or_marks",
    "mz_literal",
    "section_or_elf",
    "entry_any",
    "and_of_exact",
    "entropy",
    "mark_or_entropy",
    "md5_head",
    "not_mz_mark",
    "not_mm",
    "signed_reads",
    "odd_first",
    "mark_near_end",
    "md5_whole",
    "sha1_and_mark",
    "not_other_sha256",
    "crc_and_sum",
    "overlay",
    "mark_or_mutex",
    "data_free_modules",
];

/// The rules that read only `filesize`, header bytes at fixed offsets,
/// digests of the whole data, patterns and modules that read no data
/// (`cuckoo`, `string`, `time`, `console`): stream-exact (see
/// `yaraflow::rules::data_values`), though they read what no chunk shows.
const DATA_VALUE_RULES: &[&str] = &[
    "mz_and_mark",
    "elf_or_mz",
    "big_endian_magic",
    "small",
    "mz_or_marks",
    "mz_literal",
    "not_mz_mark",
    "not_mm",
    "signed_reads",
    "odd_first",
    "mark_near_end",
    "md5_whole",
    "sha1_and_mark",
    "not_other_sha256",
    "crc_and_sum",
    "mark_or_mutex",
    "data_free_modules",
];

/// The stream whose digests the `hash` rules of [`RULES`] compare with:
/// 1,029 bytes, the marker among them.
fn hashed_stream() -> Vec<u8> {
    let mut data = b"a whole stream, hashed: MARK ".to_vec();
    data.extend((0..1000u32).map(|i| ((i * 7 + 3) % 251) as u8));
    data
}

/// A minimal 32-bit PE file: DOS header, `PE\0\0`, file and optional
/// headers, one `.text` section whose raw data (at 0x200) holds the entry
/// point, `code` written there, `len` bytes long in all (at least 0x400).
fn pe_file(code: &[u8], len: usize) -> Vec<u8> {
    let mut pe = vec![0u8; len.max(0x400)];
    let put =
        |pe: &mut Vec<u8>, at: usize, bytes: &[u8]| pe[at..at + bytes.len()].copy_from_slice(bytes);
    put(&mut pe, 0, b"MZ");
    put(&mut pe, 0x3C, &0x40u32.to_le_bytes());
    put(&mut pe, 0x40, b"PE\0\0");
    // File header: i386, one section, optional header of 0xE0 bytes.
    put(&mut pe, 0x44, &0x14Cu16.to_le_bytes());
    put(&mut pe, 0x46, &1u16.to_le_bytes());
    put(&mut pe, 0x54, &0xE0u16.to_le_bytes());
    put(&mut pe, 0x56, &0x0102u16.to_le_bytes());
    // Optional header (PE32) at 0x58.
    let opt = 0x58;
    put(&mut pe, opt, &0x10Bu16.to_le_bytes());
    put(&mut pe, opt + 16, &0x1000u32.to_le_bytes()); // entry point RVA
    put(&mut pe, opt + 28, &0x40_0000u32.to_le_bytes()); // image base
    put(&mut pe, opt + 32, &0x1000u32.to_le_bytes()); // section alignment
    put(&mut pe, opt + 36, &0x200u32.to_le_bytes()); // file alignment
    put(&mut pe, opt + 40, &4u16.to_le_bytes()); // OS version
    put(&mut pe, opt + 48, &4u16.to_le_bytes()); // subsystem version
    put(&mut pe, opt + 56, &0x2000u32.to_le_bytes()); // size of image
    put(&mut pe, opt + 60, &0x200u32.to_le_bytes()); // size of headers
    put(&mut pe, opt + 68, &3u16.to_le_bytes()); // console
    put(&mut pe, opt + 92, &16u32.to_le_bytes()); // data directories
                                                  // Section header after the optional header.
    let section = opt + 0xE0;
    put(&mut pe, section, b".text\0\0\0");
    put(&mut pe, section + 8, &0x200u32.to_le_bytes()); // virtual size
    put(&mut pe, section + 12, &0x1000u32.to_le_bytes()); // virtual address
    put(&mut pe, section + 16, &0x200u32.to_le_bytes()); // raw size
    put(&mut pe, section + 20, &0x200u32.to_le_bytes()); // raw pointer
    put(&mut pe, section + 36, &0x6000_0020u32.to_le_bytes());
    put(&mut pe, 0x200, code);
    pe
}

/// Stream contents: random bytes, a PE file with or without the marker at
/// its entry point, an ELF-looking or MZ-only start, text; each followed by
/// random bytes, with the marker planted or not.
fn data() -> impl Strategy<Value = Vec<u8>> {
    let tail = prop::collection::vec(any::<u8>(), 0..1500);
    let body = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..600),
        (any::<bool>(), 0usize..0x700).prop_map(|(mark, len)| {
            pe_file(if mark { b"MARK" } else { b"\x55\x8b\xec\x90" }, len)
        }),
        prop::collection::vec(any::<u8>(), 0..200).prop_map(|b| [b"\x7fELF".to_vec(), b].concat()),
        prop::collection::vec(any::<u8>(), 0..200).prop_map(|b| [b"MZ".to_vec(), b].concat()),
        "[a-z ]{0,300}".prop_map(String::into_bytes),
    ];
    // Streams of a few bytes too: reads past their end are undefined.
    let tiny = prop::collection::vec(any::<u8>(), 1..4);
    let whole = (body, tail, any::<bool>()).prop_map(|(mut body, tail, plant)| {
        if plant {
            body.extend_from_slice(b"MARK");
        }
        body.extend(tail);
        body
    });
    // The stream the `hash` rules match, whole (so cut by small retention
    // caps, which must not undecide them).
    prop_oneof![9 => whole, 1 => tiny, 1 => Just(hashed_stream())]
}

#[derive(Debug, Clone)]
struct Case {
    streams: Vec<Vec<u8>>,
    /// Chunk sizes, used in turn.
    cuts: Vec<usize>,
    /// Per-stream retention cap (small ones cut streams).
    stream_cap: usize,
    /// The scanner's retention budget (small ones cut streams too).
    budget: usize,
    /// Every this many chunks, all streams go through the store's entry
    /// format and back (0: never).
    store_every: usize,
    /// `ScannerConfig::eager_search`.
    eager_search: bool,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(data(), 1..5),
        // Tiny chunks too: gates then wait for the bytes they read.
        prop::collection::vec(prop_oneof![1usize..6, 6usize..700], 1..6),
        prop_oneof![3 => Just(1usize << 20), 1 => 100usize..2000],
        prop_oneof![3 => Just(1usize << 30), 1 => 500usize..5000],
        // Each trip through the store searches the batch first: a few.
        prop_oneof![5 => Just(0usize), 1 => 4usize..16],
        any::<bool>(),
    )
        .prop_map(
            |(streams, cuts, stream_cap, budget, store_every, eager_search)| Case {
                streams,
                cuts,
                stream_cap,
                budget,
                store_every,
                eager_search,
            },
        )
}

/// Feeds every stream in chunks, interleaved, and closes them all; the
/// scanner's counters too.
fn run(rules: &RuleSet, case: &Case) -> (Vec<StreamResults>, ScannerStats) {
    let config = ScannerConfig {
        max_retained_stream_bytes: case.stream_cap,
        max_retained_bytes: case.budget,
        eager_search: case.eager_search,
        ..ScannerConfig::default()
    };
    let mut scanner = MultiStreamScanner::new(rules, config);
    let ids: Vec<Uuid> = (0..case.streams.len() as u128)
        .map(Uuid::from_u128)
        .collect();
    let mut offsets = vec![0; case.streams.len()];
    let mut turn = 0;
    while offsets.iter().zip(&case.streams).any(|(o, s)| *o < s.len()) {
        for (index, data) in case.streams.iter().enumerate() {
            let from = offsets[index];
            let to = (from + case.cuts[turn % case.cuts.len()]).min(data.len());
            turn += 1;
            if from < to {
                scanner.scan_chunk(ids[index], &data[from..to]).unwrap();
                offsets[index] = to;
            }
            if case.store_every > 0 && turn % case.store_every == 0 {
                through_the_store(&mut scanner, &ids);
            }
        }
    }
    let results = ids
        .iter()
        .map(|id| scanner.close_stream(id).unwrap().unwrap())
        .collect();
    (results, scanner.stats())
}

/// Evicts `streams`, encodes and decodes their contexts as the stream store
/// does, and restores them: retained bytes and retention states included.
fn through_the_store(scanner: &mut MultiStreamScanner<'_>, streams: &[Uuid]) {
    let retained = scanner.stats().retained_bytes;
    for context in scanner.evict_streams(streams).unwrap() {
        let mut entry = Vec::new();
        codec::encode(&context, *b"testrule", &mut entry);
        let (decoded, _) = codec::decode(context.id, &entry).unwrap();
        assert_eq!(decoded, context);
        scanner.restore_stream(decoded).unwrap();
    }
    assert_eq!(scanner.stats().retained_bytes, retained);
}

/// Compares one stream's verdict with the reference, leaving out the rules
/// it says are undecided (and checking that those say `exact: false`).
fn check(results: &StreamResults, expected: &Verdict) -> Result<(), TestCaseError> {
    let whole = results.whole_data.as_ref().expect("whole-data rules");
    let undecided = |id: &str| {
        whole
            .undecided
            .iter()
            .any(|u| u == &format!("default.{id}"))
    };
    prop_assert_eq!(whole.undecided_rules, whole.undecided.len());
    for rule in results.rules.iter().filter(|r| undecided(&r.identifier)) {
        prop_assert!(!rule.exact, "{} is undecided", rule.identifier);
    }
    let decided =
        |v: Verdict| -> Verdict { v.into_iter().filter(|(id, _)| !undecided(id)).collect() };
    prop_assert_eq!(decided(ours_all(results)), decided(expected.clone()));
    for rule in results.rules.iter().filter(|r| !undecided(&r.identifier)) {
        prop_assert!(rule.exact, "{} is decided", rule.identifier);
    }
    Ok(())
}

/// The rules of [`RULES`] but those named: without the ones that have no
/// gate, streams that fail every gate stop retaining.
fn rules_without(left_out: &[&str]) -> String {
    RULES
        .lines()
        .filter(|line| {
            !left_out
                .iter()
                .any(|name| line.starts_with(&format!("rule {name} ")))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The rules without a gate. (`imphash_or_marks` has one: `pe.imphash()`
/// is undefined on data that is not a PE file once the evaluator resets
/// YARA-X's per-thread cache of it, which a whole-buffer scan of a PE
/// leaves behind: the references of these tests scan PE files on the
/// same thread, between the cases.)
const UNGATED: &[&str] = &["pe_signature", "entropy", "mark_or_entropy", "md5_head"];

#[test]
fn every_rule_equals_a_whole_buffer_scan() {
    let rules = RuleSet::from_source(RULES, 1024).unwrap();
    assert_eq!(
        rules.whole_data().len(),
        NAMES.len() - 1 - DATA_VALUE_RULES.len(),
        "all but `plain` and the data-value rules"
    );
    for rule in DATA_VALUE_RULES {
        assert!(rules.is_exact("default", rule), "{rule} is stream-exact");
    }
    assert_eq!(rules.whole_data().ungated(), UNGATED.len());
    differential(
        &rules,
        &[
            WholeDataState::Scanned,
            WholeDataState::CutAtStreamCap,
            WholeDataState::CutAtBudget,
        ],
    );
}

#[test]
fn streams_that_fail_every_gate_retain_nothing_and_stay_exact() {
    let rules = RuleSet::from_source(&rules_without(UNGATED), 1024).unwrap();
    assert_eq!(rules.whole_data().ungated(), 0);
    differential(
        &rules,
        &[
            WholeDataState::Scanned,
            WholeDataState::Gated,
            WholeDataState::CutAtStreamCap,
        ],
    );
    // Header gates alone decide at the first bytes (a size gate waits
    // for the stream to grow past it).
    let rules =
        RuleSet::from_source(&rules_without(&[UNGATED, &["small"]].concat()), 1024).unwrap();
    differential(
        &rules,
        &[
            WholeDataState::Scanned,
            WholeDataState::Gated,
            WholeDataState::CutAtStreamCap,
        ],
    );
}

/// Runs [`case`]s on `rules`, checks every verdict, and that every rule
/// matched and every state in `states_wanted` happened; returns how often
/// each rule matched in a stream that did not scan whole (its own verdict
/// decided).
fn differential(rules: &RuleSet, states_wanted: &[WholeDataState]) -> BTreeMap<String, u64> {
    let cases: u32 = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(256)
        .min(1000);
    let mut runner = TestRunner::new(Config {
        cases,
        ..Config::default()
    });
    let names: Vec<&str> = rules.rules().iter().map(|r| r.identifier()).collect();
    let matched: RefCell<BTreeMap<String, u64>> =
        RefCell::new(names.iter().map(|n| (n.to_string(), 0)).collect());
    let states: RefCell<BTreeMap<String, u64>> = RefCell::default();
    let missed: RefCell<BTreeMap<String, u64>> = RefCell::default();
    // Streams too short for some header read (undefined there).
    let tiny_streams = Cell::new(0u64);
    // Whole-data rules that matched in a stream that did not scan whole:
    // decided by its own verdict once their gates failed.
    let decided_by_stream = std::cell::Cell::new(0u64);
    let matched_unscanned: RefCell<BTreeMap<String, u64>> = RefCell::default();
    // Searches that waited while streams retained (the default), and runs
    // that searched as the chunks came.
    let (deferred_searches, eager_runs) = (Cell::new(0u64), Cell::new(0u64));
    runner
        .run(&case(), |case| {
            let (all, stats) = run(rules, &case);
            deferred_searches.set(deferred_searches.get() + stats.deferred_searches);
            eager_runs.set(eager_runs.get() + u64::from(case.eager_search));
            if case.eager_search {
                prop_assert_eq!(stats.deferred_searches, 0);
            }
            for (results, data) in all.iter().zip(&case.streams) {
                let expected = reference_all(rules, data);
                for (rule, _) in &expected {
                    *matched.borrow_mut().get_mut(rule).unwrap() += 1;
                }
                for rule in &names {
                    if !expected.iter().any(|(r, _)| r == rule) {
                        *missed.borrow_mut().entry(rule.to_string()).or_default() += 1;
                    }
                }
                tiny_streams.set(tiny_streams.get() + u64::from(data.len() < 4));
                let whole = results.whole_data.as_ref().expect("whole-data rules");
                *states
                    .borrow_mut()
                    .entry(format!("{:?}", whole.state))
                    .or_default() += 1;
                // Gated: nothing retained, but by a stream shorter than
                // its gates read, whose gates failed only at its close.
                let too_short = data.len() < rules.whole_data().prefix_len();
                if whole.state == WholeDataState::Gated && !too_short {
                    prop_assert_eq!(whole.retained_bytes, 0);
                }
                if !whole.scanned() {
                    for (rule, _) in &expected {
                        *matched_unscanned
                            .borrow_mut()
                            .entry(rule.clone())
                            .or_default() += 1;
                    }
                    let whole_data = |id: &str| rules.whole_data().contains("default", id);
                    let decided = results
                        .rules
                        .iter()
                        .filter(|r| r.exact && whole_data(&r.identifier));
                    decided_by_stream.set(decided_by_stream.get() + decided.count() as u64);
                }
                check(results, &expected)?;
            }
            Ok(())
        })
        .unwrap();
    let (matched, states) = (matched.into_inner(), states.into_inner());
    let missed = missed.into_inner();
    eprintln!("rules missed (streams): {missed:?}; streams under 4 bytes: {tiny_streams:?}");
    assert!(
        tiny_streams.get() > 0,
        "no stream was too short for a header read"
    );
    for rule in DATA_VALUE_RULES.iter().filter(|r| names.contains(r)) {
        assert!(
            missed.get(*rule).copied().unwrap_or(0) > 0,
            "rule {rule} never missed: its data values are not exercised"
        );
    }
    eprintln!(
        "rules matched (streams): {matched:?}\nretention states: {states:?}\n\
         whole-data rules decided by the stream's own verdict: {}\n\
         deferred searches: {}; runs with eager search: {}",
        decided_by_stream.get(),
        deferred_searches.get(),
        eager_runs.get()
    );
    assert!(deferred_searches.get() > 0, "no deferred search happened");
    assert!(eager_runs.get() > 0, "no run searched eagerly");
    if states_wanted.contains(&WholeDataState::Gated) && !rules.whole_data().is_empty() {
        assert!(
            decided_by_stream.get() > 0,
            "no whole-data rule matched in a gated stream"
        );
    }
    for (rule, count) in &matched {
        assert!(
            *count > 0,
            "rule {rule} never matched: the test does not exercise it"
        );
    }
    for state in states_wanted {
        let seen = states.get(&format!("{state:?}")).copied();
        assert!(
            seen.unwrap_or(0) > 0,
            "no stream ended {state:?}: {states:?}"
        );
    }
    matched_unscanned.into_inner()
}

/// A rule whose pattern matches at almost every byte of text: dense (see
/// `yaraflow::rules::density`), though stream-exact.
const DENSE_RULE: &str = r#"rule words { strings: $w = /[a-z]{2,}/ condition: #w > 5 }"#;

#[test]
fn streams_retain_for_a_dense_rule_and_stay_exact_once_they_stop() {
    // The stream-exact rules of `RULES`, and the dense one.
    let whole_data: Vec<&str> = NAMES
        .iter()
        .filter(|n| **n != "plain" && !DATA_VALUE_RULES.contains(n))
        .copied()
        .collect();
    let source = format!("{}\n{DENSE_RULE}", rules_without(&whole_data));
    let rules = RuleSet::from_source(&source, 1024).unwrap();
    assert!(rules.whole_data().is_empty(), "no whole-data rule");
    assert!(rules.is_exact("default", "words"));
    assert_eq!(rules.analysis().classes().dense, 1);
    // Streams retain for `words` alone: scanned whole, or, once a cap or
    // the budget's dense half stops them, searched from their first byte
    // as if their gates had failed: exact either way.
    let matched_unscanned = differential(&rules, &[WholeDataState::Scanned, WholeDataState::Gated]);
    eprintln!("rules matched in streams that stopped retaining: {matched_unscanned:?}");
    assert!(
        matched_unscanned.get("words").copied().unwrap_or(0) > 0,
        "the dense rule never matched in a stream that stopped retaining"
    );
}

#[test]
fn streams_kept_for_dense_rules_alone_leave_half_the_budget_to_whole_data_rules() {
    let source = format!(
        "import \"pe\"\nrule one_section {{ condition: pe.number_of_sections == 1 }}\n{DENSE_RULE}"
    );
    let rules = RuleSet::from_source(&source, 1024).unwrap();
    let budget = 64 << 10;
    let config = ScannerConfig {
        max_retained_bytes: budget,
        ..ScannerConfig::default()
    };
    let mut scanner = MultiStreamScanner::new(&rules, config);
    // Text streams, 160 KiB in all: kept for `words` alone (`MZ` fails).
    let text: Vec<u8> = (0..8192u32)
        .map(|i| {
            if i % 7 == 6 {
                b' '
            } else {
                b'a' + (i % 26) as u8
            }
        })
        .collect();
    let texts: Vec<Uuid> = (0..20u128).map(Uuid::from_u128).collect();
    for chunk in text.chunks(1024) {
        for id in &texts {
            scanner.scan_chunk(*id, chunk).unwrap();
        }
    }
    assert!(scanner.stats().retained_bytes <= budget / 2);
    // A PE stream still finds room in the budget.
    let pe = Uuid::from_u128(99);
    let pe_bytes = pe_file(b"MARK", 0x2000);
    for chunk in pe_bytes.chunks(1024) {
        scanner.scan_chunk(pe, chunk).unwrap();
    }
    let results = scanner.close_stream(&pe).unwrap().unwrap();
    let whole = results.whole_data.as_ref().unwrap();
    assert_eq!(whole.state, WholeDataState::Scanned);
    check(&results, &reference_all(&rules, &pe_bytes)).unwrap();
    let mut states: BTreeMap<String, usize> = BTreeMap::new();
    for id in &texts {
        let results = scanner.close_stream(id).unwrap().unwrap();
        let state = results.whole_data.as_ref().unwrap().state;
        *states.entry(format!("{state:?}")).or_default() += 1;
        check(&results, &reference_all(&rules, &text)).unwrap();
    }
    // Some scanned whole, the others searched once the dense half was full.
    assert!(states.get("Scanned").is_some_and(|n| *n > 0), "{states:?}");
    assert!(states.get("Gated").is_some_and(|n| *n > 0), "{states:?}");
}

/// A verdict that is a whole-buffer scan of a retaining stream lists what
/// YARA-X lists: where no condition reaches a pattern (a short stream,
/// `filesize < 50` true), YARA-X does not search, and lists no match of a
/// matching rule. A searched verdict lists them (README, "What a verdict
/// lists"): the references of the search's tests force YARA-X to search.
#[test]
fn a_whole_buffer_verdict_lists_what_yara_x_lists() {
    let source =
        r#"rule short_or_words { strings: $w = /[a-z]{2,}/ condition: filesize < 50 or #w > 5 }"#;
    let rules = RuleSet::from_source(source, 1024).unwrap();
    assert_eq!(rules.analysis().classes().dense, 1);
    let data = b"a short stream of words";
    let mut scanner = MultiStreamScanner::new(&rules, ScannerConfig::default());
    let id = Uuid::from_u128(1);
    for chunk in data.chunks(5) {
        scanner.scan_chunk(id, chunk).unwrap();
    }
    let results = scanner.close_stream(&id).unwrap().unwrap();
    assert!(results.whole_data.as_ref().unwrap().scanned());
    assert!(results.exact);
    let ours = common::ours(&rules, &results);
    assert_eq!(ours, common::reference_unsearched(&rules, data));
    // The rule matches, with no match listed; searched, it lists them.
    assert_eq!(ours.len(), 1);
    assert!(ours[0].1.iter().all(|(_, matches)| matches.is_empty()));
    assert_ne!(ours, common::reference(&rules, data));
}

/// The real rule sets in `../shared/rules` that read headers and use `pe`
/// (skipped, saying so, when the folder is absent): a PE file, an ELF-like
/// file, random bytes and text, fed as streams in 1,460-byte chunks, get
/// the whole-buffer verdict for every rule they do not list as undecided.
#[test]
fn real_rule_sets_on_pe_and_other_streams() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/rules");
    if !root.is_dir() {
        eprintln!(
            "SKIPPED: no real rule sets at {} (CI has them)",
            root.display()
        );
        return;
    }
    let mut next = common::xorshift(0x9E37_79B9_7F4A_7C15);
    let random: Vec<u8> = (0..20_000).map(|_| next() as u8).collect();
    let mut streams: Vec<Vec<u8>> = vec![
        // bartblaze's AutoIT_Compiled: `uint16(0)==0x5A4D and any of them`.
        pe_file(b"\x55\x8b\xec\x83\xec\x10>>>AUTOIT SCRIPT<<<", 0x2000),
        [&pe_file(b"\x90", 0x400)[..], &random[..5000]].concat(),
        [&b"\x7fELF\x02\x01\x01"[..], &random[..3000]].concat(),
        random.clone(),
        b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n".repeat(200),
    ];
    // Real ELF files every Debian machine has.
    for path in ["/bin/true", "/bin/ls"] {
        match std::fs::read(path) {
            Ok(bytes) => streams.push(bytes),
            Err(err) => eprintln!("no {path} ({err}): one ELF file fewer"),
        }
    }
    for set in ["reversinglabs", "bartblaze"] {
        let rules = RuleSet::from_paths(&[root.join(set)], 1024).unwrap();
        let classes = rules.analysis().classes();
        eprintln!("{set}: {classes}");
        let case = Case {
            streams: streams.clone(),
            cuts: vec![1460],
            stream_cap: 1 << 20,
            budget: 1 << 30,
            store_every: 0,
            eager_search: false,
        };
        let mut states = BTreeMap::<String, u64>::new();
        let (mut gated_out, mut matched) = (0, 0);
        for (results, data) in run(&rules, &case).0.iter().zip(&streams) {
            let whole = results.whole_data.as_ref().unwrap();
            *states.entry(format!("{:?}", whole.state)).or_default() += 1;
            let expected = reference_all(&rules, data);
            matched += expected.len();
            check(results, &expected).unwrap();
            // The gates are sound on the real rules: a rule whose gate
            // fails on a stream does not match it.
            let plan = rules.whole_data();
            for (ns, id) in plan.rules() {
                if plan.gate_fails(ns, id, data, data.len() as u64) {
                    gated_out += 1;
                    assert!(!expected.iter().any(|(rule, _)| rule == id), "{set}: {id}");
                }
            }
        }
        eprintln!("{set}: {gated_out} (rule, stream) pairs ruled out by a gate, {matched} matched");
        assert!(gated_out > 0, "{set}: no gate ever failed");
        eprintln!("{set}: retention states {states:?}");
        assert!(states.contains_key("Scanned"), "{set}: {states:?}");
    }
}

/// Waits up to `limit` for a match event.
fn event_within(
    events: &yaraflow::Subscription,
    limit: std::time::Duration,
) -> Option<yaraflow::MatchEvent> {
    let started = std::time::Instant::now();
    loop {
        if let Some(event) = events.try_recv() {
            return Some(event);
        }
        if started.elapsed() > limit {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn a_retaining_streams_matches_are_reported_at_close_unless_search_is_eager() {
    // `entropy` has no gate: every stream retains its bytes.
    let rules = r#"
        import "math"
        rule mark { strings: $m = "MARK" condition: $m }
        rule entropy { condition: math.entropy(0, filesize) > 7.9 }
    "#;
    for eager_search in [false, true] {
        let mut config = yaraflow::EngineConfig {
            shards: 1,
            ..Default::default()
        };
        config.scanner.eager_search = eager_search;
        let engine =
            yaraflow::Engine::start(RuleSet::from_source(rules, 1024).unwrap(), config).unwrap();
        let handle = engine.handle().blocking();
        let events = handle.subscribe();
        let stream = Uuid::from_u128(7);
        // The match lies well before the end of what was sent: a search
        // settles it without waiting for more bytes.
        let data = [&b"header MARK "[..], &[b'x'; 4096]].concat();
        handle.scan_chunk(stream, data).unwrap();
        // Eager: the batch is searched within its delay (100 ms) and the
        // event follows; deferred: nothing is searched before the close.
        let wait = match eager_search {
            true => std::time::Duration::from_secs(20),
            false => std::time::Duration::from_millis(600),
        };
        let early = event_within(&events, wait);
        assert_eq!(
            early.is_some(),
            eager_search,
            "eager_search: {eager_search}"
        );
        let results = handle.close_stream(stream).unwrap().unwrap();
        assert_eq!(results.rules.len(), 1);
        assert_eq!(results.rules[0].identifier, "mark");
        if !eager_search {
            let at_close = events.recv_blocking().unwrap();
            assert_eq!((at_close.rule.as_str(), at_close.at_close), ("mark", true));
        }
        drop(engine);
    }
}

#[test]
fn a_deferred_stream_whose_gate_fails_only_at_its_end_is_searched_then() {
    // A stream of one byte `M` may still become `MZ`: it retains, its
    // search deferred. Its close decides the header gate (it failed: no
    // second byte), so its verdict needs its matches: the search runs
    // then, and no whole-buffer scan does.
    let rules = r#"
        import "pe"
        rule m { strings: $m = "M" condition: $m }
        rule mz { strings: $m = "M" condition: pe.number_of_sections == 1 and $m }
    "#;
    let rules = RuleSet::from_source(rules, 1024).unwrap();
    let mut scanner = MultiStreamScanner::new(&rules, ScannerConfig::default());
    let stream = Uuid::from_u128(3);
    scanner.scan_chunk(stream, b"M").unwrap();
    assert_eq!(scanner.stats().deferred_searches, 0, "still retaining");
    assert_eq!(scanner.stats().retained_bytes, 1);
    let results = scanner.close_stream(&stream).unwrap().unwrap();
    assert_eq!(
        scanner.stats().deferred_searches,
        1,
        "searched at its verdict"
    );
    assert_eq!(scanner.stats().whole_scans, 0);
    assert_eq!(ours_all(&results), reference_all(&rules, b"M"));
    assert_eq!(results.rules.len(), 1);
}

/// A stream that retains a megabyte of matches (a hostile client's) gets
/// a whole-buffer verdict that lists only the first `max_stream_matches`
/// of them, over all patterns, says so, and stays exact; the lines of the
/// listed matches are right.
#[test]
fn a_whole_buffer_verdict_lists_a_bounded_number_of_matches() {
    let rules = common::compile(
        r#"import "math"
        rule marks { strings: $m = "MARK" $n = "NL" condition: #m > 5 and $n and math.entropy(0, filesize) < 7.9 }"#,
    );
    let config = ScannerConfig::default();
    let limit = config.max_stream_matches;
    let mut scanner = MultiStreamScanner::new(&rules, config);
    let stream = Uuid::from_u128(1);
    let data = b"MARK NL\n".repeat(1 << 17);
    for chunk in data.chunks(64 << 10) {
        scanner.scan_chunk(stream, chunk).unwrap();
    }
    let results = scanner.close_stream(&stream).unwrap().unwrap();
    let whole = results.whole_data.as_ref().unwrap();
    assert_eq!(whole.state, WholeDataState::Scanned);
    assert!(results.matches_cut, "the listing was cut");
    let rule = &results.rules[0];
    assert!(rule.exact && results.exact);
    let listed: usize = rule.patterns.iter().map(|p| p.matches.len()).sum();
    assert_eq!(listed, limit);
    for (i, found) in rule.patterns[0].matches.iter().enumerate() {
        assert_eq!((found.offset, found.line), (8 * i as u64, i as u64 + 1));
    }
    assert_eq!(ours_all(&results)[0].0, "marks");
    // Under the limit nothing is cut.
    let short = Uuid::from_u128(2);
    scanner.scan_chunk(short, &data[..800]).unwrap();
    let results = scanner.close_stream(&short).unwrap().unwrap();
    assert!(!results.matches_cut);
    assert_eq!(ours_all(&results), reference_all(&rules, &data[..800]));
}

/// A line stream keeps no bytes, so its whole-data rules are not decided
/// as on whole data: the one that matched on the lines says
/// `exact: false`, the others are listed as undecided, never silently
/// false; a stream-exact rule stays exact.
#[test]
fn a_line_streams_whole_data_rules_are_listed_undecided() {
    let rules = common::compile(
        r#"
        import "pe"
        import "math"
        rule word { strings: $a = "hello" condition: $a }
        rule word_and_size { strings: $a = "hello" condition: $a and math.entropy(0, filesize) < 9 }
        rule mz { condition: pe.is_pe }
        rule mark_or_mz { strings: $m = "MARK" condition: $m or pe.is_pe }
        "#,
    );
    let mut scanner = MultiStreamScanner::new(&rules, ScannerConfig::default());
    let stream = Uuid::from_u128(7);
    for line in [&b"MZ hello"[..], b"MARK"] {
        scanner.scan_line(stream, line).unwrap();
    }
    let results = scanner.close_stream(&stream).unwrap().unwrap();
    let whole = results
        .whole_data
        .as_ref()
        .expect("the rules have whole-data rules");
    assert_eq!(whole.state, WholeDataState::Lines);
    assert_eq!(whole.undecided, ["default.mz", "default.word_and_size"]);
    assert_eq!(whole.undecided_rules, 2);
    let exact: Vec<(&str, bool)> = results
        .rules
        .iter()
        .map(|r| (r.identifier.as_str(), r.exact))
        .collect();
    assert_eq!(exact, [("word", true), ("mark_or_mz", false)]);
}

/// `pe.imphash()` is cached per thread by YARA-X, and a whole-buffer scan
/// of a PE file leaves its value there. A caller's own scan between two
/// calls of the scanner must not leak into a verdict from spans: a stream
/// that is no PE file never matches on the imphash.
#[test]
fn a_callers_own_scan_of_a_pe_does_not_leak_into_a_verdict() {
    let source = r#"import "pe"
        rule imphash_or_marks { strings: $m = "MARK" condition: pe.imphash() == "d41d8cd98f00b204e9800998ecf8427e" or #m > 2 }"#;
    let rules = RuleSet::from_source(source, 1024).unwrap();
    assert_eq!(rules.whole_data().ungated(), 0, "gated on MZ");
    let pe = pe_file(b"\x55\x8b\xec\x90", 0x400);
    let mut scanner = MultiStreamScanner::new(&rules, ScannerConfig::default());
    let (text, other) = (Uuid::from_u128(1), Uuid::from_u128(2));
    for stream in [text, other] {
        scanner
            .scan_chunk(stream, b"plain text, no MARK to speak of")
            .unwrap();
    }
    assert_eq!(
        ours_all(&scanner.close_stream(&text).unwrap().unwrap()),
        vec![]
    );
    // The caller scans a PE file itself, on this thread.
    let plain = rules.compile_unchanged().unwrap();
    let theirs = yara_x::Scanner::new(&plain)
        .scan(&pe)
        .unwrap()
        .matching_rules()
        .len();
    assert_eq!(theirs, 1, "the PE file's imphash matches");
    let results = scanner.close_stream(&other).unwrap().unwrap();
    assert_eq!(
        ours_all(&results),
        reference_all(&rules, b"plain text, no MARK to speak of")
    );
    assert_eq!(ours_all(&results), vec![]);
}

/// A scanner whose caller claims its thread for it skips the reset of
/// `pe`'s caches on later calls, but a caller's scan made before the claim
/// still does not leak into a verdict.
#[test]
fn a_scan_before_the_thread_is_claimed_does_not_leak_into_a_verdict() {
    let source = r#"import "pe"
        rule imphash_or_marks { strings: $m = "MARK" condition: pe.imphash() == "d41d8cd98f00b204e9800998ecf8427e" or #m > 2 }"#;
    let rules = RuleSet::from_source(source, 1024).unwrap();
    let text_bytes = b"plain text, one MARK only";
    let mut scanner = MultiStreamScanner::new(&rules, ScannerConfig::default());
    let ids = [1, 2, 3].map(Uuid::from_u128);
    for id in ids {
        scanner.scan_chunk(id, text_bytes).unwrap();
    }
    // A verdict from spans: the thread's caches are clean after it.
    assert_eq!(
        ours_all(&scanner.close_stream(&ids[0]).unwrap().unwrap()),
        vec![]
    );
    let plain = rules.compile_unchanged().unwrap();
    let pe = pe_file(b"\x55\x8b\xec\x90", 0x400);
    let mut theirs = yara_x::Scanner::new(&plain);
    let matched = theirs.scan(&pe).unwrap().matching_rules().len();
    assert_eq!(matched, 1, "the PE file's imphash");
    scanner.claim_its_thread();
    for id in &ids[1..] {
        let results = scanner.close_stream(id).unwrap().unwrap();
        assert_eq!(ours_all(&results), reference_all(&rules, text_bytes));
        assert_eq!(ours_all(&results), vec![]);
    }
}

/// In an engine, a shard's own whole-buffer scan of a PE file (a stream
/// that kept its bytes) must not leak its imphash into the next verdict
/// from spans on the shard's thread.
#[test]
fn a_shards_whole_scan_of_a_pe_does_not_leak_into_the_next_verdict() {
    let source = r#"import "pe"
        rule imphash_or_marks { strings: $m = "MARK" condition: pe.imphash() == "d41d8cd98f00b204e9800998ecf8427e" or #m > 2 }"#;
    let config = yaraflow::EngineConfig {
        shards: 1,
        ..yaraflow::EngineConfig::default()
    };
    let engine =
        yaraflow::Engine::start(RuleSet::from_source(source, 1024).unwrap(), config).unwrap();
    let handle = engine.handle().blocking();
    let (first, pe_stream, text) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
    let text_bytes = b"plain text, one MARK only".to_vec();
    for stream in [first, text] {
        handle.scan_chunk(stream, text_bytes.clone()).unwrap();
    }
    handle
        .scan_chunk(pe_stream, pe_file(b"MARK", 0x400))
        .unwrap();
    // A verdict from spans first: the shard's thread starts clean.
    let results = handle.close_stream(first).unwrap().unwrap();
    assert_eq!(ours_all(&results), vec![]);
    let pe = handle.close_stream(pe_stream).unwrap().unwrap();
    assert_eq!(
        pe.whole_data.as_ref().unwrap().state,
        WholeDataState::Scanned
    );
    assert_eq!(pe.rules.len(), 1, "the PE file's imphash matches");
    let results = handle.close_stream(text).unwrap().unwrap();
    assert_eq!(ours_all(&results), vec![], "no imphash for text");
    drop(engine);
}

/// A whole-data rule whose gate fails leaves its patterns to the stream's
/// verdict: the window covers its long pattern and the head its anchored
/// one, though every stream-exact pattern is two bytes long. A stream that
/// is not a PE, with the long pattern across every cut and the anchored
/// one at its anchor, gets the whole-buffer verdict, claimed exact.
#[test]
fn a_failed_gate_leaves_long_and_anchored_patterns_to_the_search() {
    let rules = RuleSet::from_source(
        r#"import "pe"
        rule short { strings: $s = "Q!" condition: $s }
        rule long_or_pe { strings: $l = "0123456789abcdefghijklmnopqrstuvwxyz" condition: $l or pe.number_of_sections == 1 }
        rule anchored_or_pe { strings: $h = "HD" condition: $h at 3 or pe.is_dll() }"#,
        1024,
    )
    .unwrap();
    assert_eq!(rules.analysis().window, 36);
    assert_eq!(rules.analysis().head_len, 5);
    let data = b"...HD....0123456789abcdefghijklmnopqrstuvwxyz....";
    for cut in [1, 7, 12, 20, 30, 40] {
        let mut scanner = MultiStreamScanner::new(&rules, ScannerConfig::default());
        let id = Uuid::new_v4();
        scanner.scan_chunk(id, &data[..cut]).unwrap();
        scanner.scan_chunk(id, &data[cut..]).unwrap();
        let results = scanner.close_stream(&id).unwrap().unwrap();
        let matched: Vec<&str> = results
            .rules
            .iter()
            .map(|r| r.identifier.as_str())
            .collect();
        assert_eq!(matched, ["long_or_pe", "anchored_or_pe"], "cut at {cut}");
        assert!(results.exact, "cut at {cut}");
        assert_eq!(
            ours_all(&results),
            reference_all(&rules, data),
            "cut at {cut}"
        );
    }
}
