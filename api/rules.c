/* api/rules.c - alert rules over HTTP: GET /api/v1/rules and /api/v1/alerts in Prometheus'
 * shapes (so Grafana's alerting views read them), and POST /-/reload, which reloads the rule
 * files (and, like SIGHUP, answers with the reason when the new set is refused). */
#include "api/api_int.h"

#include <string.h>

static rule_engine *engine(api_req *req)
{
    rule_engine *e = atomic_load(&req->srv->rules);

    if (e == NULL)
        api_error(req, 404, "not_found", "no alert rules are loaded (start iocd with --rules)");
    return e;
}

/* Without --rules the views are empty, as Prometheus answers without rule files: Grafana's
 * alert list reports a 404 from them as an error. */
static api_status reply_view(api_req *req, iocd_err (*view)(rule_engine *, iocd_buf *),
                             const char *empty)
{
    iocd_buf *b = &req->resp.body;
    rule_engine *e = atomic_load(&req->srv->rules);
    iocd_err err;

    iocd_buf_reset(b);
    err = iocd_buf_puts(b, "{\"status\":\"success\",\"data\":");
    if (err == IOCD_OK)
        err = e != NULL ? view(e, b) : iocd_buf_puts(b, empty);
    if (err == IOCD_OK)
        err = iocd_buf_putc(b, '}');
    if (err != IOCD_OK) {
        api_error(req, 503, "unavailable", "out of memory");
        return API_DONE;
    }
    req->resp.status = 200;
    req->resp.content_type = "application/json";
    return API_DONE;
}

static api_status h_rules(api_req *req, void *ud)
{
    (void)ud;
    return reply_view(req, rule_engine_rules_json, "{\"groups\":[]}");
}

static api_status h_alerts(api_req *req, void *ud)
{
    (void)ud;
    return reply_view(req, rule_engine_alerts_json, "{\"alerts\":[]}");
}

static api_status h_reload(api_req *req, void *ud)
{
    rule_engine *e = engine(req);
    char errbuf[1024];

    (void)ud;
    if (e == NULL)
        return API_DONE;
    if (rule_engine_load(e, req->srv->cfg->rules_path, errbuf, sizeof(errbuf)) != IOCD_OK) {
        log_error("api", "rule reload refused, the running rules stay", "err=%s", errbuf);
        api_error(req, 422, "bad_data", "%s", errbuf);
        return API_DONE;
    }
    log_info("api", "rules reloaded", "path=%s rules=%zu", req->srv->cfg->rules_path,
             rule_engine_count(e));
    api_reply_text(req, 200, "application/json", "{\"status\":\"success\"}");
    return API_DONE;
}

iocd_err api_rules_register(api_server *srv)
{
    iocd_err err = api_route_add(srv, API_GET, "/api/v1/rules", COL_ROLE_READ, h_rules, NULL);

    if (err == IOCD_OK)
        err = api_route_add(srv, API_GET, "/api/v1/alerts", COL_ROLE_READ, h_alerts, NULL);
    if (err == IOCD_OK)
        err = api_route_add(srv, API_POST | API_PUT, "/-/reload", COL_ROLE_ADMIN, h_reload, NULL);
    return err;
}
