/* proxy_int.h — the proxy's internal structures, shared by its files:
 * backends and their snapshots (pool.c), strategies (lb_*.c), workers and
 * connections (worker.c, conn.c), the control thread (control.c). */
#ifndef TAKO_PROXY_PROXY_INT_H
#define TAKO_PROXY_PROXY_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "core/ev.h"
#include "core/net.h"
#include "http/http.h"
#include "proxy/lb.h"
#include "proxy/proxy.h"
#include "proxy/proxy_remote.h"
#include "proxy/xprt.h"

#define PROXY_MAX_THREADS 256
#define PROXY_NHIST PROXY_HIST_BUCKETS /* latency histogram buckets, the last is +Inf */
#define PROXY_MAX_TRIES 8

/* Relaxed counters written by one thread, read by any. */
#define STAT_ADD(p, v) __atomic_store_n((p), __atomic_load_n((p), __ATOMIC_RELAXED) + (v), __ATOMIC_RELAXED)
#define STAT_GET(p) __atomic_load_n((p), __ATOMIC_RELAXED)

extern const double proxy_hist_bounds_ms[PROXY_NHIST - 1];

/* Per-worker counters of one backend (one cache line owner each). */
struct bstat {
    uint64_t requests, failures, retries;
    uint64_t status[6]; /* index status/100: 1xx..5xx; [0] = no response */
    uint64_t bytes_in, bytes_out;
    uint64_t hist[PROXY_NHIST];
    uint64_t lat_sum_us;
} __attribute__((aligned(64)));

struct upconn;

/* An intrusive doubly-linked list head. */
struct dlist {
    struct dlist *prev, *next;
};

static inline void dlist_init(struct dlist *l) { l->prev = l->next = l; }
static inline bool dlist_empty(const struct dlist *l) { return l->next == l; }
static inline void dlist_add(struct dlist *head, struct dlist *n)
{
    n->next = head->next;
    n->prev = head;
    head->next->prev = n;
    head->next = n;
}
static inline void dlist_del(struct dlist *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = n;
}
#define DLIST_ENTRY(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))

/* Health-check state, touched by the control thread only. */
struct hcheck {
    uint64_t due; /* next check, control loop ms */
    int fd;
    struct ev_io io;
    struct ev_timer timer;
    uint64_t started;
    bool running;
    bool sent;
    unsigned ok_streak;
    char rbuf[64];
    size_t rlen;
};

struct backend {
    char id[64];
    char addr_s[64];
    struct net_addr addr;
    char *health_path;           /* NULL: the pool's */
    bool peer;                   /* another server's peer listener */
    unsigned weight;             /* ≥ 1 */
    uint64_t id_hash;
    struct proxy_pool *pool;
    atomic_bool healthy;
    atomic_bool ever_healthy;
    atomic_bool removed;         /* not in the current set any more */
    atomic_uint inflight;        /* requests picked and not finished, all threads */
    atomic_uint_fast64_t last_pick;
    atomic_uint idle_conns;      /* pooled upstream connections, all threads */
    atomic_uint_fast64_t idle_close_ms; /* shortest idle time after which it closed a pooled
                                         * connection (its keep-alive timeout), 0: none seen */
    atomic_uint consecutive_failures;
    atomic_uint_fast64_t health_transitions;
    atomic_int slot;             /* index in the current set, -1 when removed */
    uint64_t removed_at;         /* ms, control side */
    atomic_bool drain_expired;   /* removed longer than drain_timeout: not reported */
    uint64_t retire_gen;         /* set generation that removed it */
    struct backend *next;        /* pool->all list (control side, under pool->lock) */
    struct bstat *st;            /* [nworkers] */
    struct dlist *idle;          /* [nworkers] idle upstream connections */
    uint32_t *idle_n;            /* [nworkers] their number (each worker its own) */
    struct hcheck hc;
};

struct proxy_pool {
    struct proxy *p;
    void *remote; /* the remote implementation's pool (p->rops set) */
    struct proxy_pool_opts o;
    char *name, *health_path, *sticky_cookie;
    size_t sticky_cookie_len;
    const struct lb_ops *ops;
    const struct xprt_ops *up_xprt; /* transport to its backends (TCP) */
    atomic_uint queued;      /* requests waiting for a backend under max_conns_per_backend */
    void *up_xprt_arg;
    _Atomic(struct lb_set *) cur;
    char *peer_service;      /* X-Tako-Service to peer backends, NULL: none */
    size_t peer_service_len;
    struct net_addr peer_src; /* source address towards peer backends (len 0: any) */
    atomic_uint_fast64_t rr; /* round-robin cursor shared by all threads */
    atomic_uint_fast64_t rr_local; /* the one of a peer listener's requests (and the
                                    * other servers' health checks): they never move rr */
    pthread_mutex_t lock;    /* control side: all, set swaps */
    struct backend *all;     /* current and draining */
    bool had_set;
    bool freeing;
    struct proxy_pool *next; /* p->pools */
};

struct retired_ptr {
    void *ptr;
    void (*fn)(void *);
    uint64_t gen;
    struct retired_ptr *next;
};

struct domain_str {
    struct domain_str *next;
    char s[];
};

struct route {
    char *domain;
    size_t len;
    struct proxy_pool *pool;
};

/* A peer listener's allow list, swapped whole. */
struct peer_allow {
    size_t n;
    struct proxy_cidr c[];
};

/* An immutable routing table of a listener, swapped whole. */
struct routes {
    struct proxy_pool *def;
    size_t n;
    struct route r[];
};

struct listener {
    struct proxy *p;
    struct net_addr addr;   /* as bound (port resolved) */
    int *fds;               /* [nworkers] SO_REUSEPORT sockets */
    const struct xprt_ops *xprt; /* transport of accepted connections */
    void *xprt_arg;              /* its argument (TLS: the context), not owned */
    _Atomic(struct routes *) routes;
    atomic_uint open_conns;
    atomic_uint_fast64_t accepted;
    atomic_int refs;        /* workers still holding it */
    _Atomic unsigned https_redirect; /* plain listener: 308 to this HTTPS port (0: off) */
    _Atomic uint64_t hsts;           /* TLS listener: Strict-Transport-Security max-age */
    bool peer;                       /* routes by X-Tako-Service to own backends only */
    _Atomic(struct peer_allow *) allow; /* peer listener: who may connect */
    atomic_uint_fast64_t refused;       /* connections closed for not being allowed */
    atomic_uint_fast64_t refused_log_ms; /* last time one was logged */
    bool closed;
    struct listener *next;  /* p->listeners, under p->lock */
};

/* A worker's handle on a listener. */
struct wlistener {
    struct ev_io io;
    struct listener *l;
    struct worker *w;
    struct dlist link;
    struct ev_defer free_defer; /* freed after the loop's batch */
};

enum wcmd_kind { WCMD_LISTEN, WCMD_UNLISTEN, WCMD_STOP };
struct wcmd {
    enum wcmd_kind kind;
    struct listener *l;
    struct wcmd *next;
};

struct xchg;

struct worker {
    struct proxy *p;
    unsigned idx;
    pthread_t th;
    bool started;
    struct ev_loop loop;
    int evfd;
    struct ev_io evio;
    pthread_mutex_t qlock;
    struct wcmd *q;
    struct dlist listeners;
    struct dlist clients;   /* every open client connection */
    struct dlist idle_up;   /* every pooled upstream connection */
    struct dlist waiting;   /* exchanges waiting for a healthy backend */
    struct dlist queue;     /* exchanges waiting for a backend under its limit, FIFO */
    bool queue_kick;        /* queue_defer is scheduled */
    struct ev_defer queue_defer;
    unsigned nclients;
    struct xchg *free_x;
    unsigned nfree_x;
    uint64_t rng[2];
    struct ev_timer tick;
    uint64_t seen_gen;
    /* retry budget: per-second window, this worker's share */
    uint64_t budget_sec, budget_reqs, budget_retries;
    bool stopping;
    bool paused;            /* accept paused at max_conns */
    uint64_t stop_deadline;
    /* access log */
    char *log;
    size_t log_len;
    bool log_flush_pending;
    struct ev_defer log_defer;
    /* clients whose exchange has a write waiting for the end of the batch,
     * per phase (conn__send_later) */
    struct dlist sendq[2];
    bool sending[2]; /* that phase's queue is being run: write now */
    bool sends_pending;
    struct ev_defer sends_defer;
    atomic_uint_fast64_t qs_gen; /* quiescent-state generation for reclamation */
};

struct proxy {
    /* Set for a proxy served by another process (proxy_remote.h): every
     * public call goes to rops, nothing below is used. */
    const struct proxy_remote_ops *rops;
    void *remote;
    struct proxy_opts o;
    unsigned nworkers;
    struct worker *w;
    pthread_mutex_t lock; /* listeners, pools lists */
    struct listener *listeners;
    struct proxy_pool *pools;
    bool running;
    atomic_uint open_conns;
    atomic_uint_fast64_t gen; /* bumped at every set swap / retire */
    struct proxy_cidr *trusted;
    size_t ntrusted;
    int log_fd;
    bool log_close;
    /* control thread */
    pthread_t ctl_th;
    struct ev_loop ctl_loop;
    int ctl_evfd;
    struct ev_io ctl_evio;
    struct ev_timer ctl_tick;
    atomic_bool ctl_stop;
    pthread_mutex_t ctl_lock; /* retired sets, backends to check */
    struct lb_set *retired;
    struct retired_ptr *retired_misc;
    struct domain_str *domains; /* route domain strings, freed with the proxy */
    struct net_addr metrics_addr;
    bool have_metrics;
    int metrics_fd;
    struct ev_io metrics_io;
    struct dlist metrics_conns;
    uint64_t instance_id; /* random, see proxy_instance_id() */
    /* HTTPS (proxy_tls.c) */
    struct tls_server *tls;   /* made with the first TLS listener or certificate */
    pthread_mutex_t chal_lock;
    struct chal *chals;       /* ACME HTTP-01 tokens being validated */
    atomic_uint nchals;       /* fast path: no lock when zero */
    uint64_t tickets_rotated; /* control loop ms */
    /* TLS counters (xprt_tls.c), read by proxy_tls_stats and the metrics */
    atomic_uint_fast64_t tls_handshakes, tls_resumed, tls_failures, tls_nocert, tls_plain,
        tls_garbage;
};

struct chal {
    struct chal *next;
    char *token, *keyauth;
};

/* ---- pool.c ---- */
/* Mark a backend down now (passive failure seen by a worker holding set). */
void pool__backend_down(struct lb_set *set, struct backend *b, const char *why);
/* Set a backend's health from the control thread; counts transitions. */
void pool__backend_set_health(struct backend *b, bool up);
/* Reclaim retired sets and drained backends (control thread, periodic). */
void pool__reclaim(struct proxy *p, uint64_t now);
/* Whether a retry is within the budget; counts it when it is. */
bool worker__retry_allowed(struct worker *w, double ratio);
void worker__count_request(struct worker *w);
void pool__free_all(struct proxy *p);
/* Free ptr with fn once no worker can still see it. */
void pool__retire_ptr(struct proxy *p, void *ptr, void (*fn)(void *));
void lb_set__free(struct lb_set *s);

/* Whether a (family, 16 bytes) address is in cd (xchg.c). */
bool proxy__cidr_match(const struct proxy_cidr *cd, int family, const uint8_t *a);

/* ---- worker.c ---- */
int worker__start_all(struct proxy *p);
void worker__stop_all(struct proxy *p);
void worker__post(struct worker *w, enum wcmd_kind kind, struct listener *l);
uint64_t worker__rand(struct worker *w);
void listener__unref(struct listener *l);

/* ---- conn.c ---- */
void conn__accept(struct worker *w, struct wlistener *wl, int fd, const struct sockaddr_storage *ss);
void conn__tick(struct worker *w);
void conn__close_idle_clients(struct worker *w);
void conn__close_removed_upstreams(struct worker *w);
void conn__free_worker(struct worker *w);

/* ---- control.c ---- */
int control__start(struct proxy *p);
void control__stop(struct proxy *p);
void control__wake(struct proxy *p);
void health__stop_backend(struct proxy *p, struct backend *b);

/* ---- accesslog.c ---- */
struct alog_rec {
    const char *client;
    const char *method;
    size_t method_len;
    const char *path;
    size_t path_len;
    int status;
    uint64_t bytes;
    const char *upstream;
    uint64_t dur_us;
    const char *rid;
    size_t rid_len;
    const char *pool;
};
void alog__write(struct worker *w, const struct alog_rec *r);
void alog__flush(struct worker *w);

/* ---- proxy_tls.c ---- */
struct tls_server *proxy__tls(struct proxy *p);
/* Copy the key authorization for token into buf; false when unknown. */
bool proxy__challenge_get(struct proxy *p, const char *token, size_t len, char *buf, size_t cap);
/* Whether a certificate names host[0..len) (no store yet: false). */
bool proxy__tls_has_name(struct proxy *p, const char *host, size_t len);
/* The TLS transport (xprt_tls.c); its argument is the struct proxy (its
 * certificate store and counters). */
extern const struct xprt_ops xprt_tls;
void proxy__tls_tick(struct proxy *p, uint64_t now_ms);
void proxy__tls_free(struct proxy *p);

/* ---- metrics ---- */
void metrics__observe(struct bstat *st, int status, uint64_t dur_us);
int proxy__metrics_listen(struct proxy *p);
void proxy__metrics_close(struct proxy *p);

#endif
