//! Regexes with no longest match of their own (`/https?:\/\/[\w.\/-]*/`,
//! `/([A-Za-z0-9+\/]{4}){3,}/`): where their matches may still start in a
//! stream's last bytes, and when a match the search found is final.
//!
//! YARA-X verifies a regex match from an atom, reading at most
//! [`YARA_X_SCAN_LIMIT`] bytes backwards and as many forwards. So no match
//! is longer than [`MAX_REACH`] bytes, and what it finds at a start `s`
//! depends on the bytes from `s - 1` to `s + MAX_REACH` only. Keeping that
//! many bytes for every stream would cost 8 KB each, so the tail follows
//! the regex instead ([`OpenEndedRegex`]):
//!
//! - a match the search found at `s` is final once the regex's DFA, walked
//!   from `s`, dies within the block (no match from `s` can read further):
//!   [`OpenEndedRegex::reach_from`];
//! - a stream keeps its bytes back to the earliest start from which that
//!   walk is still alive at its end: a DFA of the regex's *prefixes*,
//!   walked backwards from the end, finds it, and on most data it dies
//!   within a few bytes ([`OpenEndedRegex::earliest_live_start`]).
//!
//! A regex that looks at its surroundings (`^`, `$`, `\b`, `\B`) is walked
//! with its look-arounds taken as satisfied: its walks then live at least
//! as long as any match YARA-X may find. What a look-around reads is the
//! byte before the match, the byte after it, or whether the data starts or
//! ends there; a settled match has [`SPAN_CONTEXT`] bytes of real context
//! on each side (or the stream's real start), and replay spans keep their
//! edges off such matches (`rules::edges`).
//!
//! Left out (their patterns stay unbounded, their rules whole-data):
//! patterns YARA-X may *chain* (it splits a regex at a gap of more than
//! 200 bytes of anything, as in `/a.*b/s`, and such a chain has no bound:
//! see [`may_be_chained`]) and `fullword` regexes (YARA-X checks
//! `fullword` on one match per offset, which a block's end may cut short).
//! A `wide` regex is walked in its wide form ([`widen`]), and one that is
//! `wide ascii` in both at once.
//!
//! [`SPAN_CONTEXT`]: crate::stream::span::SPAN_CONTEXT

use regex_automata::dfa::{dense, Automaton, StartKind};
use regex_automata::nfa::thompson;
use regex_automata::util::primitives::StateID;
use regex_automata::util::start;
use regex_automata::{Anchored, MatchKind};
use regex_syntax::hir::{Class, Hir, HirKind, Repetition};

/// Bytes YARA-X reads from a regex's atom in each direction while it
/// verifies a match (`DEFAULT_SCAN_LIMIT` in YARA-X 1.22).
pub const YARA_X_SCAN_LIMIT: usize = 4096;

/// The longest match YARA-X reports for a regex it does not chain.
pub const MAX_REACH: usize = 2 * YARA_X_SCAN_LIMIT;

/// The longest match YARA-X reports for a `wide` regex it does not chain:
/// its PikeVM counts the scan limit in characters, two bytes each.
pub const MAX_WIDE_REACH: usize = 2 * MAX_REACH;

/// The longest match of an open-ended regex, `wide` or not.
pub fn max_reach(wide: bool) -> usize {
    match wide {
        true => MAX_WIDE_REACH,
        false => MAX_REACH,
    }
}

/// Gaps of more bytes than this may make YARA-X chain a regex
/// (`PATTERN_CHAINING_THRESHOLD` in YARA-X 1.22).
const CHAINING_GAP: u32 = 200;

/// Limit on each DFA's size (and on the memory building it takes): a
/// regex whose DFA is larger stays unbounded.
const DFA_LIMIT: usize = 8 << 20;

/// Limit on a DFA of the regex as written, before its counts are dropped
/// (see [`OpenEndedRegex::new`]): one that blows up on a count hits any
/// limit, and determinizing up to 8 MB twice for it (forwards and
/// backwards) added a second to loading yara-rules.
const EXACT_DFA_LIMIT: usize = 1 << 20;

/// Whether YARA-X may split the regex `hir` into a chain of pieces: it
/// holds a repetition of any byte whose count may vary by more than
/// [`CHAINING_GAP`]. (YARA-X splits only such gaps between pieces of two
/// bytes or more at the top level; any such gap anywhere is a superset.)
pub fn may_be_chained(hir: &Hir) -> bool {
    match hir.kind() {
        HirKind::Repetition(rep) => {
            let spread = rep.max.unwrap_or(u32::MAX).saturating_sub(rep.min);
            (spread > CHAINING_GAP && matches_any_byte(&rep.sub)) || may_be_chained(&rep.sub)
        }
        HirKind::Capture(cap) => may_be_chained(&cap.sub),
        HirKind::Concat(items) | HirKind::Alternation(items) => items.iter().any(may_be_chained),
        HirKind::Empty | HirKind::Literal(_) | HirKind::Class(_) | HirKind::Look(_) => false,
    }
}

/// Whether `hir` is a class of all 256 bytes.
fn matches_any_byte(hir: &Hir) -> bool {
    match hir.kind() {
        HirKind::Class(Class::Bytes(class)) => {
            class
                .ranges()
                .iter()
                .map(|r| 1 + usize::from(r.end() - r.start()))
                .sum::<usize>()
                == 256
        }
        HirKind::Class(Class::Unicode(_)) => true,
        HirKind::Capture(cap) => matches_any_byte(&cap.sub),
        _ => false,
    }
}

/// An open-ended regex, as the tail and the search follow it (see the
/// module doc).
#[derive(Debug, Clone)]
pub struct OpenEndedRegex {
    /// The regex, anchored: walked forwards from a match's start.
    forward: (dense::DFA<Vec<u32>>, StateID),
    /// Every prefix of its matches, reversed and anchored: walked
    /// backwards from a stream's end.
    prefixes_reversed: (dense::DFA<Vec<u32>>, StateID),
    /// Its longest match: [`max_reach`].
    max_len: usize,
}

impl OpenEndedRegex {
    /// The walks of `hir` (byte semantics, no look-arounds), whose longest
    /// match is `max_len`. Where a DFA of `hir` would be too large, the
    /// walks are of [`without_counts`]`(hir)`, a superset; `None` when
    /// that one's is too large as well.
    pub fn new(hir: &Hir, max_len: usize) -> Option<OpenEndedRegex> {
        OpenEndedRegex::exactly(hir, max_len, EXACT_DFA_LIMIT)
            .or_else(|| OpenEndedRegex::exactly(&without_counts(hir), max_len, DFA_LIMIT))
    }

    /// The walks of `hir` itself, with DFAs of at most `limit` bytes.
    fn exactly(hir: &Hir, max_len: usize, limit: usize) -> Option<OpenEndedRegex> {
        Some(OpenEndedRegex {
            forward: anchored_dfa(hir, false, limit)?,
            prefixes_reversed: anchored_dfa(&prefixes(hir), true, limit)?,
            max_len,
        })
    }

    /// Its longest match (YARA-X's scan limit bounds it).
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Bytes from `start` on that YARA-X's match at `start` of `data` may
    /// depend on: up to and including the byte where the walk from
    /// `start` dies (or one more: the DFA reports a match one byte late, so
    /// a walk that ends in a match dies a byte after it). `None` when it is
    /// still alive at the end of `data`, or after [`Self::max_len`] bytes
    /// (then the scan limit bounds it).
    pub fn reach_from(&self, data: &[u8], start: usize) -> Option<usize> {
        let (dfa, mut state) = (&self.forward.0, self.forward.1);
        let end = data.len().min(start.saturating_add(self.max_len));
        for (at, &byte) in (start..).zip(data.get(start..end)?) {
            state = dfa.next_state(state, byte);
            if dfa.is_dead_state(state) {
                return Some(at + 1 - start);
            }
        }
        None
    }

    /// [`Self::reach_from`], sped up by the walk of another match of this
    /// regex in the same `data` (`memo`, which it updates): a walk that
    /// reaches the state that one had after the same byte goes on as it
    /// did from there. YARA-X reports a match at every start of a long
    /// run (`/[a-h]+@@[a-h]+/` over thousands of letters), and walking
    /// each to its end made the search quadratic in the run's length; the
    /// walks of neighbouring starts meet after a byte or two.
    pub fn reach_from_memo(&self, data: &[u8], start: usize, memo: &mut WalkMemo) -> Option<usize> {
        let (dfa, mut state) = (&self.forward.0, self.forward.1);
        let end = data.len().min(start.saturating_add(self.max_len));
        memo.walk.clear();
        for at in start..end {
            #[cfg(test)]
            {
                memo.steps += 1;
            }
            state = dfa.next_state(state, data[at]);
            if dfa.is_dead_state(state) {
                memo.keep_walk(start, Some(at + 1 - start));
                return Some(at + 1 - start);
            }
            let theirs = at.checked_sub(memo.start).and_then(|i| memo.states.get(i));
            if theirs == Some(&state) {
                #[cfg(test)]
                {
                    memo.merges += 1;
                }
                return self.as_remembered(data, start, memo);
            }
            memo.walk.push(state);
        }
        memo.keep_walk(start, None);
        None
    }

    /// The reach from `start` of a walk that met `memo`'s. A remembered
    /// walk still alive where it stopped goes on, and `memo` keeps what it
    /// read: the next walk to meet it need not read those bytes again (a
    /// run of thousands of starts that never dies was quadratic).
    fn as_remembered(&self, data: &[u8], start: usize, memo: &mut WalkMemo) -> Option<usize> {
        let end = data.len().min(start.saturating_add(self.max_len));
        if memo.reach.is_none() {
            self.walk_memo_on(data, end, memo);
        }
        let reach = memo.reach?;
        Some(memo.start + reach - start).filter(|_| memo.start + reach <= end)
    }

    /// Goes on with `memo`'s walk, alive where it stopped, up to `end` or
    /// where it dies.
    fn walk_memo_on(&self, data: &[u8], end: usize, memo: &mut WalkMemo) {
        let dfa = &self.forward.0;
        let Some(&(mut state)) = memo.states.last() else {
            return;
        };
        let from = memo.start + memo.states.len();
        for (at, &byte) in (from..).zip(data.get(from..end).unwrap_or_default()) {
            #[cfg(test)]
            {
                memo.steps += 1;
            }
            state = dfa.next_state(state, byte);
            if dfa.is_dead_state(state) {
                memo.reach = Some(at + 1 - memo.start);
                return;
            }
            memo.states.push(state);
        }
    }

    /// The earliest start, not before `lowest`, from which the bytes up to
    /// the end of `data` are the beginning of a match (a match may still
    /// start there, whatever follows); `data.len()` when there is none.
    pub fn earliest_live_start(&self, data: &[u8], lowest: usize) -> usize {
        let (dfa, mut state) = (&self.prefixes_reversed.0, self.prefixes_reversed.1);
        let mut earliest = data.len();
        for at in (lowest..data.len()).rev() {
            state = dfa.next_state(state, data[at]);
            if dfa.is_dead_state(state) {
                return earliest;
            }
            // Match states come one byte late: this one is for the bytes
            // after `at`.
            if dfa.is_match_state(state) {
                earliest = at + 1;
            }
        }
        if dfa.is_match_state(dfa.next_eoi_state(state)) {
            earliest = lowest;
        }
        earliest
    }
}

/// The last long walk of an open-ended regex over some data, for
/// [`OpenEndedRegex::reach_from_memo`]. Empty by default; [`Self::forget`]
/// it before walking other data or another regex.
#[derive(Debug, Default)]
pub struct WalkMemo {
    /// Where the remembered walk started.
    start: usize,
    /// Its state after each byte it read, while alive.
    states: Vec<StateID>,
    /// What it gave.
    reach: Option<usize>,
    /// The states of the walk under way.
    walk: Vec<StateID>,
    /// Walks that met the remembered one.
    #[cfg(test)]
    merges: usize,
    /// Bytes read by walks.
    #[cfg(test)]
    steps: usize,
}

impl WalkMemo {
    /// Forgets the remembered walk (keeping its buffers).
    pub fn forget(&mut self) {
        self.states.clear();
        (self.start, self.reach) = (0, None);
    }

    /// Remembers the walk just taken from `start` if it reached further
    /// than the remembered one.
    fn keep_walk(&mut self, start: usize, reach: Option<usize>) {
        if start + self.walk.len() > self.start + self.states.len() {
            std::mem::swap(&mut self.states, &mut self.walk);
            (self.start, self.reach) = (start, reach);
        }
    }
}

/// An anchored DFA of `hir` (`reverse`: of its reversed matches) that
/// reports every match, with its start state; `None` past `limit` bytes.
fn anchored_dfa(hir: &Hir, reverse: bool, limit: usize) -> Option<(dense::DFA<Vec<u32>>, StateID)> {
    let nfa = thompson::Compiler::new()
        .configure(
            thompson::Config::new()
                .reverse(reverse)
                .which_captures(thompson::WhichCaptures::None),
        )
        .build_from_hir(hir)
        .ok()?;
    let dfa = dense::Builder::new()
        .configure(
            dense::Config::new()
                .match_kind(MatchKind::All)
                .start_kind(StartKind::Anchored)
                .dfa_size_limit(Some(limit))
                .determinize_size_limit(Some(limit)),
        )
        .build_from_nfa(&nfa)
        .ok()?;
    let start = dfa
        .start_state(&start::Config::new().anchored(Anchored::Yes))
        .ok()?;
    Some((dfa, start))
}

/// The `wide` form of `hir`, as YARA-X matches it: every byte it matches
/// followed by a zero (`ab` is `a\0b\0`). Look-arounds stay as they are:
/// the walks are for regexes without them.
pub fn widen(hir: &Hir) -> Hir {
    let zero = || Hir::literal([0u8]);
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => hir.clone(),
        HirKind::Literal(literal) => {
            let wide: Vec<u8> = literal.0.iter().flat_map(|&b| [b, 0]).collect();
            Hir::literal(wide)
        }
        HirKind::Class(_) => Hir::concat(vec![hir.clone(), zero()]),
        HirKind::Repetition(rep) => Hir::repetition(Repetition {
            sub: Box::new(widen(&rep.sub)),
            ..rep.clone()
        }),
        HirKind::Capture(cap) => widen(&cap.sub),
        HirKind::Concat(items) => Hir::concat(items.iter().map(widen).collect()),
        HirKind::Alternation(items) => Hir::alternation(items.iter().map(widen).collect()),
    }
}

/// `hir` with every bounded repetition of varying count made unbounded
/// (`.{,128}` becomes `.*`): it matches wherever `hir` does, so its walks
/// live at least as long, and its DFAs stay small where counting would
/// not (the DFA of `/\/\*.{,128}\*\//` must remember which of the last
/// 128 bytes may end the repetition).
fn without_counts(hir: &Hir) -> Hir {
    match hir.kind() {
        HirKind::Empty | HirKind::Literal(_) | HirKind::Class(_) | HirKind::Look(_) => hir.clone(),
        HirKind::Repetition(rep) => Hir::repetition(Repetition {
            max: rep.max.filter(|&max| max == rep.min),
            sub: Box::new(without_counts(&rep.sub)),
            ..rep.clone()
        }),
        HirKind::Capture(cap) => without_counts(&cap.sub),
        HirKind::Concat(items) => Hir::concat(items.iter().map(without_counts).collect()),
        HirKind::Alternation(items) => Hir::alternation(items.iter().map(without_counts).collect()),
    }
}

/// A regex that matches every prefix of `hir`'s matches (the empty one
/// included). Look-arounds are dropped: the walks are for regexes without
/// them.
fn prefixes(hir: &Hir) -> Hir {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => Hir::empty(),
        HirKind::Literal(literal) => Hir::alternation(
            (0..=literal.0.len())
                .map(|n| Hir::literal(&literal.0[..n]))
                .collect(),
        ),
        HirKind::Class(_) => Hir::alternation(vec![Hir::empty(), hir.clone()]),
        // Some whole repetitions, then a prefix of one more.
        HirKind::Repetition(rep) => match rep.max {
            Some(0) => Hir::empty(),
            max => Hir::concat(vec![
                Hir::repetition(Repetition {
                    min: 0,
                    max: max.map(|max| max - 1),
                    greedy: rep.greedy,
                    sub: rep.sub.clone(),
                }),
                prefixes(&rep.sub),
            ]),
        },
        HirKind::Capture(cap) => prefixes(&cap.sub),
        // Some whole items, then a prefix of the next.
        HirKind::Concat(items) => Hir::alternation(
            (0..items.len())
                .map(|k| {
                    let mut whole = items[..k].to_vec();
                    whole.push(prefixes(&items[k]));
                    Hir::concat(whole)
                })
                .collect(),
        ),
        HirKind::Alternation(alternatives) => {
            Hir::alternation(alternatives.iter().map(prefixes).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hir(regex: &str) -> Hir {
        regex_syntax::ParserBuilder::new()
            .unicode(false)
            .utf8(false)
            .build()
            .parse(regex)
            .unwrap()
    }

    fn open(regex: &str) -> OpenEndedRegex {
        OpenEndedRegex::new(&hir(regex), MAX_REACH).unwrap()
    }

    impl OpenEndedRegex {
        /// Whether `text` begins a match (or is one), by the forward DFA:
        /// it matches at its end, or some next byte keeps the walk alive.
        fn is_prefix(&self, text: &[u8]) -> bool {
            let (dfa, mut state) = (&self.forward.0, self.forward.1);
            for &byte in text {
                state = dfa.next_state(state, byte);
            }
            dfa.is_match_state(dfa.next_eoi_state(state))
                || (0..=255u8).any(|byte| !dfa.is_dead_state(dfa.next_state(state, byte)))
        }
    }

    #[test]
    fn gaps_of_anything_over_200_bytes_may_chain() {
        assert!(may_be_chained(&hir(r"(?s)ab.*cd")));
        assert!(may_be_chained(&hir(r"ab[\x00-\xff]{0,300}cd")));
        assert!(may_be_chained(&hir(r"(?s)x(ab.{10,}cd)")));
        // `.` without `s` is not any byte; a gap of 200 is not large.
        assert!(!may_be_chained(&hir(r"ab.*cd")));
        assert!(!may_be_chained(&hir(r"(?s)ab.{0,200}cd")));
        assert!(!may_be_chained(&hir(r"https?://[\w.-]+")));
    }

    #[test]
    fn a_match_is_final_where_the_walk_from_its_start_dies() {
        let url = open(r"https?://[a-z.]+");
        // The walk reads `http://ab.c`, ends its match on the space and
        // dies on the byte after.
        assert_eq!(url.reach_from(b"xx http://ab.c and", 3), Some(13));
        assert_eq!(url.reach_from(b"xx http://ab.c", 3), None);
        // Dead on the `x`: nothing matches `http:/x`.
        assert_eq!(url.reach_from(b"xx http:/x.c", 3), Some(7));
        // Not a start at all: dead on its first byte.
        assert_eq!(url.reach_from(b"xx http://ab.c", 0), Some(1));
        // Past the scan limit YARA-X's bound takes over.
        let mut long = b"http://".to_vec();
        long.resize(MAX_REACH + 10, b'a');
        long.push(b' ');
        assert_eq!(url.reach_from(&long, 0), None);
    }

    #[test]
    fn a_wide_walk_reads_every_character_and_its_zero() {
        let wide = OpenEndedRegex::new(&widen(&hir(r"ab[a-z]+")), MAX_WIDE_REACH).unwrap();
        let text = b"x\0a\0b\0c\0d\0!\0";
        // The match `a\0b\0c\0d\0` ends before `!`; the walk dies a byte
        // after (see `reach_from`).
        assert_eq!(wide.reach_from(text, 2), Some(10));
        // The ASCII form is not the wide one.
        assert_eq!(wide.reach_from(b"abcd!", 0), Some(2));
        // A character without its zero may still be growing: `c` waits
        // for its `\0`.
        assert_eq!(wide.earliest_live_start(b"x\0a\0b\0c", 0), 2);
        assert_eq!(wide.earliest_live_start(b"x\0a\0b\0c\0!", 0), 9);
        // Both forms at once: alive while either is.
        let both = Hir::alternation(vec![widen(&hir(r"ab[a-z]+")), hir(r"ab[a-z]+")]);
        let both = OpenEndedRegex::new(&both, MAX_WIDE_REACH).unwrap();
        assert_eq!(both.reach_from(b"abcd!!", 0), Some(6));
        assert_eq!(both.reach_from(text, 2), Some(10));
        // Past the wide limit, not the narrow one, YARA-X's bound takes over.
        let mut long = b"a\0b\0".to_vec();
        long.extend([b'c', 0].repeat(MAX_REACH));
        assert_eq!(wide.reach_from(&long, 0), None);
        long.truncate(MAX_REACH + 4);
        long.extend(b"!!");
        assert_eq!(wide.reach_from(&long, 0), Some(MAX_REACH + 6));
    }

    #[test]
    fn the_earliest_live_start_is_where_a_match_may_still_be_growing() {
        let url = open(r"https?://[a-z.]+");
        // `http://ab` may grow; so may `ab`? No: only from `h`.
        assert_eq!(url.earliest_live_start(b"see http://ab", 0), 4);
        // A cut `htt` may become a match.
        assert_eq!(url.earliest_live_start(b"see htt", 0), 4);
        // Nothing can start before the end: the end itself.
        assert_eq!(url.earliest_live_start(b"see http://ab ", 0), 14);
        // Not before `lowest`.
        assert_eq!(url.earliest_live_start(b"see http://ab", 6), 13);
        // Several live starts: the earliest.
        let runs = open(r"[a-z]{4,}!");
        assert_eq!(runs.earliest_live_start(b"12 abcdefg", 0), 3);
        assert_eq!(runs.earliest_live_start(b"abcdefg", 0), 0);
    }

    #[test]
    fn a_regex_whose_counts_blow_the_dfa_up_is_walked_without_them() {
        // yara-rules' `eval_with_comments`, its look-around dropped.
        let eval = hir(r"(|\s)eval\s*/\*.{0,128}\*/\s*\(");
        assert!(OpenEndedRegex::exactly(&eval, MAX_REACH, DFA_LIMIT).is_none());
        let walks = OpenEndedRegex::new(&eval, MAX_REACH).unwrap();
        // Without the count the comment may run on to the next line break,
        // past the `(` that ends a match: the walk dies on the `\n`.
        assert_eq!(walks.reach_from(b"x eval /* c */ (y);\nz", 1), Some(19));
        assert_eq!(walks.reach_from(b"x evil /* c */ (y);\nz", 2), Some(3));
        assert_eq!(walks.earliest_live_start(b"a\neval /* c */ (y)", 0), 1);
        // The line break may begin a match (`\s`), the `z` may not.
        assert_eq!(walks.earliest_live_start(b"a\neval /* c */ (y)\n", 0), 18);
        assert_eq!(walks.earliest_live_start(b"a\neval /* c */ (y)\nz;", 0), 21);
    }

    #[test]
    fn remembered_walks_give_what_fresh_ones_give() {
        let regexes = [r"[a-h]+@@[a-h]+", r"ab(cd|e)*f", r"a+b?c", r"x[^y]*y"];
        let alphabet = b"abcdefh@xy";
        // A tiny generator, so that runs and repeats are common.
        let mut seed = 7u64;
        let mut next = move |n: usize| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize % n
        };
        let (mut merged, mut walked) = (0, 0);
        for regex in regexes {
            // A short limit, so that walks also stop at it.
            let walks = OpenEndedRegex::new(&hir(regex), 300).unwrap();
            for _ in 0..200 {
                let len = next(800);
                let data: Vec<u8> = (0..len)
                    .map(|i| match (i / 50) % 3 {
                        0 => b'a' + (next(4) as u8),
                        _ => alphabet[next(alphabet.len())],
                    })
                    .collect();
                let mut memo = WalkMemo::default();
                let mut starts: Vec<usize> = (0..len + 2).collect();
                if next(2) == 0 {
                    starts.reverse();
                }
                for start in starts {
                    let fresh = walks.reach_from(&data, start);
                    let remembered = walks.reach_from_memo(&data, start, &mut memo);
                    assert_eq!(remembered, fresh, "{regex} from {start}");
                    walked += 1;
                }
                merged += memo.merges;
            }
        }
        // Most starts die on their first byte: they meet nothing.
        assert!(
            merged > 10_000,
            "{merged} of {walked} walks met a remembered one"
        );
        // A run: the walk from the second letter meets the first's at once.
        let run = open(r"[a-h]+@@[a-h]+");
        // (The match ends before the first `!`, the walk dies on the second.)
        let data = [&[b'a'; 5000][..], b"@@bc!!"].concat();
        let mut memo = WalkMemo::default();
        assert_eq!(run.reach_from_memo(&data, 0, &mut memo), Some(5006));
        assert_eq!(run.reach_from_memo(&data, 1, &mut memo), Some(5005));
        assert_eq!((memo.merges, memo.walk.len()), (1, 0));
        // Forgotten, it remembers a walk at any offset again (not only
        // past the one it forgot).
        let far = [&[b'!'; 6000][..], &data[..]].concat();
        run.reach_from_memo(&far, 6000, &mut memo);
        memo.forget();
        run.reach_from_memo(&data, 0, &mut memo);
        let merges = memo.merges;
        assert_eq!(run.reach_from_memo(&data, 1, &mut memo), Some(5005));
        assert_eq!(memo.merges, merges + 1);
        // A run that outlives the limit: each walk goes on from the last
        // one's end, so the walks of all its starts read each byte about
        // once (re-reading from the first walk's end was quadratic).
        let limited = OpenEndedRegex::new(&hir(r"[a-h]+@@[a-h]+"), 300).unwrap();
        let mut memo = WalkMemo::default();
        for start in 0..data.len() {
            let fresh = limited.reach_from(&data, start);
            assert_eq!(limited.reach_from_memo(&data, start, &mut memo), fresh);
        }
        assert!(memo.merges > 4000, "{} merges", memo.merges);
        assert!(memo.steps < 3 * data.len(), "{} bytes read", memo.steps);
    }

    #[test]
    fn the_backward_walk_agrees_with_the_forward_one() {
        // The earliest live start is the first from which the text begins
        // a match, by the forward walks; every text over a small alphabet.
        let regexes = [
            (r"ab(cd|e)*f", "abcdef"),
            (r"x[0-9]{2,3}y", "x09y"),
            (r"(GE|PO) /[a-z]+", "GEPO /z"),
            (r"a+b?c", "abc"),
        ];
        for (regex, alphabet) in regexes {
            let (walks, alphabet) = (open(regex), alphabet.as_bytes());
            let (mut live, mut dead) = (0, 0);
            for n in 1..20_000usize {
                let (mut text, mut rest) = (Vec::new(), n);
                while rest > 0 {
                    text.push(alphabet[rest % alphabet.len()]);
                    rest /= alphabet.len();
                }
                let expected = (0..text.len())
                    .find(|&start| walks.is_prefix(&text[start..]))
                    .unwrap_or(text.len());
                let found = walks.earliest_live_start(&text, 0);
                assert_eq!(found, expected, "{regex} on {}", text.escape_ascii());
                *if found < text.len() {
                    &mut live
                } else {
                    &mut dead
                } += 1;
            }
            assert!(
                live > 100 && dead > 100,
                "{regex}: {live} live, {dead} dead"
            );
        }
    }
}
