//! Stream-exact rules whose patterns match densely in ordinary data.
//!
//! A stream's search finds every match of a pattern and keeps a replay
//! span around it, and its verdict replays the spans into YARA-X. Where a
//! pattern matches every few bytes, the spans cover nearly the whole
//! stream: the verdict does YARA-X's work twice, and YARA-X copies every
//! match's bytes in both passes. yara-rules' `domain` rule
//! (`/([\w\.-]+)/ wide ascii`) matches at almost every byte of text. For
//! such a *dense* rule, retaining a stream's bytes and scanning them whole
//! at its end costs half the work, and no more memory than the spans would.
//!
//! Density is measured once, when rules load: the compiled rules scan a
//! built-in sample of text (an HTTP session and log lines) and of random
//! bytes, and a rule whose patterns match at least once every
//! [`DENSE_EVERY`] bytes of either is dense. A dense rule stays
//! stream-exact: streams retain their bytes for it only up to the
//! retention caps, and a stream that passes one is searched from its first
//! byte like any other, so its verdict is exact either way.

use std::time::Duration;

/// A rule is dense when its patterns match at least once per this many
/// bytes of a sample.
pub const DENSE_EVERY: usize = 64;

/// How long the sample's scan may take; past it no rule is dense (the
/// measure only chooses how streams are searched, never a verdict).
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Bytes of the random sample.
const RANDOM_SAMPLE_LEN: usize = 4096;

/// Text as streams carry it: an HTTP session and an application's log.
const TEXT_SAMPLES: [&[u8]; 2] = [
    include_bytes!("../../data/samples/http_session.txt"),
    include_bytes!("../../data/samples/app.log"),
];

/// The rules, among those `candidate` accepts (by namespace and
/// identifier), whose patterns match densely in the samples, with their
/// matches per KiB of the sample they were densest in.
pub fn dense_rules(
    rules: &yara_x::Rules,
    candidate: impl Fn(&str, &str) -> bool,
) -> Vec<DenseRule> {
    let text = TEXT_SAMPLES.concat();
    let samples = [text, random_sample()];
    let mut scanner = yara_x::Scanner::new(rules);
    scanner.set_timeout(SAMPLE_TIMEOUT);
    let mut dense: Vec<DenseRule> = Vec::new();
    for sample in &samples {
        let Ok(results) = scanner.scan(sample) else {
            return Vec::new();
        };
        let rules = results
            .matching_rules()
            .include_private(true)
            .chain(results.non_matching_rules().include_private(true));
        for rule in rules.filter(|r| candidate(r.namespace(), r.identifier())) {
            let matches: usize = rule
                .patterns()
                .include_private(true)
                .map(|p| p.matches().count())
                .sum();
            if matches * DENSE_EVERY < sample.len() {
                continue;
            }
            let per_kib = matches as f64 * 1024.0 / sample.len() as f64;
            let known = dense
                .iter_mut()
                .find(|d| d.namespace == rule.namespace() && d.identifier == rule.identifier());
            match known {
                Some(d) => d.matches_per_kib = d.matches_per_kib.max(per_kib),
                None => dense.push(DenseRule {
                    namespace: rule.namespace().to_string(),
                    identifier: rule.identifier().to_string(),
                    matches_per_kib: per_kib,
                }),
            }
        }
    }
    dense
}

/// A rule whose patterns match densely.
#[derive(Debug, Clone, PartialEq)]
pub struct DenseRule {
    /// The rule's namespace.
    pub namespace: String,
    /// The rule's identifier.
    pub identifier: String,
    /// Its patterns' matches per KiB of the sample they were densest in.
    pub matches_per_kib: f64,
}

/// The same pseudo-random bytes on every machine (xorshift64).
fn random_sample() -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..RANDOM_SAMPLE_LEN)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 32) as u8
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::rules::{RuleOptions, RuleSet};

    const RULES: &str = r#"
        rule words { strings: $w = /[\w.-]+/ condition: $w }
        rule header { strings: $h = "Content-Type" condition: $h }
        rule nothing { strings: $n = "no such bytes anywhere" condition: $n }
        rule whole { strings: $w = /[a-z]+/ condition: $w and uint32(filesize - 4) == 0 }
    "#;

    fn dense_of(rules: &RuleSet, identifier: &str) -> Option<u32> {
        let report = rules
            .analysis()
            .rules
            .iter()
            .find(|r| r.identifier == identifier);
        report.expect("the rule is analysed").dense
    }

    #[test]
    fn only_stream_exact_rules_that_match_every_few_bytes_are_dense() {
        let rules = RuleSet::from_source(RULES, 1024).unwrap();
        // Nearly every byte of text starts a match.
        assert!(dense_of(&rules, "words").is_some_and(|per_kib| per_kib > 256));
        assert_eq!(dense_of(&rules, "header"), None);
        assert_eq!(dense_of(&rules, "nothing"), None);
        // Dense too, but whole-data: streams retain for it anyway.
        assert!(!rules.is_exact("default", "whole"));
        assert_eq!(dense_of(&rules, "whole"), None);
        assert_eq!(rules.analysis().classes().dense, 1);
        assert!(rules.whole_data().streams_retain());
    }

    #[test]
    fn dense_rules_can_be_searched_like_the_others() {
        let options = RuleOptions {
            whole_scan_dense: false,
            ..RuleOptions::new(1024)
        };
        // Without the whole-data rule, nothing else makes streams retain.
        let source: Vec<&str> = RULES
            .lines()
            .filter(|l| !l.contains("rule whole"))
            .collect();
        let source = source.join("\n");
        let rules = RuleSet::from_sources_with(vec![("<test>".into(), source)], &options).unwrap();
        assert_eq!(dense_of(&rules, "words"), None);
        assert_eq!(rules.analysis().classes().dense, 0);
        assert!(!rules.whole_data().streams_retain());
    }
}
