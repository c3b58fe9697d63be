/* tests/unit/harness.h - the unit-test harness: TEST() registers a test, typed ASSERT_*
 * macros print both sides on failure. Each test runs in a forked child with a timeout, so a
 * crash or hang fails that test alone. The run ends with "N passed, N failed". */
#ifndef IOCD_TEST_HARNESS_H
#define IOCD_TEST_HARNESS_H

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void (*test_fn)(void);
void test_register(const char *name, test_fn fn, const char *file, int line);
/* A fresh, empty temporary directory for this test (removed after it). */
const char *test_tmpdir(void);
void test_fail_at(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4), noreturn));

#define TEST(name)                                                                                 \
    static void test_##name(void);                                                                 \
    __attribute__((constructor)) static void test_reg_##name(void)                                 \
    {                                                                                              \
        test_register(#name, test_##name, __FILE__, __LINE__);                                     \
    }                                                                                              \
    static void test_##name(void)

#define ASSERT_TRUE(c)                                                                             \
    do {                                                                                           \
        if (!(c))                                                                                  \
            test_fail_at(__FILE__, __LINE__, "expected true: %s", #c);                             \
    } while (0)
#define ASSERT_FALSE(c)                                                                            \
    do {                                                                                           \
        if (c)                                                                                     \
            test_fail_at(__FILE__, __LINE__, "expected false: %s", #c);                            \
    } while (0)
#define ASSERT_INT_OP(a, op, b)                                                                    \
    do {                                                                                           \
        long long a_ = (long long)(a), b_ = (long long)(b);                                        \
        if (!(a_ op b_))                                                                           \
            test_fail_at(__FILE__, __LINE__, "%s %s %s: %lld vs %lld", #a, #op, #b, a_, b_);       \
    } while (0)
#define ASSERT_EQ(a, b) ASSERT_INT_OP(a, ==, b)
#define ASSERT_NE(a, b) ASSERT_INT_OP(a, !=, b)
#define ASSERT_LT(a, b) ASSERT_INT_OP(a, <, b)
#define ASSERT_LE(a, b) ASSERT_INT_OP(a, <=, b)
#define ASSERT_GT(a, b) ASSERT_INT_OP(a, >, b)
#define ASSERT_GE(a, b) ASSERT_INT_OP(a, >=, b)
#define ASSERT_UINT_EQ(a, b)                                                                       \
    do {                                                                                           \
        unsigned long long a_ = (unsigned long long)(a), b_ = (unsigned long long)(b);             \
        if (a_ != b_)                                                                              \
            test_fail_at(__FILE__, __LINE__, "%s == %s: %llu vs %llu", #a, #b, a_, b_);            \
    } while (0)
#define ASSERT_DBL_EQ(a, b, eps)                                                                   \
    do {                                                                                           \
        double a_ = (a), b_ = (b);                                                                 \
        if (!(a_ - b_ <= (eps) && b_ - a_ <= (eps)))                                               \
            test_fail_at(__FILE__, __LINE__, "%s == %s: %.17g vs %.17g", #a, #b, a_, b_);          \
    } while (0)
#define ASSERT_STR_EQ(a, b)                                                                        \
    do {                                                                                           \
        const char *a_ = (a), *b_ = (b);                                                           \
        if (a_ == NULL || b_ == NULL || strcmp(a_, b_) != 0)                                       \
            test_fail_at(__FILE__, __LINE__, "%s == %s: \"%s\" vs \"%s\"", #a, #b,                 \
                         a_ ? a_ : "(null)", b_ ? b_ : "(null)");                                  \
    } while (0)
#define ASSERT_STR_CONTAINS(hay, needle)                                                           \
    do {                                                                                           \
        const char *h_ = (hay), *n_ = (needle);                                                    \
        if (h_ == NULL || strstr(h_, n_) == NULL)                                                  \
            test_fail_at(__FILE__, __LINE__, "%s contains %s: \"%s\" lacks \"%s\"", #hay, #needle, \
                         h_ ? h_ : "(null)", n_);                                                  \
    } while (0)
/* a is an iocd_err; prints both names. */
#define ASSERT_ERR(a, b)                                                                           \
    do {                                                                                           \
        int a_ = (int)(a), b_ = (int)(b);                                                          \
        if (a_ != b_)                                                                              \
            test_fail_at(__FILE__, __LINE__, "%s == %s: %s vs %s", #a, #b,                         \
                         iocd_errname((iocd_err)a_), iocd_errname((iocd_err)b_));                  \
    } while (0)
#define ASSERT_OK(a) ASSERT_ERR(a, IOCD_OK)

#endif
