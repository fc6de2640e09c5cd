/* lb.h — the balancing strategy interface: every strategy fills one
 * `const struct lb_ops` in its own file (lb_round_robin.c, ...).
 *
 * A strategy works on an immutable snapshot of the backend set (struct
 * lb_set), built by the control side at each swap and read by every worker
 * without a lock. Per-backend live state (health, in-flight count) is in
 * atomics on struct backend, shared by all snapshots that hold it.
 */
#ifndef TAKO_PROXY_LB_H
#define TAKO_PROXY_LB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct backend;
struct proxy_pool;

struct lb_set {
    struct proxy_pool *pool;
    const struct lb_ops *ops;
    size_t n;
    struct backend **b; /* in the order given to proxy_pool_set_backends */
    void *data;         /* the strategy's own structure */
    uint64_t retire_gen;
    struct lb_set *retired_next;
};

/* What a pick may look at. */
struct lb_req {
    uint64_t client_hash;            /* ip_hash: hash of the (prefix of the) client address */
    const char *cookie;              /* sticky: the pinned value, NULL when none */
    size_t cookie_len;
    struct backend *const *tried;    /* backends this request already failed on */
    unsigned ntried;
    unsigned maxconn;                /* a backend with this many in flight is full; 0: no limit */
    uint64_t (*rand)(void *ctx);     /* uniform 64-bit random numbers */
    void *rand_ctx;
};

struct lb_ops {
    const char *name;
    /* Build set->data for a fresh set (set->b, set->n filled). 0 or -errno. */
    int (*build)(struct lb_set *set);
    void (*destroy)(struct lb_set *set);
    /* A healthy backend not in r->tried, or NULL when there is none. Must not
     * block or allocate. The caller then calls lb_started(). */
    struct backend *(*pick)(struct lb_set *set, struct lb_req *r);
    /* A backend's in-flight count or health changed (may be NULL). */
    void (*update)(struct lb_set *set, struct backend *b);
};

extern const struct lb_ops lb_round_robin_ops, lb_least_conn_ops, lb_ip_hash_ops,
    lb_random_ops, lb_sticky_ops, lb_p2c_ops;

/* The table, indexed by enum lb_kind. */
const struct lb_ops *lb_ops_for(int kind);

/* Whether b may take this request: healthy, not already tried, not full. */
bool lb_usable(const struct backend *b, const struct lb_req *r);
/* Account for a request started on / finished with b (in-flight counts,
 * least-connections ordering). set may be NULL (no current set). */
void lb_started(struct lb_set *set, struct backend *b);
void lb_finished(struct lb_set *set, struct backend *b);
/* Round robin over usable backends with the pool's shared cursor. */
struct backend *lb_rr_next(struct lb_set *set, struct lb_req *r);
/* First usable backend scanning from index start (wrapping), or NULL. */
struct backend *lb_scan_from(struct lb_set *set, size_t start, struct lb_req *r);

/* 64-bit hashes used for ids and client addresses. */
uint64_t lb_hash64(const void *p, size_t n, uint64_t seed);

#endif
