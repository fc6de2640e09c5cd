/* ev.h — the event loop: epoll for fds, a min-heap of timers, signals
 * through signalfd and child exits through pidfd, all as plain events.
 *
 * One loop per thread. Watchers are embedded in their owners (no allocation
 * per watcher); the loop never frees a watcher. Functions return 0 or -errno.
 */
#ifndef TAKO_CORE_EV_H
#define TAKO_CORE_EV_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/types.h>

struct ev_loop;
struct ev_io;
struct ev_timer;
struct ev_signal;
struct ev_child;

typedef void (*ev_io_cb)(struct ev_loop *loop, struct ev_io *w, uint32_t revents);
typedef void (*ev_timer_cb)(struct ev_loop *loop, struct ev_timer *t);
typedef void (*ev_signal_cb)(struct ev_loop *loop, struct ev_signal *s, int signo);
/* status is as from waitpid(): test it with WIFEXITED() and friends. */
typedef void (*ev_child_cb)(struct ev_loop *loop, struct ev_child *c, int status);

struct ev_io {
    int fd;
    uint32_t events; /* EPOLLIN | EPOLLOUT | ... currently registered */
    bool active;
    ev_io_cb cb;
    void *data;
};

struct ev_timer {
    uint64_t when;     /* absolute, ms on the loop's monotonic clock */
    size_t heap_index; /* position in the heap; SIZE_MAX when inactive */
    ev_timer_cb cb;
    void *data;
};

struct ev_signal {
    int signo;
    bool active;
    ev_signal_cb cb;
    void *data;
    struct ev_signal *next;
};

struct ev_child {
    pid_t pid;
    int pidfd;
    struct ev_io io;
    ev_child_cb cb;
    void *data;
};

struct ev_defer;
typedef void (*ev_defer_cb)(struct ev_defer *d);
/* Work run after the current batch of events (e.g. freeing a connection
 * whose watcher may still appear later in the same batch). */
struct ev_defer {
    struct ev_defer *next;
    ev_defer_cb cb;
};

struct ev_loop {
    int epfd;
    bool stop;
    uint64_t now; /* cached monotonic ms, refreshed each iteration */
    struct ev_timer **heap;
    size_t heap_len, heap_cap;
    int sigfd;
    struct ev_io sig_io;
    sigset_t sigmask;
    struct ev_signal *signals;
    struct ev_defer *deferred;
};

/* Create the loop's epoll instance. Returns 0 or -errno. */
int ev_loop_init(struct ev_loop *loop);
/* Close the loop's fds; watchers still registered are simply forgotten. */
void ev_loop_close(struct ev_loop *loop);
/* Run until ev_loop_stop(). Returns 0 or -errno on an epoll failure. */
int ev_run(struct ev_loop *loop);
/* Run one iteration, waiting at most timeout_ms (-1 = until an event). */
int ev_run_once(struct ev_loop *loop, int timeout_ms);
void ev_loop_stop(struct ev_loop *loop);
/* Cached monotonic time in ms; ev_now_update() refreshes it. */
uint64_t ev_now(const struct ev_loop *loop);
void ev_now_update(struct ev_loop *loop);
/* Current CLOCK_MONOTONIC time in ms, uncached. */
uint64_t ev_time_ms(void);

void ev_io_init(struct ev_io *w, int fd, ev_io_cb cb, void *data);
/* Register (or re-arm with new events) an fd watcher. */
int ev_io_start(struct ev_loop *loop, struct ev_io *w, uint32_t events);
int ev_io_stop(struct ev_loop *loop, struct ev_io *w);

void ev_timer_init(struct ev_timer *t, ev_timer_cb cb, void *data);
/* Arm (or re-arm) a one-shot timer to fire after_ms from now. */
void ev_timer_start(struct ev_loop *loop, struct ev_timer *t, uint64_t after_ms);
void ev_timer_stop(struct ev_loop *loop, struct ev_timer *t);
bool ev_timer_active(const struct ev_timer *t);

/* Deliver signo as an event. The signal is blocked in the calling thread
 * (block it process-wide before creating threads so no other thread takes
 * it). Several watchers may share one signal. */
int ev_signal_start(struct ev_loop *loop, struct ev_signal *s, int signo, ev_signal_cb cb,
                    void *data);
void ev_signal_stop(struct ev_loop *loop, struct ev_signal *s);

/* Watch a child's exit through a pidfd. The callback reaps the child.
 * Returns -errno if pidfd_open fails (e.g. the child was already reaped). */
int ev_child_start(struct ev_loop *loop, struct ev_child *c, pid_t pid, ev_child_cb cb,
                   void *data);
void ev_child_stop(struct ev_loop *loop, struct ev_child *c);

/* Run cb(d) after the current batch of events; d is embedded in its owner. */
void ev_defer(struct ev_loop *loop, struct ev_defer *d, ev_defer_cb cb);

#endif
