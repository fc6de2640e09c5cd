/* rt_driver.c — drives the process runtime (src/runtime/rt.h) from stdin so
 * end-to-end tests can exercise it without takod.
 *
 * Usage: rt_driver STATE_DIR        (commands on stdin, JSON lines on stdout;
 *                                    $RT_SHIM_EXE: supervisor binary, default itself)
 *        rt_driver shim DIR N L     (the replica supervisor, like `tako shim`)
 *
 * Commands, one per line:
 *   start {"project":..,"service":..,"index":N,"argv":[..],"cwd":..,"env":{..},
 *          "port":N,"revision":..,"grace_ms":N,"restart":"always","log_max":N,"log_files":N}
 *   stop NAME | restart NAME | forget NAME | info NAME | list | adopt
 *   health NAME ok|fail THRESHOLD START_PERIOD_MS
 *   logs NAME N_LINES SINCE_WALL_MS
 *   quit                                   (forget everything; replicas live on)
 * Every command answers one {"type":"reply",...} line; state changes print
 * {"type":"event","name":..,"old":..,"new":..}; a finished stop prints
 * {"type":"stopped","name":..}.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "core/ev.h"
#include "core/util.h"
#include "runtime/rt.h"
#include "runtime/rt_proc.h"

static struct ev_loop loop;
static struct rt *rt;
static char *state_dir;
static char inbuf[1 << 16];
static size_t inlen;

static void out(json_t *o)
{
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    printf("%s\n", s);
    fflush(stdout);
    free(s);
}

static void reply_err(const char *msg, int e)
{
    out(json_pack("{s:s, s:b, s:s, s:i}", "type", "reply", "ok", 0, "error", msg, "errno", e));
}

static void reply_ok(void)
{
    out(json_pack("{s:s, s:b}", "type", "reply", "ok", 1));
}

/* Events carry the replica's counters at that moment, so tests can assert
 * on sequences (backoff delays, restart counts) rather than on timing. */
static void on_event(struct rt_replica *r, enum rt_state o, enum rt_state n, void *data)
{
    (void)data;
    struct rt_info i;
    rt_info(r, &i);
    out(json_pack("{s:s, s:s, s:s, s:s, s:i, s:I, s:s, s:i, s:i}", "type", "event", "name",
                  rt_name(r), "old", rt_state_name(o), "new", rt_state_name(n), "restarts",
                  (int)i.restarts, "backoff_ms", (json_int_t)i.backoff_ms, "last_error",
                  i.last_error, "last_exit_status", i.last_exit_status, "pid", (int)i.pid));
}

static void on_stopped(struct rt_replica *r, void *data)
{
    (void)data;
    out(json_pack("{s:s, s:s}", "type", "stopped", "name", rt_name(r)));
}

/* The driver keeps every replica it started or adopted in a small table. */
static struct rt_replica *reps[256];
static size_t nreps;

static struct rt_replica *lookup(const char *name)
{
    for (size_t i = 0; i < nreps; i++)
        if (reps[i] && strcmp(rt_name(reps[i]), name) == 0)
            return reps[i];
    return NULL;
}

static void add(struct rt_replica *r)
{
    for (size_t i = 0; i < nreps; i++)
        if (!reps[i]) {
            reps[i] = r;
            return;
        }
    if (nreps < ARRAY_LEN(reps))
        reps[nreps++] = r;
}

static void cmd_start(const char *arg)
{
    json_error_t jerr;
    json_t *o = json_loads(arg, 0, &jerr);
    if (!o) {
        reply_err(jerr.text, EINVAL);
        return;
    }
    struct rt_spec s;
    memset(&s, 0, sizeof(s));
    s.project = json_string_value(json_object_get(o, "project"));
    s.service = json_string_value(json_object_get(o, "service"));
    s.index = (unsigned)json_integer_value(json_object_get(o, "index"));
    s.revision = json_string_value(json_object_get(o, "revision"));
    s.cwd = json_string_value(json_object_get(o, "cwd"));
    s.port = (uint16_t)json_integer_value(json_object_get(o, "port"));
    s.stop_grace_ms = (uint64_t)json_integer_value(json_object_get(o, "grace_ms"));
    s.log_max_bytes = (uint64_t)json_integer_value(json_object_get(o, "log_max"));
    s.log_files = (unsigned)json_integer_value(json_object_get(o, "log_files"));
    const char *restart = json_string_value(json_object_get(o, "restart"));
    if (restart && rt_restart_parse(restart, &s.restart) < 0) {
        reply_err("bad restart policy", EINVAL);
        json_decref(o);
        return;
    }
    json_t *argv = json_object_get(o, "argv"), *env = json_object_get(o, "env");
    size_t argc = json_array_size(argv);
    char **av = xcalloc(argc + 1, sizeof(char *));
    for (size_t i = 0; i < argc; i++)
        av[i] = (char *)json_string_value(json_array_get(argv, i));
    s.argv = av;
    struct rt_env_kv *kv = xcalloc(json_object_size(env) + 1, sizeof(*kv));
    const char *k;
    json_t *v;
    json_object_foreach(env, k, v)
    {
        kv[s.env_len].key = k;
        kv[s.env_len].value = json_string_value(v);
        s.env_len++;
    }
    s.env = kv;
    struct rt_replica *r;
    char err[256];
    int res = rt_start(rt, &s, &r, err, sizeof(err));
    if (res < 0) {
        reply_err(err, -res);
    } else {
        add(r);
        out(json_pack("{s:s, s:b, s:s}", "type", "reply", "ok", 1, "name", rt_name(r)));
    }
    free(av);
    free(kv);
    json_decref(o);
}

static json_t *info_json(struct rt_replica *r)
{
    struct rt_info i;
    rt_info(r, &i);
    return json_pack("{s:s, s:i, s:i, s:s, s:i, s:i, s:I, s:I, s:f, s:I, s:b, s:s, s:s, s:I, s:i}",
                     "name", i.name, "pid", (int)i.pid, "port", (int)i.port, "state",
                     rt_state_name(i.state), "restarts", (int)i.restarts, "last_exit_status",
                     i.last_exit_status, "started_at_ms", (json_int_t)i.started_at_ms,
                     "uptime_ms", (json_int_t)i.uptime_ms, "cpu_percent", i.cpu_percent,
                     "rss_bytes", (json_int_t)i.rss_bytes, "hostname_shared", i.hostname_shared,
                     "last_error", i.last_error, "revision", i.revision, "backoff_ms",
                     (json_int_t)i.backoff_ms, "supervisor_pid", (int)i.supervisor_pid);
}

static void command(char *line)
{
    char *arg = strchr(line, ' ');
    if (arg)
        *arg++ = '\0';
    else
        arg = line + strlen(line);
    if (strcmp(line, "start") == 0) {
        cmd_start(arg);
        return;
    }
    if (strcmp(line, "quit") == 0) {
        rt_free(rt);
        rt = NULL;
        reply_ok();
        ev_loop_stop(&loop);
        return;
    }
    if (strcmp(line, "adopt") == 0) {
        struct rt_replica **v;
        size_t n;
        int res = rt_adopt_all(rt, &v, &n);
        if (res < 0) {
            reply_err(strerror(-res), -res);
            return;
        }
        json_t *names = json_array();
        for (size_t i = 0; i < n; i++) {
            add(v[i]);
            json_array_append_new(names, json_string(rt_name(v[i])));
        }
        free(v);
        out(json_pack("{s:s, s:b, s:o}", "type", "reply", "ok", 1, "names", names));
        return;
    }
    if (strcmp(line, "list") == 0) {
        json_t *a = json_array();
        for (size_t i = 0; i < nreps; i++)
            if (reps[i])
                json_array_append_new(a, info_json(reps[i]));
        out(json_pack("{s:s, s:b, s:o}", "type", "reply", "ok", 1, "replicas", a));
        return;
    }
    char name[128];
    char *rest = strchr(arg, ' ');
    snprintf(name, sizeof(name), "%.*s", rest ? (int)(rest - arg) : (int)strlen(arg), arg);
    rest = rest ? rest + 1 : arg + strlen(arg);
    if (strcmp(line, "logs") == 0) {
        unsigned long long n = 0, since = 0;
        sscanf(rest, "%llu %llu", &n, &since);
        char **lines;
        size_t count;
        int res = rt_proc_logs_tail(state_dir, name, (size_t)n, since, &lines, &count);
        if (res < 0) {
            reply_err(strerror(-res), -res);
            return;
        }
        json_t *a = json_array();
        for (size_t i = 0; i < count; i++)
            json_array_append_new(a, json_string(lines[i]));
        rt_logs_free(lines, count);
        out(json_pack("{s:s, s:b, s:o, s:s}", "type", "reply", "ok", 1, "lines", a, "path",
                      rt_proc_log_path(state_dir, name)));
        return;
    }
    struct rt_replica *r = lookup(name);
    if (!r) {
        reply_err("no such replica", ENOENT);
        return;
    }
    if (strcmp(line, "stop") == 0) {
        rt_stop(r, on_stopped, NULL);
        reply_ok();
    } else if (strcmp(line, "restart") == 0) {
        rt_restart(r);
        reply_ok();
    } else if (strcmp(line, "forget") == 0) {
        for (size_t i = 0; i < nreps; i++)
            if (reps[i] == r)
                reps[i] = NULL;
        rt_forget(r);
        reply_ok();
    } else if (strcmp(line, "info") == 0) {
        out(json_pack("{s:s, s:b, s:o}", "type", "reply", "ok", 1, "info", info_json(r)));
    } else if (strcmp(line, "health") == 0) {
        char okword[8] = "";
        unsigned threshold = 0;
        unsigned long long start_period = 0;
        sscanf(rest, "%7s %u %llu", okword, &threshold, &start_period);
        rt_report_health(r, strcmp(okword, "ok") == 0, threshold, start_period);
        reply_ok();
    } else {
        reply_err("unknown command", EINVAL);
    }
}

static void on_stdin(struct ev_loop *l, struct ev_io *w, uint32_t revents)
{
    (void)revents;
    ssize_t n = read(w->fd, inbuf + inlen, sizeof(inbuf) - inlen - 1);
    if (n <= 0) {
        if (n == -1 && errno == EINTR)
            return;
        /* stdin closed: leave like quit, replicas live on */
        ev_io_stop(l, w);
        if (rt)
            rt_free(rt);
        rt = NULL;
        ev_loop_stop(l);
        return;
    }
    inlen += (size_t)n;
    char *nl;
    while (rt && (nl = memchr(inbuf, '\n', inlen))) {
        *nl = '\0';
        command(inbuf);
        size_t used = (size_t)(nl - inbuf) + 1;
        memmove(inbuf, inbuf + used, inlen - used);
        inlen -= used;
    }
    if (inlen == sizeof(inbuf) - 1)
        inlen = 0; /* an over-long line is dropped */
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    if (argc >= 2 && strcmp(argv[1], "shim") == 0)
        return rt_proc_shim_main(argc - 1, argv + 1);
    if (argc != 2) {
        fprintf(stderr, "usage: rt_driver STATE_DIR\n");
        return 2;
    }
    state_dir = argv[1];
    if (ev_loop_init(&loop) < 0)
        return 1;
    rt = rt_new(&loop, state_dir, on_event, NULL);
    /* RT_SHIM_EXE=./tako runs replicas under `tako shim` instead of this
     * program's own shim entry point. */
    if (getenv("RT_SHIM_EXE"))
        rt_proc_set_shim_exe(rt, getenv("RT_SHIM_EXE"));
    struct ev_io in;
    ev_io_init(&in, 0, on_stdin, NULL);
    ev_io_start(&loop, &in, EPOLLIN);
    ev_run(&loop);
    ev_loop_close(&loop);
    return 0;
}
