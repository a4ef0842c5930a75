//! What a chunk stream keeps for whole-data rules, and when it stops.
//!
//! A stream retains every byte while some whole-data rule may still need
//! them; it drops them as soon as every such rule's gate fails on its first
//! bytes or its length (its own verdict then decides those rules exactly),
//! and keeps only the first bytes the gates read when a limit stops it (the
//! gates still tell which rules its verdict decides; the others are
//! undecided).
//!
//! Dense rules (`rules::density`) also keep a stream retaining, with no
//! gate: a whole-buffer scan at its end is cheaper for them than the search.
//! The search decides them too (as exactly as it does any rule, so not
//! past `max_stream_matches`), so they give way first: a stream kept
//! for them alone stops retaining (as if its gates failed, and is searched
//! from its first byte) at a cap, or once the streams of the scanner
//! retain half its budget.

use super::{Retention, RetentionLimit, StreamContext};
use crate::rules::WholeDataPlan;

/// How much a stream may retain now.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RetentionRoom {
    /// Its own cap (`ScannerConfig::max_retained_stream_bytes`).
    pub stream_cap: usize,
    /// What the scanner's budget has left.
    pub budget_left: usize,
    /// What is left of the half of the budget that streams may hold for
    /// dense rules alone (no whole-data rule needs their bytes): so that
    /// streams whole-data rules need always find the other half.
    pub dense_left: usize,
}

impl StreamContext {
    /// Retains `data`, the bytes just recorded, as the stream's retention
    /// and the gates of `plan` say. A [`deferred`](StreamContext::deferred)
    /// stream that stops retaining returns every byte it received (`data`
    /// included): they must now be searched.
    pub(crate) fn retain(
        &mut self,
        data: &[u8],
        plan: &WholeDataPlan,
        room: RetentionRoom,
    ) -> Option<Vec<u8>> {
        let mut unsearched = None;
        match self.retention {
            Retention::Off | Retention::Gated => return None,
            Retention::Retaining if self.retained.len() + data.len() > room.stream_cap => {
                unsearched = self.all_bytes_if_deferred(data);
                self.stop_retaining(data, plan, RetentionLimit::StreamCap)
            }
            Retention::Retaining if data.len() > room.budget_left => {
                unsearched = self.all_bytes_if_deferred(data);
                self.stop_retaining(data, plan, RetentionLimit::Budget)
            }
            Retention::Retaining => self.retained.extend_from_slice(data),
            Retention::Cut { .. } => self.keep_prefix(data, plan),
        }
        // Dense rules alone keep a stream retaining only while it retains
        // all its bytes and the budget's dense half has room.
        let for_dense = self.retention == Retention::Retaining
            && plan.has_dense()
            && data.len() <= room.dense_left;
        if !for_dense && !plan.whole_data_needs(&self.retained, self.stats.bytes, false) {
            self.retention = Retention::Gated;
            let retained = std::mem::take(&mut self.retained);
            if self.deferred && unsearched.is_none() {
                unsearched = Some(retained);
            }
        }
        if unsearched.is_some() {
            self.deferred = false;
        }
        unsearched
    }

    /// The stream's bytes and `data` after them, if its search is deferred
    /// (it retains them all).
    fn all_bytes_if_deferred(&self, data: &[u8]) -> Option<Vec<u8>> {
        self.deferred.then(|| [&self.retained[..], data].concat())
    }

    /// Whether the stream's verdict for whole-data rules is a whole-buffer
    /// scan of its retained bytes: it kept them all, and some whole-data
    /// rule needs them.
    pub(crate) fn scans_whole(&self, plan: &WholeDataPlan) -> bool {
        self.retention == Retention::Retaining
            && plan.needs_bytes(&self.retained, self.stats.bytes, true)
    }

    fn stop_retaining(&mut self, data: &[u8], plan: &WholeDataPlan, limit: RetentionLimit) {
        self.retention = Retention::Cut { limit };
        self.keep_prefix(data, plan);
        self.retained.shrink_to_fit();
    }

    /// Keeps the stream's first `plan.prefix_len()` bytes: `retained` holds
    /// the stream's bytes before `data` up to that length.
    fn keep_prefix(&mut self, data: &[u8], plan: &WholeDataPlan) {
        let want = plan.prefix_len().saturating_sub(self.retained.len());
        self.retained
            .extend_from_slice(&data[..want.min(data.len())]);
        self.retained.truncate(plan.prefix_len());
    }
}
