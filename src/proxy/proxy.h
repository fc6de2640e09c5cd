/* proxy.h — the HTTP/1.1 load balancer as a module: worker threads with
 * their own event loops, listeners routed to pools of backends, health
 * checks, retries, draining, access log and Prometheus metrics.
 *
 * takod embeds it; `tako proxy` is a thin command around it. Every function
 * here may be called from any thread unless said otherwise; none blocks on
 * the data plane. Functions return 0 or -errno. See docs/internals/proxy.md.
 */
#ifndef TAKO_PROXY_PROXY_H
#define TAKO_PROXY_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/net.h"

struct proxy;      /* owns worker threads, listeners, pools, the control thread */
struct proxy_pool; /* one load-balanced set of backends (one per service) */

/* A strategy's number: its row in lb_table (lb_table.c). The first rows
 * have names here; a strategy added later is simply the next number. */
enum lb_kind {
    LB_ROUND_ROBIN = 0,
    LB_LEAST_CONN,
    LB_IP_HASH,
    LB_RANDOM,
    LB_STICKY,
    LB_P2C,
};

/* "round_robin", "least_connections", ... → kind; returns 0 or -EINVAL. */
int lb_kind_parse(const char *name, enum lb_kind *out);
/* The strategy's name ("?" for none). */
const char *lb_kind_name(enum lb_kind kind);
/* How many strategies there are (kinds 0 … lb_count()-1). */
size_t lb_count(void);

enum proxy_log_format { PROXY_LOG_TEXT = 0, PROXY_LOG_JSON };

/* A CIDR for trusted proxies (X-Forwarded-For is believed only from them). */
struct proxy_cidr {
    int family; /* AF_INET or AF_INET6 */
    uint8_t addr[16];
    unsigned prefix;
};
/* "10.0.0.0/8", "::1/128", "127.0.0.1" (a host) → cidr; 0 or -EINVAL. */
int proxy_cidr_parse(const char *s, struct proxy_cidr *out);

/* Zero means "the default" for every numeric field. */
struct proxy_opts {
    unsigned threads;              /* default: number of online CPUs */
    uint64_t connect_timeout_ms;   /* upstream connect (default 5 s) → retry / 504 */
    uint64_t timeout_ms;           /* upstream inactivity during an exchange (60 s) → 504 */
    uint64_t header_timeout_ms;    /* first byte to end of a request head (10 s) → 408 */
    uint64_t idle_timeout_ms;      /* keep-alive / fresh connection with no request (60 s) */
    uint64_t tunnel_timeout_ms;    /* Upgrade tunnel inactivity (1 h) */
    uint64_t upstream_idle_ms;     /* pooled idle upstream connection lifetime (4 s) */
    uint64_t stop_timeout_ms;      /* proxy_stop: in-flight grace (10 s) */
    unsigned max_conns;            /* open client connections, all threads (10000) */
    unsigned max_header_size;      /* request line + headers (8 KiB) → 431 */
    unsigned max_headers;          /* header count (100) → 431 */
    unsigned max_idle_per_backend; /* idle upstream connections per backend per thread (64) */
    const char *access_log;        /* NULL: none; "-": stdout; else a file path (appended) */
    enum proxy_log_format access_log_format;
    const struct net_addr *metrics_addr; /* NULL: no metrics endpoint */
    const struct proxy_cidr *trusted; /* proxies whose X-Forwarded-For is believed */
    size_t ntrusted;
};

struct proxy_pool_opts {
    const char *name; /* for metrics and logs, e.g. "web" */
    enum lb_kind strategy;
    const char *health_path;       /* NULL: TCP connect check instead of HTTP GET */
    uint64_t health_interval_ms;   /* default 2 s */
    uint64_t health_timeout_ms;    /* default 1 s */
    /* Between checks of a backend that is down, not yet up, or up with a
     * failure streak (HAProxy's downinter/fastinter): 250 ms, at most the
     * interval. Healthy backends are checked every health_interval_ms. */
    uint64_t health_fast_interval_ms;
    unsigned rise;                 /* passes to come back after a failure (2) */
    unsigned fall;                 /* failures to be marked down (3) */
    unsigned retries;              /* extra attempts on another backend (2); see _set */
    bool retries_set;              /* true: retries is meant even when 0 */
    double retry_budget;           /* retries allowed as a share of requests (0.2), plus 10/s */
    uint64_t drain_timeout_ms;     /* a removed backend is reported until drained or this (30 s) */
    uint64_t all_down_wait_ms;     /* wait for a healthy backend before 503 (5 s); see _set */
    bool all_down_wait_set;        /* true: all_down_wait_ms is meant even when 0 */
    const char *sticky_cookie;     /* cookie name for LB_STICKY ("tako_backend") */
    unsigned ipv6_prefix;          /* ip_hash: bits of an IPv6 client address hashed (64) */
    bool initial_up;               /* backends of the first set take traffic before a check */
    uint64_t body_timeout_ms;      /* a request body may take this long (20 s), plus ↓ → 408 */
    unsigned min_body_rate;        /* ... 1 s more per this many body bytes received (500 B/s) */
    unsigned max_conns_per_backend; /* requests in flight per backend, all threads; 0: no limit */
    unsigned max_queue;            /* requests waiting for a backend under that limit (256) → 503 */
    uint64_t queue_timeout_ms;     /* how long one may wait in that queue (5 s) → 503 */
    /* Several servers per environment: requests and health checks to a peer
     * backend carry X-Tako-Service: peer_service ("PROJECT/ENV/SERVICE"),
     * and connect from the address peer_source (numeric IP; NULL/"": any). */
    const char *peer_service;
    const char *peer_source;
};

struct proxy_backend_spec {
    const char *id; /* stable identity, e.g. "scaling-web-1"; at most 63 bytes */
    struct net_addr addr;
    /* Health-check path of this backend, NULL: the pool's. Lets one pool
     * hold replicas of two revisions with different health paths during a
     * deploy. A kept id with another path (or address) is a new backend. */
    const char *health_path;
    /* Known healthy elsewhere (the previous data-plane process): a new
     * backend takes traffic before its first check here. */
    bool up;
    /* Another server's peer listener (id "peer:NAME"): requests get the
     * pool's X-Tako-Service; a peer listener never routes to it. */
    bool peer;
    /* Share of picks under round_robin and random (0: 1), e.g. the replicas
     * a peer backend stands for; the other strategies count every backend once. */
    unsigned weight;
};

/* Latency histogram of a backend: bucket i counts requests that took at most
 * proxy_hist_bounds_s()[i] seconds (and more than bucket i-1's bound); the
 * last bucket has no upper bound (+Inf). Not cumulative. */
#define PROXY_HIST_BUCKETS 16
/* The PROXY_HIST_BUCKETS - 1 finite upper bounds, in seconds, ascending. */
const double *proxy_hist_bounds_s(void);

struct proxy_backend_stats {
    char id[64];
    char addr[64];
    bool healthy;
    bool draining;
    bool ever_healthy;
    unsigned consecutive_failures; /* active health checks failed in a row */
    uint64_t inflight, requests, status_2xx, status_3xx, status_4xx, status_5xx, failures;
    double p50_ms, p99_ms;
    uint64_t health_transitions;
    uint64_t retries;                    /* requests retried elsewhere after failing here */
    uint64_t status_none;                /* requests that got no response from it */
    uint64_t hist[PROXY_HIST_BUCKETS];   /* see PROXY_HIST_BUCKETS */
    double latency_sum_s;                /* sum of the durations counted in hist */
    uint64_t instance;                   /* proxy_instance_id() of the counting proxy */
};

/* Identity of this proxy instance (random, fixed for its life). Counters of
 * one instance only grow; a backend's counters are those of one backend
 * instance (an id with a new address or check is a new instance, from 0). A
 * reader keeping totals across proxy restarts keys them by this. */
uint64_t proxy_instance_id(const struct proxy *p);

struct proxy_listener_stats {
    char addr[64];      /* "127.0.0.1:8080" as bound */
    unsigned open_conns;
    uint64_t accepted;
    uint64_t refused;   /* peer listener: connections from outside its allow list */
    uint64_t instance; /* proxy_instance_id() of the counting proxy */
};
/* Snapshot of every listener. Caller frees *out (free()). */
int proxy_listener_stats(struct proxy *p, struct proxy_listener_stats **out, size_t *n);

/* Create a proxy (no threads yet). Returns NULL and sets errno on failure
 * (e.g. the access log cannot be opened). */
struct proxy *proxy_new(const struct proxy_opts *o);
/* Spawn the worker threads and the control thread (health checks, metrics,
 * reclamation). Listeners added before start begin accepting now. */
int proxy_start(struct proxy *p);
/* Graceful stop: close listeners, let in-flight exchanges finish (bounded by
 * stop_timeout_ms), close idle connections, join every thread. */
void proxy_stop(struct proxy *p);
/* Free everything (stops first when still running), pools included. */
void proxy_free(struct proxy *p);

struct proxy_pool *proxy_pool_new(struct proxy *p, const struct proxy_pool_opts *o);

/* Listen on addr; requests go to default_pool unless a Host route matches
 * (see proxy_route_host). default_pool may be NULL: unknown hosts get 404.
 * Callable while running. -EADDRINUSE etc. from bind. */
int proxy_listen(struct proxy *p, const struct net_addr *addr, struct proxy_pool *default_pool);
/* proxy_listen with another transport than plain TCP (see xprt.h and
 * docs/internals/transport.md): accepted connections are attached to xprt
 * with xprt_arg, which must outlive the listener. */
struct xprt_ops;
int proxy_listen_xprt(struct proxy *p, const struct net_addr *addr, struct proxy_pool *default_pool,
                      const struct xprt_ops *xprt, void *xprt_arg);
/* Route requests whose Host (case-insensitive, port ignored) is `domain` on
 * the listener at listener_addr to pool; pool NULL removes the route.
 * -ENOENT when there is no such listener. */
int proxy_route_host(struct proxy *p, const struct net_addr *listener_addr, const char *domain,
                     struct proxy_pool *pool);
/* A peer listener (several servers per environment) on addr: connections
 * are accepted only from the addresses in allow (others are closed at once,
 * counted and logged at most once a minute); a request is routed by its
 * X-Tako-Service header ("PROJECT/ENV/SERVICE", set with proxy_route_host)
 * to that pool's own backends only, never to a peer backend (no loops):
 * none healthy is 503, an unknown service 404. The header is removed, and
 * the connecting peer is a trusted proxy (its X-Forwarded-For is kept). */
int proxy_listen_peer(struct proxy *p, const struct net_addr *addr,
                      const struct proxy_cidr *allow, size_t nallow);
/* Replace the allow list of the peer listener at addr; -ENOENT. */
int proxy_listener_peer_allow(struct proxy *p, const struct net_addr *addr,
                              const struct proxy_cidr *allow, size_t nallow);
/* Stop listening on addr (connections already accepted finish). */
int proxy_unlisten(struct proxy *p, const struct net_addr *addr);
/* Actual bound address of a listener (port 0 resolved); -ENOENT. */
int proxy_listener_addr(struct proxy *p, size_t index, struct net_addr *out);

/* Swap the backend set atomically. Backends kept (same id) keep their state
 * and counters; new ones get no traffic until their first passing health
 * check (unless initial_up and this is the pool's first set); removed ones
 * stop getting requests, finish what is in flight and stay in the stats as
 * draining until then (or drain_timeout_ms). -EINVAL for an id too long or
 * given twice. */
int proxy_pool_set_backends(struct proxy_pool *pool, const struct proxy_backend_spec *b, size_t n);
/* Retire a pool no listener routes to any more (after proxy_unlisten /
 * proxy_route_host(..., NULL)): its set is emptied, its backends drain and
 * are freed once drained; the pool's own small struct is released by
 * proxy_free (exchanges in flight may still point at it). */
void proxy_pool_free(struct proxy_pool *pool);

/* Snapshot of every backend of the pool, current ones in set order then
 * draining ones. Caller frees *out with proxy_pool_stats_free. */
int proxy_pool_stats(struct proxy_pool *pool, struct proxy_backend_stats **out, size_t *n);
void proxy_pool_stats_free(struct proxy_backend_stats *s);

/* ---- HTTPS (proxy_tls.c; certificates in src/tls) ----
 *
 * What crosses from takod to the data plane is data only: certificate and
 * key PEM text, ACME challenge tokens, ports and flags. */

/* Listen with TLS on addr: like proxy_listen, but every connection first
 * completes a TLS handshake (certificate chosen by SNI from the proxy's
 * store; the handshake is bounded by header_timeout_ms). Plain HTTP sent
 * to it gets a 400 naming https://, other bytes a close. Requests carry
 * X-Forwarded-Proto: https. Callable while running. */
int proxy_listen_tls(struct proxy *p, const struct net_addr *addr, struct proxy_pool *default_pool);
/* Install or replace the certificate known as id (PEM chain + key); new
 * handshakes get it, open connections keep theirs. -EINVAL with a message
 * in err when it is unusable; the previous one stays then. */
int proxy_tls_set_cert(struct proxy *p, const char *id, const char *cert_pem, size_t cert_len,
                       const char *key_pem, size_t key_len, char *err, size_t errlen);
int proxy_tls_set_cert_files(struct proxy *p, const char *id, const char *cert_path,
                             const char *key_path, char *err, size_t errlen);
int proxy_tls_del_cert(struct proxy *p, const char *id);
/* Whether a certificate names host (port ignored). */
bool proxy_tls_has_name(struct proxy *p, const char *host);
/* On the plain listener at addr: answer requests for hosts that have a
 * certificate with 308 to https://host[:https_port]/… (443 is left out),
 * except /.well-known/acme-challenge/. https_port 0 turns it off. */
int proxy_listener_https_redirect(struct proxy *p, const struct net_addr *addr, unsigned https_port);
/* On the TLS listener at addr: add Strict-Transport-Security with this
 * max-age to every response (0: none). */
int proxy_listener_hsts(struct proxy *p, const struct net_addr *addr, uint64_t max_age_s);
/* HTTP-01: answer GET /.well-known/acme-challenge/<token> on every plain
 * listener with keyauth (text/plain) while it is set. */
void proxy_challenge_set(struct proxy *p, const char *token, const char *keyauth);
void proxy_challenge_del(struct proxy *p, const char *token);

/* TLS counters since the proxy started (all TLS listeners). */
struct proxy_tls_stats {
    uint64_t handshakes;         /* completed */
    uint64_t resumed;            /* of those, resumed from a session ticket */
    uint64_t handshake_failures; /* failed, timed out or closed mid-handshake */
    uint64_t no_certificate;     /* no certificate installed at all */
    uint64_t plain_http;         /* plain HTTP sent to a TLS port (answered 400) */
    uint64_t not_tls;            /* other bytes that are not TLS (closed) */
    unsigned certificates;       /* installed now */
};
/* -EAGAIN when the counters cannot be had now (a remote data plane away). */
int proxy_tls_stats(struct proxy *p, struct proxy_tls_stats *out);

/* Prometheus text exposition of everything (what the metrics endpoint
 * serves). Caller frees. */
char *proxy_metrics_text(struct proxy *p);

#endif
