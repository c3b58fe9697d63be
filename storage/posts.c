/* storage/posts.c - the series whose label postings wait for a later commit. A commit writes
 * STORE_POST_STEP of them at most (a seal's end all), oldest first, so a cold start's
 * thousands of new series do not hold one acknowledgement for all their postings; readers
 * of postings wait for those persisted before they asked (store_wait_posted). The queue and
 * its counters are the store's (st->unposted*, n_persisted, n_posted), under st->mu. */
#include "storage/storage_int.h"

#include <errno.h>
#include <string.h>
#include <time.h>

/* A commit's postings (st->mu held): the oldest queued series, then of the n_fresh series
 * this commit persists the first ones, up to limit in all; room is made in the queue for
 * the fresh ones left over, so store_posts_done cannot fail. Deleted series are skipped (their
 * keys stay valid: a series lives until the store closes). *out is NULL when empty. */
iocd_err store_posts_take(store *st, size_t limit, const uint64_t *fresh, size_t n_fresh,
                           store_db_series **out, size_t *n_out, size_t *from_queue, size_t *direct)
{
    size_t queued = st->unposted_end - st->unposted_at, rest, i;
    store_db_series *post;

    *out = NULL;
    *n_out = 0;
    *from_queue = queued < limit ? queued : limit;
    *direct = n_fresh < limit - *from_queue ? n_fresh : limit - *from_queue;
    rest = n_fresh - *direct;
    if (st->unposted_at > 0 && rest > 0 && st->unposted_end + rest > st->unposted_cap) {
        memmove(st->unposted, st->unposted + st->unposted_at, queued * sizeof(*st->unposted));
        st->unposted_at = 0;
        st->unposted_end = queued;
    }
    if (rest > 0 && st->unposted_end + rest > st->unposted_cap) {
        size_t cap = st->unposted_cap != 0 ? st->unposted_cap : 1024;
        uint64_t *grown;
        while (cap < st->unposted_end + rest)
            cap *= 2;
        grown = iocd_realloc(st->unposted, cap * sizeof(*grown));
        if (grown == NULL)
            return IOCD_ENOMEM;
        st->unposted = grown;
        st->unposted_cap = cap;
    }
    if (*from_queue + *direct == 0)
        return IOCD_OK;
    post = iocd_calloc(*from_queue + *direct, sizeof(*post));
    if (post == NULL)
        return IOCD_ENOMEM;
    for (i = 0; i < *from_queue + *direct; i++) {
        store_series *s = store_series_get(st, i < *from_queue ? st->unposted[st->unposted_at + i]
                                                               : fresh[i - *from_queue]);
        if (s != NULL)
            post[(*n_out)++] = (store_db_series){ s->id, s->key, s->key_len };
    }
    *out = post;
    return IOCD_OK;
}

/* After the commit of store_posts_take's postings (st->mu held): the fresh series not posted join
 * the queue, and readers waiting for them are woken. */
void store_posts_done(store *st, size_t from_queue, size_t direct, const uint64_t *fresh,
                       size_t n_fresh)
{
    st->unposted_at += from_queue;
    if (n_fresh > direct)
        memcpy(st->unposted + st->unposted_end, fresh + direct,
               (n_fresh - direct) * sizeof(*st->unposted));
    st->unposted_end += n_fresh - direct;
    if (st->unposted_at == st->unposted_end)
        st->unposted_at = st->unposted_end = 0;
    st->n_persisted += n_fresh;
    st->n_posted += from_queue + direct;
    iocd_metric_set(st->m_posts_waiting, (double)(st->unposted_end - st->unposted_at));
    if (from_queue + direct > 0)
        pthread_cond_broadcast(&st->posted);
}

void store_wait_posted(store *st)
{
    struct timespec until;
    uint64_t want;

    pthread_mutex_lock(&st->mu);
    want = st->n_persisted;
    if (st->n_posted < want) {
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 2;
        while (st->n_posted < want &&
               pthread_cond_timedwait(&st->posted, &st->mu, &until) != ETIMEDOUT)
            ;
    }
    pthread_mutex_unlock(&st->mu);
}

