//! Benchmarks of yaraflow against what a user would otherwise pick,
//! measured side by side in one run so that the ratios hold on a noisy
//! machine (`yaraflow bench` prints them; `benches/` has the criterion
//! micro-benchmarks).
//!
//! [`workload`] generates the streams and the order of their chunks;
//! [`contenders`] runs each way of scanning them; [`Report`] puts the
//! figures side by side, each as a ratio to YARA-X scanning every stream
//! as one whole buffer, with whether its verdicts equal that reference.
//!
//! This lives in the library rather than the command so that the
//! criterion benchmarks and tests use the same workload.

pub mod contenders;
pub mod store;
pub mod workload;

use crate::rules::RuleClasses;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

pub use contenders::Outcome;
pub use workload::{Step, Traffic, Workload, WorkloadSpec};

/// `count` rules, each one random 10-byte hex string (as in the design
/// notes), and their pattern bytes (to plant in the workload).
pub fn synthetic_rules(count: usize, seed: u64) -> (String, Vec<Vec<u8>>) {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let patterns: Vec<Vec<u8>> = (0..count)
        .map(|_| (0..10).map(|_| rng.gen()).collect())
        .collect();
    let source = patterns
        .iter()
        .enumerate()
        .map(|(i, bytes)| {
            let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
            format!(
                "rule r{i} {{ strings: $a = {{ {} }} condition: $a }}\n",
                hex.join(" ")
            )
        })
        .collect();
    (source, patterns)
}

/// One contender's line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct ContenderReport {
    /// What ran.
    pub name: String,
    /// Streams it ran on.
    pub streams: usize,
    /// Throughput, in megabytes (10^6 bytes) per second.
    pub mb_per_s: f64,
    /// Its throughput over the whole-buffer scan's.
    pub ratio_to_whole_buffer: f64,
    /// Resident bytes per open stream (halfway through the run).
    pub rss_bytes_per_stream: Option<f64>,
    /// Cost of opening a stream.
    pub open_ns_per_stream: Option<f64>,
    /// Cost of closing a stream that matched nothing.
    pub close_ns_per_stream: Option<f64>,
    /// The same, per stream, when closed 64 at a time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bulk_close_ns_per_stream: Option<f64>,
    /// 99th percentile of a chunk call's duration.
    pub p99_chunk_latency_us: Option<f64>,
    /// Whether every stream's matching rules equal the whole-buffer scan's
    /// (for the streams it ran on).
    pub verdicts_equal_whole_buffer: bool,
    /// Streams whose verdict differs.
    pub verdicts_differing: usize,
    /// Streams with at least one matching rule.
    pub streams_matching: usize,
    /// What the reader should know.
    pub note: Option<String>,
}

/// A benchmark run: the workload and every contender's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// What ran (its fields appear at the top level of the JSON).
    #[serde(flatten)]
    pub header: ReportHeader,
    /// The contenders, the reference first.
    pub contenders: Vec<ContenderReport>,
    /// The cost of the actor hop, when measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor_hop: Option<contenders::ActorHop>,
    /// The scanner's ratio to the reference over rounds run back to back,
    /// when asked for (`yaraflow bench --rounds`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scanner_rounds: Option<PairedRounds>,
    /// The design floor's ratio to the reference over the same rounds
    /// (`yaraflow bench --rounds N --floor`; see
    /// [`contenders::design_floor`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub floor_rounds: Option<PairedRounds>,
}

/// One contender's throughput over the reference's, measured in several
/// rounds, each round running the two back to back (in alternating order,
/// so that neither always runs on the warmer machine). On a shared machine
/// one run's ratio can be off by a fifth; the median of paired rounds is
/// what a claim should quote, with the range beside it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PairedRounds {
    /// Each round's ratio, in the order run.
    pub ratios: Vec<f64>,
    /// Their median (the mean of the middle two for an even count).
    pub median: f64,
    /// The lowest.
    pub min: f64,
    /// The highest.
    pub max: f64,
    /// Whether the contender's verdicts equalled the reference's in every
    /// round; `None` for one that gives no verdicts (the design floor).
    pub verdicts_equal: Option<bool>,
}

impl PairedRounds {
    /// The summary of `ratios` (at least one).
    pub fn new(ratios: Vec<f64>, verdicts_equal: Option<bool>) -> PairedRounds {
        let mut sorted = ratios.clone();
        sorted.sort_unstable_by(f64::total_cmp);
        let middle = sorted.len() / 2;
        let median = match sorted.len() % 2 {
            1 => sorted[middle],
            _ => (sorted[middle - 1] + sorted[middle]) / 2.0,
        };
        PairedRounds {
            median,
            min: sorted[0],
            max: sorted[sorted.len() - 1],
            ratios,
            verdicts_equal,
        }
    }
}

/// The workload a report is about.
#[derive(Debug, Clone, Serialize)]
pub struct ReportHeader {
    /// Concurrent streams.
    pub streams: usize,
    /// Chunk size.
    pub chunk_size: usize,
    /// The rules, as given (`1000 synthetic` or the paths).
    pub rules: String,
    /// How many rules compiled.
    pub rule_count: usize,
    /// The rule sets' names: the last component of each path given (or
    /// `synthetic`).
    pub rule_sets: Vec<String>,
    /// How many rules are stream-exact, and whole-data with and without a
    /// gate (see [`crate::rules::RuleAnalysis::classes`]).
    pub rule_classes: RuleClasses,
    /// Bytes over all streams.
    pub bytes: u64,
    /// `interleaved` (all streams as long) or `short_streams`.
    pub workload: String,
    /// What the streams' bytes look like.
    pub traffic: Traffic,
    /// Whether the files were planted at the start of streams.
    pub plant_at_start: bool,
}

impl Report {
    /// A report of `outcomes`, the first of which is the reference.
    pub fn new(header: ReportHeader, outcomes: &[Outcome]) -> Report {
        let reference = &outcomes[0];
        let empty = contenders::fingerprint(std::iter::empty());
        let contenders = outcomes
            .iter()
            .map(|outcome| {
                let differing = outcome
                    .verdicts
                    .iter()
                    .zip(&reference.verdicts)
                    .filter(|(a, b)| a != b)
                    .count();
                ContenderReport {
                    name: outcome.name.clone(),
                    streams: outcome.streams,
                    mb_per_s: outcome.mb_per_s(),
                    ratio_to_whole_buffer: outcome.mb_per_s() / reference.mb_per_s().max(1e-9),
                    rss_bytes_per_stream: outcome.rss_bytes_per_stream,
                    open_ns_per_stream: outcome.open_ns_per_stream,
                    close_ns_per_stream: outcome.close_ns_per_stream,
                    bulk_close_ns_per_stream: outcome.bulk_close_ns_per_stream,
                    p99_chunk_latency_us: outcome.p99_chunk_latency_us,
                    verdicts_equal_whole_buffer: differing == 0
                        && outcome.verdicts.len() == outcome.streams,
                    verdicts_differing: differing,
                    streams_matching: outcome.verdicts.iter().filter(|v| **v != empty).count(),
                    note: outcome.note.clone(),
                }
            })
            .collect();
        Report {
            header,
            contenders,
            actor_hop: None,
            scanner_rounds: None,
            floor_rounds: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every contender on a small workload with planted patterns: the
    /// verdicts of each equal the whole-buffer scan's, and some match.
    #[test]
    fn every_contender_agrees_with_the_whole_buffer_scan() {
        let (source, patterns) = synthetic_rules(50, 3);
        let rules = crate::RuleSet::from_source(&source, 1024).unwrap();
        for short_streams in [false, true] {
            let spec = WorkloadSpec {
                streams: 400,
                chunk_size: 300,
                total_bytes: 400 * 3000,
                short_streams,
                match_fraction: 0.3,
                seed: 5,
                traffic: Traffic::Random,
                plant_at_start: false,
            };
            let workload = Workload::generate(&spec, &patterns);
            let plain = rules.compile_unchanged().unwrap();
            let outcomes = vec![
                contenders::whole_buffer(&plain, &workload).unwrap(),
                contenders::blocks_per_stream(&plain, &workload, 100, 9).unwrap(),
                contenders::multi_stream(&rules, &workload, false).unwrap(),
                contenders::engine(
                    || crate::RuleSet::from_source(&source, 1024).unwrap(),
                    &workload,
                    2,
                    false,
                )
                .unwrap(),
            ];
            let header = ReportHeader {
                streams: workload.streams(),
                chunk_size: spec.chunk_size,
                rules: "50 synthetic".into(),
                rule_count: 50,
                rule_sets: vec!["synthetic".into()],
                rule_classes: rules.analysis().classes(),
                bytes: workload.bytes(),
                workload: "test".into(),
                traffic: Traffic::Random,
                plant_at_start: false,
            };
            let report = Report::new(header, &outcomes);
            assert_eq!(
                report.header.rule_classes,
                RuleClasses {
                    stream_exact: 50,
                    dense: 0,
                    whole_data_gated: 0,
                    whole_data_ungated: 0,
                }
            );
            for contender in &report.contenders {
                assert!(contender.verdicts_equal_whole_buffer, "{contender:?}");
                assert!(contender.mb_per_s > 0.0);
            }
            assert_eq!(report.contenders[1].streams, 100, "the blocks cap");
            let matching = report.contenders[0].streams_matching;
            assert!(matching > 40 && matching < 300, "{matching} streams match");
        }
    }

    /// The design floor searches every byte with every tail: it walks at
    /// least the matches that whole-buffer scans find, however the chunks
    /// fall in its batches.
    #[test]
    fn the_design_floor_finds_every_match() {
        let (source, patterns) = synthetic_rules(50, 3);
        let rules = crate::RuleSet::from_source(&source, 1024).unwrap();
        let spec = WorkloadSpec {
            streams: 300,
            chunk_size: 200,
            total_bytes: 300 * 2000,
            short_streams: false,
            match_fraction: 0.5,
            seed: 7,
            traffic: Traffic::Random,
            plant_at_start: false,
        };
        let workload = Workload::generate(&spec, &patterns);
        let plain = rules.compile_unchanged().unwrap();
        let mut scanner = yara_x::Scanner::new(&plain);
        let mut whole = 0;
        for index in 0..workload.streams() {
            let results = scanner.scan(workload.stream(index)).unwrap();
            whole += results
                .matching_rules()
                .flat_map(|r| r.patterns())
                .map(|p| p.matches().count())
                .sum::<usize>();
        }
        assert!(whole > 50, "{whole} matches planted");
        let tail = rules.analysis().window - 1;
        for batch_bytes in [1 << 10, 64 << 10] {
            let (outcome, found) =
                contenders::design_floor(&plain, &workload, tail, batch_bytes).unwrap();
            assert!(
                found >= whole,
                "{found} of {whole} with {batch_bytes}-byte batches"
            );
            assert_eq!(outcome.bytes, workload.bytes());
        }
    }

    #[test]
    fn paired_rounds_quote_the_median_and_the_range() {
        let odd = PairedRounds::new(vec![0.7, 0.5, 0.9], Some(true));
        assert_eq!((odd.median, odd.min, odd.max), (0.7, 0.5, 0.9));
        assert_eq!(odd.ratios, vec![0.7, 0.5, 0.9], "kept in the order run");
        let even = PairedRounds::new(vec![0.8, 0.6, 1.0, 0.4], Some(false));
        assert!((even.median - 0.7).abs() < 1e-12, "{}", even.median);
        assert_eq!((even.min, even.max), (0.4, 1.0));
        assert_eq!(even.verdicts_equal, Some(false));
    }

    #[test]
    fn a_wrong_verdict_is_reported() {
        let mut outcomes = vec![Outcome::default(), Outcome::default()];
        outcomes[0].verdicts = vec![1, 2, 3];
        outcomes[0].streams = 3;
        outcomes[1].verdicts = vec![1, 9, 3];
        outcomes[1].streams = 3;
        let header = ReportHeader {
            streams: 3,
            chunk_size: 1,
            rules: String::new(),
            rule_count: 0,
            rule_sets: Vec::new(),
            rule_classes: RuleClasses::default(),
            bytes: 0,
            workload: String::new(),
            traffic: Traffic::Random,
            plant_at_start: false,
        };
        let report = Report::new(header, &outcomes);
        assert!(report.contenders[0].verdicts_equal_whole_buffer);
        assert!(!report.contenders[1].verdicts_equal_whole_buffer);
        assert_eq!(report.contenders[1].verdicts_differing, 1);
    }
}
