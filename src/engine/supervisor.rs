//! The supervisor: starts the shards and answers for all of them.
//!
//! [`SupervisorActor`] runs on the engine's system thread. It starts one
//! arbiter (thread) per shard and a [`ShardActor`] in each, under actix's
//! `Supervisor`, which restarts a shard that stops after a fault. It keeps
//! the record of those faults, and serves the requests that concern every
//! shard: listing streams, counters, rule reloads and shutdown, by asking
//! each shard and joining the answers.
//!
//! Requests about one stream do not pass through here: the handle hashes
//! the stream id to its shard and sends there directly, so a chunk costs
//! one actor hop, not two.

use std::future::Future;
use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::oneshot;

use super::events::EventHub;
use super::ledger::ShardShared;
use super::residency::Residency;
use super::shard::{Reply, ShardActor, ShardCommand, ShardFailed};
use super::streams::{ShardReport, ShardStats};
use crate::config::EngineConfig;
use crate::error::EngineError;
use crate::rules::RuleSet;

/// A shard's fault, as the supervisor recorded it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ShardFailure {
    /// The shard.
    pub shard: usize,
    /// Streams it held, now lost.
    pub lost_streams: usize,
    /// The panic message.
    pub reason: String,
}

/// Requests that concern every shard.
pub(crate) enum SupervisorCommand {
    /// Ids of every open stream.
    Active(Reply<Vec<uuid::Uuid>>),
    /// Every shard's counters and the faults so far.
    Stats(Reply<(Vec<ShardStats>, Vec<ShardFailure>)>),
    /// New streams use these rules from now on.
    Reload(Arc<RuleSet>, Reply<()>),
    /// Every shard writes a checkpoint now; streams written, summed.
    Checkpoint(Reply<usize>),
    /// Every shard closes its streams; then the engine stops.
    Shutdown(oneshot::Sender<Vec<Result<ShardReport, EngineError>>>),
}

impl Message for SupervisorCommand {
    type Result = ();
}

/// The supervisor actor.
pub(crate) struct SupervisorActor {
    shards: Vec<Addr<ShardActor>>,
    arbiters: Vec<Arbiter>,
    failures: Vec<ShardFailure>,
}

/// The most faults the supervisor remembers (the metrics count them all).
const FAULTS_KEPT: usize = 64;

impl SupervisorActor {
    /// Starts the supervisor and `config.shard_count()` shards; must run
    /// inside an actix system.
    pub fn start(
        rules: Arc<RuleSet>,
        config: &EngineConfig,
        events: Arc<EventHub>,
        shared: &[Arc<ShardShared>],
        residencies: Vec<Option<Residency>>,
    ) -> (Addr<SupervisorActor>, Vec<Addr<ShardActor>>) {
        let mut shards = Vec::new();
        let supervisor = SupervisorActor::create(|ctx| {
            let mut arbiters = Vec::new();
            for (shard, residency) in shared.iter().zip(residencies) {
                let arbiter = Arbiter::new();
                let (shard, config, rules, events) =
                    (shard.clone(), config.clone(), rules.clone(), events.clone());
                let supervisor = ctx.address().recipient();
                let addr = actix::Supervisor::start_in_arbiter(&arbiter.handle(), move |ctx| {
                    ctx.set_mailbox_capacity(config.mailbox_messages.max(16));
                    ShardActor::new(shard, config, rules, events, supervisor, residency)
                });
                shards.push(addr);
                arbiters.push(arbiter);
            }
            SupervisorActor {
                shards: shards.clone(),
                arbiters,
                failures: Vec::new(),
            }
        });
        (supervisor, shards)
    }

    /// Asks every shard; all the answers in shard order, or the first error.
    fn ask_all<T: Send + 'static>(
        &self,
        make: impl Fn(Reply<T>) -> ShardCommand,
    ) -> impl Future<Output = Result<Vec<T>, EngineError>> {
        let each = self.ask_each(make);
        async move { each.await.into_iter().collect() }
    }

    /// Asks every shard; each shard's answer, in shard order.
    fn ask_each<T: Send + 'static>(
        &self,
        make: impl Fn(Reply<T>) -> ShardCommand,
    ) -> impl Future<Output = Vec<Result<T, EngineError>>> {
        let receivers: Vec<_> = self
            .shards
            .iter()
            .map(|shard| {
                let (reply, receiver) = oneshot::channel();
                shard.do_send(make(reply));
                receiver
            })
            .collect();
        async move {
            let mut all = Vec::with_capacity(receivers.len());
            for receiver in receivers {
                all.push(receiver.await.unwrap_or(Err(EngineError::ShuttingDown)));
            }
            all
        }
    }
}

impl Actor for SupervisorActor {
    type Context = Context<Self>;
}

impl Handler<ShardFailed> for SupervisorActor {
    type Result = ();

    fn handle(&mut self, failed: ShardFailed, _ctx: &mut Context<Self>) {
        if self.failures.len() == FAULTS_KEPT {
            self.failures.remove(0);
        }
        self.failures.push(ShardFailure {
            shard: failed.shard,
            lost_streams: failed.lost,
            reason: failed.reason,
        });
    }
}

impl Handler<SupervisorCommand> for SupervisorActor {
    type Result = ();

    fn handle(&mut self, command: SupervisorCommand, ctx: &mut Context<Self>) {
        match command {
            SupervisorCommand::Active(reply) => {
                let all = self.ask_all(|reply| ShardCommand::Active { reply });
                actix::spawn(async move {
                    let _ = reply.send(all.await.map(|ids| ids.concat()));
                });
            }
            SupervisorCommand::Checkpoint(reply) => {
                let all = self.ask_all(|reply| ShardCommand::Checkpoint { reply });
                actix::spawn(async move {
                    let _ = reply.send(all.await.map(|counts| counts.into_iter().sum()));
                });
            }
            SupervisorCommand::Stats(reply) => {
                let all = self.ask_all(|reply| ShardCommand::Stats { reply });
                // The faults are read once the shards have answered.
                ctx.spawn(all.into_actor(self).map(|stats, supervisor, _| {
                    let _ = reply.send(stats.map(|stats| (stats, supervisor.failures.clone())));
                }));
            }
            SupervisorCommand::Reload(rules, reply) => {
                let all = self.ask_all(move |reply| ShardCommand::Reload {
                    rules: rules.clone(),
                    reply,
                });
                actix::spawn(async move {
                    let reloaded = all.await.map(|_| ());
                    if reloaded.is_ok() {
                        crate::metrics::rule_reloaded();
                    }
                    let _ = reply.send(reloaded);
                });
            }
            SupervisorCommand::Shutdown(reply) => {
                let all = self.ask_each(|reply| ShardCommand::Shutdown { reply });
                let arbiters = std::mem::take(&mut self.arbiters);
                actix::spawn(async move {
                    let reports = all.await;
                    for arbiter in &arbiters {
                        arbiter.stop();
                    }
                    // The shards' threads end, and with them what they hold
                    // (the stream store's file lock), before the answer.
                    for arbiter in arbiters {
                        let _ = arbiter.join();
                    }
                    let _ = reply.send(reports);
                    System::current().stop();
                });
            }
        }
    }
}

impl Drop for SupervisorActor {
    /// An engine dropped without a shutdown: the shards' threads stop too
    /// (dropping their streams, and their share of the stream store).
    fn drop(&mut self) {
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
    }
}
