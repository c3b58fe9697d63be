/* common/log.c - one line per event, logfmt or JSON, with per-message rate limiting.
 * A line is formatted in full on the caller's stack and written with one write(2), so lines
 * from different threads never interleave. The rate-limit table is guarded by a mutex. */
#include "common/common.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define LINE_MAX_LEN  4096
#define VALUE_MAX_LEN 1024
#define RL_SLOTS      64
#define RL_BURST      10 /* lines per key per window before suppression */
#define RL_WINDOW_NS  10000000000LL

static iocd_log_level log_level = IOCD_LOG_INFO;
static iocd_log_format log_format = IOCD_LOG_LOGFMT;
static int log_fd = 2;

typedef struct rl_slot {
    const char *module; /* static strings: compared by pointer, then by text */
    const char *msg;
    int64_t window_start_ns;
    uint32_t count;
    uint64_t suppressed;
} rl_slot;

static pthread_mutex_t rl_lock = PTHREAD_MUTEX_INITIALIZER;
static rl_slot rl_table[RL_SLOTS];
static uint64_t rl_total_suppressed;

static const char *const level_names[] = { "debug", "info", "warn", "error" };

iocd_err iocd_log_level_parse(const char *s, iocd_log_level *out)
{
    size_t i;

    for (i = 0; i < IOCD_ARRAY_LEN(level_names); i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (iocd_log_level)i;
            return IOCD_OK;
        }
    }
    if (strcmp(s, "warning") == 0) {
        *out = IOCD_LOG_WARN;
        return IOCD_OK;
    }
    return IOCD_EINVAL;
}

iocd_err iocd_log_format_parse(const char *s, iocd_log_format *out)
{
    if (strcmp(s, "logfmt") == 0)
        *out = IOCD_LOG_LOGFMT;
    else if (strcmp(s, "json") == 0)
        *out = IOCD_LOG_JSON;
    else
        return IOCD_EINVAL;
    return IOCD_OK;
}

void iocd_log_setup(iocd_log_level level, iocd_log_format format, int fd)
{
    log_level = level;
    log_format = format;
    log_fd = fd;
}

uint64_t iocd_log_suppressed(void)
{
    uint64_t n;

    pthread_mutex_lock(&rl_lock);
    n = rl_total_suppressed;
    pthread_mutex_unlock(&rl_lock);
    return n;
}

/* ---- Line assembly --------------------------------------------------------------------- */

typedef struct line {
    char buf[LINE_MAX_LEN];
    size_t len;
} line;

static void put(line *l, const char *s, size_t n)
{
    if (n > sizeof(l->buf) - 2 - l->len)
        n = sizeof(l->buf) - 2 - l->len; /* keep room for "\n" and NUL; long lines truncate */
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

static void puts_(line *l, const char *s)
{
    put(l, s, strlen(s));
}

static bool needs_quote(const char *v)
{
    if (*v == '\0')
        return true;
    for (; *v; v++)
        if (*v <= ' ' || *v == '"' || *v == '=' || *v == '\\' || (unsigned char)*v == 0x7f)
            return true;
    return false;
}

/* Appends v quoted and escaped (logfmt and JSON use the same escapes here). */
static void put_quoted(line *l, const char *v)
{
    char esc[8];

    puts_(l, "\"");
    for (; *v; v++) {
        unsigned char c = (unsigned char)*v;
        if (c == '"' || c == '\\') {
            char two[2] = { '\\', (char)c };
            put(l, two, 2);
        } else if (c == '\n') {
            puts_(l, "\\n");
        } else if (c == '\r') {
            puts_(l, "\\r");
        } else if (c == '\t') {
            puts_(l, "\\t");
        } else if (c < 0x20 || c == 0x7f) {
            snprintf(esc, sizeof(esc), "\\u%04x", c);
            puts_(l, esc);
        } else {
            put(l, v, 1);
        }
    }
    puts_(l, "\"");
}

static void put_field(line *l, const char *key, size_t key_len, const char *value, bool first)
{
    if (log_format == IOCD_LOG_JSON) {
        puts_(l, first ? "{" : ",");
        puts_(l, "\"");
        put(l, key, key_len);
        puts_(l, "\":");
        put_quoted(l, value);
    } else {
        if (!first)
            puts_(l, " ");
        put(l, key, key_len);
        puts_(l, "=");
        if (needs_quote(value))
            put_quoted(l, value);
        else
            puts_(l, value);
    }
}

/* The conversions come from the caller's kvfmt, which the compiler has already checked
 * against its arguments (iocd_log carries a printf attribute); here we only replay them. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
/* Formats one printf conversion starting at spec ('%'), consuming its argument from ap.
 * Returns the length of the conversion spec. Supports flags, width, precision and the
 * length modifiers hh h l ll z j t; '*' is not supported (our callers never use it). */
static size_t format_one(const char *spec, va_list *ap, char *out, size_t cap)
{
    char fmt[32];
    size_t n = 1;
    int lmod = 0; /* 0 none, 1 l, 2 ll, 3 z, 4 j, 5 t, 6 h/hh */
    char conv;

    while (spec[n] != '\0' && strchr("-+ #0123456789.", spec[n]) != NULL)
        n++;
    if (spec[n] == 'h') {
        lmod = 6;
        n += spec[n + 1] == 'h' ? 2 : 1;
    } else if (spec[n] == 'l') {
        lmod = spec[n + 1] == 'l' ? 2 : 1;
        n += (size_t)lmod;
    } else if (spec[n] == 'z' || spec[n] == 'j' || spec[n] == 't') {
        lmod = spec[n] == 'z' ? 3 : spec[n] == 'j' ? 4 : 5;
        n++;
    }
    conv = spec[n];
    if (conv == '\0' || n + 2 > sizeof(fmt)) {
        snprintf(out, cap, "%%!(bad)");
        return n;
    }
    n++;
    memcpy(fmt, spec, n);
    fmt[n] = '\0';
    switch (conv) {
    case 'd':
    case 'i':
        if (lmod == 1)
            snprintf(out, cap, fmt, va_arg(*ap, long));
        else if (lmod == 2)
            snprintf(out, cap, fmt, va_arg(*ap, long long));
        else if (lmod == 3)
            snprintf(out, cap, fmt, va_arg(*ap, ptrdiff_t));
        else if (lmod == 4)
            snprintf(out, cap, fmt, va_arg(*ap, intmax_t));
        else if (lmod == 5)
            snprintf(out, cap, fmt, va_arg(*ap, ptrdiff_t));
        else
            snprintf(out, cap, fmt, va_arg(*ap, int));
        break;
    case 'u':
    case 'x':
    case 'X':
    case 'o':
        if (lmod == 1)
            snprintf(out, cap, fmt, va_arg(*ap, unsigned long));
        else if (lmod == 2)
            snprintf(out, cap, fmt, va_arg(*ap, unsigned long long));
        else if (lmod == 3)
            snprintf(out, cap, fmt, va_arg(*ap, size_t));
        else if (lmod == 4)
            snprintf(out, cap, fmt, va_arg(*ap, uintmax_t));
        else if (lmod == 5)
            snprintf(out, cap, fmt, va_arg(*ap, size_t));
        else
            snprintf(out, cap, fmt, va_arg(*ap, unsigned));
        break;
    case 'f':
    case 'F':
    case 'g':
    case 'G':
    case 'e':
    case 'E':
        snprintf(out, cap, fmt, va_arg(*ap, double));
        break;
    case 'c':
        snprintf(out, cap, fmt, va_arg(*ap, int));
        break;
    case 's': {
        const char *s = va_arg(*ap, const char *);
        snprintf(out, cap, fmt, s != NULL ? s : "(null)");
        break;
    }
    case 'p':
        snprintf(out, cap, fmt, va_arg(*ap, void *));
        break;
    case '%':
        snprintf(out, cap, "%%");
        break;
    default:
        snprintf(out, cap, "%%!(bad)");
        break;
    }
    return n;
}
#pragma GCC diagnostic pop

/* Walks kvfmt ("key=%s other=%d lit=x") appending each pair as a field. */
static void put_kvs(line *l, const char *kvfmt, va_list *ap)
{
    const char *p = kvfmt;
    char value[VALUE_MAX_LEN], piece[VALUE_MAX_LEN];

    while (*p != '\0') {
        const char *key, *eq;
        size_t vlen = 0;

        while (*p == ' ')
            p++;
        if (*p == '\0')
            break;
        key = p;
        eq = strchr(p, '=');
        if (eq == NULL)
            break;
        p = eq + 1;
        /* The value runs to the next space outside a conversion. */
        while (*p != '\0' && *p != ' ') {
            if (*p == '%') {
                size_t n = format_one(p, ap, piece, sizeof(piece));
                size_t pl = strlen(piece);
                if (pl > sizeof(value) - 1 - vlen)
                    pl = sizeof(value) - 1 - vlen;
                memcpy(value + vlen, piece, pl);
                vlen += pl;
                p += n;
            } else {
                if (vlen < sizeof(value) - 1)
                    value[vlen++] = *p;
                p++;
            }
        }
        value[vlen] = '\0';
        put_field(l, key, (size_t)(eq - key), value, false);
    }
}

/* ---- Rate limiting --------------------------------------------------------------------- */

/* Returns true if the line may be written; sets *flush_out to the count suppressed in the
 * window that just ended (0 if none). */
static bool rate_allow(const char *module, const char *msg, uint64_t *flush_out)
{
    int64_t now = iocd_mono_ns();
    size_t h = 5381, i;
    const char *s;
    rl_slot *slot;
    bool allow;

    for (s = module; *s; s++)
        h = h * 33 + (unsigned char)*s;
    for (s = msg; *s; s++)
        h = h * 33 + (unsigned char)*s;
    *flush_out = 0;
    pthread_mutex_lock(&rl_lock);
    i = h % RL_SLOTS;
    slot = &rl_table[i];
    if (slot->module == NULL || strcmp(slot->module, module) != 0 || strcmp(slot->msg, msg) != 0 ||
        now - slot->window_start_ns > RL_WINDOW_NS) {
        *flush_out = slot->suppressed;
        slot->module = module;
        slot->msg = msg;
        slot->window_start_ns = now;
        slot->count = 0;
        slot->suppressed = 0;
    }
    allow = ++slot->count <= RL_BURST;
    if (!allow) {
        slot->suppressed++;
        rl_total_suppressed++;
    }
    pthread_mutex_unlock(&rl_lock);
    return allow;
}

/* ---- Entry points ---------------------------------------------------------------------- */

static void write_line(line *l)
{
    const char *p = l->buf;
    size_t left;

    if (log_format == IOCD_LOG_JSON)
        puts_(l, "}");
    l->buf[l->len++] = '\n';
    left = l->len;
    while (left > 0) {
        ssize_t w = write(log_fd, p, left);
        if (w <= 0)
            return; /* logging must never take the daemon down */
        p += w;
        left -= (size_t)w;
    }
}

static void begin_line(line *l, iocd_log_level level, const char *module, const char *msg)
{
    char ts[40];

    l->len = 0;
    iocd_time_format(iocd_now_ms(), ts, sizeof(ts));
    put_field(l, "time", 4, ts, true);
    put_field(l, "level", 5, level_names[level], false);
    put_field(l, "module", 6, module, false);
    put_field(l, "msg", 3, msg, false);
}

void iocd_vlog(iocd_log_level level, const char *module, const char *msg, const char *kvfmt,
               va_list ap)
{
    line l;
    uint64_t flushed = 0;
    va_list ap2;

    if (level < log_level)
        return;
    if (level >= IOCD_LOG_WARN && !rate_allow(module, msg, &flushed))
        return;
    if (flushed > 0) {
        char n[32];
        begin_line(&l, IOCD_LOG_WARN, module, "repeated messages suppressed");
        put_field(&l, "of", 2, msg, false);
        snprintf(n, sizeof(n), "%llu", (unsigned long long)flushed);
        put_field(&l, "count", 5, n, false);
        write_line(&l);
    }
    begin_line(&l, level, module, msg);
    if (kvfmt != NULL) {
        va_copy(ap2, ap);
        put_kvs(&l, kvfmt, &ap2);
        va_end(ap2);
    }
    write_line(&l);
}

void iocd_log(iocd_log_level level, const char *module, const char *msg, const char *kvfmt, ...)
{
    va_list ap;

    va_start(ap, kvfmt);
    iocd_vlog(level, module, msg, kvfmt, ap);
    va_end(ap);
}
