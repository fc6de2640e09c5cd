/* test_orch.c — the reconciler's decisions against a fake runtime driver
 * and a fake clock: rolling updates (maxSurge / maxUnavailable), a failed
 * revision and its rollback, scale-up and scale-down order, adoption after
 * a takod restart, autoscaling, the project lease, and BUG_ON.
 *
 * The services are workers (no port), so no balancer is involved: a
 * replica is ready once the driver says it has run for a second. The fake
 * driver records every start and stop in order; each step advances the
 * fake clock, lets the fake replicas run, runs one reconcile tick and the
 * loop's deferred work (the driver's stop completions).
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config/config.h"
#include "core/assert.h"
#include "core/ev.h"
#include "core/util.h"
#include "orch/orch.h"
#include "orch/orch_internal.h"
#include "runtime/rt_driver.h"
#include "store/store.h"
#include "store/store_sqlite.h"
#include "unit.h"

rt_event_cb orch_rt_callback(void);

/* ---- the fake clock ---- */

static uint64_t g_now;
static uint64_t fake_clock(void *data)
{
    (void)data;
    return g_now;
}

/* ---- the fake driver ---- */

struct fake_rep {
    struct rt_replica base;
    struct rt__owned_spec spec;
    char name[64];
    enum rt_state state;
    uint64_t started; /* fake clock at RUNNING */
    unsigned restarts;
    char last_error[128];
    void (*done)(struct rt_replica *, void *);
    void *done_data;
    struct ev_defer defer;
    bool pending, forgotten;
    struct fake_rep *next;
};

static struct ev_loop *g_loop;
static struct fake_rep *g_reps;      /* handles of the current rt */
static struct fake_rep *g_survivors; /* replicas left running by a "takod" that went away */
static char g_events[8192];          /* "start big-web-1,stop big-web-4,…" */
static char g_fail_revision[64];     /* replicas of this revision fail at exec */
static double g_cpu;

static void ev_log(const char *what, const char *name)
{
    size_t l = strlen(g_events);
    snprintf(g_events + l, sizeof(g_events) - l, "%s%s %s", l ? "," : "", what, name);
}

static void set_state(struct fake_rep *r, enum rt_state s)
{
    enum rt_state old = r->state;
    r->state = s;
    if (!r->forgotten)
        rt__emit(&r->base, old, s);
}

static void unlink_rep(struct fake_rep **list, struct fake_rep *r)
{
    for (struct fake_rep **pp = list; *pp; pp = &(*pp)->next)
        if (*pp == r) {
            *pp = r->next;
            return;
        }
}

static void free_rep(struct fake_rep *r)
{
    rt__spec_free(&r->spec);
    free(r);
}

static int fake_create(struct rt *rt, struct rt_driver **out, char *err, size_t errlen)
{
    (void)rt;
    (void)err;
    (void)errlen;
    *out = xcalloc(1, sizeof(struct rt_driver));
    return 0;
}

/* takod going away: its replicas keep running (they survive takod). */
static void fake_destroy(struct rt_driver *d)
{
    while (g_reps) {
        struct fake_rep *r = g_reps;
        g_reps = r->next;
        if (r->state == RT_RUNNING || r->state == RT_STARTING) {
            r->next = g_survivors;
            g_survivors = r;
        } else {
            free_rep(r);
        }
    }
    free(d);
}

static struct fake_rep *new_rep(struct rt_driver *d, const struct rt_spec *spec, const char *name)
{
    struct fake_rep *r = xcalloc(1, sizeof(*r));
    rt__spec_copy(&r->spec, spec);
    snprintf(r->name, sizeof(r->name), "%s", name);
    r->base.drv = d;
    r->base.spec = &r->spec.spec;
    r->base.name = r->name;
    r->next = g_reps;
    g_reps = r;
    return r;
}

static int fake_start(struct rt_driver *d, const struct rt_spec *spec, struct rt_replica **out,
                      char *err, size_t errlen)
{
    char name[RT_NAME_MAX];
    int rc = rt__replica_name(spec, name, sizeof(name), err, errlen);
    if (rc < 0)
        return rc;
    for (struct fake_rep *r = g_reps; r; r = r->next)
        if (strcmp(r->name, name) == 0) {
            snprintf(err, errlen, "replica %s is already %s", name, rt_state_name(r->state));
            return -EEXIST;
        }
    struct fake_rep *r = new_rep(d, spec, name);
    r->state = RT_STARTING;
    ev_log("start", name);
    *out = &r->base;
    return 0;
}

static void on_stopped(struct ev_defer *dd)
{
    struct fake_rep *r = (struct fake_rep *)((char *)dd - offsetof(struct fake_rep, defer));
    r->pending = false;
    if (r->forgotten) {
        free_rep(r);
        return;
    }
    set_state(r, RT_STOPPED);
    void (*done)(struct rt_replica *, void *) = r->done;
    r->done = NULL;
    if (done)
        done(&r->base, r->done_data); /* may forget r: freed at once then */
}

static void fake_stop(struct rt_replica *rr, void (*done)(struct rt_replica *, void *), void *data)
{
    struct fake_rep *r = (struct fake_rep *)rr;
    r->done = done;
    r->done_data = data;
    ev_log("stop", r->name);
    set_state(r, RT_STOPPING);
    if (!r->pending) {
        r->pending = true;
        ev_defer(g_loop, &r->defer, on_stopped); /* never from inside stop */
    }
}

static void fake_restart(struct rt_replica *rr, const char *why)
{
    struct fake_rep *r = (struct fake_rep *)rr;
    ev_log("restart", r->name);
    r->restarts++;
    snprintf(r->last_error, sizeof(r->last_error), "%s", why ? why : "");
    r->started = g_now;
}

static int fake_signal(struct rt_replica *rr, int sig)
{
    (void)rr;
    (void)sig;
    return 0;
}

static void fake_forget(struct rt_replica *rr)
{
    struct fake_rep *r = (struct fake_rep *)rr;
    unlink_rep(&g_reps, r);
    r->forgotten = true;
    if (!r->pending)
        free_rep(r);
}

static int fake_adopt(struct rt_driver *d, struct rt_replica ***out, size_t *n)
{
    *out = xcalloc(16, sizeof(**out));
    *n = 0;
    while (g_survivors && *n < 16) {
        struct fake_rep *r = g_survivors;
        g_survivors = r->next;
        r->base.drv = d;
        r->base.data = NULL;
        r->next = g_reps;
        g_reps = r;
        (*out)[(*n)++] = &r->base;
    }
    return 0;
}

static void fake_inspect(struct rt_replica *rr, struct rt_info *info)
{
    struct fake_rep *r = (struct fake_rep *)rr;
    snprintf(info->name, sizeof(info->name), "%s", r->name);
    info->state = r->state;
    info->restarts = r->restarts;
    info->last_exit_status = -1;
    if (r->state == RT_RUNNING)
        info->uptime_ms = g_now - r->started;
    snprintf(info->last_error, sizeof(info->last_error), "%s", r->last_error);
    snprintf(info->revision, sizeof(info->revision), "%s", r->spec.spec.revision);
}

static void fake_stats(struct rt_replica *rr, double *cpu, uint64_t *rss)
{
    (void)rr;
    *cpu = g_cpu;
    *rss = 1 << 20;
}

static int fake_address(struct rt_replica *rr, char *buf, size_t len)
{
    snprintf(buf, len, "127.0.0.1:%u", ((struct fake_rep *)rr)->spec.spec.port);
    return 0;
}

static int fake_logs_list(struct rt_driver *d, const char *project, const char *service,
                          struct rt_log_ref **out, size_t *n)
{
    (void)d, (void)project, (void)service, (void)out, (void)n;
    return 0;
}

static int fake_logs_tail(struct rt_driver *d, const char *name, size_t n_lines,
                          uint64_t since_wall_ms, char ***lines, size_t *n)
{
    (void)d, (void)n_lines, (void)since_wall_ms;
    *lines = xcalloc(1, sizeof(char *));
    (*lines)[0] = xasprintf("2026-01-01T00:00:00.000Z stderr %s: cannot exec", name);
    *n = 1;
    return 0;
}

static int fake_logs_follow(struct rt_driver *d, const char *name, bool from_start,
                            rt_log_line_cb line, void *data, struct rt_log_follow **out)
{
    (void)d, (void)name, (void)from_start, (void)line, (void)data, (void)out;
    return -ENOTSUP;
}

static void fake_logs_unfollow(struct rt_log_follow *f)
{
    (void)f;
}

/* Named like the driver the configuration asks for (`runtime: process`, the
 * default), so the reconciler's requests reach the fake. */
static const struct rt_driver_ops fake_ops = {
    .name = "process",
    .create = fake_create,
    .destroy = fake_destroy,
    .start = fake_start,
    .stop = fake_stop,
    .restart = fake_restart,
    .signal = fake_signal,
    .forget = fake_forget,
    .adopt = fake_adopt,
    .inspect = fake_inspect,
    .stats = fake_stats,
    .address = fake_address,
    .logs_list = fake_logs_list,
    .logs_tail = fake_logs_tail,
    .logs_follow = fake_logs_follow,
    .logs_unfollow = fake_logs_unfollow,
};
static const struct rt_driver_ops *const fake_table[] = {&fake_ops, NULL};

/* The app of every starting replica has exec'd (or failed to). */
static void fake_settle(void)
{
    for (struct fake_rep *r = g_reps; r; r = r->next) {
        if (r->state != RT_STARTING)
            continue;
        if (g_fail_revision[0] && strcmp(r->spec.spec.revision, g_fail_revision) == 0) {
            snprintf(r->last_error, sizeof(r->last_error), "exec: No such file or directory");
            set_state(r, RT_FAILED);
        } else {
            r->started = g_now;
            set_state(r, RT_RUNNING);
        }
    }
}

/* ---- the harness: a reconciler over the fake driver ---- */

struct h {
    struct ev_loop loop;
    char dir[64];
    struct store *store;
    struct rt *rt;
    struct orch *o;
    /* the last operation's outcome */
    bool final, ok;
    char msg[1024];
};

static void progress(void *data, const char *service, const char *level, const char *message,
                     bool final, bool ok)
{
    struct h *h = data;
    (void)service;
    (void)level;
    if (final) {
        h->final = true;
        h->ok = ok;
        snprintf(h->msg, sizeof(h->msg), "%s", message);
    }
}

static void h_orch(struct h *h)
{
    h->rt = rt_new_with(&h->loop, h->dir, orch_rt_callback(), NULL, fake_table);
    h->o = orch_new(&h->loop, h->rt, NULL, h->store, h->dir);
    orch__set_clock(h->o, fake_clock, NULL);
    orch_resume(h->o);
    ev_timer_stop(&h->loop, &h->o->tick); /* the test ticks */
}

static int h_init(struct h *h)
{
    memset(h, 0, sizeof(*h));
    g_events[0] = g_fail_revision[0] = '\0';
    g_cpu = 0;
    g_now = 1000000;
    g_loop = &h->loop;
    if (ev_loop_init(&h->loop) < 0)
        return -1;
    strcpy(h->dir, "/tmp/tako-orch-XXXXXX");
    if (!mkdtemp(h->dir))
        return -1;
    char path[128], err[256];
    snprintf(path, sizeof(path), "%s/state.db", h->dir);
    h->store = store_sqlite_open(path, err, sizeof(err));
    if (!h->store)
        return -1;
    h_orch(h);
    return 0;
}

/* takod goes away (replicas keep running) */
static void h_takod_exit(struct h *h)
{
    orch_free(h->o);
    rt_free(h->rt);
    ev_run_once(&h->loop, 0);
}

static void h_free(struct h *h)
{
    h_takod_exit(h);
    while (g_survivors) {
        struct fake_rep *r = g_survivors;
        g_survivors = r->next;
        free_rep(r);
    }
    store_close(h->store);
    ev_loop_close(&h->loop);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", h->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", h->dir);
}

/* One step: time passes, apps start, one tick, the loop's deferred work. */
static void h_step(struct h *h, uint64_t ms)
{
    g_now += ms;
    fake_settle();
    orch__tick(h->o);
    ev_run_once(&h->loop, 0);
}

/* Step until the running operation ends (bounded). */
static bool h_run(struct h *h)
{
    for (int i = 0; i < 400 && !h->final; i++)
        h_step(h, ORCH_TICK_MS);
    return h->final;
}

/* Replicas the driver runs (not stopping), and ready ones (ran ≥ 1 s). */
static unsigned alive(void)
{
    unsigned n = 0;
    for (struct fake_rep *r = g_reps; r; r = r->next)
        n += r->state == RT_RUNNING || r->state == RT_STARTING;
    return n;
}

static unsigned serving(const char *revision)
{
    unsigned n = 0;
    for (struct fake_rep *r = g_reps; r; r = r->next)
        n += r->state == RT_RUNNING && g_now - r->started >= 1000 &&
             (!revision || strcmp(r->spec.spec.revision, revision) == 0);
    return n;
}

static const char *service_yaml(unsigned replicas, const char *deploy_extra,
                                const char *replicas_form)
{
    static char buf[1024];
    char rep[256];
    if (replicas_form)
        snprintf(rep, sizeof(rep), "%s", replicas_form);
    else
        snprintf(rep, sizeof(rep), "%u", replicas);
    snprintf(buf, sizeof(buf),
             "project:\n  name: big\nenvironments:\n  local:\n    services:\n      web:\n"
             "        command: /bin/true\n        replicas: %s\n        deploy:\n"
             "          stopGracePeriod: 1s\n%s",
             rep, deploy_extra ? deploy_extra : "");
    return buf;
}

/* Deploy revision rev of the YAML; returns orch_deploy's result. */
static int h_deploy(struct h *h, const char *yaml, const char *rev, char *err, size_t errlen)
{
    struct cfg_diag *diag = cfg_diag_new();
    struct cfg_file *f = cfg_load_buffer("tako.yaml", yaml, strlen(yaml), "/tmp", NULL, diag);
    if (!f) {
        char *t = cfg_diag_text(diag);
        snprintf(err, errlen, "config: %s", t ? t : "?");
        free(t);
        cfg_diag_free(diag);
        return -EINVAL;
    }
    const struct cfg_env *e = cfg_select_env(f, "local", diag);
    json_t *cj = cfg_service_to_json(cfg_env_service(e, "web"));
    struct orch_deploy_item it = {.name = "web", .config = cj, .revision = rev, .source = "/tmp"};
    struct orch_deploy_req req = {.project = "big", .env = "local", .items = &it, .n_items = 1,
                                  .prune = true};
    h->final = false;
    int rc = orch_deploy(h->o, &req, progress, h, err, errlen);
    json_decref(cj);
    cfg_free(f);
    cfg_diag_free(diag);
    return rc;
}

/* h_deploy on one server of several: the deploy body's placement fields
 * as JSON text ("" for none), e.g. first 2, stride 3 and peers b, c. */
static int h_deploy_placed(struct h *h, const char *yaml, const char *rev, const char *item_json,
                           const char *peers_json, char *err, size_t errlen)
{
    struct cfg_diag *diag = cfg_diag_new();
    struct cfg_file *f = cfg_load_buffer("tako.yaml", yaml, strlen(yaml), "/tmp", NULL, diag);
    if (!f) {
        cfg_diag_free(diag);
        return -EINVAL;
    }
    const struct cfg_env *e = cfg_select_env(f, "local", diag);
    json_t *cj = cfg_service_to_json(cfg_env_service(e, "web"));
    json_t *ij = json_loads(item_json, 0, NULL);
    json_t *pj = peers_json ? json_loads(peers_json, 0, NULL) : NULL;
    struct orch_deploy_item it = {.name = "web", .config = cj, .revision = rev, .source = "/tmp",
                                  .slot_first = json_object_get(ij, "slot_first"),
                                  .slot_stride = json_object_get(ij, "slot_stride"),
                                  .peer_replicas = json_object_get(ij, "peer_replicas")};
    struct orch_deploy_req req = {.project = "big", .env = "local", .items = &it, .n_items = 1,
                                  .prune = true, .peers = pj};
    h->final = false;
    int rc = orch_deploy(h->o, &req, progress, h, err, errlen);
    json_decref(ij);
    json_decref(pj);
    json_decref(cj);
    cfg_free(f);
    cfg_diag_free(diag);
    return rc;
}

#define PEERS_BC                                                                                   \
    "{\"listen\": \"127.0.0.2:8190\", \"servers\": [{\"name\": \"b\", \"address\": "          \
    "\"127.0.0.3:8190\"}, {\"name\": \"c\", \"address\": \"127.0.0.4:8190\"}]}"

static int h_scale(struct h *h, int n, char *err, size_t errlen)
{
    json_t *counts = json_pack("{s:i}", "web", n);
    h->final = false;
    int rc = orch_scale(h->o, "big", "local", counts, NULL, NULL, progress, h, err, errlen);
    json_decref(counts);
    return rc;
}

/* The events recorded since the last call, then cleared. */
static const char *events_take(void)
{
    static char out[sizeof(g_events)];
    snprintf(out, sizeof(out), "%s", g_events);
    g_events[0] = '\0';
    return out;
}

/* ---- tests ---- */

TEST(first_deploy_starts_every_slot_and_converges)
{
    struct h h;
    CHECK_INT(h_init(&h), 0);
    char err[256];
    CHECK_INT(h_deploy(&h, service_yaml(3, NULL, NULL), "a", err, sizeof(err)), 0);
    CHECK(h_run(&h));
    CHECK(h.ok);
    CHECK_STR(events_take(), "start big-web-1,start big-web-2,start big-web-3");
    CHECK_INT(serving("a"), 3);
    /* Converged: more ticks change nothing. */
    for (int i = 0; i < 20; i++)
        h_step(&h, ORCH_TICK_MS);
    CHECK_STR(events_take(), "");
    h_free(&h);
}

TEST(rolling_update_surge_1_unavailable_0_keeps_capacity_and_ends_on_slots_1_to_n)
{
    struct h h;
    CHECK_INT(h_init(&h), 0);
    char err[256];
    const char *d = "          maxSurge: 1\n          maxUnavailable: 0\n";
    CHECK_INT(h_deploy(&h, service_yaml(3, d, NULL), "a", err, sizeof(err)), 0);
    CHECK(h_run(&h) && h.ok);
    events_take();
    CHECK_INT(h_deploy(&h, service_yaml(3, d, NULL), "b", err, sizeof(err)), 0);
    unsigned min_serving = 99, max_alive = 0;
    for (int i = 0; i < 400 && !h.final; i++) {
        h_step(&h, ORCH_TICK_MS);
        unsigned sv = serving(NULL), al = alive();
        min_serving = sv < min_serving ? sv : min_serving;
        max_alive = al > max_alive ? al : max_alive;
    }
    CHECK(h.final && h.ok);
    /* The surge replica first, then each slot in turn, the surge one last. */
    CHECK_STR(events_take(), "start big-web-4,stop big-web-1,start big-web-1,stop big-web-2,"
                             "start big-web-2,stop big-web-3,start big-web-3,stop big-web-4");
    CHECK_INT(min_serving, 3); /* never below replicas - maxUnavailable */
    CHECK_INT(max_alive, 4);   /* never above replicas + maxSurge */
    CHECK_INT(serving("b"), 3);
    CHECK_INT(alive(), 3);
    h_free(&h);
}

TEST(rolling_update_surge_0_unavailable_1_never_starts_a_fourth)
{
    struct h h;
    CHECK_INT(h_init(&h), 0);
    char err[256];
    const char *d = "          maxSurge: 0\n          maxUnavailable: 1\n";
    CHECK_INT(h_deploy(&h, service_yaml(3, d, NULL), "a", err, sizeof(err)), 0);
    CHECK(h_run(&h) && h.ok);
    events_take();
    CHECK_INT(h_deploy(&h, service_yaml(3, d, NULL), "b", err, sizeof(err)), 0);
    unsigned min_serving = 99, max_alive = 0;
    for (int i = 0; i < 400 && !h.final; i++) {
        h_step(&h, ORCH_TICK_MS);
        unsigned sv = serving(NULL), al = alive();
        min_serving = sv < min_serving ? sv : min_serving;
        max_alive = al > max_alive ? al : max_alive;
    }
    CHECK(h.final && h.ok);
    CHECK_STR(events_take(), "stop big-web-1,start big-web-1,stop big-web-2,start big-web-2,"
                             "stop big-web-3,start big-web-3");
    CHECK_INT(min_serving, 2);
    CHECK_INT(max_alive, 3);
    CHECK_INT(serving("b"), 3);
    h_free(&h);
}

TEST(a_revision_that_fails_fails_the_deploy_and_rolls_back)
{
    struct h h;
    CHECK_INT(h_init(&h), 0);
    char err[256];
    CHECK_INT(h_deploy(&h, service_yaml(3, NULL, NULL), "a", err, sizeof(err)), 0);
    CHECK(h_run(&h) && h.ok);
    events_take();
    snprintf(g_fail_revision, sizeof(g_fail_revision), "b");
    CHECK_INT(h_deploy(&h, service_yaml(3, NULL, NULL), "b", err, sizeof(err)), 0);
    CHECK(h_run(&h));
    CHECK(!h.ok);
    CHECK_CONTAINS(h.msg, "big-web-4 of revision b failed: exec: No such file or directory");
    CHECK_CONTAINS(h.msg, "rolled back to the previous revision");
    /* Only the surge replica of b was tried; the old ones never stopped. */
    CHECK_STR(events_take(), "start big-web-4,stop big-web-4");
    CHECK_INT(serving("a"), 3);
    CHECK_INT(alive(), 3);
    /* The history says so. */
    struct store_result r = {0};
    store_history_list(h.store, "big", NULL, 10, store_keep_json, &r);
    CHECK_STR(json_string_value(json_object_get(json_array_get(r.json, 0), "status")),
              "rolled-back");
    store_result_clear(&r);
    h_free(&h);
}

TEST(scale_up_fills_slots_in_order_and_scale_down_drains_the_highest_first)
{
    struct h h;
    CHECK_INT(h_init(&h), 0);
    char err[256];
    CHECK_INT(h_deploy(&h, service_yaml(2, NULL, NULL), "a", err, sizeof(err)), 0);
    CHECK(h_run(&h) && h.ok);
    events_take();
    CHECK_INT(h_scale(&h, 5, err, sizeof(err)), 0);
    CHECK(h_run(&h) && h.ok);
    CHECK_STR(events_take(), "start big-web-3,start big-web-4,start big-web-5");
    CHECK_INT(serving("a"), 5);
    CHECK_INT(h_scale(&h, 2, err, sizeof(err)), 0);
    CHECK(h_run(&h) && h.ok);
    CHECK_STR(events_take(), "stop big-web-5,stop big-web-4,stop big-web-3");
    CHECK_INT(alive(), 2);
    /* The limit is the configuration's. */
    CHECK_INT(h_scale(&h, CFG_MAX_REPLICAS + 1, err, sizeof(err)), -EINVAL);
    CHECK_CONTAINS(err, "from 0 to 1000 (the limit per service)");
    h_free(&h);
}

TEST(one_operation_per_project_through_the_store_lease)
{
    struct h h;
    CHECK_INT(h_init(&h), 0);
    char err[256];
    CHECK_INT(h_deploy(&h, service_yaml(2, NULL, NULL), "a", err, sizeof(err)), 0);
    /* While it runs, a second operation of the project is refused… */
    struct h other = h;
    CHECK_INT(h_scale(&other, 3, err, sizeof(err)), -EBUSY);
    CHECK_CONTAINS(err, "a deploy of project big is in progress");
    /* …and the lease is the store's: another writer sees it too. */
    struct store_result r = {0};
    store_lock(h.store, "project/big", "someone-else", "scale", 60000, store_keep_lease, &r);
    CHECK_INT(r.rc, -EBUSY);
    CHECK_STR(r.lease.info, "deploy");
    CHECK(h_run(&h) && h.ok);
    /* Released at the end. */
    memset(&r, 0, sizeof(r));
    store_lock(h.store, "project/big", "someone-else", "scale", 60000, store_keep_lease, &r);
    CHECK_INT(r.rc, 0);
    store_unlock(h.store, "project/big", "someone-else", NULL, NULL);
    h_free(&h);
}

TEST(takod_restart_adopts_running_replicas_and_stops_orphans)
{
    struct h h;
    CHECK_INT(h_init(&h), 0);
    char err[256];
    CHECK_INT(h_deploy(&h, service_yaml(3, NULL, NULL), "a", err, sizeof(err)), 0);
    CHECK(h_run(&h) && h.ok);
    h_takod_exit(&h);
    /* A replica of a service nobody deployed is running too. */
    char *argv[] = {(char *)"/bin/true", NULL};
    struct rt_spec orphan = {.project = "big", .service = "gone", .index = 1, .revision = "x",
                             .argv = argv};
    struct fake_rep *o = new_rep(NULL, &orphan, "big-gone-1");
    g_reps = o->next; /* not a handle of any rt: a survivor */
    o->next = g_survivors;
    o->state = RT_RUNNING;
    o->started = g_now;
    g_survivors = o;
    events_take();

    h_orch(&h); /* the next takod */
    for (int i = 0; i < 30; i++)
        h_step(&h, ORCH_TICK_MS);
    /* No replica of web started again; the orphan was stopped. */
    CHECK_STR(events_take(), "stop big-gone-1");
    CHECK_INT(serving("a"), 3);
    json_t *ps = orch_ps(h.o, "big", NULL, "web");
    json_t *svc = json_array_get(json_object_get(ps, "services"), 0);
    if (!svc)
        svc = json_array_get(ps, 0);
    CHECK_INT(json_integer_value(json_object_get(svc, "running")), 3);
    json_decref(ps);
    h_free(&h);
}

TEST(autoscale_follows_cpu_with_its_step_limits)
{
    struct h h;
    CHECK_INT(h_init(&h), 0);
    char err[256];
    const char *as = "{min: 1, max: 4, cpu: 50%, interval: 1s, scaleUpStabilization: 0s, "
                     "scaleDownStabilization: 0s}";
    CHECK_INT(h_deploy(&h, service_yaml(0, NULL, as), "a", err, sizeof(err)), 0);
    CHECK(h_run(&h) && h.ok);
    CHECK_STR(events_take(), "start big-web-1");
    /* Twice the target: 1 → 2, then 2 → 4 (max). */
    g_cpu = 100;
    for (int i = 0; i < 60 && alive() < 4; i++)
        h_step(&h, ORCH_TICK_MS);
    CHECK_STR(events_take(), "start big-web-2,start big-web-3,start big-web-4");
    for (int i = 0; i < 30; i++)
        h_step(&h, ORCH_TICK_MS);
    CHECK_INT(alive(), 4); /* max holds */
    CHECK_STR(events_take(), "");
    /* A fifth of the target: down by at most half per step, highest first. */
    g_cpu = 10;
    for (int i = 0; i < 60 && alive() > 1; i++)
        h_step(&h, ORCH_TICK_MS);
    CHECK_STR(events_take(), "stop big-web-4,stop big-web-3,stop big-web-2");
    CHECK_INT(alive(), 1); /* min holds */
    h_free(&h);
}

TEST(bug_on_stops_the_process_naming_the_place)
{
    int p[2];
    CHECK_INT(pipe(p), 0);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        dup2(p[1], 2);
        int broken = 1;
        BUG_ON(broken == 1);
        _exit(0); /* not reached */
    }
    close(p[1]);
    char buf[256] = "";
    ssize_t n = read(p[0], buf, sizeof(buf) - 1);
    close(p[0]);
    buf[n > 0 ? n : 0] = '\0';
    int st;
    CHECK_INT(waitpid(pid, &st, 0), pid);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT);
    CHECK_CONTAINS(buf, "BUG at tests/unit/test_orch.c:");
    CHECK_CONTAINS(buf, ": broken == 1");
    /* A condition that holds costs a branch and nothing else. */
    BUG_ON(n <= 0);
}

/* ---- several servers per environment: the slot rule ---- */

TEST(replicas_are_named_by_slot_first_and_stride_also_surge_and_scale)
{
    struct h h;
    CHECK_INT(h_init(&h), 0);
    char err[256];
    const char *d = "          maxSurge: 1\n          maxUnavailable: 0\n";
    /* 5 over [a, b, c]: this is b, which runs -2 and -5. */
    const char *item = "{\"slot_first\": 2, \"slot_stride\": 3, \"peer_replicas\": {\"b\": 2, \"c\": 1}}";
    CHECK_INT(h_deploy_placed(&h, service_yaml(2, d, NULL), "a", item, PEERS_BC, err, sizeof(err)),
              0);
    CHECK(h_run(&h) && h.ok);
    CHECK_STR(events_take(), "start big-web-2,start big-web-5");
    /* A rolling update's surge replica is local index 3: slot 8. */
    CHECK_INT(h_deploy_placed(&h, service_yaml(2, d, NULL), "b", item, PEERS_BC, err, sizeof(err)),
              0);
    CHECK(h_run(&h) && h.ok);
    const char *ev = events_take();
    CHECK(strncmp(ev, "start big-web-8,", 16) == 0);
    CHECK_CONTAINS(ev, "stop big-web-2");
    CHECK_CONTAINS(ev, "stop big-web-8");
    CHECK_INT(serving("b"), 2);
    /* Scale: local 3 is slot 8, and back down drains it. */
    CHECK_INT(h_scale(&h, 3, err, sizeof(err)), 0);
    CHECK(h_run(&h) && h.ok);
    CHECK_STR(events_take(), "start big-web-8");
    CHECK_INT(h_scale(&h, 2, err, sizeof(err)), 0);
    CHECK(h_run(&h) && h.ok);
    CHECK_STR(events_take(), "stop big-web-8");
    /* ps shows the number in the name. */
    json_t *ps = orch_ps(h.o, "big", NULL, "web");
    char *txt = json_dumps(ps, JSON_COMPACT);
    CHECK_CONTAINS(txt, "big-web-5");
    free(txt);
    json_decref(ps);
    h_free(&h);
}

TEST(a_service_with_no_local_replica_exists_and_converges)
{
    struct h h;
    CHECK_INT(h_init(&h), 0);
    char err[256];
    const char *item = "{\"slot_first\": 3, \"slot_stride\": 3, \"peer_replicas\": {\"b\": 1, \"c\": 1}}";
    CHECK_INT(h_deploy_placed(&h, service_yaml(0, NULL, NULL), "a", item, PEERS_BC, err,
                              sizeof(err)),
              0);
    CHECK(h_run(&h) && h.ok);
    CHECK_STR(events_take(), "");
    struct orch_service *s = orch__svc_find(h.o, "big", "web");
    CHECK(s != NULL);
    CHECK_INT(s->npeers, 2);
    CHECK_INT(s->peers[0].replicas, 1);
    CHECK_STR(s->peer_listen, "127.0.0.2:8190");
    /* Scaling it up here later starts slot 3. */
    CHECK_INT(h_scale(&h, 1, err, sizeof(err)), 0);
    CHECK(h_run(&h) && h.ok);
    CHECK_STR(events_take(), "start big-web-3");
    h_free(&h);
}

TEST(takod_restart_keeps_slot_names_and_peers_from_the_store)
{
    struct h h;
    CHECK_INT(h_init(&h), 0);
    char err[256];
    const char *item = "{\"slot_first\": 2, \"slot_stride\": 3, \"peer_replicas\": {\"b\": 2}}";
    CHECK_INT(h_deploy_placed(&h, service_yaml(2, NULL, NULL), "a", item, PEERS_BC, err,
                              sizeof(err)),
              0);
    CHECK(h_run(&h) && h.ok);
    events_take();
    h_takod_exit(&h);
    h_orch(&h); /* the next takod: names → local indexes 1 and 2 */
    for (int i = 0; i < 30; i++)
        h_step(&h, ORCH_TICK_MS);
    CHECK_STR(events_take(), "");
    struct orch_service *s = orch__svc_find(h.o, "big", "web");
    CHECK(s != NULL);
    CHECK_INT(s->slot_first, 2);
    CHECK_INT(s->slot_stride, 3);
    CHECK_INT(s->npeers, 2);
    CHECK_STR(s->peers[0].name, "b");
    CHECK_INT(s->peers[0].replicas, 2);
    CHECK_INT(s->peers[1].replicas, 0);
    CHECK(s->replicas && s->replicas->index == 1 && s->replicas->slot == 2);
    CHECK(s->replicas->next && s->replicas->next->index == 2 && s->replicas->next->slot == 5);
    /* The same deploy again changes nothing. */
    CHECK_INT(h_deploy_placed(&h, service_yaml(2, NULL, NULL), "a", item, PEERS_BC, err,
                              sizeof(err)),
              1);
    /* Scale up after the restart continues the rule; peer counts change. */
    json_t *counts = json_pack("{s:i}", "web", 3);
    json_t *pr = json_pack("{s:{s:i, s:i}}", "web", "b", 3, "c", 1);
    h.final = false;
    CHECK_INT(orch_scale(h.o, "big", "local", counts, pr, NULL, progress, &h, err, sizeof(err)), 0);
    json_decref(counts);
    json_decref(pr);
    CHECK(h_run(&h) && h.ok);
    CHECK_STR(events_take(), "start big-web-8");
    CHECK_INT(s->peers[0].replicas, 3);
    CHECK_INT(s->peers[1].replicas, 1);
    h_free(&h);
}

TEST(a_new_slot_rule_keeps_replicas_it_still_names_and_replaces_the_others)
{
    struct h h;
    CHECK_INT(h_init(&h), 0);
    char err[256];
    CHECK_INT(h_deploy(&h, service_yaml(3, NULL, NULL), "a", err, sizeof(err)), 0);
    CHECK(h_run(&h) && h.ok);
    events_take();
    /* A second server joins: this one now runs slots 1, 3, 5. */
    const char *item = "{\"slot_first\": 1, \"slot_stride\": 2, \"peer_replicas\": {\"b\": 3}}";
    CHECK_INT(h_deploy_placed(&h, service_yaml(3, NULL, NULL), "a", item, PEERS_BC, err,
                              sizeof(err)),
              0);
    CHECK(h_run(&h) && h.ok);
    CHECK_STR(events_take(), "start big-web-5,stop big-web-2");
    CHECK_INT(serving("a"), 3);
    h_free(&h);
}

TEST(bad_placement_fields_are_refused_naming_the_field)
{
    struct h h;
    CHECK_INT(h_init(&h), 0);
    char err[256];
    CHECK_INT(h_deploy_placed(&h, service_yaml(2, NULL, NULL), "a", "{\"slot_first\": 0}", NULL,
                              err, sizeof(err)),
              -EINVAL);
    CHECK_CONTAINS(err, "services.web.slot_first: must be an integer from 1");
    CHECK_INT(h_deploy_placed(&h, service_yaml(2, NULL, NULL), "a",
                              "{\"peer_replicas\": {\"x\": 1}}", PEERS_BC, err, sizeof(err)),
              -EINVAL);
    CHECK_CONTAINS(err, "services.web.peer_replicas.x: no server x in peers.servers");
    CHECK_INT(h_deploy_placed(&h, service_yaml(2, NULL, NULL), "a", "{}",
                              "{\"listen\": \"127.0.0.2:8190\", \"servers\": [{\"name\": \"b\", "
                              "\"address\": \"db.internal:8190\"}]}",
                              err, sizeof(err)),
              -EINVAL);
    CHECK_CONTAINS(err, "peers.servers[0].address (server b): a numeric ADDR:PORT is needed");
    CHECK_STR(events_take(), "");
    CHECK(orch__svc_find(h.o, "big", "web") == NULL);
    h_free(&h);
}
