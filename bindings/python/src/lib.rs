//! The Python module `yaraflow._yaraflow`, which `python/yaraflow` wraps.
//!
//! It owns the boundary with Python: [`Rules`] (compiled once, shared),
//! [`Scanner`] (a multi-stream scanner, one thread's) and [`Engine`] (the
//! actor engine, any thread's, which releases the GIL while it works).
//! Verdicts become objects shaped like the `yara-x` package's results
//! ([`ScanResults`] with `matching_rules`, each [`Rule`] with `patterns`,
//! each [`Pattern`] with `matches`), built straight from the library's
//! `StreamResults` (no JSON in between: a close costs about what it costs
//! in Rust).
//!
//! Errors become exceptions: `CompileError` for rules, `ScanError` (with
//! the library's error kind in `kind`) for stream calls, `ValueError` and
//! `TypeError` for arguments. A panic becomes pyo3's `PanicException`,
//! never an abort.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{
    IntoPyDict, PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyString, PyTuple, PyType,
};

use yaraflow::{
    BlockingHandle, Engine as RustEngine, EngineConfig, EngineError, External, ExternalValue,
    FileInfo, MultiStreamScanner, RuleError, RuleOptions, RuleSet, ScanError as RustScanError,
    ScannerConfig, StreamMode, StreamResults, Uuid,
};

create_exception!(
    yaraflow,
    Error,
    PyException,
    "Base class of yaraflow's errors."
);
create_exception!(
    yaraflow,
    CompileError,
    Error,
    "Rules that do not compile, or a rule path that cannot be read."
);
create_exception!(
    yaraflow,
    ScanError,
    Error,
    "A stream call that was refused or failed; `kind` names why (`unknown_stream`, \
     `mode_mismatch`, `too_many_streams`, `chunk_too_large`, `bad_external`, ...)."
);

/// A `ScanError` whose `kind` attribute is the library's error kind.
fn scan_error(py: Python<'_>, kind: &str, message: String) -> PyErr {
    let err = ScanError::new_err(message);
    // Setting an attribute on a fresh exception object cannot fail in
    // practice; if it did, the error would still carry its message.
    let _ = err.value(py).setattr("kind", kind);
    err
}

fn from_scan(py: Python<'_>, err: RustScanError) -> PyErr {
    scan_error(py, err.kind().as_str(), err.to_string())
}

fn from_engine(py: Python<'_>, err: EngineError) -> PyErr {
    scan_error(py, err.kind().as_str(), err.to_string())
}

fn from_rules(err: RuleError) -> PyErr {
    CompileError::new_err(err.to_string())
}

/// A stream id: a `uuid.UUID`, its 16 bytes, or its text.
fn stream_id(id: &Bound<'_, PyAny>) -> PyResult<Uuid> {
    if let Ok(bytes) = id.cast::<PyBytes>() {
        let bytes: [u8; 16] = bytes.as_bytes().try_into().map_err(|_| {
            PyValueError::new_err(format!(
                "a stream id of bytes has 16 of them, not {}",
                bytes.as_bytes().len()
            ))
        })?;
        return Ok(Uuid::from_bytes(bytes));
    }
    if let Ok(text) = id.cast::<PyString>() {
        let text = text.to_cow()?;
        return Uuid::parse_str(&text)
            .map_err(|err| PyValueError::new_err(format!("stream id {text:?}: {err}")));
    }
    if let Ok(bytes) = id.getattr("bytes") {
        if let Ok(bytes) = bytes.cast::<PyBytes>() {
            if let Ok(bytes) = <[u8; 16]>::try_from(bytes.as_bytes()) {
                return Ok(Uuid::from_bytes(bytes));
            }
        }
    }
    Err(PyTypeError::new_err(format!(
        "a stream id is a uuid.UUID, 16 bytes or a UUID's text, not {}",
        id.get_type().name()?
    )))
}

/// The bytes of `data`: `bytes` and `str` (as UTF-8) without a copy, a
/// `bytearray` copied.
fn data_of<'a>(data: &'a Bound<'_, PyAny>) -> PyResult<Cow<'a, [u8]>> {
    if let Ok(bytes) = data.cast::<PyBytes>() {
        return Ok(Cow::Borrowed(bytes.as_bytes()));
    }
    if let Ok(text) = data.cast::<PyString>() {
        return Ok(Cow::Owned(text.to_cow()?.as_bytes().to_vec()));
    }
    if let Ok(array) = data.cast::<PyByteArray>() {
        return Ok(Cow::Owned(array.to_vec()));
    }
    Err(PyTypeError::new_err(format!(
        "data is bytes, bytearray or str, not {}",
        data.get_type().name()?
    )))
}

/// An external variable's value from Python: `bool`, `int`, `float` or
/// `str`.
fn external(name: &str, value: &Bound<'_, PyAny>) -> PyResult<External> {
    // `bool` first: it is a subclass of `int` in Python.
    let value = if let Ok(flag) = value.cast::<PyBool>() {
        ExternalValue::Bool(flag.is_true())
    } else if let Ok(integer) = value.extract::<i64>() {
        ExternalValue::Integer(integer)
    } else if let Ok(float) = value.cast::<PyFloat>() {
        ExternalValue::Float(float.value())
    } else if let Ok(text) = value.cast::<PyString>() {
        ExternalValue::String(text.to_cow()?.into_owned())
    } else {
        return Err(PyTypeError::new_err(format!(
            "external `{name}` is a bool, an int (64 bits), a float or a str, not {}",
            value.get_type().name()?
        )));
    };
    Ok(External {
        name: name.to_string(),
        value,
    })
}

fn externals(values: Option<&Bound<'_, PyDict>>) -> PyResult<Vec<External>> {
    let Some(values) = values else {
        return Ok(Vec::new());
    };
    values
        .iter()
        .map(|(name, value)| external(&name.extract::<String>()?, &value))
        .collect()
}

/// A file stream's `file` argument: a dict with `name`, `path` and
/// `content_type`, each optional.
fn file_info(file: &Bound<'_, PyDict>) -> PyResult<FileInfo> {
    let field = |key: &str| -> PyResult<Option<String>> {
        match file.get_item(key)? {
            Some(value) if !value.is_none() => Ok(Some(value.extract()?)),
            _ => Ok(None),
        }
    };
    for key in file.keys() {
        let key: String = key.extract()?;
        if !["name", "path", "content_type"].contains(&key.as_str()) {
            return Err(PyValueError::new_err(format!(
                "file: unknown key {key:?} (name, path, content_type)"
            )));
        }
    }
    Ok(FileInfo {
        name: field("name")?,
        path: field("path")?,
        content_type: field("content_type")?,
    })
}

/// What a stream says of itself when it opens: its file's externals, then
/// the values given, each replacing the file's of the same name.
fn stream_externals(
    file: Option<&Bound<'_, PyDict>>,
    values: Option<&Bound<'_, PyDict>>,
) -> PyResult<Vec<External>> {
    let file = file.map(file_info).transpose()?;
    Ok(yaraflow::rules::stream_externals(
        file.as_ref(),
        externals(values)?,
    ))
}

fn stream_mode(mode: &str) -> PyResult<StreamMode> {
    match mode {
        "chunks" => Ok(StreamMode::Chunks),
        "lines" => Ok(StreamMode::Lines),
        other => Err(PyValueError::new_err(format!(
            "mode is \"chunks\" or \"lines\", not {other:?}"
        ))),
    }
}

/// A verdict as a `yaraflow.ScanResults`.
fn results_object(py: Python<'_>, results: &StreamResults) -> PyResult<Py<PyAny>> {
    let rules = results
        .rules
        .iter()
        .map(|rule| Ok(Py::new(py, Rule::new(py, rule)?)?.into_any()))
        .collect::<PyResult<Vec<_>>>()?;
    let whole_data = match &results.whole_data {
        None => py.None(),
        Some(verdict) => {
            let value = serde_json::to_value(verdict)
                .map_err(|err| PyValueError::new_err(format!("cannot read a verdict: {err}")))?;
            python_value(py, &value)?
        }
    };
    let object = ScanResults {
        stream: results.stream,
        matching_rules: PyTuple::new(py, rules)?.unbind(),
        exact: results.exact,
        matches_cut: results.matches_cut,
        bytes: results.stats.bytes,
        lines: results.stats.lines,
        chunks: results.stats.chunks,
        whole_data,
    };
    Ok(Py::new(py, object)?.into_any())
}

/// A JSON value (rule metadata, a whole-data verdict) as Python objects.
fn python_value(py: Python<'_>, value: &serde_json::Value) -> PyResult<Py<PyAny>> {
    use serde_json::Value;
    Ok(match value {
        Value::Null => py.None(),
        Value::Bool(flag) => PyBool::new(py, *flag).to_owned().into_any().unbind(),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(integer), _) => integer.into_pyobject(py)?.into_any().unbind(),
            (None, Some(float)) => float.into_pyobject(py)?.into_any().unbind(),
            _ => n.to_string().into_pyobject(py)?.into_any().unbind(),
        },
        Value::String(text) => text.into_pyobject(py)?.into_any().unbind(),
        Value::Array(items) => {
            let items = items
                .iter()
                .map(|item| python_value(py, item))
                .collect::<PyResult<Vec<_>>>()?;
            PyTuple::new(py, items)?.into_any().unbind()
        }
        Value::Object(fields) => {
            let dict = PyDict::new(py);
            for (key, field) in fields {
                dict.set_item(key, python_value(py, field)?)?;
            }
            dict.into_any().unbind()
        }
    })
}

/// The verdict of one stream, shaped like the `yara-x` package's scan
/// results (`matching_rules`), with what a stream adds.
#[pyclass(frozen, module = "yaraflow")]
struct ScanResults {
    stream: Uuid,
    /// The rules that match, as `Rule`s.
    #[pyo3(get)]
    matching_rules: Py<PyTuple>,
    /// False in the rare case where no rule's verdict is claimed exact.
    #[pyo3(get)]
    exact: bool,
    /// True when the stream had more matches than the scanner lists.
    #[pyo3(get)]
    matches_cut: bool,
    /// Bytes appended to the stream.
    #[pyo3(get)]
    bytes: u64,
    /// Lines appended (line streams) or newline bytes seen (chunk streams).
    #[pyo3(get)]
    lines: u64,
    /// Calls that appended data.
    #[pyo3(get)]
    chunks: u64,
    /// How rules that need the whole data were decided (`None` when the
    /// rules have none and no dense rule made the stream retain): `{"state": "scanned" | "gated" | ..., ...}`.
    #[pyo3(get)]
    whole_data: Py<PyAny>,
}

#[pymethods]
impl ScanResults {
    /// The stream's id, as a `uuid.UUID`.
    #[getter]
    fn stream_id(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        uuid_object(py, self.stream)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "ScanResults(stream_id={}, matching_rules={}, bytes={}, exact={})",
            self.stream,
            self.matching_rules
                .bind(py)
                .repr()
                .map_or_else(|_| "?".into(), |r| r.to_string()),
            self.bytes,
            if self.exact { "True" } else { "False" }
        )
    }
}

/// A matching rule.
#[pyclass(frozen, get_all, module = "yaraflow")]
struct Rule {
    /// The rule's identifier.
    identifier: String,
    /// Its namespace.
    namespace: String,
    /// Its tags, a tuple of str.
    tags: Py<PyTuple>,
    /// Its metadata: `(name, value)` pairs, in the rule's order.
    metadata: Py<PyTuple>,
    /// Its patterns, as `Pattern`s.
    patterns: Py<PyTuple>,
    /// False when stream scanning cannot evaluate this rule exactly
    /// (`yaraflow check` says why).
    exact: bool,
}

impl Rule {
    fn new(py: Python<'_>, rule: &yaraflow::RuleMatch) -> PyResult<Rule> {
        let patterns = rule
            .patterns
            .iter()
            .map(|pattern| Ok(Py::new(py, Pattern::new(py, pattern)?)?.into_any()))
            .collect::<PyResult<Vec<_>>>()?;
        let metadata = python_value(py, &rule.metadata)?;
        let metadata = match metadata.bind(py).cast::<PyTuple>() {
            Ok(tuple) => tuple.clone().unbind(),
            Err(_) => PyTuple::empty(py).unbind(),
        };
        Ok(Rule {
            identifier: rule.identifier.clone(),
            namespace: rule.namespace.clone(),
            tags: PyTuple::new(py, &rule.tags)?.unbind(),
            metadata,
            patterns: PyTuple::new(py, patterns)?.unbind(),
            exact: rule.exact,
        })
    }
}

#[pymethods]
impl Rule {
    fn __repr__(&self) -> String {
        format!("Rule({}:{})", self.namespace, self.identifier)
    }
}

/// A pattern of a matching rule, with every match.
#[pyclass(frozen, get_all, module = "yaraflow")]
struct Pattern {
    /// The pattern's identifier (`$a`; `$` for anonymous patterns).
    identifier: String,
    /// Its matches, as `Match`es.
    matches: Py<PyTuple>,
}

impl Pattern {
    fn new(py: Python<'_>, pattern: &yaraflow::PatternMatches) -> PyResult<Pattern> {
        let matches = pattern
            .matches
            .iter()
            .map(|m| {
                let object = Match {
                    offset: m.offset,
                    length: m.length,
                    line: m.line,
                    xor_key: m.xor_key,
                    data: PyBytes::new(py, &m.data).unbind(),
                };
                Ok(Py::new(py, object)?.into_any())
            })
            .collect::<PyResult<Vec<_>>>()?;
        Ok(Pattern {
            identifier: pattern.identifier.clone(),
            matches: PyTuple::new(py, matches)?.unbind(),
        })
    }
}

#[pymethods]
impl Pattern {
    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "Pattern({}, {} matches)",
            self.identifier,
            self.matches.bind(py).len()
        )
    }
}

/// One match of a pattern, at a stream offset.
#[pyclass(frozen, get_all, module = "yaraflow")]
struct Match {
    /// Stream offset of the first matched byte.
    offset: u64,
    /// Length of the match in bytes.
    length: usize,
    /// 1-based line of the match.
    line: u64,
    /// The XOR key, for patterns with the `xor` modifier (else `None`).
    xor_key: Option<u8>,
    /// The matched bytes (at most the scanner's snippet limit, 64 bytes by
    /// default).
    data: Py<PyBytes>,
}

#[pymethods]
impl Match {
    fn __repr__(&self) -> String {
        format!("Match(offset={}, length={})", self.offset, self.length)
    }
}

/// The verdict of a stream that must be open.
fn known(py: Python<'_>, results: Option<StreamResults>, id: Uuid) -> PyResult<Py<PyAny>> {
    match results {
        Some(results) => results_object(py, &results),
        None => Err(from_scan(py, RustScanError::UnknownStream(id))),
    }
}

/// A stream id as a `uuid.UUID`.
fn uuid_object(py: Python<'_>, id: Uuid) -> PyResult<Py<PyAny>> {
    static UUID: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    let class = UUID.import(py, "uuid", "UUID")?;
    let bytes = PyBytes::new(py, id.as_bytes());
    Ok(class
        .call((), Some(&[("bytes", bytes)].into_py_dict(py)?))?
        .unbind())
}

fn uuid_objects(py: Python<'_>, ids: Vec<Uuid>) -> PyResult<Vec<Py<PyAny>>> {
    ids.into_iter().map(|id| uuid_object(py, id)).collect()
}

/// Compiled YARA rules, immutable and shared by any number of scanners and
/// engines.
///
/// `Rules(source)` compiles rule text; `Rules(paths=[...])` compiles
/// `.yar`/`.yara` files and directories (searched recursively). `externals`
/// defines external variables (`bool`, `int`, `float` or `str` values); the
/// file externals `filename`, `filepath`, `extension` and `filetype` are
/// always declared, empty unless given.
#[pyclass(frozen, module = "yaraflow")]
struct Rules {
    rules: Arc<RuleSet>,
}

#[pymethods]
impl Rules {
    #[new]
    #[pyo3(signature = (source=None, *, paths=None, externals=None))]
    fn new(
        py: Python<'_>,
        source: Option<String>,
        paths: Option<Vec<PathBuf>>,
        externals: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Rules> {
        let mut options = RuleOptions::new(ScannerConfig::default().max_pattern_len);
        options.externals = self::externals(externals)?;
        let rules = py.detach(|| match (source, paths) {
            (Some(source), None) => {
                RuleSet::from_sources_with(vec![("<string>".into(), source)], &options)
                    .map_err(from_rules)
            }
            (None, Some(paths)) if !paths.is_empty() => {
                RuleSet::from_paths_with(&paths, &options).map_err(from_rules)
            }
            (None, Some(_)) => Err(PyValueError::new_err("paths: no rule path given")),
            _ => Err(PyTypeError::new_err(
                "give either the rules' source text or paths=[...], not both",
            )),
        })?;
        Ok(Rules {
            rules: Arc::new(rules),
        })
    }

    /// The external variables the rules declare, as a dict of their
    /// default values.
    fn externals<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        for external in self.rules.externals() {
            match &external.value {
                ExternalValue::Bool(v) => dict.set_item(&external.name, v)?,
                ExternalValue::Integer(v) => dict.set_item(&external.name, v)?,
                ExternalValue::Float(v) => dict.set_item(&external.name, v)?,
                ExternalValue::String(v) => dict.set_item(&external.name, v)?,
            }
        }
        Ok(dict)
    }
}

self_cell::self_cell!(
    /// A multi-stream scanner together with the rules it borrows.
    struct OwnedScanner {
        owner: Arc<RuleSet>,
        #[not_covariant]
        dependent: MultiStreamScanner,
    }
);

/// A multi-stream scanner: many streams, each named by a stream id (a
/// `uuid.UUID`, its 16 bytes or its text), each keeping its own matching
/// state between the chunks or lines that come for it. A stream's verdict
/// equals a whole-buffer YARA-X scan of its bytes.
///
/// A scanner belongs to the thread that created it (YARA-X's scanners
/// cannot move between threads): from another, a call raises. It holds the
/// GIL while it scans. For many threads, use an `Engine`.
#[pyclass(unsendable, module = "yaraflow")]
struct Scanner {
    scanner: OwnedScanner,
}

impl Scanner {
    fn run<T>(
        &mut self,
        py: Python<'_>,
        body: impl FnOnce(&mut MultiStreamScanner) -> Result<T, RustScanError>,
    ) -> PyResult<T> {
        self.scanner
            .with_dependent_mut(|_, scanner| body(scanner))
            .map_err(|err| from_scan(py, err))
    }
}

#[pymethods]
impl Scanner {
    /// A scanner of `rules`. `max_open_streams` and `max_chunk_bytes`
    /// bound what callers may hold open and send at once (defaults:
    /// 1,000,000 streams, 16 MiB).
    #[new]
    #[pyo3(signature = (rules, *, max_open_streams=None, max_chunk_bytes=None))]
    fn new(
        rules: &Rules,
        max_open_streams: Option<usize>,
        max_chunk_bytes: Option<usize>,
    ) -> Scanner {
        let mut config = ScannerConfig::default();
        config.max_open_streams = max_open_streams.unwrap_or(config.max_open_streams);
        config.max_chunk_bytes = max_chunk_bytes.unwrap_or(config.max_chunk_bytes);
        Scanner {
            scanner: OwnedScanner::new(rules.rules.clone(), |rules| {
                MultiStreamScanner::new(rules, config)
            }),
        }
    }

    /// Opens a stream in `mode` (`"chunks"` or `"lines"`); optional, since
    /// the first chunk or line opens it. `file` (`name`, `path`,
    /// `content_type`) and `externals` set the stream's own values of the
    /// rules' external variables.
    #[pyo3(signature = (stream_id, mode="chunks", *, file=None, externals=None))]
    fn open_stream(
        &mut self,
        py: Python<'_>,
        stream_id: &Bound<'_, PyAny>,
        mode: &str,
        file: Option<&Bound<'_, PyDict>>,
        externals: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        let id = self::stream_id(stream_id)?;
        let mode = stream_mode(mode)?;
        let values = stream_externals(file, externals)?;
        self.run(py, |scanner| {
            scanner.open_stream(id, mode)?;
            match values.is_empty() {
                true => Ok(()),
                false => scanner.set_stream_externals(id, values),
            }
        })
    }

    /// Appends `data` (bytes, bytearray, or str as UTF-8) to a chunk
    /// stream, opening it if needed.
    fn scan_chunk(
        &mut self,
        py: Python<'_>,
        stream_id: &Bound<'_, PyAny>,
        data: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let id = self::stream_id(stream_id)?;
        let data = data_of(data)?;
        self.run(py, |scanner| scanner.scan_chunk(id, &data))
    }

    /// Appends one line (without its newline) to a line stream, opening it
    /// if needed.
    fn scan_line(
        &mut self,
        py: Python<'_>,
        stream_id: &Bound<'_, PyAny>,
        line: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let id = self::stream_id(stream_id)?;
        let line = data_of(line)?;
        self.run(py, |scanner| scanner.scan_line(id, &line))
    }

    /// The stream's verdict so far (as if it ended here; it stays open).
    fn get_matches(&mut self, py: Python<'_>, stream_id: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let id = self::stream_id(stream_id)?;
        let results = self.run(py, |scanner| scanner.get_matches(&id))?;
        known(py, results, id)
    }

    /// Closes the stream and returns its final verdict.
    fn close_stream(
        &mut self,
        py: Python<'_>,
        stream_id: &Bound<'_, PyAny>,
    ) -> PyResult<Py<PyAny>> {
        let id = self::stream_id(stream_id)?;
        let results = self.run(py, |scanner| scanner.close_stream(&id))?;
        known(py, results, id)
    }

    /// Forgets what the stream has seen: it starts again at offset 0.
    fn reset_stream(&mut self, py: Python<'_>, stream_id: &Bound<'_, PyAny>) -> PyResult<()> {
        let id = self::stream_id(stream_id)?;
        self.run(py, |scanner| scanner.reset_stream(&id))
    }

    /// The ids of the open streams, as `uuid.UUID`s.
    fn active_streams(&mut self, py: Python<'_>) -> PyResult<Vec<Py<PyAny>>> {
        let ids = self.run(py, |scanner| Ok(scanner.active_streams()))?;
        uuid_objects(py, ids)
    }
}

/// The actor engine: a scanner per shard on threads of its own, streams
/// sharded by id. Any Python thread may call it at once; calls release the
/// GIL while the engine works. Stop it with `close()` (or a `with` block):
/// open streams are dropped without verdicts.
#[pyclass(frozen, module = "yaraflow")]
struct Engine {
    handle: BlockingHandle,
    engine: Mutex<Option<RustEngine>>,
}

impl Engine {
    fn run<T: Send>(
        &self,
        py: Python<'_>,
        body: impl FnOnce(&BlockingHandle) -> Result<T, EngineError> + Send,
    ) -> PyResult<T> {
        py.detach(|| body(&self.handle))
            .map_err(|err| from_engine(py, err))
    }
}

#[pymethods]
impl Engine {
    /// Starts an engine of `rules` with `shards` shards (0: one per core).
    #[new]
    #[pyo3(signature = (rules, *, shards=0))]
    fn new(py: Python<'_>, rules: &Rules, shards: usize) -> PyResult<Engine> {
        let config = EngineConfig {
            shards,
            ..EngineConfig::default()
        };
        let rules = rules.rules.clone();
        let engine = py
            .detach(|| RustEngine::start_shared(rules, config))
            .map_err(|err| from_engine(py, err))?;
        Ok(Engine {
            handle: engine.handle().blocking(),
            engine: Mutex::new(Some(engine)),
        })
    }

    /// Opens a stream: see `Scanner.open_stream`.
    #[pyo3(signature = (stream_id, mode="chunks", *, file=None, externals=None))]
    fn open_stream(
        &self,
        py: Python<'_>,
        stream_id: &Bound<'_, PyAny>,
        mode: &str,
        file: Option<&Bound<'_, PyDict>>,
        externals: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        let id = self::stream_id(stream_id)?;
        let mode = stream_mode(mode)?;
        let values = stream_externals(file, externals)?;
        self.run(py, |handle| handle.open_stream(id, mode, values))
    }

    /// Appends `data` to a chunk stream, opening it if needed. Blocks while
    /// the stream's shard is full. A failure found after the call returned
    /// is raised by the stream's next call.
    fn scan_chunk(
        &self,
        py: Python<'_>,
        stream_id: &Bound<'_, PyAny>,
        data: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let id = self::stream_id(stream_id)?;
        let data = data_of(data)?;
        self.run(py, move |handle| handle.scan_chunk(id, data.into_owned()))
    }

    /// Appends one line (without its newline) to a line stream.
    fn scan_line(
        &self,
        py: Python<'_>,
        stream_id: &Bound<'_, PyAny>,
        line: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let id = self::stream_id(stream_id)?;
        let line = data_of(line)?;
        self.run(py, move |handle| handle.scan_line(id, line.into_owned()))
    }

    /// The stream's verdict so far, after every chunk sent before the call.
    fn get_matches(&self, py: Python<'_>, stream_id: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let id = self::stream_id(stream_id)?;
        let results = self.run(py, |handle| handle.get_matches(id))?;
        known(py, results, id)
    }

    /// Closes the stream and returns its final verdict.
    fn close_stream(&self, py: Python<'_>, stream_id: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let id = self::stream_id(stream_id)?;
        let results = self.run(py, |handle| handle.close_stream(id))?;
        known(py, results, id)
    }

    /// Forgets what the stream has seen (also how a failed stream is taken
    /// back into use).
    fn reset_stream(&self, py: Python<'_>, stream_id: &Bound<'_, PyAny>) -> PyResult<()> {
        let id = self::stream_id(stream_id)?;
        self.run(py, |handle| handle.reset_stream(id))
    }

    /// The ids of the open streams over all shards, as `uuid.UUID`s.
    fn active_streams(&self, py: Python<'_>) -> PyResult<Vec<Py<PyAny>>> {
        let ids = self.run(py, |handle| handle.active_streams())?;
        uuid_objects(py, ids)
    }

    /// Stops the engine (its threads end; open streams are dropped). A
    /// second close does nothing; calls after it raise `ScanError`.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let engine = self.engine.lock().map(|mut e| e.take()).ok().flatten();
        if let Some(engine) = engine {
            py.detach(|| engine.shutdown())
                .map_err(|err| from_engine(py, err))?;
        }
        Ok(())
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Ok(Some(engine)) = self.engine.get_mut().map(Option::take) {
            let _ = engine.shutdown();
        }
    }
}

/// yaraflow's native module.
#[pymodule]
fn _yaraflow(module: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = module.py();
    module.add("__version__", env!("CARGO_PKG_VERSION"))?;
    module.add("Error", py.get_type::<Error>())?;
    module.add("CompileError", py.get_type::<CompileError>())?;
    module.add("ScanError", py.get_type::<ScanError>())?;
    module.add_class::<Rules>()?;
    module.add_class::<Scanner>()?;
    module.add_class::<Engine>()?;
    module.add_class::<ScanResults>()?;
    module.add_class::<Rule>()?;
    module.add_class::<Pattern>()?;
    module.add_class::<Match>()?;
    Ok(())
}
