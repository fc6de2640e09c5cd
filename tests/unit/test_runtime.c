/* test_runtime.c — unit tests of the process runtime's pure parts: backoff,
 * names, spec/state files, /proc readers, the log writer and tail. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/util.h"
#include "runtime/rt_internal.h"
#include "unit.h"

static char *tmpdir(void)
{
    char tmpl[] = "/tmp/tako-rt-unit-XXXXXX";
    char *d = mkdtemp(tmpl);
    return d ? xstrdup(d) : NULL;
}

static void rmrf(const char *d)
{
    char *cmd = xasprintf("rm -rf '%s'", d);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", d);
    free(cmd);
}

TEST(backoff_doubles_from_one_second_to_a_sixty_second_cap)
{
    unsigned long long want[] = {1000, 1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000};
    for (unsigned k = 0; k < ARRAY_LEN(want); k++)
        CHECK_INT(rt_backoff_ms(k), want[k]);
    CHECK_INT(rt_backoff_ms(1000), 60000);
}

TEST(restart_policy_names_round_trip)
{
    enum rt_restart p;
    const char *names[] = {"always", "on-failure", "never"};
    for (unsigned i = 0; i < 3; i++) {
        CHECK_INT(rt_restart_parse(names[i], &p), 0);
        CHECK_STR(rt_restart_name(p), names[i]);
    }
    CHECK_INT(rt_restart_parse("sometimes", &p), -EINVAL);
    CHECK_INT(rt_restart_parse("Always", &p), -EINVAL);
    CHECK_INT(rt_restart_parse(NULL, &p), -EINVAL);
    CHECK_STR(rt_state_name(RT_CRASHLOOP), "crashloop");
    CHECK_STR(rt_state_name((enum rt_state)99), "unknown");
}

TEST(replica_names_are_checked)
{
    char buf[RT_NAME_MAX], err[256];
    char *argv[] = {(char *)"/bin/true", NULL};
    struct rt_spec s = {.project = "scaling", .service = "web", .index = 2, .argv = argv};
    CHECK_INT(rt__replica_name(&s, buf, sizeof(buf), err, sizeof(err)), 0);
    CHECK_STR(buf, "scaling-web-2");
    s.project = "a/b";
    CHECK_INT(rt__replica_name(&s, buf, sizeof(buf), err, sizeof(err)), -EINVAL);
    CHECK_CONTAINS(err, "project name 'a/b'");
    s.project = "..";
    CHECK_INT(rt__replica_name(&s, buf, sizeof(buf), err, sizeof(err)), -EINVAL);
    s.project = "ok";
    s.service = "";
    CHECK_INT(rt__replica_name(&s, buf, sizeof(buf), err, sizeof(err)), -EINVAL);
    CHECK_CONTAINS(err, "service name");
    s.service = "a-very-long-service-name-that-goes-on-and-on-and-on-and-on-forever";
    CHECK_INT(rt__replica_name(&s, buf, sizeof(buf), err, sizeof(err)), -EINVAL);
    CHECK_CONTAINS(err, "longer than 63 bytes");
}

TEST(spec_file_round_trips_with_defaults_filled_in)
{
    char *d = tmpdir();
    CHECK(d);
    char *path = xasprintf("%s/spec.json", d);
    char *argv[] = {(char *)"node", (char *)"server.js", (char *)"--flag=a b", NULL};
    struct rt_env_kv env[] = {{"NODE_ENV", "production"}, {"EMPTY", ""}};
    struct rt_spec s = {.project = "p", .service = "web", .index = 3, .revision = "abc123",
                        .argv = argv, .cwd = "/srv/app", .env = env, .env_len = 2,
                        .port = 41234, .restart = RT_RESTART_ON_FAILURE};
    struct rt__owned_spec o, back;
    rt__spec_copy(&o, &s);
    CHECK_INT(o.spec.stop_grace_ms, 10000);
    CHECK_INT(o.spec.log_max_bytes, 10 * 1024 * 1024);
    CHECK_INT(o.spec.log_files, 3);
    CHECK_INT(rt__spec_save(path, &o.spec, 7, 2), 0);
    unsigned restarts = 0, consecutive = 0;
    CHECK_INT(rt__spec_load(path, &back, &restarts, &consecutive), 0);
    CHECK_INT(restarts, 7);
    CHECK_INT(consecutive, 2);
    CHECK_STR(back.spec.project, "p");
    CHECK_STR(back.spec.revision, "abc123");
    CHECK_STR(back.spec.cwd, "/srv/app");
    CHECK_STR(back.spec.argv[2], "--flag=a b");
    CHECK(back.spec.argv[3] == NULL);
    CHECK_INT(back.spec.env_len, 2);
    CHECK_STR(back.spec.env[0].value, "production");
    CHECK_STR(back.spec.env[1].value, "");
    CHECK_INT(back.spec.port, 41234);
    CHECK_INT(back.spec.restart, RT_RESTART_ON_FAILURE);
    rt__spec_free(&o);
    rt__spec_free(&back);
    /* A damaged file is an error, not a crash. */
    CHECK_INT(rt__write_file_atomic(path, "{\"project\":1}", 13), 0);
    CHECK_INT(rt__spec_load(path, &back, NULL, NULL), -EINVAL);
    free(path);
    rmrf(d);
    free(d);
}

TEST(state_file_round_trips)
{
    char *d = tmpdir();
    CHECK(d);
    char *path = xasprintf("%s/state", d);
    struct rt__shim_state st = {.shim_pid = 10, .shim_start = 123456, .app_pid = 11,
                                .app_start = 123457, .app = RT_APP_EXITED, .exit_status = 256,
                                .stop_requested = true, .hostname_shared = true, .done = true,
                                .started_at_ms = 1700000000123ull};
    snprintf(st.error, sizeof(st.error), "two\nlines");
    CHECK_INT(rt__state_save(path, &st), 0);
    struct rt__shim_state b;
    CHECK_INT(rt__state_load(path, &b), 0);
    CHECK_INT(b.shim_pid, 10);
    CHECK_INT(b.shim_start, 123456);
    CHECK_INT(b.app_pid, 11);
    CHECK_INT(b.app_start, 123457);
    CHECK_INT(b.app, RT_APP_EXITED);
    CHECK_INT(b.exit_status, 256);
    CHECK(b.stop_requested && b.hostname_shared && b.done);
    CHECK_INT(b.started_at_ms, 1700000000123ull);
    CHECK_STR(b.error, "two lines");
    CHECK_INT(rt__write_file_atomic(path, "garbage\n", 8), 0);
    CHECK_INT(rt__state_load(path, &b), -EINVAL);
    unlink(path);
    CHECK(rt__state_load(path, &b) < 0);
    free(path);
    rmrf(d);
    free(d);
}

TEST(proc_stat_and_liveness_check_the_start_time)
{
    struct rt__pstat me;
    CHECK_INT(rt__proc_stat(getpid(), &me), 0);
    CHECK_INT(me.ppid, getppid());
    CHECK(me.starttime > 0);
    CHECK(rt__proc_alive(getpid(), me.starttime));
    CHECK(!rt__proc_alive(getpid(), me.starttime + 1)); /* a reused pid looks like this */
    CHECK(!rt__proc_alive(0, 0));
}

TEST(descendants_include_grandchildren)
{
    int p[2];
    CHECK(pipe(p) == 0);
    pid_t child = fork();
    CHECK(child >= 0);
    if (child == 0) {
        pid_t g = fork();
        if (g == 0) {
            pause();
            _exit(0);
        }
        if (write(p[1], &g, sizeof(g)) != (ssize_t)sizeof(g))
            _exit(1);
        pause();
        _exit(0);
    }
    pid_t grand = 0;
    CHECK(read(p[0], &grand, sizeof(grand)) == (ssize_t)sizeof(grand));
    struct rt__pstat *d = NULL;
    ssize_t n = rt__proc_descendants(getpid(), &d);
    bool saw_child = false, saw_grand = false;
    for (ssize_t i = 0; i < n; i++) {
        saw_child = saw_child || d[i].pid == child;
        saw_grand = saw_grand || d[i].pid == grand;
    }
    free(d);
    kill(grand, SIGKILL);
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    close(p[0]);
    close(p[1]);
    CHECK(n >= 2);
    CHECK(saw_child);
    CHECK(saw_grand);
}

TEST(log_times_format_and_parse)
{
    char buf[32];
    rt__fmt_time(1700000000123ull, buf);
    CHECK_STR(buf, "2023-11-14T22:13:20.123Z");
    uint64_t t = 0;
    CHECK_INT(rt__parse_time("2023-11-14T22:13:20.123Z stdout hi", &t), 0);
    CHECK_INT(t, 1700000000123ull);
    CHECK_INT(rt__parse_time("not a time", &t), -EINVAL);
    CHECK_INT(rt__parse_time("2023-11-14 22:13:20.123Z", &t), -EINVAL);
}

TEST(log_writer_rotates_by_size_and_tail_reads_oldest_first)
{
    char *d = tmpdir();
    CHECK(d);
    char *rdir = xasprintf("%s/replicas/r-1", d);
    char *mk = xasprintf("%s/replicas", d);
    CHECK(mkdir(mk, 0700) == 0 && mkdir(rdir, 0700) == 0);
    struct rt__logw w;
    /* Each line is 24 (time) + 1 + 6 (stream) + 1 + 8 (text) + 1 = 41 bytes. */
    CHECK_INT(rt__logw_open(&w, rdir, 200, 3), 0);
    char text[16];
    for (int i = 0; i < 40; i++) {
        snprintf(text, sizeof(text), "line%04d", i);
        rt__logw_line(&w, i % 2 ? "stderr" : "stdout", text, strlen(text));
    }
    rt__logw_close(&w);
    struct stat sb;
    char *p0 = xasprintf("%s/output.log", rdir), *p2 = xasprintf("%s/output.log.2", rdir),
         *p3 = xasprintf("%s/output.log.3", rdir);
    CHECK(stat(p0, &sb) == 0 && sb.st_size <= 200);
    CHECK(stat(p2, &sb) == 0 && sb.st_size <= 200);
    CHECK(stat(p3, &sb) == -1); /* only 3 files are kept */
    free(p0);
    free(p2);
    free(p3);
    char **lines;
    size_t n;
    CHECK_INT(rt_proc_logs_tail(d, "r-1", 0, 0, &lines, &n), 0);
    /* 3 files of at most 4 lines each, the newest ones, in order. */
    CHECK(n >= 9 && n <= 12);
    CHECK_CONTAINS(lines[n - 1], " stderr line0039");
    for (size_t i = 0; i + 1 < n; i++) {
        int a = atoi(strstr(lines[i], "line") + 4), b = atoi(strstr(lines[i + 1], "line") + 4);
        CHECK_INT(b, a + 1);
    }
    rt_logs_free(lines, n);
    CHECK_INT(rt_proc_logs_tail(d, "r-1", 2, 0, &lines, &n), 0);
    CHECK_INT(n, 2);
    CHECK_CONTAINS(lines[0], "line0038");
    CHECK_CONTAINS(lines[1], "line0039");
    rt_logs_free(lines, n);
    CHECK_INT(rt_proc_logs_tail(d, "r-1", 0, time_wall_ms() + 60000, &lines, &n), 0);
    CHECK_INT(n, 0);
    rt_logs_free(lines, n);
    CHECK_INT(rt_proc_logs_tail(d, "nobody", 10, 0, &lines, &n), 0);
    CHECK_INT(n, 0);
    rt_logs_free(lines, n);
    CHECK_INT(rt_proc_logs_tail(d, "../etc", 10, 0, &lines, &n), -EINVAL);
    CHECK_STR(rt_proc_log_path("/h", "r-1"), "/h/replicas/r-1/output.log");
    free(rdir);
    free(mk);
    rmrf(d);
    free(d);
}

TEST(owners_split_a_process_table_between_roots)
{
    /* 1 init; 10 shim A → 11 app → 12 child → 13 grandchild; 20 shim B → 21;
     * 30 unrelated under init; 40 whose parent is not in the table. */
    struct rt__pstat all[] = {
        {.pid = 1, .ppid = 0},   {.pid = 10, .ppid = 1},  {.pid = 11, .ppid = 10},
        {.pid = 12, .ppid = 11}, {.pid = 13, .ppid = 12}, {.pid = 20, .ppid = 1},
        {.pid = 21, .ppid = 20}, {.pid = 30, .ppid = 1},  {.pid = 40, .ppid = 39},
    };
    pid_t roots[] = {20, 10};
    int owner[ARRAY_LEN(all)];
    rt__proc_owners(all, ARRAY_LEN(all), roots, 2, owner);
    int want[] = {-1, -1, 1, 1, 1, -1, 0, -1, -1};
    for (size_t i = 0; i < ARRAY_LEN(all); i++)
        CHECK_INT(owner[i], want[i]);
    CHECK_INT(rt__proc_find(all, ARRAY_LEN(all), 21), 6);
    CHECK_INT(rt__proc_find(all, ARRAY_LEN(all), 22), -1);
}

TEST(last_log_line_is_read_from_the_end_without_time_and_stream)
{
    char *d = tmpdir();
    CHECK(d);
    char *rdir = xasprintf("%s/replicas/r-2", d), *mk = xasprintf("%s/replicas", d);
    CHECK(mkdir(mk, 0700) == 0 && mkdir(rdir, 0700) == 0);
    char buf[64];
    CHECK_INT(rt__log_last_line(d, "r-2", buf, sizeof(buf)), -ENOENT);
    struct rt__logw w;
    CHECK_INT(rt__logw_open(&w, rdir, 1 << 20, 3), 0);
    for (int i = 0; i < 2000; i++)
        rt__logw_line(&w, "stdout", "filler line of output", 21);
    rt__logw_line(&w, "stderr", "Error: EADDRINUSE", 17);
    rt__logw_close(&w);
    CHECK_INT(rt__log_last_line(d, "r-2", buf, sizeof(buf)), 0);
    CHECK_STR(buf, "Error: EADDRINUSE");
    free(rdir);
    free(mk);
    rmrf(d);
    free(d);
}

TEST(log_lines_a_full_disk_refuses_are_counted_and_told_once_writing_works)
{
    char *d = tmpdir();
    CHECK(d);
    char *rdir = xasprintf("%s/replicas/r-3", d), *mk = xasprintf("%s/replicas", d);
    CHECK(mkdir(mk, 0700) == 0 && mkdir(rdir, 0700) == 0);
    struct rt__logw w;
    CHECK_INT(rt__logw_open(&w, rdir, 1 << 20, 3), 0);
    rt__logw_line(&w, "stdout", "before", 6);
    /* /dev/full answers every write with ENOSPC, as a full disk does. */
    int saved = dup(w.fd), full = open("/dev/full", O_WRONLY | O_CLOEXEC);
    CHECK(saved >= 0 && full >= 0);
    dup2(full, w.fd);
    for (int i = 0; i < 7; i++)
        rt__logw_line(&w, "stdout", "lost", 4);
    CHECK_INT(w.dropped, 7);
    uint64_t counted = 0; /* what takod's metrics read */
    CHECK_INT(rt_proc_log_dropped(d, "r-3", &counted), 0);
    CHECK_INT(counted, 7);
    dup2(saved, w.fd); /* space again */
    close(saved);
    close(full);
    rt__logw_line(&w, "stdout", "after", 5);
    rt__logw_line(&w, "stdout", "later", 5);
    CHECK_INT(w.dropped, 7);
    /* Two more lost, and the supervisor ends before it can tell: the next
     * one tells them. */
    saved = dup(w.fd);
    full = open("/dev/full", O_WRONLY | O_CLOEXEC);
    dup2(full, w.fd);
    rt__logw_line(&w, "stdout", "lost", 4);
    rt__logw_line(&w, "stdout", "lost", 4);
    dup2(saved, w.fd);
    close(saved);
    close(full);
    rt__logw_close(&w);
    CHECK_INT(rt__logw_open(&w, rdir, 1 << 20, 3), 0);
    CHECK_INT(w.dropped, 2);
    rt__logw_line(&w, "stdout", "next", 4);
    rt__logw_close(&w);
    char *path = xasprintf("%s/output.log", rdir);
    FILE *f = fopen(path, "re");
    CHECK(f);
    char line[256], *got[6] = {0};
    int n = 0;
    while (n < 6 && fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\n")] = '\0';
        got[n++] = xstrdup(line + 24); /* after the time */
    }
    fclose(f);
    CHECK_INT(n, 6);
    CHECK_STR(got[0], " stdout before");
    CHECK_STR(got[1], " stderr tako: 7 log lines dropped: No space left on device");
    CHECK_STR(got[2], " stdout after");
    CHECK_STR(got[3], " stdout later");
    CHECK_STR(got[4], " stderr tako: 2 log lines dropped: No space left on device");
    CHECK_STR(got[5], " stdout next");
    for (int i = 0; i < n; i++)
        free(got[i]);
    free(path);
    free(rdir);
    free(mk);
    rmrf(d);
    free(d);
}

TEST(restart_policy_decides_backoff_crashloop_and_reset)
{
    unsigned c = 0;
    uint64_t b = 123;
    int fail = 3 << 8, ok = 0, killed = SIGKILL;
    /* never: whatever the status */
    CHECK_INT(rt__policy(RT_RESTART_NEVER, fail, 10, &c, &b), RT_EXITED);
    CHECK_INT(c, 0);
    CHECK_INT(b, 0);
    /* on-failure: a clean exit ends it; a signal or a status restarts */
    CHECK_INT(rt__policy(RT_RESTART_ON_FAILURE, ok, 10, &c, &b), RT_EXITED);
    CHECK_INT(rt__policy(RT_RESTART_ON_FAILURE, killed, 10, &c, &b), RT_BACKOFF);
    CHECK_INT(c, 1);
    CHECK_INT(b, 1000);
    /* always: quick exits double the delay and become a crash loop */
    c = 0;
    CHECK_INT(rt__policy(RT_RESTART_ALWAYS, ok, 10, &c, &b), RT_BACKOFF);
    CHECK_INT(b, 1000);
    CHECK_INT(rt__policy(RT_RESTART_ALWAYS, fail, 10, &c, &b), RT_BACKOFF);
    CHECK_INT(b, 2000);
    CHECK_INT(rt__policy(RT_RESTART_ALWAYS, fail, 59999, &c, &b), RT_CRASHLOOP);
    CHECK_INT(b, 4000);
    for (int i = 0; i < 10; i++)
        rt__policy(RT_RESTART_ALWAYS, fail, 10, &c, &b);
    CHECK_INT(c, 13);
    CHECK_INT(b, 60000);
    /* 60 s of running resets: back to 1 s, not a crash loop */
    CHECK_INT(rt__policy(RT_RESTART_ALWAYS, fail, 60000, &c, &b), RT_BACKOFF);
    CHECK_INT(c, 1);
    CHECK_INT(b, 1000);
    /* unknown status (supervisor killed) counts as a failure */
    CHECK_INT(rt__policy(RT_RESTART_ON_FAILURE, -1, 10, &c, &b), RT_BACKOFF);
    CHECK_INT(c, 2);
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

TEST(tail_reads_backwards_across_chunks_and_files)
{
    char *d = tmpdir();
    CHECK(d);
    char *rdir = xasprintf("%s/replicas/r-3", d), *mk = xasprintf("%s/replicas", d);
    CHECK(mkdir(mk, 0700) == 0 && mkdir(rdir, 0700) == 0);
    struct rt__logw w;
    /* One big file: many 64 KiB chunk boundaries fall inside lines. */
    CHECK_INT(rt__logw_open(&w, rdir, 64u << 20, 3), 0);
    char text[64];
    for (int i = 0; i < 20000; i++) {
        int l = snprintf(text, sizeof(text), "n%06d %.*s", i, i % 23, "abcdefghijklmnopqrstuvw");
        rt__logw_line(&w, "stdout", text, (size_t)l);
    }
    rt__logw_close(&w);
    char **lines;
    size_t n;
    CHECK_INT(rt_proc_logs_tail(d, "r-3", 15000, 0, &lines, &n), 0);
    CHECK_INT(n, 15000);
    bool ok = true;
    for (size_t i = 0; i < n && ok; i++) {
        char want[16];
        snprintf(want, sizeof(want), " n%06zu ", 5000 + i);
        ok = strstr(lines[i], want) != NULL && str_starts_with(lines[i], "20");
    }
    CHECK(ok);
    rt_logs_free(lines, n);
    CHECK_INT(rt_proc_logs_tail(d, "r-3", 0, 0, &lines, &n), 0);
    CHECK_INT(n, 20000);
    CHECK_CONTAINS(lines[0], " n000000");
    rt_logs_free(lines, n);
    free(rdir);
    free(mk);
    rmrf(d);
    free(d);
}

TEST(tail_since_stops_at_older_lines_and_keeps_a_last_line_without_newline)
{
    char *d = tmpdir();
    CHECK(d);
    char *rdir = xasprintf("%s/replicas/r-4", d), *mk = xasprintf("%s/replicas", d);
    CHECK(mkdir(mk, 0700) == 0 && mkdir(rdir, 0700) == 0);
    char *p1 = xasprintf("%s/output.log.1", rdir), *p0 = xasprintf("%s/output.log", rdir);
    write_text(p1, "2024-01-01T00:00:01.000Z stdout one\n"
                   "2024-01-01T00:00:02.000Z stdout two\n"
                   "not a log line\n"
                   "2024-01-01T00:00:03.000Z stderr three\n");
    write_text(p0, "2024-01-01T00:00:04.000Z stdout four\n"
                   "2024-01-01T00:00:05.000Z stdout five");
    uint64_t since;
    CHECK_INT(rt__parse_time("2024-01-01T00:00:02.000Z", &since), 0);
    char **lines;
    size_t n;
    CHECK_INT(rt_proc_logs_tail(d, "r-4", 0, since, &lines, &n), 0);
    CHECK_INT(n, 4);
    CHECK_CONTAINS(lines[0], "stdout two");
    CHECK_CONTAINS(lines[1], "stderr three");
    CHECK_CONTAINS(lines[3], "stdout five");
    rt_logs_free(lines, n);
    /* since and a count together: the count wins when smaller */
    CHECK_INT(rt_proc_logs_tail(d, "r-4", 2, since, &lines, &n), 0);
    CHECK_INT(n, 2);
    CHECK_CONTAINS(lines[0], "four");
    rt_logs_free(lines, n);
    /* all lines, the odd one included, oldest first */
    CHECK_INT(rt_proc_logs_tail(d, "r-4", 0, 0, &lines, &n), 0);
    CHECK_INT(n, 6);
    CHECK_CONTAINS(lines[0], "stdout one");
    CHECK_STR(lines[2], "not a log line");
    rt_logs_free(lines, n);
    /* just rotated: no current file yet, the rotated ones still count */
    unlink(p0);
    CHECK_INT(rt_proc_logs_tail(d, "r-4", 1, 0, &lines, &n), 0);
    CHECK_INT(n, 1);
    CHECK_CONTAINS(lines[0], "three");
    rt_logs_free(lines, n);
    free(p0);
    free(p1);
    free(rdir);
    free(mk);
    rmrf(d);
    free(d);
}
