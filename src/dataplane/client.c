/* client.c — takod's side of the data plane: the proxy API as protocol
 * messages, a mirror of everything takod asked for (replayed into a data
 * plane that restarted or was upgraded), copies of the listening sockets (so
 * connections queue while a data plane is restarted), and the supervision
 * of the data-plane process: restart when it dies, stop after a crash loop. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/log.h"
#include "core/net.h"
#include "core/util.h"
#include "dataplane/dataplane.h"
#include "dataplane/wire.h"
#include "proxy/proxy_remote.h"

/* A local process that is alive answers; a dead one closes the socket at
 * once. The bound is for one that hangs, and generous for a loaded machine
 * serializing the stats of a thousand backends. */
#define CALL_TIMEOUT_MS 10000
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
    bool tls;          /* HTTPS entrypoint (protocol 2) */
    unsigned redirect; /* plain: 308 to this HTTPS port */
    uint64_t hsts;     /* TLS: Strict-Transport-Security max-age */
    bool peer;         /* peer listener (protocol 3) */
    json_t *allow;     /* its allow list: ["10.0.0.2/32", ...] */
    struct dpc_listener *next;
};

enum dpc_state { DPC_UP, DPC_DOWN, DPC_CRASHLOOP, DPC_FENCED, DPC_DETACHED };

struct dpc {
    /* takod calls the proxy API from its loop thread and from the ACME
     * thread (certificates, challenges): one exchange at a time, and the
     * mirror changes under this lock (recursive: replay calls the same
     * functions). Watchers and timers are only touched on the loop thread;
     * another thread that loses the connection kicks the loop. */
    pthread_mutex_t lock;
    pthread_t loop_thread;
    int kick_fd;
    struct ev_io kick_io;
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
    int proto; /* agreed with the connected data plane */
    /* HTTPS state to replay: {id: {cert, key}} (PEM; never logged),
     * {token: keyauth} */
    json_t *certs, *chals;
    uint64_t instance; /* proxy_instance_id() of the process last heard from */
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
    /* takod's events are recorded on its loop thread (the store is not
     * shared with the ACME thread); from elsewhere the log has it */
    if (c->on_event && pthread_equal(pthread_self(), c->loop_thread))
        c->on_event(c->data, level, kind, msg);
}

/* ---- the connection ---- */

static void disconnected(struct dpc *c, const char *why);

static void on_io(struct ev_loop *loop, struct ev_io *io, uint32_t ev)
{
    (void)loop;
    (void)ev;
    struct dpc *c = io->data;
    pthread_mutex_lock(&c->lock);
    /* The data plane never speaks first: readable means it went away. */
    if (c->fd >= 0 && (dpw_fill(c->fd, &c->in) < 0 || c->in.len))
        disconnected(c, "the data plane closed the control connection");
    pthread_mutex_unlock(&c->lock);
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
    if (!q) { /* a request we could not build: a bug here, not a dead peer */
        log_error("data plane: request not built (invalid value)");
        return json_pack("{s:b, s:i, s:s}", "ok", 0, "errno", EINVAL, "error", "invalid request");
    }
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

static int send_cert(struct dpc *c, const char *id, json_t *pair, char *err, size_t errlen);
static json_t *listen_msg(struct dpc *c, struct dpc_listener *l);
static json_t *backends_for(const struct dpc *c, json_t *bs);
static void send_listener_https(struct dpc *c, struct dpc_listener *l);

static void replay(struct dpc *c)
{
    /* Certificates before the TLS listeners, so no handshake finds none. */
    if (c->proto >= 2) {
        const char *id;
        json_t *v;
        json_object_foreach(c->certs, id, v)
        {
            char err[512];
            if (send_cert(c, id, v, err, sizeof(err)) < 0 && c->state == DPC_UP)
                event(c, "error", "dataplane", "data plane refused certificate %s: %s", id, err);
        }
        json_object_foreach(c->chals, id, v)
            reply_rc(call(c, json_pack("{s:s, s:s, s:O}", "op", "challenge_set", "token", id,
                                       "keyauth", v)));
        if (c->state != DPC_UP)
            return;
    } else if (json_object_size(c->certs)) {
        event(c, "error", "dataplane",
              "data plane %s speaks protocol %d: it cannot serve HTTPS (protocol 2); "
              "its certificates stay unset until it is upgraded",
              c->dp_version, c->proto);
    }
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
        json_t *mine = backends_for(c, p->backends);
        json_t *bs = json_deep_copy(mine);
        json_decref(mine);
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
        if (l->tls && c->proto < 2) {
            event(c, "error", "dataplane",
                  "data plane %s speaks protocol %d: it cannot serve HTTPS on %s (needs 2)",
                  c->dp_version, c->proto, l->addr_s);
            continue;
        }
        if (l->peer && c->proto < 3) {
            event(c, "error", "dataplane",
                  "data plane %s speaks protocol %d: it cannot serve the peer listener %s "
                  "(needs 3)",
                  c->dp_version, c->proto, l->addr_s);
            continue;
        }
        if (c->state != DPC_UP)
            return;
        /* Our copies go along: a data plane that restarted serves the very
         * sockets whose queues held the connections meanwhile. call_raw
         * consumes the request, also when the data plane goes away. */
        json_t *r = call_raw(c, listen_msg(c, l), l->fds, l->nfds, rfds, &nr);
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
        send_listener_https(c, l);
    }
}

/* ---- HTTPS (protocol 2) ---- */

static json_t *listen_msg(struct dpc *c, struct dpc_listener *l)
{
    json_t *q = json_pack("{s:s, s:s, s:I}", "op", "listen", "addr", l->addr_s, "pool",
                          (json_int_t)(l->def ? l->def->id : 0));
    if (c->proto < 2)
        return q;
    if (l->tls) /* never to a data plane of protocol 1: it would listen in plain */
        json_object_set_new(q, "tls", json_true());
    if (l->peer) { /* never below protocol 3: it would open it to anyone */
        json_object_set_new(q, "peer", json_true());
        json_object_set(q, "allow", l->allow);
    }
    /* what the listener needs before its first accept: a restarted data
     * plane finds connections waiting in the queue of the sockets we send */
    json_t *rt = json_object();
    for (size_t i = 0; i < l->nroutes; i++)
        if (l->routes[i].pool->id)
            json_object_set_new(rt, l->routes[i].domain, json_integer(l->routes[i].pool->id));
    json_object_set_new(q, "routes", rt);
    if (!l->tls && l->redirect)
        json_object_set_new(q, "https_redirect", json_integer(l->redirect));
    if (l->tls && l->hsts)
        json_object_set_new(q, "hsts", json_integer((json_int_t)l->hsts));
    return q;
}

/* The redirect or HSTS of a listener, as set (also 0: the data plane turns
 * off what a previous takod left on at sync_done only when not re-sent). */
static void send_listener_https(struct dpc *c, struct dpc_listener *l)
{
    if (c->proto < 2 || (!l->tls && !l->redirect) || (l->tls && !l->hsts))
        return;
    if (l->tls)
        reply_rc(call(c, json_pack("{s:s, s:s, s:I}", "op", "hsts", "addr", l->addr_s, "max_age",
                                   (json_int_t)l->hsts)));
    else
        reply_rc(call(c, json_pack("{s:s, s:s, s:i}", "op", "https_redirect", "addr", l->addr_s,
                                   "port", (int)l->redirect)));
}

/* cert_set of one mirrored pair. 0 when applied or not reachable (then the
 * replay sends it), else -errno with the data plane's message in err. */
static int send_cert(struct dpc *c, const char *id, json_t *pair, char *err, size_t errlen)
{
    json_t *r = call(c, json_pack("{s:s, s:s, s:O, s:O}", "op", "cert_set", "name", id, "cert",
                                  json_object_get(pair, "cert"), "key",
                                  json_object_get(pair, "key")));
    if (r && !json_is_true(json_object_get(r, "ok")))
        snprintf(err, errlen, "%s", json_string_value(json_object_get(r, "error")) ?: "refused");
    return reply_rc(r);
}

/* Zero a PEM key before its memory is freed. */
static void secret_free(json_t *pair)
{
    json_t *k = json_object_get(pair, "key");
    if (json_is_string(k))
        explicit_bzero((char *)json_string_value(k), json_string_length(k));
}

/* What a data plane of protocol 1 answers for HTTPS: refused, clearly. */
static int old_dataplane(struct dpc *c, const char *what)
{
    event(c, "error", "dataplane",
          "data plane %s (build %s) speaks protocol %d and cannot %s (needs protocol 2); "
          "restart takod to upgrade it",
          c->dp_version, c->dp_build, c->proto, what);
    return -EPROTONOSUPPORT;
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
        c->proto = (int)json_integer_value(json_object_get(st, "proto"));
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

static void reconnect_locked(struct dpc *c)
{
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

static void reconnect(struct ev_loop *loop, struct ev_timer *t)
{
    (void)loop;
    struct dpc *c = t->data;
    pthread_mutex_lock(&c->lock);
    reconnect_locked(c);
    pthread_mutex_unlock(&c->lock);
}

static void disconnected(struct dpc *c, const char *why)
{
    bool on_loop = pthread_equal(pthread_self(), c->loop_thread);
    if (on_loop)
        drop_conn(c);
    else if (c->fd >= 0)
        shutdown(c->fd, SHUT_RDWR); /* no more exchanges; the loop drops it */
    if (c->state != DPC_UP)
        return;
    c->state = DPC_DOWN;
    c->down_since = ev_time_ms();
    snprintf(c->last_error, sizeof(c->last_error), "%s", why);
    if (on_loop) {
        log_warn("data plane pid %d: %s; reconnecting", (int)c->dp_pid, why);
        ev_timer_start(c->loop, &c->retry, 0);
    } else {
        uint64_t one = 1;
        ssize_t w = write(c->kick_fd, &one, sizeof(one));
        (void)w;
    }
}

/* Another thread lost the connection: drop it and reconnect from here. */
static void on_kick(struct ev_loop *loop, struct ev_io *io, uint32_t ev)
{
    (void)loop;
    (void)ev;
    struct dpc *c = io->data;
    uint64_t n;
    ssize_t r = read(c->kick_fd, &n, sizeof(n));
    (void)r;
    pthread_mutex_lock(&c->lock);
    if (c->state == DPC_DOWN) {
        drop_conn(c);
        if (!ev_timer_active(&c->retry))
            ev_timer_start(c->loop, &c->retry, 0);
    }
    pthread_mutex_unlock(&c->lock);
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
        json_decref(l->allow);
        free(l);
    }
    const char *id;
    json_t *v;
    json_object_foreach(c->certs, id, v)
        secret_free(v);
    json_decref(c->certs);
    json_decref(c->chals);
    ev_io_stop(c->loop, &c->kick_io);
    close(c->kick_fd);
    pthread_mutex_destroy(&c->lock);
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

/* Unlink l from c's listeners and free it with our copies of its sockets. */
static void listener_drop(struct dpc *c, struct dpc_listener *l)
{
    for (struct dpc_listener **pp = &c->listeners; *pp; pp = &(*pp)->next)
        if (*pp == l) {
            *pp = l->next;
            break;
        }
    for (size_t i = 0; i < l->nfds; i++)
        close(l->fds[i]);
    free(l->routes);
    json_decref(l->allow);
    free(l);
}

/* ["10.0.0.2/32", ...] for the wire. */
static json_t *allow_json(const struct proxy_cidr *allow, size_t n)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        char ip[INET6_ADDRSTRLEN], s[INET6_ADDRSTRLEN + 8];
        if (!inet_ntop(allow[i].family, allow[i].addr, ip, sizeof(ip)))
            continue;
        snprintf(s, sizeof(s), "%s/%u", ip, allow[i].prefix);
        json_array_append_new(arr, json_string(s));
    }
    return arr;
}

static int listen_common(struct proxy *p, const struct net_addr *a, struct proxy_pool *def,
                         bool tls, json_t *peer_allow)
{
    struct dpc *c = impl(p);
    char as[64];
    if (tls && c->state == DPC_UP && c->proto < 2) {
        char what[96];
        snprintf(what, sizeof(what), "serve HTTPS on %s", net_addr_str(a, as, sizeof(as)));
        return old_dataplane(c, what);
    }
    if (peer_allow && c->state == DPC_UP && c->proto < 3) {
        json_decref(peer_allow);
        event(c, "error", "dataplane",
              "data plane %s (build %s) speaks protocol %d and cannot serve a peer listener on "
              "%s (needs protocol 3); restart takod to upgrade it",
              c->dp_version, c->dp_build, c->proto, net_addr_str(a, as, sizeof(as)));
        return -EPROTONOSUPPORT;
    }
    struct dpc_listener *l = lfind(c, a, as, sizeof(as));
    if (!l) {
        l = xcalloc(1, sizeof(*l));
        snprintf(l->addr_s, sizeof(l->addr_s), "%s", as);
        l->next = c->listeners;
        c->listeners = l;
    }
    l->tls = tls;
    l->def = def ? proxy_remote_pool_impl(def) : NULL;
    l->peer = peer_allow != NULL;
    json_decref(l->allow);
    l->allow = peer_allow;
    if (c->state != DPC_UP)
        return 0;
    int rfds[DP_MAX_FDS];
    size_t nr = 0;
    json_t *r = call_raw(c, listen_msg(c, l), NULL, 0, rfds, &nr);
    if (nr) {
        for (size_t i = 0; i < l->nfds; i++)
            close(l->fds[i]);
        memcpy(l->fds, rfds, nr * sizeof(int));
        l->nfds = nr;
    }
    int rc = reply_rc(r);
    if (rc < 0) /* not bound: forget it, as the embedded proxy would */
        listener_drop(c, l);
    return rc;
}

static int r_listen(struct proxy *p, const struct net_addr *a, struct proxy_pool *def)
{
    return listen_common(p, a, def, false, NULL);
}

static int r_listen_tls(struct proxy *p, const struct net_addr *a, struct proxy_pool *def)
{
    return listen_common(p, a, def, true, NULL);
}

static int r_listen_peer(struct proxy *p, const struct net_addr *a,
                         const struct proxy_cidr *allow, size_t n)
{
    return listen_common(p, a, NULL, false, allow_json(allow, n));
}

static int r_peer_allow(struct proxy *p, const struct net_addr *a, const struct proxy_cidr *allow,
                        size_t n)
{
    struct dpc *c = impl(p);
    char as[64];
    struct dpc_listener *l = lfind(c, a, as, sizeof(as));
    if (!l || !l->peer)
        return -ENOENT;
    json_decref(l->allow);
    l->allow = allow_json(allow, n);
    if (c->proto < 3)
        return -EPROTONOSUPPORT;
    return reply_rc(call(c, json_pack("{s:s, s:s, s:O}", "op", "peer_allow", "addr", as, "allow",
                                      l->allow)));
}

static int r_tls_set_cert(struct proxy *p, const char *id, const char *cert_pem, size_t cert_len,
                          const char *key_pem, size_t key_len, char *err, size_t errlen)
{
    struct dpc *c = impl(p);
    if (c->state == DPC_UP && c->proto < 2) {
        snprintf(err, errlen, "the data plane speaks protocol %d and cannot serve HTTPS",
                 c->proto);
        return old_dataplane(c, "install certificates");
    }
    json_t *pair = json_pack("{s:s%, s:s%}", "cert", cert_pem, cert_len, "key", key_pem, key_len);
    if (!pair) {
        snprintf(err, errlen, "certificate %s: not text (PEM expected)", id);
        return -EINVAL;
    }
    int r = send_cert(c, id, pair, err, errlen);
    if (r < 0) { /* refused: the previous one stays, here as there */
        secret_free(pair);
        json_decref(pair);
        return r;
    }
    json_t *old = json_object_get(c->certs, id);
    if (old)
        secret_free(old);
    json_object_set_new(c->certs, id, pair);
    return 0;
}

static int r_tls_del_cert(struct proxy *p, const char *id)
{
    struct dpc *c = impl(p);
    json_t *old = json_object_get(c->certs, id);
    if (!old)
        return -ENOENT;
    secret_free(old);
    json_object_del(c->certs, id);
    if (c->proto < 2)
        return 0;
    return reply_rc(call(c, json_pack("{s:s, s:s}", "op", "cert_del", "name", id)));
}

static bool r_tls_has_name(struct proxy *p, const char *host)
{
    struct dpc *c = impl(p);
    if (c->proto < 2)
        return false;
    json_t *r = call(c, json_pack("{s:s, s:s}", "op", "has_name", "host", host));
    bool has = r && json_is_true(json_object_get(r, "has"));
    json_decref(r);
    return has;
}

static int r_https_setting(struct proxy *p, const struct net_addr *a, bool tls, uint64_t v)
{
    struct dpc *c = impl(p);
    char as[64];
    struct dpc_listener *l = lfind(c, a, as, sizeof(as));
    if (!l)
        return -ENOENT;
    if (tls)
        l->hsts = v;
    else
        l->redirect = (unsigned)v;
    if (c->proto < 2) {
        if (!v)
            return 0;
        return old_dataplane(c, tls ? "send HSTS" : "redirect HTTP to HTTPS");
    }
    if (tls)
        return reply_rc(call(c, json_pack("{s:s, s:s, s:I}", "op", "hsts", "addr", as, "max_age",
                                          (json_int_t)v)));
    return reply_rc(call(c, json_pack("{s:s, s:s, s:i}", "op", "https_redirect", "addr", as,
                                      "port", (int)v)));
}

static int r_https_redirect(struct proxy *p, const struct net_addr *a, unsigned https_port)
{
    return r_https_setting(p, a, false, https_port);
}

static int r_hsts(struct proxy *p, const struct net_addr *a, uint64_t max_age_s)
{
    return r_https_setting(p, a, true, max_age_s);
}

static void r_challenge_set(struct proxy *p, const char *token, const char *keyauth)
{
    struct dpc *c = impl(p);
    json_object_set_new(c->chals, token, json_string(keyauth));
    if (c->proto < 2) {
        old_dataplane(c, "answer ACME HTTP-01 challenges");
        return;
    }
    reply_rc(call(c, json_pack("{s:s, s:s, s:s}", "op", "challenge_set", "token", token, "keyauth",
                               keyauth)));
}

static void r_challenge_del(struct proxy *p, const char *token)
{
    struct dpc *c = impl(p);
    json_object_del(c->chals, token);
    if (c->proto >= 2)
        reply_rc(call(c, json_pack("{s:s, s:s}", "op", "challenge_del", "token", token)));
}

static int r_tls_stats(struct proxy *p, struct proxy_tls_stats *out)
{
    struct dpc *c = impl(p);
    memset(out, 0, sizeof(*out));
    if (c->state != DPC_UP)
        return -EAGAIN;
    if (c->proto < 2)
        return -EPROTONOSUPPORT;
    json_t *r = call(c, json_pack("{s:s}", "op", "tls_stats"));
    if (!r || !json_is_true(json_object_get(r, "ok"))) {
        json_decref(r);
        return -EAGAIN;
    }
#define U(f) (uint64_t) json_integer_value(json_object_get(r, f))
    out->handshakes = U("handshakes");
    out->resumed = U("resumed");
    out->handshake_failures = U("handshake_failures");
    out->no_certificate = U("no_certificate");
    out->plain_http = U("plain_http");
    out->not_tls = U("not_tls");
    out->certificates = (unsigned)U("certificates");
#undef U
    json_decref(r);
    return 0;
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
    listener_drop(c, l);
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

/* The set as a data plane of the connection's protocol may see it: below 3,
 * without peer backends (it would send requests to another server's peer
 * listener without X-Tako-Service: 404 there). New reference. */
static json_t *backends_for(const struct dpc *c, json_t *bs)
{
    if (c->proto >= 3)
        return json_incref(bs);
    json_t *out = json_array();
    size_t i;
    json_t *b;
    json_array_foreach(bs, i, b)
        if (!json_is_true(json_object_get(b, "peer")))
            json_array_append(out, b);
    return out;
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
        if (b[i].peer)
            json_object_set_new(j, "peer", json_true());
        if (b[i].weight > 1)
            json_object_set_new(j, "weight", json_integer(b[i].weight));
        json_array_append_new(bs, j);
    }
    json_decref(q->backends);
    q->backends = bs; /* the whole set: a data plane upgraded later gets the peers too */
    int rc = q->id ? reply_rc(call(q->c, json_pack("{s:s, s:I, s:o}", "op", "pool_set", "pool",
                                                   (json_int_t)q->id, "backends",
                                                   backends_for(q->c, bs))))
                   : 0;
    if (rc < 0)
        log_error("data plane refused the %zu backends of pool %s: %s", n,
                  json_string_value(json_object_get(q->opts, "name")), strerror(-rc));
    return rc;
}

static void r_pool_free(struct proxy_pool *pool)
{
    struct dpc_pool *q = proxy_remote_pool_impl(pool);
    q->freed = true;
    if (q->id)
        reply_rc(call(q->c, json_pack("{s:s, s:I}", "op", "pool_free", "pool", (json_int_t)q->id)));
}

/* Which data-plane process answered: its counters start from zero when it
 * is a new one (restart, upgrade). */
static void instance_note(struct dpc *c, json_t *r)
{
    const char *id = json_string_value(json_object_get(r, "instance"));
    if (id)
        c->instance = strtoull(id, NULL, 16);
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
        s->retries = U("retries");
        s->status_none = U("status_none");
        json_t *h = json_object_get(b, "hist");
        for (size_t k = 0; k < PROXY_HIST_BUCKETS && k < json_array_size(h); k++)
            s->hist[k] = (uint64_t)json_integer_value(json_array_get(h, k));
        s->latency_sum_s = json_number_value(json_object_get(b, "latency_sum_s"));
        s->instance = q->c->instance;
        s->p50_ms = json_number_value(json_object_get(b, "p50_ms"));
        s->p99_ms = json_number_value(json_object_get(b, "p99_ms"));
#undef U
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
        if (r && json_is_true(json_object_get(r, "ok"))) {
            instance_note(q->c, r);
            stats_parse(q, json_object_get(r, "backends"));
        }
        json_decref(r);
    }
    /* Away: the last known state (ready replicas stay ready meanwhile). */
    *out = xcalloc(q->nstats ? q->nstats : 1, sizeof(**out));
    if (q->nstats)
        memcpy(*out, q->stats, q->nstats * sizeof(**out));
    *n = q->nstats;
    return 0;
}

static uint64_t r_instance_id(struct proxy *p) { return impl(p)->instance; }

static int r_listener_stats(struct proxy *p, struct proxy_listener_stats **out, size_t *n)
{
    struct dpc *c = impl(p);
    json_t *r = call(c, json_pack("{s:s}", "op", "listener_stats"));
    json_t *arr = r && json_is_true(json_object_get(r, "ok")) ? json_object_get(r, "listeners")
                                                            : NULL;
    if (r)
        instance_note(c, r);
    size_t k = json_array_size(arr), i;
    *out = xcalloc(k ? k : 1, sizeof(**out));
    json_t *l;
    json_array_foreach(arr, i, l)
    {
        snprintf((*out)[i].addr, sizeof((*out)[i].addr), "%s",
                 json_string_value(json_object_get(l, "addr")) ?: "");
        (*out)[i].open_conns = (unsigned)json_integer_value(json_object_get(l, "open_conns"));
        (*out)[i].instance = c->instance;
        (*out)[i].accepted = (uint64_t)json_integer_value(json_object_get(l, "accepted"));
    }
    *n = k;
    json_decref(r);
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

/* The ops table: each call under the client's lock (see struct dpc). */
#define LOCKED(c, expr)                                                                       \
    do {                                                                                      \
        pthread_mutex_lock(&(c)->lock);                                                       \
        expr;                                                                                 \
        pthread_mutex_unlock(&(c)->lock);                                                     \
    } while (0)
#define POOL_DPC(pool) (((struct dpc_pool *)proxy_remote_pool_impl(pool))->c)

static void l_stop(struct proxy *p) { LOCKED(impl(p), r_stop(p)); }
static struct proxy_pool *l_pool_new(struct proxy *p, const struct proxy_pool_opts *o)
{
    struct proxy_pool *r;
    LOCKED(impl(p), r = r_pool_new(p, o));
    return r;
}
#define L_INT(name, params, args, c)                                                          \
    static int l_##name params                                                                \
    {                                                                                         \
        int r_;                                                                               \
        LOCKED(c, r_ = r_##name args);                                                        \
        return r_;                                                                            \
    }
L_INT(listen, (struct proxy * p, const struct net_addr *a, struct proxy_pool *def), (p, a, def),
      impl(p))
L_INT(listen_tls, (struct proxy * p, const struct net_addr *a, struct proxy_pool *def),
      (p, a, def), impl(p))
L_INT(route_host,
      (struct proxy * p, const struct net_addr *a, const char *domain, struct proxy_pool *pool),
      (p, a, domain, pool), impl(p))
L_INT(unlisten, (struct proxy * p, const struct net_addr *a), (p, a), impl(p))
L_INT(set_default, (struct proxy * p, const struct net_addr *a, struct proxy_pool *pool),
      (p, a, pool), impl(p))
L_INT(pool_set, (struct proxy_pool * pool, const struct proxy_backend_spec *b, size_t n),
      (pool, b, n), POOL_DPC(pool))
L_INT(pool_stats, (struct proxy_pool * pool, struct proxy_backend_stats **out, size_t *n),
      (pool, out, n), POOL_DPC(pool))
L_INT(tls_set_cert,
      (struct proxy * p, const char *id, const char *cp, size_t cl, const char *kp, size_t kl,
       char *err, size_t errlen),
      (p, id, cp, cl, kp, kl, err, errlen), impl(p))
L_INT(tls_del_cert, (struct proxy * p, const char *id), (p, id), impl(p))
L_INT(https_redirect, (struct proxy * p, const struct net_addr *a, unsigned port), (p, a, port),
      impl(p))
L_INT(hsts, (struct proxy * p, const struct net_addr *a, uint64_t s), (p, a, s), impl(p))
L_INT(tls_stats, (struct proxy * p, struct proxy_tls_stats *out), (p, out), impl(p))
L_INT(listener_stats, (struct proxy * p, struct proxy_listener_stats **out, size_t *n),
      (p, out, n), impl(p))
L_INT(listen_peer,
      (struct proxy * p, const struct net_addr *a, const struct proxy_cidr *allow, size_t n),
      (p, a, allow, n), impl(p))
L_INT(peer_allow,
      (struct proxy * p, const struct net_addr *a, const struct proxy_cidr *allow, size_t n),
      (p, a, allow, n), impl(p))
static uint64_t l_instance_id(struct proxy *p)
{
    uint64_t r;
    LOCKED(impl(p), r = r_instance_id(p));
    return r;
}
static bool l_tls_has_name(struct proxy *p, const char *host)
{
    bool r;
    LOCKED(impl(p), r = r_tls_has_name(p, host));
    return r;
}
static void l_pool_free(struct proxy_pool *pool) { LOCKED(POOL_DPC(pool), r_pool_free(pool)); }
static void l_challenge_set(struct proxy *p, const char *t, const char *k)
{
    LOCKED(impl(p), r_challenge_set(p, t, k));
}
static void l_challenge_del(struct proxy *p, const char *t) { LOCKED(impl(p), r_challenge_del(p, t)); }
static char *l_metrics(struct proxy *p)
{
    char *r;
    LOCKED(impl(p), r = r_metrics(p));
    return r;
}

static const struct proxy_remote_ops dpc_ops = {
    .stop = l_stop,
    .free = r_free, /* takod's threads are gone by then */
    .pool_new = l_pool_new,
    .listen = l_listen,
    .route_host = l_route_host,
    .unlisten = l_unlisten,
    .set_default = l_set_default,
    .pool_set = l_pool_set,
    .pool_free = l_pool_free,
    .pool_stats = l_pool_stats,
    .metrics = l_metrics,
    .listen_tls = l_listen_tls,
    .tls_set_cert = l_tls_set_cert,
    .tls_del_cert = l_tls_del_cert,
    .tls_has_name = l_tls_has_name,
    .https_redirect = l_https_redirect,
    .hsts = l_hsts,
    .challenge_set = l_challenge_set,
    .challenge_del = l_challenge_del,
    .tls_stats = l_tls_stats,
    .instance_id = l_instance_id,
    .listener_stats = l_listener_stats,
    .listen_peer = l_listen_peer,
    .peer_allow = l_peer_allow,
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
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&c->lock, &ma);
    pthread_mutexattr_destroy(&ma);
    c->loop_thread = pthread_self();
    c->kick_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (c->kick_fd < 0)
        die(1, "eventfd: %s", strerror(errno));
    ev_io_init(&c->kick_io, c->kick_fd, on_kick, c);
    ev_io_start(loop, &c->kick_io, EPOLLIN);
    c->certs = json_object();
    c->chals = json_object();
    if (attach(c, true, err, errlen) < 0) {
        drop_conn(c);
        ev_io_stop(loop, &c->kick_io);
        close(c->kick_fd);
        pthread_mutex_destroy(&c->lock);
        json_decref(c->certs);
        json_decref(c->chals);
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
    pthread_mutex_lock(&c->lock);
    json_t *r = call(c, json_pack("{s:s}", "op", "sync_done"));
    pthread_mutex_unlock(&c->lock);
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
    pthread_mutex_lock(&c->lock);
    static const char *const names[] = {"running", "restarting", "crashloop", "fenced",
                                        "detached"};
    json_t *j = json_pack("{s:s, s:i, s:s, s:s, s:i, s:I}", "state", names[c->state], "pid",
                          (int)c->dp_pid, "version", c->dp_version, "build", c->dp_build,
                          "restarts", (int)c->restarts, "epoch", (json_int_t)c->epoch);
    if (c->state != DPC_UP && c->last_error[0])
        json_object_set_new(j, "last_error", json_string(c->last_error));
    pthread_mutex_unlock(&c->lock);
    return j;
}
