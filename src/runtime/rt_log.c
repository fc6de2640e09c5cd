/* rt_log.c — the process driver's per-replica log files: timestamped
 * lines, rotation by size, and reading them back (list, tail, follow). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "core/ev.h"
#include "core/util.h"
#include "runtime/rt_internal.h"

#define LOG_BASENAME "output.log"
/* The count of lines a full disk refused, of those already told in the
 * log, and why: "DROPPED TOLD ERRNO\n", rewritten in place (fixed width: the file keeps its
 * one block, so updating it needs no free space). A supervisor that ends
 * before it could tell them leaves them to the next one. */
#define DROPPED_BASENAME "log_dropped"
#define DROPPED_NUM 20
#define DROPPED_WIDTH (2 * DROPPED_NUM + 7)

void rt__fmt_time(uint64_t wall_ms, char buf[32])
{
    time_t t = (time_t)(wall_ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    size_t n = strftime(buf, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, 32 - n, ".%03uZ", (unsigned)(wall_ms % 1000));
}

int rt__parse_time(const char *line, uint64_t *wall_ms)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    unsigned ms;
    int used = 0;
    if (sscanf(line, "%4d-%2d-%2dT%2d:%2d:%2d.%3uZ%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
               &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms, &used) != 7 ||
        used != 24)
        return -EINVAL;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    time_t t = timegm(&tm);
    if (t == (time_t)-1)
        return -EINVAL;
    *wall_ms = (uint64_t)t * 1000u + ms;
    return 0;
}

static char *rotated_path(const char *base, unsigned i)
{
    return i ? xasprintf("%s.%u", base, i) : xstrdup(base);
}

static int count_save(struct rt__logw *w);

int rt__logw_open(struct rt__logw *w, const char *dir, uint64_t max_bytes, unsigned files)
{
    memset(w, 0, sizeof(*w));
    w->count_fd = -1;
    w->path = xasprintf("%s/" LOG_BASENAME, dir);
    w->max_bytes = max_bytes ? max_bytes : RT_DEFAULT_LOG_MAX;
    w->files = files ? files : RT_DEFAULT_LOG_FILES;
    /* O_APPEND: a restarted replica continues the same file. */
    w->fd = open(w->path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (w->fd == -1) {
        int e = errno;
        free(w->path);
        w->path = NULL;
        return -e;
    }
    struct stat sb;
    w->size = fstat(w->fd, &sb) == 0 ? (uint64_t)sb.st_size : 0;
    /* Made while there is room. Lines the previous supervisor could not
     * tell about are this one's to tell; otherwise it counts from zero. */
    char *cp = xasprintf("%s/" DROPPED_BASENAME, dir);
    w->count_fd = open(cp, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    free(cp);
    if (w->count_fd >= 0) {
        char buf[DROPPED_WIDTH + 1];
        unsigned long long d = 0, t = 0;
        int e = 0;
        ssize_t k = pread(w->count_fd, buf, DROPPED_WIDTH, 0);
        if (k == DROPPED_WIDTH) {
            buf[k] = '\0';
            if (sscanf(buf, "%llu %llu %d", &d, &t, &e) == 3 && d > t) {
                w->dropped = d - t;
                w->drop_errno = e;
            }
        }
        if (count_save(w) < 0) {
            close(w->count_fd);
            w->count_fd = -1;
        }
    }
    return 0;
}

static int count_save(struct rt__logw *w)
{
    if (w->count_fd < 0)
        return 0;
    char buf[DROPPED_WIDTH + 1];
    snprintf(buf, sizeof(buf), "%0*llu %0*llu %04d\n", DROPPED_NUM,
             (unsigned long long)w->dropped, DROPPED_NUM, (unsigned long long)w->dropped_told,
             w->drop_errno > 0 && w->drop_errno < 10000 ? w->drop_errno : 0);
    return pwrite(w->count_fd, buf, DROPPED_WIDTH, 0) == DROPPED_WIDTH ? 0 : -EIO;
}

static void count_dropped(struct rt__logw *w)
{
    w->dropped++;
    count_save(w); /* a counter that cannot be updated is not worth stalling for */
}

int rt_proc_log_dropped(const char *state_dir, const char *replica_name, uint64_t *n)
{
    char p[4096], buf[DROPPED_WIDTH + 1];
    snprintf(p, sizeof(p), "%s/replicas/%s/" DROPPED_BASENAME, state_dir, replica_name);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t k = pread(fd, buf, DROPPED_WIDTH, 0);
    close(fd);
    if (k != DROPPED_WIDTH)
        return -EIO;
    buf[k] = '\0';
    *n = strtoull(buf, NULL, 10);
    return 0;
}

/* Shift output.log.(k) → .(k+1), dropping the oldest, and start afresh. */
static void rotate(struct rt__logw *w)
{
    for (unsigned i = w->files - 1; i >= 1; i--) {
        char *from = rotated_path(w->path, i - 1), *to = rotated_path(w->path, i);
        if (i == w->files - 1)
            unlink(to);
        rename(from, to);
        free(from);
        free(to);
    }
    if (w->files <= 1) /* one file only: truncate in place */
        unlink(w->path);
    int fd = open(w->path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd != -1) {
        close(w->fd);
        w->fd = fd;
    }
    w->size = 0;
}

static bool logw_write(struct rt__logw *w, const char *stream, const char *text, size_t len);

void rt__logw_line(struct rt__logw *w, const char *stream, const char *text, size_t len)
{
    if (w->fd < 0) {
        count_dropped(w);
        return;
    }
    if (w->dropped > w->dropped_told) {
        /* Space again: say what is missing before the next line. */
        char note[160];
        uint64_t n = w->dropped - w->dropped_told;
        int nl = snprintf(note, sizeof(note), "tako: %llu log line%s dropped: %s",
                          (unsigned long long)n, n == 1 ? "" : "s",
                          strerror(w->drop_errno ? w->drop_errno : EIO));
        if (!logw_write(w, "stderr", note, (size_t)nl)) {
            count_dropped(w);
            return;
        }
        w->dropped_told += n;
        count_save(w);
    }
    if (!logw_write(w, stream, text, len))
        count_dropped(w);
}

/* One line out; false when the disk refused it (nothing or part written). */
static bool logw_write(struct rt__logw *w, const char *stream, const char *text, size_t len)
{
    char ts[32];
    rt__fmt_time(time_wall_ms(), ts);
    char prefix[48];
    int plen = snprintf(prefix, sizeof(prefix), "%s %s ", ts, stream);
    uint64_t total = (uint64_t)plen + len + 1;
    if (w->size > 0 && w->size + total > w->max_bytes)
        rotate(w);
    struct iovec iov[3] = {
        {prefix, (size_t)plen},
        {(void *)text, len},
        {(void *)"\n", 1},
    };
    /* One writev per line so readers never see half a prefix. A failing
     * disk loses lines rather than stalling the app's pipes. */
    ssize_t n = writev(w->fd, iov, 3);
    if (n > 0)
        w->size += (uint64_t)n;
    if (n == (ssize_t)total)
        return true;
    w->drop_errno = n < 0 ? errno : ENOSPC;
    struct stat sb;
    if (n > 0 && fstat(w->fd, &sb) == 0 && sb.st_size >= (off_t)n) {
        /* Part of a line: cut it back, so the next line starts its own. */
        if (ftruncate(w->fd, sb.st_size - (off_t)n) == 0)
            w->size = (uint64_t)(sb.st_size - (off_t)n);
    }
    return false;
}

void rt__logw_close(struct rt__logw *w)
{
    if (w->fd >= 0)
        close(w->fd);
    w->fd = -1;
    if (w->count_fd >= 0)
        close(w->count_fd);
    w->count_fd = -1;
    free(w->path);
    w->path = NULL;
}

const char *rt_proc_log_path(const char *state_dir, const char *replica_name)
{
    static char buf[4096];
    snprintf(buf, sizeof(buf), "%s/replicas/%s/" LOG_BASENAME, state_dir, replica_name);
    return buf;
}


/* Collector for reading backwards: lines newest first, stopping at the
 * count or at the first line older than since. */
struct tail_ctx {
    size_t want; /* 0: no limit */
    uint64_t since;
    char **v;
    size_t n, cap;
    bool done;
};

static void tail_take(struct tail_ctx *t, const char *line, size_t len)
{
    if (t->since) {
        uint64_t ts;
        char head[32];
        size_t hl = len < sizeof(head) - 1 ? len : sizeof(head) - 1;
        memcpy(head, line, hl);
        head[hl] = '\0';
        if (rt__parse_time(head, &ts) < 0)
            return; /* not a log line: skip it */
        if (ts < t->since) { /* everything before is older still */
            t->done = true;
            return;
        }
    }
    if (t->n == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 64;
        t->v = xrealloc(t->v, t->cap * sizeof(char *));
    }
    t->v[t->n++] = xstrndup(line, len);
    if (t->want && t->n == t->want)
        t->done = true;
}

#define BACK_CHUNK 65536
#define BACK_CARRY_MAX (1u << 20) /* a "line" longer than this is cut */

/* Feed the lines of fd to t from the last to the first, reading only as
 * much of the file as needed. */
static void scan_back(int fd, struct tail_ctx *t)
{
    struct stat sb;
    if (fstat(fd, &sb) == -1)
        return;
    off_t pos = sb.st_size;
    char *carry = NULL; /* the start of a line whose end was already read */
    size_t clen = 0;
    bool last = true;
    while (pos > 0 && !t->done) {
        size_t want = pos > BACK_CHUNK ? BACK_CHUNK : (size_t)pos;
        pos -= (off_t)want;
        char *data = xmalloc(want + clen);
        ssize_t got = pread(fd, data, want, pos);
        if (got != (ssize_t)want) {
            free(data);
            break;
        }
        if (clen)
            memcpy(data + want, carry, clen);
        free(carry);
        carry = NULL;
        size_t end = want + clen;
        if (last && end && data[end - 1] == '\n')
            end--; /* the file's final newline ends the last line */
        last = false;
        for (size_t i = end; i-- > 0 && !t->done;) {
            if (data[i] == '\n') {
                tail_take(t, data + i + 1, end - i - 1);
                end = i;
            }
        }
        if (end > BACK_CARRY_MAX) { /* absurdly long: keep its end only */
            memmove(data, data + end - BACK_CARRY_MAX, BACK_CARRY_MAX);
            end = BACK_CARRY_MAX;
        }
        carry = data;
        clen = end;
    }
    if (!t->done && pos == 0 && clen)
        tail_take(t, carry, clen);
    free(carry);
}

int rt_proc_logs_tail(const char *state_dir, const char *replica_name, size_t n_lines,
                 uint64_t since_wall_ms, char ***lines, size_t *n)
{
    *lines = NULL;
    *n = 0;
    if (!replica_name || !*replica_name || strchr(replica_name, '/') ||
        strcmp(replica_name, ".") == 0 || strcmp(replica_name, "..") == 0)
        return -EINVAL;
    char *base = xstrdup(rt_proc_log_path(state_dir, replica_name));
    struct tail_ctx t = {.want = n_lines, .since = since_wall_ms};
    /* Newest file first, backwards, until enough lines (or old enough
     * ones) were seen: a tail of 10 lines reads a few KiB, not 30 MiB. The
     * number of rotated files is not known here; stop at the first gap. */
    for (unsigned k = 0; k < 100 && !t.done; k++) {
        char *p = rotated_path(base, k);
        int fd = open(p, O_RDONLY | O_CLOEXEC);
        free(p);
        if (fd == -1) {
            if (k == 0)
                continue; /* rotated just now, or never written: look at .1 */
            break;
        }
        scan_back(fd, &t);
        close(fd);
    }
    free(base);
    /* Collected newest first: turn around. */
    for (size_t a = 0, b = t.n; a + 1 < b; a++, b--) {
        char *x = t.v[a];
        t.v[a] = t.v[b - 1];
        t.v[b - 1] = x;
    }
    *lines = t.v ? t.v : xcalloc(1, sizeof(char *));
    *n = t.n;
    return 0;
}

int rt__log_last_line(const char *state_dir, const char *replica_name, char *buf, size_t len)
{
    /* Only the end of the newest non-empty file is read: this runs on every
     * exit of a crash-looping replica, whose logs may be large. */
    char *base = xstrdup(rt_proc_log_path(state_dir, replica_name));
    int r = -ENOENT;
    buf[0] = '\0';
    for (unsigned k = 0; k < 2 && r < 0; k++) {
        char *p = rotated_path(base, k);
        int fd = open(p, O_RDONLY | O_CLOEXEC);
        free(p);
        if (fd == -1)
            continue;
        char tail[4096];
        struct stat sb;
        off_t off = fstat(fd, &sb) == 0 && sb.st_size > (off_t)sizeof(tail) - 1
                        ? sb.st_size - (off_t)sizeof(tail) + 1
                        : 0;
        ssize_t n = pread(fd, tail, sizeof(tail) - 1, off);
        close(fd);
        if (n <= 0)
            continue;
        tail[n] = '\0';
        while (n > 0 && tail[n - 1] == '\n')
            tail[--n] = '\0';
        if (n == 0)
            continue;
        char *line = strrchr(tail, '\n');
        line = line ? line + 1 : tail;
        /* Drop "<time> <stream> ": the text is what tells crashes apart. */
        char *sp = strchr(line, ' ');
        if (sp && rt__parse_time(line, &(uint64_t){0}) == 0) {
            char *sp2 = strchr(sp + 1, ' ');
            line = sp2 ? sp2 + 1 : sp + 1;
        }
        snprintf(buf, len, "%s", line);
        r = 0;
    }
    free(base);
    return r;
}

/* ---- the driver's log ops: list, tail, follow ---- */

/* "<project>-<service>-<n>" of project (and service when given)? */
static bool name_matches(const char *name, const char *project, const char *service)
{
    if (!project)
        return true;
    size_t pl = strlen(project);
    if (strncmp(name, project, pl) != 0 || name[pl] != '-')
        return false;
    const char *rest = name + pl + 1;
    const char *dash = strrchr(rest, '-');
    if (!dash || dash == rest || !dash[1])
        return false;
    for (const char *p = dash + 1; *p; p++)
        if (*p < '0' || *p > '9')
            return false;
    if (service)
        return (size_t)(dash - rest) == strlen(service) &&
               strncmp(rest, service, strlen(service)) == 0;
    return true;
}

int rt__proc_logs_list(const char *state_dir, const char *driver, const char *project,
                       const char *service, struct rt_log_ref **out, size_t *n)
{
    char *root = xasprintf("%s/replicas", state_dir);
    DIR *d = opendir(root);
    free(root);
    if (!d)
        return errno == ENOENT ? 0 : -errno;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || strlen(e->d_name) >= sizeof((*out)->name) ||
            !name_matches(e->d_name, project, service))
            continue;
        *out = xrealloc(*out, (*n + 1) * sizeof(**out));
        memcpy((*out)[*n].name, e->d_name, strlen(e->d_name) + 1);
        (*out)[*n].driver = driver;
        (*n)++;
    }
    closedir(d);
    return 0;
}

struct proc_follow {
    struct rt_log_follow base;
    struct ev_loop *loop;
    struct ev_timer timer;
    char *name, *path;
    ino_t ino;
    off_t off;
    char *partial;
    size_t partial_len;
    rt_log_line_cb line;
    void *data;
};

/* Read what was appended since the last look; a new inode (rotation) or a
 * shorter file is read from its start. */
static void follow_read(struct proc_follow *f)
{
    struct stat st;
    if (stat(f->path, &st) != 0)
        return;
    if (st.st_ino != f->ino || st.st_size < f->off) {
        f->ino = st.st_ino;
        f->off = 0;
    }
    if (st.st_size == f->off)
        return;
    int fd = open(f->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    char buf[65536];
    ssize_t k;
    while ((k = pread(fd, buf, sizeof(buf), f->off)) > 0) {
        f->off += k;
        /* A line never grows past RT_LINE_MAX plus its prefix: the writer
         * splits longer ones, so partial stays bounded. */
        f->partial = xrealloc(f->partial, f->partial_len + (size_t)k + 1);
        memcpy(f->partial + f->partial_len, buf, (size_t)k);
        f->partial_len += (size_t)k;
        size_t start = 0;
        for (size_t i = 0; i < f->partial_len; i++) {
            if (f->partial[i] != '\n')
                continue;
            f->partial[i] = '\0';
            f->line(f->data, f->name, f->partial + start);
            start = i + 1;
        }
        memmove(f->partial, f->partial + start, f->partial_len - start);
        f->partial_len -= start;
    }
    close(fd);
}

static void on_follow_timer(struct ev_loop *loop, struct ev_timer *t)
{
    struct proc_follow *f = t->data;
    follow_read(f);
    ev_timer_start(loop, &f->timer, RT_FOLLOW_POLL_MS);
}

int rt__proc_logs_follow(struct ev_loop *loop, const char *state_dir, const char *name,
                         bool from_start, rt_log_line_cb line, void *data,
                         struct rt_log_follow **out)
{
    struct proc_follow *f = xcalloc(1, sizeof(*f));
    f->loop = loop;
    f->name = xstrdup(name);
    f->path = xstrdup(rt_proc_log_path(state_dir, name));
    f->line = line;
    f->data = data;
    struct stat st;
    if (!from_start && stat(f->path, &st) == 0) {
        f->ino = st.st_ino; /* from here on: what is there was tailed already */
        f->off = st.st_size;
    }
    ev_timer_init(&f->timer, on_follow_timer, f);
    ev_timer_start(loop, &f->timer, RT_FOLLOW_POLL_MS);
    *out = &f->base;
    return 0;
}

void rt__proc_logs_unfollow(struct rt_log_follow *base)
{
    struct proc_follow *f = (struct proc_follow *)base;
    ev_timer_stop(f->loop, &f->timer);
    free(f->name);
    free(f->path);
    free(f->partial);
    free(f);
}
