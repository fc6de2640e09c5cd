/* lifecycle.c — `tako scale`, `restart`, `stop`, `start`, `down`, `rollback`:
 * each changes the desired state in takod and follows the change. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime/rt_docker.h"
#include "cli/cli.h"
#include "cli/client.h"
#include "cli/common.h"
#include "core/util.h"

const char help_scale[] =
    "Usage: tako scale SERVICE=COUNT [SERVICE=COUNT...] [ENV] [-f FILE] [--output json]\n"
    "\n"
    "Change the number of replicas without editing tako.yaml: tako scale web=5.\n"
    "Scaling up starts new replicas that take traffic once healthy; scaling down\n"
    "drains the highest-numbered replicas first, then stops them. No request fails.\n"
    "\n"
    "The count is kept in takod's state as an override and shown by `tako ps`.\n"
    "The next deploy keeps it and warns while tako.yaml asks for another count; once\n"
    "you change replicas in tako.yaml, the file wins and the override is dropped.\n"
    "COUNT is 0 to 1000, the limit per service (as for replicas in tako.yaml).\n"
    "Autoscaled services (replicas: {min, max, ...}) refuse a manual scale: change\n"
    "their bounds in tako.yaml.\n"
    "With several servers, the count is spread over them like a deploy's, and\n"
    "every server runs its share (see docs/servers.md).\n"
    "\n"
    "Options:\n" CLI_COMMON_HELP;

const char help_restart[] =
    "Usage: tako restart [SERVICE] [-e ENV] [-f FILE]\n"
    "\n"
    "Restart a service (or every service of the project) one replica at a time, like\n"
    "a deploy of the same revision: a new replica starts and becomes healthy before\n"
    "an old one is drained and stopped. No request fails.\n"
    "\n"
    "Options:\n" CLI_COMMON_HELP;

const char help_stop[] =
    "Usage: tako stop [SERVICE] [-e ENV] [-f FILE]\n"
    "\n"
    "Drain and stop a service's replicas (all services when none is named). The\n"
    "service stays configured: `tako start` brings it back; `tako ps` shows ✗ stopped.\n"
    "\n"
    "Options:\n" CLI_COMMON_HELP;

const char help_start[] =
    "Usage: tako start [SERVICE] [-e ENV] [-f FILE]\n"
    "\n"
    "Start a stopped service again with its last deployed revision.\n"
    "\n"
    "Options:\n" CLI_COMMON_HELP;

const char help_down[] =
    "Usage: tako down [ENV] [--images] [-f FILE | --project NAME]\n"
    "\n"
    "Drain and stop everything of the project, close its listeners and forget its\n"
    "services (history and logs stay in $TAKO_HOME). No process of it is left;\n"
    "containers of `runtime: docker` services are removed.\n"
    "\n"
    "Options:\n"
    "      --images         also remove the Docker images tako built for the project\n"
    "                       (images named by image: are left alone)\n" CLI_COMMON_HELP;

const char help_rollback[] =
    "Usage: tako rollback [REVISION] [--service NAME] [-e ENV] [-f FILE]\n"
    "\n"
    "Roll back to the previous revision (or the one named; see `tako history`),\n"
    "using that revision's stored configuration, one replica at a time.\n"
    "\n"
    "Options:\n" CLI_COMMON_HELP;

static json_t *base_body(struct cli_target *t)
{
    json_t *b = json_object();
    json_object_set_new(b, "project", json_string(cli_target_project(t)));
    if (t->envp)
        json_object_set_new(b, "env", json_string(t->envp->name));
    if (t->service)
        json_object_set_new(b, "service", json_string(t->service));
    return b;
}

static int need_project(struct cli_target *t)
{
    int rc = cli_target_load(t, false, false);
    if (rc)
        return rc;
    if (!cli_target_project(t)) {
        fprintf(stderr, "tako %s: no tako.yaml here; pass -f FILE or --project NAME\n", t->cmd);
        return EXIT_USAGE;
    }
    return 0;
}

/* Several servers: each gets its share of every count (placement), the
 * other servers' shares and its slot numbers, one server after another. */
static int scale_multi(struct cli_target *t, json_t *counts)
{
    const char *name;
    json_t *v;
    json_object_foreach(counts, name, v) {
        if (!cfg_env_service(t->envp, name)) {
            fprintf(stderr, "tako scale: environment %s has no service '%s'\n", t->envp->name,
                    name);
            return EXIT_USAGE;
        }
    }
    char label[512];
    for (size_t i = 0; i < t->n_servers; i++) {
        if (!cli_server_active(t, i))
            continue;
        json_t *body = base_body(t);
        json_t *local = json_object(), *peers = json_object(), *slots = json_object();
        json_object_foreach(counts, name, v) {
            const struct cfg_service *s = cfg_env_service(t->envp, name);
            json_t *f = json_object();
            unsigned mine = cli_place_fields(t, s, (unsigned)json_integer_value(v), i, f);
            json_object_set_new(local, name, json_integer(mine));
            json_object_set(peers, name, json_object_get(f, "peer_replicas"));
            if (json_object_get(f, "slot_first"))
                json_object_set_new(slots, name,
                                    json_pack("{s:O, s:O}", "first",
                                              json_object_get(f, "slot_first"), "stride",
                                              json_object_get(f, "slot_stride")));
            json_decref(f);
        }
        json_object_set_new(body, "counts", local);
        json_object_set_new(body, "peer_replicas", peers);
        json_object_set_new(body, "slots", slots);
        cli_use_server(t, i);
        if (!t->json)
            printf("%s:\n", cli_server_label(t, i, label, sizeof(label)));
        fflush(stdout);
        int rc = cli_run_operation("scale", "/v1/scale", body, t->json);
        json_decref(body);
        if (rc) {
            fprintf(stderr, "tako scale: failed on server %s; the servers before it are scaled, "
                            "the ones after it are not: run the same scale again\n",
                    t->servers[i].cfg->name);
            return rc;
        }
    }
    return EXIT_OK;
}

int cmd_scale(int argc, char **argv)
{
    struct cli_target t = {.cmd = "scale"};
    char *pos[64];
    memset(pos, 0, sizeof(pos));
    int rc = cli_parse_args(&t, argc, argv, pos, 64);
    if (rc)
        return rc;
    json_t *counts = json_object();
    for (int i = 0; i < 64 && pos[i]; i++) {
        char *eq = strchr(pos[i], '=');
        if (!eq) {
            if (!t.env) {
                t.env = pos[i];
                continue;
            }
            json_decref(counts);
            return cli_usage_error("scale", "expected SERVICE=COUNT, got '%s'", pos[i]);
        }
        uint64_t n;
        *eq = '\0';
        if (!pos[i][0] || parse_uint(eq + 1, 10000, &n) < 0) {
            json_decref(counts);
            return cli_usage_error("scale", "invalid count in '%s=%s' (expected a whole number)",
                                   pos[i], eq + 1);
        }
        json_object_set_new(counts, pos[i], json_integer((json_int_t)n));
    }
    if (json_object_size(counts) == 0) {
        json_decref(counts);
        return cli_usage_error("scale", "give at least one SERVICE=COUNT, e.g. tako scale web=5");
    }
    if ((rc = need_project(&t))) {
        json_decref(counts);
        return rc;
    }
    if (t.servers) {
        rc = scale_multi(&t, counts);
        json_decref(counts);
        cli_target_free(&t);
        return rc;
    }
    json_t *body = base_body(&t);
    json_object_set_new(body, "counts", counts);
    rc = cli_run_operation("scale", "/v1/scale", body, t.json);
    json_decref(body);
    cli_target_free(&t);
    return rc;
}

/* Does WORD select an environment of the tako.yaml at hand (`tako restart
 * prod`, `tako rollback prod`)? */
static bool names_env(const struct cli_target *t, const char *word)
{
    const char *file = t->file ? t->file : "tako.yaml";
    if (access(file, F_OK) != 0)
        return false;
    struct cfg_diag *d = cfg_diag_new();
    struct cfg_file *f = cfg_load_file(file, d);
    bool yes = f && cfg_select_env(f, word, d) != NULL;
    for (size_t i = 0; yes && i < f->envs_len; i++) /* a service of that name wins */
        if (cfg_env_service(&f->envs[i], word))
            yes = false;
    cfg_free(f);
    cfg_diag_free(d);
    return yes;
}

static bool is_revision(const char *w)
{
    return strlen(w) >= 4 && strspn(w, "0123456789abcdef") == strlen(w);
}

static int simple_action(const char *kind, int argc, char **argv, bool service_pos)
{
    struct cli_target t = {.cmd = kind};
    char *pos[2] = {NULL, NULL};
    int rc = cli_parse_args(&t, argc, argv, pos, 2);
    if (rc)
        return rc;
    char path[64];
    snprintf(path, sizeof(path), "/v1/%s", kind);
    const char *revision = NULL;
    for (int i = 0; i < 2 && pos[i]; i++) {
        if (!t.env && !is_revision(pos[i]) && names_env(&t, pos[i]))
            t.env = pos[i];
        else if (strcmp(kind, "rollback") == 0 && !revision)
            revision = pos[i];
        else if (service_pos && !t.service)
            t.service = pos[i];
        else if (!t.env)
            t.env = pos[i];
        else
            return cli_usage_error(kind, "unexpected argument '%s'", pos[i]);
    }
    if ((rc = need_project(&t)))
        return rc;
    json_t *body = base_body(&t);
    if (revision)
        json_object_set_new(body, "revision", json_string(revision));
    if (t.servers)
        rc = cli_multi_operation(&t, path, body);
    else
        rc = cli_run_operation(kind, path, body, t.json);
    json_decref(body);
    cli_target_free(&t);
    return rc;
}

int cmd_restart(int argc, char **argv) { return simple_action("restart", argc, argv, true); }
int cmd_stop(int argc, char **argv) { return simple_action("stop", argc, argv, true); }
int cmd_start(int argc, char **argv) { return simple_action("start", argc, argv, true); }
int cmd_down(int argc, char **argv)
{
    /* --images is down's own: taken out before the common options */
    bool images = false;
    char **av = xcalloc((size_t)argc + 1, sizeof(char *));
    int ac = 0;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--images") == 0 && i > 0)
            images = true;
        else
            av[ac++] = argv[i];
    }
    int rc = simple_action("down", ac, av, false);
    if (rc != 0 || !images) {
        free(av);
        return rc;
    }
    struct cli_target t = {.cmd = "down"};
    char *pos[2] = {NULL, NULL};
    if (cli_parse_args(&t, ac, av, pos, 2) == 0 && need_project(&t) == 0) {
        char err[512];
        int n = rt_docker_prune_images(cli_target_project(&t), t.service, NULL, 0, true, err,
                                       sizeof(err));
        if (n < 0) {
            fprintf(stderr, "tako down: images not removed: %s\n", err);
            rc = EXIT_FAILURE;
        } else if (!t.json) {
            printf("removed %d Docker image%s of %s\n", n, n == 1 ? "" : "s",
                   cli_target_project(&t));
        }
    }
    cli_target_free(&t);
    free(av);
    return rc;
}
int cmd_rollback(int argc, char **argv) { return simple_action("rollback", argc, argv, false); }
