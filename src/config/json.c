/* json.c — typed configuration ⇄ JSON (jansson) in one canonical key order,
 * for `config explain --output json`, revision hashes and stored revisions. */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "config/internal.h"
#include "core/util.h"
#include "proxy/proxy.h"

static json_t *str_or_null(const char *s) { return s ? json_string(s) : json_null(); }

static json_t *str_array(char *const *v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_string(v[i]));
    return a;
}

static json_t *kv_object(const struct cfg_kv *kv, size_t n)
{
    json_t *o = json_object();
    for (size_t i = 0; i < n; i++)
        json_object_set_new(o, kv[i].key, json_string(kv[i].value));
    return o;
}

json_t *cfg_service_to_json(const struct cfg_service *s)
{
    json_t *j = json_object();
    json_object_set_new(j, "name", json_string(s->name));
    if (s->argv) {
        size_t n = 0;
        while (s->argv[n])
            n++;
        json_object_set_new(j, "command", str_array(s->argv, n));
    } else {
        json_object_set_new(j, "command", json_null());
    }
    json_object_set_new(j, "build", str_or_null(s->build));
    json_object_set_new(j, "workdir", str_or_null(s->workdir));
    json_object_set_new(j, "image", str_or_null(s->image));
    json_object_set_new(j, "runtime", json_string(s->runtime ? s->runtime : "process"));
    json_object_set_new(j, "port", json_integer(s->port));
    json_object_set_new(j, "replicas", json_integer(s->replicas));
    const struct cfg_autoscale *a = &s->autoscale;
    json_object_set_new(
        j, "autoscale",
        json_pack("{s:b, s:i, s:i, s:f, s:f, s:I, s:I, s:I, s:f}", "enabled", a->enabled, "min",
                  (int)a->min, "max", (int)a->max, "cpu_percent", a->cpu_percent,
                  "requests_per_s", a->requests_per_s, "interval_ms", (json_int_t)a->interval_ms,
                  "up_stabilization_ms", (json_int_t)a->up_stabilization_ms,
                  "down_stabilization_ms", (json_int_t)a->down_stabilization_ms, "tolerance",
                  a->tolerance));
    json_object_set_new(j, "load_balancer",
                        json_pack("{s:s, s:s, s:i, s:i, s:I, s:I, s:i}", "strategy",
                                  cfg_lb_name(s->lb_strategy), "cookie",
                                  s->lb_cookie ? s->lb_cookie : "", "max_conns", (int)s->lb_max_conns,
                                  "max_queue", (int)s->lb_max_queue, "queue_timeout_ms",
                                  (json_int_t)s->lb_queue_timeout_ms, "body_timeout_ms",
                                  (json_int_t)s->lb_body_timeout_ms, "min_body_rate",
                                  (int)s->lb_min_body_rate));
    const struct cfg_health *h = &s->health;
    json_object_set_new(
        j, "health",
        json_pack("{s:b, s:s, s:I, s:I, s:i, s:i, s:I}", "enabled", h->enabled, "path",
                  h->path ? h->path : "/health", "interval_ms", (json_int_t)h->interval_ms,
                  "timeout_ms", (json_int_t)h->timeout_ms, "healthy_threshold",
                  (int)h->healthy_threshold, "unhealthy_threshold", (int)h->unhealthy_threshold,
                  "start_period_ms", (json_int_t)h->start_period_ms));
    const struct cfg_deploy *d = &s->deploy;
    json_object_set_new(j, "deploy",
                        json_pack("{s:s, s:i, s:i, s:I, s:I}", "strategy",
                                  cfg_deploy_strategy_name(d->strategy), "max_surge",
                                  (int)d->max_surge, "max_unavailable", (int)d->max_unavailable,
                                  "drain_timeout_ms", (json_int_t)d->drain_timeout_ms,
                                  "stop_grace_ms", (json_int_t)d->stop_grace_ms));
    json_t *p = json_object();
    json_object_set_new(p, "domains", str_array(s->proxy.domains, s->proxy.domains_len));
    json_object_set_new(p, "port", json_integer(s->proxy.port));
    json_object_set_new(p, "email", str_or_null(s->proxy.email));
    json_object_set_new(p, "https_port", json_integer(s->proxy.https_port));
    json_object_set_new(p, "tls", s->proxy.tls_cert ? json_pack("{s:s,s:s}", "cert", s->proxy.tls_cert,
                                                                "key", s->proxy.tls_key)
                                                    : json_null());
    json_object_set_new(p, "hsts", json_integer((json_int_t)s->proxy.hsts_s));
    json_object_set_new(p, "acme", str_or_null(s->proxy.acme));
    json_object_set_new(j, "proxy", p);
    json_object_set_new(j, "env", kv_object(s->env, s->env_len));
    json_object_set_new(j, "restart", json_string(cfg_restart_name(s->restart)));
    json_object_set_new(j, "resources",
                        json_pack("{s:I, s:f}", "memory_bytes",
                                  (json_int_t)s->resources.memory_bytes, "cpus",
                                  s->resources.cpus));
    return j;
}

json_t *cfg_env_to_json(const struct cfg_env *e)
{
    json_t *j = json_object();
    json_object_set_new(j, "name", json_string(e->name));
    json_object_set_new(j, "servers", str_array(e->servers, e->servers_len));
    json_object_set_new(j, "http_port", json_integer(e->http_port));
    json_object_set_new(j, "runtime", json_string(e->runtime ? e->runtime : "process"));
    json_object_set_new(j, "https_port", json_integer(e->https_port));
    json_t *svcs = json_array();
    for (size_t i = 0; i < e->services_len; i++)
        json_array_append_new(svcs, cfg_service_to_json(&e->services[i]));
    json_object_set_new(j, "services", svcs);
    return j;
}

json_t *cfg_file_to_json(const struct cfg_file *f)
{
    json_t *j = json_object();
    json_object_set_new(j, "path", json_string(f->path));
    json_object_set_new(j, "dir", json_string(f->dir));
    json_object_set_new(j, "project",
                        json_pack("{s:s, s:o}", "name", f->project.name ? f->project.name : "",
                                  "version", str_or_null(f->project.version)));
    json_t *servers = json_array();
    for (size_t i = 0; i < f->servers_len; i++) {
        const struct cfg_server *s = &f->servers[i];
        json_t *o = json_object();
        json_object_set_new(o, "name", json_string(s->name));
        json_object_set_new(o, "host", str_or_null(s->host));
        json_object_set_new(o, "user", str_or_null(s->user));
        json_object_set_new(o, "port", json_integer(s->port));
        json_object_set_new(o, "ssh_key", str_or_null(s->ssh_key));
        json_object_set_new(o, "host_keys",
                            json_string(s->strict_host_keys ? "strict" : "accept-new"));
        json_object_set_new(o, "labels", kv_object(s->labels, s->labels_len));
        json_array_append_new(servers, o);
    }
    json_object_set_new(j, "servers", servers);
    json_t *envs = json_array();
    for (size_t i = 0; i < f->envs_len; i++)
        json_array_append_new(envs, cfg_env_to_json(&f->envs[i]));
    json_object_set_new(j, "environments", envs);
    return j;
}

/* ---- from JSON -------------------------------------------------------- */

struct rd {
    char *err;
    size_t errlen;
    bool bad;
};

static void __attribute__((format(printf, 2, 3))) rd_fail(struct rd *r, const char *fmt, ...)
{
    if (r->bad)
        return;
    r->bad = true;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->err, r->errlen, fmt, ap);
    va_end(ap);
}

static json_t *rd_get(struct rd *r, json_t *o, const char *key, const char *where)
{
    json_t *v = json_is_object(o) ? json_object_get(o, key) : NULL;
    if (!v)
        rd_fail(r, "%s%s%s: missing", where, *where ? "." : "", key);
    return v;
}

static char *rd_str(struct rd *r, json_t *o, const char *key, const char *where, bool nullable)
{
    json_t *v = rd_get(r, o, key, where);
    if (!v)
        return NULL;
    if (nullable && json_is_null(v))
        return NULL;
    if (!json_is_string(v)) {
        rd_fail(r, "%s.%s: expected a string", where, key);
        return NULL;
    }
    return xstrdup(json_string_value(v));
}

static uint64_t rd_uint(struct rd *r, json_t *o, const char *key, const char *where, uint64_t max)
{
    json_t *v = rd_get(r, o, key, where);
    if (!v)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 0 ||
        (uint64_t)json_integer_value(v) > max) {
        rd_fail(r, "%s.%s: expected an integer from 0 to %llu", where, key,
                (unsigned long long)max);
        return 0;
    }
    return (uint64_t)json_integer_value(v);
}

/* rd_uint for a key that may be missing (then def). */
static uint64_t rd_uint_or(struct rd *r, json_t *o, const char *key, const char *where, uint64_t max,
                           uint64_t def)
{
    if (!json_is_object(o) || !json_object_get(o, key))
        return def;
    return rd_uint(r, o, key, where, max);
}

static double rd_num(struct rd *r, json_t *o, const char *key, const char *where)
{
    json_t *v = rd_get(r, o, key, where);
    if (!v)
        return 0;
    if (!json_is_number(v)) {
        rd_fail(r, "%s.%s: expected a number", where, key);
        return 0;
    }
    return json_number_value(v);
}

static bool rd_bool(struct rd *r, json_t *o, const char *key, const char *where)
{
    json_t *v = rd_get(r, o, key, where);
    if (!v)
        return false;
    if (!json_is_boolean(v)) {
        rd_fail(r, "%s.%s: expected true or false", where, key);
        return false;
    }
    return json_is_true(v);
}

static int rd_enum(struct rd *r, json_t *o, const char *key, const char *where,
                   const char *(*name_of)(int), int count)
{
    char *s = rd_str(r, o, key, where, false);
    if (!s)
        return 0;
    for (int i = 0; i < count; i++)
        if (strcmp(name_of(i), s) == 0) {
            free(s);
            return i;
        }
    rd_fail(r, "%s.%s: unknown value \"%s\"", where, key, s);
    free(s);
    return 0;
}

static const char *lb_name_i(int i) { return cfg_lb_name((enum cfg_lb)i); }
static const char *deploy_name_i(int i)
{
    return cfg_deploy_strategy_name((enum cfg_deploy_strategy)i);
}
static const char *restart_name_i(int i) { return cfg_restart_name((enum cfg_restart)i); }

static char **rd_str_array(struct rd *r, json_t *v, const char *where, size_t *len_out)
{
    if (!json_is_array(v)) {
        rd_fail(r, "%s: expected a list", where);
        return NULL;
    }
    size_t n = json_array_size(v), len = 0;
    char **out = xcalloc(n + 1, sizeof(char *));
    for (size_t i = 0; i < n; i++) {
        json_t *it = json_array_get(v, i);
        if (!json_is_string(it)) {
            rd_fail(r, "%s[%zu]: expected a string", where, i);
            continue;
        }
        out[len++] = xstrdup(json_string_value(it));
    }
    if (len_out)
        *len_out = len;
    return out;
}

struct cfg_service *cfg_service_from_json(json_t *j, char *err, size_t errlen)
{
    struct rd r = {.err = err, .errlen = errlen};
    struct cfg_service *s = xcalloc(1, sizeof(*s));
    if (!json_is_object(j)) {
        rd_fail(&r, "service: expected an object");
        goto out;
    }
    s->name = rd_str(&r, j, "name", "service", false);
    json_t *cmd = rd_get(&r, j, "command", "service");
    if (cmd && !json_is_null(cmd)) {
        size_t n = 0;
        s->argv = rd_str_array(&r, cmd, "service.command", &n);
        if (s->argv && n == 0)
            rd_fail(&r, "service.command: empty");
    }
    s->build = rd_str(&r, j, "build", "service", true);
    s->workdir = rd_str(&r, j, "workdir", "service", true);
    s->image = rd_str(&r, j, "image", "service", true);
    /* revisions stored before runtime: existed ran as processes */
    json_t *rtv = json_object_get(j, "runtime");
    s->runtime = xstrdup(json_is_string(rtv) ? json_string_value(rtv) : "process");
    s->port = (unsigned)rd_uint(&r, j, "port", "service", 65535);
    s->replicas = (unsigned)rd_uint(&r, j, "replicas", "service", CFG_MAX_REPLICAS);

    json_t *a = rd_get(&r, j, "autoscale", "service");
    const char *w = "service.autoscale";
    s->autoscale.enabled = rd_bool(&r, a, "enabled", w);
    s->autoscale.min = (unsigned)rd_uint(&r, a, "min", w, CFG_MAX_REPLICAS);
    s->autoscale.max = (unsigned)rd_uint(&r, a, "max", w, CFG_MAX_REPLICAS);
    s->autoscale.cpu_percent = rd_num(&r, a, "cpu_percent", w);
    s->autoscale.requests_per_s = rd_num(&r, a, "requests_per_s", w);
    s->autoscale.interval_ms = rd_uint(&r, a, "interval_ms", w, UINT32_MAX);
    s->autoscale.up_stabilization_ms = rd_uint(&r, a, "up_stabilization_ms", w, UINT32_MAX);
    s->autoscale.down_stabilization_ms = rd_uint(&r, a, "down_stabilization_ms", w, UINT32_MAX);
    s->autoscale.tolerance = rd_num(&r, a, "tolerance", w);

    json_t *lb = rd_get(&r, j, "load_balancer", "service");
    s->lb_strategy = (enum cfg_lb)rd_enum(&r, lb, "strategy", "service.load_balancer", lb_name_i,
                                          (int)lb_count());
    s->lb_cookie = rd_str(&r, lb, "cookie", "service.load_balancer", false);
    /* added later: a revision stored before has none and gets the defaults */
    s->lb_max_conns = (unsigned)rd_uint_or(&r, lb, "max_conns", "service.load_balancer", 1000000, 0);
    s->lb_max_queue = (unsigned)rd_uint_or(&r, lb, "max_queue", "service.load_balancer", 1000000, 256);
    s->lb_queue_timeout_ms = rd_uint_or(&r, lb, "queue_timeout_ms", "service.load_balancer", UINT32_MAX, 5000);
    s->lb_body_timeout_ms = rd_uint_or(&r, lb, "body_timeout_ms", "service.load_balancer", UINT32_MAX, 20000);
    s->lb_min_body_rate = (unsigned)rd_uint_or(&r, lb, "min_body_rate", "service.load_balancer", 1u << 30, 500);

    json_t *h = rd_get(&r, j, "health", "service");
    w = "service.health";
    s->health.enabled = rd_bool(&r, h, "enabled", w);
    s->health.path = rd_str(&r, h, "path", w, false);
    s->health.interval_ms = rd_uint(&r, h, "interval_ms", w, UINT32_MAX);
    s->health.timeout_ms = rd_uint(&r, h, "timeout_ms", w, UINT32_MAX);
    s->health.healthy_threshold = (unsigned)rd_uint(&r, h, "healthy_threshold", w, 100);
    s->health.unhealthy_threshold = (unsigned)rd_uint(&r, h, "unhealthy_threshold", w, 100);
    s->health.start_period_ms = rd_uint(&r, h, "start_period_ms", w, UINT32_MAX);

    json_t *d = rd_get(&r, j, "deploy", "service");
    w = "service.deploy";
    s->deploy.strategy = (enum cfg_deploy_strategy)rd_enum(&r, d, "strategy", w, deploy_name_i,
                                                           CFG_DEPLOY_RECREATE + 1);
    s->deploy.max_surge = (unsigned)rd_uint(&r, d, "max_surge", w, CFG_MAX_REPLICAS);
    s->deploy.max_unavailable = (unsigned)rd_uint(&r, d, "max_unavailable", w, CFG_MAX_REPLICAS);
    s->deploy.drain_timeout_ms = rd_uint(&r, d, "drain_timeout_ms", w, UINT32_MAX);
    s->deploy.stop_grace_ms = rd_uint(&r, d, "stop_grace_ms", w, UINT32_MAX);

    json_t *p = rd_get(&r, j, "proxy", "service");
    json_t *doms = p ? rd_get(&r, p, "domains", "service.proxy") : NULL;
    if (doms)
        s->proxy.domains = rd_str_array(&r, doms, "service.proxy.domains", &s->proxy.domains_len);
    if (!s->proxy.domains)
        s->proxy.domains = xcalloc(1, sizeof(char *));
    s->proxy.port = (unsigned)rd_uint(&r, p, "port", "service.proxy", 65535);
    s->proxy.email = rd_str(&r, p, "email", "service.proxy", true);
    /* HTTPS keys came later: revisions stored before them lack them */
    json_t *hp = json_object_get(p, "https_port");
    s->proxy.https_port = json_is_integer(hp) ? (unsigned)json_integer_value(hp) : 0;
    json_t *tls = json_object_get(p, "tls");
    if (json_is_object(tls) && json_is_string(json_object_get(tls, "cert")) &&
        json_is_string(json_object_get(tls, "key"))) {
        s->proxy.tls_cert = xstrdup(json_string_value(json_object_get(tls, "cert")));
        s->proxy.tls_key = xstrdup(json_string_value(json_object_get(tls, "key")));
    }
    json_t *hs = json_object_get(p, "hsts");
    s->proxy.hsts_s = json_is_integer(hs) ? (uint64_t)json_integer_value(hs) : 0;
    json_t *ac = json_object_get(p, "acme");
    s->proxy.acme = json_is_string(ac) ? xstrdup(json_string_value(ac)) : NULL;

    json_t *env = rd_get(&r, j, "env", "service");
    if (env && !json_is_object(env))
        rd_fail(&r, "service.env: expected an object");
    else if (env) {
        const char *k;
        json_t *v;
        json_object_foreach(env, k, v)
        {
            if (!json_is_string(v)) {
                rd_fail(&r, "service.env.%s: expected a string", k);
                continue;
            }
            cfg__kv_set(&s->env, &s->env_len, k, json_string_value(v));
        }
    }
    s->restart = (enum cfg_restart)rd_enum(&r, j, "restart", "service", restart_name_i,
                                           CFG_RESTART_NEVER + 1);
    json_t *res = rd_get(&r, j, "resources", "service");
    s->resources.memory_bytes = rd_uint(&r, res, "memory_bytes", "service.resources", UINT64_MAX / 2);
    s->resources.cpus = rd_num(&r, res, "cpus", "service.resources");
out:
    if (r.bad) {
        cfg_service_free(s);
        return NULL;
    }
    return s;
}

struct cfg_service *cfg_service_dup(const struct cfg_service *s)
{
    json_t *j = cfg_service_to_json(s);
    char err[256];
    struct cfg_service *d = cfg_service_from_json(j, err, sizeof(err));
    json_decref(j);
    if (!d)
        die(1, "cfg_service_dup: %s", err); /* a service always survives its own JSON */
    return d;
}

void cfg_service_free(struct cfg_service *s)
{
    if (!s)
        return;
    cfg__service_clear(s);
    free(s);
}
