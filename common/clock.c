/* common/clock.c - the clock seam. The system clock is the default; tests install their own
 * before starting threads, so reads need no lock. */
#include "common/common.h"

#include <stdio.h>
#include <time.h>

static int64_t sys_now_ms(void *ud)
{
    struct timespec ts;

    (void)ud;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t sys_mono_ns(void *ud)
{
    struct timespec ts;

    (void)ud;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static iocd_clock clock_now = { sys_now_ms, sys_mono_ns, NULL };

void iocd_clock_set(const iocd_clock *clk)
{
    if (clk == NULL) {
        clock_now.now_ms = sys_now_ms;
        clock_now.mono_ns = sys_mono_ns;
        clock_now.ud = NULL;
        return;
    }
    clock_now = *clk;
    if (clock_now.now_ms == NULL)
        clock_now.now_ms = sys_now_ms;
    if (clock_now.mono_ns == NULL)
        clock_now.mono_ns = sys_mono_ns;
}

int64_t iocd_now_ms(void)
{
    return clock_now.now_ms(clock_now.ud);
}

int64_t iocd_mono_ns(void)
{
    return clock_now.mono_ns(clock_now.ud);
}

void iocd_time_format(int64_t t_ms, char *out, size_t cap)
{
    time_t secs = (time_t)(t_ms >= 0 ? t_ms / 1000 : (t_ms - 999) / 1000);
    int ms = (int)(t_ms - (int64_t)secs * 1000);
    struct tm tm;

    if (gmtime_r(&secs, &tm) == NULL) {
        snprintf(out, cap, "%lld", (long long)t_ms);
        return;
    }
    snprintf(out, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
}
