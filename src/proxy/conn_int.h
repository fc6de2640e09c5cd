/* conn_int.h — what the proxy's connection files share: the client and
 * upstream connections (conn.c) and the exchange between them (xchg.c).
 * Everything here runs on one worker thread. */
#ifndef TAKO_PROXY_CONN_INT_H
#define TAKO_PROXY_CONN_INT_H

#include <arpa/inet.h>
#include <time.h>

#include "proxy/proxy_int.h"

#define CBUF_MIN 16384
#define UBUF_SIZE 16384
#define FREE_X_MAX 256

struct upconn {
    struct xconn xc;
    struct ev_io io;
    struct worker *w;
    struct backend *b;
    struct xchg *x; /* owner while in use, NULL when pooled */
    struct dlist blink, wlink;
    uint64_t idle_since;
    bool connecting, reused, closed, pooled;
    struct ev_defer defer;
};

struct client {
    struct xconn xc;
    struct ev_io io;
    struct worker *w;
    struct listener *l;
    struct xchg *x;
    struct ev_timer timer;
    uint64_t deadline;
    struct dlist link;
    uint8_t family;
    uint8_t addr[16];
    char addr_s[INET6_ADDRSTRLEN]; /* addr as text, made once */
    bool closed;
    uint32_t nreq;
    struct dlist send_link[2]; /* in w->sendq[ph] when not linked to itself */
    struct ev_defer defer;
};

enum xstate {
    X_HEAD,     /* reading a request head */
    X_WAIT,     /* no healthy backend yet */
    X_EXCHANGE, /* connected (or connecting) to a backend */
    X_TUNNEL,   /* after 101 Switching Protocols */
    X_ERROR,    /* writing an answer of ours, then closing */
};

enum rbody { RB_NONE, RB_CL, RB_CHUNKED };
enum sbody { RS_NONE, RS_CL, RS_CHUNKED, RS_DECHUNK, RS_EOF };

struct xchg {
    struct xchg *next_free;
    struct client *c;
    struct upconn *u;
    struct proxy_pool *pool;
    struct backend *b; /* picked: counted in its in-flight until released */
    struct backend *tried[PROXY_MAX_TRIES];
    unsigned ntried;
    enum xstate st;
    /* client input: [c_off, c_scan) is body validated but not yet sent
     * upstream, [c_scan, c_len) not yet looked at */
    uint32_t c_off, c_scan, c_len, cap;
    uint32_t head_len;
    /* request */
    enum http_method method;
    uint8_t minor;
    bool client_ka, upgrade, body_discarded, req_read_done, req_done;
    enum rbody rb;
    uint64_t rb_left, rb_cl;
    struct http_chunked rch;
    uint64_t up_sent;
    /* hbuf: the upstream request head [h_off, h_len), then client output
     * (response head, 1xx, our own answers) [o_off, o_len) */
    uint32_t h_off, h_len, o_off, o_len;
    uint16_t svc_line; /* the head ends with an X-Tako-Service line this long (peer backend) */
    bool peer_refused; /* a peer answered its own 503: nothing was forwarded */
    bool acme_ask;     /* an ACME token unknown here: asked of the peers only, never the replicas */
    bool hbuf_is_output;
    /* response */
    uint32_t u_off, u_scan, u_len;
    bool rsp_started, rsp_head_done, rsp_done, up_reusable, close_client, to_tunnel;
    int status;
    enum sbody rs;
    uint64_t rs_left;
    struct http_chunked sch;
    uint64_t bytes_out;
    /* tunnel half-closes */
    bool t_c_eof, t_u_eof;
    /* log and routing */
    uint64_t t_start;   /* µs */
    struct lb_req lbr; /* what the pool's strategy took from the request */
    char rid[40];
    uint8_t rid_len;
    char method_s[16];
    uint8_t method_len;
    uint16_t path_len;
    char path[256];
    char client_ip[INET6_ADDRSTRLEN];
    struct dlist wait_link; /* w->waiting (all backends down) or w->queue (all full) */
    uint64_t wait_deadline;
    bool queued;        /* in w->queue, counted in pool->queued */
    bool stale_retried; /* sent again after a pooled connection was found closed */
    bool fresh_only;    /* the next attempt opens a new upstream connection */
    uint64_t body_start; /* ms: the request head was parsed */
    uint64_t body_got;   /* request body bytes received (framing included) */
    char *cbuf, *ubuf, *hbuf;
    uint32_t hcap;
};

/* The parsed head (≈2.5 KB of header slices): per-thread scratch, used
 * only while a head is being turned into the upstream/client head. */
extern __thread struct http_msg conn__t_msg;

static inline uint64_t conn__now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* ---- conn.c: connections ---- */
/* Exchange buffers from the worker's free list, and back. */
struct xchg *conn__xchg_get(struct worker *w);
void conn__xchg_put(struct worker *w, struct xchg *x);
/* Arm the client's one timer after_ms from now (lazily re-armed). */
void conn__client_deadline(struct client *c, uint64_t after_ms);
void conn__client_close(struct client *c);
/* Writes wait for the end of the batch of events, then go out in two
 * bursts: every response to its client, then every request to its backend.
 * True when the exchange must not write now (c is queued and its exchange
 * runs again then), false when it may write. */
enum send_phase { SEND_TO_CLIENTS, SEND_TO_BACKENDS };
bool conn__send_later(struct client *c, enum send_phase ph);
/* Read what the client sent into cbuf: bytes read, 0 when nothing (would
 * block, or no room), -1 when the client closed or failed. */
int conn__client_fill(struct xchg *x);
/* Read and start requests while the client has some. */
void conn__client_process(struct client *c);
/* A connection no longer used by an exchange: pooled when reusable. */
void conn__up_release(struct upconn *u, bool reusable);
/* An idle pooled connection to b that may still be used, or NULL. */
struct upconn *conn__up_from_pool(struct worker *w, struct backend *b);
void conn__up_on_io(struct ev_loop *loop, struct ev_io *io, uint32_t ev);

/* ---- xchg.c: the exchange ---- */
enum up_fail { UF_CONNECT, UF_CONNECT_TIMEOUT, UF_IO };
/* Move the exchange on as far as it goes without blocking. */
void xchg__run(struct xchg *x);
/* Begin forwarding the request whose head m was just parsed. */
void xchg__begin(struct xchg *x, const struct http_msg *m);
/* Answer status ourselves, then close the client connection. */
void xchg__error(struct xchg *x, int status, const char *msg);
/* Abandon the exchange: the client is gone or the stream is broken. */
void xchg__abort(struct xchg *x, int status);
void xchg__release_backend(struct xchg *x, bool up_reusable);
/* Out of the all-down wait or the queue. */
void xchg__unwait(struct xchg *x);
/* Pick a backend and connect, or wait / queue for one. */
void xchg__start_upstream(struct xchg *x);
/* Arm the exchange's inactivity timeout, never past the body deadline. */
void xchg__deadline(struct xchg *x, uint64_t after_ms);
bool xchg__body_pending(const struct xchg *x);
uint64_t xchg__body_deadline(const struct xchg *x);
/* The one retry-or-fail decision; 1 when x goes on, -1 when it ended. */
int xchg__upstream_failed(struct xchg *x, enum up_fail why, int err);
/* Let queued exchanges of the worker try again (deferred). */
void xchg__queue_kick(struct worker *w);

#endif
