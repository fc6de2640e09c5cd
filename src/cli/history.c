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

static int newest_first(const void *a, const void *b)
{
    json_int_t x = json_integer_value(json_object_get(*(json_t *const *)a, "started_ms"));
    json_int_t y = json_integer_value(json_object_get(*(json_t *const *)b, "started_ms"));
    return x < y ? 1 : x > y ? -1 : 0;
}

/* Several servers: every server's operations in one list, newest first,
 * each with its server; an unreachable server is said on stderr (exit 3). */
static json_t *history_multi(struct cli_target *t, const char *path, size_t limit, int *rc)
{
    json_t **rows = NULL;
    size_t n = 0;
    int *sts = xcalloc(t->n_servers, sizeof(int));
    json_t **resps = xcalloc(t->n_servers, sizeof(json_t *));
    cli_parallel_get(t, path, sts, resps);
    for (size_t i = 0; i < t->n_servers; i++) {
        if (t->servers[i].skipped)
            continue;
        if (!cli_server_active(t, i)) {
            fprintf(stderr, "tako history: %s\n", t->servers[i].error);
            *rc = EXIT_UNAVAIL;
            continue;
        }
        json_t *resp = resps[i];
        if (sts[i] != 200) {
            cli_use_server(t, i); /* the message names the server */
            *rc = sts[i] < 0 ? client_unavailable(sts[i])
                             : client_report_error("history", sts[i], resp);
            json_decref(resp);
            continue;
        }
        size_t k;
        json_t *row;
        json_array_foreach(json_object_get(resp, "history"), k, row) {
            json_object_set_new(row, "server", json_string(t->servers[i].cfg->name));
            rows = xrealloc(rows, (n + 1) * sizeof(*rows));
            rows[n++] = json_incref(row);
        }
        json_decref(resp);
    }
    free(sts);
    free(resps);
    if (n)
        qsort(rows, n, sizeof(*rows), newest_first);
    json_t *list = json_array();
    for (size_t i = 0; i < n; i++) {
        if (i < limit)
            json_array_append(list, rows[i]);
        json_decref(rows[i]);
    }
    free(rows);
    return json_pack("{s:o}", "history", list);
}

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
    t.partial = true;
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
    int width = 0;
    if (t.servers) {
        resp = history_multi(&t, path, (size_t)limit, &rc);
        width = 6;
        for (size_t i = 0; i < t.n_servers; i++)
            if ((int)strlen(t.servers[i].cfg->name) > width)
                width = (int)strlen(t.servers[i].cfg->name);
    } else if ((rc = client_get("history", path, &resp))) {
        cli_target_free(&t);
        return rc;
    }
    json_t *rows = json_object_get(resp, "history");
    if (t.json) {
        cli_print_json(resp);
    } else if (json_array_size(rows) == 0) {
        printf("No history for project %s yet.\n", project);
    } else {
        if (width)
            printf("%-*s ", width, "SERVER");
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
            if (width)
                printf("%-*s ", width, json_string_value(json_object_get(r, "server")));
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
    return rc;
}
