/* config.h — tako.yaml as typed C structs: load, ${VAR}/.env expansion,
 * validation with file:line:col diagnostics, environment selection, JSON.
 *
 * Ownership: every string and array reachable from a struct cfg_file is owned
 * by it and freed by cfg_free(). Nothing here keeps global state, so separate
 * loads may run on separate threads; one cfg_file / cfg_diag must not be
 * used by two threads at once. See docs/internals/config.md. */
#ifndef TAKO_CONFIG_CONFIG_H
#define TAKO_CONFIG_CONFIG_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* A file larger than this is refused before parsing. */
#define CFG_MAX_FILE_BYTES (1024 * 1024)
#define CFG_MAX_REPLICAS 1000

/* ---- diagnostics ------------------------------------------------------ */

enum cfg_severity { CFG_ERROR, CFG_WARNING };

struct cfg_diag_entry {
    enum cfg_severity severity;
    char *file;    /* as given to the loader ("tako.yaml", ".env", ...) */
    unsigned line; /* 1-based; 0 when the problem has no place in a file */
    unsigned col;  /* 1-based */
    char *path;    /* key path "environments.production.services.web.port", or NULL */
    char *message;
};

struct cfg_diag;

struct cfg_diag *cfg_diag_new(void);
void cfg_diag_free(struct cfg_diag *d);
size_t cfg_diag_errors(const struct cfg_diag *d);
size_t cfg_diag_warnings(const struct cfg_diag *d);
size_t cfg_diag_count(const struct cfg_diag *d);
const struct cfg_diag_entry *cfg_diag_get(const struct cfg_diag *d, size_t i);
/* One line per entry, in the order found:
 *   FILE:LINE:COL: KEY.PATH: message
 *   FILE:LINE:COL: warning: KEY.PATH: message */
void cfg_diag_print(const struct cfg_diag *d, FILE *f);
/* The same text as one heap string (caller frees). */
char *cfg_diag_text(const struct cfg_diag *d);
/* Add an entry (line/col 1-based, 0 = unknown; file/path may be NULL). */
void cfg_diag_add(struct cfg_diag *d, enum cfg_severity sev, const char *file, unsigned line,
                  unsigned col, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));

/* ---- typed configuration ---------------------------------------------- */

/* A strategy's number is its row in the balancer's table (proxy/lb_table.c,
 * the same as enum lb_kind); the first rows are named here, a strategy
 * added later is the next number and needs nothing in the config code. */
enum cfg_lb {
    CFG_LB_ROUND_ROBIN,
    CFG_LB_LEAST_CONNECTIONS,
    CFG_LB_IP_HASH,
    CFG_LB_RANDOM,
    CFG_LB_STICKY,
    CFG_LB_P2C,
};
enum cfg_deploy_strategy { CFG_DEPLOY_ROLLING, CFG_DEPLOY_RECREATE };
enum cfg_restart { CFG_RESTART_ALWAYS, CFG_RESTART_ON_FAILURE, CFG_RESTART_NEVER };

const char *cfg_lb_name(enum cfg_lb lb);
int cfg_lb_parse(const char *s, enum cfg_lb *out); /* 0 or -EINVAL */
const char *cfg_deploy_strategy_name(enum cfg_deploy_strategy s);
const char *cfg_restart_name(enum cfg_restart r);

struct cfg_kv {
    char *key;
    char *value;
};

struct cfg_health {
    bool enabled;                 /* default: true when the service has a port */
    char *path;                   /* "/health" */
    uint64_t interval_ms;         /* 2s */
    uint64_t timeout_ms;          /* 1s */
    unsigned healthy_threshold;   /* 1 */
    unsigned unhealthy_threshold; /* 3 */
    uint64_t start_period_ms;     /* 0 */
};

struct cfg_autoscale {
    bool enabled;           /* true when replicas is the {min, max, ...} form */
    unsigned min, max;      /* 1 ≤ min ≤ max ≤ CFG_MAX_REPLICAS */
    double cpu_percent;     /* target mean CPU per replica; 0 = unset */
    double requests_per_s;  /* target req/s per replica; 0 = unset */
    uint64_t interval_ms;   /* 15s */
    uint64_t up_stabilization_ms;   /* 0 */
    uint64_t down_stabilization_ms; /* 5m */
    double tolerance;       /* fraction, 0.1 = ±10% around the target */
};

struct cfg_deploy {
    enum cfg_deploy_strategy strategy; /* rolling */
    unsigned max_surge;                /* 1 */
    unsigned max_unavailable;          /* 0 */
    uint64_t drain_timeout_ms;         /* 30s */
    uint64_t stop_grace_ms;            /* 10s */
};

struct cfg_proxy {
    char **domains; /* NULL-terminated, possibly empty (never NULL) */
    size_t domains_len;
    unsigned port; /* dedicated listener; 0 = none */
    char *email;   /* NULL when not set; with domains: certificates by ACME */
    /* HTTPS (docs/https.md) */
    unsigned https_port; /* the environment's `https:` (443 as root, else 8443) */
    char *tls_cert, *tls_key; /* proxy.tls: own certificate (absolute paths), or NULL */
    uint64_t hsts_s;     /* proxy.hsts: Strict-Transport-Security max-age; 0 = none */
    char *acme;          /* proxy.acme: ACME directory URL; NULL = Let's Encrypt */
};

/* Whether a service is served over HTTPS: its own certificate, or domains
 * with an ACME contact. */
bool cfg_proxy_https(const struct cfg_proxy *p);

struct cfg_resources {
    uint64_t memory_bytes; /* 0 = no limit */
    double cpus;           /* 0 = no limit */
};

struct cfg_service {
    char *name;
    char **argv;     /* NULL-terminated; NULL when neither command nor list given */
    char *build;     /* absolute directory; default: the project directory */
    char *workdir;   /* absolute; default: build */
    char *image;     /* NULL when not set */
    char *runtime;   /* "process" (default) | "docker"; the environment's runtime: when unset */
    char *network;   /* runtime docker: "host" (default) | "bridge" */
    /* where runtime (or the service) is written, "FILE:LINE:COL" and its key
     * path, for errors found later (Docker not reachable); "" unknown */
    char runtime_at[300];
    char runtime_path[256];
    unsigned port;   /* 0 = background worker (no balancer, no HTTP health check) */
    unsigned replicas; /* fixed count; with autoscale, the starting count (= min) */
    struct cfg_autoscale autoscale;
    enum cfg_lb lb_strategy; /* round_robin */
    char *lb_cookie;         /* cookie name for sticky: "tako_sticky" */
    unsigned lb_max_conns;   /* requests in flight per replica, 0 = no limit */
    unsigned lb_max_queue;   /* requests waiting for a replica under that limit: 256 */
    uint64_t lb_queue_timeout_ms; /* 5 s */
    uint64_t lb_body_timeout_ms;  /* a request body's grace period: 20 s */
    unsigned lb_min_body_rate;    /* bytes/s a body keeps up after it: 500 */
    struct cfg_health health;
    struct cfg_deploy deploy;
    struct cfg_proxy proxy;
    struct cfg_kv *env; /* ordered; envFile entries first, env: wins */
    size_t env_len;
    enum cfg_restart restart; /* always */
    struct cfg_resources resources;
    /* placement: which of the environment's servers may run its replicas
     * (servers: names, labels: all must match); empty = every server. The
     * CLI spreads replicas with cfg_place(); it is not part of the service's
     * JSON (moving replicas is not a new revision), so cfg_service_dup and
     * takod do not carry it. */
    char **placement_servers; /* NULL-terminated (never NULL) */
    size_t placement_servers_len;
    struct cfg_kv *placement_labels;
    size_t placement_labels_len;
};

struct cfg_server {
    char *name;
    char *host;
    char *user;    /* "root" */
    unsigned port; /* 22 */
    char *ssh_key; /* as written (may start with ~/); NULL when not set */
    char *address; /* where the other servers of an environment reach it: default host */
    bool strict_host_keys; /* hostKeys: strict (refuse unknown keys); default accept-new */
    struct cfg_kv *labels;
    size_t labels_len;
};

struct cfg_env {
    char *name;
    char **servers; /* names in cfg_file.servers; NULL-terminated, empty = this machine */
    size_t servers_len;
    unsigned http_port; /* shared listener: 80 when loaded as root, else 8080 */
    char *runtime;      /* the services' default runtime: "process" unless set */
    unsigned https_port; /* HTTPS listener: 443 as root, else 8443 */
    /* `metrics:` — where takod serves /metrics and the dashboard for this
     * environment; NULL = off (the default). Normalised "HOST:PORT" (a port
     * alone means 127.0.0.1). A non-loopback host requires a token. */
    char *metrics_addr;
    char *metrics_token; /* NULL when not set */
    unsigned metrics_line, metrics_col; /* of the address, for errors found later */
    unsigned peer_port; /* peerPort: each server's listener for its peers (8190) */
    unsigned peer_port_line, peer_port_col; /* where it is written; 0 = default */
    struct cfg_service *services;
    size_t services_len;
};

struct cfg_file {
    char *path; /* absolute path of the file (or the buffer's name) */
    char *dir;  /* absolute project directory */
    struct {
        char *name;    /* [a-z0-9-], required */
        char *version; /* NULL when not set */
    } project;
    struct cfg_server *servers;
    size_t servers_len;
    struct cfg_env *envs;
    size_t envs_len;
};

/* Load PATH, expand ${VAR} (process environment first, then .env beside the
 * file), type-check and validate. Returns NULL when there is any error; every
 * problem found is in DIAG (warnings may be there on success too). */
struct cfg_file *cfg_load_file(const char *path, struct cfg_diag *diag);
/* The same from memory. NAME is used in diagnostics; BASE_DIR (NULL = the
 * current directory) anchors relative paths, .env and envFile; GETENV_FN
 * (NULL = getenv) is the process environment lookup. */
struct cfg_file *cfg_load_buffer(const char *name, const char *data, size_t len,
                                 const char *base_dir, const char *(*getenv_fn)(const char *),
                                 struct cfg_diag *diag);
void cfg_free(struct cfg_file *f);

/* Environment selection: WANT is an exact name, a unique prefix, or the name
 * of a server used by exactly one environment ("prod" → "production").
 * NULL or "" selects the only environment when there is exactly one.
 * Returns NULL with an error listing the choices in DIAG otherwise. */
const struct cfg_env *cfg_select_env(const struct cfg_file *f, const char *want,
                                     struct cfg_diag *diag);
const struct cfg_service *cfg_env_service(const struct cfg_env *e, const char *name);
const struct cfg_server *cfg_find_server(const struct cfg_file *f, const char *name);
/* True for hosts that mean this machine: localhost, 127.0.0.0/8, ::1. */
bool cfg_server_is_local(const struct cfg_server *s);

/* Placement of a service's replicas over its environment's servers
 * (docs/servers.md "Several servers"). The eligible servers (the
 * environment's servers: in order, filtered by placement) are numbered
 * p = 0..n-1; the server at p runs replicas/n + (p < replicas%n) replicas,
 * named from slot_first = p+1 by slot_stride = n, so names are unique over
 * the environment (5 over a, b, c: a -1 -4, b -2 -5, c -3). */
struct cfg_place {
    const struct cfg_server *server; /* NULL when the name is not defined */
    bool eligible;
    unsigned replicas;    /* 0 for a server that is not eligible */
    unsigned slot_first;  /* 1-based; 0 when not eligible */
    unsigned slot_stride; /* n */
};
/* True when placement lets server SV run replicas of S. */
bool cfg_server_eligible(const struct cfg_service *s, const struct cfg_server *sv);
/* Fill OUT[i] for E->servers[i] (E->servers_len entries) with the spread of
 * REPLICAS replicas of S. Returns n, the number of eligible servers. */
size_t cfg_place(const struct cfg_file *f, const struct cfg_env *e, const struct cfg_service *s,
                 unsigned replicas, struct cfg_place *out);

/* The CLI's common path: load FILE (NULL = ./tako.yaml), print diagnostics to
 * ERR, select ENV. Returns 0, or -EINVAL when the file is invalid or the
 * environment cannot be chosen (already reported; exit with status 2).
 * With ENV NULL and several environments, *env_out is NULL (all of them). */
int cfg_open(const char *file, const char *env, FILE *err, struct cfg_file **f_out,
             const struct cfg_env **env_out);

/* ---- JSON (jansson), canonical key order ------------------------------ */

/* New references; every default is present. Used for `config explain
 * --output json`, revision hashing and storing revisions. */
json_t *cfg_service_to_json(const struct cfg_service *s);
json_t *cfg_env_to_json(const struct cfg_env *e);
json_t *cfg_file_to_json(const struct cfg_file *f);
/* Rebuild a service from cfg_service_to_json() output. Returns a heap
 * service (free with cfg_service_free) or NULL with a message in ERR. */
struct cfg_service *cfg_service_from_json(json_t *j, char *err, size_t errlen);
struct cfg_service *cfg_service_dup(const struct cfg_service *s);
void cfg_service_free(struct cfg_service *s);

/* ---- helpers ---------------------------------------------------------- */

/* Split a command line like a POSIX shell would split words, without running
 * one: blanks separate words, '…' is literal, "…" allows \" \\ \$ \`,
 * a backslash escapes the next character. Operators (| & ; < > ( ) `) and
 * $( are refused. Returns 0 with a NULL-terminated heap argv (free with
 * cfg_argv_free), or -EINVAL with a message in ERR. */
int cfg_split_command(const char *s, char ***argv_out, char *err, size_t errlen);
void cfg_argv_free(char **argv);

/* True when an env key names a secret: it contains PASS, SECRET, TOKEN, KEY
 * or CREDENTIAL (any case). Such values are shown as "******". */
bool cfg_env_key_is_secret(const char *key);

#endif
