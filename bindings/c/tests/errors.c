/* The C API's error paths, run under AddressSanitizer (with its leak
 * checker) by .ci/run: every failing call returns its status and a
 * message, leaves its out-pointer alone, and leaks nothing.
 * Exit status 0 when every check holds. */
#include <stdio.h>
#include <string.h>

#include "yaraflow.h"

static int failures = 0;

#define EXPECT(cond)                                                        \
    do {                                                                    \
        if (!(cond)) {                                                      \
            fprintf(stderr, "%s:%d: failed: %s (last error: %s)\n",         \
                    __FILE__, __LINE__, #cond, yf_last_error());            \
            failures++;                                                     \
        }                                                                   \
    } while (0)

static int message_has(const char *part) { return strstr(yf_last_error(), part) != NULL; }

int main(void) {
    const char *good = "rule hello { strings: $a = \"hello\" condition: $a and filesize >= ext }";
    const char *define = "ext=1";
    const char *bad_define = "1ext=1";
    YfRules *rules = NULL;

    /* Bad rules: a compile error with its line, a missing external, a
     * malformed definition, missing files. */
    EXPECT(yf_rules_compile("rule broken { condition: $nope }", NULL, 0, &rules) == YF_STATUS_RULES);
    EXPECT(rules == NULL && message_has("$nope"));
    EXPECT(yf_rules_compile(good, NULL, 0, &rules) == YF_STATUS_RULES);
    EXPECT(rules == NULL && message_has("ext"));
    EXPECT(yf_rules_compile(good, &bad_define, 1, &rules) == YF_STATUS_INVALID_ARGUMENT);
    const char *missing = "/nonexistent/rules.yar";
    EXPECT(yf_rules_compile_paths(&missing, 1, NULL, 0, &rules) == YF_STATUS_RULES);
    EXPECT(rules == NULL && message_has("/nonexistent/rules.yar"));
    EXPECT(yf_rules_compile_paths(NULL, 0, NULL, 0, &rules) == YF_STATUS_INVALID_ARGUMENT);
    EXPECT(yf_rules_compile("rule x { condition: true }", NULL, 1, &rules) == YF_STATUS_NULL_ARGUMENT);
    EXPECT(yf_rules_compile("rule \xff { condition: true }", NULL, 0, &rules) == YF_STATUS_INVALID_ARGUMENT);

    /* NULL pointers. */
    EXPECT(yf_rules_compile(NULL, NULL, 0, &rules) == YF_STATUS_NULL_ARGUMENT && message_has("source"));
    EXPECT(yf_rules_compile(good, &define, 1, NULL) == YF_STATUS_NULL_ARGUMENT && message_has("out"));
    EXPECT(yf_rules_compile(good, &define, 1, &rules) == YF_STATUS_OK && rules != NULL);

    YfScanner *scanner = NULL;
    EXPECT(yf_scanner_new(NULL, &scanner) == YF_STATUS_NULL_ARGUMENT && scanner == NULL);
    EXPECT(yf_scanner_new(rules, &scanner) == YF_STATUS_OK);
    uint8_t id[16] = {1, 2, 3};
    uint8_t other[16] = {9};
    char *json = NULL;
    EXPECT(yf_scanner_scan_chunk(NULL, id, (const uint8_t *)"x", 1) == YF_STATUS_NULL_ARGUMENT);
    EXPECT(yf_scanner_scan_chunk(scanner, NULL, (const uint8_t *)"x", 1) == YF_STATUS_NULL_ARGUMENT);
    EXPECT(yf_scanner_scan_chunk(scanner, id, NULL, 1) == YF_STATUS_NULL_ARGUMENT);
    EXPECT(yf_scanner_get_results(scanner, id, NULL) == YF_STATUS_NULL_ARGUMENT);
    EXPECT(yf_scanner_active_streams(scanner, NULL) == YF_STATUS_NULL_ARGUMENT);

    /* Unknown streams, a double close, a mode mismatch, a double open. */
    EXPECT(yf_scanner_get_results(scanner, other, &json) == YF_STATUS_UNKNOWN_STREAM && json == NULL);
    EXPECT(yf_scanner_reset_stream(scanner, other) == YF_STATUS_UNKNOWN_STREAM);
    EXPECT(yf_scanner_scan_chunk(scanner, id, NULL, 0) == YF_STATUS_OK);
    EXPECT(yf_scanner_scan_chunk(scanner, id, (const uint8_t *)"say hel", 7) == YF_STATUS_OK);
    EXPECT(yf_scanner_scan_chunk(scanner, id, (const uint8_t *)"lo", 2) == YF_STATUS_OK);
    EXPECT(yf_scanner_scan_line(scanner, id, (const uint8_t *)"x", 1) == YF_STATUS_MODE_MISMATCH);
    EXPECT(yf_scanner_open_stream(scanner, id, YF_STREAM_MODE_LINES) == YF_STATUS_MODE_MISMATCH);
    EXPECT(yf_scanner_open_stream(scanner, id, YF_STREAM_MODE_CHUNKS) == YF_STATUS_OK);
    EXPECT(yf_scanner_get_results(scanner, id, &json) == YF_STATUS_OK && strstr(json, "\"hello\""));
    yf_string_free(json);
    json = NULL;
    size_t count = 0;
    EXPECT(yf_scanner_active_streams(scanner, &count) == YF_STATUS_OK && count == 1);
    EXPECT(yf_scanner_close_stream(scanner, id, &json) == YF_STATUS_OK && strstr(json, "\"hello\""));
    yf_string_free(json);
    json = NULL;
    EXPECT(yf_scanner_close_stream(scanner, id, &json) == YF_STATUS_UNKNOWN_STREAM && json == NULL);
    EXPECT(message_has("is not open"));

    /* The engine: the same refusals, from its thread-safe handle. */
    YfEngine *engine = NULL;
    EXPECT(yf_engine_start(NULL, 1, &engine) == YF_STATUS_NULL_ARGUMENT && engine == NULL);
    YfLimits limits = {.max_open_streams = 1, .max_chunk_bytes = 0};
    EXPECT(yf_engine_start_with_limits(rules, 1, &limits, NULL) == YF_STATUS_NULL_ARGUMENT);
    EXPECT(yf_engine_start_with_limits(rules, 1, NULL, &engine) == YF_STATUS_OK);
    yf_engine_free(engine);
    engine = NULL;
    EXPECT(yf_engine_start(rules, 1, &engine) == YF_STATUS_OK);
    yf_rules_free(rules); /* the scanner and the engine keep their share */
    EXPECT(yf_engine_scan_chunk(engine, NULL, (const uint8_t *)"x", 1) == YF_STATUS_NULL_ARGUMENT);
    EXPECT(yf_engine_get_results(engine, other, &json) == YF_STATUS_UNKNOWN_STREAM && json == NULL);
    EXPECT(yf_engine_scan_line(engine, id, (const uint8_t *)"hello", 5) == YF_STATUS_OK);
    /* The engine checks a chunk's mode on its shard, after the call has
     * returned: the call is taken, the chunk refused there. */
    EXPECT(yf_engine_scan_chunk(engine, id, (const uint8_t *)"x", 1) == YF_STATUS_OK);
    /* Opening waits for the shard: the mismatch is reported at once. */
    EXPECT(yf_engine_open_stream(engine, id, YF_STREAM_MODE_CHUNKS) == YF_STATUS_MODE_MISMATCH);
    EXPECT(yf_engine_open_stream(NULL, id, YF_STREAM_MODE_CHUNKS) == YF_STATUS_NULL_ARGUMENT);
    EXPECT(yf_engine_open_stream(engine, NULL, YF_STREAM_MODE_CHUNKS) == YF_STATUS_NULL_ARGUMENT);
    EXPECT(yf_engine_close_stream(engine, id, &json) == YF_STATUS_OK && strstr(json, "\"lines\":1"));
    yf_string_free(json);
    json = NULL;
    EXPECT(yf_engine_close_stream(engine, id, &json) == YF_STATUS_UNKNOWN_STREAM && json == NULL);
    /* A stream left open is dropped by yf_engine_free without a leak. */
    EXPECT(yf_engine_scan_chunk(engine, other, (const uint8_t *)"hello", 5) == YF_STATUS_OK);
    EXPECT(yf_scanner_scan_chunk(scanner, other, (const uint8_t *)"hello", 5) == YF_STATUS_OK);

    /* Freeing NULL is a no-op. */
    yf_rules_free(NULL);
    yf_scanner_free(NULL);
    yf_engine_free(NULL);
    yf_string_free(NULL);
    yf_engine_free(engine);
    yf_scanner_free(scanner);

    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("errors.c: all checks passed\n");
    return 0;
}
