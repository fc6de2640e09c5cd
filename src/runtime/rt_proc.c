/* rt_proc.c — the process driver on takod's side: starts one shim per app
 * run, follows it through a notify pipe and a pidfd, applies the restart
 * policy with backoff, liveness, stats, stop, and adoption after a restart. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/ev.h"
#include "core/log.h"
#include "core/util.h"
#include "runtime/rt_internal.h"

#define KILL_MARGIN_MS 5000u /* after the grace period, the shim itself gets this long */
#define STATE_POLL_MS 50u    /* adopted replicas still starting: re-read state this often */
#define SAMPLE_MIN_MS 500u   /* stats are sampled at most this often */

struct proc_drv {
    struct rt_driver base;
    struct ev_loop *loop;
    const char *state_dir; /* the rt's */
    char *shim_exe;
    struct proc_rep *replicas;
    uint64_t sample_mono; /* last /proc pass for stats */
};

struct proc_rep {
    struct rt_replica base; /* first: the generic layer's view */
    struct proc_drv *rt;
    struct proc_rep *next, **pprev;
    struct rt__owned_spec spec;
    char name[RT_NAME_MAX];
    char *dir, *state_path, *spec_path, *lock_path;
    enum rt_state state;

    /* The current shim (pid 0 when none). */
    pid_t shim_pid;
    uint64_t shim_start;
    int shim_pidfd;
    struct ev_io shim_io;
    int notify_fd;
    struct ev_io notify_io;
    struct rt__shim_state st; /* as last read */

    unsigned restarts, consecutive, health_fails;
    unsigned spawn_failures; /* restarts refused in a row for want of a resource */
    int last_exit_status;
    char last_error[256];
    uint64_t started_mono, started_wall;
    uint64_t backoff_ms;
    struct ev_timer backoff_timer, kill_timer, poll_timer;

    bool want_stop, want_restart;
    void (*done)(struct rt_replica *, void *);
    void *done_data;
    bool done_pending, forgotten;
    struct ev_defer done_defer, free_defer;

    uint64_t sample_mono, sample_ticks;
    double cpu;
    uint64_t rss;
};

static int pidfd_open_(pid_t pid)
{
    return (int)syscall(SYS_pidfd_open, pid, 0);
}

static int pidfd_signal(int pidfd, int sig)
{
    return (int)syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0);
}

static int mkdir_p(const char *path)
{
    char buf[4096];
    if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
        return -ENAMETOOLONG;
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0700) == -1 && errno != EEXIST)
            return -errno;
        *p = '/';
    }
    if (mkdir(buf, 0700) == -1 && errno != EEXIST)
        return -errno;
    return 0;
}

/* ---- replica lifecycle ---- */

static void set_state(struct proc_rep *r, enum rt_state s)
{
    enum rt_state old = r->state;
    r->state = s;
    if (old != s && !r->forgotten)
        rt__emit(&r->base, old, s);
}

static void close_shim(struct proc_rep *r)
{
    struct ev_loop *loop = r->rt->loop;
    if (r->shim_pidfd >= 0) {
        ev_io_stop(loop, &r->shim_io);
        close(r->shim_pidfd);
        r->shim_pidfd = -1;
    }
    if (r->notify_fd >= 0) {
        ev_io_stop(loop, &r->notify_io);
        close(r->notify_fd);
        r->notify_fd = -1;
    }
    ev_timer_stop(loop, &r->kill_timer);
    ev_timer_stop(loop, &r->poll_timer);
    r->shim_pid = 0;
}

static void free_replica(struct proc_rep *r)
{
    rt__spec_free(&r->spec);
    free(r->dir);
    free(r->state_path);
    free(r->spec_path);
    free(r->lock_path);
    free(r);
}

static void on_free_defer(struct ev_defer *d)
{
    free_replica((struct proc_rep *)((char *)d - offsetof(struct proc_rep, free_defer)));
}

static void on_done_defer(struct ev_defer *d)
{
    struct proc_rep *r = (struct proc_rep *)((char *)d - offsetof(struct proc_rep, done_defer));
    r->done_pending = false;
    if (r->forgotten) {
        free_replica(r);
        return;
    }
    void (*done)(struct rt_replica *, void *) = r->done;
    r->done = NULL;
    if (done)
        done(&r->base, r->done_data);
}

static void finish_stop(struct proc_rep *r)
{
    r->want_stop = false;
    set_state(r, RT_STOPPED);
    if (!r->done_pending) {
        r->done_pending = true;
        ev_defer(r->rt->loop, &r->done_defer, on_done_defer);
    }
}

static void refresh(struct proc_rep *r)
{
    struct rt__shim_state st;
    if (rt__state_load(r->state_path, &st) < 0 || st.shim_pid != r->shim_pid)
        return;
    r->st = st;
    if (st.app == RT_APP_RUNNING && r->state == RT_STARTING) {
        r->started_wall = st.started_at_ms;
        uint64_t wall = time_wall_ms();
        uint64_t ago = wall > st.started_at_ms ? wall - st.started_at_ms : 0;
        r->started_mono = ev_now(r->rt->loop) > ago ? ev_now(r->rt->loop) - ago : 0;
        r->health_fails = 0;
        r->sample_mono = 0;
        set_state(r, RT_RUNNING);
    }
    if (st.app == RT_APP_FAILED)
        snprintf(r->last_error, sizeof(r->last_error), "%s", st.error);
}

static int spawn(struct proc_rep *r, char *err, size_t errlen);

/* A start refused for want of something that comes back: room on the
 * disk for the replica's files, file descriptors, memory. */
static bool transient(int rc)
{
    return rc == -ENOSPC || rc == -EDQUOT || rc == -EMFILE || rc == -ENFILE || rc == -EAGAIN ||
           rc == -ENOMEM;
}

/* Start the next run of the replica, counting a restart. One that cannot
 * start for a transient cause (a full disk) is tried again with backoff,
 * not left failed for good: it comes back once there is room. */
static void respawn(struct proc_rep *r)
{
    char err[200];
    r->restarts++;
    r->backoff_ms = 0;
    int rc = spawn(r, err, sizeof(err));
    if (rc < 0 && transient(rc)) {
        r->restarts--; /* nothing restarted */
        r->spawn_failures++;
        r->backoff_ms = rt_backoff_ms(r->spawn_failures);
        snprintf(r->last_error, sizeof(r->last_error), "restart failed: %s; trying again in %llu s",
                 err, (unsigned long long)(r->backoff_ms / 1000));
        ev_timer_start(r->rt->loop, &r->backoff_timer, r->backoff_ms);
        set_state(r, RT_BACKOFF);
        return;
    }
    if (rc < 0) {
        snprintf(r->last_error, sizeof(r->last_error), "restart failed: %s", err);
        set_state(r, RT_FAILED);
        return;
    }
    r->spawn_failures = 0;
}

static void on_backoff(struct ev_loop *loop, struct ev_timer *t)
{
    (void)loop;
    respawn(t->data);
}

/* The app (and with it the shim) is gone: apply the policy. */
static void shim_gone(struct proc_rep *r)
{
    struct rt__shim_state st;
    bool have = rt__state_load(r->state_path, &st) == 0 && st.shim_pid == r->shim_pid;
    if (have)
        r->st = st;
    if (!have || !st.done) {
        /* The shim died without finishing (killed): make sure its app
         * does not live on unsupervised. */
        if (have && rt__proc_alive(st.app_pid, st.app_start))
            kill(-st.app_pid, SIGKILL);
        if (have)
            snprintf(r->last_error, sizeof(r->last_error), "the replica's supervisor died");
        else
            snprintf(r->last_error, sizeof(r->last_error),
                     "the supervisor (%s shim) could not start", r->rt->shim_exe);
    }
    close_shim(r);
    uint64_t ran = r->started_mono && r->state != RT_STARTING
                       ? ev_now(r->rt->loop) - r->started_mono
                       : 0;
    r->last_exit_status = have ? st.exit_status : -1;
    if (r->want_stop) {
        finish_stop(r);
        return;
    }
    if (r->want_restart) {
        r->want_restart = false;
        respawn(r);
        return;
    }
    if (have && st.app == RT_APP_FAILED) {
        snprintf(r->last_error, sizeof(r->last_error), "%s", st.error);
        set_state(r, RT_FAILED);
        return;
    }
    if (!have && !r->started_mono) {
        set_state(r, RT_FAILED);
        return;
    }
    int status = r->last_exit_status;
    char what[64];
    if (status < 0)
        snprintf(what, sizeof(what), "ended");
    else if (WIFEXITED(status))
        snprintf(what, sizeof(what), "exited with status %d", WEXITSTATUS(status));
    else
        snprintf(what, sizeof(what), "killed by signal %d", WTERMSIG(status));
    enum rt_state next = rt__policy(r->spec.spec.restart, status, ran, &r->consecutive,
                                    &r->backoff_ms);
    if (next == RT_EXITED) {
        snprintf(r->last_error, sizeof(r->last_error), "%s", what);
        set_state(r, RT_EXITED);
        return;
    }
    /* The last output line tells most crash loops apart. */
    char last[200];
    bool have_last = rt__log_last_line(r->rt->state_dir, r->name, last, sizeof(last)) == 0;
    char full[512]; /* roomy, then cut to last_error's size */
    snprintf(full, sizeof(full), "%s (%u in a row)%s%s", what, r->consecutive,
             have_last ? "; last output: " : "", have_last ? last : "");
    size_t fl = strnlen(full, sizeof(r->last_error) - 1);
    memcpy(r->last_error, full, fl);
    r->last_error[fl] = '\0';
    ev_timer_start(r->rt->loop, &r->backoff_timer, r->backoff_ms);
    set_state(r, next);
}

static void on_shim_exit(struct ev_loop *loop, struct ev_io *w, uint32_t revents)
{
    (void)loop;
    (void)revents;
    struct proc_rep *r = w->data;
    siginfo_t si;
    memset(&si, 0, sizeof(si));
    /* Reap when the shim is our child; an adopted one is init's (ECHILD). */
    if (waitid(P_PIDFD, (id_t)r->shim_pidfd, &si, WEXITED | WNOHANG) == 0 && si.si_pid == 0)
        return; /* spurious: still running */
    if (r->notify_fd >= 0) {
        char buf[256];
        while (read(r->notify_fd, buf, sizeof(buf)) > 0) {
        }
    }
    refresh(r);
    shim_gone(r);
}

static void on_notify(struct ev_loop *loop, struct ev_io *w, uint32_t revents)
{
    (void)revents;
    struct proc_rep *r = w->data;
    char buf[256];
    ssize_t n;
    while ((n = read(r->notify_fd, buf, sizeof(buf))) > 0) {
    }
    if (n == 0) { /* the shim closed its end: the pidfd tells the rest */
        ev_io_stop(loop, &r->notify_io);
        close(r->notify_fd);
        r->notify_fd = -1;
    }
    refresh(r);
}

static void on_poll(struct ev_loop *loop, struct ev_timer *t)
{
    struct proc_rep *r = t->data;
    refresh(r);
    if (r->state == RT_STARTING && r->shim_pid)
        ev_timer_start(loop, &r->poll_timer, STATE_POLL_MS);
}

static void on_kill(struct ev_loop *loop, struct ev_timer *t)
{
    (void)loop;
    struct proc_rep *r = t->data;
    /* The shim did not finish its own stop sequence in time. */
    log_warn("replica %s: supervisor did not stop in time, killing it", r->name);
    if (r->st.app_pid > 0 && rt__proc_alive(r->st.app_pid, r->st.app_start))
        kill(-r->st.app_pid, SIGKILL);
    if (r->shim_pidfd >= 0)
        pidfd_signal(r->shim_pidfd, SIGKILL);
}

static void watch_shim(struct proc_rep *r, int pidfd, int notify_fd)
{
    struct ev_loop *loop = r->rt->loop;
    r->shim_pidfd = pidfd;
    ev_io_init(&r->shim_io, pidfd, on_shim_exit, r);
    ev_io_start(loop, &r->shim_io, EPOLLIN);
    r->notify_fd = notify_fd;
    if (notify_fd >= 0) {
        ev_io_init(&r->notify_io, notify_fd, on_notify, r);
        ev_io_start(loop, &r->notify_io, EPOLLIN);
    }
}

/* Start a shim for the replica: it takes over the lock (so a second start
 * of the same name fails) and reports through the notify pipe. */
static int spawn(struct proc_rep *r, char *err, size_t errlen)
{
    int lock = -1, np[2] = {-1, -1}, pidfd = -1, r_ = 0;
    int res = mkdir_p(r->dir);
    if (res < 0) {
        snprintf(err, errlen, "cannot create %s: %s", r->dir, strerror(-res));
        return res;
    }
    lock = open(r->lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lock == -1) {
        r_ = -errno;
        snprintf(err, errlen, "cannot open %s: %s", r->lock_path, strerror(errno));
        goto out;
    }
    if (flock(lock, LOCK_EX | LOCK_NB) == -1) {
        r_ = errno == EWOULDBLOCK ? -EEXIST : -errno;
        snprintf(err, errlen, "replica %s is already running", r->name);
        goto out;
    }
    if ((r_ = rt__spec_save(r->spec_path, &r->spec.spec, r->restarts, r->consecutive)) < 0) {
        snprintf(err, errlen, "cannot write %s: %s", r->spec_path, strerror(-r_));
        goto out;
    }
    unlink(r->state_path); /* a stale file must not be read as this run's */
    if (pipe2(np, O_CLOEXEC) == -1) {
        r_ = -errno;
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        goto out;
    }
    char *argv[] = {(char *)"tako", (char *)"shim", r->dir, (char *)"3", (char *)"4", NULL};
    const char *exe = r->rt->shim_exe;
    sigset_t block;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGHUP);
    sigaddset(&block, SIGCHLD);
    pid_t pid = fork();
    if (pid == -1) {
        r_ = -errno;
        snprintf(err, errlen, "fork: %s", strerror(errno));
        goto out;
    }
    if (pid == 0) {
        /* Only async-signal-safe calls from here to exec. Signals stay
         * blocked so none is lost before the shim's signalfd exists. */
        sigprocmask(SIG_SETMASK, &block, NULL);
        setsid();
        int n3 = fcntl(np[1], F_DUPFD, 10), n4 = fcntl(lock, F_DUPFD, 10);
        int nul = open("/dev/null", O_RDWR);
        if (n3 == -1 || n4 == -1 || nul == -1 || dup2(nul, 0) == -1 || dup2(nul, 1) == -1 ||
            dup2(nul, 2) == -1 || dup2(n3, 3) == -1 || dup2(n4, 4) == -1)
            _exit(126);
        /* Nothing else of takod (listeners!) may stay open in the replica. */
        if (syscall(SYS_close_range, 5u, ~0u, 0u) == -1)
            for (int fd = 5; fd < 4096; fd++)
                close(fd);
        execv(exe, argv);
        _exit(126);
    }
    close(np[1]);
    np[1] = -1;
    pidfd = pidfd_open_(pid);
    if (pidfd == -1) { /* cannot happen for our own unreaped child, but be safe */
        r_ = -errno;
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        snprintf(err, errlen, "pidfd_open: %s", strerror(errno));
        goto out;
    }
    fcntl(np[0], F_SETFL, O_NONBLOCK);
    r->shim_pid = pid;
    struct rt__pstat ps;
    r->shim_start = rt__proc_stat(pid, &ps) == 0 ? ps.starttime : 0;
    memset(&r->st, 0, sizeof(r->st));
    r->st.exit_status = -1;
    r->started_mono = 0;
    r->started_wall = 0;
    watch_shim(r, pidfd, np[0]);
    np[0] = -1;
    set_state(r, RT_STARTING);
out:
    if (lock >= 0)
        close(lock); /* the shim holds its own reference to the lock */
    if (np[0] >= 0)
        close(np[0]);
    if (np[1] >= 0)
        close(np[1]);
    return r_;
}

static struct proc_rep *new_replica(struct proc_drv *rt, const char *name)
{
    struct proc_rep *r = xcalloc(1, sizeof(*r));
    r->rt = rt;
    snprintf(r->name, sizeof(r->name), "%s", name);
    r->base.drv = &rt->base;
    r->base.name = r->name;
    r->base.spec = &r->spec.spec;
    r->dir = xasprintf("%s/replicas/%s", rt->state_dir, name);
    r->state_path = xasprintf("%s/state", r->dir);
    r->spec_path = xasprintf("%s/spec.json", r->dir);
    r->lock_path = xasprintf("%s/lock", r->dir);
    r->shim_pidfd = r->notify_fd = -1;
    r->last_exit_status = -1;
    r->state = RT_STOPPED;
    ev_timer_init(&r->backoff_timer, on_backoff, r);
    ev_timer_init(&r->kill_timer, on_kill, r);
    ev_timer_init(&r->poll_timer, on_poll, r);
    r->next = rt->replicas;
    if (rt->replicas)
        rt->replicas->pprev = &r->next;
    r->pprev = &rt->replicas;
    rt->replicas = r;
    return r;
}

static void unlink_replica(struct proc_rep *r)
{
    if (!r->pprev)
        return;
    *r->pprev = r->next;
    if (r->next)
        r->next->pprev = r->pprev;
    r->pprev = NULL;
    r->next = NULL;
}

static struct proc_rep *find(struct proc_drv *rt, const char *name)
{
    for (struct proc_rep *r = rt->replicas; r; r = r->next)
        if (strcmp(r->name, name) == 0)
            return r;
    return NULL;
}

/* ---- the driver's ops ---- */

#define PD(d) ((struct proc_drv *)(d))
#define PR(r) ((struct proc_rep *)(r))

static int proc_create(struct rt *owner, struct rt_driver **out, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    struct proc_drv *rt = xcalloc(1, sizeof(*rt));
    rt->loop = rt__loop(owner);
    rt->state_dir = rt__state_dir(owner);
    rt->shim_exe = xstrdup("/proc/self/exe");
    *out = &rt->base;
    return 0;
}

int rt_proc_set_shim_exe(struct rt *owner, const char *exe)
{
    char err[256];
    struct rt_driver *d = rt__driver(owner, rt_proc_ops.name, err, sizeof(err));
    if (!d)
        return -EINVAL;
    free(PD(d)->shim_exe);
    PD(d)->shim_exe = xstrdup(exe);
    return 0;
}

static void proc_destroy(struct rt_driver *d)
{
    struct proc_drv *rt = PD(d);
    while (rt->replicas) {
        struct proc_rep *r = rt->replicas;
        unlink_replica(r);
        close_shim(r);
        ev_timer_stop(rt->loop, &r->backoff_timer);
        if (r->done_pending)
            r->forgotten = true; /* the deferred call frees it */
        else
            free_replica(r);
    }
    free(rt->shim_exe);
    free(rt);
}

static int proc_start(struct rt_driver *d, const struct rt_spec *spec, struct rt_replica **out,
                      char *err, size_t errlen)
{
    struct proc_drv *rt = PD(d);
    char name[RT_NAME_MAX];
    int res = rt__replica_name(spec, name, sizeof(name), err, errlen);
    if (res < 0)
        return res;
    if (!spec->argv || !spec->argv[0] || !spec->argv[0][0]) {
        snprintf(err, errlen, "replica %s: empty command", name);
        return -EINVAL;
    }
    if (spec->cwd && spec->cwd[0] != '/') {
        /* The supervisor's own directory is not the caller's business. */
        snprintf(err, errlen, "replica %s: working directory '%s' is not an absolute path", name,
                 spec->cwd);
        return -EINVAL;
    }
    if (rt__spec_check_env(spec, name, err, errlen) < 0)
        return -EINVAL;
    struct proc_rep *known = find(rt, name);
    if (known) {
        snprintf(err, errlen, "replica %s is already %s (rt_forget a stopped one first)", name,
                 rt_state_name(known->state));
        return -EEXIST;
    }
    struct proc_rep *r = new_replica(rt, name);
    rt__spec_copy(&r->spec, spec);
    res = spawn(r, err, errlen);
    if (res < 0) {
        unlink_replica(r);
        free_replica(r);
        return res;
    }
    *out = &r->base;
    return 0;
}

static void send_stop(struct proc_rep *r)
{
    if (r->shim_pidfd >= 0) {
        pidfd_signal(r->shim_pidfd, SIGTERM);
        if (!ev_timer_active(&r->kill_timer))
            ev_timer_start(r->rt->loop, &r->kill_timer,
                           r->spec.spec.stop_grace_ms + KILL_MARGIN_MS);
    }
    set_state(r, RT_STOPPING);
}

static void proc_stop(struct rt_replica *rr, void (*done)(struct rt_replica *, void *),
                      void *data)
{
    struct proc_rep *r = PR(rr);
    r->done = done;
    r->done_data = data;
    r->want_stop = true;
    r->want_restart = false;
    ev_timer_stop(r->rt->loop, &r->backoff_timer);
    r->backoff_ms = 0;
    if (r->shim_pidfd >= 0)
        send_stop(r);
    else
        finish_stop(r);
}

static void proc_restart(struct rt_replica *rr, const char *why)
{
    struct proc_rep *r = PR(rr);
    if (r->want_stop)
        return; /* a stop in progress wins */
    if (why)
        snprintf(r->last_error, sizeof(r->last_error), "%s", why);
    if (r->shim_pidfd >= 0) {
        r->want_restart = true;
        send_stop(r);
        return;
    }
    ev_timer_stop(r->rt->loop, &r->backoff_timer);
    respawn(r);
}

static int proc_signal(struct rt_replica *rr, int sig)
{
    struct proc_rep *r = PR(rr);
    bool live = r->shim_pid && r->st.app_pid > 0 && r->st.app != RT_APP_EXITED &&
                r->st.app != RT_APP_FAILED && rt__proc_alive(r->st.app_pid, r->st.app_start);
    if (!live)
        return -ESRCH;
    /* The app leads its own process group: the whole group gets it. */
    if (kill(-r->st.app_pid, sig) == -1)
        return -errno;
    return 0;
}

static void proc_forget(struct rt_replica *rr)
{
    struct proc_rep *r = PR(rr);
    if (r->shim_pidfd >= 0 || ev_timer_active(&r->backoff_timer)) {
        log_warn("replica %s is %s; not forgetting a live replica", r->name,
                 rt_state_name(r->state));
        return;
    }
    unlink_replica(r);
    close_shim(r);
    if (r->done_pending) {
        r->forgotten = true;
        return;
    }
    r->forgotten = true;
    ev_defer(r->rt->loop, &r->free_defer, on_free_defer);
}

static int proc_address(struct rt_replica *rr, char *buf, size_t len)
{
    /* The app listens on PORT on this host. */
    int w = snprintf(buf, len, "127.0.0.1:%u", PR(rr)->spec.spec.port);
    return w < 0 || (size_t)w >= len ? -ENOSPC : 0;
}

/* CPU ticks and RSS of each app's whole tree: live descendants of its shim,
 * plus what the shim collected from reaped ones (its cutime/cstime). One
 * pass over /proc serves every replica, at most every SAMPLE_MIN_MS. */
static void sample_all(struct proc_drv *rt)
{
    uint64_t now = ev_time_ms();
    if (rt->sample_mono && now - rt->sample_mono < SAMPLE_MIN_MS)
        return;
    rt->sample_mono = now;
    size_t nroots = 0, cap = 0;
    struct proc_rep **reps = NULL;
    pid_t *roots = NULL;
    for (struct proc_rep *r = rt->replicas; r; r = r->next) {
        if (!r->shim_pid)
            continue;
        if (nroots == cap) {
            cap = cap ? cap * 2 : 16;
            reps = xrealloc(reps, cap * sizeof(*reps));
            roots = xrealloc(roots, cap * sizeof(*roots));
        }
        reps[nroots] = r;
        roots[nroots++] = r->shim_pid;
    }
    struct rt__pstat *all = NULL;
    ssize_t n = nroots ? rt__proc_scan(&all) : 0;
    if (n <= 0)
        goto out;
    int *owner = xmalloc((size_t)n * sizeof(int));
    rt__proc_owners(all, (size_t)n, roots, nroots, owner);
    uint64_t *ticks = xcalloc(nroots, sizeof(uint64_t)), *pages = xcalloc(nroots, sizeof(uint64_t));
    for (ssize_t i = 0; i < n; i++) {
        if (owner[i] < 0)
            continue;
        ticks[owner[i]] += all[i].utime + all[i].stime + all[i].cutime + all[i].cstime;
        pages[owner[i]] += all[i].rss_pages;
    }
    long hz = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
    for (size_t k = 0; k < nroots; k++) {
        struct proc_rep *r = reps[k];
        ssize_t si = rt__proc_find(all, (size_t)n, r->shim_pid);
        if (si < 0)
            continue;
        uint64_t t = ticks[k] + all[si].cutime + all[si].cstime;
        r->rss = pages[k] * (uint64_t)(page > 0 ? page : 4096);
        uint64_t base_mono = r->sample_mono, base_ticks = r->sample_ticks;
        if (!base_mono) { /* first sample: average since the app started */
            base_mono = r->started_mono ? r->started_mono : now;
            base_ticks = 0;
        }
        if (now > base_mono && t >= base_ticks)
            r->cpu = (double)(t - base_ticks) * 1000.0 / (double)(hz > 0 ? hz : 100) * 100.0 /
                     (double)(now - base_mono);
        r->sample_mono = now;
        r->sample_ticks = t;
    }
    free(ticks);
    free(pages);
    free(owner);
out:
    free(all);
    free(reps);
    free(roots);
}

static void proc_inspect(struct rt_replica *rr, struct rt_info *info)
{
    struct proc_rep *r = PR(rr);
    snprintf(info->name, sizeof(info->name), "%s", r->name);
    bool live = r->shim_pid && (r->state == RT_RUNNING || r->state == RT_STOPPING ||
                                r->state == RT_STARTING);
    info->pid = live ? r->st.app_pid : 0;
    info->port = r->spec.spec.port;
    info->state = r->state;
    info->restarts = r->restarts;
    info->last_exit_status = r->last_exit_status;
    info->started_at_ms = live ? r->started_wall : 0;
    if (live && r->started_mono)
        info->uptime_ms = ev_time_ms() - r->started_mono;
    /* the total of the last sample (stats takes a new one): a counter */
    long hz = sysconf(_SC_CLK_TCK);
    info->cpu_seconds = (double)r->sample_ticks / (double)(hz > 0 ? hz : 100);
    info->hostname_shared = r->st.hostname_shared;
    snprintf(info->last_error, sizeof(info->last_error), "%s", r->last_error);
    snprintf(info->revision, sizeof(info->revision), "%s", r->spec.spec.revision);
    info->backoff_ms = r->backoff_ms;
    info->supervisor_pid = r->shim_pid;
}

static void proc_stats(struct rt_replica *rr, double *cpu_percent, uint64_t *rss_bytes)
{
    struct proc_rep *r = PR(rr);
    if (!r->shim_pid)
        return;
    sample_all(r->rt);
    *cpu_percent = r->cpu;
    *rss_bytes = r->rss;
}

/* ---- adoption ---- */

static void clean_dead(struct proc_drv *rt, const char *name, const char *dir)
{
    char *state = xasprintf("%s/state", dir), *spec = xasprintf("%s/spec.json", dir);
    struct rt__shim_state st;
    /* A shim killed outright leaves its app running: never leave it orphaned. */
    if (rt__state_load(state, &st) == 0 && !st.done && rt__proc_alive(st.app_pid, st.app_start)) {
        log_warn("replica %s: supervisor gone, killing its app (pid %d)", name, (int)st.app_pid);
        kill(-st.app_pid, SIGKILL);
        kill(st.app_pid, SIGKILL);
    }
    (void)rt;
    unlink(state);
    unlink(spec);
    free(state);
    free(spec);
}

static struct proc_rep *adopt_one(struct proc_drv *rt, const char *name)
{
    struct proc_rep *out = NULL;
    char *dir = xasprintf("%s/replicas/%s", rt->state_dir, name);
    char *lock_path = xasprintf("%s/lock", dir), *state_path = xasprintf("%s/state", dir);
    int lock = open(lock_path, O_RDWR | O_CLOEXEC);
    if (lock == -1)
        goto out;
    if (flock(lock, LOCK_EX | LOCK_NB) == 0) {
        /* Nobody holds the lock: no shim is alive for this replica. */
        clean_dead(rt, name, dir);
        goto out;
    }
    /* A shim is alive; its state file may lag its start by a moment. */
    struct rt__shim_state st;
    int tries = 0;
    while (rt__state_load(state_path, &st) < 0 && tries++ < 100)
        usleep(10000);
    if (tries > 100 || !rt__proc_alive(st.shim_pid, st.shim_start)) {
        log_warn("replica %s: lock held but its supervisor cannot be verified", name);
        goto out;
    }
    int pidfd = pidfd_open_(st.shim_pid);
    /* Verify again with the pidfd held: the pid cannot be reused now. */
    if (pidfd == -1 || !rt__proc_alive(st.shim_pid, st.shim_start)) {
        if (pidfd != -1)
            close(pidfd);
        goto out;
    }
    struct proc_rep *r = new_replica(rt, name);
    if (rt__spec_load(r->spec_path, &r->spec, &r->restarts, &r->consecutive) < 0) {
        log_warn("replica %s: cannot read %s; adopting without its spec", name, r->spec_path);
        char *argv[] = {(char *)"?", NULL};
        struct rt_spec s = {.project = "?", .service = "?", .argv = argv};
        rt__spec_copy(&r->spec, &s);
    }
    r->shim_pid = st.shim_pid;
    r->shim_start = st.shim_start;
    r->st = st;
    watch_shim(r, pidfd, -1);
    if (st.stop_requested) {
        /* The previous takod asked for a stop: finish it, do not restart
         * (one event, → stopped, when it is done). */
        r->want_stop = true;
        r->state = RT_STOPPING;
        ev_timer_start(rt->loop, &r->kill_timer, r->spec.spec.stop_grace_ms + KILL_MARGIN_MS);
    } else {
        r->state = RT_STARTING;
        refresh(r); /* → RUNNING (one event) when the app runs */
        if (r->state == RT_STARTING)
            ev_timer_start(rt->loop, &r->poll_timer, STATE_POLL_MS);
    }
    out = r;
out:
    if (lock >= 0)
        close(lock);
    free(dir);
    free(lock_path);
    free(state_path);
    return out;
}

static int proc_adopt(struct rt_driver *drv, struct rt_replica ***out, size_t *n)
{
    struct proc_drv *rt = PD(drv);
    *out = NULL;
    *n = 0;
    char *root = xasprintf("%s/replicas", rt->state_dir);
    DIR *d = opendir(root);
    free(root);
    if (!d)
        return errno == ENOENT ? 0 : -errno;
    size_t cap = 8;
    struct rt_replica **v = xmalloc(cap * sizeof(*v));
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.' || find(rt, de->d_name))
            continue;
        struct proc_rep *r = adopt_one(rt, de->d_name);
        if (!r)
            continue;
        if (*n == cap) {
            cap *= 2;
            v = xrealloc(v, cap * sizeof(*v));
        }
        v[(*n)++] = &r->base;
    }
    closedir(d);
    *out = v;
    return 0;
}

/* ---- logs: the shim's files under the state dir ---- */

static int proc_logs_list(struct rt_driver *d, const char *project, const char *service,
                          struct rt_log_ref **out, size_t *n)
{
    return rt__proc_logs_list(PD(d)->state_dir, rt_proc_ops.name, project, service, out, n);
}

static int proc_logs_tail(struct rt_driver *d, const char *name, size_t n_lines,
                          uint64_t since_wall_ms, char ***lines, size_t *n)
{
    return rt_proc_logs_tail(PD(d)->state_dir, name, n_lines, since_wall_ms, lines, n);
}

static int proc_logs_follow(struct rt_driver *d, const char *name, bool from_start,
                            rt_log_line_cb line, void *data, struct rt_log_follow **out)
{
    return rt__proc_logs_follow(PD(d)->loop, PD(d)->state_dir, name, from_start, line, data,
                                out);
}

const struct rt_driver_ops rt_proc_ops = {
    .name = "process",
    .create = proc_create,
    .destroy = proc_destroy,
    .start = proc_start,
    .stop = proc_stop,
    .restart = proc_restart,
    .signal = proc_signal,
    .forget = proc_forget,
    .adopt = proc_adopt,
    .inspect = proc_inspect,
    .stats = proc_stats,
    .address = proc_address,
    .logs_list = proc_logs_list,
    .logs_tail = proc_logs_tail,
    .logs_follow = proc_logs_follow,
    .logs_unfollow = rt__proc_logs_unfollow,
};
