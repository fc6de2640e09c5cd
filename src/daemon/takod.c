/* takod.c — the node agent: control API, SQLite state, the process runtime
 * and the reconciler, all on one event loop, driving the data plane (the
 * load balancer in its own process, src/dataplane/) through the proxy API.
 * Started by `tako daemon` (cli/daemon.c). */
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>

#include "config/config.h"
#include "core/ev.h"
#include "core/log.h"
#include "core/net.h"
#include "core/util.h"
#include "daemon/api.h"
#include "daemon/certs.h"
#include "daemon/home.h"
#include "daemon/logs.h"
#include "daemon/obs.h"
#include "daemon/takod.h"
#include "dataplane/dataplane.h"
#include "orch/orch.h"
#include "proxy/proxy.h"
#include "runtime/rt.h"
#include "store/store.h"
#include "store/store_sqlite.h"

rt_event_cb orch_rt_callback(void);

static struct {
    struct ev_loop loop;
    struct store *store;
    struct proxy *proxy;
    struct rt *rt;
    struct orch *orch;
    struct api_server *api;
    struct takod_certs *certs;
    struct obs *obs;
    struct ev_signal sigterm, sigint, sighup;
    uint64_t started_ms;
    char home[4096];
    bool embedded; /* TAKO_DATAPLANE=embedded: the proxy in this process */
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
    case -ENOSPC: return 507; /* Insufficient Storage: the command failed, not its input */
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
    json_t *v = json_pack("{s:s, s:s, s:i, s:s, s:I}", "version", TAKO_VERSION, "build",
                          dp_build_id(), "pid", (int)getpid(), "home", d.home, "uptime_ms",
                          (json_int_t)(ev_time_ms() - d.started_ms));
    if (!d.embedded)
        json_object_set_new(v, "dataplane", dp_client_status(d.proxy));
    api_reply_json(r->conn, 200, v);
}

/* An optional field of a request: null is the same as absent. */
static json_t *opt_field(json_t *j, const char *key)
{
    json_t *v = json_object_get(j, key);
    return json_is_null(v) ? NULL : v;
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
        items[i].slot_first = opt_field(it, "slot_first");
        items[i].slot_stride = opt_field(it, "slot_stride");
        items[i].peer_replicas = opt_field(it, "peer_replicas");
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
        .peers = opt_field(r->body, "peers"),
    };
    char err[1024];
    /* A full state disk refuses the deploy before anything changes. */
    int src = tako_home_space(d.home, err, sizeof(err));
    if (src < 0) {
        free(items);
        OP_BEGIN(r->conn);
        stream_refused(r->conn, src, err);
        return;
    }
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
    int rc = tako_home_space(d.home, err, sizeof(err));
    if (rc < 0) {
        stream_refused(r->conn, rc, err);
        return;
    }
    rc = orch_scale(d.orch, project, body_str(r, "env"), json_object_get(r->body, "counts"),
                    opt_field(r->body, "peer_replicas"), opt_field(r->body, "slots"), progress,
                    r->conn, err, sizeof(err));
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
    /* Every operation records itself in the store (its lease first): on a
     * full disk it is refused here, whole, rather than half-way. */
    if ((rc = tako_home_space(d.home, err, sizeof(err))) < 0) {
        stream_refused(r->conn, rc, err);
        return;
    }
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
    if (d.certs)
        certs_annotate_ps(d.certs, svcs);
    json_t *resp = json_pack("{s:o}", "services", svcs);
    if (!d.embedded)
        json_object_set_new(resp, "dataplane", dp_client_status(d.proxy));
    api_reply_json(r->conn, 200, resp);
}

static void h_autoscale(struct api_req *r, void *data)
{
    (void)data;
    char p[128], e[128], s[128];
    json_t *v = orch_autoscale_list(d.orch, qs(r, "project", p, sizeof(p)),
                                    qs(r, "env", e, sizeof(e)), qs(r, "service", s, sizeof(s)));
    api_reply_json(r->conn, 200, json_pack("{s:o}", "services", v));
}

/* Answers from the store, whenever it gives them. */
static void reply_named(struct api_conn *c, const char *name, int rc, json_t *list)
{
    if (rc < 0)
        api_reply_error(c, 500, "the state store failed: %s", strerror(-rc));
    else
        api_reply_json(c, 200, json_pack("{s:O}", name, list));
}

static void reply_list(void *data, int rc, void *result)
{
    reply_named(data, "history", rc, result);
}

static void reply_events(void *data, int rc, void *result)
{
    reply_named(data, "events", rc, result);
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
    if (store_history_list(d.store, project, qs(r, "env", e, sizeof(e)), lim ? atoi(lim) : 50,
                           reply_list, r->conn) < 0)
        api_reply_error(r->conn, 500, "the state store failed");
}

static void h_events(struct api_req *r, void *data)
{
    (void)data;
    char p[128], s[128], k[64], l[32];
    const char *lim = qs(r, "limit", l, sizeof(l));
    if (store_events_list(d.store, qs(r, "project", p, sizeof(p)),
                          qs(r, "service", s, sizeof(s)), qs(r, "kind", k, sizeof(k)),
                          lim ? atoi(lim) : 100, reply_events, r->conn) < 0)
        api_reply_error(r->conn, 500, "the state store failed");
}

static void h_logs(struct api_req *r, void *data)
{
    (void)data;
    logs_handle(r, d.rt, &d.loop);
}

static void h_certs(struct api_req *r, void *data)
{
    (void)data;
    api_reply_json(r->conn, 200, json_pack("{s:o}", "certificates", certs_status(d.certs)));
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
    {"GET", "/v1/logs", h_logs},
    {"GET", "/v1/certs", h_certs},
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
        return 1;                                                                                  \
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

/* Data-plane happenings go to the log and to every deployed project's
 * events (they concern all of them). A fenced takod (a newer one drives the
 * data plane) stops. */
struct dp_event {
    char kind[64];
    char msg[512];
};

/* Record the event once per deployed project. */
static void dp_event_record(void *data, int rc, void *result)
{
    struct dp_event *e = data;
    const struct store_services *all = result;
    for (size_t i = 0; rc == 0 && i < all->n; i++) {
        bool seen = false;
        for (size_t k = 0; k < i && !seen; k++)
            seen = strcmp(all->v[k].project, all->v[i].project) == 0;
        if (!seen)
            store_event(d.store, all->v[i].project, NULL, e->kind, e->msg, NULL, NULL, NULL);
    }
    free(e);
}

static void on_dp_event(void *data, const char *level, const char *kind, const char *msg)
{
    (void)data;
    (void)level;
    struct dp_event *e = xcalloc(1, sizeof(*e));
    snprintf(e->kind, sizeof(e->kind), "%s", kind);
    snprintf(e->msg, sizeof(e->msg), "%s", msg);
    if (store_services_load(d.store, NULL, dp_event_record, e) < 0)
        free(e);
    if (strcmp(kind, "dataplane-fenced") == 0)
        ev_loop_stop(&d.loop);
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

int takod_run(const struct takod_opts *o)
{
    const char *home = o->home;
    const char *access_log = o->access_log;
    snprintf(d.home, sizeof(d.home), "%s", home);
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
    const char *band = getenv("TAKO_REPLICA_PORTS");
    if (band && *band) {
        uint16_t lo, hi;
        if (!net_parse_port_band(band, &lo, &hi, err, sizeof(err)))
            START_FAIL("TAKO_REPLICA_PORTS: %s\n", err);
        net_set_port_band(lo, hi);
    }
    snprintf(path, sizeof(path), "%s/state.db", home);
    d.store = store_sqlite_open(path, err, sizeof(err));
    if (!d.store)
        START_FAIL("%s\n", err);
    if (ev_loop_init(&d.loop) < 0)
        START_FAIL("epoll: %s\n", strerror(errno));
    /* Opt-in: one line per request is a lot of disk at full load, and
     * takod does not rotate it (use logrotate with copytruncate). */
    const char *mode = getenv("TAKO_DATAPLANE");
    d.embedded = mode && strcmp(mode, "embedded") == 0;
    if (d.embedded) {
        struct proxy_opts po;
        memset(&po, 0, sizeof(po));
        po.access_log = access_log;
        d.proxy = proxy_new(&po);
        if (!d.proxy || proxy_start(d.proxy) < 0)
            START_FAIL("cannot start the proxy: %s\n", strerror(errno));
    } else {
        /* The data plane outlives takod: attach to the running one (with
         * its listeners, backends and health) or start one. */
        struct dp_client_opts dco = {
            .home = home, .access_log = access_log, .on_event = on_dp_event};
        char dperr[1024];
        d.proxy = dp_client_new(&d.loop, &dco, dperr, sizeof(dperr));
        if (!d.proxy)
            START_FAIL("%s\n", dperr);
    }
    d.rt = rt_new(&d.loop, home, orch_rt_callback(), NULL);
    d.orch = orch_new(&d.loop, d.rt, d.proxy, d.store, home);
    curl_global_init(CURL_GLOBAL_DEFAULT); /* before any thread uses libcurl */
    d.certs = certs_new(&d.loop, d.orch, d.proxy, d.store, home, err, sizeof(err));
    if (!d.certs)
        START_FAIL("%s\n", err);
    snprintf(path, sizeof(path), "%s/takod.sock", home);
    int aerr = 0;
    d.api = api_server_new(&d.loop, path, routes, NULL, &aerr);
    if (!d.api)
        START_FAIL("cannot listen on %s: %s\n", path, strerror(-aerr));
    orch_resume(d.orch);
    if (!d.embedded) /* pools and listeners nothing claimed are dropped */
        dp_client_sync_done(d.proxy);
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
    certs_free(d.certs); /* stops the ACME thread before the proxy goes */
    d.certs = NULL;
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
    return 0;
}
