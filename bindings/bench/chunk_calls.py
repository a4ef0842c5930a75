"""Times yaraflow's Python Scanner on the overhead workload: every chunk of
every stream, streams interleaved round-robin, then every close. Prints one
JSON line: nanoseconds per chunk call and per close.

    python3 chunk_calls.py RULES WORKLOAD STREAMS SIZE
"""

import json
import sys
import time
import uuid

import yaraflow

def main():
    rules_path, workload, streams, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    data = open(workload, "rb").read()
    chunks = len(data) // size // streams
    scanner = yaraflow.Scanner(yaraflow.Rules(paths=[rules_path]))
    ids = [uuid.UUID(int=i + 1).bytes for i in range(streams)]
    views = [
        [data[(c * streams + s) * size : (c * streams + s + 1) * size] for s in range(streams)]
        for c in range(chunks)
    ]
    started = time.perf_counter_ns()
    for round_ in views:
        for stream, chunk in zip(ids, round_):
            scanner.scan_chunk(stream, chunk)
    scanned = time.perf_counter_ns()
    for stream in ids:
        scanner.close_stream(stream)
    closed = time.perf_counter_ns()
    print(json.dumps({
        "binding": "python",
        "ns_per_chunk": (scanned - started) / (streams * chunks),
        "ns_per_close": (closed - scanned) / streams,
    }))


if __name__ == "__main__":
    main()
