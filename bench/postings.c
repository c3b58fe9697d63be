/* bench/postings.c - how fast a data dir's label postings are read: for every label name,
 * store_label_values and store_postings of each of its values, the best of PASSES passes.
 * Usage: build/bench/postings DIR [PASSES]. Open a copy of a data dir: opening may upgrade
 * its format, and closing seals (which packs the postings of new series). */
#include "storage/storage.h"

#include <stdio.h>
#include <stdlib.h>

static void strs_free(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        iocd_free(v[i]);
    iocd_free(v);
}

static double ms_since(int64_t t0)
{
    return (double)(iocd_mono_ns() - t0) / 1e6;
}

/* One label name: the best pass of its values' list and of the postings of every value. */
static int bench_name(store *st, const char *name, int passes)
{
    double best_values = 1e30, best_postings = 1e30;
    char **vals = NULL;
    size_t n_vals = 0, n_ids = 0;

    for (int p = 0; p < passes; p++) {
        int64_t t0 = iocd_mono_ns();
        strs_free(vals, n_vals);
        if (store_label_values(st, name, &vals, &n_vals) != IOCD_OK)
            return 1;
        if (ms_since(t0) < best_values)
            best_values = ms_since(t0);
    }
    for (int p = 0; p < passes; p++) {
        int64_t t0 = iocd_mono_ns();
        n_ids = 0;
        for (size_t i = 0; i < n_vals; i++) {
            uint64_t *ids = NULL;
            size_t n = 0;
            if (store_postings(st, name, vals[i], &ids, &n) != IOCD_OK)
                return 1;
            n_ids += n;
            iocd_free(ids);
        }
        if (ms_since(t0) < best_postings)
            best_postings = ms_since(t0);
    }
    printf("%-24s values %7zu  label_values %9.3f ms  postings %8.2f us per value (%.0f ids)\n",
           name, n_vals, best_values, n_vals > 0 ? best_postings * 1000 / (double)n_vals : 0,
           n_vals > 0 ? (double)n_ids / (double)n_vals : 0);
    strs_free(vals, n_vals);
    return 0;
}

int main(int argc, char **argv)
{
    store_config cfg = { 0 };
    store *st = NULL;
    char errbuf[256], **names = NULL;
    size_t n_names = 0;
    int passes = argc > 2 ? atoi(argv[2]) : 6, rc = 0;

    if (argc < 2 || passes < 1) {
        fprintf(stderr, "usage: %s DIR [PASSES]\n", argv[0]);
        return 2;
    }
    if (store_open(argv[1], &cfg, &st, errbuf, sizeof(errbuf)) != IOCD_OK) {
        fprintf(stderr, "%s\n", errbuf);
        return 1;
    }
    if (store_label_names(st, &names, &n_names) != IOCD_OK)
        rc = 1;
    for (size_t i = 0; rc == 0 && i < n_names; i++)
        rc = bench_name(st, names[i], passes);
    strs_free(names, n_names);
    store_close(st);
    return rc;
}
