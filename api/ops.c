/* api/ops.c - operational endpoints: health, readiness, self-metrics, build info. */
#include "api/api_int.h"

#include <string.h>

static api_status healthy(api_req *req, void *ud)
{
    (void)ud;
    api_reply_text(req, 200, "text/plain; charset=utf-8", "iocd is Healthy.\n");
    return API_DONE;
}

static api_status ready(api_req *req, void *ud)
{
    (void)ud;
    if (atomic_load(&req->srv->st) == NULL)
        api_reply_text(req, 503, "text/plain; charset=utf-8",
                       "iocd is not ready: the store is opening.\n");
    else
        api_reply_text(req, 200, "text/plain; charset=utf-8", "iocd is Ready.\n");
    return API_DONE;
}

static api_status metrics(api_req *req, void *ud)
{
    (void)ud;
    iocd_buf_reset(&req->resp.body);
    if (iocd_metrics_render(&req->resp.body) != IOCD_OK) {
        api_error(req, 500, "internal", "out of memory rendering metrics");
        return API_DONE;
    }
    req->resp.status = 200;
    req->resp.content_type = "text/plain; version=0.0.4; charset=utf-8";
    return API_DONE;
}

static api_status buildinfo(api_req *req, void *ud)
{
    iocd_buf *b = &req->resp.body;
    iocd_err err;

    (void)ud;
    iocd_buf_reset(b);
    err = iocd_buf_puts(b, "{\"status\":\"success\",\"data\":{\"version\":");
    if (err == IOCD_OK)
        err = iocd_buf_json_str(b, IOCD_VERSION, strlen(IOCD_VERSION));
    if (err == IOCD_OK)
        err = iocd_buf_puts(b, ",\"revision\":");
    if (err == IOCD_OK)
        err = iocd_buf_json_str(b, IOCD_REVISION, strlen(IOCD_REVISION));
    if (err == IOCD_OK)
        err = iocd_buf_puts(b, ",\"branch\":\"main\",\"buildUser\":\"\",\"buildDate\":\"\","
                               "\"goVersion\":");
#ifdef __VERSION__
    if (err == IOCD_OK)
        err = iocd_buf_json_str(b, "cc " __VERSION__, strlen("cc " __VERSION__));
#else
    if (err == IOCD_OK)
        err = iocd_buf_puts(b, "\"\"");
#endif
    if (err == IOCD_OK)
        err = iocd_buf_puts(b, "}}");
    if (err != IOCD_OK) {
        api_error(req, 500, "internal", "out of memory");
        return API_DONE;
    }
    req->resp.status = 200;
    req->resp.content_type = "application/json";
    return API_DONE;
}

/* The city the console draws: its time zone (as an offset) and position. */
static api_status city(api_req *req, void *ud)
{
    const api_server *srv = ud;
    iocd_buf *b = &req->resp.body;

    iocd_buf_reset(b);
    if (iocd_buf_printf(b,
                        "{\"status\":\"success\",\"data\":{\"utc_offset_s\":%lld,"
                        "\"latitude\":%.6f,\"longitude\":%.6f}}",
                        (long long)srv->cfg->tz_offset_s, srv->cfg->latitude,
                        srv->cfg->longitude) != IOCD_OK) {
        api_error(req, 500, "internal", "out of memory");
        return API_DONE;
    }
    req->resp.status = 200;
    req->resp.content_type = "application/json";
    return API_DONE;
}

iocd_err api_ops_register(api_server *srv)
{
    iocd_err err = api_route_add(srv, API_GET, "/-/healthy", COL_ROLE_NONE, healthy, NULL);

    if (err == IOCD_OK)
        err = api_route_add(srv, API_GET, "/-/ready", COL_ROLE_NONE, ready, NULL);
    if (err == IOCD_OK)
        err = api_route_add(srv, API_GET, "/metrics", COL_ROLE_READ, metrics, NULL);
    if (err == IOCD_OK)
        err =
            api_route_add(srv, API_GET, "/api/v1/status/buildinfo", COL_ROLE_READ, buildinfo, NULL);
    if (err == IOCD_OK)
        err = api_route_add(srv, API_GET, "/api/v1/status/city", COL_ROLE_READ, city, srv);
    return err;
}
