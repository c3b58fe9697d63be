/* collector/remote_write.c - Prometheus remote write 1.0: a snappy block holding a protobuf
 * WriteRequest. The protobuf is decoded by hand over the small prompb schema rather than
 * with generated protobuf-c code: it reads labels in place (no allocation per message on the
 * hot path) and is fuzzed. The body is validated whole in a first pass; samples reach the
 * sink only in the second, so a corrupt request stores nothing.
 *   WriteRequest { repeated TimeSeries timeseries = 1; metadata = 3 (ignored) }
 *   TimeSeries   { repeated Label labels = 1; repeated Sample samples = 2; exemplars = 3,
 *                  histograms = 4 (ignored) }
 *   Label        { string name = 1; string value = 2; }
 *   Sample       { double value = 1; int64 timestamp = 2; } */
#include "collector/collector_int.h"

#include <stdio.h>
#include <string.h>

#include <snappy-c.h>

#define LABELS_MAX 256

typedef struct pb {
    const uint8_t *p, *end;
} pb;

static bool varint(pb *b, uint64_t *out)
{
    uint64_t v = 0;
    int shift = 0;

    while (b->p < b->end && shift < 64) {
        uint8_t c = *b->p++;
        if (shift == 63 && c > 1)
            return false; /* more than 64 bits */
        v |= (uint64_t)(c & 0x7f) << shift;
        if ((c & 0x80) == 0) {
            *out = v;
            return true;
        }
        shift += 7;
    }
    return false;
}

/* Reads the next field's tag; for length-delimited fields sets *sub to the payload; other
 * wire types are skipped into *sub as well (sub.p == sub.end for varints). */
static bool next_field(pb *b, uint32_t *num, int *wire, pb *sub, const char **why)
{
    uint64_t tag, len, v;

    if (!varint(b, &tag)) {
        *why = "protobuf: truncated field tag";
        return false;
    }
    *num = (uint32_t)(tag >> 3);
    *wire = (int)(tag & 7);
    if (*num == 0) {
        *why = "protobuf: field number 0";
        return false;
    }
    switch (*wire) {
    case 0:
        sub->p = b->p;
        if (!varint(b, &v)) {
            *why = "protobuf: truncated varint";
            return false;
        }
        sub->end = b->p;
        return true;
    case 1:
    case 5: {
        size_t n = *wire == 1 ? 8 : 4;
        if ((size_t)(b->end - b->p) < n) {
            *why = "protobuf: truncated fixed-width field";
            return false;
        }
        sub->p = b->p;
        sub->end = b->p + n;
        b->p += n;
        return true;
    }
    case 2:
        if (!varint(b, &len) || len > (uint64_t)(b->end - b->p)) {
            *why = "protobuf: length runs past the end of its message";
            return false;
        }
        sub->p = b->p;
        sub->end = b->p + len;
        b->p += len;
        return true;
    default:
        *why = "protobuf: unsupported wire type";
        return false;
    }
}

typedef struct rw_ctx {
    const col_parse_limits *lim;
    const col_sink *sink; /* NULL in the validating pass */
    col_parse_stats *stats;
    iocd_label labels[LABELS_MAX];
    uint64_t tagset; /* one per series: its samples share their labels */
    char *errbuf;
    size_t errlen;
} rw_ctx;

static iocd_err bad(rw_ctx *c, const char *why)
{
    snprintf(c->errbuf, c->errlen, "%s", why);
    return IOCD_EPARSE;
}

static iocd_err one_series(rw_ctx *c, pb ts)
{
    size_t n = 1;
    bool have_name = false;
    const char *why = NULL;
    uint32_t num;
    int wire;
    pb f, in;
    iocd_err err = IOCD_OK;

    /* Labels first (they may follow samples in the encoding: collect them all). */
    in = ts;
    while (in.p < in.end) {
        if (!next_field(&in, &num, &wire, &f, &why))
            return bad(c, why);
        if (num != 1 || wire != 2)
            continue;
        {
            pb lf = f, v;
            const uint8_t *name = NULL, *value = (const uint8_t *)"";
            size_t nlen = 0, vlen = 0;
            while (lf.p < lf.end) {
                if (!next_field(&lf, &num, &wire, &v, &why))
                    return bad(c, why);
                if (wire != 2)
                    continue;
                if (num == 1) {
                    name = v.p;
                    nlen = (size_t)(v.end - v.p);
                } else if (num == 2) {
                    value = v.p;
                    vlen = (size_t)(v.end - v.p);
                }
            }
            if (name == NULL || nlen == 0)
                return bad(c, "label without a name");
            if (!iocd_utf8_valid((const char *)name, nlen) ||
                !iocd_utf8_valid((const char *)value, vlen))
                return bad(c, "label is not valid UTF-8");
            if ((c->lim->label_name_max != 0 && nlen > c->lim->label_name_max) ||
                (c->lim->label_value_max != 0 && vlen > c->lim->label_value_max))
                return bad(c, "label name or value longer than the limit");
            if (nlen == 8 && memcmp(name, "__name__", 8) == 0) {
                if (vlen == 0)
                    return bad(c, "series with an empty __name__ label");
                have_name = true;
                c->labels[0] = (iocd_label){ (const char *)name, nlen, (const char *)value, vlen };
                continue;
            }
            if (n == LABELS_MAX || (c->lim->labels_max != 0 && n >= c->lim->labels_max))
                return bad(c, "series has more labels than the limit");
            c->labels[n++] = (iocd_label){ (const char *)name, nlen, (const char *)value, vlen };
        }
    }
    if (!have_name)
        return bad(c, "series without __name__ label");
    c->stats->lines++;
    c->tagset++;
    in = ts;
    while (in.p < in.end && err == IOCD_OK) {
        if (!next_field(&in, &num, &wire, &f, &why))
            return bad(c, why);
        if (num != 2 || wire != 2)
            continue;
        {
            pb sf = f, v;
            double val = 0;
            int64_t t = 0;
            while (sf.p < sf.end) {
                if (!next_field(&sf, &num, &wire, &v, &why))
                    return bad(c, why);
                if ((num == 1 && wire != 1) || (num == 2 && wire != 0))
                    return bad(c, "protobuf: Sample field with the wrong wire type");
                if (num == 1)
                    memcpy(&val, v.p, 8); /* bit-exact: staleness markers survive */
                else if (num == 2) {
                    uint64_t u = 0;
                    pb vv = v;
                    varint(&vv, &u);
                    t = (int64_t)u;
                }
            }
            if (c->sink != NULL) {
                c->stats->samples++;
                err = c->sink->sample(c->sink->ud, c->labels, n, c->tagset, t, val);
            }
        }
    }
    return err;
}

static iocd_err walk(rw_ctx *c, const uint8_t *msg, size_t len)
{
    pb b = { msg, msg + len }, f;
    const char *why = NULL;
    uint32_t num;
    int wire;
    iocd_err err = IOCD_OK;

    while (b.p < b.end && err == IOCD_OK) {
        if (!next_field(&b, &num, &wire, &f, &why))
            return bad(c, why);
        if (num == 1 && wire == 2)
            err = one_series(c, f);
    }
    return err;
}

iocd_err col_rw_parse(const char *body, size_t len, size_t max_raw, const col_parse_limits *lim,
                      const col_sink *sink, col_parse_stats *stats, char *errbuf, size_t errlen)
{
    size_t raw_len = 0;
    char *raw = NULL;
    col_parse_stats scratch_stats;
    rw_ctx c;
    iocd_err err;

    if (snappy_uncompressed_length(body, len, &raw_len) != SNAPPY_OK ||
        snappy_validate_compressed_buffer(body, len) != SNAPPY_OK) {
        snprintf(errbuf, errlen,
                 "snappy: corrupt input (remote write bodies are snappy "
                 "block-compressed protobuf)");
        return IOCD_EPARSE;
    }
    if (raw_len > max_raw) {
        snprintf(errbuf, errlen, "decompressed body of %zu bytes is over the %zu byte limit",
                 raw_len, max_raw);
        return IOCD_ETOOBIG;
    }
    raw = iocd_malloc(raw_len != 0 ? raw_len : 1);
    if (raw == NULL)
        return IOCD_ENOMEM;
    if (snappy_uncompress(body, len, raw, &raw_len) != SNAPPY_OK) {
        iocd_free(raw);
        snprintf(errbuf, errlen, "snappy: corrupt input");
        return IOCD_EPARSE;
    }
    memset(&c, 0, sizeof(c));
    memset(&scratch_stats, 0, sizeof(scratch_stats));
    c.tagset = col_tagset_base();
    c.lim = lim;
    c.stats = &scratch_stats;
    c.errbuf = errbuf;
    c.errlen = errlen;
    err = walk(&c, (const uint8_t *)raw, raw_len); /* validate */
    if (err == IOCD_OK) {
        c.sink = sink;
        c.stats = stats;
        err = walk(&c, (const uint8_t *)raw, raw_len);
    }
    iocd_free(raw);
    return err;
}
