/* rt.h — the runtime: replicas started, stopped, inspected and adopted
 * through one interface, whatever runs them.
 *
 * A replica is run by a driver (struct rt_driver_ops, rt_driver.h), chosen
 * per replica by rt_spec.driver: "process" (the default: the app under a
 * `tako shim` supervisor, rt_proc.h) or any driver in the table of
 * rt_drivers.c. Callers see only this header: they never learn how a
 * replica runs, where its logs are kept or which address it listens on
 * (rt_address). See docs/internals/runtime.md.
 *
 * Threading: everything here runs on the thread of the ev_loop given to
 * rt_new(); every callback is called from that loop. Functions return 0 or
 * -errno; a function that fails never calls its callback.
 */
#ifndef TAKO_RUNTIME_RT_H
#define TAKO_RUNTIME_RT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct ev_loop;

#define RT_DEFAULT_DRIVER "process"

enum rt_restart { RT_RESTART_ALWAYS, RT_RESTART_ON_FAILURE, RT_RESTART_NEVER };

struct rt_env_kv {
    const char *key, *value;
};

/* Copied by rt_start; the caller keeps ownership of its strings. */
struct rt_spec {
    const char *driver; /* NULL → RT_DEFAULT_DRIVER; a name of rt_drivers.c's table */
    const char *project, *service;
    const char *environment; /* the deploy environment ("production"), NULL none: labels only */
    unsigned index; /* replica n → name "<project>-<service>-<n>" */
    const char *revision;
    const char *image; /* container drivers: the image to run (NULL: build from build_dir) */
    const char *build_dir; /* the service's build directory (absolute), NULL none */
    const char *network;   /* container drivers: "host" (NULL) or "bridge": the app listens
                              on app_port in its own network, published on 127.0.0.1:port */
    uint16_t app_port;
    char *const *argv; /* NULL-terminated; argv[0] searched in PATH when it has no '/'.
                          Container drivers: NULL/empty → the image's own command */
    const char *cwd;   /* working directory, absolute; NULL → "/" */
    const struct rt_env_kv *env;
    size_t env_len; /* service env; PORT/HOSTNAME/TAKO_* are added by the runtime */
    uint16_t port;  /* assigned by the caller: the host port the replica is reached on */
    uint64_t stop_grace_ms;   /* 0 → 10 s */
    enum rt_restart restart;
    uint64_t log_max_bytes; /* 0 → 10 MiB */
    unsigned log_files;     /* 0 → 3 (current + 2 rotated) */
};

enum rt_state {
    RT_STARTING,
    RT_RUNNING,
    RT_BACKOFF, /* waiting to restart */
    RT_CRASHLOOP, /* waiting to restart after repeated quick exits */
    RT_STOPPING,
    RT_STOPPED,
    RT_EXITED, /* not restarted by policy */
    RT_FAILED  /* exec failed (cause in last_error) */
};

struct rt_info {
    char name[128];
    pid_t pid; /* the app's pid as seen from this host (0 when none or unknown) */
    uint16_t port;
    enum rt_state state;
    unsigned restarts;
    int last_exit_status; /* waitpid form, -1 none */
    uint64_t started_at_ms; /* wall clock of the current app start, 0 none */
    uint64_t uptime_ms;
    double cpu_percent; /* of one CPU, over the last sample interval */
    uint64_t rss_bytes; /* the app and all its descendants */
    double cpu_seconds; /* CPU time of the replica's processes since its supervisor
                         * started (app restarts included); grows until then */
    bool hostname_shared; /* no own UTS namespace: HOSTNAME env only */
    char last_error[256]; /* exec failure cause, or last exit + last output line */
    char revision[64];
    uint64_t backoff_ms;  /* delay of the pending restart (BACKOFF/CRASHLOOP), else 0 */
    pid_t supervisor_pid; /* the replica's supervisor (process driver: its shim), 0 none */
    uint64_t instance_id; /* without a supervisor (docker): what restarts and cpu_seconds
                           * are counted in, the same for the replica's whole life
                           * (across its containers and takod restarts); 0 none */
    char driver[16];      /* the driver's name */
};

struct rt;
struct rt_replica;
typedef void (*rt_event_cb)(struct rt_replica *r, enum rt_state old_state,
                            enum rt_state new_state, void *data);

/* One per takod, bound to its loop and state dir (copied). cb may be NULL.
 * Drivers are created on first use. */
struct rt *rt_new(struct ev_loop *loop, const char *state_dir, rt_event_cb cb, void *cb_data);
/* Forget all replicas and free rt. Does NOT stop them: they survive takod. */
void rt_free(struct rt *rt);
/* Progress notes of a replica being prepared (the Docker driver's build
 * output, one line per call), for the operation that started it. */
typedef void (*rt_note_cb)(struct rt_replica *r, const char *line, void *data);
void rt_set_note_cb(struct rt *rt, rt_note_cb cb, void *data);
/* Is name a driver of the table? */
bool rt_driver_known(const char *name);

/* Start a replica with the driver spec->driver names. Returns 0 and *out
 * (owned by rt until rt_forget/rt_free), or -errno with a message in err:
 * -EINVAL bad spec (unknown driver, names, empty argv, relative cwd, env
 * key with '='), -EEXIST the replica name is already running (never
 * duplicated), others from the driver. Failures of the app itself are
 * reported later as RT_FAILED with last_error. */
int rt_start(struct rt *rt, const struct rt_spec *spec, struct rt_replica **out, char *err,
             size_t errlen);
/* Graceful stop: SIGTERM to every process of the replica, stop_grace_ms,
 * then SIGKILL. done(r, data) is called (from the loop, never from inside
 * rt_stop) once nothing of the replica is left; state is then RT_STOPPED. */
void rt_stop(struct rt_replica *r, void (*done)(struct rt_replica *, void *), void *data);
/* Stop gracefully and start again at once (counts a restart). */
void rt_restart(struct rt_replica *r);
/* Send sig to the replica's app (all its processes). 0, -ESRCH none runs. */
int rt_signal(struct rt_replica *r, int sig);
/* Free a replica handle that is STOPPED, EXITED or FAILED (others: ignored
 * with a warning, the replica keeps running). Logs stay. */
void rt_forget(struct rt_replica *r);
/* After a takod restart: ask every driver for its live replicas and
 * re-attach them; dead ones are cleaned up (their logs stay). *out is a
 * malloc'd array the caller frees (not the replicas). A driver that cannot
 * be reached (Docker not running) is warned about when expected(name,
 * data) says deployed services use it (expected NULL: always), else noted
 * at debug level: a machine without Docker is not a problem until a
 * service asks for it. */
int rt_adopt_all(struct rt *rt, bool (*expected)(const char *driver, void *data), void *data,
                 struct rt_replica ***out, size_t *n);

/* Everything about the replica, CPU and memory included (those may take a
 * sample of every replica of the driver, at most every 500 ms). */
void rt_info(struct rt_replica *r, struct rt_info *info);
/* The same without CPU and memory (cpu_percent, rss_bytes 0): cheap, for
 * callers that look at every replica often (the reconciler's tick). */
void rt_inspect(struct rt_replica *r, struct rt_info *info);
const struct rt_spec *rt_spec(struct rt_replica *r);
const char *rt_name(struct rt_replica *r);
/* The address the replica serves on, "host:port", as the balancer reaches
 * it (the process driver: 127.0.0.1 and the spec's port). Returns 0 or
 * -ENOSPC / -ENOTCONN (no address yet). */
int rt_address(struct rt_replica *r, char *buf, size_t len);
void rt_set_data(struct rt_replica *r, void *data);
void *rt_data(struct rt_replica *r);

/* Liveness: feed each health check result. Failures within start_period_ms
 * of the app's start do not count; unhealthy_threshold failures in a row
 * restart the replica (rt_restart). */
void rt_report_health(struct rt_replica *r, bool ok, unsigned unhealthy_threshold,
                      uint64_t start_period_ms);

/* ---- logs ----
 * Lines "2024-01-01T12:00:00.000Z stdout|stderr <text>" (no newline). A
 * replica's logs outlive it as long as its driver keeps them, so they are
 * named by (driver, replica name), not by a live handle. */

struct rt_log_ref {
    char name[128];
    const char *driver; /* static: the driver's name */
};
/* Every replica whose logs some driver still has, of project (and service,
 * NULL = all), sorted by name. *out is malloc'd (caller frees). */
int rt_logs_list(struct rt *rt, const char *project, const char *service,
                 struct rt_log_ref **out, size_t *n);
/* The last n_lines (0 = all) lines with a timestamp at or after
 * since_wall_ms (0 = all), oldest first. *lines is a malloc'd array of
 * malloc'd strings; free with rt_logs_free. Returns 0 (also when there are
 * no logs) or -errno. driver NULL = RT_DEFAULT_DRIVER. */
int rt_logs_tail(struct rt *rt, const char *driver, const char *name, size_t n_lines,
                 uint64_t since_wall_ms, char ***lines, size_t *n);
void rt_logs_free(char **lines, size_t n);

/* Follow: line(data, name, text) for every line written after the call
 * (from_start: every line the driver still has, then the new ones), from
 * the loop, until rt_logs_unfollow. Works for a replica that does not run
 * yet (lines appear when it starts). Returns 0 and *out, or -errno. */
typedef void (*rt_log_line_cb)(void *data, const char *name, const char *line);
struct rt_log_follow;
int rt_logs_follow(struct rt *rt, const char *driver, const char *name, bool from_start,
                   rt_log_line_cb line, void *data, struct rt_log_follow **out);
void rt_logs_unfollow(struct rt_log_follow *f);

const char *rt_state_name(enum rt_state s);
const char *rt_restart_name(enum rt_restart p);
/* "always" | "on-failure" | "never"; returns 0 or -EINVAL. */
int rt_restart_parse(const char *s, enum rt_restart *out);
/* Backoff before restart number k (1-based count of consecutive failures):
 * 1 s doubling, capped at 60 s. */
uint64_t rt_backoff_ms(unsigned consecutive_failures);

#endif
