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

#endif
