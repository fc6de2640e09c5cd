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

uint64_t orch__now(struct orch *o)
{
    return o->clock ? o->clock(o->clock_data) : ev_now(o->loop);
}

unsigned orch__desired(struct orch_service *s)
{
    if (s->stopped || s->removing)
        return 0;
    if (s->cfg->autoscale.enabled)
        return orch_autoscale_desired(s);
    if (s->scale_override >= 0)
        return (unsigned)s->scale_override;
    return s->cfg_replicas;
}

bool orch__rep_current(const struct orch_service *s, const struct orch_replica *r)
{
    return strcmp(r->revision, s->revision) == 0 && r->gen == s->gen;
}

bool orch__rep_active(const struct orch_replica *r)
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
void orch__report(struct orch_service *s, const char *level, const char *kind, const char *fmt,
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

struct orch_service *orch__svc_find(struct orch *o, const char *project, const char *name)
{
    for (struct orch_service *s = o->services; s; s = s->next)
        if (strcmp(s->project, project) == 0 && strcmp(s->name, name) == 0)
            return s;
    return NULL;
}

void orch__persist(struct orch_service *s)
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
    st.placement = s->placement;
    store_service_save(s->o->store, &st, NULL, NULL);
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
    r->phase_ms = orch__now(r->svc->o);
}

static void svc_maybe_finish_removal(struct orch_service *s);
static void svc_start_failed(struct orch_service *s, struct orch_replica *r, const char *name,
                             const char *why);

static void rep_stopped(struct rt_replica *rr, void *data)
{
    struct orch_replica *r = data;
    struct orch_service *s = r->svc;
    (void)rr;
    orch__report(s, "info", "stopped", "stopped %s", r->name);
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
    orch__report(s, "info", "draining", "draining %s (%s)", r->name, why);
    orch__sync_pool(s);
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
    /* Named by the environment-wide slot, so names stay unique across servers. */
    r->slot = orch__slot(s, index);
    snprintf(r->name, sizeof(r->name), "%.60s-%.60s-%u", s->project, s->name, r->slot);
    r->port = c->port ? rep_free_port(o) : 0;
    if (c->port && !r->port) {
        const char *band = getenv("TAKO_REPLICA_PORTS");
        char name[128], why[300];
        snprintf(name, sizeof(name), "%s", r->name);
        snprintf(why, sizeof(why), "cannot start: no free port%s%s",
                 band ? " in TAKO_REPLICA_PORTS " : "", band ? band : "");
        free(r);
        svc_start_failed(s, NULL, name, why);
        return NULL;
    }
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
        .index = r->slot,
        .revision = s->revision,
        .image = c->image,
        .build_dir = c->build,
        .network = c->network && strcmp(c->network, "bridge") == 0 ? c->network : NULL,
        .app_port = (uint16_t)c->port,
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
    r->started_ms = orch__now(o);
    rep_set_phase(r, P_STARTING);
    rep_insert_sorted(s, r);
    orch__report(s, "info", "starting", "starting %s (revision %s, port %u)", r->name, s->revision,
           r->port);
    orch__sync_pool(s);
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
    if (orch__rep_current(r->svc, r))
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
 * and roll back to the previous target, if there is one that has not just
 * failed itself. When the previous revision is the one an automatic
 * rollback left because it failed, rolling back to it would swap the two
 * for ever: the target stays (the revision that served before the deploy,
 * as it is the one rolled back to) and its replica is left to the runtime's
 * restart backoff, reported once. */
static void svc_start_failed(struct orch_service *s, struct orch_replica *r, const char *name,
                             const char *why)
{
    if (r && r->crashloop)
        return;
    char lines[2048] = "";
    if (r)
        last_lines(r, lines, sizeof(lines));
    orch__report(s, "error", "unhealthy", "%s of revision %s failed: %s", name, s->revision, why);
    if (lines[0])
        orch__report(s, "error", NULL, "last output of %s:\n%s", name, lines);
    struct orch_op *op = op_of(s->o, s->project);
    if (op && !op->failed) {
        op->failed = true;
        snprintf(op->fail_msg, sizeof(op->fail_msg), "%s of revision %s failed: %s", name,
                 s->revision, why);
    }
    bool has_prev = s->prev_cfg && strcmp(s->prev_revision, s->revision) != 0;
    bool prev_failed = has_prev && strcmp(s->prev_revision, s->failed_revision) == 0;
    if (has_prev && prev_failed && r) {
        r->crashloop = true;
        orch__report(s, "error", "unhealthy",
                     "revision %s fails too, like %s before it: %s stays on revision %s in "
                     "crash-loop backoff (no further rollback)",
                     s->revision, s->prev_revision, s->name, s->revision);
        if (op) {
            size_t l = strlen(op->fail_msg);
            if (op->rolling_back)
                snprintf(op->fail_msg + l, sizeof(op->fail_msg) - l,
                         "; rolled back to revision %s, but the previous revision fails too "
                         "(%s: %s): %s stays on it in crash-loop backoff",
                         s->revision, name, why, s->name);
            else
                snprintf(op->fail_msg + l, sizeof(op->fail_msg) - l,
                         "; revision %s failed before it: %s stays on revision %s in "
                         "crash-loop backoff",
                         s->prev_revision, s->name, s->revision);
            op->rolling_back = false;
        }
        return;
    }
    if (r)
        rep_stop(r);
    if (has_prev && !prev_failed) {
        orch__report(s, "warn", "rollback", "rolling back from revision %s to %s", s->revision,
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
        snprintf(s->failed_revision, sizeof(s->failed_revision), "%s", rev);
        if (op)
            op->rolling_back = true;
        orch__ensure_pool(s);
        orch__persist(s);
    } else if (!s->stopped) {
        /* Nothing (working) to go back to, and no replica to retry: leave
         * the service stopped, not restarting it every tick. */
        if (has_prev) {
            orch__report(s, "warn", NULL, "revision %s failed before it: %s stays stopped",
                         s->prev_revision, s->name);
            if (op) {
                size_t l = strlen(op->fail_msg);
                snprintf(op->fail_msg + l, sizeof(op->fail_msg) - l,
                         "; revision %s failed before it: %s stays stopped", s->prev_revision,
                         s->name);
                op->rolling_back = false;
            }
        } else {
            orch__report(s, "warn", NULL, "no previous revision to roll back to: %s stays stopped",
                         s->name);
        }
        s->stopped = true;
        orch__persist(s);
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
    uint64_t now = orch__now(s->o);
    uint64_t quiet = h->start_period_ms + (h->interval_ms + h->timeout_ms) * (h->unhealthy_threshold + 1);
    if (!st.healthy && st.consecutive_failures >= h->unhealthy_threshold &&
        info->uptime_ms > h->start_period_ms && now - r->liveness_ms > quiet) {
        r->liveness_ms = now;
        orch__report(s, "warn", "liveness", "%s failed %u health checks in a row: restarting it",
               r->name, st.consecutive_failures);
        rt_restart(r->rt);
    }
}

/* ---- the reconcile step of one service ---- */

bool orch__converged(struct orch_service *s)
{
    unsigned n = orch__desired(s), ready = 0;
    for (struct orch_replica *r = s->replicas; r; r = r->next) {
        if (!orch__rep_current(s, r) || r->phase != P_READY || r->index > n || r->index == 0)
            return false;
        ready++;
    }
    return ready == n;
}

/* A starting replica: it failed (of the target revision, that fails the
 * operation), became ready, failed its first health checks, or ran out of
 * time. */
static void observe_starting(struct orch_service *s, const struct cfg_service *c,
                             struct orch_replica *r, const struct rt_info *info, uint64_t now)
{
    bool failed = info->state == RT_FAILED || info->state == RT_EXITED ||
                  info->state == RT_CRASHLOOP || info->state == RT_BACKOFF ||
                  info->restarts > r->restarts_at_start;
    if (r->crashloop && orch__rep_current(s, r)) {
        /* Left to the runtime's backoff: only a run that becomes ready counts. */
        if (info->state != RT_RUNNING || !rep_ready(r, info))
            return;
    } else if (failed) {
        char why[400];
        if (info->last_error[0])
            snprintf(why, sizeof(why), "%s", info->last_error);
        else
            snprintf(why, sizeof(why), "exited (%s)", rt_state_name(info->state));
        rep_start_failed(r, why);
        return;
    }
    if (rep_ready(r, info)) {
        rep_set_phase(r, P_READY);
        r->was_ready = true;
        r->crashloop = false;
        char d[32];
        fmt_duration(now - r->started_ms, d, sizeof(d));
        orch__report(s, "info", "ready", "%s is healthy (%s)", r->name, d);
        return;
    }
    /* A new replica that never passed is given up on no sooner than
     * unhealthy_threshold checks at the configured interval would take: the
     * balancer checks a backend that is not up yet more often (to bring it
     * in fast), which must not make a slow-starting app fail sooner. */
    struct proxy_backend_stats st;
    uint64_t grace =
        c->health.start_period_ms + (uint64_t)c->health.unhealthy_threshold * c->health.interval_ms;
    if (s->pool && backend_stats(s, r->name, &st) && !st.ever_healthy &&
        st.consecutive_failures >= c->health.unhealthy_threshold && now - r->started_ms > grace) {
        char why[128];
        snprintf(why, sizeof(why), "failed %u health checks on %s without passing one",
                 st.consecutive_failures, c->health.path);
        rep_start_failed(r, why);
        return;
    }
    /* Still being prepared by its driver (an image build): the health
     * deadline starts when the app runs; the driver bounds the preparation
     * itself. */
    if (info->state != RT_STARTING && now - r->started_ms > start_deadline_ms(c))
        rep_start_failed(r, "did not become healthy in time");
}

/* 1. Observe: what each replica's runtime and the pool's counters say. */
static void svc_observe(struct orch_service *s, const struct cfg_service *c, uint64_t now)
{
    svc_snapshot(s);
    for (struct orch_replica *r = s->replicas, *next; r; r = next) {
        next = r->next;
        struct rt_info info;
        rt_inspect(r->rt, &info); /* no stats: this runs for every replica every tick */
        if (r->phase == P_STARTING) {
            observe_starting(s, c, r, &info, now);
        } else if (r->phase == P_READY) {
            rep_liveness(r, &info);
        } else if (r->phase == P_DRAINING) {
            struct proxy_backend_stats st;
            bool idle = !backend_stats(s, r->name, &st) || st.inflight == 0;
            if (idle || now - r->phase_ms >= c->deploy.drain_timeout_ms)
                rep_stop(r);
        }
    }
}

/* 2. Decide the next safe step towards n replicas of the target (c and n
 * as they were before this tick's observations, which may have rolled the
 * target back). */
static void svc_decide(struct orch_service *s, const struct cfg_service *c, unsigned n)
{
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
        if (orch__rep_active(r) && !orch__rep_current(s, r))
            old_active++;
        if (orch__rep_active(r) && r->index > n)
            surge_active++;
        if (r->phase == P_DRAINING || r->phase == P_STOPPING)
            busy_slot_transition = true;
    }

    bool recreate = c->deploy.strategy == CFG_DEPLOY_RECREATE;
    if (recreate && old_active > 0) {
        for (struct orch_replica *r = s->replicas; r; r = r->next)
            if (orch__rep_active(r) && !orch__rep_current(s, r))
                rep_drain(r, "recreate");
        return;
    }
    if (recreate && busy_slot_transition) {
        bool old_left = false;
        for (struct orch_replica *r = s->replicas; r; r = r->next)
            if (!orch__rep_current(s, r))
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
            if (orch__rep_active(r) && !orch__rep_current(s, r) && r->index <= n) {
                victim = r;
                break;
            }
        if (victim) {
            BUG_ON(victim->index > n || orch__rep_current(s, victim));
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
            if (orch__rep_current(s, r) && r->phase == P_READY)
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
            if (orch__rep_active(r) && (r->index > n || !orch__rep_current(s, r)))
                excess[ne++] = r;
        while (ne > 0)
            rep_drain(excess[--ne], n == 0 ? "stopping" : "scaling down");
        free(excess);
    }
    orch__sync_pool(s);
}

static void svc_reconcile(struct orch_service *s)
{
    const struct cfg_service *c = s->cfg;
    unsigned n = orch__desired(s);
    svc_observe(s, c, orch__now(s->o));
    svc_decide(s, c, n);
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
    orch__placement_set(s, NULL);
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
    orch__sync_listeners(o, err, sizeof(err));
    store_service_delete(o->store, s->project, s->env, s->name, NULL, NULL);
    orch__report(s, "info", "removed", "removed %s", s->name);
    svc_free(s);
}

/* ---- the tick ---- */

/* A replica of the target is left in crash-loop backoff: the operation
 * has failed and waits for nothing more. */
static bool svc_crashlooping(const struct orch_service *s)
{
    for (const struct orch_replica *r = s->replicas; r; r = r->next)
        if (r->crashloop && r->phase == P_STARTING && orch__rep_current(s, r))
            return true;
    return false;
}

/* Every service the operation touched has converged, is gone, or is left
 * crash-looping. */
static bool project_settled(struct orch *o, const char *project)
{
    for (struct orch_service *s = o->services; s; s = s->next)
        if (strcmp(s->project, project) == 0 && s->in_op && (s->removing || !orch__converged(s)) &&
            !svc_crashlooping(s))
            return false;
    return true;
}

void orch__tick(struct orch *o)
{
    uint64_t now = orch__now(o);
    for (struct orch_service *s = o->services, *next; s; s = next) {
        next = s->next;
        if (s->cfg->autoscale.enabled) {
            unsigned before = orch__desired(s);
            if (orch_autoscale_eval(s, now))
                log_info("%s/%s: autoscale %u → %u replicas", s->project, s->name, before,
                         orch__desired(s));
        }
        svc_reconcile(s);
    }
    orch__flush_pools(o);
    for (struct orch_op *op = o->ops, *next; op; op = next) {
        next = op->next;
        if (project_settled(o, op->project))
            orch__op_finish(o, op);
    }
    orch__ops_renew(o, now);
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
        r->started_ms = orch__now(s->o);
        orch__sync_pool(s);
    }
    if (new_state == RT_BACKOFF || new_state == RT_CRASHLOOP) {
        struct rt_info info;
        rt_inspect(rr, &info);
        orch__report(s, NULL, "crash", "%s exited (%s); restart %u in %llums", r->name,
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
        orch__report(r->svc, "info", NULL, "%s: %s", r->name, line);
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
    ev_timer_init(&o->flush, orch__on_flush, o);
    return o;
}

static void orphan_stopped(struct rt_replica *rr, void *data)
{
    (void)data;
    rt_forget(rr);
}

/* The services as stored: targets first, then the replicas that run. */
/* Whether a deployed service runs on the driver (adoption warns only then). */
static bool runtime_in_use(const char *driver, void *data)
{
    struct orch *o = data;
    for (struct orch_service *s = o->services; s; s = s->next)
        if (s->cfg && s->cfg->runtime && strcmp(s->cfg->runtime, driver) == 0)
            return true;
    return false;
}

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
        struct orch_service *s = orch__svc_new(o, v[i].project, v[i].env, v[i].service);
        orch__set_target(s, c, json_incref(v[i].config), v[i].revision);
        s->cfg_replicas = (unsigned)v[i].replicas;
        s->scale_override = v[i].scale_override;
        s->stopped = v[i].stopped;
        s->http_port = v[i].http_port;
        orch__placement_set(s, json_is_object(v[i].placement) ? json_incref(v[i].placement) : NULL);
        orch__ensure_pool(s);
    }
    struct rt_replica **adopted = NULL;
    size_t na = 0;
    rt_adopt_all(o->rt, runtime_in_use, o, &adopted, &na);
    for (size_t i = 0; i < na; i++) {
        const struct rt_spec *sp = rt_spec(adopted[i]);
        struct orch_service *s = orch__svc_find(o, sp->project, sp->service);
        if (!s) {
            log_warn("adopted %s belongs to no deployed service: stopping it", rt_name(adopted[i]));
            rt_stop(adopted[i], orphan_stopped, NULL);
            continue;
        }
        struct orch_replica *r = xcalloc(1, sizeof(*r));
        r->svc = s;
        r->rt = adopted[i];
        r->slot = sp->index; /* the runtime knows replicas by the number in their name */
        r->index = orch__local_index(s, r->slot);
        r->port = sp->port;
        snprintf(r->name, sizeof(r->name), "%s", rt_name(adopted[i]));
        snprintf(r->revision, sizeof(r->revision), "%s", sp->revision ? sp->revision : "");
        r->gen = s->gen;
        const struct cfg_service *rc = s->prev_cfg && strcmp(r->revision, s->prev_revision) == 0
                                           ? s->prev_cfg
                                           : s->cfg;
        if (rc->health.enabled && rc->health.path)
            snprintf(r->health_path, sizeof(r->health_path), "%s", rc->health.path);
        r->started_ms = orch__now(o);
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
    if (orch__sync_listeners(o, err, sizeof(err)) < 0)
        log_error("%s", err);
    for (struct orch_service *s = o->services; s; s = s->next) {
        orch__push_pool(s); /* now: the snapshot below reads the set back */
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
    orch__flush_pools(o);
    while (o->ops) {
        struct orch_op *op = o->ops;
        op->failed = true;
        snprintf(op->fail_msg, sizeof(op->fail_msg),
                 "takod is shutting down; the operation resumes when it starts again");
        orch__op_finish(o, op);
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
    orch__peer_listeners_free(o);
    free(o);
}

rt_event_cb orch_rt_callback(void) { return on_rt_event; }
