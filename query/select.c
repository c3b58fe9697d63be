/* query/select.c - PromQL series selectors: parsing `metric{label op "value", ...}` and
 * picking the series they match through the store's postings.
 * Selection: every matcher that cannot match the empty string ("positive") yields a
 * candidate set from the postings of the label values it accepts; the sets are intersected,
 * then each candidate's labels are checked against every matcher (so !=, !~ and matchers
 * that accept "" follow Prometheus' rule that a missing label has the empty value). */
#include "query/query_int.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- Parsing --------------------------------------------------------------------------- */

typedef pq_lexer lexer;

#define lex_error  pq_lex_error
#define lex_string pq_lex_string

iocd_err pq_lex_error(lexer *lx, const char *fmt, ...)
{
    va_list ap;
    int n;

    n = snprintf(lx->errbuf, lx->errlen, "1:%d: parse error: ", (int)(lx->p - lx->src) + 1);
    if (n > 0 && (size_t)n < lx->errlen) {
        va_start(ap, fmt);
        vsnprintf(lx->errbuf + n, lx->errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return IOCD_EPARSE;
}

static void skip_space(lexer *lx)
{
    while (*lx->p == ' ' || *lx->p == '\t' || *lx->p == '\n' || *lx->p == '\r')
        lx->p++;
}

static bool is_ident_start(char c, bool metric)
{
    return isalpha((unsigned char)c) || c == '_' || (metric && c == ':');
}

static bool is_ident(char c, bool metric)
{
    return is_ident_start(c, metric) || isdigit((unsigned char)c);
}

/* A PromQL string: "..." or '...' with Go escapes, or `...` raw. */
iocd_err pq_lex_string(lexer *lx, char **out)
{
    char quote = *lx->p;
    iocd_buf b;
    iocd_err err = IOCD_OK;

    iocd_buf_init(&b, 1 << 20);
    lx->p++;
    while (err == IOCD_OK) {
        char c = *lx->p;
        if (c == '\0' || (c == '\n' && quote != '`')) {
            iocd_buf_fini(&b);
            return lex_error(lx, "unterminated quoted string");
        }
        lx->p++;
        if (c == quote)
            break;
        if (c != '\\' || quote == '`') {
            err = iocd_buf_putc(&b, c);
            continue;
        }
        c = *lx->p++;
        switch (c) {
        case 'a':
            err = iocd_buf_putc(&b, '\a');
            break;
        case 'b':
            err = iocd_buf_putc(&b, '\b');
            break;
        case 'f':
            err = iocd_buf_putc(&b, '\f');
            break;
        case 'n':
            err = iocd_buf_putc(&b, '\n');
            break;
        case 'r':
            err = iocd_buf_putc(&b, '\r');
            break;
        case 't':
            err = iocd_buf_putc(&b, '\t');
            break;
        case 'v':
            err = iocd_buf_putc(&b, '\v');
            break;
        case '\\':
        case '"':
        case '\'':
            err = iocd_buf_putc(&b, c);
            break;
        case 'x':
        case 'u':
        case 'U': {
            int digits = c == 'x' ? 2 : c == 'u' ? 4 : 8, i, h;
            uint32_t cp = 0;
            for (i = 0; i < digits; i++) {
                h = iocd_hexval(lx->p[i]);
                if (h < 0) {
                    iocd_buf_fini(&b);
                    return lex_error(lx, "invalid escape sequence in string");
                }
                cp = cp * 16 + (uint32_t)h;
            }
            lx->p += digits;
            if (c == 'x')
                err = iocd_buf_putc(&b, (char)cp);
            else if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
                iocd_buf_fini(&b);
                return lex_error(lx, "escape sequence is an invalid Unicode code point");
            } else
                err = iocd_buf_utf8(&b, cp);
            break;
        }
        default:
            if (c >= '0' && c <= '7' && lx->p[0] >= '0' && lx->p[0] <= '7' && lx->p[1] >= '0' &&
                lx->p[1] <= '7') {
                int v = (c - '0') * 64 + (lx->p[0] - '0') * 8 + (lx->p[1] - '0');
                if (v > 255) {
                    iocd_buf_fini(&b);
                    return lex_error(lx, "octal escape value > 255");
                }
                lx->p += 2;
                err = iocd_buf_putc(&b, (char)v);
                break;
            }
            lx->p--;
            iocd_buf_fini(&b);
            return lex_error(lx, "unknown escape sequence");
        }
    }
    if (err != IOCD_OK) {
        iocd_buf_fini(&b);
        return err == IOCD_ETOOBIG ? lex_error(lx, "string too long") : err;
    }
    *out = iocd_buf_take(&b, NULL);
    return *out != NULL ? IOCD_OK : IOCD_ENOMEM;
}

static iocd_err add_matcher(query_selector *sel, char *name, char *value, query_match_op op,
                            lexer *lx)
{
    query_matcher *grown, *m;
    char why[256];
    iocd_err err = IOCD_OK;

    grown = iocd_realloc(sel->m, (sel->n + 1) * sizeof(*grown));
    if (grown == NULL) {
        iocd_free(name);
        iocd_free(value);
        return IOCD_ENOMEM;
    }
    sel->m = grown;
    m = &sel->m[sel->n++];
    m->name = name;
    m->value = value;
    m->op = op;
    m->re = NULL;
    if (op == QUERY_MATCH_RE || op == QUERY_MATCH_NRE) {
        err = query_regex_new(value, &m->re, why, sizeof(why));
        if (err == IOCD_EPARSE)
            err = lex_error(lx, "%s", why);
    }
    return err;
}

/* Parses the {...} of a selector at lx->p into sel (matchers appended); lx->p ends after
 * the closing brace. */
iocd_err pq_parse_braces(lexer *lx, query_selector *sel)
{
    iocd_err err = IOCD_OK;

    lx->p++;
    for (;;) {
        const char *start;
        char *name = NULL, *value = NULL;
        query_match_op op;
        skip_space(lx);
        if (*lx->p == '}')
            break;
        if (*lx->p == '"' || *lx->p == '\'' || *lx->p == '`') {
            err = lex_string(lx, &name); /* a quoted label name (Prometheus 3) */
        } else if (is_ident_start(*lx->p, false)) {
            start = lx->p;
            while (is_ident(*lx->p, false))
                lx->p++;
            name = iocd_strndup(start, (size_t)(lx->p - start));
            err = name == NULL ? IOCD_ENOMEM : IOCD_OK;
        } else {
            err = lex_error(lx,
                            *lx->p == '\0' ? "unexpected end of input inside braces"
                                           : "unexpected character inside braces: '%c'",
                            *lx->p);
        }
        if (err != IOCD_OK)
            return err;
        skip_space(lx);
        if (lx->p[0] == '=' && lx->p[1] == '~') {
            op = QUERY_MATCH_RE;
        } else if (lx->p[0] == '!' && lx->p[1] == '~') {
            op = QUERY_MATCH_NRE;
        } else if (lx->p[0] == '!' && lx->p[1] == '=') {
            op = QUERY_MATCH_NEQ;
        } else if (lx->p[0] == '=') {
            op = QUERY_MATCH_EQ;
        } else {
            iocd_free(name);
            err = lex_error(lx,
                            "unexpected %s in label matching, expected label "
                            "matching operator",
                            *lx->p == '\0' ? "end of input" : "character");
            return err;
        }
        lx->p += op == QUERY_MATCH_EQ ? 1 : 2;
        skip_space(lx);
        if (*lx->p != '"' && *lx->p != '\'' && *lx->p != '`') {
            iocd_free(name);
            err = lex_error(lx, "unexpected %s in label matching, expected string",
                            *lx->p == '\0' ? "end of input" : "character");
            return err;
        }
        err = lex_string(lx, &value);
        if (err != IOCD_OK) {
            iocd_free(name);
            return err;
        }
        err = add_matcher(sel, name, value, op, lx);
        if (err != IOCD_OK)
            return err;
        skip_space(lx);
        if (*lx->p == ',') {
            lx->p++;
            continue;
        }
        if (*lx->p != '}') {
            err = lex_error(lx,
                            *lx->p == '\0' ? "unexpected end of input inside braces"
                                           : "unexpected character inside braces: '%c'",
                            *lx->p);
            return err;
        }
        break;
    }
    lx->p++;
    return IOCD_OK;
}

iocd_err query_selector_parse(const char *text, query_selector *out, char *errbuf, size_t errlen)
{
    lexer lx = { text, text, errbuf, errlen };
    query_selector sel = { NULL, 0 };
    iocd_err err = IOCD_OK;
    bool positive = false;
    size_t i;

    skip_space(&lx);
    if (is_ident_start(*lx.p, true)) {
        const char *start = lx.p;
        char *name, *value;
        while (is_ident(*lx.p, true))
            lx.p++;
        name = iocd_strdup("__name__");
        value = iocd_strndup(start, (size_t)(lx.p - start));
        if (name == NULL || value == NULL) {
            iocd_free(name);
            iocd_free(value);
            err = IOCD_ENOMEM;
            goto out;
        }
        err = add_matcher(&sel, name, value, QUERY_MATCH_EQ, &lx);
        if (err != IOCD_OK)
            goto out;
        skip_space(&lx);
    }
    if (*lx.p == '{') {
        err = pq_parse_braces(&lx, &sel);
        if (err != IOCD_OK)
            goto out;
        skip_space(&lx);
    }
    if (*lx.p != '\0') {
        err = lex_error(&lx, "unexpected character: '%c'", *lx.p);
        goto out;
    }
    if (sel.n == 0) {
        err = lex_error(&lx, "vector selector must contain at least one non-empty matcher");
        goto out;
    }
    for (i = 0; i < sel.n; i++)
        if (!query_matcher_matches(&sel.m[i], "", 0))
            positive = true;
    if (!positive) {
        lx.p = text;
        err = lex_error(&lx, "vector selector must contain at least one non-empty matcher");
        goto out;
    }
    *out = sel;
    sel.m = NULL;
    sel.n = 0;
out:
    query_selector_fini(&sel);
    return err;
}

void query_selector_fini(query_selector *sel)
{
    size_t i;

    for (i = 0; i < sel->n; i++) {
        iocd_free(sel->m[i].name);
        iocd_free(sel->m[i].value);
        query_regex_free(sel->m[i].re);
    }
    iocd_free(sel->m);
    sel->m = NULL;
    sel->n = 0;
}

bool query_matcher_matches(const query_matcher *m, const char *value, size_t len)
{
    switch (m->op) {
    case QUERY_MATCH_EQ:
        return strlen(m->value) == len && memcmp(m->value, value, len) == 0;
    case QUERY_MATCH_NEQ:
        return !(strlen(m->value) == len && memcmp(m->value, value, len) == 0);
    case QUERY_MATCH_RE:
        return query_regex_match(m->re, value, len);
    case QUERY_MATCH_NRE:
        return !query_regex_match(m->re, value, len);
    }
    return false;
}

/* ---- Selecting ------------------------------------------------------------------------- */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

/* The ids of series whose label m->name has a value m accepts (m rejects ""). */
static iocd_err candidates(store *st, const query_matcher *m, uint64_t **ids_out, size_t *n_out)
{
    char **vals = NULL;
    size_t n_vals = 0, i, n = 0, cap = 0;
    uint64_t *ids = NULL;
    iocd_err err;

    if (m->op == QUERY_MATCH_EQ)
        return store_postings(st, m->name, m->value, ids_out, n_out);
    err = store_label_values(st, m->name, &vals, &n_vals);
    for (i = 0; err == IOCD_OK && i < n_vals; i++) {
        uint64_t *part = NULL;
        size_t n_part = 0;
        if (!query_matcher_matches(m, vals[i], strlen(vals[i])))
            continue;
        err = store_postings(st, m->name, vals[i], &part, &n_part);
        if (err == IOCD_OK && n + n_part > cap) {
            uint64_t *grown;
            cap = (n + n_part) * 2;
            grown = iocd_realloc(ids, cap * sizeof(*ids));
            if (grown == NULL)
                err = IOCD_ENOMEM;
            else
                ids = grown;
        }
        if (err == IOCD_OK && n_part > 0) {
            memcpy(ids + n, part, n_part * sizeof(*ids));
            n += n_part;
        }
        iocd_free(part);
    }
    for (i = 0; i < n_vals; i++)
        iocd_free(vals[i]);
    iocd_free(vals);
    if (err != IOCD_OK) {
        iocd_free(ids);
        return err;
    }
    iocd_qsort(ids, n, sizeof(*ids), cmp_u64); /* a series has one value per label: no dups */
    *ids_out = ids;
    *n_out = n;
    return IOCD_OK;
}

static size_t intersect(uint64_t *a, size_t na, const uint64_t *b, size_t nb)
{
    size_t i = 0, j = 0, n = 0;

    while (i < na && j < nb) {
        if (a[i] < b[j])
            i++;
        else if (a[i] > b[j])
            j++;
        else {
            a[n++] = a[i];
            i++;
            j++;
        }
    }
    return n;
}

typedef struct check_ctx {
    const query_selector *sel;
    bool *seen; /* per matcher: its label was present */
    bool ok;
} check_ctx;

static iocd_err check_label(void *ud, const char *name, size_t name_len, const char *value,
                            size_t value_len)
{
    check_ctx *c = ud;
    size_t i;

    for (i = 0; i < c->sel->n && c->ok; i++) {
        const query_matcher *m = &c->sel->m[i];
        if (strlen(m->name) != name_len || memcmp(m->name, name, name_len) != 0)
            continue;
        c->seen[i] = true;
        if (!query_matcher_matches(m, value, value_len))
            c->ok = false;
    }
    return IOCD_OK;
}

iocd_err query_select(store *st, const query_selector *sel, uint64_t **ids_out, size_t *n_out)
{
    uint64_t *ids = NULL, *part;
    size_t n = 0, n_part, i, kept = 0;
    bool have = false, *seen = NULL;
    iocd_err err = IOCD_OK;

    for (i = 0; err == IOCD_OK && i < sel->n; i++) {
        if (query_matcher_matches(&sel->m[i], "", 0))
            continue;
        err = candidates(st, &sel->m[i], &part, &n_part);
        if (err != IOCD_OK)
            break;
        if (!have) {
            ids = part;
            n = n_part;
            have = true;
        } else {
            n = intersect(ids, n, part, n_part);
            iocd_free(part);
        }
        if (n == 0)
            break;
    }
    if (err == IOCD_OK && !have)
        err = store_series_all(st, &ids, &n); /* unreachable for parsed selectors */
    /* When every matcher was an equality used for the postings, the intersection is exact. */
    for (i = 0; err == IOCD_OK && have && i < sel->n; i++)
        if (sel->m[i].op != QUERY_MATCH_EQ || sel->m[i].value[0] == '\0')
            break;
    if (err == IOCD_OK && have && i == sel->n) {
        *ids_out = ids;
        *n_out = n;
        return IOCD_OK;
    }
    seen = err == IOCD_OK ? iocd_calloc(sel->n + 1, sizeof(*seen)) : NULL;
    if (err == IOCD_OK && seen == NULL)
        err = IOCD_ENOMEM;
    for (i = 0; err == IOCD_OK && i < n; i++) {
        check_ctx c = { sel, seen, true };
        size_t j;
        memset(seen, 0, sel->n * sizeof(*seen));
        err = store_series_labels(st, ids[i], check_label, &c);
        if (err == IOCD_ENOTFOUND) {
            err = IOCD_OK;
            continue;
        }
        for (j = 0; c.ok && j < sel->n; j++)
            if (!seen[j] && !query_matcher_matches(&sel->m[j], "", 0))
                c.ok = false;
        if (c.ok)
            ids[kept++] = ids[i];
    }
    iocd_free(seen);
    if (err != IOCD_OK) {
        iocd_free(ids);
        return err;
    }
    *ids_out = ids;
    *n_out = kept;
    return IOCD_OK;
}
