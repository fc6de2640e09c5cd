/* expand.c — ${VAR} / ${VAR:-default} expansion, .env parsing, and the small
 * file and path helpers the loader needs. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/internal.h"
#include "core/util.h"

void cfg__kv_set(struct cfg_kv **kv, size_t *len, const char *key, const char *value)
{
    for (size_t i = 0; i < *len; i++) {
        if (strcmp((*kv)[i].key, key) == 0) {
            free((*kv)[i].value);
            (*kv)[i].value = xstrdup(value);
            return;
        }
    }
    *kv = xrealloc(*kv, (*len + 1) * sizeof(**kv));
    (*kv)[*len].key = xstrdup(key);
    (*kv)[*len].value = xstrdup(value);
    (*len)++;
}

void cfg__kv_free(struct cfg_kv *kv, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        free(kv[i].key);
        free(kv[i].value);
    }
    free(kv);
}

bool cfg_env_key_is_secret(const char *key)
{
    static const char *words[] = {"PASS", "SECRET", "TOKEN", "KEY", "CREDENTIAL"};
    for (size_t i = 0; i < ARRAY_LEN(words); i++)
        if (strcasestr(key, words[i]))
            return true;
    return false;
}

int cfg__read_file(const char *path, size_t max, char **data, size_t *len)
{
    int ret = 0;
    char *buf = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd == -1)
        return -errno;
    struct stat st;
    if (fstat(fd, &st) == -1) {
        ret = -errno;
        goto out;
    }
    if (S_ISDIR(st.st_mode)) {
        ret = -EISDIR;
        goto out;
    }
    /* Read up to max+1 bytes whatever st_size says: /proc files and pipes lie. */
    size_t cap = 4096, n = 0;
    buf = xmalloc(cap);
    for (;;) {
        if (n == cap) {
            if (cap > max) {
                ret = -EFBIG;
                goto out;
            }
            cap *= 2;
            buf = xrealloc(buf, cap);
        }
        ssize_t r = read(fd, buf + n, cap - n);
        if (r == -1) {
            if (errno == EINTR)
                continue;
            ret = -errno;
            goto out;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    if (n > max) {
        ret = -EFBIG;
        goto out;
    }
    buf = xrealloc(buf, n + 1);
    buf[n] = '\0';
    *data = buf;
    *len = n;
    buf = NULL;
out:
    free(buf);
    close(fd);
    return ret;
}

char *cfg__path_join(const char *dir, const char *rel)
{
    char *full = rel[0] == '/' ? xstrdup(rel) : xasprintf("%s/%s", dir, rel);
    /* Resolve lexically: the directory may not exist yet (or at all, for a
     * configuration stored with a revision). */
    size_t n = strlen(full);
    char *out = xmalloc(n + 2);
    size_t o = 0;
    const char *p = full;
    while (*p) {
        while (*p == '/')
            p++;
        const char *e = p;
        while (*e && *e != '/')
            e++;
        size_t l = (size_t)(e - p);
        if (l == 0 || (l == 1 && p[0] == '.')) {
            /* skip */
        } else if (l == 2 && p[0] == '.' && p[1] == '.') {
            while (o > 0 && out[o - 1] != '/')
                o--;
            if (o > 0)
                o--;
        } else {
            out[o++] = '/';
            memcpy(out + o, p, l);
            o += l;
        }
        p = e;
    }
    if (o == 0)
        out[o++] = '/';
    out[o] = '\0';
    free(full);
    return out;
}

/* Where inside the scalar the problem is: exact for single-line plain and
 * quoted scalars, the scalar's start otherwise. */
static void place(const yaml_node_t *n, const char *s, size_t off, unsigned *line, unsigned *col)
{
    *line = (unsigned)n->start_mark.line + 1;
    *col = (unsigned)n->start_mark.column + 1;
    if (n->type != YAML_SCALAR_NODE || memchr(s, '\n', off))
        return;
    yaml_scalar_style_t st = n->data.scalar.style;
    if (st == YAML_PLAIN_SCALAR_STYLE)
        *col += (unsigned)off;
    else if (st == YAML_SINGLE_QUOTED_SCALAR_STYLE || st == YAML_DOUBLE_QUOTED_SCALAR_STYLE)
        *col += (unsigned)off + 1;
}

static void load_dotenv(struct cfg__ctx *c)
{
    c->dotenv_loaded = true;
    char *path = cfg__path_join(c->dir, ".env");
    char *data = NULL;
    size_t len = 0;
    if (cfg__read_file(path, CFG_MAX_FILE_BYTES, &data, &len) == 0) {
        c->dotenv_name = path;
        path = NULL;
        cfg__dotenv_parse(c->dotenv_name, data, len, &c->dotenv, &c->dotenv_len, c->diag);
    }
    free(data);
    free(path);
}

static const char *lookup(struct cfg__ctx *c, const char *name)
{
    const char *v = c->getenv_fn(name);
    if (v)
        return v;
    if (!c->dotenv_loaded)
        load_dotenv(c);
    for (size_t i = 0; i < c->dotenv_len; i++)
        if (strcmp(c->dotenv[i].key, name) == 0)
            return c->dotenv[i].value;
    return NULL;
}

static bool valid_var_name(const char *s, size_t n)
{
    if (n == 0 || !(isalpha((unsigned char)s[0]) || s[0] == '_'))
        return false;
    for (size_t i = 1; i < n; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '_'))
            return false;
    return true;
}

char *cfg__expand(struct cfg__ctx *c, const char *s, const yaml_node_t *n, const char *path)
{
    if (!strchr(s, '$'))
        return xstrdup(s);
    size_t cap = strlen(s) + 64, o = 0;
    char *out = xmalloc(cap);
    bool bad = false;
    unsigned line, col;
#define PUT(p, l)                                                                             \
    do {                                                                                      \
        size_t l_ = (l);                                                                      \
        while (o + l_ + 1 > cap) {                                                            \
            cap *= 2;                                                                         \
            out = xrealloc(out, cap);                                                         \
        }                                                                                     \
        memcpy(out + o, (p), l_);                                                             \
        o += l_;                                                                              \
    } while (0)
    for (size_t i = 0; s[i];) {
        if (s[i] != '$') {
            PUT(s + i, 1);
            i++;
            continue;
        }
        if (s[i + 1] == '$') { /* $$ is a literal $ */
            PUT("$", 1);
            i += 2;
            continue;
        }
        if (s[i + 1] != '{') { /* a lone $ (e.g. "$PORT" for the app) stays */
            PUT("$", 1);
            i++;
            continue;
        }
        const char *start = s + i + 2;
        const char *close = strchr(start, '}');
        place(n, s, i, &line, &col);
        if (!close) {
            cfg_diag_add(c->diag, CFG_ERROR, c->name, line, col, path,
                         "unterminated \"${\" (write $$ for a literal $)");
            bad = true;
            break;
        }
        const char *dflt = strstr(start, ":-");
        size_t name_len = dflt && dflt < close ? (size_t)(dflt - start) : (size_t)(close - start);
        if (!(dflt && dflt < close))
            dflt = NULL;
        if (!valid_var_name(start, name_len)) {
            cfg_diag_add(c->diag, CFG_ERROR, c->name, line, col, path,
                         "invalid variable name \"%.*s\" in ${...} (letters, digits and _)",
                         (int)name_len, start);
            bad = true;
        } else {
            char *name = xstrndup(start, name_len);
            const char *v = lookup(c, name);
            if (v && (*v || !dflt))
                PUT(v, strlen(v));
            else if (dflt)
                PUT(dflt + 2, (size_t)(close - dflt - 2));
            else {
                cfg_diag_add(c->diag, CFG_ERROR, c->name, line, col, path,
                             "variable %s is not set (set it in the environment or in .env, "
                             "or give a default: ${%s:-value})",
                             name, name);
                bad = true;
            }
            free(name);
        }
        i = (size_t)(close - s) + 1;
    }
#undef PUT
    out[o] = '\0';
    if (bad) {
        free(out);
        return NULL;
    }
    return out;
}

size_t cfg__dotenv_parse(const char *name, const char *data, size_t len, struct cfg_kv **kv,
                         size_t *kv_len, struct cfg_diag *diag)
{
    size_t errors = 0;
    unsigned lineno = 0;
    const char *p = data, *end = data + len;
    char *val = xmalloc(len + 1);
    while (p < end) {
        lineno++;
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol)
            eol = end;
        const char *q = p;
        while (q < eol && (*q == ' ' || *q == '\t'))
            q++;
        if (q == eol || *q == '#' || (q + 1 == eol && *q == '\r'))
            goto next;
        if ((size_t)(eol - q) > 7 && memcmp(q, "export ", 7) == 0) {
            q += 7;
            while (q < eol && (*q == ' ' || *q == '\t'))
                q++;
        }
        const char *k = q;
        while (q < eol && (isalnum((unsigned char)*q) || *q == '_'))
            q++;
        size_t klen = (size_t)(q - k);
        while (q < eol && (*q == ' ' || *q == '\t'))
            q++;
        if (!valid_var_name(k, klen) || q == eol || *q != '=') {
            cfg_diag_add(diag, CFG_ERROR, name, lineno, (unsigned)(k - p) + 1, NULL,
                         "expected KEY=VALUE (KEY: letters, digits and _)");
            errors++;
            goto next;
        }
        q++;
        while (q < eol && (*q == ' ' || *q == '\t'))
            q++;
        size_t vl = 0;
        if (q < eol && (*q == '"' || *q == '\'')) {
            char quote = *q++;
            bool closed = false;
            unsigned open_line = lineno;
            /* A quoted value may span lines, as in docker compose. */
            const char *r = q;
            for (; r < end; r++) {
                if (*r == quote) {
                    closed = true;
                    break;
                }
                if (*r == '\n')
                    lineno++;
                if (quote == '"' && *r == '\\' && r + 1 < end) {
                    r++;
                    val[vl++] = *r == 'n' ? '\n' : *r == 't' ? '\t' : *r;
                    continue;
                }
                val[vl++] = *r;
            }
            if (!closed) {
                cfg_diag_add(diag, CFG_ERROR, name, open_line, 1, NULL,
                             "unterminated %c-quoted value of %.*s", quote, (int)klen, k);
                errors++;
                break;
            }
            eol = memchr(r, '\n', (size_t)(end - r));
            if (!eol)
                eol = end;
            const char *t = r + 1;
            while (t < eol && (*t == ' ' || *t == '\t' || *t == '\r'))
                t++;
            if (t < eol && *t != '#') {
                cfg_diag_add(diag, CFG_ERROR, name, lineno, (unsigned)(t - p) + 1, NULL,
                             "unexpected text after the quoted value of %.*s", (int)klen, k);
                errors++;
                goto next;
            }
        } else {
            const char *r = q;
            for (; r < eol; r++) {
                /* " #" starts a comment; "a#b" is a value. */
                if (*r == '#' && r > q && (r[-1] == ' ' || r[-1] == '\t'))
                    break;
                val[vl++] = *r;
            }
            while (vl > 0 && (val[vl - 1] == ' ' || val[vl - 1] == '\t' || val[vl - 1] == '\r'))
                vl--;
        }
        val[vl] = '\0';
        if (memchr(val, '\0', vl)) {
            cfg_diag_add(diag, CFG_ERROR, name, lineno, 1, NULL, "NUL byte in value of %.*s",
                         (int)klen, k);
            errors++;
            goto next;
        }
        char *key = xstrndup(k, klen);
        cfg__kv_set(kv, kv_len, key, val);
        free(key);
    next:
        p = eol < end ? eol + 1 : end;
    }
    free(val);
    return errors;
}
