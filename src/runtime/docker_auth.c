/* docker_auth.c — registry credentials for pulls: the X-Registry-Auth
 * header built from the Docker client's config.json (`docker login`). */
#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "core/util.h"
#include "runtime/docker_api.h"

/* Standard base64 → bytes (NUL-terminated). NULL when it is not base64. */
static char *b64_decode(const char *in)
{
    size_t n = strlen(in);
    if (n == 0 || n % 4 != 0)
        return NULL;
    unsigned char *out = xmalloc(n / 4 * 3 + 1);
    int k = EVP_DecodeBlock(out, (const unsigned char *)in, (int)n);
    if (k < 0) {
        free(out);
        return NULL;
    }
    /* EVP_DecodeBlock counts the '=' padding as zero bytes */
    if (n >= 1 && in[n - 1] == '=')
        k--;
    if (n >= 2 && in[n - 2] == '=')
        k--;
    out[k] = '\0';
    return (char *)out;
}

/* bytes → base64url (the engine decodes the header with URL-safe base64). */
static char *b64url_encode(const char *in)
{
    size_t n = strlen(in);
    char *out = xmalloc((n + 2) / 3 * 4 + 1);
    EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)in, (int)n);
    for (char *p = out; *p; p++)
        *p = *p == '+' ? '-' : *p == '/' ? '_' : *p;
    return out;
}

int dk_auth_header(const char *user, const char *password, const char *identity_token,
                   const char *server, char **out)
{
    json_t *o = json_object();
    if (user)
        json_object_set_new(o, "username", json_string(user));
    if (password)
        json_object_set_new(o, "password", json_string(password));
    if (identity_token)
        json_object_set_new(o, "identitytoken", json_string(identity_token));
    json_object_set_new(o, "serveraddress", json_string(server));
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!text)
        return -ENOMEM;
    *out = b64url_encode(text);
    free(text);
    return 0;
}

/* The auths entry for host: keyed by the host, or by a URL naming it
 * ("https://host/v1/"); Docker Hub by its historical index URL. */
static json_t *auth_entry(json_t *auths, const char *host)
{
    const char *key;
    json_t *v;
    bool hub = strcmp(host, "docker.io") == 0;
    json_object_foreach(auths, key, v)
    {
        const char *k = key;
        if (str_starts_with(k, "https://"))
            k += 8;
        else if (str_starts_with(k, "http://"))
            k += 7;
        size_t n = strcspn(k, "/");
        if (strlen(host) == n && strncmp(k, host, n) == 0)
            return v;
        if (hub && (strncmp(k, "index.docker.io", n) == 0 || strncmp(k, "registry-1.docker.io", n) == 0))
            return v;
    }
    return NULL;
}

int dk_auth_from_config(const char *config_text, const char *ref, char **out, char *err,
                        size_t errlen)
{
    *out = NULL;
    json_error_t je;
    json_t *cfg = json_loads(config_text, 0, &je);
    if (!json_is_object(cfg)) {
        snprintf(err, errlen, "line %d: %s", je.line, je.text);
        json_decref(cfg);
        return -EINVAL;
    }
    char host[256];
    dk_ref_registry(ref, host, sizeof(host));
    json_t *e = auth_entry(json_object_get(cfg, "auths"), host);
    int rc = 0;
    if (!e) {
        if (json_object_get(json_object_get(cfg, "credHelpers"), host) ||
            json_object_get(cfg, "credsStore")) {
            snprintf(err, errlen,
                     "credential helpers (credsStore, credHelpers) are not supported: no "
                     "credentials for %s are used",
                     host);
            rc = -ENOTSUP;
        }
        json_decref(cfg);
        return rc;
    }
    const char *user = json_string_value(json_object_get(e, "username"));
    const char *pass = json_string_value(json_object_get(e, "password"));
    const char *tok = json_string_value(json_object_get(e, "identitytoken"));
    const char *a = json_string_value(json_object_get(e, "auth"));
    char *dec = NULL;
    if (a && *a && !user) {
        dec = b64_decode(a);
        char *colon = dec ? strchr(dec, ':') : NULL;
        if (!colon) {
            snprintf(err, errlen, "auths.%s.auth is not base64 of USER:PASSWORD", host);
            free(dec);
            json_decref(cfg);
            return -EINVAL;
        }
        *colon = '\0';
        user = dec;
        pass = colon + 1;
    }
    if (user || tok)
        rc = dk_auth_header(user, pass, tok, host, out);
    free(dec);
    json_decref(cfg);
    return rc;
}

int dk_auth_for(const char *ref, char **out, char *err, size_t errlen)
{
    *out = NULL;
    const char *dir = getenv("DOCKER_CONFIG");
    char *path;
    if (dir && *dir) {
        path = xasprintf("%s/config.json", dir);
    } else {
        /* a system service may run without HOME (systemd sets none for
         * root): the passwd entry's home then, as the docker CLI does */
        const char *home = getenv("HOME");
        if (!home || !*home) {
            struct passwd *pw = getpwuid(getuid());
            home = pw ? pw->pw_dir : NULL;
        }
        if (!home || !*home)
            return 0;
        path = xasprintf("%s/.docker/config.json", home);
    }
    FILE *f = fopen(path, "re");
    if (!f) {
        free(path);
        return 0; /* no credentials: anonymous pulls */
    }
    char *text = NULL;
    size_t len = 0, cap = 0;
    char chunk[4096];
    size_t k;
    while ((k = fread(chunk, 1, sizeof(chunk), f)) > 0 && len < (1u << 20)) {
        if (len + k + 1 > cap) {
            cap = (len + k + 1) * 2;
            text = xrealloc(text, cap);
        }
        memcpy(text + len, chunk, k);
        len += k;
        text[len] = '\0';
    }
    fclose(f);
    char why[256] = "";
    int rc = text ? dk_auth_from_config(text, ref, out, why, sizeof(why)) : 0;
    if (rc < 0)
        snprintf(err, errlen, "%s: %s", path, why);
    free(text);
    free(path);
    return rc;
}
