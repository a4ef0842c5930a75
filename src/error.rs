//! Typed errors of the library.
//!
//! Every fallible operation of yaraflow returns one of these. Each variant
//! names the offending input and, where there is one, the limit it broke, so
//! that a caller (or the command-line program) can tell the user what to fix.
//!
//! Each engine error also has an [`ErrorKind`], its machine name: the one
//! home of the names that the `kind` label of
//! [`crate::metrics::SCAN_ERRORS`] and the `code` of the HTTP API's error
//! bodies (`crate::service`) are derived from. The public enums are
//! `#[non_exhaustive]`: a new variant is not a breaking change.

use std::path::PathBuf;

use uuid::Uuid;

/// Errors raised while loading and compiling rules.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuleError {
    /// A rules file or directory could not be read.
    #[error("cannot read rules from {path}: {source}")]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The given directory holds no `.yar` or `.yara` file.
    #[error("no .yar or .yara file in {0}")]
    NoRuleFiles(PathBuf),
    /// The YARA-X compiler rejected the rules; the message carries the file
    /// and line of every error.
    #[error("rules do not compile:\n{0}")]
    Compile(String),
    /// YARA-X's parser gave up on a source before its end without an
    /// error (its effort limit: a rule nested a few thousand levels deep
    /// exhausts it), which would leave the rules from there on out of the
    /// rule set in silence.
    #[error(
        "{origin}:{line}: YARA-X cannot parse {rule} (nested too deeply?): it would drop it, \
         and every rule after it in this file, without an error; simplify the rule"
    )]
    Unparsed {
        /// The source (file name, or `<string>`).
        origin: String,
        /// The 1-based line where the unparsed part starts.
        line: usize,
        /// The first rule left out (`rule NAME`), or what starts there.
        rule: String,
    },
    /// Brackets nest deeper than YARA-X parses (it drops such rules
    /// without an error: see [`RuleError::Unparsed`]).
    #[error(
        "{origin}:{line}: brackets nest more than {limit} levels deep, more than YARA-X parses \
         (it would drop the rule without an error); simplify the rule"
    )]
    TooDeep {
        /// The source (file name, or `<string>`).
        origin: String,
        /// The 1-based line where the nesting passes the limit.
        line: usize,
        /// The deepest nesting allowed.
        limit: usize,
    },
}

/// Errors raised by the multi-stream scanner.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScanError {
    /// Opening one more stream would exceed `ScannerConfig::max_open_streams`.
    #[error("cannot open stream {stream}: {limit} streams are already open (raise max_open_streams or close idle streams)")]
    TooManyStreams {
        /// The stream that could not be opened.
        stream: Uuid,
        /// The configured limit.
        limit: usize,
    },
    /// A chunk or line is larger than `ScannerConfig::max_chunk_bytes`.
    #[error("chunk of {len} bytes for stream {stream} exceeds the limit of {limit} bytes; split it into smaller chunks")]
    ChunkTooLarge {
        /// The stream the chunk was for.
        stream: Uuid,
        /// Size of the rejected chunk.
        len: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A chunk was sent to a line stream, or a line to a chunk stream.
    #[error("stream {stream} was opened as a {opened} stream and cannot take {attempted}; use one mode per stream")]
    ModeMismatch {
        /// The stream.
        stream: Uuid,
        /// The mode the stream was opened with.
        opened: &'static str,
        /// What the caller tried to append.
        attempted: &'static str,
    },
    /// The stream is not open (never opened, or already closed).
    #[error("stream {0} is not open")]
    UnknownStream(Uuid),
    /// A stored context was restored for a stream that is open already.
    #[error("stream {0} is open already; a stored context for it cannot be restored")]
    AlreadyOpen(Uuid),
    /// A batch search that held the stream's bytes failed (YARA-X took
    /// longer than `ScannerConfig::scan_timeout`): the bytes were not all
    /// searched, so the stream takes no more data and has no verdict.
    #[error("stream {stream} lost bytes that were never searched: the search of its batch failed ({reason}; scan_timeout is {limit:?}); reset or close it, and raise scan_timeout or send fewer matching bytes per stream")]
    SearchFailed {
        /// The stream.
        stream: Uuid,
        /// What YARA-X reported.
        reason: String,
        /// The configured timeout.
        limit: Option<std::time::Duration>,
    },
    /// A stream's own value of an external variable was refused (see
    /// [`crate::MultiStreamScanner::set_stream_externals`]).
    #[error("cannot set the externals of stream {stream}: {reason}")]
    BadExternal {
        /// The stream.
        stream: Uuid,
        /// Which value, and what is wrong with it.
        reason: String,
    },
    /// YARA-X failed while scanning (for example, the scan timed out).
    #[error("YARA-X scan failed: {0}")]
    Yara(#[from] yara_x::ScanError),
}

/// Errors raised by the actor engine ([`crate::engine`]).
#[cfg(feature = "engine")]
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The stream's shard held too many queued chunks for longer than
    /// `EngineConfig::overload_after`. The chunk was not taken: send it
    /// again later, or lower the rate.
    #[error("shard {shard} is overloaded: its mailbox stayed full for {waited_ms} ms; the chunk for stream {stream} was not taken, retry later")]
    Overloaded {
        /// The stream the chunk was for.
        stream: Uuid,
        /// The full shard.
        shard: usize,
        /// How long the caller waited, in milliseconds.
        waited_ms: u64,
    },
    /// The shard that held the stream failed (a panic while scanning) and
    /// was restarted empty: the stream's state is gone. Reset the stream
    /// (and resend its bytes) or close it to acknowledge.
    #[error("stream {stream} was lost when shard {shard} failed and restarted ({reason}); reset or close it")]
    StreamLost {
        /// The lost stream.
        stream: Uuid,
        /// The shard that failed.
        shard: usize,
        /// What the shard reported (the panic message).
        reason: std::sync::Arc<str>,
    },
    /// An earlier chunk or line of this stream was rejected by its shard
    /// after the call that sent it had returned, so the stream misses bytes
    /// and later chunks are refused. Reset or close the stream.
    #[error("stream {stream} refused further data after an earlier chunk was rejected ({reason}); reset or close it")]
    StreamFailed {
        /// The stream.
        stream: Uuid,
        /// Why its chunk was rejected.
        reason: String,
    },
    /// The scanner refused the call (limits, unknown stream, YARA-X errors
    /// such as a verdict timeout).
    #[error(transparent)]
    Scan(#[from] std::sync::Arc<ScanError>),
    /// A shard failed while serving the request and was restarted; the
    /// request had no stream to report as lost (for example a listing).
    /// Retry it.
    #[error("shard {shard} failed while serving the request and was restarted; retry")]
    ShardFailed {
        /// The shard.
        shard: usize,
    },
    /// A request's item was refused before any of the request was taken
    /// (`EngineHandle::scan_chunks_admitted`): nothing of it was applied.
    #[error("item {index} of the request was refused, and no item was taken: {source}")]
    Refused {
        /// Index of the refused item (a frame of `POST /v1/chunks`) in the
        /// request, from 0.
        index: usize,
        /// Why.
        #[source]
        source: Box<EngineError>,
    },
    /// The shutdown's time limit (`EngineConfig::shutdown_timeout`) passed
    /// before this stream's final verdict was computed: it was dropped
    /// without one.
    #[error("stream {stream} has no final verdict: the shutdown's limit of {limit_ms} ms passed first (raise shutdown_timeout, or close match-heavy streams before stopping)")]
    ShutdownTimedOut {
        /// The stream.
        stream: Uuid,
        /// The limit, in milliseconds.
        limit_ms: u64,
    },
    /// The engine is shutting down or stopped: no new work is taken.
    #[error("the engine is shutting down and takes no more work")]
    ShuttingDown,
    /// The engine could not start.
    #[error("cannot start the engine: {0}")]
    Start(String),
    /// The stream store failed (see [`StoreError`]).
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[cfg(feature = "engine")]
impl From<ScanError> for EngineError {
    fn from(err: ScanError) -> Self {
        EngineError::Scan(std::sync::Arc::new(err))
    }
}

/// Errors of the stream store ([`crate::store`]).
#[cfg(feature = "store")]
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store's file could not be opened or created.
    #[error("cannot open the stream store {path}: {reason}")]
    Open {
        /// The store's file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The store holds streams made with other rules.
    #[error("the stream store {path} holds {streams} stream(s) scanned with other rules than these; start with the rules they were scanned with, or discard them (`--discard-stored-streams`), and their producers resend them from offset 0")]
    RulesChanged {
        /// The store's file.
        path: PathBuf,
        /// Streams of other rules it holds.
        streams: usize,
    },
    /// The store was written by a yaraflow with another entry format.
    #[error("the stream store {path} has entry format {found}; this yaraflow reads format {supported}; close its streams with the yaraflow that wrote it, or move the file away")]
    Version {
        /// The store's file.
        path: PathBuf,
        /// The format found.
        found: String,
        /// The format this build reads.
        supported: u16,
    },
    /// One stream's entry is damaged; no other stream is affected.
    #[error("the stored context of stream {stream} is damaged ({reason}); the stream is dropped: reset it and resend from offset 0")]
    Corrupt {
        /// The stream.
        stream: Uuid,
        /// What is wrong with the entry.
        reason: String,
    },
    /// The store's file is damaged beyond one entry.
    #[error("the stream store {path} is damaged ({reason}); move it away to start without its streams (their producers resend them from offset 0), or restore it from a copy")]
    Damaged {
        /// The store's file.
        path: PathBuf,
        /// What the reader met.
        reason: String,
    },
    /// Reading or writing the store failed.
    #[error("stream store I/O failed: {0}")]
    Io(String),
}

/// Errors raised while reading a capture file (`yaraflow pcap`).
#[cfg(feature = "pcap")]
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaptureError {
    /// The file is empty.
    #[error("the capture is empty")]
    Empty,
    /// The file starts with neither a pcap nor a pcapng header.
    #[error("not a pcap or pcapng capture (unknown header; is it compressed?)")]
    NotACapture,
    /// The file is damaged from this point on; frames before it were read.
    #[error("corrupt capture at frame {frame} (byte {offset}): {reason}")]
    Corrupt {
        /// 1-based number of the frame that could not be read.
        frame: u64,
        /// Bytes of the file read before the damage.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// Reading the file failed.
    #[error("cannot read the capture: {0}")]
    Io(#[source] std::io::Error),
}

/// The machine name of an engine error: the `kind` label of
/// [`crate::metrics::SCAN_ERRORS`] and, with one exception that the service
/// states, the `code` of the HTTP API's error bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// [`ScanError::TooManyStreams`].
    TooManyStreams,
    /// [`ScanError::ChunkTooLarge`].
    ChunkTooLarge,
    /// [`ScanError::ModeMismatch`].
    ModeMismatch,
    /// [`ScanError::UnknownStream`].
    UnknownStream,
    /// [`ScanError::AlreadyOpen`].
    AlreadyOpen,
    /// [`ScanError::SearchFailed`].
    SearchFailed,
    /// [`ScanError::BadExternal`].
    BadExternal,
    /// [`ScanError::Yara`] with YARA-X's timeout.
    ScanTimeout,
    /// [`ScanError::Yara`], any other YARA-X error.
    ScanFailed,
    /// [`EngineError::Overloaded`].
    Overloaded,
    /// [`EngineError::StreamLost`].
    StreamLost,
    /// [`EngineError::StreamFailed`]; in the metrics, data dropped because
    /// its stream had failed before.
    StreamFailed,
    /// [`EngineError::ShardFailed`]; in the metrics, a panic in a shard.
    ShardFailed,
    /// [`EngineError::ShuttingDown`] and [`EngineError::ShutdownTimedOut`].
    ShuttingDown,
    /// [`EngineError::Start`].
    EngineFailed,
    /// [`EngineError::Store`]; in the metrics, any failure of the stream
    /// store (a damaged entry, a failed checkpoint).
    StoreFailed,
}

impl ErrorKind {
    /// Every kind.
    pub const ALL: &'static [ErrorKind] = &[
        ErrorKind::TooManyStreams,
        ErrorKind::ChunkTooLarge,
        ErrorKind::ModeMismatch,
        ErrorKind::UnknownStream,
        ErrorKind::AlreadyOpen,
        ErrorKind::SearchFailed,
        ErrorKind::BadExternal,
        ErrorKind::ScanTimeout,
        ErrorKind::ScanFailed,
        ErrorKind::Overloaded,
        ErrorKind::StreamLost,
        ErrorKind::StreamFailed,
        ErrorKind::ShardFailed,
        ErrorKind::ShuttingDown,
        ErrorKind::EngineFailed,
        ErrorKind::StoreFailed,
    ];

    /// The name: `snake_case`, stable (dashboards, alerts and HTTP clients
    /// match on it).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::TooManyStreams => "too_many_streams",
            ErrorKind::ChunkTooLarge => "chunk_too_large",
            ErrorKind::ModeMismatch => "mode_mismatch",
            ErrorKind::UnknownStream => "unknown_stream",
            ErrorKind::AlreadyOpen => "already_open",
            ErrorKind::SearchFailed => "search_failed",
            ErrorKind::BadExternal => "bad_external",
            ErrorKind::ScanTimeout => "scan_timeout",
            ErrorKind::ScanFailed => "scan_failed",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::StreamLost => "stream_lost",
            ErrorKind::StreamFailed => "stream_failed",
            ErrorKind::ShardFailed => "shard_failed",
            ErrorKind::ShuttingDown => "shutting_down",
            ErrorKind::EngineFailed => "engine_failed",
            ErrorKind::StoreFailed => "store_failed",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ScanError {
    /// The error's machine name.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ScanError::TooManyStreams { .. } => ErrorKind::TooManyStreams,
            ScanError::ChunkTooLarge { .. } => ErrorKind::ChunkTooLarge,
            ScanError::ModeMismatch { .. } => ErrorKind::ModeMismatch,
            ScanError::UnknownStream(_) => ErrorKind::UnknownStream,
            ScanError::AlreadyOpen(_) => ErrorKind::AlreadyOpen,
            ScanError::SearchFailed { .. } => ErrorKind::SearchFailed,
            ScanError::BadExternal { .. } => ErrorKind::BadExternal,
            ScanError::Yara(yara_x::ScanError::Timeout) => ErrorKind::ScanTimeout,
            ScanError::Yara(_) => ErrorKind::ScanFailed,
        }
    }
}

#[cfg(feature = "engine")]
impl EngineError {
    /// The error's machine name; a refused request's is its cause's.
    pub fn kind(&self) -> ErrorKind {
        match self {
            EngineError::Overloaded { .. } => ErrorKind::Overloaded,
            EngineError::StreamLost { .. } => ErrorKind::StreamLost,
            EngineError::StreamFailed { .. } => ErrorKind::StreamFailed,
            EngineError::Scan(scan) => scan.kind(),
            EngineError::ShardFailed { .. } => ErrorKind::ShardFailed,
            EngineError::Refused { source, .. } => source.kind(),
            EngineError::ShutdownTimedOut { .. } | EngineError::ShuttingDown => {
                ErrorKind::ShuttingDown
            }
            EngineError::Start(_) => ErrorKind::EngineFailed,
            EngineError::Store(_) => ErrorKind::StoreFailed,
        }
    }
}
