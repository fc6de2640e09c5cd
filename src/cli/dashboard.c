/* dashboard.c — `tako dashboard`: the live page on a private loopback
 * address of this machine, fed through the CLI's takod endpoint (the local
 * socket; a remote server's endpoint plugs in the same way), so takod itself
 * never has to listen on a TCP port for it. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/client.h"
#include "cli/common.h"
#include "core/ev.h"
#include "core/util.h"
#include "daemon/obs.h"

#define DASH_FETCH_MAX (64u << 20) /* an answer larger than this is refused */
#define DASH_FETCH_TIMEOUT_S 3
#define DASH_STATE_MIN_MS 250

const char help_dashboard[] =
    "Usage: tako dashboard [ENV] [-f FILE] [--port PORT] [--no-open]\n"
    "\n"
    "Open the live dashboard: every service with its replicas (server, health,\n"
    "requests per second, p50/p99, errors, CPU, memory, restarts), the share of\n"
    "requests each replica took over the last minute, and a timeline of deploys,\n"
    "scaling, autoscaler decisions and health changes. It updates itself twice a second.\n"
    "\n"
    "The page is served by this command on 127.0.0.1 and reads takod through its\n"
    "control socket, so takod needs no open port. With ENV (or -e) whose servers:\n"
    "name another machine, it reads that server's takod over SSH, like tako ps.\n"
    "The printed address carries a\n"
    "one-time token: other users of this machine cannot read the page. Ctrl-C stops\n"
    "it. To serve the page from takod itself (e.g. for a team, with Prometheus), set\n"
    "metrics: in tako.yaml (see docs/observability.md).\n"
    "\n"
    "Options:\n"
    "  -f, --file FILE  the configuration (default ./tako.yaml), to find ENV's server\n"
    "  -e, --env ENV    the environment whose server to show (default: this machine)\n"
    "  --port PORT   listen on 127.0.0.1:PORT (default: a free port)\n"
    "  --no-open     do not start a browser ($BROWSER, else xdg-open); just print\n"
    "                the address\n"
    "\n"
    "Exit status: 0 after Ctrl-C, 1 when the address cannot be bound, 2 usage error.\n";

struct dash {
    struct obs_buf *state;
    uint64_t state_ms;
};

/* One GET on the control API through the CLI's endpoint. Returns the HTTP
 * status with the body in *body (caller frees), or -errno. */
static int fetch(const char *path, char **body, size_t *len)
{
    *body = NULL;
    int fd = client_connect(false); /* read-only: never starts takod */
    if (fd < 0)
        return fd;
    struct timeval tv = {DASH_FETCH_TIMEOUT_S, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    char req[512];
    int rl = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: takod\r\nConnection: close\r\n\r\n",
                      path);
    if (send(fd, req, (size_t)rl, MSG_NOSIGNAL) != rl) {
        int e = errno;
        close(fd);
        return -e;
    }
    size_t cap = 65536, n = 0;
    char *buf = xmalloc(cap + 1);
    for (;;) {
        if (n == cap) {
            if (cap >= DASH_FETCH_MAX) {
                free(buf);
                close(fd);
                return -EFBIG;
            }
            cap *= 2;
            buf = xrealloc(buf, cap + 1);
        }
        ssize_t r = recv(fd, buf + n, cap - n, 0);
        if (r > 0) {
            n += (size_t)r;
            continue;
        }
        if (r == -1 && errno == EINTR)
            continue;
        if (r == -1) {
            int e = errno;
            free(buf);
            close(fd);
            return -e;
        }
        break;
    }
    close(fd);
    buf[n] = '\0';
    int status = 0;
    char *sep = strstr(buf, "\r\n\r\n");
    if (sscanf(buf, "HTTP/1.%*c %d", &status) != 1 || !sep) {
        free(buf);
        return -EPROTO;
    }
    size_t off = (size_t)(sep + 4 - buf);
    *len = n - off;
    memmove(buf, sep + 4, *len + 1);
    *body = buf;
    return status;
}

static struct obs_buf *dash_state(void *ctx)
{
    struct dash *d = ctx;
    uint64_t now = ev_time_ms();
    if (!d->state || now - d->state_ms >= DASH_STATE_MIN_MS) {
        char *body;
        size_t len;
        int st = fetch("/v1/dashboard", &body, &len);
        obs_buf_unref(d->state);
        d->state = NULL;
        if (st == 200)
            d->state = obs_buf_new(body, len);
        free(body);
        d->state_ms = now;
    }
    if (!d->state)
        return NULL; /* the page shows "takod unreachable" and retries */
    d->state->refs++;
    return d->state;
}

static char *dash_metrics(void *ctx, bool om, size_t *len)
{
    (void)ctx;
    char *body;
    int st = fetch(om ? "/v1/metrics?format=openmetrics" : "/v1/metrics", &body, len);
    if (st != 200) {
        free(body);
        return NULL;
    }
    return body;
}

static void on_stop(struct ev_loop *loop, struct ev_signal *s, int signo)
{
    (void)s;
    (void)signo;
    ev_loop_stop(loop);
}

static void open_browser(const char *url)
{
    const char *b = getenv("BROWSER");
    const char *prog = b && *b ? b : "xdg-open";
    pid_t pid = fork();
    if (pid == 0) {
        /* detached from our terminal's job control; output goes nowhere */
        setsid();
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) {
            dup2(null, 0);
            dup2(null, 1);
            dup2(null, 2);
        }
        execlp(prog, prog, url, (char *)NULL);
        _exit(127);
    }
}

int cmd_dashboard(int argc, char **argv)
{
    static const struct option opts[] = {{"file", required_argument, NULL, 'f'},
                                         {"env", required_argument, NULL, 'e'},
                                         {"port", required_argument, NULL, 'P'},
                                         {"no-open", no_argument, NULL, 'n'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    struct cli_target t = {.cmd = "dashboard"};
    unsigned port = 0;
    bool no_open = false;
    int o;
    optind = 1;
    opterr = 0;
    while ((o = getopt_long(argc, argv, "hf:e:", opts, NULL)) != -1) {
        switch (o) {
        case 'f': t.file = optarg; break;
        case 'e': t.env = optarg; break;
        case 'P': {
            uint64_t v;
            if (parse_uint(optarg, 65535, &v) < 0)
                return cli_usage_error("dashboard", "invalid --port '%s'", optarg);
            port = (unsigned)v;
            break;
        }
        case 'n': no_open = true; break;
        case 'h': fputs(help_dashboard, stdout); return EXIT_OK;
        default: return cli_usage_error("dashboard", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        t.env = argv[optind++];
    if (optind < argc)
        return cli_usage_error("dashboard", "unexpected argument '%s'", argv[optind]);
    /* Only to find the environment's server: without ENV nor a tako.yaml
     * naming a remote one, this machine's takod. */
    int trc = (t.env || t.file) ? cli_target_load(&t, true, true) : 0;
    if (trc)
        return trc;

    /* takod is not started for a read-only page, but say so at once. */
    int fd = client_connect(false);
    if (fd < 0)
        fprintf(stderr, "tako dashboard: takod is not running yet; the page shows it as "
                        "unreachable until it is\n");
    else
        close(fd);

    unsigned char rnd[16];
    if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd)) {
        fprintf(stderr, "tako dashboard: no randomness for the token: %s\n", strerror(errno));
        if (t.env || t.file)
            cli_target_free(&t);
        return EXIT_FAILED;
    }
    char token[33];
    for (size_t i = 0; i < sizeof(rnd); i++)
        snprintf(token + 2 * i, 3, "%02x", rnd[i]);

    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigprocmask(SIG_BLOCK, &set, NULL);
    signal(SIGCHLD, SIG_IGN); /* the browser launcher is never waited for */

    struct ev_loop loop;
    if (ev_loop_init(&loop) < 0) {
        fprintf(stderr, "tako dashboard: epoll: %s\n", strerror(errno));
        if (t.env || t.file)
            cli_target_free(&t);
        return EXIT_FAILED;
    }
    struct dash d = {0};
    struct obs_http_src src = {dash_metrics, dash_state, &d};
    char addr[32];
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", port);
    int err = 0;
    struct obs_http *h = obs_http_new(&src, &loop, addr, token, &err);
    if (!h) {
        fprintf(stderr, "tako dashboard: cannot listen on %s: %s\n", addr, strerror(-err));
        ev_loop_close(&loop);
        if (t.env || t.file)
            cli_target_free(&t);
        return EXIT_FAILED;
    }
    char bound[64], url[160];
    obs_http_addr(h, bound, sizeof(bound));
    snprintf(url, sizeof(url), "http://%s/?token=%s", bound, token);
    printf("Dashboard: %s\n(Ctrl-C to stop)\n", url);
    fflush(stdout);
    if (!no_open)
        open_browser(url);
    struct ev_signal sint, sterm;
    ev_signal_start(&loop, &sint, SIGINT, on_stop, NULL);
    ev_signal_start(&loop, &sterm, SIGTERM, on_stop, NULL);
    ev_run(&loop);
    obs_http_free(h);
    obs_buf_unref(d.state);
    ev_loop_close(&loop);
    if (t.env || t.file)
        cli_target_free(&t);
    return EXIT_OK;
}
