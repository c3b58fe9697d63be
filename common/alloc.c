/* common/alloc.c - the allocation seam: a byte counter for /metrics and, in IOCD_FAULT
 * builds, failure of the Nth allocation for out-of-memory tests.
 * Each block carries a 16-byte header holding its size, so iocd_free knows what to subtract
 * without depending on malloc_usable_size. */
#include "common/common.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define HDR 16 /* keeps max_align_t alignment */

static atomic_size_t mem_used;

#ifdef IOCD_FAULT
static atomic_long fault_countdown;
static atomic_bool fault_fired;

static bool fault_now(void)
{
    long n = atomic_load(&fault_countdown);
    while (n > 0) {
        if (atomic_compare_exchange_weak(&fault_countdown, &n, n - 1)) {
            if (n == 1) {
                atomic_store(&fault_fired, true);
                return true;
            }
            return false;
        }
    }
    return false;
}

void iocd_fault_set(long nth)
{
    atomic_store(&fault_countdown, nth);
    atomic_store(&fault_fired, false);
}

bool iocd_fault_fired(void)
{
    return atomic_load(&fault_fired);
}
#else
static bool fault_now(void)
{
    return false;
}

void iocd_fault_set(long nth)
{
    (void)nth;
}

bool iocd_fault_fired(void)
{
    return false;
}
#endif

void *iocd_malloc(size_t len)
{
    unsigned char *p;

    if (len > SIZE_MAX - HDR || fault_now())
        return NULL;
    p = malloc(len + HDR);
    if (p == NULL)
        return NULL;
    memcpy(p, &len, sizeof(len));
    atomic_fetch_add(&mem_used, len);
    return p + HDR;
}

void *iocd_calloc(size_t n, size_t len)
{
    void *p;

    if (len != 0 && n > SIZE_MAX / len)
        return NULL;
    p = iocd_malloc(n * len);
    if (p != NULL)
        memset(p, 0, n * len);
    return p;
}

void *iocd_realloc(void *ptr, size_t len)
{
    unsigned char *base, *p;
    size_t old;

    if (ptr == NULL)
        return iocd_malloc(len);
    if (len > SIZE_MAX - HDR || fault_now())
        return NULL;
    base = (unsigned char *)ptr - HDR;
    memcpy(&old, base, sizeof(old));
    p = realloc(base, len + HDR);
    if (p == NULL)
        return NULL;
    memcpy(p, &len, sizeof(len));
    atomic_fetch_sub(&mem_used, old);
    atomic_fetch_add(&mem_used, len);
    return p + HDR;
}

void iocd_free(void *ptr)
{
    unsigned char *base;
    size_t old;

    if (ptr == NULL)
        return;
    base = (unsigned char *)ptr - HDR;
    memcpy(&old, base, sizeof(old));
    atomic_fetch_sub(&mem_used, old);
    free(base);
}

char *iocd_strndup(const char *s, size_t len)
{
    char *p = iocd_malloc(len + 1);

    if (p == NULL)
        return NULL;
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

char *iocd_strdup(const char *s)
{
    return iocd_strndup(s, strlen(s));
}

size_t iocd_mem_used(void)
{
    return atomic_load(&mem_used);
}
