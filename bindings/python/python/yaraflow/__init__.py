"""yaraflow: many concurrent byte streams scanned with YARA-X rules.

Each stream is named by a stream id (a ``uuid.UUID``, its 16 bytes, or its
text) and keeps its own matching state between the chunks or lines that
come for it, interleaved with any number of other streams. A stream's
verdict equals a whole-buffer YARA-X scan of its bytes.

>>> import uuid, yaraflow
>>> rules = yaraflow.Rules('rule hello { strings: $a = "hello world" condition: $a }')
>>> scanner = yaraflow.Scanner(rules)
>>> flow = uuid.uuid4()
>>> scanner.scan_chunk(flow, b"... hello ")
>>> scanner.scan_chunk(flow, b"world ...")
>>> [rule.identifier for rule in scanner.close_stream(flow).matching_rules]
['hello']

``Scanner`` belongs to the thread that created it; ``Engine`` (shards on
threads of their own) takes calls from any thread and releases the GIL
while it works.
"""

from ._yaraflow import (
    CompileError,
    Engine,
    Error,
    Match,
    Pattern,
    Rule,
    Rules,
    ScanError,
    ScanResults,
    Scanner,
    __version__,
)

__all__ = [
    "CompileError",
    "Engine",
    "Error",
    "Match",
    "Pattern",
    "Rule",
    "Rules",
    "ScanError",
    "ScanResults",
    "Scanner",
    "__version__",
]
