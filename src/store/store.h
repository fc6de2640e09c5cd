/* store.h — the state store: services' desired state, revisions, deploy
 * history, events, and leases, behind one interface whose calls may
 * complete later (SQLite, the first implementation, completes every call
 * before it returns; a networked store such as etcd completes from the
 * loop). See docs/internals/store.md.
 *
 * Every call takes a completion cb(data, rc, result) — NULL when the
 * caller does not wait — called exactly once when the call was accepted
 * (returned 0), from the loop thread, possibly before the call returns. A
 * call that fails at once returns -errno and never calls cb. result is
 * borrowed for the duration of cb (copy or incref what you keep); its type
 * is given per call below.
 */
#ifndef TAKO_STORE_STORE_H
#define TAKO_STORE_STORE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef void (*store_cb)(void *data, int rc, void *result);

/* Desired state of one service. config is the canonical JSON of its
 * configuration (owned by the caller on save; borrowed in a load result). */
struct store_service {
    char project[64], env[64], service[64];
    char revision[64];
    json_t *config;
    int replicas;       /* desired count from the configuration */
    int scale_override; /* -1 none; set by `tako scale` */
    bool stopped;       /* `tako stop` */
    unsigned http_port; /* the environment's entrypoint port */
    json_t *placement;  /* several servers: slots and peers (orch_peers.c); NULL: one server */
    uint64_t updated_ms;
};

/* Result of store_services_load. */
struct store_services {
    struct store_service *v;
    size_t n;
};

/* A lease as held: result of store_lock when it is refused (-EBUSY). */
struct store_lease {
    char key[128], owner[128], info[128];
    uint64_t acquired_ms, expires_ms; /* wall clock */
};

struct store;

/* What an implementation fills (one file + its open function). */
struct store_ops {
    const char *name;
    void (*close)(struct store *s);
    int (*service_save)(struct store *s, const struct store_service *svc, store_cb cb, void *data);
    int (*service_delete)(struct store *s, const char *project, const char *env,
                          const char *service, store_cb cb, void *data);
    int (*services_load)(struct store *s, const char *project, store_cb cb, void *data);
    int (*revision_add)(struct store *s, const char *project, const char *env,
                        const char *service, const char *revision, json_t *config,
                        const char *source, store_cb cb, void *data);
    int (*revision_get)(struct store *s, const char *project, const char *env,
                        const char *service, const char *revision, store_cb cb, void *data);
    int (*history_begin)(struct store *s, const char *project, const char *env, const char *kind,
                         const char *revision, const char *detail, store_cb cb, void *data);
    int (*history_end)(struct store *s, int64_t id, const char *status, const char *message,
                       store_cb cb, void *data);
    int (*history_list)(struct store *s, const char *project, const char *env, int limit,
                        store_cb cb, void *data);
    int (*event)(struct store *s, const char *project, const char *service, const char *kind,
                 const char *message, json_t *evdata, store_cb cb, void *data);
    int (*events_list)(struct store *s, const char *project, const char *service,
                       const char *kind, int limit, store_cb cb, void *data);
    int (*lock)(struct store *s, const char *key, const char *owner, const char *info,
                uint64_t ttl_ms, store_cb cb, void *data);
    int (*unlock)(struct store *s, const char *key, const char *owner, store_cb cb, void *data);
    int (*kv_set)(struct store *s, const char *key, const char *value, store_cb cb, void *data);
    int (*kv_list)(struct store *s, const char *prefix, store_cb cb, void *data);
    int (*events_count)(struct store *s, const char *kind, store_cb cb, void *data);
};

/* Embedded first in every implementation's handle. */
struct store {
    const struct store_ops *ops;
};

void store_close(struct store *s);

/* Services. result: NULL (save, delete); struct store_services * (load;
 * project NULL = every project). */
int store_service_save(struct store *s, const struct store_service *svc, store_cb cb,
                       void *data);
int store_service_delete(struct store *s, const char *project, const char *env,
                         const char *service, store_cb cb, void *data);
int store_services_load(struct store *s, const char *project, store_cb cb, void *data);

/* Revisions: the configuration a revision was deployed with, for rollback.
 * get's result: json_t * config, or NULL with rc -ENOENT. */
int store_revision_add(struct store *s, const char *project, const char *env,
                       const char *service, const char *revision, json_t *config,
                       const char *source, store_cb cb, void *data);
int store_revision_get(struct store *s, const char *project, const char *env,
                       const char *service, const char *revision, store_cb cb, void *data);

/* Deploy history: one row per operation. begin's result: const int64_t *
 * id (> 0); list's: json_t * array, newest first. */
int store_history_begin(struct store *s, const char *project, const char *env,
                        const char *kind, const char *revision, const char *detail,
                        store_cb cb, void *data);
int store_history_end(struct store *s, int64_t id, const char *status, const char *message,
                      store_cb cb, void *data);
int store_history_list(struct store *s, const char *project, const char *env, int limit,
                       store_cb cb, void *data);

/* Events: append-only; list's result: json_t * array, newest first. */
int store_event(struct store *s, const char *project, const char *service, const char *kind,
                const char *message, json_t *evdata, store_cb cb, void *data);
int store_events_list(struct store *s, const char *project, const char *service,
                      const char *kind, int limit, store_cb cb, void *data);

/* Leases: key held by owner for ttl_ms (renewed by calling again with the
 * same owner). rc 0: held by owner now; -EBUSY: another owner holds it
 * (result: const struct store_lease * of the holder). A lease whose owner
 * stops renewing it expires; unlock releases it at once (another owner's
 * lease is left alone). This replaces "one operation per project" kept in
 * one process's memory: every writer of the same store sees the lease. */
int store_lock(struct store *s, const char *key, const char *owner, const char *info,
               uint64_t ttl_ms, store_cb cb, void *data);
int store_unlock(struct store *s, const char *key, const char *owner, store_cb cb, void *data);

/* Small named values (metrics listeners, counter totals): value NULL
 * deletes. kv_list's result: json_t * object {key: value} of the keys that
 * start with prefix. */
int store_kv_set(struct store *s, const char *key, const char *value, store_cb cb, void *data);
int store_kv_list(struct store *s, const char *prefix, store_cb cb, void *data);
/* Events of one kind counted per project and service, for counters that
 * survive restarts (deploys, rollbacks). Result: json_t * object
 * {"PROJECT\tSERVICE": count}. */
int store_events_count(struct store *s, const char *kind, store_cb cb, void *data);

/* ---- for callers that continue only with the answer ----
 * cb = store_keep, data = &struct store_result: done tells whether the
 * store answered before the call returned (SQLite always does); json gets
 * a new reference to a JSON result, id a history id, lease a refused
 * lock's holder. Free with store_result_clear. */
struct store_result {
    bool done;
    int rc;
    json_t *json;
    int64_t id;
    struct store_lease lease;
    struct store_services services; /* deep copy (configs referenced) */
};
void store_keep_json(void *data, int rc, void *result);
void store_keep_id(void *data, int rc, void *result);
void store_keep_lease(void *data, int rc, void *result);
void store_keep_services(void *data, int rc, void *result);
void store_result_clear(struct store_result *r);

#endif
