//! The actor engine: scanning on every core.
//!
//! An [`Engine`] runs one actix system on a thread of its own. In it a
//! supervisor actor (`engine/supervisor.rs`) starts N shard actors
//! (`engine/shard.rs`, a thin actor over the shard's work,
//! `engine/streams.rs`), each on its own thread (an actix arbiter) with its
//! own [`crate::MultiStreamScanner`]: one YARA-X instance per core, each
//! switching between the many streams of its shard. A stream belongs to the
//! shard its id hashes to (`engine/shard_map.rs`), so its chunks are
//! scanned by one actor, in order; different streams proceed in parallel.
//! Errors found after a chunk was queued wait for the stream's next caller
//! in the shard's ledger (`engine/ledger.rs`).
//!
//! ```text
//!  producers ── EngineHandle ──hash(stream)──▶ shard 0 (thread): scanner, contexts
//!     │          (gate: bounded)          ├──▶ shard 1 (thread): scanner, contexts
//!     │                                   └──▶ ...
//!     └── active/stats/reload/shutdown ──▶ supervisor ──▶ every shard
//!  subscribers ◀── match events (bounded channels) ◀── shards
//! ```
//!
//! Design choices, and why:
//!
//! * A chunk costs one actor hop: the handle sends it straight to its shard
//!   with `do_send` (about 0.5 us), without waiting for a reply; a reply
//!   round trip costs ~100 times more. Queries and closes wait for their
//!   answer.
//! * Backpressure without loss: each shard's queue is bounded in messages
//!   and bytes (`engine/gate.rs`); a producer waits while it is full, up to
//!   `EngineConfig::overload_after`, then gets
//!   [`crate::EngineError::Overloaded`] and keeps its chunk.
//! * Faults stay in their shard: a panic while a shard works marks its
//!   streams lost (their next caller gets
//!   [`crate::EngineError::StreamLost`]) and actix restarts the shard with
//!   empty scanners; other shards go on untouched.
//! * A verdict that times out (`ScannerConfig::scan_timeout`) is an error
//!   to the caller who asked for it. A query leaves the stream open and
//!   usable, its state unchanged; a close closes it all the same (a close
//!   always closes) and returns the error instead of the verdict.
//! * Rule reloads are generational (`engine/generation.rs`): streams opened before
//!   a reload finish on the rules they started with, new streams get the new
//!   rules, and the old rules are freed when their last stream closes.
//! * Shutdown drains: the handle stops taking data, every chunk already
//!   admitted is scanned, and every open stream is closed with its final
//!   verdict in the [`ShutdownReport`].
//! * Metrics go through the `metrics` facade ([`crate::metrics`]).

mod events;
mod gate;
mod generation;
mod handle;
mod ledger;
mod residency;
mod shard;
mod shard_map;
mod streams;
mod supervisor;

use std::sync::Arc;
use std::thread::JoinHandle;

pub use events::{CloseReason, ClosedEvent, MatchEvent, Subscription};
pub use handle::{BlockingHandle, EngineHandle, EngineStats, ShutdownReport};
pub use streams::{ShardStats, StreamOffsets};
pub use supervisor::ShardFailure;

use crate::config::EngineConfig;
use crate::error::EngineError;
use crate::error::StoreError;
use crate::rules::RuleSet;
use crate::store::{rules_tag, ContextStore, Listing, OnRulesChange, StoredEntry};
use handle::{EngineShared, ShardLink};
use ledger::ShardShared;
use shard_map::ShardMap;
use uuid::Uuid;

/// A running engine: its actor system thread and a handle on it.
///
/// Dropping an engine that was not shut down stops its threads and
/// discards the open streams' state; call [`Engine::shutdown`] (or a
/// handle's `shutdown`) to get their final verdicts.
pub struct Engine {
    handle: EngineHandle,
    system: Option<(actix::System, JoinHandle<()>)>,
    /// The stream store: the engine lets go of it last, when it stops, so
    /// that the file is closed (and unlocked) when `stop` returns.
    store: Option<Arc<ContextStore>>,
}

impl Engine {
    /// Starts the supervisor and `config.shard_count()` shards on `rules`.
    pub fn start(rules: RuleSet, config: EngineConfig) -> Result<Engine, EngineError> {
        Engine::start_shared(Arc::new(rules), config)
    }

    /// [`Engine::start`] on rules shared with other users (the C API's
    /// rules serve its scanners and engines alike).
    pub fn start_shared(rules: Arc<RuleSet>, config: EngineConfig) -> Result<Engine, EngineError> {
        crate::metrics::register_engine();
        let shards = config.shard_count();
        let shared: Vec<Arc<ShardShared>> = (0..shards)
            .map(|index| Arc::new(ShardShared::new(index, &config)))
            .collect();
        let events = Arc::new(events::EventHub::default());
        let map = ShardMap::new(shards);
        let residencies = open_store(&rules, &config, &map, &shared)?;
        let store = residencies
            .iter()
            .flatten()
            .next()
            .map(|r| r.store().clone());
        let (started, on_start) = std::sync::mpsc::channel();
        let thread = {
            let (shared, config, events) = (shared.clone(), config.clone(), events.clone());
            std::thread::Builder::new()
                .name("yaraflow-engine".into())
                .spawn(move || {
                    let system = actix::System::new();
                    system.block_on(async {
                        let actors = supervisor::SupervisorActor::start(
                            rules,
                            &config,
                            events,
                            &shared,
                            residencies,
                        );
                        let _ = started.send((actix::System::current(), actors));
                    });
                    let _ = system.run();
                })
                .map_err(|e| EngineError::Start(format!("cannot spawn the engine thread: {e}")))?
        };
        let (system, (supervisor, addrs)) = on_start
            .recv()
            .map_err(|_| EngineError::Start("the engine thread stopped while starting".into()))?;
        let links = addrs
            .into_iter()
            .zip(shared)
            .map(|(addr, shared)| ShardLink { addr, shared })
            .collect();
        let inner = EngineShared {
            shards: links,
            supervisor,
            events,
            config,
            map,
        };
        Ok(Engine {
            handle: EngineHandle::new(Arc::new(inner)),
            system: Some((system, thread)),
            store,
        })
    }

    /// A handle on the engine (async methods; see
    /// [`EngineHandle::blocking`] for plain threads).
    pub fn handle(&self) -> EngineHandle {
        self.handle.clone()
    }

    /// Shuts the engine down (see [`EngineHandle::shutdown`]) and waits for
    /// its threads. Blocks: do not call it from async code (use the
    /// handle's `shutdown().await`, then drop the engine).
    pub fn shutdown(mut self) -> Result<ShutdownReport, EngineError> {
        let report = self.handle.blocking().shutdown();
        self.stop();
        report
    }

    fn stop(&mut self) {
        if let Some((system, thread)) = self.system.take() {
            // Handles that outlive the engine get `ShuttingDown`.
            self.handle.close();
            system.stop();
            let _ = thread.join();
        }
        // The shards' threads drop their share of the store as they end;
        // then ours is the last, and dropping it closes the file here.
        if let Some(store) = self.store.take() {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while Arc::strong_count(&store) > 1 && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            drop(store);
        }
    }
}

/// Opens the stream store, if the config has one, and hands each shard the
/// stored streams that hash to it. Streams of other rules are refused or
/// discarded (`StoreConfig::on_rules_change`); damaged entries fail their
/// stream alone (its caller learns it) and are deleted.
fn open_store(
    rules: &RuleSet,
    config: &EngineConfig,
    map: &ShardMap,
    shared: &[Arc<ShardShared>],
) -> Result<Vec<Option<residency::Residency>>, EngineError> {
    let Some(store_config) = &config.store else {
        return Ok(shared.iter().map(|_| None).collect());
    };
    let store = ContextStore::open(&store_config.path, store_config.cache_bytes)?;
    let Listing { entries, damaged } = store.entries()?;
    let tag = rules_tag(&rules.fingerprint());
    let (ours, others): (Vec<StoredEntry>, Vec<StoredEntry>) =
        entries.into_iter().partition(|e| e.rules == tag);
    if !others.is_empty() && store_config.on_rules_change == OnRulesChange::Refuse {
        return Err(StoreError::RulesChanged {
            path: store_config.path.clone(),
            streams: others.len(),
        }
        .into());
    }
    let mut dropped: Vec<Uuid> = others.iter().map(|e| e.stream).collect();
    for (stream, error) in damaged {
        shared[map.shard_of(&stream)].failures.record(
            stream,
            EngineError::StreamFailed {
                stream,
                reason: error.to_string(),
            },
        );
        dropped.push(stream);
    }
    if !dropped.is_empty() {
        store.write(std::iter::empty(), tag, &dropped)?;
    }
    let mut per_shard: Vec<Vec<StoredEntry>> = shared.iter().map(|_| Vec::new()).collect();
    for entry in ours {
        per_shard[map.shard_of(&entry.stream)].push(entry);
    }
    let store = Arc::new(store);
    Ok(per_shard
        .into_iter()
        .enumerate()
        .map(|(index, stored)| {
            let residency =
                residency::Residency::new(store.clone(), store_config, shared.len(), index, stored);
            Some(residency)
        })
        .collect())
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests;
