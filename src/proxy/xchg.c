/* xchg.c — the exchange of one request: start it (route, identity,
 * rewritten head), pick a backend or wait or queue for one, stream the
 * request up and the response down (1xx, bodies both framings, Upgrade
 * tunnels), the one retry-or-fail decision, our own answers, finish and log.
 * Runs on the worker thread of its client connection.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "core/log.h"
#include "core/util.h"
#include "proxy/conn_int.h"
#include "proxy/rewrite.h"

static void xchg_connect(struct xchg *x);

/* ---- waiting for a backend: all down, or all at their limit ---- */

void xchg__unwait(struct xchg *x)
{
    if (!dlist_empty(&x->wait_link))
        dlist_del(&x->wait_link);
    if (x->queued) {
        x->queued = false;
        atomic_fetch_sub_explicit(&x->pool->queued, 1, memory_order_relaxed);
    }
}

/* A request body must arrive within body_timeout_ms plus one second per
 * min_body_rate bytes received (a minimum rate after a grace period): a
 * client trickling a byte every few seconds must not hold a backend
 * connection for as long as it likes. */
bool xchg__body_pending(const struct xchg *x) { return x->rb != RB_NONE && !x->req_read_done; }

uint64_t xchg__body_deadline(const struct xchg *x)
{
    const struct proxy_pool_opts *o = &x->pool->o;
    return x->body_start + o->body_timeout_ms + x->body_got * 1000u / o->min_body_rate;
}

static uint64_t acme_ask_cap(const struct xchg *x, uint64_t ms);

/* Arm the exchange's inactivity timeout, never past the body deadline. */
void xchg__deadline(struct xchg *x, uint64_t after_ms)
{
    after_ms = acme_ask_cap(x, after_ms);
    if (xchg__body_pending(x)) {
        uint64_t now = x->c->w->loop.now, bd = xchg__body_deadline(x);
        if (bd < now + after_ms)
            after_ms = bd > now ? bd - now : 0;
    }
    conn__client_deadline(x->c, after_ms);
}

/* ---- our own answers ---- */

/* Answer status ourselves and close the client connection afterwards. */
void xchg__error(struct xchg *x, int status, const char *msg)
{
    xchg__release_backend(x, false);
    xchg__unwait(x);
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
                     "Content-Length: %d\r\nConnection: close\r\n%s%s%s%.*s%s\r\n%s",
                     status, http_reason(status), bl, status == 503 ? "Retry-After: 1\r\n" : "",
                     /* a peer listener's own 503: the server that asked may try another */
                     status == 503 && x->c->l->peer ? "X-Tako-Peer: no-replica\r\n" : "",
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
    xchg__error(x, status, NULL);
    size_t bl = strlen(body);
    int n = snprintf(x->hbuf, x->hcap,
                     "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n%s\r\n%s",
                     status, http_reason(status), bl, extra, x->method == HTTP_HEAD ? "" : body);
    if (n < 0 || (uint32_t)n >= x->hcap) {
        xchg__error(x, 500, "answer too large");
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
        if (c->l->peer && (m->method == HTTP_GET || m->method == HTTP_HEAD)) {
            /* Another server asks for a token it does not know: answer
             * from this server's own orders only, never ask further (no
             * loops); X-Tako-Peer tells the asker to try its next peer. */
            xchg__error(x, 404, "unknown ACME token");
            x->o_len = (uint32_t)snprintf(x->hbuf, x->hcap,
                                          "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n"
                                          "Content-Length: 0\r\nConnection: close\r\n"
                                          "X-Tako-Peer: no-token\r\n\r\n");
            return true;
        }
        /* Not ours: with peers, the CA's request may be for an order of
         * another server of the environment (DNS names them all); ask them
         * (xchg__begin). Without, the application may have its own. */
        x->acme_ask = m->method == HTTP_GET || m->method == HTTP_HEAD;
        return false;
    }
    if (c->l->peer)
        return false;
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
        .dur_us = conn__now_us() - x->t_start,
        .rid = x->rid,
        .rid_len = x->rid_len,
        .pool = x->pool ? x->pool->name : "-",
    };
    alog__write(w, &r);
}

void xchg__release_backend(struct xchg *x, bool up_reusable)
{
    if (x->u) {
        struct upconn *u = x->u;
        x->u = NULL;
        conn__up_release(u, up_reusable);
    }
    if (x->b) {
        struct backend *b = x->b;
        x->b = NULL;
        lb_finished(atomic_load_explicit(&b->pool->cur, memory_order_acquire), b);
        if (b->pool->o.max_conns_per_backend)
            xchg__queue_kick(x->c->w);
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
    metrics__observe(st, x->status, conn__now_us() - x->t_start);
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
    xchg__release_backend(x, reuse_up);
    xchg__unwait(x);
    /* Closed only when the response said so: a stop that began after the
     * head went out (keep-alive) leaves the connection to the stopping
     * worker's quiet-idle rule (conn__close_idle_clients), since a client
     * told "keep-alive" may already be sending its next request. */
    if (!client_ok || x->close_client || !x->client_ka || !x->req_done) {
        conn__client_close(c);
        return;
    }
    c->nreq++;
    /* pipelined bytes after this request start the next one */
    uint32_t rest = x->c_len - x->c_scan;
    if (rest == 0) {
        c->x = NULL;
        conn__xchg_put(w, x);
        conn__client_deadline(c, w->p->o.idle_timeout_ms);
        if (xc_can_recv(&c->xc))
            conn__client_process(c);
        return;
    }
    struct xchg *nx = conn__xchg_get(w);
    memcpy(nx->cbuf, x->cbuf + x->c_scan, rest);
    nx->c_len = rest;
    nx->c = c;
    c->x = nx;
    conn__xchg_put(w, x);
    conn__client_deadline(c, w->p->o.header_timeout_ms);
    conn__client_process(c);
}

/* ---- request start ---- */

bool proxy__cidr_match(const struct proxy_cidr *cd, int family, const uint8_t *a)
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
        if (proxy__cidr_match(&p->trusted[i], family, a))
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
    /* On a peer listener the peer is another server of the environment,
     * which already did this walk: its chain is believed. */
    if (!c->l->peer && (!p->ntrusted || !trusted(p, c->family, c->addr)))
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

/* Another server's health check of this one (X-Tako-Peer-Check), on a peer
 * listener: answered here from this balancer's own view of the service's
 * replicas, so that it costs the replicas nothing and says exactly "this
 * server can serve it". True when answered. */
static bool peer_check(struct xchg *x, const struct http_msg *m)
{
    static const char name[] = "x-tako-peer-check";
    bool asked = false;
    for (unsigned i = 0; i < m->nheaders && !asked; i++)
        asked = m->headers[i].name_len == sizeof(name) - 1 &&
                strncasecmp(m->headers[i].name, name, sizeof(name) - 1) == 0;
    if (!asked)
        return false;
    const struct lb_set *set = atomic_load_explicit(&x->pool->cur, memory_order_acquire);
    unsigned up = 0;
    for (size_t i = 0; i < set->n; i++)
        up += !set->b[i]->peer && atomic_load_explicit(&set->b[i]->healthy, memory_order_relaxed);
    if (!up) {
        xchg__error(x, 503, "no healthy replica on this server");
        return true;
    }
    char body[48];
    snprintf(body, sizeof(body), "%u healthy\n", up);
    xchg_reply(x, 200, "", body);
    return true;
}

/* A peer listener's routes are services: X-Tako-Service names one. */
static struct proxy_pool *route_peer(const struct routes *rt, const struct http_msg *m)
{
    static const char name[] = "x-tako-service";
    for (unsigned i = 0; i < m->nheaders; i++) {
        const struct http_header *h = &m->headers[i];
        if (h->name_len != sizeof(name) - 1 || strncasecmp(h->name, name, h->name_len) != 0)
            continue;
        for (size_t k = 0; k < rt->n; k++)
            if (rt->r[k].len == h->value_len &&
                strncasecmp(rt->r[k].domain, h->value, h->value_len) == 0)
                return rt->r[k].pool;
        return NULL;
    }
    return NULL;
}

static struct proxy_pool *route(struct client *c, const struct http_msg *m)
{
    struct routes *rt = atomic_load_explicit(&c->l->routes, memory_order_acquire);
    if (c->l->peer)
        return route_peer(rt, m);
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

/* ---- an ACME token this server does not know: ask the peers ---- */

/* At most this many other servers are asked for one token, each within
 * ACME_ASK_TIMEOUT_MS (connect, then the answer): the CA waits for a
 * validation answer only so long, and a server that is gone must not hold
 * the request for a whole connect timeout. */
#define ACME_ASK_MAX 4
#define ACME_ASK_TIMEOUT_MS 2000

static bool xchg_pool_has_peer(struct proxy_pool *pool)
{
    struct lb_set *set = atomic_load_explicit(&pool->cur, memory_order_acquire);
    for (size_t i = 0; i < set->n; i++)
        if (set->b[i]->peer)
            return true;
    return false;
}

static bool xchg_tried(const struct xchg *x, const struct backend *b);

/* The next peer not asked yet, healthy ones first (the health of the
 * service's replicas there says nothing of its tokens, but a peer that
 * fails its checks may be gone). NULL after ACME_ASK_MAX. */
static struct backend *acme_ask_pick(struct xchg *x, struct lb_set *set)
{
    if (x->ntried >= ACME_ASK_MAX)
        return NULL;
    struct backend *down = NULL;
    for (size_t i = 0; i < set->n; i++) {
        struct backend *b = set->b[i];
        if (!b->peer || xchg_tried(x, b))
            continue;
        if (atomic_load_explicit(&b->healthy, memory_order_relaxed))
            return b;
        if (!down)
            down = b;
    }
    return down;
}

/* Deadlines while asking peers are capped (see ACME_ASK_TIMEOUT_MS). */
static uint64_t acme_ask_cap(const struct xchg *x, uint64_t ms)
{
    return x->acme_ask && ms > ACME_ASK_TIMEOUT_MS ? ACME_ASK_TIMEOUT_MS : ms;
}

static struct backend *xchg_pick(struct xchg *x, struct lb_set **setp)
{
    struct worker *w = x->c->w;
    struct lb_set *set = atomic_load_explicit(&x->pool->cur, memory_order_acquire);
    if (x->acme_ask) {
        *setp = set;
        return acme_ask_pick(x, set);
    }
    struct lb_req *r = &x->lbr;
    r->tried = x->tried;
    r->ntried = x->ntried;
    r->maxconn = x->pool->o.max_conns_per_backend;
    r->rand = worker_rand_cb;
    r->rand_ctx = w;
    *setp = set;
    return set->n ? set->ops->pick(set, r) : NULL;
}

static bool xchg_tried(const struct xchg *x, const struct backend *b)
{
    for (unsigned i = 0; i < x->ntried; i++)
        if (x->tried[i] == b)
            return true;
    return false;
}

/* Every usable backend is at max_conns_per_backend: wait in the worker's
 * FIFO queue (HAProxy's maxconn/maxqueue) until one finishes a request, at
 * most queue_timeout_ms, or answer 503 at once when max_queue wait. */
static void xchg_enqueue(struct xchg *x)
{
    struct worker *w = x->c->w;
    struct proxy_pool *pool = x->pool;
    if (x->queued)
        return; /* still full: keep its place */
    if (atomic_fetch_add_explicit(&pool->queued, 1, memory_order_relaxed) >= pool->o.max_queue) {
        atomic_fetch_sub_explicit(&pool->queued, 1, memory_order_relaxed);
        xchg__error(x, 503, "every backend is at its connection limit and the queue is full");
        return;
    }
    xchg__unwait(x); /* from the all-down wait, if it was there */
    x->queued = true;
    x->st = X_WAIT;
    x->wait_deadline = w->loop.now + pool->o.queue_timeout_ms;
    dlist_add(w->queue.prev, &x->wait_link);
    conn__client_deadline(x->c, pool->o.queue_timeout_ms + 50);
}

/* A backend finished a request on this worker: give queued exchanges their
 * chance, in order, after the current batch of events. */
static void queue_run(struct ev_defer *d)
{
    struct worker *w = DLIST_ENTRY(d, struct worker, queue_defer);
    w->queue_kick = false;
    while (!dlist_empty(&w->queue)) {
        struct xchg *x = DLIST_ENTRY(w->queue.next, struct xchg, wait_link);
        xchg__start_upstream(x);
        if (x->queued)
            break; /* still full: the ones behind it wait too */
        xchg__run(x);
    }
}

void xchg__queue_kick(struct worker *w)
{
    if (w->queue_kick || dlist_empty(&w->queue))
        return;
    w->queue_kick = true;
    ev_defer(&w->loop, &w->queue_defer, queue_run);
}

/* Pick a backend and connect (or wait for one to be healthy). */
void xchg__start_upstream(struct xchg *x)
{
    struct worker *w = x->c->w;
    struct lb_set *set;
    struct backend *b = xchg_pick(x, &set);
    if (!b && x->acme_ask) {
        /* every peer asked (or failed to answer): nobody has this token */
        xchg__error(x, 404, "unknown ACME token");
        return;
    }
    if (!b) {
        bool any_up = false, any_full = false;
        unsigned maxc = x->pool->o.max_conns_per_backend;
        for (size_t i = 0; i < set->n; i++) {
            struct backend *sb = set->b[i];
            if (!atomic_load_explicit(&sb->healthy, memory_order_relaxed))
                continue;
            if (x->lbr.local_only && sb->peer)
                continue;
            any_up = true;
            if (maxc && atomic_load_explicit(&sb->inflight, memory_order_relaxed) >= maxc &&
                !xchg_tried(x, sb))
                any_full = true;
        }
        if (any_full && !w->stopping) {
            xchg_enqueue(x);
            return;
        }
        if (any_up) {
            /* healthy ones are left, but this request failed on each */
            xchg__error(x, 502, "every backend tried failed");
            return;
        }
        if (x->pool->o.all_down_wait_ms == 0 || w->stopping) {
            xchg__error(x, 503, "no healthy backend");
            return;
        }
        if (x->lbr.local_only) {
            /* A peer asked: it has other servers to try, and its health
             * check must see this at once, not after a wait. */
            xchg__error(x, 503, "no healthy replica on this server");
            return;
        }
        if (x->st != X_WAIT) {
            x->st = X_WAIT;
            x->wait_deadline = w->loop.now + x->pool->o.all_down_wait_ms;
            dlist_add(&w->waiting, &x->wait_link);
            conn__client_deadline(x->c, x->pool->o.all_down_wait_ms + 50);
        }
        return;
    }
    xchg__unwait(x);
    x->st = X_EXCHANGE;
    lb_started(set, b);
    x->b = b;
    if (x->ntried < PROXY_MAX_TRIES)
        x->tried[x->ntried++] = b;
    xchg_connect(x);
}

/* The request head ends with "X-Tako-Service: …" exactly when it goes to
 * a peer backend: the line is put in or taken out before the blank line
 * (a retry may go from a peer to a local replica or back). */
static bool xchg_peer_line(struct xchg *x, bool want)
{
    struct proxy_pool *pool = x->pool;
    if (want && !pool->peer_service)
        want = false;
    if (want == (x->svc_line != 0))
        return true;
    char *end = x->hbuf + x->h_len - 2; /* the blank line's CRLF */
    if (!want) {
        memmove(end - x->svc_line, end, 2);
        x->h_len -= x->svc_line;
        x->svc_line = 0;
        return true;
    }
    size_t add = sizeof("X-Tako-Service: \r\n") - 1 + pool->peer_service_len;
    if (x->h_len + add > x->hcap || add > UINT16_MAX)
        return false;
    memcpy(end, "X-Tako-Service: ", 16);
    memcpy(end + 16, pool->peer_service, pool->peer_service_len);
    memcpy(end + 16 + pool->peer_service_len, "\r\n\r\n", 4);
    x->h_len += (uint32_t)add;
    x->svc_line = (uint16_t)add;
    return true;
}

static void xchg_connect(struct xchg *x)
{
    struct worker *w = x->c->w;
    struct backend *b = x->b;
    if (!xchg_peer_line(x, b->peer)) {
        xchg__upstream_failed(x, UF_CONNECT, ENOBUFS);
        return;
    }
    struct upconn *u = x->fresh_only ? NULL : conn__up_from_pool(w, b);
    x->fresh_only = false;
    if (!u) {
        bool inprog;
        /* To a peer from this server's peer address: its listener lets in
         * only the environment's servers. */
        int fd = net_connect_tcp_from(&b->addr, b->peer && x->pool->peer_src.len ? &x->pool->peer_src : NULL,
                                      &inprog);
        if (fd < 0) {
            xchg__upstream_failed(x, UF_CONNECT, -fd);
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
            xchg__upstream_failed(x, UF_CONNECT, -ar);
            return;
        }
        if (!inprog)
            u->xc.ready |= XC_WR;
        ev_io_init(&u->io, fd, conn__up_on_io, u);
        ev_io_start(&w->loop, &u->io, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET);
        conn__client_deadline(x->c, acme_ask_cap(x, w->p->o.connect_timeout_ms));
    } else {
        u->xc.ready |= XC_WR;
        xchg__deadline(x, w->p->o.timeout_ms);
    }
    u->x = x;
    x->u = u;
    x->up_sent = 0;
    x->h_off = 0;
}

/* Begin forwarding the request whose head m was just parsed. */
void xchg__begin(struct xchg *x, const struct http_msg *m)
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
    x->body_start = w->loop.now;
    if (c->xc.ops == &xprt_tcp && xchg_tls_answers(x, m))
        return;
    x->pool = route(c, m);
    if (!x->pool) {
        xchg__error(x, 404, c->l->peer ? "unknown service (X-Tako-Service)" : "unknown host");
        return;
    }
    if (x->acme_ask && !xchg_pool_has_peer(x->pool))
        x->acme_ask = false; /* one server: the application may have its own */
    if (c->l->peer && peer_check(x, m))
        return;
    int fam;
    uint8_t a[16];
    bool peer_trusted = client_identity(x, m, &fam, a);
    lb_request(x->pool, m, fam, a, &x->lbr); /* what the strategy needs, nothing more */
    x->lbr.local_only = c->l->peer; /* never onward to another server: no loops */
    /* X-Forwarded-For gets the peer; X-Real-IP and the log the believed client */
    char peer_ip[INET6_ADDRSTRLEN];
    memcpy(peer_ip, x->client_ip, sizeof(peer_ip));
    if (fam != c->family || memcmp(a, c->addr, 16) != 0)
        inet_ntop(fam, a, x->client_ip, sizeof(x->client_ip));
    if (!build_upstream_head(x, m, gen_rid, peer_trusted, peer_ip)) {
        xchg__error(x, 431, "request head too large");
        return;
    }
    worker__count_request(w);
    xchg__start_upstream(x);
}

/* Abandon the exchange: the client is gone or the stream is broken. */
void xchg__abort(struct xchg *x, int status)
{
    if (!x->status)
        x->status = status;
    xchg_finish(x, false);
}

/* ---- the exchange pumps ---- */

/* Send whatever the upstream can take: the request head, then body bytes.
 * Returns 1 on progress, 0 when blocked, -1 when x ended. */
static int pump_request(struct xchg *x);
static int pump_response(struct xchg *x);
static int pump_tunnel(struct xchg *x);

/* The one retry-or-fail decision for every upstream failure: a connect
 * refused at once or failed (UF_CONNECT), a connect timeout
 * (UF_CONNECT_TIMEOUT), a send or receive error or an end of stream during
 * the exchange (UF_IO, err 0 for a clean close). The failure is counted, a
 * backend that failed to connect (or reset a fresh connection) is marked
 * down, the backend is let go; then the request goes to another backend
 * when that is safe and within --retries and the retry budget, else the
 * client gets 502 (504 after a connect timeout). Returns 1 when x goes on,
 * -1 when it ended. */
int xchg__upstream_failed(struct xchg *x, enum up_fail why, int err)
{
    struct client *c = x->c;
    struct worker *w = c->w;
    struct upconn *u = x->u;
    struct backend *b = x->b;
    bool fresh = u && !u->reused;
    bool connect_phase = why != UF_IO;
    /* A pooled connection reset with our bytes unread: the backend closed
     * it (its keep-alive timeout) as the request went out, and never read
     * the request, so even a POST may go again, once, on a fresh
     * connection (bench/keepalive_race.py measures this race). */
    bool stale = why == UF_IO && u && u->reused && !x->rsp_started &&
                 (err == ECONNRESET || err == EPIPE);
    log_debug("proxy: %s upstream connection to %s failed: %s",
              connect_phase ? "new" : fresh ? "fresh" : "pooled", b->addr_s,
              err ? strerror(err) : "closed");
    STAT_ADD(&b->st[w->idx].failures, 1);
    if (connect_phase || (fresh && (err == ECONNRESET || err == ECONNREFUSED || err == 0)))
        pool__backend_down(atomic_load(&x->pool->cur), b,
                           why == UF_CONNECT_TIMEOUT ? "connect timeout"
                           : connect_phase          ? strerror(err ? err : ECONNREFUSED)
                                                    : "connection reset before a response");
    xchg__release_backend(x, false);
    if (x->rsp_started || x->hbuf_is_output) {
        if (x->bytes_out || (x->hbuf_is_output && x->o_off))
            return xchg__abort(x, 502), -1;
        xchg__error(x, 502, "backend failed mid-response");
        return 1;
    }
    bool nothing_sent = connect_phase || x->up_sent == 0;
    bool safe = nothing_sent || (http_method_idempotent(x->method) && !x->body_discarded) ||
                (x->peer_refused && !x->body_discarded);
    x->peer_refused = false;
    if (stale && !x->stale_retried && !x->body_discarded) {
        /* same backend, fresh connection; not counted against --retries */
        x->stale_retried = true;
        x->fresh_only = true;
        if (x->ntried > 0 && x->tried[x->ntried - 1] == b)
            x->ntried--;
        safe = true;
    }
    /* An ACME question goes to the next peer whatever --retries says: it
     * is bounded by ACME_ASK_MAX, and ends in our own 404. */
    if (safe && (x->acme_ask ||
                 (x->ntried <= x->pool->o.retries && worker__retry_allowed(w, x->pool->o.retry_budget)))) {
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
        xchg__start_upstream(x);
        return 1;
    }
    if (why == UF_CONNECT_TIMEOUT)
        xchg__error(x, 504, "backend connect timeout");
    else if (why == UF_CONNECT)
        xchg__error(x, 502, "backend connection failed");
    else
        xchg__error(x, 502, "backend failed before a response");
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
            x->body_got += k;
            x->rb_left -= k;
            if (x->rb_left == 0)
                x->req_read_done = true;
        } else {
            size_t dl;
            long r = http_chunked_feed(&x->rch, x->cbuf + x->c_scan, avail, &dl);
            if (r < 0)
                return -1;
            x->c_scan += (uint32_t)r;
            x->body_got += (uint64_t)r;
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
        xchg__error(x, 400, "invalid chunked body");
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
        int got = conn__client_fill(x);
        if (got < 0) {
            xchg__abort(x, 400); /* client left mid-body */
            return -1;
        }
        if (got > 0)
            xchg__deadline(x, c->w->p->o.timeout_ms);
        return got > 0;
    }
    if (!xc_can_send(&u->xc) || conn__send_later(c, SEND_TO_BACKENDS))
        return 0;
    ssize_t w = xc_sendv(&u->xc, iov, n);
    if (w < 0) {
        if (w == -EAGAIN)
            return 0;
        if (w == -EINTR)
            return 1;
        return xchg__upstream_failed(x, UF_IO, (int)-w);
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
        xchg__deadline(x, c->w->p->o.timeout_ms); /* a long upload progresses */
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

/* A 503 a peer listener answered itself (X-Tako-Peer: no-replica). */
static bool peer_refused(const struct http_msg *m)
{
    for (unsigned i = 0; i < m->nheaders; i++)
        if (m->headers[i].name_len == 11 && strncasecmp(m->headers[i].name, "x-tako-peer", 11) == 0)
            return true;
    return false;
}

static int parse_response_head(struct xchg *x)
{
    struct http_msg *m = &conn__t_msg;
    int r = http_parse_response(x->ubuf + x->u_off, x->u_len - x->u_off, m, HTTP_MAX_HEADERS);
    if (r == 0) {
        if (x->u_off > 0 && x->u_len == UBUF_SIZE) {
            memmove(x->ubuf, x->ubuf + x->u_off, x->u_len - x->u_off);
            x->u_len -= x->u_off;
            x->u_off = x->u_scan = 0;
            return 1;
        }
        if (x->u_len - x->u_off >= UBUF_SIZE) {
            xchg__error(x, 502, "backend response head too large");
            return 1;
        }
        return 0;
    }
    if (r < 0) {
        xchg__error(x, 502, "invalid response from backend");
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
                xchg__error(x, 502, "backend response head too large");
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
    if (x->acme_ask && m->status != 200) {
        /* This peer does not know the token either (404 X-Tako-Peer:
         * no-token) or cannot say: ask the next one, or answer 404. The
         * peer is not marked down: its replicas may be fine. */
        xchg__release_backend(x, false);
        x->u_off = x->u_len = x->u_scan = 0;
        x->rsp_started = false;
        x->req_done = false;
        x->c_off = x->c_scan = x->head_len;
        xchg__start_upstream(x);
        return 1;
    }
    if (m->status == 503 && x->b && x->b->peer && peer_refused(m) && !x->body_discarded &&
        !x->hbuf_is_output && x->ntried <= x->pool->o.retries) {
        /* The peer forwarded nothing (it has no healthy replica): like a
         * refused connection, try another backend, whatever the method. */
        pool__backend_down(atomic_load(&x->pool->cur), x->b, "its server has no healthy replica");
        x->u_off = x->u_len = x->u_scan = 0;
        x->rsp_started = false; /* its bytes were ours to drop: none reached the client */
        x->peer_refused = true;
        return xchg__upstream_failed(x, UF_IO, 0);
    }
    if (m->status == 101) {
        if (!x->upgrade) {
            xchg__error(x, 502, "unexpected 101 from backend");
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
        xchg__error(x, 502, "backend response head too large");
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
                return xchg__upstream_failed(x, UF_IO, err);
            if (f > 0) {
                x->rsp_started = true;
                xchg__deadline(x, c->w->p->o.timeout_ms);
            }
            return f;
        }
    }
    /* write the head (and what body is there) to the client */
    if (scan_response_body(x) < 0) {
        xchg__abort(x, 502);
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
        if (!xc_can_send(&c->xc) || conn__send_later(c, SEND_TO_CLIENTS))
            return 0;
        ssize_t w = xc_sendv(&c->xc, iov, n);
        if (w < 0) {
            if (w == -EAGAIN)
                return 0;
            if (w == -EINTR)
                return 1;
            xchg__abort(x, x->status ? x->status : 499);
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
            xchg__deadline(x, c->w->p->o.timeout_ms); /* a slow reader still reads */
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
            conn__client_deadline(c, c->w->p->o.tunnel_timeout_ms);
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
        xchg__abort(x, 502); /* truncated response */
        return -1;
    }
    if (f > 0)
        xchg__deadline(x, c->w->p->o.timeout_ms);
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
        xchg__abort(x, 101);
        return -1;
    }
    int progress = a || b;
    if (x->t_c_eof && x->t_u_eof && x->c_off == x->c_len && x->u_off == x->u_len) {
        x->close_client = true;
        xchg__abort(x, 101);
        return -1;
    }
    if (progress)
        conn__client_deadline(c, c->w->p->o.tunnel_timeout_ms);
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
            xchg__abort(x, x->status);
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

void xchg__run(struct xchg *x)
{
    for (;;) {
        int r;
        switch (x->st) {
        case X_HEAD:
            conn__client_process(x->c);
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
