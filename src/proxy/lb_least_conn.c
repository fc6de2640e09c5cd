/* lb_least_conn.c — the backend with the fewest requests in flight (counted
 * across all threads), ties broken round robin (least recently picked).
 *
 * A tournament tree over the set: each inner node holds the index of the
 * smaller of its children's keys, key = (in-flight << 40 | last pick). A
 * pick reads the root: O(1). Starting or finishing a request re-plays the
 * matches on its leaf's path: O(log n) relaxed atomic loads and stores, no
 * lock. Concurrent updates can leave a node briefly stale; the next update
 * on that path repairs it, and a stale root that names an unusable backend
 * falls back to a scan, so a pick is never wrong, at worst not the least.
 */
#include <errno.h>
#include <stdlib.h>

#include "core/util.h"
#include "proxy/proxy_int.h"

struct lc_tree {
    size_t size;          /* leaves, a power of two ≥ n */
    _Atomic int32_t *node; /* [2 * size]; node[size + i] = i, or -1 past n */
};

#define LC_SEQ_BITS 40

static uint64_t lc_key(struct lb_set *set, int32_t i)
{
    if (i < 0)
        return UINT64_MAX;
    struct backend *b = set->b[i];
    if (!atomic_load_explicit(&b->healthy, memory_order_relaxed))
        return UINT64_MAX;
    uint64_t inflight = atomic_load_explicit(&b->inflight, memory_order_relaxed);
    uint64_t seq = atomic_load_explicit(&b->last_pick, memory_order_relaxed);
    if (inflight >= (1u << 23))
        inflight = (1u << 23) - 1;
    return (inflight << LC_SEQ_BITS) | (seq & ((1ULL << LC_SEQ_BITS) - 1));
}

/* Re-play the matches from node k up after leaf `slot` changed its key.
 * A match whose winner stays the same other backend decides nothing new
 * above it: stop there. */
static void lc_replay(struct lb_set *set, struct lc_tree *t, size_t k, int32_t slot)
{
    for (; k >= 1; k /= 2) {
        int32_t l = atomic_load_explicit(&t->node[2 * k], memory_order_relaxed);
        int32_t r = atomic_load_explicit(&t->node[2 * k + 1], memory_order_relaxed);
        int32_t w = lc_key(set, r) < lc_key(set, l) ? r : l;
        int32_t was = atomic_load_explicit(&t->node[k], memory_order_relaxed);
        if (w != was)
            atomic_store_explicit(&t->node[k], w, memory_order_relaxed);
        else if (w != slot)
            break;
    }
}

static int lc_build(struct lb_set *set)
{
    struct lc_tree *t = xcalloc(1, sizeof(*t));
    t->size = 1;
    while (t->size < set->n)
        t->size *= 2;
    t->node = xcalloc(2 * t->size, sizeof(*t->node));
    for (size_t i = 0; i < t->size; i++)
        atomic_store(&t->node[t->size + i], i < set->n ? (int32_t)i : -1);
    set->data = t;
    for (size_t k = t->size - 1; k >= 1; k--) {
        int32_t l = t->node[2 * k], r = t->node[2 * k + 1];
        t->node[k] = lc_key(set, r) < lc_key(set, l) ? r : l;
    }
    return 0;
}

static void lc_destroy(struct lb_set *set)
{
    struct lc_tree *t = set->data;
    if (t) {
        free(t->node);
        free(t);
    }
    set->data = NULL;
}

static struct backend *lc_scan(struct lb_set *set, struct lb_req *r)
{
    struct backend *best = NULL;
    uint64_t bk = UINT64_MAX;
    for (size_t i = 0; i < set->n; i++) {
        if (!lb_usable(set->b[i], r))
            continue;
        uint64_t k = lc_key(set, (int32_t)i);
        if (!best || k < bk) {
            best = set->b[i];
            bk = k;
        }
    }
    return best;
}

static struct backend *lc_pick(struct lb_set *set, struct lb_req *r)
{
    struct lc_tree *t = set->data;
    if (set->n == 0)
        return NULL;
    int32_t i = atomic_load_explicit(&t->node[1], memory_order_relaxed);
    struct backend *b = NULL;
    if (i >= 0 && (size_t)i < set->n && lb_usable(set->b[i], r))
        b = set->b[i];
    else
        b = lc_scan(set, r);
    if (b)
        atomic_store_explicit(&b->last_pick,
                              atomic_fetch_add_explicit(&set->pool->rr, 1, memory_order_relaxed) + 1,
                              memory_order_relaxed);
    return b;
}

static void lc_update(struct lb_set *set, struct backend *b)
{
    struct lc_tree *t = set->data;
    int slot = atomic_load_explicit(&b->slot, memory_order_relaxed);
    if (!t || slot < 0 || (size_t)slot >= set->n || set->b[slot] != b)
        return; /* not in this set (a newer one replaced it) */
    if (t->size == 1)
        return; /* the root is the only leaf */
    lc_replay(set, t, (t->size + (size_t)slot) / 2, slot);
}

const struct lb_ops lb_least_conn_ops = {
    .name = "least_connections",
    .build = lc_build,
    .destroy = lc_destroy,
    .pick = lc_pick,
    .update = lc_update,
};
