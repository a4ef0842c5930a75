//! Gates of whole-data rules: what a stream's first bytes and length must
//! satisfy for such a rule to need the stream's bytes.
//!
//! A *whole-data* rule (one that stream scanning cannot evaluate exactly:
//! it reads modules, bytes at computed offsets, ...) gets its verdict
//! from a whole-buffer YARA-X scan of the bytes its stream retained.
//! Retaining every stream's bytes would cost memory for nothing: most such
//! rules test the header (`uint16(0) == 0x5A4D`) or the size
//! (`filesize < 1MB`) first. Where such a test fails, the `and` holding it
//! is false both in a whole-buffer scan and in the stream's verdict (which
//! reads the same header values and `filesize`, see `rules::data_values`,
//! and leaves module fields undefined), so the stream's own verdict of the
//! rule is exact. A [`Gate`] is a set of
//! *branches* of such tests: once every branch fails, the stream verdict
//! decides the rule. An `and` gives one branch (its gate conjuncts); an
//! `or` the branches of its operands, where an operand free of whole-data
//! features needs none (`(uint16(0) == 0x5A4D and pe.is_dll()) or $a`
//! depends on the header alone). Gate conjuncts:
//!
//! * **header tests**: `uintN(K) == V` (also `intN`, the `be` forms, and
//!   either side of `==`), an `or` of such tests (or of `and`s holding
//!   one), and the magic that a module's fields imply: `MZ` for `pe` and
//!   `dotnet`, `\x7fELF` for `elf`. YARA-X's parsers of those modules
//!   require it, and on other data they leave every field undefined but
//!   `is_pe`/`is_dotnet` (false), so a conjunct that compares a field (or
//!   arithmetic over fields and literals) with a literal, a constant or
//!   `filesize`, reads it bare, anchors a pattern at it
//!   (`$a at pe.entry_point`) or calls one of [`MODULE_PREDICATES`] bare
//!   is false there.
//! * **size limits**: `filesize < N`, `filesize <= N` (either side).
//! * **rule references**: a conjunct naming another rule with a
//!   one-branch gate holds only where that branch does.
//!
//! A rule where some whole-data feature is under none of these has no
//! gate: streams keep their bytes for it up to the retention cap. Gates are
//! sound, not complete: a stream that passes one still gets the
//! whole-buffer verdict.

use std::collections::HashMap;

use serde::{Serialize, Serializer};
use yara_x_parser::ast::{self, Expr, MatchAnchor};

use super::data_values::{is_arithmetic, DataRead};
use super::head::match_prefix;

/// Farthest header byte a gate reads: a stream that stops retaining keeps
/// this much of its start for the gates.
pub const MAX_GATE_OFFSET: u64 = 4096;

/// Functions of modules that are false (or zero, or undefined) on data
/// their module does not parse, when called bare as a condition.
pub const MODULE_PREDICATES: &[&str] = &["imports", "exports", "is_dll", "is_32bit", "is_64bit"];

/// Bytes that must be at an offset of the stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct ByteTest {
    /// Where they start.
    pub offset: u64,
    /// The bytes, in stream order.
    #[serde(serialize_with = "hex")]
    pub bytes: Vec<u8>,
}

/// Tests that all must pass for one branch of a rule to need the bytes:
/// every header group (each: one of its tests) and the size limit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
pub struct Branch {
    /// The stream must pass one test of each group.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub header: Vec<Vec<ByteTest>>,
    /// The stream may not be longer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_size: Option<u64>,
}

/// When a whole-data rule needs a stream's bytes: while some branch holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Gate {
    /// The branches (an `or` of them).
    pub branches: Vec<Branch>,
}

impl Gate {
    /// Whether a stream whose first bytes are `prefix` (all of them, or at
    /// least [`Gate::prefix_len`]) and whose length is `len` fails every
    /// branch for good, so that its own verdict decides the rule.
    /// `complete`: the stream ends at `len` (for a verdict of the bytes
    /// seen so far), so a test beyond its end fails, as `uintN` past the
    /// end of the data is undefined.
    pub fn fails(&self, prefix: &[u8], len: u64, complete: bool) -> bool {
        self.branches
            .iter()
            .all(|branch| branch.fails(prefix, len, complete))
    }

    /// How many first bytes the gate reads.
    pub fn prefix_len(&self) -> usize {
        self.branches
            .iter()
            .flat_map(|b| b.header.iter().flatten())
            .map(ByteTest::end)
            .max()
            .unwrap_or(0)
    }
}

impl Branch {
    fn fails(&self, prefix: &[u8], len: u64, complete: bool) -> bool {
        self.max_size.is_some_and(|max| len > max)
            || self
                .header
                .iter()
                .any(|group| group.iter().all(|test| test.fails(prefix, len, complete)))
    }

    fn is_empty(&self) -> bool {
        self.header.is_empty() && self.max_size.is_none()
    }

    fn and(&mut self, other: &Branch) {
        other
            .header
            .iter()
            .for_each(|group| self.require(group.clone()));
        if let Some(max) = other.max_size {
            self.limit_size(max);
        }
    }

    /// Adds a header group, once.
    fn require(&mut self, group: Vec<ByteTest>) {
        if !self.header.contains(&group) {
            self.header.push(group);
        }
    }

    fn limit_size(&mut self, max: u64) {
        self.max_size = Some(self.max_size.map_or(max, |m| m.min(max)));
    }
}

impl ByteTest {
    /// The offset just past the bytes it reads.
    pub fn end(&self) -> usize {
        self.offset as usize + self.bytes.len()
    }

    /// Whether some byte of `prefix` (a stream's first bytes, perhaps
    /// fewer than the test reads) differs from what it wants there: more
    /// bytes cannot make it pass.
    pub fn contradicted_by(&self, prefix: &[u8]) -> bool {
        let seen = prefix.get(self.offset as usize..).unwrap_or_default();
        seen.iter()
            .zip(&self.bytes)
            .any(|(seen, wanted)| seen != wanted)
    }

    fn fails(&self, prefix: &[u8], len: u64, complete: bool) -> bool {
        let end = self.end();
        match prefix.get(self.offset as usize..end) {
            Some(bytes) => bytes != self.bytes.as_slice(),
            None => complete && len < end as u64,
        }
    }
}

/// What gate derivation needs to know besides the condition.
pub struct GateContext<'a> {
    /// Whether a subexpression is free of whole-data features, so that the
    /// stream verdict evaluates it exactly (always false for a rule whose
    /// patterns the stream scanner may miss).
    pub is_free: &'a dyn Fn(&Expr<'_>) -> bool,
    /// The gates of the rules before this one: `None` for a whole-data rule
    /// without a gate. A stream-exact rule appears when its conjuncts give
    /// it one (its `$mz at 0`), for the rules that refer to it.
    pub known: &'a HashMap<String, Option<Gate>>,
    /// The rule's patterns that match one fixed byte string (see
    /// [`pattern_literals`]), by identifier.
    pub literals: &'a HashMap<String, Vec<u8>>,
}

/// A rule's patterns that match one fixed byte string, by identifier (for
/// [`GateContext::literals`]).
pub fn pattern_literals(rule: &ast::Rule<'_>) -> HashMap<String, Vec<u8>> {
    rule.patterns
        .iter()
        .flatten()
        .filter_map(|p| Some((p.identifier().name.to_string(), pattern_literal(p)?)))
        .collect()
}

/// Bytes every match of a pattern starts with, compared exactly (see
/// `head::match_prefix`; not under `nocase`).
fn pattern_literal(pattern: &ast::Pattern<'_>) -> Option<Vec<u8>> {
    match_prefix(pattern).and_then(|(bytes, nocase)| (!nocase).then_some(bytes))
}

/// The gate of a whole-data rule's condition, if it has one.
pub fn gate_of(condition: &Expr<'_>, context: &GateContext<'_>) -> Option<Gate> {
    need(condition, context).map(|branches| Gate { branches })
}

/// The one branch a condition's conjuncts give, as a gate (for references
/// to a stream-exact rule: where it fails, the rule is false), if any.
pub fn necessary_branch(condition: &Expr<'_>, context: &GateContext<'_>) -> Option<Gate> {
    let branch = conjunct_branch(condition, context);
    (!branch.is_empty()).then(|| Gate {
        branches: vec![branch],
    })
}

/// The branches under which `expr` needs the bytes (none: never), or
/// `None` when it may always need them.
fn need(expr: &Expr<'_>, context: &GateContext<'_>) -> Option<Vec<Branch>> {
    if (context.is_free)(expr) {
        return Some(Vec::new());
    }
    match expr {
        Expr::Or(or) => need_of_all(or, context),
        Expr::Ident(ident) => match context.known.get(ident.name) {
            Some(gate) => gate.as_ref().map(|g| g.branches.clone()),
            None => None,
        },
        _ => {
            let branch = conjunct_branch(expr, context);
            if !branch.is_empty() {
                return Some(vec![branch]);
            }
            // No conjunct makes it false: it is evaluated exactly once
            // each operand is.
            match expr {
                Expr::And(and) => need_of_all(and, context),
                _ => None,
            }
        }
    }
}

/// The branches of all operands: an `or` or `and` is evaluated exactly
/// once each of its operands is.
fn need_of_all(operands: &ast::NAryExpr<'_>, context: &GateContext<'_>) -> Option<Vec<Branch>> {
    operands
        .operands()
        .try_fold(Vec::new(), |mut all, operand| {
            all.extend(need(operand, context)?);
            Some(all)
        })
}

/// The one branch read off the top-level conjuncts of `expr`.
fn conjunct_branch(expr: &Expr<'_>, context: &GateContext<'_>) -> Branch {
    let mut branch = Branch::default();
    for conjunct in conjuncts(expr) {
        if let Some(group) = header_group(conjunct, context) {
            branch.require(group);
        } else if let Some(max) = size_limit(conjunct) {
            branch.limit_size(max);
        } else if let Expr::Ident(ident) = conjunct {
            if let Some(Some(Gate { branches })) = context.known.get(ident.name) {
                if let [only] = branches.as_slice() {
                    branch.and(only);
                }
            }
        }
    }
    branch
}

/// The top-level operands of `and`s.
fn conjuncts<'a, 'src>(expr: &'a Expr<'src>) -> Vec<&'a Expr<'src>> {
    match expr {
        Expr::And(and) => and.operands().flat_map(conjuncts).collect(),
        other => vec![other],
    }
}

/// The tests one of which a conjunct implies.
fn header_group(expr: &Expr<'_>, context: &GateContext<'_>) -> Option<Vec<ByteTest>> {
    match expr {
        Expr::Or(or) => or
            .operands()
            .map(|branch| {
                conjuncts(branch)
                    .into_iter()
                    .find_map(|c| header_group(c, context))
            })
            .collect::<Option<Vec<_>>>()
            .map(|groups| groups.into_iter().flatten().collect()),
        Expr::Eq(eq) => data_test(&eq.lhs, &eq.rhs)
            .or_else(|| data_test(&eq.rhs, &eq.lhs))
            .or_else(|| module_magic(expr))
            .map(|test| vec![test]),
        Expr::PatternMatch(m) => literal_at(m, context)
            .or_else(|| module_magic(expr))
            .map(|test| vec![test]),
        other => module_magic(other).map(|test| vec![test]),
    }
}

/// `$a at K` for a pattern whose matches all start with known bytes: those
/// bytes at `K` (false where they are not, in a whole-buffer scan and in
/// the stream's verdict, which replays its head for anchored patterns).
fn literal_at(m: &ast::PatternMatch<'_>, context: &GateContext<'_>) -> Option<ByteTest> {
    let Some(MatchAnchor::At(at)) = &m.anchor else {
        return None;
    };
    let Expr::LiteralInteger(offset) = &at.expr else {
        return None;
    };
    let bytes = context.literals.get(m.identifier.name)?;
    let offset = u64::try_from(offset.value).ok()?;
    (!bytes.is_empty() && offset + bytes.len() as u64 <= MAX_GATE_OFFSET).then(|| ByteTest {
        offset,
        bytes: bytes.clone(),
    })
}

/// `uintN(K) == V`, as the bytes it reads.
fn data_test(call: &Expr<'_>, value: &Expr<'_>) -> Option<ByteTest> {
    let Expr::FuncCall(call) = call else {
        return None;
    };
    let read = DataRead::of_call(call)?;
    let width = u32::from(read.width);
    let value = literal_integer(value)?;
    let fits = match read.signed {
        false => (0..1i64 << (8 * width)).contains(&value),
        true => (-(1i64 << (8 * width - 1))..1i64 << (8 * width - 1)).contains(&value),
    };
    if !fits || read.offset > MAX_GATE_OFFSET {
        return None;
    }
    let mut bytes = (value as u64).to_le_bytes()[..width as usize].to_vec();
    if read.big_endian {
        bytes.reverse();
    }
    Some(ByteTest {
        offset: read.offset,
        bytes,
    })
}

fn literal_integer(expr: &Expr<'_>) -> Option<i64> {
    match expr {
        Expr::LiteralInteger(int) => Some(int.value),
        Expr::Minus(minus) => literal_integer(&minus.operand).and_then(i64::checked_neg),
        _ => None,
    }
}

/// `filesize < N` or `filesize <= N`: the largest size allowed.
fn size_limit(expr: &Expr<'_>) -> Option<u64> {
    let (size, limit, strict) = match expr {
        Expr::Lt(e) => (&e.lhs, &e.rhs, true),
        Expr::Le(e) => (&e.lhs, &e.rhs, false),
        Expr::Gt(e) => (&e.rhs, &e.lhs, true),
        Expr::Ge(e) => (&e.rhs, &e.lhs, false),
        _ => return None,
    };
    if !matches!(size, Expr::Filesize { .. }) {
        return None;
    }
    let limit = u64::try_from(literal_integer(limit)?).ok()?;
    match strict {
        true => limit.checked_sub(1),
        false => Some(limit),
    }
}

/// The magic a conjunct on a module's fields implies (see the module doc).
fn module_magic(expr: &Expr<'_>) -> Option<ByteTest> {
    let module = match expr {
        Expr::FieldAccess(_) => bare_module_read(expr)?,
        Expr::FuncCall(call) if MODULE_PREDICATES.contains(&call.identifier.name) => {
            match &call.object {
                Some(Expr::Ident(module)) => module.name,
                _ => return None,
            }
        }
        Expr::Eq(e)
        | Expr::Ne(e)
        | Expr::Lt(e)
        | Expr::Gt(e)
        | Expr::Le(e)
        | Expr::Ge(e)
        | Expr::Contains(e)
        | Expr::IContains(e)
        | Expr::StartsWith(e)
        | Expr::IStartsWith(e)
        | Expr::EndsWith(e)
        | Expr::IEndsWith(e)
        | Expr::IEquals(e)
        | Expr::Matches(e) => {
            compared_field(&e.lhs, &e.rhs).or_else(|| compared_field(&e.rhs, &e.lhs))?
        }
        // A loop over patterns whose body is false where the magic is not,
        // with a quantifier that needs at least one true body.
        Expr::ForOf(for_of) if needs_one(&for_of.quantifier) => {
            return conjuncts(&for_of.body).into_iter().find_map(module_magic)
        }
        // A loop over a range a module's field bounds: on other data the
        // bound is undefined, and YARA-X makes such a loop false (any
        // quantifier), in both kinds of scan.
        Expr::ForIn(for_in) => match &for_in.iterable {
            ast::Iterable::Range(range) => {
                offset_field(&range.upper_bound).or_else(|| offset_field(&range.lower_bound))?
            }
            _ => return None,
        },
        Expr::BitwiseAnd(e) => module_field(&e.lhs).or_else(|| module_field(&e.rhs))?,
        Expr::PatternMatch(m) => match &m.anchor {
            Some(MatchAnchor::At(at)) => offset_field(&at.expr)?,
            Some(MatchAnchor::In(within)) => offset_field(&within.range.lower_bound)
                .or_else(|| offset_field(&within.range.upper_bound))?,
            None => return None,
        },
        _ => return None,
    };
    let (offset, bytes): (u64, &[u8]) = match module {
        "pe" | "dotnet" => (0, b"MZ"),
        "elf" => (0, b"\x7fELF"),
        _ => return None,
    };
    Some(ByteTest {
        offset,
        bytes: bytes.to_vec(),
    })
}

/// Whether a quantifier is false when every item is (`any`, `all` of a
/// non-empty set, `N` or `N%` with `N > 0`; not `none`, not `0 of`).
fn needs_one(quantifier: &ast::Quantifier<'_>) -> bool {
    match quantifier {
        ast::Quantifier::Any { .. } | ast::Quantifier::All { .. } => true,
        ast::Quantifier::Percentage(n) | ast::Quantifier::Expr(n) => {
            literal_integer(n).is_some_and(|n| n > 0)
        }
        ast::Quantifier::None { .. } => false,
    }
}

/// `module.field` or `module.predicate(...)` read bare as a condition.
fn bare_module_read<'src>(expr: &Expr<'src>) -> Option<&'src str> {
    let Expr::FieldAccess(access) = expr else {
        return None;
    };
    match access.last() {
        Expr::FuncCall(call) if MODULE_PREDICATES.contains(&call.identifier.name) => {
            module_root(access)
        }
        Expr::FuncCall(_) => None,
        _ => module_root(access),
    }
}

/// The module of a field (not a function, not a constant), or of
/// arithmetic over fields and literals, compared with a literal, a
/// constant or `filesize` (defined in both kinds of scan: a stream's
/// verdict reads it as a value).
fn compared_field<'src>(field: &Expr<'src>, other: &Expr<'_>) -> Option<&'src str> {
    let constant = matches!(
        other,
        Expr::LiteralInteger(_)
            | Expr::LiteralFloat(_)
            | Expr::LiteralString(_)
            | Expr::Regexp(_)
            | Expr::Filesize { .. }
    ) || is_module_constant(other);
    // No function calls but `pe`'s cached ones: `pe.imphash()` and
    // `pe.calculate_checksum()` read a thread-local cache that YARA-X 1.22
    // resets only when the module parses data, so a block scan after a
    // whole-buffer scan on the same thread would see the last file's hash
    // (tests/whole_data.rs found it); the evaluator resets it before each
    // verdict (`RuleSet::pe_cache_reset`). Others are not known to be
    // undefined on other data.
    constant
        .then(|| {
            module_field(field)
                .or_else(|| cached_pe_function(field))
                .or_else(|| field_arithmetic(field))
        })
        .flatten()
}

/// The module of arithmetic over its fields and literals
/// (`pe.sections[0].raw_data_offset + pe.sections[0].raw_data_size`):
/// undefined where a field is, as YARA-X's arithmetic is on an undefined
/// operand.
fn field_arithmetic<'src>(expr: &Expr<'src>) -> Option<&'src str> {
    if !is_arithmetic(expr) {
        return None;
    }
    let mut module = None;
    for operand in expr.children() {
        if matches!(operand, Expr::LiteralInteger(_) | Expr::LiteralFloat(_)) {
            continue;
        }
        let of = module_field(operand).or_else(|| field_arithmetic(operand))?;
        if *module.get_or_insert(of) != of {
            return None;
        }
    }
    module
}

/// Functions of `pe` whose results YARA-X caches per thread.
pub const CACHED_PE_FUNCTIONS: &[&str] = &["imphash", "calculate_checksum"];

/// `pe.imphash()` or `pe.calculate_checksum()`: undefined on data that is
/// not a PE file, once the cache is reset.
fn cached_pe_function<'src>(expr: &Expr<'src>) -> Option<&'src str> {
    let Expr::FuncCall(call) = expr else {
        return None;
    };
    let cached = call.args.is_empty() && CACHED_PE_FUNCTIONS.contains(&call.identifier.name);
    match &call.object {
        Some(Expr::Ident(module)) if cached && module.name == "pe" => Some(module.name),
        _ => None,
    }
}

/// The module of an expression that reads a field of it (not `is_pe`,
/// which is defined on every input; not a constant; not a function).
fn module_field<'src>(expr: &Expr<'src>) -> Option<&'src str> {
    let access = match expr {
        Expr::FieldAccess(access) => access,
        // An item of an array or map field: undefined where the field is.
        Expr::Lookup(lookup) => return module_field(&lookup.primary),
        _ => return None,
    };
    let last = match access.last() {
        Expr::Ident(ident) => ident.name,
        Expr::Lookup(_) => "[]",
        _ => return None,
    };
    let defined_everywhere = matches!(last, "is_pe" | "is_dotnet") || is_constant_name(last);
    (!defined_everywhere).then(|| module_root(access)).flatten()
}

/// An anchor computed from a module field with literals only.
fn offset_field<'src>(expr: &Expr<'src>) -> Option<&'src str> {
    match expr {
        Expr::FieldAccess(_) => module_field(expr),
        Expr::Add(sum) | Expr::Sub(sum) => sum.operands().find_map(offset_field).filter(|_| {
            sum.operands()
                .all(|e| matches!(e, Expr::LiteralInteger(_)) || offset_field(e).is_some())
        }),
        _ => None,
    }
}

fn is_module_constant(expr: &Expr<'_>) -> bool {
    let Expr::FieldAccess(access) = expr else {
        return false;
    };
    matches!(access.last(), Expr::Ident(ident) if is_constant_name(ident.name))
        && module_root(access).is_some()
}

/// Module constants are written in capitals (`pe.DLL`, `pe.MACHINE_I386`).
fn is_constant_name(name: &str) -> bool {
    name.bytes()
        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

fn module_root<'src>(access: &ast::NAryExpr<'src>) -> Option<&'src str> {
    root_module(access.first())
}

/// The module an access starts from (`pe` in `pe.sections[0].name`).
fn root_module<'src>(expr: &Expr<'src>) -> Option<&'src str> {
    match expr {
        Expr::Ident(ident) if matches!(ident.name, "pe" | "dotnet" | "elf") => Some(ident.name),
        Expr::FieldAccess(access) => root_module(access.first()),
        Expr::Lookup(lookup) => root_module(&lookup.primary),
        _ => None,
    }
}

fn hex<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    let text: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    serializer.serialize_str(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The gates of the rules of `src`, all taken as whole-data rules, with
    /// pattern conditions free.
    fn gates(src: &str) -> Vec<Option<Gate>> {
        let tree = ast::AST::from(src);
        assert!(tree.errors().is_empty(), "{:?}", tree.errors());
        let mut known = HashMap::new();
        fn free(e: &Expr<'_>) -> bool {
            // Rule references in these tests are to whole-data rules.
            let reads = matches!(
                e,
                Expr::FieldAccess(_) | Expr::FuncCall(_) | Expr::Filesize { .. } | Expr::Ident(_)
            );
            let anchored = matches!(e, Expr::PatternMatch(m) if m.anchor.is_some());
            !reads && !anchored && e.children().all(free)
        }
        let is_free = |e: &Expr<'_>| free(e);
        tree.rules()
            .map(|rule| {
                let literals = pattern_literals(rule);
                let context = GateContext {
                    is_free: &is_free,
                    known: &known,
                    literals: &literals,
                };
                let gate = gate_of(&rule.condition, &context);
                known.insert(rule.identifier.name.to_string(), gate.clone());
                gate
            })
            .collect()
    }

    /// The header groups of a one-branch gate.
    fn header(gate: &Option<Gate>) -> Vec<Vec<ByteTest>> {
        match gate.as_ref().map(|g| g.branches.as_slice()) {
            Some([only]) => only.header.clone(),
            other => panic!("not one branch: {other:?}"),
        }
    }

    fn test(offset: u64, bytes: &[u8]) -> ByteTest {
        ByteTest {
            offset,
            bytes: bytes.to_vec(),
        }
    }

    #[test]
    fn header_tests_become_bytes() {
        let g = gates(
            r#"rule a { condition: uint16(0) == 0x5A4D and uint32be(4) == 0xCAFEBABE }
               rule b { condition: 0x464c457f == uint32(0) or (uint8(2) == 0x41 and filesize > 3) }
               rule c { condition: int16(8) == -2 }
               rule d { condition: uint8(0) == 0x1ff or uint16(0) != 1 }
               rule e { condition: (uint16(0) == 1 or uint16(0) == 2) and filesize > 9 }"#,
        );
        assert_eq!(
            header(&g[0]),
            vec![
                vec![test(0, b"MZ")],
                vec![test(4, &[0xCA, 0xFE, 0xBA, 0xBE])]
            ]
        );
        let b = g[1].as_ref().unwrap();
        assert_eq!(b.branches.len(), 2);
        assert_eq!(b.branches[0].header, vec![vec![test(0, b"\x7fELF")]]);
        assert_eq!(b.branches[1].header, vec![vec![test(2, b"A")]]);
        assert_eq!(header(&g[2]), vec![vec![test(8, &[0xFE, 0xFF])]]);
        assert_eq!(g[3], None, "no sound gate");
        assert_eq!(
            header(&g[4]),
            vec![vec![test(0, &[1, 0]), test(0, &[2, 0])]]
        );
    }

    #[test]
    fn sizes_modules_and_references() {
        let g = gates(
            r#"import "pe"
               rule s { condition: filesize < 100 and 50 >= filesize }
               rule p { strings: $a = "x" condition: $a at pe.entry_point }
               rule q { condition: pe.number_of_sections == 1 and pe.characteristics & pe.DLL }
               rule r { condition: p and s }
               rule n { condition: not pe.is_dll() and pe.is_pe == 0 }
               rule f { condition: pe.imports("k.dll") and pe.imphash() == "x" }
               rule a { condition: pe.sections[pe.number_of_sections - 1].raw_data_offset + pe.sections[pe.number_of_sections - 1].raw_data_size < filesize }
               rule m { condition: filesize == (pe.number_of_sections + 1) * 2 }
               rule x { condition: pe.number_of_sections + uint8(2) == 3 }"#,
        );
        assert_eq!(g[0].as_ref().unwrap().branches[0].max_size, Some(50));
        let mz = vec![test(0, b"MZ")];
        assert_eq!(header(&g[1]), vec![mz.clone()]);
        assert_eq!(header(&g[2]), vec![mz.clone()], "once");
        let r = &g[3].as_ref().unwrap().branches[0];
        assert_eq!((r.header.clone(), r.max_size), (vec![mz.clone()], Some(50)));
        assert_eq!(g[4], None, "negations and is_pe comparisons gate nothing");
        assert_eq!(header(&g[5]), vec![mz.clone()]);
        assert_eq!(header(&g[6]), vec![mz.clone()], "arithmetic over fields");
        assert_eq!(header(&g[7]), vec![mz], "compared with filesize");
        assert_eq!(
            g[8], None,
            "only fields and literals in arithmetic, for now"
        );
    }

    #[test]
    fn anchored_literals_lookups_loops_and_string_tests() {
        let g = gates(
            r#"import "pe"
               import "dotnet"
               rule a { strings: $mz = { 4D 5A } $x = "x" nocase condition: $mz at 0 and $x }
               rule b { condition: dotnet.guids[0] == "abc" or pe.version_info["X"] contains "y" }
               rule c { condition: for any i in (0..pe.number_of_sections - 1): (pe.sections[i].name == ".t") }
               rule d { condition: pe.imphash() == "00" or pe.is_dll() or pe.rva_to_offset(0) == 1 }
               rule e { strings: $x = "x" nocase condition: $x at 0 }
               rule f { condition: pe.sections[0].name == ".text" }
               rule g { strings: $a = "a" $b = "b" condition: for any of ($*) : ( $ at pe.entry_point ) }
               rule h { strings: $a = "a" $b = "b" condition: for none of ($*) : ( $ at pe.entry_point ) }
               rule i { strings: $a = "a" $b = "b" condition: ($a or pe.exports("x")) and #b > 2 }
               rule j { strings: $gif = { 47 49 46 38 3? 61 } condition: $gif at 0 }
               rule k { strings: $w = { ?? 50 } condition: $w at 0 }
               rule l { strings: $a = "a" condition: all of them or pe.imphash() == "00" }"#,
        );
        let mz = vec![vec![test(0, b"MZ")]];
        assert_eq!(header(&g[0]), mz);
        assert_eq!(g[1].as_ref().unwrap().branches.len(), 2);
        assert!(g[1]
            .as_ref()
            .unwrap()
            .branches
            .iter()
            .all(|b| b.header == mz));
        assert_eq!(header(&g[2]), mz);
        assert_eq!(g[3], None, "a function other than the cached ones: no gate");
        assert_eq!(
            header(&g[11]),
            mz,
            "the cached ones, reset before each verdict"
        );
        assert_eq!(g[4], None, "nocase matches more than one string");
        assert_eq!(header(&g[5]), mz);
        assert_eq!(header(&g[6]), mz);
        assert_eq!(g[7], None, "`none` of false bodies is true");
        assert_eq!(header(&g[8]), mz, "an and of exactly evaluated operands");
        assert_eq!(
            header(&g[9]),
            vec![vec![test(0, b"GIF8")]],
            "the plain bytes first"
        );
        assert_eq!(g[10], None, "a hex pattern that starts with a wildcard");
    }

    #[test]
    fn free_operands_of_an_or_need_no_branch() {
        let g = gates(
            r#"import "pe"
               rule w { strings: $a = "x" condition: uint16(0) == 0x5A4D and pe.is_dll() or $a }
               rule v { strings: $a = "x" condition: $a or w }
               rule u { strings: $a = "x" condition: $a or pe.number_of_sections > 1 and filesize > 3 }"#,
        );
        assert_eq!(header(&g[0]), vec![vec![test(0, b"MZ")]]);
        assert_eq!(
            header(&g[1]),
            vec![vec![test(0, b"MZ")]],
            "through the reference"
        );
        assert_eq!(header(&g[2]), vec![vec![test(0, b"MZ")]]);
    }

    #[test]
    fn a_gate_fails_when_every_branch_fails() {
        let gate = Gate {
            branches: vec![Branch {
                header: vec![vec![test(0, b"MZ"), test(0, b"\x7fELF")]],
                max_size: Some(10),
            }],
        };
        assert!(!gate.fails(b"MZ", 2, false));
        assert!(!gate.fails(b"\x7fEL", 3, false), "pending");
        assert!(gate.fails(b"\x7fEL", 3, true), "too short at the end");
        assert!(gate.fails(b"ZM..", 4, false));
        assert!(gate.fails(b"MZ", 11, false));
        assert_eq!(gate.prefix_len(), 4);
        let two = Gate {
            branches: vec![
                gate.branches[0].clone(),
                Branch {
                    header: vec![],
                    max_size: Some(20),
                },
            ],
        };
        assert!(!two.fails(b"MZ", 11, false), "the second branch holds");
        assert!(two.fails(b"MZ", 21, false));
        assert!(
            Gate::default().fails(b"", 0, false),
            "no branch: decided from the start"
        );
    }
}
