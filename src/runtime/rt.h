/* rt.h — the runtime driver interface: replicas as supervised processes.
 *
 * The process driver runs each replica under a small supervisor process
 * (`tako shim`, see docs/internals/runtime.md) that owns the app's process
 * tree, its log pipes and a state file under $TAKO_HOME/replicas/<name>/.
 * Replicas therefore survive a restart of takod and are re-adopted.
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

enum rt_restart { RT_RESTART_ALWAYS, RT_RESTART_ON_FAILURE, RT_RESTART_NEVER };

struct rt_env_kv {
    const char *key, *value;
};

/* Copied by rt_start; the caller keeps ownership of its strings. */
struct rt_spec {
    const char *project, *service;
    unsigned index; /* replica n → name "<project>-<service>-<n>" */
    const char *revision;
    char *const *argv; /* NULL-terminated; argv[0] searched in PATH when it has no '/' */
    const char *cwd;   /* working directory, absolute; NULL → "/" */
    const struct rt_env_kv *env;
    size_t env_len; /* service env; PORT/HOSTNAME/TAKO_* are added by the runtime */
    uint16_t port;  /* assigned by the caller */
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
    pid_t pid; /* the app's pid (0 when none) */
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
    pid_t supervisor_pid; /* the replica's shim */
};

struct rt;
struct rt_replica;
typedef void (*rt_event_cb)(struct rt_replica *r, enum rt_state old_state,
                            enum rt_state new_state, void *data);

/* One per takod, bound to its loop and state dir (copied). cb may be NULL. */
struct rt *rt_new(struct ev_loop *loop, const char *state_dir, rt_event_cb cb, void *cb_data);
/* Forget all replicas and free rt. Does NOT stop them: they survive takod. */
void rt_free(struct rt *rt);
/* The program run as the supervisor: exe is run as `exe shim DIR`.
 * Default "/proc/self/exe" (any binary whose main dispatches "shim" to
 * rt_shim_main works). exe is copied. */
void rt_set_shim_exe(struct rt *rt, const char *exe);

/* Start a replica. Returns 0 and *out (owned by rt until rt_forget/rt_free),
 * or -errno with a message in err: -EINVAL bad spec (names, empty argv,
 * relative cwd, env key with '='), -EEXIST the replica
 * name is already running (never duplicated), others from the system. Exec
 * failures of the app are reported later as RT_FAILED with last_error. */
int rt_start(struct rt *rt, const struct rt_spec *spec, struct rt_replica **out, char *err,
             size_t errlen);
/* Graceful stop: SIGTERM to every process of the replica, stop_grace_ms,
 * then SIGKILL. done(r, data) is called (from the loop, never from inside
 * rt_stop) once no process of the replica is left; state is then RT_STOPPED. */
void rt_stop(struct rt_replica *r, void (*done)(struct rt_replica *, void *), void *data);
/* Stop gracefully and start again at once (counts a restart). */
void rt_restart(struct rt_replica *r);
/* Free a replica handle that is STOPPED, EXITED or FAILED (others: ignored
 * with a warning, the replica keeps running). Logs stay on disk. */
void rt_forget(struct rt_replica *r);
/* After a takod restart: scan the state dir, re-attach every live replica
 * (pid and process start time verified), clean up dead ones (their logs
 * stay). *out is a malloc'd array the caller frees (not the replicas). */
int rt_adopt_all(struct rt *rt, struct rt_replica ***out, size_t *n);

void rt_info(struct rt_replica *r, struct rt_info *info);
const struct rt_spec *rt_spec(struct rt_replica *r);
const char *rt_name(struct rt_replica *r);
void rt_set_data(struct rt_replica *r, void *data);
void *rt_data(struct rt_replica *r);

/* Liveness: feed each health check result. Failures within start_period_ms
 * of the app's start do not count; unhealthy_threshold failures in a row
 * restart the replica (rt_restart). */
void rt_report_health(struct rt_replica *r, bool ok, unsigned unhealthy_threshold,
                      uint64_t start_period_ms);

/* Logs: lines "2024-01-01T12:00:00.000Z stdout|stderr <text>".
 * rt_logs_tail returns the last n_lines (0 = all) lines with a timestamp at
 * or after since_wall_ms (0 = all), oldest first, across rotated files.
 * *lines is a malloc'd array of malloc'd strings (no newline); free with
 * rt_logs_free. Returns 0 (also when there are no logs) or -errno. */
int rt_logs_tail(const char *state_dir, const char *replica_name, size_t n_lines,
                 uint64_t since_wall_ms, char ***lines, size_t *n);
void rt_logs_free(char **lines, size_t n);
/* Path of the current log file, for follow (rotation renames it away:
 * reopen when its inode changes). Returns a static buffer. */
const char *rt_log_path(const char *state_dir, const char *replica_name);

const char *rt_state_name(enum rt_state s);
const char *rt_restart_name(enum rt_restart p);
/* "always" | "on-failure" | "never"; returns 0 or -EINVAL. */
int rt_restart_parse(const char *s, enum rt_restart *out);
/* Backoff before restart number k (1-based count of consecutive failures):
 * 1 s doubling, capped at 60 s. */
uint64_t rt_backoff_ms(unsigned consecutive_failures);

/* The supervisor's main: `PROG shim DIR`. Returns the process exit status. */
int rt_shim_main(int argc, char **argv);

#endif
