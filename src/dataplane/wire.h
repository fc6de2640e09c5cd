/* wire.h — framing of the data-plane control protocol: one JSON object per
 * line on a unix stream socket, descriptors attached with SCM_RIGHTS.
 * See docs/internals/dataplane.md for the messages. */
#ifndef TAKO_DATAPLANE_WIRE_H
#define TAKO_DATAPLANE_WIRE_H

#include <jansson.h>
#include <stddef.h>

#include "proxy/proxy.h"

/* Protocol versions this build speaks. A peer announces the highest it
 * speaks and the lowest it accepts; both use the highest common one. */
#define DP_PROTO_MIN 1
/* 2: HTTPS (TLS listeners, certificates, challenges, redirect, HSTS);
 * 3: several servers per environment (peer listeners, peer backends) */
#define DP_PROTO_MAX 3

#define DP_MAX_FDS 64          /* descriptors in one message */
#define DP_MAX_LINE (8u << 20) /* a longer line is a protocol error */
#define DP_MAX_BACKENDS 65536  /* in one pool_set */

/* A connection's input: bytes read and descriptors received, not yet
 * handed out as a message. */
struct dpw_in {
    char *buf;
    size_t len, cap;
    int fds[DP_MAX_FDS];
    size_t nfds;
};

/* Send msg (not consumed) and nfds descriptors (duplicated by the kernel
 * into the peer; still ours). Blocking, bounded by timeout_ms. 0 or -errno. */
int dpw_send(int fd, const json_t *msg, const int *fds, size_t nfds, int timeout_ms);
/* Read what is available (non-blocking fd) into in. 0 when some was read
 * or nothing was ready, -EPIPE at end of stream, else -errno. */
int dpw_fill(int fd, struct dpw_in *in);
/* Take one complete message out of in: 1 and *msg (caller decrefs; its
 * descriptors, if any, moved to fds/nfds: caller closes), 0 when no
 * complete line yet, -EPROTO for a line that is not a JSON object. */
int dpw_take(struct dpw_in *in, json_t **msg, int *fds, size_t *nfds);
/* Wait for one message on a blocking exchange: dpw_fill + dpw_take until a
 * message or timeout_ms. 0, -ETIMEDOUT, -EPIPE, -EPROTO. */
int dpw_recv(int fd, struct dpw_in *in, json_t **msg, int *fds, size_t *nfds, int timeout_ms);
void dpw_in_free(struct dpw_in *in);

/* Pool options and backend specs as JSON: unknown keys are ignored and
 * missing ones are 0 (the proxy's default), so both sides may add keys. */
json_t *dpw_pool_opts_json(const struct proxy_pool_opts *o);
/* Fills o; strings point into j (keep j alive while o is used). */
void dpw_pool_opts_parse(const json_t *j, struct proxy_pool_opts *o);

#endif
