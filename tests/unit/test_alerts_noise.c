/* tests/unit/test_alerts_noise.c - noise control with a controlled clock: the group wait (a
 * blip that clears within it sends nothing), repeats while unacknowledged, escalation step by
 * step, flap detection holding events back until the incident settles, and all of it kept
 * across a reopen of the store. Rule signals carry their own times and alert_center_tick is
 * called by hand (no timer thread). */
#include "tests/unit/harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alerts/alerts_int.h"

static store *st;

static alert_center *open_center(const alert_config *base)
{
    alert_config cfg = *base;
    alert_center *ac = NULL;
    char path[512], errbuf[256];

    if (st == NULL) {
        snprintf(path, sizeof(path), "%s/data", test_tmpdir());
        if (store_open(path, NULL, &st, errbuf, sizeof(errbuf)) != IOCD_OK)
            test_fail_at(__FILE__, __LINE__, "store_open: %s", errbuf);
    }
    cfg.st = st;
    cfg.no_ticker = true;
    if (alert_center_open(&cfg, &ac, errbuf, sizeof(errbuf)) != IOCD_OK)
        test_fail_at(__FILE__, __LINE__, "alert_center_open: %s", errbuf);
    return ac;
}

static size_t put_label(char *buf, size_t len, const char *name, const char *value)
{
    memcpy(buf + len, name, strlen(name) + 1);
    len += strlen(name) + 1;
    memcpy(buf + len, value, strlen(value) + 1);
    return len + strlen(value) + 1;
}

/* A lamp rule's alert for ward w (severity info) firing or clearing at t_ms. */
static void lamp(alert_center *ac, const char *w, bool firing, int64_t t_ms)
{
    char labels[128];
    size_t len = 0;
    alert_signal sig;

    len = put_label(labels, len, "alertname", "lamp_off");
    len = put_label(labels, len, "domain", "lighting");
    len = put_label(labels, len, "severity", "info");
    len = put_label(labels, len, "ward", w);
    memset(&sig, 0, sizeof(sig));
    sig.rule = "lamp_off";
    sig.labels = labels;
    sig.labels_len = len;
    sig.summary = "Lamp off";
    sig.severity = "info";
    sig.domain = "lighting";
    sig.value = 0;
    sig.t_ms = t_ms;
    sig.firing = firing;
    alert_center_signal(ac, &sig);
}

/* Incident id's events as "type type* ..." (* = held: recorded, not sent), and its JSON. */
static const char *events(alert_center *ac, uint64_t id, char *out, size_t cap, iocd_buf *json)
{
    const char *p;
    size_t n = 0;

    iocd_buf_reset(json);
    if (alert_incident_get(ac, id, json) != IOCD_OK)
        test_fail_at(__FILE__, __LINE__, "no incident %llu", (unsigned long long)id);
    out[0] = '\0';
    p = strstr(json->data, "\"events\":[");
    while (p != NULL && (p = strstr(p, "{\"type\":\"")) != NULL) {
        const char *t = p + 9, *q = strchr(t, '"'), *close = strchr(t, '}');
        const char *held = strstr(t, "\"held\":true");
        n += (size_t)snprintf(out + n, cap - n, "%s%.*s%s", n > 0 ? " " : "", (int)(q - t), t,
                              held != NULL && held < close ? "*" : "");
        p = close;
    }
    return out;
}

TEST(group_wait_sends_nothing_for_a_blip_and_delays_the_first_event)
{
    alert_config cfg;
    alert_center *ac;
    char ev[512];
    iocd_buf b;

    memset(&cfg, 0, sizeof(cfg));
    cfg.group_wait_ms = 5000;
    ac = open_center(&cfg);
    iocd_buf_init(&b, 0);
    lamp(ac, "phu_xa", true, 1000);
    ASSERT_STR_EQ(events(ac, 1, ev, sizeof(ev), &b), "firing*");
    alert_center_tick(ac, 5999); /* the wait is not over */
    ASSERT_STR_EQ(events(ac, 1, ev, sizeof(ev), &b), "firing*");
    lamp(ac, "phu_xa", false, 4000); /* cleared within the wait: a blip, nothing was sent */
    ASSERT_STR_EQ(events(ac, 1, ev, sizeof(ev), &b), "firing* resolved*");
    alert_center_tick(ac, 20000);
    ASSERT_STR_EQ(events(ac, 1, ev, sizeof(ev), &b), "firing* resolved*");
    /* One that lasts: its first event goes out when the wait ends. */
    lamp(ac, "gia_sang", true, 30000);
    alert_center_tick(ac, 34999);
    ASSERT_STR_EQ(events(ac, 2, ev, sizeof(ev), &b), "firing*");
    alert_center_tick(ac, 35000);
    ASSERT_STR_EQ(events(ac, 2, ev, sizeof(ev), &b), "firing* firing");
    lamp(ac, "gia_sang", false, 40000);
    ASSERT_STR_EQ(events(ac, 2, ev, sizeof(ev), &b), "firing* firing resolved");
    iocd_buf_fini(&b);
    alert_center_close(ac);
}

TEST(repeats_and_escalations_while_unacknowledged_stop_at_acknowledgement)
{
    alert_config cfg;
    alert_center *ac;
    char ev[512], why[128];
    iocd_buf b;

    memset(&cfg, 0, sizeof(cfg));
    cfg.repeat_interval_ms = 60000;
    cfg.escalate_after_ms = 300000;
    ac = open_center(&cfg);
    iocd_buf_init(&b, 0);
    lamp(ac, "phu_xa", true, 0);
    alert_center_tick(ac, 59999);
    ASSERT_STR_EQ(events(ac, 1, ev, sizeof(ev), &b), "firing");
    alert_center_tick(ac, 60000);
    alert_center_tick(ac, 60500);
    ASSERT_STR_EQ(events(ac, 1, ev, sizeof(ev), &b), "firing repeated");
    ASSERT_STR_CONTAINS(b.data, "still firing, unacknowledged for 60s");
    alert_center_tick(ac, 120000);
    alert_center_tick(ac, 300000); /* escalation: info -> warning (and it counts as news) */
    ASSERT_STR_EQ(events(ac, 1, ev, sizeof(ev), &b), "firing repeated repeated escalated");
    ASSERT_STR_CONTAINS(b.data, "\"severity\":\"warning\"");
    ASSERT_STR_CONTAINS(b.data, "severity info -> warning");
    alert_center_tick(ac, 360000); /* a minute after the escalation: a repeat */
    alert_center_tick(ac, 600000); /* warning -> critical */
    ASSERT_STR_EQ(events(ac, 1, ev, sizeof(ev), &b),
                  "firing repeated repeated escalated repeated escalated");
    ASSERT_STR_CONTAINS(b.data, "\"severity\":\"critical\"");
    alert_center_tick(ac, 900000); /* critical is the top: only repeats now */
    ASSERT_STR_EQ(events(ac, 1, ev, sizeof(ev), &b),
                  "firing repeated repeated escalated repeated escalated repeated");
    ASSERT_OK(alert_incident_act(ac, 1, ALERT_ACK, "Lan", "on it", NULL, why, sizeof(why)));
    alert_center_tick(ac, 2000000);
    ASSERT_STR_EQ(events(ac, 1, ev, sizeof(ev), &b),
                  "firing repeated repeated escalated repeated escalated repeated acknowledged");
    iocd_buf_fini(&b);
    alert_center_close(ac);
}

TEST(a_flapping_incident_holds_its_events_until_it_settles_and_remembers_across_a_reopen)
{
    alert_config cfg;
    alert_center *ac;
    char ev[512];
    iocd_buf b;

    memset(&cfg, 0, sizeof(cfg));
    cfg.flap_changes = 4;
    cfg.flap_window_ms = 600000;
    cfg.repeat_interval_ms = -1;
    cfg.escalate_after_ms = -1;
    ac = open_center(&cfg);
    iocd_buf_init(&b, 0);
    lamp(ac, "tan_lap", true, 0);
    lamp(ac, "tan_lap", false, 10000);
    lamp(ac, "tan_lap", true, 20000);
    lamp(ac, "tan_lap", false, 30000);
    ASSERT_STR_EQ(events(ac, 1, ev, sizeof(ev), &b), "firing resolved reopened resolved");
    ASSERT_STR_CONTAINS(b.data, "\"flapping\":false");
    lamp(ac, "tan_lap", true, 40000); /* the fourth change in the window: flapping */
    ASSERT_STR_EQ(events(ac, 1, ev, sizeof(ev), &b),
                  "firing resolved reopened resolved reopened* updated");
    ASSERT_STR_CONTAINS(b.data, "\"flapping\":true");
    ASSERT_STR_CONTAINS(b.data, "flapping: 4 state changes within 600s");
    lamp(ac, "tan_lap", false, 50000);
    lamp(ac, "tan_lap", true, 60000);
    ASSERT_STR_EQ(events(ac, 1, ev, sizeof(ev), &b),
                  "firing resolved reopened resolved reopened* updated resolved* reopened*");
    /* Kept in the data file. */
    alert_center_close(ac);
    ac = open_center(&cfg);
    ASSERT_STR_EQ(events(ac, 1, ev, sizeof(ev), &b),
                  "firing resolved reopened resolved reopened* updated resolved* reopened*");
    ASSERT_STR_CONTAINS(b.data, "\"flapping\":true");
    alert_center_tick(ac, 659999);
    ASSERT_STR_CONTAINS(events(ac, 1, ev, sizeof(ev), &b), "reopened*");
    ASSERT_STR_CONTAINS(b.data, "\"flapping\":true");
    alert_center_tick(ac, 660000); /* firing for a whole window: settled, and said so */
    ASSERT_STR_EQ(events(ac, 1, ev, sizeof(ev), &b),
                  "firing resolved reopened resolved reopened* updated resolved* reopened* "
                  "updated");
    ASSERT_STR_CONTAINS(b.data, "settled: firing for 600s");
    ASSERT_STR_CONTAINS(b.data, "\"flapping\":false");
    lamp(ac, "tan_lap", false, 700000); /* sent again */
    ASSERT_STR_EQ(events(ac, 1, ev, sizeof(ev), &b),
                  "firing resolved reopened resolved reopened* updated resolved* reopened* "
                  "updated resolved");
    iocd_buf_fini(&b);
    alert_center_close(ac);
}

/* ---- Recurring silences: mute windows in local time ----------------------------------------- */

TEST(a_recurring_silence_mutes_only_within_its_window_on_its_days_in_local_time)
{
    alert_silences *ss;
    char path[512], errbuf[256];
    const char labels[] = "alertname\0lamp_off\0ward\0tan_lap\0";
    const char other[] = "alertname\0lamp_off\0ward\0phu_xa\0";
    const int64_t tz = 7 * 3600, day = 86400000;
    int64_t now = iocd_now_ms(), local_midnight, monday;
    iocd_buf b;

    snprintf(path, sizeof(path), "%s/data", test_tmpdir());
    ASSERT_OK(store_open(path, NULL, &st, errbuf, sizeof(errbuf)));
    ASSERT_OK(silences_open(st, (int)tz, &ss));
    iocd_buf_init(&b, 0);
    /* Week nights from 22:00 to 02:00 the next morning, UTC+7. */
    ASSERT_OK(silences_add_recurring(ss, "{ward=\"tan_lap\"}", 0, 0, "mon-fri", "22:00", "02:00",
                                     "Lan", "nightly pump maintenance", &b, errbuf,
                                     sizeof(errbuf)));
    ASSERT_STR_CONTAINS(b.data,
                        "\"every\":\"mon,tue,wed,thu,fri\",\"from\":\"22:00\",\"to\":\"02:00\"");
    /* The first local Monday 00:00 at least a day from now (1970-01-05 was a Monday). */
    local_midnight = ((now + tz * 1000) / day + 1) * day; /* in local ms */
    monday = local_midnight + ((4 - (local_midnight / day) % 7) + 7) % 7 * day - tz * 1000;
    monday += 7 * day; /* well after the silence began */
    ASSERT_FALSE(silences_match(ss, labels, sizeof(labels) - 1, monday + 21 * 3600000 + 3540000));
    ASSERT_TRUE(silences_match(ss, labels, sizeof(labels) - 1, monday + 22 * 3600000));
    ASSERT_FALSE(silences_match(ss, other, sizeof(other) - 1, monday + 22 * 3600000));
    ASSERT_TRUE(silences_match(ss, labels, sizeof(labels) - 1, monday + 25 * 3600000 + 3540000));
    ASSERT_FALSE(silences_match(ss, labels, sizeof(labels) - 1, monday + 26 * 3600000));
    ASSERT_TRUE(silences_match(ss, labels, sizeof(labels) - 1, monday + 5 * day + 3600000));
    ASSERT_FALSE(silences_match(ss, labels, sizeof(labels) - 1, monday + 5 * day + 23 * 3600000));
    ASSERT_FALSE(silences_match(ss, labels, sizeof(labels) - 1, monday + 7 * day + 3600000));
    /* Refused: no days, a bad time, a day that is not one. */
    ASSERT_ERR(silences_add_recurring(ss, "{ward=\"x\"}", 0, 0, "someday", "22:00", "02:00", "Lan",
                                      "x", &b, errbuf, sizeof(errbuf)),
               IOCD_EINVAL);
    ASSERT_ERR(silences_add_recurring(ss, "{ward=\"x\"}", 0, 0, "daily", "25:00", "02:00", "Lan",
                                      "x", &b, errbuf, sizeof(errbuf)),
               IOCD_EINVAL);
    ASSERT_STR_CONTAINS(errbuf, "local HH:MM");
    /* Kept across a reopen. */
    silences_close(ss);
    ASSERT_OK(silences_open(st, (int)tz, &ss));
    ASSERT_TRUE(silences_match(ss, labels, sizeof(labels) - 1, monday + 22 * 3600000));
    ASSERT_FALSE(silences_match(ss, labels, sizeof(labels) - 1, monday + 12 * 3600000));
    iocd_buf_fini(&b);
    silences_close(ss);
}

/* ---- Alerts held back by a silence are not forgotten when it ends --------------------------- */

static size_t incident_count(alert_center *ac, iocd_buf *b)
{
    alert_filter f;
    const char *p;

    memset(&f, 0, sizeof(f));
    iocd_buf_reset(b);
    if (alert_incidents_list(ac, &f, b) != IOCD_OK)
        test_fail_at(__FILE__, __LINE__, "list");
    p = strstr(b->data, "\"total\":");
    return p != NULL ? (size_t)strtoull(p + 8, NULL, 10) : 0;
}

TEST(an_alert_still_firing_when_its_silence_ends_opens_its_incident_then)
{
    alert_config cfg;
    alert_center *ac;
    char ev[512], why[256];
    int64_t now = iocd_now_ms();
    iocd_buf b;

    memset(&cfg, 0, sizeof(cfg));
    ac = open_center(&cfg);
    iocd_buf_init(&b, 0);
    ASSERT_OK(alert_silence_add(ac, "{ward=\"tan_lap\"}", 0, now + 60000, "Lan", "maintenance", &b,
                                why, sizeof(why)));
    lamp(ac, "tan_lap", true, now);
    lamp(ac, "phu_xa", true, now); /* not silenced */
    ASSERT_EQ(incident_count(ac, &b), 1);
    alert_center_tick(ac, now + 30000); /* still silenced */
    ASSERT_EQ(incident_count(ac, &b), 1);
    alert_center_tick(ac, now + 60000); /* the silence is over and the lamp is still off */
    ASSERT_EQ(incident_count(ac, &b), 2);
    ASSERT_STR_EQ(events(ac, 2, ev, sizeof(ev), &b), "firing");
    ASSERT_STR_CONTAINS(b.data, "\"ward\":\"tan_lap\"");
    /* One that clears while silenced is forgotten. */
    ASSERT_OK(alert_silence_add(ac, "{ward=\"gia_sang\"}", 0, now + 60000, "Lan", "x", &b, why,
                                sizeof(why)));
    lamp(ac, "gia_sang", true, now);
    lamp(ac, "gia_sang", false, now + 1000);
    alert_center_tick(ac, now + 61000);
    ASSERT_EQ(incident_count(ac, &b), 2);
    iocd_buf_fini(&b);
    alert_center_close(ac);
}

TEST(a_route_has_its_own_group_wait_and_flap_window)
{
    alert_route routes[1];
    alert_config cfg;
    alert_center *ac;
    char ev[512];
    iocd_buf b;

    memset(routes, 0, sizeof(routes));
    routes[0] = (alert_route){ "{ward=\"tan_lap\"}", NULL, NULL, -1, -1, NULL, 5000, 0 };
    memset(&cfg, 0, sizeof(cfg));
    cfg.routes = routes;
    cfg.n_routes = 1;
    cfg.flap_changes = 2;
    cfg.flap_window_ms = 600000;
    ac = open_center(&cfg);
    iocd_buf_init(&b, 0);
    lamp(ac, "tan_lap", true, 0); /* its route waits 5 s and never marks flapping */
    lamp(ac, "phu_xa", true, 0);  /* the global settings: no wait, flapping after 2 changes */
    ASSERT_STR_EQ(events(ac, 1, ev, sizeof(ev), &b), "firing*");
    ASSERT_STR_EQ(events(ac, 2, ev, sizeof(ev), &b), "firing");
    alert_center_tick(ac, 5000);
    ASSERT_STR_EQ(events(ac, 1, ev, sizeof(ev), &b), "firing* firing");
    lamp(ac, "tan_lap", false, 6000);
    lamp(ac, "tan_lap", true, 7000);
    lamp(ac, "phu_xa", false, 6000);
    lamp(ac, "phu_xa", true, 7000);
    ASSERT_STR_EQ(events(ac, 1, ev, sizeof(ev), &b), "firing* firing resolved reopened");
    ASSERT_STR_EQ(events(ac, 2, ev, sizeof(ev), &b), "firing resolved reopened* updated");
    iocd_buf_fini(&b);
    alert_center_close(ac);
}

TEST(series_joining_a_firing_group_are_announced_at_most_every_group_interval)
{
    alert_config cfg;
    alert_center *ac;
    char ev[512], labels[128];
    size_t len = 0;
    alert_signal sig;
    iocd_buf b;

    memset(&cfg, 0, sizeof(cfg));
    cfg.group_interval_ms = 30000;
    cfg.repeat_interval_ms = -1;
    cfg.escalate_after_ms = -1;
    ac = open_center(&cfg);
    iocd_buf_init(&b, 0);
    lamp(ac, "tan_lap", true, 0); /* the ward's first dark lamp opens it */
    len = put_label(labels, len, "alertname", "lamp_off");
    len = put_label(labels, len, "domain", "lighting");
    len = put_label(labels, len, "severity", "info");
    len = put_label(labels, len, "ward", "tan_lap");
    memset(&sig, 0, sizeof(sig));
    sig = (alert_signal){ .rule = "lamp_off",
                          .labels = labels,
                          .labels_len = len,
                          .summary = "Lamp off",
                          .severity = "info",
                          .domain = "lighting",
                          .t_ms = 1000,
                          .firing = true,
                          .members = 2 };
    alert_center_signal(ac, &sig);
    sig.members = 3;
    alert_center_signal(ac, &sig);
    alert_center_tick(ac, 29999); /* within the interval of the first event */
    ASSERT_STR_EQ(events(ac, 1, ev, sizeof(ev), &b), "firing");
    alert_center_tick(ac, 30000);
    ASSERT_STR_EQ(events(ac, 1, ev, sizeof(ev), &b), "firing updated");
    ASSERT_STR_CONTAINS(b.data, "3 alerts in this group now (was 1)");
    sig.members = 4;
    alert_center_signal(ac, &sig);
    alert_center_tick(ac, 45000); /* the next one waits a whole interval */
    ASSERT_STR_EQ(events(ac, 1, ev, sizeof(ev), &b), "firing updated");
    alert_center_tick(ac, 60000);
    ASSERT_STR_EQ(events(ac, 1, ev, sizeof(ev), &b), "firing updated updated");
    alert_center_tick(ac, 200000); /* nothing new: nothing sent */
    ASSERT_STR_EQ(events(ac, 1, ev, sizeof(ev), &b), "firing updated updated");
    iocd_buf_fini(&b);
    alert_center_close(ac);
}
