//! Reads of a match's own bytes: `for any i in (1..#a): uint8(@a[i] + 2)
//! == uint8(@a[i] + 5)`.
//!
//! A stream's verdict is a block scan of its replay spans, and a block
//! scan reads no data: `uint8(@a[i] + 2)` is undefined there. But a read
//! that stays within the bytes of the match it starts at (`@a[i] + k`,
//! `k` plus the read's width at most the shortest match `$a` can have)
//! needs only those bytes, and the search holds them when it settles the
//! match. Such a `for any` is a *match read*:
//!
//! - at load, each match read's body becomes a rule of a small helper
//!   rule set, with `@a[i]` replaced by 0 (`uint8(2) == uint8(5)`);
//! - the search scans each settled or provisional match's bytes with the
//!   helper rules as one whole buffer (YARA-X evaluates the body, with its
//!   own semantics: [`MatchReadScanner::held`]), and the stream remembers,
//!   one bit per match read, which held on one of its matches;
//! - the rules are compiled with the expression rewritten into
//!   `((yaraflow_match_read_N < 0 and <the expression>) or
//!   yaraflow_match_read_N > 0)`. The variable's default, -1, leaves the
//!   expression to itself: a whole-buffer scan evaluates it, and so does a
//!   line stream's verdict (a line is a block scan's data, where the read
//!   is undefined, as the line contract says). A chunk stream's verdict
//!   sets 0 or 1 from its bit, and never evaluates the expression: in a
//!   block scan `not (uint8(@a[i]) == 1 and ..)` would be true.
//!
//! The body may use integer literals, arithmetic, bitwise operators,
//! comparisons, `and`, `or`, `not` and the data functions at `@a[i]` or
//! `@a[i] + k`. Anything else there (another pattern, the variable outside
//! a read, `filesize`, the anonymous `#` of a `for .. of`) leaves the
//! expression as it is and its rule whole-data. A rule set has at most
//! [`MAX_MATCH_READS`] match reads: a stream keeps one bit for each.

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use yara_x_parser::ast::{self, Expr, Pattern, WithSpan};

use super::data_values::{visit, DataRead, PREFIX};

/// Most match reads in one rule set (a stream keeps a `u64` of them).
pub const MAX_MATCH_READS: usize = 64;

/// One match read of the rules.
#[derive(Debug, Clone)]
struct MatchRead {
    /// Index of its source among those the rules were compiled from.
    source: usize,
    /// The `for any` expression's bytes in that source.
    range: Range<usize>,
    /// The helper rule's condition: the body with `@a[i]` replaced by 0.
    body: String,
}

/// The match reads of a rule set, and the helper rules that evaluate them.
#[derive(Default)]
pub struct MatchReads {
    reads: Vec<MatchRead>,
    /// Each match read's variable, in order.
    variables: Vec<String>,
    /// One rule per match read, named after its number.
    helper: Option<yara_x::Rules>,
    /// The match reads over each pattern: per rule, its patterns' indexes
    /// (declaration order) with their bits.
    by_rule: HashMap<String, Vec<(usize, u64)>>,
}

impl std::fmt::Debug for MatchReads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MatchReads")
            .field("reads", &self.reads)
            .field("by_rule", &self.by_rule)
            .finish_non_exhaustive()
    }
}

/// The `for any` expressions that are match reads, for the analysis: by
/// source and place in it, as the rewrite finds them.
#[derive(Debug, Default)]
pub struct MatchReadExprs(HashSet<(usize, Range<usize>)>);

impl MatchReadExprs {
    /// The match reads of `trees`, without the helper rules.
    pub fn of(trees: &[&ast::AST<'_>]) -> MatchReadExprs {
        MatchReads::detect(trees).1
    }

    /// Those of the source at `source`.
    pub fn of_source(&self, source: usize) -> SourceMatchReads<'_> {
        SourceMatchReads {
            exprs: self,
            source,
        }
    }
}

/// The match reads of one source (see [`MatchReadExprs::of_source`]).
#[derive(Debug, Clone, Copy)]
pub struct SourceMatchReads<'a> {
    exprs: &'a MatchReadExprs,
    source: usize,
}

impl SourceMatchReads<'_> {
    /// Whether `for_in`, of this source, is a match read.
    pub fn contains(&self, for_in: &ast::ForIn<'_>) -> bool {
        let key = (self.source, for_in.span().range());
        self.exprs.0.contains(&key)
    }
}

impl MatchReads {
    /// The match reads of every rule of `trees` (in the order of the
    /// sources they were parsed from), and the expressions that are match
    /// reads. If the helper rules do not compile, there are none.
    pub fn new(trees: &[&ast::AST<'_>]) -> (MatchReads, MatchReadExprs) {
        let (mut reads, exprs) = Self::detect(trees);
        if reads.reads.is_empty() {
            return (reads, exprs);
        }
        match yara_x::compile(reads.helper_source().as_str()) {
            Ok(helper) => reads.helper = Some(helper),
            Err(_) => return (MatchReads::default(), MatchReadExprs::default()),
        }
        (reads, exprs)
    }

    /// [`Self::new`] without the helper rules.
    fn detect(trees: &[&ast::AST<'_>]) -> (MatchReads, MatchReadExprs) {
        let mut reads = MatchReads::default();
        let mut exprs = MatchReadExprs::default();
        for (source, tree) in trees.iter().enumerate() {
            for rule in tree.rules() {
                visit(&rule.condition, &mut |expr| {
                    let Expr::ForIn(for_in) = expr else {
                        return true;
                    };
                    if reads.reads.len() >= MAX_MATCH_READS {
                        return false;
                    }
                    let Some((pattern, body)) = match_read_of(for_in, rule) else {
                        return true;
                    };
                    reads.add(
                        rule.identifier.name,
                        pattern,
                        MatchRead {
                            source,
                            range: for_in.span().range(),
                            body,
                        },
                    );
                    exprs.0.insert((source, for_in.span().range()));
                    false
                });
            }
        }
        (reads, exprs)
    }

    /// Adds a match read over the pattern at `pattern` of `rule`.
    fn add(&mut self, rule: &str, pattern: usize, read: MatchRead) {
        let bit = 1u64 << self.reads.len();
        let patterns = self.by_rule.entry(rule.to_string()).or_default();
        match patterns.iter_mut().find(|(index, _)| *index == pattern) {
            Some((_, bits)) => *bits |= bit,
            None => patterns.push((pattern, bit)),
        }
        self.variables
            .push(format!("{PREFIX}match_read_{}", self.reads.len()));
        self.reads.push(read);
    }

    /// Whether the rules have no match read.
    pub fn is_empty(&self) -> bool {
        self.reads.is_empty()
    }

    /// How many match reads the rules have.
    pub fn len(&self) -> usize {
        self.reads.len()
    }

    /// Every match read's variable, in order (see the module's doc for its
    /// values: each is declared with [`Self::DEFAULT`]).
    pub fn variables(&self) -> impl Iterator<Item = &str> + '_ {
        self.variables.iter().map(String::as_str)
    }

    /// The value each variable is declared with: the expression decides.
    pub const DEFAULT: i64 = -1;

    /// The bits of the match reads over the pattern at `index` (declaration
    /// order) of `rule`.
    pub fn of_pattern(&self, rule: &str, index: usize) -> u64 {
        let patterns = self
            .by_rule
            .get(rule)
            .map(Vec::as_slice)
            .unwrap_or_default();
        patterns
            .iter()
            .find(|(pattern, _)| *pattern == index)
            .map_or(0, |(_, bits)| *bits)
    }

    /// The edits that rewrite the match reads of source `source` (whose
    /// text is `text`): each `for any` into `((V < 0 and <itself>) or V >
    /// 0)`, `V` its variable.
    pub fn edits(&self, source: usize, text: &str) -> Vec<(Range<usize>, String)> {
        self.reads
            .iter()
            .zip(&self.variables)
            .filter(|(read, _)| read.source == source)
            .map(|(read, variable)| {
                let original = &text[read.range.clone()];
                let rewritten = format!("(({variable} < 0 and {original}) or {variable} > 0)");
                (read.range.clone(), rewritten)
            })
            .collect()
    }

    /// The helper rules' source: rule `read_N` is match read `N`'s body.
    fn helper_source(&self) -> String {
        self.reads
            .iter()
            .enumerate()
            .map(|(n, read)| format!("rule read_{n} {{ condition: {} }}\n", read.body))
            .collect()
    }
}

/// Evaluates match reads on matches' bytes, with the helper rules.
pub struct MatchReadScanner<'r> {
    /// `None` without match reads.
    scanner: Option<yara_x::Scanner<'r>>,
    /// Matches scanned so far.
    scans: u64,
}

impl<'r> MatchReadScanner<'r> {
    /// A scanner of `reads`' helper rules.
    pub fn new(reads: &'r MatchReads) -> MatchReadScanner<'r> {
        MatchReadScanner {
            scanner: reads.helper.as_ref().map(yara_x::Scanner::new),
            scans: 0,
        }
    }

    /// Matches scanned so far.
    pub fn scans(&self) -> u64 {
        self.scans
    }

    /// Which of the match reads `wanted` hold on the match at `range` of
    /// `data`. Every match read is evaluated on those bytes, as one whole
    /// buffer.
    pub fn held(
        &mut self,
        data: &[u8],
        range: &Range<usize>,
        wanted: u64,
    ) -> Result<u64, yara_x::ScanError> {
        let Some(scanner) = self.scanner.as_mut() else {
            return Ok(0);
        };
        let bytes = &data[range.start.min(data.len())..range.end.min(data.len())];
        self.scans += 1;
        let results = scanner.scan(bytes)?;
        let held = results
            .matching_rules()
            .filter_map(|rule| rule.identifier().strip_prefix("read_")?.parse::<u32>().ok())
            .fold(0, |bits, n| bits | 1u64 << n);
        Ok(held & wanted)
    }
}

/// The pattern (its index) and the helper body of `for_in`, when it is a
/// match read of `rule`.
fn match_read_of(for_in: &ast::ForIn<'_>, rule: &ast::Rule<'_>) -> Option<(usize, String)> {
    if !matches!(for_in.quantifier, ast::Quantifier::Any { .. }) || for_in.variables.len() != 1 {
        return None;
    }
    let ast::Iterable::Range(range) = &for_in.iterable else {
        return None;
    };
    let (Expr::LiteralInteger(one), Expr::PatternCount(count)) =
        (&range.lower_bound, &range.upper_bound)
    else {
        return None;
    };
    if one.value != 1 || count.range.is_some() {
        return None;
    }
    // Not the anonymous `#` of a `for .. of`: its pattern is the loop's.
    let name = count.identifier.name.get(1..).filter(|n| !n.is_empty())?;
    let patterns = rule.patterns.as_deref().unwrap_or_default();
    let index = patterns
        .iter()
        .position(|p| p.identifier().name.get(1..) == Some(name))?;
    let body = Body {
        pattern: name,
        variable: for_in.variables[0].name,
        min_len: min_len(&patterns[index])?,
    };
    Some((index, body.print(&for_in.body)?))
}

/// The body of a `for any` over one pattern's matches.
struct Body<'a> {
    /// The pattern's name, without its sigil.
    pattern: &'a str,
    /// The `for` variable.
    variable: &'a str,
    /// Shortest match of the pattern.
    min_len: usize,
}

impl Body<'_> {
    /// `expr` printed as the helper's condition, fully parenthesized, with
    /// each read at `@a[i] + k` printed at `k`; `None` if `expr` is not
    /// made only of what a match read may use.
    fn print(&self, expr: &Expr<'_>) -> Option<String> {
        let nary = |operands: &ast::NAryExpr<'_>, op: &str| -> Option<String> {
            let printed: Option<Vec<String>> = operands.operands().map(|e| self.print(e)).collect();
            Some(format!("({})", printed?.join(&format!(" {op} "))))
        };
        let binary = |e: &ast::BinaryExpr<'_>, op: &str| -> Option<String> {
            Some(format!(
                "({} {op} {})",
                self.print(&e.lhs)?,
                self.print(&e.rhs)?
            ))
        };
        let unary = |e: &ast::UnaryExpr<'_>, op: &str| -> Option<String> {
            Some(format!("({op}{})", self.print(&e.operand)?))
        };
        match expr {
            // The value, not the literal: the parser keeps `2KB` as `2`.
            Expr::LiteralInteger(int) if int.is_unsigned => Some((int.value as u64).to_string()),
            Expr::LiteralInteger(int) => Some(format!("({})", int.value)),
            Expr::And(e) => nary(e, "and"),
            Expr::Or(e) => nary(e, "or"),
            Expr::Add(e) => nary(e, "+"),
            Expr::Sub(e) => nary(e, "-"),
            Expr::Mul(e) => nary(e, "*"),
            Expr::Div(e) => nary(e, "\\"),
            Expr::Mod(e) => nary(e, "%"),
            Expr::Not(e) => unary(e, "not "),
            Expr::Minus(e) => unary(e, "-"),
            Expr::BitwiseNot(e) => unary(e, "~"),
            Expr::Shl(e) => binary(e, "<<"),
            Expr::Shr(e) => binary(e, ">>"),
            Expr::BitwiseAnd(e) => binary(e, "&"),
            Expr::BitwiseOr(e) => binary(e, "|"),
            Expr::BitwiseXor(e) => binary(e, "^"),
            Expr::Eq(e) => binary(e, "=="),
            Expr::Ne(e) => binary(e, "!="),
            Expr::Lt(e) => binary(e, "<"),
            Expr::Gt(e) => binary(e, ">"),
            Expr::Le(e) => binary(e, "<="),
            Expr::Ge(e) => binary(e, ">="),
            Expr::FuncCall(call) => self.read(call),
            _ => None,
        }
    }

    /// A data function's call at `@a[i] + k` within the match, printed at
    /// `k`.
    fn read(&self, call: &ast::FuncCall<'_>) -> Option<String> {
        let name = call.identifier.name;
        let read = DataRead::named(name, 0).filter(|_| call.object.is_none())?;
        let [offset] = call.args.as_slice() else {
            return None;
        };
        let k = match offset {
            offset if self.is_match_offset(offset) => 0,
            Expr::Add(add) => match add.operands.as_slice() {
                [base, Expr::LiteralInteger(k)] | [Expr::LiteralInteger(k), base]
                    if self.is_match_offset(base) =>
                {
                    k.value
                }
                _ => return None,
            },
            _ => return None,
        };
        let within = u64::try_from(k).ok()? + u64::from(read.width) <= self.min_len as u64;
        within.then(|| format!("{name}({k})"))
    }

    /// Whether `expr` is `@a[i]`: the offset of the match the body is about.
    fn is_match_offset(&self, expr: &Expr<'_>) -> bool {
        let Expr::PatternOffset(offset) = expr else {
            return false;
        };
        let index_is_variable = matches!(
            &offset.index,
            Some(Expr::Ident(ident)) if ident.name == self.variable
        );
        offset.identifier.name.get(1..) == Some(self.pattern) && index_is_variable
    }
}

/// The shortest match a pattern can have, when the analysis knows it: a
/// hex pattern's, or a text pattern's (twice its length when it is only
/// `wide`). `None` for regexes and `base64` text.
fn min_len(pattern: &Pattern<'_>) -> Option<usize> {
    match pattern {
        Pattern::Hex(hex) => Some(super::analysis::hex_len_range(&hex.sub_patterns).0),
        Pattern::Text(text) => {
            let modifiers = &text.modifiers;
            if modifiers.base64().is_some() || modifiers.base64wide().is_some() {
                return None;
            }
            let len = text.text.value.len();
            let wide_only = modifiers.wide().is_some() && modifiers.ascii().is_none();
            Some(if wide_only { 2 * len } else { len })
        }
        Pattern::Regexp(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reads_of(src: &str) -> (MatchReads, usize) {
        let tree = ast::AST::from(src);
        assert!(tree.errors().is_empty(), "{:?}", tree.errors());
        let (reads, exprs) = MatchReads::new(&[&tree]);
        let exprs = exprs.0.len();
        (reads, exprs)
    }

    const CALL_1: &str = "rule c1 { strings: $a = { FF 75 ?? FF 55 ?? } \
        condition: for any i in (1..#a): (uint8(@a[i] + 2) == uint8(@a[i] + 5)) }";

    #[test]
    fn a_read_within_the_match_is_a_match_read() {
        let (reads, exprs) = reads_of(CALL_1);
        assert_eq!((reads.len(), exprs), (1, 1));
        assert_eq!(reads.reads[0].body, "(uint8(2) == uint8(5))");
        assert_eq!(reads.of_pattern("c1", 0), 1);
        assert_eq!(reads.of_pattern("c1", 1), 0);
        assert_eq!(reads.of_pattern("other", 0), 0);
        let edits = reads.edits(0, CALL_1);
        let [(range, rewritten)] = edits.as_slice() else {
            panic!("one edit: {edits:?}");
        };
        let original = &CALL_1[range.clone()];
        assert!(original.starts_with("for any i in (1..#a)") && original.ends_with("5))"));
        let variable = "yaraflow_match_read_0";
        assert_eq!(
            rewritten,
            &format!("(({variable} < 0 and {original}) or {variable} > 0)")
        );
    }

    #[test]
    fn literals_are_printed_by_value() {
        let src = "rule r { strings: $a = { 01 02 03 04 } condition: \
            for any i in (1..#a): (uint16(@a[i] + 2) > 1KB and uint8(@a[i]) != -1 \
            and uint8(@a[i] + 1) == 0x02) }";
        let (reads, _) = reads_of(src);
        assert_eq!(
            reads.reads[0].body,
            "((uint16(2) > (1024)) and (uint8(0) != (-1)) and (uint8(1) == (2)))"
        );
    }

    #[test]
    fn reads_past_the_shortest_match_or_of_other_things_are_not() {
        for condition in [
            // uint16 at 5 reads byte 6 of a 6-byte match.
            "for any i in (1..#a): (uint16(@a[i] + 5) == 0)",
            // The variable outside a read.
            "for any i in (1..#a): (uint8(@a[i]) == i)",
            // The offset itself.
            "for any i in (1..#a): (@a[i] > 100)",
            // Another pattern's match, or a regex's (no shortest match).
            "for any i in (1..#a): (uint8(@b[i]) == 1)",
            "for any i in (1..#b): (uint8(@b[i]) == 1)",
            // Not every match, or not from the first.
            "for all i in (1..#a): (uint8(@a[i]) == 0xFF)",
            "for any i in (2..#a): (uint8(@a[i]) == 0xFF)",
            // Before the match, or with more than the data.
            "for any i in (1..#a): (uint8(@a[i] - 1) == 0)",
            "for any i in (1..#a): (uint8(@a[i]) == filesize)",
            // The anonymous pattern of a `for .. of`: the loop's.
            "for any of them: (for any i in (1..#): (uint8(@[i]) == 0xFF))",
        ] {
            let src = format!(
                "rule r {{ strings: $a = {{ FF 75 ?? FF [0-2] 55 ?? }} $b = /ab+/ condition: {condition} }}"
            );
            let (reads, exprs) = reads_of(&src);
            assert_eq!((reads.len(), exprs), (0, 0), "{condition}");
        }
    }

    #[test]
    fn the_shortest_match_bounds_the_reads() {
        let hex = "rule r { strings: $a = { 31 ?? [1-3] (30 | 30 64) 8B } \
            condition: for any i in (1..#a): (uint16(@a[i] + 3) & 0xFF00 == 0x3000) }";
        assert_eq!(reads_of(hex).0.len(), 1, "31 ?? + 1 + 30 + 8B: five bytes");
        let wide = "rule r { strings: $a = \"abc\" wide \
            condition: for any i in (1..#a): (uint16(@a[i] + 4) == 0x63) }";
        assert_eq!(reads_of(wide).0.len(), 1, "six bytes");
        let both = wide.replace("wide", "ascii wide");
        assert_eq!(reads_of(&both).0.len(), 0, "three bytes, in ascii");
    }

    #[test]
    fn the_helper_evaluates_the_body_on_a_matchs_bytes() {
        let src = format!(
            "{CALL_1}\nrule c2 {{ strings: $a = {{ 31 ?? ?? 30 64 8B ?? }} \
             condition: for any i in (1..#a): ((uint8(@a[i] + 1) >= 0xC0) and \
             ((uint8(@a[i] + 2) & 0xF8) == 0xA0)) }}"
        );
        let (reads, _) = reads_of(&src);
        assert_eq!(reads.len(), 2);
        let mut scanner = MatchReadScanner::new(&reads);
        let mut held = |bytes: &[u8]| scanner.held(bytes, &(0..bytes.len()), u64::MAX).unwrap();
        assert_eq!(held(&[0xFF, 0x75, 7, 0xFF, 0x55, 7]) & 1, 1);
        assert_eq!(held(&[0xFF, 0x75, 7, 0xFF, 0x55, 8]) & 1, 0);
        assert_eq!(held(&[0x31, 0xC1, 0xA3, 0x30, 0x64, 0x8B, 0]) & 2, 2);
        assert_eq!(held(&[0x31, 0xB1, 0xA3, 0x30, 0x64, 0x8B, 0]) & 2, 0);
    }

    #[test]
    fn at_most_the_cap_of_match_reads() {
        let src: String = (0..MAX_MATCH_READS + 3)
            .map(|n| {
                format!(
                    "rule r{n} {{ strings: $a = {{ 01 02 }} \
                     condition: for any i in (1..#a): (uint8(@a[i]) == {n}) }}\n"
                )
            })
            .collect();
        let (reads, exprs) = reads_of(&src);
        assert_eq!((reads.len(), exprs), (MAX_MATCH_READS, MAX_MATCH_READS));
        let mut scanner = MatchReadScanner::new(&reads);
        let mut held = |data: &[u8], range, wanted| scanner.held(data, &range, wanted).unwrap();
        assert_eq!(held(&[63, 2], 0..2, u64::MAX), 1 << 63);
        assert_eq!(held(&[63, 2], 0..2, 1), 0, "not wanted");
        assert_eq!(held(&[9, 63, 2], 1..3, u64::MAX), 1 << 63);
    }
}
