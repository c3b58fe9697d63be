/* collector/remote_write.c - Prometheus remote write 1.0: a snappy block (not framed) holding
 * a protobuf WriteRequest; the only file that sees libsnappy. The protobuf is decoded by hand
 * over the small prompb schema (below) rather than by protobuf-c generated code: labels are
 * read in place, so the hot path allocates nothing per series or sample, and the decoder is
 * small enough to fuzz well (tests/fuzz/fuzz_remote_write.c). Invariant: a first pass
 * validates the whole body; only the second feeds the sink, so a corrupt body feeds nothing. */
#include "collector/collector_int.h"
#include "collector/json_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <snappy-c.h>

/* The fields read; every other field is skipped by its wire type.
 *   WriteRequest { repeated TimeSeries timeseries = 1; repeated MetricMetadata metadata = 3; }
 *   TimeSeries   { repeated Label labels = 1; repeated Sample samples = 2;
 *                  repeated Exemplar exemplars = 3; repeated Histogram histograms = 4; }
 *   Label        { string name = 1; string value = 2; }
 *   Sample       { double value = 1; int64 timestamp = 2; }  (timestamp in ms)
 * Fields 3 and 4 of TimeSeries and 3 of WriteRequest are checked for framing, then skipped;
 * histograms are counted in iocd_remote_write_histograms_ignored_total. */
#define PB_FIELD_MAX    ((1u << 29) - 1)
#define LABELS_ON_STACK 64 /* label arrays up to this size need no allocation */

enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_SGROUP = 3, WT_EGROUP = 4, WT_I32 = 5 };

/* A cursor over one message: its fields lie in [p, end), inside its parent's payload. */
typedef struct pb {
    const uint8_t *p, *end;
} pb;

typedef struct pb_field {
    uint32_t num;
    int wire;
    uint64_t u;          /* varint value, or the fixed64/fixed32 bits (little-endian decoded) */
    const uint8_t *data; /* WT_LEN payload */
    size_t len;
} pb_field;

typedef struct rw_ctx {
    const col_parse_limits *lim;
    char *errbuf;
    size_t errlen;
    uint64_t series;    /* 1-based index of the series being read, for messages */
    size_t labels_most; /* most labels in one series (the validating pass measures it) */
    uint64_t histograms;
    iocd_label *labels; /* the emitting pass: labels_most entries */
} rw_ctx;

/* ---- Wire format ----------------------------------------------------------------------- */

/* Reads a varint; returns NULL or why it is malformed. */
static const char *pb_varint(pb *b, uint64_t *out)
{
    const uint8_t *p = b->p;
    uint64_t v = 0;
    unsigned shift;
    uint8_t c;

    if (p < b->end && *p < 0x80) { /* one byte: most tags, lengths and small values */
        *out = *p;
        b->p = p + 1;
        return NULL;
    }
    for (shift = 0; shift < 64; shift += 7) {
        if (p == b->end)
            return "truncated varint";
        c = *p++;
        if (shift == 63 && c > 1)
            return "varint longer than 64 bits";
        v |= (uint64_t)(c & 0x7f) << shift;
        if ((c & 0x80) == 0) {
            b->p = p;
            *out = v;
            return NULL;
        }
    }
    return "varint longer than 64 bits"; /* not reached: the tenth byte ends the loop */
}

static uint64_t le_bytes(const uint8_t *p, size_t n)
{
    uint64_t v = 0;

    while (n-- > 0)
        v = v << 8 | p[n];
    return v;
}

/* Reads the next field of b; returns NULL or why the message is malformed. A length never
 * reaches past b->end, which is the parent's end for nested messages. */
static const char *pb_next(pb *b, pb_field *f)
{
    uint64_t tag, len;
    const char *why;

    why = pb_varint(b, &tag);
    if (why != NULL)
        return why;
    if (tag >> 3 == 0 || tag >> 3 > PB_FIELD_MAX)
        return "invalid field number";
    f->num = (uint32_t)(tag >> 3);
    f->wire = (int)(tag & 7);
    switch (f->wire) {
    case WT_VARINT:
        return pb_varint(b, &f->u);
    case WT_I64:
    case WT_I32:
        len = f->wire == WT_I64 ? 8 : 4;
        if ((uint64_t)(b->end - b->p) < len)
            return "truncated fixed-width field";
        f->u = le_bytes(b->p, (size_t)len);
        b->p += len;
        return NULL;
    case WT_LEN:
        why = pb_varint(b, &len);
        if (why != NULL)
            return why;
        if (len > (uint64_t)(b->end - b->p))
            return "length past the end of the enclosing message";
        f->data = b->p;
        f->len = (size_t)len;
        b->p += len;
        return NULL;
    case WT_SGROUP:
    case WT_EGROUP:
        return "groups are not supported";
    default:
        return "invalid wire type";
    }
}

/* ---- Messages -------------------------------------------------------------------------- */

static iocd_err bad(rw_ctx *c, const char *fmt, ...) IOCD_PRINTF(2, 3);

static iocd_err bad(rw_ctx *c, const char *fmt, ...)
{
    va_list ap;

    if (c->errbuf != NULL && c->errlen > 0) {
        va_start(ap, fmt);
        vsnprintf(c->errbuf, c->errlen, fmt, ap);
        va_end(ap);
    }
    return IOCD_EPARSE;
}

static iocd_err wrong_wire(rw_ctx *c, const char *msg, const pb_field *f, int want)
{
    return bad(c, "protobuf: field %u of %s has wire type %d, want %d (series %llu)", f->num, msg,
               f->wire, want, (unsigned long long)c->series);
}

static iocd_err label_read(rw_ctx *c, const pb_field *lf, iocd_label *out)
{
    pb b = { lf->data, lf->data + lf->len };
    iocd_label l = { "", 0, "", 0 };
    pb_field f;
    const char *why;

    while (b.p < b.end) {
        why = pb_next(&b, &f);
        if (why != NULL)
            return bad(c, "protobuf: %s in Label (series %llu)", why,
                       (unsigned long long)c->series);
        if (f.num != 1 && f.num != 2)
            continue; /* unknown field: skipped by pb_next */
        if (f.wire != WT_LEN)
            return wrong_wire(c, "Label", &f, WT_LEN);
        if (f.num == 1) {
            l.name = (const char *)f.data;
            l.name_len = f.len;
        } else {
            l.value = (const char *)f.data;
            l.value_len = f.len;
        }
    }
    *out = l;
    return IOCD_OK;
}

/* Validating pass only: what Prometheus' own receiver would refuse, plus our limits. */
static iocd_err label_check(rw_ctx *c, const iocd_label *l)
{
    const col_parse_limits *lim = c->lim;
    unsigned long long s = (unsigned long long)c->series;

    if (l->name_len == 0)
        return bad(c, "label with an empty name (series %llu)", s);
    if (lim->label_name_max != 0 && l->name_len > lim->label_name_max)
        return bad(c, "label too long: name of %zu bytes, max %zu (series %llu)", l->name_len,
                   lim->label_name_max, s);
    if (lim->label_value_max != 0 && l->value_len > lim->label_value_max)
        return bad(c, "label too long: value of %.*s is %zu bytes, max %zu (series %llu)",
                   (int)(l->name_len < 64 ? l->name_len : 64), l->name, l->value_len,
                   lim->label_value_max, s);
    if (!col_utf8_valid(l->name, l->name_len))
        return bad(c, "label name is not valid UTF-8 (series %llu)", s);
    if (!col_utf8_valid(l->value, l->value_len))
        return bad(c, "label value is not valid UTF-8 (series %llu)", s);
    return IOCD_OK;
}

static iocd_err sample_read(rw_ctx *c, const pb_field *sf, int64_t *t_out, double *v_out)
{
    pb b = { sf->data, sf->data + sf->len };
    uint64_t vbits = 0, tbits = 0;
    pb_field f;
    const char *why;

    while (b.p < b.end) {
        why = pb_next(&b, &f);
        if (why != NULL)
            return bad(c, "protobuf: %s in Sample (series %llu)", why,
                       (unsigned long long)c->series);
        if (f.num == 1) {
            if (f.wire != WT_I64)
                return wrong_wire(c, "Sample", &f, WT_I64);
            vbits = f.u;
        } else if (f.num == 2) {
            if (f.wire != WT_VARINT)
                return wrong_wire(c, "Sample", &f, WT_VARINT);
            tbits = f.u;
        }
    }
    /* Bit copies, no arithmetic: NaN payloads (the staleness marker) survive, and a negative
     * int64 (a ten-byte two's complement varint) needs no implementation-defined cast. */
    memcpy(v_out, &vbits, sizeof(*v_out));
    memcpy(t_out, &tbits, sizeof(*t_out));
    return IOCD_OK;
}

static bool is_name(const iocd_label *l)
{
    return l->name_len == 8 && memcmp(l->name, "__name__", 8) == 0;
}

/* One TimeSeries. With sink NULL, validates it (every field, label and sample) and measures
 * it; otherwise gathers its labels, __name__ first, then feeds its samples. */
static iocd_err series_walk(rw_ctx *c, const pb_field *tf, const col_sink *sink,
                            col_parse_stats *stats)
{
    const size_t labels_max = c->lim->labels_max;
    pb b = { tf->data, tf->data + tf->len };
    size_t n = 1; /* labels[0] is kept for __name__ */
    bool have_name = false;
    iocd_label l;
    pb_field f;
    int64_t t;
    double v;
    const char *why;
    iocd_err err;

    while (b.p < b.end) {
        why = pb_next(&b, &f);
        if (why != NULL)
            return bad(c, "protobuf: %s in TimeSeries (series %llu)", why,
                       (unsigned long long)c->series);
        if (f.num > 4)
            continue;
        if (f.wire != WT_LEN)
            return wrong_wire(c, "TimeSeries", &f, WT_LEN);
        if (f.num == 1) {
            err = label_read(c, &f, &l);
            if (err == IOCD_OK && sink == NULL)
                err = label_check(c, &l);
            if (err != IOCD_OK)
                return err;
            if (!have_name && is_name(&l)) {
                if (l.value_len == 0)
                    return bad(c, "series with an empty __name__ label (series %llu)",
                               (unsigned long long)c->series);
                have_name = true;
                if (sink != NULL)
                    c->labels[0] = l;
                continue;
            }
            if (labels_max != 0 && n >= labels_max)
                return bad(c, "too many labels: more than %zu (series %llu)", labels_max,
                           (unsigned long long)c->series);
            if (sink != NULL)
                c->labels[n] = l;
            n++;
        } else if (sink == NULL && f.num == 2) {
            err = sample_read(c, &f, &t, &v);
            if (err != IOCD_OK)
                return err;
        } else if (sink == NULL && f.num == 4) {
            c->histograms++; /* native histograms: not stored (iocd keeps float samples) */
        }
    }
    if (!have_name)
        return bad(c, "series without __name__ label (series %llu)", (unsigned long long)c->series);
    if (sink == NULL) {
        if (n > c->labels_most)
            c->labels_most = n;
        return IOCD_OK;
    }
    stats->lines++;
    /* Samples may come before labels in the encoding, hence this second scan. */
    b.p = tf->data;
    while (b.p < b.end) {
        why = pb_next(&b, &f);
        IOCD_ASSERT(why == NULL); /* validated */
        if (why != NULL || f.num != 2)
            continue;
        err = sample_read(c, &f, &t, &v);
        if (err != IOCD_OK)
            return err;
        stats->samples++;
        err = sink->sample(sink->ud, c->labels, n, t, v);
        if (err != IOCD_OK)
            return err;
    }
    return IOCD_OK;
}

static iocd_err request_walk(rw_ctx *c, const uint8_t *raw, size_t len, const col_sink *sink,
                             col_parse_stats *stats)
{
    pb b = { raw, raw + len };
    pb_field f;
    const char *why;
    iocd_err err;

    c->series = 0;
    while (b.p < b.end) {
        why = pb_next(&b, &f);
        if (why != NULL)
            return bad(c, "protobuf: %s in WriteRequest (after series %llu)", why,
                       (unsigned long long)c->series);
        if (f.num != 1 && f.num != 3)
            continue;
        if (f.wire != WT_LEN)
            return wrong_wire(c, "WriteRequest", &f, WT_LEN);
        if (f.num == 3)
            continue; /* metadata: not stored */
        c->series++;
        err = series_walk(c, &f, sink, stats);
        if (err != IOCD_OK)
            return err;
    }
    return IOCD_OK;
}

/* ---- Entry ----------------------------------------------------------------------------- */

iocd_err col_rw_parse(const char *body, size_t len, size_t max_raw, const col_parse_limits *lim,
                      const col_sink *sink, col_parse_stats *stats, char *errbuf, size_t errlen)
{
    static const col_parse_limits no_limits = { 0, 0, 0, 0 };
    iocd_label on_stack[LABELS_ON_STACK];
    iocd_label *heap = NULL;
    col_parse_stats local;
    char *raw = NULL;
    size_t raw_len = 0, got;
    rw_ctx c;
    iocd_err err = IOCD_OK;

    memset(&c, 0, sizeof(c));
    c.lim = lim != NULL ? lim : &no_limits;
    c.errbuf = errbuf;
    c.errlen = errlen;
    if (errbuf != NULL && errlen > 0)
        errbuf[0] = '\0';
    if (stats == NULL) {
        memset(&local, 0, sizeof(local));
        stats = &local;
    }
    if (snappy_uncompressed_length(body, len, &raw_len) != SNAPPY_OK) {
        err = bad(&c, "snappy: corrupt input (remote write bodies are snappy block-format "
                      "compressed protobuf)");
        goto out;
    }
    /* Checked before anything is allocated: the length is the client's claim. */
    if (raw_len > max_raw) {
        bad(&c, "body decompresses to %zu bytes, more than the limit of %zu", raw_len, max_raw);
        err = IOCD_ETOOBIG;
        goto out;
    }
    /* Validating first bounds the allocation below by what the body can really expand to. */
    if (snappy_validate_compressed_buffer(body, len) != SNAPPY_OK) {
        err = bad(&c, "snappy: corrupt input");
        goto out;
    }
    raw = iocd_malloc(raw_len != 0 ? raw_len : 1);
    if (raw == NULL) {
        err = IOCD_ENOMEM;
        goto out;
    }
    got = raw_len;
    if (snappy_uncompress(body, len, raw, &got) != SNAPPY_OK || got != raw_len) {
        err = bad(&c, "snappy: corrupt input");
        goto out;
    }
    err = request_walk(&c, (const uint8_t *)raw, raw_len, NULL, NULL);
    if (err != IOCD_OK)
        goto out;
    if (c.histograms > 0)
        iocd_metric_add(iocd_counter("iocd_remote_write_histograms_ignored_total",
                                     "Native histograms received over remote write and not "
                                     "stored (iocd stores float samples)."),
                        (double)c.histograms);
    c.labels = on_stack;
    if (c.labels_most > LABELS_ON_STACK) {
        heap = iocd_malloc(c.labels_most * sizeof(*heap));
        if (heap == NULL) {
            err = IOCD_ENOMEM;
            goto out;
        }
        c.labels = heap;
    }
    err = request_walk(&c, (const uint8_t *)raw, raw_len, sink, stats);
out:
    iocd_free(heap);
    iocd_free(raw);
    return err;
}
