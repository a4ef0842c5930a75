"""Scan the TCP flows of a pcap capture with yaraflow's engine: each
direction of each connection is a stream, fed its payload in sequence
order as the packets come, interleaved with every other flow's.

    python pcap_flows.py [--rules PATH] CAPTURE.pcap

Prints one JSON line per direction: its addresses, bytes and matching
rules. A small reassembler for the example: legacy pcap with Ethernet
frames, IPv4 and IPv6, retransmissions dropped and segments that arrive
early held until the hole before them fills (at most MAX_HELD bytes per
direction). `yaraflow pcap` is the full one (pcapng, more link types,
files inside flows).
"""

import argparse
import ipaddress
import json
import struct
import uuid

import yaraflow

MAX_HELD = 1 << 20


def packets(path):
    """(frame bytes) of a legacy pcap file with Ethernet frames."""
    with open(path, "rb") as capture:
        header = capture.read(24)
        magic = header[:4]
        if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
            endian = "<"
        elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
            endian = ">"
        else:
            raise ValueError(f"{path}: not a legacy pcap file (pcapng? use `yaraflow pcap`)")
        (link,) = struct.unpack(endian + "I", header[20:24])
        if link != 1:
            raise ValueError(f"{path}: link type {link}, the example reads Ethernet (1) only")
        while record := capture.read(16):
            _, _, captured, _ = struct.unpack(endian + "IIII", record)
            yield capture.read(captured)


def tcp_segment(frame):
    """(source, destination, seq, flags, payload) of an Ethernet frame's
    TCP segment, or None."""
    ethertype = struct.unpack("!H", frame[12:14])[0]
    ip = frame[14:]
    if ethertype == 0x0800 and ip[9] == 6:
        header = (ip[0] & 0x0F) * 4
        total = struct.unpack("!H", ip[2:4])[0] or len(ip)
        src, dst = ip[12:16], ip[16:20]
        tcp = ip[header:total]
    elif ethertype == 0x86DD and ip[6] == 6:
        total = 40 + struct.unpack("!H", ip[4:6])[0]
        src, dst = ip[8:24], ip[24:40]
        tcp = ip[40:total]
    else:
        return None
    sport, dport, seq = struct.unpack("!HHI", tcp[:8])
    offset = (tcp[12] >> 4) * 4
    return endpoint(src, sport), endpoint(dst, dport), seq, tcp[13], tcp[offset:]


def endpoint(address, port):
    """`10.0.0.1:80`, `[::1]:80`."""
    address = ipaddress.ip_address(address)
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"


class Direction:
    """One direction's next expected sequence number and early segments."""

    def __init__(self, name):
        self.name = name
        self.stream = uuid.uuid5(uuid.NAMESPACE_URL, name)
        self.next_seq = None
        self.held = {}

    def in_order(self, seq, flags, payload):
        """The bytes this segment (and the held ones it unblocks) add."""
        if self.next_seq is None:
            self.next_seq = (seq + (1 if flags & 0x02 else 0)) & 0xFFFFFFFF
            if flags & 0x02:
                return b""
        start = (seq - self.next_seq) & 0xFFFFFFFF
        if start >= 1 << 31:  # begins before next_seq: a retransmission
            payload = payload[(self.next_seq - seq) & 0xFFFFFFFF :]
            start = 0
        if start > 0:
            if sum(len(p) for p in self.held.values()) < MAX_HELD:
                self.held[seq] = payload
            return b""
        out = bytearray(payload)
        self.next_seq = (self.next_seq + len(payload)) & 0xFFFFFFFF
        while self.next_seq in self.held or any(
            0 < (self.next_seq - s) & 0xFFFFFFFF < len(p) for s, p in self.held.items()
        ):
            for s in list(self.held):
                skip = (self.next_seq - s) & 0xFFFFFFFF
                if skip < len(self.held[s]):
                    part = self.held.pop(s)[skip:]
                    out += part
                    self.next_seq = (self.next_seq + len(part)) & 0xFFFFFFFF
                elif skip < 1 << 31:
                    del self.held[s]  # wholly before next_seq
        return bytes(out)


def scan_capture(engine, path):
    """Feeds every TCP direction of the capture to the engine; returns
    {direction name: verdict}."""
    directions = {}
    for frame in packets(path):
        segment = tcp_segment(frame)
        if segment is None:
            continue
        src, dst, seq, flags, payload = segment
        name = f"{src}->{dst}"
        direction = directions.setdefault(name, Direction(name))
        if direction.next_seq is None:
            engine.open_stream(direction.stream)
        data = direction.in_order(seq, flags, payload)
        if data:
            engine.scan_chunk(direction.stream, data)
    return {name: engine.close_stream(d.stream) for name, d in directions.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", default="data/rules", help="rule file or directory")
    parser.add_argument("capture")
    args = parser.parse_args()
    with yaraflow.Engine(yaraflow.Rules(paths=[args.rules])) as engine:
        for name, results in scan_capture(engine, args.capture).items():
            rules = [rule.identifier for rule in results.matching_rules]
            print(json.dumps({"direction": name, "bytes": results.bytes, "rules": rules}))


if __name__ == "__main__":
    main()
