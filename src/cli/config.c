/* config.c — `tako config explain`: the effective configuration with every
 * default filled in and every ${VAR} expanded, as YAML-shaped text (secrets
 * masked) or JSON. */
#include <ctype.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli/cli.h"
#include "config/config.h"
#include "core/util.h"

#define MASK "******"

/* Print S as a YAML scalar that tako reads back as the same text: plain
 * when that is unambiguous, else double-quoted (JSON escapes are valid YAML);
 * a literal $ is written $$ as it would be in tako.yaml. */
static void put_scalar(FILE *f, const char *s)
{
    static const char *reserved[] = {"true", "false", "yes", "no", "on", "off", "null", "~"};
    bool plain = *s && (isalnum((unsigned char)*s) || *s == '/' || *s == '.');
    for (const char *p = s; *p && plain; p++)
        if (!isalnum((unsigned char)*p) && !strchr("_./@:+-", *p))
            plain = false;
    if (plain && s[strlen(s) - 1] == ':')
        plain = false;
    for (size_t i = 0; i < ARRAY_LEN(reserved) && plain; i++)
        if (strcasecmp(s, reserved[i]) == 0)
            plain = false;
    if (plain) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p == '\n')
            fputs("\\n", f);
        else if (*p == '\t')
            fputs("\\t", f);
        else if (*p < 0x20 || *p == 0x7f)
            fprintf(f, "\\x%02x", *p);
        else if (*p == '$')
            fputs("$$", f);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

static void put_kv(FILE *f, int indent, const char *key, const char *value)
{
    fprintf(f, "%*s%s: ", indent, "", key);
    if (value)
        put_scalar(f, value);
    else
        fputc('~', f);
    fputc('\n', f);
}

/* Durations exactly, in the largest unit that divides them. */
static const char *dur(uint64_t ms, char *buf, size_t len)
{
    unsigned long long v = (unsigned long long)ms;
    if (v && v % 3600000 == 0)
        snprintf(buf, len, "%lluh", v / 3600000);
    else if (v && v % 60000 == 0)
        snprintf(buf, len, "%llum", v / 60000);
    else if (v % 1000 == 0)
        snprintf(buf, len, "%llus", v / 1000);
    else
        snprintf(buf, len, "%llums", v);
    return buf;
}

static const char *size(uint64_t b, char *buf, size_t len)
{
    unsigned long long v = (unsigned long long)b;
    if (v && v % (1ull << 30) == 0)
        snprintf(buf, len, "%llug", v >> 30);
    else if (v && v % (1ull << 20) == 0)
        snprintf(buf, len, "%llum", v >> 20);
    else if (v && v % 1024 == 0)
        snprintf(buf, len, "%lluk", v >> 10);
    else
        snprintf(buf, len, "%llu", v);
    return buf;
}

static void put_list(FILE *f, int indent, const char *key, char *const *v, size_t n)
{
    fprintf(f, "%*s%s: [", indent, "", key);
    for (size_t i = 0; i < n; i++) {
        if (i)
            fputs(", ", f);
        put_scalar(f, v[i]);
    }
    fputs("]\n", f);
}

static void explain_service(FILE *f, const struct cfg_service *s, bool show_secrets)
{
    char b[64];
    fprintf(f, "      %s:\n", s->name);
    if (s->argv) {
        size_t n = 0;
        while (s->argv[n])
            n++;
        put_list(f, 8, "command", s->argv, n);
    } else {
        fputs("        command: ~  # not set\n", f);
    }
    put_kv(f, 8, "build", s->build);
    put_kv(f, 8, "workdir", s->workdir);
    put_kv(f, 8, "image", s->image);
    if (s->port)
        fprintf(f, "        port: %u\n", s->port);
    else
        fputs("        port: ~  # none: a background worker\n", f);
    const struct cfg_autoscale *a = &s->autoscale;
    if (a->enabled) {
        fputs("        replicas:\n", f);
        fprintf(f, "          min: %u\n          max: %u\n", a->min, a->max);
        if (a->cpu_percent > 0)
            fprintf(f, "          cpu: %g%%\n", a->cpu_percent);
        if (a->requests_per_s > 0)
            fprintf(f, "          requests: %g\n", a->requests_per_s);
        fprintf(f, "          interval: %s\n", dur(a->interval_ms, b, sizeof(b)));
        fprintf(f, "          scaleUpStabilization: %s\n", dur(a->up_stabilization_ms, b, sizeof(b)));
        fprintf(f, "          scaleDownStabilization: %s\n",
                dur(a->down_stabilization_ms, b, sizeof(b)));
        fprintf(f, "          tolerance: %g%%\n", a->tolerance * 100);
    } else {
        fprintf(f, "        replicas: %u\n", s->replicas);
    }
    fputs("        loadBalancer:\n", f);
    fprintf(f, "          strategy: %s\n", cfg_lb_name(s->lb_strategy));
    put_kv(f, 10, "cookie", s->lb_cookie);
    fprintf(f, "          maxConnsPerReplica: %u%s\n", s->lb_max_conns, s->lb_max_conns ? "" : "  # no limit");
    fprintf(f, "          maxQueue: %u\n", s->lb_max_queue);
    fprintf(f, "          queueTimeout: %s\n", dur(s->lb_queue_timeout_ms, b, sizeof(b)));
    fprintf(f, "          bodyTimeout: %s\n", dur(s->lb_body_timeout_ms, b, sizeof(b)));
    fprintf(f, "          minBodyRate: %u\n", s->lb_min_body_rate);
    const struct cfg_health *h = &s->health;
    fputs("        healthCheck:\n", f);
    fprintf(f, "          enabled: %s\n", h->enabled ? "true" : "false");
    put_kv(f, 10, "path", h->path);
    fprintf(f, "          interval: %s\n", dur(h->interval_ms, b, sizeof(b)));
    fprintf(f, "          timeout: %s\n", dur(h->timeout_ms, b, sizeof(b)));
    fprintf(f, "          healthyThreshold: %u\n", h->healthy_threshold);
    fprintf(f, "          unhealthyThreshold: %u\n", h->unhealthy_threshold);
    fprintf(f, "          startPeriod: %s\n", dur(h->start_period_ms, b, sizeof(b)));
    const struct cfg_deploy *d = &s->deploy;
    fputs("        deploy:\n", f);
    fprintf(f, "          strategy: %s\n", cfg_deploy_strategy_name(d->strategy));
    fprintf(f, "          maxSurge: %u\n", d->max_surge);
    fprintf(f, "          maxUnavailable: %u\n", d->max_unavailable);
    fprintf(f, "          drainTimeout: %s\n", dur(d->drain_timeout_ms, b, sizeof(b)));
    fprintf(f, "          stopGracePeriod: %s\n", dur(d->stop_grace_ms, b, sizeof(b)));
    fputs("        proxy:\n", f);
    put_list(f, 10, "domains", s->proxy.domains, s->proxy.domains_len);
    fprintf(f, "          port: %u%s\n", s->proxy.port, s->proxy.port ? "" : "  # no dedicated listener");
    put_kv(f, 10, "email", s->proxy.email);
    if (s->proxy.acme)
        put_kv(f, 10, "acme", s->proxy.acme);
    if (s->proxy.tls_cert) {
        fputs("          tls:\n", f);
        put_kv(f, 12, "cert", s->proxy.tls_cert);
        put_kv(f, 12, "key", s->proxy.tls_key);
    }
    if (s->proxy.hsts_s)
        fprintf(f, "          hsts: %llus\n", (unsigned long long)s->proxy.hsts_s);
    if (s->env_len) {
        fputs("        env:\n", f);
        for (size_t i = 0; i < s->env_len; i++) {
            bool secret = !show_secrets && cfg_env_key_is_secret(s->env[i].key);
            put_kv(f, 10, s->env[i].key, secret ? MASK : s->env[i].value);
        }
    } else {
        fputs("        env: {}\n", f);
    }
    fprintf(f, "        restart: %s\n", cfg_restart_name(s->restart));
    fputs("        resources:\n", f);
    fprintf(f, "          memory: %s%s\n", size(s->resources.memory_bytes, b, sizeof(b)),
            s->resources.memory_bytes ? "" : "  # no limit");
    fprintf(f, "          cpus: %g%s\n", s->resources.cpus, s->resources.cpus > 0 ? "" : "  # no limit");
}

static void explain_text(FILE *f, const struct cfg_file *cf, const struct cfg_env *only,
                         bool show_secrets)
{
    fprintf(f, "# Effective configuration of %s", cf->path);
    if (only)
        fprintf(f, ", environment %s", only->name);
    fprintf(f, "\n# Every default filled in, every ${VAR} expanded%s.\n",
            show_secrets ? "" : "; secret env values shown as " MASK);
    fputs("project:\n", f);
    put_kv(f, 2, "name", cf->project.name);
    put_kv(f, 2, "version", cf->project.version);
    if (cf->servers_len) {
        fputs("servers:\n", f);
        for (size_t i = 0; i < cf->servers_len; i++) {
            const struct cfg_server *s = &cf->servers[i];
            fprintf(f, "  %s:\n", s->name);
            put_kv(f, 4, "host", s->host);
            put_kv(f, 4, "user", s->user);
            fprintf(f, "    port: %u\n", s->port);
            put_kv(f, 4, "sshKey", s->ssh_key);
            put_kv(f, 4, "hostKeys", s->strict_host_keys ? "strict" : "accept-new");
            if (s->labels_len) {
                fputs("    labels:\n", f);
                for (size_t j = 0; j < s->labels_len; j++) {
                    fputs("      ", f); /* label keys are free text: quote when needed */
                    put_scalar(f, s->labels[j].key);
                    fputs(": ", f);
                    put_scalar(f, s->labels[j].value);
                    fputc('\n', f);
                }
            }
        }
    }
    fputs("environments:\n", f);
    for (size_t i = 0; i < cf->envs_len; i++) {
        const struct cfg_env *e = &cf->envs[i];
        if (only && e != only)
            continue;
        fprintf(f, "  %s:\n", e->name);
        if (e->servers_len)
            put_list(f, 4, "servers", e->servers, e->servers_len);
        else
            fputs("    servers: []  # this machine\n", f);
        fprintf(f, "    http: %u\n", e->http_port);
        fprintf(f, "    https: %u\n", e->https_port);
        fputs("    services:\n", f);
        for (size_t j = 0; j < e->services_len; j++)
            explain_service(f, &e->services[j], show_secrets);
    }
}

static json_t *explain_json(const struct cfg_file *cf, const struct cfg_env *only,
                            bool show_secrets)
{
    json_t *j = cfg_file_to_json(cf);
    json_t *envs = json_object_get(j, "environments");
    if (only) {
        json_t *one = json_array();
        for (size_t i = 0; i < cf->envs_len; i++)
            if (&cf->envs[i] == only)
                json_array_append(one, json_array_get(envs, i));
        json_object_set_new(j, "environments", one);
        envs = one;
    }
    if (!show_secrets) {
        size_t i, k;
        json_t *e, *svc;
        json_array_foreach(envs, i, e)
        {
            json_array_foreach(json_object_get(e, "services"), k, svc)
            {
                const char *key;
                json_t *v;
                json_t *env = json_object_get(svc, "env");
                json_object_foreach(env, key, v)
                {
                    if (cfg_env_key_is_secret(key))
                        json_string_set(v, MASK);
                }
            }
        }
    }
    return j;
}

static int explain(int argc, char **argv)
{
    static const struct option opts[] = {
        {"file", required_argument, NULL, 'f'},
        {"env", required_argument, NULL, 'e'},
        {"output", required_argument, NULL, 'o'},
        {"show-secrets", no_argument, NULL, 'S'},
        {NULL, 0, NULL, 0},
    };
    const char *file = "tako.yaml", *env = NULL;
    bool json = false, show_secrets = false;
    int o;
    opterr = 0;
    optind = 1;
    while ((o = getopt_long(argc, argv, ":f:e:o:", opts, NULL)) != -1) {
        switch (o) {
        case 'f':
            file = optarg;
            break;
        case 'e':
            env = optarg;
            break;
        case 'o':
            if (strcmp(optarg, "json") == 0)
                json = true;
            else if (strcmp(optarg, "text") == 0)
                json = false;
            else
                return cli_usage_error("config", "unknown output format '%s' (expected text or json)",
                                       optarg);
            break;
        case 'S':
            show_secrets = true;
            break;
        case ':':
            return cli_usage_error("config", "option '%s' needs a value", argv[optind - 1]);
        default:
            return cli_usage_error("config", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) {
        if (env)
            return cli_usage_error("config", "environment given twice ('%s' and '%s')", env,
                                   argv[optind]);
        env = argv[optind++];
    }
    if (optind < argc)
        return cli_usage_error("config", "unexpected argument '%s'", argv[optind]);

    struct cfg_file *cf = NULL;
    const struct cfg_env *e = NULL;
    if (cfg_open(file, env, stderr, &cf, &e) < 0)
        return EXIT_USAGE;
    if (json) {
        json_t *j = explain_json(cf, e, show_secrets);
        json_dumpf(j, stdout, JSON_INDENT(2));
        fputc('\n', stdout);
        json_decref(j);
    } else {
        explain_text(stdout, cf, e, show_secrets);
    }
    cfg_free(cf);
    return EXIT_OK;
}

int cmd_config(int argc, char **argv)
{
    if (argc < 2)
        return cli_usage_error("config", "expected a subcommand: explain");
    if (strcmp(argv[1], "explain") == 0)
        return explain(argc - 1, argv + 1);
    return cli_usage_error("config", "unknown subcommand '%s' (expected explain)", argv[1]);
}
