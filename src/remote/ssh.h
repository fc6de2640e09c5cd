/* ssh.h — reaching a server through the system OpenSSH client: one
 * multiplexed connection per server per command (ControlMaster in a private
 * 0700 directory), BatchMode, host keys accept-new or strict, and errors that
 * name the server and the cause. */
#ifndef TAKO_REMOTE_SSH_H
#define TAKO_REMOTE_SSH_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct ssh_target {
    const char *name; /* the server's name in tako.yaml */
    const char *host;
    const char *user; /* NULL = root */
    unsigned port;    /* 0 = 22 */
    const char *key;  /* sshKey as written (~/ expanded here); NULL = ssh's own choice */
    bool strict;      /* refuse unknown host keys instead of trusting the first one */
    /* A command the caller runs right after connecting (NULL: none): it
     * runs as the connection's first session, which the connection check
     * needs anyway, and its answer is kept for the caller's ssh_run of the
     * same command, once. A round trip saved per server. */
    const char *first_cmd;
};

/* Why a connection failed (for the exit status and the tests' wording). */
enum ssh_fail {
    SSH_OK = 0,
    SSH_UNREACHABLE,     /* no route, refused, timed out, name unknown */
    SSH_AUTH,            /* the server refused our key */
    SSH_HOSTKEY_CHANGED, /* known_hosts has another key for the host */
    SSH_HOSTKEY_UNKNOWN, /* strict mode and the host is not in known_hosts */
    SSH_OTHER,
};

struct ssh_conn;

/* Connect (starting the master connection). Returns NULL with a message
 * naming the server in err and the cause in *why. */
struct ssh_conn *ssh_open(const struct ssh_target *t, char *err, size_t errlen,
                          enum ssh_fail *why);
/* ssh_open for N servers at once (their handshakes overlap): out[i] is the
 * connection or NULL with the message at errs + i * errlen and the cause in
 * whys[i]. Returns how many failed. */
size_t ssh_open_many(const struct ssh_target *t, size_t n, struct ssh_conn **out, char *errs,
                     size_t errlen, enum ssh_fail *whys);
/* Stop the master connection and remove its directory; reaps sessions. */
void ssh_close(struct ssh_conn *c);
/* Close every connection still open (atexit and on SIGINT/SIGTERM). */
void ssh_close_all(void);

const char *ssh_name(const struct ssh_conn *c);
/* "user@host:port" for messages. */
const char *ssh_where(const struct ssh_conn *c);
/* Commands that need root run under `sudo -n` when the user is not root. */
bool ssh_is_root(const struct ssh_conn *c);
/* The login user on the server (servers.NAME.user). */
const char *ssh_user(const struct ssh_conn *c);

/* Run CMD (a shell command line on the server) over the connection with
 * stdin from in_fd (-1: nothing); collect stdout (NUL-terminated, caller
 * frees) and stderr (ditto; either pointer may be NULL). Returns the remote
 * exit status (255: ssh itself failed), or -errno. */
int ssh_run(struct ssh_conn *c, const char *cmd, int in_fd, char **out, size_t *out_len,
            char **err);
/* Run CMD with our stdout and stderr (stdin: nothing); returns its exit
 * status (255: ssh failed) or -errno. */
int ssh_exec(struct ssh_conn *c, const char *cmd);
/* Start CMD with stdin and stdout on one end of a socketpair, returned in
 * *fd; its stderr goes to ours. The session ends when *fd is closed. Returns
 * the ssh pid or -errno. */
pid_t ssh_spawn(struct ssh_conn *c, const char *cmd, int *fd);

#endif
