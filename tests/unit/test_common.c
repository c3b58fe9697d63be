/* tests/unit/test_common.c - errors, buffers, JSON and float encoding, logging, metrics. */
#include "tests/unit/harness.h"

#include <fcntl.h>
#include <math.h>
#include <unistd.h>

#include "common/common.h"

TEST(err_names_and_text)
{
    ASSERT_STR_EQ(iocd_errname(IOCD_ENOSPC), "IOCD_ENOSPC");
    ASSERT_STR_EQ(iocd_strerror(IOCD_OK), "ok");
    ASSERT_STR_EQ(iocd_strerror((iocd_err)9999), "unknown error");
    ASSERT_ERR(iocd_err_from_errno(28 /* ENOSPC */), IOCD_ENOSPC);
}

TEST(buf_cap_is_enforced)
{
    iocd_buf b;

    iocd_buf_init(&b, 8);
    ASSERT_OK(iocd_buf_puts(&b, "12345678"));
    ASSERT_ERR(iocd_buf_putc(&b, 'x'), IOCD_ETOOBIG);
    ASSERT_EQ(b.len, 8);
    ASSERT_STR_EQ(b.data, "12345678");
    iocd_buf_fini(&b);
}

TEST(buf_printf_grows)
{
    iocd_buf b;
    int i;

    iocd_buf_init(&b, 0);
    for (i = 0; i < 1000; i++)
        ASSERT_OK(iocd_buf_printf(&b, "%d,", i));
    ASSERT_STR_CONTAINS(b.data, "998,999,");
    iocd_buf_fini(&b);
}

TEST(json_string_escapes_and_repairs_utf8)
{
    iocd_buf b;
    const char in[] = "a\"b\\c\n\x01 Ph\xe1\xbb\x95 Y\xc3\xaan \xff";

    iocd_buf_init(&b, 0);
    ASSERT_OK(iocd_buf_json_str(&b, in, sizeof(in) - 1));
    ASSERT_STR_EQ(b.data, "\"a\\\"b\\\\c\\n\\u0001 Ph\xe1\xbb\x95 Y\xc3\xaan \xef\xbf\xbd\"");
    iocd_buf_fini(&b);
}

static const char *fmt_float(iocd_buf *b, double v)
{
    iocd_buf_reset(b);
    iocd_buf_float(b, v);
    return b->data;
}

TEST(float_formats_like_prometheus)
{
    iocd_buf b;

    iocd_buf_init(&b, 0);
    ASSERT_STR_EQ(fmt_float(&b, 1.5), "1.5");
    ASSERT_STR_EQ(fmt_float(&b, 2), "2");
    ASSERT_STR_EQ(fmt_float(&b, 0.1), "0.1");
    ASSERT_STR_EQ(fmt_float(&b, -2.347), "-2.347");
    ASSERT_STR_EQ(fmt_float(&b, 1e21), "1000000000000000000000");
    ASSERT_STR_EQ(fmt_float(&b, 1e-7), "0.0000001");
    ASSERT_STR_EQ(fmt_float(&b, 123456.789), "123456.789");
    ASSERT_STR_EQ(fmt_float(&b, NAN), "NaN");
    ASSERT_STR_EQ(fmt_float(&b, -INFINITY), "-Inf");
    ASSERT_STR_EQ(fmt_float(&b, INFINITY), "+Inf");
    ASSERT_STR_EQ(fmt_float(&b, 0.30000000000000004), "0.30000000000000004");
    iocd_buf_fini(&b);
}

/* The shortest round trip the slow, obvious way: the fewest significant digits P whose %.*e
 * reads back as v, then written out in fixed notation. */
static void float_reference(double v, char *out)
{
    char e[64], digits[32];
    int prec, exp10, nd = 0, pos = 0, i;
    const char *p;

    for (prec = 1; prec <= 17; prec++) {
        snprintf(e, sizeof(e), "%.*e", prec - 1, v);
        if (strtod(e, NULL) == v)
            break;
    }
    p = e;
    if (*p == '-')
        out[pos++] = *p++;
    for (; *p != 'e'; p++)
        if (*p >= '0' && *p <= '9')
            digits[nd++] = *p;
    exp10 = atoi(p + 1);
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
    out[pos] = '\0';
}

static uint64_t xorshift(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

/* The exact 128-bit path must give what the definition gives, for any double: random bits,
 * decimals, averages, powers of two and their neighbours (where the spacing below halves),
 * powers of ten and theirs, integers up to 2^53, tiny and huge magnitudes. */
TEST(float_shortest_matches_the_definition)
{
    iocd_buf b;
    uint64_t x = 88172645463325252ULL;
    char want[512];
    int i;

    iocd_buf_init(&b, 0);
    for (i = 0; i < 300000; i++) {
        uint64_t r = xorshift(&x), r2 = xorshift(&x);
        double v;
        switch (i % 10) {
        case 0:
            memcpy(&v, &r, sizeof(v));
            if (isnan(v) || isinf(v))
                continue;
            break;
        case 1:
            v = (double)(int64_t)(r % 2000000001) / 1000.0 - 1e6;
            break;
        case 2:
            v = ldexp((double)(r >> 11), (int)(r2 % 140) - 120);
            break;
        case 3:
            v = (double)(r % 100000) / (double)(r2 % 997 + 1);
            break;
        case 4:
            v = ldexp(1.0, (int)(r % 200) - 100);
            if (r2 & 1)
                v = nextafter(v, 0);
            break;
        case 5:
            v = nextafter((double)(r % 1000000) / 1000.0, (r2 & 1) ? 1e300 : -1e300);
            break;
        case 6:
            v = (double)(r % (UINT64_C(1) << 53));
            break;
        case 7:
            v = pow(10, (int)(r % 40) - 20);
            if (r2 & 1)
                v = nextafter(v, (r2 & 2) ? 0 : 1e300);
            break;
        case 8:
            v = (double)(r % 10000000) * pow(10, (int)(r2 % 30) - 20);
            break;
        default:
            v = -(double)(r % 100000) / 7.0;
            break;
        }
        float_reference(v, want);
        ASSERT_STR_EQ(fmt_float(&b, v), want);
    }
    ASSERT_STR_EQ(fmt_float(&b, 4503599627370495.5), "4503599627370495.5");
    ASSERT_STR_EQ(fmt_float(&b, 9007199254740991), "9007199254740991");
    float_reference(5e-324, want);
    ASSERT_STR_EQ(fmt_float(&b, 5e-324), want);
    iocd_buf_fini(&b);
}

static char *read_log(int fd)
{
    static char out[8192];
    ssize_t n;

    lseek(fd, 0, SEEK_SET);
    n = read(fd, out, sizeof(out) - 1);
    out[n < 0 ? 0 : n] = '\0';
    return out;
}

static int log_file(void)
{
    char path[512];

    snprintf(path, sizeof(path), "%s/log", test_tmpdir());
    return open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
}

TEST(log_logfmt_quotes_values)
{
    int fd = log_file();
    char *s;

    iocd_log_setup(IOCD_LOG_INFO, IOCD_LOG_LOGFMT, fd);
    log_info("api", "http listening", "addr=%s n=%d who=%s", "127.0.0.1:9470", 3, "a b\"c");
    log_debug("api", "hidden", NULL);
    s = read_log(fd);
    ASSERT_STR_CONTAINS(s, " level=info module=api msg=\"http listening\" addr=127.0.0.1:9470 "
                           "n=3 who=\"a b\\\"c\"\n");
    ASSERT_TRUE(strncmp(s, "time=20", 7) == 0);
    ASSERT_TRUE(strstr(s, "hidden") == NULL);
}

TEST(log_json_is_one_object_per_line)
{
    int fd = log_file();
    char *s;

    iocd_log_setup(IOCD_LOG_DEBUG, IOCD_LOG_JSON, fd);
    log_warn("store", "disk slow", "ms=%.1f path=%s", 12.5, "/x\ny");
    s = read_log(fd);
    ASSERT_STR_CONTAINS(s, "\"level\":\"warn\",\"module\":\"store\",\"msg\":\"disk slow\","
                           "\"ms\":\"12.5\",\"path\":\"/x\\ny\"}\n");
    ASSERT_TRUE(s[0] == '{');
}

TEST(log_rate_limits_repeated_errors)
{
    int fd = log_file(), i, lines = 0;
    char *s, *p;

    iocd_log_setup(IOCD_LOG_INFO, IOCD_LOG_LOGFMT, fd);
    for (i = 0; i < 100; i++)
        log_error("collector", "bad line", "n=%d", i);
    s = read_log(fd);
    for (p = s; (p = strchr(p, '\n')) != NULL; p++)
        lines++;
    ASSERT_EQ(lines, 10);
    ASSERT_EQ(iocd_log_suppressed(), 90);
}

TEST(metrics_render_exposition_format)
{
    static const double bounds[] = { 0.01, 0.1, 1 };
    iocd_metric *c, *h;
    iocd_buf b;

    c = iocd_metric_get("t_requests_total", "Requests.", IOCD_METRIC_COUNTER,
                        "handler=\"/x\",code=\"200\"", NULL, 0);
    iocd_metric_add(c, 2);
    iocd_metric_add(c, 1);
    h = iocd_metric_get("t_latency_seconds", "Latency.", IOCD_METRIC_HISTOGRAM, NULL, bounds, 3);
    iocd_metric_observe(h, 0.05);
    iocd_metric_observe(h, 5);
    iocd_buf_init(&b, 0);
    ASSERT_OK(iocd_metrics_render(&b));
    ASSERT_STR_CONTAINS(b.data, "# HELP t_requests_total Requests.\n# TYPE t_requests_total "
                                "counter\nt_requests_total{handler=\"/x\",code=\"200\"} 3\n");
    ASSERT_STR_CONTAINS(b.data, "t_latency_seconds_bucket{le=\"0.01\"} 0\n"
                                "t_latency_seconds_bucket{le=\"0.10000000000000001\"} 1\n");
    ASSERT_STR_CONTAINS(b.data, "t_latency_seconds_bucket{le=\"+Inf\"} 2\n"
                                "t_latency_seconds_sum 5.0499999999999998\n"
                                "t_latency_seconds_count 2\n");
    ASSERT_TRUE(iocd_metric_get("t_requests_total", "Requests.", IOCD_METRIC_COUNTER,
                                "handler=\"/x\",code=\"200\"", NULL, 0) == c);
    iocd_buf_fini(&b);
    iocd_metrics_reset();
}

TEST(addr_split)
{
    char host[64];
    int port = -1;

    ASSERT_OK(iocd_addr_split("127.0.0.1:9470", host, sizeof(host), &port));
    ASSERT_STR_EQ(host, "127.0.0.1");
    ASSERT_EQ(port, 9470);
    ASSERT_OK(iocd_addr_split("[::1]:0", host, sizeof(host), &port));
    ASSERT_STR_EQ(host, "::1");
    ASSERT_EQ(port, 0);
    ASSERT_ERR(iocd_addr_split("::1:80", host, sizeof(host), &port), IOCD_EINVAL);
    ASSERT_ERR(iocd_addr_split("host", host, sizeof(host), &port), IOCD_EINVAL);
    ASSERT_ERR(iocd_addr_split("host:70000", host, sizeof(host), &port), IOCD_EINVAL);
    ASSERT_ERR(iocd_addr_split("host:", host, sizeof(host), &port), IOCD_EINVAL);
    ASSERT_ERR(iocd_addr_split(":80", host, sizeof(host), &port), IOCD_EINVAL);
}

TEST(alloc_counts_bytes)
{
    size_t before = iocd_mem_used();
    char *p = iocd_malloc(1000);

    ASSERT_TRUE(p != NULL);
    ASSERT_EQ(iocd_mem_used(), before + 1000);
    p = iocd_realloc(p, 10);
    ASSERT_EQ(iocd_mem_used(), before + 10);
    iocd_free(p);
    ASSERT_EQ(iocd_mem_used(), before);
}
