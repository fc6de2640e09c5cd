/* test_daemon.c — takod's SQLite store and control API helpers. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/api.h"
#include "daemon/store.h"
#include "unit.h"

static struct store *open_tmp(char *dir)
{
    strcpy(dir, "/tmp/tako-store-XXXXXX");
    if (!mkdtemp(dir))
        return NULL;
    char path[128], err[256];
    snprintf(path, sizeof(path), "%s/state.db", dir);
    return store_open(path, err, sizeof(err));
}

static void rm_tmp(const char *dir)
{
    char cmd[160];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
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
    CHECK_INT(store_service_save(s, &a), 0);
    a.replicas = 4; /* replace, not duplicate */
    CHECK_INT(store_service_save(s, &a), 0);
    json_decref(a.config);
    store_close(s);

    char path[128], err[256];
    snprintf(path, sizeof(path), "%s/state.db", dir);
    s = store_open(path, err, sizeof(err));
    CHECK(s != NULL);
    struct store_service *v = NULL;
    size_t n = 0;
    CHECK_INT(store_services_load(s, "scaling", &v, &n), 0);
    CHECK_INT(n, 1);
    CHECK_STR(v[0].service, "web");
    CHECK_STR(v[0].revision, "abc123");
    CHECK_INT(v[0].replicas, 4);
    CHECK_INT(v[0].scale_override, 5);
    CHECK_INT(v[0].http_port, 8080);
    CHECK_INT(json_integer_value(json_object_get(v[0].config, "port")), 3000);
    store_services_free(v, n);
    CHECK_INT(store_services_load(s, "other", &v, &n), 0);
    CHECK_INT(n, 0);
    store_services_free(v, n);
    CHECK_INT(store_service_delete(s, "scaling", "production", "web"), 0);
    CHECK_INT(store_services_load(s, NULL, &v, &n), 0);
    CHECK_INT(n, 0);
    store_services_free(v, n);
    store_close(s);
    rm_tmp(dir);
}

TEST(store_revisions_history_events)
{
    char dir[64];
    struct store *s = open_tmp(dir);
    CHECK(s != NULL);
    json_t *cfg = json_pack("{s:s}", "name", "web");
    CHECK_INT(store_revision_add(s, "p", "e", "web", "r1", cfg, "/src"), 0);
    json_decref(cfg);
    json_t *got = store_revision_get(s, "p", "e", "web", "r1");
    CHECK(got != NULL);
    CHECK_STR(json_string_value(json_object_get(got, "name")), "web");
    json_decref(got);
    CHECK(store_revision_get(s, "p", "e", "web", "nope") == NULL);

    int64_t id1 = store_history_begin(s, "p", "e", "deploy", "r1", "web@r1");
    int64_t id2 = store_history_begin(s, "p", "e", "scale", "", "");
    CHECK(id1 > 0 && id2 > id1);
    CHECK_INT(store_history_end(s, id1, "ok", "deployed"), 0);
    json_t *h = store_history_list(s, "p", NULL, 10);
    CHECK_INT(json_array_size(h), 2);
    /* newest first */
    CHECK_STR(json_string_value(json_object_get(json_array_get(h, 0), "kind")), "scale");
    CHECK_STR(json_string_value(json_object_get(json_array_get(h, 0), "status")), "running");
    CHECK_STR(json_string_value(json_object_get(json_array_get(h, 1), "status")), "ok");
    json_decref(h);

    CHECK_INT(store_event(s, "p", "web", "autoscale", "1 → 2 replicas", NULL), 0);
    CHECK_INT(store_event(s, "p", "web", "ready", "p-web-1 ready", NULL), 0);
    json_t *ev = store_events_list(s, "p", "web", "autoscale", 10);
    CHECK_INT(json_array_size(ev), 1);
    CHECK_STR(json_string_value(json_object_get(json_array_get(ev, 0), "message")), "1 → 2 replicas");
    json_decref(ev);
    store_close(s);
    rm_tmp(dir);
}

TEST(store_open_reports_where)
{
    char err[256] = "";
    struct store *s = store_open("/nonexistent-dir/x/state.db", err, sizeof(err));
    CHECK(s == NULL);
    CHECK_CONTAINS(err, "/nonexistent-dir/x/state.db");
}

TEST(api_query_decodes)
{
    struct api_req r = {.query = "project=my%20app&env=prod&flag&service=a+b"};
    char b[64];
    CHECK_STR(api_query(&r, "project", b, sizeof(b)), "my app");
    CHECK_STR(api_query(&r, "env", b, sizeof(b)), "prod");
    CHECK_STR(api_query(&r, "service", b, sizeof(b)), "a b");
    CHECK_STR(api_query(&r, "flag", b, sizeof(b)), "");
    CHECK(api_query(&r, "nope", b, sizeof(b)) == NULL);
    CHECK(api_query(&r, "proj", b, sizeof(b)) == NULL);
}
