/* net.c — socket helpers. */
#include "core/net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "core/util.h"

int net_parse_addr(const char *s, const char *default_host, struct net_addr *out)
{
    char host[256];
    const char *port_s;
    memset(out, 0, sizeof(*out));
    if (!s || !*s)
        return -EINVAL;
    if (s[0] == '[') {
        const char *end = strchr(s, ']');
        if (!end || end[1] != ':' || (size_t)(end - s - 1) >= sizeof(host))
            return -EINVAL;
        memcpy(host, s + 1, (size_t)(end - s - 1));
        host[end - s - 1] = '\0';
        port_s = end + 2;
    } else {
        const char *colon = strrchr(s, ':');
        if (!colon) {
            snprintf(host, sizeof(host), "%s", default_host ? default_host : "0.0.0.0");
            port_s = s;
        } else {
            if ((size_t)(colon - s) >= sizeof(host))
                return -EINVAL;
            memcpy(host, s, (size_t)(colon - s));
            host[colon - s] = '\0';
            if (!host[0])
                snprintf(host, sizeof(host), "%s", default_host ? default_host : "0.0.0.0");
            port_s = colon + 1;
        }
    }
    uint64_t port;
    if (parse_uint(port_s, 65535, &port) < 0)
        return -EINVAL;
    if (strcmp(host, "localhost") == 0)
        snprintf(host, sizeof(host), "127.0.0.1");
    struct sockaddr_in *in4 = (struct sockaddr_in *)&out->ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&out->ss;
    if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
        out->len = sizeof(*in4);
    } else if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        out->len = sizeof(*in6);
    } else {
        return -EINVAL;
    }
    return 0;
}

const char *net_addr_str(const struct net_addr *a, char *buf, size_t len)
{
    char h[INET6_ADDRSTRLEN];
    if (a->ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&a->ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, h, sizeof(h));
        snprintf(buf, len, "[%s]:%u", h, ntohs(in6->sin6_port));
    } else if (a->ss.ss_family == AF_INET) {
        const struct sockaddr_in *in4 = (const struct sockaddr_in *)&a->ss;
        inet_ntop(AF_INET, &in4->sin_addr, h, sizeof(h));
        snprintf(buf, len, "%s:%u", h, ntohs(in4->sin_port));
    } else {
        snprintf(buf, len, "?");
    }
    return buf;
}

bool net_addr_is_loopback(const struct net_addr *a)
{
    if (a->ss.ss_family == AF_INET) {
        const struct sockaddr_in *in4 = (const struct sockaddr_in *)&a->ss;
        return (ntohl(in4->sin_addr.s_addr) >> 24) == 127;
    }
    if (a->ss.ss_family == AF_INET6) {
        const struct in6_addr *x = &((const struct sockaddr_in6 *)&a->ss)->sin6_addr;
        if (IN6_IS_ADDR_LOOPBACK(x))
            return true;
        return IN6_IS_ADDR_V4MAPPED(x) && x->s6_addr[12] == 127;
    }
    return false;
}

uint16_t net_addr_port(const struct net_addr *a)
{
    if (a->ss.ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)&a->ss)->sin6_port);
    return ntohs(((const struct sockaddr_in *)&a->ss)->sin_port);
}

int net_set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl == -1 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) == -1)
        return -errno;
    return 0;
}

int net_set_nodelay(int fd)
{
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) == -1)
        return -errno;
    return 0;
}

int net_listen_tcp(const struct net_addr *a, int backlog, bool reuseport)
{
    int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd == -1)
        return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) == -1)
        goto fail;
    if (a->ss.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, (const struct sockaddr *)&a->ss, a->len) == -1)
        goto fail;
    if (listen(fd, backlog) == -1)
        goto fail;
    return fd;
fail:;
    int e = errno;
    close(fd);
    return -e;
}

int net_listen_unix(const char *path, int backlog, unsigned mode)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sun.sun_path))
        return -ENAMETOOLONG;
    strcpy(sun.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd == -1)
        return -errno;
    unlink(path);
    /* Create the socket with no access, then open it to the wanted mode:
     * no window where others could connect. */
    mode_t old = umask(0777);
    int r = bind(fd, (struct sockaddr *)&sun, sizeof(sun));
    umask(old);
    if (r == -1 || chmod(path, mode) == -1 || listen(fd, backlog) == -1) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

int net_connect_unix(const char *path)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sun.sun_path))
        return -ENAMETOOLONG;
    strcpy(sun.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd == -1)
        return -errno;
    if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

int net_connect_tcp(const struct net_addr *a, bool *in_progress)
{
    return net_connect_tcp_from(a, NULL, in_progress);
}

int net_connect_tcp_from(const struct net_addr *a, const struct net_addr *src, bool *in_progress)
{
    int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd == -1)
        return -errno;
    net_set_nodelay(fd);
    if (src && src->ss.ss_family == a->ss.ss_family) {
        /* Ports stay the kernel's: only the address is chosen. */
        int one = 1;
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
        if (bind(fd, (const struct sockaddr *)&src->ss, src->len) == -1) {
            int e = errno;
            close(fd);
            return -e;
        }
    }
    *in_progress = false;
    if (connect(fd, (const struct sockaddr *)&a->ss, a->len) == -1) {
        if (errno == EINPROGRESS) {
            *in_progress = true;
        } else {
            int e = errno;
            close(fd);
            return -e;
        }
    }
    return fd;
}

/* Bind 127.0.0.1:PORT (0: the kernel chooses); the port bound, 0 when taken. */
static uint16_t try_port(uint16_t want)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd == -1)
        return 0;
    struct sockaddr_in in = {.sin_family = AF_INET,
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                             .sin_port = htons(want)};
    socklen_t l = sizeof(in);
    uint16_t port = 0;
    if (bind(fd, (struct sockaddr *)&in, sizeof(in)) == 0 &&
        getsockname(fd, (struct sockaddr *)&in, &l) == 0)
        port = ntohs(in.sin_port);
    close(fd);
    return port;
}

/* The kernel's range for the local ports of outgoing connections. */
static void ephemeral_range(unsigned *lo, unsigned *hi)
{
    *lo = 32768;
    *hi = 60999;
    FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
    if (!f)
        return;
    unsigned a, b;
    if (fscanf(f, "%u %u", &a, &b) == 2 && a <= b && b <= 65535) {
        *lo = a;
        *hi = b;
    }
    fclose(f);
}

static uint16_t band_lo, band_hi; /* set: net_set_port_band */

void net_set_port_band(uint16_t lo, uint16_t hi)
{
    band_lo = lo;
    band_hi = hi;
}

int net_parse_port_band(const char *s, uint16_t *lo, uint16_t *hi, char *err, size_t errlen)
{
    unsigned long v[2];
    const char *p = s;
    for (int i = 0; i < 2; i++) {
        char *end;
        if (*p < '0' || *p > '9') {
            snprintf(err, errlen, "'%s' is not a port range LOW-HIGH (e.g. 30000-31999)", s);
            return 0;
        }
        errno = 0;
        v[i] = strtoul(p, &end, 10);
        if (errno || v[i] < 1 || v[i] > 65535) {
            snprintf(err, errlen, "'%s': ports are 1-65535", s);
            return 0;
        }
        p = end;
        if (i == 0 && *p++ != '-') {
            snprintf(err, errlen, "'%s' is not a port range LOW-HIGH (e.g. 30000-31999)", s);
            return 0;
        }
    }
    if (*p) {
        snprintf(err, errlen, "'%s' is not a port range LOW-HIGH (e.g. 30000-31999)", s);
        return 0;
    }
    if (v[0] > v[1]) {
        snprintf(err, errlen, "'%s': the low port is above the high one", s);
        return 0;
    }
    *lo = (uint16_t)v[0];
    *hi = (uint16_t)v[1];
    return 1;
}

uint16_t net_free_port(void)
{
    /* A port the kernel hands out itself (bind to 0) comes from the
     * ephemeral range, where any outgoing connection — the balancer's to
     * another replica, a health check — may take it as its local port
     * before the replica binds it ("Address already in use" at start, seen
     * with 1,000 replicas). So look below that range first. */
    unsigned base, span;
    if (band_lo) {
        base = band_lo;
        span = (unsigned)band_hi - band_lo + 1u;
    } else {
        unsigned lo, hi;
        ephemeral_range(&lo, &hi);
        (void)hi;
        if (lo <= 2048)
            return try_port(0);
        base = lo > 11024 ? lo - 10000 : 1024;
        span = lo - base;
    }
    /* each process its own sequence: two takods must not try the same
     * ports in the same order */
    static uint32_t x;
    if (!x) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        x = (uint32_t)getpid() * 2654435761u ^ (uint32_t)ts.tv_nsec;
        if (!x)
            x = 1;
    }
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    unsigned start = x % span;
    /* 7919 is prime: unless it divides span, the steps visit every port */
    unsigned step = span % 7919u ? 7919u : 1u, tries = band_lo ? span : 64;
    for (unsigned i = 0; i < tries; i++) {
        uint16_t p = try_port((uint16_t)(base + (start + (unsigned long long)i * step) % span));
        if (p)
            return p;
    }
    return band_lo ? 0 : try_port(0);
}
