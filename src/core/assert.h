/* assert.h — invariants that must hold whatever the input: BUG_ON(cond)
 * stops the process at once, naming the file, line and condition (as
 * HAProxy's BUG_ON and h2o's assertions do), instead of running on with a
 * corrupted state. Kept in every build: a condition here is cheap and a
 * silent corruption is not. Never for input errors: those are reported. */
#ifndef TAKO_CORE_ASSERT_H
#define TAKO_CORE_ASSERT_H

/* Log "BUG at FILE:LINE: COND" to stderr and abort(). */
__attribute__((noreturn, cold)) void tako__bug(const char *file, int line, const char *cond);

#define BUG_ON(cond)                                                                          \
    do {                                                                                      \
        if (__builtin_expect(!!(cond), 0))                                                    \
            tako__bug(__FILE__, __LINE__, #cond);                                             \
    } while (0)

#endif
