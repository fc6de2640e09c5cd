/* fanout.c — an environment with several servers: one ssh connection per
 * server per command, the client pointed at each in turn, and the
 * placement fields every server's takod gets (docs/servers.md "Several
 * servers"). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/client.h"
#include "cli/common.h"
#include "core/util.h"
#include "remote/ssh.h"

/* The target that opened the connections first: a command run by another
 * (deploy's closing ps) reuses them instead of connecting again. */
static struct cli_target *g_outer;

bool cli_multi(const struct cli_target *t)
{
    return t->envp && t->envp->servers_len > 1;
}

static bool skipped(const struct cli_target *t, const char *name)
{
    for (size_t i = 0; i < t->n_skip; i++)
        if (strcmp(t->skip[i], name) == 0)
            return true;
    return false;
}

const char *cli_server_label(const struct cli_target *t, size_t i, char *buf, size_t len)
{
    const struct cli_server *s = &t->servers[i];
    if (s->conn)
        snprintf(buf, len, "server %s (%s)", s->cfg->name, ssh_where(s->conn));
    else if (s->local)
        snprintf(buf, len, "server %s (this machine)", s->cfg->name);
    else
        snprintf(buf, len, "server %s (%s@%s:%u)", s->cfg->name, s->cfg->user, s->cfg->host,
                 s->cfg->port);
    return buf;
}

int cli_multi_open(struct cli_target *t)
{
    const struct cfg_env *e = t->envp;
    for (size_t k = 0; k < t->n_skip; k++) {
        bool found = false;
        for (size_t i = 0; i < e->servers_len && !found; i++)
            found = strcmp(e->servers[i], t->skip[k]) == 0;
        if (!found) {
            fprintf(stderr, "tako %s: --skip %s: environment %s has no server %s; its servers:",
                    t->cmd, t->skip[k], e->name, t->skip[k]);
            for (size_t i = 0; i < e->servers_len; i++)
                fprintf(stderr, " %s", e->servers[i]);
            fprintf(stderr, "\n");
            return EXIT_USAGE;
        }
    }
    t->servers = xcalloc(e->servers_len, sizeof(*t->servers));
    t->n_servers = e->servers_len;
    struct cli_target *outer = g_outer && g_outer->cfg && g_outer->envp &&
                                       strcmp(g_outer->envp->name, e->name) == 0
                                   ? g_outer
                                   : NULL;
    size_t failed = 0, nopen = 0;
    struct ssh_target *sts = xcalloc(e->servers_len, sizeof(*sts));
    size_t *which = xcalloc(e->servers_len, sizeof(*which));
    for (size_t i = 0; i < e->servers_len; i++) {
        struct cli_server *s = &t->servers[i];
        s->cfg = cfg_find_server(t->cfg, e->servers[i]);
        if (skipped(t, s->cfg->name)) {
            s->skipped = true;
            continue;
        }
        if (cfg_server_is_local(s->cfg)) {
            for (size_t j = 0; j < i; j++)
                if (t->servers[j].local) {
                    /* one takod here: two shares of the replicas would meet in it */
                    fprintf(stderr,
                            "tako %s: servers %s and %s of environment %s are both this "
                            "machine; list it once\n",
                            t->cmd, t->servers[j].cfg->name, s->cfg->name, e->name);
                    for (size_t k = 0; k < nopen; k++)
                        free((char *)sts[k].first_cmd);
                    free(sts);
                    free(which);
                    return EXIT_USAGE;
                }
            s->local = true;
            continue;
        }
        if (outer && i < outer->n_servers && outer->servers[i].conn) {
            s->conn = outer->servers[i].conn;
            continue;
        }
        sts[nopen] = (struct ssh_target){.name = s->cfg->name,
                                         .host = s->cfg->host,
                                         .user = s->cfg->user,
                                         .port = s->cfg->port,
                                         .key = s->cfg->ssh_key,
                                         .strict = s->cfg->strict_host_keys,
                                         .first_cmd = cli_first_cmd(t, s->cfg)};
        which[nopen++] = i;
    }
    /* Every server's handshake at once: opening costs one round trip, not N. */
    if (nopen) {
        struct ssh_conn **conns = xcalloc(nopen, sizeof(*conns));
        size_t elen = sizeof(t->servers[0].error);
        char *errs = xcalloc(nopen, elen);
        enum ssh_fail *whys = xcalloc(nopen, sizeof(*whys));
        ssh_open_many(sts, nopen, conns, errs, elen, whys);
        for (size_t k = 0; k < nopen; k++) {
            struct cli_server *s = &t->servers[which[k]];
            if (!(s->conn = conns[k])) {
                memcpy(s->error, errs + k * elen, elen);
                s->rc = EXIT_UNAVAIL;
                failed++;
                continue;
            }
            s->owned = true;
        }
        free(conns);
        free(errs);
        free(whys);
    }
    for (size_t k = 0; k < nopen; k++)
        free((char *)sts[k].first_cmd);
    free(sts);
    free(which);
    if (!g_outer)
        g_outer = t;
    if (failed && !t->partial) {
        for (size_t i = 0; i < t->n_servers; i++)
            if (t->servers[i].rc)
                fprintf(stderr, "tako %s: %s\n", t->cmd, t->servers[i].error);
        fprintf(stderr,
                "tako %s: %zu of %zu servers of environment %s cannot be reached; nothing was "
                "changed on any server.\n",
                t->cmd, failed, t->n_servers, e->name);
        if (strcmp(t->cmd, "deploy") == 0) {
            fprintf(stderr, "To deploy to the others only, retry with");
            for (size_t i = 0; i < t->n_servers; i++)
                if (t->servers[i].rc)
                    fprintf(stderr, " --skip %s", t->servers[i].cfg->name);
            fprintf(stderr, "\n");
        }
        return EXIT_UNAVAIL;
    }
    for (size_t i = 0; i < t->n_servers; i++)
        if (cli_server_active(t, i)) {
            cli_use_server(t, i);
            return 0;
        }
    fprintf(stderr, "tako %s: no server of environment %s is left to work on\n", t->cmd,
            e->name);
    return failed ? EXIT_UNAVAIL : EXIT_USAGE;
}

void cli_multi_close(struct cli_target *t)
{
    if (!t->servers)
        return;
    client_use_remote(NULL);
    cli_op_server(NULL);
    for (size_t i = 0; i < t->n_servers; i++)
        if (t->servers[i].owned)
            ssh_close(t->servers[i].conn);
    free(t->servers);
    t->servers = NULL;
    t->n_servers = 0;
    t->remote = NULL;
    t->server = NULL;
    if (g_outer == t)
        g_outer = NULL;
}

bool cli_server_active(const struct cli_target *t, size_t i)
{
    const struct cli_server *s = &t->servers[i];
    return !s->skipped && !s->rc && (s->conn || s->local);
}

void cli_use_server(struct cli_target *t, size_t i)
{
    t->remote = t->servers[i].conn;
    t->server = t->servers[i].cfg;
    client_use_remote(t->servers[i].conn);
    cli_op_server(t->servers[i].cfg->name);
}

/* A child's answer, as it arrives. */
struct buf {
    char *data;
    size_t len, cap;
};

static void buf_append(struct buf *b, const char *p, size_t n)
{
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2;
        b->data = xrealloc(b->data, b->cap);
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

void cli_parallel(struct cli_target *t, cli_server_fn fn, void *arg, int *rcs, char **out)
{
    size_t n = t->n_servers;
    pid_t *pids = xcalloc(n, sizeof(*pids));
    int *fds = xcalloc(n, sizeof(*fds));
    struct buf *bufs = xcalloc(n, sizeof(*bufs));
    fflush(NULL); /* nothing buffered is written twice */
    for (size_t i = 0; i < n; i++) {
        pids[i] = 0;
        fds[i] = -1;
        if (!cli_server_active(t, i) || t->servers[i].local)
            continue;
        int p[2];
        if (pipe2(p, O_CLOEXEC) == -1) {
            fprintf(stderr, "tako %s: server %s: %s\n", t->cmd, t->servers[i].cfg->name,
                    strerror(errno));
            rcs[i] = EXIT_FAILED;
            continue;
        }
        pid_t pid = fork();
        if (pid == 0) {
            close(p[0]);
            /* The parent's handlers close every ssh master: not the child's
             * job. An interrupt ends it; the parent cleans up. */
            signal(SIGINT, SIG_DFL);
            signal(SIGTERM, SIG_DFL);
            signal(SIGHUP, SIG_DFL);
            setvbuf(stdout, NULL, _IOLBF, 0);
            cli_use_server(t, i);
            int rc = fn(t, i, p[1], arg);
            fflush(NULL);
            _exit(rc & 0xff);
        }
        close(p[1]);
        if (pid < 0) {
            fprintf(stderr, "tako %s: server %s: %s\n", t->cmd, t->servers[i].cfg->name,
                    strerror(errno));
            close(p[0]);
            rcs[i] = EXIT_FAILED;
            continue;
        }
        pids[i] = pid;
        fds[i] = p[0];
    }
    /* Read every child's answer as it comes, then reap them. */
    for (;;) {
        struct pollfd *pf = xcalloc(n ? n : 1, sizeof(*pf));
        size_t np = 0;
        for (size_t i = 0; i < n; i++)
            if (fds[i] >= 0)
                pf[np++] = (struct pollfd){.fd = fds[i], .events = POLLIN};
        if (!np) {
            free(pf);
            break;
        }
        if (poll(pf, np, -1) < 0 && errno != EINTR) {
            free(pf);
            break;
        }
        for (size_t k = 0; k < np; k++) {
            if (!pf[k].revents)
                continue;
            size_t i = 0;
            while (fds[i] != pf[k].fd)
                i++;
            char chunk[4096];
            ssize_t r = read(fds[i], chunk, sizeof(chunk));
            if (r > 0) {
                buf_append(&bufs[i], chunk, (size_t)r);
            } else if (r == 0 || errno != EINTR) {
                close(fds[i]);
                fds[i] = -1;
            }
        }
        free(pf);
    }
    for (size_t i = 0; i < n; i++) {
        if (fds[i] >= 0)
            close(fds[i]);
        if (pids[i] <= 0)
            continue;
        int st;
        while (waitpid(pids[i], &st, 0) == -1 && errno == EINTR)
            ;
        if (WIFEXITED(st)) {
            rcs[i] = WEXITSTATUS(st);
        } else {
            fprintf(stderr, "tako %s: server %s: the worker for it ended by signal %d\n",
                    t->cmd, t->servers[i].cfg->name, WIFSIGNALED(st) ? WTERMSIG(st) : 0);
            rcs[i] = EXIT_FAILED;
        }
        if (out) {
            buf_append(&bufs[i], "", 1);
            out[i] = bufs[i].data;
            bufs[i].data = NULL;
        }
        free(bufs[i].data);
    }
    free(pids);
    free(fds);
    free(bufs);
}

static int get_one(struct cli_target *t, size_t i, int fd, void *arg)
{
    (void)t;
    (void)i;
    json_t *resp = NULL;
    int st = client_call("GET", arg, NULL, &resp);
    json_t *a = json_pack("{s:i, s:o?}", "status", st, "body", resp);
    char *text = json_dumps(a, JSON_COMPACT);
    int rc = text && write_all(fd, text, strlen(text)) == 0 ? 0 : EXIT_FAILED;
    free(text);
    json_decref(a);
    return rc;
}

void cli_parallel_get(struct cli_target *t, const char *path, int *sts, json_t **resps)
{
    size_t n = t->n_servers;
    int *rcs = xcalloc(n ? n : 1, sizeof(int));
    char **out = xcalloc(n ? n : 1, sizeof(char *));
    for (size_t i = 0; i < n; i++) {
        sts[i] = 0;
        resps[i] = NULL;
        if (!cli_server_active(t, i))
            continue;
        if (t->servers[i].local) { /* this machine: no child needed */
            cli_use_server(t, i);
            sts[i] = client_call("GET", path, NULL, &resps[i]);
        }
    }
    cli_parallel(t, get_one, (void *)path, rcs, out);
    for (size_t i = 0; i < n; i++) {
        if (!out[i])
            continue;
        json_t *a = rcs[i] ? NULL : json_loads(out[i], 0, NULL);
        if (a) {
            sts[i] = (int)json_integer_value(json_object_get(a, "status"));
            resps[i] = json_incref(json_object_get(a, "body"));
        } else {
            sts[i] = -EIO;
        }
        json_decref(a);
        free(out[i]);
    }
    free(out);
    free(rcs);
}

int cli_multi_operation(struct cli_target *t, const char *path, json_t *body)
{
    char label[512];
    for (size_t i = 0; i < t->n_servers; i++) {
        if (!cli_server_active(t, i))
            continue;
        cli_use_server(t, i);
        if (!t->json)
            printf("%s:\n", cli_server_label(t, i, label, sizeof(label)));
        fflush(stdout);
        int rc = cli_run_operation(t->cmd, path, body, t->json);
        if (rc) {
            fprintf(stderr, "tako %s: failed on server %s", t->cmd, t->servers[i].cfg->name);
            bool any = false;
            for (size_t j = 0; j < i; j++)
                if (cli_server_active(t, j)) {
                    fprintf(stderr, "%s%s", any ? ", " : "; done already on ", t->servers[j].cfg->name);
                    any = true;
                }
            any = false;
            for (size_t j = i + 1; j < t->n_servers; j++)
                if (cli_server_active(t, j)) {
                    fprintf(stderr, "%s%s", any ? ", " : "; not run on ", t->servers[j].cfg->name);
                    any = true;
                }
            fprintf(stderr, "\n");
            return rc;
        }
    }
    return EXIT_OK;
}

unsigned cli_place_fields(const struct cli_target *t, const struct cfg_service *s,
                          unsigned replicas, size_t i, json_t *obj)
{
    const struct cfg_env *e = t->envp;
    struct cfg_place *pl = xcalloc(e->servers_len, sizeof(*pl));
    cfg_place(t->cfg, e, s, replicas, pl);
    json_t *peers = json_object();
    for (size_t j = 0; j < e->servers_len; j++)
        if (j != i && pl[j].replicas > 0)
            json_object_set_new(peers, e->servers[j], json_integer(pl[j].replicas));
    /* A server placement leaves out still has the service (0 replicas): its
     * balancer sends the service's traffic to the peers. */
    if (pl[i].eligible) {
        json_object_set_new(obj, "slot_first", json_integer(pl[i].slot_first));
        json_object_set_new(obj, "slot_stride", json_integer(pl[i].slot_stride));
    }
    json_object_set_new(obj, "peer_replicas", peers);
    unsigned mine = pl[i].replicas;
    free(pl);
    return mine;
}

json_t *cli_peers_json(const struct cli_target *t, size_t i)
{
    const struct cfg_env *e = t->envp;
    char buf[600];
    const struct cfg_server *me = t->servers[i].cfg;
    snprintf(buf, sizeof(buf), "%s:%u", me->address ? me->address : me->host, e->peer_port);
    json_t *list = json_array();
    for (size_t j = 0; j < t->n_servers; j++) {
        if (j == i)
            continue;
        const struct cfg_server *o = t->servers[j].cfg;
        char a[600];
        snprintf(a, sizeof(a), "%s:%u", o->address ? o->address : o->host, e->peer_port);
        json_array_append_new(list, json_pack("{s:s, s:s}", "name", o->name, "address", a));
    }
    return json_pack("{s:s, s:o}", "listen", buf, "servers", list);
}
