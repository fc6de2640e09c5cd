/* orch_view.c — read-only views of the reconciler for `ps`, `stats`, `logs`. */
#include <string.h>

#include "core/util.h"
#include "store/store.h"
#include "orch/autoscale.h"
#include "orch/orch.h"
#include "orch/orch_internal.h"
#include "proxy/proxy.h"
#include "runtime/rt.h"

static bool matches(const struct orch_service *s, const char *project, const char *env,
                    const char *service)
{
    return (!project || !*project || strcmp(s->project, project) == 0) &&
           (!env || !*env || strcmp(s->env, env) == 0) &&
           (!service || !*service || strcmp(s->name, service) == 0);
}

/* Indexes into the array being sorted, so equal ids keep their order. */
static const struct proxy_backend_stats *g_sort_base;
static int cmp_idx(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    int c = strcmp(g_sort_base[x].id, g_sort_base[y].id);
    return c ? c : (x > y) - (x < y);
}

void orch__stats_sort(struct proxy_backend_stats *v, size_t n)
{
    if (n < 2)
        return;
    size_t *idx = xmalloc(n * sizeof(*idx));
    for (size_t i = 0; i < n; i++)
        idx[i] = i;
    g_sort_base = v; /* the loop thread only */
    qsort(idx, n, sizeof(*idx), cmp_idx);
    struct proxy_backend_stats *tmp = xmalloc(n * sizeof(*tmp));
    for (size_t i = 0; i < n; i++)
        tmp[i] = v[idx[i]];
    memcpy(v, tmp, n * sizeof(*tmp));
    free(tmp);
    free(idx);
}

const struct proxy_backend_stats *orch__find_stats(const struct proxy_backend_stats *v, size_t n,
                                                   const char *id)
{
    /* Lower bound: the first entry of id (the current backend comes before
     * a draining one of the same name). */
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(v[mid].id, id) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < n && strcmp(v[lo].id, id) == 0 ? &v[lo] : NULL;
}

/* "healthy" | "unhealthy" | "starting" | "draining" | "none" (workers) */
static const char *health_of(const struct orch_replica *r, const struct proxy_backend_stats *st)
{
    if (r->phase == P_DRAINING || r->phase == P_STOPPING)
        return "draining";
    if (!r->svc->pool)
        return "none";
    if (!r->svc->cfg->health.enabled)
        return r->phase == P_READY ? "healthy" : "starting";
    if (!st)
        return "starting";
    if (st->healthy)
        return "healthy";
    return st->ever_healthy ? "unhealthy" : "starting";
}

static json_t *replica_json(const struct orch_replica *r, const struct proxy_backend_stats *st)
{
    struct rt_info info;
    rt_info(r->rt, &info);
    json_t *j = json_object();
    json_object_set_new(j, "name", json_string(r->name));
    json_object_set_new(j, "index", json_integer(r->slot));
    json_object_set_new(j, "pid", json_integer(info.pid));
    json_object_set_new(j, "port", json_integer(r->port));
    json_object_set_new(j, "health", json_string(health_of(r, st)));
    json_object_set_new(j, "state", json_string(rt_state_name(info.state)));
    json_object_set_new(j, "phase", json_string(orch_phase_name(r->phase)));
    json_object_set_new(j, "restarts", json_integer(info.restarts));
    json_object_set_new(j, "uptime", json_integer((json_int_t)(info.uptime_ms / 1000)));
    json_object_set_new(j, "uptime_ms", json_integer((json_int_t)info.uptime_ms));
    json_object_set_new(j, "cpu", json_real(info.cpu_percent));
    json_object_set_new(j, "memory", json_integer((json_int_t)info.rss_bytes));
    json_object_set_new(j, "revision", json_string(r->revision));
    json_object_set_new(j, "hostname_shared", json_boolean(info.hostname_shared));
    if (info.last_exit_status >= 0)
        json_object_set_new(j, "last_exit_status", json_integer(info.last_exit_status));
    if (info.last_error[0])
        json_object_set_new(j, "last_error", json_string(info.last_error));
    if (info.backoff_ms)
        json_object_set_new(j, "backoff_ms", json_integer((json_int_t)info.backoff_ms));
    if (st) {
        json_object_set_new(j, "requests", json_integer((json_int_t)st->requests));
        json_object_set_new(j, "inflight", json_integer((json_int_t)st->inflight));
        json_object_set_new(j, "p50_ms", json_real(st->p50_ms));
        json_object_set_new(j, "p99_ms", json_real(st->p99_ms));
        json_object_set_new(j, "status_2xx", json_integer((json_int_t)st->status_2xx));
        json_object_set_new(j, "status_3xx", json_integer((json_int_t)st->status_3xx));
        json_object_set_new(j, "status_4xx", json_integer((json_int_t)st->status_4xx));
        json_object_set_new(j, "status_5xx", json_integer((json_int_t)st->status_5xx));
        json_object_set_new(j, "failures", json_integer((json_int_t)st->failures));
    }
    return j;
}

/* "running" | "degraded" | "stopped" | "scaling" | "deploying" | "crashloop" | "removing" */
static const char *service_status(const struct orch_service *s, unsigned running, unsigned desired,
                                  bool crashloop, bool changing)
{
    if (s->removing)
        return "removing";
    if (crashloop)
        return "crashloop";
    if (desired == 0 && !s->stopped && s->npeers && !changing)
        return "running"; /* its replicas are on the other servers; its balancer serves */
    if (desired == 0)
        return "stopped";
    if (changing && running >= desired)
        return "deploying";
    if (changing)
        return running < desired ? "scaling" : "deploying";
    if (running < desired)
        return running == 0 ? "down" : "degraded";
    return "running";
}

static unsigned desired_of(struct orch_service *s)
{
    if (s->stopped || s->removing)
        return 0;
    if (s->cfg->autoscale.enabled)
        return orch_autoscale_desired(s);
    return s->scale_override >= 0 ? (unsigned)s->scale_override : s->cfg_replicas;
}

json_t *orch_ps(struct orch *o, const char *project, const char *env, const char *service)
{
    json_t *arr = json_array();
    for (struct orch_service *s = o->services; s; s = s->next) {
        if (!matches(s, project, env, service))
            continue;
        struct proxy_backend_stats *st = NULL;
        size_t nst = 0;
        if (s->pool && proxy_pool_stats(s->pool, &st, &nst) == 0)
            orch__stats_sort(st, nst);
        json_t *reps = json_array();
        unsigned running = 0, desired = desired_of(s);
        bool crashloop = false, changing = false;
        for (struct orch_replica *r = s->replicas; r; r = r->next) {
            const struct proxy_backend_stats *b = orch__find_stats(st, nst, r->name);
            json_t *rj = replica_json(r, b);
            const char *h = json_string_value(json_object_get(rj, "health"));
            const char *state = json_string_value(json_object_get(rj, "state"));
            if (r->phase == P_READY && (strcmp(h, "healthy") == 0 || strcmp(h, "none") == 0) &&
                strcmp(state, "running") == 0)
                running++;
            if (strcmp(state, "crashloop") == 0)
                crashloop = true;
            bool current = strcmp(r->revision, s->revision) == 0 && r->gen == s->gen;
            if (!current || r->phase != P_READY || r->index > desired)
                changing = true;
            json_array_append_new(reps, rj);
        }
        if (running > desired)
            running = desired;
        json_t *peers = s->placement ? orch__peers_json(s, st, nst) : NULL;
        proxy_pool_stats_free(st);
        json_t *j = json_object();
        json_object_set_new(j, "project", json_string(s->project));
        json_object_set_new(j, "env", json_string(s->env));
        json_object_set_new(j, "service", json_string(s->name));
        json_object_set_new(j, "revision", json_string(s->revision));
        json_object_set_new(j, "running", json_integer(running));
        json_object_set_new(j, "desired", json_integer(desired));
        json_object_set_new(j, "config_replicas", json_integer(s->cfg_replicas));
        if (s->scale_override >= 0)
            json_object_set_new(j, "scale_override", json_integer(s->scale_override));
        json_object_set_new(j, "status",
                            json_string(service_status(s, running, desired, crashloop, changing)));
        json_object_set_new(j, "stopped", json_boolean(s->stopped));
        json_object_set_new(j, "strategy", json_string(cfg_lb_name(s->cfg->lb_strategy)));
        json_t *ports = json_array();
        if (s->cfg->proxy.port)
            json_array_append_new(ports, json_integer(s->cfg->proxy.port));
        if (s->pool && s->http_port)
            json_array_append_new(ports, json_integer(s->http_port));
        json_object_set_new(j, "ports", ports);
        json_t *domains = json_array();
        for (size_t d = 0; d < s->cfg->proxy.domains_len; d++)
            json_array_append_new(domains, json_string(s->cfg->proxy.domains[d]));
        json_object_set_new(j, "domains", domains);
        if (peers)
            json_object_set_new(j, "peers", peers);
        if (s->cfg->autoscale.enabled)
            json_object_set_new(j, "autoscale", orch_autoscale_view(s));
        json_object_set_new(j, "replicas", reps);
        json_array_append_new(arr, j);
    }
    return arr;
}

json_t *orch_stats(struct orch *o, const char *project, const char *env, const char *service)
{
    /* The same per-replica data as ps; the CLI shows other columns. */
    return orch_ps(o, project, env, service);
}

json_t *orch_replica_names(struct orch *o, const char *project, const char *env,
                           const char *service)
{
    json_t *arr = json_array();
    for (struct orch_service *s = o->services; s; s = s->next) {
        if (!matches(s, project, env, service))
            continue;
        for (struct orch_replica *r = s->replicas; r; r = r->next)
            json_array_append_new(arr, json_string(r->name));
    }
    return arr;
}

json_t *orch_autoscale_list(struct orch *o, const char *project, const char *env,
                            const char *service)
{
    json_t *arr = json_array();
    for (struct orch_service *s = o->services; s; s = s->next) {
        if (!matches(s, project, env, service) || !s->cfg->autoscale.enabled)
            continue;
        json_t *j = orch_autoscale_view(s);
        json_object_set_new(j, "project", json_string(s->project));
        json_object_set_new(j, "service", json_string(s->name));
        unsigned running = 0;
        for (struct orch_replica *r = s->replicas; r; r = r->next)
            if (r->phase == P_READY)
                running++;
        json_object_set_new(j, "running", json_integer(running));
        /* A store that answers later leaves the list empty this time. */
        struct store_result er = {0};
        store_events_list(o->store, s->project, s->name, "autoscale", 20, store_keep_json, &er);
        json_object_set_new(j, "events", er.json ? er.json : json_array());
        json_array_append_new(arr, j);
    }
    return arr;
}

json_t *orch_tls_wanted(struct orch *o)
{
    json_t *arr = json_array();
    for (struct orch_service *s = o->services; s; s = s->next) {
        const struct cfg_proxy *px = &s->cfg->proxy;
        if (s->removing || !s->pool || !cfg_proxy_https(px))
            continue;
        json_t *j = json_pack("{s:s,s:s,s:s}", "project", s->project, "env", s->env, "service",
                              s->name);
        json_t *doms = json_array();
        for (size_t d = 0; d < px->domains_len; d++)
            json_array_append_new(doms, json_string(px->domains[d]));
        json_object_set_new(j, "domains", doms);
        if (px->tls_cert) {
            json_object_set_new(j, "cert", json_string(px->tls_cert));
            json_object_set_new(j, "key", json_string(px->tls_key));
        } else {
            json_object_set_new(j, "email", json_string(px->email));
            if (px->acme)
                json_object_set_new(j, "acme", json_string(px->acme));
        }
        json_array_append_new(arr, j);
    }
    return arr;
}

void orch_visit(struct orch *o, const struct orch_visitor *v, void *data, bool with_stats)
{
    for (struct orch_service *s = o->services; s; s = s->next) {
        struct orch_service_view sv = {
            .project = s->project,
            .env = s->env,
            .name = s->name,
            .strategy = cfg_lb_name(s->cfg->lb_strategy),
            .revision = s->revision,
            .desired = desired_of(s),
            .has_pool = s->pool != NULL,
            .autoscaled = s->cfg->autoscale.enabled,
            .autoscale_min = s->cfg->autoscale.min,
            .autoscale_max = s->cfg->autoscale.max,
            .autoscale_recommended = -1,
        };
        if (sv.autoscaled) {
            json_t *as = orch_autoscale_view(s);
            json_t *last = json_object_get(as, "last");
            json_t *raw = json_object_get(last, "raw");
            if (!json_is_integer(raw))
                raw = json_object_get(as, "desired");
            if (json_is_integer(raw))
                sv.autoscale_recommended = (int)json_integer_value(raw);
            json_decref(as);
        }
        /* First pass: readiness and status, as `ps` counts them. */
        unsigned ready = 0;
        bool crashloop = false, changing = false;
        for (struct orch_replica *r = s->replicas; r; r = r->next) {
            struct rt_info info;
            rt_inspect(r->rt, &info);
            const struct proxy_backend_stats *b = orch__find_stats(s->snap, s->nsnap, r->name);
            const char *h = health_of(r, b);
            if (r->phase == P_READY && (strcmp(h, "healthy") == 0 || strcmp(h, "none") == 0) &&
                info.state == RT_RUNNING)
                ready++;
            if (info.state == RT_CRASHLOOP)
                crashloop = true;
            if (strcmp(r->revision, s->revision) != 0 || r->gen != s->gen ||
                r->phase != P_READY || r->index > sv.desired)
                changing = true;
        }
        sv.ready = ready > sv.desired ? sv.desired : ready;
        sv.status = service_status(s, sv.ready, sv.desired, crashloop, changing);
        if (v->service)
            v->service(data, &sv);
        if (!v->replica)
            continue;
        for (struct orch_replica *r = s->replicas; r; r = r->next) {
            /* Two replicas of one name (old draining, new starting) are one
             * series: report the name once, with every backend instance. */
            bool dup = false;
            for (struct orch_replica *q = s->replicas; q != r; q = q->next)
                if (strcmp(q->name, r->name) == 0)
                    dup = true;
            if (dup)
                continue;
            struct orch_replica *shown = r;
            for (struct orch_replica *q = r->next; q; q = q->next)
                if (strcmp(q->name, r->name) == 0 && q->phase <= P_READY)
                    shown = q; /* the live one speaks for the name */
            struct rt_info info;
            if (with_stats)
                rt_info(shown->rt, &info);
            else
                rt_inspect(shown->rt, &info);
            struct orch_replica_view rv = {
                .name = shown->name,
                .index = shown->slot,
                .phase = orch_phase_name(shown->phase),
                .revision = shown->revision,
                .rt = &info,
            };
            for (size_t i = 0; i < s->nsnap && rv.nbackends < ARRAY_LEN(rv.backends); i++)
                if (strcmp(s->snap[i].id, r->name) == 0)
                    rv.backends[rv.nbackends++] = &s->snap[i];
            rv.health = health_of(shown, orch__find_stats(s->snap, s->nsnap, shown->name));
            v->replica(data, &sv, &rv);
        }
    }
}
