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
    "Usage: tako deploy [ENV] [--service NAME] [--force] [-f FILE] [--output json]\n"
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
    "Options:\n" CLI_COMMON_HELP
    "      --force          roll every replica even when nothing changed\n"
    "      --lock-wait DURATION\n"
    "                       wait up to DURATION (e.g. 30s, 5m) for another deploy of\n"
    "                       the environment to finish, and for an operation of the\n"
    "                       project that takod still runs (one whose client was\n"
    "                       interrupted, too) (default: 0, fail at once)\n"
    "\n"
    "Exit status: 0 deployed (or nothing to do), 1 failed (rolled back, or the server\n"
    "cannot run tako), 2 invalid configuration or arguments, 3 takod or the server\n"
    "unreachable (or ssh refused: key, host key), 4 another operation of the project\n"
    "is running or another deploy holds the environment's lock.\n";

int cmd_deploy(int argc, char **argv)
{
    static const struct option opts[] = {CLI_COMMON_OPTS,
                                         {"force", no_argument, NULL, 'F'},
                                         {"lock-wait", required_argument, NULL, 'W'},
                                         {0}};
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
    int rc = cli_target_load(&t, true, true);
    if (rc)
        return rc;
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
    if (env->metrics_addr) {
        /* takod binds it; its error names this place in tako.yaml */
        char where[4400];
        snprintf(where, sizeof(where), "%s:%u:%u: environments.%s.metrics", t.cfg->path,
                 env->metrics_line, env->metrics_col, env->name);
        json_object_set_new(body, "metrics",
                            json_pack("{s:s, s:s?, s:s}", "address", env->metrics_addr, "token",
                                      env->metrics_token, "where", where));
    } else {
        json_object_set_new(body, "metrics", json_null());
    }
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
