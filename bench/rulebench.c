/* bench/rulebench.c - the rules benchmark (make bench-rules): 1,000 rules (streaming
 * thresholds, 5-minute windows, absence checks) over 100k series while samples are written at
 * a target rate through the real store (group commits, the store listener, the rule engine on
 * its own thread). Every 10 ms (--cross-ms) one series crosses its threshold; the time from
 * handing that sample to the store (its batch: --batch samples, 5,000 by default as gateways send
 * them, committed with fsync) to the alert's state change is the latency. Prints evaluations per
 * second, the engine's lag (queue) and latency p50/p99. rulebench [--series N] [--rules N] [--rate
 * SAMPLES_PER_S] [--seconds S] [--batch N]
 *             [--cross-ms MS]
 */
#define _XOPEN_SOURCE 700
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/common.h"
#include "rules/rules.h"
#include "storage/storage.h"

#define LAT_MAX 100000

static int64_t pending_ns[1 << 20]; /* per series index: when its crossing was acknowledged */
static double lat_ms[LAT_MAX];
static size_t n_lat;
static pthread_mutex_t lat_mu = PTHREAD_MUTEX_INITIALIZER;
static size_t n_series = 100000, n_rules = 1000;

static void on_event(void *ud, const rule_event *ev)
{
    const char *p = ev->labels, *end = ev->labels + ev->labels_len;
    long idx = -1;

    (void)ud;
    if (ev->to != RULE_FIRING)
        return;
    while (p < end) {
        const char *v = p + strlen(p) + 1;
        if (strcmp(p, "device") == 0)
            idx = strtol(v + 1, NULL, 10);
        p = v + strlen(v) + 1;
    }
    pthread_mutex_lock(&lat_mu);
    if (idx >= 0 && (size_t)idx < n_series && pending_ns[idx] != 0 && n_lat < LAT_MAX) {
        lat_ms[n_lat++] = (double)(iocd_mono_ns() - pending_ns[idx]) / 1e6;
        pending_ns[idx] = 0;
    }
    pthread_mutex_unlock(&lat_mu);
}

/* The value of an unlabelled metric in the exposition text. */
static double metric_value(const char *text, const char *name)
{
    char key[128];
    const char *p;

    snprintf(key, sizeof(key), "\n%s ", name);
    p = strstr(text, key);
    return p != NULL ? atof(p + strlen(key)) : 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

int main(int argc, char **argv)
{
    char dir[] = "/tmp/iocd-rulebench-XXXXXX", path[256], errbuf[512], dev[32], shard[32];
    double rate = 1000000, seconds = 10, cross_ms = 10;
    size_t batch = 5000;
    store *st = NULL;
    rule_engine *e = NULL;
    rule_engine_config rc;
    FILE *f;
    size_t i, written = 0, crossings = 0;
    int64_t t0, t_end, next_cross, now_ms;
    uint64_t rng = 1;
    iocd_err err;

    for (i = 1; i + 1 < (size_t)argc; i += 2) {
        if (strcmp(argv[i], "--series") == 0)
            n_series = (size_t)atol(argv[i + 1]);
        else if (strcmp(argv[i], "--rules") == 0)
            n_rules = (size_t)atol(argv[i + 1]);
        else if (strcmp(argv[i], "--rate") == 0)
            rate = atof(argv[i + 1]);
        else if (strcmp(argv[i], "--seconds") == 0)
            seconds = atof(argv[i + 1]);
        else if (strcmp(argv[i], "--batch") == 0)
            batch = (size_t)atol(argv[i + 1]);
        else if (strcmp(argv[i], "--cross-ms") == 0)
            cross_ms = atof(argv[i + 1]);
    }
    if (n_series > (1 << 20) || n_rules == 0 || n_series < n_rules) {
        fprintf(stderr, "rulebench: --series up to 1048576, at least --rules\n");
        return 2;
    }
    iocd_log_setup(IOCD_LOG_WARN, IOCD_LOG_LOGFMT, 2);
    if (mkdtemp(dir) == NULL)
        return 1;
    /* The rules: 60% thresholds, 30% 5-minute windows, 10% absence; each rule a shard. */
    snprintf(path, sizeof(path), "%s/bench.lua", dir);
    f = fopen(path, "w");
    if (f == NULL)
        return 1;
    for (i = 0; i < n_rules; i++) {
        const char *kind = i % 10 < 6 ? "when = \"value > 90\""
                           : i % 10 < 9
                               ? "window = \"5m\", when = \"avg > 80\", clear = \"avg < 70\""
                               : "absent = \"5m\"";
        fprintf(f,
                "rule \"r%zu\" { select = 'bench_value{shard=\"s%zu\"}', %s, domain = \"bench\", "
                "group_by = { \"device\" } }\n",
                i, i, kind);
    }
    fclose(f);
    err = store_open(dir, NULL, &st, errbuf, sizeof(errbuf));
    memset(&rc, 0, sizeof(rc));
    rc.st = st;
    rc.on_event = on_event;
    rc.tz_offset_s = 7 * 3600;
    if (err == IOCD_OK)
        err = rule_engine_new(&rc, &e);
    if (err == IOCD_OK)
        err = rule_engine_load(e, path, errbuf, sizeof(errbuf));
    if (err == IOCD_OK)
        err = rule_engine_start(e);
    if (err != IOCD_OK) {
        fprintf(stderr, "rulebench: %s\n", errbuf[0] != '\0' ? errbuf : iocd_strerror(err));
        return 1;
    }
    store_set_listener(st, rule_engine_feed, e);
    printf("# %zu rules (60%% thresholds, 30%% 5m windows, 10%% absence) over %zu series, "
           "target %.0f samples/s for %.0f s, batches of %zu\n",
           n_rules, n_series, rate, seconds, batch);
    t0 = iocd_mono_ns();
    t_end = t0 + (int64_t)(seconds * 1e9);
    next_cross = t0 + 500000000;
    now_ms = iocd_now_ms();
    while (iocd_mono_ns() < t_end) {
        store_batch *b = NULL;
        size_t n = batch, cross = SIZE_MAX;
        int64_t due = t0 + (int64_t)((double)written / rate * 1e9);
        store_reject why;
        while (iocd_mono_ns() < due) { /* pace */
            struct timespec ts = { 0, 200000 };
            nanosleep(&ts, NULL);
        }
        if (iocd_mono_ns() >= next_cross) { /* a series of this batch under a threshold rule */
            do {
                rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
                cross = (written + (size_t)(rng >> 33) % n) % n_series;
            } while ((cross % n_rules) % 10 >= 6);
            next_cross += (int64_t)(cross_ms * 1e6);
        }
        if (store_batch_new(st, &b) != IOCD_OK)
            return 1;
        now_ms = iocd_now_ms();
        for (i = 0; i < n; i++) {
            size_t s = (written + i) % n_series;
            double v = 50.0;
            iocd_label l[3];
            snprintf(dev, sizeof(dev), "d%zu", s);
            snprintf(shard, sizeof(shard), "s%zu", s % n_rules);
            l[0] = (iocd_label){ "__name__", 8, "bench_value", 11 };
            l[1] = (iocd_label){ "device", 6, dev, strlen(dev) };
            l[2] = (iocd_label){ "shard", 5, shard, strlen(shard) };
            if (s == cross) {
                v = 95.0;
                crossings++;
            }
            if (store_batch_add(b, l, 3, now_ms, v, &why) != IOCD_OK)
                break;
        }
        if (cross != SIZE_MAX) { /* the sample arrives: the clock starts */
            pthread_mutex_lock(&lat_mu);
            pending_ns[cross] = iocd_mono_ns();
            pthread_mutex_unlock(&lat_mu);
        }
        if (store_batch_commit(b, NULL) != IOCD_OK)
            return 1;
        if (getenv("RULEBENCH_TRACE") != NULL && written % 200000 == 0) {
            iocd_buf m;
            iocd_buf_init(&m, 0);
            iocd_metrics_render(&m);
            fprintf(stderr, "t=%.2fs queue=%.0f lag=%.3fs\n", (double)(iocd_mono_ns() - t0) / 1e9,
                    metric_value(m.data, "iocd_rules_queue_samples"),
                    metric_value(m.data, "iocd_rules_lag_seconds"));
            iocd_buf_fini(&m);
        }
        written += n;
    }
    {
        double el = (double)(iocd_mono_ns() - t0) / 1e9;
        int64_t drain = iocd_mono_ns();
        iocd_buf m;
        double evals = 0, queued = 0;
        /* Let the engine finish what is queued: the lag at the end. */
        iocd_buf_init(&m, 0);
        for (;;) {
            iocd_buf_reset(&m);
            iocd_metrics_render(&m);
            queued = metric_value(m.data, "iocd_rules_queue_samples");
            if (queued == 0 || iocd_mono_ns() - drain > 30000000000LL)
                break;
            nanosleep(&(struct timespec){ 0, 10000000 }, NULL);
        }
        evals = metric_value(m.data, "iocd_rule_evaluations_total");
        printf("rules_samples_evaluated %.0f\n", metric_value(m.data, "iocd_rules_samples_total"));
        printf("rules_samples_dropped %.0f\n",
               metric_value(m.data, "iocd_rules_samples_dropped_total"));
        qsort(lat_ms, n_lat, sizeof(*lat_ms), cmp_double);
        printf("samples_written %zu\n", written);
        printf("ingest_samples_per_s %.0f\n", (double)written / el);
        printf("rule_evaluations_per_s %.0f\n", evals / el);
        printf("drain_after_stop_ms %.1f\n", (double)(iocd_mono_ns() - drain) / 1e6);
        printf("crossings %zu alerts_seen %zu\n", crossings, n_lat);
        if (n_lat > 0) {
            printf("latency_p50_ms %.2f\n", lat_ms[n_lat / 2]);
            printf("latency_p99_ms %.2f\n", lat_ms[(size_t)((double)n_lat * 0.99)]);
            printf("latency_max_ms %.2f\n", lat_ms[n_lat - 1]);
        }
        iocd_buf_fini(&m);
    }
    store_set_listener(st, NULL, NULL);
    rule_engine_free(e);
    store_close(st);
    nftw(dir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
    return 0;
}
