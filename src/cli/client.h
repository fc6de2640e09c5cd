/* client.h — the CLI side of the control API: connect to takod's unix
 * socket (starting takod in the background when it is not running), send a
 * request, read a JSON answer or a stream of JSON lines. */
#ifndef TAKO_CLI_CLIENT_H
#define TAKO_CLI_CLIENT_H

#include <jansson.h>
#include <stdbool.h>

struct ssh_conn;
/* Talk to the takod of a server through C from now on (NULL: this machine). */
void client_use_remote(struct ssh_conn *c);
struct ssh_conn *client_remote(void);

/* Connect, starting takod if needed. Returns an fd or -errno (message
 * printed). autostart=false only connects. */
int client_connect(bool autostart);

/* One request; *resp gets the parsed JSON answer (new reference) and the
 * return value is the HTTP status, or -errno when takod cannot be reached. */
int client_call(const char *method, const char *path, json_t *body, json_t **resp);

/* GET path expecting 200: returns 0 with *resp, or the exit status after
 * printing the error (takod unreachable, or its {"error"} answer). */
int client_get(const char *cmd, const char *path, json_t **resp);

/* A streaming request: line_cb is called for every JSON line; it may keep
 * the reference. Returns the HTTP status (the stream's own result is for the
 * caller to track) or -errno. */
typedef void (*client_line_cb)(json_t *line, void *data);
int client_stream(const char *method, const char *path, json_t *body, client_line_cb cb,
                  void *data);

/* Print the standard "cannot reach takod" error; returns EXIT_UNAVAIL. */
int client_unavailable(int err);
/* For an error answer {"error": ...}: print "tako CMD: error" to stderr and
 * map the status to an exit code (409 → 4, 4xx → 2, else 1). */
int client_report_error(const char *cmd, int status, json_t *resp);

/* URL-encode s into buf (for query strings). */
const char *client_urlenc(const char *s, char *buf, size_t len);

#endif
