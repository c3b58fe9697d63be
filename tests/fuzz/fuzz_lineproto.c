/* tests/fuzz/fuzz_lineproto.c - InfluxDB line protocol parser under every precision. */
#include "tests/fuzz/fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const col_precision precs[] = { COL_PREC_NS, COL_PREC_MS, COL_PREC_S, COL_PREC_AUTO };
    size_t i;

    for (i = 0; i < sizeof(precs) / sizeof(precs[0]); i++) {
        fuzz_counts c = { 0, 0 };
        col_sink sink = { fuzz_sample, fuzz_reject, &c };
        col_parse_stats st;
        col_lp_opts o = { precs[i], 1700000000000, 1, { 4096, 16, 64, 256 } };
        memset(&st, 0, sizeof(st));
        if (col_lp_parse((const char *)data, size, &o, &sink, &st) != IOCD_OK)
            abort();
        if (st.samples != c.samples || st.rejected != c.rejects || st.rejected > st.lines)
            abort();
    }
    return 0;
}
