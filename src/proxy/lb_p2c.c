/* lb_p2c.c — power of two random choices: draw two distinct backends, the
 * one with fewer requests in flight wins (the first drawn on a tie). */
#include "proxy/proxy_int.h"

static int p2c_build(struct lb_set *set)
{
    (void)set;
    return 0;
}

static void p2c_destroy(struct lb_set *set) { (void)set; }

static struct backend *p2c_pick(struct lb_set *set, struct lb_req *r)
{
    size_t n = set->n;
    if (n == 0)
        return NULL;
    if (n == 1)
        return lb_usable(set->b[0], r) ? set->b[0] : NULL;
    uint64_t x = r->rand(r->rand_ctx);
    size_t i = (size_t)(x % n);
    size_t j = (size_t)((x >> 32) % (n - 1));
    if (j >= i)
        j++;
    struct backend *a = set->b[i], *b = set->b[j];
    bool ua = lb_usable(a, r), ub = lb_usable(b, r);
    if (ua && ub)
        return atomic_load_explicit(&b->inflight, memory_order_relaxed) <
                       atomic_load_explicit(&a->inflight, memory_order_relaxed)
                   ? b
                   : a;
    if (ua)
        return a;
    if (ub)
        return b;
    return lb_scan_from(set, i, r);
}

const struct lb_ops lb_p2c_ops = {
    .name = "p2c",
    .build = p2c_build,
    .destroy = p2c_destroy,
    .pick = p2c_pick,
    .update = NULL,
};
