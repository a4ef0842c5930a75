//! Rule generations: the scanners of one shard, one per rule set in use.
//!
//! A [`MultiStreamScanner`] borrows its [`RuleSet`]; a shard must own both
//! and keep them together for as long as streams use them, across rule
//! reloads. [`OwnedScanner`] ties a scanner to an `Arc<RuleSet>` with
//! `self_cell` (no `unsafe` here). [`Generations`] holds the current one,
//! which new streams open on, and older ones that still have open streams:
//! a stream opened before a reload finishes on the rules it started with.
//! An old generation is dropped when its last stream closes.

use std::sync::Arc;

use uuid::Uuid;

use crate::config::ScannerConfig;
use crate::metrics::ShardMetrics;
use crate::rules::RuleSet;
use crate::scanner::{MultiStreamScanner, ScannerStats};
use crate::store::{rules_tag, RulesTag};

type BorrowedScanner<'r> = MultiStreamScanner<'r>;

self_cell::self_cell!(
    /// A multi-stream scanner together with the rules it borrows.
    pub(crate) struct OwnedScanner {
        owner: Arc<RuleSet>,
        #[not_covariant]
        dependent: BorrowedScanner,
    }
);

/// One rule set and its scanner, with what the shard tracks about it.
pub(crate) struct Generation {
    scanner: OwnedScanner,
    /// Submission times of the chunks waiting in the scanner's batch.
    pub pending: Vec<std::time::Instant>,
    /// The scanner's counters when last synced into metrics.
    pub seen: ScannerStats,
}

impl Generation {
    fn new(rules: Arc<RuleSet>, config: &ScannerConfig) -> Generation {
        let config = config.clone();
        Generation {
            scanner: OwnedScanner::new(rules, |rules| {
                // A shard's thread runs no scan but its scanners'.
                let mut scanner = MultiStreamScanner::new(rules, config);
                scanner.claim_its_thread();
                scanner
            }),
            pending: Vec::new(),
            seen: ScannerStats::default(),
        }
    }

    /// Runs `work` on the scanner, then turns what changed in its counters
    /// into the shard's metrics: every scanner call that may search (and so
    /// move the counters) goes through here, the one place the deltas are
    /// synced.
    pub fn scan<R>(
        &mut self,
        metrics: &ShardMetrics,
        work: impl FnOnce(&mut MultiStreamScanner<'_>) -> R,
    ) -> R {
        let result = self.with(work);
        self.sync_metrics(metrics);
        result
    }

    /// What changed in the scanner's counters since last time, into
    /// metrics; and the latency of the chunks a new batch search covered.
    fn sync_metrics(&mut self, metrics: &ShardMetrics) {
        let now = self.stats();
        let seen = &self.seen;
        let batches = now.batches.saturating_sub(seen.batches);
        if batches > 0 {
            let finished = std::time::Instant::now();
            for submitted in self.pending.drain(..) {
                ShardMetrics::seconds(&metrics.latency, finished - submitted);
            }
            let searched = now.searched_bytes.saturating_sub(seen.searched_bytes);
            metrics.batch_size.record(searched as f64 / batches as f64);
            metrics.flushes.increment(batches);
        }
        let opened = now.streams_opened.saturating_sub(seen.streams_opened);
        metrics.opened.increment(opened);
        let reused = now.verdicts.saturating_sub(now.evaluations);
        let reused = reused.saturating_sub(seen.verdicts.saturating_sub(seen.evaluations));
        metrics.empty_verdicts.increment(reused);
        metrics
            .whole_scans
            .increment(now.whole_scans.saturating_sub(seen.whole_scans));
        metrics
            .deferred_searches
            .increment(now.deferred_searches.saturating_sub(seen.deferred_searches));
        metrics
            .ruled_out_matches
            .increment(now.ruled_out_matches.saturating_sub(seen.ruled_out_matches));
        self.seen = now;
    }

    /// Runs `f` on the scanner (for calls that search nothing: see
    /// [`Self::scan`]).
    pub fn with<R>(&mut self, f: impl FnOnce(&mut MultiStreamScanner<'_>) -> R) -> R {
        self.scanner.with_dependent_mut(|_, scanner| f(scanner))
    }

    /// Whether the stream is open in this generation.
    pub fn holds(&self, stream: &Uuid) -> bool {
        self.scanner
            .with_dependent(|_, scanner| scanner.stream_context(stream).is_some())
    }

    /// The scanner's counters.
    pub fn stats(&self) -> ScannerStats {
        self.scanner.with_dependent(|_, scanner| scanner.stats())
    }

    /// The tag of the rules' fingerprint (as stored with contexts).
    pub fn rules_tag(&self) -> RulesTag {
        rules_tag(&self.scanner.borrow_owner().fingerprint())
    }
}

/// The generations of one shard, oldest first; the last is current.
pub(crate) struct Generations {
    list: Vec<Generation>,
    config: ScannerConfig,
}

impl Generations {
    /// One generation on `rules`.
    pub fn new(rules: Arc<RuleSet>, config: ScannerConfig) -> Generations {
        Generations {
            list: vec![Generation::new(rules, &config)],
            config,
        }
    }

    /// Makes `rules` current for new streams (prune afterwards).
    pub fn reload(&mut self, rules: Arc<RuleSet>) {
        self.list.push(Generation::new(rules, &self.config));
    }

    /// The generation that holds `stream`, or the current one.
    pub fn for_stream(&mut self, stream: &Uuid) -> &mut Generation {
        let last = self.list.len() - 1;
        let index = self.list[..last]
            .iter()
            .position(|g| g.holds(stream))
            .unwrap_or(last);
        &mut self.list[index]
    }

    /// The generation that holds `stream`, if any.
    pub fn holding(&mut self, stream: &Uuid) -> Option<&mut Generation> {
        self.list.iter_mut().find(|g| g.holds(stream))
    }

    /// Every generation, oldest first.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Generation> {
        self.list.iter_mut()
    }

    /// Every generation, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Generation> {
        self.list.iter()
    }

    /// The generation of the rules tagged `tag`, if it is loaded.
    pub fn with_rules(&mut self, tag: RulesTag) -> Option<&mut Generation> {
        self.list.iter_mut().rev().find(|g| g.rules_tag() == tag)
    }

    /// The current generation (new streams open on it).
    pub fn current(&mut self) -> &mut Generation {
        self.list
            .last_mut()
            .expect("there is always a current generation")
    }

    /// Drops old generations that hold no stream, unless `keep` says their
    /// rules are still needed (by stored streams).
    pub fn prune(&mut self, keep: impl Fn(&RulesTag) -> bool) {
        let last = self.list.len() - 1;
        let mut index = 0;
        self.list.retain(|g| {
            index += 1;
            index - 1 == last || g.stats().open_streams > 0 || keep(&g.rules_tag())
        });
    }

    /// Ids of every open stream.
    pub fn active_streams(&mut self) -> Vec<Uuid> {
        self.list
            .iter_mut()
            .flat_map(|g| g.with(|s| s.active_streams()))
            .collect()
    }
}
