/* orch_internal.h — the reconciler's data structures (shared by orch.c and
 * the views in orch_view.c). Not for other modules. */
#ifndef TAKO_ORCH_INTERNAL_H
#define TAKO_ORCH_INTERNAL_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "config/config.h"
#include "core/ev.h"
#include "orch/orch.h"
#include "proxy/proxy.h"

#define ORCH_MAX_REPLICAS 512
#define ORCH_MAX_ROUTES 256

enum orch_phase {
    P_STARTING, /* started; in the pool when health-checked, no traffic until healthy */
    P_READY,    /* healthy, serving */
    P_DRAINING, /* out of the pool; in-flight requests finishing */
    P_STOPPING, /* rt_stop called */
};

struct orch_service;

struct orch_replica {
    struct orch_service *svc;
    struct rt_replica *rt;
    unsigned index;
    char name[128];
    char revision[64];
    char health_path[256]; /* its revision's health path; "" = the pool's check */
    unsigned gen; /* restart generation it was started for */
    uint16_t port;
    enum orch_phase phase;
    uint64_t phase_ms, started_ms, liveness_ms;
    unsigned restarts_at_start;
    bool was_ready;
    struct orch_replica *next; /* sorted by index */
};

struct orch_service {
    struct orch *o;
    char project[64], env[64], name[64];
    struct cfg_service *cfg; /* the target configuration */
    json_t *cfg_json;
    char revision[64];
    unsigned gen;
    unsigned cfg_replicas; /* what tako.yaml asks for */
    int scale_override;    /* -1: none */
    bool stopped, removing, in_op;
    unsigned http_port;
    /* the target before the last change, for automatic rollback */
    struct cfg_service *prev_cfg;
    json_t *prev_json;
    char prev_revision[64];
    unsigned prev_replicas;
    struct proxy_pool *pool; /* NULL for workers */
    struct proxy_backend_stats *snap; /* the pool's counters, copied once per tick */
    size_t nsnap;
    char pool_sig[8192];      /* the backend set last pushed */
    char pool_opts_sig[512];  /* the options the pool was made with */
    struct orch_replica *replicas;
    struct orch_service *next;
    /* autoscaling */
    struct orch_autoscale *as;
};

struct orch_op {
    struct orch *o;
    char project[64], env[64], kind[16];
    int64_t hist_id;
    orch_progress_cb cb;
    void *data;
    bool failed, rolling_back;
    char fail_msg[1024];
    char ok_msg[128];
    uint64_t started_ms;
    struct orch_op *next;
};

struct orch_route {
    char domain[256];
    struct proxy_pool *pool;
};

struct orch_listener {
    unsigned port;
    bool tls;                /* the HTTPS entrypoint of HTTPS services */
    unsigned redirect_to;    /* plain: the HTTPS port it redirects to (0 none) */
    uint64_t hsts;           /* TLS: max-age pushed */
    bool wanted, bound;
    struct proxy_pool *def;
    struct orch_route routes[ORCH_MAX_ROUTES];
    size_t nroutes;
    struct orch_listener *next;
};

struct orch {
    struct ev_loop *loop;
    struct rt *rt;
    struct proxy *proxy;
    struct store *store;
    char state_dir[4096];
    struct ev_timer tick;
    struct orch_service *services;
    struct orch_op *ops;
    struct orch_listener *listeners;
};

const char *orch_phase_name(enum orch_phase p);
/* The entry of id in a stats snapshot, or NULL (orch_view.c). */
const struct proxy_backend_stats *orch__find_stats(const struct proxy_backend_stats *v, size_t n,
                                                   const char *id);

#endif
