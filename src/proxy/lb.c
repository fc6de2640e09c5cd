/* lb.c — what every strategy shares: the table, usability, in-flight
 * accounting, the shared round-robin cursor, hashing. */
#include <errno.h>
#include <sys/socket.h>
#include <string.h>

#include "core/assert.h"
#include "proxy/proxy_int.h"

size_t lb_count(void)
{
    size_t n = 0;
    while (lb_table[n])
        n++;
    return n;
}

const struct lb_ops *lb_ops_for(int kind)
{
    return kind >= 0 && (size_t)kind < lb_count() ? lb_table[kind] : NULL;
}

const char *lb_kind_name(enum lb_kind kind)
{
    const struct lb_ops *ops = lb_ops_for((int)kind);
    return ops ? ops->name : "?";
}

int lb_kind_parse(const char *name, enum lb_kind *out)
{
    for (size_t i = 0; lb_table[i]; i++)
        if (strcmp(name, lb_table[i]->name) == 0) {
            *out = (enum lb_kind)i;
            return 0;
        }
    /* common spellings of other balancers */
    if (strcmp(name, "least_conn") == 0 || strcmp(name, "leastconn") == 0) {
        *out = LB_LEAST_CONN;
        return 0;
    }
    if (strcmp(name, "roundrobin") == 0) {
        *out = LB_ROUND_ROBIN;
        return 0;
    }
    return -EINVAL;
}

/* IPv4 whole; IPv6 by the pool's prefix (a client's privacy addresses
 * change within its /64). */
static uint64_t addr_hash(const struct proxy_pool *pool, int family, const uint8_t *a)
{
    if (family == AF_INET)
        return lb_hash64(a, 4, 4);
    uint8_t m[16] = {0};
    unsigned bits = pool->o.ipv6_prefix, full = bits / 8, rem = bits % 8;
    memcpy(m, a, full);
    if (rem)
        m[full] = (uint8_t)(a[full] & (0xff << (8 - rem)));
    return lb_hash64(m, 16, 6);
}

void lb_request(const struct proxy_pool *pool, const struct http_msg *m, int family,
                const uint8_t *addr, struct lb_req *r)
{
    const struct lb_ops *ops = pool->ops;
    if (ops->needs & LB_NEED_ADDR)
        r->client_hash = addr_hash(pool, family, addr);
    if ((ops->needs & LB_NEED_HDR) && ops->on_request)
        ops->on_request(pool, m, r);
}

const char *lb_response(const struct proxy_pool *pool, const struct lb_req *r,
                        const struct backend *b, char val[LB_KEY_MAX])
{
    const struct lb_ops *ops = pool->ops;
    if (!(ops->needs & LB_NEED_RSP) || !ops->on_response)
        return NULL;
    return ops->on_response(pool, r, b, val);
}

bool lb_usable(const struct backend *b, const struct lb_req *r)
{
    if (!atomic_load_explicit(&b->healthy, memory_order_relaxed))
        return false;
    if (r->local_only && b->peer)
        return false;
    for (unsigned i = 0; i < r->ntried; i++)
        if (r->tried[i] == b)
            return false;
    return !r->maxconn || atomic_load_explicit(&b->inflight, memory_order_relaxed) < r->maxconn;
}

void lb_started(struct lb_set *set, struct backend *b)
{
    atomic_fetch_add_explicit(&b->inflight, 1, memory_order_relaxed);
    if (set && set->ops->update)
        set->ops->update(set, b);
}

void lb_finished(struct lb_set *set, struct backend *b)
{
    /* Every finish pairs with a start: a counter at 0 means a double finish. */
    BUG_ON(atomic_fetch_sub_explicit(&b->inflight, 1, memory_order_release) == 0);
    if (set && set->ops->update)
        set->ops->update(set, b);
}

struct backend *lb_rr_next(struct lb_set *set, struct lb_req *r)
{
    atomic_uint_fast64_t *cur = r->local_only ? &set->pool->rr_local : &set->pool->rr;
    if (set->wb) {
        size_t nw = set->nw;
        for (size_t i = 0; i < nw; i++) {
            uint64_t c = atomic_fetch_add_explicit(cur, 1, memory_order_relaxed);
            struct backend *b = set->wb[c % nw];
            if (lb_usable(b, r))
                return b;
        }
        return lb_scan_from(set, 0, r);
    }
    size_t n = set->n;
    /* Each skipped backend consumes a cursor step: with b2 down, sequential
     * requests go b1, b3, b1, b3 — the others keep their order. */
    uint64_t c = 0;
    for (size_t i = 0; i < n; i++) {
        c = atomic_fetch_add_explicit(cur, 1, memory_order_relaxed);
        struct backend *b = set->b[c % n];
        if (lb_usable(b, r))
            return b;
    }
    /* Other threads advanced the shared cursor between our steps, so our n
     * steps may all have landed on unusable backends while a usable one
     * exists: never fail a request for that. */
    return n ? lb_scan_from(set, (size_t)(c % n), r) : NULL;
}

struct backend *lb_scan_from(struct lb_set *set, size_t start, struct lb_req *r)
{
    size_t n = set->n;
    for (size_t i = 0; i < n; i++) {
        struct backend *b = set->b[(start + i) % n];
        if (lb_usable(b, r))
            return b;
    }
    return NULL;
}

static inline uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

uint64_t lb_hash64(const void *p, size_t n, uint64_t seed)
{
    const unsigned char *s = p;
    uint64_t h = 0xcbf29ce484222325ULL ^ mix64(seed + 0x9e3779b97f4a7c15ULL);
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 0x100000001b3ULL;
    }
    return mix64(h);
}
