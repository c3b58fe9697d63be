/* common/jsonread.c - a reader for JSON that nests (Alertmanager's bodies: an array of alerts,
 * each with label objects), which the flat object reader of common/json.c refuses. It builds
 * a small tree: nodes in one array, linked by index, strings decoded into one buffer.
 * Bounded in depth (JDEPTH_MAX) and in nodes (the caller's max); strings must be valid UTF-8
 * without NUL, so their text can be used NUL-terminated. */
#include "common/common.h"

#include <stdio.h>
#include <string.h>

#define JDEPTH_MAX 16

typedef struct jparser {
    const char *p, *start, *end;
    iocd_jdoc *d;
    char *errbuf;
    size_t errlen;
} jparser;

static iocd_err jfail(jparser *j, const char *what)
{
    snprintf(j->errbuf, j->errlen, "invalid JSON at byte %zu: %s", (size_t)(j->p - j->start) + 1,
             what);
    return IOCD_EPARSE;
}

static void jws(jparser *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

static iocd_err jnew(jparser *j, iocd_jkind kind, uint32_t *out)
{
    iocd_jdoc *d = j->d;
    iocd_jnode *nd;

    if (d->n >= d->max) {
        snprintf(j->errbuf, j->errlen, "the body holds more than %zu JSON values", d->max);
        return IOCD_ETOOBIG;
    }
    if (d->n == d->cap) {
        size_t cap = d->cap != 0 ? d->cap * 2 : 64;
        iocd_jnode *g = iocd_realloc(d->node, cap * sizeof(*g));
        if (g == NULL)
            return IOCD_ENOMEM;
        d->node = g;
        d->cap = cap;
    }
    nd = &d->node[d->n];
    memset(nd, 0, sizeof(*nd));
    nd->kind = kind;
    nd->key = nd->str = nd->child = nd->next = IOCD_JNONE;
    *out = (uint32_t)d->n++;
    return IOCD_OK;
}

static iocd_err jmark(jparser *j, uint32_t *off)
{
    if (j->d->text.len >= UINT32_MAX / 2) {
        snprintf(j->errbuf, j->errlen, "the body is too large");
        return IOCD_ETOOBIG;
    }
    *off = (uint32_t)j->d->text.len;
    return IOCD_OK;
}

static bool hex4(const char *p, const char *end, uint32_t *out)
{
    uint32_t v = 0;
    int i, h;

    if (end - p < 4)
        return false;
    for (i = 0; i < 4; i++) {
        h = iocd_hexval(p[i]);
        if (h < 0)
            return false;
        v = v * 16 + (uint32_t)h;
    }
    *out = v;
    return true;
}

/* The string at j->p (its opening quote), decoded into the text buffer. */
static iocd_err jstring(jparser *j, uint32_t *off)
{
    iocd_buf *b = &j->d->text;
    iocd_err err = jmark(j, off);
    uint32_t cp, lo;

    j->p++;
    while (err == IOCD_OK) {
        unsigned char c;
        if (j->p >= j->end)
            return jfail(j, "unterminated string");
        c = (unsigned char)*j->p;
        if (c == '"') {
            j->p++;
            break;
        }
        if (c < 0x20)
            return jfail(j, "control character in string");
        j->p++;
        if (c != '\\') {
            err = iocd_buf_putc(b, (char)c);
            continue;
        }
        if (j->p >= j->end)
            return jfail(j, "unterminated string");
        c = (unsigned char)*j->p++;
        switch (c) {
        case '"':
        case '\\':
        case '/':
            err = iocd_buf_putc(b, (char)c);
            break;
        case 'b':
            err = iocd_buf_putc(b, '\b');
            break;
        case 'f':
            err = iocd_buf_putc(b, '\f');
            break;
        case 'n':
            err = iocd_buf_putc(b, '\n');
            break;
        case 'r':
            err = iocd_buf_putc(b, '\r');
            break;
        case 't':
            err = iocd_buf_putc(b, '\t');
            break;
        case 'u':
            if (!hex4(j->p, j->end, &cp))
                return jfail(j, "bad \\u escape");
            j->p += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF) { /* the first half of a surrogate pair */
                if (j->end - j->p < 6 || j->p[0] != '\\' || j->p[1] != 'u' ||
                    !hex4(j->p + 2, j->end, &lo) || lo < 0xDC00 || lo > 0xDFFF)
                    return jfail(j, "lone surrogate");
                j->p += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                return jfail(j, "lone surrogate");
            }
            if (cp == 0) /* strings are NUL-terminated (and label sets NUL-separated) */
                return jfail(j, "NUL in string");
            err = iocd_buf_utf8(b, cp);
            break;
        default:
            j->p--;
            return jfail(j, "unknown escape");
        }
    }
    if (err == IOCD_OK)
        err = iocd_buf_putc(b, '\0');
    if (err == IOCD_OK && !iocd_utf8_valid(b->data + *off, b->len - *off - 1))
        return jfail(j, "string is not valid UTF-8");
    return err;
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static iocd_err jnumber(jparser *j, uint32_t *off)
{
    const char *s = j->p;
    iocd_err err;

    if (j->p < j->end && *j->p == '-')
        j->p++;
    if (j->p >= j->end || !is_digit(*j->p))
        return jfail(j, "expected a value");
    if (*j->p == '0')
        j->p++;
    else
        while (j->p < j->end && is_digit(*j->p))
            j->p++;
    if (j->p < j->end && *j->p == '.') {
        j->p++;
        if (j->p >= j->end || !is_digit(*j->p))
            return jfail(j, "expected a digit");
        while (j->p < j->end && is_digit(*j->p))
            j->p++;
    }
    if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
        j->p++;
        if (j->p < j->end && (*j->p == '+' || *j->p == '-'))
            j->p++;
        if (j->p >= j->end || !is_digit(*j->p))
            return jfail(j, "expected a digit");
        while (j->p < j->end && is_digit(*j->p))
            j->p++;
    }
    err = jmark(j, off);
    if (err == IOCD_OK)
        err = iocd_buf_append(&j->d->text, s, (size_t)(j->p - s));
    return err == IOCD_OK ? iocd_buf_putc(&j->d->text, '\0') : err;
}

static bool literal(jparser *j, const char *word)
{
    size_t n = strlen(word);

    if ((size_t)(j->end - j->p) < n || memcmp(j->p, word, n) != 0)
        return false;
    j->p += n;
    return true;
}

static iocd_err jvalue(jparser *j, int depth, uint32_t *out)
{
    uint32_t me, last = IOCD_JNONE, child, key, off;
    bool obj;
    char close;
    iocd_err err;

    jws(j);
    if (j->p >= j->end)
        return jfail(j, "expected a value");
    if (*j->p == '"') {
        err = jnew(j, IOCD_J_STR, &me);
        if (err == IOCD_OK)
            err = jstring(j, &off);
        if (err == IOCD_OK)
            j->d->node[me].str = off;
        *out = me;
        return err;
    }
    if (*j->p != '{' && *j->p != '[') {
        const char *s = j->p;
        if (literal(j, "true") || literal(j, "false")) {
            err = jnew(j, IOCD_J_BOOL, &me);
            if (err == IOCD_OK)
                j->d->node[me].truth = *s == 't';
        } else if (literal(j, "null")) {
            err = jnew(j, IOCD_J_NULL, &me);
        } else {
            err = jnew(j, IOCD_J_NUM, &me);
            if (err == IOCD_OK)
                err = jnumber(j, &off);
            if (err == IOCD_OK)
                j->d->node[me].str = off;
        }
        *out = me;
        return err;
    }
    obj = *j->p == '{';
    close = obj ? '}' : ']';
    if (depth >= JDEPTH_MAX)
        return jfail(j, "nested too deeply");
    err = jnew(j, obj ? IOCD_J_OBJ : IOCD_J_ARR, &me);
    if (err != IOCD_OK)
        return err;
    *out = me;
    j->p++;
    jws(j);
    if (j->p < j->end && *j->p == close) {
        j->p++;
        return IOCD_OK;
    }
    for (;;) {
        key = IOCD_JNONE;
        jws(j);
        if (obj) {
            if (j->p >= j->end || *j->p != '"')
                return jfail(j, "expected a key in quotes");
            err = jstring(j, &key);
            if (err != IOCD_OK)
                return err;
            jws(j);
            if (j->p >= j->end || *j->p != ':')
                return jfail(j, "expected ':'");
            j->p++;
        }
        err = jvalue(j, depth + 1, &child);
        if (err != IOCD_OK)
            return err;
        j->d->node[child].key = key; /* by index: the array may have moved */
        if (last == IOCD_JNONE)
            j->d->node[me].child = child;
        else
            j->d->node[last].next = child;
        last = child;
        j->d->node[me].n++;
        jws(j);
        if (j->p < j->end && *j->p == ',') {
            j->p++;
            continue;
        }
        if (j->p < j->end && *j->p == close) {
            j->p++;
            return IOCD_OK;
        }
        return jfail(j, obj ? "expected ',' or '}'" : "expected ',' or ']'");
    }
}

void iocd_jdoc_fini(iocd_jdoc *d)
{
    iocd_free(d->node);
    iocd_buf_fini(&d->text);
    memset(d, 0, sizeof(*d));
}

iocd_err iocd_jdoc_parse(const char *text, size_t len, size_t max_nodes, iocd_jdoc *d, char *errbuf,
                         size_t errlen)
{
    jparser j;
    uint32_t root;
    iocd_err err;

    memset(d, 0, sizeof(*d));
    d->max = max_nodes;
    iocd_buf_init(&d->text, 0);
    j = (jparser){ text, text, text + len, d, errbuf, errlen };
    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) /* a byte order mark */
        j.p += 3;
    err = jvalue(&j, 0, &root);
    if (err == IOCD_OK) {
        jws(&j);
        if (j.p != j.end)
            err = jfail(&j, "text after the value");
    }
    if (err != IOCD_OK)
        iocd_jdoc_fini(d);
    if (err == IOCD_ENOMEM)
        snprintf(errbuf, errlen, "out of memory");
    return err;
}

const char *iocd_jdoc_text(const iocd_jdoc *d, uint32_t off)
{
    return d->text.data + off;
}

uint32_t iocd_jdoc_get(const iocd_jdoc *d, uint32_t obj, const char *key)
{
    uint32_t c;

    if (obj == IOCD_JNONE || d->node[obj].kind != IOCD_J_OBJ)
        return IOCD_JNONE;
    for (c = d->node[obj].child; c != IOCD_JNONE; c = d->node[c].next)
        if (strcmp(iocd_jdoc_text(d, d->node[c].key), key) == 0)
            return c;
    return IOCD_JNONE;
}

bool iocd_jdoc_is_absent(const iocd_jdoc *d, uint32_t i)
{
    return i == IOCD_JNONE || d->node[i].kind == IOCD_J_NULL;
}

const char *iocd_jdoc_str(const iocd_jdoc *d, uint32_t i)
{
    return i != IOCD_JNONE && d->node[i].kind == IOCD_J_STR ? iocd_jdoc_text(d, d->node[i].str)
                                                            : NULL;
}
