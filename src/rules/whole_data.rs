//! The whole-data rules of a rule set, as chunk streams need them.
//!
//! A rule that stream scanning cannot evaluate exactly is a *whole-data*
//! rule: a chunk stream that may still match one retains its bytes, and
//! its verdict for such rules comes from a whole-buffer YARA-X scan of
//! them. [`WholeDataPlan`] tells a stream when it may stop retaining: when
//! every whole-data rule's [`Gate`] fails on its first bytes or its length
//! (then the stream's own verdict decides every rule exactly: most are
//! simply false). The gates are kept once each (thousands of `pe` rules
//! share the one `MZ` gate), so that checking them costs little per chunk.
//!
//! Streams also retain their bytes, with no gate, for the *dense* rules
//! (stream-exact rules whose patterns match every few bytes, see
//! `rules::density`): for those a whole-buffer scan at the end is cheaper
//! than searching and replaying. The search decides them too: a stream
//! kept for them alone gives way first (see `stream::retention`), is
//! searched from its first byte, and its own verdict decides them (as
//! exactly as it decides any rule: not past `max_stream_matches`).

use std::collections::HashMap;

use super::analysis::RuleReport;
use super::gates::Gate;

/// The whole-data rules of a rule set, and their distinct gates.
#[derive(Debug, Default)]
pub struct WholeDataPlan {
    /// `(namespace, identifier)` of each whole-data rule, with the index of
    /// its gate in `gates` (`None`: no gate).
    rules: HashMap<(String, String), Option<usize>>,
    gates: Vec<Gate>,
    ungated: usize,
    dense: usize,
    prefix_len: usize,
}

impl WholeDataPlan {
    /// The plan of the rules analysis found inexact on streams.
    pub fn new(reports: &[RuleReport]) -> WholeDataPlan {
        let mut plan = WholeDataPlan::default();
        let mut index: HashMap<&Gate, usize> = HashMap::new();
        plan.dense = reports
            .iter()
            .filter(|r| r.supported && r.dense.is_some())
            .count();
        for report in reports.iter().filter(|r| !r.supported) {
            let gate = report.gate.as_ref().map(|gate| {
                *index.entry(gate).or_insert_with(|| {
                    plan.gates.push(gate.clone());
                    plan.gates.len() - 1
                })
            });
            plan.ungated += usize::from(gate.is_none());
            let key = (report.namespace.clone(), report.identifier.clone());
            plan.rules.insert(key, gate);
        }
        plan.prefix_len = plan.gates.iter().map(Gate::prefix_len).max().unwrap_or(0);
        plan
    }

    /// Whether the rule set has no whole-data rule.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether new chunk streams retain their bytes: for a whole-data rule
    /// or a dense one.
    pub fn streams_retain(&self) -> bool {
        !self.rules.is_empty() || self.dense > 0
    }

    /// How many whole-data rules there are.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// How many of them have no gate.
    pub fn ungated(&self) -> usize {
        self.ungated
    }

    /// How many first bytes the gates read: a stream that stops retaining
    /// keeps that many.
    pub fn prefix_len(&self) -> usize {
        self.prefix_len
    }

    /// Whether a rule is a whole-data rule.
    pub fn contains(&self, namespace: &str, identifier: &str) -> bool {
        self.rules
            .contains_key(&(namespace.to_string(), identifier.to_string()))
    }

    /// Whether some whole-data or dense rule still needs the bytes of a
    /// stream whose first bytes are `prefix` and whose length is `len` (see
    /// [`Gate::fails`]).
    pub fn needs_bytes(&self, prefix: &[u8], len: u64, complete: bool) -> bool {
        self.dense > 0 || self.whole_data_needs(prefix, len, complete)
    }

    /// [`Self::needs_bytes`] for the whole-data rules alone.
    pub fn whole_data_needs(&self, prefix: &[u8], len: u64, complete: bool) -> bool {
        self.ungated > 0 || self.gates.iter().any(|g| !g.fails(prefix, len, complete))
    }

    /// Whether the rule set has dense rules, for which streams retain their
    /// bytes too (see `rules::density`).
    pub fn has_dense(&self) -> bool {
        self.dense > 0
    }

    /// Whether a whole-data rule's gate fails on a stream that ends at
    /// `len`, so that the stream's own verdict decides it (false for a rule
    /// without a gate, or not whole-data).
    pub fn gate_fails(&self, namespace: &str, identifier: &str, prefix: &[u8], len: u64) -> bool {
        let key = (namespace.to_string(), identifier.to_string());
        match self.rules.get(&key) {
            Some(Some(gate)) => self.gates[*gate].fails(prefix, len, true),
            _ => false,
        }
    }

    /// The whole-data rules whose gate holds on a stream that ends at `len`
    /// (or that have no gate): those its own verdict cannot decide. Each
    /// distinct gate is evaluated once.
    pub fn undecided(&self, prefix: &[u8], len: u64) -> impl Iterator<Item = (&str, &str)> {
        let fails: Vec<bool> = self
            .gates
            .iter()
            .map(|gate| gate.fails(prefix, len, true))
            .collect();
        self.rules
            .iter()
            .filter(move |(_, gate)| !gate.is_some_and(|g| fails[g]))
            .map(|((ns, id), _)| (ns.as_str(), id.as_str()))
    }

    /// The whole-data rules, as `(namespace, identifier)`, in no order.
    pub fn rules(&self) -> impl Iterator<Item = (&str, &str)> {
        self.rules.keys().map(|(ns, id)| (ns.as_str(), id.as_str()))
    }
}
