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
    /* Several servers per environment (all optional; absent = one server):
     * local replica j is named <project>-<service>-<slot_first+(j-1)*slot_stride>,
     * and peer_replicas ({"b": 2}) says how many run on each other server. */
    json_t *slot_first, *slot_stride, *peer_replicas;
};

struct orch_deploy_req {
    const char *project, *env;
    unsigned http_port;
    struct orch_deploy_item *items;
    size_t n_items;
    bool force;
    bool prune; /* remove services of this env that are not in items */
    const char *only_service; /* --service: leave the others alone */
    /* {"listen": "ADDR:PORT", "servers": [{"name", "address"}]}: this
     * server's peer listener and the environment's other servers; NULL on
     * one server. */
    json_t *peers;
};

/* Operations. Each returns 0 when started (progress then flows to cb until
 * a final call), or -errno with a message in err: -EBUSY another operation
 * of the project runs, -ENOENT unknown project/service, -EINVAL bad input.
 * cb may be NULL. */
int orch_deploy(struct orch *o, const struct orch_deploy_req *req, orch_progress_cb cb,
                void *data, char *err, size_t errlen);
/* counts: {"web": 5, ...} (local replicas); peer_replicas: {"web": {"b": 2}}
 * and slots: {"web": {"first": 2, "stride": 3}} (several servers; NULL:
 * unchanged). */
int orch_scale(struct orch *o, const char *project, const char *env, json_t *counts,
               json_t *peer_replicas, json_t *slots, orch_progress_cb cb, void *data, char *err,
               size_t errlen);
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
/* A read-only walk over every service and replica for metrics and the
 * dashboard: no allocation, no proxy lock (the counters are the pool's
 * snapshot copied by the last tick, at most ORCH_TICK_MS old). Pointers are
 * valid during the callback only. Runs on takod's loop thread. */
struct orch_service_view {
    const char *project, *env, *name;
    const char *strategy;     /* "round_robin", ... */
    const char *status;       /* as in `tako ps` */
    const char *revision;
    unsigned desired, ready;  /* ready: replicas admitted and healthy */
    bool has_pool;            /* false for workers (no port) */
    bool autoscaled;
    unsigned autoscale_min, autoscale_max;
    int autoscale_recommended; /* last evaluation's count before bounds/stabilisation; -1 none */
};
struct orch_replica_view {
    const char *name;         /* "scaling-web-1" */
    unsigned index;
    const char *health;       /* healthy | unhealthy | starting | draining | none */
    const char *phase;        /* starting | ready | draining | stopping */
    const char *revision;
    struct rt_info *rt;       /* runtime view (state, restarts, cpu, memory) */
    /* Every backend instance of this replica in the pool's snapshot: the
     * current one, and during a deploy the one of the old process still
     * draining under the same name. */
    const struct proxy_backend_stats *backends[4];
    size_t nbackends;
};
struct orch_visitor {
    void (*service)(void *data, const struct orch_service_view *s);
    void (*replica)(void *data, const struct orch_service_view *s,
                    const struct orch_replica_view *r);
};
/* with_stats: fill rt's CPU and memory too (a sample of every replica's
 * processes, at most every 500 ms); without, they are 0. */
void orch_visit(struct orch *o, const struct orch_visitor *v, void *data, bool with_stats);

/* Stop every operation and timer (takod shutting down; replicas keep
 * running and are adopted by the next takod). */
void orch_shutdown(struct orch *o);

#endif
