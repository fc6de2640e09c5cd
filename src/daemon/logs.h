/* logs.h — GET /v1/logs: replica logs from their runtime drivers as a
 * stream (tail, then follow). */
#ifndef TAKO_DAEMON_LOGS_H
#define TAKO_DAEMON_LOGS_H

struct api_req;
struct ev_loop;
struct rt;

/* Answer one logs request from rt's drivers (a stream; see docs/api.md);
 * a follow lives on loop until the client goes away. */
void logs_handle(struct api_req *r, struct rt *rt, struct ev_loop *loop);

#endif
