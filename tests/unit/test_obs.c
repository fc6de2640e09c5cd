/* test_obs.c — counter totals over restarting instances (daemon/obs_total). */
#include <string.h>

#include "daemon/obs_total.h"
#include "unit.h"

static struct obs_total one(void)
{
    struct obs_total t;
    memset(&t, 0, sizeof(t));
    t.n = 2;
    return t;
}

TEST(new_instance_counts_from_zero_and_grows)
{
    struct obs_total t = one();
    uint64_t v[2] = {5, 1};
    CHECK(obs_total_feed(&t, 7, v, 1000));
    CHECK_INT(obs_total_get(&t, 0), 5);
    v[0] = 9;
    CHECK(obs_total_feed(&t, 7, v, 1100));
    CHECK_INT(obs_total_get(&t, 0), 9);
    CHECK(!obs_total_feed(&t, 7, v, 1200)); /* nothing moved */
    CHECK_INT(obs_total_get(&t, 1), 1);
}

TEST(rolling_deploy_old_and_new_process_add_up)
{
    /* scaling-web-1: the old backend drains while the new one serves */
    struct obs_total t = one();
    uint64_t old[2] = {100, 0}, neu[2] = {0, 0};
    obs_total_feed(&t, 1, old, 0);
    obs_total_feed(&t, 2, neu, 100);
    old[0] = 103;
    neu[0] = 4;
    obs_total_feed(&t, 1, old, 200);
    obs_total_feed(&t, 2, neu, 200);
    CHECK_INT(obs_total_get(&t, 0), 107);
    /* the old one is gone: kept a while, then folded; the total never drops */
    neu[0] = 10;
    obs_total_feed(&t, 2, neu, 5000);
    obs_total_age(&t, 5000);
    CHECK_INT(obs_total_get(&t, 0), 113);
    obs_total_feed(&t, 2, neu, 20000);
    obs_total_age(&t, 20000);
    CHECK_INT(t.ninst, 1);
    CHECK_INT(t.base[0], 103);
    CHECK_INT(obs_total_get(&t, 0), 113);
}

TEST(restart_under_the_same_identity_is_not_a_drop)
{
    struct obs_total t = one();
    uint64_t v[2] = {50, 3};
    obs_total_feed(&t, 9, v, 0);
    v[0] = 2; /* a supervisor's counters after its app restarted, same pid */
    v[1] = 3;
    CHECK(obs_total_feed(&t, 9, v, 100));
    CHECK_INT(obs_total_get(&t, 0), 52);
    CHECK_INT(obs_total_get(&t, 1), 6);
}

TEST(new_proxy_process_continues_the_series)
{
    /* takod restarted with a new embedded proxy: the saved totals come back,
     * the old instance never shows again, the new one adds to it */
    struct obs_total a = one();
    uint64_t v[2] = {40, 0};
    obs_total_feed(&a, 0xdeadbeefcafe1234ull, v, 0);
    json_t *j = obs_total_json(&a);
    struct obs_total b = one();
    obs_total_load(&b, j, 1000000);
    json_decref(j);
    CHECK_INT(obs_total_get(&b, 0), 40);
    CHECK(b.inst[0].id == 0xdeadbeefcafe1234ull); /* 64-bit ids survive JSON */
    uint64_t w[2] = {3, 0};
    obs_total_feed(&b, 42, w, 1000100);
    CHECK_INT(obs_total_get(&b, 0), 43);
    /* the same data plane seen again after takod restarted: it continues */
    struct obs_total c = one();
    j = obs_total_json(&a);
    obs_total_load(&c, j, 0);
    json_decref(j);
    v[0] = 45;
    obs_total_feed(&c, 0xdeadbeefcafe1234ull, v, 100);
    CHECK_INT(obs_total_get(&c, 0), 45);
}

TEST(more_instances_than_slots_fold_the_oldest)
{
    struct obs_total t = one();
    uint64_t v[2] = {1, 0};
    for (uint64_t id = 1; id <= OBS_MAX_INST + 3; id++)
        obs_total_feed(&t, id, v, id * 10);
    CHECK_INT(t.ninst, OBS_MAX_INST);
    CHECK_INT(obs_total_get(&t, 0), OBS_MAX_INST + 3);
}

TEST(fnv_ids_differ_by_address)
{
    CHECK(obs_fnv(1, "127.0.0.1:4000") != obs_fnv(1, "127.0.0.1:4001"));
    CHECK(obs_fnv(1, "127.0.0.1:4000") != obs_fnv(2, "127.0.0.1:4000"));
    CHECK(obs_fnv(0, "x") == obs_fnv(0, "x"));
}
