/* alerts/alerts.h - incidents and their dispatch over Kafka. This header shows no
 * librdkafka type. Threads: a producer handle may be used from any thread. */
#ifndef IOCD_ALERTS_H
#define IOCD_ALERTS_H

#include "query/query.h"

typedef struct alert_kafka alert_kafka;

/* One librdkafka property passed through from the config file ("security.protocol"=...). */
typedef struct alert_kafka_prop {
    const char *key;
    const char *value;
} alert_kafka_prop;

/* Opens the incidents producer. brokers is a bootstrap list, or "mock" to start librdkafka's
 * mock cluster in this process (its bootstrap address is then alert_kafka_bootstrap()).
 * Errors: IOCD_EINVAL (a bad property or list; errbuf says which), IOCD_ENOMEM. */
iocd_err alert_kafka_open(const char *brokers, const alert_kafka_prop *props, size_t n_props,
                          alert_kafka **out, char *errbuf, size_t errlen);
/* The bootstrap servers in use (the mock cluster's address in mock mode). Borrowed. */
const char *alert_kafka_bootstrap(const alert_kafka *k);
/* Waits up to timeout_ms for queued messages, then frees. NULL is a no-op. */
void alert_kafka_close(alert_kafka *k, int timeout_ms);

#endif
