/* A reassembly backend in C: reads a capture with libpcap (pcap or pcapng;
 * Ethernet, Linux cooked or raw IP), follows each direction of each TCP
 * connection, and feeds its payload in sequence order to yaraflow's engine
 * as the packets come, interleaved with every other flow's. Prints one JSON
 * line per direction at the end of the capture:
 *
 *   {"src": "10.0.0.1:5000", "dst": "10.0.0.2:80", "results": {...}}
 *
 * where results is the JSON `yaraflow scan` prints.
 *
 *   pcap_flows RULES CAPTURE
 *
 * A small reassembler for the example: retransmitted bytes are dropped,
 * segments that arrive early are held (up to MAX_HELD bytes per direction)
 * until the hole before them fills. `yaraflow pcap` is the full one.
 * Build: gcc -Ibindings/c/include pcap_flows.c libyaraflow_c.a -lpcap ... */
#include <arpa/inet.h>
#include <pcap/pcap.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "yaraflow.h"

#define MAX_HELD (1u << 20)
#define MAX_FLOWS 65536

struct held {
    uint32_t seq;
    uint32_t len;
    struct held *next;
    unsigned char data[];
};

struct direction {
    char src[64], dst[64];
    uint8_t id[16];
    int started;
    uint32_t next_seq;
    uint32_t held_bytes;
    struct held *held;
};

static struct direction *flows[MAX_FLOWS];
static size_t n_flows;
static YfEngine *engine;
static int failed;

static void check(YfStatus status, const char *what) {
    if (status != YF_STATUS_OK) {
        fprintf(stderr, "%s: error %d: %s\n", what, (int)status, yf_last_error());
        failed = 1;
    }
}

/* FNV-1a of the direction's name: its stream id (16 bytes from two hashes). */
static void name_id(const char *name, uint8_t id[16]) {
    uint64_t h1 = 0xcbf29ce484222325u, h2 = 0x84222325cbf29ce4u;
    for (const char *c = name; *c; c++) {
        h1 = (h1 ^ (uint8_t)*c) * 0x100000001b3u;
        h2 = (h2 ^ (uint8_t)*c) * 0x100000001b3u + 1;
    }
    memcpy(id, &h1, 8);
    memcpy(id + 8, &h2, 8);
}

/* The direction src->dst: found in an open-addressing table by its id. */
static struct direction *find(const char *src, const char *dst) {
    char name[160];
    uint8_t id[16];
    snprintf(name, sizeof name, "%s->%s", src, dst);
    name_id(name, id);
    uint64_t slot;
    memcpy(&slot, id, 8);
    for (size_t probe = 0; probe < MAX_FLOWS; probe++, slot++) {
        struct direction *d = flows[slot % MAX_FLOWS];
        if (!d) break;
        if (!memcmp(d->id, id, 16)) return d;
    }
    if (n_flows == MAX_FLOWS / 2) return NULL; /* full: later flows are not followed */
    struct direction *d = calloc(1, sizeof *d);
    if (!d) return NULL;
    snprintf(d->src, sizeof d->src, "%s", src);
    snprintf(d->dst, sizeof d->dst, "%s", dst);
    memcpy(d->id, id, 16);
    check(yf_engine_open_stream(engine, d->id, YF_STREAM_MODE_CHUNKS), "open");
    n_flows++;
    return flows[slot % MAX_FLOWS] = d;
}

static void feed(struct direction *d, const unsigned char *data, uint32_t len) {
    if (len) check(yf_engine_scan_chunk(engine, d->id, data, len), "chunk");
    d->next_seq += len;
}

/* Feeds held segments that the in-order bytes have reached. */
static void drain(struct direction *d) {
    for (int moved = 1; moved;) {
        moved = 0;
        for (struct held **p = &d->held; *p;) {
            struct held *h = *p;
            uint32_t skip = d->next_seq - h->seq;
            if (skip >= (1u << 31)) { /* still ahead */
                p = &h->next;
                continue;
            }
            if (skip < h->len) feed(d, h->data + skip, h->len - skip), moved = 1;
            d->held_bytes -= h->len;
            *p = h->next;
            free(h);
        }
    }
}

static void segment(struct direction *d, uint32_t seq, int syn, const unsigned char *data,
                    uint32_t len) {
    if (!d->started) {
        d->started = 1;
        d->next_seq = seq + (syn ? 1 : 0);
        if (syn) return;
    }
    uint32_t ahead = seq - d->next_seq;
    if (ahead >= (1u << 31)) { /* starts before next_seq: a retransmission */
        uint32_t skip = d->next_seq - seq;
        if (skip >= len) return;
        data += skip, len -= skip, ahead = 0;
    }
    if (ahead > 0) {
        if (d->held_bytes + len > MAX_HELD || len == 0) return;
        struct held *h = malloc(sizeof *h + len);
        if (!h) return;
        h->seq = seq, h->len = len, h->next = d->held;
        memcpy(h->data, data, len);
        d->held = h, d->held_bytes += len;
        return;
    }
    feed(d, data, len);
    drain(d);
}

static void endpoint(int family, const unsigned char *address, uint16_t port, char out[64]) {
    char text[INET6_ADDRSTRLEN];
    inet_ntop(family, address, text, sizeof text);
    snprintf(out, 64, family == AF_INET6 ? "[%s]:%u" : "%s:%u", text, port);
}

static void packet(u_char *link, const struct pcap_pkthdr *header, const u_char *bytes) {
    int datalink = *(int *)link;
    uint32_t n = header->caplen, skip;
    uint16_t ethertype;
    if (datalink == DLT_EN10MB && n >= 14) skip = 14, ethertype = (uint16_t)(bytes[12] << 8 | bytes[13]);
    else if (datalink == DLT_LINUX_SLL && n >= 16) skip = 16, ethertype = (uint16_t)(bytes[14] << 8 | bytes[15]);
    else if (datalink == DLT_RAW && n >= 1) skip = 0, ethertype = (bytes[0] >> 4) == 6 ? 0x86DD : 0x0800;
    else return;
    const u_char *ip = bytes + skip;
    n -= skip;
    char src[64], dst[64];
    const u_char *tcp;
    uint32_t tcp_len;
    if (ethertype == 0x0800 && n >= 20 && ip[9] == 6) {
        uint32_t ihl = (ip[0] & 0x0F) * 4u, total = (uint32_t)(ip[2] << 8 | ip[3]);
        if (total == 0 || total > n) total = n; /* 0: segmentation offload */
        if (ihl < 20 || ihl > total) return;
        tcp = ip + ihl, tcp_len = total - ihl;
        if (tcp_len < 20) return;
        endpoint(AF_INET, ip + 12, (uint16_t)(tcp[0] << 8 | tcp[1]), src);
        endpoint(AF_INET, ip + 16, (uint16_t)(tcp[2] << 8 | tcp[3]), dst);
    } else if (ethertype == 0x86DD && n >= 40 && ip[6] == 6) {
        uint32_t total = 40u + (uint32_t)(ip[4] << 8 | ip[5]);
        if (total > n) total = n;
        tcp = ip + 40, tcp_len = total - 40;
        if (tcp_len < 20) return;
        endpoint(AF_INET6, ip + 8, (uint16_t)(tcp[0] << 8 | tcp[1]), src);
        endpoint(AF_INET6, ip + 24, (uint16_t)(tcp[2] << 8 | tcp[3]), dst);
    } else {
        return;
    }
    uint32_t offset = (tcp[12] >> 4) * 4u;
    if (offset < 20 || offset > tcp_len) return;
    uint32_t seq = (uint32_t)tcp[4] << 24 | (uint32_t)tcp[5] << 16 | (uint32_t)tcp[6] << 8 | tcp[7];
    struct direction *d = find(src, dst);
    if (d) segment(d, seq, tcp[13] & 0x02, tcp + offset, tcp_len - offset);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s RULES CAPTURE\n", argv[0]);
        return 2;
    }
    char errors[PCAP_ERRBUF_SIZE];
    pcap_t *capture = pcap_open_offline(argv[2], errors);
    if (!capture) {
        fprintf(stderr, "%s: %s\n", argv[2], errors);
        return 1;
    }
    int datalink = pcap_datalink(capture);
    YfRules *rules = NULL;
    const char *rules_path = argv[1];
    check(yf_rules_compile_paths(&rules_path, 1, NULL, 0, &rules), "compile");
    if (!failed) check(yf_engine_start(rules, 2, &engine), "engine");
    if (!failed && pcap_loop(capture, -1, packet, (u_char *)&datalink) == PCAP_ERROR) {
        fprintf(stderr, "%s: %s\n", argv[2], pcap_geterr(capture));
        failed = 1;
    }
    for (size_t i = 0; i < MAX_FLOWS; i++) {
        struct direction *d = flows[i];
        if (!d) continue;
        char *json = NULL;
        check(yf_engine_close_stream(engine, d->id, &json), "close");
        if (json) printf("{\"src\": \"%s\", \"dst\": \"%s\", \"results\": %s}\n", d->src, d->dst, json);
        yf_string_free(json);
        while (d->held) {
            struct held *next = d->held->next;
            free(d->held);
            d->held = next;
        }
        free(d);
    }
    yf_engine_free(engine);
    yf_rules_free(rules);
    pcap_close(capture);
    return failed;
}
