/* dataplane.h — the load balancer as its own process (`tako dataplane`),
 * which takod drives over $TAKO_HOME/dataplane.sock, and the client takod
 * uses: a `struct proxy` whose calls become protocol messages, plus the
 * supervision of the data-plane process. See docs/internals/dataplane.md. */
#ifndef TAKO_DATAPLANE_DATAPLANE_H
#define TAKO_DATAPLANE_DATAPLANE_H

#include <jansson.h>
#include <stdbool.h>

#include "core/ev.h"
#include "proxy/proxy.h"

/* `tako dataplane`: the process (internal command, started by takod). */
int cmd_dataplane(int argc, char **argv);
extern const char help_dataplane[];

/* What takod learns about the data plane, for `tako ps`, events and logs. */
typedef void (*dp_event_cb)(void *data, const char *level, const char *kind, const char *msg);

struct dp_client_opts {
    const char *home;       /* $TAKO_HOME: dataplane.sock, .pid, .log live there */
    const char *access_log; /* passed to a data plane this client starts */
    dp_event_cb on_event;
    void *data;
};

/* Connect to the running data plane (start one when none runs), become its
 * only driver and upgrade it in place when it runs another build of tako.
 * The returned proxy forwards takod's calls; it survives data-plane
 * restarts (state is replayed) and keeps the last stats while the data
 * plane is away. NULL with err set when no data plane can be had. */
struct proxy *dp_client_new(struct ev_loop *loop, const struct dp_client_opts *o, char *err,
                            size_t errlen);
/* takod re-created its pools and listeners: the data plane drops the ones
 * nobody claimed since this driver connected. */
void dp_client_sync_done(struct proxy *p);
/* {"state": "running"|"restarting"|"crashloop", "pid", "version", "build",
 * "restarts", "last_error"}; caller decrefs. */
json_t *dp_client_status(struct proxy *p);

/* A short id of the running executable (SHA-256 of /proc/self/exe, 12 hex
 * digits): two builds with one version string still differ. */
const char *dp_build_id(void);

#endif
