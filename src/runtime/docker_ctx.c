/* docker_ctx.c — the build context for the Docker driver: .dockerignore
 * patterns, the tar stream sent to POST /build, and image reference checks. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/util.h"
#include "runtime/docker_api.h"

/* ---- glob ---- */

/* [...] at p against c; *end receives the char after ']'. */
static bool class_match(const char *p, char c, const char **end)
{
    bool neg = false, hit = false;
    p++; /* '[' */
    if (*p == '!' || *p == '^') {
        neg = true;
        p++;
    }
    bool first = true;
    while (*p && (first || *p != ']')) {
        first = false;
        char lo = *p;
        if (lo == '\\' && p[1])
            lo = *++p;
        char hi = lo;
        if (p[1] == '-' && p[2] && p[2] != ']') {
            hi = p[2];
            if (hi == '\\' && p[3])
                hi = p[3], p++;
            p += 2;
        }
        if (c >= lo && c <= hi)
            hit = true;
        p++;
    }
    if (*p != ']') { /* unterminated: a literal '[' */
        *end = NULL;
        return false;
    }
    *end = p + 1;
    return hit != neg;
}

static bool glob_at(const char *p, const char *s)
{
    for (;;) {
        if (*p == '\0')
            return *s == '\0';
        if (p[0] == '*' && p[1] == '*') {
            p += 2;
            if (*p == '/' && glob_at(p + 1, s)) /* "**" then "/" may stand for no directory */
                return true;
            for (const char *t = s;; t++) {
                if (glob_at(p, t))
                    return true;
                if (*t == '\0')
                    return false;
            }
        }
        if (*p == '*') {
            p++;
            for (const char *t = s;; t++) {
                if (glob_at(p, t))
                    return true;
                if (*t == '\0' || *t == '/')
                    return false;
            }
        }
        if (*s == '\0')
            return false;
        if (*p == '?') {
            if (*s == '/')
                return false;
            p++, s++;
            continue;
        }
        if (*p == '[') {
            const char *end;
            if (*s == '/')
                return false;
            bool m = class_match(p, *s, &end);
            if (end == NULL) { /* literal '[' */
                if (*s != '[')
                    return false;
                p++, s++;
                continue;
            }
            if (!m)
                return false;
            p = end, s++;
            continue;
        }
        if (*p == '\\' && p[1])
            p++;
        if (*p != *s)
            return false;
        p++, s++;
    }
}

bool dk_glob(const char *pattern, const char *path) { return glob_at(pattern, path); }

/* ---- .dockerignore ---- */

struct dk_ignore_pat {
    char *pat;
    bool exclusion; /* "!pattern": include again */
    unsigned dirs;  /* path components in pat */
};

struct dk_ignore {
    struct dk_ignore_pat *v;
    size_t n;
    bool has_exclusions;
};

/* filepath.Clean-like: no "./", no "//", no trailing '/', no leading '/'. */
static void clean_path(char *s)
{
    char *out = s;
    const char *in = s;
    while (*in == '/')
        in++;
    while (*in) {
        const char *e = strchr(in, '/');
        size_t n = e ? (size_t)(e - in) : strlen(in);
        if (n == 0 || (n == 1 && in[0] == '.')) {
            /* skip */
        } else if (n == 2 && in[0] == '.' && in[1] == '.') {
            if (out > s) { /* drop the last component */
                out--;
                while (out > s && out[-1] != '/')
                    out--;
                if (out > s)
                    out--;
            }
        } else {
            if (out > s)
                *out++ = '/';
            memmove(out, in, n);
            out += n;
        }
        in += n;
        while (*in == '/')
            in++;
    }
    *out = '\0';
}

struct dk_ignore *dk_ignore_parse(const char *text)
{
    struct dk_ignore *ig = xcalloc(1, sizeof(*ig));
    const char *p = text ? text : "";
    while (*p) {
        const char *e = strchr(p, '\n');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        char *line = xstrndup(p, n);
        p += n + (e ? 1 : 0);
        char *l = line;
        while (*l == ' ' || *l == '\t')
            l++;
        size_t ln = strlen(l);
        while (ln && (l[ln - 1] == ' ' || l[ln - 1] == '\t' || l[ln - 1] == '\r'))
            l[--ln] = '\0';
        if (*l == '\0' || *l == '#') {
            free(line);
            continue;
        }
        bool excl = false;
        if (*l == '!') {
            excl = true;
            l++;
            while (*l == ' ' || *l == '\t')
                l++;
        }
        clean_path(l);
        if (*l == '\0') {
            free(line);
            continue;
        }
        ig->v = xrealloc(ig->v, (ig->n + 1) * sizeof(*ig->v));
        struct dk_ignore_pat *pt = &ig->v[ig->n++];
        pt->pat = xstrdup(l);
        pt->exclusion = excl;
        pt->dirs = 1;
        for (const char *c = l; *c; c++)
            pt->dirs += *c == '/';
        ig->has_exclusions |= excl;
        free(line);
    }
    return ig;
}

void dk_ignore_free(struct dk_ignore *ig)
{
    if (!ig)
        return;
    for (size_t i = 0; i < ig->n; i++)
        free(ig->v[i].pat);
    free(ig->v);
    free(ig);
}

/* Docker's rule: the last pattern that matches the path, or one of its
 * parent directories with as many components as the pattern, decides. */
bool dk_ignore_match(const struct dk_ignore *ig, const char *path)
{
    if (!ig || ig->n == 0)
        return false;
    bool matched = false;
    char prefix[4096];
    for (size_t i = 0; i < ig->n; i++) {
        const struct dk_ignore_pat *pt = &ig->v[i];
        bool m = dk_glob(pt->pat, path);
        if (!m) {
            /* the first pt->dirs components of path, when it has more */
            unsigned comps = 0;
            size_t k = 0, len = strlen(path);
            for (; k < len; k++)
                if (path[k] == '/' && ++comps == pt->dirs)
                    break;
            if (k < len && k < sizeof(prefix)) {
                memcpy(prefix, path, k);
                prefix[k] = '\0';
                m = dk_glob(pt->pat, prefix);
            }
        }
        if (m)
            matched = !pt->exclusion;
    }
    return matched;
}

/* ---- tar ---- */

struct tarbuf {
    char *b;
    size_t len, cap;
};

static void tb_grow(struct tarbuf *t, size_t n)
{
    if (t->len + n <= t->cap)
        return;
    size_t cap = t->cap ? t->cap : 65536;
    while (cap < t->len + n)
        cap *= 2;
    t->b = xrealloc(t->b, cap);
    t->cap = cap;
}

static void tb_put(struct tarbuf *t, const void *p, size_t n)
{
    tb_grow(t, n);
    memcpy(t->b + t->len, p, n);
    t->len += n;
}

static void tb_pad(struct tarbuf *t)
{
    size_t r = t->len % 512;
    if (r) {
        tb_grow(t, 512 - r);
        memset(t->b + t->len, 0, 512 - r);
        t->len += 512 - r;
    }
}

static void octal(char *dst, size_t width, unsigned long long v)
{
    /* width-1 octal digits, zero-padded, and a NUL */
    dst[width - 1] = '\0';
    for (size_t i = width - 1; i > 0; i--) {
        dst[i - 1] = (char)('0' + (v & 7));
        v >>= 3;
    }
}

static void header(struct tarbuf *t, const char *name, char type, unsigned long long size,
                   unsigned mode, long long mtime, const char *link)
{
    char h[512];
    memset(h, 0, sizeof(h));
    snprintf(h, 100, "%s", name);
    octal(h + 100, 8, mode & 07777);
    octal(h + 108, 8, 0);
    octal(h + 116, 8, 0);
    octal(h + 124, 12, size);
    octal(h + 136, 12, mtime > 0 ? (unsigned long long)mtime : 0);
    memset(h + 148, ' ', 8);
    h[156] = type;
    if (link)
        snprintf(h + 157, 100, "%s", link);
    memcpy(h + 257, "ustar", 6);
    memcpy(h + 263, "00", 2);
    unsigned sum = 0;
    for (size_t i = 0; i < 512; i++)
        sum += (unsigned char)h[i];
    snprintf(h + 148, 8, "%06o", sum);
    h[155] = ' ';
    tb_put(t, h, 512);
}

/* A PAX record "LEN key=value\n" whose LEN counts itself. */
static void pax_record(struct tarbuf *rec, const char *key, const char *value)
{
    size_t body = strlen(key) + strlen(value) + 3; /* ' ' '=' '\n' */
    size_t len = body + 1;
    for (;;) {
        char d[32];
        size_t nd = (size_t)snprintf(d, sizeof(d), "%zu", len);
        if (nd + body == len)
            break;
        len = nd + body;
    }
    char *s = xasprintf("%zu %s=%s\n", len, key, value);
    tb_put(rec, s, strlen(s));
    free(s);
}

static void entry(struct tarbuf *t, const char *name, char type, unsigned long long size,
                  unsigned mode, long long mtime, const char *link)
{
    bool long_name = strlen(name) >= 100, long_link = link && strlen(link) >= 100;
    if (long_name || long_link) {
        struct tarbuf rec = {0};
        if (long_name)
            pax_record(&rec, "path", name);
        if (long_link)
            pax_record(&rec, "linkpath", link);
        header(t, "PaxHeader", 'x', rec.len, 0644, mtime, NULL);
        tb_put(t, rec.b, rec.len);
        tb_pad(t);
        free(rec.b);
    }
    header(t, name, type, size, mode, mtime, link);
}

struct walk {
    const char *root;
    const char *dockerfile;
    struct dk_ignore *ig;
    struct tarbuf t;
    char *err;
    size_t errlen;
};

static int add_file(struct walk *w, const char *rel, const struct stat *st)
{
    char path[8192];
    snprintf(path, sizeof(path), "%s/%s", w->root, rel);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        int e = errno;
        snprintf(w->err, w->errlen, "%s: %s", path, strerror(e));
        return -e;
    }
    entry(&w->t, rel, '0', (unsigned long long)st->st_size, st->st_mode, st->st_mtime, NULL);
    size_t want = (size_t)st->st_size;
    tb_grow(&w->t, want);
    size_t got = 0;
    while (got < want) {
        ssize_t n = read(fd, w->t.b + w->t.len + got, want - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int e = n < 0 ? errno : EIO;
            snprintf(w->err, w->errlen, "%s: %s", path,
                     n < 0 ? strerror(e) : "file shrank while being read");
            close(fd);
            return -e;
        }
        got += (size_t)n;
    }
    close(fd);
    w->t.len += want;
    tb_pad(&w->t);
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool always_sent(const struct walk *w, const char *rel)
{
    return strcmp(rel, w->dockerfile) == 0 || strcmp(rel, ".dockerignore") == 0;
}

static int walk_dir(struct walk *w, const char *rel)
{
    char path[8192];
    snprintf(path, sizeof(path), "%s%s%s", w->root, *rel ? "/" : "", rel);
    DIR *d = opendir(path);
    if (!d) {
        int e = errno;
        snprintf(w->err, w->errlen, "%s: %s", path, strerror(e));
        return -e;
    }
    char **names = NULL;
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        names = xrealloc(names, (n + 1) * sizeof(*names));
        names[n++] = xstrdup(de->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof(*names), cmp_str);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        char sub[4096];
        if ((size_t)snprintf(sub, sizeof(sub), "%s%s%s", rel, *rel ? "/" : "", names[i]) >=
            sizeof(sub)) {
            snprintf(w->err, w->errlen, "%s/%s: path too long", path, names[i]);
            rc = -ENAMETOOLONG;
            break;
        }
        char full[8192];
        snprintf(full, sizeof(full), "%s/%s", w->root, sub);
        struct stat st;
        if (lstat(full, &st) < 0) {
            rc = -errno;
            snprintf(w->err, w->errlen, "%s: %s", full, strerror(-rc));
            break;
        }
        bool ignored = dk_ignore_match(w->ig, sub) && !always_sent(w, sub);
        if (S_ISDIR(st.st_mode)) {
            if (ignored && !w->ig->has_exclusions)
                continue;
            if (!ignored) {
                char dname[4098];
                snprintf(dname, sizeof(dname), "%s/", sub);
                entry(&w->t, dname, '5', 0, st.st_mode, st.st_mtime, NULL);
            }
            rc = walk_dir(w, sub);
        } else if (ignored) {
            continue;
        } else if (S_ISREG(st.st_mode)) {
            rc = add_file(w, sub, &st);
        } else if (S_ISLNK(st.st_mode)) {
            char target[4096];
            ssize_t k = readlink(full, target, sizeof(target) - 1);
            if (k < 0) {
                rc = -errno;
                snprintf(w->err, w->errlen, "%s: %s", full, strerror(-rc));
                break;
            }
            target[k] = '\0';
            entry(&w->t, sub, '2', 0, st.st_mode, st.st_mtime, target);
        }
        /* sockets, fifos and devices have no place in an image context */
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return rc;
}

int dk_tar_context(const char *dir, const char *dockerfile, char **buf, size_t *len, char *err,
                   size_t errlen)
{
    char dummy[8];
    if (!err)
        err = dummy, errlen = sizeof(dummy);
    struct walk w = {.root = dir, .dockerfile = dockerfile ? dockerfile : "Dockerfile",
                     .err = err, .errlen = errlen};
    char ipath[8192];
    snprintf(ipath, sizeof(ipath), "%s/.dockerignore", dir);
    size_t ilen = 0;
    FILE *f = fopen(ipath, "re");
    char *itext = NULL;
    if (f) {
        itext = xmalloc(1 << 20);
        ilen = fread(itext, 1, (1 << 20) - 1, f);
        itext[ilen] = '\0';
        fclose(f);
    }
    w.ig = dk_ignore_parse(itext);
    free(itext);
    int rc = walk_dir(&w, "");
    dk_ignore_free(w.ig);
    if (rc < 0) {
        free(w.t.b);
        return rc;
    }
    tb_grow(&w.t, 1024);
    memset(w.t.b + w.t.len, 0, 1024);
    w.t.len += 1024;
    *buf = w.t.b;
    *len = w.t.len;
    return 0;
}

/* ---- references ---- */

static bool is_lower_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

/* One path component: [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)* */
static bool path_component_ok(const char *s, size_t n)
{
    if (n == 0 || !is_lower_alnum(s[0]) || !is_lower_alnum(s[n - 1]))
        return false;
    for (size_t i = 0; i < n; i++) {
        if (is_lower_alnum(s[i]))
            continue;
        if (s[i] == '.' || s[i] == '_') {
            size_t run = 1;
            while (i + run < n && s[i + run] == s[i])
                run++;
            if ((s[i] == '.' && run > 1) || run > 2)
                return false;
            i += run - 1;
            continue;
        }
        if (s[i] == '-')
            continue;
        return false;
    }
    return true;
}

static bool domain_ok(const char *s, size_t n)
{
    size_t i = 0;
    const char *colon = memchr(s, ':', n);
    size_t host = colon ? (size_t)(colon - s) : n;
    if (host == 0)
        return false;
    for (i = 0; i < host; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '-'))
            return false;
    }
    if (colon) {
        if (host + 1 == n)
            return false;
        for (i = host + 1; i < n; i++)
            if (s[i] < '0' || s[i] > '9')
                return false;
    }
    return true;
}

int dk_ref_check(const char *ref, char *err, size_t errlen)
{
    char dummy[8];
    if (!err)
        err = dummy, errlen = sizeof(dummy);
    size_t n = strlen(ref);
    if (n == 0) {
        snprintf(err, errlen, "empty image name");
        return -EINVAL;
    }
    const char *at = strchr(ref, '@');
    size_t name_end = at ? (size_t)(at - ref) : n;
    if (at) {
        const char *d = at + 1, *c = strchr(d, ':');
        bool ok = c && c > d;
        for (const char *p = c ? c + 1 : d; ok && *p; p++)
            ok = (*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f');
        if (!ok || !c || strlen(c + 1) < 32) {
            snprintf(err, errlen, "invalid digest '%s' (want ALGORITHM:HEX)", d);
            return -EINVAL;
        }
    }
    /* a tag is after the last ':' that follows the last '/' */
    size_t slash = 0;
    for (size_t i = 0; i < name_end; i++)
        if (ref[i] == '/')
            slash = i + 1;
    const char *colon = memchr(ref + slash, ':', name_end - slash);
    if (colon) {
        const char *tag = colon + 1;
        size_t tl = (size_t)(ref + name_end - tag);
        bool ok = tl > 0 && tl <= 128 && tag[0] != '.' && tag[0] != '-';
        for (size_t i = 0; ok && i < tl; i++)
            ok = (tag[i] >= 'a' && tag[i] <= 'z') || (tag[i] >= 'A' && tag[i] <= 'Z') ||
                 (tag[i] >= '0' && tag[i] <= '9') || tag[i] == '_' || tag[i] == '.' ||
                 tag[i] == '-';
        if (!ok) {
            snprintf(err, errlen,
                     "invalid tag '%.*s' (letters, digits, '_', '.', '-'; at most 128; not "
                     "starting with '.' or '-')",
                     (int)tl, tag);
            return -EINVAL;
        }
        name_end = (size_t)(colon - ref);
    }
    if (name_end > 255) {
        snprintf(err, errlen, "image name longer than 255 characters");
        return -EINVAL;
    }
    size_t start = 0, comp = 0;
    while (start <= name_end) {
        const char *e = memchr(ref + start, '/', name_end - start);
        size_t end = e ? (size_t)(e - ref) : name_end;
        bool first_of_many = comp == 0 && e != NULL;
        bool ok;
        if (first_of_many &&
            (memchr(ref, '.', end) || memchr(ref, ':', end) ||
             (end == 9 && strncmp(ref, "localhost", 9) == 0)))
            ok = domain_ok(ref, end);
        else
            ok = path_component_ok(ref + start, end - start);
        if (!ok) {
            snprintf(err, errlen,
                     "invalid image name '%.*s': '%.*s' must be lower-case letters and digits, "
                     "separated by '.', '_', '__' or '-'",
                     (int)name_end, ref, (int)(end - start), ref + start);
            return -EINVAL;
        }
        comp++;
        if (!e)
            break;
        start = end + 1;
    }
    return 0;
}

void dk_ref_split(const char *ref, char *name, size_t nlen, char *tag, size_t tlen)
{
    const char *slash = strrchr(ref, '/');
    const char *at = strchr(ref, '@');
    const char *colon = strrchr(slash ? slash : ref, ':');
    if (at && colon && colon > at)
        colon = NULL;
    if (colon) {
        snprintf(name, nlen, "%.*s", (int)(colon - ref), ref);
        snprintf(tag, tlen, "%s", colon + 1);
    } else {
        snprintf(name, nlen, "%s", ref);
        snprintf(tag, tlen, "latest");
    }
}

/* The name part of ref ends at '@' or at the tag's ':' (after the last '/'). */
static size_t ref_name_len(const char *ref, bool *has_tag, bool *has_digest)
{
    const char *at = strchr(ref, '@');
    size_t end = at ? (size_t)(at - ref) : strlen(ref);
    size_t slash = 0;
    for (size_t i = 0; i < end; i++)
        if (ref[i] == '/')
            slash = i + 1;
    const char *colon = memchr(ref + slash, ':', end - slash);
    *has_digest = at != NULL;
    *has_tag = colon != NULL;
    return colon ? (size_t)(colon - ref) : end;
}

void dk_ref_pull_args(const char *ref, char *from, size_t flen, char *tag, size_t tlen)
{
    bool has_tag, has_digest;
    size_t n = ref_name_len(ref, &has_tag, &has_digest);
    if (has_digest) { /* the digest pins it; a tag beside it is ignored by the engine */
        snprintf(from, flen, "%s", ref);
        snprintf(tag, tlen, "%s", "");
        return;
    }
    snprintf(from, flen, "%.*s", (int)n, ref);
    snprintf(tag, tlen, "%s", has_tag ? ref + n + 1 : "latest");
}

bool dk_ref_floating(const char *ref)
{
    bool has_tag, has_digest;
    size_t n = ref_name_len(ref, &has_tag, &has_digest);
    if (has_digest)
        return false;
    return !has_tag || strcmp(ref + n + 1, "latest") == 0;
}

void dk_ref_registry(const char *ref, char *host, size_t hlen)
{
    const char *slash = strchr(ref, '/');
    const char *at = strchr(ref, '@');
    if (slash && (!at || slash < at)) {
        size_t k = (size_t)(slash - ref);
        if (memchr(ref, '.', k) || memchr(ref, ':', k) ||
            (k == 9 && strncmp(ref, "localhost", 9) == 0)) {
            snprintf(host, hlen, "%.*s", (int)k, ref);
            return;
        }
    }
    snprintf(host, hlen, "%s", "docker.io");
}
