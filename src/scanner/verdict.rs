//! The evaluation side: a stream's verdict from its replay spans.
//!
//! The search side leaves each stream with replay spans (its matches with a
//! little real context) and, when rules anchor patterns at fixed offsets,
//! its head. The [`Evaluator`] scans those spans at their real stream
//! offsets with a second YARA-X block scanner and calls `finish()`: YARA-X
//! finds the stream's matches again, at the same offsets, and evaluates
//! every condition over them exactly as a whole-buffer scan would.
//!
//! A stream with nothing to replay has the same verdict as the empty
//! stream, computed once per rule set: closing a stream that matched nothing
//! evaluates no condition.

use crate::error::ScanError;
use crate::results::RuleMatch;
use crate::rules::{EdgeGuard, RuleSet};
use crate::stream::span::replay_range;
use crate::stream::{ReplaySpan, SpanSet, StreamContext, StreamMode};

/// A stream's matching rules, and whether every span edge was quiet (the
/// verdict is exact for every rule analysis supports).
pub(crate) struct Verdict {
    pub rules: Vec<RuleMatch>,
    pub exact: bool,
}

/// Evaluates stream verdicts with one YARA-X block scanner.
pub(crate) struct Evaluator<'r> {
    rules: &'r RuleSet,
    scanner: yara_x::blocks::Scanner<'r>,
    empty_verdict: Option<Vec<RuleMatch>>,
    snippet_cap: usize,
    /// Verdicts computed by replaying spans (the rest used the empty one).
    pub evaluations: u64,
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
            empty_verdict: None,
            snippet_cap: config.max_snippet_bytes,
            evaluations: 0,
        }
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
        // Cut: the first matches only, not those at the end of the data.
        let mut spans = match cut {
            true => ctx.settled.clone(),
            false => SpanSet::union([&ctx.settled, &ctx.provisional]),
        };
        if let Some(head) = head_span(ctx, head_len, self.rules.edge_guard()) {
            spans.insert(head);
        }
        if spans.is_empty() {
            let mut verdict = self.empty_verdict()?;
            if cut {
                verdict.exact = false;
                verdict.rules.iter_mut().for_each(|rule| rule.exact = false);
            }
            return Ok(verdict);
        }
        self.evaluations += 1;
        let mut rules = self.evaluate(&spans, ctx.mode == StreamMode::Lines)?;
        // A span edge the replay could not make quiet: a match there may be
        // made up or lost, so nothing here is claimed exact. Nor is it when
        // matches past the cap were not kept.
        let exact = !cut && spans.iter().all(ReplaySpan::is_quiet);
        if !exact {
            rules.iter_mut().for_each(|rule| rule.exact = false);
        }
        Ok(Verdict { rules, exact })
    }

    fn empty_verdict(&mut self) -> Result<Verdict, ScanError> {
        if self.empty_verdict.is_none() {
            // An empty block first: `finish()` without any `scan()` panics in
            // YARA-X 1.22 when a condition needs the pattern search.
            let verdict = self.evaluate(&SpanSet::default(), false)?;
            self.empty_verdict = Some(verdict);
        }
        Ok(Verdict {
            rules: self.empty_verdict.clone().unwrap_or_default(),
            exact: true,
        })
    }

    fn evaluate(&mut self, spans: &SpanSet, line_mode: bool) -> Result<Vec<RuleMatch>, ScanError> {
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
        let snippet = |range, cap| snippet_of(spans, range, cap);
        let rules = self.rules;
        Ok(results
            .matching_rules()
            .map(|rule| {
                let exact = rules.is_exact(rule.namespace(), rule.identifier());
                RuleMatch::from_yara(&rule, exact, self.snippet_cap, &locate, &snippet)
            })
            .collect())
    }
}

/// The head of a chunk stream, when rules anchor patterns.
fn head_span(ctx: &StreamContext, head_len: usize, guard: &EdgeGuard) -> Option<ReplaySpan> {
    if head_len == 0 || ctx.head.is_empty() || ctx.mode == StreamMode::Lines {
        return None;
    }
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

/// The replayed bytes of a match's range, at most `cap` of them (a range
/// running past its span is cut where the span ends).
fn snippet_of(spans: &SpanSet, range: std::ops::Range<u64>, cap: usize) -> Vec<u8> {
    let spans = spans.as_slice();
    let index = spans
        .partition_point(|s| s.start <= range.start)
        .saturating_sub(1);
    let Some(span) = spans.get(index).filter(|s| s.end() > range.start) else {
        return Vec::new();
    };
    let from = (range.start - span.start) as usize;
    let to = (range.end.min(span.end()) - span.start) as usize;
    span.bytes[from..to.min(from + cap)].to_vec()
}

/// The line of a replayed offset.
fn line_of(spans: &SpanSet, offset: u64, line_mode: bool) -> u64 {
    let spans = spans.as_slice();
    let index = spans
        .partition_point(|s| s.start <= offset)
        .saturating_sub(1);
    spans.get(index).map_or(1, |s| s.line_at(offset, line_mode))
}
