/* tests/unit/test_api.c - the HTTP server without the rest of the daemon: readiness before
 * the store opens, keep-alive, and a suspended handler resumed from another thread. */
#include "tests/unit/harness.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "api/api_int.h"

static int connect_to(const char *addr)
{
    struct sockaddr_in sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)atoi(strrchr(addr, ':') + 1));
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    return fd;
}

/* Sends a GET on fd and reads one response into out; returns the status. */
static int get(int fd, const char *path, char *out, size_t cap)
{
    char req[256];
    size_t have = 0;
    char *end, *cl;

    snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: t\r\n\r\n", path);
    ASSERT_EQ(write(fd, req, strlen(req)), (ssize_t)strlen(req));
    for (;;) {
        ssize_t n = read(fd, out + have, cap - 1 - have);
        ASSERT_GT(n, 0);
        have += (size_t)n;
        out[have] = '\0';
        end = strstr(out, "\r\n\r\n");
        cl = strstr(out, "Content-Length: ");
        if (end != NULL && cl != NULL && have >= (size_t)(end + 4 - out) + (size_t)atoi(cl + 16))
            break;
    }
    return atoi(out + 9);
}

static col_config cfg;

static api_server *start(void)
{
    api_server *srv = NULL;
    char errbuf[256];

    ASSERT_OK(col_config_init(&cfg));
    iocd_free(cfg.http_addr);
    cfg.http_addr = iocd_strdup("127.0.0.1:0");
    ASSERT_OK(api_start(&cfg, &srv, errbuf, sizeof(errbuf)));
    return srv;
}

TEST(ready_is_503_until_the_store_is_connected)
{
    api_server *srv = start();
    char buf[4096];
    int fd = connect_to(api_addr(srv));

    ASSERT_EQ(get(fd, "/-/ready", buf, sizeof(buf)), 503);
    ASSERT_STR_CONTAINS(buf, "not ready");
    api_set_backend(srv, (store *)(void *)&cfg, NULL);     /* never dereferenced by /-/ready */
    ASSERT_EQ(get(fd, "/-/ready", buf, sizeof(buf)), 200); /* same connection: keep-alive */
    ASSERT_TRUE(strstr(buf, "Connection: close") == NULL);
    close(fd);
    api_stop(srv, 1000);
    col_config_fini(&cfg);
}

static void *resume_later(void *arg)
{
    api_req *req = arg;

    nanosleep(&(struct timespec){ 0, 50000000 }, NULL);
    api_reply_text(req, 200, "text/plain", "resumed\n");
    api_req_resume(req);
    return NULL;
}

static api_status slow(api_req *req, void *ud)
{
    pthread_t th;

    (void)ud;
    pthread_create(&th, NULL, resume_later, req);
    pthread_detach(th);
    return API_SUSPENDED;
}

static api_status instant(api_req *req, void *ud)
{
    (void)ud;
    /* Completed before the handler even returns: the race the resume logic must handle. */
    api_reply_text(req, 200, "text/plain", "instant\n");
    api_req_resume(req);
    return API_SUSPENDED;
}

TEST(suspended_handlers_answer_after_resume)
{
    api_server *srv = start();
    char buf[4096];
    int fd, i;

    ASSERT_OK(api_route_add(srv, API_GET, "/slow", COL_ROLE_NONE, slow, NULL));
    ASSERT_OK(api_route_add(srv, API_GET, "/instant", COL_ROLE_NONE, instant, NULL));
    fd = connect_to(api_addr(srv));
    for (i = 0; i < 3; i++) {
        ASSERT_EQ(get(fd, "/slow", buf, sizeof(buf)), 200);
        ASSERT_STR_CONTAINS(buf, "resumed");
        ASSERT_EQ(get(fd, "/instant", buf, sizeof(buf)), 200);
        ASSERT_STR_CONTAINS(buf, "instant");
    }
    close(fd);
    api_stop(srv, 1000);
    col_config_fini(&cfg);
}
