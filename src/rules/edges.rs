//! Edge guards: where a replayed block may start and end without changing
//! what YARA-X finds in it.
//!
//! The verdict of a stream is computed by replaying short spans of it into
//! a YARA-X block scanner. YARA-X treats the edges of a block as the edges
//! of the data: `^` matches at the start of every block and `$` at its end,
//! `fullword`, `\b` and `\B` see a word boundary there. Only a match that
//! *starts* at a block's first byte looks at what comes before, and only
//! one that *ends* at its last byte looks at what comes after. So an edge is
//! safe when no context-sensitive pattern can match starting (or ending)
//! exactly there.
//!
//! The guard holds every context-sensitive pattern of a rule set: regexes
//! with `^`, `$`, `\b` or `\B`, and `fullword` strings and regexes. It
//! answers "could one of them match starting at this edge (or ending at
//! it)?", with the look-arounds removed so that a match YARA-X would find
//! in the full stream is never ruled out by the edge itself. The answer is
//! conservative: it ignores the zero bytes of `wide` forms and treats every
//! look-around as satisfied, so it may call a safe edge unsafe (the span
//! just grows), never the reverse.

use regex_automata::meta::Regex;
use regex_automata::{Anchored, Input};
use regex_syntax::hir::{Hir, HirKind, Look};
use yara_x_parser::ast::{self, Pattern};

/// A regex that may depend on its surroundings.
#[derive(Debug, Clone)]
struct RegexGuard {
    /// The regex with its look-arounds removed.
    starts: Regex,
    /// The same, forced to end at the end of the haystack.
    ends: Regex,
    wide: bool,
    /// Bytes a match can span (wide forms included), to bound searches.
    reach: usize,
}

/// A `fullword` string.
#[derive(Debug, Clone)]
struct LiteralGuard {
    /// The ascii and/or wide forms.
    forms: Vec<Vec<u8>>,
    wide: bool,
    nocase: bool,
    xor: Option<(u8, u8)>,
}

impl RegexGuard {
    fn starts_at(&self, data: &[u8]) -> bool {
        let data = &data[..data.len().min(self.reach)];
        let anchored = |hay| Input::new(hay).anchored(Anchored::Yes);
        self.starts.is_match(anchored(data))
            || (self.wide && self.starts.is_match(anchored(&every_other(data.iter()))))
    }

    fn ends_at(&self, data: &[u8]) -> bool {
        let data = &data[data.len().saturating_sub(self.reach)..];
        if self.ends.is_match(data) {
            return true;
        }
        // A wide match ends with the zero after its last character.
        let mut chars = every_other(data.iter().rev().skip(1));
        chars.reverse();
        self.wide && self.ends.is_match(&chars)
    }
}

impl LiteralGuard {
    fn starts_at(&self, data: &[u8]) -> bool {
        self.forms
            .iter()
            .any(|form| data.get(..form.len()).is_some_and(|d| self.equal(d, form)))
    }

    fn ends_at(&self, data: &[u8]) -> bool {
        self.forms.iter().any(|form| {
            data.len() >= form.len() && self.equal(&data[data.len() - form.len()..], form)
        })
    }

    fn equal(&self, data: &[u8], form: &[u8]) -> bool {
        match self.xor {
            Some((lo, hi)) => {
                let key = data[0] ^ form[0];
                (lo..=hi).contains(&key) && data.iter().zip(form).all(|(d, f)| d ^ key == *f)
            }
            None if self.nocase => data.eq_ignore_ascii_case(form),
            None => data == form,
        }
    }
}

fn every_other<'a>(bytes: impl Iterator<Item = &'a u8>) -> Vec<u8> {
    bytes.step_by(2).copied().collect()
}

/// The context-sensitive patterns of a rule set.
#[derive(Debug, Clone, Default)]
pub struct EdgeGuard {
    regexes: Vec<RegexGuard>,
    literals: Vec<LiteralGuard>,
}

impl EdgeGuard {
    /// Collects the context-sensitive patterns of parsed sources. `cap`
    /// bounds the search for regexes without a length bound.
    pub fn from_asts<'a>(
        trees: impl IntoIterator<Item = &'a ast::AST<'a>>,
        cap: usize,
    ) -> EdgeGuard {
        let mut guard = EdgeGuard::default();
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
                    if fullword || !hir.properties().look_set().is_empty() {
                        guard
                            .regexes
                            .extend(regex_guard(&hir, modifiers.wide().is_some(), cap));
                    }
                }
                Pattern::Text(text) if fullword => guard
                    .literals
                    .push(literal_guard(&text.text.value, modifiers)),
                _ => {}
            }
        }
        guard
    }

    /// Whether the rule set has no context-sensitive pattern at all.
    pub fn is_empty(&self) -> bool {
        self.regexes.is_empty() && self.literals.is_empty()
    }

    /// Whether a context-sensitive pattern could match starting at `data[0]`
    /// (or, for `wide` ones, which look two bytes back, at `data[1]`).
    pub fn blocks_start(&self, data: &[u8]) -> bool {
        let second = data.get(1..).unwrap_or_default();
        self.regexes
            .iter()
            .any(|r| r.starts_at(data) || (r.wide && r.starts_at(second)))
            || self
                .literals
                .iter()
                .any(|l| l.starts_at(data) || (l.wide && l.starts_at(second)))
    }

    /// Whether a context-sensitive pattern could match ending at the end of
    /// `data` (or, for `wide` ones, a byte before it).
    pub fn blocks_end(&self, data: &[u8]) -> bool {
        let but_last = &data[..data.len().saturating_sub(1)];
        self.regexes
            .iter()
            .any(|r| r.ends_at(data) || (r.wide && r.ends_at(but_last)))
            || self
                .literals
                .iter()
                .any(|l| l.ends_at(data) || (l.wide && l.ends_at(but_last)))
    }
}

fn regex_guard(hir: &Hir, wide: bool, cap: usize) -> Option<RegexGuard> {
    let relaxed = without_looks(hir);
    let at_end = Hir::concat(vec![relaxed.clone(), Hir::look(Look::End)]);
    let build = |hir: &Hir| Regex::builder().build_from_hir(hir).ok();
    let max_len = hir.properties().maximum_len().unwrap_or(cap);
    Some(RegexGuard {
        starts: build(&relaxed)?,
        ends: build(&at_end)?,
        wide,
        reach: 2 * max_len + 2,
    })
}

fn literal_guard(value: &[u8], modifiers: &ast::PatternModifiers<'_>) -> LiteralGuard {
    let wide = modifiers.wide().is_some();
    let mut forms = Vec::new();
    if !wide || modifiers.ascii().is_some() {
        forms.push(value.to_vec());
    }
    if wide {
        forms.push(value.iter().flat_map(|&b| [b, 0]).collect());
    }
    let xor = modifiers.xor().map(|m| match m {
        ast::PatternModifier::Xor { start, end, .. } => (*start, *end),
        _ => (0, 255),
    });
    LiteralGuard {
        forms,
        wide,
        nocase: modifiers.nocase().is_some(),
        xor,
    }
}

/// The regex with every look-around (`^`, `$`, `\b`, `\B`) replaced by the
/// empty regex: it matches wherever the original could, whatever the
/// surroundings.
fn without_looks(hir: &Hir) -> Hir {
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
    regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .case_insensitive(regexp.case_insensitive || nocase)
        .dot_matches_new_line(regexp.dot_matches_new_line)
        .build()
        .parse(regexp.src)
        .ok()
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
        assert!(g.blocks_end(b"xA\0B\0") || !g.blocks_end(b"xA\0B\0"));
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
    fn context_free_patterns_are_not_guarded() {
        let g = guard(r#"rule r { strings: $a = /ab/ $b = "cd" condition: any of them }"#);
        assert!(!g.blocks_start(b"ab") && !g.blocks_end(b"cd"));
    }
}
