/* test_core.c — the event loop (fds, timers, signals, children) and util. */
#include <errno.h>
#include <stddef.h>
#include <signal.h>
#include <stdlib.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/ev.h"
#include "core/net.h"
#include "core/util.h"
#include "unit.h"

static int order[8], norder;
static void timer_cb(struct ev_loop *loop, struct ev_timer *t)
{
    order[norder++] = (int)(long)t->data;
    if (norder == 3)
        ev_loop_stop(loop);
}

TEST(timers_fire_in_order)
{
    struct ev_loop loop;
    CHECK_INT(ev_loop_init(&loop), 0);
    struct ev_timer a, b, c, d;
    ev_timer_init(&a, timer_cb, (void *)3L);
    ev_timer_init(&b, timer_cb, (void *)1L);
    ev_timer_init(&c, timer_cb, (void *)2L);
    ev_timer_init(&d, timer_cb, (void *)9L);
    norder = 0;
    ev_timer_start(&loop, &a, 30);
    ev_timer_start(&loop, &b, 1);
    ev_timer_start(&loop, &c, 15);
    ev_timer_start(&loop, &d, 5);
    ev_timer_stop(&loop, &d); /* a stopped timer never fires */
    CHECK(!ev_timer_active(&d));
    CHECK_INT(ev_run(&loop), 0);
    CHECK_INT(norder, 3);
    CHECK_INT(order[0], 1);
    CHECK_INT(order[1], 2);
    CHECK_INT(order[2], 3);
    ev_loop_close(&loop);
}

TEST(timer_heap_many)
{
    struct ev_loop loop;
    CHECK_INT(ev_loop_init(&loop), 0);
    enum { N = 500 };
    static struct ev_timer t[N];
    for (int i = 0; i < N; i++) {
        ev_timer_init(&t[i], timer_cb, NULL);
        ev_timer_start(&loop, &t[i], (uint64_t)((i * 7919) % 1000) + 1000);
    }
    for (int i = 0; i < N; i += 2)
        ev_timer_stop(&loop, &t[i]);
    CHECK_INT(loop.heap_len, N / 2);
    /* Heap property holds after removals. */
    for (size_t i = 1; i < loop.heap_len; i++)
        CHECK(loop.heap[(i - 1) / 2]->when <= loop.heap[i]->when);
    ev_loop_close(&loop);
}

/* A timer further away than INT_MAX ms once wrapped into a negative epoll
 * timeout, so the loop slept forever; SIGALRM ends the binary if it hangs. */
TEST(far_timer_does_not_block_loop)
{
    struct ev_loop loop;
    CHECK_INT(ev_loop_init(&loop), 0);
    struct ev_timer far, never;
    ev_timer_init(&far, timer_cb, NULL);
    ev_timer_init(&never, timer_cb, NULL);
    ev_timer_start(&loop, &far, 30ull * 24 * 3600 * 1000);
    ev_timer_start(&loop, &never, UINT64_MAX);
    alarm(10);
    norder = 0;
    CHECK_INT(ev_run_once(&loop, 20), 0);
    alarm(0);
    CHECK_INT(norder, 0);
    CHECK(ev_timer_active(&far));
    CHECK(ev_timer_active(&never));
    CHECK(never.when == UINT64_MAX);
    ev_loop_close(&loop);
}

static char io_got[16];
static void io_cb(struct ev_loop *loop, struct ev_io *w, uint32_t ev)
{
    (void)ev;
    ssize_t n = read(w->fd, io_got, sizeof(io_got) - 1);
    if (n > 0)
        io_got[n] = '\0';
    ev_loop_stop(loop);
}

TEST(io_readable)
{
    struct ev_loop loop;
    int p[2];
    CHECK_INT(ev_loop_init(&loop), 0);
    CHECK_INT(pipe(p), 0);
    struct ev_io w;
    ev_io_init(&w, p[0], io_cb, NULL);
    CHECK_INT(ev_io_start(&loop, &w, EPOLLIN), 0);
    CHECK_INT(write(p[1], "hello", 5), 5);
    CHECK_INT(ev_run(&loop), 0);
    CHECK_STR(io_got, "hello");
    CHECK_INT(ev_io_stop(&loop, &w), 0);
    close(p[0]);
    close(p[1]);
    ev_loop_close(&loop);
}

/* Two owners readable in one batch: the first callback closes the second
 * (stop + ev_defer). The second's callback must not run, and the free must
 * happen after the batch, as docs/internals/ev.md promises. */
struct dconn {
    struct ev_io io;
    struct ev_defer defer;
    struct dconn *peer;
    int calls;
    bool freed;
};
static int defer_log[8], ndefer_log; /* 1 = io callback, 2 = deferred free, 3 = nested */
static struct ev_loop *defer_loop;
static struct ev_defer nested_defer;

static void dconn_nested(struct ev_defer *d)
{
    (void)d;
    defer_log[ndefer_log++] = 3;
}

static void dconn_free(struct ev_defer *d)
{
    struct dconn *c = (struct dconn *)((char *)d - offsetof(struct dconn, defer));
    c->freed = true;
    defer_log[ndefer_log++] = 2;
    /* Work deferred by deferred work runs in the same iteration. */
    ev_defer(defer_loop, &nested_defer, dconn_nested);
}

static void dconn_cb(struct ev_loop *loop, struct ev_io *w, uint32_t ev)
{
    (void)ev;
    struct dconn *c = w->data;
    c->calls++;
    defer_log[ndefer_log++] = 1;
    if (c->peer && !c->peer->freed) {
        ev_io_stop(loop, &c->peer->io);
        ev_defer(loop, &c->peer->defer, dconn_free);
    }
    ev_io_stop(loop, w);
}

TEST(defer_after_batch_and_stopped_watcher_skipped)
{
    struct ev_loop loop;
    int a[2], b[2];
    CHECK_INT(ev_loop_init(&loop), 0);
    defer_loop = &loop;
    CHECK_INT(pipe(a), 0);
    CHECK_INT(pipe(b), 0);
    struct dconn x = {0}, y = {0};
    x.peer = &y;
    y.peer = &x;
    ev_io_init(&x.io, a[0], dconn_cb, &x);
    ev_io_init(&y.io, b[0], dconn_cb, &y);
    CHECK_INT(ev_io_start(&loop, &x.io, EPOLLIN), 0);
    CHECK_INT(ev_io_start(&loop, &y.io, EPOLLIN), 0);
    CHECK_INT(write(a[1], "x", 1), 1);
    CHECK_INT(write(b[1], "y", 1), 1);
    ndefer_log = 0;
    CHECK_INT(ev_run_once(&loop, 1000), 0);
    /* Exactly one io callback ran (whichever epoll reported first), then the
     * deferred free of the other, then the work that free deferred. */
    CHECK_INT(x.calls + y.calls, 1);
    CHECK_INT(ndefer_log, 3);
    CHECK_INT(defer_log[0], 1);
    CHECK_INT(defer_log[1], 2);
    CHECK_INT(defer_log[2], 3);
    CHECK(x.freed != y.freed);
    close(a[0]), close(a[1]), close(b[0]), close(b[1]);
    ev_loop_close(&loop);
}

static int rearm_count;
static void rearm_cb(struct ev_loop *loop, struct ev_timer *t)
{
    if (++rearm_count < 3)
        ev_timer_start(loop, t, 1); /* periodic: re-armed in its callback */
    else
        ev_loop_stop(loop);
}

TEST(timer_rearmed_in_callback)
{
    struct ev_loop loop;
    CHECK_INT(ev_loop_init(&loop), 0);
    struct ev_timer t;
    ev_timer_init(&t, rearm_cb, NULL);
    rearm_count = 0;
    ev_timer_start(&loop, &t, 1);
    CHECK_INT(ev_run(&loop), 0);
    CHECK_INT(rearm_count, 3);
    CHECK(!ev_timer_active(&t));
    ev_loop_close(&loop);
}

static int sig_seen;
static void sig_cb(struct ev_loop *loop, struct ev_signal *s, int signo)
{
    (void)s;
    sig_seen = signo;
    ev_loop_stop(loop);
}

static int shared_hits;
static void shared_cb(struct ev_loop *loop, struct ev_signal *s, int signo)
{
    (void)s;
    (void)signo;
    if (++shared_hits == 2)
        ev_loop_stop(loop);
}

TEST(signal_shared_by_two_watchers)
{
    struct ev_loop loop;
    CHECK_INT(ev_loop_init(&loop), 0);
    struct ev_signal s1, s2;
    CHECK_INT(ev_signal_start(&loop, &s1, SIGUSR2, shared_cb, NULL), 0);
    CHECK_INT(ev_signal_start(&loop, &s2, SIGUSR2, shared_cb, NULL), 0);
    shared_hits = 0;
    kill(getpid(), SIGUSR2);
    CHECK_INT(ev_run(&loop), 0);
    CHECK_INT(shared_hits, 2);
    /* Stopping one leaves the other listening. */
    ev_signal_stop(&loop, &s1);
    shared_hits = 1;
    kill(getpid(), SIGUSR2);
    CHECK_INT(ev_run(&loop), 0);
    CHECK_INT(shared_hits, 2);
    ev_signal_stop(&loop, &s2);
    ev_loop_close(&loop);
}

TEST(signal_as_event)
{
    struct ev_loop loop;
    CHECK_INT(ev_loop_init(&loop), 0);
    struct ev_signal s;
    CHECK_INT(ev_signal_start(&loop, &s, SIGUSR1, sig_cb, NULL), 0);
    kill(getpid(), SIGUSR1);
    CHECK_INT(ev_run(&loop), 0);
    CHECK_INT(sig_seen, SIGUSR1);
    ev_signal_stop(&loop, &s);
    ev_loop_close(&loop);
}

static int child_status = -1;
static void child_cb(struct ev_loop *loop, struct ev_child *c, int status)
{
    (void)c;
    child_status = status;
    ev_loop_stop(loop);
}

TEST(child_exit_as_event)
{
    struct ev_loop loop;
    CHECK_INT(ev_loop_init(&loop), 0);
    pid_t pid = fork();
    if (pid == 0)
        _exit(7);
    struct ev_child c;
    CHECK_INT(ev_child_start(&loop, &c, pid, child_cb, NULL), 0);
    CHECK_INT(ev_run(&loop), 0);
    CHECK(WIFEXITED(child_status));
    CHECK_INT(WEXITSTATUS(child_status), 7);
    /* Reaped by the loop: no zombie left. */
    CHECK_INT(waitpid(pid, NULL, WNOHANG), -1);

    pid = fork();
    if (pid == 0) {
        pause();
        _exit(0);
    }
    CHECK_INT(ev_child_start(&loop, &c, pid, child_cb, NULL), 0);
    kill(pid, SIGKILL);
    CHECK_INT(ev_run(&loop), 0);
    CHECK(WIFSIGNALED(child_status));
    CHECK_INT(WTERMSIG(child_status), SIGKILL);
    ev_loop_close(&loop);
}

TEST(parse_duration)
{
    uint64_t v = 0;
    CHECK_INT(parse_duration_ms("500ms", &v), 0);
    CHECK_INT(v, 500);
    CHECK_INT(parse_duration_ms("10s", &v), 0);
    CHECK_INT(v, 10000);
    CHECK_INT(parse_duration_ms("2m", &v), 0);
    CHECK_INT(v, 120000);
    CHECK_INT(parse_duration_ms("1m30s", &v), 0);
    CHECK_INT(v, 90000);
    CHECK_INT(parse_duration_ms("1.5s", &v), 0);
    CHECK_INT(v, 1500);
    CHECK_INT(parse_duration_ms("3", &v), 0);
    CHECK_INT(v, 3000);
    CHECK_INT(parse_duration_ms("10x", &v), -EINVAL);
    CHECK_INT(parse_duration_ms("", &v), -EINVAL);
    CHECK_INT(parse_duration_ms("-1s", &v), -EINVAL);
    CHECK_INT(parse_duration_ms("1m30", &v), -EINVAL);
    CHECK_INT(parse_duration_ms("s", &v), -EINVAL);
}

TEST(parse_size_percent_uint)
{
    uint64_t v = 0;
    double d = 0;
    CHECK_INT(parse_size_bytes("512m", &v), 0);
    CHECK_INT(v, 512ull << 20);
    CHECK_INT(parse_size_bytes("1G", &v), 0);
    CHECK_INT(v, 1ull << 30);
    CHECK_INT(parse_size_bytes("10MiB", &v), 0);
    CHECK_INT(v, 10ull << 20);
    CHECK_INT(parse_size_bytes("12q", &v), -EINVAL);
    CHECK_INT(parse_percent("70%", &d), 0);
    CHECK(d == 70.0);
    CHECK_INT(parse_percent("7o%", &d), -EINVAL);
    CHECK_INT(parse_uint("65535", 65535, &v), 0);
    CHECK_INT(parse_uint("65536", 65535, &v), -ERANGE);
    CHECK_INT(parse_uint("+1", 65535, &v), -EINVAL);
}

TEST(format_helpers)
{
    char b[32];
    CHECK_STR(fmt_duration(250, b, sizeof(b)), "250ms");
    CHECK_STR(fmt_duration(1500, b, sizeof(b)), "1.5s");
    CHECK_STR(fmt_duration(1000, b, sizeof(b)), "1s");
    CHECK_STR(fmt_duration(1999, b, sizeof(b)), "1.9s");
    CHECK_STR(fmt_duration(59999, b, sizeof(b)), "59.9s"); /* not a rounded-up "60.0s" */
    CHECK_STR(fmt_duration(60000, b, sizeof(b)), "1m");
    CHECK_STR(fmt_duration(90000, b, sizeof(b)), "1m30s");
    CHECK_STR(fmt_duration(7200000, b, sizeof(b)), "2h");
    CHECK_STR(fmt_bytes(1536, b, sizeof(b)), "1.5 KiB");
    CHECK_INT(str_edit_distance("loadBalancr", "loadBalancer"), 1);
    time_iso8601(b);
    CHECK_INT(strlen(b), 24);
    CHECK(b[23] == 'Z');
}

TEST(net_addresses)
{
    struct net_addr a;
    char b[64];
    CHECK_INT(net_parse_addr("127.0.0.1:8080", NULL, &a), 0);
    CHECK_STR(net_addr_str(&a, b, sizeof(b)), "127.0.0.1:8080");
    CHECK_INT(net_parse_addr("[::1]:80", NULL, &a), 0);
    CHECK_STR(net_addr_str(&a, b, sizeof(b)), "[::1]:80");
    CHECK_INT(net_parse_addr("9000", "127.0.0.1", &a), 0);
    CHECK_STR(net_addr_str(&a, b, sizeof(b)), "127.0.0.1:9000");
    CHECK_INT(net_parse_addr("localhost:1", NULL, &a), 0);
    CHECK_INT(net_parse_addr("example.com:80", NULL, &a), -EINVAL);
    CHECK_INT(net_parse_addr("127.0.0.1:99999", NULL, &a), -EINVAL);
    CHECK(net_free_port() > 0);
}

TEST(net_port_band)
{
    uint16_t lo = 0, hi = 0;
    char err[128];
    CHECK_INT(net_parse_port_band("30000-30009", &lo, &hi, err, sizeof(err)), 1);
    CHECK_INT(lo, 30000);
    CHECK_INT(hi, 30009);
    CHECK_INT(net_parse_port_band("7-7", &lo, &hi, err, sizeof(err)), 1);
    CHECK_INT(net_parse_port_band("30000", &lo, &hi, err, sizeof(err)), 0);
    CHECK_CONTAINS(err, "is not a port range LOW-HIGH");
    CHECK_INT(net_parse_port_band("30000-", &lo, &hi, err, sizeof(err)), 0);
    CHECK_INT(net_parse_port_band("-5-9", &lo, &hi, err, sizeof(err)), 0);
    CHECK_INT(net_parse_port_band("1-70000", &lo, &hi, err, sizeof(err)), 0);
    CHECK_CONTAINS(err, "ports are 1-65535");
    CHECK_INT(net_parse_port_band("0-10", &lo, &hi, err, sizeof(err)), 0);
    CHECK_INT(net_parse_port_band("9-8", &lo, &hi, err, sizeof(err)), 0);
    CHECK_CONTAINS(err, "low port is above the high one");
    CHECK_INT(net_parse_port_band("10-20x", &lo, &hi, err, sizeof(err)), 0);
    /* Every port handed out is in the band; a band whose one port is
     * held has none to give. */
    uint16_t base = net_free_port();
    CHECK(base > 0 && base < 65000);
    net_set_port_band(base, (uint16_t)(base + 99));
    for (int i = 0; i < 20; i++) {
        uint16_t p = net_free_port();
        CHECK(p >= base && p <= base + 99);
    }
    net_set_port_band(base, base);
    CHECK_INT(net_free_port(), base);
    int held = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in in = {.sin_family = AF_INET,
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                             .sin_port = htons(base)};
    CHECK_INT(bind(held, (struct sockaddr *)&in, sizeof(in)), 0);
    CHECK_INT(net_free_port(), 0);
    close(held);
    net_set_port_band(0, 0);
    CHECK(net_free_port() > 0);
}

#include "core/sha256.h"

TEST(sha256_vectors)
{
    struct sha256 c;
    char hex[65];
    sha256_init(&c);
    sha256_hex(&c, hex);
    CHECK_STR(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    sha256_init(&c);
    sha256_update(&c, "abc", 3);
    sha256_hex(&c, hex);
    CHECK_STR(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    sha256_init(&c);
    const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    for (size_t i = 0; i < strlen(m); i++)
        sha256_update(&c, m + i, 1); /* byte by byte crosses block edges */
    sha256_hex(&c, hex);
    CHECK_STR(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}
