/* pool.c — pools of backends: atomic set swaps, backend identity kept by
 * id across swaps, draining, health state, stats snapshots, and the safe
 * reclamation of retired sets and drained backends (quiescent states: a
 * worker holds no set pointer between two event-loop iterations). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/assert.h"
#include "core/log.h"
#include "core/util.h"
#include "proxy/proxy_int.h"

const double proxy_hist_bounds_ms[PROXY_NHIST - 1] = {0.5, 1,   2.5,  5,    10,   25,   50,
                                                      100, 250, 500, 1000, 2500, 5000, 10000,
                                                      30000};

const double *proxy_hist_bounds_s(void)
{
    static const double s[PROXY_NHIST - 1] = {0.0005, 0.001, 0.0025, 0.005, 0.01,
                                              0.025,  0.05,  0.1,    0.25,  0.5,
                                              1,      2.5,   5,      10,    30};
    return s;
}

static void set_defaults(struct proxy_pool_opts *o)
{
    if (!o->health_interval_ms)
        o->health_interval_ms = 2000;
    if (!o->health_timeout_ms)
        o->health_timeout_ms = 1000;
    if (!o->health_fast_interval_ms)
        o->health_fast_interval_ms = 250;
    if (o->health_fast_interval_ms > o->health_interval_ms)
        o->health_fast_interval_ms = o->health_interval_ms;
    if (!o->rise)
        o->rise = 2;
    if (!o->fall)
        o->fall = 3;
    if (!o->retries_set && !o->retries)
        o->retries = 2;
    if (o->retry_budget <= 0)
        o->retry_budget = 0.2;
    if (!o->drain_timeout_ms)
        o->drain_timeout_ms = 30000;
    if (!o->all_down_wait_set && !o->all_down_wait_ms)
        o->all_down_wait_ms = 5000;
    if (!o->body_timeout_ms)
        o->body_timeout_ms = 20000;
    if (!o->min_body_rate)
        o->min_body_rate = 500;
    if (!o->max_queue)
        o->max_queue = 256;
    if (!o->queue_timeout_ms)
        o->queue_timeout_ms = 5000;
    if (!o->ipv6_prefix || o->ipv6_prefix > 128)
        o->ipv6_prefix = 64;
    if ((size_t)o->strategy >= lb_count())
        o->strategy = LB_ROUND_ROBIN;
}

static struct lb_set *set_new(struct proxy_pool *pool, size_t n)
{
    struct lb_set *s = xcalloc(1, sizeof(*s));
    s->pool = pool;
    s->ops = pool->ops;
    s->n = n;
    s->b = xcalloc(n ? n : 1, sizeof(*s->b));
    return s;
}

void lb_set__free(struct lb_set *s)
{
    if (!s)
        return;
    if (s->ops->destroy)
        s->ops->destroy(s);
    free(s->b);
    free(s->wb);
    free(s);
}

/* Smooth weighted round robin (as nginx): each backend appears weight
 * times, spread out, so 3:1 gives a a b a rather than a a a b. */
static void set_weights(struct lb_set *s)
{
    size_t total = 0;
    bool weighted = false;
    for (size_t i = 0; i < s->n; i++) {
        total += s->b[i]->weight;
        weighted |= s->b[i]->weight > 1;
    }
    if (!weighted || total > (size_t)1 << 20)
        return;
    s->wb = xcalloc(total, sizeof(*s->wb));
    int64_t *cw = xcalloc(s->n, sizeof(*cw));
    for (size_t k = 0; k < total; k++) {
        size_t best = 0;
        for (size_t i = 0; i < s->n; i++) {
            cw[i] += s->b[i]->weight;
            if (cw[i] > cw[best])
                best = i;
        }
        cw[best] -= (int64_t)total;
        s->wb[k] = s->b[best];
    }
    s->nw = total;
    free(cw);
}

struct proxy_pool *proxy_pool_new(struct proxy *p, const struct proxy_pool_opts *o)
{
    if (p->rops)
        return p->rops->pool_new(p, o);
    struct proxy_pool *pool = xcalloc(1, sizeof(*pool));
    pool->p = p;
    pool->o = *o;
    set_defaults(&pool->o);
    pool->name = xstrdup(o->name ? o->name : "default");
    pool->o.name = pool->name;
    if (o->health_path && *o->health_path) {
        pool->health_path = xstrdup(o->health_path);
        pool->o.health_path = pool->health_path;
    } else {
        pool->o.health_path = NULL;
    }
    pool->sticky_cookie = xstrdup(o->sticky_cookie && *o->sticky_cookie ? o->sticky_cookie
                                                                         : "tako_backend");
    pool->sticky_cookie_len = strlen(pool->sticky_cookie);
    pool->o.sticky_cookie = pool->sticky_cookie;
    pool->ops = lb_ops_for(pool->o.strategy);
    pool->up_xprt = &xprt_tcp;
    if (o->peer_service && *o->peer_service) {
        pool->peer_service = xstrdup(o->peer_service);
        pool->peer_service_len = strlen(pool->peer_service);
    }
    pool->o.peer_service = pool->peer_service;
    pool->o.peer_source = NULL;
    if (o->peer_source && *o->peer_source &&
        net_parse_addr(o->peer_source, NULL, &pool->peer_src) < 0) {
        /* "ADDR" without a port is the usual form: port 0 */
        char a[80];
        snprintf(a, sizeof(a), strchr(o->peer_source, ':') ? "[%s]:0" : "%s:0", o->peer_source);
        if (net_parse_addr(a, NULL, &pool->peer_src) < 0)
            pool->peer_src.len = 0;
    }
    pthread_mutex_init(&pool->lock, NULL);
    struct lb_set *s = set_new(pool, 0);
    pool->ops->build(s);
    atomic_store(&pool->cur, s);
    pthread_mutex_lock(&p->lock);
    pool->next = p->pools;
    p->pools = pool;
    pthread_mutex_unlock(&p->lock);
    return pool;
}

static struct backend *backend_new(struct proxy_pool *pool, const struct proxy_backend_spec *sp)
{
    struct proxy *p = pool->p;
    struct backend *b = xcalloc(1, sizeof(*b));
    snprintf(b->id, sizeof(b->id), "%s", sp->id);
    b->addr = sp->addr;
    b->health_path = sp->health_path && *sp->health_path ? xstrdup(sp->health_path) : NULL;
    b->peer = sp->peer;
    b->weight = sp->weight ? sp->weight : 1;
    net_addr_str(&b->addr, b->addr_s, sizeof(b->addr_s));
    b->id_hash = lb_hash64(b->id, strlen(b->id), 0x5717c4);
    b->pool = pool;
    atomic_init(&b->slot, -1);
    size_t sz = p->nworkers * sizeof(struct bstat);
    b->st = aligned_alloc(64, sz);
    if (!b->st)
        die(1, "out of memory");
    memset(b->st, 0, sz);
    b->idle = xcalloc(p->nworkers, sizeof(struct dlist));
    b->idle_n = xcalloc(p->nworkers, sizeof(uint32_t));
    for (unsigned i = 0; i < p->nworkers; i++)
        dlist_init(&b->idle[i]);
    b->hc.fd = -1;
    return b;
}

static void backend_free(struct backend *b)
{
    free(b->st);
    free(b->idle);
    free(b->idle_n);
    free(b->health_path);
    free(b);
}

static struct backend *find_live(struct proxy_pool *pool, const char *id)
{
    for (struct backend *b = pool->all; b; b = b->next)
        if (!atomic_load(&b->removed) && strcmp(b->id, id) == 0)
            return b;
    return NULL;
}

static void retire_set(struct proxy *p, struct lb_set *s, uint64_t gen)
{
    s->retire_gen = gen;
    pthread_mutex_lock(&p->ctl_lock);
    s->retired_next = p->retired;
    p->retired = s;
    pthread_mutex_unlock(&p->ctl_lock);
}

int proxy_pool_set_backends(struct proxy_pool *pool, const struct proxy_backend_spec *sp, size_t n)
{
    struct proxy *p = pool->p;
    if (p->rops)
        return p->rops->pool_set(pool, sp, n);
    for (size_t i = 0; i < n; i++) {
        if (!sp[i].id || !*sp[i].id || strlen(sp[i].id) >= sizeof(((struct backend *)0)->id))
            return -EINVAL;
        for (size_t j = 0; j < i; j++)
            if (strcmp(sp[i].id, sp[j].id) == 0)
                return -EINVAL;
    }
    pthread_mutex_lock(&pool->lock);
    struct lb_set *s = set_new(pool, n);
    bool first = !pool->had_set;
    for (size_t i = 0; i < n; i++) {
        struct backend *b = find_live(pool, sp[i].id);
        const char *hp = sp[i].health_path && *sp[i].health_path ? sp[i].health_path : NULL;
        if (b && (b->addr.len != sp[i].addr.len || memcmp(&b->addr.ss, &sp[i].addr.ss, b->addr.len) ||
                  (b->health_path ? !hp || strcmp(b->health_path, hp) : hp != NULL) ||
                  b->peer != sp[i].peer))
            b = NULL; /* same id, new address or check: a new backend; the old one drains */
        if (!b) {
            b = backend_new(pool, &sp[i]);
            bool up = (first && pool->o.initial_up) || sp[i].up;
            atomic_store(&b->healthy, up);
            atomic_store(&b->ever_healthy, up);
            b->hc.due = 0; /* check at once */
            b->next = pool->all;
            pool->all = b;
        }
        BUG_ON(atomic_load(&b->removed)); /* a set holds live backends only */
        b->weight = sp[i].weight ? sp[i].weight : 1; /* read by set builds only, under pool->lock */
        s->b[i] = b;
    }
    set_weights(s);
    pool->ops->build(s);
    uint64_t now = ev_time_ms();
    /* Everything live that is not in the new set drains. */
    for (struct backend *b = pool->all; b; b = b->next) {
        if (atomic_load(&b->removed))
            continue;
        bool kept = false;
        for (size_t i = 0; i < n && !kept; i++)
            kept = s->b[i] == b;
        if (!kept) {
            atomic_store(&b->removed, true);
            atomic_store(&b->slot, -1);
            b->removed_at = now;
            b->retire_gen = UINT64_MAX; /* set below, once the swap is visible */
        }
    }
    for (size_t i = 0; i < n; i++)
        atomic_store(&s->b[i]->slot, (int)i);
    struct lb_set *old = atomic_exchange(&pool->cur, s);
    /* The generation moves after the swap: a worker that has seen it can
     * only load the new set from then on. */
    uint64_t gen = atomic_fetch_add(&p->gen, 1) + 1;
    for (struct backend *b = pool->all; b; b = b->next)
        if (b->retire_gen == UINT64_MAX)
            b->retire_gen = gen;
    pool->had_set = true;
    pthread_mutex_unlock(&pool->lock);
    retire_set(p, old, gen);
    control__wake(p);
    return 0;
}

void pool__backend_set_health(struct backend *b, bool up)
{
    bool was = atomic_exchange(&b->healthy, up);
    if (up)
        atomic_store(&b->ever_healthy, true);
    if (was != up) {
        atomic_fetch_add(&b->health_transitions, 1);
        log_info("proxy: pool %s backend %s (%s) is %s", b->pool->name, b->id, b->addr_s,
                 up ? "up" : "down");
        struct lb_set *cur = atomic_load(&b->pool->cur);
        if (cur->ops->update)
            cur->ops->update(cur, b);
    }
}

void pool__backend_down(struct lb_set *set, struct backend *b, const char *why)
{
    if (atomic_exchange(&b->healthy, false)) {
        atomic_fetch_add(&b->health_transitions, 1);
        log_warn("proxy: pool %s backend %s (%s) is down: %s", b->pool->name, b->id, b->addr_s,
                 why);
        if (set && set->ops->update)
            set->ops->update(set, b);
    }
}

static uint64_t min_quiescent(struct proxy *p)
{
    uint64_t m = UINT64_MAX;
    for (unsigned i = 0; i < p->nworkers; i++) {
        if (!p->w[i].started)
            continue;
        uint64_t g = atomic_load(&p->w[i].qs_gen);
        if (g < m)
            m = g;
    }
    return m == UINT64_MAX ? atomic_load(&p->gen) : m;
}

void pool__retire_ptr(struct proxy *p, void *ptr, void (*fn)(void *))
{
    struct retired_ptr *r = xcalloc(1, sizeof(*r));
    r->ptr = ptr;
    r->fn = fn;
    r->gen = atomic_fetch_add(&p->gen, 1) + 1;
    pthread_mutex_lock(&p->ctl_lock);
    r->next = p->retired_misc;
    p->retired_misc = r;
    pthread_mutex_unlock(&p->ctl_lock);
}

void pool__reclaim(struct proxy *p, uint64_t now)
{
    uint64_t q = min_quiescent(p);
    pthread_mutex_lock(&p->ctl_lock);
    for (struct retired_ptr **pp = &p->retired_misc; *pp;) {
        struct retired_ptr *r = *pp;
        if (r->gen <= q) {
            *pp = r->next;
            r->fn(r->ptr);
            free(r);
        } else {
            pp = &r->next;
        }
    }
    for (struct lb_set **pp = &p->retired; *pp;) {
        struct lb_set *s = *pp;
        if (s->retire_gen <= q) {
            *pp = s->retired_next;
            lb_set__free(s);
        } else {
            pp = &s->retired_next;
        }
    }
    pthread_mutex_unlock(&p->ctl_lock);
    pthread_mutex_lock(&p->lock);
    for (struct proxy_pool *pool = p->pools; pool; pool = pool->next) {
        pthread_mutex_lock(&pool->lock);
        for (struct backend **bp = &pool->all; *bp;) {
            struct backend *b = *bp;
            if (!atomic_load(&b->removed)) {
                bp = &b->next;
                continue;
            }
            if (now - b->removed_at >= pool->o.drain_timeout_ms)
                atomic_store(&b->drain_expired, true);
            if (b->retire_gen <= q && atomic_load(&b->inflight) == 0 &&
                atomic_load(&b->idle_conns) == 0) {
                *bp = b->next;
                health__stop_backend(p, b);
                backend_free(b);
                continue;
            }
            bp = &b->next;
        }
        pthread_mutex_unlock(&pool->lock);
    }
    pthread_mutex_unlock(&p->lock);
}

void pool__free_all(struct proxy *p)
{
    for (struct lb_set *s = p->retired, *n; s; s = n) {
        n = s->retired_next;
        lb_set__free(s);
    }
    p->retired = NULL;
    for (struct retired_ptr *r = p->retired_misc, *n; r; r = n) {
        n = r->next;
        r->fn(r->ptr);
        free(r);
    }
    p->retired_misc = NULL;
    for (struct proxy_pool *pool = p->pools, *pn; pool; pool = pn) {
        pn = pool->next;
        for (struct backend *b = pool->all, *bn; b; b = bn) {
            bn = b->next;
            health__stop_backend(p, b);
            backend_free(b);
        }
        lb_set__free(atomic_load(&pool->cur));
        pthread_mutex_destroy(&pool->lock);
        free(pool->name);
        free(pool->health_path);
        free(pool->sticky_cookie);
        free(pool->peer_service);
        free(pool);
    }
    p->pools = NULL;
}

void proxy_pool_free(struct proxy_pool *pool)
{
    if (pool->p->rops) {
        pool->p->rops->pool_free(pool);
        return;
    }
    /* Empty the set (everything drains); the memory goes with the proxy:
     * workers may still hold exchanges on it until they finish. */
    proxy_pool_set_backends(pool, NULL, 0);
    pthread_mutex_lock(&pool->lock);
    pool->freeing = true;
    pthread_mutex_unlock(&pool->lock);
}

static double hist_quantile(const uint64_t *h, double q)
{
    uint64_t total = 0;
    for (int i = 0; i < PROXY_NHIST; i++)
        total += h[i];
    if (!total)
        return 0;
    double want = q * (double)total, acc = 0;
    for (int i = 0; i < PROXY_NHIST; i++) {
        if (acc + (double)h[i] >= want && h[i]) {
            double lo = i ? proxy_hist_bounds_ms[i - 1] : 0;
            double hi = i < PROXY_NHIST - 1 ? proxy_hist_bounds_ms[i] : lo * 2;
            return lo + (hi - lo) * ((want - acc) / (double)h[i]);
        }
        acc += (double)h[i];
    }
    return proxy_hist_bounds_ms[PROXY_NHIST - 2];
}

static void fill_stats(struct proxy *p, struct backend *b, struct proxy_backend_stats *o)
{
    memset(o, 0, sizeof(*o));
    snprintf(o->id, sizeof(o->id), "%s", b->id);
    snprintf(o->addr, sizeof(o->addr), "%s", b->addr_s);
    o->healthy = atomic_load(&b->healthy);
    o->draining = atomic_load(&b->removed);
    o->ever_healthy = atomic_load(&b->ever_healthy);
    o->consecutive_failures = atomic_load(&b->consecutive_failures);
    o->inflight = atomic_load(&b->inflight);
    o->health_transitions = atomic_load(&b->health_transitions);
    uint64_t *hist = o->hist, lat_us = 0;
    for (unsigned w = 0; w < p->nworkers; w++) {
        struct bstat *st = &b->st[w];
        o->requests += STAT_GET(&st->requests);
        o->failures += STAT_GET(&st->failures);
        o->retries += STAT_GET(&st->retries);
        o->status_none += STAT_GET(&st->status[0]);
        lat_us += STAT_GET(&st->lat_sum_us);
        o->status_2xx += STAT_GET(&st->status[2]);
        o->status_3xx += STAT_GET(&st->status[3]);
        o->status_4xx += STAT_GET(&st->status[4]);
        o->status_5xx += STAT_GET(&st->status[5]);
        for (int i = 0; i < PROXY_NHIST; i++)
            hist[i] += STAT_GET(&st->hist[i]);
    }
    o->latency_sum_s = (double)lat_us / 1e6;
    o->instance = p->instance_id;
    o->p50_ms = hist_quantile(hist, 0.50);
    o->p99_ms = hist_quantile(hist, 0.99);
}

int proxy_pool_stats(struct proxy_pool *pool, struct proxy_backend_stats **out, size_t *n)
{
    struct proxy *p = pool->p;
    if (p->rops)
        return p->rops->pool_stats(pool, out, n);
    pthread_mutex_lock(&pool->lock);
    size_t cap = 0;
    for (struct backend *b = pool->all; b; b = b->next)
        cap++;
    struct proxy_backend_stats *v = xcalloc(cap ? cap : 1, sizeof(*v));
    size_t k = 0;
    struct lb_set *cur = atomic_load(&pool->cur);
    for (size_t i = 0; i < cur->n; i++)
        fill_stats(p, cur->b[i], &v[k++]);
    for (struct backend *b = pool->all; b; b = b->next)
        if (atomic_load(&b->removed) && !atomic_load(&b->drain_expired))
            fill_stats(p, b, &v[k++]);
    pthread_mutex_unlock(&pool->lock);
    *out = v;
    *n = k;
    return 0;
}

void proxy_pool_stats_free(struct proxy_backend_stats *s) { free(s); }
