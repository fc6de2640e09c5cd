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
/* The listening sockets of the listener at addr (still owned by the
 * proxy): their count, or -ENOENT. */
int proxy_listener_fds(struct proxy *p, const struct net_addr *addr, int *fds, size_t max);
/* Worker threads (one listening socket per listener each). */
unsigned proxy_threads(struct proxy *p);

#endif
