//! The C API of yaraflow (`include/yaraflow.h`, generated from this file
//! by cbindgen).
//!
//! It owns the boundary: opaque handles ([`YfRules`], [`YfScanner`],
//! [`YfEngine`]) that C holds by pointer, status codes ([`YfStatus`]) with
//! the message of a thread's last failure ([`yf_last_error`]), and results
//! as the JSON text `yaraflow scan` prints (without its `file` key), freed
//! with [`yf_string_free`].
//!
//! Why this shape: C cannot hold a Rust borrow, so a scanner owns a share
//! of its rules (`self_cell`, as the engine's shards do) and the caller may
//! free the rules while scanners and engines made from them live on. Every
//! entry point runs inside `catch_unwind`: a panic becomes
//! `YF_STATUS_PANIC` with its message, never an unwind into C (which would
//! abort). Pointers are checked for NULL; what cannot be checked (a freed
//! or foreign pointer, a buffer shorter than the length given) is the
//! caller's contract, stated on each function.

#![allow(clippy::missing_safety_doc)] // each function's doc states its contract in C terms

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use yaraflow::{
    BlockingHandle, Engine, EngineConfig, EngineError, ErrorKind, External, FileInfo,
    MultiStreamScanner, RuleError, RuleOptions, RuleSet, ScanError, ScannerConfig, StreamMode,
    StreamResults, Uuid,
};

/// What a call did. Every function that can fail returns one; on anything
/// but `YF_STATUS_OK`, [`yf_last_error`] gives the message.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum YfStatus {
    /// Success.
    Ok = 0,
    /// A required pointer argument was NULL.
    NullArgument = 1,
    /// An argument is malformed: text that is not UTF-8, an external
    /// definition that is not `NAME=VALUE`.
    InvalidArgument = 2,
    /// Rules could not be read or do not compile (the message has the
    /// file and line).
    Rules = 3,
    /// The stream is not open (never opened, or closed already).
    UnknownStream = 4,
    /// Opening the stream would pass the scanner's limit of open streams.
    TooManyStreams = 5,
    /// The chunk or line is larger than the scanner's limit (16 MiB).
    ChunkTooLarge = 6,
    /// A chunk for a line stream, or a line for a chunk stream.
    ModeMismatch = 7,
    /// The stream is open already.
    AlreadyOpen = 8,
    /// YARA-X failed or timed out while scanning; the stream takes no more
    /// data: reset or close it.
    ScanFailed = 9,
    /// The engine's shard stayed full: the chunk was not taken, send it
    /// again later.
    Overloaded = 10,
    /// The engine lost the stream's state (a shard failed, or an earlier
    /// chunk was refused): reset or close it.
    StreamLost = 11,
    /// The engine failed, could not start, or is shutting down.
    Engine = 12,
    /// yaraflow panicked (a bug): the handle the call was made on should be
    /// freed.
    Panic = 13,
    /// A scanner was called from another thread than the one that created
    /// it.
    WrongThread = 14,
}

/// How a stream is fed.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum YfStreamMode {
    /// Chunks of a byte stream: matches may span chunks.
    Chunks = 0,
    /// Lines (without their newline): no match spans two lines.
    Lines = 1,
}

/// Limits on what callers may hold open and send at once, for
/// [`yf_scanner_new_with_limits`] and [`yf_engine_start_with_limits`]. A
/// field left 0 keeps its default.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct YfLimits {
    /// Most streams open at once (default 1,000,000; on an engine, on each
    /// shard). Past it, opening a stream fails with
    /// `YF_STATUS_TOO_MANY_STREAMS`.
    pub max_open_streams: usize,
    /// Largest chunk or line one call may append, in bytes (default 16
    /// MiB). A larger one fails with `YF_STATUS_CHUNK_TOO_LARGE`.
    pub max_chunk_bytes: usize,
}

/// The default scanner configuration with `limits` (NULL: none) applied.
unsafe fn scanner_config(limits: *const YfLimits) -> ScannerConfig {
    let mut config = ScannerConfig::default();
    if let Some(limits) = limits.as_ref() {
        if limits.max_open_streams > 0 {
            config.max_open_streams = limits.max_open_streams;
        }
        if limits.max_chunk_bytes > 0 {
            config.max_chunk_bytes = limits.max_chunk_bytes;
        }
    }
    config
}

impl From<YfStreamMode> for StreamMode {
    fn from(mode: YfStreamMode) -> StreamMode {
        match mode {
            YfStreamMode::Chunks => StreamMode::Chunks,
            YfStreamMode::Lines => StreamMode::Lines,
        }
    }
}

/// Compiled rules. Immutable: safe to use from any number of threads at
/// once. Scanners and engines keep their own share, so the rules may be
/// freed while they live.
pub struct YfRules {
    rules: Arc<RuleSet>,
}

self_cell::self_cell!(
    /// A multi-stream scanner together with the rules it borrows.
    struct OwnedScanner {
        owner: Arc<RuleSet>,
        #[not_covariant]
        dependent: MultiStreamScanner,
    }
);

/// A multi-stream scanner: one thread's. Use it only from the thread that
/// created it (YARA-X's scanners are not `Send`): a call from another
/// thread fails with `YF_STATUS_WRONG_THREAD`. For many threads, use an
/// engine, or a scanner per thread.
pub struct YfScanner {
    scanner: OwnedScanner,
    /// The thread that created it, the only one that may use it.
    thread: std::thread::ThreadId,
}

/// The actor engine: a scanner per shard on its own threads, streams
/// sharded by id. Its stream functions are thread-safe: any number of
/// threads may call them on the same engine at once.
pub struct YfEngine {
    handle: BlockingHandle,
    /// Taken (and stopped) by [`yf_engine_free`].
    engine: Mutex<Option<Engine>>,
}

/// A failed call: its status and message.
struct Failure {
    status: YfStatus,
    message: String,
}

impl Failure {
    fn new(status: YfStatus, message: impl Into<String>) -> Failure {
        Failure {
            status,
            message: message.into(),
        }
    }

    fn null(argument: &str) -> Failure {
        Failure::new(YfStatus::NullArgument, format!("`{argument}` is NULL"))
    }
}

/// The one mapping from the library's error kinds to status codes.
fn status_of(kind: ErrorKind) -> YfStatus {
    match kind {
        ErrorKind::TooManyStreams => YfStatus::TooManyStreams,
        ErrorKind::ChunkTooLarge => YfStatus::ChunkTooLarge,
        ErrorKind::ModeMismatch => YfStatus::ModeMismatch,
        ErrorKind::UnknownStream => YfStatus::UnknownStream,
        ErrorKind::AlreadyOpen => YfStatus::AlreadyOpen,
        ErrorKind::SearchFailed | ErrorKind::ScanTimeout | ErrorKind::ScanFailed => {
            YfStatus::ScanFailed
        }
        ErrorKind::Overloaded => YfStatus::Overloaded,
        ErrorKind::StreamLost | ErrorKind::StreamFailed => YfStatus::StreamLost,
        ErrorKind::BadExternal => YfStatus::InvalidArgument,
        _ => YfStatus::Engine,
    }
}

impl From<ScanError> for Failure {
    fn from(err: ScanError) -> Failure {
        Failure::new(status_of(err.kind()), err.to_string())
    }
}

impl From<EngineError> for Failure {
    fn from(err: EngineError) -> Failure {
        Failure::new(status_of(err.kind()), err.to_string())
    }
}

impl From<RuleError> for Failure {
    fn from(err: RuleError) -> Failure {
        Failure::new(YfStatus::Rules, err.to_string())
    }
}

thread_local! {
    /// The message of this thread's last failed call.
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(message: &str) {
    // A message with a NUL in it (a rule's text quoted back) is cut there.
    let message = message.split('\0').next().unwrap_or_default();
    let message = CString::new(message).unwrap_or_default();
    LAST_ERROR.with(|last| *last.borrow_mut() = message);
}

/// Runs one entry point's body: its failure or panic becomes a status and
/// this thread's last error, never an unwind into C.
fn guard(body: impl FnOnce() -> Result<(), Failure>) -> YfStatus {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => YfStatus::Ok,
        Ok(Err(failure)) => {
            set_last_error(&failure.message);
            failure.status
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            set_last_error(&format!("yaraflow panicked: {what}"));
            YfStatus::Panic
        }
    }
}

/// `pointer` as a reference, or a `NullArgument` failure naming it.
unsafe fn arg<'a, T>(pointer: *const T, name: &str) -> Result<&'a T, Failure> {
    pointer.as_ref().ok_or_else(|| Failure::null(name))
}

/// A NUL-terminated UTF-8 string argument.
unsafe fn text<'a>(pointer: *const c_char, name: &str) -> Result<&'a str, Failure> {
    if pointer.is_null() {
        return Err(Failure::null(name));
    }
    CStr::from_ptr(pointer)
        .to_str()
        .map_err(|err| Failure::new(YfStatus::InvalidArgument, format!("`{name}`: {err}")))
}

/// An optional NUL-terminated UTF-8 string argument (NULL: none).
unsafe fn optional_text(pointer: *const c_char, name: &str) -> Result<Option<String>, Failure> {
    match pointer.is_null() {
        true => Ok(None),
        false => text(pointer, name).map(|t| Some(t.to_string())),
    }
}

/// What a file stream says of itself, from C strings (each may be NULL).
unsafe fn file_info(
    name: *const c_char,
    path: *const c_char,
    content_type: *const c_char,
) -> Result<FileInfo, Failure> {
    Ok(FileInfo {
        name: optional_text(name, "name")?,
        path: optional_text(path, "path")?,
        content_type: optional_text(content_type, "content_type")?,
    })
}

/// `count` strings from `array` (NULL when `count` is 0).
unsafe fn texts<'a>(
    array: *const *const c_char,
    count: usize,
    name: &str,
) -> Result<Vec<&'a str>, Failure> {
    if count == 0 {
        return Ok(Vec::new());
    }
    if array.is_null() {
        return Err(Failure::null(name));
    }
    std::slice::from_raw_parts(array, count)
        .iter()
        .map(|&item| text(item, name))
        .collect()
}

/// The 16 bytes at `id` as a stream id.
unsafe fn stream_id(id: *const u8) -> Result<Uuid, Failure> {
    if id.is_null() {
        return Err(Failure::null("id"));
    }
    let bytes: [u8; 16] = std::slice::from_raw_parts(id, 16)
        .try_into()
        .expect("16 bytes");
    Ok(Uuid::from_bytes(bytes))
}

/// `len` bytes at `data` (which may be NULL when `len` is 0).
unsafe fn bytes<'a>(data: *const u8, len: usize) -> Result<&'a [u8], Failure> {
    if len == 0 {
        return Ok(&[]);
    }
    if data.is_null() {
        return Err(Failure::null("data"));
    }
    Ok(std::slice::from_raw_parts(data, len))
}

/// The default rule options with the `count` definitions `NAME=VALUE` of
/// external variables at `definitions`.
unsafe fn rule_options(
    definitions: *const *const c_char,
    count: usize,
) -> Result<RuleOptions, Failure> {
    let mut options = RuleOptions::new(ScannerConfig::default().max_pattern_len);
    options.externals = texts(definitions, count, "externals")?
        .iter()
        .map(|text| {
            text.parse::<External>()
                .map_err(|err| Failure::new(YfStatus::InvalidArgument, err))
        })
        .collect::<Result<_, _>>()?;
    Ok(options)
}

/// Hands `rules` to C through `out`.
unsafe fn give_rules(out: *mut *mut YfRules, rules: RuleSet) {
    *out = Box::into_raw(Box::new(YfRules {
        rules: Arc::new(rules),
    }));
}

/// Writes results as JSON text through `json_out`, if it is not NULL.
unsafe fn give_json(json_out: *mut *mut c_char, results: &StreamResults) -> Result<(), Failure> {
    if json_out.is_null() {
        return Ok(());
    }
    let json = serde_json::to_string(results)
        .map_err(|err| Failure::new(YfStatus::Engine, format!("cannot write results: {err}")))?;
    // serde_json escapes NUL bytes, so the text has none.
    let json = CString::new(json).expect("JSON text has no NUL byte");
    *json_out = json.into_raw();
    Ok(())
}

/// Results of a stream that may not be open.
fn known(results: Option<StreamResults>, id: Uuid) -> Result<StreamResults, Failure> {
    results.ok_or_else(|| Failure::from(ScanError::UnknownStream(id)))
}

/// The message of the last call that failed on this thread ("" if none).
/// The text belongs to yaraflow: it stays valid until the next failing call
/// on this thread. Thread-safe (each thread has its own).
#[no_mangle]
pub extern "C" fn yf_last_error() -> *const c_char {
    LAST_ERROR.with(|last| last.borrow().as_ptr())
}

/// The version of yaraflow, as static text. Thread-safe.
#[no_mangle]
pub extern "C" fn yf_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// Frees a string yaraflow returned (results JSON). NULL is a no-op.
/// Thread-safe; each string must be freed once.
#[no_mangle]
pub unsafe extern "C" fn yf_string_free(string: *mut c_char) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        if !string.is_null() {
            drop(CString::from_raw(string));
        }
    }));
}

/// Compiles rules from source text (NUL-terminated UTF-8). `externals`
/// holds `n_externals` definitions `NAME=VALUE` of external variables
/// (`true`/`false`, an integer, a float, or else a string; NULL when
/// `n_externals` is 0). On success `*out` is the rules, to free with
/// [`yf_rules_free`]. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn yf_rules_compile(
    source: *const c_char,
    externals_: *const *const c_char,
    n_externals: usize,
    out: *mut *mut YfRules,
) -> YfStatus {
    guard(|| {
        if out.is_null() {
            return Err(Failure::null("out"));
        }
        let source = text(source, "source")?;
        let options = rule_options(externals_, n_externals)?;
        let rules = RuleSet::from_sources_with(vec![("<string>".into(), source.into())], &options)?;
        give_rules(out, rules);
        Ok(())
    })
}

/// Compiles rules from `n_paths` paths (each a `.yar`/`.yara` file or a
/// directory searched recursively; `include`s are found relative to the
/// file that holds them), with external variables as in
/// [`yf_rules_compile`]. On success `*out` is the rules, to free with
/// [`yf_rules_free`]. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn yf_rules_compile_paths(
    paths: *const *const c_char,
    n_paths: usize,
    externals_: *const *const c_char,
    n_externals: usize,
    out: *mut *mut YfRules,
) -> YfStatus {
    guard(|| {
        if out.is_null() {
            return Err(Failure::null("out"));
        }
        let paths: Vec<PathBuf> = texts(paths, n_paths, "paths")?
            .into_iter()
            .map(PathBuf::from)
            .collect();
        if paths.is_empty() {
            return Err(Failure::new(
                YfStatus::InvalidArgument,
                "no rule path given",
            ));
        }
        let options = rule_options(externals_, n_externals)?;
        give_rules(out, RuleSet::from_paths_with(&paths, &options)?);
        Ok(())
    })
}

/// Frees rules. NULL is a no-op. Scanners and engines made from them keep
/// working. Not thread-safe with other calls on the same rules.
#[no_mangle]
pub unsafe extern "C" fn yf_rules_free(rules: *mut YfRules) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        if !rules.is_null() {
            drop(Box::from_raw(rules));
        }
    }));
}

/// Creates a multi-stream scanner of `rules` with the default limits
/// (1,000,000 open streams, 16 MiB chunks). On success `*out` is the
/// scanner, to free with [`yf_scanner_free`]. Thread-safe; the scanner it
/// makes belongs to the calling thread.
#[no_mangle]
pub unsafe extern "C" fn yf_scanner_new(
    rules: *const YfRules,
    out: *mut *mut YfScanner,
) -> YfStatus {
    yf_scanner_new_with_limits(rules, std::ptr::null(), out)
}

/// [`yf_scanner_new`] with `limits` (NULL: the defaults).
#[no_mangle]
pub unsafe extern "C" fn yf_scanner_new_with_limits(
    rules: *const YfRules,
    limits: *const YfLimits,
    out: *mut *mut YfScanner,
) -> YfStatus {
    guard(|| {
        let rules = arg(rules, "rules")?;
        if out.is_null() {
            return Err(Failure::null("out"));
        }
        let config = scanner_config(limits);
        let scanner = OwnedScanner::new(rules.rules.clone(), |rules| {
            MultiStreamScanner::new(rules, config)
        });
        *out = Box::into_raw(Box::new(YfScanner {
            scanner,
            thread: std::thread::current().id(),
        }));
        Ok(())
    })
}

/// Frees a scanner and the streams it holds (without their verdicts).
/// NULL is a no-op. Call it on the thread that created the scanner: on
/// another, the scanner is leaked rather than dropped there, and
/// [`yf_last_error`] says so.
#[no_mangle]
pub unsafe extern "C" fn yf_scanner_free(scanner: *mut YfScanner) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        if scanner.is_null() {
            return;
        }
        let scanner = Box::from_raw(scanner);
        if scanner.thread == std::thread::current().id() {
            drop(scanner);
        } else {
            set_last_error("yf_scanner_free: the scanner belongs to another thread; it was leaked");
            std::mem::forget(scanner);
        }
    }));
}

/// Runs `body` on the scanner behind `scanner`.
unsafe fn with_scanner(
    scanner: *mut YfScanner,
    body: impl FnOnce(&mut MultiStreamScanner) -> Result<(), Failure>,
) -> YfStatus {
    guard(|| {
        let scanner = scanner.as_mut().ok_or_else(|| Failure::null("scanner"))?;
        if scanner.thread != std::thread::current().id() {
            return Err(Failure::new(
                YfStatus::WrongThread,
                "the scanner belongs to the thread that created it; use an engine from many threads",
            ));
        }
        scanner
            .scanner
            .with_dependent_mut(|_, scanner| body(scanner))
    })
}

/// Opens stream `id` (16 bytes) in `mode`. Optional: the first chunk or
/// line opens a stream in its mode. Opening an open stream of the same
/// mode changes nothing; of the other mode fails with
/// `YF_STATUS_MODE_MISMATCH`. Only on the scanner's thread (see
/// [`YfScanner`]).
#[no_mangle]
pub unsafe extern "C" fn yf_scanner_open_stream(
    scanner: *mut YfScanner,
    id: *const u8,
    mode: YfStreamMode,
) -> YfStatus {
    with_scanner(scanner, |scanner| {
        Ok(scanner.open_stream(stream_id(id)?, mode.into())?)
    })
}

/// Says what open stream `id` (16 bytes) is, as a file: its `name`, its
/// `path` and its `content_type` (NUL-terminated UTF-8, each may be NULL
/// when unknown) set the rules' file externals `filename`, `filepath`,
/// `extension` and `filetype`, so that its verdicts are those of a
/// whole-buffer scan with them set. Open the stream first
/// (`yf_scanner_open_stream`); `YF_STATUS_UNKNOWN_STREAM` otherwise. Only
/// on the scanner's thread (see [`YfScanner`]).
#[no_mangle]
pub unsafe extern "C" fn yf_scanner_set_file(
    scanner: *mut YfScanner,
    id: *const u8,
    name: *const c_char,
    path: *const c_char,
    content_type: *const c_char,
) -> YfStatus {
    with_scanner(scanner, |scanner| {
        let id = stream_id(id)?;
        let externals = file_info(name, path, content_type)?.externals();
        Ok(scanner.set_stream_externals(id, externals)?)
    })
}

/// Appends `len` bytes at `data` to chunk stream `id` (16 bytes), opening
/// it if needed. The bytes are copied: `data` may be reused on return.
/// Only on the scanner's thread (see
/// [`YfScanner`]).
#[no_mangle]
pub unsafe extern "C" fn yf_scanner_scan_chunk(
    scanner: *mut YfScanner,
    id: *const u8,
    data: *const u8,
    len: usize,
) -> YfStatus {
    with_scanner(scanner, |scanner| {
        Ok(scanner.scan_chunk(stream_id(id)?, bytes(data, len)?)?)
    })
}

/// Appends one line (`len` bytes at `data`, without its newline) to line
/// stream `id`, opening it if needed. Only on the scanner's thread (see
/// [`YfScanner`]).
#[no_mangle]
pub unsafe extern "C" fn yf_scanner_scan_line(
    scanner: *mut YfScanner,
    id: *const u8,
    data: *const u8,
    len: usize,
) -> YfStatus {
    with_scanner(scanner, |scanner| {
        Ok(scanner.scan_line(stream_id(id)?, bytes(data, len)?)?)
    })
}

/// The results of open stream `id` so far (its verdict as if it ended
/// here; the stream stays open), as JSON text through `*json_out`, to free
/// with [`yf_string_free`]. `YF_STATUS_UNKNOWN_STREAM` if it is not open.
/// Only on the scanner's thread (see
/// [`YfScanner`]).
#[no_mangle]
pub unsafe extern "C" fn yf_scanner_get_results(
    scanner: *mut YfScanner,
    id: *const u8,
    json_out: *mut *mut c_char,
) -> YfStatus {
    with_scanner(scanner, |scanner| {
        if json_out.is_null() {
            return Err(Failure::null("json_out"));
        }
        let id = stream_id(id)?;
        give_json(json_out, &known(scanner.get_matches(&id)?, id)?)
    })
}

/// Closes stream `id` and gives its final results as JSON text through
/// `*json_out` (to free with [`yf_string_free`]), or drops them when
/// `json_out` is NULL. `YF_STATUS_UNKNOWN_STREAM` if it is not open (so a
/// second close fails). Only on the scanner's thread (see
/// [`YfScanner`]).
#[no_mangle]
pub unsafe extern "C" fn yf_scanner_close_stream(
    scanner: *mut YfScanner,
    id: *const u8,
    json_out: *mut *mut c_char,
) -> YfStatus {
    with_scanner(scanner, |scanner| {
        let id = stream_id(id)?;
        give_json(json_out, &known(scanner.close_stream(&id)?, id)?)
    })
}

/// Forgets what stream `id` has seen: it starts again at offset 0, in the
/// same mode. `YF_STATUS_UNKNOWN_STREAM` if it is not open. Only on the
/// scanner's thread (see [`YfScanner`]).
#[no_mangle]
pub unsafe extern "C" fn yf_scanner_reset_stream(
    scanner: *mut YfScanner,
    id: *const u8,
) -> YfStatus {
    with_scanner(
        scanner,
        |scanner| Ok(scanner.reset_stream(&stream_id(id)?)?),
    )
}

/// The number of open streams, through `*count`. Only on the scanner's
/// thread (see [`YfScanner`]).
#[no_mangle]
pub unsafe extern "C" fn yf_scanner_active_streams(
    scanner: *mut YfScanner,
    count: *mut usize,
) -> YfStatus {
    with_scanner(scanner, |scanner| {
        let count = count.as_mut().ok_or_else(|| Failure::null("count"))?;
        *count = scanner.active_streams().len();
        Ok(())
    })
}

/// Starts an engine of `rules` with `shards` shards (0: one per core) and
/// the default limits. On success `*out` is the engine, to free with
/// [`yf_engine_free`]. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn yf_engine_start(
    rules: *const YfRules,
    shards: usize,
    out: *mut *mut YfEngine,
) -> YfStatus {
    yf_engine_start_with_limits(rules, shards, std::ptr::null(), out)
}

/// [`yf_engine_start`] with `limits` (NULL: the defaults).
#[no_mangle]
pub unsafe extern "C" fn yf_engine_start_with_limits(
    rules: *const YfRules,
    shards: usize,
    limits: *const YfLimits,
    out: *mut *mut YfEngine,
) -> YfStatus {
    guard(|| {
        let rules = arg(rules, "rules")?;
        if out.is_null() {
            return Err(Failure::null("out"));
        }
        let config = EngineConfig {
            shards,
            scanner: scanner_config(limits),
            ..EngineConfig::default()
        };
        let engine = Engine::start_shared(rules.rules.clone(), config)?;
        *out = Box::into_raw(Box::new(YfEngine {
            handle: engine.handle().blocking(),
            engine: Mutex::new(Some(engine)),
        }));
        Ok(())
    })
}

/// Stops an engine and frees it; its open streams are dropped without
/// verdicts (close them first to get them). NULL is a no-op. Blocks until
/// its threads end. Not thread-safe with other calls on the same engine:
/// call it when no other thread uses it.
#[no_mangle]
pub unsafe extern "C" fn yf_engine_free(engine: *mut YfEngine) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        if !engine.is_null() {
            let engine = Box::from_raw(engine);
            let inner = engine.engine.lock().map(|mut e| e.take());
            if let Ok(Some(inner)) = inner {
                let _ = inner.shutdown();
            }
        }
    }));
}

/// Runs `body` on the engine's handle.
unsafe fn with_engine(
    engine: *const YfEngine,
    body: impl FnOnce(&BlockingHandle) -> Result<(), Failure>,
) -> YfStatus {
    guard(|| body(&arg(engine, "engine")?.handle))
}

/// Appends `len` bytes at `data` to chunk stream `id` (16 bytes), opening
/// it if needed; the bytes are copied. Blocks while the stream's shard is
/// full (then `YF_STATUS_OVERLOADED` after the engine's limit). A failure
/// found after the call returned is reported by the stream's next call.
/// Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn yf_engine_scan_chunk(
    engine: *const YfEngine,
    id: *const u8,
    data: *const u8,
    len: usize,
) -> YfStatus {
    with_engine(engine, |handle| {
        Ok(handle.scan_chunk(stream_id(id)?, bytes(data, len)?.to_vec())?)
    })
}

/// Appends one line (without its newline) to line stream `id`, opening it
/// if needed. As [`yf_engine_scan_chunk`] otherwise. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn yf_engine_scan_line(
    engine: *const YfEngine,
    id: *const u8,
    data: *const u8,
    len: usize,
) -> YfStatus {
    with_engine(engine, |handle| {
        Ok(handle.scan_line(stream_id(id)?, bytes(data, len)?.to_vec())?)
    })
}

/// The results of open stream `id` so far, after every chunk sent before
/// the call, as JSON text through `*json_out` (free with
/// [`yf_string_free`]). `YF_STATUS_UNKNOWN_STREAM` if it is not open.
/// Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn yf_engine_get_results(
    engine: *const YfEngine,
    id: *const u8,
    json_out: *mut *mut c_char,
) -> YfStatus {
    with_engine(engine, |handle| {
        if json_out.is_null() {
            return Err(Failure::null("json_out"));
        }
        let id = stream_id(id)?;
        give_json(json_out, &known(handle.get_matches(id)?, id)?)
    })
}

/// Closes stream `id` and gives its final results as JSON text through
/// `*json_out` (free with [`yf_string_free`]), or drops them when
/// `json_out` is NULL. `YF_STATUS_UNKNOWN_STREAM` if it is not open.
/// Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn yf_engine_close_stream(
    engine: *const YfEngine,
    id: *const u8,
    json_out: *mut *mut c_char,
) -> YfStatus {
    with_engine(engine, |handle| {
        let id = stream_id(id)?;
        give_json(json_out, &known(handle.close_stream(id)?, id)?)
    })
}

/// Opens stream `id` (16 bytes) in `mode`, on its shard, and waits for
/// the answer. Optional (the first chunk or line opens a stream), but the
/// appends do not wait for their shard, so a stream's mode is checked by
/// its shard after they return: open it first to learn at once that it is
/// open in the other mode (`YF_STATUS_MODE_MISMATCH`) or that the engine
/// holds too many streams (`YF_STATUS_TOO_MANY_STREAMS`). Opening an open
/// stream of the same mode changes nothing. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn yf_engine_open_stream(
    engine: *const YfEngine,
    id: *const u8,
    mode: YfStreamMode,
) -> YfStatus {
    with_engine(engine, |handle| {
        Ok(handle.open_stream(stream_id(id)?, mode.into(), Vec::new())?)
    })
}

/// Opens chunk stream `id` (16 bytes) as a file, if it is not open, and
/// says what it is: see `yf_scanner_set_file`. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn yf_engine_open_file(
    engine: *const YfEngine,
    id: *const u8,
    name: *const c_char,
    path: *const c_char,
    content_type: *const c_char,
) -> YfStatus {
    with_engine(engine, |handle| {
        let id = stream_id(id)?;
        let externals = file_info(name, path, content_type)?.externals();
        Ok(handle.open_stream(id, StreamMode::Chunks, externals)?)
    })
}

/// Forgets what stream `id` has seen (it starts again at offset 0); also
/// how a stream that failed is taken back into use. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn yf_engine_reset_stream(
    engine: *const YfEngine,
    id: *const u8,
) -> YfStatus {
    with_engine(engine, |handle| Ok(handle.reset_stream(stream_id(id)?)?))
}

/// The number of open streams over all shards, through `*count`.
/// Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn yf_engine_active_streams(
    engine: *const YfEngine,
    count: *mut usize,
) -> YfStatus {
    with_engine(engine, |handle| {
        let count = count.as_mut().ok_or_else(|| Failure::null("count"))?;
        *count = handle.active_streams()?.len();
        Ok(())
    })
}

/// The engine handle is shared between C threads.
const _: () = {
    const fn sync<T: Send + Sync>() {}
    sync::<YfEngine>();
    sync::<YfRules>();
};

#[cfg(test)]
mod tests;
