/* api/router.c - routes, bearer-token authorization, parameters and the error shapes
 * Prometheus clients expect. Free of libmicrohttpd types. */
#include "api/api_int.h"

#include <stdio.h>
#include <string.h>

iocd_err api_route_add(api_server *srv, unsigned methods, const char *path, col_role role,
                       api_handler_fn fn, void *ud)
{
    api_route *r = iocd_calloc(1, sizeof(*r)), **tail;

    if (r == NULL)
        return IOCD_ENOMEM;
    r->methods = methods;
    r->path = path;
    r->role = role;
    r->fn = fn;
    r->ud = ud;
    for (tail = &srv->routes; *tail != NULL; tail = &(*tail)->next)
        ;
    *tail = r;
    return IOCD_OK;
}

static bool path_matches(const char *pattern, const char *path)
{
    size_t n = strlen(pattern);

    if (n > 0 && pattern[n - 1] == '*')
        return strncmp(pattern, path, n - 1) == 0;
    return strcmp(pattern, path) == 0;
}

const api_route *api_route_find(const api_server *srv, const char *path, unsigned method,
                                bool *wrong_method, unsigned *allowed)
{
    const api_route *r;

    *wrong_method = false;
    *allowed = 0;
    for (r = srv->routes; r != NULL; r = r->next) {
        unsigned m;
        if (!path_matches(r->path, path))
            continue;
        m = r->methods | ((r->methods & API_GET) ? API_HEAD : 0);
        if (m & method)
            return r;
        *wrong_method = true;
        *allowed |= m;
    }
    return NULL;
}

/* Constant-time comparison: the time taken does not reveal how much of a secret matched. */
static bool secret_equal(const char *a, size_t alen, const char *b)
{
    size_t blen = strlen(b), i;
    unsigned char diff = (unsigned char)(alen != blen);

    for (i = 0; i < alen; i++)
        diff |= (unsigned char)(a[i] ^ b[i % (blen != 0 ? blen : 1)]);
    return diff == 0;
}

bool api_authorize(api_req *req, const char *authorization)
{
    const col_config *cfg = req->srv->cfg;
    const col_token *found = NULL;
    const char *secret;
    size_t i, len;

    if (req->route == NULL || req->route->role == COL_ROLE_NONE || cfg->n_tokens == 0)
        return true;
    if (authorization == NULL || strncmp(authorization, "Bearer ", 7) != 0) {
        req->resp.www_authenticate = true;
        api_error(req, 401, "unauthorized",
                  "this endpoint needs a bearer token "
                  "(Authorization: Bearer <token>)");
        return false;
    }
    secret = authorization + 7;
    while (*secret == ' ')
        secret++;
    len = strlen(secret);
    for (i = 0; i < cfg->n_tokens; i++)
        if (secret_equal(secret, len, cfg->tokens[i].token))
            found = &cfg->tokens[i];
    if (found == NULL) {
        req->resp.www_authenticate = true;
        api_error(req, 401, "unauthorized", "unknown bearer token");
        return false;
    }
    if (found->role != COL_ROLE_ADMIN && found->role != req->route->role) {
        static const char *const names[] = { "none", "read", "write", "admin" };
        api_error(req, 403, "forbidden", "token %s has role %s; this endpoint needs %s",
                  found->name != NULL ? found->name : "(unnamed)", names[found->role],
                  names[req->route->role]);
        return false;
    }
    return true;
}

static const char *method_names(unsigned m, char *out, size_t cap)
{
    static const struct {
        unsigned bit;
        const char *name;
    } names[] = { { API_GET, "GET" },
                  { API_HEAD, "HEAD" },
                  { API_POST, "POST" },
                  { API_PUT, "PUT" },
                  { API_DELETE, "DELETE" } };
    size_t i, len = 0;

    out[0] = '\0';
    for (i = 0; i < IOCD_ARRAY_LEN(names); i++)
        if (m & names[i].bit)
            len += (size_t)snprintf(out + len, cap > len ? cap - len : 0, "%s%s",
                                    len > 0 ? ", " : "", names[i].name);
    return out;
}

api_status api_dispatch(api_req *req, const char *authorization)
{
    bool wrong_method;
    unsigned allowed;

    req->route = api_route_find(req->srv, req->path, req->method, &wrong_method, &allowed);
    if (req->route == NULL) {
        if (wrong_method) {
            method_names(allowed, req->resp.allow, sizeof(req->resp.allow));
            api_error(req, 405, "method_not_allowed", "method %s not allowed for %s (allowed: %s)",
                      req->method_text, req->path, req->resp.allow);
        } else {
            api_error(req, 404, "not_found", "no such endpoint: %s", req->path);
        }
        return API_DONE;
    }
    if (!api_authorize(req, authorization))
        return API_DONE;
    if (req->body_too_big) {
        api_error(req, 413, "bad_data", "request body larger than %lld bytes",
                  (long long)req->srv->cfg->http_body_max);
        return API_DONE;
    }
    return req->route->fn(req, req->route->ud);
}

const char *api_param_get(const api_req *req, const char *key)
{
    size_t i;

    for (i = 0; i < req->n_params; i++)
        if (strcmp(req->params[i].key, key) == 0)
            return req->params[i].value;
    return NULL;
}

iocd_err api_param_add(api_req *req, const char *key, size_t klen, const char *value, size_t vlen)
{
    api_param *grown;
    char *k, *v;

    if (req->n_params >= 4096)
        return IOCD_ETOOBIG;
    grown = iocd_realloc(req->params, (req->n_params + 1) * sizeof(*grown));
    if (grown == NULL)
        return IOCD_ENOMEM;
    req->params = grown;
    k = iocd_strndup(key, klen);
    v = iocd_strndup(value, vlen);
    if (k == NULL || v == NULL) {
        iocd_free(k);
        iocd_free(v);
        return IOCD_ENOMEM;
    }
    grown[req->n_params].key = k;
    grown[req->n_params].value = v;
    req->n_params++;
    return IOCD_OK;
}

/* Decodes %XX and '+' in place; returns the new length. */
static size_t url_decode(char *s, size_t len)
{
    size_t i, o = 0;

    for (i = 0; i < len; i++) {
        if (s[i] == '+') {
            s[o++] = ' ';
        } else if (s[i] == '%' && i + 2 < len && iocd_hexval(s[i + 1]) >= 0 &&
                   iocd_hexval(s[i + 2]) >= 0) {
            s[o++] = (char)(iocd_hexval(s[i + 1]) * 16 + iocd_hexval(s[i + 2]));
            i += 2;
        } else {
            s[o++] = s[i];
        }
    }
    return o;
}

iocd_err api_params_parse_form(api_req *req, const char *text, size_t len)
{
    char *copy = iocd_strndup(text, len), *p, *end;
    iocd_err err = IOCD_OK;

    if (copy == NULL)
        return IOCD_ENOMEM;
    p = copy;
    end = copy + len;
    while (p < end && err == IOCD_OK) {
        char *amp = memchr(p, '&', (size_t)(end - p)), *eq;
        size_t plen = amp != NULL ? (size_t)(amp - p) : (size_t)(end - p), kl, vl;
        eq = memchr(p, '=', plen);
        if (plen > 0) {
            if (eq != NULL) {
                kl = url_decode(p, (size_t)(eq - p));
                vl = url_decode(eq + 1, plen - (size_t)(eq - p) - 1);
                err = api_param_add(req, p, kl, eq + 1, vl);
            } else {
                kl = url_decode(p, plen);
                err = api_param_add(req, p, kl, "", 0);
            }
        }
        p += plen + 1;
    }
    iocd_free(copy);
    return err;
}

void api_error(api_req *req, int status, const char *type, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    iocd_buf_reset(&req->resp.body);
    req->resp.status = status;
    req->resp.content_type = "application/json";
    if (iocd_buf_puts(&req->resp.body, "{\"status\":\"error\",\"errorType\":") != IOCD_OK ||
        iocd_buf_json_str(&req->resp.body, type, strlen(type)) != IOCD_OK ||
        iocd_buf_puts(&req->resp.body, ",\"error\":") != IOCD_OK ||
        iocd_buf_json_str(&req->resp.body, msg, strlen(msg)) != IOCD_OK ||
        iocd_buf_putc(&req->resp.body, '}') != IOCD_OK)
        req->resp.status = 500;
}

void api_reply_text(api_req *req, int status, const char *content_type, const char *text)
{
    iocd_buf_reset(&req->resp.body);
    req->resp.status = status;
    req->resp.content_type = content_type;
    if (iocd_buf_puts(&req->resp.body, text) != IOCD_OK)
        req->resp.status = 500;
}

void api_observe(const api_req *req)
{
    static const double buckets[] = { 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                      0.1,    0.25,  0.5,    1,     2.5,  5,     10 };
    char labels[192], esc[96];
    const char *handler = req->route != NULL ? req->route->path : "other";

    iocd_metric_label_escape(handler, esc, sizeof(esc));
    snprintf(labels, sizeof(labels), "handler=\"%s\",code=\"%d\"", esc, req->resp.status);
    iocd_metric_add(iocd_metric_get("iocd_http_requests_total",
                                    "HTTP requests by handler and status code.",
                                    IOCD_METRIC_COUNTER, labels, NULL, 0),
                    1);
    snprintf(labels, sizeof(labels), "handler=\"%s\"", esc);
    iocd_metric_observe(iocd_metric_get("iocd_http_request_duration_seconds",
                                        "Time from a request's arrival to its response.",
                                        IOCD_METRIC_HISTOGRAM, labels, buckets,
                                        IOCD_ARRAY_LEN(buckets)),
                        (double)(iocd_mono_ns() - req->start_ns) / 1e9);
}
