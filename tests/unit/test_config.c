/* test_config.c — tako.yaml loading: keys, defaults, ${VAR}/.env, every error
 * message with its line:col, environment selection, JSON round trip. */
#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/config.h"
#include "config/internal.h"
#include "core/util.h"
#include "unit.h"

static const char SEED[] = "project:\n"
                           "  name: scaling\n"
                           "  version: 1.0.0\n"
                           "servers:\n"
                           "  prod:\n"
                           "    host: ${SERVER_HOST}\n"
                           "    user: root\n"
                           "    sshKey: ~/.ssh/id_ed25519\n"
                           "environments:\n"
                           "  production:\n"
                           "    servers:\n"
                           "      - prod\n"
                           "    services:\n"
                           "      web:\n"
                           "        build: .\n"
                           "        port: 3000\n"
                           "        replicas: 3\n"
                           "        proxy:\n"
                           "          domain: scaling.${SERVER_HOST}.sslip.io\n"
                           "          email: admin@example.com\n"
                           "        loadBalancer:\n"
                           "          strategy: round_robin\n"
                           "        env:\n"
                           "          NODE_ENV: production\n";

/* A fake process environment: tests never depend on the real one. */
static const char *fake_env(const char *name)
{
    if (strcmp(name, "SERVER_HOST") == 0)
        return "203.0.113.7";
    if (strcmp(name, "EMPTY") == 0)
        return "";
    if (strcmp(name, "FROM_BOTH") == 0)
        return "process";
    return NULL;
}

static const char *no_env(const char *name)
{
    (void)name;
    return NULL;
}

static char *tmpdir(void)
{
    char *d = xstrdup("/tmp/tako-cfg-XXXXXX");
    if (!mkdtemp(d))
        abort();
    return d;
}

static void write_file(const char *dir, const char *name, const char *text)
{
    char *p = xasprintf("%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    if (!f)
        abort();
    fputs(text, f);
    fclose(f);
    free(p);
}

static void rm_rf(const char *dir)
{
    char *cmd = xasprintf("rm -rf '%s'", dir);
    if (system(cmd) != 0)
        abort();
    free(cmd);
}

/* Load TEXT with the fake environment from /tmp; *text_out = diagnostics. */
static struct cfg_file *load_env(const char *text, const char *(*env)(const char *),
                                 char **text_out)
{
    struct cfg_diag *d = cfg_diag_new();
    struct cfg_file *f = cfg_load_buffer("tako.yaml", text, strlen(text), "/tmp", env, d);
    *text_out = cfg_diag_text(d);
    cfg_diag_free(d);
    return f;
}

static struct cfg_file *load(const char *text, char **diag) { return load_env(text, fake_env, diag); }

/* A minimal valid file around one service body (indented 6 spaces). */
static char *with_service(const char *body)
{
    return xasprintf("project:\n  name: t\nenvironments:\n  prod:\n    services:\n      web:\n%s",
                     body);
}

/* Expect a load of the service BODY to fail with NEEDLE in the messages. */
static int fails_with(const char *body, const char *needle)
{
    char *y = with_service(body), *diag = NULL;
    struct cfg_file *f = load(y, &diag);
    int ok = !f && strstr(diag, needle) != NULL;
    if (!ok)
        fprintf(stderr, "    body:\n%s    diagnostics:\n%s    wanted: %s\n", body, diag, needle);
    cfg_free(f);
    free(diag);
    free(y);
    return ok;
}

static struct cfg_file *svc_ok(const char *body, const struct cfg_service **s)
{
    char *y = with_service(body), *diag = NULL;
    struct cfg_file *f = load(y, &diag);
    if (!f)
        fprintf(stderr, "    unexpected errors:\n%s", diag);
    free(diag);
    free(y);
    *s = f ? &f->envs[0].services[0] : NULL;
    return f;
}

TEST(seed_example_loads_with_defaults)
{
    char *diag;
    struct cfg_file *f = load(SEED, &diag);
    CHECK(f);
    CHECK_STR(f->project.name, "scaling");
    CHECK_STR(f->project.version, "1.0.0");
    CHECK_STR(f->dir, "/tmp");
    CHECK_INT(f->servers_len, 1);
    CHECK_STR(f->servers[0].name, "prod");
    CHECK_STR(f->servers[0].host, "203.0.113.7");
    CHECK_STR(f->servers[0].user, "root");
    CHECK_INT(f->servers[0].port, 22);
    CHECK_STR(f->servers[0].ssh_key, "~/.ssh/id_ed25519");
    CHECK_INT(f->envs_len, 1);
    const struct cfg_env *e = &f->envs[0];
    CHECK_STR(e->name, "production");
    CHECK_INT(e->servers_len, 1);
    CHECK_STR(e->servers[0], "prod");
    CHECK(e->servers[1] == NULL);
    CHECK_INT(e->http_port, geteuid() == 0 ? 80 : 8080);
    CHECK_INT(e->services_len, 1);
    const struct cfg_service *s = &e->services[0];
    CHECK_STR(s->name, "web");
    CHECK(s->argv == NULL);
    CHECK_STR(s->build, "/tmp");
    CHECK_STR(s->workdir, "/tmp");
    CHECK(s->image == NULL);
    CHECK_INT(s->port, 3000);
    CHECK_INT(s->replicas, 3);
    CHECK(!s->autoscale.enabled);
    CHECK_INT(s->lb_strategy, CFG_LB_ROUND_ROBIN);
    CHECK_STR(s->lb_cookie, "tako_sticky");
    CHECK(s->health.enabled);
    CHECK_STR(s->health.path, "/health");
    CHECK_INT(s->health.interval_ms, 2000);
    CHECK_INT(s->health.timeout_ms, 1000);
    CHECK_INT(s->health.healthy_threshold, 1);
    CHECK_INT(s->health.unhealthy_threshold, 3);
    CHECK_INT(s->health.start_period_ms, 0);
    CHECK_INT(s->deploy.strategy, CFG_DEPLOY_ROLLING);
    CHECK_INT(s->deploy.max_surge, 1);
    CHECK_INT(s->deploy.max_unavailable, 0);
    CHECK_INT(s->deploy.drain_timeout_ms, 30000);
    CHECK_INT(s->deploy.stop_grace_ms, 10000);
    CHECK_INT(s->proxy.domains_len, 1);
    CHECK_STR(s->proxy.domains[0], "scaling.203.0.113.7.sslip.io");
    CHECK(s->proxy.domains[1] == NULL);
    CHECK_INT(s->proxy.port, 0);
    CHECK_STR(s->proxy.email, "admin@example.com");
    CHECK_INT(s->env_len, 1);
    CHECK_STR(s->env[0].key, "NODE_ENV");
    CHECK_STR(s->env[0].value, "production");
    CHECK_INT(s->restart, CFG_RESTART_ALWAYS);
    CHECK_INT(s->resources.memory_bytes, 0);
    /* No command: a warning, not an error. */
    CHECK_CONTAINS(diag, "tako.yaml:14:7: warning: environments.production.services.web: no "
                         "command or image");
    free(diag);
    cfg_free(f);
}

TEST(seed_without_variable_names_both_places)
{
    char *diag;
    struct cfg_file *f = load_env(SEED, no_env, &diag);
    CHECK(!f);
    CHECK_CONTAINS(diag, "tako.yaml:6:11: servers.prod.host: variable SERVER_HOST is not set");
    CHECK_CONTAINS(diag, "tako.yaml:19:27: environments.production.services.web.proxy.domain: "
                         "variable SERVER_HOST is not set");
    free(diag);
}

TEST(unknown_strategy_message)
{
    CHECK(fails_with("        port: 3000\n        loadBalancer:\n          strategy: fastest\n",
                     "tako.yaml:9:21: environments.prod.services.web.loadBalancer.strategy: "
                     "unknown strategy \"fastest\" (expected round_robin, least_connections, "
                     "ip_hash, random, sticky, p2c)\n"));
    CHECK(fails_with("        port: 3000\n        loadBalancer:\n          strategy: roundrobin\n",
                     "did you mean \"round_robin\"?"));
}

TEST(strategies_all_parse)
{
    static const char *names[] = {"round_robin", "least_connections", "ip_hash",
                                  "random",      "sticky",            "p2c"};
    for (size_t i = 0; i < ARRAY_LEN(names); i++) {
        char *body = xasprintf("        port: 3000\n        loadBalancer: {strategy: %s}\n", names[i]);
        const struct cfg_service *s;
        struct cfg_file *f = svc_ok(body, &s);
        free(body);
        CHECK(f);
        CHECK_INT(s->lb_strategy, i);
        CHECK_STR(cfg_lb_name(s->lb_strategy), names[i]);
        cfg_free(f);
    }
    enum cfg_lb lb;
    CHECK_INT(cfg_lb_parse("p2c", &lb), 0);
    CHECK_INT(lb, CFG_LB_P2C);
    CHECK_INT(cfg_lb_parse("nope", &lb), -EINVAL);
}

TEST(unknown_key_did_you_mean)
{
    CHECK(fails_with("        port: 3000\n        loadBalancr:\n          strategy: random\n",
                     "tako.yaml:8:9: environments.prod.services.web.loadBalancr: unknown key "
                     "\"loadBalancr\"; did you mean \"loadBalancer\"?"));
    /* Far from every key: the list of keys instead. */
    CHECK(fails_with("        port: 3000\n        zzzzzzzzzz: 1\n",
                     "unknown key \"zzzzzzzzzz\" (expected one of: command, build"));
    char *diag;
    struct cfg_file *f = load("projet:\n  name: x\n", &diag);
    CHECK(!f);
    CHECK_CONTAINS(diag, "tako.yaml:1:1: projet: unknown key \"projet\"; did you mean \"project\"?");
    free(diag);
}

TEST(all_errors_in_one_pass)
{
    char *diag;
    struct cfg_file *f = load("project:\n  name: Bad_Name\n"
                              "environments:\n  prod:\n    services:\n      web:\n"
                              "        port: 70000\n"
                              "        replicas: many\n"
                              "        restart: sometimes\n"
                              "        healthCheck:\n          interval: 5 s\n"
                              "        resources:\n          memory: lots\n",
                              &diag);
    CHECK(!f);
    CHECK_CONTAINS(diag, "tako.yaml:2:9: project.name: invalid project name \"Bad_Name\"");
    CHECK_CONTAINS(diag, "tako.yaml:7:15: environments.prod.services.web.port: expected an integer "
                         "from 1 to 65535, got \"70000\"");
    CHECK_CONTAINS(diag, "tako.yaml:8:19: environments.prod.services.web.replicas: expected an "
                         "integer from 0 to 1000, got \"many\"");
    CHECK_CONTAINS(diag, "tako.yaml:9:18: environments.prod.services.web.restart: unknown restart "
                         "policy \"sometimes\" (expected always, on-failure, never)");
    CHECK_CONTAINS(diag, "tako.yaml:11:21: environments.prod.services.web.healthCheck.interval: "
                         "expected a duration like 500ms, 10s or 2m, got \"5 s\"");
    CHECK_CONTAINS(diag, "tako.yaml:13:19: environments.prod.services.web.resources.memory: "
                         "expected a size like 512m or 1g, got \"lots\"");
    free(diag);
}

TEST(wrong_types_name_the_expected_type)
{
    CHECK(fails_with("        port: [1, 2]\n", "port: expected an integer, got a list"));
    CHECK(fails_with("        port: 3000\n        proxy: example.com\n",
                     "proxy: expected a mapping, got a scalar"));
    CHECK(fails_with("        port: 3000\n        healthCheck: {enabled: maybe}\n",
                     "healthCheck.enabled: expected true or false, got \"maybe\""));
    CHECK(fails_with("        port: 3000\n        env: [A, B]\n", "env: expected a mapping, got a list"));
    CHECK(fails_with("        command: {a: b}\n",
                     "command: expected a string or a list of strings, got a mapping"));
    CHECK(fails_with("        port: 3000\n        replicas: {min: 1, max: 3, cpu: hot}\n",
                     "replicas.cpu: expected a percentage from 1% to 10000% like 70%, got \"hot\""));
    CHECK(fails_with("        port: 3000\n        resources: {cpus: -1}\n",
                     "resources.cpus: expected a number from 0 to 1024, got \"-1\""));
    char *diag;
    struct cfg_file *f = load("- a\n- b\n", &diag);
    CHECK(!f);
    CHECK_CONTAINS(diag, "tako.yaml:1:1: expected a mapping, got a list");
    free(diag);
}

TEST(yaml_syntax_error_has_line_col)
{
    char *diag;
    struct cfg_file *f = load("project:\n  name: x\n  bad: [1, 2\nenvironments: {}\n", &diag);
    CHECK(!f);
    CHECK_CONTAINS(diag, "tako.yaml:4:");
    CHECK_CONTAINS(diag, "YAML syntax error:");
    free(diag);
    f = load("project:\n\tname: x\n", &diag);
    CHECK(!f);
    CHECK_CONTAINS(diag, "tako.yaml:2:1: YAML syntax error:");
    free(diag);
}

TEST(empty_and_multi_document_files)
{
    char *diag;
    struct cfg_file *f = load("", &diag);
    CHECK(!f);
    CHECK_CONTAINS(diag, "tako.yaml:1:1: empty file");
    free(diag);
    f = load("# only a comment\n", &diag);
    CHECK(!f);
    CHECK_CONTAINS(diag, "empty file");
    free(diag);
    char *two = xasprintf("%s---\nproject: {name: y}\n", SEED);
    f = load(two, &diag);
    CHECK(!f);
    CHECK_CONTAINS(diag, "tako.yaml:25:1: a second YAML document");
    free(diag);
    free(two);
}

TEST(missing_required_parts)
{
    char *diag;
    struct cfg_file *f = load("environments:\n  prod:\n    services:\n      web: {port: 80}\n", &diag);
    CHECK(!f);
    CHECK_CONTAINS(diag, "tako.yaml:1:1: project.name: required");
    free(diag);
    f = load("project: {name: x}\n", &diag);
    CHECK(!f);
    CHECK_CONTAINS(diag, "environments: no environments: define at least one");
    free(diag);
    f = load("project: {name: x}\nenvironments:\n  prod:\n    servers: []\n", &diag);
    CHECK(!f);
    CHECK_CONTAINS(diag, "tako.yaml:4:5: environments.prod.services: no services");
    free(diag);
}

TEST(duplicate_keys)
{
    CHECK(fails_with("        port: 3000\n        port: 3001\n",
                     "tako.yaml:8:9: environments.prod.services.web.port: duplicate key \"port\" "
                     "(first at line 7)"));
    char *diag;
    struct cfg_file *f = load("project: {name: x}\nenvironments:\n  a:\n    services: {w: {port: 1}}\n"
                              "  a:\n    services: {w: {port: 2}}\n",
                              &diag);
    CHECK(!f);
    CHECK_CONTAINS(diag, "tako.yaml:5:3: environments.a: duplicate key \"a\" (first at line 3)");
    free(diag);
}

TEST(variables_defaults_and_escapes)
{
    const struct cfg_service *s;
    struct cfg_file *f = svc_ok("        port: ${PORT_X:-4000}\n"
                                "        command: echo ${EMPTY:-fallback} $$HOME $PORT\n"
                                "        env:\n          E: \"${EMPTY}\"\n          H: ${SERVER_HOST}\n",
                                &s);
    CHECK(f);
    CHECK_INT(s->port, 4000);
    CHECK_STR(s->argv[0], "echo");
    CHECK_STR(s->argv[1], "fallback");
    CHECK_STR(s->argv[2], "$HOME");
    CHECK_STR(s->argv[3], "$PORT");
    CHECK_STR(s->env[0].value, "");
    CHECK_STR(s->env[1].value, "203.0.113.7");
    cfg_free(f);
    CHECK(fails_with("        port: 3000\n        image: ${EMPTY-x}\n", "invalid variable name"));
    CHECK(fails_with("        port: 3000\n        image: \"x${NOPE\"\n",
                     "tako.yaml:8:18: environments.prod.services.web.image: unterminated \"${\""));
    CHECK(fails_with("        port: 3000\n        image: a${1BAD}\n",
                     "tako.yaml:8:17: environments.prod.services.web.image: invalid variable name "
                     "\"1BAD\""));
}

TEST(dotenv_beside_file_and_environment_wins)
{
    char *dir = tmpdir();
    write_file(dir, ".env",
               "# comment\n"
               "export SERVER_HOST=from-dotenv\n"
               "FROM_BOTH=dotenv\n"
               "QUOTED=\"a b # not a comment\"\n"
               "SINGLE='x$y'\n"
               "PLAIN=value # a comment\n");
    write_file(dir, "tako.yaml",
               "project: {name: t}\nenvironments:\n  p:\n    services:\n      web:\n"
               "        port: 1\n        env:\n          A: ${FROM_BOTH}\n          B: ${QUOTED}\n"
               "          C: ${SINGLE}\n          D: ${PLAIN}\n          E: ${SERVER_HOST}\n");
    char *path = xasprintf("%s/tako.yaml", dir);
    setenv("FROM_BOTH", "process", 1);
    unsetenv("SERVER_HOST");
    struct cfg_diag *d = cfg_diag_new();
    struct cfg_file *f = cfg_load_file(path, d);
    unsetenv("FROM_BOTH");
    CHECK(f);
    const struct cfg_service *s = &f->envs[0].services[0];
    CHECK_STR(f->dir, dir);
    CHECK_STR(f->path, path);
    CHECK_STR(s->env[0].value, "process");
    CHECK_STR(s->env[1].value, "a b # not a comment");
    CHECK_STR(s->env[2].value, "x$y");
    CHECK_STR(s->env[3].value, "value");
    CHECK_STR(s->env[4].value, "from-dotenv");
    cfg_free(f);
    cfg_diag_free(d);

    /* A broken .env line is reported with its own file:line. */
    write_file(dir, ".env", "GOOD=1\nthis is not an assignment\n");
    d = cfg_diag_new();
    f = cfg_load_file(path, d);
    CHECK(!f);
    char *text = cfg_diag_text(d);
    char *want = xasprintf("%s/.env:2:1: expected KEY=VALUE", dir);
    CHECK_CONTAINS(text, want);
    free(want);
    free(text);
    cfg_diag_free(d);
    free(path);
    rm_rf(dir);
    free(dir);
}

TEST(dotenv_parser_rules)
{
    struct cfg_kv *kv = NULL;
    size_t n = 0;
    struct cfg_diag *d = cfg_diag_new();
    static const char text[] = "A=1\r\n  B = two  \nC=\"line\\nbreak\"\nA=3\nD=\nE='unterminated\n";
    size_t errs = cfg__dotenv_parse(".env", text, sizeof(text) - 1, &kv, &n, d);
    CHECK_INT(errs, 1);
    CHECK_INT(n, 4);
    CHECK_STR(kv[0].key, "A");
    CHECK_STR(kv[0].value, "3");
    CHECK_STR(kv[1].value, "two");
    CHECK_STR(kv[2].value, "line\nbreak");
    CHECK_STR(kv[3].key, "D");
    CHECK_STR(kv[3].value, "");
    char *t = cfg_diag_text(d);
    CHECK_CONTAINS(t, ".env:6:1: unterminated '-quoted value of E");
    free(t);
    for (size_t i = 0; i < n; i++) {
        free(kv[i].key);
        free(kv[i].value);
    }
    free(kv);
    cfg_diag_free(d);
}

TEST(autoscale_form)
{
    const struct cfg_service *s;
    struct cfg_file *f = svc_ok("        port: 3000\n        replicas:\n          min: 2\n"
                                "          max: 10\n          cpu: 70%\n          requests: 50\n"
                                "          interval: 5s\n          scaleUpStabilization: 30s\n"
                                "          scaleDownStabilization: 2m\n          tolerance: 5%\n",
                                &s);
    CHECK(f);
    CHECK(s->autoscale.enabled);
    CHECK_INT(s->autoscale.min, 2);
    CHECK_INT(s->autoscale.max, 10);
    CHECK_INT(s->replicas, 2);
    CHECK((int)s->autoscale.cpu_percent == 70);
    CHECK((int)s->autoscale.requests_per_s == 50);
    CHECK_INT(s->autoscale.interval_ms, 5000);
    CHECK_INT(s->autoscale.up_stabilization_ms, 30000);
    CHECK_INT(s->autoscale.down_stabilization_ms, 120000);
    CHECK(s->autoscale.tolerance > 0.049 && s->autoscale.tolerance < 0.051);
    cfg_free(f);
    f = svc_ok("        port: 3000\n        replicas: {max: 4, cpu: 80%}\n", &s);
    CHECK(f);
    CHECK_INT(s->autoscale.min, 1);
    CHECK_INT(s->autoscale.interval_ms, 15000);
    CHECK_INT(s->autoscale.down_stabilization_ms, 300000);
    CHECK(s->autoscale.requests_per_s == 0);
    cfg_free(f);
    CHECK(fails_with("        port: 3000\n        replicas: {min: 5, max: 2, cpu: 70%}\n",
                     "replicas.max: max (2) must be at least min (5)"));
    CHECK(fails_with("        port: 3000\n        replicas: {min: 1, max: 2}\n",
                     "replicas: autoscaling needs a target: cpu"));
    CHECK(fails_with("        port: 3000\n        replicas: {min: 1, cpu: 50%}\n",
                     "replicas: autoscaling needs max"));
    CHECK(fails_with("        port: 3000\n        replicas: {min: 1, max: 2, cpu: 5%, maxx: 3}\n",
                     "replicas.maxx: unknown key \"maxx\"; did you mean \"max\"?"));
    CHECK(fails_with("        port: 3000\n        replicas: 1001\n", "from 0 to 1000"));
}

TEST(health_settings_and_aliases)
{
    const struct cfg_service *s;
    struct cfg_file *f = svc_ok("        port: 3000\n        healthCheck:\n          path: /ready\n"
                                "          interval: 500ms\n          timeout: 250ms\n"
                                "          healthyThreshold: 2\n          retries: 5\n"
                                "          startPeriod: 3s\n",
                                &s);
    CHECK(f);
    CHECK_STR(s->health.path, "/ready");
    CHECK_INT(s->health.interval_ms, 500);
    CHECK_INT(s->health.timeout_ms, 250);
    CHECK_INT(s->health.healthy_threshold, 2);
    CHECK_INT(s->health.unhealthy_threshold, 5);
    CHECK_INT(s->health.start_period_ms, 3000);
    cfg_free(f);
    /* tako-cli's loadBalancer.healthCheck maps onto the same settings;
     * healthCheck wins where both set a key. */
    f = svc_ok("        port: 3000\n        loadBalancer:\n          healthCheck: {enabled: true, "
               "path: /lb, interval: 10s}\n        healthCheck: {interval: 3s}\n",
               &s);
    CHECK(f);
    CHECK_STR(s->health.path, "/lb");
    CHECK_INT(s->health.interval_ms, 3000);
    cfg_free(f);
    f = svc_ok("        port: 3000\n        healthCheck: {enabled: false}\n", &s);
    CHECK(f);
    CHECK(!s->health.enabled);
    cfg_free(f);
    CHECK(fails_with("        port: 3000\n        healthCheck: {path: health}\n",
                     "healthCheck.path: must start with /"));
    CHECK(fails_with("        port: 3000\n        healthCheck: {interval: 1s, timeout: 2s}\n",
                     "healthCheck.timeout: timeout (2000ms) must not be longer than "
                     "environments.prod.services.web.healthCheck.interval (1000ms, at"));
    f = svc_ok("        port: 3000\n        healthCheck: {interval: 500ms}\n", &s);
    CHECK(f);
    CHECK_INT(s->health.interval_ms, 500);
    CHECK_INT(s->health.timeout_ms, 500);
    cfg_free(f);
    CHECK(fails_with("        port: 3000\n        healthCheck: {unhealthyThreshold: 2, retries: 3}\n",
                     "retries is another name for unhealthyThreshold"));
    CHECK(fails_with("        port: 3000\n        healthCheck: {healthyThreshold: 0}\n",
                     "healthyThreshold: expected an integer from 1 to 100"));
}

TEST(worker_without_port)
{
    const struct cfg_service *s;
    struct cfg_file *f = svc_ok("        command: ./worker --queue jobs\n        replicas: 2\n", &s);
    CHECK(f);
    CHECK_INT(s->port, 0);
    CHECK(!s->health.enabled);
    CHECK_STR(s->argv[0], "./worker");
    CHECK_STR(s->argv[2], "jobs");
    CHECK(s->argv[3] == NULL);
    cfg_free(f);
    CHECK(fails_with("        command: w\n        healthCheck: {enabled: true}\n",
                     "an HTTP health check needs the service's port"));
    CHECK(fails_with("        command: w\n        proxy: {domain: a.example.com}\n",
                     "proxy needs the service's port"));
    char *y = with_service("        command: w\n        healthCheck: {path: /x}\n"), *diag;
    f = load(y, &diag);
    CHECK(f);
    CHECK_CONTAINS(diag, "warning: environments.prod.services.web.healthCheck: ignored");
    free(diag);
    free(y);
    cfg_free(f);
}

TEST(deploy_settings)
{
    const struct cfg_service *s;
    struct cfg_file *f = svc_ok("        port: 1\n        deploy:\n          strategy: recreate\n"
                                "          maxSurge: 2\n          maxUnavailable: 1\n"
                                "          drainTimeout: 1m\n          stopGracePeriod: 1500ms\n",
                                &s);
    CHECK(f);
    CHECK_INT(s->deploy.strategy, CFG_DEPLOY_RECREATE);
    CHECK_INT(s->deploy.max_surge, 2);
    CHECK_INT(s->deploy.max_unavailable, 1);
    CHECK_INT(s->deploy.drain_timeout_ms, 60000);
    CHECK_INT(s->deploy.stop_grace_ms, 1500);
    cfg_free(f);
    CHECK(fails_with("        port: 1\n        deploy: {maxSurge: 0, maxUnavailable: 0}\n",
                     "deploy: maxSurge and maxUnavailable cannot both be 0"));
    CHECK(fails_with("        port: 1\n        deploy: {strategy: blue-green}\n",
                     "unknown deploy strategy \"blue-green\" (expected rolling, recreate)"));
}

TEST(load_balancer_limits)
{
    const struct cfg_service *s;
    struct cfg_file *f = svc_ok("        port: 1\n", &s);
    CHECK(f);
    CHECK_INT(s->lb_max_conns, 0);
    CHECK_INT(s->lb_max_queue, 256);
    CHECK_INT(s->lb_queue_timeout_ms, 5000);
    CHECK_INT(s->lb_body_timeout_ms, 20000);
    CHECK_INT(s->lb_min_body_rate, 500);
    cfg_free(f);
    f = svc_ok("        port: 1\n        loadBalancer: {maxConnsPerReplica: 8, maxQueue: 50, "
               "queueTimeout: 2s, bodyTimeout: 30s, minBodyRate: 1000}\n",
               &s);
    CHECK(f);
    CHECK_INT(s->lb_max_conns, 8);
    CHECK_INT(s->lb_max_queue, 50);
    CHECK_INT(s->lb_queue_timeout_ms, 2000);
    CHECK_INT(s->lb_body_timeout_ms, 30000);
    CHECK_INT(s->lb_min_body_rate, 1000);
    json_t *j = cfg_service_to_json(s);
    char err[256];
    struct cfg_service *back = cfg_service_from_json(j, err, sizeof(err));
    CHECK(back);
    CHECK_INT(back->lb_max_conns, 8);
    CHECK_INT(back->lb_body_timeout_ms, 30000);
    cfg_service_free(back);
    /* a revision stored before these keys existed still loads, with defaults */
    json_object_del(json_object_get(j, "load_balancer"), "max_queue");
    back = cfg_service_from_json(j, err, sizeof(err));
    CHECK(back);
    CHECK_INT(back->lb_max_queue, 256);
    cfg_service_free(back);
    json_decref(j);
    cfg_free(f);
    CHECK(fails_with("        port: 1\n        loadBalancer: {maxQueue: 0}\n",
                     "loadBalancer.maxQueue: expected an integer from 1 to 1000000, got \"0\""));
}

TEST(proxy_domains)
{
    const struct cfg_service *s;
    struct cfg_file *f = svc_ok("        port: 1\n        proxy:\n          domains: [A.example.com, "
                                "'*.b.example.com']\n          port: 9443\n",
                                &s);
    CHECK(f);
    CHECK_INT(s->proxy.domains_len, 2);
    CHECK_STR(s->proxy.domains[0], "a.example.com");
    CHECK_STR(s->proxy.domains[1], "*.b.example.com");
    CHECK_INT(s->proxy.port, 9443);
    CHECK(s->proxy.email == NULL);
    cfg_free(f);
    CHECK(fails_with("        port: 1\n        proxy: {domain: a.io, domains: [b.io]}\n",
                     "give either domain or domains, not both"));
    CHECK(fails_with("        port: 1\n        proxy: {domain: 'https://a.io'}\n",
                     "invalid domain \"https://a.io\""));
    CHECK(fails_with("        port: 1\n        proxy: {domain: a.io, email: nobody}\n",
                     "proxy.email: expected an e-mail address"));
    char *diag;
    struct cfg_file *g = load("project: {name: x}\nenvironments:\n  p:\n    http: 8000\n    services:\n"
                              "      a: {port: 1, proxy: {domain: x.io, port: 8000}}\n"
                              "      b: {port: 2, proxy: {domain: x.io}}\n",
                              &diag);
    CHECK(!g);
    CHECK_CONTAINS(diag, "services a and b both claim domain x.io");
    CHECK_CONTAINS(diag, "service a: proxy.port 8000 is the environment's shared http port");
    free(diag);
}

TEST(env_and_env_file)
{
    char *dir = tmpdir();
    write_file(dir, "app.env", "A=from-file\nB=from-file\n");
    write_file(dir, "tako.yaml", "project: {name: t}\nenvironments:\n  p:\n    services:\n      web:\n"
                                 "        port: 1\n        envFile: app.env\n"
                                 "        env:\n          B: from-yaml\n          C: 3\n          D:\n");
    char *path = xasprintf("%s/tako.yaml", dir);
    struct cfg_diag *d = cfg_diag_new();
    struct cfg_file *f = cfg_load_file(path, d);
    CHECK(f);
    const struct cfg_service *s = &f->envs[0].services[0];
    CHECK_INT(s->env_len, 4);
    CHECK_STR(s->env[0].key, "A");
    CHECK_STR(s->env[0].value, "from-file");
    CHECK_STR(s->env[1].key, "B");
    CHECK_STR(s->env[1].value, "from-yaml");
    CHECK_STR(s->env[2].value, "3");
    CHECK_STR(s->env[3].key, "D");
    CHECK_STR(s->env[3].value, "");
    cfg_free(f);
    cfg_diag_free(d);
    free(path);
    rm_rf(dir);
    free(dir);
    CHECK(fails_with("        port: 1\n        envFile: /nonexistent/x.env\n",
                     "envFile: cannot read /nonexistent/x.env: No such file or directory"));
    CHECK(fails_with("        port: 1\n        env: {1BAD: x}\n", "invalid variable name \"1BAD\""));
}

TEST(restart_and_resources)
{
    const struct cfg_service *s;
    struct cfg_file *f = svc_ok("        port: 1\n        restart: on-failure\n"
                                "        resources: {memory: 512m, cpus: 1.5}\n",
                                &s);
    CHECK(f);
    CHECK_INT(s->restart, CFG_RESTART_ON_FAILURE);
    CHECK_INT(s->resources.memory_bytes, 512ull * 1024 * 1024);
    CHECK(s->resources.cpus > 1.49 && s->resources.cpus < 1.51);
    cfg_free(f);
    f = svc_ok("        port: 1\n        restart: never\n", &s);
    CHECK(f);
    CHECK_INT(s->restart, CFG_RESTART_NEVER);
    cfg_free(f);
    CHECK(fails_with("        port: 1\n        resources: {memory: 1k}\n", "must be at least 4m"));
}

TEST(build_workdir_image_paths)
{
    char *dir = tmpdir();
    char *sub = xasprintf("%s/app", dir);
    mkdir(sub, 0755);
    write_file(dir, "tako.yaml", "project: {name: t}\nenvironments:\n  p:\n    services:\n      web:\n"
                                 "        port: 1\n        build: ./app/\n        workdir: ../app/./x\n"
                                 "        image: nginx:1.27\n"
                                 "      other: {port: 2, build: missing, command: x}\n");
    char *path = xasprintf("%s/tako.yaml", dir);
    struct cfg_diag *d = cfg_diag_new();
    struct cfg_file *f = cfg_load_file(path, d);
    CHECK(!f);
    char *t = cfg_diag_text(d);
    char *want = xasprintf("environments.p.services.other.build: directory %s/missing does not exist",
                           dir);
    CHECK_CONTAINS(t, want);
    free(want);
    free(t);
    cfg_diag_free(d);
    write_file(dir, "tako.yaml", "project: {name: t}\nenvironments:\n  p:\n    services:\n      web:\n"
                                 "        port: 1\n        build: ./app/\n        workdir: ../app/./x\n"
                                 "        image: nginx:1.27\n");
    d = cfg_diag_new();
    f = cfg_load_file(path, d);
    CHECK(f);
    CHECK_INT(cfg_diag_warnings(d), 0);
    const struct cfg_service *s = &f->envs[0].services[0];
    CHECK_STR(s->build, sub);
    want = xasprintf("%s/x", sub);
    CHECK_STR(s->workdir, want);
    free(want);
    CHECK_STR(s->image, "nginx:1.27");
    cfg_free(f);
    cfg_diag_free(d);
    free(path);
    free(sub);
    rm_rf(dir);
    free(dir);
}

TEST(command_forms)
{
    const struct cfg_service *s;
    struct cfg_file *f = svc_ok("        port: 1\n        command: [python3, -m, http.server, '8000']\n",
                                &s);
    CHECK(f);
    CHECK_STR(s->argv[0], "python3");
    CHECK_STR(s->argv[3], "8000");
    CHECK(s->argv[4] == NULL);
    cfg_free(f);
    CHECK(fails_with("        port: 1\n        command: npm start && echo\n",
                     "command: shell syntax '&' is not supported"));
    CHECK(fails_with("        port: 1\n        command: \"a 'b\"\n", "unterminated single quote"));
    CHECK(fails_with("        port: 1\n        command: []\n", "command: empty command"));
}

TEST(split_command_rules)
{
    char **argv = NULL, err[200];
    CHECK_INT(cfg_split_command("  a  'b c'  \"d \\\"e\\\" $x\" f\\ g h''i \"\"", &argv, err,
                                sizeof(err)),
              0);
    CHECK_STR(argv[0], "a");
    CHECK_STR(argv[1], "b c");
    CHECK_STR(argv[2], "d \"e\" $x");
    CHECK_STR(argv[3], "f g");
    CHECK_STR(argv[4], "hi");
    CHECK_STR(argv[5], "");
    CHECK(argv[6] == NULL);
    cfg_argv_free(argv);
    CHECK_INT(cfg_split_command("echo \"a\\nb\"", &argv, err, sizeof(err)), 0);
    CHECK_STR(argv[1], "a\\nb"); /* like sh: \n is not an escape inside "" */
    cfg_argv_free(argv);
    CHECK_INT(cfg_split_command("a | b", &argv, err, sizeof(err)), -EINVAL);
    CHECK_CONTAINS(err, "'|'");
    CHECK_INT(cfg_split_command("echo $(id)", &argv, err, sizeof(err)), -EINVAL);
    CHECK_CONTAINS(err, "'$('");
    CHECK_INT(cfg_split_command("a 'b|c' \"d;e\"", &argv, err, sizeof(err)), 0);
    CHECK_STR(argv[1], "b|c");
    CHECK_STR(argv[2], "d;e");
    cfg_argv_free(argv);
    CHECK_INT(cfg_split_command("   ", &argv, err, sizeof(err)), -EINVAL);
    CHECK_CONTAINS(err, "empty command");
    CHECK_INT(cfg_split_command("x\\", &argv, err, sizeof(err)), -EINVAL);
    CHECK_INT(cfg_split_command("x \"y", &argv, err, sizeof(err)), -EINVAL);
    CHECK_CONTAINS(err, "unterminated double quote");
}

static const char MULTI[] = "project: {name: m}\n"
                            "servers:\n"
                            "  eu1: {host: 10.0.0.1}\n"
                            "  shared: {host: 10.0.0.2, user: deploy, port: 2222, labels: {zone: a}}\n"
                            "environments:\n"
                            "  production:\n"
                            "    servers: [eu1, shared]\n"
                            "    services: {web: {port: 1}}\n"
                            "  preview:\n"
                            "    servers: [shared]\n"
                            "    services: {web: {port: 1}}\n"
                            "  staging:\n"
                            "    http: 9000\n"
                            "    services: {web: {port: 1}}\n";

static const char *select_name(const struct cfg_file *f, const char *want, char **diag)
{
    struct cfg_diag *d = cfg_diag_new();
    const struct cfg_env *e = cfg_select_env(f, want, d);
    *diag = cfg_diag_text(d);
    cfg_diag_free(d);
    return e ? e->name : NULL;
}

TEST(environment_selection)
{
    char *diag;
    struct cfg_file *f = load(MULTI, &diag);
    CHECK(f);
    free(diag);
    CHECK_INT(f->servers[1].port, 2222);
    CHECK_STR(f->servers[1].user, "deploy");
    CHECK_STR(f->servers[1].labels[0].key, "zone");
    CHECK_INT(f->envs[2].http_port, 9000);
    CHECK_INT(f->envs[2].servers_len, 0);
    CHECK(f->envs[2].servers[0] == NULL);

    const char *n = select_name(f, "production", &diag);
    CHECK_STR(n, "production");
    free(diag);
    n = select_name(f, "prod", &diag); /* unique prefix */
    CHECK_STR(n, "production");
    free(diag);
    n = select_name(f, "st", &diag);
    CHECK_STR(n, "staging");
    free(diag);
    n = select_name(f, "eu1", &diag); /* the only environment on server eu1 */
    CHECK_STR(n, "production");
    free(diag);
    n = select_name(f, "p", &diag);
    CHECK(n == NULL);
    CHECK_CONTAINS(diag, "environment \"p\" is ambiguous (environments: production, preview, staging)");
    free(diag);
    n = select_name(f, "shared", &diag);
    CHECK(n == NULL);
    CHECK_CONTAINS(diag, "server \"shared\" is used by 2 environments");
    free(diag);
    n = select_name(f, "qa", &diag);
    CHECK(n == NULL);
    CHECK_CONTAINS(diag, "unknown environment \"qa\" (environments: production, preview, staging)");
    free(diag);
    n = select_name(f, NULL, &diag);
    CHECK(n == NULL);
    CHECK_CONTAINS(diag, "3 environments: name one with -e ENV");
    free(diag);
    CHECK(cfg_env_service(&f->envs[0], "web") != NULL);
    CHECK(cfg_env_service(&f->envs[0], "nope") == NULL);
    CHECK(!cfg_server_is_local(cfg_find_server(f, "eu1")));
    cfg_free(f);

    f = load(SEED, &diag);
    CHECK(f);
    free(diag);
    n = select_name(f, NULL, &diag); /* the only one */
    CHECK_STR(n, "production");
    free(diag);
    n = select_name(f, "", &diag);
    CHECK_STR(n, "production");
    free(diag);
    cfg_free(f);
}

TEST(servers_checked)
{
    char *diag;
    struct cfg_file *f = load("project: {name: m}\nservers:\n  a: {user: x}\n  b: {host: 'bad host'}\n"
                              "environments:\n  p:\n    servers: [a, c]\n    services: {w: {port: 1}}\n",
                              &diag);
    CHECK(!f);
    CHECK_CONTAINS(diag, "tako.yaml:3:6: servers.a: host is required");
    CHECK_CONTAINS(diag, "servers.b.host: invalid host \"bad host\"");
    CHECK_CONTAINS(diag, "tako.yaml:7:14: environments.p.servers: unknown server \"c\"");
    free(diag);
}

TEST(null_values_mean_defaults)
{
    char *diag;
    struct cfg_file *f = load("project:\n  name: n\n  version:\nenvironments:\n  p:\n    services:\n"
                              "      web:\n        port: 8000\n        replicas: ~\n        image: img\n"
                              "        healthCheck:\n",
                              &diag);
    CHECK(f);
    CHECK(f->project.version == NULL);
    CHECK_INT(f->envs[0].services[0].replicas, 1);
    CHECK(f->envs[0].services[0].health.enabled);
    free(diag);
    cfg_free(f);
}

TEST(alias_fan_out_is_bounded)
{
    /* Each level doubles the references: 2^22 values if walked naively. */
    char *y = xstrdup("a0: &a0 [x, x]\n");
    for (int i = 1; i < 23; i++) {
        char *n = xasprintf("%sa%d: &a%d [*a%d, *a%d]\n", y, i, i, i - 1, i - 1);
        free(y);
        y = n;
    }
    char *doc = xasprintf("%sproject: {name: x}\nenvironments:\n  p:\n    services:\n"
                          "      w:\n        port: 1\n        command: *a22\n",
                          y);
    char *diag;
    struct cfg_file *f = load(doc, &diag);
    CHECK(!f);
    CHECK_CONTAINS(diag, "unknown key \"a0\"");
    free(diag);
    free(doc);
    /* A self-referencing alias terminates too. */
    f = load("project: &p {name: x, me: *p}\n", &diag);
    CHECK(!f);
    free(diag);
    free(y);
}

TEST(json_round_trip)
{
    char *diag;
    struct cfg_file *f = load(MULTI, &diag);
    CHECK(f);
    free(diag);
    cfg_free(f);
    const struct cfg_service *s;
    f = svc_ok("        command: [srv, --flag, 'a b']\n        port: 3000\n"
               "        replicas: {min: 2, max: 6, cpu: 65%, requests: 12.5}\n"
               "        loadBalancer: {strategy: sticky, cookie: sid}\n"
               "        healthCheck: {path: /ok, interval: 700ms, timeout: 300ms}\n"
               "        deploy: {strategy: recreate, maxSurge: 0, maxUnavailable: 1}\n"
               "        proxy: {domains: [a.io, b.io], port: 9000, email: a@b.c}\n"
               "        env: {Z: last, A: first, API_TOKEN: s3cr3t}\n"
               "        restart: never\n        resources: {memory: 1g, cpus: 0.5}\n",
               &s);
    CHECK(f);
    json_t *j1 = cfg_service_to_json(s);
    char err[256];
    struct cfg_service *back = cfg_service_from_json(j1, err, sizeof(err));
    CHECK(back);
    json_t *j2 = cfg_service_to_json(back);
    CHECK(json_equal(j1, j2));
    char *t1 = json_dumps(j1, JSON_COMPACT), *t2 = json_dumps(j2, JSON_COMPACT);
    CHECK_STR(t1, t2); /* same bytes: key order is canonical */
    CHECK_CONTAINS(t1, "\"env\":{\"Z\":\"last\",\"A\":\"first\",\"API_TOKEN\":\"s3cr3t\"}");
    CHECK_CONTAINS(t1, "{\"name\":\"web\",\"command\":[\"srv\",\"--flag\",\"a b\"],");
    CHECK_STR(back->argv[2], "a b");
    CHECK_INT(back->autoscale.max, 6);
    CHECK_INT(back->lb_strategy, CFG_LB_STICKY);
    CHECK_STR(back->lb_cookie, "sid");
    free(t1);
    free(t2);
    struct cfg_service *dup = cfg_service_dup(back);
    CHECK_STR(dup->proxy.domains[1], "b.io");
    cfg_service_free(dup);
    cfg_service_free(back);
    json_decref(j2);

    /* Broken input: a message, no service. */
    json_object_set_new(j1, "restart", json_string("sometimes"));
    CHECK(cfg_service_from_json(j1, err, sizeof(err)) == NULL);
    CHECK_CONTAINS(err, "service.restart: unknown value \"sometimes\"");
    json_object_del(j1, "health");
    CHECK(cfg_service_from_json(j1, err, sizeof(err)) == NULL);
    json_t *three = json_integer(3);
    CHECK(cfg_service_from_json(three, err, sizeof(err)) == NULL);
    json_decref(three);
    json_decref(j1);

    json_t *fj = cfg_file_to_json(f);
    CHECK_STR(json_string_value(json_object_get(json_object_get(fj, "project"), "name")), "t");
    json_decref(fj);
    cfg_free(f);
}

TEST(secret_keys)
{
    CHECK(cfg_env_key_is_secret("DB_PASSWORD"));
    CHECK(cfg_env_key_is_secret("api_token"));
    CHECK(cfg_env_key_is_secret("STRIPE_SECRET"));
    CHECK(cfg_env_key_is_secret("AWS_ACCESS_KEY_ID"));
    CHECK(cfg_env_key_is_secret("GOOGLE_CREDENTIALS"));
    CHECK(!cfg_env_key_is_secret("NODE_ENV"));
    CHECK(!cfg_env_key_is_secret("PORT"));
}

TEST(diag_format_and_missing_file)
{
    struct cfg_diag *d = cfg_diag_new();
    cfg_diag_add(d, CFG_ERROR, "x.yaml", 3, 7, "a.b", "bad %d", 1);
    cfg_diag_add(d, CFG_WARNING, "x.yaml", 4, 1, NULL, "meh");
    cfg_diag_add(d, CFG_ERROR, "x.yaml", 0, 0, NULL, "whole file");
    CHECK_INT(cfg_diag_errors(d), 2);
    CHECK_INT(cfg_diag_warnings(d), 1);
    CHECK_INT(cfg_diag_count(d), 3);
    char *t = cfg_diag_text(d);
    CHECK_STR(t, "x.yaml:3:7: a.b: bad 1\nx.yaml:4:1: warning: meh\nx.yaml: whole file\n");
    free(t);
    cfg_diag_free(d);
    d = cfg_diag_new();
    CHECK(cfg_load_file("/nonexistent/tako.yaml", d) == NULL);
    t = cfg_diag_text(d);
    CHECK_CONTAINS(t, "/nonexistent/tako.yaml: cannot read: No such file or directory");
    free(t);
    cfg_diag_free(d);
}

TEST(names_checked)
{
    CHECK(fails_with("        port: 1\n      Web_2: {port: 2}\n",
                     "environments.prod.services.Web_2: invalid service name \"Web_2\""));
    char *diag;
    struct cfg_file *f = load("project: {name: -x}\nenvironments:\n  'bad name':\n    services: {w: {port: 1}}\n",
                              &diag);
    CHECK(!f);
    CHECK_CONTAINS(diag, "project.name: invalid project name \"-x\"");
    CHECK_CONTAINS(diag, "invalid environment name \"bad name\"");
    free(diag);
}

TEST(smaller_errors)
{
    CHECK(fails_with("        port: 1\n        loadBalancer: {strategy: sticky, cookie: 'a b'}\n",
                     "loadBalancer.cookie: invalid cookie name \"a b\""));
    CHECK(fails_with("        port: 1\n        proxy: {domain: [a.io]}\n",
                     "proxy.domain: expected a string, got a list (use domains: for a list)"));
    CHECK(fails_with("        port: 1\n        replicas: {max: 2, requests: lots}\n",
                     "replicas.requests: expected a number"));
    CHECK(fails_with("        port: 1\n        image: ''\n", "image: invalid image \"\""));
    CHECK(fails_with("        port: 1\n        replicas: [1]\n",
                     "replicas: expected an integer or a mapping {min, max, cpu, requests}, got a list"));
    CHECK(fails_with("        port: 1\n        healthCheck: {interval: 0s}\n",
                     "healthCheck.interval: must be at least 1ms"));
    CHECK(fails_with("        port: 1\n        deploy: {drainTimeout: 8d}\n",
                     "deploy.drainTimeout: must be at most 7d"));
    /* A bad port is not a missing port: no cascade of worker-only errors. */
    char *y = with_service("        port: http\n        proxy: {domain: a.io}\n"), *diag;
    struct cfg_file *f = load(y, &diag);
    CHECK(!f);
    CHECK_CONTAINS(diag, "port: expected an integer from 1 to 65535, got \"http\"");
    CHECK(!strstr(diag, "proxy needs"));
    free(diag);
    free(y);
    f = load("project: {name: x}\nenvironments:\n  p:\n    http: 0\n    services: {w: {port: 1}}\n",
             &diag);
    CHECK(!f);
    CHECK_CONTAINS(diag, "environments.p.http: expected an integer from 1 to 65535, got \"0\"");
    free(diag);
    f = load("project: {name: x}\nservers:\n  s: {host: h, port: 0, labels: [a]}\n"
             "environments: {p: {services: {w: {port: 1}}}}\n",
             &diag);
    CHECK(!f);
    CHECK_CONTAINS(diag, "servers.s.port: expected an integer from 1 to 65535");
    CHECK_CONTAINS(diag, "servers.s.labels: expected a mapping, got a list");
    free(diag);
}

static const char SPREAD_YAML[] = "project: {name: scaling}\n"
                            "servers:\n"
                            "  a: {host: 10.0.0.1, address: 192.168.0.1, labels: {zone: eu}}\n"
                            "  b: {host: 10.0.0.2, labels: {zone: us}}\n"
                            "  c: {host: 10.0.0.3, labels: {zone: eu}}\n"
                            "environments:\n"
                            "  production:\n"
                            "    servers: [a, b, c]\n"
                            "    services:\n"
                            "      web: {port: 3000, replicas: 5, command: x}\n"
                            "      api:\n"
                            "        port: 3001\n"
                            "        command: x\n"
                            "        replicas: 3\n"
                            "        placement: {labels: {zone: eu}}\n"
                            "      jobs:\n"
                            "        command: x\n"
                            "        placement: {servers: [c, b]}\n";

TEST(servers_address_peer_port_placement)
{
    char *diag;
    struct cfg_file *f = load(SPREAD_YAML, &diag);
    if (!f)
        fprintf(stderr, "%s", diag);
    CHECK(f);
    CHECK_STR(cfg_find_server(f, "a")->address, "192.168.0.1");
    CHECK_STR(cfg_find_server(f, "b")->address, "10.0.0.2"); /* default: host */
    const struct cfg_env *e = &f->envs[0];
    CHECK_INT(e->peer_port, 8190);
    const struct cfg_service *api = cfg_env_service(e, "api");
    CHECK_INT(api->placement_labels_len, 1);
    CHECK(cfg_server_eligible(api, cfg_find_server(f, "a")));
    CHECK(!cfg_server_eligible(api, cfg_find_server(f, "b")));
    const struct cfg_service *jobs = cfg_env_service(e, "jobs");
    CHECK_INT(jobs->placement_servers_len, 2);
    CHECK(!cfg_server_eligible(jobs, cfg_find_server(f, "a")));
    CHECK(cfg_server_eligible(jobs, cfg_find_server(f, "c")));
    cfg_free(f);
    free(diag);
}

TEST(placement_spread_and_slots)
{
    char *diag;
    struct cfg_file *f = load(SPREAD_YAML, &diag);
    CHECK(f);
    const struct cfg_env *e = &f->envs[0];
    struct cfg_place pl[3];
    /* 5 over a, b, c: a -1 -4, b -2 -5, c -3 */
    CHECK_INT(cfg_place(f, e, cfg_env_service(e, "web"), 5, pl), 3);
    CHECK_INT(pl[0].replicas, 2);
    CHECK_INT(pl[1].replicas, 2);
    CHECK_INT(pl[2].replicas, 1);
    CHECK_INT(pl[0].slot_first, 1);
    CHECK_INT(pl[1].slot_first, 2);
    CHECK_INT(pl[2].slot_first, 3);
    CHECK_INT(pl[0].slot_stride, 3);
    CHECK_STR(pl[1].server->name, "b");
    /* 2 over three: the last gets none (but keeps its slot) */
    cfg_place(f, e, cfg_env_service(e, "web"), 2, pl);
    CHECK_INT(pl[0].replicas, 1);
    CHECK_INT(pl[1].replicas, 1);
    CHECK_INT(pl[2].replicas, 0);
    CHECK_INT(pl[2].slot_first, 3);
    /* labels zone=eu: a and c are positions 0 and 1 of n=2 */
    CHECK_INT(cfg_place(f, e, cfg_env_service(e, "api"), 3, pl), 2);
    CHECK(!pl[1].eligible);
    CHECK_INT(pl[1].replicas, 0);
    CHECK_INT(pl[1].slot_first, 0);
    CHECK_INT(pl[0].replicas, 2);
    CHECK_INT(pl[0].slot_first, 1);
    CHECK_INT(pl[2].replicas, 1);
    CHECK_INT(pl[2].slot_first, 2);
    CHECK_INT(pl[2].slot_stride, 2);
    /* servers: [c, b] keeps the environment's order: b first */
    CHECK_INT(cfg_place(f, e, cfg_env_service(e, "jobs"), 1, pl), 2);
    CHECK_INT(pl[1].replicas, 1);
    CHECK_INT(pl[1].slot_first, 1);
    CHECK_INT(pl[2].replicas, 0);
    CHECK_INT(pl[2].slot_first, 2);
    /* every name once: slot_first + (j-1)*stride over all servers, 0..12 replicas */
    for (unsigned r = 0; r <= 12; r++) {
        cfg_place(f, e, cfg_env_service(e, "web"), r, pl);
        unsigned seen[64] = {0}, total = 0;
        for (int i = 0; i < 3; i++)
            for (unsigned j = 1; j <= pl[i].replicas; j++) {
                seen[pl[i].slot_first + (j - 1) * pl[i].slot_stride]++;
                total++;
            }
        CHECK_INT(total, r);
        for (unsigned k = 1; k <= r; k++)
            CHECK_INT(seen[k], 1);
    }
    cfg_free(f);
    free(diag);
}

TEST(placement_and_peer_port_errors)
{
    char *diag;
    const char *base = "project: {name: m}\n"
                       "servers:\n"
                       "  a: {host: 10.0.0.1, labels: {zone: eu}}\n"
                       "  b: {host: 10.0.0.2, address: 'x y'}\n"
                       "environments:\n"
                       "  p:\n"
                       "    servers: [a, b]\n"
                       "    peerPort: 9000\n"
                       "    services:\n"
                       "      w:\n"
                       "        port: 1\n"
                       "        placement: {servers: [a, z]}\n"
                       "      v:\n"
                       "        port: 2\n"
                       "        placement:\n"
                       "          labels: {zone: us}\n"
                       "  q:\n"
                       "    servers: [b, a]\n"
                       "    peerPort: 9000\n"
                       "    services: {w: {port: 1}}\n"
                       "  r:\n"
                       "    servers: [a, b]\n"
                       "    peerPort: 70000\n"
                       "    services: {w: {port: 1}}\n";
    struct cfg_file *f = load(base, &diag);
    CHECK(!f);
    CHECK_CONTAINS(diag, "servers.b.address: invalid address \"x y\"");
    CHECK_CONTAINS(diag, "tako.yaml:12:34: environments.p.services.w.placement.servers[1]: "
                         "server \"z\" is not one of environment p's servers");
    CHECK_CONTAINS(diag, "tako.yaml:16:11: environments.p.services.v.placement: no server of "
                         "environment p qualifies");
    CHECK_CONTAINS(diag, "tako.yaml:19:15: environments.q.peerPort: environments p and q share "
                       "server");
    CHECK_CONTAINS(diag, "environments.r.peerPort: expected an integer from 1 to 65535");
    free(diag);
    /* autoscaling over several servers is refused at the key */
    f = load("project: {name: m}\nservers:\n  a: {host: 10.0.0.1}\n  b: {host: 10.0.0.2}\n"
             "environments:\n  p:\n    servers: [a, b]\n    services:\n      w:\n"
             "        port: 1\n        command: x\n        replicas: {min: 2, max: 6, cpu: 50}\n",
             &diag);
    CHECK(!f);
    CHECK_CONTAINS(diag, "tako.yaml:12:19: environments.p.services.w.replicas: autoscaling is for "
                         "an environment with one server; environment p has 2");
    free(diag);
    /* placement without servers: nowhere to place */
    CHECK(fails_with("        port: 1\n        placement: {labels: {zone: eu}}\n",
                     "environment prod has no servers: to place replicas on"));
    CHECK(fails_with("        port: 1\n        placement: {server: [a]}\n",
                     "did you mean \"servers\""));
}

/* Load BODY as the only service; the diagnostics (errors and warnings). */
static char *diag_of(const char *body, bool *ok)
{
    char *y = with_service(body), *diag = NULL;
    struct cfg_file *f = load(y, &diag);
    *ok = f != NULL;
    cfg_free(f);
    free(y);
    return diag;
}

TEST(docker_command_rules_are_checked_at_the_key)
{
    bool ok;
    /* a list or a string of words: the same argv, no shell */
    const struct cfg_service *s;
    struct cfg_file *f = svc_ok("        runtime: docker\n        image: app:1\n"
                                "        command: \"whoami --port 'a b'\"\n",
                                &s);
    CHECK(f);
    CHECK_STR(s->argv[0], "whoami");
    CHECK_STR(s->argv[2], "a b");
    CHECK(s->argv[3] == NULL);
    cfg_free(f);
    /* shell syntax in a string: refused at the key, with the list form to use */
    char *d = diag_of("        runtime: docker\n        image: app:1\n"
                      "        command: serve && echo done\n",
                      &ok);
    CHECK(!ok);
    CHECK_CONTAINS(d, "tako.yaml:9:18: environments.prod.services.web.command: shell syntax '&'");
    CHECK_CONTAINS(d, "[sh, -c,");
    free(d);
    /* workdir is a host directory: it cannot apply to a container */
    d = diag_of("        runtime: docker\n        image: app:1\n        workdir: /srv/app\n", &ok);
    CHECK(!ok);
    CHECK_CONTAINS(d, "tako.yaml:9:18: environments.prod.services.web.workdir: workdir is a "
                      "directory of this machine");
    CHECK_CONTAINS(d, "WORKDIR in the Dockerfile");
    free(d);
    /* ... while the process runtime takes it */
    f = svc_ok("        command: ./app\n        workdir: sub\n", &s);
    CHECK(f);
    cfg_free(f);
    /* an empty program name, at the item */
    d = diag_of("        runtime: docker\n        image: app:1\n        command: ['', x]\n", &ok);
    CHECK(!ok);
    CHECK_CONTAINS(d, "tako.yaml:9:19: environments.prod.services.web.command[0]: the program "
                      "name is empty");
    free(d);
    /* the environment's runtime applies the same rules */
    char *y = xasprintf("project:\n  name: t\nenvironments:\n  prod:\n    runtime: docker\n"
                        "    services:\n      web:\n        image: app:1\n"
                        "        workdir: /x\n");
    char *diag = NULL;
    f = load(y, &diag);
    CHECK(!f);
    CHECK_CONTAINS(diag, "tako.yaml:9:18: environments.prod.services.web.workdir:");
    free(diag);
    free(y);
}
