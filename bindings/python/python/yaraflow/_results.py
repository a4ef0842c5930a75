"""A stream's verdict as Python objects, shaped like the ``yara-x``
package's results (``matching_rules``, each rule's ``patterns`` and their
``matches``), with what a stream adds: its id, counters, and whether each
verdict is exact.

The native module hands verdicts over as the JSON text ``yaraflow scan``
prints; ``ScanResults._from_json`` is the one place that reads it.
"""

from __future__ import annotations

import codecs
import json
import uuid
from dataclasses import dataclass
from typing import Any, Optional, Tuple


@dataclass(frozen=True)
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
    """The matched bytes (at most the scanner's snippet limit, 64 bytes by default)."""


@dataclass(frozen=True)
class Pattern:
    """A pattern of a matching rule, with every match."""

    identifier: str
    """The pattern's identifier (``$a``; ``$`` for anonymous patterns)."""
    matches: Tuple[Match, ...]


@dataclass(frozen=True)
class Rule:
    """A matching rule."""

    identifier: str
    namespace: str
    tags: Tuple[str, ...]
    metadata: Tuple[Tuple[str, Any], ...]
    """``(name, value)`` pairs, in the rule's order."""
    patterns: Tuple[Pattern, ...]
    exact: bool
    """False when stream scanning cannot evaluate this rule exactly
    (``yaraflow check`` says why)."""


@dataclass(frozen=True)
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
    whole_data: Optional[dict]
    """How rules that need the whole data were decided (``None`` when the
    rules have none): ``{"state": "scanned" | "gated" | ..., ...}``."""

    @staticmethod
    def _from_json(text: str) -> "ScanResults":
        raw = json.loads(text)
        return ScanResults(
            stream_id=uuid.UUID(raw["stream"]),
            matching_rules=tuple(_rule(rule) for rule in raw["rules"]),
            exact=raw["exact"],
            matches_cut=raw["matches_cut"],
            bytes=raw["bytes"],
            lines=raw["lines"],
            chunks=raw["chunks"],
            whole_data=raw.get("whole_data"),
        )


def _rule(raw: dict) -> Rule:
    return Rule(
        identifier=raw["identifier"],
        namespace=raw["namespace"],
        tags=tuple(raw["tags"]),
        metadata=tuple((name, value) for name, value in raw["metadata"]),
        patterns=tuple(
            Pattern(
                identifier=pattern["identifier"],
                matches=tuple(_match(m) for m in pattern["matches"]),
            )
            for pattern in raw["patterns"]
        ),
        exact=raw["exact"],
    )


def _match(raw: dict) -> Match:
    return Match(
        offset=raw["offset"],
        length=raw["length"],
        line=raw["line"],
        xor_key=raw.get("xor_key"),
        # The JSON carries the bytes as Rust's escape_default text.
        data=codecs.escape_decode(raw["data"].encode("ascii"))[0],
    )
