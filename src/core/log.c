/* log.c — leveled logging; a line is written with one write(2) so lines of
 * several threads never interleave. */
#include "core/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static enum log_level g_level = LOG_INFO;
static bool g_timestamps = true;

void log_set_level(enum log_level level) { g_level = level; }
void log_set_timestamps(bool on) { g_timestamps = on; }

int log_parse_level(const char *s, enum log_level *out)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    for (size_t i = 0; i < ARRAY_LEN(names); i++)
        if (strcmp(s, names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    return -EINVAL;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    static const char *tags[] = {"debug", "info", "warn", "error"};
    if (level < g_level)
        return;
    char line[2048];
    size_t n = 0;
    if (g_timestamps) {
        char ts[32];
        time_iso8601(ts);
        n = (size_t)snprintf(line, sizeof(line), "%s ", ts);
    }
    n += (size_t)snprintf(line + n, sizeof(line) - n, "%s: ", tags[level]);
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
    va_end(ap);
    if (w < 0)
        return;
    n += (size_t)w;
    if (n > sizeof(line) - 2)
        n = sizeof(line) - 2;
    line[n++] = '\n';
    ssize_t r = write(STDERR_FILENO, line, n);
    (void)r;
}
