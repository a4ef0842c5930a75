"""Type stubs of the native module (see ``src/lib.rs``)."""

import uuid
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

StreamId = Union[uuid.UUID, bytes, str]
"""A stream id: a ``uuid.UUID``, its 16 bytes, or its text."""
Data = Union[bytes, bytearray, str]
"""Bytes to scan (a ``str`` is scanned as UTF-8)."""
ExternalValue = Union[bool, int, float, str]
FileInfo = Dict[str, Optional[str]]
"""``{"name": ..., "path": ..., "content_type": ...}``, each optional."""

__version__: str

class Error(Exception):
    """Base class of yaraflow's errors."""

class CompileError(Error):
    """Rules that do not compile, or a rule path that cannot be read."""

class ScanError(Error):
    """A stream call that was refused or failed."""

    kind: str
    """Why: ``unknown_stream``, ``mode_mismatch``, ``too_many_streams``,
    ``chunk_too_large``, ``bad_external``, ``scan_failed``, ..."""

class Match:
    """One match of a pattern, at a stream offset."""

    offset: int
    """Stream offset of the first matched byte."""
    length: int
    """Length of the match in bytes."""
    line: int
    """1-based line of the match."""
    xor_key: Optional[int]
    """The XOR key, for patterns with the ``xor`` modifier."""
    data: bytes
    """The matched bytes (at most 64 by default)."""

class Pattern:
    """A pattern of a matching rule, with every match."""

    identifier: str
    """The pattern's identifier (``$a``; ``$`` for anonymous patterns)."""
    matches: Tuple[Match, ...]

class Rule:
    """A matching rule."""

    identifier: str
    namespace: str
    tags: Tuple[str, ...]
    metadata: Tuple[Tuple[str, Any], ...]
    """``(name, value)`` pairs, in the rule's order."""
    patterns: Tuple[Pattern, ...]
    exact: bool
    """False when stream scanning cannot evaluate this rule exactly."""

class ScanResults:
    """The verdict of one stream."""

    stream_id: uuid.UUID
    matching_rules: Tuple[Rule, ...]
    exact: bool
    """False in the rare case where no rule's verdict is claimed exact."""
    matches_cut: bool
    """True when the stream had more matches than the scanner lists."""
    bytes: int
    """Bytes appended to the stream."""
    lines: int
    """Lines appended (line streams) or newline bytes seen (chunk streams)."""
    chunks: int
    """Calls that appended data."""
    whole_data: Optional[Dict[str, Any]]
    """How rules that need the whole data were decided (``None`` when the
    rules have none and no dense rule made the stream retain)."""

class Rules:
    """Compiled YARA rules, shared by any number of scanners and engines."""

    def __init__(
        self,
        source: Optional[str] = None,
        *,
        paths: Optional[Sequence[str]] = None,
        externals: Optional[Dict[str, ExternalValue]] = None,
    ) -> None: ...
    def externals(self) -> Dict[str, ExternalValue]:
        """The external variables the rules declare, with their default values."""

class Scanner:
    """A multi-stream scanner, used from the thread that created it."""

    def __init__(
        self,
        rules: Rules,
        *,
        max_open_streams: Optional[int] = None,
        max_chunk_bytes: Optional[int] = None,
    ) -> None: ...
    def open_stream(
        self,
        stream_id: StreamId,
        mode: str = "chunks",
        *,
        file: Optional[FileInfo] = None,
        externals: Optional[Dict[str, ExternalValue]] = None,
    ) -> None: ...
    def scan_chunk(self, stream_id: StreamId, data: Data) -> None: ...
    def scan_line(self, stream_id: StreamId, line: Data) -> None: ...
    def get_matches(self, stream_id: StreamId) -> ScanResults: ...
    def close_stream(self, stream_id: StreamId) -> ScanResults: ...
    def reset_stream(self, stream_id: StreamId) -> None: ...
    def active_streams(self) -> List[uuid.UUID]: ...

class Engine:
    """The actor engine: shards on threads of their own; any thread may call it."""

    def __init__(self, rules: Rules, *, shards: int = 0) -> None: ...
    def open_stream(
        self,
        stream_id: StreamId,
        mode: str = "chunks",
        *,
        file: Optional[FileInfo] = None,
        externals: Optional[Dict[str, ExternalValue]] = None,
    ) -> None: ...
    def scan_chunk(self, stream_id: StreamId, data: Data) -> None: ...
    def scan_line(self, stream_id: StreamId, line: Data) -> None: ...
    def get_matches(self, stream_id: StreamId) -> ScanResults: ...
    def close_stream(self, stream_id: StreamId) -> ScanResults: ...
    def reset_stream(self, stream_id: StreamId) -> None: ...
    def active_streams(self) -> List[uuid.UUID]: ...
    def close(self) -> None:
        """Stops the engine; open streams are dropped without verdicts."""
    def __enter__(self) -> "Engine": ...
    def __exit__(self, *args: object) -> bool: ...
