#!/usr/bin/env bash
# Throughput through a NATS JetStream cluster against the in-process
# engine, on one machine: a three-node cluster (nats-server, R3), WORKERS
# `yaraflow worker` processes, `yaraflow pcap --nats` publishing a
# capture's directions, and the time until every direction's verdict is on
# the verdict stream; then `yaraflow pcap --no-objects --shards WORKERS`
# on the same capture, in process. Prints both times and their ratio.
#
#   benches/cluster/run.sh CAPTURE [WORKERS] [PARTITIONS] [INPUT_STREAMS]
#
# INPUT_STREAMS (default 1): the JetStream streams the partitions' input
# is spread over (each with its own leader node).
#
# CAPTURE: e.g. `sudo data/pcap/bench-capture.sh /tmp/bench.pcap 500`.
# Needs nats-server and a release build (cargo build --release).
set -euo pipefail
cd "$(dirname "$0")/../.."
capture=$1 workers=${2:-2} partitions=${3:-16} input_streams=${4:-1}
bin=target/release/yaraflow
dir=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"' EXIT
for n in 1 2 3; do
    cat > "$dir/n$n.conf" <<CONF
server_name: n$n
listen: 127.0.0.1:1942$n
jetstream { store_dir: "$dir/n$n", max_file_store: 8GB }
cluster { name: yfbench, listen: 127.0.0.1:1962$n,
  routes: [nats-route://127.0.0.1:19621, nats-route://127.0.0.1:19622, nats-route://127.0.0.1:19623] }
CONF
    nats-server -c "$dir/n$n.conf" 2> "$dir/n$n.log" &
    pids+=($!)
done
url=nats://127.0.0.1:19421
deployment=(--partitions "$partitions" --replicas 3 --input-streams "$input_streams")
sleep 3
for w in $(seq "$workers"); do
    node=$(( (w - 1) % 3 + 1 ))
    $bin worker --nats "nats://127.0.0.1:1942$node" "${deployment[@]}" --status-every 0 \
        2> "$dir/worker$w.log" &
    pids+=($!)
done
sleep 8  # the workers announce themselves and claim their shares

started=$(date +%s.%N)
$bin pcap --quiet --nats "$url" "${deployment[@]}" "$capture" > "$dir/published.jsonl"
published=$(date +%s.%N)
directions=$(wc -l < "$dir/published.jsonl")
while :; do
    got=$(timeout 60 $bin verdicts --nats "$url" "${deployment[@]}" --no-follow | wc -l)
    [ "$got" -ge "$directions" ] && break
    sleep 0.2
done
done_at=$(date +%s.%N)

local_started=$(date +%s.%N)
$bin pcap --quiet --no-objects --shards "$workers" "$capture" > "$dir/local.jsonl"
local_done=$(date +%s.%N)

bytes=$(stat -c %s "$capture")
python3 - "$bytes" "$directions" "$started" "$published" "$done_at" "$local_started" "$local_done" "$workers" "$input_streams" <<'PY'
import sys
size, directions = int(sys.argv[1]), int(sys.argv[2])
start, published, done, lstart, ldone = map(float, sys.argv[3:8])
workers, inputs = sys.argv[8], sys.argv[9]
cluster, local = done - start, ldone - lstart
print(f"capture: {size / 1e6:.0f} MB, {directions} directions")
print(f"cluster ({workers} workers, 3 NATS nodes, R3, {inputs} input streams): published in {published - start:.2f} s, "
      f"every verdict in {cluster:.2f} s ({size / cluster / 1e6:.0f} MB/s of capture)")
print(f"in process (yaraflow pcap, {workers} shards): {local:.2f} s ({size / local / 1e6:.0f} MB/s)")
print(f"cluster / in process throughput: {local / cluster:.2f}")
PY
