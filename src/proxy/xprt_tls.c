/* xprt_tls.c — the TLS transport under client connections (src/tls does
 * the OpenSSL work): first bytes sniffed, handshake inside the first
 * recv, then SSL_read / SSL_write. Plain HTTP on the port gets one 400 line;
 * garbage a close; no SSL object exists before the whole ClientHello has
 * arrived, so stalled or half-open connections cost only this small state. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/util.h"
#include "proxy/proxy_int.h"
#include "proxy/xprt.h"
#include "tls/tls.h"

enum { TS_SNIFF, TS_HANDSHAKE, TS_OPEN };

struct tls_xc {
    struct proxy *p; /* counters */
    struct tls_server *srv;
    SSL *ssl;
    uint8_t st;
    bool drained;      /* OpenSSL's last socket read was short (tls_conn_new) */
    uint64_t since_ms; /* accepted, then: the handshake finished */
};

/* Per-thread staging so a response head and body go out as one TLS record
 * (one SSL_write), as one sendmsg does on plain TCP. */
static __thread char t_out[16384];

static int tls_attach(struct xconn *c, void *arg)
{
    struct tls_xc *t = xcalloc(1, sizeof(*t));
    t->p = arg;
    t->srv = t->p->tls; /* made before the listener (proxy_listen_tls) */
    t->st = TS_SNIFF;
    t->since_ms = ev_time_ms();
    c->ctx = t;
    return 0;
}

/* Wait for readiness `bit` for the operation whose want is *want. */
static ssize_t again(struct xconn *c, uint8_t *want, bool want_write)
{
    uint8_t bit = want_write ? XC_WR : XC_RD;
    *want = bit;
    c->ready &= (uint8_t)~bit;
    return -EAGAIN;
}

/* Sniff and handshake; 0 when open, else what recv returns. */
static ssize_t tls_open(struct xconn *c, struct tls_xc *t)
{
    if (t->st == TS_SNIFF) {
        unsigned char peek[2048];
        ssize_t n = recv(c->fd, peek, sizeof(peek), MSG_PEEK);
        if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return again(c, &c->rwant, false);
        if (n == -1 && errno == EINTR)
            return -EINTR;
        if (n <= 0) {
            c->eof = n == 0;
            c->err = n < 0;
            return n == 0 ? 0 : -errno;
        }
        enum tls_sniff k = tls_sniff(peek, (size_t)n);
        if (k != TLS_SNIFF_TLS) {
            atomic_fetch_add_explicit(k == TLS_SNIFF_HTTP ? &t->p->tls_plain : &t->p->tls_garbage,
                                      1, memory_order_relaxed);
            if (k == TLS_SNIFF_HTTP) {
                /* consume what came (unread bytes would turn the close into
                 * a reset that may destroy the answer), answer, half-close */
                char sink[4096];
                ssize_t r = recv(c->fd, sink, sizeof(sink), MSG_DONTWAIT);
                ssize_t w = send(c->fd, tls_plain_http_reply, strlen(tls_plain_http_reply),
                                 MSG_NOSIGNAL | MSG_DONTWAIT);
                (void)r;
                (void)w;
                shutdown(c->fd, SHUT_WR);
            }
            c->err = true;
            return -EPROTO;
        }
        /* the whole first record (the ClientHello) before any TLS state;
         * a later byte brings a new edge */
        size_t need = n >= 5 ? 5 + ((size_t)peek[3] << 8 | peek[4]) : 5;
        if ((size_t)n < need && (size_t)n < sizeof(peek))
            return again(c, &c->rwant, false);
        t->ssl = tls_conn_new(t->srv, c->fd, &t->drained);
        if (!t->ssl) { /* no certificate installed yet */
            atomic_fetch_add_explicit(&t->p->tls_nocert, 1, memory_order_relaxed);
            c->err = true;
            return -EPROTO;
        }
        t->st = TS_HANDSHAKE;
    }
    if (t->st == TS_HANDSHAKE) {
        bool ww = false;
        int r = tls_conn_handshake(t->ssl, &ww);
        if (r == -EAGAIN)
            return again(c, &c->rwant, ww);
        if (r < 0) {
            atomic_fetch_add_explicit(&t->p->tls_failures, 1, memory_order_relaxed);
            c->err = true;
            return -EPROTO;
        }
        atomic_fetch_add_explicit(&t->p->tls_handshakes, 1, memory_order_relaxed);
        t->since_ms = ev_time_ms();
        if (SSL_session_reused(t->ssl))
            atomic_fetch_add_explicit(&t->p->tls_resumed, 1, memory_order_relaxed);
        t->st = TS_OPEN;
        c->rwant = XC_RD;
        c->swant = XC_WR;
    }
    return 0;
}

static ssize_t tls_recv(struct xconn *c, void *buf, size_t n)
{
    struct tls_xc *t = c->ctx;
    if (t->st != TS_OPEN) {
        ssize_t r = tls_open(c, t);
        if (r != 0 || t->st != TS_OPEN)
            return r;
    }
    bool ww = false;
    ssize_t r = tls_conn_read(t->ssl, buf, n, &ww);
    if (r > 0) {
        c->rwant = XC_RD;
        /* As on plain TCP (xprt_tcp.c): when OpenSSL's last read of the
         * socket was short, the kernel buffer was empty, and a later byte
         * or FIN brings a new edge; with nothing left inside OpenSSL
         * either, wait for that edge instead of a read that says EAGAIN.
         * A record (or its start) waiting inside OpenSSL keeps XC_RD. */
        if (t->drained && !c->hup && !SSL_has_pending(t->ssl))
            c->ready &= (uint8_t)~XC_RD;
        return r;
    }
    if (r == 0) {
        c->eof = true;
        return 0;
    }
    if (r == -EAGAIN)
        return again(c, &c->rwant, ww);
    c->err = true;
    return r;
}

static ssize_t tls_sendv(struct xconn *c, const struct iovec *iov, int iovcnt)
{
    struct tls_xc *t = c->ctx;
    if (t->st != TS_OPEN)
        return again(c, &c->swant, false); /* the handshake is driven by recv */
    const void *p = iov[0].iov_base;
    size_t len = iov[0].iov_len;
    if (iovcnt > 1) {
        size_t total = 0;
        for (int i = 0; i < iovcnt; i++)
            total += iov[i].iov_len;
        if (total <= sizeof(t_out)) {
            size_t off = 0;
            for (int i = 0; i < iovcnt; i++) {
                memcpy(t_out + off, iov[i].iov_base, iov[i].iov_len);
                off += iov[i].iov_len;
            }
            p = t_out;
            len = total;
        }
    }
    bool ww = false;
    ssize_t r = tls_conn_write(t->ssl, p, len, &ww);
    if (r > 0) {
        c->swant = XC_WR;
        if ((size_t)r < len)
            c->ready &= (uint8_t)~XC_WR;
        return r;
    }
    if (r == -EAGAIN)
        return again(c, &c->swant, !ww ? false : true);
    c->err = true;
    return r;
}

static int tls_shutw(struct xconn *c)
{
    struct tls_xc *t = c->ctx;
    if (t && t->ssl)
        tls_conn_shutdown(t->ssl);
    return shutdown(c->fd, SHUT_WR) == 0 ? 0 : -errno;
}

static void tls_close(struct xconn *c)
{
    struct tls_xc *t = c->ctx;
    if (t) {
        /* given up during the handshake (timeout, reset, close): a failure */
        if (t->st == TS_HANDSHAKE && !c->err)
            atomic_fetch_add_explicit(&t->p->tls_failures, 1, memory_order_relaxed);
        if (t->ssl) {
            if (!c->err)
                tls_conn_shutdown(t->ssl);
            tls_conn_free(t->ssl);
        }
        free(t);
        c->ctx = NULL;
    }
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}

/* A client sends its ClientHello right after connecting, and its request
 * right after its handshake, but maybe as separate packets: a connection
 * accepted or done with its handshake within this time, with a handshake
 * under way, or with bytes waiting inside OpenSSL is not idle. */
#define TLS_SETTLE_MS 250

static bool tls_busy(const struct xconn *c)
{
    const struct tls_xc *t = c->ctx;
    if (!t)
        return false;
    if (t->st == TS_HANDSHAKE)
        return true;
    if (t->st == TS_OPEN && SSL_has_pending(t->ssl))
        return true;
    return ev_time_ms() - t->since_ms < TLS_SETTLE_MS;
}

const struct xprt_ops xprt_tls = {
    .name = "tls",
    .scheme = "https",
    .attach = tls_attach,
    .recv = tls_recv,
    .sendv = tls_sendv,
    .shutw = tls_shutw,
    .close = tls_close,
    .busy = tls_busy,
};
