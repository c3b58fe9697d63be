/* alerts/silences.c - silences: label matchers (a PromQL selector without a metric name:
 * {ward="phu_xa", alertname=~"street_light.*"}) with a start and an end, who made it and why.
 * A rule alert that fires while an active silence matches its labels opens no incident and
 * sends nothing; resolutions always apply. Silences are kept in the data file (table
 * "silences") and survive restarts; expiring one sets its end to now. A recurring silence
 * (a mute window such as a nightly maintenance slot) mutes only within its daily window, on
 * its days, in local time (--timezone), between its start and end. */
#include "alerts/alerts_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SILENCES_MAX 10000

typedef struct silence {
    uint64_t id;
    char *matchers, *created_by, *comment;
    query_selector sel;
    int64_t starts_ms, ends_ms, created_ms;
    unsigned days;        /* a recurring window's days: bit 0 Sunday .. bit 6 Saturday; 0: none */
    int from_min, to_min; /* its local start and end, minutes after midnight (to < from:
                             it ends the next day; equal: the whole day) */
} silence;

static const char *const day_names[] = { "sun", "mon", "tue", "wed", "thu", "fri", "sat" };

struct alert_silences {
    store *st;
    int tz_offset_s;
    pthread_mutex_t mu;
    silence *s;
    size_t n, cap;
    uint64_t next_id;
    iocd_metric *m_silenced;
};

static void silence_fini(silence *s)
{
    iocd_free(s->matchers);
    iocd_free(s->created_by);
    iocd_free(s->comment);
    query_selector_fini(&s->sel);
}

static iocd_err encode(const silence *s, iocd_buf *b)
{
    iocd_err err =
        iocd_buf_printf(b, "%llu%c%s%c%s%c%s%c%lld%c%lld%c%lld%c", (unsigned long long)s->id, 0,
                        s->matchers, 0, s->created_by, 0, s->comment, 0, (long long)s->starts_ms, 0,
                        (long long)s->ends_ms, 0, (long long)s->created_ms, 0);

    if (err == IOCD_OK && s->days != 0)
        err = iocd_buf_printf(b, "%u%c%d%c%d%c", s->days, 0, s->from_min, 0, s->to_min, 0);
    return err;
}

static iocd_err save(alert_silences *ss, const silence *s)
{
    iocd_buf b;
    uint8_t key[8];
    int i;
    iocd_err err;

    for (i = 0; i < 8; i++)
        key[i] = (uint8_t)(s->id >> (56 - 8 * i));
    iocd_buf_init(&b, 0);
    err = encode(s, &b);
    if (err == IOCD_OK)
        err = store_kv_put(ss->st, "silences", key, 8, b.data, b.len);
    iocd_buf_fini(&b);
    return err;
}

static iocd_err add(alert_silences *ss, silence *s)
{
    if (ss->n == ss->cap) {
        size_t cap = ss->cap != 0 ? ss->cap * 2 : 16;
        silence *g = iocd_realloc(ss->s, cap * sizeof(*g));
        if (g == NULL)
            return IOCD_ENOMEM;
        ss->s = g;
        ss->cap = cap;
    }
    ss->s[ss->n++] = *s;
    if (s->id >= ss->next_id)
        ss->next_id = s->id + 1;
    return IOCD_OK;
}

static iocd_err load_one(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    alert_silences *ss = ud;
    const char *f[10], *p = val, *end = p + vlen;
    silence s;
    char why[256];
    int k;

    (void)key;
    (void)klen;
    for (k = 0; k < 10 && p < end; k++) {
        f[k] = p;
        p += strnlen(p, (size_t)(end - p)) + 1;
    }
    if (k < 7)
        return IOCD_OK;
    memset(&s, 0, sizeof(s));
    s.id = strtoull(f[0], NULL, 10);
    s.matchers = iocd_strdup(f[1]);
    s.created_by = iocd_strdup(f[2]);
    s.comment = iocd_strdup(f[3]);
    s.starts_ms = strtoll(f[4], NULL, 10);
    s.ends_ms = strtoll(f[5], NULL, 10);
    s.created_ms = strtoll(f[6], NULL, 10);
    if (k == 10) {
        s.days = (unsigned)strtoul(f[7], NULL, 10) & 0x7f;
        s.from_min = atoi(f[8]) % 1440;
        s.to_min = atoi(f[9]) % 1440;
    }
    if (s.matchers == NULL || s.created_by == NULL || s.comment == NULL ||
        query_selector_parse(s.matchers, &s.sel, why, sizeof(why)) != IOCD_OK ||
        add(ss, &s) != IOCD_OK)
        silence_fini(&s);
    return IOCD_OK;
}

iocd_err silences_open(store *st, int tz_offset_s, alert_silences **out)
{
    alert_silences *ss = iocd_calloc(1, sizeof(*ss));
    iocd_err err;

    if (ss == NULL)
        return IOCD_ENOMEM;
    ss->st = st;
    ss->tz_offset_s = tz_offset_s;
    ss->next_id = 1;
    pthread_mutex_init(&ss->mu, NULL);
    ss->m_silenced = iocd_counter("iocd_alerts_silenced_total",
                                  "Rule alerts that fired under a silence and opened no incident.");
    err = store_kv_each(st, "silences", load_one, ss);
    if (err != IOCD_OK) {
        silences_close(ss);
        return err;
    }
    *out = ss;
    return IOCD_OK;
}

void silences_close(alert_silences *ss)
{
    size_t i;

    if (ss == NULL)
        return;
    for (i = 0; i < ss->n; i++)
        silence_fini(&ss->s[i]);
    iocd_free(ss->s);
    pthread_mutex_destroy(&ss->mu);
    iocd_free(ss);
}

static bool matches(const silence *s, const char *labels, size_t len)
{
    size_t m;

    for (m = 0; m < s->sel.n; m++) {
        const char *p = labels, *end = labels + len, *v = "";
        while (p < end) {
            const char *val = p + strlen(p) + 1;
            if (strcmp(p, s->sel.m[m].name) == 0) {
                v = val;
                break;
            }
            p = val + strlen(val) + 1;
        }
        if (!query_matcher_matches(&s->sel.m[m], v, strlen(v)))
            return false;
    }
    return true;
}

/* Whether silence s mutes at t_ms: between its start and end and, if recurring, within its
 * window in local time. */
static bool in_force(const alert_silences *ss, const silence *s, int64_t t_ms)
{
    int64_t local, day;
    int m, wd;

    if (t_ms < s->starts_ms || t_ms >= s->ends_ms)
        return false;
    if (s->days == 0)
        return true;
    local = t_ms / 1000 + ss->tz_offset_s;
    day = local >= 0 ? local / 86400 : (local - 86399) / 86400;
    m = (int)((local - day * 86400) / 60);
    wd = (int)(((day + 4) % 7 + 7) % 7); /* 1970-01-01 was a Thursday */
    if (s->from_min == s->to_min)
        return (s->days >> wd) & 1;
    if (s->from_min < s->to_min)
        return ((s->days >> wd) & 1) && m >= s->from_min && m < s->to_min;
    /* Across midnight: the evening of a listed day, or the morning after one. */
    return (((s->days >> wd) & 1) && m >= s->from_min) ||
           (((s->days >> ((wd + 6) % 7)) & 1) && m < s->to_min);
}

bool silences_hold(alert_silences *ss, const char *labels, size_t len, int64_t t_ms)
{
    bool hit = false;
    size_t i;

    pthread_mutex_lock(&ss->mu);
    for (i = 0; i < ss->n && !hit; i++)
        hit = in_force(ss, &ss->s[i], t_ms) && matches(&ss->s[i], labels, len);
    pthread_mutex_unlock(&ss->mu);
    return hit;
}

bool silences_match(alert_silences *ss, const char *labels, size_t len, int64_t t_ms)
{
    bool hit = silences_hold(ss, labels, len, t_ms);

    if (hit)
        iocd_metric_add(ss->m_silenced, 1);
    return hit;
}

static iocd_err silence_json(const alert_silences *ss, const silence *s, int64_t now, iocd_buf *b)
{
    char t1[40], t2[40], t3[40];
    const char *state = now >= s->ends_ms ? "expired" : in_force(ss, s, now) ? "active" : "pending";
    iocd_err err;

    iocd_time_format(s->starts_ms, t1, sizeof(t1));
    iocd_time_format(s->ends_ms, t2, sizeof(t2));
    iocd_time_format(s->created_ms, t3, sizeof(t3));
    err = iocd_buf_printf(b, "{\"id\":%llu,\"matchers\":", (unsigned long long)s->id);
    if (err == IOCD_OK)
        err = iocd_buf_json_str(b, s->matchers, strlen(s->matchers));
    if (err == IOCD_OK)
        err = iocd_buf_printf(b,
                              ",\"starts_at\":\"%s\",\"ends_at\":\"%s\",\"created_at\":\"%s\","
                              "\"state\":\"%s\",\"created_by\":",
                              t1, t2, t3, state);
    if (err == IOCD_OK)
        err = iocd_buf_json_str(b, s->created_by, strlen(s->created_by));
    if (err == IOCD_OK)
        err = iocd_buf_puts(b, ",\"comment\":");
    if (err == IOCD_OK)
        err = iocd_buf_json_str(b, s->comment, strlen(s->comment));
    if (err == IOCD_OK && s->days != 0) {
        int d, n = 0;
        err = iocd_buf_puts(b, ",\"every\":\"");
        for (d = 0; err == IOCD_OK && d < 7; d++)
            if ((s->days >> ((d + 1) % 7)) & 1) /* Monday first */
                err = iocd_buf_printf(b, "%s%s", n++ > 0 ? "," : "", day_names[(d + 1) % 7]);
        if (err == IOCD_OK)
            err =
                iocd_buf_printf(b, "\",\"from\":\"%02d:%02d\",\"to\":\"%02d:%02d\"",
                                s->from_min / 60, s->from_min % 60, s->to_min / 60, s->to_min % 60);
    }
    return err == IOCD_OK ? iocd_buf_putc(b, '}') : err;
}

/* "HH:MM" -> minutes after midnight, or -1. */
static int parse_hhmm(const char *t)
{
    int h, m;
    char extra;

    if (t == NULL || sscanf(t, "%2d:%2d%c", &h, &m, &extra) != 2 || h < 0 || h > 24 || m < 0 ||
        m > 59 || (h == 24 && m != 0))
        return -1;
    return (h * 60 + m) % 1440;
}

/* "daily", "weekdays", "weekends" or days like "mon,wed,fri" / "mon-fri" -> a day mask, or 0. */
static unsigned parse_days(const char *t)
{
    unsigned mask = 0;
    const char *p = t;

    if (strcmp(t, "daily") == 0)
        return 0x7f;
    if (strcmp(t, "weekdays") == 0)
        return 0x3e;
    if (strcmp(t, "weekends") == 0)
        return 0x41;
    while (*p != '\0') {
        int a = -1, b, d;
        for (d = 0; d < 7; d++)
            if (strncmp(p, day_names[d], 3) == 0)
                a = d;
        if (a < 0)
            return 0;
        p += 3;
        b = a;
        if (*p == '-') {
            for (b = -1, d = 0; d < 7; d++)
                if (strncmp(p + 1, day_names[d], 3) == 0)
                    b = d;
            if (b < 0)
                return 0;
            p += 4;
        }
        for (d = a;; d = (d + 1) % 7) { /* a range may wrap: fri-mon */
            mask |= 1u << d;
            if (d == b)
                break;
        }
        if (*p == ',')
            p++;
        else if (*p != '\0')
            return 0;
    }
    return mask;
}

iocd_err silences_add(alert_silences *ss, const char *matchers, int64_t starts_ms, int64_t ends_ms,
                      const char *created_by, const char *comment, iocd_buf *out, char *errbuf,
                      size_t errlen)
{
    return silences_add_recurring(ss, matchers, starts_ms, ends_ms, NULL, NULL, NULL, created_by,
                                  comment, out, errbuf, errlen);
}

iocd_err silences_add_recurring(alert_silences *ss, const char *matchers, int64_t starts_ms,
                                int64_t ends_ms, const char *every, const char *from,
                                const char *to, const char *created_by, const char *comment,
                                iocd_buf *out, char *errbuf, size_t errlen)
{
    silence s;
    int64_t now = iocd_now_ms();
    iocd_err err;

    memset(&s, 0, sizeof(s));
    if (every != NULL || from != NULL || to != NULL) {
        s.days = every != NULL ? parse_days(every) : 0;
        s.from_min = parse_hhmm(from);
        s.to_min = parse_hhmm(to);
        if (s.days == 0 || s.from_min < 0 || s.to_min < 0) {
            snprintf(errbuf, errlen,
                     "a recurring silence needs \"every\" (daily, weekdays, weekends or days "
                     "like mon,wed or mon-fri), \"from\" and \"to\" (local HH:MM)");
            return IOCD_EINVAL;
        }
        if (ends_ms == 0)
            ends_ms = now + 10LL * 365 * 86400000; /* until expired by hand */
    }
    if (matchers == NULL || created_by == NULL || created_by[0] == '\0' || comment == NULL) {
        snprintf(errbuf, errlen, "a silence needs \"matchers\", \"created_by\" and \"comment\"");
        return IOCD_EINVAL;
    }
    if (query_selector_parse(matchers, &s.sel, errbuf, errlen) != IOCD_OK)
        return IOCD_EINVAL;
    if (s.sel.n == 0) {
        query_selector_fini(&s.sel);
        snprintf(errbuf, errlen, "a silence needs at least one label matcher");
        return IOCD_EINVAL;
    }
    if (starts_ms == 0)
        starts_ms = now;
    if (ends_ms <= starts_ms || ends_ms <= now) {
        query_selector_fini(&s.sel);
        snprintf(errbuf, errlen, "\"ends_at\" must be after \"starts_at\" and in the future");
        return IOCD_EINVAL;
    }
    s.matchers = iocd_strdup(matchers);
    s.created_by = iocd_strdup(created_by);
    s.comment = iocd_strdup(comment);
    s.starts_ms = starts_ms;
    s.ends_ms = ends_ms;
    s.created_ms = now;
    pthread_mutex_lock(&ss->mu);
    s.id = ss->next_id;
    err = s.matchers == NULL || s.created_by == NULL || s.comment == NULL ? IOCD_ENOMEM
          : ss->n >= SILENCES_MAX                                         ? IOCD_ELIMIT
                                                                          : save(ss, &s);
    if (err == IOCD_OK)
        err = add(ss, &s);
    if (err == IOCD_OK)
        err = silence_json(ss, &ss->s[ss->n - 1], now, out);
    else
        silence_fini(&s);
    pthread_mutex_unlock(&ss->mu);
    if (err == IOCD_ELIMIT)
        snprintf(errbuf, errlen, "at most %d silences", SILENCES_MAX);
    return err;
}

iocd_err silences_expire(alert_silences *ss, uint64_t id, iocd_buf *out)
{
    int64_t now = iocd_now_ms();
    iocd_err err = IOCD_ENOTFOUND;
    size_t i;

    pthread_mutex_lock(&ss->mu);
    for (i = 0; i < ss->n; i++) {
        int64_t old;
        if (ss->s[i].id != id)
            continue;
        old = ss->s[i].ends_ms;
        if (old > now)
            ss->s[i].ends_ms = now;
        err = save(ss, &ss->s[i]);
        if (err != IOCD_OK)
            ss->s[i].ends_ms = old;
        else
            err = silence_json(ss, &ss->s[i], now, out);
        break;
    }
    pthread_mutex_unlock(&ss->mu);
    return err;
}

iocd_err silences_list(alert_silences *ss, iocd_buf *out)
{
    int64_t now = iocd_now_ms();
    iocd_err err = iocd_buf_putc(out, '[');
    size_t i;

    pthread_mutex_lock(&ss->mu);
    for (i = ss->n; err == IOCD_OK && i > 0; i--) {
        if (i < ss->n)
            err = iocd_buf_putc(out, ',');
        if (err == IOCD_OK)
            err = silence_json(ss, &ss->s[i - 1], now, out);
    }
    pthread_mutex_unlock(&ss->mu);
    return err == IOCD_OK ? iocd_buf_putc(out, ']') : err;
}
