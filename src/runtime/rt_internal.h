/* rt_internal.h — shared internals of the process runtime: replica files,
 * /proc readers and the log writer (used by takod's side and by the shim). */
#ifndef TAKO_RUNTIME_RT_INTERNAL_H
#define TAKO_RUNTIME_RT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

#include "runtime/rt_driver.h"
#include "runtime/rt_proc.h"

#define RT_LINE_MAX 16384   /* longer output lines are split */

/* spec.json: the spec plus takod's restart bookkeeping, for the shim and
 * for adoption. Written atomically. */
int rt__spec_save(const char *path, const struct rt_spec *s, unsigned restarts,
                  unsigned consecutive);
int rt__spec_load(const char *path, struct rt__owned_spec *out, unsigned *restarts,
                  unsigned *consecutive);
/* The same with a driver's own bookkeeping under the key "driver_state":
 * extra (borrowed, may be NULL) is written; *extra_out (may be NULL)
 * receives a new reference to what was read, or NULL. */
int rt__spec_save_ex(const char *path, const struct rt_spec *s, unsigned restarts,
                     unsigned consecutive, json_t *extra);
int rt__spec_load_ex(const char *path, struct rt__owned_spec *out, unsigned *restarts,
                     unsigned *consecutive, json_t **extra_out);

/* The shim's state file, rewritten atomically on every change. */
enum rt__app_state { RT_APP_STARTING, RT_APP_RUNNING, RT_APP_EXITED, RT_APP_FAILED };
struct rt__shim_state {
    pid_t shim_pid;
    uint64_t shim_start; /* /proc/PID/stat starttime (clock ticks since boot) */
    pid_t app_pid;
    uint64_t app_start;
    enum rt__app_state app;
    int exit_status; /* waitpid form, -1 none */
    bool stop_requested;
    bool hostname_shared;
    bool done; /* the whole tree is gone; the shim exits next */
    uint64_t started_at_ms;
    char error[256];
};
int rt__state_save(const char *path, const struct rt__shim_state *st);
int rt__state_load(const char *path, struct rt__shim_state *st);

/* /proc readers. */
struct rt__pstat {
    pid_t pid, ppid, pgrp;
    uint64_t utime, stime, cutime, cstime; /* clock ticks */
    uint64_t starttime;                    /* clock ticks since boot */
    uint64_t rss_pages;
    char state;
};
int rt__proc_stat(pid_t pid, struct rt__pstat *out);
/* True when pid is alive (not a zombie) and started at starttime. */
bool rt__proc_alive(pid_t pid, uint64_t starttime);
/* Every live process, sorted by pid: the count and a malloc'd array in
 * *out (caller frees), or -errno. One pass over /proc. */
ssize_t rt__proc_scan(struct rt__pstat **out);
/* Index of pid in a scan (binary search), or -1. */
ssize_t rt__proc_find(const struct rt__pstat *all, size_t n, pid_t pid);
/* For each all[i], owner[i] = k when it descends from roots[k] (a root
 * itself excluded), else -1. O(n) with memoized walks up the tree. */
void rt__proc_owners(const struct rt__pstat *all, size_t n, const pid_t *roots, size_t nroots,
                     int *owner);
/* Every live process that descends from root (root excluded). Returns the
 * count and a malloc'd array in *out (caller frees), or -errno. */
ssize_t rt__proc_descendants(pid_t root, struct rt__pstat **out);

/* Log writer: timestamped lines into DIR/output.log, rotated by size into
 * output.log.1 … output.log.(files-1). */
struct rt__logw {
    char *path;
    int fd;
    uint64_t size, max_bytes;
    unsigned files;
    /* Lines that could not be written (a full disk): counted, and told in
     * the log by one line once writing works again. */
    uint64_t dropped, dropped_told;
    int drop_errno;
    int count_fd; /* DIR/log_dropped: the count, for takod's metrics */
};
int rt__logw_open(struct rt__logw *w, const char *dir, uint64_t max_bytes, unsigned files);
/* Write one line (text without newline) for stream "stdout"/"stderr". A
 * line the disk refuses is dropped and counted (w->dropped), never waited
 * for: the app's pipes keep flowing. */
void rt__logw_line(struct rt__logw *w, const char *stream, const char *text, size_t len);
void rt__logw_close(struct rt__logw *w);
/* The text of the last logged line (without time and stream) into buf,
 * reading only the end of the newest files. Returns 0 or -ENOENT. */
int rt__log_last_line(const char *state_dir, const char *replica_name, char *buf, size_t len);
/* The process driver's log ops (rt_log.c): replicas with a log directory,
 * and a follower that polls the current file every RT_FOLLOW_POLL_MS. */
#define RT_FOLLOW_POLL_MS 200u
int rt__proc_logs_list(const char *state_dir, const char *driver, const char *project,
                       const char *service, struct rt_log_ref **out, size_t *n);
struct ev_loop;
int rt__proc_logs_follow(struct ev_loop *loop, const char *state_dir, const char *name,
                         bool from_start, rt_log_line_cb line, void *data,
                         struct rt_log_follow **out);
void rt__proc_logs_unfollow(struct rt_log_follow *f);
/* Format a line prefix for wall time ms: "2024-01-01T12:00:00.000Z". */
void rt__fmt_time(uint64_t wall_ms, char buf[32]);
/* Parse the leading timestamp of a log line; returns 0 or -EINVAL. */
int rt__parse_time(const char *line, uint64_t *wall_ms);

/* Small file helpers. */
int rt__write_file_atomic(const char *path, const char *data, size_t len);
char *rt__read_file(const char *path, size_t max, size_t *len);

#endif
