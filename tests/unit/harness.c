/* tests/unit/harness.c - runs every registered test in a forked child with a timeout and a
 * fresh temp dir; prints one line per test and "N passed, N failed" last.
 * Usage: test_x [-t seconds] [name-substring...] */
#include "tests/unit/harness.h"

#include <dirent.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/common.h"

#define MAX_TESTS 1024

typedef struct test_case {
    const char *name;
    test_fn fn;
    const char *file;
    int line;
} test_case;

static test_case tests[MAX_TESTS];
static int n_tests;
static char tmpdir[256];

void test_register(const char *name, test_fn fn, const char *file, int line)
{
    if (n_tests < MAX_TESTS)
        tests[n_tests++] = (test_case){ name, fn, file, line };
}

const char *test_tmpdir(void)
{
    return tmpdir;
}

void test_fail_at(const char *file, int line, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "    %s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    fflush(stderr);
    _exit(1);
}

static void rm_rf(const char *path)
{
    DIR *d = opendir(path);
    struct dirent *e;
    char sub[1024];
    struct stat st;

    if (d != NULL) {
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            snprintf(sub, sizeof(sub), "%s/%s", path, e->d_name);
            if (lstat(sub, &st) == 0 && S_ISDIR(st.st_mode))
                rm_rf(sub);
            else
                unlink(sub);
        }
        closedir(d);
    }
    rmdir(path);
}

static bool selected(const char *name, int argc, char **argv, int first)
{
    int i;

    if (first >= argc)
        return true;
    for (i = first; i < argc; i++)
        if (strstr(name, argv[i]) != NULL)
            return true;
    return false;
}

/* Runs one test in a child; returns true when it passed. */
static bool run_one(const test_case *t, int timeout_s)
{
    const char *base = getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp";
    struct timespec t0, t1;
    pid_t pid;
    int status = 0;
    bool ok;

    snprintf(tmpdir, sizeof(tmpdir), "%s/iocd-unit-XXXXXX", base);
    if (mkdtemp(tmpdir) == NULL) {
        perror("mkdtemp");
        return false;
    }
    clock_gettime(CLOCK_MONOTONIC, &t0);
    fflush(NULL);
    pid = fork();
    if (pid == 0) {
        alarm((unsigned)timeout_s);
        t->fn();
        fflush(NULL);
        _exit(0);
    }
    if (pid < 0 || waitpid(pid, &status, 0) < 0) {
        perror("fork/wait");
        rm_rf(tmpdir);
        return false;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (WIFSIGNALED(status))
        fprintf(stderr, "    killed by signal %d%s\n", WTERMSIG(status),
                WTERMSIG(status) == SIGALRM ? " (timeout)" : "");
    printf("%s %s (%.0f ms)\n", ok ? "ok  " : "FAIL", t->name,
           (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6);
    if (!ok)
        printf("     at %s:%d\n", t->file, t->line);
    fflush(stdout);
    rm_rf(tmpdir);
    return ok;
}

int main(int argc, char **argv)
{
    int timeout_s = 60, first = 1, passed = 0, failed = 0, i;

    /* Modules log to stderr; keep test output to failures unless asked. */
    iocd_log_setup(getenv("IOCD_TEST_VERBOSE") != NULL ? IOCD_LOG_DEBUG : IOCD_LOG_WARN,
                   IOCD_LOG_LOGFMT, 2);
    if (argc > 2 && strcmp(argv[1], "-t") == 0) {
        timeout_s = atoi(argv[2]);
        first = 3;
    }
    for (i = 0; i < n_tests; i++) {
        if (!selected(tests[i].name, argc, argv, first))
            continue;
        if (run_one(&tests[i], timeout_s))
            passed++;
        else
            failed++;
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
