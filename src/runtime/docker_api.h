/* docker_api.h — a Docker Engine API client: JSON over HTTP/1.1 on the
 * engine's unix socket, through libcurl.
 *
 * Every call is blocking and made on its own curl handle, so one client may
 * be used from several threads at once (the Docker driver runs calls on
 * worker threads and never on takod's loop). The API version is negotiated
 * once in dk_open with GET /_ping: the lower of the daemon's and
 * DK_API_MAX, never newer than the daemon's.
 *
 * Functions return 0 or -errno with a message in err (which may be NULL):
 * -ENOENT no such container/image (HTTP 404), -EEXIST conflict (409, e.g.
 * the name is in use), -EINVAL refused input (400), -ECONNREFUSED /
 * -ENOENT-on-socket reported as -EHOSTDOWN (the engine is not reachable),
 * -EIO anything else. HTTP 304 (already started / already stopped) is 0.
 */
#ifndef TAKO_RUNTIME_DOCKER_API_H
#define TAKO_RUNTIME_DOCKER_API_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DK_API_MAX "1.41" /* the newest API version whose fields this client uses */
#define DK_API_MIN "1.24" /* oldest accepted (Docker 1.12) */
#define DK_DEFAULT_SOCK "/var/run/docker.sock"
#define DK_BUILD_TAIL 12 /* builder lines kept for a failure message */
#define DK_BUILD_TIMEOUT_S 1800 /* a build that takes longer fails */
#define DK_PULL_TIMEOUT_S 1800  /* so does a pull */

struct dk_client;

/* host: "unix:///path", or NULL for $DOCKER_HOST, else DK_DEFAULT_SOCK.
 * Pings the engine and negotiates the version. On failure (-EHOSTDOWN when
 * nothing answers on the socket) err names the socket tried and how to
 * start Docker; *out is NULL. */
int dk_open(const char *host, struct dk_client **out, char *err, size_t errlen);
void dk_close(struct dk_client *c);
/* The socket path and the negotiated version ("1.41"). */
const char *dk_socket(const struct dk_client *c);
const char *dk_version(const struct dk_client *c);
/* The unix socket path that dk_open(host) would try (static buffer). */
const char *dk_socket_for(const char *host);
/* GET /_ping: 0 when the engine answers. */
int dk_ping(struct dk_client *c, char *err, size_t errlen);

/* ---- images ---- */

/* One builder output line (stream text, without its trailing newline). */
typedef void (*dk_line_cb)(void *data, const char *line);

struct dk_build_opts {
    const char *dir;        /* the build context */
    const char *dockerfile; /* relative to dir; NULL → "Dockerfile" */
    const char *tag;        /* "name:tag" */
    const char *const *label_kv; /* NULL-terminated "key", "value", ... pairs, or NULL */
    dk_line_cb progress;    /* may be NULL */
    void *data;
};
/* POST /build with a tar of dir (honouring dir/.dockerignore; the
 * Dockerfile and .dockerignore are always sent), RUN steps on the host's
 * network (networkmode=host). On a build error the
 * message holds the builder's error and its last lines. *image_id (may be
 * NULL) receives "sha256:…" when known. */
int dk_build(struct dk_client *c, const struct dk_build_opts *o, char *image_id, size_t idlen,
             char *err, size_t errlen);
/* POST /images/create?fromImage=&tag=: pull ref (a tagless ref pulls
 * ":latest", never every tag). auth: the X-Registry-Auth value (base64url
 * of the JSON credentials, see dk_auth_header) or NULL. progress gets one
 * line per layer step ("ID: Pull complete"), not the byte counts. On
 * failure err reads "pulling image REF from REGISTRY failed: <the engine's
 * or registry's message>"; -ENOENT when the engine says the image does not
 * exist there, -EHOSTDOWN when the engine itself is not reachable. */
int dk_image_pull(struct dk_client *c, const char *ref, const char *auth, dk_line_cb progress,
                  void *data, char *err, size_t errlen);
/* Registry credentials (docker_auth.c). The X-Registry-Auth value:
 * base64url of {"username","password","identitytoken","serveraddress"}. */
int dk_auth_header(const char *user, const char *password, const char *identity_token,
                   const char *server, char **out);
/* From a config.json text (`docker login`'s "auths": "auth" = base64 of
 * USER:PASSWORD, or "username"/"password", or "identitytoken"), the header
 * for ref's registry into *out (malloc'd; NULL when the file has none).
 * Credential helpers are not run: -ENOTSUP with the reason when the file
 * names one for that registry. */
int dk_auth_from_config(const char *config_text, const char *ref, char **out, char *err,
                        size_t errlen);
/* dk_auth_from_config on $DOCKER_CONFIG/config.json, else
 * ~/.docker/config.json ($HOME, or the passwd entry's home of the user
 * takod runs as); 0 and NULL when there is no such file. */
int dk_auth_for(const char *ref, char **out, char *err, size_t errlen);
/* GET /images/NAME/json into *out (new reference), or -ENOENT. */
int dk_image_inspect(struct dk_client *c, const char *name, json_t **out, char *err,
                     size_t errlen);
/* POST /images/SRC/tag?repo=&tag= */
int dk_image_tag(struct dk_client *c, const char *src, const char *repo, const char *tag,
                 char *err, size_t errlen);
/* DELETE /images/NAME (force: also when containers use it). */
int dk_image_remove(struct dk_client *c, const char *name, bool force, char *err,
                    size_t errlen);
/* GET /images/json?filters={"reference":[ref],"label":[label]} into *out
 * (array, new ref); ref and label may each be NULL. */
int dk_image_list(struct dk_client *c, const char *ref, const char *label, json_t **out,
                  char *err, size_t errlen);

/* GET /networks/NAME into *out (new reference), or -ENOENT. */
int dk_network_inspect(struct dk_client *c, const char *name, json_t **out, char *err,
                       size_t errlen);

/* ---- containers ---- */

struct dk_create {
    const char *name, *hostname, *image;
    char *const *cmd;             /* NULL-terminated, or NULL for the image's CMD */
    const char *const *env;       /* NULL-terminated "KEY=VALUE", or NULL */
    const char *const *label_kv;  /* NULL-terminated key, value pairs, or NULL */
    bool host_network;            /* NetworkMode host; else the default bridge */
    uint16_t publish_host_port;   /* bridge only: 127.0.0.1:host_port → container_port */
    uint16_t container_port;
    unsigned stop_timeout_s;      /* StopTimeout (docker stop without -t) */
    const char *workdir;          /* NULL: the image's */
};
/* POST /containers/create?name=; the container id (64 hex) into id.
 * Docker's own restart policy is "no": restarts are tako's. */
int dk_container_create(struct dk_client *c, const struct dk_create *o, char id[72], char *err,
                        size_t errlen);
int dk_container_start(struct dk_client *c, const char *id, char *err, size_t errlen);
/* POST /containers/ID/stop?t=timeout_s: SIGTERM (the image's StopSignal),
 * then SIGKILL after timeout_s. Returns when the container has stopped. */
int dk_container_stop(struct dk_client *c, const char *id, unsigned timeout_s, char *err,
                      size_t errlen);
/* POST /containers/ID/kill?signal= (NULL → SIGKILL). */
int dk_container_kill(struct dk_client *c, const char *id, const char *signal, char *err,
                      size_t errlen);
/* DELETE /containers/ID?force= */
int dk_container_remove(struct dk_client *c, const char *id, bool force, char *err,
                        size_t errlen);
/* GET /containers/ID/json into *out (new reference), or -ENOENT. */
int dk_container_inspect(struct dk_client *c, const char *id, json_t **out, char *err,
                         size_t errlen);
/* GET /containers/json?all=1&filters={"label":[label]} (label "k=v" or "k"). */
int dk_container_list(struct dk_client *c, const char *label, json_t **out, char *err,
                      size_t errlen);

/* One log record: stream 1 = stdout, 2 = stderr; data is not terminated,
 * one record may hold several lines or part of one. */
typedef int (*dk_log_cb)(void *data, int stream, const char *buf, size_t len);
/* GET /containers/ID/logs?stdout=1&stderr=1&timestamps=ts&tail=N (< 0 = all)
 * &follow=; the multiplexed stream (8-byte frame headers) is split into
 * records. With follow it returns when the container stops, when cb
 * returns non-zero, or when *cancel becomes true (checked at least once a
 * second; cancel may be NULL). */
int dk_container_logs(struct dk_client *c, const char *id, bool follow, int tail,
                      bool timestamps, dk_log_cb cb, void *data, const volatile bool *cancel,
                      char *err, size_t errlen);

struct dk_stats {
    uint64_t cpu_total_ns, precpu_total_ns;       /* container CPU time */
    uint64_t system_ns, presystem_ns;             /* host CPU time */
    unsigned online_cpus;
    uint64_t mem_usage, mem_cache, mem_limit;     /* bytes */
    unsigned pids;
    bool has_pre; /* precpu_* were filled (not a one-shot read) */
};
/* GET /containers/ID/stats?stream=false[&one-shot=true]. one_shot: one
 * sample at once (no precpu); else the engine waits for two samples. */
int dk_container_stats(struct dk_client *c, const char *id, bool one_shot, struct dk_stats *out,
                       char *err, size_t errlen);
/* CPU percent of one CPU, as `docker stats` shows it, between two samples
 * (a is older), or from one sample with its precpu part when b is NULL. */
double dk_cpu_percent(const struct dk_stats *a, const struct dk_stats *b);
/* Memory as `docker stats` shows it: usage minus page cache. */
uint64_t dk_mem_used(const struct dk_stats *s);

/* ---- events ---- */

/* One event object (borrowed for the call). Non-zero return ends the stream. */
typedef int (*dk_event_cb)(void *data, json_t *event);
/* GET /events?filters={"type":["container"],"label":[label]} (since: unix
 * seconds, 0 = from now). Blocks until *cancel, cb returns non-zero, or the
 * connection ends (-EPIPE: the engine went away). */
int dk_events(struct dk_client *c, const char *label, long long since, dk_event_cb cb,
              void *data, const volatile bool *cancel, char *err, size_t errlen);

/* ---- pure helpers (unit-tested) ---- */

/* A valid image reference [registry[:port]/]path[:tag][@digest] with
 * lower-case path components. Returns 0 or -EINVAL with the reason. */
int dk_ref_check(const char *ref, char *err, size_t errlen);
/* Split "name[:tag]" (a ':' after the last '/'); tag defaults to "latest". */
void dk_ref_split(const char *ref, char *name, size_t nlen, char *tag, size_t tlen);

/* The arguments of a pull: for "name@sha256:…" from = ref and tag = "";
 * else from = the name and tag = its tag or "latest". */
void dk_ref_pull_args(const char *ref, char *from, size_t flen, char *tag, size_t tlen);
/* The pull rule: true when ref names no tag or the tag "latest" (and no
 * digest): such a reference moves, so it is pulled at every deploy; any
 * other tag or a digest is pulled only when the engine lacks it. */
bool dk_ref_floating(const char *ref);
/* The registry host of ref as Docker resolves it: the first path component
 * when it has a '.' or ':' or is "localhost", else "docker.io". */
void dk_ref_registry(const char *ref, char *host, size_t hlen);

/* A container start refused because its program cannot run (runc's
 * `exec: "PROG": REASON`) as `command: cannot run "PROG" in image IMAGE:
 * REASON`. -ENOENT (out untouched) when msg is about something else. */
int dk_start_error(const char *msg, const char *image, char *out, size_t len);

/* .dockerignore: patterns parsed from the file's text. */
struct dk_ignore;
struct dk_ignore *dk_ignore_parse(const char *text);
void dk_ignore_free(struct dk_ignore *ig);
/* True when the context-relative path (no leading "./") is excluded. */
bool dk_ignore_match(const struct dk_ignore *ig, const char *path);
/* Pattern match with *, ?, [...] within one path component and ** across
 * components. */
bool dk_glob(const char *pattern, const char *path);

/* The tar stream of a build context (ustar, PAX for long names). Returns
 * 0 with a malloc'd buffer, or -errno (err names the file). */
int dk_tar_context(const char *dir, const char *dockerfile, char **buf, size_t *len, char *err,
                   size_t errlen);

/* Split a multiplexed log stream: feeds bytes, calls cb per complete frame.
 * Keeps a partial frame between calls. */
struct dk_demux {
    unsigned char head[8];
    size_t head_len;
    int stream;
    size_t left; /* payload bytes left in the current frame */
    dk_log_cb cb;
    void *data;
    int stop; /* cb's non-zero return */
};
void dk_demux_init(struct dk_demux *d, dk_log_cb cb, void *data);
/* Returns 0, or cb's non-zero return. */
int dk_demux_feed(struct dk_demux *d, const char *buf, size_t len);

#endif
