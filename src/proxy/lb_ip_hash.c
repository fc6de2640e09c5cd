/* lb_ip_hash.c — the same client address always reaches the same backend,
 * by Maglev consistent hashing (Eisenbud et al., NSDI 2016): a lookup table
 * of M slots (M prime, ≥ 100 × backends) where each backend fills slots in
 * its own permutation order, keyed by its id. Growing 3 → 4 backends moves
 * about a quarter of the clients. A pick is one table lookup. When the
 * client's backend is unusable, it takes its next choice (the table looked
 * up again with a rehash), deterministically, and returns to its first
 * choice when that backend is healthy again: health never rebuilds the
 * table. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "proxy/proxy_int.h"

struct maglev {
    uint32_t m;
    int32_t *table;
};

static const uint32_t primes[] = {1021, 4093, 16381, 65521, 262139, 1048573, 4194301};

static int mg_build(struct lb_set *set)
{
    struct maglev *mg = xcalloc(1, sizeof(*mg));
    size_t want = set->n * 100;
    mg->m = primes[ARRAY_LEN(primes) - 1];
    for (size_t i = 0; i < ARRAY_LEN(primes); i++)
        if (primes[i] >= want) {
            mg->m = primes[i];
            break;
        }
    uint32_t m = mg->m;
    mg->table = xmalloc(m * sizeof(int32_t));
    for (uint32_t i = 0; i < m; i++)
        mg->table[i] = -1;
    set->data = mg;
    size_t n = set->n;
    if (n == 0)
        return 0;
    uint32_t *offset = xmalloc(n * sizeof(uint32_t));
    uint32_t *skip = xmalloc(n * sizeof(uint32_t));
    uint32_t *next = xcalloc(n, sizeof(uint32_t));
    for (size_t i = 0; i < n; i++) {
        const char *id = set->b[i]->id;
        size_t len = strlen(id);
        offset[i] = (uint32_t)(lb_hash64(id, len, 1) % m);
        skip[i] = (uint32_t)(lb_hash64(id, len, 2) % (m - 1)) + 1;
    }
    uint32_t filled = 0;
    for (;;) {
        for (size_t i = 0; i < n; i++) {
            uint32_t c = (uint32_t)((offset[i] + (uint64_t)next[i] * skip[i]) % m);
            while (mg->table[c] >= 0) {
                next[i]++;
                c = (uint32_t)((offset[i] + (uint64_t)next[i] * skip[i]) % m);
            }
            mg->table[c] = (int32_t)i;
            next[i]++;
            if (++filled == m)
                goto done;
        }
    }
done:
    free(offset);
    free(skip);
    free(next);
    return 0;
}

static void mg_destroy(struct lb_set *set)
{
    struct maglev *mg = set->data;
    if (mg) {
        free(mg->table);
        free(mg);
    }
    set->data = NULL;
}

static struct backend *mg_pick(struct lb_set *set, struct lb_req *r)
{
    struct maglev *mg = set->data;
    if (set->n == 0)
        return NULL;
    uint64_t h = r->client_hash;
    for (uint64_t attempt = 0; attempt < 16; attempt++) {
        uint64_t k = attempt ? lb_hash64(&h, sizeof(h), attempt) : h;
        struct backend *b = set->b[mg->table[k % mg->m]];
        if (lb_usable(b, r))
            return b;
    }
    return lb_scan_from(set, (size_t)(h % set->n), r);
}

const struct lb_ops lb_ip_hash_ops = {
    .name = "ip_hash",
    .needs = LB_NEED_ADDR,
    .build = mg_build,
    .destroy = mg_destroy,
    .pick = mg_pick,
    .update = NULL,
};
