/* util.c — allocation that aborts on failure, strict value parsers. */
#include "core/util.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static TAKO_NORETURN void oom(size_t n)
{
    fprintf(stderr, "tako: out of memory allocating %zu bytes\n", n);
    abort();
}

void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        oom(n);
    return p;
}

void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        oom(n * size);
    return p;
}

void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        oom(n);
    return q;
}

char *xstrdup(const char *s) { return xstrndup(s, strlen(s)); }

char *xstrndup(const char *s, size_t n)
{
    char *p = xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *xasprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    int r = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (r < 0)
        oom(0);
    return s;
}

void die(int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("tako: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(status);
}

int parse_uint(const char *s, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;
    if (!s || !*s)
        return -EINVAL;
    for (const char *p = s; *p; p++) {
        if (!isdigit((unsigned char)*p))
            return -EINVAL;
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -ERANGE;
        v = v * 10 + d;
    }
    if (v > max)
        return -ERANGE;
    *out = v;
    return 0;
}

/* Read an unsigned decimal with an optional fraction: "1", "1.5". */
static int read_number(const char **pp, double *out)
{
    const char *p = *pp;
    double v = 0;
    int digits = 0;
    while (isdigit((unsigned char)*p)) {
        v = v * 10 + (*p++ - '0');
        digits++;
    }
    if (*p == '.') {
        double scale = 0.1;
        p++;
        int frac = 0;
        while (isdigit((unsigned char)*p)) {
            v += (*p++ - '0') * scale;
            scale /= 10;
            frac++;
        }
        if (!frac)
            return -EINVAL;
    }
    if (!digits)
        return -EINVAL;
    *pp = p;
    *out = v;
    return 0;
}

int parse_duration_ms(const char *s, uint64_t *out)
{
    static const struct {
        const char *unit;
        double ms;
    } units[] = {{"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000}};
    if (!s || !*s)
        return -EINVAL;
    const char *p = s;
    double total = 0;
    bool any_unit = false;
    while (*p) {
        double v;
        if (read_number(&p, &v) < 0)
            return -EINVAL;
        if (!*p) {
            if (any_unit)
                return -EINVAL; /* "1m30" is ambiguous */
            total += v * 1000;
            break;
        }
        size_t best = SIZE_MAX, best_len = 0;
        for (size_t i = 0; i < ARRAY_LEN(units); i++) {
            size_t l = strlen(units[i].unit);
            if (strncmp(p, units[i].unit, l) == 0 && !isalpha((unsigned char)p[l]) && l > best_len) {
                best = i;
                best_len = l;
            }
        }
        if (best == SIZE_MAX)
            return -EINVAL;
        total += v * units[best].ms;
        p += best_len;
        any_unit = true;
    }
    if (total > 9e15)
        return -ERANGE;
    *out = (uint64_t)(total + 0.5);
    return 0;
}

int parse_size_bytes(const char *s, uint64_t *out)
{
    static const struct {
        const char *unit;
        double mul;
    } units[] = {{"", 1},
                 {"b", 1},
                 {"k", 1024.0},
                 {"kb", 1024.0},
                 {"kib", 1024.0},
                 {"m", 1048576.0},
                 {"mb", 1048576.0},
                 {"mib", 1048576.0},
                 {"g", 1073741824.0},
                 {"gb", 1073741824.0},
                 {"gib", 1073741824.0},
                 {"t", 1099511627776.0},
                 {"tb", 1099511627776.0},
                 {"tib", 1099511627776.0}};
    if (!s || !*s)
        return -EINVAL;
    const char *p = s;
    double v;
    if (read_number(&p, &v) < 0)
        return -EINVAL;
    for (size_t i = 0; i < ARRAY_LEN(units); i++) {
        if (strcasecmp(p, units[i].unit) == 0) {
            double b = v * units[i].mul;
            if (b > 1.8e19)
                return -ERANGE;
            *out = (uint64_t)(b + 0.5);
            return 0;
        }
    }
    return -EINVAL;
}

int parse_percent(const char *s, double *out)
{
    if (!s || !*s)
        return -EINVAL;
    const char *p = s;
    double v;
    if (read_number(&p, &v) < 0)
        return -EINVAL;
    if (*p == '%')
        p++;
    if (*p)
        return -EINVAL;
    *out = v;
    return 0;
}

const char *fmt_duration(uint64_t ms, char *buf, size_t len)
{
    unsigned long long s = ms / 1000;
    if (ms < 1000)
        snprintf(buf, len, "%llums", (unsigned long long)ms);
    else if (ms < 60000) /* truncated to tenths: 59999 is "59.9s", never "60.0s" */
        snprintf(buf, len, (ms / 100) % 10 ? "%llu.%llus" : "%llus", s,
                 (unsigned long long)((ms / 100) % 10));
    else if (s < 3600)
        snprintf(buf, len, s % 60 ? "%llum%llus" : "%llum", s / 60, s % 60);
    else if (s < 86400)
        snprintf(buf, len, (s / 60) % 60 ? "%lluh%llum" : "%lluh", s / 3600, (s / 60) % 60);
    else
        snprintf(buf, len, (s / 3600) % 24 ? "%llud%lluh" : "%llud", s / 86400, (s / 3600) % 24);
    return buf;
}

const char *fmt_bytes(uint64_t b, char *buf, size_t len)
{
    const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)b;
    size_t i = 0;
    while (v >= 1024 && i + 1 < ARRAY_LEN(u)) {
        v /= 1024;
        i++;
    }
    if (i == 0)
        snprintf(buf, len, "%llu B", (unsigned long long)b);
    else
        snprintf(buf, len, "%.1f %s", v, u[i]);
    return buf;
}

bool str_starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

bool str_ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && memcmp(s + a - b, suffix, b) == 0;
}

size_t str_edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    size_t *row = xcalloc(lb + 1, sizeof(size_t));
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t prev = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t cur = row[j];
            size_t cost = tolower((unsigned char)a[i - 1]) == tolower((unsigned char)b[j - 1]) ? 0 : 1;
            size_t v = prev + cost;
            if (row[j] + 1 < v)
                v = row[j] + 1;
            if (row[j - 1] + 1 < v)
                v = row[j - 1] + 1;
            row[j] = v;
            prev = cur;
        }
    }
    size_t d = row[lb];
    free(row);
    return d;
}

uint64_t time_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -errno;
        if (w == 0)
            return -ENOSPC;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

uint64_t time_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void time_iso8601(char buf[32])
{
    uint64_t ms = time_wall_ms();
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    size_t n = strftime(buf, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, 32 - n, ".%03uZ", (unsigned)(ms % 1000));
}
