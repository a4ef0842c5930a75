#!/usr/bin/env bash
# Extracts every TCP stream of a capture with tshark's "follow TCP stream"
# (raw hex, both directions) and prints it: the independent path the pcap
# tests compare `yaraflow pcap` with. Usage:
#   data/pcap/follow.sh CAPTURE > CAPTURE.follow
set -euo pipefail
capture=$1
# Only TCP frames have a stream number: other frames print an empty line,
# which `sort -n` would take for 0 and merge with stream 0.
streams=$(tshark -r "$capture" -Y tcp -T fields -e tcp.stream 2>/dev/null | grep -v '^$' | sort -un)
args=()
for n in $streams; do args+=(-z "follow,tcp,raw,$n"); done
tshark -r "$capture" -q "${args[@]}" 2>/dev/null
