/* certs.c — `tako certs`: each HTTPS domain's certificate: where it comes
 * from (ACME or own files), its state, expiry, issuer, and the last error
 * in the CA's own words. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "cli/client.h"
#include "cli/common.h"
#include "core/util.h"

const char help_certs[] =
    "Usage: tako certs [-f FILE | --project NAME] [--output json]\n"
    "\n"
    "List the certificates takod serves over HTTPS, one row per domain: DOMAIN,\n"
    "SERVICE, SOURCE (acme: obtained and renewed automatically; file: proxy.tls),\n"
    "STATE (obtaining, valid, renewing, failing, expired), VALID UNTIL and ISSUER.\n"
    "A failing row is followed by the reason (the certificate authority's own\n"
    "message) and when the next attempt is due. Without a tako.yaml (or --project)\n"
    "every project's certificates are listed. See docs/https.md.\n"
    "\n"
    "Options:\n" CLI_COMMON_HELP;

static void fmt_time(json_t *v, char *buf, size_t len)
{
    if (!json_is_integer(v)) {
        snprintf(buf, len, "-");
        return;
    }
    time_t t = (time_t)json_integer_value(v);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, len, "%Y-%m-%d %H:%M UTC", &tm);
}

int cmd_certs(int argc, char **argv)
{
    static const struct option opts[] = {CLI_COMMON_OPTS, {0}};
    struct cli_target t = {.cmd = "certs"};
    int o;
    optind = 1;
    opterr = 0;
    while ((o = getopt_long(argc, argv, CLI_COMMON_SHORT, opts, NULL)) != -1) {
        int r = cli_common_opt(&t, o, optarg);
        if (r < 0)
            return -r;
        if (!r)
            return cli_usage_error("certs", "unknown option '%s'", argv[optind - 1]);
    }
    if (optind < argc)
        return cli_usage_error("certs", "unexpected argument '%s'", argv[optind]);
    int rc = cli_target_load(&t, false, false);
    if (rc)
        return rc;
    const char *project = cli_target_project(&t);
    json_t *resp = NULL;
    if ((rc = client_get("certs", "/v1/certs", &resp))) {
        cli_target_free(&t);
        return rc;
    }
    json_t *all = json_object_get(resp, "certificates"), *rows = json_array();
    size_t i;
    json_t *r;
    json_array_foreach(all, i, r) {
        const char *p = json_string_value(json_object_get(r, "project"));
        if (!project || (p && strcmp(p, project) == 0))
            json_array_append(rows, r);
    }
    if (t.json) {
        json_t *out = json_pack("{s:O}", "certificates", rows);
        cli_print_json(out);
        json_decref(out);
    } else if (json_array_size(rows) == 0) {
        printf("No HTTPS domains%s%s. Set proxy.domain and proxy.email (or proxy.tls) in "
               "tako.yaml.\n", project ? " for project " : "", project ? project : "");
    } else {
        printf("%-28s %-12s %-7s %-10s %-21s %s\n", "DOMAIN", "SERVICE", "SOURCE", "STATE",
               "VALID UNTIL", "ISSUER");
        json_array_foreach(rows, i, r) {
            char until[40], next[40];
            fmt_time(json_object_get(r, "not_after"), until, sizeof(until));
            const char *iss = json_string_value(json_object_get(r, "issuer"));
            printf("%-28s %-12s %-7s %-10s %-21s %s\n",
                   json_string_value(json_object_get(r, "domain")),
                   json_string_value(json_object_get(r, "service")) ?: "-",
                   json_string_value(json_object_get(r, "source")),
                   json_string_value(json_object_get(r, "state")), until, iss ? iss : "-");
            const char *err = json_string_value(json_object_get(r, "error"));
            if (err) {
                printf("    error: %s\n", err);
                if (json_is_integer(json_object_get(r, "next_attempt"))) {
                    fmt_time(json_object_get(r, "next_attempt"), next, sizeof(next));
                    printf("    next attempt: %s\n", next);
                }
            }
        }
    }
    json_decref(rows);
    json_decref(resp);
    cli_target_free(&t);
    return EXIT_OK;
}
