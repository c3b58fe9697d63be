/* alerts/incidents_noise.c - routes and noise control: the first route matching an incident
 * picks its topic, webhook and timings; the group wait and flap detection hold rule-driven
 * events back; the timer thread, each second, ends group waits, settles flapping, announces
 * group growth, escalates and repeats. Callers hold ac->mu, but alert_center_tick and the
 * timer thread take it themselves. */
#include "alerts/alerts_int.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* ---- Routes ------------------------------------------------------------------------------- */

/* The first route matching the incident (its labels, with its current severity, domain and
 * ward), or NULL. */
const alert_route *incident_route(const alert_center *ac, const incident *in)
{
    size_t r, m;

    for (r = 0; r < ac->n_routes; r++) {
        const query_selector *sel = &ac->route_sel[r];
        for (m = 0; m < sel->n; m++) {
            const char *name = sel->m[m].name, *v;
            if (strcmp(name, "severity") == 0)
                v = in->severity;
            else if (strcmp(name, "domain") == 0)
                v = in->domain;
            else if (strcmp(name, "ward") == 0)
                v = in->ward;
            else
                v = iocd_label_value(in->labels, in->labels_len, name);
            if (v == NULL)
                v = "";
            if (!query_matcher_matches(&sel->m[m], v, strlen(v)))
                break;
        }
        if (m == sel->n)
            return &ac->routes[r];
    }
    return NULL;
}

/* The group wait and flap window for an incident: its route's, else the global ones (a
 * negative window: no flap detection). */
int64_t incident_group_wait(const alert_center *ac, const incident *in)
{
    const alert_route *r = incident_route(ac, in);

    return r != NULL && r->group_wait_ms >= 0 ? r->group_wait_ms : ac->cfg.group_wait_ms;
}

static int64_t flap_window_of(const alert_center *ac, const incident *in)
{
    const alert_route *r = incident_route(ac, in);

    if (r != NULL && r->flap_window_ms >= 0)
        return r->flap_window_ms > 0 ? r->flap_window_ms : -1;
    return ac->cfg.flap_window_ms;
}

/* ---- Flapping -------------------------------------------------------------------------------- */

/* Records a rule-driven state change at t_ms; true when it makes the incident flapping now. */
bool incident_flap_note(alert_center *ac, incident *in, int64_t t_ms)
{
    int k, n = 0;
    int64_t window = flap_window_of(ac, in);

    if (window < 0)
        return false;
    if (in->n_flap == INCIDENT_FLAP_MAX) {
        memmove(in->flap_t, in->flap_t + 1, (INCIDENT_FLAP_MAX - 1) * sizeof(*in->flap_t));
        in->n_flap--;
    }
    in->flap_t[in->n_flap++] = t_ms;
    for (k = 0; k < in->n_flap; k++)
        if (t_ms - in->flap_t[k] <= window)
            n++;
    if (in->flapping || n < ac->cfg.flap_changes)
        return false;
    in->flapping = true;
    iocd_metric_add(ac->m_flapping, 1);
    return true;
}

/* Rule-driven events of this incident are held back now. */
static bool held_now(const incident *in)
{
    return in->flapping || in->first_held;
}

/* Announces that an incident started flapping (this event is sent; the next rule-driven
 * ones are held until it settles). */
iocd_err incident_flapping_notice(alert_center *ac, incident *in, int64_t t_ms)
{
    char note[160];

    snprintf(note, sizeof(note),
             "flapping: %d state changes within %llds; its next changes are held until it "
             "stays %s for %llds",
             ac->cfg.flap_changes, (long long)(flap_window_of(ac, in) / 1000),
             incident_state_names[in->state], (long long)(flap_window_of(ac, in) / 1000));
    return incident_commit_event(ac, in, "updated", t_ms, "iocd", note, false, NULL);
}

/* ---- Timed noise control ------------------------------------------------------------------ */

static const char *severity_up(const char *sev)
{
    return sev != NULL && strcmp(sev, "info") == 0 ? "warning" : "critical";
}

void alert_center_tick(alert_center *ac, int64_t now_ms)
{
    size_t i;
    iocd_err err = IOCD_OK;

    pthread_mutex_lock(&ac->mu);
    if (ac->n_muted > 0)
        incidents_unmute(ac, now_ms);
    for (i = 0; i < ac->n && err == IOCD_OK; i++) {
        incident *in = ac->inc[i];
        const alert_route *route;
        int64_t escalate_after, repeat;
        char note[200];
        if (in->state == INC_RESOLVED && !in->flapping)
            continue;
        if (in->first_held && now_ms - in->fired_ms >= incident_group_wait(ac, in)) {
            in->first_held = false; /* the group wait is over: now it is news */
            err = incident_commit_event(ac, in, "firing", now_ms, "iocd", in->summary, in->flapping,
                                        NULL);
            continue;
        }
        if (in->flapping && in->n_flap > 0 &&
            now_ms - in->flap_t[in->n_flap - 1] >=
                (flap_window_of(ac, in) > 0 ? flap_window_of(ac, in) : 0)) {
            in->flapping = false;
            snprintf(note, sizeof(note), "settled: %s for %llds", incident_state_names[in->state],
                     (long long)((now_ms - in->flap_t[in->n_flap - 1]) / 1000));
            err = incident_commit_event(ac, in, "updated", now_ms, "iocd", note, false, NULL);
            continue;
        }
        if (in->state != INC_RESOLVED && !held_now(in) && in->members > in->members_told &&
            in->members > 1 && ac->cfg.group_interval_ms > 0 &&
            now_ms - in->notified_ms >= ac->cfg.group_interval_ms) {
            snprintf(note, sizeof(note), "%zu alerts in this group now (was %zu)", in->members,
                     in->members_told > 0 ? in->members_told : 1);
            in->members_told = in->members;
            err = incident_commit_event(ac, in, "updated", now_ms, "iocd", note, false, NULL);
            continue;
        }
        if (in->state != INC_FIRING || held_now(in))
            continue;
        route = incident_route(ac, in);
        escalate_after = route != NULL && route->escalate_after_ms >= 0 ? route->escalate_after_ms
                                                                        : ac->cfg.escalate_after_ms;
        repeat = route != NULL && route->repeat_interval_ms >= 0 ? route->repeat_interval_ms
                                                                 : ac->cfg.repeat_interval_ms;
        if (escalate_after > 0 && in->severity != NULL && strcmp(in->severity, "critical") != 0 &&
            now_ms - (in->escalated_ms > 0 ? in->escalated_ms : in->fired_ms) >= escalate_after) {
            const char *to = severity_up(in->severity);
            snprintf(note, sizeof(note), "unacknowledged for %llds: severity %s -> %s",
                     (long long)((now_ms - in->fired_ms) / 1000), in->severity, to);
            incident_set_str(&in->severity, to);
            in->escalated_ms = now_ms;
            iocd_metric_add(ac->m_escalated, 1);
            err = incident_commit_event(ac, in, "escalated", now_ms, "iocd", note, false,
                                        route != NULL && route->escalation_topic != NULL
                                            ? route->escalation_topic
                                            : ac->cfg.escalation_topic);
            continue;
        }
        if (repeat > 0 && now_ms - in->notified_ms >= repeat) {
            snprintf(note, sizeof(note), "still firing, unacknowledged for %llds",
                     (long long)((now_ms - in->fired_ms) / 1000));
            iocd_metric_add(ac->m_repeated, 1);
            err = incident_commit_event(ac, in, "repeated", now_ms, "iocd", note, false, NULL);
        }
    }
    pthread_mutex_unlock(&ac->mu);
    if (err != IOCD_OK)
        log_error("alerts", "timed incident change not saved", "err=%s", iocd_strerror(err));
}

void *incidents_ticker(void *arg)
{
    alert_center *ac = arg;

    iocd_thread_name("incidents");
    pthread_mutex_lock(&ac->mu);
    while (!ac->stopping) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&ac->wake, &ac->mu, &ts);
        if (ac->stopping)
            break;
        pthread_mutex_unlock(&ac->mu);
        alert_center_tick(ac, iocd_now_ms());
        pthread_mutex_lock(&ac->mu);
    }
    pthread_mutex_unlock(&ac->mu);
    return NULL;
}
