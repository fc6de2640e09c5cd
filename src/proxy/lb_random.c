/* lb_random.c — uniform over healthy backends (by weight when the set has
 * weights): a random index, a few more random tries when it is unusable,
 * then a scan from the first draw. */
#include "proxy/proxy_int.h"

static int random_build(struct lb_set *set)
{
    (void)set;
    return 0;
}

static void random_destroy(struct lb_set *set) { (void)set; }

static struct backend *random_pick(struct lb_set *set, struct lb_req *r)
{
    if (set->n == 0)
        return NULL;
    if (set->wb) {
        for (int i = 0; i < 9; i++) {
            struct backend *b = set->wb[r->rand(r->rand_ctx) % set->nw];
            if (lb_usable(b, r))
                return b;
        }
        return lb_scan_from(set, (size_t)(r->rand(r->rand_ctx) % set->n), r);
    }
    size_t first = (size_t)(r->rand(r->rand_ctx) % set->n);
    if (lb_usable(set->b[first], r))
        return set->b[first];
    for (int i = 0; i < 8; i++) {
        struct backend *b = set->b[r->rand(r->rand_ctx) % set->n];
        if (lb_usable(b, r))
            return b;
    }
    /* Few usable ones left: scan. Slightly biased toward the backend after
     * a long unusable run, only while most backends are down. */
    return lb_scan_from(set, first, r);
}

const struct lb_ops lb_random_ops = {
    .name = "random",
    .build = random_build,
    .destroy = random_destroy,
    .pick = random_pick,
    .update = NULL,
};
