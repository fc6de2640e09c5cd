/* rt_docker.c — the Docker driver: each replica is a container named
 * "<project>-<service>-<n>" (hostname too), made from the service's image
 * or from an image built out of its build directory, tagged
 * "<project>-<service>:<revision>", on host networking with its own PORT.
 *
 * Every Engine API call is blocking (docker_api.c), so calls run on short
 * worker threads; their results come back to takod's loop through one
 * eventfd and a queue ("hub"), where the state machine lives. Container
 * exits are learnt from one label-filtered events stream (one thread for
 * all replicas), never by polling each replica. Docker's own restart policy
 * is "no": restarts and backoff are tako's (rt__policy), as for processes.
 *
 * The hub outlives the driver while workers still run: a worker that
 * finishes after takod freed the driver posts into a dead hub and is
 * dropped; the last reference frees it.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "core/ev.h"
#include "core/log.h"
#include "core/util.h"
#include "runtime/docker_api.h"
#include "runtime/rt_driver.h"
#include "runtime/rt_internal.h"
#include "runtime/rt_docker.h"

#define STATS_MIN_MS 5000   /* one stats sweep at most this often, only when asked */
#define STATS_PAR 32        /* stats calls of one sweep made at a time */
#define LABEL_RUNTIME "tako.runtime=docker"
#define FOLLOW_RETRY_MS 300

static int docker_prune(struct dk_client *c, const char *project, const char *service,
                        const char *keep_revision, unsigned keep, bool all, char *err,
                        size_t errlen);
static void on_stats_timer(struct ev_loop *loop, struct ev_timer *t);

/* ---- the hub: results from worker threads to the loop ---- */

enum msg_kind {
    M_LAUNCHED, /* a container was made and started (or failed) */
    M_STOPPED,  /* stop + remove finished */
    M_DIED,     /* a container of ours exited (events stream + inspect) */
    M_NOTE,     /* a build progress line */
    M_STATS,    /* one replica's sample */
    M_STATS_DONE,
    M_LOG,      /* a followed log line */
    M_FOLLOW_END,
    M_STREAM,   /* the events stream went down (rc < 0) or came back (rc 0) */
};

struct msg {
    struct msg *next;
    enum msg_kind kind;
    char name[RT_NAME_MAX];
    unsigned long gen;
    int rc;
    char *text; /* error, note or log line (heap) */
    char id[72];
    pid_t pid;
    int exit_code;
    bool oom;
    bool dead; /* M_LAUNCHED: the container had exited already when looked at */
    uint64_t started_wall;
    struct dk_stats st;
    struct dk_follow *fol;
};

struct hub {
    pthread_mutex_t mu;
    int refs;
    bool dead;
    int efd;
    struct msg *head, *tail;
    struct dk_client *cli;
    pthread_mutex_t build_mu; /* one build at a time: replicas of one revision share it */
    /* builds finished (read under mu, written under both) and the last
     * failure (under build_mu): replicas that waited for a build share its
     * outcome instead of building again */
    unsigned long builds_done, failed_at;
    char failed_tag[512];
    char *failed_err;
    /* pulls finished (read under mu, written under both) and the last one's
     * outcome (under build_mu): replicas that waited for a pull of the same
     * image share it instead of pulling again */
    unsigned long pulls_done;
    char pull_ref[512];
    int pull_rc;
    char *pull_err;
    char sock[108];
};

static void hub_unref(struct hub *h)
{
    pthread_mutex_lock(&h->mu);
    bool last = --h->refs == 0;
    pthread_mutex_unlock(&h->mu);
    if (!last)
        return;
    for (struct msg *m = h->head, *n; m; m = n) {
        n = m->next;
        free(m->text);
        free(m);
    }
    if (h->efd >= 0)
        close(h->efd);
    dk_close(h->cli);
    free(h->failed_err);
    free(h->pull_err);
    pthread_mutex_destroy(&h->mu);
    pthread_mutex_destroy(&h->build_mu);
    free(h);
}

static void hub_post(struct hub *h, struct msg *m)
{
    pthread_mutex_lock(&h->mu);
    if (h->dead) {
        pthread_mutex_unlock(&h->mu);
        free(m->text);
        free(m);
        return;
    }
    m->next = NULL;
    if (h->tail)
        h->tail->next = m;
    else
        h->head = m;
    h->tail = m;
    pthread_mutex_unlock(&h->mu);
    uint64_t one = 1;
    ssize_t w = write(h->efd, &one, sizeof(one));
    (void)w;
}

/* ---- driver and replica ---- */

struct dk_rep {
    struct rt_replica base;
    struct dk_drv *d;
    struct dk_rep *next;
    char name[RT_NAME_MAX];
    struct rt__owned_spec spec;
    enum rt_state state;
    char id[72];
    pid_t pid;
    unsigned restarts, consecutive;
    int last_exit_status;
    uint64_t started_wall, started_mono;
    char last_error[256];
    char *build_log; /* the failed build's last lines: shown as its logs */
    uint64_t backoff_ms;
    struct ev_timer backoff_timer;
    unsigned long gen; /* bumped per launch/stop: stale results are dropped */
    bool launching, stopping_job;
    bool launched_once; /* a container was asked for before: later launches are restarts */
    char died_early[72]; /* a die event that came before the launch result */
    bool want_stop, want_restart;
    void (*done)(struct rt_replica *, void *);
    void *done_data;
    struct ev_defer free_defer;
    bool forgotten;
    /* stats */
    double cpu;
    uint64_t mem;
    /* CPU time: containers that ended (their last sample) + the current
     * one's last sample; born names this account (saved with the spec, so
     * it outlives takod restarts) */
    uint64_t cpu_base_ns, cpu_cur_ns, born_ms;
    struct dk_stats last;
    bool have_last, stats_wanted;
};

struct dk_drv {
    struct rt_driver base;
    struct ev_loop *loop;
    const char *state_dir;
    struct hub *hub;
    struct ev_io efd_io;
    struct dk_rep *replicas;
    pthread_t ev_thread;
    volatile bool ev_stop;
    bool ev_started;
    bool stream_down;
    uint64_t stats_mono;
    bool stats_busy;
    struct ev_timer stats_timer; /* starts a sweep on the next loop pass */
    struct pruned {
        char service[140], revision[64];
        struct pruned *next;
    } *pruned; /* the revision each built service was last pruned for */
};

#define DD(d) ((struct dk_drv *)(d))
#define DR(r) ((struct dk_rep *)(r))

static struct dk_rep *find(struct dk_drv *d, const char *name)
{
    for (struct dk_rep *r = d->replicas; r; r = r->next)
        if (strcmp(r->name, name) == 0)
            return r;
    return NULL;
}

static void set_state(struct dk_rep *r, enum rt_state s)
{
    enum rt_state old = r->state;
    r->state = s;
    if (old != s)
        rt__emit(&r->base, old, s);
}

static char *spec_path(struct dk_drv *d, const char *name)
{
    return xasprintf("%s/docker/%s.json", d->state_dir, name);
}

static void save_spec(struct dk_rep *r)
{
    char *dir = xasprintf("%s/docker", r->d->state_dir);
    mkdir(dir, 0700);
    free(dir);
    char *p = spec_path(r->d, r->name);
    json_t *ds = json_pack("{s:I, s:I}", "born_ms", (json_int_t)r->born_ms, "cpu_base_ns",
                           (json_int_t)r->cpu_base_ns);
    int rc = rt__spec_save_ex(p, &r->spec.spec, r->restarts, r->consecutive, ds);
    json_decref(ds);
    if (rc < 0)
        log_warn("replica %s: cannot save %s", r->name, p);
    free(p);
}

/* ---- worker threads ---- */

struct job {
    struct hub *hub;
    enum { J_LAUNCH, J_STOP, J_DIED, J_STATS, J_SIGNAL, J_FOLLOW, J_PRUNE } kind;
    char name[RT_NAME_MAX];
    unsigned long gen;
    struct rt__owned_spec spec; /* J_LAUNCH */
    bool first; /* J_LAUNCH: the replica's first container (a deploy, a scale), not a restart */
    char id[72];
    unsigned grace_s;
    int sig;
    /* J_STATS: names and ids */
    char (*names)[RT_NAME_MAX];
    char (*ids)[72];
    size_t n;
    struct dk_follow *fol;
};

static void *job_main(void *arg);

static void run_job(struct dk_drv *d, struct job *j)
{
    j->hub = d->hub;
    pthread_mutex_lock(&d->hub->mu);
    d->hub->refs++;
    pthread_mutex_unlock(&d->hub->mu);
    pthread_t t;
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&a, 256 * 1024);
    if (pthread_create(&t, &a, job_main, j) != 0) {
        /* no thread: run it here (rare; blocks the loop for one call) */
        job_main(j);
    }
    pthread_attr_destroy(&a);
}

static struct msg *new_msg(enum msg_kind k, const char *name, unsigned long gen)
{
    struct msg *m = xcalloc(1, sizeof(*m));
    m->kind = k;
    snprintf(m->name, sizeof(m->name), "%s", name ? name : "");
    m->gen = gen;
    return m;
}

struct note_ctx {
    struct hub *hub;
    const char *name;
    unsigned long gen;
};

static void on_build_line(void *data, const char *line)
{
    struct note_ctx *c = data;
    struct msg *m = new_msg(M_NOTE, c->name, c->gen);
    m->text = xstrdup(line);
    hub_post(c->hub, m);
}

static uint64_t parse_docker_time(const char *s)
{
    /* "2026-12-03T09:27:13.099123456Z" → wall ms */
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    unsigned ms = 0;
    if (!s || sscanf(s, "%d-%d-%dT%d:%d:%d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
                     &tm.tm_min, &tm.tm_sec) != 6)
        return 0;
    const char *dot = strchr(s, '.');
    if (dot) {
        unsigned k = 0;
        for (const char *p = dot + 1; *p >= '0' && *p <= '9' && k < 3; p++, k++)
            ms = ms * 10 + (unsigned)(*p - '0');
        while (k++ < 3)
            ms *= 10;
    }
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    time_t t = timegm(&tm);
    if (t <= 0)
        return 0;
    return (uint64_t)t * 1000 + ms;
}

/* image: NAME[:TAG] is pulled by this rule (docs/runtime.md "Pulling"):
 * a tag that moves (none, or "latest") at every start of a replica, any
 * other tag or a digest only when the engine lacks it. A failed pull fails
 * the replica's first start (so the deploy, naming the registry's error);
 * a restart after a crash runs the local copy when there is one, so a
 * registry that is down does not stop a replica that ran from coming back. */
static int ensure_pulled(struct job *j, const char *image, char *err, size_t errlen)
{
    struct dk_client *c = j->hub->cli;
    struct hub *h = j->hub;
    bool floating = dk_ref_floating(image);
    json_t *info = NULL;
    int rc = dk_image_inspect(c, image, &info, err, errlen);
    json_decref(info);
    if (rc < 0 && rc != -ENOENT)
        return rc;
    bool present = rc == 0;
    if (present && !floating)
        return 0;
    pthread_mutex_lock(&h->mu);
    unsigned long seen = h->pulls_done;
    pthread_mutex_unlock(&h->mu);
    pthread_mutex_lock(&h->build_mu);
    if (h->pulls_done > seen && strcmp(h->pull_ref, image) == 0) {
        /* a pull of this image ended while this one waited: its outcome */
        rc = h->pull_rc;
        if (rc < 0)
            snprintf(err, errlen, "%s", h->pull_err ? h->pull_err : "the pull failed");
    } else {
        info = NULL;
        if (!floating && dk_image_inspect(c, image, &info, NULL, 0) == 0) {
            rc = 0; /* another replica pulled it meanwhile */
        } else {
            struct note_ctx nc = {.hub = h, .name = j->name, .gen = j->gen};
            char *auth = NULL;
            char aerr[256] = "";
            if (dk_auth_for(image, &auth, aerr, sizeof(aerr)) < 0)
                log_warn("docker: %s", aerr);
            rc = dk_image_pull(c, image, auth, on_build_line, &nc, err, errlen);
            free(auth);
            pthread_mutex_lock(&h->mu);
            h->pulls_done++;
            pthread_mutex_unlock(&h->mu);
            snprintf(h->pull_ref, sizeof(h->pull_ref), "%s", image);
            h->pull_rc = rc;
            free(h->pull_err);
            h->pull_err = rc < 0 ? xstrdup(err) : NULL;
        }
        json_decref(info);
    }
    pthread_mutex_unlock(&h->build_mu);
    if (rc < 0 && rc != -EHOSTDOWN && present && !j->first) {
        log_warn("replica %s: %s; restarting it from the local copy of %s", j->name, err, image);
        rc = 0;
    }
    return rc;
}

static int ensure_image(struct job *j, char *image, size_t ilen, char *err, size_t errlen)
{
    struct dk_client *c = j->hub->cli;
    const struct rt_spec *s = &j->spec.spec;
    json_t *info = NULL;
    if (s->image) {
        snprintf(image, ilen, "%s", s->image);
        return ensure_pulled(j, s->image, err, errlen);
    }
    snprintf(image, ilen, "%s-%s:%s", s->project, s->service,
             s->revision && *s->revision ? s->revision : "latest");
    int rc = dk_image_inspect(c, image, &info, err, errlen);
    json_decref(info);
    if (rc != -ENOENT)
        return rc;
    struct hub *h = j->hub;
    pthread_mutex_lock(&h->mu);
    unsigned long seen = h->builds_done;
    pthread_mutex_unlock(&h->mu);
    /* a build that ends after this point was waited for */
    pthread_mutex_lock(&h->build_mu);
    if (h->failed_at > seen && strcmp(h->failed_tag, image) == 0) {
        snprintf(err, errlen, "%s", h->failed_err ? h->failed_err : "the build failed");
        pthread_mutex_unlock(&h->build_mu);
        return -EIO;
    }
    info = NULL;
    rc = dk_image_inspect(c, image, &info, err, errlen); /* another replica built it meanwhile */
    json_decref(info);
    if (rc == -ENOENT) {
        struct note_ctx nc = {.hub = j->hub, .name = j->name, .gen = j->gen};
        const char *labels[] = {"tako.project", s->project, "tako.service", s->service,
                                "tako.revision", s->revision ? s->revision : "", NULL};
        struct dk_build_opts o = {.dir = s->build_dir ? s->build_dir : ".",
                                  .tag = image,
                                  .label_kv = labels,
                                  .progress = on_build_line,
                                  .data = &nc};
        rc = dk_build(c, &o, NULL, 0, err, errlen);
        pthread_mutex_lock(&h->mu);
        h->builds_done++;
        pthread_mutex_unlock(&h->mu);
        if (rc < 0) {
            h->failed_at = h->builds_done;
            snprintf(h->failed_tag, sizeof(h->failed_tag), "%s", image);
            free(h->failed_err);
            h->failed_err = xstrdup(err);
        }
    }
    pthread_mutex_unlock(&h->build_mu);
    return rc;
}

static void job_launch(struct job *j)
{
    struct dk_client *c = j->hub->cli;
    const struct rt_spec *s = &j->spec.spec;
    struct msg *m = new_msg(M_LAUNCHED, j->name, j->gen);
    char err[4096] = "";
    char image[512];
    int rc = ensure_image(j, image, sizeof(image), err, sizeof(err));
    bool want_bridge = s->network && strcmp(s->network, "bridge") == 0;
    if (rc == 0 && want_bridge) {
        /* without it Docker would run the container with no network at all */
        json_t *net = NULL;
        rc = dk_network_inspect(c, "bridge", &net, err, sizeof(err));
        json_decref(net);
        if (rc == -ENOENT)
            snprintf(err, sizeof(err),
                     "network: bridge: the Docker engine at unix://%s has no bridge network "
                     "(dockerd --bridge=none?); use network: host",
                     dk_socket(c));
    }
    if (rc == 0 && !(s->argv && s->argv[0])) {
        /* nothing to run: say so before Docker's "No command specified" */
        json_t *img = NULL;
        if (dk_image_inspect(c, image, &img, NULL, 0) == 0) {
            json_t *cfg = json_object_get(img, "Config");
            if (json_array_size(json_object_get(cfg, "Cmd")) == 0 &&
                json_array_size(json_object_get(cfg, "Entrypoint")) == 0) {
                snprintf(err, sizeof(err),
                         "image %s has no CMD or ENTRYPOINT and the service no command: nothing "
                         "to run (add command: to tako.yaml, or CMD to the Dockerfile)",
                         image);
                rc = -EINVAL;
            }
        }
        json_decref(img);
    }
    if (rc == 0) {
        /* a container of the same name left over (exited, or made by a
         * takod that died mid-start) holds the name: it goes */
        json_t *old = NULL;
        if (dk_container_inspect(c, j->name, &old, NULL, 0) == 0)
            dk_container_remove(c, j->name, true, NULL, 0);
        json_decref(old);
        /* host network: the app listens on the replica's own port; bridge:
         * on the service's port in its own network, published on
         * 127.0.0.1:<the replica's port> */
        bool bridge = s->network && strcmp(s->network, "bridge") == 0;
        char port[16], app_port[16], idx[16];
        snprintf(port, sizeof(port), "%u", s->port);
        snprintf(app_port, sizeof(app_port), "%u", bridge ? s->app_port : s->port);
        snprintf(idx, sizeof(idx), "%u", s->index);
        size_t ne = 0;
        const char **env = xcalloc(s->env_len + 8, sizeof(*env));
        char **own = xcalloc(s->env_len + 8, sizeof(*own));
        for (size_t i = 0; i < s->env_len; i++)
            env[ne] = own[ne] = xasprintf("%s=%s", s->env[i].key, s->env[i].value), ne++;
        env[ne] = own[ne] = xasprintf("PORT=%s", app_port), ne++;
        env[ne] = own[ne] = xasprintf("TAKO_PROJECT=%s", s->project), ne++;
        env[ne] = own[ne] = xasprintf("TAKO_SERVICE=%s", s->service), ne++;
        env[ne] = own[ne] = xasprintf("TAKO_REPLICA=%s", idx), ne++;
        env[ne] = own[ne] = xasprintf("TAKO_REVISION=%s", s->revision ? s->revision : ""), ne++;
        const char *labels[] = {"tako.project", s->project,
                                "tako.env", s->environment ? s->environment : "",
                                "tako.service", s->service,
                                "tako.revision", s->revision ? s->revision : "",
                                "tako.slot", idx,
                                "tako.runtime", "docker",
                                "tako.port", port,
                                NULL};
        struct dk_create o = {
            .name = j->name,
            .hostname = j->name,
            .image = image,
            .cmd = s->argv && s->argv[0] ? s->argv : NULL,
            .env = env,
            .label_kv = labels,
            .host_network = !bridge,
            .publish_host_port = bridge ? s->port : 0,
            .container_port = bridge ? s->app_port : 0,
            .stop_timeout_s = (unsigned)((s->stop_grace_ms + 999) / 1000),
        };
        rc = dk_container_create(c, &o, m->id, err, sizeof(err));
        for (size_t i = 0; i < ne; i++)
            free(own[i]);
        free(own);
        free(env);
        if (rc == 0) {
            rc = dk_container_start(c, m->id, err, sizeof(err));
            char why[1024];
            if (rc < 0 && dk_start_error(err, image, why, sizeof(why)) == 0) {
                log_info("replica %s: %s", j->name, err);
                snprintf(err, sizeof(err), "%s", why);
            }
        }
        if (rc == 0) {
            json_t *ins = NULL;
            if (dk_container_inspect(c, m->id, &ins, NULL, 0) == 0) {
                json_t *st = json_object_get(ins, "State");
                m->pid = (pid_t)json_integer_value(json_object_get(st, "Pid"));
                m->started_wall =
                    parse_docker_time(json_string_value(json_object_get(st, "StartedAt")));
                m->dead = !json_is_true(json_object_get(st, "Running"));
            }
            json_decref(ins);
        } else if (m->id[0]) {
            dk_container_remove(c, m->id, true, NULL, 0); /* made but not started */
        }
    }
    m->rc = rc;
    if (rc < 0)
        m->text = xstrdup(err);
    hub_post(j->hub, m);
}

static void job_stop(struct job *j)
{
    struct dk_client *c = j->hub->cli;
    char err[1024] = "";
    const char *who = j->id[0] ? j->id : j->name;
    if (j->id[0]) {
        /* its CPU up to now, for tako_replica_cpu_seconds_total: once it
         * is gone, so is its cgroup (a restart would lose the time since
         * the last sweep) */
        struct msg *sm = new_msg(M_STATS, j->name, 0);
        snprintf(sm->id, sizeof(sm->id), "%s", j->id);
        sm->rc = dk_container_stats(c, j->id, true, &sm->st, NULL, 0);
        hub_post(j->hub, sm);
    }
    int rc = dk_container_stop(c, who, j->grace_s, err, sizeof(err));
    if (rc == -ENOENT)
        rc = 0;
    if (rc == 0) {
        rc = dk_container_remove(c, who, true, err, sizeof(err));
        if (rc == -ENOENT)
            rc = 0;
    }
    struct msg *m = new_msg(M_STOPPED, j->name, j->gen);
    m->rc = rc;
    if (rc < 0)
        m->text = xstrdup(err);
    hub_post(j->hub, m);
}

/* A container of ours died: its exit code, OOM flag and last output line. */
static int last_line_cb(void *data, int stream, const char *buf, size_t len)
{
    (void)stream;
    char *last = data;
    /* keep the last non-empty line of the records seen */
    size_t n = len;
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--;
    if (n == 0)
        return 0;
    const char *s = buf + n;
    while (s > buf && s[-1] != '\n')
        s--;
    snprintf(last, 200, "%.*s", (int)(buf + n - s), s);
    return 0;
}

static void job_died(struct job *j)
{
    struct dk_client *c = j->hub->cli;
    struct msg *m = new_msg(M_DIED, j->name, j->gen);
    snprintf(m->id, sizeof(m->id), "%s", j->id);
    json_t *ins = NULL;
    m->exit_code = -1;
    if (dk_container_inspect(c, j->id, &ins, NULL, 0) == 0) {
        json_t *st = json_object_get(ins, "State");
        if (json_is_true(json_object_get(st, "Running"))) {
            json_decref(ins);
            free(m);
            return; /* restarted under us? not ours to judge */
        }
        m->exit_code = (int)json_integer_value(json_object_get(st, "ExitCode"));
        m->oom = json_is_true(json_object_get(st, "OOMKilled"));
        const char *e = json_string_value(json_object_get(st, "Error"));
        if (e && *e)
            m->text = xstrdup(e);
    }
    json_decref(ins);
    if (!m->text) {
        char last[256] = "";
        dk_container_logs(c, j->id, false, 1, false, last_line_cb, last, NULL, NULL, 0);
        if (last[0])
            m->text = xstrdup(last);
    }
    hub_post(j->hub, m);
}

/* One share of a sweep: replicas from, from + step, ... */
struct stats_part {
    struct job *j;
    size_t from, step;
};

static void *stats_part_main(void *arg)
{
    struct stats_part *p = arg;
    struct job *j = p->j;
    for (size_t i = p->from; i < j->n; i += p->step) {
        struct msg *m = new_msg(M_STATS, j->names[i], 0);
        snprintf(m->id, sizeof(m->id), "%s", j->ids[i]);
        m->rc = dk_container_stats(j->hub->cli, j->ids[i], true, &m->st, NULL, 0);
        hub_post(j->hub, m);
    }
    return NULL;
}

/* A one-shot stats call returns at the engine's next collection tick (once
 * a second), so calls made one after the other cost a second per replica;
 * made at once they all return at the same tick. The sweep runs up to
 * STATS_PAR calls at a time: about ceil(n / STATS_PAR) seconds for n
 * replicas, and still one sweep at most every STATS_MIN_MS. */
static void job_stats(struct job *j)
{
    size_t t = j->n < STATS_PAR ? j->n : STATS_PAR;
    struct stats_part parts[STATS_PAR];
    pthread_t th[STATS_PAR];
    bool started[STATS_PAR] = {false};
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setstacksize(&a, 128 * 1024);
    for (size_t k = 0; k < t; k++) {
        parts[k] = (struct stats_part){.j = j, .from = k, .step = t};
        if (k > 0)
            started[k] = pthread_create(&th[k], &a, stats_part_main, &parts[k]) == 0;
    }
    pthread_attr_destroy(&a);
    stats_part_main(&parts[0]);
    for (size_t k = 1; k < t; k++) {
        if (started[k])
            pthread_join(th[k], NULL);
        else
            stats_part_main(&parts[k]); /* no thread: its share here */
    }
    hub_post(j->hub, new_msg(M_STATS_DONE, "", 0));
}

static void job_signal(struct job *j)
{
    char sig[16];
    snprintf(sig, sizeof(sig), "%d", j->sig);
    dk_container_kill(j->hub->cli, j->id, sig, NULL, 0);
}

/* ---- log follow ---- */

struct dk_follow {
    struct rt_log_follow base;
    struct dk_drv *d;
    char name[RT_NAME_MAX];
    rt_log_line_cb line;
    void *data;
    bool from_start;
    volatile bool cancel;
    bool unfollowed, ended; /* freed when both (loop side) */
    char partial[2][RT_LINE_MAX];
    size_t plen[2];
    struct hub *hub;
};

static void fmt_line(const char *ts_line, size_t len, int stream, char **out)
{
    /* docker: "2026-12-03T09:27:13.099123456Z text" → ours */
    const char *sp = memchr(ts_line, ' ', len);
    uint64_t ms = 0;
    const char *text = ts_line;
    size_t tlen = len;
    if (sp) {
        char ts[64];
        snprintf(ts, sizeof(ts), "%.*s", (int)(sp - ts_line), ts_line);
        ms = parse_docker_time(ts);
        if (ms) {
            text = sp + 1;
            tlen = len - (size_t)(sp + 1 - ts_line);
        }
    }
    if (!ms)
        ms = time_wall_ms();
    char tbuf[32];
    rt__fmt_time(ms, tbuf);
    *out = xasprintf("%s %s %.*s", tbuf, stream == 2 ? "stderr" : "stdout", (int)tlen, text);
}

static int follow_cb(void *data, int stream, const char *buf, size_t len)
{
    struct dk_follow *f = data;
    int k = stream == 2 ? 1 : 0;
    for (size_t i = 0; i < len; i++) {
        if (buf[i] != '\n' && f->plen[k] < sizeof(f->partial[k]) - 1) {
            f->partial[k][f->plen[k]++] = buf[i];
            continue;
        }
        struct msg *m = new_msg(M_LOG, f->name, 0);
        fmt_line(f->partial[k], f->plen[k], stream, &m->text);
        m->fol = f;
        hub_post(f->hub, m);
        f->plen[k] = 0;
        if (buf[i] != '\n')
            f->partial[k][f->plen[k]++] = buf[i];
    }
    return f->cancel ? 1 : 0;
}

static void job_follow(struct job *j)
{
    struct dk_follow *f = j->fol;
    char seen[72] = "";
    bool first = true;
    while (!f->cancel) {
        json_t *ins = NULL;
        char id[72] = "";
        if (dk_container_inspect(j->hub->cli, f->name, &ins, NULL, 0) == 0)
            snprintf(id, sizeof(id), "%s", json_string_value(json_object_get(ins, "Id")) ?: "");
        json_decref(ins);
        if (id[0] && strcmp(id, seen) != 0) {
            /* a container we have not followed yet: from its first line,
             * except the one running when follow began without from_start */
            int tail = first && !f->from_start ? 0 : -1;
            snprintf(seen, sizeof(seen), "%s", id);
            dk_container_logs(j->hub->cli, id, true, tail, true, follow_cb, f, &f->cancel, NULL,
                              0);
        }
        first = false;
        for (int i = 0; i < FOLLOW_RETRY_MS / 50 && !f->cancel; i++)
            usleep(50 * 1000);
    }
    struct msg *m = new_msg(M_FOLLOW_END, f->name, 0);
    m->fol = f;
    hub_post(j->hub, m);
}

static void *job_main(void *arg)
{
    struct job *j = arg;
    switch (j->kind) {
    case J_LAUNCH:
        job_launch(j);
        break;
    case J_STOP:
        job_stop(j);
        break;
    case J_DIED:
        job_died(j);
        break;
    case J_STATS:
        job_stats(j);
        break;
    case J_SIGNAL:
        job_signal(j);
        break;
    case J_FOLLOW:
        job_follow(j);
        break;
    case J_PRUNE: {
        char err[256];
        int n = docker_prune(j->hub->cli, j->spec.spec.project, j->spec.spec.service,
                             j->spec.spec.revision, RT_DOCKER_KEEP_IMAGES, false, err,
                             sizeof(err));
        if (n > 0)
            log_info("docker: removed %d image(s) of %s-%s older than the %u kept", n,
                     j->spec.spec.project, j->spec.spec.service, RT_DOCKER_KEEP_IMAGES);
        break;
    }
    }
    struct hub *h = j->hub;
    if (j->kind == J_LAUNCH || j->kind == J_PRUNE)
        rt__spec_free(&j->spec);
    free(j->names);
    free(j->ids);
    free(j);
    hub_unref(h);
    return NULL;
}

/* ---- the events stream (one thread for all replicas) ---- */

struct ev_thread_ctx {
    struct dk_drv *d; /* read only: ev_stop */
    struct hub *hub;
    long long since;
};

static int on_event(void *data, json_t *e)
{
    struct ev_thread_ctx *c = data;
    const char *status = json_string_value(json_object_get(e, "status"));
    json_t *attrs = json_object_get(json_object_get(e, "Actor"), "Attributes");
    const char *name = json_string_value(json_object_get(attrs, "name"));
    const char *id = json_string_value(json_object_get(e, "id"));
    json_int_t t = json_integer_value(json_object_get(e, "time"));
    if (t > 0)
        c->since = t;
    if (status && name && id && strcmp(status, "die") == 0) {
        struct msg *m = new_msg(M_DIED, name, 0);
        snprintf(m->id, sizeof(m->id), "%s", id);
        m->rc = 1; /* from the stream: the loop asks for details */
        hub_post(c->hub, m);
    }
    return c->d->ev_stop ? 1 : 0;
}

static void *events_main(void *arg)
{
    struct ev_thread_ctx *c = arg;
    bool down = false;
    while (!c->d->ev_stop) {
        char err[512];
        int rc = dk_events(c->hub->cli, LABEL_RUNTIME, c->since, on_event, c, &c->d->ev_stop,
                           err, sizeof(err));
        if (c->d->ev_stop)
            break;
        if (!down) {
            struct msg *m = new_msg(M_STREAM, "", 0);
            m->rc = rc < 0 ? rc : -EPIPE;
            m->text = xstrdup(err);
            hub_post(c->hub, m);
            down = true;
        }
        for (int i = 0; i < 10 && !c->d->ev_stop; i++)
            usleep(100 * 1000);
        if (!c->d->ev_stop && dk_ping(c->hub->cli, NULL, 0) == 0) {
            down = false;
            struct msg *m = new_msg(M_STREAM, "", 0);
            m->rc = 0;
            hub_post(c->hub, m);
        }
    }
    struct hub *h = c->hub;
    free(c);
    hub_unref(h);
    return NULL;
}

/* ---- the loop side ---- */

static void launch(struct dk_rep *r)
{
    struct job *j = xcalloc(1, sizeof(*j));
    j->kind = J_LAUNCH;
    snprintf(j->name, sizeof(j->name), "%s", r->name);
    j->gen = ++r->gen;
    rt__spec_copy(&j->spec, &r->spec.spec);
    j->first = !r->launched_once;
    r->launched_once = true;
    r->launching = true;
    r->id[0] = '\0';
    r->pid = 0;
    run_job(r->d, j);
}

static void stop_job(struct dk_rep *r)
{
    struct job *j = xcalloc(1, sizeof(*j));
    j->kind = J_STOP;
    snprintf(j->name, sizeof(j->name), "%s", r->name);
    snprintf(j->id, sizeof(j->id), "%s", r->id);
    j->gen = ++r->gen;
    j->grace_s = (unsigned)((r->spec.spec.stop_grace_ms + 999) / 1000);
    r->stopping_job = true;
    run_job(r->d, j);
}

static void on_free_defer(struct ev_defer *df)
{
    struct dk_rep *r = (struct dk_rep *)((char *)df - offsetof(struct dk_rep, free_defer));
    rt__spec_free(&r->spec);
    free(r->build_log);
    free(r);
}

static void unlink_rep(struct dk_rep *r)
{
    for (struct dk_rep **p = &r->d->replicas; *p; p = &(*p)->next)
        if (*p == r) {
            *p = r->next;
            break;
        }
}

static void finish_stop(struct dk_rep *r)
{
    r->pid = 0;
    r->id[0] = '\0';
    char *p = spec_path(r->d, r->name);
    unlink(p);
    free(p);
    set_state(r, RT_STOPPED);
    void (*done)(struct rt_replica *, void *) = r->done;
    r->done = NULL;
    if (done)
        done(&r->base, r->done_data);
}

static void on_backoff(struct ev_loop *loop, struct ev_timer *t)
{
    (void)loop;
    struct dk_rep *r = t->data;
    r->backoff_ms = 0;
    r->restarts++;
    set_state(r, RT_STARTING);
    launch(r);
}

/* A built revision runs: images of revisions before the kept ones go, once
 * per service and revision, on a worker. */
static void maybe_prune(struct dk_drv *d, struct dk_rep *r)
{
    const struct rt_spec *s = &r->spec.spec;
    if (s->image)
        return;
    char key[140];
    snprintf(key, sizeof(key), "%s/%s", s->project, s->service);
    struct pruned *p = d->pruned;
    while (p && strcmp(p->service, key) != 0)
        p = p->next;
    if (p && strcmp(p->revision, s->revision) == 0)
        return;
    if (!p) {
        p = xcalloc(1, sizeof(*p));
        snprintf(p->service, sizeof(p->service), "%s", key);
        p->next = d->pruned;
        d->pruned = p;
    }
    snprintf(p->revision, sizeof(p->revision), "%s", s->revision);
    struct job *j = xcalloc(1, sizeof(*j));
    j->kind = J_PRUNE;
    rt__spec_copy(&j->spec, s);
    run_job(d, j);
}

static void handle_launched(struct dk_drv *d, struct msg *m)
{
    struct dk_rep *r = find(d, m->name);
    if (!r || r->gen != m->gen) {
        /* nobody wants it any more: a container made for a forgotten
         * handle must not run unowned */
        if (m->rc == 0) {
            struct job *j = xcalloc(1, sizeof(*j));
            j->kind = J_STOP;
            snprintf(j->name, sizeof(j->name), "%s", m->name);
            snprintf(j->id, sizeof(j->id), "%s", m->id);
            j->grace_s = 1;
            run_job(d, j);
        }
        return;
    }
    r->launching = false;
    if (m->rc < 0) {
        const char *e = m->text ? m->text : "cannot start the container";
        /* the first line is the cause; the build's last lines are its logs */
        const char *nl = strchr(e, '\n');
        snprintf(r->last_error, sizeof(r->last_error), "%.*s", nl ? (int)(nl - e) : (int)strlen(e),
                 e);
        free(r->build_log);
        r->build_log = nl ? xstrdup(nl + 1) : NULL;
        log_warn("replica %s: %s", r->name, e);
        if (r->want_stop) {
            finish_stop(r);
            return;
        }
        set_state(r, RT_FAILED);
        return;
    }
    snprintf(r->id, sizeof(r->id), "%s", m->id);
    /* a new container: the last one's CPU (as last sampled) joins the base */
    r->cpu_base_ns += r->cpu_cur_ns;
    r->cpu_cur_ns = 0;
    r->pid = m->pid;
    r->started_wall = m->started_wall ? m->started_wall : time_wall_ms();
    r->started_mono = ev_time_ms();
    r->have_last = false;
    r->cpu = 0;
    free(r->build_log);
    r->build_log = NULL;
    save_spec(r);
    maybe_prune(d, r);
    if (r->want_stop || r->want_restart) {
        set_state(r, RT_STOPPING);
        stop_job(r);
        return;
    }
    set_state(r, RT_RUNNING);
    if (m->dead || strcmp(r->died_early, r->id) == 0) {
        /* it exited before its die event could be matched: ask once */
        struct job *j = xcalloc(1, sizeof(*j));
        j->kind = J_DIED;
        snprintf(j->name, sizeof(j->name), "%s", r->name);
        snprintf(j->id, sizeof(j->id), "%s", r->id);
        j->gen = r->gen;
        run_job(d, j);
    }
    r->died_early[0] = '\0';
}

static void handle_stopped(struct dk_drv *d, struct msg *m)
{
    struct dk_rep *r = find(d, m->name);
    if (!r || r->gen != m->gen)
        return;
    r->stopping_job = false;
    if (m->rc < 0) {
        snprintf(r->last_error, sizeof(r->last_error), "stop: %s", m->text ? m->text : "");
        log_warn("replica %s: stop failed: %s", r->name, m->text ? m->text : "");
    }
    if (r->want_stop) {
        finish_stop(r);
        return;
    }
    if (r->want_restart) {
        r->want_restart = false;
        r->restarts++;
        set_state(r, RT_STARTING);
        launch(r);
        return;
    }
    finish_stop(r);
}

/* Docker's exit code in waitpid form: > 128 is 128 + the killing signal. */
static int wait_status(int code)
{
    if (code < 0)
        return -1;
    if (code > 128 && code < 128 + 65)
        return (code - 128) & 0x7f;
    return (code & 0xff) << 8;
}

static void handle_died(struct dk_drv *d, struct msg *m)
{
    struct dk_rep *r = find(d, m->name);
    if (r && r->launching && m->rc == 1) {
        snprintf(r->died_early, sizeof(r->died_early), "%s", m->id);
        return;
    }
    if (!r || strcmp(r->id, m->id) != 0)
        return; /* an older container of that name, or not ours */
    if (r->want_stop || r->want_restart || r->stopping_job || r->state != RT_RUNNING)
        return; /* the stop in progress accounts for it */
    if (m->rc == 1) {
        /* from the stream: fetch the exit code and last line off the loop */
        struct job *j = xcalloc(1, sizeof(*j));
        j->kind = J_DIED;
        snprintf(j->name, sizeof(j->name), "%s", r->name);
        snprintf(j->id, sizeof(j->id), "%s", r->id);
        j->gen = r->gen;
        run_job(d, j);
        return;
    }
    if (m->gen != r->gen)
        return;
    int status = wait_status(m->exit_code);
    r->last_exit_status = status;
    uint64_t ran = ev_time_ms() - r->started_mono;
    char what[64];
    if (m->oom)
        snprintf(what, sizeof(what), "killed: out of memory");
    else if (status >= 0 && WIFSIGNALED(status))
        snprintf(what, sizeof(what), "killed by signal %d", WTERMSIG(status));
    else
        snprintf(what, sizeof(what), "exited with status %d", m->exit_code);
    snprintf(r->last_error, sizeof(r->last_error), "%s%s%.200s", what, m->text ? ": " : "",
             m->text ? m->text : "");
    r->pid = 0;
    uint64_t backoff = 0;
    enum rt_state next = rt__policy(r->spec.spec.restart, status, ran, &r->consecutive, &backoff);
    r->backoff_ms = backoff;
    save_spec(r);
    set_state(r, next);
    if (next == RT_BACKOFF || next == RT_CRASHLOOP)
        ev_timer_start(d->loop, &r->backoff_timer, backoff);
}

static void handle_stream(struct dk_drv *d, struct msg *m)
{
    if (m->rc < 0 && !d->stream_down) {
        d->stream_down = true;
        log_warn("docker: the events stream ended (%s); replicas keep their last known state "
                 "until the engine answers again",
                 m->text ? m->text : "");
    } else if (m->rc == 0 && d->stream_down) {
        d->stream_down = false;
        log_info("docker: the engine at unix://%s answers again", d->hub->sock);
        /* exits missed while the stream was down: ask once for each running replica */
        for (struct dk_rep *r = d->replicas; r; r = r->next) {
            if (r->state != RT_RUNNING || !r->id[0])
                continue;
            struct job *j = xcalloc(1, sizeof(*j));
            j->kind = J_DIED;
            snprintf(j->name, sizeof(j->name), "%s", r->name);
            snprintf(j->id, sizeof(j->id), "%s", r->id);
            j->gen = r->gen;
            run_job(d, j);
        }
    }
}

static void handle_stats(struct dk_drv *d, struct msg *m)
{
    struct dk_rep *r = find(d, m->name);
    if (!r || m->rc < 0 || strcmp(r->id, m->id) != 0)
        return;
    if (r->have_last)
        r->cpu = dk_cpu_percent(&r->last, &m->st);
    r->last = m->st;
    r->have_last = true;
    r->mem = dk_mem_used(&m->st);
    if (m->st.cpu_total_ns > r->cpu_cur_ns)
        r->cpu_cur_ns = m->st.cpu_total_ns;
}

static void follow_free_maybe(struct dk_follow *f)
{
    if (f->unfollowed && f->ended)
        free(f);
}

static void on_hub(struct ev_loop *loop, struct ev_io *w, uint32_t revents)
{
    (void)loop;
    (void)revents;
    struct dk_drv *d = w->data;
    uint64_t v;
    ssize_t n = read(d->hub->efd, &v, sizeof(v));
    (void)n;
    pthread_mutex_lock(&d->hub->mu);
    struct msg *list = d->hub->head;
    d->hub->head = d->hub->tail = NULL;
    pthread_mutex_unlock(&d->hub->mu);
    while (list) {
        struct msg *m = list;
        list = m->next;
        switch (m->kind) {
        case M_LAUNCHED:
            handle_launched(d, m);
            break;
        case M_STOPPED:
            handle_stopped(d, m);
            break;
        case M_DIED:
            handle_died(d, m);
            break;
        case M_NOTE: {
            struct dk_rep *r = find(d, m->name);
            if (r && r->gen == m->gen) {
                log_info("build %s: %s", r->name, m->text);
                rt__note(&r->base, m->text);
            }
            break;
        }
        case M_STATS:
            handle_stats(d, m);
            break;
        case M_STATS_DONE:
            d->stats_busy = false;
            break;
        case M_LOG:
            if (!m->fol->unfollowed)
                m->fol->line(m->fol->data, m->fol->name, m->text);
            break;
        case M_FOLLOW_END:
            m->fol->ended = true;
            follow_free_maybe(m->fol);
            break;
        case M_STREAM:
            handle_stream(d, m);
            break;
        }
        free(m->text);
        free(m);
    }
}

/* ---- ops ---- */

static int dkr_create(struct rt *rt, struct rt_driver **out, char *err, size_t errlen)
{
    struct dk_client *cli = NULL;
    int rc = dk_open(NULL, &cli, err, errlen);
    if (rc < 0)
        return rc;
    struct hub *h = xcalloc(1, sizeof(*h));
    pthread_mutex_init(&h->mu, NULL);
    pthread_mutex_init(&h->build_mu, NULL);
    h->refs = 1;
    h->cli = cli;
    snprintf(h->sock, sizeof(h->sock), "%s", dk_socket(cli));
    h->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (h->efd < 0) {
        rc = -errno;
        snprintf(err, errlen, "eventfd: %s", strerror(-rc));
        hub_unref(h);
        return rc;
    }
    struct dk_drv *d = xcalloc(1, sizeof(*d));
    d->loop = rt__loop(rt);
    d->state_dir = rt__state_dir(rt);
    d->hub = h;
    ev_io_init(&d->efd_io, h->efd, on_hub, d);
    ev_timer_init(&d->stats_timer, on_stats_timer, d);
    ev_io_start(d->loop, &d->efd_io, EPOLLIN);
    /* the events stream: its own reference to the hub */
    struct ev_thread_ctx *c = xcalloc(1, sizeof(*c));
    c->d = d;
    c->hub = h;
    c->since = (long long)time(NULL);
    h->refs++;
    if (pthread_create(&d->ev_thread, NULL, events_main, c) == 0) {
        d->ev_started = true;
    } else {
        h->refs--;
        free(c);
        log_warn("docker: cannot start the events thread: container exits go unnoticed");
    }
    log_info("docker: engine at unix://%s, API %s", dk_socket(cli), dk_version(cli));
    *out = &d->base;
    return 0;
}

static void dkr_destroy(struct rt_driver *base)
{
    struct dk_drv *d = DD(base);
    d->ev_stop = true;
    if (d->ev_started)
        pthread_join(d->ev_thread, NULL); /* returns within a second (cancel check) */
    ev_io_stop(d->loop, &d->efd_io);
    ev_timer_stop(d->loop, &d->stats_timer);
    while (d->replicas) {
        struct dk_rep *r = d->replicas;
        d->replicas = r->next;
        ev_timer_stop(d->loop, &r->backoff_timer);
        rt__spec_free(&r->spec);
        free(r->build_log);
        free(r);
    }
    while (d->pruned) {
        struct pruned *p = d->pruned;
        d->pruned = p->next;
        free(p);
    }
    pthread_mutex_lock(&d->hub->mu);
    d->hub->dead = true; /* workers still running drop their results */
    pthread_mutex_unlock(&d->hub->mu);
    hub_unref(d->hub);
    free(d);
}

static struct dk_rep *new_rep(struct dk_drv *d, const char *name)
{
    struct dk_rep *r = xcalloc(1, sizeof(*r));
    r->d = d;
    snprintf(r->name, sizeof(r->name), "%s", name);
    r->last_exit_status = -1;
    r->state = RT_STARTING;
    ev_timer_init(&r->backoff_timer, on_backoff, r);
    r->next = d->replicas;
    d->replicas = r;
    return r;
}

static void bind_base(struct dk_rep *r)
{
    r->base.spec = &r->spec.spec;
    r->base.name = r->name;
}

static int dkr_start(struct rt_driver *base, const struct rt_spec *spec, struct rt_replica **out,
                     char *err, size_t errlen)
{
    struct dk_drv *d = DD(base);
    char name[RT_NAME_MAX];
    int rc = rt__replica_name(spec, name, sizeof(name), err, errlen);
    if (rc < 0)
        return rc;
    /* the container's name is also an image name part: lower case only */
    for (const char *p = name; *p; p++)
        if (*p >= 'A' && *p <= 'Z') {
            snprintf(err, errlen, "replica %s: Docker names must be lower case", name);
            return -EINVAL;
        }
    if (spec->image && dk_ref_check(spec->image, err, errlen) < 0)
        return -EINVAL;
    if (spec->network && strcmp(spec->network, "bridge") == 0 && !spec->app_port) {
        snprintf(err, errlen, "replica %s: network bridge needs the app's port", name);
        return -EINVAL;
    }
    if (!spec->image && !spec->build_dir) {
        snprintf(err, errlen, "replica %s: neither an image nor a build directory", name);
        return -EINVAL;
    }
    if (rt__spec_check_env(spec, name, err, errlen) < 0)
        return -EINVAL;
    struct dk_rep *known = find(d, name);
    if (known) {
        snprintf(err, errlen, "replica %s is already %s (rt_forget a stopped one first)", name,
                 rt_state_name(known->state));
        return -EEXIST;
    }
    struct dk_rep *r = new_rep(d, name);
    r->born_ms = time_wall_ms();
    rt__spec_copy(&r->spec, spec);
    bind_base(r);
    launch(r);
    *out = &r->base;
    return 0;
}

static void dkr_stop(struct rt_replica *rr, void (*done)(struct rt_replica *, void *), void *data)
{
    struct dk_rep *r = DR(rr);
    r->done = done;
    r->done_data = data;
    r->want_stop = true;
    r->want_restart = false;
    ev_timer_stop(r->d->loop, &r->backoff_timer);
    r->backoff_ms = 0;
    if (r->launching || r->stopping_job) {
        if (r->state != RT_STOPPING)
            set_state(r, RT_STOPPING);
        return; /* the job in flight ends in a stop */
    }
    /* running, exited or failed: the container (if any) is stopped and removed */
    set_state(r, RT_STOPPING);
    stop_job(r);
}

static void dkr_restart(struct rt_replica *rr, const char *why)
{
    struct dk_rep *r = DR(rr);
    if (r->want_stop)
        return;
    if (why)
        snprintf(r->last_error, sizeof(r->last_error), "%s", why);
    if (r->launching || r->stopping_job) {
        r->want_restart = true;
        return;
    }
    if (r->state == RT_RUNNING) {
        r->want_restart = true;
        set_state(r, RT_STOPPING);
        stop_job(r);
        return;
    }
    ev_timer_stop(r->d->loop, &r->backoff_timer);
    r->backoff_ms = 0;
    r->restarts++;
    set_state(r, RT_STARTING);
    launch(r);
}

static int dkr_signal(struct rt_replica *rr, int sig)
{
    struct dk_rep *r = DR(rr);
    if (r->state != RT_RUNNING || !r->id[0])
        return -ESRCH;
    struct job *j = xcalloc(1, sizeof(*j));
    j->kind = J_SIGNAL;
    snprintf(j->name, sizeof(j->name), "%s", r->name);
    snprintf(j->id, sizeof(j->id), "%s", r->id);
    j->sig = sig;
    run_job(r->d, j);
    return 0;
}

static void dkr_forget(struct rt_replica *rr)
{
    struct dk_rep *r = DR(rr);
    if (r->forgotten)
        return;
    if (r->launching || r->stopping_job || r->state == RT_RUNNING ||
        r->state == RT_STARTING || r->state == RT_STOPPING ||
        ev_timer_active(&r->backoff_timer)) {
        log_warn("replica %s is %s; not forgetting a live replica", r->name,
                 rt_state_name(r->state));
        return;
    }
    unlink_rep(r);
    r->forgotten = true;
    ev_defer(r->d->loop, &r->free_defer, on_free_defer);
}

static int dkr_adopt(struct rt_driver *base, struct rt_replica ***out, size_t *n)
{
    struct dk_drv *d = DD(base);
    *out = NULL;
    *n = 0;
    json_t *list = NULL;
    char err[512];
    int rc = dk_container_list(d->hub->cli, LABEL_RUNTIME, &list, err, sizeof(err));
    if (rc < 0) {
        log_warn("docker: cannot list containers to adopt: %s", err);
        return rc;
    }
    size_t i;
    json_t *c;
    json_array_foreach(list, i, c)
    {
        const char *nm = json_string_value(json_array_get(json_object_get(c, "Names"), 0));
        const char *id = json_string_value(json_object_get(c, "Id"));
        const char *state = json_string_value(json_object_get(c, "State"));
        if (!nm || !id)
            continue;
        if (*nm == '/')
            nm++;
        if (find(d, nm))
            continue;
        char *sp = spec_path(d, nm);
        struct rt__owned_spec spec;
        unsigned restarts = 0, consecutive = 0;
        json_t *ds = NULL;
        bool have = rt__spec_load_ex(sp, &spec, &restarts, &consecutive, &ds) == 0;
        bool running = state && strcmp(state, "running") == 0;
        if (!have || !running) {
            /* exited while takod was away, or made by a start that never
             * finished: cleaned, and started again by the caller if wanted */
            log_info("docker: removing %s container %s", running ? "unknown" : "stopped", nm);
            dk_container_remove(d->hub->cli, id, true, NULL, 0);
            if (have)
                rt__spec_free(&spec);
            json_decref(ds);
            unlink(sp);
            free(sp);
            continue;
        }
        free(sp);
        struct dk_rep *r = new_rep(d, nm);
        r->spec = spec;
        bind_base(r);
        r->restarts = restarts;
        r->consecutive = consecutive;
        r->launched_once = true;
        /* written by an older takod without them: a new account */
        r->born_ms = (uint64_t)json_integer_value(json_object_get(ds, "born_ms"));
        if (!r->born_ms)
            r->born_ms = time_wall_ms();
        r->cpu_base_ns = (uint64_t)json_integer_value(json_object_get(ds, "cpu_base_ns"));
        json_decref(ds);
        /* the container's CPU so far, at once: the counter must not seem
         * to go back to the base until the first stats sweep */
        struct dk_stats sample;
        if (dk_container_stats(d->hub->cli, id, true, &sample, NULL, 0) == 0)
            r->cpu_cur_ns = sample.cpu_total_ns;
        snprintf(r->id, sizeof(r->id), "%s", id);
        json_t *ins = NULL;
        r->started_mono = ev_time_ms();
        r->started_wall = time_wall_ms();
        if (dk_container_inspect(d->hub->cli, id, &ins, NULL, 0) == 0) {
            json_t *st = json_object_get(ins, "State");
            r->pid = (pid_t)json_integer_value(json_object_get(st, "Pid"));
            uint64_t w = parse_docker_time(json_string_value(json_object_get(st, "StartedAt")));
            uint64_t now = time_wall_ms();
            if (w && w <= now) {
                r->started_wall = w;
                r->started_mono = ev_time_ms() - (now - w);
            }
        }
        json_decref(ins);
        r->state = RT_RUNNING;
        *out = xrealloc(*out, (*n + 1) * sizeof(**out));
        (*out)[(*n)++] = &r->base;
        log_info("docker: adopted container %s (%.12s)", nm, id);
    }
    json_decref(list);
    return 0;
}

static void dkr_inspect(struct rt_replica *rr, struct rt_info *info)
{
    struct dk_rep *r = DR(rr);
    snprintf(info->name, sizeof(info->name), "%s", r->name);
    bool live = r->state == RT_RUNNING || r->state == RT_STOPPING;
    info->pid = live ? r->pid : 0;
    info->port = r->spec.spec.port;
    info->state = r->state;
    info->restarts = r->restarts;
    info->last_exit_status = r->last_exit_status;
    info->started_at_ms = live ? r->started_wall : 0;
    if (live && r->started_mono)
        info->uptime_ms = ev_time_ms() - r->started_mono;
    snprintf(info->last_error, sizeof(info->last_error), "%s", r->last_error);
    snprintf(info->revision, sizeof(info->revision), "%s", r->spec.spec.revision);
    info->backoff_ms = r->backoff_ms;
    info->cpu_seconds = (double)(r->cpu_base_ns + r->cpu_cur_ns) / 1e9;
    info->instance_id = r->born_ms;
}

/* Stats come from the Engine API, sampled for every replica asked about in
 * one sweep on a worker, at most every STATS_MIN_MS; callers get the last
 * values at once. The sweep starts on the next loop pass (a timer of 0),
 * so that one reader asking about every replica (a scrape, `tako stats`)
 * gets all of them in the same sweep, not only the first one asked. */
static void on_stats_timer(struct ev_loop *loop, struct ev_timer *t)
{
    (void)loop;
    struct dk_drv *d = t->data;
    if (d->stats_busy)
        return;
    struct job *j = xcalloc(1, sizeof(*j));
    j->kind = J_STATS;
    for (struct dk_rep *x = d->replicas; x; x = x->next) {
        if (!x->stats_wanted || x->state != RT_RUNNING || !x->id[0])
            continue;
        j->names = xrealloc(j->names, (j->n + 1) * sizeof(*j->names));
        j->ids = xrealloc(j->ids, (j->n + 1) * sizeof(*j->ids));
        snprintf(j->names[j->n], RT_NAME_MAX, "%s", x->name);
        snprintf(j->ids[j->n], 72, "%s", x->id);
        j->n++;
        x->stats_wanted = false;
    }
    d->stats_mono = ev_time_ms();
    if (j->n == 0) {
        free(j);
        return;
    }
    d->stats_busy = true;
    run_job(d, j);
}

static void dkr_stats(struct rt_replica *rr, double *cpu_percent, uint64_t *rss_bytes)
{
    struct dk_rep *r = DR(rr);
    struct dk_drv *d = r->d;
    r->stats_wanted = true;
    *cpu_percent = r->cpu;
    *rss_bytes = r->mem;
    uint64_t now = ev_time_ms();
    if (d->stats_busy || ev_timer_active(&d->stats_timer) ||
        (d->stats_mono && now - d->stats_mono < STATS_MIN_MS))
        return;
    ev_timer_start(d->loop, &d->stats_timer, 0);
}

static int dkr_address(struct rt_replica *rr, char *buf, size_t len)
{
    /* host networking: the container listens on PORT on this host, once
     * it runs (no health checks against a container still being built) */
    enum rt_state s = DR(rr)->state;
    if (s != RT_RUNNING && s != RT_STOPPING)
        return -ENOTCONN;
    int w = snprintf(buf, len, "127.0.0.1:%u", DR(rr)->spec.spec.port);
    return w < 0 || (size_t)w >= len ? -ENOSPC : 0;
}

static int dkr_logs_list(struct rt_driver *base, const char *project, const char *service,
                         struct rt_log_ref **out, size_t *n)
{
    struct dk_drv *d = DD(base);
    for (struct dk_rep *r = d->replicas; r; r = r->next) {
        if (project && strcmp(project, r->spec.spec.project) != 0)
            continue;
        if (service && strcmp(service, r->spec.spec.service) != 0)
            continue;
        *out = xrealloc(*out, (*n + 1) * sizeof(**out));
        snprintf((*out)[*n].name, sizeof((*out)[*n].name), "%s", r->name);
        (*out)[*n].driver = rt_docker_ops.name;
        (*n)++;
    }
    return 0;
}

struct tail_ctx {
    char partial[2][RT_LINE_MAX];
    size_t plen[2];
    char **lines;
    size_t n;
    uint64_t since;
};

static int tail_cb(void *data, int stream, const char *buf, size_t len)
{
    struct tail_ctx *t = data;
    int k = stream == 2 ? 1 : 0;
    for (size_t i = 0; i < len; i++) {
        if (buf[i] != '\n' && t->plen[k] < sizeof(t->partial[k]) - 1) {
            t->partial[k][t->plen[k]++] = buf[i];
            continue;
        }
        char *line;
        fmt_line(t->partial[k], t->plen[k], stream, &line);
        uint64_t ms = 0;
        if (t->since && rt__parse_time(line, &ms) == 0 && ms < t->since) {
            free(line);
        } else {
            t->lines = xrealloc(t->lines, (t->n + 1) * sizeof(*t->lines));
            t->lines[t->n++] = line;
        }
        t->plen[k] = 0;
        if (buf[i] != '\n')
            t->partial[k][t->plen[k]++] = buf[i];
    }
    return 0;
}

static int cmp_line(const void *a, const void *b)
{
    /* lines start with their ISO time: text order is time order */
    return strncmp(*(char *const *)a, *(char *const *)b, 24);
}

static int dkr_logs_tail(struct rt_driver *base, const char *name, size_t n_lines,
                         uint64_t since_wall_ms, char ***lines, size_t *n)
{
    struct dk_drv *d = DD(base);
    *lines = NULL;
    *n = 0;
    struct dk_rep *r = find(d, name);
    if (r && r->build_log && !r->id[0]) {
        /* no container: what there is to see is why the build failed */
        char tbuf[32];
        rt__fmt_time(time_wall_ms(), tbuf);
        const char *p = r->build_log;
        while (*p) {
            const char *e = strchr(p, '\n');
            size_t k = e ? (size_t)(e - p) : strlen(p);
            *lines = xrealloc(*lines, (*n + 1) * sizeof(**lines));
            (*lines)[(*n)++] = xasprintf("%s stderr %.*s", tbuf, (int)k, p);
            p += k + (e ? 1 : 0);
        }
        return 0;
    }
    struct tail_ctx *t = xcalloc(1, sizeof(*t));
    t->since = since_wall_ms;
    int rc = dk_container_logs(d->hub->cli, name, false, n_lines ? (int)n_lines : -1, true,
                               tail_cb, t, NULL, NULL, 0);
    if (rc == -ENOENT)
        rc = 0;
    if (t->n > 1)
        qsort(t->lines, t->n, sizeof(*t->lines), cmp_line);
    if (n_lines && t->n > n_lines) {
        for (size_t i = 0; i < t->n - n_lines; i++)
            free(t->lines[i]);
        memmove(t->lines, t->lines + (t->n - n_lines), n_lines * sizeof(*t->lines));
        t->n = n_lines;
    }
    *lines = t->lines;
    *n = t->n;
    free(t);
    return rc < 0 ? rc : 0;
}

static int dkr_logs_follow(struct rt_driver *base, const char *name, bool from_start,
                           rt_log_line_cb line, void *data, struct rt_log_follow **out)
{
    struct dk_drv *d = DD(base);
    struct dk_follow *f = xcalloc(1, sizeof(*f));
    f->d = d;
    snprintf(f->name, sizeof(f->name), "%s", name);
    f->line = line;
    f->data = data;
    f->from_start = from_start;
    f->hub = d->hub;
    struct job *j = xcalloc(1, sizeof(*j));
    j->kind = J_FOLLOW;
    j->fol = f;
    run_job(d, j);
    *out = &f->base;
    return 0;
}

static void dkr_logs_unfollow(struct rt_log_follow *base)
{
    struct dk_follow *f = (struct dk_follow *)base;
    f->cancel = true;
    f->unfollowed = true;
    follow_free_maybe(f);
}

const struct rt_driver_ops rt_docker_ops = {
    .name = "docker",
    .create = dkr_create,
    .destroy = dkr_destroy,
    .start = dkr_start,
    .stop = dkr_stop,
    .restart = dkr_restart,
    .signal = dkr_signal,
    .forget = dkr_forget,
    .adopt = dkr_adopt,
    .inspect = dkr_inspect,
    .stats = dkr_stats,
    .address = dkr_address,
    .logs_list = dkr_logs_list,
    .logs_tail = dkr_logs_tail,
    .logs_follow = dkr_logs_follow,
    .logs_unfollow = dkr_logs_unfollow,
};

/* ---- images of past revisions ---- */

static json_int_t created(json_t *img)
{
    return json_integer_value(json_object_get(img, "Created"));
}

static int cmp_newest(const void *a, const void *b)
{
    json_int_t x = created(*(json_t *const *)a), y = created(*(json_t *const *)b);
    return x < y ? 1 : x > y ? -1 : 0;
}

static int docker_prune(struct dk_client *c, const char *project, const char *service,
                     const char *keep_revision, unsigned keep, bool all, char *err, size_t errlen)
{
    char label[200];
    snprintf(label, sizeof(label), "tako.project=%s", project);
    json_t *list = NULL;
    int rc = dk_image_list(c, NULL, label, &list, err, errlen);
    if (rc < 0)
        return rc;
    size_t n = json_array_size(list);
    json_t **v = xcalloc(n ? n : 1, sizeof(*v));
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *img = json_array_get(list, i);
        const char *svc =
            json_string_value(json_object_get(json_object_get(img, "Labels"), "tako.service"));
        if (!service || (svc && strcmp(svc, service) == 0))
            v[k++] = img;
    }
    qsort(v, k, sizeof(*v), cmp_newest);
    int removed = 0;
    unsigned kept = 0;
    for (size_t i = 0; i < k; i++) {
        json_t *labels = json_object_get(v[i], "Labels");
        const char *rev = json_string_value(json_object_get(labels, "tako.revision"));
        bool current = keep_revision && rev && strcmp(rev, keep_revision) == 0;
        if (!all && (current || kept < keep)) {
            kept += current ? 0 : 1;
            continue;
        }
        size_t t;
        json_t *tag;
        json_array_foreach(json_object_get(v[i], "RepoTags"), t, tag)
        {
            /* an image a container still uses is refused (409): kept */
            const char *name = json_string_value(tag);
            if (name && strcmp(name, "<none>:<none>") != 0 &&
                dk_image_remove(c, name, false, NULL, 0) == 0)
                removed++;
        }
    }
    free(v);
    json_decref(list);
    return removed;
}

int rt_docker_prune_images(const char *project, const char *service, const char *keep_revision,
                           unsigned keep, bool all, char *err, size_t errlen)
{
    struct dk_client *c = NULL;
    int rc = dk_open(NULL, &c, err, errlen);
    if (rc < 0)
        return rc;
    rc = docker_prune(c, project, service, keep_revision, keep, all, err, errlen);
    dk_close(c);
    return rc;
}
