/* proxy.c — the module's life cycle and listeners: create, start, stop,
 * free; listen / route by Host / unlisten while running. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"
#include "proxy/proxy_admin.h"
#include "proxy/proxy_int.h"

int worker__init(struct proxy *p, struct worker *w, unsigned idx);
void worker__destroy(struct worker *w);

int proxy_cidr_parse(const char *s, struct proxy_cidr *out)
{
    char buf[64];
    const char *slash = strchr(s, '/');
    size_t n = slash ? (size_t)(slash - s) : strlen(s);
    if (n == 0 || n >= sizeof(buf))
        return -EINVAL;
    memcpy(buf, s, n);
    buf[n] = '\0';
    memset(out, 0, sizeof(*out));
    unsigned max;
    if (inet_pton(AF_INET, buf, out->addr) == 1) {
        out->family = AF_INET;
        max = 32;
    } else if (inet_pton(AF_INET6, buf, out->addr) == 1) {
        out->family = AF_INET6;
        max = 128;
    } else {
        return -EINVAL;
    }
    out->prefix = max;
    if (slash) {
        uint64_t v;
        if (parse_uint(slash + 1, max, &v) < 0)
            return -EINVAL;
        out->prefix = (unsigned)v;
    }
    return 0;
}

static void opts_defaults(struct proxy_opts *o)
{
    if (!o->threads) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        o->threads = n > 0 ? (unsigned)n : 1;
    }
    if (o->threads > PROXY_MAX_THREADS)
        o->threads = PROXY_MAX_THREADS;
    if (!o->connect_timeout_ms)
        o->connect_timeout_ms = 5000;
    if (!o->timeout_ms)
        o->timeout_ms = 60000;
    if (!o->header_timeout_ms)
        o->header_timeout_ms = 10000;
    if (!o->idle_timeout_ms)
        o->idle_timeout_ms = 60000;
    if (!o->tunnel_timeout_ms)
        o->tunnel_timeout_ms = 3600000;
    if (!o->upstream_idle_ms)
        o->upstream_idle_ms = 4000;
    if (!o->stop_timeout_ms)
        o->stop_timeout_ms = 10000;
    if (!o->max_conns)
        o->max_conns = 10000;
    if (!o->max_header_size)
        o->max_header_size = 8192;
    if (o->max_header_size < 256)
        o->max_header_size = 256;
    if (o->max_header_size > 1 << 20)
        o->max_header_size = 1 << 20;
    if (!o->max_headers || o->max_headers > HTTP_MAX_HEADERS)
        o->max_headers = HTTP_MAX_HEADERS;
    if (!o->max_idle_per_backend)
        o->max_idle_per_backend = 64;
}

struct proxy *proxy_new(const struct proxy_opts *o)
{
    struct proxy *p = xcalloc(1, sizeof(*p));
    p->o = *o;
    opts_defaults(&p->o);
    p->nworkers = p->o.threads;
    p->log_fd = -1;
    p->metrics_fd = -1;
    p->ctl_evfd = -1;
    /* Only needs to differ from the previous instance's: a reader keeping
     * totals across restarts folds the old instance's counters when it
     * changes. Time and pid make a repeat practically impossible. */
    p->instance_id = ((uint64_t)ev_time_ms() << 20) ^ ((uint64_t)getpid() << 1) ^
                     (uint64_t)(uintptr_t)p;
    if (getrandom(&p->instance_id, sizeof(p->instance_id), GRND_NONBLOCK) !=
        (ssize_t)sizeof(p->instance_id))
        p->instance_id ^= (uint64_t)time(NULL);
    pthread_mutex_init(&p->lock, NULL);
    pthread_mutex_init(&p->ctl_lock, NULL);
    pthread_mutex_init(&p->chal_lock, NULL);
    if (o->ntrusted) {
        p->trusted = xcalloc(o->ntrusted, sizeof(*p->trusted));
        memcpy(p->trusted, o->trusted, o->ntrusted * sizeof(*p->trusted));
        p->ntrusted = o->ntrusted;
    }
    p->o.trusted = p->trusted;
    if (o->metrics_addr) {
        p->metrics_addr = *o->metrics_addr;
        p->have_metrics = true;
    }
    p->o.metrics_addr = NULL;
    p->o.access_log = NULL;
    if (o->access_log) {
        if (strcmp(o->access_log, "-") == 0) {
            p->log_fd = STDOUT_FILENO;
        } else {
            p->log_fd = open(o->access_log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
            if (p->log_fd == -1) {
                int e = errno;
                free(p->trusted);
                free(p);
                errno = e;
                return NULL;
            }
            p->log_close = true;
        }
    }
    p->w = xcalloc(p->nworkers, sizeof(*p->w));
    for (unsigned i = 0; i < p->nworkers; i++) {
        int r = worker__init(p, &p->w[i], i);
        if (r < 0)
            die(1, "proxy: worker setup: %s", strerror(-r));
    }
    return p;
}

struct proxy *proxy_remote_new(const struct proxy_remote_ops *ops, void *impl)
{
    struct proxy *p = xcalloc(1, sizeof(*p));
    p->rops = ops;
    p->remote = impl;
    return p;
}

void *proxy_remote_impl(struct proxy *p) { return p->remote; }

struct proxy_pool *proxy_remote_pool_new(struct proxy *p, void *impl)
{
    struct proxy_pool *pool = xcalloc(1, sizeof(*pool));
    pool->p = p;
    pool->remote = impl;
    return pool;
}

void *proxy_remote_pool_impl(struct proxy_pool *pool) { return pool->remote; }

int proxy_start(struct proxy *p)
{
    if (p->rops)
        return 0;
    pthread_mutex_lock(&p->lock);
    if (p->running) {
        pthread_mutex_unlock(&p->lock);
        return -EALREADY;
    }
    p->running = true;
    pthread_mutex_unlock(&p->lock);
    int r = control__start(p);
    if (r == 0)
        r = worker__start_all(p);
    if (r < 0) {
        /* nothing keeps running: proxy_stop and proxy_free stay safe */
        worker__stop_all(p);
        if (p->ctl_evfd >= 0)
            control__stop(p);
        pthread_mutex_lock(&p->lock);
        p->running = false;
        pthread_mutex_unlock(&p->lock);
    }
    return r;
}

void proxy_stop(struct proxy *p)
{
    if (p->rops) {
        p->rops->stop(p);
        return;
    }
    pthread_mutex_lock(&p->lock);
    bool was = p->running;
    p->running = false;
    pthread_mutex_unlock(&p->lock);
    if (!was)
        return;
    worker__stop_all(p);
    control__stop(p);
}

void proxy_free(struct proxy *p)
{
    if (!p)
        return;
    if (p->rops) {
        p->rops->free(p);
        free(p);
        return;
    }
    proxy_stop(p);
    for (unsigned i = 0; i < p->nworkers; i++)
        worker__destroy(&p->w[i]);
    pthread_mutex_lock(&p->lock);
    while (p->listeners) {
        struct listener *l = p->listeners;
        p->listeners = l->next;
        listener__unref(l);
    }
    pthread_mutex_unlock(&p->lock);
    pool__free_all(p);
    for (struct domain_str *d = p->domains, *n; d; d = n) {
        n = d->next;
        free(d);
    }
    if (p->log_close)
        close(p->log_fd);
    proxy__tls_free(p);
    free(p->w);
    free(p->trusted);
    pthread_mutex_destroy(&p->lock);
    pthread_mutex_destroy(&p->ctl_lock);
    free(p);
}

static bool addr_eq(const struct net_addr *a, const struct net_addr *b)
{
    return a->len == b->len && memcmp(&a->ss, &b->ss, a->len) == 0;
}

static struct listener *find_listener(struct proxy *p, const struct net_addr *a)
{
    for (struct listener *l = p->listeners; l; l = l->next)
        if (addr_eq(&l->addr, a))
            return l;
    return NULL;
}

static int listener_open(struct proxy *p, const struct net_addr *addr, const int *given,
                         size_t ngiven, struct proxy_pool *default_pool,
                         const struct xprt_ops *xprt, void *xprt_arg,
                         const struct proxy_listen_spec *spec);

int proxy_listen(struct proxy *p, const struct net_addr *addr, struct proxy_pool *default_pool)
{
    if (p->rops)
        return p->rops->listen(p, addr, default_pool);
    return listener_open(p, addr, NULL, 0, default_pool, &xprt_tcp, NULL, NULL);
}

int proxy_listen_xprt(struct proxy *p, const struct net_addr *addr, struct proxy_pool *default_pool,
                      const struct xprt_ops *xprt, void *xprt_arg)
{
    return listener_open(p, addr, NULL, 0, default_pool, xprt, xprt_arg, NULL);
}

int proxy_listen_fds(struct proxy *p, const struct net_addr *addr, const int *given,
                     size_t ngiven, struct proxy_pool *default_pool)
{
    return listener_open(p, addr, given, ngiven, default_pool, &xprt_tcp, NULL, NULL);
}

static struct peer_allow *allow_new(const struct proxy_cidr *allow, size_t n)
{
    struct peer_allow *a = xcalloc(1, sizeof(*a) + n * sizeof(a->c[0]));
    a->n = n;
    if (n)
        memcpy(a->c, allow, n * sizeof(a->c[0]));
    return a;
}

int proxy_listen_peer(struct proxy *p, const struct net_addr *addr,
                      const struct proxy_cidr *allow, size_t nallow)
{
    if (p->rops)
        return p->rops->listen_peer ? p->rops->listen_peer(p, addr, allow, nallow) : -ENOSYS;
    struct proxy_listen_spec s = {.peer = true, .allow = allow, .nallow = nallow};
    return listener_open(p, addr, NULL, 0, NULL, &xprt_tcp, NULL, &s);
}

static void free_allow(void *a) { free(a); }

int proxy_listener_peer_allow(struct proxy *p, const struct net_addr *addr,
                              const struct proxy_cidr *allow, size_t nallow)
{
    if (p->rops)
        return p->rops->peer_allow ? p->rops->peer_allow(p, addr, allow, nallow) : -ENOSYS;
    pthread_mutex_lock(&p->lock);
    struct listener *l = find_listener(p, addr);
    if (!l || !l->peer) {
        pthread_mutex_unlock(&p->lock);
        return -ENOENT;
    }
    struct peer_allow *old = atomic_exchange(&l->allow, allow_new(allow, nallow));
    pthread_mutex_unlock(&p->lock);
    pool__retire_ptr(p, old, free_allow);
    return 0;
}

int proxy_listen_spec(struct proxy *p, const struct net_addr *addr,
                      const struct proxy_listen_spec *s)
{
    if (s->tls)
        proxy__tls(p); /* the store exists before the first handshake */
    return listener_open(p, addr, s->fds, s->nfds, s->def, s->tls ? &xprt_tls : &xprt_tcp,
                         s->tls ? p : NULL, s);
}

/* r = domain → pool; the domain string lives as long as the proxy (routes
 * share it). Under p->lock. */
static void route_fill(struct proxy *p, struct route *r, const char *domain,
                       struct proxy_pool *pool)
{
    size_t dl = strlen(domain);
    struct domain_str *ds = xmalloc(sizeof(*ds) + dl + 1);
    memcpy(ds->s, domain, dl + 1);
    ds->next = p->domains;
    p->domains = ds;
    for (char *c = ds->s; *c; c++)
        if (*c >= 'A' && *c <= 'Z')
            *c = (char)(*c - 'A' + 'a');
    r->domain = ds->s;
    r->len = dl;
    r->pool = pool;
}

/* One listener: given sockets first (handed over by another process), the
 * rest bound here; every accepted connection runs over xprt. */
static int listener_open(struct proxy *p, const struct net_addr *addr, const int *given,
                         size_t ngiven, struct proxy_pool *default_pool,
                         const struct xprt_ops *xprt, void *xprt_arg,
                         const struct proxy_listen_spec *spec)
{
    struct listener *l = xcalloc(1, sizeof(*l));
    l->p = p;
    l->addr = *addr;
    l->xprt = xprt;
    l->xprt_arg = xprt_arg;
    l->fds = xcalloc(p->nworkers, sizeof(int));
    for (unsigned i = 0; i < p->nworkers; i++) {
        /* Sockets handed over keep their queue: connections waiting in it
         * are accepted here. Missing ones join the SO_REUSEPORT group. */
        int fd = i < ngiven ? given[i] : net_listen_tcp(&l->addr, 4096, true);
        if (fd < 0) {
            for (unsigned k = 0; k < i; k++)
                close(l->fds[k]);
            for (size_t k = i + 1; k < ngiven; k++)
                close(given[k]);
            free(l->fds);
            free(l);
            return fd;
        }
        l->fds[i] = fd;
        net_set_nodelay(fd); /* inherited by every accepted socket */
        if (i == 0 && net_addr_port(&l->addr) == 0) {
            /* port 0: every worker's socket takes the port the first got */
            socklen_t sl = sizeof(l->addr.ss);
            getsockname(fd, (struct sockaddr *)&l->addr.ss, &sl);
            l->addr.len = sl;
        }
    }
    /* More sockets than workers: the extra ones would get connections no
     * one accepts. */
    for (size_t k = p->nworkers; k < ngiven; k++)
        close(given[k]);
    size_t nr = spec ? spec->nroutes : 0;
    struct routes *rt = xcalloc(1, sizeof(*rt) + nr * sizeof(struct route));
    rt->def = default_pool;
    atomic_init(&l->refs, 1 + (int)p->nworkers);
    if (spec) {
        atomic_init(&l->https_redirect, spec->https_redirect);
        atomic_init(&l->hsts, spec->hsts_s);
        l->peer = spec->peer;
        if (spec->peer)
            atomic_init(&l->allow, allow_new(spec->allow, spec->nallow));
    }
    pthread_mutex_lock(&p->lock);
    for (size_t i = 0; i < nr; i++)
        if (spec->domains[i] && spec->pools[i])
            route_fill(p, &rt->r[rt->n++], spec->domains[i], spec->pools[i]);
    atomic_init(&l->routes, rt);
    struct listener **tail = &p->listeners;
    while (*tail)
        tail = &(*tail)->next;
    *tail = l;
    for (unsigned i = 0; i < p->nworkers; i++)
        worker__post(&p->w[i], WCMD_LISTEN, l);
    pthread_mutex_unlock(&p->lock);
    char b[64];
    log_info("proxy: listening on %s (%s%s)", net_addr_str(&l->addr, b, sizeof(b)), xprt->name,
             l->peer ? ", peers" : "");
    return 0;
}

int proxy_listener_fds(struct proxy *p, const struct net_addr *addr, int *fds, size_t max)
{
    pthread_mutex_lock(&p->lock);
    struct listener *l = find_listener(p, addr);
    size_t n = 0;
    if (l)
        for (; n < p->nworkers && n < max; n++)
            fds[n] = l->fds[n];
    pthread_mutex_unlock(&p->lock);
    return l ? (int)n : -ENOENT;
}

unsigned proxy_threads(struct proxy *p) { return p->nworkers; }

int proxy_listener_addr(struct proxy *p, size_t index, struct net_addr *out)
{
    pthread_mutex_lock(&p->lock);
    struct listener *l = p->listeners;
    for (size_t i = 0; l && i < index; i++)
        l = l->next;
    if (l)
        *out = l->addr;
    pthread_mutex_unlock(&p->lock);
    return l ? 0 : -ENOENT;
}

static void free_routes(void *rt) { free(rt); }

int proxy_route_host(struct proxy *p, const struct net_addr *listener_addr, const char *domain,
                     struct proxy_pool *pool)
{
    if (p->rops)
        return p->rops->route_host(p, listener_addr, domain, pool);
    pthread_mutex_lock(&p->lock);
    struct listener *l = find_listener(p, listener_addr);
    if (!l) {
        pthread_mutex_unlock(&p->lock);
        return -ENOENT;
    }
    struct routes *old = atomic_load(&l->routes);
    size_t dl = strlen(domain);
    /* copy without the domain, then add it back when pool is set */
    struct routes *rt = xcalloc(1, sizeof(*rt) + (old->n + 1) * sizeof(struct route));
    rt->def = old->def;
    for (size_t i = 0; i < old->n; i++) {
        if (old->r[i].len == dl && strncasecmp(old->r[i].domain, domain, dl) == 0)
            continue;
        rt->r[rt->n++] = old->r[i];
    }
    if (pool)
        route_fill(p, &rt->r[rt->n++], domain, pool);
    atomic_store(&l->routes, rt);
    pthread_mutex_unlock(&p->lock);
    pool__retire_ptr(p, old, free_routes);
    return 0;
}

int proxy_unlisten(struct proxy *p, const struct net_addr *addr)
{
    if (p->rops)
        return p->rops->unlisten(p, addr);
    pthread_mutex_lock(&p->lock);
    struct listener **pp = &p->listeners;
    while (*pp && !addr_eq(&(*pp)->addr, addr))
        pp = &(*pp)->next;
    struct listener *l = *pp;
    if (!l) {
        pthread_mutex_unlock(&p->lock);
        return -ENOENT;
    }
    *pp = l->next;
    l->closed = true;
    for (unsigned i = 0; i < p->nworkers; i++)
        worker__post(&p->w[i], WCMD_UNLISTEN, l);
    pthread_mutex_unlock(&p->lock);
    listener__unref(l);
    return 0;
}
