/* api.c — the control API server: a small HTTP/1.1 server on a unix socket. */
#include "daemon/api.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "core/net.h"
#include "core/util.h"
#include "http/http.h"

#define API_HEAD_MAX 16384
#define API_BODY_MAX (8u << 20)
#define API_OUT_MAX (16u << 20) /* a stream reader this far behind is dropped */
#define API_READ_TIMEOUT_MS 30000

struct api_server {
    struct ev_loop *loop;
    int fd;
    struct ev_io io;
    const struct api_route *routes;
    void *data;
    char *path;
};

struct api_conn {
    struct api_server *srv;
    int fd;
    struct ev_io io;
    struct ev_timer timer;
    struct ev_defer defer;
    char *in;
    size_t in_len, in_cap;
    size_t head_len; /* 0 until the head is complete */
    size_t body_len;
    char *out;
    size_t out_len, out_off, out_cap;
    bool sock_closed;
    bool handled;      /* request dispatched */
    bool streaming;    /* owner holds the connection */
    bool owner_done;   /* owner finished (or never held it) */
    bool close_after;  /* close once out is flushed */
    bool free_queued;
    api_close_cb on_close;
    void *close_data;
    char method[16];
    char path[1536];
    char query[1024];
};

static void conn_free_cb(struct ev_defer *d)
{
    struct api_conn *c = (struct api_conn *)((char *)d - offsetof(struct api_conn, defer));
    free(c->in);
    free(c->out);
    free(c);
}

static void conn_maybe_free(struct api_conn *c)
{
    if (c->sock_closed && c->owner_done && !c->free_queued) {
        c->free_queued = true;
        ev_defer(c->srv->loop, &c->defer, conn_free_cb);
    }
}

static void conn_close(struct api_conn *c)
{
    if (c->sock_closed)
        return;
    c->sock_closed = true;
    ev_io_stop(c->srv->loop, &c->io);
    ev_timer_stop(c->srv->loop, &c->timer);
    close(c->fd);
    if (c->streaming && !c->owner_done && c->on_close)
        c->on_close(c, c->close_data);
    conn_maybe_free(c);
}

static void conn_flush(struct api_conn *c)
{
    if (c->sock_closed)
        return;
    while (c->out_off < c->out_len) {
        ssize_t w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (w == -1) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                ev_io_start(c->srv->loop, &c->io, EPOLLOUT | EPOLLRDHUP);
                return;
            }
            conn_close(c);
            return;
        }
        c->out_off += (size_t)w;
    }
    c->out_off = c->out_len = 0;
    if (c->close_after) {
        shutdown(c->fd, SHUT_WR);
        conn_close(c);
        return;
    }
    /* Keep watching for the peer going away (streams). */
    ev_io_start(c->srv->loop, &c->io, EPOLLRDHUP);
}

static void out_append(struct api_conn *c, const char *p, size_t n)
{
    if (c->sock_closed)
        return;
    /* The limit is on what waits to be sent, not on how much was ever
     * queued: a reader that keeps up a little at a time never empties the
     * buffer, so what it has taken is dropped from the front first. */
    if (c->out_off > 0 && c->out_len + n > c->out_cap) {
        memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
        c->out_len -= c->out_off;
        c->out_off = 0;
    }
    if (c->out_len - c->out_off + n > API_OUT_MAX) {
        log_warn("api: dropping a client that stopped reading");
        conn_close(c);
        return;
    }
    if (c->out_len + n > c->out_cap) {
        c->out_cap = (c->out_len + n) * 2;
        c->out = xrealloc(c->out, c->out_cap);
    }
    memcpy(c->out + c->out_len, p, n);
    c->out_len += n;
}

static const char *status_text(int status)
{
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 413: return "Content Too Large";
    case 422: return "Unprocessable Content";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Status";
    }
}

void api_reply_json(struct api_conn *c, int status, json_t *j)
{
    char *body = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
    json_decref(j);
    size_t blen = body ? strlen(body) : 0;
    char head[256];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                     status, status_text(status), blen + 1);
    out_append(c, head, (size_t)n);
    out_append(c, body ? body : "", blen);
    out_append(c, "\n", 1);
    free(body);
    c->close_after = true;
    c->owner_done = true;
    conn_flush(c);
    conn_maybe_free(c);
}

void api_reply_raw(struct api_conn *c, int status, const char *content_type, const char *body,
                   size_t len)
{
    char head[512];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n",
                     status, status_text(status), content_type, len);
    out_append(c, head, (size_t)n);
    out_append(c, body, len);
    c->close_after = true;
    c->owner_done = true;
    conn_flush(c);
    conn_maybe_free(c);
}

void api_reply_error(struct api_conn *c, int status, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    api_reply_json(c, status, json_pack("{s:s}", "error", msg));
}

void api_stream_begin(struct api_conn *c, api_close_cb on_close, void *data)
{
    static const char head[] = "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
                               "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    c->streaming = true;
    c->owner_done = false;
    c->on_close = on_close;
    c->close_data = data;
    out_append(c, head, sizeof(head) - 1);
    conn_flush(c);
}

void api_stream_json(struct api_conn *c, json_t *j)
{
    if (c->sock_closed) {
        json_decref(j);
        return;
    }
    char *line = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
    json_decref(j);
    if (!line)
        return;
    size_t l = strlen(line);
    char sz[32];
    int n = snprintf(sz, sizeof(sz), "%zx\r\n", l + 1);
    out_append(c, sz, (size_t)n);
    out_append(c, line, l);
    out_append(c, "\n\r\n", 3);
    free(line);
    conn_flush(c);
}

void api_stream_end(struct api_conn *c)
{
    if (c->owner_done)
        return;
    c->owner_done = true;
    if (!c->sock_closed) {
        out_append(c, "0\r\n\r\n", 5);
        c->close_after = true;
        conn_flush(c);
    }
    conn_maybe_free(c);
}

bool api_conn_alive(const struct api_conn *c) { return !c->sock_closed; }

size_t api_conn_pending(const struct api_conn *c) { return c->out_len - c->out_off; }

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

const char *api_query(const struct api_req *r, const char *key, char *buf, size_t len)
{
    size_t kl = strlen(key);
    for (const char *p = r->query; p && *p;) {
        const char *amp = strchr(p, '&');
        const char *end = amp ? amp : p + strlen(p);
        if ((size_t)(end - p) > kl && strncmp(p, key, kl) == 0 && p[kl] == '=') {
            size_t o = 0;
            for (const char *q = p + kl + 1; q < end && o + 1 < len; q++) {
                if (*q == '%' && q + 2 < end && hexval(q[1]) >= 0 && hexval(q[2]) >= 0) {
                    buf[o++] = (char)(hexval(q[1]) * 16 + hexval(q[2]));
                    q += 2;
                } else {
                    buf[o++] = *q == '+' ? ' ' : *q;
                }
            }
            buf[o] = '\0';
            return buf;
        }
        if (strncmp(p, key, kl) == 0 && (p[kl] == '&' || p[kl] == '\0')) {
            snprintf(buf, len, "%s", "");
            return buf;
        }
        p = amp ? amp + 1 : NULL;
    }
    return NULL;
}

static bool route_match(const struct api_route *rt, const char *method, const char *path)
{
    if (strcmp(rt->method, method) != 0)
        return false;
    size_t l = strlen(rt->path);
    if (l > 0 && rt->path[l - 1] == '/')
        return strncmp(path, rt->path, l) == 0;
    return strcmp(path, rt->path) == 0;
}

static void dispatch(struct api_conn *c)
{
    struct api_server *s = c->srv;
    json_t *body = NULL;
    c->handled = true;
    ev_timer_stop(s->loop, &c->timer);
    if (c->body_len > 0) {
        json_error_t je;
        body = json_loadb(c->in + c->head_len, c->body_len, 0, &je);
        if (!body) {
            api_reply_error(c, 400, "invalid JSON body at line %d column %d: %s", je.line,
                            je.column, je.text);
            return;
        }
    }
    struct api_req req = {.method = c->method, .path = c->path, .query = c->query, .body = body,
                          .conn = c};
    bool path_known = false;
    for (const struct api_route *rt = s->routes; rt->method; rt++) {
        if (route_match(rt, c->method, c->path)) {
            c->owner_done = false;
            rt->handler(&req, s->data);
            json_decref(body);
            return;
        }
        size_t l = strlen(rt->path);
        if (strcmp(rt->path, c->path) == 0 ||
            (l > 0 && rt->path[l - 1] == '/' && strncmp(c->path, rt->path, l) == 0))
            path_known = true;
    }
    json_decref(body);
    if (path_known)
        api_reply_error(c, 405, "method %s not allowed on %s", c->method, c->path);
    else
        api_reply_error(c, 404, "no such endpoint: %s %s", c->method, c->path);
}

/* Parse the head with the proxy's strict parser (src/http, fuzzed);
 * returns 0 when complete, 1 when more input is needed, or an HTTP status
 * on error. */
static int parse_head(struct api_conn *c)
{
    static struct http_msg m; /* the API server runs on takod's one loop thread */
    int r = http_parse_request(c->in, c->in_len, &m, HTTP_MAX_HEADERS);
    if (r == HTTP_INCOMPLETE)
        return c->in_len >= API_HEAD_MAX ? 431 : 1;
    if (r < 0)
        return -r; /* 400, 431, 501, 505 */
    if ((size_t)r > API_HEAD_MAX)
        return 431;
    if (m.flags & HTTP_F_CHUNKED)
        return 400; /* clients send Content-Length */
    if (m.content_length > (int64_t)API_BODY_MAX)
        return 413;
    if (m.method_len >= sizeof(c->method) || m.path_len >= sizeof(c->path) + sizeof(c->query))
        return 414;
    memcpy(c->method, m.method_s, m.method_len);
    c->method[m.method_len] = '\0';
    const char *q = memchr(m.path, '?', m.path_len);
    size_t pl = q ? (size_t)(q - m.path) : m.path_len;
    if (pl >= sizeof(c->path) || (q && m.path_len - pl - 1 >= sizeof(c->query)))
        return 414;
    memcpy(c->path, m.path, pl);
    c->path[pl] = '\0';
    c->query[0] = '\0';
    if (q) {
        memcpy(c->query, q + 1, m.path_len - pl - 1);
        c->query[m.path_len - pl - 1] = '\0';
    }
    c->head_len = (size_t)r;
    c->body_len = m.content_length > 0 ? (size_t)m.content_length : 0;
    return 0;
}

static void conn_on_io(struct ev_loop *loop, struct ev_io *w, uint32_t ev)
{
    (void)loop;
    struct api_conn *c = w->data;
    if (ev & EPOLLOUT) {
        conn_flush(c);
        if (c->sock_closed)
            return;
    }
    if (c->handled) {
        if (ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
            conn_close(c);
        return;
    }
    if (!(ev & (EPOLLIN | EPOLLHUP | EPOLLERR)))
        return;
    for (;;) {
        if (c->in_len + 4096 > c->in_cap) {
            c->in_cap = c->in_cap ? c->in_cap * 2 : 8192;
            c->in = xrealloc(c->in, c->in_cap + 1);
        }
        ssize_t r = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
        if (r > 0) {
            c->in_len += (size_t)r;
            if (c->in_len > API_HEAD_MAX + API_BODY_MAX) {
                c->owner_done = true;
                conn_close(c);
                return;
            }
            continue;
        }
        if (r == 0) {
            c->owner_done = true;
            conn_close(c);
            return;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            break;
        c->owner_done = true;
        conn_close(c);
        return;
    }
    if (c->head_len == 0) {
        int st = parse_head(c);
        if (st == 1)
            return;
        if (st != 0) {
            c->handled = true;
            api_reply_error(c, st, "%s", status_text(st));
            return;
        }
    }
    if (c->in_len >= c->head_len + c->body_len)
        dispatch(c);
}

static void conn_timeout(struct ev_loop *loop, struct ev_timer *t)
{
    (void)loop;
    struct api_conn *c = t->data;
    c->owner_done = true;
    conn_close(c);
}

static void on_accept(struct ev_loop *loop, struct ev_io *w, uint32_t ev)
{
    (void)ev;
    struct api_server *s = w->data;
    for (;;) {
        int fd = accept4(s->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd == -1)
            return;
        struct api_conn *c = xcalloc(1, sizeof(*c));
        c->srv = s;
        c->fd = fd;
        c->owner_done = true;
        ev_io_init(&c->io, fd, conn_on_io, c);
        ev_timer_init(&c->timer, conn_timeout, c);
        ev_io_start(loop, &c->io, EPOLLIN | EPOLLRDHUP);
        ev_timer_start(loop, &c->timer, API_READ_TIMEOUT_MS);
    }
}

struct api_server *api_server_new(struct ev_loop *loop, const char *path,
                                  const struct api_route *routes, void *data, int *err)
{
    int fd = net_listen_unix(path, 128, 0600);
    if (fd < 0) {
        *err = fd;
        return NULL;
    }
    struct api_server *s = xcalloc(1, sizeof(*s));
    s->loop = loop;
    s->fd = fd;
    s->routes = routes;
    s->data = data;
    s->path = xstrdup(path);
    ev_io_init(&s->io, fd, on_accept, s);
    ev_io_start(loop, &s->io, EPOLLIN);
    return s;
}

void api_server_free(struct api_server *s)
{
    if (!s)
        return;
    ev_io_stop(s->loop, &s->io);
    close(s->fd);
    unlink(s->path);
    free(s->path);
    free(s);
}
