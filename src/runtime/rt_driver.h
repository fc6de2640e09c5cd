/* rt_driver.h — what a runtime driver implements: one ops table, a driver
 * instance per rt, replica handles that embed struct rt_replica.
 *
 * Adding a driver = one file that fills a `const struct rt_driver_ops`
 * plus one row in rt_drivers.c. Nothing else in takod knows the driver: the
 * reconciler uses rt.h only, and a spec names its driver.
 *
 * Promises every driver keeps (the reconciler relies on them):
 * - All calls and callbacks on the loop thread of rt; a call that fails
 *   never calls its callback; rt__emit() for every state change, in order
 *   (STARTING → RUNNING → … as in enum rt_state).
 * - start validates and returns a handle at once; the app starts later
 *   (RT_STARTING → RT_RUNNING, or RT_FAILED with last_error). A replica
 *   name runs at most once (-EEXIST), across takod restarts too.
 * - stop(done) calls done from the loop, never from inside stop, once
 *   nothing of the replica runs; a stop wins over a pending restart.
 * - Restart policy and backoff are the driver's (rt__policy gives the
 *   shared rules), so every driver restarts the same way.
 * - Replicas outlive takod: adopt finds the live ones again; handles are
 *   freed by forget only (deferred: forgetting from a callback is safe).
 * - address gives "host:port" the balancer connects to.
 * - Logs are named by replica name and outlive the handle; lines are
 *   "<ISO time> stdout|stderr <text>".
 */
#ifndef TAKO_RUNTIME_RT_DRIVER_H
#define TAKO_RUNTIME_RT_DRIVER_H

#include "runtime/rt.h"

struct rt_driver;

/* Embedded first in every driver's replica (h2o's `super`): the generic
 * layer reads these, the driver owns the rest. */
struct rt_replica {
    struct rt_driver *drv;
    const struct rt_spec *spec; /* the driver's copy, valid until the handle is freed */
    const char *name;           /* "<project>-<service>-<n>", same lifetime */
    void *data;                 /* rt_set_data */
    unsigned health_fails;      /* rt_report_health */
};

/* Embedded first in every driver instance. */
struct rt_driver {
    const struct rt_driver_ops *ops;
    struct rt *rt;
};

struct rt_log_follow {
    struct rt_driver *drv;
};

struct rt_driver_ops {
    const char *name; /* what rt_spec.driver and `runtime:` say */
    /* One instance per rt, made on first use; 0 and *out or -errno (err). */
    int (*create)(struct rt *rt, struct rt_driver **out, char *err, size_t errlen);
    /* Forget every replica (never stop them) and free the instance. */
    void (*destroy)(struct rt_driver *d);

    int (*start)(struct rt_driver *d, const struct rt_spec *spec, struct rt_replica **out,
                 char *err, size_t errlen);
    void (*stop)(struct rt_replica *r, void (*done)(struct rt_replica *, void *), void *data);
    /* why (may be NULL) becomes last_error: the reason shown for the restart. */
    void (*restart)(struct rt_replica *r, const char *why);
    int (*signal)(struct rt_replica *r, int sig);
    void (*forget)(struct rt_replica *r);
    /* Live replicas this driver ran before takod restarted (malloc'd array). */
    int (*adopt)(struct rt_driver *d, struct rt_replica ***out, size_t *n);

    /* State fields of info (not the stats); cheap. */
    void (*inspect)(struct rt_replica *r, struct rt_info *info);
    /* CPU % and RSS of a running replica; may sample every replica at once. */
    void (*stats)(struct rt_replica *r, double *cpu_percent, uint64_t *rss_bytes);
    int (*address)(struct rt_replica *r, char *buf, size_t len);

    /* Logs, by replica name (see rt.h). list appends to out and n. */
    int (*logs_list)(struct rt_driver *d, const char *project, const char *service,
                     struct rt_log_ref **out, size_t *n);
    int (*logs_tail)(struct rt_driver *d, const char *name, size_t n_lines,
                     uint64_t since_wall_ms, char ***lines, size_t *n);
    int (*logs_follow)(struct rt_driver *d, const char *name, bool from_start,
                       rt_log_line_cb line, void *data, struct rt_log_follow **out);
    void (*logs_unfollow)(struct rt_log_follow *f);
};

/* ---- shared by drivers ---- */

#define RT_NAME_MAX 64      /* a hostname holds at most 64 bytes */
#define RT_DEFAULT_GRACE_MS 10000u
#define RT_DEFAULT_LOG_MAX (10u * 1024u * 1024u)
#define RT_DEFAULT_LOG_FILES 3u
#define RT_HEALTHY_RESET_MS 60000u /* running this long resets the backoff */
#define RT_CRASHLOOP_AFTER 3u      /* consecutive quick exits shown as a crash loop */

/* The restart policy for an app that exited by itself with status
 * (waitpid form, -1 unknown) after running ran_ms: RT_EXITED, or
 * RT_BACKOFF / RT_CRASHLOOP with *backoff_ms set. Updates *consecutive
 * (reset by a run of RT_HEALTHY_RESET_MS or more). */
enum rt_state rt__policy(enum rt_restart policy, int status, uint64_t ran_ms,
                         unsigned *consecutive, uint64_t *backoff_ms);

/* A spec whose strings the runtime owns (rt_spec's pointers point here). */
struct rt__owned_spec {
    struct rt_spec spec;
    char **argv;
    struct rt_env_kv *env;
};

/* Build "<project>-<service>-<n>" after checking each part is made of
 * [A-Za-z0-9_.-] and the result fits a hostname. Returns 0 or -EINVAL with
 * the reason in err. */
int rt__replica_name(const struct rt_spec *s, char *buf, size_t len, char *err, size_t errlen);
/* Deep copy of a spec, defaults filled in. */
void rt__spec_copy(struct rt__owned_spec *dst, const struct rt_spec *src);
/* 0, or -EINVAL with a message naming replica name when an environment
 * variable of spec has an empty name or one with '=' (every driver's rule). */
int rt__spec_check_env(const struct rt_spec *spec, const char *name, char *err, size_t errlen);
void rt__spec_free(struct rt__owned_spec *s);

/* The table (rt_drivers.c), NULL-terminated; the first is the default. */
extern const struct rt_driver_ops *const rt_driver_table[];
/* rt_new with another table (tests: a fake driver under the reconciler). */
struct rt *rt_new_with(struct ev_loop *loop, const char *state_dir, rt_event_cb cb,
                       void *cb_data, const struct rt_driver_ops *const *table);

/* For drivers: the loop and the state dir of rt, the state change report,
 * and the instance of another driver (created on first use, NULL when it
 * cannot be). */
struct ev_loop *rt__loop(struct rt *rt);
const char *rt__state_dir(struct rt *rt);
void rt__emit(struct rt_replica *r, enum rt_state old_state, enum rt_state new_state);
void rt__note(struct rt_replica *r, const char *line);
struct rt_driver *rt__driver(struct rt *rt, const char *name, char *err, size_t errlen);

#endif
