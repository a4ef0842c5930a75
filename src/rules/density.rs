//! Stream-exact rules whose patterns match densely in ordinary data.
//!
//! A stream's search finds every match of a pattern and keeps a replay
//! span around it, and its verdict replays the spans into YARA-X. Where a
//! pattern matches every few bytes, the spans cover nearly the whole
//! stream: the verdict does YARA-X's work twice, and YARA-X copies every
//! match's bytes in both passes. yara-rules' `domain` rule
//! (`/([\w\.-]+)/ wide ascii`) matches at almost every byte of text. For
//! such a *dense* rule, retaining a stream's bytes and scanning them whole
//! at its end costs half the work; on text the spans would hold nearly
//! every byte anyway.
//!
//! Density is measured once, when rules load: the compiled rules scan a
//! built-in sample of text (16 KiB of HTTP requests and responses, HTML,
//! JSON and log lines) and one of random bytes, and a rule whose patterns
//! match at least once every [`DENSE_EVERY`] bytes of either is dense. A dense rule stays
//! stream-exact: a stream kept for dense rules alone gives way first (at a
//! retention cap, or at half the retention budget: see `stream::retention`)
//! and is searched from its first byte like any other, its verdict then as
//! exact as the search makes it (not past `max_stream_matches`).

use std::time::Duration;

/// A rule is dense when its patterns match at least once per this many
/// bytes of a sample.
pub const DENSE_EVERY: usize = 64;

/// How long the sample's scan may take; past it no rule is dense (the
/// measure only chooses how streams are searched, never a verdict).
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Bytes of each sample.
const SAMPLE_LEN: usize = 16 * 1024;

/// Words the text sample is made of.
const WORDS: &[&str] = &[
    "the", "user", "account", "order", "status", "price", "item", "search", "result", "page",
    "login", "session", "token", "value", "name", "data", "update", "error", "message", "list",
    "image", "content", "title", "window", "document", "return", "class", "button", "form",
    "https", "www", "example", "com", "api", "service", "request", "started", "finished",
];

/// The rules, among those `candidate` accepts (by namespace and
/// identifier), whose patterns match densely in the samples, with their
/// matches per KiB of the sample they were densest in.
pub fn dense_rules(
    rules: &yara_x::Rules,
    candidate: impl Fn(&str, &str) -> bool,
) -> Vec<DenseRule> {
    let samples = [text_sample(), random_sample()];
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

/// The same pseudo-random numbers on every machine (xorshift64).
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() >> 32) as usize % n
    }
}

/// Random bytes.
fn random_sample() -> Vec<u8> {
    let mut rng = Xorshift(0x9E37_79B9_7F4A_7C15);
    (0..SAMPLE_LEN).map(|_| (rng.next() >> 32) as u8).collect()
}

/// Text as streams carry it, free of anything rules look for: HTTP
/// requests and responses with HTML and JSON bodies, and log lines.
fn text_sample() -> Vec<u8> {
    use std::fmt::Write;
    let mut rng = Xorshift(0x2545_F491_4F6C_DD1D);
    let mut text = String::new();
    while text.len() < SAMPLE_LEN {
        let [a, b, c, d]: [&str; 4] = std::array::from_fn(|_| WORDS[rng.below(WORDS.len())]);
        let n = text.len();
        let body = match n % 3 {
            0 => format!(
                "<html><head><title>{a} {b}</title></head><body><div class=\"{c}\"><p>{}</p></div></body></html>\n",
                words(&mut rng, 40, " ")
            ),
            1 => format!(
                "{{\"{a}\":\"{b} {c}\",\"{d}\":{n},\"items\":[\"{}\"]}}\n",
                words(&mut rng, 12, "\",\"")
            ),
            _ => format!(
                "2026-01-01T12:00:00Z INFO {a} {b} {c} id={n} {}\n",
                words(&mut rng, 8, " ")
            ),
        };
        let _ = write!(
            text,
            "GET /{a}/{b}?id={n} HTTP/1.1\r\nHost: {c}.example.com\r\nAccept: */*\r\n\r\n\
             HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
    }
    text.into_bytes()
}

/// `n` words of [`WORDS`], joined by `separator`.
fn words(rng: &mut Xorshift, n: usize, separator: &str) -> String {
    let words: Vec<&str> = (0..n).map(|_| WORDS[rng.below(WORDS.len())]).collect();
    words.join(separator)
}

#[cfg(test)]
mod tests {
    use crate::rules::{RuleOptions, RuleSet};

    const RULES: &str = r#"
        rule words { strings: $w = /[\w.-]+/ condition: $w }
        rule header { strings: $h = "Content-Type" condition: $h }
        rule nothing { strings: $n = "no such bytes anywhere" condition: $n }
        rule whole { strings: $w = /[a-z]+/ condition: $w and uint32(filesize - 4) == 0 }
        rule high_bytes { strings: $h = /[\x80-\xff]/ condition: $h }
        private rule hidden { strings: $w = /[a-z]{2}/ private condition: $w }
        rule never_true { strings: $w = /[a-z]{3}/ condition: #w > 1000000 }
        rule every_page { strings: $p = "page" condition: $p }
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
        // A word of the text: it matches, but not once per 64 bytes.
        assert_eq!(dense_of(&rules, "every_page"), None);
        // Dense in random bytes only (the text sample is ASCII).
        assert!(dense_of(&rules, "high_bytes").is_some());
        // Private rules and patterns count, and rules that do not match.
        assert!(dense_of(&rules, "hidden").is_some());
        assert!(dense_of(&rules, "never_true").is_some());
        // Dense too, but whole-data: streams retain for it anyway.
        assert!(!rules.is_exact("default", "whole"));
        assert_eq!(dense_of(&rules, "whole"), None);
        assert_eq!(rules.analysis().classes().dense, 4);
        assert!(rules.whole_data().streams_retain());
        assert!(rules.whole_data().has_dense());
    }

    #[test]
    fn the_samples_are_the_same_on_every_call_and_text_is_text() {
        assert_eq!(super::text_sample(), super::text_sample());
        assert_eq!(super::random_sample(), super::random_sample());
        let text = super::text_sample();
        assert!(text.len() >= super::SAMPLE_LEN);
        assert!(text.iter().all(|b| b.is_ascii()));
        let page = text.windows(4).filter(|w| w == b"page").count();
        assert!(page > 0 && page * super::DENSE_EVERY < text.len());
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
