#!/usr/bin/env bash
# Extracts every TCP stream of a capture with tshark's "follow TCP stream"
# (raw hex, both directions) and prints it: the independent path the pcap
# tests compare `yaraflow pcap` with. Usage:
#   data/pcap/follow.sh CAPTURE > CAPTURE.follow
set -euo pipefail
capture=$1
streams=$(tshark -r "$capture" -T fields -e tcp.stream 2>/dev/null | sort -un)
args=()
for n in $streams; do args+=(-z "follow,tcp,raw,$n"); done
tshark -r "$capture" -q "${args[@]}" 2>/dev/null
