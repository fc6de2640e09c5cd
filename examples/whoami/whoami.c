/* whoami.c — the instance-identification demo service: each instance tells
 * which one it is (hostname, pid, port), so load balancing can be seen.
 *
 *   PORT=3001 HOSTNAME=instance-1 ./whoami      (or: ./whoami --port 3001)
 *
 * GET /              HTML page: hostname, requests, uptime, RSS; refreshes every 3 s
 * GET /health        200 {"status":"healthy",...}; 503 "unhealthy" after a toggle
 * POST /health/toggle flip the health state
 * GET /api/instance  {"hostname","pid","port","uptime","requests","memory":{"rss"},"timestamp"}
 * GET /work?ms=N     burn about N ms of CPU, then answer
 * GET /sleep?ms=N    answer after N ms without blocking other requests
 * POST /echo         answer with the request body
 *
 * One thread, one event loop (src/core/ev.c). SIGTERM: stop accepting,
 * finish in-flight requests, exit 0.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/ev.h"
#include "core/net.h"
#include "core/util.h"

#define HEAD_MAX 8192          /* request line + headers; more → 431 */
#define BODY_MAX (1u << 20)    /* bodies kept for /echo; larger are discarded */
#define SLEEP_MAX_MS 600000u
#define WORK_MAX_MS 60000u
#define DRAIN_MAX_MS 30000u

struct conn {
    int fd;
    struct ev_io io;
    struct ev_timer timer; /* /sleep */
    struct ev_defer defer;
    char in[HEAD_MAX + 1];
    size_t in_len;
    char *out;
    size_t out_len, out_off, out_cap;
    /* body being read */
    enum { ST_HEAD, ST_BODY_CL, ST_BODY_CHUNK_SIZE, ST_BODY_CHUNK_DATA, ST_BODY_CHUNK_CRLF,
           ST_BODY_TRAILER, ST_SLEEPING, ST_CLOSING } st;
    uint64_t body_left;
    char *body;
    size_t body_len;
    /* the request being served */
    char method[16];
    char target[1024];
    bool keep_alive;
    bool http10;
    bool closed;
    struct conn *next, *prev;
};

static struct {
    struct ev_loop loop;
    int lfd;
    struct ev_io lio;
    struct ev_signal sigterm, sigint;
    struct ev_timer drain_timer;
    struct ev_timer accept_timer; /* resumes accepting after EMFILE */
    char hostname[256];
    /* The hostname comes from the environment: escaped once for each place
     * it is written to, so no value can break the JSON, HTML or header. */
    char host_json[256 * 6];
    char host_html[256 * 6];
    char host_hdr[256];
    uint16_t port;
    uint64_t started_ms;
    uint64_t requests;
    bool healthy;
    bool draining;
    struct conn *conns;
    size_t nconns;
} g;

static void conn_on_io(struct ev_loop *loop, struct ev_io *w, uint32_t ev);
static void conn_process(struct conn *c);

static uint64_t rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, res = 0;
    if (f) {
        if (fscanf(f, "%lu %lu", &size, &res) != 2)
            res = 0;
        fclose(f);
    }
    return (uint64_t)res * (uint64_t)sysconf(_SC_PAGESIZE);
}

/* Fill g.host_json, g.host_html and g.host_hdr from g.hostname. */
static void hostname_escape(void)
{
    char *j = g.host_json, *h = g.host_html, *d = g.host_hdr;
    for (const unsigned char *p = (const unsigned char *)g.hostname; *p; p++) {
        unsigned char ch = *p;
        if (ch == '"' || ch == '\\') {
            *j++ = '\\';
            *j++ = (char)ch;
        } else if (ch < 0x20 || ch == 0x7f) {
            j += sprintf(j, "\\u%04x", ch);
        } else {
            *j++ = (char)ch;
        }
        switch (ch) {
        case '<': h = stpcpy(h, "&lt;"); break;
        case '>': h = stpcpy(h, "&gt;"); break;
        case '&': h = stpcpy(h, "&amp;"); break;
        case '"': h = stpcpy(h, "&quot;"); break;
        case '\'': h = stpcpy(h, "&#39;"); break;
        default: *h++ = (char)ch;
        }
        /* Header values cannot hold control characters (CR LF would split it). */
        *d++ = (ch < 0x20 || ch == 0x7f) ? '?' : (char)ch;
    }
    *j = *h = *d = '\0';
}

static uint64_t uptime_s(void) { return (ev_time_ms() - g.started_ms) / 1000; }

/* ---- connection lifetime ---- */

static void conn_free(struct ev_defer *d)
{
    struct conn *c = (struct conn *)((char *)d - offsetof(struct conn, defer));
    free(c->out);
    free(c->body);
    free(c);
}

static void maybe_exit(void)
{
    if (g.draining && g.nconns == 0)
        ev_loop_stop(&g.loop);
}

static void conn_close(struct conn *c)
{
    if (c->closed)
        return;
    c->closed = true;
    ev_io_stop(&g.loop, &c->io);
    ev_timer_stop(&g.loop, &c->timer);
    close(c->fd);
    if (c->prev)
        c->prev->next = c->next;
    else
        g.conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    g.nconns--;
    ev_defer(&g.loop, &c->defer, conn_free);
    maybe_exit();
}

static void out_append(struct conn *c, const char *p, size_t n)
{
    if (c->out_len + n > c->out_cap) {
        c->out_cap = (c->out_len + n) * 2;
        c->out = xrealloc(c->out, c->out_cap);
    }
    memcpy(c->out + c->out_len, p, n);
    c->out_len += n;
}

/* Write what is buffered; returns false when the connection was closed. */
static bool conn_flush(struct conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (w == -1) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                ev_io_start(&g.loop, &c->io, EPOLLOUT);
                return true;
            }
            if (errno == EINTR)
                continue;
            conn_close(c);
            return false;
        }
        c->out_off += (size_t)w;
    }
    c->out_off = c->out_len = 0;
    if (c->st == ST_CLOSING) {
        shutdown(c->fd, SHUT_WR);
        conn_close(c);
        return false;
    }
    if (c->st != ST_SLEEPING)
        ev_io_start(&g.loop, &c->io, EPOLLIN);
    return true;
}

static const char *reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 431: return "Request Header Fields Too Large";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    default: return "Unknown";
    }
}

static void respond(struct conn *c, int status, const char *ctype, const char *body, size_t len)
{
    char head[512];
    bool ka = c->keep_alive && !g.draining;
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\n"
                     "Content-Type: %s\r\n"
                     "Content-Length: %zu\r\n"
                     "Cache-Control: no-store\r\n"
                     "X-Instance: %s\r\n"
                     "%s"
                     "\r\n",
                     status, reason(status), ctype, len, g.host_hdr,
                     ka ? (c->http10 ? "Connection: keep-alive\r\n" : "")
                        : "Connection: close\r\n");
    out_append(c, head, (size_t)n);
    if (strcmp(c->method, "HEAD") != 0)
        out_append(c, body, len);
    if (!ka)
        c->st = ST_CLOSING;
}

static void respond_json(struct conn *c, int status, const char *json)
{
    respond(c, status, "application/json", json, strlen(json));
}

static void respond_error(struct conn *c, int status, const char *msg)
{
    char body[256];
    snprintf(body, sizeof(body), "{\"error\":\"%s\"}\n", msg);
    /* After a framing error the byte stream cannot be trusted: close. */
    if (status != 404 && status != 405)
        c->keep_alive = false;
    respond_json(c, status, body);
}

/* ---- routes ---- */

static unsigned long query_ms(const char *target, unsigned long max)
{
    const char *q = strchr(target, '?');
    while (q) {
        q++;
        if (strncmp(q, "ms=", 3) == 0) {
            unsigned long v = strtoul(q + 3, NULL, 10);
            return v > max ? max : v;
        }
        q = strchr(q, '&');
    }
    return 0;
}

static bool path_is(const char *target, const char *path)
{
    size_t n = strlen(path);
    return strncmp(target, path, n) == 0 && (target[n] == '\0' || target[n] == '?');
}

static void route_health(struct conn *c)
{
    char ts[32], body[2048];
    time_iso8601(ts);
    snprintf(body, sizeof(body),
             "{\"status\":\"%s\",\"hostname\":\"%s\",\"uptime\":%llu,\"requests\":%llu,"
             "\"timestamp\":\"%s\"}\n",
             g.healthy ? "healthy" : "unhealthy", g.host_json, (unsigned long long)uptime_s(),
             (unsigned long long)g.requests, ts);
    respond_json(c, g.healthy ? 200 : 503, body);
}

static void route_instance(struct conn *c)
{
    char ts[32], body[2048];
    time_iso8601(ts);
    snprintf(body, sizeof(body),
             "{\"hostname\":\"%s\",\"pid\":%d,\"port\":%u,\"uptime\":%llu,\"requests\":%llu,"
             "\"memory\":{\"rss\":%llu},\"timestamp\":\"%s\"}\n",
             g.host_json, (int)getpid(), g.port, (unsigned long long)uptime_s(),
             (unsigned long long)g.requests, (unsigned long long)rss_bytes(), ts);
    respond_json(c, 200, body);
}

static void route_page(struct conn *c)
{
    char mem[32], up[32];
    fmt_bytes(rss_bytes(), mem, sizeof(mem));
    fmt_duration(uptime_s() * 1000, up, sizeof(up));
    char *page = xasprintf(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta http-equiv=\"refresh\" content=\"3\">"
        "<link rel=\"icon\" href=\"data:,\">"  /* no /favicon.ico request in the rotation */
        "<title>%s</title>"
        "<style>body{font-family:system-ui,sans-serif;background:#0f172a;color:#e2e8f0;"
        "display:flex;flex-direction:column;align-items:center;justify-content:center;"
        "min-height:90vh;margin:0}h1{font-size:4rem;margin:.2em 0;color:#38bdf8}"
        "table{font-size:1.2rem}td{padding:.2em 1em}small{color:#94a3b8}</style></head>\n"
        "<body><small>this page was served by</small>\n"
        "<h1 id=\"hostname\">%s</h1>\n"
        "<table><tr><td>requests</td><td id=\"requests\">%llu</td></tr>"
        "<tr><td>uptime</td><td id=\"uptime\">%s</td></tr>"
        "<tr><td>memory (RSS)</td><td id=\"memory\">%s</td></tr>"
        "<tr><td>pid</td><td>%d</td></tr><tr><td>port</td><td>%u</td></tr></table>\n"
        "<p><small>refreshes every 3 s: watch the hostname change</small></p></body></html>\n",
        g.host_html, g.host_html, (unsigned long long)g.requests, up, mem, (int)getpid(), g.port);
    respond(c, 200, "text/html; charset=utf-8", page, strlen(page));
    free(page);
}

static void sleep_done(struct ev_loop *loop, struct ev_timer *t)
{
    (void)loop;
    struct conn *c = t->data;
    char body[2048];
    snprintf(body, sizeof(body), "{\"hostname\":\"%s\",\"slept_ms\":%llu}\n", g.host_json,
             (unsigned long long)query_ms(c->target, SLEEP_MAX_MS));
    c->st = ST_HEAD;
    respond_json(c, 200, body);
    if (conn_flush(c) && c->st == ST_HEAD)
        conn_process(c); /* pipelined requests waiting behind the sleep */
}

static void burn_cpu(unsigned long ms)
{
    struct timespec a, b;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &a);
    volatile uint64_t x = 0;
    for (;;) {
        for (int i = 0; i < 10000; i++)
            x += (uint64_t)i * 2654435761u;
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &b);
        long el = (b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000;
        if (el >= (long)ms)
            break;
    }
}

static void dispatch(struct conn *c)
{
    const char *t = c->target;
    bool get = strcmp(c->method, "GET") == 0 || strcmp(c->method, "HEAD") == 0;
    bool post = strcmp(c->method, "POST") == 0;
    if (!path_is(t, "/health"))
        g.requests++;
    if (path_is(t, "/health")) {
        if (!get)
            return respond_error(c, 405, "method not allowed");
        return route_health(c);
    }
    if (path_is(t, "/health/toggle")) {
        if (!post)
            return respond_error(c, 405, "method not allowed");
        g.healthy = !g.healthy;
        return route_health(c);
    }
    if (path_is(t, "/api/instance"))
        return route_instance(c);
    if (path_is(t, "/work")) {
        unsigned long ms = query_ms(t, WORK_MAX_MS);
        burn_cpu(ms);
        char body[2048];
        snprintf(body, sizeof(body), "{\"hostname\":\"%s\",\"worked_ms\":%lu}\n", g.host_json,
                 ms);
        return respond_json(c, 200, body);
    }
    if (path_is(t, "/sleep")) {
        c->st = ST_SLEEPING;
        ev_io_stop(&g.loop, &c->io); /* no more reads until the answer is out */
        ev_timer_start(&g.loop, &c->timer, query_ms(t, SLEEP_MAX_MS));
        return;
    }
    if (path_is(t, "/echo")) {
        return respond(c, 200, "application/octet-stream", c->body ? c->body : "", c->body_len);
    }
    if (path_is(t, "/") || path_is(t, "/index.html"))
        return route_page(c);
    respond_error(c, 404, "not found");
}

/* ---- parsing: strict enough to refuse what a proxy must never forward ---- */

static bool is_tchar(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}

/* Parse the head in c->in[0..end); returns 0, or an HTTP status for errors. */
static int parse_head(struct conn *c, size_t end)
{
    char *p = c->in, *lim = c->in + end;
    char *eol = memchr(p, '\n', (size_t)(lim - p));
    if (!eol || eol == p || eol[-1] != '\r')
        return 400;
    /* request line: METHOD SP TARGET SP HTTP/1.x */
    char *sp1 = memchr(p, ' ', (size_t)(eol - p));
    if (!sp1 || sp1 == p || (size_t)(sp1 - p) >= sizeof(c->method))
        return 400;
    for (char *q = p; q < sp1; q++)
        if (!is_tchar(*q))
            return 400;
    memcpy(c->method, p, (size_t)(sp1 - p));
    c->method[sp1 - p] = '\0';
    char *sp2 = memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1));
    if (!sp2 || sp2 == sp1 + 1)
        return 400;
    if ((size_t)(sp2 - sp1 - 1) >= sizeof(c->target))
        return 431;
    for (char *q = sp1 + 1; q < sp2; q++)
        if ((unsigned char)*q <= 0x20 || *q == 0x7f)
            return 400;
    memcpy(c->target, sp1 + 1, (size_t)(sp2 - sp1 - 1));
    c->target[sp2 - sp1 - 1] = '\0';
    size_t vlen = (size_t)(eol - 1 - (sp2 + 1));
    if (vlen == 8 && memcmp(sp2 + 1, "HTTP/1.1", 8) == 0)
        c->http10 = false;
    else if (vlen == 8 && memcmp(sp2 + 1, "HTTP/1.0", 8) == 0)
        c->http10 = true;
    else
        return 400;
    c->keep_alive = !c->http10;
    bool have_cl = false, chunked = false;
    uint64_t cl = 0;
    for (p = eol + 1; p < lim;) {
        eol = memchr(p, '\n', (size_t)(lim - p));
        if (!eol || eol[-1] != '\r')
            return 400;
        if (eol - 1 == p)
            break; /* blank line */
        if (*p == ' ' || *p == '\t')
            return 400; /* obs-fold */
        char *colon = memchr(p, ':', (size_t)(eol - p));
        if (!colon || colon == p)
            return 400;
        for (char *q = p; q < colon; q++)
            if (!is_tchar(*q))
                return 400;
        char *v = colon + 1, *ve = eol - 1;
        while (v < ve && (*v == ' ' || *v == '\t'))
            v++;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        for (char *q = v; q < ve; q++)
            if (*q == '\r' || *q == '\0')
                return 400;
        size_t nl = (size_t)(colon - p), vl = (size_t)(ve - v);
        if (nl == 14 && strncasecmp(p, "content-length", 14) == 0) {
            char num[24];
            uint64_t val;
            if (vl == 0 || vl >= sizeof(num))
                return 400;
            memcpy(num, v, vl);
            num[vl] = '\0';
            if (parse_uint(num, UINT64_MAX / 2, &val) < 0 || (have_cl && val != cl))
                return 400;
            have_cl = true;
            cl = val;
        } else if (nl == 17 && strncasecmp(p, "transfer-encoding", 17) == 0) {
            if (vl == 7 && strncasecmp(v, "chunked", 7) == 0 && !chunked)
                chunked = true;
            else
                return 501;
        } else if (nl == 10 && strncasecmp(p, "connection", 10) == 0) {
            for (char *q = v; q < ve;) {
                while (q < ve && (*q == ' ' || *q == ','))
                    q++;
                char *e = q;
                while (e < ve && *e != ',' && *e != ' ')
                    e++;
                if (e - q == 5 && strncasecmp(q, "close", 5) == 0)
                    c->keep_alive = false;
                else if (e - q == 10 && strncasecmp(q, "keep-alive", 10) == 0 && c->http10)
                    c->keep_alive = true;
                q = e;
            }
        }
        p = eol + 1;
    }
    if (have_cl && chunked)
        return 400; /* smuggling shape: refuse */
    c->body_len = 0;
    free(c->body);
    c->body = NULL;
    if (chunked) {
        c->st = ST_BODY_CHUNK_SIZE;
    } else if (cl > 0) {
        c->st = ST_BODY_CL;
        c->body_left = cl;
    } else {
        c->st = ST_HEAD;
    }
    return 0;
}

static void body_keep(struct conn *c, const char *p, size_t n)
{
    if (c->body_len + n > BODY_MAX)
        return; /* read and discarded beyond the cap */
    c->body = xrealloc(c->body, c->body_len + n + 1);
    memcpy(c->body + c->body_len, p, n);
    c->body_len += n;
}

static void consume(struct conn *c, size_t n)
{
    memmove(c->in, c->in + n, c->in_len - n);
    c->in_len -= n;
}

/* Run the state machine over buffered input. */
static void conn_process(struct conn *c)
{
    for (;;) {
        if (c->closed || c->st == ST_SLEEPING || c->st == ST_CLOSING)
            return;
        if (c->st == ST_HEAD) {
            if (c->in_len == 0)
                return;
            /* Tolerate a stray CRLF between requests (RFC 9112 2.2). */
            if (c->in_len >= 2 && c->in[0] == '\r' && c->in[1] == '\n') {
                consume(c, 2);
                continue;
            }
            c->in[c->in_len] = '\0';
            char *end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
            /* A bare LF would hide the end of the head ("\n\n"): refuse it
             * now rather than wait for a CRLF CRLF that never comes. */
            size_t scan = end ? (size_t)(end - c->in) : c->in_len;
            for (size_t i = 0; i < scan; i++) {
                if (c->in[i] == '\n' && (i == 0 || c->in[i - 1] != '\r')) {
                    strcpy(c->method, "GET");
                    respond_error(c, 400, "bad request");
                    conn_flush(c);
                    return;
                }
            }
            if (!end) {
                if (c->in_len >= HEAD_MAX) {
                    strcpy(c->method, "GET");
                    respond_error(c, 431, "request header fields too large");
                    conn_flush(c);
                }
                return;
            }
            size_t hlen = (size_t)(end - c->in) + 4;
            int err = parse_head(c, hlen);
            consume(c, hlen);
            if (err) {
                strcpy(c->method, "GET");
                respond_error(c, err, err == 431 ? "request header fields too large"
                                       : err == 501 ? "transfer-encoding not implemented"
                                                    : "bad request");
                conn_flush(c);
                return;
            }
            if (c->st == ST_HEAD) {
                dispatch(c);
                if (c->st != ST_SLEEPING && !conn_flush(c))
                    return;
            }
            continue;
        }
        if (c->st == ST_BODY_CL) {
            size_t n = c->in_len < c->body_left ? c->in_len : (size_t)c->body_left;
            if (n == 0)
                return;
            body_keep(c, c->in, n);
            consume(c, n);
            c->body_left -= n;
            if (c->body_left == 0) {
                c->st = ST_HEAD;
                dispatch(c);
                if (c->st != ST_SLEEPING && !conn_flush(c))
                    return;
            }
            continue;
        }
        if (c->st == ST_BODY_CHUNK_SIZE || c->st == ST_BODY_CHUNK_CRLF ||
            c->st == ST_BODY_TRAILER) {
            char *eol = memchr(c->in, '\n', c->in_len);
            if (!eol) {
                if (c->in_len >= HEAD_MAX) {
                    respond_error(c, 400, "bad chunk");
                    conn_flush(c);
                }
                return;
            }
            size_t ll = (size_t)(eol - c->in) + 1;
            if (ll < 2 || eol[-1] != '\r') {
                respond_error(c, 400, "bad chunk");
                conn_flush(c);
                return;
            }
            if (c->st == ST_BODY_CHUNK_CRLF) {
                if (ll != 2) {
                    respond_error(c, 400, "bad chunk");
                    conn_flush(c);
                    return;
                }
                consume(c, 2);
                c->st = ST_BODY_CHUNK_SIZE;
                continue;
            }
            if (c->st == ST_BODY_TRAILER) {
                consume(c, ll);
                if (ll == 2) {
                    c->st = ST_HEAD;
                    dispatch(c);
                    if (c->st != ST_SLEEPING && !conn_flush(c))
                        return;
                }
                continue;
            }
            uint64_t sz = 0;
            size_t i = 0, digits = 0;
            for (; i < ll - 2; i++) {
                char ch = c->in[i];
                int d = (ch >= '0' && ch <= '9') ? ch - '0'
                        : (ch >= 'a' && ch <= 'f') ? ch - 'a' + 10
                        : (ch >= 'A' && ch <= 'F') ? ch - 'A' + 10
                                                   : -1;
                if (d < 0)
                    break;
                if (++digits > 15) {
                    digits = 0;
                    break;
                }
                sz = sz * 16 + (uint64_t)d;
            }
            if (!digits || (i < ll - 2 && c->in[i] != ';')) {
                respond_error(c, 400, "bad chunk size");
                conn_flush(c);
                return;
            }
            consume(c, ll);
            if (sz == 0)
                c->st = ST_BODY_TRAILER;
            else {
                c->st = ST_BODY_CHUNK_DATA;
                c->body_left = sz;
            }
            continue;
        }
        if (c->st == ST_BODY_CHUNK_DATA) {
            size_t n = c->in_len < c->body_left ? c->in_len : (size_t)c->body_left;
            if (n == 0)
                return;
            body_keep(c, c->in, n);
            consume(c, n);
            c->body_left -= n;
            if (c->body_left == 0)
                c->st = ST_BODY_CHUNK_CRLF;
            continue;
        }
        return;
    }
}

static void conn_on_io(struct ev_loop *loop, struct ev_io *w, uint32_t ev)
{
    (void)loop;
    struct conn *c = w->data;
    if (ev & EPOLLOUT) {
        if (!conn_flush(c))
            return;
        if (c->out_len == 0 && c->st == ST_HEAD)
            conn_process(c);
        return;
    }
    if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        for (;;) {
            if (c->in_len >= HEAD_MAX) {
                conn_process(c);
                if (c->closed || c->in_len >= HEAD_MAX || c->st == ST_SLEEPING ||
                    c->st == ST_CLOSING)
                    return;
            }
            ssize_t r = recv(c->fd, c->in + c->in_len, HEAD_MAX - c->in_len, 0);
            if (r > 0) {
                c->in_len += (size_t)r;
                continue;
            }
            if (r == 0) {
                conn_process(c);
                if (!c->closed && c->out_len == 0)
                    conn_close(c);
                return;
            }
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            conn_close(c);
            return;
        }
        conn_process(c);
    }
}

static void on_accept(struct ev_loop *loop, struct ev_io *w, uint32_t ev)
{
    (void)ev;
    for (;;) {
        int fd = accept4(w->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd == -1) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* Out of descriptors: the listener stays readable, so pause
                 * accepting for a moment instead of spinning on it. */
                ev_io_stop(loop, &g.lio);
                ev_timer_start(loop, &g.accept_timer, 100);
            }
            return; /* EAGAIN: the next readiness */
        }
        net_set_nodelay(fd);
        struct conn *c = xcalloc(1, sizeof(*c));
        c->fd = fd;
        c->st = ST_HEAD;
        ev_io_init(&c->io, fd, conn_on_io, c);
        ev_timer_init(&c->timer, sleep_done, c);
        c->next = g.conns;
        if (g.conns)
            g.conns->prev = c;
        g.conns = c;
        g.nconns++;
        ev_io_start(loop, &c->io, EPOLLIN);
    }
}

static void accept_resume(struct ev_loop *loop, struct ev_timer *t)
{
    (void)t;
    if (!g.draining)
        ev_io_start(loop, &g.lio, EPOLLIN);
}

static void drain_expired(struct ev_loop *loop, struct ev_timer *t)
{
    (void)t;
    ev_loop_stop(loop);
}

static void on_term(struct ev_loop *loop, struct ev_signal *s, int signo)
{
    (void)s;
    (void)signo;
    if (g.draining)
        return;
    g.draining = true;
    ev_io_stop(loop, &g.lio);
    close(g.lfd);
    /* Idle connections go now; busy ones close after their answer. */
    for (struct conn *c = g.conns, *next; c; c = next) {
        next = c->next;
        if (c->st == ST_HEAD && c->in_len == 0 && c->out_len == 0)
            conn_close(c);
        else
            c->keep_alive = false;
    }
    ev_timer_start(loop, &g.drain_timer, DRAIN_MAX_MS);
    maybe_exit();
}

static void usage(FILE *f)
{
    fprintf(f, "Usage: whoami [--port N]\n"
               "\n"
               "A small HTTP service that tells which instance answered.\n"
               "Port: --port, else $PORT, else 3000. Hostname: $HOSTNAME, else gethostname().\n"
               "Routes: / /health /health/toggle /api/instance /work?ms=N /sleep?ms=N /echo\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"port", required_argument, NULL, 'p'}, {"help", no_argument, NULL, 'h'}, {0}};
    const char *port_s = getenv("PORT");
    int o;
    while ((o = getopt_long(argc, argv, "p:h", opts, NULL)) != -1) {
        switch (o) {
        case 'p': port_s = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "whoami: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    uint64_t port = 3000;
    if (port_s && *port_s && parse_uint(port_s, 65535, &port) < 0) {
        fprintf(stderr, "whoami: invalid port '%s'\n", port_s);
        return 2;
    }
    const char *h = getenv("HOSTNAME");
    if (h && *h)
        snprintf(g.hostname, sizeof(g.hostname), "%s", h);
    else if (gethostname(g.hostname, sizeof(g.hostname) - 1) != 0)
        strcpy(g.hostname, "unknown");
    hostname_escape();
    /* Allow many connections: raise the soft fd limit to the hard one. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);
    g.healthy = true;
    g.started_ms = ev_time_ms();
    if (ev_loop_init(&g.loop) < 0) {
        perror("whoami: epoll");
        return 1;
    }
    struct net_addr a;
    char addr_s[32];
    snprintf(addr_s, sizeof(addr_s), "0.0.0.0:%llu", (unsigned long long)port);
    net_parse_addr(addr_s, NULL, &a);
    g.lfd = net_listen_tcp(&a, 4096, false);
    if (g.lfd < 0) {
        fprintf(stderr, "whoami: cannot listen on port %llu: %s\n", (unsigned long long)port,
                strerror(-g.lfd));
        return 1;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    getsockname(g.lfd, (struct sockaddr *)&ss, &sl);
    struct net_addr bound = {.ss = ss, .len = sl};
    g.port = net_addr_port(&bound);
    ev_io_init(&g.lio, g.lfd, on_accept, NULL);
    ev_io_start(&g.loop, &g.lio, EPOLLIN);
    ev_signal_start(&g.loop, &g.sigterm, SIGTERM, on_term, NULL);
    ev_signal_start(&g.loop, &g.sigint, SIGINT, on_term, NULL);
    ev_timer_init(&g.drain_timer, drain_expired, NULL);
    ev_timer_init(&g.accept_timer, accept_resume, NULL);
    printf("whoami %s listening on port %u\n", g.hostname, g.port);
    fflush(stdout);
    int r = ev_run(&g.loop);
    if (g.draining)
        printf("whoami %s: stopped (%zu connections left)\n", g.hostname, g.nconns);
    return r < 0 ? 1 : 0;
}
