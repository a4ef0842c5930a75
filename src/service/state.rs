//! What every handler of the service shares.
//!
//! Its own module so that the route modules (`api.rs`, `events.rs`) both
//! see it and neither imports the other for it: `api.rs` names the event
//! handlers in its routes, and the imports point one way.

use super::body::BodyLimits;
use crate::engine::EngineHandle;
use crate::rules::RuleOptions;
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, RwLock};

/// What every handler shares.
pub struct ApiState {
    /// The engine.
    pub engine: EngineHandle,
    /// The bounds of a request body.
    pub body: BodyLimits,
    /// Where `POST /v1/rules/reload` reads rules from.
    pub rule_paths: Vec<PathBuf>,
    /// How rules are compiled (window cap, external variables).
    pub rule_options: RuleOptions,
    /// What `GET /v1/rules` answers about the rules now loaded.
    pub rules_summary: Arc<RwLock<serde_json::Value>>,
    /// Event subscriptions open now (both kinds).
    pub subscribers: Arc<AtomicUsize>,
    /// Most event subscriptions open at once.
    pub max_subscribers: usize,
}
