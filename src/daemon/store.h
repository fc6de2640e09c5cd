/* store.h — takod's durable state in SQLite: services' desired state,
 * revisions, deploy history and events. Every write is one transaction. */
#ifndef TAKO_DAEMON_STORE_H
#define TAKO_DAEMON_STORE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

struct store;

/* Open (creating) the database at path and apply the schema.
 * Returns NULL with a message in err on failure. */
struct store *store_open(const char *path, char *err, size_t errlen);
void store_close(struct store *s);

/* Desired state of one service. config is the canonical JSON of its
 * configuration (owned by the caller on save; a new reference on load). */
struct store_service {
    char project[64], env[64], service[64];
    char revision[64];
    json_t *config;
    int replicas;       /* desired count from the configuration */
    int scale_override; /* -1 none; set by `tako scale` */
    bool stopped;       /* `tako stop` */
    unsigned http_port; /* the environment's entrypoint port */
    uint64_t updated_ms;
};

int store_service_save(struct store *s, const struct store_service *svc);
int store_service_delete(struct store *s, const char *project, const char *env,
                         const char *service);
/* All services (any project when project is NULL). *out is an array the
 * caller frees with store_services_free. */
int store_services_load(struct store *s, const char *project, struct store_service **out,
                        size_t *n);
void store_services_free(struct store_service *v, size_t n);

/* Revisions: the configuration a revision was deployed with, for rollback. */
int store_revision_add(struct store *s, const char *project, const char *env,
                       const char *service, const char *revision, json_t *config,
                       const char *source);
/* Config JSON of a stored revision, or NULL. New reference. */
json_t *store_revision_get(struct store *s, const char *project, const char *env,
                           const char *service, const char *revision);

/* Deploy history: one row per operation. Returns the new id (>0) or -errno. */
int64_t store_history_begin(struct store *s, const char *project, const char *env,
                            const char *kind, const char *revision, const char *detail);
int store_history_end(struct store *s, int64_t id, const char *status, const char *message);
/* Rows newest first as a JSON array (new reference). */
json_t *store_history_list(struct store *s, const char *project, const char *env, int limit);

/* Events: append-only, newest first when listed. */
int store_event(struct store *s, const char *project, const char *service, const char *kind,
                const char *message, json_t *data);
json_t *store_events_list(struct store *s, const char *project, const char *service,
                          const char *kind, int limit);

/* Events of one kind counted per (project, service), for counters that
 * must survive restarts (deploys, rollbacks, scale events). */
int store_events_count(struct store *s, const char *kind,
                       void (*cb)(void *data, const char *project, const char *service,
                                  uint64_t n),
                       void *data);

/* Small named settings and blobs (metrics listeners, counter totals).
 * value NULL deletes. store_kv_get returns a heap string or NULL. */
int store_kv_set(struct store *s, const char *key, const char *value);
char *store_kv_get(struct store *s, const char *key);
/* Every key starting with prefix, in key order. */
int store_kv_prefix(struct store *s, const char *prefix,
                    void (*cb)(void *data, const char *key, const char *value), void *data);

#endif
