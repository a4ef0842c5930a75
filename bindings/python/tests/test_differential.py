"""Differential test: every stream's verdict from yaraflow (its Scanner and
its Engine, streams interleaved, chunked at random) equals the yara-x
package's whole-buffer scan of the same bytes: the same matching rules,
and each pattern's same matches (offset, length, XOR key).

The rules cover the modifiers and rule kinds yaraflow treats specially
(nocase, wide, fullword, xor, base64, hex jumps, regexes, anchors, counts,
private rules, whole-data rules that read filesize and headers). The
generator plants their patterns; the tallies at the end fail the test if
any rule never matched or never missed, so the test shows it exercised
each one. YARAFLOW_PY_STREAMS sets the number of streams (default 400).
"""

import base64
import os
import random
import threading
import uuid

import pytest

import yaraflow

yara_x = pytest.importorskip("yara_x", reason="the yara-x package (pip install yara-x)")

RULES = r"""
rule literal { strings: $a = "attack" condition: $a }
rule nocase_wide { strings: $a = "Secret" nocase wide ascii condition: $a }
rule fullword_root { strings: $a = "root" fullword condition: #a >= 1 }
rule xor_beacon { strings: $a = "beacon" xor(1-255) condition: $a }
rule base64_password { strings: $a = "password=" base64 condition: $a }
rule hex_jump { strings: $a = { 4D 5A [2-6] 50 45 } condition: $a }
rule regex_user { strings: $a = /user=[a-z]{3,8};/ condition: $a }
rule anchored_header { strings: $a = "HDR" condition: $a at 0 }
rule counted { strings: $a = "ab!" condition: #a >= 3 and @a[1] < 2000 }
private rule evil_marker { strings: $e = "evil" condition: $e }
rule uses_private { condition: evil_marker }
rule small_file { condition: filesize < 40 }
rule mz_header { condition: uint16(0) == 0x5A4D and filesize > 100 }
rule not_mz_but_marked { strings: $m = "mark" condition: $m and uint16(0) != 0x5A4D }
"""

TOKENS = [
    b"attack", b"Secret", b"sEcReT", "SECRET".encode("utf-16-le"), b" root ", b"xroot",
    b"MZ\x90\x00PE", b"MZ\x00\x00\x00\x00\x00\x00\x00PE", b"user=abcde;", b"user=ab;",
    b"ab!", b"ab!ab!ab!", b"evil", b"mark", b"HDR", b"\n",
]


def plant_xor(rng):
    key = rng.randint(1, 255)
    return bytes(b ^ key for b in b"beacon")


def plant_base64(rng):
    text = bytes(rng.randint(32, 126) for _ in range(rng.randint(0, 2)))
    return base64.b64encode(text + b"password=" + b"x" * rng.randint(0, 3))


def stream_bytes(rng):
    parts = []
    if rng.random() < 0.25:
        parts.append(rng.choice([b"MZ", b"HDR"]))
    for _ in range(rng.choice([0, 1, 3, 8, 20])):
        roll = rng.random()
        if roll < 0.1:
            parts.append(plant_xor(rng))
        elif roll < 0.2:
            parts.append(plant_base64(rng))
        elif roll < 0.7:
            parts.append(rng.choice(TOKENS))
        else:
            parts.append(bytes(rng.choice(b"abr!otx \x00") for _ in range(rng.randint(1, 200))))
    return b"".join(parts)


def chunks(rng, data):
    at = 0
    while at < len(data):
        size = rng.choice([1, 2, 7, 64, 500, 5000])
        yield data[at : at + size]
        at += size


def expected(reference, data):
    return verdict_of(reference.scan(data).matching_rules)


def verdict_of(matching_rules):
    return {
        rule.identifier: {
            pattern.identifier: [(m.offset, m.length, m.xor_key) for m in pattern.matches]
            for pattern in rule.patterns
        }
        for rule in matching_rules
    }


def interleaved(rng, streams):
    """(stream, chunk) pairs and closes, streams interleaved at random."""
    pending = {sid: list(chunks(rng, data)) for sid, data in streams.items()}
    order = []
    while pending:
        sid = rng.choice(list(pending))
        if pending[sid]:
            order.append(("chunk", sid, pending[sid].pop(0)))
        else:
            order.append(("close", sid, None))
            del pending[sid]
    return order


@pytest.fixture(scope="module")
def reference():
    return yara_x.compile(RULES)


@pytest.fixture(scope="module")
def rules():
    return yaraflow.Rules(RULES)


def run_and_compare(rng, target, reference, streams, tally):
    for sid in streams:
        target.open_stream(sid)  # an empty stream has a verdict too
    for kind, sid, chunk in interleaved(rng, streams):
        if kind == "chunk":
            target.scan_chunk(sid, chunk)
            continue
        if rng.random() < 0.1:
            target.get_matches(sid)  # a verdict mid-way changes nothing
        got = target.close_stream(sid)
        want = expected(reference, streams[sid])
        assert verdict_of(got.matching_rules) == want, f"stream {sid}: {streams[sid]!r}"
        assert got.bytes == len(streams[sid])
        for rule in tally:
            tally[rule][rule in want] += 1


RULE_NAMES = [
    "literal", "nocase_wide", "fullword_root", "xor_beacon", "base64_password", "hex_jump",
    "regex_user", "anchored_header", "counted", "uses_private", "small_file", "mz_header",
    "not_mz_but_marked",
]


def assert_exercised(tally):
    for rule, (missed, matched) in tally.items():
        assert matched > 0, f"no stream matched {rule}: the test did not exercise it"
        assert missed > 0, f"every stream matched {rule}"


def test_scanner_verdicts_equal_whole_buffer_yara_x(rules, reference):
    rng = random.Random(0x5EED)
    total = int(os.environ.get("YARAFLOW_PY_STREAMS", "400"))
    scanner = yaraflow.Scanner(rules)
    tally = {name: [0, 0] for name in RULE_NAMES}
    for _ in range(0, total, 20):
        streams = {uuid.UUID(int=rng.getrandbits(128)): stream_bytes(rng) for _ in range(20)}
        run_and_compare(rng, scanner, reference, streams, tally)
    assert scanner.active_streams() == []
    print("rule: (streams that missed, matched)", tally)
    assert_exercised(tally)


def test_engine_verdicts_equal_whole_buffer_yara_x_from_many_threads(rules, reference):
    total = int(os.environ.get("YARAFLOW_PY_STREAMS", "400"))
    tally = {name: [0, 0] for name in RULE_NAMES}
    failures = []
    lock = threading.Lock()

    def producer(seed, engine):
        rng = random.Random(seed)
        mine = {name: [0, 0] for name in RULE_NAMES}
        try:
            for _ in range(0, total // 4, 20):
                streams = {uuid.UUID(int=rng.getrandbits(128)): stream_bytes(rng) for _ in range(20)}
                run_and_compare(rng, engine, reference, streams, mine)
        except BaseException as err:
            failures.append(err)
        with lock:
            for rule, (missed, matched) in mine.items():
                tally[rule][0] += missed
                tally[rule][1] += matched

    with yaraflow.Engine(rules, shards=2) as engine:
        threads = [threading.Thread(target=producer, args=(seed, engine)) for seed in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not failures, failures[0]
    print("rule: (streams that missed, matched)", tally)
    assert_exercised(tally)
