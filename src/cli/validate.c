/* validate.c — `tako validate`: load tako.yaml, report every problem with its
 * file:line:col, or print a one-line summary per environment. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "config/config.h"

/* "web: 3 replicas, round_robin, port 3000" into F. */
static void summarize_service(const struct cfg_service *s, FILE *f)
{
    fprintf(f, "%s: ", s->name);
    if (s->autoscale.enabled) {
        fprintf(f, "%u-%u replicas (autoscale", s->autoscale.min, s->autoscale.max);
        if (s->autoscale.cpu_percent > 0)
            fprintf(f, " cpu %g%%", s->autoscale.cpu_percent);
        if (s->autoscale.requests_per_s > 0)
            fprintf(f, " %g req/s", s->autoscale.requests_per_s);
        fputc(')', f);
    } else {
        fprintf(f, "%u replica%s", s->replicas, s->replicas == 1 ? "" : "s");
    }
    if (s->port)
        fprintf(f, ", %s, port %u", cfg_lb_name(s->lb_strategy), s->port);
    else
        fputs(", worker", f);
}

static void summarize_env(const struct cfg_file *cf, const struct cfg_env *e, const char *file,
                          FILE *f)
{
    unsigned total = 0;
    for (size_t i = 0; i < e->services_len; i++)
        total += e->services[i].replicas;
    fprintf(f, "%s: valid: project %s, environment %s: %zu service%s, %u replica%s (", file,
            cf->project.name, e->name, e->services_len, e->services_len == 1 ? "" : "s", total,
            total == 1 ? "" : "s");
    for (size_t i = 0; i < e->services_len; i++) {
        if (i)
            fputs("; ", f);
        summarize_service(&e->services[i], f);
    }
    fputs(")\n", f);
}

int cmd_validate(int argc, char **argv)
{
    static const struct option opts[] = {
        {"file", required_argument, NULL, 'f'},
        {"env", required_argument, NULL, 'e'},
        {"quiet", no_argument, NULL, 'q'},
        {NULL, 0, NULL, 0},
    };
    const char *file = "tako.yaml", *env = NULL;
    bool quiet = false;
    int o;
    opterr = 0;
    optind = 1;
    while ((o = getopt_long(argc, argv, ":f:e:q", opts, NULL)) != -1) {
        switch (o) {
        case 'f':
            file = optarg;
            break;
        case 'e':
            env = optarg;
            break;
        case 'q':
            quiet = true;
            break;
        case ':':
            return cli_usage_error("validate", "option '%s' needs a value", argv[optind - 1]);
        default:
            return cli_usage_error("validate", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) {
        if (env)
            return cli_usage_error("validate", "environment given twice ('%s' and '%s')", env,
                                   argv[optind]);
        env = argv[optind++];
    }
    if (optind < argc)
        return cli_usage_error("validate", "unexpected argument '%s'", argv[optind]);

    int ret = EXIT_USAGE;
    struct cfg_diag *d = cfg_diag_new();
    struct cfg_file *f = cfg_load_file(file, d);
    const struct cfg_env *e = NULL;
    if (f && env && !(e = cfg_select_env(f, env, d))) {
        cfg_free(f);
        f = NULL;
    }
    if (!quiet || !f)
        cfg_diag_print(d, stderr);
    if (!f) {
        size_t n = cfg_diag_errors(d);
        fprintf(stderr, "%s: %zu error%s\n", file, n, n == 1 ? "" : "s");
        goto out;
    }
    if (!quiet) {
        if (e)
            summarize_env(f, e, file, stdout);
        else
            for (size_t i = 0; i < f->envs_len; i++)
                summarize_env(f, &f->envs[i], file, stdout);
    }
    ret = EXIT_OK;
out:
    cfg_free(f);
    cfg_diag_free(d);
    return ret;
}
