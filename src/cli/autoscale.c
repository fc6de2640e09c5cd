/* autoscale.c — `tako autoscale`: bounds, targets, the last evaluation and
 * the recent decisions of each autoscaled service, with their reasons. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "cli/client.h"
#include "cli/common.h"
#include "core/util.h"

const char help_autoscale[] =
    "Usage: tako autoscale [ENV] [--service NAME] [-f FILE] [--output json]\n"
    "\n"
    "For each autoscaled service (replicas: {min, max, cpu: 70%, requests: 100}):\n"
    "current/desired replicas and bounds, the targets, the last evaluation with its\n"
    "inputs (CPU per ready replica, requests per second per replica), the raw\n"
    "recommendation and the rule or clamp that decided, then the recent changes,\n"
    "newest first. The algorithm is described in docs/autoscaling.md.\n"
    "\n"
    "Options:\n" CLI_COMMON_HELP;

static void print_service(json_t *s)
{
    char tgt[128] = "";
    json_t *c = json_object_get(s, "cpu_target"), *q = json_object_get(s, "requests_target");
    if (c)
        snprintf(tgt, sizeof(tgt), "cpu %.0f%%", json_number_value(c));
    if (q) {
        size_t l = strlen(tgt);
        snprintf(tgt + l, sizeof(tgt) - l, "%srequests %.0f/s per replica", l ? ", " : "",
                 json_number_value(q));
    }
    char iv[32], up[32], down[32];
    fmt_duration((uint64_t)json_integer_value(json_object_get(s, "interval_ms")), iv, sizeof(iv));
    fmt_duration((uint64_t)json_integer_value(json_object_get(s, "scale_up_stabilization_ms")), up,
                 sizeof(up));
    fmt_duration((uint64_t)json_integer_value(json_object_get(s, "scale_down_stabilization_ms")),
                 down, sizeof(down));
    printf("%s  %lld/%lld (%lld–%lld)  target: %s\n", json_string_value(json_object_get(s, "service")),
           (long long)json_integer_value(json_object_get(s, "running")),
           (long long)json_integer_value(json_object_get(s, "desired")),
           (long long)json_integer_value(json_object_get(s, "min")),
           (long long)json_integer_value(json_object_get(s, "max")), tgt);
    printf("  every %s, tolerance %.0f%%, stabilization up %s / down %s\n", iv,
           json_number_value(json_object_get(s, "tolerance")) * 100, up, down);
    json_t *last = json_object_get(s, "last");
    if (last) {
        printf("  last evaluation %s: %lld ready of %lld; %s\n    → %lld replicas (%s)\n",
               json_string_value(json_object_get(last, "time")),
               (long long)json_integer_value(json_object_get(last, "ready")),
               (long long)json_integer_value(json_object_get(last, "current")),
               json_string_value(json_object_get(last, "inputs")),
               (long long)json_integer_value(json_object_get(last, "desired")),
               json_string_value(json_object_get(last, "rule")));
    } else {
        printf("  not evaluated yet\n");
    }
    json_t *evs = json_object_get(s, "events");
    if (json_array_size(evs) == 0) {
        printf("  no changes yet\n");
        return;
    }
    printf("  changes (newest first):\n");
    size_t i;
    json_t *e;
    json_array_foreach(evs, i, e) {
        time_t ts = (time_t)(json_integer_value(json_object_get(e, "ts_ms")) / 1000);
        struct tm tm;
        char when[32];
        localtime_r(&ts, &tm);
        strftime(when, sizeof(when), "%H:%M:%S", &tm);
        printf("    %s  %s\n", when, json_string_value(json_object_get(e, "message")));
    }
}

int cmd_autoscale(int argc, char **argv)
{
    struct cli_target t = {.cmd = "autoscale"};
    char *pos[1] = {NULL};
    int prc = cli_parse_args(&t, argc, argv, pos, 1);
    if (prc)
        return prc;
    if (pos[0])
        t.env = pos[0];
    int rc = cli_target_load(&t, false, false);
    if (rc)
        return rc;
    char q[1024], path[1100];
    snprintf(path, sizeof(path), "/v1/autoscale%s", cli_query(&t, q, sizeof(q)));
    json_t *resp = NULL;
    if ((rc = client_get("autoscale", path, &resp))) {
        cli_target_free(&t);
        return rc;
    }
    json_t *svcs = json_object_get(resp, "services");
    if (t.json) {
        cli_print_json(resp);
    } else if (json_array_size(svcs) == 0) {
        printf("No autoscaled service%s. Set replicas: {min: 2, max: 10, cpu: 70%%} in tako.yaml.\n",
               t.service ? " by that name" : "s");
    } else {
        size_t i;
        json_t *s;
        json_array_foreach(svcs, i, s) {
            if (i)
                printf("\n");
            print_service(s);
        }
    }
    json_decref(resp);
    cli_target_free(&t);
    return EXIT_OK;
}
