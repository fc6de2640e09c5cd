/* certs.h — takod's certificates: what the deployed services want (own
 * files or ACME), kept in the proxy's store; the ACME manager's events
 * recorded; the state shown by `tako certs` and `tako ps`.
 *
 * Everything here runs on takod's loop thread except the ACME manager,
 * which has its own (src/acme). What reaches the proxy is data through
 * proxy.h: PEM text, challenge tokens. */
#ifndef TAKO_DAEMON_CERTS_H
#define TAKO_DAEMON_CERTS_H

#include <jansson.h>

struct ev_loop;
struct orch;
struct proxy;
struct store;
struct takod_certs;

/* NULL with a message in err when the state directory cannot be made. */
struct takod_certs *certs_new(struct ev_loop *loop, struct orch *orch, struct proxy *proxy,
                              struct store *store, const char *home, char *err, size_t errlen);
void certs_free(struct takod_certs *c);
/* [{domain, project, service, source, state, not_after, issuer, error,
 * next_attempt, file}] (new reference). */
json_t *certs_status(struct takod_certs *c);
/* Add "certificates" to each service of a `ps` answer. */
void certs_annotate_ps(struct takod_certs *c, json_t *services);

#endif
