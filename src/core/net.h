/* net.h — socket helpers: addresses, listeners, non-blocking connects. */
#ifndef TAKO_CORE_NET_H
#define TAKO_CORE_NET_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <netinet/in.h>

struct net_addr {
    struct sockaddr_storage ss;
    socklen_t len;
};

/* Parse "HOST:PORT", "[V6]:PORT", ":PORT" or "PORT" (host defaults to
 * default_host). Numeric addresses only; "localhost" means 127.0.0.1.
 * Returns 0 or -EINVAL. */
int net_parse_addr(const char *s, const char *default_host, struct net_addr *out);
/* "127.0.0.1:8080" / "[::1]:8080" into buf. */
const char *net_addr_str(const struct net_addr *a, char *buf, size_t len);
uint16_t net_addr_port(const struct net_addr *a);
/* True for 127.0.0.0/8 and ::1 (and ::ffff:127.0.0.0/104). */
bool net_addr_is_loopback(const struct net_addr *a);

/* Non-blocking, close-on-exec TCP listener. reuseport lets several threads
 * each own a listener on one address. Returns the fd or -errno. */
int net_listen_tcp(const struct net_addr *a, int backlog, bool reuseport);
/* Non-blocking unix stream listener at path (replacing a stale socket),
 * with the given mode. Returns the fd or -errno. */
int net_listen_unix(const char *path, int backlog, unsigned mode);
/* Blocking connect to a unix socket. Returns the fd or -errno. */
int net_connect_unix(const char *path);
/* Start a non-blocking TCP connect; *in_progress is set when the result
 * comes later (EPOLLOUT then SO_ERROR). Returns the fd or -errno. */
int net_connect_tcp(const struct net_addr *a, bool *in_progress);
/* net_connect_tcp from the local address src (port 0: any; NULL: the
 * kernel's choice), e.g. so that the other side can tell who connects. */
int net_connect_tcp_from(const struct net_addr *a, const struct net_addr *src, bool *in_progress);
int net_set_nonblock(int fd);
int net_set_nodelay(int fd);
/* A free TCP port on 127.0.0.1 at the time of the call (0 on failure):
 * from the band set with net_set_port_band, else below the kernel's
 * ephemeral range when there is room there. */
uint16_t net_free_port(void);
/* Parse a port band "LO-HI" (1 <= LO <= HI <= 65535); on error 0 is
 * returned and err says what is wrong. */
int net_parse_port_band(const char *s, uint16_t *lo, uint16_t *hi, char *err, size_t errlen);
/* The ports net_free_port hands out from now on (0, 0: the default). */
void net_set_port_band(uint16_t lo, uint16_t hi);

#endif
