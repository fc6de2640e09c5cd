/* cli.h — the subcommand table and helpers shared by command handlers. */
#ifndef TAKO_CLI_CLI_H
#define TAKO_CLI_CLI_H

#include <stdbool.h>
#include <stdio.h>

/* Exit statuses, stable and documented in docs/cli.md. */
enum {
    EXIT_OK = 0,
    EXIT_FAILED = 1,   /* the command ran and failed (deploy rolled back, ...) */
    EXIT_USAGE = 2,    /* invalid input: unknown command/flag, bad config */
    EXIT_UNAVAIL = 3,  /* takod could not be reached or started */
    EXIT_CONFLICT = 4, /* refused: another operation holds the project lock */
};

typedef int (*cli_handler)(int argc, char **argv);

struct cli_command {
    const char *name;
    cli_handler handler; /* NULL: planned, not yet available */
    const char *summary; /* one line for `tako --help`; NULL: internal, not listed */
    const char *help;    /* full text for `tako help NAME` and NAME --help */
};

extern const struct cli_command cli_commands[];
extern const unsigned cli_commands_len;

const struct cli_command *cli_find(const char *name);
void cli_print_usage(FILE *f);
void cli_print_command_help(const struct cli_command *c, FILE *f);
/* For getopt_long error paths: print "tako NAME: msg" plus a hint and
 * return EXIT_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

int cmd_version(int argc, char **argv);
int cmd_help(int argc, char **argv);
int cmd_validate(int argc, char **argv); /* validate.c */
int cmd_config(int argc, char **argv);   /* config.c: config explain */
int cmd_init(int argc, char **argv);     /* init.c */
int cmd_shim(int argc, char **argv); /* internal: the replica supervisor */
int cmd_proxy(int argc, char **argv); /* proxy.c: the load balancer */
extern const char help_proxy[];


/* Project commands (src/cli/deploy.c, ps.c, logs.c, lifecycle.c, history.c)
 * and takod (src/cli/daemon.c). */
int cmd_deploy(int argc, char **argv);
int cmd_ps(int argc, char **argv);
int cmd_stats(int argc, char **argv);
int cmd_logs(int argc, char **argv);
int cmd_scale(int argc, char **argv);
int cmd_restart(int argc, char **argv);
int cmd_stop(int argc, char **argv);
int cmd_start(int argc, char **argv);
int cmd_down(int argc, char **argv);
int cmd_rollback(int argc, char **argv);
int cmd_history(int argc, char **argv);
int cmd_daemon(int argc, char **argv);
int cmd_autoscale(int argc, char **argv);
int cmd_setup(int argc, char **argv);  /* servers.c */
int cmd_remote(int argc, char **argv); /* servers.c: internal, runs on a server */
int cmd_certs(int argc, char **argv); /* certs.c */
extern const char help_certs[];
extern const char help_deploy[], help_ps[], help_stats[], help_logs[], help_scale[],
    help_restart[], help_stop[], help_start[], help_down[], help_rollback[], help_history[],
    help_daemon[], help_autoscale[], help_setup[];

#endif
