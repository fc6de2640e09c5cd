/* load.c — tako.yaml → struct cfg_file: libyaml document, key tables,
 * strict typed values, defaults, and cross-checks; every problem in one pass. */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/internal.h"
#include "acme/acme.h"
#include "tls/tls.h"
#include "core/net.h"
#include "core/util.h"
#include "proxy/proxy.h"
#include "runtime/docker_api.h"

#define MAX_MAP_ENTRIES 4096 /* per free-form mapping (services, env, ...) */
#define SCALAR_BUDGET 1000000 /* values read per load: bounds alias fan-out */

/* ---- reporting -------------------------------------------------------- */

static char *kpath(const char *path, const char *key)
{
    return path && *path ? xasprintf("%s.%s", path, key) : xstrdup(key);
}

static void vreport(struct cfg__ctx *c, enum cfg_severity sev, const yaml_node_t *n,
                    const char *path, const char *fmt, va_list ap)
{
    char *msg = NULL;
    if (vasprintf(&msg, fmt, ap) < 0)
        abort();
    unsigned line = n ? (unsigned)n->start_mark.line + 1 : 0;
    unsigned col = n ? (unsigned)n->start_mark.column + 1 : 0;
    cfg_diag_add(c->diag, sev, c->name, line, col, path, "%s", msg);
    free(msg);
}

static void __attribute__((format(printf, 4, 5)))
err_at(struct cfg__ctx *c, const yaml_node_t *n, const char *path, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(c, CFG_ERROR, n, path, fmt, ap);
    va_end(ap);
}

static void __attribute__((format(printf, 4, 5)))
warn_at(struct cfg__ctx *c, const yaml_node_t *n, const char *path, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(c, CFG_WARNING, n, path, fmt, ap);
    va_end(ap);
}

/* Error at PATH.KEY. */
static void __attribute__((format(printf, 5, 6)))
err_key(struct cfg__ctx *c, const yaml_node_t *n, const char *path, const char *key,
        const char *fmt, ...)
{
    char *kp = kpath(path, key);
    va_list ap;
    va_start(ap, fmt);
    vreport(c, CFG_ERROR, n, kp, fmt, ap);
    va_end(ap);
    free(kp);
}

/* ---- nodes ------------------------------------------------------------ */

static const yaml_node_t *get_node(struct cfg__ctx *c, int id)
{
    return yaml_document_get_node(c->doc, id);
}

static const char *kind(const yaml_node_t *n)
{
    switch (n->type) {
    case YAML_MAPPING_NODE:
        return "a mapping";
    case YAML_SEQUENCE_NODE:
        return "a list";
    default:
        return "a scalar";
    }
}

/* `key:`, `key: ~` and `key: null` mean "not set": the default applies. */
static bool is_null(const yaml_node_t *n)
{
    if (!n)
        return true;
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    const char *v = (const char *)n->data.scalar.value;
    return !*v || strcmp(v, "~") == 0 || strcmp(v, "null") == 0 || strcmp(v, "Null") == 0 ||
           strcmp(v, "NULL") == 0;
}

static bool spend(struct cfg__ctx *c, const yaml_node_t *n)
{
    if (c->budget == 0)
        return false;
    if (--c->budget == 0) {
        err_at(c, n, NULL, "too many values to read (more than %d; aliases expanding too much?)",
               SCALAR_BUDGET);
        return false;
    }
    return true;
}

/* The ${VAR}-expanded text of scalar N; NULL (reported) otherwise.
 * EXPECT names the wanted type for the message. */
static char *scalar(struct cfg__ctx *c, const yaml_node_t *n, const char *path, const char *key,
                    const char *expect)
{
    if (!spend(c, n))
        return NULL;
    if (n->type != YAML_SCALAR_NODE) {
        err_key(c, n, path, key, "expected %s, got %s", expect, kind(n));
        return NULL;
    }
    const char *raw = (const char *)n->data.scalar.value;
    if (strlen(raw) != n->data.scalar.length) {
        err_key(c, n, path, key, "NUL byte in value");
        return NULL;
    }
    char *kp = kpath(path, key);
    char *v = cfg__expand(c, raw, n, kp);
    free(kp);
    return v;
}

static void set_str(struct cfg__ctx *c, const yaml_node_t *n, const char *path, const char *key,
                    char **dst)
{
    if (is_null(n))
        return;
    char *v = scalar(c, n, path, key, "a string");
    if (!v)
        return;
    free(*dst);
    *dst = v;
}

static bool set_uint(struct cfg__ctx *c, const yaml_node_t *n, const char *path, const char *key,
                     unsigned min, unsigned max, unsigned *dst)
{
    if (is_null(n))
        return true;
    char *v = scalar(c, n, path, key, "an integer");
    if (!v)
        return false;
    uint64_t x;
    bool ok = parse_uint(v, max, &x) == 0 && x >= min;
    if (ok)
        *dst = (unsigned)x;
    else
        err_key(c, n, path, key, "expected an integer from %u to %u, got \"%s\"", min, max, v);
    free(v);
    return ok;
}

static bool set_bool(struct cfg__ctx *c, const yaml_node_t *n, const char *path, const char *key,
                     bool *dst)
{
    static const char *yes[] = {"true", "yes", "on"}, *no[] = {"false", "no", "off"};
    if (is_null(n))
        return true;
    char *v = scalar(c, n, path, key, "true or false");
    if (!v)
        return false;
    bool ok = false;
    for (size_t i = 0; i < ARRAY_LEN(yes); i++) {
        if (strcasecmp(v, yes[i]) == 0) {
            *dst = true;
            ok = true;
        } else if (strcasecmp(v, no[i]) == 0) {
            *dst = false;
            ok = true;
        }
    }
    if (!ok)
        err_key(c, n, path, key, "expected true or false, got \"%s\"", v);
    free(v);
    return ok;
}

static bool set_duration(struct cfg__ctx *c, const yaml_node_t *n, const char *path,
                         const char *key, uint64_t min_ms, uint64_t *dst)
{
    if (is_null(n))
        return true;
    char *v = scalar(c, n, path, key, "a duration");
    if (!v)
        return false;
    uint64_t ms;
    bool ok = false;
    if (parse_duration_ms(v, &ms) != 0)
        err_key(c, n, path, key, "expected a duration like 500ms, 10s or 2m, got \"%s\"", v);
    else if (ms < min_ms)
        err_key(c, n, path, key, "must be at least %llums, got \"%s\"", (unsigned long long)min_ms,
                v);
    else if (ms > 7ull * 86400000)
        err_key(c, n, path, key, "must be at most 7d, got \"%s\"", v);
    else {
        *dst = ms;
        ok = true;
    }
    free(v);
    return ok;
}

static bool set_size(struct cfg__ctx *c, const yaml_node_t *n, const char *path, const char *key,
                     uint64_t *dst)
{
    if (is_null(n))
        return true;
    char *v = scalar(c, n, path, key, "a size");
    if (!v)
        return false;
    uint64_t b;
    bool ok = parse_size_bytes(v, &b) == 0;
    if (ok)
        *dst = b;
    else
        err_key(c, n, path, key, "expected a size like 512m or 1g, got \"%s\"", v);
    free(v);
    return ok;
}

static bool set_percent(struct cfg__ctx *c, const yaml_node_t *n, const char *path,
                        const char *key, double min, double max, double *dst)
{
    if (is_null(n))
        return true;
    char *v = scalar(c, n, path, key, "a percentage");
    if (!v)
        return false;
    double p;
    bool ok = parse_percent(v, &p) == 0 && p >= min && p <= max;
    if (ok)
        *dst = p;
    else
        err_key(c, n, path, key, "expected a percentage from %g%% to %g%% like 70%%, got \"%s\"",
                min, max, v);
    free(v);
    return ok;
}

static bool set_number(struct cfg__ctx *c, const yaml_node_t *n, const char *path,
                       const char *key, double min, double max, double *dst)
{
    if (is_null(n))
        return true;
    char *v = scalar(c, n, path, key, "a number");
    if (!v)
        return false;
    /* Digits with an optional fraction; strtod alone would take "inf", "0x1p3". */
    bool ok = *v != '\0';
    for (const char *p = v; *p; p++)
        if (!isdigit((unsigned char)*p) && *p != '.')
            ok = false;
    char *end = NULL;
    double x = ok ? strtod(v, &end) : 0;
    ok = ok && end && *end == '\0' && isfinite(x) && x >= min && x <= max;
    if (ok)
        *dst = x;
    else
        err_key(c, n, path, key, "expected a number from %g to %g, got \"%s\"", min, max, v);
    free(v);
    return ok;
}

/* One of NAMES (also accepted with - for _); the index goes to *dst. */
static bool set_enum(struct cfg__ctx *c, const yaml_node_t *n, const char *path, const char *key,
                     const char *what, const char *const *names, size_t count, int *dst)
{
    if (is_null(n))
        return true;
    char *v = scalar(c, n, path, key, what);
    if (!v)
        return false;
    char *norm = xstrdup(v);
    for (char *p = norm; *p; p++)
        *p = *p == '-' ? '_' : (char)tolower((unsigned char)*p);
    size_t best = SIZE_MAX, best_d = SIZE_MAX;
    for (size_t i = 0; i < count; i++) {
        char *nn = xstrdup(names[i]);
        for (char *p = nn; *p; p++)
            if (*p == '-')
                *p = '_';
        bool eq = strcmp(norm, nn) == 0;
        size_t d = str_edit_distance(norm, nn);
        free(nn);
        if (eq) {
            *dst = (int)i;
            free(norm);
            free(v);
            return true;
        }
        if (d < best_d) {
            best_d = d;
            best = i;
        }
    }
    char *list = NULL;
    size_t ll = 0;
    FILE *f = open_memstream(&list, &ll);
    if (!f)
        abort();
    for (size_t i = 0; i < count; i++)
        fprintf(f, "%s%s", i ? ", " : "", names[i]);
    fclose(f);
    if (best != SIZE_MAX && best_d <= 2 && best_d < strlen(v))
        err_key(c, n, path, key, "unknown %s \"%s\" (expected %s); did you mean \"%s\"?", what, v,
                list, names[best]);
    else
        err_key(c, n, path, key, "unknown %s \"%s\" (expected %s)", what, v, list);
    free(list);
    free(norm);
    free(v);
    return false;
}

static const char *best_match(const char *word, const char *const *names, size_t count)
{
    const char *best = NULL;
    size_t best_d = SIZE_MAX;
    for (size_t i = 0; i < count; i++) {
        size_t d = str_edit_distance(word, names[i]);
        if (d < best_d) {
            best_d = d;
            best = names[i];
        }
    }
    size_t len = strlen(word);
    size_t limit = len < 4 ? 1 : len < 8 ? 2 : 3;
    return best_d <= limit ? best : NULL;
}

/* A mapping with a fixed set of keys. VALS[i] receives the value of NAMES[i]
 * (NULL when absent). Unknown keys get a did-you-mean; duplicates are errors.
 * Returns false when MAP is not a mapping (reported). */
static bool walk_map(struct cfg__ctx *c, const yaml_node_t *map, const char *path,
                     const char *const *names, size_t count, const yaml_node_t **vals)
{
    for (size_t i = 0; i < count; i++)
        vals[i] = NULL;
    if (is_null(map))
        return true;
    if (map->type != YAML_MAPPING_NODE) {
        err_at(c, map, path, "expected a mapping, got %s", kind(map));
        return false;
    }
    const yaml_node_t **keys = xcalloc(count, sizeof(*keys));
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        const yaml_node_t *k = get_node(c, p->key), *v = get_node(c, p->value);
        if (!k || !v || !spend(c, k))
            continue;
        if (k->type != YAML_SCALAR_NODE) {
            err_at(c, k, path, "a key must be a plain name, got %s", kind(k));
            continue;
        }
        const char *name = (const char *)k->data.scalar.value;
        size_t i = 0;
        while (i < count && strcmp(names[i], name) != 0)
            i++;
        if (i == count) {
            const char *hint = best_match(name, names, count);
            char *kp = kpath(path, name);
            if (hint)
                err_at(c, k, kp, "unknown key \"%s\"; did you mean \"%s\"?", name, hint);
            else {
                char *list = NULL;
                size_t ll = 0;
                FILE *f = open_memstream(&list, &ll);
                if (!f)
                    abort();
                for (size_t j = 0; j < count; j++)
                    fprintf(f, "%s%s", j ? ", " : "", names[j]);
                fclose(f);
                err_at(c, k, kp, "unknown key \"%s\" (expected one of: %s)", name, list);
                free(list);
            }
            free(kp);
            continue;
        }
        if (keys[i]) {
            char *kp = kpath(path, name);
            err_at(c, k, kp, "duplicate key \"%s\" (first at line %u)", name,
                   (unsigned)keys[i]->start_mark.line + 1);
            free(kp);
            continue;
        }
        keys[i] = k;
        vals[i] = v;
    }
    free(keys);
    return true;
}

struct pair {
    char *key; /* not ${}-expanded: names are literal */
    const yaml_node_t *knode, *vnode;
};

/* A mapping with free-form keys (servers, environments, services, env,
 * labels). Returns the number of valid pairs in *out (caller frees the
 * array and keys); duplicates and non-scalar keys are reported and skipped. */
static size_t map_pairs(struct cfg__ctx *c, const yaml_node_t *map, const char *path,
                        struct pair **out)
{
    *out = NULL;
    if (is_null(map))
        return 0;
    if (map->type != YAML_MAPPING_NODE) {
        err_at(c, map, path, "expected a mapping, got %s", kind(map));
        return 0;
    }
    size_t total = (size_t)(map->data.mapping.pairs.top - map->data.mapping.pairs.start);
    if (total > MAX_MAP_ENTRIES) {
        err_at(c, map, path, "too many entries (%zu; at most %d)", total, MAX_MAP_ENTRIES);
        return 0;
    }
    struct pair *v = xcalloc(total ? total : 1, sizeof(*v));
    size_t n = 0;
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        const yaml_node_t *k = get_node(c, p->key), *val = get_node(c, p->value);
        if (!k || !val || !spend(c, k))
            continue;
        if (k->type != YAML_SCALAR_NODE) {
            err_at(c, k, path, "a key must be a plain name, got %s", kind(k));
            continue;
        }
        const char *name = (const char *)k->data.scalar.value;
        if (strlen(name) != k->data.scalar.length) {
            err_at(c, k, path, "NUL byte in key");
            continue;
        }
        size_t i = 0;
        while (i < n && strcmp(v[i].key, name) != 0)
            i++;
        if (i < n) {
            char *kp = kpath(path, name);
            err_at(c, k, kp, "duplicate key \"%s\" (first at line %u)", name,
                   (unsigned)v[i].knode->start_mark.line + 1);
            free(kp);
            continue;
        }
        v[n].key = xstrdup(name);
        v[n].knode = k;
        v[n].vnode = val;
        n++;
    }
    *out = v;
    return n;
}

static void pairs_free(struct pair *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i].key);
    free(v);
}

/* A list of strings; a single scalar counts as a one-item list. */
static void set_str_list(struct cfg__ctx *c, const yaml_node_t *n, const char *path,
                         const char *key, char ***dst, size_t *dst_len)
{
    if (is_null(n))
        return;
    char **v = NULL;
    size_t len = 0;
    if (n->type == YAML_MAPPING_NODE) {
        err_key(c, n, path, key, "expected a list of strings, got a mapping");
        return;
    }
    if (n->type == YAML_SCALAR_NODE) {
        char *s = scalar(c, n, path, key, "a string");
        if (!s)
            return;
        v = xcalloc(2, sizeof(char *));
        v[len++] = s;
    } else {
        size_t total = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
        if (total > MAX_MAP_ENTRIES) {
            err_key(c, n, path, key, "too many items (%zu; at most %d)", total, MAX_MAP_ENTRIES);
            return;
        }
        v = xcalloc(total + 1, sizeof(char *));
        size_t idx = 0;
        for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top;
             it++, idx++) {
            const yaml_node_t *item = get_node(c, *it);
            if (!item)
                continue;
            char *ik = xasprintf("%s[%zu]", key, idx);
            char *s = is_null(item) ? NULL : scalar(c, item, path, ik, "a string");
            if (is_null(item))
                err_key(c, item, path, ik, "empty item");
            free(ik);
            if (s)
                v[len++] = s;
        }
    }
    for (size_t i = 0; i < *dst_len; i++)
        free((*dst)[i]);
    free(*dst);
    *dst = v;
    *dst_len = len;
}

/* ---- names ------------------------------------------------------------ */

/* Project and service names become process and host names: [a-z0-9-]. */
static bool dns_label(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 63 || s[0] == '-' || s[n - 1] == '-')
        return false;
    for (size_t i = 0; i < n; i++)
        if (!(islower((unsigned char)s[i]) || isdigit((unsigned char)s[i]) || s[i] == '-'))
            return false;
    return true;
}

/* Environment and server names are looser: letters, digits, - _ . */
static bool plain_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 63 || !isalnum((unsigned char)s[0]))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '-' || s[i] == '_' || s[i] == '.'))
            return false;
    return true;
}

static bool valid_domain(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 253)
        return false;
    const char *p = s;
    if (strncmp(p, "*.", 2) == 0)
        p += 2;
    size_t label = 0;
    for (; *p; p++) {
        if (*p == '.') {
            if (label == 0)
                return false;
            label = 0;
            continue;
        }
        if (!(isalnum((unsigned char)*p) || *p == '-') || ++label > 63)
            return false;
    }
    return label > 0;
}

static bool valid_env_key(const char *s)
{
    if (!*s || !(isalpha((unsigned char)*s) || *s == '_'))
        return false;
    for (; *s; s++)
        if (!(isalnum((unsigned char)*s) || *s == '_'))
            return false;
    return true;
}

/* ---- enums and defaults ----------------------------------------------- */

static const char *const deploy_names[] = {"rolling", "recreate"};
static const char *const restart_names[] = {"always", "on-failure", "never"};
static const char *const runtime_names[] = {"process", "docker"};
static const char *const network_names[] = {"host", "bridge"};

/* The strategies are the balancer's table (proxy/lb_table.c): a strategy
 * added there is valid here with no change. */
#define LB_NAMES_MAX 32
static size_t lb_names(const char *out[LB_NAMES_MAX])
{
    size_t n = lb_count() < LB_NAMES_MAX ? lb_count() : LB_NAMES_MAX;
    for (size_t i = 0; i < n; i++)
        out[i] = lb_kind_name((enum lb_kind)i);
    return n;
}

const char *cfg_lb_name(enum cfg_lb lb)
{
    return lb_kind_name((enum lb_kind)lb);
}

int cfg_lb_parse(const char *s, enum cfg_lb *out)
{
    const char *names[LB_NAMES_MAX];
    size_t n = lb_names(names);
    for (size_t i = 0; i < n; i++)
        if (strcmp(s, names[i]) == 0) {
            *out = (enum cfg_lb)i;
            return 0;
        }
    return -EINVAL;
}

const char *cfg_deploy_strategy_name(enum cfg_deploy_strategy s)
{
    return (unsigned)s < ARRAY_LEN(deploy_names) ? deploy_names[s] : "?";
}

const char *cfg_restart_name(enum cfg_restart r)
{
    return (unsigned)r < ARRAY_LEN(restart_names) ? restart_names[r] : "?";
}

void cfg__service_defaults(struct cfg_service *s, const char *dir)
{
    s->build = xstrdup(dir);
    s->runtime = xstrdup("process");
    s->network = xstrdup("host");
    s->replicas = 1;
    s->autoscale = (struct cfg_autoscale){
        .enabled = false,
        .min = 1,
        .max = 1,
        .interval_ms = 15000,
        .up_stabilization_ms = 0,
        .down_stabilization_ms = 300000,
        .tolerance = 0.1,
    };
    s->lb_strategy = CFG_LB_ROUND_ROBIN;
    s->lb_cookie = xstrdup("tako_sticky");
    s->lb_max_conns = 0;
    s->lb_max_queue = 256;
    s->lb_queue_timeout_ms = 5000;
    s->lb_body_timeout_ms = 20000;
    s->lb_min_body_rate = 500;
    s->health = (struct cfg_health){
        .enabled = true,
        .path = xstrdup("/health"),
        .interval_ms = 2000,
        .timeout_ms = 1000,
        .healthy_threshold = 1,
        .unhealthy_threshold = 3,
        .start_period_ms = 0,
    };
    s->deploy = (struct cfg_deploy){
        .strategy = CFG_DEPLOY_ROLLING,
        .max_surge = 1,
        .max_unavailable = 0,
        .drain_timeout_ms = 30000,
        .stop_grace_ms = 10000,
    };
    s->proxy.domains = xcalloc(1, sizeof(char *));
    s->placement_servers = xcalloc(1, sizeof(char *));
    s->restart = CFG_RESTART_ALWAYS;
}

void cfg__service_clear(struct cfg_service *s)
{
    free(s->name);
    cfg_argv_free(s->argv);
    free(s->build);
    free(s->workdir);
    free(s->image);
    free(s->runtime);
    free(s->network);
    free(s->lb_cookie);
    free(s->health.path);
    if (s->proxy.domains)
        for (size_t i = 0; i < s->proxy.domains_len; i++)
            free(s->proxy.domains[i]);
    free(s->proxy.domains);
    free(s->proxy.email);
    free(s->proxy.tls_cert);
    free(s->proxy.tls_key);
    free(s->proxy.acme);
    cfg__kv_free(s->env, s->env_len);
    if (s->placement_servers)
        for (size_t i = 0; i < s->placement_servers_len; i++)
            free(s->placement_servers[i]);
    free(s->placement_servers);
    cfg__kv_free(s->placement_labels, s->placement_labels_len);
    memset(s, 0, sizeof(*s));
}

/* ---- services --------------------------------------------------------- */

/* Where the user wrote a health interval and timeout (NULL: not written),
 * so defaults can follow the written values and a conflict names both. */
struct health_written {
    const yaml_node_t *interval, *timeout;
    char *interval_path, *timeout_path;
};

/* Health settings: `healthCheck` and tako-cli's `loadBalancer.healthCheck`
 * share one key set. Returns true when `enabled` was given. */
static bool load_health(struct cfg__ctx *c, const yaml_node_t *n, const char *path,
                        struct cfg_health *h, bool *enabled_set, struct health_written *hw)
{
    enum { K_ENABLED, K_PATH, K_INTERVAL, K_TIMEOUT, K_HEALTHY, K_UNHEALTHY, K_RETRIES, K_START };
    static const char *const keys[] = {"enabled",          "path",
                                       "interval",         "timeout",
                                       "healthyThreshold", "unhealthyThreshold",
                                       "retries",          "startPeriod"};
    const yaml_node_t *v[ARRAY_LEN(keys)];
    if (!walk_map(c, n, path, keys, ARRAY_LEN(keys), v))
        return false;
    if (v[K_ENABLED] && !is_null(v[K_ENABLED]))
        *enabled_set = true;
    set_bool(c, v[K_ENABLED], path, "enabled", &h->enabled);
    if (v[K_PATH] && !is_null(v[K_PATH])) {
        char *p = NULL;
        set_str(c, v[K_PATH], path, "path", &p);
        if (p && (p[0] != '/' || strpbrk(p, " \t\r\n"))) {
            err_key(c, v[K_PATH], path, "path", "must start with / and have no blanks, got \"%s\"",
                    p);
            free(p);
        } else if (p) {
            free(h->path);
            h->path = p;
        }
    }
    set_duration(c, v[K_INTERVAL], path, "interval", 1, &h->interval_ms);
    set_duration(c, v[K_TIMEOUT], path, "timeout", 1, &h->timeout_ms);
    if (v[K_INTERVAL] && !is_null(v[K_INTERVAL])) {
        hw->interval = v[K_INTERVAL];
        free(hw->interval_path);
        hw->interval_path = kpath(path, "interval");
    }
    if (v[K_TIMEOUT] && !is_null(v[K_TIMEOUT])) {
        hw->timeout = v[K_TIMEOUT];
        free(hw->timeout_path);
        hw->timeout_path = kpath(path, "timeout");
    }
    set_uint(c, v[K_HEALTHY], path, "healthyThreshold", 1, 100, &h->healthy_threshold);
    if (v[K_UNHEALTHY] && v[K_RETRIES])
        err_key(c, v[K_RETRIES], path, "retries",
                "retries is another name for unhealthyThreshold: give only one");
    set_uint(c, v[K_UNHEALTHY], path, "unhealthyThreshold", 1, 100, &h->unhealthy_threshold);
    set_uint(c, v[K_RETRIES], path, "retries", 1, 100, &h->unhealthy_threshold);
    set_duration(c, v[K_START], path, "startPeriod", 0, &h->start_period_ms);
    return true;
}

/* Defaults follow what the user wrote: an unwritten timeout is at most the
 * interval, an unwritten interval at least the timeout. Only two written
 * values can conflict, and the error names both places. */
static void health_defaults(struct cfg__ctx *c, struct cfg_health *h, struct health_written *hw)
{
    if (hw->interval && !hw->timeout && h->timeout_ms > h->interval_ms)
        h->timeout_ms = h->interval_ms;
    if (hw->timeout && !hw->interval && h->interval_ms < h->timeout_ms)
        h->interval_ms = h->timeout_ms;
    if (hw->interval && hw->timeout && h->timeout_ms > h->interval_ms)
        err_at(c, hw->timeout, hw->timeout_path,
               "timeout (%llums) must not be longer than %s (%llums, at %s:%u:%u)",
               (unsigned long long)h->timeout_ms, hw->interval_path,
               (unsigned long long)h->interval_ms, c->name,
               (unsigned)hw->interval->start_mark.line + 1,
               (unsigned)hw->interval->start_mark.column + 1);
    free(hw->interval_path);
    free(hw->timeout_path);
    memset(hw, 0, sizeof(*hw));
}

static void load_replicas(struct cfg__ctx *c, const yaml_node_t *n, const char *path,
                          struct cfg_service *s)
{
    if (is_null(n))
        return;
    if (n->type != YAML_MAPPING_NODE) {
        if (n->type == YAML_SEQUENCE_NODE)
            err_key(c, n, path, "replicas",
                    "expected an integer or a mapping {min, max, cpu, requests}, got a list");
        else
            set_uint(c, n, path, "replicas", 0, CFG_MAX_REPLICAS, &s->replicas);
        return;
    }
    enum { K_MIN, K_MAX, K_CPU, K_REQ, K_INTERVAL, K_UP, K_DOWN, K_TOL };
    static const char *const keys[] = {"min",
                                       "max",
                                       "cpu",
                                       "requests",
                                       "interval",
                                       "scaleUpStabilization",
                                       "scaleDownStabilization",
                                       "tolerance"};
    const yaml_node_t *v[ARRAY_LEN(keys)];
    char *rp = kpath(path, "replicas");
    struct cfg_autoscale *a = &s->autoscale;
    if (!walk_map(c, n, rp, keys, ARRAY_LEN(keys), v))
        goto out;
    a->enabled = true;
    bool ok = true;
    if (!v[K_MIN] || is_null(v[K_MIN]))
        a->min = 1;
    ok &= set_uint(c, v[K_MIN], rp, "min", 1, CFG_MAX_REPLICAS, &a->min);
    if (!v[K_MAX] || is_null(v[K_MAX])) {
        err_at(c, n, rp, "autoscaling needs max (the most replicas to run)");
        ok = false;
    }
    ok &= set_uint(c, v[K_MAX], rp, "max", 1, CFG_MAX_REPLICAS, &a->max);
    set_percent(c, v[K_CPU], rp, "cpu", 1, 10000, &a->cpu_percent);
    set_number(c, v[K_REQ], rp, "requests", 0.001, 1e9, &a->requests_per_s);
    set_duration(c, v[K_INTERVAL], rp, "interval", 100, &a->interval_ms);
    set_duration(c, v[K_UP], rp, "scaleUpStabilization", 0, &a->up_stabilization_ms);
    set_duration(c, v[K_DOWN], rp, "scaleDownStabilization", 0, &a->down_stabilization_ms);
    double tol = a->tolerance * 100;
    if (set_percent(c, v[K_TOL], rp, "tolerance", 0, 100, &tol))
        a->tolerance = tol / 100;
    if (ok && a->min > a->max)
        err_key(c, v[K_MAX], rp, "max", "max (%u) must be at least min (%u)", a->max, a->min);
    if ((!v[K_CPU] || is_null(v[K_CPU])) && (!v[K_REQ] || is_null(v[K_REQ])))
        err_at(c, n, rp, "autoscaling needs a target: cpu (like 70%%) or requests (per second "
                         "per replica)");
    s->replicas = a->min;
out:
    free(rp);
}

static void load_command(struct cfg__ctx *c, const yaml_node_t *n, const char *path,
                         struct cfg_service *s)
{
    if (is_null(n))
        return;
    char **argv = NULL;
    if (n->type == YAML_SCALAR_NODE) {
        char *cmd = scalar(c, n, path, "command", "a string");
        if (!cmd)
            return;
        char err[256];
        if (cfg_split_command(cmd, &argv, err, sizeof(err)) != 0)
            err_key(c, n, path, "command", "%s", err);
        free(cmd);
    } else if (n->type == YAML_SEQUENCE_NODE) {
        size_t total = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
        if (total == 0) {
            err_key(c, n, path, "command", "empty command");
            return;
        }
        if (total > MAX_MAP_ENTRIES) {
            err_key(c, n, path, "command", "too many arguments");
            return;
        }
        argv = xcalloc(total + 1, sizeof(char *));
        size_t len = 0, idx = 0;
        bool bad = false;
        for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top;
             it++, idx++) {
            const yaml_node_t *item = get_node(c, *it);
            if (!item)
                continue;
            char *ik = xasprintf("command[%zu]", idx);
            char *a = scalar(c, item, path, ik, "a string");
            free(ik);
            if (a)
                argv[len++] = a;
            else
                bad = true;
        }
        if (bad || len == 0) {
            cfg_argv_free(argv);
            argv = NULL;
        }
    } else {
        err_key(c, n, path, "command", "expected a string or a list of strings, got a mapping");
    }
    if (argv) {
        cfg_argv_free(s->argv);
        s->argv = argv;
    }
}

static void load_env(struct cfg__ctx *c, const yaml_node_t *envfile, const yaml_node_t *env,
                     const char *path, struct cfg_service *s)
{
    char **files = NULL;
    size_t nfiles = 0;
    set_str_list(c, envfile, path, "envFile", &files, &nfiles);
    for (size_t i = 0; i < nfiles; i++) {
        char *p = cfg__path_join(c->dir, files[i]);
        char *data = NULL;
        size_t len = 0;
        int r = cfg__read_file(p, CFG_MAX_FILE_BYTES, &data, &len);
        if (r < 0)
            err_key(c, envfile, path, "envFile", "cannot read %s: %s", p, strerror(-r));
        else
            cfg__dotenv_parse(p, data, len, &s->env, &s->env_len, c->diag);
        free(data);
        free(p);
        free(files[i]);
    }
    free(files);

    struct pair *pairs;
    char *ep = kpath(path, "env");
    size_t n = map_pairs(c, env, ep, &pairs);
    for (size_t i = 0; i < n; i++) {
        if (!valid_env_key(pairs[i].key)) {
            err_at(c, pairs[i].knode, ep,
                   "invalid variable name \"%s\" (letters, digits and _, not starting with a "
                   "digit)",
                   pairs[i].key);
            continue;
        }
        char *val = is_null(pairs[i].vnode)
                        ? xstrdup("")
                        : scalar(c, pairs[i].vnode, ep, pairs[i].key, "a string");
        if (val)
            cfg__kv_set(&s->env, &s->env_len, pairs[i].key, val);
        free(val);
    }
    pairs_free(pairs, n);
    free(ep);
}

bool cfg_proxy_https(const struct cfg_proxy *p)
{
    return p->tls_cert || (p->domains_len && p->email);
}

/* proxy.tls {cert, key}, proxy.hsts, proxy.acme. */
static void load_proxy_tls(struct cfg__ctx *c, const yaml_node_t *tls, const yaml_node_t *hsts,
                           const yaml_node_t *acme, const char *pp, struct cfg_service *s)
{
    if (tls && !is_null(tls)) {
        enum { T_CERT, T_KEY };
        static const char *const tk[] = {"cert", "key"};
        const yaml_node_t *t[ARRAY_LEN(tk)];
        char *tp = kpath(pp, "tls");
        if (walk_map(c, tls, tp, tk, ARRAY_LEN(tk), t)) {
            char *cert = NULL, *key = NULL;
            set_str(c, t[T_CERT], tp, "cert", &cert);
            set_str(c, t[T_KEY], tp, "key", &key);
            if (!cert || !key) {
                err_at(c, tls, tp, "give both cert and key (PEM files)");
            } else {
                s->proxy.tls_cert = cfg__path_join(c->dir, cert);
                s->proxy.tls_key = cfg__path_join(c->dir, key);
                struct tls_cert_info ci;
                int r = tls_cert_info_file(s->proxy.tls_cert, &ci);
                if (r == -EINVAL)
                    err_key(c, t[T_CERT], tp, "cert", "%s is not a PEM certificate",
                            s->proxy.tls_cert);
                else if (r < 0)
                    err_key(c, t[T_CERT], tp, "cert", "%s: %s", s->proxy.tls_cert, strerror(-r));
                if (access(s->proxy.tls_key, R_OK) != 0)
                    err_key(c, t[T_KEY], tp, "key", "%s: %s", s->proxy.tls_key, strerror(errno));
            }
            free(cert);
            free(key);
        }
        free(tp);
    }
    if (hsts && !is_null(hsts)) {
        char *v = scalar(c, hsts, pp, "hsts", "true, false or a duration");
        uint64_t ms;
        if (!v) {
        } else if (strcasecmp(v, "true") == 0 || strcasecmp(v, "yes") == 0) {
            s->proxy.hsts_s = 31536000; /* one year */
        } else if (strcasecmp(v, "false") == 0 || strcasecmp(v, "no") == 0) {
            s->proxy.hsts_s = 0;
        } else if (parse_duration_ms(v, &ms) == 0 && ms >= 1000) {
            s->proxy.hsts_s = ms / 1000;
        } else {
            err_key(c, hsts, pp, "hsts", "expected true, false or a duration like 8760h, got \"%s\"", v);
        }
        free(v);
    }
    if (acme && !is_null(acme)) {
        char *v = scalar(c, acme, pp, "acme", "production, staging or a directory URL");
        if (v && strcmp(v, "production") == 0) {
            s->proxy.acme = xstrdup(ACME_LETSENCRYPT);
        } else if (v && strcmp(v, "staging") == 0) {
            s->proxy.acme = xstrdup(ACME_LETSENCRYPT_STAGING);
        } else if (v && (str_starts_with(v, "https://") || str_starts_with(v, "http://"))) {
            s->proxy.acme = xstrdup(v);
        } else if (v) {
            err_key(c, acme, pp, "acme",
                    "expected production, staging or an ACME directory URL (https://…), got \"%s\"", v);
        }
        free(v);
    }
}

static void load_proxy(struct cfg__ctx *c, const yaml_node_t *n, const char *path,
                       struct cfg_service *s)
{
    enum { K_DOMAIN, K_DOMAINS, K_PORT, K_EMAIL, K_TLS, K_HSTS, K_ACME };
    static const char *const keys[] = {"domain", "domains", "port", "email", "tls", "hsts", "acme"};
    const yaml_node_t *v[ARRAY_LEN(keys)];
    char *pp = kpath(path, "proxy");
    if (!walk_map(c, n, pp, keys, ARRAY_LEN(keys), v))
        goto out;
    if (v[K_DOMAIN] && v[K_DOMAINS] && !is_null(v[K_DOMAIN]) && !is_null(v[K_DOMAINS]))
        err_key(c, v[K_DOMAINS], pp, "domains", "give either domain or domains, not both");
    const yaml_node_t *dn = v[K_DOMAINS] && !is_null(v[K_DOMAINS]) ? v[K_DOMAINS] : v[K_DOMAIN];
    const char *dk = dn == v[K_DOMAINS] ? "domains" : "domain";
    if (dn == v[K_DOMAIN] && dn && dn->type != YAML_SCALAR_NODE)
        err_key(c, dn, pp, "domain", "expected a string, got %s (use domains: for a list)",
                kind(dn));
    else
        set_str_list(c, dn, pp, dk, &s->proxy.domains, &s->proxy.domains_len);
    if (!s->proxy.domains)
        s->proxy.domains = xcalloc(1, sizeof(char *));
    for (size_t i = 0; i < s->proxy.domains_len; i++) {
        char *d = s->proxy.domains[i];
        for (char *q = d; *q; q++)
            *q = (char)tolower((unsigned char)*q);
        if (!valid_domain(d))
            err_key(c, dn, pp, dk,
                    "invalid domain \"%s\" (a host name like app.example.com, no scheme or port)",
                    d);
        for (size_t j = 0; j < i; j++)
            if (strcmp(s->proxy.domains[j], d) == 0)
                err_key(c, dn, pp, dk, "domain \"%s\" is listed twice", d);
    }
    set_uint(c, v[K_PORT], pp, "port", 0, 65535, &s->proxy.port);
    set_str(c, v[K_EMAIL], pp, "email", &s->proxy.email);
    if (s->proxy.email && !strchr(s->proxy.email, '@'))
        err_key(c, v[K_EMAIL], pp, "email", "expected an e-mail address, got \"%s\"",
                s->proxy.email);
    load_proxy_tls(c, v[K_TLS], v[K_HSTS], v[K_ACME], pp, s);
    if (s->proxy.email && s->proxy.domains_len == 0 && !s->proxy.tls_cert)
        warn_at(c, v[K_EMAIL], pp,
                "email is set but no domain: there is nothing to get a certificate for");
out:
    free(pp);
}

static void where(struct cfg__ctx *c, const yaml_node_t *n, const char *path, struct cfg_service *s)
{
    snprintf(s->runtime_at, sizeof(s->runtime_at), "%s:%u:%u", c->name,
             n ? (unsigned)n->start_mark.line + 1 : 0, n ? (unsigned)n->start_mark.column + 1 : 0);
    snprintf(s->runtime_path, sizeof(s->runtime_path), "%s", path);
}

/* runtime: (the service's, else the environment's) and what it needs:
 * docker runs image: (a valid reference) or builds the build directory's
 * Dockerfile; process needs nothing more here. */
static void load_runtime(struct cfg__ctx *c, const yaml_node_t *rn, const yaml_node_t *in,
                         const yaml_node_t *knode, const char *path, struct cfg_service *s)
{
    int rt = 0;
    const yaml_node_t *at = rn;
    char *rpath = kpath(path, "runtime");
    if (!is_null(rn)) {
        if (!set_enum(c, rn, path, "runtime", "runtime", runtime_names, ARRAY_LEN(runtime_names),
                      &rt)) {
            free(rpath);
            return;
        }
    } else if (c->env_runtime) {
        rt = strcmp(c->env_runtime, "docker") == 0 ? 1 : 0;
        at = c->env_runtime_node;
        free(rpath);
        rpath = xstrdup(c->env_runtime_path);
    } else {
        at = knode;
    }
    free(s->runtime);
    s->runtime = xstrdup(runtime_names[rt]);
    where(c, at ? at : knode, rpath, s);
    free(rpath);
    if (rt != 1)
        return;
    if (s->image) {
        char why[256];
        if (dk_ref_check(s->image, why, sizeof(why)) < 0)
            err_key(c, in, path, "image", "%s", why);
        return;
    }
    char *df = xasprintf("%s/Dockerfile", s->build);
    struct stat st;
    if (stat(df, &st) == -1 || !S_ISREG(st.st_mode))
        err_at(c, at ? at : knode, s->runtime_path,
               "no Dockerfile in %s: runtime docker builds the service's build directory (add a "
               "Dockerfile there, set build: to the directory that has one, or name an image:)",
               s->build);
    free(df);
}

/* `labels: {key: value}` at PATH.labels into KV (a null value is ""). */
static void load_labels(struct cfg__ctx *c, const yaml_node_t *n, const char *path,
                        struct cfg_kv **kv, size_t *len)
{
    char *lp = kpath(path, "labels");
    struct pair *pairs;
    size_t np = map_pairs(c, n, lp, &pairs);
    for (size_t i = 0; i < np; i++) {
        char *val = is_null(pairs[i].vnode)
                        ? xstrdup("")
                        : scalar(c, pairs[i].vnode, lp, pairs[i].key, "a string");
        if (val)
            cfg__kv_set(kv, len, pairs[i].key, val);
        free(val);
    }
    pairs_free(pairs, np);
    free(lp);
}

/* `placement: {servers: [a, b], labels: {zone: eu}}`: a subset of the
 * environment's servers; at least one of them must qualify. */
static void load_placement(struct cfg__ctx *c, const yaml_node_t *n, const char *path,
                           struct cfg_service *s)
{
    if (is_null(n))
        return;
    enum { K_SERVERS, K_LABELS };
    static const char *const keys[] = {"servers", "labels"};
    const yaml_node_t *v[ARRAY_LEN(keys)];
    char *pp = kpath(path, "placement");
    if (!walk_map(c, n, pp, keys, ARRAY_LEN(keys), v))
        goto out;
    set_str_list(c, v[K_SERVERS], pp, "servers", &s->placement_servers,
                 &s->placement_servers_len);
    if (!s->placement_servers)
        s->placement_servers = xcalloc(1, sizeof(char *));
    load_labels(c, v[K_LABELS], pp, &s->placement_labels, &s->placement_labels_len);
    const struct cfg_env *e = c->env;
    if (!e || !c->file)
        goto out;
    bool bad_name = false;
    for (size_t i = 0; i < s->placement_servers_len; i++) {
        bool in_env = false;
        for (size_t j = 0; j < e->servers_len && !in_env; j++)
            in_env = strcmp(e->servers[j], s->placement_servers[i]) == 0;
        if (!in_env) {
            char *ik = xasprintf("servers[%zu]", i);
            const yaml_node_t *item = v[K_SERVERS];
            if (item && item->type == YAML_SEQUENCE_NODE &&
                (size_t)(item->data.sequence.items.top - item->data.sequence.items.start) > i)
                item = get_node(c, item->data.sequence.items.start[i]);
            err_key(c, item, pp, ik,
                    "server \"%s\" is not one of environment %s's servers", 
                    s->placement_servers[i], e->name);
            free(ik);
            bad_name = true;
        }
    }
    if (bad_name)
        goto out;
    size_t eligible = 0;
    for (size_t j = 0; j < e->servers_len; j++)
        if (cfg_server_eligible(s, cfg_find_server(c->file, e->servers[j])))
            eligible++;
    if (eligible == 0)
        err_at(c, n, pp,
               e->servers_len ? "no server of environment %s qualifies (every label must match "
                                "a server's labels:)"
                              : "environment %s has no servers: to place replicas on",
               e->name);
out:
    free(pp);
}

/* What of command:/workdir: cannot apply to a container, known from the
 * file. The command itself is checked like the process runtime's (words
 * without a shell) and runs in exec form; whether its program is in the
 * image is only known when the container starts (docs/runtime.md). */
static void check_docker_command(struct cfg__ctx *c, const yaml_node_t *cmd,
                                 const yaml_node_t *wd, const char *path,
                                 const struct cfg_service *s)
{
    if (wd && !is_null(wd))
        err_key(c, wd, path, "workdir",
                "workdir is a directory of this machine (the process runtime's); a container "
                "starts in its image's WORKDIR: set WORKDIR in the Dockerfile instead");
    if (s->argv && s->argv[0] && !s->argv[0][0]) {
        const yaml_node_t *at = cmd;
        if (cmd && cmd->type == YAML_SEQUENCE_NODE && cmd->data.sequence.items.start <
                                                          cmd->data.sequence.items.top)
            at = get_node(c, cmd->data.sequence.items.start[0]);
        err_key(c, at ? at : cmd, path, at && at != cmd ? "command[0]" : "command",
                "the program name is empty (the first word runs in the container)");
    }
}

static void load_service(struct cfg__ctx *c, const char *name, const yaml_node_t *knode,
                         const yaml_node_t *n, const char *path, struct cfg_service *s)
{
    enum {
        K_COMMAND,
        K_BUILD,
        K_IMAGE,
        K_WORKDIR,
        K_PORT,
        K_REPLICAS,
        K_LB,
        K_HEALTH,
        K_DEPLOY,
        K_PROXY,
        K_ENV,
        K_ENVFILE,
        K_RESTART,
        K_RESOURCES,
        K_RUNTIME,
        K_NETWORK,
        K_PLACEMENT
    };
    static const char *const keys[] = {"command", "build",        "image",       "workdir",
                                       "port",    "replicas",     "loadBalancer", "healthCheck",
                                       "deploy",  "proxy",        "env",          "envFile",
                                       "restart", "resources",    "runtime",      "network",
                                       "placement"};
    const yaml_node_t *v[ARRAY_LEN(keys)];
    s->name = xstrdup(name);
    cfg__service_defaults(s, c->dir);
    if (!dns_label(name))
        err_at(c, knode, path,
               "invalid service name \"%s\" (lowercase letters, digits and -, at most 63)", name);
    if (!walk_map(c, n, path, keys, ARRAY_LEN(keys), v))
        return;

    set_uint(c, v[K_PORT], path, "port", 1, 65535, &s->port);
    /* A port that failed to parse is still a port: no worker-only errors. */
    bool has_port = s->port != 0 || !is_null(v[K_PORT]);
    load_command(c, v[K_COMMAND], path, s);
    if (v[K_BUILD] && !is_null(v[K_BUILD])) {
        char *b = NULL;
        set_str(c, v[K_BUILD], path, "build", &b);
        if (b) {
            free(s->build);
            s->build = cfg__path_join(c->dir, b);
            struct stat st;
            if (stat(s->build, &st) == -1 || !S_ISDIR(st.st_mode))
                err_key(c, v[K_BUILD], path, "build", "directory %s does not exist", s->build);
            free(b);
        }
    }
    char *wd = NULL;
    set_str(c, v[K_WORKDIR], path, "workdir", &wd);
    s->workdir = cfg__path_join(s->build, wd ? wd : ".");
    free(wd);
    set_str(c, v[K_IMAGE], path, "image", &s->image);
    if (s->image && (!*s->image || strpbrk(s->image, " \t\r\n"))) {
        err_key(c, v[K_IMAGE], path, "image", "invalid image \"%s\" (like nginx:1.27)", s->image);
        free(s->image);
        s->image = NULL;
    }
    load_replicas(c, v[K_REPLICAS], path, s);
    if (s->autoscale.enabled && c->env && c->env->servers_len > 1)
        /* each takod would scale its own share between min and max, and the
         * other servers' balancers would not learn the new counts */
        err_key(c, v[K_REPLICAS], path, "replicas",
                "autoscaling is for an environment with one server; environment %s has %zu "
                "(give a fixed count, spread over them)",
                c->env->name, c->env->servers_len);

    /* loadBalancer */
    enum { L_STRATEGY, L_HEALTH, L_COOKIE, L_MAXCONNS, L_MAXQUEUE, L_QTIMEOUT, L_BTIMEOUT, L_BRATE };
    static const char *const lb_keys[] = {"strategy",     "healthCheck", "cookie",
                                          "maxConnsPerReplica", "maxQueue", "queueTimeout",
                                          "bodyTimeout",  "minBodyRate"};
    const yaml_node_t *lb[ARRAY_LEN(lb_keys)];
    char *lp = kpath(path, "loadBalancer");
    bool enabled_set = false;
    struct health_written hw = {0};
    s->health.enabled = has_port;
    if (walk_map(c, v[K_LB], lp, lb_keys, ARRAY_LEN(lb_keys), lb)) {
        int strat = (int)s->lb_strategy;
        const char *names[LB_NAMES_MAX];
        size_t nn = lb_names(names);
        if (set_enum(c, lb[L_STRATEGY], lp, "strategy", "strategy", names, nn, &strat))
            s->lb_strategy = (enum cfg_lb)strat;
        set_str(c, lb[L_COOKIE], lp, "cookie", &s->lb_cookie);
        if (s->lb_cookie && (!*s->lb_cookie || strpbrk(s->lb_cookie, " \t;,=\"")))
            err_key(c, lb[L_COOKIE], lp, "cookie", "invalid cookie name \"%s\"", s->lb_cookie);
        set_uint(c, lb[L_MAXCONNS], lp, "maxConnsPerReplica", 0, 1000000, &s->lb_max_conns);
        set_uint(c, lb[L_MAXQUEUE], lp, "maxQueue", 1, 1000000, &s->lb_max_queue);
        set_duration(c, lb[L_QTIMEOUT], lp, "queueTimeout", 1, &s->lb_queue_timeout_ms);
        set_duration(c, lb[L_BTIMEOUT], lp, "bodyTimeout", 1, &s->lb_body_timeout_ms);
        set_uint(c, lb[L_BRATE], lp, "minBodyRate", 1, 1u << 30, &s->lb_min_body_rate);
        char *hp = kpath(lp, "healthCheck");
        load_health(c, lb[L_HEALTH], hp, &s->health, &enabled_set, &hw);
        free(hp);
    }
    free(lp);
    char *hp = kpath(path, "healthCheck");
    load_health(c, v[K_HEALTH], hp, &s->health, &enabled_set, &hw);
    health_defaults(c, &s->health, &hw);
    if (!has_port && s->health.enabled) {
        err_at(c, v[K_HEALTH] ? v[K_HEALTH] : n, hp,
               "an HTTP health check needs the service's port (a service without port is a "
               "background worker)");
    } else if (!has_port && v[K_HEALTH] && !is_null(v[K_HEALTH]) && !enabled_set) {
        warn_at(c, v[K_HEALTH], hp, "ignored: the service has no port (a background worker)");
    }
    free(hp);

    /* deploy */
    enum { D_STRATEGY, D_SURGE, D_UNAVAIL, D_DRAIN, D_GRACE };
    static const char *const d_keys[] = {"strategy", "maxSurge", "maxUnavailable", "drainTimeout",
                                         "stopGracePeriod"};
    const yaml_node_t *d[ARRAY_LEN(d_keys)];
    char *dp = kpath(path, "deploy");
    if (walk_map(c, v[K_DEPLOY], dp, d_keys, ARRAY_LEN(d_keys), d)) {
        int ds = (int)s->deploy.strategy;
        if (set_enum(c, d[D_STRATEGY], dp, "strategy", "deploy strategy", deploy_names,
                     ARRAY_LEN(deploy_names), &ds))
            s->deploy.strategy = (enum cfg_deploy_strategy)ds;
        set_uint(c, d[D_SURGE], dp, "maxSurge", 0, CFG_MAX_REPLICAS, &s->deploy.max_surge);
        set_uint(c, d[D_UNAVAIL], dp, "maxUnavailable", 0, CFG_MAX_REPLICAS,
                 &s->deploy.max_unavailable);
        set_duration(c, d[D_DRAIN], dp, "drainTimeout", 0, &s->deploy.drain_timeout_ms);
        set_duration(c, d[D_GRACE], dp, "stopGracePeriod", 0, &s->deploy.stop_grace_ms);
        if (s->deploy.strategy == CFG_DEPLOY_ROLLING && s->deploy.max_surge == 0 &&
            s->deploy.max_unavailable == 0)
            err_at(c, v[K_DEPLOY], dp,
                   "maxSurge and maxUnavailable cannot both be 0: a rolling deploy could not "
                   "make progress");
    }
    free(dp);

    load_proxy(c, v[K_PROXY], path, s);
    if (!has_port && (s->proxy.domains_len || s->proxy.port))
        err_at(c, v[K_PROXY], path, "proxy needs the service's port (the port the app listens on)");

    load_env(c, v[K_ENVFILE], v[K_ENV], path, s);

    int rs = (int)s->restart;
    if (set_enum(c, v[K_RESTART], path, "restart", "restart policy", restart_names,
                 ARRAY_LEN(restart_names), &rs))
        s->restart = (enum cfg_restart)rs;

    enum { R_MEMORY, R_CPUS };
    static const char *const r_keys[] = {"memory", "cpus"};
    const yaml_node_t *r[ARRAY_LEN(r_keys)];
    char *rp = kpath(path, "resources");
    if (walk_map(c, v[K_RESOURCES], rp, r_keys, ARRAY_LEN(r_keys), r)) {
        set_size(c, r[R_MEMORY], rp, "memory", &s->resources.memory_bytes);
        if (s->resources.memory_bytes && s->resources.memory_bytes < 4 * 1024 * 1024)
            err_key(c, r[R_MEMORY], rp, "memory", "must be at least 4m (or 0 for no limit)");
        set_number(c, r[R_CPUS], rp, "cpus", 0, 1024, &s->resources.cpus);
    }
    free(rp);

    load_runtime(c, v[K_RUNTIME], v[K_IMAGE], knode, path, s);
    if (strcmp(s->runtime, "docker") == 0)
        check_docker_command(c, v[K_COMMAND], v[K_WORKDIR], path, s);
    int nw = 0;
    if (set_enum(c, v[K_NETWORK], path, "network", "network", network_names,
                 ARRAY_LEN(network_names), &nw)) {
        free(s->network);
        s->network = xstrdup(network_names[nw]);
        if (nw == 1 && strcmp(s->runtime, "docker") != 0)
            err_key(c, v[K_NETWORK], path, "network",
                    "network: bridge is for runtime: docker (a process shares the host's network)");
        if (nw == 1 && !has_port)
            err_key(c, v[K_NETWORK], path, "network",
                    "network: bridge publishes the service's port; the service has none");
    }
    if (!s->argv && !s->image && strcmp(s->runtime, "process") == 0)
        warn_at(c, knode, path,
                "no command or image: the process runtime has nothing to run (add command:)");
    load_placement(c, v[K_PLACEMENT], path, s);
}

/* ---- servers, environments, project ----------------------------------- */

static void load_server(struct cfg__ctx *c, const char *name, const yaml_node_t *knode,
                        const yaml_node_t *n, const char *path, struct cfg_server *sv)
{
    enum { K_HOST, K_USER, K_PORT, K_KEY, K_LABELS, K_HOSTKEYS, K_ADDRESS };
    static const char *const keys[] = {"host",   "user",     "port",   "sshKey",
                                       "labels", "hostKeys", "address"};
    const yaml_node_t *v[ARRAY_LEN(keys)];
    sv->name = xstrdup(name);
    sv->user = xstrdup("root");
    sv->port = 22;
    if (!plain_name(name))
        err_at(c, knode, path, "invalid server name \"%s\" (letters, digits, - _ .)", name);
    if (!walk_map(c, n, path, keys, ARRAY_LEN(keys), v))
        return;
    set_str(c, v[K_HOST], path, "host", &sv->host);
    if (!v[K_HOST] || is_null(v[K_HOST]))
        err_at(c, n, path, "host is required (a name or an address)");
    else if (sv->host && (!*sv->host || strpbrk(sv->host, " \t/@")))
        err_key(c, v[K_HOST], path, "host", "invalid host \"%s\"", sv->host);
    set_str(c, v[K_ADDRESS], path, "address", &sv->address);
    if (sv->address && (!*sv->address || strpbrk(sv->address, " \t/@:")))
        err_key(c, v[K_ADDRESS], path, "address",
                "invalid address \"%s\" (a name or an IPv4 address the other servers reach "
                "this one at; the port is the environment's peerPort)",
                sv->address);
    if (!sv->address && sv->host)
        sv->address = xstrdup(sv->host);
    set_str(c, v[K_USER], path, "user", &sv->user);
    set_uint(c, v[K_PORT], path, "port", 1, 65535, &sv->port);
    set_str(c, v[K_KEY], path, "sshKey", &sv->ssh_key);
    char *hk = NULL;
    set_str(c, v[K_HOSTKEYS], path, "hostKeys", &hk);
    if (hk && strcmp(hk, "strict") == 0)
        sv->strict_host_keys = true;
    else if (hk && strcmp(hk, "accept-new") != 0)
        err_key(c, v[K_HOSTKEYS], path, "hostKeys",
                "invalid value \"%s\" (expected accept-new or strict)", hk);
    free(hk);
    load_labels(c, v[K_LABELS], path, &sv->labels, &sv->labels_len);
}

static void check_env(struct cfg__ctx *c, const struct cfg_file *f, struct cfg_env *e,
                      const yaml_node_t *env_node, const yaml_node_t *servers_node,
                      const char *path)
{
    for (size_t i = 0; i < e->servers_len; i++) {
        if (!cfg_find_server(f, e->servers[i]))
            err_key(c, servers_node, path, "servers", "unknown server \"%s\" (define it under servers:)",
                    e->servers[i]);
        for (size_t j = 0; j < i; j++)
            if (strcmp(e->servers[i], e->servers[j]) == 0)
                err_key(c, servers_node, path, "servers", "server \"%s\" is listed twice",
                        e->servers[i]);
    }
    for (size_t i = 0; i < e->services_len; i++) {
        const struct cfg_service *a = &e->services[i];
        if (a->proxy.port && a->proxy.port == e->http_port)
            err_at(c, env_node, path,
                   "service %s: proxy.port %u is the environment's shared http port", a->name,
                   a->proxy.port);
        for (size_t j = 0; j < i; j++) {
            const struct cfg_service *b = &e->services[j];
            if (a->proxy.port && a->proxy.port == b->proxy.port)
                err_at(c, env_node, path, "services %s and %s both use proxy.port %u", b->name,
                       a->name, a->proxy.port);
            for (size_t x = 0; x < a->proxy.domains_len; x++)
                for (size_t y = 0; y < b->proxy.domains_len; y++)
                    if (strcmp(a->proxy.domains[x], b->proxy.domains[y]) == 0)
                        err_at(c, env_node, path, "services %s and %s both claim domain %s",
                               b->name, a->name, a->proxy.domains[x]);
        }
    }
}

/* `metrics: ADDRESS` or `metrics: {address: ADDRESS, token: TOKEN}`. */
static void load_metrics(struct cfg__ctx *c, const yaml_node_t *n, const char *path,
                         struct cfg_env *e)
{
    if (is_null(n))
        return;
    char *mp = kpath(path, "metrics");
    const yaml_node_t *an = n, *tn = NULL;
    const char *akey = "metrics";
    if (n->type == YAML_MAPPING_NODE) {
        enum { K_ADDRESS, K_TOKEN };
        static const char *const keys[] = {"address", "token"};
        const yaml_node_t *v[ARRAY_LEN(keys)];
        if (!walk_map(c, n, mp, keys, ARRAY_LEN(keys), v))
            goto out;
        an = v[K_ADDRESS];
        tn = v[K_TOKEN];
        akey = "metrics.address";
        if (is_null(an)) {
            err_at(c, n, mp, "metrics needs address: (e.g. address: 127.0.0.1:9100)");
            goto out;
        }
        set_str(c, tn, mp, "token", &e->metrics_token);
        if (e->metrics_token && strlen(e->metrics_token) < 16)
            err_key(c, tn, mp, "token", "a token of at least 16 characters is needed (got %zu)",
                    strlen(e->metrics_token));
        for (const char *q = e->metrics_token; q && *q; q++)
            if (*q <= ' ' || *q >= 127 || strchr(";,\"\\", *q)) {
                err_key(c, tn, mp, "token",
                        "the token goes into a cookie and a header: use letters, digits and "
                        "punctuation other than ; , \" \\ (no spaces)");
                break;
            }
    }
    char *v = scalar(c, an, path, akey, "an address like 127.0.0.1:9100");
    if (!v)
        goto out;
    struct net_addr a;
    if (net_parse_addr(v, "127.0.0.1", &a) < 0 || net_addr_port(&a) == 0) {
        err_key(c, an, path, akey,
                "expected HOST:PORT or PORT with a numeric host (e.g. 127.0.0.1:9100), got \"%s\"",
                v);
        free(v);
        goto out;
    }
    free(v);
    char buf[64];
    e->metrics_addr = xstrdup(net_addr_str(&a, buf, sizeof(buf)));
    e->metrics_line = (unsigned)an->start_mark.line + 1;
    e->metrics_col = (unsigned)an->start_mark.column + 1;
    if (!net_addr_is_loopback(&a) && !e->metrics_token)
        err_key(c, an, path, akey,
                "%s is reachable from other machines: set metrics.token too (e.g. metrics: "
                "{address: %s, token: ${METRICS_TOKEN}}), or use a loopback address and "
                "`tako dashboard`",
                e->metrics_addr, e->metrics_addr);
out:
    free(mp);
}

static void load_environment(struct cfg__ctx *c, struct cfg_file *f, const char *name,
                             const yaml_node_t *knode, const yaml_node_t *n, const char *path,
                             struct cfg_env *e)
{
    enum { K_SERVERS, K_SERVICES, K_HTTP, K_HTTPS, K_RUNTIME, K_METRICS, K_PEERPORT };
    static const char *const keys[] = {"servers", "services", "http",    "https",
                                       "runtime", "metrics",  "peerPort"};
    const yaml_node_t *v[ARRAY_LEN(keys)];
    e->name = xstrdup(name);
    e->http_port = c->is_root ? 80 : 8080;
    e->https_port = c->is_root ? 443 : 8443;
    e->peer_port = 8190;
    e->servers = xcalloc(1, sizeof(char *));
    if (!plain_name(name))
        err_at(c, knode, path, "invalid environment name \"%s\" (letters, digits, - _ .)", name);
    if (!walk_map(c, n, path, keys, ARRAY_LEN(keys), v))
        return;
    set_str_list(c, v[K_SERVERS], path, "servers", &e->servers, &e->servers_len);
    if (!e->servers)
        e->servers = xcalloc(1, sizeof(char *));
    /* On a server takod runs as root (or through sudo), whoever runs the CLI. */
    for (size_t i = 0; i < e->servers_len; i++) {
        const struct cfg_server *sv = cfg_find_server(f, e->servers[i]);
        if (sv && !cfg_server_is_local(sv)) {
            e->http_port = 80;
            e->https_port = 443;
        }
    }
    set_uint(c, v[K_HTTP], path, "http", 1, 65535, &e->http_port);
    set_uint(c, v[K_HTTPS], path, "https", 1, 65535, &e->https_port);
    if (set_uint(c, v[K_PEERPORT], path, "peerPort", 1, 65535, &e->peer_port) &&
        v[K_PEERPORT]) {
        e->peer_port_line = (unsigned)v[K_PEERPORT]->start_mark.line + 1;
        e->peer_port_col = (unsigned)v[K_PEERPORT]->start_mark.column + 1;
    }
    if (e->servers_len > 1 && (e->peer_port == e->http_port || e->peer_port == e->https_port))
        err_key(c, v[K_PEERPORT] ? v[K_PEERPORT] : n, path, "peerPort",
                "peerPort %u is also the environment's %s port", e->peer_port,
                e->peer_port == e->http_port ? "http" : "https");
    if (e->https_port == e->http_port)
        err_key(c, v[K_HTTPS] ? v[K_HTTPS] : v[K_HTTP], path, v[K_HTTPS] ? "https" : "http",
                "http and https must be different ports (both %u)", e->http_port);
    int ert = 0;
    char *erp = kpath(path, "runtime");
    if (!is_null(v[K_RUNTIME]) && set_enum(c, v[K_RUNTIME], path, "runtime", "runtime",
                                           runtime_names, ARRAY_LEN(runtime_names), &ert)) {
        c->env_runtime = runtime_names[ert];
        c->env_runtime_node = v[K_RUNTIME];
        c->env_runtime_path = erp;
    }
    e->runtime = xstrdup(runtime_names[ert]);
    load_metrics(c, v[K_METRICS], path, e);

    struct pair *pairs;
    char *sp = kpath(path, "services");
    c->file = f;
    c->env = e;
    size_t np = map_pairs(c, v[K_SERVICES], sp, &pairs);
    if (np == 0 && (!v[K_SERVICES] || is_null(v[K_SERVICES]) ||
                    v[K_SERVICES]->type == YAML_MAPPING_NODE))
        err_at(c, v[K_SERVICES] ? v[K_SERVICES] : n, sp, "no services: define at least one");
    e->services = xcalloc(np ? np : 1, sizeof(struct cfg_service));
    for (size_t i = 0; i < np; i++) {
        char *p = kpath(sp, pairs[i].key);
        load_service(c, pairs[i].key, pairs[i].knode, pairs[i].vnode, p, &e->services[i]);
        e->services_len++;
        free(p);
    }
    pairs_free(pairs, np);
    free(sp);
    c->env_runtime = NULL;
    c->env_runtime_node = NULL;
    c->env_runtime_path = NULL;
    c->file = NULL;
    c->env = NULL;
    free(erp);
    for (size_t i = 0; i < e->services_len; i++)
        e->services[i].proxy.https_port = e->https_port;
    check_env(c, f, e, n, v[K_SERVERS], path);
}

static void load_root(struct cfg__ctx *c, const yaml_node_t *root, struct cfg_file *f)
{
    enum { K_PROJECT, K_SERVERS, K_ENVS };
    static const char *const keys[] = {"project", "servers", "environments"};
    const yaml_node_t *v[ARRAY_LEN(keys)];
    if (!walk_map(c, root, "", keys, ARRAY_LEN(keys), v))
        return;

    enum { P_NAME, P_VERSION };
    static const char *const p_keys[] = {"name", "version"};
    const yaml_node_t *p[ARRAY_LEN(p_keys)];
    if (walk_map(c, v[K_PROJECT], "project", p_keys, ARRAY_LEN(p_keys), p)) {
        set_str(c, p[P_NAME], "project", "name", &f->project.name);
        if (!p[P_NAME] || is_null(p[P_NAME]))
            err_at(c, v[K_PROJECT] ? v[K_PROJECT] : root, "project.name",
                   "required: the project's name (lowercase letters, digits and -)");
        else if (f->project.name && !dns_label(f->project.name))
            err_key(c, p[P_NAME], "project", "name",
                    "invalid project name \"%s\" (lowercase letters, digits and -, at most 63)",
                    f->project.name);
        set_str(c, p[P_VERSION], "project", "version", &f->project.version);
    }

    struct pair *pairs;
    size_t np = map_pairs(c, v[K_SERVERS], "servers", &pairs);
    f->servers = xcalloc(np ? np : 1, sizeof(struct cfg_server));
    for (size_t i = 0; i < np; i++) {
        char *path = kpath("servers", pairs[i].key);
        load_server(c, pairs[i].key, pairs[i].knode, pairs[i].vnode, path, &f->servers[i]);
        f->servers_len++;
        free(path);
    }
    pairs_free(pairs, np);

    np = map_pairs(c, v[K_ENVS], "environments", &pairs);
    if (np == 0 && (!v[K_ENVS] || is_null(v[K_ENVS]) || v[K_ENVS]->type == YAML_MAPPING_NODE))
        err_at(c, v[K_ENVS] ? v[K_ENVS] : root, "environments",
               "no environments: define at least one (e.g. production:) with its services");
    f->envs = xcalloc(np ? np : 1, sizeof(struct cfg_env));
    for (size_t i = 0; i < np; i++) {
        char *path = kpath("environments", pairs[i].key);
        load_environment(c, f, pairs[i].key, pairs[i].knode, pairs[i].vnode, path, &f->envs[i]);
        f->envs_len++;
        free(path);
    }
    /* Two environments on one server need two peer listeners. */
    for (size_t i = 0; i < f->envs_len; i++)
        for (size_t j = 0; j < i; j++) {
            const struct cfg_env *a = &f->envs[j], *b = &f->envs[i];
            if (a->peer_port != b->peer_port || a->servers_len < 2 || b->servers_len < 2)
                continue;
            const char *shared = NULL;
            for (size_t x = 0; x < a->servers_len && !shared; x++)
                for (size_t y = 0; y < b->servers_len && !shared; y++)
                    if (strcmp(a->servers[x], b->servers[y]) == 0)
                        shared = a->servers[x];
            if (!shared)
                continue;
            char *kp = xasprintf("environments.%s.peerPort", b->name);
            cfg_diag_add(c->diag, CFG_ERROR, c->name,
                         b->peer_port_line ? b->peer_port_line
                                           : (unsigned)pairs[i].knode->start_mark.line + 1,
                         b->peer_port_line ? b->peer_port_col
                                           : (unsigned)pairs[i].knode->start_mark.column + 1,
                         kp,
                         "environments %s and %s share server %s and peerPort %u: give one of "
                         "them another peerPort",
                         a->name, b->name, shared, b->peer_port);
            free(kp);
        }
    pairs_free(pairs, np);
}

/* ---- entry points ----------------------------------------------------- */

void cfg_free(struct cfg_file *f)
{
    if (!f)
        return;
    free(f->path);
    free(f->dir);
    free(f->project.name);
    free(f->project.version);
    for (size_t i = 0; i < f->servers_len; i++) {
        struct cfg_server *s = &f->servers[i];
        free(s->name);
        free(s->host);
        free(s->user);
        free(s->ssh_key);
        cfg__kv_free(s->labels, s->labels_len);
        free(s->address);
    }
    free(f->servers);
    for (size_t i = 0; i < f->envs_len; i++) {
        struct cfg_env *e = &f->envs[i];
        free(e->name);
        free(e->runtime);
        free(e->metrics_addr);
        free(e->metrics_token);
        for (size_t j = 0; j < e->servers_len; j++)
            free(e->servers[j]);
        free(e->servers);
        for (size_t j = 0; j < e->services_len; j++)
            cfg__service_clear(&e->services[j]);
        free(e->services);
    }
    free(f->envs);
    free(f);
}

static void syntax_error(struct cfg__ctx *c, yaml_parser_t *p)
{
    const char *problem = p->problem ? p->problem : "invalid YAML";
    if (p->context)
        cfg_diag_add(c->diag, CFG_ERROR, c->name, (unsigned)p->problem_mark.line + 1,
                     (unsigned)p->problem_mark.column + 1, NULL,
                     "YAML syntax error: %s (%s at line %u)", problem, p->context,
                     (unsigned)p->context_mark.line + 1);
    else
        cfg_diag_add(c->diag, CFG_ERROR, c->name, (unsigned)p->problem_mark.line + 1,
                     (unsigned)p->problem_mark.column + 1, NULL, "YAML syntax error: %s",
                     problem);
}

static const char *real_getenv(const char *name) { return getenv(name); }

static struct cfg_file *load(const char *name, const char *data, size_t len, const char *dir,
                             const char *path, const char *(*getenv_fn)(const char *),
                             struct cfg_diag *diag)
{
    struct cfg_file *f = NULL;
    yaml_parser_t parser;
    yaml_document_t doc, extra;
    bool have_doc = false;
    struct cfg__ctx c = {
        .name = name,
        .dir = dir,
        .diag = diag,
        .getenv_fn = getenv_fn ? getenv_fn : real_getenv,
        .doc = &doc,
        .budget = SCALAR_BUDGET,
        .is_root = geteuid() == 0,
    };
    size_t errors_before = cfg_diag_errors(diag);

    if (!yaml_parser_initialize(&parser))
        abort();
    if (len > CFG_MAX_FILE_BYTES) {
        cfg_diag_add(diag, CFG_ERROR, name, 0, 0, NULL, "file too large (%zu bytes; at most %d)",
                     len, CFG_MAX_FILE_BYTES);
        goto out;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)data, len);
    if (!yaml_parser_load(&parser, &doc)) {
        syntax_error(&c, &parser);
        goto out;
    }
    have_doc = true;
    const yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (!root) {
        cfg_diag_add(diag, CFG_ERROR, name, 1, 1, NULL,
                     "empty file: expected project:, servers: and environments:");
        goto out;
    }
    if (!yaml_parser_load(&parser, &extra)) {
        syntax_error(&c, &parser);
        goto out;
    }
    if (yaml_document_get_root_node(&extra))
        cfg_diag_add(diag, CFG_ERROR, name, (unsigned)extra.start_mark.line + 1,
                     (unsigned)extra.start_mark.column + 1, NULL,
                     "a second YAML document: tako.yaml holds exactly one");
    yaml_document_delete(&extra);

    f = xcalloc(1, sizeof(*f));
    f->path = xstrdup(path);
    f->dir = xstrdup(dir);
    load_root(&c, root, f);
out:
    if (have_doc)
        yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    cfg__kv_free(c.dotenv, c.dotenv_len);
    free(c.dotenv_name);
    if (cfg_diag_errors(diag) != errors_before) {
        cfg_free(f);
        f = NULL;
    }
    return f;
}

static char *cwd_or_root(void)
{
    char *cwd = getcwd(NULL, 0);
    return cwd ? cwd : xstrdup("/");
}

struct cfg_file *cfg_load_buffer(const char *name, const char *data, size_t len,
                                 const char *base_dir, const char *(*getenv_fn)(const char *),
                                 struct cfg_diag *diag)
{
    char *cwd = cwd_or_root();
    char *dir = cfg__path_join(cwd, base_dir ? base_dir : ".");
    struct cfg_file *f = load(name, data, len, dir, name, getenv_fn, diag);
    free(dir);
    free(cwd);
    return f;
}

struct cfg_file *cfg_load_file(const char *path, struct cfg_diag *diag)
{
    char *data = NULL, *cwd = cwd_or_root();
    size_t len = 0;
    struct cfg_file *f = NULL;
    char *abs = cfg__path_join(cwd, path);
    int r = cfg__read_file(abs, CFG_MAX_FILE_BYTES, &data, &len);
    if (r < 0) {
        cfg_diag_add(diag, CFG_ERROR, path, 0, 0, NULL, "cannot read: %s%s",
                     r == -EFBIG ? "file too large" : strerror(-r),
                     r == -ENOENT ? " (run 'tako init' to create a tako.yaml, or pass -f FILE)"
                                  : "");
        goto out;
    }
    char *dir = xstrdup(abs);
    char *slash = strrchr(dir, '/');
    if (slash == dir)
        slash[1] = '\0';
    else
        *slash = '\0';
    f = load(path, data, len, dir, abs, NULL, diag);
    free(dir);
out:
    free(abs);
    free(cwd);
    free(data);
    return f;
}
