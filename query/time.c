/* query/time.c - PromQL durations and the HTTP API's time syntax (Unix seconds or RFC 3339).
 * All results are milliseconds; overflow is an error, never a wrap. */
#include "query/query.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    const char *unit;
    int64_t ms;
} duration_units[] = {
    /* "ms" must be tried before "m". */
    { "ms", 1 },       { "s", 1000 },      { "m", 60000 },         { "h", 3600000 },
    { "d", 86400000 }, { "w", 604800000 }, { "y", 31536000000LL },
};

iocd_err query_duration_parse(const char *s, bool allow_bare_seconds, int64_t *ms_out)
{
    const char *p = s;
    int64_t total = 0;
    size_t i;

    if (*p == '\0')
        return IOCD_EPARSE;
    if (allow_bare_seconds) {
        char *end;
        double secs = strtod(s, &end);
        if (end != s && *end == '\0') {
            if (!isfinite(secs) || secs < 0 || secs * 1000.0 > 9.2e18)
                return secs < 0 || isnan(secs) ? IOCD_EPARSE : IOCD_ETOOBIG;
            *ms_out = (int64_t)llround(secs * 1000.0);
            return IOCD_OK;
        }
    }
    while (*p != '\0') {
        int64_t n = 0;
        if (!isdigit((unsigned char)*p))
            return IOCD_EPARSE;
        while (isdigit((unsigned char)*p)) {
            if (n > (INT64_MAX - 9) / 10)
                return IOCD_ETOOBIG;
            n = n * 10 + (*p++ - '0');
        }
        for (i = 0; i < IOCD_ARRAY_LEN(duration_units); i++) {
            size_t ul = strlen(duration_units[i].unit);
            if (strncmp(p, duration_units[i].unit, ul) == 0) {
                if (n > INT64_MAX / duration_units[i].ms ||
                    total > INT64_MAX - n * duration_units[i].ms)
                    return IOCD_ETOOBIG;
                total += n * duration_units[i].ms;
                p += ul;
                break;
            }
        }
        if (i == IOCD_ARRAY_LEN(duration_units))
            return IOCD_EPARSE;
    }
    *ms_out = total;
    return IOCD_OK;
}

void query_duration_format(int64_t ms, char *out, size_t cap)
{
    static const struct {
        const char *unit;
        int64_t ms;
    } parts[] = {
        { "y", 31536000000LL }, { "w", 604800000 }, { "d", 86400000 }, { "h", 3600000 },
        { "m", 60000 },         { "s", 1000 },      { "ms", 1 },
    };
    size_t i, len = 0;

    if (cap == 0)
        return;
    out[0] = '\0';
    if (ms == 0) {
        snprintf(out, cap, "0s");
        return;
    }
    if (ms < 0) {
        len += (size_t)snprintf(out, cap, "-");
        ms = ms == INT64_MIN ? INT64_MAX : -ms;
    }
    for (i = 0; i < IOCD_ARRAY_LEN(parts) && len < cap; i++) {
        if (ms >= parts[i].ms) {
            len += (size_t)snprintf(out + len, cap - len, "%lld%s", (long long)(ms / parts[i].ms),
                                    parts[i].unit);
            ms %= parts[i].ms;
        }
    }
}

/* Days since 1970-01-01 of a proleptic Gregorian date (no timegm: it is not POSIX). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    int64_t era, yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static bool digits(const char *p, int n, int *out)
{
    int v = 0, i;

    for (i = 0; i < n; i++) {
        if (!isdigit((unsigned char)p[i]))
            return false;
        v = v * 10 + (p[i] - '0');
    }
    *out = v;
    return true;
}

static iocd_err parse_rfc3339(const char *s, int64_t *ms_out)
{
    static const int mdays[] = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    int y, mo, d, h, mi, sec, off_h = 0, off_m = 0, frac_ms = 0, scale = 100;
    const char *p = s + 19;
    int64_t t;

    if (strlen(s) < 20 || !digits(s, 4, &y) || s[4] != '-' || !digits(s + 5, 2, &mo) ||
        s[7] != '-' || !digits(s + 8, 2, &d) || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') ||
        !digits(s + 11, 2, &h) || s[13] != ':' || !digits(s + 14, 2, &mi) || s[16] != ':' ||
        !digits(s + 17, 2, &sec))
        return IOCD_EPARSE;
    if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h > 23 || mi > 59 || sec > 60)
        return IOCD_EPARSE;
    if (mo == 2 && d == 29 && !(y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)))
        return IOCD_EPARSE;
    if (*p == '.') {
        p++;
        if (!isdigit((unsigned char)*p))
            return IOCD_EPARSE;
        for (; isdigit((unsigned char)*p); p++) {
            frac_ms += (*p - '0') * scale;
            scale /= 10; /* digits past milliseconds are truncated */
        }
    }
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p == '-' ? -1 : 1;
        if (!digits(p + 1, 2, &off_h) || p[3] != ':' || !digits(p + 4, 2, &off_m) || off_h > 23 ||
            off_m > 59)
            return IOCD_EPARSE;
        off_h *= sign;
        off_m *= sign;
        p += 6;
    } else {
        return IOCD_EPARSE;
    }
    if (*p != '\0')
        return IOCD_EPARSE;
    t = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec;
    t -= (int64_t)off_h * 3600 + (int64_t)off_m * 60;
    *ms_out = t * 1000 + frac_ms;
    return IOCD_OK;
}

iocd_err query_time_parse(const char *s, int64_t *ms_out)
{
    char *end;
    double secs;

    if (*s == '\0')
        return IOCD_EPARSE;
    secs = strtod(s, &end);
    if (end != s && *end == '\0') {
        /* Prometheus bounds times to what fits its int64 ms; so do we. */
        if (!isfinite(secs) || fabs(secs) > 9.2e15)
            return IOCD_EPARSE;
        *ms_out = (int64_t)llround(secs * 1000.0);
        return IOCD_OK;
    }
    return parse_rfc3339(s, ms_out);
}
