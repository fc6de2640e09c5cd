/* log.h — leveled logging to stderr (or a file), one line per call. */
#ifndef TAKO_CORE_LOG_H
#define TAKO_CORE_LOG_H

#include "core/util.h"

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Defaults: level INFO, stderr, no timestamps when stderr is a terminal. */
void log_set_level(enum log_level level);
/* Parse "debug|info|warn|error"; returns 0 or -EINVAL. */
int log_parse_level(const char *s, enum log_level *out);
void log_set_timestamps(bool on);
void log_msg(enum log_level level, const char *fmt, ...) TAKO_PRINTF(2, 3);

#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
