/* assert.c — the failure path of BUG_ON (assert.h). */
#include "core/assert.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

void tako__bug(const char *file, int line, const char *cond)
{
    /* One write: other threads may be logging; no allocation, no locks. */
    char buf[512];
    int n = snprintf(buf, sizeof(buf), "BUG at %s:%d: %s\n", file, line, cond);
    if (n > 0) {
        ssize_t w = write(2, buf, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
        (void)w;
    }
    abort();
}
