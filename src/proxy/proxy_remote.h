/* proxy_remote.h — the seam that lets the proxy API be served elsewhere: a
 * `struct proxy` made with proxy_remote_new forwards every call takod makes
 * (pools, listeners, routes, backend sets, stats, metrics) to an ops table,
 * so takod's code calls one API whether the load balancer runs in its own
 * process or, as for `tako proxy`, in this one. */
#ifndef TAKO_PROXY_REMOTE_H
#define TAKO_PROXY_REMOTE_H

#include "proxy/proxy.h"

struct proxy_remote_ops {
    void (*stop)(struct proxy *p); /* the data plane keeps running */
    void (*free)(struct proxy *p); /* release impl; called by proxy_free */
    struct proxy_pool *(*pool_new)(struct proxy *p, const struct proxy_pool_opts *o);
    int (*listen)(struct proxy *p, const struct net_addr *a, struct proxy_pool *def);
    int (*route_host)(struct proxy *p, const struct net_addr *a, const char *domain,
                      struct proxy_pool *pool);
    int (*unlisten)(struct proxy *p, const struct net_addr *a);
    int (*set_default)(struct proxy *p, const struct net_addr *a, struct proxy_pool *pool);
    int (*pool_set)(struct proxy_pool *pool, const struct proxy_backend_spec *b, size_t n);
    void (*pool_free)(struct proxy_pool *pool);
    int (*pool_stats)(struct proxy_pool *pool, struct proxy_backend_stats **out, size_t *n);
    char *(*metrics)(struct proxy *p);
};

/* A proxy whose calls go to ops; impl is the implementation's state. */
struct proxy *proxy_remote_new(const struct proxy_remote_ops *ops, void *impl);
void *proxy_remote_impl(struct proxy *p);
/* A pool handle of a remote proxy carrying the implementation's pool. */
struct proxy_pool *proxy_remote_pool_new(struct proxy *p, void *impl);
void *proxy_remote_pool_impl(struct proxy_pool *pool);

#endif
