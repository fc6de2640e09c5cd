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

/* Replicas per service: CFG_MAX_REPLICAS (config.h), the one limit that
 * validation, the pool, `tako scale` and autoscaling all use. */
#define ORCH_SIG_LEN 32 /* SHA-256 digests of a pool's options and backend set */
#define ORCH_MAX_ROUTES 256
#define ORCH_LEASE_MS 30000 /* an operation's lease on its project; renewed every third */

enum orch_phase {
    P_STARTING, /* started; in the pool when health-checked, no traffic until healthy */
    P_READY,    /* healthy, serving */
    P_DRAINING, /* out of the pool; in-flight requests finishing */
    P_STOPPING, /* rt_stop called */
};

struct orch_service;

/* Several servers per environment (orch_peers.c). */
#define ORCH_MAX_PEERS 64
/* Local index of an adopted replica whose slot the service's rule does not
 * give (placement changed while takod was away): beyond every slot, so it
 * is drained like any replica above the count. */
#define ORCH_FOREIGN_INDEX 10000000u

struct orch_peer {
    char name[64];
    char address[64];  /* numeric ADDR:PORT of its peer listener */
    unsigned replicas; /* this service's replicas there */
    char id[72];       /* "peer:NAME", its backend id in the service's pool */
};

struct orch_replica {
    struct orch_service *svc;
    struct rt_replica *rt;
    unsigned index; /* local: 1..n on this server (the reconciler's slots) */
    unsigned slot;  /* the number in its name: slot_first + (index-1)*slot_stride */
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
    uint8_t pool_sig[ORCH_SIG_LEN];      /* digest of the backend set last pushed */
    bool pool_sig_set;
    bool pool_dirty; /* the backend set changed since it was last pushed */
    uint8_t pool_opts_sig[ORCH_SIG_LEN]; /* digest of the options the pool was made with */
    struct orch_replica *replicas;
    struct orch_service *next;
    /* Several servers per environment: local replica j is named by slot
     * slot_first + (j-1)*slot_stride (1, 1 on one server); placement is what
     * the store keeps (NULL on one server), parsed into the fields below. */
    unsigned slot_first, slot_stride;
    json_t *placement;
    char peer_listen[64]; /* this server's peer listener, "" none */
    struct orch_peer *peers;
    size_t npeers;
    /* autoscaling */
    struct orch_autoscale *as;
};

struct orch_op {
    struct orch *o;
    char project[64], env[64], kind[16];
    char owner[192]; /* of the project's lease */
    uint64_t renewed_ms;
    int64_t hist_id;
    bool hist_pending, finished; /* history row begun but not answered; op over */
    char hist_status[16], hist_msg[1200];
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

/* A peer listener (several servers per environment), shared by every
 * service whose placement names its address. */
struct orch_peer_listener {
    char addr[64];
    bool bound, wanted;
    char **routes; /* "PROJECT/ENV/SERVICE" routed now */
    struct proxy_pool **pools;
    size_t nroutes;
    uint8_t allow_sig[ORCH_SIG_LEN]; /* digest of the allow list pushed */
    struct orch_peer_listener *next;
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
    uint64_t (*clock)(void *); /* NULL: the loop's clock */
    void *clock_data;
    struct rt *rt;
    struct proxy *proxy;
    struct store *store;
    char owner[128]; /* this takod, for leases */
    uint64_t op_seq;
    char state_dir[4096];
    struct ev_timer tick;
    struct ev_timer flush; /* pushes changed backend sets once the loop turn ends */
    struct orch_service *services;
    struct orch_op *ops;
    struct orch_listener *listeners;
    struct orch_peer_listener *peer_listeners; /* orch_peers.c */
};

const char *orch_phase_name(enum orch_phase p);
/* ---- shared by orch.c (replicas, the tick), orch_pool.c (pools and
 * listeners) and orch_op.c (operations) ---- */

/* The reconciler's clock (ms, monotonic): the loop's, or a test's. */
uint64_t orch__now(struct orch *o);
/* How many replicas the service should run now (0 when stopped/removing). */
unsigned orch__desired(struct orch_service *s);
/* A replica of the target revision and restart generation? Starting or ready? */
bool orch__rep_current(const struct orch_service *s, const struct orch_replica *r);
bool orch__rep_active(const struct orch_replica *r);
/* Every slot 1..n holds a ready current replica and nothing else runs. */
bool orch__converged(struct orch_service *s);
/* What happened to a service: with a level, logged and streamed to the
 * project's running operation; with a kind, also recorded as an event. */
void orch__report(struct orch_service *s, const char *level, const char *kind, const char *fmt,
                  ...) __attribute__((format(printf, 4, 5)));
struct orch_service *orch__svc_find(struct orch *o, const char *project, const char *name);
/* Save the service's target to the store (fire and forget). */
void orch__persist(struct orch_service *s);

/* orch_peers.c */
/* The slot (number in the name) of local replica j, and back: the local
 * index of a slot, ORCH_FOREIGN_INDEX + slot when the rule does not give it. */
unsigned orch__slot(const struct orch_service *s, unsigned j);
unsigned orch__local_index(const struct orch_service *s, unsigned slot);
/* The placement of a deploy item (peers: the request's "peers", may be
 * NULL): *out NULL on one server, else a new reference. 0 or -EINVAL with
 * a message naming the field. */
int orch__placement_of(const json_t *peers, const struct orch_deploy_item *it, json_t **out,
                       char *err, size_t errlen);
/* Install a placement (takes the reference; NULL: one server). Returns
 * whether the slot rule changed (replicas then need new names). */
bool orch__placement_set(struct orch_service *s, json_t *placement);
/* A scale's peer_replicas ({"b": 2}) and slots ({"first", "stride"}) for s
 * (either NULL): the new placement in *out (new reference), or -EINVAL. */
/* After a change of the slot rule: local indexes again from the names. */
void orch__reindex(struct orch_service *s);
int orch__placement_scaled(const struct orch_service *s, const json_t *peer_replicas,
                           const json_t *slots, json_t **out, char *err, size_t errlen);

/* This server's peer-listen IP (source of connections to peers): false
 * when it listens on every address. */
bool orch__peer_source(const struct orch_service *s, char *buf, size_t len);
/* The peer backends of s ("peer:NAME", weight = its replicas there) into
 * specs (room for s->npeers), hashed into h; their count. */
struct sha256;
size_t orch__peer_specs(struct orch_service *s, struct proxy_backend_spec *specs, struct sha256 *h);
/* Bind, route and allow the peer listeners the services want; close the
 * others. 0, or -errno with a message. */
int orch__sync_peer_listeners(struct orch *o, char *err, size_t errlen);
void orch__peer_listeners_free(struct orch *o);
/* ps: the service's peers with the health this server sees. */
json_t *orch__peers_json(const struct orch_service *s, const struct proxy_backend_stats *st,
                         size_t nst);

/* orch_pool.c */
void orch__ensure_pool(struct orch_service *s);
/* The backend set changed: pushed once the loop turn ends (coalesced). */
void orch__sync_pool(struct orch_service *s);
/* Push the backend set now when it changed. */
void orch__push_pool(struct orch_service *s);
/* Push every changed set now; orch__on_flush is o->flush's callback. */
void orch__flush_pools(struct orch *o);
void orch__on_flush(struct ev_loop *loop, struct ev_timer *t);
/* Recompute every listener's routes and apply the difference: 0, or
 * -errno with a message when a port cannot be bound. */
int orch__sync_listeners(struct orch *o, char *err, size_t errlen);

/* orch_op.c */
void orch__op_finish(struct orch *o, struct orch_op *op);
void orch__ops_renew(struct orch *o, uint64_t now);
/* A new service, appended (ps lists them in deploy order). */
struct orch_service *orch__svc_new(struct orch *o, const char *project, const char *env,
                                   const char *name);
/* Set the target configuration (takes cfg and j); the old one becomes prev. */
void orch__set_target(struct orch_service *s, struct cfg_service *cfg, json_t *j,
                      const char *revision);

/* For tests: one reconcile step of every service (what the timer runs
 * every ORCH_TICK_MS), and the clock the reconciler reads (ms, monotonic). */
void orch__tick(struct orch *o);
void orch__set_clock(struct orch *o, uint64_t (*clock)(void *), void *data);
/* Sort a stats snapshot by id (stable: the current backend stays before a
 * draining one of the same id), then find id in it in O(log n), or NULL
 * (orch_view.c). */
void orch__stats_sort(struct proxy_backend_stats *v, size_t n);
const struct proxy_backend_stats *orch__find_stats(const struct proxy_backend_stats *v, size_t n,
                                                   const char *id);

#endif
