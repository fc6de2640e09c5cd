/* test_dataplane.c — the data-plane protocol's framing: messages split and
 * joined at any byte, descriptors delivered with their message, bad lines
 * refused, and pool options surviving the JSON round trip. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dataplane/wire.h"
#include "unit.h"

TEST(messages_split_and_joined)
{
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
    /* two messages in one write, the second split over two writes */
    const char *a = "{\"op\":\"hello\",\"id\":1}\n{\"op\":\"st";
    const char *b = "atus\",\"id\":2}\n";
    CHECK(write(sv[0], a, strlen(a)) == (ssize_t)strlen(a));
    struct dpw_in in = {0};
    json_t *m = NULL;
    CHECK_INT(dpw_fill(sv[1], &in), 0);
    CHECK_INT(dpw_take(&in, &m, NULL, NULL), 1);
    CHECK_STR(json_string_value(json_object_get(m, "op")), "hello");
    json_decref(m);
    CHECK_INT(dpw_take(&in, &m, NULL, NULL), 0); /* incomplete */
    CHECK(write(sv[0], b, strlen(b)) == (ssize_t)strlen(b));
    CHECK_INT(dpw_recv(sv[1], &in, &m, NULL, NULL, 1000), 0);
    CHECK_STR(json_string_value(json_object_get(m, "op")), "status");
    json_decref(m);
    /* not an object: refused, the next one still reads */
    const char *c = "[1,2]\n{\"op\":\"x\"}\n";
    CHECK(write(sv[0], c, strlen(c)) == (ssize_t)strlen(c));
    CHECK_INT(dpw_recv(sv[1], &in, &m, NULL, NULL, 1000), -EPROTO);
    CHECK_INT(dpw_recv(sv[1], &in, &m, NULL, NULL, 1000), 0);
    json_decref(m);
    /* end of stream */
    close(sv[0]);
    CHECK_INT(dpw_recv(sv[1], &in, &m, NULL, NULL, 1000), -EPIPE);
    dpw_in_free(&in);
    close(sv[1]);
}

TEST(descriptors_travel_with_their_message)
{
    int sv[2], pfd[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
    CHECK(pipe2(pfd, O_CLOEXEC) == 0);
    json_t *q = json_pack("{s:s, s:i}", "op", "listen", "fds", 2);
    int fds[2] = {pfd[0], pfd[1]};
    CHECK_INT(dpw_send(sv[0], q, fds, 2, 1000), 0);
    json_decref(q);
    struct dpw_in in = {0};
    json_t *m = NULL;
    int got[DP_MAX_FDS];
    size_t n = 0;
    CHECK_INT(dpw_recv(sv[1], &in, &m, got, &n, 1000), 0);
    CHECK_INT(n, 2);
    /* the received descriptors are the same pipe: write one end, read the other */
    CHECK(write(got[1], "z", 1) == 1);
    char ch = 0;
    CHECK(read(pfd[0], &ch, 1) == 1 && ch == 'z');
    struct stat a, b;
    CHECK(fstat(got[0], &a) == 0 && fstat(pfd[0], &b) == 0 && a.st_ino == b.st_ino);
    CHECK(fcntl(got[0], F_GETFD) & FD_CLOEXEC);
    json_decref(m);
    for (size_t i = 0; i < n; i++)
        close(got[i]);
    close(pfd[0]);
    close(pfd[1]);
    dpw_in_free(&in);
    close(sv[0]);
    close(sv[1]);
}

TEST(pool_options_round_trip)
{
    struct proxy_pool_opts o = {.name = "scaling-web",
                                .strategy = LB_STICKY,
                                .health_path = "/health",
                                .health_interval_ms = 500,
                                .health_timeout_ms = 300,
                                .health_fast_interval_ms = 100,
                                .rise = 2,
                                .fall = 4,
                                .retries = 0,
                                .retries_set = true,
                                .retry_budget = 0.5,
                                .drain_timeout_ms = 7000,
                                .all_down_wait_ms = 0,
                                .all_down_wait_set = true,
                                .sticky_cookie = "sid",
                                .ipv6_prefix = 48,
                                .initial_up = true};
    json_t *j = dpw_pool_opts_json(&o);
    char *s = json_dumps(j, 0);
    json_decref(j);
    json_t *back = json_loads(s, 0, NULL);
    free(s);
    struct proxy_pool_opts p;
    dpw_pool_opts_parse(back, &p);
    CHECK_STR(p.name, "scaling-web");
    CHECK_INT(p.strategy, LB_STICKY);
    CHECK_STR(p.health_path, "/health");
    CHECK_INT(p.health_interval_ms, 500);
    CHECK_INT(p.health_timeout_ms, 300);
    CHECK_INT(p.health_fast_interval_ms, 100);
    CHECK_INT(p.rise, 2);
    CHECK_INT(p.fall, 4);
    CHECK(p.retries_set && p.retries == 0);
    CHECK(p.retry_budget == 0.5);
    CHECK_INT(p.drain_timeout_ms, 7000);
    CHECK(p.all_down_wait_set && p.all_down_wait_ms == 0);
    CHECK_STR(p.sticky_cookie, "sid");
    CHECK_INT(p.ipv6_prefix, 48);
    CHECK(p.initial_up);
    /* a newer peer's extra key is ignored; a missing key is the default */
    json_object_set_new(back, "some_future_option", json_true());
    json_object_del(back, "fall");
    dpw_pool_opts_parse(back, &p);
    CHECK_INT(p.fall, 0);
    CHECK_INT(p.rise, 2);
    json_decref(back);
}
