/* cmd/serve.c - `iocd serve`: wires the modules together and runs until told to stop.
 * Start order: config, logs, listeners (so a port in use fails fast), HTTP (answering
 * /-/ready with 503), Kafka, then the store, after which /-/ready turns 200.
 * Stop order is the reverse of data flow: stop accepting, let in-flight requests finish,
 * flush what was acknowledged, close the store (which releases the data dir's lock). */
#include "cmd/cmd.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "api/api.h"
#include "collector/collector.h"
#include "common/common.h"
#include "storage/storage.h"

typedef struct daemon_state {
    col_config cfg;
    rule_engine *rules; /* NULL without --rules */
    alert_center *alerts;
    char **argv; /* kept for SIGHUP: the config is re-read with the same flags */
    int argc;
} daemon_state;

void cmd_serve_usage(void)
{
    iocd_buf b;

    iocd_buf_init(&b, 0);
    if (col_config_help(&b) != IOCD_OK) {
        iocd_buf_fini(&b);
        return;
    }
    printf("Usage: iocd serve [flags]\n"
           "\n"
           "Runs the daemon: line-protocol listeners (TCP, UDP), the HTTP API and console, the\n"
           "store in --data-dir, alert rules and incident dispatch. SIGTERM or SIGINT stop it\n"
           "gracefully; SIGHUP reloads what can change live (log level, rules).\n"
           "\n"
           "Flags (each also settable in the config file; flags win):\n"
           "%s",
           b.data);
    iocd_buf_fini(&b);
}

int cmd_config_reference(void)
{
    iocd_buf b;
    int rc = 1;

    iocd_buf_init(&b, 0);
    if (col_config_doc(&b) == IOCD_OK) {
        fputs(b.data, stdout);
        rc = 0;
    }
    iocd_buf_fini(&b);
    return rc;
}

/* SIGHUP: re-read the config file with the same flags and apply what can change live. */
static void on_reload(void *ud)
{
    daemon_state *d = ud;
    col_config fresh;
    char errbuf[512];
    iocd_err err = col_config_init(&fresh);

    if (err == IOCD_OK)
        err = col_config_parse(&fresh, d->argc, d->argv, errbuf, sizeof(errbuf));
    if (err != IOCD_OK) {
        log_error("serve", "reload failed, keeping the running config", "err=%s",
                  err == IOCD_ENOMEM ? iocd_strerror(err) : errbuf);
        col_config_fini(&fresh);
        return;
    }
    iocd_log_setup(fresh.log_level, d->cfg.log_format, 2);
    d->cfg.log_level = fresh.log_level;
    log_info("serve", "config reloaded", "log_level=%d", (int)fresh.log_level);
    col_config_fini(&fresh);
    if (d->rules != NULL) {
        if (rule_engine_load(d->rules, d->cfg.rules_path, errbuf, sizeof(errbuf)) != IOCD_OK)
            log_error("serve", "rule reload refused, the running rules stay", "err=%s", errbuf);
        else
            log_info("serve", "rules reloaded", "path=%s rules=%zu", d->cfg.rules_path,
                     rule_engine_count(d->rules));
    }
}

/* Rule alerts become incidents: firing opens (or reopens) one, resolving resolves it. Pending
 * states and shadow rules never reach dispatch. */
static void on_rule_event(void *ud, const rule_event *ev)
{
    daemon_state *d = ud;
    alert_signal sig;

    if (d->alerts == NULL || ev->shadow)
        return;
    if (ev->to == RULE_FIRING)
        sig.firing = true;
    else if (ev->from == RULE_FIRING && ev->to == RULE_INACTIVE)
        sig.firing = false;
    else
        return;
    sig.rule = ev->rule;
    sig.labels = ev->labels;
    sig.labels_len = ev->labels_len;
    sig.summary = ev->summary;
    sig.description = ev->description;
    sig.runbook = ev->runbook;
    sig.severity = ev->severity;
    sig.domain = ev->domain;
    sig.value = ev->value;
    sig.t_ms = ev->t_ms;
    sig.inhibit_match = ev->inhibit_match;
    sig.inhibit_equal = ev->inhibit_equal;
    sig.n_inhibit_equal = ev->n_inhibit_equal;
    sig.query = ev->query;
    sig.members = ev->members;
    sig.restored = ev->restored;
    alert_center_signal(d->alerts, &sig);
}

static alert_kafka_prop *kafka_props(const col_config *cfg)
{
    alert_kafka_prop *p = iocd_calloc(cfg->n_kafka_props + 1, sizeof(*p));
    size_t i;

    for (i = 0; p != NULL && i < cfg->n_kafka_props; i++) {
        p[i].key = cfg->kafka_props[i].key;
        p[i].value = cfg->kafka_props[i].value;
    }
    return p;
}

int cmd_serve(int argc, char **argv)
{
    daemon_state d;
    col_loop *loop = NULL;
    api_server *api = NULL;
    alert_kafka *kafka = NULL;
    alert_kafka_prop *props = NULL;
    alert_commands *commands = NULL;
    alert_route *routes = NULL;
    store *st = NULL;
    col_ingest *ingest = NULL;
    store_config scfg;
    char errbuf[1024] = "";
    int64_t stop_start_ns, budget_ms;
    iocd_err err;
    int i, rc = 1, sig;

    for (i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            cmd_serve_usage();
            return 0;
        }
    }
#ifdef __GLIBC__
    /* glibc gives every thread that allocates an arena of its own and moves its mmap
     * threshold with the sizes freed, so request-sized buffers of the ingest threads were
     * left in several arenas: 100k series peaked at 135 MiB of anonymous memory, 108 with
     * two arenas. A fixed threshold of 256 KiB also kept it low but cost 15 % more CPU
     * (every batch's buffers mapped and zeroed afresh): buffers come from the arenas up to
     * 32 MiB, and malloc_trim after each seal returns what is free. The MALLOC_ARENA_MAX
     * and MALLOC_MMAP_THRESHOLD_ environment variables still win. */
    if (getenv("MALLOC_ARENA_MAX") == NULL)
        mallopt(M_ARENA_MAX, 2);
    if (getenv("MALLOC_MMAP_THRESHOLD_") == NULL)
        mallopt(M_MMAP_THRESHOLD, 32 << 20);
#endif
    memset(&d, 0, sizeof(d));
    d.argc = argc;
    d.argv = argv;
    err = col_config_init(&d.cfg);
    if (err != IOCD_OK) {
        fprintf(stderr, "iocd: %s\n", iocd_strerror(err));
        return 1;
    }
    err = col_config_parse(&d.cfg, argc, argv, errbuf, sizeof(errbuf));
    if (err != IOCD_OK) {
        fprintf(stderr, "iocd: %s\n", err == IOCD_ENOMEM ? iocd_strerror(err) : errbuf);
        col_config_fini(&d.cfg);
        return 2;
    }
    iocd_log_setup(d.cfg.log_level, d.cfg.log_format, 2);
    log_info("serve", "starting iocd", "version=%s revision=%s pid=%ld data_dir=%s", IOCD_VERSION,
             IOCD_REVISION, (long)getpid(), d.cfg.data_dir);
    err = iocd_metrics_process_register(iocd_now_ms());
    if (err != IOCD_OK) {
        log_error("serve", "cannot start", "err=%s", iocd_strerror(err));
        goto out;
    }

    err = col_loop_new(&d.cfg, &loop, errbuf, sizeof(errbuf));
    if (err != IOCD_OK) {
        log_error("serve", "cannot start", "err=%s", errbuf);
        goto out;
    }
    col_loop_on_reload(loop, on_reload, &d);
    if (d.cfg.http_addr[0] != '\0') {
        err = api_start(&d.cfg, &api, errbuf, sizeof(errbuf));
        if (err != IOCD_OK) {
            log_error("serve", "cannot start", "err=%s", errbuf);
            goto out;
        }
    }
    if (d.cfg.kafka_brokers[0] != '\0') {
        props = kafka_props(&d.cfg);
        err = props == NULL ? IOCD_ENOMEM
                            : alert_kafka_open(d.cfg.kafka_brokers, props, d.cfg.n_kafka_props,
                                               &kafka, errbuf, sizeof(errbuf));
        if (err != IOCD_OK) {
            log_error("serve", "cannot start", "err=%s",
                      err == IOCD_ENOMEM ? iocd_strerror(err) : errbuf);
            goto out;
        }
    } else {
        log_info("serve", "incident dispatch disabled (no --kafka-brokers)", NULL);
    }

    memset(&scfg, 0, sizeof(scfg));
    scfg.sync_window_ms = d.cfg.sync_window_ms;
    scfg.retention_ms = d.cfg.retention_ms;
    scfg.rollup_retention_ms = d.cfg.rollup_retention_ms;
    scfg.compact_at_stop_max = (uint64_t)d.cfg.compact_at_stop_max;
    scfg.query_cache_bytes = (uint64_t)d.cfg.query_cache_bytes;
    scfg.chunk_ms = d.cfg.chunk_ms;
    scfg.block_span_ms = d.cfg.block_span_ms > 0 ? d.cfg.block_span_ms : -1;
    scfg.ooo_window_ms = d.cfg.ooo_window_ms;
    scfg.labels_max = (size_t)d.cfg.labels_max;
    scfg.label_len_max = (size_t)d.cfg.label_len_max;
    scfg.series_max = (uint64_t)d.cfg.series_max;
    scfg.new_series_per_min = (uint64_t)d.cfg.new_series_per_min;
    err = store_open(d.cfg.data_dir, &scfg, &st, errbuf, sizeof(errbuf));
    if (err != IOCD_OK) {
        log_error("serve", "cannot start", "err=%s",
                  err == IOCD_ENOMEM ? iocd_strerror(err) : errbuf);
        goto out;
    }
    err = col_ingest_new(&d.cfg, st, &ingest);
    if (err != IOCD_OK) {
        log_error("serve", "cannot start", "err=%s", iocd_strerror(err));
        goto out;
    }
    {
        alert_config acfg;
        memset(&acfg, 0, sizeof(acfg));
        acfg.st = st;
        acfg.kafka = kafka;
        acfg.topic = d.cfg.incident_topic;
        /* 0 in the config turns a control off; the center reads 0 as its default. */
        acfg.group_wait_ms = d.cfg.group_wait_ms;
        acfg.group_interval_ms = d.cfg.group_interval_ms > 0 ? d.cfg.group_interval_ms : -1;
        acfg.repeat_interval_ms = d.cfg.repeat_interval_ms > 0 ? d.cfg.repeat_interval_ms : -1;
        acfg.escalate_after_ms = d.cfg.escalate_after_ms > 0 ? d.cfg.escalate_after_ms : -1;
        acfg.flap_window_ms = d.cfg.flap_window_ms > 0 ? d.cfg.flap_window_ms : -1;
        acfg.flap_changes = (int)d.cfg.flap_changes;
        acfg.escalation_topic = d.cfg.escalation_topic;
        acfg.tz_offset_s = (int)d.cfg.tz_offset_s;
        routes = d.cfg.n_routes > 0 ? iocd_calloc(d.cfg.n_routes, sizeof(*routes)) : NULL;
        for (i = 0; routes != NULL && i < (int)d.cfg.n_routes; i++) {
            const col_route *c = &d.cfg.routes[i];
            routes[i] = (alert_route){ c->match,
                                       c->topic,
                                       c->escalation_topic,
                                       c->repeat_interval_ms,
                                       c->escalate_after_ms,
                                       c->webhook,
                                       c->group_wait_ms,
                                       c->flap_window_ms };
        }
        acfg.routes = routes;
        acfg.n_routes = routes != NULL ? d.cfg.n_routes : 0;
        err = alert_center_open(&acfg, &d.alerts, errbuf, sizeof(errbuf));
        iocd_free(routes); /* the center keeps copies */
        routes = NULL;
        if (err != IOCD_OK) {
            log_error("serve", "cannot start", "err=%s", errbuf);
            goto out;
        }
    }
    /* Alerts posted as to an Alertmanager (POST /api/v2/alerts), their table and sweeper. */
    err = alert_am_start(d.alerts, st, errbuf, sizeof(errbuf));
    if (err != IOCD_OK) {
        log_error("serve", "cannot start", "err=%s", errbuf);
        goto out;
    }
    if (kafka != NULL && d.cfg.incident_commands_topic[0] != '\0') {
        alert_kafka_mock_topic(kafka, d.cfg.incident_commands_topic, 1);
        err = alert_commands_start(d.alerts, st, alert_kafka_bootstrap(kafka), props,
                                   d.cfg.n_kafka_props, d.cfg.incident_commands_topic, &commands,
                                   errbuf, sizeof(errbuf));
        if (err != IOCD_OK) {
            log_error("serve", "cannot start", "err=%s", errbuf);
            goto out;
        }
    }
    if (d.cfg.rules_path[0] != '\0') {
        rule_engine_config rcfg;
        memset(&rcfg, 0, sizeof(rcfg));
        rcfg.st = st;
        rcfg.qlim.timeout_ms = d.cfg.query_timeout_ms;
        rcfg.qlim.max_series = (size_t)d.cfg.query_max_series;
        rcfg.qlim.max_samples = (size_t)d.cfg.query_max_samples;
        rcfg.qlim.lookback_ms = d.cfg.query_lookback_ms;
        rcfg.qlim.rollup_range_ms =
            d.cfg.query_rollup_range_ms > 0 ? d.cfg.query_rollup_range_ms : -1;
        rcfg.latitude = d.cfg.latitude;
        rcfg.longitude = d.cfg.longitude;
        rcfg.tz_offset_s = (int)d.cfg.tz_offset_s;
        rcfg.on_event = on_rule_event;
        rcfg.member_events = true;
        rcfg.ud = &d;
        err = rule_engine_new(&rcfg, &d.rules);
        if (err == IOCD_OK)
            err = rule_engine_load(d.rules, d.cfg.rules_path, errbuf, sizeof(errbuf));
        if (err == IOCD_OK)
            err = rule_engine_start(d.rules);
        if (err != IOCD_OK) {
            log_error("serve", "cannot start: rules", "err=%s",
                      err == IOCD_ENOMEM || err == IOCD_EIO ? iocd_strerror(err) : errbuf);
            goto out;
        }
        store_set_listener(st, rule_engine_feed, d.rules);
        log_info("serve", "rules loaded", "path=%s rules=%zu", d.cfg.rules_path,
                 rule_engine_count(d.rules));
    }
    col_loop_on_lines(loop, col_ingest_lines, ingest);
    if (api != NULL) {
        api_set_alerts(api, d.alerts);
        api_set_rules(api, d.rules);
        api_set_backend(api, st, ingest);
    }
    log_info("serve", "ready", "http=%s influx_tcp=%s influx_udp=%s",
             api != NULL ? api_addr(api) : "", col_loop_tcp_addr(loop), col_loop_udp_addr(loop));

    sig = col_loop_run(loop);
    stop_start_ns = iocd_mono_ns();
    /* Last resort: a stop that overruns its budget by far ends the process anyway. */
    alarm((unsigned)(d.cfg.shutdown_timeout_ms / 1000 + 5));
    log_info("serve", "shutting down", "signal=%d budget_ms=%lld", sig,
             (long long)d.cfg.shutdown_timeout_ms);
    col_loop_close_listeners(loop);
    if (api != NULL) {
        budget_ms = d.cfg.shutdown_timeout_ms - (iocd_mono_ns() - stop_start_ns) / 1000000;
        api_stop(api, budget_ms > 1000 ? budget_ms - 1000 : budget_ms / 2);
        api = NULL;
    }
    rc = 0;
out:
    api_stop(api, 0);
    col_ingest_free(ingest); /* waits for writes in flight to be committed */
    if (st != NULL)
        store_set_listener(st, NULL, NULL);
    rule_engine_free(d.rules);
    alert_commands_stop(commands); /* before the incidents it acts on */
    alert_am_stop(d.alerts);       /* its sweeper signals the center */
    alert_center_close(d.alerts);  /* undelivered events stay in the outbox */
    if (kafka != NULL) {
        alert_kafka_close(kafka, 2000);
        kafka = NULL;
    }
    store_close(st);
    col_loop_free(loop);
    iocd_free(props);
    if (rc == 0)
        log_info("serve", "stopped", NULL);
    col_config_fini(&d.cfg);
    iocd_metrics_reset();
    return rc;
}
