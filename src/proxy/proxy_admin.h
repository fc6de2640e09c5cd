/* proxy_admin.h — listener changes takod makes while the proxy runs. */
#ifndef TAKO_PROXY_ADMIN_H
#define TAKO_PROXY_ADMIN_H

#include "core/net.h"
#include "proxy/proxy.h"

/* Replace the default pool of the listener at addr (NULL: unknown hosts get
 * 404). Atomic for the workers, like proxy_route_host. -ENOENT when there is
 * no such listener. */
int proxy_listener_set_default(struct proxy *p, const struct net_addr *addr,
                               struct proxy_pool *pool);

/* Listen on addr with sockets handed over by another process (fds[0..n),
 * owned by the proxy from now on, also on failure; one per worker thread,
 * missing ones are bound here). n 0 is proxy_listen. */
int proxy_listen_fds(struct proxy *p, const struct net_addr *addr, const int *fds, size_t n,
                     struct proxy_pool *default_pool);
/* A listener set up whole, for a process that takes one over or rebuilds
 * it: the transport, default pool, Host routes, redirect and HSTS are all in
 * place before the first connection is accepted (connections waiting in a
 * handed-over queue must not meet a listener without its routes). */
struct proxy_listen_spec {
    const int *fds; /* handed over, owned by the proxy from now on, also on failure */
    size_t nfds;
    struct proxy_pool *def;
    bool tls;
    const char *const *domains; /* Host routes: domains[i] → pools[i] */
    struct proxy_pool *const *pools;
    size_t nroutes;
    unsigned https_redirect; /* plain: as proxy_listener_https_redirect */
    uint64_t hsts_s;         /* TLS: as proxy_listener_hsts */
    bool peer;               /* a peer listener (proxy_listen_peer): routes are services */
    const struct proxy_cidr *allow; /* its allow list */
    size_t nallow;
};
int proxy_listen_spec(struct proxy *p, const struct net_addr *addr,
                      const struct proxy_listen_spec *s);
/* The listening sockets of the listener at addr (still owned by the
 * proxy): their count, or -ENOENT. */
int proxy_listener_fds(struct proxy *p, const struct net_addr *addr, int *fds, size_t max);
/* Worker threads (one listening socket per listener each). */
unsigned proxy_threads(struct proxy *p);

#endif
