/* rules/lua_engine_int.h - the rule engine's state and the helpers its files share: the
 * evaluation and the loop (rules/lua_engine.c), alert labels and events (rules/lua_events.c),
 * alert state in the store (rules/lua_persist.c) and the API's views (rules/lua_views.c).
 * Included by those files only; threads and invariants as described in rules/lua_engine.c. */
#ifndef IOCD_LUA_ENGINE_INT_H
#define IOCD_LUA_ENGINE_INT_H

#include "rules/rules_int.h"

#include <pthread.h>

#define TICK_MS 1000
#define ERR_MAX 300

/* A series' instance of one rule, valid while the rule's inst_epoch (in its rule_health) equals
 * epoch: creating or freeing any instance of the rule moves it, so a stale pointer is never
 * followed, and a busy rule does not make the other rules' series look theirs up again. */
typedef struct inst_ref {
    struct instance *in; /* NULL: the rule has no instance for the series' group */
    uint64_t epoch;
} inst_ref;

typedef struct series_state {
    uint64_t id;
    uint32_t gen; /* the rule set generation rules[] was matched for */
    char *labels; /* lset string */
    uint32_t labels_len;
    uint32_t *rules;       /* stream/absent rules selecting it */
    struct inst_ref *inst; /* per rules[k]: its instance for this series, cached */
    uint32_t n_rules;
    int64_t window_ms; /* longest window of those rules */
    iocd_sample *win;  /* samples within window_ms of the newest, ascending */
    uint32_t n_win, cap_win;
} series_state;

typedef struct instance instance;
struct instance {
    char *key; /* rule name \xff group labels */
    size_t key_len;
    uint32_t rule;
    char *glabels; /* the grouping labels (lset string), for templates and output */
    uint32_t glabels_len;
    rule_state state;
    bool keeping;
    int64_t since_ms, clear_ms, last_ms;
    double value;
    uint64_t *members; /* series (stream), or 1 (expr) */
    size_t n_members, cap_members;
    int64_t last_seen_ms;        /* absence: the group's newest sample */
    bool seen;                   /* expr: present in this round */
    char *summary, *description; /* rendered when it last changed state */
};

typedef struct rule_health {
    char err[ERR_MAX];
    bool failed;
    int64_t last_eval_ms, next_eval_ms;
    double eval_seconds;
    uint64_t evaluations; /* samples checked (stream), checks (absent), runs (expr, record) */
    uint64_t inst_epoch;  /* moves whenever an instance of the rule is created or freed */
} rule_health;

typedef struct rule_index rule_index;

typedef struct qitem {
    uint64_t id;
    iocd_sample s;
} qitem;

struct rule_engine {
    rule_engine_config cfg;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    bool started, stopping;
    /* shared under mu */
    qitem *q;
    size_t q_head, q_len, q_cap;
    rule_set *pending; /* a loaded set waiting to be swapped in */
    bool pending_set;
    /* engine thread only */
    rule_set *rs;
    rule_index *index; /* of rs */
    rule_health *health;
    uint32_t gen;
    series_state **series; /* open addressing by id */
    size_t series_cap, n_series;
    instance **inst; /* open addressing by key */
    size_t inst_cap, n_inst;
    int64_t now_ms;
    /* rendered for the API under mu, when it asks (view_wanted) and something changed */
    iocd_buf rules_json, alerts_json;
    bool view_wanted;   /* under mu: a reader waits for fresh views */
    uint64_t views_gen; /* under mu: rounds that answered view_wanted */
    pthread_cond_t view_cv;
    bool dirty;       /* the views need rendering */
    bool restored;    /* alert state was read back from the store */
    iocd_buf persist; /* state changes of this round, written together at its end */
    size_t n_persist;
    qitem *batch; /* samples taken from the queue, one round's worth */
    iocd_metric *m_queued, *m_samples, *m_dropped, *m_evals, *m_failures, *m_firing, *m_lag;
};

/* ---- rules/lua_engine.c ---------------------------------------------------------------------- */

/* The instance of rule ri for grouping labels g, created when create (NULL: none, or no memory). */
instance *rule_instance_get(rule_engine *e, uint32_t ri, const char *g, size_t glen, bool create);
iocd_err rule_member_add(instance *in, uint64_t id); /* Errors: IOCD_ENOMEM. */

/* ---- rules/lua_events.c ---------------------------------------------------------------------- */

/* Appends name and value, each NUL-terminated, to the iocd_buf ud (a store_series_labels
 * visitor). */
iocd_err rule_label_collect(void *ud, const char *name, size_t name_len, const char *value,
                            size_t value_len);
/* True when name is one of names[0..n). */
bool rule_name_listed(char *const *names, size_t n, const char *name);
/* The grouping labels of a series' labels: group_by's names, or all but __name__. */
iocd_err rule_group_labels(const rule_def *r, const char *ls, size_t len, iocd_buf *out);
/* The labels an alert carries: its grouping labels, the rule's extra labels, then alertname,
 * severity and domain. */
iocd_err rule_alert_labels(const rule_def *r, const char *g, size_t glen, iocd_buf *out);
/* The PromQL of the series behind an alert: the rule's selector with a matcher for each of
 * the alert's grouping labels, or its expr. */
iocd_err rule_series_query(const rule_def *r, const char *gl, size_t len, iocd_buf *out);
/* What every event of an alert carries: the rule's fields and the instance's. */
void rule_event_fill(rule_event *ev, const rule_def *r, const instance *in, const iocd_buf *labels,
                     int64_t t_ms);
/* The texts of an alert's event: its labels, rendered summary and description (also kept in
 * the instance) and series query; the event points into them until rule_event_text_fini. */
typedef struct rule_event_text {
    iocd_buf labels, summary, description, query;
} rule_event_text;
void rule_event_render(rule_engine *e, const rule_def *r, instance *in, int64_t t_ms,
                       rule_event_text *txt, rule_event *ev);
void rule_event_text_fini(rule_event_text *txt);
/* A state change of an instance: saved, rendered and told to the listener. */
void rule_emit(rule_engine *e, const rule_def *r, instance *in, rule_state from, rule_state to,
               int64_t t_ms);
/* A series joined a firing group: tells the listener how many the group has now. */
void rule_emit_members(rule_engine *e, const rule_def *r, const instance *in, int64_t t_ms);

/* ---- rules/lua_persist.c --------------------------------------------------------------------- */

/* Queues the instance's record (or its deletion, del) for the end of the round. */
void rule_persist(rule_engine *e, const rule_def *r, const instance *in, bool del);
/* Writes the round's queued records together (a failure is logged: state is re-derived). */
void rule_persist_flush(rule_engine *e);
/* Reads the saved alert state back for the current rule set (once) and tells the listener of
 * the alerts still firing. */
void rule_persist_restore(rule_engine *e);

/* ---- rules/lua_views.c ----------------------------------------------------------------------- */

/* Renders both views (on the engine thread) and publishes them under mu. */
void rule_views_render(rule_engine *e);

#endif
