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
    /* HTTPS: what proxy_tls.c does in-process (see proxy.h). Certificate
     * files are read by the caller's side and travel as PEM text. */
    int (*listen_tls)(struct proxy *p, const struct net_addr *a, struct proxy_pool *def);
    int (*tls_set_cert)(struct proxy *p, const char *id, const char *cert_pem, size_t cert_len,
                        const char *key_pem, size_t key_len, char *err, size_t errlen);
    int (*tls_del_cert)(struct proxy *p, const char *id);
    bool (*tls_has_name)(struct proxy *p, const char *host);
    int (*https_redirect)(struct proxy *p, const struct net_addr *a, unsigned https_port);
    int (*hsts)(struct proxy *p, const struct net_addr *a, uint64_t max_age_s);
    void (*challenge_set)(struct proxy *p, const char *token, const char *keyauth);
    void (*challenge_del)(struct proxy *p, const char *token);
    int (*tls_stats)(struct proxy *p, struct proxy_tls_stats *out);
    /* the serving process's proxy_instance_id(); NULL: 0 */
    uint64_t (*instance_id)(struct proxy *p);
    int (*listener_stats)(struct proxy *p, struct proxy_listener_stats **out, size_t *n);
    /* Several servers per environment (see proxy_listen_peer); NULL: ENOSYS. */
    int (*listen_peer)(struct proxy *p, const struct net_addr *a, const struct proxy_cidr *allow,
                       size_t nallow);
    int (*peer_allow)(struct proxy *p, const struct net_addr *a, const struct proxy_cidr *allow,
                      size_t nallow);
};

/* A proxy whose calls go to ops; impl is the implementation's state. */
struct proxy *proxy_remote_new(const struct proxy_remote_ops *ops, void *impl);
void *proxy_remote_impl(struct proxy *p);
/* A pool handle of a remote proxy carrying the implementation's pool. */
struct proxy_pool *proxy_remote_pool_new(struct proxy *p, void *impl);
void *proxy_remote_pool_impl(struct proxy_pool *pool);

#endif
