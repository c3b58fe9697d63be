/* common/err.c - error texts, errno translation and the assertion hook. */
#include "common/common.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

static const char *const err_text[] = {
#define IOCD_ERR_TEXT(code, text) text,
    IOCD_ERRORS(IOCD_ERR_TEXT)
#undef IOCD_ERR_TEXT
};

static const char *const err_name[] = {
#define IOCD_ERR_NAME(code, text) #code,
    IOCD_ERRORS(IOCD_ERR_NAME)
#undef IOCD_ERR_NAME
};

const char *iocd_strerror(iocd_err err)
{
    if ((unsigned)err >= IOCD_ARRAY_LEN(err_text))
        return "unknown error";
    return err_text[err];
}

const char *iocd_errname(iocd_err err)
{
    if ((unsigned)err >= IOCD_ARRAY_LEN(err_name))
        return "IOCD_EUNKNOWN";
    return err_name[err];
}

iocd_err iocd_err_from_errno(int errnum)
{
    switch (errnum) {
    case 0:
        return IOCD_OK;
    case ENOMEM:
        return IOCD_ENOMEM;
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
        return IOCD_ENOSPC;
    case EINVAL:
        return IOCD_EINVAL;
    case ENOENT:
        return IOCD_ENOTFOUND;
    case EEXIST:
        return IOCD_EEXIST;
    case EACCES:
    case EPERM:
    case EROFS:
        return IOCD_EPERM;
    case EAGAIN:
        return IOCD_EAGAIN;
    case ETIMEDOUT:
        return IOCD_ETIMEDOUT;
    case EADDRINUSE:
        return IOCD_EADDRINUSE;
    default:
        return IOCD_EIO;
    }
}

void iocd_assert_fail(const char *expr, const char *file, int line)
{
    fprintf(stderr, "iocd: assertion failed: %s (%s:%d)\n", expr, file, line);
    abort();
}
