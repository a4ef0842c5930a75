//! The evaluation side: a stream's verdict from its replay spans.
//!
//! The search side leaves each stream with replay spans (its matches with a
//! little real context) and, when rules anchor patterns at fixed offsets,
//! its head (replayed only when it may hold an anchored match, see
//! `rules::head`). The [`Evaluator`] scans those spans at their real stream
//! offsets with a second YARA-X block scanner and calls `finish()`: YARA-X
//! finds the stream's matches again, at the same offsets, and evaluates
//! every condition over them exactly as a whole-buffer scan would.
//!
//! A stream with nothing to replay has the same verdict as the empty
//! stream, computed once per rule set: closing a stream that matched nothing
//! evaluates no condition.
//!
//! Whole-data rules (see `rules::whole_data`) are settled here too: a
//! stream that retained every byte and may match one gets its whole
//! verdict from a whole-buffer `yara_x::Scanner` scan of them (one scanner,
//! made on first use); for the others, the verdict from spans drops the
//! whole-data rules whose gates failed and lists the undecided ones.
//!
//! A stream with its own values of external variables (a file's name) has
//! them set on the scanner for its verdict, and the rule set's put back
//! after it. Every verdict sets the stream's data values (`filesize` and
//! header reads, see `rules::data_values`), and a stream with nothing to
//! replay shares the verdict of the empty stream with others of the same
//! class of values.
//!
//! YARA-X caches `pe.imphash()` and `pe.calculate_checksum()` per thread,
//! and a block scan reads a value a whole-buffer scan of a PE left; where
//! the rules call them, an evaluation first clears the cache when a scan
//! may have filled it (a flag per thread).

use std::collections::HashMap;

use crate::error::ScanError;
use crate::results::{
    MatchBudget, RuleMatch, Snippets, WholeDataState, WholeDataVerdict, MAX_UNDECIDED_LISTED,
};
use crate::rules::data_values::Values;
use crate::rules::externals::pass_external;
use crate::rules::{EdgeGuard, External, MatchReads, RuleSet};
use crate::stream::span::{count_newlines, replay_range};
use crate::stream::{ReplaySpan, Retention, RetentionLimit, SpanSet, StreamContext, StreamMode};

/// A stream's matching rules, and whether every span edge was quiet (the
/// verdict is exact for every rule analysis supports).
pub(crate) struct Verdict {
    pub rules: Vec<RuleMatch>,
    pub exact: bool,
    pub whole_data: Option<WholeDataVerdict>,
    /// A whole-buffer verdict listed only its first
    /// `ScannerConfig::max_stream_matches` matches (the verdict of every
    /// rule is still exact).
    pub listing_cut: bool,
}

/// Evaluates stream verdicts with one YARA-X block scanner.
pub(crate) struct Evaluator<'r> {
    rules: &'r RuleSet,
    scanner: yara_x::blocks::Scanner<'r>,
    /// For whole-buffer scans of retained bytes, made on first use.
    whole: Option<yara_x::Scanner<'r>>,
    /// Resets `pe`'s per-thread caches before a verdict from spans (see
    /// `RuleSet::pe_cache_reset`), when [`PE_CACHES_STALE`].
    pe_cache_reset: Option<yara_x::Scanner<'r>>,
    config: crate::ScannerConfig,
    /// Verdicts of streams with nothing to replay, by the class of their
    /// data values (see `DataValues::class_of`).
    empty_verdicts: HashMap<Values, Vec<RuleMatch>>,
    /// Verdicts computed by replaying spans (the rest used the empty one).
    pub evaluations: u64,
    /// Verdicts computed by a whole-buffer scan of retained bytes.
    pub whole_scans: u64,
}

impl<'r> Evaluator<'r> {
    pub fn new(rules: &'r RuleSet, config: &crate::ScannerConfig) -> Evaluator<'r> {
        let mut scanner = yara_x::blocks::Scanner::new(rules.rules());
        scanner.max_matches_per_pattern(config.max_matches_per_pattern);
        if let Some(timeout) = config.scan_timeout {
            scanner.set_timeout(timeout);
        }
        Evaluator {
            rules,
            scanner,
            whole: None,
            pe_cache_reset: rules.pe_cache_reset().map(yara_x::Scanner::new),
            config: config.clone(),
            empty_verdicts: HashMap::new(),
            evaluations: 0,
            whole_scans: 0,
        }
    }

    /// Says that code other than this evaluator's may have run whole-buffer
    /// scans on this thread since its last verdict (a caller's own YARA-X
    /// scans, between two calls of the scanner): the next verdict from
    /// spans resets `pe`'s caches first.
    pub fn others_may_have_scanned(&mut self) {
        PE_CACHES_STALE.set(true);
    }

    /// The verdict of a stream that retained every byte: a whole-buffer
    /// scan of them, exact for every rule.
    pub fn whole_verdict(&mut self, ctx: &StreamContext) -> Result<Verdict, ScanError> {
        let (rules, config) = (self.rules, &self.config);
        let scanner = self.whole.get_or_insert_with(|| {
            let mut scanner = yara_x::Scanner::new(rules.rules());
            scanner.max_matches_per_pattern(config.max_matches_per_pattern);
            if let Some(timeout) = config.scan_timeout {
                scanner.set_timeout(timeout);
            }
            scanner
        });
        self.whole_scans += 1;
        let data = ctx.retained.as_slice();
        scanner.set_externals(&ctx.externals);
        let values =
            rules
                .data_values()
                .values(data, data.len() as u64, ctx.digests.as_deref(), true);
        pass_values(scanner, rules, &values);
        let listing = Listing {
            max_matches: config.max_stream_matches,
            snippet_cap: config.max_snippet_bytes,
        };
        let matched = whole_scan(scanner, data, listing);
        // Only a PE file leaves a value in `pe`'s caches.
        if data.starts_with(b"MZ") {
            PE_CACHES_STALE.set(true);
        }
        scanner.restore_externals(&ctx.externals, rules.externals());
        let (rules, listing_cut) = matched?;
        Ok(Verdict {
            rules,
            listing_cut,
            exact: true,
            whole_data: Some(WholeDataVerdict {
                state: WholeDataState::Scanned,
                retained_bytes: data.len() as u64,
                undecided_rules: 0,
                undecided: Vec::new(),
            }),
        })
    }

    /// The verdict over everything the stream has searched so far.
    /// `cut`: the stream kept only some of its matches (see
    /// `ScannerConfig::max_stream_matches`).
    pub fn verdict(
        &mut self,
        ctx: &StreamContext,
        head_len: usize,
        cut: bool,
    ) -> Result<Verdict, ScanError> {
        self.scanner.set_externals(&ctx.externals);
        let values = data_values_of(ctx, self.rules);
        pass_values(&mut self.scanner, self.rules, &values);
        pass_match_reads(&mut self.scanner, self.rules, match_reads_of(ctx, cut));
        let verdict = self.verdict_with_externals_set(ctx, &values, head_len, cut);
        self.scanner
            .restore_externals(&ctx.externals, self.rules.externals());
        verdict
    }

    fn verdict_with_externals_set(
        &mut self,
        ctx: &StreamContext,
        values: &[Option<i64>],
        head_len: usize,
        cut: bool,
    ) -> Result<Verdict, ScanError> {
        // Cut: the first matches only, not those at the end of the data.
        let mut spans = match cut {
            true => ctx.settled.clone(),
            false => SpanSet::union([&ctx.settled, &ctx.provisional]),
        };
        if let Some(head) = head_span(ctx, head_len, self.rules) {
            spans.insert(head);
        }
        if spans.is_empty() {
            // The empty verdict is the rule set's: not one with a
            // stream's own externals.
            let mut verdict = match ctx.externals.is_empty() {
                true => self.empty_verdict(values)?,
                false => Verdict {
                    rules: self.evaluate(&SpanSet::default(), false)?,
                    exact: true,
                    whole_data: None,
                    listing_cut: false,
                },
            };
            if cut {
                verdict.exact = false;
                verdict.rules.iter_mut().for_each(|rule| rule.exact = false);
            }
            verdict.whole_data =
                settle_whole_data(&mut verdict.rules, ctx, self.rules, verdict.exact);
            return Ok(verdict);
        }
        self.evaluations += 1;
        let mut rules = self.evaluate(&spans, ctx.mode == StreamMode::Lines)?;
        // A span edge the replay could not make quiet: a match there may be
        // made up or lost, so nothing here is claimed exact. Nor is it when
        // matches past the cap were not kept.
        let guard = self.rules.edge_guard();
        let exact = !cut
            && spans
                .iter()
                .all(|span| span.is_quiet() && edges_hold_merged(span, ctx, guard));
        if !exact {
            rules.iter_mut().for_each(|rule| rule.exact = false);
        }
        let whole_data = settle_whole_data(&mut rules, ctx, self.rules, exact);
        Ok(Verdict {
            rules,
            exact,
            whole_data,
            listing_cut: false,
        })
    }

    /// The verdict of a stream with nothing to replay and these data
    /// values (set on the scanner), computed once per class of them.
    fn empty_verdict(&mut self, values: &[Option<i64>]) -> Result<Verdict, ScanError> {
        let class = self.rules.data_values().class_of(values);
        let rules = match self.empty_verdicts.get(&class) {
            Some(rules) => rules.clone(),
            None => {
                let rules = self.evaluate(&SpanSet::default(), false)?;
                if self.empty_verdicts.len() < MAX_EMPTY_VERDICTS {
                    self.empty_verdicts.insert(class, rules.clone());
                }
                rules
            }
        };
        Ok(Verdict {
            rules,
            exact: true,
            whole_data: None,
            listing_cut: false,
        })
    }

    fn evaluate(&mut self, spans: &SpanSet, line_mode: bool) -> Result<Vec<RuleMatch>, ScanError> {
        if let Some(reset) = self
            .pe_cache_reset
            .as_mut()
            .filter(|_| PE_CACHES_STALE.get())
        {
            // `pe`'s module runs on the empty data and clears its caches.
            reset.scan(b"")?;
            PE_CACHES_STALE.set(false);
        }
        let mut scanned = false;
        for span in spans.iter() {
            scanned = true;
            if let Err(err) = self.scanner.scan(span.start as usize, &span.bytes) {
                let _ = self.scanner.finish();
                return Err(err.into());
            }
        }
        if !scanned {
            self.scanner.scan(0, b"")?;
        }
        let results = self.scanner.finish()?;
        let locate = |offset: u64| line_of(spans, offset, line_mode);
        let snippet = |range| snippet_of(spans, range);
        let mut snippets = Snippets::new(self.config.max_snippet_bytes);
        let rules = self.rules;
        // The spans hold only the matches the stream kept (at most
        // `max_stream_matches`): all are listed.
        let mut budget = MatchBudget {
            room: usize::MAX,
            cut: false,
        };
        Ok(results
            .matching_rules()
            .map(|rule| {
                let exact = rules.is_exact(rule.namespace(), rule.identifier());
                RuleMatch::from_yara(&rule, exact, &mut budget, &locate, &snippet, &mut snippets)
            })
            .collect())
    }
}

thread_local! {
    /// Whether a whole-buffer scan on this thread may have left values in
    /// `pe`'s per-thread caches since an evaluator last cleared them: one
    /// of a PE by any evaluator here, or any scan of a caller's (see
    /// [`Evaluator::others_may_have_scanned`]). Shared by the evaluators of
    /// a thread, since YARA-X's caches are.
    static PE_CACHES_STALE: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

/// Classes of data values whose empty verdicts an evaluator keeps (a
/// value used otherwise than in comparisons with literals makes a class of
/// each value).
const MAX_EMPTY_VERDICTS: usize = 1024;

/// A stream's data values (see `rules::data_values`): from its first
/// bytes (its head, or its retained bytes when they are more) in chunk
/// mode, undefined in line mode.
fn data_values_of(ctx: &StreamContext, rules: &RuleSet) -> Values {
    let plan = rules.data_values();
    if plan.is_empty() {
        return Values::new();
    }
    let prefix = match ctx.retained.len() > ctx.head.len() {
        true => &ctx.retained,
        false => &ctx.head,
    };
    let digests = ctx.digests.as_deref();
    plan.values(
        prefix,
        ctx.stats.bytes,
        digests,
        ctx.mode == StreamMode::Chunks,
    )
}

/// Sets data values on a scanner.
fn pass_values<S: StreamExternals>(scanner: &mut S, rules: &RuleSet, values: &[Option<i64>]) {
    rules
        .data_values()
        .pass(values, |name, value| scanner.set_integer(name, value));
}

/// Whether a chunk stream's span, as replayed, still has quiet edges. Each
/// edge was judged quiet on the bytes of the segment that settled its
/// match; merged since with spans of earlier segments, the span may now
/// hold all of a longer context-sensitive match that ends (or starts) at
/// that edge: a `fullword` string whose next real byte is a letter would
/// then pass at the block's end. Such a verdict is not claimed exact. Real
/// edges (the stream's start, the end of what it has sent) and lines, each
/// judged whole, hold.
fn edges_hold_merged(span: &ReplaySpan, ctx: &StreamContext, guard: &EdgeGuard) -> bool {
    if ctx.mode == StreamMode::Lines || guard.is_empty() {
        return true;
    }
    let start_holds = span.start == 0 || !guard.blocks_start(&span.bytes);
    let end_holds = span.end() == ctx.stats.bytes || !guard.blocks_end(&span.bytes);
    start_holds && end_holds
}

/// The match reads (see `rules::match_reads`) that held on the matches a
/// verdict replays: the settled ones', and the provisional ones' unless
/// the verdict is `cut` to the settled. `None` in line mode, whose contract
/// is a block scan's: the expressions decide there.
fn match_reads_of(ctx: &StreamContext, cut: bool) -> Option<u64> {
    match (ctx.mode, cut) {
        (StreamMode::Lines, _) => None,
        (StreamMode::Chunks, true) => Some(ctx.match_reads),
        (StreamMode::Chunks, false) => Some(ctx.match_reads | ctx.provisional_match_reads),
    }
}

/// Sets each match read's variable from its bit in `held`, or to the
/// default (the expression decides) when `None`.
fn pass_match_reads<S: StreamExternals>(scanner: &mut S, rules: &RuleSet, held: Option<u64>) {
    for (n, name) in rules.match_reads().variables().enumerate() {
        let value = held.map_or(MatchReads::DEFAULT, |bits| i64::from(bits >> n & 1 == 1));
        scanner.set_integer(name, value);
    }
}

/// How much of a whole-buffer scan's matches a verdict lists.
struct Listing {
    /// Matches listed over all rules; the rest are left out.
    max_matches: usize,
    /// Bytes of each match's snippet.
    snippet_cap: usize,
}

/// The matching rules of a whole-buffer scan of `data`, listing at most
/// `listing.max_matches` matches over all of them (a hostile stream can
/// make a million per pattern); true when some were left out. Lines are
/// counted from the previous match of the same pattern (their offsets
/// ascend), so the counting is linear in the bytes per pattern, not per
/// match.
fn whole_scan(
    scanner: &mut yara_x::Scanner<'_>,
    data: &[u8],
    listing: Listing,
) -> Result<(Vec<RuleMatch>, bool), ScanError> {
    let results = scanner.scan(data)?;
    let counted = std::cell::Cell::new((0u64, 1u64));
    let locate = |offset: u64| {
        let offset = offset.min(data.len() as u64);
        let (mut from, mut line) = counted.get();
        if offset < from {
            (from, line) = (0, 1);
        }
        line += count_newlines(&data[from as usize..offset as usize]);
        counted.set((offset, line));
        line
    };
    let snippet = |range: std::ops::Range<u64>| {
        let start = (range.start as usize).min(data.len());
        let end = (range.end as usize).min(data.len());
        &data[start..end]
    };
    let mut snippets = Snippets::new(listing.snippet_cap);
    let mut budget = MatchBudget {
        room: listing.max_matches,
        cut: false,
    };
    let rules = results
        .matching_rules()
        .map(|rule| {
            RuleMatch::from_yara(&rule, true, &mut budget, &locate, &snippet, &mut snippets)
        })
        .collect();
    Ok((rules, budget.cut))
}

/// The whole-data rules of a line stream's verdict: those that matched
/// say `exact: false` (analysis marked them so), the others are listed as
/// undecided, never silently false.
fn lines_whole_data(rules: &[RuleMatch], plan: &crate::rules::WholeDataPlan) -> WholeDataVerdict {
    let matched = |ns: &str, id: &str| {
        rules
            .iter()
            .any(|r| r.namespace == ns && r.identifier == id)
    };
    let mut undecided: Vec<String> = plan
        .rules()
        .filter(|(ns, id)| !matched(ns, id))
        .map(|(ns, id)| format!("{ns}.{id}"))
        .collect();
    undecided.sort_unstable();
    let undecided_rules = undecided.len();
    undecided.truncate(MAX_UNDECIDED_LISTED);
    WholeDataVerdict {
        state: WholeDataState::Lines,
        retained_bytes: 0,
        undecided_rules,
        undecided,
    }
}

/// Setting a stream's own externals on a YARA-X scanner, and putting the
/// rule set's values back.
trait StreamExternals {
    /// Sets each of `externals`. They were checked against the rules when
    /// the stream got them, so YARA-X refuses none (one it did refuse would
    /// keep the rule set's value).
    fn set_externals(&mut self, externals: &[External]);

    /// Sets an integer the rules declare.
    fn set_integer(&mut self, name: &str, value: i64);

    /// Puts back the rule set's value of each of `externals`.
    fn restore_externals(&mut self, externals: &[External], declared: &[External]) {
        if externals.is_empty() {
            return;
        }
        let names = |e: &&External| externals.iter().any(|own| own.name == e.name);
        let defaults: Vec<External> = declared.iter().filter(names).cloned().collect();
        self.set_externals(&defaults);
    }
}

macro_rules! impl_stream_externals {
    ($scanner:ty) => {
        impl StreamExternals for $scanner {
            fn set_externals(&mut self, externals: &[External]) {
                let scanner = self;
                for external in externals {
                    let _ = pass_external!(scanner.set_global(external));
                }
            }

            fn set_integer(&mut self, name: &str, value: i64) {
                let _ = self.set_global(name, value);
            }
        }
    };
}

impl_stream_externals!(yara_x::Scanner<'_>);
impl_stream_externals!(yara_x::blocks::Scanner<'_>);

/// The whole-data rules of a verdict from spans, for a stream that does not
/// scan whole: the verdict decides those whose gate failed (exact as the
/// verdict is); when a limit cut the retention, the others are undecided.
fn settle_whole_data(
    rules: &mut [RuleMatch],
    ctx: &StreamContext,
    set: &RuleSet,
    exact: bool,
) -> Option<WholeDataVerdict> {
    let plan = set.whole_data();
    let state = match ctx.retention {
        Retention::Off if ctx.mode == StreamMode::Lines && plan.rules().next().is_some() => {
            return Some(lines_whole_data(rules, plan));
        }
        Retention::Off => return None,
        Retention::Retaining | Retention::Gated => WholeDataState::Gated,
        Retention::Cut {
            limit: RetentionLimit::StreamCap,
        } => WholeDataState::CutAtStreamCap,
        Retention::Cut {
            limit: RetentionLimit::Budget,
        } => WholeDataState::CutAtBudget,
    };
    let (prefix, len) = (ctx.retained.as_slice(), ctx.stats.bytes);
    let fails =
        |ns: &str, id: &str| state == WholeDataState::Gated || plan.gate_fails(ns, id, prefix, len);
    for rule in rules.iter_mut() {
        if plan.contains(&rule.namespace, &rule.identifier) {
            rule.exact = exact && fails(&rule.namespace, &rule.identifier);
        }
    }
    let mut undecided: Vec<String> = match state {
        WholeDataState::Gated => Vec::new(),
        _ => plan
            .undecided(prefix, len)
            .map(|(ns, id)| format!("{ns}.{id}"))
            .collect(),
    };
    undecided.sort_unstable();
    let undecided_rules = undecided.len();
    undecided.truncate(MAX_UNDECIDED_LISTED);
    Some(WholeDataVerdict {
        state,
        retained_bytes: prefix.len() as u64,
        undecided_rules,
        undecided,
    })
}

/// The head of a chunk stream, when it may hold a match of a pattern the
/// rules anchor (see `rules::head`).
fn head_span(ctx: &StreamContext, head_len: usize, rules: &RuleSet) -> Option<ReplaySpan> {
    if head_len == 0 || ctx.head.is_empty() || ctx.mode == StreamMode::Lines {
        return None;
    }
    if !rules.analysis().head.may_match(&ctx.head) {
        return None;
    }
    let guard = rules.edge_guard();
    let whole_stream = ctx.head.len() as u64 == ctx.stats.bytes;
    let grown = replay_range(
        &ctx.head,
        0..head_len.min(ctx.head.len()),
        true,
        whole_stream,
        guard,
    );
    Some(ReplaySpan {
        start: 0,
        segment: 0,
        line: 1,
        bytes: ctx.head[grown.range].to_vec(),
        quiet_start: grown.quiet_start,
        quiet_end: grown.quiet_end,
    })
}

/// The replayed bytes of a match's range (a range running past its span is
/// cut where the span ends).
fn snippet_of(spans: &SpanSet, range: std::ops::Range<u64>) -> &[u8] {
    let spans = spans.as_slice();
    let index = spans
        .partition_point(|s| s.start <= range.start)
        .saturating_sub(1);
    let Some(span) = spans.get(index).filter(|s| s.end() > range.start) else {
        return &[];
    };
    let from = (range.start - span.start) as usize;
    let to = (range.end.min(span.end()) - span.start) as usize;
    &span.bytes[from..to]
}

/// The line of a replayed offset.
fn line_of(spans: &SpanSet, offset: u64, line_mode: bool) -> u64 {
    let spans = spans.as_slice();
    let index = spans
        .partition_point(|s| s.start <= offset)
        .saturating_sub(1);
    spans.get(index).map_or(1, |s| s.line_at(offset, line_mode))
}
