/* rt_proc.h — the process driver: each replica's app runs under its own
 * supervisor (`tako shim`), which owns its process tree, its log files and
 * a state file under $TAKO_HOME/replicas/<name>/, so replicas survive a
 * restart of takod and are re-adopted. These calls are the process
 * driver's own; everything else goes through rt.h. */
#ifndef TAKO_RUNTIME_RT_PROC_H
#define TAKO_RUNTIME_RT_PROC_H

#include <stddef.h>
#include <stdint.h>

struct rt;
struct rt_driver_ops;

extern const struct rt_driver_ops rt_proc_ops;

/* The program run as the supervisor: exe is run as `exe shim DIR`.
 * Default "/proc/self/exe" (any binary whose main dispatches "shim" to
 * rt_proc_shim_main works). exe is copied. Returns 0 or -errno. */
int rt_proc_set_shim_exe(struct rt *rt, const char *exe);

/* The supervisor's main: `PROG shim DIR`. Returns the process exit status. */
int rt_proc_shim_main(int argc, char **argv);

/* The process driver's log files, read directly (rt_logs_tail goes
 * through the driver): same contract as rt_logs_tail. */
int rt_proc_logs_tail(const char *state_dir, const char *replica_name, size_t n_lines,
                      uint64_t since_wall_ms, char ***lines, size_t *n);
/* Path of the current log file (rotation renames it away: a follower
 * reopens when its inode changes). Returns a static buffer. */
const char *rt_proc_log_path(const char *state_dir, const char *replica_name);
/* Log lines the replica's current supervisor could not write (a full
 * disk) into *n. Returns 0, or -errno when it keeps no count. */
int rt_proc_log_dropped(const char *state_dir, const char *replica_name, uint64_t *n);

#endif
