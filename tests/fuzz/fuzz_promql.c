/* tests/fuzz/fuzz_promql.c - the PromQL parser and evaluator: any text either parses into an
 * expression that evaluates (or fails with a message) over a small store, or is refused
 * with a message. The store is created once per process in a temporary directory. */
#define _XOPEN_SOURCE 700
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "query/query.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static store *st;
static int64_t now_ms;
static char dir[] = "/tmp/iocd-fuzz-promql-XXXXXX";

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

static void cleanup(void)
{
    store_close(st);
    nftw(dir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
}

static void setup(void)
{
    char errbuf[256];
    store_batch *b = NULL;
    store_reject why;
    int i, k;

    if (mkdtemp(dir) == NULL || store_open(dir, NULL, &st, errbuf, sizeof(errbuf)) != IOCD_OK)
        abort();
    atexit(cleanup);
    now_ms = iocd_now_ms() / 60000 * 60000;
    if (store_batch_new(st, &b) != IOCD_OK)
        abort();
    for (k = 0; k < 3; k++) {
        char ward[2] = { (char)('a' + k), '\0' };
        iocd_label c[] = { { "__name__", 8, "req_total", 9 }, { "ward", 4, ward, 1 } };
        iocd_label g[] = { { "__name__", 8, "pressure", 8 }, { "ward", 4, ward, 1 } };
        iocd_label h[] = { { "__name__", 8, "lat_bucket", 10 },
                           { "le", 2, k == 2 ? "+Inf" : ward, k == 2 ? 4 : 1 } };
        for (i = 0; i < 30; i++) {
            int64_t t = now_ms - (30 - i) * 60000;
            if (store_batch_add(b, c, 2, t, i % 11 * 3.0, &why) != IOCD_OK ||
                store_batch_add(b, g, 2, t, (i * 7 + k) % 5 - 1.5, &why) != IOCD_OK ||
                store_batch_add(b, h, 2, t, i + k * 10, &why) != IOCD_OK)
                abort();
        }
    }
    if (store_batch_commit(b, NULL) != IOCD_OK)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    query_limits lim = { 0 };
    query_expr *e = NULL;
    query_result r;
    char *text, errbuf[512];
    iocd_err err;

    if (size > 4096)
        return 0;
    if (st == NULL)
        setup();
    text = malloc(size + 1);
    if (text == NULL)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    errbuf[0] = '\0';
    if (query_parse(text, &e, errbuf, sizeof(errbuf)) != IOCD_OK) {
        if (errbuf[0] == '\0')
            abort(); /* every refusal explains itself */
        free(text);
        return 0;
    }
    lim.timeout_ms = 2000;
    lim.max_samples = 2000000;
    lim.max_points = 200;
    err = query_eval(st, &lim, e, now_ms, 0, 0, &r, errbuf, sizeof(errbuf));
    if (err == IOCD_OK)
        query_result_fini(&r);
    err = query_eval(st, &lim, e, now_ms - 1800000, now_ms, 300000, &r, errbuf, sizeof(errbuf));
    if (err == IOCD_OK)
        query_result_fini(&r);
    query_expr_free(e);
    free(text);
    return 0;
}
