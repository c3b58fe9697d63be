/* common/util.c - small helpers: address splitting, bounded file reads, thread names. */
#include "common/common.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

iocd_err iocd_addr_split(const char *addr, char *host, size_t host_cap, int *port_out)
{
    const char *colon, *hs, *he;
    char *end;
    long port;

    if (addr[0] == '[') {
        he = strchr(addr, ']');
        if (he == NULL || he[1] != ':')
            return IOCD_EINVAL;
        hs = addr + 1;
        colon = he + 1;
    } else {
        colon = strrchr(addr, ':');
        if (colon == NULL)
            return IOCD_EINVAL;
        hs = addr;
        he = colon;
        if (memchr(hs, ':', (size_t)(he - hs)) != NULL)
            return IOCD_EINVAL; /* bare IPv6 needs brackets */
    }
    if (colon[1] == '\0')
        return IOCD_EINVAL;
    errno = 0;
    port = strtol(colon + 1, &end, 10);
    if (errno != 0 || *end != '\0' || port < 0 || port > 65535)
        return IOCD_EINVAL;
    if ((size_t)(he - hs) + 1 > host_cap)
        return IOCD_ETOOBIG;
    memcpy(host, hs, (size_t)(he - hs));
    host[he - hs] = '\0';
    if (host[0] == '\0')
        return IOCD_EINVAL;
    *port_out = (int)port;
    return IOCD_OK;
}

iocd_err iocd_file_read(const char *path, size_t max, char **data_out, size_t *len_out)
{
    iocd_buf b;
    iocd_err err = IOCD_OK;
    char chunk[8192];
    int fd;

    iocd_buf_init(&b, max);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return iocd_err_from_errno(errno);
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof(chunk));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            err = iocd_err_from_errno(errno);
            break;
        }
        if (n == 0)
            break;
        err = iocd_buf_append(&b, chunk, (size_t)n);
        if (err != IOCD_OK)
            break;
    }
    close(fd);
    if (err != IOCD_OK) {
        iocd_buf_fini(&b);
        return err;
    }
    {
        size_t len = 0;
        char *data = iocd_buf_take(&b, &len);
        if (data == NULL)
            return IOCD_ENOMEM;
        *data_out = data;
        if (len_out != NULL)
            *len_out = len;
    }
    return IOCD_OK;
}

int iocd_hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

void iocd_qsort(void *base, size_t n, size_t size, int (*cmp)(const void *, const void *))
{
    if (n > 1)
        qsort(base, n, size, cmp);
}

const char *iocd_label_value(const char *labels, size_t len, const char *name)
{
    const char *p = labels, *end = labels + len;

    while (p < end) {
        const char *v = p + strlen(p) + 1;
        if (strcmp(p, name) == 0)
            return v;
        p = v + strlen(v) + 1;
    }
    return NULL;
}

void iocd_thread_name(const char *name)
{
    char buf[16];

    snprintf(buf, sizeof(buf), "%s", name);
    (void)prctl(PR_SET_NAME, buf, 0, 0, 0);
}
