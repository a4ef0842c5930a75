//! Differential property tests: the verdict of the multi-stream scanner
//! equals YARA-X's own verdict over the same bytes, for random rule sets,
//! random data, random chunkings (1-byte chunks included), random
//! interleavings of several streams, and random batch sizes. Verdicts asked
//! in the middle of a stream must equal a whole-buffer scan of the prefix.
//! Streams are also evicted to their stored form and restored (into the
//! same scanner, or all into a new one, as after a restart) at random
//! points: that must change nothing either.

mod common;

use common::{compile_searched, ours, reference, reference_lines};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use yaraflow::rules::open_ended::MAX_REACH;
use yaraflow::test_support::codec;
use yaraflow::{MultiStreamScanner, RuleSet, ScannerConfig, StreamMode, Uuid};

/// Bytes the data and the patterns are drawn from: word and non-word bytes,
/// a newline, NUL (the second half of wide characters) and upper case.
const ALPHABET: &[u8] = b"abcAB \n-_\x00";

fn byte() -> impl Strategy<Value = u8> {
    proptest::sample::select(ALPHABET)
}

fn literal(len: std::ops::Range<usize>) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(proptest::sample::select(&b"abcAB -_"[..]), len)
}

fn escape(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b == b' ' {
                (b as char).to_string()
            } else {
                format!("\\x{b:02x}")
            }
        })
        .collect()
}

fn regex_escape(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("\\x{b:02x}")
            }
        })
        .collect()
}

#[derive(Debug, Clone)]
enum PatternSpec {
    Text {
        text: Vec<u8>,
        modifiers: Vec<&'static str>,
    },
    Hex(String),
    Regex {
        body: String,
        modifiers: Vec<&'static str>,
    },
}

impl PatternSpec {
    fn source(&self) -> String {
        match self {
            PatternSpec::Text { text, modifiers } => {
                format!("\"{}\" {}", escape(text), modifiers.join(" "))
            }
            PatternSpec::Hex(hex) => format!("{{ {hex} }}"),
            PatternSpec::Regex { body, modifiers } => format!("/{body}/ {}", modifiers.join(" ")),
        }
    }

    /// Bytes worth planting in the data so that the pattern matches: every
    /// form its modifiers make it match (the wide form, other cases, each
    /// xor key's form, each base64 alignment), so that each modifier is
    /// seen matching (see [`Tally`]).
    fn plants(&self) -> Vec<Vec<u8>> {
        match self {
            PatternSpec::Text { text, modifiers } => text_forms(text, modifiers),
            PatternSpec::Hex(hex) => vec![hex
                .split_whitespace()
                .filter_map(|t| u8::from_str_radix(t, 16).ok())
                .collect()],
            PatternSpec::Regex { body, modifiers } => {
                let plain: Vec<u8> = body.bytes().filter(|b| b.is_ascii_lowercase()).collect();
                let mut forms = vec![plain.clone()];
                if modifiers.contains(&"wide") {
                    forms.push(widen(&plain));
                }
                forms
            }
        }
    }

    /// The shortest match of the pattern as `rules::match_reads` counts it
    /// (1 for regexes, whose reads leave the rule whole-data anyway).
    fn min_len(&self) -> usize {
        match self {
            PatternSpec::Text { text, modifiers } => {
                let wide_only = modifiers.contains(&"wide") && !modifiers.contains(&"ascii");
                text.len() * if wide_only { 2 } else { 1 }
            }
            PatternSpec::Hex(hex) => hex_min_len(hex),
            PatternSpec::Regex { .. } => 1,
        }
    }

    /// The modifiers and kinds this pattern exercises, for [`Tally`].
    fn features(&self) -> Vec<&'static str> {
        match self {
            PatternSpec::Text { modifiers, .. } => {
                let mut features = vec!["text"];
                features.extend(modifiers.iter().map(|m| m.split('(').next().unwrap_or(m)));
                features
            }
            PatternSpec::Hex(hex) => {
                let mut features = vec!["hex"];
                if hex.contains('?') {
                    features.push("hex wildcard");
                }
                if hex.contains('|') {
                    features.push("hex alternative");
                }
                if hex.contains('[') {
                    features.push("hex jump");
                }
                features
            }
            PatternSpec::Regex { body, modifiers } => {
                let mut features = vec!["regex"];
                let mut looks_around = false;
                for (look, name) in [
                    ("^", "regex ^"),
                    ("$", "regex $"),
                    ("\\b", "regex \\b"),
                    ("\\B", "regex \\B"),
                ] {
                    if body.contains(look) {
                        features.push(name);
                        looks_around = true;
                    }
                }
                if body.contains("{,") {
                    features.push("regex {,n}");
                }
                if looks_behind_optional(body) {
                    features.push("regex look-around behind an optional item");
                }
                // The generator makes `*` and `+` only where the search
                // follows the regex (see `regex_pattern`).
                if body.contains('*') || body.contains('+') {
                    features.push("regex open-ended");
                    if modifiers.contains(&"wide") {
                        features.push("regex open-ended wide");
                    }
                    if looks_around {
                        features.push("regex open-ended look-around");
                    }
                }
                features.extend(modifiers.iter().map(|m| match *m {
                    "wide" => "regex wide",
                    "nocase" => "regex nocase",
                    _ => "regex fullword",
                }));
                features
            }
        }
    }
}

/// The shortest match of a generated hex pattern: a byte or `??` is one,
/// a jump `[lo-hi]` is `lo`, an alternative `( a | b c )` its shortest.
fn hex_min_len(hex: &str) -> usize {
    let mut len = 0;
    let mut alternative: Option<Vec<usize>> = None;
    for token in hex.split_whitespace() {
        match (token, alternative.as_mut()) {
            ("(", _) => alternative = Some(vec![0]),
            ("|", Some(alts)) => alts.push(0),
            (")", Some(alts)) => {
                len += alts.iter().min().copied().unwrap_or(0);
                alternative = None;
            }
            (_, Some(alts)) => *alts.last_mut().unwrap() += 1,
            (jump, None) if jump.starts_with('[') => {
                len += jump[1..]
                    .split('-')
                    .next()
                    .unwrap()
                    .parse::<usize>()
                    .unwrap();
            }
            (_, None) => len += 1,
        }
    }
    len
}

fn widen(bytes: &[u8]) -> Vec<u8> {
    bytes.iter().flat_map(|&b| [b, 0]).collect()
}

/// Every form a text pattern matches, as [`PatternSpec::plants`] says.
fn text_forms(text: &[u8], modifiers: &[&str]) -> Vec<Vec<u8>> {
    use base64::Engine;
    let has = |m: &str| modifiers.iter().any(|x| x.starts_with(m));
    let mut forms = Vec::new();
    if has("base64") {
        // The text after 0, 1 and 2 bytes: the three alignments.
        for prefix in [&b""[..], b"x", b"xy"] {
            let plain = [prefix, text].concat();
            let encoded = base64::engine::general_purpose::STANDARD
                .encode(plain)
                .into_bytes();
            forms.push(if has("base64wide") {
                widen(&encoded)
            } else {
                encoded
            });
        }
        return forms;
    }
    if has("xor") {
        let hi = if has("xor(") { 3 } else { 255 };
        for key in [1u8, 2, hi] {
            forms.push(text.iter().map(|b| b ^ key).collect());
        }
    }
    forms.push(text.to_vec());
    if has("nocase") {
        forms.push(text.to_ascii_uppercase());
    }
    if has("wide") {
        forms.extend(forms.clone().iter().map(|f| widen(f)));
    }
    forms
}

fn text_pattern() -> impl Strategy<Value = PatternSpec> {
    let plain = (
        literal(1..6),
        proptest::sample::subsequence(vec!["nocase", "wide", "ascii", "fullword", "private"], 0..3),
    )
        .prop_map(|(text, modifiers)| PatternSpec::Text { text, modifiers });
    let xor = (literal(2..6), 0u8..4, any::<bool>()).prop_map(|(text, hi, fullword)| {
        let mut modifiers = vec![if hi == 0 { "xor" } else { "xor(0-3)" }];
        if fullword {
            modifiers.push("fullword");
        }
        PatternSpec::Text { text, modifiers }
    });
    let base64 = (literal(3..7), any::<bool>()).prop_map(|(text, wide)| PatternSpec::Text {
        text,
        modifiers: vec![if wide { "base64wide" } else { "base64" }],
    });
    // Longer than every other kind by more than `rules::tail`'s
    // `MIN_KEY_SAVING` (64 bytes): a stream's tail reaches back for it only
    // where its first bytes occur.
    let long = (
        literal(100..140),
        proptest::sample::subsequence(vec!["nocase", "wide", "fullword"], 0..2),
    )
        .prop_map(|(text, modifiers)| PatternSpec::Text { text, modifiers });
    prop_oneof![6 => plain, 1 => xor, 1 => base64, 1 => long]
}

fn hex_pattern() -> impl Strategy<Value = PatternSpec> {
    let token = prop_oneof![
        4 => byte().prop_map(|b| format!("{b:02x}")),
        1 => Just("??".to_string()),
        // YARA-X refuses a jump of zero bytes (`[0-0]`).
        1 => (0u8..3, 0u8..4).prop_map(|(lo, extra)| format!("[{lo}-{}]", (lo + extra).max(1))),
        1 => (byte(), byte(), byte()).prop_map(|(a, b, c)| format!("( {a:02x} | {b:02x} {c:02x} )")),
    ];
    (byte(), proptest::collection::vec(token, 0..4), byte()).prop_map(|(first, middle, last)| {
        PatternSpec::Hex(format!("{first:02x} {} {last:02x}", middle.join(" ")))
    })
}

/// What the generator may put before a regex's start look-around or after
/// its end one: items that may match nothing.
const OPTIONAL_ITEMS: [&str; 2] = ["[ab ]?", "a{0,2}"];

/// Whether a generated regex has a look-around behind one of
/// [`OPTIONAL_ITEMS`] (before its start one, or after its end one).
fn looks_behind_optional(body: &str) -> bool {
    OPTIONAL_ITEMS.iter().any(|item| {
        ["^", "\\b", "\\B"]
            .iter()
            .any(|look| body.starts_with(&format!("{item}{look}")))
            || ["$", "\\b"]
                .iter()
                .any(|look| body.ends_with(&format!("{look}{item}")))
    })
}

fn regex_pattern() -> impl Strategy<Value = PatternSpec> {
    let atom = prop_oneof![
        4 => literal(1..3).prop_map(|l| regex_escape(&l)),
        1 => Just("[ab]".to_string()),
        1 => Just("[^a]".to_string()),
        1 => Just(".".to_string()),
        1 => (literal(1..3), literal(1..3)).prop_map(|(a, b)| format!("({}|{})", regex_escape(&a), regex_escape(&b))),
    ];
    let piece = (
        atom,
        prop_oneof![
            3 => Just(""),
            1 => Just("?"),
            1 => Just("{1,3}"),
            1 => Just("{0,2}"),
            // YARA's "at most": `regex-syntax` reads it only once rewritten.
            1 => Just("{,2}"),
            // No longest match: the search follows such a regex's walks
            // (`rules::open_ended`) unless it is fullword.
            2 => Just("*"),
            2 => Just("+"),
        ],
    )
        .prop_map(|(a, q)| format!("{a}{q}"));
    let start = prop_oneof![4 => Just(""), 1 => Just("^"), 1 => Just("\\b"), 1 => Just("\\B")];
    let end = prop_oneof![3 => Just(""), 2 => Just("$"), 1 => Just("\\b")];
    // Items that may match nothing, before a start look-around or after an
    // end one: the look-around is still at the match's edge (`\s*\bfoo`).
    let optional =
        || prop_oneof![3 => Just(""), 1 => Just(OPTIONAL_ITEMS[0]), 1 => Just(OPTIONAL_ITEMS[1])];
    let modifiers = proptest::sample::subsequence(vec!["nocase", "wide", "fullword"], 0..2);
    (
        start,
        literal(1..3),
        proptest::collection::vec(piece, 0..3),
        end,
        modifiers,
        // Open-ended regexes are drawn `wide` more often: their walks of
        // the wide form are their own.
        proptest::bool::weighted(0.5),
        // And they keep their look-arounds half the time only: with them
        // they match far less often.
        any::<bool>(),
        (optional(), optional()),
    )
        .prop_map(
            |(start, first, pieces, end, mut modifiers, wide_open, looks_open, (lead, trail))| {
                let pieces = pieces.concat();
                // An unbounded regex stays in what the search follows: a
                // fullword one makes its rule whole-data without a gate, whose
                // verdicts `tests/whole_data.rs` holds (a retained stream's
                // whole-buffer scan lists no match where no condition reaches
                // a pattern; this test's reference always searches).
                let open_ended = pieces.contains('*') || pieces.contains('+');
                let (start, end) = match open_ended && !looks_open {
                    true => ("", ""),
                    false => (start, end),
                };
                if open_ended {
                    modifiers.retain(|m| *m != "fullword");
                    if wide_open && !modifiers.contains(&"wide") {
                        modifiers.push("wide");
                    }
                }
                let lead = if start.is_empty() { "" } else { lead };
                let trail = if end.is_empty() { "" } else { trail };
                PatternSpec::Regex {
                    body: format!("{lead}{start}{}{pieces}{end}{trail}", regex_escape(&first)),
                    modifiers,
                }
            },
        )
}

fn pattern() -> impl Strategy<Value = PatternSpec> {
    prop_oneof![3 => text_pattern(), 2 => hex_pattern(), 2 => regex_pattern()]
}

/// A condition term about pattern `$p`, whose shortest match is `min_len`
/// bytes.
fn term(p: String, min_len: usize) -> impl Strategy<Value = String> {
    let n = 0u32..40;
    prop_oneof![
        2 => match_read(p.clone(), min_len),
        3 => Just(format!("${p}")),
        1 => (0u32..4).prop_map({ let p = p.clone(); move |k| format!("#{p} > {k}") }),
        1 => (0u32..3).prop_map({ let p = p.clone(); move |k| format!("#{p} == {k}") }),
        1 => n.clone().prop_map({ let p = p.clone(); move |k| format!("@{p}[1] >= {k}") }),
        1 => (1u32..4, 0u32..8).prop_map({ let p = p.clone(); move |(i, k)| format!("!{p}[{i}] > {k}") }),
        1 => n.clone().prop_map({ let p = p.clone(); move |k| format!("${p} at {k}") }),
        1 => (n.clone(), 0u32..30).prop_map({ let p = p.clone(); move |(k, m)| format!("${p} in ({k}..{})", k + m) }),
        1 => Just(format!("not ${p}")),
        1 => n.clone().prop_map({ let p = p.clone(); move |k| format!("for any i in (1..#{p}) : (@{p}[i] > {k})") }),
        1 => n.prop_map({ let p = p.clone(); move |k| format!("${p} in (filesize - {k}..filesize)") }),
        1 => (0u32..200, any::<bool>()).prop_map({ let p = p.clone(); move |(k, less)| match less {
            true => naming(&p, format!("filesize < {k}")),
            false => naming(&p, format!("filesize > {k}")),
        }}),
        1 => header_read().prop_map(move |read| naming(&p, read)),
    ]
}

/// `term`, which does not name pattern `$p`, with a test of `$p` that
/// always holds: YARA-X refuses a rule with a pattern its condition never
/// names (unless a quantifier names them all).
fn naming(p: &str, term: String) -> String {
    format!("{term} and #{p} >= 0")
}

/// A `for any` over a match's own bytes (see `rules::match_reads`): one
/// read, `not` over two (which a block scan would make true where the
/// reads are undefined), or either of two.
fn match_read(p: String, min_len: usize) -> impl Strategy<Value = String> {
    let read = || one_read(p.clone(), min_len);
    (read(), read(), 0usize..3).prop_map(move |(a, b, form)| {
        let body = match form {
            0 => a,
            1 => format!("not ({a} and {b})"),
            _ => format!("({a}) or ({b})"),
        };
        format!("for any i in (1..#{p}) : ({body})")
    })
}

/// One read of a match's bytes: a bit of a byte, or a 16-bit word against
/// a bound, at an offset within the shortest match; true for about half
/// the bytes a wildcard, `nocase` or `xor` lets through.
fn one_read(p: String, min_len: usize) -> impl Strategy<Value = String> {
    let at = 0..min_len.max(1);
    (at, 0u32..8, any::<bool>(), any::<bool>()).prop_map(move |(k, bit, word, set)| {
        match word && k + 2 <= min_len {
            true => format!("uint16(@{p}[i] + {k}) > 0x8000"),
            false => format!(
                "(uint8(@{p}[i] + {k}) & 0x{:02x}) {} 0",
                1u8 << bit,
                ["==", "!="][usize::from(set)]
            ),
        }
    })
}

/// A test of the data's first bytes (rewritten into values of each
/// stream): equal, unequal, negated, signed and big-endian forms; reads
/// past a short stream's end are undefined.
fn header_read() -> impl Strategy<Value = String> {
    (0u32..6, byte(), byte(), 0usize..4).prop_map(|(k, a, b, form)| match form {
        0 => format!("uint8({k}) == 0x{a:02x}"),
        1 => format!("uint16({k}) != 0x{b:02x}{a:02x}"),
        2 => format!("not (uint16be({k}) == 0x{a:02x}{b:02x})"),
        _ => format!("int8({k}) >= 0x{a:02x}"),
    })
}

#[derive(Debug, Clone)]
struct RuleSpec {
    patterns: Vec<PatternSpec>,
    terms: Vec<String>,
    joiners: Vec<bool>,
    quantifier: Option<&'static str>,
    private: bool,
    global: bool,
    /// A header test the whole condition is `and`ed with: the rule's
    /// precondition, which random data mostly fails.
    header_gate: Option<String>,
}

fn rule() -> impl Strategy<Value = RuleSpec> {
    proptest::collection::vec(pattern(), 1..4)
        .prop_flat_map(|patterns| {
            let terms: Vec<_> = (0..patterns.len())
                .map(|i| term(format!("p{i}"), patterns[i].min_len()).boxed())
                .collect();
            let n = patterns.len();
            (
                Just(patterns),
                terms,
                proptest::collection::vec(any::<bool>(), n),
                proptest::option::of(proptest::sample::select(vec![
                    "any of them",
                    "all of them",
                    "none of them",
                    "2 of them",
                ])),
                proptest::bool::weighted(0.15),
                proptest::bool::weighted(0.05),
                proptest::option::weighted(0.2, (0u32..6, byte())),
            )
        })
        .prop_map(
            |(patterns, terms, joiners, quantifier, private, global, gate)| RuleSpec {
                patterns,
                terms,
                joiners,
                quantifier,
                private,
                global,
                header_gate: gate.map(|(k, v)| format!("uint8({k}) == 0x{v:02x}")),
            },
        )
}

fn rules_source(rules: &[RuleSpec]) -> String {
    let mut src = String::new();
    for (r, rule) in rules.iter().enumerate() {
        let flags = match (rule.private, rule.global) {
            (_, true) => "global ",
            (true, _) => "private ",
            _ => "",
        };
        src += &format!("{flags}rule r{r} {{\n  strings:\n");
        for (i, p) in rule.patterns.iter().enumerate() {
            src += &format!("    $p{i} = {}\n", p.source());
        }
        let mut cond = format!("({})", rule.terms[0]);
        for (term, and) in rule.terms.iter().zip(&rule.joiners).skip(1) {
            cond += &format!(" {} ({term})", if *and { "and" } else { "or" });
        }
        if let Some(q) = rule.quantifier {
            cond = format!("({cond}) or {q}");
        }
        if let Some(gate) = &rule.header_gate {
            cond = format!("{gate} and ({cond})");
        }
        src += &format!("  condition:\n    {cond}\n}}\n");
    }
    src
}

thread_local! {
    /// Verdicts seen by this test thread, and those not claimed exact.
    static VERDICTS: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
    /// Runs of a case (chunked, or by lines) on this thread, and those
    /// with a verdict not claimed exact.
    static RUNS: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
    /// How often each feature of the generator matched (see [`Tally`]).
    static TALLY: RefCell<BTreeMap<&'static str, usize>> = const { RefCell::new(BTreeMap::new()) };
}

/// Runs `run` on `case`, counting it in [`RUNS`].
fn counted_run(
    case: &Case,
    run: fn(&Case) -> Result<(), TestCaseError>,
) -> Result<(), TestCaseError> {
    let inexact_before = VERDICTS.with(Cell::get).1;
    let result = run(case);
    let inexact = VERDICTS.with(Cell::get).1 > inexact_before;
    RUNS.with(|r| {
        let (all, with_inexact) = r.get();
        r.set((all + 1, with_inexact + usize::from(inexact)));
    });
    result
}

/// Counts verdicts, and those that claim no exactness.
fn count_verdict(exact: bool) {
    VERDICTS.with(|v| {
        let (all, inexact) = v.get();
        v.set((all + 1, inexact + usize::from(!exact)));
    });
}

/// What the generator claims to exercise, counted where it actually
/// happened: a pattern kind or modifier counts when a pattern of that kind
/// matched in a reference verdict, a condition form or rule kind when a
/// rule using it matched, and a match spanning a chunk cut when one did.
/// [`every_listed_feature_happens`] fails on any that never does.
struct Tally;

impl Tally {
    /// Everything the generator lists.
    const LISTED: &'static [&'static str] = &[
        "text",
        "nocase",
        "wide",
        "ascii",
        "fullword",
        "xor",
        "base64",
        "base64wide",
        "hex",
        "hex wildcard",
        "hex alternative",
        "hex jump",
        "regex",
        "regex ^",
        "regex $",
        "regex \\b",
        "regex \\B",
        "regex {,n}",
        "regex open-ended",
        "regex open-ended wide",
        "regex open-ended look-around",
        "regex look-around behind an optional item",
        "regex wide",
        "regex nocase",
        "regex fullword",
        "cond $",
        "cond count",
        "cond offset",
        "cond length",
        "cond at",
        "at: a match at its anchor",
        "cond in",
        "cond not",
        "cond for",
        "cond of",
        "cond filesize",
        "cond in filesize",
        "cond header read",
        "cond match read",
        "cond match read, negated",
        "cond match read, either of two",
        "global rule",
        "match spanning a cut",
        "match reaching past the tail floor",
        "match dropped: its rule's precondition failed",
        "dense rules: a matching stream scanned whole",
    ];

    fn add(feature: &'static str) {
        TALLY.with(|t| *t.borrow_mut().entry(feature).or_default() += 1);
    }

    /// Counts what a reference verdict of `case`'s rules shows.
    fn verdict(case: &Case, verdict: &common::Verdict) {
        for (rule, patterns) in verdict {
            let Some(spec) = rule
                .strip_prefix('r')
                .and_then(|r| r.parse::<usize>().ok())
                .and_then(|r| case.rules.get(r))
            else {
                continue;
            };
            if spec.global {
                Self::add("global rule");
            }
            for term in spec.terms.iter().map(String::as_str).chain(spec.quantifier) {
                Self::add(term_kind(term));
            }
            for (i, term) in spec.terms.iter().enumerate() {
                let pattern = format!("$p{i}");
                let at_anchor = |k: usize| {
                    patterns
                        .iter()
                        .filter(|(p, _)| *p == pattern)
                        .any(|(_, matches)| matches.iter().any(|(at, _)| *at == k as u64))
                };
                if anchor_of(term, i).is_some_and(at_anchor) {
                    Self::add("at: a match at its anchor");
                }
            }
            for (pattern, matches) in patterns {
                let index = pattern
                    .strip_prefix("$p")
                    .and_then(|i| i.parse::<usize>().ok());
                match index.and_then(|i| spec.patterns.get(i)) {
                    Some(p) if !matches.is_empty() => p.features().into_iter().for_each(Self::add),
                    _ => {}
                }
            }
        }
    }

    /// Counts the matches of `verdict` that a cut of `cuts` (chunk end
    /// offsets) falls inside, and those of them that start before what
    /// the stream's tail keeps at the least (`tail_floor` bytes, the last
    /// `SPAN_CONTEXT` = 16 of them the context before a match): found
    /// only because the tail reached back for their first bytes.
    fn cuts(verdict: &common::Verdict, cuts: &[usize], tail_floor: usize) {
        let matches = verdict
            .iter()
            .flat_map(|(_, patterns)| patterns.iter().flat_map(|(_, m)| m.iter()));
        for (offset, len) in matches {
            let (start, end) = (*offset as usize, *offset as usize + len);
            let spanned = cuts.iter().filter(|&&cut| start < cut && cut < end);
            if let Some(cut) = spanned.max() {
                Self::add("match spanning a cut");
                if cut - start + 16 > tail_floor {
                    Self::add("match reaching past the tail floor");
                }
            }
        }
    }
}

/// The feature a condition term exercises.
fn term_kind(term: &str) -> &'static str {
    if term.contains("int8(@") || term.contains("int16(@") {
        match_read_kind(term)
    } else if term.contains("in (filesize") {
        "cond in filesize"
    } else if term.starts_with("filesize") {
        "cond filesize"
    } else if term.contains("int8(") || term.contains("int16") {
        "cond header read"
    } else if term.contains(" of them") {
        "cond of"
    } else if term.starts_with("for ") {
        "cond for"
    } else if term.starts_with("not ") {
        "cond not"
    } else if term.contains(" at ") {
        "cond at"
    } else if term.contains(" in (") {
        "cond in"
    } else if term.starts_with('#') {
        "cond count"
    } else if term.starts_with('@') {
        "cond offset"
    } else if term.starts_with('!') {
        "cond length"
    } else {
        "cond $"
    }
}

/// The form of a match read's body (see [`match_read`]): the negated one
/// is where a block scan, evaluating the reads itself, would be wrong.
fn match_read_kind(term: &str) -> &'static str {
    if term.contains(": (not (") {
        "cond match read, negated"
    } else if term.contains(") or (") {
        "cond match read, either of two"
    } else {
        "cond match read"
    }
}

/// Filler: random bytes, sometimes with long runs of one byte (where every
/// position may look like the start or end of a context-sensitive match).
fn filler() -> impl Strategy<Value = Vec<u8>> {
    let run = (byte(), prop_oneof![1usize..40, 200usize..300]).prop_map(|(b, n)| vec![b; n]);
    let piece = prop_oneof![4 => proptest::collection::vec(byte(), 0..30), 1 => run];
    proptest::collection::vec(piece, 0..5).prop_map(|pieces| pieces.concat())
}

/// The forms of each pattern a condition anchors (`$p0 at 7`), with the
/// anchor: planted there, they are what the search may miss and the
/// replay of a head finds.
fn anchored_plants(rules: &[RuleSpec]) -> Vec<(usize, Vec<u8>)> {
    let mut anchored = Vec::new();
    for rule in rules {
        for (i, (term, pattern)) in rule.terms.iter().zip(&rule.patterns).enumerate() {
            if let Some(k) = anchor_of(term, i) {
                anchored.extend(pattern.plants().into_iter().map(|form| (k, form)));
            }
        }
    }
    anchored
}

/// `K` of a term `$p{i} at K`.
fn anchor_of(term: &str, i: usize) -> Option<usize> {
    term.strip_prefix(&format!("$p{i} at "))?.parse().ok()
}

/// Random data with pattern bytes planted in it, sometimes one at its very
/// end (where `$` and `in (filesize - k..filesize)` look), and sometimes
/// one anchored pattern at its anchor (the data padded up to it).
fn data(
    plants: Vec<Vec<u8>>,
    anchored_forms: Vec<(usize, Vec<u8>)>,
) -> impl Strategy<Value = Vec<u8>> {
    let filler = filler();
    let picks = proptest::collection::vec(
        (
            any::<proptest::sample::Index>(),
            any::<proptest::sample::Index>(),
        ),
        0..8,
    );
    let at_end = proptest::option::weighted(0.2, any::<proptest::sample::Index>());
    let at_anchor = proptest::option::weighted(0.15, any::<proptest::sample::Index>());
    (filler, picks, at_end, at_anchor).prop_map(move |(mut data, picks, at_end, at_anchor)| {
        for (which, at) in picks {
            if plants.is_empty() {
                break;
            }
            let plant = which.get(&plants);
            let at = if data.is_empty() {
                0
            } else {
                at.index(data.len() + 1)
            };
            data.splice(at..at, plant.iter().copied());
        }
        if let Some(which) = at_end.filter(|_| !plants.is_empty()) {
            let plant: &Vec<u8> = which.get(&plants);
            data.extend_from_slice(plant);
        }
        let anchored = at_anchor.filter(|_| !anchored_forms.is_empty());
        if let Some((k, form)) = anchored.map(|i| i.get(&anchored_forms)) {
            data.resize(data.len().max(*k), b'.');
            data.splice(*k..*k, form.iter().copied());
        }
        data
    })
}

#[derive(Debug, Clone)]
struct Case {
    rules: Vec<RuleSpec>,
    streams: Vec<Vec<u8>>,
    /// Cut sizes, cycled; 1 means 1-byte chunks.
    cuts: Vec<usize>,
    /// Which stream sends next, cycled.
    order: Vec<proptest::sample::Index>,
    /// Ask for a verdict after this many chunks (cycled over streams).
    probe_every: usize,
    batch_bytes: usize,
    /// Evict the stream just fed to its serialized form and restore it,
    /// every this many chunks (0: never).
    evict_every: usize,
    /// Move every stream to a new scanner through its serialized form (as
    /// a restart from a checkpoint does), every this many chunks (0: never).
    restart_every: usize,
    /// `RuleOptions::whole_scan_dense`: chunk streams retain their bytes
    /// for dense rules (off mostly: retention bypasses the search).
    whole_scan_dense: bool,
}

fn case() -> impl Strategy<Value = Case> {
    proptest::collection::vec(rule(), 1..4).prop_flat_map(|rules| {
        let plants: Vec<Vec<u8>> = rules
            .iter()
            .flat_map(|r| r.patterns.iter().flat_map(PatternSpec::plants))
            .collect();
        let anchored = anchored_plants(&rules);
        (
            Just(rules),
            proptest::collection::vec(data(plants, anchored), 1..4),
            proptest::collection::vec(
                prop_oneof![2 => Just(1usize), 3 => 1usize..8, 1 => 8usize..200],
                1..6,
            ),
            proptest::collection::vec(any::<proptest::sample::Index>(), 1..16),
            1usize..12,
            prop_oneof![Just(1usize), 1usize..64, Just(1 << 20)],
            prop_oneof![2 => Just(0usize), 1 => 1usize..4],
            prop_oneof![2 => Just(0usize), 1 => 1usize..8],
            proptest::bool::weighted(0.25),
        )
            .prop_map(
                |(rules, streams, cuts, order, probe_every, batch_bytes, evict, restart, dense)| {
                    Case {
                        rules,
                        streams,
                        cuts,
                        order,
                        probe_every,
                        batch_bytes,
                        evict_every: evict,
                        restart_every: restart,
                        whole_scan_dense: dense,
                    }
                },
            )
    })
}

/// Splits every stream into chunks and interleaves them.
impl Case {
    /// A case for a test's own rules (none generated): its streams, cuts
    /// and order as drawn, a verdict every `probe_every` chunks, batches of
    /// `batch_bytes`, an eviction every `evict_every` chunks.
    fn of_fixed_rules(
        (streams, cuts, order): (Vec<Vec<u8>>, Vec<usize>, Vec<proptest::sample::Index>),
        probe_every: usize,
        batch_bytes: usize,
        evict_every: usize,
    ) -> Case {
        Case {
            rules: Vec::new(),
            streams,
            cuts,
            order,
            probe_every,
            batch_bytes,
            evict_every,
            restart_every: 0,
            whole_scan_dense: false,
        }
    }
}

fn schedule(case: &Case) -> Vec<(usize, std::ops::Range<usize>)> {
    let mut positions = vec![0usize; case.streams.len()];
    let mut steps = Vec::new();
    let (mut cut, mut turn) = (0, 0);
    while positions
        .iter()
        .zip(&case.streams)
        .any(|(p, s)| *p < s.len())
    {
        let open: Vec<usize> = (0..case.streams.len())
            .filter(|&s| positions[s] < case.streams[s].len())
            .collect();
        let stream = open[case.order[turn % case.order.len()].index(open.len())];
        turn += 1;
        let len =
            case.cuts[cut % case.cuts.len()].min(case.streams[stream].len() - positions[stream]);
        cut += 1;
        steps.push((stream, positions[stream]..positions[stream] + len));
        positions[stream] += len;
    }
    steps
}

/// The case's rules (source and compiled), or a rejection when YARA-X
/// refuses them.
fn compile_case(case: &Case) -> Result<(String, RuleSet), TestCaseError> {
    let src = rules_source(&case.rules);
    let compiled = match case.whole_scan_dense {
        true => common::compile_opt(&src),
        false => compile_searched(&src),
    };
    let rules = compiled.ok_or_else(|| TestCaseError::reject("rules do not compile"))?;
    Ok((src, rules))
}

fn new_scanner<'r>(case: &Case, rules: &'r RuleSet) -> MultiStreamScanner<'r> {
    let config = ScannerConfig {
        max_batch_bytes: case.batch_bytes,
        ..ScannerConfig::default()
    };
    MultiStreamScanner::new(rules, config)
}

/// A scanner with the case's batch size and its streams open.
fn open_streams<'r>(
    case: &Case,
    rules: &'r RuleSet,
    mode: StreamMode,
) -> (MultiStreamScanner<'r>, Vec<Uuid>) {
    let mut scanner = new_scanner(case, rules);
    let ids: Vec<Uuid> = case.streams.iter().map(|_| Uuid::new_v4()).collect();
    for id in &ids {
        scanner.open_stream(*id, mode).unwrap();
    }
    (scanner, ids)
}

/// Takes `streams` out of `scanner` through their stored form (as the
/// engine's eviction does) and restores them into `into`.
fn move_through_store<'r>(
    scanner: &mut MultiStreamScanner<'r>,
    into: Option<&mut MultiStreamScanner<'r>>,
    streams: &[Uuid],
) {
    let decoded: Vec<_> = scanner
        .evict_streams(streams)
        .unwrap()
        .into_iter()
        .map(|context| {
            let mut entry = Vec::new();
            codec::encode(&context, *b"testrule", &mut entry);
            codec::decode(context.id, &entry).unwrap().0
        })
        .collect();
    let into = into.unwrap_or(scanner);
    for context in decoded {
        into.restore_stream(context).unwrap();
    }
}

/// Evicts and restores streams as the case says, after step `step` (which
/// fed `stream`).
fn shuffle_residency<'r>(
    case: &Case,
    rules: &'r RuleSet,
    scanner: &mut MultiStreamScanner<'r>,
    ids: &[Uuid],
    step: usize,
    stream: usize,
) {
    if case.evict_every > 0 && step.is_multiple_of(case.evict_every) {
        move_through_store(scanner, None, &ids[stream..=stream]);
    }
    if case.restart_every > 0 && step.is_multiple_of(case.restart_every) {
        let mut restarted = new_scanner(case, rules);
        move_through_store(scanner, Some(&mut restarted), ids);
        *scanner = restarted;
    }
}

fn run_chunks(case: &Case) -> Result<(), TestCaseError> {
    let (src, rules) = compile_case(case)?;
    let (mut scanner, ids) = open_streams(case, &rules, StreamMode::Chunks);
    let mut cuts = vec![Vec::new(); ids.len()];
    for (step, (stream, range)) in schedule(case).into_iter().enumerate() {
        cuts[stream].push(range.end);
        scanner
            .scan_chunk(ids[stream], &case.streams[stream][range.clone()])
            .unwrap();
        shuffle_residency(case, &rules, &mut scanner, &ids, step, stream);
        if step % case.probe_every == 0 {
            let got = scanner.get_matches(&ids[stream]).unwrap().unwrap();
            let prefix = &case.streams[stream][..range.end];
            count_verdict(got.exact);
            if !got.exact {
                continue; // no claim made: see `StreamResults::exact`
            }
            prop_assert_eq!(
                ours(&rules, &got),
                reference_of(&rules, &got, prefix),
                "prefix of stream {} ({} bytes): \"{}\" cuts {:?}\n{}",
                stream,
                range.end,
                prefix.escape_ascii(),
                case.cuts,
                src
            );
        }
    }
    // Counted before the closes, whose verdicts must stay exact.
    scanner.flush().unwrap();
    if scanner.stats().ruled_out_matches > 0 {
        Tally::add("match dropped: its rule's precondition failed");
    }
    for (stream, id) in ids.iter().enumerate() {
        let got = scanner.close_stream(id).unwrap().unwrap();
        prop_assert_eq!(got.stats.bytes, case.streams[stream].len() as u64);
        count_verdict(got.exact);
        // Tallied from the searching reference, which lists every match.
        let searched = reference(&rules, &case.streams[stream]);
        Tally::verdict(case, &searched);
        Tally::cuts(&searched, &cuts[stream], rules.tail_plan().floor());
        let scanned = got.whole_data.as_ref().is_some_and(|w| w.scanned());
        // Scanned whole for the dense rules alone (the generator makes few
        // whole-data rules).
        if scanned && rules.whole_data().is_empty() && !searched.is_empty() {
            Tally::add("dense rules: a matching stream scanned whole");
        }
        // See `reference_of`.
        let expected = match scanned {
            true => common::reference_unsearched(&rules, &case.streams[stream]),
            false => searched,
        };
        if !got.exact {
            continue;
        }
        prop_assert_eq!(
            ours(&rules, &got),
            expected,
            "stream {}: \"{}\" cuts {:?}\n{}",
            stream,
            case.streams[stream].escape_ascii(),
            case.cuts,
            src
        );
    }
    prop_assert!(scanner.active_streams().is_empty());
    Ok(())
}

/// The reference of a verdict on `data`: a whole-buffer scan that always
/// searches, or, for a verdict that is itself a whole-buffer scan of a
/// retaining stream's bytes, YARA-X's own (which does not search where no
/// condition reaches a pattern: `filesize < 50 or $a` on a short stream).
fn reference_of(rules: &RuleSet, got: &yaraflow::StreamResults, data: &[u8]) -> common::Verdict {
    match got.whole_data.as_ref().is_some_and(|w| w.scanned()) {
        true => common::reference_unsearched(rules, data),
        false => reference(rules, data),
    }
}

fn run_lines(case: &Case) -> Result<(), TestCaseError> {
    let (src, rules) = compile_case(case)?;
    let (mut scanner, ids) = open_streams(case, &rules, StreamMode::Lines);
    let mut lines: Vec<Vec<Vec<u8>>> = vec![Vec::new(); case.streams.len()];
    for (step, (stream, range)) in schedule(case).into_iter().enumerate() {
        let line = case.streams[stream][range].to_vec();
        scanner.scan_line(ids[stream], &line).unwrap();
        shuffle_residency(case, &rules, &mut scanner, &ids, step, stream);
        lines[stream].push(line);
    }
    for (stream, id) in ids.iter().enumerate() {
        let got = scanner.close_stream(id).unwrap().unwrap();
        prop_assert_eq!(got.stats.lines, lines[stream].len() as u64);
        count_verdict(got.exact);
        let expected = reference_lines(&rules, &lines[stream]);
        Tally::verdict(case, &expected);
        if !got.exact {
            continue;
        }
        prop_assert_eq!(
            ours(&rules, &got),
            expected,
            "stream {}: {:?}\n{}",
            stream,
            lines[stream]
                .iter()
                .map(|l| l.escape_ascii().to_string())
                .collect::<Vec<_>>(),
            src
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(300),
        max_global_rejects: 100_000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn chunked_interleaved_streams_match_whole_buffer_scans(case in case()) {
        run_chunks(&case)?;
    }

    #[test]
    fn line_streams_match_per_line_scans(case in case()) {
        run_lines(&case)?;
    }
}

/// Runs 500 deterministic cases, chunked and by lines, on this thread;
/// returns how many of them YARA-X refused to compile.
fn run_deterministic_cases() -> usize {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut refused = 0;
    for _ in 0..500 {
        let case = case().new_tree(&mut runner).unwrap().current();
        let chunked = counted_run(&case, run_chunks);
        refused += usize::from(matches!(chunked, Err(TestCaseError::Reject(_))));
        let _ = counted_run(&case, run_lines);
    }
    refused
}

/// Every pattern kind, modifier, condition form and edge case the
/// generator lists must actually match in the reference verdicts of a run:
/// a generator that never makes one happen tests nothing about it.
#[test]
fn every_listed_feature_happens() {
    // A case whose rules YARA-X refuses tests nothing either; a generator
    // bug (a jump `[0-0]`, a pattern no term names) once refused 23%.
    let refused = run_deterministic_cases();
    eprintln!("cases refused by YARA-X: {refused} of 500");
    assert!(refused * 50 < 500, "{refused} of 500 cases refused");
    let tally = TALLY.with(|t| t.borrow().clone());
    eprintln!("features matched: {tally:?}");
    let missing: Vec<_> = Tally::LISTED
        .iter()
        .filter(|f| tally.get(*f).copied().unwrap_or(0) == 0)
        .collect();
    assert!(
        missing.is_empty(),
        "never matched: {missing:?} (tally {tally:?})"
    );
}

/// Verdicts that claim no exactness (a span edge the edge guard could not
/// make quiet) must stay rare, even on this adversarial data (tiny chunks,
/// small alphabet, long runs of one byte): in few runs of a case, and
/// few verdicts in all. (One stream asked for a verdict after each of its
/// 1-byte chunks makes hundreds of verdicts of the same bytes: one such
/// run, whose bytes no span edge can be made quiet in, made 115 of 117
/// inexact verdicts of 5,810 once.)
#[test]
fn inexact_verdicts_are_rare() {
    let _ = run_deterministic_cases();
    let (all, inexact) = VERDICTS.with(Cell::get);
    let (runs, inexact_runs) = RUNS.with(Cell::get);
    let summary =
        format!("{inexact} of {all} verdicts not claimed exact, in {inexact_runs} of {runs} runs");
    eprintln!("{summary}");
    assert!(
        all > 1000 && inexact * 20 < all && inexact_runs * 50 < runs,
        "{summary}"
    );
}

/// Regexes without a longest match of their own, followed walk by walk
/// (`rules::open_ended`), over streams long enough for matches of
/// thousands of bytes, matches that YARA-X's scan limit cuts (4 KB each
/// way from where it found them) and tails that reach back that far.
const OPEN_ENDED_RULES: &str = r#"
rule line_xy { strings: $a = /x[^\n]*y/ condition: $a }
rule word_run { strings: $b = /ab[a-z]+/ condition: #b > 1 }
rule q_to_z { strings: $c = /q.*z/ nocase condition: $c }
rule quads { strings: $d = /=([a-z]{4})+/ condition: $d }
rule both_ways { strings: $f = /[a-h]+@@[a-h]+/ condition: $f }
rule to_zero { strings: $e = /k[^\x00]+\x00/ condition: any of them }
rule wide_both { strings: $w = /[a-h]+==[a-h]+/ wide ascii condition: $w }
rule short_runs { strings: $h = /hg[a-h]+/ condition: filesize < 20000 and $h }
rule from_a { strings: $f = /fe[a-h]+/ condition: uint8(0) == 0x61 and $f }
rule after_break { strings: $g = /(^|\n)ab[a-h]+/ condition: $g }
rule whole_word { strings: $v = /\bq[a-h]*y\b/ condition: $v }
rule to_end { strings: $t = /@@[a-h]+y$/ condition: $t }
"#;

/// The rules of [`OPEN_ENDED_RULES`] whose regexes look around. (Ones that
/// look right end where runs of letters cannot, after a `y`: a replay block
/// could not end inside such a run, so a span would grow through the whole
/// run and its verdict not be claimed exact.)
const LOOKING_RULES: [&str; 3] = ["after_break", "whole_word", "to_end"];

/// Long data for [`OPEN_ENDED_RULES`]: runs of letters (no newline for
/// thousands of bytes), runs of one letter, random bytes and the rules'
/// first and last bytes. (Letters that begin matches are planted, or
/// in short runs: YARA-X verifies each match from where it is found, up to
/// 4 KB forwards, so long runs of them make every scan slow.)
fn open_ended_data() -> impl Strategy<Value = Vec<u8>> {
    let letters = proptest::collection::vec(proptest::sample::select(&b"abcdefgh"[..]), 0..3_000);
    let run =
        (proptest::sample::select(&b"bc"[..]), 2_000usize..10_000).prop_map(|(b, n)| vec![b; n]);
    let noise = proptest::collection::vec(any::<u8>(), 0..300);
    let plant = proptest::sample::select(vec![
        &b"x"[..],
        b"y",
        b"ab",
        b"q",
        b"Z",
        b"k",
        b"\x00",
        b"=",
        b"\n",
        b"@@",
        b" qy ",
        b"\nab",
    ])
    .prop_map(|p| p.to_vec());
    // UTF-16 text for `wide_both`: YARA-X's scan limit counts its
    // characters, so its matches reach twice as far (16 KB).
    let wide_letters =
        || proptest::collection::vec(proptest::sample::select(&b"abcdefgh"[..]), 0..6_000);
    let wide = (wide_letters(), any::<bool>(), wide_letters()).prop_map(|(left, eq, right)| {
        let text = [&left[..], if eq { b"==" } else { b"" }, &right].concat();
        text.iter().flat_map(|&b| [b, 0]).collect::<Vec<u8>>()
    });
    let piece = prop_oneof![2 => letters, 1 => run, 2 => noise, 4 => plant, 1 => wide];
    // Half the streams end as `to_end` matches.
    let pieces = proptest::collection::vec(piece, 1..14);
    (pieces, any::<bool>()).prop_map(|(pieces, to_end)| {
        let end: &[u8] = if to_end { b"@@cdy" } else { b"" };
        [&pieces.concat()[..], end].concat()
    })
}

#[test]
fn open_ended_regexes_over_long_streams_match_whole_buffer_scans() {
    let rules = compile_searched(OPEN_ENDED_RULES).expect("rules compile");
    assert!(
        rules.analysis().rules.iter().all(|r| r.supported),
        "the open-ended rules must be stream-exact"
    );
    let case = (
        proptest::collection::vec(open_ended_data(), 2..4),
        proptest::collection::vec(prop_oneof![1 => 1usize..20, 4 => 100usize..5_000], 1..5),
        proptest::collection::vec(any::<proptest::sample::Index>(), 1..8),
    );
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (mut long, mut both_ways, mut reaching_back, mut longest) = (0, 0, 0, 0);
    // Wide matches longer than a narrow one may be.
    let mut wide_past_narrow = 0;
    // The rules with preconditions, matched; streams whose data fail them
    // (counted from the data: the scanner rules them out from a stream's
    // first bytes, and keeps nothing for their walks once it has).
    let (mut preconditioned, mut ruled_out) = (0, 0);
    // Verdicts (probes and closes) each looking rule matched in.
    let mut looked = [0usize; LOOKING_RULES.len()];
    let mut count_looks = |verdict: &common::Verdict| {
        for (rule, _) in verdict {
            if let Some(i) = LOOKING_RULES.iter().position(|r| r == rule) {
                looked[i] += 1;
            }
        }
    };
    for _ in 0..40 {
        let drawn = case.new_tree(&mut runner).unwrap().current();
        let case = Case::of_fixed_rules(drawn, 29, 1 << 20, 5);
        let (mut scanner, ids) = open_streams(&case, &rules, StreamMode::Chunks);
        let mut cuts = vec![Vec::new(); ids.len()];
        for (step, (stream, range)) in schedule(&case).into_iter().enumerate() {
            cuts[stream].push(range.end);
            let chunk = &case.streams[stream][range.clone()];
            scanner.scan_chunk(ids[stream], chunk).unwrap();
            shuffle_residency(&case, &rules, &mut scanner, &ids, step, stream);
            if step % case.probe_every == 0 {
                let got = scanner.get_matches(&ids[stream]).unwrap().unwrap();
                let prefix = &case.streams[stream][..range.end];
                let expected = reference(&rules, prefix);
                assert!(got.exact);
                assert_eq!(ours(&rules, &got), expected, "prefix of {}", range.end);
                count_looks(&expected);
            }
        }
        for (stream, id) in ids.iter().enumerate() {
            let got = scanner.close_stream(id).unwrap().unwrap();
            let expected = reference(&rules, &case.streams[stream]);
            assert!(got.exact);
            assert_eq!(
                ours(&rules, &got),
                expected,
                "stream of {} bytes",
                case.streams[stream].len()
            );
            count_looks(&expected);
            let data = &case.streams[stream];
            ruled_out +=
                usize::from(data.len() >= 20_000) + usize::from(data.first() != Some(&b'a'));
            preconditioned += expected
                .iter()
                .filter(|(r, _)| r == "short_runs" || r == "from_a")
                .count();
            let matches = expected
                .iter()
                .flat_map(|(_, p)| p.iter().flat_map(|(_, m)| m.iter()));
            for &(offset, len) in matches {
                wide_past_narrow += usize::from(len > MAX_REACH);
                long += usize::from(len >= 4000);
                both_ways += usize::from(len > 4096);
                longest = longest.max(len);
                let (start, end) = (offset as usize, offset as usize + len);
                let floor = rules.tail_plan().floor();
                reaching_back += usize::from(
                    cuts[stream]
                        .iter()
                        .any(|&cut| start < cut && cut < end && cut - start + 16 > floor),
                );
            }
        }
    }
    eprintln!("open-ended matches: {long} of 4,000 bytes or more, {both_ways} longer than one scan limit (4,096 bytes), {wide_past_narrow} wide ones longer than two, {reaching_back} found by a tail past the floor, longest {longest}; {preconditioned} verdicts of rules with preconditions, {ruled_out} failures of them by a stream's data");
    assert!(long > 0 && both_ways > 0 && wide_past_narrow > 0 && reaching_back > 0);
    assert!(preconditioned > 0 && ruled_out > 0);
    eprintln!("verdicts matched by the looking rules {LOOKING_RULES:?}: {looked:?}");
    assert!(looked.iter().all(|&n| n > 0));
}

/// Patterns anchored past what a stream's head keeps: the search checks
/// their prefixes where a stream's bytes pass the anchor, and the verdict
/// replays those bytes at their offset (`rules::head::FarAnchor`). YARA-X
/// anchors a plain literal (`far_text`: taking the far hits out makes its
/// verdicts differ, in chunks and in lines) and searches for the others
/// anywhere (an alternation, `nocase`, a pattern anchored twice), where
/// the far hits add spans the search keeps anyway.
const FAR_ANCHOR_RULES: &str = r#"
rule far_text { strings: $a = "FARX" condition: $a at 70000 }
rule far_alt { strings: $h = { 46 41 ( 58 | 59 5A ) } condition: $h at 70010 }
rule far_nocase { strings: $n = "nCaSe" nocase condition: $n at 75000 }
rule far_two { strings: $c = "cw" nocase condition: $c at 66000 and $c at 80000 }
"#;

/// Where [`FAR_ANCHOR_RULES`] anchor, and what may be planted there.
const FAR_PLANTS: &[(usize, &[u8])] = &[
    (70_000, b"FARX"),
    (70_010, b"FAYZ"),
    (75_000, b"NcAsE"),
    (66_000, b"Cw"),
    (80_000, b"cW"),
];

/// Streams of 60 to 90 KB of lower-case letters, each anchor's bytes
/// planted or not, and a few of `far_alt`'s bytes where it is not
/// anchored.
fn far_anchor_data() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::collection::vec(proptest::sample::select(&b"abcwxyz"[..]), 60_000..90_000),
        proptest::collection::vec(any::<bool>(), FAR_PLANTS.len()),
        proptest::collection::vec(0usize..90_000, 0..6),
    )
        .prop_map(|(mut data, planted, loose)| {
            let len = data.len();
            for at in loose.into_iter().filter(|&at| at + 3 <= len) {
                data[at..at + 3].copy_from_slice(b"FAX");
            }
            for (&(at, bytes), plant) in FAR_PLANTS.iter().zip(planted) {
                if plant && at + bytes.len() <= data.len() {
                    data[at..at + bytes.len()].copy_from_slice(bytes);
                }
            }
            data
        })
}

/// What a far-anchor run saw: rules matched (by mode), and the rules whose
/// verdicts differed from the reference's.
#[derive(Default)]
struct FarTally {
    matched: BTreeMap<String, usize>,
    missed: usize,
    cut_inside: usize,
    wrong: BTreeMap<String, usize>,
}

impl FarTally {
    /// Compares `got` with `expected` rule by rule.
    fn compare(&mut self, mode: &str, got: &common::Verdict, expected: &common::Verdict) {
        let names: std::collections::BTreeSet<&String> =
            got.iter().chain(expected).map(|(rule, _)| rule).collect();
        for name in names {
            let of = |v: &common::Verdict| v.iter().find(|(r, _)| r == name).cloned();
            if of(got) != of(expected) {
                *self.wrong.entry(format!("{mode} {name}")).or_default() += 1;
            }
        }
        for (rule, _) in expected {
            *self.matched.entry(format!("{mode} {rule}")).or_default() += 1;
        }
        self.missed += 4 - expected.len();
    }
}

/// Feeds `case` in chunks, probing and evicting as it goes.
fn far_anchor_chunks(case: &Case, rules: &RuleSet, tally: &mut FarTally) {
    let (mut scanner, ids) = open_streams(case, rules, StreamMode::Chunks);
    for (step, (stream, range)) in schedule(case).into_iter().enumerate() {
        let inside = |&(at, bytes): &(usize, &[u8])| at < range.end && range.end < at + bytes.len();
        tally.cut_inside += FAR_PLANTS.iter().filter(|plant| inside(plant)).count();
        scanner
            .scan_chunk(ids[stream], &case.streams[stream][range.clone()])
            .unwrap();
        shuffle_residency(case, rules, &mut scanner, &ids, step, stream);
        if step % case.probe_every == 0 {
            let got = scanner.get_matches(&ids[stream]).unwrap().unwrap();
            let prefix = &case.streams[stream][..range.end];
            tally.compare("probe", &ours(rules, &got), &reference(rules, prefix));
        }
    }
    for (stream, id) in ids.iter().enumerate() {
        let got = scanner.close_stream(id).unwrap().unwrap();
        assert!(got.exact);
        let expected = reference(rules, &case.streams[stream]);
        tally.compare("chunks", &ours(rules, &got), &expected);
    }
}

/// Feeds `case` as lines (its chunks), each a block at its stream offset.
fn far_anchor_lines(case: &Case, rules: &RuleSet, tally: &mut FarTally) {
    let (mut scanner, ids) = open_streams(case, rules, StreamMode::Lines);
    let mut lines: Vec<Vec<Vec<u8>>> = vec![Vec::new(); case.streams.len()];
    for (step, (stream, range)) in schedule(case).into_iter().enumerate() {
        let line = case.streams[stream][range].to_vec();
        scanner.scan_line(ids[stream], &line).unwrap();
        shuffle_residency(case, rules, &mut scanner, &ids, step, stream);
        lines[stream].push(line);
    }
    for (stream, id) in ids.iter().enumerate() {
        let got = scanner.close_stream(id).unwrap().unwrap();
        assert!(got.exact);
        let expected = reference_lines(rules, &lines[stream]);
        tally.compare("lines", &ours(rules, &got), &expected);
    }
}

#[test]
fn patterns_anchored_past_the_head_match_whole_buffer_scans() {
    let rules = compile_searched(FAR_ANCHOR_RULES).expect("rules compile");
    assert!(
        rules.analysis().rules.iter().all(|r| r.supported),
        "the far-anchored rules must be stream-exact"
    );
    assert_eq!(rules.analysis().head_len, 0, "no head for far anchors");
    let case = (
        proptest::collection::vec(far_anchor_data(), 1..3),
        proptest::collection::vec(prop_oneof![2 => 1usize..20, 3 => 100usize..3_000], 1..5),
        proptest::collection::vec(any::<proptest::sample::Index>(), 1..8),
    );
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut tally = FarTally::default();
    for _ in 0..100 {
        let drawn = case.new_tree(&mut runner).unwrap().current();
        let case = Case::of_fixed_rules(drawn, 97, 1 << 16, 7);
        far_anchor_chunks(&case, &rules, &mut tally);
        far_anchor_lines(&case, &rules, &mut tally);
    }
    let FarTally {
        matched,
        missed,
        cut_inside,
        wrong,
    } = tally;
    eprintln!("far anchors: rules matched {matched:?}, {missed} missed, {cut_inside} chunk cuts inside an anchor's bytes");
    assert!(
        wrong.is_empty(),
        "verdicts that differ, by mode and rule: {wrong:?}"
    );
    for mode in ["chunks", "lines"] {
        for rule in ["far_text", "far_alt", "far_nocase", "far_two"] {
            let seen = matched.get(&format!("{mode} {rule}")).copied();
            assert!(seen.unwrap_or(0) > 0, "{rule} never matched in {mode}");
        }
    }
    assert!(missed > 0 && cut_inside > 0);
}
