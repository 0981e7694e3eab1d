/*
 * check.h — the tiny assertion kit shared by the C tests of libhashevict.
 *
 * CHECK(cond, fmt, ...)       records a failure (with file:line and the
 *                             message) and carries on.
 * REQUIRE(cond, fmt, ...)     same, then returns `ret` from the enclosing
 *                             function (use REQUIRE_V in void functions).
 * CHECK_ST(expr, want)        evaluates a hashevict_status expression and
 *                             checks it equals `want`, printing both names
 *                             and hashevict_last_error() when it does not.
 * check_report(name)          prints the summary; returns the exit status.
 *
 * Every test program is a single translation unit, so the counters are
 * plain statics.
 */
#ifndef HASHEVICT_TEST_CHECK_H
#define HASHEVICT_TEST_CHECK_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hashevict.h"

static int check_failures;
static int check_count;

static inline void check_fail_at(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static inline void check_fail_at(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    check_failures++;
    fprintf(stderr, "FAIL %s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
}

#define CHECK(cond, ...)                                                     \
    do {                                                                     \
        check_count++;                                                       \
        if (!(cond)) check_fail_at(__FILE__, __LINE__, __VA_ARGS__);         \
    } while (0)

#define REQUIRE(cond, ret, ...)                                              \
    do {                                                                     \
        check_count++;                                                       \
        if (!(cond)) {                                                       \
            check_fail_at(__FILE__, __LINE__, __VA_ARGS__);                  \
            return ret;                                                      \
        }                                                                    \
    } while (0)

#define REQUIRE_V(cond, ...)                                                 \
    do {                                                                     \
        check_count++;                                                       \
        if (!(cond)) {                                                       \
            check_fail_at(__FILE__, __LINE__, __VA_ARGS__);                  \
            return;                                                          \
        }                                                                    \
    } while (0)

/* Evaluates to 1 when the status matched. */
#define CHECK_ST(expr, want)                                                 \
    check_status_at(__FILE__, __LINE__, #expr, (expr), (want))

static inline int check_status_at(const char *file, int line, const char *text,
                           hashevict_status got, hashevict_status want) {
    check_count++;
    if (got == want) return 1;
    check_fail_at(file, line, "%s returned %d (%s), want %d (%s); last error: \"%s\"",
                  text, (int)got, hashevict_status_string(got), (int)want,
                  hashevict_status_string(want),
                  got != HASHEVICT_OK ? hashevict_last_error() : "");
    return 0;
}

static inline int check_report(const char *name) {
    if (check_failures == 0) {
        printf("%s: OK (%d checks)\n", name, check_count);
    } else {
        printf("%s: FAILED (%d of %d checks failed)\n", name, check_failures,
               check_count);
    }
    fflush(stdout);
    return check_failures == 0 ? 0 : 1;
}

#endif /* HASHEVICT_TEST_CHECK_H */
