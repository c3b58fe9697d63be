/* tests/fuzz/fuzz_am_alerts.c - the parser of Alertmanager API v2 alert bodies
 * (POST /api/v2/alerts). Every alert handed on must have passed the checks: labels sorted and
 * unique, names valid, an alertname, valid UTF-8 without NUL, values within their caps,
 * startsAt not after endsAt; alerts and rejections come in body order; a refused body says
 * why. */
#include <stdlib.h>
#include <string.h>

#include "alerts/alerts_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct fuzz_state {
    size_t last, alerts, rejects;
} fuzz_state;

static void check_set(const char *set, size_t len, bool need_alertname)
{
    const char *p = set, *end = set + len, *prev = NULL;
    bool alertname = false;

    if (len > 0 && set[len - 1] != '\0')
        abort();
    while (p < end) {
        const char *v = p + strlen(p) + 1;
        size_t i;
        if (v >= end || p[0] == '\0' || v[0] == '\0')
            abort();
        if (prev != NULL && strcmp(prev, p) >= 0) /* sorted, no name twice */
            abort();
        for (i = 0; p[i] != '\0'; i++)
            if (!((p[i] >= 'a' && p[i] <= 'z') || (p[i] >= 'A' && p[i] <= 'Z') || p[i] == '_' ||
                  (i > 0 && p[i] >= '0' && p[i] <= '9')))
                abort();
        if (!iocd_utf8_valid(v, strlen(v)))
            abort();
        alertname |= strcmp(p, "alertname") == 0;
        prev = p;
        p = v + strlen(v) + 1;
    }
    if (need_alertname && !alertname)
        abort();
}

static iocd_err fuzz_alert(void *ud, const external_alert *a)
{
    fuzz_state *s = ud;

    if (a->index <= s->last || a->labels_len == 0 || a->rule == NULL || a->rule[0] == '\0')
        abort();
    check_set(a->labels, a->labels_len, true);
    check_set(a->annotations, a->annotations_len, false);
    if (a->generator_url == NULL || !iocd_utf8_valid(a->generator_url, strlen(a->generator_url)))
        abort();
    if (a->starts_ms < 0 || a->ends_ms < 0 ||
        (a->starts_ms != 0 && a->ends_ms != 0 && a->ends_ms < a->starts_ms))
        abort();
    s->last = a->index;
    s->alerts++;
    return IOCD_OK;
}

static void fuzz_reject(void *ud, size_t index, const char *reason)
{
    fuzz_state *s = ud;

    if (index <= s->last || reason == NULL || reason[0] == '\0')
        abort();
    s->last = index;
    s->rejects++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_state s = { 0, 0, 0 };
    external_sink sink = { fuzz_alert, fuzz_reject, &s };
    char errbuf[256] = "";
    iocd_err err = external_parse((const char *)data, size, &sink, errbuf, sizeof(errbuf));

    if (err != IOCD_OK && ((err != IOCD_EPARSE && err != IOCD_ETOOBIG) || errbuf[0] == '\0'))
        abort();
    if (err == IOCD_OK && s.alerts + s.rejects > ALERT_AM_BATCH_MAX)
        abort();
    return 0;
}
