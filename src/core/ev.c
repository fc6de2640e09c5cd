/* ev.c — epoll event loop with timer heap, signalfd and pidfd watchers. */
#include "core/ev.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/util.h"

#define EV_MAX_EVENTS 256

uint64_t ev_time_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int ev_loop_init(struct ev_loop *loop)
{
    memset(loop, 0, sizeof(*loop));
    loop->sigfd = -1;
    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (loop->epfd == -1)
        return -errno;
    sigemptyset(&loop->sigmask);
    loop->now = ev_time_ms();
    return 0;
}

void ev_loop_close(struct ev_loop *loop)
{
    if (loop->sigfd >= 0)
        close(loop->sigfd);
    if (loop->epfd >= 0)
        close(loop->epfd);
    free(loop->heap);
    loop->heap = NULL;
    loop->heap_len = loop->heap_cap = 0;
    loop->epfd = loop->sigfd = -1;
}

uint64_t ev_now(const struct ev_loop *loop) { return loop->now; }
void ev_now_update(struct ev_loop *loop) { loop->now = ev_time_ms(); }
void ev_loop_stop(struct ev_loop *loop) { loop->stop = true; }

/* ---- fd watchers ---- */

void ev_io_init(struct ev_io *w, int fd, ev_io_cb cb, void *data)
{
    w->fd = fd;
    w->events = 0;
    w->active = false;
    w->cb = cb;
    w->data = data;
}

int ev_io_start(struct ev_loop *loop, struct ev_io *w, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = w};
    if (w->active && w->events == events)
        return 0;
    if (epoll_ctl(loop->epfd, w->active ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, w->fd, &ev) == -1)
        return -errno;
    w->events = events;
    w->active = true;
    return 0;
}

int ev_io_stop(struct ev_loop *loop, struct ev_io *w)
{
    if (!w->active)
        return 0;
    w->active = false;
    w->events = 0;
    if (epoll_ctl(loop->epfd, EPOLL_CTL_DEL, w->fd, NULL) == -1)
        return -errno;
    return 0;
}

/* ---- timers: binary min-heap keyed by `when` ---- */

static void heap_set(struct ev_loop *loop, size_t i, struct ev_timer *t)
{
    loop->heap[i] = t;
    t->heap_index = i;
}

static void heap_up(struct ev_loop *loop, size_t i)
{
    struct ev_timer *t = loop->heap[i];
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (loop->heap[p]->when <= t->when)
            break;
        heap_set(loop, i, loop->heap[p]);
        i = p;
    }
    heap_set(loop, i, t);
}

static void heap_down(struct ev_loop *loop, size_t i)
{
    struct ev_timer *t = loop->heap[i];
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        uint64_t mw = t->when;
        if (l < loop->heap_len && loop->heap[l]->when < mw) {
            m = l;
            mw = loop->heap[l]->when;
        }
        if (r < loop->heap_len && loop->heap[r]->when < mw)
            m = r;
        if (m == i)
            break;
        heap_set(loop, i, loop->heap[m]);
        i = m;
    }
    heap_set(loop, i, t);
}

void ev_timer_init(struct ev_timer *t, ev_timer_cb cb, void *data)
{
    t->when = 0;
    t->heap_index = SIZE_MAX;
    t->cb = cb;
    t->data = data;
}

bool ev_timer_active(const struct ev_timer *t) { return t->heap_index != SIZE_MAX; }

void ev_timer_stop(struct ev_loop *loop, struct ev_timer *t)
{
    size_t i = t->heap_index;
    if (i == SIZE_MAX)
        return;
    t->heap_index = SIZE_MAX;
    loop->heap_len--;
    if (i == loop->heap_len)
        return;
    struct ev_timer *moved = loop->heap[loop->heap_len];
    heap_set(loop, i, moved);
    heap_up(loop, i);
    if (moved->heap_index == i)
        heap_down(loop, i);
}

void ev_timer_start(struct ev_loop *loop, struct ev_timer *t, uint64_t after_ms)
{
    ev_timer_stop(loop, t);
    uint64_t now = ev_time_ms();
    t->when = after_ms > UINT64_MAX - now ? UINT64_MAX : now + after_ms;
    if (loop->heap_len == loop->heap_cap) {
        loop->heap_cap = loop->heap_cap ? loop->heap_cap * 2 : 64;
        loop->heap = xrealloc(loop->heap, loop->heap_cap * sizeof(*loop->heap));
    }
    heap_set(loop, loop->heap_len++, t);
    heap_up(loop, t->heap_index);
}

static void run_timers(struct ev_loop *loop)
{
    while (loop->heap_len > 0 && loop->heap[0]->when <= loop->now) {
        struct ev_timer *t = loop->heap[0];
        ev_timer_stop(loop, t);
        t->cb(loop, t);
    }
}

/* ---- signals ---- */

static void sig_read(struct ev_loop *loop, struct ev_io *w, uint32_t revents)
{
    (void)w;
    (void)revents;
    struct signalfd_siginfo si;
    while (read(loop->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        for (struct ev_signal *s = loop->signals, *next; s; s = next) {
            next = s->next;
            if (s->signo == (int)si.ssi_signo)
                s->cb(loop, s, s->signo);
        }
    }
}

static int sig_update(struct ev_loop *loop)
{
    int fd = signalfd(loop->sigfd, &loop->sigmask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd == -1)
        return -errno;
    if (loop->sigfd < 0) {
        loop->sigfd = fd;
        ev_io_init(&loop->sig_io, fd, sig_read, NULL);
        return ev_io_start(loop, &loop->sig_io, EPOLLIN);
    }
    return 0;
}

int ev_signal_start(struct ev_loop *loop, struct ev_signal *s, int signo, ev_signal_cb cb,
                    void *data)
{
    sigset_t one;
    sigemptyset(&one);
    sigaddset(&one, signo);
    /* Block before listening so the default action never runs. */
    pthread_sigmask(SIG_BLOCK, &one, NULL);
    sigaddset(&loop->sigmask, signo);
    int r = sig_update(loop);
    if (r < 0)
        return r;
    s->signo = signo;
    s->cb = cb;
    s->data = data;
    s->active = true;
    s->next = loop->signals;
    loop->signals = s;
    return 0;
}

void ev_signal_stop(struct ev_loop *loop, struct ev_signal *s)
{
    if (!s->active)
        return;
    s->active = false;
    bool still = false;
    for (struct ev_signal **pp = &loop->signals; *pp;) {
        if (*pp == s)
            *pp = s->next;
        else {
            if ((*pp)->signo == s->signo)
                still = true;
            pp = &(*pp)->next;
        }
    }
    if (!still) {
        sigdelset(&loop->sigmask, s->signo);
        sig_update(loop);
    }
}

/* ---- children ---- */

static void child_ready(struct ev_loop *loop, struct ev_io *w, uint32_t revents)
{
    (void)revents;
    struct ev_child *c = w->data;
    siginfo_t si;
    memset(&si, 0, sizeof(si));
    if (waitid(P_PIDFD, (id_t)c->pidfd, &si, WEXITED | WNOHANG) == -1 || si.si_pid == 0)
        return;
    int status;
    if (si.si_code == CLD_EXITED)
        status = (si.si_status & 0xff) << 8;
    else
        status = si.si_status & 0x7f; /* killed or dumped: WIFSIGNALED form */
    if (si.si_code == CLD_DUMPED)
        status |= 0x80;
    ev_child_stop(loop, c);
    c->cb(loop, c, status);
}

int ev_child_start(struct ev_loop *loop, struct ev_child *c, pid_t pid, ev_child_cb cb,
                   void *data)
{
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (fd == -1)
        return -errno;
    c->pid = pid;
    c->pidfd = fd;
    c->cb = cb;
    c->data = data;
    ev_io_init(&c->io, fd, child_ready, c);
    int r = ev_io_start(loop, &c->io, EPOLLIN);
    if (r < 0) {
        close(fd);
        c->pidfd = -1;
    }
    return r;
}

void ev_child_stop(struct ev_loop *loop, struct ev_child *c)
{
    if (c->pidfd < 0)
        return;
    ev_io_stop(loop, &c->io);
    close(c->pidfd);
    c->pidfd = -1;
}

/* ---- deferred work ---- */

void ev_defer(struct ev_loop *loop, struct ev_defer *d, ev_defer_cb cb)
{
    d->cb = cb;
    d->next = loop->deferred;
    loop->deferred = d;
}

static void run_deferred(struct ev_loop *loop)
{
    while (loop->deferred) {
        struct ev_defer *d = loop->deferred;
        loop->deferred = NULL;
        while (d) {
            struct ev_defer *next = d->next;
            d->cb(d);
            d = next;
        }
    }
}

/* ---- running ---- */

int ev_run_once(struct ev_loop *loop, int timeout_ms)
{
    struct epoll_event evs[EV_MAX_EVENTS];
    ev_now_update(loop);
    if (loop->heap_len > 0) {
        uint64_t w = loop->heap[0]->when;
        /* Clamped: a timer weeks away must not wrap into a negative
         * (infinite) epoll timeout; the loop simply wakes up early. */
        uint64_t due = w <= loop->now ? 0 : w - loop->now;
        int tt = due > INT_MAX ? INT_MAX : (int)due;
        if (timeout_ms < 0 || tt < timeout_ms)
            timeout_ms = tt;
    }
    int n = epoll_wait(loop->epfd, evs, EV_MAX_EVENTS, timeout_ms);
    if (n == -1) {
        if (errno == EINTR)
            return 0;
        return -errno;
    }
    ev_now_update(loop);
    for (int i = 0; i < n; i++) {
        struct ev_io *w = evs[i].data.ptr;
        /* A callback may stop another watcher of this batch: inactive
         * watchers are skipped. Owners free watchers through ev_defer(),
         * which runs after the batch, so no pointer here dangles. */
        if (w->active)
            w->cb(loop, w, evs[i].events);
    }
    run_timers(loop);
    run_deferred(loop);
    return 0;
}

int ev_run(struct ev_loop *loop)
{
    loop->stop = false;
    while (!loop->stop) {
        int r = ev_run_once(loop, -1);
        if (r < 0)
            return r;
    }
    return 0;
}
