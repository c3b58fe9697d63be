/* api/incidents.c - the incident API dispatchers and consoles use: list (filtered, paged),
 * one with its history, manual reports, acknowledge, assign, resolve, comment, and the
 * figures an IOC reports to the city (stats). Bodies are JSON objects; a malformed one is
 * answered 400 with the byte and the reason. */
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
        const char *sv, *ev;
        if (body_object(req, &o)) {
            sv = str_field(&o, "starts_at");
            ev = str_field(&o, "ends_at");
            if ((sv != NULL && query_time_parse(sv, &starts) != IOCD_OK) || ev == NULL ||
                query_time_parse(ev, &ends) != IOCD_OK) {
                api_error(
                    req, 400, "bad_data",
                    "\"ends_at\" (and \"starts_at\", optional) must be RFC 3339 or Unix times");
            } else {
                err = alert_silence_add(ac, str_field(&o, "matchers"), starts, ends,
                                        str_field(&o, "created_by"), str_field(&o, "comment"), &out,
                                        why, sizeof(why));
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
    return err;
}
