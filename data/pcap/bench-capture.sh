#!/usr/bin/env bash
# Makes a large capture for measuring `yaraflow pcap` (not committed):
# CONNECTIONS HTTP downloads of a file of data/samples (random.bin, 200 KB,
# by default; app.log makes many short flows) over loopback with a
# 1500-byte MTU, 16 at a time, in a network namespace. Needs root, tshark
# (dumpcap), curl, python3. Usage, from the repo root:
#   sudo data/pcap/bench-capture.sh OUT.pcap [CONNECTIONS] [SAMPLE]
set -euo pipefail
out=$1
connections=${2:-2000}
sample=${3:-random.bin}
ip netns add yf-bench
trap 'kill $(jobs -p) 2>/dev/null || true; ip netns del yf-bench' EXIT
ip -n yf-bench link set lo mtu 1500 up
ip netns exec yf-bench ethtool -K lo tso off gso off gro off >/dev/null 2>&1 || true
ip netns exec yf-bench dumpcap -q -i lo -B 64 -P -w "$out" 2>/dev/null &
sleep 2
ip netns exec yf-bench python3 -m http.server 18100 --bind 127.0.0.1 --directory data/samples >/dev/null 2>&1 &
sleep 1
seq "$connections" | ip netns exec yf-bench xargs -P 16 -I{} \
    curl -s -o /dev/null "http://127.0.0.1:18100/$sample?{}"
ip netns exec yf-bench curl -s -o /dev/null -u admin:hunter2 http://127.0.0.1:18100/eicar.com
sleep 2
kill %1; wait %1 || true
ls -l "$out"
