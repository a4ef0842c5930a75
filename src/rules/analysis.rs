//! Static analysis of YARA rules for stream scanning.
//!
//! Stream scanning sees a stream's bytes a chunk at a time and evaluates
//! conditions over the matches it collected, never over the whole buffer.
//! Some rules cannot be evaluated exactly that way, and the scanner needs
//! two numbers from the rules to be exact for the others:
//!
//! * the **window** `W`: the longest match a pattern the search must find
//!   can have. A stream keeps up to the last `W` (plus context) bytes
//!   between chunks so that a match spanning chunks is found whole (see
//!   `rules::tail` for how much less it keeps). It is computed
//!   per pattern (text and hex lengths, `regex-syntax`'s maximum length of
//!   a regex, times two for `wide`, the base64 expansion), and capped by
//!   `ScannerConfig::max_pattern_len`; a pattern with no bound or above the
//!   cap makes its rule inexact.
//! * the **head** `H`: the stream prefix that those patterns, anchored by
//!   their conditions (`$a at 100`), can touch. YARA-X only looks for an
//!   anchored pattern at its anchor, so the scanner replays the head at
//!   its real offsets when it evaluates a stream whose head may hold one
//!   (see `rules::head`).
//!
//! Neither follows the patterns of an unsupported rule unless a failed gate
//! leaves them to the stream's verdict (see `rules::gates`): otherwise its
//! verdict is a whole-buffer scan of the stream's retained bytes, or false
//! where its gate failed, or undecided (see `rules::whole_data`).
//!
//! A rule is *unsupported* (its verdict may differ from a whole-buffer scan)
//! when its condition uses a module, `entrypoint`, the data functions
//! `uintN`/`intN` at an offset that is not an integer literal (or far into
//! the data) unless they read a match's own bytes (see
//! `rules::match_reads`), an anchor that is a constant expression other than a
//! literal, a pattern longer than the window, or another rule (or a global
//! rule of its namespace) that is unsupported. Unsupported rules are still
//! evaluated; their results carry `exact: false`. `filesize` and reads at
//! literal offsets are supported: the rules are compiled with them
//! rewritten into values each stream passes (see `rules::data_values`).
//!
//! The analysis works on the syntax tree from `yara-x-parser`, so it reports
//! per rule, with the pattern identifiers the author wrote.

use std::collections::{HashMap, HashSet};

use regex_syntax::hir::Hir;
use serde::Serialize;
use yara_x_parser::ast::{self, Expr, HexSubPattern, HexToken, MatchAnchor, Pattern};

use super::data_values::{is_arithmetic, is_rewritten_digest, visit, DataRead};
use super::density::DenseRule;
use super::gates::{gate_of, necessary_branch, pattern_literals, Gate, GateContext};
use super::head::{FarAnchor, HeadAnchor, HeadPlan};
use super::match_reads::{MatchReadExprs, SourceMatchReads};
use super::open_ended::{self, OpenEndedRegex};
use super::tail::{TailPattern, TailPlan};

/// Why a rule cannot be evaluated exactly by stream scanning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RuleIssue {
    /// The condition uses a module (`pe`, `hash`, `math`, ...).
    UsesModule {
        /// The module's name.
        module: String,
    },
    /// The condition uses `entrypoint`.
    UsesEntrypoint,
    /// The condition reads the data (`uint32(0)` and friends) at an offset
    /// that is not an integer literal, or past the first
    /// [`super::data_values::MAX_READ_END`] bytes (the others are rewritten
    /// into values of each stream: see `rules::data_values`).
    ReadsData {
        /// The function called.
        function: String,
    },
    /// A pattern is anchored (`at`) by a constant expression that is not a
    /// plain integer, so its anchor is not known to the analysis.
    NonLiteralAnchor,
    /// A pattern is anchored (`at N`) further into the stream than the head
    /// a stream keeps for anchored patterns, and its matches do not start
    /// with known bytes the search could check there (see [`FarAnchor`]).
    AnchorBeyondHead {
        /// The anchor.
        offset: u64,
        /// The largest anchor a head covers.
        limit: u64,
    },
    /// A pattern has no upper bound on its match length.
    UnboundedPattern {
        /// The pattern's identifier.
        pattern: String,
    },
    /// A pattern can match more bytes than the window cap.
    PatternLongerThanWindow {
        /// The pattern's identifier.
        pattern: String,
        /// Its longest match, in bytes.
        max_len: usize,
        /// The window cap (`max_pattern_len`).
        cap: usize,
    },
    /// A regex could not be analysed.
    UnanalysableRegex {
        /// The pattern's identifier.
        pattern: String,
        /// What the regex parser said.
        reason: String,
    },
    /// A regex that looks at its surroundings (`fullword`, a look-around)
    /// whose edge check (see [`super::EdgeGuard`]) could not be built:
    /// where a block's edge cuts its context, nothing would catch it.
    UnguardedRegex {
        /// The pattern's identifier.
        pattern: String,
    },
    /// An `ascii wide` text pattern whose ascii and wide forms can match at
    /// the same offset (a one-byte string, or one with NUL bytes): YARA-X
    /// keeps whichever form it verifies first, and that order depends on the
    /// surrounding data, so no replay can be sure to reproduce it.
    AmbiguousAsciiWide {
        /// The pattern's identifier.
        pattern: String,
    },
    /// The condition refers to a rule that is unsupported.
    DependsOnUnsupportedRule {
        /// The rule referred to.
        rule: String,
    },
    /// A global rule of the same namespace is unsupported, and global rules
    /// gate every rule of their namespace.
    UnsupportedGlobalRule {
        /// The global rule.
        rule: String,
    },
}

impl std::fmt::Display for RuleIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RuleIssue::UsesModule { module } => {
                write!(f, "uses module `{module}`, which cannot see a stream as a whole")
            }
            RuleIssue::UsesEntrypoint => write!(f, "uses `entrypoint`, undefined on streams"),
            RuleIssue::ReadsData { function } => {
                write!(f, "calls `{function}` at an offset that is not an integer literal up to {}, so it reads bytes the stream scanner does not keep", super::data_values::MAX_READ_END)
            }
            RuleIssue::NonLiteralAnchor => {
                write!(f, "anchors a pattern with a constant expression; write the offset as a plain integer")
            }
            RuleIssue::AnchorBeyondHead { offset, limit } => write!(
                f,
                "anchors a pattern at {offset}, beyond the {limit} bytes each stream keeps for anchored patterns, and its matches do not start with known bytes (wide, xor, base64, a regex) for the search to check there"
            ),
            RuleIssue::UnboundedPattern { pattern } => {
                write!(f, "pattern {pattern} has no bound on its length; matches longer than the window may be missed across chunks")
            }
            RuleIssue::PatternLongerThanWindow { pattern, max_len, cap } => write!(
                f,
                "pattern {pattern} can match {max_len} bytes, more than the window cap of {cap}; raise max_pattern_len"
            ),
            RuleIssue::UnanalysableRegex { pattern, reason } => {
                write!(f, "regex of pattern {pattern} could not be analysed ({reason}); its length is assumed unbounded")
            }
            RuleIssue::UnguardedRegex { pattern } => write!(
                f,
                "regex of pattern {pattern} looks at its surroundings, and the check of its matches at chunk edges could not be built (too large)"
            ),
            RuleIssue::AmbiguousAsciiWide { pattern } => write!(
                f,
                "pattern {pattern} is `ascii wide` and both forms can match at one offset; YARA-X reports either"
            ),
            RuleIssue::DependsOnUnsupportedRule { rule } => {
                write!(f, "depends on rule `{rule}`, which is not exact on streams")
            }
            RuleIssue::UnsupportedGlobalRule { rule } => {
                write!(f, "global rule `{rule}` of its namespace is not exact on streams")
            }
        }
    }
}

/// What the analysis learnt about one pattern.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PatternReport {
    /// The identifier as written (`$a`, or `$` for anonymous patterns).
    pub identifier: String,
    /// Longest possible match in bytes; `None` when unbounded.
    pub max_len: Option<usize>,
    /// Whether a match depends on the bytes around it (`fullword`, regex
    /// anchors and word boundaries, base64).
    pub context_sensitive: bool,
    /// A regex with no longest match of its own, whose matches YARA-X
    /// bounds (`max_len` is that bound) and the search follows walk by
    /// walk (see `rules::open_ended`): it takes no part in the window.
    pub open_ended: bool,
}

/// What the analysis learnt about one rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleReport {
    /// The rule's namespace.
    pub namespace: String,
    /// The rule's identifier.
    pub identifier: String,
    /// Where the rule comes from (a file path, or `<string>`).
    pub origin: String,
    /// True when stream verdicts of this rule equal a whole-buffer scan.
    pub supported: bool,
    /// Why it is not supported (empty when it is).
    pub issues: Vec<RuleIssue>,
    /// Its patterns, in declaration order.
    pub patterns: Vec<PatternReport>,
    /// Largest literal `at` anchor used by its condition, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_anchor: Option<u64>,
    /// For a rule that is not stream-exact (a *whole-data* rule, evaluated
    /// by a whole-buffer scan of the bytes its stream retained): what a
    /// stream must satisfy early for it to match (see [`Gate`]). `None`:
    /// no gate, every chunk stream retains its bytes for it up to the cap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gate: Option<Gate>,
    /// What holds wherever the rule does (see `rules::preconditions`): a
    /// stream that fails it cannot match the rule, so the matches of its
    /// patterns there are dropped. `None`: nothing known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub precondition: Option<Gate>,
    /// For a stream-exact rule whose patterns match densely (see
    /// `rules::density`): their matches per KiB of the sample, rounded.
    /// Chunk streams retain their bytes for it, up to the retention caps,
    /// and are scanned whole at their end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dense: Option<u32>,
    #[serde(skip)]
    is_global: bool,
    #[serde(skip)]
    rule_refs: Vec<String>,
    /// Its patterns anchored at literal offsets up to [`MAX_ANCHOR`].
    #[serde(skip)]
    anchors: Vec<HeadAnchor>,
    /// Its patterns anchored past [`MAX_ANCHOR`], which the search checks
    /// (see [`FarAnchor`]).
    #[serde(skip)]
    far_anchors: Vec<HeadAnchor>,
}

/// The analysis of a whole rule set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleAnalysis {
    /// One report per rule, in source order.
    pub rules: Vec<RuleReport>,
    /// The window `W`: longest match the scanner finds across chunks.
    pub window: usize,
    /// The head `H`: stream prefix replayed for anchored patterns (0 when no
    /// pattern is anchored).
    pub head_len: usize,
    /// The anchored patterns, which say whether a head needs its replay.
    #[serde(skip)]
    pub head: HeadPlan,
}

/// How many rules of a set fall in each class (see [`RuleAnalysis::classes`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RuleClasses {
    /// Rules whose stream verdicts are exact as the bytes go.
    pub stream_exact: usize,
    /// Of those, the dense ones (see `rules::density`): chunk streams
    /// retain their bytes for them, up to the retention caps.
    pub dense: usize,
    /// Whole-data rules with a gate: only streams that pass it keep bytes.
    pub whole_data_gated: usize,
    /// Whole-data rules without a gate: every chunk stream keeps its bytes
    /// for them, up to the retention cap.
    pub whole_data_ungated: usize,
}

impl std::fmt::Display for RuleClasses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} rules: {} stream-exact",
            self.stream_exact + self.whole_data_gated + self.whole_data_ungated,
            self.stream_exact,
        )?;
        if self.dense > 0 {
            write!(f, " ({} of them dense)", self.dense)?;
        }
        write!(
            f,
            ", {} whole-data with a gate, {} whole-data without a gate",
            self.whole_data_gated, self.whole_data_ungated
        )?;
        let retained_for = match (self.dense > 0, self.whole_data_ungated > 0) {
            (true, true) => "the dense rules and those without a gate",
            (true, false) => "the dense rules",
            (false, true) => "those without a gate",
            (false, false) => return Ok(()),
        };
        write!(
            f,
            " (every chunk stream retains its bytes for {retained_for}, up to the caps)"
        )
    }
}

impl RuleAnalysis {
    /// How many rules fall in each class.
    pub fn classes(&self) -> RuleClasses {
        let count = |f: &dyn Fn(&RuleReport) -> bool| self.rules.iter().filter(|r| f(r)).count();
        RuleClasses {
            stream_exact: count(&|r| r.supported),
            dense: count(&|r| r.supported && r.dense.is_some()),
            whole_data_gated: count(&|r| !r.supported && r.gate.is_some()),
            whole_data_ungated: count(&|r| !r.supported && r.gate.is_none()),
        }
    }

    /// Analyses parsed sources: `(origin, syntax tree)` pairs, all in the
    /// default namespace. `cap` is the window cap.
    pub fn from_asts(sources: &[(String, ast::AST<'_>)], cap: usize) -> RuleAnalysis {
        let trees: Vec<_> = sources.iter().map(|(_, tree)| tree).collect();
        Self::from_asts_with(sources, cap, &MatchReadExprs::of(&trees))
    }

    /// [`Self::from_asts`], where the `for any` expressions of
    /// `match_reads` are supported (see `rules::match_reads`).
    pub fn from_asts_with(
        sources: &[(String, ast::AST<'_>)],
        cap: usize,
        match_reads: &MatchReadExprs,
    ) -> RuleAnalysis {
        let modules: HashSet<&str> = sources
            .iter()
            .flat_map(|(_, tree)| tree.imports().map(|i| i.module_name))
            .collect();
        let asts = || {
            sources
                .iter()
                .flat_map(|(origin, tree)| tree.rules().map(move |r| (origin, r)))
        };
        let modules_ref = &modules;
        let mut rules: Vec<RuleReport> = sources
            .iter()
            .enumerate()
            .flat_map(|(index, (origin, tree))| {
                let match_reads = match_reads.of_source(index);
                tree.rules()
                    .map(move |rule| analyse_rule(origin, rule, (modules_ref, match_reads), cap))
            })
            .collect();
        propagate_unsupported(&mut rules, &[]);
        let whole_data: HashSet<String> = rules
            .iter()
            .filter(|r| !r.supported)
            .map(|r| r.identifier.clone())
            .collect();
        let mut gates = HashMap::new();
        for (report, (_, rule)) in rules.iter_mut().zip(asts()) {
            let gate = gate_for(report, rule, &modules, (&whole_data, &gates));
            if !report.supported {
                report.gate = gate.clone();
            }
            if !report.supported || gate.is_some() {
                gates.insert(report.identifier.clone(), gate);
            }
        }
        add_preconditions(&mut rules, sources);
        // The rules whose verdicts may come from what the search finds.
        let searched = || rules.iter().filter(|r| r.is_searched());
        let longest = searched()
            .flat_map(|r| &r.patterns)
            .filter(|p| !p.open_ended)
            .map(|p| p.max_len.unwrap_or(usize::MAX))
            .max()
            .unwrap_or(0);
        let window = longest.min(cap).max(1);
        let far = searched().flat_map(|r| {
            r.far_anchors.iter().map(|anchor| FarAnchor {
                anchor: anchor.clone(),
                rule: r.identifier.clone(),
            })
        });
        let head = HeadPlan::new(searched().flat_map(|r| r.anchors.clone()).collect())
            .with_far(far.collect());
        RuleAnalysis {
            rules,
            window,
            head_len: head.head_len(window),
            head,
        }
    }
}

impl RuleAnalysis {
    /// Marks the rules that depend on *foreign* rules (compiled by YARA-X
    /// but not analysed, such as those of included files: `(identifier,
    /// is_global)`) unsupported, directly or transitively: nothing is
    /// known of what a foreign rule needs. A foreign global rule applies
    /// to every rule. Rules so marked get no gate (every chunk stream
    /// retains its bytes for them, up to the cap).
    pub fn depend_on_foreign(&mut self, foreign: &[(String, bool)]) {
        propagate_unsupported(&mut self.rules, foreign);
    }

    /// Marks the stream-exact rules among `dense` as dense.
    pub fn mark_dense(&mut self, dense: &[DenseRule]) {
        for d in dense {
            let report = self.rules.iter_mut().find(|r| {
                r.supported && r.namespace == d.namespace && r.identifier == d.identifier
            });
            if let Some(report) = report {
                report.dense = Some(d.matches_per_kib.round() as u32);
            }
        }
    }

    /// What chunk streams keep as their tail for these rules (`sources`,
    /// the syntax trees they were analysed from): see [`TailPlan`].
    pub fn tail_plan(&self, sources: &[(String, ast::AST<'_>)]) -> TailPlan {
        let window = self.window;
        let trees = sources.iter().flat_map(|(_, tree)| tree.rules());
        let mut searched = Vec::new();
        let mut walked = Vec::new();
        let mut reaches = HashMap::new();
        for (report, rule) in self.rules.iter().zip(trees) {
            let reach = |p: &PatternReport| match p.open_ended {
                true => p.max_len.unwrap_or(open_ended::MAX_WIDE_REACH),
                false => p.max_len.unwrap_or(window).min(window),
            };
            let declared = rule.patterns.iter().flatten().zip(&report.patterns);
            if report.is_searched() {
                for (index, (pattern, r)) in declared.enumerate() {
                    match r.open_ended.then(|| open_ended_regex(pattern)).flatten() {
                        Some(regex) => walked.push((report.identifier.clone(), index, regex)),
                        None => searched.push(TailPattern::of(pattern, reach(r))),
                    }
                }
            }
            let patterns = report.patterns.iter().map(|r| reach(r) as u32).collect();
            reaches.insert(report.identifier.clone(), patterns);
        }
        TailPlan::new(window, &searched, reaches).with_open_ended(walked)
    }
}

impl RuleReport {
    /// Whether the rule's verdicts may come from what the search finds:
    /// it is stream-exact, or a whole-data rule whose failed gate leaves
    /// its patterns to the stream's verdict. The others' verdicts are
    /// whole-buffer scans or undecided (no gate), or false where their
    /// gate failed (a pattern the search may miss: see `gate_for`).
    fn is_searched(&self) -> bool {
        self.supported || (self.gate.is_some() && features_only(&self.issues))
    }
}

/// The largest `at` anchor a head covers: every stream of a rule set with
/// anchored patterns keeps (and replays) its first bytes up to the anchor.
/// Past it, the search checks the anchor where a stream passes it, when
/// its matches start with known bytes (see [`FarAnchor`]).
pub const MAX_ANCHOR: u64 = 64 * 1024;

fn analyse_rule(
    origin: &str,
    rule: &ast::Rule<'_>,
    (modules, match_reads): (&HashSet<&str>, SourceMatchReads<'_>),
    cap: usize,
) -> RuleReport {
    let mut issues = Vec::new();
    let patterns: Vec<PatternReport> = rule
        .patterns
        .iter()
        .flatten()
        .map(|p| pattern_report(p, cap, &mut issues))
        .collect();
    let mut walk = ConditionWalk {
        modules,
        match_reads,
        issues: &mut issues,
        anchors: Vec::new(),
        rule_refs: Vec::new(),
    };
    walk.expr(&rule.condition);
    let ConditionWalk {
        anchors: anchored,
        rule_refs,
        ..
    } = walk;
    issues.extend(anchored_open_ended(rule, &patterns, &anchored));
    // Every stream keeps its head for anchored patterns: keep it small.
    // Past it, the search checks literals where the stream passes them.
    let (mut far_anchors, mut anchors): (Vec<_>, Vec<_>) = head_anchors(rule, &patterns, &anchored)
        .into_iter()
        .partition(|a| a.offset > MAX_ANCHOR);
    let unchecked = far_anchors.iter().filter(|a| !FarAnchor::checkable(a, cap));
    if let Some(offset) = unchecked.map(|a| a.offset).max() {
        issues.push(RuleIssue::AnchorBeyondHead {
            offset,
            limit: MAX_ANCHOR,
        });
        anchors.clear();
        far_anchors.clear();
    }
    let max_anchor = anchors.iter().map(|a| a.offset).max();
    issues.dedup();
    RuleReport {
        namespace: "default".to_string(),
        identifier: rule.identifier.name.to_string(),
        origin: origin.to_string(),
        supported: issues.is_empty(),
        issues,
        patterns,
        max_anchor,
        gate: None,
        precondition: None,
        dense: None,
        is_global: rule.flags.contains(ast::RuleFlags::Global),
        rule_refs,
        anchors,
        far_anchors,
    }
}

/// An open-ended pattern under an `at` anchor is unbounded as far as the
/// head goes (it keeps a rule's first bytes up to its anchors' reach):
/// its rule stays whole-data.
fn anchored_open_ended(
    rule: &ast::Rule<'_>,
    patterns: &[PatternReport],
    anchors: &[(u64, AnchoredPatterns)],
) -> Vec<RuleIssue> {
    let unknown = anchors
        .iter()
        .any(|(_, a)| matches!(a, AnchoredPatterns::Unknown));
    let declared = rule.patterns.iter().flatten().zip(patterns);
    declared
        .filter(|(pattern, report)| {
            let name = pattern.identifier().name;
            report.open_ended && (unknown || anchors.iter().any(|(_, a)| a.names(name)))
        })
        .map(|(_, report)| RuleIssue::UnboundedPattern {
            pattern: report.identifier.clone(),
        })
        .collect()
}

/// The head anchors of a rule's `at` anchors: one per pattern each names
/// (`patterns` are the rule's reports, in declaration order).
fn head_anchors(
    rule: &ast::Rule<'_>,
    patterns: &[PatternReport],
    anchors: &[(u64, AnchoredPatterns)],
) -> Vec<HeadAnchor> {
    let declared = || rule.patterns.iter().flatten().zip(patterns);
    let mut resolved = Vec::new();
    for (offset, anchored) in anchors {
        let before = resolved.len();
        resolved.extend(
            declared()
                .filter(|(pattern, _)| anchored.names(pattern.identifier().name))
                .map(|(pattern, report)| HeadAnchor::of(pattern, *offset, report.max_len)),
        );
        if resolved.len() == before {
            resolved.push(HeadAnchor::unknown(*offset));
        }
    }
    resolved
}

/// The patterns an `at` anchor applies to.
#[derive(Debug)]
enum AnchoredPatterns {
    /// `$a at K`: one named pattern.
    One(String),
    /// `any of ($a, $b*) at K`: identifiers, and whether each is a prefix
    /// (`$b*`); `them` is the prefix `$`.
    Set(Vec<(String, bool)>),
    /// `$ at K` in a `for .. of` body: not known here.
    Unknown,
}

impl AnchoredPatterns {
    fn of_match(identifier: &str) -> AnchoredPatterns {
        match identifier {
            "$" => AnchoredPatterns::Unknown,
            name => AnchoredPatterns::One(name.to_string()),
        }
    }

    fn of_set(set: &ast::OfItems<'_>) -> AnchoredPatterns {
        match set {
            ast::OfItems::PatternSet(ast::PatternSet::Them { .. }) => {
                AnchoredPatterns::Set(vec![("$".to_string(), true)])
            }
            ast::OfItems::PatternSet(ast::PatternSet::Set(items)) => AnchoredPatterns::Set(
                items
                    .iter()
                    .map(|item| (item.identifier.to_string(), item.wildcard))
                    .collect(),
            ),
            ast::OfItems::BoolExprTuple(_) => AnchoredPatterns::Unknown,
        }
    }

    /// Whether the pattern declared as `identifier` is one of these.
    fn names(&self, identifier: &str) -> bool {
        match self {
            AnchoredPatterns::One(name) => name == identifier,
            AnchoredPatterns::Set(items) => items.iter().any(|(name, prefix)| match prefix {
                true => identifier.starts_with(name.as_str()),
                false => name == identifier,
            }),
            AnchoredPatterns::Unknown => false,
        }
    }
}

/// The gate of a whole-data rule (see `rules::gates`): subexpressions free
/// of whole-data features (and of references to whole-data rules) are
/// evaluated exactly by the stream verdict, unless the rule has a pattern
/// the stream scanner may miss or mis-place (then only a gate that makes
/// the rule false holds). For a stream-exact rule: the one branch its
/// conjuncts give (for the whole-data rules that refer to it), if any.
fn gate_for(
    report: &RuleReport,
    rule: &ast::Rule<'_>,
    modules: &HashSet<&str>,
    (whole_data, gates): (&HashSet<String>, &HashMap<String, Option<Gate>>),
) -> Option<Gate> {
    let features_only = features_only(&report.issues);
    // Match reads count as whole-data here: a gate's verdict comes from
    // spans the search may not have settled match reads in.
    let no_match_reads = MatchReadExprs::default();
    let no_match_reads = no_match_reads.of_source(0);
    let is_free = |expr: &Expr<'_>| {
        let mut issues = Vec::new();
        let mut walk = ConditionWalk {
            modules,
            match_reads: no_match_reads,
            issues: &mut issues,
            anchors: Vec::new(),
            rule_refs: Vec::new(),
        };
        walk.expr(expr);
        let refs = std::mem::take(&mut walk.rule_refs);
        features_only && issues.is_empty() && refs.iter().all(|r| !whole_data.contains(r))
    };
    let literals = pattern_literals(rule);
    let context = GateContext {
        is_free: &is_free,
        known: gates,
        literals: &literals,
    };
    match report.supported {
        true => necessary_branch(&rule.condition, &context),
        false => gate_of(&rule.condition, &context),
    }
}

/// Gives each rule its precondition: the header tests and size limits of
/// its conjuncts, and the preconditions of the rules it names there.
fn add_preconditions(rules: &mut [RuleReport], sources: &[(String, ast::AST<'_>)]) {
    let trees = sources.iter().flat_map(|(_, tree)| tree.rules());
    let mut known: HashMap<String, Option<Gate>> = HashMap::new();
    let no_free = |_: &Expr<'_>| false;
    for (report, rule) in rules.iter_mut().zip(trees) {
        let literals = pattern_literals(rule);
        let context = GateContext {
            is_free: &no_free,
            known: &known,
            literals: &literals,
        };
        report.precondition = necessary_branch(&rule.condition, &context);
        known.insert(report.identifier.clone(), report.precondition.clone());
    }
}

/// Whether a rule is unsupported only for the features it uses (modules,
/// `entrypoint`, computed reads, other such rules), not for a pattern the
/// stream scanner may miss or mis-place: then a failed gate leaves its
/// patterns to the stream's verdict, which finds them exactly.
fn features_only(issues: &[RuleIssue]) -> bool {
    issues.iter().all(|issue| {
        matches!(
            issue,
            RuleIssue::UsesModule { .. }
                | RuleIssue::UsesEntrypoint
                | RuleIssue::ReadsData { .. }
                | RuleIssue::DependsOnUnsupportedRule { .. }
        )
    })
}

/// Marks rules that depend on unsupported rules (directly, transitively, or
/// through a global rule of their namespace) as unsupported; `foreign`
/// rules (`(identifier, is_global)`, not among `rules`) count as
/// unsupported.
fn propagate_unsupported(rules: &mut [RuleReport], foreign: &[(String, bool)]) {
    loop {
        let bad: HashMap<String, bool> = rules
            .iter()
            .filter(|r| !r.supported)
            .map(|r| (r.identifier.clone(), r.is_global))
            .chain(foreign.iter().cloned())
            .collect();
        let mut changed = false;
        for rule in rules.iter_mut().filter(|r| r.supported) {
            let dep = rule
                .rule_refs
                .iter()
                .find(|d| bad.contains_key(*d))
                .cloned();
            let global = bad
                .iter()
                .find(|(name, global)| **global && **name != rule.identifier);
            if let Some(dep) = dep {
                rule.issues
                    .push(RuleIssue::DependsOnUnsupportedRule { rule: dep });
            } else if let Some((name, _)) = global {
                rule.issues
                    .push(RuleIssue::UnsupportedGlobalRule { rule: name.clone() });
            } else {
                continue;
            }
            rule.supported = false;
            changed = true;
        }
        if !changed {
            return;
        }
    }
}

fn pattern_report(pattern: &Pattern<'_>, cap: usize, issues: &mut Vec<RuleIssue>) -> PatternReport {
    let identifier = pattern.identifier().name.to_string();
    let modifiers = pattern.modifiers();
    let (base_len, mut context_sensitive) = match pattern {
        Pattern::Text(text) => {
            let value = &text.text.value;
            if modifiers.wide().is_some()
                && modifiers.ascii().is_some()
                && (value.len() == 1 || value.contains(&0))
            {
                issues.push(RuleIssue::AmbiguousAsciiWide {
                    pattern: identifier.clone(),
                });
            }
            (Some(value.len()), false)
        }
        Pattern::Hex(hex) => (hex_len_range(&hex.sub_patterns).1, false),
        Pattern::Regexp(regexp) => match regex_bounds(&regexp.regexp) {
            Ok(bounds) => bounds,
            Err(reason) => {
                issues.push(RuleIssue::UnanalysableRegex {
                    pattern: identifier.clone(),
                    reason,
                });
                (None, true)
            }
        },
    };
    let fullword = modifiers.fullword().is_some();
    let looks = context_sensitive;
    context_sensitive |=
        fullword || modifiers.base64().is_some() || modifiers.base64wide().is_some();
    // Look-arounds do not stop a walk (it treats them as satisfied), but
    // `fullword` does: YARA-X checks it on one match per offset, which a
    // block's end may cut short (see `rules::edges::Truncation`).
    let open_ended = base_len.is_none() && !fullword && is_open_ended(pattern);
    let max_len = match open_ended {
        true => Some(open_ended::max_reach(modifiers.wide().is_some())),
        false => base_len.map(|len| modified_len(len, modifiers)),
    };
    if let Pattern::Regexp(regexp) = pattern {
        let analysed = base_len.is_some() || open_ended;
        if (fullword || looks)
            && analysed
            && !super::edges::can_guard(&regexp.regexp, modifiers, cap)
        {
            issues.push(RuleIssue::UnguardedRegex {
                pattern: identifier.clone(),
            });
        }
    }
    match max_len {
        Some(_) if open_ended => {}
        None => issues.push(RuleIssue::UnboundedPattern {
            pattern: identifier.clone(),
        }),
        Some(len) if len > cap => issues.push(RuleIssue::PatternLongerThanWindow {
            pattern: identifier.clone(),
            max_len: len,
            cap,
        }),
        Some(_) => {}
    }
    PatternReport {
        identifier,
        max_len,
        context_sensitive,
        open_ended,
    }
}

/// Whether `pattern` is a regex that the search can follow walk by walk
/// (see `rules::open_ended`): never chained by YARA-X, and with DFAs of a
/// reasonable size (both forms of a `wide ascii` one in one DFA). Its
/// look-arounds are walked as if satisfied: a walk then lives at least as
/// long as any match YARA-X may find. (`fullword` is ruled out by the
/// caller.)
fn is_open_ended(pattern: &Pattern<'_>) -> bool {
    open_ended_regex(pattern).is_some()
}

/// The walks of `pattern` when it is an open-ended regex the search can
/// follow (see [`is_open_ended`]).
fn open_ended_regex(pattern: &Pattern<'_>) -> Option<OpenEndedRegex> {
    let Pattern::Regexp(regexp) = pattern else {
        return None;
    };
    let modifiers = pattern.modifiers();
    let hir = super::edges::parse(&regexp.regexp, modifiers.nocase().is_some())?;
    let hir = super::edges::without_looks(&hir);
    if open_ended::may_be_chained(&hir) {
        return None;
    }
    // A walk is alive while the walk of either form is.
    let forms = match (modifiers.wide().is_some(), modifiers.ascii().is_some()) {
        (false, _) => hir,
        (true, false) => open_ended::widen(&hir),
        (true, true) => Hir::alternation(vec![open_ended::widen(&hir), hir]),
    };
    OpenEndedRegex::new(&forms, open_ended::max_reach(modifiers.wide().is_some()))
}

/// Longest match of a pattern whose unmodified form matches `len` bytes.
fn modified_len(len: usize, modifiers: &ast::PatternModifiers<'_>) -> usize {
    // base64 of n bytes takes at most 4 * ceil(n / 3) characters; YARA-X
    // drops the characters that depend on neighbouring bytes, so this bounds
    // every variant.
    let base64 = 4 * len.div_ceil(3) + 4;
    let mut longest = len;
    if modifiers.wide().is_some() {
        longest = longest.max(2 * len);
    }
    if modifiers.base64().is_some() {
        longest = longest.max(base64);
    }
    if modifiers.base64wide().is_some() {
        longest = longest.max(2 * base64);
    }
    longest
}

/// The shortest and the longest match of a hex pattern's tokens (`None`:
/// unbounded). A jump matches from its start to its end, an alternative as
/// its shortest and its longest branch.
pub(super) fn hex_len_range(tokens: &HexSubPattern) -> (usize, Option<usize>) {
    tokens.iter().fold((0, Some(0)), |(min, max), token| {
        let (lo, hi) = match token {
            HexToken::Byte(_) | HexToken::NotByte(_) => (1, Some(1)),
            HexToken::Jump(jump) => (
                jump.start.unwrap_or(0) as usize,
                jump.end.map(|end| end as usize),
            ),
            HexToken::Alternative(alt) => {
                let branches: Vec<_> = alt.alternatives.iter().map(hex_len_range).collect();
                let shortest = branches.iter().map(|b| b.0).min().unwrap_or(0);
                let longest = branches.iter().try_fold(0, |m, b| Some(m.max(b.1?)));
                (shortest, longest)
            }
        };
        (min + lo, max.zip(hi).map(|(a, b)| a + b))
    })
}

/// Longest match of a regex (`None`: unbounded) and whether it looks at its
/// surroundings (`^`, `$`, `\b`, `\B`).
fn regex_bounds(regexp: &ast::Regexp<'_>) -> Result<(Option<usize>, bool), String> {
    let hir = super::edges::parse_or_explain(regexp, false)?;
    let props = hir.properties();
    Ok((props.maximum_len(), !props.look_set().is_empty()))
}

/// Modules whose values never depend on the scanned bytes, so a stream's
/// verdict (a block scan) gets what a whole-buffer scan gets: `cuckoo`
/// reads only the module metadata a scan is given (yaraflow gives none),
/// `string` and `time` compute from their arguments and the clock, and
/// `console`'s functions log and are true. (Read in yara-x 1.22.1's
/// `src/modules`.)
const DATA_FREE_MODULES: &[&str] = &["console", "cuckoo", "string", "time"];

/// Walks a condition, collecting issues, anchors and rule references.
struct ConditionWalk<'a, 'm> {
    modules: &'a HashSet<&'m str>,
    /// The `for any` expressions that read only their matches' bytes.
    match_reads: SourceMatchReads<'a>,
    issues: &'a mut Vec<RuleIssue>,
    /// Literal `at` anchors, with the patterns each applies to.
    anchors: Vec<(u64, AnchoredPatterns)>,
    rule_refs: Vec<String>,
}

impl ConditionWalk<'_, '_> {
    fn expr(&mut self, expr: &Expr<'_>) {
        visit(expr, &mut |e| self.note(e));
    }

    /// Notes what `expr` itself uses; whether the walk goes on under it
    /// (`visit` reaches every operand, anchor, range and quantifier).
    fn note(&mut self, expr: &Expr<'_>) -> bool {
        match expr {
            // Rewritten into values of each stream (`rules::data_values`).
            Expr::Filesize { .. } => false,
            expr if DataRead::rewritten(expr).is_some() => false,
            expr if is_rewritten_digest(expr) => false,
            // Evaluated by the search on each match (`rules::match_reads`).
            Expr::ForIn(for_in) if self.match_reads.contains(for_in) => false,
            Expr::Entrypoint { .. } => {
                self.issues.push(RuleIssue::UsesEntrypoint);
                false
            }
            Expr::Ident(ident) => {
                self.ident(ident.name);
                false
            }
            Expr::FuncCall(call)
                if call.object.is_none() && DataRead::named(call.identifier.name, 0).is_some() =>
            {
                self.issues.push(RuleIssue::ReadsData {
                    function: call.identifier.name.to_string(),
                });
                false
            }
            Expr::PatternMatch(m) => {
                let anchored = || AnchoredPatterns::of_match(m.identifier.name);
                self.anchor(m.anchor.as_ref(), anchored);
                true
            }
            Expr::Of(of) => {
                self.anchor(of.anchor.as_ref(), || AnchoredPatterns::of_set(&of.items));
                true
            }
            Expr::FieldAccess(access) => {
                // Only the first operand names something global (a module or
                // a rule); the rest are fields.
                self.expr(access.first());
                false
            }
            _ => true,
        }
    }

    fn ident(&mut self, name: &str) {
        if self.modules.contains(name) {
            // A module that reads no data gives a stream's verdict what it
            // gives a whole-buffer scan.
            if !DATA_FREE_MODULES.contains(&name) {
                self.issues.push(RuleIssue::UsesModule {
                    module: name.to_string(),
                });
            }
        } else {
            self.rule_refs.push(name.to_string());
        }
    }

    /// Notes an `at` anchor of the patterns `anchored` gives (its
    /// expression and an `in` range are walked as operands).
    fn anchor(
        &mut self,
        anchor: Option<&MatchAnchor<'_>>,
        anchored: impl FnOnce() -> AnchoredPatterns,
    ) {
        let Some(MatchAnchor::At(at)) = anchor else {
            return;
        };
        match &at.expr {
            Expr::LiteralInteger(int) => {
                let offset = int.value.max(0) as u64;
                self.anchors.push((offset, anchored()));
            }
            expr if is_constant(expr) => self.issues.push(RuleIssue::NonLiteralAnchor),
            _ => {}
        }
    }
}

/// Whether an expression is built from literals only, so YARA-X folds it to
/// a constant.
fn is_constant(expr: &Expr<'_>) -> bool {
    match expr {
        Expr::LiteralInteger(_) | Expr::LiteralFloat(_) => true,
        expr if is_arithmetic(expr) => expr.children().all(is_constant),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn analyse(src: &str) -> RuleAnalysis {
        let tree = ast::AST::from(src);
        assert!(tree.errors().is_empty(), "{:?}", tree.errors());
        RuleAnalysis::from_asts(&[("<test>".to_string(), tree)], 1024)
    }

    #[test]
    fn hex_patterns_span_their_jumps_and_alternatives() {
        let range = |hex: &str| {
            let src = format!("rule h {{ strings: $a = {{ {hex} }} condition: $a }}");
            let tree = ast::AST::from(src.as_str());
            let rule = tree.rules().next().unwrap();
            match &rule.patterns.as_ref().unwrap()[0] {
                Pattern::Hex(hex) => hex_len_range(&hex.sub_patterns),
                other => panic!("not hex: {other:?}"),
            }
        };
        assert_eq!(range("61 62 ?? 63"), (4, Some(4)));
        assert_eq!(range("61 [2-4] ( 62 | 63 64 ) ?? 65"), (6, Some(9)));
        assert_eq!(range("61 [2-] 62"), (4, None));
        assert_eq!(range("61 ( 62 | 63 [1-] 64 ) 65"), (3, None));
    }

    #[test]
    fn rules_that_depend_on_foreign_rules_are_unsupported() {
        let supported = |a: &RuleAnalysis| a.rules.iter().map(|r| r.supported).collect::<Vec<_>>();
        let src = "rule a { condition: b } rule c { condition: a } rule d { condition: true }";
        let mut a = analyse(src);
        assert_eq!(supported(&a), [true, true, true]);
        a.depend_on_foreign(&[("b".to_string(), false)]);
        assert_eq!(supported(&a), [false, false, true], "c through a");
        let mut a = analyse(src);
        a.depend_on_foreign(&[("g".to_string(), true)]);
        assert_eq!(
            supported(&a),
            [false, false, false],
            "a foreign global rule"
        );
    }

    #[test]
    fn window_is_the_longest_pattern() {
        let a = analyse(
            r#"rule r { strings: $a = "abcd" $b = { 01 [2-10] 02 ( 03 04 | 05 ) } $c = "xy" wide
               condition: any of them }"#,
        );
        assert_eq!(
            a.rules[0]
                .patterns
                .iter()
                .map(|p| p.max_len)
                .collect::<Vec<_>>(),
            vec![Some(4), Some(14), Some(4)]
        );
        assert_eq!(a.window, 14);
        assert!(a.rules[0].supported);
    }

    #[test]
    fn regex_length_and_context() {
        let a =
            analyse(r#"rule r { strings: $a = /ab{2,5}c/ $b = /\bfoo$/ condition: any of them }"#);
        let p = &a.rules[0].patterns;
        assert_eq!((p[0].max_len, p[0].context_sensitive), (Some(7), false));
        assert_eq!((p[1].max_len, p[1].context_sensitive), (Some(3), true));
    }

    #[test]
    fn unbounded_patterns_make_their_rules_unsupported_and_leave_the_window() {
        // YARA-X chains `/a.*b/s` (its `.*` is a gap of any bytes): no bound.
        let a = analyse(
            r#"rule r { strings: $a = /a.*b/s condition: $a } rule s { strings: $s = "xy" condition: $s }"#,
        );
        // The search finds matches for supported rules only.
        assert_eq!(a.window, 2);
        assert!(!a.rules[0].supported);
        assert_eq!(
            a.rules[0].issues,
            vec![RuleIssue::UnboundedPattern {
                pattern: "$a".into()
            }]
        );
        assert!(a.rules[1].supported);
    }

    #[test]
    fn open_ended_regexes_are_exact_and_leave_the_window() {
        let a = analyse(
            r#"rule r { strings: $a = /a.*b/ $s = "xyz" condition: $a and $s }
            rule in_wide { strings: $w = /a.*b/ wide ascii condition: $w }
            rule looks { strings: $l = /(^|\s)a[^x]+b$/ condition: $l }
            rule word { strings: $f = /a[^x]+b/ fullword condition: $f }
            rule anchored { strings: $n = /a[^x]+b/ condition: $n at 10 }"#,
        );
        let a_ = &a.rules[0].patterns[0];
        assert!(a.rules[0].supported, "{:?}", a.rules[0].issues);
        assert_eq!(
            (a_.max_len, a_.open_ended),
            (Some(open_ended::MAX_REACH), true)
        );
        assert_eq!(a.window, 3);
        // A wide form reaches twice as far.
        let wide = &a.rules[1].patterns[0];
        assert!(a.rules[1].supported, "{:?}", a.rules[1].issues);
        assert_eq!(
            (wide.max_len, wide.open_ended),
            (Some(open_ended::MAX_WIDE_REACH), true)
        );
        // Look-arounds are walked as if satisfied.
        let looks = &a.rules[2].patterns[0];
        assert!(a.rules[2].supported, "{:?}", a.rules[2].issues);
        assert_eq!(
            (looks.max_len, looks.open_ended, looks.context_sensitive),
            (Some(open_ended::MAX_REACH), true, true)
        );
        // `fullword` and anchors are left unbounded.
        for rule in &a.rules[3..] {
            assert!(!rule.supported, "{}", rule.identifier);
            assert!(!rule.patterns[0].open_ended || rule.identifier == "anchored");
            assert!(matches!(
                rule.issues[..],
                [RuleIssue::UnboundedPattern { .. }]
            ));
        }
    }

    #[test]
    fn modules_and_data_functions_at_computed_offsets_are_unsupported() {
        let a = analyse(
            r#"import "pe"
            rule m { condition: pe.is_pe }
            rule f { condition: filesize > 10 and uint16(0) == 0x5a4d and int8be(4093) == 1 }
            rule u { condition: uint32(uint32(0x3c)) == 0x4550 }
            rule far { condition: uint16(4095) == 1 }
            rule d { condition: m }
            rule ok { strings: $a = "a" condition: $a at 100 and #a > 1 }"#,
        );
        let issues: Vec<_> = a.rules.iter().map(|r| r.issues.clone()).collect();
        assert_eq!(
            issues[0],
            vec![RuleIssue::UsesModule {
                module: "pe".into()
            }]
        );
        assert_eq!(issues[1], vec![]);
        assert_eq!(
            issues[2],
            vec![RuleIssue::ReadsData {
                function: "uint32".into()
            }]
        );
        assert_eq!(
            issues[3],
            vec![RuleIssue::ReadsData {
                function: "uint16".into()
            }]
        );
        assert_eq!(
            issues[4],
            vec![RuleIssue::DependsOnUnsupportedRule { rule: "m".into() }]
        );
        assert!(a.rules[5].supported);
        // `$a at 100`, one byte long.
        assert_eq!(a.head_len, 101);
    }

    #[test]
    fn modules_that_read_no_data_keep_rules_stream_exact() {
        let a = analyse(
            r#"import "cuckoo" import "string" import "time" import "console" import "pe"
            rule c { strings: $a = "a" condition: $a or cuckoo.sync.mutex(/m/) }
            rule s { condition: string.length("ab") == 2 and time.now() > 0 and console.log("x") }
            rule p { strings: $a = "a" condition: $a or pe.is_dll() }"#,
        );
        let supported: Vec<bool> = a.rules.iter().map(|r| r.supported).collect();
        assert_eq!(supported, [true, true, false]);
        assert_eq!(a.rules[0].issues, vec![]);
    }

    #[test]
    fn regexes_whose_edge_check_cannot_be_built_are_not_stream_exact() {
        // 750 words of 8 letters, up to 40 times: at most 320 bytes, but
        // automata too large to build. `fullword` needs its edge check,
        // which the scanner's edge guard then leaves out.
        let mut seed = 1u64;
        let mut word = || -> String {
            (0..8)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                    char::from(b'a' + (seed >> 33) as u8 % 26)
                })
                .collect()
        };
        let words: Vec<String> = (0..750).map(|_| word()).collect();
        let groups: Vec<String> = words
            .chunks(250)
            .map(|w| format!("({})", w.join("|")))
            .collect();
        let regex = format!("({}){{1,40}}", groups.join("|"));
        let a = analyse(&format!(
            "rule big {{ strings: $a = /{regex}/ fullword condition: $a }}
             rule plain {{ strings: $a = /{regex}/ condition: $a }}"
        ));
        let unguarded = RuleIssue::UnguardedRegex {
            pattern: "$a".into(),
        };
        assert_eq!(a.rules[0].issues, vec![unguarded]);
        assert!(!a.rules[0].supported);
        // Without `fullword` or a look-around, no edge check is needed.
        assert!(a.rules[1].supported, "{:?}", a.rules[1].issues);
    }

    #[test]
    fn unsupported_global_rules_taint_their_namespace() {
        let a = analyse(
            r#"import "pe" global rule g { condition: pe.is_pe } rule r { condition: true }"#,
        );
        assert_eq!(
            a.rules[1].issues,
            vec![RuleIssue::UnsupportedGlobalRule { rule: "g".into() }]
        );
    }

    #[test]
    fn the_head_follows_the_anchored_patterns_the_search_must_find() {
        let a = analyse(
            r#"import "pe"
            rule exact { strings: $a = "MZ" $b = { 50 45 ?? ?? } condition: $a at 0 or any of ($b) at 60 }
            rule whole { strings: $c = "ELF" $u = /x.*y/s condition: $c at 200 and $u and pe.is_pe }
            rule gated { strings: $e = "EXE" condition: $e at 100 or pe.is_dll() }
            rule long { strings: $d = "0123456789" condition: $d }"#,
        );
        assert!(!a.rules[1].supported && a.rules[1].gate.is_some());
        assert!(!a.rules[2].supported && a.rules[2].gate.is_some());
        assert_eq!(a.window, 10);
        // `$e` at 100, three bytes long: where `gated`'s gate fails, the
        // stream's verdict decides it. `whole` has a pattern the search may
        // miss: its verdict is false where its gate fails, whatever `$c`.
        assert_eq!(a.head_len, 103);
        assert!(a.head.may_match(b"MZ"));
        let mut head = vec![b'.'; 210];
        assert!(!a.head.may_match(&head));
        head[200..203].copy_from_slice(b"ELF");
        assert!(!a.head.may_match(&head));
        head[100..103].copy_from_slice(b"EXE");
        assert!(a.head.may_match(&head));
        head[100] = b'.';
        head[60..62].copy_from_slice(b"PE");
        assert!(a.head.may_match(&head));
    }

    #[test]
    fn far_anchors_of_known_prefixes_are_checked_by_the_search() {
        let a = analyse(
            r#"rule r { strings: $a = "abc" condition: $a at 4000000000 }
            rule h { strings: $h = { 47 49 ?? 38 } condition: $h at 70000 and $h at 10 }
            rule w { strings: $w = "a" wide condition: $w at 70000 }"#,
        );
        assert!(a.rules[0].supported, "{:?}", a.rules[0].issues);
        assert!(a.rules[1].supported, "{:?}", a.rules[1].issues);
        // Only the near anchor makes a head.
        assert_eq!(a.head_len, 14);
        let hits = |data: &[u8], start| -> Vec<_> {
            let hits = a.head.far_hits(start, data);
            hits.map(|(range, rule)| (range, rule.to_string()))
                .collect()
        };
        assert_eq!(hits(b"..abc..", 4_000_000_000 - 2), [(2..5, "r".into())]);
        assert_eq!(hits(b"..abd..", 4_000_000_000 - 2), []);
        // A prefix is enough; a match may run past the data.
        assert_eq!(hits(b"GI", 70_000), [(0..4, "h".into())]);
        assert_eq!(hits(b"G", 70_000), []);
        // No known prefix: the search cannot check it.
        assert_eq!(
            a.rules[2].issues,
            vec![RuleIssue::AnchorBeyondHead {
                offset: 70_000,
                limit: MAX_ANCHOR
            }]
        );
    }

    #[test]
    fn constant_expression_anchors_are_unsupported() {
        let a = analyse(r#"rule r { strings: $a = "a" condition: $a at (1 + 1) }"#);
        assert_eq!(a.rules[0].issues, vec![RuleIssue::NonLiteralAnchor]);
    }
}
