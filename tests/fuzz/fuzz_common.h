/* tests/fuzz/fuzz_common.h - a sink shared by the parser fuzz targets: it checks the
 * invariants every parser promises (labels non-empty, __name__ first, counts consistent) and
 * aborts on a violation so libFuzzer (or the corpus replay) reports it. */
#ifndef IOCD_FUZZ_COMMON_H
#define IOCD_FUZZ_COMMON_H

#include <stdlib.h>
#include <string.h>

#include "collector/parse_int.h"

typedef struct fuzz_counts {
    uint64_t samples, rejects;
} fuzz_counts;

static iocd_err fuzz_sample(void *ud, const iocd_label *labels, size_t n, uint64_t tagset,
                            int64_t t_ms, double v)
{
    fuzz_counts *c = ud;
    size_t i;

    (void)tagset;
    (void)t_ms;
    (void)v;
    if (n == 0 || labels[0].name_len != 8 || memcmp(labels[0].name, "__name__", 8) != 0 ||
        labels[0].value_len == 0)
        abort();
    for (i = 0; i < n; i++) {
        volatile char sink = 0;
        if (labels[i].name_len > 0)
            sink ^= labels[i].name[labels[i].name_len - 1]; /* touch: ASan checks bounds */
        if (labels[i].value_len > 0)
            sink ^= labels[i].value[labels[i].value_len - 1];
        (void)sink;
    }
    c->samples++;
    return IOCD_OK;
}

static void fuzz_reject(void *ud, uint64_t line_no, const char *reason)
{
    fuzz_counts *c = ud;

    if (line_no == 0 || reason == NULL || reason[0] == '\0')
        abort();
    c->rejects++;
}

#endif
