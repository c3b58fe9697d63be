/* tests/unit/storage_fixture.h - what the storage tests share: data dirs under the test's
 * temporary dir, opening a store there, adding one sample, waiting for a seal. */
#ifndef IOCD_TESTS_UNIT_STORAGE_FIXTURE_H
#define IOCD_TESTS_UNIT_STORAGE_FIXTURE_H

#include "tests/unit/harness.h"

#include <time.h>

#include "storage/storage.h"

#define L(n, v)                                                                                    \
    {                                                                                              \
        n, sizeof(n) - 1, v, sizeof(v) - 1                                                         \
    }

#define MIN_MS 60000

/* name under the test's temporary dir (the buffer is reused by the next call). */
static inline const char *sub(const char *name)
{
    static char path[512];

    snprintf(path, sizeof(path), "%s/%s", test_tmpdir(), name);
    return path;
}

static inline store *open_at(const char *name, const store_config *cfg)
{
    char errbuf[256];
    store *st = NULL;

    if (store_open(sub(name), cfg, &st, errbuf, sizeof(errbuf)) != IOCD_OK)
        test_fail_at(__FILE__, __LINE__, "store_open: %s", errbuf);
    return st;
}

static inline void add(store_batch *b, const iocd_label *l, size_t n, int64_t t, double v)
{
    store_reject why;

    ASSERT_OK(store_batch_add(b, l, n, t, v, &why));
}

/* Waits until every period before `before` is sealed; its stats then. */
static inline store_stats wait_sealed(store *st, int64_t before)
{
    store_stats s;
    int i;

    for (i = 0; i < 2000; i++) { /* the sealer wakes at every commit, and every second */
        ASSERT_OK(store_stats_get(st, &s));
        if (s.sealed_before >= before)
            return s;
        nanosleep(&(struct timespec){ 0, 5000000 }, NULL);
    }
    test_fail_at(__FILE__, __LINE__, "not sealed before %lld", (long long)before);
}

#endif
