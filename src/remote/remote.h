/* remote.h — what the CLI does on a server it reaches through ssh: prepare
 * it (setup.c), ship a service's files to it (ship.c), and the server-side
 * halves run there as `tako remote ...` (receive.c). */
#ifndef TAKO_REMOTE_REMOTE_H
#define TAKO_REMOTE_REMOTE_H

#include <stdbool.h>
#include <stddef.h>

#include "remote/ssh.h"

/* Where tako lives on a server (docs/servers.md). */
#define REMOTE_BIN "/usr/local/bin/tako"
#define REMOTE_HOME "/var/lib/tako"
#define REMOTE_UNIT "/etc/systemd/system/tako.service"
/* takod's environment on a server (KEY=VALUE lines, e.g. DOCKER_HOST): the
 * unit's EnvironmentFile, and exported by every command that may start takod
 * without systemd (REMOTE_ENV_SH), so both ways start it alike. */
#define REMOTE_ENV_FILE "/etc/default/tako"
/* Shell text (no single quote: it goes inside sh -c '...') that exports
 * REMOTE_ENV_FILE's variables, when the file exists, to what follows. */
#define REMOTE_ENV_SH                                                                              \
    "set -a; if [ -r " REMOTE_ENV_FILE " ]; then . " REMOTE_ENV_FILE "; fi; set +a; "
/* Revisions of a service's files kept on a server for rollback. */
#define REMOTE_KEEP_TREES 5

/* "sudo -n " when the connection's user is not root, else "". */
const char *remote_sudo(const struct ssh_conn *c);

/* ---- setup.c ---- */

struct setup_opts {
    unsigned http_port; /* the environment's listener, checked to be free (0: skip) */
    bool quiet;         /* print only problems */
    bool docker;        /* a service of the environment has runtime: docker: check the
                         * server's engine answers takod (with REMOTE_ENV_FILE) */
};

/* Prepare a server: check OS, architecture, rights and the port (every
 * problem in one message), install this very tako binary when the server
 * has none or another build (sha256 verified, atomic rename), install the
 * systemd unit where systemd runs, make the state directory and start takod.
 * *changed says whether anything was done. Returns 0, or -1 with the
 * message (naming the server) in err. */
int setup_server(struct ssh_conn *c, const struct setup_opts *o, bool *changed, char *err,
                 size_t errlen);
/* The command setup_server inspects the server with first (SUDO: "" for
 * root, else remote_sudo()'s prefix): given to ssh_open as its first
 * command, the inspection costs no session of its own. Caller frees. */
char *setup_probe(const char *sudo, unsigned http_port);
/* Server side of the Docker check (`tako remote docker`): ping the engine
 * takod would use ($DOCKER_HOST or the default socket); prints its socket
 * and API version, or the reason on stderr. Returns an exit status. */
int remote_docker_check(void);

/* ---- ship.c ---- */

struct ship_stats {
    size_t files, sent_files;
    unsigned long long bytes, sent_bytes;
};

/* Send directory DIR (honouring .takoignore / .dockerignore) to the server
 * as tree PROJECT/SERVICE/<id>, sending only content the server does not
 * have. The tree's path on the server goes to remote_dir. Returns 0 or -1
 * with err set. */
int ship_tree(struct ssh_conn *c, const char *project, const char *service, const char *dir,
              char *remote_dir, size_t rdlen, struct ship_stats *st, char *err, size_t errlen);

/* ---- receive.c: `tako remote SUBCOMMAND` on the server ---- */
int remote_main(int argc, char **argv);

#endif
