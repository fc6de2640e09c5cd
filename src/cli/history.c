/* history.c — `tako history`: the project's deploys, scales, restarts and
 * rollbacks, newest first. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "cli/client.h"
#include "cli/common.h"
#include "core/util.h"

const char help_history[] =
    "Usage: tako history [ENV] [-n COUNT] [-f FILE | --project NAME] [--output json]\n"
    "\n"
    "List the operations of the project, newest first: ID, time, kind (deploy,\n"
    "scale, restart, stop, start, down, rollback), revision, status (ok, failed,\n"
    "rolled-back, running) and message. `tako rollback REVISION` goes back to one.\n"
    "\n"
    "Options:\n" CLI_COMMON_HELP
    "  -n, --limit COUNT    at most COUNT rows (default 20)\n";

int cmd_history(int argc, char **argv)
{
    static const struct option opts[] = {CLI_COMMON_OPTS, {"limit", required_argument, NULL, 'n'},
                                         {0}};
    struct cli_target t = {.cmd = "history"};
    uint64_t limit = 20;
    int o;
    optind = 1;
    opterr = 0;
    while ((o = getopt_long(argc, argv, CLI_COMMON_SHORT "n:", opts, NULL)) != -1) {
        int r = cli_common_opt(&t, o, optarg);
        if (r < 0)
            return -r;
        if (r)
            continue;
        if (o == 'n') {
            if (parse_uint(optarg, 100000, &limit) < 0 || limit == 0)
                return cli_usage_error("history", "invalid --limit '%s'", optarg);
        } else {
            return cli_usage_error("history", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        t.env = argv[optind++];
    if (optind < argc)
        return cli_usage_error("history", "unexpected argument '%s'", argv[optind]);
    int rc = cli_target_load(&t, false, false);
    if (rc)
        return rc;
    const char *project = cli_target_project(&t);
    if (!project) {
        fprintf(stderr, "tako history: no tako.yaml here; pass -f FILE or --project NAME\n");
        return EXIT_USAGE;
    }
    char a[256], b[256], path[700];
    snprintf(path, sizeof(path), "/v1/history?project=%s&env=%s&limit=%llu",
             client_urlenc(project, a, sizeof(a)),
             t.envp ? client_urlenc(t.envp->name, b, sizeof(b)) : "", (unsigned long long)limit);
    json_t *resp = NULL;
    if ((rc = client_get("history", path, &resp))) {
        cli_target_free(&t);
        return rc;
    }
    json_t *rows = json_object_get(resp, "history");
    if (t.json) {
        cli_print_json(resp);
    } else if (json_array_size(rows) == 0) {
        printf("No history for project %s yet.\n", project);
    } else {
        printf("%-5s %-20s %-9s %-13s %-12s %s\n", "ID", "TIME", "KIND", "REVISION", "STATUS",
               "MESSAGE");
        size_t i;
        json_t *r;
        json_array_foreach(rows, i, r) {
            time_t ts = (time_t)(json_integer_value(json_object_get(r, "started_ms")) / 1000);
            struct tm tm;
            char when[32];
            localtime_r(&ts, &tm);
            strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm);
            const char *rev = json_string_value(json_object_get(r, "revision"));
            const char *det = json_string_value(json_object_get(r, "detail"));
            printf("%-5lld %-20s %-9s %-13s %-12s %s%s%s\n",
                   (long long)json_integer_value(json_object_get(r, "id")), when,
                   json_string_value(json_object_get(r, "kind")), rev && *rev ? rev : "-",
                   json_string_value(json_object_get(r, "status")),
                   json_string_value(json_object_get(r, "message")), det && *det ? "  " : "",
                   det && *det ? det : "");
        }
    }
    json_decref(resp);
    cli_target_free(&t);
    return EXIT_OK;
}
