/* rt_files.c — replica names, spec.json and state files, /proc readers. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "core/util.h"
#include "runtime/rt_internal.h"

/* ---- names and specs ---- */

static bool name_part_ok(const char *s)
{
    if (!s || !*s)
        return false;
    for (const char *p = s; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_' && *p != '.')
            return false;
    return strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

int rt__replica_name(const struct rt_spec *s, char *buf, size_t len, char *err, size_t errlen)
{
    if (!name_part_ok(s->project)) {
        snprintf(err, errlen, "project name '%s' must be letters, digits, '-', '_' or '.'",
                 s->project ? s->project : "");
        return -EINVAL;
    }
    if (!name_part_ok(s->service)) {
        snprintf(err, errlen, "service name '%s' must be letters, digits, '-', '_' or '.'",
                 s->service ? s->service : "");
        return -EINVAL;
    }
    int n = snprintf(buf, len, "%s-%s-%u", s->project, s->service, s->index);
    if (n < 0 || (size_t)n >= len || n >= RT_NAME_MAX) {
        snprintf(err, errlen, "replica name '%s-%s-%u' is longer than %d bytes", s->project,
                 s->service, s->index, RT_NAME_MAX - 1);
        return -EINVAL;
    }
    return 0;
}

static char *dup_or_null(const char *s)
{
    return s ? xstrdup(s) : NULL;
}

int rt__spec_check_env(const struct rt_spec *spec, const char *name, char *err, size_t errlen)
{
    for (size_t i = 0; i < spec->env_len; i++) {
        const char *k = spec->env[i].key;
        if (!k || !*k || strchr(k, '=')) {
            snprintf(err, errlen, "replica %s: invalid environment variable name '%s'", name,
                     k ? k : "");
            return -EINVAL;
        }
    }
    return 0;
}

void rt__spec_copy(struct rt__owned_spec *dst, const struct rt_spec *src)
{
    memset(dst, 0, sizeof(*dst));
    dst->spec = *src;
    dst->spec.project = dup_or_null(src->project);
    dst->spec.service = dup_or_null(src->service);
    dst->spec.revision = xstrdup(src->revision ? src->revision : "");
    dst->spec.cwd = xstrdup(src->cwd ? src->cwd : "/");
    dst->spec.driver = xstrdup(src->driver && *src->driver ? src->driver : RT_DEFAULT_DRIVER);
    dst->spec.image = dup_or_null(src->image);
    dst->spec.build_dir = dup_or_null(src->build_dir);
    dst->spec.environment = dup_or_null(src->environment);
    dst->spec.network = dup_or_null(src->network);
    size_t argc = 0;
    while (src->argv && src->argv[argc])
        argc++;
    dst->argv = xcalloc(argc + 1, sizeof(char *));
    for (size_t i = 0; i < argc; i++)
        dst->argv[i] = xstrdup(src->argv[i]);
    dst->spec.argv = dst->argv;
    dst->env = xcalloc(src->env_len ? src->env_len : 1, sizeof(struct rt_env_kv));
    for (size_t i = 0; i < src->env_len; i++) {
        dst->env[i].key = xstrdup(src->env[i].key);
        dst->env[i].value = xstrdup(src->env[i].value ? src->env[i].value : "");
    }
    dst->spec.env = dst->env;
    if (!dst->spec.stop_grace_ms)
        dst->spec.stop_grace_ms = RT_DEFAULT_GRACE_MS;
    if (!dst->spec.log_max_bytes)
        dst->spec.log_max_bytes = RT_DEFAULT_LOG_MAX;
    if (!dst->spec.log_files)
        dst->spec.log_files = RT_DEFAULT_LOG_FILES;
}

void rt__spec_free(struct rt__owned_spec *s)
{
    free((char *)s->spec.project);
    free((char *)s->spec.service);
    free((char *)s->spec.revision);
    free((char *)s->spec.cwd);
    free((char *)s->spec.driver);
    free((char *)s->spec.image);
    free((char *)s->spec.build_dir);
    free((char *)s->spec.environment);
    free((char *)s->spec.network);
    for (size_t i = 0; s->argv && s->argv[i]; i++)
        free(s->argv[i]);
    free(s->argv);
    for (size_t i = 0; s->env && i < s->spec.env_len; i++) {
        free((char *)s->env[i].key);
        free((char *)s->env[i].value);
    }
    free(s->env);
    memset(s, 0, sizeof(*s));
}

/* ---- small files ---- */

int rt__write_file_atomic(const char *path, const char *data, size_t len)
{
    char tmp[4096];
    int r = 0;
    if (snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid()) >= (int)sizeof(tmp))
        return -ENAMETOOLONG;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd == -1)
        return -errno;
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, data + off, len - off);
        if (w == -1) {
            if (errno == EINTR)
                continue;
            r = -errno;
            goto out;
        }
        off += (size_t)w;
    }
    if (rename(tmp, path) == -1)
        r = -errno;
out:
    close(fd);
    if (r < 0)
        unlink(tmp);
    return r;
}

char *rt__read_file(const char *path, size_t max, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd == -1)
        return NULL;
    size_t cap = 4096, n = 0;
    char *buf = xmalloc(cap + 1);
    for (;;) {
        if (n == cap) {
            if (cap >= max)
                break;
            cap = cap * 2 > max ? max : cap * 2;
            buf = xrealloc(buf, cap + 1);
        }
        ssize_t r = read(fd, buf + n, cap - n);
        if (r == -1 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    buf[n] = '\0';
    if (len)
        *len = n;
    return buf;
}

/* ---- spec.json ---- */

int rt__spec_save(const char *path, const struct rt_spec *s, unsigned restarts,
                  unsigned consecutive)
{
    return rt__spec_save_ex(path, s, restarts, consecutive, NULL);
}

int rt__spec_save_ex(const char *path, const struct rt_spec *s, unsigned restarts,
                     unsigned consecutive, json_t *extra)
{
    json_t *argv = json_array(), *env = json_array();
    for (size_t i = 0; s->argv && s->argv[i]; i++)
        json_array_append_new(argv, json_string(s->argv[i]));
    for (size_t i = 0; i < s->env_len; i++)
        json_array_append_new(env, json_pack("[ss]", s->env[i].key, s->env[i].value));
    json_t *o = json_pack("{s:s, s:s, s:I, s:s, s:o, s:s, s:o, s:I, s:I, s:s, s:I, s:I, s:I, s:I}",
                          "project", s->project, "service", s->service, "index",
                          (json_int_t)s->index, "revision", s->revision ? s->revision : "",
                          "argv", argv, "cwd", s->cwd ? s->cwd : "/", "env", env, "port",
                          (json_int_t)s->port, "stop_grace_ms", (json_int_t)s->stop_grace_ms,
                          "restart", rt_restart_name(s->restart), "log_max_bytes",
                          (json_int_t)s->log_max_bytes, "log_files", (json_int_t)s->log_files,
                          "restarts", (json_int_t)restarts, "consecutive_failures",
                          (json_int_t)consecutive);
    if (!o)
        return -EINVAL;
    json_object_set_new(o, "driver", json_string(s->driver ? s->driver : RT_DEFAULT_DRIVER));
    if (s->image)
        json_object_set_new(o, "image", json_string(s->image));
    if (s->build_dir)
        json_object_set_new(o, "build_dir", json_string(s->build_dir));
    if (s->environment)
        json_object_set_new(o, "environment", json_string(s->environment));
    if (s->network)
        json_object_set_new(o, "network", json_string(s->network));
    if (s->app_port)
        json_object_set_new(o, "app_port", json_integer(s->app_port));
    if (extra)
        json_object_set(o, "driver_state", extra);
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!text)
        return -ENOMEM;
    int r = rt__write_file_atomic(path, text, strlen(text));
    free(text);
    return r;
}

int rt__spec_load(const char *path, struct rt__owned_spec *out, unsigned *restarts,
                  unsigned *consecutive)
{
    return rt__spec_load_ex(path, out, restarts, consecutive, NULL);
}

int rt__spec_load_ex(const char *path, struct rt__owned_spec *out, unsigned *restarts,
                     unsigned *consecutive, json_t **extra_out)
{
    if (extra_out)
        *extra_out = NULL;
    size_t len;
    char *text = rt__read_file(path, 1u << 20, &len);
    if (!text)
        return -errno ? -errno : -EIO;
    json_error_t jerr;
    json_t *o = json_loadb(text, len, 0, &jerr);
    free(text);
    if (!o)
        return -EINVAL;
    int r = -EINVAL;
    const char *project, *service, *revision, *cwd, *restart;
    json_int_t index, port, grace, logmax, logfiles, rs = 0, cf = 0;
    json_t *argv, *env;
    if (json_unpack(o, "{s:s, s:s, s:I, s:s, s:o, s:s, s:o, s:I, s:I, s:s, s:I, s:I, s?I, s?I}",
                    "project", &project, "service", &service, "index", &index, "revision",
                    &revision, "argv", &argv, "cwd", &cwd, "env", &env, "port", &port,
                    "stop_grace_ms", &grace, "restart", &restart, "log_max_bytes", &logmax,
                    "log_files", &logfiles, "restarts", &rs, "consecutive_failures", &cf) != 0)
        goto out;
    const char *drv = json_string_value(json_object_get(o, "driver"));
    bool container = drv && strcmp(drv, RT_DEFAULT_DRIVER) != 0; /* may run the image's command */
    if (!json_is_array(argv) || !json_is_array(env) || (json_array_size(argv) == 0 && !container))
        goto out;
    struct rt_spec s;
    memset(&s, 0, sizeof(s));
    s.project = project;
    s.service = service;
    s.index = (unsigned)index;
    s.revision = revision;
    s.cwd = cwd;
    s.port = (uint16_t)port;
    s.stop_grace_ms = (uint64_t)grace;
    if (rt_restart_parse(restart, &s.restart) < 0)
        goto out;
    s.log_max_bytes = (uint64_t)logmax;
    s.log_files = (unsigned)logfiles;
    /* Written by older takods without these: the process driver. */
    s.driver = json_string_value(json_object_get(o, "driver"));
    s.image = json_string_value(json_object_get(o, "image"));
    s.build_dir = json_string_value(json_object_get(o, "build_dir"));
    s.environment = json_string_value(json_object_get(o, "environment"));
    s.network = json_string_value(json_object_get(o, "network"));
    s.app_port = (uint16_t)json_integer_value(json_object_get(o, "app_port"));
    size_t argc = json_array_size(argv);
    char **av = xcalloc(argc + 1, sizeof(char *));
    struct rt_env_kv *kv = xcalloc(json_array_size(env) + 1, sizeof(*kv));
    bool ok = true;
    for (size_t i = 0; i < argc; i++) {
        av[i] = (char *)json_string_value(json_array_get(argv, i));
        ok = ok && av[i];
    }
    for (size_t i = 0; i < json_array_size(env); i++) {
        json_t *pair = json_array_get(env, i);
        kv[i].key = json_string_value(json_array_get(pair, 0));
        kv[i].value = json_string_value(json_array_get(pair, 1));
        ok = ok && kv[i].key && kv[i].value;
    }
    s.argv = av;
    s.env = kv;
    s.env_len = json_array_size(env);
    if (ok) {
        rt__spec_copy(out, &s);
        if (restarts)
            *restarts = (unsigned)rs;
        if (consecutive)
            *consecutive = (unsigned)cf;
        json_t *ds = json_object_get(o, "driver_state");
        if (extra_out && ds)
            *extra_out = json_incref(ds);
        r = 0;
    }
    free(av);
    free(kv);
out:
    json_decref(o);
    return r;
}

/* ---- state file: "key=value" lines ---- */

static const char *app_state_names[] = {"starting", "running", "exited", "failed"};

int rt__state_save(const char *path, const struct rt__shim_state *st)
{
    char buf[1024];
    /* The error text is one line: newlines would break the format. */
    char error[sizeof(st->error)];
    snprintf(error, sizeof(error), "%s", st->error);
    for (char *p = error; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    int n = snprintf(buf, sizeof(buf),
                     "shim_pid=%d\nshim_start=%llu\napp_pid=%d\napp_start=%llu\napp=%s\n"
                     "exit_status=%d\nstop_requested=%d\nhostname_shared=%d\ndone=%d\n"
                     "started_at_ms=%llu\nerror=%s\n",
                     (int)st->shim_pid, (unsigned long long)st->shim_start, (int)st->app_pid,
                     (unsigned long long)st->app_start, app_state_names[st->app],
                     st->exit_status, st->stop_requested, st->hostname_shared, st->done,
                     (unsigned long long)st->started_at_ms, error);
    if (n < 0 || (size_t)n >= sizeof(buf))
        return -EOVERFLOW;
    return rt__write_file_atomic(path, buf, (size_t)n);
}

int rt__state_load(const char *path, struct rt__shim_state *st)
{
    char *text = rt__read_file(path, 8192, NULL);
    if (!text)
        return -errno ? -errno : -EIO;
    memset(st, 0, sizeof(*st));
    st->exit_status = -1;
    bool have_shim = false;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *eq = strchr(line, '=');
        if (!eq)
            continue;
        *eq = '\0';
        const char *k = line, *v = eq + 1;
        if (strcmp(k, "shim_pid") == 0) {
            st->shim_pid = (pid_t)atoi(v);
            have_shim = true;
        } else if (strcmp(k, "shim_start") == 0)
            st->shim_start = strtoull(v, NULL, 10);
        else if (strcmp(k, "app_pid") == 0)
            st->app_pid = (pid_t)atoi(v);
        else if (strcmp(k, "app_start") == 0)
            st->app_start = strtoull(v, NULL, 10);
        else if (strcmp(k, "app") == 0) {
            for (unsigned i = 0; i < ARRAY_LEN(app_state_names); i++)
                if (strcmp(v, app_state_names[i]) == 0)
                    st->app = (enum rt__app_state)i;
        } else if (strcmp(k, "exit_status") == 0)
            st->exit_status = atoi(v);
        else if (strcmp(k, "stop_requested") == 0)
            st->stop_requested = atoi(v) != 0;
        else if (strcmp(k, "hostname_shared") == 0)
            st->hostname_shared = atoi(v) != 0;
        else if (strcmp(k, "done") == 0)
            st->done = atoi(v) != 0;
        else if (strcmp(k, "started_at_ms") == 0)
            st->started_at_ms = strtoull(v, NULL, 10);
        else if (strcmp(k, "error") == 0)
            snprintf(st->error, sizeof(st->error), "%s", v);
    }
    free(text);
    return have_shim && st->shim_pid > 0 ? 0 : -EINVAL;
}

/* ---- /proc ---- */

int rt__proc_stat(pid_t pid, struct rt__pstat *out)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd == -1)
        return -errno;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    int e = errno;
    close(fd);
    if (n <= 0)
        return n == 0 ? -ESRCH : -e;
    buf[n] = '\0';
    /* comm may hold spaces and parentheses: fields start after the last ')'. */
    char *p = strrchr(buf, ')');
    if (!p || p[1] != ' ')
        return -EINVAL;
    p += 2;
    /* Fields from 3 (state) on; we need 4 ppid, 5 pgrp, 14-17 times, 22 starttime,
     * 24 rss. */
    char state = *p;
    unsigned long long f[25] = {0};
    int field = 3;
    char *save = NULL;
    for (char *tok = strtok_r(p, " ", &save); tok && field <= 24;
         tok = strtok_r(NULL, " ", &save), field++)
        if (field > 3)
            f[field] = strtoull(tok, NULL, 10);
    if (field <= 24)
        return -EINVAL;
    out->pid = pid;
    out->state = state;
    out->ppid = (pid_t)f[4];
    out->pgrp = (pid_t)f[5];
    out->utime = f[14];
    out->stime = f[15];
    out->cutime = f[16];
    out->cstime = f[17];
    out->starttime = f[22];
    out->rss_pages = f[24];
    return 0;
}

bool rt__proc_alive(pid_t pid, uint64_t starttime)
{
    struct rt__pstat ps;
    if (pid <= 0 || rt__proc_stat(pid, &ps) < 0)
        return false;
    return ps.starttime == starttime && ps.state != 'Z' && ps.state != 'X';
}

static int cmp_pid(const void *a, const void *b)
{
    pid_t x = ((const struct rt__pstat *)a)->pid, y = ((const struct rt__pstat *)b)->pid;
    return (x > y) - (x < y);
}

ssize_t rt__proc_scan(struct rt__pstat **out)
{
    DIR *d = opendir("/proc");
    if (!d)
        return -errno;
    size_t n = 0, cap = 256;
    struct rt__pstat *all = xmalloc(cap * sizeof(*all));
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!isdigit((unsigned char)de->d_name[0]))
            continue;
        pid_t pid = (pid_t)atoi(de->d_name);
        if (n == cap) {
            cap *= 2;
            all = xrealloc(all, cap * sizeof(*all));
        }
        if (rt__proc_stat(pid, &all[n]) == 0 && all[n].state != 'Z' && all[n].state != 'X')
            n++;
    }
    closedir(d);
    qsort(all, n, sizeof(*all), cmp_pid);
    *out = all;
    return (ssize_t)n;
}

ssize_t rt__proc_find(const struct rt__pstat *all, size_t n, pid_t pid)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (all[mid].pid == pid)
            return (ssize_t)mid;
        if (all[mid].pid < pid)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

#define OWNER_UNKNOWN (-2)

void rt__proc_owners(const struct rt__pstat *all, size_t n, const pid_t *roots, size_t nroots,
                     int *owner)
{
    for (size_t i = 0; i < n; i++)
        owner[i] = OWNER_UNKNOWN;
    size_t *path = xmalloc((n ? n : 1) * sizeof(size_t));
    for (size_t i = 0; i < n; i++) {
        /* Walk up until a root, a process already decided, or the top;
         * everything on the way gets the same answer. */
        size_t len = 0, cur = i;
        int result = -1;
        for (;;) {
            if (owner[cur] != OWNER_UNKNOWN) {
                result = owner[cur];
                break;
            }
            if (len == n) /* a cycle cannot happen in /proc; be safe anyway */
                break;
            path[len++] = cur;
            pid_t pp = all[cur].ppid;
            size_t k;
            for (k = 0; k < nroots && roots[k] != pp; k++) {
            }
            if (k < nroots) {
                result = (int)k;
                break;
            }
            ssize_t j = pp > 0 ? rt__proc_find(all, n, pp) : -1;
            if (j < 0)
                break;
            cur = (size_t)j;
        }
        for (size_t k = 0; k < len; k++)
            owner[path[k]] = result;
    }
    /* A root is not its own descendant. */
    for (size_t k = 0; k < nroots; k++) {
        ssize_t j = rt__proc_find(all, n, roots[k]);
        if (j >= 0 && owner[j] == (int)k)
            owner[j] = -1;
    }
    free(path);
}

ssize_t rt__proc_descendants(pid_t root, struct rt__pstat **out)
{
    struct rt__pstat *all;
    ssize_t n = rt__proc_scan(&all);
    if (n < 0)
        return n;
    int *owner = xmalloc((size_t)(n ? n : 1) * sizeof(int));
    rt__proc_owners(all, (size_t)n, &root, 1, owner);
    size_t m = 0;
    for (ssize_t i = 0; i < n; i++)
        if (owner[i] == 0)
            all[m++] = all[i];
    free(owner);
    *out = all;
    return (ssize_t)m;
}
