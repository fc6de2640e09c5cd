/* lb_cost.c — the cost of one balancing decision (pick + start + finish),
 * per strategy, at 3, 100 and 10,000 backends, on one thread. Prints a
 * Markdown table; `make bench-lb` appends it to bench/RESULTS_LB.md.
 *
 *   build/rel/bench/lb_cost [ITERATIONS]      (default 2,000,000 per cell)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/util.h"
#include "proxy/proxy_int.h"

static uint64_t rng = 0x9e3779b97f4a7c15ULL;
static uint64_t rnd(void *ctx)
{
    (void)ctx;
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static double measure(enum lb_kind kind, size_t n, long iters, double *build_ms)
{
    static struct proxy_pool pool;
    memset(&pool, 0, sizeof(pool));
    pool.ops = lb_ops_for(kind);
    struct backend **bs = xcalloc(n, sizeof(*bs));
    for (size_t i = 0; i < n; i++) {
        bs[i] = xcalloc(1, sizeof(**bs));
        snprintf(bs[i]->id, sizeof(bs[i]->id), "svc-web-%zu", i + 1);
        bs[i]->id_hash = lb_hash64(bs[i]->id, strlen(bs[i]->id), 0x5717c4);
        bs[i]->pool = &pool;
        atomic_store(&bs[i]->healthy, true);
        atomic_store(&bs[i]->slot, (int)i);
    }
    struct lb_set set = {.pool = &pool, .ops = pool.ops, .n = n, .b = bs};
    double t0 = now_ns();
    set.ops->build(&set);
    *build_ms = (now_ns() - t0) / 1e6;
    /* some load: a few requests stay in flight, like a busy proxy */
    struct backend *held[64];
    struct lb_req r = {.rand = rnd};
    char cookie[17];
    snprintf(cookie, sizeof(cookie), "%016llx", (unsigned long long)bs[n / 2]->id_hash);
    if (kind == LB_STICKY) {
        r.cookie = cookie;
        r.cookie_len = 16;
    }
    for (int i = 0; i < 64; i++) {
        held[i] = set.ops->pick(&set, &r);
        lb_started(&set, held[i]);
    }
    volatile uintptr_t sink = 0;
    t0 = now_ns();
    for (long i = 0; i < iters; i++) {
        r.client_hash = (uint64_t)i * 0x9e3779b97f4a7c15ULL;
        struct backend *b = set.ops->pick(&set, &r);
        lb_started(&set, b);
        lb_finished(&set, b);
        sink += (uintptr_t)b;
    }
    double ns = (now_ns() - t0) / (double)iters;
    (void)sink;
    for (int i = 0; i < 64; i++)
        lb_finished(&set, held[i]);
    set.ops->destroy(&set);
    for (size_t i = 0; i < n; i++)
        free(bs[i]);
    free(bs);
    return ns;
}

int main(int argc, char **argv)
{
    long iters = argc > 1 ? atol(argv[1]) : 2000000;
    static const size_t sizes[] = {3, 100, 10000};
    char date[32];
    time_iso8601(date);
    printf("\n### lb_cost %s (%ld decisions per cell, one thread)\n\n", date, iters);
    printf("ns per decision (pick + start + finish); set build time in ms in brackets\n\n");
    printf("| strategy | 3 backends | 100 backends | 10,000 backends |\n|---|---:|---:|---:|\n");
    for (int k = 0; (size_t)k < lb_count(); k++) {
        printf("| %s |", lb_kind_name((enum lb_kind)k));
        for (size_t i = 0; i < ARRAY_LEN(sizes); i++) {
            double bms;
            double ns = measure((enum lb_kind)k, sizes[i], iters, &bms);
            printf(" %.1f (%.2f) |", ns, bms);
        }
        printf("\n");
        fflush(stdout);
    }
    return 0;
}
