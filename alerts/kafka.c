/* alerts/kafka.c - the incidents producer; the only file that sees librdkafka.
 * Idempotent with acks=all, so a retried send never duplicates or reorders within a
 * partition. "mock" brokers start librdkafka's mock cluster inside this process (tests and
 * the demo): it speaks the real protocol on 127.0.0.1, so kcat can consume from it. */
#include "alerts/alerts.h"

#include <stdio.h>
#include <string.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h> /* must follow rdkafka.h */

#define MOCK_BROKERS "3"

struct alert_kafka {
    rd_kafka_t *rk;
    char *bootstrap;
    alert_kafka_dr_fn dr;
    void *dr_ud;
};

/* Delivery reports: each message carries its outbox sequence as the opaque. */
static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    alert_kafka *k = opaque;

    (void)rk;
    if (k->dr != NULL)
        k->dr(k->dr_ud, (uint64_t)(uintptr_t)m->_private, m->err == RD_KAFKA_RESP_ERR_NO_ERROR,
              m->err == RD_KAFKA_RESP_ERR_NO_ERROR ? "" : rd_kafka_err2str(m->err));
}

static void on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    /* syslog levels: 0-3 error, 4 warning, 5-6 info, 7 debug */
    if (level <= 3)
        log_error("kafka", "librdkafka", "facility=%s detail=%s", fac, buf);
    else if (level == 4)
        log_warn("kafka", "librdkafka", "facility=%s detail=%s", fac, buf);
    else if (level <= 6)
        log_info("kafka", "librdkafka", "facility=%s detail=%s", fac, buf);
    else
        log_debug("kafka", "librdkafka", "facility=%s detail=%s", fac, buf);
}

static void on_error(rd_kafka_t *rk, int code, const char *reason, void *opaque)
{
    char fatal[512];

    (void)opaque;
    if (code == RD_KAFKA_RESP_ERR__FATAL) {
        rd_kafka_fatal_error(rk, fatal, sizeof(fatal));
        log_error("kafka", "fatal producer error", "reason=%s", fatal);
        return;
    }
    /* Transport errors and "all brokers down" are informational: librdkafka reconnects and
     * keeps queued messages. */
    log_warn("kafka", "broker connection problem", "code=%s reason=%s",
             rd_kafka_err2name((rd_kafka_resp_err_t)code), reason);
}

static iocd_err conf_set(rd_kafka_conf_t *conf, const char *key, const char *value, char *errbuf,
                         size_t errlen)
{
    char why[256];

    if (rd_kafka_conf_set(conf, key, value, why, sizeof(why)) != RD_KAFKA_CONF_OK) {
        snprintf(errbuf, errlen, "kafka property %s: %s", key, why);
        return IOCD_EINVAL;
    }
    return IOCD_OK;
}

iocd_err alert_kafka_open(const char *brokers, const alert_kafka_prop *props, size_t n_props,
                          alert_kafka **out, char *errbuf, size_t errlen)
{
    /* Idempotent and never timing a message out: librdkafka retries in order through any
     * outage, so events cannot be reordered by a timeout (the outbox still re-sends after a
     * crash, and after an error report). */
    static const char *const defaults[][2] = {
        { "enable.idempotence", "true" },
        { "acks", "all" },
        { "linger.ms", "1" },
        { "reconnect.backoff.max.ms", "1000" },
        { "client.id", "iocd" },
        { "message.timeout.ms", "0" },
        { "queue.buffering.max.messages", "100000" },
    };
    rd_kafka_conf_t *conf = NULL;
    alert_kafka *k = NULL;
    bool mock = strcmp(brokers, "mock") == 0;
    iocd_err err = IOCD_OK;
    char why[512];
    size_t i;

    k = iocd_calloc(1, sizeof(*k));
    conf = rd_kafka_conf_new();
    if (k == NULL || conf == NULL) {
        err = IOCD_ENOMEM;
        goto out;
    }
    for (i = 0; err == IOCD_OK && i < IOCD_ARRAY_LEN(defaults); i++)
        err = conf_set(conf, defaults[i][0], defaults[i][1], errbuf, errlen);
    if (err == IOCD_OK)
        err = mock ? conf_set(conf, "test.mock.num.brokers", MOCK_BROKERS, errbuf, errlen)
                   : conf_set(conf, "bootstrap.servers", brokers, errbuf, errlen);
    for (i = 0; err == IOCD_OK && i < n_props; i++)
        err = conf_set(conf, props[i].key, props[i].value, errbuf, errlen);
    if (err != IOCD_OK)
        goto out;
    rd_kafka_conf_set_log_cb(conf, on_log);
    rd_kafka_conf_set_error_cb(conf, on_error);
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_opaque(conf, k);
    k->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof(why));
    if (k->rk == NULL) {
        snprintf(errbuf, errlen, "kafka: cannot create producer: %s", why);
        err = IOCD_EINVAL;
        goto out;
    }
    conf = NULL; /* owned by rk now */
    if (mock) {
        rd_kafka_mock_cluster_t *mc = rd_kafka_handle_mock_cluster(k->rk);
        k->bootstrap = iocd_strdup(mc != NULL ? rd_kafka_mock_cluster_bootstraps(mc) : "");
    } else {
        k->bootstrap = iocd_strdup(brokers);
    }
    if (k->bootstrap == NULL) {
        err = IOCD_ENOMEM;
        goto out;
    }
    log_info("kafka", mock ? "mock kafka cluster started" : "kafka producer ready", "bootstrap=%s",
             k->bootstrap);
    *out = k;
    k = NULL;
out:
    if (conf != NULL)
        rd_kafka_conf_destroy(conf);
    alert_kafka_close(k, 0);
    return err;
}

const char *alert_kafka_bootstrap(const alert_kafka *k)
{
    return k->bootstrap;
}

void alert_kafka_close(alert_kafka *k, int timeout_ms)
{
    if (k == NULL)
        return;
    if (k->rk != NULL) {
        if (rd_kafka_flush(k->rk, timeout_ms) != RD_KAFKA_RESP_ERR_NO_ERROR)
            log_warn("kafka", "messages still queued at close", "count=%d",
                     rd_kafka_outq_len(k->rk));
        rd_kafka_destroy(k->rk);
    }
    iocd_free(k->bootstrap);
    iocd_free(k);
}

void alert_kafka_on_delivery(alert_kafka *k, alert_kafka_dr_fn fn, void *ud)
{
    k->dr = fn;
    k->dr_ud = ud;
}

iocd_err alert_kafka_produce(alert_kafka *k, const char *topic, const void *key, size_t klen,
                             const void *val, size_t vlen, const alert_kafka_header *h, size_t nh,
                             uint64_t seq)
{
    rd_kafka_headers_t *hdrs = rd_kafka_headers_new(nh);
    rd_kafka_resp_err_t rc;
    size_t i;

    if (hdrs == NULL)
        return IOCD_ENOMEM;
    for (i = 0; i < nh; i++)
        rd_kafka_header_add(hdrs, h[i].name, -1, h[i].value, -1);
    rc = rd_kafka_producev(k->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY((void *)key, klen),
                           RD_KAFKA_V_VALUE((void *)val, vlen), RD_KAFKA_V_HEADERS(hdrs),
                           RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                           RD_KAFKA_V_OPAQUE((void *)(uintptr_t)seq), RD_KAFKA_V_END);
    if (rc == RD_KAFKA_RESP_ERR_NO_ERROR)
        return IOCD_OK; /* the headers belong to the message now */
    rd_kafka_headers_destroy(hdrs);
    if (rc == RD_KAFKA_RESP_ERR__QUEUE_FULL)
        return IOCD_EAGAIN;
    log_warn("kafka", "produce refused", "topic=%s err=%s", topic, rd_kafka_err2str(rc));
    return rc == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC || rc == RD_KAFKA_RESP_ERR__INVALID_ARG
               ? IOCD_EINVAL
               : IOCD_EIO;
}

void alert_kafka_poll(alert_kafka *k, int timeout_ms)
{
    rd_kafka_poll(k->rk, timeout_ms);
}

void alert_kafka_purge(alert_kafka *k)
{
    rd_kafka_purge(k->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_poll(k->rk, 0);
}

void alert_kafka_mock_topic(alert_kafka *k, const char *topic, int partitions)
{
    rd_kafka_mock_cluster_t *mc = k != NULL ? rd_kafka_handle_mock_cluster(k->rk) : NULL;

    if (mc != NULL && rd_kafka_mock_topic_create(mc, topic, partitions, 1) != 0)
        log_warn("kafka", "cannot create the mock topic", "topic=%s", topic);
}
