/* tests/unit/test_alerts_devices.c - the device registry: the CSV parser (RFC 4180 quoting,
 * line numbers across quoted line breaks, what spreadsheets write), the JSON parser, the checks
 * every row goes through, and the registry itself (replace and update, repeats, the cap, a
 * reopen, a report enriched from it). */
#include "tests/unit/harness.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "alerts/alerts_int.h"

#define GOT_MAX 16

typedef struct got {
    size_t n, n_rej;
    uint64_t line[GOT_MAX], rej_line[GOT_MAX];
    char f[GOT_MAX][DEV_NFIELDS][256];
    double lat[GOT_MAX], lon[GOT_MAX];
    bool pos[GOT_MAX];
    char why[GOT_MAX][200];
} got;

static iocd_err on_row(void *ud, const device_row *r)
{
    got *g = ud;
    int i;

    if (g->n == GOT_MAX)
        test_fail_at(__FILE__, __LINE__, "too many rows");
    if (r->line == 0 || r->f[DEV_ID][0] == '\0')
        test_fail_at(__FILE__, __LINE__, "a row without a line or an id");
    g->line[g->n] = r->line;
    for (i = 0; i < DEV_NFIELDS; i++)
        snprintf(g->f[g->n][i], sizeof(g->f[g->n][i]), "%s", r->f[i]);
    g->lat[g->n] = r->latitude;
    g->lon[g->n] = r->longitude;
    g->pos[g->n] = r->has_position;
    g->n++;
    return IOCD_OK;
}

static void on_reject(void *ud, uint64_t line, const char *reason)
{
    got *g = ud;

    if (g->n_rej == GOT_MAX)
        test_fail_at(__FILE__, __LINE__, "too many rejections");
    g->rej_line[g->n_rej] = line;
    snprintf(g->why[g->n_rej], sizeof(g->why[g->n_rej]), "%s", reason);
    g->n_rej++;
}

static iocd_err parse(bool json, const char *text, got *g, char *errbuf, size_t errlen)
{
    device_sink sink = { on_row, on_reject, g };

    memset(g, 0, sizeof(*g));
    errbuf[0] = '\0';
    return json ? devices_parse_json(text, strlen(text), &sink, errbuf, errlen)
                : devices_parse_csv(text, strlen(text), &sink, errbuf, errlen);
}

TEST(csv_quoted_fields_keep_commas_quotes_and_vietnamese)
{
    const char *csv = "device,kind,domain,ward,address,latitude,longitude\n"
                      "cam-031,camera,cameras,gia_sang,\"Số 12, đường \"\"Hoàng Văn Thụ\"\"\","
                      "21.5942,105.8412\n"
                      "sl-0101,lamp,lighting,phu_xa,Ngõ 3 Phú Xá,,\n";
    char errbuf[256];
    got g;

    ASSERT_OK(parse(false, csv, &g, errbuf, sizeof(errbuf)));
    ASSERT_EQ(g.n, 2);
    ASSERT_EQ(g.n_rej, 0);
    ASSERT_STR_EQ(g.f[0][DEV_ID], "cam-031");
    ASSERT_STR_EQ(g.f[0][DEV_ADDRESS], "Số 12, đường \"Hoàng Văn Thụ\"");
    ASSERT_STR_EQ(g.f[0][DEV_WARD], "gia_sang");
    ASSERT_TRUE(g.pos[0]);
    ASSERT_DBL_EQ(g.lat[0], 21.5942, 1e-12);
    ASSERT_DBL_EQ(g.lon[0], 105.8412, 1e-12);
    ASSERT_EQ(g.line[0], 2);
    ASSERT_FALSE(g.pos[1]);
    ASSERT_STR_EQ(g.f[1][DEV_ADDRESS], "Ngõ 3 Phú Xá");
    ASSERT_EQ(g.line[1], 3);
}

TEST(csv_line_numbers_count_quoted_line_breaks_crlf_and_blank_lines)
{
    const char *csv = "device,address\r\n"
                      "\r\n"
                      "a,\"Tổ 5,\r\nphường Phú Xá\"\r\n"
                      "b,\"x\ny\nz\"\n"
                      "\n"
                      "c,plain\n"
                      "d,\"no end";
    char errbuf[256];
    got g;

    ASSERT_OK(parse(false, csv, &g, errbuf, sizeof(errbuf)));
    ASSERT_EQ(g.n, 3);
    ASSERT_EQ(g.line[0], 3);
    ASSERT_STR_EQ(g.f[0][DEV_ADDRESS], "Tổ 5, phường Phú Xá"); /* the break is one space */
    ASSERT_EQ(g.line[1], 5);
    ASSERT_STR_EQ(g.f[1][DEV_ADDRESS], "x y z");
    ASSERT_EQ(g.line[2], 9);
    ASSERT_EQ(g.n_rej, 1);
    ASSERT_EQ(g.rej_line[0], 10);
    ASSERT_STR_CONTAINS(g.why[0], "not closed");
}

TEST(csv_what_spreadsheets_write_is_accepted)
{
    /* A byte order mark, names in any case with blanks, aliases, a column of the sheet's own,
     * blanks around a quoted field, empty trailing fields. */
    const char *csv = "\xEF\xBB\xBF"
                      " ID ,Note,Lat,LNG,Kind\n"
                      "cam-1,  hello  , \"21.5\" ,105.8,camera,,\n"
                      "cam-2,,-0.5,-179.9,\n";
    char errbuf[256];
    got g;

    ASSERT_OK(parse(false, csv, &g, errbuf, sizeof(errbuf)));
    ASSERT_EQ(g.n_rej, 0);
    ASSERT_EQ(g.n, 2);
    ASSERT_STR_EQ(g.f[0][DEV_ID], "cam-1");
    ASSERT_STR_EQ(g.f[0][DEV_KIND], "camera");
    ASSERT_DBL_EQ(g.lat[0], 21.5, 0);
    ASSERT_DBL_EQ(g.lon[1], -179.9, 0);
    ASSERT_STR_EQ(g.f[1][DEV_KIND], "");
}

TEST(csv_bad_rows_are_rejected_with_their_line_and_reason)
{
    const char *csv = "device,ward,latitude,longitude\n"
                      "ok-1,phu_xa,21.6,105.8\n"
                      "short,phu_xa,21.6\n"
                      "lat,phu_xa,91,105.8\n"
                      "lon,phu_xa,21.6,180.5\n"
                      "half,phu_xa,21.6,\n"
                      "comma,phu_xa,\"21,6\",105.8\n"
                      "word,phu_xa,north,105.8\n"
                      "hex,phu_xa,0x10,105.8\n"
                      ",phu_xa,21.6,105.8\n"
                      "\"quoted\"tail,phu_xa,,\n"
                      "bad-utf8,\xC3\x28,,\n"
                      "ctl,a\x01,,\n"
                      "many,a,1,2,3\n"
                      "ok-2,gia_sang,-21.6,-105.8\n";
    char errbuf[256];
    got g;

    ASSERT_OK(parse(false, csv, &g, errbuf, sizeof(errbuf)));
    ASSERT_EQ(g.n, 2);
    ASSERT_STR_EQ(g.f[0][DEV_ID], "ok-1");
    ASSERT_STR_EQ(g.f[1][DEV_ID], "ok-2");
    ASSERT_EQ(g.line[1], 15);
    ASSERT_EQ(g.n_rej, 12);
    ASSERT_EQ(g.rej_line[0], 3);
    ASSERT_STR_CONTAINS(g.why[0], "3 fields where the header has 4");
    ASSERT_STR_CONTAINS(g.why[1], "latitude 91 is out of range");
    ASSERT_STR_CONTAINS(g.why[2], "longitude 180.5 is out of range");
    ASSERT_STR_CONTAINS(g.why[3], "go together");
    ASSERT_STR_CONTAINS(g.why[4], "decimals take a point");
    ASSERT_STR_CONTAINS(g.why[5], "not a number");
    ASSERT_STR_CONTAINS(g.why[6], "not a number");
    ASSERT_STR_CONTAINS(g.why[7], "no device id");
    ASSERT_STR_CONTAINS(g.why[8], "after the closing quote");
    ASSERT_STR_CONTAINS(g.why[9], "ward is not valid UTF-8");
    ASSERT_STR_CONTAINS(g.why[10], "control character");
    ASSERT_STR_CONTAINS(g.why[11], "5 fields where the header has 4");
    ASSERT_EQ(g.rej_line[11], 14);
}

TEST(csv_without_a_usable_header_is_refused_whole)
{
    char errbuf[256];
    got g;

    ASSERT_ERR(parse(false, "", &g, errbuf, sizeof(errbuf)), IOCD_EPARSE);
    ASSERT_STR_CONTAINS(errbuf, "no header row");
    ASSERT_ERR(parse(false, "\n\nname,ward\ncam-1,x\n", &g, errbuf, sizeof(errbuf)), IOCD_EPARSE);
    ASSERT_STR_CONTAINS(errbuf, "line 3 (the header) names no \"device\" column");
    ASSERT_ERR(parse(false, "device,lat,latitude\n", &g, errbuf, sizeof(errbuf)), IOCD_EPARSE);
    ASSERT_STR_CONTAINS(errbuf, "two columns give the latitude");
    ASSERT_ERR(parse(false, "device,\"ward\n", &g, errbuf, sizeof(errbuf)), IOCD_EPARSE);
    ASSERT_STR_CONTAINS(errbuf, "not closed");
    ASSERT_EQ(g.n, 0);
    /* A header alone is an empty list. */
    ASSERT_OK(parse(false, "device,ward\r\n", &g, errbuf, sizeof(errbuf)));
    ASSERT_EQ(g.n + g.n_rej, 0);
}

TEST(json_items_are_checked_one_by_one)
{
    const char *json = "[\n"
                       "  {\"device\": \"cam-1\", \"latitude\": 21.5, \"longitude\": 105.8,\n"
                       "   \"address\": \"S\\u1ed1 12\", \"extra\": true},\n"
                       "  {\"id\": 42, \"ward\": null, \"lat\": \"21.6\", \"lon\": \"105.9\"},\n"
                       "  {\"device\": \"cam-3\", \"where\": {\"nested\": 1}},\n"
                       "  \"cam-4\",\n"
                       "  {\"device\": \"cam-5\", \"kind\": false},\n"
                       "  {\"device\": \"cam-6\", \"id\": \"cam-6b\"},\n"
                       "  {\"device\": \"cam-7\", \"latitude\": 95, \"longitude\": 1},\n"
                       "  {\"device\": \"cam-8\"}\n"
                       "]\n";
    char errbuf[256];
    got g;

    ASSERT_OK(parse(true, json, &g, errbuf, sizeof(errbuf)));
    ASSERT_EQ(g.n, 3);
    ASSERT_STR_EQ(g.f[0][DEV_ADDRESS], "Số 12");
    ASSERT_EQ(g.line[0], 2);
    ASSERT_STR_EQ(g.f[1][DEV_ID], "42");
    ASSERT_EQ(g.line[1], 4);
    ASSERT_DBL_EQ(g.lon[1], 105.9, 0);
    ASSERT_STR_EQ(g.f[2][DEV_ID], "cam-8");
    ASSERT_EQ(g.line[2], 10);
    ASSERT_EQ(g.n_rej, 5);
    ASSERT_EQ(g.rej_line[0], 5);
    ASSERT_STR_CONTAINS(g.why[0], "item 3: invalid JSON");
    ASSERT_STR_CONTAINS(g.why[1], "item 4 is not an object");
    ASSERT_STR_CONTAINS(g.why[2], "\"kind\" must be a string");
    ASSERT_STR_CONTAINS(g.why[3], "two keys give the device");
    ASSERT_STR_CONTAINS(g.why[4], "item 7: latitude 95 is out of range");
}

TEST(json_that_does_not_parse_as_a_list_is_refused_whole)
{
    char errbuf[256];
    got g;

    ASSERT_ERR(parse(true, "{\"device\": \"x\"}", &g, errbuf, sizeof(errbuf)), IOCD_EPARSE);
    ASSERT_STR_CONTAINS(errbuf, "expected a JSON array");
    ASSERT_ERR(parse(true, "[{\"device\": \"x\"}", &g, errbuf, sizeof(errbuf)), IOCD_EPARSE);
    ASSERT_ERR(parse(true, "[{\"device\": \"x}]", &g, errbuf, sizeof(errbuf)), IOCD_EPARSE);
    ASSERT_STR_CONTAINS(errbuf, "item 1");
    ASSERT_ERR(parse(true, "[{\"device\": \"x\"},]", &g, errbuf, sizeof(errbuf)), IOCD_EPARSE);
    ASSERT_ERR(parse(true, "[{\"device\": \"x\"}] x", &g, errbuf, sizeof(errbuf)), IOCD_EPARSE);
    ASSERT_STR_CONTAINS(errbuf, "text after the array");
    ASSERT_ERR(parse(true, "[{\"device\": \"x\"}\n\n{}]", &g, errbuf, sizeof(errbuf)), IOCD_EPARSE);
    ASSERT_STR_CONTAINS(errbuf, "line 3: expected ',' or ']' after item 1");
    ASSERT_OK(parse(true, " [ ] ", &g, errbuf, sizeof(errbuf)));
    ASSERT_EQ(g.n + g.n_rej, 0);
}

/* ---- The registry ---------------------------------------------------------------------------- */

static alert_center *open_center(size_t devices_max)
{
    static store *st;
    alert_config cfg;
    alert_center *ac = NULL;
    char path[512], errbuf[256];

    if (st == NULL) {
        snprintf(path, sizeof(path), "%s/data", test_tmpdir());
        if (store_open(path, NULL, &st, errbuf, sizeof(errbuf)) != IOCD_OK)
            test_fail_at(__FILE__, __LINE__, "store_open: %s", errbuf);
    }
    memset(&cfg, 0, sizeof(cfg));
    cfg.st = st;
    cfg.devices_max = devices_max;
    if (alert_center_open(&cfg, &ac, errbuf, sizeof(errbuf)) != IOCD_OK)
        test_fail_at(__FILE__, __LINE__, "alert_center_open: %s", errbuf);
    return ac;
}

static void load(alert_center *ac, const char *text, bool replace, alert_devices_result *res)
{
    char errbuf[256];

    if (alert_devices_load(ac, ALERT_DEVICES_CSV, text, strlen(text), replace, res, errbuf,
                           sizeof(errbuf)) != IOCD_OK)
        test_fail_at(__FILE__, __LINE__, "load: %s", errbuf);
}

static const char *list(alert_center *ac, iocd_buf *b)
{
    alert_device_filter f;

    memset(&f, 0, sizeof(f));
    iocd_buf_reset(b);
    if (alert_devices_list(ac, &f, b) != IOCD_OK)
        test_fail_at(__FILE__, __LINE__, "list");
    return b->data;
}

TEST(registry_replaces_updates_caps_deletes_and_reopens)
{
    alert_center *ac = open_center(3);
    alert_devices_result res;
    iocd_buf b;
    char errbuf[256];

    iocd_buf_init(&b, 0);
    load(ac, "device,ward,address\nb,phu_xa,B1\na,gia_sang,A1\na,gia_sang,A again\n", true, &res);
    ASSERT_EQ(res.stored, 2);
    ASSERT_EQ(res.rejected, 1);
    ASSERT_EQ(res.errors[0].line, 4);
    ASSERT_STR_CONTAINS(res.errors[0].reason, "device \"a\" is already on line 3");
    ASSERT_EQ(res.total, 2);
    ASSERT_STR_CONTAINS(list(ac, &b), "{\"devices\":[{\"device\":\"a\"");
    ASSERT_STR_CONTAINS(b.data, "\"total\":2}");
    /* An update: b changes, c is new, d would pass the cap of 3. */
    load(ac, "device,address\nb,B2\nc,C1\nd,D1\n", false, &res);
    ASSERT_EQ(res.stored, 2);
    ASSERT_EQ(res.rejected, 1);
    ASSERT_EQ(res.errors[0].line, 4);
    ASSERT_STR_CONTAINS(res.errors[0].reason, "at most 3 devices");
    ASSERT_EQ(res.total, 3);
    iocd_buf_reset(&b);
    ASSERT_OK(alert_device_get(ac, "b", &b));
    ASSERT_STR_CONTAINS(b.data, "\"address\":\"B2\"");
    ASSERT_STR_CONTAINS(b.data, "\"ward\":null"); /* an update replaces the whole device */
    /* A replacement where every row is bad changes nothing. */
    load(ac, "device,latitude,longitude\nx,91,0\n", true, &res);
    ASSERT_EQ(res.stored, 0);
    ASSERT_EQ(res.rejected, 1);
    ASSERT_EQ(res.total, 3);
    ASSERT_ERR(
        alert_devices_load(ac, ALERT_DEVICES_CSV, "ward\n", 5, true, &res, errbuf, sizeof(errbuf)),
        IOCD_EPARSE);
    iocd_buf_reset(&b);
    ASSERT_OK(alert_device_delete(ac, "c", &b));
    ASSERT_STR_CONTAINS(b.data, "\"device\":\"c\"");
    ASSERT_ERR(alert_device_delete(ac, "c", &b), IOCD_ENOTFOUND);
    ASSERT_ERR(alert_device_get(ac, "zz", &b), IOCD_ENOTFOUND);
    list(ac, &b);
    alert_center_close(ac);
    /* What was answered is what a new process finds. */
    ac = open_center(3);
    {
        iocd_buf b2;
        iocd_buf_init(&b2, 0);
        ASSERT_STR_EQ(list(ac, &b2), b.data);
        iocd_buf_fini(&b2);
    }
    /* A replacement drops what it does not name. */
    load(ac, "device\nz\n", true, &res);
    ASSERT_EQ(res.removed, 2);
    ASSERT_EQ(res.total, 1);
    alert_center_close(ac);
    iocd_buf_fini(&b);
}

TEST(a_report_about_a_registered_device_is_enriched)
{
    alert_center *ac = open_center(0);
    alert_devices_result res;
    alert_report r;
    iocd_buf b;
    char why[256];

    iocd_buf_init(&b, 0);
    load(ac,
         "device,kind,domain,ward,address,latitude,longitude\n"
         "dr-7,drain,drainage,gia_sang,\"Cống số 7, Gia Sàng\",21.58,105.85\n",
         true, &res);
    ASSERT_EQ(res.stored, 1);
    memset(&r, 0, sizeof(r));
    r.device = "dr-7";
    r.description = "Cống bị tắc";
    ASSERT_OK(alert_incident_report(ac, &r, &b, why, sizeof(why)));
    ASSERT_STR_CONTAINS(b.data, "\"domain\":\"drainage\",\"ward\":\"gia_sang\"");
    ASSERT_STR_CONTAINS(b.data, "\"device\":\"dr-7\",\"device_kind\":\"drain\"");
    ASSERT_STR_CONTAINS(b.data, "\"address\":\"Cống số 7, Gia Sàng\"");
    ASSERT_STR_CONTAINS(b.data, "\"latitude\":21.58,\"longitude\":105.85");
    ASSERT_STR_CONTAINS(b.data, "\"labels\":{\"alertname\":\"field_report\",\"device\":\"dr-7\"");
    /* The report's own ward stands; an unknown device gives nothing. */
    iocd_buf_reset(&b);
    r.ward = "tan_lap";
    r.domain = "water";
    ASSERT_OK(alert_incident_report(ac, &r, &b, why, sizeof(why)));
    ASSERT_STR_CONTAINS(b.data, "\"domain\":\"water\",\"ward\":\"tan_lap\"");
    ASSERT_STR_CONTAINS(b.data, "\"address\":\"Cống số 7, Gia Sàng\"");
    iocd_buf_reset(&b);
    r.device = "nope";
    ASSERT_OK(alert_incident_report(ac, &r, &b, why, sizeof(why)));
    ASSERT_STR_CONTAINS(b.data, "\"device\":\"nope\",\"device_kind\":null,\"address\":null,"
                                "\"latitude\":null");
    r.domain = NULL;
    ASSERT_ERR(alert_incident_report(ac, &r, &b, why, sizeof(why)), IOCD_EINVAL);
    alert_center_close(ac);
    /* The enrichment is kept with the incident. */
    ac = open_center(0);
    iocd_buf_reset(&b);
    ASSERT_OK(alert_incident_get(ac, 1, &b));
    ASSERT_STR_CONTAINS(b.data, "\"latitude\":21.58,\"longitude\":105.85");
    ASSERT_STR_CONTAINS(b.data, "\"device_kind\":\"drain\"");
    alert_center_close(ac);
    iocd_buf_fini(&b);
}
