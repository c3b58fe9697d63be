/* alerts/webhooks.c - incident events POSTed to HTTP endpoints in Alertmanager's webhook format,
 * with the outbox's guarantees: each event is stored (table "webhooks", key = its sequence,
 * big-endian) in the same transaction as the state change it announces, a thread POSTs them
 * strictly in sequence, and one is deleted only after its endpoint answered 2xx. A failure
 * (no connection, a timeout, any other status) is retried with a growing pause (1 s to 30 s)
 * until it succeeds; nothing behind it overtakes it. A crash re-sends what was not confirmed.
 * libcurl does the HTTP (http and https). */
#include "alerts/alerts_int.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#define POST_TIMEOUT_MS 10000
#define RETRY_MIN_MS    1000
#define RETRY_MAX_MS    30000

typedef struct wh_msg {
    uint64_t seq;
    char *url, *body;
    size_t len;
} wh_msg;

struct alert_webhooks {
    store *st;
    size_t max;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    bool started, stopping;
    wh_msg *q; /* ring, in sequence order */
    size_t head, len, cap;
    uint64_t next_seq;
    CURL *curl;
    iocd_metric *m_depth, *m_delivered, *m_retries, *m_full;
};

static void key_of(uint64_t seq, uint8_t out[8])
{
    int i;

    for (i = 7; i >= 0; i--) {
        out[i] = (uint8_t)seq;
        seq >>= 8;
    }
}

static wh_msg *at(alert_webhooks *wh, size_t i)
{
    return &wh->q[(wh->head + i) % wh->cap];
}

static iocd_err push(alert_webhooks *wh, wh_msg m)
{
    if (wh->len == wh->cap) {
        size_t cap = wh->cap != 0 ? wh->cap * 2 : 64, i;
        wh_msg *g = iocd_malloc(cap * sizeof(*g));
        if (g == NULL)
            return IOCD_ENOMEM;
        for (i = 0; i < wh->len; i++)
            g[i] = *at(wh, i);
        iocd_free(wh->q);
        wh->q = g;
        wh->cap = cap;
        wh->head = 0;
    }
    *at(wh, wh->len) = m;
    wh->len++;
    iocd_metric_set(wh->m_depth, (double)wh->len);
    return IOCD_OK;
}

static size_t discard(char *p, size_t size, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return size * n;
}

/* POSTs one event; 0 when the endpoint answered 2xx, else why in errbuf. */
static int post(alert_webhooks *wh, const wh_msg *m, char *errbuf, size_t errlen)
{
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    long status = 0;
    CURLcode rc;

    curl_easy_reset(wh->curl);
    curl_easy_setopt(wh->curl, CURLOPT_URL, m->url);
    curl_easy_setopt(wh->curl, CURLOPT_POSTFIELDS, m->body);
    curl_easy_setopt(wh->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)m->len);
    curl_easy_setopt(wh->curl, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(wh->curl, CURLOPT_TIMEOUT_MS, (long)POST_TIMEOUT_MS);
    curl_easy_setopt(wh->curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(wh->curl, CURLOPT_USERAGENT, "iocd/" IOCD_VERSION);
    curl_easy_setopt(wh->curl, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(wh->curl, CURLOPT_PROTOCOLS_STR, "http,https");
    rc = curl_easy_perform(wh->curl);
    curl_slist_free_all(h);
    if (rc != CURLE_OK) {
        snprintf(errbuf, errlen, "%s", curl_easy_strerror(rc));
        return -1;
    }
    curl_easy_getinfo(wh->curl, CURLINFO_RESPONSE_CODE, &status);
    if (status < 200 || status > 299) {
        snprintf(errbuf, errlen, "HTTP %ld", status);
        return -1;
    }
    return 0;
}

static void *dispatch(void *ud)
{
    alert_webhooks *wh = ud;
    int64_t pause_ms = RETRY_MIN_MS;

    iocd_thread_name("webhooks");
    pthread_mutex_lock(&wh->mu);
    while (!wh->stopping) {
        wh_msg m;
        char why[256];
        uint8_t key[8];
        if (wh->len == 0) {
            pthread_cond_wait(&wh->cv, &wh->mu);
            continue;
        }
        m = *at(wh, 0); /* only this thread removes entries: m stays valid */
        pthread_mutex_unlock(&wh->mu);
        if (post(wh, &m, why, sizeof(why)) == 0) {
            key_of(m.seq, key);
            if (store_kv_del(wh->st, "webhooks", key, 8) != IOCD_OK)
                log_warn("alerts",
                         "webhook sent but not removed from the queue: it will be "
                         "sent again after a restart",
                         "seq=%llu", (unsigned long long)m.seq);
            pthread_mutex_lock(&wh->mu);
            wh->head = (wh->head + 1) % wh->cap;
            wh->len--;
            iocd_metric_set(wh->m_depth, (double)wh->len);
            iocd_metric_add(wh->m_delivered, 1);
            iocd_free(m.url);
            iocd_free(m.body);
            pause_ms = RETRY_MIN_MS;
            continue;
        }
        log_warn("alerts", "webhook failed, retrying in order", "url=%s why=%s retry_ms=%lld",
                 m.url, why, (long long)pause_ms);
        iocd_metric_add(wh->m_retries, 1);
        pthread_mutex_lock(&wh->mu);
        if (!wh->stopping) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += pause_ms / 1000;
            ts.tv_nsec += (pause_ms % 1000) * 1000000;
            if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&wh->cv, &wh->mu, &ts);
        }
        pause_ms = pause_ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : pause_ms * 2;
    }
    pthread_mutex_unlock(&wh->mu);
    return NULL;
}

static iocd_err load_one(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    alert_webhooks *wh = ud;
    const uint8_t *k = key;
    const char *v = val;
    size_t ulen = strnlen(v, vlen), i;
    wh_msg m;

    if (klen != 8 || ulen >= vlen)
        return IOCD_OK; /* not ours: skipped */
    m.seq = 0;
    for (i = 0; i < 8; i++)
        m.seq = m.seq << 8 | k[i];
    m.url = iocd_strndup(v, ulen);
    m.len = vlen - ulen - 1;
    m.body = iocd_strndup(v + ulen + 1, m.len);
    if (m.url == NULL || m.body == NULL || push(wh, m) != IOCD_OK) {
        iocd_free(m.url);
        iocd_free(m.body);
        return IOCD_ENOMEM;
    }
    if (m.seq >= wh->next_seq)
        wh->next_seq = m.seq + 1;
    return IOCD_OK;
}

iocd_err webhooks_open(store *st, size_t max, alert_webhooks **out)
{
    alert_webhooks *wh = iocd_calloc(1, sizeof(*wh));
    iocd_err err;

    if (wh == NULL)
        return IOCD_ENOMEM;
    wh->st = st;
    wh->max = max != 0 ? max : 1000000;
    wh->next_seq = 1;
    pthread_mutex_init(&wh->mu, NULL);
    pthread_cond_init(&wh->cv, NULL);
    wh->m_depth = iocd_gauge("iocd_webhook_queue_depth", "Webhook events waiting for a 2xx.");
    wh->m_delivered = iocd_counter("iocd_webhooks_delivered_total", "Webhook events delivered.");
    wh->m_retries = iocd_counter("iocd_webhook_retries_total",
                                 "Webhook deliveries that failed and will be retried.");
    wh->m_full = iocd_counter("iocd_webhook_queue_full_total",
                              "Webhook events not queued because the queue was full.");
    err = store_kv_each(st, "webhooks", load_one, wh);
    if (err == IOCD_OK && curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        err = IOCD_ENOMEM; /* called at startup, before other threads use libcurl */
    wh->curl = err == IOCD_OK ? curl_easy_init() : NULL;
    if (err == IOCD_OK && wh->curl == NULL)
        err = IOCD_ENOMEM;
    if (err == IOCD_OK && pthread_create(&wh->thread, NULL, dispatch, wh) != 0)
        err = IOCD_ENOMEM;
    if (err != IOCD_OK) {
        webhooks_close(wh);
        return err;
    }
    wh->started = true;
    if (wh->len > 0)
        log_info("alerts", "webhook events to resend", "count=%zu", wh->len);
    *out = wh;
    return IOCD_OK;
}

void webhooks_close(alert_webhooks *wh)
{
    size_t i;

    if (wh == NULL)
        return;
    if (wh->started) {
        pthread_mutex_lock(&wh->mu);
        wh->stopping = true;
        pthread_cond_broadcast(&wh->cv);
        pthread_mutex_unlock(&wh->mu);
        pthread_join(wh->thread, NULL); /* a POST in progress ends within its timeout */
    }
    for (i = 0; i < wh->len; i++) {
        iocd_free(at(wh, i)->url);
        iocd_free(at(wh, i)->body);
    }
    iocd_free(wh->q);
    if (wh->curl != NULL)
        curl_easy_cleanup(wh->curl);
    pthread_cond_destroy(&wh->cv);
    pthread_mutex_destroy(&wh->mu);
    iocd_free(wh);
}

iocd_err webhooks_prepare(alert_webhooks *wh, const char *url, const char *body, size_t len,
                          iocd_buf *scratch, store_kv_op *op, uint64_t *seq_out)
{
    uint8_t key[8];
    iocd_err err;

    pthread_mutex_lock(&wh->mu);
    if (wh->len >= wh->max) {
        pthread_mutex_unlock(&wh->mu);
        iocd_metric_add(wh->m_full, 1);
        log_error("alerts", "webhook queue full: event not queued", "url=%s max=%zu", url, wh->max);
        return IOCD_ELIMIT;
    }
    *seq_out = wh->next_seq++;
    pthread_mutex_unlock(&wh->mu);
    iocd_buf_reset(scratch);
    key_of(*seq_out, key);
    err = iocd_buf_append(scratch, key, 8);
    if (err == IOCD_OK)
        err = iocd_buf_append(scratch, url, strlen(url) + 1);
    if (err == IOCD_OK)
        err = iocd_buf_append(scratch, body, len);
    if (err != IOCD_OK) {
        webhooks_abandon(wh, *seq_out);
        return err;
    }
    *op = (store_kv_op){ "webhooks", scratch->data, 8, scratch->data + 8, scratch->len - 8 };
    return IOCD_OK;
}

void webhooks_committed(alert_webhooks *wh, uint64_t seq, const char *url, const char *body,
                        size_t len)
{
    wh_msg m = { seq, iocd_strdup(url), iocd_strndup(body, len), len };

    pthread_mutex_lock(&wh->mu);
    if (m.url == NULL || m.body == NULL || push(wh, m) != IOCD_OK) {
        iocd_free(m.url);
        iocd_free(m.body);
        log_error("alerts",
                  "webhook event stored but not queued (out of memory): it is sent "
                  "after a restart",
                  "seq=%llu", (unsigned long long)seq);
    } else {
        pthread_cond_signal(&wh->cv);
    }
    pthread_mutex_unlock(&wh->mu);
}

void webhooks_abandon(alert_webhooks *wh, uint64_t seq)
{
    pthread_mutex_lock(&wh->mu);
    if (seq + 1 == wh->next_seq)
        wh->next_seq = seq;
    pthread_mutex_unlock(&wh->mu);
}
