/* servers.c — the CLI's side of remote servers: the endpoint of a project
 * command (this machine, or the environment's server through ssh), `tako
 * setup`, what `tako deploy` does first on a server (lock, prepare, ship),
 * and the internal `tako remote` that runs on the server. */
#include <errno.h>
#include <poll.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/client.h"
#include "cli/common.h"
#include "core/util.h"
#include "remote/remote.h"

/* The environment's server when it is another machine; NULL when local. */
static const struct cfg_server *remote_server(const struct cli_target *t, size_t *n_remote)
{
    const struct cfg_server *hit = NULL;
    *n_remote = 0;
    if (!t->cfg || !t->envp)
        return NULL;
    for (size_t i = 0; i < t->envp->servers_len; i++) {
        const struct cfg_server *s = cfg_find_server(t->cfg, t->envp->servers[i]);
        if (s && !cfg_server_is_local(s)) {
            if (!hit)
                hit = s;
            (*n_remote)++;
        }
    }
    return hit;
}

char *cli_first_cmd(const struct cli_target *t, const struct cfg_server *s)
{
    /* deploy and setup inspect the server first thing; a login user that is
     * not root asks sudo first, so its inspection is not the first command */
    bool root = !s->user || !*s->user || strcmp(s->user, "root") == 0;
    if (!root || !t->envp || (strcmp(t->cmd, "deploy") != 0 && strcmp(t->cmd, "setup") != 0))
        return NULL;
    return setup_probe("", t->envp->http_port);
}

int cli_remote_open(struct cli_target *t)
{
    if (cli_multi(t))
        return cli_multi_open(t);
    size_t n;
    const struct cfg_server *s = remote_server(t, &n);
    if (!s)
        return 0;
    struct ssh_conn *open_c = client_remote();
    if (open_c && strcmp(ssh_name(open_c), s->name) == 0) {
        /* A command run by another one (deploy shows ps): same connection. */
        t->server = s;
        return 0;
    }
    char *first = cli_first_cmd(t, s);
    struct ssh_target st = {.name = s->name,
                            .host = s->host,
                            .user = s->user,
                            .port = s->port,
                            .key = s->ssh_key,
                            .strict = s->strict_host_keys,
                            .first_cmd = first};
    char err[1024];
    enum ssh_fail why;
    struct ssh_conn *c = ssh_open(&st, err, sizeof(err), &why);
    free(first);
    if (!c) {
        fprintf(stderr, "tako %s: %s\n", t->cmd, err);
        return EXIT_UNAVAIL;
    }
    t->remote = c;
    t->server = s;
    client_use_remote(c);
    return 0;
}

void cli_remote_close(struct cli_target *t)
{
    if (t->servers) {
        cli_multi_close(t);
        return;
    }
    if (!t->remote)
        return;
    client_use_remote(NULL);
    ssh_close(t->remote);
    t->remote = NULL;
}

/* ---- the deploy lock ---- */

static void holder_text(const char *cmd, char *buf, size_t len)
{
    const char *user = getenv("USER");
    struct passwd *pw = getpwuid(getuid());
    if (!user || !*user)
        user = pw ? pw->pw_name : "?";
    char host[256] = "?";
    gethostname(host, sizeof(host) - 1);
    snprintf(buf, len, "%s@%s_(tako_%s,_pid_%d)", user, host, cmd, (int)getpid());
    /* One shell word: anything unusual becomes '_'. */
    for (char *p = buf; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              strchr("@._-(),:", *p)))
            *p = '_';
}

int cli_remote_lock(struct cli_target *t, uint64_t wait_ms, int *lock_fd)
{
    *lock_fd = -1;
    if (!t->remote)
        return 0;
    char holder[512];
    holder_text(t->cmd, holder, sizeof(holder));
    char *cmd = xasprintf("%s" REMOTE_BIN " remote lock %s %s %llu '%s'", remote_sudo(t->remote),
                          t->cfg->project.name, t->envp->name, (unsigned long long)wait_ms,
                          holder);
    int fd = -1;
    pid_t pid = ssh_spawn(t->remote, cmd, &fd);
    free(cmd);
    if (pid < 0) {
        fprintf(stderr, "tako %s: cannot run ssh: %s\n", t->cmd, strerror((int)-pid));
        return EXIT_UNAVAIL;
    }
    char line[1024];
    size_t got = 0;
    uint64_t deadline = time_wall_ms() + wait_ms + 30000;
    while (got < sizeof(line) - 1 && !memchr(line, '\n', got)) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        uint64_t now = time_wall_ms();
        if (now >= deadline || poll(&p, 1, (int)(deadline - now)) <= 0)
            break;
        ssize_t k = read(fd, line + got, sizeof(line) - 1 - got);
        if (k <= 0)
            break;
        got += (size_t)k;
    }
    line[got] = '\0';
    line[strcspn(line, "\n")] = '\0';
    if (strcmp(line, "locked") == 0) {
        *lock_fd = fd;
        return 0;
    }
    close(fd);
    if (str_starts_with(line, "held ")) {
        for (char *p = line; *p; p++)
            if (*p == '_')
                *p = ' ';
        fprintf(stderr,
                "tako %s: environment %s on server %s is locked by another deploy: %s\n"
                "Wait for it, or retry with --lock-wait DURATION.\n",
                t->cmd, t->envp->name, t->server->name, line + 5);
        return EXIT_CONFLICT;
    }
    fprintf(stderr, "tako %s: cannot take the deploy lock on server %s (%s)%s%s\n", t->cmd,
            t->server->name, ssh_where(t->remote), *line ? ": " : "", line);
    return EXIT_UNAVAIL;
}

/* ---- deploy's preparation ---- */

/* Whether a service of the environment runs on Docker (setup checks it). */
static bool env_uses_docker(const struct cli_target *t)
{
    for (size_t i = 0; i < t->envp->services_len; i++) {
        const char *rt = t->envp->services[i].runtime;
        if (rt && strcmp(rt, "docker") == 0)
            return true;
    }
    return false;
}

int cli_remote_prepare(struct cli_target *t, bool quiet)
{
    struct setup_opts so = {
        .http_port = t->envp->http_port, .quiet = quiet, .docker = env_uses_docker(t)};
    char err[2048];
    bool changed;
    if (setup_server(t->remote, &so, &changed, err, sizeof(err)) < 0) {
        fprintf(stderr, "tako %s: %s\n", t->cmd, err);
        return EXIT_FAILED;
    }
    return 0;
}

int cli_remote_ship(struct cli_target *t, const struct cfg_service *s, json_t *config,
                    bool quiet)
{
    if (!s->build)
        return 0;
    char rdir[4096], err[4600];
    struct ship_stats st;
    if (ship_tree(t->remote, t->cfg->project.name, s->name, s->build, rdir, sizeof(rdir), &st,
                  err, sizeof(err)) < 0) {
        fprintf(stderr, "tako %s: %s: %s\n", t->cmd, s->name, err);
        return EXIT_FAILED;
    }
    if (!quiet) {
        char a[32], b[32];
        if (st.sent_files)
            printf("%s: sent %zu of %zu files (%s of %s) to server %s\n", s->name, st.sent_files,
                   st.files, fmt_bytes(st.sent_bytes, a, sizeof(a)),
                   fmt_bytes(st.bytes, b, sizeof(b)), t->server->name);
        else
            printf("%s: files unchanged on server %s (%zu files, nothing sent)\n", s->name,
                   t->server->name, st.files);
    }
    /* The replicas run from the shipped tree; workdir keeps its place in it. */
    const char *wd = s->workdir;
    json_object_set_new(config, "build", json_string(rdir));
    size_t bl = strlen(s->build);
    if (wd && strncmp(wd, s->build, bl) == 0 && (wd[bl] == '/' || !wd[bl])) {
        char *nwd = xasprintf("%s%s", rdir, wd + bl);
        json_object_set_new(config, "workdir", json_string(nwd));
        free(nwd);
    } else if (wd) {
        json_object_set_new(config, "workdir", json_string(rdir));
    }
    return 0;
}

/* ---- tako setup ---- */

const char help_setup[] =
    "Usage: tako setup [ENV] [-f FILE]\n"
    "\n"
    "Prepare the environment's server for tako, through ssh: check the operating\n"
    "system, the architecture, the user's rights, free disk and that the HTTP port\n"
    "is free (every problem in one message); install this tako binary at\n" REMOTE_BIN "\n"
    "when the server has none or another build (sha256-verified, atomic rename);\n"
    "create the state directory " REMOTE_HOME " (mode 0700); install and start the\n"
    "systemd unit where systemd runs, else start takod as a detached process,\n"
    "both with the variables of " REMOTE_ENV_FILE " on the server (e.g. DOCKER_HOST).\n"
    "When a service of the environment has runtime: docker, check that Docker\n"
    "answers on the server, and say how to install it when it does not.\n"
    "Running it again changes nothing and says so. `tako deploy` does the same\n"
    "first, so running setup by hand is optional. See docs/servers.md.\n"
    "\n"
    "Options:\n"
    "  -f, --file FILE      the configuration (default ./tako.yaml)\n"
    "  -e, --env ENV        the environment (or give it as an argument)\n"
    "\n"
    "Exit status: 0 ready, 1 the server cannot run tako (the message says why),\n"
    "2 invalid configuration or arguments, 3 the server is unreachable or refused\n"
    "the connection (key refused, host key unknown or changed).\n";

static int setup_one(struct cli_target *t)
{
    struct setup_opts so = {.http_port = t->envp->http_port, .docker = env_uses_docker(t)};
    char err[2048];
    bool changed;
    if (setup_server(t->remote, &so, &changed, err, sizeof(err)) < 0) {
        fprintf(stderr, "tako setup: %s\n", err);
        return EXIT_FAILED;
    }
    if (!changed)
        printf("server %s (%s): nothing changed; tako %s is installed and takod runs\n",
               t->server->name, ssh_where(t->remote), TAKO_VERSION);
    else
        printf("server %s (%s): ready\n", t->server->name, ssh_where(t->remote));
    return EXIT_OK;
}

int cmd_setup(int argc, char **argv)
{
    struct cli_target t = {.cmd = "setup"};
    char *pos[1] = {NULL};
    int rc = cli_parse_args(&t, argc, argv, pos, 1);
    if (rc)
        return rc;
    if (pos[0])
        t.env = pos[0];
    t.partial = true;
    rc = cli_target_load(&t, true, true);
    if (rc)
        return rc;
    if (t.servers) {
        /* every server that can be reached is prepared; the others are named */
        for (size_t i = 0; i < t.n_servers; i++) {
            if (!cli_server_active(&t, i)) {
                fprintf(stderr, "tako setup: %s\n", t.servers[i].error);
                rc = rc ? rc : t.servers[i].rc;
                continue;
            }
            if (t.servers[i].local) {
                printf("server %s runs on this machine: nothing to set up\n",
                       t.servers[i].cfg->name);
                continue;
            }
            cli_use_server(&t, i);
            int r = setup_one(&t);
            rc = rc ? rc : r;
        }
        cli_target_free(&t);
        return rc;
    }
    if (!t.remote) {
        printf("Environment %s runs on this machine: nothing to set up (takod starts on "
               "demand).\n",
               t.envp->name);
        cli_target_free(&t);
        return EXIT_OK;
    }
    rc = setup_one(&t);
    cli_target_free(&t);
    return rc;
}

int cmd_remote(int argc, char **argv)
{
    return remote_main(argc, argv);
}
