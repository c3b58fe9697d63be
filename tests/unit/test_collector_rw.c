/* tests/unit/test_collector_rw.c - Prometheus remote write decoding (collector/remote_write.c).
 * WriteRequests are built with a tiny protobuf encoder below and compressed with libsnappy,
 * as a Prometheus server would send them; a recording sink turns each sample into text. */
#include "tests/unit/harness.h"

#include <math.h>

#include <snappy-c.h>

#include "collector/parse_int.h"

/* ---- A protobuf encoder ------------------------------------------------------------------ */

typedef struct pbuf {
    uint8_t b[32768];
    size_t n;
} pbuf;

static void pv(pbuf *p, uint64_t v)
{
    while (v >= 0x80) {
        p->b[p->n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p->b[p->n++] = (uint8_t)v;
}

static void ptag(pbuf *p, unsigned field, unsigned wire)
{
    pv(p, (uint64_t)field << 3 | wire);
}

static void pbytes(pbuf *p, unsigned field, const void *data, size_t len)
{
    ptag(p, field, 2);
    pv(p, len);
    memcpy(p->b + p->n, data, len);
    p->n += len;
}

static void pstr(pbuf *p, unsigned field, const char *s)
{
    pbytes(p, field, s, strlen(s));
}

static void pmsg(pbuf *p, unsigned field, const pbuf *inner)
{
    pbytes(p, field, inner->b, inner->n);
}

static void pfixed(pbuf *p, unsigned field, uint64_t bits, int width)
{
    int i;

    ptag(p, field, width == 8 ? 1 : 5);
    for (i = 0; i < width; i++)
        p->b[p->n++] = (uint8_t)(bits >> (8 * i));
}

static void label(pbuf *ts, const char *name, const char *value)
{
    pbuf l = { .n = 0 };

    pstr(&l, 1, name);
    pstr(&l, 2, value);
    pmsg(ts, 1, &l);
}

static uint64_t bits_of(double v)
{
    uint64_t b;

    memcpy(&b, &v, 8);
    return b;
}

static void sample_bits(pbuf *ts, int64_t t, uint64_t vbits)
{
    pbuf s = { .n = 0 };

    pfixed(&s, 1, vbits, 8);
    ptag(&s, 2, 0);
    pv(&s, (uint64_t)t);
    pmsg(ts, 2, &s);
}

static void sample(pbuf *ts, int64_t t, double v)
{
    sample_bits(ts, t, bits_of(v));
}

/* ---- Parsing through snappy -------------------------------------------------------------- */

typedef struct rec {
    char out[8192];
    uint64_t bits[64];
    int n;
    int fail_after; /* the sink fails from this sample on (0: never) */
} rec;

static iocd_err rec_sample(void *ud, const iocd_label *l, size_t n, int64_t t, double v)
{
    rec *r = ud;
    size_t len = strlen(r->out), i;

    ASSERT_TRUE(n >= 1);
    ASSERT_EQ(l[0].name_len, 8);
    ASSERT_TRUE(memcmp(l[0].name, "__name__", 8) == 0);
    len += (size_t)snprintf(r->out + len, sizeof(r->out) - len, "%.*s{", (int)l[0].value_len,
                            l[0].value);
    for (i = 1; i < n; i++)
        len += (size_t)snprintf(r->out + len, sizeof(r->out) - len, "%s%.*s=%.*s", i > 1 ? "," : "",
                                (int)l[i].name_len, l[i].name, (int)l[i].value_len, l[i].value);
    snprintf(r->out + len, sizeof(r->out) - len, "} %lld %.17g\n", (long long)t, v);
    if (r->n < 64)
        r->bits[r->n] = bits_of(v);
    r->n++;
    return r->fail_after != 0 && r->n >= r->fail_after ? IOCD_ETOOBIG : IOCD_OK;
}

static void rec_reject(void *ud, uint64_t line, const char *reason)
{
    (void)ud;
    test_fail_at(__FILE__, __LINE__, "remote write rejected line %llu: %s",
                 (unsigned long long)line, reason);
}

static char body[70000];
static size_t body_len;
static rec r;
static col_parse_stats st;
static char why[256];

static void compress(const void *raw, size_t len)
{
    body_len = sizeof(body);
    ASSERT_TRUE(snappy_max_compressed_length(len) <= sizeof(body));
    ASSERT_EQ(snappy_compress(raw, len, body, &body_len), SNAPPY_OK);
}

/* Parses body[0, body_len) with lim; resets the recording first. */
static iocd_err parse_body(const col_parse_limits *lim)
{
    col_sink sink = { rec_sample, rec_reject, &r };
    int fail_after = r.fail_after;

    memset(&r, 0, sizeof(r));
    memset(&st, 0, sizeof(st));
    r.fail_after = fail_after;
    strcpy(why, "untouched");
    return col_rw_parse(body, body_len, 1 << 20, lim, &sink, &st, why, sizeof(why));
}

static iocd_err parse_req(const pbuf *req, const col_parse_limits *lim)
{
    compress(req->b, req->n);
    return parse_body(lim);
}

static const col_parse_limits no_lim = { 0, 0, 0, 0 };

/* ---- Tests ------------------------------------------------------------------------------- */

TEST(rw_series_samples_and_name_first)
{
    pbuf req = { .n = 0 }, ts = { .n = 0 };

    label(&ts, "ward", "hoan_kiem");
    sample(&ts, 1700000000000, 1.5);
    label(&ts, "__name__", "drain_level_cm"); /* after a sample and a label */
    label(&ts, "device", "d7");
    sample(&ts, 1700000010000, -2);
    sample(&ts, -1000, 0.25); /* before the epoch: a ten-byte varint */
    pmsg(&req, 1, &ts);
    ts.n = 0;
    label(&ts, "__name__", "lamp_on");
    sample(&ts, 5, 1);
    pmsg(&req, 1, &ts);
    ASSERT_OK(parse_req(&req, &no_lim));
    ASSERT_STR_EQ(r.out, "drain_level_cm{ward=hoan_kiem,device=d7} 1700000000000 1.5\n"
                         "drain_level_cm{ward=hoan_kiem,device=d7} 1700000010000 -2\n"
                         "drain_level_cm{ward=hoan_kiem,device=d7} -1000 0.25\n"
                         "lamp_on{} 5 1\n");
    ASSERT_EQ(st.lines, 2);
    ASSERT_EQ(st.samples, 4);
    ASSERT_EQ(st.rejected, 0);
    ASSERT_STR_EQ(why, "");
}

TEST(rw_extreme_timestamps_and_defaults)
{
    pbuf req = { .n = 0 }, ts = { .n = 0 }, s = { .n = 0 };

    label(&ts, "__name__", "m");
    sample(&ts, INT64_MAX, 1);
    sample(&ts, INT64_MIN, 2);
    pmsg(&ts, 2, &s); /* an empty Sample: value 0 at time 0 */
    pmsg(&req, 1, &ts);
    ASSERT_OK(parse_req(&req, &no_lim));
    ASSERT_STR_EQ(r.out, "m{} 9223372036854775807 1\n"
                         "m{} -9223372036854775808 2\n"
                         "m{} 0 0\n");
}

TEST(rw_unknown_fields_are_skipped_and_histograms_counted)
{
    pbuf req = { .n = 0 }, ts = { .n = 0 }, l = { .n = 0 }, s = { .n = 0 }, x = { .n = 0 };
    iocd_metric *hist = iocd_counter("iocd_remote_write_histograms_ignored_total", "x");
    double before = iocd_metric_value(hist);

    ptag(&req, 15, 0); /* unknown varint before the series */
    pv(&req, 300);
    pstr(&req, 3, "metadata is skipped");
    pfixed(&req, 99, 0x1122334455667788ULL, 8);
    pfixed(&req, 100000, 7, 4);
    pstr(&l, 1, "__name__");
    pstr(&l, 2, "flow_lps");
    ptag(&l, 3, 0);
    pv(&l, 1);
    pmsg(&ts, 1, &l);
    pstr(&x, 1, "exemplar");
    pmsg(&ts, 3, &x);
    pmsg(&ts, 4, &x); /* two native histograms */
    pmsg(&ts, 4, &x);
    ptag(&ts, 9, 5);
    memcpy(ts.b + ts.n, "abcd", 4);
    ts.n += 4;
    pfixed(&s, 1, bits_of(42), 8);
    pstr(&s, 7, "unknown in Sample");
    ptag(&s, 2, 0);
    pv(&s, 12);
    pmsg(&ts, 2, &s);
    pmsg(&req, 1, &ts);
    ptag(&req, 20, 1);
    memcpy(req.b + req.n, "12345678", 8);
    req.n += 8;
    ASSERT_OK(parse_req(&req, &no_lim));
    ASSERT_STR_EQ(r.out, "flow_lps{} 12 42\n");
    ASSERT_DBL_EQ(iocd_metric_value(hist) - before, 2, 0);
}

TEST(rw_values_are_bit_exact)
{
    static const uint64_t vals[] = {
        0x7ff0000000000002ULL, /* Prometheus' staleness marker */
        0x7ff8000000000001ULL, /* Prometheus' NaN */
        0xfff8000000000000ULL, /* negative quiet NaN */
        0x7ff4000000000abcULL, /* signalling NaN with a payload */
        0x8000000000000000ULL, /* -0 */
        0x7ff0000000000000ULL, /* +Inf */
        0x0000000000000001ULL, /* smallest denormal */
        0x3ff0000000000000ULL, /* 1 */
    };
    pbuf req = { .n = 0 }, ts = { .n = 0 };
    size_t i;

    label(&ts, "__name__", "m");
    for (i = 0; i < IOCD_ARRAY_LEN(vals); i++)
        sample_bits(&ts, (int64_t)i, vals[i]);
    pmsg(&req, 1, &ts);
    ASSERT_OK(parse_req(&req, &no_lim));
    ASSERT_EQ(r.n, IOCD_ARRAY_LEN(vals));
    for (i = 0; i < IOCD_ARRAY_LEN(vals); i++)
        ASSERT_UINT_EQ(r.bits[i], vals[i]);
}

TEST(rw_empty_requests)
{
    pbuf req = { .n = 0 }, ts = { .n = 0 };

    ASSERT_OK(parse_req(&req, &no_lim)); /* zero bytes of protobuf */
    ASSERT_EQ(r.n, 0);
    ASSERT_EQ(st.lines, 0);
    pstr(&req, 3, "only metadata");
    ASSERT_OK(parse_req(&req, &no_lim));
    ASSERT_EQ(r.n, 0);
    label(&ts, "__name__", "no_samples");
    pmsg(&req, 1, &ts);
    ASSERT_OK(parse_req(&req, &no_lim));
    ASSERT_EQ(r.n, 0);
    ASSERT_EQ(st.lines, 1);
    body_len = 0; /* not even a snappy header */
    ASSERT_ERR(parse_body(&no_lim), IOCD_EPARSE);
    ASSERT_STR_CONTAINS(why, "snappy");
}

/* A request of one series: every proper prefix of its protobuf is malformed. */
TEST(rw_truncated_protobuf_at_every_offset)
{
    pbuf req = { .n = 0 }, ts = { .n = 0 };
    size_t cut;

    label(&ts, "__name__", "pressure_bar");
    label(&ts, "ward", "Ph\xc6\xb0\xe1\xbb\x9dng 12");
    sample(&ts, -1, 2.347);
    sample(&ts, 1700000000000, 2.5);
    pmsg(&req, 1, &ts);
    for (cut = 1; cut < req.n; cut++) {
        compress(req.b, cut);
        ASSERT_ERR(parse_body(&no_lim), IOCD_EPARSE);
        ASSERT_EQ(r.n, 0);
        ASSERT_EQ(st.samples, 0);
        ASSERT_TRUE(strncmp(why, "protobuf: ", 10) == 0);
    }
    ASSERT_OK(parse_req(&req, &no_lim));
    ASSERT_EQ(r.n, 2);
}

/* Several series: a prefix is either a shorter valid request (cut between series: exactly
 * the complete series are fed) or malformed (nothing fed). */
TEST(rw_truncated_multi_series_feeds_all_or_nothing)
{
    pbuf req = { .n = 0 }, ts = { .n = 0 };
    size_t cut, ends[3];
    int i, k, n_ok = 0;

    for (i = 0; i < 3; i++) {
        ts.n = 0;
        label(&ts, "__name__", "m");
        label(&ts, "i", i == 0 ? "0" : i == 1 ? "1" : "2");
        for (k = 0; k <= i; k++)
            sample(&ts, k, k);
        pmsg(&req, 1, &ts);
        ends[i] = req.n;
    }
    for (cut = 0; cut < req.n; cut++) {
        iocd_err err;
        compress(req.b, cut);
        err = parse_body(&no_lim);
        if (err == IOCD_OK) {
            n_ok++;
            ASSERT_TRUE(cut == 0 || cut == ends[0] || cut == ends[1]);
            ASSERT_EQ(r.n, cut == 0 ? 0 : cut == ends[0] ? 1 : 3);
        } else {
            ASSERT_ERR(err, IOCD_EPARSE);
            ASSERT_EQ(r.n, 0);
        }
    }
    ASSERT_EQ(n_ok, 3);
}

TEST(rw_truncated_or_corrupt_snappy)
{
    pbuf req = { .n = 0 }, ts = { .n = 0 };
    char full[70000];
    size_t full_len, cut, i;
    iocd_err err;

    label(&ts, "__name__", "m");
    for (i = 0; i < 50; i++)
        sample(&ts, (int64_t)i * 1000, 1.0);
    pmsg(&req, 1, &ts);
    compress(req.b, req.n);
    full_len = body_len;
    memcpy(full, body, body_len);
    for (cut = 0; cut < full_len; cut++) {
        body_len = cut;
        memcpy(body, full, cut);
        ASSERT_ERR(parse_body(&no_lim), IOCD_EPARSE);
        ASSERT_EQ(r.n, 0);
        ASSERT_STR_CONTAINS(why, "snappy");
    }
    /* Flip each byte: whatever the outcome, a refused body feeds nothing. */
    for (i = 0; i < full_len; i++) {
        memcpy(body, full, full_len);
        body_len = full_len;
        body[i] ^= 0x5a;
        err = parse_body(&no_lim);
        if (err != IOCD_OK) {
            ASSERT_TRUE(err == IOCD_EPARSE || err == IOCD_ETOOBIG);
            ASSERT_EQ(r.n, 0);
        }
    }
    memcpy(body, "\x10garbage that is not snappy", 27);
    body_len = 27;
    ASSERT_ERR(parse_body(&no_lim), IOCD_EPARSE);
    ASSERT_STR_CONTAINS(why, "snappy: corrupt input");
}

TEST(rw_decompressed_size_over_max_raw)
{
    col_sink sink = { rec_sample, rec_reject, &r };
    pbuf req = { .n = 0 }, ts = { .n = 0 };
    size_t i;

    label(&ts, "__name__", "m");
    for (i = 0; i < 20; i++)
        sample(&ts, (int64_t)i, 1.0);
    pmsg(&req, 1, &ts);
    compress(req.b, req.n);
    memset(&r, 0, sizeof(r));
    ASSERT_ERR(col_rw_parse(body, body_len, req.n - 1, &no_lim, &sink, &st, why, sizeof(why)),
               IOCD_ETOOBIG);
    ASSERT_STR_CONTAINS(why, "limit");
    ASSERT_EQ(r.n, 0);
    ASSERT_OK(col_rw_parse(body, body_len, req.n, &no_lim, &sink, &st, why, sizeof(why)));
    ASSERT_EQ(r.n, 20);
    /* A header claiming 1 GiB is refused before anything is allocated or decoded. */
    memcpy(body, "\x80\x80\x80\x80\x04\x00", 6);
    ASSERT_ERR(col_rw_parse(body, 6, 1 << 20, &no_lim, &sink, &st, why, sizeof(why)),
               IOCD_ETOOBIG);
}

TEST(rw_series_without_name_refuses_whole_request)
{
    pbuf req = { .n = 0 }, ts = { .n = 0 };

    label(&ts, "__name__", "good");
    sample(&ts, 1, 1);
    pmsg(&req, 1, &ts);
    ts.n = 0;
    label(&ts, "job", "no name");
    sample(&ts, 1, 1);
    pmsg(&req, 1, &ts);
    ASSERT_ERR(parse_req(&req, &no_lim), IOCD_EPARSE);
    ASSERT_STR_CONTAINS(why, "series without __name__ label (series 2)");
    ASSERT_EQ(r.n, 0); /* the good first series was not fed either */
    req.n = 0;
    ts.n = 0;
    label(&ts, "__name__", "");
    sample(&ts, 1, 1);
    pmsg(&req, 1, &ts);
    ASSERT_ERR(parse_req(&req, &no_lim), IOCD_EPARSE);
    ASSERT_STR_CONTAINS(why, "empty __name__");
    req.n = 0;
    ts.n = 0;
    label(&ts, "", "v");
    label(&ts, "__name__", "m");
    pmsg(&req, 1, &ts);
    ASSERT_ERR(parse_req(&req, &no_lim), IOCD_EPARSE);
    ASSERT_STR_CONTAINS(why, "empty name");
}

TEST(rw_limits_are_enforced)
{
    col_parse_limits lim = { 0, 3, 8, 10 };
    pbuf req = { .n = 0 }, ts = { .n = 0 };

    label(&ts, "__name__", "m");
    label(&ts, "a", "1");
    label(&ts, "ward", "0123456789");
    sample(&ts, 1, 1);
    pmsg(&req, 1, &ts);
    ASSERT_OK(parse_req(&req, &lim)); /* exactly at every limit */
    ASSERT_EQ(r.n, 1);
    label(&ts, "b", "2"); /* appended to the series after re-encoding below */
    req.n = 0;
    pmsg(&req, 1, &ts);
    ASSERT_ERR(parse_req(&req, &lim), IOCD_EPARSE);
    ASSERT_STR_CONTAINS(why, "too many labels: more than 3");
    ASSERT_EQ(r.n, 0);
    req.n = 0;
    ts.n = 0;
    label(&ts, "__name__", "m");
    label(&ts, "too_long_", "1");
    pmsg(&req, 1, &ts);
    ASSERT_ERR(parse_req(&req, &lim), IOCD_EPARSE);
    ASSERT_STR_CONTAINS(why, "label too long: name of 9 bytes, max 8");
    req.n = 0;
    ts.n = 0;
    label(&ts, "__name__", "m");
    label(&ts, "ward", "01234567890");
    pmsg(&req, 1, &ts);
    ASSERT_ERR(parse_req(&req, &lim), IOCD_EPARSE);
    ASSERT_STR_CONTAINS(why, "label too long: value of ward is 11 bytes, max 10");
    /* the metric name is a label value too */
    req.n = 0;
    ts.n = 0;
    label(&ts, "__name__", "a_long_metric");
    pmsg(&req, 1, &ts);
    ASSERT_ERR(parse_req(&req, &lim), IOCD_EPARSE);
    ASSERT_STR_CONTAINS(why, "value of __name__");
}

TEST(rw_many_labels_without_a_limit)
{
    pbuf req = { .n = 0 }, ts = { .n = 0 };
    char name[16];
    int i;

    for (i = 0; i < 200; i++) {
        snprintf(name, sizeof(name), "l%03d", i);
        label(&ts, name, "v");
    }
    label(&ts, "__name__", "wide");
    sample(&ts, 1, 1);
    pmsg(&req, 1, &ts);
    ASSERT_OK(parse_req(&req, &no_lim));
    ASSERT_EQ(r.n, 1);
    ASSERT_TRUE(strncmp(r.out, "wide{l000=v,l001=v,", 19) == 0);
    ASSERT_STR_CONTAINS(r.out, ",l199=v} 1 1\n");
}

TEST(rw_labels_must_be_utf8)
{
    static const char *bad[] = {
        "\xff",         "caf\xc3",      /* truncated sequence */
        "\xc0\xaf",     /* overlong '/' */
        "\xed\xa0\x80", /* UTF-16 surrogate */
        "\xf4\x90\x80\x80", /* above U+10FFFF */
    };
    pbuf req = { .n = 0 }, ts = { .n = 0 };
    size_t i;

    for (i = 0; i < IOCD_ARRAY_LEN(bad); i++) {
        req.n = ts.n = 0;
        label(&ts, "__name__", "m");
        label(&ts, "ward", bad[i]);
        sample(&ts, 1, 1);
        pmsg(&req, 1, &ts);
        ASSERT_ERR(parse_req(&req, &no_lim), IOCD_EPARSE);
        ASSERT_STR_CONTAINS(why, "label value is not valid UTF-8");
        req.n = ts.n = 0;
        label(&ts, "__name__", "m");
        label(&ts, bad[i], "v");
        pmsg(&req, 1, &ts);
        ASSERT_ERR(parse_req(&req, &no_lim), IOCD_EPARSE);
        ASSERT_STR_CONTAINS(why, "label name is not valid UTF-8");
    }
    req.n = ts.n = 0;
    label(&ts, "__name__", "m");
    label(&ts, "ph\xc6\xb0\xe1\xbb\x9dng", "\xc4\x90\xe1\xbb\x91ng \xc4\x90\x61 \xf0\x9f\x9a\xa6");
    sample(&ts, 1, 1);
    pmsg(&req, 1, &ts);
    ASSERT_OK(parse_req(&req, &no_lim));
    ASSERT_STR_EQ(r.out,
                  "m{ph\xc6\xb0\xe1\xbb\x9dng=\xc4\x90\xe1\xbb\x91ng \xc4\x90\x61 \xf0\x9f\x9a\xa6} 1 1\n");
}

/* Builds a request whose only series is raw bytes ts_raw (a hand-made TimeSeries). */
static iocd_err parse_series_raw(const void *ts_raw, size_t len)
{
    pbuf req = { .n = 0 };

    pbytes(&req, 1, ts_raw, len);
    return parse_req(&req, &no_lim);
}

TEST(rw_malformed_protobuf_is_refused)
{
    pbuf req = { .n = 0 }, ts = { .n = 0 }, s = { .n = 0 };

    /* groups (wire types 3, 4) and invalid wire types 6, 7 */
    ASSERT_ERR(parse_series_raw("\x0b", 1), IOCD_EPARSE);
    ASSERT_STR_CONTAINS(why, "groups are not supported");
    ASSERT_ERR(parse_series_raw("\x0c", 1), IOCD_EPARSE);
    ASSERT_STR_CONTAINS(why, "groups are not supported");
    ASSERT_ERR(parse_series_raw("\x0e", 1), IOCD_EPARSE);
    ASSERT_STR_CONTAINS(why, "invalid wire type");
    ASSERT_ERR(parse_series_raw("\x0f", 1), IOCD_EPARSE);
    /* field number 0 */
    ASSERT_ERR(parse_series_raw("\x00\x01", 2), IOCD_EPARSE);
    ASSERT_STR_CONTAINS(why, "invalid field number");
    /* varint of 11 bytes, and a tenth byte above 1 */
    ASSERT_ERR(parse_series_raw("\x28\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 11), IOCD_EPARSE);
    ASSERT_STR_CONTAINS(why, "varint longer than 64 bits");
    ASSERT_ERR(parse_series_raw("\x28\xff\xff\xff\xff\xff\xff\xff\xff\x02", 10), IOCD_EPARSE);
    ASSERT_ERR(parse_series_raw("\x28\xff\xff", 3), IOCD_EPARSE);
    ASSERT_STR_CONTAINS(why, "truncated varint in TimeSeries");
    /* a Label whose length runs past its series (though not past the request) */
    req.n = 0;
    ptag(&req, 1, 2);
    pv(&req, 4);
    memcpy(req.b + req.n, "\x0a\x05\x0a\x01", 4);
    req.n += 4;
    pstr(&req, 5, "padding past the series");
    ASSERT_ERR(parse_req(&req, &no_lim), IOCD_EPARSE);
    ASSERT_STR_CONTAINS(why, "length past the end of the enclosing message in TimeSeries");
    /* a length past the end of the request */
    ASSERT_ERR(parse_series_raw("\x0a\x7f", 2), IOCD_EPARSE);
    /* a truncated fixed64 and fixed32 */
    ASSERT_ERR(parse_series_raw("\x49\x01\x02\x03", 4), IOCD_EPARSE);
    ASSERT_STR_CONTAINS(why, "truncated fixed-width field");
    ASSERT_ERR(parse_series_raw("\x4d\x01\x02\x03", 4), IOCD_EPARSE);
    /* known fields with the wrong wire type */
    ts.n = 0;
    label(&ts, "__name__", "m");
    ptag(&s, 1, 0); /* value as a varint */
    pv(&s, 1);
    pmsg(&ts, 2, &s);
    ASSERT_ERR(parse_series_raw(ts.b, ts.n), IOCD_EPARSE);
    ASSERT_STR_CONTAINS(why, "field 1 of Sample has wire type 0, want 1");
    ts.n = s.n = 0;
    label(&ts, "__name__", "m");
    pfixed(&s, 2, 5, 8); /* timestamp as fixed64 */
    pmsg(&ts, 2, &s);
    ASSERT_ERR(parse_series_raw(ts.b, ts.n), IOCD_EPARSE);
    ASSERT_STR_CONTAINS(why, "field 2 of Sample has wire type 1, want 0");
    ASSERT_ERR(parse_series_raw("\x08\x01", 2), IOCD_EPARSE); /* labels as a varint */
    ASSERT_STR_CONTAINS(why, "field 1 of TimeSeries");
    ASSERT_ERR(parse_series_raw("\x0a\x02\x08\x01", 4), IOCD_EPARSE); /* Label.name varint */
    ASSERT_STR_CONTAINS(why, "field 1 of Label");
    req.n = 0;
    ptag(&req, 1, 0); /* a series as a varint */
    pv(&req, 1);
    ASSERT_ERR(parse_req(&req, &no_lim), IOCD_EPARSE);
    ASSERT_STR_CONTAINS(why, "field 1 of WriteRequest");
    ASSERT_EQ(r.n, 0);
}

TEST(rw_sink_error_stops_feeding)
{
    pbuf req = { .n = 0 }, ts = { .n = 0 };
    int i;

    label(&ts, "__name__", "m");
    for (i = 0; i < 5; i++)
        sample(&ts, i, i);
    pmsg(&req, 1, &ts);
    r.fail_after = 2;
    ASSERT_ERR(parse_req(&req, &no_lim), IOCD_ETOOBIG);
    ASSERT_EQ(r.n, 2);
    ASSERT_EQ(st.samples, 2);
    r.fail_after = 0;
}

TEST(rw_null_errbuf_and_stats_are_accepted)
{
    col_sink sink = { rec_sample, rec_reject, &r };
    pbuf req = { .n = 0 }, ts = { .n = 0 };

    label(&ts, "job", "x");
    pmsg(&req, 1, &ts);
    compress(req.b, req.n);
    memset(&r, 0, sizeof(r));
    ASSERT_ERR(col_rw_parse(body, body_len, 1 << 20, NULL, &sink, NULL, NULL, 0), IOCD_EPARSE);
    ASSERT_ERR(col_rw_parse("x", 1, 1 << 20, NULL, &sink, NULL, NULL, 0), IOCD_EPARSE);
}
