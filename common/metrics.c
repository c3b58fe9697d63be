/* common/metrics.c - the self-metrics registry behind /metrics.
 * Families and children are created under one mutex and never freed until
 * iocd_metrics_reset, so a child pointer stays valid for callers; values are atomics
 * (doubles are stored as their bit patterns and updated by compare-and-swap). */
#include "common/common.h"

#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define HIST_MAX_BUCKETS 32

typedef struct metric_family metric_family;

struct iocd_metric {
    metric_family *family;
    char *labels;           /* exposition form without braces; "" for none */
    _Atomic uint64_t bits;  /* counter/gauge value as double bits; histogram: sum */
    _Atomic uint64_t count; /* histogram observations */
    _Atomic uint64_t buckets[HIST_MAX_BUCKETS];
    iocd_metric *next;
};

struct metric_family {
    char *name;
    char *help;
    iocd_metric_type type;
    double bounds[HIST_MAX_BUCKETS];
    size_t n_bounds;
    iocd_metric_fn fn; /* computed at scrape time when set */
    void *fn_ud;
    iocd_metric *children;
    metric_family *next;
};

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static metric_family *families;
static metric_family **families_tail = &families;

static double bits_to_double(uint64_t b)
{
    double d;

    memcpy(&d, &b, sizeof(d));
    return d;
}

static uint64_t double_to_bits(double d)
{
    uint64_t b;

    memcpy(&b, &d, sizeof(b));
    return b;
}

static void atomic_add_double(_Atomic uint64_t *slot, double delta)
{
    uint64_t old = atomic_load_explicit(slot, memory_order_relaxed);

    while (!atomic_compare_exchange_weak_explicit(slot, &old,
                                                  double_to_bits(bits_to_double(old) + delta),
                                                  memory_order_relaxed, memory_order_relaxed))
        ;
}

static metric_family *family_find(const char *name)
{
    metric_family *f;

    for (f = families; f != NULL; f = f->next)
        if (strcmp(f->name, name) == 0)
            return f;
    return NULL;
}

static metric_family *family_new(const char *name, const char *help, iocd_metric_type type)
{
    metric_family *f = iocd_calloc(1, sizeof(*f));

    if (f == NULL)
        return NULL;
    f->name = iocd_strdup(name);
    f->help = iocd_strdup(help != NULL ? help : "");
    if (f->name == NULL || f->help == NULL) {
        iocd_free(f->name);
        iocd_free(f->help);
        iocd_free(f);
        return NULL;
    }
    f->type = type;
    *families_tail = f;
    families_tail = &f->next;
    return f;
}

iocd_metric *iocd_metric_get(const char *name, const char *help, iocd_metric_type type,
                             const char *labels, const double *buckets, size_t n_buckets)
{
    metric_family *f;
    iocd_metric *m = NULL, **tail;

    if (labels == NULL)
        labels = "";
    pthread_mutex_lock(&reg_lock);
    f = family_find(name);
    if (f == NULL) {
        f = family_new(name, help, type);
        if (f == NULL)
            goto out;
        if (type == IOCD_METRIC_HISTOGRAM) {
            f->n_bounds = n_buckets < HIST_MAX_BUCKETS ? n_buckets : HIST_MAX_BUCKETS;
            memcpy(f->bounds, buckets, f->n_bounds * sizeof(double));
        }
    }
    IOCD_ASSERT(f->type == type);
    for (tail = &f->children; *tail != NULL; tail = &(*tail)->next) {
        if (strcmp((*tail)->labels, labels) == 0) {
            m = *tail;
            goto out;
        }
    }
    m = iocd_calloc(1, sizeof(*m));
    if (m == NULL)
        goto out;
    m->labels = iocd_strdup(labels);
    if (m->labels == NULL) {
        iocd_free(m);
        m = NULL;
        goto out;
    }
    m->family = f;
    *tail = m;
out:
    pthread_mutex_unlock(&reg_lock);
    return m;
}

iocd_metric *iocd_counter(const char *name, const char *help)
{
    return iocd_metric_get(name, help, IOCD_METRIC_COUNTER, NULL, NULL, 0);
}

iocd_metric *iocd_gauge(const char *name, const char *help)
{
    return iocd_metric_get(name, help, IOCD_METRIC_GAUGE, NULL, NULL, 0);
}

void iocd_metric_add(iocd_metric *m, double delta)
{
    if (m != NULL)
        atomic_add_double(&m->bits, delta);
}

void iocd_metric_set(iocd_metric *m, double value)
{
    if (m != NULL)
        atomic_store_explicit(&m->bits, double_to_bits(value), memory_order_relaxed);
}

void iocd_metric_observe(iocd_metric *m, double value)
{
    size_t i;

    if (m == NULL)
        return;
    for (i = 0; i < m->family->n_bounds; i++) {
        if (value <= m->family->bounds[i]) {
            atomic_fetch_add_explicit(&m->buckets[i], 1, memory_order_relaxed);
            break;
        }
    }
    atomic_fetch_add_explicit(&m->count, 1, memory_order_relaxed);
    atomic_add_double(&m->bits, value);
}

double iocd_metric_value(const iocd_metric *m)
{
    if (m == NULL)
        return 0;
    if (m->family->type == IOCD_METRIC_HISTOGRAM)
        return (double)atomic_load(&m->count);
    return bits_to_double(atomic_load(&m->bits));
}

iocd_err iocd_metric_gauge_fn(const char *name, const char *help, iocd_metric_type type,
                              iocd_metric_fn fn, void *ud)
{
    metric_family *f;
    iocd_err err = IOCD_OK;

    pthread_mutex_lock(&reg_lock);
    f = family_find(name);
    if (f == NULL)
        f = family_new(name, help, type);
    if (f == NULL) {
        err = IOCD_ENOMEM;
    } else {
        f->fn = fn;
        f->fn_ud = ud;
    }
    pthread_mutex_unlock(&reg_lock);
    return err;
}

void iocd_metric_label_escape(const char *in, char *out, size_t cap)
{
    size_t o = 0;

    if (cap == 0)
        return;
    for (; *in != '\0' && o + 3 < cap; in++) {
        if (*in == '\\' || *in == '"') {
            out[o++] = '\\';
            out[o++] = *in;
        } else if (*in == '\n') {
            out[o++] = '\\';
            out[o++] = 'n';
        } else {
            out[o++] = *in;
        }
    }
    out[o] = '\0';
}

/* ---- Rendering ------------------------------------------------------------------------- */

static iocd_err put_value(iocd_buf *out, double v)
{
    if (isnan(v))
        return iocd_buf_puts(out, "NaN");
    if (isinf(v))
        return iocd_buf_puts(out, v > 0 ? "+Inf" : "-Inf");
    return iocd_buf_printf(out, "%.17g", v);
}

/* name{labels[,extra]} value\n */
static iocd_err put_sample(iocd_buf *out, const char *name, const char *suffix, const char *labels,
                           const char *extra, double v)
{
    iocd_err err = iocd_buf_printf(out, "%s%s", name, suffix);
    bool has = labels[0] != '\0', has_extra = extra != NULL && extra[0] != '\0';

    if (err == IOCD_OK && (has || has_extra))
        err = iocd_buf_printf(out, "{%s%s%s}", labels, has && has_extra ? "," : "",
                              has_extra ? extra : "");
    if (err == IOCD_OK)
        err = iocd_buf_putc(out, ' ');
    if (err == IOCD_OK)
        err = put_value(out, v);
    if (err == IOCD_OK)
        err = iocd_buf_putc(out, '\n');
    return err;
}

static iocd_err render_help(iocd_buf *out, const metric_family *f)
{
    static const char *const type_names[] = { "counter", "gauge", "histogram" };
    iocd_err err = iocd_buf_printf(out, "# HELP %s ", f->name);
    const char *h;

    /* HELP escapes backslash and newline only. */
    for (h = f->help; err == IOCD_OK && *h != '\0'; h++) {
        if (*h == '\\')
            err = iocd_buf_puts(out, "\\\\");
        else if (*h == '\n')
            err = iocd_buf_puts(out, "\\n");
        else
            err = iocd_buf_putc(out, *h);
    }
    if (err == IOCD_OK)
        err = iocd_buf_printf(out, "\n# TYPE %s %s\n", f->name, type_names[f->type]);
    return err;
}

static iocd_err render_histogram(iocd_buf *out, const metric_family *f, const iocd_metric *m)
{
    uint64_t cum = 0;
    char le[48];
    size_t i;
    iocd_err err = IOCD_OK;

    for (i = 0; err == IOCD_OK && i < f->n_bounds; i++) {
        cum += atomic_load(&m->buckets[i]);
        snprintf(le, sizeof(le), "le=\"%.17g\"", f->bounds[i]);
        err = put_sample(out, f->name, "_bucket", m->labels, le, (double)cum);
    }
    if (err == IOCD_OK)
        err = put_sample(out, f->name, "_bucket", m->labels, "le=\"+Inf\"",
                         (double)atomic_load(&m->count));
    if (err == IOCD_OK)
        err = put_sample(out, f->name, "_sum", m->labels, NULL,
                         bits_to_double(atomic_load(&m->bits)));
    if (err == IOCD_OK)
        err = put_sample(out, f->name, "_count", m->labels, NULL, (double)atomic_load(&m->count));
    return err;
}

iocd_err iocd_metrics_render(iocd_buf *out)
{
    metric_family *f;
    iocd_metric *m;
    iocd_err err = IOCD_OK;

    pthread_mutex_lock(&reg_lock);
    for (f = families; err == IOCD_OK && f != NULL; f = f->next) {
        if (f->fn == NULL && f->children == NULL)
            continue;
        err = render_help(out, f);
        if (err == IOCD_OK && f->fn != NULL)
            err = put_sample(out, f->name, "", "", NULL, f->fn(f->fn_ud));
        for (m = f->children; err == IOCD_OK && m != NULL; m = m->next) {
            if (f->type == IOCD_METRIC_HISTOGRAM)
                err = render_histogram(out, f, m);
            else
                err = put_sample(out, f->name, "", m->labels, NULL,
                                 bits_to_double(atomic_load(&m->bits)));
        }
    }
    pthread_mutex_unlock(&reg_lock);
    return err;
}

void iocd_metrics_reset(void)
{
    metric_family *f, *fn;
    iocd_metric *m, *mn;

    pthread_mutex_lock(&reg_lock);
    for (f = families; f != NULL; f = fn) {
        fn = f->next;
        for (m = f->children; m != NULL; m = mn) {
            mn = m->next;
            iocd_free(m->labels);
            iocd_free(m);
        }
        iocd_free(f->name);
        iocd_free(f->help);
        iocd_free(f);
    }
    families = NULL;
    families_tail = &families;
    pthread_mutex_unlock(&reg_lock);
}

/* ---- Process metrics ------------------------------------------------------------------- */

static double start_time_s;

static double proc_cpu_seconds(void *ud)
{
    struct rusage ru;

    (void)ud;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return NAN;
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* Reads field (1-based) of /proc/self/statm, in pages. */
static double statm_field(int field)
{
    FILE *fp = fopen("/proc/self/statm", "r");
    unsigned long v[3] = { 0, 0, 0 };

    if (fp == NULL)
        return NAN;
    if (fscanf(fp, "%lu %lu %lu", &v[0], &v[1], &v[2]) != 3) {
        fclose(fp);
        return NAN;
    }
    fclose(fp);
    return (double)v[field - 1] * (double)sysconf(_SC_PAGESIZE);
}

static double proc_rss(void *ud)
{
    (void)ud;
    return statm_field(2);
}

static double proc_vsz(void *ud)
{
    (void)ud;
    return statm_field(1);
}

/* Anonymous resident memory (RssAnon): LMDB's mapped file pages are page cache, not ours. */
static double proc_rss_anon(void *ud)
{
    FILE *fp = fopen("/proc/self/status", "r");
    char line[256];
    double v = NAN;
    unsigned long kb;

    (void)ud;
    if (fp == NULL)
        return NAN;
    while (fgets(line, sizeof(line), fp) != NULL) {
        if (sscanf(line, "RssAnon: %lu kB", &kb) == 1) {
            v = (double)kb * 1024;
            break;
        }
    }
    fclose(fp);
    return v;
}

static double proc_open_fds(void *ud)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    double n = 0;

    (void)ud;
    if (d == NULL)
        return NAN;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1; /* the directory stream's own descriptor */
}

static double proc_max_fds(void *ud)
{
    struct rlimit rl;

    (void)ud;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return NAN;
    return rl.rlim_cur == RLIM_INFINITY ? INFINITY : (double)rl.rlim_cur;
}

static double proc_start(void *ud)
{
    (void)ud;
    return start_time_s;
}

static double mem_used(void *ud)
{
    (void)ud;
    return (double)iocd_mem_used();
}

static double log_suppressed(void *ud)
{
    (void)ud;
    return (double)iocd_log_suppressed();
}

iocd_err iocd_metrics_process_register(int64_t start_ms)
{
    static const struct {
        const char *name, *help;
        iocd_metric_type type;
        iocd_metric_fn fn;
    } defs[] = {
        { "process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
          IOCD_METRIC_COUNTER, proc_cpu_seconds },
        { "process_resident_memory_bytes", "Resident memory size in bytes.", IOCD_METRIC_GAUGE,
          proc_rss },
        { "process_resident_memory_anon_bytes",
          "Anonymous resident memory in bytes (excludes LMDB's page cache).", IOCD_METRIC_GAUGE,
          proc_rss_anon },
        { "process_virtual_memory_bytes", "Virtual memory size in bytes.", IOCD_METRIC_GAUGE,
          proc_vsz },
        { "process_open_fds", "Number of open file descriptors.", IOCD_METRIC_GAUGE,
          proc_open_fds },
        { "process_max_fds", "Maximum number of open file descriptors.", IOCD_METRIC_GAUGE,
          proc_max_fds },
        { "process_start_time_seconds", "Start time of the process since unix epoch in seconds.",
          IOCD_METRIC_GAUGE, proc_start },
        { "iocd_memory_allocated_bytes", "Bytes allocated by iocd's own allocator.",
          IOCD_METRIC_GAUGE, mem_used },
        { "iocd_log_suppressed_total", "Log lines suppressed by rate limiting.",
          IOCD_METRIC_COUNTER, log_suppressed },
    };
    char labels[256];
    iocd_metric *m;
    size_t i;
    iocd_err err;

    start_time_s = (double)start_ms / 1000.0;
    for (i = 0; i < IOCD_ARRAY_LEN(defs); i++) {
        err = iocd_metric_gauge_fn(defs[i].name, defs[i].help, defs[i].type, defs[i].fn, NULL);
        if (err != IOCD_OK)
            return err;
    }
    snprintf(labels, sizeof(labels), "version=\"%s\",revision=\"%s\"", IOCD_VERSION, IOCD_REVISION);
    m = iocd_metric_get("iocd_build_info", "Build information: version and revision.",
                        IOCD_METRIC_GAUGE, labels, NULL, 0);
    if (m == NULL)
        return IOCD_ENOMEM;
    iocd_metric_set(m, 1);
    return IOCD_OK;
}
