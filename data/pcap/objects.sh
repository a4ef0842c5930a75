#!/usr/bin/env bash
# Makes data/pcap/objects-loopback.pcapng: files inside flows, for the
# object extraction of `yaraflow pcap` (see README.md here). Traffic made on
# this machine over loopback by python3 (no third-party data). Needs root
# (dumpcap on lo) and python3. Run from the repository root:
#   sudo data/pcap/objects.sh
set -euo pipefail
out=data/pcap/objects-loopback.pcapng
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

dumpcap -q -i lo -f 'tcp port 18181 or tcp port 18125' -w "$work/objects.pcapng" &
sleep 2
python3 - "$work" <<'PY'
import gzip, socket, struct, sys, threading, time, smtplib, base64
from email.message import EmailMessage

samples = "data/samples"
eicar = open(f"{samples}/eicar.com", "rb").read()
session = open(f"{samples}/http_session.txt", "rb").read()

def tiny_pe():
    # A minimal PE32 header: MZ, e_lfanew, PE signature, COFF and optional
    # header, one section; enough for YARA-X's pe module to parse.
    pe = bytearray(1024)
    pe[0:2] = b"MZ"
    struct.pack_into("<I", pe, 0x3C, 0x80)
    pe[0x80:0x84] = b"PE\0\0"
    struct.pack_into("<HHIIIHH", pe, 0x84, 0x14C, 1, 0x5F5E100, 0, 0, 0xE0, 0x0102)
    struct.pack_into("<HBB", pe, 0x98, 0x10B, 14, 0)
    struct.pack_into("<I", pe, 0x98 + 16, 0x1000)   # entry point
    struct.pack_into("<I", pe, 0x98 + 28, 0x400000) # image base
    struct.pack_into("<II", pe, 0x98 + 32, 0x1000, 0x200)
    struct.pack_into("<I", pe, 0x98 + 92, 16)
    sec = 0x98 + 0xE0
    pe[sec:sec + 8] = b".text\0\0\0"
    struct.pack_into("<IIII", pe, sec + 8, 0x200, 0x1000, 0x200, 0x200)
    pe[0x200:0x200 + 32] = b"\x55\x8b\xec" + b"yaraflow tiny pe".ljust(29, b"\x90")
    return bytes(pe)

pe = tiny_pe()
bomb = gzip.compress(b"\0" * (4 << 20))
zipped = gzip.compress(session)

def chunked(data, size):
    body = b""
    for i in range(0, len(data), size):
        part = data[i:i + size]
        body += b"%x;ext=1\r\n" % len(part) + part + b"\r\n"
    return body + b"0\r\nX-Trailer: done\r\n\r\n"

RESPONSES = {
    "/plain/tiny.exe": b"HTTP/1.1 200 OK\r\nContent-Type: application/x-msdownload\r\nContent-Length: %d\r\n\r\n" % len(pe) + pe,
    "/chunked/eicar.com": b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(eicar, 10),
    "/gzip/session.txt": b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(zipped) + zipped,
    "/attachment": b"HTTP/1.1 200 OK\r\nContent-Disposition: attachment; filename=\"report.exe\"\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(pe, 300),
    "/bomb.gz": b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(bomb) + bomb,
    "/bad/chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n8\r\nMZ\x90\x00abcd\r\nZZZ not a size\r\n",
    "/short": b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + eicar,
}
CLOSE_AFTER = {"/bad/chunked", "/short"}

def serve_http():
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 18181)); s.listen()
    while True:
        c, _ = s.accept()
        buf = b""
        while True:
            data = c.recv(65536)
            if not data:
                break
            buf += data
            closing = False
            while b"\r\n\r\n" in buf:
                head, buf = buf.split(b"\r\n\r\n", 1)
                method, path = head.split(b" ")[:2]
                path = path.decode()
                if path == "/quit":
                    c.close(); s.close(); return
                response = RESPONSES[path]
                if method == b"HEAD":
                    response = response.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
                c.sendall(response)
                closing |= path in CLOSE_AFTER
            if closing:
                break
        c.close()

def serve_smtp():
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 18125)); s.listen()
    for _ in range(2):
        c, _ = s.accept()
        f = c.makefile("rb")
        c.sendall(b"220 localhost ESMTP test\r\n")
        in_data = False
        for line in f:
            if in_data:
                if line == b".\r\n":
                    in_data = False
                    c.sendall(b"250 queued\r\n")
                continue
            verb = line.strip().split(b" ")[0].upper()
            if verb == b"EHLO":
                c.sendall(b"250-localhost\r\n250 8BITMIME\r\n")
            elif verb == b"DATA":
                in_data = True
                c.sendall(b"354 go ahead\r\n")
            elif verb == b"QUIT":
                c.sendall(b"221 bye\r\n")
                break
            else:
                c.sendall(b"250 ok\r\n")
        c.close()

threading.Thread(target=serve_http, daemon=True).start()
smtp_server = threading.Thread(target=serve_smtp, daemon=True)
smtp_server.start()
time.sleep(0.5)

def http(requests, pause=0.0):
    c = socket.create_connection(("127.0.0.1", 18181))
    c.sendall(requests)
    c.settimeout(2)
    try:
        while c.recv(65536):
            pass
    except socket.timeout:
        pass
    c.close()

# Keep-alive and pipelining: a HEAD, then three GETs sent at once.
http(b"HEAD /plain/tiny.exe HTTP/1.1\r\nHost: t\r\n\r\n"
     b"GET /plain/tiny.exe HTTP/1.1\r\nHost: t\r\n\r\n"
     b"GET /chunked/eicar.com HTTP/1.1\r\nHost: t\r\n\r\n"
     b"GET /gzip/session.txt HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n")
http(b"GET /attachment HTTP/1.1\r\nHost: t\r\n\r\n")
http(b"GET /bomb.gz HTTP/1.1\r\nHost: t\r\n\r\n")
http(b"GET /bad/chunked HTTP/1.1\r\nHost: t\r\n\r\n")
http(b"GET /short HTTP/1.1\r\nHost: t\r\n\r\n")

# SMTP: a message with the EICAR file and the tiny PE attached (base64),
# then a message whose last MIME part never ends.
msg = EmailMessage()
msg["From"], msg["To"], msg["Subject"] = "a@example.test", "b@example.test", "files"
msg.set_content("Two files attached.\n.a line that starts with a dot\n")
msg.add_attachment(eicar, maintype="application", subtype="octet-stream", filename="eicar.com")
msg.add_attachment(pe, maintype="application", subtype="x-msdownload", filename="tiny.exe")
with smtplib.SMTP("127.0.0.1", 18125) as client:
    client.sendmail("a@example.test", ["b@example.test"], msg.as_bytes())
unclosed = (b"From: a@example.test\r\nTo: b@example.test\r\nSubject: cut\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
            b"--B\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"eicar.com\"\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(eicar).replace(b"\n", b"\r\n"))
with smtplib.SMTP("127.0.0.1", 18125) as client:
    client.sendmail("a@example.test", ["b@example.test"], unclosed)
smtp_server.join(5)
http(b"GET /quit HTTP/1.1\r\n\r\n")
PY
sleep 1
kill %1
wait %1 || true
cp "$work/objects.pcapng" "$out"
ls -l "$out"
