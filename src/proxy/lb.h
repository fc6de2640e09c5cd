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
struct http_msg;

/* What a strategy needs from a request (HAProxy's BE_LB_NEED_*): the
 * connection code extracts only what the pool's strategy declares. */
#define LB_NEED_ADDR 0x1u /* r->client_hash: hash of the client address (IPv6: its prefix) */
#define LB_NEED_HDR 0x2u  /* on_request is given the request head */
#define LB_NEED_RSP 0x4u  /* on_response may set a cookie on the response */

#define LB_KEY_MAX 64 /* a key taken from the request (a cookie value), with its NUL */

struct lb_set {
    struct proxy_pool *pool;
    const struct lb_ops *ops;
    size_t n;
    struct backend **b; /* in the order given to proxy_pool_set_backends */
    struct backend **wb; /* b with each repeated by its weight, interleaved; NULL: all weigh 1 */
    size_t nw;
    void *data;         /* the strategy's own structure */
    uint64_t retire_gen;
    struct lb_set *retired_next;
};

/* What a pick may look at. The request part is filled once per request by
 * lb_request() according to the strategy's needs. */
struct lb_req {
    uint64_t client_hash;            /* LB_NEED_ADDR: hash of the (prefix of the) client address */
    const char *cookie;              /* sticky: the pinned value, NULL when none */
    size_t cookie_len;
    char key[LB_KEY_MAX];            /* storage for what on_request takes (cookie points here) */
    struct backend *const *tried;    /* backends this request already failed on */
    unsigned ntried;
    unsigned maxconn;                /* a backend with this many in flight is full; 0: no limit */
    bool local_only;                 /* a peer listener's request: no peer backend */
    uint64_t (*rand)(void *ctx);     /* uniform 64-bit random numbers */
    void *rand_ctx;
};

struct lb_ops {
    const char *name; /* as tako.yaml's loadBalancer.strategy says it */
    unsigned needs;   /* LB_NEED_* */
    /* Build set->data for a fresh set (set->b, set->n filled). 0 or -errno. */
    int (*build)(struct lb_set *set);
    void (*destroy)(struct lb_set *set);
    /* A healthy backend not in r->tried, or NULL when there is none. Must not
     * block or allocate. The caller then calls lb_started(). */
    struct backend *(*pick)(struct lb_set *set, struct lb_req *r);
    /* A backend's in-flight count or health changed (may be NULL). */
    void (*update)(struct lb_set *set, struct backend *b);
    /* LB_NEED_HDR: take what the strategy keys on from the request head m
     * into r (e.g. a cookie into r->key). May be NULL. */
    void (*on_request)(const struct proxy_pool *pool, const struct http_msg *m,
                       struct lb_req *r);
    /* LB_NEED_RSP: the response from b to a request r is being sent; to pin
     * the client, return the cookie name and write its value into val.
     * NULL: nothing to set. May be NULL. */
    const char *(*on_response)(const struct proxy_pool *pool, const struct lb_req *r,
                               const struct backend *b, char val[LB_KEY_MAX]);
};

extern const struct lb_ops lb_round_robin_ops, lb_least_conn_ops, lb_ip_hash_ops,
    lb_random_ops, lb_sticky_ops, lb_p2c_ops;

/* The strategies (lb_table.c), NULL-terminated; a strategy's number
 * (enum lb_kind, enum cfg_lb) is its row. */
extern const struct lb_ops *const lb_table[];
/* The row of kind, or NULL. */
const struct lb_ops *lb_ops_for(int kind);

/* The request side of the pool's strategy: fill r's request part from the
 * client address (family AF_INET/AF_INET6, 16 bytes) and the head m. */
void lb_request(const struct proxy_pool *pool, const struct http_msg *m, int family,
                const uint8_t *addr, struct lb_req *r);
/* The response side: the cookie to set (name, value in val), or NULL. */
const char *lb_response(const struct proxy_pool *pool, const struct lb_req *r,
                        const struct backend *b, char val[LB_KEY_MAX]);

/* Whether b may take this request: healthy, not already tried, not full. */
bool lb_usable(const struct backend *b, const struct lb_req *r);
/* Account for a request started on / finished with b (in-flight counts,
 * least-connections ordering). set may be NULL (no current set). */
void lb_started(struct lb_set *set, struct backend *b);
void lb_finished(struct lb_set *set, struct backend *b);
/* Round robin over usable backends with the pool's shared cursor (by
 * weight when the set has weights). */
struct backend *lb_rr_next(struct lb_set *set, struct lb_req *r);
/* First usable backend scanning from index start (wrapping), or NULL. */
struct backend *lb_scan_from(struct lb_set *set, size_t start, struct lb_req *r);

/* 64-bit hashes used for ids and client addresses. */
uint64_t lb_hash64(const void *p, size_t n, uint64_t seed);

#endif
