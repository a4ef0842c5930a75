//! A fuzzing-style robustness suite on stable Rust: seeded mutations of
//! every input a client or a file controls, fed to the code that reads it.
//! Mutated captures (bit flips, truncations, absurd block lengths), mutated
//! bulk bodies of `POST /v1/chunks`, mutated store entries and store
//! files, and mutated rule text: no panic, no hang, every error a typed
//! error with a message. Each case is a few milliseconds; the number of
//! cases per input is `ROBUSTNESS_CASES` (default 500). A failure prints
//! the seed that made it.

use std::path::Path;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use yaraflow::pcap::{CaptureReader, FlowLimits, FlowTable, Frame};
use yaraflow::service::framing;
use yaraflow::store::ContextStore;
use yaraflow::test_support::codec;
use yaraflow::{MultiStreamScanner, RuleSet, ScannerConfig, StreamMode, Uuid};

fn cases() -> u64 {
    std::env::var("ROBUSTNESS_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(500)
}

/// One mutation of `data`: bit flips, a truncation, a run of bytes
/// overwritten, or an aligned 32-bit word set to an absurd length.
fn mutate(rng: &mut StdRng, data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    if out.is_empty() {
        return out;
    }
    match rng.gen_range(0..5) {
        0 => {
            for _ in 0..rng.gen_range(1..20) {
                let at = rng.gen_range(0..out.len());
                out[at] ^= 1 << rng.gen_range(0..8);
            }
        }
        1 => out.truncate(rng.gen_range(0..out.len())),
        2 => {
            let at = rng.gen_range(0..out.len());
            let end = (at + rng.gen_range(1..64)).min(out.len());
            rng.fill(&mut out[at..end]);
        }
        3 => {
            let words = out.len() / 4;
            if words > 0 {
                let at = 4 * rng.gen_range(0..words);
                let absurd = [0u32, 1, 3, 0x7fff_ffff, 0xffff_ffff, out.len() as u32 + 12];
                let value = absurd[rng.gen_range(0..absurd.len())];
                out[at..at + 4].copy_from_slice(&value.to_le_bytes());
            }
        }
        _ => {
            // A slice of the input copied elsewhere (a page over another).
            let len = rng.gen_range(1..=out.len().min(4096));
            let from = rng.gen_range(0..=out.len() - len);
            let to = rng.gen_range(0..=out.len() - len);
            let piece = out[from..from + len].to_vec();
            out[to..to + len].copy_from_slice(&piece);
        }
    }
    out
}

/// Reads a capture to its end (or its first error) through a small flow
/// table; returns the frames read.
fn read_capture(bytes: Vec<u8>) -> u64 {
    let Ok(mut reader) = CaptureReader::new(std::io::Cursor::new(bytes)) else {
        return 0;
    };
    let mut table = FlowTable::new(FlowLimits {
        max_pending: 1 << 16,
        max_open: 64,
        ..FlowLimits::default()
    });
    let mut events = Vec::new();
    while let Ok(Some(frame)) = reader.next_frame() {
        if let Frame::Segment(segment) = frame {
            table.segment(segment, &mut events);
        }
        events.clear();
    }
    table.finish(&mut events);
    reader.frames()
}

#[test]
fn mutated_captures_are_read_or_refused_without_a_panic() {
    let captures = [
        "data/pcap/http-loopback.pcapng",
        "data/pcap/lossy-link.pcap",
        "data/pcap/offload-loopback.pcapng",
    ];
    for (i, path) in captures.iter().enumerate() {
        let original = std::fs::read(path).unwrap();
        assert!(read_capture(original.clone()) >= 80, "{path} reads whole");
        for case in 0..cases() {
            let seed = (i as u64) << 32 | case;
            let mut rng = StdRng::seed_from_u64(seed);
            let mutant = mutate(&mut rng, &original);
            let outcome = std::panic::catch_unwind(|| read_capture(mutant));
            assert!(outcome.is_ok(), "{path}: seed {seed} panicked");
        }
    }
}

#[test]
fn mutated_bulk_bodies_parse_or_name_the_broken_frame() {
    let mut rng = StdRng::seed_from_u64(7);
    for case in 0..cases() * 5 {
        let frames: Vec<(Uuid, Vec<u8>)> = (0..rng.gen_range(0..8))
            .map(|_| {
                let mut chunk = vec![0u8; rng.gen_range(0..300)];
                rng.fill(&mut chunk[..]);
                (Uuid::from_u128(rng.gen()), chunk)
            })
            .collect();
        let body = framing::encode(frames.iter().map(|(id, c)| (*id, &c[..])));
        let parsed = framing::parse(&Bytes::from(body.clone())).unwrap();
        assert_eq!(parsed.len(), frames.len());
        let mutant = Bytes::from(mutate(&mut rng, &body));
        match framing::parse(&mutant) {
            // Whatever parses covers the body exactly.
            Ok(parsed) => {
                let covered: usize = parsed
                    .iter()
                    .map(|(_, c)| c.len() + framing::HEADER_LEN)
                    .sum();
                assert_eq!(covered, mutant.len(), "case {case}");
            }
            Err(err) => assert!(
                err.to_string().contains("frame at byte"),
                "case {case}: {err}"
            ),
        }
    }
}

/// Stream contexts with matches in them, in their stored form.
fn stored_contexts(rules: &RuleSet) -> Vec<yaraflow::StreamContext> {
    let mut scanner = MultiStreamScanner::new(rules, ScannerConfig::default());
    let ids: Vec<Uuid> = (0..8).map(|i| Uuid::from_u128(i + 1)).collect();
    let session = std::fs::read("data/samples/http_session.txt").unwrap();
    for (i, id) in ids.iter().enumerate() {
        scanner.open_stream(*id, StreamMode::Chunks).unwrap();
        for chunk in session[..session.len() * (i + 1) / 8].chunks(100) {
            scanner.scan_chunk(*id, chunk).unwrap();
        }
    }
    scanner.evict_streams(&ids).unwrap()
}

#[test]
fn mutated_store_entries_decode_or_are_refused() {
    let rules = RuleSet::from_paths(&["data/rules"], 1024).unwrap();
    let mut rng = StdRng::seed_from_u64(11);
    for context in stored_contexts(&rules) {
        let mut entry = Vec::new();
        codec::encode(&context, *b"testrule", &mut entry);
        assert!(codec::decode(context.id, &entry).is_ok());
        for case in 0..cases() {
            let mutant = mutate(&mut rng, &entry);
            if let Err(reason) = codec::decode(context.id, &mutant) {
                assert!(!reason.is_empty(), "case {case}");
            }
        }
    }
}

#[test]
fn mutated_store_files_open_read_or_are_refused() {
    let rules = RuleSet::from_paths(&["data/rules"], 1024).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("streams.redb");
    {
        let store = ContextStore::open(&path, 1 << 20).unwrap();
        let contexts = stored_contexts(&rules);
        store.write(contexts.iter(), *b"testrule", &[]).unwrap();
    }
    let original = std::fs::read(&path).unwrap();
    let mut rng = StdRng::seed_from_u64(13);
    for case in 0..cases() / 4 {
        let mutant_path = dir.path().join(format!("mutant-{case}.redb"));
        std::fs::write(&mutant_path, mutate(&mut rng, &original)).unwrap();
        read_store(&mutant_path, case);
        std::fs::remove_file(&mutant_path).unwrap();
    }
}

/// A store page copied over another (a misdirected write): the file is
/// refused as damaged, naming the missing entries, or lists every stream
/// it holds, never fewer in silence (they would restart from 0).
#[test]
fn a_page_copied_over_another_never_loses_streams_in_silence() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("streams.redb");
    let rules = RuleSet::from_paths(&["data/rules"], 1024).unwrap();
    let template = stored_contexts(&rules).remove(7);
    let contexts: Vec<yaraflow::StreamContext> = (0..3000u128)
        .map(|i| {
            let mut context = template.clone();
            context.id = Uuid::from_u128(i * 7919 + 1);
            context
        })
        .collect();
    {
        let store = ContextStore::open(&path, 1 << 20).unwrap();
        store.write(contexts.iter(), *b"testrule", &[]).unwrap();
    }
    let original = std::fs::read(&path).unwrap();
    const PAGE: usize = 4096;
    let pages = original.len() / PAGE;
    let mut rng = StdRng::seed_from_u64(23);
    let (mut refused, mut whole) = (0, 0);
    for case in 0..cases().min(400) {
        let (from, to) = (rng.gen_range(1..pages), rng.gen_range(1..pages));
        let mut mutant = original.clone();
        mutant.copy_within(from * PAGE..(from + 1) * PAGE, to * PAGE);
        let mutant_path = dir.path().join(format!("page-{case}.redb"));
        std::fs::write(&mutant_path, &mutant).unwrap();
        let listing = ContextStore::open(&mutant_path, 1 << 20).and_then(|s| s.entries());
        match listing {
            Ok(listing) => {
                let listed = listing.entries.len() + listing.damaged.len();
                assert_eq!(listed, contexts.len(), "case {case}: page {from} over {to}");
                whole += 1;
            }
            Err(err) => {
                assert!(
                    err.to_string().contains("stream store"),
                    "case {case}: {err}"
                );
                refused += 1;
            }
        }
        std::fs::remove_file(&mutant_path).unwrap();
    }
    eprintln!("page copies: {refused} refused as damaged, {whole} listed every stream");
    assert!(
        refused > 0,
        "no page copy damaged the table: the test shows nothing"
    );
}

/// Opens a store and reads every entry it lists: each step succeeds or
/// fails with a `StoreError` that says something.
fn read_store(path: &Path, case: u64) {
    let store = match ContextStore::open(path, 1 << 20) {
        Ok(store) => store,
        Err(err) => return assert!(!err.to_string().is_empty(), "case {case}"),
    };
    let listing = match store.entries() {
        Ok(listing) => listing,
        Err(err) => return assert!(!err.to_string().is_empty(), "case {case}"),
    };
    for entry in listing.entries.iter().take(32) {
        if let Err(err) = store.read(entry.stream) {
            assert!(!err.to_string().is_empty(), "case {case}");
        }
    }
}

#[test]
fn mutated_rule_text_compiles_or_fails_with_a_message() {
    let original = std::fs::read("data/rules/default.yar").unwrap();
    let mut rng = StdRng::seed_from_u64(17);
    let mut compiled = 0;
    for case in 0..cases() {
        let mutant = mutate(&mut rng, &original);
        let text = String::from_utf8_lossy(&mutant);
        match RuleSet::from_source(&text, 1024) {
            Ok(_) => compiled += 1,
            Err(err) => assert!(!err.to_string().is_empty(), "case {case}"),
        }
    }
    eprintln!("{compiled} of {} mutated rule files compiled", cases());
}
