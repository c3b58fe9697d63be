/* common/json.c - a reader for flat JSON objects ({"key": "text", "n": 1, "ok": true}), which
 * is all the incident API and the dispatch commands need: strings are unescaped (\uXXXX and
 * surrogate pairs included) into one owned buffer; nested objects and arrays are refused with
 * the offset of the problem. Bounded: at most IOCD_JSON_KEYS_MAX keys. */
#include "common/common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct jparser {
    const char *p, *start, *end;
    iocd_buf *out;
    char *errbuf;
    size_t errlen;
} jparser;

static iocd_err jerr(jparser *j, const char *what)
{
    snprintf(j->errbuf, j->errlen, "invalid JSON at byte %d: %s", (int)(j->p - j->start) + 1, what);
    return IOCD_EPARSE;
}

static void ws(jparser *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

/* A string at j->p (after its quote); appended NUL-terminated to out, *off = its offset. */
static iocd_err jstring(jparser *j, size_t *off)
{
    iocd_err err = IOCD_OK;

    *off = j->out->len;
    j->p++;
    while (err == IOCD_OK) {
        unsigned char c;
        if (j->p >= j->end)
            return jerr(j, "unterminated string");
        c = (unsigned char)*j->p++;
        if (c == '"')
            break;
        if (c < 0x20)
            return jerr(j, "control character in string");
        if (c != '\\') {
            err = iocd_buf_putc(j->out, (char)c);
            continue;
        }
        if (j->p >= j->end)
            return jerr(j, "unterminated string");
        c = (unsigned char)*j->p++;
        switch (c) {
        case '"':
        case '\\':
        case '/':
            err = iocd_buf_putc(j->out, (char)c);
            break;
        case 'b':
            err = iocd_buf_putc(j->out, '\b');
            break;
        case 'f':
            err = iocd_buf_putc(j->out, '\f');
            break;
        case 'n':
            err = iocd_buf_putc(j->out, '\n');
            break;
        case 'r':
            err = iocd_buf_putc(j->out, '\r');
            break;
        case 't':
            err = iocd_buf_putc(j->out, '\t');
            break;
        case 'u': {
            uint32_t cp = 0;
            int i, h;
            if (j->end - j->p < 4)
                return jerr(j, "short \\u escape");
            for (i = 0; i < 4; i++) {
                h = iocd_hexval(j->p[i]);
                if (h < 0)
                    return jerr(j, "bad \\u escape");
                cp = cp * 16 + (uint32_t)h;
            }
            j->p += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF) { /* a surrogate pair */
                uint32_t lo = 0;
                if (j->end - j->p < 6 || j->p[0] != '\\' || j->p[1] != 'u')
                    return jerr(j, "lone surrogate");
                for (i = 0; i < 4; i++) {
                    h = iocd_hexval(j->p[2 + i]);
                    if (h < 0)
                        return jerr(j, "bad \\u escape");
                    lo = lo * 16 + (uint32_t)h;
                }
                if (lo < 0xDC00 || lo > 0xDFFF)
                    return jerr(j, "lone surrogate");
                j->p += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                return jerr(j, "lone surrogate");
            }
            if (cp == 0)
                return jerr(j, "NUL in string");
            err = iocd_buf_utf8(j->out, cp);
            break;
        }
        default:
            return jerr(j, "unknown escape");
        }
    }
    if (err == IOCD_OK)
        err = iocd_buf_putc(j->out, '\0');
    if (err == IOCD_OK && !iocd_utf8_valid(j->out->data + *off, j->out->len - *off - 1))
        return jerr(j, "string is not valid UTF-8");
    return err;
}

iocd_err iocd_json_object_parse(const char *text, size_t len, iocd_json_obj *out, char *errbuf,
                                size_t errlen)
{
    jparser j = { text, text, text + len, NULL, errbuf, errlen };
    iocd_json_obj o;
    size_t koff[IOCD_JSON_KEYS_MAX], voff[IOCD_JSON_KEYS_MAX], i;
    iocd_err err;

    memset(&o, 0, sizeof(o));
    iocd_buf_init(&o.text, len + 64);
    j.out = &o.text;
    ws(&j);
    if (j.p >= j.end || *j.p != '{') {
        err = jerr(&j, "expected an object {...}");
        goto fail;
    }
    j.p++;
    ws(&j);
    if (j.p < j.end && *j.p == '}') {
        j.p++;
    } else {
        for (;;) {
            iocd_json_kind kind = IOCD_JSON_NULL;
            ws(&j);
            if (j.p >= j.end || *j.p != '"') {
                err = jerr(&j, "expected a key in quotes");
                goto fail;
            }
            if (o.n == IOCD_JSON_KEYS_MAX) {
                err = jerr(&j, "too many keys");
                goto fail;
            }
            err = jstring(&j, &koff[o.n]);
            if (err != IOCD_OK)
                goto fail;
            ws(&j);
            if (j.p >= j.end || *j.p != ':') {
                err = jerr(&j, "expected ':'");
                goto fail;
            }
            j.p++;
            ws(&j);
            if (j.p >= j.end) {
                err = jerr(&j, "expected a value");
                goto fail;
            }
            if (*j.p == '"') {
                kind = IOCD_JSON_STRING;
                err = jstring(&j, &voff[o.n]);
            } else if (*j.p == '{' || *j.p == '[') {
                err = jerr(&j, "nested objects and arrays are not accepted here");
            } else {
                const char *s = j.p;
                while (j.p < j.end && *j.p != ',' && *j.p != '}' && *j.p != ' ' && *j.p != '\n' &&
                       *j.p != '\t' && *j.p != '\r')
                    j.p++;
                voff[o.n] = o.text.len;
                err = iocd_buf_append(&o.text, s, (size_t)(j.p - s));
                if (err == IOCD_OK)
                    err = iocd_buf_putc(&o.text, '\0');
                kind = IOCD_JSON_NUMBER;
                if (err == IOCD_OK) {
                    const char *v = o.text.data + voff[o.n];
                    char *endp;
                    if (strcmp(v, "true") == 0 || strcmp(v, "false") == 0)
                        kind = IOCD_JSON_BOOL;
                    else if (strcmp(v, "null") == 0)
                        kind = IOCD_JSON_NULL;
                    else if (strtod(v, &endp), *v == '\0' || *endp != '\0') {
                        j.p = s;
                        err = jerr(&j, "expected a string, number, true, false or null");
                    }
                }
            }
            if (err != IOCD_OK)
                goto fail;
            o.kind[o.n] = kind;
            o.n++;
            ws(&j);
            if (j.p < j.end && *j.p == ',') {
                j.p++;
                continue;
            }
            if (j.p < j.end && *j.p == '}') {
                j.p++;
                break;
            }
            err = jerr(&j, "expected ',' or '}'");
            goto fail;
        }
    }
    ws(&j);
    if (j.p != j.end) {
        err = jerr(&j, "text after the object");
        goto fail;
    }
    for (i = 0; i < o.n; i++) { /* pointers only now: the buffer has stopped moving */
        o.key[i] = o.text.data + koff[i];
        o.val[i] = o.text.data + voff[i];
    }
    *out = o;
    return IOCD_OK;
fail:
    iocd_buf_fini(&o.text);
    return err;
}

void iocd_json_obj_fini(iocd_json_obj *o)
{
    iocd_buf_fini(&o->text);
    memset(o, 0, sizeof(*o));
}

const char *iocd_json_get(const iocd_json_obj *o, const char *key, iocd_json_kind *kind_out)
{
    size_t i;

    for (i = 0; i < o->n; i++)
        if (strcmp(o->key[i], key) == 0) {
            if (kind_out != NULL)
                *kind_out = o->kind[i];
            return o->val[i];
        }
    return NULL;
}
