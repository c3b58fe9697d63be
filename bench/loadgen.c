/* bench/loadgen.c - replays realistic IOC telemetry at full speed (or a set rate) into iocd,
 * or any InfluxDB-line-protocol server, and prints what it measured.
 * The whole workload is generated first (time-major: every device at t0, then t1, ...), so
 * the replay measures the server, not the generator. A city's devices: cameras (fps,
 * bitrate_kbps, online), street lights (on, power_w, lux), traffic counters (vehicles_total,
 * avg_speed_kmh, occupancy_pct), water stations (pressure_bar, flow_m3h, level_m, pump_on);
 * values follow a daily shape in Asia/Ho_Chi_Minh time, with noise, rounded to what the
 * sensors send. One line per device and interval; a series is one field of one device.
 *
 *   loadgen [--url http://127.0.0.1:9470] [--mode http|tcp|remote-write] [--series 10000] [--points
 * 360]
 *           [--interval-ms 10000] [--conns 4] [--batch 5000] [--rate SAMPLES_PER_S]
 *           [--start-ms T] [--seed 1] [--token T] [--path P] [--ordered] [--lockstep]
 *           [--dry-run]
 * With --rate, each connection sends at rate/conns, and the connections start evenly spread
 * over one batch's period, as independent gateways do; --lockstep starts them together, so
 * all of them send at the same moments (a burst of conns batches each period).
 * --ordered gives each connection its own devices (device % conns), sent in time order, so
 * every series arrives in order, as a Prometheus agent's remote-write shards send it (a
 * Prometheus server refuses a whole request holding one out-of-order sample).
 * --path replaces the request path and query (default /write?precision=ms, or /api/v1/write
 * with --mode remote-write), e.g. /write?db=bench&precision=ms for InfluxDB 1.x. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <snappy-c.h>

#include "sim/sim.h"

/* The city's devices and what they report come from sim/ (shared with `iocd simulate`). */

/* ---- The workload ------------------------------------------------------------------------ */

typedef struct batch {
    char *data;
    size_t len;
    uint64_t samples, lines;
    int shard; /* with --ordered, the one connection that sends it */
} batch;

typedef struct work {
    batch *batches;
    size_t n;
    uint64_t samples, lines, bytes;
} work;

static void generate(work *w, uint64_t series, int points, int64_t interval, int64_t start,
                     size_t per_batch, uint64_t seed, int shards)
{
    uint64_t devices = 0, fields = 0, d;
    size_t cap = 0, *cur = calloc((size_t)shards, sizeof(size_t));
    char line[512];
    int p;

    while (fields < series)
        fields += (uint64_t)sim_fields(sim_kind_of(devices++));
    memset(w, 0, sizeof(*w));
    for (p = 0; p < points; p++) {
        int64_t t = start + (int64_t)p * interval;
        for (d = 0; d < devices; d++) {
            sim_kind k = sim_kind_of(d);
            int shard = (int)(d % (uint64_t)shards);
            int len = sim_line(line, sizeof(line), k, d, sim_ward_of(d), t, seed, SIM_OK);
            batch *b;
            if (cur[shard] == 0 || w->batches[cur[shard] - 1].lines == per_batch) {
                if (w->n == cap) {
                    cap = cap != 0 ? cap * 2 : 1024;
                    w->batches = realloc(w->batches, cap * sizeof(*w->batches));
                }
                b = &w->batches[w->n++];
                memset(b, 0, sizeof(*b));
                b->data = malloc(per_batch * 160 + 512);
                b->shard = shard;
                cur[shard] = w->n;
            }
            b = &w->batches[cur[shard] - 1];
            memcpy(b->data + b->len, line, (size_t)len);
            b->len += (size_t)len;
            b->samples += (uint64_t)sim_fields(k);
            b->lines++;
            w->samples += (uint64_t)sim_fields(k);
            w->lines++;
            w->bytes += (uint64_t)len;
        }
    }
    free(cur);
}

/* ---- Remote write ------------------------------------------------------------------------ */

static size_t pb_varint(uint8_t *p, uint64_t v)
{
    size_t n = 0;

    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

static size_t pb_bytes(uint8_t *p, int field, const void *data, size_t len)
{
    size_t n = pb_varint(p, (uint64_t)field << 3 | 2);

    n += pb_varint(p + n, len);
    memcpy(p + n, data, len);
    return n + len;
}

static size_t pb_label(uint8_t *p, const char *k, size_t kl, const char *v, size_t vl)
{
    uint8_t tmp[512];
    size_t n = pb_bytes(tmp, 1, k, kl);

    n += pb_bytes(tmp + n, 2, v, vl);
    return pb_bytes(p, 1, tmp, n);
}

typedef struct tag_ref {
    const char *k, *v, *e; /* key, value (after '='), end of the value */
} tag_ref;

static int cmp_tag(const void *a, const void *b)
{
    const tag_ref *x = a, *y = b;
    size_t xl = (size_t)(x->v - 1 - x->k), yl = (size_t)(y->v - 1 - y->k);
    int c = memcmp(x->k, y->k, xl < yl ? xl : yl);

    return c != 0 ? c : (xl > yl) - (xl < yl);
}

/* Re-encodes a batch of the generator's own lines ("m,ward=..,domain=..,device=.. f=v,... t")
 * as a snappy-compressed WriteRequest: one TimeSeries per field, as a Prometheus agent sends
 * a scrape. */
static void to_remote_write(batch *b)
{
    size_t cap = b->len * 6 + 1024, n = 0, zlen;
    uint8_t *pb = malloc(cap), ts[2048];
    char *line = b->data, *end = b->data + b->len, *z;

    while (line < end) {
        char *nl = memchr(line, '\n', (size_t)(end - line)), *sp1, *sp2, *f, *comma;
        int64_t t;
        size_t meas_len;
        sp1 = memchr(line, ' ', (size_t)(nl - line));
        sp2 = memchr(sp1 + 1, ' ', (size_t)(nl - sp1 - 1));
        t = atoll(sp2 + 1);
        comma = memchr(line, ',', (size_t)(sp1 - line));
        meas_len = (size_t)(comma - line);
        for (f = sp1 + 1; f < sp2;) {
            char *eq = memchr(f, '=', (size_t)(sp2 - f)), *fe = memchr(f, ',', (size_t)(sp2 - f));
            char name[128], *tag;
            tag_ref tags[16];
            size_t nt, j;
            double v;
            size_t tn = 0, nl2;
            uint8_t smp[32];
            size_t sn = 0;
            if (fe == NULL)
                fe = sp2;
            nl2 = (size_t)snprintf(name, sizeof(name), "%.*s_%.*s", (int)meas_len, line,
                                   (int)(eq - f), f);
            v = strtod(eq + 1, NULL); /* "12i" parses as 12 */
            tn += pb_label(ts + tn, "__name__", 8, name, nl2);
            nt = 0;
            for (tag = comma + 1; tag < sp1 && nt < 16;) {
                char *te = memchr(tag, ',', (size_t)(sp1 - tag));
                if (te == NULL)
                    te = sp1;
                tags[nt].k = tag;
                tags[nt].v = (const char *)memchr(tag, '=', (size_t)(te - tag)) + 1;
                tags[nt++].e = te;
                tag = te + 1;
            }
            /* The remote-write spec wants labels sorted by name ("__name__" sorts first). */
            qsort(tags, nt, sizeof(tags[0]), cmp_tag);
            for (j = 0; j < nt; j++)
                tn += pb_label(ts + tn, tags[j].k, (size_t)(tags[j].v - 1 - tags[j].k), tags[j].v,
                               (size_t)(tags[j].e - tags[j].v));
            sn += pb_varint(smp + sn, 1 << 3 | 1);
            memcpy(smp + sn, &v, 8);
            sn += 8;
            sn += pb_varint(smp + sn, 2 << 3);
            sn += pb_varint(smp + sn, (uint64_t)t);
            tn += pb_bytes(ts + tn, 2, smp, sn);
            n += pb_bytes(pb + n, 1, ts, tn);
            f = fe + 1;
        }
        line = nl + 1;
    }
    zlen = snappy_max_compressed_length(n);
    z = malloc(zlen);
    snappy_compress((const char *)pb, n, z, &zlen);
    free(pb);
    free(b->data);
    b->data = z;
    b->len = zlen;
}

/* ---- Replay ------------------------------------------------------------------------------ */

typedef struct shared {
    work *w;
    const char *host;
    int port;
    bool tcp, remote_write, ordered, lockstep;
    const char *token;
    const char *path; /* request path and query */
    double rate;      /* samples/s in total; 0 = as fast as possible */
    int conns;
    atomic_size_t next;
    atomic_uint_fast64_t errors, requests;
    double *lat_ms; /* per batch */
    char first_error[512];
    pthread_mutex_t mu;
} shared;

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int connect_to(const char *host, int port)
{
    struct sockaddr_in sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;

    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, host, &sa.sin_addr);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        perror("loadgen: connect");
        exit(1);
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

static bool send_all(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n <= 0)
            return false;
        p += n;
        len -= (size_t)n;
    }
    return true;
}

/* Reads one HTTP response; returns its status (0 on a broken connection). */
static int read_response(int fd, char *buf, size_t cap, char *body_out, size_t body_cap)
{
    size_t have = 0, need;
    char *hdr_end, *cl;
    long clen = 0;
    int status;

    for (;;) {
        ssize_t n = recv(fd, buf + have, cap - 1 - have, 0);
        if (n <= 0)
            return 0;
        have += (size_t)n;
        buf[have] = '\0';
        hdr_end = strstr(buf, "\r\n\r\n");
        if (hdr_end != NULL)
            break;
        if (have == cap - 1)
            return 0;
    }
    status = atoi(buf + 9);
    cl = strcasestr(buf, "Content-Length:");
    if (cl != NULL && cl < hdr_end)
        clen = atol(cl + 15);
    need = (size_t)(hdr_end + 4 - buf) + (size_t)clen;
    while (have < need && have < cap - 1) {
        ssize_t n = recv(fd, buf + have, cap - 1 - have, 0);
        if (n <= 0)
            return 0;
        have += (size_t)n;
    }
    buf[have] = '\0';
    snprintf(body_out, body_cap, "%s", hdr_end + 4);
    return status;
}

typedef struct conn_arg {
    shared *sh;
    int k; /* this connection's number */
} conn_arg;

/* The next batch this connection sends: any not yet taken, or with --ordered the next of
 * its own shard, so each series goes through one connection in time order. */
static size_t next_batch(shared *sh, int k, size_t after)
{
    size_t i;

    if (!sh->ordered)
        return atomic_fetch_add(&sh->next, 1);
    for (i = after; i < sh->w->n && sh->w->batches[i].shard != k; i++)
        ;
    return i;
}

static void *replay(void *arg)
{
    shared *sh = ((conn_arg *)arg)->sh;
    int k = ((conn_arg *)arg)->k;
    char head[512], resp[65536], body[512];
    int fd = connect_to(sh->host, sh->port);
    double t_next = now_s();
    size_t i;

    if (sh->rate > 0 && !sh->lockstep && sh->w->n > 0) /* a fraction of one batch's period */
        t_next +=
            (double)k / sh->conns * (double)sh->w->batches[0].samples / (sh->rate / sh->conns);
    for (i = next_batch(sh, k, 0); i < sh->w->n; i = next_batch(sh, k, i + 1)) {
        batch *b = &sh->w->batches[i];
        double t0;
        int status = 204;
        if (sh->rate > 0) {
            double wait = t_next - now_s();
            if (wait > 0)
                nanosleep(&(struct timespec){ (time_t)wait, (long)((wait - floor(wait)) * 1e9) },
                          NULL);
            t_next += (double)b->samples / (sh->rate / sh->conns);
        }
        t0 = now_s();
        if (sh->tcp) {
            if (!send_all(fd, b->data, b->len))
                status = 0;
        } else {
            int hl = snprintf(head, sizeof(head),
                              sh->remote_write
                                  ? "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: "
                                    "application/x-protobuf\r\nContent-Encoding: snappy\r\n"
                                    "X-Prometheus-Remote-Write-Version: 0.1.0\r\nContent-Length: "
                                    "%zu\r\n%s%s%s\r\n"
                                  : "POST %s HTTP/1.1\r\nHost: %s\r\n"
                                    "Content-Type: text/plain\r\nContent-Length: %zu\r\n%s%s%s\r\n",
                              sh->path, sh->host, b->len, sh->token ? "Authorization: Bearer " : "",
                              sh->token ? sh->token : "", sh->token ? "\r\n" : "");
            if (!send_all(fd, head, (size_t)hl) || !send_all(fd, b->data, b->len))
                status = 0;
            else
                status = read_response(fd, resp, sizeof(resp), body, sizeof(body));
        }
        sh->lat_ms[i] = (now_s() - t0) * 1000.0;
        atomic_fetch_add(&sh->requests, 1);
        if (status != 204) {
            atomic_fetch_add(&sh->errors, 1);
            pthread_mutex_lock(&sh->mu);
            if (sh->first_error[0] == '\0')
                snprintf(sh->first_error, sizeof(sh->first_error), "status %d: %.400s", status,
                         body);
            pthread_mutex_unlock(&sh->mu);
            if (status == 0) {
                close(fd);
                fd = connect_to(sh->host, sh->port);
            }
        }
    }
    close(fd);
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

static double pct(const double *sorted, size_t n, double p)
{
    size_t i = (size_t)ceil(p / 100.0 * (double)n);

    return n == 0 ? 0 : sorted[i == 0 ? 0 : i - 1];
}

int main(int argc, char **argv)
{
    const char *url = "http://127.0.0.1:9470", *mode = "http", *token = NULL, *path = NULL;
    uint64_t series = 10000, seed = 1;
    int points = 360, conns = 4, i;
    int64_t interval = 10000, start = 0;
    size_t per_batch = 5000;
    double rate = 0, t0, t1, gen_s, elapsed;
    bool dry = false, ordered = false, lockstep = false;
    char host[64] = "127.0.0.1";
    int port = 9470;
    pthread_t *th;
    conn_arg *args;
    shared sh;
    work w;

    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : "";
        if (strcmp(a, "--dry-run") == 0) {
            dry = true;
            continue;
        }
        if (strcmp(a, "--ordered") == 0) {
            ordered = true;
            continue;
        }
        if (strcmp(a, "--lockstep") == 0) {
            lockstep = true;
            continue;
        }
        if (strcmp(a, "--url") == 0)
            url = v;
        else if (strcmp(a, "--mode") == 0)
            mode = v;
        else if (strcmp(a, "--series") == 0)
            series = strtoull(v, NULL, 10);
        else if (strcmp(a, "--points") == 0)
            points = atoi(v);
        else if (strcmp(a, "--interval-ms") == 0)
            interval = atoll(v);
        else if (strcmp(a, "--conns") == 0)
            conns = atoi(v);
        else if (strcmp(a, "--batch") == 0)
            per_batch = (size_t)atol(v);
        else if (strcmp(a, "--rate") == 0)
            rate = atof(v);
        else if (strcmp(a, "--start-ms") == 0)
            start = atoll(v);
        else if (strcmp(a, "--seed") == 0)
            seed = strtoull(v, NULL, 10);
        else if (strcmp(a, "--token") == 0)
            token = v;
        else if (strcmp(a, "--path") == 0)
            path = v;
        else {
            fprintf(stderr,
                    "loadgen: unknown flag %s (see the comment at the top of "
                    "bench/loadgen.c)\n",
                    a);
            return 2;
        }
        i++;
    }
    if (sscanf(url, "http://%63[^:]:%d", host, &port) < 1) {
        fprintf(stderr, "loadgen: --url must be http://HOST:PORT\n");
        return 2;
    }
    if (path != NULL && (path[0] != '/' || strlen(path) > 200)) {
        fprintf(stderr, "loadgen: --path must start with / and be at most 200 bytes\n");
        return 2;
    }
    if (strcmp(mode, "tcp") == 0 && strstr(url, ":9470") != NULL)
        port = 8094;
    if (start == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        start = ((int64_t)ts.tv_sec * 1000 - (int64_t)points * interval) / interval * interval;
    }
    t0 = now_s();
    if (conns < 1) {
        fprintf(stderr, "loadgen: --conns must be at least 1\n");
        return 2;
    }
    generate(&w, series, points, interval, start, per_batch, seed, ordered ? conns : 1);
    if (strcmp(mode, "remote-write") == 0) {
        size_t k;
        w.bytes = 0;
        for (k = 0; k < w.n; k++) {
            to_remote_write(&w.batches[k]);
            w.bytes += w.batches[k].len;
        }
    } else if (strcmp(mode, "http") != 0 && strcmp(mode, "tcp") != 0) {
        fprintf(stderr, "loadgen: --mode must be http, tcp or remote-write\n");
        return 2;
    }
    gen_s = now_s() - t0;
    printf("generated_samples %llu\ngenerated_lines %llu\ngenerated_bytes %llu\n"
           "generate_seconds %.3f\ngenerate_samples_per_s %.0f\nbatches %zu\n",
           (unsigned long long)w.samples, (unsigned long long)w.lines, (unsigned long long)w.bytes,
           gen_s, (double)w.samples / gen_s, w.n);
    if (dry)
        return 0;
    memset(&sh, 0, sizeof(sh));
    sh.w = &w;
    sh.host = host;
    sh.port = port;
    sh.tcp = strcmp(mode, "tcp") == 0;
    sh.remote_write = strcmp(mode, "remote-write") == 0;
    sh.ordered = ordered;
    sh.lockstep = lockstep;
    sh.token = token;
    sh.path = path != NULL ? path : sh.remote_write ? "/api/v1/write" : "/write?precision=ms";
    sh.rate = rate;
    sh.conns = conns;
    sh.lat_ms = calloc(w.n, sizeof(double));
    pthread_mutex_init(&sh.mu, NULL);
    th = calloc((size_t)conns, sizeof(*th));
    args = calloc((size_t)conns, sizeof(*args));
    t0 = now_s();
    for (i = 0; i < conns; i++) {
        args[i] = (conn_arg){ &sh, i };
        pthread_create(&th[i], NULL, replay, &args[i]);
    }
    for (i = 0; i < conns; i++)
        pthread_join(th[i], NULL);
    t1 = now_s();
    elapsed = t1 - t0;
    qsort(sh.lat_ms, w.n, sizeof(double), cmp_double);
    printf("mode %s%s\nconns %d\nbatch_lines %zu\nelapsed_seconds %.3f\nsamples_per_s %.0f\n"
           "requests %llu\nerrors %llu\nlatency_p50_ms %.2f\nlatency_p90_ms %.2f\n"
           "latency_p99_ms %.2f\nlatency_max_ms %.2f\n",
           mode, ordered ? " ordered" : "", conns, per_batch, elapsed, (double)w.samples / elapsed,
           (unsigned long long)atomic_load(&sh.requests),
           (unsigned long long)atomic_load(&sh.errors), pct(sh.lat_ms, w.n, 50),
           pct(sh.lat_ms, w.n, 90), pct(sh.lat_ms, w.n, 99), pct(sh.lat_ms, w.n, 100));
    if (sh.first_error[0] != '\0')
        printf("first_error %s\n", sh.first_error);
    return atomic_load(&sh.errors) == 0 ? 0 : 1;
}
