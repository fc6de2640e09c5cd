/* xprt.h — the transport under the proxy's client and upstream connections:
 * bytes in and out of one connection (plain TCP now, TLS plugs in here),
 * so that the exchange code never touches a socket itself.
 *
 * A transport is a table of operations (struct xprt_ops) and a per
 * connection state (struct xconn) that the connection embeds. The exchange
 * code calls xc_recv / xc_sendv / xc_shutw / xc_close and asks
 * xc_can_recv / xc_can_send before trying; it feeds the event loop's
 * readiness in with xc_on_event. Everything runs on the connection's
 * worker thread. See docs/internals/transport.md.
 */
#ifndef TAKO_PROXY_XPRT_H
#define TAKO_PROXY_XPRT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/types.h>
#include <sys/uio.h>

struct xconn;

/* Readiness bits of the socket under a connection. */
enum { XC_RD = 1u << 0, XC_WR = 1u << 1 };

struct xprt_ops {
    const char *name;   /* "tcp", "tls": logs and metrics */
    const char *scheme; /* what requests that came over it are: "http" or "https"
                         * (X-Forwarded-Proto, Forwarded proto=) */
    /* Take over c->fd (accepted, or connecting for an upstream); arg is the
     * listener's or pool's transport argument (TLS: its context). Sets
     * c->ctx when the transport keeps per-connection state. 0 or -errno;
     * on an error the caller still calls close. */
    int (*attach)(struct xconn *c, void *arg);
    /* Read at most n > 0 bytes. Returns the count (> 0); 0 at the peer's
     * end of stream (c->eof is set); -EAGAIN when nothing can be read now
     * (c->rwant says which readiness to wait for, the matching bit of
     * c->ready is cleared); -EINTR to try again; another -errno on a
     * broken connection (c->err is set). A transport clears XC_RD only
     * when it knows a later byte or end of stream brings a new event:
     * "fewer bytes than asked" alone is not that (a FIN that came with
     * the data, or bytes buffered inside a TLS library, would be lost). */
    ssize_t (*recv)(struct xconn *c, void *buf, size_t n);
    /* Write from iov[0..iovcnt). Returns the count written (> 0, possibly
     * short, then XC_WR is cleared), -EAGAIN (c->swant says what to wait
     * for), -EINTR, or another -errno (c->err is set). Never raises SIGPIPE. */
    ssize_t (*sendv)(struct xconn *c, const struct iovec *iov, int iovcnt);
    /* No more bytes will be sent (end of stream to the peer, e.g. a half
     * closed tunnel). 0 or -errno. */
    int (*shutw)(struct xconn *c);
    /* Release c->ctx and close c->fd. Called exactly once per attached
     * connection, also when attach failed. */
    void (*close)(struct xconn *c);
    /* Optional: true while the peer may be about to send, though the socket
     * shows no unread byte (a handshake under way or just finished, bytes
     * buffered inside a TLS library): a stopping proxy must not close such
     * a connection as idle, or the request on its way is lost. */
    bool (*busy)(const struct xconn *c);
};

/* One connection's transport state, embedded in the client or upstream
 * connection. The exchange code reads the flags; only the transport and
 * xc_on_event change them. */
struct xconn {
    int fd;
    uint8_t ready; /* XC_RD | XC_WR seen from the event loop, cleared at EAGAIN */
    uint8_t rwant; /* the readiness recv waits for: XC_RD (TLS may need XC_WR) */
    uint8_t swant; /* the readiness sendv waits for: XC_WR (TLS may need XC_RD) */
    bool hup;      /* the peer's end of stream or an error was signalled: read on until EOF */
    bool eof;      /* recv returned end of stream */
    bool err;      /* the connection failed (reset, refused, transport error) */
    const struct xprt_ops *ops;
    void *ctx; /* the transport's per-connection state (TLS: its session) */
};

/* The plain TCP transport (xprt_tcp.c). */
extern const struct xprt_ops xprt_tcp;

/* Set up c on fd with ops (readiness: none known yet). */
static inline int xc_attach(struct xconn *c, int fd, const struct xprt_ops *ops, void *arg)
{
    c->fd = fd;
    c->ready = 0;
    c->rwant = XC_RD;
    c->swant = XC_WR;
    c->hup = c->eof = c->err = false;
    c->ops = ops;
    c->ctx = NULL;
    return ops->attach ? ops->attach(c, arg) : 0;
}

/* Fold epoll events into the readiness. */
static inline void xc_on_event(struct xconn *c, uint32_t ev)
{
    if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        c->ready |= XC_RD;
    if (ev & (EPOLLOUT | EPOLLHUP | EPOLLERR))
        c->ready |= XC_WR;
    if (ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        c->hup = true;
}

static inline bool xc_can_recv(const struct xconn *c) { return (c->ready & c->rwant) != 0; }
static inline bool xc_can_send(const struct xconn *c) { return (c->ready & c->swant) != 0; }
/* Whether the connection may carry another exchange (pooled, kept alive):
 * no end of stream, no error, nothing signalled. */
static inline bool xc_reusable(const struct xconn *c) { return !c->hup && !c->eof && !c->err; }

static inline ssize_t xc_recv(struct xconn *c, void *buf, size_t n) { return c->ops->recv(c, buf, n); }
static inline ssize_t xc_sendv(struct xconn *c, const struct iovec *iov, int iovcnt)
{
    return c->ops->sendv(c, iov, iovcnt);
}
static inline ssize_t xc_send(struct xconn *c, const void *buf, size_t n)
{
    struct iovec v = {.iov_base = (void *)buf, .iov_len = n};
    return c->ops->sendv(c, &v, 1);
}
static inline int xc_shutw(struct xconn *c) { return c->ops->shutw(c); }
static inline void xc_close(struct xconn *c) { c->ops->close(c); }

#endif
