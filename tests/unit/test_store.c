/* test_store.c — the state store interface over its SQLite implementation:
 * every call completes before it returns, results through the callback. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store/store.h"
#include "store/store_sqlite.h"
#include "unit.h"

static struct store *open_tmp(char *dir)
{
    strcpy(dir, "/tmp/tako-store-XXXXXX");
    if (!mkdtemp(dir))
        return NULL;
    char path[128], err[256];
    snprintf(path, sizeof(path), "%s/state.db", dir);
    return store_sqlite_open(path, err, sizeof(err));
}

static void rm_tmp(const char *dir)
{
    char cmd[160];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}

/* Completion counter for writes. */
static int g_done;
static void count(void *data, int rc, void *result)
{
    (void)data;
    (void)result;
    if (rc == 0)
        g_done++;
}

TEST(store_services_round_trip_and_survive_reopen)
{
    char dir[64];
    struct store *s = open_tmp(dir);
    CHECK(s != NULL);
    struct store_service a = {.replicas = 3, .scale_override = 5, .http_port = 8080};
    strcpy(a.project, "scaling");
    strcpy(a.env, "production");
    strcpy(a.service, "web");
    strcpy(a.revision, "abc123");
    a.config = json_pack("{s:s, s:i}", "name", "web", "port", 3000);
    g_done = 0;
    CHECK_INT(store_service_save(s, &a, count, NULL), 0);
    a.replicas = 4; /* replace, not duplicate */
    CHECK_INT(store_service_save(s, &a, NULL, NULL), 0);
    CHECK_INT(g_done, 1); /* completed before the call returned */
    json_decref(a.config);
    store_close(s);

    char path[128], err[256];
    snprintf(path, sizeof(path), "%s/state.db", dir);
    s = store_sqlite_open(path, err, sizeof(err));
    CHECK(s != NULL);
    struct store_result r = {0};
    CHECK_INT(store_services_load(s, "scaling", store_keep_services, &r), 0);
    CHECK(r.done);
    CHECK_INT(r.services.n, 1);
    struct store_service *v = r.services.v;
    CHECK_STR(v[0].service, "web");
    CHECK_STR(v[0].revision, "abc123");
    CHECK_INT(v[0].replicas, 4);
    CHECK_INT(v[0].scale_override, 5);
    CHECK_INT(v[0].http_port, 8080);
    CHECK_INT(json_integer_value(json_object_get(v[0].config, "port")), 3000);
    store_result_clear(&r);
    CHECK_INT(store_services_load(s, "other", store_keep_services, &r), 0);
    CHECK_INT(r.services.n, 0);
    store_result_clear(&r);
    CHECK_INT(store_service_delete(s, "scaling", "production", "web", NULL, NULL), 0);
    CHECK_INT(store_services_load(s, NULL, store_keep_services, &r), 0);
    CHECK_INT(r.services.n, 0);
    store_result_clear(&r);
    store_close(s);
    rm_tmp(dir);
}

TEST(store_revisions_history_events)
{
    char dir[64];
    struct store *s = open_tmp(dir);
    CHECK(s != NULL);
    json_t *cfg = json_pack("{s:s}", "name", "web");
    CHECK_INT(store_revision_add(s, "p", "e", "web", "r1", cfg, "/src", NULL, NULL), 0);
    json_decref(cfg);
    struct store_result r = {0};
    CHECK_INT(store_revision_get(s, "p", "e", "web", "r1", store_keep_json, &r), 0);
    CHECK(r.json != NULL);
    CHECK_STR(json_string_value(json_object_get(r.json, "name")), "web");
    store_result_clear(&r);
    CHECK_INT(store_revision_get(s, "p", "e", "web", "nope", store_keep_json, &r), 0);
    CHECK(r.done && r.json == NULL && r.rc == -ENOENT);

    struct store_result h1 = {0}, h2 = {0};
    CHECK_INT(store_history_begin(s, "p", "e", "deploy", "r1", "web@r1", store_keep_id, &h1), 0);
    CHECK_INT(store_history_begin(s, "p", "e", "scale", "", "", store_keep_id, &h2), 0);
    int64_t id1 = h1.id, id2 = h2.id;
    CHECK(id1 > 0 && id2 > id1);
    CHECK_INT(store_history_end(s, id1, "ok", "deployed", NULL, NULL), 0);
    CHECK_INT(store_history_list(s, "p", NULL, 10, store_keep_json, &r), 0);
    json_t *h = r.json;
    CHECK_INT(json_array_size(h), 2);
    /* newest first */
    CHECK_STR(json_string_value(json_object_get(json_array_get(h, 0), "kind")), "scale");
    CHECK_STR(json_string_value(json_object_get(json_array_get(h, 0), "status")), "running");
    CHECK_STR(json_string_value(json_object_get(json_array_get(h, 1), "status")), "ok");
    store_result_clear(&r);

    CHECK_INT(store_event(s, "p", "web", "autoscale", "1 → 2 replicas", NULL, NULL, NULL), 0);
    CHECK_INT(store_event(s, "p", "web", "ready", "p-web-1 ready", NULL, NULL, NULL), 0);
    CHECK_INT(store_events_list(s, "p", "web", "autoscale", 10, store_keep_json, &r), 0);
    json_t *ev = r.json;
    CHECK_INT(json_array_size(ev), 1);
    CHECK_STR(json_string_value(json_object_get(json_array_get(ev, 0), "message")), "1 → 2 replicas");
    store_result_clear(&r);
    store_close(s);
    rm_tmp(dir);
}

TEST(store_open_reports_where)
{
    char err[256] = "";
    struct store *s = store_sqlite_open("/nonexistent-dir/x/state.db", err, sizeof(err));
    CHECK(s == NULL);
    CHECK_CONTAINS(err, "/nonexistent-dir/x/state.db");
}

TEST(store_lease_one_owner_at_a_time_renew_release_expire)
{
    char dir[64];
    struct store *s = open_tmp(dir);
    CHECK(s != NULL);
    struct store_result r = {0};
    CHECK_INT(store_lock(s, "project/p", "a", "deploy", 60000, store_keep_lease, &r), 0);
    CHECK(r.done);
    CHECK_INT(r.rc, 0);
    /* Another owner is refused and told who holds it. */
    memset(&r, 0, sizeof(r));
    CHECK_INT(store_lock(s, "project/p", "b", "scale", 60000, store_keep_lease, &r), 0);
    CHECK_INT(r.rc, -EBUSY);
    CHECK_STR(r.lease.owner, "a");
    CHECK_STR(r.lease.info, "deploy");
    CHECK_STR(r.lease.key, "project/p");
    /* Other keys are independent; the holder renews. */
    memset(&r, 0, sizeof(r));
    CHECK_INT(store_lock(s, "project/q", "b", "scale", 60000, store_keep_lease, &r), 0);
    CHECK_INT(r.rc, 0);
    CHECK_INT(store_lock(s, "project/p", "a", "deploy", 60000, store_keep_lease, &r), 0);
    CHECK_INT(r.rc, 0);
    /* Unlock by a non-holder leaves it; by the holder frees it. */
    CHECK_INT(store_unlock(s, "project/p", "b", NULL, NULL), 0);
    CHECK_INT(store_lock(s, "project/p", "b", "scale", 60000, store_keep_lease, &r), 0);
    CHECK_INT(r.rc, -EBUSY);
    CHECK_INT(store_unlock(s, "project/p", "a", NULL, NULL), 0);
    memset(&r, 0, sizeof(r));
    CHECK_INT(store_lock(s, "project/p", "b", "scale", 0, store_keep_lease, &r), 0);
    CHECK_INT(r.rc, 0);
    /* A lease nobody renews expires (ttl 0 → expired at once). */
    usleep(2000);
    memset(&r, 0, sizeof(r));
    CHECK_INT(store_lock(s, "project/p", "c", "restart", 60000, store_keep_lease, &r), 0);
    CHECK_INT(r.rc, 0);
    store_close(s);
    rm_tmp(dir);
}
