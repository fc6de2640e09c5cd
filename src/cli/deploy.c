/* deploy.c — `tako deploy`: validate, compute revisions, hand the desired
 * state to takod and follow the rolling update. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime/docker_api.h"
#include "cli/cli.h"
#include "cli/client.h"
#include "cli/common.h"
#include "core/util.h"
#include "remote/ssh.h"

const char help_deploy[] =
    "Usage: tako deploy [ENV] [--service NAME] [--force] [--skip SERVER]... [-f FILE]\n"
    "                   [--output json]\n"
    "\n"
    "Bring every service of the environment to its configured number of healthy\n"
    "replicas behind the load balancer, without a failed request.\n"
    "\n"
    "Each service gets a revision: a hash of its effective configuration and of its\n"
    "code (the git commit plus uncommitted changes of its build directory, or a\n"
    "content hash of that directory). A changed revision is rolled out one replica\n"
    "at a time (deploy.strategy rolling, maxSurge 1, maxUnavailable 0 by default):\n"
    "start a new replica, wait until it passes its health check, let it take\n"
    "traffic, drain an old one, stop it, repeat. A new revision that never becomes\n"
    "healthy is rolled back automatically and deploy exits 1, showing the failing\n"
    "replica's last log lines. When nothing changed, deploy says so and does nothing.\n"
    "\n"
    "Services that are no longer in tako.yaml are drained and removed.\n"
    "\n"
    "When the environment's server is another machine (servers: with a host that is\n"
    "not this one), deploy works there through ssh: it takes the environment's\n"
    "deploy lock, prepares the server like `tako setup` (installing tako on first\n"
    "use), sends each service's build directory (only file contents the server does\n"
    "not have yet; .takoignore or .dockerignore honoured), then rolls out on the\n"
    "server's takod. See docs/servers.md.\n"
    "\n"
    "With several servers (servers: [a, b, c]), each service's replicas are spread\n"
    "over them (placement: narrows the choice) with names unique across the\n"
    "environment; deploy prepares, locks and sends the app to every server first,\n"
    "and rolls out nothing anywhere when one of them fails or cannot be reached;\n"
    "then it rolls out server by server. It ends on one revision everywhere: when\n"
    "the rollout fails on a server, the servers already updated go back to the\n"
    "revision each ran before (exit 1). Ctrl-C (SIGINT, SIGTERM, SIGHUP) starts no\n"
    "further server, lets the one rolling finish, then brings the servers already\n"
    "updated back the same way (exit 130 for Ctrl-C); a second Ctrl-C leaves at\n"
    "once and says what each server runs.\n"
    "\n"
    "Options:\n" CLI_COMMON_HELP
    "      --force          roll every replica even when nothing changed\n"
    "      --lock-wait DURATION\n"
    "                       wait up to DURATION (e.g. 30s, 5m) for another deploy of\n"
    "                       the environment to finish, and for an operation of the\n"
    "                       project that takod still runs (one whose client was\n"
    "                       interrupted, too) (default: 0, fail at once)\n"
    "      --skip SERVER    leave this server of the environment out (repeatable):\n"
    "                       deploy to the others when it cannot be reached\n"
    "\n"
    "Exit status: 0 deployed (or nothing to do), 1 failed (rolled back, or the server\n"
    "cannot run tako), 2 invalid configuration or arguments, 3 takod or the server\n"
    "unreachable (or ssh refused: key, host key), 4 another operation of the project\n"
    "is running or another deploy holds the environment's lock, 128 + the signal\n"
    "(130 for Ctrl-C) a deploy over several servers interrupted and rolled back.\n";

static json_t *metrics_json(const struct cli_target *t)
{
    const struct cfg_env *env = t->envp;
    if (!env->metrics_addr)
        return json_null();
    /* takod binds it; its error names this place in tako.yaml */
    char where[4400];
    snprintf(where, sizeof(where), "%s:%u:%u: environments.%s.metrics", t->cfg->path,
             env->metrics_line, env->metrics_col, env->name);
    return json_pack("{s:s, s:s?, s:s}", "address", env->metrics_addr, "token",
                     env->metrics_token, "where", where);
}

/* Name the servers whose step failed, and say that nothing was rolled out. */
static int multi_refuse(struct cli_target *t, const char *step, const int *rcs)
{
    int rc = 0;
    fprintf(stderr, "tako deploy: %s failed on server", step);
    size_t nf = 0;
    for (size_t i = 0; i < t->n_servers; i++)
        if (rcs[i]) {
            fprintf(stderr, "%s %s", nf++ ? "," : "", t->servers[i].cfg->name);
            if (!rc)
                rc = rcs[i];
        }
    fprintf(stderr, "; nothing was rolled out on any server of environment %s.\n",
            t->envp->name);
    if (rc != EXIT_CONFLICT) {
        fprintf(stderr, "Fix it and deploy again, or deploy to the others only with");
        for (size_t i = 0; i < t->n_servers; i++)
            if (rcs[i])
                fprintf(stderr, " --skip %s", t->servers[i].cfg->name);
        fprintf(stderr, "\n");
    }
    return rc;
}

/* The rollout over several servers must end on one revision everywhere
 * (docs/servers.md "When a server fails"): each server's revisions before
 * the rollout are kept, and a failure or a first Ctrl-C brings the servers
 * already changed back to them. A second Ctrl-C leaves at once, saying what
 * state each server is in (written from the signal handler: the text is
 * prepared in advance). */
enum roll_state { ROLL_BEFORE, ROLL_RUNNING, ROLL_NEW, ROLL_FAILED, ROLL_UNDOING, ROLL_UNDONE };

static volatile sig_atomic_t g_stops; /* SIGINT/SIGTERM/SIGHUP received */
static volatile sig_atomic_t g_first_sig;
static char g_state_msg[8192];
static volatile sig_atomic_t g_state_len;

static void on_stop(int signo)
{
    if (g_stops++ == 0) {
        g_first_sig = signo;
        static const char m[] =
            "\ntako deploy: interrupted: no further server is started, and the servers already "
            "updated go back to the revision they ran before (the server rolling now finishes "
            "first). Interrupt again to leave at once.\n";
        ssize_t w = write(2, m, sizeof(m) - 1);
        (void)w;
        return;
    }
    if (g_state_len > 0) {
        ssize_t w = write(2, g_state_msg, (size_t)g_state_len);
        (void)w;
    }
    ssh_close_all(); /* as ssh.c's own handler: no master left behind */
    signal(signo, SIG_DFL);
    raise(signo);
}

/* What a second interrupt says, rewritten at every step. */
static void state_prepare(const struct cli_target *t, const enum roll_state *st)
{
    static const char *what[] = {
        [ROLL_BEFORE] = "runs the revision it ran before (not started)",
        [ROLL_RUNNING] = "is rolling out the new revision: its takod finishes it (or rolls it "
                         "back) on its own",
        [ROLL_NEW] = "runs the new revision",
        [ROLL_FAILED] = "failed the new revision (its takod rolled back what failed there)",
        [ROLL_UNDOING] = "is going back to the revision it ran before: its takod finishes that "
                         "on its own",
        [ROLL_UNDONE] = "runs the revision it ran before (rolled back)",
    };
    char buf[sizeof(g_state_msg)];
    size_t len = (size_t)snprintf(buf, sizeof(buf),
                                  "tako deploy: left at once; the servers of environment %s "
                                  "may run different revisions now:\n",
                                  t->envp->name);
    for (size_t i = 0; i < t->n_servers && len < sizeof(buf); i++) {
        if (!cli_server_active(t, i))
            continue;
        len += (size_t)snprintf(buf + len, sizeof(buf) - len, "  server %s %s\n",
                                t->servers[i].cfg->name, what[st[i]]);
    }
    if (len < sizeof(buf))
        len += (size_t)snprintf(buf + len, sizeof(buf) - len,
                                "Run 'tako ps %s' to see them, and deploy again to bring them "
                                "to one revision.\n",
                                t->envp->name);
    if (len >= sizeof(buf))
        len = sizeof(buf) - 1;
    g_state_len = 0; /* the handler never sees a half-written text */
    memcpy(g_state_msg, buf, len);
    g_state_len = (sig_atomic_t)len;
}

static void revisions_path(const struct cli_target *t, char *path, size_t len)
{
    char pe[256], ee[256];
    snprintf(path, len, "/v1/ps?project=%s&env=%s",
             client_urlenc(t->cfg->project.name, pe, sizeof(pe)),
             client_urlenc(t->envp->name, ee, sizeof(ee)));
}

/* Each service's revision in a ps answer: {"web": "3f2a9c1d7b4e"}. Takes
 * RESP. */
static json_t *revisions_of(json_t *resp)
{
    json_t *out = json_object();
    size_t k;
    json_t *s;
    json_array_foreach(json_object_get(resp, "services"), k, s) {
        const char *name = json_string_value(json_object_get(s, "service"));
        const char *rev = json_string_value(json_object_get(s, "revision"));
        if (name && rev)
            json_object_set_new(out, name, json_string(rev));
    }
    json_decref(resp);
    return out;
}

/* The same, asked of the current server now. */
static json_t *server_revisions(const struct cli_target *t)
{
    char path[1024];
    revisions_path(t, path, sizeof(path));
    json_t *resp = NULL;
    if (client_get("deploy", path, &resp))
        return NULL;
    return revisions_of(resp);
}

/* Bring server i back to BEFORE: every service whose revision changed goes
 * back to exactly the revision it ran (POST /v1/rollback with the
 * revision: takod keeps each revision's configuration and files). Appends
 * what it did to NOTE; returns 0 or the exit status of the failure. */
static int server_undo(struct cli_target *t, size_t i, json_t *before, char *note, size_t len)
{
    cli_use_server(t, i);
    json_t *now = server_revisions(t);
    if (!now) {
        snprintf(note, len, "cannot be asked which revision it runs; see 'tako ps'");
        return EXIT_FAILED;
    }
    int rc = 0;
    size_t used = 0;
    note[0] = '\0';
    const char *svc;
    json_t *v;
    json_object_foreach(now, svc, v) {
        const char *cur = json_string_value(v);
        const char *old = json_string_value(json_object_get(before, svc));
        if (t->service && strcmp(t->service, svc) != 0)
            continue;
        if (!old) {
            used += (size_t)snprintf(note + used, used < len ? len - used : 0,
                                     "%s%s is new in this deploy and stays", used ? ", " : "",
                                     svc);
            continue;
        }
        if (strcmp(cur, old) == 0)
            continue;
        if (!t->json)
            printf("Rolling back %s on server %s from %s to %s\n", svc, t->servers[i].cfg->name,
                   cur, old);
        fflush(stdout);
        json_t *body = json_pack("{s:s, s:s, s:s, s:s}", "project", t->cfg->project.name, "env",
                                 t->envp->name, "service", svc, "revision", old);
        int r = cli_run_operation("rollback", "/v1/rollback", body, t->json);
        json_decref(body);
        used += (size_t)snprintf(note + used, used < len ? len - used : 0, "%s%s %s %s",
                                 used ? ", " : "", svc, r ? "could not go back to" : "back on",
                                 old);
        if (r && !rc)
            rc = r;
    }
    if (!used)
        snprintf(note, len, "unchanged");
    json_decref(now);
    return rc;
}

static int prepare_one(struct cli_target *t, size_t i, int fd, void *arg)
{
    (void)i;
    (void)fd;
    (void)arg;
    return cli_remote_prepare(t, t->json);
}

/* Ship every service's tree to server I; writes the configurations, as
 * shipping rewrote them, to FD (a JSON array, one per service). */
static int ship_one(struct cli_target *t, size_t i, int fd, void *arg)
{
    json_t **cfgs = arg;
    const struct cfg_env *env = t->envp;
    json_t *a = json_array();
    int rc = 0;
    for (size_t k = 0; k < env->services_len && !rc; k++) {
        const struct cfg_service *s = &env->services[k];
        json_t *c = cfgs[i * env->services_len + k];
        if (!t->service || strcmp(t->service, s->name) == 0)
            rc = cli_remote_ship(t, s, c, t->json);
        json_array_append(a, c);
    }
    if (!rc) {
        char *text = json_dumps(a, JSON_COMPACT);
        if (!text || write_all(fd, text, strlen(text)) < 0)
            rc = EXIT_FAILED;
        free(text);
    }
    json_decref(a);
    return rc;
}

/* An environment with several servers: prepare, lock and ship on every
 * server first (any failure: nothing is rolled out anywhere), then roll
 * out server by server, each with its share of the replicas. */
static int deploy_multi(struct cli_target *t, bool force, uint64_t lock_wait)
{
    const struct cfg_env *env = t->envp;
    size_t n = t->n_servers;
    int *rcs = xcalloc(n, sizeof(int));
    int *locks = xcalloc(n, sizeof(int));
    json_t **cfgs = xcalloc(n * (env->services_len ? env->services_len : 1), sizeof(json_t *));
    char (*revs)[13] = xcalloc(env->services_len ? env->services_len : 1, sizeof(*revs));
    int rc = 0;
    json_t **before = NULL;
    enum roll_state *st = NULL;
    bool handlers = false;
    struct sigaction old_sa[3];
    static const int sigs[3] = {SIGINT, SIGTERM, SIGHUP};
    for (size_t i = 0; i < n; i++)
        locks[i] = -1;
    for (size_t k = 0; k < env->services_len; k++) {
        const struct cfg_service *s = &env->services[k];
        if (!s->argv && !(s->runtime && strcmp(s->runtime, "docker") == 0)) {
            fprintf(stderr,
                    "tako deploy: service %s has no command; the process runtime needs "
                    "'command' (or set runtime: docker to run its image)\n",
                    s->name);
            rc = EXIT_USAGE;
            goto out;
        }
    }
    /* 1. Every server prepared (idempotent), all at once ... */
    bool bad = false;
    cli_parallel(t, prepare_one, NULL, rcs, NULL);
    for (size_t i = 0; i < n; i++)
        bad |= rcs[i] != 0;
    if (bad) {
        rc = multi_refuse(t, "preparing the server", rcs);
        goto out;
    }
    /* 2. ... and locked ... */
    for (size_t i = 0; i < n; i++) {
        if (!cli_server_active(t, i) || t->servers[i].local)
            continue;
        cli_use_server(t, i);
        rcs[i] = cli_remote_lock(t, lock_wait, &locks[i]);
        bad |= rcs[i] != 0;
    }
    if (bad) {
        rc = multi_refuse(t, "taking the deploy lock", rcs);
        goto out;
    }
    /* 3. ... with every service's files, to all servers at once: nothing
     * runs anywhere until all arrived. */
    for (size_t k = 0; k < env->services_len; k++) {
        const struct cfg_service *s = &env->services[k];
        json_t *cj = cfg_service_to_json(s);
        cli_revision(s, cj, revs[k]);
        for (size_t i = 0; i < n; i++)
            cfgs[i * env->services_len + k] = json_deep_copy(cj);
        json_decref(cj);
    }
    char **shipped = xcalloc(n, sizeof(char *));
    cli_parallel(t, ship_one, cfgs, rcs, shipped);
    for (size_t i = 0; i < n; i++) {
        /* the configurations as the child left them: build and workdir
         * point at the tree on the server */
        json_t *a = shipped[i] && !rcs[i] ? json_loads(shipped[i], 0, NULL) : NULL;
        if (shipped[i] && !rcs[i] && json_array_size(a) != env->services_len) {
            fprintf(stderr, "tako deploy: server %s: lost the shipped trees' places\n",
                    t->servers[i].cfg->name);
            rcs[i] = EXIT_FAILED;
        }
        for (size_t k = 0; a && k < json_array_size(a) && k < env->services_len; k++) {
            json_decref(cfgs[i * env->services_len + k]);
            cfgs[i * env->services_len + k] = json_incref(json_array_get(a, k));
        }
        json_decref(a);
        free(shipped[i]);
        bad |= rcs[i] != 0;
    }
    free(shipped);
    if (bad) {
        rc = multi_refuse(t, "sending the app", rcs);
        goto out;
    }
    /* 4. Roll out server by server, keeping what each ran before: a failure
     * or an interrupt brings the servers already changed back to it. */
    size_t done = 0, active = 0;
    for (size_t i = 0; i < n; i++)
        active += cli_server_active(t, i);
    before = xcalloc(n, sizeof(json_t *));
    st = xcalloc(n, sizeof(*st));
    char rpath[1024];
    revisions_path(t, rpath, sizeof(rpath));
    int *sts = xcalloc(n, sizeof(int));
    json_t **resps = xcalloc(n, sizeof(json_t *));
    cli_parallel_get(t, rpath, sts, resps);
    for (size_t i = 0; i < n; i++) {
        if (sts[i] == 200)
            before[i] = revisions_of(resps[i]);
        else
            json_decref(resps[i]);
    }
    free(resps);
    for (size_t i = 0; i < n; i++) {
        if (!cli_server_active(t, i))
            continue;
        if (!before[i]) {
            char why[128];
            if (sts[i] < 0)
                snprintf(why, sizeof(why), "%s", strerror(-sts[i]));
            else
                snprintf(why, sizeof(why), "takod answered HTTP %d", sts[i]);
            fprintf(stderr, "tako deploy: cannot read the revisions server %s runs (%s); "
                            "nothing was rolled out on any server of environment %s\n",
                    t->servers[i].cfg->name, why, env->name);
            free(sts);
            rc = EXIT_UNAVAIL;
            goto out;
        }
    }
    free(sts);
    struct sigaction sa = {.sa_handler = on_stop, .sa_flags = SA_RESTART};
    sigemptyset(&sa.sa_mask);
    g_stops = 0;
    state_prepare(t, st);
    for (size_t k = 0; k < 3; k++)
        sigaction(sigs[k], &sa, &old_sa[k]);
    handlers = true;
    size_t failed_at = n;
    for (size_t i = 0; i < n && !g_stops; i++) {
        if (!cli_server_active(t, i))
            continue;
        json_t *services = json_array();
        for (size_t k = 0; k < env->services_len; k++) {
            const struct cfg_service *s = &env->services[k];
            json_t *c = json_incref(cfgs[i * env->services_len + k]);
            json_t *entry = json_pack("{s:s, s:o, s:s, s:s}", "name", s->name, "config", c,
                                      "revision", revs[k], "source", s->build ? s->build : "");
            unsigned mine = cli_place_fields(t, s, s->replicas, i, entry);
            json_object_set_new(c, "replicas", json_integer(mine));
            json_array_append_new(services, entry);
        }
        json_t *body = json_pack("{s:s, s:s, s:i, s:o, s:b, s:o, s:o}", "project",
                                 t->cfg->project.name, "env", env->name, "http_port",
                                 (int)env->http_port, "services", services, "force", force,
                                 "metrics", metrics_json(t), "peers", cli_peers_json(t, i));
        if (t->service)
            json_object_set_new(body, "service", json_string(t->service));
        cli_use_server(t, i);
        char label[512];
        if (!t->json)
            printf("Deploying %s (%s) to %s [%zu/%zu] from %s\n", t->cfg->project.name,
                   env->name, cli_server_label(t, i, label, sizeof(label)), done + 1, active,
                   t->cfg->path);
        fflush(stdout);
        st[i] = ROLL_RUNNING;
        state_prepare(t, st);
        rc = cli_run_operation_wait("deploy", "/v1/deploy", body, t->json, lock_wait);
        json_decref(body);
        /* Failed: its takod rolled back what it could; a service of several
         * may have gone through, so it is checked like the others. */
        st[i] = rc ? ROLL_FAILED : ROLL_NEW;
        state_prepare(t, st);
        if (rc) {
            failed_at = i;
            break;
        }
        done++;
    }
    if (rc || (g_stops && done < active)) {
        /* Back to one revision: the one every server ran before. */
        int urc = 0;
        char notes[64][512];
        size_t last = failed_at < n ? failed_at : n;
        for (size_t i = 0; i < last || (i < n && i == failed_at); i++)
            if (cli_server_active(t, i) && (st[i] == ROLL_NEW || st[i] == ROLL_FAILED) &&
                i < 64) {
                enum roll_state was = st[i];
                st[i] = ROLL_UNDOING;
                state_prepare(t, st);
                int r = server_undo(t, i, before[i], notes[i], sizeof(notes[i]));
                st[i] = r ? was : ROLL_UNDONE;
                state_prepare(t, st);
                if (r && !urc)
                    urc = r;
            }
        if (rc)
            fprintf(stderr, "tako deploy: the rollout failed on server %s; ",
                    t->servers[failed_at].cfg->name);
        else
            fprintf(stderr, "tako deploy: interrupted; ");
        fprintf(stderr, "%s every server of environment %s to the revision it ran before:\n",
                urc ? "could not bring" : "brought", env->name);
        for (size_t i = 0; i < n; i++) {
            if (!cli_server_active(t, i))
                continue;
            fprintf(stderr, "  server %s: %s\n", t->servers[i].cfg->name,
                    st[i] == ROLL_BEFORE ? "not started, unchanged"
                    : i < 64             ? notes[i]
                                         : "see 'tako ps'");
        }
        if (urc)
            fprintf(stderr, "Run 'tako ps %s' to see each server's revision, and deploy again "
                            "to bring them to one.\n",
                    env->name);
        if (!rc)
            rc = urc ? urc : 128 + g_first_sig;
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        if (t->servers[i].skipped && !t->json)
            printf("server %s skipped (--skip): not changed\n", t->servers[i].cfg->name);
    if (!t->json) {
        char *ps_argv[] = {"ps", "-f", t->cfg->path, "-e", (char *)env->name, "-a", NULL};
        printf("\n");
        cmd_ps(6, ps_argv);
    }
out:
    if (handlers)
        for (size_t k = 0; k < 3; k++)
            sigaction(sigs[k], &old_sa[k], NULL);
    if (before)
        for (size_t i = 0; i < n; i++)
            json_decref(before[i]);
    free(before);
    free(st);
    for (size_t i = 0; i < n; i++)
        if (locks[i] >= 0)
            close(locks[i]);
    for (size_t i = 0; i < n * env->services_len; i++)
        json_decref(cfgs[i]);
    free(cfgs);
    free(revs);
    free(locks);
    free(rcs);
    return rc;
}

int cmd_deploy(int argc, char **argv)
{
    static const struct option opts[] = {CLI_COMMON_OPTS,
                                         {"force", no_argument, NULL, 'F'},
                                         {"lock-wait", required_argument, NULL, 'W'},
                                         {"skip", required_argument, NULL, 'K'},
                                         {0}};
    const char *skip[64];
    size_t n_skip = 0;
    struct cli_target t = {.cmd = "deploy"};
    bool force = false;
    uint64_t lock_wait = 0;
    int o;
    optind = 1;
    opterr = 0;
    while ((o = getopt_long(argc, argv, CLI_COMMON_SHORT, opts, NULL)) != -1) {
        int r = cli_common_opt(&t, o, optarg);
        if (r < 0)
            return -r;
        if (r)
            continue;
        if (o == 'F')
            force = true;
        else if (o == 'K') {
            if (n_skip == ARRAY_LEN(skip))
                return cli_usage_error("deploy", "too many --skip");
            skip[n_skip++] = optarg;
        }
        else if (o == 'W') {
            if (parse_duration_ms(optarg, &lock_wait) < 0)
                return cli_usage_error("deploy", "invalid --lock-wait '%s' (e.g. 30s, 5m)",
                                       optarg);
        } else
            return cli_usage_error("deploy", "unknown option '%s'", argv[optind - 1]);
    }
    if (optind < argc)
        t.env = argv[optind++];
    if (optind < argc)
        return cli_usage_error("deploy", "unexpected argument '%s'", argv[optind]);
    t.skip = skip;
    t.n_skip = n_skip;
    int rc = cli_target_load(&t, true, true);
    if (rc)
        return rc;
    if (n_skip && !t.servers) {
        cli_target_free(&t);
        return cli_usage_error("deploy", "--skip is for an environment with several servers");
    }
    if (t.servers) {
        rc = deploy_multi(&t, force, lock_wait);
        cli_target_free(&t);
        return rc;
    }
    const struct cfg_env *env = t.envp;
    int lock_fd = -1;
    if (t.remote) {
        /* Setup first (idempotent, atomic): the lock is kept by tako itself there. */
        rc = cli_remote_prepare(&t, t.json);
        if (!rc)
            rc = cli_remote_lock(&t, lock_wait, &lock_fd);
        if (rc) {
            if (lock_fd >= 0)
                close(lock_fd);
            cli_target_free(&t);
            return rc;
        }
    }
    json_t *services = json_array();
    bool docker_checked = false;
    for (size_t i = 0; i < env->services_len; i++) {
        const struct cfg_service *s = &env->services[i];
        bool docker = s->runtime && strcmp(s->runtime, "docker") == 0;
        if (docker && !docker_checked && !t.remote) {
            /* takod talks to the engine of its own machine; for this one,
             * say here, at the key that asks for it, when there is none to
             * talk to (a remote takod reports its own in the deploy) */
            char why[512];
            struct dk_client *dc = NULL;
            if (dk_open(NULL, &dc, why, sizeof(why)) < 0) {
                fprintf(stderr, "%s: %s: %s\n", s->runtime_at, s->runtime_path, why);
                json_decref(services);
                cli_target_free(&t);
                return EXIT_USAGE;
            }
            dk_close(dc);
            docker_checked = true;
        }
        if (!s->argv && !docker) {
            fprintf(stderr,
                    "tako deploy: service %s has no command; the process runtime needs "
                    "'command' (or set runtime: docker to run its image)\n",
                    s->name);
            json_decref(services);
            if (lock_fd >= 0)
                close(lock_fd);
            cli_target_free(&t);
            return EXIT_USAGE;
        }
        json_t *cj = cfg_service_to_json(s);
        char rev[13];
        cli_revision(s, cj, rev);
        /* On a server, the files go first; nothing runs there until all arrived. */
        if (t.remote && (!t.service || strcmp(t.service, s->name) == 0) &&
            (rc = cli_remote_ship(&t, s, cj, t.json)) != 0) {
            json_decref(cj);
            json_decref(services);
            if (lock_fd >= 0)
                close(lock_fd);
            cli_target_free(&t);
            return rc;
        }
        json_array_append_new(services, json_pack("{s:s, s:o, s:s, s:s}", "name", s->name,
                                                  "config", cj, "revision", rev, "source",
                                                  s->build ? s->build : ""));
    }
    json_t *body = json_pack("{s:s, s:s, s:i, s:o, s:b}", "project", t.cfg->project.name, "env",
                             env->name, "http_port", (int)env->http_port, "services", services,
                             "force", force);
    if (t.service)
        json_object_set_new(body, "service", json_string(t.service));
    json_object_set_new(body, "metrics", metrics_json(&t));
    if (!t.json && t.remote)
        printf("Deploying %s (%s) to server %s (%s) from %s\n", t.cfg->project.name, env->name,
               t.server->name, ssh_where(t.remote), t.cfg->path);
    else if (!t.json)
        printf("Deploying %s (%s) from %s\n", t.cfg->project.name, env->name, t.cfg->path);
    rc = cli_run_operation_wait("deploy", "/v1/deploy", body, t.json, lock_wait);
    json_decref(body);
    if (rc == EXIT_OK && !t.json) {
        /* Show where it runs now. */
        char *ps_argv[] = {"ps", "-f", t.cfg->path, "-e", (char *)env->name, NULL};
        printf("\n");
        cmd_ps(5, ps_argv);
    }
    if (lock_fd >= 0)
        close(lock_fd);
    cli_target_free(&t);
    return rc;
}
