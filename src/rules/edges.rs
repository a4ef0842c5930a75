//! Edge guards: where a replayed block may start and end without changing
//! what YARA-X finds in it.
//!
//! The verdict of a stream is computed by replaying short spans of it into
//! a YARA-X block scanner. YARA-X treats the edges of a block as the edges
//! of the data: `^` matches at the start of every block and `$` at its end,
//! `fullword`, `\b` and `\B` see a word boundary there. Only a match that
//! *starts* at a block's first byte looks at what comes before (through
//! `fullword`, or a look-around it may pass before its first byte: `/^ab/`
//! does, `/ab$/` does not), and only one that *ends* at its last byte
//! looks at what comes after (likewise). So an edge is
//! safe when no context-sensitive pattern can match starting (or ending)
//! exactly there, with one more case at a block's end: a match that would
//! run past it is cut short, and for a `fullword` regex that can make one
//! up (YARA-X checks `fullword` only on the match its VM picks at an offset,
//! the longest: a shorter one that the block's end leaves may pass where
//! the stream's longer one fails). An end is also unsafe where such a match
//! could be cut.
//!
//! The guard holds every context-sensitive pattern of a rule set: regexes
//! with `^`, `$`, `\b` or `\B`, and `fullword` strings and regexes. It
//! answers "could one of them match starting at this edge (or ending at
//! it)?", with the look-arounds removed so that a match YARA-X would find
//! in the full stream is never ruled out by the edge itself. The answer is
//! conservative: it ignores the zero bytes of `wide` forms and treats every
//! look-around as satisfied, so it may call a safe edge unsafe (the span
//! just grows), never the reverse.

use aho_corasick::automaton::Automaton as _;
use aho_corasick::nfa::contiguous;
use regex_automata::dfa::{dense, Automaton, StartKind};
use regex_automata::meta::Regex;
use regex_automata::nfa::thompson;
use regex_automata::util::primitives::StateID;
use regex_automata::util::start;
use regex_automata::{Anchored, Input, MatchKind};
use regex_syntax::hir::{Class, Hir, HirKind, Look};
use yara_x_parser::ast::{self, Pattern};

/// A regex that may depend on its surroundings.
#[derive(Debug, Clone)]
struct RegexGuard {
    /// The regex with its look-arounds removed.
    starts: Regex,
    /// The same, forced to end at the end of the haystack.
    ends: Regex,
    /// Whether a match may pass a look-around before its first byte (or
    /// is `fullword`): only then can the bytes before it change it.
    looks_left: bool,
    /// Whether a match may pass one after its last byte (or is
    /// `fullword`): only then can the bytes after it change it.
    looks_right: bool,
    wide: bool,
    /// Bytes a match can span (wide forms included), to bound searches.
    reach: usize,
    /// For a `fullword` regex whose matches vary in length: where a block
    /// end could cut one of its matches short (see [`Truncation`]).
    truncation: Option<Truncation>,
    /// Bytes a match can start with, and end with (`None`: any, for a regex
    /// that matches the empty string). Most edges fail this one lookup,
    /// before any regex search.
    first: Option<ByteSet>,
    last: Option<ByteSet>,
}

/// A set of bytes.
type ByteSet = [bool; 256];

/// Whether `byte` (if any) is in `set` (if any: `None` holds every byte,
/// and also lets nothing through be ruled out).
fn may_be(set: &Option<ByteSet>, byte: Option<&u8>) -> bool {
    match set {
        None => true,
        Some(set) => byte.is_some_and(|&b| set[usize::from(b)]),
    }
}

/// Where a block's end could shorten a `fullword` regex's match.
///
/// YARA-X verifies a regex at an offset by taking the one match its VM
/// picks there (the longest, for greedy regexes) and checking `fullword`
/// on that match only: when it fails, nothing matches at that offset, even
/// if a shorter match would pass. A block that ends inside that match
/// makes the VM pick a shorter one, which may pass. `/A[^a]{1,3}./
/// fullword` on `Abb\na`: the match is `Abb\na`, followed by `a`, so no
/// match; a block ending after the `\n` holds `Abb`, followed by `\n`: a
/// match the stream does not have. Such a made-up match would be replayed
/// and believed, so an edge is unsafe wherever a match could start before
/// it, end before it (what the block would find) and also go on past it.
///
/// The relaxed regex (look-arounds removed) as an anchored DFA reporting
/// every match, not only the first, walked from every start before the
/// edge: a start whose walk passed a match and is still alive at the edge
/// makes the edge unsafe. Starts whose walks are in the same DFA state
/// behave alike from there on, so the walks are merged by state: the cost
/// is linear in the bytes looked at.
#[derive(Debug, Clone)]
struct Truncation {
    /// `None` when the DFA would be too big: then a cruder test stands in
    /// (see [`Truncation::cuts`]).
    dfa: Option<(dense::DFA<Vec<u32>>, StateID)>,
    /// Longest match, in characters (bytes, or pairs of a wide form).
    max_len: usize,
}

impl RegexGuard {
    fn starts_at(&self, data: &[u8]) -> bool {
        // A wide form's first character is the first byte too.
        if !self.looks_left || !may_be(&self.first, data.first()) {
            return false;
        }
        let data = &data[..data.len().min(self.reach)];
        let anchored = |hay| Input::new(hay).anchored(Anchored::Yes);
        self.starts.is_match(anchored(data))
            || (self.wide && self.starts.is_match(anchored(&every_other(data.iter()))))
    }

    fn ends_at(&self, data: &[u8]) -> bool {
        if !self.looks_right {
            return false;
        }
        let data = &data[data.len().saturating_sub(self.reach)..];
        if may_be(&self.last, data.last()) && self.ends.is_match(data) {
            return true;
        }
        // A wide match ends with the zero after its last character.
        let last_char = data.len().checked_sub(2).map(|i| &data[i]);
        if !self.wide || !may_be(&self.last, last_char) {
            return false;
        }
        let mut chars = every_other(data.iter().rev().skip(1));
        chars.reverse();
        self.ends.is_match(&chars)
    }

    /// Whether a block ending at the end of `data` could cut a match of
    /// this regex short (see [`Truncation`]).
    fn truncated_at(&self, data: &[u8]) -> bool {
        let Some(truncation) = &self.truncation else {
            return false;
        };
        let bytes = &data[data.len().saturating_sub(truncation.max_len)..];
        if truncation.cuts(bytes, &self.starts) {
            return true;
        }
        // A wide form: its characters are every other byte, on either
        // parity (the zeros are ignored, as elsewhere: conservative).
        let data = &data[data.len().saturating_sub(2 * truncation.max_len)..];
        self.wide
            && (0..2).any(|parity| {
                let chars = every_other(data.get(parity..).unwrap_or_default().iter());
                truncation.cuts(&chars, &self.starts)
            })
    }
}

impl Truncation {
    /// Limit on the DFA's size (and on the memory building it takes).
    const DFA_LIMIT: usize = 8 << 20;

    fn new(relaxed: &Hir, max_len: usize) -> Truncation {
        let dfa = thompson::Compiler::new()
            .configure(thompson::Config::new().which_captures(thompson::WhichCaptures::None))
            .build_from_hir(relaxed)
            .ok()
            .and_then(|nfa| {
                dense::Builder::new()
                    .configure(
                        dense::Config::new()
                            .match_kind(MatchKind::All)
                            .start_kind(StartKind::Anchored)
                            .dfa_size_limit(Some(Self::DFA_LIMIT))
                            .determinize_size_limit(Some(Self::DFA_LIMIT)),
                    )
                    .build_from_nfa(&nfa)
                    .ok()
            })
            .and_then(|dfa| {
                let start = dfa
                    .start_state(&start::Config::new().anchored(Anchored::Yes))
                    .ok()?;
                Some((dfa, start))
            });
        Truncation { dfa, max_len }
    }

    /// Whether a match could start in `chars`, end inside it (before its
    /// last character) and also go on past its end. `relaxed` is the same
    /// regex as a [`Regex`].
    ///
    /// Both tests below need a match that ends before the last character:
    /// an unanchored search for one (a lazy DFA, with a prefilter when the
    /// regex has a literal) rules most edges out first. Walking every start
    /// at every edge cost 14% of a scan with `../shared/rules/yara-rules`.
    fn cuts(&self, chars: &[u8], relaxed: &Regex) -> bool {
        let before_last = &chars[..chars.len().saturating_sub(1)];
        if !relaxed.is_match(before_last) {
            return false;
        }
        let Some((dfa, start)) = &self.dfa else {
            // No DFA: any start with a match before the last character, and
            // close enough to the end for a longer match to run past it.
            return (0..before_last.len()).any(|from| {
                chars.len() - from < self.max_len
                    && relaxed.is_match(Input::new(&before_last[from..]).anchored(Anchored::Yes))
            });
        };
        // Live walks: their DFA state, and whether they passed a match.
        let mut walks: Vec<(StateID, bool)> = Vec::new();
        for &c in chars {
            walks.push((*start, false));
            for (state, matched) in &mut walks {
                *state = dfa.next_state(*state, c);
                // Match states come one byte late: this one says a match
                // ended before `c`.
                *matched |= dfa.is_match_state(*state);
            }
            walks.retain(|(state, _)| !dfa.is_dead_state(*state));
            walks.sort_unstable();
            walks.dedup();
        }
        // Alive at the end: some next byte keeps the walk going. (It may
        // only report a match ending exactly at the edge; such an edge is
        // unsafe anyway, see `ends_at`.)
        walks.iter().any(|&(state, matched)| {
            matched && (0..=255u8).any(|c| !dfa.is_dead_state(dfa.next_state(state, c)))
        })
    }
}

/// Every form of the rule set's `fullword` strings, searched at an edge
/// all at once.
///
/// Real rule sets hold thousands of `fullword` strings; trying each at
/// every candidate edge made span edges cost most of a stream's search
/// time. The forms (ascii and wide, every key of an `xor` range) go into
/// anchored Aho-Corasick automata instead: one for forms read forwards from
/// an edge (could one start here?), one for the reversed forms read
/// backwards (could one end here?), per kind (case-sensitive or not, wide
/// or not: wide forms are also tried one byte in, as YARA-X looks two
/// bytes around them).
#[derive(Debug, Clone, Default)]
struct LiteralSet {
    groups: Vec<LiteralGroup>,
}

/// The forms of one kind (see [`LiteralSet`]).
///
/// The automata are walked a byte at a time ([`anchored_match`]) rather
/// than searched through `AhoCorasick`: an end search reads the bytes
/// backwards, and reversing them into a buffer first was an allocation
/// per edge tried.
#[derive(Debug, Clone)]
struct LiteralGroup {
    starts: contiguous::NFA,
    ends: contiguous::NFA,
    wide: bool,
}

/// Forms gathered per kind before the automata are built.
#[derive(Debug, Default)]
struct LiteralForms {
    /// Keyed by (nocase, wide).
    forms: std::collections::BTreeMap<(bool, bool), Vec<Vec<u8>>>,
}

impl LiteralForms {
    /// The forms of a `fullword` string.
    fn add(&mut self, value: &[u8], modifiers: &ast::PatternModifiers<'_>) {
        let wide = modifiers.wide().is_some();
        let mut forms = Vec::new();
        if !wide || modifiers.ascii().is_some() {
            forms.push(value.to_vec());
        }
        if wide {
            forms.push(value.iter().flat_map(|&b| [b, 0]).collect());
        }
        if let Some(ast::PatternModifier::Xor { start, end, .. }) = modifiers.xor() {
            let keys = *start..=*end;
            forms = forms
                .iter()
                .flat_map(|f| keys.clone().map(move |k| f.iter().map(|b| b ^ k).collect()))
                .collect();
        }
        let kind = (modifiers.nocase().is_some(), wide);
        self.forms.entry(kind).or_default().extend(forms);
    }

    fn build(self) -> LiteralSet {
        let groups = self
            .forms
            .into_iter()
            .filter_map(|((nocase, wide), forms)| {
                let build = |patterns: &[Vec<u8>]| {
                    contiguous::NFA::builder()
                        .ascii_case_insensitive(nocase)
                        .build(patterns)
                        .ok()
                };
                let reversed: Vec<Vec<u8>> = forms
                    .iter()
                    .map(|f| f.iter().rev().copied().collect())
                    .collect();
                Some(LiteralGroup {
                    starts: build(&forms)?,
                    ends: build(&reversed)?,
                    wide,
                })
            })
            .collect();
        LiteralSet { groups }
    }
}

impl LiteralSet {
    fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    fn starts_at(&self, data: &[u8]) -> bool {
        self.groups.iter().any(|g| {
            anchored_match(&g.starts, data.iter())
                || (g.wide && anchored_match(&g.starts, data.iter().skip(1)))
        })
    }

    fn ends_at(&self, data: &[u8]) -> bool {
        self.groups.iter().any(|g| {
            let ends_here = |data: &[u8]| anchored_match(&g.ends, data.iter().rev());
            ends_here(data) || (g.wide && ends_here(&data[..data.len().saturating_sub(1)]))
        })
    }
}

/// Whether one of the automaton's patterns is a prefix of `bytes`: an
/// anchored walk, which stops at the first match or where no pattern can
/// go on (so it reads at most the longest pattern's length).
///
/// An anchored walk follows no failure transition, so after `n` bytes it is
/// at the trie node of those `n` bytes. That node also lists the matches of
/// its suffixes (copied there for unanchored searches; `AhoCorasick` drops
/// them in anchored ones by their start): only a pattern `n` bytes long
/// starts at the first byte.
fn anchored_match<'a>(nfa: &contiguous::NFA, bytes: impl Iterator<Item = &'a u8>) -> bool {
    let Ok(mut state) = nfa.start_state(aho_corasick::Anchored::Yes) else {
        return false;
    };
    let whole = |state, depth: usize| {
        (0..nfa.match_len(state)).any(|i| nfa.pattern_len(nfa.match_pattern(state, i)) == depth)
    };
    if nfa.is_match(state) && whole(state, 0) {
        return true;
    }
    for (depth, &byte) in (1..).zip(bytes) {
        state = nfa.next_state(aho_corasick::Anchored::Yes, state, byte);
        if nfa.is_dead(state) {
            return false;
        }
        if nfa.is_match(state) && whole(state, depth) {
            return true;
        }
    }
    false
}

fn every_other<'a>(bytes: impl Iterator<Item = &'a u8>) -> Vec<u8> {
    bytes.step_by(2).copied().collect()
}

/// Where a block edge could cut the range YARA-X decodes around a
/// `base64` or `base64wide` match.
///
/// YARA-X searches for the characters of a pattern's base64 forms that the
/// pattern alone determines (one form per alignment: after 0, 1 or 2
/// bytes), then verifies a find by decoding a range around it: up to three
/// characters before it and three after (twice as many bytes for
/// `base64wide`), truncated at the end of the block. A block edge inside
/// that range changes the verdict both ways: a range cut at the start is
/// not decoded at all (the match is lost), one cut at the end decodes
/// where the whole range would not (a match is made up, or its trailing
/// bits fail). So an edge is unsafe where a form occurs within that reach
/// of it: starting just after a block's start, or ending just before its
/// end.
#[derive(Debug, Clone, Default)]
struct Base64Guard {
    /// The searched forms, and whether each is wide.
    forms: Vec<(Vec<u8>, bool)>,
}

impl Base64Guard {
    /// The standard alphabet (YARA-X's default).
    const STANDARD: &'static [u8] =
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    /// Characters a decode range reaches past the searched form.
    const REACH: usize = 3;

    fn add(&mut self, text: &[u8], alphabet: Option<Vec<u8>>, wide: bool) {
        let alphabet = alphabet.as_deref().unwrap_or(Self::STANDARD);
        for padding in 0..3 {
            let form = determined_base64(text, padding, alphabet);
            // Wide: the zero after the last character is not searched
            // (YARA-X finds a match without it, then claims it).
            let form = match wide {
                true => {
                    let mut wide: Vec<u8> = form.iter().flat_map(|&c| [c, 0]).collect();
                    wide.pop();
                    wide
                }
                false => form,
            };
            if !form.is_empty() {
                self.forms.push((form, wide));
            }
        }
    }

    fn reach(wide: bool) -> usize {
        if wide {
            2 * Self::REACH + 1
        } else {
            Self::REACH
        }
    }

    /// Whether a form starts within reach after the start of `data`.
    fn blocks_start(&self, data: &[u8]) -> bool {
        self.forms.iter().any(|(form, wide)| {
            (0..=Self::reach(*wide)).any(|at| data.get(at..).is_some_and(|d| d.starts_with(form)))
        })
    }

    /// Whether a form ends within reach before the end of `data`.
    fn blocks_end(&self, data: &[u8]) -> bool {
        self.forms.iter().any(|(form, wide)| {
            (0..=Self::reach(*wide)).any(|back| {
                data.len()
                    .checked_sub(back)
                    .is_some_and(|end| data[..end].ends_with(form))
            })
        })
    }
}

/// The base64 characters of `text` placed after `padding` bytes that
/// depend on `text` alone (what YARA-X searches for that alignment).
fn determined_base64(text: &[u8], padding: usize, alphabet: &[u8]) -> Vec<u8> {
    let bits = |i: usize| -> u32 {
        // Bit `i` of the padding (zeros) followed by the text.
        let byte = match i / 8 {
            b if b < padding => 0,
            b => text[b - padding],
        };
        u32::from(byte >> (7 - i % 8) & 1)
    };
    let (first, end) = (8 * padding, 8 * (padding + text.len()));
    let chars = first.div_ceil(6)..end / 6;
    chars
        .map(|c| {
            let value = (0..6).fold(0, |v, b| v << 1 | bits(6 * c + b));
            alphabet.get(value as usize).copied().unwrap_or(b'=')
        })
        .collect()
}

/// The context-sensitive patterns of a rule set.
#[derive(Debug, Clone, Default)]
pub struct EdgeGuard {
    regexes: Vec<RegexGuard>,
    literals: LiteralSet,
    base64: Base64Guard,
    /// Most bytes any check reads from the edge it judges.
    reach: usize,
}

impl EdgeGuard {
    /// Collects the context-sensitive patterns of parsed sources. `cap`
    /// bounds the search for regexes without a length bound.
    pub fn from_asts<'a>(
        trees: impl IntoIterator<Item = &'a ast::AST<'a>>,
        cap: usize,
    ) -> EdgeGuard {
        let mut guard = EdgeGuard::default();
        let mut literals = LiteralForms::default();
        let patterns = trees
            .into_iter()
            .flat_map(|t| t.rules())
            .flat_map(|r| r.patterns.iter().flatten());
        for pattern in patterns {
            let modifiers = pattern.modifiers();
            let fullword = modifiers.fullword().is_some();
            match pattern {
                Pattern::Regexp(regexp) => {
                    let nocase = modifiers.nocase().is_some();
                    let Some(hir) = parse(&regexp.regexp, nocase) else {
                        continue;
                    };
                    // One that cannot be built is left out; analysis makes
                    // its rule not stream-exact (see `can_guard`).
                    if fullword || !hir.properties().look_set().is_empty() {
                        guard.regexes.extend(regex_guard(
                            &hir,
                            modifiers.wide().is_some(),
                            fullword,
                            cap,
                        ));
                    }
                }
                Pattern::Text(text) if fullword => literals.add(&text.text.value, modifiers),
                _ => {}
            }
            if let Pattern::Text(text) = pattern {
                add_base64_forms(&mut guard.base64, &text.text.value, modifiers);
            }
        }
        guard.reach = guard.reach_of(&literals);
        guard.literals = literals.build();
        guard
    }

    /// Most bytes from an edge that any of the checks reads.
    fn reach_of(&self, literals: &LiteralForms) -> usize {
        // A truncation test reads `2 * max_len` bytes, within `reach`; a
        // wide form's tests start a byte further.
        let regexes = self.regexes.iter().map(|r| r.reach + usize::from(r.wide));
        let literals = literals.forms.values().flatten().map(|f| f.len() + 1);
        let base64 = self
            .base64
            .forms
            .iter()
            .map(|(form, wide)| form.len() + Base64Guard::reach(*wide) + 1);
        regexes.chain(literals).chain(base64).max().unwrap_or(0)
    }

    /// Most bytes from an edge that [`EdgeGuard::blocks_start`] and
    /// [`EdgeGuard::blocks_end`] read: bytes further away cannot change
    /// their answer.
    pub fn reach(&self) -> usize {
        self.reach
    }

    /// Whether the rule set has no context-sensitive pattern at all.
    pub fn is_empty(&self) -> bool {
        self.regexes.is_empty() && self.literals.is_empty() && self.base64.forms.is_empty()
    }

    /// Whether a context-sensitive pattern could match starting at `data[0]`
    /// (or, for `wide` ones, which look two bytes back, at `data[1]`).
    pub fn blocks_start(&self, data: &[u8]) -> bool {
        let second = data.get(1..).unwrap_or_default();
        self.base64.blocks_start(data)
            || self
                .regexes
                .iter()
                .any(|r| r.starts_at(data) || (r.wide && r.starts_at(second)))
            || self.literals.starts_at(data)
    }

    /// Whether a context-sensitive pattern could match ending at the end of
    /// `data` (or, for `wide` ones, a byte before it), or a `fullword`
    /// regex's match be cut short there.
    pub fn blocks_end(&self, data: &[u8]) -> bool {
        let but_last = &data[..data.len().saturating_sub(1)];
        self.base64.blocks_end(data)
            || self
                .regexes
                .iter()
                .any(|r| r.ends_at(data) || (r.wide && r.ends_at(but_last)))
            || self.literals.ends_at(data)
            || self.regexes.iter().any(|r| r.truncated_at(data))
    }
}

/// Whether the edge check of a regex pattern can be built. Analysis asks,
/// for each regex that looks at its surroundings: [`EdgeGuard::from_asts`]
/// leaves out one it cannot build (its automata are too large), so its
/// rule must not be stream-exact.
pub(crate) fn can_guard(
    regexp: &ast::Regexp<'_>,
    modifiers: &ast::PatternModifiers<'_>,
    cap: usize,
) -> bool {
    let wide = modifiers.wide().is_some();
    let fullword = modifiers.fullword().is_some();
    parse(regexp, modifiers.nocase().is_some())
        .is_some_and(|hir| regex_guard(&hir, wide, fullword, cap).is_some())
}

fn regex_guard(hir: &Hir, wide: bool, fullword: bool, cap: usize) -> Option<RegexGuard> {
    let relaxed = without_looks(hir);
    let at_end = Hir::concat(vec![relaxed.clone(), Hir::look(Look::End)]);
    let build = |hir: &Hir| Regex::builder().build_from_hir(hir).ok();
    // An unbounded regex the search walks (`rules::open_ended`: not
    // `fullword`) has matches as long as YARA-X's scan limit allows.
    let unbounded = match fullword {
        true => cap,
        false => cap.max(super::open_ended::max_reach(wide)),
    };
    let max_len = hir.properties().maximum_len().unwrap_or(unbounded);
    // Only `fullword` depends on which match YARA-X picks at an offset (a
    // look-around holds or not whatever the match's length), and a match
    // of a fixed length cannot be cut short, only lost.
    let varies = hir.properties().minimum_len() != Some(max_len);
    Some(RegexGuard {
        starts: build(&relaxed)?,
        ends: build(&at_end)?,
        looks_left: fullword || looks_at_edge(hir, false),
        looks_right: fullword || looks_at_edge(hir, true),
        wide,
        reach: 2 * max_len + 2,
        truncation: (fullword && varies).then(|| Truncation::new(&relaxed, max_len)),
        first: edge_bytes(&relaxed, false),
        last: edge_bytes(&relaxed, true),
    })
}

/// Whether a match of `hir` may pass a look-around before its first byte
/// (`last`: after its last byte): through items that may match nothing.
/// (`regex-syntax`'s `look_set_prefix_any` stops at the first item that
/// *may* match a byte, so it misses the `\b` of `\s*\bfoo`.)
fn looks_at_edge(hir: &Hir, last: bool) -> bool {
    match hir.kind() {
        HirKind::Look(_) => true,
        HirKind::Empty | HirKind::Literal(_) | HirKind::Class(_) => false,
        HirKind::Repetition(rep) => rep.max != Some(0) && looks_at_edge(&rep.sub, last),
        HirKind::Capture(cap) => looks_at_edge(&cap.sub, last),
        HirKind::Alternation(subs) => subs.iter().any(|sub| looks_at_edge(sub, last)),
        HirKind::Concat(subs) => {
            // Up to the first part that must match a byte.
            let verdict = |sub: &Hir| match looks_at_edge(sub, last) {
                true => Some(true),
                false => (sub.properties().minimum_len() != Some(0)).then_some(false),
            };
            let found = match last {
                true => subs.iter().rev().find_map(verdict),
                false => subs.iter().find_map(verdict),
            };
            found.unwrap_or(false)
        }
    }
}

/// The bytes a match of `hir` can start with (`last`: end with), or `None`
/// when it can match the empty string. A superset is fine (an edge that
/// passes is searched), a subset is not.
fn edge_bytes(hir: &Hir, last: bool) -> Option<ByteSet> {
    let mut set = [false; 256];
    (!edge_bytes_into(hir, last, &mut set)).then_some(set)
}

/// Adds the bytes a match of `hir` can start (end) with to `set`; whether
/// it can match the empty string.
fn edge_bytes_into(hir: &Hir, last: bool, set: &mut ByteSet) -> bool {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => true,
        HirKind::Literal(lit) => {
            let edge = if last { lit.0.last() } else { lit.0.first() };
            match edge {
                Some(&b) => {
                    set[usize::from(b)] = true;
                    false
                }
                None => true,
            }
        }
        HirKind::Class(Class::Bytes(class)) => {
            for range in class.ranges() {
                set[usize::from(range.start())..=usize::from(range.end())].fill(true);
            }
            false
        }
        HirKind::Class(Class::Unicode(class)) => {
            // Not produced with byte semantics; any byte, to be safe.
            if !class.ranges().is_empty() {
                set.fill(true);
            }
            false
        }
        HirKind::Repetition(rep) => edge_bytes_into(&rep.sub, last, set) || rep.min == 0,
        HirKind::Capture(cap) => edge_bytes_into(&cap.sub, last, set),
        HirKind::Concat(subs) => {
            // Up to the first part that cannot be empty.
            let mut empty = |sub: &Hir| edge_bytes_into(sub, last, set);
            match last {
                true => subs.iter().rev().all(&mut empty),
                false => subs.iter().all(&mut empty),
            }
        }
        HirKind::Alternation(subs) => subs
            .iter()
            .fold(false, |empty, sub| edge_bytes_into(sub, last, set) | empty),
    }
}

/// The searched forms of a text pattern's `base64` and `base64wide`
/// modifiers, if it has them.
fn add_base64_forms(guard: &mut Base64Guard, text: &[u8], modifiers: &ast::PatternModifiers<'_>) {
    let alphabet = |a: &Option<ast::LiteralString<'_>>| a.as_ref().map(|a| a.value.to_vec());
    for modifier in [modifiers.base64(), modifiers.base64wide()]
        .into_iter()
        .flatten()
    {
        match modifier {
            ast::PatternModifier::Base64 { alphabet: a, .. } => guard.add(text, alphabet(a), false),
            ast::PatternModifier::Base64Wide { alphabet: a, .. } => {
                guard.add(text, alphabet(a), true)
            }
            _ => {}
        }
    }
}

/// The regex with every look-around (`^`, `$`, `\b`, `\B`) replaced by the
/// empty regex: it matches wherever the original could, whatever the
/// surroundings.
pub(crate) fn without_looks(hir: &Hir) -> Hir {
    match hir.kind() {
        HirKind::Look(_) => Hir::empty(),
        HirKind::Repetition(rep) => {
            let mut rep = rep.clone();
            rep.sub = Box::new(without_looks(&rep.sub));
            Hir::repetition(rep)
        }
        HirKind::Capture(cap) => {
            let mut cap = cap.clone();
            cap.sub = Box::new(without_looks(&cap.sub));
            Hir::capture(cap)
        }
        HirKind::Concat(subs) => Hir::concat(subs.iter().map(without_looks).collect()),
        HirKind::Alternation(subs) => Hir::alternation(subs.iter().map(without_looks).collect()),
        _ => hir.clone(),
    }
}

/// Parses a YARA regex with byte semantics, as the analysis does.
pub(crate) fn parse(regexp: &ast::Regexp<'_>, nocase: bool) -> Option<Hir> {
    parse_or_explain(regexp, nocase).ok()
}

/// Parses a YARA regex with byte semantics, or says why it cannot (the
/// last line of `regex-syntax`'s error).
pub(crate) fn parse_or_explain(regexp: &ast::Regexp<'_>, nocase: bool) -> Result<Hir, String> {
    regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .case_insensitive(regexp.case_insensitive || nocase)
        .dot_matches_new_line(regexp.dot_matches_new_line)
        .build()
        .parse(&in_regex_syntax(regexp.src))
        .map_err(|err| {
            let text = err.to_string();
            text.lines().last().unwrap_or_default().trim().to_string()
        })
}

/// A YARA regex in the syntax `regex-syntax` reads: YARA's `{,n}` (at most
/// `n`) is `{0,n}` there. Escapes and classes are left as they are.
fn in_regex_syntax(src: &str) -> std::borrow::Cow<'_, str> {
    if !src.contains("{,") {
        return std::borrow::Cow::Borrowed(src);
    }
    let mut out = String::with_capacity(src.len() + 4);
    let (mut escaped, mut in_class) = (false, false);
    let mut chars = src.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            // A `]` first in a class (after `[` or `[^`) is a literal.
            '[' if !in_class => {
                in_class = true;
                if chars.peek() == Some(&'^') {
                    out.extend(chars.next());
                }
                if chars.peek() == Some(&']') {
                    out.extend(chars.next());
                }
            }
            ']' if in_class => in_class = false,
            '{' if !in_class && chars.peek() == Some(&',') => out.push('0'),
            _ => {}
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(src: &str) -> EdgeGuard {
        let tree = ast::AST::from(src);
        EdgeGuard::from_asts([&tree], 64)
    }

    #[test]
    fn anchored_regexes_guard_where_they_could_match() {
        let g = guard(r#"rule r { strings: $a = /^ab/ $b = /c$/ condition: any of them }"#);
        assert!(g.blocks_start(b"abx"));
        assert!(!g.blocks_start(b"..ab"));
        assert!(g.blocks_end(b"xxc"));
        assert!(!g.blocks_end(b"xcx"));
        // What `^ab` matches does not depend on what follows it, nor what
        // `c$` matches on what precedes it.
        assert!(!g.blocks_end(b"xab"));
        assert!(!g.blocks_start(b"cx"));
    }

    #[test]
    fn look_arounds_behind_items_that_may_match_nothing_are_at_the_edge() {
        let g =
            guard(r#"rule r { strings: $a = /\s*\bfoo/ $b = /bar\b\s*/ condition: any of them }"#);
        // A block starting at `foo` would find `\bfoo` there.
        assert!(g.blocks_start(b"foo"));
        // One ending after `bar` would find `bar\b` there.
        assert!(g.blocks_end(b"xbar"));
        // Behind an item that must match a byte, a look-around is not.
        let g = guard(
            r#"rule r { strings: $a = /x\s*\bfoo/ $b = /bar\b\s*y/ condition: any of them }"#,
        );
        assert!(!g.blocks_start(b"xfoo"));
        assert!(!g.blocks_end(b"bary"));
    }

    #[test]
    fn look_arounds_never_rule_a_match_out() {
        // `\B` fails at the start of a haystack; the guard must still say
        // the pattern could start here (it can, inside a word).
        let g = guard(r#"rule r { strings: $a = /\Bab/ condition: $a }"#);
        assert!(g.blocks_start(b"ab"));
    }

    #[test]
    fn wide_and_nocase_regexes_are_checked() {
        let g = guard(r#"rule r { strings: $a = /^ab/ wide nocase condition: $a }"#);
        assert!(g.blocks_start(b"A\0B\0"));
        assert!(!g.blocks_start(b"\0\0A\0B"));
        let g = guard(r#"rule r { strings: $a = /ab$/ wide nocase condition: $a }"#);
        // A wide match ends with the zero after its last character.
        assert!(g.blocks_end(b"xA\0B\0"));
        assert!(!g.blocks_end(b"xA\0C\0"));
    }

    #[test]
    fn open_ended_regexes_are_guarded_as_far_as_their_matches_reach() {
        // The search walks this regex (`rules::open_ended`): its matches
        // reach 8 KB, well past the cap of 64, and a block starting at the
        // `a` of a long one would find it at the block's start (`^`).
        let g = guard(
            r#"rule r { strings: $a = /(^|\s)a[^x]+b/ $b = /a[^x]+d$/ condition: any of them }"#,
        );
        let long = [&b"a"[..], &[b'c'; 5000], b"b"].concat();
        assert!(g.blocks_start(&long));
        assert!(!g.blocks_start(&[&long[..4000], b"x", &long[4000..]].concat()));
        // Likewise a block ending on the `d` (`$`), but not on the `b`.
        let to_d = [&long[..5001], b"d"].concat();
        assert!(g.blocks_end(&to_d));
        assert!(!g.blocks_end(&[&long[..4000], b"x", &to_d[4000..]].concat()));
        assert!(!g.blocks_end(&long));
    }

    #[test]
    fn fullword_strings_are_guarded_in_all_their_forms() {
        let g = guard(
            r#"rule r { strings: $a = "ab" fullword nocase ascii wide $b = "xy" xor(1-2) fullword condition: any of them }"#,
        );
        assert!(g.blocks_start(b"AB.") && g.blocks_end(b".aB"));
        assert!(g.blocks_start(b"a\0b\0") && g.blocks_end(b"..a\0B\0"));
        assert!(g.blocks_start(&[b'x' ^ 2, b'y' ^ 2]));
        assert!(!g.blocks_start(&[b'x' ^ 3, b'y' ^ 3]));
        assert!(!g.blocks_start(b"..ab"));
    }

    #[test]
    fn a_fullword_string_inside_a_longer_one_is_not_taken_for_one_at_the_edge() {
        // The trie node of "abc" also lists "bc" (for unanchored searches):
        // at an edge before "abc", only "abcd" could start, and it does not.
        let g = guard(
            r#"rule r { strings: $a = "abcd" fullword $b = "bc" fullword condition: any of them }"#,
        );
        assert!(!g.blocks_start(b"abcx"));
        assert!(g.blocks_start(b"bcx") && g.blocks_start(b"abcd"));
        // Backwards: the reversed forms are "dcba" and "cb", and the node of
        // "dcb" lists "cb": before the end of "xbcd" neither form ends.
        assert!(!g.blocks_end(b"xbcd"));
        assert!(g.blocks_end(b"abcd") && g.blocks_end(b"xbc"));
    }

    #[test]
    fn ends_that_would_cut_a_fullword_regex_match_short_are_guarded() {
        // `Abb\na` is the match at 2, and fails fullword (an `a` follows); a
        // block ending after the `\n` would find `Abb`, which passes.
        let g = guard(r#"rule r { strings: $a = /A[^a]{1,3}./ fullword condition: $a }"#);
        assert!(g.blocks_end(b"A Abb\n"));
        // No match can run on past `.`, and none ends before it.
        assert!(!g.blocks_end(b"A Abb\n.x"));
        // A match of a fixed length can be lost at an edge, never shortened.
        let g = guard(r#"rule r { strings: $a = /A[^a]./ fullword condition: $a }"#);
        assert!(!g.blocks_end(b"A Abb\n"));
        // The same through a wide form.
        let g = guard(r#"rule r { strings: $a = /A[^a]{1,3}./ fullword wide condition: $a }"#);
        assert!(g.blocks_end(b"A\0 \0A\0b\0b\0\n\0"));
        assert!(!g.blocks_end(b"A\0b\0\n\0"));
    }

    #[test]
    fn without_a_dfa_truncation_is_judged_more_crudely_never_more_laxly() {
        let g = guard(r#"rule r { strings: $a = /A[^a]{1,3}./ fullword condition: $a }"#);
        let r = &g.regexes[0];
        let exact = r
            .truncation
            .clone()
            .expect("a variable-length fullword regex");
        assert!(exact.dfa.is_some());
        let crude = Truncation {
            dfa: None,
            ..exact.clone()
        };
        let cases: [&[u8]; 7] = [
            b"A Abb\n",
            b"A Abb\n.x",
            b"xAbcd",
            b"Ab",
            b"...",
            b"Abc\n",
            b"AAAA",
        ];
        for data in cases {
            assert!(!exact.cuts(data, &r.starts) || crude.cuts(data, &r.starts));
        }
        assert!(exact.cuts(b"A Abb\n", &r.starts) && crude.cuts(b"A Abb\n", &r.starts));
        assert!(!crude.cuts(b"A Abb\n.x", &r.starts));
    }

    #[test]
    fn edge_bytes_are_those_a_match_can_start_and_end_with() {
        let hir = |src: &str| {
            regex_syntax::ParserBuilder::new()
                .unicode(false)
                .utf8(false)
                .build()
                .parse(src)
                .expect("a valid regex")
        };
        let bytes = |set: Option<ByteSet>| {
            set.map(|s| {
                (0..=255u8)
                    .filter(|&b| s[usize::from(b)])
                    .collect::<Vec<u8>>()
            })
        };
        let h = hir("(ab|c?d)x*[e-g]");
        assert_eq!(bytes(edge_bytes(&h, false)), Some(b"acd".to_vec()));
        assert_eq!(bytes(edge_bytes(&h, true)), Some(b"efg".to_vec()));
        // One that can match nothing at all passes everything.
        assert_eq!(edge_bytes(&hir("a*"), false), None);
        assert_eq!(edge_bytes(&hir("(a|)"), true), None);
        // Case folding is in the classes.
        let h = hir("(?i)ab");
        assert_eq!(bytes(edge_bytes(&h, false)), Some(b"Aa".to_vec()));
        // The guard uses them, wide forms included.
        let g = guard(r#"rule r { strings: $a = /^ab+/ wide condition: $a }"#);
        assert!(g.blocks_start(b"a\0b\0") && !g.blocks_start(b"b\0b\0"));
        let g = guard(r#"rule r { strings: $a = /ab+$/ wide condition: $a }"#);
        assert!(g.blocks_end(b"a\0b\0") && !g.blocks_end(b"b\0a\0"));
    }

    #[test]
    fn context_free_patterns_are_not_guarded() {
        let g = guard(r#"rule r { strings: $a = /ab/ $b = "cd" condition: any of them }"#);
        assert!(!g.blocks_start(b"ab") && !g.blocks_end(b"cd"));
    }

    #[test]
    fn base64_forms_are_the_characters_the_text_determines() {
        // YARA-X's own table (`verify_base64`): "foobar" after 0, 1 and 2
        // bytes is searched as these.
        let forms: Vec<Vec<u8>> = (0..3)
            .map(|p| determined_base64(b"foobar", p, Base64Guard::STANDARD))
            .collect();
        assert_eq!(
            forms,
            [
                b"Zm9vYmFy".to_vec(),
                b"Zvb2Jhc".to_vec(),
                b"mb29iYX".to_vec()
            ]
        );
    }

    #[test]
    fn base64_forms_near_an_edge_are_guarded() {
        let g = guard(r#"rule r { strings: $a = "hello" base64 condition: $a }"#);
        // "eGhlbGxv" is "xhello": its searched form "hlbGxv" starts at 2.
        assert!(g.blocks_start(b"eGhlbGxv") && g.blocks_end(b" eGhlbGxv"));
        assert!(
            g.blocks_end(b"eGhlbGxvAB"),
            "the decode range reaches past it"
        );
        // Away from a form, in base64 text or not, edges are quiet.
        assert!(!g.blocks_start(b"AAAAAAAAAAAA") && !g.blocks_end(b"AAAAAAAAAAAA"));
        assert!(!g.blocks_start(b"AAAAeGhlbGxv") && !g.blocks_end(b"eGhlbGxvAAAAA"));
        // Wide forms, with their zeros.
        let g = guard(r#"rule r { strings: $a = "hello" base64wide condition: $a }"#);
        let wide: Vec<u8> = b"eGhlbGxv".iter().flat_map(|&c| [c, 0]).collect();
        assert!(g.blocks_start(&wide) && g.blocks_end(&wide));
        assert!(!g.blocks_end(b"eGhlbGxv"));
        // A custom alphabet's forms.
        let g = guard(
            r#"rule r { strings: $a = "hello" base64("!#ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789") condition: $a }"#,
        );
        let form = determined_base64(
            b"hello",
            0,
            b"!#ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
        );
        assert!(g.blocks_start(&form) && !g.blocks_start(b"aGVsbG8"));
    }

    #[test]
    fn yaras_at_most_quantifier_is_read_as_from_zero() {
        assert_eq!(in_regex_syntax(r"a.{,10}b"), r"a.{0,10}b");
        assert_eq!(in_regex_syntax(r"\d{,3}x{,2}"), r"\d{0,3}x{0,2}");
        assert_eq!(in_regex_syntax(r"a\{,3}"), r"a\{,3}", "an escaped brace");
        assert_eq!(
            in_regex_syntax(r"[{,]{,2}"),
            r"[{,]{0,2}",
            "a brace in a class"
        );
        assert_eq!(
            in_regex_syntax(r"[]{,]x"),
            r"[]{,]x",
            "`]` first in a class"
        );
        assert_eq!(in_regex_syntax(r"[^]{,]{,1}"), r"[^]{,]{0,1}");
        assert_eq!(in_regex_syntax(r"a{2,3}"), r"a{2,3}");
    }
}
