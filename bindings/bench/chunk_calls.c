/* Times yaraflow's C scanner on the overhead workload (see workload.py):
 * every chunk of every stream, streams interleaved round-robin, then every
 * close. Prints one JSON line: nanoseconds per chunk call and per close.
 *
 *     chunk_calls RULES WORKLOAD STREAMS SIZE
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "yaraflow.h"

static double now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

static int fail(const char *what) {
    fprintf(stderr, "chunk_calls: %s: %s\n", what, yf_last_error());
    return 1;
}

static unsigned char *read_file(const char *path, size_t *len) {
    FILE *file = fopen(path, "rb");
    if (!file) return NULL;
    fseek(file, 0, SEEK_END);
    *len = (size_t)ftell(file);
    fseek(file, 0, SEEK_SET);
    unsigned char *data = malloc(*len ? *len : 1);
    if (data && fread(data, 1, *len, file) != *len) {
        free(data);
        data = NULL;
    }
    fclose(file);
    return data;
}

static void stream_id(size_t index, uint8_t id[16]) {
    /* uuid.UUID(int=index + 1).bytes: big-endian. */
    memset(id, 0, 16);
    uint64_t n = (uint64_t)index + 1;
    for (int i = 15; i >= 8; i--, n >>= 8) id[i] = (uint8_t)n;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: chunk_calls RULES WORKLOAD STREAMS SIZE\n");
        return 2;
    }
    size_t streams = strtoul(argv[3], NULL, 10), size = strtoul(argv[4], NULL, 10), len = 0;
    unsigned char *data = read_file(argv[2], &len);
    if (!data || streams == 0 || size == 0) {
        fprintf(stderr, "chunk_calls: cannot read %s\n", argv[2]);
        return 1;
    }
    size_t chunks = len / size / streams;
    const char *paths[] = {argv[1]};
    YfRules *rules = NULL;
    YfScanner *scanner = NULL;
    if (yf_rules_compile_paths(paths, 1, NULL, 0, &rules) != YF_STATUS_OK) return fail("rules");
    if (yf_scanner_new(rules, &scanner) != YF_STATUS_OK) return fail("scanner");
    uint8_t id[16];
    double started = now_ns();
    for (size_t c = 0; c < chunks; c++) {
        for (size_t s = 0; s < streams; s++) {
            stream_id(s, id);
            const unsigned char *chunk = data + (c * streams + s) * size;
            if (yf_scanner_scan_chunk(scanner, id, chunk, size) != YF_STATUS_OK) return fail("chunk");
        }
    }
    double scanned = now_ns();
    for (size_t s = 0; s < streams; s++) {
        char *json = NULL;
        stream_id(s, id);
        if (yf_scanner_close_stream(scanner, id, &json) != YF_STATUS_OK) return fail("close");
        yf_string_free(json);
    }
    double closed = now_ns();
    printf("{\"binding\": \"c\", \"ns_per_chunk\": %.1f, \"ns_per_close\": %.1f}\n",
           (scanned - started) / (double)(streams * chunks), (closed - scanned) / (double)streams);
    yf_scanner_free(scanner);
    yf_rules_free(rules);
    free(data);
    return 0;
}
