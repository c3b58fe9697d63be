/* tests/tools/kafkatool.c - Kafka for the integration tests, from librdkafka alone:
 *   kafkatool mock               a mock cluster (3 brokers) on 127.0.0.1; prints
 *                                "bootstrap HOST:PORT,..." and serves until stdin closes;
 *                                stdin lines "down" / "up" take every broker down or up.
 *   kafkatool consume BOOTSTRAP TOPIC COUNT TIMEOUT_S
 *                                reads TOPIC from the start until COUNT messages or the
 *                                timeout, printing one JSON object per message: key, value
 *                                (as a string), headers, partition, offset.
 *                                KAFKATOOL_FETCH_WAIT_MS (5) is its fetch.wait.max.ms: the
 *                                mock broker holds an empty fetch that long even when a
 *                                message arrives meanwhile (a real broker answers at once),
 *                                so a latency benchmark sets it to 1.
 *   kafkatool produce BOOTSTRAP TOPIC [KEY]
 *                                sends each stdin line as one message (with KEY, so all go
 *                                to one partition, in order; else no key), waits for
 *                                every delivery and prints "produced N".
 * It lives outside the daemon so that a test can kill -9 iocd and keep the cluster. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

static void json_str(const char *s, size_t n)
{
    size_t i;

    putchar('"');
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

static int mock(void)
{
    char err[512], line[64];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_t *rk;
    rd_kafka_mock_cluster_t *mc;
    int b;

    if (rd_kafka_conf_set(conf, "test.mock.num.brokers", "3", err, sizeof(err)) != RD_KAFKA_CONF_OK)
        return 1;
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (rk == NULL) {
        fprintf(stderr, "kafkatool: %s\n", err);
        return 1;
    }
    mc = rd_kafka_handle_mock_cluster(rk);
    printf("bootstrap %s\n", rd_kafka_mock_cluster_bootstraps(mc));
    fflush(stdout);
    while (fgets(line, sizeof(line), stdin) != NULL) {
        for (b = 1; b <= 3; b++) {
            if (strncmp(line, "down", 4) == 0)
                rd_kafka_mock_broker_set_down(mc, b);
            else if (strncmp(line, "up", 2) == 0)
                rd_kafka_mock_broker_set_up(mc, b);
        }
        printf("ok\n");
        fflush(stdout);
    }
    rd_kafka_destroy(rk);
    return 0;
}

static int consume(const char *bootstrap, const char *topic, long count, double timeout_s)
{
    char err[512], group[64];
    const char *wait_ms = getenv("KAFKATOOL_FETCH_WAIT_MS");
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_topic_partition_list_t *subs;
    rd_kafka_t *rk;
    struct timespec t0, now;
    long got = 0;

    snprintf(group, sizeof(group), "kafkatool-%ld", (long)time(NULL) ^ (long)clock());
    if (rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, err, sizeof(err)) ||
        rd_kafka_conf_set(conf, "group.id", group, err, sizeof(err)) ||
        rd_kafka_conf_set(conf, "auto.offset.reset", "earliest", err, sizeof(err)) ||
        rd_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof(err)) ||
        rd_kafka_conf_set(conf, "fetch.wait.max.ms", wait_ms != NULL ? wait_ms : "5", err,
                          sizeof(err)) ||
        rd_kafka_conf_set(conf, "fetch.error.backoff.ms", "10", err, sizeof(err))) {
        fprintf(stderr, "kafkatool: %s\n", err);
        return 1;
    }
    rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    if (rk == NULL) {
        fprintf(stderr, "kafkatool: %s\n", err);
        return 1;
    }
    rd_kafka_poll_set_consumer(rk);
    subs = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(subs, topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_subscribe(rk, subs);
    rd_kafka_topic_partition_list_destroy(subs);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (got < count) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        clock_gettime(CLOCK_MONOTONIC, &now);
        if ((double)(now.tv_sec - t0.tv_sec) + (double)(now.tv_nsec - t0.tv_nsec) / 1e9 > timeout_s)
            break;
        if (m == NULL)
            continue;
        if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            rd_kafka_headers_t *hdrs = NULL;
            size_t i = 0;
            const char *name;
            const void *val;
            size_t vlen;
            printf("{\"key\":");
            json_str(m->key != NULL ? m->key : "", m->key_len);
            printf(",\"value\":");
            json_str(m->payload != NULL ? m->payload : "", m->len);
            printf(",\"partition\":%d,\"offset\":%lld,\"headers\":{", (int)m->partition,
                   (long long)m->offset);
            if (rd_kafka_message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR) {
                while (rd_kafka_header_get_all(hdrs, i, &name, &val, &vlen) ==
                       RD_KAFKA_RESP_ERR_NO_ERROR) {
                    printf("%s", i > 0 ? "," : "");
                    json_str(name, strlen(name));
                    putchar(':');
                    json_str(val != NULL ? val : "", vlen);
                    i++;
                }
            }
            printf("}}\n");
            fflush(stdout);
            got++;
        }
        rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return got >= count ? 0 : 3;
}

static int produce(const char *bootstrap, const char *topic, const char *key)
{
    char err[512], line[65536];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_t *rk;
    long n = 0;
    size_t klen = key != NULL ? strlen(key) : 0;

    if (rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, err, sizeof(err)) ||
        rd_kafka_conf_set(conf, "acks", "all", err, sizeof(err))) {
        fprintf(stderr, "kafkatool: %s\n", err);
        return 1;
    }
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (rk == NULL) {
        fprintf(stderr, "kafkatool: %s\n", err);
        return 1;
    }
    while (fgets(line, sizeof(line), stdin) != NULL) {
        size_t len = strcspn(line, "\r\n");
        if (rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_VALUE(line, len),
                              RD_KAFKA_V_KEY(key, klen), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                              RD_KAFKA_V_END) != 0) {
            fprintf(stderr, "kafkatool: produce failed\n");
            rd_kafka_destroy(rk);
            return 1;
        }
        n++;
        rd_kafka_poll(rk, 0);
    }
    if (rd_kafka_flush(rk, 30000) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        fprintf(stderr, "kafkatool: not every message was delivered\n");
        rd_kafka_destroy(rk);
        return 1;
    }
    printf("produced %ld\n", n);
    rd_kafka_destroy(rk);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "mock") == 0)
        return mock();
    if ((argc == 4 || argc == 5) && strcmp(argv[1], "produce") == 0)
        return produce(argv[2], argv[3], argc == 5 ? argv[4] : NULL);
    if (argc == 6 && strcmp(argv[1], "consume") == 0)
        return consume(argv[2], argv[3], atol(argv[4]), atof(argv[5]));
    fprintf(stderr, "usage: kafkatool mock | consume BOOTSTRAP TOPIC COUNT TIMEOUT_S | produce "
                    "BOOTSTRAP TOPIC\n");
    return 2;
}
