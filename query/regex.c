/* query/regex.c - Prometheus regex matchers on PCRE2; the only file that sees <pcre2.h>.
 * Prometheus (Go RE2) anchors every label regex and lets "." match newlines; we compile
 * "^(?s:PATTERN)$" to match. PCRE2 backtracks where RE2 does not, so each match runs under
 * match and depth limits: a pathological pattern fails to match instead of hanging a query. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "query/query_int.h"

#include <pcre2.h>
#include <stdio.h>
#include <string.h>

#define MATCH_LIMIT 1000000
#define DEPTH_LIMIT 10000

struct query_regex {
    pcre2_code *code;
    pcre2_match_context *mctx;
};

iocd_err query_regex_new(const char *pattern, query_regex **out, char *errbuf, size_t errlen)
{
    query_regex *re = NULL;
    size_t plen = strlen(pattern);
    char *wrapped = NULL;
    PCRE2_SIZE erroff = 0;
    int errcode = 0;
    iocd_err err = IOCD_OK;

    re = iocd_calloc(1, sizeof(*re));
    wrapped = iocd_malloc(plen + 8);
    if (re == NULL || wrapped == NULL) {
        err = IOCD_ENOMEM;
        goto out;
    }
    memcpy(wrapped, "^(?s:", 5);
    memcpy(wrapped + 5, pattern, plen);
    memcpy(wrapped + 5 + plen, ")$", 3);
    re->code = pcre2_compile((PCRE2_SPTR)wrapped, plen + 7, PCRE2_UTF, &errcode, &erroff, NULL);
    if (re->code == NULL) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(errcode, msg, sizeof(msg));
        snprintf(errbuf, errlen, "invalid regular expression \"%s\": %s", pattern,
                 (const char *)msg);
        err = IOCD_EPARSE;
        goto out;
    }
    pcre2_jit_compile(re->code, PCRE2_JIT_COMPLETE); /* optional: falls back to the interpreter */
    re->mctx = pcre2_match_context_create(NULL);
    if (re->mctx == NULL) {
        err = IOCD_ENOMEM;
        goto out;
    }
    pcre2_set_match_limit(re->mctx, MATCH_LIMIT);
    pcre2_set_depth_limit(re->mctx, DEPTH_LIMIT);
    *out = re;
    re = NULL;
out:
    iocd_free(wrapped);
    query_regex_free(re);
    return err;
}

bool query_regex_match(const query_regex *re, const char *s, size_t len)
{
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re->code, NULL);
    int rc;

    if (md == NULL)
        return false;
    rc = pcre2_match(re->code, (PCRE2_SPTR)s, len, 0, 0, md, re->mctx);
    pcre2_match_data_free(md);
    if (rc == PCRE2_ERROR_MATCHLIMIT || rc == PCRE2_ERROR_DEPTHLIMIT)
        iocd_metric_add(iocd_counter("iocd_regex_limit_hits_total",
                                     "Regex matches abandoned at the backtracking limit."),
                        1);
    return rc > 0;
}

void query_regex_free(query_regex *re)
{
    if (re == NULL)
        return;
    pcre2_match_context_free(re->mctx);
    pcre2_code_free(re->code);
    iocd_free(re);
}

/* Appends group g of the match (nothing when it did not take part). */
static iocd_err put_group(iocd_buf *out, const char *s, const PCRE2_SIZE *ov, int rc, long g)
{
    if (g < 0 || g >= rc || ov[2 * g] == PCRE2_UNSET)
        return IOCD_OK;
    return iocd_buf_append(out, s + ov[2 * g], ov[2 * g + 1] - ov[2 * g]);
}

static bool is_name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

/* The group number a $reference names: digits are a number, anything else a group name
 * (-1: no such group, which expands to nothing, as Go does). */
static long group_of(const query_regex *re, const char *name, size_t len)
{
    char tmp[128];
    size_t i;
    long g = 0;
    int rc;

    for (i = 0; i < len && name[i] >= '0' && name[i] <= '9'; i++)
        g = g < 100000 ? g * 10 + (name[i] - '0') : g;
    if (i == len)
        return g;
    if (len >= sizeof(tmp))
        return -1;
    memcpy(tmp, name, len);
    tmp[len] = '\0';
    rc = pcre2_substring_number_from_name(re->code, (PCRE2_SPTR)tmp);
    return rc > 0 ? rc : -1;
}

bool query_regex_expand(const query_regex *re, const char *s, size_t len, const char *tmpl,
                        iocd_buf *out, iocd_err *err_out)
{
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re->code, NULL);
    const PCRE2_SIZE *ov;
    const char *p = tmpl;
    iocd_err err = IOCD_OK;
    int rc;

    *err_out = IOCD_OK;
    if (md == NULL) {
        *err_out = IOCD_ENOMEM;
        return false;
    }
    rc = pcre2_match(re->code, (PCRE2_SPTR)s, len, 0, 0, md, re->mctx);
    if (rc <= 0) {
        pcre2_match_data_free(md);
        return false;
    }
    ov = pcre2_get_ovector_pointer(md);
    while (*p != '\0' && err == IOCD_OK) {
        const char *name;
        size_t n;
        if (*p != '$') {
            err = iocd_buf_putc(out, *p++);
            continue;
        }
        p++;
        if (*p == '$') {
            err = iocd_buf_putc(out, *p++);
            continue;
        }
        if (*p == '{') {
            const char *close = strchr(p + 1, '}');
            for (n = 0; close != NULL && p + 1 + n < close && is_name_char(p[1 + n]); n++)
                ;
            if (close == NULL || n == 0 || p + 1 + n != close) {
                err = iocd_buf_putc(out, '$'); /* not a reference: kept as written */
                continue;
            }
            name = p + 1;
            p = close + 1;
        } else {
            for (n = 0; is_name_char(p[n]); n++)
                ;
            if (n == 0) {
                err = iocd_buf_putc(out, '$');
                continue;
            }
            name = p;
            p += n;
        }
        err = put_group(out, s, ov, rc, group_of(re, name, n));
    }
    pcre2_match_data_free(md);
    *err_out = err;
    return err == IOCD_OK;
}
