//! Match events: rule matches pushed to subscribers as shards find them.
//!
//! A shard knows a stream's pattern matches when it searches a batch; it
//! knows which *rules* match when it evaluates the stream's conditions. So,
//! while anyone is subscribed, a shard evaluates right after each batch the
//! streams that found pattern matches in it (all of them with one more
//! search of their tails, so one condition harvest per batch), and reports
//! every rule it sees matching a stream for the first time. Verdicts asked
//! for by callers and the verdicts at close report too, so a rule that
//! matches only at the end of a stream (or only because of `not $a`) is
//! reported at the latest at close, with `at_close` set.
//!
//! Each subscription is a channel (`async-channel`: one receiver usable
//! from async code and from plain threads) holding at most
//! `EngineConfig::event_capacity` events. A shard never waits for a
//! subscriber: an event that finds a subscription full is dropped and
//! counted on that subscription and in `yaraflow_events_dropped_total`.
//! Size the capacity for the bursts you expect.
//!
//! The channel is unbounded and the capacity is counted at send, not a
//! bounded channel: a bounded one allocates every slot up front (65,536
//! events of about 110 bytes: 7 MB per subscriber, idle or not), while an
//! unbounded one grows in blocks of 31 events as they queue and frees
//! them as they are received. A dropped subscription closes and empties
//! its channel at once, and the next subscribe or publish forgets it.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use uuid::Uuid;

use crate::results::RuleMatch;

/// A rule seen matching a stream for the first time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MatchEvent {
    /// The stream.
    pub stream: Uuid,
    /// The shard that holds it.
    pub shard: usize,
    /// The rule's namespace.
    pub namespace: String,
    /// The rule's identifier.
    pub rule: String,
    /// Offset of the rule's first pattern match, if its patterns matched.
    pub offset: Option<u64>,
    /// Bytes of the stream searched when the match was seen.
    pub stream_bytes: u64,
    /// Whether the match was seen by the verdict at close.
    pub at_close: bool,
}

impl MatchEvent {
    fn new(stream: Uuid, shard: usize, rule: &RuleMatch, bytes: u64, at_close: bool) -> Self {
        MatchEvent {
            stream,
            shard,
            namespace: rule.namespace.clone(),
            rule: rule.identifier.clone(),
            offset: rule
                .patterns
                .iter()
                .filter_map(|p| p.matches.first().map(|m| m.offset))
                .min(),
            stream_bytes: bytes,
            at_close,
        }
    }
}

/// Why the engine closed a stream on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    /// It received no data for longer than `EngineConfig::idle_timeout`.
    IdleTimeout,
}

/// A stream the engine closed on its own, with its final verdict (the
/// only place that verdict goes: nobody asked for it).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClosedEvent {
    /// Why it was closed.
    pub reason: CloseReason,
    /// The shard that held it.
    pub shard: usize,
    /// The final verdict.
    #[serde(flatten)]
    pub results: crate::StreamResults,
}

struct Subscriber<T> {
    sender: async_channel::Sender<T>,
    dropped: Arc<AtomicU64>,
    capacity: usize,
}

/// One kind of event and its subscribers.
struct Broadcast<T> {
    subscribers: Mutex<Vec<Subscriber<T>>>,
    count: AtomicUsize,
}

impl<T> Default for Broadcast<T> {
    fn default() -> Self {
        Broadcast {
            subscribers: Mutex::new(Vec::new()),
            count: AtomicUsize::new(0),
        }
    }
}

impl<T: Clone> Broadcast<T> {
    fn subscribe(&self, capacity: usize, ended: &std::sync::atomic::AtomicBool) -> Subscription<T> {
        let (sender, receiver) = async_channel::unbounded();
        let dropped = Arc::new(AtomicU64::new(0));
        let mut subscribers = self.lock();
        subscribers.retain(|s| !s.sender.is_closed());
        if ended.load(Ordering::Acquire) {
            // The engine has shut down: an ended subscription.
            sender.close();
            return Subscription { receiver, dropped };
        }
        subscribers.push(Subscriber {
            sender,
            dropped: dropped.clone(),
            capacity: capacity.max(1),
        });
        self.count.store(subscribers.len(), Ordering::Release);
        Subscription { receiver, dropped }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Subscriber<T>>> {
        self.subscribers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn has_subscribers(&self) -> bool {
        self.count.load(Ordering::Acquire) > 0
    }

    /// Sends an event to every subscriber, never waiting.
    fn publish(&self, event: T) {
        let mut subscribers = self.lock();
        subscribers.retain(|s| {
            if s.sender.len() >= s.capacity && !s.sender.is_closed() {
                s.dropped.fetch_add(1, Ordering::Relaxed);
                crate::metrics::events_dropped(1);
                return true;
            }
            s.sender.try_send(event.clone()).is_ok()
        });
        self.count.store(subscribers.len(), Ordering::Release);
    }

    /// Ends the current subscriptions.
    fn end_all(&self) {
        let mut subscribers = self.lock();
        subscribers.iter().for_each(|s| {
            s.sender.close();
        });
        subscribers.clear();
        self.count.store(0, Ordering::Release);
    }
}

/// The subscribers of one engine, shared by its shards.
#[derive(Default)]
pub(crate) struct EventHub {
    matches: Broadcast<MatchEvent>,
    closes: Broadcast<ClosedEvent>,
    closed: std::sync::atomic::AtomicBool,
}

impl EventHub {
    /// A new subscription to match events with room for `capacity`.
    pub fn subscribe(&self, capacity: usize) -> Subscription {
        self.matches.subscribe(capacity, &self.closed)
    }

    /// A new subscription to the streams the engine closes on its own.
    pub fn subscribe_closes(&self, capacity: usize) -> Subscription<ClosedEvent> {
        self.closes.subscribe(capacity, &self.closed)
    }

    /// Whether anyone listens to match events (shards skip the work of
    /// events otherwise).
    pub fn has_subscribers(&self) -> bool {
        self.matches.has_subscribers()
    }

    fn publish(&self, event: MatchEvent) {
        self.matches.publish(event);
    }

    /// Sends a closed stream's final verdict to every subscriber.
    pub fn publish_closed(&self, event: ClosedEvent) {
        self.closes.publish(event);
    }

    /// Ends the current subscriptions.
    pub fn end_all(&self) {
        self.matches.end_all();
        self.closes.end_all();
    }

    /// Closes every subscription (at shutdown): receivers see the end once
    /// they have drained what was sent.
    pub fn close(&self) {
        // Under the lock, so that no subscription slips in after it.
        let _guard = (self.matches.lock(), self.closes.lock());
        self.closed.store(true, Ordering::Release);
        drop(_guard);
        self.end_all();
    }
}

/// The rules already reported per stream, kept by each shard.
#[derive(Default)]
pub(crate) struct Reported {
    rules: std::collections::HashMap<Uuid, Vec<(String, String)>, foldhash::fast::RandomState>,
    /// Count each new match in the per-rule metric too.
    per_rule: bool,
}

impl Reported {
    /// Nothing reported yet; `per_rule` counts matches per rule too.
    pub fn new(per_rule: bool) -> Reported {
        Reported {
            per_rule,
            ..Reported::default()
        }
    }

    /// Reports the rules of a verdict not reported before for this stream,
    /// and returns how many were new.
    pub fn report(
        &mut self,
        hub: &EventHub,
        shard: usize,
        results: &crate::StreamResults,
        at_close: bool,
    ) -> u64 {
        if results.rules.is_empty() {
            return 0;
        }
        let known = self.rules.entry(results.stream).or_default();
        let mut new = 0;
        for rule in &results.rules {
            let key = (rule.namespace.clone(), rule.identifier.clone());
            if known.contains(&key) {
                continue;
            }
            known.push(key);
            new += 1;
            if self.per_rule {
                crate::metrics::rule_matched(&rule.namespace, &rule.identifier);
            }
            if hub.has_subscribers() {
                let event =
                    MatchEvent::new(results.stream, shard, rule, results.stats.bytes, at_close);
                hub.publish(event);
            }
        }
        new
    }

    /// Forgets a stream (closed, reset or lost).
    pub fn forget(&mut self, stream: &Uuid) {
        self.rules.remove(stream);
    }

    /// Forgets every stream.
    pub fn clear(&mut self) {
        self.rules.clear();
    }
}

/// A subscription to match events (or, with
/// [`crate::EngineHandle::subscribe_closes`], to closed streams). Dropping
/// it unsubscribes.
pub struct Subscription<T = MatchEvent> {
    receiver: async_channel::Receiver<T>,
    dropped: Arc<AtomicU64>,
}

impl<T> Subscription<T> {
    /// The next event; `None` once the engine has shut down and every event
    /// was received.
    pub async fn recv(&self) -> Option<T> {
        self.receiver.recv().await.ok()
    }

    /// The next event, blocking the thread; `None` as for [`Self::recv`].
    /// Do not call it from async code.
    pub fn recv_blocking(&self) -> Option<T> {
        self.receiver.recv_blocking().ok()
    }

    /// The next event if one is waiting.
    pub fn try_recv(&self) -> Option<T> {
        self.receiver.try_recv().ok()
    }

    /// Events dropped because this subscription was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl<T> Drop for Subscription<T> {
    /// Closes the channel and frees the events still queued in it now,
    /// rather than when a shard next publishes.
    fn drop(&mut self) {
        self.receiver.close();
        while self.receiver.try_recv().is_ok() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_subscription_drops_and_counts_and_a_dropped_one_is_forgotten() {
        let hub = Broadcast::<u32>::default();
        let ended = std::sync::atomic::AtomicBool::new(false);
        let subscription = hub.subscribe(2, &ended);
        (0..3).for_each(|n| hub.publish(n));
        assert_eq!(subscription.try_recv(), Some(0));
        assert_eq!(subscription.try_recv(), Some(1));
        assert_eq!(subscription.try_recv(), None);
        assert_eq!(subscription.dropped(), 1);
        hub.publish(7);
        drop(subscription);
        assert!(hub.has_subscribers());
        hub.publish(8);
        assert!(
            !hub.has_subscribers(),
            "a dropped subscription is forgotten"
        );
    }
}
