/* rewrite.h — the heads the proxy sends: a parsed request head rewritten
 * for the backend, a parsed response head rewritten for the client. What is
 * removed, added and replaced, and why, is in docs/proxy.md ("What we
 * forward"). Pure functions: no I/O, no allocation, fuzzed (fuzz_desync). */
#ifndef TAKO_PROXY_REWRITE_H
#define TAKO_PROXY_REWRITE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "http/http.h"

/* An output buffer that records overflow instead of failing each call. */
struct obuf {
    char *p;
    uint32_t len, cap;
    bool overflow;
};

static inline void ob_put(struct obuf *o, const char *s, size_t n)
{
    if (o->overflow || n > o->cap - o->len) {
        o->overflow = true;
        return;
    }
    memcpy(o->p + o->len, s, n);
    o->len += (uint32_t)n;
}

static inline void ob_str(struct obuf *o, const char *s) { ob_put(o, s, strlen(s)); }

/* A string literal: its length is known at compile time. */
#define OB_LIT(o, lit) ob_put((o), (lit), sizeof(lit) - 1)

/* How the request body is framed upstream: the proxy's decision, never a
 * copy of what the client wrote. */
enum rw_body { RW_BODY_NONE, RW_BODY_LENGTH, RW_BODY_CHUNKED };

struct rw_req {
    const char *peer_ip;     /* the connected client (or trusted proxy) address */
    const char *client_ip;   /* the believed client: peer, or from a trusted X-Forwarded-For */
    bool peer_trusted;       /* the peer is a configured trusted proxy */
    const char *scheme;      /* of the client's transport: "http" / "https" */
    const char *listen_addr; /* Host for a request without one (HTTP/1.0) */
    const char *rid;         /* X-Request-Id to add (the client sent none), or NULL */
    size_t rid_len;
    enum rw_body body;
    uint64_t content_length; /* RW_BODY_LENGTH */
    bool upgrade;            /* forward Upgrade + Connection: upgrade */
};

/* Write the backend's request head for m into o (overflow flagged in o). */
void rw_request_head(struct obuf *o, const struct http_msg *m, const struct rw_req *r);

/* How the response body reaches the client. */
enum rw_rbody {
    RW_RSP_NONE,     /* no body (HEAD, 1xx, 204, 304): a length is metadata only */
    RW_RSP_LENGTH,   /* Content-Length */
    RW_RSP_CHUNKED,  /* passed through chunked, codings as the backend said */
    RW_RSP_UNTIL_CLOSE, /* close-delimited (no length, or de-chunked for HTTP/1.0) */
};

struct rw_rsp {
    enum rw_rbody body;
    int64_t content_length; /* RW_RSP_LENGTH, or the metadata length of RW_RSP_NONE (-1: none) */
    bool close;             /* the client connection closes after this response */
    bool client_http10;     /* the request was HTTP/1.0: say keep-alive when kept */
    const char *set_cookie_name; /* sticky cookie to set, or NULL */
    const char *set_cookie_val;
    uint64_t hsts_max_age;  /* > 0: Strict-Transport-Security (HTTPS listeners) */
};

/* Write the client's response head for m into o. */
void rw_response_head(struct obuf *o, const struct http_msg *m, const struct rw_rsp *r);

/* Whether a header name may be forwarded at all (no underscore: two
 * servers may map "X_Real_IP" and "X-Real-IP" to one variable). */
bool rw_name_forwardable(const char *name, size_t len);

#endif
