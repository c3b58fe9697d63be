/* query/lset.c - label sets as single strings of "name\0value\0" pairs sorted by name.
 * One allocation per set makes them cheap to hash, compare and copy, which is most of what
 * aggregation and vector matching do. Invariant: names are unique and ascending. */
#include "query/query_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void query_labels_each(const char *labels, size_t len, query_label_fn fn, void *ud)
{
    const char *p = labels, *end = labels + len;

    while (p < end) {
        const char *name = p, *value = p + strlen(p) + 1;
        fn(ud, name, value);
        p = value + strlen(value) + 1;
    }
}

const char *lset_get(const lset *ls, const char *name)
{
    const char *p = ls->s, *end = ls->s + ls->len;

    while (p < end) {
        const char *value = p + strlen(p) + 1;
        int c = strcmp(p, name);
        if (c == 0)
            return value;
        if (c > 0)
            return NULL;
        p = value + strlen(value) + 1;
    }
    return NULL;
}

iocd_err lset_dup(const lset *src, lset *out)
{
    char *s = iocd_malloc(src->len + 1);

    if (s == NULL)
        return IOCD_ENOMEM;
    if (src->len > 0)
        memcpy(s, src->s, src->len);
    s[src->len] = '\0';
    out->s = s;
    out->len = src->len;
    return IOCD_OK;
}

void lset_fini(lset *ls)
{
    iocd_free(ls->s);
    ls->s = NULL;
    ls->len = 0;
}

bool lset_equal(const lset *a, const lset *b)
{
    return a->len == b->len && (a->len == 0 || memcmp(a->s, b->s, a->len) == 0);
}

uint64_t lset_hash(const char *s, size_t len)
{
    uint64_t h = 1469598103934665603ull ^ len, w; /* 8 bytes a step, then a final mix */
    size_t i = 0, k;

    for (; i + 8 <= len; i += 8) {
        memcpy(&w, s + i, 8);
        h = (h ^ w) * 0x9e3779b97f4a7c15ull;
        h ^= h >> 29;
    }
    for (w = 0, k = 0; i < len; i++, k += 8)
        w |= (uint64_t)(unsigned char)s[i] << k;
    h = (h ^ w) * 0x9e3779b97f4a7c15ull;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}

static bool listed(char *const *names, size_t n, const char *name)
{
    size_t i;

    for (i = 0; i < n; i++)
        if (strcmp(names[i], name) == 0)
            return true;
    return false;
}

iocd_err lset_filter(const lset *ls, char *const *names, size_t n, bool keep, bool drop_name,
                     lset *out)
{
    const char *p = ls->s, *end = ls->s + ls->len;
    char *s = iocd_malloc(ls->len + 1), *w = s;

    if (s == NULL)
        return IOCD_ENOMEM;
    while (p < end) {
        const char *value = p + strlen(p) + 1, *next = value + strlen(value) + 1;
        bool in = listed(names, n, p) == keep;
        if (in && drop_name && strcmp(p, "__name__") == 0)
            in = false;
        if (in) {
            memcpy(w, p, (size_t)(next - p));
            w += next - p;
        }
        p = next;
    }
    *w = '\0';
    out->s = s;
    out->len = (uint32_t)(w - s);
    return IOCD_OK;
}

iocd_err lset_set(const lset *ls, const char *name, const char *value, lset *out)
{
    size_t nlen = strlen(name), vlen = strlen(value);
    const char *p = ls->s, *end = ls->s + ls->len;
    char *s = iocd_malloc(ls->len + nlen + vlen + 3), *w = s;
    bool done = false;

    if (s == NULL)
        return IOCD_ENOMEM;
    while (p < end || !done) {
        int c = p < end ? strcmp(p, name) : 1;
        if (c >= 0 && !done) {
            if (vlen > 0) {
                memcpy(w, name, nlen + 1);
                w += nlen + 1;
                memcpy(w, value, vlen + 1);
                w += vlen + 1;
            }
            done = true;
        }
        if (p < end) {
            const char *v = p + strlen(p) + 1, *next = v + strlen(v) + 1;
            if (c != 0) {
                memcpy(w, p, (size_t)(next - p));
                w += next - p;
            }
            p = next;
        }
    }
    *w = '\0';
    out->s = s;
    out->len = (uint32_t)(w - s);
    return IOCD_OK;
}

typedef struct pair {
    const char *name, *value;
    size_t idx;
} pair;

static int pair_cmp(const void *a, const void *b)
{
    const pair *x = a, *y = b;
    int c = strcmp(x->name, y->name);

    if (c != 0)
        return c;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

iocd_err lset_from_pairs(const char **names, const char **values, size_t n, lset *out)
{
    pair *ps = iocd_malloc((n + 1) * sizeof(*ps));
    size_t i, total = 0;
    char *s, *w;

    if (ps == NULL)
        return IOCD_ENOMEM;
    for (i = 0; i < n; i++) {
        ps[i] = (pair){ names[i], values[i], i };
        total += strlen(names[i]) + strlen(values[i]) + 2;
    }
    iocd_qsort(ps, n, sizeof(*ps), pair_cmp);
    s = iocd_malloc(total + 1);
    if (s == NULL) {
        iocd_free(ps);
        return IOCD_ENOMEM;
    }
    w = s;
    for (i = 0; i < n; i++) {
        size_t nl, vl;
        if (i + 1 < n && strcmp(ps[i].name, ps[i + 1].name) == 0)
            continue; /* the later one wins */
        if (ps[i].value[0] == '\0')
            continue; /* an empty value is no label */
        nl = strlen(ps[i].name) + 1;
        vl = strlen(ps[i].value) + 1;
        memcpy(w, ps[i].name, nl);
        w += nl;
        memcpy(w, ps[i].value, vl);
        w += vl;
    }
    *w = '\0';
    iocd_free(ps);
    out->s = s;
    out->len = (uint32_t)(w - s);
    return IOCD_OK;
}

void lset_format(const lset *ls, char *out, size_t cap)
{
    const char *p = ls->s, *end = ls->s + ls->len;
    size_t n = 0;
    int w;

    if (cap == 0)
        return;
    out[0] = '\0';
    w = snprintf(out, cap, "{");
    n = w > 0 ? (size_t)w : 0;
    while (p < end && n < cap) {
        const char *value = p + strlen(p) + 1;
        w = snprintf(out + n, cap - n, "%s%s=\"%s\"", p == ls->s ? "" : ", ", p, value);
        if (w < 0)
            break;
        n += (size_t)w;
        p = value + strlen(value) + 1;
    }
    if (n < cap)
        snprintf(out + n, cap - n, "}");
}
