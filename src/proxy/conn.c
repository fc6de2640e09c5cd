/* conn.c — client and upstream connections and the exchange between them:
 * read a request head, pick a backend, stream the request up and the
 * response down (keep-alive both sides, pooled upstream connections,
 * back-pressure, 1xx, Upgrade tunnels), retry safely, time out, log.
 *
 * Everything here runs on one worker thread. Bytes move only through the
 * transport (xprt.h): no code here reads or writes a socket. Sockets are
 * registered once, edge-triggered, for reading and writing; the transport
 * remembers their readiness and clears it only when the socket would block,
 * so no epoll_ctl call happens per request. An idle client connection holds no buffer: the buffers of an
 * exchange (struct xchg) come from a per-worker free list when a request
 * starts and go back when it ends.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"
#include "proxy/proxy_int.h"
#include "proxy/rewrite.h"

#define CBUF_MIN 16384
#define UBUF_SIZE 16384
#define FREE_X_MAX 256

struct upconn {
    struct xconn xc;
    struct ev_io io;
    struct worker *w;
    struct backend *b;
    struct xchg *x; /* owner while in use, NULL when pooled */
    struct dlist blink, wlink;
    uint64_t idle_since;
    bool connecting, reused, closed, pooled;
    struct ev_defer defer;
};

struct client {
    struct xconn xc;
    struct ev_io io;
    struct worker *w;
    struct listener *l;
    struct xchg *x;
    struct ev_timer timer;
    uint64_t deadline;
    struct dlist link;
    uint8_t family;
    uint8_t addr[16];
    bool closed;
    uint32_t nreq;
    struct ev_defer defer;
};

enum xstate {
    X_HEAD,     /* reading a request head */
    X_WAIT,     /* no healthy backend yet */
    X_EXCHANGE, /* connected (or connecting) to a backend */
    X_TUNNEL,   /* after 101 Switching Protocols */
    X_ERROR,    /* writing an answer of ours, then closing */
};

enum rbody { RB_NONE, RB_CL, RB_CHUNKED };
enum sbody { RS_NONE, RS_CL, RS_CHUNKED, RS_DECHUNK, RS_EOF };

struct xchg {
    struct xchg *next_free;
    struct client *c;
    struct upconn *u;
    struct proxy_pool *pool;
    struct backend *b; /* picked: counted in its in-flight until released */
    struct backend *tried[PROXY_MAX_TRIES];
    unsigned ntried;
    enum xstate st;
    /* client input: [c_off, c_scan) is body validated but not yet sent
     * upstream, [c_scan, c_len) not yet looked at */
    uint32_t c_off, c_scan, c_len, cap;
    uint32_t head_len;
    /* request */
    enum http_method method;
    uint8_t minor;
    bool client_ka, upgrade, body_discarded, req_read_done, req_done;
    enum rbody rb;
    uint64_t rb_left, rb_cl;
    struct http_chunked rch;
    uint64_t up_sent;
    /* hbuf: the upstream request head [h_off, h_len), then client output
     * (response head, 1xx, our own answers) [o_off, o_len) */
    uint32_t h_off, h_len, o_off, o_len;
    bool hbuf_is_output;
    /* response */
    uint32_t u_off, u_scan, u_len;
    bool rsp_started, rsp_head_done, rsp_done, up_reusable, close_client, to_tunnel;
    int status;
    enum sbody rs;
    uint64_t rs_left;
    struct http_chunked sch;
    uint64_t bytes_out;
    /* tunnel half-closes */
    bool t_c_eof, t_u_eof;
    /* log and routing */
    uint64_t t_start;   /* µs */
    struct lb_req lbr; /* what the pool's strategy took from the request */
    char rid[40];
    uint8_t rid_len;
    char method_s[16];
    uint8_t method_len;
    uint16_t path_len;
    char path[256];
    char client_ip[INET6_ADDRSTRLEN];
    struct dlist wait_link;
    uint64_t wait_deadline;
    char *cbuf, *ubuf, *hbuf;
    uint32_t hcap;
};

/* The parsed head (≈2.5 KB of header slices): per-thread scratch, used
 * only while a head is being turned into the upstream/client head. */
static __thread struct http_msg t_msg;

static void client_close(struct client *c);
static void client_process(struct client *c);
static void xchg_run(struct xchg *x);
static void up_on_io(struct ev_loop *loop, struct ev_io *io, uint32_t ev);
static void xchg_connect(struct xchg *x);

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* ---- exchange buffers ---- */

static struct xchg *xchg_get(struct worker *w)
{
    struct proxy *p = w->p;
    struct xchg *x = w->free_x;
    uint32_t cap = p->o.max_header_size + 1024 > CBUF_MIN ? p->o.max_header_size + 1024 : CBUF_MIN;
    uint32_t hcap = cap + 2048;
    if (x) {
        w->free_x = x->next_free;
        w->nfree_x--;
    } else {
        x = xmalloc(sizeof(*x) + cap + UBUF_SIZE + hcap);
    }
    char *base = (char *)(x + 1);
    memset(x, 0, offsetof(struct xchg, path));
    x->cap = cap;
    x->hcap = hcap;
    x->cbuf = base;
    x->ubuf = base + cap;
    x->hbuf = base + cap + UBUF_SIZE;
    dlist_init(&x->wait_link);
    return x;
}

static void xchg_put(struct worker *w, struct xchg *x)
{
    if (w->nfree_x >= FREE_X_MAX) {
        free(x);
        return;
    }
    x->next_free = w->free_x;
    w->free_x = x;
    w->nfree_x++;
}

/* ---- timers: one per client, re-armed lazily ---- */

static void client_deadline(struct client *c, uint64_t after_ms)
{
    struct ev_loop *loop = &c->w->loop;
    c->deadline = loop->now + after_ms;
    if (!ev_timer_active(&c->timer) || c->timer.when > c->deadline + 5)
        ev_timer_start(loop, &c->timer, after_ms);
}

/* ---- upstream connections ---- */

static void up_free(struct ev_defer *d)
{
    free(DLIST_ENTRY(d, struct upconn, defer));
}

static void up_close(struct upconn *u)
{
    if (u->closed)
        return;
    u->closed = true;
    u->io.active = false; /* close() unregisters it, see client_close */
    xc_close(&u->xc);
    if (u->pooled) {
        u->pooled = false;
        u->b->idle_n[u->w->idx]--;
        dlist_del(&u->blink);
        dlist_del(&u->wlink);
        atomic_fetch_sub(&u->b->idle_conns, 1);
    }
    ev_defer(&u->w->loop, &u->defer, up_free);
}

/* Return a healthy, idle connection to the pool of its backend. */
static void up_release(struct upconn *u, bool reusable)
{
    struct worker *w = u->w;
    struct backend *b = u->b;
    u->x = NULL;
    /* a connection that saw its peer's end of stream or an error never
     * carries another request */
    if (!reusable || !xc_reusable(&u->xc) || w->stopping ||
        atomic_load_explicit(&b->removed, memory_order_relaxed)) {
        up_close(u);
        return;
    }
    if (b->idle_n[w->idx] >= w->p->o.max_idle_per_backend) {
        up_close(u);
        return;
    }
    b->idle_n[w->idx]++;
    /* counted idle before the request stops counting in flight, so a
     * draining backend is never seen with neither */
    atomic_fetch_add(&b->idle_conns, 1);
    dlist_add(&b->idle[w->idx], &u->blink);
    dlist_add(&w->idle_up, &u->wlink);
    u->pooled = true;
    u->idle_since = w->loop.now;
}

/* An event on a pooled connection: anything but "would block" (end of
 * stream, an error, bytes nobody asked for) makes it unusable. */
static void up_idle_event(struct upconn *u)
{
    char tmp[64];
    ssize_t n = xc_can_recv(&u->xc) ? xc_recv(&u->xc, tmp, sizeof(tmp)) : -EAGAIN;
    if ((n == -EAGAIN || n == -EINTR) && xc_reusable(&u->xc))
        return;
    up_close(u);
}

static struct upconn *up_from_pool(struct worker *w, struct backend *b)
{
    struct dlist *head = &b->idle[w->idx];
    while (!dlist_empty(head)) {
        struct upconn *u = DLIST_ENTRY(head->next, struct upconn, blink);
        dlist_del(&u->blink);
        dlist_del(&u->wlink);
        u->pooled = false;
        b->idle_n[w->idx]--;
        atomic_fetch_sub(&b->idle_conns, 1);
        if (w->loop.now - u->idle_since >= w->p->o.upstream_idle_ms || !xc_reusable(&u->xc)) {
            up_close(u);
            continue;
        }
        u->reused = true;
        return u;
    }
    return NULL;
}

void conn__close_removed_upstreams(struct worker *w)
{
    for (struct dlist *e = w->idle_up.next, *n; e != &w->idle_up; e = n) {
        n = e->next;
        struct upconn *u = DLIST_ENTRY(e, struct upconn, wlink);
        if (atomic_load(&u->b->removed) || w->stopping ||
            w->loop.now - u->idle_since >= w->p->o.upstream_idle_ms)
            up_close(u);
    }
}

/* ---- our own answers ---- */

static void xchg_release_backend(struct xchg *x, bool up_reusable);

/* Answer status ourselves and close the client connection afterwards. */
static void xchg_error(struct xchg *x, int status, const char *msg)
{
    xchg_release_backend(x, false);
    if (!dlist_empty(&x->wait_link))
        dlist_del(&x->wait_link);
    x->status = status;
    x->st = X_ERROR;
    x->close_client = true;
    x->rsp_done = true;
    x->rs = RS_NONE;
    x->hbuf_is_output = true;
    char body[160];
    int bl = snprintf(body, sizeof(body), "%d %s%s%s\n", status, http_reason(status), msg ? ": " : "",
                      msg ? msg : "");
    int n = snprintf(x->hbuf, x->hcap,
                     "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
                     "Content-Length: %d\r\nConnection: close\r\n%s%s%.*s%s\r\n%s",
                     status, http_reason(status), bl, status == 503 ? "Retry-After: 1\r\n" : "",
                     x->rid_len ? "X-Request-Id: " : "", (int)x->rid_len, x->rid,
                     x->rid_len ? "\r\n" : "", x->method == HTTP_HEAD ? "" : body);
    x->o_off = 0;
    x->o_len = (uint32_t)n;
    x->bytes_out = 0;
}

/* Answer 200 (ACME key authorization) or 308 (to HTTPS) ourselves, then
 * close: extra is complete header lines or "". */
static void xchg_reply(struct xchg *x, int status, const char *extra, const char *body)
{
    xchg_error(x, status, NULL);
    size_t bl = strlen(body);
    int n = snprintf(x->hbuf, x->hcap,
                     "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n%s\r\n%s",
                     status, http_reason(status), bl, extra, x->method == HTTP_HEAD ? "" : body);
    if (n < 0 || (uint32_t)n >= x->hcap) {
        xchg_error(x, 500, "answer too large");
        return;
    }
    x->o_len = (uint32_t)n;
}

#define ACME_PREFIX "/.well-known/acme-challenge/"

/* A plain listener's own answers before routing: ACME HTTP-01 tokens, and
 * 308 to HTTPS for hosts that have a certificate (proxy_tls.c). True when
 * answered. */
static bool xchg_tls_answers(struct xchg *x, const struct http_msg *m)
{
    struct client *c = x->c;
    struct proxy *p = c->w->p;
    size_t pl = sizeof(ACME_PREFIX) - 1;
    if (m->target_len > pl && memcmp(m->target, ACME_PREFIX, pl) == 0) {
        char ka[512];
        if ((m->method == HTTP_GET || m->method == HTTP_HEAD) &&
            proxy__challenge_get(p, m->target + pl, m->target_len - pl, ka, sizeof(ka))) {
            xchg_reply(x, 200, "", ka);
            return true;
        }
        return false; /* not ours: the application may have its own */
    }
    unsigned port = atomic_load_explicit(&c->l->https_redirect, memory_order_relaxed);
    if (!port || m->host < 0)
        return false;
    const struct http_header *h = &m->headers[m->host];
    size_t hl = h->value_len;
    for (size_t k = hl; k > 0; k--) { /* strip ":port" */
        if (h->value[k - 1] == ':') {
            hl = k - 1;
            break;
        }
        if (h->value[k - 1] < '0' || h->value[k - 1] > '9')
            break;
    }
    if (hl == 0 || hl > 253 || !proxy__tls_has_name(p, h->value, hl))
        return false;
    char loc[2048];
    char ps[16] = "";
    if (port != 443)
        snprintf(ps, sizeof(ps), ":%u", port);
    int n = snprintf(loc, sizeof(loc), "Location: https://%.*s%s%.*s\r\n", (int)hl, h->value, ps,
                     (int)m->target_len, m->target);
    if (n < 0 || (size_t)n >= sizeof(loc))
        return false;
    xchg_reply(x, 308, loc, "Permanent Redirect to HTTPS\n");
    return true;
}

/* ---- finishing ---- */

static void xchg_log(struct xchg *x)
{
    struct client *c = x->c;
    struct worker *w = c->w;
    if (w->p->log_fd < 0)
        return;
    struct alog_rec r = {
        .client = x->client_ip,
        .method = x->method_len ? x->method_s : "-",
        .method_len = x->method_len ? x->method_len : 1,
        .path = x->path_len ? x->path : "-",
        .path_len = x->path_len ? x->path_len : 1,
        .status = x->status,
        .bytes = x->bytes_out,
        .upstream = x->ntried ? x->tried[x->ntried - 1]->addr_s : "-",
        .dur_us = now_us() - x->t_start,
        .rid = x->rid,
        .rid_len = x->rid_len,
        .pool = x->pool ? x->pool->name : "-",
    };
    alog__write(w, &r);
}

static void xchg_release_backend(struct xchg *x, bool up_reusable)
{
    if (x->u) {
        struct upconn *u = x->u;
        x->u = NULL;
        up_release(u, up_reusable);
    }
    if (x->b) {
        struct backend *b = x->b;
        x->b = NULL;
        lb_finished(atomic_load_explicit(&b->pool->cur, memory_order_acquire), b);
    }
}

static void xchg_account(struct xchg *x)
{
    struct backend *b = x->ntried ? x->tried[x->ntried - 1] : NULL;
    if (!b)
        return;
    struct bstat *st = &b->st[x->c->w->idx];
    STAT_ADD(&st->requests, 1);
    int cls = x->status / 100;
    if (cls < 1 || cls > 5)
        cls = 0;
    STAT_ADD(&st->status[cls], 1);
    STAT_ADD(&st->bytes_out, x->bytes_out);
    metrics__observe(st, x->status, now_us() - x->t_start);
}

/* The exchange is over (response written, or abandoned). Keep the client
 * for its next request when that is safe. */
static void xchg_finish(struct xchg *x, bool client_ok)
{
    struct client *c = x->c;
    struct worker *w = c->w;
    xchg_account(x);
    xchg_log(x);
    bool reuse_up = client_ok && x->up_reusable && x->rsp_done && x->req_done &&
                    x->u_len == x->u_scan; /* no stray bytes after the response */
    xchg_release_backend(x, reuse_up);
    if (!dlist_empty(&x->wait_link))
        dlist_del(&x->wait_link);
    if (!client_ok || x->close_client || !x->client_ka || !x->req_done || w->stopping) {
        client_close(c);
        return;
    }
    c->nreq++;
    /* pipelined bytes after this request start the next one */
    uint32_t rest = x->c_len - x->c_scan;
    if (rest == 0) {
        c->x = NULL;
        xchg_put(w, x);
        client_deadline(c, w->p->o.idle_timeout_ms);
        if (xc_can_recv(&c->xc))
            client_process(c);
        return;
    }
    struct xchg *nx = xchg_get(w);
    memcpy(nx->cbuf, x->cbuf + x->c_scan, rest);
    nx->c_len = rest;
    nx->c = c;
    c->x = nx;
    xchg_put(w, x);
    client_deadline(c, w->p->o.header_timeout_ms);
    client_process(c);
}

/* ---- request start ---- */

static bool cidr_match(const struct proxy_cidr *cd, int family, const uint8_t *a)
{
    if (cd->family != family)
        return false;
    unsigned bits = cd->prefix, full = bits / 8, rem = bits % 8;
    if (memcmp(cd->addr, a, full) != 0)
        return false;
    if (rem) {
        uint8_t mask = (uint8_t)(0xff << (8 - rem));
        if ((cd->addr[full] & mask) != (a[full] & mask))
            return false;
    }
    return true;
}

static bool trusted(struct proxy *p, int family, const uint8_t *a)
{
    for (size_t i = 0; i < p->ntrusted; i++)
        if (cidr_match(&p->trusted[i], family, a))
            return true;
    return false;
}

/* The client address that balancing and logs use: the peer, or from a
 * trusted proxy the right-most untrusted X-Forwarded-For entry. Returns
 * whether the peer is a trusted proxy. */
static bool client_identity(struct xchg *x, const struct http_msg *m, int *family, uint8_t *addr)
{
    struct client *c = x->c;
    struct proxy *p = c->w->p;
    *family = c->family;
    memcpy(addr, c->addr, 16);
    if (!p->ntrusted || !trusted(p, c->family, c->addr))
        return false;
    /* walk every X-Forwarded-For value from the right */
    for (int i = (int)m->nheaders - 1; i >= 0; i--) {
        const struct http_header *h = &m->headers[i];
        if (h->id != HTTP_H_X_FORWARDED_FOR)
            continue;
        const char *v = h->value;
        size_t e = h->value_len;
        while (e > 0) {
            size_t s = e;
            while (s > 0 && v[s - 1] != ',')
                s--;
            size_t a0 = s, a1 = e;
            while (a0 < a1 && (v[a0] == ' ' || v[a0] == '\t'))
                a0++;
            while (a1 > a0 && (v[a1 - 1] == ' ' || v[a1 - 1] == '\t'))
                a1--;
            char tmp[INET6_ADDRSTRLEN];
            uint8_t b[16] = {0};
            int fam = 0;
            if (a1 - a0 < sizeof(tmp)) {
                memcpy(tmp, v + a0, a1 - a0);
                tmp[a1 - a0] = '\0';
                if (inet_pton(AF_INET, tmp, b) == 1)
                    fam = AF_INET;
                else if (inet_pton(AF_INET6, tmp, b) == 1)
                    fam = AF_INET6;
            }
            if (!fam)
                return true; /* garbage: stop believing the chain here */
            *family = fam;
            memcpy(addr, b, 16);
            if (!trusted(p, fam, b))
                return true;
            e = s ? s - 1 : 0;
        }
    }
    return true;
}

static struct proxy_pool *route(struct client *c, const struct http_msg *m)
{
    struct routes *rt = atomic_load_explicit(&c->l->routes, memory_order_acquire);
    /* the authority of an absolute-form target is the host (the parser
     * refused a Host that differs from it) */
    const char *v = m->host >= 0 ? m->headers[m->host].value : m->authority;
    if (rt->n && v) {
        size_t n = m->host >= 0 ? m->headers[m->host].value_len : m->authority_len;
        /* port ignored: strip ":digits" (not inside an IPv6 literal) */
        for (size_t k = n; k > 0; k--) {
            if (v[k - 1] == ':') {
                n = k - 1;
                break;
            }
            if (v[k - 1] < '0' || v[k - 1] > '9')
                break;
        }
        for (size_t i = 0; i < rt->n; i++)
            if (rt->r[i].len == n && strncasecmp(rt->r[i].domain, v, n) == 0)
                return rt->r[i].pool;
    }
    return rt->def;
}

static void make_request_id(struct xchg *x, struct worker *w)
{
    static const char hex[] = "0123456789abcdef";
    uint64_t a = worker__rand(w), b = worker__rand(w);
    for (int i = 0; i < 16; i++) {
        x->rid[i] = hex[(a >> (i * 4)) & 15];
        x->rid[16 + i] = hex[(b >> (i * 4)) & 15];
    }
    x->rid_len = 32;
}

/* Rewrite the request head for the backend into hbuf. */
static bool build_upstream_head(struct xchg *x, const struct http_msg *m, bool gen_rid,
                                bool peer_trusted, const char *peer_ip)
{
    struct obuf o = {.p = x->hbuf, .cap = x->hcap};
    char la[64] = "";
    if (m->host < 0 && !m->authority)
        net_addr_str(&x->c->l->addr, la, sizeof(la));
    struct rw_req r = {
        .peer_ip = peer_ip,
        .client_ip = x->client_ip,
        .peer_trusted = peer_trusted,
        .scheme = x->c->xc.ops->scheme,
        .listen_addr = la,
        .rid = gen_rid ? x->rid : NULL,
        .rid_len = x->rid_len,
        .body = x->rb == RB_CL ? RW_BODY_LENGTH : x->rb == RB_CHUNKED ? RW_BODY_CHUNKED : RW_BODY_NONE,
        .content_length = x->rb_cl,
        .upgrade = x->upgrade,
    };
    rw_request_head(&o, m, &r);
    if (o.overflow)
        return false;
    x->h_off = 0;
    x->h_len = o.len;
    return true;
}

static uint64_t worker_rand_cb(void *w) { return worker__rand(w); }

static struct backend *xchg_pick(struct xchg *x, struct lb_set **setp)
{
    struct worker *w = x->c->w;
    struct lb_set *set = atomic_load_explicit(&x->pool->cur, memory_order_acquire);
    struct lb_req *r = &x->lbr;
    r->tried = x->tried;
    r->ntried = x->ntried;
    r->rand = worker_rand_cb;
    r->rand_ctx = w;
    *setp = set;
    return set->n ? set->ops->pick(set, r) : NULL;
}

/* Pick a backend and connect (or wait for one to be healthy). */
static void xchg_start_upstream(struct xchg *x)
{
    struct worker *w = x->c->w;
    struct lb_set *set;
    struct backend *b = xchg_pick(x, &set);
    if (!b) {
        bool any_up = false;
        for (size_t i = 0; i < set->n && !any_up; i++)
            any_up = atomic_load_explicit(&set->b[i]->healthy, memory_order_relaxed);
        if (any_up) {
            /* healthy ones are left, but this request failed on each */
            xchg_error(x, 502, "every backend tried failed");
            return;
        }
        if (x->pool->o.all_down_wait_ms == 0 || w->stopping) {
            xchg_error(x, 503, "no healthy backend");
            return;
        }
        if (x->st != X_WAIT) {
            x->st = X_WAIT;
            x->wait_deadline = w->loop.now + x->pool->o.all_down_wait_ms;
            dlist_add(&w->waiting, &x->wait_link);
            client_deadline(x->c, x->pool->o.all_down_wait_ms + 50);
        }
        return;
    }
    if (x->st == X_WAIT)
        dlist_del(&x->wait_link);
    x->st = X_EXCHANGE;
    lb_started(set, b);
    x->b = b;
    if (x->ntried < PROXY_MAX_TRIES)
        x->tried[x->ntried++] = b;
    xchg_connect(x);
}

/* The connection could not even be started (refused at once): nothing was
 * sent, always retryable. */
static void up_connect_failed(struct xchg *x, int err)
{
    struct worker *w = x->c->w;
    struct backend *b = x->b;
    x->up_sent = 0;
    pool__backend_down(atomic_load(&x->pool->cur), b, strerror(-err));
    STAT_ADD(&b->st[w->idx].failures, 1);
    xchg_release_backend(x, false);
    if (x->ntried <= x->pool->o.retries && worker__retry_allowed(w, x->pool->o.retry_budget)) {
        STAT_ADD(&b->st[w->idx].retries, 1);
        xchg_start_upstream(x);
    } else {
        xchg_error(x, 502, "backend connection failed");
    }
}

static void xchg_connect(struct xchg *x)
{
    struct worker *w = x->c->w;
    struct backend *b = x->b;
    struct upconn *u = up_from_pool(w, b);
    if (!u) {
        bool inprog;
        int fd = net_connect_tcp(&b->addr, &inprog);
        if (fd < 0) {
            up_connect_failed(x, fd);
            return;
        }
        u = xcalloc(1, sizeof(*u));
        u->w = w;
        u->b = b;
        u->connecting = inprog;
        dlist_init(&u->blink);
        dlist_init(&u->wlink);
        int ar = xc_attach(&u->xc, fd, x->pool->up_xprt, x->pool->up_xprt_arg);
        if (ar < 0) {
            /* the transport refused the connection: like a refused connect */
            xc_close(&u->xc);
            free(u);
            up_connect_failed(x, ar);
            return;
        }
        if (!inprog)
            u->xc.ready |= XC_WR;
        ev_io_init(&u->io, fd, up_on_io, u);
        ev_io_start(&w->loop, &u->io, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET);
        client_deadline(x->c, w->p->o.connect_timeout_ms);
    } else {
        u->xc.ready |= XC_WR;
        client_deadline(x->c, w->p->o.timeout_ms);
    }
    u->x = x;
    x->u = u;
    x->up_sent = 0;
    x->h_off = 0;
}

/* Begin forwarding the request whose head m was just parsed. */
static void xchg_begin(struct xchg *x, const struct http_msg *m)
{
    struct client *c = x->c;
    struct worker *w = c->w;
    x->head_len = m->head_len;
    x->method = m->method;
    x->minor = m->minor;
    x->method_len = (uint8_t)(m->method_len < sizeof(x->method_s) ? m->method_len : sizeof(x->method_s) - 1);
    memcpy(x->method_s, m->method_s, x->method_len);
    x->path_len = (uint16_t)(m->target_len < sizeof(x->path) ? m->target_len : sizeof(x->path));
    memcpy(x->path, m->target, x->path_len);
    x->client_ka = m->minor == 1 ? !(m->flags & HTTP_F_CLOSE)
                                 : (m->flags & HTTP_F_KEEPALIVE) && !(m->flags & HTTP_F_CLOSE);
    x->upgrade = (m->flags & HTTP_F_UPGRADE) != 0;
    bool gen_rid = m->xrid < 0;
    if (gen_rid) {
        make_request_id(x, w);
    } else {
        const struct http_header *h = &m->headers[m->xrid];
        x->rid_len = (uint8_t)(h->value_len < sizeof(x->rid) ? h->value_len : sizeof(x->rid));
        memcpy(x->rid, h->value, x->rid_len);
    }
    if (m->flags & HTTP_F_CHUNKED) {
        x->rb = RB_CHUNKED;
        http_chunked_init(&x->rch);
    } else if (m->content_length > 0) {
        x->rb = RB_CL;
        x->rb_left = x->rb_cl = (uint64_t)m->content_length;
    } else {
        x->rb = RB_NONE;
        x->req_read_done = true;
    }
    x->c_off = x->c_scan = m->head_len;
    if (c->xc.ops == &xprt_tcp && xchg_tls_answers(x, m))
        return;
    x->pool = route(c, m);
    if (!x->pool) {
        xchg_error(x, 404, "unknown host");
        return;
    }
    int fam;
    uint8_t a[16];
    bool peer_trusted = client_identity(x, m, &fam, a);
    lb_request(x->pool, m, fam, a, &x->lbr); /* what the strategy needs, nothing more */
    /* X-Forwarded-For gets the peer; X-Real-IP and the log the believed client */
    char peer_ip[INET6_ADDRSTRLEN];
    memcpy(peer_ip, x->client_ip, sizeof(peer_ip));
    if (fam != c->family || memcmp(a, c->addr, 16) != 0)
        inet_ntop(fam, a, x->client_ip, sizeof(x->client_ip));
    if (!build_upstream_head(x, m, gen_rid, peer_trusted, peer_ip)) {
        xchg_error(x, 431, "request head too large");
        return;
    }
    worker__count_request(w);
    xchg_start_upstream(x);
}

/* ---- the client side ---- */

static void client_free(struct ev_defer *d)
{
    free(DLIST_ENTRY(d, struct client, defer));
}

static void client_close(struct client *c)
{
    if (c->closed)
        return;
    struct worker *w = c->w;
    c->closed = true;
    if (c->x) {
        struct xchg *x = c->x;
        c->x = NULL;
        xchg_release_backend(x, false);
        if (!dlist_empty(&x->wait_link))
            dlist_del(&x->wait_link);
        xchg_put(w, x);
    }
    /* close() takes the fd out of epoll: no EPOLL_CTL_DEL syscall; the
     * watcher only has to be skipped for the rest of this batch */
    c->io.active = false;
    ev_timer_stop(&w->loop, &c->timer);
    xc_close(&c->xc);
    dlist_del(&c->link);
    w->nclients--;
    atomic_fetch_sub(&w->p->open_conns, 1);
    atomic_fetch_sub(&c->l->open_conns, 1);
    listener__unref(c->l);
    ev_defer(&w->loop, &c->defer, client_free);
}

/* Abandon the exchange: the client is gone or the stream is broken. */
static void xchg_abort(struct xchg *x, int status)
{
    if (!x->status)
        x->status = status;
    xchg_finish(x, false);
}

/* Read what the client sent into cbuf. Returns bytes read, 0 when nothing
 * (would block or no room), -1 when the client closed or failed. */
static int client_fill(struct xchg *x)
{
    struct client *c = x->c;
    if (!xc_can_recv(&c->xc) || x->c_len >= x->cap)
        return 0;
    ssize_t n = xc_recv(&c->xc, x->cbuf + x->c_len, x->cap - x->c_len);
    if (n > 0) {
        x->c_len += (uint32_t)n;
        return (int)n;
    }
    if (n == -EAGAIN || n == -EINTR)
        return 0;
    return -1; /* end of stream or error */
}

static void client_process(struct client *c)
{
    struct worker *w = c->w;
    for (;;) {
        if (c->closed)
            return;
        struct xchg *x = c->x;
        if (!x) {
            if (!xc_can_recv(&c->xc))
                return;
            x = c->x = xchg_get(w);
            x->c = c;
        }
        if (x->st != X_HEAD) {
            xchg_run(x);
            return;
        }
        /* parse what is there first (pipelined requests) */
        struct http_msg *m = &t_msg;
        int r = x->c_len ? http_parse_request(x->cbuf, x->c_len, m, w->p->o.max_headers) : 0;
        if ((r == 0 && x->c_len >= w->p->o.max_header_size) ||
            (r > 0 && (unsigned)r > w->p->o.max_header_size))
            r = HTTP_E_TOO_LARGE;
        if (r == 0) {
            uint32_t before = x->c_len;
            int got = client_fill(x);
            if (got < 0) {
                client_close(c); /* closed between requests, or mid-head */
                return;
            }
            if (got == 0) {
                if (x->c_len == 0) {
                    /* nothing: give the buffers back while idle */
                    c->x = NULL;
                    xchg_put(w, x);
                }
                return;
            }
            if (before == 0) {
                x->t_start = now_us();
                client_deadline(c, w->p->o.header_timeout_ms);
            }
            continue;
        }
        if (!x->t_start)
            x->t_start = now_us();
        inet_ntop(c->family, c->addr, x->client_ip, sizeof(x->client_ip));
        if (r < 0) {
            if (r == HTTP_E_TOO_LARGE)
                xchg_error(x, 431, "request header fields too large");
            else if (r == HTTP_E_NOT_IMPL)
                xchg_error(x, 501, "not implemented");
            else if (r == HTTP_E_VERSION)
                xchg_error(x, 505, "HTTP version not supported");
            else
                xchg_error(x, 400, "malformed request");
        } else {
            client_deadline(c, w->p->o.timeout_ms);
            xchg_begin(x, m);
        }
        xchg_run(x);
        return;
    }
}

static void client_on_io(struct ev_loop *loop, struct ev_io *io, uint32_t ev)
{
    (void)loop;
    struct client *c = io->data;
    xc_on_event(&c->xc, ev);
    if (c->x && c->x->st != X_HEAD)
        xchg_run(c->x);
    else
        client_process(c);
}

static void client_on_timer(struct ev_loop *loop, struct ev_timer *t)
{
    struct client *c = t->data;
    if (loop->now + 1 < c->deadline) {
        ev_timer_start(loop, t, c->deadline - loop->now);
        return;
    }
    struct xchg *x = c->x;
    if (!x || (x->st == X_HEAD && x->c_len == 0)) {
        client_close(c); /* idle keep-alive or silent connection */
        return;
    }
    switch (x->st) {
    case X_HEAD:
        xchg_error(x, 408, "request header timeout");
        xchg_run(x);
        return;
    case X_WAIT:
        xchg_error(x, 503, "no healthy backend");
        xchg_run(x);
        return;
    case X_EXCHANGE:
        if (x->u && x->u->connecting) {
            /* connect timeout: nothing sent, retry elsewhere */
            struct backend *b = x->b;
            pool__backend_down(atomic_load(&x->pool->cur), b, "connect timeout");
            STAT_ADD(&b->st[c->w->idx].failures, 1);
            xchg_release_backend(x, false);
            if (x->ntried <= x->pool->o.retries &&
                worker__retry_allowed(c->w, x->pool->o.retry_budget)) {
                xchg_start_upstream(x);
            } else {
                xchg_error(x, 504, "backend connect timeout");
            }
            xchg_run(x);
            return;
        }
        if (!x->rsp_started && !x->hbuf_is_output) {
            if (x->b)
                STAT_ADD(&x->b->st[c->w->idx].failures, 1);
            xchg_error(x, 504, "backend timeout");
            xchg_run(x);
            return;
        }
        xchg_abort(x, 504);
        return;
    case X_TUNNEL:
    case X_ERROR:
        xchg_abort(x, x->status);
        return;
    }
}

/* ---- accept ---- */

void conn__accept(struct worker *w, struct wlistener *wl, int fd, const struct sockaddr_storage *ss)
{
    struct client *c = xcalloc(1, sizeof(*c));
    int ar = xc_attach(&c->xc, fd, wl->l->xprt, wl->l->xprt_arg);
    c->w = w;
    c->l = wl->l;
    atomic_fetch_add(&c->l->refs, 1);
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)ss;
        if (IN6_IS_ADDR_V4MAPPED(&a6->sin6_addr)) {
            c->family = AF_INET;
            memcpy(c->addr, a6->sin6_addr.s6_addr + 12, 4);
        } else {
            c->family = AF_INET6;
            memcpy(c->addr, a6->sin6_addr.s6_addr, 16);
        }
    } else {
        c->family = AF_INET;
        memcpy(c->addr, &((const struct sockaddr_in *)ss)->sin_addr, 4);
    }
    /* TCP_NODELAY comes from the listening socket (Linux copies it) */
    ev_io_init(&c->io, fd, client_on_io, c);
    ev_timer_init(&c->timer, client_on_timer, c);
    dlist_add(&w->clients, &c->link);
    w->nclients++;
    atomic_fetch_add(&c->l->open_conns, 1);
    if (ar < 0 || ev_io_start(&w->loop, &c->io, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET) < 0) {
        client_close(c);
        return;
    }
    /* the request often came with the handshake: try now */
    c->xc.ready = XC_RD | XC_WR;
    /* Over another transport (TLS) the handshake comes first, and must be
     * done, like a request head, within the header timeout: silent or
     * half-open connections cost little and not for long. */
    client_deadline(c, c->xc.ops == &xprt_tcp ? w->p->o.idle_timeout_ms : w->p->o.header_timeout_ms);
    client_process(c);
}

/* ---- the exchange pumps ---- */

/* Send whatever the upstream can take: the request head, then body bytes.
 * Returns 1 on progress, 0 when blocked, -1 when x ended. */
static int pump_request(struct xchg *x);
static int pump_response(struct xchg *x);
static int pump_tunnel(struct xchg *x);

/* An upstream failure before any response byte: retry when safe. */
static int upstream_failed(struct xchg *x, int err)
{
    struct client *c = x->c;
    struct worker *w = c->w;
    struct upconn *u = x->u;
    struct backend *b = x->b;
    bool fresh = u && !u->reused;
    bool connect_phase = u && u->connecting;
    STAT_ADD(&b->st[w->idx].failures, 1);
    if (connect_phase || (fresh && (err == ECONNRESET || err == ECONNREFUSED || err == 0)))
        pool__backend_down(atomic_load(&x->pool->cur), b,
                           connect_phase ? strerror(err ? err : ECONNREFUSED)
                                         : "connection reset before a response");
    xchg_release_backend(x, false);
    if (x->rsp_started || x->hbuf_is_output) {
        if (x->bytes_out || (x->hbuf_is_output && x->o_off))
            return xchg_abort(x, 502), -1;
        xchg_error(x, 502, "backend failed mid-response");
        return 1;
    }
    bool nothing_sent = connect_phase || x->up_sent == 0;
    bool safe = nothing_sent || (http_method_idempotent(x->method) && !x->body_discarded);
    if (safe && x->ntried <= x->pool->o.retries && worker__retry_allowed(w, x->pool->o.retry_budget)) {
        STAT_ADD(&b->st[w->idx].retries, 1);
        /* rewind the body to its start */
        x->c_off = x->c_scan = x->head_len;
        if (x->rb == RB_CL) {
            x->rb_left = x->rb_cl;
            x->req_read_done = false;
        } else if (x->rb == RB_CHUNKED) {
            http_chunked_init(&x->rch);
            x->req_read_done = false;
        }
        x->req_done = false;
        xchg_start_upstream(x);
        return 1;
    }
    xchg_error(x, 502, "backend failed before a response");
    return 1;
}

/* How many bytes at cbuf[c_scan..c_len) belong to the request body; moves
 * c_scan. Returns -1 on a framing error. */
static int scan_request_body(struct xchg *x)
{
    while (!x->req_read_done && x->c_scan < x->c_len) {
        uint32_t avail = x->c_len - x->c_scan;
        if (x->rb == RB_CL) {
            uint32_t k = avail < x->rb_left ? avail : (uint32_t)x->rb_left;
            x->c_scan += k;
            x->rb_left -= k;
            if (x->rb_left == 0)
                x->req_read_done = true;
        } else {
            size_t dl;
            long r = http_chunked_feed(&x->rch, x->cbuf + x->c_scan, avail, &dl);
            if (r < 0)
                return -1;
            x->c_scan += (uint32_t)r;
            if (x->rch.done)
                x->req_read_done = true;
            else if (r == 0)
                break;
        }
    }
    return 0;
}

static int pump_request(struct xchg *x)
{
    struct upconn *u = x->u;
    struct client *c = x->c;
    if (!u || u->connecting || x->req_done)
        return 0;
    if (x->hbuf_is_output && x->h_off < x->h_len)
        return 0; /* the backend answered before taking the whole head */
    if (scan_request_body(x) < 0) {
        xchg_error(x, 400, "invalid chunked body");
        return 1;
    }
    struct iovec iov[2];
    int n = 0;
    if (x->h_off < x->h_len) {
        iov[n].iov_base = x->hbuf + x->h_off;
        iov[n++].iov_len = x->h_len - x->h_off;
    }
    if (x->c_off < x->c_scan) {
        iov[n].iov_base = x->cbuf + x->c_off;
        iov[n++].iov_len = x->c_scan - x->c_off;
    }
    if (n == 0) {
        if (x->req_read_done) {
            x->req_done = true;
            return 1;
        }
        /* need more body from the client */
        if (x->c_off == x->c_len && x->c_len == x->cap) {
            x->c_off = x->c_scan = x->c_len = 0;
            x->body_discarded = true;
        }
        int got = client_fill(x);
        if (got < 0) {
            xchg_abort(x, 400); /* client left mid-body */
            return -1;
        }
        if (got > 0)
            client_deadline(c, c->w->p->o.timeout_ms);
        return got > 0;
    }
    if (!xc_can_send(&u->xc))
        return 0;
    ssize_t w = xc_sendv(&u->xc, iov, n);
    if (w < 0) {
        if (w == -EAGAIN)
            return 0;
        if (w == -EINTR)
            return 1;
        return upstream_failed(x, (int)-w);
    }
    x->up_sent += (uint64_t)w;
    size_t left = (size_t)w;
    if (x->h_off < x->h_len) {
        size_t k = left < x->h_len - x->h_off ? left : x->h_len - x->h_off;
        x->h_off += (uint32_t)k;
        left -= k;
    }
    x->c_off += (uint32_t)left;
    if (x->c_off == x->c_scan && x->req_read_done && x->h_off == x->h_len)
        x->req_done = true;
    else
        client_deadline(c, c->w->p->o.timeout_ms); /* a long upload progresses */
    return 1;
}

/* Rewrite the response head m for the client into hbuf. */
static bool build_client_head(struct xchg *x, const struct http_msg *m)
{
    struct obuf o = {.p = x->hbuf, .cap = x->hcap};
    struct rw_rsp r = {
        .body = x->rs == RS_CL         ? RW_RSP_LENGTH
                : x->rs == RS_CHUNKED  ? RW_RSP_CHUNKED
                : x->rs == RS_NONE     ? RW_RSP_NONE
                                       : RW_RSP_UNTIL_CLOSE,
        .content_length = m->content_length,
        .close = x->close_client,
        .client_http10 = x->minor == 0,
        .hsts_max_age = atomic_load_explicit(&x->c->l->hsts, memory_order_relaxed),
    };
    char hv[LB_KEY_MAX];
    if (x->ntried && m->status >= 200) {
        /* The strategy may pin the client to the backend that answered. */
        r.set_cookie_name = lb_response(x->pool, &x->lbr, x->tried[x->ntried - 1], hv);
        if (r.set_cookie_name)
            r.set_cookie_val = hv;
    }
    rw_response_head(&o, m, &r);
    if (o.overflow)
        return false;
    x->o_off = 0;
    x->o_len = o.len;
    return true;
}

/* Read from the backend into ubuf. 1 read, 0 nothing, -1 end of stream or
 * error (*err: 0 or the errno). */
static int upstream_fill(struct xchg *x, int *err)
{
    struct upconn *u = x->u;
    if (!xc_can_recv(&u->xc) || x->u_len >= UBUF_SIZE)
        return 0;
    ssize_t n = xc_recv(&u->xc, x->ubuf + x->u_len, UBUF_SIZE - x->u_len);
    if (n > 0) {
        x->u_len += (uint32_t)n;
        STAT_ADD(&u->b->st[u->w->idx].bytes_in, (uint64_t)n);
        return 1;
    }
    if (n == -EAGAIN || n == -EINTR)
        return 0;
    *err = n == 0 ? 0 : (int)-n;
    return -1;
}

static int parse_response_head(struct xchg *x)
{
    struct http_msg *m = &t_msg;
    int r = http_parse_response(x->ubuf + x->u_off, x->u_len - x->u_off, m, HTTP_MAX_HEADERS);
    if (r == 0) {
        if (x->u_off > 0 && x->u_len == UBUF_SIZE) {
            memmove(x->ubuf, x->ubuf + x->u_off, x->u_len - x->u_off);
            x->u_len -= x->u_off;
            x->u_off = x->u_scan = 0;
            return 1;
        }
        if (x->u_len - x->u_off >= UBUF_SIZE) {
            xchg_error(x, 502, "backend response head too large");
            return 1;
        }
        return 0;
    }
    if (r < 0) {
        xchg_error(x, 502, "invalid response from backend");
        return 1;
    }
    if (m->status >= 100 && m->status < 200 && m->status != 101) {
        /* interim (100 Continue, 103): pass it on to an HTTP/1.1 client,
         * rewritten like a final head (our version, no hop-by-hop fields) */
        if (x->minor == 1) {
            struct obuf o = {.p = x->hbuf, .cap = x->hcap};
            struct rw_rsp rr = {.body = RW_RSP_NONE, .content_length = -1};
            rw_response_head(&o, m, &rr);
            if (o.overflow) {
                xchg_error(x, 502, "backend response head too large");
                return 1;
            }
            x->o_off = 0;
            x->o_len = o.len;
            x->hbuf_is_output = true;
        }
        x->u_off += (uint32_t)r;
        x->u_scan = x->u_off;
        return 1;
    }
    if (m->status == 101) {
        if (!x->upgrade) {
            xchg_error(x, 502, "unexpected 101 from backend");
            return 1;
        }
        x->to_tunnel = true;
        x->rs = RS_NONE;
    } else if (!http_response_has_body(x->method, m->status)) {
        x->rs = RS_NONE;
    } else if (m->flags & HTTP_F_CHUNKED) {
        x->rs = x->minor == 1 ? RS_CHUNKED : RS_DECHUNK;
        http_chunked_init(&x->sch);
    } else if (m->content_length >= 0) {
        x->rs = RS_CL;
        x->rs_left = (uint64_t)m->content_length;
    } else {
        x->rs = RS_EOF;
    }
    x->status = m->status;
    x->up_reusable = !(m->flags & HTTP_F_CLOSE) && x->rs != RS_EOF &&
                     (m->minor == 1 || (m->flags & HTTP_F_KEEPALIVE)) && !x->to_tunnel;
    x->close_client = !x->client_ka || x->rs == RS_EOF || x->rs == RS_DECHUNK ||
                      !x->req_read_done || x->c->w->stopping;
    if (x->to_tunnel)
        x->close_client = false;
    if (!build_client_head(x, m)) {
        xchg_error(x, 502, "backend response head too large");
        return 1;
    }
    x->hbuf_is_output = true;
    x->rsp_head_done = true;
    x->u_off += (uint32_t)r;
    x->u_scan = x->u_off;
    if (x->rs == RS_NONE || (x->rs == RS_CL && x->rs_left == 0))
        x->rsp_done = true;
    return 1;
}

/* The next region of ubuf to write to the client: [u_off, u_scan) after
 * scanning; for RS_DECHUNK framing bytes are skipped (u_off moved). */
static int scan_response_body(struct xchg *x)
{
    if (x->u_scan > x->u_off || x->rsp_done)
        return 0;
    while (x->u_scan < x->u_len && !x->rsp_done) {
        uint32_t avail = x->u_len - x->u_scan;
        switch (x->rs) {
        case RS_CL: {
            uint32_t k = avail < x->rs_left ? avail : (uint32_t)x->rs_left;
            x->u_scan += k;
            x->rs_left -= k;
            if (x->rs_left == 0)
                x->rsp_done = true;
            return 0;
        }
        case RS_EOF:
            x->u_scan += avail;
            return 0;
        case RS_CHUNKED: {
            size_t dl;
            long r = http_chunked_feed(&x->sch, x->ubuf + x->u_scan, avail, &dl);
            if (r < 0)
                return -1;
            x->u_scan += (uint32_t)r;
            if (x->sch.done)
                x->rsp_done = true;
            if (r == 0)
                return 0;
            break;
        }
        case RS_DECHUNK: {
            size_t dl;
            long r = http_chunked_feed(&x->sch, x->ubuf + x->u_scan, avail, &dl);
            if (r < 0)
                return -1;
            if (x->sch.done)
                x->rsp_done = true;
            if (dl) {
                x->u_scan += (uint32_t)r;
                return 0; /* data: write [u_off, u_scan) */
            }
            x->u_scan += (uint32_t)r;
            x->u_off = x->u_scan; /* framing: dropped */
            if (r == 0)
                return 0;
            break;
        }
        case RS_NONE:
            return 0;
        }
    }
    return 0;
}

static int pump_response(struct xchg *x)
{
    struct client *c = x->c;
    struct upconn *u = x->u;
    int progress = 0;
    if (!x->hbuf_is_output || x->o_off == x->o_len) {
        if (!u || u->connecting)
            return 0;
        if (!x->rsp_head_done) {
            if (x->u_len > x->u_off) {
                int r = parse_response_head(x);
                if (r != 0)
                    return r;
            }
            int err = 0;
            int f = upstream_fill(x, &err);
            if (f < 0)
                return upstream_failed(x, err);
            if (f > 0) {
                x->rsp_started = true;
                client_deadline(c, c->w->p->o.timeout_ms);
            }
            return f;
        }
    }
    /* write the head (and what body is there) to the client */
    if (scan_response_body(x) < 0) {
        xchg_abort(x, 502);
        return -1;
    }
    struct iovec iov[2];
    int n = 0;
    if (x->hbuf_is_output && x->o_off < x->o_len) {
        iov[n].iov_base = x->hbuf + x->o_off;
        iov[n++].iov_len = x->o_len - x->o_off;
    }
    if (x->u_off < x->u_scan && x->rsp_head_done) {
        iov[n].iov_base = x->ubuf + x->u_off;
        iov[n++].iov_len = x->u_scan - x->u_off;
    }
    if (n > 0) {
        if (!xc_can_send(&c->xc))
            return 0;
        ssize_t w = xc_sendv(&c->xc, iov, n);
        if (w < 0) {
            if (w == -EAGAIN)
                return 0;
            if (w == -EINTR)
                return 1;
            xchg_abort(x, x->status ? x->status : 499);
            return -1;
        }
        size_t left = (size_t)w;
        if (x->hbuf_is_output && x->o_off < x->o_len) {
            size_t k = left < x->o_len - x->o_off ? left : x->o_len - x->o_off;
            x->o_off += (uint32_t)k;
            left -= k;
        }
        x->u_off += (uint32_t)left;
        x->bytes_out += (uint64_t)w;
        progress = 1;
        if (x->rsp_head_done && !x->rsp_done)
            client_deadline(c, c->w->p->o.timeout_ms); /* a slow reader still reads */
        if (x->u_off == x->u_len)
            x->u_off = x->u_scan = x->u_len = 0;
    }
    if (x->hbuf_is_output && x->o_off < x->o_len)
        return progress;
    if (!x->rsp_head_done)
        return progress || 1; /* an interim response went out: parse on */
    if (x->u_off < x->u_scan)
        return progress;
    if (x->rsp_done) {
        if (x->to_tunnel) {
            x->st = X_TUNNEL;
            x->c_off = x->c_scan;
            client_deadline(c, c->w->p->o.tunnel_timeout_ms);
            return 1;
        }
        xchg_finish(x, true);
        return -1;
    }
    if (x->u_off == x->u_len)
        x->u_off = x->u_scan = x->u_len = 0;
    int err = 0;
    int f = upstream_fill(x, &err);
    if (f < 0) {
        if (x->rs == RS_EOF) {
            x->rsp_done = true;
            return 1;
        }
        xchg_abort(x, 502); /* truncated response */
        return -1;
    }
    if (f > 0)
        client_deadline(c, c->w->p->o.timeout_ms);
    return progress || f;
}

/* One direction of a tunnel: write buf[*off, *len) to `to`, and when it is
 * empty read more from `from`; end of stream is passed on as a half-close.
 * Returns 1 on progress, 0 when blocked, -1 on an error. */
static int tunnel_dir(struct xconn *from, struct xconn *to, char *buf, uint32_t cap,
                      uint32_t *off, uint32_t *len, bool *eof, uint64_t *sent)
{
    int progress = 0;
    if (*off < *len && xc_can_send(to)) {
        ssize_t w = xc_send(to, buf + *off, *len - *off);
        if (w > 0) {
            *off += (uint32_t)w;
            *sent += (uint64_t)w;
            progress = 1;
        } else if (w != -EAGAIN && w != -EINTR) {
            return -1;
        }
    }
    if (*off == *len) {
        *off = *len = 0;
        if (!*eof && xc_can_recv(from)) {
            ssize_t n = xc_recv(from, buf, cap);
            if (n > 0) {
                *len = (uint32_t)n;
                progress = 1;
            } else if (n == 0) {
                *eof = true;
                xc_shutw(to);
                progress = 1;
            } else if (n != -EAGAIN && n != -EINTR) {
                return -1;
            }
        }
    }
    return progress;
}

/* Copy bytes both ways after 101 Switching Protocols. */
static int pump_tunnel(struct xchg *x)
{
    struct client *c = x->c;
    struct upconn *u = x->u;
    uint64_t up_bytes = 0;
    int a = tunnel_dir(&c->xc, &u->xc, x->cbuf, x->cap, &x->c_off, &x->c_len, &x->t_c_eof,
                       &up_bytes);
    int b = a < 0 ? -1
                  : tunnel_dir(&u->xc, &c->xc, x->ubuf, UBUF_SIZE, &x->u_off, &x->u_len,
                               &x->t_u_eof, &x->bytes_out);
    if (a < 0 || b < 0) {
        xchg_abort(x, 101);
        return -1;
    }
    int progress = a || b;
    if (x->t_c_eof && x->t_u_eof && x->c_off == x->c_len && x->u_off == x->u_len) {
        x->close_client = true;
        xchg_abort(x, 101);
        return -1;
    }
    if (progress)
        client_deadline(c, c->w->p->o.tunnel_timeout_ms);
    return progress;
}

/* Write our own answer, then close. */
static int pump_error(struct xchg *x)
{
    struct client *c = x->c;
    if (x->o_off < x->o_len) {
        if (!xc_can_send(&c->xc))
            return 0;
        ssize_t w = xc_send(&c->xc, x->hbuf + x->o_off, x->o_len - x->o_off);
        if (w < 0) {
            if (w == -EAGAIN)
                return 0;
            if (w == -EINTR)
                return 1;
            xchg_abort(x, x->status);
            return -1;
        }
        x->o_off += (uint32_t)w;
        x->bytes_out += (uint64_t)w;
        if (x->o_off < x->o_len)
            return 1;
    }
    xchg_finish(x, true);
    return -1;
}

static void xchg_run(struct xchg *x)
{
    for (;;) {
        int r;
        switch (x->st) {
        case X_HEAD:
            client_process(x->c);
            return;
        case X_WAIT:
            return;
        case X_ERROR:
            r = pump_error(x);
            break;
        case X_TUNNEL:
            r = pump_tunnel(x);
            break;
        case X_EXCHANGE: {
            int a = pump_request(x);
            if (a < 0)
                return;
            if (x->st != X_EXCHANGE)
                continue;
            int b = pump_response(x);
            if (b < 0)
                return;
            r = a || b;
            break;
        }
        default:
            return;
        }
        if (r <= 0)
            return;
    }
}

static void up_on_io(struct ev_loop *loop, struct ev_io *io, uint32_t ev)
{
    (void)loop;
    struct upconn *u = io->data;
    if (u->closed)
        return;
    xc_on_event(&u->xc, ev);
    struct xchg *x = u->x;
    if (!x) {
        if (u->pooled && (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
            up_idle_event(u);
        return;
    }
    if (u->connecting) {
        if (!(ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
            return;
        int err = 0;
        socklen_t l = sizeof(err);
        getsockopt(u->xc.fd, SOL_SOCKET, SO_ERROR, &err, &l);
        if (err) {
            if (upstream_failed(x, err) < 0)
                return;
            xchg_run(x);
            return;
        }
        u->connecting = false;
        u->xc.ready |= XC_WR;
        client_deadline(x->c, x->c->w->p->o.timeout_ms);
    }
    xchg_run(x);
}

/* ---- periodic work (the worker's tick) ---- */

void conn__tick(struct worker *w)
{
    /* requests waiting for a healthy backend */
    for (struct dlist *e = w->waiting.next, *n; e != &w->waiting; e = n) {
        n = e->next;
        struct xchg *x = DLIST_ENTRY(e, struct xchg, wait_link);
        x->ntried = 0; /* backends may have come back */
        xchg_start_upstream(x);
        if (x->st == X_WAIT) {
            if (w->loop.now >= x->wait_deadline) {
                xchg_error(x, 503, "no healthy backend");
                xchg_run(x);
            }
        } else {
            xchg_run(x);
        }
    }
}

/* While stopping, a keep-alive connection between requests is closed only
 * once it has been quiet for a moment and has no unread bytes: a busy client
 * gets `Connection: close` on its next response instead, so no request
 * races the close (a close with a request on the wire loses it). */
#define STOP_IDLE_QUIET_MS 250

void conn__close_idle_clients(struct worker *w)
{
    uint64_t now = w->loop.now;
    for (struct dlist *e = w->clients.next, *n; e != &w->clients; e = n) {
        n = e->next;
        struct client *c = DLIST_ENTRY(e, struct client, link);
        if (c->x && !(c->x->st == X_HEAD && c->x->c_len == 0))
            continue;
        uint64_t idle_since = c->deadline - w->p->o.idle_timeout_ms;
        if (!c->x && now < idle_since + STOP_IDLE_QUIET_MS)
            continue;
        char b;
        if (recv(c->xc.fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) == 1)
            continue; /* a request arrived: answer it (with Connection: close) */
        client_close(c);
    }
}

void conn__free_worker(struct worker *w)
{
    for (struct dlist *e = w->clients.next, *n; e != &w->clients; e = n) {
        n = e->next;
        client_close(DLIST_ENTRY(e, struct client, link));
    }
    for (struct dlist *e = w->idle_up.next, *n; e != &w->idle_up; e = n) {
        n = e->next;
        up_close(DLIST_ENTRY(e, struct upconn, wlink));
    }
    /* run the deferred frees */
    ev_run_once(&w->loop, 0);
    while (w->free_x) {
        struct xchg *x = w->free_x;
        w->free_x = x->next_free;
        free(x);
    }
    w->nfree_x = 0;
}
