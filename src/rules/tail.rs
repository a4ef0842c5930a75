//! The tail of a chunk stream: how many of its last bytes it keeps for the
//! search of its next chunk, and when a match the search found is final.
//!
//! A match of pattern `p` that starts at `s` is *settled* by a block that
//! shows it whole with [`SPAN_CONTEXT`] bytes on each side:
//! `s + reach(p) + SPAN_CONTEXT <= end`, `reach(p)` being its longest match
//! (see `scanner::batch`). One that is not settled yet must be found again
//! by the next block, so the stream keeps its bytes from `s - SPAN_CONTEXT`
//! on. Keeping that much for every possible `s` costs `W + 31` bytes per
//! stream, `W` the longest pattern of the rule set (1,024 with real rules).
//!
//! Most long patterns cannot start just anywhere: every match of
//! `"Content-Disposition: attachment"` starts with `Content-Disposition:`,
//! and every match of `{ B9 ?? ?? ?? ?? 8D 85 }` holds `8D 85` five bytes
//! after its start. So a stream keeps the *floor* (the longest pattern
//! without such a known *key*, plus context), and reaches back further
//! only to where a long pattern's key says a match may start that is not
//! settled yet ([`TailPlan::keep`]).
//!
//! That search runs for every chunk, so it must be cheap: it looks for the
//! keys' first [`KEY_PREFIX`] bytes with a small automaton and compares the
//! rest where one is found (an automaton of whole keys outgrows the CPU's
//! caches with real rule sets: 2.6 MB for bartblaze's 208 keys, against
//! 0.4 MB for their 4-byte prefixes), and it is skipped altogether when
//! keys could spare a stream fewer than [`MIN_KEY_SAVING`] bytes.

use std::collections::{HashMap, HashSet};

use aho_corasick::{AhoCorasick, AhoCorasickKind};
use regex_syntax::hir::literal::{ExtractKind, Extractor};
use yara_x_parser::ast;

use super::open_ended::OpenEndedRegex;
use super::preconditions::{FailedPreconditions, PreconditionPlan};
use crate::stream::span::SPAN_CONTEXT;

/// How far into a match its key may end: a key only partly in the stream
/// so far belongs to a match that starts within the floor's context (see
/// [`TailPlan::keep`]).
const KEY_HORIZON: usize = SPAN_CONTEXT;

/// Shortest key used: a pattern whose matches hold one of a few common
/// bytes may start almost anywhere.
const MIN_KEY: usize = 2;

/// Most prefixes one regex may have (`/(GET|POST) /` has two).
const MAX_REGEX_PREFIXES: usize = 32;

/// Bytes of each key the automaton of [`TailPlan::keep`] looks for; the
/// rest of the key is compared where they are found.
const KEY_PREFIX: usize = 4;

/// Fewest bytes keys must be able to spare a stream (the window less the
/// floor) to be tracked at all: below that, searching for them costs more
/// than the bytes they spare.
const MIN_KEY_SAVING: usize = 64;

/// Bytes every match of a pattern holds at a fixed distance from its
/// start (or one of several such keys).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MatchKey {
    /// The distance.
    pub offset: usize,
    /// The bytes, in lower case: they are compared without regard to
    /// ASCII case (which only makes more places look like a match).
    pub bytes: Vec<u8>,
}

impl MatchKey {
    /// A key of `bytes` at `offset`, cut at [`KEY_HORIZON`].
    fn new(offset: usize, bytes: &[u8]) -> MatchKey {
        let len = bytes.len().min(KEY_HORIZON.saturating_sub(offset));
        MatchKey {
            offset,
            bytes: bytes[..len].to_ascii_lowercase(),
        }
    }
}

/// One pattern the search must find exactly, as the tail sees it.
#[derive(Debug, Clone)]
pub struct TailPattern {
    /// Its longest match (at most the window).
    pub reach: usize,
    /// Keys one of which every match holds; `None` when not known.
    pub keys: Option<Vec<MatchKey>>,
}

impl TailPattern {
    /// The pattern `pattern`, whose longest match is `reach`.
    pub fn of(pattern: &ast::Pattern<'_>, reach: usize) -> TailPattern {
        TailPattern {
            reach,
            keys: match_keys(pattern),
        }
    }
}

/// What every chunk stream keeps as its tail (see the module doc).
#[derive(Debug, Clone)]
pub struct TailPlan {
    /// The window `W`: the longest match of a pattern the search serves.
    window: usize,
    /// Bytes always kept: the longest untracked pattern plus context (the
    /// window's when no keys are tracked).
    floor: usize,
    /// The first [`KEY_PREFIX`] bytes of the tracked patterns' keys, when
    /// there are any.
    key_prefixes: Option<AhoCorasick>,
    /// Per prefix of `key_prefixes`: the keys that begin so, each with
    /// where it is found in a match and the longest match keyed so.
    starts: Vec<Vec<KeyStart>>,
    /// Per rule identifier: its patterns' reaches, and which are walked.
    rules: HashMap<String, RulePatterns>,
    /// The open-ended regexes the search serves.
    open_ended: Vec<Walk>,
}

/// What the search needs of one rule's patterns, found by one lookup.
#[derive(Debug, Clone, Default)]
struct RulePatterns {
    /// Each pattern's reach, in declaration order.
    reaches: Box<[u32]>,
    /// The open-ended ones: pattern index, and place in
    /// [`TailPlan::open_ended`].
    walks: Vec<(usize, usize)>,
}

/// An open-ended regex the tail follows, and the precondition of its rule
/// (`rules::preconditions`): a stream that failed it keeps nothing for the
/// regex, as its rule is false there and the search drops its matches.
#[derive(Debug, Clone)]
struct Walk {
    regex: OpenEndedRegex,
    precondition: Option<u32>,
}

/// A tracked key, as [`TailPlan::keep`] uses it.
#[derive(Debug, Clone)]
struct KeyStart {
    /// The whole key, in lower case.
    bytes: Box<[u8]>,
    /// Its distance from a match's start.
    offset: usize,
    /// The longest match of a pattern keyed so.
    reach: usize,
}

impl KeyStart {
    /// The start, in `recent`, of the match this key belongs to when its
    /// prefix was found at `at` of `hay` (which begins at `hay_start` of
    /// `recent`): `None` when the whole key is not there in `hay`, or the
    /// match would start before `recent` (see [`TailPlan::keep`]).
    fn match_start(&self, hay: &[u8], at: usize, hay_start: usize) -> Option<usize> {
        let found = hay.get(at..at + self.bytes.len())?;
        if !found.eq_ignore_ascii_case(&self.bytes) {
            return None;
        }
        (hay_start + at).checked_sub(self.offset)
    }
}

impl Default for TailPlan {
    fn default() -> TailPlan {
        TailPlan::uniform(1)
    }
}

impl TailPlan {
    /// A plan that keeps `W + 2 * SPAN_CONTEXT - 1` bytes for every stream
    /// and settles every match by the window: what a rule set whose
    /// patterns have no known prefix needs, or whose keys would spare less
    /// than [`MIN_KEY_SAVING`].
    pub fn uniform(window: usize) -> TailPlan {
        TailPlan {
            window,
            floor: tail_bytes(window),
            key_prefixes: None,
            starts: Vec::new(),
            rules: HashMap::new(),
            open_ended: Vec::new(),
        }
    }

    /// The plan for the patterns the search serves (`patterns`), their
    /// window `window`, and the reach of every rule's patterns
    /// (`rules`: identifier, and each pattern's reach in declaration
    /// order; patterns the search does not serve have the window's).
    pub fn new(
        window: usize,
        patterns: &[TailPattern],
        rules: HashMap<String, Box<[u32]>>,
    ) -> TailPlan {
        let reach = |p: &TailPattern| p.reach.min(window);
        let floor = patterns
            .iter()
            .filter(|p| p.keys.is_none())
            .map(reach)
            .max()
            .unwrap_or(0);
        let rules = rules
            .into_iter()
            .map(|(rule, reaches)| {
                let walks = Vec::new();
                (rule, RulePatterns { reaches, walks })
            })
            .collect();
        let untracked = TailPlan {
            rules,
            ..TailPlan::uniform(window)
        };
        if window.saturating_sub(floor) < MIN_KEY_SAVING {
            return untracked;
        }
        // Per key: the longest match of a pattern keyed by it.
        let mut longest: HashMap<&MatchKey, usize> = HashMap::new();
        for pattern in patterns.iter().filter(|p| reach(p) > floor) {
            for key in pattern.keys.iter().flatten() {
                let entry = longest.entry(key).or_default();
                *entry = (*entry).max(reach(pattern));
            }
        }
        let mut starts: HashMap<&[u8], Vec<KeyStart>> = HashMap::new();
        for (key, reach) in longest {
            let prefix = &key.bytes[..key.bytes.len().min(KEY_PREFIX)];
            starts.entry(prefix).or_default().push(KeyStart {
                bytes: key.bytes.clone().into_boxed_slice(),
                offset: key.offset,
                reach,
            });
        }
        let (prefixes, starts): (Vec<_>, Vec<_>) = starts.into_iter().unzip();
        // A DFA of key prefixes: read for every chunk, over up to
        // `W + SPAN_CONTEXT` bytes, overlapping.
        // Built from a few thousand short byte strings at most, it does not
        // fail; if it did, every stream would keep the longest tail.
        let automaton = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .kind(Some(AhoCorasickKind::DFA))
            .build(&prefixes);
        let Ok(automaton) = automaton else {
            return untracked;
        };
        TailPlan {
            floor: tail_bytes(floor),
            key_prefixes: (!prefixes.is_empty()).then_some(automaton),
            starts,
            ..untracked
        }
    }

    /// Bytes every stream keeps whatever its bytes: the longest pattern
    /// without a key, plus context (the window's, plus context, when no
    /// keys are tracked: see [`MIN_KEY_SAVING`]).
    pub fn floor(&self) -> usize {
        self.floor
    }

    /// Adds the open-ended regexes the search serves (see
    /// [`crate::rules::open_ended`]): rule identifier, pattern index and
    /// its walks. Their matches settle where their walks die, and a
    /// stream keeps its bytes back to where one may still be growing.
    pub fn with_open_ended(mut self, patterns: Vec<(String, usize, OpenEndedRegex)>) -> TailPlan {
        if !patterns.is_empty() {
            // The walks look at starts up to `context + 2` bytes before the
            // end (see `keep_for_open_ended`); the floor keeps the later
            // ones: `floor - context >= context + 2`.
            self.floor = self.floor.max(tail_bytes(3));
        }
        for (rule, index, regex) in patterns {
            let walks = &mut self.rules.entry(rule).or_default().walks;
            walks.push((index, self.open_ended.len()));
            self.open_ended.push(Walk {
                regex,
                precondition: None,
            });
        }
        self
    }

    /// Notes the preconditions of the walked regexes' rules: a stream that
    /// failed one keeps nothing for its rule's regexes.
    pub fn with_preconditions(mut self, plan: &PreconditionPlan) -> TailPlan {
        for (rule, patterns) in &self.rules {
            for &(_, at) in &patterns.walks {
                self.open_ended[at].precondition = plan.precondition_of(rule);
            }
        }
        self
    }

    /// Most bytes a stream keeps: `W + 2 * SPAN_CONTEXT - 1`, or with
    /// open-ended regexes their longest match's.
    pub fn most(&self) -> usize {
        let open_ended = self.open_ended.iter().map(|walk| walk.regex.max_len());
        tail_bytes(open_ended.fold(self.window, usize::max))
    }

    /// The longest match of the `index`-th pattern of rule `rule` (the
    /// window when not known: a rule from an included file, say), and its
    /// walks when it is an open-ended regex: its matches then reach as far
    /// as [`OpenEndedRegex::reach_from`] says, when the walk dies.
    pub fn pattern_reach(&self, rule: &str, index: usize) -> (usize, Option<&OpenEndedRegex>) {
        let Some(patterns) = self.rules.get(rule) else {
            return (self.window, None);
        };
        let reach = patterns
            .reaches
            .get(index)
            .map_or(self.window, |&reach| reach as usize);
        let walk = patterns.walks.iter().find(|(i, _)| *i == index);
        (reach, walk.map(|&(_, at)| &self.open_ended[at].regex))
    }

    /// The longest match of the `index`-th pattern of rule `rule`: see
    /// [`Self::pattern_reach`].
    pub fn reach_of(&self, rule: &str, index: usize) -> usize {
        self.pattern_reach(rule, index).0
    }

    /// How many of the last bytes of `recent` a stream keeps as its tail.
    /// `recent` ends where the stream does, and holds its last
    /// [`Self::most`] bytes, or fewer if its previous tail and the bytes
    /// since are fewer: every place a match may start that the search has
    /// not settled lies in it, past its first [`SPAN_CONTEXT`] bytes (by
    /// induction over the chunks, from what this function kept before).
    ///
    /// Why that is enough: a match of `p` at `s` is settled by the next
    /// block unless `s + reach(p) + SPAN_CONTEXT > end`; it must then be
    /// found again, with its left context, so the tail starts at
    /// `s - SPAN_CONTEXT` or before. The floor covers every `s` of a
    /// pattern without a key, and every `s` within [`KEY_HORIZON`] of the
    /// end (where a key may be cut, or not come yet). Any other match of
    /// a keyed pattern holds one of its keys, whole in `recent`.
    ///
    /// An open-ended regex's match at `s` is settled once its walk from
    /// `s` dies `SPAN_CONTEXT + 2` bytes before the end, or `s + max_len +
    /// SPAN_CONTEXT <= end` (its longest match); the tail keeps the others,
    /// but for the regexes of rules whose precondition the stream failed
    /// (`ruled_out`: the scanner drops their matches as it settles them).
    pub fn keep(&self, recent: &[u8], ruled_out: &FailedPreconditions) -> usize {
        let end = recent.len();
        let from = self.keep_for_keys(recent, end.saturating_sub(self.floor));
        end - self.keep_for_open_ended(recent, from, ruled_out)
    }

    /// Where the tail must start for the open-ended regexes, `from` being
    /// where it starts for the rest.
    fn keep_for_open_ended(
        &self,
        recent: &[u8],
        mut from: usize,
        ruled_out: &FailedPreconditions,
    ) -> usize {
        let context = SPAN_CONTEXT;
        let end = recent.len();
        // Starts from `from + context` on are kept already. A match whose
        // walk dies at `d` settles once `d + 2 + context <= end` (the
        // search's reach counts the byte it died on, and the DFA dies a
        // byte late after a match: see `OpenEndedRegex::reach_from`), so
        // a start whose walk is alive 2 bytes before the context is kept.
        let before_context = &recent[..end.saturating_sub(context + 2)];
        let live = self.open_ended.iter().filter(|walk| {
            !walk
                .precondition
                .is_some_and(|index| ruled_out.contains(index))
        });
        for Walk { regex, .. } in live {
            let lowest = end.saturating_sub(regex.max_len() + context);
            let start = regex.earliest_live_start(before_context, lowest);
            if start < before_context.len() && start < from + context {
                from = start.saturating_sub(context);
            }
        }
        from
    }

    /// Where the tail must start for the keyed patterns, `from` being where
    /// the floor starts it.
    fn keep_for_keys(&self, recent: &[u8], mut from: usize) -> usize {
        let end = recent.len();
        let Some(automaton) = &self.key_prefixes else {
            return from;
        };
        let context = SPAN_CONTEXT;
        // Starts from `from + context` on are covered already, and their
        // keys end within `KEY_HORIZON` of them; earlier starts may reach
        // `W + context` back.
        let scan_from = end.saturating_sub(self.window + context);
        let scan_to = (from + context + KEY_HORIZON).min(end);
        if scan_from >= scan_to {
            return from;
        }
        let hay = &recent[scan_from..scan_to];
        for found in automaton.find_overlapping_iter(hay) {
            for key in &self.starts[found.pattern().as_usize()] {
                // A start before `recent` was settled before (see above).
                let Some(start) = key.match_start(hay, found.start(), scan_from) else {
                    continue;
                };
                if start < from + context && start + key.reach + context > end {
                    from = start.saturating_sub(context);
                }
            }
        }
        from
    }
}

/// The tail that settles every match up to `longest` bytes.
fn tail_bytes(longest: usize) -> usize {
    longest + 2 * SPAN_CONTEXT - 1
}

/// Keys one of which every match of `pattern` holds (see [`MatchKey`]);
/// `None` when not known, or shorter than [`MIN_KEY`].
pub(crate) fn match_keys(pattern: &ast::Pattern<'_>) -> Option<Vec<MatchKey>> {
    let modifiers = pattern.modifiers();
    let keys = match pattern {
        ast::Pattern::Text(text) => {
            if modifiers.xor().is_some()
                || modifiers.base64().is_some()
                || modifiers.base64wide().is_some()
            {
                return None;
            }
            let value = &text.text.value;
            let wide = modifiers.wide().is_some();
            let mut forms = Vec::new();
            if !wide || modifiers.ascii().is_some() {
                forms.push(MatchKey::new(0, value));
            }
            if wide {
                let widened: Vec<u8> = value.iter().flat_map(|&b| [b, 0]).collect();
                forms.push(MatchKey::new(0, &widened));
            }
            forms
        }
        ast::Pattern::Hex(hex) => vec![hex_key(&hex.sub_patterns)?],
        ast::Pattern::Regexp(regexp) if modifiers.wide().is_none() => {
            regex_prefixes(&regexp.regexp, modifiers.nocase().is_some())?
        }
        ast::Pattern::Regexp(_) => return None,
    };
    let keys: HashSet<MatchKey> = keys.into_iter().collect();
    let usable = !keys.is_empty() && keys.iter().all(|k| k.bytes.len() >= MIN_KEY);
    usable.then(|| {
        let mut keys: Vec<_> = keys.into_iter().collect();
        keys.sort();
        keys
    })
}

/// The longest run of plain bytes a hex pattern has at a fixed distance
/// from its start, within [`KEY_HORIZON`]: masked bytes and fixed jumps
/// (`[4]`) keep the distance known, a range or an alternative ends it.
fn hex_key(tokens: &ast::HexSubPattern) -> Option<MatchKey> {
    let mut best: Option<MatchKey> = None;
    let mut keep_longest = |offset: usize, run: &[u8]| {
        if run.is_empty() {
            return;
        }
        let key = MatchKey::new(offset, run);
        if best
            .as_ref()
            .is_none_or(|b| key.bytes.len() > b.bytes.len())
        {
            best = Some(key);
        }
    };
    let (mut offset, mut run) = (0, Vec::new());
    for token in tokens.iter() {
        if offset >= KEY_HORIZON {
            break;
        }
        if let ast::HexToken::Byte(byte) = token {
            if byte.mask == 0xFF {
                run.push(byte.value);
                offset += 1;
                continue;
            }
        }
        keep_longest(offset - run.len(), &run);
        run.clear();
        offset += match token {
            ast::HexToken::Byte(_) | ast::HexToken::NotByte(_) => 1,
            ast::HexToken::Jump(jump) if jump.start.is_some() && jump.start == jump.end => {
                jump.start.unwrap_or(0) as usize
            }
            _ => break,
        };
    }
    keep_longest(offset - run.len(), &run);
    best
}

/// The literal prefixes of a regex's matches, when there are few.
fn regex_prefixes(regexp: &ast::Regexp<'_>, nocase: bool) -> Option<Vec<MatchKey>> {
    let hir = super::edges::parse(regexp, nocase)?;
    let mut extractor = Extractor::new();
    extractor
        .kind(ExtractKind::Prefix)
        .limit_literal_len(KEY_HORIZON)
        .limit_total(MAX_REGEX_PREFIXES);
    let seq = extractor.extract(&hir);
    let literals = seq.literals()?;
    Some(
        literals
            .iter()
            .map(|l| MatchKey::new(0, l.as_bytes()))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    impl TailPlan {
        /// [`TailPlan::keep`] for a stream that failed no precondition.
        fn keep_all(&self, recent: &[u8]) -> usize {
            self.keep(recent, &FailedPreconditions::default())
        }
    }

    fn keys_of(src: &str) -> Vec<Option<Vec<(usize, String)>>> {
        let tree = ast::AST::from(src);
        assert!(tree.errors().is_empty(), "{:?}", tree.errors());
        let rule = tree.rules().next().unwrap();
        let readable = |k: MatchKey| (k.offset, k.bytes.escape_ascii().to_string());
        rule.patterns
            .iter()
            .flatten()
            .map(|p| match_keys(p).map(|keys| keys.into_iter().map(readable).collect()))
            .collect()
    }

    fn at_start(list: &[&str]) -> Option<Vec<(usize, String)>> {
        Some(list.iter().map(|s| (0, s.to_string())).collect())
    }

    #[test]
    fn keys_are_known_for_text_hex_and_literal_led_regexes() {
        let found = keys_of(
            r#"rule r { strings:
                $a = "Content-Disposition: attachment; filename="
                $b = "PK" nocase
                $c = { 25 50 ?? 46 }
                $d = "ab" ascii wide
                $e = "xy" xor
                $f = /(GET|POST) \/[a-z]{1,40}/
                $g = /[a-z]+ab/
                $h = { B9 ?? ?? ?? ?? 8D 85 ?? ?? ?? ?? 8A 10 3A 11 75 ?? 84 D2 }
                $i = "z"
                $j = /abc/ wide
                $k = { 4? 8d 4d 38 4? [2] 8b 95 88 01 00 00 4? 8d 05 }
                $l = { 41 [1-4] 42 43 44 45 }
                $m = { 41 ( 42 | 43 ) 44 45 46 }
              condition: any of them }"#,
        );
        assert_eq!(found[0], at_start(&["content-disposit"]), "cut at 16 bytes");
        assert_eq!(found[1], at_start(&["pk"]));
        assert_eq!(found[2], at_start(&["%p"]));
        assert_eq!(found[3], at_start(&["a\\x00b\\x00", "ab"]));
        assert_eq!(found[4], None, "xor");
        assert_eq!(found[5], at_start(&["get /", "post /"]));
        assert_eq!(found[6], None, "a class of 26 bytes leads");
        assert_eq!(found[7], Some(vec![(11, "\\x8a\\x10:\\x11u".to_string())]));
        assert_eq!(found[8], None, "shorter than two bytes");
        assert_eq!(found[9], None, "wide regex");
        assert_eq!(
            found[10],
            Some(vec![(7, "\\x8b\\x95\\x88\\x01\\x00\\x00".to_string())])
        );
        assert_eq!(found[11], None, "a range ends the known distances");
        assert_eq!(found[12], None, "so does an alternative");
    }

    fn pattern(reach: usize, keys: Option<&[(usize, &str)]>) -> TailPattern {
        TailPattern {
            reach,
            keys: keys.map(|list| {
                list.iter()
                    .map(|(offset, bytes)| MatchKey::new(*offset, bytes.as_bytes()))
                    .collect()
            }),
        }
    }

    #[test]
    fn a_stream_keeps_nothing_for_the_walks_of_rules_it_ruled_out() {
        let rules = crate::RuleSet::from_source(
            r#"rule gif { strings: $g = "GIF8" $e = /eval\([ -~]{3,}/ condition: $g at 0 and $e }"#,
            1024,
        )
        .unwrap();
        let (plan, preconditions) = (rules.tail_plan(), rules.preconditions());
        let mut recent = vec![b'.'; 200];
        recent.extend_from_slice(b"eval(");
        recent.extend_from_slice(&[b'a'; 100]);
        // A match may still be growing from `eval(`: kept, with context.
        let all = plan.keep(&recent, &FailedPreconditions::default());
        assert_eq!(all, 105 + SPAN_CONTEXT);
        assert!(all > plan.floor());
        // A stream that does not start `GIF8` cannot match the rule.
        let mut sets = Default::default();
        let http = FailedPreconditions(preconditions.failed(b"HTTP/1.1", 8, &mut sets));
        assert_eq!(plan.keep(&recent, &http), plan.floor());
        let gif = FailedPreconditions(preconditions.failed(b"GIF89a", 8, &mut sets));
        assert_eq!(plan.keep(&recent, &gif), all);
    }

    #[test]
    fn the_floor_is_the_longest_pattern_without_a_key() {
        let plan = TailPlan::new(
            300,
            &[pattern(40, None), pattern(300, Some(&[(0, "ab")]))],
            HashMap::new(),
        );
        assert_eq!(plan.floor(), 40 + 2 * SPAN_CONTEXT - 1);
        assert_eq!(plan.most(), 300 + 2 * SPAN_CONTEXT - 1);
        // Nothing tracked occurs: the floor.
        let recent = vec![b'.'; 400];
        assert_eq!(plan.keep_all(&recent), plan.floor());
        // A short stream keeps what it has.
        assert_eq!(plan.keep_all(b"0123"), 4);
        let uniform = TailPlan::uniform(300);
        assert_eq!(uniform.keep_all(&recent), uniform.most());
    }

    #[test]
    fn keys_that_would_spare_few_bytes_are_not_tracked() {
        let saving = |window: usize, floor_reach: usize| {
            let patterns = [
                pattern(floor_reach, None),
                pattern(window, Some(&[(0, "ab")])),
            ];
            let plan = TailPlan::new(window, &patterns, HashMap::new());
            let mut recent = vec![b'.'; 2 * window];
            recent[window - 10..window - 8].copy_from_slice(b"ab");
            assert_eq!(
                plan.keep_all(&recent) < plan.most(),
                plan.floor() < plan.most()
            );
            plan.most() - plan.floor()
        };
        assert_eq!(saving(100, 100 - MIN_KEY_SAVING), MIN_KEY_SAVING);
        assert_eq!(saving(100, 101 - MIN_KEY_SAVING), 0);
        // Untracked keys still leave each pattern its reach.
        let rules = HashMap::from([("r".to_string(), vec![7u32].into_boxed_slice())]);
        let plan = TailPlan::new(10, &[pattern(10, Some(&[(0, "ab")]))], rules);
        assert_eq!((plan.floor(), plan.reach_of("r", 0)), (plan.most(), 7));
    }

    #[test]
    fn a_key_stretches_the_tail_while_its_match_may_be_unsettled() {
        let (reach, context) = (300, SPAN_CONTEXT);
        let end = 1000;
        // The earliest start not settled by a block ending at `end`.
        let first_unsettled = end - reach - context + 1;
        for offset in [0, 5] {
            let keyed = pattern(reach, Some(&[(offset, "AbC")]));
            let plan = TailPlan::new(reach, &[pattern(10, None), keyed], HashMap::new());
            let with_match_at = |at: usize| {
                let mut recent = vec![b'.'; end];
                recent[at + offset..at + offset + 3].copy_from_slice(b"aBc");
                recent
            };
            assert_eq!(
                plan.keep_all(&with_match_at(first_unsettled)),
                end - (first_unsettled - context)
            );
            assert_eq!(
                plan.keep_all(&with_match_at(first_unsettled - 1)),
                plan.floor()
            );
            assert_eq!(plan.keep_all(&with_match_at(700)), end - 700 + context);
            // Within the floor already.
            assert_eq!(plan.keep_all(&with_match_at(end - 20)), plan.floor());
        }
        // A key longer than the automaton's prefix counts only when whole.
        let keyed = pattern(reach, Some(&[(2, "Content-Type")]));
        let plan = TailPlan::new(reach, &[pattern(10, None), keyed], HashMap::new());
        let with_at_700 = |text: &[u8]| {
            let mut recent = vec![b'.'; end];
            recent[702..702 + text.len()].copy_from_slice(text);
            recent
        };
        assert_eq!(
            plan.keep_all(&with_at_700(b"content-type")),
            end - 700 + context
        );
        assert_eq!(plan.keep_all(&with_at_700(b"content-typo")), plan.floor());
        assert_eq!(plan.keep_all(&with_at_700(b"cont")), plan.floor());
        // Keys that share a prefix are each compared, with their own offset
        // and reach; one whose prefix ends what is searched is not read past
        // it (its match starts within the floor's context: see `keep`).
        let plan = TailPlan::new(
            reach,
            &[
                pattern(10, None),
                pattern(reach, Some(&[(2, "Content-Type")])),
                pattern(200, Some(&[(0, "Content-Length")])),
            ],
            HashMap::new(),
        );
        assert_eq!(
            plan.keep_all(&with_at_700(b"content-type")),
            end - 700 + context
        );
        let length_at_700 = with_at_700(b"..content-length");
        assert_eq!(
            plan.keep_all(&length_at_700),
            plan.floor(),
            "settled by 200"
        );
        let mut length_late = vec![b'.'; end];
        length_late[850..864].copy_from_slice(b"content-length");
        assert_eq!(plan.keep_all(&length_late), end - 850 + context);
        let mut cut = vec![b'.'; end];
        cut[end - 16..end - 4].copy_from_slice(b"content-type");
        let scan_to = end - plan.floor() + context + KEY_HORIZON;
        assert!((end - 16 + KEY_PREFIX..end - 4).contains(&scan_to));
        assert_eq!(plan.keep_all(&cut), plan.floor());
        // The reach of each pattern is known to the acceptance too.
        let rules = HashMap::from([("r".to_string(), vec![7u32, 300].into_boxed_slice())]);
        let plan = TailPlan::new(reach, &[], rules);
        assert_eq!(
            (
                plan.reach_of("r", 0),
                plan.reach_of("r", 1),
                plan.reach_of("r", 2)
            ),
            (7, 300, 300)
        );
        assert_eq!(plan.reach_of("unknown", 0), 300);
    }
}
