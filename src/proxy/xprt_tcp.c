/* xprt_tcp.c — the plain TCP transport: recv/sendmsg on a non-blocking
 * socket registered edge-triggered. */
#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proxy/xprt.h"

static ssize_t tcp_recv(struct xconn *c, void *buf, size_t n)
{
    ssize_t r = recv(c->fd, buf, n, 0);
    if (r > 0) {
        /* A short read drained the kernel buffer, and with edge-triggered
         * epoll a later byte or FIN brings a new event: no EAGAIN round
         * trip. A FIN already there when the event was reported came as
         * EPOLLRDHUP (c->hup): then read on until recv says 0. */
        if ((size_t)r < n && !c->hup)
            c->ready &= (uint8_t)~XC_RD;
        return r;
    }
    if (r == 0) {
        c->eof = true;
        return 0;
    }
    int e = errno;
    if (e == EAGAIN || e == EWOULDBLOCK) {
        c->ready &= (uint8_t)~XC_RD;
        return -EAGAIN;
    }
    if (e == EINTR)
        return -EINTR;
    c->err = true;
    return -e;
}

static ssize_t tcp_sendv(struct xconn *c, const struct iovec *iov, int iovcnt)
{
    struct msghdr mh = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt};
    ssize_t w = sendmsg(c->fd, &mh, MSG_NOSIGNAL);
    if (w >= 0) {
        size_t want = 0;
        for (int i = 0; i < iovcnt; i++)
            want += iov[i].iov_len;
        if ((size_t)w < want)
            c->ready &= (uint8_t)~XC_WR; /* buffer full: EPOLLOUT will come */
        return w;
    }
    int e = errno;
    if (e == EAGAIN || e == EWOULDBLOCK) {
        c->ready &= (uint8_t)~XC_WR;
        return -EAGAIN;
    }
    if (e == EINTR)
        return -EINTR;
    c->err = true;
    return -e;
}

static int tcp_shutw(struct xconn *c) { return shutdown(c->fd, SHUT_WR) == 0 ? 0 : -errno; }

static void tcp_close(struct xconn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}

const struct xprt_ops xprt_tcp = {
    .name = "tcp",
    .scheme = "http",
    .attach = NULL,
    .recv = tcp_recv,
    .sendv = tcp_sendv,
    .shutw = tcp_shutw,
    .close = tcp_close,
};
