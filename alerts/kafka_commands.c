/* alerts/kafka_commands.c - commands back from dispatch. A consumer of the commands topic (default
 * "iocd.incident-commands", consumer group "iocd") applies each message to an incident with the
 * same effect as the API:
 *   {"id": 12, "action": "ack", "by": "dispatch-7", "note": "crew 3 on the way",
 *    "command_id": "c-8812"}
 * actions: ack (note), assign (to), comment (text), resolve (reason). The resulting state
 * change is an incident event on the incidents topic like any other, which is the dispatch
 * system's confirmation. Offsets are committed only after a command is applied (or refused
 * for good), so a crash re-reads it; a command_id, when given, is remembered in the data
 * file ("commands" table) so a re-read command is not applied twice. A storage error leaves
 * the command to be retried; a malformed one is logged with its partition and offset, counted
 * and skipped. */
#include "alerts/alerts_int.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

#define COMMAND_BYTES_MAX (64 * 1024)
#define SEEN_MAX          8192 /* command ids remembered in memory (the newest) */
#define CMD_HELP          "Commands read from the commands topic, by result."

struct alert_commands {
    rd_kafka_t *rk;
    alert_center *ac;
    store *st;
    char *topic;
    pthread_t th;
    bool started;
    atomic_bool stop;
    char *seen[SEEN_MAX]; /* a ring of recent command ids */
    size_t seen_next;
    iocd_metric *m_applied, *m_refused, *m_invalid, *m_dup;
};

static bool seen_has(const alert_commands *c, const char *id)
{
    size_t i;

    for (i = 0; i < SEEN_MAX; i++)
        if (c->seen[i] != NULL && strcmp(c->seen[i], id) == 0)
            return true;
    return false;
}

static void seen_add(alert_commands *c, const char *id)
{
    char *copy = iocd_strdup(id);

    if (copy == NULL)
        return;
    iocd_free(c->seen[c->seen_next]);
    c->seen[c->seen_next] = copy;
    c->seen_next = (c->seen_next + 1) % SEEN_MAX;
}

static iocd_err load_seen(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    alert_commands *c = ud;
    char id[256];

    (void)val;
    (void)vlen;
    if (klen > 0 && klen < sizeof(id)) {
        memcpy(id, key, klen);
        id[klen] = '\0';
        seen_add(c, id);
    }
    return IOCD_OK;
}

static const char *str_of(const iocd_json_obj *o, const char *key)
{
    iocd_json_kind kind;
    const char *v = iocd_json_get(o, key, &kind);

    return v != NULL && kind == IOCD_JSON_STRING ? v : NULL;
}

typedef enum outcome {
    CMD_APPLIED,
    CMD_REFUSED, /* well-formed, but it does not apply (no such incident, already resolved) */
    CMD_INVALID, /* not a command */
    CMD_RETRY,   /* a storage error: try again */
} outcome;

/* Applies one message; why says what went wrong. */
static outcome apply(alert_commands *c, const char *text, size_t len, char *why, size_t wlen)
{
    static const struct {
        const char *name, *field;
        alert_action act;
    } actions[] = {
        { "ack", "note", ALERT_ACK },           { "acknowledge", "note", ALERT_ACK },
        { "assign", "to", ALERT_ASSIGN },       { "comment", "text", ALERT_COMMENT },
        { "resolve", "reason", ALERT_RESOLVE },
    };
    iocd_json_obj o;
    const char *action, *by, *cmd_id, *idv, *arg = NULL;
    iocd_json_kind kind;
    char *end;
    unsigned long long id;
    size_t i;
    iocd_buf out;
    outcome res;
    iocd_err err;

    if (len > COMMAND_BYTES_MAX) {
        snprintf(why, wlen, "%zu bytes: over the %d-byte cap", len, COMMAND_BYTES_MAX);
        return CMD_INVALID;
    }
    if (iocd_json_object_parse(text, len, &o, why, wlen) != IOCD_OK)
        return CMD_INVALID;
    action = str_of(&o, "action");
    by = str_of(&o, "by");
    cmd_id = str_of(&o, "command_id");
    idv = iocd_json_get(&o, "id", &kind);
    for (i = 0; action != NULL && i < IOCD_ARRAY_LEN(actions); i++)
        if (strcmp(action, actions[i].name) == 0)
            break;
    id = idv != NULL && (kind == IOCD_JSON_NUMBER || kind == IOCD_JSON_STRING)
             ? strtoull(idv, &end, 10)
             : 0;
    if (id == 0 || idv == NULL || *end != '\0') {
        snprintf(why, wlen, "\"id\" must be an incident id (a positive integer)");
        res = CMD_INVALID;
    } else if (action == NULL || i == IOCD_ARRAY_LEN(actions)) {
        snprintf(why, wlen, "\"action\" must be ack, assign, comment or resolve");
        res = CMD_INVALID;
    } else if (by == NULL || by[0] == '\0') {
        snprintf(why, wlen, "\"by\" (who acts) is required");
        res = CMD_INVALID;
    } else if (cmd_id != NULL && (cmd_id[0] == '\0' || strlen(cmd_id) > 200)) {
        snprintf(why, wlen, "\"command_id\" must be 1 to 200 bytes");
        res = CMD_INVALID;
    } else if (cmd_id != NULL && seen_has(c, cmd_id)) {
        snprintf(why, wlen, "command %s was applied before", cmd_id);
        iocd_metric_add(c->m_dup, 1);
        res = CMD_REFUSED;
    } else {
        arg = str_of(&o, actions[i].field);
        if ((actions[i].act == ALERT_ASSIGN || actions[i].act == ALERT_COMMENT) &&
            (arg == NULL || arg[0] == '\0')) {
            snprintf(why, wlen, "\"%s\" is required to %s", actions[i].field, action);
            res = CMD_INVALID;
        } else {
            iocd_buf_init(&out, 0);
            err = alert_incident_act(c->ac, (uint64_t)id, actions[i].act, by, arg, &out, why, wlen);
            iocd_buf_fini(&out);
            if (err == IOCD_ENOTFOUND)
                snprintf(why, wlen, "no incident %llu", id);
            res = err == IOCD_OK                                ? CMD_APPLIED
                  : err == IOCD_ENOTFOUND || err == IOCD_EINVAL ? CMD_REFUSED
                                                                : CMD_RETRY;
            if (res == CMD_RETRY)
                snprintf(why, wlen, "not saved: %s", iocd_strerror(err));
            if (res != CMD_RETRY && cmd_id != NULL) {
                /* Remembered before the offset is committed: a re-read does nothing. */
                if (store_kv_put(c->st, "commands", cmd_id, strlen(cmd_id), "1", 1) != IOCD_OK)
                    res = CMD_RETRY;
                else
                    seen_add(c, cmd_id);
            }
        }
    }
    iocd_json_obj_fini(&o);
    return res;
}

static void *consume(void *arg)
{
    alert_commands *c = arg;

    iocd_thread_name("kafka-commands");
    while (!atomic_load(&c->stop)) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c->rk, 200);
        char why[300] = "";
        outcome res;
        if (m == NULL)
            continue;
        if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                log_warn("commands", "consumer error", "topic=%s err=%s", c->topic,
                         rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            continue;
        }
        for (;;) {
            res = apply(c, m->payload != NULL ? m->payload : "", m->len, why, sizeof(why));
            if (res != CMD_RETRY || atomic_load(&c->stop))
                break;
            log_warn("commands", "command not applied, retrying", "partition=%d offset=%lld why=%s",
                     (int)m->partition, (long long)m->offset, why);
            {
                struct timespec ts = { 1, 0 };
                nanosleep(&ts, NULL);
            }
        }
        if (res == CMD_APPLIED) {
            iocd_metric_add(c->m_applied, 1);
            log_info("commands", "command applied", "partition=%d offset=%lld", (int)m->partition,
                     (long long)m->offset);
        } else if (res == CMD_REFUSED) {
            iocd_metric_add(c->m_refused, 1);
            log_warn("commands", "command refused", "partition=%d offset=%lld why=%s",
                     (int)m->partition, (long long)m->offset, why);
        } else if (res == CMD_INVALID) {
            iocd_metric_add(c->m_invalid, 1);
            log_warn("commands", "malformed command skipped", "partition=%d offset=%lld why=%s",
                     (int)m->partition, (long long)m->offset, why);
        }
        if (res != CMD_RETRY)
            rd_kafka_commit_message(c->rk, m, 1);
        rd_kafka_message_destroy(m);
    }
    return NULL;
}

iocd_err alert_commands_start(alert_center *ac, store *st, const char *bootstrap,
                              const alert_kafka_prop *props, size_t n_props, const char *topic,
                              alert_commands **out, char *errbuf, size_t errlen)
{
    static const char *const defaults[][2] = {
        { "group.id", "iocd" },
        { "client.id", "iocd-commands" },
        { "enable.auto.commit", "false" },
        { "auto.offset.reset", "earliest" },
        { "enable.partition.eof", "false" },
        { "reconnect.backoff.max.ms", "1000" },
        /* A restarted iocd takes its partitions back once the old member's session ends:
         * keep that short (one consumer, on a LAN). */
        { "session.timeout.ms", "6000" },
        { "heartbeat.interval.ms", "1000" },
    };
    /* The producer's settings in the config file that a consumer does not take. */
    static const char *const producer_only[] = { "acks",
                                                 "enable.idempotence",
                                                 "linger.ms",
                                                 "message.timeout.ms",
                                                 "compression.type",
                                                 "queue.buffering.max.messages",
                                                 "queue.buffering.max.ms" };
    alert_commands *c = iocd_calloc(1, sizeof(*c));
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_topic_partition_list_t *subs = NULL;
    char why[512];
    iocd_err err = IOCD_OK;
    size_t i, j;

    if (c == NULL || conf == NULL || (c->topic = iocd_strdup(topic)) == NULL) {
        err = IOCD_ENOMEM;
        goto fail;
    }
    c->ac = ac;
    c->st = st;
    atomic_init(&c->stop, false);
    for (i = 0; i < IOCD_ARRAY_LEN(defaults) + 1 + n_props; i++) {
        const char *k, *v;
        if (i < IOCD_ARRAY_LEN(defaults)) {
            k = defaults[i][0];
            v = defaults[i][1];
        } else if (i == IOCD_ARRAY_LEN(defaults)) {
            k = "bootstrap.servers";
            v = bootstrap;
        } else {
            k = props[i - IOCD_ARRAY_LEN(defaults) - 1].key;
            v = props[i - IOCD_ARRAY_LEN(defaults) - 1].value;
        }
        for (j = 0; j < IOCD_ARRAY_LEN(producer_only) && strcmp(k, producer_only[j]) != 0; j++)
            ;
        if (j < IOCD_ARRAY_LEN(producer_only))
            continue;
        if (rd_kafka_conf_set(conf, k, v, why, sizeof(why)) != RD_KAFKA_CONF_OK) {
            snprintf(errbuf, errlen, "kafka commands consumer: property %s: %s", k, why);
            err = IOCD_EINVAL;
            goto fail;
        }
    }
    c->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, sizeof(why));
    if (c->rk == NULL) {
        snprintf(errbuf, errlen, "kafka: cannot create the commands consumer: %s", why);
        err = IOCD_EINVAL;
        goto fail;
    }
    conf = NULL;
    rd_kafka_poll_set_consumer(c->rk);
    err = store_kv_each(st, "commands", load_seen, c);
    if (err != IOCD_OK) {
        snprintf(errbuf, errlen, "commands: cannot read the applied command ids: %s",
                 iocd_strerror(err));
        goto fail;
    }
    subs = rd_kafka_topic_partition_list_new(1);
    if (subs == NULL) {
        err = IOCD_ENOMEM;
        goto fail;
    }
    rd_kafka_topic_partition_list_add(subs, topic, RD_KAFKA_PARTITION_UA);
    if (rd_kafka_subscribe(c->rk, subs) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        snprintf(errbuf, errlen, "kafka: cannot subscribe to %s", topic);
        err = IOCD_EINVAL;
        goto fail;
    }
    rd_kafka_topic_partition_list_destroy(subs);
    subs = NULL;
    c->m_applied = iocd_metric_get("iocd_incident_commands_total", CMD_HELP, IOCD_METRIC_COUNTER,
                                   "result=\"applied\"", NULL, 0);
    c->m_refused = iocd_metric_get("iocd_incident_commands_total", CMD_HELP, IOCD_METRIC_COUNTER,
                                   "result=\"refused\"", NULL, 0);
    c->m_invalid = iocd_metric_get("iocd_incident_commands_total", CMD_HELP, IOCD_METRIC_COUNTER,
                                   "result=\"invalid\"", NULL, 0);
    c->m_dup = iocd_counter("iocd_incident_commands_duplicate_total",
                            "Commands whose command_id had been applied before (skipped).");
    if (pthread_create(&c->th, NULL, consume, c) != 0) {
        err = IOCD_ENOMEM;
        goto fail;
    }
    c->started = true;
    log_info("commands", "consuming incident commands", "topic=%s group=iocd", topic);
    *out = c;
    return IOCD_OK;
fail:
    if (subs != NULL)
        rd_kafka_topic_partition_list_destroy(subs);
    if (conf != NULL)
        rd_kafka_conf_destroy(conf);
    if (err == IOCD_ENOMEM)
        snprintf(errbuf, errlen, "commands: out of memory");
    alert_commands_stop(c);
    return err;
}

void alert_commands_stop(alert_commands *c)
{
    size_t i;

    if (c == NULL)
        return;
    atomic_store(&c->stop, true);
    if (c->started)
        pthread_join(c->th, NULL);
    if (c->rk != NULL) {
        rd_kafka_consumer_close(c->rk);
        rd_kafka_destroy(c->rk);
    }
    for (i = 0; i < SEEN_MAX; i++)
        iocd_free(c->seen[i]);
    iocd_free(c->topic);
    iocd_free(c);
}
