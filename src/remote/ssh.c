/* ssh.c — the system OpenSSH client as tako's transport (see ssh.h). */
#include "remote/ssh.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/util.h"

#define SSH_MAX_ARGS 48
#define SSH_MAX_SESSIONS 64

struct ssh_conn {
    char name[128];
    char where[512];
    char host[256];
    char user[64];
    char port[12];
    char key[4096];
    char dir[64];   /* private 0700 directory holding the control socket */
    char ctl[128];  /* dir/cm */
    bool strict;
    bool master;    /* a master connection may be running */
    /* the answer of target.first_cmd, until ssh_run asks for it */
    char *memo_cmd, *memo_out, *memo_err;
    size_t memo_len;
    int memo_rc;
    pid_t sessions[SSH_MAX_SESSIONS];
    size_t n_sessions;
    struct ssh_conn *next;
};

static struct ssh_conn *g_conns;

const char *ssh_name(const struct ssh_conn *c) { return c->name; }
const char *ssh_where(const struct ssh_conn *c) { return c->where; }
bool ssh_is_root(const struct ssh_conn *c) { return strcmp(c->user, "root") == 0; }
const char *ssh_user(const struct ssh_conn *c) { return c->user; }

/* The ssh command line up to and including the destination. The user's own
 * ~/.ssh/config and agent apply (or $TAKO_SSH_CONFIG instead of the
 * former); options given here win over both. */
static int build_argv(const struct ssh_conn *c, const char **argv, char *ctlopt, size_t ctllen,
                      char *hkopt, size_t hklen)
{
    int n = 0;
    argv[n++] = "ssh";
    const char *cfg = getenv("TAKO_SSH_CONFIG");
    if (cfg && *cfg) {
        argv[n++] = "-F";
        argv[n++] = cfg;
    }
    snprintf(ctlopt, ctllen, "ControlPath=%s", c->ctl);
    snprintf(hkopt, hklen, "StrictHostKeyChecking=%s", c->strict ? "yes" : "accept-new");
    static const char *const fixed[] = {
        "BatchMode=yes",        /* never wait for a password or a question */
        "ControlMaster=auto",   /* the first session starts the master */
        "ControlPersist=60",    /* closed by ssh_close; 60 s idle if we die */
        "ServerAliveInterval=15", "ServerAliveCountMax=4", "ConnectTimeout=10",
        "LogLevel=ERROR",
        /* zlib over the channel: the manifests, deploy bodies and the tako
         * binary itself are text or compress well; a redeploy's bytes are
         * mostly ssh's own handshake then */
        "Compression=yes",
    };
    argv[n++] = "-o";
    argv[n++] = ctlopt;
    argv[n++] = "-o";
    argv[n++] = hkopt;
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
        argv[n++] = "-o";
        argv[n++] = fixed[i];
    }
    argv[n++] = "-p";
    argv[n++] = c->port;
    argv[n++] = "-l";
    argv[n++] = c->user;
    if (c->key[0]) {
        argv[n++] = "-i";
        argv[n++] = c->key;
    }
    argv[n++] = "--";
    argv[n++] = c->host;
    return n;
}

static void classify(const char *name, const char *where, const char *host, const char *err,
                     char *msg, size_t len, enum ssh_fail *why)
{
    const char *e = err ? err : "";
    if (strstr(e, "REMOTE HOST IDENTIFICATION HAS CHANGED")) {
        char fp[128] = "?";
        const char *p = strstr(e, "SHA256:");
        if (p)
            sscanf(p, "%127s", fp);
        size_t fl = strlen(fp);
        if (fl > 1 && fp[fl - 1] == '.') /* the end of ssh's sentence */
            fp[fl - 1] = '\0';
        snprintf(msg, len,
                 "server %s (%s): its host key changed; the key it sent now has fingerprint %s. "
                 "Refusing to connect. If the server was reinstalled, remove the old key with "
                 "`ssh-keygen -R %s` and try again",
                 name, where, fp, host);
        *why = SSH_HOSTKEY_CHANGED;
    } else if (strstr(e, "host key is known for") || strstr(e, "Host key verification failed")) {
        snprintf(msg, len,
                 "server %s (%s): its host key is not in known_hosts and host keys are strict "
                 "(hostKeys: strict); add it first, e.g. `ssh-keyscan -p PORT %s >> "
                 "~/.ssh/known_hosts` after checking its fingerprint",
                 name, where, host);
        *why = SSH_HOSTKEY_UNKNOWN;
    } else if (strstr(e, "Permission denied")) {
        snprintf(msg, len,
                 "server %s (%s): the server refused our key; check servers.%s.user and sshKey "
                 "in tako.yaml, or the keys in your ssh agent",
                 name, where, name);
        *why = SSH_AUTH;
    } else if (strstr(e, "Connection refused") || strstr(e, "timed out") ||
               strstr(e, "No route to host") || strstr(e, "Could not resolve") ||
               strstr(e, "Network is unreachable") || strstr(e, "Connection closed") ||
               strstr(e, "Connection reset")) {
        char cause[256] = "";
        const char *p = strrchr(e, ':');
        snprintf(cause, sizeof(cause), "%s", p ? p + 1 : e);
        cause[strcspn(cause, "\r\n")] = '\0';
        while (cause[0] == ' ')
            memmove(cause, cause + 1, strlen(cause));
        snprintf(msg, len, "server %s (%s) is unreachable: %s", name, where, cause);
        *why = SSH_UNREACHABLE;
    } else {
        char first[512];
        snprintf(first, sizeof(first), "%s", *e ? e : "ssh failed without a message");
        first[strcspn(first, "\r\n")] = '\0';
        snprintf(msg, len, "server %s (%s): ssh failed: %s", name, where, first);
        *why = SSH_OTHER;
    }
}

static char *read_memfd(int fd, size_t *len)
{
    off_t end = lseek(fd, 0, SEEK_END);
    if (end < 0)
        end = 0;
    char *buf = xmalloc((size_t)end + 1);
    ssize_t got = pread(fd, buf, (size_t)end, 0);
    if (got < 0)
        got = 0;
    buf[got] = '\0';
    if (len)
        *len = (size_t)got;
    return buf;
}

static void session_add(struct ssh_conn *c, pid_t pid)
{
    /* Reap finished sessions first so the table stays small. */
    size_t k = 0;
    for (size_t i = 0; i < c->n_sessions; i++) {
        int st;
        if (waitpid(c->sessions[i], &st, WNOHANG) == 0)
            c->sessions[k++] = c->sessions[i];
    }
    c->n_sessions = k;
    if (c->n_sessions < SSH_MAX_SESSIONS)
        c->sessions[c->n_sessions++] = pid;
}

/* One ssh session started and not yet waited for (ssh_run's two halves, so
 * several servers' sessions can run at once). */
struct run_job {
    pid_t pid;
    int ofd, efd;
};

static int run_start(struct ssh_conn *c, const char *cmd, int in_fd, struct run_job *j)
{
    j->pid = -1;
    j->ofd = memfd_create("tako-ssh-out", MFD_CLOEXEC);
    j->efd = memfd_create("tako-ssh-err", MFD_CLOEXEC);
    if (j->ofd < 0 || j->efd < 0) {
        int e = errno;
        if (j->ofd >= 0)
            close(j->ofd);
        if (j->efd >= 0)
            close(j->efd);
        return -e;
    }
    const char *argv[SSH_MAX_ARGS];
    char ctlopt[256], hkopt[64];
    int n = build_argv(c, argv, ctlopt, sizeof(ctlopt), hkopt, sizeof(hkopt));
    argv[n++] = cmd;
    argv[n] = NULL;
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(j->ofd);
        close(j->efd);
        return -e;
    }
    if (pid == 0) {
        int in = in_fd >= 0 ? in_fd : open("/dev/null", O_RDONLY);
        dup2(in, 0);
        dup2(j->ofd, 1);
        dup2(j->efd, 2);
        /* Our handler closes the master; ssh must not die first. Ignoring
         * SIGINT is not enough: a session through the master (a mux client)
         * sets its own handler, and a terminal's Ctrl-C (or hangup) goes to
         * the whole foreground process group. Its own group keeps it out. */
        setpgid(0, 0);
        signal(SIGINT, SIG_IGN);
        execvp("ssh", (char *const *)argv);
        dprintf(2, "cannot run ssh: %s\n", strerror(errno));
        _exit(255);
    }
    c->master = true;
    j->pid = pid;
    return 0;
}

static int run_finish(struct run_job *j, char **out, size_t *out_len, char **err)
{
    int st;
    while (waitpid(j->pid, &st, 0) == -1 && errno == EINTR)
        ;
    if (out)
        *out = read_memfd(j->ofd, out_len);
    if (err)
        *err = read_memfd(j->efd, NULL);
    close(j->ofd);
    close(j->efd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 255;
}

static void memo_drop(struct ssh_conn *c)
{
    free(c->memo_cmd);
    free(c->memo_out);
    free(c->memo_err);
    c->memo_cmd = c->memo_out = c->memo_err = NULL;
}

int ssh_run(struct ssh_conn *c, const char *cmd, int in_fd, char **out, size_t *out_len,
            char **err)
{
    if (c->memo_cmd && in_fd < 0 && strcmp(c->memo_cmd, cmd) == 0) {
        /* run already, as the connection's first session */
        int rc = c->memo_rc;
        if (out) {
            *out = c->memo_out;
            c->memo_out = NULL;
        }
        if (out_len)
            *out_len = c->memo_len;
        if (err) {
            *err = c->memo_err;
            c->memo_err = NULL;
        }
        memo_drop(c);
        return rc;
    }
    memo_drop(c); /* another command came first: the answer may be stale */
    struct run_job j;
    int r = run_start(c, cmd, in_fd, &j);
    if (r < 0)
        return r;
    return run_finish(&j, out, out_len, err);
}

int ssh_exec(struct ssh_conn *c, const char *cmd)
{
    const char *argv[SSH_MAX_ARGS];
    char ctlopt[256], hkopt[64];
    int n = build_argv(c, argv, ctlopt, sizeof(ctlopt), hkopt, sizeof(hkopt));
    argv[n++] = cmd;
    argv[n] = NULL;
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0)
        return -errno;
    if (pid == 0) {
        int dn = open("/dev/null", O_RDONLY);
        if (dn >= 0)
            dup2(dn, 0);
        setpgid(0, 0); /* as in ssh_run */
        signal(SIGINT, SIG_IGN);
        execvp("ssh", (char *const *)argv);
        dprintf(2, "cannot run ssh: %s\n", strerror(errno));
        _exit(255);
    }
    int st;
    while (waitpid(pid, &st, 0) == -1 && errno == EINTR)
        ;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 255;
}

pid_t ssh_spawn(struct ssh_conn *c, const char *cmd, int *fd)
{
    int sp[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) == -1)
        return -errno;
    const char *argv[SSH_MAX_ARGS];
    char ctlopt[256], hkopt[64];
    int n = build_argv(c, argv, ctlopt, sizeof(ctlopt), hkopt, sizeof(hkopt));
    argv[n++] = cmd;
    argv[n] = NULL;
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(sp[0]);
        close(sp[1]);
        return -e;
    }
    if (pid == 0) {
        dup2(sp[1], 0);
        dup2(sp[1], 1);
        setpgid(0, 0); /* as in ssh_run */
        signal(SIGINT, SIG_IGN);
        execvp("ssh", (char *const *)argv);
        dprintf(2, "cannot run ssh: %s\n", strerror(errno));
        _exit(255);
    }
    close(sp[1]);
    session_add(c, pid);
    *fd = sp[0];
    return pid;
}

static void on_signal(int signo)
{
    ssh_close_all();
    signal(signo, SIG_DFL);
    raise(signo);
}

static void install_cleanup(void)
{
    static bool done;
    if (done)
        return;
    done = true;
    atexit(ssh_close_all);
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
}

/* The connection's state, before anything ran: NULL with a message when
 * the key cannot be read or the directory cannot be made. */
static struct ssh_conn *conn_new(const struct ssh_target *t, char *err, size_t errlen,
                                 enum ssh_fail *why)
{
    install_cleanup();
    struct ssh_conn *c = xcalloc(1, sizeof(*c));
    snprintf(c->name, sizeof(c->name), "%s", t->name ? t->name : t->host);
    snprintf(c->host, sizeof(c->host), "%s", t->host);
    snprintf(c->user, sizeof(c->user), "%s", t->user && *t->user ? t->user : "root");
    snprintf(c->port, sizeof(c->port), "%u", t->port ? t->port : 22);
    c->strict = t->strict;
    if (t->key && *t->key) {
        const char *home = getenv("HOME");
        if (t->key[0] == '~' && t->key[1] == '/' && home)
            snprintf(c->key, sizeof(c->key), "%s/%s", home, t->key + 2);
        else
            snprintf(c->key, sizeof(c->key), "%s", t->key);
        if (access(c->key, R_OK) != 0) {
            snprintf(err, errlen, "server %s: sshKey %s: %s", c->name, c->key, strerror(errno));
            *why = SSH_AUTH;
            free(c);
            return NULL;
        }
    }
    snprintf(c->where, sizeof(c->where), "%s@%s:%s", c->user, c->host, c->port);
    const char *tmp = getenv("XDG_RUNTIME_DIR");
    if (!tmp || !*tmp || strlen(tmp) > 40 || access(tmp, W_OK) != 0)
        tmp = "/tmp";
    snprintf(c->dir, sizeof(c->dir), "%s/tako-ssh-XXXXXX", tmp);
    if (!mkdtemp(c->dir)) { /* mode 0700: only we can use the master */
        snprintf(err, errlen, "server %s: cannot create a directory for ssh: %s", c->name,
                 strerror(errno));
        *why = SSH_OTHER;
        free(c);
        return NULL;
    }
    snprintf(c->ctl, sizeof(c->ctl), "%s/cm", c->dir);
    c->next = g_conns;
    g_conns = c;
    return c;
}

/* The first session starts the master; its answer says whether we are in. */
#define PROBE "echo tako-ssh-ok"

static struct ssh_conn *probe_finish(struct ssh_conn *c, struct run_job *j, const char *first,
                                     char *err, size_t errlen, enum ssh_fail *why)
{
    char *eout = NULL, *out = NULL;
    size_t len = 0;
    int rc = run_finish(j, &out, &len, &eout);
    /* With a first command, its own status is its caller's to judge: we
     * are in when our line came back. */
    bool in = first ? rc != 255 && str_starts_with(out, "tako-ssh-ok\n")
                    : rc == 0 && strstr(out, "tako-ssh-ok");
    if (in && first) {
        size_t skip = strlen("tako-ssh-ok\n");
        c->memo_cmd = xstrdup(first);
        c->memo_out = xstrndup(out + skip, len - skip);
        c->memo_len = len - skip;
        c->memo_err = eout;
        c->memo_rc = rc;
        free(out);
        *why = SSH_OK;
        return c;
    }
    if (!in) {
        classify(c->name, c->where, c->host, eout, err, errlen, why);
        free(out);
        free(eout);
        ssh_close(c);
        return NULL;
    }
    free(out);
    free(eout);
    *why = SSH_OK;
    return c;
}

struct ssh_conn *ssh_open(const struct ssh_target *t, char *err, size_t errlen,
                          enum ssh_fail *why)
{
    struct ssh_conn *c;
    size_t failed = ssh_open_many(t, 1, &c, err, errlen, why);
    return failed ? NULL : c;
}

size_t ssh_open_many(const struct ssh_target *t, size_t n, struct ssh_conn **out, char *errs,
                     size_t errlen, enum ssh_fail *whys)
{
    struct run_job *jobs = xcalloc(n ? n : 1, sizeof(*jobs));
    size_t failed = 0;
    for (size_t i = 0; i < n; i++) {
        char *err = errs + i * errlen;
        out[i] = conn_new(&t[i], err, errlen, &whys[i]);
        if (!out[i])
            continue;
        char *probe = t[i].first_cmd ? xasprintf("echo tako-ssh-ok; %s", t[i].first_cmd)
                                     : xstrdup(PROBE);
        int r = run_start(out[i], probe, -1, &jobs[i]);
        free(probe);
        if (r < 0) {
            snprintf(err, errlen, "server %s: cannot run ssh: %s", out[i]->name, strerror(-r));
            whys[i] = SSH_OTHER;
            ssh_close(out[i]);
            out[i] = NULL;
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (out[i])
            out[i] = probe_finish(out[i], &jobs[i], t[i].first_cmd, errs + i * errlen, errlen,
                                  &whys[i]);
        failed += !out[i];
    }
    free(jobs);
    return failed;
}

/* Async-signal-safe enough for the signal path: fork, exec, wait. */
static void stop_master(struct ssh_conn *c)
{
    if (!c->master)
        return;
    c->master = false;
    pid_t pid = fork();
    if (pid == 0) {
        int dn = open("/dev/null", O_RDWR);
        if (dn >= 0) {
            dup2(dn, 0);
            dup2(dn, 1);
            dup2(dn, 2);
        }
        const char *cfg = getenv("TAKO_SSH_CONFIG");
        char ctlopt[256];
        snprintf(ctlopt, sizeof(ctlopt), "ControlPath=%s", c->ctl);
        if (cfg && *cfg)
            execlp("ssh", "ssh", "-F", cfg, "-o", ctlopt, "-O", "exit", c->host, (char *)NULL);
        else
            execlp("ssh", "ssh", "-o", ctlopt, "-O", "exit", c->host, (char *)NULL);
        _exit(127);
    }
    if (pid > 0)
        while (waitpid(pid, NULL, 0) == -1 && errno == EINTR)
            ;
}

static void conn_release(struct ssh_conn *c)
{
    stop_master(c);
    for (size_t i = 0; i < c->n_sessions; i++)
        waitpid(c->sessions[i], NULL, 0);
    c->n_sessions = 0;
    unlink(c->ctl);
    rmdir(c->dir);
}

void ssh_close(struct ssh_conn *c)
{
    if (!c)
        return;
    memo_drop(c);
    for (struct ssh_conn **pp = &g_conns; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    conn_release(c);
    free(c);
}

void ssh_close_all(void)
{
    for (struct ssh_conn *c = g_conns; c; c = c->next)
        conn_release(c);
}
