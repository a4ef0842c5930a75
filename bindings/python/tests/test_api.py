"""The Python API's calls, arguments and errors (the verdicts themselves are
checked against yara-x in test_differential.py)."""

import threading
import uuid

import pytest

import yaraflow

RULES = r"""
rule greeting : demo {
    meta:
        description = "a greeting"
        weight = 3
    strings:
        $hello = "hello world"
    condition:
        $hello
}
rule exe_by_name {
    condition:
        extension == ".exe"
}
rule flagged {
    strings:
        $a = "flag"
    condition:
        $a and min_flags > 0
}
"""


@pytest.fixture(scope="module")
def rules():
    return yaraflow.Rules(RULES, externals={"min_flags": 0})


def identifiers(results):
    return sorted(rule.identifier for rule in results.matching_rules)


def test_a_pattern_across_chunks_matches_with_its_stream_offset(rules):
    scanner = yaraflow.Scanner(rules)
    flow = uuid.uuid4()
    scanner.scan_chunk(flow, b"12345hello ")
    scanner.scan_chunk(flow, bytearray(b"wor"))
    scanner.scan_chunk(flow, "ld!")
    results = scanner.close_stream(flow)
    assert results.stream_id == flow
    assert (results.bytes, results.chunks) == (17, 3)
    (rule,) = results.matching_rules
    assert (rule.identifier, rule.namespace, rule.tags) == ("greeting", "default", ("demo",))
    assert rule.metadata == (("description", "a greeting"), ("weight", 3))
    (pattern,) = rule.patterns
    assert pattern.identifier == "$hello"
    (match,) = pattern.matches
    assert (match.offset, match.length, match.data, match.line) == (5, 11, b"hello world", 1)
    assert rule.exact and results.exact


def test_stream_ids_are_uuids_their_bytes_or_their_text(rules):
    scanner = yaraflow.Scanner(rules)
    flow = uuid.uuid4()
    scanner.scan_chunk(flow, b"hello ")
    scanner.scan_chunk(flow.bytes, b"world")
    assert scanner.active_streams() == [flow]
    assert identifiers(scanner.get_matches(str(flow))) == ["greeting"]
    for bad, error in [(b"short", ValueError), ("not-a-uuid", ValueError), (42, TypeError)]:
        with pytest.raises(error):
            scanner.scan_chunk(bad, b"x")
    with pytest.raises(TypeError):
        scanner.scan_chunk(flow, 42)
    assert scanner.get_matches(flow).bytes == 11, "refused calls change nothing"


def test_refusals_raise_scan_error_with_its_kind(rules):
    scanner = yaraflow.Scanner(rules, max_open_streams=2, max_chunk_bytes=8)
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    scanner.scan_chunk(a, b"flag")
    scanner.scan_line(b, b"one line")
    cases = [
        (lambda: scanner.close_stream(c), "unknown_stream"),
        (lambda: scanner.reset_stream(c), "unknown_stream"),
        (lambda: scanner.scan_line(a, b"x"), "mode_mismatch"),
        (lambda: scanner.scan_chunk(c, b"x"), "too_many_streams"),
        (lambda: scanner.scan_chunk(a, b"123456789"), "chunk_too_large"),
        (lambda: scanner.open_stream(a, externals={"nope": 1}), "bad_external"),
        (lambda: scanner.open_stream(a, externals={"min_flags": "one"}), "bad_external"),
    ]
    for call, kind in cases:
        with pytest.raises(yaraflow.ScanError) as raised:
            call()
        assert raised.value.kind == kind, raised.value
        assert isinstance(raised.value, yaraflow.Error)
    assert scanner.get_matches(a).bytes == 4, "no refusal touched the stream"
    with pytest.raises(ValueError):
        scanner.open_stream(c, "words")


def test_bad_rules_raise_compile_error_naming_the_problem(tmp_path):
    with pytest.raises(yaraflow.CompileError, match="undeclared|unknown|not defined"):
        yaraflow.Rules("rule broken { condition: no_such_thing }")
    with pytest.raises(yaraflow.CompileError):
        yaraflow.Rules(paths=[str(tmp_path / "missing.yar")])
    with pytest.raises(TypeError):
        yaraflow.Rules("rule a { condition: true }", paths=["x"])
    with pytest.raises(TypeError):
        yaraflow.Rules(externals={"x": [1]}, source="rule a { condition: true }")
    path = tmp_path / "ok.yar"
    path.write_text('rule from_file { strings: $a = "abc" condition: $a }')
    scanner = yaraflow.Scanner(yaraflow.Rules(paths=[str(tmp_path)]))
    scanner.scan_chunk(uuid.UUID(int=1), b"xabcx")
    assert identifiers(scanner.close_stream(uuid.UUID(int=1))) == ["from_file"]


def test_streams_carry_their_own_externals(rules):
    assert rules.externals() == {
        "min_flags": 0,
        "filename": "",
        "filepath": "",
        "extension": "",
        "filetype": "",
    }
    scanner = yaraflow.Scanner(rules)
    exe, flags, plain = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    scanner.open_stream(exe, file={"name": "SETUP.EXE", "path": "/dl/SETUP.EXE"})
    scanner.open_stream(flags, externals={"min_flags": 2})
    for stream in (exe, flags, plain):
        scanner.scan_chunk(stream, b"a flag")
    assert identifiers(scanner.close_stream(exe)) == ["exe_by_name"]
    assert identifiers(scanner.close_stream(flags)) == ["flagged"]
    assert identifiers(scanner.close_stream(plain)) == []


def test_line_streams_report_the_line(rules):
    scanner = yaraflow.Scanner(rules)
    log = uuid.uuid4()
    for line in ["first", "second hello world", "third"]:
        scanner.scan_line(log, line)
    results = scanner.close_stream(log)
    (match,) = results.matching_rules[0].patterns[0].matches
    assert (results.lines, match.line, match.offset) == (3, 2, 12)


def test_reset_forgets_what_the_stream_saw(rules):
    scanner = yaraflow.Scanner(rules)
    flow = uuid.uuid4()
    scanner.scan_chunk(flow, b"hello world")
    scanner.reset_stream(flow)
    scanner.scan_chunk(flow, b"nothing")
    results = scanner.close_stream(flow)
    assert (identifiers(results), results.bytes) == ([], 7)


def test_a_scanner_belongs_to_its_thread(rules):
    scanner = yaraflow.Scanner(rules)
    raised = []

    def other_thread():
        try:
            scanner.scan_chunk(uuid.uuid4(), b"x")
        except BaseException as err:  # pyo3 raises its PanicException (a BaseException)
            raised.append(err)

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join()
    assert raised and "thread" in str(raised[0]).lower(), raised
    assert scanner.active_streams() == [], "the scanner is unharmed"


def test_an_engine_takes_calls_from_many_threads(rules):
    streams = {uuid.uuid4(): (i % 3 == 0) for i in range(60)}
    with yaraflow.Engine(rules, shards=2) as engine:

        def feed(chunk_of_streams):
            for stream, greets in chunk_of_streams:
                text = b"say hello world" if greets else b"say hello there"
                for i in range(0, len(text), 4):
                    engine.scan_chunk(stream, text[i : i + 4])

        items = list(streams.items())
        threads = [threading.Thread(target=feed, args=(items[i::4],)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(engine.active_streams()) == sorted(streams)
        for stream, greets in streams.items():
            assert identifiers(engine.close_stream(stream)) == (["greeting"] if greets else [])
        with pytest.raises(yaraflow.ScanError) as raised:
            engine.get_matches(uuid.uuid4())
        assert raised.value.kind == "unknown_stream"
    with pytest.raises(yaraflow.ScanError):
        engine.scan_chunk(uuid.uuid4(), b"after close")
    engine.close()  # a second close does nothing


def test_the_package_docstring_example_runs():
    import doctest

    failures, tried = doctest.testmod(yaraflow)
    assert tried > 0 and failures == 0


def test_results_print_readably(rules):
    scanner = yaraflow.Scanner(rules)
    scanner.scan_chunk(uuid.UUID(int=5), b"hello world")
    results = scanner.close_stream(uuid.UUID(int=5))
    assert "greeting" in repr(results) and "bytes=11" in repr(results)
    assert repr(results.matching_rules[0].patterns[0].matches[0]) == "Match(offset=0, length=11)"
