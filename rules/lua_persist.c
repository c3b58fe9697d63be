/* rules/lua_persist.c - the rule engine's alert state in the store, so that alerts survive a
 * restart: a record per active alert written once per round, read back when the first rule set
 * is loaded, and the alerts still firing told to the listener again. Engine thread only. */
#include "rules/lua_engine_int.h"

#include <string.h>

/* ---- Alert state in the store (survives restarts) ----------------------------------------------
 * A record per active alert: key "rule \xff grouping labels" in table "alerts", value
 * version, digest, state, keeping, since, clear, value, last_seen, members, written when the
 * state changes (together, once per round) and deleted when it resolves. */

#define PERSIST_VERSION 1
#define PERSIST_MEMBERS 64

static void put_u64(iocd_buf *b, uint64_t v)
{
    iocd_buf_append(b, &v, sizeof(v));
}

/* Queues the instance's record (or its deletion) for the end of the round. Layout in the
 * buffer: klen, key, vlen (0: delete), value. */
void rule_persist(rule_engine *e, const rule_def *r, const instance *in, bool del)
{
    iocd_buf v;
    size_t i, n = in->n_members < PERSIST_MEMBERS ? in->n_members : PERSIST_MEMBERS;
    uint8_t b;
    double d;

    if (e->cfg.st == NULL || e->cfg.no_persist)
        return;
    iocd_buf_init(&v, 0);
    if (!del) {
        b = PERSIST_VERSION;
        iocd_buf_append(&v, &b, 1);
        put_u64(&v, r->digest);
        b = (uint8_t)in->state;
        iocd_buf_append(&v, &b, 1);
        b = in->keeping;
        iocd_buf_append(&v, &b, 1);
        put_u64(&v, (uint64_t)in->since_ms);
        put_u64(&v, (uint64_t)in->clear_ms);
        d = in->value;
        iocd_buf_append(&v, &d, sizeof(d));
        put_u64(&v, (uint64_t)in->last_seen_ms);
        put_u64(&v, n);
        for (i = 0; i < n; i++)
            put_u64(&v, in->members[i]);
    }
    put_u64(&e->persist, in->key_len);
    iocd_buf_append(&e->persist, in->key, in->key_len);
    put_u64(&e->persist, v.len);
    if (v.len > 0)
        iocd_buf_append(&e->persist, v.data, v.len);
    e->n_persist++;
    iocd_buf_fini(&v);
}

void rule_persist_flush(rule_engine *e)
{
    store_kv_op *ops;
    const char *p = e->persist.data, *end = p + e->persist.len;
    size_t i = 0;
    iocd_err err;

    if (e->n_persist == 0)
        return;
    ops = iocd_calloc(e->n_persist + 1, sizeof(*ops));
    while (ops != NULL && p < end && i < e->n_persist) {
        uint64_t kl, vl;
        memcpy(&kl, p, 8);
        ops[i].table = "alerts";
        ops[i].key = p + 8;
        ops[i].klen = (size_t)kl;
        p += 8 + kl;
        memcpy(&vl, p, 8);
        ops[i].val = vl > 0 ? p + 8 : NULL;
        ops[i].vlen = (size_t)vl;
        p += 8 + vl;
        i++;
    }
    err = ops != NULL ? store_kv_write(e->cfg.st, ops, i) : IOCD_ENOMEM;
    if (err != IOCD_OK)
        log_warn("rules", "alert state not saved (it will be re-derived)", "err=%s changes=%zu",
                 iocd_strerror(err), e->n_persist);
    else
        log_debug("rules", "alert state saved", "changes=%zu", e->n_persist);
    iocd_free(ops);
    iocd_buf_reset(&e->persist);
    e->n_persist = 0;
}

typedef struct restore_ctx {
    rule_engine *e;
    size_t n;
} restore_ctx;

static iocd_err restore_one(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    restore_ctx *c = ud;
    rule_engine *e = c->e;
    const char *k = key, *sep = memchr(k, 0xff, klen);
    const uint8_t *v = val;
    uint64_t digest, since, clear, last_seen, n, i;
    double value;
    instance *in;
    size_t ri;

    if (sep == NULL || vlen < 1 + 8 + 2 + 8 * 6 || v[0] != PERSIST_VERSION)
        return IOCD_OK;
    memcpy(&digest, v + 1, 8);
    for (ri = 0; ri < e->rs->n; ri++)
        if (strlen(e->rs->rules[ri].name) == (size_t)(sep - k) &&
            memcmp(e->rs->rules[ri].name, k, (size_t)(sep - k)) == 0)
            break;
    if (ri == e->rs->n || e->rs->rules[ri].digest != digest)
        return IOCD_OK; /* the rule changed or went: its old alert is gone */
    memcpy(&since, v + 11, 8);
    memcpy(&clear, v + 19, 8);
    memcpy(&value, v + 27, 8);
    memcpy(&last_seen, v + 35, 8);
    memcpy(&n, v + 43, 8);
    if (vlen < 51 + 8 * n)
        return IOCD_OK;
    in = rule_instance_get(e, (uint32_t)ri, sep + 1, klen - (size_t)(sep + 1 - k), true);
    if (in == NULL)
        return IOCD_ENOMEM;
    in->state = (rule_state)v[9];
    in->keeping = v[10] != 0;
    in->since_ms = (int64_t)since;
    in->clear_ms = (int64_t)clear;
    in->value = value;
    in->last_seen_ms = (int64_t)last_seen;
    in->n_members = 0;
    for (i = 0; i < n; i++) {
        uint64_t id;
        memcpy(&id, v + 51 + 8 * i, 8);
        rule_member_add(in, id);
    }
    if (in->state == RULE_FIRING)
        iocd_metric_add(e->m_firing, 1);
    c->n++;
    return IOCD_OK;
}

/* Alerts firing across a restart are told to the listener once more (restored = true), so
 * that one a silence or an inhibition kept from opening an incident is held back again, and
 * opens its incident when that ends; one whose episode has an incident changes nothing. */
static void announce_restored(rule_engine *e)
{
    size_t i;

    for (i = 0; e->cfg.on_event != NULL && i < e->inst_cap; i++) {
        instance *in = e->inst[i];
        rule_event_text txt;
        rule_event ev;
        if (in == NULL || in->state != RULE_FIRING)
            continue;
        rule_event_render(e, &e->rs->rules[in->rule], in, in->since_ms, &txt, &ev);
        ev.from = ev.to = RULE_FIRING;
        ev.restored = true;
        e->cfg.on_event(e->cfg.ud, &ev);
        rule_event_text_fini(&txt);
    }
}

void rule_persist_restore(rule_engine *e)
{
    restore_ctx c = { e, 0 };

    e->restored = true;
    if (e->cfg.st == NULL || e->cfg.no_persist)
        return;
    if (store_kv_each(e->cfg.st, "alerts", restore_one, &c) != IOCD_OK)
        log_warn("rules", "could not read the saved alert state", NULL);
    if (c.n > 0)
        log_info("rules", "alert state restored", "alerts=%zu", c.n);
    announce_restored(e);
}
