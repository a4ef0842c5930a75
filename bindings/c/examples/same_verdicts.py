"""Checks that pcap_flows.c's verdicts equal `yaraflow pcap --no-objects`'s
for the same capture: per direction (src, dst), the same byte count and
the same matching rules. Directions the reference saw with bytes missing
(a hole no reassembler can fill) are compared on rules only when both saw
the same bytes.

    python3 same_verdicts.py C_OUTPUT.jsonl REFERENCE.jsonl
"""

import json
import sys


def rules(results):
    return sorted(rule["identifier"] for rule in results["rules"])


def main():
    ours = {}
    for line in open(sys.argv[1]):
        record = json.loads(line)
        ours[(record["src"], record["dst"])] = record["results"]
    reference = {}
    for line in open(sys.argv[2]):
        record = json.loads(line)
        flow = record.get("flow")
        if flow is not None and "object" not in record:
            reference[(flow["src"], flow["dst"])] = (record, flow["missing_bytes"])
    problems = []
    compared = 0
    for key, (want, missing) in reference.items():
        got = ours.get(key)
        if got is None:
            problems.append(f"{key}: not followed")
        elif missing == 0 and got["bytes"] != want["bytes"]:
            problems.append(f"{key}: {got['bytes']} bytes, yaraflow pcap saw {want['bytes']}")
        elif got["bytes"] == want["bytes"] and rules(got) != rules(want):
            problems.append(f"{key}: rules {rules(got)}, yaraflow pcap found {rules(want)}")
        else:
            compared += got["bytes"] == want["bytes"]
    if problems or compared == 0:
        sys.exit(f"{sys.argv[1]}: " + ("; ".join(problems) or "no direction compared"))
    print(f"{sys.argv[1]}: {compared} directions agree with yaraflow pcap")


if __name__ == "__main__":
    main()
