/* proxy_admin.c — listener changes takod makes while the proxy runs: the
 * routing table of a listener is immutable and swapped whole, so readers
 * (the workers) never lock. */
#include "proxy/proxy_admin.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "proxy/proxy_int.h"

static void free_routes(void *rt) { free(rt); }

int proxy_listener_set_default(struct proxy *p, const struct net_addr *addr,
                               struct proxy_pool *pool)
{
    if (p->rops)
        return p->rops->set_default(p, addr, pool);
    pthread_mutex_lock(&p->lock);
    struct listener *l = p->listeners;
    while (l && !(l->addr.len == addr->len && memcmp(&l->addr.ss, &addr->ss, addr->len) == 0))
        l = l->next;
    if (!l) {
        pthread_mutex_unlock(&p->lock);
        return -ENOENT;
    }
    struct routes *old = atomic_load(&l->routes);
    struct routes *rt = xcalloc(1, sizeof(*rt) + old->n * sizeof(struct route));
    memcpy(rt->r, old->r, old->n * sizeof(struct route));
    rt->n = old->n;
    rt->def = pool;
    atomic_store(&l->routes, rt);
    pthread_mutex_unlock(&p->lock);
    pool__retire_ptr(p, old, free_routes);
    return 0;
}
