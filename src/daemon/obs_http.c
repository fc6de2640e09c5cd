/* obs_http.c — the `metrics:` listener: /metrics for Prometheus, the
 * dashboard page and its /api/state, on takod's loop. One request per
 * connection, bounded in connections, request size and time. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/ev.h"
#include "core/log.h"
#include "core/net.h"
#include "core/util.h"
#include "daemon/obs.h"

#define OH_MAX_CONNS 128      /* more are closed at accept: memory stays bounded */
#define OH_HEAD_MAX 8192      /* request line + headers; a longer one gets 431 */
#define OH_TIMEOUT_MS 10000   /* to send the head, and to take the answer */
#define OH_COOKIE "tako_dashboard"

struct oh_conn;

struct obs_http {
    struct obs_http_src src;
    struct ev_loop *loop;
    int fd;
    struct ev_io io;
    struct net_addr addr;
    char *token; /* NULL: none required (loopback) */
    struct oh_conn *conns;
    unsigned nconns;
};

struct oh_conn {
    struct obs_http *h;
    int fd;
    struct ev_io io;
    struct ev_timer timer;
    char in[OH_HEAD_MAX + 1];
    size_t in_len;
    /* the answer: head, then a body that is either owned text, a shared
     * state buffer or a built-in asset */
    char head[512];
    size_t head_len;
    char *body_own;
    struct obs_buf *body_buf;
    const unsigned char *body;
    size_t body_len, off; /* off counts head then body */
    bool writing;
    struct oh_conn *prev, *next;
};

static void conn_free(struct oh_conn *c)
{
    struct obs_http *h = c->h;
    ev_io_stop(h->loop, &c->io);
    ev_timer_stop(h->loop, &c->timer);
    close(c->fd);
    if (c->prev)
        c->prev->next = c->next;
    else
        h->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    h->nconns--;
    free(c->body_own);
    obs_buf_unref(c->body_buf);
    free(c);
}

static void conn_write(struct oh_conn *c)
{
    size_t total = c->head_len + c->body_len;
    while (c->off < total) {
        const void *p;
        size_t n;
        if (c->off < c->head_len) {
            p = c->head + c->off;
            n = c->head_len - c->off;
        } else {
            p = c->body + (c->off - c->head_len);
            n = total - c->off;
        }
        ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
        if (w == -1) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                ev_io_start(c->h->loop, &c->io, EPOLLOUT);
                return;
            }
            conn_free(c);
            return;
        }
        c->off += (size_t)w;
    }
    shutdown(c->fd, SHUT_WR);
    conn_free(c);
}

static void reply(struct oh_conn *c, int status, const char *reason, const char *type,
                  const char *extra_headers, const void *body, size_t len, bool head_only)
{
    c->head_len = (size_t)snprintf(
        c->head, sizeof(c->head),
        "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
        "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n"
        "X-Frame-Options: DENY\r\nReferrer-Policy: no-referrer\r\n%sConnection: close\r\n\r\n",
        status, reason, type, len, extra_headers ? extra_headers : "");
    if (c->head_len >= sizeof(c->head))
        c->head_len = sizeof(c->head) - 1;
    c->body = body;
    c->body_len = head_only ? 0 : len;
    c->writing = true;
    ev_timer_stop(c->h->loop, &c->timer);
    ev_timer_start(c->h->loop, &c->timer, OH_TIMEOUT_MS);
    conn_write(c);
}

static void reply_text(struct oh_conn *c, int status, const char *reason, const char *text)
{
    c->body_own = xstrdup(text);
    reply(c, status, reason, "text/plain; charset=utf-8", NULL, c->body_own, strlen(text),
          false);
}

/* Value of header `name` in the head (lines after the request line), copied
 * into buf; NULL when absent. */
static const char *header(const char *head, const char *name, char *buf, size_t len)
{
    size_t nl = strlen(name);
    for (const char *p = strstr(head, "\r\n"); p && p[2]; p = strstr(p + 2, "\r\n")) {
        const char *line = p + 2;
        if (strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
            const char *v = line + nl + 1;
            while (*v == ' ' || *v == '\t')
                v++;
            const char *e = strstr(v, "\r\n");
            size_t l = e ? (size_t)(e - v) : strlen(v);
            if (l >= len)
                l = len - 1;
            memcpy(buf, v, l);
            buf[l] = '\0';
            return buf;
        }
    }
    return NULL;
}

/* Constant-time comparison: the token must not leak through timing. */
static bool token_eq(const char *a, size_t alen, const char *b)
{
    size_t bl = strlen(b);
    unsigned char d = alen != bl;
    for (size_t i = 0; i < bl; i++)
        d |= (unsigned char)(i < alen ? a[i] : 0) ^ (unsigned char)b[i];
    return d == 0;
}

/* The token from Authorization: Bearer, the dashboard's cookie, or (for
 * the page only) ?token= in the query. */
static bool authorized(struct oh_conn *c, const char *query, bool page)
{
    const char *tok = c->h->token;
    if (!tok)
        return true;
    char v[1024];
    if (header(c->in, "Authorization", v, sizeof(v)) && strncasecmp(v, "Bearer ", 7) == 0 &&
        token_eq(v + 7, strlen(v + 7), tok))
        return true;
    if (header(c->in, "Cookie", v, sizeof(v))) {
        for (char *p = v; (p = strstr(p, OH_COOKIE "=")) != NULL; p++) {
            if (p != v && p[-1] != ' ' && p[-1] != ';')
                continue;
            const char *val = p + strlen(OH_COOKIE "=");
            size_t l = strcspn(val, "; ");
            if (token_eq(val, l, tok))
                return true;
        }
    }
    if (page && query) {
        for (const char *p = query; p && *p;) {
            const char *amp = strchr(p, '&');
            size_t l = amp ? (size_t)(amp - p) : strlen(p);
            if (l > 6 && strncmp(p, "token=", 6) == 0 && token_eq(p + 6, l - 6, tok))
                return true;
            p = amp ? amp + 1 : NULL;
        }
    }
    return false;
}

/* Host is an IP literal or localhost (any port), or absent (HTTP/1.0). */
static bool host_is_literal(const char *head)
{
    char v[300], host[300];
    if (!header(head, "Host", v, sizeof(v)))
        return true;
    if (v[0] == '[')
        return strchr(v, ']') != NULL;
    snprintf(host, sizeof(host), "%s", v);
    char *colon = strrchr(host, ':');
    if (colon)
        *colon = '\0';
    if (strcasecmp(host, "localhost") == 0)
        return true;
    struct in_addr a4;
    return inet_pton(AF_INET, host, &a4) == 1;
}

static void handle(struct oh_conn *c)
{
    struct obs_http *h = c->h;
    char *eol = strstr(c->in, "\r\n");
    char method[8], target[2048];
    if (!eol || (size_t)(eol - c->in) >= sizeof(target) + 32) {
        reply_text(c, 414, "URI Too Long", "request line too long\n");
        return;
    }
    *eol = '\0';
    int ok = sscanf(c->in, "%7s %2047s HTTP/1.%*c", method, target) == 2;
    *eol = '\r';
    if (!ok) {
        reply_text(c, 400, "Bad Request", "bad request line\n");
        return;
    }
    bool head_only = strcmp(method, "HEAD") == 0;
    if (strcmp(method, "GET") != 0 && !head_only) {
        reply_text(c, 405, "Method Not Allowed", "read-only: GET and HEAD only\n");
        return;
    }
    char *query = strchr(target, '?');
    if (query)
        *query++ = '\0';
    if (!h->token && !host_is_literal(c->in)) {
        /* Without a token, only this machine can connect; a page elsewhere
         * could still reach it through a name that resolves to 127.0.0.1
         * (DNS rebinding). Such a request names the host: refuse it. */
        reply_text(c, 421, "Misdirected Request",
                   "use the address itself (e.g. http://127.0.0.1:9100/), not a host name\n");
        return;
    }
    const struct obs_asset *asset = obs_asset_find(target);
    bool page = asset && strcmp(target, "/") == 0;
    if (strcmp(target, "/metrics") != 0 && strcmp(target, "/api/state") != 0 && !asset) {
        reply_text(c, 404, "Not Found", "not found (try /metrics or /)\n");
        return;
    }
    if (!authorized(c, query, page)) {
        reply_text(c, 401, "Unauthorized",
                   "this address needs the token of metrics.token in tako.yaml:\n"
                   "  Prometheus: authorization: {credentials: TOKEN}\n"
                   "  browser:    /?token=TOKEN\n");
        return;
    }
    if (strcmp(target, "/metrics") == 0) {
        char acc[512];
        bool om = header(c->in, "Accept", acc, sizeof(acc)) &&
                  strstr(acc, "application/openmetrics-text");
        size_t len;
        c->body_own = h->src.metrics ? h->src.metrics(h->src.ctx, om, &len) : NULL;
        if (!c->body_own) {
            reply_text(c, 503, "Service Unavailable", "takod unreachable\n");
            return;
        }
        reply(c, 200, "OK",
              om ? "application/openmetrics-text; version=1.0.0; charset=utf-8"
                 : "text/plain; version=0.0.4; charset=utf-8",
              NULL, c->body_own, len, head_only);
        return;
    }
    if (strcmp(target, "/api/state") == 0) {
        c->body_buf = h->src.state(h->src.ctx);
        if (!c->body_buf) {
            static const char e[] = "{\"error\":\"takod unreachable\"}\n";
            reply(c, 503, "Service Unavailable", "application/json", NULL, e, sizeof(e) - 1,
                  head_only);
            return;
        }
        reply(c, 200, "OK", "application/json", NULL, c->body_buf->data, c->body_buf->len,
              head_only);
        return;
    }
    char extra[1200] = "";
    if (page && h->token && query && strstr(query, "token=")) {
        /* The token moves from the URL (history, screen) into a cookie that
         * scripts cannot read; the page is loaded again without it. */
        snprintf(extra, sizeof(extra),
                 "Set-Cookie: " OH_COOKIE "=%.1000s; Path=/; HttpOnly; SameSite=Strict\r\n"
                 "Location: /\r\n",
                 h->token);
        reply(c, 303, "See Other", "text/plain", extra, "", 0, head_only);
        return;
    }
    reply(c, 200, "OK", asset->type,
          "Content-Security-Policy: default-src 'self'; img-src 'self' data:; "
          "frame-ancestors 'none'\r\n",
          asset->data, asset->len, head_only);
}

static void conn_on_io(struct ev_loop *loop, struct ev_io *w, uint32_t ev)
{
    (void)loop;
    struct oh_conn *c = w->data;
    if (c->writing) {
        if (ev & (EPOLLERR | EPOLLHUP)) {
            conn_free(c);
            return;
        }
        conn_write(c);
        return;
    }
    for (;;) {
        ssize_t n = recv(c->fd, c->in + c->in_len, OH_HEAD_MAX - c->in_len, 0);
        if (n > 0) {
            c->in_len += (size_t)n;
            c->in[c->in_len] = '\0';
            if (strstr(c->in, "\r\n\r\n")) {
                ev_io_stop(c->h->loop, &c->io);
                handle(c);
                return;
            }
            if (c->in_len >= OH_HEAD_MAX) {
                ev_io_stop(c->h->loop, &c->io);
                reply_text(c, 431, "Request Header Fields Too Large", "request head too large\n");
                return;
            }
            continue;
        }
        if (n == -1 && errno == EINTR)
            continue;
        if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        conn_free(c);
        return;
    }
}

static void conn_on_timeout(struct ev_loop *loop, struct ev_timer *t)
{
    (void)loop;
    conn_free(t->data);
}

static void on_accept(struct ev_loop *loop, struct ev_io *w, uint32_t ev)
{
    (void)ev;
    struct obs_http *h = w->data;
    for (;;) {
        int fd = accept4(h->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd == -1)
            return;
        if (h->nconns >= OH_MAX_CONNS) {
            close(fd); /* the browser retries; memory stays bounded */
            continue;
        }
        struct oh_conn *c = xcalloc(1, sizeof(*c));
        c->h = h;
        c->fd = fd;
        c->next = h->conns;
        if (h->conns)
            h->conns->prev = c;
        h->conns = c;
        h->nconns++;
        ev_io_init(&c->io, fd, conn_on_io, c);
        ev_timer_init(&c->timer, conn_on_timeout, c);
        ev_io_start(loop, &c->io, EPOLLIN);
        ev_timer_start(loop, &c->timer, OH_TIMEOUT_MS);
    }
}

struct obs_http *obs_http_new(const struct obs_http_src *src, struct ev_loop *loop,
                              const char *addr, const char *token, int *err)
{
    struct net_addr a;
    if (net_parse_addr(addr, "127.0.0.1", &a) < 0) {
        *err = -EINVAL;
        return NULL;
    }
    int fd = net_listen_tcp(&a, 128, false);
    if (fd < 0) {
        *err = fd;
        return NULL;
    }
    struct obs_http *h = xcalloc(1, sizeof(*h));
    h->src = *src;
    h->loop = loop;
    h->fd = fd;
    h->addr = a;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
        memcpy(&h->addr.ss, &ss, sl);
        h->addr.len = sl;
    }
    h->token = token ? xstrdup(token) : NULL;
    ev_io_init(&h->io, fd, on_accept, h);
    ev_io_start(loop, &h->io, EPOLLIN);
    return h;
}

void obs_http_free(struct obs_http *h)
{
    if (!h)
        return;
    while (h->conns)
        conn_free(h->conns);
    ev_io_stop(h->loop, &h->io);
    close(h->fd);
    free(h->token);
    free(h);
}

const char *obs_http_addr(const struct obs_http *h, char *buf, size_t len)
{
    return net_addr_str(&h->addr, buf, len);
}
