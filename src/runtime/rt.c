/* rt.c — the runtime's generic layer: picks the driver of each replica and
 * dispatches through its ops table (rt_driver.h); names, restart policy and
 * the liveness counter every driver shares. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "core/ev.h"
#include "core/log.h"
#include "core/util.h"
#include "runtime/rt_driver.h"

#define RT_MAX_DRIVERS 8

struct rt {
    struct ev_loop *loop;
    char *state_dir;
    rt_event_cb cb;
    void *cb_data;
    const struct rt_driver_ops *const *table; /* rt_driver_table, or a test's */
    struct rt_driver *drivers[RT_MAX_DRIVERS]; /* by table index, made on first use */
    rt_note_cb note_cb;
    void *note_data;
};

void rt_set_note_cb(struct rt *rt, rt_note_cb cb, void *data)
{
    rt->note_cb = cb;
    rt->note_data = data;
}

void rt__note(struct rt_replica *r, const char *line)
{
    struct rt *rt = r->drv->rt;
    if (rt->note_cb)
        rt->note_cb(r, line, rt->note_data);
}

static int table_index(const struct rt_driver_ops *const *table, const char *name)
{
    if (!name || !*name)
        return 0;
    for (int i = 0; table[i] && i < RT_MAX_DRIVERS; i++)
        if (strcmp(table[i]->name, name) == 0)
            return i;
    return -1;
}

bool rt_driver_known(const char *name)
{
    return table_index(rt_driver_table, name) >= 0;
}

struct rt_driver *rt__driver(struct rt *rt, const char *name, char *err, size_t errlen)
{
    int i = table_index(rt->table, name);
    if (i < 0) {
        snprintf(err, errlen, "unknown runtime '%s'", name);
        return NULL;
    }
    if (!rt->drivers[i]) {
        struct rt_driver *d = NULL;
        if (rt->table[i]->create(rt, &d, err, errlen) < 0)
            return NULL;
        d->ops = rt->table[i];
        d->rt = rt;
        rt->drivers[i] = d;
    }
    return rt->drivers[i];
}

struct ev_loop *rt__loop(struct rt *rt) { return rt->loop; }
const char *rt__state_dir(struct rt *rt) { return rt->state_dir; }

void rt__emit(struct rt_replica *r, enum rt_state old_state, enum rt_state new_state)
{
    struct rt *rt = r->drv->rt;
    if (rt->cb && old_state != new_state)
        rt->cb(r, old_state, new_state, rt->cb_data);
}

struct rt *rt_new(struct ev_loop *loop, const char *state_dir, rt_event_cb cb, void *cb_data)
{
    return rt_new_with(loop, state_dir, cb, cb_data, rt_driver_table);
}

struct rt *rt_new_with(struct ev_loop *loop, const char *state_dir, rt_event_cb cb,
                       void *cb_data, const struct rt_driver_ops *const *table)
{
    struct rt *rt = xcalloc(1, sizeof(*rt));
    rt->table = table;
    rt->loop = loop;
    rt->state_dir = xstrdup(state_dir);
    rt->cb = cb;
    rt->cb_data = cb_data;
    return rt;
}

void rt_free(struct rt *rt)
{
    if (!rt)
        return;
    for (int i = 0; i < RT_MAX_DRIVERS; i++)
        if (rt->drivers[i])
            rt->drivers[i]->ops->destroy(rt->drivers[i]);
    free(rt->state_dir);
    free(rt);
}

int rt_start(struct rt *rt, const struct rt_spec *spec, struct rt_replica **out, char *err,
             size_t errlen)
{
    struct rt_driver *d = rt__driver(rt, spec->driver, err, errlen);
    if (!d)
        return -EINVAL;
    struct rt_replica *r = NULL;
    int res = d->ops->start(d, spec, &r, err, errlen);
    if (res < 0)
        return res;
    r->drv = d;
    *out = r;
    return 0;
}

void rt_stop(struct rt_replica *r, void (*done)(struct rt_replica *, void *), void *data)
{
    r->drv->ops->stop(r, done, data);
}

void rt_restart(struct rt_replica *r)
{
    r->drv->ops->restart(r, NULL);
}

int rt_signal(struct rt_replica *r, int sig)
{
    return r->drv->ops->signal(r, sig);
}

void rt_forget(struct rt_replica *r)
{
    r->drv->ops->forget(r);
}

int rt_adopt_all(struct rt *rt, struct rt_replica ***out, size_t *n)
{
    *out = NULL;
    *n = 0;
    int rc = 0;
    for (int i = 0; rt->table[i] && i < RT_MAX_DRIVERS; i++) {
        char err[256];
        struct rt_driver *d = rt__driver(rt, rt->table[i]->name, err, sizeof(err));
        if (!d) {
            log_warn("runtime %s: %s; its replicas are not adopted", rt->table[i]->name, err);
            continue;
        }
        struct rt_replica **v = NULL;
        size_t k = 0;
        int res = d->ops->adopt(d, &v, &k);
        if (res < 0 && rc == 0)
            rc = res;
        *out = xrealloc(*out, (*n + k + 1) * sizeof(**out));
        for (size_t j = 0; j < k; j++) {
            v[j]->drv = d;
            (*out)[(*n)++] = v[j];
        }
        free(v);
    }
    return *n ? 0 : rc;
}

void rt_inspect(struct rt_replica *r, struct rt_info *info)
{
    memset(info, 0, sizeof(*info));
    r->drv->ops->inspect(r, info);
    snprintf(info->driver, sizeof(info->driver), "%s", r->drv->ops->name);
}

void rt_info(struct rt_replica *r, struct rt_info *info)
{
    rt_inspect(r, info);
    if (info->state == RT_RUNNING || info->state == RT_STOPPING || info->state == RT_STARTING)
        r->drv->ops->stats(r, &info->cpu_percent, &info->rss_bytes);
}

const struct rt_spec *rt_spec(struct rt_replica *r) { return r->spec; }
const char *rt_name(struct rt_replica *r) { return r->name; }
void rt_set_data(struct rt_replica *r, void *data) { r->data = data; }
void *rt_data(struct rt_replica *r) { return r->data; }

int rt_address(struct rt_replica *r, char *buf, size_t len)
{
    return r->drv->ops->address(r, buf, len);
}

void rt_report_health(struct rt_replica *r, bool ok, unsigned unhealthy_threshold,
                      uint64_t start_period_ms)
{
    struct rt_info info;
    r->drv->ops->inspect(r, &info);
    if (info.state != RT_RUNNING)
        return;
    if (ok) {
        r->health_fails = 0;
        return;
    }
    if (info.uptime_ms < start_period_ms)
        return;
    r->health_fails++;
    if (unhealthy_threshold && r->health_fails >= unhealthy_threshold) {
        char why[128];
        snprintf(why, sizeof(why), "restarted after %u failed health checks in a row",
                 r->health_fails);
        r->health_fails = 0;
        r->drv->ops->restart(r, why);
    }
}

/* ---- logs ---- */

static int cmp_ref(const void *a, const void *b)
{
    return strcmp(((const struct rt_log_ref *)a)->name, ((const struct rt_log_ref *)b)->name);
}

int rt_logs_list(struct rt *rt, const char *project, const char *service,
                 struct rt_log_ref **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    for (int i = 0; rt->table[i] && i < RT_MAX_DRIVERS; i++) {
        char err[256];
        struct rt_driver *d = rt__driver(rt, rt->table[i]->name, err, sizeof(err));
        if (d)
            d->ops->logs_list(d, project, service, out, n);
    }
    if (*n)
        qsort(*out, *n, sizeof(**out), cmp_ref);
    return 0;
}

int rt_logs_tail(struct rt *rt, const char *driver, const char *name, size_t n_lines,
                 uint64_t since_wall_ms, char ***lines, size_t *n)
{
    char err[256];
    struct rt_driver *d = rt__driver(rt, driver, err, sizeof(err));
    if (!d)
        return -EINVAL;
    return d->ops->logs_tail(d, name, n_lines, since_wall_ms, lines, n);
}

void rt_logs_free(char **lines, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(lines[i]);
    free(lines);
}

int rt_logs_follow(struct rt *rt, const char *driver, const char *name, bool from_start,
                   rt_log_line_cb line, void *data, struct rt_log_follow **out)
{
    char err[256];
    struct rt_driver *d = rt__driver(rt, driver, err, sizeof(err));
    if (!d)
        return -EINVAL;
    int res = d->ops->logs_follow(d, name, from_start, line, data, out);
    if (res == 0)
        (*out)->drv = d;
    return res;
}

void rt_logs_unfollow(struct rt_log_follow *f)
{
    if (f)
        f->drv->ops->logs_unfollow(f);
}

/* ---- names and the shared restart policy ---- */

static const char *state_names[] = {"starting", "running", "backoff",  "crashloop",
                                    "stopping", "stopped", "exited",   "failed"};

const char *rt_state_name(enum rt_state s)
{
    return (unsigned)s < ARRAY_LEN(state_names) ? state_names[s] : "unknown";
}

const char *rt_restart_name(enum rt_restart p)
{
    switch (p) {
    case RT_RESTART_ON_FAILURE:
        return "on-failure";
    case RT_RESTART_NEVER:
        return "never";
    default:
        return "always";
    }
}

int rt_restart_parse(const char *s, enum rt_restart *out)
{
    if (!s)
        return -EINVAL;
    if (strcmp(s, "always") == 0)
        *out = RT_RESTART_ALWAYS;
    else if (strcmp(s, "on-failure") == 0)
        *out = RT_RESTART_ON_FAILURE;
    else if (strcmp(s, "never") == 0)
        *out = RT_RESTART_NEVER;
    else
        return -EINVAL;
    return 0;
}

uint64_t rt_backoff_ms(unsigned consecutive_failures)
{
    if (consecutive_failures <= 1)
        return 1000;
    if (consecutive_failures > 7) /* 2^6 s already passes the cap */
        return 60000;
    uint64_t ms = 1000ull << (consecutive_failures - 1);
    return ms > 60000 ? 60000 : ms;
}

enum rt_state rt__policy(enum rt_restart policy, int status, uint64_t ran_ms,
                         unsigned *consecutive, uint64_t *backoff_ms)
{
    bool clean = status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0;
    /* A long healthy run forgives the failures before it. */
    if (ran_ms >= RT_HEALTHY_RESET_MS)
        *consecutive = 0;
    if (policy == RT_RESTART_NEVER || (policy == RT_RESTART_ON_FAILURE && clean)) {
        *backoff_ms = 0;
        return RT_EXITED;
    }
    (*consecutive)++;
    *backoff_ms = rt_backoff_ms(*consecutive);
    return *consecutive >= RT_CRASHLOOP_AFTER ? RT_CRASHLOOP : RT_BACKOFF;
}

