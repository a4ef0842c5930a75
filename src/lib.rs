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
//! Layout: [`rules`] loads and analyses rules, [`stream`] holds the
//! per-stream context, [`scanner`] the multi-stream scanner (search batches
//! and verdict evaluation), [`results`] what a verdict looks like.

pub mod config;
pub mod error;
pub mod results;
pub mod rules;
pub mod scanner;
pub mod stream;

pub use config::ScannerConfig;
pub use error::{RuleError, ScanError};
pub use results::{MatchInfo, PatternMatches, RuleMatch, StreamResults};
pub use rules::{RuleIssue, RuleSet};
pub use scanner::{MultiStreamScanner, ScannerStats};
pub use stream::{StreamContext, StreamMode, StreamStats};
pub use uuid::Uuid;
