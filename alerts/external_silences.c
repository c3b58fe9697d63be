/* alerts/external_silences.c - silences in Alertmanager's API v2 shape (list, get, add) over
 * iocd's own, and the matchers that they and GET /api/v2/alerts share: Alertmanager's
 * matchers and filter= values are converted to iocd's selector text and back. Nothing is
 * kept here: alert_silences_list's JSON is the one source of silences. */
#include "alerts/alerts_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MATCHERS_MAX      64 /* of one silence */
#define SILENCE_NODES_MAX 4096
#define LIST_NODES_MAX    2000000

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* ---- Matchers ----------------------------------------------------------------------------- */

/* Appends s as a PromQL double-quoted string. */
iocd_err external_put_quoted(iocd_buf *b, const char *s)
{
    iocd_err err = iocd_buf_putc(b, '"');

    for (; err == IOCD_OK && *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '\\' || c == '"')
            err = iocd_buf_printf(b, "\\%c", c);
        else if (c == '\n')
            err = iocd_buf_puts(b, "\\n");
        else if (c == '\r')
            err = iocd_buf_puts(b, "\\r");
        else if (c == '\t')
            err = iocd_buf_puts(b, "\\t");
        else if (c < 0x20 || c == 0x7f)
            err = iocd_buf_printf(b, "\\x%02x", c);
        else
            err = iocd_buf_putc(b, (char)c);
    }
    return err == IOCD_OK ? iocd_buf_putc(b, '"') : err;
}

/* Whether every matcher of sel (but those named skip) accepts labels. */
bool external_sel_matches(const query_selector *sel, const char *labels, size_t len,
                          const char *skip)
{
    size_t m;

    for (m = 0; m < sel->n; m++) {
        const char *v;
        if (skip != NULL && strcmp(sel->m[m].name, skip) == 0)
            continue;
        v = iocd_label_value(labels, len, sel->m[m].name);
        if (v == NULL)
            v = "";
        if (!query_matcher_matches(&sel->m[m], v, strlen(v)))
            return false;
    }
    return true;
}

/* Alertmanager's filter= values (alertname="x", severity=~"crit.*", job=api, or a {...}
 * list) as one selector. A first matcher on EXTERNAL_ANY_LABEL lets a filter match the empty string
 * (PromQL refuses a selector of only such matchers); external_sel_matches skips it. */
iocd_err external_filter_parse(const char *const *filters, size_t n, query_selector *sel,
                               char *errbuf, size_t errlen)
{
    iocd_buf b;
    size_t i;
    iocd_err err;

    iocd_buf_init(&b, 1 << 20);
    err = iocd_buf_puts(&b, "{" EXTERNAL_ANY_LABEL "=\"1\"");
    for (i = 0; err == IOCD_OK && i < n; i++) {
        const char *f = filters[i], *p, *end;
        size_t len;
        while (*f == ' ')
            f++;
        len = strlen(f);
        while (len > 0 && f[len - 1] == ' ')
            len--;
        end = f + len;
        if (len >= 2 && f[0] == '{' && f[len - 1] == '}') {
            if (len > 2)
                err = iocd_buf_printf(&b, ",%.*s", (int)(len - 2), f + 1);
            continue;
        }
        for (p = f; (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_' ||
                    (p > f && is_digit(*p));
             p++)
            ;
        err = iocd_buf_printf(&b, ",%.*s", (int)(p - f), f);
        while (err == IOCD_OK && p < end && *p == ' ')
            p++;
        if (err == IOCD_OK &&
            (strncmp(p, "=~", 2) == 0 || strncmp(p, "!~", 2) == 0 || strncmp(p, "!=", 2) == 0)) {
            err = iocd_buf_append(&b, p, 2);
            p += 2;
        } else if (err == IOCD_OK && *p == '=') {
            err = iocd_buf_putc(&b, '=');
            p++;
        } else if (err == IOCD_OK) {
            snprintf(errbuf, errlen, "bad filter \"%.100s\": want name=\"value\" (=, !=, =~, !~)",
                     filters[i]);
            iocd_buf_fini(&b);
            return IOCD_EINVAL;
        }
        while (err == IOCD_OK && p < end && *p == ' ')
            p++;
        if (err == IOCD_OK && (*p == '"' || *p == '\'' || *p == '`'))
            err = iocd_buf_append(&b, p, (size_t)(end - p));
        else if (err == IOCD_OK) { /* unquoted: the rest is the value */
            char *v = iocd_strndup(p, (size_t)(end - p));
            err = v != NULL ? external_put_quoted(&b, v) : IOCD_ENOMEM;
            iocd_free(v);
        }
    }
    if (err == IOCD_OK)
        err = iocd_buf_putc(&b, '}');
    if (err == IOCD_OK && query_selector_parse(b.data, sel, errbuf, errlen) != IOCD_OK) {
        char why[256];
        snprintf(why, sizeof(why), "%s", errbuf);
        snprintf(errbuf, errlen, "bad filter: %s", why);
        err = IOCD_EINVAL;
    } else if (err != IOCD_OK) {
        snprintf(errbuf, errlen, "bad filter: %s", iocd_strerror(err));
        err = err == IOCD_ENOMEM ? err : IOCD_EINVAL;
    }
    iocd_buf_fini(&b);
    return err;
}

/* ---- Silences in Alertmanager's shape ----------------------------------------------------- */

void external_silences_fini(external_silences *ss)
{
    size_t i;

    for (i = 0; i < ss->n; i++)
        query_selector_fini(&ss->s[i].sel);
    iocd_free(ss->s);
    ss->s = NULL;
    ss->n = 0;
}

/* Every silence of the center, parsed (alert_silences_list's JSON is the one source). */
static iocd_err silences_doc(alert_center *ac, iocd_jdoc *d)
{
    iocd_buf list;
    char why[256];
    iocd_err err;

    iocd_buf_init(&list, 0);
    err = alert_silences_list(ac, &list);
    if (err == IOCD_OK)
        err =
            iocd_jdoc_parse(list.data != NULL ? list.data : "[]", list.data != NULL ? list.len : 2,
                            LIST_NODES_MAX, d, why, sizeof(why));
    if (err == IOCD_OK && d->node[0].kind != IOCD_J_ARR) {
        iocd_jdoc_fini(d);
        err = IOCD_ECORRUPT;
    }
    if (err != IOCD_OK && err != IOCD_ENOMEM)
        log_error("alerts", "the silence list does not parse", "err=%s", iocd_strerror(err));
    iocd_buf_fini(&list);
    return err;
}

static const char *num_or_str(const iocd_jdoc *d, uint32_t i)
{
    if (i == IOCD_JNONE)
        return NULL;
    if (d->node[i].kind == IOCD_J_NUM || d->node[i].kind == IOCD_J_STR)
        return iocd_jdoc_text(d, d->node[i].str);
    return NULL;
}

/* The active silences, with their selectors parsed. */
iocd_err external_silences_active(alert_center *ac, external_silences *out)
{
    iocd_jdoc d;
    uint32_t it;
    size_t n = 0;
    iocd_err err = silences_doc(ac, &d);

    memset(out, 0, sizeof(*out));
    if (err != IOCD_OK)
        return err;
    out->s = iocd_calloc(d.node[0].n + 1, sizeof(*out->s));
    if (out->s == NULL) {
        iocd_jdoc_fini(&d);
        return IOCD_ENOMEM;
    }
    for (it = d.node[0].child; it != IOCD_JNONE; it = d.node[it].next) {
        const char *state = iocd_jdoc_str(&d, iocd_jdoc_get(&d, it, "state"));
        const char *id = num_or_str(&d, iocd_jdoc_get(&d, it, "id"));
        const char *m = iocd_jdoc_str(&d, iocd_jdoc_get(&d, it, "matchers"));
        char why[256];
        if (state == NULL || strcmp(state, "active") != 0 || id == NULL || m == NULL)
            continue;
        if (query_selector_parse(m, &out->s[n].sel, why, sizeof(why)) != IOCD_OK)
            continue;
        snprintf(out->s[n].id, sizeof(out->s[n].id), "%s", id);
        n++;
    }
    out->n = n;
    iocd_jdoc_fini(&d);
    return IOCD_OK;
}

static iocd_err put_jstr(iocd_buf *b, const char *s)
{
    return iocd_buf_json_str(b, s != NULL ? s : "", s != NULL ? strlen(s) : 0);
}

/* One silence of alert_silences_list as a gettableSilence. */
static iocd_err silence_am_json(const iocd_jdoc *d, uint32_t it, iocd_buf *b)
{
    static const char *const ops[][2] = {
        { "false", "true" }, { "false", "false" }, { "true", "true" }, { "true", "false" }
    };
    const char *id = num_or_str(d, iocd_jdoc_get(d, it, "id"));
    const char *m = iocd_jdoc_str(d, iocd_jdoc_get(d, it, "matchers"));
    const char *state = iocd_jdoc_str(d, iocd_jdoc_get(d, it, "state"));
    query_selector sel = { NULL, 0 };
    char why[256];
    size_t i;
    iocd_err err;

    if (m != NULL && query_selector_parse(m, &sel, why, sizeof(why)) != IOCD_OK)
        sel.n = 0;
    err = iocd_buf_puts(b, "{\"id\":");
    if (err == IOCD_OK)
        err = put_jstr(b, id);
    if (err == IOCD_OK)
        err = iocd_buf_puts(b, ",\"status\":{\"state\":");
    if (err == IOCD_OK)
        err = put_jstr(b, state != NULL ? state : "expired");
    if (err == IOCD_OK)
        err = iocd_buf_puts(b, "},\"updatedAt\":");
    if (err == IOCD_OK)
        err = put_jstr(b, iocd_jdoc_str(d, iocd_jdoc_get(d, it, "created_at")));
    if (err == IOCD_OK)
        err = iocd_buf_puts(b, ",\"matchers\":[");
    for (i = 0; err == IOCD_OK && i < sel.n; i++) {
        err = iocd_buf_printf(b, "%s{\"name\":", i > 0 ? "," : "");
        if (err == IOCD_OK)
            err = put_jstr(b, sel.m[i].name);
        if (err == IOCD_OK)
            err = iocd_buf_puts(b, ",\"value\":");
        if (err == IOCD_OK)
            err = put_jstr(b, sel.m[i].value);
        if (err == IOCD_OK)
            err = iocd_buf_printf(b, ",\"isRegex\":%s,\"isEqual\":%s}", ops[sel.m[i].op][0],
                                  ops[sel.m[i].op][1]);
    }
    if (err == IOCD_OK)
        err = iocd_buf_puts(b, "],\"startsAt\":");
    if (err == IOCD_OK)
        err = put_jstr(b, iocd_jdoc_str(d, iocd_jdoc_get(d, it, "starts_at")));
    if (err == IOCD_OK)
        err = iocd_buf_puts(b, ",\"endsAt\":");
    if (err == IOCD_OK)
        err = put_jstr(b, iocd_jdoc_str(d, iocd_jdoc_get(d, it, "ends_at")));
    if (err == IOCD_OK)
        err = iocd_buf_puts(b, ",\"createdBy\":");
    if (err == IOCD_OK)
        err = put_jstr(b, iocd_jdoc_str(d, iocd_jdoc_get(d, it, "created_by")));
    if (err == IOCD_OK)
        err = iocd_buf_puts(b, ",\"comment\":");
    if (err == IOCD_OK)
        err = put_jstr(b, iocd_jdoc_str(d, iocd_jdoc_get(d, it, "comment")));
    query_selector_fini(&sel);
    return err == IOCD_OK ? iocd_buf_putc(b, '}') : err;
}

/* Alertmanager's filter of silences: the labels a silence's equality matchers name must
 * satisfy every filter matcher. */
static bool silence_passes(const iocd_jdoc *d, uint32_t it, const query_selector *filter)
{
    const char *m = iocd_jdoc_str(d, iocd_jdoc_get(d, it, "matchers"));
    query_selector sel = { NULL, 0 };
    iocd_buf labels;
    char why[256];
    bool ok;
    size_t i;

    if (filter == NULL)
        return true;
    if (m == NULL || query_selector_parse(m, &sel, why, sizeof(why)) != IOCD_OK)
        return false;
    iocd_buf_init(&labels, 0);
    for (i = 0; i < sel.n; i++)
        if (sel.m[i].op == QUERY_MATCH_EQ && sel.m[i].value[0] != '\0') {
            iocd_buf_append(&labels, sel.m[i].name, strlen(sel.m[i].name) + 1);
            iocd_buf_append(&labels, sel.m[i].value, strlen(sel.m[i].value) + 1);
        }
    ok = external_sel_matches(filter, labels.data != NULL ? labels.data : "", labels.len,
                              EXTERNAL_ANY_LABEL);
    iocd_buf_fini(&labels);
    query_selector_fini(&sel);
    return ok;
}

iocd_err alert_am_silences_list(alert_center *ac, const char *const *filters, size_t n_filters,
                                iocd_buf *out, char *errbuf, size_t errlen)
{
    query_selector filter = { NULL, 0 };
    iocd_jdoc d;
    uint32_t it;
    bool first = true;
    iocd_err err;

    if (n_filters > 0) {
        err = external_filter_parse(filters, n_filters, &filter, errbuf, errlen);
        if (err != IOCD_OK)
            return err;
    }
    err = silences_doc(ac, &d);
    if (err != IOCD_OK) {
        query_selector_fini(&filter);
        snprintf(errbuf, errlen, "the silences cannot be read: %s", iocd_strerror(err));
        return err;
    }
    err = iocd_buf_putc(out, '[');
    for (it = d.node[0].child; err == IOCD_OK && it != IOCD_JNONE; it = d.node[it].next) {
        if (!silence_passes(&d, it, n_filters > 0 ? &filter : NULL))
            continue;
        if (!first)
            err = iocd_buf_putc(out, ',');
        first = false;
        if (err == IOCD_OK)
            err = silence_am_json(&d, it, out);
    }
    if (err == IOCD_OK)
        err = iocd_buf_putc(out, ']');
    iocd_jdoc_fini(&d);
    query_selector_fini(&filter);
    return err;
}

iocd_err alert_am_silence_get(alert_center *ac, uint64_t id, iocd_buf *out)
{
    iocd_jdoc d;
    uint32_t it;
    char want[24];
    iocd_err err = silences_doc(ac, &d);

    if (err != IOCD_OK)
        return err;
    snprintf(want, sizeof(want), "%llu", (unsigned long long)id);
    err = IOCD_ENOTFOUND;
    for (it = d.node[0].child; it != IOCD_JNONE; it = d.node[it].next) {
        const char *have = num_or_str(&d, iocd_jdoc_get(&d, it, "id"));
        if (have != NULL && strcmp(have, want) == 0) {
            err = silence_am_json(&d, it, out);
            break;
        }
    }
    iocd_jdoc_fini(&d);
    return err;
}

static bool bool_field(const iocd_jdoc *d, uint32_t obj, const char *key, bool dflt, bool *out)
{
    uint32_t i = iocd_jdoc_get(d, obj, key);

    *out = dflt;
    if (iocd_jdoc_is_absent(d, i))
        return true;
    if (d->node[i].kind != IOCD_J_BOOL)
        return false;
    *out = d->node[i].truth;
    return true;
}

/* Alertmanager's matchers as iocd's selector text: {name="v", name!~"v", ...}. */
static iocd_err matchers_text(const iocd_jdoc *d, uint32_t arr, iocd_buf *sel, char *errbuf,
                              size_t errlen)
{
    uint32_t it;
    size_t k = 0;
    iocd_err err;

    if (iocd_jdoc_is_absent(d, arr) || d->node[arr].kind != IOCD_J_ARR || d->node[arr].n == 0) {
        snprintf(errbuf, errlen, "matchers: at least one matcher is required");
        return IOCD_EINVAL;
    }
    if (d->node[arr].n > MATCHERS_MAX) {
        snprintf(errbuf, errlen, "matchers: at most %d", MATCHERS_MAX);
        return IOCD_EINVAL;
    }
    err = iocd_buf_putc(sel, '{');
    for (it = d->node[arr].child; err == IOCD_OK && it != IOCD_JNONE; it = d->node[it].next) {
        const char *name = iocd_jdoc_str(d, iocd_jdoc_get(d, it, "name"));
        const char *value = iocd_jdoc_str(d, iocd_jdoc_get(d, it, "value"));
        bool is_regex, is_equal;
        k++;
        if (d->node[it].kind != IOCD_J_OBJ || name == NULL || value == NULL) {
            snprintf(errbuf, errlen, "matcher %zu: \"name\" and \"value\" (strings) are required",
                     k);
            return IOCD_EINVAL;
        }
        if (!external_name_valid(name)) {
            snprintf(errbuf, errlen, "matcher %zu: invalid label name \"%.100s\"", k, name);
            return IOCD_EINVAL;
        }
        if (!bool_field(d, it, "isRegex", false, &is_regex) ||
            !bool_field(d, it, "isEqual", true, &is_equal)) {
            snprintf(errbuf, errlen, "matcher %zu: isRegex and isEqual must be true or false", k);
            return IOCD_EINVAL;
        }
        err = iocd_buf_printf(sel, "%s%s%s", k > 1 ? ", " : "", name,
                              is_equal ? (is_regex ? "=~" : "=") : (is_regex ? "!~" : "!="));
        if (err == IOCD_OK)
            err = external_put_quoted(sel, value);
    }
    return err == IOCD_OK ? iocd_buf_putc(sel, '}') : err;
}

iocd_err alert_am_silence_add(alert_center *ac, const char *body, size_t len, uint64_t *id_out,
                              char *errbuf, size_t errlen)
{
    iocd_jdoc d;
    iocd_buf sel, out;
    iocd_json_obj made;
    query_selector check = { NULL, 0 };
    const char *by, *comment, *idtext, *s;
    int64_t now = iocd_now_ms(), starts = 0, ends = 0;
    uint64_t old_id = 0;
    char why[256];
    iocd_err err;

    err = iocd_jdoc_parse(body, len, SILENCE_NODES_MAX, &d, errbuf, errlen);
    if (err != IOCD_OK)
        return err == IOCD_ETOOBIG ? IOCD_EINVAL : err;
    iocd_buf_init(&sel, 1 << 20);
    iocd_buf_init(&out, 0);
    memset(&made, 0, sizeof(made));
    if (d.node[0].kind != IOCD_J_OBJ) {
        snprintf(errbuf, errlen,
                 "expected a JSON object: a silence with matchers, startsAt, "
                 "endsAt, createdBy and comment");
        err = IOCD_EPARSE;
        goto out;
    }
    err = matchers_text(&d, iocd_jdoc_get(&d, 0, "matchers"), &sel, errbuf, errlen);
    if (err != IOCD_OK)
        goto out;
    if (query_selector_parse(sel.data, &check, why, sizeof(why)) != IOCD_OK) {
        snprintf(errbuf, errlen, "matchers: %s", why);
        err = IOCD_EINVAL;
        goto out;
    }
    query_selector_fini(&check);
    by = iocd_jdoc_str(&d, iocd_jdoc_get(&d, 0, "createdBy"));
    comment = iocd_jdoc_str(&d, iocd_jdoc_get(&d, 0, "comment"));
    if (by == NULL || by[0] == '\0' || comment == NULL || comment[0] == '\0') {
        snprintf(errbuf, errlen, "createdBy and comment are required (strings)");
        err = IOCD_EINVAL;
        goto out;
    }
    s = iocd_jdoc_str(&d, iocd_jdoc_get(&d, 0, "startsAt"));
    if (s != NULL && s[0] != '\0' && query_time_parse(s, &starts) != IOCD_OK) {
        snprintf(errbuf, errlen, "startsAt must be an RFC 3339 time");
        err = IOCD_EINVAL;
        goto out;
    }
    s = iocd_jdoc_str(&d, iocd_jdoc_get(&d, 0, "endsAt"));
    if (s == NULL || query_time_parse(s, &ends) != IOCD_OK) {
        snprintf(errbuf, errlen, "endsAt (an RFC 3339 time) is required");
        err = IOCD_EINVAL;
        goto out;
    }
    if (ends <= now) {
        snprintf(errbuf, errlen, "end time can't be in the past");
        err = IOCD_EINVAL;
        goto out;
    }
    if (starts != 0 && ends <= starts) {
        snprintf(errbuf, errlen, "start time must be before end time");
        err = IOCD_EINVAL;
        goto out;
    }
    if (starts <= now)
        starts = 0; /* starts now, as Alertmanager does with a past start */
    /* An id updates that silence: it ends now and the new one takes its place. */
    idtext = num_or_str(&d, iocd_jdoc_get(&d, 0, "id"));
    if (idtext != NULL && idtext[0] != '\0') {
        char *end;
        old_id = strtoull(idtext, &end, 10);
        if (old_id == 0 || *end != '\0' || alert_silence_expire(ac, old_id, &out) != IOCD_OK) {
            snprintf(errbuf, errlen, "silence %.60s not found", idtext);
            err = IOCD_ENOTFOUND;
            goto out;
        }
        iocd_buf_reset(&out);
    }
    err = alert_silence_add(ac, sel.data, starts, ends, by, comment, &out, errbuf, errlen);
    if (err != IOCD_OK)
        goto out;
    if (iocd_json_object_parse(out.data, out.len, &made, why, sizeof(why)) != IOCD_OK ||
        (s = iocd_json_get(&made, "id", NULL)) == NULL) {
        snprintf(errbuf, errlen, "the silence was made but its id cannot be read");
        err = IOCD_ECORRUPT;
        goto out;
    }
    *id_out = strtoull(s, NULL, 10);
out:
    iocd_json_obj_fini(&made);
    iocd_buf_fini(&sel);
    iocd_buf_fini(&out);
    iocd_jdoc_fini(&d);
    return err;
}
