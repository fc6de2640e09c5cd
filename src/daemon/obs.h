/* obs.h — takod's observability: counter totals that survive deploys and
 * restarts, the Prometheus / OpenMetrics exposition, the dashboard's state,
 * and the opt-in `metrics:` listeners that serve them (obs_http.c).
 *
 * Everything runs on takod's loop thread. Counters are read from the
 * reconciler's per-tick snapshot of the proxy (orch_visit) and from the
 * proxy API only, never from the proxy's internals, so a proxy running in
 * its own process serves this module just as well. */
#ifndef TAKO_DAEMON_OBS_H
#define TAKO_DAEMON_OBS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

struct ev_loop;
struct orch;
struct proxy;
struct store;
struct obs;

/* Loads the persisted totals and re-binds the listeners the store names
 * (a listener that cannot be bound is logged, not fatal). */
struct obs *obs_new(struct ev_loop *loop, struct orch *orch, struct proxy *proxy,
                    struct store *store);
/* Takes a last sample (call after the proxy finished its requests), saves
 * the totals and closes the listeners. */
void obs_free(struct obs *m);

/* Exposition of every deployed service. openmetrics: the OpenMetrics 1.0
 * text format, else Prometheus text 0.0.4. Caller frees. The totals are
 * saved before it returns, so no value ever shown can go back after a
 * restart. */
char *obs_metrics_text(struct obs *m, bool openmetrics, size_t *len);
/* The dashboard's state (services, replicas, rates, timeline) as JSON text,
 * rebuilt at most every OBS_STATE_MIN_MS and shared by all callers. Returns
 * a reference the caller releases with obs_buf_unref. */
struct obs_buf {
    int refs;
    size_t len;
    char data[];
};
/* A buffer holding a copy of data (refs 1). */
struct obs_buf *obs_buf_new(const char *data, size_t len);
struct obs_buf *obs_state(struct obs *m);
void obs_buf_unref(struct obs_buf *b);

/* Bind (or keep, or move) the metrics listener of project/env. addr NULL
 * turns it off. where names the config place for errors ("FILE:LINE:COL:
 * environments.production.metrics"). Returns 0 or -errno with a message in
 * err: -EADDRINUSE, -EACCES, -EADDRNOTAVAIL, -EEXIST (the address serves
 * another environment with another token). Persisted on success. */
int obs_bind(struct obs *m, const char *project, const char *env, const char *addr,
             const char *token, const char *where, char *err, size_t errlen);
/* The current binding of project/env as {address, token, where} or NULL
 * (new reference), to restore it when the operation that changed it fails. */
json_t *obs_binding(struct obs *m, const char *project, const char *env);
/* Actual bound address (port 0 resolved) of project/env's listener into
 * buf; NULL when it has none. */
const char *obs_bound_addr(struct obs *m, const char *project, const char *env, char *buf,
                           size_t len);

/* ---- obs_http.c: the listeners ---- */
/* Where a listener's answers come from: takod's own obs, or (for `tako
 * dashboard`) takod's control API reached through the CLI's endpoint. */
struct obs_http_src {
    /* The exposition (caller frees), or NULL: 503. */
    char *(*metrics)(void *ctx, bool openmetrics, size_t *len);
    /* The dashboard state (a reference), or NULL: 503, "takod unreachable". */
    struct obs_buf *(*state)(void *ctx);
    void *ctx;
};
struct obs_http;
/* Listen on addr ("HOST:PORT"; port 0 picks one). token NULL: none asked.
 * NULL with -errno in *err. src is copied. */
struct obs_http *obs_http_new(const struct obs_http_src *src, struct ev_loop *loop,
                              const char *addr, const char *token, int *err);
void obs_http_free(struct obs_http *h);
const char *obs_http_addr(const struct obs_http *h, char *buf, size_t len);

/* ---- built-in dashboard assets (generated from web/dashboard/) ---- */
struct obs_asset {
    const char *path; /* "/", "/app.js", ... */
    const char *type; /* Content-Type */
    const unsigned char *data;
    size_t len;
};
const struct obs_asset *obs_asset_find(const char *path);

#endif
