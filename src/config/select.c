/* select.c — choosing an environment (name, prefix or server name), lookups,
 * and the CLI's common "load -f FILE, select -e ENV" path. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "core/util.h"

const struct cfg_service *cfg_env_service(const struct cfg_env *e, const char *name)
{
    for (size_t i = 0; i < e->services_len; i++)
        if (strcmp(e->services[i].name, name) == 0)
            return &e->services[i];
    return NULL;
}

const struct cfg_server *cfg_find_server(const struct cfg_file *f, const char *name)
{
    for (size_t i = 0; i < f->servers_len; i++)
        if (strcmp(f->servers[i].name, name) == 0)
            return &f->servers[i];
    return NULL;
}

bool cfg_server_is_local(const struct cfg_server *s)
{
    const char *h = s->host ? s->host : "";
    return !*h || strcmp(h, "localhost") == 0 || str_starts_with(h, "127.") ||
           strcmp(h, "::1") == 0 || strcmp(h, "[::1]") == 0;
}

static char *env_list(const struct cfg_file *f)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    if (!m)
        abort();
    for (size_t i = 0; i < f->envs_len; i++)
        fprintf(m, "%s%s", i ? ", " : "", f->envs[i].name);
    fclose(m);
    return buf;
}

static bool env_uses_server(const struct cfg_env *e, const char *server)
{
    for (size_t i = 0; i < e->servers_len; i++)
        if (strcmp(e->servers[i], server) == 0)
            return true;
    return false;
}

const struct cfg_env *cfg_select_env(const struct cfg_file *f, const char *want,
                                     struct cfg_diag *diag)
{
    const struct cfg_env *hit = NULL;
    size_t hits = 0;
    char *list = env_list(f);
    if (!want || !*want) {
        if (f->envs_len == 1) {
            hit = &f->envs[0];
            goto out;
        }
        cfg_diag_add(diag, CFG_ERROR, f->path, 0, 0, NULL,
                     "%zu environments: name one with -e ENV (%s)", f->envs_len, list);
        goto out;
    }
    for (size_t i = 0; i < f->envs_len; i++)
        if (strcmp(f->envs[i].name, want) == 0) {
            hit = &f->envs[i];
            goto out;
        }
    /* A unique prefix: "prod" → "production". */
    for (size_t i = 0; i < f->envs_len; i++)
        if (str_starts_with(f->envs[i].name, want)) {
            hit = &f->envs[i];
            hits++;
        }
    if (hits == 1)
        goto out;
    size_t prefix_hits = hits;
    /* A server used by exactly one environment: `tako deploy prod` where prod
     * is the server of environment production. */
    hit = NULL;
    hits = 0;
    for (size_t i = 0; i < f->envs_len; i++)
        if (env_uses_server(&f->envs[i], want)) {
            hit = &f->envs[i];
            hits++;
        }
    if (hits == 1)
        goto out;
    hit = NULL;
    if (prefix_hits > 1)
        cfg_diag_add(diag, CFG_ERROR, f->path, 0, 0, NULL,
                     "environment \"%s\" is ambiguous (environments: %s)", want, list);
    else if (hits > 1)
        cfg_diag_add(diag, CFG_ERROR, f->path, 0, 0, NULL,
                     "server \"%s\" is used by %zu environments: name one (%s)", want, hits, list);
    else
        cfg_diag_add(diag, CFG_ERROR, f->path, 0, 0, NULL,
                     "unknown environment \"%s\" (environments: %s)", want, list);
out:
    free(list);
    return hit;
}

int cfg_open(const char *file, const char *env, FILE *err, struct cfg_file **f_out,
             const struct cfg_env **env_out)
{
    int ret = -EINVAL;
    struct cfg_diag *d = cfg_diag_new();
    struct cfg_file *f = cfg_load_file(file ? file : "tako.yaml", d);
    const struct cfg_env *e = NULL;
    if (!f)
        goto out;
    if (env || f->envs_len == 1) {
        e = cfg_select_env(f, env, d);
        if (!e)
            goto out;
    }
    *f_out = f;
    f = NULL;
    if (env_out)
        *env_out = e;
    ret = 0;
out:
    cfg_diag_print(d, err);
    if (ret < 0 && cfg_diag_errors(d) > 1)
        fprintf(err, "%zu errors\n", cfg_diag_errors(d));
    cfg_diag_free(d);
    cfg_free(f);
    return ret;
}
