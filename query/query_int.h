/* query/query_int.h - declarations shared by the files of query/ only. */
#ifndef IOCD_QUERY_INT_H
#define IOCD_QUERY_INT_H

#include "query/query.h"

/* ---- Regular expressions (query/regex.c is the only file that includes <pcre2.h>) ------- */

/* Compiles pattern with Prometheus' semantics: fully anchored, "." matches newlines, UTF-8.
 * Errors: IOCD_EPARSE with PCRE2's message and offset in errbuf. */
iocd_err query_regex_new(const char *pattern, query_regex **out, char *errbuf, size_t errlen);
/* True when the whole of s matches. A match that runs into PCRE2's backtracking limits counts
 * as no match (and is counted in /metrics), never as a hang. */
bool query_regex_match(const query_regex *re, const char *s, size_t len);
void query_regex_free(query_regex *re);

#endif
