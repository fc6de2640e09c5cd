/* obs.c — counter totals, the Prometheus / OpenMetrics exposition and the
 * dashboard's state of takod (see obs.h; listeners in obs_http.c). */
#include "daemon/obs.h"
#include "daemon/obs_total.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/ev.h"
#include "core/log.h"
#include "core/util.h"
#include "daemon/home.h"
#include "orch/orch.h"
#include "proxy/proxy.h"
#include "runtime/rt.h"
#include "runtime/rt_proc.h"
#include "store/store.h"

#define OBS_SAMPLE_MS 500     /* health transitions and rates are seen this often */
#define OBS_SAVE_MS 30000     /* totals saved at least this often when they moved */
#define OBS_STATE_MIN_MS 250  /* one dashboard state shared by clients polling at once */
#define OBS_RING 64           /* one slot a second: the last minute of rates */
#define OBS_HRING 8           /* one slot each 10 s: latency over the last minute */
#define OBS_TIMELINE 60
#define OBS_KV_TOTALS "metrics.totals"
#define OBS_KV_LISTEN "metrics.listen."

/* Proxy counters of a replica, in one array so totals are kept uniformly. */
enum {
    C_REQ1, /* C_REQ1 + k: status class k+1 */
    C_REQ5 = C_REQ1 + 4,
    C_FAIL,
    C_RETRY,
    C_HTRANS,
    C_LAT_US,
    C_HIST,
    C_NPROXY = C_HIST + PROXY_HIST_BUCKETS,
};
_Static_assert(C_NPROXY <= OBS_MAXC, "a replica's proxy counters fit one total");

/* Runtime counters of a replica. */
enum { R_RESTARTS, R_CPU_US, R_N };

struct obs_slot {
    uint64_t sec;
    uint64_t req, err;
};
struct obs_hslot {
    uint64_t tick; /* 10 s periods */
    uint64_t h[PROXY_HIST_BUCKETS];
};

struct obs_rep {
    char project[64], env[64], service[64], name[128];
    struct obs_total px, rt;
    /* the last visit */
    bool present, has_pool;
    uint64_t present_ms;
    char health[16], phase[16], state[16], revision[64];
    unsigned index;
    uint64_t inflight, rss;
    uint64_t log_dropped; /* lines its supervisor could not log (a full disk) */
    double cpu_pct;
    struct obs_slot ring[OBS_RING];
    struct obs_hslot hring[OBS_HRING];
    struct obs_rep *next;
};

struct obs_svc {
    char project[64], env[64], name[64], strategy[32], status[16], revision[64];
    unsigned desired, ready, as_min, as_max;
    int as_rec;
    bool autoscaled, has_pool, present;
    struct obs_svc *next;
};

struct obs_lis {
    char addr[64];
    struct obs_total acc;
    unsigned open;
    bool present;
    struct obs_lis *next;
};

struct obs_bind {
    char project[64], env[64];
    char addr[64];
    char *token;
    char where[512];
    struct obs_http *http; /* shared by bindings of one address */
    struct obs_bind *next;
};

struct obs {
    struct ev_loop *loop;
    struct orch *orch;
    struct proxy *proxy;
    struct store *store;
    struct ev_timer timer;
    struct obs_rep *reps;
    struct obs_svc *svcs;
    struct obs_lis *lis;
    /* TLS handshakes of the data plane (T_* counters), totalled across its
     * processes; shown once HTTPS exists (a certificate or a handshake). */
    struct obs_total tls;
    unsigned tls_certs;
    struct obs_bind *binds;
    bool dirty;
    uint64_t saved_ms, now_ms;
    struct obs_buf *state;
    uint64_t state_ms;
    char host[256];
};

/* ---- the model: replicas, services, listeners ---- */

enum { T_OK, T_RESUMED, T_FAILED, T_NOCERT, T_PLAIN, T_NOTTLS, T_COUNT };

static struct obs_rep *rep_get(struct obs *m, const char *project, const char *env,
                               const char *service, const char *name)
{
    for (struct obs_rep *r = m->reps; r; r = r->next)
        if (strcmp(r->name, name) == 0 && strcmp(r->service, service) == 0 &&
            strcmp(r->project, project) == 0 && strcmp(r->env, env) == 0)
            return r;
    struct obs_rep *r = xcalloc(1, sizeof(*r));
    snprintf(r->project, sizeof(r->project), "%s", project);
    snprintf(r->env, sizeof(r->env), "%s", env);
    snprintf(r->service, sizeof(r->service), "%s", service);
    snprintf(r->name, sizeof(r->name), "%s", name);
    r->px.n = C_NPROXY;
    r->rt.n = R_N;
    /* keep the list in name order within a service: new ones go last */
    struct obs_rep **pp = &m->reps;
    while (*pp)
        pp = &(*pp)->next;
    *pp = r;
    return r;
}

static struct obs_svc *svc_get(struct obs *m, const char *project, const char *env,
                               const char *name)
{
    struct obs_svc **pp = &m->svcs;
    for (; *pp; pp = &(*pp)->next)
        if (strcmp((*pp)->name, name) == 0 && strcmp((*pp)->project, project) == 0 &&
            strcmp((*pp)->env, env) == 0)
            return *pp;
    struct obs_svc *s = xcalloc(1, sizeof(*s));
    snprintf(s->project, sizeof(s->project), "%s", project);
    snprintf(s->env, sizeof(s->env), "%s", env);
    snprintf(s->name, sizeof(s->name), "%s", name);
    *pp = s;
    return s;
}

static struct obs_lis *lis_get(struct obs *m, const char *addr)
{
    struct obs_lis **pp = &m->lis;
    for (; *pp; pp = &(*pp)->next)
        if (strcmp((*pp)->addr, addr) == 0)
            return *pp;
    struct obs_lis *l = xcalloc(1, sizeof(*l));
    snprintf(l->addr, sizeof(l->addr), "%s", addr);
    l->acc.n = 1;
    *pp = l;
    return l;
}

static void ring_put(struct obs_rep *r, uint64_t now_ms)
{
    uint64_t sec = now_ms / 1000;
    uint64_t req = 0;
    for (int c = 0; c < 5; c++)
        req += obs_total_get(&r->px, C_REQ1 + (size_t)c);
    uint64_t err = obs_total_get(&r->px, C_REQ5) + obs_total_get(&r->px, C_FAIL);
    struct obs_slot *s = &r->ring[sec % OBS_RING];
    if (s->sec != sec) {
        s->sec = sec;
        s->req = req;
        s->err = err;
    }
    uint64_t tick = sec / 10;
    struct obs_hslot *h = &r->hring[tick % OBS_HRING];
    if (h->tick != tick) {
        h->tick = tick;
        for (size_t b = 0; b < PROXY_HIST_BUCKETS; b++)
            h->h[b] = obs_total_get(&r->px, C_HIST + b);
    }
}

/* The oldest slot of the last `window` seconds (the baseline of a rate). */
static const struct obs_slot *ring_since(const struct obs_rep *r, uint64_t now_ms,
                                         uint64_t window)
{
    uint64_t sec = now_ms / 1000;
    const struct obs_slot *best = NULL;
    for (size_t i = 0; i < OBS_RING; i++) {
        const struct obs_slot *s = &r->ring[i];
        if (!s->sec || s->sec + window < sec || s->sec > sec)
            continue;
        if (!best || s->sec < best->sec)
            best = s;
    }
    return best;
}

struct visit_ctx {
    struct obs *m;
    bool with_stats;
};

static void on_service(void *data, const struct orch_service_view *v)
{
    struct visit_ctx *x = data;
    struct obs_svc *s = svc_get(x->m, v->project, v->env, v->name);
    snprintf(s->strategy, sizeof(s->strategy), "%s", v->strategy);
    snprintf(s->status, sizeof(s->status), "%s", v->status);
    snprintf(s->revision, sizeof(s->revision), "%s", v->revision);
    s->desired = v->desired;
    s->ready = v->ready;
    s->autoscaled = v->autoscaled;
    s->as_min = v->autoscale_min;
    s->as_max = v->autoscale_max;
    s->as_rec = v->autoscale_recommended;
    s->has_pool = v->has_pool;
    s->present = true;
}

static bool health_shown(const char *h)
{
    return strcmp(h, "healthy") == 0 || strcmp(h, "unhealthy") == 0;
}

static void on_replica(void *data, const struct orch_service_view *sv,
                       const struct orch_replica_view *v)
{
    struct visit_ctx *x = data;
    struct obs *m = x->m;
    struct obs_rep *r = rep_get(m, sv->project, sv->env, sv->name, v->name);
    uint64_t now = m->now_ms;
    r->inflight = 0;
    for (size_t i = 0; i < v->nbackends; i++) {
        const struct proxy_backend_stats *b = v->backends[i];
        uint64_t c[C_NPROXY];
        c[C_REQ1] = 0; /* 1xx is not in the API's classes: upgrades are counted as 1xx there */
        c[C_REQ1 + 1] = b->status_2xx;
        c[C_REQ1 + 2] = b->status_3xx;
        c[C_REQ1 + 3] = b->status_4xx;
        c[C_REQ1 + 4] = b->status_5xx;
        uint64_t classed = b->status_2xx + b->status_3xx + b->status_4xx + b->status_5xx;
        if (b->requests > classed + b->status_none)
            c[C_REQ1] = b->requests - classed - b->status_none;
        c[C_FAIL] = b->failures;
        c[C_RETRY] = b->retries;
        c[C_HTRANS] = b->health_transitions;
        c[C_LAT_US] = (uint64_t)llround(b->latency_sum_s * 1e6);
        for (size_t k = 0; k < PROXY_HIST_BUCKETS; k++)
            c[C_HIST + k] = b->hist[k];
        /* the counting proxy's identity comes with its numbers: a data
         * plane restarted between two looks cannot be mistaken for the old */
        uint64_t id = obs_fnv(b->instance ^ 0x9e3779b97f4a7c15ull, b->addr);
        if (obs_total_feed(&r->px, id, c, now))
            m->dirty = true;
        r->inflight += b->inflight;
    }
    const struct rt_info *ri = v->rt;
    if (ri->supervisor_pid || ri->instance_id) {
        uint64_t c[R_N] = {ri->restarts, (uint64_t)llround(ri->cpu_seconds * 1e6)};
        char key[192];
        /* what the driver counts in: a process's supervisor, a container
         * replica's account (its containers come and go) */
        if (ri->supervisor_pid)
            snprintf(key, sizeof(key), "%d/%s", (int)ri->supervisor_pid, ri->name);
        else
            snprintf(key, sizeof(key), "i%llu/%s", (unsigned long long)ri->instance_id,
                     ri->name);
        if (obs_total_feed(&r->rt, obs_fnv(0, key), c, now))
            m->dirty = true;
    }
    /* health transitions for the timeline: between healthy and unhealthy,
     * as the dashboard shows them */
    if (health_shown(v->health) && health_shown(r->health) &&
        strcmp(v->health, r->health) != 0) {
        char msg[256];
        snprintf(msg, sizeof(msg), "%s is %s", r->name, v->health);
        json_t *ev = json_pack("{s:s, s:s}", "replica", r->name, "health", v->health);
        store_event(m->store, sv->project, sv->name, "health", msg, ev, NULL, NULL);
        json_decref(ev);
    }
    snprintf(r->health, sizeof(r->health), "%s", v->health);
    snprintf(r->phase, sizeof(r->phase), "%s", v->phase);
    snprintf(r->state, sizeof(r->state), "%s", rt_state_name(ri->state));
    snprintf(r->revision, sizeof(r->revision), "%s", v->revision);
    r->index = v->index;
    if (x->with_stats) {
        r->cpu_pct = ri->cpu_percent;
        r->rss = ri->rss_bytes;
        /* Read when someone reads the metrics, not on every pass: one
         * small file per replica of the process driver. */
        uint64_t nd = 0;
        const char *home = tako_home();
        if (strcmp(ri->driver, "process") == 0 && home &&
            rt_proc_log_dropped(home, ri->name, &nd) == 0)
            r->log_dropped = nd;
    }
    r->has_pool = sv->has_pool;
    r->present = true;
    r->present_ms = now;
    ring_put(r, now);
}

/* One pass over the reconciler and the proxy's listeners. O(replicas).
 * with_stats: CPU and memory too (what a reader shows); the timer's passes
 * (rates, health transitions) leave them as last seen. */
static void sample_ex(struct obs *m, bool with_stats)
{
    m->now_ms = ev_time_ms();
    for (struct obs_rep *r = m->reps; r; r = r->next)
        r->present = false;
    for (struct obs_svc *s = m->svcs; s; s = s->next)
        s->present = false;
    struct visit_ctx x = {.m = m, .with_stats = with_stats};
    static const struct orch_visitor vis = {on_service, on_replica};
    orch_visit(m->orch, &vis, &x, with_stats);
    /* A service gone from the reconciler (down, pruned) takes its replicas'
     * totals with it; a new deployment of that name starts from zero. */
    for (struct obs_svc **pp = &m->svcs; *pp;) {
        if ((*pp)->present) {
            pp = &(*pp)->next;
            continue;
        }
        struct obs_svc *s = *pp;
        *pp = s->next;
        for (struct obs_rep **rp = &m->reps; *rp;) {
            struct obs_rep *r = *rp;
            if (strcmp(r->project, s->project) == 0 && strcmp(r->env, s->env) == 0 &&
                strcmp(r->service, s->name) == 0) {
                *rp = r->next;
                free(r);
                m->dirty = true;
            } else {
                rp = &r->next;
            }
        }
        free(s);
    }
    for (struct obs_rep *r = m->reps; r; r = r->next) {
        obs_total_age(&r->px, m->now_ms);
        obs_total_age(&r->rt, m->now_ms);
        if (!r->present)
            r->health[0] = '\0';
    }
    struct proxy_listener_stats *ls = NULL;
    size_t nls = 0;
    for (struct obs_lis *l = m->lis; l; l = l->next)
        l->present = false;
    if (proxy_listener_stats(m->proxy, &ls, &nls) == 0) {
        for (size_t i = 0; i < nls; i++) {
            struct obs_lis *l = lis_get(m, ls[i].addr);
            uint64_t v = ls[i].accepted;
            if (obs_total_feed(&l->acc, ls[i].instance, &v, m->now_ms))
                m->dirty = true;
            l->open = ls[i].open_conns;
            l->present = true;
        }
        free(ls);
    }
    for (struct obs_lis *l = m->lis; l; l = l->next)
        obs_total_age(&l->acc, m->now_ms);
    struct proxy_tls_stats ts;
    if (proxy_tls_stats(m->proxy, &ts) == 0) {
        uint64_t v[T_COUNT] = {[T_OK] = ts.handshakes,          [T_RESUMED] = ts.resumed,
                               [T_FAILED] = ts.handshake_failures, [T_NOCERT] = ts.no_certificate,
                               [T_PLAIN] = ts.plain_http,        [T_NOTTLS] = ts.not_tls};
        if (obs_total_feed(&m->tls, proxy_instance_id(m->proxy), v, m->now_ms))
            m->dirty = true;
        m->tls_certs = ts.certificates;
    }
    obs_total_age(&m->tls, m->now_ms);
}

static void sample(struct obs *m) { sample_ex(m, true); }

/* ---- persistence ---- */

static void save(struct obs *m)
{
    json_t *reps = json_array();
    for (struct obs_rep *r = m->reps; r; r = r->next)
        json_array_append_new(reps, json_pack("{s:s, s:s, s:s, s:s, s:o, s:o}", "project",
                                              r->project, "env", r->env, "service", r->service,
                                              "replica", r->name, "proxy", obs_total_json(&r->px),
                                              "runtime", obs_total_json(&r->rt)));
    json_t *lis = json_array();
    for (struct obs_lis *l = m->lis; l; l = l->next)
        json_array_append_new(lis, json_pack("{s:s, s:o}", "listener", l->addr, "accepted",
                                             obs_total_json(&l->acc)));
    json_t *j = json_pack("{s:i, s:o, s:o, s:o}", "version", 1, "replicas", reps, "listeners",
                          lis, "tls", obs_total_json(&m->tls));
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    /* Waited for: a scrape is answered only once its numbers are stored
     * (the SQLite store answers before the call returns). */
    struct store_result res = {0};
    if (text && store_kv_set(m->store, OBS_KV_TOTALS, text, store_keep_json, &res) == 0 &&
        res.done && res.rc == 0) {
        m->dirty = false;
        m->saved_ms = ev_time_ms();
    } else if (text) {
        log_warn("metrics: could not save the counter totals (rc %d)", res.rc);
    }
    store_result_clear(&res);
    free(text);
}

static void load(struct obs *m)
{
    struct store_result res = {0};
    const char *text = NULL;
    if (store_kv_list(m->store, OBS_KV_TOTALS, store_keep_json, &res) == 0 && res.done)
        text = json_string_value(json_object_get(res.json, OBS_KV_TOTALS));
    if (!text) {
        store_result_clear(&res);
        return;
    }
    json_error_t je;
    json_t *j = json_loads(text, 0, &je);
    store_result_clear(&res);
    if (!j) {
        log_warn("metrics: saved totals unreadable (%s); counters start from zero", je.text);
        return;
    }
    uint64_t now = ev_time_ms();
    json_t *reps = json_object_get(j, "replicas");
    for (size_t i = 0; i < json_array_size(reps); i++) {
        json_t *e = json_array_get(reps, i);
        const char *p = json_string_value(json_object_get(e, "project")),
                   *en = json_string_value(json_object_get(e, "env")),
                   *s = json_string_value(json_object_get(e, "service")),
                   *n = json_string_value(json_object_get(e, "replica"));
        if (!p || !en || !s || !n)
            continue;
        struct obs_rep *r = rep_get(m, p, en, s, n);
        obs_total_load(&r->px, json_object_get(e, "proxy"), now);
        obs_total_load(&r->rt, json_object_get(e, "runtime"), now);
        /* The services are known again at the first sample; until then the
         * replica must not be dropped as belonging to no service. */
        struct obs_svc *sv = svc_get(m, p, en, s);
        sv->present = true;
    }
    json_t *lis = json_object_get(j, "listeners");
    for (size_t i = 0; i < json_array_size(lis); i++) {
        json_t *e = json_array_get(lis, i);
        const char *a = json_string_value(json_object_get(e, "listener"));
        if (a)
            obs_total_load(&lis_get(m, a)->acc, json_object_get(e, "accepted"), now);
    }
    if (json_object_get(j, "tls"))
        obs_total_load(&m->tls, json_object_get(j, "tls"), now);
    json_decref(j);
}

static void on_timer(struct ev_loop *loop, struct ev_timer *t)
{
    struct obs *m = t->data;
    sample_ex(m, false);
    if (m->dirty && ev_time_ms() - m->saved_ms >= OBS_SAVE_MS)
        save(m);
    ev_timer_start(loop, t, OBS_SAMPLE_MS);
}

/* ---- exposition ---- */

struct sbuf {
    char *p;
    size_t len, cap;
};

static void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0)
            return;
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        b->cap = b->cap * 2 + (size_t)n;
        b->p = xrealloc(b->p, b->cap);
    }
}

/* Label values are names we validated ([a-z0-9-_.]), but escape anyway. */
static const char *esc(const char *s, char *buf, size_t len)
{
    size_t o = 0;
    for (; *s && o + 3 < len; s++) {
        if (*s == '\\' || *s == '"') {
            buf[o++] = '\\';
            buf[o++] = *s;
        } else if (*s == '\n') {
            buf[o++] = '\\';
            buf[o++] = 'n';
        } else {
            buf[o++] = *s;
        }
    }
    buf[o] = '\0';
    return buf;
}

/* # HELP / # TYPE. OpenMetrics names a counter family without _total. */
static void family(struct sbuf *b, bool om, const char *name, const char *type, const char *help)
{
    char fam[128];
    snprintf(fam, sizeof(fam), "%s", name);
    size_t l = strlen(fam);
    if (om && strcmp(type, "counter") == 0 && l > 6 && strcmp(fam + l - 6, "_total") == 0)
        fam[l - 6] = '\0';
    sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", fam, help, fam, type);
}

static void rep_labels(const struct obs_rep *r, char *buf, size_t len)
{
    char a[192], e[192], s[192], n[384];
    snprintf(buf, len, "project=\"%s\",env=\"%s\",service=\"%s\",replica=\"%s\"",
             esc(r->project, a, sizeof(a)), esc(r->env, e, sizeof(e)),
             esc(r->service, s, sizeof(s)), esc(r->name, n, sizeof(n)));
}

static void svc_labels(const char *project, const char *env, const char *name, char *buf,
                       size_t len)
{
    char a[192], e[192], s[192];
    snprintf(buf, len, "project=\"%s\",env=\"%s\",service=\"%s\"", esc(project, a, sizeof(a)),
             esc(env, e, sizeof(e)), esc(name, s, sizeof(s)));
}

static const char *const health_states[] = {"healthy", "unhealthy", "starting", "draining",
                                            "none"};

/* {"project\tservice": count} (events know project and service). */
static json_t *event_counts(struct obs *m, const char *kind)
{
    struct store_result res = {0};
    json_t *map = NULL;
    if (store_events_count(m->store, kind, store_keep_json, &res) == 0 && res.done &&
        res.rc == 0)
        map = json_incref(res.json);
    store_result_clear(&res);
    return map ? map : json_object();
}

static uint64_t count_of(json_t *map, const struct obs_svc *s)
{
    char k[256];
    snprintf(k, sizeof(k), "%s\t%s", s->project, s->name);
    return (uint64_t)json_integer_value(json_object_get(map, k));
}

static bool rep_shown(const struct obs_rep *r) { return r->present; }

char *obs_metrics_text(struct obs *m, bool om, size_t *len)
{
    sample(m);
    struct sbuf b = {.p = xmalloc(65536), .cap = 65536};
    char lbl[1024];
    const double *bounds = proxy_hist_bounds_s();

    family(&b, om, "tako_info", "gauge", "Version of takod (always 1).");
    sb_printf(&b, "tako_info{version=\"%s\"} 1\n", TAKO_VERSION);

    /* ---- replicas ---- */
    family(&b, om, "tako_replica_requests_total", "counter",
           "Requests a replica answered, by status class.");
    for (struct obs_rep *r = m->reps; r; r = r->next) {
        if (!rep_shown(r) || !r->has_pool)
            continue;
        rep_labels(r, lbl, sizeof(lbl));
        for (int c = 0; c < 5; c++)
            sb_printf(&b, "tako_replica_requests_total{%s,code=\"%dxx\"} %llu\n", lbl, c + 1,
                      (unsigned long long)obs_total_get(&r->px, C_REQ1 + (size_t)c));
    }
    static const struct {
        const char *name, *help;
        int k;
    } pcs[] = {
        {"tako_replica_request_failures_total", "Requests that failed to connect, send or receive at the replica (no response from it).", C_FAIL},
        {"tako_replica_retries_total", "Requests retried on another replica after failing at this one.", C_RETRY},
        {"tako_replica_health_transitions_total", "Changes of the load balancer's health verdict (up to down or back).", C_HTRANS},
    };
    for (size_t i = 0; i < ARRAY_LEN(pcs); i++) {
        family(&b, om, pcs[i].name, "counter", pcs[i].help);
        for (struct obs_rep *r = m->reps; r; r = r->next) {
            if (!rep_shown(r) || !r->has_pool)
                continue;
            rep_labels(r, lbl, sizeof(lbl));
            sb_printf(&b, "%s{%s} %llu\n", pcs[i].name, lbl,
                      (unsigned long long)obs_total_get(&r->px, (size_t)pcs[i].k));
        }
    }
    family(&b, om, "tako_replica_requests_in_flight", "gauge",
           "Requests sent to the replica and not answered yet.");
    for (struct obs_rep *r = m->reps; r; r = r->next) {
        if (!rep_shown(r) || !r->has_pool)
            continue;
        rep_labels(r, lbl, sizeof(lbl));
        sb_printf(&b, "tako_replica_requests_in_flight{%s} %llu\n", lbl,
                  (unsigned long long)r->inflight);
    }
    family(&b, om, "tako_replica_request_duration_seconds", "histogram",
           "Time from a request's head to the end of the replica's response.");
    for (struct obs_rep *r = m->reps; r; r = r->next) {
        if (!rep_shown(r) || !r->has_pool)
            continue;
        rep_labels(r, lbl, sizeof(lbl));
        uint64_t acc = 0;
        for (size_t k = 0; k < PROXY_HIST_BUCKETS; k++) {
            acc += obs_total_get(&r->px, C_HIST + k);
            if (k < PROXY_HIST_BUCKETS - 1)
                sb_printf(&b, "tako_replica_request_duration_seconds_bucket{%s,le=\"%g\"} %llu\n",
                          lbl, bounds[k], (unsigned long long)acc);
            else
                sb_printf(&b,
                          "tako_replica_request_duration_seconds_bucket{%s,le=\"+Inf\"} %llu\n",
                          lbl, (unsigned long long)acc);
        }
        sb_printf(&b, "tako_replica_request_duration_seconds_sum{%s} %.6f\n", lbl,
                  (double)obs_total_get(&r->px, C_LAT_US) / 1e6);
        sb_printf(&b, "tako_replica_request_duration_seconds_count{%s} %llu\n", lbl,
                  (unsigned long long)acc);
    }
    family(&b, om, "tako_replica_up", "gauge",
           "1 when the replica takes traffic (healthy, or running when it has no port), else 0.");
    for (struct obs_rep *r = m->reps; r; r = r->next) {
        if (!rep_shown(r))
            continue;
        rep_labels(r, lbl, sizeof(lbl));
        bool up = strcmp(r->health, "healthy") == 0 ||
                  (strcmp(r->health, "none") == 0 && strcmp(r->state, "running") == 0);
        sb_printf(&b, "tako_replica_up{%s} %d\n", lbl, up ? 1 : 0);
    }
    family(&b, om, "tako_replica_health", "gauge",
           "The replica's health as the dashboard shows it: 1 for its state, 0 for the others.");
    for (struct obs_rep *r = m->reps; r; r = r->next) {
        if (!rep_shown(r))
            continue;
        rep_labels(r, lbl, sizeof(lbl));
        for (size_t i = 0; i < ARRAY_LEN(health_states); i++)
            sb_printf(&b, "tako_replica_health{%s,state=\"%s\"} %d\n", lbl, health_states[i],
                      strcmp(r->health, health_states[i]) == 0 ? 1 : 0);
    }
    family(&b, om, "tako_replica_restarts_total", "counter",
           "Restarts of the replica's process by its supervisor (crashes, failed liveness).");
    for (struct obs_rep *r = m->reps; r; r = r->next) {
        if (!rep_shown(r))
            continue;
        rep_labels(r, lbl, sizeof(lbl));
        sb_printf(&b, "tako_replica_restarts_total{%s} %llu\n", lbl,
                  (unsigned long long)obs_total_get(&r->rt, R_RESTARTS));
    }
    family(&b, om, "tako_replica_cpu_seconds_total", "counter",
           "CPU time (user + system) of the replica's processes or containers.");
    for (struct obs_rep *r = m->reps; r; r = r->next) {
        if (!rep_shown(r))
            continue;
        rep_labels(r, lbl, sizeof(lbl));
        sb_printf(&b, "tako_replica_cpu_seconds_total{%s} %.6f\n", lbl,
                  (double)obs_total_get(&r->rt, R_CPU_US) / 1e6);
    }
    family(&b, om, "tako_replica_log_lines_dropped_total", "counter",
           "Log lines the replica's supervisor could not write (a full disk); counts from "
           "zero when the replica's supervisor starts again.");
    for (struct obs_rep *r = m->reps; r; r = r->next) {
        if (!rep_shown(r))
            continue;
        rep_labels(r, lbl, sizeof(lbl));
        sb_printf(&b, "tako_replica_log_lines_dropped_total{%s} %llu\n", lbl,
                  (unsigned long long)r->log_dropped);
    }
    family(&b, om, "tako_replica_memory_bytes", "gauge",
           "Resident memory of the replica's processes.");
    for (struct obs_rep *r = m->reps; r; r = r->next) {
        if (!rep_shown(r))
            continue;
        rep_labels(r, lbl, sizeof(lbl));
        sb_printf(&b, "tako_replica_memory_bytes{%s} %llu\n", lbl, (unsigned long long)r->rss);
    }

    /* ---- services ---- */
    family(&b, om, "tako_service_info", "gauge",
           "The service's balancing strategy and revision (always 1).");
    for (struct obs_svc *s = m->svcs; s; s = s->next) {
        char st[64], rv[128];
        svc_labels(s->project, s->env, s->name, lbl, sizeof(lbl));
        sb_printf(&b, "tako_service_info{%s,strategy=\"%s\",revision=\"%s\"} 1\n", lbl,
                  esc(s->strategy, st, sizeof(st)), esc(s->revision, rv, sizeof(rv)));
    }
    family(&b, om, "tako_service_desired_replicas", "gauge",
           "Replicas the service should run (configuration, tako scale or the autoscaler).");
    for (struct obs_svc *s = m->svcs; s; s = s->next) {
        svc_labels(s->project, s->env, s->name, lbl, sizeof(lbl));
        sb_printf(&b, "tako_service_desired_replicas{%s} %u\n", lbl, s->desired);
    }
    family(&b, om, "tako_service_ready_replicas", "gauge",
           "Replicas running the current revision, admitted and healthy.");
    for (struct obs_svc *s = m->svcs; s; s = s->next) {
        svc_labels(s->project, s->env, s->name, lbl, sizeof(lbl));
        sb_printf(&b, "tako_service_ready_replicas{%s} %u\n", lbl, s->ready);
    }
    static const struct {
        const char *name, *kind, *help;
    } evs[] = {
        {"tako_service_deploys_total", "deploy", "Deploys that changed the service."},
        {"tako_service_rollbacks_total", "rollback", "Rollbacks, automatic or by tako rollback."},
        {"tako_service_scale_events_total", "scale", "Scale changes by tako scale."},
        {"tako_service_autoscale_decisions_total", "autoscale", "Replica count changes made by the autoscaler."},
    };
    for (size_t i = 0; i < ARRAY_LEN(evs); i++) {
        json_t *counts = event_counts(m, evs[i].kind);
        family(&b, om, evs[i].name, "counter", evs[i].help);
        for (struct obs_svc *s = m->svcs; s; s = s->next) {
            svc_labels(s->project, s->env, s->name, lbl, sizeof(lbl));
            sb_printf(&b, "%s{%s} %llu\n", evs[i].name, lbl,
                      (unsigned long long)count_of(counts, s));
        }
        json_decref(counts);
    }
    family(&b, om, "tako_service_autoscale_recommended_replicas", "gauge",
           "The autoscaler's last recommendation before bounds and stabilisation.");
    for (struct obs_svc *s = m->svcs; s; s = s->next) {
        if (!s->autoscaled || s->as_rec < 0)
            continue;
        svc_labels(s->project, s->env, s->name, lbl, sizeof(lbl));
        sb_printf(&b, "tako_service_autoscale_recommended_replicas{%s} %d\n", lbl, s->as_rec);
    }

    /* ---- listeners ---- */
    family(&b, om, "tako_listener_open_connections", "gauge",
           "Client connections open on a load balancer listener.");
    for (struct obs_lis *l = m->lis; l; l = l->next)
        if (l->present)
            sb_printf(&b, "tako_listener_open_connections{listener=\"%s\"} %u\n", l->addr, l->open);
    family(&b, om, "tako_listener_connections_total", "counter",
           "Client connections accepted on a load balancer listener.");
    for (struct obs_lis *l = m->lis; l; l = l->next)
        if (l->present)
            sb_printf(&b, "tako_listener_connections_total{listener=\"%s\"} %llu\n", l->addr,
                      (unsigned long long)obs_total_get(&l->acc, 0));
    bool tls = m->tls_certs > 0;
    for (size_t k = 0; k < T_COUNT && !tls; k++)
        tls = obs_total_get(&m->tls, k) > 0;
    if (tls) {
        /* ok, failed and no_certificate are disjoint; resumed is part of ok */
        family(&b, om, "tako_tls_handshakes_total", "counter",
               "TLS handshakes on the HTTPS listeners, by result.");
        static const struct {
            const char *res;
            size_t k;
        } hs[] = {{"ok", T_OK}, {"failed", T_FAILED}, {"no_certificate", T_NOCERT}};
        for (size_t i = 0; i < ARRAY_LEN(hs); i++)
            sb_printf(&b, "tako_tls_handshakes_total{result=\"%s\"} %llu\n", hs[i].res,
                      (unsigned long long)obs_total_get(&m->tls, hs[i].k));
        family(&b, om, "tako_tls_resumed_handshakes_total", "counter",
               "Successful TLS handshakes that resumed a session (ticket).");
        sb_printf(&b, "tako_tls_resumed_handshakes_total %llu\n",
                  (unsigned long long)obs_total_get(&m->tls, T_RESUMED));
        family(&b, om, "tako_tls_non_tls_connections_total", "counter",
               "Connections to an HTTPS listener that did not speak TLS, by what they sent.");
        sb_printf(&b, "tako_tls_non_tls_connections_total{kind=\"plain_http\"} %llu\n",
                  (unsigned long long)obs_total_get(&m->tls, T_PLAIN));
        sb_printf(&b, "tako_tls_non_tls_connections_total{kind=\"other\"} %llu\n",
                  (unsigned long long)obs_total_get(&m->tls, T_NOTTLS));
        family(&b, om, "tako_tls_certificates", "gauge",
               "Certificates installed in the load balancer.");
        sb_printf(&b, "tako_tls_certificates %u\n", m->tls_certs);
    }
    if (om)
        sb_printf(&b, "# EOF\n");
    /* Whatever this scrape shows must still be there after a restart. */
    if (m->dirty)
        save(m);
    *len = b.len;
    return b.p;
}

/* ---- dashboard state ---- */

static double quantile(const uint64_t *h, double q)
{
    const double *bounds = proxy_hist_bounds_s();
    uint64_t total = 0;
    for (size_t i = 0; i < PROXY_HIST_BUCKETS; i++)
        total += h[i];
    if (!total)
        return 0;
    double want = q * (double)total, acc = 0;
    for (size_t i = 0; i < PROXY_HIST_BUCKETS; i++) {
        if (h[i] && acc + (double)h[i] >= want) {
            double lo = i ? bounds[i - 1] : 0;
            double hi = i < PROXY_HIST_BUCKETS - 1 ? bounds[i] : lo * 2;
            return lo + (hi - lo) * ((want - acc) / (double)h[i]);
        }
        acc += (double)h[i];
    }
    return bounds[PROXY_HIST_BUCKETS - 2];
}

static json_t *rep_state(struct obs *m, const struct obs_rep *r, uint64_t *req_1m)
{
    uint64_t now = m->now_ms;
    uint64_t req = 0;
    for (int c = 0; c < 5; c++)
        req += obs_total_get(&r->px, C_REQ1 + (size_t)c);
    uint64_t err = obs_total_get(&r->px, C_REQ5) + obs_total_get(&r->px, C_FAIL);
    const struct obs_slot *m1 = ring_since(r, now, 60), *s10 = ring_since(r, now, 10);
    uint64_t r1 = m1 ? req - m1->req : 0, e1 = m1 ? err - m1->err : 0;
    double rps = 0;
    if (s10 && now / 1000 > s10->sec)
        rps = (double)(req - s10->req) / (double)(now / 1000 - s10->sec);
    /* latency over the last minute: this histogram minus the oldest 10 s
     * slot still within it */
    uint64_t tick = now / 10000, h[PROXY_HIST_BUCKETS];
    const struct obs_hslot *old = NULL;
    for (size_t i = 0; i < OBS_HRING; i++) {
        const struct obs_hslot *x = &r->hring[i];
        if (x->tick && x->tick + 6 >= tick && (!old || x->tick < old->tick))
            old = x;
    }
    for (size_t k = 0; k < PROXY_HIST_BUCKETS; k++)
        h[k] = obs_total_get(&r->px, C_HIST + k) - (old ? old->h[k] : 0);
    *req_1m = r1;
    json_t *j = json_object();
    json_object_set_new(j, "name", json_string(r->name));
    json_object_set_new(j, "index", json_integer(r->index));
    json_object_set_new(j, "server", json_string(m->host));
    json_object_set_new(j, "health", json_string(r->health));
    json_object_set_new(j, "phase", json_string(r->phase));
    json_object_set_new(j, "state", json_string(r->state));
    json_object_set_new(j, "revision", json_string(r->revision));
    json_object_set_new(j, "requests", json_integer((json_int_t)req));
    json_object_set_new(j, "requests_1m", json_integer((json_int_t)r1));
    json_object_set_new(j, "errors_1m", json_integer((json_int_t)e1));
    json_object_set_new(j, "rps", json_real(round(rps * 10) / 10));
    json_object_set_new(j, "p50_ms", json_real(round(quantile(h, 0.5) * 1e4) / 10));
    json_object_set_new(j, "p99_ms", json_real(round(quantile(h, 0.99) * 1e4) / 10));
    json_object_set_new(j, "inflight", json_integer((json_int_t)r->inflight));
    json_object_set_new(j, "cpu_percent", json_real(round(r->cpu_pct * 10) / 10));
    json_object_set_new(j, "memory_bytes", json_integer((json_int_t)r->rss));
    json_object_set_new(j, "restarts", json_integer((json_int_t)obs_total_get(&r->rt, R_RESTARTS)));
    return j;
}

static bool timeline_kind(const char *k)
{
    static const char *const kinds[] = {"deploy", "scale",    "autoscale", "health",
                                        "rollback", "unhealthy", "liveness", "restart",
                                        "stop",     "start",     "down",     "removed"};
    for (size_t i = 0; i < ARRAY_LEN(kinds); i++)
        if (strcmp(k, kinds[i]) == 0)
            return true;
    return false;
}

static json_t *state_json(struct obs *m)
{
    sample(m);
    json_t *svcs = json_array();
    for (struct obs_svc *s = m->svcs; s; s = s->next) {
        json_t *reps = json_array();
        uint64_t total_1m = 0;
        double rps = 0;
        for (struct obs_rep *r = m->reps; r; r = r->next) {
            if (!r->present || strcmp(r->service, s->name) != 0 ||
                strcmp(r->project, s->project) != 0 || strcmp(r->env, s->env) != 0)
                continue;
            uint64_t r1;
            json_t *rj = rep_state(m, r, &r1);
            total_1m += r1;
            rps += json_real_value(json_object_get(rj, "rps"));
            json_array_append_new(reps, rj);
        }
        size_t i;
        json_t *rj;
        json_array_foreach(reps, i, rj)
        {
            uint64_t r1 = (uint64_t)json_integer_value(json_object_get(rj, "requests_1m"));
            json_object_set_new(rj, "share", json_real(total_1m ? (double)r1 / (double)total_1m : 0));
        }
        json_t *sj = json_object();
        json_object_set_new(sj, "project", json_string(s->project));
        json_object_set_new(sj, "env", json_string(s->env));
        json_object_set_new(sj, "name", json_string(s->name));
        json_object_set_new(sj, "strategy", json_string(s->strategy));
        json_object_set_new(sj, "status", json_string(s->status));
        json_object_set_new(sj, "revision", json_string(s->revision));
        json_object_set_new(sj, "desired", json_integer(s->desired));
        json_object_set_new(sj, "ready", json_integer(s->ready));
        json_object_set_new(sj, "rps", json_real(round(rps * 10) / 10));
        json_object_set_new(sj, "requests_1m", json_integer((json_int_t)total_1m));
        if (s->autoscaled)
            json_object_set_new(sj, "autoscale",
                                json_pack("{s:i, s:i, s:i}", "min", s->as_min, "max", s->as_max,
                                          "recommended", s->as_rec));
        json_object_set_new(sj, "replicas", reps);
        json_array_append_new(svcs, sj);
    }
    struct store_result res = {0};
    json_t *all = NULL;
    if (store_events_list(m->store, NULL, NULL, NULL, 400, store_keep_json, &res) == 0 &&
        res.done)
        all = json_incref(res.json);
    store_result_clear(&res);
    json_t *tl = json_array();
    size_t i;
    json_t *e;
    json_array_foreach(all, i, e)
    {
        const char *k = json_string_value(json_object_get(e, "kind"));
        if (!k || !timeline_kind(k))
            continue;
        json_array_append_new(tl, json_pack("{s:O, s:O, s:O, s:O, s:O}", "ts_ms",
                                            json_object_get(e, "ts_ms"), "project",
                                            json_object_get(e, "project"), "service",
                                            json_object_get(e, "service"), "kind",
                                            json_object_get(e, "kind"), "message",
                                            json_object_get(e, "message")));
        if (json_array_size(tl) >= OBS_TIMELINE)
            break;
    }
    json_decref(all);
    return json_pack("{s:s, s:s, s:I, s:o, s:o}", "version", TAKO_VERSION, "host", m->host,
                     "time_ms", (json_int_t)time_wall_ms(), "services", svcs, "timeline", tl);
}

struct obs_buf *obs_state(struct obs *m)
{
    uint64_t now = ev_time_ms();
    if (!m->state || now - m->state_ms >= OBS_STATE_MIN_MS) {
        json_t *j = state_json(m);
        char *text = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
        json_decref(j);
        struct obs_buf *b = obs_buf_new(text ? text : "", text ? strlen(text) : 0);
        free(text);
        obs_buf_unref(m->state);
        m->state = b;
        m->state_ms = now;
    }
    m->state->refs++;
    return m->state;
}

struct obs_buf *obs_buf_new(const char *data, size_t len)
{
    struct obs_buf *b = xmalloc(sizeof(*b) + len + 1);
    b->refs = 1;
    b->len = len;
    memcpy(b->data, data, len);
    b->data[len] = '\0';
    return b;
}

void obs_buf_unref(struct obs_buf *b)
{
    if (b && --b->refs == 0)
        free(b);
}

/* ---- bindings (the `metrics:` key) ---- */

static struct obs_bind *bind_find(struct obs *m, const char *project, const char *env)
{
    for (struct obs_bind *b = m->binds; b; b = b->next)
        if (strcmp(b->project, project) == 0 && strcmp(b->env, env) == 0)
            return b;
    return NULL;
}

static struct obs_http *http_of_addr(struct obs *m, const char *addr, const struct obs_bind *skip,
                                     const struct obs_bind **holder)
{
    for (struct obs_bind *b = m->binds; b; b = b->next)
        if (b != skip && strcmp(b->addr, addr) == 0) {
            *holder = b;
            return b->http;
        }
    return NULL;
}

static void bind_drop(struct obs *m, struct obs_bind *b)
{
    for (struct obs_bind **pp = &m->binds; *pp; pp = &(*pp)->next)
        if (*pp == b) {
            *pp = b->next;
            break;
        }
    const struct obs_bind *holder = NULL;
    if (!http_of_addr(m, b->addr, NULL, &holder))
        obs_http_free(b->http);
    free(b->token);
    free(b);
}

static char *src_metrics(void *ctx, bool om, size_t *len)
{
    return obs_metrics_text(ctx, om, len);
}

static struct obs_buf *src_state(void *ctx) { return obs_state(ctx); }

static bool same_token(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static int bind_err(char *err, size_t errlen, const char *where, const char *addr, int rc)
{
    const char *why = rc == -EADDRINUSE      ? "the address is already in use"
                      : rc == -EACCES        ? "not allowed (a port below 1024 needs root)"
                      : rc == -EADDRNOTAVAIL ? "not an address of this machine"
                                             : strerror(-rc);
    snprintf(err, errlen, "%s: cannot serve metrics on %s: %s", where, addr, why);
    return rc;
}

static void persist_bind(struct obs *m, const char *project, const char *env,
                         const struct obs_bind *b)
{
    char key[256];
    snprintf(key, sizeof(key), OBS_KV_LISTEN "%s/%s", project, env);
    if (!b) {
        store_kv_set(m->store, key, NULL, NULL, NULL);
        return;
    }
    json_t *j = json_pack("{s:s, s:s?, s:s}", "address", b->addr, "token", b->token, "where",
                          b->where);
    char *t = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    store_kv_set(m->store, key, t, NULL, NULL);
    free(t);
}

int obs_bind(struct obs *m, const char *project, const char *env, const char *addr,
             const char *token, const char *where, char *err, size_t errlen)
{
    struct obs_bind *cur = bind_find(m, project, env);
    if (!addr) {
        if (cur) {
            log_info("metrics: %s/%s no longer serves metrics on %s", project, env, cur->addr);
            bind_drop(m, cur);
            persist_bind(m, project, env, NULL);
        }
        return 0;
    }
    if (!where || !*where)
        where = "metrics";
    if (cur && strcmp(cur->addr, addr) == 0 && same_token(cur->token, token)) {
        snprintf(cur->where, sizeof(cur->where), "%s", where);
        persist_bind(m, project, env, cur);
        return 0;
    }
    const struct obs_bind *holder = NULL;
    struct obs_http *h = http_of_addr(m, addr, cur, &holder);
    if (h && !same_token(holder->token, token)) {
        snprintf(err, errlen,
                 "%s: %s already serves metrics for %s/%s with another token (one address, one "
                 "token)",
                 where, addr, holder->project, holder->env);
        return -EEXIST;
    }
    if (!h) {
        /* The same address as this environment's current one (token change):
         * the listener is re-used, its token replaced. */
        if (cur && strcmp(cur->addr, addr) == 0) {
            h = cur->http;
            cur->http = NULL;
            obs_http_free(h);
            h = NULL;
        }
        int rc = 0;
        struct obs_http_src src = {src_metrics, src_state, m};
        h = obs_http_new(&src, m->loop, addr, token, &rc);
        if (!h)
            return bind_err(err, errlen, where, addr, rc);
    }
    if (cur)
        bind_drop(m, cur);
    struct obs_bind *b = xcalloc(1, sizeof(*b));
    snprintf(b->project, sizeof(b->project), "%s", project);
    snprintf(b->env, sizeof(b->env), "%s", env);
    snprintf(b->addr, sizeof(b->addr), "%s", addr);
    snprintf(b->where, sizeof(b->where), "%s", where);
    b->token = token ? xstrdup(token) : NULL;
    b->http = h;
    b->next = m->binds;
    m->binds = b;
    persist_bind(m, project, env, b);
    char a[64];
    log_info("metrics: %s/%s serves /metrics and the dashboard on http://%s/", project, env,
             obs_http_addr(h, a, sizeof(a)));
    return 0;
}

json_t *obs_binding(struct obs *m, const char *project, const char *env)
{
    struct obs_bind *b = bind_find(m, project, env);
    if (!b)
        return NULL;
    return json_pack("{s:s, s:s?, s:s}", "address", b->addr, "token", b->token, "where",
                     b->where);
}

const char *obs_bound_addr(struct obs *m, const char *project, const char *env, char *buf,
                           size_t len)
{
    struct obs_bind *b = bind_find(m, project, env);
    return b && b->http ? obs_http_addr(b->http, buf, len) : NULL;
}

static void rebind_cb(void *data, const char *key, const char *value)
{
    struct obs *m = data;
    const char *pe = key + strlen(OBS_KV_LISTEN);
    const char *slash = strchr(pe, '/');
    json_t *j = json_loads(value, 0, NULL);
    const char *addr = json_string_value(json_object_get(j, "address"));
    if (slash && addr) {
        char project[64], env[64];
        snprintf(project, sizeof(project), "%.*s", (int)(slash - pe), pe);
        snprintf(env, sizeof(env), "%s", slash + 1);
        char err[1024];
        if (obs_bind(m, project, env, addr, json_string_value(json_object_get(j, "token")),
                     json_string_value(json_object_get(j, "where")), err, sizeof(err)) < 0)
            log_error("metrics: %s/%s: %s (deploy again to retry)", project, env, err);
    }
    json_decref(j);
}

/* ---- life cycle ---- */

struct obs *obs_new(struct ev_loop *loop, struct orch *orch, struct proxy *proxy,
                    struct store *store)
{
    struct obs *m = xcalloc(1, sizeof(*m));
    m->loop = loop;
    m->orch = orch;
    m->proxy = proxy;
    m->store = store;
    m->saved_ms = ev_time_ms();
    m->tls.n = T_COUNT;
    if (gethostname(m->host, sizeof(m->host) - 1) != 0)
        snprintf(m->host, sizeof(m->host), "localhost");
    load(m);
    struct store_result res = {0};
    if (store_kv_list(store, OBS_KV_LISTEN, store_keep_json, &res) == 0 && res.done) {
        const char *key;
        json_t *val;
        json_object_foreach(res.json, key, val)
            rebind_cb(m, key, json_string_value(val));
    }
    store_result_clear(&res);
    ev_timer_init(&m->timer, on_timer, m);
    ev_timer_start(loop, &m->timer, OBS_SAMPLE_MS);
    return m;
}

void obs_free(struct obs *m)
{
    if (!m)
        return;
    ev_timer_stop(m->loop, &m->timer);
    sample(m);
    save(m);
    while (m->binds) {
        struct obs_bind *b = m->binds;
        m->binds = b->next;
        const struct obs_bind *holder = NULL;
        if (!http_of_addr(m, b->addr, NULL, &holder))
            obs_http_free(b->http);
        free(b->token);
        free(b);
    }
    for (struct obs_rep *r = m->reps, *n; r; r = n) {
        n = r->next;
        free(r);
    }
    for (struct obs_svc *s = m->svcs, *n; s; s = n) {
        n = s->next;
        free(s);
    }
    for (struct obs_lis *l = m->lis, *n; l; l = n) {
        n = l->next;
        free(l);
    }
    obs_buf_unref(m->state);
    free(m);
}
