"""Tail log files into yaraflow: each file is a line stream (no match spans
two lines), and each match reports its line.

    python tail_log.py [--rules PATH] [--follow] LOG...

Prints one JSON line per log file when it ends (or, with --follow, keeps
reading new lines and prints each new matching rule as it appears, until
Ctrl-C).
"""

import argparse
import json
import time
import uuid

import yaraflow


def verdict(path, results):
    return {
        "file": path,
        "lines": results.lines,
        "rules": [
            {
                "rule": rule.identifier,
                "matches": [
                    {"pattern": p.identifier, "line": m.line, "data": m.data.decode("latin-1")}
                    for p in rule.patterns
                    for m in p.matches
                ],
            }
            for rule in results.matching_rules
        ],
    }


def tail(scanner, paths, follow):
    sources = {path: (uuid.uuid5(uuid.NAMESPACE_URL, path), open(path, "rb")) for path in paths}
    reported = {path: set() for path in paths}
    for stream, _ in sources.values():
        scanner.open_stream(stream, "lines")
    try:
        while True:
            for path, (stream, log) in sources.items():
                for line in log:
                    scanner.scan_line(stream, line.rstrip(b"\r\n"))
                if follow:
                    for rule in scanner.get_matches(stream).matching_rules:
                        if rule.identifier not in reported[path]:
                            reported[path].add(rule.identifier)
                            print(json.dumps({"file": path, "new_rule": rule.identifier}), flush=True)
            if not follow:
                break
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    for path, (stream, log) in sources.items():
        print(json.dumps(verdict(path, scanner.close_stream(stream))))
        log.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", default="data/rules", help="rule file or directory")
    parser.add_argument("--follow", action="store_true", help="keep reading new lines")
    parser.add_argument("logs", nargs="+")
    args = parser.parse_args()
    scanner = yaraflow.Scanner(yaraflow.Rules(paths=[args.rules]))
    tail(scanner, args.logs, args.follow)


if __name__ == "__main__":
    main()
