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

#endif
