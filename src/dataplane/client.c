/* client.c — takod's side of the data plane: the proxy API as protocol
 * messages, a mirror of everything takod asked for (replayed into a data
 * plane that restarted or was upgraded), copies of the listening sockets (so
 * connections queue while a data plane is restarted), and the supervision
 * of the data-plane process: restart when it dies, stop after a crash loop. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/log.h"
#include "core/net.h"
#include "core/util.h"
#include "dataplane/dataplane.h"
#include "dataplane/wire.h"
#include "proxy/proxy_remote.h"

#define CALL_TIMEOUT_MS 2000
#define READY_TIMEOUT_MS 5000
#define CRASHLOOP_SPAWNS 5       /* restarts ... */
#define CRASHLOOP_WINDOW_MS 60000 /* ... within this time: stop restarting */

struct dpc;

struct dpc_pool {
    struct dpc *c;
    struct proxy_pool *handle;
    json_t *opts;
    int64_t id;        /* in the connected data plane; 0: not there yet */
    json_t *backends;  /* the last set takod gave */
    struct proxy_backend_stats *stats; /* last known, kept while disconnected */
    size_t nstats;
    bool freed;
    struct dpc_pool *next;
};

struct dpc_route {
    char domain[256];
    struct dpc_pool *pool;
};

struct dpc_listener {
    char addr_s[64];
    struct dpc_pool *def;
    struct dpc_route *routes;
    size_t nroutes;
    int fds[DP_MAX_FDS]; /* our copies of the data plane's sockets */
    size_t nfds;
    struct dpc_listener *next;
};

enum dpc_state { DPC_UP, DPC_DOWN, DPC_CRASHLOOP, DPC_FENCED, DPC_DETACHED };

struct dpc {
    struct ev_loop *loop;
    struct proxy *proxy;
    char sock[4200], exe[4096], logpath[4200];
    char *access_log;
    int fd;
    struct dpw_in in;
    struct ev_io io;
    struct ev_timer retry;
    enum dpc_state state;
    uint64_t epoch;
    json_int_t seq;
    pid_t dp_pid;
    char dp_version[32], dp_build[32];
    uint64_t spawns[CRASHLOOP_SPAWNS];
    size_t nspawns;
    unsigned restarts;
    uint64_t down_since;
    char last_error[1100];
    dp_event_cb on_event;
    void *data;
    struct dpc_pool *pools;
    struct dpc_listener *listeners;
};

static void event(struct dpc *c, const char *level, const char *kind, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void event(struct dpc *c, const char *level, const char *kind, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (strcmp(level, "error") == 0)
        log_error("%s", msg);
    else if (strcmp(level, "warn") == 0)
        log_warn("%s", msg);
    else
        log_info("%s", msg);
    if (c->on_event)
        c->on_event(c->data, level, kind, msg);
}

/* ---- the connection ---- */

static void disconnected(struct dpc *c, const char *why);

static void on_io(struct ev_loop *loop, struct ev_io *io, uint32_t ev)
{
    (void)loop;
    (void)ev;
    struct dpc *c = io->data;
    /* The data plane never speaks first: readable means it went away. */
    if (dpw_fill(c->fd, &c->in) < 0 || c->in.len)
        disconnected(c, "the data plane closed the control connection");
}

static void drop_conn(struct dpc *c)
{
    if (c->fd < 0)
        return;
    ev_io_stop(c->loop, &c->io);
    close(c->fd);
    c->fd = -1;
    dpw_in_free(&c->in);
    for (struct dpc_pool *p = c->pools; p; p = p->next)
        p->id = 0;
}

/* One request, one answer. NULL when the data plane is not reachable (then
 * it is marked down and a reconnect is scheduled). */
static json_t *call_raw(struct dpc *c, json_t *q, const int *fds, size_t nfds, int *rfds,
                        size_t *nrfds)
{
    if (nrfds)
        *nrfds = 0;
    if (c->fd < 0) {
        json_decref(q);
        return NULL;
    }
    json_object_set_new(q, "id", json_integer(++c->seq));
    int r = dpw_send(c->fd, q, fds, nfds, CALL_TIMEOUT_MS);
    json_decref(q);
    json_t *resp = NULL;
    int tmp[DP_MAX_FDS];
    size_t ntmp = 0;
    if (r == 0)
        r = dpw_recv(c->fd, &c->in, &resp, rfds ? rfds : tmp, rfds ? nrfds : &ntmp,
                     CALL_TIMEOUT_MS);
    for (size_t i = 0; i < ntmp; i++)
        close(tmp[i]);
    if (r < 0) {
        char why[128];
        snprintf(why, sizeof(why), "control connection: %s", strerror(-r));
        disconnected(c, why);
        return NULL;
    }
    return resp;
}

static json_t *call(struct dpc *c, json_t *q)
{
    if (c->state != DPC_UP) {
        json_decref(q);
        return NULL;
    }
    return call_raw(c, q, NULL, 0, NULL, NULL);
}

static int reply_rc(json_t *r)
{
    if (!r)
        return 0; /* not reachable: applied when it is back (replay) */
    int rc = json_is_true(json_object_get(r, "ok"))
                 ? 0
                 : -(int)json_integer_value(json_object_get(r, "errno"));
    if (rc == 0 && !json_is_true(json_object_get(r, "ok")))
        rc = -EIO;
    json_decref(r);
    return rc;
}

/* ---- starting a data plane ---- */

/* Start `tako dataplane ARGS` detached from takod (its own session, not our
 * child: it outlives us) and wait for it to say it serves. */
static int spawn(struct dpc *c, bool takeover, char *err, size_t errlen)
{
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) == -1)
        return -errno;
    unsigned threads = 0;
    for (struct dpc_listener *l = c->listeners; l; l = l->next)
        if (l->nfds)
            threads = (unsigned)l->nfds;
    pid_t pid = fork();
    if (pid == -1) {
        int e = errno;
        close(pfd[0]);
        close(pfd[1]);
        return -e;
    }
    if (pid == 0) {
        setsid();
        if (fork() != 0)
            _exit(0);
        sigset_t none;
        sigemptyset(&none);
        pthread_sigmask(SIG_SETMASK, &none, NULL);
        int nul = open("/dev/null", O_RDONLY);
        int lf = open(c->logpath, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (nul >= 0)
            dup2(nul, 0);
        if (lf >= 0) {
            dup2(lf, 1);
            dup2(lf, 2);
        }
        int rfd = fcntl(pfd[1], F_DUPFD, 3); /* without close-on-exec */
        char rs[16], ts[32];
        snprintf(rs, sizeof(rs), "%d", rfd);
        setenv("TAKO_READY_FD", rs, 1);
        const char *argv[8];
        int n = 0;
        argv[n++] = c->exe;
        argv[n++] = "dataplane";
        if (takeover)
            argv[n++] = "--takeover";
        if (threads && !takeover) {
            snprintf(ts, sizeof(ts), "--threads=%u", threads);
            argv[n++] = ts;
        }
        if (c->access_log) {
            argv[n++] = "--access-log";
            argv[n++] = c->access_log;
        }
        argv[n] = NULL;
        execv(c->exe, (char **)argv);
        _exit(127);
    }
    close(pfd[1]);
    int st;
    while (waitpid(pid, &st, 0) == -1 && errno == EINTR)
        ;
    char buf[1024];
    size_t len = 0;
    uint64_t deadline = ev_time_ms() + READY_TIMEOUT_MS;
    for (;;) {
        uint64_t now = ev_time_ms();
        if (now >= deadline)
            break;
        struct pollfd p = {.fd = pfd[0], .events = POLLIN};
        if (poll(&p, 1, (int)(deadline - now)) <= 0)
            continue;
        ssize_t k = read(pfd[0], buf + len, sizeof(buf) - 1 - len);
        if (k <= 0)
            break;
        len += (size_t)k;
    }
    close(pfd[0]);
    buf[len] = '\0';
    if (strncmp(buf, "ok", 2) == 0)
        return 0;
    snprintf(err, errlen, "the data plane did not start: %s",
             len ? buf : "no answer (see dataplane.log)");
    return -EIO;
}

/* ---- connect, become the driver, replay ---- */

static int hello(struct dpc *c, const char *role, uint64_t epoch, json_t **out)
{
    json_t *q = json_pack("{s:s, s:i, s:i, s:s, s:i, s:s, s:s, s:I}", "op", "hello", "proto",
                          DP_PROTO_MAX, "min_proto", DP_PROTO_MIN, "role", role, "pid",
                          (int)getpid(), "version", TAKO_VERSION, "build", dp_build_id(), "epoch",
                          (json_int_t)epoch);
    json_t *r = call_raw(c, q, NULL, 0, NULL, NULL);
    if (!r)
        return -EPIPE;
    if (!json_is_true(json_object_get(r, "ok"))) {
        int e = (int)json_integer_value(json_object_get(r, "errno"));
        snprintf(c->last_error, sizeof(c->last_error), "%s",
                 json_string_value(json_object_get(r, "error")) ?: "refused");
        json_decref(r);
        return -(e ? e : EPROTO);
    }
    *out = r;
    return 0;
}

static int open_conn(struct dpc *c)
{
    int fd = net_connect_unix(c->sock);
    if (fd < 0)
        return fd;
    net_set_nonblock(fd);
    c->fd = fd;
    ev_io_init(&c->io, fd, on_io, c);
    ev_io_start(c->loop, &c->io, EPOLLIN | EPOLLRDHUP);
    return 0;
}

static void replay(struct dpc *c)
{
    for (struct dpc_pool *p = c->pools; p; p = p->next) {
        if (p->freed)
            continue;
        json_t *r = call(c, json_pack("{s:s, s:O}", "op", "pool_new", "opts", p->opts));
        if (!r)
            return;
        p->id = json_integer_value(json_object_get(r, "pool"));
        json_decref(r);
        if (!json_array_size(p->backends))
            continue;
        /* Last known health goes with the set: a data plane that restarted
         * takes traffic to them at once instead of re-learning it. */
        json_t *bs = json_deep_copy(p->backends);
        size_t i;
        json_t *b;
        json_array_foreach(bs, i, b)
        {
            const char *id = json_string_value(json_object_get(b, "id"));
            for (size_t k = 0; k < p->nstats; k++)
                if (id && strcmp(p->stats[k].id, id) == 0 && !p->stats[k].draining &&
                    p->stats[k].healthy)
                    json_object_set_new(b, "up", json_true());
        }
        reply_rc(call(c, json_pack("{s:s, s:I, s:o}", "op", "pool_set", "pool", (json_int_t)p->id,
                                   "backends", bs)));
    }
    for (struct dpc_listener *l = c->listeners; l; l = l->next) {
        int rfds[DP_MAX_FDS];
        size_t nr = 0;
        json_t *q = json_pack("{s:s, s:s, s:I}", "op", "listen", "addr", l->addr_s, "pool",
                              (json_int_t)(l->def ? l->def->id : 0));
        json_t *r = c->state == DPC_UP ? call_raw(c, q, l->fds, l->nfds, rfds, &nr) : NULL;
        if (c->state != DPC_UP)
            json_decref(q);
        if (!r)
            return;
        if (!json_is_true(json_object_get(r, "ok")))
            event(c, "error", "dataplane", "data plane: cannot listen on %s: %s", l->addr_s,
                  json_string_value(json_object_get(r, "error")) ?: "?");
        json_decref(r);
        if (nr) { /* the sockets it serves: keep copies */
            for (size_t i = 0; i < l->nfds; i++)
                close(l->fds[i]);
            memcpy(l->fds, rfds, nr * sizeof(int));
            l->nfds = nr;
        }
        for (size_t i = 0; i < l->nroutes; i++)
            reply_rc(call(c, json_pack("{s:s, s:s, s:s, s:I}", "op", "route", "addr", l->addr_s,
                                       "domain", l->routes[i].domain, "pool",
                                       (json_int_t)l->routes[i].pool->id)));
    }
}

/* Connect to the data plane at the path, or start one; become its driver.
 * initial: takod is starting (an older build running is upgraded). */
static int attach(struct dpc *c, bool initial, char *err, size_t errlen)
{
    bool spawned = false, upgraded = false;
    uint64_t deadline = ev_time_ms() + READY_TIMEOUT_MS;
    for (;;) {
        int r = open_conn(c);
        if (r < 0) {
            if (spawned || (r != -ENOENT && r != -ECONNREFUSED)) {
                snprintf(err, errlen, "cannot reach the data plane at %s: %s", c->sock,
                         strerror(-r));
                return r;
            }
            if ((r = spawn(c, false, err, errlen)) < 0)
                return r;
            spawned = true;
            if (!initial) {
                c->restarts++;
                uint64_t now = ev_time_ms();
                memmove(c->spawns + 1, c->spawns, sizeof(c->spawns) - sizeof(c->spawns[0]));
                c->spawns[0] = now;
                if (c->nspawns < CRASHLOOP_SPAWNS)
                    c->nspawns++;
            }
            continue;
        }
        json_t *st = NULL;
        r = hello(c, "observer", 0, &st);
        uint64_t want = 0;
        if (r == 0) {
            uint64_t cur = (uint64_t)json_integer_value(json_object_get(st, "epoch"));
            json_decref(st);
            /* A new takod takes the next epoch; the same takod resumes its own. */
            want = c->epoch ? c->epoch : cur + 1;
            st = NULL;
            r = hello(c, "driver", want, &st);
        }
        if (r == -EAGAIN && ev_time_ms() < deadline) { /* a handover is under way */
            drop_conn(c);
            usleep(20000);
            continue;
        }
        if (r < 0) {
            snprintf(err, errlen, "data plane refused takod: %s", c->last_error);
            drop_conn(c);
            return r;
        }
        c->epoch = want;
        c->dp_pid = (pid_t)json_integer_value(json_object_get(st, "pid"));
        snprintf(c->dp_version, sizeof(c->dp_version), "%s",
                 json_string_value(json_object_get(st, "version")) ?: "?");
        snprintf(c->dp_build, sizeof(c->dp_build), "%s",
                 json_string_value(json_object_get(st, "build")) ?: "?");
        json_decref(st);
        c->state = DPC_UP;
        if (initial && !upgraded && strcmp(c->dp_build, dp_build_id()) != 0) {
            /* Another build serves: a new process of ours takes its sockets
             * and state; the old one finishes in-flight requests and exits. */
            char oldv[96];
            snprintf(oldv, sizeof(oldv), "%s (build %s)", c->dp_version, c->dp_build);
            upgraded = true;
            char e2[512];
            if (spawn(c, true, e2, sizeof(e2)) == 0) {
                event(c, "info", "dataplane-upgraded",
                      "data plane upgraded in place: %s → %s (build %s)", oldv, TAKO_VERSION,
                      dp_build_id());
                drop_conn(c);
                c->state = DPC_DOWN;
                deadline = ev_time_ms() + READY_TIMEOUT_MS;
                continue;
            }
            event(c, "warn", "dataplane", "data plane upgrade failed, keeping %s: %s", oldv, e2);
        }
        return 0;
    }
}

static void reconnect(struct ev_loop *loop, struct ev_timer *t)
{
    (void)loop;
    struct dpc *c = t->data;
    if (c->state != DPC_DOWN)
        return;
    uint64_t now = ev_time_ms();
    if (c->nspawns >= CRASHLOOP_SPAWNS &&
        now - c->spawns[CRASHLOOP_SPAWNS - 1] < CRASHLOOP_WINDOW_MS) {
        c->state = DPC_CRASHLOOP;
        event(c, "error", "dataplane-crashloop",
              "data plane crash loop: %d starts within %ds; not restarting it again (last: %s). "
              "Fix the cause, then restart takod",
              CRASHLOOP_SPAWNS, CRASHLOOP_WINDOW_MS / 1000, c->last_error);
        return;
    }
    pid_t old = c->dp_pid;
    unsigned restarts = c->restarts;
    char err[1024];
    int r = attach(c, false, err, sizeof(err));
    if (r == -ESTALE || r == -EBUSY) {
        c->state = DPC_FENCED;
        event(c, "error", "dataplane-fenced", "%s: this takod stops driving it", err);
        return;
    }
    if (r < 0) {
        snprintf(c->last_error, sizeof(c->last_error), "%s", err);
        ev_timer_start(c->loop, &c->retry, 200);
        return;
    }
    replay(c);
    reply_rc(call(c, json_pack("{s:s}", "op", "sync_done")));
    if (c->restarts != restarts)
        event(c, "warn", "dataplane-restarted",
              "data plane pid %d was gone (%s); started pid %d, serving again after %llu ms",
              (int)old, c->last_error, (int)c->dp_pid,
              (unsigned long long)(ev_time_ms() - c->down_since));
    else
        log_info("data plane: attached to pid %d (was %d)", (int)c->dp_pid, (int)old);
}

static void disconnected(struct dpc *c, const char *why)
{
    drop_conn(c);
    if (c->state != DPC_UP)
        return;
    c->state = DPC_DOWN;
    c->down_since = ev_time_ms();
    snprintf(c->last_error, sizeof(c->last_error), "%s", why);
    ev_timer_start(c->loop, &c->retry, 0);
}

/* ---- the proxy API ---- */

static struct dpc *impl(struct proxy *p) { return proxy_remote_impl(p); }

static struct dpc_listener *lfind(struct dpc *c, const struct net_addr *a, char *as, size_t len)
{
    net_addr_str(a, as, len);
    for (struct dpc_listener *l = c->listeners; l; l = l->next)
        if (strcmp(l->addr_s, as) == 0)
            return l;
    return NULL;
}

/* takod stops: the data plane keeps serving what it has. What takod tears
 * down after this (its pools, as an embedded proxy would be emptied) must
 * not reach it, so the next takod adopts everything as it was. */
static void r_stop(struct proxy *p)
{
    struct dpc *c = impl(p);
    ev_timer_stop(c->loop, &c->retry);
    drop_conn(c);
    c->state = DPC_DETACHED;
}

static void r_free(struct proxy *p)
{
    struct dpc *c = impl(p);
    ev_timer_stop(c->loop, &c->retry);
    drop_conn(c);
    for (struct dpc_pool *q = c->pools, *n; q; q = n) {
        n = q->next;
        json_decref(q->opts);
        json_decref(q->backends);
        free(q->stats);
        free(q->handle);
        free(q);
    }
    for (struct dpc_listener *l = c->listeners, *n; l; l = n) {
        n = l->next;
        for (size_t i = 0; i < l->nfds; i++)
            close(l->fds[i]);
        free(l->routes);
        free(l);
    }
    free(c->access_log);
    free(c);
}

static struct proxy_pool *r_pool_new(struct proxy *p, const struct proxy_pool_opts *o)
{
    struct dpc *c = impl(p);
    struct dpc_pool *q = xcalloc(1, sizeof(*q));
    q->c = c;
    q->opts = dpw_pool_opts_json(o);
    q->backends = json_array();
    q->handle = proxy_remote_pool_new(p, q);
    q->next = c->pools;
    c->pools = q;
    json_t *r = call(c, json_pack("{s:s, s:O}", "op", "pool_new", "opts", q->opts));
    if (r) {
        q->id = json_integer_value(json_object_get(r, "pool"));
        json_decref(r);
    }
    return q->handle;
}

static int r_listen(struct proxy *p, const struct net_addr *a, struct proxy_pool *def)
{
    struct dpc *c = impl(p);
    char as[64];
    struct dpc_listener *l = lfind(c, a, as, sizeof(as));
    if (!l) {
        l = xcalloc(1, sizeof(*l));
        snprintf(l->addr_s, sizeof(l->addr_s), "%s", as);
        l->next = c->listeners;
        c->listeners = l;
    }
    l->def = def ? proxy_remote_pool_impl(def) : NULL;
    if (c->state != DPC_UP)
        return 0;
    int rfds[DP_MAX_FDS];
    size_t nr = 0;
    json_t *r = call_raw(c,
                         json_pack("{s:s, s:s, s:I}", "op", "listen", "addr", as, "pool",
                                   (json_int_t)(l->def ? l->def->id : 0)),
                         NULL, 0, rfds, &nr);
    if (nr) {
        for (size_t i = 0; i < l->nfds; i++)
            close(l->fds[i]);
        memcpy(l->fds, rfds, nr * sizeof(int));
        l->nfds = nr;
    }
    int rc = reply_rc(r);
    if (rc < 0) { /* not bound: forget it, as the embedded proxy would */
        for (struct dpc_listener **pp = &c->listeners; *pp; pp = &(*pp)->next)
            if (*pp == l) {
                *pp = l->next;
                break;
            }
        for (size_t i = 0; i < l->nfds; i++)
            close(l->fds[i]);
        free(l->routes);
        free(l);
    }
    return rc;
}

static int r_route_host(struct proxy *p, const struct net_addr *a, const char *domain,
                        struct proxy_pool *pool)
{
    struct dpc *c = impl(p);
    char as[64];
    struct dpc_listener *l = lfind(c, a, as, sizeof(as));
    if (!l)
        return -ENOENT;
    size_t i = 0;
    while (i < l->nroutes && strcasecmp(l->routes[i].domain, domain) != 0)
        i++;
    if (pool) {
        if (i == l->nroutes) {
            l->routes = xrealloc(l->routes, (l->nroutes + 1) * sizeof(*l->routes));
            l->nroutes++;
        }
        snprintf(l->routes[i].domain, sizeof(l->routes[i].domain), "%s", domain);
        l->routes[i].pool = proxy_remote_pool_impl(pool);
    } else if (i < l->nroutes) {
        l->routes[i] = l->routes[--l->nroutes];
    }
    struct dpc_pool *q = pool ? proxy_remote_pool_impl(pool) : NULL;
    return reply_rc(call(c, json_pack("{s:s, s:s, s:s, s:I}", "op", "route", "addr", as, "domain",
                                      domain, "pool", (json_int_t)(q ? q->id : 0))));
}

static int r_unlisten(struct proxy *p, const struct net_addr *a)
{
    struct dpc *c = impl(p);
    char as[64];
    struct dpc_listener *l = lfind(c, a, as, sizeof(as));
    if (!l)
        return -ENOENT;
    for (struct dpc_listener **pp = &c->listeners; *pp; pp = &(*pp)->next)
        if (*pp == l) {
            *pp = l->next;
            break;
        }
    for (size_t i = 0; i < l->nfds; i++)
        close(l->fds[i]);
    free(l->routes);
    free(l);
    return reply_rc(call(c, json_pack("{s:s, s:s}", "op", "unlisten", "addr", as)));
}

static int r_set_default(struct proxy *p, const struct net_addr *a, struct proxy_pool *pool)
{
    struct dpc *c = impl(p);
    char as[64];
    struct dpc_listener *l = lfind(c, a, as, sizeof(as));
    if (!l)
        return -ENOENT;
    l->def = pool ? proxy_remote_pool_impl(pool) : NULL;
    return reply_rc(call(c, json_pack("{s:s, s:s, s:I}", "op", "set_default", "addr", as, "pool",
                                      (json_int_t)(l->def ? l->def->id : 0))));
}

static int r_pool_set(struct proxy_pool *pool, const struct proxy_backend_spec *b, size_t n)
{
    struct dpc_pool *q = proxy_remote_pool_impl(pool);
    json_t *bs = json_array();
    for (size_t i = 0; i < n; i++) {
        if (!b[i].id || !*b[i].id || strlen(b[i].id) > 63) {
            json_decref(bs);
            return -EINVAL;
        }
        char as[64];
        json_t *j = json_pack("{s:s, s:s}", "id", b[i].id, "addr",
                              net_addr_str(&b[i].addr, as, sizeof(as)));
        if (b[i].health_path)
            json_object_set_new(j, "health_path", json_string(b[i].health_path));
        if (b[i].up)
            json_object_set_new(j, "up", json_true());
        json_array_append_new(bs, j);
    }
    json_decref(q->backends);
    q->backends = json_incref(bs);
    int rc = q->id ? reply_rc(call(q->c, json_pack("{s:s, s:I, s:o}", "op", "pool_set", "pool",
                                                   (json_int_t)q->id, "backends", bs)))
                   : 0;
    if (!q->id)
        json_decref(bs);
    return rc;
}

static void r_pool_free(struct proxy_pool *pool)
{
    struct dpc_pool *q = proxy_remote_pool_impl(pool);
    q->freed = true;
    if (q->id)
        reply_rc(call(q->c, json_pack("{s:s, s:I}", "op", "pool_free", "pool", (json_int_t)q->id)));
}

static void stats_parse(struct dpc_pool *q, json_t *arr)
{
    size_t n = json_array_size(arr), i;
    struct proxy_backend_stats *v = xcalloc(n ? n : 1, sizeof(*v));
    json_t *b;
    json_array_foreach(arr, i, b)
    {
        struct proxy_backend_stats *s = &v[i];
        snprintf(s->id, sizeof(s->id), "%s", json_string_value(json_object_get(b, "id")) ?: "");
        snprintf(s->addr, sizeof(s->addr), "%s",
                 json_string_value(json_object_get(b, "addr")) ?: "");
        s->healthy = json_is_true(json_object_get(b, "healthy"));
        s->draining = json_is_true(json_object_get(b, "draining"));
        s->ever_healthy = json_is_true(json_object_get(b, "ever_healthy"));
#define U(f) (uint64_t) json_integer_value(json_object_get(b, f))
        s->consecutive_failures = (unsigned)U("consecutive_failures");
        s->inflight = U("inflight");
        s->requests = U("requests");
        s->status_2xx = U("status_2xx");
        s->status_3xx = U("status_3xx");
        s->status_4xx = U("status_4xx");
        s->status_5xx = U("status_5xx");
        s->failures = U("failures");
        s->health_transitions = U("health_transitions");
#undef U
        s->p50_ms = json_number_value(json_object_get(b, "p50_ms"));
        s->p99_ms = json_number_value(json_object_get(b, "p99_ms"));
    }
    free(q->stats);
    q->stats = v;
    q->nstats = n;
}

static int r_pool_stats(struct proxy_pool *pool, struct proxy_backend_stats **out, size_t *n)
{
    struct dpc_pool *q = proxy_remote_pool_impl(pool);
    if (q->id) {
        json_t *r = call(q->c, json_pack("{s:s, s:I}", "op", "pool_stats", "pool",
                                         (json_int_t)q->id));
        if (r && json_is_true(json_object_get(r, "ok")))
            stats_parse(q, json_object_get(r, "backends"));
        json_decref(r);
    }
    /* Away: the last known state (ready replicas stay ready meanwhile). */
    *out = xcalloc(q->nstats ? q->nstats : 1, sizeof(**out));
    if (q->nstats)
        memcpy(*out, q->stats, q->nstats * sizeof(**out));
    *n = q->nstats;
    return 0;
}

static char *r_metrics(struct proxy *p)
{
    json_t *r = call(impl(p), json_pack("{s:s}", "op", "metrics"));
    const char *t = json_string_value(json_object_get(r, "text"));
    char *s = xstrdup(t ? t : "");
    json_decref(r);
    return s;
}

static const struct proxy_remote_ops dpc_ops = {
    .stop = r_stop,
    .free = r_free,
    .pool_new = r_pool_new,
    .listen = r_listen,
    .route_host = r_route_host,
    .unlisten = r_unlisten,
    .set_default = r_set_default,
    .pool_set = r_pool_set,
    .pool_free = r_pool_free,
    .pool_stats = r_pool_stats,
    .metrics = r_metrics,
};

struct proxy *dp_client_new(struct ev_loop *loop, const struct dp_client_opts *o, char *err,
                            size_t errlen)
{
    struct dpc *c = xcalloc(1, sizeof(*c));
    c->loop = loop;
    c->fd = -1;
    c->on_event = o->on_event;
    c->data = o->data;
    c->access_log = o->access_log ? xstrdup(o->access_log) : NULL;
    snprintf(c->sock, sizeof(c->sock), "%s/dataplane.sock", o->home);
    snprintf(c->logpath, sizeof(c->logpath), "%s/dataplane.log", o->home);
    ssize_t n = readlink("/proc/self/exe", c->exe, sizeof(c->exe) - 1);
    c->exe[n > 0 ? n : 0] = '\0';
    /* A binary replaced under us: the path now names the new one. */
    char *del = strstr(c->exe, " (deleted)");
    if (del)
        *del = '\0';
    ev_timer_init(&c->retry, reconnect, c);
    c->state = DPC_DOWN;
    if (attach(c, true, err, errlen) < 0) {
        drop_conn(c);
        free(c->access_log);
        free(c);
        return NULL;
    }
    c->proxy = proxy_remote_new(&dpc_ops, c);
    return c->proxy;
}

void dp_client_sync_done(struct proxy *p)
{
    struct dpc *c = impl(p);
    json_t *r = call(c, json_pack("{s:s}", "op", "sync_done"));
    if (r && (json_integer_value(json_object_get(r, "pools_dropped")) ||
              json_integer_value(json_object_get(r, "listeners_closed"))))
        log_info("data plane: dropped %lld pools and %lld listeners nothing uses any more",
                 (long long)json_integer_value(json_object_get(r, "pools_dropped")),
                 (long long)json_integer_value(json_object_get(r, "listeners_closed")));
    json_decref(r);
}

json_t *dp_client_status(struct proxy *p)
{
    struct dpc *c = impl(p);
    static const char *const names[] = {"running", "restarting", "crashloop", "fenced",
                                        "detached"};
    json_t *j = json_pack("{s:s, s:i, s:s, s:s, s:i, s:I}", "state", names[c->state], "pid",
                          (int)c->dp_pid, "version", c->dp_version, "build", c->dp_build,
                          "restarts", (int)c->restarts, "epoch", (json_int_t)c->epoch);
    if (c->state != DPC_UP && c->last_error[0])
        json_object_set_new(j, "last_error", json_string(c->last_error));
    return j;
}
