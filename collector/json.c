/* collector/json.c - the strict JSON pull reader of json_int.h. One forward scan over the
 * caller's buffer, a state for what the grammar allows next and a bit stack for nesting, so
 * no allocation and no recursion whatever the input. Invariant: no read at or past
 * buf + len; every scanner checks the remaining length before looking at a byte. */
#include "collector/json_int.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define NUM_TEXT_MAX 400 /* longest number text handed to strtod */

/* What the grammar allows at j->pos. */
enum {
    ST_VALUE,       /* any value (top level, after ':') */
    ST_VALUE_COMMA, /* a value after ',' in an array: ']' here is a trailing comma */
    ST_ARR_FIRST,   /* a value or ']' */
    ST_OBJ_FIRST,   /* a key or '}' */
    ST_KEY,         /* a key after ',': '}' here is a trailing comma */
    ST_COLON,       /* ':' after a key */
    ST_NEXT,        /* ',' or the end of the open container */
    ST_DONE,        /* the top-level value is complete: only whitespace may follow */
    ST_ERROR,
};

/* Byte classes inside a string, one lookup per byte on the hot loop: controls 0x00-0x1f,
 * the quote 0x22, the backslash 0x5c, UTF-8 bytes 0x80-0xff. */
enum { CH_PLAIN, CH_QUOTE, CH_BACKSLASH, CH_CONTROL, CH_HIGH };

#define ROW(x) x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x
#define ROW_20 P, P, CH_QUOTE, P, P, P, P, P, P, P, P, P, P, P, P, P
#define ROW_50 P, P, P, P, P, P, P, P, P, P, P, P, CH_BACKSLASH, P, P, P
#define P      CH_PLAIN
#define H      CH_HIGH
static const unsigned char str_class[256] = {
    ROW(CH_CONTROL), ROW(CH_CONTROL), ROW_20, ROW(P), ROW(P), ROW_50, ROW(P), ROW(P),
    ROW(H),          ROW(H),          ROW(H), ROW(H), ROW(H), ROW(H), ROW(H), ROW(H),
};
#undef ROW
#undef ROW_20
#undef ROW_50
#undef P
#undef H

/* ---- UTF-8 ----------------------------------------------------------------------------- */

/* Length (2-4) of the valid multi-byte UTF-8 sequence at s, or 0. s[0] >= 0x80. */
static size_t utf8_seq(const unsigned char *s, size_t avail)
{
    unsigned char c = s[0], lo = 0x80, hi = 0xBF;
    size_t n, i;

    if (c >= 0xC2 && c <= 0xDF)
        n = 2;
    else if (c >= 0xE0 && c <= 0xEF)
        n = 3;
    else if (c >= 0xF0 && c <= 0xF4)
        n = 4;
    else
        return 0;
    if (n > avail)
        return 0;
    /* The second byte's range excludes overlong forms, surrogates and > U+10FFFF. */
    if (c == 0xE0)
        lo = 0xA0;
    else if (c == 0xED)
        hi = 0x9F;
    else if (c == 0xF0)
        lo = 0x90;
    else if (c == 0xF4)
        hi = 0x8F;
    if (s[1] < lo || s[1] > hi)
        return 0;
    for (i = 2; i < n; i++)
        if ((s[i] & 0xC0) != 0x80)
            return 0;
    return n;
}

bool col_utf8_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0, n;

    while (i < len) {
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        n = utf8_seq(p + i, len - i);
        if (n == 0)
            return false;
        i += n;
    }
    return true;
}

static size_t utf8_put(char *out, uint32_t cp)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* ---- Scanning -------------------------------------------------------------------------- */

static col_json_tok fail_at(col_json *j, size_t off, const char *msg)
{
    j->err = msg;
    j->err_off = off;
    j->state = ST_ERROR;
    j->tok = COL_JSON_ERROR;
    return COL_JSON_ERROR;
}

void col_json_init(col_json *j, const char *buf, size_t len)
{
    memset(j, 0, sizeof(*j));
    j->buf = buf;
    j->len = len;
    j->state = ST_VALUE;
    j->tok = COL_JSON_ERROR;
}

col_json_tok col_json_fail(col_json *j, const char *msg)
{
    return fail_at(j, j->off, msg);
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* The 4 hex digits at p (p + 4 <= end checked by the caller) as a code unit, or -1. */
static long hex4(const char *p)
{
    long v = 0;
    int i, d;

    for (i = 0; i < 4; i++) {
        d = iocd_hexval(p[i]);
        if (d < 0)
            return -1;
        v = v << 4 | d;
    }
    return v;
}

/* Scans the string whose opening quote is at p; sets the token span. */
static bool scan_string(col_json *j, size_t p)
{
    const unsigned char *b = (const unsigned char *)j->buf;
    size_t q = p + 1, n;
    bool escaped = false;
    long u, lo;

    for (;;) {
        while (q < j->len && str_class[b[q]] == CH_PLAIN)
            q++;
        if (q >= j->len) {
            fail_at(j, p, "unterminated string");
            return false;
        }
        switch (str_class[b[q]]) {
        case CH_QUOTE:
            j->ptr = j->buf + p + 1;
            j->tok_len = q - p - 1;
            j->escaped = escaped;
            j->pos = q + 1;
            return true;
        case CH_CONTROL:
            fail_at(j, q, "control character in string");
            return false;
        case CH_HIGH:
            n = utf8_seq(b + q, j->len - q);
            if (n == 0) {
                fail_at(j, q, "invalid UTF-8 in string");
                return false;
            }
            q += n;
            break;
        default: /* backslash */
            escaped = true;
            if (q + 1 >= j->len) {
                fail_at(j, p, "unterminated string");
                return false;
            }
            switch (b[q + 1]) {
            case '"':
            case '\\':
            case '/':
            case 'b':
            case 'f':
            case 'n':
            case 'r':
            case 't':
                q += 2;
                break;
            case 'u':
                if (j->len - q < 6 || (u = hex4(j->buf + q + 2)) < 0) {
                    fail_at(j, q, "invalid \\u escape");
                    return false;
                }
                if (u >= 0xDC00 && u <= 0xDFFF) {
                    fail_at(j, q, "lone surrogate in \\u escape");
                    return false;
                }
                if (u >= 0xD800 && u <= 0xDBFF) {
                    if (j->len - q < 12 || b[q + 6] != '\\' || b[q + 7] != 'u' ||
                        (lo = hex4(j->buf + q + 8)) < 0xDC00 || lo > 0xDFFF) {
                        fail_at(j, q, "lone surrogate in \\u escape");
                        return false;
                    }
                    q += 6;
                }
                q += 6;
                break;
            default:
                fail_at(j, q, "invalid escape in string");
                return false;
            }
            break;
        }
    }
}

static bool scan_number(col_json *j, size_t p)
{
    const char *b = j->buf;
    size_t q = p;
    bool frac = false;

    if (b[q] == '-')
        q++;
    if (q >= j->len || !is_digit(b[q])) {
        fail_at(j, q, "expected a digit");
        return false;
    }
    if (b[q] == '0') {
        q++;
        if (q < j->len && is_digit(b[q])) {
            fail_at(j, p, "leading zero in number");
            return false;
        }
    } else {
        while (q < j->len && is_digit(b[q]))
            q++;
    }
    if (q < j->len && b[q] == '.') {
        q++;
        if (q >= j->len || !is_digit(b[q])) {
            fail_at(j, q, "expected a digit after '.'");
            return false;
        }
        while (q < j->len && is_digit(b[q]))
            q++;
        frac = true;
    }
    if (q < j->len && (b[q] == 'e' || b[q] == 'E')) {
        q++;
        if (q < j->len && (b[q] == '+' || b[q] == '-'))
            q++;
        if (q >= j->len || !is_digit(b[q])) {
            fail_at(j, q, "expected a digit in the exponent");
            return false;
        }
        while (q < j->len && is_digit(b[q]))
            q++;
        frac = true;
    }
    j->ptr = b + p;
    j->tok_len = q - p;
    j->num_frac = frac;
    j->pos = q;
    return true;
}

static bool top_is_object(const col_json *j)
{
    return (j->stack >> (j->depth - 1) & 1) != 0;
}

static void after_value(col_json *j)
{
    j->state = j->depth == 0 ? ST_DONE : ST_NEXT;
}

static col_json_tok emit(col_json *j, col_json_tok tok, size_t off)
{
    j->tok = tok;
    j->off = off;
    return tok;
}

/* A value starting at byte p (not whitespace, p < len). */
static col_json_tok read_value(col_json *j, size_t p)
{
    static const struct {
        const char *word;
        size_t len;
        col_json_tok tok;
    } lits[] = { { "true", 4, COL_JSON_TRUE },
                 { "false", 5, COL_JSON_FALSE },
                 { "null", 4, COL_JSON_NULL } };
    char c = j->buf[p];
    size_t i;

    switch (c) {
    case '{':
    case '[':
        if (j->depth == COL_JSON_DEPTH_MAX)
            return fail_at(j, p, "nesting deeper than 64 levels");
        if (c == '{')
            j->stack |= (uint64_t)1 << j->depth;
        else
            j->stack &= ~((uint64_t)1 << j->depth);
        j->depth++;
        j->pos = p + 1;
        j->state = c == '{' ? ST_OBJ_FIRST : ST_ARR_FIRST;
        return emit(j, c == '{' ? COL_JSON_OBJ_BEGIN : COL_JSON_ARR_BEGIN, p);
    case '"':
        if (!scan_string(j, p))
            return COL_JSON_ERROR;
        after_value(j);
        return emit(j, COL_JSON_STRING, p);
    case 't':
    case 'f':
    case 'n':
        for (i = 0; i < IOCD_ARRAY_LEN(lits); i++) {
            if (lits[i].word[0] != c)
                continue;
            if (j->len - p < lits[i].len || memcmp(j->buf + p, lits[i].word, lits[i].len) != 0)
                return fail_at(j, p, "invalid literal");
            j->pos = p + lits[i].len;
            after_value(j);
            return emit(j, lits[i].tok, p);
        }
        return fail_at(j, p, "invalid literal"); /* not reached: every case has a literal */
    default:
        if (c != '-' && !is_digit(c))
            return fail_at(j, p, "expected a value");
        if (!scan_number(j, p))
            return COL_JSON_ERROR;
        after_value(j);
        return emit(j, COL_JSON_NUMBER, p);
    }
}

col_json_tok col_json_next(col_json *j)
{
    const char *b = j->buf;
    size_t p;
    char c;

    for (;;) {
        if (j->state == ST_ERROR)
            return COL_JSON_ERROR;
        p = j->pos;
        while (p < j->len && (b[p] == ' ' || b[p] == '\n' || b[p] == '\r' || b[p] == '\t'))
            p++;
        j->pos = p;
        if (p >= j->len) {
            if (j->state == ST_DONE)
                return emit(j, COL_JSON_END, p);
            return fail_at(j, p, "unexpected end of input");
        }
        c = b[p];
        switch (j->state) {
        case ST_DONE:
            return fail_at(j, p, "unexpected text after the value");
        case ST_COLON:
            if (c != ':')
                return fail_at(j, p, "expected ':'");
            j->pos = p + 1;
            j->state = ST_VALUE;
            continue;
        case ST_NEXT:
            if (c == ',') {
                j->pos = p + 1;
                j->state = top_is_object(j) ? ST_KEY : ST_VALUE_COMMA;
                continue;
            }
            if (top_is_object(j) ? c != '}' : c != ']')
                return fail_at(j, p,
                               top_is_object(j) ? "expected ',' or '}'" : "expected ',' or ']'");
            j->depth--;
            j->pos = p + 1;
            after_value(j);
            return emit(j, c == '}' ? COL_JSON_OBJ_END : COL_JSON_ARR_END, p);
        case ST_OBJ_FIRST:
        case ST_KEY:
            if (c == '}') {
                if (j->state == ST_KEY)
                    return fail_at(j, p, "trailing comma");
                j->depth--;
                j->pos = p + 1;
                after_value(j);
                return emit(j, COL_JSON_OBJ_END, p);
            }
            if (c != '"')
                return fail_at(j, p, "expected a string");
            if (!scan_string(j, p))
                return COL_JSON_ERROR;
            j->state = ST_COLON;
            return emit(j, COL_JSON_KEY, p);
        case ST_ARR_FIRST:
            if (c == ']') {
                j->depth--;
                j->pos = p + 1;
                after_value(j);
                return emit(j, COL_JSON_ARR_END, p);
            }
            return read_value(j, p);
        case ST_VALUE_COMMA:
            if (c == ']')
                return fail_at(j, p, "trailing comma");
            return read_value(j, p);
        default: /* ST_VALUE */
            return read_value(j, p);
        }
    }
}

iocd_err col_json_skip(col_json *j)
{
    unsigned base;

    switch (j->tok) {
    case COL_JSON_STRING:
    case COL_JSON_NUMBER:
    case COL_JSON_TRUE:
    case COL_JSON_FALSE:
    case COL_JSON_NULL:
        return IOCD_OK;
    case COL_JSON_OBJ_BEGIN:
    case COL_JSON_ARR_BEGIN:
        break;
    case COL_JSON_ERROR:
        return IOCD_EPARSE;
    default:
        col_json_fail(j, "expected a value");
        return IOCD_EPARSE;
    }
    base = j->depth - 1; /* depth once the container is closed */
    for (;;) {
        switch (col_json_next(j)) {
        case COL_JSON_ERROR:
            return IOCD_EPARSE;
        case COL_JSON_OBJ_END:
        case COL_JSON_ARR_END:
            if (j->depth == base)
                return IOCD_OK;
            break;
        default:
            break;
        }
    }
}

/* ---- Strings --------------------------------------------------------------------------- */

/* Decodes one unit of a validated string at s (s < end) into out (up to 4 bytes); returns
 * the bytes written and advances *s. */
static size_t unescape_one(const char **s, char *out)
{
    const char *p = *s;
    uint32_t cp;

    if (*p != '\\') {
        out[0] = *p;
        *s = p + 1;
        return 1;
    }
    switch (p[1]) {
    case 'b':
        out[0] = '\b';
        break;
    case 'f':
        out[0] = '\f';
        break;
    case 'n':
        out[0] = '\n';
        break;
    case 'r':
        out[0] = '\r';
        break;
    case 't':
        out[0] = '\t';
        break;
    case 'u':
        cp = (uint32_t)hex4(p + 2);
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            /* validated by scan_string: a low surrogate escape follows */
            cp = 0x10000 + ((cp - 0xD800) << 10) + ((uint32_t)hex4(p + 8) - 0xDC00);
            *s = p + 12;
        } else {
            *s = p + 6;
        }
        return utf8_put(out, cp);
    default: /* " \ / */
        out[0] = p[1];
        break;
    }
    *s = p + 2;
    return 1;
}

iocd_err col_json_str(const col_json *j, char *out, size_t cap, size_t *len_out)
{
    const char *s, *end;
    char unit[4];
    size_t n = 0, k;

    if (j->tok != COL_JSON_STRING && j->tok != COL_JSON_KEY)
        return IOCD_EINVAL;
    if (!j->escaped) {
        if (j->tok_len > cap)
            return IOCD_ETOOBIG;
        memcpy(out, j->ptr, j->tok_len);
        *len_out = j->tok_len;
        return IOCD_OK;
    }
    s = j->ptr;
    end = j->ptr + j->tok_len;
    while (s < end) {
        k = unescape_one(&s, unit);
        if (cap - n < k)
            return IOCD_ETOOBIG;
        memcpy(out + n, unit, k);
        n += k;
    }
    *len_out = n;
    return IOCD_OK;
}

bool col_json_str_eq(const col_json *j, const char *str, size_t len)
{
    const char *s, *end;
    char unit[4];
    size_t n = 0, k;

    if (j->tok != COL_JSON_STRING && j->tok != COL_JSON_KEY)
        return false;
    if (!j->escaped)
        return j->tok_len == len && memcmp(j->ptr, str, len) == 0;
    s = j->ptr;
    end = j->ptr + j->tok_len;
    while (s < end) {
        k = unescape_one(&s, unit);
        if (len - n < k || memcmp(str + n, unit, k) != 0)
            return false;
        n += k;
    }
    return n == len;
}

/* ---- Numbers --------------------------------------------------------------------------- */

/* Powers of ten exactly representable as doubles. */
static const double pow10_exact[] = { 1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                      1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                      1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22 };

/* Clinger's fast path: a decimal of at most 15 significant digits m and a power of ten
 * |e| <= 22 are both exact doubles, so one IEEE multiply or divide rounds correctly.
 * Returns false when the number needs strtod. */
static bool double_fast(const char *s, const char *end, double *out)
{
    uint64_t m = 0;
    int digits = 0, e10 = 0, ex = 0, ex_sign = 1;
    bool neg = false;
    double v;

    if (*s == '-') {
        neg = true;
        s++;
    }
    for (; s < end && is_digit(*s); s++) {
        if (m == 0 && *s == '0')
            continue;
        if (++digits > 15)
            return false;
        m = m * 10 + (uint64_t)(*s - '0');
    }
    if (s < end && *s == '.') {
        for (s++; s < end && is_digit(*s); s++) {
            e10--;
            if (m == 0 && *s == '0')
                continue;
            if (++digits > 15)
                return false;
            m = m * 10 + (uint64_t)(*s - '0');
        }
    }
    if (s < end) { /* exponent */
        s++;
        if (*s == '+' || *s == '-')
            ex_sign = *s++ == '-' ? -1 : 1;
        for (; s < end; s++) {
            if (ex > 10000)
                return false;
            ex = ex * 10 + (*s - '0');
        }
    }
    if (m == 0) {
        *out = neg ? -0.0 : 0.0;
        return true;
    }
    e10 += ex_sign * ex;
    if (e10 < -22 || e10 > 22)
        return false;
    v = (double)m;
    v = e10 < 0 ? v / pow10_exact[-e10] : v * pow10_exact[e10];
    *out = neg ? -v : v;
    return true;
}

iocd_err col_json_double(const col_json *j, double *out)
{
    char text[NUM_TEXT_MAX + 1];
    double v;

    if (j->tok != COL_JSON_NUMBER)
        return IOCD_EINVAL;
    if (double_fast(j->ptr, j->ptr + j->tok_len, &v)) {
        *out = v;
        return IOCD_OK;
    }
    if (j->tok_len > NUM_TEXT_MAX)
        return IOCD_ELIMIT;
    /* JSON number syntax is a subset of strtod's in the C locale, which we never change. */
    memcpy(text, j->ptr, j->tok_len);
    text[j->tok_len] = '\0';
    v = strtod(text, NULL);
    if (isinf(v))
        return IOCD_ELIMIT;
    *out = v;
    return IOCD_OK;
}

iocd_err col_json_int64(const col_json *j, int64_t *out)
{
    const char *s = j->ptr, *end = j->ptr + j->tok_len;
    uint64_t v = 0, max;
    bool neg = false;

    if (j->tok != COL_JSON_NUMBER)
        return IOCD_EINVAL;
    if (j->num_frac)
        return IOCD_EPARSE;
    if (*s == '-') {
        neg = true;
        s++;
    }
    max = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    for (; s < end; s++) {
        uint64_t d = (uint64_t)(*s - '0');
        if (v > (max - d) / 10)
            return IOCD_ELIMIT;
        v = v * 10 + d;
    }
    if (neg)
        *out = v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
    else
        *out = (int64_t)v;
    return IOCD_OK;
}
