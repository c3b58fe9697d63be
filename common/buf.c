/* common/buf.c - growable, capped byte buffers and the JSON/float encoders built on them.
 * Invariant: data is NUL-terminated whenever it is non-NULL; len never exceeds max. */
#include "common/common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void iocd_buf_init(iocd_buf *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max;
}

void iocd_buf_fini(iocd_buf *b)
{
    iocd_free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void iocd_buf_reset(iocd_buf *b)
{
    b->len = 0;
    if (b->data != NULL)
        b->data[0] = '\0';
}

iocd_err iocd_buf_grow_(iocd_buf *b, size_t extra)
{
    size_t need, cap;
    char *p;

    if (extra > SIZE_MAX - b->len - 1)
        return IOCD_ETOOBIG;
    need = b->len + extra;
    if (b->max != 0 && need > b->max)
        return IOCD_ETOOBIG;
    if (need + 1 <= b->cap)
        return IOCD_OK;
    cap = b->cap != 0 ? b->cap : 256;
    while (cap < need + 1)
        cap = cap > SIZE_MAX / 2 ? need + 1 : cap * 2;
    p = iocd_realloc(b->data, cap);
    if (p == NULL)
        return IOCD_ENOMEM;
    b->data = p;
    b->cap = cap;
    return IOCD_OK;
}

iocd_err iocd_buf_append(iocd_buf *b, const void *data, size_t len)
{
    iocd_err err = iocd_buf_reserve(b, len);

    if (err != IOCD_OK)
        return err;
    if (len != 0)
        memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
    return IOCD_OK;
}

iocd_err iocd_buf_puts(iocd_buf *b, const char *s)
{
    return iocd_buf_append(b, s, strlen(s));
}

iocd_err iocd_buf_putc(iocd_buf *b, char c)
{
    return iocd_buf_append(b, &c, 1);
}

iocd_err iocd_buf_vprintf(iocd_buf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    iocd_err err;
    int n;

    va_copy(ap2, ap);
    n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return IOCD_EINVAL;
    err = iocd_buf_reserve(b, (size_t)n);
    if (err != IOCD_OK)
        return err;
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return IOCD_OK;
}

iocd_err iocd_buf_printf(iocd_buf *b, const char *fmt, ...)
{
    va_list ap;
    iocd_err err;

    va_start(ap, fmt);
    err = iocd_buf_vprintf(b, fmt, ap);
    va_end(ap);
    return err;
}

/* Length of the valid UTF-8 sequence at s (1-4), or 0 if the bytes are not one. */
static size_t utf8_len(const unsigned char *s, size_t avail)
{
    size_t n, i;
    uint32_t cp;

    if (s[0] < 0x80)
        return 1;
    if (s[0] >= 0xC2 && s[0] <= 0xDF)
        n = 2, cp = s[0] & 0x1F;
    else if (s[0] >= 0xE0 && s[0] <= 0xEF)
        n = 3, cp = s[0] & 0x0F;
    else if (s[0] >= 0xF0 && s[0] <= 0xF4)
        n = 4, cp = s[0] & 0x07;
    else
        return 0;
    if (n > avail)
        return 0;
    for (i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return n;
}

bool iocd_utf8_valid(const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0, n;

    while (i < len) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        n = utf8_len(s + i, len - i);
        if (n == 0)
            return false;
        i += n;
    }
    return true;
}

iocd_err iocd_buf_json_str(iocd_buf *b, const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str;
    iocd_err err;
    size_t i = 0, run;
    char esc[8];

    /* Most strings (label names and values, metric names) need no escape: one copy. */
    for (run = 0; run < len && s[run] >= 0x20 && s[run] < 0x80 && s[run] != '"' && s[run] != '\\';
         run++)
        ;
    if (run == len) {
        err = iocd_buf_reserve(b, len + 2);
        if (err != IOCD_OK)
            return err;
        b->data[b->len] = '"';
        if (len > 0)
            memcpy(b->data + b->len + 1, s, len);
        b->data[b->len + 1 + len] = '"';
        b->len += len + 2;
        b->data[b->len] = '\0';
        return IOCD_OK;
    }
    err = iocd_buf_putc(b, '"');
    while (err == IOCD_OK && i < len) {
        run = i;
        while (run < len && s[run] >= 0x20 && s[run] < 0x80 && s[run] != '"' && s[run] != '\\')
            run++;
        if (run > i) {
            err = iocd_buf_append(b, s + i, run - i);
            i = run;
            continue;
        }
        if (s[i] >= 0x80) {
            size_t n = utf8_len(s + i, len - i);
            if (n == 0) {
                err = iocd_buf_puts(b, "\xEF\xBF\xBD");
                i++;
            } else {
                err = iocd_buf_append(b, s + i, n);
                i += n;
            }
            continue;
        }
        switch (s[i]) {
        case '"':
            err = iocd_buf_puts(b, "\\\"");
            break;
        case '\\':
            err = iocd_buf_puts(b, "\\\\");
            break;
        case '\n':
            err = iocd_buf_puts(b, "\\n");
            break;
        case '\r':
            err = iocd_buf_puts(b, "\\r");
            break;
        case '\t':
            err = iocd_buf_puts(b, "\\t");
            break;
        default:
            snprintf(esc, sizeof(esc), "\\u%04x", s[i]);
            err = iocd_buf_puts(b, esc);
            break;
        }
        i++;
    }
    if (err == IOCD_OK)
        err = iocd_buf_putc(b, '"');
    return err;
}

iocd_err iocd_buf_utf8(iocd_buf *b, uint32_t cp)
{
    char u[4];
    size_t n;

    if (cp < 0x80) {
        u[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (char)(0xC0 | (cp >> 6));
        u[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        u[0] = (char)(0xE0 | (cp >> 12));
        u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        u[0] = (char)(0xF0 | (cp >> 18));
        u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    return iocd_buf_append(b, u, n);
}

/* Shortest decimal that reads back as v, written without an exponent (as Go's
 * strconv.FormatFloat(v, 'f', -1, 64), which Prometheus uses). */
/* ---- Floats ----------------------------------------------------------------------------
 * Prometheus writes a float as Go's strconv.FormatFloat(v, 'f', -1, 64): the shortest decimal
 * that reads back as v, in fixed notation, the nearest one when several are as short. The
 * exact path below finds it with 128-bit integers for the magnitudes answers usually have
 * (about 1e-6 to 2^52, fractions included); anything else takes the general path after it,
 * which asks printf and strtod (several microseconds a value). */

#ifdef __SIZEOF_INT128__
typedef unsigned __int128 u128;

/* Whether [lo, hi] / 2^s holds an integer (bounds included when inc); *count_out says how
 * many, capped at 2. */
static bool ints_in(u128 lo, u128 hi, int s, bool inc, int *count_out)
{
    u128 mask = ((u128)1 << s) - 1;
    u128 first = (lo >> s) + ((lo & mask) != 0 || !inc ? 1 : 0);
    u128 end = (hi >> s) + ((hi & mask) == 0 && !inc ? 0 : 1); /* one past the last */

    *count_out = first >= end ? 0 : end - first >= 2 ? 2 : 1;
    return first < end;
}

/* The shortest decimal of v > 0 as an integer c and p decimal places (v ~ c / 10^p), exactly;
 * false when v is outside the magnitudes this handles. */
static bool float_shortest(double v, uint64_t *c_out, int *p_out)
{
    uint64_t bits, m, c;
    int be, q, s, p, p_first, count;
    u128 lo, hi, mid, scale, r, half;
    bool inc, below;

    memcpy(&bits, &v, sizeof(bits));
    be = (int)((bits >> 52) & 0x7ff);
    if (be == 0 || be == 0x7ff)
        return false; /* subnormal, zero, infinite or NaN */
    m = (bits & ((UINT64_C(1) << 52) - 1)) | (UINT64_C(1) << 52);
    q = 1075 - be; /* v = m / 2^q */
    if (q <= 0 || q > 100)
        return false; /* an integer of 2^53 or more, or below about 1e-15 */
    /* The reals that read back as v, scaled by 2^s: [lo, hi], halfway to each neighbour
     * (the one below is closer when m is a power of two); strtod rounds a tie to the even
     * mantissa, so the bounds belong to v when m is even. */
    s = q + 2;
    below = m == (UINT64_C(1) << 52) && be > 1;
    lo = ((u128)m << 2) - (below ? 1 : 2);
    hi = ((u128)m << 2) + 2;
    mid = (u128)m << 2;
    inc = (m & 1) == 0;
    /* Start at 14 or 15 significant digits, where at most one decimal is that close. */
    p = 13 - (int)floor((double)(be - 1023) * 0.30102999566398120);
    if (p < 0)
        p = 0;
    if (p > 21)
        return false; /* 10^p times the bounds must fit in 128 bits */
    for (scale = 1, count = 0; count < p; count++)
        scale *= 10;
    p_first = p;
    while (!ints_in(lo * scale, hi * scale, s, inc, &count)) {
        if (++p > 21)
            return false;
        scale *= 10;
    }
    /* Several that close (only past 15 digits, or when starting lower than needed): fewer
     * places may do; step down while they do. */
    while (count > 1 && p > 0 && p == p_first) {
        int c2;
        if (!ints_in(lo * (scale / 10), hi * (scale / 10), s, inc, &c2))
            break;
        p--;
        p_first = p;
        scale /= 10;
        count = c2;
    }
    /* The nearest to v at p places (a tie to the even one, as printf rounds). */
    r = mid * scale;
    half = (u128)1 << (s - 1);
    if ((r >> s) >= (u128)UINT64_C(10000000000000000000))
        return false;
    c = (uint64_t)(r >> s);
    r &= ((u128)1 << s) - 1;
    if (r > half || (r == half && (c & 1) != 0))
        c++;
    /* Unique at p: a shorter decimal would be c with trailing zeros. */
    while (p > 0 && c % 10 == 0) {
        c /= 10;
        p--;
    }
    *c_out = c;
    *p_out = p;
    return true;
}

/* Appends c / 10^p in fixed notation, with a leading '-' when neg. */
static iocd_err put_fixed(iocd_buf *b, bool neg, uint64_t c, int p)
{
    char tmp[48], *e = tmp + sizeof(tmp), *w = e;
    int k = 0;

    do {
        *--w = (char)('0' + c % 10);
        c /= 10;
        if (++k == p)
            *--w = '.';
    } while (c != 0);
    while (k < p) { /* 0.000ddd */
        *--w = '0';
        if (++k == p)
            *--w = '.';
    }
    if (*w == '.')
        *--w = '0';
    if (neg)
        *--w = '-';
    return iocd_buf_append(b, w, (size_t)(e - w));
}
#endif

iocd_err iocd_buf_float(iocd_buf *b, double v)
{
    char tmp[40], digits[24], out[400];
    int prec, exp10, nd = 0, pos = 0, i;
    const char *p;
    bool neg;

    if (isnan(v))
        return iocd_buf_puts(b, "NaN");
    if (isinf(v))
        return iocd_buf_puts(b, v > 0 ? "+Inf" : "-Inf");
    if (v == 0)
        return iocd_buf_puts(b, signbit(v) ? "-0" : "0");
#ifdef __SIZEOF_INT128__
    {
        uint64_t c;
        int places;
        if (float_shortest(fabs(v), &c, &places))
            return put_fixed(b, v < 0, c, places);
    }
#endif
    /* %.15e rounds exactly: when it round-trips, trimming its zeros gives the shortest form
     * (a shorter round-tripping decimal would be its prefix); else 16 or 17 digits do. Not so
     * for a subnormal (fewer bits, so several 15-digit decimals read back as it): from 1. */
    for (prec = isnormal(v) ? 15 : 1; prec <= 17; prec++) {
        snprintf(tmp, sizeof(tmp), "%.*e", prec - 1, v);
        if (strtod(tmp, NULL) == v)
            break;
    }
    /* tmp is [-]d.ddde[+-]xx: gather the digits and the exponent. */
    p = tmp;
    neg = *p == '-';
    if (neg)
        p++;
    for (; *p != 'e'; p++)
        if (*p >= '0' && *p <= '9')
            digits[nd++] = *p;
    exp10 = atoi(p + 1);
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    if (neg)
        out[pos++] = '-';
    if (exp10 < 0) {
        out[pos++] = '0';
        out[pos++] = '.';
        for (i = 0; i < -exp10 - 1; i++)
            out[pos++] = '0';
        for (i = 0; i < nd; i++)
            out[pos++] = digits[i];
    } else {
        for (i = 0; i <= exp10 || i < nd; i++) {
            if (i == exp10 + 1)
                out[pos++] = '.';
            out[pos++] = i < nd ? digits[i] : '0';
        }
    }
    return iocd_buf_append(b, out, (size_t)pos);
}

char *iocd_buf_take(iocd_buf *b, size_t *len_out)
{
    char *p = b->data;

    if (p == NULL) {
        p = iocd_malloc(1);
        if (p != NULL)
            p[0] = '\0';
    }
    if (len_out != NULL)
        *len_out = b->len;
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    return p;
}
