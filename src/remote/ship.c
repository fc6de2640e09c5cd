/* ship.c — send a service's build directory to a server, content-addressed:
 * the server says which file contents it lacks, only those travel (see
 * remote.h; the server's half is receive.c). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/sha256.h"
#include "core/util.h"
#include "remote/remote.h"

struct ign {
    char **pat;
    bool *neg;
    size_t n;
};

struct entry {
    char type; /* f d l */
    unsigned mode;
    char sha[65]; /* file content; "-" for dirs and links */
    char *link;   /* a link's target, hex-encoded */
    unsigned long long size;
    char *path; /* relative */
};

struct walk {
    struct entry *e;
    size_t n, cap;
    struct ign ign;
    const char *root;
    char err[4400];
};

/* .takoignore when present, else .dockerignore: one pattern a line, # comments,
 * ! re-includes, a trailing / or a leading / is dropped, ** spans directories. */
static void ign_load(struct ign *g, const char *root)
{
    const char *names[] = {".takoignore", ".dockerignore"};
    FILE *f = NULL;
    for (size_t i = 0; i < 2 && !f; i++) {
        char p[4096];
        snprintf(p, sizeof(p), "%s/%s", root, names[i]);
        f = fopen(p, "re");
    }
    if (!f)
        return;
    char line[1024];
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\r\n")] = '\0';
        char *s = line;
        while (*s == ' ' || *s == '\t')
            s++;
        size_t l = strlen(s);
        while (l && (s[l - 1] == ' ' || s[l - 1] == '\t'))
            s[--l] = '\0';
        if (!*s || *s == '#')
            continue;
        bool neg = *s == '!';
        if (neg)
            s++;
        while (*s == '/')
            s++;
        l = strlen(s);
        while (l && s[l - 1] == '/')
            s[--l] = '\0';
        if (l >= 2 && strcmp(s + l - 2, "/.") == 0)
            s[l - 2] = '\0';
        if (!*s)
            continue;
        g->pat = xrealloc(g->pat, (g->n + 1) * sizeof(*g->pat));
        g->neg = xrealloc(g->neg, (g->n + 1) * sizeof(*g->neg));
        g->pat[g->n] = xstrdup(s);
        g->neg[g->n] = neg;
        g->n++;
    }
    fclose(f);
}

static bool pat_match(const char *pat, const char *path)
{
    if (strstr(pat, "**")) {
        /* "**" may span directories: without FNM_PATHNAME, * does too. */
        char p2[1024];
        size_t o = 0;
        for (const char *s = pat; *s && o + 1 < sizeof(p2); s++) {
            if (s[0] == '*' && s[1] == '*') {
                p2[o++] = '*';
                s++;
                if (s[1] == '/')
                    s++;
            } else {
                p2[o++] = *s;
            }
        }
        p2[o] = '\0';
        return fnmatch(p2, path, 0) == 0;
    }
    return fnmatch(pat, path, FNM_PATHNAME) == 0;
}

/* Is PATH (relative, a directory's path when dir) ignored? Last match wins. */
static bool ign_match(const struct ign *g, const char *path)
{
    bool ignored = false;
    for (size_t i = 0; i < g->n; i++)
        if (pat_match(g->pat[i], path))
            ignored = !g->neg[i];
    return ignored;
}

static void ign_free(struct ign *g)
{
    for (size_t i = 0; i < g->n; i++)
        free(g->pat[i]);
    free(g->pat);
    free(g->neg);
}

static int hash_file(const char *p, char hex[65], unsigned long long *size)
{
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct sha256 h;
    sha256_init(&h);
    char buf[65536];
    ssize_t k;
    *size = 0;
    while ((k = read(fd, buf, sizeof(buf))) > 0) {
        sha256_update(&h, buf, (size_t)k);
        *size += (unsigned long long)k;
    }
    int e = k < 0 ? -errno : 0;
    close(fd);
    sha256_hex(&h, hex);
    return e;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static struct entry *add(struct walk *w)
{
    if (w->n == w->cap) {
        w->cap = w->cap ? w->cap * 2 : 256;
        w->e = xrealloc(w->e, w->cap * sizeof(*w->e));
    }
    struct entry *e = &w->e[w->n++];
    memset(e, 0, sizeof(*e));
    return e;
}

static int walk_dir(struct walk *w, const char *rel, int depth)
{
    if (depth > 64) {
        snprintf(w->err, sizeof(w->err), "%s/%s: directories nested too deep", w->root, rel);
        return -1;
    }
    char abs[4096];
    snprintf(abs, sizeof(abs), "%s%s%s", w->root, *rel ? "/" : "", rel);
    DIR *d = opendir(abs);
    if (!d) {
        snprintf(w->err, sizeof(w->err), "%s: %s", abs, strerror(errno));
        return -1;
    }
    char **names = NULL;
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0 ||
            (!*rel && strcmp(de->d_name, ".git") == 0))
            continue;
        names = xrealloc(names, (n + 1) * sizeof(*names));
        names[n++] = xstrdup(de->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof(*names), name_cmp);
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        char rp[4096], ap[4096];
        int k1 = snprintf(rp, sizeof(rp), "%s%s%s", rel, *rel ? "/" : "", names[i]);
        int k2 = snprintf(ap, sizeof(ap), "%s/%s", w->root, rp);
        struct stat st;
        if (rc < 0 || k1 < 0 || (size_t)k1 >= sizeof(rp) || k2 < 0 || (size_t)k2 >= sizeof(ap) || strchr(rp, '\n') || ign_match(&w->ign, rp) || lstat(ap, &st) != 0)
            goto next;
        if (S_ISDIR(st.st_mode)) {
            struct entry *e = add(w);
            e->type = 'd';
            e->mode = st.st_mode & 07777;
            strcpy(e->sha, "-");
            e->path = xstrdup(rp);
            rc = walk_dir(w, rp, depth + 1);
        } else if (S_ISREG(st.st_mode)) {
            struct entry *e = add(w);
            e->type = 'f';
            e->mode = st.st_mode & 07777;
            e->path = xstrdup(rp);
            if (hash_file(ap, e->sha, &e->size) < 0) {
                snprintf(w->err, sizeof(w->err), "%s: %s", ap, strerror(errno));
                rc = -1;
            }
        } else if (S_ISLNK(st.st_mode)) {
            char t[2048];
            ssize_t k = readlink(ap, t, sizeof(t) - 1);
            if (k <= 0)
                goto next;
            struct entry *e = add(w);
            e->type = 'l';
            e->mode = 0777;
            strcpy(e->sha, "-");
            e->path = xstrdup(rp);
            e->link = xmalloc((size_t)k * 2 + 1);
            for (ssize_t j = 0; j < k; j++)
                snprintf(e->link + 2 * j, 3, "%02x", (unsigned char)t[j]);
        }
    next:
        free(names[i]);
    }
    free(names);
    return rc;
}

/* The manifest: one line per entry, path last, lines sorted bytewise (so
 * directories come first, parents before children, and a tree's id does
 * not depend on the order the files were found in):
 *   d MODE - 0 PATH | f MODE SHA256 SIZE PATH | l 0777 HEXTARGET 0 PATH */
static int line_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static char **manifest_lines(const struct walk *w)
{
    char **l = xcalloc(w->n + 1, sizeof(*l));
    for (size_t i = 0; i < w->n; i++) {
        const struct entry *e = &w->e[i];
        l[i] = xasprintf("%c %04o %s %llu %s", e->type, e->mode,
                         e->type == 'l' ? e->link : e->sha, e->size, e->path);
    }
    qsort(l, w->n, sizeof(*l), line_cmp);
    return l;
}

static char *join_lines(char **l, size_t n, size_t *len)
{
    char *buf = NULL;
    FILE *m = open_memstream(&buf, len);
    if (!m)
        abort();
    for (size_t i = 0; i < n; i++)
        fprintf(m, "%s\n", l[i]);
    fclose(m);
    return buf;
}

static int str_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Split TEXT (modified in place) into sorted lines. */
static char **split_lines(char *text, size_t *n)
{
    char **l = NULL;
    *n = 0;
    for (char *p = text; p && *p;) {
        char *nl = strchr(p, '\n');
        if (nl)
            *nl = '\0';
        if (*p) {
            l = xrealloc(l, (*n + 1) * sizeof(*l));
            l[(*n)++] = p;
        }
        p = nl ? nl + 1 : NULL;
    }
    if (*n)
        qsort(l, *n, sizeof(*l), str_cmp);
    return l;
}


/* Copy a file's bytes into the pack; fails when it changed under us
 * (-EAGAIN), cannot be read, or the pack cannot grow (*wfail set). */
static int pack_file(int out, const char *path, unsigned long long size, bool *wfail)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    char buf[65536];
    unsigned long long left = size;
    while (left) {
        ssize_t k = read(fd, buf, left < sizeof(buf) ? (size_t)left : sizeof(buf));
        if (k <= 0) {
            close(fd);
            return k < 0 ? -errno : -EAGAIN;
        }
        int w = write_all(out, buf, (size_t)k);
        if (w < 0) {
            close(fd);
            *wfail = true;
            return w;
        }
        left -= (unsigned long long)k;
    }
    close(fd);
    return 0;
}

static bool is_secret_name(const char *path)
{
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    return strcmp(b, ".env") == 0 || str_starts_with(b, ".env.");
}

int ship_tree(struct ssh_conn *c, const char *project, const char *service, const char *dir,
              char *remote_dir, size_t rdlen, struct ship_stats *st, char *err, size_t errlen)
{
    memset(st, 0, sizeof(*st));
    struct walk w = {.root = dir};
    ign_load(&w.ign, dir);
    int rc = -1;
    char *man = NULL, *out = NULL, *eout = NULL;
    int pfd = -1;
    char **lines = NULL;
    if (walk_dir(&w, "", 0) < 0) {
        snprintf(err, errlen, "cannot read the build directory: %s", w.err);
        goto out;
    }
    /* Secrets (.env files) are stored 0600 on the server whatever their mode here. */
    for (size_t i = 0; i < w.n; i++)
        if (w.e[i].type == 'f' && is_secret_name(w.e[i].path))
            w.e[i].mode = 0600;
    size_t mlen = 0;
    lines = manifest_lines(&w);
    man = join_lines(lines, w.n, &mlen);
    struct sha256 h;
    sha256_init(&h);
    sha256_update(&h, man, mlen);
    char tid[65];
    sha256_hex(&h, tid);
    tid[16] = '\0';
    for (size_t i = 0; i < w.n; i++)
        if (w.e[i].type == 'f') {
            st->files++;
            st->bytes += w.e[i].size;
        }
    /* 1: does the server have this tree? If not, it answers with the
     * manifest of its latest tree of the service, the base of a delta. */
    char *cmd = xasprintf("%s" REMOTE_BIN " remote have %s %s %s", remote_sudo(c), project,
                          service, tid);
    int r = ssh_run(c, cmd, -1, &out, NULL, &eout);
    free(cmd);
    if (r != 0) {
        eout[strcspn(eout, "\n")] = '\0';
        snprintf(err, errlen, "server %s (%s): cannot compare files: %s", ssh_name(c),
                 ssh_where(c), eout);
        goto out;
    }
    if (str_starts_with(out, "tree ")) {
        snprintf(remote_dir, rdlen, "%.*s", (int)strcspn(out + 5, "\n"), out + 5);
        rc = 0;
        goto out;
    }
    char base[17] = "";
    char **bl = NULL, **bsha = NULL;
    size_t nb = 0, nbsha = 0;
    if (str_starts_with(out, "base ") && strlen(out) > 5 + 16 && strchr(out, '\n')) {
        memcpy(base, out + 5, 16);
        base[16] = '\0';
        bl = split_lines(strchr(out, '\n') + 1, &nb);
        bsha = xcalloc(nb + 1, sizeof(*bsha));
        for (size_t i = 0; i < nb; i++) {
            char sha[80];
            if (bl[i][0] == 'f' && sscanf(bl[i], "f %*o %79s", sha) == 1)
                bsha[nbsha++] = xstrdup(sha);
        }
        qsort(bsha, nbsha, sizeof(*bsha), str_cmp);
    }
    /* 2: a pack of the contents the base lacks, each once, then the
     * manifest: whole, or as a delta against the base. */
    /* The pack lives in memory (a memfd): what cannot be written there
     * (out of memory) fails the ship here, before anything is sent. */
    int pk = 0;
    pfd = memfd_create("tako-pack", MFD_CLOEXEC);
    if (pfd < 0 || dprintf(pfd, "TAKO-PACK 1\n") < 0)
        pk = -errno;
    for (size_t i = 0; i < w.n && pk == 0; i++) {
        struct entry *e = &w.e[i];
        if (e->type != 'f')
            continue;
        const char *key = e->sha;
        if (nbsha && bsearch(&key, bsha, nbsha, sizeof(*bsha), str_cmp))
            continue;
        bool dup = false;
        for (size_t j = 0; j < i && !dup; j++)
            dup = w.e[j].type == 'f' && strcmp(w.e[j].sha, e->sha) == 0;
        if (dup)
            continue;
        char ap[4096];
        snprintf(ap, sizeof(ap), "%s/%s", dir, e->path);
        bool wfail = false;
        int pr = dprintf(pfd, "B %s %llu\n", e->sha, e->size) < 0 ? (wfail = true, -errno)
                                                                  : pack_file(pfd, ap, e->size,
                                                                              &wfail);
        if (pr < 0 && wfail) {
            pk = pr;
            break;
        }
        if (pr < 0) {
            if (pr == -EAGAIN)
                snprintf(err, errlen, "%s: changed while being sent", ap);
            else
                snprintf(err, errlen, "%s: %s", ap, strerror(-pr));
            for (size_t k = 0; k < nbsha; k++)
                free(bsha[k]);
            free(bsha);
            free(bl);
            goto out;
        }
        st->sent_files++;
        st->sent_bytes += e->size;
    }
    if (pk < 0) {
        /* nothing more goes into a pack that cannot grow */
    } else if (base[0]) {
        char *delta = NULL;
        size_t dlen = 0;
        FILE *m = open_memstream(&delta, &dlen);
        /* Both sides sorted: one merge walk. */
        size_t i = 0, j = 0;
        while (i < nb || j < w.n) {
            int cmp = i == nb ? 1 : j == w.n ? -1 : strcmp(bl[i], lines[j]);
            if (cmp < 0)
                fprintf(m, "-%s\n", bl[i++]);
            else if (cmp > 0)
                fprintf(m, "+%s\n", lines[j++]);
            else
                i++, j++;
        }
        fclose(m);
        if (dprintf(pfd, "D %s %zu\n", base, dlen) < 0)
            pk = -errno;
        else
            pk = write_all(pfd, delta, dlen);
        free(delta);
    } else {
        if (dprintf(pfd, "M %zu\n", mlen) < 0)
            pk = -errno;
        else
            pk = write_all(pfd, man, mlen);
    }
    for (size_t k = 0; k < nbsha; k++)
        free(bsha[k]);
    free(bsha);
    free(bl);
    if (pk < 0) {
        snprintf(err, errlen, "cannot build the pack of files to send in memory: %s",
                 strerror(-pk));
        goto out;
    }
    lseek(pfd, 0, SEEK_SET);
    free(out);
    free(eout);
    out = eout = NULL;
    cmd = xasprintf("%s" REMOTE_BIN " remote receive %s %s %s", remote_sudo(c), project, service,
                    tid);
    r = ssh_run(c, cmd, pfd, &out, NULL, &eout);
    free(cmd);
    if (r != 0 || !str_starts_with(out, "tree ")) {
        eout[strcspn(eout, "\n")] = '\0';
        snprintf(err, errlen, "server %s (%s): cannot store the files: %s", ssh_name(c),
                 ssh_where(c), *eout ? eout : out);
        goto out;
    }
    snprintf(remote_dir, rdlen, "%.*s", (int)strcspn(out + 5, "\n"), out + 5);
    rc = 0;
out:
    if (pfd >= 0)
        close(pfd);
    free(out);
    free(eout);
    free(man);
    for (size_t i = 0; lines && i < w.n; i++)
        free(lines[i]);
    free(lines);
    for (size_t i = 0; i < w.n; i++) {
        free(w.e[i].path);
        free(w.e[i].link);
    }
    free(w.e);
    ign_free(&w.ign);
    return rc;
}
