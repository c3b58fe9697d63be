/* cmd/simulate.c - `iocd simulate`: a live demo city feeding an iocd at real-time pace. Every
 * --interval it sends what each device reports (sim/, the same model as bench/loadgen) as
 * line protocol over HTTP, and at a steady pace it injects a fault that lasts a few minutes:
 * a drain rising, a ward losing power (its lamps and cameras go dark with it), a camera
 * going dark, a junction jamming, a water main bursting, a lamp failing. The first faults
 * come early, so the example rules open an incident well within the first minute. */
#include "cmd/cmd.h"

#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/common.h"
#include "query/query.h"
#include "sim/sim.h"

#define FAULTS_MAX 64

typedef struct dev {
    sim_kind kind;
    int ward;
    uint64_t id;
} dev;

typedef struct fault {
    sim_fault what;
    uint64_t dev; /* or, for a power cut, the ward */
    int ward;
    int64_t until_ms;
} fault;

static volatile sig_atomic_t stop_flag;

static void on_stop(int sig)
{
    (void)sig;
    stop_flag = 1;
}

void cmd_simulate_usage(void)
{
    printf("Usage: iocd simulate [--url http://127.0.0.1:9470] [--devices 2000] [--wards 32]\n"
           "                     [--interval 10s] [--fault-every 20s] [--seed 1] [--token T]\n"
           "                     [--backfill 0s]\n"
           "\n"
           "Runs a live demo city (cameras, street lights, traffic counters, water stations,\n"
           "drains and ward power feeds across the wards of Thai Nguyen) at real-time pace,\n"
           "sending line protocol to iocd's /write every --interval, and injects a fault\n"
           "every --fault-every (a drain rising, a ward power cut, a dark camera, a jammed\n"
           "junction, a burst main, a failing lamp), each lasting a few minutes. With the\n"
           "example rules (--rules examples/rules) the first incident opens within a minute.\n"
           "--backfill 1h first sends the last hour of the healthy city (a point every 30 s),\n"
           "so charts have history from the start.\n"
           "Stop with Ctrl-C.\n");
}

/* host, port and path prefix of an http:// URL. */
static bool parse_url(const char *url, char *host, size_t hcap, char *port, size_t pcap)
{
    const char *p, *colon, *slash;

    if (strncmp(url, "http://", 7) != 0)
        return false;
    p = url + 7;
    slash = strchr(p, '/');
    if (slash == NULL)
        slash = p + strlen(p);
    colon = memchr(p, ':', (size_t)(slash - p));
    if (colon == NULL)
        colon = slash;
    snprintf(host, hcap, "%.*s", (int)(colon - p), p);
    snprintf(port, pcap, "%.*s", colon < slash ? (int)(slash - colon - 1) : 2,
             colon < slash ? colon + 1 : "80");
    return host[0] != '\0';
}

/* One POST; returns the HTTP status, or -1 when the server cannot be reached. */
static int request(const char *host, const char *port, const char *token, const char *method,
                   const char *path, const char *type, const char *body, size_t len)
{
    struct addrinfo hints, *ai = NULL;
    char head[512], resp[64];
    int fd = -1, status = -1, n;
    size_t off = 0;

    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, port, &hints, &ai) != 0)
        return -1;
    fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
    if (fd < 0 || connect(fd, ai->ai_addr, ai->ai_addrlen) != 0)
        goto out;
    n = snprintf(head, sizeof(head),
                 "%s %s HTTP/1.1\r\nHost: %s:%s\r\nContent-Type: %s\r\n"
                 "Content-Length: %zu\r\n%s%s%sConnection: close\r\n\r\n",
                 method, path, host, port, type, len, token != NULL ? "Authorization: Bearer " : "",
                 token != NULL ? token : "", token != NULL ? "\r\n" : "");
    if (send(fd, head, (size_t)n, 0) != n)
        goto out;
    while (off < len) {
        ssize_t w = send(fd, body + off, len - off, 0);
        if (w <= 0)
            goto out;
        off += (size_t)w;
    }
    n = (int)recv(fd, resp, sizeof(resp) - 1, 0);
    if (n > 12) {
        resp[n] = '\0';
        status = atoi(resp + 9);
    }
out:
    if (fd >= 0)
        close(fd);
    freeaddrinfo(ai);
    return status;
}

static int post(const char *host, const char *port, const char *token, const char *body, size_t len)
{
    return request(host, port, token, "POST", "/write?precision=ms", "text/plain", body, len);
}

/* The demo city's devices for the registry (PUT /api/v1/devices, CSV): each ward a spot on a
 * 6 x 6 grid around the city's centre, its devices scattered around it, each with a street
 * address, so incidents say where to send the crew and the console can draw them. */
static void register_devices(const char *host, const char *port, const char *token, const dev *devs,
                             size_t n)
{
    static const char *const streets[] = {
        "Hoàng Văn Thụ",       "Lương Ngọc Quyến", "Quang Trung", "Phan Đình Phùng", "Bắc Kạn",
        "Cách Mạng Tháng Tám", "Lê Hữu Trác",      "Minh Cầu",    "Đội Cấn",         "Thống Nhất"
    };
    /* The wards' names as the city writes them (the labels are their ASCII slugs). */
    static const char *const ward_names[SIM_WARDS] = {
        "Phan Đình Phùng", "Hoàng Văn Thụ", "Trưng Vương", "Quang Trung", "Gia Sàng",   "Túc Duyên",
        "Đồng Quang",      "Quang Vinh",    "Tân Thịnh",   "Thịnh Đán",   "Tân Lập",    "Phú Xá",
        "Trung Thành",     "Tân Thành",     "Cam Giá",     "Hương Sơn",   "Tích Lương", "Tân Long",
        "Quán Triều",      "Đồng Bẩm",      "Chùa Hang",   "Phúc Hà",     "Phúc Xuân",  "Phúc Trìu",
        "Thịnh Đức",       "Tân Cương",     "Quyết Thắng", "Phúc Trí",    "Sơn Cẩm",    "Cao Ngạn",
        "Linh Sơn",        "Huống Thượng",
    };
    iocd_buf csv;
    size_t i;
    int status;

    iocd_buf_init(&csv, 0);
    (void)iocd_buf_puts(&csv, "device,kind,domain,ward,address,latitude,longitude\n");
    for (i = 0; i < n; i++) {
        uint64_t h = devs[i].id * 0x9E3779B97F4A7C15ULL;
        double lat = 21.56 + 0.012 * (devs[i].ward / 6) + (double)((h >> 20) % 1000) / 1e5 - 0.005;
        double lon = 105.81 + 0.014 * (devs[i].ward % 6) + (double)((h >> 40) % 1000) / 1e5 - 0.005;
        (void)iocd_buf_printf(&csv, "%s-%05llu,%s,%s,%s,\"Số %u %s, phường %s\",%.5f,%.5f\n",
                              sim_prefix(devs[i].kind), (unsigned long long)devs[i].id,
                              sim_measurement(devs[i].kind), sim_domain(devs[i].kind),
                              sim_ward(devs[i].ward), (unsigned)(1 + (h >> 8) % 300),
                              streets[(h >> 32) % IOCD_ARRAY_LEN(streets)],
                              ward_names[devs[i].ward % SIM_WARDS], lat, lon);
    }
    status = request(host, port, token, "PUT", "/api/v1/devices", "text/csv", csv.data, csv.len);
    if (status >= 200 && status <= 299)
        printf("simulate: %zu devices registered with their addresses and positions\n", n);
    else
        fprintf(stderr,
                "simulate: registering the devices answered %d; incidents will have no "
                "address\n",
                status);
    fflush(stdout);
    iocd_buf_fini(&csv);
}

static const char *fault_name(sim_fault f)
{
    switch (f) {
    case SIM_FAULT_DARK:
        return "goes dark";
    case SIM_FAULT_JAM:
        return "jams";
    case SIM_FAULT_PRESSURE:
        return "loses pressure (burst main)";
    case SIM_FAULT_FLOOD:
        return "rises towards overflow";
    case SIM_FAULT_POWER:
        return "loses power";
    case SIM_OK:
        break;
    }
    return "recovers";
}

static sim_fault fault_of(const fault *faults, size_t n, const dev *d, int64_t now)
{
    size_t i;

    for (i = 0; i < n; i++) {
        if (faults[i].until_ms <= now)
            continue;
        if (faults[i].what == SIM_FAULT_POWER && faults[i].ward == d->ward &&
            (d->kind == SIM_LIGHT || d->kind == SIM_CAMERA || d->kind == SIM_POWER))
            return SIM_FAULT_POWER;
        if (faults[i].what != SIM_FAULT_POWER && faults[i].dev == d->id)
            return faults[i].what;
    }
    return SIM_OK;
}

/* Sends the healthy city's last backfill_ms, a point every 30 s up to a minute ago, in bodies
 * of about 5,000 lines, with progress; 0 on success. */
static int backfill(const char *host, const char *port, const char *token, const char *url,
                    const dev *devs, size_t n_devs, uint64_t seed, int64_t backfill_ms)
{
    const int64_t step = 30000, now = iocd_now_ms();
    int64_t t, t0 = (now - backfill_ms) / step * step, t1 = now - 60000;
    size_t i, lines = 0, total = 0;
    int64_t started = iocd_mono_ns() / 1000000, last_report = started;
    iocd_buf body;
    char line[512];
    int rc = 0;

    printf("simulate: backfilling %llds of history, a point every 30 s\n",
           (long long)(backfill_ms / 1000));
    fflush(stdout);
    iocd_buf_init(&body, 0);
    for (t = t0; t <= t1 && rc == 0 && !stop_flag; t += step) {
        for (i = 0; i < n_devs; i++) {
            int len = sim_line(line, sizeof(line), devs[i].kind, devs[i].id, devs[i].ward, t, seed,
                               SIM_OK);
            if (len > 0 && iocd_buf_append(&body, line, (size_t)len) == IOCD_OK)
                lines++;
        }
        if (lines >= 5000 || t + step > t1) {
            int status = post(host, port, token, body.data, body.len);
            if (status != 204) {
                fprintf(stderr, "simulate: backfill: %s answered %d (%s)\n", url, status,
                        status < 0 ? strerror(errno) : "see iocd's log");
                rc = 1;
            }
            total += lines;
            lines = 0;
            iocd_buf_reset(&body);
        }
        if (iocd_mono_ns() / 1000000 - last_report >= 2000) {
            last_report = iocd_mono_ns() / 1000000;
            printf("simulate: backfill %lld%%\n", (long long)(100 * (t - t0) / (t1 - t0 + 1)));
            fflush(stdout);
        }
    }
    iocd_buf_fini(&body);
    if (rc == 0)
        printf("simulate: backfilled %zu lines in %.1f s\n", total,
               (double)(iocd_mono_ns() / 1000000 - started) / 1000.0);
    fflush(stdout);
    return rc;
}

int cmd_simulate(int argc, char **argv)
{
    const char *url = "http://127.0.0.1:9470", *token = NULL;
    int64_t interval_ms = 10000, fault_ms = 20000, backfill_ms = 0, next_tick, next_fault, first;
    long devices = 2000, n_wards = SIM_WARDS, seed = 1;
    char host[256], port[16];
    dev *devs = NULL;
    size_t n_devs = 0, n_faults = 0, i, cycle = 0;
    fault faults[FAULTS_MAX];
    iocd_buf body;
    uint64_t rng = 88172645463325252ULL;
    int k;

    for (k = 0; k < argc; k++) {
        const char *a = argv[k], *v = k + 1 < argc ? argv[k + 1] : NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            cmd_simulate_usage();
            return 0;
        }
        if (v == NULL) {
            fprintf(stderr, "iocd simulate: %s needs a value\n", a);
            return 2;
        }
        k++;
        if (strcmp(a, "--url") == 0)
            url = v;
        else if (strcmp(a, "--token") == 0)
            token = v;
        else if (strcmp(a, "--devices") == 0)
            devices = atol(v);
        else if (strcmp(a, "--wards") == 0)
            n_wards = atol(v);
        else if (strcmp(a, "--seed") == 0)
            seed = atol(v);
        else if (strcmp(a, "--interval") == 0 &&
                 query_duration_parse(v, false, &interval_ms) == IOCD_OK)
            ;
        else if (strcmp(a, "--backfill") == 0 &&
                 query_duration_parse(v, false, &backfill_ms) == IOCD_OK && backfill_ms >= 0 &&
                 backfill_ms <= 7LL * 86400000)
            ;
        else if (strcmp(a, "--fault-every") == 0 &&
                 query_duration_parse(v, false, &fault_ms) == IOCD_OK)
            ;
        else {
            fprintf(stderr, "iocd simulate: bad flag or value: %s %s (see --help)\n", a, v);
            return 2;
        }
    }
    if (!parse_url(url, host, sizeof(host), port, sizeof(port)) || devices < 1 ||
        devices > 5000000 || n_wards < 1 || n_wards > SIM_WARDS || interval_ms < 100 ||
        fault_ms < 1000) {
        fprintf(stderr,
                "iocd simulate: want an http:// URL, 1..5000000 devices, 1..%d wards, "
                "--interval >= 100ms, --fault-every >= 1s\n",
                SIM_WARDS);
        return 2;
    }
    devs = calloc((size_t)devices + (size_t)n_wards * 3, sizeof(*devs));
    if (devs == NULL)
        return 1;
    for (i = 0; i < (size_t)devices; i++)
        devs[n_devs++] = (dev){ sim_kind_of(i), sim_ward_of(i) % (int)n_wards, i };
    for (k = 0; k < n_wards; k++) { /* per ward: a substation feed and two drains */
        devs[n_devs++] = (dev){ SIM_POWER, k, 900000 + (uint64_t)k };
        devs[n_devs++] = (dev){ SIM_DRAIN, k, 910000 + 2 * (uint64_t)k };
        devs[n_devs++] = (dev){ SIM_DRAIN, k, 910001 + 2 * (uint64_t)k };
    }
    signal(SIGINT, on_stop);
    signal(SIGTERM, on_stop);
    iocd_buf_init(&body, 0);
    printf("simulate: %zu devices in %ld wards -> %s every %llds, a fault every %llds\n", n_devs,
           n_wards, url, (long long)(interval_ms / 1000), (long long)(fault_ms / 1000));
    fflush(stdout);
    register_devices(host, port, token, devs, n_devs);
    if (backfill_ms > 0 &&
        backfill(host, port, token, url, devs, n_devs, (uint64_t)seed, backfill_ms) != 0) {
        iocd_buf_fini(&body);
        free(devs);
        return 1;
    }
    first = iocd_now_ms();
    next_tick = first;
    next_fault = first + 3000; /* the first fault comes early */
    while (!stop_flag) {
        int64_t now = iocd_now_ms();
        if (now >= next_fault) {
            /* Faults cycle through the kinds; each lasts 3 to 6 minutes. */
            static const sim_fault order[] = {
                SIM_FAULT_FLOOD, SIM_FAULT_POWER,    SIM_FAULT_DARK,
                SIM_FAULT_JAM,   SIM_FAULT_PRESSURE, SIM_FAULT_DARK
            };
            static const sim_kind target[] = { SIM_DRAIN,   SIM_POWER, SIM_CAMERA,
                                               SIM_TRAFFIC, SIM_WATER, SIM_LIGHT };
            size_t c = cycle++ % IOCD_ARRAY_LEN(order), tries;
            fault f;
            rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
            for (tries = 0, i = rng % n_devs; tries < n_devs && devs[i].kind != target[c]; tries++)
                i = (i + 1) % n_devs;
            f = (fault){ order[c], devs[i].id, devs[i].ward,
                         now + 180000 + (int64_t)(rng % 180000) };
            if (n_faults == FAULTS_MAX) { /* drop finished ones */
                size_t w = 0;
                for (i = 0; i < n_faults; i++)
                    if (faults[i].until_ms > now)
                        faults[w++] = faults[i];
                n_faults = w;
            }
            if (n_faults < FAULTS_MAX && tries < n_devs) {
                faults[n_faults++] = f;
                if (f.what == SIM_FAULT_POWER)
                    printf("fault: ward %s %s for %llds\n", sim_ward(f.ward), fault_name(f.what),
                           (long long)((f.until_ms - now) / 1000));
                else
                    printf("fault: %s %s-%05llu in %s %s for %llds\n", sim_domain(target[c]),
                           sim_prefix(target[c]), (unsigned long long)f.dev, sim_ward(f.ward),
                           fault_name(f.what), (long long)((f.until_ms - now) / 1000));
                fflush(stdout);
            }
            next_fault += fault_ms;
            if (cycle == 1)
                next_fault = now + 7000; /* the second one soon after */
        }
        if (now >= next_tick) {
            char line[512];
            int status;
            iocd_buf_reset(&body);
            for (i = 0; i < n_devs; i++) {
                int len = sim_line(line, sizeof(line), devs[i].kind, devs[i].id, devs[i].ward, now,
                                   (uint64_t)seed, fault_of(faults, n_faults, &devs[i], now));
                if (len > 0)
                    iocd_buf_append(&body, line, (size_t)len);
            }
            status = post(host, port, token, body.data, body.len);
            if (status != 204)
                fprintf(stderr, "simulate: %s answered %d (%s)\n", url, status,
                        status < 0 ? strerror(errno) : "see iocd's log");
            next_tick += interval_ms;
            if (next_tick < now)
                next_tick = now + interval_ms;
        }
        {
            struct timespec ts = { 0, 50000000 };
            nanosleep(&ts, NULL);
        }
    }
    printf("simulate: stopped\n");
    iocd_buf_fini(&body);
    free(devs);
    return 0;
}
