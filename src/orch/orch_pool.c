/* orch_pool.c — the reconciler's side of the balancer: one pool per
 * service (replaced when its strategy or health options change), its
 * backend set pushed when it changed (by digest), and the listeners with
 * their Host routes recomputed from the services. */
#include "orch/orch.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
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

static void pool_opts_of(const struct orch_service *s, struct proxy_pool_opts *po, char *name,
                         size_t namelen, char *peer_svc, size_t svclen, char *peer_src,
                         size_t srclen)
{
    const struct cfg_service *c = s->cfg;
    snprintf(name, namelen, "%s-%s", s->project, s->name);
    memset(po, 0, sizeof(*po));
    /* Several servers: what the other servers' peer listeners route by,
     * and the address their allow lists know this server by. */
    if (s->placement) {
        snprintf(peer_svc, svclen, "%s/%s/%s", s->project, s->env, s->name);
        po->peer_service = peer_svc;
        if (orch__peer_source(s, peer_src, srclen))
            po->peer_source = peer_src;
    }
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


/* Options that, when changed, need a new pool (strategy, health, cookie):
 * a digest of them, so no field is ever cut off. */
static void pool_opts_sig(const struct proxy_pool_opts *po, uint8_t out[ORCH_SIG_LEN])
{
    /* The path itself is per backend (each replica is checked on its own
     * revision's path), so a changed path needs no new pool. */
    char head[512];
    int w = snprintf(head, sizeof(head), "%d|%s|%llu|%llu|%u|%u|%llu|%u|%u|%llu|%llu|%u|%s|%s|",
                     (int)po->strategy, po->health_path ? "http" : "tcp",
                     (unsigned long long)po->health_interval_ms,
                     (unsigned long long)po->health_timeout_ms, po->rise, po->fall,
                     (unsigned long long)po->drain_timeout_ms, po->max_conns_per_backend,
                     po->max_queue, (unsigned long long)po->queue_timeout_ms,
                     (unsigned long long)po->body_timeout_ms, po->min_body_rate,
                     po->peer_service ? po->peer_service : "", po->peer_source ? po->peer_source : "");
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
    size_t cap = s->npeers, n = 0;
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
    n += orch__peer_specs(s, *specs + n, &h);
    sha256_final(&h, sig);
    return n;
}

/* Create the service's pool, or replace it when its options changed: the
 * new pool starts with the ready replicas taking traffic at once
 * (initial_up), listeners are pointed at it, and the old one drains. */
void orch__ensure_pool(struct orch_service *s)
{
    if (s->cfg->port == 0)
        return;
    struct proxy_pool_opts po;
    char name[160], svc[200], src[64];
    uint8_t sig[ORCH_SIG_LEN];
    pool_opts_of(s, &po, name, sizeof(name), svc, sizeof(svc), src, sizeof(src));
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
    orch__sync_listeners(s->o, err, sizeof(err));
    proxy_pool_free(old);
    orch__push_pool(s);
}

/* The service's backend set changed: push it once this turn of the loop is
 * over. Starting N replicas in one turn then costs one push of N backends
 * instead of N pushes of growing sets (O(N²) bytes to the data plane). */
void orch__sync_pool(struct orch_service *s)
{
    s->pool_dirty = true;
    if (!ev_timer_active(&s->o->flush))
        ev_timer_start(s->o->loop, &s->o->flush, 0);
}

void orch__flush_pools(struct orch *o)
{
    ev_timer_stop(o->loop, &o->flush);
    for (struct orch_service *s = o->services; s; s = s->next)
        if (s->pool_dirty)
            orch__push_pool(s);
}

void orch__on_flush(struct ev_loop *loop, struct ev_timer *t)
{
    (void)loop;
    orch__flush_pools(t->data);
}

/* Push the active replicas into the pool when the set changed. */
void orch__push_pool(struct orch_service *s)
{
    s->pool_dirty = false;
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
/* Which listeners the services want: dedicated ports, entrypoints, and
 * the HTTPS port of services with HTTPS (TLS decided when first bound). */
static void listeners_mark_wanted(struct orch *o)
{
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
}

/* What one listener should do now. */
struct listener_plan {
    struct orch_route want[ORCH_MAX_ROUTES];
    size_t nw;
    struct proxy_pool *def; /* no Host route matched (NULL: 404) */
    unsigned redirect_to;   /* plain listener: redirect to this HTTPS port (0 none) */
    uint64_t hsts;          /* TLS listener: Strict-Transport-Security max-age (0 none) */
};

/* Dedicated port → that pool; entrypoint → domains, plus the one
 * domainless web service when there is exactly one. */
static void listener_plan(struct orch *o, const struct orch_listener *l,
                          struct listener_plan *p)
{
    int ndef = 0;
    bool dedicated = false;
    p->nw = 0;
    p->def = NULL;
    p->redirect_to = 0;
    p->hsts = 0;
    for (struct orch_service *s = o->services; s; s = s->next) {
        if (!s->pool || s->removing)
            continue;
        bool https = cfg_proxy_https(&s->cfg->proxy) && s->http_port;
        if (!l->tls && s->cfg->proxy.port == l->port) {
            p->def = s->pool;
            dedicated = true;
        }
        if (https && !l->tls && s->http_port == l->port)
            p->redirect_to = s->cfg->proxy.https_port;
        if (l->tls) {
            if (!https || s->cfg->proxy.https_port != l->port)
                continue;
            if (s->cfg->proxy.hsts_s > p->hsts)
                p->hsts = s->cfg->proxy.hsts_s;
        } else if (s->http_port != l->port) {
            continue;
        }
        for (size_t d = 0; d < s->cfg->proxy.domains_len && p->nw < ORCH_MAX_ROUTES; d++) {
            snprintf(p->want[p->nw].domain, sizeof(p->want[p->nw].domain), "%s",
                     s->cfg->proxy.domains[d]);
            p->want[p->nw].pool = s->pool;
            p->nw++;
        }
        if (s->cfg->proxy.domains_len == 0 && s->cfg->proxy.port == 0 && !dedicated) {
            p->def = s->pool;
            ndef++;
        }
    }
    if (!dedicated && ndef > 1)
        p->def = NULL; /* several domainless services: only Host routes */
}

/* Bind the listener if needed and apply the difference to its default,
 * routes, redirect and HSTS. Returns 0 or the bind's -errno. */
static int listener_apply(struct orch *o, struct orch_listener *l, const struct listener_plan *p)
{
    struct net_addr a;
    char as[32];
    snprintf(as, sizeof(as), "0.0.0.0:%u", l->port);
    net_parse_addr(as, NULL, &a);
    if (!l->bound) {
        int r = l->tls ? proxy_listen_tls(o->proxy, &a, p->def)
                       : proxy_listen(o->proxy, &a, p->def);
        if (r < 0)
            return r;
        l->bound = true;
        l->def = p->def;
    } else if (l->def != p->def) {
        proxy_listener_set_default(o->proxy, &a, p->def);
        l->def = p->def;
    }
    /* Routes: drop the ones no longer wanted, set the others. */
    for (size_t i = 0; i < l->nroutes; i++) {
        bool keep = false;
        for (size_t j = 0; j < p->nw; j++)
            if (strcasecmp(l->routes[i].domain, p->want[j].domain) == 0)
                keep = true;
        if (!keep)
            proxy_route_host(o->proxy, &a, l->routes[i].domain, NULL);
    }
    for (size_t j = 0; j < p->nw; j++)
        proxy_route_host(o->proxy, &a, p->want[j].domain, p->want[j].pool);
    memcpy(l->routes, p->want, p->nw * sizeof(p->want[0]));
    l->nroutes = p->nw;
    if (!l->tls && l->redirect_to != p->redirect_to) {
        proxy_listener_https_redirect(o->proxy, &a, p->redirect_to);
        l->redirect_to = p->redirect_to;
    }
    if (l->tls && l->hsts != p->hsts) {
        proxy_listener_hsts(o->proxy, &a, p->hsts);
        l->hsts = p->hsts;
    }
    return 0;
}

/* Close and forget the listeners nothing wants any more. */
static void listeners_drop_unwanted(struct orch *o)
{
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
}

int orch__sync_listeners(struct orch *o, char *err, size_t errlen)
{
    int rc = orch__sync_peer_listeners(o, err, errlen);
    listeners_mark_wanted(o);
    struct listener_plan *p = xmalloc(sizeof(*p)); /* 67 KB of routes: not on the stack */
    for (struct orch_listener *l = o->listeners; l; l = l->next) {
        if (!l->wanted)
            continue;
        listener_plan(o, l, p);
        int r = listener_apply(o, l, p);
        if (r < 0 && rc == 0) {
            rc = r;
            snprintf(err, errlen, "cannot listen on port %u: %s", l->port, strerror(-r));
        }
    }
    free(p);
    listeners_drop_unwanted(o);
    return rc;
}
