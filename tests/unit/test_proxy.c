/* test_proxy.c — the module API takod uses: backend sets swapped while
 * running, identity kept by id, draining in the stats, Host routing with a
 * 404 for unknown hosts, listeners on port 0, metrics text, round robin by
 * weight, and X-Tako-Service never forwarded from a client's head. */
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/ev.h"
#include "core/net.h"
#include "core/util.h"
#include "proxy/proxy.h"
#include "proxy/rewrite.h"
#include "unit.h"

/* A blocking backend that answers every request with its name. */
struct tb {
    int lfd;
    uint16_t port;
    char name[16];
    pthread_t th;
};

struct tb_conn {
    struct tb *t;
    int fd;
};

/* Answer each request of one connection with the backend's name. */
static void *tb_serve(void *arg)
{
    struct tb_conn *c = arg;
    char buf[8192];
    size_t len = 0;
    while (len < sizeof(buf) - 1) {
        ssize_t n = recv(c->fd, buf + len, sizeof(buf) - 1 - len, 0);
        if (n <= 0)
            break;
        len += (size_t)n;
        buf[len] = '\0';
        char *e;
        while ((e = strstr(buf, "\r\n\r\n"))) {
            char out[128];
            bool bad = strncmp(buf, "GET /bad ", 9) == 0; /* a failing health path */
            int o = snprintf(out, sizeof(out), "HTTP/1.1 %s\r\nContent-Length: %zu\r\n\r\n%s",
                             bad ? "404 Not Found" : "200 OK", strlen(c->t->name), c->t->name);
            if (send(c->fd, out, (size_t)o, MSG_NOSIGNAL) < 0)
                goto out;
            e += 4;
            len = (size_t)(buf + len - e);
            memmove(buf, e, len);
            buf[len] = '\0';
        }
    }
out:
    close(c->fd);
    free(c);
    return NULL;
}

static void *tb_main(void *arg)
{
    struct tb *t = arg;
    for (;;) {
        int fd = accept(t->lfd, NULL, NULL);
        if (fd < 0)
            return NULL;
        struct tb_conn *c = xcalloc(1, sizeof(*c));
        c->t = t;
        c->fd = fd;
        pthread_t th;
        pthread_create(&th, NULL, tb_serve, c);
        pthread_detach(th);
    }
}

static struct tb *tb_start(const char *name)
{
    struct tb *t = xcalloc(1, sizeof(*t));
    snprintf(t->name, sizeof(t->name), "%s", name);
    struct net_addr a;
    net_parse_addr("127.0.0.1:0", NULL, &a);
    t->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bind(t->lfd, (struct sockaddr *)&a.ss, a.len);
    listen(t->lfd, 64);
    socklen_t l = a.len;
    getsockname(t->lfd, (struct sockaddr *)&a.ss, &l);
    t->port = net_addr_port(&a);
    pthread_create(&t->th, NULL, tb_main, t);
    return t;
}

static void tb_stop(struct tb *t)
{
    shutdown(t->lfd, SHUT_RDWR);
    close(t->lfd);
    pthread_join(t->th, NULL);
    free(t);
}

/* One request on a fresh connection; returns the status, body into out. */
static int get(uint16_t port, const char *host, char *out, size_t cap)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = htons(port)};
    in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&in, sizeof(in)) < 0) {
        close(fd);
        return -1;
    }
    char req[256];
    int n = snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", host);
    send(fd, req, (size_t)n, MSG_NOSIGNAL);
    char buf[4096];
    size_t len = 0;
    ssize_t r;
    while ((r = recv(fd, buf + len, sizeof(buf) - 1 - len, 0)) > 0)
        len += (size_t)r;
    buf[len] = '\0';
    close(fd);
    char *b = strstr(buf, "\r\n\r\n");
    snprintf(out, cap, "%s", b ? b + 4 : "");
    return len > 12 ? atoi(buf + 9) : -1;
}

static struct proxy_backend_spec spec(const char *id, uint16_t port)
{
    struct proxy_backend_spec s = {.id = id};
    char a[32];
    snprintf(a, sizeof(a), "127.0.0.1:%u", port);
    net_parse_addr(a, NULL, &s.addr);
    return s;
}

static const struct proxy_backend_stats *find(const struct proxy_backend_stats *v, size_t n,
                                              const char *id)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i].id, id) == 0)
            return &v[i];
    return NULL;
}

TEST(pool_sets_stats_and_draining)
{
    struct proxy_opts po = {.threads = 2};
    struct proxy *p = proxy_new(&po);
    struct proxy_pool_opts o = {.name = "web", .health_interval_ms = 50, .rise = 1};
    struct proxy_pool *pool = proxy_pool_new(p, &o);
    struct tb *a = tb_start("a"), *b = tb_start("b");
    struct proxy_backend_spec s1[2] = {spec("web-1", a->port), spec("web-2", b->port)};
    CHECK_INT(proxy_pool_set_backends(pool, s1, 2), 0);
    struct net_addr la;
    net_parse_addr("127.0.0.1:0", NULL, &la);
    CHECK_INT(proxy_listen(p, &la, pool), 0);
    CHECK_INT(proxy_listener_addr(p, 0, &la), 0);
    CHECK(net_addr_port(&la) != 0);
    CHECK_INT(proxy_start(p), 0);
    /* new backends (no initial_up) get traffic once a check passes */
    struct proxy_backend_stats *st;
    size_t n;
    uint64_t deadline = ev_time_ms() + 5000;
    for (;;) {
        CHECK_INT(proxy_pool_stats(pool, &st, &n), 0);
        bool up = n == 2 && st[0].healthy && st[1].healthy;
        proxy_pool_stats_free(st);
        if (up)
            break;
        CHECK(ev_time_ms() < deadline);
        usleep(20000);
    }
    char body[64];
    CHECK_INT(get(net_addr_port(&la), "x", body, sizeof(body)), 200);
    CHECK_STR(body, "a");
    CHECK_INT(get(net_addr_port(&la), "x", body, sizeof(body)), 200);
    CHECK_STR(body, "b");
    /* swap: web-2 kept (counters too), web-1 removed */
    struct proxy_backend_spec s2[1] = {spec("web-2", b->port)};
    CHECK_INT(proxy_pool_set_backends(pool, s2, 1), 0);
    CHECK_INT(proxy_pool_stats(pool, &st, &n), 0);
    CHECK(n >= 1);
    CHECK_STR(st[0].id, "web-2");
    CHECK(st[0].healthy && !st[0].draining);
    CHECK_INT(st[0].requests, 1);
    CHECK_INT(st[0].status_2xx, 1);
    const struct proxy_backend_stats *old = find(st, n, "web-1");
    if (old) /* until reclaimed, it is reported draining, idle */
        CHECK(old->draining && old->inflight == 0);
    proxy_pool_stats_free(st);
    for (int i = 0; i < 4; i++) {
        CHECK_INT(get(net_addr_port(&la), "x", body, sizeof(body)), 200);
        CHECK_STR(body, "b");
    }
    /* the drained backend leaves the stats */
    deadline = ev_time_ms() + 5000;
    for (;;) {
        CHECK_INT(proxy_pool_stats(pool, &st, &n), 0);
        bool gone = !find(st, n, "web-1");
        proxy_pool_stats_free(st);
        if (gone)
            break;
        CHECK(ev_time_ms() < deadline);
        usleep(20000);
    }
    /* ids: unique, not too long */
    struct proxy_backend_spec dup[2] = {spec("x", a->port), spec("x", b->port)};
    CHECK_INT(proxy_pool_set_backends(pool, dup, 2), -EINVAL);
    char *m = proxy_metrics_text(p);
    CHECK_CONTAINS(m, "tako_proxy_backend_up{pool=\"web\",backend=\"web-2\"");
    free(m);
    proxy_stop(p);
    proxy_free(p);
    tb_stop(a);
    tb_stop(b);
}

TEST(host_routing)
{
    struct proxy_opts po = {.threads = 1};
    struct proxy *p = proxy_new(&po);
    struct proxy_pool_opts o1 = {.name = "one", .initial_up = true};
    struct proxy_pool_opts o2 = {.name = "two", .initial_up = true};
    struct proxy_pool *p1 = proxy_pool_new(p, &o1), *p2 = proxy_pool_new(p, &o2);
    struct tb *a = tb_start("A"), *b = tb_start("B");
    struct proxy_backend_spec sa = spec("a", a->port), sb = spec("b", b->port);
    proxy_pool_set_backends(p1, &sa, 1);
    proxy_pool_set_backends(p2, &sb, 1);
    struct net_addr la;
    net_parse_addr("127.0.0.1:0", NULL, &la);
    CHECK_INT(proxy_listen(p, &la, NULL), 0);
    CHECK_INT(proxy_listener_addr(p, 0, &la), 0);
    CHECK_INT(proxy_route_host(p, &la, "one.example", p1), 0);
    CHECK_INT(proxy_route_host(p, &la, "Two.Example", p2), 0);
    CHECK_INT(proxy_start(p), 0);
    char body[64];
    uint16_t port = net_addr_port(&la);
    CHECK_INT(get(port, "one.example", body, sizeof(body)), 200);
    CHECK_STR(body, "A");
    CHECK_INT(get(port, "TWO.example:8080", body, sizeof(body)), 200);
    CHECK_STR(body, "B");
    CHECK_INT(get(port, "three.example", body, sizeof(body)), 404);
    /* routes change while running */
    CHECK_INT(proxy_route_host(p, &la, "one.example", NULL), 0);
    CHECK_INT(get(port, "one.example", body, sizeof(body)), 404);
    struct net_addr other;
    net_parse_addr("127.0.0.1:1", NULL, &other);
    CHECK_INT(proxy_route_host(p, &other, "x", p1), -ENOENT);
    /* a second listener added while running, then removed */
    struct net_addr l2;
    net_parse_addr("127.0.0.1:0", NULL, &l2);
    CHECK_INT(proxy_listen(p, &l2, p2), 0);
    CHECK_INT(proxy_listener_addr(p, 1, &l2), 0);
    usleep(50000);
    CHECK_INT(get(net_addr_port(&l2), "whatever", body, sizeof(body)), 200);
    CHECK_STR(body, "B");
    CHECK_INT(proxy_unlisten(p, &l2), 0);
    usleep(50000);
    CHECK_INT(get(net_addr_port(&l2), "whatever", body, sizeof(body)), -1);
    proxy_free(p);
    tb_stop(a);
    tb_stop(b);
}

TEST(cidr_parse)
{
    struct proxy_cidr c;
    CHECK_INT(proxy_cidr_parse("10.0.0.0/8", &c), 0);
    CHECK_INT(c.prefix, 8);
    CHECK_INT(proxy_cidr_parse("::1", &c), 0);
    CHECK_INT(c.prefix, 128);
    CHECK(proxy_cidr_parse("10.0.0.0/33", &c) < 0);
    CHECK(proxy_cidr_parse("nope", &c) < 0);
}

TEST(per_backend_health_path)
{
    struct proxy_opts po = {.threads = 1};
    struct proxy *p = proxy_new(&po);
    struct proxy_pool_opts o = {.name = "web", .health_path = "/health",
                                .health_interval_ms = 50, .rise = 1};
    struct proxy_pool *pool = proxy_pool_new(p, &o);
    struct tb *a = tb_start("a"), *b = tb_start("b");
    struct proxy_backend_spec s[2] = {spec("old", a->port), spec("new", b->port)};
    s[1].health_path = "/bad"; /* the new revision's check fails */
    CHECK_INT(proxy_pool_set_backends(pool, s, 2), 0);
    CHECK_INT(proxy_start(p), 0);
    struct proxy_backend_stats *st;
    size_t n;
    uint64_t deadline = ev_time_ms() + 5000;
    for (;;) {
        CHECK_INT(proxy_pool_stats(pool, &st, &n), 0);
        bool done = n == 2 && st[0].healthy && st[1].consecutive_failures >= 3;
        bool wrong = n == 2 && st[1].healthy;
        proxy_pool_stats_free(st);
        CHECK(!wrong);
        if (done)
            break;
        CHECK(ev_time_ms() < deadline);
        usleep(20000);
    }
    /* the same id with another path is another backend: it starts over */
    s[1].health_path = NULL;
    CHECK_INT(proxy_pool_set_backends(pool, s, 2), 0);
    deadline = ev_time_ms() + 5000;
    for (;;) {
        CHECK_INT(proxy_pool_stats(pool, &st, &n), 0);
        bool up = n >= 2 && st[1].healthy && !st[1].draining;
        proxy_pool_stats_free(st);
        if (up)
            break;
        CHECK(ev_time_ms() < deadline);
        usleep(20000);
    }
    proxy_free(p);
    tb_stop(a);
    tb_stop(b);
}

TEST(round_robin_spreads_by_weight)
{
    struct proxy_opts po = {.threads = 1};
    struct proxy *p = proxy_new(&po);
    struct proxy_pool_opts o = {.name = "w", .initial_up = true};
    struct proxy_pool *pool = proxy_pool_new(p, &o);
    struct tb *a = tb_start("A"), *b = tb_start("B");
    struct proxy_backend_spec s[2] = {spec("a", a->port), spec("peer:b", b->port)};
    s[1].weight = 3;
    CHECK_INT(proxy_pool_set_backends(pool, s, 2), 0);
    struct net_addr la;
    net_parse_addr("127.0.0.1:0", NULL, &la);
    CHECK_INT(proxy_listen(p, &la, pool), 0);
    CHECK_INT(proxy_listener_addr(p, 0, &la), 0);
    CHECK_INT(proxy_start(p), 0);
    char body[64];
    int na = 0, nb = 0;
    for (int i = 0; i < 8; i++) {
        CHECK_INT(get(net_addr_port(&la), "x", body, sizeof(body)), 200);
        na += strcmp(body, "A") == 0;
        nb += strcmp(body, "B") == 0;
    }
    CHECK_INT(na, 2);
    CHECK_INT(nb, 6);
    proxy_free(p);
    tb_stop(a);
    tb_stop(b);
}

TEST(x_tako_service_never_reaches_a_replica)
{
    /* Whatever a client sends in it, the rewritten head has none: the
     * connection code adds it for peer backends only. */
    static const char req[] = "GET /a HTTP/1.1\r\nHost: h\r\nx-tako-SERVICE: p/e/s\r\n"
                              "X-Tako-Peer-Check: 1\r\nX-Other: 1\r\n\r\n";
    struct http_msg m;
    CHECK(http_parse_request(req, sizeof(req) - 1, &m, HTTP_MAX_HEADERS) > 0);
    char buf[2048];
    struct obuf o = {.p = buf, .cap = sizeof(buf) - 1};
    struct rw_req r = {.peer_ip = "10.0.0.2", .client_ip = "10.0.0.2", .scheme = "http",
                       .listen_addr = "x"};
    rw_request_head(&o, &m, &r);
    CHECK(!o.overflow);
    buf[o.len] = '\0';
    CHECK(strcasestr(buf, "x-tako-service") == NULL);
    CHECK(strcasestr(buf, "x-tako-peer-check") == NULL);
    CHECK_CONTAINS(buf, "X-Other: 1\r\n");
}
