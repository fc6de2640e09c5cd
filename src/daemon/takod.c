/* takod.c — the node agent: control API, SQLite state, the embedded proxy,
 * the process runtime and the reconciler, all on one event loop (the proxy
 * runs its own worker threads). `tako daemon`. */
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/client.h"
#include "config/config.h"
#include "core/ev.h"
#include "core/log.h"
#include "core/util.h"
#include "daemon/api.h"
#include "daemon/home.h"
#include "daemon/obs.h"
#include "daemon/store.h"
#include "orch/orch.h"
#include "proxy/proxy.h"
#include "runtime/rt.h"

rt_event_cb orch_rt_callback(void);

static struct {
    struct ev_loop loop;
    struct store *store;
    struct proxy *proxy;
    struct rt *rt;
    struct orch *orch;
    struct api_server *api;
    struct obs *obs;
    struct ev_signal sigterm, sigint, sighup;
    uint64_t started_ms;
    char home[4096];
} d;

/* ---- helpers ---- */

static const char *qs(struct api_req *r, const char *key, char *buf, size_t len)
{
    const char *v = api_query(r, key, buf, len);
    return v && *v ? v : NULL;
}

static const char *body_str(struct api_req *r, const char *key)
{
    const char *v = json_string_value(json_object_get(r->body, key));
    return v && *v ? v : NULL;
}

static int status_of(int rc)
{
    switch (rc) {
    case -EBUSY: return 409;
    case -EEXIST: return 409;
    case -ENOENT: return 404;
    default: return 400;
    }
}

/* Progress of an operation → lines of the client's stream. */
static void progress(void *data, const char *service, const char *level, const char *message,
                     bool final, bool ok)
{
    struct api_conn *c = data;
    json_t *j = json_object();
    json_object_set_new(j, "type", json_string(final ? "result" : "progress"));
    char ts[32];
    time_iso8601(ts);
    json_object_set_new(j, "time", json_string(ts));
    if (service)
        json_object_set_new(j, "service", json_string(service));
    json_object_set_new(j, "level", json_string(level));
    json_object_set_new(j, "message", json_string(message));
    if (final)
        json_object_set_new(j, "ok", json_boolean(ok));
    api_stream_json(c, j);
    if (final)
        api_stream_end(c);
}

static void stream_closed(struct api_conn *c, void *data)
{
    (void)data;
    orch_detach(d.orch, c);
    /* The operation goes on; our side of the stream ends with it. */
}

/* Run an operation whose progress streams back; handles errors uniformly. */
#define OP_BEGIN(c) api_stream_begin((c), stream_closed, NULL)

/* An operation refused before it started: its result, then the end. */
static void stream_refused(struct api_conn *c, int rc, const char *err)
{
    api_stream_json(c, json_pack("{s:s, s:s, s:s, s:b, s:i}", "type", "result", "level", "error",
                                 "message", err, "ok", 0, "status", status_of(rc)));
    api_stream_end(c);
}

/* ---- handlers ---- */

static void h_version(struct api_req *r, void *data)
{
    (void)data;
    api_reply_json(r->conn, 200,
                   json_pack("{s:s, s:i, s:s, s:I}", "version", TAKO_VERSION, "pid", (int)getpid(),
                             "home", d.home, "uptime_ms",
                             (json_int_t)(ev_time_ms() - d.started_ms)));
}

static void h_deploy(struct api_req *r, void *data)
{
    (void)data;
    const char *project = body_str(r, "project"), *env = body_str(r, "env");
    json_t *services = json_object_get(r->body, "services");
    if (!project || !env || !json_is_array(services)) {
        api_reply_error(r->conn, 400, "deploy needs project, env and services");
        return;
    }
    size_t n = json_array_size(services);
    struct orch_deploy_item *items = xcalloc(n + 1, sizeof(*items));
    for (size_t i = 0; i < n; i++) {
        json_t *it = json_array_get(services, i);
        items[i].name = json_string_value(json_object_get(it, "name"));
        items[i].config = json_object_get(it, "config");
        items[i].revision = json_string_value(json_object_get(it, "revision"));
        items[i].source = json_string_value(json_object_get(it, "source"));
        if (!items[i].name || !items[i].config || !items[i].revision) {
            free(items);
            api_reply_error(r->conn, 400, "services[%zu]: needs name, config and revision", i);
            return;
        }
    }
    json_t *hp = json_object_get(r->body, "http_port");
    struct orch_deploy_req req = {
        .project = project,
        .env = env,
        .http_port = json_is_integer(hp) ? (unsigned)json_integer_value(hp) : 0,
        .items = items,
        .n_items = n,
        .force = json_is_true(json_object_get(r->body, "force")),
        .prune = !json_is_false(json_object_get(r->body, "prune")),
        .only_service = body_str(r, "service"),
    };
    char err[1024];
    /* `metrics:` first: an address in use or not allowed refuses the deploy
     * before anything changes; a deploy refused later puts the old one back. */
    json_t *mj = json_object_get(r->body, "metrics");
    json_t *old_metrics = obs_binding(d.obs, project, env);
    int mrc = obs_bind(d.obs, project, env, json_string_value(json_object_get(mj, "address")),
                       json_string_value(json_object_get(mj, "token")),
                       json_string_value(json_object_get(mj, "where")), err, sizeof(err));
    OP_BEGIN(r->conn);
    if (mrc < 0) {
        free(items);
        json_decref(old_metrics);
        stream_refused(r->conn, mrc, err);
        return;
    }
    if (json_is_object(mj)) {
        char a[64], line[160];
        if (obs_bound_addr(d.obs, project, env, a, sizeof(a))) {
            snprintf(line, sizeof(line), "metrics and dashboard on http://%s/", a);
            progress(r->conn, NULL, "info", line, false, true);
        }
    }
    /* Begin the stream first: progress may be emitted while starting. */
    int rc = orch_deploy(d.orch, &req, progress, r->conn, err, sizeof(err));
    free(items);
    if (rc < 0) {
        char e2[256];
        obs_bind(d.obs, project, env, json_string_value(json_object_get(old_metrics, "address")),
                 json_string_value(json_object_get(old_metrics, "token")),
                 json_string_value(json_object_get(old_metrics, "where")), e2, sizeof(e2));
    }
    json_decref(old_metrics);
    if (rc == 1) {
        json_t *j = json_pack("{s:s, s:s, s:s, s:b, s:b}", "type", "result", "level", "info",
                              "message", err, "ok", 1, "unchanged", 1);
        api_stream_json(r->conn, j);
        api_stream_end(r->conn);
    } else if (rc < 0) {
        stream_refused(r->conn, rc, err);
    }
}

static void h_scale(struct api_req *r, void *data)
{
    (void)data;
    const char *project = body_str(r, "project");
    if (!project) {
        api_reply_error(r->conn, 400, "scale needs project and counts");
        return;
    }
    char err[1024];
    OP_BEGIN(r->conn);
    int rc = orch_scale(d.orch, project, body_str(r, "env"), json_object_get(r->body, "counts"),
                        progress, r->conn, err, sizeof(err));
    if (rc < 0)
        stream_refused(r->conn, rc, err);
}

static void h_action(struct api_req *r, void *data)
{
    (void)data;
    const char *kind = r->path + strlen("/v1/");
    const char *project = body_str(r, "project");
    if (!project) {
        api_reply_error(r->conn, 400, "%s needs project", kind);
        return;
    }
    char err[1024];
    OP_BEGIN(r->conn);
    int rc;
    if (strcmp(kind, "rollback") == 0)
        rc = orch_rollback(d.orch, project, body_str(r, "env"), body_str(r, "service"),
                           body_str(r, "revision"), progress, r->conn, err, sizeof(err));
    else
        rc = orch_action(d.orch, kind, project, body_str(r, "env"), body_str(r, "service"),
                         progress, r->conn, err, sizeof(err));
    /* `tako down` of a whole environment closes its metrics address too. */
    if (rc >= 0 && strcmp(kind, "down") == 0 && !body_str(r, "service") && body_str(r, "env"))
        obs_bind(d.obs, project, body_str(r, "env"), NULL, NULL, NULL, err, sizeof(err));
    if (rc < 0)
        stream_refused(r->conn, rc, err);
}

static void h_ps(struct api_req *r, void *data)
{
    (void)data;
    char p[128], e[128], s[128];
    json_t *svcs = orch_ps(d.orch, qs(r, "project", p, sizeof(p)), qs(r, "env", e, sizeof(e)),
                           qs(r, "service", s, sizeof(s)));
    api_reply_json(r->conn, 200, json_pack("{s:o}", "services", svcs));
}

static void h_autoscale(struct api_req *r, void *data)
{
    (void)data;
    char p[128], e[128], s[128];
    json_t *v = orch_autoscale_list(d.orch, qs(r, "project", p, sizeof(p)),
                                    qs(r, "env", e, sizeof(e)), qs(r, "service", s, sizeof(s)));
    api_reply_json(r->conn, 200, json_pack("{s:o}", "services", v));
}

static void h_history(struct api_req *r, void *data)
{
    (void)data;
    char p[128], e[128], l[32];
    const char *project = qs(r, "project", p, sizeof(p));
    if (!project) {
        api_reply_error(r->conn, 400, "history needs ?project=");
        return;
    }
    const char *lim = qs(r, "limit", l, sizeof(l));
    json_t *h = store_history_list(d.store, project, qs(r, "env", e, sizeof(e)),
                                   lim ? atoi(lim) : 50);
    api_reply_json(r->conn, 200, json_pack("{s:o}", "history", h));
}

static void h_events(struct api_req *r, void *data)
{
    (void)data;
    char p[128], s[128], k[64], l[32];
    const char *lim = qs(r, "limit", l, sizeof(l));
    json_t *ev = store_events_list(d.store, qs(r, "project", p, sizeof(p)),
                                   qs(r, "service", s, sizeof(s)), qs(r, "kind", k, sizeof(k)),
                                   lim ? atoi(lim) : 100);
    api_reply_json(r->conn, 200, json_pack("{s:o}", "events", ev));
}

static void h_metrics(struct api_req *r, void *data)
{
    (void)data;
    char f[64];
    const char *fmt = qs(r, "format", f, sizeof(f));
    bool om = fmt && strcmp(fmt, "openmetrics") == 0;
    size_t len;
    char *text = obs_metrics_text(d.obs, om, &len);
    api_reply_raw(r->conn, 200,
                  om ? "application/openmetrics-text; version=1.0.0; charset=utf-8"
                     : "text/plain; version=0.0.4; charset=utf-8",
                  text, len);
    free(text);
}

static void h_dashboard(struct api_req *r, void *data)
{
    (void)data;
    struct obs_buf *b = obs_state(d.obs);
    api_reply_raw(r->conn, 200, "application/json", b->data, b->len);
    obs_buf_unref(b);
}

static void h_shutdown(struct api_req *r, void *data)
{
    (void)data;
    api_reply_json(r->conn, 200, json_pack("{s:b}", "ok", 1));
    ev_loop_stop(&d.loop);
}

static const struct api_route routes[] = {
    {"GET", "/v1/version", h_version},
    {"POST", "/v1/deploy", h_deploy},
    {"POST", "/v1/scale", h_scale},
    {"POST", "/v1/restart", h_action},
    {"POST", "/v1/stop", h_action},
    {"POST", "/v1/start", h_action},
    {"POST", "/v1/down", h_action},
    {"POST", "/v1/rollback", h_action},
    {"GET", "/v1/ps", h_ps},
    {"GET", "/v1/stats", h_ps},
    {"GET", "/v1/history", h_history},
    {"GET", "/v1/autoscale", h_autoscale},
    {"GET", "/v1/events", h_events},
    {"GET", "/v1/metrics", h_metrics},
    {"GET", "/v1/dashboard", h_dashboard},
    {"POST", "/v1/shutdown", h_shutdown},
    {NULL, NULL, NULL},
};

/* ---- life cycle ---- */

/* The CLI that started us waits on $TAKO_READY_FD for "ok" or the reason we
 * could not start. */
static int g_ready_fd = -1;

static void ready_init(void)
{
    const char *v = getenv("TAKO_READY_FD");
    if (!v)
        return;
    g_ready_fd = atoi(v);
    unsetenv("TAKO_READY_FD");
    if (g_ready_fd <= 2 || fcntl(g_ready_fd, F_SETFD, FD_CLOEXEC) == -1)
        g_ready_fd = -1;
}

static void ready_say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void ready_say(const char *fmt, ...)
{
    if (g_ready_fd < 0)
        return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n > 0) {
        ssize_t w = write(g_ready_fd, buf, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
        (void)w;
    }
    close(g_ready_fd);
    g_ready_fd = -1;
}

/* Print a start-up failure to stderr and to the waiting CLI. */
#define START_FAIL(...)                                                                            \
    do {                                                                                           \
        fprintf(stderr, "tako daemon: " __VA_ARGS__);                                              \
        ready_say(__VA_ARGS__);                                                                    \
        return EXIT_FAILED;                                                                        \
    } while (0)

static void on_stop_signal(struct ev_loop *loop, struct ev_signal *s, int signo)
{
    (void)s;
    log_info("takod: %s received, stopping (replicas keep running)", strsignal(signo));
    ev_loop_stop(loop);
}

static void on_hup(struct ev_loop *loop, struct ev_signal *s, int signo)
{
    (void)loop;
    (void)s;
    (void)signo;
    log_info("takod: SIGHUP: nothing to reload (state lives in %s/state.db)", d.home);
}

static int lock_single(const char *home)
{
    char p[4200];
    snprintf(p, sizeof(p), "%s/takod.lock", home);
    int fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd == -1)
        return -errno;
    if (flock(fd, LOCK_EX | LOCK_NB) == -1) {
        int e = errno;
        close(fd);
        return e == EWOULDBLOCK ? -EALREADY : -e;
    }
    return fd; /* held for the life of the process */
}

const char help_daemon[] =
    "Usage: tako daemon [--foreground] [--log-level LEVEL] [--access-log FILE]\n"
    "\n"
    "Run takod, the node agent: it keeps the desired state in SQLite, runs the\n"
    "replicas, embeds the load balancer and serves the control API on the unix\n"
    "socket $TAKO_HOME/takod.sock (mode 0600; see docs/api.md). Every command that\n"
    "needs takod starts it in the background, so running it by hand is rarely needed.\n"
    "\n"
    "State directory: $TAKO_HOME, else /var/lib/tako as root, else ~/.local/state/tako.\n"
    "Files there: takod.pid, takod.sock, takod.log, state.db, replicas/<name>/.\n"
    "\n"
    "Options:\n"
    "  --foreground        stay in the foreground, log to stderr (for systemd;\n"
    "                      see contrib/tako.service)\n"
    "  --log-level LEVEL   debug, info (default), warn or error\n"
    "  --access-log FILE   one line per proxied request (default: none; also\n"
    "                      $TAKO_ACCESS_LOG; \"-\" is standard output; format in\n"
    "                      docs/proxy.md; not rotated by takod)\n"
    "  --stop              ask a running takod to stop (replicas keep running)\n"
    "  --status            print whether takod runs, its pid and version\n"
    "\n"
    "SIGTERM or SIGINT stop takod; replicas keep running and are adopted by the\n"
    "next takod. `tako down` stops a project's replicas.\n";


int cmd_daemon(int argc, char **argv)
{
    static const struct option opts[] = {{"foreground", no_argument, NULL, 'f'},
                                         {"log-level", required_argument, NULL, 'l'},
                                         {"stop", no_argument, NULL, 's'},
                                         {"status", no_argument, NULL, 'S'},
                                         {"access-log", required_argument, NULL, 'a'},
                                         {0}};
    bool foreground = false, stop = false, status = false;
    const char *access_log = getenv("TAKO_ACCESS_LOG");
    if (access_log && !*access_log)
        access_log = NULL;
    int o;
    optind = 1;
    opterr = 0;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'f': foreground = true; break;
        case 's': stop = true; break;
        case 'S': status = true; break;
        case 'a': access_log = optarg; break;
        case 'l': {
            enum log_level lv;
            if (log_parse_level(optarg, &lv) < 0)
                return cli_usage_error("daemon", "invalid --log-level '%s'", optarg);
            log_set_level(lv);
            break;
        }
        default:
            return cli_usage_error("daemon", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return cli_usage_error("daemon", "unexpected argument '%s'", argv[optind]);
    const char *home = tako_home();
    if (!home) {
        fprintf(stderr, "tako daemon: cannot create the state directory: %s\n", strerror(errno));
        return EXIT_FAILED;
    }
    snprintf(d.home, sizeof(d.home), "%s", home);
    if (stop || status) {
        json_t *resp = NULL;
        int fd = client_connect(false);
        if (fd < 0) {
            printf("takod is not running (%s)\n", home);
            return status ? EXIT_UNAVAIL : EXIT_OK;
        }
        close(fd);
        int st = client_call(stop ? "POST" : "GET", stop ? "/v1/shutdown" : "/v1/version", NULL,
                             &resp);
        if (status && st == 200)
            printf("takod %s running, pid %lld, state in %s\n",
                   json_string_value(json_object_get(resp, "version")),
                   (long long)json_integer_value(json_object_get(resp, "pid")), home);
        else if (stop)
            printf("takod stopped\n");
        json_decref(resp);
        return st == 200 ? EXIT_OK : EXIT_FAILED;
    }
    if (!foreground) {
        if (access_log) /* the background takod reads it from its environment */
            setenv("TAKO_ACCESS_LOG", access_log, 1);
        int fd = client_connect(true);
        if (fd < 0)
            return client_unavailable(fd);
        close(fd);
        printf("takod running (state in %s)\n", home);
        return EXIT_OK;
    }

    ready_init();
    int lockfd = lock_single(home);
    if (lockfd == -EALREADY)
        START_FAIL("takod is already running for %s\n", home);
    if (lockfd < 0)
        START_FAIL("cannot lock %s/takod.lock: %s\n", home, strerror(-lockfd));
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    /* Block the signals we handle before any thread exists. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    d.started_ms = ev_time_ms();
    char path[4200], err[512];
    snprintf(path, sizeof(path), "%s/state.db", home);
    d.store = store_open(path, err, sizeof(err));
    if (!d.store)
        START_FAIL("%s\n", err);
    if (ev_loop_init(&d.loop) < 0)
        START_FAIL("epoll: %s\n", strerror(errno));
    struct proxy_opts po;
    memset(&po, 0, sizeof(po));
    /* Opt-in: one line per request is a lot of disk at full load, and
     * takod does not rotate it (use logrotate with copytruncate). */
    po.access_log = access_log;
    d.proxy = proxy_new(&po);
    if (!d.proxy || proxy_start(d.proxy) < 0)
        START_FAIL("cannot start the proxy: %s\n", strerror(errno));
    d.rt = rt_new(&d.loop, home, orch_rt_callback(), NULL);
    d.orch = orch_new(&d.loop, d.rt, d.proxy, d.store, home);
    snprintf(path, sizeof(path), "%s/takod.sock", home);
    int aerr = 0;
    d.api = api_server_new(&d.loop, path, routes, NULL, &aerr);
    if (!d.api)
        START_FAIL("cannot listen on %s: %s\n", path, strerror(-aerr));
    orch_resume(d.orch);
    d.obs = obs_new(&d.loop, d.orch, d.proxy, d.store);
    ev_signal_start(&d.loop, &d.sigterm, SIGTERM, on_stop_signal, NULL);
    ev_signal_start(&d.loop, &d.sigint, SIGINT, on_stop_signal, NULL);
    ev_signal_start(&d.loop, &d.sighup, SIGHUP, on_hup, NULL);
    snprintf(path, sizeof(path), "%s/takod.pid", home);
    FILE *pf = fopen(path, "w");
    if (pf) {
        fprintf(pf, "%d\n", (int)getpid());
        fclose(pf);
    }
    log_info("takod %s started, pid %d, state in %s", TAKO_VERSION, (int)getpid(), home);
    ready_say("ok\n");
    ev_run(&d.loop);
    /* Orderly stop: no new API requests, operations told, proxy drained. */
    api_server_free(d.api);
    orch_shutdown(d.orch);
    proxy_stop(d.proxy);
    obs_free(d.obs); /* after the proxy finished its requests: they count */
    orch_free(d.orch);
    rt_free(d.rt);
    proxy_free(d.proxy);
    store_close(d.store);
    unlink(path);
    log_info("takod stopped");
    ev_loop_close(&d.loop);
    close(lockfd);
    return EXIT_OK;
}
