/* tests/unit/test_storage.c - opening the store: the lock, the format marker. */
#include "tests/unit/storage_fixture.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <lmdb.h> /* to write a data file as an older iocd left it */

#include "storage/storage.h"
#include "storage/storage_int.h" /* the data file's own commit, for the postings */

TEST(open_creates_dir_and_reopens)
{
    char errbuf[256];
    store *st = NULL;

    ASSERT_OK(store_open(sub("a/b/data"), NULL, &st, errbuf, sizeof(errbuf)));
    ASSERT_STR_EQ(store_dir(st), sub("a/b/data"));
    store_close(st);
    st = NULL;
    ASSERT_OK(store_open(sub("a/b/data"), NULL, &st, errbuf, sizeof(errbuf)));
    store_close(st);
    ASSERT_EQ(access(sub("a/b/data/iocd.mdb"), F_OK), 0);
    ASSERT_EQ(access(sub("a/b/data/iocd.lock"), F_OK), 0);
}

TEST(second_opener_is_refused_with_pid)
{
    char errbuf[256], want[64];
    store *st = NULL, *st2 = NULL;
    int status;
    pid_t child;

    ASSERT_OK(store_open(sub("data"), NULL, &st, errbuf, sizeof(errbuf)));
    child = fork();
    if (child == 0) {
        iocd_err err = store_open(sub("data"), NULL, &st2, errbuf, sizeof(errbuf));
        snprintf(want, sizeof(want), "(pid %ld)", (long)getppid());
        _exit(err == IOCD_ELOCKED && strstr(errbuf, want) != NULL ? 0 : 1);
    }
    ASSERT_EQ(waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    store_close(st);
    /* Released: another process can take it now. */
    child = fork();
    if (child == 0) {
        iocd_err err = store_open(sub("data"), NULL, &st2, errbuf, sizeof(errbuf));
        store_close(st2);
        _exit(err == IOCD_OK ? 0 : 1);
    }
    ASSERT_EQ(waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

TEST(foreign_file_is_refused_and_untouched)
{
    char errbuf[256], buf[64];
    store *st = NULL;
    int fd;

    ASSERT_EQ(mkdir(sub("data"), 0700), 0);
    fd = open(sub("data/iocd.mdb"), O_CREAT | O_WRONLY, 0600);
    ASSERT_TRUE(fd >= 0);
    for (int i = 0; i < 512; i++)
        ASSERT_EQ(write(fd, "not lmdb, not ours.", 19), 19);
    close(fd);
    ASSERT_ERR(store_open(sub("data"), NULL, &st, errbuf, sizeof(errbuf)), IOCD_ECORRUPT);
    ASSERT_STR_CONTAINS(errbuf, "iocd.mdb");
    fd = open(sub("data/iocd.mdb"), O_RDONLY);
    ASSERT_EQ(read(fd, buf, 19), 19);
    close(fd);
    ASSERT_TRUE(memcmp(buf, "not lmdb, not ours.", 19) == 0);
}

TEST(data_dir_under_a_file_is_refused)
{
    char errbuf[256];
    store *st = NULL;
    int fd = open(sub("file"), O_CREAT | O_WRONLY, 0600);

    close(fd);
    ASSERT_NE(store_open(sub("file/data"), NULL, &st, errbuf, sizeof(errbuf)), IOCD_OK);
    ASSERT_STR_CONTAINS(errbuf, "data dir");
    ASSERT_STR_CONTAINS(errbuf, sub("file/data"));
}

/* ---- Write path ---------------------------------------------------------------------- */

static iocd_sample *read_all(store *st, uint64_t id, size_t *n)
{
    iocd_sample *s = NULL;

    ASSERT_OK(store_read(st, id, INT64_MIN, INT64_MAX, &s, n));
    return s;
}

typedef struct label_text {
    char buf[512];
} label_text;

static iocd_err append_label(void *ud, const char *name, size_t name_len, const char *value,
                             size_t value_len)
{
    label_text *t = ud;
    size_t len = strlen(t->buf);

    snprintf(t->buf + len, sizeof(t->buf) - len, "%.*s=%.*s;", (int)name_len, name, (int)value_len,
             value);
    return IOCD_OK;
}

TEST(batch_validates_labels_and_times)
{
    store *st = open_at("data", NULL);
    store_batch *b = NULL;
    int64_t now = iocd_now_ms();
    store_reject why;
    iocd_label ok[] = { L("__name__", "water_level_m"), L("ward", "w1") };
    iocd_label noname[] = { L("ward", "w1") };
    iocd_label badname[] = { L("__name__", "m"), L("1ward", "w1") };
    iocd_label dup[] = { L("__name__", "m"), L("ward", "a"), L("ward", "b") };

    ASSERT_OK(store_batch_new(st, &b));
    ASSERT_ERR(store_batch_add(b, noname, 1, now, 1, &why), IOCD_EINVAL);
    ASSERT_EQ(why, STORE_REJECT_NO_NAME);
    ASSERT_ERR(store_batch_add(b, badname, 2, now, 1, &why), IOCD_EINVAL);
    ASSERT_EQ(why, STORE_REJECT_BAD_LABEL);
    ASSERT_ERR(store_batch_add(b, dup, 3, now, 1, &why), IOCD_EINVAL);
    ASSERT_EQ(why, STORE_REJECT_DUP_LABEL);
    ASSERT_ERR(store_batch_add(b, ok, 2, now - 91LL * 86400000, 1, &why), IOCD_EINVAL);
    ASSERT_EQ(why, STORE_REJECT_TOO_OLD);
    ASSERT_ERR(store_batch_add(b, ok, 2, now + 3600000, 1, &why), IOCD_EINVAL);
    ASSERT_EQ(why, STORE_REJECT_TOO_NEW);
    ASSERT_OK(store_batch_add(b, ok, 2, now, 1, &why));
    ASSERT_EQ(store_batch_len(b), 1);
    ASSERT_STR_EQ(store_reject_name(STORE_REJECT_OUT_OF_ORDER), "out_of_order");
    store_batch_free(b);
    store_close(st);
}

TEST(commit_read_back_and_recover_from_wal)
{
    store *st = open_at("data", NULL);
    store_batch *b = NULL;
    int64_t t0 = iocd_now_ms() - 3600000;
    iocd_label a[] = { L("ward", "Phan \xC4\x90\xC3\xACnh Ph\xC3\xB9ng"), L("__name__", "lux") };
    iocd_label c[] = { L("__name__", "fps"), L("device", "cam-1"), L("empty", "") };
    uint64_t stale = 0x7ff0000000000002ULL, *ids = NULL;
    double stale_v, got;
    store_result res;
    iocd_sample *s;
    size_t n, i;
    label_text lt;
    char **vals = NULL;

    memcpy(&stale_v, &stale, 8);
    ASSERT_OK(store_batch_new(st, &b));
    for (i = 0; i < 100; i++)
        add(b, a, 2, t0 + (int64_t)i * 10000, 1000.0 + (double)i / 10);
    add(b, c, 3, t0 + 5000, stale_v);
    add(b, c, 3, t0, 25);         /* out of order, within the window */
    add(b, a, 2, t0 + 50000, -1); /* a duplicate timestamp: the last write wins */
    ASSERT_OK(store_batch_commit(b, &res));
    ASSERT_EQ(res.accepted, 103);
    store_close(st);

    st = open_at("data", NULL); /* recovery replays the WAL */
    ASSERT_OK(store_series_all(st, &ids, &n));
    ASSERT_EQ(n, 2);
    s = read_all(st, ids[0], &n);
    ASSERT_EQ(n, 100);
    ASSERT_EQ(s[0].t_ms, t0);
    ASSERT_DBL_EQ(s[0].v, 1000.0, 0);
    ASSERT_DBL_EQ(s[5].v, -1, 0);
    ASSERT_DBL_EQ(s[99].v, 1009.9, 0);
    iocd_free(s);
    s = read_all(st, ids[1], &n);
    ASSERT_EQ(n, 2);
    ASSERT_EQ(s[0].t_ms, t0);
    got = s[1].v;
    ASSERT_TRUE(memcmp(&got, &stale, 8) == 0); /* the staleness marker, bit-exact */
    iocd_free(s);
    memset(&lt, 0, sizeof(lt));
    ASSERT_OK(store_series_labels(st, ids[1], append_label, &lt));
    ASSERT_STR_EQ(lt.buf, "__name__=fps;device=cam-1;"); /* sorted, empty label dropped */
    iocd_free(ids);
    ASSERT_OK(store_postings(st, "__name__", "lux", &ids, &n));
    ASSERT_EQ(n, 1);
    iocd_free(ids);
    ASSERT_OK(store_label_values(st, "ward", &vals, &n));
    ASSERT_EQ(n, 1);
    ASSERT_STR_EQ(vals[0], "Phan \xC4\x90\xC3\xACnh Ph\xC3\xB9ng");
    iocd_free(vals[0]);
    iocd_free(vals);
    store_close(st);
}

TEST(out_of_order_window_and_cardinality_limit)
{
    store_config cfg = { .series_max = 2, .ooo_window_ms = 60000 };
    store *st = open_at("data", &cfg);
    store_batch *b = NULL;
    int64_t now = iocd_now_ms();
    iocd_label s1[] = { L("__name__", "a") }, s2[] = { L("__name__", "b") },
               s3[] = { L("__name__", "c") };
    store_result res;

    ASSERT_OK(store_batch_new(st, &b));
    add(b, s1, 1, now, 1);
    add(b, s1, 1, now - 30000, 2);  /* within 1 min behind the newest: kept */
    add(b, s1, 1, now - 120000, 3); /* too far behind: refused */
    add(b, s2, 1, now, 1);
    add(b, s3, 1, now, 1); /* a third series over series_max = 2 */
    ASSERT_OK(store_batch_commit(b, &res));
    ASSERT_EQ(res.accepted, 3);
    ASSERT_EQ(res.rejected[STORE_REJECT_OUT_OF_ORDER], 1);
    ASSERT_EQ(res.rejected[STORE_REJECT_CARDINALITY], 1);
    store_close(st);
}

TEST(many_series_survive_reopen)
{
    store *st = open_at("data", NULL);
    store_batch *b = NULL;
    int64_t now = iocd_now_ms();
    char dev[32];
    uint64_t *ids = NULL;
    size_t n, i;

    ASSERT_OK(store_batch_new(st, &b));
    for (i = 0; i < 5000; i++) {
        iocd_label l[] = { L("__name__", "power_w"), { "device", 6, dev, 0 } };
        l[1].value_len = (size_t)snprintf(dev, sizeof(dev), "lamp-%05zu", i);
        add(b, l, 2, now, (double)i);
    }
    ASSERT_OK(store_batch_commit(b, NULL));
    store_close(st);
    st = open_at("data", NULL);
    ASSERT_OK(store_series_all(st, &ids, &n));
    ASSERT_EQ(n, 5000);
    iocd_free(ids);
    ASSERT_OK(store_postings(st, "device", "lamp-04321", &ids, &n));
    ASSERT_EQ(n, 1);
    iocd_free(ids);
    store_close(st);
}

/* KiB of the data file's pages resident in this process' mapping of it (smaps), or -1. */
static long mapped_kib(const char *file)
{
    char line[512];
    long kib = -1;
    bool in = false;
    FILE *f = fopen("/proc/self/smaps", "r");

    if (f == NULL)
        return -1;
    while (fgets(line, sizeof(line), f) != NULL) {
        unsigned long long lo, hi;
        if (sscanf(line, "%llx-%llx ", &lo, &hi) == 2 && strchr(line, '/') != NULL)
            in = strstr(line, file) != NULL;
        else if (sscanf(line, "%llx-%llx ", &lo, &hi) == 2)
            in = false;
        else if (in && strncmp(line, "Rss:", 4) == 0)
            kib = (kib < 0 ? 0 : kib) + atol(line + 4);
    }
    fclose(f);
    return kib;
}

/* The pages of the data file that commits read through LMDB's map leave the process'
 * resident set while the store changes (they stay in the page cache): VmRSS measures what
 * iocd holds, not the size of its file. */
TEST(data_file_pages_leave_the_resident_set)
{
    store *st = open_at("resident", NULL);
    char file[600], dev[32];
    int64_t now = iocd_now_ms(), deadline;
    long peak = 0, kib;
    size_t i, k;

    snprintf(file, sizeof(file), "%s/iocd.mdb", sub("resident"));
    for (k = 0; k < 20; k++) {
        store_batch *b = NULL;
        ASSERT_OK(store_batch_new(st, &b));
        for (i = 0; i < 2000; i++) {
            iocd_label l[] = { L("__name__", "power_w"), { "device", 6, dev, 0 } };
            l[1].value_len = (size_t)snprintf(dev, sizeof(dev), "lamp-%02zu-%05zu", k, i);
            add(b, l, 2, now, (double)i);
        }
        ASSERT_OK(store_batch_commit(b, NULL));
        kib = mapped_kib(file);
        if (kib > peak)
            peak = kib;
    }
    ASSERT_TRUE(peak >= 0); /* the file is mapped */
    /* The sealer drops them within a second of the last change (it wakes at least once a
     * second): polled, with a deadline far past that. */
    deadline = iocd_mono_ns() + 10 * 1000000000LL;
    while ((kib = mapped_kib(file)) > 64 && iocd_mono_ns() < deadline)
        nanosleep(&(struct timespec){ 0, 20000000 }, NULL);
    if (kib > 64)
        test_fail_at(__FILE__, __LINE__, "%ld KiB of the data file still resident (peak %ld)", kib,
                     peak);
    store_close(st);
}

/* Samples sharing their labels after __name__ (one line's fields) reuse that part of the
 * key: the series they name are exactly those the plain path names, whatever the labels. */
TEST(tagged_samples_name_the_same_series)
{
    store *st = open_at("data", NULL);
    store_batch *b = NULL;
    int64_t now = iocd_now_ms();
    store_reject why;
    uint64_t *ids = NULL;
    size_t n, i;
    const char *names[] = { "water_pressure_bar", "water_flow_m3h", "water_level_m" };
    iocd_label line1[] = { L("__name__", "x"), L("ward", "Phan Dinh Phung"), L("device", "wp-1"),
                           L("domain", "water") };
    iocd_label line2[] = { L("__name__", "x"), L("Zone", "A"), L("device", "wp-1") };
    iocd_label line3[] = { L("__name__", "x"), L("device", "wp-2"), L("empty", "") };

    ASSERT_OK(store_batch_new(st, &b));
    for (i = 0; i < 3; i++) { /* three "lines", each with three fields */
        size_t k;
        for (k = 0; k < 3; k++) {
            iocd_label *l = i == 0 ? line1 : i == 1 ? line2 : line3;
            size_t nl = i == 0 ? 4 : 3;
            l[0].value = names[k];
            l[0].value_len = strlen(names[k]);
            ASSERT_OK(store_batch_add_tagged(b, l, nl, 1000 + i, now, (double)k, &why));
        }
    }
    /* A refused name on the cached path is refused as on the plain one. */
    line1[0].value = "";
    line1[0].value_len = 0;
    ASSERT_EQ(store_batch_add_tagged(b, line1, 4, 1000, now, 1, &why), IOCD_EINVAL);
    ASSERT_EQ(why, STORE_REJECT_NO_NAME);
    /* The same label sets again through the plain path, in another order. */
    {
        iocd_label a[] = { L("device", "wp-1"), L("domain", "water"), L("ward", "Phan Dinh Phung"),
                           L("__name__", "water_flow_m3h") };
        iocd_label c[] = { L("device", "wp-1"), L("__name__", "water_level_m"), L("Zone", "A") };
        iocd_label d[] = { L("__name__", "water_pressure_bar"), L("device", "wp-2") };
        ASSERT_OK(store_batch_add(b, a, 4, now + 1000, 5, &why));
        ASSERT_OK(store_batch_add(b, c, 3, now + 1000, 5, &why));
        ASSERT_OK(store_batch_add(b, d, 2, now + 1000, 5, &why));
    }
    ASSERT_OK(store_batch_commit(b, NULL));
    ASSERT_OK(store_series_all(st, &ids, &n));
    ASSERT_EQ(n, 9);
    for (i = 0; i < n; i++) {
        iocd_sample *s = read_all(st, ids[i], &n);
        label_text t = { { 0 } };
        ASSERT_OK(store_series_labels(st, ids[i], append_label, &t));
        if (strstr(t.buf, "device=wp-1;domain") != NULL && strstr(t.buf, "flow") != NULL)
            ASSERT_EQ(n, 2);
        if (strstr(t.buf, "Zone=A") != NULL && strstr(t.buf, "level") != NULL)
            ASSERT_EQ(n, 2);
        if (strstr(t.buf, "wp-2") != NULL && strstr(t.buf, "pressure") != NULL)
            ASSERT_EQ(n, 2);
        ASSERT_TRUE(strstr(t.buf, "empty") == NULL);
        iocd_free(s);
        n = 9;
    }
    iocd_free(ids);
    store_close(st);
    /* After a restart (hashes recomputed from the keys), the same series are found. */
    st = open_at("data", NULL);
    ASSERT_OK(store_batch_new(st, &b));
    line3[0].value = "water_level_m";
    line3[0].value_len = strlen("water_level_m");
    ASSERT_OK(store_batch_add_tagged(b, line3, 3, 7, now + 2000, 1, &why));
    ASSERT_OK(store_batch_add_tagged(b, line3, 3, 7, now + 3000, 2, &why));
    ASSERT_OK(store_batch_commit(b, NULL));
    ASSERT_OK(store_series_all(st, &ids, &n));
    ASSERT_EQ(n, 9);
    iocd_free(ids);
    store_close(st);
}

/* ---- Sealing --------------------------------------------------------------------------- */

TEST(sealing_moves_heads_to_blocks_and_reads_merge)
{
    store_config cfg = { .chunk_ms = 60000, .seal_grace_ms = 1000 };
    store *st = open_at("data", &cfg);
    store_batch *b = NULL;
    int64_t now = iocd_now_ms(), t0 = (now - 600000) / 60000 * 60000;
    char dev[32];
    store_stats stats;
    uint64_t *ids = NULL;
    iocd_sample *s;
    size_t n, i, j;

    ASSERT_OK(store_batch_new(st, &b));
    for (i = 0; i < 200; i++) {
        iocd_label l[] = { L("__name__", "water_pressure_bar"), { "device", 6, dev, 0 } };
        l[1].value_len = (size_t)snprintf(dev, sizeof(dev), "wp-%03zu", i);
        for (j = 0; j < 60; j++) /* 10 minutes at 10 s */
            add(b, l, 2, t0 + (int64_t)j * 10000, 2.0 + (double)((i + j) % 100) / 1000.0);
    }
    ASSERT_OK(store_batch_commit(b, NULL));
    stats = wait_sealed(st, t0 + 540000);
    ASSERT_GT(stats.blocks, 0);
    ASSERT_LT(stats.head_samples, 200 * 60);
    /* Reads see sealed and head samples alike, in order. */
    ASSERT_OK(store_series_all(st, &ids, &n));
    ASSERT_EQ(n, 200);
    s = read_all(st, ids[77], &n);
    ASSERT_EQ(n, 60);
    for (j = 0; j < 60; j++) {
        ASSERT_EQ(s[j].t_ms, t0 + (int64_t)j * 10000);
        ASSERT_DBL_EQ(s[j].v, 2.0 + (double)((77 + j) % 100) / 1000.0, 0);
    }
    iocd_free(s);
    /* A late sample for a sealed period, rewriting an existing timestamp: it wins. */
    ASSERT_OK(store_batch_new(st, &b));
    {
        iocd_label l[] = { L("__name__", "water_pressure_bar"), L("device", "wp-077") };
        add(b, l, 2, t0 + 10000, -7.5);
    }
    ASSERT_OK(store_batch_commit(b, NULL));
    s = read_all(st, ids[77], &n);
    ASSERT_EQ(n, 60);
    ASSERT_DBL_EQ(s[1].v, -7.5, 0);
    iocd_free(s);
    store_close(st);
    /* After a restart: blocks plus the WAL replay give the same answer. */
    st = open_at("data", &cfg);
    s = read_all(st, ids[77], &n);
    ASSERT_EQ(n, 60);
    ASSERT_DBL_EQ(s[1].v, -7.5, 0);
    ASSERT_DBL_EQ(s[59].v, 2.0 + (double)((77 + 59) % 100) / 1000.0, 0);
    iocd_free(s);
    iocd_free(ids);
    store_close(st);
}

static void count_problem(void *ud, const char *msg)
{
    fprintf(stderr, "check: %s\n", msg);
    ++*(int *)ud;
}

static void add_series(store_batch *b, const char *metric, const char *kind, size_t i, int64_t t)
{
    char dev[64];
    iocd_label l[] = { { "__name__", 8, metric, strlen(metric) }, { "device", 6, dev, 0 } };

    l[1].value_len = (size_t)snprintf(dev, sizeof(dev), "%s-%03zu", kind, i);
    add(b, l, 2, t, (double)i);
}

/* Series keys move into packed groups when a seal completes; a deleted series leaves its
 * group (packed or not) and every read; a restart and `iocd check` agree. */
/* A seal writes one block per period and id group: slices of the seal must not split a
 * group (they did, at every slice boundary, and the second half became a patch block). */
TEST(seal_writes_one_block_per_group)
{
    store_config cfg = { .chunk_ms = 60000, .seal_grace_ms = 1000 };
    store *st = open_at("data", &cfg);
    store_batch *b = NULL;
    int64_t now = iocd_now_ms(), t0 = (now - 600000) / 60000 * 60000;
    store_stats stats;
    size_t i;

    ASSERT_OK(store_batch_new(st, &b));
    for (i = 0; i < 1100; i++) /* ids 1..1100: groups 0..17, over several slices */
        add_series(b, "lux", "lamp", i, t0 + 10000);
    add_series(b, "lux", "lamp", 0, now); /* moves the watermark past the period */
    ASSERT_OK(store_batch_commit(b, NULL));
    stats = wait_sealed(st, t0 + 60000);
    ASSERT_EQ(stats.blocks, (1100 + 63) / 64);
    store_close(st);
}

TEST(series_index_packs_and_deletes)
{
    store_config cfg = { .chunk_ms = 60000, .seal_grace_ms = 1000 };
    store *st = open_at("data", &cfg);
    store_batch *b = NULL;
    int64_t now = iocd_now_ms(), t0 = (now - 600000) / 60000 * 60000;
    char long_dev[600], errbuf[256];
    uint64_t *ids = NULL, del[3];
    size_t n, i;
    int problems = 0;
    uint64_t n_problems = 0;
    label_text t = { { 0 } };
    char **vals = NULL;

    memset(long_dev, 'x', 450);
    snprintf(long_dev + 450, sizeof(long_dev) - 450, "-%d", 7);
    ASSERT_OK(store_batch_new(st, &b));
    for (i = 0; i < 100; i++)
        add_series(b, "lux", "lamp", i, t0);
    for (i = 0; i < 30; i++)
        add_series(b, "fps", "cam", i, t0);
    ASSERT_OK(store_batch_commit(b, NULL));
    ASSERT_OK(store_batch_new(st, &b));
    {
        iocd_label l[] = { L("__name__", "fps"), { "device", 6, long_dev, strlen(long_dev) } };
        add(b, l, 2, t0, 1);
        add(b, l, 2, now, 1); /* the newest sample passes the period: the seal runs */
    }
    ASSERT_OK(store_batch_commit(b, NULL));
    wait_sealed(st, t0 + 60000);
    /* Created after the seal: still in series_by_id, one of them in a packed group. */
    ASSERT_OK(store_batch_new(st, &b));
    for (i = 30; i < 40; i++)
        add_series(b, "fps", "cam", i, now);
    ASSERT_OK(store_batch_commit(b, NULL));
    ASSERT_OK(store_postings(st, "device", "lamp-042", &ids, &n)); /* packed */
    ASSERT_EQ(n, 1);
    del[0] = ids[0];
    iocd_free(ids);
    ASSERT_OK(store_postings(st, "device", "cam-035", &ids, &n)); /* not packed yet */
    ASSERT_EQ(n, 1);
    del[1] = ids[0];
    iocd_free(ids);
    ASSERT_OK(store_postings(st, "device", "cam-007", &ids, &n));
    ASSERT_EQ(n, 1);
    del[2] = ids[0];
    iocd_free(ids);
    ASSERT_OK(store_delete_series(st, del, 3));
    /* The long value comes back whole from its (packed) series key. */
    ASSERT_OK(store_label_values(st, "device", &vals, &n));
    ASSERT_EQ(n, 100 + 40 + 1 - 3);
    for (i = 0; i < n; i++) {
        if (strlen(vals[i]) > 400)
            ASSERT_STR_EQ(vals[i], long_dev);
        iocd_free(vals[i]);
    }
    iocd_free(vals);
    store_close(st);

    st = open_at("data", &cfg);
    ASSERT_OK(store_series_all(st, &ids, &n));
    ASSERT_EQ(n, 100 + 40 + 1 - 3);
    iocd_free(ids);
    for (i = 0; i < 3; i++)
        ASSERT_EQ(store_series_labels(st, del[i], append_label, &t), IOCD_ENOTFOUND);
    ASSERT_OK(store_postings(st, "device", "cam-036", &ids, &n));
    ASSERT_EQ(n, 1);
    ASSERT_OK(store_series_labels(st, ids[0], append_label, &t));
    ASSERT_STR_EQ(t.buf, "__name__=fps;device=cam-036;");
    iocd_free(ids);
    ASSERT_OK(store_postings(st, "device", "lamp-042", &ids, &n));
    ASSERT_EQ(n, 0);
    iocd_free(ids);
    store_close(st);
    ASSERT_OK(
        store_check(sub("data"), count_problem, &problems, &n_problems, errbuf, sizeof(errbuf)));
    ASSERT_EQ(problems, 0);
    ASSERT_EQ(n_problems, 0);
}

/* ---- Label postings: the unpacked and the packed half ------------------------------------ */

/* How many series carry name=value (ids checked ascending); *max_out the greatest id. */
static size_t postings_n(store *st, const char *name, const char *value, uint64_t *max_out)
{
    uint64_t *ids = NULL;
    size_t n, i;

    ASSERT_OK(store_postings(st, name, value, &ids, &n));
    for (i = 1; i < n; i++)
        ASSERT_TRUE(ids[i - 1] < ids[i]);
    if (max_out != NULL)
        *max_out = n > 0 ? ids[n - 1] : 0;
    iocd_free(ids);
    return n;
}

static uint64_t postings_one(store *st, const char *name, const char *value)
{
    uint64_t id = 0;

    ASSERT_EQ(postings_n(st, name, value, &id), 1);
    return id;
}

/* The strings joined with ',' (each freed), long ones as their length; the first 100. */
static const char *joined(char **v, size_t n)
{
    static char out[2048];
    size_t i, len = 0;

    out[0] = '\0';
    for (i = 0; i < n; i++) {
        if (i < 100 && strlen(v[i]) > 64)
            len += (size_t)snprintf(out + len, sizeof(out) - len, "%s<%zu>", i > 0 ? "," : "",
                                    strlen(v[i]));
        else if (i < 100)
            len += (size_t)snprintf(out + len, sizeof(out) - len, "%s%s", i > 0 ? "," : "", v[i]);
        iocd_free(v[i]);
    }
    iocd_free(v);
    return out;
}

static const char *values_of(store *st, const char *name)
{
    char **v = NULL;
    size_t n;

    ASSERT_OK(store_label_values(st, name, &v, &n));
    return joined(v, n);
}

static size_t values_n(store *st, const char *name)
{
    char **v = NULL;
    size_t n, i;

    ASSERT_OK(store_label_values(st, name, &v, &n));
    for (i = 1; i < n; i++)
        ASSERT_TRUE(strcmp(v[i - 1], v[i]) < 0);
    for (i = 0; i < n; i++)
        iocd_free(v[i]);
    iocd_free(v);
    return n;
}

static const char *names_of(store *st)
{
    char **v = NULL;
    size_t n;

    ASSERT_OK(store_label_names(st, &v, &n));
    return joined(v, n);
}

static void add_labels(store_batch *b, const char *metric, const char *dev, const char *ward,
                       const char *site, size_t site_len, const char *fw, int64_t t)
{
    iocd_label l[5] = { { "__name__", 8, metric, strlen(metric) },
                        { "device", 6, dev, strlen(dev) },
                        { "site", 4, site, site_len } };
    size_t n = 3;

    if (ward != NULL)
        l[n++] = (iocd_label){ "ward", 4, ward, strlen(ward) };
    if (fw != NULL)
        l[n++] = (iocd_label){ "firmware", 8, fw, strlen(fw) };
    add(b, l, n, t, 1);
}

static void check_clean(const char *dir)
{
    char errbuf[256];
    uint64_t n_problems = 0;
    int problems = 0;

    ASSERT_OK(store_check(sub(dir), count_problem, &problems, &n_problems, errbuf, sizeof(errbuf)));
    ASSERT_EQ(problems, 0);
    ASSERT_EQ(n_problems, 0);
}

/* The answers once d-0500, d-1090 (both packed) and d-new1 (unpacked) are deleted. */
static void postings_after_delete(store *st, const char *long_name, const char *long_val)
{
    uint64_t max_id = 0;

    ASSERT_EQ(postings_n(st, "site", "a", &max_id), 1100 + 2 - 3);
    ASSERT_GT(max_id, 65536); /* a second segment */
    ASSERT_EQ(postings_n(st, "device", "d-0500", NULL), 0);
    ASSERT_EQ(postings_n(st, "device", "d-1090", NULL), 0);
    ASSERT_EQ(postings_n(st, "ward", "w9", NULL), 0);
    ASSERT_EQ(postings_n(st, "__name__", "m0000", NULL), 1);
    postings_one(st, "device", "d-new2");
    postings_one(st, long_name, long_val);
    ASSERT_STR_EQ(values_of(st, "ward"), "w0,w1,w2");
    ASSERT_STR_EQ(values_of(st, long_name), "<450>");
    ASSERT_STR_EQ(names_of(st), "__name__,device,<100>,site,ward");
}

/* A seal packs the postings of the series created before it; later series' postings stay
 * unpacked. Every read answers from both halves: a label in one of them only, labels in both,
 * ids of two segments (series ids past 65536), a deleted series in either half, across a
 * restart, and `iocd check` walks both. */
TEST(postings_pack_and_both_halves_answer)
{
    store_config cfg = { .chunk_ms = 60000, .seal_grace_ms = 1000 };
    int64_t now = iocd_now_ms(), t0 = (now - 600000) / 60000 * 60000;
    char long_name[101], long_val[451], metric[16], dev[16];
    uint64_t max_id = 0, del[3];
    store_batch *b = NULL;
    store *st = NULL;
    int status;
    size_t i;
    pid_t child;

    memset(long_name, 'n', 100);
    long_name[100] = '\0';
    memset(long_val, 'v', 450);
    long_val[450] = '\0';
    child = fork();
    if (child == 0) {
        st = open_at("data", &cfg);
        ASSERT_OK(store_batch_new(st, &b));
        /* One series per metric: each opens an id group of 64, so ids pass 65536 (and the
         * last metrics share one group sequence). */
        for (i = 0; i < 1100; i++) {
            snprintf(metric, sizeof(metric), "m%04zu", i);
            snprintf(dev, sizeof(dev), "d-%04zu", i);
            add_labels(b, metric, dev,
                       i % 3 == 0   ? "w0"
                       : i % 3 == 1 ? "w1"
                                    : "w2",
                       "a", 1, NULL, t0);
        }
        for (i = 0; i < 200; i++) { /* enough series that new ones get ids of their groups */
            snprintf(dev, sizeof(dev), "b-%03zu", i);
            add_labels(b, "bulk", dev, NULL, "b", 1, NULL, t0);
        }
        /* A value that continues "a" with NUL bytes sorts among site=a's packed records. */
        add_labels(b, "m_odd", "d-odd", NULL, "a\0\0\0\0z", 6, NULL, t0);
        {
            iocd_label l[] = { L("__name__", "m_long"), { long_name, 100, long_val, 450 } };
            add(b, l, 2, t0, 1);
        }
        add_labels(b, "m0000", "d-0000", "w0", "a", 1, NULL, now); /* passes the period: a seal */
        ASSERT_OK(store_batch_commit(b, NULL));
        wait_sealed(st, t0 + 60000);
        ASSERT_OK(store_batch_new(st, &b));
        add_labels(b, "m0000", "d-new1", "w9", "a", 1, "1.2", now); /* next in m0000's group */
        add_labels(b, "m1099", "d-new2", "w0", "a", 1, NULL, now);
        ASSERT_OK(store_batch_commit(b, NULL));
        _exit(0); /* no close: no seal packs the two new series */
    }
    ASSERT_EQ(waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    check_clean("data");

    st = open_at("data", &cfg);
    ASSERT_EQ(postings_n(st, "site", "a", &max_id), 1100 + 2);
    ASSERT_GT(max_id, 65536);
    ASSERT_EQ(postings_n(st, "ward", "w9", NULL), 1);   /* unpacked only */
    ASSERT_EQ(postings_n(st, "ward", "w1", NULL), 367); /* packed only */
    ASSERT_EQ(postings_n(st, "ward", "w0", NULL), 367 + 1);
    ASSERT_EQ(postings_n(st, "__name__", "m0000", NULL), 2);
    postings_one(st, long_name, long_val);
    ASSERT_STR_EQ(values_of(st, "ward"), "w0,w1,w2,w9");
    ASSERT_STR_EQ(values_of(st, long_name), "<450>");
    ASSERT_STR_EQ(values_of(st, "firmware"), "1.2");
    ASSERT_STR_EQ(names_of(st), "__name__,device,firmware,<100>,site,ward");

    ASSERT_EQ(values_n(st, "device"), 200 + 1100 + 1 + 2);
    del[0] = postings_one(st, "device", "d-0500");
    del[1] = postings_one(st, "device", "d-1090");
    del[2] = postings_one(st, "device", "d-new1");
    ASSERT_GT(del[1], 65535);
    ASSERT_LT(del[2], del[0]);
    ASSERT_OK(store_delete_series(st, del, 3));
    postings_after_delete(st, long_name, long_val);
    store_close(st); /* seals everything: now every posting is packed */
    check_clean("data");

    st = open_at("data", &cfg);
    postings_after_delete(st, long_name, long_val);
    store_close(st);
}

/* Makes a data file of this format look like an older iocd left it (marker: "iocd-store-2"
 * or "-3"): that marker, no packed postings, and a long value's posting under the old key
 * (400 bytes of the value whatever the name's length, then '#' and the hash): over
 * POSTING_KEY_MAX after a long name. */
static void make_old_store(const char *dir, const char *marker, const char *name, const char *value)
{
    char path[600];
    uint8_t key[600], ids[64][8];
    size_t name_len = strlen(name), n = 0;
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    MDB_cursor *cur = NULL;
    MDB_dbi meta, posts, packed;
    MDB_val k = { 6, (void *)"format" }, v = { strlen(marker), (void *)marker };
    int rc;

    snprintf(path, sizeof(path), "%s/iocd.mdb", sub(dir));
    ASSERT_EQ(mdb_env_create(&env), 0);
    ASSERT_EQ(mdb_env_set_maxdbs(env, 32), 0);
    ASSERT_EQ(mdb_env_open(env, path, MDB_NOSUBDIR, 0640), 0);
    ASSERT_EQ(mdb_txn_begin(env, NULL, 0, &txn), 0);
    ASSERT_EQ(mdb_dbi_open(txn, "meta", 0, &meta), 0);
    ASSERT_EQ(mdb_put(txn, meta, &k, &v, 0), 0);
    ASSERT_EQ(mdb_dbi_open(txn, "postings_packed", 0, &packed), 0);
    ASSERT_EQ(mdb_drop(txn, packed, 1), 0);
    ASSERT_EQ(mdb_dbi_open(txn, "postings", MDB_DUPSORT | MDB_DUPFIXED, &posts), 0);
    ASSERT_EQ(mdb_cursor_open(txn, posts, &cur), 0);
    memcpy(key, name, name_len);
    key[name_len] = '=';
    k = (MDB_val){ name_len + 1, key };
    ASSERT_EQ(mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE), 0);
    ASSERT_EQ(k.mv_size, 480); /* today's key: fewer bytes of the value */
    memcpy(key + name_len + 1, value, 400);
    memcpy(key + name_len + 401, (const uint8_t *)k.mv_data + 480 - 17, 17);
    for (rc = 0; rc == 0 && n < 64; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT_DUP))
        memcpy(ids[n++], v.mv_data, 8);
    mdb_cursor_close(cur);
    ASSERT_EQ(mdb_del(txn, posts, &k, NULL), 0);
    k = (MDB_val){ name_len + 418, key };
    for (size_t i = 0; i < n; i++) {
        v = (MDB_val){ 8, ids[i] };
        ASSERT_EQ(mdb_put(txn, posts, &k, &v, 0), 0);
    }
    ASSERT_EQ(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

/* A data file of iocd-store-2 or -3 (all its postings in the unpacked half) opens, its long
 * key moves to today's, and a stop packs it all. */
static void old_store_is_upgraded(const char *dir, const char *marker)
{
    char name[71], value[451], errbuf[256];
    iocd_label l[] = { L("__name__", "m"), { name, 70, value, 450 } };
    iocd_label d[] = { L("__name__", "m"), L("device", "d1") };
    uint64_t n_problems = 0;
    store_batch *b = NULL;
    store *st = NULL;
    int status, problems = 0;
    pid_t child;

    memset(name, 'k', 70);
    name[70] = '\0';
    memset(value, 'v', 450);
    value[450] = '\0';
    child = fork();
    if (child == 0) {
        st = open_at(dir, NULL);
        ASSERT_OK(store_batch_new(st, &b));
        add(b, l, 2, iocd_now_ms(), 1);
        add(b, d, 2, iocd_now_ms(), 1);
        ASSERT_OK(store_batch_commit(b, NULL));
        _exit(0); /* no close: the postings stay unpacked */
    }
    ASSERT_EQ(waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    make_old_store(dir, marker, name, value);
    ASSERT_ERR(store_check(sub(dir), count_problem, &problems, &n_problems, errbuf, sizeof(errbuf)),
               IOCD_EINVAL);
    ASSERT_STR_CONTAINS(errbuf, "older iocd");

    st = open_at(dir, NULL);
    postings_one(st, name, value);
    postings_one(st, "device", "d1");
    ASSERT_STR_EQ(values_of(st, name), "<450>");
    store_close(st);
    check_clean(dir);
    st = open_at(dir, NULL);
    postings_one(st, name, value);
    ASSERT_STR_EQ(values_of(st, name), "<450>");
    ASSERT_STR_EQ(names_of(st), "__name__,device,<70>");
    store_close(st);
}

/* The canonical key of labels l (st's limits) copied into out (96 bytes); its length. */
static size_t key_into(store *st, const iocd_label *l, size_t n, uint8_t out[96])
{
    store_reject why;
    iocd_buf b;
    size_t len;

    iocd_buf_init(&b, 0);
    ASSERT_OK(store_key_build(store_limits_get(st), l, n, &b, &why));
    ASSERT_LE(b.len, 96);
    memcpy(out, b.data, b.len);
    len = b.len;
    iocd_buf_fini(&b);
    return len;
}

/* Each metric opens its own id group, so every series below is a record of the packed series
 * index, written in key order when the stop's seal packs them: appended, they fill their
 * leaf pages (a put in order splits each full page in half: a third of the pages was slack). */
/* The postings of many series persisted in one commit (grouped by key, each key's ids put at
 * once): every id under each of its labels, whether the key is new (appended) or already
 * there, whatever order the ids come in, and a series persisted a second time changes
 * nothing. */
TEST(postings_of_many_new_series_in_one_commit)
{
    static uint8_t keys[1200][96];
    static size_t key_len[1200];
    store_db_series ser[1200];
    store_config cfg = { 0 };
    store *st = open_at("keys", &cfg);
    store_db *db = NULL;
    char errbuf[256], ward[16], dev[16];
    uint64_t *ids = NULL;
    size_t i, n, j;
    int w;

    for (i = 0; i < 1200; i++) {
        iocd_label l[3] = { L("__name__", "lamp_on"), L("device", ""), L("ward", "") };
        snprintf(ward, sizeof(ward), "w%zu", i % 7);
        snprintf(dev, sizeof(dev), "d%04zu", i / 2); /* two series per device */
        l[0].value = i % 2 == 0 ? "lamp_on" : "lamp_power_w";
        l[0].value_len = strlen(l[0].value);
        l[1].value = dev;
        l[1].value_len = strlen(dev);
        l[2].value = ward;
        l[2].value_len = strlen(ward);
        key_len[i] = key_into(st, l, 3, keys[i]);
        /* ids not in order: 1000 + (i * 7919) % 1200 covers 1000 .. 2199 once each */
        ser[i] = (store_db_series){ 1000 + (i * 7919) % 1200, keys[i], key_len[i] };
    }
    store_close(st);
    ASSERT_EQ(mkdir(sub("db"), 0700), 0);
    ASSERT_OK(store_db_open(sub("db"), 1ULL << 30, false, &db, errbuf, sizeof(errbuf)));
    /* The first 800 in one commit, then the rest with 50 of the first again, and a key
     * sorting before the database's last. */
    ASSERT_OK(store_db_commit(db, ser, 800, ser, 800, 1, NULL, 0, NULL, 0, INT64_MIN, 0, 0, NULL,
                              INT64_MIN, INT64_MIN));
    ASSERT_OK(store_db_commit(db, ser + 750, 450, ser + 750, 450, 2, NULL, 0, NULL, 0, INT64_MIN, 0,
                              0, NULL, INT64_MIN, INT64_MIN));
    for (w = 0; w < 7; w++) {
        snprintf(ward, sizeof(ward), "w%d", w);
        ASSERT_OK(store_db_postings(db, "ward", ward, &ids, &n));
        ASSERT_EQ(n, (size_t)(1200 / 7 + (w < 1200 % 7)));
        for (j = 0; j < n; j++) {
            size_t k;
            if (j > 0)
                ASSERT_LT(ids[j - 1], ids[j]);
            for (k = 0; k < 1200 && ser[k].id != ids[j]; k++)
                ;
            ASSERT_LT(k, 1200);
            ASSERT_EQ(k % 7, (size_t)w);
        }
        iocd_free(ids);
    }
    ASSERT_OK(store_db_postings(db, "__name__", "lamp_on", &ids, &n));
    ASSERT_EQ(n, 600);
    iocd_free(ids);
    ASSERT_OK(store_db_postings(db, "device", "d0377", &ids, &n));
    ASSERT_EQ(n, 2);
    ASSERT_TRUE((ids[0] == ser[754].id && ids[1] == ser[755].id) ||
                (ids[0] == ser[755].id && ids[1] == ser[754].id));
    iocd_free(ids);
    store_db_close(db);
}

/* n series camera_fps{device="cam-NNNNNN", ward="wK"} (K = i % 32) with ids 1..n: their
 * canonical keys (built with st's limits) in keys, and ser naming them. */
static void camera_keys(store *st, size_t n, uint8_t (*keys)[96], store_db_series *ser)
{
    char ward[24], dev[32];
    size_t i;

    for (i = 0; i < n; i++) {
        iocd_label l[3] = { L("__name__", "camera_fps"), L("device", ""), L("ward", "") };
        snprintf(ward, sizeof(ward), "w%zu", i % 32);
        snprintf(dev, sizeof(dev), "cam-%06zu", i);
        l[1].value = dev;
        l[1].value_len = strlen(dev);
        l[2].value = ward;
        l[2].value_len = strlen(ward);
        ser[i] = (store_db_series){ i + 1, keys[i], key_into(st, l, 3, keys[i]) };
    }
}

/* A seal's end packs the index and postings of every series created since the last one,
 * reading them all from the data file: at 100k series tens of megabytes, each read mapping
 * the 64 KiB around it into the process. Those pages must not stay resident (they counted
 * as iocd's memory: peak RSS 148 instead of 130 MiB at 100k series). */
TEST(a_seal_end_leaves_what_it_read_out_of_resident_memory)
{
    enum { N = 40000 };
    uint8_t(*keys)[96] = iocd_calloc(N, sizeof(*keys));
    store_db_series *ser = iocd_calloc(N, sizeof(*ser));
    store_config cfg = { 0 };
    store *st = open_at("keys", &cfg);
    store_db *db = NULL;
    char errbuf[256], path[600];
    uint64_t *ids = NULL;
    size_t n;
    long before, after;

    ASSERT_TRUE(keys != NULL && ser != NULL);
    camera_keys(st, N, keys, ser);
    store_close(st);
    ASSERT_EQ(mkdir(sub("db"), 0700), 0);
    ASSERT_OK(store_db_open(sub("db"), 1ULL << 30, false, &db, errbuf, sizeof(errbuf)));
    ASSERT_OK(store_db_commit(db, ser, N, ser, N, 1, NULL, 0, NULL, 0, INT64_MIN, 0, 0, NULL,
                              INT64_MIN, INT64_MIN));
    store_db_drop_mapped(db);
    snprintf(path, sizeof(path), "%s/iocd.mdb", sub("db"));
    before = mapped_kib(path);
    ASSERT_TRUE(before >= 0 && before < 256);
    /* The seal's end: packs the 40k series' index rows and postings (megabytes of pages). */
    ASSERT_OK(store_db_commit(db, NULL, 0, NULL, 0, 2, NULL, 0, NULL, 0, 0, 1, 0, NULL, INT64_MIN,
                              INT64_MIN));
    after = mapped_kib(path);
    ASSERT_TRUE(after >= 0);
    ASSERT_LT(after, 1024);
    /* ... and everything it packed reads back. */
    ASSERT_OK(store_db_postings(db, "ward", "w7", &ids, &n));
    ASSERT_EQ(n, (size_t)N / 32);
    iocd_free(ids);
    ASSERT_OK(store_db_postings(db, "device", "cam-039999", &ids, &n));
    ASSERT_EQ(n, 1);
    ASSERT_EQ(ids[0], (uint64_t)N);
    iocd_free(ids);
    store_db_close(db);
    iocd_free(keys);
    iocd_free(ser);
}

/* A cold start's new series, more than a commit writes postings for, are acknowledged
 * before all their postings are written (the rest go in the next commits, so one
 * acknowledgement does not wait for thousands); a reader asking right after the
 * acknowledgement still finds every series, and so does the next open. */
TEST(new_series_postings_spread_over_commits_and_readers_find_them_all)
{
    iocd_metric *commits =
        iocd_counter("iocd_group_commits_total", "Group commits that succeeded.");
    iocd_label l[3] = { L("__name__", "lamp_power_w"), L("device", ""), L("ward", "") };
    int64_t now = iocd_now_ms();
    char dev[16], ward[16];
    uint64_t *ids = NULL;
    char **vals = NULL;
    size_t i, n, pass;
    double c0;

    for (pass = 0; pass < 2; pass++) {
        store *st = open_at("spread", NULL);
        store_batch *b = NULL;
        if (pass == 0) {
            ASSERT_OK(store_batch_new(st, &b));
            for (i = 0; i < 5000; i++) {
                l[1].value_len = (size_t)snprintf(dev, sizeof(dev), "lamp-%05zu", i);
                l[1].value = dev;
                l[2].value_len = (size_t)snprintf(ward, sizeof(ward), "w%zu", i % 10);
                l[2].value = ward;
                add(b, l, 3, now, (double)i);
            }
            c0 = iocd_metric_value(commits);
            ASSERT_OK(store_batch_commit(b, NULL));
        }
        ASSERT_OK(store_postings(st, "__name__", "lamp_power_w", &ids, &n));
        ASSERT_EQ(n, 5000);
        iocd_free(ids);
        ASSERT_OK(store_postings(st, "ward", "w3", &ids, &n));
        ASSERT_EQ(n, 500);
        iocd_free(ids);
        ASSERT_OK(store_postings(st, "device", "lamp-04999", &ids, &n));
        ASSERT_EQ(n, 1);
        iocd_free(ids);
        ASSERT_OK(store_label_values(st, "device", &vals, &n));
        ASSERT_EQ(n, 5000);
        for (i = 0; i < n; i++)
            iocd_free(vals[i]);
        iocd_free(vals);
        if (pass == 0) {
            /* The acknowledgement's commit, then four of 1,024 postings each (the writer
             * counts a commit after it has woken the readers: waited for, not assumed). */
            int64_t deadline = iocd_mono_ns() + 10 * 1000000000LL;
            while (iocd_metric_value(commits) - c0 < 5 && iocd_mono_ns() < deadline)
                nanosleep(&(struct timespec){ 0, 1000000 }, NULL);
            ASSERT_GE(iocd_metric_value(commits) - c0, 5);
            ASSERT_EQ(iocd_metric_value(iocd_gauge("iocd_series_postings_waiting", "")), 0.0);
        }
        store_close(st);
    }
}

/* A crash between a series' commit and its postings' leaves the series without them: iocd
 * check says so without calling it a problem, and the next open writes them. */
TEST(series_without_postings_after_a_crash_get_them_at_open)
{
    enum { N = 3000 };
    uint8_t(*keys)[96] = iocd_calloc(N, sizeof(*keys));
    store_db_series *ser = iocd_calloc(N, sizeof(*ser));
    store *st = open_at("keys2", NULL);
    store_db *db = NULL;
    char errbuf[256];
    uint64_t *ids = NULL, n_problems = 0;
    size_t n;
    int problems = 0;

    ASSERT_TRUE(keys != NULL && ser != NULL);
    camera_keys(st, N, keys, ser);
    store_close(st);
    ASSERT_EQ(mkdir(sub("crashed"), 0700), 0);
    ASSERT_OK(store_db_open(sub("crashed"), 1ULL << 30, false, &db, errbuf, sizeof(errbuf)));
    /* The series' commit, and the first 1,000's postings; the crash before the rest. */
    ASSERT_OK(store_db_commit(db, ser, N, ser, 1000, 1, NULL, 0, NULL, 0, INT64_MIN, 0, 0, NULL,
                              INT64_MIN, INT64_MIN));
    store_db_close(db);
    ASSERT_OK(
        store_check(sub("crashed"), count_problem, &problems, &n_problems, errbuf, sizeof(errbuf)));
    ASSERT_EQ(problems, 0);
    ASSERT_EQ(n_problems, 0);
    st = open_at("crashed", NULL);
    ASSERT_OK(store_postings(st, "ward", "w7", &ids, &n));
    ASSERT_EQ(n, (size_t)(N / 32 + (7 < N % 32)));
    iocd_free(ids);
    ASSERT_OK(store_postings(st, "device", "cam-002999", &ids, &n));
    ASSERT_EQ(n, 1);
    ASSERT_EQ(ids[0], (uint64_t)N);
    iocd_free(ids);
    store_close(st); /* seals: the index and postings are packed */
    ASSERT_OK(
        store_check(sub("crashed"), count_problem, &problems, &n_problems, errbuf, sizeof(errbuf)));
    ASSERT_EQ(problems, 0);
    ASSERT_EQ(n_problems, 0);
    iocd_free(keys);
    iocd_free(ser);
}

/* Writes 200 commits (one WAL record each) of 5 series into one old period, then a sample
 * now that passes it: the seal. */
static void wal_write(store *st, int64_t t0)
{
    iocd_label l[2] = { L("__name__", "pump_on"), L("device", "p0") };
    char dev[16];
    store_batch *b = NULL;
    int c, k;

    for (c = 0; c < 200; c++) {
        ASSERT_OK(store_batch_new(st, &b));
        for (k = 0; k < 5; k++) {
            snprintf(dev, sizeof(dev), "p%d", k);
            l[1].value = dev;
            add(b, l, 2, t0 + c * 100, c * 10 + k);
        }
        ASSERT_OK(store_batch_commit(b, NULL));
    }
    ASSERT_OK(store_batch_new(st, &b));
    add(b, l, 2, iocd_now_ms(), 1);
    ASSERT_OK(store_batch_commit(b, NULL));
}

/* Every series p0..p4 has the 200 samples of wal_write exactly once. */
static void wal_verify(store *st, int64_t t0)
{
    uint64_t *ids = NULL;
    iocd_sample *s = NULL;
    size_t n, m, i, j;

    ASSERT_OK(store_series_all(st, &ids, &n));
    ASSERT_EQ(n, 5);
    for (i = 0; i < n; i++) {
        ASSERT_OK(store_read(st, ids[i], t0, t0 + 60000 - 1, &s, &m));
        ASSERT_EQ(m, 200);
        for (j = 0; j < m; j++) {
            ASSERT_EQ(s[j].t_ms, t0 + (int64_t)j * 100);
            ASSERT_EQ((int64_t)s[j].v % 10, (int64_t)s[0].v % 10);
            ASSERT_EQ((int64_t)s[j].v / 10, (int64_t)j);
        }
        iocd_free(s);
    }
    iocd_free(ids);
}

/* A finished seal deletes its WAL records a few at a time (here one per transaction, the
 * seal's own and then trim steps), and all of them go; a process killed while they go
 * leaves records of a sealed period, which recovery seals again: every sample once. */
TEST(a_seal_deletes_its_wal_in_steps_and_a_crash_between_loses_nothing)
{
    store_config cfg = { .chunk_ms = 60000, .seal_grace_ms = 1000, .wal_delete_bytes = 1 };
    int64_t t0 = (iocd_now_ms() - 10 * 60000) / 60000 * 60000;
    store_stats stats;
    store *st = open_at("trim", &cfg);
    pid_t child;
    int status, i;

    wal_write(st, t0);
    wait_sealed(st, t0 + 60000);
    for (i = 0; i < 2000; i++) { /* left: the record of the sample now */
        ASSERT_OK(store_stats_get(st, &stats));
        if (stats.wal_records == 1)
            break;
        nanosleep(&(struct timespec){ 0, 5000000 }, NULL);
    }
    ASSERT_EQ(stats.wal_records, 1);
    wal_verify(st, t0);
    store_close(st);

    child = fork();
    if (child == 0) {
        st = open_at("trim_crash", &cfg);
        wal_write(st, t0);
        wait_sealed(st, t0 + 60000);
        _exit(0); /* no close: deletion steps in progress */
    }
    ASSERT_EQ(waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    st = open_at("trim_crash", &cfg);
    wal_verify(st, t0);
    store_close(st);
    st = open_at("trim_crash", &cfg);
    wal_verify(st, t0);
    ASSERT_OK(store_stats_get(st, &stats));
    ASSERT_EQ(stats.head_samples, 0);
    store_close(st);
}

/* A seal keeping pace with the samples goes a few series per transaction, each riding in a
 * writer's group commit, so acknowledgements never wait behind a large one; a seal that is
 * behind (most of the next period has arrived) goes many series at a time. Both keep every
 * sample. */
TEST(a_seal_keeping_pace_goes_in_small_steps_and_one_behind_in_large_ones)
{
    store_config cfg = { .chunk_ms = 60000, .seal_grace_ms = 1000 };
    int64_t t0 = (iocd_now_ms() - 10 * 60000) / 60000 * 60000;
    iocd_metric *commits =
        iocd_counter("iocd_group_commits_total", "Group commits that succeeded.");
    iocd_label l[2] = { L("__name__", "lamp_power_w"), L("device", "d0000") };
    iocd_label tick[1] = { L("__name__", "tick") };
    char dev[16];
    uint64_t *ids = NULL;
    iocd_sample *s = NULL;
    size_t n, m, i;
    int pass;

    for (pass = 0; pass < 2; pass++) {
        /* The newest sample is just past the grace (nothing of the next period has arrived
         * yet), or three quarters into the next period. */
        int64_t newest = t0 + 60000 + 1000 + (pass == 0 ? 0 : 45000);
        store *st = open_at(pass == 0 ? "pace" : "behind", &cfg);
        store_batch *b = NULL;
        double c0, steps;

        ASSERT_OK(store_batch_new(st, &b));
        for (i = 0; i < 1000; i++) {
            l[1].value_len = (size_t)snprintf(dev, sizeof(dev), "d%04zu", i);
            l[1].value = dev;
            add(b, l, 2, t0 + 500, (double)i);
        }
        add(b, tick, 1, newest, 1);
        c0 = iocd_metric_value(commits);
        ASSERT_OK(store_batch_commit(b, NULL));
        wait_sealed(st, t0 + 60000);
        steps = iocd_metric_value(commits) - c0 - 1;
        if (pass == 0)
            ASSERT_GE(steps, 15); /* 64 series each */
        else
            ASSERT_LE(steps, 4); /* 1,024 each: one, and maybe a compaction's look */
        ASSERT_OK(store_series_all(st, &ids, &n));
        ASSERT_EQ(n, 1001);
        for (i = 0; i < n; i++) {
            ASSERT_OK(store_read(st, ids[i], t0, t0 + 60000 - 1, &s, &m));
            ASSERT_EQ(m, i + 1 < n ? 1 : 0); /* tick's series is the last one created */
            iocd_free(s);
            s = NULL;
        }
        iocd_free(ids);
        ids = NULL;
        store_close(st);
    }
}

TEST(series_index_pages_are_filled)
{
    char path[600], metric[32], value[801];
    iocd_label l[2] = { { "__name__", 8, metric, 0 }, { "device", 6, value, 800 } };
    uint64_t x = 88172645463325252ULL, bytes = 0;
    store_batch *b = NULL;
    store *st = open_at("fill", NULL);
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    MDB_cursor *cur = NULL;
    MDB_dbi dbi;
    MDB_stat ms;
    MDB_val k, v;
    size_t i, j;
    int rc;

    ASSERT_OK(store_batch_new(st, &b));
    for (i = 0; i < 300; i++) {
        l[0].value_len = (size_t)snprintf(metric, sizeof(metric), "m%03zu", i);
        for (j = 0; j < 800; j++) { /* printable noise: the record stays ~700 bytes packed */
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            value[j] = (char)('!' + x % 90);
        }
        add(b, l, 2, iocd_now_ms(), (double)i);
    }
    ASSERT_OK(store_batch_commit(b, NULL));
    store_close(st);

    snprintf(path, sizeof(path), "%s/iocd.mdb", sub("fill"));
    ASSERT_EQ(mdb_env_create(&env), 0);
    ASSERT_EQ(mdb_env_set_maxdbs(env, 32), 0);
    ASSERT_EQ(mdb_env_open(env, path, MDB_NOSUBDIR | MDB_RDONLY, 0640), 0);
    ASSERT_EQ(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
    ASSERT_EQ(mdb_dbi_open(txn, "series_packed", 0, &dbi), 0);
    ASSERT_EQ(mdb_stat(txn, dbi, &ms), 0);
    ASSERT_EQ(ms.ms_entries, 300);
    ASSERT_EQ(mdb_cursor_open(txn, dbi, &cur), 0);
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT))
        bytes += (8 + k.mv_size + v.mv_size + 1) / 2 * 2 + 2; /* node, its offset */
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    mdb_env_close(env);
    ASSERT_EQ(ms.ms_overflow_pages, 0);
    ASSERT_GT(bytes, 300 * 500); /* records as large as meant */
    ASSERT_LE(ms.ms_leaf_pages * (ms.ms_psize - 16) * 8 / 10, bytes); /* 80 % full or more */
}

TEST(older_formats_are_upgraded)
{
    old_store_is_upgraded("data2", "iocd-store-2");
    old_store_is_upgraded("data3", "iocd-store-3");
}

TEST(rollups_match_the_raw_samples)
{
    store_config cfg = { .chunk_ms = 600000, .seal_grace_ms = 1000 };
    store *st = open_at("data", &cfg);
    store_batch *b = NULL;
    int64_t t0 = (iocd_now_ms() - 7200000) / 3600000 * 3600000, t;
    iocd_label l[] = { L("__name__", "traffic_avg_speed_kmh"), L("device", "tc-1") };
    uint64_t stale = 0x7ff0000000000002ULL;
    double sv;
    store_rollup *r = NULL;
    uint64_t *ids = NULL;
    size_t n, i, j;

    memcpy(&sv, &stale, 8);
    ASSERT_OK(store_batch_new(st, &b));
    for (t = t0; t < t0 + 3600000 + 600000; t += 10000) /* 70 min at 10 s */
        add(b, l, 2, t, (double)((t - t0) / 10000 % 37));
    add(b, l, 2, t0 + 5000, sv); /* a staleness marker: not counted */
    ASSERT_OK(store_batch_commit(b, NULL));
    wait_sealed(st, t0 + 3600000);
    ASSERT_OK(store_series_all(st, &ids, &n));
    ASSERT_OK(store_read_rollup(st, ids[0], STORE_ROLLUP_5M, t0, t0 + 3600000 - 1, &r, &n));
    ASSERT_EQ(n, 12);
    for (i = 0; i < n; i++) {
        double mn = 1e300, mx = -1e300, sum = 0, last = 0;
        for (j = 0; j < 30; j++) {
            double v = (double)((i * 300000 + j * 10000) / 10000 % 37);
            mn = v < mn ? v : mn;
            mx = v > mx ? v : mx;
            sum += v;
            last = v;
        }
        ASSERT_EQ(r[i].t_ms, t0 + (int64_t)i * 300000);
        ASSERT_DBL_EQ(r[i].count, 30, 0);
        ASSERT_DBL_EQ(r[i].min, mn, 0);
        ASSERT_DBL_EQ(r[i].max, mx, 0);
        ASSERT_DBL_EQ(r[i].sum, sum, 1e-9);
        ASSERT_DBL_EQ(r[i].last, last, 0);
    }
    iocd_free(r);
    /* The hour bucket combines six 10-minute periods. */
    ASSERT_OK(store_read_rollup(st, ids[0], STORE_ROLLUP_1H, t0, t0, &r, &n));
    ASSERT_EQ(n, 1);
    ASSERT_DBL_EQ(r[0].count, 360, 0);
    ASSERT_EQ(r[0].last_t_ms, t0 + 3600000 - 10000);
    iocd_free(r);
    ASSERT_ERR(store_read_rollup(st, ids[0], 60000, t0, t0, &r, &n), IOCD_EINVAL);
    iocd_free(ids);
    store_close(st);
}

/* ---- Small durable records ------------------------------------------------------------- */

typedef struct kv_seen {
    char keys[8][32];
    char vals[8][32];
    size_t n;
} kv_seen;

static iocd_err kv_collect(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    kv_seen *s = ud;

    if (s->n < 8) {
        snprintf(s->keys[s->n], sizeof(s->keys[0]), "%.*s", (int)klen, (const char *)key);
        snprintf(s->vals[s->n], sizeof(s->vals[0]), "%.*s", (int)vlen, (const char *)val);
        s->n++;
    }
    return IOCD_OK;
}

TEST(kv_records_are_durable_per_table_and_ordered)
{
    store *st = open_at("kv", NULL);
    store_kv_op ops[] = { { "incidents", "b", 1, "two", 3 },
                          { "incidents", "a", 1, "one", 3 },
                          { "alerts", "a", 1, "other table", 11 } };
    kv_seen seen;
    char big[600];

    ASSERT_OK(store_kv_write(st, ops, 3));
    ASSERT_OK(store_kv_put(st, "incidents", "c", 1, "three", 5));
    ASSERT_OK(store_kv_put(st, "incidents", "b", 1, "TWO", 3)); /* replaces */
    ASSERT_OK(store_kv_del(st, "incidents", "c", 1));
    ASSERT_OK(store_kv_del(st, "incidents", "nope", 4)); /* deleting nothing is fine */
    memset(big, 'k', sizeof(big));
    ASSERT_ERR(store_kv_put(st, "incidents", big, sizeof(big), "v", 1), IOCD_EINVAL);
    ASSERT_ERR(store_kv_put(st, "incidents", "", 0, "v", 1), IOCD_EINVAL);
    store_close(st);
    st = open_at("kv", NULL); /* survives a reopen */
    memset(&seen, 0, sizeof(seen));
    ASSERT_OK(store_kv_each(st, "incidents", kv_collect, &seen));
    ASSERT_EQ(seen.n, 2);
    ASSERT_STR_EQ(seen.keys[0], "a");
    ASSERT_STR_EQ(seen.vals[0], "one");
    ASSERT_STR_EQ(seen.keys[1], "b");
    ASSERT_STR_EQ(seen.vals[1], "TWO");
    memset(&seen, 0, sizeof(seen));
    ASSERT_OK(store_kv_each(st, "alerts", kv_collect, &seen));
    ASSERT_EQ(seen.n, 1);
    ASSERT_STR_EQ(seen.vals[0], "other table");
    store_close(st);
}
