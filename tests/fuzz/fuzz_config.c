/* fuzz_config.c — libFuzzer target for the tako.yaml loader: any bytes must
 * give a configuration or diagnostics, never a crash or a leak; a loaded
 * service must survive its JSON round trip unchanged. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "config/internal.h"

/* A fixed environment, so runs do not depend on the real one. */
static const char *fake_getenv(const char *name)
{
    if (strcmp(name, "SERVER_HOST") == 0)
        return "203.0.113.7";
    if (strcmp(name, "PORT") == 0)
        return "3000";
    if (strcmp(name, "EMPTY") == 0)
        return "";
    return NULL;
}

static void round_trip(const struct cfg_service *s)
{
    json_t *a = cfg_service_to_json(s);
    char err[256];
    struct cfg_service *back = cfg_service_from_json(a, err, sizeof(err));
    if (!back)
        abort(); /* a loaded service must always read back */
    json_t *b = cfg_service_to_json(back);
    if (!json_equal(a, b))
        abort();
    json_decref(a);
    json_decref(b);
    cfg_service_free(back);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct cfg_diag *d = cfg_diag_new();
    /* The base directory does not exist: .env and envFile are never read. */
    struct cfg_file *f = cfg_load_buffer("fuzz.yaml", (const char *)data, size,
                                         "/nonexistent/tako-fuzz", fake_getenv, d);
    char *text = cfg_diag_text(d);
    free(text);
    if (f) {
        if (cfg_diag_errors(d) != 0)
            abort(); /* success means no errors */
        static const char *wants[] = {NULL, "", "p", "prod", "production", "staging"};
        for (size_t i = 0; i < sizeof(wants) / sizeof(wants[0]); i++)
            cfg_select_env(f, wants[i], d);
        for (size_t i = 0; i < f->envs_len; i++)
            for (size_t j = 0; j < f->envs[i].services_len; j++)
                round_trip(&f->envs[i].services[j]);
        json_t *j = cfg_file_to_json(f);
        json_decref(j);
    } else if (cfg_diag_errors(d) == 0) {
        abort(); /* failure must say why */
    }
    cfg_free(f);
    cfg_diag_free(d);

    /* The same bytes as a command line and as a .env file. */
    char *s = malloc(size + 1);
    memcpy(s, data, size);
    s[size] = '\0';
    char **argv = NULL, err[256];
    if (cfg_split_command(s, &argv, err, sizeof(err)) == 0) {
        if (!argv[0])
            abort();
        cfg_argv_free(argv);
    }
    free(s);
    struct cfg_kv *kv = NULL;
    size_t n = 0;
    d = cfg_diag_new();
    cfg__dotenv_parse(".env", (const char *)data, size, &kv, &n, d);
    cfg__kv_free(kv, n);
    cfg_diag_free(d);
    return 0;
}
