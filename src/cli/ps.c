/* ps.c — `tako ps` and `tako stats`: services and replicas as tables or JSON. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "cli/client.h"
#include "cli/common.h"
#include "core/util.h"

const char help_ps[] =
    "Usage: tako ps [ENV] [--service NAME] [--instances] [-f FILE] [--output json]\n"
    "\n"
    "One row per service: SERVICE REPLICAS STATUS PORTS REVISION STRATEGY, e.g.\n"
    "  web  3/3  ✓ running  8080  3f2a9c1d7b4e  round_robin\n"
    "REPLICAS is healthy/desired. STATUS is ✓ running, ⚠ degraded (fewer healthy\n"
    "than desired), ↻ scaling or ↻ deploying (a change is rolling), ✗ crashloop,\n"
    "✗ down (none healthy) or ✗ stopped. A `tako scale` override is shown in NOTES;\n"
    "an autoscaled service shows current/desired (min–max), e.g. 3/4 (2–10).\n"
    "Without a tako.yaml here (and without --project) every project is listed.\n"
    "With several servers, a SERVER column comes first, each service row is\n"
    "followed by that server's view of its peers, and a server that cannot be\n"
    "reached is a line saying so (exit 3; the others are still listed).\n"
    "\n"
    "Options:\n" CLI_COMMON_HELP
    "  -a, --instances      one row per replica: NAME PID PORT HEALTH RESTARTS\n"
    "                       UPTIME CPU MEMORY REVISION\n"
    "\n"
    "JSON (--output json): {\"services\": [{\"service\", \"running\", \"desired\",\n"
    "\"status\", \"revision\", \"ports\", \"replicas\": [{\"name\", \"pid\", \"port\",\n"
    "\"health\", \"restarts\", \"uptime\" (s), \"cpu\" (%), \"memory\" (bytes), ...}]}]}\n";

const char help_stats[] =
    "Usage: tako stats [ENV] [--service NAME] [-f FILE] [--output json]\n"
    "\n"
    "Per replica: CPU %, memory (RSS of the replica and its children), requests\n"
    "served through the load balancer, requests in flight, p50/p99 latency, and\n"
    "answers by class (2xx/5xx). Counters start when takod starts.\n"
    "\n"
    "Options:\n" CLI_COMMON_HELP;

static const char *status_mark(const char *st, bool color, const char **on)
{
    *on = "";
    if (strcmp(st, "running") == 0) {
        *on = color ? "\033[32m" : "";
        return "✓";
    }
    if (strcmp(st, "degraded") == 0) {
        *on = color ? "\033[33m" : "";
        return "⚠";
    }
    if (strcmp(st, "scaling") == 0 || strcmp(st, "deploying") == 0 ||
        strcmp(st, "removing") == 0) {
        *on = color ? "\033[36m" : "";
        return "↻";
    }
    *on = color ? "\033[31m" : "";
    return "✗";
}

/* "1.7MiB": one word, like docker stats, so columns split on blanks. */
static void mem_str(uint64_t bytes, char *buf, size_t len)
{
    char tmp[32];
    fmt_bytes(bytes, tmp, sizeof(tmp));
    size_t o = 0;
    for (const char *p = tmp; *p && o + 1 < len; p++)
        if (*p != ' ')
            buf[o++] = *p;
    buf[o] = '\0';
}

/* Under a service: one line per HTTPS domain with its certificate's state. */
static void print_certs(json_t *certs)
{
    size_t i;
    json_t *c;
    json_array_foreach(certs, i, c) {
        const char *st = json_string_value(json_object_get(c, "state"));
        const char *err = json_string_value(json_object_get(c, "error"));
        json_t *na = json_object_get(c, "not_after");
        char until[32] = "";
        if (json_is_integer(na)) {
            time_t t = (time_t)json_integer_value(na);
            struct tm tm;
            gmtime_r(&t, &tm);
            strftime(until, sizeof(until), "%Y-%m-%d %H:%M UTC", &tm);
        }
        printf("  certificate %s: ", json_string_value(json_object_get(c, "domain")));
        if (st && strcmp(st, "valid") == 0)
            printf("valid until %s\n", until);
        else if (st && strcmp(st, "renewing") == 0)
            printf("renewing (current valid until %s)\n", until);
        else if (st && strcmp(st, "failing") == 0)
            printf("failing: %s%s%s\n", err ? err : "?", until[0] ? "; current valid until " : "",
                   until);
        else
            printf("%s%s%s\n", st ? st : "?", until[0] ? ", valid until " : "", until);
    }
}

/* SERVER column (several servers): its width, 0 = none. */
static int g_server_w;

static void server_col(const char *name)
{
    if (g_server_w)
        printf("%-*s ", g_server_w, name);
}

/* A server's view of its peers for a service (ps JSON "peers"). */
static void print_peers(json_t *peers, const char *server, const char *service)
{
    if (json_array_size(peers) == 0)
        return;
    server_col(server);
    printf("%s%s peers:", service ? "" : " ", service ? service : "");
    size_t i;
    json_t *p;
    json_array_foreach(peers, i, p) {
        const char *h = json_string_value(json_object_get(p, "health"));
        printf("%s %s %s (%lld replica%s, %s)", i ? "," : "",
               json_string_value(json_object_get(p, "server")) ?: "?",
               json_string_value(json_object_get(p, "address")) ?: "?",
               (long long)json_integer_value(json_object_get(p, "replicas")),
               json_integer_value(json_object_get(p, "replicas")) == 1 ? "" : "s", h ? h : "?");
    }
    printf("\n");
}

static void print_services(json_t *svcs, bool multi_project, bool color, bool header)
{
    if (header) {
        server_col("SERVER");
        printf("%s%-12s %-9s %-13s %-12s %-13s %-17s %s\n", multi_project ? "PROJECT      " : "",
               "SERVICE", "REPLICAS", "STATUS", "PORTS", "REVISION", "STRATEGY", "NOTES");
    }
    size_t i;
    json_t *s;
    json_array_foreach(svcs, i, s) {
        char reps[32], ports[64] = "", notes[256] = "";
        snprintf(reps, sizeof(reps), "%lld/%lld",
                 (long long)json_integer_value(json_object_get(s, "running")),
                 (long long)json_integer_value(json_object_get(s, "desired")));
        size_t k;
        json_t *p;
        json_array_foreach(json_object_get(s, "ports"), k, p) {
            size_t l = strlen(ports);
            snprintf(ports + l, sizeof(ports) - l, "%s%lld", l ? "," : "",
                     (long long)json_integer_value(p));
        }
        if (!ports[0])
            snprintf(ports, sizeof(ports), "-");
        json_t *ov = json_object_get(s, "scale_override");
        if (json_is_integer(ov))
            snprintf(notes, sizeof(notes), "scaled by 'tako scale' (tako.yaml: %lld)",
                     (long long)json_integer_value(json_object_get(s, "config_replicas")));
        json_t *as = json_object_get(s, "autoscale");
        if (as) {
            /* current/desired (min–max) */
            size_t l = strlen(reps);
            snprintf(reps + l, sizeof(reps) - l, " (%lld–%lld)",
                     (long long)json_integer_value(json_object_get(as, "min")),
                     (long long)json_integer_value(json_object_get(as, "max")));
            l = strlen(notes);
            snprintf(notes + l, sizeof(notes) - l, "%sautoscaled", l ? "; " : "");
        }
        json_t *dom = json_object_get(s, "domains");
        if (json_array_size(dom) > 0) {
            size_t l = strlen(notes);
            snprintf(notes + l, sizeof(notes) - l, "%s%s", l ? "; " : "",
                     json_string_value(json_array_get(dom, 0)));
        }
        const char *st = json_string_value(json_object_get(s, "status"));
        const char *on;
        const char *mark = status_mark(st ? st : "?", color, &on);
        char status[64];
        snprintf(status, sizeof(status), "%s %s", mark, st ? st : "?");
        server_col(json_string_value(json_object_get(s, "server")) ?: "");
        if (multi_project)
            printf("%-12s ", json_string_value(json_object_get(s, "project")));
        /* The mark is 3 bytes wide in UTF-8 but one column on screen. */
        printf("%-12s %-9s %s%-15s%s %-12s %-13s %-17s %s\n",
               json_string_value(json_object_get(s, "service")), reps, on, status,
               color ? "\033[0m" : "", ports, json_string_value(json_object_get(s, "revision")),
               json_string_value(json_object_get(s, "strategy")), notes);
        print_certs(json_object_get(s, "certificates"));
        print_peers(json_object_get(s, "peers"), "", NULL);
    }
}

static void print_instances(json_t *svcs, bool header)
{
    if (header)
        server_col("SERVER");
    if (header)
        printf("%-24s %-8s %-6s %-10s %-8s %-9s %-6s %-10s %s\n", "NAME", "PID", "PORT", "HEALTH",
           "RESTARTS", "UPTIME", "CPU", "MEMORY", "REVISION");
    size_t i, k;
    json_t *s, *r;
    json_array_foreach(svcs, i, s) {
        json_array_foreach(json_object_get(s, "replicas"), k, r) {
            char up[32], mem[32], cpu[16], port[16];
            fmt_duration((uint64_t)json_integer_value(json_object_get(r, "uptime_ms")), up,
                         sizeof(up));
            mem_str((uint64_t)json_integer_value(json_object_get(r, "memory")), mem, sizeof(mem));
            snprintf(cpu, sizeof(cpu), "%.1f%%", json_number_value(json_object_get(r, "cpu")));
            long long pt = json_integer_value(json_object_get(r, "port"));
            snprintf(port, sizeof(port), pt ? "%lld" : "-", pt);
            const char *health = json_string_value(json_object_get(r, "health"));
            const char *state = json_string_value(json_object_get(r, "state"));
            char hs[32];
            if (state && strcmp(state, "running") != 0)
                snprintf(hs, sizeof(hs), "%s", state);
            else
                snprintf(hs, sizeof(hs), "%s", health ? health : "?");
            server_col(json_string_value(json_object_get(r, "server")) ?: "");
            printf("%-24s %-8lld %-6s %-10s %-8lld %-9s %-6s %-10s %s%s\n",
                   json_string_value(json_object_get(r, "name")),
                   (long long)json_integer_value(json_object_get(r, "pid")), port, hs,
                   (long long)json_integer_value(json_object_get(r, "restarts")), up, cpu, mem,
                   json_string_value(json_object_get(r, "revision")),
                   json_is_true(json_object_get(r, "hostname_shared")) ? " (hostname shared)" : "");
            const char *le = json_string_value(json_object_get(r, "last_error"));
            if (le && state && strcmp(state, "running") != 0)
                printf("    last: %s\n", le);
        }
    }
}



static void print_stats(json_t *svcs, bool header)
{
    if (header)
        server_col("SERVER");
    if (header)
        printf("%-24s %-7s %-10s %-9s %-9s %-9s %-9s %-8s %s\n", "NAME", "CPU", "MEMORY", "REQUESTS",
           "INFLIGHT", "P50", "P99", "2XX", "5XX");
    size_t i, k;
    json_t *s, *r;
    json_array_foreach(svcs, i, s) {
        json_array_foreach(json_object_get(s, "replicas"), k, r) {
            char mem[32], cpu[16], p50[16], p99[16];
            mem_str((uint64_t)json_integer_value(json_object_get(r, "memory")), mem, sizeof(mem));
            snprintf(cpu, sizeof(cpu), "%.1f%%", json_number_value(json_object_get(r, "cpu")));
            snprintf(p50, sizeof(p50), "%.1fms", json_number_value(json_object_get(r, "p50_ms")));
            snprintf(p99, sizeof(p99), "%.1fms", json_number_value(json_object_get(r, "p99_ms")));
            server_col(json_string_value(json_object_get(r, "server")) ?: "");
            printf("%-24s %-7s %-10s %-9lld %-9lld %-9s %-9s %-8lld %lld\n",
                   json_string_value(json_object_get(r, "name")), cpu, mem,
                   (long long)json_integer_value(json_object_get(r, "requests")),
                   (long long)json_integer_value(json_object_get(r, "inflight")), p50, p99,
                   (long long)json_integer_value(json_object_get(r, "status_2xx")),
                   (long long)json_integer_value(json_object_get(r, "status_5xx")));
        }
    }
}

/* Several servers: every server's answer, merged, with a SERVER column; a
 * server that cannot be reached is a line saying so (exit 3), the others
 * are still shown. */
static int ps_multi(struct cli_target *t, const char *path, bool stats, bool instances)
{
    json_t *all = json_array(), *servers = json_array();
    int rc = EXIT_OK;
    g_server_w = 6;
    for (size_t i = 0; i < t->n_servers; i++)
        if ((int)strlen(t->servers[i].cfg->name) > g_server_w)
            g_server_w = (int)strlen(t->servers[i].cfg->name);
    int *sts = xcalloc(t->n_servers, sizeof(int));
    json_t **resps = xcalloc(t->n_servers, sizeof(json_t *));
    cli_parallel_get(t, path, sts, resps);
    for (size_t i = 0; i < t->n_servers; i++) {
        struct cli_server *sv = &t->servers[i];
        if (sv->skipped)
            continue;
        json_t *entry = json_pack("{s:s}", "name", sv->cfg->name);
        json_array_append_new(servers, entry);
        if (!cli_server_active(t, i)) {
            json_object_set_new(entry, "reachable", json_false());
            json_object_set_new(entry, "error", json_string(sv->error));
            rc = EXIT_UNAVAIL;
            continue;
        }
        json_t *resp = resps[i];
        int st = sts[i];
        if (st != 200) {
            const char *e = json_string_value(json_object_get(resp, "error"));
            char msg[1200];
            snprintf(msg, sizeof(msg), "takod on server %s answered %s%s%s", sv->cfg->name,
                     st < 0 ? strerror(-st) : "an error", e ? ": " : "", e ? e : "");
            json_object_set_new(entry, "reachable", json_false());
            json_object_set_new(entry, "error", json_string(msg));
            json_decref(resp);
            rc = st < 0 ? EXIT_UNAVAIL : EXIT_FAILED;
            continue;
        }
        json_object_set_new(entry, "reachable", json_true());
        size_t k, j;
        json_t *s, *r;
        json_array_foreach(json_object_get(resp, "services"), k, s) {
            json_object_set_new(s, "server", json_string(sv->cfg->name));
            json_array_foreach(json_object_get(s, "replicas"), j, r)
                json_object_set_new(r, "server", json_string(sv->cfg->name));
            json_array_append(all, s);
        }
        json_decref(resp);
    }
    free(sts);
    free(resps);
    if (t->json) {
        json_t *out = json_pack("{s:o, s:o}", "services", all, "servers", servers);
        cli_print_json(out);
        json_decref(out);
        return rc;
    }
    if (stats)
        print_stats(all, true);
    else if (instances)
        print_instances(all, true);
    else
        print_services(all, false, cli_color(stdout), true);
    if (instances) {
        /* each server's view of its peers, per service */
        size_t k;
        json_t *s;
        json_array_foreach(all, k, s) {
            print_peers(json_object_get(s, "peers"),
                        json_string_value(json_object_get(s, "server")),
                        json_string_value(json_object_get(s, "service")));
        }
    }
    size_t k;
    json_t *e;
    json_array_foreach(servers, k, e)
        if (!json_is_true(json_object_get(e, "reachable"))) {
            server_col(json_string_value(json_object_get(e, "name")));
            printf("unreachable: %s\n", json_string_value(json_object_get(e, "error")));
        }
    json_decref(all);
    json_decref(servers);
    return rc;
}

static int ps_or_stats(int argc, char **argv, bool stats)
{
    static const struct option opts[] = {CLI_COMMON_OPTS, {"instances", no_argument, NULL, 'a'},
                                         {0}};
    struct cli_target t = {.cmd = stats ? "stats" : "ps"};
    bool instances = false;
    int o;
    optind = 1;
    opterr = 0;
    while ((o = getopt_long(argc, argv, CLI_COMMON_SHORT "a", opts, NULL)) != -1) {
        int r = cli_common_opt(&t, o, optarg);
        if (r < 0)
            return -r;
        if (r)
            continue;
        if (o == 'a' && !stats)
            instances = true;
        else
            return cli_usage_error(t.cmd, "unknown option '%s'", argv[optind - 1]);
    }
    if (optind < argc)
        t.env = argv[optind++];
    if (optind < argc)
        return cli_usage_error(t.cmd, "unexpected argument '%s'", argv[optind]);
    t.partial = true;
    int rc = cli_target_load(&t, false, false);
    if (rc)
        return rc;
    char q[1024], path[1100];
    snprintf(path, sizeof(path), "/v1/ps%s", cli_query(&t, q, sizeof(q)));
    if (t.servers) {
        rc = ps_multi(&t, path, stats, instances);
        cli_target_free(&t);
        return rc;
    }
    json_t *resp = NULL;
    if ((rc = client_get(t.cmd, path, &resp))) {
        cli_target_free(&t);
        return rc;
    }
    json_t *svcs = json_object_get(resp, "services");
    json_t *dp = json_object_get(resp, "dataplane");
    const char *dps = json_string_value(json_object_get(dp, "state"));
    if (!t.json && dps && strcmp(dps, "running") != 0) {
        /* Traffic depends on it: say so before the table. */
        const char *why = json_string_value(json_object_get(dp, "last_error"));
        printf("data plane: %s%s%s%s\n", strcmp(dps, "crashloop") == 0 ? "crash loop" : dps,
               why ? " (" : "", why ? why : "", why ? ")" : "");
        if (strcmp(dps, "crashloop") == 0)
            printf("  not restarted again; see %s/dataplane.log, then restart takod\n",
                   json_string_value(json_object_get(dp, "home")) ?: "$TAKO_HOME");
    }
    if (t.json) {
        cli_print_json(resp);
    } else if (json_array_size(svcs) == 0) {
        const char *p = cli_target_project(&t);
        if (p)
            printf("Nothing deployed for project %s. Run 'tako deploy' to start it.\n", p);
        else
            printf("Nothing deployed.\n");
    } else if (stats) {
        print_stats(svcs, true);
    } else if (instances) {
        print_instances(svcs, true);
    } else {
        print_services(svcs, cli_target_project(&t) == NULL, cli_color(stdout), true);
    }
    json_decref(resp);
    cli_target_free(&t);
    return EXIT_OK;
}

int cmd_ps(int argc, char **argv) { return ps_or_stats(argc, argv, false); }
int cmd_stats(int argc, char **argv) { return ps_or_stats(argc, argv, true); }
