/* tests/fuzz/fuzz_remote_write.c - Prometheus remote write: the input is fed both as a snappy
 * body (as clients send it) and, wrapped in a literal-only snappy block, as raw protobuf, so
 * the fuzzer reaches the protobuf decoder without having to learn snappy first. */
#include "tests/fuzz/fuzz_common.h"

#include "common/common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void run(const char *body, size_t len)
{
    fuzz_counts c = { 0, 0 };
    col_sink sink = { fuzz_sample, fuzz_reject, &c };
    col_parse_stats st;
    col_parse_limits lim = { 0, 16, 64, 256 };
    char errbuf[256];
    iocd_err err;

    memset(&st, 0, sizeof(st));
    err = col_rw_parse(body, len, 1 << 20, &lim, &sink, &st, errbuf, sizeof(errbuf));
    if (err != IOCD_OK && c.samples != 0)
        abort(); /* a refused body feeds nothing */
    if (st.samples != c.samples)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *wrapped;
    size_t n = 0, off = 0;

    run((const char *)data, size);
    if (size > 60000)
        return 0;
    wrapped = malloc(size + 16);
    if (wrapped == NULL)
        return 0;
    /* varint length, then one literal chunk */
    for (size_t v = size;; v >>= 7) {
        wrapped[n++] = (uint8_t)((v & 0x7f) | (v >= 0x80 ? 0x80 : 0));
        if (v < 0x80)
            break;
    }
    if (size > 0) {
        size_t l = size - 1;
        if (l < 60) {
            wrapped[n++] = (uint8_t)(l << 2);
        } else if (l < 256) {
            wrapped[n++] = 60 << 2;
            wrapped[n++] = (uint8_t)l;
        } else {
            wrapped[n++] = 61 << 2;
            wrapped[n++] = (uint8_t)(l & 0xff);
            wrapped[n++] = (uint8_t)(l >> 8);
        }
        memcpy(wrapped + n, data, size);
        off = size;
    }
    run((const char *)wrapped, n + off);
    free(wrapped);
    return 0;
}
