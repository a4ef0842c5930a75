#!/usr/bin/env bash
# Makes the captures in this folder from traffic generated on this machine
# (see README.md here). Needs root, tshark (dumpcap), tcpdump, iproute2 with
# nftables, ethtool, curl and python3. Run from the repository root:
#   sudo data/pcap/capture.sh
set -euo pipefail
out=data/pcap
samples=data/samples
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; for ns in yf-a yf-r yf-b; do ip netns del $ns 2>/dev/null || true; done; rm -rf "$work"' EXIT

# --- 1. HTTP on loopback, IPv4 and IPv6 (pcapng, Ethernet link type) ------
dumpcap -q -i lo -f 'tcp port 18081 or tcp port 18082 or tcp port 18083' -w "$work/lo.pcapng" &
sleep 2
python3 -m http.server 18081 --bind 127.0.0.1 --directory "$samples" >/dev/null 2>&1 &
python3 -m http.server 18082 --bind ::1 --directory "$samples" >/dev/null 2>&1 &
# A listener that takes whatever a client sends (the EICAR file, raw).
python3 - <<'PY' &
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 18083)); s.listen()
c, _ = s.accept()
while c.recv(65536): pass
c.close()
PY
sleep 1
curl -s -o /dev/null http://127.0.0.1:18081/http_session.txt
curl -s -o /dev/null -u admin:hunter2 http://127.0.0.1:18081/app.log
curl -s -o /dev/null "http://127.0.0.1:18081/search?id=1%27%20UNION%20SELECT%20password%20FROM%20users"
curl -s -o /dev/null -g "http://[::1]:18082/random.bin"
curl -s -o /dev/null -g "http://[::1]:18082/eicar.com"
python3 -c "import socket,sys; s=socket.create_connection(('127.0.0.1',18083)); s.sendall(open('$samples/eicar.com','rb').read()); s.close()"
sleep 1
kill %1
wait %1 || true
kill $(jobs -p) 2>/dev/null || true

# --- 2 and 3. A lossy link: client yf-a, router yf-r, server yf-b ----------
# No netem in every kernel: the router drops packets at random with
# nftables instead. A dropped segment never reaches the client, whose
# capture holds the later segments first and the retransmission after
# them (out of order); the server's capture holds the retransmissions
# after the segments they repeat (duplicates, other boundaries).
for ns in yf-a yf-r yf-b; do ip netns add $ns; ip -n $ns link set lo up; done
ip link add yf-a0 netns yf-a type veth peer name yf-r0 netns yf-r
ip link add yf-b0 netns yf-b type veth peer name yf-r1 netns yf-r
ip -n yf-a addr add 10.99.1.1/24 dev yf-a0
ip -n yf-r addr add 10.99.1.2/24 dev yf-r0
ip -n yf-r addr add 10.99.2.2/24 dev yf-r1
ip -n yf-b addr add 10.99.2.1/24 dev yf-b0
for pair in yf-a:yf-a0 yf-r:yf-r0 yf-r:yf-r1 yf-b:yf-b0; do
  ip -n ${pair%%:*} link set ${pair##*:} up
  # Wire-sized segments in the captures, not offloaded 64 KiB ones.
  ip netns exec ${pair%%:*} ethtool -K ${pair##*:} tso off gso off gro off >/dev/null
done
ip -n yf-a route add default via 10.99.1.2
ip -n yf-b route add default via 10.99.2.2
ip netns exec yf-r sysctl -q -w net.ipv4.ip_forward=1
ip netns exec yf-r nft -f - <<'NFT'
table inet lossy {
  chain forward {
    type filter hook forward priority 0;
    tcp sport { 18090, 18091 } numgen random mod 100 < 7 drop
    tcp dport { 18090, 18091 } numgen random mod 100 < 3 drop
  }
}
NFT
# Client side, legacy pcap, Ethernet.
ip netns exec yf-a tcpdump -q -i yf-a0 -w "$work/lossy.pcap" tcp 2>/dev/null &
# Server side, every interface: pcapng, Linux cooked link type.
ip netns exec yf-b dumpcap -q -i any -f tcp -w "$work/lossy-any.pcapng" 2>/dev/null &
sleep 2
# The server in yf-b sends each client a payload made of random bytes with
# the samples planted in the middle; the third connection it resets.
ip netns exec yf-b python3 - "$samples" <<'PY' &
import socket, struct, sys
samples = sys.argv[1]
rnd = open(f"{samples}/random.bin", "rb").read()
session = open(f"{samples}/http_session.txt", "rb").read()
log = open(f"{samples}/app.log", "rb").read()
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("10.99.2.1", 18090)); s.listen()
for n in range(3):
    c, _ = s.accept()
    c.recv(65536)
    c.sendall(rnd[:30000 * (n + 1)] + session + log + rnd[-20000:])
    if n == 2:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
PY
sleep 1
for n in 0 1 2; do
  ip netns exec yf-a python3 - <<'PY'
import socket
c = socket.create_connection(("10.99.2.1", 18090))
c.sendall(b"GET /install HTTP/1.1\r\nHost: example\r\nUser-Agent: curl -fsSL https://example.com/i.sh | sh\r\n\r\n")
try:
    while c.recv(65536): pass
except ConnectionResetError:
    pass
c.close()
PY
done
# A fourth connection, still open when the captures stop.
ip netns exec yf-b python3 -c "import socket,time; s=socket.socket(); s.bind(('10.99.2.1',18091)); s.listen(); c,_=s.accept(); c.recv(100); time.sleep(30)" &
sleep 1
ip netns exec yf-a python3 -c "import socket,time; c=socket.create_connection(('10.99.2.1',18091)); c.sendall(b'GET / HTTP/1.1\r\nAuthorization: Basic YWRtaW46aHVudGVyMg==\r\n\r\n'); time.sleep(30)" &
sleep 3
kill $(jobs -p) 2>/dev/null || true
wait || true
cp "$work/lo.pcapng" "$out/http-loopback.pcapng"
cp "$work/lossy.pcap" "$out/lossy-link.pcap"
cp "$work/lossy-any.pcapng" "$out/lossy-link-any.pcapng"
ls -l "$out"
