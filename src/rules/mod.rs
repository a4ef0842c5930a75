//! Loading, compiling and analysing rules.
//!
//! A [`RuleSet`] is the compiled YARA-X [`yara_x::Rules`] together with the
//! [`RuleAnalysis`] of the same sources. Rules come from strings, files, or
//! directories of `.yar`/`.yara` files (searched recursively, in sorted
//! order so that the rule order is the same on every machine). All sources
//! share the default namespace, as when several files are given to `yr`.

pub mod analysis;
pub mod data_values;
pub mod density;
pub mod edges;
pub mod externals;
pub mod gates;
pub mod head;
pub mod match_reads;
pub mod open_ended;
pub mod preconditions;
pub mod tail;
pub mod whole_data;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

pub use analysis::{PatternReport, RuleAnalysis, RuleClasses, RuleIssue, RuleReport};
pub use data_values::DataValues;
pub use edges::EdgeGuard;
pub use externals::{stream_externals, External, ExternalValue, FileInfo, FILE_EXTERNALS};
pub use gates::Gate;
pub use head::{HeadAnchor, HeadPlan};
pub use match_reads::MatchReads;
pub use preconditions::PreconditionPlan;
pub use tail::TailPlan;
pub use whole_data::WholeDataPlan;

use yara_x_parser::ast;

use crate::error::RuleError;

/// Compiled rules plus what stream scanning needs to know about them.
pub struct RuleSet {
    rules: yara_x::Rules,
    analysis: RuleAnalysis,
    exact_rules: HashSet<(String, String)>,
    edge_guard: EdgeGuard,
    tail_plan: TailPlan,
    whole_data: WholeDataPlan,
    preconditions: PreconditionPlan,
    data_values: DataValues,
    match_reads: MatchReads,
    pe_cache_reset: Option<yara_x::Rules>,
    externals: Vec<External>,
    sources: Vec<(String, String)>,
    #[cfg(feature = "store")]
    fingerprint: [u8; 32],
}

impl std::fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleSet")
            .field("analysis", &self.analysis)
            .finish_non_exhaustive()
    }
}

/// How rules are compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleOptions {
    /// Caps the window (see [`crate::ScannerConfig::max_pattern_len`]).
    pub max_pattern_len: usize,
    /// External variables the rules may read (see [`External`]).
    pub externals: Vec<External>,
    /// Whether chunk streams retain their bytes for the dense rules (see
    /// [`density`]) and are scanned whole at their end, up to the
    /// retention caps. `false`: dense rules are searched chunk by chunk
    /// like the others, and no sample is scanned at load.
    pub whole_scan_dense: bool,
}

impl RuleOptions {
    /// Options with this window cap and no external variable.
    pub fn new(max_pattern_len: usize) -> RuleOptions {
        RuleOptions {
            max_pattern_len,
            externals: Vec::new(),
            whole_scan_dense: true,
        }
    }
}

impl RuleSet {
    /// Compiles rules from source text. `max_pattern_len` caps the window
    /// (see [`crate::ScannerConfig::max_pattern_len`]).
    pub fn from_source(source: &str, max_pattern_len: usize) -> Result<RuleSet, RuleError> {
        Self::from_sources(
            vec![("<string>".to_string(), source.to_string())],
            max_pattern_len,
        )
    }

    /// Compiles every rule file given: each path is a `.yar`/`.yara` file or
    /// a directory searched recursively for them.
    pub fn from_paths<P: AsRef<Path>>(
        paths: &[P],
        max_pattern_len: usize,
    ) -> Result<RuleSet, RuleError> {
        Self::from_paths_with(paths, &RuleOptions::new(max_pattern_len))
    }

    /// [`Self::from_paths`], with external variables.
    pub fn from_paths_with<P: AsRef<Path>>(
        paths: &[P],
        options: &RuleOptions,
    ) -> Result<RuleSet, RuleError> {
        let mut files = Vec::new();
        for path in paths {
            collect_rule_files(path.as_ref(), &mut files)?;
        }
        let sources = files
            .into_iter()
            .map(|path| {
                let text = std::fs::read_to_string(&path).map_err(|source| RuleError::Io {
                    path: path.clone(),
                    source,
                })?;
                Ok((path.display().to_string(), text))
            })
            .collect::<Result<Vec<_>, RuleError>>()?;
        Self::from_sources_with(sources, options)
    }

    /// Compiles `(origin, text)` sources into one rule set. When an origin
    /// names a file, the `include`s of its source are found relative to
    /// that file's folder (as files included by it find theirs), not to
    /// the current directory.
    pub fn from_sources(
        sources: Vec<(String, String)>,
        max_pattern_len: usize,
    ) -> Result<RuleSet, RuleError> {
        Self::from_sources_with(sources, &RuleOptions::new(max_pattern_len))
    }

    /// [`Self::from_sources`], with external variables.
    pub fn from_sources_with(
        sources: Vec<(String, String)>,
        options: &RuleOptions,
    ) -> Result<RuleSet, RuleError> {
        for (origin, text) in &sources {
            check_nesting(origin, text)?;
        }
        // YARA-X's parser and compiler recurse once or more per level of
        // nesting: a thread of its own with a large stack (mostly never
        // touched) keeps even the deepest rule allowed from overflowing
        // the caller's (a test thread has 2 MiB).
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("rule-compiler".into())
                .stack_size(COMPILER_STACK)
                .spawn_scoped(scope, || Self::compile(sources, options))
                .map_err(|err| {
                    RuleError::Compile(format!("cannot start the rule compiler: {err}"))
                })?
                .join()
                .unwrap_or_else(|_| Err(RuleError::Compile("the rule compiler panicked".into())))
        })
    }

    fn compile(
        sources: Vec<(String, String)>,
        options: &RuleOptions,
    ) -> Result<RuleSet, RuleError> {
        let max_pattern_len = options.max_pattern_len;
        let trees: Vec<_> = sources
            .iter()
            .map(|(origin, text)| (origin.clone(), yara_x_parser::ast::AST::from(text.as_str())))
            .collect();
        let data_values = DataValues::new(trees.iter().map(|(_, tree)| tree));
        let (match_reads, match_read_exprs) =
            MatchReads::new(&trees.iter().map(|(_, tree)| tree).collect::<Vec<_>>());
        let rewritten: Vec<(String, String)> = sources
            .iter()
            .zip(&trees)
            .enumerate()
            .map(|(index, ((origin, text), (_, tree)))| {
                let mut edits = data_values.edits(tree);
                edits.extend(match_reads.edits(index, text));
                let text = match edits.is_empty() {
                    true => text.clone(),
                    false => data_values::apply_edits(text, edits),
                };
                (origin.clone(), text)
            })
            .collect();
        let declared = externals::declared(&options.externals);
        let variables = Variables {
            values: &data_values,
            match_reads: &match_reads,
        };
        let rules = compile_sources(&rewritten, &declared, Some(variables)).map_err(|err| {
            // The errors of the text the user wrote, not of the rewrite.
            match compile_sources(&sources, &declared, None) {
                Err(original) => original,
                Ok(_) => err,
            }
        })?;
        #[cfg(feature = "store")]
        let fingerprint = fingerprint(&sources, options);
        for ((origin, text), (_, tree)) in sources.iter().zip(&trees) {
            parsed_to_the_end(origin, text, tree)?;
        }
        let mut analysis = RuleAnalysis::from_asts_with(&trees, max_pattern_len, &match_read_exprs);
        drop(match_read_exprs);
        let foreign = foreign_rules(&rules, &analysis);
        analysis.depend_on_foreign(&foreign);
        let exact_rules = analysis
            .rules
            .iter()
            .filter(|r| r.supported)
            .map(|r| (r.namespace.clone(), r.identifier.clone()))
            .collect::<HashSet<_>>();
        if options.whole_scan_dense {
            let dense = density::dense_rules(&rules, |ns, id| {
                exact_rules.contains(&(ns.to_string(), id.to_string()))
            });
            analysis.mark_dense(&dense);
        }
        let edge_guard = EdgeGuard::from_asts(trees.iter().map(|(_, t)| t), max_pattern_len);
        // Rules from included files are compiled but not analysed: their
        // patterns' lengths and keys are not known, so every stream keeps
        // the longest tail.
        let preconditions = PreconditionPlan::new(&analysis.rules);
        let tail_plan = match foreign.is_empty() {
            true => analysis
                .tail_plan(&trees)
                .with_preconditions(&preconditions),
            false => TailPlan::uniform(max_pattern_len.max(analysis.window)),
        };
        let whole_data = WholeDataPlan::new(&analysis.rules);
        drop(trees);
        let pe_cache_reset = calls_cached_pe_functions(&sources)
            .then(|| yara_x::compile(r#"import "pe" rule reset { condition: pe.is_pe }"#))
            .transpose()
            .map_err(|err| RuleError::Compile(err.to_string()))?;
        Ok(RuleSet {
            rules,
            analysis,
            exact_rules,
            edge_guard,
            tail_plan,
            whole_data,
            preconditions,
            data_values,
            match_reads,
            pe_cache_reset,
            externals: declared,
            sources,
            #[cfg(feature = "store")]
            fingerprint,
        })
    }

    /// The rule sources as given: `(origin, text)`.
    pub fn sources(&self) -> &[(String, String)] {
        &self.sources
    }

    /// The same sources and externals compiled by YARA-X as they are,
    /// without the rewrite of `filesize` and header reads (see
    /// [`data_values`]): the rules a whole-buffer scanner runs, for
    /// references and benchmarks.
    pub fn compile_unchanged(&self) -> Result<yara_x::Rules, RuleError> {
        compile_sources(&self.sources, &self.externals, None)
    }

    /// Rules whose scan of no data resets the per-thread cache of
    /// `pe.imphash()` and `pe.calculate_checksum()` (see
    /// [`gates::CACHED_PE_FUNCTIONS`]), when these rules call them: a
    /// verdict from spans scans with them first, so that it never reads a
    /// value a whole-buffer scan on the same thread left.
    pub(crate) fn pe_cache_reset(&self) -> Option<&yara_x::Rules> {
        self.pe_cache_reset.as_ref()
    }

    /// `filesize` and the header reads the rules were compiled with as
    /// values of each stream.
    pub fn data_values(&self) -> &DataValues {
        &self.data_values
    }

    /// The reads of matches' own bytes the search evaluates (see
    /// [`match_reads`]).
    pub fn match_reads(&self) -> &MatchReads {
        &self.match_reads
    }

    /// The external variables the rules may read, with their values: those
    /// defined, then the [`FILE_EXTERNALS`] not defined, empty. A stream
    /// may set its own values of them
    /// ([`crate::MultiStreamScanner::set_stream_externals`]).
    pub fn externals(&self) -> &[External] {
        &self.externals
    }

    /// Checks a stream's own values of externals (see
    /// [`externals::check_stream_externals`]).
    pub fn check_stream_externals(&self, given: &[External]) -> Result<(), String> {
        externals::check_stream_externals(&self.externals, given)
    }

    /// A digest of the rule texts (in order) and `max_pattern_len`: two
    /// rule sets with the same fingerprint make the same stream contexts,
    /// so a context stored under one can be restored under the other.
    /// File names are not part of it (moving the rules changes nothing).
    /// With the `store` feature.
    #[cfg(feature = "store")]
    pub fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }

    /// The compiled YARA-X rules.
    pub fn rules(&self) -> &yara_x::Rules {
        &self.rules
    }

    /// Whether stream verdicts of a rule equal a whole-buffer scan.
    pub fn is_exact(&self, namespace: &str, identifier: &str) -> bool {
        self.exact_rules
            .contains(&(namespace.to_string(), identifier.to_string()))
    }

    /// The anchored regexes that replayed spans must not cut.
    pub fn edge_guard(&self) -> &EdgeGuard {
        &self.edge_guard
    }

    /// What chunk streams keep as their tail, and when a match settles.
    pub fn tail_plan(&self) -> &TailPlan {
        &self.tail_plan
    }

    /// The whole-data rules (those not exact on streams) and their gates.
    pub fn whole_data(&self) -> &WholeDataPlan {
        &self.whole_data
    }

    /// The rules' preconditions: what a stream's first bytes can rule out.
    pub fn preconditions(&self) -> &PreconditionPlan {
        &self.preconditions
    }

    /// The stream-scanning analysis of the rules.
    pub fn analysis(&self) -> &RuleAnalysis {
        &self.analysis
    }
}

/// Whether some source may call a function of `pe` that YARA-X caches per
/// thread (a text search: a comment naming one only costs a reset).
fn calls_cached_pe_functions(sources: &[(String, String)]) -> bool {
    sources.iter().any(|(_, text)| {
        gates::CACHED_PE_FUNCTIONS
            .iter()
            .any(|name| memchr::memmem::find(text.as_bytes(), name.as_bytes()).is_some())
    })
}

/// The rules YARA-X compiled that the analysis did not read (those of
/// included files): `(identifier, is_global)`.
fn foreign_rules(rules: &yara_x::Rules, analysis: &RuleAnalysis) -> Vec<(String, bool)> {
    let analysed: HashSet<&str> = analysis
        .rules
        .iter()
        .map(|r| r.identifier.as_str())
        .collect();
    rules
        .iter()
        .filter(|rule| !analysed.contains(rule.identifier()))
        .map(|rule| (rule.identifier().to_string(), rule.is_global()))
        .collect()
}

/// The variables the rewrite of the rules declares.
#[derive(Clone, Copy)]
struct Variables<'a> {
    values: &'a DataValues,
    match_reads: &'a MatchReads,
}

impl<'a> Variables<'a> {
    /// Every name, with the value to declare it with.
    fn declared(self) -> impl Iterator<Item = (&'a str, i64)> {
        let values = self
            .values
            .variables()
            .flat_map(|(value, defined)| [(value, 0), (defined, 0)]);
        let reads = self.match_reads.variables();
        values.chain(reads.map(|name| (name, MatchReads::DEFAULT)))
    }
}

/// Compiles sources with the externals `declared` and the variables of
/// the rewrite, if any (their defaults: every value undefined, every match
/// read left to its expression).
fn compile_sources(
    sources: &[(String, String)],
    declared: &[External],
    variables: Option<Variables<'_>>,
) -> Result<yara_x::Rules, RuleError> {
    let mut compiler = yara_x::Compiler::new();
    externals::define(&mut compiler, declared).map_err(RuleError::Compile)?;
    for (name, value) in variables.into_iter().flat_map(Variables::declared) {
        compiler
            .define_global(name, value)
            .map_err(|err| RuleError::Compile(format!("cannot declare `{name}`: {err}")))?;
    }
    let mut errors = Vec::new();
    for (origin, text) in sources {
        let text = includes_from_folder_of(origin, text);
        let code = yara_x::SourceCode::from(text.as_str()).with_origin(origin.as_str());
        if let Err(err) = compiler.add_source(code) {
            errors.push(err.to_string());
        }
    }
    if !errors.is_empty() {
        let mut message = errors.join("\n");
        if let Some(hint) = externals::hint(&message) {
            message = format!("{message}\nhint: {hint}");
        }
        return Err(RuleError::Compile(message));
    }
    Ok(compiler.build())
}

/// `text` with its relative `include` paths made relative to the folder
/// of the file `origin` names (unchanged when `origin` is not a file).
/// Only the path inside each include's quotes changes, so lines stay put.
fn includes_from_folder_of(origin: &str, text: &str) -> String {
    use yara_x_parser::ast::WithSpan;
    // Most files include nothing: no second parse (nor stat) for them.
    let includes = memchr::memmem::find(text.as_bytes(), b"include").is_some();
    let folder = Path::new(origin).parent();
    let Some(folder) = folder.filter(|_| includes && Path::new(origin).is_file()) else {
        return text.to_string();
    };
    let tree = ast::AST::from(text);
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    for include in tree.items.iter().filter_map(|item| match item {
        ast::Item::Include(include) => Some(include),
        _ => None,
    }) {
        if Path::new(include.file_name).is_absolute() {
            continue;
        }
        let span = include.span().range();
        let path = folder.join(include.file_name).display().to_string();
        let quoted = path.replace('\\', "\\\\").replace('"', "\\\"");
        out.push_str(&text[copied..span.start]);
        out.push_str(&format!("include \"{quoted}\""));
        copied = span.end;
    }
    out.push_str(&text[copied..]);
    out
}

/// Stack of the thread that parses and compiles rules.
const COMPILER_STACK: usize = 256 << 20;

/// Deepest nesting of brackets a rule may have. YARA-X parses a thousand
/// levels and gives up on two thousand without an error; real rules nest
/// a few levels.
pub const MAX_NESTING: usize = 1000;

/// Refuses a source whose brackets (`(`, `[`, `{`, outside strings,
/// regexes and comments) nest deeper than [`MAX_NESTING`], naming where.
fn check_nesting(origin: &str, text: &str) -> Result<(), RuleError> {
    let bytes = text.as_bytes();
    let (mut depth, mut line, mut i) = (0usize, 1usize, 0usize);
    // Skips a string or regex body opened at `i`, closed by `close`.
    let skip_quoted = |mut i: usize, close: u8, line: &mut usize| {
        i += 1;
        while i < bytes.len() && bytes[i] != close {
            *line += usize::from(bytes[i] == b'\n');
            i += if bytes[i] == b'\\' { 2 } else { 1 };
        }
        i + 1
    };
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1)) {
            (b'/', Some(b'/')) => {
                i = memchr::memchr(b'\n', &bytes[i..]).map_or(bytes.len(), |n| i + n);
                continue;
            }
            (b'/', Some(b'*')) => {
                let end = text[i + 2..]
                    .find("*/")
                    .map_or(bytes.len(), |e| i + 2 + e + 2);
                line += text[i..end].matches('\n').count();
                i = end;
                continue;
            }
            (b'"', _) => i = skip_quoted(i, b'"', &mut line),
            (b'/', _) => i = skip_quoted(i, b'/', &mut line),
            (b'(' | b'[' | b'{', _) => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(RuleError::TooDeep {
                        origin: origin.to_string(),
                        line,
                        limit: MAX_NESTING,
                    });
                }
                i += 1;
            }
            (b')' | b']' | b'}', _) => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            (b'\n', _) => {
                line += 1;
                i += 1;
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// Checks that YARA-X's parser read `text` to its end. When its effort
/// limit runs out (deep nesting), it stops where it is, with no error, and
/// the compiler builds the rules before that point alone: what follows the
/// last item it parsed must then be nothing but blanks and comments (and
/// the closing brace of the last rule).
fn parsed_to_the_end(origin: &str, text: &str, tree: &ast::AST<'_>) -> Result<(), RuleError> {
    use yara_x_parser::ast::WithSpan;
    let end_of = |item: &ast::Item<'_>| match item {
        ast::Item::Import(import) => import.span().end(),
        ast::Item::Include(include) => include.span().end(),
        ast::Item::Rule(rule) => rule.condition.span().end(),
    };
    let parsed = tree.items.iter().map(end_of).max().unwrap_or(0);
    let rest = text.get(parsed..).unwrap_or_default();
    let after_brace = match tree.items.last() {
        Some(ast::Item::Rule(_)) => close_rule(rest).unwrap_or(rest),
        _ => rest,
    };
    let left = skip_trivia(after_brace);
    if left.is_empty() || !tree.errors().is_empty() {
        return Ok(()); // whole, or with errors the compiler reports
    }
    let at = text.len() - left.len();
    let line = text[..at].matches('\n').count() + 1;
    let rule = left
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    Err(RuleError::Unparsed {
        origin: origin.to_string(),
        line,
        rule: rule.chars().take(80).collect(),
    })
}

/// What follows the closing brace of a rule whose condition ends `rest`
/// (a condition's span leaves out its outer parentheses).
fn close_rule(rest: &str) -> Option<&str> {
    let mut rest = skip_trivia(rest);
    while let Some(after) = rest.strip_prefix(')') {
        rest = skip_trivia(after);
    }
    rest.strip_prefix('}')
}

/// `text` without its leading blanks and comments.
fn skip_trivia(mut text: &str) -> &str {
    loop {
        text = text.trim_start();
        if let Some(rest) = text.strip_prefix("//") {
            text = rest.find('\n').map_or("", |nl| &rest[nl..]);
        } else if let Some(rest) = text.strip_prefix("/*") {
            text = rest.find("*/").map_or("", |end| &rest[end + 2..]);
        } else {
            return text;
        }
    }
}

fn collect_rule_files(path: &Path, files: &mut Vec<PathBuf>) -> Result<(), RuleError> {
    let io_err = |source| RuleError::Io {
        path: path.to_path_buf(),
        source,
    };
    if !std::fs::metadata(path).map_err(io_err)?.is_dir() {
        files.push(path.to_path_buf());
        return Ok(());
    }
    let before = files.len();
    walk_rule_dir(path, files)?;
    if files.len() == before {
        return Err(RuleError::NoRuleFiles(path.to_path_buf()));
    }
    Ok(())
}

fn walk_rule_dir(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), RuleError> {
    let io_err = |source| RuleError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io_err)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(io_err)?;
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            walk_rule_dir(&entry, files)?;
        } else if matches!(
            entry.extension().and_then(|e| e.to_str()),
            Some("yar" | "yara")
        ) {
            files.push(entry);
        }
    }
    Ok(())
}

/// See [`RuleSet::fingerprint`]. External variables count (they change
/// verdicts); a set without any has the fingerprint it had before they
/// existed.
#[cfg(feature = "store")]
fn fingerprint(sources: &[(String, String)], options: &RuleOptions) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&(options.max_pattern_len as u64).to_le_bytes());
    for external in &options.externals {
        let text = format!("{}={}", external.name, external.value.describe());
        hasher.update(&(text.len() as u64).to_le_bytes());
        hasher.update(text.as_bytes());
    }
    for (_, text) in sources {
        hasher.update(&(text.len() as u64).to_le_bytes());
        hasher.update(text.as_bytes());
    }
    *hasher.finalize().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> String {
        format!(
            "rule ok {{ condition: true }}\n// a comment\nrule deep {{ condition: {}true{} }}\nrule after {{ condition: true }}\n",
            "(".repeat(depth),
            ")".repeat(depth)
        )
    }

    #[test]
    fn a_rule_nested_too_deeply_is_refused_with_its_place() {
        for depth in [MAX_NESTING, 2000, 10_000] {
            let err = RuleSet::from_source(&nested(depth), 64).unwrap_err();
            assert!(matches!(err, RuleError::TooDeep { line: 3, .. }), "{err}");
            assert!(err.to_string().contains("<string>:3"), "{err}");
        }
        // Brackets in strings, regexes and comments do not count.
        let quoted = format!(
            "rule q {{ strings: $a = \"{0}\" $b = /a{1}/ condition: /* {0} */ any of them }}",
            "(".repeat(2 * MAX_NESTING),
            "\\(".repeat(2 * MAX_NESTING)
        );
        RuleSet::from_source(&quoted, 64 << 10).unwrap();
    }

    #[test]
    fn includes_are_found_next_to_the_including_file() {
        let dir = tempfile::tempdir().unwrap();
        let rules = dir.path().join("rules");
        std::fs::create_dir_all(rules.join("sub")).unwrap();
        std::fs::write(
            rules.join("sub/common.yar"),
            "rule common { condition: true }",
        )
        .unwrap();
        std::fs::write(rules.join("sub/more.yar"), "rule more { condition: true }").unwrap();
        // `main.yar` includes `sub/common.yar`, which includes `more.yar`
        // beside itself; the current directory is elsewhere.
        std::fs::write(
            rules.join("main.yar"),
            "include \"sub/common.yar\"\nrule main { condition: common }",
        )
        .unwrap();
        std::fs::write(
            rules.join("sub/common.yar"),
            "include \"more.yar\"\nrule common { condition: more }",
        )
        .unwrap();
        let set = RuleSet::from_paths(&[rules.join("main.yar")], 64).unwrap();
        assert_eq!(set.rules().iter().count(), 3);
        assert_eq!(
            includes_from_folder_of("<string>", "include \"x.yar\""),
            "include \"x.yar\""
        );
    }

    #[test]
    fn the_deepest_rule_allowed_loads() {
        let rules = RuleSet::from_source(&nested(MAX_NESTING - 2), 64).unwrap();
        assert_eq!(rules.rules().iter().count(), 3);
    }

    #[test]
    fn a_source_the_parser_gives_up_on_is_refused_by_name() {
        let text = "rule ok { condition: true }\n\nrule deep { condition: 1 ";
        let tree = ast::AST::from(text);
        match parsed_to_the_end("f.yar", text, &tree) {
            Ok(()) => assert!(
                !tree.errors().is_empty(),
                "a syntax error, left to the compiler"
            ),
            Err(err) => assert!(err.to_string().contains("f.yar:3"), "{err}"),
        }
    }

    #[test]
    fn rules_the_parser_reads_whole_load_with_trailing_comments() {
        let rules =
            RuleSet::from_source(&format!("{}/* end */ // bye\n", nested(100)), 64).unwrap();
        assert_eq!(rules.rules().iter().count(), 3);
        let rules = RuleSet::from_source("import \"math\"\n", 64).unwrap();
        assert_eq!(rules.rules().iter().count(), 0);
    }
}
