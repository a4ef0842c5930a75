"""The examples, run on the bundled data and checked against an independent
path: tshark's extraction of each TCP direction (the `.follow` files kept
beside the captures) and whole log files, scanned whole by yara-x."""

import importlib.util
import json
import pathlib


import pytest

import yaraflow

yara_x = pytest.importorskip("yara_x", reason="the yara-x package (pip install yara-x)")

ROOT = pathlib.Path(__file__).resolve().parents[3]
EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"
RULES = ROOT / "data" / "rules"


def example(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def follow_directions(path):
    """{"src->dst": bytes} of tshark's `-z follow,tcp,raw` output, leaving
    out directions tshark says have bytes missing."""
    directions, incomplete, nodes = {}, set(), []
    for line in path.read_text().splitlines():
        if line.startswith("Node "):
            if line.startswith("Node 0"):
                nodes = []
            nodes.append(line[8:].strip())
            if len(nodes) == 2:
                directions.setdefault(f"{nodes[0]}->{nodes[1]}", bytearray())
                directions.setdefault(f"{nodes[1]}->{nodes[0]}", bytearray())
            continue
        if len(nodes) != 2:
            continue
        src, dst = (nodes[1], nodes[0]) if line.startswith("\t") else (nodes[0], nodes[1])
        text = line.strip()
        if text.endswith("bytes missing in capture file]"):
            incomplete.add(f"{src}->{dst}")
        elif text and all(c in "0123456789abcdef" for c in text):
            directions[f"{src}->{dst}"] += bytes.fromhex(text)
    return {name: bytes(data) for name, data in directions.items() if name not in incomplete}


def names(matching_rules):
    return sorted(rule.identifier for rule in matching_rules)


def test_pcap_flows_equals_tsharks_directions_scanned_whole():
    capture = ROOT / "data" / "pcap" / "lossy-link.pcap"
    reference = yara_x.compile((RULES / "default.yar").read_text())
    expected = follow_directions(capture.with_name(capture.name + ".follow"))
    with yaraflow.Engine(yaraflow.Rules(paths=[str(RULES)]), shards=2) as engine:
        got = example("pcap_flows").scan_capture(engine, str(capture))
    compared = 0
    for name, data in expected.items():
        assert got[name].bytes == len(data), name
        assert names(got[name].matching_rules) == names(reference.scan(data).matching_rules), name
        compared += bool(got[name].matching_rules)
    assert compared >= 4, "the capture's directions match some rules"


def test_tail_log_reports_what_a_whole_file_scan_finds(capsys):
    log = ROOT / "data" / "samples" / "app.log"
    scanner = yaraflow.Scanner(yaraflow.Rules(paths=[str(RULES)]))
    example("tail_log").tail(scanner, [str(log)], follow=False)
    printed = json.loads(capsys.readouterr().out)
    reference = yara_x.compile((RULES / "default.yar").read_text())
    # No match of the bundled rules spans two lines of app.log, so the line
    # stream's verdict is the whole file's.
    want = names(reference.scan(log.read_bytes()).matching_rules)
    assert sorted(rule["rule"] for rule in printed["rules"]) == want
    assert want and printed["lines"] == log.read_bytes().count(b"\n")
    assert scanner.active_streams() == []



def test_the_readme_snippet_runs(monkeypatch):
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## The Python package", 1)[1]
    snippet = section.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(ROOT)
    exec(compile(snippet, "README.md", "exec"), {})
