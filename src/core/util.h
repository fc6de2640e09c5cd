/* util.h — allocation that aborts on failure, string and number helpers. */
#ifndef TAKO_CORE_UTIL_H
#define TAKO_CORE_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define TAKO_UNUSED __attribute__((unused))
#define TAKO_PRINTF(f, a) __attribute__((format(printf, f, a)))
#define TAKO_NORETURN __attribute__((noreturn))

/* Allocation failure is not recoverable here: these abort loudly. */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
/* printf into a fresh heap string (caller frees). */
char *xasprintf(const char *fmt, ...) TAKO_PRINTF(1, 2);

/* Print "tako: <msg>" to stderr and exit(status). */
TAKO_NORETURN void die(int status, const char *fmt, ...) TAKO_PRINTF(2, 3);

/* Strict value parsers. Each returns 0 or -EINVAL / -ERANGE and leaves *out
 * untouched on failure.
 *  duration: "250ms", "10s", "2m", "1h", "1m30s"; a bare integer is seconds.
 *  size:     "512", "512k", "512m", "1g" (also kb/mb/gb, KiB/MiB/GiB; 1024-based).
 *  percent:  "70%" or "70" → 70.0 (0 ≤ p).
 *  uint:     decimal digits only, no sign, no spaces. */
int parse_duration_ms(const char *s, uint64_t *out);
int parse_size_bytes(const char *s, uint64_t *out);
int parse_percent(const char *s, double *out);
int parse_uint(const char *s, uint64_t max, uint64_t *out);

/* Format ms as "1.5s", "250ms", "2m", "3h" into buf (compact, for output). */
const char *fmt_duration(uint64_t ms, char *buf, size_t len);
/* Format bytes as "1.2 MiB" into buf. */
const char *fmt_bytes(uint64_t bytes, char *buf, size_t len);

bool str_starts_with(const char *s, const char *prefix);
bool str_ends_with(const char *s, const char *suffix);
/* Levenshtein distance, for did-you-mean hints. */
size_t str_edit_distance(const char *a, const char *b);

/* Wall clock as ISO-8601 UTC with milliseconds: 2024-01-01T12:00:00.000Z */
void time_iso8601(char buf[32]);
/* Wall clock in ms since the epoch. */
/* Write all N bytes of P to FD (EINTR retried): 0 or -errno; a write of
 * nothing counts as -ENOSPC (a full disk). */
int write_all(int fd, const void *p, size_t n);
uint64_t time_wall_ms(void);
/* Milliseconds on the monotonic clock (for deadlines). */
uint64_t time_mono_ms(void);

#endif
