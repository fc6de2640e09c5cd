/* home.h — where takod keeps its state: $TAKO_HOME, else /var/lib/tako as
 * root, else ~/.local/state/tako. */
#ifndef TAKO_DAEMON_HOME_H
#define TAKO_DAEMON_HOME_H

#include <stddef.h>

/* The state directory (static storage), created with mode 0700 if missing.
 * Returns NULL with errno set when it cannot be created. */
const char *tako_home(void);
/* "<home>/<name>" into buf; returns buf. */
const char *tako_home_path(const char *name, char *buf, size_t len);

/* Free space the state directory must have before an operation: its
 * record in the store, and the spec, state and first log lines of the
 * replicas it starts go there. */
#define TAKO_HOME_MIN_FREE_KB 1024u

/* 0 when HOME's file system has TAKO_HOME_MIN_FREE_KB free; else -ENOSPC
 * with a message naming HOME and what is free in err (and refusing is
 * better than starting replicas that cannot write their state). */
int tako_home_space(const char *home, char *err, size_t errlen);

#endif
