//! yaraflow: scan many concurrent byte streams with YARA-X rules.
//!
//! Each stream is named by a UUID and keeps its own matching state between
//! the chunks that arrive for it, interleaved with the chunks of any number
//! of other streams. One YARA-X instance serves all of them
//! ([`MultiStreamScanner`]); a stream is a small plain-data
//! [`StreamContext`].
//!
//! The contract: for every rule that [`rules::analysis`] marks supported,
//! the verdict of a stream equals a whole-buffer YARA-X scan of its bytes,
//! under any chunking and interleaving.
//!
//! ```
//! use yaraflow::{MultiStreamScanner, RuleSet, ScannerConfig, Uuid};
//!
//! let config = ScannerConfig::default();
//! let rules = RuleSet::from_source(
//!     r#"rule basic_auth { strings: $a = "Authorization: Basic" condition: $a }"#,
//!     config.max_pattern_len,
//! )?;
//! let mut scanner = MultiStreamScanner::new(&rules, config);
//! let flow = Uuid::new_v4();
//! // The pattern spans two chunks.
//! scanner.scan_chunk(flow, b"GET / HTTP/1.1\r\nAuthorization: Ba")?;
//! scanner.scan_chunk(flow, b"sic YWRtaW46aHVudGVyMg==\r\n")?;
//! let verdict = scanner.close_stream(&flow)?.expect("the stream was open");
//! assert_eq!(verdict.rules[0].identifier, "basic_auth");
//! assert_eq!(verdict.rules[0].patterns[0].matches[0].offset, 16);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`Engine`] runs one such scanner per core, behind actors: streams are
//! sharded by id, chunks are queued with backpressure, rule matches can be
//! pushed to subscribers as they are found, and a fault in one shard loses
//! only that shard's streams.
//!
//! Layout: [`rules`] loads and analyses rules, [`stream`] holds the
//! per-stream context, [`scanner`] the multi-stream scanner (search batches
//! and verdict evaluation), [`engine`] the actors (supervisor, shards,
//! handles, events, residency), [`store`] the on-disk stream store
//! (eviction and checkpoints), [`metrics`] the metric names, [`results`]
//! what a verdict looks like, [`pcap`] captures as streams and [`objects`]
//! the files inside them (HTTP bodies, SMTP attachments), and `cluster`
//! the workers and producers on a NATS JetStream cluster.
//!
//! Cargo features (all on by default; see `Cargo.toml`): without any, the
//! crate is the bare library, [`rules`], [`stream`], [`scanner`],
//! [`results`], [`config`] and [`error`]; `store`, `engine` (with
//! `metrics`), `objects`, `pcap`, `service`, `bench`, `cli` and `cluster`
//! add the rest.

#[cfg(feature = "bench")]
pub mod bench;
#[cfg(feature = "cluster")]
pub mod cluster;
pub mod config;
#[cfg(feature = "engine")]
pub mod engine;
pub mod error;
#[cfg(feature = "engine")]
pub mod metrics;
#[cfg(feature = "objects")]
pub mod objects;
#[cfg(feature = "pcap")]
pub mod pcap;
pub mod results;
pub mod rules;
pub mod scanner;
#[cfg(feature = "service")]
pub mod service;
#[cfg(feature = "store")]
pub mod store;
pub mod stream;
#[cfg(feature = "store")]
#[doc(hidden)]
pub mod test_support;

#[cfg(feature = "engine")]
pub use config::EngineConfig;
pub use config::ScannerConfig;
#[cfg(feature = "store")]
pub use config::StoreConfig;
#[cfg(feature = "engine")]
pub use engine::{BlockingHandle, Engine, EngineHandle, MatchEvent, ShutdownReport, Subscription};
#[cfg(feature = "pcap")]
pub use error::CaptureError;
#[cfg(feature = "engine")]
pub use error::EngineError;
#[cfg(feature = "store")]
pub use error::StoreError;
pub use error::{ErrorKind, RuleError, ScanError};
pub use results::{
    MatchInfo, PatternMatches, RuleMatch, StreamResults, WholeDataState, WholeDataVerdict,
};
pub use rules::{External, ExternalValue, FileInfo, RuleIssue, RuleOptions, RuleSet};
pub use scanner::{MultiStreamScanner, ScannerStats};
pub use stream::{Retention, RetentionLimit, StreamContext, StreamMode, StreamStats};
pub use uuid::Uuid;
