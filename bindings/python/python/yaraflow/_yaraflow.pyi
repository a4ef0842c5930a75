"""Type stubs of the native module (see ``src/lib.rs``)."""

import uuid
from typing import Dict, List, Optional, Sequence, Union

from ._results import ScanResults

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
