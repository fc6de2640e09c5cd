/* internal.h — what the config module's files share and nobody else uses. */
#ifndef TAKO_CONFIG_INTERNAL_H
#define TAKO_CONFIG_INTERNAL_H

#include <yaml.h>

#include "config/config.h"

/* One load in progress. */
struct cfg__ctx {
    const char *name;   /* file name for diagnostics */
    const char *dir;    /* absolute project directory */
    struct cfg_diag *diag;
    const char *(*getenv_fn)(const char *);
    yaml_document_t *doc;
    struct cfg_kv *dotenv; /* .env beside the file, parsed once */
    size_t dotenv_len;
    char *dotenv_name;
    bool dotenv_loaded;
    size_t budget; /* scalar visits left: bounds alias fan-out */
    bool is_root;
    const char *env_runtime;            /* the environment's runtime: while its services load */
    const yaml_node_t *env_runtime_node;
    const char *env_runtime_path;
    const struct cfg_file *file;  /* while an environment's services load: for placement */
    const struct cfg_env *env;
};

/* Expand ${VAR}, ${VAR:-default} and $$ in S (the value of node N at key
 * PATH). Returns a heap string, or NULL after reporting every problem. */
char *cfg__expand(struct cfg__ctx *c, const char *s, const yaml_node_t *n, const char *path);

/* Parse dotenv text (KEY=VALUE lines, # comments, optional `export`, '…'
 * and "…" values). Entries are appended to *kv (a later key replaces an
 * earlier one). Problems go to DIAG under NAME. Returns the error count. */
size_t cfg__dotenv_parse(const char *name, const char *data, size_t len, struct cfg_kv **kv,
                         size_t *kv_len, struct cfg_diag *diag);
/* Set KEY in an ordered kv array: replace in place, else append. */
void cfg__kv_set(struct cfg_kv **kv, size_t *len, const char *key, const char *value);
void cfg__kv_free(struct cfg_kv *kv, size_t len);

/* Read a whole regular file of at most MAX bytes. 0 or -errno (-EFBIG). */
int cfg__read_file(const char *path, size_t max, char **data, size_t *len);
/* DIR + "/" + REL with "." and ".." resolved lexically; REL absolute is kept.
 * Returns a heap string. */
char *cfg__path_join(const char *dir, const char *rel);

void cfg__service_clear(struct cfg_service *s);
void cfg__service_defaults(struct cfg_service *s, const char *dir);

#endif
