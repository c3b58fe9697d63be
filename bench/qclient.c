/* bench/qclient.c - a lean HTTP/1.1 client that times one GET request, again and again, on
 * one keep-alive connection: what a dashboard's query costs the server without a slow
 * client's own overhead on top. bench/query.py runs it for both servers, so each is timed by
 * the same program the same way.
 *
 * Usage: build/bench/qclient HOST:PORT PATH RUNS [WARMUPS]
 * Prints one line per timed run, "STATUS BYTES MICROSECONDS" (the body's size after
 * de-chunking; time from the request's first byte sent to the answer's last byte read), and
 * exits 1 when the connection fails or an answer cannot be read. */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HEAD_MAX (64 * 1024)

static long long now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

typedef struct conn {
    int fd;
    char *buf; /* bytes read and not yet used: buf[off, len) */
    size_t off, len, cap;
} conn;

static int dial(const char *hostport)
{
    char host[256];
    const char *colon = strrchr(hostport, ':');
    struct addrinfo hints = { 0 }, *res = NULL;
    int fd, one = 1;

    if (colon == NULL || (size_t)(colon - hostport) >= sizeof(host)) {
        fprintf(stderr, "qclient: want HOST:PORT, got %s\n", hostport);
        return -1;
    }
    memcpy(host, hostport, (size_t)(colon - hostport));
    host[colon - hostport] = '\0';
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, colon + 1, &hints, &res) != 0 || res == NULL) {
        fprintf(stderr, "qclient: cannot resolve %s\n", hostport);
        return -1;
    }
    fd = socket(res->ai_family, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, res->ai_addr, res->ai_addrlen) != 0) {
        fprintf(stderr, "qclient: connect %s: %s\n", hostport, strerror(errno));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(res);
        return -1;
    }
    freeaddrinfo(res);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

/* Reads more bytes into the buffer; 0 on success, -1 on EOF or error. */
static int fill(conn *c)
{
    ssize_t n;

    if (c->len == c->cap) {
        size_t cap = c->cap * 2;
        char *b = realloc(c->buf, cap);
        if (b == NULL)
            return -1;
        c->buf = b;
        c->cap = cap;
    }
    do
        n = read(c->fd, c->buf + c->len, c->cap - c->len);
    while (n < 0 && errno == EINTR);
    if (n <= 0)
        return -1;
    c->len += (size_t)n;
    return 0;
}

/* The offset just past the next CRLF at or after from, filling as needed; 0 on failure. */
static size_t line_end(conn *c, size_t from)
{
    for (;;) {
        for (size_t i = from; i + 1 < c->len; i++)
            if (c->buf[i] == '\r' && c->buf[i + 1] == '\n')
                return i + 2;
        if (c->len - c->off > HEAD_MAX || fill(c) != 0)
            return 0;
    }
}

/* Consumes n body bytes (they are counted, not kept). */
static int skip(conn *c, size_t n)
{
    while (n > 0) {
        size_t have = c->len - c->off, take = have < n ? have : n;
        c->off += take;
        n -= take;
        if (c->off == c->len)
            c->off = c->len = 0; /* all used: no offsets are held here */
        if (n > 0 && fill(c) != 0)
            return -1;
    }
    return 0;
}

/* Reads one answer: its status and body size. 0 on success. */
static int read_answer(conn *c, int *status, size_t *body)
{
    size_t end, at, clen = 0;
    int chunked = 0, have_len = 0;

    memmove(c->buf, c->buf + c->off, c->len - c->off); /* the answer starts at 0 */
    c->len -= c->off;
    c->off = 0;
    end = line_end(c, c->off);
    if (end == 0 || sscanf(c->buf + c->off, "HTTP/1.%*d %d", status) != 1)
        return -1;
    at = end;
    for (;;) { /* headers up to the blank line */
        const char *h;
        end = line_end(c, at);
        if (end == 0)
            return -1;
        h = c->buf + at;
        if (end - at == 2)
            break;
        if (strncasecmp(h, "content-length:", 15) == 0) {
            clen = strtoull(h + 15, NULL, 10);
            have_len = 1;
        } else if (strncasecmp(h, "transfer-encoding:", 18) == 0 && strstr(h, "chunked") != NULL &&
                   strstr(h, "chunked") < c->buf + end) {
            chunked = 1;
        }
        at = end;
    }
    c->off = end;
    *body = 0;
    if (chunked) {
        for (;;) {
            size_t n;
            end = line_end(c, c->off);
            if (end == 0)
                return -1;
            n = strtoull(c->buf + c->off, NULL, 16);
            c->off = end;
            if (n == 0) { /* trailers, then the blank line */
                for (;;) {
                    end = line_end(c, c->off);
                    if (end == 0)
                        return -1;
                    at = c->off;
                    c->off = end;
                    if (end - at == 2)
                        return 0;
                }
            }
            if (skip(c, n + 2) != 0)
                return -1;
            *body += n;
        }
    }
    if (!have_len)
        return -1; /* a keep-alive answer needs one of the two */
    *body = clen;
    return skip(c, clen);
}

int main(int argc, char **argv)
{
    conn c = { 0 };
    char req[8192];
    int runs, warmups, n;

    if (argc < 4 || argc > 5) {
        fprintf(stderr, "usage: qclient HOST:PORT PATH RUNS [WARMUPS]\n");
        return 2;
    }
    runs = atoi(argv[3]);
    warmups = argc == 5 ? atoi(argv[4]) : 0;
    n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: %s\r\nAccept: */*\r\n\r\n", argv[2],
                 argv[1]);
    if (n <= 0 || (size_t)n >= sizeof(req) || runs <= 0 || warmups < 0) {
        fprintf(stderr, "qclient: bad arguments\n");
        return 2;
    }
    c.fd = dial(argv[1]);
    c.cap = 1 << 16;
    c.buf = malloc(c.cap);
    if (c.fd < 0 || c.buf == NULL)
        return 1;
    for (int i = 0; i < warmups + runs; i++) {
        long long t0 = now_us();
        size_t sent = 0, body = 0;
        int status = 0;
        while (sent < (size_t)n) {
            ssize_t w = write(c.fd, req + sent, (size_t)n - sent);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0) {
                fprintf(stderr, "qclient: write: %s\n", strerror(errno));
                return 1;
            }
            sent += (size_t)w;
        }
        if (read_answer(&c, &status, &body) != 0) {
            fprintf(stderr, "qclient: the answer to run %d could not be read\n", i + 1);
            return 1;
        }
        if (i >= warmups)
            printf("%d %zu %lld\n", status, body, now_us() - t0);
    }
    close(c.fd);
    free(c.buf);
    return 0;
}
