/* unit.h — a tiny unit test runner: TEST(name) functions, CHECK macros,
 * and a closing line "N passed, N failed" per test binary. */
#ifndef TAKO_TESTS_UNIT_H
#define TAKO_TESTS_UNIT_H

#include <stdio.h>
#include <string.h>

struct unit_test {
    const char *name;
    void (*fn)(void);
    struct unit_test *next;
};

void unit_register(struct unit_test *t);
void unit_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
extern int unit_current_failed;

#define TEST(name)                                                                            \
    static void test_##name(void);                                                            \
    static struct unit_test unit_##name = {#name, test_##name, NULL};                         \
    __attribute__((constructor)) static void unit_reg_##name(void) { unit_register(&unit_##name); } \
    static void test_##name(void)

#define CHECK(cond)                                                                           \
    do {                                                                                      \
        if (!(cond)) {                                                                        \
            unit_fail(__FILE__, __LINE__, "CHECK(%s)", #cond);                                \
            return;                                                                           \
        }                                                                                     \
    } while (0)

#define CHECK_INT(a, b)                                                                       \
    do {                                                                                      \
        long long va_ = (long long)(a), vb_ = (long long)(b);                                 \
        if (va_ != vb_) {                                                                     \
            unit_fail(__FILE__, __LINE__, "%s == %s: %lld != %lld", #a, #b, va_, vb_);        \
            return;                                                                           \
        }                                                                                     \
    } while (0)

#define CHECK_STR(a, b)                                                                       \
    do {                                                                                      \
        const char *sa_ = (a), *sb_ = (b);                                                    \
        if (!sa_ || !sb_ || strcmp(sa_, sb_) != 0) {                                          \
            unit_fail(__FILE__, __LINE__, "%s == %s: \"%s\" != \"%s\"", #a, #b,               \
                      sa_ ? sa_ : "(null)", sb_ ? sb_ : "(null)");                            \
            return;                                                                           \
        }                                                                                     \
    } while (0)

/* CHECK_CONTAINS(haystack, needle) */
#define CHECK_CONTAINS(h, n)                                                                  \
    do {                                                                                      \
        const char *sh_ = (h), *sn_ = (n);                                                    \
        if (!sh_ || !strstr(sh_, sn_)) {                                                      \
            unit_fail(__FILE__, __LINE__, "\"%s\" does not contain \"%s\"",                   \
                      sh_ ? sh_ : "(null)", sn_);                                             \
            return;                                                                           \
        }                                                                                     \
    } while (0)

#endif
