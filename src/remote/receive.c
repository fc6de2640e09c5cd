/* receive.c — the server's half of shipping and locking, run there as
 * `tako remote have|receive|lock` through ssh (see remote.h, ship.c).
 *
 * Layout under the state directory (mode 0700):
 *   blobs/XX/SHA256            file contents, each once
 *   apps/PROJECT/SERVICE/TREE/ a revision's files, what replicas run from
 *   apps/PROJECT/SERVICE/TREE.manifest
 *   locks/PROJECT.ENV.lock     the deploy lock and who holds it */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "core/sha256.h"
#include "core/util.h"
#include "daemon/home.h"
#include "remote/remote.h"

static bool safe_name(const char *s)
{
    if (!s || !*s || strlen(s) > 128 || s[0] == '.')
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '-' || *s == '_' || *s == '.'))
            return false;
    return true;
}

static bool safe_hex(const char *s, size_t len)
{
    if (strlen(s) != len)
        return false;
    for (; *s; s++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
            return false;
    return true;
}

/* A relative path without "..", absolute parts or empty components. */
static bool safe_rel(const char *p)
{
    if (!*p || *p == '/')
        return false;
    for (const char *s = p; *s;) {
        const char *e = strchr(s, '/');
        size_t l = e ? (size_t)(e - s) : strlen(s);
        if (l == 0 || (l == 1 && s[0] == '.') || (l == 2 && s[0] == '.' && s[1] == '.'))
            return false;
        s += l + (e ? 1 : 0);
    }
    return true;
}

static int mkdirs(const char *path, mode_t mode)
{
    char p[4096];
    snprintf(p, sizeof(p), "%s", path);
    for (char *s = p + 1; *s; s++)
        if (*s == '/') {
            *s = '\0';
            if (mkdir(p, mode) == -1 && errno != EEXIST)
                return -errno;
            *s = '/';
        }
    if (mkdir(p, mode) == -1 && errno != EEXIST)
        return -errno;
    return 0;
}

static void blob_path(const char *home, const char *sha, char *out, size_t len)
{
    snprintf(out, len, "%s/blobs/%.2s/%s", home, sha, sha);
}

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "tako remote: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

/* A write of SIZE bytes (0: a directory, a link) that failed: the path and
 * the cause; a full disk says so in words, with the file's size and what is
 * free, so the user knows how much to clean up. */
static int fail_io_sized(const char *home, const char *path, int err, unsigned long long size)
{
    if (err == ENOSPC || err == EDQUOT) {
        struct statvfs vf;
        unsigned long long free_kb = 0;
        if (statvfs(home, &vf) == 0)
            free_kb = (unsigned long long)vf.f_bavail * vf.f_frsize / 1024;
        char what[64] = "";
        if (size)
            snprintf(what, sizeof(what), "a file of %llu KB; ", (size + 1023) / 1024);
        return fail("no space left on device: writing %s (%s%s has %llu KB free); nothing was "
                    "changed: free some space on the server and deploy again",
                    path, what, home, free_kb);
    }
    return fail("%s: %s", path, strerror(err));
}

static int fail_io(const char *home, const char *path, int err)
{
    return fail_io_sized(home, path, err, 0);
}


static char *read_file(const char *p, size_t *len)
{
    FILE *f = fopen(p, "re");
    if (!f)
        return NULL;
    char *buf = NULL;
    size_t cap = 0, n = 0;
    for (;;) {
        if (n + 65536 > cap) {
            cap = cap ? cap * 2 : 65536 * 2;
            buf = xrealloc(buf, cap);
        }
        size_t k = fread(buf + n, 1, cap - n - 1, f);
        n += k;
        if (k == 0)
            break;
    }
    fclose(f);
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* The most recently used tree of a service: its id into out[17]. */
static bool latest_tree(const char *sdir, char out[17])
{
    DIR *d = opendir(sdir);
    if (!d)
        return false;
    time_t best = 0;
    bool found = false;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (strlen(de->d_name) != 16 + 9 || !str_ends_with(de->d_name, ".manifest"))
            continue;
        char p[4400];
        snprintf(p, sizeof(p), "%s/%s", sdir, de->d_name);
        struct stat st;
        if (stat(p, &st) == 0 && (!found || st.st_mtime >= best)) {
            best = st.st_mtime;
            snprintf(out, 17, "%.16s", de->d_name);
            found = true;
        }
    }
    closedir(d);
    return found;
}

/* have PROJECT SERVICE TREE: "tree PATH" when that tree exists; else
 * "base ID" and the manifest of the service's latest tree (what a delta
 * may build on); else "none". */
static int r_have(const char *home, char **argv)
{
    if (!safe_name(argv[0]) || !safe_name(argv[1]) || !safe_hex(argv[2], 16))
        return fail("have: bad arguments %s %s", argv[0], argv[1]);
    char sdir[4096], tree[4200];
    snprintf(sdir, sizeof(sdir), "%s/apps/%s/%s", home, argv[0], argv[1]);
    snprintf(tree, sizeof(tree), "%s/%s", sdir, argv[2]);
    struct stat st;
    if (stat(tree, &st) == 0 && S_ISDIR(st.st_mode)) {
        char man[4300];
        snprintf(man, sizeof(man), "%s.manifest", tree);
        utimensat(AT_FDCWD, man, NULL, 0); /* most recently used: kept longest */
        printf("tree %s\n", tree);
        return 0;
    }
    char base[17];
    if (latest_tree(sdir, base)) {
        char mp[4400];
        snprintf(mp, sizeof(mp), "%s/%s.manifest", sdir, base);
        size_t len;
        char *m = read_file(mp, &len);
        if (m) {
            printf("base %s\n", base);
            fwrite(m, 1, len, stdout);
            free(m);
            return 0;
        }
    }
    printf("none\n");
    return 0;
}

static int line_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Base manifest + delta ("-line" removed, "+line" added) → sorted manifest. */
static char *apply_delta(const char *sdir, const char *base, char *delta, size_t *mlen)
{
    if (!safe_hex(base, 16))
        return NULL;
    char mp[4400];
    snprintf(mp, sizeof(mp), "%s/%s.manifest", sdir, base);
    size_t blen;
    char *bm = read_file(mp, &blen);
    if (!bm)
        return NULL;
    char **l = NULL;
    size_t n = 0;
    for (char *p = bm; *p;) {
        char *nl = strchr(p, '\n');
        if (nl)
            *nl = '\0';
        if (*p) {
            l = xrealloc(l, (n + 1) * sizeof(*l));
            l[n++] = p;
        }
        if (!nl)
            break;
        p = nl + 1;
    }
    qsort(l, n, sizeof(*l), line_cmp);
    char **adds = NULL;
    size_t nadds = 0;
    for (char *p = delta; *p;) {
        char *nl = strchr(p, '\n');
        if (nl)
            *nl = '\0';
        if (*p == '-') {
            const char *key = p + 1;
            char **hit = n ? bsearch(&key, l, n, sizeof(*l), line_cmp) : NULL;
            if (hit) {
                memmove(hit, hit + 1, (size_t)(l + n - hit - 1) * sizeof(*l));
                n--;
            }
        } else if (*p == '+') {
            adds = xrealloc(adds, (nadds + 1) * sizeof(*adds));
            adds[nadds++] = p + 1;
        }
        if (!nl)
            break;
        p = nl + 1;
    }
    /* Removals used the sorted base; additions join it and one sort follows. */
    l = xrealloc(l, (n + nadds + 1) * sizeof(*l));
    memcpy(l + n, adds, nadds * sizeof(*l));
    n += nadds;
    free(adds);
    qsort(l, n, sizeof(*l), line_cmp);
    char *out = NULL;
    FILE *m = open_memstream(&out, mlen);
    for (size_t i = 0; i < n; i++)
        fprintf(m, "%s\n", l[i]);
    fclose(m);
    free(l);
    free(bm);
    return out;
}

static int copy_blob(const char *src, const char *dst, mode_t mode)
{
    int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return -errno;
    int out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (out < 0) {
        int e = errno;
        close(in);
        return -e;
    }
    char buf[65536];
    ssize_t k;
    int rc = 0;
    while ((k = read(in, buf, sizeof(buf))) > 0)
        if ((rc = write_all(out, buf, (size_t)k)) < 0)
            break;
    if (k < 0)
        rc = -errno;
    fchmod(out, mode); /* exact mode, whatever the umask */
    close(in);
    if (close(out) == -1 && rc == 0)
        rc = -errno;
    return rc;
}

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(p);
    return 0;
}

static void rm_rf(const char *p)
{
    nftw(p, rm_cb, 32, FTW_DEPTH | FTW_PHYS);
}

struct tree_age {
    char name[64];
    time_t mtime;
};

static int age_cmp(const void *a, const void *b)
{
    const struct tree_age *x = a, *y = b;
    return x->mtime < y->mtime ? 1 : x->mtime > y->mtime ? -1 : strcmp(x->name, y->name);
}

/* Keep the REMOTE_KEEP_TREES most recently used trees of the service. */
static void prune_trees(const char *sdir)
{
    DIR *d = opendir(sdir);
    if (!d)
        return;
    struct tree_age *t = NULL;
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t l = strlen(de->d_name);
        if (l != 16 + 9 || !str_ends_with(de->d_name, ".manifest"))
            continue;
        char p[4200];
        snprintf(p, sizeof(p), "%s/%s", sdir, de->d_name);
        struct stat st;
        if (stat(p, &st) != 0)
            continue;
        t = xrealloc(t, (n + 1) * sizeof(*t));
        snprintf(t[n].name, sizeof(t[n].name), "%.16s", de->d_name);
        t[n].mtime = st.st_mtime;
        n++;
    }
    closedir(d);
    qsort(t, n, sizeof(*t), age_cmp);
    for (size_t i = REMOTE_KEEP_TREES; i < n; i++) {
        char p[4200];
        snprintf(p, sizeof(p), "%s/%s", sdir, t[i].name);
        rm_rf(p);
        snprintf(p, sizeof(p), "%s/%s.manifest", sdir, t[i].name);
        unlink(p);
    }
    free(t);
}

/* Every content id a kept manifest names, one a line (malloc'd). */
static char *referenced_blobs(const char *home)
{
    char *list = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&list, &len);
    char apps[4200];
    snprintf(apps, sizeof(apps), "%s/apps", home);
    DIR *pd = opendir(apps);
    struct dirent *p, *s, *f;
    while (pd && (p = readdir(pd))) {
        if (p->d_name[0] == '.')
            continue;
        char pp[4500];
        snprintf(pp, sizeof(pp), "%s/%s", apps, p->d_name);
        DIR *sd = opendir(pp);
        while (sd && (s = readdir(sd))) {
            if (s->d_name[0] == '.')
                continue;
            char sp[4800];
            snprintf(sp, sizeof(sp), "%s/%s", pp, s->d_name);
            DIR *fd = opendir(sp);
            while (fd && (f = readdir(fd))) {
                if (!str_ends_with(f->d_name, ".manifest"))
                    continue;
                char mp[5200];
                snprintf(mp, sizeof(mp), "%s/%s", sp, f->d_name);
                FILE *mf = fopen(mp, "re");
                char line[8192];
                while (mf && fgets(line, sizeof(line), mf)) {
                    char type, sha[80];
                    if (sscanf(line, "%c %*o %79s", &type, sha) == 2 && type == 'f')
                        fprintf(m, "%s\n", sha);
                }
                if (mf)
                    fclose(mf);
            }
            if (fd)
                closedir(fd);
        }
        if (sd)
            closedir(sd);
    }
    if (pd)
        closedir(pd);
    fclose(m);
    return list;
}

/* Contents no kept manifest names are collected. */
static void gc_blobs(const char *home)
{
    char *list = referenced_blobs(home);
    char blobs[4200];
    snprintf(blobs, sizeof(blobs), "%s/blobs", home);
    DIR *bd = opendir(blobs);
    struct dirent *b;
    while (bd && (b = readdir(bd))) {
        if (b->d_name[0] == '.')
            continue;
        char bp[4500];
        snprintf(bp, sizeof(bp), "%s/%s", blobs, b->d_name);
        DIR *xd = opendir(bp);
        struct dirent *x;
        while (xd && (x = readdir(xd))) {
            if (!safe_hex(x->d_name, 64))
                continue;
            char needle[80];
            snprintf(needle, sizeof(needle), "%s\n", x->d_name);
            if (!list || !strstr(list, needle)) {
                char fp[4800];
                snprintf(fp, sizeof(fp), "%s/%s", bp, x->d_name);
                unlink(fp);
            }
        }
        if (xd)
            closedir(xd);
    }
    if (bd)
        closedir(bd);
    free(list);
}

/* Store one blob of SIZE bytes from stdin, verifying its hash. The file
 * being written (or the one that failed) goes to where[]; a failed blob
 * leaves nothing behind. *fresh: the blob was not there before. */
static int store_blob(const char *home, const char *sha, unsigned long long size, char *where,
                      size_t wlen, bool *fresh)
{
    char bp[4096], dir[4096], tmp[4200];
    blob_path(home, sha, bp, sizeof(bp));
    snprintf(dir, sizeof(dir), "%s/blobs/%.2s", home, sha);
    snprintf(where, wlen, "%s", dir);
    int r = mkdirs(dir, 0700);
    if (r < 0)
        return r;
    *fresh = access(bp, F_OK) != 0;
    snprintf(tmp, sizeof(tmp), "%s/.tmp-%d", dir, (int)getpid());
    snprintf(where, wlen, "%s", tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    struct sha256 h;
    sha256_init(&h);
    char buf[65536];
    unsigned long long left = size;
    while (left) {
        size_t want = left < sizeof(buf) ? (size_t)left : sizeof(buf);
        size_t k = fread(buf, 1, want, stdin);
        if (k == 0)
            break;
        sha256_update(&h, buf, k);
        if ((r = write_all(fd, buf, k)) < 0) {
            close(fd);
            unlink(tmp);
            return r;
        }
        left -= k;
    }
    /* tmpfs and some file systems report a full disk only at close. */
    if (close(fd) == -1) {
        r = -errno;
        unlink(tmp);
        return r;
    }
    char hex[65];
    sha256_hex(&h, hex);
    if (left || strcmp(hex, sha) != 0) {
        unlink(tmp);
        return -EBADMSG;
    }
    snprintf(where, wlen, "%s", bp);
    if (rename(tmp, bp) == -1) {
        r = -errno;
        unlink(tmp);
        return r;
    }
    return 0;
}

/* Blobs a failed receive stored: removed again, so a deploy that did not
 * fit leaves the disk as it found it. */
struct fresh_blobs {
    char (*sha)[65];
    size_t n;
};

static void fresh_add(struct fresh_blobs *f, const char *sha)
{
    f->sha = xrealloc(f->sha, (f->n + 1) * sizeof(*f->sha));
    snprintf(f->sha[f->n++], 65, "%s", sha);
}

static void fresh_drop(const char *home, struct fresh_blobs *f, bool remove_them)
{
    /* One another deploy's tree came to name meanwhile stays. */
    char *list = remove_them && f->n ? referenced_blobs(home) : NULL;
    for (size_t i = 0; remove_them && i < f->n; i++) {
        char bp[4096], needle[80];
        snprintf(needle, sizeof(needle), "%s\n", f->sha[i]);
        if (list && strstr(list, needle))
            continue;
        blob_path(home, f->sha[i], bp, sizeof(bp));
        unlink(bp);
    }
    free(list);
    free(f->sha);
    f->sha = NULL;
    f->n = 0;
}

/* Write the manifest next to the temporary tree; -errno. */
static int write_manifest(const char *path, const char *man, size_t mlen)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    int r = write_all(fd, man, mlen);
    if (close(fd) == -1 && r == 0)
        r = -errno;
    return r;
}

/* Build tree TREE from manifest MAN in the temporary directory TMP and
 * rename both into place. Returns the exit status; TMP is left for the
 * caller to remove. */
static int build_tree(const char *home, char *man, size_t mlen, const char *tmp,
                      const char *tree)
{
    if (mkdir(tmp, 0755) == -1)
        return fail_io(home, tmp, errno);
    for (char *l = man; *l;) {
        char *nl = strchr(l, '\n');
        if (nl)
            *nl = '\0';
        char type;
        unsigned mode;
        char sha[4200];
        unsigned long long size;
        int off = 0;
        int rc = 0;
        if (sscanf(l, "%c %o %4199s %llu %n", &type, &mode, sha, &size, &off) < 4 || !off ||
            !safe_rel(l + off)) {
            rc = fail("receive: bad manifest line: %s", l);
            if (nl)
                *nl = '\n';
            return rc;
        }
        char dst[8600];
        snprintf(dst, sizeof(dst), "%s/%s", tmp, l + off);
        if (type == 'd') {
            if (mkdir(dst, 0700) == -1 && errno != EEXIST)
                rc = fail_io(home, dst, errno);
            else
                chmod(dst, mode & 07777);
        } else if (type == 'f') {
            char bp[4096];
            if (!safe_hex(sha, 64))
                rc = fail("receive: bad content id %s", sha);
            blob_path(home, sha, bp, sizeof(bp));
            int r = rc ? 0 : copy_blob(bp, dst, mode & 07777);
            if (r < 0)
                rc = fail_io_sized(home, dst, -r, size);
        } else if (type == 'l') {
            char target[2100];
            size_t tl = strlen(sha) / 2;
            if (tl >= sizeof(target))
                tl = sizeof(target) - 1;
            for (size_t i = 0; i < tl; i++) {
                unsigned v = 0;
                sscanf(sha + 2 * i, "%2x", &v);
                target[i] = (char)v;
            }
            target[tl] = '\0';
            if (symlink(target, dst) == -1)
                rc = fail_io(home, dst, errno);
        }
        if (nl)
            *nl = '\n'; /* man is written out whole below */
        if (rc)
            return rc;
        l = nl ? nl + 1 : l + strlen(l);
    }
    char mp[4400], mtmp[4500];
    snprintf(mp, sizeof(mp), "%s.manifest", tree);
    snprintf(mtmp, sizeof(mtmp), "%s.tmp", tmp);
    int r = write_manifest(mtmp, man, mlen);
    if (r < 0) {
        unlink(mtmp);
        return fail_io(home, mtmp, -r);
    }
    /* The tree first, its manifest last: a manifest always names a whole tree. */
    if (rename(tmp, tree) == -1 && errno != EEXIST && errno != ENOTEMPTY) {
        int e = errno;
        unlink(mtmp);
        return fail_io(home, tree, e);
    }
    if (rename(mtmp, mp) == -1) {
        int e = errno;
        unlink(mtmp);
        return fail_io(home, mp, e);
    }
    return 0;
}

/* Read the pack's blobs (stored, each noted in fresh when new) up to its
 * manifest, which goes to *man. Returns the exit status. */
static int read_pack(const char *home, char **argv, struct fresh_blobs *fresh, char **man,
                     size_t *mlen)
{
    char line[8192];
    if (!fgets(line, sizeof(line), stdin) || strcmp(line, "TAKO-PACK 1\n") != 0)
        return fail("receive: not a tako pack");
    while (fgets(line, sizeof(line), stdin)) {
        char sha[80];
        unsigned long long size;
        if (sscanf(line, "B %79s %llu", sha, &size) == 2) {
            if (!safe_hex(sha, 64))
                return fail("receive: bad blob name %s", sha);
            char where[4300];
            bool is_new = false;
            int r = store_blob(home, sha, size, where, sizeof(where), &is_new);
            if (r == -EBADMSG)
                return fail("receive: content %s was cut short or does not match its hash", sha);
            if (r < 0)
                return fail_io_sized(home, where, -r, size);
            if (is_new)
                fresh_add(fresh, sha);
        } else if (sscanf(line, "D %79s %zu", sha, mlen) == 2) {
            char *delta = xmalloc(*mlen + 1);
            if (fread(delta, 1, *mlen, stdin) != *mlen) {
                free(delta);
                return fail("receive: delta cut short");
            }
            delta[*mlen] = '\0';
            char sd[4096];
            snprintf(sd, sizeof(sd), "%s/apps/%s/%s", home, argv[0], argv[1]);
            *man = apply_delta(sd, sha, delta, mlen);
            free(delta);
            if (!*man)
                return fail("receive: base tree %s is gone; deploy again", sha);
            return 0;
        } else if (sscanf(line, "M %zu", mlen) == 1) {
            *man = xmalloc(*mlen + 1);
            if (fread(*man, 1, *mlen, stdin) != *mlen)
                return fail("receive: manifest cut short");
            (*man)[*mlen] = '\0';
            return 0;
        } else {
            return fail("receive: unexpected line in the pack: %s", line);
        }
    }
    return fail("receive: no manifest");
}

/* receive PROJECT SERVICE TREE < pack: store the blobs, build the tree from
 * the manifest in a temporary directory, rename it into place. A receive
 * that fails (a full disk, a cut connection) removes what it wrote: the
 * temporary tree and the contents it stored that no tree names. */
static int r_receive(const char *home, char **argv)
{
    if (!safe_name(argv[0]) || !safe_name(argv[1]) || !safe_hex(argv[2], 16))
        return fail("receive: bad arguments %s %s", argv[0], argv[1]);
    struct fresh_blobs fresh = {0};
    char *man = NULL;
    size_t mlen = 0;
    char sdir[4096], tmp[4300] = "", tree[4300];
    snprintf(sdir, sizeof(sdir), "%s/apps/%s/%s", home, argv[0], argv[1]);
    snprintf(tree, sizeof(tree), "%s/%s", sdir, argv[2]);
    int rc = read_pack(home, argv, &fresh, &man, &mlen);
    if (rc)
        goto out;
    struct sha256 h;
    sha256_init(&h);
    sha256_update(&h, man, mlen);
    char tid[65];
    sha256_hex(&h, tid);
    if (strncmp(tid, argv[2], 16) != 0) {
        rc = fail("receive: the manifest does not match tree %s", argv[2]);
        goto out;
    }
    int r = mkdirs(sdir, 0700);
    if (r < 0) {
        rc = fail_io(home, sdir, -r);
        goto out;
    }
    snprintf(tmp, sizeof(tmp), "%s/.tmp-%s-%d", sdir, argv[2], (int)getpid());
    rm_rf(tmp);
    rc = build_tree(home, man, mlen, tmp, tree);
    rm_rf(tmp);
out:
    free(man);
    fresh_drop(home, &fresh, rc != 0);
    if (rc)
        return rc;
    prune_trees(sdir);
    gc_blobs(home);
    printf("tree %s\n", tree);
    return 0;
}

/* lock PROJECT ENV WAIT_MS HOLDER: take the environment's deploy lock,
 * waiting up to WAIT_MS; print "locked" and hold it until stdin ends (the
 * deploying CLI went away), or print "held BY" and exit 4. */
static int r_lock(const char *home, char **argv)
{
    if (!safe_name(argv[0]) || !safe_name(argv[1]))
        return fail("lock: bad arguments %s %s", argv[0], argv[1]);
    long long wait_ms = atoll(argv[2]);
    char dir[4096], p[4400];
    snprintf(dir, sizeof(dir), "%s/locks", home);
    mkdirs(dir, 0700);
    snprintf(p, sizeof(p), "%s/%s.%s.lock", dir, argv[0], argv[1]);
    int fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return fail("lock: %s: %s", p, strerror(errno));
    uint64_t start = time_wall_ms();
    while (flock(fd, LOCK_EX | LOCK_NB) == -1) {
        if ((long long)(time_wall_ms() - start) >= wait_ms) {
            char by[512] = "";
            ssize_t k = pread(fd, by, sizeof(by) - 1, 0);
            by[k > 0 ? k : 0] = '\0';
            by[strcspn(by, "\n")] = '\0';
            printf("held %s\n", *by ? by : "(unknown)");
            return 4;
        }
        /* Give up early when the CLI that waits went away. */
        struct pollfd pf = {.fd = 0, .events = POLLIN};
        if (poll(&pf, 1, 200) > 0) {
            char c;
            if (read(0, &c, 1) <= 0)
                return 1;
        }
    }
    char ts[32];
    time_iso8601(ts);
    if (ftruncate(fd, 0) == 0)
        dprintf(fd, "%s since %s\n", argv[3], ts);
    printf("locked\n");
    fflush(stdout);
    char buf[256];
    while (read(0, buf, sizeof(buf)) > 0)
        ;
    int t = ftruncate(fd, 0); /* released: nobody holds it now */
    (void)t;
    close(fd);
    return 0;
}

int remote_main(int argc, char **argv)
{
    const char *home = tako_home();
    if (!home) {
        fprintf(stderr, "tako remote: no state directory: %s\n", strerror(errno));
        return 1;
    }
    umask(077);
    if (argc == 5 && strcmp(argv[1], "have") == 0)
        return r_have(home, argv + 2);
    if (argc == 5 && strcmp(argv[1], "receive") == 0)
        return r_receive(home, argv + 2);
    if (argc == 6 && strcmp(argv[1], "lock") == 0)
        return r_lock(home, argv + 2);
    if (argc == 2 && strcmp(argv[1], "docker") == 0)
        return remote_docker_check();
    fprintf(stderr, "tako remote: internal command; usage: have|receive P S TREE, "
                    "lock P ENV WAIT_MS HOLDER, docker\n");
    return 2;
}
