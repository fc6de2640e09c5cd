/* control.c — the proxy's control thread: active health checks of every
 * backend, the metrics endpoint, and the periodic reclamation of retired
 * sets and drained backends. It never touches a client connection. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"
#include "proxy/proxy_int.h"

#define CTL_TICK_MS 50

/* ---- health checks ---- */

static void hc_done(struct proxy *p, struct backend *b, bool ok, const char *why)
{
    struct hcheck *h = &b->hc;
    struct proxy_pool *pool = b->pool;
    if (h->fd >= 0) {
        ev_io_stop(&p->ctl_loop, &h->io);
        close(h->fd);
        h->fd = -1;
    }
    ev_timer_stop(&p->ctl_loop, &h->timer);
    h->running = false;
    if (ok) {
        atomic_store(&b->consecutive_failures, 0);
        h->ok_streak++;
        bool up = atomic_load(&b->healthy);
        if (!up && (!atomic_load(&b->ever_healthy) || h->ok_streak >= pool->o.rise))
            pool__backend_set_health(b, true);
    } else {
        h->ok_streak = 0;
        unsigned f = atomic_fetch_add(&b->consecutive_failures, 1) + 1;
        if (atomic_load(&b->healthy) && f >= pool->o.fall) {
            log_warn("proxy: pool %s backend %s health check failed %u times: %s", pool->name,
                     b->id, f, why);
            pool__backend_set_health(b, false);
        }
    }
    /* A settled healthy backend waits the full interval; one that served
     * and is down, or is changing state, is checked fast so it comes back
     * (or leaves) soon. A new backend that never passed keeps the interval:
     * a thousand replicas starting at once must not multiply the checks. */
    bool settled = atomic_load(&b->healthy) ? atomic_load(&b->consecutive_failures) == 0
                                            : !atomic_load(&b->ever_healthy);
    h->due = p->ctl_loop.now +
             (settled ? pool->o.health_interval_ms : pool->o.health_fast_interval_ms);
}

static void hc_on_timeout(struct ev_loop *loop, struct ev_timer *t)
{
    (void)loop;
    struct backend *b = t->data;
    hc_done(b->pool->p, b, false, "timeout");
}

static void hc_on_io(struct ev_loop *loop, struct ev_io *io, uint32_t ev)
{
    (void)loop;
    struct backend *b = io->data;
    struct hcheck *h = &b->hc;
    struct proxy *p = b->pool->p;
    const char *path = b->health_path ? b->health_path : b->pool->o.health_path;
    if (!h->sent) {
        int err = 0;
        socklen_t l = sizeof(err);
        getsockopt(h->fd, SOL_SOCKET, SO_ERROR, &err, &l);
        if (err || (ev & (EPOLLERR | EPOLLHUP))) {
            hc_done(p, b, false, err ? strerror(err) : "connect failed");
            return;
        }
        if (!path && !b->peer) {
            hc_done(p, b, true, NULL); /* a TCP connect check */
            return;
        }
        char req[1024];
        /* A peer backend is asked through the peer's listener, whose
         * balancer answers itself from its own checks: 200 while it has a
         * healthy replica of the service, 503 when none (X-Tako-Peer-Check). */
        const char *svc = b->peer ? b->pool->peer_service : NULL;
        int n = snprintf(req, sizeof(req),
                         "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: tako-health\r\n"
                         "%s%s%sConnection: close\r\n\r\n",
                         path ? path : "/", b->addr_s, svc ? "X-Tako-Service: " : "",
                         svc ? svc : "", svc ? "\r\nX-Tako-Peer-Check: 1\r\n" : "");
        if (n < 0 || (size_t)n >= sizeof(req)) {
            hc_done(p, b, false, "health check request too long");
            return;
        }
        if (send(h->fd, req, (size_t)n, MSG_NOSIGNAL) != n) {
            hc_done(p, b, false, "send failed");
            return;
        }
        h->sent = true;
        ev_io_start(&p->ctl_loop, &h->io, EPOLLIN);
        return;
    }
    ssize_t n = recv(h->fd, h->rbuf + h->rlen, sizeof(h->rbuf) - 1 - h->rlen, 0);
    if (n == -1 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        hc_done(p, b, false, n == 0 ? "closed without a status" : strerror(errno));
        return;
    }
    h->rlen += (size_t)n;
    if (h->rlen < 12)
        return;
    h->rbuf[h->rlen] = '\0';
    int status = 0;
    if (strncmp(h->rbuf, "HTTP/1.", 7) == 0 && h->rbuf[8] == ' ')
        status = atoi(h->rbuf + 9);
    char why[48];
    snprintf(why, sizeof(why), "status %d", status);
    hc_done(p, b, status >= 200 && status < 400, why);
}

static void hc_start(struct proxy *p, struct backend *b)
{
    struct hcheck *h = &b->hc;
    bool inprog;
    h->running = true;
    h->sent = false;
    h->rlen = 0;
    h->started = p->ctl_loop.now;
    ev_timer_init(&h->timer, hc_on_timeout, b);
    int fd = net_connect_tcp_from(&b->addr, b->peer && b->pool->peer_src.len ? &b->pool->peer_src : NULL,
                                  &inprog);
    if (fd < 0) {
        hc_done(p, b, false, strerror(-fd));
        return;
    }
    h->fd = fd;
    ev_io_init(&h->io, fd, hc_on_io, b);
    ev_io_start(&p->ctl_loop, &h->io, EPOLLOUT);
    ev_timer_start(&p->ctl_loop, &h->timer, b->pool->o.health_timeout_ms);
}

void health__stop_backend(struct proxy *p, struct backend *b)
{
    struct hcheck *h = &b->hc;
    if (!h->running)
        return;
    if (h->fd >= 0) {
        ev_io_stop(&p->ctl_loop, &h->io);
        close(h->fd);
        h->fd = -1;
    }
    ev_timer_stop(&p->ctl_loop, &h->timer);
    h->running = false;
}

static void schedule_checks(struct proxy *p)
{
    uint64_t now = p->ctl_loop.now;
    pthread_mutex_lock(&p->lock);
    for (struct proxy_pool *pool = p->pools; pool; pool = pool->next) {
        pthread_mutex_lock(&pool->lock);
        for (struct backend *b = pool->all; b; b = b->next) {
            if (atomic_load(&b->removed)) {
                health__stop_backend(p, b);
                continue;
            }
            /* A backend marked down by a failed request since its last
             * check is checked again at the fast pace, not a full interval
             * after a check that passed. */
            uint64_t due = b->hc.due;
            if (!atomic_load(&b->healthy) && atomic_load(&b->ever_healthy) &&
                b->hc.started + pool->o.health_fast_interval_ms < due)
                due = b->hc.started + pool->o.health_fast_interval_ms;
            if (!b->hc.running && now >= due)
                hc_start(p, b);
        }
        pthread_mutex_unlock(&pool->lock);
    }
    pthread_mutex_unlock(&p->lock);
}

/* ---- the thread ---- */

static void ctl_on_tick(struct ev_loop *loop, struct ev_timer *t)
{
    struct proxy *p = t->data;
    schedule_checks(p);
    pool__reclaim(p, loop->now);
    proxy__tls_tick(p, loop->now);
    ev_timer_start(loop, t, CTL_TICK_MS);
}

static void ctl_on_wake(struct ev_loop *loop, struct ev_io *io, uint32_t ev)
{
    (void)ev;
    struct proxy *p = io->data;
    uint64_t v;
    ssize_t r = read(p->ctl_evfd, &v, sizeof(v));
    (void)r;
    if (atomic_load(&p->ctl_stop)) {
        ev_loop_stop(loop);
        return;
    }
    schedule_checks(p);
}

void control__wake(struct proxy *p)
{
    if (p->ctl_evfd > 0) {
        uint64_t one = 1;
        ssize_t r = write(p->ctl_evfd, &one, sizeof(one));
        (void)r;
    }
}

static void *ctl_main(void *arg)
{
    struct proxy *p = arg;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    schedule_checks(p);
    ev_run(&p->ctl_loop);
    return NULL;
}

int control__start(struct proxy *p)
{
    int r = ev_loop_init(&p->ctl_loop);
    if (r < 0)
        return r;
    p->ctl_evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (p->ctl_evfd == -1)
        return -errno;
    ev_io_init(&p->ctl_evio, p->ctl_evfd, ctl_on_wake, p);
    ev_io_start(&p->ctl_loop, &p->ctl_evio, EPOLLIN);
    ev_timer_init(&p->ctl_tick, ctl_on_tick, p);
    ev_timer_start(&p->ctl_loop, &p->ctl_tick, CTL_TICK_MS);
    if (p->have_metrics)
        r = proxy__metrics_listen(p);
    if (r == 0) {
        atomic_store(&p->ctl_stop, false);
        r = -pthread_create(&p->ctl_th, NULL, ctl_main, p);
    }
    if (r < 0) {
        proxy__metrics_close(p);
        ev_timer_stop(&p->ctl_loop, &p->ctl_tick);
        close(p->ctl_evfd);
        p->ctl_evfd = -1;
        ev_loop_close(&p->ctl_loop);
    }
    return r;
}

void control__stop(struct proxy *p)
{
    atomic_store(&p->ctl_stop, true);
    control__wake(p);
    pthread_join(p->ctl_th, NULL);
    /* health checks in flight */
    pthread_mutex_lock(&p->lock);
    for (struct proxy_pool *pool = p->pools; pool; pool = pool->next)
        for (struct backend *b = pool->all; b; b = b->next)
            health__stop_backend(p, b);
    pthread_mutex_unlock(&p->lock);
    pool__reclaim(p, ev_time_ms());
    proxy__metrics_close(p);
    ev_timer_stop(&p->ctl_loop, &p->ctl_tick);
    close(p->ctl_evfd);
    p->ctl_evfd = -1;
    ev_loop_close(&p->ctl_loop);
}
