/* alerts/outbox.c - incident events on their way to Kafka, never lost and never reordered.
 * Each event is stored (table "outbox", key = its sequence, big-endian so keys sort in order)
 * in the same transaction as the state change it announces; the dispatch thread sends them
 * in sequence, deletes each after its delivery report, and after any failed report purges
 * what is in flight and starts again from the oldest undelivered one. A crash re-sends what
 * was not confirmed (consumers dedupe by ce_id). In memory the outbox is a queue in sequence
 * order; `sent` marks how far it has been handed to librdkafka. */
#include "alerts/alerts_int.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define INFLIGHT_MAX  1000 /* events handed to librdkafka and not yet confirmed */
#define RETRY_WAIT_MS 1000

typedef struct ob_msg {
    uint64_t seq;
    char *topic, *key, *value, *headers; /* headers: "name\0value\0" pairs */
    size_t vlen, hlen;
    int64_t enqueued_ms;
    bool delivered;
} ob_msg;

struct alert_outbox {
    store *st;
    alert_kafka *k;
    size_t max;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    bool started, stopping;
    ob_msg *q; /* ring, in sequence order */
    size_t head, len, cap;
    size_t sent;       /* q[head .. head+sent) are with librdkafka */
    bool failed;       /* a report failed: purge and restart from the oldest */
    uint64_t next_seq; /* the next sequence to assign */
    iocd_metric *m_depth, *m_age, *m_delivered, *m_failed, *m_full;
};

static void be64(uint8_t *out, uint64_t v)
{
    int i;

    for (i = 7; i >= 0; i--) {
        out[i] = (uint8_t)v;
        v >>= 8;
    }
}

static uint64_t get_be64(const uint8_t *p)
{
    uint64_t v = 0;
    int i;

    for (i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

static void msg_free(ob_msg *m)
{
    iocd_free(m->topic);
    iocd_free(m->key);
    iocd_free(m->value);
    iocd_free(m->headers);
}

static ob_msg *at(alert_outbox *ob, size_t i)
{
    return &ob->q[(ob->head + i) % ob->cap];
}

static iocd_err push(alert_outbox *ob, ob_msg m)
{
    if (ob->len == ob->cap) {
        size_t cap = ob->cap != 0 ? ob->cap * 2 : 256, i;
        ob_msg *g = iocd_malloc(cap * sizeof(*g));
        if (g == NULL)
            return IOCD_ENOMEM;
        for (i = 0; i < ob->len; i++)
            g[i] = *at(ob, i);
        iocd_free(ob->q);
        ob->q = g;
        ob->head = 0;
        ob->cap = cap;
    }
    ob->q[(ob->head + ob->len) % ob->cap] = m;
    ob->len++;
    return IOCD_OK;
}

/* The stored form: u32 topic length, topic, u32 key length, key, u32 headers length,
 * headers, value. */
static iocd_err encode(iocd_buf *b, const char *topic, const char *key, const char *value,
                       size_t vlen, const alert_kafka_header *h, size_t nh)
{
    iocd_buf hb;
    uint32_t n;
    size_t i;
    iocd_err err = IOCD_OK;

    iocd_buf_init(&hb, 0);
    for (i = 0; err == IOCD_OK && i < nh; i++) {
        err = iocd_buf_append(&hb, h[i].name, strlen(h[i].name) + 1);
        if (err == IOCD_OK)
            err = iocd_buf_append(&hb, h[i].value, strlen(h[i].value) + 1);
    }
    n = (uint32_t)strlen(topic);
    if (err == IOCD_OK)
        err = iocd_buf_append(b, &n, 4);
    if (err == IOCD_OK)
        err = iocd_buf_append(b, topic, n);
    n = (uint32_t)strlen(key);
    if (err == IOCD_OK)
        err = iocd_buf_append(b, &n, 4);
    if (err == IOCD_OK)
        err = iocd_buf_append(b, key, n);
    n = (uint32_t)hb.len;
    if (err == IOCD_OK)
        err = iocd_buf_append(b, &n, 4);
    if (err == IOCD_OK && hb.len > 0)
        err = iocd_buf_append(b, hb.data, hb.len);
    if (err == IOCD_OK)
        err = iocd_buf_append(b, value, vlen);
    iocd_buf_fini(&hb);
    return err;
}

static char *dup_n(const char *p, size_t n)
{
    char *s = iocd_malloc(n + 1);

    if (s != NULL) {
        if (n > 0)
            memcpy(s, p, n);
        s[n] = '\0';
    }
    return s;
}

static iocd_err decode(const uint8_t *p, size_t len, ob_msg *m)
{
    const uint8_t *end = p + len;
    uint32_t n[3];
    const char *part[3];
    int i;

    for (i = 0; i < 3; i++) {
        if (end - p < 4)
            return IOCD_ECORRUPT;
        memcpy(&n[i], p, 4);
        p += 4;
        if ((size_t)(end - p) < n[i])
            return IOCD_ECORRUPT;
        part[i] = (const char *)p;
        p += n[i];
    }
    m->topic = dup_n(part[0], n[0]);
    m->key = dup_n(part[1], n[1]);
    m->headers = dup_n(part[2], n[2]);
    m->hlen = n[2];
    m->value = dup_n((const char *)p, (size_t)(end - p));
    m->vlen = (size_t)(end - p);
    if (m->topic == NULL || m->key == NULL || m->headers == NULL || m->value == NULL) {
        msg_free(m);
        return IOCD_ENOMEM;
    }
    return IOCD_OK;
}

/* ---- Dispatch ------------------------------------------------------------------------------ */

static void on_report(void *ud, uint64_t seq, bool ok, const char *why)
{
    alert_outbox *ob = ud;
    size_t i;

    pthread_mutex_lock(&ob->mu);
    for (i = 0; i < ob->sent; i++) {
        ob_msg *m = at(ob, i);
        if (m->seq != seq)
            continue;
        if (ok) {
            m->delivered = true;
        } else if (!ob->failed && !ob->stopping) {
            ob->failed = true;
            log_warn("alerts", "incident event not delivered: sending again in order",
                     "seq=%llu err=%s", (unsigned long long)seq, why);
            iocd_metric_add(ob->m_failed, 1);
        }
        break;
    }
    pthread_mutex_unlock(&ob->mu);
}

/* Deletes the delivered prefix from the store and memory. */
static void drop_delivered(alert_outbox *ob)
{
    uint8_t keys[256][8];
    store_kv_op ops[256];
    size_t n = 0, i;

    pthread_mutex_lock(&ob->mu);
    while (n < 256 && n < ob->sent && at(ob, n)->delivered) {
        be64(keys[n], at(ob, n)->seq);
        ops[n] = (store_kv_op){ "outbox", keys[n], 8, NULL, 0 };
        n++;
    }
    pthread_mutex_unlock(&ob->mu);
    if (n == 0)
        return;
    if (store_kv_write(ob->st, ops, n) != IOCD_OK) {
        log_warn("alerts", "delivered events not yet removed from the outbox", "count=%zu", n);
        return; /* they stay marked delivered and are deleted next time */
    }
    pthread_mutex_lock(&ob->mu);
    for (i = 0; i < n; i++) {
        msg_free(at(ob, 0));
        ob->head = (ob->head + 1) % ob->cap;
        ob->len--;
        ob->sent--;
    }
    iocd_metric_add(ob->m_delivered, (double)n);
    pthread_mutex_unlock(&ob->mu);
}

static void *dispatch(void *ud)
{
    alert_outbox *ob = ud;

    iocd_thread_name("kafka-outbox");
    for (;;) {
        bool stop, failed;
        pthread_mutex_lock(&ob->mu);
        stop = ob->stopping;
        failed = ob->failed;
        pthread_mutex_unlock(&ob->mu);
        if (stop)
            return NULL;
        if (failed) {
            struct timespec ts = { RETRY_WAIT_MS / 1000, (RETRY_WAIT_MS % 1000) * 1000000L };
            alert_kafka_purge(ob->k); /* every in-flight message reports failed */
            nanosleep(&ts, NULL);
            alert_kafka_poll(ob->k, 0);
            pthread_mutex_lock(&ob->mu);
            { /* what was delivered before the failure stays delivered; the rest goes again */
                size_t i = 0;
                while (i < ob->sent && at(ob, i)->delivered)
                    i++;
                ob->sent = i;
            }
            ob->failed = false;
            pthread_mutex_unlock(&ob->mu);
        }
        /* Hand over what is waiting, in order, up to the in-flight window. */
        for (;;) {
            ob_msg m;
            alert_kafka_header h[16];
            size_t nh = 0;
            const char *p;
            iocd_err err;
            pthread_mutex_lock(&ob->mu);
            if (ob->failed || ob->sent >= ob->len || ob->sent >= INFLIGHT_MAX) {
                pthread_mutex_unlock(&ob->mu);
                break;
            }
            m = *at(ob, ob->sent); /* the strings stay owned by the queue */
            pthread_mutex_unlock(&ob->mu);
            for (p = m.headers; p < m.headers + m.hlen && nh < 16; nh++) {
                h[nh].name = p;
                h[nh].value = p + strlen(p) + 1;
                p = h[nh].value + strlen(h[nh].value) + 1;
            }
            err = alert_kafka_produce(ob->k, m.topic, m.key, strlen(m.key), m.value, m.vlen, h, nh,
                                      m.seq);
            if (err == IOCD_EAGAIN)
                break; /* librdkafka's queue is full: poll first */
            pthread_mutex_lock(&ob->mu);
            if (err == IOCD_OK) {
                ob->sent++;
            } else {
                ob->failed = true; /* a permanent refusal: retried after the wait, logged */
            }
            pthread_mutex_unlock(&ob->mu);
        }
        alert_kafka_poll(ob->k, 0);
        drop_delivered(ob);
        pthread_mutex_lock(&ob->mu);
        iocd_metric_set(ob->m_depth, (double)ob->len);
        iocd_metric_set(
            ob->m_age, ob->len > 0 ? (double)(iocd_now_ms() - at(ob, 0)->enqueued_ms) / 1000.0 : 0);
        /* Sleep until a new event (signalled at once) or, with messages in flight, briefly
         * for their delivery reports. */
        if (!ob->stopping && !ob->failed && (ob->sent >= ob->len || ob->sent >= INFLIGHT_MAX)) {
            struct timespec ts;
            long wait_ns = ob->len > 0 ? 2000000L : 100000000L;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += wait_ns;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&ob->cv, &ob->mu, &ts);
        }
        pthread_mutex_unlock(&ob->mu);
    }
}

/* ---- Loading and queueing ----------------------------------------------------------------- */

static iocd_err load_one(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    alert_outbox *ob = ud;
    ob_msg m;
    iocd_err err;

    if (klen != 8)
        return IOCD_OK;
    memset(&m, 0, sizeof(m));
    m.seq = get_be64(key);
    m.enqueued_ms = iocd_now_ms();
    err = decode(val, vlen, &m);
    if (err == IOCD_ECORRUPT) {
        log_error("alerts", "an outbox record is corrupt and skipped", "seq=%llu",
                  (unsigned long long)m.seq);
        return IOCD_OK;
    }
    if (err == IOCD_OK)
        err = push(ob, m);
    if (m.seq >= ob->next_seq)
        ob->next_seq = m.seq + 1;
    return err;
}

iocd_err outbox_open(store *st, alert_kafka *k, size_t max, alert_outbox **out)
{
    alert_outbox *ob = iocd_calloc(1, sizeof(*ob));
    iocd_err err;

    if (ob == NULL)
        return IOCD_ENOMEM;
    ob->st = st;
    ob->k = k;
    ob->max = max != 0 ? max : 1000000;
    ob->next_seq = 1;
    pthread_mutex_init(&ob->mu, NULL);
    pthread_cond_init(&ob->cv, NULL);
    ob->m_depth = iocd_gauge("iocd_outbox_events", "Incident events waiting for delivery.");
    ob->m_age = iocd_gauge("iocd_outbox_oldest_age_seconds",
                           "Age of the oldest incident event waiting for delivery.");
    ob->m_delivered =
        iocd_counter("iocd_outbox_delivered_total", "Incident events confirmed by the brokers.");
    ob->m_failed = iocd_counter("iocd_outbox_failures_total",
                                "Failed deliveries (each followed by an in-order re-send).");
    ob->m_full = iocd_counter("iocd_outbox_full_total",
                              "Incident events not queued because the outbox was full.");
    err = store_kv_each(st, "outbox", load_one, ob);
    if (err != IOCD_OK) {
        outbox_close(ob);
        return err;
    }
    if (ob->len > 0)
        log_info("alerts", "undelivered incident events will be sent again", "count=%zu", ob->len);
    iocd_metric_set(ob->m_depth, (double)ob->len);
    if (k != NULL) {
        alert_kafka_on_delivery(k, on_report, ob);
        if (pthread_create(&ob->thread, NULL, dispatch, ob) != 0) {
            outbox_close(ob);
            return IOCD_EIO;
        }
        ob->started = true;
    }
    *out = ob;
    return IOCD_OK;
}

void outbox_close(alert_outbox *ob)
{
    size_t i;

    if (ob == NULL)
        return;
    if (ob->started) {
        pthread_mutex_lock(&ob->mu);
        ob->stopping = true;
        pthread_cond_signal(&ob->cv);
        pthread_mutex_unlock(&ob->mu);
        pthread_join(ob->thread, NULL);
        /* A last chance for reports of what is in flight, then they stay in the outbox. */
        alert_kafka_poll(ob->k, 500);
        drop_delivered(ob);
        alert_kafka_on_delivery(ob->k, NULL, NULL);
    }
    for (i = 0; i < ob->len; i++)
        msg_free(at(ob, i));
    iocd_free(ob->q);
    pthread_mutex_destroy(&ob->mu);
    pthread_cond_destroy(&ob->cv);
    iocd_free(ob);
}

iocd_err outbox_prepare(alert_outbox *ob, const char *topic, const char *key, const char *value,
                        size_t vlen, const alert_kafka_header *h, size_t nh, iocd_buf *scratch,
                        store_kv_op *op, uint64_t *seq_out)
{
    uint8_t *kb;
    size_t depth;
    iocd_err err;

    pthread_mutex_lock(&ob->mu);
    depth = ob->len;
    pthread_mutex_unlock(&ob->mu);
    if (depth >= ob->max) {
        iocd_metric_add(ob->m_full, 1);
        log_error("alerts",
                  "the outbox is full: incident events are not being queued; check the Kafka "
                  "brokers",
                  "depth=%zu max=%zu", depth, ob->max);
        return IOCD_ELIMIT;
    }
    iocd_buf_reset(scratch);
    err = iocd_buf_reserve(scratch, 8);
    if (err != IOCD_OK)
        return err;
    scratch->len = 8; /* the key first: the buffer grows below, so offsets, not pointers */
    err = encode(scratch, topic, key, value, vlen, h, nh);
    if (err != IOCD_OK)
        return err;
    kb = (uint8_t *)scratch->data;
    be64(kb, ob->next_seq);
    *op = (store_kv_op){ "outbox", kb, 8, scratch->data + 8, scratch->len - 8 };
    *seq_out = ob->next_seq++;
    return IOCD_OK;
}

void outbox_committed(alert_outbox *ob, uint64_t seq, const char *topic, const char *key,
                      const char *value, size_t vlen, const alert_kafka_header *h, size_t nh)
{
    iocd_buf hb;
    ob_msg m;
    size_t i;

    memset(&m, 0, sizeof(m));
    iocd_buf_init(&hb, 0);
    for (i = 0; i < nh; i++) {
        iocd_buf_append(&hb, h[i].name, strlen(h[i].name) + 1);
        iocd_buf_append(&hb, h[i].value, strlen(h[i].value) + 1);
    }
    m.seq = seq;
    m.enqueued_ms = iocd_now_ms();
    m.topic = iocd_strdup(topic);
    m.key = iocd_strdup(key);
    m.value = dup_n(value, vlen);
    m.vlen = vlen;
    m.hlen = hb.len;
    m.headers = dup_n(hb.data != NULL ? hb.data : "", hb.len);
    iocd_buf_fini(&hb);
    pthread_mutex_lock(&ob->mu);
    if (m.topic == NULL || m.key == NULL || m.value == NULL || m.headers == NULL ||
        push(ob, m) != IOCD_OK) {
        /* Stored but not queued in memory: it goes out after the next restart. */
        log_error("alerts", "out of memory queueing an incident event (kept in the store)",
                  "seq=%llu", (unsigned long long)seq);
        msg_free(&m);
    }
    iocd_metric_set(ob->m_depth, (double)ob->len);
    pthread_cond_signal(&ob->cv);
    pthread_mutex_unlock(&ob->mu);
}

void outbox_abandon(alert_outbox *ob, uint64_t seq)
{
    if (seq + 1 == ob->next_seq)
        ob->next_seq = seq;
}
