/* server.c — `tako dataplane`: the load balancer as its own process. It owns
 * the listening sockets, the pools and their health state, serves the
 * control protocol on $TAKO_HOME/dataplane.sock (one driver at a time,
 * fenced by epoch), and hands everything, sockets included, to a successor
 * process for an in-place upgrade. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "core/ev.h"
#include "core/log.h"
#include "core/net.h"
#include "core/sha256.h"
#include "core/util.h"
#include "daemon/home.h"
#include "dataplane/dataplane.h"
#include "dataplane/wire.h"
#include "proxy/proxy_admin.h"

#define IO_TIMEOUT_MS 2000

struct dp_pool {
    int64_t id;
    json_t *opts;     /* as given: adoption compares it */
    json_t *backends; /* the last set, as given */
    struct proxy_pool *pool;
    bool claimed; /* created or adopted by the current driver */
    bool freed;
    struct dp_pool *next;
};

struct dp_listener {
    char addr_s[64];
    struct net_addr addr;
    int64_t def;    /* default pool id, 0: none */
    json_t *routes; /* {domain: pool id} */
    bool claimed;
    bool tls;             /* HTTPS entrypoint (protocol 2) */
    unsigned redirect;    /* plain: 308 to this HTTPS port, 0: off */
    uint64_t hsts;        /* TLS: Strict-Transport-Security max-age, 0: none */
    bool https_claimed;   /* redirect/hsts set by the current driver */
    bool peer;            /* peer listener (protocol 3): routes are services */
    json_t *allow;        /* its allow list: ["10.0.0.2", ...] */
    struct dp_listener *next;
};

struct dp_conn {
    int fd;
    struct ev_io io;
    struct dpw_in in;
    bool handing_over; /* sent our state to a successor, waiting for "done" */
    pid_t pid;
    int proto; /* agreed in hello */
    struct dp_conn *next;
};

static struct {
    char home[4096], sock[4200], pidfile[4200];
    struct ev_loop loop;
    struct ev_signal sigterm, sigint, sighup;
    struct proxy *proxy;
    struct proxy_opts po;
    int lfd;
    struct ev_io lio;
    struct dp_conn *conns;
    struct dp_conn *driver;
    uint64_t epoch;
    pid_t driver_pid;
    struct dp_pool *pools;
    int64_t next_pool;
    struct dp_listener *listeners;
    /* HTTPS state, kept while no takod drives us and handed to a successor:
     * {id: {cert, key}} (PEM text; never logged), {token: keyauth}, and the
     * tokens set by the current driver. */
    json_t *certs, *chals, *chals_claimed;
    bool handing_over; /* a successor has our state: no more changes */
    bool handed_over;  /* it serves: we finish and exit */
    ino_t sock_ino;    /* the path's inode as we bound it: still ours? */
    uint64_t started_ms;
} S;

const char help_dataplane[] =
    "Usage: tako dataplane [--threads N] [--access-log FILE] [--takeover]\n"
    "\n"
    "The load balancer as its own process, started and driven by takod over the\n"
    "unix socket $TAKO_HOME/dataplane.sock (mode 0600; docs/internals/dataplane.md).\n"
    "It keeps serving with the last backend set and health state while takod is\n"
    "down or restarting. Internal: takod starts it; run it by hand only to debug.\n"
    "\n"
    "Options:\n"
    "  --threads N        worker threads (default: the CPU count)\n"
    "  --access-log FILE  one line per proxied request (\"-\": standard output)\n"
    "  --takeover         take the listening sockets, pools and health state from\n"
    "                     the data plane running for $TAKO_HOME; it finishes its\n"
    "                     in-flight requests and exits (an upgrade in place)\n"
    "\n"
    "SIGTERM or SIGINT: stop accepting, finish in-flight requests, exit.\n";

const char *dp_build_id(void)
{
    static char id[13];
    if (id[0])
        return id;
    snprintf(id, sizeof(id), "unknown");
    int fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return id;
    struct sha256 c;
    sha256_init(&c);
    char buf[65536];
    ssize_t n;
    while ((n = read(fd, buf, sizeof(buf))) > 0)
        sha256_update(&c, buf, (size_t)n);
    close(fd);
    char hex[65];
    sha256_hex(&c, hex);
    memcpy(id, hex, 12);
    id[12] = '\0';
    return id;
}

static void conn_close(struct dp_conn *c);

/* Whether the peer of c has closed its end (it died or went away). */
static bool conn_peer_closed(struct dp_conn *c)
{
    struct pollfd pf = {.fd = c->fd, .events = POLLIN | POLLRDHUP};
    return poll(&pf, 1, 0) == 1 && (pf.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

/* The highest protocol version served: DP_PROTO_MAX, or lower with
 * TAKO_DATAPLANE_PROTO_MAX, so this build can stand in for an older data
 * plane (what a new takod must handle during an upgrade). */
static int proto_max(void)
{
    static int v;
    if (!v) {
        const char *e = getenv("TAKO_DATAPLANE_PROTO_MAX");
        int n = e ? atoi(e) : 0;
        v = n >= DP_PROTO_MIN && n <= DP_PROTO_MAX ? n : DP_PROTO_MAX;
    }
    return v;
}

/* ---- state ---- */

static struct dp_pool *pool_by_id(int64_t id)
{
    for (struct dp_pool *p = S.pools; p; p = p->next)
        if (p->id == id && !p->freed)
            return p;
    return NULL;
}

static struct dp_listener *listener_by_addr(const char *a)
{
    for (struct dp_listener *l = S.listeners; l; l = l->next)
        if (strcmp(l->addr_s, a) == 0)
            return l;
    return NULL;
}

/* Backend specs from JSON; strings point into j. Returns the count or -EINVAL. */
static int specs_parse(const json_t *j, struct proxy_backend_spec *v, size_t max)
{
    if (!json_is_array(j) || json_array_size(j) > max)
        return -EINVAL;
    size_t i;
    json_t *b;
    json_array_foreach(j, i, b)
    {
        memset(&v[i], 0, sizeof(v[i]));
        v[i].id = json_string_value(json_object_get(b, "id"));
        const char *a = json_string_value(json_object_get(b, "addr"));
        if (!v[i].id || !a || net_parse_addr(a, NULL, &v[i].addr) < 0)
            return -EINVAL;
        v[i].health_path = json_string_value(json_object_get(b, "health_path"));
        v[i].up = json_is_true(json_object_get(b, "up"));
        v[i].peer = json_is_true(json_object_get(b, "peer")); /* protocol 3 */
        v[i].weight = (unsigned)json_integer_value(json_object_get(b, "weight"));
    }
    return (int)json_array_size(j);
}

/* The identity of this process's counters, as text (JSON numbers are
 * doubles for many readers). */
static json_t *instance_json(void)
{
    char id[24];
    snprintf(id, sizeof(id), "%llx", (unsigned long long)proxy_instance_id(S.proxy));
    return json_string(id);
}

static json_t *stats_json(struct proxy_pool *pool)
{
    struct proxy_backend_stats *st = NULL;
    size_t n = 0;
    json_t *arr = json_array();
    if (proxy_pool_stats(pool, &st, &n) < 0)
        return arr;
    for (size_t i = 0; i < n; i++) {
        struct proxy_backend_stats *b = &st[i];
        json_array_append_new(
            arr, json_pack("{s:s, s:s, s:b, s:b, s:b, s:i, s:I, s:I, s:I, s:I, s:I, s:I, s:I, "
                           "s:f, s:f, s:I}",
                           "id", b->id, "addr", b->addr, "healthy", b->healthy, "draining",
                           b->draining, "ever_healthy", b->ever_healthy, "consecutive_failures",
                           (int)b->consecutive_failures, "inflight", (json_int_t)b->inflight,
                           "requests", (json_int_t)b->requests, "status_2xx",
                           (json_int_t)b->status_2xx, "status_3xx", (json_int_t)b->status_3xx,
                           "status_4xx", (json_int_t)b->status_4xx, "status_5xx",
                           (json_int_t)b->status_5xx, "failures", (json_int_t)b->failures,
                           "p50_ms", b->p50_ms, "p99_ms", b->p99_ms, "health_transitions",
                           (json_int_t)b->health_transitions));
        json_t *o = json_array_get(arr, json_array_size(arr) - 1), *h = json_array();
        for (size_t k = 0; k < PROXY_HIST_BUCKETS; k++)
            json_array_append_new(h, json_integer((json_int_t)b->hist[k]));
        json_object_set_new(o, "hist", h);
        json_object_set_new(o, "retries", json_integer((json_int_t)b->retries));
        json_object_set_new(o, "status_none", json_integer((json_int_t)b->status_none));
        json_object_set_new(o, "latency_sum_s", json_real(b->latency_sum_s));
    }
    proxy_pool_stats_free(st);
    return arr;
}

/* A pool as created: new backends of its first set wait for a check unless
 * `up` (known healthy by the previous process). */
static struct dp_pool *pool_create(json_t *opts, int64_t id)
{
    struct proxy_pool_opts po;
    dpw_pool_opts_parse(opts, &po);
    struct dp_pool *p = xcalloc(1, sizeof(*p));
    p->id = id ? id : ++S.next_pool;
    if (p->id > S.next_pool)
        S.next_pool = p->id;
    p->opts = json_incref(opts);
    p->backends = json_array();
    p->pool = proxy_pool_new(S.proxy, &po);
    p->next = S.pools;
    S.pools = p;
    return p;
}

static int pool_set(struct dp_pool *p, json_t *backends)
{
    /* As many as takod sends (a service may have a thousand replicas). */
    size_t max = json_array_size(backends);
    if (max > DP_MAX_BACKENDS)
        return -E2BIG;
    struct proxy_backend_spec *specs = xcalloc(max ? max : 1, sizeof(*specs));
    int n = specs_parse(backends, specs, max);
    int r = n < 0 ? n : proxy_pool_set_backends(p->pool, specs, (size_t)n);
    free(specs);
    if (r == 0) {
        json_decref(p->backends);
        p->backends = json_deep_copy(backends);
        /* `up` only matters when a backend is new to this process */
        size_t i;
        json_t *b;
        json_array_foreach(p->backends, i, b) json_object_del(b, "up");
    }
    return r;
}

static void pool_release(struct dp_pool *p)
{
    if (p->freed)
        return;
    proxy_pool_free(p->pool);
    p->freed = true;
}

static void listener_remove(struct dp_listener *l)
{
    proxy_unlisten(S.proxy, &l->addr);
    for (struct dp_listener **pp = &S.listeners; *pp; pp = &(*pp)->next)
        if (*pp == l) {
            *pp = l->next;
            break;
        }
    json_decref(l->routes);
    json_decref(l->allow);
    free(l);
}

/* A peer listener's allow list from JSON ["ADDR" or "CIDR", ...]: the
 * count, *out malloc'd (caller frees), or -EINVAL naming nothing. */
static int allow_parse(const json_t *j, struct proxy_cidr **out)
{
    size_t n = json_array_size(j), i;
    json_t *v;
    *out = xcalloc(n ? n : 1, sizeof(**out));
    json_array_foreach(j, i, v) {
        const char *s = json_string_value(v);
        if (!s || proxy_cidr_parse(s, &(*out)[i]) < 0) {
            free(*out);
            *out = NULL;
            return -EINVAL;
        }
    }
    return (int)n;
}

static struct proxy_pool *pool_ptr(int64_t id)
{
    struct dp_pool *p = id ? pool_by_id(id) : NULL;
    return p ? p->pool : NULL;
}

/* ---- requests ---- */

static json_t *err_reply(int e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static json_t *err_reply(int e, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return json_pack("{s:b, s:i, s:s}", "ok", 0, "errno", e, "error", msg);
}

static json_t *ok_reply(void) { return json_pack("{s:b}", "ok", 1); }

static json_t *status_json(void)
{
    json_t *ls = json_array();
    for (struct dp_listener *l = S.listeners; l; l = l->next)
        json_array_append_new(ls, json_string(l->addr_s));
    size_t np = 0;
    for (struct dp_pool *p = S.pools; p; p = p->next)
        np += !p->freed;
    return json_pack("{s:b, s:i, s:s, s:s, s:i, s:I, s:i, s:i, s:o, s:I, s:I}", "ok", 1, "proto",
                     proto_max(), "version", TAKO_VERSION, "build", dp_build_id(), "pid",
                     (int)getpid(), "epoch", (json_int_t)S.epoch, "driver_pid",
                     S.driver ? (int)S.driver_pid : 0, "threads", (int)proxy_threads(S.proxy),
                     "listeners", ls, "pools", (json_int_t)np, "uptime_ms",
                     (json_int_t)(ev_time_ms() - S.started_ms));
}

static json_t *h_hello(struct dp_conn *c, json_t *q)
{
    json_int_t their_max = json_integer_value(json_object_get(q, "proto"));
    json_int_t their_min = json_integer_value(json_object_get(q, "min_proto"));
    if (their_min <= 0)
        their_min = 1;
    json_int_t use = their_max < proto_max() ? their_max : proto_max();
    if (use < DP_PROTO_MIN || use < their_min)
        return err_reply(EPROTONOSUPPORT,
                         "no common protocol version (data plane speaks %d..%d, peer %d..%d)",
                         DP_PROTO_MIN, proto_max(), (int)their_min, (int)their_max);
    const char *role = json_string_value(json_object_get(q, "role"));
    if (role && strcmp(role, "driver") == 0) {
        json_int_t epoch = json_integer_value(json_object_get(q, "epoch"));
        pid_t pid = (pid_t)json_integer_value(json_object_get(q, "pid"));
        if (S.handing_over || S.handed_over || S.lfd < 0)
            return err_reply(EAGAIN, "handing over to a new data-plane process: retry");
        /* The same takod coming back on a new connection before we saw its
         * old one close: the old one is dead to it. */
        if (S.driver && S.driver != c && pid == S.driver_pid && (uint64_t)epoch == S.epoch)
            conn_close(S.driver);
        /* A driver that died (its end closed) but whose close this loop has
         * not handled yet — both may be in one batch of events — is gone. */
        if (S.driver && S.driver != c && conn_peer_closed(S.driver))
            conn_close(S.driver);
        if (S.driver && S.driver != c)
            return err_reply(EBUSY, "already driven by takod pid %d (epoch %llu)",
                             (int)S.driver_pid, (unsigned long long)S.epoch);
        if (epoch <= 0 || (uint64_t)epoch < S.epoch)
            return err_reply(ESTALE, "stale driver: epoch %lld, the data plane is at %llu",
                             (long long)epoch, (unsigned long long)S.epoch);
        S.driver = c;
        S.driver_pid = pid;
        S.epoch = (uint64_t)epoch;
        for (struct dp_pool *p = S.pools; p; p = p->next)
            p->claimed = false;
        for (struct dp_listener *l = S.listeners; l; l = l->next)
            l->claimed = l->https_claimed = false;
        json_object_clear(S.chals_claimed);
        log_info("dataplane: driven by takod pid %d, epoch %lld", (int)pid, (long long)epoch);
    }
    c->pid = (pid_t)json_integer_value(json_object_get(q, "pid"));
    c->proto = (int)use;
    json_t *r = status_json();
    json_object_set_new(r, "proto", json_integer(use));
    return r;
}

static json_t *h_pool_new(json_t *q)
{
    json_t *opts = json_object_get(q, "opts");
    if (!json_is_object(opts))
        return err_reply(EINVAL, "pool_new needs opts");
    /* A takod that comes back re-creates its pools: the one with the same
     * options is adopted with its backends and their health. */
    for (struct dp_pool *p = S.pools; p; p = p->next)
        if (!p->freed && !p->claimed && json_equal(p->opts, opts)) {
            p->claimed = true;
            return json_pack("{s:b, s:I, s:b}", "ok", 1, "pool", (json_int_t)p->id, "adopted", 1);
        }
    struct dp_pool *p = pool_create(opts, 0);
    p->claimed = true;
    return json_pack("{s:b, s:I, s:b}", "ok", 1, "pool", (json_int_t)p->id, "adopted", 0);
}

static void listener_https_apply(struct dp_listener *l);

/* A listener with everything in place before its first accept: routes
 * ({domain: pool id}), redirect, HSTS (a data plane that restarted, or a
 * successor, has connections waiting in the queue already). fds are
 * consumed. NULL with *rc on failure. */
static struct dp_listener *listener_start(const char *a, const struct net_addr *na, int64_t def,
                                          bool tls, const json_t *routes, unsigned redirect,
                                          uint64_t hsts, bool peer, const json_t *allow,
                                          const int *fds, size_t nfds, int *rc)
{
    struct proxy_cidr *cidrs = NULL;
    int nallow = peer ? allow_parse(allow, &cidrs) : 0;
    if (nallow < 0) {
        for (size_t k = 0; k < nfds; k++)
            close(fds[k]);
        *rc = -EINVAL;
        return NULL;
    }
    size_t n = json_object_size(routes), i = 0;
    const char **doms = xcalloc(n + 1, sizeof(*doms));
    struct proxy_pool **pools = xcalloc(n + 1, sizeof(*pools));
    json_t *kept = json_object();
    const char *dom;
    json_t *pv;
    json_object_foreach((json_t *)routes, dom, pv)
    {
        struct proxy_pool *pp = pool_ptr(json_integer_value(pv));
        if (!pp)
            continue;
        doms[i] = dom;
        pools[i++] = pp;
        json_object_set(kept, dom, pv);
    }
    struct proxy_listen_spec spec = {.fds = fds, .nfds = nfds, .def = pool_ptr(def), .tls = tls,
                                     .domains = doms, .pools = pools, .nroutes = i,
                                     .https_redirect = tls ? 0 : redirect,
                                     .hsts_s = tls ? hsts : 0, .peer = peer, .allow = cidrs,
                                     .nallow = (size_t)nallow};
    *rc = proxy_listen_spec(S.proxy, na, &spec);
    free(doms);
    free(pools);
    free(cidrs);
    if (*rc < 0) {
        json_decref(kept);
        return NULL;
    }
    struct dp_listener *l = xcalloc(1, sizeof(*l));
    snprintf(l->addr_s, sizeof(l->addr_s), "%s", a);
    l->addr = *na;
    l->def = def;
    l->tls = tls;
    l->routes = kept;
    l->redirect = spec.https_redirect;
    l->hsts = spec.hsts_s;
    l->peer = peer;
    l->allow = !peer ? NULL : allow ? json_deep_copy(allow) : json_array();
    l->next = S.listeners;
    S.listeners = l;
    return l;
}

/* A new allow list for a peer listener (protocol 3). */
static json_t *peer_allow_apply(struct dp_listener *l, const json_t *allow)
{
    struct proxy_cidr *cidrs = NULL;
    int n = allow_parse(allow, &cidrs);
    if (n < 0)
        return err_reply(EINVAL, "allow: addresses or CIDRs are needed");
    int r = proxy_listener_peer_allow(S.proxy, &l->addr, cidrs, (size_t)n);
    free(cidrs);
    if (r < 0)
        return err_reply(-r, "%s", strerror(-r));
    json_decref(l->allow);
    l->allow = json_deep_copy(allow);
    return ok_reply();
}

static json_t *h_peer_allow(json_t *q)
{
    const char *a = json_string_value(json_object_get(q, "addr"));
    struct dp_listener *l = a ? listener_by_addr(a) : NULL;
    if (!l || !l->peer)
        return err_reply(ENOENT, "no peer listener %s", a ? a : "(none)");
    return peer_allow_apply(l, json_object_get(q, "allow"));
}

static json_t *h_listen(json_t *q, int *fds, size_t nfds, int *out, size_t *nout)
{
    const char *a = json_string_value(json_object_get(q, "addr"));
    struct net_addr na;
    if (!a || net_parse_addr(a, NULL, &na) < 0) {
        for (size_t i = 0; i < nfds; i++)
            close(fds[i]);
        return err_reply(EINVAL, "listen needs addr");
    }
    int64_t def = json_integer_value(json_object_get(q, "pool"));
    bool tls = json_is_true(json_object_get(q, "tls"));
    bool peer = json_is_true(json_object_get(q, "peer")); /* protocol 3 */
    json_t *allow = json_object_get(q, "allow");
    struct dp_listener *l = listener_by_addr(a);
    if (l && l->peer != peer) {
        log_info("dataplane: %s becomes %s", a, peer ? "a peer listener" : "a public listener");
        listener_remove(l);
        l = NULL;
    }
    if (l && l->tls != tls) {
        /* the same port changed between HTTP and HTTPS while no takod ran:
         * serve it the new way (on the sockets takod sent, if any) */
        log_info("dataplane: %s becomes %s", a, tls ? "HTTPS" : "plain HTTP");
        listener_remove(l);
        l = NULL;
    }
    /* protocol 2: the listener's routes, redirect and HSTS may come with it
     * (a replay), so it never accepts a connection without them */
    json_t *routes = json_object_get(q, "routes");
    unsigned redirect = (unsigned)json_integer_value(json_object_get(q, "https_redirect"));
    uint64_t hsts = (uint64_t)json_integer_value(json_object_get(q, "hsts"));
    if (l) {
        for (size_t i = 0; i < nfds; i++) /* ours are the same sockets */
            close(fds[i]);
        if (l->def != def)
            proxy_listener_set_default(S.proxy, &l->addr, pool_ptr(def));
        l->def = def;
        const char *dom;
        json_t *pv;
        json_object_foreach(routes, dom, pv)
            if (pool_ptr(json_integer_value(pv)) &&
                proxy_route_host(S.proxy, &l->addr, dom, pool_ptr(json_integer_value(pv))) == 0)
                json_object_set(l->routes, dom, pv);
        if (peer && allow && !json_equal(allow, l->allow)) {
            json_t *r = peer_allow_apply(l, allow);
            if (!json_is_true(json_object_get(r, "ok")))
                return r;
            json_decref(r);
        }
    } else {
        int r;
        l = listener_start(a, &na, def, tls, routes, redirect, hsts, peer, allow, fds, nfds, &r);
        if (!l)
            return err_reply(-r, "cannot listen on %s: %s", a, strerror(-r));
    }
    if (redirect || hsts) {
        l->redirect = tls ? 0 : redirect;
        l->hsts = tls ? hsts : 0;
        l->https_claimed = true;
        listener_https_apply(l);
    }
    l->claimed = true;
    int n = proxy_listener_fds(S.proxy, &l->addr, out, DP_MAX_FDS);
    *nout = n > 0 ? (size_t)n : 0;
    return json_pack("{s:b, s:i}", "ok", 1, "fds", (int)*nout);
}

static json_t *h_route(json_t *q, bool set_default)
{
    const char *a = json_string_value(json_object_get(q, "addr"));
    struct dp_listener *l = a ? listener_by_addr(a) : NULL;
    if (!l)
        return err_reply(ENOENT, "no listener %s", a ? a : "(none)");
    int64_t pid = json_integer_value(json_object_get(q, "pool"));
    if (set_default) {
        l->def = pid;
        proxy_listener_set_default(S.proxy, &l->addr, pool_ptr(pid));
        return ok_reply();
    }
    const char *dom = json_string_value(json_object_get(q, "domain"));
    if (!dom)
        return err_reply(EINVAL, "route needs domain");
    int r = proxy_route_host(S.proxy, &l->addr, dom, pool_ptr(pid));
    if (r < 0)
        return err_reply(-r, "%s", strerror(-r));
    if (pid)
        json_object_set_new(l->routes, dom, json_integer(pid));
    else
        json_object_del(l->routes, dom);
    return ok_reply();
}

/* ---- HTTPS (protocol 2) ---- */

static void listener_https_apply(struct dp_listener *l)
{
    if (l->tls)
        proxy_listener_hsts(S.proxy, &l->addr, l->hsts);
    else
        proxy_listener_https_redirect(S.proxy, &l->addr, l->redirect);
}

/* Zero a PEM key before its memory goes back to the allocator. */
static void secret_free(json_t *pair)
{
    json_t *k = json_object_get(pair, "key");
    if (json_is_string(k))
        explicit_bzero((char *)json_string_value(k), json_string_length(k));
}

static int cert_install(const char *id, json_t *cert, json_t *key, char *err, size_t errlen)
{
    if (!json_is_string(cert) || !json_is_string(key)) {
        snprintf(err, errlen, "cert_set needs cert and key (PEM text)");
        return -EINVAL;
    }
    int r = proxy_tls_set_cert(S.proxy, id, json_string_value(cert), json_string_length(cert),
                               json_string_value(key), json_string_length(key), err, errlen);
    if (r < 0)
        return r;
    json_t *old = json_object_get(S.certs, id);
    if (old)
        secret_free(old);
    json_object_set_new(S.certs, id, json_pack("{s:O, s:O}", "cert", cert, "key", key));
    return 0;
}

static json_t *h_https(const char *op, json_t *q)
{
    const char *id = json_string_value(json_object_get(q, "name"));
    if (strcmp(op, "cert_set") == 0) {
        if (!id || !*id)
            return err_reply(EINVAL, "cert_set needs name");
        char err[512] = "";
        int r = cert_install(id, json_object_get(q, "cert"), json_object_get(q, "key"), err,
                             sizeof(err));
        /* the message names the problem (parse, key mismatch), never the key */
        return r < 0 ? err_reply(-r, "certificate %s: %s", id, err) : ok_reply();
    }
    if (strcmp(op, "cert_del") == 0) {
        if (!id)
            return err_reply(EINVAL, "cert_del needs name");
        json_t *old = json_object_get(S.certs, id);
        if (old)
            secret_free(old);
        json_object_del(S.certs, id);
        int r = proxy_tls_del_cert(S.proxy, id);
        return r < 0 ? err_reply(-r, "certificate %s: %s", id, strerror(-r)) : ok_reply();
    }
    const char *tok = json_string_value(json_object_get(q, "token"));
    if (strcmp(op, "challenge_set") == 0 || strcmp(op, "challenge_del") == 0) {
        if (!tok || !*tok)
            return err_reply(EINVAL, "%s needs token", op);
        if (strcmp(op, "challenge_del") == 0) {
            proxy_challenge_del(S.proxy, tok);
            json_object_del(S.chals, tok);
            json_object_del(S.chals_claimed, tok);
            return ok_reply();
        }
        const char *ka = json_string_value(json_object_get(q, "keyauth"));
        if (!ka)
            return err_reply(EINVAL, "challenge_set needs keyauth");
        if (json_object_get(S.chals, tok))
            proxy_challenge_del(S.proxy, tok);
        proxy_challenge_set(S.proxy, tok, ka);
        json_object_set_new(S.chals, tok, json_string(ka));
        json_object_set_new(S.chals_claimed, tok, json_true());
        return ok_reply();
    }
    /* redirect / hsts: per listener */
    const char *a = json_string_value(json_object_get(q, "addr"));
    struct dp_listener *l = a ? listener_by_addr(a) : NULL;
    if (!l)
        return err_reply(ENOENT, "no listener %s", a ? a : "(none)");
    if (strcmp(op, "https_redirect") == 0) {
        if (l->tls)
            return err_reply(EINVAL, "%s is an HTTPS listener: it cannot redirect to HTTPS", a);
        l->redirect = (unsigned)json_integer_value(json_object_get(q, "port"));
    } else {
        if (!l->tls)
            return err_reply(EINVAL, "%s is a plain HTTP listener: HSTS needs HTTPS", a);
        l->hsts = (uint64_t)json_integer_value(json_object_get(q, "max_age"));
    }
    l->https_claimed = true;
    listener_https_apply(l);
    return ok_reply();
}

static void https_state_free(void)
{
    const char *cid;
    json_t *cv;
    json_object_foreach(S.certs, cid, cv)
        secret_free(cv);
    json_decref(S.certs);
    json_decref(S.chals);
    json_decref(S.chals_claimed);
    S.certs = S.chals = S.chals_claimed = NULL;
}

static json_t *tls_stats_json(void)
{
    struct proxy_tls_stats t;
    proxy_tls_stats(S.proxy, &t);
    return json_pack("{s:b, s:I, s:I, s:I, s:I, s:I, s:I, s:i}", "ok", 1, "handshakes",
                     (json_int_t)t.handshakes, "resumed", (json_int_t)t.resumed,
                     "handshake_failures", (json_int_t)t.handshake_failures, "no_certificate",
                     (json_int_t)t.no_certificate, "plain_http", (json_int_t)t.plain_http,
                     "not_tls", (json_int_t)t.not_tls, "certificates", (int)t.certificates);
}

static json_t *h_sync_done(void)
{
    int pools = 0, listeners = 0;
    for (struct dp_listener *l = S.listeners, *n; l; l = n) {
        n = l->next;
        if (!l->claimed) {
            log_info("dataplane: %s is no longer wanted: closing it", l->addr_s);
            listener_remove(l);
            listeners++;
        }
    }
    for (struct dp_pool *p = S.pools; p; p = p->next)
        if (!p->freed && !p->claimed) {
            pool_release(p);
            pools++;
        }
    /* A redirect or HSTS the new driver did not ask for is off now; so is
     * a challenge of an order the previous takod left unfinished.
     * Certificates stay: the new takod replaces them (same id) when its
     * certificate manager has loaded them, and until then they serve. */
    for (struct dp_listener *l = S.listeners; l; l = l->next)
        if (!l->https_claimed && (l->redirect || l->hsts)) {
            l->redirect = 0;
            l->hsts = 0;
            listener_https_apply(l);
        }
    const char *tok;
    json_t *v, *tmp;
    json_object_foreach_safe(S.chals, tmp, tok, v)
        if (!json_object_get(S.chals_claimed, tok)) {
            proxy_challenge_del(S.proxy, tok);
            json_object_del(S.chals, tok);
        }
    return json_pack("{s:b, s:i, s:i}", "ok", 1, "pools_dropped", pools, "listeners_closed",
                     listeners);
}

/* Everything a successor needs; the listening sockets go with the reply. */
static void conn_close(struct dp_conn *c);

static json_t *h_handover(struct dp_conn *c, int *out, size_t *nout)
{
    if (S.handed_over)
        return err_reply(EALREADY, "already handed over");
    bool https = json_object_size(S.certs) > 0, peers = false;
    for (struct dp_listener *l = S.listeners; l; l = l->next) {
        https |= l->tls;
        peers |= l->peer;
    }
    if (peers && c->proto < 3)
        /* it would open the peer listener to anyone, routing by Host */
        return err_reply(EPROTONOSUPPORT,
                         "the successor speaks protocol %d and cannot serve peer listeners "
                         "(needs 3)",
                         c->proto);
    if (https && c->proto < 2)
        /* it would serve the TLS sockets as plain HTTP and drop the
         * certificates: keep serving here instead */
        return err_reply(EPROTONOSUPPORT,
                         "the successor speaks protocol %d and cannot serve HTTPS (needs 2)",
                         c->proto);
    json_t *pools = json_array(), *ls = json_array();
    for (struct dp_pool *p = S.pools; p; p = p->next) {
        if (p->freed)
            continue;
        /* Carry health: a backend healthy here starts healthy there. */
        json_t *st = stats_json(p->pool);
        json_t *bs = json_deep_copy(p->backends);
        size_t i, k;
        json_t *b, *s;
        json_array_foreach(bs, i, b)
        {
            json_array_foreach(st, k, s)
            {
                if (json_equal(json_object_get(s, "id"), json_object_get(b, "id")) &&
                    !json_is_true(json_object_get(s, "draining")))
                    json_object_set(b, "up", json_object_get(s, "healthy"));
            }
        }
        json_decref(st);
        json_array_append_new(pools, json_pack("{s:I, s:O, s:o, s:b}", "id", (json_int_t)p->id,
                                                "opts", p->opts, "backends", bs, "claimed",
                                                p->claimed));
    }
    size_t n = 0;
    for (struct dp_listener *l = S.listeners; l; l = l->next) {
        int k = proxy_listener_fds(S.proxy, &l->addr, out + n, DP_MAX_FDS - n);
        if (k < 0)
            k = 0;
        n += (size_t)k;
        json_t *lj = json_pack("{s:s, s:I, s:O, s:i}", "addr", l->addr_s, "pool",
                               (json_int_t)l->def, "routes", l->routes, "fds", k);
        if (l->tls)
            json_object_set_new(lj, "tls", json_true());
        if (l->redirect)
            json_object_set_new(lj, "https_redirect", json_integer(l->redirect));
        if (l->hsts)
            json_object_set_new(lj, "hsts", json_integer((json_int_t)l->hsts));
        if (l->peer) {
            json_object_set_new(lj, "peer", json_true());
            json_object_set(lj, "allow", l->allow);
        }
        json_array_append_new(ls, lj);
    }
    *nout = n;
    c->handing_over = true;
    S.handing_over = true;
    /* Fence the driver now: what it sent from here on would be lost with
     * us; it reconnects to the successor and replays its state there. */
    if (S.driver)
        conn_close(S.driver);
    log_info("dataplane: handing over %zu listening sockets to pid %d", n, (int)c->pid);
    /* certificates with their keys: this socket is the owner's only (0600) */
    return json_pack("{s:b, s:{s:i, s:I, s:I, s:o, s:o, s:O, s:O}}", "ok", 1, "state", "threads",
                     (int)proxy_threads(S.proxy), "epoch", (json_int_t)S.epoch, "next_pool",
                     (json_int_t)S.next_pool, "pools", pools, "listeners", ls, "certs", S.certs,
                     "challenges", S.chals);
}

static json_t *handle(struct dp_conn *c, json_t *q, int *fds, size_t nfds, int *out,
                      size_t *nout)
{
    const char *op = json_string_value(json_object_get(q, "op"));
    if (!op)
        op = "";
    if (strcmp(op, "hello") == 0)
        return h_hello(c, q);
    if (strcmp(op, "status") == 0)
        return status_json();
    if (strcmp(op, "metrics") == 0) {
        char *t = proxy_metrics_text(S.proxy);
        json_t *r = json_pack("{s:b, s:s}", "ok", 1, "text", t ? t : "");
        free(t);
        return r;
    }
    if (strcmp(op, "pool_stats") == 0) {
        struct dp_pool *p = pool_by_id(json_integer_value(json_object_get(q, "pool")));
        if (!p)
            return err_reply(ENOENT, "no such pool");
        return json_pack("{s:b, s:o, s:o}", "ok", 1, "backends", stats_json(p->pool),
                         "instance", instance_json());
    }
    if (strcmp(op, "listener_stats") == 0) {
        struct proxy_listener_stats *ls = NULL;
        size_t n = 0;
        json_t *arr = json_array();
        if (proxy_listener_stats(S.proxy, &ls, &n) == 0)
            for (size_t i = 0; i < n; i++)
                json_array_append_new(arr, json_pack("{s:s, s:i, s:I}", "addr", ls[i].addr,
                                                     "open_conns", (int)ls[i].open_conns,
                                                     "accepted", (json_int_t)ls[i].accepted));
        free(ls);
        return json_pack("{s:b, s:o, s:o}", "ok", 1, "listeners", arr, "instance",
                         instance_json());
    }
    if (strcmp(op, "handover") == 0)
        return h_handover(c, out, nout);
    if (strcmp(op, "tls_stats") == 0)
        return tls_stats_json();
    if (strcmp(op, "has_name") == 0) {
        const char *h = json_string_value(json_object_get(q, "host"));
        return json_pack("{s:b, s:b}", "ok", 1, "has", h && proxy_tls_has_name(S.proxy, h));
    }
    if (strcmp(op, "handover_done") == 0 && c->handing_over) {
        S.handed_over = true;
        return ok_reply();
    }
    static const char *const mutating[] = {
        "pool_new", "pool_set",      "pool_free",     "listen",   "unlisten", "route",
        "set_default", "sync_done",  "cert_set",      "cert_del", "challenge_set",
        "challenge_del", "https_redirect", "hsts", "peer_allow"};
    bool known = false;
    for (size_t i = 0; i < ARRAY_LEN(mutating); i++)
        known |= strcmp(op, mutating[i]) == 0;
    if (!known) {
        for (size_t i = 0; i < nfds; i++)
            close(fds[i]);
        /* A newer takod may ask for more: it learns this one does not. */
        return err_reply(ENOSYS, "unknown op \"%s\"", op);
    }
    if (c != S.driver || S.handing_over || S.handed_over) {
        for (size_t i = 0; i < nfds; i++)
            close(fds[i]);
        return err_reply(EPERM, "%s: only the driver (takod, after hello) may change the data plane",
                         op);
    }
    if (strcmp(op, "pool_new") == 0)
        return h_pool_new(q);
    if (strcmp(op, "listen") == 0)
        return h_listen(q, fds, nfds, out, nout);
    if (strcmp(op, "route") == 0)
        return h_route(q, false);
    if (strcmp(op, "set_default") == 0)
        return h_route(q, true);
    if (strcmp(op, "sync_done") == 0)
        return h_sync_done();
    if (strcmp(op, "peer_allow") == 0)
        return h_peer_allow(q);
    if (strncmp(op, "cert_", 5) == 0 || strncmp(op, "challenge_", 10) == 0 ||
        strcmp(op, "https_redirect") == 0 || strcmp(op, "hsts") == 0)
        return h_https(op, q);
    if (strcmp(op, "unlisten") == 0) {
        const char *a = json_string_value(json_object_get(q, "addr"));
        struct dp_listener *l = a ? listener_by_addr(a) : NULL;
        if (!l)
            return err_reply(ENOENT, "no listener %s", a ? a : "(none)");
        listener_remove(l);
        return ok_reply();
    }
    struct dp_pool *p = pool_by_id(json_integer_value(json_object_get(q, "pool")));
    if (!p)
        return err_reply(ENOENT, "no such pool");
    if (strcmp(op, "pool_free") == 0) {
        pool_release(p);
        return ok_reply();
    }
    int r = pool_set(p, json_object_get(q, "backends"));
    return r < 0 ? err_reply(-r, "invalid backend set") : ok_reply();
}

/* ---- connections ---- */

static void conn_close(struct dp_conn *c)
{
    ev_io_stop(&S.loop, &c->io);
    close(c->fd);
    dpw_in_free(&c->in);
    if (S.driver == c) {
        S.driver = NULL;
        log_info("dataplane: takod pid %d disconnected; serving with the last state",
                 (int)S.driver_pid);
    }
    if (c->handing_over && !S.handed_over) {
        S.handing_over = false;
        log_warn("dataplane: the successor went away before taking over: still serving");
    }
    for (struct dp_conn **pp = &S.conns; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    free(c);
}

static void stop_serving(const char *why);

static void on_conn(struct ev_loop *loop, struct ev_io *io, uint32_t ev)
{
    (void)loop;
    (void)ev;
    struct dp_conn *c = io->data;
    int r = dpw_fill(c->fd, &c->in);
    for (;;) {
        json_t *q = NULL;
        int fds[DP_MAX_FDS], out[DP_MAX_FDS];
        size_t nfds = 0, nout = 0;
        int t = dpw_take(&c->in, &q, fds, &nfds);
        if (t == 0)
            break;
        if (t < 0) {
            conn_close(c);
            return;
        }
        json_t *resp = handle(c, q, fds, nfds, out, &nout);
        json_t *id = json_object_get(q, "id");
        if (id)
            json_object_set(resp, "id", id);
        int w = dpw_send(c->fd, resp, out, nout, IO_TIMEOUT_MS);
        json_decref(resp);
        json_decref(q);
        if (w < 0) {
            conn_close(c);
            return;
        }
        if (S.handed_over) {
            stop_serving("handed over to a new data-plane process");
            return;
        }
    }
    if (r < 0)
        conn_close(c);
}

static void on_accept(struct ev_loop *loop, struct ev_io *io, uint32_t ev)
{
    (void)loop;
    (void)ev;
    for (;;) {
        int fd = accept4(io->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        struct dp_conn *c = xcalloc(1, sizeof(*c));
        c->fd = fd;
        ev_io_init(&c->io, fd, on_conn, c);
        ev_io_start(&S.loop, &c->io, EPOLLIN | EPOLLRDHUP);
        c->next = S.conns;
        S.conns = c;
    }
}

/* The control socket: bound under a temporary name and renamed over the
 * real one, so the path always leads to a live data plane. */
static int control_listen(void)
{
    char tmp[4300];
    snprintf(tmp, sizeof(tmp), "%s.%d", S.sock, (int)getpid());
    int fd = net_listen_unix(tmp, 64, 0600);
    if (fd < 0)
        return fd;
    if (rename(tmp, S.sock) == -1) {
        int e = errno;
        close(fd);
        unlink(tmp);
        return -e;
    }
    S.lfd = fd;
    struct stat st;
    if (stat(S.sock, &st) == 0)
        S.sock_ino = st.st_ino;
    ev_io_init(&S.lio, fd, on_accept, NULL);
    ev_io_start(&S.loop, &S.lio, EPOLLIN);
    /* Written aside and renamed: a reader never sees an empty file. */
    char ptmp[4300];
    snprintf(ptmp, sizeof(ptmp), "%s.%d", S.pidfile, (int)getpid());
    FILE *f = fopen(ptmp, "w");
    if (f) {
        fprintf(f, "%d\n", (int)getpid());
        if (fclose(f) == 0)
            rename(ptmp, S.pidfile);
        else
            unlink(ptmp);
    }
    return 0;
}

/* Stop taking control requests; the caller ends the loop. Only the owner
 * of the path removes it (a successor has renamed its own over it). */
static void stop_serving(const char *why)
{
    log_info("dataplane: %s: finishing in-flight requests", why);
    if (S.lfd >= 0) {
        ev_io_stop(&S.loop, &S.lio);
        struct stat a;
        if (!S.handed_over && stat(S.sock, &a) == 0 && a.st_ino == S.sock_ino) {
            unlink(S.sock);
            FILE *f = fopen(S.pidfile, "r");
            int pid = 0;
            if (f) {
                if (fscanf(f, "%d", &pid) != 1)
                    pid = 0;
                fclose(f);
            }
            if (pid == (int)getpid())
                unlink(S.pidfile);
        }
        close(S.lfd);
        S.lfd = -1;
    }
    ev_loop_stop(&S.loop);
}

static void on_stop_signal(struct ev_loop *loop, struct ev_signal *s, int signo)
{
    (void)loop;
    (void)s;
    char why[64];
    snprintf(why, sizeof(why), "%s", strsignal(signo));
    stop_serving(why);
}

static void on_hup(struct ev_loop *loop, struct ev_signal *s, int signo)
{
    (void)loop;
    (void)s;
    (void)signo;
}

/* ---- takeover: become the successor of the running data plane ---- */

static int take_over(char *err, size_t errlen)
{
    int fd = net_connect_unix(S.sock);
    if (fd < 0) {
        snprintf(err, errlen, "no data plane to take over at %s: %s", S.sock, strerror(-fd));
        return fd;
    }
    net_set_nonblock(fd);
    struct dpw_in in = {0};
    json_t *q = json_pack("{s:s, s:i, s:i, s:i, s:s, s:i}", "op", "hello", "proto", proto_max(),
                          "min_proto", DP_PROTO_MIN, "pid", (int)getpid(), "role", "successor",
                          "id", 1);
    json_t *r = NULL;
    int fds[DP_MAX_FDS];
    size_t nfds = 0;
    int rc = dpw_send(fd, q, NULL, 0, IO_TIMEOUT_MS);
    json_decref(q);
    if (rc == 0)
        rc = dpw_recv(fd, &in, &r, fds, &nfds, IO_TIMEOUT_MS);
    if (rc == 0 && !json_is_true(json_object_get(r, "ok")))
        rc = -EPROTONOSUPPORT;
    json_decref(r);
    r = NULL;
    if (rc == 0) {
        q = json_pack("{s:s, s:i}", "op", "handover", "id", 2);
        rc = dpw_send(fd, q, NULL, 0, IO_TIMEOUT_MS);
        json_decref(q);
    }
    if (rc == 0)
        rc = dpw_recv(fd, &in, &r, fds, &nfds, IO_TIMEOUT_MS);
    json_t *st = json_object_get(r, "state");
    if (rc < 0 || !json_is_object(st)) {
        snprintf(err, errlen, "handover refused: %s",
                 rc < 0 ? strerror(-rc) : json_string_value(json_object_get(r, "error")));
        json_decref(r);
        close(fd);
        dpw_in_free(&in);
        return rc < 0 ? rc : -EPROTO;
    }
    S.po.threads = (unsigned)json_integer_value(json_object_get(st, "threads"));
    S.proxy = proxy_new(&S.po);
    if (!S.proxy || proxy_start(S.proxy) < 0) {
        snprintf(err, errlen, "cannot start the proxy: %s", strerror(errno));
        close(fd);
        return -EIO;
    }
    S.epoch = (uint64_t)json_integer_value(json_object_get(st, "epoch"));
    S.next_pool = json_integer_value(json_object_get(st, "next_pool"));
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(st, "pools"), i, p)
    {
        struct dp_pool *dp =
            pool_create(json_object_get(p, "opts"), json_integer_value(json_object_get(p, "id")));
        pool_set(dp, json_object_get(p, "backends"));
        dp->claimed = json_is_true(json_object_get(p, "claimed"));
    }
    /* certificates before the TLS listeners: no handshake finds none */
    const char *cid;
    json_t *cv;
    json_object_foreach(json_object_get(st, "certs"), cid, cv)
    {
        char cerr[512];
        if (cert_install(cid, json_object_get(cv, "cert"), json_object_get(cv, "key"), cerr,
                         sizeof(cerr)) < 0)
            log_error("dataplane: certificate %s from the previous process: %s", cid, cerr);
    }
    json_object_foreach(json_object_get(st, "challenges"), cid, cv)
        if (json_is_string(cv)) {
            proxy_challenge_set(S.proxy, cid, json_string_value(cv));
            json_object_set(S.chals, cid, cv);
        }
    size_t off = 0;
    json_t *l;
    json_array_foreach(json_object_get(st, "listeners"), i, l)
    {
        const char *a = json_string_value(json_object_get(l, "addr"));
        size_t k = (size_t)json_integer_value(json_object_get(l, "fds"));
        struct net_addr na;
        if (!a || off + k > nfds || net_parse_addr(a, NULL, &na) < 0)
            break;
        int64_t def = json_integer_value(json_object_get(l, "pool"));
        int lr;
        struct dp_listener *dl = listener_start(
            a, &na, def, json_is_true(json_object_get(l, "tls")), json_object_get(l, "routes"),
            (unsigned)json_integer_value(json_object_get(l, "https_redirect")),
            (uint64_t)json_integer_value(json_object_get(l, "hsts")),
            json_is_true(json_object_get(l, "peer")), json_object_get(l, "allow"), fds + off, k,
            &lr);
        off += k;
        if (!dl) {
            log_error("dataplane: cannot take over %s: %s", a, strerror(-lr));
            continue;
        }
        dl->claimed = true;
        dl->https_claimed = true;
    }
    for (; off < nfds; off++)
        close(fds[off]);
    json_decref(r);
    /* Serve, then take the path, then let the old one go. */
    rc = control_listen();
    if (rc == 0) {
        q = json_pack("{s:s, s:i}", "op", "handover_done", "id", 3);
        dpw_send(fd, q, NULL, 0, IO_TIMEOUT_MS);
        json_decref(q);
        r = NULL;
        dpw_recv(fd, &in, &r, NULL, NULL, IO_TIMEOUT_MS);
        json_decref(r);
    } else {
        snprintf(err, errlen, "cannot listen on %s: %s", S.sock, strerror(-rc));
    }
    close(fd);
    dpw_in_free(&in);
    return rc;
}

/* ---- the command ---- */

int cmd_dataplane(int argc, char **argv)
{
    static const struct option opts[] = {{"threads", required_argument, NULL, 't'},
                                         {"access-log", required_argument, NULL, 'a'},
                                         {"takeover", no_argument, NULL, 'T'},
                                         {0}};
    bool takeover = false;
    memset(&S, 0, sizeof(S));
    S.lfd = -1;
    int o;
    optind = 1;
    opterr = 0;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 't': {
            uint64_t v;
            if (parse_uint(optarg, 1024, &v) < 0 || v == 0)
                return cli_usage_error("dataplane", "invalid --threads '%s'", optarg);
            S.po.threads = (unsigned)v;
            break;
        }
        case 'a': S.po.access_log = optarg; break;
        case 'T': takeover = true; break;
        default: return cli_usage_error("dataplane", "unknown option '%s'", argv[optind - 1]);
        }
    }
    const char *home = tako_home();
    if (!home) {
        fprintf(stderr, "tako dataplane: cannot create the state directory: %s\n", strerror(errno));
        return EXIT_FAILED;
    }
    snprintf(S.home, sizeof(S.home), "%s", home);
    snprintf(S.sock, sizeof(S.sock), "%s/dataplane.sock", home);
    snprintf(S.pidfile, sizeof(S.pidfile), "%s/dataplane.pid", home);
    S.started_ms = ev_time_ms();
    dp_build_id();
    signal(SIGPIPE, SIG_IGN);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    if (ev_loop_init(&S.loop) < 0) {
        fprintf(stderr, "tako dataplane: epoll: %s\n", strerror(errno));
        return EXIT_FAILED;
    }
    S.certs = json_object();
    S.chals = json_object();
    S.chals_claimed = json_object();
    char err[8800];
    int rc;
    if (takeover) {
        rc = take_over(err, sizeof(err));
    } else {
        S.proxy = proxy_new(&S.po);
        rc = S.proxy && proxy_start(S.proxy) == 0 ? control_listen() : -EIO;
        if (rc < 0)
            snprintf(err, sizeof(err), "cannot start: %s", strerror(rc == -EIO ? errno : -rc));
    }
    const char *rfd = getenv("TAKO_READY_FD");
    int ready = rfd ? atoi(rfd) : -1;
    unsetenv("TAKO_READY_FD");
    if (rc < 0) {
        fprintf(stderr, "tako dataplane: %s\n", err);
        if (ready > 2) {
            ssize_t w = write(ready, err, strlen(err));
            (void)w;
            close(ready);
        }
        if (S.proxy)
            proxy_free(S.proxy);
        https_state_free();
        return EXIT_FAILED;
    }
    ev_signal_start(&S.loop, &S.sigterm, SIGTERM, on_stop_signal, NULL);
    ev_signal_start(&S.loop, &S.sigint, SIGINT, on_stop_signal, NULL);
    ev_signal_start(&S.loop, &S.sighup, SIGHUP, on_hup, NULL);
    log_info("dataplane %s (build %s) started, pid %d%s", TAKO_VERSION, dp_build_id(),
             (int)getpid(), takeover ? ", took over the running one" : "");
    if (ready > 2) {
        ssize_t w = write(ready, "ok\n", 3);
        (void)w;
        close(ready);
    }
    ev_run(&S.loop);
    while (S.conns)
        conn_close(S.conns);
    /* Graceful: listeners closed (a successor holds the same sockets),
     * in-flight requests finish, keep-alive connections end cleanly. */
    proxy_stop(S.proxy);
    proxy_free(S.proxy);
    for (struct dp_pool *p = S.pools, *n; p; p = n) {
        n = p->next;
        json_decref(p->opts);
        json_decref(p->backends);
        free(p);
    }
    while (S.listeners) {
        struct dp_listener *l = S.listeners;
        S.listeners = l->next;
        json_decref(l->routes);
        free(l);
    }
    https_state_free();
    ev_loop_close(&S.loop);
    log_info("dataplane pid %d stopped", (int)getpid());
    return EXIT_OK;
}
