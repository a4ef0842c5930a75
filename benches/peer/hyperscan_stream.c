/*
 * A peer outside YARA-X for `yaraflow bench`: Hyperscan (or Vectorscan) in
 * stream mode on the same workload, the same bytes in the same order, with
 * the synthetic rules' patterns as literals. One Hyperscan stream per
 * yaraflow stream, opened at its first chunk, closed after its last.
 *
 * Input: the folder `yaraflow bench --dump-workload DIR` writes.
 * Output: one JSON object on stdout.
 * Build and run: benches/peer/run.sh (needs libhyperscan-dev or
 * libvectorscan-dev). Not part of the default build or tests.
 */
#include <hs/hs.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void *slurp(const char *dir, const char *name, size_t *len) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f) { fprintf(stderr, "cannot open %s\n", path); exit(2); }
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    char *data = malloc(*len + 1); /* NUL-terminated, for the text file */
    if (*len && fread(data, 1, *len, f) != *len) { fprintf(stderr, "cannot read %s\n", path); exit(2); }
    data[*len] = 0;
    fclose(f);
    return data;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static int on_match(unsigned id, unsigned long long from, unsigned long long to,
                    unsigned flags, void *context) {
    (void)id; (void)from; (void)to; (void)flags;
    *(uint8_t *)context = 1;
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: %s WORKLOAD_DIR\n", argv[0]); return 2; }
    size_t pool_len, streams_len, schedule_len, patterns_len;
    uint8_t *pool = slurp(argv[1], "pool.bin", &pool_len);
    uint8_t *streams = slurp(argv[1], "streams.bin", &streams_len);
    uint8_t *schedule = slurp(argv[1], "schedule.bin", &schedule_len);
    char *text = slurp(argv[1], "patterns.txt", &patterns_len);
    size_t n_streams = streams_len / 12, n_steps = schedule_len / 13;

    /* Patterns: one hex line each, compiled as literals. */
    size_t n_patterns = 0, cap = 1024;
    char **literals = malloc(cap * sizeof *literals);
    size_t *lengths = malloc(cap * sizeof *lengths);
    unsigned *ids = malloc(cap * sizeof *ids), *flags = malloc(cap * sizeof *flags);
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        if (n_patterns == cap) {
            cap *= 2;
            literals = realloc(literals, cap * sizeof *literals);
            lengths = realloc(lengths, cap * sizeof *lengths);
            ids = realloc(ids, cap * sizeof *ids);
            flags = realloc(flags, cap * sizeof *flags);
        }
        size_t len = strlen(line) / 2;
        char *bytes = malloc(len);
        for (size_t i = 0; i < len; i++) sscanf(line + 2 * i, "%2hhx", (unsigned char *)&bytes[i]);
        literals[n_patterns] = bytes;
        lengths[n_patterns] = len;
        ids[n_patterns] = (unsigned)n_patterns;
        flags[n_patterns] = HS_FLAG_SINGLEMATCH;
        n_patterns++;
    }
    hs_database_t *db;
    hs_compile_error_t *error;
    double compiling = now();
    if (hs_compile_lit_multi((const char *const *)literals, flags, ids, lengths, (unsigned)n_patterns,
                             HS_MODE_STREAM, NULL, &db, &error) != HS_SUCCESS) {
        fprintf(stderr, "hs_compile_lit_multi: %s\n", error->message);
        return 1;
    }
    compiling = now() - compiling;
    hs_scratch_t *scratch = NULL;
    hs_alloc_scratch(db, &scratch);
    size_t state = 0;
    hs_stream_size(db, &state);

    hs_stream_t **open = calloc(n_streams, sizeof *open);
    uint8_t *matched = calloc(n_streams, 1);
    double opening = 0, closing = 0, started = now();
    uint64_t bytes = 0;
    for (size_t i = 0; i < n_steps; i++) {
        const uint8_t *step = schedule + 13 * i;
        uint32_t stream, offset, len;
        memcpy(&stream, step, 4);
        memcpy(&offset, step + 4, 4);
        memcpy(&len, step + 8, 4);
        uint64_t start;
        memcpy(&start, streams + 12 * (size_t)stream, 8);
        if (!open[stream]) {
            double t = now();
            hs_open_stream(db, 0, &open[stream]);
            opening += now() - t;
        }
        hs_scan_stream(open[stream], (const char *)pool + start + offset, len, 0, scratch,
                       on_match, &matched[stream]);
        bytes += len;
        if (step[12]) {
            double t = now();
            hs_close_stream(open[stream], scratch, on_match, &matched[stream]);
            closing += now() - t;
            open[stream] = NULL;
        }
    }
    double seconds = now() - started;
    size_t matching = 0;
    for (size_t s = 0; s < n_streams; s++) matching += matched[s];
    printf("{\"name\": \"hyperscan %s stream mode\", \"streams\": %zu, \"patterns\": %zu, "
           "\"bytes\": %llu, \"mb_per_s\": %.1f, \"stream_state_bytes\": %zu, "
           "\"open_ns_per_stream\": %.0f, \"close_ns_per_stream\": %.0f, "
           "\"streams_matching\": %zu, \"compile_s\": %.2f}\n",
           hs_version(), n_streams, n_patterns, (unsigned long long)bytes, bytes / seconds / 1e6,
           state, opening * 1e9 / n_streams, closing * 1e9 / n_streams, matching, compiling);
    (void)pool_len;
    return 0;
}
