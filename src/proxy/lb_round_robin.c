/* lb_round_robin.c — b1, b2, b3, b1, ... exactly, across all threads: one
 * shared atomic cursor per pool; unhealthy backends are stepped over. */
#include "proxy/proxy_int.h"

static int rr_build(struct lb_set *set)
{
    (void)set;
    return 0;
}

static void rr_destroy(struct lb_set *set) { (void)set; }

static struct backend *rr_pick(struct lb_set *set, struct lb_req *r) { return lb_rr_next(set, r); }

const struct lb_ops lb_round_robin_ops = {
    .name = "round_robin",
    .build = rr_build,
    .destroy = rr_destroy,
    .pick = rr_pick,
    .update = NULL,
};
