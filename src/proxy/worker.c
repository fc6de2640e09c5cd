/* worker.c — worker threads: one event loop each, its own SO_REUSEPORT
 * socket per listener (a peer listener's allow list checked at accept), commands from other threads through an eventfd,
 * a 100 ms tick for housekeeping, and the quiescent-state mark that lets
 * the control thread free retired backend sets. */
#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"
#include "proxy/proxy_int.h"

#define TICK_MS 100
#define ACCEPT_BATCH 64

uint64_t worker__rand(struct worker *w)
{
    /* xorshift128+ */
    uint64_t s1 = w->rng[0];
    const uint64_t s0 = w->rng[1];
    w->rng[0] = s0;
    s1 ^= s1 << 23;
    w->rng[1] = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26);
    return w->rng[1] + s0;
}

static void budget_window(struct worker *w)
{
    uint64_t sec = w->loop.now / 1000;
    if (w->budget_sec != sec) {
        w->budget_sec = sec;
        w->budget_reqs = 0;
        w->budget_retries = 0;
    }
}

void worker__count_request(struct worker *w)
{
    budget_window(w);
    w->budget_reqs++;
}

bool worker__retry_allowed(struct worker *w, double ratio)
{
    budget_window(w);
    if ((double)w->budget_retries < 10.0 + ratio * (double)w->budget_reqs) {
        w->budget_retries++;
        return true;
    }
    return false;
}

void listener__unref(struct listener *l)
{
    if (atomic_fetch_sub(&l->refs, 1) == 1) {
        free(l->fds);
        free(atomic_load(&l->routes));
        free(atomic_load(&l->allow));
        free(l);
    }
}

static void set_listeners_active(struct worker *w, bool on)
{
    for (struct dlist *e = w->listeners.next; e != &w->listeners; e = e->next) {
        struct wlistener *wl = DLIST_ENTRY(e, struct wlistener, link);
        if (on)
            ev_io_start(&w->loop, &wl->io, EPOLLIN);
        else
            ev_io_stop(&w->loop, &wl->io);
    }
}

/* A peer listener takes connections from the environment's other servers
 * only; anyone else is closed before a byte is read, counted, and logged at
 * most once a minute (a scan must not fill the log). */
static bool peer_allowed(struct listener *l, const struct sockaddr_storage *ss)
{
    int fam = AF_INET;
    uint8_t a[16] = {0};
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)ss;
        if (IN6_IS_ADDR_V4MAPPED(&a6->sin6_addr)) {
            memcpy(a, a6->sin6_addr.s6_addr + 12, 4);
        } else {
            fam = AF_INET6;
            memcpy(a, a6->sin6_addr.s6_addr, 16);
        }
    } else {
        memcpy(a, &((const struct sockaddr_in *)ss)->sin_addr, 4);
    }
    const struct peer_allow *al = atomic_load_explicit(&l->allow, memory_order_acquire);
    for (size_t i = 0; al && i < al->n; i++)
        if (proxy__cidr_match(&al->c[i], fam, a))
            return true;
    uint64_t n = atomic_fetch_add_explicit(&l->refused, 1, memory_order_relaxed) + 1;
    uint64_t now = ev_time_ms(), last = atomic_load_explicit(&l->refused_log_ms, memory_order_relaxed);
    if ((last == 0 || now - last >= 60000) &&
        atomic_compare_exchange_strong(&l->refused_log_ms, &last, now)) {
        char ip[INET6_ADDRSTRLEN], la[64];
        inet_ntop(fam, a, ip, sizeof(ip));
        log_warn("proxy: peer listener %s refused a connection from %s: not one of the "
                 "environment's servers (%llu refused so far)",
                 net_addr_str(&l->addr, la, sizeof(la)), ip, (unsigned long long)n);
    }
    return false;
}

static void on_accept(struct ev_loop *loop, struct ev_io *io, uint32_t ev)
{
    (void)loop;
    (void)ev;
    struct wlistener *wl = io->data;
    struct worker *w = wl->w;
    struct proxy *p = w->p;
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        if (atomic_load_explicit(&p->open_conns, memory_order_relaxed) >= p->o.max_conns) {
            if (!w->paused) {
                w->paused = true;
                set_listeners_active(w, false);
                log_warn("proxy: %u client connections open (--max-conns): not accepting",
                         p->o.max_conns);
            }
            return;
        }
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        int fd = accept4(io->fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd == -1) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE) {
                /* out of descriptors: stop accepting until the tick */
                w->paused = true;
                set_listeners_active(w, false);
                log_warn("proxy: accept: %s", strerror(errno));
            }
            return;
        }
        if (wl->l->peer && !peer_allowed(wl->l, &ss)) {
            close(fd);
            continue;
        }
        atomic_fetch_add_explicit(&p->open_conns, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&wl->l->accepted, 1, memory_order_relaxed);
        conn__accept(w, wl, fd, &ss);
    }
}

static void add_listener(struct worker *w, struct listener *l)
{
    struct wlistener *wl = xcalloc(1, sizeof(*wl));
    wl->l = l;
    wl->w = w;
    ev_io_init(&wl->io, l->fds[w->idx], on_accept, wl);
    dlist_add(&w->listeners, &wl->link);
    if (!w->paused && !w->stopping)
        ev_io_start(&w->loop, &wl->io, EPOLLIN);
}

static void wlistener_free(struct ev_defer *d)
{
    free(DLIST_ENTRY(d, struct wlistener, free_defer));
}

/* The accept watcher may sit later in the batch ev_run_once is walking
 * (a command and a connection woke the loop together): it is stopped
 * now, so the loop skips it, and freed only after the batch. */
static void remove_listener(struct worker *w, struct wlistener *wl)
{
    ev_io_stop(&w->loop, &wl->io);
    close(wl->io.fd);
    dlist_del(&wl->link);
    listener__unref(wl->l);
    ev_defer(&w->loop, &wl->free_defer, wlistener_free);
}

static void on_cmd(struct ev_loop *loop, struct ev_io *io, uint32_t ev)
{
    (void)loop;
    (void)ev;
    struct worker *w = io->data;
    uint64_t v;
    ssize_t r = read(w->evfd, &v, sizeof(v));
    (void)r;
    pthread_mutex_lock(&w->qlock);
    struct wcmd *q = w->q;
    w->q = NULL;
    pthread_mutex_unlock(&w->qlock);
    /* oldest first */
    struct wcmd *rev = NULL;
    while (q) {
        struct wcmd *n = q->next;
        q->next = rev;
        rev = q;
        q = n;
    }
    for (struct wcmd *c = rev, *n; c; c = n) {
        n = c->next;
        switch (c->kind) {
        case WCMD_LISTEN:
            add_listener(w, c->l);
            break;
        case WCMD_UNLISTEN:
            for (struct dlist *e = w->listeners.next; e != &w->listeners; e = e->next) {
                struct wlistener *wl = DLIST_ENTRY(e, struct wlistener, link);
                if (wl->l == c->l) {
                    remove_listener(w, wl);
                    break;
                }
            }
            break;
        case WCMD_STOP:
            if (!w->stopping) {
                w->stopping = true;
                w->stop_deadline = w->loop.now + w->p->o.stop_timeout_ms;
                while (!dlist_empty(&w->listeners))
                    remove_listener(w, DLIST_ENTRY(w->listeners.next, struct wlistener, link));
                conn__close_idle_clients(w);
                conn__close_removed_upstreams(w);
            }
            break;
        }
        free(c);
    }
}

void worker__post(struct worker *w, enum wcmd_kind kind, struct listener *l)
{
    struct wcmd *c = xcalloc(1, sizeof(*c));
    c->kind = kind;
    c->l = l;
    pthread_mutex_lock(&w->qlock);
    c->next = w->q;
    w->q = c;
    pthread_mutex_unlock(&w->qlock);
    uint64_t one = 1;
    ssize_t r = write(w->evfd, &one, sizeof(one));
    (void)r;
}

static void on_tick(struct ev_loop *loop, struct ev_timer *t)
{
    struct worker *w = t->data;
    struct proxy *p = w->p;
    conn__tick(w);
    if (w->paused && !w->stopping &&
        atomic_load_explicit(&p->open_conns, memory_order_relaxed) < p->o.max_conns) {
        w->paused = false;
        set_listeners_active(w, true);
    }
    conn__close_removed_upstreams(w);
    alog__flush(w);
    ev_timer_start(loop, t, TICK_MS);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct proxy *p = w->p;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    ev_timer_init(&w->tick, on_tick, w);
    ev_timer_start(&w->loop, &w->tick, TICK_MS);
    for (;;) {
        ev_run_once(&w->loop, -1);
        uint64_t g = atomic_load_explicit(&p->gen, memory_order_acquire);
        atomic_store_explicit(&w->qs_gen, g, memory_order_release);
        if (g != w->seen_gen) {
            w->seen_gen = g;
            conn__close_removed_upstreams(w);
        }
        if (w->stopping) {
            conn__close_idle_clients(w);
            if (w->nclients == 0 || w->loop.now >= w->stop_deadline)
                break;
        }
    }
    alog__flush(w);
    conn__free_worker(w);
    ev_timer_stop(&w->loop, &w->tick);
    /* a quiescent worker forever: never blocks reclamation again */
    atomic_store(&w->qs_gen, UINT64_MAX);
    return NULL;
}

int worker__start_all(struct proxy *p)
{
    for (unsigned i = 0; i < p->nworkers; i++) {
        struct worker *w = &p->w[i];
        int r = pthread_create(&w->th, NULL, worker_main, w);
        if (r != 0)
            return -r;
        w->started = true;
    }
    return 0;
}

void worker__stop_all(struct proxy *p)
{
    for (unsigned i = 0; i < p->nworkers; i++)
        if (p->w[i].started)
            worker__post(&p->w[i], WCMD_STOP, NULL);
    for (unsigned i = 0; i < p->nworkers; i++)
        if (p->w[i].started) {
            pthread_join(p->w[i].th, NULL);
            p->w[i].started = false;
        }
}

int worker__init(struct proxy *p, struct worker *w, unsigned idx);
int worker__init(struct proxy *p, struct worker *w, unsigned idx)
{
    memset(w, 0, sizeof(*w));
    w->p = p;
    w->idx = idx;
    int r = ev_loop_init(&w->loop);
    if (r < 0)
        return r;
    w->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->evfd == -1)
        return -errno;
    pthread_mutex_init(&w->qlock, NULL);
    dlist_init(&w->listeners);
    dlist_init(&w->clients);
    dlist_init(&w->idle_up);
    dlist_init(&w->waiting);
    dlist_init(&w->queue);
    dlist_init(&w->sendq[0]);
    dlist_init(&w->sendq[1]);
    ev_io_init(&w->evio, w->evfd, on_cmd, w);
    ev_io_start(&w->loop, &w->evio, EPOLLIN);
    uint64_t seed = ev_time_ms() ^ ((uint64_t)idx * 0x9e3779b97f4a7c15ULL) ^ (uint64_t)(uintptr_t)w;
    w->rng[0] = lb_hash64(&seed, sizeof(seed), 1) | 1;
    w->rng[1] = lb_hash64(&seed, sizeof(seed), 2);
    return 0;
}

void worker__destroy(struct worker *w);
void worker__destroy(struct worker *w)
{
    while (!dlist_empty(&w->listeners)) {
        struct wlistener *wl = DLIST_ENTRY(w->listeners.next, struct wlistener, link);
        remove_listener(w, wl);
    }
    for (struct wcmd *c = w->q, *n; c; c = n) {
        n = c->next;
        if (c->kind == WCMD_LISTEN) { /* never started: its socket and ref */
            close(c->l->fds[w->idx]);
            listener__unref(c->l);
        }
        free(c);
    }
    w->q = NULL;
    close(w->evfd);
    ev_loop_close(&w->loop);
    pthread_mutex_destroy(&w->qlock);
    free(w->log);
}
