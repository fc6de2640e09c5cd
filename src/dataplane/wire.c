/* wire.c — line-delimited JSON messages with SCM_RIGHTS descriptors, and the
 * JSON form of the proxy's pool options, shared by takod and the data plane. */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/ev.h"
#include "core/util.h"
#include "dataplane/wire.h"

static int wait_fd(int fd, short events, uint64_t deadline)
{
    for (;;) {
        uint64_t now = ev_time_ms();
        if (now >= deadline)
            return -ETIMEDOUT;
        struct pollfd p = {.fd = fd, .events = events};
        int r = poll(&p, 1, (int)(deadline - now));
        if (r > 0)
            return 0;
        if (r == -1 && errno != EINTR)
            return -errno;
    }
}

int dpw_send(int fd, const json_t *msg, const int *fds, size_t nfds, int timeout_ms)
{
    char *s = json_dumps(msg, JSON_COMPACT);
    if (!s)
        return -ENOMEM;
    size_t len = strlen(s);
    char *line = xmalloc(len + 1);
    memcpy(line, s, len);
    line[len++] = '\n';
    free(s);
    uint64_t deadline = ev_time_ms() + (uint64_t)timeout_ms;
    size_t off = 0;
    int rc = 0;
    while (off < len) {
        struct iovec iov = {.iov_base = line + off, .iov_len = len - off};
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
        char cbuf[CMSG_SPACE(sizeof(int) * DP_MAX_FDS)];
        if (off == 0 && nfds) { /* descriptors ride on the first byte */
            if (nfds > DP_MAX_FDS) {
                rc = -E2BIG;
                break;
            }
            memset(cbuf, 0, sizeof(cbuf));
            mh.msg_control = cbuf;
            mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
            struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
            cm->cmsg_level = SOL_SOCKET;
            cm->cmsg_type = SCM_RIGHTS;
            cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
            memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
        }
        ssize_t n = sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            off += (size_t)n;
            continue;
        }
        if (n == -1 && errno == EINTR)
            continue;
        if (n == -1 && errno == EAGAIN) {
            if ((rc = wait_fd(fd, POLLOUT, deadline)) < 0)
                break;
            continue;
        }
        rc = n == -1 && errno != EPIPE && errno != ECONNRESET ? -errno : -EPIPE;
        break;
    }
    free(line);
    return rc;
}

int dpw_fill(int fd, struct dpw_in *in)
{
    for (;;) {
        if (in->cap - in->len < 65536) {
            in->cap = in->cap ? in->cap * 2 : 131072;
            in->buf = xrealloc(in->buf, in->cap);
        }
        if (in->len > DP_MAX_LINE)
            return -EPROTO;
        struct iovec iov = {.iov_base = in->buf + in->len, .iov_len = in->cap - in->len - 1};
        char cbuf[CMSG_SPACE(sizeof(int) * DP_MAX_FDS)];
        struct msghdr mh = {.msg_iov = &iov,
                            .msg_iovlen = 1,
                            .msg_control = cbuf,
                            .msg_controllen = sizeof(cbuf)};
        ssize_t n = recvmsg(fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (n == -1 && errno == EINTR)
            continue;
        if (n == -1 && errno == EAGAIN)
            return 0;
        if (n == -1)
            return errno == ECONNRESET ? -EPIPE : -errno;
        for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
            if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
                continue;
            size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            int got[DP_MAX_FDS];
            memcpy(got, CMSG_DATA(cm), k * sizeof(int));
            for (size_t i = 0; i < k; i++) {
                if (in->nfds < DP_MAX_FDS)
                    in->fds[in->nfds++] = got[i];
                else
                    close(got[i]);
            }
        }
        if (n == 0)
            return -EPIPE;
        in->len += (size_t)n;
    }
}

int dpw_take(struct dpw_in *in, json_t **msg, int *fds, size_t *nfds)
{
    *msg = NULL;
    if (nfds)
        *nfds = 0;
    char *nl = in->len ? memchr(in->buf, '\n', in->len) : NULL;
    if (!nl)
        return 0;
    *nl = '\0';
    size_t used = (size_t)(nl - in->buf) + 1;
    json_error_t je;
    json_t *j = json_loads(in->buf, 0, &je);
    memmove(in->buf, in->buf + used, in->len - used);
    in->len -= used;
    /* Descriptors belong to the message they came with: only one message
     * with descriptors is ever in flight on a connection. */
    if (fds && nfds) {
        memcpy(fds, in->fds, in->nfds * sizeof(int));
        *nfds = in->nfds;
    } else {
        for (size_t i = 0; i < in->nfds; i++)
            close(in->fds[i]);
    }
    in->nfds = 0;
    if (!json_is_object(j)) {
        json_decref(j);
        if (fds && nfds) {
            for (size_t i = 0; i < *nfds; i++)
                close(fds[i]);
            *nfds = 0;
        }
        return -EPROTO;
    }
    *msg = j;
    return 1;
}

int dpw_recv(int fd, struct dpw_in *in, json_t **msg, int *fds, size_t *nfds, int timeout_ms)
{
    uint64_t deadline = ev_time_ms() + (uint64_t)timeout_ms;
    for (;;) {
        int r = dpw_take(in, msg, fds, nfds);
        if (r != 0)
            return r < 0 ? r : 0;
        int f = dpw_fill(fd, in);
        if ((r = dpw_take(in, msg, fds, nfds)) != 0) /* what came before the end counts */
            return r < 0 ? r : 0;
        if (f < 0)
            return f;
        if ((r = wait_fd(fd, POLLIN, deadline)) < 0)
            return r;
    }
}

void dpw_in_free(struct dpw_in *in)
{
    for (size_t i = 0; i < in->nfds; i++)
        close(in->fds[i]);
    free(in->buf);
    memset(in, 0, sizeof(*in));
}

json_t *dpw_pool_opts_json(const struct proxy_pool_opts *o)
{
    json_t *j = json_pack("{s:s, s:s, s:I, s:I, s:I, s:i, s:i, s:i, s:b, s:f, s:I, s:I, s:b, s:i, "
                          "s:b}",
                          "name", o->name ? o->name : "default", "strategy",
                          lb_kind_name(o->strategy), "health_interval_ms",
                          (json_int_t)o->health_interval_ms, "health_timeout_ms",
                          (json_int_t)o->health_timeout_ms, "health_fast_interval_ms",
                          (json_int_t)o->health_fast_interval_ms, "rise", (int)o->rise, "fall",
                          (int)o->fall, "retries", (int)o->retries, "retries_set", o->retries_set,
                          "retry_budget", o->retry_budget, "drain_timeout_ms",
                          (json_int_t)o->drain_timeout_ms, "all_down_wait_ms",
                          (json_int_t)o->all_down_wait_ms, "all_down_wait_set",
                          o->all_down_wait_set, "ipv6_prefix", (int)o->ipv6_prefix, "initial_up",
                          o->initial_up);
    if (o->health_path)
        json_object_set_new(j, "health_path", json_string(o->health_path));
    if (o->sticky_cookie)
        json_object_set_new(j, "sticky_cookie", json_string(o->sticky_cookie));
    /* Request limits (protocol 1 data planes ignore them: defaults apply). */
    json_object_set_new(j, "body_timeout_ms", json_integer((json_int_t)o->body_timeout_ms));
    json_object_set_new(j, "min_body_rate", json_integer((json_int_t)o->min_body_rate));
    json_object_set_new(j, "max_conns_per_backend",
                        json_integer((json_int_t)o->max_conns_per_backend));
    json_object_set_new(j, "max_queue", json_integer((json_int_t)o->max_queue));
    json_object_set_new(j, "queue_timeout_ms", json_integer((json_int_t)o->queue_timeout_ms));
    /* Protocol 3: a data plane of 2 would ignore them, so takod sends a pool
     * that has them only to a data plane of 3 (dp_client). */
    if (o->peer_service && *o->peer_service)
        json_object_set_new(j, "peer_service", json_string(o->peer_service));
    if (o->peer_source && *o->peer_source)
        json_object_set_new(j, "peer_source", json_string(o->peer_source));
    return j;
}

static uint64_t u64(const json_t *j, const char *k)
{
    json_t *v = json_object_get(j, k);
    return json_is_integer(v) && json_integer_value(v) > 0 ? (uint64_t)json_integer_value(v) : 0;
}

void dpw_pool_opts_parse(const json_t *j, struct proxy_pool_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->name = json_string_value(json_object_get(j, "name"));
    enum lb_kind k;
    const char *st = json_string_value(json_object_get(j, "strategy"));
    o->strategy = st && lb_kind_parse(st, &k) == 0 ? k : LB_ROUND_ROBIN;
    o->health_path = json_string_value(json_object_get(j, "health_path"));
    o->health_interval_ms = u64(j, "health_interval_ms");
    o->health_timeout_ms = u64(j, "health_timeout_ms");
    o->health_fast_interval_ms = u64(j, "health_fast_interval_ms");
    o->rise = (unsigned)u64(j, "rise");
    o->fall = (unsigned)u64(j, "fall");
    o->retries = (unsigned)u64(j, "retries");
    o->retries_set = json_is_true(json_object_get(j, "retries_set"));
    json_t *rb = json_object_get(j, "retry_budget");
    o->retry_budget = json_is_number(rb) ? json_number_value(rb) : 0;
    o->drain_timeout_ms = u64(j, "drain_timeout_ms");
    o->all_down_wait_ms = u64(j, "all_down_wait_ms");
    o->all_down_wait_set = json_is_true(json_object_get(j, "all_down_wait_set"));
    o->sticky_cookie = json_string_value(json_object_get(j, "sticky_cookie"));
    o->ipv6_prefix = (unsigned)u64(j, "ipv6_prefix");
    o->initial_up = json_is_true(json_object_get(j, "initial_up"));
    o->body_timeout_ms = u64(j, "body_timeout_ms");
    o->min_body_rate = (unsigned)u64(j, "min_body_rate");
    o->max_conns_per_backend = (unsigned)u64(j, "max_conns_per_backend");
    o->max_queue = (unsigned)u64(j, "max_queue");
    o->queue_timeout_ms = u64(j, "queue_timeout_ms");
    o->peer_service = json_string_value(json_object_get(j, "peer_service"));
    o->peer_source = json_string_value(json_object_get(j, "peer_source"));
}
