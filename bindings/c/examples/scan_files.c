/* Scans files as streams through the yaraflow C API and prints one verdict
 * line per file: the files are fed in 1460-byte chunks (a packet's
 * payload), round-robin, as a reassembler's interleaved flows would be.
 *
 *   scan_files [--engine] RULES FILE...
 *
 * RULES is a .yar file or a directory. With --engine, the chunks go
 * through the thread-safe engine (two shards) instead of a scanner.
 * Exit status: 0, or 1 if any call failed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "yaraflow.h"

#define CHUNK 1460

static int check(YfStatus status, const char *what) {
    if (status != YF_STATUS_OK) {
        fprintf(stderr, "%s: error %d: %s\n", what, (int)status, yf_last_error());
        return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    int use_engine = argc > 1 && strcmp(argv[1], "--engine") == 0;
    int first = 1 + use_engine;
    if (argc < first + 2) {
        fprintf(stderr, "usage: %s [--engine] RULES FILE...\n", argv[0]);
        return 2;
    }
    const char *rules_path = argv[first];
    YfRules *rules = NULL;
    if (check(yf_rules_compile_paths(&rules_path, 1, NULL, 0, &rules), "compile")) return 1;

    YfScanner *scanner = NULL;
    YfEngine *engine = NULL;
    int failed = use_engine ? check(yf_engine_start(rules, 2, &engine), "engine")
                            : check(yf_scanner_new(rules, &scanner), "scanner");
    yf_rules_free(rules); /* the scanner or engine keeps what it needs */
    if (failed) return 1;

    int n = argc - first - 1;
    FILE **files = calloc((size_t)n, sizeof *files);
    uint8_t (*ids)[16] = calloc((size_t)n, sizeof *ids);
    for (int i = 0; i < n; i++) {
        files[i] = fopen(argv[first + 1 + i], "rb");
        if (!files[i]) { perror(argv[first + 1 + i]); failed = 1; }
        ids[i][0] = (uint8_t)(i >> 8); /* any 16 bytes name a stream */
        ids[i][1] = (uint8_t)i;
        ids[i][15] = 0x5f;
    }

    /* Round-robin: one chunk of each open file in turn. */
    unsigned char buf[CHUNK];
    int open_files = n;
    while (open_files > 0) {
        open_files = 0;
        for (int i = 0; i < n; i++) {
            if (!files[i]) continue;
            size_t got = fread(buf, 1, sizeof buf, files[i]);
            if (got > 0) {
                failed |= use_engine ? check(yf_engine_scan_chunk(engine, ids[i], buf, got), "chunk")
                                     : check(yf_scanner_scan_chunk(scanner, ids[i], buf, got), "chunk");
            }
            if (got < sizeof buf) {
                fclose(files[i]);
                files[i] = NULL;
                char *json = NULL;
                YfStatus status = use_engine ? yf_engine_close_stream(engine, ids[i], &json)
                                             : yf_scanner_close_stream(scanner, ids[i], &json);
                if (status == YF_STATUS_UNKNOWN_STREAM) {
                    /* An empty file never opened its stream. */
                    printf("{\"file\":\"%s\",\"empty\":true}\n", argv[first + 1 + i]);
                } else if (!check(status, "close")) {
                    printf("{\"file\":\"%s\",\"results\":%s}\n", argv[first + 1 + i], json);
                    yf_string_free(json);
                } else {
                    failed = 1;
                }
            } else {
                open_files++;
            }
        }
    }
    free(files);
    free(ids);
    yf_scanner_free(scanner);
    yf_engine_free(engine);
    return failed;
}
