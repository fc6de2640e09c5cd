/* common.c — shared pieces of the project commands (see common.h). */
#include "cli/common.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/client.h"
#include "core/sha256.h"
#include "core/util.h"
#include "remote/ssh.h"

int cli_common_opt(struct cli_target *t, int opt, const char *arg)
{
    switch (opt) {
    case 'f': t->file = arg; return 1;
    case 'e': t->env = arg; return 1;
    case 's': t->service = arg; return 1;
    case 'p': t->project = arg; return 1;
    case 'o':
        if (strcmp(arg, "json") == 0)
            t->json = true;
        else if (strcmp(arg, "text") == 0)
            t->json = false;
        else
            return -cli_usage_error(t->cmd, "unknown output format '%s' (expected text or json)",
                                    arg);
        return 1;
    }
    return 0;
}

int cli_parse_args(struct cli_target *t, int argc, char **argv, char **pos, int max_pos)
{
    static const struct option opts[] = {CLI_COMMON_OPTS, {0}};
    int o, npos = 0;
    optind = 1;
    opterr = 0;
    while ((o = getopt_long(argc, argv, CLI_COMMON_SHORT, opts, NULL)) != -1) {
        int r = cli_common_opt(t, o, optarg);
        if (r < 0)
            return -r;
        if (!r)
            return cli_usage_error(t->cmd, "unknown option '%s'", argv[optind - 1]);
    }
    for (; optind < argc; optind++) {
        if (npos >= max_pos)
            return cli_usage_error(t->cmd, "unexpected argument '%s'", argv[optind]);
        pos[npos++] = argv[optind];
    }
    return 0;
}

void cli_print_json(json_t *j)
{
    char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    puts(s ? s : "{}");
    free(s);
}

int cli_target_load(struct cli_target *t, bool need_file, bool need_env)
{
    const char *file = t->file ? t->file : "tako.yaml";
    if (!t->file && access(file, F_OK) != 0 && !need_file) {
        if (t->env && !t->project) {
            fprintf(stderr, "tako %s: no tako.yaml here to find environment '%s' in (use -f FILE)\n",
                    t->cmd, t->env);
            return EXIT_USAGE;
        }
        return 0;
    }
    if (access(file, F_OK) != 0) {
        fprintf(stderr, "tako %s: %s: %s\n", t->cmd, file, strerror(errno));
        if (!t->file)
            fprintf(stderr, "Run 'tako init' to create one, or pass -f FILE.\n");
        return EXIT_USAGE;
    }
    if (cfg_open(file, t->env, stderr, &t->cfg, &t->envp) < 0)
        return EXIT_USAGE;
    if (need_env && !t->envp) {
        fprintf(stderr, "tako %s: %s has several environments; name one:", t->cmd, file);
        for (size_t i = 0; i < t->cfg->envs_len; i++)
            fprintf(stderr, " %s", t->cfg->envs[i].name);
        fprintf(stderr, "\n");
        return EXIT_USAGE;
    }
    if (t->service && t->envp && !cfg_env_service(t->envp, t->service)) {
        fprintf(stderr, "tako %s: environment %s has no service '%s'; services:", t->cmd,
                t->envp->name, t->service);
        for (size_t i = 0; i < t->envp->services_len; i++)
            fprintf(stderr, " %s", t->envp->services[i].name);
        fprintf(stderr, "\n");
        return EXIT_USAGE;
    }
    int rc = cli_remote_open(t);
    if (rc)
        cli_target_free(t); /* callers return at once on an error */
    return rc;
}

void cli_target_free(struct cli_target *t)
{
    cli_remote_close(t);
    cfg_free(t->cfg);
    t->cfg = NULL;
}

const char *cli_target_project(const struct cli_target *t)
{
    if (t->project)
        return t->project;
    return t->cfg ? t->cfg->project.name : NULL;
}

const char *cli_query(const struct cli_target *t, char *buf, size_t len)
{
    char a[256], b[256], c[256];
    const char *p = cli_target_project(t);
    snprintf(buf, len, "?project=%s&env=%s&service=%s", p ? client_urlenc(p, a, sizeof(a)) : "",
             t->envp ? client_urlenc(t->envp->name, b, sizeof(b)) : "",
             t->service ? client_urlenc(t->service, c, sizeof(c)) : "");
    return buf;
}

bool cli_color(FILE *f)
{
    const char *nc = getenv("NO_COLOR");
    return isatty(fileno(f)) && !(nc && *nc);
}

/* ---- revisions ---- */

/* Run argv in dir; feed its stdout to the hash. Returns the exit status or -1. */
static int run_hash(const char *dir, char *const argv[], struct sha256 *h, char *first,
                    size_t first_len)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) == -1)
        return -1;
    pid_t pid = fork();
    if (pid == -1) {
        close(p[0]);
        close(p[1]);
        return -1;
    }
    if (pid == 0) {
        dup2(p[1], 1);
        int dn = open("/dev/null", O_WRONLY);
        if (dn >= 0)
            dup2(dn, 2);
        if (chdir(dir) != 0)
            _exit(127);
        execvp(argv[0], argv);
        _exit(127);
    }
    close(p[1]);
    char buf[65536];
    size_t got = 0;
    ssize_t n;
    while ((n = read(p[0], buf, sizeof(buf))) > 0) {
        if (h)
            sha256_update(h, buf, (size_t)n);
        if (first && got < first_len - 1) {
            size_t k = (size_t)n < first_len - 1 - got ? (size_t)n : first_len - 1 - got;
            memcpy(first + got, buf, k);
            got += k;
            first[got] = '\0';
        }
    }
    close(p[0]);
    int st;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Content hash of a directory tree: names, modes and bytes, sorted. */
static void hash_tree(struct sha256 *h, const char *dir, int depth)
{
    if (depth > 32)
        return;
    DIR *d = opendir(dir);
    if (!d)
        return;
    char **names = NULL;
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0 ||
            strcmp(e->d_name, ".git") == 0 || strcmp(e->d_name, "node_modules") == 0)
            continue;
        names = xrealloc(names, (n + 1) * sizeof(*names));
        names[n++] = xstrdup(e->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof(*names), name_cmp);
    for (size_t i = 0; i < n; i++) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        struct stat st;
        if (lstat(path, &st) == 0) {
            sha256_update(h, names[i], strlen(names[i]) + 1);
            if (S_ISDIR(st.st_mode)) {
                sha256_update(h, "d", 1);
                hash_tree(h, path, depth + 1);
            } else if (S_ISREG(st.st_mode)) {
                sha256_update(h, "f", 1);
                int fd = open(path, O_RDONLY | O_CLOEXEC);
                if (fd >= 0) {
                    char buf[65536];
                    ssize_t k;
                    while ((k = read(fd, buf, sizeof(buf))) > 0)
                        sha256_update(h, buf, (size_t)k);
                    close(fd);
                }
            } else if (S_ISLNK(st.st_mode)) {
                char t[4096];
                ssize_t k = readlink(path, t, sizeof(t));
                sha256_update(h, "l", 1);
                if (k > 0)
                    sha256_update(h, t, (size_t)k);
            }
        }
        free(names[i]);
    }
    free(names);
}

void cli_revision(const struct cfg_service *s, json_t *config_json, char out[13])
{
    struct sha256 h;
    sha256_init(&h);
    char *cj = json_dumps(config_json, JSON_COMPACT | JSON_SORT_KEYS);
    if (cj) {
        sha256_update(&h, cj, strlen(cj));
        free(cj);
    }
    sha256_update(&h, "\n", 1);
    const char *dir = s->build;
    char commit[128] = "";
    char *const rev_parse[] = {"git", "rev-parse", "HEAD", NULL};
    if (dir && run_hash(dir, rev_parse, NULL, commit, sizeof(commit)) == 0 && commit[0]) {
        /* Committed code + whatever is not committed yet, limited to this directory. */
        sha256_update(&h, commit, strlen(commit));
        char *const status[] = {"git", "status", "--porcelain", "--untracked-files=all", "--", ".",
                                NULL};
        char *const diff[] = {"git", "diff", "HEAD", "--binary", "--", ".", NULL};
        run_hash(dir, status, &h, NULL, 0);
        run_hash(dir, diff, &h, NULL, 0);
        /* Untracked files' contents are not in the diff: hash them too. */
        char *const untracked[] = {"sh", "-c",
                                   "git ls-files -z --others --exclude-standard -- . | "
                                   "xargs -0 -r cat --",
                                   NULL};
        run_hash(dir, untracked, &h, NULL, 0);
    } else if (dir) {
        hash_tree(&h, dir, 0);
    }
    char hex[65];
    sha256_hex(&h, hex);
    memcpy(out, hex, 12);
    out[12] = '\0';
}

/* ---- operations with streamed progress ---- */

struct op_print {
    bool json, color, done, ok, unchanged;
    bool hold_conflict; /* a 409 answer is kept back: the caller will retry */
    int status;
    char message[2048];
};

/* The server an operation runs on, with several (its JSON lines say so). */
static const char *g_op_server;

void cli_op_server(const char *name)
{
    g_op_server = name;
}

static void on_line(json_t *line, void *data)
{
    struct op_print *p = data;
    if (g_op_server && json_is_object(line))
        json_object_set_new(line, "server", json_string(g_op_server));
    const char *type = json_string_value(json_object_get(line, "type"));
    const char *msg = json_string_value(json_object_get(line, "message"));
    const char *svc = json_string_value(json_object_get(line, "service"));
    const char *level = json_string_value(json_object_get(line, "level"));
    bool is_result = type && strcmp(type, "result") == 0;
    json_int_t code = json_integer_value(json_object_get(line, "status"));
    if (p->json && !(p->hold_conflict && is_result && code == 409)) {
        char *s = json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER);
        if (s) {
            puts(s);
            free(s);
        }
        fflush(stdout);
    }
    if (is_result) {
        p->done = true;
        p->ok = json_is_true(json_object_get(line, "ok"));
        p->unchanged = json_is_true(json_object_get(line, "unchanged"));
        json_t *st = json_object_get(line, "status");
        p->status = json_is_integer(st) ? (int)json_integer_value(st) : 0;
        snprintf(p->message, sizeof(p->message), "%s", msg ? msg : "");
    } else if (!p->json && msg) {
        const char *t = json_string_value(json_object_get(line, "time"));
        char hhmmss[16] = "";
        if (t && strlen(t) >= 19)
            snprintf(hhmmss, sizeof(hhmmss), "%.8s", t + 11);
        bool err = level && strcmp(level, "error") == 0;
        bool warn = level && strcmp(level, "warn") == 0;
        const char *on = "", *off = "";
        if (p->color && (err || warn)) {
            on = err ? "\033[31m" : "\033[33m";
            off = "\033[0m";
        }
        printf("%s%s  %s%s%s%s\n", on, hhmmss, svc ? svc : "", svc ? ": " : "", msg, off);
        fflush(stdout);
    }
    json_decref(line);
}

int cli_run_operation(const char *cmd, const char *path, json_t *body, bool json)
{
    return cli_run_operation_wait(cmd, path, body, json, 0);
}

int cli_run_operation_wait(const char *cmd, const char *path, json_t *body, bool json,
                           uint64_t wait_ms)
{
    struct op_print p = {.json = json, .color = cli_color(stdout)};
    uint64_t deadline = time_mono_ms() + wait_ms;
    bool said = false;
    int st;
    for (;;) {
        p.hold_conflict = wait_ms > 0;
        st = client_stream("POST", path, body, on_line, &p);
        if (st < 0)
            return client_unavailable(st);
        /* Refused at once because another operation of the project runs (one
         * whose client went away, too): nothing was changed; try again until
         * the wait is over. */
        if (!(st == 200 && p.done && !p.ok && p.status == 409) || time_mono_ms() >= deadline)
            break;
        if (!said && !json) {
            fprintf(stderr, "tako %s: %s; waiting up to %llus\n", cmd, p.message,
                    (unsigned long long)((deadline - time_mono_ms() + 999) / 1000));
            said = true;
        }
        struct timespec ts = {0, 500 * 1000000L};
        nanosleep(&ts, NULL);
        p = (struct op_print){.json = json, .color = p.color};
    }
    if (p.done && !p.ok && p.status == 409 && json && wait_ms > 0) {
        /* the answer kept back while waiting */
        json_t *r = json_pack("{s:s, s:b, s:i, s:s}", "type", "result", "ok", 0, "status", 409,
                              "message", p.message);
        char *s = json_dumps(r, JSON_COMPACT | JSON_PRESERVE_ORDER);
        if (s)
            puts(s);
        free(s);
        json_decref(r);
    }
    if (st != 200 || !p.done) {
        if (!p.done && st == 200) {
            fprintf(stderr, "tako %s: takod closed the connection before the result "
                            "(the operation may still be running; see 'tako ps')\n", cmd);
            return EXIT_FAILED;
        }
        fprintf(stderr, "tako %s: request failed with status %d\n", cmd, st);
        return EXIT_FAILED;
    }
    if (!p.ok) {
        /* Refused by a server's takod: say which server. */
        struct ssh_conn *rc = client_remote();
        char where[256] = "";
        if (rc && !str_starts_with(p.message, "server "))
            snprintf(where, sizeof(where), "server %s (%s): ", ssh_name(rc), ssh_where(rc));
        if (!json)
            fprintf(stderr, "%s✗ %s: %s%s%s\n", p.color ? "\033[31m" : "", cmd, where, p.message,
                    p.color ? "\033[0m" : "");
        if (p.status == 409)
            return EXIT_CONFLICT;
        if (p.status >= 400 && p.status < 500)
            return EXIT_USAGE;
        return EXIT_FAILED;
    }
    if (!json && p.unchanged)
        printf("%s\n", p.message);
    else if (!json)
        printf("%s %s\n", p.color ? "\033[32m✓\033[0m" : "✓", p.message);
    return EXIT_OK;
}
