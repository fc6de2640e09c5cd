/* common.h — what the project commands share: -f/-e/--service/--output
 * options, loading tako.yaml, revisions, and printing operation progress. */
#ifndef TAKO_CLI_COMMON_H
#define TAKO_CLI_COMMON_H

#include <getopt.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "config/config.h"

struct cli_target {
    const char *cmd;
    const char *file;    /* -f; NULL = ./tako.yaml */
    const char *env;     /* -e or positional */
    const char *service; /* --service */
    const char *project; /* --project: when there is no tako.yaml */
    bool json;           /* --output json */
    struct cfg_file *cfg;
    const struct cfg_env *envp;
    char project_buf[128];
    struct ssh_conn *remote;          /* the environment's server; NULL = this machine */
    const struct cfg_server *server;  /* its entry in tako.yaml */
    /* An environment with several servers (fanout.c): one entry per server of
     * its servers:, in order; t->remote/t->server then name the one the
     * client talks to now (cli_use_server). */
    struct cli_server *servers;
    size_t n_servers;
    bool partial;         /* set by read-only commands: go on without unreachable servers */
    const char **skip;    /* deploy --skip NAME...: not connected, not changed */
    size_t n_skip;
};

struct cli_server {
    const struct cfg_server *cfg;
    struct ssh_conn *conn; /* NULL: this machine (local), or not connected */
    bool local, skipped, owned;
    int rc;               /* 0: reachable; else the exit status of the failed connection */
    char error[1024];     /* why it cannot be reached */
};

/* Options every project command accepts; getopt codes 'f' 'e' 's' 'o' 'p'. */
#define CLI_COMMON_OPTS                                                                       \
    {"file", required_argument, NULL, 'f'}, {"env", required_argument, NULL, 'e'},            \
        {"service", required_argument, NULL, 's'}, {"output", required_argument, NULL, 'o'},  \
        {"project", required_argument, NULL, 'p'}
#define CLI_COMMON_SHORT "f:e:s:o:p:"
#define CLI_COMMON_HELP                                                                       \
    "  -f, --file FILE      the configuration (default ./tako.yaml)\n"                         \
    "  -e, --env ENV        the environment (or give it as an argument); a unique prefix\n"    \
    "                       or a server name works too (prod → production)\n"                  \
    "  -s, --service NAME   only this service\n"                                               \
    "  -p, --project NAME   the project, when there is no tako.yaml here\n"                    \
    "  -o, --output FORMAT  text (default) or json\n"

/* Handle a common option; returns 1 when handled, 0 when not ours, or
 * EXIT_USAGE (negated) on a bad value. */
int cli_common_opt(struct cli_target *t, int opt, const char *arg);

/* Parse only the common options; positional arguments go to pos (at most
 * max_pos). Returns 0 or an exit status. */
int cli_parse_args(struct cli_target *t, int argc, char **argv, char **pos, int max_pos);
/* Print a JSON answer, indented, for --output json. */
void cli_print_json(json_t *j);

/* Load tako.yaml and select the environment. need_file: fail when there is
 * none; otherwise a missing file leaves t->cfg NULL (project from
 * --project, or all projects). Returns 0 or an exit status. */
int cli_target_load(struct cli_target *t, bool need_file, bool need_env);
void cli_target_free(struct cli_target *t);
/* The project name (from the file or --project), or NULL. */
const char *cli_target_project(const struct cli_target *t);

/* Revision of a service: sha256 of its canonical configuration and its
 * code (git commit + uncommitted changes, or a content hash of the build
 * directory), first 12 hex digits. */
void cli_revision(const struct cfg_service *s, json_t *config_json, char out[13]);

/* servers.c: open the ssh connection when the environment's server is
 * another machine and point the client at it (cli_target_load does it;
 * cli_target_free closes it). Returns 0 or an exit status (message printed). */
int cli_remote_open(struct cli_target *t);
void cli_remote_close(struct cli_target *t);
/* Take the environment's deploy lock on the server, waiting up to wait_ms;
 * *lock_fd holds it until closed. 0, or an exit status (holder printed). */
int cli_remote_lock(struct cli_target *t, uint64_t wait_ms, int *lock_fd);
/* Prepare the server (setup) and ship a service's files; ship rewrites
 * build/workdir in CONFIG to the tree on the server. */
int cli_remote_prepare(struct cli_target *t, bool quiet);
int cli_remote_ship(struct cli_target *t, const struct cfg_service *s, json_t *config,
                    bool quiet);

/* What deploy and setup run first on server S (the setup inspection), for
 * ssh_target.first_cmd; NULL for other commands. Caller frees. */
char *cli_first_cmd(const struct cli_target *t, const struct cfg_server *s);

/* fanout.c: the environment's servers when it has more than one. */
bool cli_multi(const struct cli_target *t);
/* Open every server's connection (skipping --skip ones). Unreachable servers
 * are reported; unless t->partial, any of them makes it fail with exit 3
 * (nothing changed anywhere). Returns 0 or an exit status. */
int cli_multi_open(struct cli_target *t);
void cli_multi_close(struct cli_target *t);
/* Point the client (and t->remote/t->server) at server I. */
void cli_use_server(struct cli_target *t, size_t i);
/* Whether server I takes part in this command (reachable, not skipped). */
bool cli_server_active(const struct cli_target *t, size_t i);
/* "server a (root@10.0.0.1:22)" for headers and messages. */
const char *cli_server_label(const struct cli_target *t, size_t i, char *buf, size_t len);
/* Run the same operation (POST PATH with BODY) on every server in order,
 * stopping at the first that fails; the message names it and those that
 * already changed. Returns the exit status. */
int cli_multi_operation(struct cli_target *t, const char *path, json_t *body);
/* Run FN(t, i, fd, arg) for every active remote server at once, each in a
 * child process of its own (the client's state is per process; each
 * server has its own ssh master). rcs[i] gets FN's result (0-255); what FN
 * writes to FD comes back in out[i] (NUL-terminated, caller frees; out may
 * be NULL). Servers not run keep rcs[i] and out[i] as they were. A child's
 * stdout is line-buffered, so lines of two servers never mix. */
typedef int (*cli_server_fn)(struct cli_target *t, size_t i, int fd, void *arg);
void cli_parallel(struct cli_target *t, cli_server_fn fn, void *arg, int *rcs, char **out);
/* GET PATH from every active server at once: sts[i] is the HTTP status (or
 * -errno; 0 for servers not asked) and resps[i] the answer (NULL when none;
 * caller frees). */
void cli_parallel_get(struct cli_target *t, const char *path, int *sts, json_t **resps);
/* The placement body fields of service S at REPLICAS for server I: sets
 * "slot_first", "slot_stride" and "peer_replicas" in OBJ; returns the
 * server's own count. */
unsigned cli_place_fields(const struct cli_target *t, const struct cfg_service *s,
                          unsigned replicas, size_t i, json_t *obj);
/* deploy's "peers" object for server I. */
json_t *cli_peers_json(const struct cli_target *t, size_t i);

/* With several servers: the server whose operation is printed (its name
 * is added to --output json lines); NULL: none. */
void cli_op_server(const char *name);

/* Stream an operation and print its progress; returns the exit status. */
int cli_run_operation(const char *cmd, const char *path, json_t *body, bool json);
/* The same; an answer 409 (another operation of the project is running) is
 * retried every 0.5 s for up to wait_ms before it counts. */
int cli_run_operation_wait(const char *cmd, const char *path, json_t *body, bool json,
                           uint64_t wait_ms);

/* Terminal niceties: colour only on a terminal and without NO_COLOR. */
bool cli_color(FILE *f);
/* Build a "?project=..&env=..&service=.." query into buf. */
const char *cli_query(const struct cli_target *t, char *buf, size_t len);

#endif
