/* takod.h — the node agent's entry point, called by `tako daemon`. */
#ifndef TAKO_DAEMON_TAKOD_H
#define TAKO_DAEMON_TAKOD_H

struct takod_opts {
    const char *home;       /* state directory (exists, mode 0700) */
    const char *access_log; /* one line per proxied request; NULL = none */
};

/* Run takod in the foreground until SIGTERM/SIGINT or POST /v1/shutdown.
 * A start-up failure is printed to stderr and to $TAKO_READY_FD (the CLI
 * waiting for us). Returns 0 after an orderly stop, 1 when it could not
 * start. */
int takod_run(const struct takod_opts *o);

#endif
