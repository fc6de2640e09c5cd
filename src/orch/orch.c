/* orch.c — the reconciler: rolling updates, scaling, healing, draining.
 *
 * Replica names are stable: slot i of service S in project P is always
 * "P-S-i". A rolling update with maxSurge 1 and maxUnavailable 0 therefore
 * starts one extra replica in slot N+1, and then for each slot i: drain and
 * stop the old replica, start the new one in the same slot, wait until it is
 * healthy. Finally the surge replica is drained. Capacity never drops below
 * N, and after the update the names are 1..N again.
 */
#include "orch/orch.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include "core/assert.h"
#include "core/ev.h"
#include "core/log.h"
#include "core/net.h"
#include "core/sha256.h"
#include "core/util.h"
#include "orch/autoscale.h"
#include "orch/orch_internal.h"
#include "proxy/proxy.h"
#include "proxy/proxy_admin.h"
#include "runtime/rt.h"
#include "store/store.h"

/* ---- small helpers ---- */

static uint64_t now_ms(struct orch *o)
{
    return o->clock ? o->clock(o->clock_data) : ev_now(o->loop);
}

static unsigned svc_desired(struct orch_service *s)
{
    if (s->stopped || s->removing)
        return 0;
    if (s->cfg->autoscale.enabled)
        return orch_autoscale_desired(s);
    if (s->scale_override >= 0)
        return (unsigned)s->scale_override;
    return s->cfg_replicas;
}

static bool rep_current(const struct orch_service *s, const struct orch_replica *r)
{
    return strcmp(r->revision, s->revision) == 0 && r->gen == s->gen;
}

static bool rep_active(const struct orch_replica *r)
{
    return r->phase == P_STARTING || r->phase == P_READY;
}

const char *orch_phase_name(enum orch_phase p)
{
    switch (p) {
    case P_STARTING: return "starting";
    case P_READY: return "ready";
    case P_DRAINING: return "draining";
    case P_STOPPING: return "stopping";
    }
    return "?";
}

static struct orch_op *op_of(struct orch *o, const char *project)
{
    for (struct orch_op *op = o->ops; op; op = op->next)
        if (strcmp(op->project, project) == 0)
            return op;
    return NULL;
}

/* One place for what happened to a service: with a level, the line is
 * logged and streamed to the running operation of its project (if any);
 * with a kind, it is also recorded as an event (`tako` history and API). */
static void report(struct orch_service *s, const char *level, const char *kind, const char *fmt,
                   ...) __attribute__((format(printf, 4, 5)));
static void report(struct orch_service *s, const char *level, const char *kind, const char *fmt,
                   ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (level) {
        log_info("%s/%s: %s", s->project, s->name, msg);
        struct orch_op *op = op_of(s->o, s->project);
        if (op && op->cb)
            op->cb(op->data, s->name, level, msg, false, true);
    }
    if (kind)
        store_event(s->o->store, s->project, s->name, kind, msg, NULL, NULL, NULL);
}

static struct orch_service *svc_find(struct orch *o, const char *project, const char *name)
{
    for (struct orch_service *s = o->services; s; s = s->next)
        if (strcmp(s->project, project) == 0 && strcmp(s->name, name) == 0)
            return s;
    return NULL;
}

static void svc_persist(struct orch_service *s)
{
    struct store_service st;
    memset(&st, 0, sizeof(st));
    snprintf(st.project, sizeof(st.project), "%s", s->project);
    snprintf(st.env, sizeof(st.env), "%s", s->env);
    snprintf(st.service, sizeof(st.service), "%s", s->name);
    snprintf(st.revision, sizeof(st.revision), "%s", s->revision);
    st.config = s->cfg_json;
    st.replicas = (int)s->cfg_replicas;
    st.scale_override = s->scale_override;
    st.stopped = s->stopped;
    st.http_port = s->http_port;
    store_service_save(s->o->store, &st, NULL, NULL);
}

/* ---- proxy pools and listeners ---- */

static void pool_opts_of(const struct orch_service *s, struct proxy_pool_opts *po, char *name,
                         size_t namelen)
{
    const struct cfg_service *c = s->cfg;
    snprintf(name, namelen, "%s-%s", s->project, s->name);
    memset(po, 0, sizeof(*po));
    po->name = name;
    po->strategy = (enum lb_kind)c->lb_strategy; /* both number the rows of lb_table */
    /* Health checks disabled: the proxy checks that the port accepts. */
    po->health_path = c->health.enabled ? c->health.path : NULL;
    po->health_interval_ms = c->health.interval_ms;
    po->health_timeout_ms = c->health.timeout_ms;
    po->rise = c->health.healthy_threshold;
    po->fall = c->health.unhealthy_threshold;
    po->drain_timeout_ms = c->deploy.drain_timeout_ms;
    if (c->lb_cookie)
        po->sticky_cookie = c->lb_cookie;
    po->max_conns_per_backend = c->lb_max_conns;
    po->max_queue = c->lb_max_queue;
    po->queue_timeout_ms = c->lb_queue_timeout_ms;
    po->body_timeout_ms = c->lb_body_timeout_ms;
    po->min_body_rate = c->lb_min_body_rate;
    /* A deploy waits for a healthy replica anyway; keep the default wait. */
}

static void svc_sync_pool(struct orch_service *s);
static int orch_sync_listeners(struct orch *o, char *err, size_t errlen);

/* Options that, when changed, need a new pool (strategy, health, cookie):
 * a digest of them, so no field is ever cut off. */
static void pool_opts_sig(const struct proxy_pool_opts *po, uint8_t out[ORCH_SIG_LEN])
{
    /* The path itself is per backend (each replica is checked on its own
     * revision's path), so a changed path needs no new pool. */
    char head[256];
    int w = snprintf(head, sizeof(head), "%d|%s|%llu|%llu|%u|%u|%llu|%u|%u|%llu|%llu|%u|",
                     (int)po->strategy, po->health_path ? "http" : "tcp",
                     (unsigned long long)po->health_interval_ms,
                     (unsigned long long)po->health_timeout_ms, po->rise, po->fall,
                     (unsigned long long)po->drain_timeout_ms, po->max_conns_per_backend,
                     po->max_queue, (unsigned long long)po->queue_timeout_ms,
                     (unsigned long long)po->body_timeout_ms, po->min_body_rate);
    struct sha256 h;
    sha256_init(&h);
    sha256_update(&h, head, w > 0 ? (size_t)w : 0);
    const char *cookie = po->sticky_cookie ? po->sticky_cookie : "-";
    sha256_update(&h, cookie, strlen(cookie) + 1);
    sha256_final(&h, out);
}

/* The pool's backend set in slot order (the list is kept sorted): ready
 * replicas, plus starting ones unless ready_only (the proxy gives those no
 * traffic before their first passing check). *specs is malloc'd (caller
 * frees; ids point into the replicas); sig is a digest of the set (id,
 * address, health path of each), so an unchanged set is not pushed again
 * whatever its size. Returns the count. */
static size_t pool_specs(struct orch_service *s, bool ready_only,
                         struct proxy_backend_spec **specs, uint8_t sig[ORCH_SIG_LEN])
{
    size_t cap = 0, n = 0;
    for (struct orch_replica *r = s->replicas; r; r = r->next)
        cap++;
    *specs = xcalloc(cap ? cap : 1, sizeof(**specs));
    struct sha256 h;
    sha256_init(&h);
    for (struct orch_replica *r = s->replicas; r; r = r->next) {
        if (r->phase != P_READY && (ready_only || r->phase != P_STARTING))
            continue;
        /* The driver says where the replica is reached. */
        char a[64];
        struct proxy_backend_spec *sp = &(*specs)[n];
        if (rt_address(r->rt, a, sizeof(a)) < 0 || net_parse_addr(a, NULL, &sp->addr) < 0)
            continue;
        sp->id = r->name;
        sp->health_path = r->health_path[0] ? r->health_path : NULL;
        n++;
        /* NUL-separated fields: no two different sets hash the same input. */
        sha256_update(&h, r->name, strlen(r->name) + 1);
        sha256_update(&h, a, strlen(a) + 1);
        sha256_update(&h, r->health_path, strlen(r->health_path) + 1);
    }
    sha256_final(&h, sig);
    return n;
}

/* Create the service's pool, or replace it when its options changed: the
 * new pool starts with the ready replicas taking traffic at once
 * (initial_up), listeners are pointed at it, and the old one drains. */
static void svc_ensure_pool(struct orch_service *s)
{
    if (s->cfg->port == 0)
        return;
    struct proxy_pool_opts po;
    char name[160];
    uint8_t sig[ORCH_SIG_LEN];
    pool_opts_of(s, &po, name, sizeof(name));
    pool_opts_sig(&po, sig);
    if (s->pool && memcmp(sig, s->pool_opts_sig, ORCH_SIG_LEN) == 0)
        return;
    struct proxy_pool *old = s->pool;
    po.initial_up = old != NULL;
    s->pool = proxy_pool_new(s->o->proxy, &po);
    memcpy(s->pool_opts_sig, sig, ORCH_SIG_LEN);
    s->pool_sig_set = false;
    if (!old)
        return;
    /* First set: ready replicas only, so initial_up never admits an
     * unchecked one; the next sync adds the starting ones. */
    struct proxy_backend_spec *specs;
    uint8_t set_sig[ORCH_SIG_LEN];
    size_t n = pool_specs(s, true, &specs, set_sig);
    proxy_pool_set_backends(s->pool, specs, n);
    free(specs);
    char err[256];
    orch_sync_listeners(s->o, err, sizeof(err));
    proxy_pool_free(old);
    svc_sync_pool(s);
}

/* Push the active replicas into the pool when the set changed. */
static void svc_sync_pool(struct orch_service *s)
{
    if (!s->pool)
        return;
    struct proxy_backend_spec *specs;
    uint8_t sig[ORCH_SIG_LEN];
    size_t n = pool_specs(s, false, &specs, sig);
    if (!s->pool_sig_set || memcmp(sig, s->pool_sig, ORCH_SIG_LEN) != 0) {
        if (proxy_pool_set_backends(s->pool, specs, n) == 0) {
            memcpy(s->pool_sig, sig, ORCH_SIG_LEN);
            s->pool_sig_set = true;
        }
    }
    free(specs);
}

static struct orch_listener *listener_get(struct orch *o, unsigned port, bool create)
{
    for (struct orch_listener *l = o->listeners; l; l = l->next)
        if (l->port == port)
            return l;
    if (!create)
        return NULL;
    struct orch_listener *l = xcalloc(1, sizeof(*l));
    l->port = port;
    l->tls = false;
    l->next = o->listeners;
    o->listeners = l;
    return l;
}

/* Recompute every listener's routes from the services and apply the
 * difference. Returns 0, or -errno with a message when a port cannot be
 * bound. */
static int orch_sync_listeners(struct orch *o, char *err, size_t errlen)
{
    int rc = 0;
    for (struct orch_listener *l = o->listeners; l; l = l->next)
        l->wanted = false;
    for (struct orch_service *s = o->services; s; s = s->next) {
        if (!s->pool || s->removing)
            continue;
        if (s->cfg->proxy.port)
            listener_get(o, s->cfg->proxy.port, true)->wanted = true;
        if (s->http_port)
            listener_get(o, s->http_port, true)->wanted = true;
        if (s->http_port && cfg_proxy_https(&s->cfg->proxy) && s->cfg->proxy.https_port) {
            struct orch_listener *tl = listener_get(o, s->cfg->proxy.https_port, true);
            tl->wanted = true;
            if (!tl->bound)
                tl->tls = true;
        }
    }
    for (struct orch_listener *l = o->listeners; l; l = l->next) {
        if (!l->wanted)
            continue;
        struct net_addr a;
        char as[32];
        snprintf(as, sizeof(as), "0.0.0.0:%u", l->port);
        net_parse_addr(as, NULL, &a);
        /* Dedicated port → that pool; entrypoint → domains, plus the one
         * domainless web service when there is exactly one. */
        struct orch_route want[ORCH_MAX_ROUTES];
        size_t nw = 0;
        struct proxy_pool *def = NULL;
        int ndef = 0;
        bool dedicated = false;
        unsigned redirect_to = 0;
        uint64_t hsts = 0;
        for (struct orch_service *s = o->services; s; s = s->next) {
            if (!s->pool || s->removing)
                continue;
            bool https = cfg_proxy_https(&s->cfg->proxy) && s->http_port;
            if (!l->tls && s->cfg->proxy.port == l->port) {
                def = s->pool;
                dedicated = true;
            }
            if (https && !l->tls && s->http_port == l->port)
                redirect_to = s->cfg->proxy.https_port;
            if (l->tls) {
                if (!https || s->cfg->proxy.https_port != l->port)
                    continue;
                if (s->cfg->proxy.hsts_s > hsts)
                    hsts = s->cfg->proxy.hsts_s;
            } else if (s->http_port != l->port) {
                continue;
            }
            for (size_t d = 0; d < s->cfg->proxy.domains_len && nw < ORCH_MAX_ROUTES; d++) {
                snprintf(want[nw].domain, sizeof(want[nw].domain), "%s", s->cfg->proxy.domains[d]);
                want[nw].pool = s->pool;
                nw++;
            }
            if (s->cfg->proxy.domains_len == 0 && s->cfg->proxy.port == 0 && !dedicated) {
                def = s->pool;
                ndef++;
            }
        }
        if (!dedicated && ndef > 1)
            def = NULL; /* several domainless services: only Host routes */
        if (!l->bound) {
            int r = l->tls ? proxy_listen_tls(o->proxy, &a, def) : proxy_listen(o->proxy, &a, def);
            if (r < 0) {
                if (rc == 0) {
                    rc = r;
                    snprintf(err, errlen, "cannot listen on port %u: %s", l->port, strerror(-r));
                }
                continue;
            }
            l->bound = true;
            l->def = def;
        } else if (l->def != def) {
            proxy_listener_set_default(o->proxy, &a, def);
            l->def = def;
        }
        /* Routes: drop the ones no longer wanted, set the others. */
        for (size_t i = 0; i < l->nroutes; i++) {
            bool keep = false;
            for (size_t j = 0; j < nw; j++)
                if (strcasecmp(l->routes[i].domain, want[j].domain) == 0)
                    keep = true;
            if (!keep)
                proxy_route_host(o->proxy, &a, l->routes[i].domain, NULL);
        }
        for (size_t j = 0; j < nw; j++)
            proxy_route_host(o->proxy, &a, want[j].domain, want[j].pool);
        memcpy(l->routes, want, nw * sizeof(want[0]));
        l->nroutes = nw;
        if (!l->tls && l->redirect_to != redirect_to) {
            proxy_listener_https_redirect(o->proxy, &a, redirect_to);
            l->redirect_to = redirect_to;
        }
        if (l->tls && l->hsts != hsts) {
            proxy_listener_hsts(o->proxy, &a, hsts);
            l->hsts = hsts;
        }
    }
    for (struct orch_listener **pp = &o->listeners; *pp;) {
        struct orch_listener *l = *pp;
        if (!l->wanted) {
            if (l->bound) {
                struct net_addr a;
                char as[32];
                snprintf(as, sizeof(as), "0.0.0.0:%u", l->port);
                net_parse_addr(as, NULL, &a);
                proxy_unlisten(o->proxy, &a);
            }
            *pp = l->next;
            free(l);
        } else {
            pp = &l->next;
        }
    }
    return rc;
}

/* ---- replicas ---- */

static void rep_insert_sorted(struct orch_service *s, struct orch_replica *r)
{
    struct orch_replica **pp = &s->replicas;
    while (*pp && ((*pp)->index < r->index ||
                   ((*pp)->index == r->index && (*pp)->started_ms <= r->started_ms)))
        pp = &(*pp)->next;
    r->next = *pp;
    *pp = r;
    /* The walks of the tick rely on slot order. */
    BUG_ON(r->next && r->next->index < r->index);
}

static void rep_unlink(struct orch_service *s, struct orch_replica *r)
{
    for (struct orch_replica **pp = &s->replicas; *pp; pp = &(*pp)->next)
        if (*pp == r) {
            *pp = r->next;
            return;
        }
}

static bool slot_taken(struct orch_service *s, unsigned index)
{
    for (struct orch_replica *r = s->replicas; r; r = r->next)
        if (r->index == index)
            return true;
    return false;
}

static void rep_set_phase(struct orch_replica *r, enum orch_phase p)
{
    /* Stopping is final: a replica never comes back from rt_stop. */
    BUG_ON(r->phase == P_STOPPING && p != P_STOPPING);
    r->phase = p;
    r->phase_ms = now_ms(r->svc->o);
}

static void svc_maybe_finish_removal(struct orch_service *s);
static void svc_start_failed(struct orch_service *s, struct orch_replica *r, const char *name,
                             const char *why);

static void rep_stopped(struct rt_replica *rr, void *data)
{
    struct orch_replica *r = data;
    struct orch_service *s = r->svc;
    (void)rr;
    report(s, "info", "stopped", "stopped %s", r->name);
    rep_unlink(s, r);
    rt_forget(r->rt);
    free(r);
    svc_maybe_finish_removal(s);
}

static void rep_stop(struct orch_replica *r)
{
    if (r->phase == P_STOPPING)
        return;
    rep_set_phase(r, P_STOPPING);
    rt_stop(r->rt, rep_stopped, r);
}

static void rep_drain(struct orch_replica *r, const char *why)
{
    struct orch_service *s = r->svc;
    if (r->phase == P_DRAINING || r->phase == P_STOPPING)
        return;
    rep_set_phase(r, P_DRAINING);
    if (!s->pool) {
        rep_stop(r);
        return;
    }
    report(s, "info", "draining", "draining %s (%s)", r->name, why);
    svc_sync_pool(s);
}

/* A port no replica of this takod was given: the kernel's "free now" may
 * hand out a port again before the replica it went to has bound it (seen
 * with hundreds of replicas starting in one tick). 0 when none is found. */
static uint16_t rep_free_port(struct orch *o)
{
    for (int tries = 0; tries < 64; tries++) {
        uint16_t p = net_free_port();
        bool taken = p == 0;
        for (struct orch_service *s = o->services; s && !taken; s = s->next)
            for (struct orch_replica *r = s->replicas; r && !taken; r = r->next)
                taken = r->port == p;
        if (!taken)
            return p;
    }
    return 0;
}

static struct orch_replica *rep_start(struct orch_service *s, unsigned index)
{
    struct orch *o = s->o;
    const struct cfg_service *c = s->cfg;
    struct orch_replica *r = xcalloc(1, sizeof(*r));
    r->svc = s;
    r->index = index;
    snprintf(r->revision, sizeof(r->revision), "%s", s->revision);
    r->gen = s->gen;
    if (c->health.enabled && c->health.path)
        snprintf(r->health_path, sizeof(r->health_path), "%s", c->health.path);
    snprintf(r->name, sizeof(r->name), "%.60s-%.60s-%u", s->project, s->name, index);
    r->port = c->port ? rep_free_port(o) : 0;
    struct rt_env_kv env[256];
    size_t ne = 0;
    for (size_t i = 0; i < c->env_len && ne < ARRAY_LEN(env); i++) {
        env[ne].key = c->env[i].key;
        env[ne].value = c->env[i].value;
        ne++;
    }
    char *const default_argv[] = {"/bin/false", NULL};
    bool proc = !c->runtime || strcmp(c->runtime, RT_DEFAULT_DRIVER) == 0;
    struct rt_spec spec = {
        .driver = c->runtime,
        .project = s->project,
        .service = s->name,
        .environment = s->env,
        .index = index,
        .revision = s->revision,
        .image = c->image,
        .build_dir = c->build,
        /* a container without command: runs its image's own */
        .argv = c->argv ? c->argv : proc ? default_argv : NULL,
        .cwd = c->workdir ? c->workdir : c->build,
        .env = env,
        .env_len = ne,
        .port = r->port,
        .stop_grace_ms = c->deploy.stop_grace_ms,
        .restart = c->restart == CFG_RESTART_NEVER        ? RT_RESTART_NEVER
                   : c->restart == CFG_RESTART_ON_FAILURE ? RT_RESTART_ON_FAILURE
                                                          : RT_RESTART_ALWAYS,
    };
    char err[256];
    struct rt_replica *rr = NULL;
    int rc = rt_start(o->rt, &spec, &rr, err, sizeof(err));
    if (rc < 0) {
        char name[128], why[300];
        snprintf(name, sizeof(name), "%s", r->name);
        snprintf(why, sizeof(why), "cannot start: %s", err);
        free(r);
        svc_start_failed(s, NULL, name, why);
        return NULL;
    }
    r->rt = rr;
    rt_set_data(rr, r);
    r->started_ms = now_ms(o);
    rep_set_phase(r, P_STARTING);
    rep_insert_sorted(s, r);
    report(s, "info", "starting", "starting %s (revision %s, port %u)", r->name, s->revision,
           r->port);
    svc_sync_pool(s);
    return r;
}

/* Proxy view of one backend (by id), from the snapshot of this tick. */
static bool backend_stats(struct orch_service *s, const char *id, struct proxy_backend_stats *out)
{
    const struct proxy_backend_stats *b = orch__find_stats(s->snap, s->nsnap, id);
    if (b)
        *out = *b;
    return b != NULL;
}

/* One copy of the pool's counters per tick, not one per replica looked at. */
static void svc_snapshot(struct orch_service *s)
{
    proxy_pool_stats_free(s->snap);
    s->snap = NULL;
    s->nsnap = 0;
    if (s->pool && proxy_pool_stats(s->pool, &s->snap, &s->nsnap) < 0) {
        s->snap = NULL;
        s->nsnap = 0;
    }
    orch__stats_sort(s->snap, s->nsnap); /* looked up once per replica: by bsearch */
}

/* A starting replica failed: of the target revision, that fails the
 * operation (and rolls back); of an older one, it just goes. */
static void rep_start_failed(struct orch_replica *r, const char *why)
{
    if (rep_current(r->svc, r))
        svc_start_failed(r->svc, r, r->name, why);
    else
        rep_stop(r);
}

static uint64_t start_deadline_ms(const struct cfg_service *c)
{
    const struct cfg_health *h = &c->health;
    uint64_t per = h->interval_ms + h->timeout_ms;
    return h->start_period_ms + per * (h->healthy_threshold + h->unhealthy_threshold + 2) + 10000;
}

/* Is a starting replica ready for traffic? */
static bool rep_ready(struct orch_replica *r, const struct rt_info *info)
{
    struct orch_service *s = r->svc;
    if (info->state != RT_RUNNING)
        return false;
    if (s->cfg->port == 0)
        return info->uptime_ms >= 1000;
    struct proxy_backend_stats st;
    return backend_stats(s, r->name, &st) && st.healthy && !st.draining;
}

static void last_lines(struct orch_replica *r, char *buf, size_t len)
{
    char **lines = NULL;
    size_t n = 0;
    size_t o = 0;
    buf[0] = '\0';
    if (rt_logs_tail(r->svc->o->rt, rt_spec(r->rt)->driver, r->name, 10, 0, &lines, &n) < 0)
        return;
    for (size_t i = 0; i < n && o + 2 < len; i++) {
        int w = snprintf(buf + o, len - o, "    %s\n", lines[i]);
        if (w < 0)
            break;
        o += (size_t)w < len - o ? (size_t)w : len - o - 1;
    }
    rt_logs_free(lines, n);
}

/* A replica of the target revision failed to start: fail the operation
 * and roll back to the previous target, if there is one. */
static void svc_start_failed(struct orch_service *s, struct orch_replica *r, const char *name,
                             const char *why)
{
    char lines[2048] = "";
    if (r)
        last_lines(r, lines, sizeof(lines));
    report(s, "error", "unhealthy", "%s of revision %s failed: %s", name, s->revision, why);
    if (lines[0])
        report(s, "error", NULL, "last output of %s:\n%s", name, lines);
    struct orch_op *op = op_of(s->o, s->project);
    if (op && !op->failed) {
        op->failed = true;
        snprintf(op->fail_msg, sizeof(op->fail_msg), "%s of revision %s failed: %s", name,
                 s->revision, why);
    }
    if (r)
        rep_stop(r);
    if (s->prev_cfg && strcmp(s->prev_revision, s->revision) != 0) {
        report(s, "warn", "rollback", "rolling back from revision %s to %s", s->revision,
               s->prev_revision);
        struct cfg_service *c = s->cfg;
        json_t *j = s->cfg_json;
        char rev[64];
        snprintf(rev, sizeof(rev), "%s", s->revision);
        s->cfg = s->prev_cfg;
        s->cfg_json = s->prev_json;
        snprintf(s->revision, sizeof(s->revision), "%s", s->prev_revision);
        s->cfg_replicas = s->prev_replicas;
        s->prev_cfg = c;
        s->prev_json = j;
        snprintf(s->prev_revision, sizeof(s->prev_revision), "%s", rev);
        if (op)
            op->rolling_back = true;
        svc_ensure_pool(s);
        svc_persist(s);
    } else if (!s->stopped) {
        /* Nothing to go back to: leave the service stopped, not crash looping. */
        report(s, "warn", NULL, "no previous revision to roll back to: %s stays stopped", s->name);
        s->stopped = true;
        svc_persist(s);
    }
}

/* Liveness: a ready replica that keeps failing its health check is restarted. */
static void rep_liveness(struct orch_replica *r, const struct rt_info *info)
{
    struct orch_service *s = r->svc;
    if (!s->pool || info->state != RT_RUNNING)
        return;
    struct proxy_backend_stats st;
    if (!backend_stats(s, r->name, &st))
        return;
    const struct cfg_health *h = &s->cfg->health;
    uint64_t now = now_ms(s->o);
    uint64_t quiet = h->start_period_ms + (h->interval_ms + h->timeout_ms) * (h->unhealthy_threshold + 1);
    if (!st.healthy && st.consecutive_failures >= h->unhealthy_threshold &&
        info->uptime_ms > h->start_period_ms && now - r->liveness_ms > quiet) {
        r->liveness_ms = now;
        report(s, "warn", "liveness", "%s failed %u health checks in a row: restarting it",
               r->name, st.consecutive_failures);
        rt_restart(r->rt);
    }
}

/* ---- the reconcile step of one service ---- */

static bool svc_converged(struct orch_service *s)
{
    unsigned n = svc_desired(s), ready = 0;
    for (struct orch_replica *r = s->replicas; r; r = r->next) {
        if (!rep_current(s, r) || r->phase != P_READY || r->index > n || r->index == 0)
            return false;
        ready++;
    }
    return ready == n;
}

static void svc_reconcile(struct orch_service *s)
{
    struct orch *o = s->o;
    uint64_t now = now_ms(o);
    const struct cfg_service *c = s->cfg;
    unsigned n = svc_desired(s);

    /* 1. Observe. */
    svc_snapshot(s);
    for (struct orch_replica *r = s->replicas, *next; r; r = next) {
        next = r->next;
        struct rt_info info;
        rt_inspect(r->rt, &info); /* no stats: this runs for every replica every tick */
        if (r->phase == P_STARTING) {
            if (info.state == RT_FAILED || info.state == RT_EXITED ||
                info.state == RT_CRASHLOOP || info.state == RT_BACKOFF ||
                info.restarts > r->restarts_at_start) {
                char why[400];
                if (info.last_error[0])
                    snprintf(why, sizeof(why), "%s", info.last_error);
                else
                    snprintf(why, sizeof(why), "exited (%s)", rt_state_name(info.state));
                rep_start_failed(r, why);
                continue;
            }
            if (rep_ready(r, &info)) {
                rep_set_phase(r, P_READY);
                r->was_ready = true;
                char d[32];
                fmt_duration(now - r->started_ms, d, sizeof(d));
                report(s, "info", "ready", "%s is healthy (%s)", r->name, d);
                continue;
            }
            if (s->pool) {
                struct proxy_backend_stats st;
                if (backend_stats(s, r->name, &st) && !st.ever_healthy &&
                    st.consecutive_failures >= c->health.unhealthy_threshold &&
                    now - r->started_ms > c->health.start_period_ms + c->health.interval_ms) {
                    char why[128];
                    snprintf(why, sizeof(why), "failed %u health checks on %s without passing one",
                             st.consecutive_failures, c->health.path);
                    rep_start_failed(r, why);
                    continue;
                }
            }
            if (now - r->started_ms > start_deadline_ms(c)) {
                rep_start_failed(r, "did not become healthy in time");
                continue;
            }
        } else if (r->phase == P_READY) {
            rep_liveness(r, &info);
        } else if (r->phase == P_DRAINING) {
            struct proxy_backend_stats st;
            bool idle = !backend_stats(s, r->name, &st) || st.inflight == 0;
            if (idle || now - r->phase_ms >= c->deploy.drain_timeout_ms)
                rep_stop(r);
        }
    }

    /* 2. Decide. */
    unsigned surge = c->deploy.max_surge, unavail = c->deploy.max_unavailable;
    if (surge == 0 && unavail == 0)
        surge = 1;
    unsigned ready = 0, starting = 0, old_active = 0, surge_active = 0;
    bool busy_slot_transition = false;
    for (struct orch_replica *r = s->replicas; r; r = r->next) {
        if (r->phase == P_READY)
            ready++;
        if (r->phase == P_STARTING)
            starting++;
        if (rep_active(r) && !rep_current(s, r))
            old_active++;
        if (rep_active(r) && r->index > n)
            surge_active++;
        if (r->phase == P_DRAINING || r->phase == P_STOPPING)
            busy_slot_transition = true;
    }

    bool recreate = c->deploy.strategy == CFG_DEPLOY_RECREATE;
    if (recreate && old_active > 0) {
        for (struct orch_replica *r = s->replicas; r; r = r->next)
            if (rep_active(r) && !rep_current(s, r))
                rep_drain(r, "recreate");
        return;
    }
    if (recreate && busy_slot_transition) {
        bool old_left = false;
        for (struct orch_replica *r = s->replicas; r; r = r->next)
            if (!rep_current(s, r))
                old_left = true;
        if (old_left)
            return;
    }

    /* a) fill empty slots 1..n (adds capacity; never waits): one walk of
     * the list, which is sorted by slot (a new replica goes in before cur). */
    struct orch_replica *cur = s->replicas;
    for (unsigned i = 1; i <= n; i++) {
        while (cur && cur->index < i)
            cur = cur->next;
        if ((!cur || cur->index != i) && !rep_start(s, i))
            return; /* the target changed (rolled back or stopped) */
    }

    /* b) replace old replicas in slots 1..n, one step at a time. */
    if (starting == 0) {
        struct orch_replica *victim = NULL;
        for (struct orch_replica *r = s->replicas; r; r = r->next)
            if (rep_active(r) && !rep_current(s, r) && r->index <= n) {
                victim = r;
                break;
            }
        if (victim) {
            BUG_ON(victim->index > n || rep_current(s, victim));
            if (ready >= 1 + (n > unavail ? n - unavail : 0) || (victim->phase == P_STARTING)) {
                rep_drain(victim, "replaced by a new revision");
            } else if (!busy_slot_transition && surge_active < surge) {
                BUG_ON(old_active == 0); /* a surge replica only while old ones serve */
                unsigned idx = n + 1;
                while (slot_taken(s, idx))
                    idx++;
                if (!rep_start(s, idx))
                    return;
            }
        }
    }

    /* c) drain replicas above n once every slot holds a ready current one. */
    bool slots_done = true;
    cur = s->replicas;
    for (unsigned i = 1; i <= n && slots_done; i++) {
        bool ok = false;
        while (cur && cur->index < i)
            cur = cur->next;
        for (struct orch_replica *r = cur; r && r->index == i; r = r->next)
            if (rep_current(s, r) && r->phase == P_READY)
                ok = true;
        slots_done = ok;
    }
    if (slots_done) {
        /* Highest-numbered first: the list is sorted ascending, so drain
         * from a reversed copy of the excess ones. */
        size_t ne = 0, cap = 0;
        for (struct orch_replica *r = s->replicas; r; r = r->next)
            cap++;
        struct orch_replica **excess = xmalloc((cap ? cap : 1) * sizeof(*excess));
        for (struct orch_replica *r = s->replicas; r; r = r->next)
            if (rep_active(r) && (r->index > n || !rep_current(s, r)))
                excess[ne++] = r;
        while (ne > 0)
            rep_drain(excess[--ne], n == 0 ? "stopping" : "scaling down");
        free(excess);
    }
    svc_sync_pool(s);
}

/* ---- removal ---- */

static void svc_free(struct orch_service *s)
{
    orch_autoscale_free(s);
    proxy_pool_stats_free(s->snap);
    if (s->pool)
        proxy_pool_free(s->pool);
    cfg_service_free(s->cfg);
    json_decref(s->cfg_json);
    if (s->prev_cfg)
        cfg_service_free(s->prev_cfg);
    json_decref(s->prev_json);
    free(s);
}

static void svc_maybe_finish_removal(struct orch_service *s)
{
    struct orch *o = s->o;
    if (!s->removing || s->replicas)
        return;
    /* Unlink from the list; listeners first so no route points at the pool. */
    for (struct orch_service **pp = &o->services; *pp; pp = &(*pp)->next)
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    char err[256];
    orch_sync_listeners(o, err, sizeof(err));
    store_service_delete(o->store, s->project, s->env, s->name, NULL, NULL);
    report(s, "info", "removed", "removed %s", s->name);
    svc_free(s);
}

/* ---- operations ---- */

static void lease_key(const char *project, char *buf, size_t len)
{
    snprintf(buf, len, "project/%s", project);
}

/* The history row of an operation: begun when the operation starts, ended
 * when it finishes; a store that answers later may end it after the
 * operation is gone from the list, so the row's end waits for its id. */
static void hist_end(struct orch *o, struct orch_op *op)
{
    store_history_end(o->store, op->hist_id, op->hist_status, op->hist_msg, NULL, NULL);
    free(op);
}

static void on_hist_begun(void *data, int rc, void *result)
{
    struct orch_op *op = data;
    op->hist_pending = false;
    op->hist_id = rc == 0 && result ? *(const int64_t *)result : 0;
    if (op->finished)
        hist_end(op->o, op);
}

static void op_finish(struct orch *o, struct orch_op *op)
{
    BUG_ON(op->finished);
    for (struct orch_op **pp = &o->ops; *pp; pp = &(*pp)->next)
        if (*pp == op) {
            *pp = op->next;
            break;
        }
    bool ok = !op->failed;
    char msg[1200];
    for (struct orch_service *s = o->services; s; s = s->next)
        if (strcmp(s->project, op->project) == 0)
            s->in_op = false;
    if (ok)
        snprintf(msg, sizeof(msg), "%s", op->ok_msg[0] ? op->ok_msg : "done");
    else if (op->rolling_back)
        snprintf(msg, sizeof(msg), "%s; rolled back to the previous revision", op->fail_msg);
    else
        snprintf(msg, sizeof(msg), "%s", op->fail_msg);
    char key[128];
    lease_key(op->project, key, sizeof(key));
    store_unlock(o->store, key, op->owner, NULL, NULL);
    if (op->cb)
        op->cb(op->data, NULL, ok ? "info" : "error", msg, true, ok);
    snprintf(op->hist_status, sizeof(op->hist_status), "%s",
             ok ? "ok" : (op->rolling_back ? "rolled-back" : "failed"));
    snprintf(op->hist_msg, sizeof(op->hist_msg), "%s", msg);
    op->finished = true;
    if (!op->hist_pending)
        hist_end(o, op);
}

/* A renewal refused: another writer holds the project now. */
static void on_lease_renewed(void *data, int rc, void *result)
{
    struct orch *o = data;
    const struct store_lease *held = result;
    if (rc != -EBUSY || !held || strncmp(held->key, "project/", 8) != 0)
        return;
    struct orch_op *op = NULL;
    for (struct orch_op *x = o->ops; x; x = x->next)
        if (strcmp(x->project, held->key + 8) == 0)
            op = x;
    if (op && !op->failed) {
        op->failed = true;
        snprintf(op->fail_msg, sizeof(op->fail_msg), "lost the lease on project %s to %s",
                 op->project, held->owner);
    }
}

/* Leases are renewed well before they expire. */
static void ops_renew(struct orch *o, uint64_t now)
{
    for (struct orch_op *op = o->ops; op; op = op->next) {
        if (now - op->renewed_ms < ORCH_LEASE_MS / 3)
            continue;
        op->renewed_ms = now;
        char key[128];
        lease_key(op->project, key, sizeof(key));
        store_lock(o->store, key, op->owner, op->kind, ORCH_LEASE_MS, on_lease_renewed, o);
    }
}

/* Every service the operation touched has converged (or is gone). */
static bool project_settled(struct orch *o, const char *project)
{
    for (struct orch_service *s = o->services; s; s = s->next)
        if (strcmp(s->project, project) == 0 && s->in_op && (s->removing || !svc_converged(s)))
            return false;
    return true;
}

void orch__tick(struct orch *o)
{
    uint64_t now = now_ms(o);
    for (struct orch_service *s = o->services, *next; s; s = next) {
        next = s->next;
        if (s->cfg->autoscale.enabled) {
            unsigned before = svc_desired(s);
            if (orch_autoscale_eval(s, now))
                log_info("%s/%s: autoscale %u → %u replicas", s->project, s->name, before,
                         svc_desired(s));
        }
        svc_reconcile(s);
    }
    for (struct orch_op *op = o->ops, *next; op; op = next) {
        next = op->next;
        if (project_settled(o, op->project))
            op_finish(o, op);
    }
    ops_renew(o, now);
}

static void tick(struct ev_loop *loop, struct ev_timer *t)
{
    orch__tick(t->data);
    ev_timer_start(loop, t, ORCH_TICK_MS);
}

void orch__set_clock(struct orch *o, uint64_t (*clock)(void *), void *data)
{
    o->clock = clock;
    o->clock_data = data;
}

static struct orch_op *op_begin(struct orch *o, const char *kind, const char *project,
                                const char *env, const char *revision, const char *detail,
                                orch_progress_cb cb, void *data, char *err, size_t errlen)
{
    /* One operation per project, for every writer of the store: a lease. */
    char key[128];
    lease_key(project, key, sizeof(key));
    /* Each operation owns its lease: a second one from this takod is refused too. */
    char owner[sizeof(((struct orch_op *)0)->owner)];
    snprintf(owner, sizeof(owner), "%s/op-%llu", o->owner, (unsigned long long)++o->op_seq);
    struct store_result lr = {0};
    int rc = store_lock(o->store, key, owner, kind, ORCH_LEASE_MS, store_keep_lease, &lr);
    if (rc == 0 && !lr.done) {
        /* The reconciler needs the answer before it changes targets. */
        snprintf(err, errlen, "the state store did not answer at once; try again");
        return NULL;
    }
    if (rc < 0 || lr.rc < 0) {
        if (rc == 0 && lr.rc == -EBUSY) {
            char d[32];
            uint64_t wall = time_wall_ms();
            fmt_duration(wall > lr.lease.acquired_ms ? wall - lr.lease.acquired_ms : 0, d,
                         sizeof(d));
            snprintf(err, errlen,
                     "a %s of project %s is in progress (started %s ago); wait for it to finish",
                     lr.lease.info, project, d);
        } else {
            snprintf(err, errlen, "cannot lock project %s in the state store: %s", project,
                     strerror(-(rc < 0 ? rc : lr.rc)));
        }
        return NULL;
    }
    struct orch_op *op = xcalloc(1, sizeof(*op));
    op->o = o;
    snprintf(op->project, sizeof(op->project), "%s", project);
    snprintf(op->env, sizeof(op->env), "%s", env ? env : "");
    snprintf(op->kind, sizeof(op->kind), "%s", kind);
    snprintf(op->owner, sizeof(op->owner), "%s", owner);
    op->cb = cb;
    op->data = data;
    op->started_ms = now_ms(o);
    op->renewed_ms = op->started_ms;
    op->hist_pending = true;
    if (store_history_begin(o->store, project, env ? env : "", kind, revision, detail,
                            on_hist_begun, op) < 0)
        op->hist_pending = false;
    op->next = o->ops;
    o->ops = op;
    return op;
}

void orch_detach(struct orch *o, void *data)
{
    for (struct orch_op *op = o->ops; op; op = op->next)
        if (op->data == data) {
            op->cb = NULL;
            op->data = NULL;
        }
}

static struct orch_service *svc_new(struct orch *o, const char *project, const char *env,
                                    const char *name)
{
    struct orch_service *s = xcalloc(1, sizeof(*s));
    s->o = o;
    snprintf(s->project, sizeof(s->project), "%s", project);
    snprintf(s->env, sizeof(s->env), "%s", env);
    snprintf(s->name, sizeof(s->name), "%s", name);
    s->scale_override = -1;
    /* Append: `ps` lists services in the order they were deployed. */
    struct orch_service **pp = &o->services;
    while (*pp)
        pp = &(*pp)->next;
    *pp = s;
    return s;
}

/* Set a service's target configuration (takes ownership of cfg and j). */
static void svc_set_target(struct orch_service *s, struct cfg_service *cfg, json_t *j,
                           const char *revision)
{
    if (s->cfg) {
        if (s->prev_cfg)
            cfg_service_free(s->prev_cfg);
        json_decref(s->prev_json);
        s->prev_cfg = s->cfg;
        s->prev_json = s->cfg_json;
        s->prev_replicas = s->cfg_replicas;
        snprintf(s->prev_revision, sizeof(s->prev_revision), "%s", s->revision);
    }
    s->cfg = cfg;
    s->cfg_json = j;
    s->cfg_replicas = cfg->replicas;
    snprintf(s->revision, sizeof(s->revision), "%s", revision);
}

int orch_deploy(struct orch *o, const struct orch_deploy_req *req, orch_progress_cb cb,
                void *data, char *err, size_t errlen)
{
    /* Validate everything before changing anything. */
    struct cfg_service **cfgs = xcalloc(req->n_items + 1, sizeof(*cfgs));
    int rc = 0;
    for (size_t i = 0; i < req->n_items; i++) {
        char e[256];
        cfgs[i] = cfg_service_from_json(req->items[i].config, e, sizeof(e));
        if (!cfgs[i]) {
            snprintf(err, errlen, "service %s: invalid configuration: %s", req->items[i].name, e);
            rc = -EINVAL;
            goto out;
        }
        struct orch_service *other = svc_find(o, req->project, req->items[i].name);
        if (other && strcmp(other->env, req->env) != 0 && !other->removing) {
            snprintf(err, errlen,
                     "project %s already runs service %s of environment %s on this machine; "
                     "run 'tako down %s' first",
                     req->project, req->items[i].name, other->env, other->env);
            rc = -EEXIST;
            goto out;
        }
    }
    /* Nothing changed? */
    bool changed = req->force;
    for (size_t i = 0; i < req->n_items && !changed; i++) {
        if (req->only_service && strcmp(req->only_service, req->items[i].name) != 0)
            continue;
        struct orch_service *s = svc_find(o, req->project, req->items[i].name);
        if (!s || strcmp(s->revision, req->items[i].revision) != 0 || s->stopped ||
            s->removing || s->http_port != req->http_port || !svc_converged(s) ||
            s->cfg_replicas != cfgs[i]->replicas)
            changed = true;
    }
    if (req->prune && !req->only_service)
        for (struct orch_service *s = o->services; s && !changed; s = s->next) {
            if (strcmp(s->project, req->project) != 0)
                continue;
            bool listed = false;
            for (size_t i = 0; i < req->n_items; i++)
                if (strcmp(req->items[i].name, s->name) == 0)
                    listed = true;
            if (!listed)
                changed = true;
        }
    if (!changed) {
        rc = 1; /* nothing to do */
        size_t el = (size_t)snprintf(err, errlen,
                                     "nothing changed: every service runs its current revision");
        /* Still say where the running state differs from the file. */
        for (size_t i = 0; i < req->n_items && el < errlen; i++) {
            struct orch_service *s = svc_find(o, req->project, req->items[i].name);
            if (s && s->scale_override >= 0 && (unsigned)s->scale_override != cfgs[i]->replicas)
                el += (size_t)snprintf(err + el, errlen - el,
                                       "\nwarning: %s is scaled to %d by 'tako scale' but "
                                       "tako.yaml says %u; keeping %d",
                                       s->name, s->scale_override, cfgs[i]->replicas,
                                       s->scale_override);
        }
        goto out;
    }
    char detail[256] = "";
    size_t dl = 0;
    for (size_t i = 0; i < req->n_items; i++) {
        int w = snprintf(detail + dl, sizeof(detail) - dl, "%s%s@%s", i ? " " : "",
                         req->items[i].name, req->items[i].revision);
        if (w > 0 && (size_t)w < sizeof(detail) - dl)
            dl += (size_t)w;
    }
    const char *rev0 = req->n_items == 1 ? req->items[0].revision : "";
    struct orch_op *op = op_begin(o, "deploy", req->project, req->env, rev0, detail, cb, data, err,
                                  errlen);
    if (!op) {
        rc = -EBUSY;
        goto out;
    }
    for (size_t i = 0; i < req->n_items; i++) {
        const struct orch_deploy_item *it = &req->items[i];
        if (req->only_service && strcmp(req->only_service, it->name) != 0)
            continue;
        struct orch_service *s = svc_find(o, req->project, it->name);
        bool fresh = !s;
        if (!s)
            s = svc_new(o, req->project, req->env, it->name);
        s->removing = false;
        bool yaml_changed = !fresh && s->cfg_replicas != cfgs[i]->replicas;
        if (s->scale_override >= 0) {
            if (yaml_changed) {
                report(s, "info", NULL,
                       "tako.yaml now asks for %u replicas: dropping the scale override of %d",
                       cfgs[i]->replicas, s->scale_override);
                s->scale_override = -1;
            } else if ((unsigned)s->scale_override != cfgs[i]->replicas) {
                report(s, "warn", NULL,
                       "warning: %s is scaled to %d by 'tako scale' but tako.yaml says %u; "
                       "keeping %d (change replicas in tako.yaml or run 'tako scale %s=%u')",
                       s->name, s->scale_override, cfgs[i]->replicas, s->scale_override, s->name,
                       cfgs[i]->replicas);
            }
        }
        if (fresh || strcmp(s->revision, it->revision) != 0 || req->force) {
            store_revision_add(o->store, req->project, req->env, it->name, it->revision,
                               it->config, it->source, NULL, NULL);
            svc_set_target(s, cfgs[i], json_incref(it->config), it->revision);
            cfgs[i] = NULL;
            if (req->force && !fresh)
                s->gen++;
        } else {
            s->cfg_replicas = cfgs[i]->replicas;
        }
        s->stopped = false;
        s->in_op = true;
        s->http_port = req->http_port;
        svc_ensure_pool(s);
        svc_persist(s);
        report(s, "info", NULL, "deploying revision %s: %u replica%s", s->revision, svc_desired(s),
            svc_desired(s) == 1 ? "" : "s");
    }
    if (req->prune && !req->only_service) {
        for (struct orch_service *s = o->services; s; s = s->next) {
            if (strcmp(s->project, req->project) != 0)
                continue;
            bool listed = false;
            for (size_t i = 0; i < req->n_items; i++)
                if (strcmp(req->items[i].name, s->name) == 0)
                    listed = true;
            if (!listed && !s->removing) {
                report(s, "info", NULL, "%s is no longer in tako.yaml: removing it", s->name);
                s->removing = true;
                s->in_op = true;
            }
        }
    }
    char lerr[256];
    if (orch_sync_listeners(o, lerr, sizeof(lerr)) < 0) {
        op->failed = true;
        snprintf(op->fail_msg, sizeof(op->fail_msg), "%s", lerr);
    }
    snprintf(op->ok_msg, sizeof(op->ok_msg), "deployed");
out:
    for (size_t i = 0; i < req->n_items; i++)
        if (cfgs[i])
            cfg_service_free(cfgs[i]);
    free(cfgs);
    return rc;
}

int orch_scale(struct orch *o, const char *project, const char *env, json_t *counts,
               orch_progress_cb cb, void *data, char *err, size_t errlen)
{
    const char *name;
    json_t *v;
    if (!json_is_object(counts) || json_object_size(counts) == 0) {
        snprintf(err, errlen, "nothing to scale: give SERVICE=COUNT");
        return -EINVAL;
    }
    json_object_foreach(counts, name, v) {
        struct orch_service *s = svc_find(o, project, name);
        if (!s || s->removing || (env && *env && strcmp(s->env, env) != 0)) {
            snprintf(err, errlen, "project %s has no deployed service %s", project, name);
            return -ENOENT;
        }
        if (!json_is_integer(v) || json_integer_value(v) < 0 ||
            json_integer_value(v) > CFG_MAX_REPLICAS) {
            snprintf(err, errlen,
                     "%s: replicas must be an integer from 0 to %d (the limit per service)", name,
                     CFG_MAX_REPLICAS);
            return -EINVAL;
        }
        if (s->cfg->autoscale.enabled) {
            snprintf(err, errlen,
                     "%s is autoscaled (min %u, max %u): change replicas.min/max in tako.yaml "
                     "instead",
                     name, s->cfg->autoscale.min, s->cfg->autoscale.max);
            return -EINVAL;
        }
    }
    struct orch_op *op = op_begin(o, "scale", project, env, "", "", cb, data, err, errlen);
    if (!op)
        return -EBUSY;
    json_object_foreach(counts, name, v) {
        struct orch_service *s = svc_find(o, project, name);
        int want = (int)json_integer_value(v);
        unsigned before = svc_desired(s);
        s->scale_override = want == (int)s->cfg_replicas ? -1 : want;
        s->in_op = true;
        svc_persist(s);
        report(s, "info", "scale", "scaling %s from %u to %d replica%s", s->name, before, want,
               want == 1 ? "" : "s");
    }
    snprintf(op->ok_msg, sizeof(op->ok_msg), "scaled");
    return 0;
}

int orch_action(struct orch *o, const char *kind, const char *project, const char *env,
                const char *service, orch_progress_cb cb, void *data, char *err,
                size_t errlen)
{
    bool any = false;
    for (struct orch_service *s = o->services; s; s = s->next)
        if (strcmp(s->project, project) == 0 && (!env || !*env || strcmp(s->env, env) == 0) &&
            (!service || strcmp(s->name, service) == 0) && !s->removing)
            any = true;
    if (!any) {
        if (service)
            snprintf(err, errlen, "project %s has no deployed service %s", project, service);
        else
            snprintf(err, errlen, "project %s has nothing deployed", project);
        return -ENOENT;
    }
    struct orch_op *op = op_begin(o, kind, project, env, "", service ? service : "", cb, data,
                                  err, errlen);
    if (!op)
        return -EBUSY;
    for (struct orch_service *s = o->services; s; s = s->next) {
        if (strcmp(s->project, project) != 0 || (env && *env && strcmp(s->env, env) != 0) ||
            (service && strcmp(s->name, service) != 0) || s->removing)
            continue;
        if (strcmp(kind, "restart") == 0) {
            s->gen++;
            s->stopped = false;
            report(s, "info", kind, "restarting %s, one replica at a time", s->name);
        } else if (strcmp(kind, "stop") == 0) {
            s->stopped = true;
            report(s, "info", kind, "stopping %s", s->name);
        } else if (strcmp(kind, "start") == 0) {
            s->stopped = false;
            report(s, "info", kind, "starting %s", s->name);
        } else if (strcmp(kind, "down") == 0) {
            s->removing = true;
            report(s, "info", kind, "removing %s", s->name);
        }
        s->in_op = true;
        svc_persist(s);
    }
    snprintf(op->ok_msg, sizeof(op->ok_msg), "%s", strcmp(kind, "down") == 0 ? "removed" : "done");
    return 0;
}

int orch_rollback(struct orch *o, const char *project, const char *env, const char *service,
                  const char *revision, orch_progress_cb cb, void *data, char *err,
                  size_t errlen)
{
    /* Pick the services and the revisions to go back to first. */
    struct { struct orch_service *s; json_t *j; char rev[64]; } plan[64];
    size_t np = 0;
    for (struct orch_service *s = o->services; s && np < ARRAY_LEN(plan); s = s->next) {
        if (strcmp(s->project, project) != 0 || (env && *env && strcmp(s->env, env) != 0) ||
            (service && strcmp(s->name, service) != 0) || s->removing)
            continue;
        const char *want = revision && *revision ? revision : s->prev_revision;
        if (!want[0]) {
            /* After a takod restart prev is not in memory: ask the history. */
            struct store_result hr = {0};
            store_history_list(o->store, project, s->env, 50, store_keep_json, &hr);
            if (!hr.done)
                goto store_late;
            json_t *h = hr.json;
            hr.json = NULL;
            size_t i;
            json_t *row;
            json_array_foreach(h, i, row) {
                const char *d = json_string_value(json_object_get(row, "detail"));
                const char *st = json_string_value(json_object_get(row, "status"));
                char key[80];
                snprintf(key, sizeof(key), "%s@", s->name);
                const char *p = d ? strstr(d, key) : NULL;
                if (p && st && strcmp(st, "ok") == 0) {
                    char rv[64];
                    snprintf(rv, sizeof(rv), "%.*s", (int)strcspn(p + strlen(key), " "),
                             p + strlen(key));
                    if (strcmp(rv, s->revision) != 0) {
                        snprintf(plan[np].rev, sizeof(plan[np].rev), "%s", rv);
                        break;
                    }
                }
            }
            json_decref(h);
            if (!plan[np].rev[0])
                continue;
        } else {
            snprintf(plan[np].rev, sizeof(plan[np].rev), "%s", want);
        }
        if (strcmp(plan[np].rev, s->revision) == 0)
            continue;
        struct store_result vr = {0};
        store_revision_get(o->store, project, s->env, s->name, plan[np].rev, store_keep_json,
                           &vr);
        if (!vr.done)
            goto store_late;
        plan[np].j = vr.json;
        if (!plan[np].j) {
            if (revision && *revision) {
                snprintf(err, errlen, "service %s has no revision %s (see 'tako history')",
                         s->name, revision);
                for (size_t k = 0; k < np; k++)
                    json_decref(plan[k].j);
                return -ENOENT;
            }
            continue;
        }
        plan[np].s = s;
        np++;
    }
    if (np == 0) {
        snprintf(err, errlen, "no previous revision to roll back to (see 'tako history')");
        return -ENOENT;
    }
    struct orch_op *op = op_begin(o, "rollback", project, env, plan[0].rev, "", cb, data, err, errlen);
    if (!op) {
        for (size_t k = 0; k < np; k++)
            json_decref(plan[k].j);
        return -EBUSY;
    }
    for (size_t k = 0; k < np; k++) {
        char e[256];
        struct cfg_service *c = cfg_service_from_json(plan[k].j, e, sizeof(e));
        if (!c) {
            json_decref(plan[k].j);
            continue;
        }
        struct orch_service *s = plan[k].s;
        report(s, "info", "rollback", "rolling back %s from %s to %s", s->name, s->revision,
               plan[k].rev);
        svc_set_target(s, c, plan[k].j, plan[k].rev);
        s->stopped = false;
        s->in_op = true;
        svc_ensure_pool(s);
        svc_persist(s);
    }
    char lerr[256];
    orch_sync_listeners(o, lerr, sizeof(lerr));
    snprintf(op->ok_msg, sizeof(op->ok_msg), "rolled back");
    return 0;
store_late:
    /* The plan needs the history and the revisions before anything changes. */
    for (size_t k = 0; k < np; k++)
        json_decref(plan[k].j);
    snprintf(err, errlen, "the state store did not answer at once; try again");
    return -EAGAIN;
}

/* ---- runtime events ---- */

static void on_rt_event(struct rt_replica *rr, enum rt_state old_state, enum rt_state new_state,
                        void *data)
{
    struct orch *o = data;
    struct orch_replica *r = rt_data(rr);
    (void)o;
    if (!r)
        return;
    struct orch_service *s = r->svc;
    if (new_state == RT_RUNNING && old_state == RT_STARTING && r->phase == P_STARTING) {
        /* Its app runs from now (a container driver may have built an
         * image first): health deadlines count from here, and the driver
         * has an address for the pool at last. */
        r->started_ms = now_ms(s->o);
        svc_sync_pool(s);
    }
    if (new_state == RT_BACKOFF || new_state == RT_CRASHLOOP) {
        struct rt_info info;
        rt_inspect(rr, &info);
        report(s, NULL, "crash", "%s exited (%s); restart %u in %llums", r->name,
              info.last_error[0] ? info.last_error : rt_state_name(old_state), info.restarts + 1,
              (unsigned long long)info.backoff_ms);
        if (r->phase == P_READY)
            log_warn("%s exited unexpectedly; the runtime restarts it", r->name);
    }
}

/* ---- life cycle ---- */

/* A replica being prepared says how it goes (the Docker driver's build
 * output): into the operation's progress, like tako's own lines. */
static void on_rt_note(struct rt_replica *rr, const char *line, void *data)
{
    (void)data;
    struct orch_replica *r = rt_data(rr);
    if (r)
        report(r->svc, "info", NULL, "%s: %s", r->name, line);
}

struct orch *orch_new(struct ev_loop *loop, struct rt *rt, struct proxy *proxy,
                      struct store *store, const char *state_dir)
{
    rt_set_note_cb(rt, on_rt_note, NULL);
    struct orch *o = xcalloc(1, sizeof(*o));
    o->loop = loop;
    o->rt = rt;
    o->proxy = proxy;
    o->store = store;
    snprintf(o->state_dir, sizeof(o->state_dir), "%s", state_dir);
    char host[64] = "localhost";
    gethostname(host, sizeof(host) - 1);
    snprintf(o->owner, sizeof(o->owner), "takod:%.63s:%d", host, (int)getpid());
    ev_timer_init(&o->tick, tick, o);
    return o;
}

static void orphan_stopped(struct rt_replica *rr, void *data)
{
    (void)data;
    rt_forget(rr);
}

/* The services as stored: targets first, then the replicas that run. */
static void on_services_loaded(void *data, int status, void *result)
{
    struct orch *o = data;
    const struct store_services *sv = result;
    const struct store_service *v = status == 0 && sv ? sv->v : NULL;
    size_t n = v ? sv->n : 0;
    if (status < 0)
        log_error("state: cannot load the services: %s", strerror(-status));
    for (size_t i = 0; i < n; i++) {
        char e[256];
        struct cfg_service *c = cfg_service_from_json(v[i].config, e, sizeof(e));
        if (!c) {
            log_error("state: service %s/%s: %s (skipped)", v[i].project, v[i].service, e);
            continue;
        }
        struct orch_service *s = svc_new(o, v[i].project, v[i].env, v[i].service);
        svc_set_target(s, c, json_incref(v[i].config), v[i].revision);
        s->cfg_replicas = (unsigned)v[i].replicas;
        s->scale_override = v[i].scale_override;
        s->stopped = v[i].stopped;
        s->http_port = v[i].http_port;
        svc_ensure_pool(s);
    }
    struct rt_replica **adopted = NULL;
    size_t na = 0;
    rt_adopt_all(o->rt, &adopted, &na);
    for (size_t i = 0; i < na; i++) {
        const struct rt_spec *sp = rt_spec(adopted[i]);
        struct orch_service *s = svc_find(o, sp->project, sp->service);
        if (!s) {
            log_warn("adopted %s belongs to no deployed service: stopping it", rt_name(adopted[i]));
            rt_stop(adopted[i], orphan_stopped, NULL);
            continue;
        }
        struct orch_replica *r = xcalloc(1, sizeof(*r));
        r->svc = s;
        r->rt = adopted[i];
        r->index = sp->index;
        r->port = sp->port;
        snprintf(r->name, sizeof(r->name), "%s", rt_name(adopted[i]));
        snprintf(r->revision, sizeof(r->revision), "%s", sp->revision ? sp->revision : "");
        r->gen = s->gen;
        const struct cfg_service *rc = s->prev_cfg && strcmp(r->revision, s->prev_revision) == 0
                                           ? s->prev_cfg
                                           : s->cfg;
        if (rc->health.enabled && rc->health.path)
            snprintf(r->health_path, sizeof(r->health_path), "%s", rc->health.path);
        r->started_ms = now_ms(o);
        struct rt_info info;
        rt_inspect(adopted[i], &info);
        r->restarts_at_start = info.restarts;
        rt_set_data(adopted[i], r);
        /* It served before: readmit it as soon as the proxy sees it healthy. */
        rep_set_phase(r, P_STARTING);
        rep_insert_sorted(s, r);
        log_info("adopted %s (pid %d, port %u)", r->name, (int)info.pid, r->port);
    }
    free(adopted);
    char err[256];
    if (orch_sync_listeners(o, err, sizeof(err)) < 0)
        log_error("%s", err);
    for (struct orch_service *s = o->services; s; s = s->next) {
        svc_sync_pool(s);
        /* The data plane outlived the previous takod and kept their health:
         * a replica it sees healthy is ready now, not after re-learning. */
        svc_snapshot(s);
        for (struct orch_replica *r = s->replicas; r; r = r->next) {
            struct proxy_backend_stats st;
            if (r->phase == P_STARTING && backend_stats(s, r->name, &st) && st.healthy &&
                !st.draining) {
                rep_set_phase(r, P_READY);
                r->was_ready = true;
            }
        }
    }
    ev_timer_start(o->loop, &o->tick, ORCH_TICK_MS);
}

int orch_resume(struct orch *o)
{
    /* Nothing runs (no tick) until the store has answered. */
    return store_services_load(o->store, NULL, on_services_loaded, o);
}

void orch_shutdown(struct orch *o)
{
    ev_timer_stop(o->loop, &o->tick);
    while (o->ops) {
        struct orch_op *op = o->ops;
        op->failed = true;
        snprintf(op->fail_msg, sizeof(op->fail_msg),
                 "takod is shutting down; the operation resumes when it starts again");
        op_finish(o, op);
    }
}

void orch_free(struct orch *o)
{
    if (!o)
        return;
    orch_shutdown(o);
    while (o->services) {
        struct orch_service *s = o->services;
        o->services = s->next;
        while (s->replicas) {
            struct orch_replica *r = s->replicas;
            s->replicas = r->next;
            free(r);
        }
        svc_free(s);
    }
    while (o->listeners) {
        struct orch_listener *l = o->listeners;
        o->listeners = l->next;
        free(l);
    }
    free(o);
}

rt_event_cb orch_rt_callback(void) { return on_rt_event; }
