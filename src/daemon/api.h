/* api.h — takod's control API: HTTP/1.1 + JSON over a unix socket.
 * One request per connection. A handler answers at once (api_reply_json)
 * or streams newline-delimited JSON over chunked encoding (api_stream_*),
 * e.g. deploy progress and `logs -f`. */
#ifndef TAKO_DAEMON_API_H
#define TAKO_DAEMON_API_H

#include <jansson.h>
#include <stdbool.h>

#include "core/ev.h"

struct api_server;
struct api_conn;

struct api_req {
    const char *method;
    const char *path;  /* without the query */
    const char *query; /* after '?', or "" */
    json_t *body;      /* parsed JSON body or NULL; owned by the request */
    struct api_conn *conn;
};

typedef void (*api_handler)(struct api_req *req, void *data);
typedef void (*api_close_cb)(struct api_conn *c, void *data);

struct api_route {
    const char *method;
    const char *path; /* exact, or a prefix when it ends with '/' */
    api_handler handler;
};

/* Listen on path (mode 0600). routes is a table ending with {NULL}.
 * Returns NULL with errno-style code in *err. */
struct api_server *api_server_new(struct ev_loop *loop, const char *path,
                                  const struct api_route *routes, void *data, int *err);
void api_server_free(struct api_server *s);

/* Answer and close. Steals the reference to j. */
void api_reply_json(struct api_conn *c, int status, json_t *j);
/* Answer {"error": msg} with status. */
void api_reply_error(struct api_conn *c, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Streaming: begin, any number of lines, end. A stream whose client went
 * away turns api_stream_json into a no-op; on_close tells the owner. */
void api_stream_begin(struct api_conn *c, api_close_cb on_close, void *data);
void api_stream_json(struct api_conn *c, json_t *j); /* steals j */
void api_stream_end(struct api_conn *c);
/* Take a reference so the connection outlives the handler (streams). */
bool api_conn_alive(const struct api_conn *c);
/* Bytes written to the stream and not yet taken by the client: a producer
 * that can wait (a long log tail) keeps this low instead of being dropped
 * at the 16 MiB limit. */
size_t api_conn_pending(const struct api_conn *c);

/* Query helpers: value of key in "a=1&b=2" (URL-decoded) into buf, or NULL. */
const char *api_query(const struct api_req *r, const char *key, char *buf, size_t len);

#endif
