#!/usr/bin/env bash
# yaraflow next to Hyperscan/Vectorscan stream mode on the same workload
# (same bytes, same chunk order, the synthetic rules' patterns as
# literals), in one run. Needs gcc and libhyperscan-dev (or
# libvectorscan-dev): sudo apt-get install libhyperscan-dev
# Usage, from the repository root: benches/peer/run.sh [yaraflow bench options]
# (default: --streams 100000 --synthetic-rules 1000).
set -euo pipefail
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(--streams 100000 --synthetic-rules 1000)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
gcc -O2 -o "$work/hyperscan_stream" benches/peer/hyperscan_stream.c -lhs
cargo build --release --quiet
./target/release/yaraflow bench "${args[@]}" --shards 1 --blocks-cap 0 \
    --dump-workload "$work/workload" > "$work/yaraflow.txt"
"$work/hyperscan_stream" "$work/workload" > "$work/peer.json"
cat "$work/yaraflow.txt"
echo
echo "peer on the same workload:"
cat "$work/peer.json"
