/* api/alertmanager.c - Alertmanager's API v2, so iocd can stand in for an Alertmanager:
 * Prometheus and vmalert post alerts (they become incidents, acknowledged and dispatched over
 * Kafka like any other), amtool and Grafana list alerts, list, make and expire silences, and
 * read the status. The shapes are Alertmanager's (its OpenAPI spec), the work is alerts/'s;
 * errors are answered as Alertmanager does, a JSON string with the reason. */
#include "api/api_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define AM_BODY_MAX   (8 * 1024 * 1024) /* bytes of a POST body */
#define AM_FILTER_MAX 64                /* filter= parameters */

static _Atomic int64_t started_ms; /* the uptime of /api/v2/status */

static void am_error(api_req *req, int status, const char *fmt, ...) IOCD_PRINTF(3, 4);

/* Alertmanager's error body: the reason as a JSON string. */
static void am_error(api_req *req, int status, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    iocd_buf_reset(&req->resp.body);
    req->resp.status = status;
    req->resp.content_type = "application/json";
    if (iocd_buf_json_str(&req->resp.body, msg, strlen(msg)) != IOCD_OK)
        req->resp.status = 500;
}

/* The status for an error of alerts/. */
static int status_of(iocd_err err)
{
    switch (err) {
    case IOCD_EPARSE:
    case IOCD_EINVAL:
    case IOCD_ELIMIT:
        return 400;
    case IOCD_ETOOBIG:
        return 413;
    case IOCD_ENOTFOUND:
        return 404;
    case IOCD_EAGAIN:
    case IOCD_ENOMEM:
    case IOCD_ENOSPC:
        return 503;
    default:
        return 500;
    }
}

static void reply(api_req *req, int status, iocd_buf *body)
{
    iocd_buf tmp = req->resp.body;

    req->resp.body = *body; /* swap: the response takes the bytes */
    *body = tmp;
    req->resp.status = status;
    req->resp.content_type = "application/json";
}

static alert_center *center(api_req *req)
{
    alert_center *ac = atomic_load(&req->srv->alerts);

    if (ac == NULL)
        am_error(req, 503, "iocd is starting: alerts are not ready");
    return ac;
}

static bool body_ok(api_req *req)
{
    if (req->body.len > AM_BODY_MAX) {
        am_error(req, 413, "the body is larger than %d bytes", AM_BODY_MAX);
        return false;
    }
    if (req->body.len == 0) {
        am_error(req, 400, "the body is empty: send JSON");
        return false;
    }
    return true;
}

/* Go's strconv.ParseBool, as Alertmanager reads its query flags. */
static bool bool_param(api_req *req, const char *key, bool *out)
{
    static const char *const yes[] = { "1", "t", "T", "true", "TRUE", "True" };
    static const char *const no[] = { "0", "f", "F", "false", "FALSE", "False" };
    const char *v = api_param_get(req, key);
    size_t i;

    *out = true;
    if (v == NULL)
        return true;
    for (i = 0; i < IOCD_ARRAY_LEN(yes); i++)
        if (strcmp(v, yes[i]) == 0)
            return true;
    for (i = 0; i < IOCD_ARRAY_LEN(no); i++)
        if (strcmp(v, no[i]) == 0) {
            *out = false;
            return true;
        }
    am_error(req, 400, "%s: \"%.60s\" is not a boolean", key, v);
    return false;
}

/* The values of every filter= parameter. False: the reply is written. */
static bool filters(api_req *req, const char **out, size_t *n_out)
{
    size_t i, n = 0;

    for (i = 0; i < req->n_params; i++) {
        if (strcmp(req->params[i].key, "filter") != 0)
            continue;
        if (n == AM_FILTER_MAX) {
            am_error(req, 400, "at most %d filters", AM_FILTER_MAX);
            return false;
        }
        out[n++] = req->params[i].value;
    }
    *n_out = n;
    return true;
}

/* ---- Alerts ------------------------------------------------------------------------------- */

static api_status list_alerts(api_req *req, alert_center *ac, bool groups)
{
    const char *fs[AM_FILTER_MAX];
    alert_am_filter f;
    bool inhibited, unprocessed;
    iocd_buf out;
    char why[512] = "";
    iocd_err err;

    memset(&f, 0, sizeof(f));
    if (!bool_param(req, "active", &f.active) || !bool_param(req, "silenced", &f.silenced) ||
        !bool_param(req, "inhibited", &inhibited) ||
        !bool_param(req, "unprocessed", &unprocessed) || !filters(req, fs, &f.n_matchers))
        return API_DONE;
    /* No alert of iocd is inhibited or unprocessed: those two flags hide nothing. */
    f.matchers = fs;
    f.receiver = api_param_get(req, "receiver");
    iocd_buf_init(&out, 0);
    err = alert_am_alerts_list(ac, &f, groups, &out, why, sizeof(why));
    if (err != IOCD_OK)
        am_error(req, status_of(err), "%s", why[0] != '\0' ? why : iocd_strerror(err));
    else
        reply(req, 200, &out);
    iocd_buf_fini(&out);
    return API_DONE;
}

static api_status h_alerts(api_req *req, void *ud)
{
    alert_center *ac = center(req);
    char why[1024] = "";
    iocd_err err;

    (void)ud;
    if (ac == NULL)
        return API_DONE;
    if (req->method != API_POST)
        return list_alerts(req, ac, false);
    if (!body_ok(req))
        return API_DONE;
    err = alert_am_alerts_post(ac, req->body.data, req->body.len, why, sizeof(why));
    if (err != IOCD_OK) {
        am_error(req, status_of(err), "%s", why[0] != '\0' ? why : iocd_strerror(err));
        return API_DONE;
    }
    /* Alertmanager answers 200 with no body. */
    iocd_buf_reset(&req->resp.body);
    req->resp.status = 200;
    req->resp.content_type = NULL;
    return API_DONE;
}

static api_status h_groups(api_req *req, void *ud)
{
    alert_center *ac = center(req);

    (void)ud;
    return ac != NULL ? list_alerts(req, ac, true) : API_DONE;
}

/* ---- Silences ----------------------------------------------------------------------------- */

static api_status h_silences(api_req *req, void *ud)
{
    alert_center *ac = center(req);
    const char *fs[AM_FILTER_MAX];
    size_t n = 0;
    uint64_t id = 0;
    iocd_buf out;
    char why[1024] = "";
    iocd_err err;

    (void)ud;
    if (ac == NULL)
        return API_DONE;
    iocd_buf_init(&out, 0);
    if (req->method == API_POST) {
        if (!body_ok(req))
            goto done;
        err = alert_am_silence_add(ac, req->body.data, req->body.len, &id, why, sizeof(why));
        if (err == IOCD_OK)
            err = iocd_buf_printf(&out, "{\"silenceID\":\"%llu\"}", (unsigned long long)id);
    } else {
        if (!filters(req, fs, &n))
            goto done;
        err = alert_am_silences_list(ac, fs, n, &out, why, sizeof(why));
    }
    if (err != IOCD_OK)
        am_error(req, status_of(err), "%s", why[0] != '\0' ? why : iocd_strerror(err));
    else
        reply(req, 200, &out);
done:
    iocd_buf_fini(&out);
    return API_DONE;
}

/* /api/v2/silence/<id>: GET reads it, DELETE expires it. */
static api_status h_silence(api_req *req, void *ud)
{
    alert_center *ac = center(req);
    const char *rest = req->path + strlen("/api/v2/silence/");
    char *end;
    uint64_t id;
    iocd_buf out;
    iocd_err err;

    (void)ud;
    if (ac == NULL)
        return API_DONE;
    id = strtoull(rest, &end, 10);
    if (rest[0] < '0' || rest[0] > '9' || id == 0 || *end != '\0') {
        am_error(req, 404, "silence %.60s not found", rest);
        return API_DONE;
    }
    iocd_buf_init(&out, 0);
    err = req->method == API_DELETE ? alert_silence_expire(ac, id, &out)
                                    : alert_am_silence_get(ac, id, &out);
    if (err == IOCD_ENOTFOUND) {
        am_error(req, 404, "silence %llu not found", (unsigned long long)id);
    } else if (err != IOCD_OK) {
        am_error(req, status_of(err), "%s", iocd_strerror(err));
    } else if (req->method == API_DELETE) { /* Alertmanager answers 200 with no body */
        iocd_buf_reset(&req->resp.body);
        req->resp.status = 200;
        req->resp.content_type = NULL;
    } else {
        reply(req, 200, &out);
    }
    iocd_buf_fini(&out);
    return API_DONE;
}

/* ---- Status and receivers ----------------------------------------------------------------- */

/* Enough for amtool and Grafana: no cluster, iocd's version, a configuration that names the
 * one receiver, and the start time. */
static api_status h_status(api_req *req, void *ud)
{
    static const char config[] = "global:\n  resolve_timeout: 5m\n"
                                 "route:\n  receiver: " ALERT_AM_RECEIVER "\n"
                                 "receivers:\n- name: " ALERT_AM_RECEIVER "\n";
    char up[40];
    iocd_buf out;
    iocd_err err;

    (void)ud;
    iocd_time_format(atomic_load(&started_ms), up, sizeof(up));
    iocd_buf_init(&out, 0);
    err = iocd_buf_printf(&out,
                          "{\"cluster\":{\"name\":\"iocd\",\"status\":\"disabled\",\"peers\":[]},"
                          "\"versionInfo\":{\"version\":\"%s\",\"revision\":\"%s\","
                          "\"branch\":\"\",\"buildUser\":\"\",\"buildDate\":\"\","
                          "\"goVersion\":\"\"},\"config\":{\"original\":",
                          IOCD_VERSION, IOCD_REVISION);
    if (err == IOCD_OK)
        err = iocd_buf_json_str(&out, config, sizeof(config) - 1);
    if (err == IOCD_OK)
        err = iocd_buf_printf(&out, "},\"uptime\":\"%s\"}", up);
    if (err != IOCD_OK)
        am_error(req, 503, "out of memory");
    else
        reply(req, 200, &out);
    iocd_buf_fini(&out);
    return API_DONE;
}

static api_status h_receivers(api_req *req, void *ud)
{
    (void)ud;
    api_reply_text(req, 200, "application/json", "[{\"name\":\"" ALERT_AM_RECEIVER "\"}]");
    return API_DONE;
}

iocd_err api_alertmanager_register(api_server *srv)
{
    iocd_err err;

    atomic_store(&started_ms, iocd_now_ms());
    err = api_route_add(srv, API_GET, "/api/v2/alerts", COL_ROLE_READ, h_alerts, NULL);
    if (err == IOCD_OK)
        err = api_route_add(srv, API_POST, "/api/v2/alerts", COL_ROLE_WRITE, h_alerts, NULL);
    if (err == IOCD_OK)
        err = api_route_add(srv, API_GET, "/api/v2/alerts/groups", COL_ROLE_READ, h_groups, NULL);
    if (err == IOCD_OK)
        err = api_route_add(srv, API_GET, "/api/v2/silences", COL_ROLE_READ, h_silences, NULL);
    if (err == IOCD_OK)
        err = api_route_add(srv, API_POST, "/api/v2/silences", COL_ROLE_WRITE, h_silences, NULL);
    if (err == IOCD_OK)
        err = api_route_add(srv, API_GET, "/api/v2/silence/*", COL_ROLE_READ, h_silence, NULL);
    if (err == IOCD_OK)
        err = api_route_add(srv, API_DELETE, "/api/v2/silence/*", COL_ROLE_WRITE, h_silence, NULL);
    if (err == IOCD_OK)
        err = api_route_add(srv, API_GET, "/api/v2/status", COL_ROLE_READ, h_status, NULL);
    if (err == IOCD_OK)
        err = api_route_add(srv, API_GET, "/api/v2/receivers", COL_ROLE_READ, h_receivers, NULL);
    return err;
}
