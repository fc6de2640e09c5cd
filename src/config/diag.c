/* diag.c — configuration diagnostics: every error and warning of one load,
 * each with file, line, column and key path, printed in the order found. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "core/util.h"

struct cfg_diag {
    struct cfg_diag_entry *v;
    size_t len, cap;
    size_t errors, warnings;
};

struct cfg_diag *cfg_diag_new(void) { return xcalloc(1, sizeof(struct cfg_diag)); }

void cfg_diag_free(struct cfg_diag *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->len; i++) {
        free(d->v[i].file);
        free(d->v[i].path);
        free(d->v[i].message);
    }
    free(d->v);
    free(d);
}

size_t cfg_diag_errors(const struct cfg_diag *d) { return d->errors; }
size_t cfg_diag_warnings(const struct cfg_diag *d) { return d->warnings; }
size_t cfg_diag_count(const struct cfg_diag *d) { return d->len; }

const struct cfg_diag_entry *cfg_diag_get(const struct cfg_diag *d, size_t i)
{
    return i < d->len ? &d->v[i] : NULL;
}

void cfg_diag_add(struct cfg_diag *d, enum cfg_severity sev, const char *file, unsigned line,
                  unsigned col, const char *path, const char *fmt, ...)
{
    if (d->len == d->cap) {
        d->cap = d->cap ? d->cap * 2 : 8;
        d->v = xrealloc(d->v, d->cap * sizeof(*d->v));
    }
    struct cfg_diag_entry *e = &d->v[d->len++];
    e->severity = sev;
    e->file = file ? xstrdup(file) : NULL;
    e->line = line;
    e->col = col;
    e->path = path && *path ? xstrdup(path) : NULL;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&e->message, fmt, ap) < 0)
        abort();
    va_end(ap);
    if (sev == CFG_ERROR)
        d->errors++;
    else
        d->warnings++;
}

static void print_entry(const struct cfg_diag_entry *e, FILE *f)
{
    if (e->file && e->line)
        fprintf(f, "%s:%u:%u: ", e->file, e->line, e->col);
    else if (e->file)
        fprintf(f, "%s: ", e->file);
    if (e->severity == CFG_WARNING)
        fputs("warning: ", f);
    if (e->path)
        fprintf(f, "%s: ", e->path);
    fprintf(f, "%s\n", e->message);
}

void cfg_diag_print(const struct cfg_diag *d, FILE *f)
{
    for (size_t i = 0; i < d->len; i++)
        print_entry(&d->v[i], f);
}

char *cfg_diag_text(const struct cfg_diag *d)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        abort();
    cfg_diag_print(d, f);
    fclose(f);
    return buf;
}
