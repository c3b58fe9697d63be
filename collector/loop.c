/* collector/loop.c - the ingest event loop; the only file that sees libevent.
 * It owns the line-protocol listeners (TCP and UDP), the signal handlers and a self-pipe
 * that lets other threads stop the loop. TCP connections are read with plain read(2) into
 * a per-connection buffer (LIBRARIES.md: twice the line rate of bufferevents, whose reads
 * are capped at 4 KiB in libevent 2.1); complete lines go to the loop's line handler and a
 * partial last line is carried over to the next read.
 * Invariant: a connection is freed only from its own callback after it is unlinked, never
 * while another callback for it can run (single-threaded loop). */
#define _GNU_SOURCE /* accept4 */
#include "collector/collector_int.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#define TCP_CONN_MAX  4096
#define UDP_DGRAM_MAX 65536
#define READ_CHUNK    (256 * 1024)

typedef struct tcp_conn tcp_conn;

struct tcp_conn {
    col_loop *loop;
    int fd;
    struct event *ev;
    char *buf;
    size_t len, cap;
    bool discarding;  /* inside a line that went over line_max: drop to the next newline */
    uint64_t line_no; /* lines consumed so far on this connection */
    char peer[64];
    tcp_conn *prev, *next;
};

struct col_loop {
    const col_config *cfg;
    struct event_base *base;
    struct event *sig_term, *sig_int, *sig_hup, *wake_ev, *tcp_ev, *udp_ev;
    int tcp_fd, udp_fd, wake_rd, wake_wr;
    char tcp_addr[80], udp_addr[80];
    int stop_signal;
    col_reload_fn reload_fn;
    void *reload_ud;
    col_lines_fn lines_fn;
    void *lines_ud;
    tcp_conn *conns;
    size_t n_conns;
    char *udp_buf;
    iocd_metric *m_tcp_conns, *m_tcp_refused, *m_bytes_tcp, *m_bytes_udp, *m_too_long;
};

/* ---- Sockets --------------------------------------------------------------------------- */

static iocd_err sockaddr_from(const char *addr, struct sockaddr_storage *ss, socklen_t *len)
{
    char host[256];
    int port;
    iocd_err err = iocd_addr_split(addr, host, sizeof(host), &port);

    if (err != IOCD_OK)
        return err;
    memset(ss, 0, sizeof(*ss));
    if (strcmp(host, "localhost") == 0)
        strcpy(host, "127.0.0.1");
    if (strchr(host, ':') != NULL) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        if (evutil_inet_pton(AF_INET6, host, &s6->sin6_addr) != 1)
            return IOCD_EINVAL;
        *len = sizeof(*s6);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        if (evutil_inet_pton(AF_INET, host, &s4->sin_addr) != 1)
            return IOCD_EINVAL;
        *len = sizeof(*s4);
    }
    return IOCD_OK;
}

static void sockaddr_text(const struct sockaddr_storage *ss, char *out, size_t cap)
{
    char host[64] = "?";

    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
        evutil_inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof(host));
        snprintf(out, cap, "[%s]:%u", host, ntohs(s6->sin6_port));
    } else {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
        evutil_inet_ntop(AF_INET, &s4->sin_addr, host, sizeof(host));
        snprintf(out, cap, "%s:%u", host, ntohs(s4->sin_port));
    }
}

/* Binds a socket of type to addr; writes the bound address text. */
static iocd_err bind_socket(const char *what, const char *addr, int type, int *fd_out, char *bound,
                            size_t bound_cap, char *errbuf, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t len = 0;
    int fd, one = 1, e;
    iocd_err err = sockaddr_from(addr, &ss, &len);

    if (err != IOCD_OK) {
        snprintf(errbuf, errlen, "%s: invalid address \"%s\" (expected ADDR:PORT)", what, addr);
        return IOCD_EINVAL;
    }
    fd = socket(ss.ss_family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        e = errno;
        snprintf(errbuf, errlen, "%s: socket: %s", what, strerror(e));
        return iocd_err_from_errno(e);
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (type == SOCK_DGRAM) {
        int rcvbuf = 4 << 20; /* capped by net.core.rmem_max */
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    }
    if (bind(fd, (struct sockaddr *)&ss, len) != 0 ||
        (type == SOCK_STREAM && listen(fd, 512) != 0)) {
        e = errno;
        snprintf(errbuf, errlen, "%s: cannot listen on %s: %s", what, addr, strerror(e));
        close(fd);
        return iocd_err_from_errno(e);
    }
    len = sizeof(ss);
    getsockname(fd, (struct sockaddr *)&ss, &len);
    sockaddr_text(&ss, bound, bound_cap);
    *fd_out = fd;
    return IOCD_OK;
}

/* ---- Lines ----------------------------------------------------------------------------- */

static void deliver(col_loop *l, col_proto proto, const char *buf, size_t len, uint64_t first_line,
                    const char *peer)
{
    if (l->lines_fn != NULL && len > 0)
        l->lines_fn(l->lines_ud, proto, buf, len, first_line, peer);
}

uint64_t col_count_lines(const char *p, size_t len)
{
    uint64_t n = 0;
    const char *end = p + len;

    while ((p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
        n++;
        p++;
    }
    return n;
}

/* ---- TCP ------------------------------------------------------------------------------- */

static void conn_free(tcp_conn *c)
{
    col_loop *l = c->loop;

    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        l->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    l->n_conns--;
    iocd_metric_set(l->m_tcp_conns, (double)l->n_conns);
    event_free(c->ev);
    close(c->fd);
    iocd_free(c->buf);
    iocd_free(c);
}

/* Hands over every complete line in c->buf and keeps the partial tail. */
static void conn_drain_lines(tcp_conn *c, bool at_eof)
{
    col_loop *l = c->loop;
    char *p = c->buf, *end = c->buf + c->len, *nl;
    size_t done;

    if (c->discarding) {
        nl = memchr(p, '\n', c->len);
        if (nl == NULL) {
            c->len = 0;
            return;
        }
        p = nl + 1;
        c->line_no++;
        c->discarding = false;
    }
    nl = end > p ? memrchr(p, '\n', (size_t)(end - p)) : NULL;
    if (nl != NULL) {
        size_t chunk = (size_t)(nl + 1 - p);
        deliver(l, COL_PROTO_TCP, p, chunk, c->line_no + 1, c->peer);
        c->line_no += col_count_lines(p, chunk);
        p = nl + 1;
    }
    if (at_eof && p < end) {
        deliver(l, COL_PROTO_TCP, p, (size_t)(end - p), c->line_no + 1, c->peer);
        p = end;
    }
    done = (size_t)(p - c->buf);
    if (done > 0) {
        memmove(c->buf, p, c->len - done);
        c->len -= done;
    }
    if (c->len == c->cap) {
        /* One line fills the whole buffer: it is over line_max. */
        iocd_metric_add(l->m_too_long, 1);
        log_warn("collector", "line too long, dropped", "proto=tcp peer=%s line=%llu max=%lld",
                 c->peer, (unsigned long long)c->line_no + 1, (long long)l->cfg->line_max);
        c->len = 0;
        c->discarding = true;
    }
}

static void on_conn_read(evutil_socket_t fd, short what, void *arg)
{
    tcp_conn *c = arg;
    int reads;

    (void)what;
    /* A bounded number of reads per wakeup keeps one busy client from starving others. */
    for (reads = 0; reads < 16; reads++) {
        ssize_t n = read(fd, c->buf + c->len, c->cap - c->len);
        if (n > 0) {
            iocd_metric_add(c->loop->m_bytes_tcp, (double)n);
            c->len += (size_t)n;
            conn_drain_lines(c, false);
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        /* EOF or error: deliver the last unterminated line, then close. */
        if (!c->discarding)
            conn_drain_lines(c, true);
        conn_free(c);
        return;
    }
}

static void on_accept(evutil_socket_t lfd, short what, void *arg)
{
    col_loop *l = arg;
    struct sockaddr_storage ss;
    socklen_t len;
    tcp_conn *c;
    int fd, one = 1, burst;

    (void)what;
    for (burst = 0; burst < 64; burst++) {
        len = sizeof(ss);
        fd = accept4(lfd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EINTR)
                log_warn("collector", "accept failed", "err=%s", strerror(errno));
            return;
        }
        if (l->n_conns >= TCP_CONN_MAX) {
            iocd_metric_add(l->m_tcp_refused, 1);
            log_warn("collector", "too many tcp connections, refusing", "max=%d", TCP_CONN_MAX);
            close(fd);
            continue;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        c = iocd_calloc(1, sizeof(*c));
        if (c != NULL) {
            c->cap = (size_t)l->cfg->line_max + READ_CHUNK;
            c->buf = iocd_malloc(c->cap);
            c->ev = event_new(l->base, fd, EV_READ | EV_PERSIST, on_conn_read, c);
        }
        if (c == NULL || c->buf == NULL || c->ev == NULL || event_add(c->ev, NULL) != 0) {
            log_error("collector", "out of memory accepting a connection", NULL);
            if (c != NULL) {
                if (c->ev != NULL)
                    event_free(c->ev);
                iocd_free(c->buf);
                iocd_free(c);
            }
            close(fd);
            continue;
        }
        c->loop = l;
        c->fd = fd;
        sockaddr_text(&ss, c->peer, sizeof(c->peer));
        c->next = l->conns;
        if (l->conns != NULL)
            l->conns->prev = c;
        l->conns = c;
        l->n_conns++;
        iocd_metric_set(l->m_tcp_conns, (double)l->n_conns);
        log_debug("collector", "tcp connection", "peer=%s", c->peer);
    }
}

/* ---- UDP ------------------------------------------------------------------------------- */

static void on_udp(evutil_socket_t fd, short what, void *arg)
{
    col_loop *l = arg;
    struct sockaddr_storage ss;
    socklen_t len;
    char peer[64];
    int burst;

    (void)what;
    for (burst = 0; burst < 256; burst++) {
        ssize_t n;
        len = sizeof(ss);
        n = recvfrom(fd, l->udp_buf, UDP_DGRAM_MAX, 0, (struct sockaddr *)&ss, &len);
        if (n < 0)
            return; /* EAGAIN: drained */
        iocd_metric_add(l->m_bytes_udp, (double)n);
        sockaddr_text(&ss, peer, sizeof(peer));
        deliver(l, COL_PROTO_UDP, l->udp_buf, (size_t)n, 1, peer);
    }
}

/* ---- Signals and wakeups --------------------------------------------------------------- */

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    col_loop *l = arg;

    (void)what;
    if (sig == SIGHUP) {
        log_info("collector", "SIGHUP: reloading", NULL);
        if (l->reload_fn != NULL)
            l->reload_fn(l->reload_ud);
        return;
    }
    log_info("collector", "stopping", "signal=%s", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    l->stop_signal = (int)sig;
    event_base_loopbreak(l->base);
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    col_loop *l = arg;
    char drain[64];

    (void)what;
    while (read(fd, drain, sizeof(drain)) > 0)
        ;
    l->stop_signal = 0;
    event_base_loopbreak(l->base);
}

/* ---- Lifetime -------------------------------------------------------------------------- */

static iocd_err add_event(col_loop *l, struct event **slot, evutil_socket_t fd, short what,
                          event_callback_fn cb)
{
    *slot = event_new(l->base, fd, what, cb, l);
    if (*slot == NULL || event_add(*slot, NULL) != 0)
        return IOCD_ENOMEM;
    return IOCD_OK;
}

iocd_err col_loop_new(const col_config *cfg, col_loop **out, char *errbuf, size_t errlen)
{
    col_loop *l = NULL;
    iocd_err err = IOCD_OK;
    int pipefd[2];

    l = iocd_calloc(1, sizeof(*l));
    if (l == NULL)
        return IOCD_ENOMEM;
    l->cfg = cfg;
    l->tcp_fd = l->udp_fd = l->wake_rd = l->wake_wr = -1;
    l->base = event_base_new();
    if (l->base == NULL || pipe2(pipefd, O_NONBLOCK | O_CLOEXEC) != 0) {
        snprintf(errbuf, errlen, "event loop: cannot initialise");
        err = IOCD_EIO;
        goto out;
    }
    l->wake_rd = pipefd[0];
    l->wake_wr = pipefd[1];
    l->m_tcp_conns =
        iocd_gauge("iocd_influx_tcp_connections", "Open line-protocol TCP connections.");
    l->m_tcp_refused = iocd_counter("iocd_influx_tcp_refused_total",
                                    "TCP connections refused because too many were open.");
    l->m_bytes_tcp = iocd_metric_get("iocd_ingest_bytes_total", "Bytes received by protocol.",
                                     IOCD_METRIC_COUNTER, "proto=\"influx_tcp\"", NULL, 0);
    l->m_bytes_udp = iocd_metric_get("iocd_ingest_bytes_total", "Bytes received by protocol.",
                                     IOCD_METRIC_COUNTER, "proto=\"influx_udp\"", NULL, 0);
    l->m_too_long = iocd_metric_get(
        "iocd_ingest_rejected_total", "Lines or samples rejected, by protocol and reason.",
        IOCD_METRIC_COUNTER, "proto=\"influx_tcp\",reason=\"line_too_long\"", NULL, 0);
    signal(SIGPIPE, SIG_IGN);
    /* A file-size limit (RLIMIT_FSIZE) must fail the write with EFBIG, which the store
     * reports as "no space" and survives, not kill the daemon. */
    signal(SIGXFSZ, SIG_IGN);
    err = add_event(l, &l->wake_ev, l->wake_rd, EV_READ | EV_PERSIST, on_wake);
    if (err == IOCD_OK) {
        l->sig_term = evsignal_new(l->base, SIGTERM, on_signal, l);
        l->sig_int = evsignal_new(l->base, SIGINT, on_signal, l);
        l->sig_hup = evsignal_new(l->base, SIGHUP, on_signal, l);
        if (l->sig_term == NULL || l->sig_int == NULL || l->sig_hup == NULL ||
            event_add(l->sig_term, NULL) != 0 || event_add(l->sig_int, NULL) != 0 ||
            event_add(l->sig_hup, NULL) != 0)
            err = IOCD_ENOMEM;
    }
    if (err != IOCD_OK) {
        snprintf(errbuf, errlen, "event loop: out of memory");
        goto out;
    }
    if (cfg->influx_tcp[0] != '\0') {
        err = bind_socket("influx-tcp", cfg->influx_tcp, SOCK_STREAM, &l->tcp_fd, l->tcp_addr,
                          sizeof(l->tcp_addr), errbuf, errlen);
        if (err == IOCD_OK)
            err = add_event(l, &l->tcp_ev, l->tcp_fd, EV_READ | EV_PERSIST, on_accept);
        if (err != IOCD_OK)
            goto out;
        log_info("collector", "influx tcp listening", "addr=%s", l->tcp_addr);
    }
    if (cfg->influx_udp[0] != '\0') {
        err = bind_socket("influx-udp", cfg->influx_udp, SOCK_DGRAM, &l->udp_fd, l->udp_addr,
                          sizeof(l->udp_addr), errbuf, errlen);
        if (err == IOCD_OK) {
            l->udp_buf = iocd_malloc(UDP_DGRAM_MAX);
            err = l->udp_buf == NULL
                      ? IOCD_ENOMEM
                      : add_event(l, &l->udp_ev, l->udp_fd, EV_READ | EV_PERSIST, on_udp);
        }
        if (err != IOCD_OK)
            goto out;
        log_info("collector", "influx udp listening", "addr=%s", l->udp_addr);
    }
    *out = l;
    l = NULL;
out:
    col_loop_free(l);
    return err;
}

const char *col_loop_tcp_addr(const col_loop *l)
{
    return l->tcp_addr;
}

const char *col_loop_udp_addr(const col_loop *l)
{
    return l->udp_addr;
}

void col_loop_on_reload(col_loop *l, col_reload_fn fn, void *ud)
{
    l->reload_fn = fn;
    l->reload_ud = ud;
}

void col_loop_on_lines(col_loop *l, col_lines_fn fn, void *ud)
{
    l->lines_fn = fn;
    l->lines_ud = ud;
}

int col_loop_run(col_loop *l)
{
    l->stop_signal = 0;
    event_base_dispatch(l->base);
    return l->stop_signal;
}

void col_loop_stop(col_loop *l)
{
    char one = 1;

    if (write(l->wake_wr, &one, 1) < 0 && errno != EAGAIN)
        log_error("collector", "cannot wake the event loop", "err=%s", strerror(errno));
}

void col_loop_close_listeners(col_loop *l)
{
    if (l->tcp_ev != NULL) {
        event_free(l->tcp_ev);
        l->tcp_ev = NULL;
    }
    if (l->udp_ev != NULL) {
        event_free(l->udp_ev);
        l->udp_ev = NULL;
    }
    if (l->tcp_fd >= 0) {
        close(l->tcp_fd);
        l->tcp_fd = -1;
    }
    if (l->udp_fd >= 0) {
        close(l->udp_fd);
        l->udp_fd = -1;
    }
    /* Connections: what was received is delivered, partial last lines included. */
    while (l->conns != NULL) {
        tcp_conn *c = l->conns;
        if (!c->discarding)
            conn_drain_lines(c, true);
        conn_free(c);
    }
}

void col_loop_free(col_loop *l)
{
    size_t i;

    if (l == NULL)
        return;
    struct event **evs[] = { &l->sig_term, &l->sig_int, &l->sig_hup, &l->wake_ev };
    col_loop_close_listeners(l);
    for (i = 0; i < IOCD_ARRAY_LEN(evs); i++)
        if (*evs[i] != NULL)
            event_free(*evs[i]);
    if (l->wake_rd >= 0)
        close(l->wake_rd);
    if (l->wake_wr >= 0)
        close(l->wake_wr);
    if (l->base != NULL)
        event_base_free(l->base);
    iocd_free(l->udp_buf);
    iocd_free(l);
}
