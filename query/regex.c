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
