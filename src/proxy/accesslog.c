/* accesslog.c — one line per request, buffered per worker and written with
 * one write(2) per batch of events (O_APPEND: lines of several workers
 * never interleave). Text or JSON. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/util.h"
#include "proxy/proxy_int.h"

#define ALOG_BUF 65536
#define ALOG_LINE_MAX 2048

static __thread uint64_t t_sec = UINT64_MAX;
static __thread char t_prefix[24]; /* "2024-01-01T12:00:00" */

static void ts(char out[32])
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    uint64_t sec = (uint64_t)now.tv_sec;
    if (sec != t_sec) {
        struct tm tm;
        time_t t = (time_t)sec;
        gmtime_r(&t, &tm);
        strftime(t_prefix, sizeof(t_prefix), "%Y-%m-%dT%H:%M:%S", &tm);
        t_sec = sec;
    }
    snprintf(out, 32, "%s.%03uZ", t_prefix, (unsigned)(now.tv_nsec / 1000000));
}

/* Copy s into out escaping for a quoted text field or a JSON string. */
static size_t esc(char *out, size_t cap, const char *s, size_t n, bool json)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (size_t i = 0; i < n && o + 6 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c < 0x20 || c == 0x7f || (!json && c >= 0x80)) {
            if (json) {
                memcpy(out + o, "\\u00", 4);
                out[o + 4] = hex[c >> 4];
                out[o + 5] = hex[c & 15];
                o += 6;
            } else {
                out[o++] = '\\';
                out[o++] = 'x';
                out[o++] = hex[c >> 4];
                out[o++] = hex[c & 15];
            }
        } else if (json && c >= 0x80) {
            /* not known to be UTF-8: escape as a code point of its byte */
            memcpy(out + o, "\\u00", 4);
            out[o + 4] = hex[c >> 4];
            out[o + 5] = hex[c & 15];
            o += 6;
        } else {
            out[o++] = (char)c;
        }
    }
    return o;
}

static void alog_flush_defer(struct ev_defer *d)
{
    struct worker *w = DLIST_ENTRY(d, struct worker, log_defer);
    w->log_flush_pending = false;
    alog__flush(w);
}

void alog__flush(struct worker *w)
{
    size_t off = 0;
    while (off < w->log_len) {
        ssize_t n = write(w->p->log_fd, w->log + off, w->log_len - off);
        if (n <= 0)
            break; /* a full disk loses log lines, never requests */
        off += (size_t)n;
    }
    w->log_len = 0;
}

void alog__write(struct worker *w, const struct alog_rec *r)
{
    if (!w->log)
        w->log = xmalloc(ALOG_BUF);
    if (w->log_len + ALOG_LINE_MAX > ALOG_BUF)
        alog__flush(w);
    char t[32], path[1100], rid[200], method[64];
    ts(t);
    bool json = w->p->o.access_log_format == PROXY_LOG_JSON;
    size_t pl = esc(path, sizeof(path), r->path, r->path_len, json);
    size_t rl = esc(rid, sizeof(rid), r->rid, r->rid_len, json);
    size_t ml = esc(method, sizeof(method), r->method, r->method_len, json);
    char *o = w->log + w->log_len;
    size_t cap = ALOG_BUF - w->log_len;
    int n;
    if (json)
        n = snprintf(o, cap,
                     "{\"time\":\"%s\",\"client\":\"%s\",\"method\":\"%.*s\",\"path\":\"%.*s\","
                     "\"status\":%d,\"bytes\":%llu,\"upstream\":\"%s\",\"duration_ms\":%.3f,"
                     "\"request_id\":\"%.*s\",\"pool\":\"%s\"}\n",
                     t, r->client, (int)ml, method, (int)pl, path, r->status,
                     (unsigned long long)r->bytes, r->upstream, (double)r->dur_us / 1000.0,
                     (int)rl, rid, r->pool);
    else
        n = snprintf(o, cap, "%s %s \"%.*s %.*s\" %d %llu %s %.3fms %.*s %s\n", t, r->client,
                     (int)ml, method, (int)pl, path, r->status, (unsigned long long)r->bytes,
                     r->upstream, (double)r->dur_us / 1000.0, (int)(rl ? rl : 1),
                     rl ? rid : "-", r->pool);
    if (n < 0 || (size_t)n >= cap)
        return;
    w->log_len += (size_t)n;
    if (!w->log_flush_pending) {
        w->log_flush_pending = true;
        ev_defer(&w->loop, &w->log_defer, alog_flush_defer);
    }
}
