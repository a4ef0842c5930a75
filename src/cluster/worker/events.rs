//! Match events (with [`ClusterConfig::events`](crate::cluster::ClusterConfig::events)):
//! each rule seen matching a stream for the first time is published to
//! `<prefix>.events`, as the engine's subscribers get it.
//!
//! A search finds pattern matches; a rule's match needs its condition
//! evaluated. So after each applied message, each lease tick and before
//! each checkpoint, the worker evaluates the streams whose search found
//! matches (the scanner names them) and publishes the rules it has not
//! reported for them yet; the close publishes those still unreported
//! (`at_close`: a rule that matches only at the end, or only through
//! `not $a`). A rule reported mid-stream whose condition later fails (a
//! count that grows past `#a == 1`) stays reported: an event says a rule
//! matched the bytes seen so far; the verdict is final.
//!
//! Each event's message id is the stream, the sequence of its first
//! message and the rule, so a replay after a takeover (which has not kept
//! what was reported: that set lives in memory) publishes nothing twice
//! within the duplicate window, and a stream id used again later is a new
//! stream.

use std::collections::HashSet;

use uuid::Uuid;

use super::{Runner, WorkerStats};
use crate::cluster::error::ClusterError;
use crate::results::StreamResults;

/// One match event, as published (JSON).
#[derive(serde::Serialize)]
struct MatchEvent<'r> {
    stream: Uuid,
    partition: u32,
    namespace: &'r str,
    rule: &'r str,
    /// The offset of the rule's first pattern match, if it has patterns.
    offset: Option<u64>,
    /// The stream's bytes when the match was seen.
    stream_bytes: u64,
    /// Whether it was seen by the verdict at close.
    at_close: bool,
}

/// The message id of the event of `rule` on the stream whose first
/// message is at `opened`.
pub fn event_id(stream: &Uuid, opened: u64, rule: &str) -> String {
    format!("{stream}:{opened}:{rule}")
}

impl Runner<'_> {
    /// Publishes the rules newly matching the streams whose search found
    /// matches since the last call (nothing without events). A partition
    /// whose event cannot be published is dropped, to replay.
    pub(super) async fn report_new_matches(&mut self) {
        if !self.config.events {
            return;
        }
        let streams = self.scanner.take_streams_with_new_matches();
        if streams.is_empty() {
            return;
        }
        let verdicts = self.scanner.verdicts(&streams);
        // The verdicts' search found those matches again.
        self.scanner.forget_new_matches(&streams);
        let verdicts = match verdicts {
            Ok(verdicts) => verdicts,
            Err(err) => {
                // Their rules are reported at close.
                self.stats.problem(err);
                return;
            }
        };
        for results in &verdicts {
            self.report(results).await;
        }
    }

    async fn report(&mut self, results: &StreamResults) {
        let partition = self.partitioner.partition_of(&results.stream);
        let Some(o) = self.owned.get_mut(&partition) else {
            return;
        };
        let Some(&opened) = o.streams.get(&results.stream) else {
            return;
        };
        let mut reported = o.reported.remove(&results.stream).unwrap_or_default();
        let published = self
            .publish_events(partition, results, opened, &mut reported, false)
            .await;
        if let Err(err) = published {
            self.lose(partition, format!("a match event was not published: {err}"))
                .await;
            return;
        }
        if let Some(o) = self.owned.get_mut(&partition) {
            o.reported.insert(results.stream, reported);
        }
    }

    /// Publishes an event for each rule of `results` not in `reported`
    /// (which gains them).
    pub(super) async fn publish_events(
        &mut self,
        partition: u32,
        results: &StreamResults,
        opened: u64,
        reported: &mut HashSet<String>,
        at_close: bool,
    ) -> Result<(), ClusterError> {
        for rule in &results.rules {
            let name = format!("{}.{}", rule.namespace, rule.identifier);
            if reported.contains(&name) {
                continue;
            }
            let event = MatchEvent {
                stream: results.stream,
                partition,
                namespace: &rule.namespace,
                rule: &rule.identifier,
                offset: rule
                    .patterns
                    .iter()
                    .filter_map(|p| p.matches.first().map(|m| m.offset))
                    .min(),
                stream_bytes: results.stats.bytes,
                at_close,
            };
            let payload = serde_json::to_vec(&event).expect("an event serializes");
            let id = event_id(&results.stream, opened, &name);
            let subject = self.config.event_subject();
            self.publish_once(partition, subject, payload, id).await?;
            WorkerStats::add(&self.stats.events, 1);
            reported.insert(name);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_id_names_the_stream_its_start_and_the_rule() {
        let stream = Uuid::from_u128(5);
        assert_eq!(
            event_id(&stream, 10, "default.r"),
            event_id(&stream, 10, "default.r")
        );
        assert_ne!(
            event_id(&stream, 10, "default.r"),
            event_id(&stream, 11, "default.r")
        );
        assert_ne!(
            event_id(&stream, 10, "default.r"),
            event_id(&stream, 10, "default.s")
        );
    }
}
