/* storage/lock.c - one iocd per data directory: an flock(2) on DIR/iocd.lock holding the
 * owner's pid. The kernel drops the lock when the process dies, kill -9 included, so a stale
 * file never blocks a restart. */
#define _DEFAULT_SOURCE /* flock */
#include "storage/storage_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

struct store_lock {
    int fd;
};

/* mkdir -p for one path; returns 0 or -1 with errno set. */
static int mkdir_p(const char *dir)
{
    char tmp[4096];
    size_t len = strlen(dir), i;

    if (len == 0 || len >= sizeof(tmp)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(tmp, dir, len + 1);
    for (i = 1; i <= len; i++) {
        if (tmp[i] == '/' || tmp[i] == '\0') {
            char c = tmp[i];
            tmp[i] = '\0';
            if (mkdir(tmp, 0750) != 0 && errno != EEXIST)
                return -1;
            tmp[i] = c;
        }
    }
    return 0;
}

iocd_err store_lock_take(const char *dir, store_lock **out, char *errbuf, size_t errlen)
{
    char path[4200], pidtext[32] = "";
    store_lock *lk = NULL;
    struct stat st;
    iocd_err err = IOCD_OK;
    int fd = -1, e;
    ssize_t n;

    if (mkdir_p(dir) != 0 || stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        e = errno != 0 ? errno : ENOTDIR;
        snprintf(errbuf, errlen, "data dir %s: cannot create: %s", dir, strerror(e));
        return iocd_err_from_errno(e);
    }
    snprintf(path, sizeof(path), "%s/iocd.lock", dir);
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0) {
        e = errno;
        snprintf(errbuf, errlen, "data dir %s is not writable: %s", dir, strerror(e));
        return iocd_err_from_errno(e);
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        e = errno;
        if (e == EWOULDBLOCK) {
            n = pread(fd, pidtext, sizeof(pidtext) - 1, 0);
            pidtext[n > 0 ? n : 0] = '\0';
            pidtext[strcspn(pidtext, "\n")] = '\0';
            snprintf(errbuf, errlen, "data dir %s is in use by another iocd (pid %s)", dir,
                     pidtext[0] != '\0' ? pidtext : "unknown");
            err = IOCD_ELOCKED;
        } else {
            snprintf(errbuf, errlen, "data dir %s: cannot lock %s: %s", dir, path, strerror(e));
            err = iocd_err_from_errno(e);
        }
        goto out;
    }
    snprintf(pidtext, sizeof(pidtext), "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pidtext, strlen(pidtext), 0) < 0) {
        e = errno;
        snprintf(errbuf, errlen, "data dir %s is not writable: %s", dir, strerror(e));
        err = iocd_err_from_errno(e);
        goto out;
    }
    lk = iocd_malloc(sizeof(*lk));
    if (lk == NULL) {
        err = IOCD_ENOMEM;
        goto out;
    }
    lk->fd = fd;
    fd = -1;
    *out = lk;
out:
    if (fd >= 0)
        close(fd);
    return err;
}

void store_lock_release(store_lock *lk)
{
    if (lk == NULL)
        return;
    close(lk->fd); /* closing drops the flock */
    iocd_free(lk);
}
