/* commands.c — the subcommand table: name, handler, one-line summary, help.
 * Adding a command = one handler in its own file + one row here. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/client.h"
#include "cli/common.h"
#include "dataplane/dataplane.h"

static const char help_version[] = "Usage: tako version [--output json]\n"
                                   "\n"
                                   "Print the version and build of tako and, when takod runs, of\n"
                                   "takod and of the data plane (the load balancer process): after\n"
                                   "an upgrade they show which build serves. Never starts takod.\n";

static const char help_help[] = "Usage: tako help [COMMAND]\n"
                                "\n"
                                "Show the list of commands, or the full help of one command.\n";

const struct cli_command cli_commands[] = {
    {"deploy", cmd_deploy, "Deploy the services of an environment (rolling, zero downtime)", help_deploy},
    {"setup", cmd_setup, "Prepare an environment's server (install tako, start takod)", help_setup},
    {"ps", cmd_ps, "List services and their replicas", help_ps},
    {"logs", cmd_logs, "Show or follow the logs of a service's replicas", help_logs},
    {"stats", cmd_stats, "Per-replica CPU, memory, requests and latency", help_stats},
    {"scale", cmd_scale, "Change the number of replicas: tako scale web=5", help_scale},
    {"restart", cmd_restart, "Restart a service, one replica at a time", help_restart},
    {"stop", cmd_stop, "Stop a service's replicas", help_stop},
    {"start", cmd_start, "Start a stopped service", help_start},
    {"down", cmd_down, "Drain and stop everything of the project", help_down},
    {"rollback", cmd_rollback, "Roll back to a previous revision", help_rollback},
    {"history", cmd_history, "List deployed revisions", help_history},
    {"autoscale", cmd_autoscale, "Show autoscaling decisions and their reasons", help_autoscale},
    {"certs", cmd_certs, "List HTTPS certificates: source, state, expiry, errors", help_certs},
    {"validate", cmd_validate, "Check tako.yaml and report every problem",
     "Usage: tako validate [-f FILE] [-e ENV] [ENV] [-q]\n"
     "\n"
     "Load tako.yaml, expand ${VAR} (environment, then .env beside the file), check every\n"
     "key and value, and report every problem at once as FILE:LINE:COL: KEY.PATH: message.\n"
     "When valid, print a one-line summary per environment (services, replicas, strategy).\n"
     "\n"
     "Options:\n"
     "  -f, --file FILE   the configuration (default ./tako.yaml)\n"
     "  -e, --env ENV     check that ENV can be selected and summarize only it; a unique\n"
     "                    prefix or a server name works too (prod -> production)\n"
     "  -q, --quiet       print nothing when valid (warnings included)\n"
     "\n"
     "Exit status: 0 valid, 2 invalid (or a usage error).\n"},
    {"config", cmd_config, "Show the effective configuration (config explain)",
     "Usage: tako config explain [-f FILE] [-e ENV] [ENV] [-o text|json] [--show-secrets]\n"
     "\n"
     "Print the effective configuration: every default filled in, every ${VAR} expanded.\n"
     "The text form is YAML that tako reads back; env values whose key contains PASS,\n"
     "SECRET, TOKEN, KEY or CREDENTIAL (any case) are shown as ******.\n"
     "\n"
     "Options:\n"
     "  -f, --file FILE      the configuration (default ./tako.yaml)\n"
     "  -e, --env ENV        only this environment (a unique prefix or a server name\n"
     "                       works too); default: all of them\n"
     "  -o, --output FORMAT  text (default) or json (the same masking applies)\n"
     "      --show-secrets   show secret env values as they are\n"
     "\n"
     "Exit status: 0, or 2 when the configuration is invalid.\n"},
    {"init", cmd_init, "Write a starter tako.yaml, .env.example and .gitignore",
     "Usage: tako init [NAME] [-d DIR] [--force]\n"
     "\n"
     "Write a starter tako.yaml (project NAME, default: the directory's name), an\n"
     ".env.example, and add .env to .gitignore (created when missing; an existing one\n"
     "is only appended to). The files validate as written.\n"
     "\n"
     "Options:\n"
     "  -d, --dir DIR   write into DIR (default: the current directory)\n"
     "      --force     overwrite an existing tako.yaml and .env.example\n"
     "\n"
     "Exit status: 0 written; 1 refused because a file exists (nothing is written) or a\n"
     "write failed; 2 usage error.\n"},
    {"proxy", cmd_proxy, "Run the HTTP load balancer in front of a set of backends", help_proxy},
    {"daemon", cmd_daemon, "Run takod, the node agent (usually started for you)", help_daemon},
    {"version", cmd_version, "Print the version", help_version},
    {"help", cmd_help, "Show help for a command", help_help},
    {"remote", cmd_remote, NULL, /* internal: the server's half of shipping and locking */
     "Usage: tako remote have|receive|lock ...\n\nInternal: run on a server by the CLI through "
     "ssh (docs/servers.md). Not meant to be run by hand.\n"},
    {"shim", cmd_shim, NULL, /* internal: the replica supervisor takod starts */
     "Usage: tako shim DIR NOTIFY_FD LOCK_FD\n\nInternal: the per-replica supervisor that takod "
     "starts. Not meant to be run by hand.\n"},
    {"dataplane", cmd_dataplane, NULL, /* internal: the load balancer process takod drives */
     help_dataplane},
};
const unsigned cli_commands_len = sizeof(cli_commands) / sizeof(cli_commands[0]);

const struct cli_command *cli_find(const char *name)
{
    for (unsigned i = 0; i < cli_commands_len; i++)
        if (strcmp(cli_commands[i].name, name) == 0)
            return &cli_commands[i];
    return NULL;
}

void cli_print_usage(FILE *f)
{
    fprintf(f, "Usage: tako COMMAND [OPTIONS]\n"
               "\n"
               "Run a web service as N replicas behind tako's own load balancer.\n"
               "\n"
               "Commands:\n");
    for (unsigned i = 0; i < cli_commands_len; i++) {
        const struct cli_command *c = &cli_commands[i];
        if (!c->summary) /* internal command */
            continue;
        fprintf(f, "  %-10s %s%s\n", c->name, c->summary, c->handler ? "" : " (not yet available)");
    }
    fprintf(f, "\nRun 'tako help COMMAND' or 'tako COMMAND --help' for a command's options.\n"
               "Global options: -h, --help   show this help;  -V, --version   print the version\n");
}

void cli_print_command_help(const struct cli_command *c, FILE *f)
{
    if (c->help)
        fputs(c->help, f);
    else
        fprintf(f, "Usage: tako %s\n\n%s.\n\nThis command is planned and not yet available.\n",
                c->name, c->summary);
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "tako %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\nRun 'tako %s --help' for usage.\n", cmd);
    va_end(ap);
    return EXIT_USAGE;
}

int cmd_version(int argc, char **argv)
{
    bool json = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--output") == 0 && i + 1 < argc && strcmp(argv[i + 1], "json") == 0)
            json = true, i++;
        else if (strcmp(argv[i], "--output=json") == 0 || strcmp(argv[i], "-o") == 0)
            json = true, i += strcmp(argv[i], "-o") == 0;
        else
            return cli_usage_error("version", "unexpected argument '%s'", argv[i]);
    }
    /* The running takod and data plane, when there is one (never started
     * for this): after an upgrade they show which build serves. */
    json_t *resp = NULL;
    int fd = client_connect(false);
    if (fd >= 0) {
        close(fd);
        if (client_call("GET", "/v1/version", NULL, &resp) != 200) {
            json_decref(resp);
            resp = NULL;
        }
    }
    json_t *dp = json_object_get(resp, "dataplane");
    if (json) {
        json_t *j = json_pack("{s:s, s:s}", "version", TAKO_VERSION, "build", dp_build_id());
        if (resp)
            json_object_set_new(j, "takod",
                                json_pack("{s:O, s:O, s:O}", "version",
                                          json_object_get(resp, "version"), "build",
                                          json_object_get(resp, "build") ?: json_null(), "pid",
                                          json_object_get(resp, "pid")));
        if (dp)
            json_object_set(j, "dataplane", dp);
        cli_print_json(j);
        json_decref(j);
    } else {
        printf("tako %s (build %s)\n", TAKO_VERSION, dp_build_id());
        if (resp)
            printf("takod %s (build %s, pid %lld)\n",
                   json_string_value(json_object_get(resp, "version")),
                   json_string_value(json_object_get(resp, "build")) ?: "?",
                   (long long)json_integer_value(json_object_get(resp, "pid")));
        if (dp)
            printf("data plane %s (build %s, pid %lld)%s%s\n",
                   json_string_value(json_object_get(dp, "version")),
                   json_string_value(json_object_get(dp, "build")),
                   (long long)json_integer_value(json_object_get(dp, "pid")),
                   strcmp(json_string_value(json_object_get(dp, "state")) ?: "", "running") ? ": "
                                                                                             : "",
                   strcmp(json_string_value(json_object_get(dp, "state")) ?: "", "running")
                       ? json_string_value(json_object_get(dp, "state"))
                       : "");
    }
    json_decref(resp);
    return EXIT_OK;
}

int cmd_help(int argc, char **argv)
{
    if (argc < 2) {
        cli_print_usage(stdout);
        return EXIT_OK;
    }
    if (argc > 2)
        return cli_usage_error("help", "expected one command name");
    const struct cli_command *c = cli_find(argv[1]);
    if (!c) {
        fprintf(stderr, "tako: unknown command '%s'\nRun 'tako --help' for the list of commands.\n",
                argv[1]);
        return EXIT_USAGE;
    }
    cli_print_command_help(c, stdout);
    return EXIT_OK;
}
