#!/usr/bin/env python3
"""Makes a capture with segmentation-offload artefacts from a real one.

A capture taken on the sending host sees TCP segments before the network
card splits them (TSO/GSO): the IPv4 total-length field is still 0, and
frames are larger than the MTU. No host with such a card can be assumed
here, so this rewrites a loopback capture (whose frames are already up to
64 KiB, larger than any Ethernet MTU) the way TSO leaves it: the IPv4
total-length field of every IPv4 TCP frame with a payload is set to 0.
The IPv4 header checksum is recomputed, as the sender's stack would have
left it valid for the other fields.

Usage: offload.py IN.pcapng OUT.pcapng   (pcapng, Ethernet link type)
"""
import struct
import sys

ETHERNET = 1
ENHANCED_PACKET = 6
INTERFACE = 1
SECTION = 0x0A0D0D0A


def checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def rewrite(frame: bytearray) -> bool:
    """Zeroes the IPv4 total length of an Ethernet IPv4 TCP frame with a
    payload; returns whether it did."""
    if len(frame) < 14 + 20 or frame[12:14] != b"\x08\x00":
        return False
    ip = 14
    ihl = (frame[ip] & 0x0F) * 4
    total = struct.unpack_from("!H", frame, ip + 2)[0]
    if frame[ip + 9] != 6 or len(frame) < ip + ihl + 20:
        return False
    tcp_header = (frame[ip + ihl + 12] >> 4) * 4
    if total <= ihl + tcp_header:
        return False  # no payload
    struct.pack_into("!H", frame, ip + 2, 0)
    struct.pack_into("!H", frame, ip + 10, 0)
    struct.pack_into("!H", frame, ip + 10, checksum(bytes(frame[ip : ip + ihl])))
    return True


def main(src: str, dst: str) -> None:
    data = open(src, "rb").read()
    out = bytearray()
    pos, links, endian, rewritten = 0, [], "<", 0
    while pos < len(data):
        block_type = struct.unpack_from(endian + "I", data, pos)[0]
        if block_type == SECTION:
            magic = data[pos + 8 : pos + 12]
            endian = "<" if magic == b"\x4d\x3c\x2b\x1a" else ">"
            links = []
        length = struct.unpack_from(endian + "I", data, pos + 4)[0]
        block = bytearray(data[pos : pos + length])
        if block_type == INTERFACE:
            links.append(struct.unpack_from(endian + "H", block, 8)[0])
        elif block_type == ENHANCED_PACKET:
            interface, _, _, caplen, origlen = struct.unpack_from(endian + "IIIII", block, 8)
            frame = bytearray(block[28 : 28 + caplen])
            if links[interface] == ETHERNET and caplen == origlen and rewrite(frame):
                block[28 : 28 + caplen] = frame
                rewritten += 1
        out += block
        pos += length
    open(dst, "wb").write(out)
    print(f"{dst}: {rewritten} frames with an IPv4 total length of 0", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
