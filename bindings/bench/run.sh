#!/usr/bin/env bash
# Per-chunk overhead of the C API and of the Python package against the
# Rust call: the same workload (10,000 streams of ten SIZE-byte chunks of
# random bytes, 1,460 by default, interleaved round-robin, the bundled
# rules) through
# MultiStreamScanner in Rust, yf_scanner_scan_chunk in C and
# Scanner.scan_chunk in Python, all optimised builds, ROUNDS rounds run
# one after the other; prints each run and the median ratios.
#
#   bindings/bench/run.sh [STREAMS] [CHUNKS] [ROUNDS] [SIZE]
set -euo pipefail
cd "$(dirname "$0")/../.."
streams=${1:-10000} chunks=${2:-10} rounds=${3:-3} size=${4:-1460}
out=target/chunk-calls
mkdir -p "$out"
python3 bindings/bench/workload.py "$out/workload.bin" "$streams" "$chunks" "$size"

cargo build --quiet --release -p yaraflow -p yaraflow-c
cargo bench --quiet --bench chunk_calls --no-run
gcc -O2 -Wall -Werror -Ibindings/c/include bindings/bench/chunk_calls.c \
    target/release/libyaraflow_c.a -lpthread -ldl -lm -lrt -lgcc_s -lc -o "$out/chunk_calls"
[ -x "$out/venv/bin/python" ] || python3 -m venv "$out/venv"
"$out/venv/bin/pip" install --quiet --disable-pip-version-check "maturin>=1.9.4,<2"
"$out/venv/bin/maturin" build --quiet --release -m bindings/python/Cargo.toml --out "$out/wheels"
"$out/venv/bin/pip" install --quiet --disable-pip-version-check --force-reinstall "$out"/wheels/yaraflow-*.whl

for _ in $(seq "$rounds"); do
    cargo bench --quiet --bench chunk_calls -- data/rules "$out/workload.bin" "$streams" "$size"
    "$out/chunk_calls" data/rules "$out/workload.bin" "$streams" "$size"
    "$out/venv/bin/python" bindings/bench/chunk_calls.py data/rules "$out/workload.bin" "$streams" "$size"
done | tee "$out/runs.jsonl"

python3 - "$out/runs.jsonl" <<'PY'
import json, statistics, sys
runs = [json.loads(line) for line in open(sys.argv[1])]
median = {
    (b, k): statistics.median(r[k] for r in runs if r["binding"] == b)
    for b in ("rust", "c", "python") for k in ("ns_per_chunk", "ns_per_close")
}
print("| binding | ns per chunk | ratio to Rust | ns per close | ratio to Rust |")
print("|---|---|---|---|---|")
for b in ("rust", "c", "python"):
    chunk, close = median[(b, "ns_per_chunk")], median[(b, "ns_per_close")]
    print(f"| {b} | {chunk:,.0f} | {chunk / median[('rust', 'ns_per_chunk')]:.2f} "
          f"| {close:,.0f} | {close / median[('rust', 'ns_per_close')]:.2f} |")
PY
