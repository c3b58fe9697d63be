/* tests/fuzz/fuzz_jsonl.c - VictoriaMetrics JSON-lines import parser. */
#include "tests/fuzz/fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_counts c = { 0, 0 };
    col_sink sink = { fuzz_sample, fuzz_reject, &c };
    col_parse_stats st;
    col_parse_limits lim = { 8192, 16, 64, 256 };

    memset(&st, 0, sizeof(st));
    if (col_jsonl_parse((const char *)data, size, 1, &lim, &sink, &st) != IOCD_OK)
        abort();
    if (st.samples != c.samples || st.rejected != c.rejects || st.rejected > st.lines)
        abort();
    return 0;
}
