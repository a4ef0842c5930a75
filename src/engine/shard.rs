//! The shard: one scanner actor, on its own thread, owning a share of the
//! streams.
//!
//! This file keeps the actor: its commands, its fault boundary and the
//! actix traits. The work itself (scanners, residency, what was reported,
//! metrics) is [`Streams`] (`engine/streams.rs`), a plain struct that each
//! command becomes one call of.
//!
//! A shard's scanners (one per rule generation, see
//! [`super::generation`]) live in its [`Streams`]; YARA-X scanners are not
//! `Send`, so they are built on the shard's thread and never leave it.
//! Every request reaches the shard as one [`ShardCommand`] through its
//! actix mailbox, in the order its producer sent it. Chunks carry no
//! reply; queries and closes carry a oneshot channel.
//!
//! Faults: every command runs under `catch_unwind`. A panic (from YARA-X or
//! from yaraflow) leaves the scanners in an unknown state, so the shard
//! marks every stream it held as lost (their next caller gets
//! `StreamLost`), takes empty scanners on the same rules, reports the fault
//! ([`ShardFailed`], to a `Recipient`), and stops; actix's `Supervisor`
//! restarts it at once on the same mailbox, so the chunks queued behind
//! the fault are not lost (those of lost streams are refused, new streams
//! open normally). Other shards never notice.
//!
//! Errors that concern one chunk after its sender has returned (the
//! per-shard stream limit, a failed search) are recorded against the
//! stream in the shard's ledger (`engine/ledger.rs`), so that its next
//! caller learns of them instead of getting a verdict over a stream with a
//! hole. Data of the wrong mode leaves no hole: it is dropped and counted,
//! and the stream goes on. Acknowledged appends, and requests admitted
//! whole ([`ShardCommand::Admit`]), are checked before anything is
//! applied, so their caller gets the refusal and no stream changes.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use bytes::Bytes;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::events::EventHub;
use super::ledger::ShardShared;
use super::residency::Residency;
use super::streams::{ShardReport, ShardStats, StreamOffsets, Streams};
use crate::config::EngineConfig;
use crate::error::EngineError;
use crate::results::StreamResults;
use crate::rules::{External, RuleSet};
use crate::stream::StreamMode;

/// A reply channel.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, EngineError>>;

/// What a shard can be asked to do.
pub(crate) enum ShardCommand {
    /// Append data to streams, in order. Errors are kept for each
    /// stream's next caller; with `ack`, that stream's new offset (or its
    /// error) is also sent back once the data is taken.
    Append {
        items: Vec<(Uuid, Bytes)>,
        bytes: usize,
        mode: StreamMode,
        submitted: Instant,
        ack: Option<(Uuid, Reply<u64>)>,
    },
    /// Checks, before any of a request's data is sent, that it can all be
    /// taken: each stream (with the index of its first item in the
    /// request) is not failed, not open in the other mode, and the new
    /// ones fit under `max_open_streams`. If so, the new streams are
    /// opened (the data follows in an `Append`) and sent back; if not,
    /// nothing changes and the refusal names the item.
    Admit {
        streams: Vec<(Uuid, usize)>,
        mode: StreamMode,
        reply: Reply<Vec<Uuid>>,
    },
    /// Closes streams an `Admit` opened, if they still hold no data (the
    /// request was refused by another shard).
    Release { streams: Vec<Uuid> },
    /// The verdict of a stream so far, closing it if `close`.
    Verdict {
        stream: Uuid,
        close: bool,
        reply: Reply<Option<StreamResults>>,
    },
    /// Close several streams, searching their tails together; one reply
    /// per stream, in order.
    CloseMany {
        streams: Vec<Uuid>,
        replies: Vec<Reply<Option<StreamResults>>>,
    },
    /// Open a stream (if it is not open) with its own externals.
    Open {
        stream: Uuid,
        mode: StreamMode,
        externals: Vec<External>,
        reply: Reply<()>,
    },
    /// Put a stream back at offset 0.
    Reset { stream: Uuid, reply: Reply<()> },
    /// Write a checkpoint now and enforce the resident bounds; replies
    /// with the streams written.
    Checkpoint { reply: Reply<usize> },
    /// A stream's offset and durable offset.
    Offsets {
        stream: Uuid,
        reply: Reply<Option<StreamOffsets>>,
    },
    /// Ids of the shard's open streams.
    Active { reply: Reply<Vec<Uuid>> },
    /// The shard's counters.
    Stats { reply: Reply<ShardStats> },
    /// New streams use these rules from now on.
    Reload {
        rules: Arc<RuleSet>,
        reply: Reply<()>,
    },
    /// Close every stream and hand back the final verdicts.
    Shutdown { reply: Reply<ShardReport> },
    /// Panic (fault-injection for tests).
    #[cfg(test)]
    Panic,
}

impl Message for ShardCommand {
    type Result = ();
}

/// Sent by a shard that failed, just before it restarts, to whoever keeps
/// the record of faults (the supervisor). The shard holds a `Recipient` of
/// it, not the supervisor's address: the shard knows nothing of the
/// supervisor, and the imports point one way.
pub(crate) struct ShardFailed {
    pub shard: usize,
    pub lost: usize,
    pub reason: String,
}

impl Message for ShardFailed {
    type Result = ();
}

/// One scanner actor: a thin shell over its [`Streams`], which hold the
/// work; the actor runs each command under the fault boundary.
pub(crate) struct ShardActor {
    streams: Streams,
    shared: Arc<ShardShared>,
    /// Where the shard's faults are reported.
    faults: Recipient<ShardFailed>,
}

impl ShardActor {
    pub fn new(
        shared: Arc<ShardShared>,
        config: EngineConfig,
        rules: Arc<RuleSet>,
        events: Arc<EventHub>,
        faults: Recipient<ShardFailed>,
        residency: Option<Residency>,
    ) -> ShardActor {
        ShardActor {
            streams: Streams::new(shared.clone(), config, rules, events, residency),
            shared,
            faults,
        }
    }

    /// Runs `work` on the streams under `catch_unwind`; a panic fails the
    /// shard.
    fn guarded<R>(
        &mut self,
        ctx: &mut Context<Self>,
        work: impl FnOnce(&mut Streams) -> R,
    ) -> Option<R> {
        match catch_unwind(AssertUnwindSafe(|| work(&mut self.streams))) {
            Ok(result) => Some(result),
            Err(payload) => {
                self.fail(ctx, panic_message(payload.as_ref()));
                None
            }
        }
    }

    /// After a panic: every stream of the shard is lost; stop, so that the
    /// supervisor restarts the shard.
    fn fail(&mut self, ctx: &mut Context<Self>, reason: String) {
        let lost = self.streams.lose_all(reason.clone());
        self.faults.do_send(ShardFailed {
            shard: self.shared.index,
            lost,
            reason,
        });
        ctx.stop();
    }

    fn run(&mut self, command: ShardCommand, ctx: &mut Context<Self>) {
        match command {
            ShardCommand::Append {
                items,
                bytes,
                mode,
                submitted,
                ack,
            } => {
                self.shared.gate.release(bytes);
                // An acknowledged append is checked whole first: a refusal
                // (a mode mismatch, the stream limit) is its caller's
                // answer, and leaves the stream as it was.
                let ack = match ack {
                    Some((stream, reply)) => {
                        let firsts = first_items(&items);
                        match self.guarded(ctx, |shard| shard.admit(&firsts, mode, false)) {
                            Some(Ok(_)) => Some((stream, reply)),
                            Some(Err((_, refusal))) => {
                                let _ = reply.send(Err(refusal));
                                return;
                            }
                            None => {
                                let _ = reply.send(Err(self.lost(stream)));
                                return;
                            }
                        }
                    }
                    None => None,
                };
                let done = self.guarded(ctx, |shard| {
                    for (stream, data) in &items {
                        shard.append(*stream, data, mode, submitted);
                    }
                    shard.enforce_bounds_if_over();
                });
                if done.is_none() {
                    // Streams this message would have opened were not open
                    // when the shard failed: lost all the same.
                    let streams: Vec<Uuid> = items.iter().map(|(stream, _)| *stream).collect();
                    self.streams.mark_lost(&streams);
                }
                if let Some((stream, reply)) = ack {
                    let offset = match done {
                        Some(()) => self.guarded(ctx, |shard| shard.offset(stream)),
                        None => None,
                    };
                    let _ = reply.send(offset.unwrap_or_else(|| Err(self.lost(stream))));
                }
            }
            ShardCommand::Admit {
                streams,
                mode,
                reply,
            } => {
                let result = self.guarded(ctx, |shard| shard.admit(&streams, mode, true));
                let answer = match result {
                    Some(Ok(opened)) => Ok(opened),
                    Some(Err((index, refusal))) => Err(EngineError::Refused {
                        index,
                        source: Box::new(refusal),
                    }),
                    None => Err(self.panicked()),
                };
                let _ = reply.send(answer);
            }
            ShardCommand::Release { streams } => {
                self.guarded(ctx, |shard| shard.release(&streams));
            }
            ShardCommand::Verdict {
                stream,
                close,
                reply,
            } => {
                let result = self.guarded(ctx, |shard| shard.verdict(stream, close));
                let _ = reply.send(result.unwrap_or_else(|| Err(self.lost(stream))));
            }
            ShardCommand::CloseMany { streams, replies } => {
                self.guarded(ctx, |shard| shard.prepare_verdicts(&streams));
                for (stream, reply) in streams.into_iter().zip(replies) {
                    let result = self.guarded(ctx, |shard| shard.verdict(stream, true));
                    let _ = reply.send(result.unwrap_or_else(|| Err(self.lost(stream))));
                }
            }
            ShardCommand::Open {
                stream,
                mode,
                externals,
                reply,
            } => {
                let result = self.guarded(ctx, |shard| shard.open(stream, mode, externals));
                let _ = reply.send(result.unwrap_or_else(|| Err(self.lost(stream))));
            }
            ShardCommand::Reset { stream, reply } => {
                let result = self.guarded(ctx, |shard| shard.reset(stream));
                let _ = reply.send(result.unwrap_or_else(|| Err(self.lost(stream))));
            }
            ShardCommand::Checkpoint { reply } => {
                let result = self.guarded(ctx, |shard| shard.checkpoint_now());
                let _ = reply.send(result.unwrap_or_else(|| Err(self.panicked())));
            }
            ShardCommand::Offsets { stream, reply } => {
                let result = self.guarded(ctx, |shard| shard.offsets(stream));
                let _ = reply.send(result.unwrap_or_else(|| Err(self.lost(stream))));
            }
            ShardCommand::Active { reply } => {
                let result = self.guarded(ctx, |shard| shard.active_streams());
                let _ = reply.send(result.ok_or_else(|| self.panicked()));
            }
            ShardCommand::Stats { reply } => {
                let result = self.guarded(ctx, |shard| shard.stats());
                let _ = reply.send(result.ok_or_else(|| self.panicked()));
            }
            ShardCommand::Reload { rules, reply } => {
                let result = self.guarded(ctx, |shard| shard.reload(rules));
                let _ = reply.send(result.ok_or_else(|| self.panicked()));
            }
            ShardCommand::Shutdown { reply } => {
                let report = self.guarded(ctx, |shard| shard.shutdown());
                let report = report.unwrap_or_else(|| {
                    // A fault half-way: what was closed, and the lost rest.
                    self.streams.take_closing()
                });
                let _ = reply.send(Ok(report));
            }
            #[cfg(test)]
            ShardCommand::Panic => {
                self.guarded(ctx, |_| panic!("injected fault"));
            }
        }
    }

    /// The error for a caller whose command failed the shard.
    fn lost(&self, stream: Uuid) -> EngineError {
        self.shared
            .failures
            .get(&stream)
            .unwrap_or_else(|| self.panicked())
    }

    fn panicked(&self) -> EngineError {
        EngineError::ShardFailed {
            shard: self.shared.index,
        }
    }
}

/// Each stream once, with the index of its first item.
fn first_items(items: &[(Uuid, Bytes)]) -> Vec<(Uuid, usize)> {
    let mut seen = std::collections::HashSet::new();
    items
        .iter()
        .enumerate()
        .filter(|(_, (stream, _))| seen.insert(*stream))
        .map(|(index, (stream, _))| (*stream, index))
        .collect()
}

/// The text of a panic.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        text.to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "panic".to_string()
    }
}

impl Actor for ShardActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Runs again after each restart (the restart drops the interval).
        ctx.run_interval(self.streams.tick_every(), |shard, ctx| {
            shard.guarded(ctx, |shard| {
                shard.tick();
                shard.report_new_matches();
                shard.maintain();
            });
        });
    }
}

impl Supervised for ShardActor {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        // The streams got empty scanners when the fault was met.
        self.streams.restarted();
    }
}

impl Handler<ShardCommand> for ShardActor {
    type Result = ();

    fn handle(&mut self, command: ShardCommand, ctx: &mut Context<Self>) {
        self.run(command, ctx);
        self.guarded(ctx, |shard| shard.report_new_matches());
    }
}
