/* orch.h — the reconciler: desired state of services → replicas in the
 * runtime and backends in the proxy, changed without a failed request.
 *
 * Level-triggered: a tick (every ORCH_TICK_MS) compares each service's
 * target (revision, configuration, count, stopped) with what runs and takes
 * the next safe step: start a replica, admit it when healthy, drain one,
 * stop it. Operations (deploy, scale, restart, stop, start, down, rollback)
 * only change targets and watch for convergence, so a takod restart resumes
 * where it was. Everything runs on takod's loop thread.
 */
#ifndef TAKO_ORCH_ORCH_H
#define TAKO_ORCH_ORCH_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "config/config.h"

#define ORCH_TICK_MS 100

struct ev_loop;
struct rt;
struct proxy;
struct store;
struct orch;
struct orch_service;

/* Progress sink for an operation: one call per line; final=true once with
 * ok telling the outcome. */
typedef void (*orch_progress_cb)(void *data, const char *service, const char *level,
                                 const char *message, bool final, bool ok);

struct orch *orch_new(struct ev_loop *loop, struct rt *rt, struct proxy *proxy,
                      struct store *store, const char *state_dir);
/* Load services from the store, adopt running replicas, resume. */
int orch_resume(struct orch *o);
void orch_free(struct orch *o);

/* One service of a deploy request. */
struct orch_deploy_item {
    const char *name;
    json_t *config; /* cfg_service_to_json() form */
    const char *revision;
    const char *source;
};

struct orch_deploy_req {
    const char *project, *env;
    unsigned http_port;
    struct orch_deploy_item *items;
    size_t n_items;
    bool force;
    bool prune; /* remove services of this env that are not in items */
    const char *only_service; /* --service: leave the others alone */
};

/* Operations. Each returns 0 when started (progress then flows to cb until
 * a final call), or -errno with a message in err: -EBUSY another operation
 * of the project runs, -ENOENT unknown project/service, -EINVAL bad input.
 * cb may be NULL. */
int orch_deploy(struct orch *o, const struct orch_deploy_req *req, orch_progress_cb cb,
                void *data, char *err, size_t errlen);
/* counts: {"web": 5, ...} */
int orch_scale(struct orch *o, const char *project, const char *env, json_t *counts,
               orch_progress_cb cb, void *data, char *err, size_t errlen);
/* kind: "restart" | "stop" | "start" | "down"; service NULL = all. */
int orch_action(struct orch *o, const char *kind, const char *project, const char *env,
                const char *service, orch_progress_cb cb, void *data, char *err,
                size_t errlen);
int orch_rollback(struct orch *o, const char *project, const char *env, const char *service,
                  const char *revision, orch_progress_cb cb, void *data, char *err,
                  size_t errlen);
/* The client of a running operation went away: keep going, stop reporting. */
void orch_detach(struct orch *o, void *data);

/* Views (new references). project NULL = all. */
json_t *orch_ps(struct orch *o, const char *project, const char *env, const char *service);
json_t *orch_stats(struct orch *o, const char *project, const char *env, const char *service);
/* Replica names of matching services, for logs. */
json_t *orch_replica_names(struct orch *o, const char *project, const char *env,
                           const char *service);

/* Autoscaled services: bounds, targets, last evaluation and the recent
 * decisions (new reference). */
json_t *orch_autoscale_list(struct orch *o, const char *project, const char *env,
                            const char *service);

/* Services served over HTTPS: [{project, env, service, domains, and either
 * cert + key (own files) or email (+ acme directory)}] (new reference). */
json_t *orch_tls_wanted(struct orch *o);

/* Stop every operation and timer (takod shutting down; replicas keep
 * running and are adopted by the next takod). */
void orch_shutdown(struct orch *o);

#endif
