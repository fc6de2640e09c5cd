/* commands.c — the subcommand table: name, handler, one-line summary, help.
 * Adding a command = one handler in its own file + one row here. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

static const char help_version[] = "Usage: tako version\n"
                                   "\n"
                                   "Print the version of tako.\n";

static const char help_help[] = "Usage: tako help [COMMAND]\n"
                                "\n"
                                "Show the list of commands, or the full help of one command.\n";

const struct cli_command cli_commands[] = {
    {"deploy", cmd_deploy, "Deploy the services of an environment (rolling, zero downtime)", help_deploy},
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
    {"dashboard", cmd_dashboard, "Open the live dashboard of services and replicas", help_dashboard},
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
    {"shim", cmd_shim, NULL, /* internal: the replica supervisor takod starts */
     "Usage: tako shim DIR NOTIFY_FD LOCK_FD\n\nInternal: the per-replica supervisor that takod "
     "starts. Not meant to be run by hand.\n"},
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
    (void)argv;
    if (argc > 1)
        return cli_usage_error("version", "unexpected argument '%s'", argv[1]);
    printf("tako %s\n", TAKO_VERSION);
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
