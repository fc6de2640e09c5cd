/* logs.c — `tako logs`: the replicas' captured output merged by time, each
 * line prefixed with its instance name; -f follows. Everything comes from
 * takod's GET /v1/logs stream, which reads it through the runtime drivers. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/common.h"
#include "core/util.h"
#include "cli/client.h"
#include "remote/ssh.h"

const char help_logs[] =
    "Usage: tako logs [ENV] [INSTANCE] [--service NAME] [--tail N] [--since DURATION] [-f]\n"
    "                 [-t] [-e ENV] [-f FILE | --project NAME]\n"
    "\n"
    "Show the output (stdout and stderr) of the project's replicas, merged by time,\n"
    "each line prefixed with its instance name (coloured on a terminal):\n"
    "  scaling-web-1 | listening on 3000\n"
    "INSTANCE is a replica name (scaling-web-2) to show only that one; one word\n"
    "alone is the environment when it has no '-' (tako logs production -f). Logs of\n"
    "replicas that were stopped stay readable until their files are rotated away.\n"
    "With several servers, the lines of every server are merged by time (--tail N:\n"
    "the newest N of them all) and -f follows every server at once.\n"
    "An INSTANCE no server has lines of is an error (exit 2).\n"
    "\n"
    "Options:\n" CLI_COMMON_HELP
    "  -n, --tail N           the last N lines (default 100; 0 = all)\n"
    "      --since DURATION   only lines newer than this (10s, 5m, 2h)\n"
    "      --follow           keep printing new lines (Ctrl-C to stop); short form -F\n"
    "  -t, --timestamps       show each line's capture time (UTC)\n"
    "\n"
    "Read through takod from each replica's runtime (process replicas: files under\n"
    "$TAKO_HOME/replicas/<name>/, rotated by size: 10 MiB × 3 by default; see\n"
    "docs/runtime.md).\n";

/* -f over several servers: one child per server, each following its
 * server's stream and printing whole lines as they come. */
static pid_t g_children[64];
static size_t g_n_children;

static void on_int(int sig)
{
    (void)sig;
    for (size_t i = 0; i < g_n_children; i++)
        kill(g_children[i], SIGTERM);
    /* Every printed line was flushed already; a server's ssh connection is
     * closed and its directory removed first. */
    ssh_close_all();
    _exit(EXIT_OK);
}

static void print_line(const char *name, const char *text, int color, bool ts, size_t width)
{
    /* text: "<ts> <stream> <message>" */
    const char *sp1 = strchr(text, ' ');
    const char *msg = text;
    if (sp1) {
        const char *sp2 = strchr(sp1 + 1, ' ');
        msg = sp2 ? sp2 + 1 : sp1 + 1;
    }
    if (color)
        printf("\033[%dm%-*s |\033[0m ", color, (int)width, name);
    else
        printf("%-*s | ", (int)width, name);
    if (ts && sp1)
        printf("%.*s ", (int)(sp1 - text), text);
    printf("%s\n", msg);
}

/* The stream's state: sources in the order takod announced them (that
 * order picks their colours), the name column's width. */
struct logs_view {
    char **names;
    size_t n;
    size_t width;
    bool color, ts, follow, got_sources;
    json_t *error; /* an error answer instead of a stream */
};

static const int colors[] = {36, 33, 32, 35, 34, 91, 92, 93, 94, 95, 96};

static void add_source(struct logs_view *v, const char *name)
{
    v->names = xrealloc(v->names, (v->n + 1) * sizeof(*v->names));
    v->names[v->n++] = xstrdup(name);
    if (strlen(name) > v->width)
        v->width = strlen(name);
}

static int color_of(const struct logs_view *v, const char *name)
{
    if (!v->color)
        return 0;
    for (size_t i = 0; i < v->n; i++)
        if (strcmp(v->names[i], name) == 0)
            return colors[i % ARRAY_LEN(colors)];
    return 0;
}

static void on_logs_line(json_t *j, void *data)
{
    struct logs_view *v = data;
    const char *type = json_string_value(json_object_get(j, "type"));
    if (!type) {
        if (json_object_get(j, "error") && !v->error) {
            v->error = j;
            return;
        }
    } else if (strcmp(type, "sources") == 0) {
        size_t i;
        json_t *nm;
        v->got_sources = true;
        json_array_foreach(json_object_get(j, "names"), i, nm)
            if (json_is_string(nm))
                add_source(v, json_string_value(nm));
    } else if (strcmp(type, "source") == 0 && json_is_string(json_object_get(j, "name"))) {
        add_source(v, json_string_value(json_object_get(j, "name")));
    } else if (strcmp(type, "line") == 0) {
        const char *name = json_string_value(json_object_get(j, "name"));
        const char *text = json_string_value(json_object_get(j, "text"));
        if (name && text) {
            print_line(name, text, color_of(v, name), v->ts, v->width);
            if (v->follow)
                fflush(stdout);
        }
    }
    json_decref(j);
}

/* Several servers without -f: every server's lines, merged by the capture
 * time each line starts with, the last TAIL of them (0: all). */
struct collected {
    char **name, **text;
    size_t n;
    json_t *error;
};

static void on_collect(json_t *j, void *data)
{
    struct collected *c = data;
    const char *type = json_string_value(json_object_get(j, "type"));
    if (!type && json_object_get(j, "error") && !c->error) {
        c->error = j;
        return;
    }
    const char *name = json_string_value(json_object_get(j, "name"));
    const char *text = json_string_value(json_object_get(j, "text"));
    if (type && strcmp(type, "line") == 0 && name && text) {
        c->name = xrealloc(c->name, (c->n + 1) * sizeof(char *));
        c->text = xrealloc(c->text, (c->n + 1) * sizeof(char *));
        c->name[c->n] = xstrdup(name);
        c->text[c->n] = xstrdup(text);
        c->n++;
    }
    json_decref(j);
}

static struct collected *g_sort;

static int by_time(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    const char *tx = g_sort->text[x], *ty = g_sort->text[y];
    size_t lx = strcspn(tx, " "), ly = strcspn(ty, " ");
    int r = strncmp(tx, ty, lx < ly ? lx : ly);
    if (!r && lx != ly)
        r = lx < ly ? -1 : 1;
    return r ? r : (x < y ? -1 : x > y); /* stable: each server's own order */
}

static int logs_multi(struct cli_target *t, const char *path, uint64_t tail, bool follow,
                      struct logs_view *v, const char *instance)
{
    int rc = EXIT_OK;
    if (follow) {
        fflush(stdout);
        for (size_t i = 0; i < t->n_servers && g_n_children < ARRAY_LEN(g_children); i++) {
            if (!cli_server_active(t, i)) {
                if (!t->servers[i].skipped)
                    fprintf(stderr, "tako logs: %s\n", t->servers[i].error);
                rc = EXIT_UNAVAIL;
                continue;
            }
            pid_t pid = fork();
            if (pid == 0) {
                /* the connections are the parent's to close */
                signal(SIGINT, SIG_DFL);
                signal(SIGTERM, SIG_DFL);
                signal(SIGHUP, SIG_DFL);
                client_use_remote(t->servers[i].conn);
                int st = client_stream("GET", path, NULL, on_logs_line, v);
                fflush(stdout);
                if (st != 200)
                    fprintf(stderr, "tako logs: server %s: the stream ended (%s)\n",
                            t->servers[i].cfg->name, st < 0 ? strerror(-st) : "error");
                _exit(st == 200 ? 0 : EXIT_UNAVAIL);
            }
            if (pid > 0)
                g_children[g_n_children++] = pid;
        }
        for (size_t i = 0; i < g_n_children; i++) {
            int st;
            while (waitpid(g_children[i], &st, 0) == -1 && errno == EINTR)
                ;
            if (WIFEXITED(st) && WEXITSTATUS(st) && !rc)
                rc = WEXITSTATUS(st);
        }
        return rc;
    }
    struct collected c = {0};
    for (size_t i = 0; i < t->n_servers; i++) {
        if (!cli_server_active(t, i)) {
            if (!t->servers[i].skipped)
                fprintf(stderr, "tako logs: %s\n", t->servers[i].error);
            rc = EXIT_UNAVAIL;
            continue;
        }
        cli_use_server(t, i);
        int st = client_stream("GET", path, NULL, on_collect, &c);
        if (st < 0) {
            fprintf(stderr, "tako logs: server %s: %s\n", t->servers[i].cfg->name,
                    strerror(-st));
            rc = EXIT_UNAVAIL;
        } else if (st != 200) {
            fprintf(stderr, "tako logs: server %s: ", t->servers[i].cfg->name);
            rc = client_report_error("logs", st, c.error);
        }
        json_decref(c.error);
        c.error = NULL;
    }
    size_t *order = xcalloc(c.n ? c.n : 1, sizeof(size_t));
    for (size_t i = 0; i < c.n; i++)
        order[i] = i;
    g_sort = &c;
    qsort(order, c.n, sizeof(size_t), by_time);
    size_t from = tail && c.n > tail ? c.n - tail : 0;
    for (size_t k = from; k < c.n; k++) {
        const char *nm = c.name[order[k]];
        bool known = false;
        for (size_t j = 0; j < v->n && !known; j++)
            known = strcmp(v->names[j], nm) == 0;
        if (!known)
            add_source(v, nm);
    }
    for (size_t k = from; k < c.n; k++)
        print_line(c.name[order[k]], c.text[order[k]], color_of(v, c.name[order[k]]), v->ts,
                   v->width);
    if (c.n == 0 && rc == EXIT_OK && instance) {
        /* as with one server: a name no server has lines of is a mistake */
        fprintf(stderr, "tako logs: no logs for instance %s on any server of environment %s\n",
                instance, t->envp->name);
        rc = EXIT_USAGE;
    } else if (c.n == 0 && rc == EXIT_OK) {
        fprintf(stderr, "tako logs: no logs yet\n");
    }
    for (size_t i = 0; i < c.n; i++) {
        free(c.name[i]);
        free(c.text[i]);
    }
    free(c.name);
    free(c.text);
    free(order);
    return rc;
}

int cmd_logs(int argc, char **argv)
{
    static const struct option opts[] = {CLI_COMMON_OPTS,
                                         {"tail", required_argument, NULL, 'n'},
                                         {"since", required_argument, NULL, 'S'},
                                         {"follow", no_argument, NULL, 'F'},
                                         {"timestamps", no_argument, NULL, 't'},
                                         {0}};
    struct cli_target t = {.cmd = "logs"};
    uint64_t tail = 100, since = 0;
    bool follow = false, ts = false;
    int o;
    optind = 1;
    opterr = 0;
    /* -f is the config file everywhere; `-f` right after logs with no value
     * is taken as follow, as users of docker/kubectl expect. */
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "-f") == 0 && (i + 1 >= argc || argv[i + 1][0] == '-' ||
                                           access(argv[i + 1], F_OK) != 0))
            argv[i] = "--follow";
    while ((o = getopt_long(argc, argv, CLI_COMMON_SHORT "n:tF", opts, NULL)) != -1) {
        int r = cli_common_opt(&t, o, optarg);
        if (r < 0)
            return -r;
        if (r)
            continue;
        switch (o) {
        case 'n':
            if (parse_uint(optarg, 100000000, &tail) < 0)
                return cli_usage_error("logs", "invalid --tail '%s'", optarg);
            break;
        case 'S':
            if (parse_duration_ms(optarg, &since) < 0)
                return cli_usage_error("logs", "invalid --since '%s' (e.g. 10s, 5m, 2h)", optarg);
            break;
        case 'F': follow = true; break;
        case 't': ts = true; break;
        default: return cli_usage_error("logs", "unknown option '%s'", argv[optind - 1]);
        }
    }
    const char *instance = NULL;
    if (optind + 1 < argc && !t.env) /* tako logs production scaling-web-2 */
        t.env = argv[optind++];
    if (optind < argc)
        instance = argv[optind++];
    if (optind < argc)
        return cli_usage_error("logs", "unexpected argument '%s'", argv[optind]);
    /* `tako logs prod -f`: replica names always have a '-', so a word
     * without one names the environment. */
    if (instance && !t.env && !strchr(instance, '-')) {
        t.env = instance;
        instance = NULL;
    }
    t.partial = true;
    int rc = cli_target_load(&t, false, false);
    if (rc)
        return rc;
    const char *project = cli_target_project(&t);
    uint64_t since_wall = since ? time_wall_ms() - since : 0;
    char path[1024], e1[300], e2[300], e3[300];
    snprintf(path, sizeof(path), "/v1/logs?project=%s&service=%s&instance=%s&tail=%llu&since_ms=%llu%s",
             client_urlenc(project ? project : "", e1, sizeof(e1)),
             client_urlenc(t.service ? t.service : "", e2, sizeof(e2)),
             client_urlenc(instance ? instance : "", e3, sizeof(e3)), (unsigned long long)tail,
             (unsigned long long)since_wall, follow ? "&follow=1" : "");
    struct logs_view v = {.color = cli_color(stdout), .ts = ts, .follow = follow};
    if (follow) {
        signal(SIGINT, on_int);
        signal(SIGTERM, on_int);
    }
    if (t.servers) {
        /* the per-server tail is the whole tail: the merge keeps the newest */
        rc = logs_multi(&t, path, tail, follow, &v, instance);
        for (size_t i = 0; i < v.n; i++)
            free(v.names[i]);
        free(v.names);
        cli_target_free(&t);
        return rc;
    }
    int st = client_stream("GET", path, NULL, on_logs_line, &v);
    fflush(stdout);
    if (st < 0)
        rc = client_unavailable(st);
    else if (st != 200)
        rc = client_report_error("logs", st, v.error);
    else if (v.n == 0 && !follow) {
        if (instance)
            fprintf(stderr, "tako logs: no logs for instance %s\n", instance);
        else
            fprintf(stderr, "tako logs: no logs%s%s yet\n", project ? " for project " : "",
                    project ? project : "");
        rc = instance ? EXIT_USAGE : EXIT_OK;
    }
    for (size_t i = 0; i < v.n; i++)
        free(v.names[i]);
    free(v.names);
    json_decref(v.error);
    cli_target_free(&t);
    return rc;
}
