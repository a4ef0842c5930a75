//! `filesize` and header reads as values of each stream.
//!
//! A whole-buffer scan reads two things no chunk of a stream shows:
//! `filesize`, and integers at fixed offsets of the data (`uint16(0)`,
//! `uint32be(0x3C)`). Both are known when a stream closes: its length, and
//! its first bytes, which it keeps (see [`DataValues::prefix_len`]). So the
//! rules are compiled with each such expression rewritten into two
//! external variables: `filesize` into
//! `(yaraflow_filesize \ yaraflow_filesize_defined)`, and `uint16(0)` into
//! `(yaraflow_uint16_0 \ yaraflow_uint16_0_defined)`. A stream's verdict
//! sets the value and `1` (defined), or `0` where YARA-X would say
//! *undefined*: a read past the end of the data, and everything in line
//! mode, whose contract is that of a block scan. YARA-X makes a division
//! by zero undefined, and undefined values go through `not`, comparisons
//! and arithmetic as they do when a block scan reads the data, so the
//! rewritten rule has the original's verdict for every stream. The
//! defaults are `0` and `0`: a scan that sets nothing sees block-scan
//! semantics.
//!
//! Reads whose offset is not an integer literal, or that end past
//! [`MAX_READ_END`], stay as they are (their rules stay whole-data).
//!
//! Digests of the whole data are values too: each chunk stream keeps
//! running digests of its bytes (see `stream::digests`). `hash.crc32(0,
//! filesize)` and `hash.checksum32(0, filesize)` are integers, rewritten
//! as `filesize` is. The text digests (`md5`, `sha1`, `sha256`) are
//! rewritten where they are compared with a string literal:
//! `hash.md5(0, filesize) == "ab.."` becomes `((yaraflow_md5 \
//! yaraflow_md5_defined) == K)`, `K` the literal's number among those the
//! rules compare that digest with (a stream's value is the number of the
//! literal its digest equals, 0 for none). Other uses of them stay.
//!
//! A stream that matched nothing gets the verdict of the empty stream with
//! its own values; [`DataValues::class_of`] tells when two streams' values
//! give the same verdict, so that it is computed once per class: a value
//! compared only with integer literals counts only by where it falls among
//! them.

use std::collections::BTreeSet;
use std::ops::Range;

use yara_x_parser::ast::{self, Expr, MatchAnchor, WithSpan};

use crate::stream::digests::{DigestKind, DigestSet, DigestValue, RunningDigests};

/// Farthest byte a rewritten read may touch: streams keep their first
/// bytes up to the farthest one their rules read.
pub const MAX_READ_END: u64 = 4096;

/// Prefix of the external variables the rewrite declares.
pub const PREFIX: &str = "yaraflow_";

/// A read of an integer at a fixed offset of the data: `uint16(0)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DataRead {
    /// Its first byte.
    pub offset: u64,
    /// Bytes read: 1, 2 or 4.
    pub width: u8,
    /// `intN` rather than `uintN`.
    pub signed: bool,
    /// The `be` forms.
    pub big_endian: bool,
}

impl DataRead {
    /// The read a function's name describes, at `offset` (`None`: not a
    /// data function).
    pub fn named(name: &str, offset: u64) -> Option<DataRead> {
        let (signed, rest) = match name.strip_prefix('u') {
            Some(rest) => (false, rest),
            None => (true, name),
        };
        let rest = rest.strip_prefix("int")?;
        let (bits, big_endian) = match rest.strip_suffix("be") {
            Some(bits) => (bits, true),
            None => (rest, false),
        };
        let width = match bits {
            "8" => 1,
            "16" => 2,
            "32" => 4,
            _ => return None,
        };
        Some(DataRead {
            offset,
            width,
            signed,
            big_endian,
        })
    }

    /// The read a call makes, when it is a data function called with an
    /// integer literal (any offset).
    pub fn of_call(call: &ast::FuncCall<'_>) -> Option<DataRead> {
        let [Expr::LiteralInteger(offset)] = call.args.as_slice() else {
            return None;
        };
        if call.object.is_some() {
            return None;
        }
        DataRead::named(call.identifier.name, u64::try_from(offset.value).ok()?)
    }

    /// The read an expression is, if the rewrite turns it into a value: a
    /// data function at a literal offset, ending by [`MAX_READ_END`].
    pub fn rewritten(expr: &Expr<'_>) -> Option<DataRead> {
        let Expr::FuncCall(call) = expr else {
            return None;
        };
        DataRead::of_call(call).filter(|read| read.end() <= MAX_READ_END)
    }

    /// One past its last byte.
    pub fn end(&self) -> u64 {
        self.offset + u64::from(self.width)
    }

    /// Its value in `prefix`, the data's first bytes (`None` past them).
    pub fn value(&self, prefix: &[u8]) -> Option<i64> {
        let bytes = prefix.get(self.offset as usize..self.end() as usize)?;
        let mut word = [0u8; 4];
        word[..bytes.len()].copy_from_slice(bytes);
        if self.big_endian {
            word[..bytes.len()].reverse();
        }
        let unsigned = u32::from_le_bytes(word);
        Some(match (self.signed, self.width) {
            (false, _) => i64::from(unsigned),
            (true, 1) => i64::from(unsigned as u8 as i8),
            (true, 2) => i64::from(unsigned as u16 as i16),
            (true, _) => i64::from(unsigned as i32),
        })
    }

    /// The function's name, as the rules call it.
    pub fn function(&self) -> String {
        let sign = if self.signed { "" } else { "u" };
        let order = if self.big_endian { "be" } else { "" };
        format!("{sign}int{}{order}", u32::from(self.width) * 8)
    }
}

/// What a rewritten expression stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Quantity {
    Filesize,
    Read(DataRead),
    /// A digest of the whole data: an integer one's value, or the number
    /// of the literal a text one equals.
    Digest(DigestKind),
}

impl Quantity {
    /// The integer quantity `expr` is (text digests are values only as
    /// a comparison: see [`digest_comparison`]).
    fn of(expr: &Expr<'_>) -> Option<Quantity> {
        match expr {
            Expr::Filesize { .. } => Some(Quantity::Filesize),
            _ => match digest_of_data(expr) {
                Some(kind) if !kind.is_text() => Some(Quantity::Digest(kind)),
                Some(_) => None,
                None => DataRead::rewritten(expr).map(Quantity::Read),
            },
        }
    }

    /// The external variable holding its value.
    fn variable(&self) -> String {
        match self {
            Quantity::Filesize => format!("{PREFIX}filesize"),
            Quantity::Read(read) => format!("{PREFIX}{}_{}", read.function(), read.offset),
            Quantity::Digest(kind) => format!("{PREFIX}{}", kind.name()),
        }
    }

    fn text(&self) -> String {
        let value = self.variable();
        format!("({value} \\ {value}_defined)")
    }
}

/// How one quantity's value is reduced for [`DataValues::class_of`].
#[derive(Debug, Clone)]
enum Classes {
    /// Compared only with these integers (sorted): only its place among
    /// them counts.
    Among(Vec<i64>),
    /// Used otherwise: every value counts.
    Raw,
}

/// The quantities a rule set's conditions read, and how streams pass them.
#[derive(Debug, Clone, Default)]
pub struct DataValues {
    quantities: Vec<(Quantity, Classes)>,
    /// The literals each text digest is compared with, sorted: a stream's
    /// value is its digest's number among them.
    digest_texts: std::collections::BTreeMap<DigestKind, Vec<Vec<u8>>>,
    /// The digests chunk streams keep.
    digests: DigestSet,
    /// Each quantity's variables: its value's, then its `_defined` flag's.
    variables: Vec<(String, String)>,
    prefix_len: usize,
}

/// A stream's values, in the order of [`DataValues::variables`] (`None`:
/// undefined).
pub type Values = Vec<Option<i64>>;

impl DataValues {
    /// The quantities of every rule condition of these sources.
    pub fn new<'a>(trees: impl IntoIterator<Item = &'a ast::AST<'a>>) -> DataValues {
        let mut found = Survey::default();
        let mut digest_texts = std::collections::BTreeMap::<_, BTreeSet<Vec<u8>>>::new();
        for tree in trees {
            for rule in tree.rules() {
                found.truth(&rule.condition);
                visit(&rule.condition, &mut |expr| match digest_comparison(expr) {
                    Some((kind, literal, _)) => {
                        digest_texts
                            .entry(kind)
                            .or_default()
                            .insert(literal.to_vec());
                        false
                    }
                    None => true,
                });
            }
        }
        let mut found = found.0;
        // A stream's value is already a class: which literal it equals.
        found.extend(
            digest_texts
                .keys()
                .map(|kind| (Quantity::Digest(*kind), None)),
        );
        let digests = found
            .keys()
            .filter_map(|q| match q {
                Quantity::Digest(kind) => Some(*kind),
                _ => None,
            })
            .fold(DigestSet::default(), DigestSet::with);
        let prefix_len = found
            .keys()
            .filter_map(|q| match q {
                Quantity::Read(read) => Some(read.end() as usize),
                Quantity::Filesize | Quantity::Digest(_) => None,
            })
            .max()
            .unwrap_or(0);
        let quantities: Vec<(Quantity, Classes)> = found
            .into_iter()
            .map(|(q, set)| match set {
                Some(set) => (q, Classes::Among(set.into_iter().collect())),
                None => (q, Classes::Raw),
            })
            .collect();
        let variables = quantities
            .iter()
            .map(|(q, _)| {
                let value = q.variable();
                let defined = format!("{value}_defined");
                (value, defined)
            })
            .collect();
        DataValues {
            quantities,
            digest_texts: digest_texts
                .into_iter()
                .map(|(kind, texts)| (kind, texts.into_iter().collect()))
                .collect(),
            digests,
            variables,
            prefix_len,
        }
    }

    /// The digests of the whole data chunk streams keep for these rules.
    pub fn digests(&self) -> DigestSet {
        self.digests
    }

    /// Whether the rules read nothing of this kind.
    pub fn is_empty(&self) -> bool {
        self.quantities.is_empty()
    }

    /// How many first bytes of a stream the reads need.
    pub fn prefix_len(&self) -> usize {
        self.prefix_len
    }

    /// The external variables of the rewrite, each value's then its
    /// `_defined` flag's name, in the order of [`Values`].
    pub fn variables(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.variables
            .iter()
            .map(|(value, defined)| (value.as_str(), defined.as_str()))
    }

    /// A stream's values: `prefix` holds its first bytes (at least
    /// [`DataValues::prefix_len`] of them, or all), `len` is its length,
    /// `digests` its running digests (of [`DataValues::digests`]);
    /// `defined` is false for a line stream (every value undefined).
    pub fn values(
        &self,
        prefix: &[u8],
        len: u64,
        digests: Option<&RunningDigests>,
        defined: bool,
    ) -> Values {
        self.quantities
            .iter()
            .map(|(q, _)| match (q, defined) {
                (_, false) => None,
                (Quantity::Filesize, true) => i64::try_from(len).ok(),
                (Quantity::Read(read), true) => read.value(prefix).filter(|_| read.end() <= len),
                (Quantity::Digest(kind), true) => {
                    debug_assert!(digests.is_some(), "a chunk stream keeps its digests");
                    self.digest_value(*kind, digests?)
                }
            })
            .collect()
    }

    /// A digest's value: an integer digest's own, or the number of the
    /// literal a text digest equals (from 1; 0 for none).
    fn digest_value(&self, kind: DigestKind, digests: &RunningDigests) -> Option<i64> {
        Some(match digests.value(kind)? {
            DigestValue::Integer(value) => value,
            DigestValue::Text(text) => self.digest_texts[&kind]
                .binary_search_by(|literal| literal.as_slice().cmp(text.as_bytes()))
                .map_or(0, |at| at as i64 + 1),
        })
    }

    /// The number a text digest's value takes where it equals `literal`.
    fn literal_number(&self, kind: DigestKind, literal: &[u8]) -> usize {
        let texts = &self.digest_texts[&kind];
        texts
            .binary_search_by(|t| t.as_slice().cmp(literal))
            .expect("surveyed")
            + 1
    }

    /// Values reduced so that two streams with equal classes get the same
    /// verdict from conditions with no match to see.
    pub fn class_of(&self, values: &[Option<i64>]) -> Values {
        self.quantities
            .iter()
            .zip(values)
            .map(|((_, classes), value)| {
                let value = (*value)?;
                Some(match classes {
                    Classes::Raw => value,
                    Classes::Among(constants) => match constants.binary_search(&value) {
                        Ok(at) => 2 * at as i64 + 1,
                        Err(at) => 2 * at as i64,
                    },
                })
            })
            .collect()
    }

    /// Sets `values` on a scanner, with `set(name, value)`.
    pub fn pass(&self, values: &[Option<i64>], mut set: impl FnMut(&str, i64)) {
        for ((value_name, defined_name), value) in self.variables().zip(values) {
            set(value_name, value.unwrap_or(0));
            set(defined_name, i64::from(value.is_some()));
        }
    }

    /// `text` (whose syntax tree is `tree`, one of those these values were
    /// made from) with each quantity replaced by its variables; `None` when
    /// it reads none.
    pub fn rewrite(&self, text: &str, tree: &ast::AST<'_>) -> Option<String> {
        let edits = self.edits(tree);
        (!edits.is_empty()).then(|| apply_edits(text, edits))
    }

    /// The edits of [`Self::rewrite`]: each quantity's source range and
    /// what replaces it.
    pub fn edits(&self, tree: &ast::AST<'_>) -> Vec<(Range<usize>, String)> {
        let mut edits: Vec<(Range<usize>, String)> = Vec::new();
        for rule in tree.rules() {
            visit(&rule.condition, &mut |expr| {
                let replacement = match (digest_comparison(expr), Quantity::of(expr)) {
                    (Some((kind, literal, op)), _) => {
                        let number = self.literal_number(kind, literal);
                        format!("({} {op} {number})", Quantity::Digest(kind).text())
                    }
                    (None, Some(quantity)) => quantity.text(),
                    (None, None) => return true,
                };
                edits.push((source_range(expr), replacement));
                false
            });
        }
        edits
    }
}

/// `text` with each range of `edits` (which do not overlap) replaced.
pub(crate) fn apply_edits(text: &str, mut edits: Vec<(Range<usize>, String)>) -> String {
    edits.sort_by_key(|(range, _)| range.start);
    let mut out = String::with_capacity(text.len() + 64 * edits.len());
    let mut copied = 0;
    for (range, replacement) in edits {
        debug_assert!(range.start >= copied, "edits overlap at {}", range.start);
        out.push_str(&text[copied..range.start]);
        out.push_str(&replacement);
        copied = range.end;
    }
    out.push_str(&text[copied..]);
    out
}

/// How the conditions use each quantity: the literals it is compared
/// with, or `None` where it is used otherwise.
#[derive(Default)]
struct Survey(std::collections::BTreeMap<Quantity, Option<BTreeSet<i64>>>);

impl Survey {
    /// Notes the uses in `expr`.
    fn expr(&mut self, expr: &Expr<'_>) {
        if digest_comparison(expr).is_some() {
            // A value of its own (see `DataValues::new`), `filesize` in it
            // included.
            return;
        }
        if let Some(inside) = moot_when_nothing_matched(expr) {
            inside
                .into_iter()
                .for_each(|quantity| self.compared(quantity, None));
            return;
        }
        if let Some((quantity, constant)) = compared_with_constant(expr) {
            return self.compared(quantity, Some(constant));
        }
        if let Some(quantity) = Quantity::of(expr) {
            self.0.insert(quantity, None);
            return;
        }
        match expr {
            Expr::And(operands) | Expr::Or(operands) => {
                operands.operands().for_each(|e| self.truth(e))
            }
            Expr::Not(not) => self.truth(&not.operand),
            _ => visit(expr, &mut |e| {
                if !std::ptr::eq(e, expr) {
                    self.expr(e);
                }
                std::ptr::eq(e, expr)
            }),
        }
    }

    /// Notes the uses in `expr`, a boolean operand: a bare quantity there
    /// is its comparison with 0.
    fn truth(&mut self, expr: &Expr<'_>) {
        match Quantity::of(expr) {
            Some(quantity) => self.compared(quantity, Some(0)),
            None => self.expr(expr),
        }
    }

    /// Notes a comparison of `quantity` with `constant` (`None`: a use
    /// that does not count).
    fn compared(&mut self, quantity: Quantity, constant: Option<i64>) {
        if let Some(set) = self.0.entry(quantity).or_insert(Some(BTreeSet::new())) {
            set.extend(constant);
        }
    }
}

/// The quantities under `expr`, when their values cannot change its value
/// in a verdict with no match (the only one [`DataValues::class_of`] is for):
/// the anchor, range or index of a pattern (`$a in (filesize - 100..filesize)`:
/// false, or zero, with no match), and an expression that a block scan
/// leaves undefined whatever they are.
fn moot_when_nothing_matched(expr: &Expr<'_>) -> Option<Vec<Quantity>> {
    let moot = match expr {
        Expr::PatternMatch(_)
        | Expr::PatternCount(_)
        | Expr::PatternOffset(_)
        | Expr::PatternLength(_) => true,
        _ => undefined_in_block_scans(expr),
    };
    if !moot {
        return None;
    }
    let mut inside = Vec::new();
    visit(expr, &mut |e| match Quantity::of(e) {
        Some(quantity) => {
            inside.push(quantity);
            false
        }
        None => true,
    });
    Some(inside)
}

/// Module functions that read the scanned data between an offset and a
/// size (`hash.md5(0, filesize)`): a block scan has no data to give them,
/// so they are undefined there.
const DATA_MODULE_FUNCTIONS: &[(&str, &[&str])] = &[
    ("hash", &["md5", "sha1", "sha256", "crc32", "checksum32"]),
    (
        "math",
        &[
            "entropy",
            "mean",
            "serial_correlation",
            "monte_carlo_pi",
            "mode",
        ],
    ),
];

/// Whether a block scan leaves `expr` undefined, whatever the values of the
/// quantities in it: a read the rewrite leaves (`uint32(uint32(0x3C))`), a
/// module function of the scanned data with an offset and a size, or an
/// operator that is undefined when an operand is (arithmetic, bitwise,
/// comparisons) over one of those.
fn undefined_in_block_scans(expr: &Expr<'_>) -> bool {
    match expr {
        Expr::FuncCall(call) if call.object.is_none() => {
            DataRead::named(call.identifier.name, 0).is_some()
                && DataRead::rewritten(expr).is_none()
        }
        // Rewritten into values of each stream.
        _ if digest_comparison(expr).is_some() || Quantity::of(expr).is_some() => false,
        Expr::FuncCall(call) => {
            let Some(Expr::Ident(module)) = &call.object else {
                return false;
            };
            call.args.len() == 2
                && DATA_MODULE_FUNCTIONS
                    .iter()
                    .any(|(m, names)| *m == module.name && names.contains(&call.identifier.name))
        }
        Expr::Eq(_) | Expr::Ne(_) | Expr::Lt(_) | Expr::Le(_) | Expr::Gt(_) | Expr::Ge(_) => {
            expr.children().any(undefined_in_block_scans)
        }
        expr if is_arithmetic(expr) => expr.children().any(undefined_in_block_scans),
        _ => false,
    }
}

/// Whether `expr` is an arithmetic or bitwise operation (undefined when an
/// operand is, and folded to a constant when all are).
pub(crate) fn is_arithmetic(expr: &Expr<'_>) -> bool {
    matches!(
        expr,
        Expr::Minus(_)
            | Expr::Add(_)
            | Expr::Sub(_)
            | Expr::Mul(_)
            | Expr::Div(_)
            | Expr::Mod(_)
            | Expr::BitwiseNot(_)
            | Expr::Shl(_)
            | Expr::Shr(_)
            | Expr::BitwiseAnd(_)
            | Expr::BitwiseOr(_)
            | Expr::BitwiseXor(_)
    )
}

/// The digest a call of the `hash` module computes when it is of the whole
/// data: `hash.md5(0, filesize)`.
fn digest_of_data(expr: &Expr<'_>) -> Option<DigestKind> {
    let Expr::FuncCall(call) = expr else {
        return None;
    };
    let Some(Expr::Ident(module)) = &call.object else {
        return None;
    };
    let [Expr::LiteralInteger(offset), Expr::Filesize { .. }] = call.args.as_slice() else {
        return None;
    };
    (module.name == "hash" && offset.value == 0)
        .then(|| DigestKind::named(call.identifier.name))
        .flatten()
}

/// A text digest of the whole data compared with a string literal
/// (`hash.md5(0, filesize) == "ab.."`, `!=`, either side): its kind, the
/// literal, and the operator.
fn digest_comparison<'e>(expr: &'e Expr<'_>) -> Option<(DigestKind, &'e [u8], &'static str)> {
    let (e, op) = match expr {
        Expr::Eq(e) => (e, "=="),
        Expr::Ne(e) => (e, "!="),
        _ => return None,
    };
    let text_digest = |expr| digest_of_data(expr).filter(|kind| kind.is_text());
    let (kind, other) = match (text_digest(&e.lhs), text_digest(&e.rhs)) {
        (Some(kind), None) => (kind, &e.rhs),
        (None, Some(kind)) => (kind, &e.lhs),
        _ => return None,
    };
    match other {
        Expr::LiteralString(literal) => Some((kind, literal.value.as_ref(), op)),
        _ => None,
    }
}

/// Where `expr` is in its source. (The span of a method call leaves out
/// its object: `md5(0, filesize)` of `hash.md5(0, filesize)`.)
fn source_range(expr: &Expr<'_>) -> Range<usize> {
    let own = expr.span().range();
    let (start, end) = match expr {
        Expr::FuncCall(call) => match &call.object {
            Some(object) => (source_range(object).start, own.end),
            None => (own.start, own.end),
        },
        Expr::Eq(e) | Expr::Ne(e) => (source_range(&e.lhs).start, source_range(&e.rhs).end),
        _ => (own.start, own.end),
    };
    start.min(own.start)..end.max(own.end)
}

/// Whether the rewrite turns `expr` into values of each stream: a digest
/// of the whole data (an integer one, or a text one compared with a
/// literal). The walk of the rule analysis stops there.
pub(crate) fn is_rewritten_digest(expr: &Expr<'_>) -> bool {
    digest_comparison(expr).is_some() || matches!(Quantity::of(expr), Some(Quantity::Digest(_)))
}

/// `Q op N` or `N op Q` for a quantity `Q`, a comparison `op` and an integer
/// literal `N`.
fn compared_with_constant(expr: &Expr<'_>) -> Option<(Quantity, i64)> {
    let (Expr::Eq(e) | Expr::Ne(e) | Expr::Lt(e) | Expr::Le(e) | Expr::Gt(e) | Expr::Ge(e)) = expr
    else {
        return None;
    };
    let literal = |expr: &Expr<'_>| match expr {
        Expr::LiteralInteger(int) => Some(int.value),
        _ => None,
    };
    match (Quantity::of(&e.lhs), Quantity::of(&e.rhs)) {
        (Some(q), None) => Some((q, literal(&e.rhs)?)),
        (None, Some(q)) => Some((q, literal(&e.lhs)?)),
        _ => None,
    }
}

/// Calls `f` on `expr` and, where it returns true, on every expression
/// under it: operands, arguments, quantifiers, iterables, declarations,
/// anchors, ranges and indexes too.
pub(crate) fn visit(expr: &Expr<'_>, f: &mut dyn FnMut(&Expr<'_>) -> bool) {
    if !f(expr) {
        return;
    }
    let range = |range: &ast::Range<'_>, f: &mut dyn FnMut(&Expr<'_>) -> bool| {
        visit(&range.lower_bound, f);
        visit(&range.upper_bound, f);
    };
    let anchor =
        |anchor: &Option<MatchAnchor<'_>>, f: &mut dyn FnMut(&Expr<'_>) -> bool| match anchor {
            Some(MatchAnchor::At(at)) => visit(&at.expr, f),
            Some(MatchAnchor::In(within)) => range(&within.range, f),
            None => {}
        };
    let quantifier = |q: &ast::Quantifier<'_>, f: &mut dyn FnMut(&Expr<'_>) -> bool| {
        if let ast::Quantifier::Percentage(e) | ast::Quantifier::Expr(e) = q {
            visit(e, f)
        }
    };
    match expr {
        Expr::PatternMatch(m) => anchor(&m.anchor, f),
        Expr::PatternCount(c) => {
            if let Some(r) = &c.range {
                range(r, f)
            }
        }
        Expr::PatternOffset(p) | Expr::PatternLength(p) => {
            if let Some(index) = &p.index {
                visit(index, f)
            }
        }
        Expr::Of(of) => {
            quantifier(&of.quantifier, f);
            if let ast::OfItems::BoolExprTuple(exprs) = &of.items {
                exprs.iter().for_each(|e| visit(e, f));
            }
            anchor(&of.anchor, f);
        }
        Expr::ForOf(for_of) => {
            quantifier(&for_of.quantifier, f);
            visit(&for_of.body, f);
        }
        Expr::ForIn(for_in) => {
            quantifier(&for_in.quantifier, f);
            match &for_in.iterable {
                ast::Iterable::Range(r) => range(r, f),
                ast::Iterable::ExprTuple(exprs) => exprs.iter().for_each(|e| visit(e, f)),
                ast::Iterable::Expr(e) => visit(e, f),
            }
            visit(&for_in.body, f);
        }
        Expr::With(with) => {
            with.declarations
                .iter()
                .for_each(|d| visit(&d.expression, f));
            visit(&with.body, f);
        }
        other => other.children().for_each(|child| visit(child, f)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(source: &str) -> DataValues {
        DataValues::new([&ast::AST::from(source)])
    }

    #[test]
    fn reads_take_their_width_sign_and_byte_order() {
        let prefix = [0x4D, 0x5A, 0xFF, 0x80, 0x01];
        let read = |name: &str, offset| DataRead::named(name, offset).unwrap().value(&prefix);
        assert_eq!(read("uint16", 0), Some(0x5A4D));
        assert_eq!(read("uint16be", 0), Some(0x4D5A));
        assert_eq!(read("int8", 2), Some(-1));
        assert_eq!(read("int16be", 2), Some(-128)); // 0xFF80
        assert_eq!(read("uint32", 1), Some(0x0180_FF5A));
        assert_eq!(read("int32be", 1), Some(0x5AFF_8001));
        assert_eq!(read("uint32", 2), None, "past the prefix");
        assert_eq!(DataRead::named("uint64", 0), None);
        assert_eq!(DataRead::named("int16be", 3).unwrap().function(), "int16be");
    }

    #[test]
    fn the_rewrite_replaces_filesize_and_literal_reads_only() {
        let source = r#"rule r { strings: $a = "filesize" condition:
            $a at uint32(0x3C) and filesize < 1KB and uint8(uint8(0)) == 1
            and for any i in (0..filesize) : (uint16be(i) == 2) and uint16(4095) == 3 }"#;
        let tree = ast::AST::from(source);
        let text = plan(source).rewrite(source, &tree).unwrap();
        assert!(text.contains(r#"$a = "filesize""#), "{text}");
        assert!(text.contains("$a at (yaraflow_uint32_60 \\ yaraflow_uint32_60_defined)"));
        assert!(text.contains("(yaraflow_filesize \\ yaraflow_filesize_defined) < 1KB"));
        assert!(text.contains("uint8((yaraflow_uint8_0 \\ yaraflow_uint8_0_defined)) == 1"));
        assert!(text.contains("for any i in (0..(yaraflow_filesize \\"));
        assert!(text.contains("uint16be(i) == 2"), "computed offsets stay");
        assert!(
            text.contains("uint16(4095) == 3"),
            "past MAX_READ_END stays"
        );
        assert_eq!(plan(source).prefix_len(), 0x3C + 4);
        let plain = "rule r { condition: true }";
        assert_eq!(plan(plain).rewrite(plain, &ast::AST::from(plain)), None);
    }

    #[test]
    fn values_are_undefined_past_the_end_and_in_line_mode() {
        let values = plan("rule r { condition: filesize > 1 and uint16(1) == 2 }");
        let names: Vec<_> = values.variables().map(|(v, _)| v).collect();
        assert_eq!(names, ["yaraflow_filesize", "yaraflow_uint16_1"]);
        assert_eq!(
            values.values(b"abc", 3, None, true),
            [Some(3), Some(0x6362)]
        );
        assert_eq!(values.values(b"ab", 2, None, true), [Some(2), None]);
        assert_eq!(values.values(b"abc", 3, None, false), [None, None]);
    }

    #[test]
    fn values_compared_with_literals_count_by_their_place_among_them() {
        let values = plan(
            "rule r { condition: filesize < 10 or filesize == 20 or uint8(0) == 1 or uint8(1) + 1 == 3 }",
        );
        let class = |size: i64, first: i64, second: i64| {
            values.class_of(&[Some(size), Some(first), Some(second)])
        };
        // filesize: below 10, 10, between, 20, above.
        assert_eq!(class(3, 0, 0)[0], class(9, 0, 0)[0]);
        assert_ne!(class(9, 0, 0)[0], class(10, 0, 0)[0]);
        assert_eq!(class(11, 0, 0)[0], class(19, 0, 0)[0]);
        assert_ne!(class(19, 0, 0)[0], class(20, 0, 0)[0]);
        assert_eq!(class(21, 0, 0)[0], class(1 << 40, 0, 0)[0]);
        assert_ne!(class(20, 0, 0)[0], class(21, 0, 0)[0]);
        // uint8(0) against 1 only; uint8(1) in arithmetic: every value.
        assert_eq!(class(0, 2, 0)[1], class(0, 200, 0)[1]);
        assert_ne!(class(0, 1, 0)[1], class(0, 2, 0)[1]);
        assert_ne!(class(0, 0, 2)[2], class(0, 0, 3)[2]);
        assert_eq!(values.class_of(&[None, None, None]), [None, None, None]);
        // An offset of a read the rewrite leaves (undefined in block scans
        // whatever it is), a pattern's range: moot when nothing matched.
        let values = plan(
            r#"rule r { strings: $a = "a" condition: uint32(uint32(0x3C)) == 0x4550
                and $a in (filesize - 10..filesize) }"#,
        );
        assert_eq!(values.variables().count(), 2);
        assert_eq!(
            values.class_of(&[Some(5), Some(7)]),
            values.class_of(&[Some(6), Some(9)])
        );
        assert_ne!(
            values.class_of(&[Some(5), None]),
            values.class_of(&[Some(6), Some(9)])
        );
    }

    #[test]
    fn digests_of_the_whole_data_are_rewritten_where_compared_with_literals() {
        let source = r#"import "hash" rule r { condition:
            hash.md5(0, filesize) == "b0" and not ("a0" != hash.md5(0, filesize))
            and hash.sha1(0, filesize) == "c0" and hash.crc32(0, filesize) + 1 == 5
            and hash.md5(0, 10) == "d0" and hash.sha256(0, filesize) contains "e0" }"#;
        let tree = ast::AST::from(source);
        let values = plan(source);
        let text = values.rewrite(source, &tree).unwrap();
        let md5 = "(yaraflow_md5 \\ yaraflow_md5_defined)";
        // The literals are numbered in sorted order: "a0" 1, "b0" 2.
        assert!(
            text.contains(&format!("({md5} == 2) and not (({md5} != 1))")),
            "{text}"
        );
        assert!(text.contains("((yaraflow_sha1 \\ yaraflow_sha1_defined) == 1)"));
        assert!(text.contains("(yaraflow_crc32 \\ yaraflow_crc32_defined) + 1 == 5"));
        assert!(
            text.contains(r#"hash.md5(0, 10) == "d0""#),
            "not the whole data"
        );
        assert!(
            text.contains(
                r#"hash.sha256(0, (yaraflow_filesize \ yaraflow_filesize_defined)) contains "e0""#
            ),
            "not compared: only its `filesize` is rewritten"
        );
        let kinds: Vec<_> = values.digests().kinds().collect();
        assert_eq!(
            kinds,
            [DigestKind::Md5, DigestKind::Sha1, DigestKind::Crc32]
        );
    }

    #[test]
    fn a_streams_digest_value_is_the_number_of_the_literal_it_equals() {
        let md5_abc = "900150983cd24fb0d6963f7d28e17f72";
        let source = format!(
            r#"import "hash" rule r {{ condition: hash.md5(0, filesize) == "{md5_abc}"
                or hash.md5(0, filesize) == "0f" or hash.checksum32(0, filesize) == 7 }}"#
        );
        let values = plan(&source);
        let names: Vec<_> = values.variables().map(|(v, _)| v).collect();
        assert_eq!(names, ["yaraflow_md5", "yaraflow_checksum32"]);
        let of = |data: &[u8], defined| {
            let mut digests = values.digests().start().unwrap();
            digests.update(data);
            values.values(data, data.len() as u64, Some(&digests), defined)
        };
        // "0f" sorts first, the digest of "abc" second.
        assert_eq!(of(b"abc", true), [Some(2), Some(294)]);
        assert_eq!(of(b"abd", true), [Some(0), Some(295)]);
        assert_eq!(of(b"abc", false), [None, None]);
    }
}
