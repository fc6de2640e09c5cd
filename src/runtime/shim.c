/* shim.c — the per-replica supervisor: `tako shim DIR NOTIFY_FD LOCK_FD`.
 *
 * Started by takod (already in its own session), it becomes a child
 * subreaper, runs the app in its own process group (and UTS namespace when
 * allowed), turns the app's stdout/stderr into timestamped, rotated log
 * lines, records pid/start time/exit status in DIR/state, and exits once no
 * process of the replica is left. Owning all of that here, outside takod,
 * is what lets replicas and their logs survive a restart of takod.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/close_range.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/ev.h"
#include "core/util.h"
#include "runtime/rt_internal.h"

extern char **environ;

#define PIPE_SIZE (1 << 20)  /* absorb bursts so a slow disk does not stall the app */
#define SWEEP_MS 50          /* re-send SIGKILL while anything is left */
#define READS_PER_EVENT 64   /* 1 MiB of output per loop round at most */

struct shim;
struct linebuf {
    struct shim *shim;
    const char *stream;
    struct ev_io io;
    size_t len;
    bool eof;
    char buf[RT_LINE_MAX];
};

struct shim {
    struct ev_loop loop;
    char *dir, *state_path;
    struct rt__owned_spec spec;
    char name[RT_NAME_MAX];
    struct rt__shim_state st;
    struct rt__logw log;
    int notify_fd;
    struct linebuf out, err;
    struct ev_signal sig_chld, sig_term, sig_int, sig_hup;
    struct ev_timer grace, sweep;
    bool app_exited, stopping, sweeping;
};

/* Child side of the exec-status pipe: what failed, and errno. */
struct exec_report {
    int stage; /* 0 chdir, 1 exec, 2 setup */
    int err;
};

static void notify(struct shim *s)
{
    if (s->notify_fd >= 0 && write(s->notify_fd, "s", 1) == -1 && errno == EPIPE) {
        /* takod went away: adoption re-reads the state file instead. */
        close(s->notify_fd);
        s->notify_fd = -1;
    }
}

static void save(struct shim *s)
{
    rt__state_save(s->state_path, &s->st);
    notify(s);
}

static void emit(struct linebuf *b, struct shim *s, const char *text, size_t len)
{
    rt__logw_line(&s->log, b->stream, text, len);
}

static void shim_note(struct shim *s, const char *fmt, ...) TAKO_PRINTF(2, 3);
static void shim_note(struct shim *s, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    rt__logw_line(&s->log, "stderr", buf, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
}

/* Read what is there (at most max_reads reads, so a flooding app cannot
 * starve the signals); complete lines go out, an over-long line is split. */
static void drain(struct shim *s, struct linebuf *b, size_t max_reads)
{
    for (size_t reads = 0; reads < max_reads; reads++) {
        ssize_t n = read(b->io.fd, b->buf + b->len, sizeof(b->buf) - b->len);
        if (n == -1 && errno == EINTR)
            continue;
        if (n == 0 || (n == -1 && errno != EAGAIN)) {
            if (b->len)
                emit(b, s, b->buf, b->len);
            b->len = 0;
            b->eof = true;
            ev_io_stop(&s->loop, &b->io);
            close(b->io.fd);
            b->io.fd = -1;
            return;
        }
        if (n == -1)
            return;
        b->len += (size_t)n;
        size_t start = 0;
        for (size_t i = b->len - (size_t)n; i < b->len; i++) {
            if (b->buf[i] == '\n') {
                size_t l = i - start;
                if (l && b->buf[start + l - 1] == '\r')
                    l--;
                emit(b, s, b->buf + start, l);
                start = i + 1;
            }
        }
        if (start) {
            memmove(b->buf, b->buf + start, b->len - start);
            b->len -= start;
        }
        if (b->len == sizeof(b->buf)) {
            emit(b, s, b->buf, b->len);
            b->len = 0;
        }
    }
}

static void on_output(struct ev_loop *loop, struct ev_io *w, uint32_t revents)
{
    (void)loop;
    (void)revents;
    struct linebuf *b = w->data;
    drain(b->shim, b, READS_PER_EVENT); /* level-triggered: the rest comes next round */
}

/* Signal every process of the replica: the app's group and every other
 * descendant (a daemonized child leaves the group but, with the shim as
 * subreaper, not the tree). */
static void kill_tree(struct shim *s, int sig)
{
    bool group = s->st.app_pid > 0 && !s->app_exited;
    if (group)
        kill(-s->st.app_pid, sig);
    struct rt__pstat *d = NULL;
    ssize_t n = rt__proc_descendants(getpid(), &d);
    /* Not twice to the group's members: many apps take a second SIGTERM
     * as "quit now, skip the graceful part". */
    for (ssize_t i = 0; i < n; i++)
        if (!group || d[i].pgrp != s->st.app_pid)
            kill(d[i].pid, sig);
    free(d);
}

static void finish(struct shim *s)
{
    /* Every writer of the pipes is gone: read what is left. */
    if (s->out.io.fd >= 0)
        drain(s, &s->out, SIZE_MAX);
    if (s->err.io.fd >= 0)
        drain(s, &s->err, SIZE_MAX);
    s->st.done = true;
    save(s);
    ev_loop_stop(&s->loop);
}

static void start_sweep(struct shim *s)
{
    s->sweeping = true;
    kill_tree(s, SIGKILL);
    ev_timer_start(&s->loop, &s->sweep, SWEEP_MS);
}

static void reap(struct shim *s)
{
    for (;;) {
        int status;
        pid_t p = waitpid(-1, &status, WNOHANG);
        if (p == 0)
            return;
        if (p == -1) {
            if (errno == EINTR)
                continue;
            if (errno == ECHILD && s->app_exited)
                finish(s);
            return;
        }
        if (p == s->st.app_pid) {
            s->app_exited = true;
            s->st.exit_status = status;
            if (s->st.app != RT_APP_FAILED)
                s->st.app = RT_APP_EXITED;
            save(s);
            /* An app that ended on its own takes its leftovers with it at
             * once; during a stop the leftovers keep their grace period. */
            if (!s->stopping)
                start_sweep(s);
        }
    }
}

static void on_chld(struct ev_loop *loop, struct ev_signal *sig, int signo)
{
    (void)loop;
    (void)signo;
    reap(sig->data);
}

static void on_sweep(struct ev_loop *loop, struct ev_timer *t)
{
    (void)loop;
    struct shim *s = t->data;
    reap(s);
    if (!s->loop.stop) {
        kill_tree(s, SIGKILL);
        ev_timer_start(&s->loop, &s->sweep, SWEEP_MS);
    }
}

static void on_grace(struct ev_loop *loop, struct ev_timer *t)
{
    (void)loop;
    struct shim *s = t->data;
    shim_note(s, "tako: stop grace period over, killing what is left");
    start_sweep(s);
}

static void on_term(struct ev_loop *loop, struct ev_signal *sig, int signo)
{
    (void)loop;
    (void)signo;
    struct shim *s = sig->data;
    if (s->stopping)
        return;
    s->stopping = true;
    s->st.stop_requested = true;
    save(s);
    kill_tree(s, SIGTERM);
    kill_tree(s, SIGCONT); /* a stopped process only sees SIGTERM once continued */
    ev_timer_start(&s->loop, &s->grace, s->spec.spec.stop_grace_ms);
}

static void on_hup(struct ev_loop *loop, struct ev_signal *sig, int signo)
{
    (void)loop;
    (void)sig;
    (void)signo; /* the shim has no terminal; a stray SIGHUP must not kill it */
}

/* The app's environment: a few variables of takod's own (so PATH lookups
 * and locales work), then the service's env, then the runtime's. */
static char **build_env(struct shim *s)
{
    static const char *pass[] = {"PATH", "HOME", "USER", "LOGNAME", "LANG", "TZ", "TMPDIR"};
    const struct rt_spec *sp = &s->spec.spec;
    size_t cap = ARRAY_LEN(pass) + sp->env_len + 16, n = 0;
    for (char **e = environ; *e; e++)
        cap++;
    char **env = xcalloc(cap + 1, sizeof(char *));
    for (char **e = environ; *e; e++) {
        bool keep = str_starts_with(*e, "LC_");
        for (size_t i = 0; !keep && i < ARRAY_LEN(pass); i++) {
            size_t l = strlen(pass[i]);
            keep = strncmp(*e, pass[i], l) == 0 && (*e)[l] == '=';
        }
        if (keep)
            env[n++] = xstrdup(*e);
    }
    char port[8], idx[16];
    snprintf(port, sizeof(port), "%u", (unsigned)sp->port);
    snprintf(idx, sizeof(idx), "%u", sp->index);
    struct rt_env_kv extra[] = {
        {"PORT", port},           {"HOSTNAME", s->name},       {"TAKO_PROJECT", sp->project},
        {"TAKO_SERVICE", sp->service}, {"TAKO_REPLICA", idx}, {"TAKO_REVISION", sp->revision},
    };
    for (size_t k = 0; k < sp->env_len + ARRAY_LEN(extra); k++) {
        const struct rt_env_kv *kv = k < sp->env_len ? &sp->env[k] : &extra[k - sp->env_len];
        size_t l = strlen(kv->key);
        size_t i;
        for (i = 0; i < n; i++)
            if (strncmp(env[i], kv->key, l) == 0 && env[i][l] == '=')
                break;
        char *v = xasprintf("%s=%s", kv->key, kv->value);
        if (i < n) {
            free(env[i]);
            env[i] = v;
        } else {
            env[n++] = v;
        }
    }
    env[n] = NULL;
    return env;
}

static const char *env_get(char **env, const char *key)
{
    size_t l = strlen(key);
    for (char **e = env; *e; e++)
        if (strncmp(*e, key, l) == 0 && (*e)[l] == '=')
            return *e + l + 1;
    return NULL;
}

/* In the forked child: never returns. */
static void exec_app(struct shim *s, char **env, int out_w, int err_w, int report_fd)
{
    struct exec_report rep = {2, 0};
    sigset_t none;
    sigemptyset(&none);
    /* Dispositions and mask are inherited across exec: give the app defaults. */
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            signal(sig, SIG_DFL);
    sigprocmask(SIG_SETMASK, &none, NULL);
    /* Should the shim itself be killed outright, the app goes with it
     * rather than living on unsupervised (adoption kills what is left). */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != s->st.shim_pid)
        _exit(127);
    setpgid(0, 0);
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull == -1 || dup2(devnull, 0) == -1 || dup2(out_w, 1) == -1 || dup2(err_w, 2) == -1)
        goto fail;
    /* Whatever the shim holds (log, lock, notify pipe) stays out of the app. */
    if (syscall(SYS_close_range, 3u, ~0u, CLOSE_RANGE_CLOEXEC) == -1)
        for (int fd = 3; fd < 4096; fd++)
            if (fd != report_fd)
                fcntl(fd, F_SETFD, FD_CLOEXEC);
    if (chdir(s->spec.spec.cwd) == -1) {
        rep.stage = 0;
        goto fail;
    }
    rep.stage = 1;
    const char *file = s->spec.argv[0];
    if (strchr(file, '/')) {
        execve(file, s->spec.argv, env);
        goto fail;
    }
    const char *path = env_get(env, "PATH");
    if (!path)
        path = "/usr/local/bin:/usr/bin:/bin";
    bool eacces = false;
    errno = ENOENT;
    for (const char *p = path; *p;) {
        const char *colon = strchrnul(p, ':');
        char full[4096];
        int l = snprintf(full, sizeof(full), "%.*s/%s", (int)(colon - p), p, file);
        if (colon == p)
            l = snprintf(full, sizeof(full), "./%s", file);
        if (l > 0 && (size_t)l < sizeof(full)) {
            execve(full, s->spec.argv, env);
            if (errno == EACCES)
                eacces = true;
            else if (errno != ENOENT && errno != ENOTDIR)
                goto fail;
        }
        p = *colon ? colon + 1 : colon;
    }
    errno = eacces ? EACCES : ENOENT;
fail:
    rep.err = errno;
    if (write(report_fd, &rep, sizeof(rep)) == -1) {
        /* nothing else to tell */
    }
    _exit(127);
}

static int start_app(struct shim *s)
{
    int outp[2] = {-1, -1}, errp[2] = {-1, -1}, rep[2] = {-1, -1};
    int r = 0;
    char **env = build_env(s);
    if (pipe2(outp, O_CLOEXEC) == -1 || pipe2(errp, O_CLOEXEC) == -1 ||
        pipe2(rep, O_CLOEXEC) == -1) {
        r = -errno;
        goto out;
    }
    fcntl(outp[0], F_SETPIPE_SZ, PIPE_SIZE);
    fcntl(errp[0], F_SETPIPE_SZ, PIPE_SIZE);
    pid_t pid = fork();
    if (pid == -1) {
        r = -errno;
        goto out;
    }
    if (pid == 0) {
        close(rep[0]);
        exec_app(s, env, outp[1], errp[1], rep[1]);
    }
    /* Set the group from both sides so a signal sent right away reaches it. */
    setpgid(pid, pid);
    s->st.app_pid = pid;
    struct rt__pstat ps;
    if (rt__proc_stat(pid, &ps) == 0)
        s->st.app_start = ps.starttime;
    close(outp[1]);
    close(errp[1]);
    close(rep[1]);
    outp[1] = errp[1] = rep[1] = -1;
    fcntl(outp[0], F_SETFL, O_NONBLOCK);
    fcntl(errp[0], F_SETFL, O_NONBLOCK);
    ev_io_init(&s->out.io, outp[0], on_output, &s->out);
    ev_io_init(&s->err.io, errp[0], on_output, &s->err);
    ev_io_start(&s->loop, &s->out.io, EPOLLIN);
    ev_io_start(&s->loop, &s->err.io, EPOLLIN);
    outp[0] = errp[0] = -1;
    /* EOF means exec succeeded (the pipe is close-on-exec). */
    struct exec_report er;
    ssize_t n;
    do
        n = read(rep[0], &er, sizeof(er));
    while (n == -1 && errno == EINTR);
    if (n == (ssize_t)sizeof(er)) {
        static const char *stages[] = {"chdir", "exec", "set up"};
        const char *what = er.stage == 0 ? s->spec.spec.cwd : s->spec.argv[0];
        snprintf(s->st.error, sizeof(s->st.error), "cannot %s %s: %s", stages[er.stage], what,
                 strerror(er.err));
        s->st.app = RT_APP_FAILED;
        shim_note(s, "tako: %s", s->st.error);
    } else {
        s->st.app = RT_APP_RUNNING;
        s->st.started_at_ms = time_wall_ms();
    }
    save(s);
out:
    for (int i = 0; i < 2; i++) {
        if (outp[i] >= 0)
            close(outp[i]);
        if (errp[i] >= 0)
            close(errp[i]);
        if (rep[i] >= 0)
            close(rep[i]);
    }
    for (char **e = env; *e; e++)
        free(*e);
    free(env);
    return r;
}

static bool write_proc(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd == -1)
        return false;
    ssize_t n = write(fd, text, strlen(text));
    close(fd);
    return n == (ssize_t)strlen(text);
}

/* Give the replica (the shim, then the app it forks) a UTS namespace whose
 * hostname is the replica's name. Root (CAP_SYS_ADMIN) just unshares it.
 * An unprivileged user gets a user namespace first, mapping only its own
 * uid and gid to themselves (so the app still runs as that user, and files
 * it writes are its own); the shim holds every capability inside it right
 * after unshare, long enough for sethostname. False: the host's is shared. */
static bool own_hostname(const char *name)
{
    if (unshare(CLONE_NEWUTS) == 0)
        return sethostname(name, strlen(name)) == 0;
    if (errno != EPERM)
        return false;
    uid_t uid = geteuid();
    gid_t gid = getegid();
    if (uid == 0 || unshare(CLONE_NEWUSER | CLONE_NEWUTS) == -1)
        return false;
    char map[64];
    snprintf(map, sizeof(map), "%u %u 1\n", (unsigned)uid, (unsigned)uid);
    bool ok = write_proc("/proc/self/uid_map", map);
    /* setgroups must be denied before an unprivileged gid_map write. */
    write_proc("/proc/self/setgroups", "deny");
    snprintf(map, sizeof(map), "%u %u 1\n", (unsigned)gid, (unsigned)gid);
    ok = write_proc("/proc/self/gid_map", map) && ok;
    return ok && sethostname(name, strlen(name)) == 0;
}

int rt_proc_shim_main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: tako shim DIR NOTIFY_FD LOCK_FD (started by takod)\n");
        return 2;
    }
    static struct shim sh; /* one per process; static keeps it off the stack */
    struct shim *s = &sh;
    s->dir = argv[1];
    s->notify_fd = atoi(argv[2]);
    int lock_fd = atoi(argv[3]);
    /* The lock (held for the shim's lifetime) marks the replica as live;
     * neither it nor the notify pipe may leak into the app. */
    if (lock_fd >= 0)
        fcntl(lock_fd, F_SETFD, FD_CLOEXEC);
    struct stat sb;
    if (s->notify_fd >= 0 && (fstat(s->notify_fd, &sb) == -1 || !S_ISFIFO(sb.st_mode)))
        s->notify_fd = -1; /* run by hand: never write into some other open file */
    if (s->notify_fd >= 0) {
        fcntl(s->notify_fd, F_SETFD, FD_CLOEXEC);
        fcntl(s->notify_fd, F_SETFL, O_NONBLOCK);
    }
    signal(SIGPIPE, SIG_IGN);
    /* An ignored signal stays ignored across exec: with SIGCHLD ignored the
     * kernel would reap the app itself and its exit status would be lost. */
    signal(SIGCHLD, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    s->state_path = xasprintf("%s/state", s->dir);
    s->st.exit_status = -1;
    s->st.shim_pid = getpid();
    char *spec_path = xasprintf("%s/spec.json", s->dir);
    int r = rt__spec_load(spec_path, &s->spec, NULL, NULL);
    if (r < 0)
        snprintf(s->st.error, sizeof(s->st.error), "cannot read %s: %s", spec_path,
                 r == -EINVAL ? "invalid content" : strerror(-r));
    free(spec_path);
    if (r == 0)
        r = rt__replica_name(&s->spec.spec, s->name, sizeof(s->name), s->st.error,
                             sizeof(s->st.error));
    if (r < 0) {
        /* Tell takod why through the state file: stderr is /dev/null. */
        s->st.app = RT_APP_FAILED;
        s->st.done = true;
        rt__state_save(s->state_path, &s->st);
        fprintf(stderr, "tako shim: %s\n", s->st.error);
        return 1;
    }
    struct rt__pstat ps;
    if (rt__proc_stat(getpid(), &ps) == 0)
        s->st.shim_start = ps.starttime;
    s->st.hostname_shared = !own_hostname(s->name);
    if (rt__logw_open(&s->log, s->dir, s->spec.spec.log_max_bytes, s->spec.spec.log_files) < 0)
        s->log.fd = -1;
    s->out.shim = s->err.shim = s;
    s->out.stream = "stdout";
    s->err.stream = "stderr";
    s->out.io.fd = s->err.io.fd = -1;
    if (ev_loop_init(&s->loop) < 0)
        return 1;
    ev_timer_init(&s->grace, on_grace, s);
    ev_timer_init(&s->sweep, on_sweep, s);
    ev_signal_start(&s->loop, &s->sig_chld, SIGCHLD, on_chld, s);
    ev_signal_start(&s->loop, &s->sig_term, SIGTERM, on_term, s);
    ev_signal_start(&s->loop, &s->sig_int, SIGINT, on_term, s);
    ev_signal_start(&s->loop, &s->sig_hup, SIGHUP, on_hup, s);
    save(s);
    r = start_app(s);
    if (r < 0) {
        snprintf(s->st.error, sizeof(s->st.error), "cannot start: %s", strerror(-r));
        s->st.app = RT_APP_FAILED;
        s->st.done = true;
        save(s);
        return 1;
    }
    reap(s); /* the app may be gone already (exec failure) */
    if (!s->loop.stop)
        ev_run(&s->loop);
    rt__logw_close(&s->log);
    ev_loop_close(&s->loop);
    return 0;
}
