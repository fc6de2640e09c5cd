/* client.c — talk to takod: over its unix socket here (starting it when
 * needed), or on a server through `ssh HOST tako daemon --stdio`. */
#include "cli/client.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "core/net.h"
#include "core/util.h"
#include "daemon/home.h"
#include "remote/remote.h"
#include "http/http.h"

#define CLIENT_MAX_RESPONSE (64u << 20)
#define CLIENT_START_WAIT_MS 10000

/* Start takod in the background and wait until it says it is ready (or
 * why it is not) on a pipe it inherits as $TAKO_READY_FD. Returns 0, or
 * -errno with takod's own message printed. */
static int spawn_daemon(void)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0)
        return -errno;
    self[n] = '\0';
    char logp[4096];
    tako_home_path("takod.log", logp, sizeof(logp));
    int rp[2];
    if (pipe2(rp, O_CLOEXEC) == -1)
        return -errno;
    pid_t pid = fork();
    if (pid == -1) {
        close(rp[0]);
        close(rp[1]);
        return -errno;
    }
    if (pid == 0) {
        close(rp[0]);
        int wfd = dup(rp[1]); /* without O_CLOEXEC: takod inherits it */
        char fdv[16];
        snprintf(fdv, sizeof(fdv), "%d", wfd);
        setenv("TAKO_READY_FD", fdv, 1);
        /* Double fork so takod is not our child and outlives the CLI. */
        setsid();
        if (fork() != 0)
            _exit(0);
        int devnull = open("/dev/null", O_RDWR);
        int logfd = open(logp, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        if (devnull >= 0)
            dup2(devnull, 0);
        if (logfd >= 0) {
            dup2(logfd, 1);
            dup2(logfd, 2);
        }
        char *argv[] = {self, "daemon", "--foreground", NULL};
        execv(self, argv);
        _exit(127);
    }
    close(rp[1]);
    int st;
    waitpid(pid, &st, 0);
    /* Wait for "ok" or an error line; EOF without one means takod died. */
    char msg[1024];
    size_t got = 0;
    struct pollfd pfd = {.fd = rp[0], .events = POLLIN};
    uint64_t start = time_wall_ms();
    while (got < sizeof(msg) - 1) {
        uint64_t el = time_wall_ms() - start;
        if (el >= CLIENT_START_WAIT_MS)
            break;
        int pr = poll(&pfd, 1, (int)(CLIENT_START_WAIT_MS - el));
        if (pr <= 0)
            break;
        ssize_t k = read(rp[0], msg + got, sizeof(msg) - 1 - got);
        if (k <= 0)
            break;
        got += (size_t)k;
        if (memchr(msg, '\n', got))
            break;
    }
    close(rp[0]);
    msg[got] = '\0';
    if (strncmp(msg, "ok", 2) == 0)
        return 0;
    /* Another takod holds the home's lock: one that is stopping (it says
     * "stopped" before its lock is released) or one started at the same
     * moment; the caller waits for it. */
    if (strncmp(msg, "takod is already running", 24) == 0)
        return -EALREADY;
    if (got)
        fprintf(stderr, "tako: takod did not start: %s", msg);
    else
        fprintf(stderr, "tako: takod did not start (see %s)\n", logp);
    return -ECONNREFUSED;
}

/* The endpoint: NULL = this machine's socket. */
static struct ssh_conn *g_remote;

void client_use_remote(struct ssh_conn *c)
{
    g_remote = c;
}

struct ssh_conn *client_remote(void)
{
    return g_remote;
}

int client_connect(bool autostart)
{
    if (g_remote) {
        /* One ssh session over the command's master connection; the remote
         * side starts takod when it is not running, with the server's
         * REMOTE_ENV_FILE in its environment. */
        char *cmd = xasprintf("%ssh -c '" REMOTE_ENV_SH "exec " REMOTE_BIN " daemon --stdio'",
                              remote_sudo(g_remote));
        int fd = -1;
        pid_t pid = ssh_spawn(g_remote, cmd, &fd);
        free(cmd);
        return pid < 0 ? (int)pid : fd;
    }
    const char *home = tako_home();
    if (!home)
        return -errno;
    char sock[4096];
    tako_home_path("takod.sock", sock, sizeof(sock));
    int fd = net_connect_unix(sock);
    if (fd >= 0 || !autostart)
        return fd;
    uint64_t start = time_wall_ms();
    struct timespec ts = {0, 20 * 1000000};
    int r = spawn_daemon();
    /* A takod that still holds the lock: its socket answers soon (it is
     * starting), or the lock is free soon (it is stopping) and ours starts. */
    while (r == -EALREADY && time_wall_ms() - start < CLIENT_START_WAIT_MS) {
        struct timespec wait = {0, 100 * 1000000};
        nanosleep(&wait, NULL);
        fd = net_connect_unix(sock);
        if (fd >= 0)
            return fd;
        r = spawn_daemon();
    }
    if (r == -EALREADY) {
        fprintf(stderr, "tako: takod did not start: another takod holds %s and does not "
                        "answer\n", home);
        return -ECONNREFUSED;
    }
    if (r < 0)
        return r;
    fd = net_connect_unix(sock);
    if (fd >= 0)
        return fd;
    start = time_wall_ms();
    while (time_wall_ms() - start < CLIENT_START_WAIT_MS) {
        fd = net_connect_unix(sock);
        if (fd >= 0)
            return fd;
        nanosleep(&ts, NULL);
    }
    return fd;
}

int client_unavailable(int err)
{
    if (g_remote) {
        fprintf(stderr,
                "tako: cannot reach takod on server %s (%s): %s\n"
                "(is tako set up there? `tako setup ENV` prepares it; see docs/servers.md)\n",
                ssh_name(g_remote), ssh_where(g_remote), strerror(-err));
        return EXIT_UNAVAIL;
    }
    char logp[4096];
    tako_home_path("takod.log", logp, sizeof(logp));
    fprintf(stderr, "tako: cannot reach takod at %s/takod.sock: %s\n(see %s)\n",
            tako_home() ? tako_home() : "$TAKO_HOME", strerror(-err), logp);
    return EXIT_UNAVAIL;
}

int client_report_error(const char *cmd, int status, json_t *resp)
{
    const char *msg = json_string_value(json_object_get(resp, "error"));
    fprintf(stderr, "tako %s: %s\n", cmd, msg ? msg : "request failed");
    json_t *hint = json_object_get(resp, "hint");
    if (json_is_string(hint))
        fprintf(stderr, "%s\n", json_string_value(hint));
    if (status == 409)
        return EXIT_CONFLICT;
    if (status >= 400 && status < 500)
        return EXIT_USAGE;
    return EXIT_FAILED;
}

const char *client_urlenc(const char *s, char *buf, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (; *s && o + 4 < len; s++) {
        unsigned char ch = (unsigned char)*s;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
            ch == '-' || ch == '_' || ch == '.' || ch == '~') {
            buf[o++] = (char)ch;
        } else {
            buf[o++] = '%';
            buf[o++] = hex[ch >> 4];
            buf[o++] = hex[ch & 15];
        }
    }
    buf[o] = '\0';
    return buf;
}

static int send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w == -1) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int send_request(int fd, const char *method, const char *path, json_t *body)
{
    char *b = body ? json_dumps(body, JSON_COMPACT) : NULL;
    size_t bl = b ? strlen(b) : 0;
    char head[4096 + 256];
    int n = snprintf(head, sizeof(head),
                     "%s %s HTTP/1.1\r\nHost: takod\r\nConnection: close\r\n"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                     method, path, bl);
    int r = send_all(fd, head, (size_t)n);
    if (r == 0 && bl)
        r = send_all(fd, b, bl);
    free(b);
    return r;
}

/* Buffered reader over the socket. */
struct rd {
    int fd;
    char buf[65536];
    size_t len, off;
};

static int rd_fill(struct rd *r)
{
    if (r->off > 0) {
        memmove(r->buf, r->buf + r->off, r->len - r->off);
        r->len -= r->off;
        r->off = 0;
    }
    if (r->len == sizeof(r->buf))
        return -ENOBUFS;
    for (;;) {
        ssize_t n = recv(r->fd, r->buf + r->len, sizeof(r->buf) - r->len, 0);
        if (n == -1 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        r->len += (size_t)n;
        return (int)n;
    }
}

/* Read the response head with the proxy's strict parser (src/http,
 * fuzzed). Returns the status, sets *chunked / *clen (-1: until close). */
static int read_head(struct rd *r, bool *chunked, long long *clen)
{
    struct http_msg m;
    for (;;) {
        int n = http_parse_response(r->buf + r->off, r->len - r->off, &m, HTTP_MAX_HEADERS);
        if (n < 0)
            return -EPROTO;
        if (n > 0) {
            r->off += (size_t)n;
            *chunked = (m.flags & HTTP_F_CHUNKED) != 0;
            *clen = m.content_length;
            return m.status;
        }
        int k = rd_fill(r);
        if (k <= 0)
            return k < 0 ? k : -ECONNRESET;
    }
}

/* Deliver a chunked body through out(data...) as its data arrive, decoded
 * by the same framer as the proxy's. 0 at its end, -1 when cut or bad. */
static int read_chunked(struct rd *r, void (*out)(const char *p, size_t n, void *arg), void *arg)
{
    struct http_chunked ch;
    http_chunked_init(&ch);
    while (!ch.done) {
        if (r->off == r->len) {
            r->off = r->len = 0;
            if (rd_fill(r) <= 0)
                return -1;
        }
        size_t dl;
        long k = http_chunked_feed(&ch, r->buf + r->off, r->len - r->off, &dl);
        if (k < 0)
            return -1;
        if (dl)
            out(r->buf + r->off, dl, arg);
        r->off += (size_t)k;
    }
    return 0;
}

/* Feed complete lines of data to cb (JSON per line). */
static void feed_lines(char **acc, size_t *acc_len, const char *p, size_t n, client_line_cb cb,
                       void *data)
{
    *acc = xrealloc(*acc, *acc_len + n + 1);
    memcpy(*acc + *acc_len, p, n);
    *acc_len += n;
    size_t start = 0;
    for (size_t i = 0; i < *acc_len; i++) {
        if ((*acc)[i] != '\n')
            continue;
        if (i > start) {
            json_t *j = json_loadb(*acc + start, i - start, JSON_DECODE_ANY, NULL);
            if (j)
                cb(j, data);
        }
        start = i + 1;
    }
    memmove(*acc, *acc + start, *acc_len - start);
    *acc_len -= start;
}

/* Where a chunked body's data go: lines to cb, or one buffer. */
struct body_sink {
    client_line_cb cb;
    void *data;
    char **acc, **whole;
    size_t *acc_len, *whole_len;
};

static void body_sink_put(const char *p, size_t n, void *arg)
{
    struct body_sink *s = arg;
    if (s->cb) {
        feed_lines(s->acc, s->acc_len, p, n, s->cb, s->data);
    } else if (*s->whole_len + n <= CLIENT_MAX_RESPONSE) {
        *s->whole = xrealloc(*s->whole, *s->whole_len + n + 1);
        memcpy(*s->whole + *s->whole_len, p, n);
        *s->whole_len += n;
    }
}

static int do_request(const char *method, const char *path, json_t *body, client_line_cb cb,
                      void *data, json_t **resp)
{
    int fd = client_connect(true);
    if (fd < 0)
        return fd;
    int r = send_request(fd, method, path, body);
    if (r < 0) {
        close(fd);
        return r;
    }
    struct rd *rd = xcalloc(1, sizeof(*rd));
    rd->fd = fd;
    bool chunked;
    long long clen;
    int status = read_head(rd, &chunked, &clen);
    char *acc = NULL;
    size_t acc_len = 0;
    char *whole = NULL;
    size_t whole_len = 0;
    if (status < 0)
        goto out;
    if (chunked) {
        struct body_sink sink = {.cb = cb, .data = data, .acc = &acc, .acc_len = &acc_len,
                                 .whole = &whole, .whole_len = &whole_len};
        if (read_chunked(rd, body_sink_put, &sink) < 0) {
            /* Cut before its last chunk: what came is delivered, but the
             * answer is not whole (a stream takod ended early, a dropped
             * connection) and must not read as a success. */
            status = -ECONNRESET;
            goto out;
        }
    } else {
        /* Content-Length, or until close. */
        for (;;) {
            size_t have = rd->len - rd->off;
            if (have) {
                whole = xrealloc(whole, whole_len + have + 1);
                memcpy(whole + whole_len, rd->buf + rd->off, have);
                whole_len += have;
                rd->off = rd->len = 0;
            }
            if ((clen >= 0 && (long long)whole_len >= clen) || whole_len > CLIENT_MAX_RESPONSE)
                break;
            if (rd_fill(rd) <= 0)
                break;
        }
        if (cb && whole) {
            feed_lines(&acc, &acc_len, whole, whole_len, cb, data);
            free(whole);
            whole = NULL;
            whole_len = 0;
        }
    }
    if (resp) {
        *resp = whole ? json_loadb(whole, whole_len, JSON_DECODE_ANY, NULL) : NULL;
        if (!*resp)
            *resp = json_object();
    }
out:
    free(acc);
    free(whole);
    free(rd);
    close(fd);
    return status;
}

int client_call(const char *method, const char *path, json_t *body, json_t **resp)
{
    *resp = NULL;
    return do_request(method, path, body, NULL, NULL, resp);
}

int client_get(const char *cmd, const char *path, json_t **resp)
{
    int st = client_call("GET", path, NULL, resp);
    if (st < 0)
        return client_unavailable(st);
    if (st != 200) {
        int rc = client_report_error(cmd, st, *resp);
        json_decref(*resp);
        *resp = NULL;
        return rc;
    }
    return 0;
}

int client_stream(const char *method, const char *path, json_t *body, client_line_cb cb,
                  void *data)
{
    return do_request(method, path, body, cb, data, NULL);
}
