/* conn.c — the proxy's client and upstream connections: accept, read
 * requests and start their exchanges (xchg.c), per-client timers, the pool
 * of idle upstream connections, the worker's periodic work.
 *
 * Everything here runs on one worker thread. Bytes move only through the
 * transport (xprt.h): no code here reads or writes a socket. Sockets are
 * registered once, edge-triggered, for reading and writing; the transport
 * remembers their readiness and clears it only when the socket would block,
 * so no epoll_ctl call happens per request. An idle client connection holds
 * no buffer: the buffers of an exchange (struct xchg) come from a
 * per-worker free list when a request starts and go back when it ends.
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "core/util.h"
#include "proxy/conn_int.h"

__thread struct http_msg conn__t_msg;

/* ---- exchange buffers ---- */

struct xchg *conn__xchg_get(struct worker *w)
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
    x->queued = x->stale_retried = x->fresh_only = false;
    x->body_start = x->body_got = 0;
    return x;
}

void conn__xchg_put(struct worker *w, struct xchg *x)
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

void conn__client_deadline(struct client *c, uint64_t after_ms)
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
    u->io.active = false; /* close() unregisters it, see conn__client_close */
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
void conn__up_release(struct upconn *u, bool reusable)
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
    if (n == 0 || u->xc.hup) {
        /* The backend closed it for being idle: learn its keep-alive
         * timeout, so that no request is sent on a connection it is about
         * to close (the race no retry can make safe for a POST). */
        uint64_t t = u->w->loop.now - u->idle_since;
        uint64_t cur = atomic_load_explicit(&u->b->idle_close_ms, memory_order_relaxed);
        if (t > 0 && (cur == 0 || t < cur))
            atomic_store_explicit(&u->b->idle_close_ms, t, memory_order_relaxed);
    }
    up_close(u);
}

/* How long a pooled connection to b may stay idle and still be used: the
 * pool's limit, or a quarter less than the backend's own keep-alive
 * timeout once seen. */
static uint64_t up_idle_limit(const struct worker *w, struct backend *b)
{
    uint64_t lim = w->p->o.upstream_idle_ms;
    uint64_t ic = atomic_load_explicit(&b->idle_close_ms, memory_order_relaxed);
    if (ic && ic - ic / 4 < lim)
        lim = ic - ic / 4;
    return lim;
}

struct upconn *conn__up_from_pool(struct worker *w, struct backend *b)
{
    struct dlist *head = &b->idle[w->idx];
    while (!dlist_empty(head)) {
        struct upconn *u = DLIST_ENTRY(head->next, struct upconn, blink);
        dlist_del(&u->blink);
        dlist_del(&u->wlink);
        u->pooled = false;
        b->idle_n[w->idx]--;
        atomic_fetch_sub(&b->idle_conns, 1);
        if (w->loop.now - u->idle_since >= up_idle_limit(w, b) || !xc_reusable(&u->xc)) {
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
            w->loop.now - u->idle_since >= up_idle_limit(w, u->b))
            up_close(u);
    }
}

/* ---- the client side ---- */

static void client_free(struct ev_defer *d)
{
    free(DLIST_ENTRY(d, struct client, defer));
}

void conn__client_close(struct client *c)
{
    if (c->closed)
        return;
    struct worker *w = c->w;
    c->closed = true;
    if (c->x) {
        struct xchg *x = c->x;
        c->x = NULL;
        xchg__release_backend(x, false);
        xchg__unwait(x);
        conn__xchg_put(w, x);
    }
    /* close() takes the fd out of epoll: no EPOLL_CTL_DEL syscall; the
     * watcher only has to be skipped for the rest of this batch */
    c->io.active = false;
    for (int ph = 0; ph < 2; ph++)
        dlist_del(&c->send_link[ph]); /* out of the send queues (no-op if not in) */
    ev_timer_stop(&w->loop, &c->timer);
    xc_close(&c->xc);
    dlist_del(&c->link);
    w->nclients--;
    atomic_fetch_sub(&w->p->open_conns, 1);
    atomic_fetch_sub(&c->l->open_conns, 1);
    listener__unref(c->l);
    ev_defer(&w->loop, &c->defer, client_free);
}

/* ---- writes at the end of the batch ----
 *
 * Written as each event comes, responses reach the client one by one, each
 * after the backend that made the next one has run, and a client program
 * that is quicker than the proxy sleeps between them: every response wakes
 * it. Written after the batch, they go out together and wake it once per
 * batch; the requests to the backends follow them, also together.
 * Counted with bench/tls.sh's layout (client on one core, proxy and
 * backends on the other), per HTTPS keep-alive request: client wake-ups
 * 0.08 -> 0.03, context switches of the proxy 0.49 -> 0.44 and of the
 * backends 0.63 -> 0.57 (plain HTTP: 0.27 -> 0.13 and 0.40 -> 0.21).
 * A write made while its phase runs goes out at once; a response that
 * arrives while the requests go out waits for the next round (run_deferred
 * runs until nothing is left, before the loop waits again). */

static void sends_run(struct ev_defer *d)
{
    struct worker *w = DLIST_ENTRY(d, struct worker, sends_defer);
    w->sends_pending = false;
    for (int ph = 0; ph < 2; ph++) {
        w->sending[ph] = true;
        while (!dlist_empty(&w->sendq[ph])) {
            struct client *c = DLIST_ENTRY(w->sendq[ph].next, struct client, send_link[ph]);
            dlist_del(&c->send_link[ph]);
            if (!c->closed && c->x)
                xchg__run(c->x);
        }
        w->sending[ph] = false;
    }
}

bool conn__send_later(struct client *c, enum send_phase ph)
{
    struct worker *w = c->w;
    if (w->sending[ph])
        return false;
    if (dlist_empty(&c->send_link[ph])) { /* not queued yet */
        dlist_add(w->sendq[ph].prev, &c->send_link[ph]); /* at the tail: in order */
        if (!w->sends_pending) {
            w->sends_pending = true;
            ev_defer(&w->loop, &w->sends_defer, sends_run);
        }
    }
    return true;
}

/* Read what the client sent into cbuf. Returns bytes read, 0 when nothing
 * (would block or no room), -1 when the client closed or failed. */
int conn__client_fill(struct xchg *x)
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

void conn__client_process(struct client *c)
{
    struct worker *w = c->w;
    for (;;) {
        if (c->closed)
            return;
        struct xchg *x = c->x;
        if (!x) {
            if (!xc_can_recv(&c->xc))
                return;
            x = c->x = conn__xchg_get(w);
            x->c = c;
        }
        if (x->st != X_HEAD) {
            xchg__run(x);
            return;
        }
        /* parse what is there first (pipelined requests) */
        struct http_msg *m = &conn__t_msg;
        int r = x->c_len ? http_parse_request(x->cbuf, x->c_len, m, w->p->o.max_headers) : 0;
        if ((r == 0 && x->c_len >= w->p->o.max_header_size) ||
            (r > 0 && (unsigned)r > w->p->o.max_header_size))
            r = HTTP_E_TOO_LARGE;
        if (r == 0) {
            uint32_t before = x->c_len;
            int got = conn__client_fill(x);
            if (got < 0) {
                conn__client_close(c); /* closed between requests, or mid-head */
                return;
            }
            if (got == 0) {
                if (x->c_len == 0) {
                    /* nothing: give the buffers back while idle */
                    c->x = NULL;
                    conn__xchg_put(w, x);
                }
                return;
            }
            if (before == 0) {
                x->t_start = conn__now_us();
                conn__client_deadline(c, w->p->o.header_timeout_ms);
            }
            continue;
        }
        if (!x->t_start)
            x->t_start = conn__now_us();
        memcpy(x->client_ip, c->addr_s, sizeof(x->client_ip));
        if (r < 0) {
            if (r == HTTP_E_TOO_LARGE)
                xchg__error(x, 431, "request header fields too large");
            else if (r == HTTP_E_NOT_IMPL)
                xchg__error(x, 501, "not implemented");
            else if (r == HTTP_E_VERSION)
                xchg__error(x, 505, "HTTP version not supported");
            else
                xchg__error(x, 400, "malformed request");
        } else {
            conn__client_deadline(c, w->p->o.timeout_ms);
            xchg__begin(x, m);
        }
        xchg__run(x);
        return;
    }
}

static void client_on_io(struct ev_loop *loop, struct ev_io *io, uint32_t ev)
{
    (void)loop;
    struct client *c = io->data;
    xc_on_event(&c->xc, ev);
    if (c->x && c->x->st != X_HEAD)
        xchg__run(c->x);
    else
        conn__client_process(c);
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
        conn__client_close(c); /* idle keep-alive or silent connection */
        return;
    }
    switch (x->st) {
    case X_HEAD:
        xchg__error(x, 408, "request header timeout");
        xchg__run(x);
        return;
    case X_WAIT:
        xchg__error(x, 503, x->queued ? "timed out in the queue for a backend" : "no healthy backend");
        xchg__run(x);
        return;
    case X_EXCHANGE:
        if (xchg__body_pending(x) && loop->now + 1 >= xchg__body_deadline(x) && !(x->u && x->u->connecting)) {
            /* the client is too slow with its body */
            if (!x->rsp_started && !x->hbuf_is_output) {
                xchg__error(x, 408, "request body timeout");
                xchg__run(x);
            } else {
                xchg__abort(x, 408);
            }
            return;
        }
        if (x->u && x->u->connecting) {
            xchg__upstream_failed(x, UF_CONNECT_TIMEOUT, ETIMEDOUT);
            xchg__run(x);
            return;
        }
        if (!x->rsp_started && !x->hbuf_is_output) {
            if (x->b)
                STAT_ADD(&x->b->st[c->w->idx].failures, 1);
            xchg__error(x, 504, "backend timeout");
            xchg__run(x);
            return;
        }
        xchg__abort(x, 504);
        return;
    case X_TUNNEL:
    case X_ERROR:
        xchg__abort(x, x->status);
        return;
    }
}

/* ---- accept ---- */

void conn__accept(struct worker *w, struct wlistener *wl, int fd, const struct sockaddr_storage *ss)
{
    struct client *c = xcalloc(1, sizeof(*c));
    dlist_init(&c->send_link[0]);
    dlist_init(&c->send_link[1]);
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
    inet_ntop(c->family, c->addr, c->addr_s, sizeof(c->addr_s));
    /* TCP_NODELAY comes from the listening socket (Linux copies it) */
    ev_io_init(&c->io, fd, client_on_io, c);
    ev_timer_init(&c->timer, client_on_timer, c);
    dlist_add(&w->clients, &c->link);
    w->nclients++;
    atomic_fetch_add(&c->l->open_conns, 1);
    if (ar < 0 || ev_io_start(&w->loop, &c->io, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET) < 0) {
        conn__client_close(c);
        return;
    }
    /* the request often came with the handshake: try now */
    c->xc.ready = XC_RD | XC_WR;
    /* Over another transport (TLS) the handshake comes first, and must be
     * done, like a request head, within the header timeout: silent or
     * half-open connections cost little and not for long. */
    conn__client_deadline(c, c->xc.ops == &xprt_tcp ? w->p->o.idle_timeout_ms
                                                    : w->p->o.header_timeout_ms);
    conn__client_process(c);
}

void conn__up_on_io(struct ev_loop *loop, struct ev_io *io, uint32_t ev)
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
            if (xchg__upstream_failed(x, UF_CONNECT, err) < 0)
                return;
            xchg__run(x);
            return;
        }
        u->connecting = false;
        u->xc.ready |= XC_WR;
        xchg__deadline(x, x->c->w->p->o.timeout_ms);
    }
    xchg__run(x);
}

/* ---- periodic work (the worker's tick) ---- */

void conn__tick(struct worker *w)
{
    /* requests queued for a backend under its limit */
    for (struct dlist *e = w->queue.next, *n; e != &w->queue; e = n) {
        n = e->next;
        struct xchg *x = DLIST_ENTRY(e, struct xchg, wait_link);
        if (w->loop.now >= x->wait_deadline) {
            xchg__error(x, 503, "timed out in the queue for a backend");
            xchg__run(x);
        }
    }
    xchg__queue_kick(w);
    /* requests waiting for a healthy backend */
    for (struct dlist *e = w->waiting.next, *n; e != &w->waiting; e = n) {
        n = e->next;
        struct xchg *x = DLIST_ENTRY(e, struct xchg, wait_link);
        x->ntried = 0; /* backends may have come back */
        xchg__start_upstream(x);
        if (x->st == X_WAIT) {
            if (w->loop.now >= x->wait_deadline) {
                xchg__error(x, 503, "no healthy backend");
                xchg__run(x);
            }
        } else {
            xchg__run(x);
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
        if (c->xc.ops->busy && c->xc.ops->busy(&c->xc))
            continue; /* e.g. mid TLS handshake: the request follows it */
        char b;
        if (recv(c->xc.fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) == 1)
            continue; /* a request arrived: answer it (with Connection: close) */
        conn__client_close(c);
    }
}

void conn__free_worker(struct worker *w)
{
    for (struct dlist *e = w->clients.next, *n; e != &w->clients; e = n) {
        n = e->next;
        conn__client_close(DLIST_ENTRY(e, struct client, link));
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
