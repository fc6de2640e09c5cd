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
    {"deploy", NULL, "Deploy the services of an environment (rolling, zero downtime)", NULL},
    {"ps", NULL, "List services and their replicas", NULL},
    {"logs", NULL, "Show or follow the logs of a service's replicas", NULL},
    {"stats", NULL, "Per-replica CPU, memory, requests and latency", NULL},
    {"scale", NULL, "Change the number of replicas: tako scale web=5", NULL},
    {"restart", NULL, "Restart a service, one replica at a time", NULL},
    {"stop", NULL, "Stop a service's replicas", NULL},
    {"start", NULL, "Start a stopped service", NULL},
    {"down", NULL, "Drain and stop everything of the project", NULL},
    {"rollback", NULL, "Roll back to a previous revision", NULL},
    {"history", NULL, "List deployed revisions", NULL},
    {"autoscale", NULL, "Show autoscaling decisions and their reasons", NULL},
    {"validate", NULL, "Check tako.yaml and report every problem", NULL},
    {"config", NULL, "Show the effective configuration (config explain)", NULL},
    {"init", NULL, "Write a starter tako.yaml, .env.example and .gitignore", NULL},
    {"proxy", NULL, "Run the HTTP load balancer in front of a set of backends", NULL},
    {"daemon", NULL, "Run takod, the node agent (usually started for you)", NULL},
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
