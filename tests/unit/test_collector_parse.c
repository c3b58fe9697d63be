/* tests/unit/test_collector_parse.c - the ingest parsers: line protocol, JSON lines,
 * remote write. A recording sink turns each sample into "name{k=v,...} t v" text. */
#include "tests/unit/harness.h"

#include <math.h>

#include "collector/parse_int.h"

typedef struct rec {
    char out[8192];
    char rejects[2048];
    int n, n_rej;
    iocd_err fail_with;
} rec;

static iocd_err rec_sample(void *ud, const iocd_label *l, size_t n, uint64_t tagset, int64_t t,
                           double v)
{
    rec *r = ud;
    (void)tagset;
    size_t len = strlen(r->out), i;

    len += (size_t)snprintf(r->out + len, sizeof(r->out) - len, "%.*s{", (int)l[0].value_len,
                            l[0].value);
    for (i = 1; i < n; i++)
        len += (size_t)snprintf(r->out + len, sizeof(r->out) - len, "%s%.*s=%.*s", i > 1 ? "," : "",
                                (int)l[i].name_len, l[i].name, (int)l[i].value_len, l[i].value);
    snprintf(r->out + len, sizeof(r->out) - len, "} %lld %.17g\n", (long long)t, v);
    r->n++;
    return r->fail_with;
}

static void rec_reject(void *ud, uint64_t line, const char *reason)
{
    rec *r = ud;
    size_t len = strlen(r->rejects);

    snprintf(r->rejects + len, sizeof(r->rejects) - len, "%llu:%s\n", (unsigned long long)line,
             reason);
    r->n_rej++;
}

static rec *lp(const char *text, col_precision prec)
{
    static rec r;
    col_sink sink = { rec_sample, rec_reject, &r };
    col_lp_opts o = { prec, 42, 1, { 1024, 8, 64, 256 } };
    col_parse_stats st;

    memset(&r, 0, sizeof(r));
    memset(&st, 0, sizeof(st));
    ASSERT_OK(col_lp_parse(text, strlen(text), &o, &sink, &st));
    ASSERT_EQ(st.samples, r.n);
    ASSERT_EQ(st.rejected, r.n_rej);
    return &r;
}

TEST(lp_fields_types_and_names)
{
    rec *r = lp("water,ward=w1,device=d1 pressure_bar=2.347,on=true,n=120i,u=7u,off=F,"
                "s=\"x\" 1700000000000000000\ncamera value=25 1700000000000000000\n",
                COL_PREC_NS);

    ASSERT_STR_EQ(r->out, "water_pressure_bar{ward=w1,device=d1} 1700000000000 2.347\n"
                          "water_on{ward=w1,device=d1} 1700000000000 1\n"
                          "water_n{ward=w1,device=d1} 1700000000000 120\n"
                          "water_u{ward=w1,device=d1} 1700000000000 7\n"
                          "water_off{ward=w1,device=d1} 1700000000000 0\n"
                          "camera{} 1700000000000 25\n");
}

/* Integers and timestamps as strtoll/strtoull take them: the extremes pass, one past them,
 * a '+', a lone '-', a negative unsigned and trailing text are refused with the line. */
TEST(lp_integer_and_timestamp_edges)
{
    rec *r = lp("m a=9223372036854775807i,b=-9223372036854775808i,c=18446744073709551615u,"
                "d=-0i,e=007i 1\n"
                "m v=9223372036854775808i 2\nm v=18446744073709551616u 3\nm v=+5i 4\n"
                "m v=-5u 5\nm v=-i 6\nm v=5xi 7\nm v=1 +8\nm v=1 -\nm v=1 9223372036854775808\n"
                "m v=1 -9223372036854775808\nm v=1 12a\n",
                COL_PREC_NS);

    ASSERT_STR_EQ(r->out, "m_a{} 0 9.2233720368547758e+18\nm_b{} 0 -9.2233720368547758e+18\n"
                          "m_c{} 0 1.8446744073709552e+19\nm_d{} 0 0\nm_e{} 0 7\n"
                          "m_v{} -9223372036855 1\n");
    ASSERT_STR_CONTAINS(r->rejects, "2:invalid field value for 'v'");
    ASSERT_STR_CONTAINS(r->rejects, "3:invalid field value for 'v'");
    ASSERT_STR_CONTAINS(r->rejects, "4:invalid field value for 'v'");
    ASSERT_STR_CONTAINS(r->rejects, "5:invalid field value for 'v'");
    ASSERT_STR_CONTAINS(r->rejects, "6:invalid field value for 'v'");
    ASSERT_STR_CONTAINS(r->rejects, "7:invalid field value for 'v'");
    ASSERT_STR_CONTAINS(r->rejects, "8:invalid timestamp '+8'\n");
    ASSERT_STR_CONTAINS(r->rejects, "9:invalid timestamp '-'\n");
    ASSERT_STR_CONTAINS(r->rejects, "10:invalid timestamp '9223372036854775808'\n");
    ASSERT_STR_CONTAINS(r->rejects, "12:invalid timestamp '12a'\n");
    ASSERT_EQ(r->n_rej, 10);
}

TEST(lp_escapes_and_quoted_strings)
{
    rec *r = lp("my\\ m\\,x,t\\ k=v\\,1\\=2 f\\=k=1,s=\"a \\\"b\\\", c=d\" 5\n", COL_PREC_MS);

    ASSERT_STR_EQ(r->out, "my m,x_f=k{t k=v,1=2} 5 1\n");
    r = lp("m s=\"two\nlines\",v=3 7\nm v=4 8\n", COL_PREC_MS);
    ASSERT_STR_EQ(r->out, "m_v{} 7 3\nm_v{} 8 4\n");
}

TEST(lp_precisions_and_rounding)
{
    ASSERT_STR_EQ(lp("m v=1 1700000000123999999\n", COL_PREC_NS)->out, "m_v{} 1700000000123 1\n");
    ASSERT_STR_EQ(lp("m v=1 -1500\n", COL_PREC_US)->out, "m_v{} -2 1\n");
    ASSERT_STR_EQ(lp("m v=1 1700000000\n", COL_PREC_S)->out, "m_v{} 1700000000000 1\n");
    ASSERT_STR_EQ(lp("m v=1 1700000000\nm v=2 1700000000000\nm v=3 1700000000000000\n"
                     "m v=4 1700000000000000000\n",
                     COL_PREC_AUTO)
                      ->out,
                  "m_v{} 1700000000000 1\nm_v{} 1700000000000 2\nm_v{} 1700000000000 3\n"
                  "m_v{} 1700000000000 4\n");
    ASSERT_STR_EQ(lp("m v=1\n", COL_PREC_NS)->out, "m_v{} 42 1\n"); /* arrival time */
}

TEST(lp_bad_lines_are_numbered_and_skipped)
{
    rec *r = lp("# comment\nm v=1 1\nm v=abc 1\n\r\nm\nm,t v=1\nm v=2 2\r\nm v=1 x\n", COL_PREC_MS);

    ASSERT_STR_EQ(r->out, "m_v{} 1 1\nm_v{} 2 2\n");
    ASSERT_STR_CONTAINS(r->rejects, "3:invalid field value for 'v': 'abc'\n");
    ASSERT_STR_CONTAINS(r->rejects, "5:missing fields\n");
    ASSERT_STR_CONTAINS(r->rejects, "6:missing tag value");
    ASSERT_STR_CONTAINS(r->rejects, "8:invalid timestamp 'x'\n");
    ASSERT_EQ(r->n_rej, 4);
}

TEST(lp_limits_and_ranges)
{
    char long_line[2048];
    rec *r;

    memset(long_line, 'a', sizeof(long_line) - 1);
    long_line[sizeof(long_line) - 1] = '\0';
    memcpy(long_line, "m v=1 ", 6);
    r = lp(long_line, COL_PREC_MS);
    ASSERT_STR_CONTAINS(r->rejects, "line too long");
    r = lp("m,a=1,b=2,c=3,d=4,e=5,f=6,g=7,h=8 v=1\n", COL_PREC_MS);
    ASSERT_STR_CONTAINS(r->rejects, "too many tags");
    r = lp("m v=9223372036854775808i\nm v=-1u\nm v=1e309\nm v=1 99999999999999999999\n",
           COL_PREC_MS);
    ASSERT_EQ(r->n, 0);
    ASSERT_EQ(r->n_rej, 4);
}

TEST(lp_floats_are_exact)
{
    static const char *const vals[] = { "0.1",    "2.347", "1032.2",   "123456789.123456789",
                                        "-1.5e3", "1e-7",  "4.9e-324", "0.30000000000000004" };
    char line[128], expect[128];
    size_t i;

    for (i = 0; i < IOCD_ARRAY_LEN(vals); i++) {
        snprintf(line, sizeof(line), "m v=%s 1\n", vals[i]);
        snprintf(expect, sizeof(expect), "m_v{} 1 %.17g\n", strtod(vals[i], NULL));
        ASSERT_STR_EQ(lp(line, COL_PREC_MS)->out, expect);
    }
}

TEST(lp_sink_error_stops_parse)
{
    rec r;
    col_sink sink = { rec_sample, rec_reject, &r };
    col_lp_opts o = { COL_PREC_MS, 0, 1, { 0, 0, 0, 0 } };
    col_parse_stats st;

    memset(&r, 0, sizeof(r));
    memset(&st, 0, sizeof(st));
    r.fail_with = IOCD_ETOOBIG;
    ASSERT_ERR(col_lp_parse("m v=1 1\nm v=2 2\n", 16, &o, &sink, &st), IOCD_ETOOBIG);
    ASSERT_EQ(r.n, 1);
}

static rec *jl(const char *text)
{
    static rec r;
    col_sink sink = { rec_sample, rec_reject, &r };
    col_parse_limits lim = { 4096, 8, 64, 256 };
    col_parse_stats st;

    memset(&r, 0, sizeof(r));
    memset(&st, 0, sizeof(st));
    ASSERT_OK(col_jsonl_parse(text, strlen(text), 1, &lim, &sink, &st));
    return &r;
}

TEST(jsonl_values_nulls_specials_and_order)
{
    rec *r = jl("{\"values\":[1,null,\"NaN\",-2.5e1],\"metric\":{\"ward\":\"\\u0110\",\"__name__\":"
                "\"m\"},\"timestamps\":[1,2,3,4]}\r\n");

    ASSERT_STR_EQ(r->out, "m{ward=\xc4\x90} 1 1\nm{ward=\xc4\x90} 3 nan\nm{ward=\xc4\x90} 4 -25\n");
}

TEST(jsonl_bad_lines_report_line_and_column)
{
    rec *r = jl("{\"metric\":{\"__name__\":\"m\"},\"values\":[1],\"timestamps\":[1]}\n"
                "{oops}\n\n"
                "{\"metric\":{\"a\":\"b\"},\"values\":[1],\"timestamps\":[1]}\n"
                "{\"metric\":{\"__name__\":\"m\"},\"values\":[1,2],\"timestamps\":[1]}\n"
                "{\"metric\":{\"__name__\":\"m\"},\"values\":[01],\"timestamps\":[1]}\n");

    ASSERT_EQ(r->n, 1);
    ASSERT_STR_CONTAINS(r->rejects, "2:col 2: expected a string\n");
    ASSERT_STR_CONTAINS(r->rejects, "4:metric has no __name__\n");
    ASSERT_STR_CONTAINS(r->rejects, "5:values and timestamps differ in length\n");
    ASSERT_STR_CONTAINS(r->rejects, "6:col 38: leading zero in number\n");
}

/* ---- Remote write ------------------------------------------------------------------- */

static size_t put_varint(uint8_t *p, uint64_t v)
{
    size_t n = 0;

    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

static size_t put_bytes(uint8_t *p, int field, const void *data, size_t len)
{
    size_t n = put_varint(p, (uint64_t)field << 3 | 2);

    n += put_varint(p + n, len);
    memcpy(p + n, data, len);
    return n + len;
}

static size_t label(uint8_t *p, const char *k, const char *v)
{
    uint8_t tmp[256];
    size_t n = put_bytes(tmp, 1, k, strlen(k));

    n += put_bytes(tmp + n, 2, v, strlen(v));
    return put_bytes(p, 1, tmp, n);
}

static size_t sample(uint8_t *p, int64_t t, uint64_t vbits)
{
    uint8_t tmp[32];
    size_t n = put_varint(tmp, 1 << 3 | 1);

    memcpy(tmp + n, &vbits, 8);
    n += 8;
    n += put_varint(tmp + n, 2 << 3);
    n += put_varint(tmp + n, (uint64_t)t);
    return put_bytes(p, 2, tmp, n);
}

/* A literal-only snappy block around raw. */
static size_t snappy_wrap(uint8_t *out, const uint8_t *raw, size_t len)
{
    size_t n = put_varint(out, len);

    out[n++] = 61 << 2;
    out[n++] = (uint8_t)((len - 1) & 0xff);
    out[n++] = (uint8_t)((len - 1) >> 8);
    memcpy(out + n, raw, len);
    return n + len;
}

TEST(remote_write_decodes_and_validates_whole_body)
{
    uint8_t ts[512], req[1024], body[1100];
    size_t n = 0, rn, bn, cut;
    double one = 1.5;
    uint64_t bits, stale = 0x7ff0000000000002ULL;
    rec r;
    col_sink sink = { rec_sample, rec_reject, &r };
    col_parse_limits lim = { 0, 8, 64, 256 };
    col_parse_stats st;
    char err[256];

    memcpy(&bits, &one, 8);
    n += label(ts + n, "ward", "w1");
    n += sample(ts + n, 1700000000000, bits);
    n += label(ts + n, "__name__", "drain_level");
    n += sample(ts + n, 1700000010000, stale);
    rn = put_bytes(req, 1, ts, n);
    bn = snappy_wrap(body, req, rn);
    memset(&r, 0, sizeof(r));
    memset(&st, 0, sizeof(st));
    ASSERT_OK(col_rw_parse((char *)body, bn, 1 << 20, &lim, &sink, &st, err, sizeof(err)));
    ASSERT_STR_EQ(r.out, "drain_level{ward=w1} 1700000000000 1.5\n"
                         "drain_level{ward=w1} 1700000010000 nan\n");
    /* Every truncation of the protobuf is refused whole, feeding nothing. */
    for (cut = 1; cut < rn; cut++) {
        iocd_err e;
        bn = snappy_wrap(body, req, cut);
        memset(&r, 0, sizeof(r));
        e = col_rw_parse((char *)body, bn, 1 << 20, &lim, &sink, &st, err, sizeof(err));
        if (e == IOCD_OK)
            continue; /* a prefix can itself be a valid, shorter message */
        ASSERT_ERR(e, IOCD_EPARSE);
        ASSERT_EQ(r.n, 0);
    }
    ASSERT_ERR(col_rw_parse("\xff\xff garbage", 10, 1 << 20, &lim, &sink, &st, err, sizeof(err)),
               IOCD_EPARSE);
    ASSERT_STR_CONTAINS(err, "snappy");
    bn = snappy_wrap(body, req, rn);
    ASSERT_ERR(col_rw_parse((char *)body, bn, 16, &lim, &sink, &st, err, sizeof(err)),
               IOCD_ETOOBIG);
    n = label(ts, "ward", "w1");
    rn = put_bytes(req, 1, ts, n);
    bn = snappy_wrap(body, req, rn);
    ASSERT_ERR(col_rw_parse((char *)body, bn, 1 << 20, &lim, &sink, &st, err, sizeof(err)),
               IOCD_EPARSE);
    ASSERT_STR_CONTAINS(err, "without __name__");
}

TEST(remote_write_refuses_wrong_wire_types_bad_utf8_and_long_varints)
{
    uint8_t ts[256], req[512], body[600], smp[32];
    size_t n, rn, bn, sn = 0;
    rec r;
    col_sink sink = { rec_sample, rec_reject, &r };
    col_parse_limits lim = { 0, 8, 64, 256 };
    col_parse_stats st;
    char err[256];

    /* Sample.value sent as a varint instead of a double. */
    n = label(ts, "__name__", "m");
    sn = put_varint(smp, 1 << 3 | 0);
    sn += put_varint(smp + sn, 5);
    n += put_bytes(ts + n, 2, smp, sn);
    rn = put_bytes(req, 1, ts, n);
    bn = snappy_wrap(body, req, rn);
    memset(&r, 0, sizeof(r));
    memset(&st, 0, sizeof(st));
    ASSERT_ERR(col_rw_parse((char *)body, bn, 1 << 20, &lim, &sink, &st, err, sizeof(err)),
               IOCD_EPARSE);
    ASSERT_STR_CONTAINS(err, "wrong wire type");
    ASSERT_EQ(r.n, 0);
    /* A label value that encodes a UTF-16 surrogate (ED A0 80). */
    n = label(ts, "__name__", "m");
    n += label(ts + n, "ward", "\xed\xa0\x80");
    rn = put_bytes(req, 1, ts, n);
    bn = snappy_wrap(body, req, rn);
    ASSERT_ERR(col_rw_parse((char *)body, bn, 1 << 20, &lim, &sink, &st, err, sizeof(err)),
               IOCD_EPARSE);
    ASSERT_STR_CONTAINS(err, "UTF-8");
    /* A varint of eleven bytes, or ten with more than 64 bits. */
    req[0] = 1 << 3 | 2;
    memcpy(req + 1, "\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f", 10);
    bn = snappy_wrap(body, req, 11);
    ASSERT_ERR(col_rw_parse((char *)body, bn, 1 << 20, &lim, &sink, &st, err, sizeof(err)),
               IOCD_EPARSE);
}

TEST(jsonl_refuses_invalid_utf8)
{
    rec *r = jl(
        "{\"metric\":{\"__name__\":\"m\",\"w\":\"\xff\"},\"values\":[1],\"timestamps\":[1]}\n"
        "{\"metric\":{\"__name__\":\"m\",\"w\":\"\xc0\xaf\"},\"values\":[1],\"timestamps\":[1]}\n"
        "{\"metric\":{\"__name__\":\"m\",\"w\":\"\xc4\x90\"},\"values\":[1],\"timestamps\":[1]}\n");

    ASSERT_EQ(r->n, 1);
    ASSERT_EQ(r->n_rej, 2);
    ASSERT_STR_CONTAINS(r->rejects, "1:col 32: invalid UTF-8 in string\n");
}
