/* metrics.c — Prometheus text exposition of pools, backends and listeners,
 * and the small HTTP endpoint on the control thread that serves it. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"
#include "proxy/proxy_int.h"

void metrics__observe(struct bstat *st, int status, uint64_t dur_us)
{
    (void)status;
    double ms = (double)dur_us / 1000.0;
    int i = 0;
    while (i < PROXY_NHIST - 1 && ms > proxy_hist_bounds_ms[i])
        i++;
    STAT_ADD(&st->hist[i], 1);
    STAT_ADD(&st->lat_sum_us, dur_us);
}

struct sbuf {
    char *p;
    size_t len, cap;
};

static void sb_printf(struct sbuf *b, const char *fmt, ...) TAKO_PRINTF(2, 3);
static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        b->cap = b->cap * 2 + (size_t)(n > 0 ? n : 256);
        b->p = xrealloc(b->p, b->cap);
    }
}

static void help(struct sbuf *b, const char *name, const char *type, const char *text)
{
    sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, text, name, type);
}

struct bsum {
    uint64_t requests, failures, retries, status[6], bytes_in, bytes_out, hist[PROXY_NHIST],
        lat_sum_us;
};

static void sum(struct proxy *p, struct backend *b, struct bsum *s)
{
    memset(s, 0, sizeof(*s));
    for (unsigned w = 0; w < p->nworkers; w++) {
        struct bstat *st = &b->st[w];
        s->requests += STAT_GET(&st->requests);
        s->failures += STAT_GET(&st->failures);
        s->retries += STAT_GET(&st->retries);
        for (int i = 0; i < 6; i++)
            s->status[i] += STAT_GET(&st->status[i]);
        s->bytes_in += STAT_GET(&st->bytes_in);
        s->bytes_out += STAT_GET(&st->bytes_out);
        for (int i = 0; i < PROXY_NHIST; i++)
            s->hist[i] += STAT_GET(&st->hist[i]);
        s->lat_sum_us += STAT_GET(&st->lat_sum_us);
    }
}

char *proxy_metrics_text(struct proxy *p)
{
    if (p->rops)
        return p->rops->metrics(p);
    struct sbuf b = {.p = xmalloc(8192), .cap = 8192};
    static const char *metrics[][3] = {
        {"tako_proxy_backend_up", "gauge", "1 when the backend takes traffic (healthy), else 0."},
        {"tako_proxy_backend_draining", "gauge", "1 while a removed backend finishes its requests."},
        {"tako_proxy_backend_inflight", "gauge", "Requests in flight to the backend, all threads."},
        {"tako_proxy_backend_requests_total", "counter", "Requests answered, by status class."},
        {"tako_proxy_backend_failures_total", "counter", "Connect, send or receive failures."},
        {"tako_proxy_backend_retries_total", "counter", "Requests retried on another backend after failing here."},
        {"tako_proxy_backend_health_transitions_total", "counter", "Changes between up and down."},
        {"tako_proxy_backend_health_consecutive_failures", "gauge", "Active checks failed in a row."},
        {"tako_proxy_backend_bytes_total", "counter", "Bytes from the backend (direction=in) and to clients (direction=out)."},
        {"tako_proxy_backend_request_duration_seconds", "histogram", "Time from request head to the end of the response."},
    };
    pthread_mutex_lock(&p->lock);
    for (size_t mi = 0; mi < ARRAY_LEN(metrics); mi++) {
        help(&b, metrics[mi][0], metrics[mi][1], metrics[mi][2]);
        for (struct proxy_pool *pool = p->pools; pool; pool = pool->next) {
            pthread_mutex_lock(&pool->lock);
            for (struct backend *be = pool->all; be; be = be->next) {
                if (atomic_load(&be->drain_expired))
                    continue;
                char lbl[256];
                snprintf(lbl, sizeof(lbl), "pool=\"%s\",backend=\"%s\",addr=\"%s\"", pool->name,
                         be->id, be->addr_s);
                struct bsum s;
                sum(p, be, &s);
                const char *n = metrics[mi][0];
                switch (mi) {
                case 0:
                    sb_printf(&b, "%s{%s} %d\n", n, lbl, atomic_load(&be->healthy) ? 1 : 0);
                    break;
                case 1:
                    sb_printf(&b, "%s{%s} %d\n", n, lbl, atomic_load(&be->removed) ? 1 : 0);
                    break;
                case 2:
                    sb_printf(&b, "%s{%s} %u\n", n, lbl, atomic_load(&be->inflight));
                    break;
                case 3:
                    for (int c = 1; c <= 5; c++)
                        sb_printf(&b, "%s{%s,code=\"%dxx\"} %llu\n", n, lbl, c,
                                  (unsigned long long)s.status[c]);
                    break;
                case 4:
                    sb_printf(&b, "%s{%s} %llu\n", n, lbl, (unsigned long long)s.failures);
                    break;
                case 5:
                    sb_printf(&b, "%s{%s} %llu\n", n, lbl, (unsigned long long)s.retries);
                    break;
                case 6:
                    sb_printf(&b, "%s{%s} %llu\n", n, lbl,
                              (unsigned long long)atomic_load(&be->health_transitions));
                    break;
                case 7:
                    sb_printf(&b, "%s{%s} %u\n", n, lbl, atomic_load(&be->consecutive_failures));
                    break;
                case 8:
                    sb_printf(&b, "%s{%s,direction=\"in\"} %llu\n", n, lbl,
                              (unsigned long long)s.bytes_in);
                    sb_printf(&b, "%s{%s,direction=\"out\"} %llu\n", n, lbl,
                              (unsigned long long)s.bytes_out);
                    break;
                case 9: {
                    uint64_t acc = 0;
                    for (int i = 0; i < PROXY_NHIST; i++) {
                        acc += s.hist[i];
                        if (i < PROXY_NHIST - 1)
                            sb_printf(&b, "%s_bucket{%s,le=\"%g\"} %llu\n", n, lbl,
                                      proxy_hist_bounds_ms[i] / 1000.0, (unsigned long long)acc);
                        else
                            sb_printf(&b, "%s_bucket{%s,le=\"+Inf\"} %llu\n", n, lbl,
                                      (unsigned long long)acc);
                    }
                    sb_printf(&b, "%s_sum{%s} %.6f\n", n, lbl, (double)s.lat_sum_us / 1e6);
                    sb_printf(&b, "%s_count{%s} %llu\n", n, lbl, (unsigned long long)acc);
                    break;
                }
                }
            }
            pthread_mutex_unlock(&pool->lock);
        }
    }
    help(&b, "tako_proxy_listener_open_connections", "gauge", "Client connections open on the listener.");
    for (struct listener *l = p->listeners; l; l = l->next) {
        char a[64];
        sb_printf(&b, "tako_proxy_listener_open_connections{listener=\"%s\"} %u\n",
                  net_addr_str(&l->addr, a, sizeof(a)), atomic_load(&l->open_conns));
    }
    help(&b, "tako_proxy_listener_accepted_total", "counter", "Client connections accepted.");
    for (struct listener *l = p->listeners; l; l = l->next) {
        char a[64];
        sb_printf(&b, "tako_proxy_listener_accepted_total{listener=\"%s\"} %llu\n",
                  net_addr_str(&l->addr, a, sizeof(a)), (unsigned long long)atomic_load(&l->accepted));
    }
    /* Peer listeners only (several servers per environment): absent otherwise. */
    bool any_peer = false;
    for (struct listener *l = p->listeners; l; l = l->next)
        any_peer |= l->peer;
    if (any_peer)
        help(&b, "tako_proxy_peer_refused_total", "counter",
             "Connections to a peer listener from an address that is none of the environment's "
             "servers (closed at once).");
    for (struct listener *l = p->listeners; l && any_peer; l = l->next) {
        char a[64];
        if (l->peer)
            sb_printf(&b, "tako_proxy_peer_refused_total{listener=\"%s\"} %llu\n",
                      net_addr_str(&l->addr, a, sizeof(a)),
                      (unsigned long long)atomic_load(&l->refused));
    }
    help(&b, "tako_proxy_open_connections", "gauge", "Client connections open, all listeners.");
    sb_printf(&b, "tako_proxy_open_connections %u\n", atomic_load(&p->open_conns));
    pthread_mutex_unlock(&p->lock);
    struct proxy_tls_stats ts;
    if (__atomic_load_n(&p->tls, __ATOMIC_ACQUIRE) && proxy_tls_stats(p, &ts) == 0) {
        help(&b, "tako_proxy_tls_handshakes_total", "counter",
             "TLS connections by outcome: ok (of which resumed), failed, no_certificate, "
             "plain_http (answered 400), not_tls (closed).");
        sb_printf(&b, "tako_proxy_tls_handshakes_total{result=\"ok\"} %llu\n",
                  (unsigned long long)ts.handshakes);
        sb_printf(&b, "tako_proxy_tls_handshakes_total{result=\"failed\"} %llu\n",
                  (unsigned long long)ts.handshake_failures);
        sb_printf(&b, "tako_proxy_tls_handshakes_total{result=\"no_certificate\"} %llu\n",
                  (unsigned long long)ts.no_certificate);
        sb_printf(&b, "tako_proxy_tls_handshakes_total{result=\"plain_http\"} %llu\n",
                  (unsigned long long)ts.plain_http);
        sb_printf(&b, "tako_proxy_tls_handshakes_total{result=\"not_tls\"} %llu\n",
                  (unsigned long long)ts.not_tls);
        help(&b, "tako_proxy_tls_resumed_total", "counter",
             "Completed TLS handshakes that resumed a session (ticket).");
        sb_printf(&b, "tako_proxy_tls_resumed_total %llu\n", (unsigned long long)ts.resumed);
        help(&b, "tako_proxy_tls_certificates", "gauge", "Certificates installed.");
        sb_printf(&b, "tako_proxy_tls_certificates %u\n", ts.certificates);
    }
    return b.p;
}

uint64_t proxy_instance_id(const struct proxy *p)
{
    if (p->rops)
        return p->rops->instance_id ? p->rops->instance_id((struct proxy *)p) : 0;
    return p->instance_id;
}

int proxy_listener_stats(struct proxy *p, struct proxy_listener_stats **out, size_t *n)
{
    if (p->rops) {
        if (p->rops->listener_stats)
            return p->rops->listener_stats(p, out, n);
        *out = xcalloc(1, sizeof(**out));
        *n = 0;
        return 0;
    }
    pthread_mutex_lock(&p->lock);
    size_t cap = 0;
    for (struct listener *l = p->listeners; l; l = l->next)
        cap++;
    struct proxy_listener_stats *v = xcalloc(cap ? cap : 1, sizeof(*v));
    size_t k = 0;
    for (struct listener *l = p->listeners; l; l = l->next, k++) {
        net_addr_str(&l->addr, v[k].addr, sizeof(v[k].addr));
        v[k].open_conns = atomic_load(&l->open_conns);
        v[k].accepted = (uint64_t)atomic_load(&l->accepted);
        v[k].refused = (uint64_t)atomic_load(&l->refused);
        v[k].instance = p->instance_id;
    }
    pthread_mutex_unlock(&p->lock);
    *out = v;
    *n = k;
    return 0;
}

/* ---- the endpoint ---- */

struct mconn {
    struct ev_io io;
    struct proxy *p;
    char buf[4096];
    size_t len;
    struct dlist link;
};

static void mconn_close(struct proxy *p, struct mconn *m)
{
    ev_io_stop(&p->ctl_loop, &m->io);
    close(m->io.fd);
    dlist_del(&m->link);
    free(m);
}

static void mconn_on_io(struct ev_loop *loop, struct ev_io *io, uint32_t ev)
{
    (void)loop;
    (void)ev;
    struct mconn *m = io->data;
    struct proxy *p = m->p;
    ssize_t n = recv(io->fd, m->buf + m->len, sizeof(m->buf) - 1 - m->len, 0);
    if (n == -1 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        mconn_close(p, m);
        return;
    }
    m->len += (size_t)n;
    m->buf[m->len] = '\0';
    if (!strstr(m->buf, "\r\n\r\n")) {
        if (m->len >= sizeof(m->buf) - 1)
            mconn_close(p, m);
        return;
    }
    bool ok = strncmp(m->buf, "GET /metrics ", 13) == 0 || strncmp(m->buf, "GET / ", 6) == 0;
    char *body = ok ? proxy_metrics_text(p) : xstrdup("not found\n");
    size_t bl = strlen(body);
    char head[256];
    int hl = snprintf(head, sizeof(head),
                      "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                      "Connection: close\r\n\r\n",
                      ok ? "200 OK" : "404 Not Found",
                      ok ? "text/plain; version=0.0.4; charset=utf-8" : "text/plain", bl);
    /* A scrape is small and local: written at once, bounded to 2 s. */
    const char *parts[2] = {head, body};
    size_t lens[2] = {(size_t)hl, bl};
    for (int i = 0; i < 2; i++) {
        size_t off = 0;
        uint64_t deadline = ev_time_ms() + 2000;
        while (off < lens[i] && ev_time_ms() < deadline) {
            ssize_t w = send(io->fd, parts[i] + off, lens[i] - off, MSG_NOSIGNAL);
            if (w > 0)
                off += (size_t)w;
            else if (w == -1 && (errno == EAGAIN || errno == EINTR))
                usleep(1000);
            else
                break;
        }
    }
    free(body);
    mconn_close(p, m);
}

static void metrics_on_accept(struct ev_loop *loop, struct ev_io *io, uint32_t ev)
{
    (void)ev;
    struct proxy *p = io->data;
    for (;;) {
        int fd = accept4(io->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd == -1)
            return;
        struct mconn *m = xcalloc(1, sizeof(*m));
        m->p = p;
        ev_io_init(&m->io, fd, mconn_on_io, m);
        dlist_add(&p->metrics_conns, &m->link);
        ev_io_start(loop, &m->io, EPOLLIN);
    }
}

int proxy__metrics_listen(struct proxy *p)
{
    dlist_init(&p->metrics_conns);
    int fd = net_listen_tcp(&p->metrics_addr, 64, false);
    if (fd < 0) {
        char a[64];
        log_error("proxy: metrics on %s: %s", net_addr_str(&p->metrics_addr, a, sizeof(a)),
                  strerror(-fd));
        return fd;
    }
    p->metrics_fd = fd;
    ev_io_init(&p->metrics_io, fd, metrics_on_accept, p);
    ev_io_start(&p->ctl_loop, &p->metrics_io, EPOLLIN);
    return 0;
}

void proxy__metrics_close(struct proxy *p)
{
    if (p->metrics_fd < 0)
        return;
    while (!dlist_empty(&p->metrics_conns))
        mconn_close(p, DLIST_ENTRY(p->metrics_conns.next, struct mconn, link));
    ev_io_stop(&p->ctl_loop, &p->metrics_io);
    close(p->metrics_fd);
    p->metrics_fd = -1;
}
