/* lb.c — what every strategy shares: the table, usability, in-flight
 * accounting, the shared round-robin cursor, hashing. */
#include <errno.h>
#include <string.h>

#include "proxy/proxy_int.h"

static const struct lb_ops *const table[LB_KIND_COUNT] = {
    [LB_ROUND_ROBIN] = &lb_round_robin_ops, [LB_LEAST_CONN] = &lb_least_conn_ops,
    [LB_IP_HASH] = &lb_ip_hash_ops,         [LB_RANDOM] = &lb_random_ops,
    [LB_STICKY] = &lb_sticky_ops,           [LB_P2C] = &lb_p2c_ops,
};

static const char *const names[LB_KIND_COUNT] = {
    [LB_ROUND_ROBIN] = "round_robin", [LB_LEAST_CONN] = "least_connections",
    [LB_IP_HASH] = "ip_hash",         [LB_RANDOM] = "random",
    [LB_STICKY] = "sticky",           [LB_P2C] = "p2c",
};

const struct lb_ops *lb_ops_for(int kind)
{
    return kind >= 0 && kind < LB_KIND_COUNT ? table[kind] : NULL;
}

const char *lb_kind_name(enum lb_kind kind)
{
    return (unsigned)kind < LB_KIND_COUNT ? names[kind] : "?";
}

int lb_kind_parse(const char *name, enum lb_kind *out)
{
    for (int i = 0; i < LB_KIND_COUNT; i++)
        if (strcmp(name, names[i]) == 0) {
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

bool lb_usable(const struct backend *b, const struct lb_req *r)
{
    if (!atomic_load_explicit(&b->healthy, memory_order_relaxed))
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
    atomic_fetch_sub_explicit(&b->inflight, 1, memory_order_release);
    if (set && set->ops->update)
        set->ops->update(set, b);
}

struct backend *lb_rr_next(struct lb_set *set, struct lb_req *r)
{
    size_t n = set->n;
    /* Each skipped backend consumes a cursor step: with b2 down, sequential
     * requests go b1, b3, b1, b3 — the others keep their order. */
    uint64_t c = 0;
    for (size_t i = 0; i < n; i++) {
        c = atomic_fetch_add_explicit(&set->pool->rr, 1, memory_order_relaxed);
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
