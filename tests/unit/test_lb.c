/* test_lb.c — the balancing strategies on hand-built sets: exact round
 * robin with skips, least-connections ordering and ties, Maglev stability
 * and disruption, sticky lookups, random/p2c spread. */
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "core/util.h"
#include "http/http.h"
#include "proxy/proxy_int.h"
#include "unit.h"

static struct proxy_pool pool;

static struct backend *mk(const char *id)
{
    struct backend *b = xcalloc(1, sizeof(*b));
    snprintf(b->id, sizeof(b->id), "%s", id);
    b->id_hash = lb_hash64(b->id, strlen(b->id), 0x5717c4);
    b->pool = &pool;
    atomic_store(&b->healthy, true);
    atomic_store(&b->slot, -1);
    return b;
}

static struct lb_set *mkset(enum lb_kind k, size_t n, struct backend **bs)
{
    memset(&pool, 0, sizeof(pool));
    pool.ops = lb_ops_for(k);
    struct lb_set *s = xcalloc(1, sizeof(*s));
    s->pool = &pool;
    s->ops = pool.ops;
    s->n = n;
    s->b = xcalloc(n ? n : 1, sizeof(*s->b));
    for (size_t i = 0; i < n; i++) {
        s->b[i] = bs[i];
        bs[i]->pool = &pool;
        atomic_store(&bs[i]->slot, (int)i);
    }
    s->ops->build(s);
    return s;
}

static void freeset(struct lb_set *s)
{
    s->ops->destroy(s);
    free(s->b);
    free(s);
}

static uint64_t rng_state = 88172645463325252ULL;
static uint64_t rnd(void *ctx)
{
    (void)ctx;
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static struct lb_req req0(void) { return (struct lb_req){.rand = rnd}; }

static int idx(struct backend **bs, size_t n, struct backend *b)
{
    for (size_t i = 0; i < n; i++)
        if (bs[i] == b)
            return (int)i;
    return -1;
}

TEST(round_robin_exact_and_skips)
{
    struct backend *bs[3] = {mk("b1"), mk("b2"), mk("b3")};
    struct lb_set *s = mkset(LB_ROUND_ROBIN, 3, bs);
    struct lb_req r = req0();
    for (int i = 0; i < 9; i++)
        CHECK_INT(idx(bs, 3, s->ops->pick(s, &r)), i % 3);
    atomic_store(&bs[1]->healthy, false);
    int prev = -1;
    for (int i = 0; i < 8; i++) {
        int k = idx(bs, 3, s->ops->pick(s, &r));
        CHECK(k == 0 || k == 2);
        CHECK(k != prev);
        prev = k;
    }
    /* tried backends are excluded */
    atomic_store(&bs[1]->healthy, true);
    struct backend *tried[2] = {bs[0], bs[1]};
    r.tried = tried;
    r.ntried = 2;
    for (int i = 0; i < 4; i++)
        CHECK(s->ops->pick(s, &r) == bs[2]);
    atomic_store(&bs[2]->healthy, false);
    CHECK(s->ops->pick(s, &r) == NULL);
    freeset(s);
    for (int i = 0; i < 3; i++)
        free(bs[i]);
}

TEST(least_connections_order_and_ties)
{
    enum { N = 5 };
    struct backend *bs[N];
    char id[8];
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof(id), "b%d", i + 1);
        bs[i] = mk(id);
    }
    struct lb_set *s = mkset(LB_LEAST_CONN, N, bs);
    struct lb_req r = req0();
    /* all idle: ties go round robin */
    struct backend *picked[N];
    for (int i = 0; i < N; i++) {
        picked[i] = s->ops->pick(s, &r);
        CHECK_INT(idx(bs, N, picked[i]), i);
        lb_started(s, picked[i]);
    }
    /* finish all but b1: b1 stays busy and gets nothing */
    for (int i = 1; i < N; i++)
        lb_finished(s, picked[i]);
    for (int round = 0; round < 8; round++) {
        struct backend *b = s->ops->pick(s, &r);
        CHECK(b != bs[0]);
        CHECK_INT(idx(bs, N, b), 1 + round % (N - 1));
        lb_started(s, b);
        lb_finished(s, b);
    }
    /* an unhealthy least-loaded backend is skipped */
    atomic_store(&bs[1]->healthy, false);
    s->ops->update(s, bs[1]);
    for (int i = 0; i < 6; i++) {
        struct backend *b = s->ops->pick(s, &r);
        CHECK(b != bs[1] && b != bs[0]);
        lb_started(s, b);
        lb_finished(s, b);
    }
    lb_finished(s, picked[0]);
    freeset(s);
    for (int i = 0; i < N; i++)
        free(bs[i]);
}

TEST(least_connections_many_backends_counts)
{
    enum { N = 1000 };
    struct backend **bs = xcalloc(N, sizeof(*bs));
    char id[16];
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof(id), "n%d", i);
        bs[i] = mk(id);
    }
    struct lb_set *s = mkset(LB_LEAST_CONN, N, bs);
    struct lb_req r = req0();
    /* 3N picks without finishing: every backend ends with exactly 3 */
    for (int i = 0; i < 3 * N; i++)
        lb_started(s, s->ops->pick(s, &r));
    for (int i = 0; i < N; i++)
        CHECK_INT(atomic_load(&bs[i]->inflight), 3);
    freeset(s);
    for (int i = 0; i < N; i++)
        free(bs[i]);
    free(bs);
}

static int ip_pick(struct lb_set *s, struct backend **bs, size_t n, uint32_t ip)
{
    struct lb_req r = req0();
    r.client_hash = lb_hash64(&ip, 4, 4);
    return idx(bs, n, s->ops->pick(s, &r));
}

TEST(ip_hash_maglev_stable_and_minimal_disruption)
{
    struct backend *bs[4] = {mk("web-1"), mk("web-2"), mk("web-3"), mk("web-4")};
    struct lb_set *s3 = mkset(LB_IP_HASH, 3, bs);
    enum { C = 20000 };
    static int first[C];
    int count[3] = {0};
    for (uint32_t i = 0; i < C; i++) {
        first[i] = ip_pick(s3, bs, 3, 0x0a000000u + i);
        count[first[i]]++;
        CHECK_INT(ip_pick(s3, bs, 3, 0x0a000000u + i), first[i]);
    }
    for (int k = 0; k < 3; k++)
        CHECK(count[k] > C / 3 - C / 15 && count[k] < C / 3 + C / 15);
    struct lb_set *s4 = mkset(LB_IP_HASH, 4, bs);
    int moved = 0, moved_elsewhere = 0;
    for (uint32_t i = 0; i < C; i++) {
        int k = ip_pick(s4, bs, 4, 0x0a000000u + i);
        if (k != first[i]) {
            moved++;
            if (k != 3)
                moved_elsewhere++;
        }
    }
    /* about a quarter moves, (almost) all of it to the new backend */
    CHECK(moved > C / 5 && moved < C * 3 / 10);
    CHECK(moved_elsewhere < C / 100);
    /* the home backend fails: a fixed next choice, then home again */
    uint32_t ip = 0x0a0000ffu;
    int home = ip_pick(s4, bs, 4, ip);
    atomic_store(&bs[home]->healthy, false);
    int next = ip_pick(s4, bs, 4, ip);
    CHECK(next != home && next >= 0);
    for (int i = 0; i < 5; i++)
        CHECK_INT(ip_pick(s4, bs, 4, ip), next);
    atomic_store(&bs[home]->healthy, true);
    CHECK_INT(ip_pick(s4, bs, 4, ip), home);
    freeset(s3);
    freeset(s4);
    for (int i = 0; i < 4; i++)
        free(bs[i]);
}

TEST(sticky_cookie_lookup)
{
    struct backend *bs[3] = {mk("a"), mk("b"), mk("c")};
    struct lb_set *s = mkset(LB_STICKY, 3, bs);
    char v[17];
    snprintf(v, sizeof(v), "%016llx", (unsigned long long)bs[2]->id_hash);
    struct lb_req r = req0();
    r.cookie = v;
    r.cookie_len = 16;
    for (int i = 0; i < 5; i++)
        CHECK(s->ops->pick(s, &r) == bs[2]);
    atomic_store(&bs[2]->healthy, false);
    struct backend *o = s->ops->pick(s, &r);
    CHECK(o && o != bs[2]);
    r.cookie = "zzzzzzzzzzzzzzzz";
    CHECK(s->ops->pick(s, &r) != NULL);
    freeset(s);
    for (int i = 0; i < 3; i++)
        free(bs[i]);
}

TEST(random_and_p2c_spread)
{
    struct backend *bs[3] = {mk("x"), mk("y"), mk("z")};
    for (int kind = LB_RANDOM; kind <= LB_P2C; kind += LB_P2C - LB_RANDOM) {
        struct lb_set *s = mkset((enum lb_kind)kind, 3, bs);
        int count[3] = {0};
        struct lb_req r = req0();
        for (int i = 0; i < 3000; i++)
            count[idx(bs, 3, s->ops->pick(s, &r))]++;
        for (int k = 0; k < 3; k++)
            CHECK(count[k] > 800);
        atomic_store(&bs[0]->healthy, false);
        for (int i = 0; i < 100; i++)
            CHECK(s->ops->pick(s, &r) != bs[0]);
        atomic_store(&bs[0]->healthy, true);
        freeset(s);
    }
    /* p2c: a loaded backend loses every draw it is in */
    struct lb_set *s = mkset(LB_P2C, 3, bs);
    atomic_store(&bs[1]->inflight, 50);
    struct lb_req r = req0();
    for (int i = 0; i < 300; i++)
        CHECK(s->ops->pick(s, &r) != bs[1]);
    atomic_store(&bs[1]->inflight, 0);
    freeset(s);
    for (int i = 0; i < 3; i++)
        free(bs[i]);
}

TEST(kind_names)
{
    enum lb_kind k;
    CHECK_INT(lb_kind_parse("least_connections", &k), 0);
    CHECK_INT(k, LB_LEAST_CONN);
    CHECK_INT(lb_kind_parse("p2c", &k), 0);
    CHECK_STR(lb_kind_name(LB_IP_HASH), "ip_hash");
    CHECK(lb_kind_parse("fastest", &k) < 0);
}

#include <pthread.h>

static struct lb_set *race_set;
static atomic_uint race_nulls;

static void *race_picker(void *arg)
{
    (void)arg;
    for (int i = 0; i < 200000; i++) {
        struct lb_req r = req0();
        if (!race_set->ops->pick(race_set, &r))
            atomic_fetch_add(&race_nulls, 1);
    }
    return NULL;
}

/* Two threads share the round-robin cursor; with one healthy backend of
 * three, interleaved cursor steps must never make a pick fail. */
TEST(round_robin_never_fails_while_one_is_healthy_across_threads)
{
    struct backend *bs[3] = {mk("b1"), mk("b2"), mk("b3")};
    atomic_store(&bs[1]->healthy, false);
    atomic_store(&bs[2]->healthy, false);
    race_set = mkset(LB_ROUND_ROBIN, 3, bs);
    atomic_store(&race_nulls, 0);
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, race_picker, NULL);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    CHECK_INT(atomic_load(&race_nulls), 0);
    freeset(race_set);
    for (int i = 0; i < 3; i++)
        free(bs[i]);
}

TEST(strategies_take_from_the_request_only_what_they_declare)
{
    /* Every strategy of the table has a name the config accepts. */
    for (size_t k = 0; k < lb_count(); k++) {
        CHECK(lb_table[k] != NULL);
        enum lb_kind back;
        CHECK_INT(lb_kind_parse(lb_table[k]->name, &back), 0);
        CHECK_INT(back, k);
    }
    CHECK(lb_table[lb_count()] == NULL);

    static const char head[] = "GET / HTTP/1.1\r\nHost: x\r\n"
                               "Cookie: a=1; tako_backend=00000000000000ab; b=2\r\n\r\n";
    struct http_msg m;
    CHECK(http_parse_request(head, sizeof(head) - 1, &m, 32) > 0);
    uint8_t addr[16] = {10, 0, 0, 7};
    struct backend *bs[2] = {mk("a"), mk("b")};

    /* round robin needs nothing: no hash, no cookie, nothing to set */
    struct lb_set *s = mkset(LB_ROUND_ROBIN, 2, bs);
    struct lb_req r = req0();
    lb_request(&pool, &m, AF_INET, addr, &r);
    CHECK_INT(r.client_hash, 0);
    CHECK(r.cookie == NULL);
    char val[LB_KEY_MAX];
    CHECK(lb_response(&pool, &r, bs[0], val) == NULL);
    freeset(s);

    /* ip_hash: the client address, nothing else */
    s = mkset(LB_IP_HASH, 2, bs);
    r = req0();
    lb_request(&pool, &m, AF_INET, addr, &r);
    CHECK(r.client_hash != 0);
    CHECK(r.cookie == NULL);
    freeset(s);

    /* sticky reads its own cookie and pins the client in the response */
    s = mkset(LB_STICKY, 2, bs);
    pool.sticky_cookie = (char *)"tako_backend";
    pool.sticky_cookie_len = strlen(pool.sticky_cookie);
    r = req0();
    lb_request(&pool, &m, AF_INET, addr, &r);
    CHECK_INT(r.client_hash, 0);
    CHECK(r.cookie != NULL && r.cookie_len == 16);
    CHECK(memcmp(r.cookie, "00000000000000ab", 16) == 0);
    const char *name = lb_response(&pool, &r, bs[1], val);
    CHECK_STR(name, "tako_backend");
    char want[LB_KEY_MAX];
    snprintf(want, sizeof(want), "%016llx", (unsigned long long)bs[1]->id_hash);
    CHECK_STR(val, want);
    /* already pinned to the one that answered: nothing to set */
    memcpy(r.key, want, 17);
    r.cookie = r.key;
    CHECK(lb_response(&pool, &r, bs[1], val) == NULL);
    freeset(s);
    free(bs[0]);
    free(bs[1]);
}
