/* main.c — entry point: global flags, then dispatch through the command table. */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "core/util.h"

static const struct cli_command *suggest(const char *name)
{
    const struct cli_command *best = NULL;
    size_t best_d = 3;
    for (unsigned i = 0; i < cli_commands_len; i++) {
        size_t d = str_edit_distance(name, cli_commands[i].name);
        if (d < best_d) {
            best_d = d;
            best = &cli_commands[i];
        }
    }
    return best;
}

int main(int argc, char **argv)
{
    /* A peer closing a socket must be an EPIPE error, not a death. */
    signal(SIGPIPE, SIG_IGN);
    if (argc < 2) {
        cli_print_usage(stderr);
        return EXIT_USAGE;
    }
    const char *name = argv[1];
    if (strcmp(name, "-h") == 0 || strcmp(name, "--help") == 0) {
        cli_print_usage(stdout);
        return EXIT_OK;
    }
    if (strcmp(name, "-V") == 0 || strcmp(name, "--version") == 0)
        name = "version";
    else if (name[0] == '-') {
        fprintf(stderr, "tako: unknown option '%s'\nRun 'tako --help' for usage.\n", name);
        return EXIT_USAGE;
    }
    const struct cli_command *c = cli_find(name);
    if (!c) {
        const struct cli_command *s = suggest(name);
        fprintf(stderr, "tako: unknown command '%s'", name);
        if (s)
            fprintf(stderr, " (did you mean '%s'?)", s->name);
        fprintf(stderr, "\nRun 'tako --help' for the list of commands.\n");
        return EXIT_USAGE;
    }
    for (int i = 2; i < argc && strcmp(argv[i], "--") != 0; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            cli_print_command_help(c, stdout);
            return EXIT_OK;
        }
    }
    if (!c->handler) {
        fprintf(stderr, "tako %s: not yet available in tako %s\n", c->name, TAKO_VERSION);
        return EXIT_FAILED;
    }
    /* Handlers see argv[0] = command name, like a program of their own. */
    return c->handler(argc - 1, argv + 1);
}
