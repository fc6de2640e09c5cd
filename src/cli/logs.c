/* logs.c — `tako logs`: the replicas' captured output merged by time, each
 * line prefixed with its instance name; -f follows across rotations. The
 * files live in $TAKO_HOME/replicas/<name>/ on this machine. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/common.h"
#include "core/util.h"
#include "daemon/home.h"
#include "remote/remote.h"
#include "runtime/rt.h"

const char help_logs[] =
    "Usage: tako logs [INSTANCE] [--service NAME] [--tail N] [--since DURATION] [-f]\n"
    "                 [-t] [-e ENV] [-f FILE | --project NAME]\n"
    "\n"
    "Show the output (stdout and stderr) of the project's replicas, merged by time,\n"
    "each line prefixed with its instance name (coloured on a terminal):\n"
    "  scaling-web-1 | listening on 3000\n"
    "INSTANCE is a replica name (scaling-web-2) to show only that one. Logs of\n"
    "replicas that were stopped stay readable until their files are rotated away.\n"
    "\n"
    "Options:\n" CLI_COMMON_HELP
    "  -n, --tail N           the last N lines (default 100; 0 = all)\n"
    "      --since DURATION   only lines newer than this (10s, 5m, 2h)\n"
    "      --follow           keep printing new lines (Ctrl-C to stop); short form -F\n"
    "  -t, --timestamps       show each line's capture time (UTC)\n"
    "\n"
    "Files: $TAKO_HOME/replicas/<name>/ (rotated by size: 10 MiB × 3 by default;\n"
    "see docs/runtime.md).\n";

struct src {
    char name[128];
    char path[4200];
    ino_t ino;
    off_t off;
    char *partial;
    size_t partial_len;
    int color;
};

static volatile sig_atomic_t g_stop;
static void on_int(int sig)
{
    (void)sig;
    g_stop = 1;
}

static bool name_matches(const char *name, const char *project, const char *service,
                         const char *instance)
{
    if (instance)
        return strcmp(name, instance) == 0;
    if (!project)
        return true;
    size_t pl = strlen(project);
    if (strncmp(name, project, pl) != 0 || name[pl] != '-')
        return false;
    const char *rest = name + pl + 1;
    const char *dash = strrchr(rest, '-');
    if (!dash || dash == rest || !isdigit((unsigned char)dash[1]))
        return false;
    for (const char *p = dash + 1; *p; p++)
        if (!isdigit((unsigned char)*p))
            return false;
    if (service)
        return (size_t)(dash - rest) == strlen(service) && strncmp(rest, service, strlen(service)) == 0;
    return true;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Replica names that have a log directory. */
static char **list_names(const char *home, const char *project, const char *service,
                         const char *instance, size_t *n)
{
    char dir[4200];
    snprintf(dir, sizeof(dir), "%s/replicas", home);
    DIR *d = opendir(dir);
    char **v = NULL;
    *n = 0;
    if (!d)
        return NULL;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || !name_matches(e->d_name, project, service, instance))
            continue;
        v = xrealloc(v, (*n + 1) * sizeof(*v));
        v[(*n)++] = xstrdup(e->d_name);
    }
    closedir(d);
    qsort(v, *n, sizeof(*v), cmp_str);
    return v;
}

struct line {
    const char *name;
    char *text;
    int color;
};

static int cmp_line(const void *a, const void *b)
{
    const struct line *x = a, *y = b;
    /* Lines start with an ISO-8601 UTC timestamp: text order is time order. */
    int c = strncmp(x->text, y->text, 24);
    return c ? c : strcmp(x->name, y->name);
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

static void follow_read(struct src *s, bool ts, size_t width)
{
    struct stat st;
    if (stat(s->path, &st) != 0)
        return;
    if (st.st_ino != s->ino || st.st_size < s->off) {
        /* Rotated (or a new file): read the new one from its start. */
        s->ino = st.st_ino;
        s->off = 0;
    }
    if (st.st_size == s->off)
        return;
    int fd = open(s->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    if (lseek(fd, s->off, SEEK_SET) == (off_t)-1) {
        close(fd);
        return;
    }
    char buf[65536];
    ssize_t k;
    while ((k = read(fd, buf, sizeof(buf))) > 0) {
        s->off += k;
        s->partial = xrealloc(s->partial, s->partial_len + (size_t)k + 1);
        memcpy(s->partial + s->partial_len, buf, (size_t)k);
        s->partial_len += (size_t)k;
        size_t start = 0;
        for (size_t i = 0; i < s->partial_len; i++) {
            if (s->partial[i] != '\n')
                continue;
            s->partial[i] = '\0';
            print_line(s->name, s->partial + start, s->color, ts, width);
            start = i + 1;
        }
        memmove(s->partial, s->partial + start, s->partial_len - start);
        s->partial_len -= start;
    }
    close(fd);
    fflush(stdout);
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
    int rc = cli_target_load(&t, false, false);
    if (rc)
        return rc;
    if (t.remote) {
        /* The files are on the server: its tako reads them there. */
        if (instance && strspn(instance, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                         "0123456789._-") != strlen(instance)) {
            cli_target_free(&t);
            return cli_usage_error("logs", "invalid instance name '%s'", instance);
        }
        char since_s[48] = "";
        if (since)
            snprintf(since_s, sizeof(since_s), " --since %llums", (unsigned long long)since);
        char *full = xasprintf("%s" REMOTE_BIN " logs --project %s%s%s --tail %llu%s%s%s%s%s",
                               remote_sudo(t.remote), cli_target_project(&t),
                               t.service ? " --service " : "", t.service ? t.service : "",
                               (unsigned long long)tail, follow ? " --follow" : "",
                               ts ? " --timestamps" : "", since_s, instance ? " " : "",
                               instance ? instance : "");
        rc = ssh_exec(t.remote, full);
        free(full);
        cli_target_free(&t);
        return rc == 255 ? EXIT_UNAVAIL : rc;
    }
    const char *home = tako_home();
    if (!home) {
        fprintf(stderr, "tako logs: no state directory: %s\n", strerror(errno));
        return EXIT_FAILED;
    }
    const char *project = cli_target_project(&t);
    size_t n = 0;
    char **names = list_names(home, project, t.service, instance, &n);
    if (n == 0 && !follow) {
        if (instance)
            fprintf(stderr, "tako logs: no logs for instance %s\n", instance);
        else
            fprintf(stderr, "tako logs: no logs%s%s yet\n", project ? " for project " : "",
                    project ? project : "");
        cli_target_free(&t);
        return instance ? EXIT_USAGE : EXIT_OK;
    }
    static const int colors[] = {36, 33, 32, 35, 34, 91, 92, 93, 94, 95, 96};
    bool color = cli_color(stdout);
    size_t width = 0;
    for (size_t i = 0; i < n; i++)
        if (strlen(names[i]) > width)
            width = strlen(names[i]);
    uint64_t since_wall = since ? time_wall_ms() - since : 0;
    struct line *lines = NULL;
    size_t nl = 0;
    for (size_t i = 0; i < n; i++) {
        char **l = NULL;
        size_t k = 0;
        if (rt_logs_tail(home, names[i], tail, since_wall, &l, &k) < 0)
            continue;
        lines = xrealloc(lines, (nl + k + 1) * sizeof(*lines));
        for (size_t j = 0; j < k; j++) {
            lines[nl].name = names[i];
            lines[nl].text = l[j];
            lines[nl].color = color ? colors[i % ARRAY_LEN(colors)] : 0;
            nl++;
        }
        free(l); /* the strings moved into lines */
    }
    qsort(lines, nl, sizeof(*lines), cmp_line);
    size_t first = tail && nl > tail ? nl - tail : 0;
    for (size_t i = first; i < nl; i++)
        print_line(lines[i].name, lines[i].text, lines[i].color, ts, width);
    for (size_t i = 0; i < nl; i++)
        free(lines[i].text);
    free(lines);
    fflush(stdout);
    if (follow) {
        signal(SIGINT, on_int);
        signal(SIGTERM, on_int);
        struct src *srcs = NULL;
        size_t ns = 0;
        uint64_t last_scan = 0;
        while (!g_stop) {
            if (time_wall_ms() - last_scan > 1000) {
                /* New replicas appear while scaling: pick them up. */
                size_t m = 0;
                char **now = list_names(home, project, t.service, instance, &m);
                for (size_t i = 0; i < m; i++) {
                    bool known = false;
                    for (size_t j = 0; j < ns; j++)
                        if (strcmp(srcs[j].name, now[i]) == 0)
                            known = true;
                    if (!known) {
                        srcs = xrealloc(srcs, (ns + 1) * sizeof(*srcs));
                        struct src *s = &srcs[ns++];
                        memset(s, 0, sizeof(*s));
                        snprintf(s->name, sizeof(s->name), "%s", now[i]);
                        snprintf(s->path, sizeof(s->path), "%s", rt_log_path(home, now[i]));
                        s->color = color ? colors[(ns - 1) % ARRAY_LEN(colors)] : 0;
                        struct stat st;
                        if (last_scan == 0 && stat(s->path, &st) == 0) {
                            s->ino = st.st_ino; /* already printed up to here */
                            s->off = st.st_size;
                        }
                        if (strlen(now[i]) > width)
                            width = strlen(now[i]);
                    }
                    free(now[i]);
                }
                free(now);
                last_scan = time_wall_ms();
            }
            for (size_t i = 0; i < ns; i++)
                follow_read(&srcs[i], ts, width);
            struct timespec d = {0, 200 * 1000000};
            nanosleep(&d, NULL);
        }
        for (size_t i = 0; i < ns; i++)
            free(srcs[i].partial);
        free(srcs);
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    cli_target_free(&t);
    return EXIT_OK;
}
