/* deploy.c — `tako deploy`: validate, compute revisions, hand the desired
 * state to takod and follow the rolling update. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime/docker_api.h"
#include "cli/cli.h"
#include "cli/client.h"
#include "cli/common.h"
#include "core/util.h"
#include "remote/ssh.h"

const char help_deploy[] =
    "Usage: tako deploy [ENV] [--service NAME] [--force] [--skip SERVER]... [-f FILE]\n"
    "                   [--output json]\n"
    "\n"
    "Bring every service of the environment to its configured number of healthy\n"
    "replicas behind the load balancer, without a failed request.\n"
    "\n"
    "Each service gets a revision: a hash of its effective configuration and of its\n"
    "code (the git commit plus uncommitted changes of its build directory, or a\n"
    "content hash of that directory). A changed revision is rolled out one replica\n"
    "at a time (deploy.strategy rolling, maxSurge 1, maxUnavailable 0 by default):\n"
    "start a new replica, wait until it passes its health check, let it take\n"
    "traffic, drain an old one, stop it, repeat. A new revision that never becomes\n"
    "healthy is rolled back automatically and deploy exits 1, showing the failing\n"
    "replica's last log lines. When nothing changed, deploy says so and does nothing.\n"
    "\n"
    "Services that are no longer in tako.yaml are drained and removed.\n"
    "\n"
    "When the environment's server is another machine (servers: with a host that is\n"
    "not this one), deploy works there through ssh: it takes the environment's\n"
    "deploy lock, prepares the server like `tako setup` (installing tako on first\n"
    "use), sends each service's build directory (only file contents the server does\n"
    "not have yet; .takoignore or .dockerignore honoured), then rolls out on the\n"
    "server's takod. See docs/servers.md.\n"
    "\n"
    "With several servers (servers: [a, b, c]), each service's replicas are spread\n"
    "over them (placement: narrows the choice) with names unique across the\n"
    "environment; deploy prepares, locks and sends the app to every server first,\n"
    "and rolls out nothing anywhere when one of them fails or cannot be reached;\n"
    "then it rolls out server by server.\n"
    "\n"
    "Options:\n" CLI_COMMON_HELP
    "      --force          roll every replica even when nothing changed\n"
    "      --lock-wait DURATION\n"
    "                       wait up to DURATION (e.g. 30s, 5m) for another deploy of\n"
    "                       the environment to finish, and for an operation of the\n"
    "                       project that takod still runs (one whose client was\n"
    "                       interrupted, too) (default: 0, fail at once)\n"
    "      --skip SERVER    leave this server of the environment out (repeatable):\n"
    "                       deploy to the others when it cannot be reached\n"
    "\n"
    "Exit status: 0 deployed (or nothing to do), 1 failed (rolled back, or the server\n"
    "cannot run tako), 2 invalid configuration or arguments, 3 takod or the server\n"
    "unreachable (or ssh refused: key, host key), 4 another operation of the project\n"
    "is running or another deploy holds the environment's lock.\n";

static json_t *metrics_json(const struct cli_target *t)
{
    const struct cfg_env *env = t->envp;
    if (!env->metrics_addr)
        return json_null();
    /* takod binds it; its error names this place in tako.yaml */
    char where[4400];
    snprintf(where, sizeof(where), "%s:%u:%u: environments.%s.metrics", t->cfg->path,
             env->metrics_line, env->metrics_col, env->name);
    return json_pack("{s:s, s:s?, s:s}", "address", env->metrics_addr, "token",
                     env->metrics_token, "where", where);
}

/* Name the servers whose step failed, and say that nothing was rolled out. */
static int multi_refuse(struct cli_target *t, const char *step, const int *rcs)
{
    int rc = 0;
    fprintf(stderr, "tako deploy: %s failed on server", step);
    size_t nf = 0;
    for (size_t i = 0; i < t->n_servers; i++)
        if (rcs[i]) {
            fprintf(stderr, "%s %s", nf++ ? "," : "", t->servers[i].cfg->name);
            if (!rc)
                rc = rcs[i];
        }
    fprintf(stderr, "; nothing was rolled out on any server of environment %s.\n",
            t->envp->name);
    if (rc != EXIT_CONFLICT) {
        fprintf(stderr, "Fix it and deploy again, or deploy to the others only with");
        for (size_t i = 0; i < t->n_servers; i++)
            if (rcs[i])
                fprintf(stderr, " --skip %s", t->servers[i].cfg->name);
        fprintf(stderr, "\n");
    }
    return rc;
}

/* An environment with several servers: prepare, lock and ship on every
 * server first (any failure: nothing is rolled out anywhere), then roll
 * out server by server, each with its share of the replicas. */
static int deploy_multi(struct cli_target *t, bool force, uint64_t lock_wait)
{
    const struct cfg_env *env = t->envp;
    size_t n = t->n_servers;
    int *rcs = xcalloc(n, sizeof(int));
    int *locks = xcalloc(n, sizeof(int));
    json_t **cfgs = xcalloc(n * (env->services_len ? env->services_len : 1), sizeof(json_t *));
    char (*revs)[13] = xcalloc(env->services_len ? env->services_len : 1, sizeof(*revs));
    int rc = 0;
    for (size_t i = 0; i < n; i++)
        locks[i] = -1;
    for (size_t k = 0; k < env->services_len; k++) {
        const struct cfg_service *s = &env->services[k];
        if (!s->argv && !(s->runtime && strcmp(s->runtime, "docker") == 0)) {
            fprintf(stderr,
                    "tako deploy: service %s has no command; the process runtime needs "
                    "'command' (or set runtime: docker to run its image)\n",
                    s->name);
            rc = EXIT_USAGE;
            goto out;
        }
    }
    /* 1. Every server prepared (idempotent) ... */
    bool bad = false;
    for (size_t i = 0; i < n; i++) {
        if (!cli_server_active(t, i) || t->servers[i].local)
            continue;
        cli_use_server(t, i);
        rcs[i] = cli_remote_prepare(t, t->json);
        bad |= rcs[i] != 0;
    }
    if (bad) {
        rc = multi_refuse(t, "preparing the server", rcs);
        goto out;
    }
    /* 2. ... and locked ... */
    for (size_t i = 0; i < n; i++) {
        if (!cli_server_active(t, i) || t->servers[i].local)
            continue;
        cli_use_server(t, i);
        rcs[i] = cli_remote_lock(t, lock_wait, &locks[i]);
        bad |= rcs[i] != 0;
    }
    if (bad) {
        rc = multi_refuse(t, "taking the deploy lock", rcs);
        goto out;
    }
    /* 3. ... with every service's files: nothing runs anywhere until all arrived. */
    for (size_t k = 0; k < env->services_len; k++) {
        const struct cfg_service *s = &env->services[k];
        json_t *cj = cfg_service_to_json(s);
        cli_revision(s, cj, revs[k]);
        for (size_t i = 0; i < n; i++) {
            json_t *c = json_deep_copy(cj);
            cfgs[i * env->services_len + k] = c;
            if (!cli_server_active(t, i) || t->servers[i].local || rcs[i])
                continue;
            if (t->service && strcmp(t->service, s->name) != 0)
                continue;
            cli_use_server(t, i);
            rcs[i] = cli_remote_ship(t, s, c, t->json);
            bad |= rcs[i] != 0;
        }
        json_decref(cj);
    }
    if (bad) {
        rc = multi_refuse(t, "sending the app", rcs);
        goto out;
    }
    /* 4. Roll out server by server. */
    size_t done = 0, active = 0;
    for (size_t i = 0; i < n; i++)
        active += cli_server_active(t, i);
    for (size_t i = 0; i < n; i++) {
        if (!cli_server_active(t, i))
            continue;
        json_t *services = json_array();
        for (size_t k = 0; k < env->services_len; k++) {
            const struct cfg_service *s = &env->services[k];
            json_t *c = json_incref(cfgs[i * env->services_len + k]);
            json_t *entry = json_pack("{s:s, s:o, s:s, s:s}", "name", s->name, "config", c,
                                      "revision", revs[k], "source", s->build ? s->build : "");
            unsigned mine = cli_place_fields(t, s, s->replicas, i, entry);
            json_object_set_new(c, "replicas", json_integer(mine));
            json_array_append_new(services, entry);
        }
        json_t *body = json_pack("{s:s, s:s, s:i, s:o, s:b, s:o, s:o}", "project",
                                 t->cfg->project.name, "env", env->name, "http_port",
                                 (int)env->http_port, "services", services, "force", force,
                                 "metrics", metrics_json(t), "peers", cli_peers_json(t, i));
        if (t->service)
            json_object_set_new(body, "service", json_string(t->service));
        cli_use_server(t, i);
        char label[512];
        if (!t->json)
            printf("Deploying %s (%s) to %s [%zu/%zu] from %s\n", t->cfg->project.name,
                   env->name, cli_server_label(t, i, label, sizeof(label)), done + 1, active,
                   t->cfg->path);
        fflush(stdout);
        rc = cli_run_operation_wait("deploy", "/v1/deploy", body, t->json, lock_wait);
        json_decref(body);
        if (rc) {
            fprintf(stderr, "tako deploy: the rollout failed on server %s", t->servers[i].cfg->name);
            size_t m = 0;
            for (size_t j = 0; j < i; j++)
                if (cli_server_active(t, j))
                    fprintf(stderr, "%s%s", m++ ? ", " : "; it is done on ", t->servers[j].cfg->name);
            m = 0;
            for (size_t j = i + 1; j < n; j++)
                if (cli_server_active(t, j))
                    fprintf(stderr, "%s%s", m++ ? ", " : "; not started on ",
                            t->servers[j].cfg->name);
            fprintf(stderr, "\n");
            goto out;
        }
        done++;
    }
    for (size_t i = 0; i < n; i++)
        if (t->servers[i].skipped && !t->json)
            printf("server %s skipped (--skip): not changed\n", t->servers[i].cfg->name);
    if (!t->json) {
        char *ps_argv[] = {"ps", "-f", t->cfg->path, "-e", (char *)env->name, "-a", NULL};
        printf("\n");
        cmd_ps(6, ps_argv);
    }
out:
    for (size_t i = 0; i < n; i++)
        if (locks[i] >= 0)
            close(locks[i]);
    for (size_t i = 0; i < n * env->services_len; i++)
        json_decref(cfgs[i]);
    free(cfgs);
    free(revs);
    free(locks);
    free(rcs);
    return rc;
}

int cmd_deploy(int argc, char **argv)
{
    static const struct option opts[] = {CLI_COMMON_OPTS,
                                         {"force", no_argument, NULL, 'F'},
                                         {"lock-wait", required_argument, NULL, 'W'},
                                         {"skip", required_argument, NULL, 'K'},
                                         {0}};
    const char *skip[64];
    size_t n_skip = 0;
    struct cli_target t = {.cmd = "deploy"};
    bool force = false;
    uint64_t lock_wait = 0;
    int o;
    optind = 1;
    opterr = 0;
    while ((o = getopt_long(argc, argv, CLI_COMMON_SHORT, opts, NULL)) != -1) {
        int r = cli_common_opt(&t, o, optarg);
        if (r < 0)
            return -r;
        if (r)
            continue;
        if (o == 'F')
            force = true;
        else if (o == 'K') {
            if (n_skip == ARRAY_LEN(skip))
                return cli_usage_error("deploy", "too many --skip");
            skip[n_skip++] = optarg;
        }
        else if (o == 'W') {
            if (parse_duration_ms(optarg, &lock_wait) < 0)
                return cli_usage_error("deploy", "invalid --lock-wait '%s' (e.g. 30s, 5m)",
                                       optarg);
        } else
            return cli_usage_error("deploy", "unknown option '%s'", argv[optind - 1]);
    }
    if (optind < argc)
        t.env = argv[optind++];
    if (optind < argc)
        return cli_usage_error("deploy", "unexpected argument '%s'", argv[optind]);
    t.skip = skip;
    t.n_skip = n_skip;
    int rc = cli_target_load(&t, true, true);
    if (rc)
        return rc;
    if (n_skip && !t.servers) {
        cli_target_free(&t);
        return cli_usage_error("deploy", "--skip is for an environment with several servers");
    }
    if (t.servers) {
        rc = deploy_multi(&t, force, lock_wait);
        cli_target_free(&t);
        return rc;
    }
    const struct cfg_env *env = t.envp;
    int lock_fd = -1;
    if (t.remote) {
        /* Setup first (idempotent, atomic): the lock is kept by tako itself there. */
        rc = cli_remote_prepare(&t, t.json);
        if (!rc)
            rc = cli_remote_lock(&t, lock_wait, &lock_fd);
        if (rc) {
            if (lock_fd >= 0)
                close(lock_fd);
            cli_target_free(&t);
            return rc;
        }
    }
    json_t *services = json_array();
    bool docker_checked = false;
    for (size_t i = 0; i < env->services_len; i++) {
        const struct cfg_service *s = &env->services[i];
        bool docker = s->runtime && strcmp(s->runtime, "docker") == 0;
        if (docker && !docker_checked && !t.remote) {
            /* takod talks to the engine of its own machine; for this one,
             * say here, at the key that asks for it, when there is none to
             * talk to (a remote takod reports its own in the deploy) */
            char why[512];
            struct dk_client *dc = NULL;
            if (dk_open(NULL, &dc, why, sizeof(why)) < 0) {
                fprintf(stderr, "%s: %s: %s\n", s->runtime_at, s->runtime_path, why);
                json_decref(services);
                cli_target_free(&t);
                return EXIT_USAGE;
            }
            dk_close(dc);
            docker_checked = true;
        }
        if (!s->argv && !docker) {
            fprintf(stderr,
                    "tako deploy: service %s has no command; the process runtime needs "
                    "'command' (or set runtime: docker to run its image)\n",
                    s->name);
            json_decref(services);
            if (lock_fd >= 0)
                close(lock_fd);
            cli_target_free(&t);
            return EXIT_USAGE;
        }
        json_t *cj = cfg_service_to_json(s);
        char rev[13];
        cli_revision(s, cj, rev);
        /* On a server, the files go first; nothing runs there until all arrived. */
        if (t.remote && (!t.service || strcmp(t.service, s->name) == 0) &&
            (rc = cli_remote_ship(&t, s, cj, t.json)) != 0) {
            json_decref(cj);
            json_decref(services);
            if (lock_fd >= 0)
                close(lock_fd);
            cli_target_free(&t);
            return rc;
        }
        json_array_append_new(services, json_pack("{s:s, s:o, s:s, s:s}", "name", s->name,
                                                  "config", cj, "revision", rev, "source",
                                                  s->build ? s->build : ""));
    }
    json_t *body = json_pack("{s:s, s:s, s:i, s:o, s:b}", "project", t.cfg->project.name, "env",
                             env->name, "http_port", (int)env->http_port, "services", services,
                             "force", force);
    if (t.service)
        json_object_set_new(body, "service", json_string(t.service));
    json_object_set_new(body, "metrics", metrics_json(&t));
    if (!t.json && t.remote)
        printf("Deploying %s (%s) to server %s (%s) from %s\n", t.cfg->project.name, env->name,
               t.server->name, ssh_where(t.remote), t.cfg->path);
    else if (!t.json)
        printf("Deploying %s (%s) from %s\n", t.cfg->project.name, env->name, t.cfg->path);
    rc = cli_run_operation_wait("deploy", "/v1/deploy", body, t.json, lock_wait);
    json_decref(body);
    if (rc == EXIT_OK && !t.json) {
        /* Show where it runs now. */
        char *ps_argv[] = {"ps", "-f", t.cfg->path, "-e", (char *)env->name, NULL};
        printf("\n");
        cmd_ps(5, ps_argv);
    }
    if (lock_fd >= 0)
        close(lock_fd);
    cli_target_free(&t);
    return rc;
}
