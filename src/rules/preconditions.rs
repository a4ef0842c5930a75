//! Rules that a stream's first bytes rule out, so that the matches of
//! their patterns need not be kept.
//!
//! Real rules test a file's header before anything else:
//! `isLNK and any of them`, `uint16(0) == 0x5A4D and ...`. Such a rule's
//! *precondition* (the header tests and size limits among its top-level
//! conjuncts, and those of the rules it names there, see
//! [`super::gates::necessary_branch`]) holds wherever the rule does. On a
//! stream that fails it the rule is false whatever its patterns match, in
//! a whole-buffer scan and in the stream's verdict alike, so the search
//! drops those matches instead of keeping a replay span for each: on HTTP
//! traffic, bartblaze's `Download_in_LNK` matches `http` dozens of times
//! per stream, and nothing else there.
//!
//! A stream's [`RuledOut`] set is decided from its first bytes, while they
//! are all at hand (its first chunks, or all its bytes when their search
//! was deferred); more bytes only fail more tests, so a later decision
//! replaces an earlier one. Sets are kept once per distinct outcome by
//! the scanner ([`RuledOutSets`]), so a stream holds a pointer.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::analysis::RuleReport;
use super::gates::{Branch, ByteTest, Gate};

/// Most distinct [`RuledOut`] sets a scanner keeps shared; past that, a
/// stream gets a set of its own (as many outcomes mean a hostile mix of
/// headers, which costs memory but never a wrong verdict).
const MAX_SHARED_SETS: usize = 4096;

/// The preconditions of a rule set's rules, each distinct one once.
#[derive(Debug, Default)]
pub struct PreconditionPlan {
    /// Distinct header tests.
    tests: Vec<ByteTest>,
    /// Distinct preconditions: groups of indices in `tests` (one test of
    /// each group must pass) and a size limit.
    branches: Vec<IndexedBranch>,
    /// Per rule identifier with a precondition: its index in `branches`.
    rules: HashMap<String, u32>,
    /// Bytes the tests read.
    prefix_len: usize,
}

#[derive(Debug)]
struct IndexedBranch {
    groups: Vec<Box<[u32]>>,
    max_size: Option<u64>,
}

/// The preconditions a stream failed, as bits over a plan's distinct
/// preconditions.
pub type RuledOut = Arc<[u64]>;

impl PreconditionPlan {
    /// The plan of the rules `reports` describes (their `precondition`).
    pub fn new(reports: &[RuleReport]) -> PreconditionPlan {
        let mut plan = PreconditionPlan::default();
        let mut test_index: HashMap<&ByteTest, u32> = HashMap::new();
        let mut branch_index: HashMap<&Branch, u32> = HashMap::new();
        for report in reports {
            let Some(Gate { branches }) = &report.precondition else {
                continue;
            };
            let [branch] = branches.as_slice() else {
                continue;
            };
            let index = *branch_index.entry(branch).or_insert_with(|| {
                let groups = branch
                    .header
                    .iter()
                    .map(|group| {
                        group
                            .iter()
                            .map(|t| plan.test(t, &mut test_index))
                            .collect()
                    })
                    .collect();
                plan.branches.push(IndexedBranch {
                    groups,
                    max_size: branch.max_size,
                });
                plan.branches.len() as u32 - 1
            });
            plan.rules.insert(report.identifier.clone(), index);
        }
        plan.prefix_len = plan.tests.iter().map(ByteTest::end).max().unwrap_or(0);
        plan
    }

    /// The index of `test` in `tests`, added once.
    fn test<'a>(&mut self, test: &'a ByteTest, index: &mut HashMap<&'a ByteTest, u32>) -> u32 {
        *index.entry(test).or_insert_with(|| {
            self.tests.push(test.clone());
            self.tests.len() as u32 - 1
        })
    }

    /// Whether no rule has a precondition.
    pub fn is_empty(&self) -> bool {
        self.branches.is_empty()
    }

    /// How many first bytes the preconditions read.
    pub fn prefix_len(&self) -> usize {
        self.prefix_len
    }

    /// The precondition of a rule, as an index into a [`RuledOut`] set.
    pub fn precondition_of(&self, identifier: &str) -> Option<u32> {
        self.rules.get(identifier).copied()
    }

    /// The preconditions failed by a stream whose first bytes are
    /// `prefix` (all of them, up to [`Self::prefix_len`]) and whose
    /// length is at least `len`; `None` when it fails none. A test fails
    /// once a byte it reads differs (later bytes cannot change that).
    pub fn failed(&self, prefix: &[u8], len: u64, sets: &mut RuledOutSets) -> Option<RuledOut> {
        let fails: Vec<bool> = self
            .tests
            .iter()
            .map(|test| test.contradicted_by(prefix))
            .collect();
        let mut bits = vec![0u64; self.branches.len().div_ceil(64)];
        for (index, branch) in self.branches.iter().enumerate() {
            let failed = branch.max_size.is_some_and(|max| len > max)
                || branch
                    .groups
                    .iter()
                    .any(|group| group.iter().all(|&test| fails[test as usize]));
            if failed {
                bits[index / 64] |= 1 << (index % 64);
            }
        }
        bits.iter().any(|&word| word != 0).then(|| sets.share(bits))
    }
}

/// What a stream knows of the preconditions its first bytes failed: a
/// cache, derived from its first bytes (and recomputed from its head when
/// it is restored from a store, which does not keep it), so two contexts
/// that differ only here are the same stream state and compare equal.
#[derive(Debug, Clone, Default)]
pub struct FailedPreconditions(pub Option<RuledOut>);

impl PartialEq for FailedPreconditions {
    fn eq(&self, _: &FailedPreconditions) -> bool {
        true
    }
}

impl Eq for FailedPreconditions {}

impl FailedPreconditions {
    /// Whether the stream failed precondition `index`.
    pub fn contains(&self, index: u32) -> bool {
        let index = index as usize;
        let word = self.0.as_ref().and_then(|set| set.get(index / 64));
        word.is_some_and(|word| word & (1 << (index % 64)) != 0)
    }
}

/// The distinct [`RuledOut`] sets of a scanner's streams, kept once each.
#[derive(Debug, Default)]
pub struct RuledOutSets {
    sets: HashSet<RuledOut>,
}

impl RuledOutSets {
    fn share(&mut self, bits: Vec<u64>) -> RuledOut {
        if let Some(set) = self.sets.get(bits.as_slice()) {
            return set.clone();
        }
        let set: RuledOut = bits.into();
        if self.sets.len() < MAX_SHARED_SETS {
            self.sets.insert(set.clone());
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::analysis::RuleAnalysis;

    fn plan(source: &str) -> PreconditionPlan {
        let ast = yara_x_parser::ast::AST::from(source);
        let analysis = RuleAnalysis::from_asts(&[("<test>".to_string(), ast)], 1024);
        PreconditionPlan::new(&analysis.rules)
    }

    const LNK: &str = r#"
        private rule isLNK { condition: uint32(0) == 0x0000004C }
        rule download { strings: $ = "http" condition: isLNK and any of them }
        rule either { strings: $a = "x" condition: uint8(0) == 0x4C or $a }
        rule small { strings: $a = "x" condition: filesize < 10 and $a }
        rule zip { strings: $pk = "PK\x03\x04" $b = "y" condition: $pk at 0 and $b }
    "#;

    #[test]
    fn a_rule_named_as_a_conjunct_lends_its_precondition() {
        let plan = plan(LNK);
        let lnk = plan.precondition_of("isLNK").unwrap();
        assert_eq!(plan.precondition_of("download"), Some(lnk));
        assert_eq!(
            plan.precondition_of("either"),
            None,
            "an `or` is no precondition"
        );
        assert!(plan.precondition_of("small").is_some());
        assert!(plan.precondition_of("zip").is_some());
        assert_eq!(plan.prefix_len(), 4);
    }

    #[test]
    fn a_stream_fails_what_its_first_bytes_contradict() {
        let plan = plan(LNK);
        let mut sets = RuledOutSets::default();
        let out = |prefix: &[u8], len: u64, sets: &mut RuledOutSets| {
            let failed = FailedPreconditions(plan.failed(prefix, len, sets));
            ["download", "small", "zip"]
                .map(|rule| failed.contains(plan.precondition_of(rule).unwrap()))
        };
        assert_eq!(out(b"L\0\0\0xyz", 7, &mut sets), [false, false, true]);
        assert_eq!(out(b"GET / HTTP/1.1", 14, &mut sets), [true, true, true]);
        assert_eq!(out(b"PK\x03\x04", 4, &mut sets), [true, false, false]);
        // Too short to tell: nothing is failed yet.
        assert_eq!(out(b"L", 1, &mut sets), [false, false, true]);
        assert_eq!(plan.failed(b"", 0, &mut sets), None);
        // Equal outcomes share one set.
        let a = plan.failed(b"GET /a", 6, &mut sets).unwrap();
        let b = plan.failed(b"POST /", 6, &mut sets).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
    }
}
