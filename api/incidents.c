/* api/incidents.c - the incident API dispatchers and consoles use: list (filtered, paged),
 * one with its history, manual reports, acknowledge, assign, resolve, comment, and the
 * figures an IOC reports to the city (stats); silences; the device registry (CSV or JSON
 * uploads). Bodies are JSON objects; a malformed one is answered 400 with the byte and the
 * reason. */
#include "api/api_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PREFIX "/api/v1/incidents"

static alert_center *center(api_req *req)
{
    alert_center *ac = atomic_load(&req->srv->alerts);

    if (ac == NULL)
        api_error(req, 503, "unavailable", "incidents are not ready (the store is opening)");
    return ac;
}

static void reply_json(api_req *req, int status, iocd_buf *data)
{
    iocd_buf *b = &req->resp.body;

    iocd_buf_reset(b);
    if (iocd_buf_puts(b, "{\"status\":\"success\",\"data\":") != IOCD_OK ||
        iocd_buf_append(b, data->data != NULL ? data->data : "null",
                        data->data != NULL ? data->len : 4) != IOCD_OK ||
        iocd_buf_putc(b, '}') != IOCD_OK) {
        api_error(req, 503, "unavailable", "out of memory");
        return;
    }
    req->resp.status = status;
    req->resp.content_type = "application/json";
}

static bool time_param(api_req *req, const char *key, int64_t *out)
{
    const char *v = api_param_get(req, key);

    *out = 0;
    if (v == NULL || v[0] == '\0')
        return true;
    if (query_time_parse(v, out) != IOCD_OK) {
        api_error(req, 400, "bad_data", "invalid parameter \"%s\": not a time", key);
        return false;
    }
    return true;
}

static bool size_param(api_req *req, const char *key, size_t *out)
{
    const char *v = api_param_get(req, key);
    char *end;
    long long n;

    *out = 0;
    if (v == NULL || v[0] == '\0')
        return true;
    n = strtoll(v, &end, 10);
    if (*end != '\0' || n < 0 || n > 100000) {
        api_error(req, 400, "bad_data", "invalid parameter \"%s\": want 0..100000", key);
        return false;
    }
    *out = (size_t)n;
    return true;
}

static api_status list(api_req *req, alert_center *ac)
{
    alert_filter f;
    iocd_buf out;

    memset(&f, 0, sizeof(f));
    f.state = api_param_get(req, "state");
    f.domain = api_param_get(req, "domain");
    f.ward = api_param_get(req, "ward");
    f.severity = api_param_get(req, "severity");
    if (f.state != NULL && f.state[0] != '\0' && strcmp(f.state, "firing") != 0 &&
        strcmp(f.state, "acknowledged") != 0 && strcmp(f.state, "resolved") != 0) {
        api_error(req, 400, "bad_data", "state must be firing, acknowledged or resolved");
        return API_DONE;
    }
    if (!time_param(req, "since", &f.since_ms) || !time_param(req, "until", &f.until_ms) ||
        !size_param(req, "limit", &f.limit) || !size_param(req, "offset", &f.offset))
        return API_DONE;
    iocd_buf_init(&out, 0);
    if (alert_incidents_list(ac, &f, &out) != IOCD_OK)
        api_error(req, 503, "unavailable", "out of memory");
    else
        reply_json(req, 200, &out);
    iocd_buf_fini(&out);
    return API_DONE;
}

static api_status stats(api_req *req, alert_center *ac)
{
    int64_t since, until;
    iocd_buf out;

    if (!time_param(req, "since", &since) || !time_param(req, "until", &until))
        return API_DONE;
    iocd_buf_init(&out, 0);
    if (alert_incidents_stats(ac, since, until, &out) != IOCD_OK)
        api_error(req, 503, "unavailable", "out of memory");
    else
        reply_json(req, 200, &out);
    iocd_buf_fini(&out);
    return API_DONE;
}

/* The JSON body as a flat object. False: the reply is written. */
static bool body_object(api_req *req, iocd_json_obj *o)
{
    char why[256];

    if (req->body.len == 0) {
        api_error(req, 400, "bad_data", "the body must be a JSON object");
        return false;
    }
    if (iocd_json_object_parse(req->body.data, req->body.len, o, why, sizeof(why)) != IOCD_OK) {
        api_error(req, 400, "bad_data", "%s", why);
        return false;
    }
    return true;
}

static const char *str_field(const iocd_json_obj *o, const char *key)
{
    iocd_json_kind kind;
    const char *v = iocd_json_get(o, key, &kind);

    return v != NULL && kind == IOCD_JSON_STRING ? v : NULL;
}

static api_status report(api_req *req, alert_center *ac)
{
    iocd_json_obj o;
    alert_report r;
    iocd_buf out;
    char why[256] = "";
    iocd_err err;

    if (!body_object(req, &o))
        return API_DONE;
    r.domain = str_field(&o, "domain");
    r.ward = str_field(&o, "ward");
    r.location = str_field(&o, "location");
    r.description = str_field(&o, "description");
    r.reporter = str_field(&o, "reporter");
    r.severity = str_field(&o, "severity");
    r.device = str_field(&o, "device");
    iocd_buf_init(&out, 0);
    err = alert_incident_report(ac, &r, &out, why, sizeof(why));
    if (err == IOCD_EINVAL)
        api_error(req, 400, "bad_data", "%s", why);
    else if (err != IOCD_OK)
        api_error(req, 503, "unavailable", "the incident was not saved: %s", iocd_strerror(err));
    else
        reply_json(req, 201, &out);
    iocd_buf_fini(&out);
    iocd_json_obj_fini(&o);
    return API_DONE;
}

static api_status act(api_req *req, alert_center *ac, uint64_t id, const char *verb)
{
    static const struct {
        const char *verb, *text_key;
        alert_action act;
    } verbs[] = { { "ack", "note", ALERT_ACK },
                  { "assign", "to", ALERT_ASSIGN },
                  { "resolve", "reason", ALERT_RESOLVE },
                  { "comment", "text", ALERT_COMMENT } };
    iocd_json_obj o;
    iocd_buf out;
    const char *by;
    char why[256] = "";
    size_t i;
    iocd_err err;

    for (i = 0; i < IOCD_ARRAY_LEN(verbs) && strcmp(verbs[i].verb, verb) != 0; i++)
        ;
    if (i == IOCD_ARRAY_LEN(verbs)) {
        api_error(req, 404, "not_found", "no action \"%s\" (ack, assign, resolve or comment)",
                  verb);
        return API_DONE;
    }
    if (!body_object(req, &o))
        return API_DONE;
    by = str_field(&o, "by");
    if (by == NULL || by[0] == '\0') {
        iocd_json_obj_fini(&o);
        api_error(req, 400, "bad_data", "\"by\" (who acts) is required");
        return API_DONE;
    }
    iocd_buf_init(&out, 0);
    err = alert_incident_act(ac, id, verbs[i].act, by, str_field(&o, verbs[i].text_key), &out, why,
                             sizeof(why));
    if (err == IOCD_ENOTFOUND)
        api_error(req, 404, "not_found", "%s", why);
    else if (err == IOCD_EINVAL)
        api_error(req, 409, "conflict", "%s", why);
    else if (err != IOCD_OK)
        api_error(req, 503, "unavailable", "the change was not saved: %s", iocd_strerror(err));
    else
        reply_json(req, 200, &out);
    iocd_buf_fini(&out);
    iocd_json_obj_fini(&o);
    return API_DONE;
}

static api_status h_incidents(api_req *req, void *ud)
{
    alert_center *ac = center(req);
    const char *rest;
    char *end;
    uint64_t id;

    (void)ud;
    if (ac == NULL)
        return API_DONE;
    rest = req->path + strlen(PREFIX);
    if (*rest == '\0' || strcmp(rest, "/") == 0)
        return req->method == API_POST ? report(req, ac) : list(req, ac);
    if (strcmp(rest, "/stats") == 0 && req->method != API_POST)
        return stats(req, ac);
    if (*rest != '/') {
        api_error(req, 404, "not_found", "no such endpoint: %s", req->path);
        return API_DONE;
    }
    id = strtoull(rest + 1, &end, 10);
    if (end == rest + 1 || id == 0 || (*end != '\0' && *end != '/')) {
        api_error(req, 400, "bad_data", "\"%s\" is not an incident id", rest + 1);
        return API_DONE;
    }
    if (*end == '\0' && req->method != API_POST) {
        iocd_buf out;
        iocd_buf_init(&out, 0);
        if (alert_incident_get(ac, id, &out) == IOCD_OK)
            reply_json(req, 200, &out);
        else
            api_error(req, 404, "not_found", "no incident %llu", (unsigned long long)id);
        iocd_buf_fini(&out);
        return API_DONE;
    }
    if (*end == '/' && req->method == API_POST)
        return act(req, ac, id, end + 1);
    api_error(req, 405, "method_not_allowed", "use GET to read and POST to act");
    return API_DONE;
}

/* ---- Silences ------------------------------------------------------------------------------- */

#define SPREFIX "/api/v1/silences"

static api_status h_silences(api_req *req, void *ud)
{
    alert_center *ac = center(req);
    const char *rest;
    iocd_buf out;
    char why[512] = "";
    iocd_err err;

    (void)ud;
    if (ac == NULL)
        return API_DONE;
    rest = req->path + strlen(SPREFIX);
    iocd_buf_init(&out, 0);
    if (req->method == API_DELETE) {
        char *end;
        uint64_t id = *rest == '/' ? strtoull(rest + 1, &end, 10) : 0;
        if (id == 0 || *end != '\0') {
            api_error(req, 400, "bad_data", "DELETE %s/<id>", SPREFIX);
        } else {
            err = alert_silence_expire(ac, id, &out);
            if (err == IOCD_ENOTFOUND)
                api_error(req, 404, "not_found", "no silence %llu", (unsigned long long)id);
            else if (err != IOCD_OK)
                api_error(req, 503, "unavailable", "not saved: %s", iocd_strerror(err));
            else
                reply_json(req, 200, &out);
        }
    } else if (*rest != '\0') {
        api_error(req, 404, "not_found", "no such endpoint: %s", req->path);
    } else if (req->method == API_POST) {
        iocd_json_obj o;
        int64_t starts = 0, ends = 0;
        const char *sv, *ev, *every, *from, *to;
        if (body_object(req, &o)) {
            sv = str_field(&o, "starts_at");
            ev = str_field(&o, "ends_at");
            every = str_field(&o, "every");
            from = str_field(&o, "from");
            to = str_field(&o, "to");
            /* A recurring silence may run until expired by hand: then ends_at is optional. */
            if ((sv != NULL && query_time_parse(sv, &starts) != IOCD_OK) ||
                (ev == NULL && every == NULL) ||
                (ev != NULL && query_time_parse(ev, &ends) != IOCD_OK)) {
                api_error(req, 400, "bad_data",
                          "\"ends_at\" (optional for a recurring silence) and \"starts_at\" "
                          "(optional) must be RFC 3339 or Unix times");
            } else {
                err = alert_silence_add_recurring(ac, str_field(&o, "matchers"), starts, ends,
                                                  every, from, to, str_field(&o, "created_by"),
                                                  str_field(&o, "comment"), &out, why, sizeof(why));
                if (err == IOCD_EINVAL || err == IOCD_ELIMIT)
                    api_error(req, 400, "bad_data", "%s", why);
                else if (err != IOCD_OK)
                    api_error(req, 503, "unavailable", "not saved: %s", iocd_strerror(err));
                else
                    reply_json(req, 201, &out);
            }
            iocd_json_obj_fini(&o);
        }
    } else if (alert_silences_list(ac, &out) != IOCD_OK) {
        api_error(req, 503, "unavailable", "out of memory");
    } else {
        reply_json(req, 200, &out);
    }
    iocd_buf_fini(&out);
    return API_DONE;
}

/* ---- Devices -------------------------------------------------------------------------------- */

#define DPREFIX          "/api/v1/devices"
#define DEVICES_BODY_MAX (16 * 1024 * 1024) /* a city's registry is a few MiB of CSV */

/* The upload's format, from its Content-Type; a type that says nothing (none, text/plain, the
 * form type curl -d sends) is decided by the first character. False: the reply is written. */
static bool upload_format(api_req *req, const char *body, size_t len, alert_devices_format *fmt)
{
    const char *ct = api_req_header(req, "Content-Type"), *cs;
    char low[128];
    size_t n, i = 0;

    for (n = 0; ct != NULL && ct[n] != '\0' && n + 1 < sizeof(low); n++)
        low[n] = ct[n] >= 'A' && ct[n] <= 'Z' ? (char)(ct[n] - 'A' + 'a') : ct[n];
    low[n] = '\0';
    cs = strstr(low, "charset=");
    if (cs != NULL && strncmp(cs + 8, "utf-8", 5) != 0 && strncmp(cs + 8, "\"utf-8\"", 7) != 0 &&
        strncmp(cs + 8, "utf8", 4) != 0) {
        api_error(req, 415, "bad_data", "send the devices as UTF-8, not %.40s", cs + 8);
        return false;
    }
    low[strcspn(low, "; ")] = '\0';
    if (strcmp(low, "text/csv") == 0 || strcmp(low, "application/csv") == 0) {
        *fmt = ALERT_DEVICES_CSV;
    } else if (strcmp(low, "application/json") == 0) {
        *fmt = ALERT_DEVICES_JSON;
    } else if (low[0] == '\0' || strcmp(low, "text/plain") == 0 ||
               strcmp(low, "application/x-www-form-urlencoded") == 0 ||
               strcmp(low, "application/octet-stream") == 0) {
        if (len >= 3 && memcmp(body, "\xEF\xBB\xBF", 3) == 0)
            i = 3;
        while (i < len && (body[i] == ' ' || body[i] == '\t' || body[i] == '\r' || body[i] == '\n'))
            i++;
        *fmt = i < len && body[i] == '[' ? ALERT_DEVICES_JSON : ALERT_DEVICES_CSV;
    } else {
        api_error(req, 415, "bad_data", "Content-Type %.60s: send text/csv or application/json",
                  ct);
        return false;
    }
    return true;
}

/* 200 when every row was stored; 400 when some were rejected (the rest are stored), with the
 * counts and the first errors in data either way. */
static void reply_upload(api_req *req, const alert_devices_result *res)
{
    iocd_buf *b = &req->resp.body;
    char msg[128];
    iocd_err err;
    size_t i;

    iocd_buf_reset(b);
    if (res->rejected == 0) {
        err = iocd_buf_puts(b, "{\"status\":\"success\",\"data\":");
    } else {
        snprintf(msg, sizeof(msg), "%zu row%s rejected, %zu stored", res->rejected,
                 res->rejected == 1 ? "" : "s", res->stored);
        err = iocd_buf_puts(b, "{\"status\":\"error\",\"errorType\":\"bad_data\",\"error\":");
        if (err == IOCD_OK)
            err = iocd_buf_json_str(b, msg, strlen(msg));
        if (err == IOCD_OK)
            err = iocd_buf_puts(b, ",\"data\":");
    }
    if (err == IOCD_OK)
        err = iocd_buf_printf(
            b, "{\"stored\":%zu,\"rejected\":%zu,\"removed\":%zu,\"devices\":%zu,\"errors\":[",
            res->stored, res->rejected, res->removed, res->total);
    for (i = 0; err == IOCD_OK && i < res->n_errors; i++) {
        err = iocd_buf_printf(b, "%s{\"line\":%llu,\"reason\":", i > 0 ? "," : "",
                              (unsigned long long)res->errors[i].line);
        if (err == IOCD_OK)
            err = iocd_buf_json_str(b, res->errors[i].reason, strlen(res->errors[i].reason));
        if (err == IOCD_OK)
            err = iocd_buf_putc(b, '}');
    }
    if (err == IOCD_OK)
        err = iocd_buf_puts(b, "]}}");
    if (err != IOCD_OK) {
        api_error(req, 503, "unavailable", "out of memory");
        return;
    }
    req->resp.status = res->rejected == 0 ? 200 : 400;
    req->resp.content_type = "application/json";
}

static api_status upload(api_req *req, alert_center *ac, bool replace)
{
    const char *enc = api_req_header(req, "Content-Encoding");
    const char *body = req->body.data != NULL ? req->body.data : "";
    size_t len = req->body.len;
    alert_devices_result *res = NULL;
    alert_devices_format fmt;
    iocd_buf inflated;
    char why[256] = "";
    iocd_err err;

    iocd_buf_init(&inflated, 0);
    if (len > DEVICES_BODY_MAX) {
        api_error(req, 413, "bad_data", "a device list is at most %d bytes", DEVICES_BODY_MAX);
        goto out;
    }
    if (enc != NULL && enc[0] != '\0' && strcmp(enc, "identity") != 0) {
        if (strcmp(enc, "gzip") != 0 && strcmp(enc, "x-gzip") != 0 && strcmp(enc, "deflate") != 0) {
            api_error(req, 400, "bad_data", "unsupported Content-Encoding \"%.40s\"", enc);
            goto out;
        }
        err = api_inflate(body, len, strcmp(enc, "deflate") != 0, DEVICES_BODY_MAX, &inflated, why,
                          sizeof(why));
        if (err != IOCD_OK) {
            api_error(req,
                      err == IOCD_ETOOBIG  ? 413
                      : err == IOCD_ENOMEM ? 503
                                           : 400,
                      "bad_data", "%s", why);
            goto out;
        }
        body = inflated.data != NULL ? inflated.data : "";
        len = inflated.len;
    }
    if (!upload_format(req, body, len, &fmt))
        goto out;
    res = iocd_calloc(1, sizeof(*res));
    err = res != NULL ? alert_devices_load(ac, fmt, body, len, replace, res, why, sizeof(why))
                      : IOCD_ENOMEM;
    if (err == IOCD_EPARSE)
        api_error(req, 400, "bad_data", "%s", why);
    else if (err != IOCD_OK)
        api_error(req, 503, "unavailable", "the devices were not saved: %s", iocd_strerror(err));
    else
        reply_upload(req, res);
out:
    iocd_free(res);
    iocd_buf_fini(&inflated);
    return API_DONE;
}

static api_status list_devices(api_req *req, alert_center *ac)
{
    alert_device_filter f;
    iocd_buf out;

    memset(&f, 0, sizeof(f));
    f.ward = api_param_get(req, "ward");
    f.domain = api_param_get(req, "domain");
    f.kind = api_param_get(req, "kind");
    if (!size_param(req, "limit", &f.limit) || !size_param(req, "offset", &f.offset))
        return API_DONE;
    iocd_buf_init(&out, 0);
    if (alert_devices_list(ac, &f, &out) != IOCD_OK)
        api_error(req, 503, "unavailable", "out of memory");
    else
        reply_json(req, 200, &out);
    iocd_buf_fini(&out);
    return API_DONE;
}

static api_status h_devices(api_req *req, void *ud)
{
    alert_center *ac = center(req);
    const char *id;
    iocd_buf out;
    iocd_err err;

    (void)ud;
    if (ac == NULL)
        return API_DONE;
    id = req->path + strlen(DPREFIX);
    if (*id != '\0' && *id != '/') {
        api_error(req, 404, "not_found", "no such endpoint: %s", req->path);
        return API_DONE;
    }
    if (*id == '/')
        id++;
    if (*id == '\0') {
        if (req->method == API_PUT || req->method == API_POST)
            return upload(req, ac, req->method == API_PUT);
        if (req->method == API_DELETE) {
            api_error(req, 400, "bad_data",
                      "DELETE %s/<id> removes one device (PUT an empty list to remove all)",
                      DPREFIX);
            return API_DONE;
        }
        return list_devices(req, ac);
    }
    if (req->method == API_PUT || req->method == API_POST) {
        api_error(req, 405, "method_not_allowed",
                  "%s/<id> is read (GET) or removed (DELETE); PUT or POST the list to %s", DPREFIX,
                  DPREFIX);
        return API_DONE;
    }
    iocd_buf_init(&out, 0);
    err = req->method == API_DELETE ? alert_device_delete(ac, id, &out)
                                    : alert_device_get(ac, id, &out);
    if (err == IOCD_ENOTFOUND)
        api_error(req, 404, "not_found", "no device \"%.200s\"", id);
    else if (err != IOCD_OK)
        api_error(req, 503, "unavailable", "%s", iocd_strerror(err));
    else
        reply_json(req, 200, &out);
    iocd_buf_fini(&out);
    return API_DONE;
}

iocd_err api_incidents_register(api_server *srv)
{
    iocd_err err = api_route_add(srv, API_GET, PREFIX "*", COL_ROLE_READ, h_incidents, NULL);

    if (err == IOCD_OK)
        err = api_route_add(srv, API_POST, PREFIX "*", COL_ROLE_WRITE, h_incidents, NULL);
    if (err == IOCD_OK)
        err = api_route_add(srv, API_GET, SPREFIX "*", COL_ROLE_READ, h_silences, NULL);
    if (err == IOCD_OK)
        err = api_route_add(srv, API_POST | API_DELETE, SPREFIX "*", COL_ROLE_WRITE, h_silences,
                            NULL);
    if (err == IOCD_OK)
        err = api_route_add(srv, API_GET, DPREFIX "*", COL_ROLE_READ, h_devices, NULL);
    if (err == IOCD_OK)
        err = api_route_add(srv, API_PUT | API_POST | API_DELETE, DPREFIX "*", COL_ROLE_WRITE,
                            h_devices, NULL);
    return err;
}
