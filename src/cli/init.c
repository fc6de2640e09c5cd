/* init.c — `tako init [NAME]`: write a starter tako.yaml, .env.example and
 * .gitignore that validate, never overwriting a file unless --force. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "config/config.h"
#include "core/util.h"

static const char starter_yaml[] =
    "# tako.yaml for @NAME@: one file describes servers, environments and services.\n"
    "# Check it with `tako validate`; see it with every default filled in with\n"
    "# `tako config explain`. ${VAR} comes from the environment, then from .env.\n"
    "project:\n"
    "  name: @NAME@\n"
    "  version: 0.1.0\n"
    "\n"
    "# Remote machines. An environment without servers runs on this machine.\n"
    "# servers:\n"
    "#   prod:\n"
    "#     host: ${SERVER_HOST}\n"
    "#     user: root\n"
    "#     sshKey: ~/.ssh/id_ed25519\n"
    "\n"
    "environments:\n"
    "  production:\n"
    "    # servers: [prod]\n"
    "    # http: 8080          # the shared listener (default 80 as root, else 8080)\n"
    "    services:\n"
    "      web:\n"
    "        # What to run: a string split like a shell would (without running one), or a\n"
    "        # list. Each replica gets its own PORT in the environment and must listen on it.\n"
    "        command: [sh, -c, 'exec python3 -m http.server \"$PORT\"']\n"
    "        port: 3000           # the port the app listens on; no port = a background worker\n"
    "        replicas: 3          # or {min: 2, max: 10, cpu: 70%} to autoscale\n"
    "        loadBalancer:\n"
    "          strategy: round_robin   # least_connections, ip_hash, random, sticky, p2c\n"
    "        healthCheck:\n"
    "          path: /            # default /health\n"
    "          interval: 2s\n"
    "        proxy:\n"
    "          domain: ${APP_DOMAIN:-@NAME@.localhost}\n"
    "        env:\n"
    "          APP_ENV: production\n";

static const char starter_env_example[] =
    "# Copy to .env (kept out of git) and fill in. tako.yaml reads ${VAR} from the\n"
    "# environment first, then from .env beside it.\n"
    "APP_DOMAIN=@NAME@.example.com\n"
    "# SERVER_HOST=203.0.113.10\n";

/* TEMPLATE with every @NAME@ replaced by NAME (heap string). */
static char *fill(const char *template, const char *name)
{
    size_t n = 0;
    for (const char *p = template; (p = strstr(p, "@NAME@")); p += 6)
        n++;
    char *out = xmalloc(strlen(template) + n * strlen(name) + 1), *o = out;
    for (const char *p = template;;) {
        const char *q = strstr(p, "@NAME@");
        size_t l = q ? (size_t)(q - p) : strlen(p);
        memcpy(o, p, l);
        o += l;
        if (!q)
            break;
        o = stpcpy(o, name);
        p = q + 6;
    }
    *o = '\0';
    return out;
}

/* Write TEXT to PATH; without FORCE an existing file is never touched. */
static int write_new(const char *path, const char *text, bool force)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | (force ? O_TRUNC : O_EXCL), 0644);
    if (fd == -1)
        return -errno;
    size_t len = strlen(text), off = 0;
    int ret = 0;
    while (off < len) {
        ssize_t w = write(fd, text + off, len - off);
        if (w == -1) {
            if (errno == EINTR)
                continue;
            ret = -errno;
            break;
        }
        off += (size_t)w;
    }
    if (close(fd) == -1 && ret == 0)
        ret = -errno;
    return ret;
}

/* .gitignore may hold the user's own rules: add ".env" to it, never replace it. */
static int ensure_gitignore(const char *path, bool *created)
{
    *created = false;
    FILE *f = fopen(path, "r");
    if (!f) {
        if (errno != ENOENT)
            return -errno;
        *created = true;
        return write_new(path, "# Local values for ${VAR} in tako.yaml; may hold secrets.\n.env\n",
                         false);
    }
    char line[4096];
    bool has = false, ends_nl = true;
    while (fgets(line, sizeof(line), f)) {
        size_t n = strlen(line);
        ends_nl = n && line[n - 1] == '\n';
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' '))
            line[--n] = '\0';
        if (strcmp(line, ".env") == 0 || strcmp(line, "/.env") == 0)
            has = true;
    }
    fclose(f);
    if (has)
        return 0;
    f = fopen(path, "a");
    if (!f)
        return -errno;
    fprintf(f, "%s.env\n", ends_nl ? "" : "\n");
    return fclose(f) == 0 ? 0 : -errno;
}

/* A project name from a directory name: lowercase, [a-z0-9-], trimmed. */
static void name_from_dir(const char *dir, char *out, size_t len)
{
    const char *base = strrchr(dir, '/');
    base = base && base[1] ? base + 1 : dir;
    size_t o = 0;
    for (const char *p = base; *p && o + 1 < len && o < 63; p++) {
        char ch = (char)tolower((unsigned char)*p);
        if (!isalnum((unsigned char)ch))
            ch = '-';
        if (ch == '-' && (o == 0 || out[o - 1] == '-'))
            continue;
        out[o++] = ch;
    }
    while (o && out[o - 1] == '-')
        o--;
    out[o] = '\0';
    if (!o)
        snprintf(out, len, "app");
}

static bool valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 63 || s[0] == '-' || s[n - 1] == '-')
        return false;
    for (const char *p = s; *p; p++)
        if (!(islower((unsigned char)*p) || isdigit((unsigned char)*p) || *p == '-'))
            return false;
    return true;
}

int cmd_init(int argc, char **argv)
{
    static const struct option opts[] = {
        {"dir", required_argument, NULL, 'd'},
        {"force", no_argument, NULL, 'F'},
        {NULL, 0, NULL, 0},
    };
    const char *dir = ".";
    bool force = false;
    int o;
    opterr = 0;
    optind = 1;
    while ((o = getopt_long(argc, argv, ":d:", opts, NULL)) != -1) {
        switch (o) {
        case 'd':
            dir = optarg;
            break;
        case 'F':
            force = true;
            break;
        case ':':
            return cli_usage_error("init", "option '%s' needs a value", argv[optind - 1]);
        default:
            return cli_usage_error("init", "unknown option '%s'", argv[optind - 1]);
        }
    }
    char name[64];
    if (optind < argc) {
        if (!valid_name(argv[optind]))
            return cli_usage_error("init",
                                   "invalid project name '%s' (lowercase letters, digits and -, "
                                   "at most 63)",
                                   argv[optind]);
        snprintf(name, sizeof(name), "%s", argv[optind++]);
    } else {
        char *abs = realpath(dir, NULL);
        name_from_dir(abs ? abs : dir, name, sizeof(name));
        free(abs);
    }
    if (optind < argc)
        return cli_usage_error("init", "unexpected argument '%s'", argv[optind]);

    struct stat st;
    if (stat(dir, &st) == -1 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "tako init: %s is not a directory\n", dir);
        return EXIT_USAGE;
    }
    int ret = EXIT_FAILED;
    char *yaml_path = xasprintf("%s/tako.yaml", dir);
    char *env_path = xasprintf("%s/.env.example", dir);
    char *ign_path = xasprintf("%s/.gitignore", dir);
    char *yaml = fill(starter_yaml, name);
    char *envex = fill(starter_env_example, name);
    /* Refuse before writing anything, so a refusal changes nothing. */
    if (!force) {
        bool exists = false;
        const char *paths[] = {yaml_path, env_path};
        for (size_t i = 0; i < ARRAY_LEN(paths); i++)
            if (access(paths[i], F_OK) == 0) {
                fprintf(stderr, "tako init: %s already exists\n", paths[i]);
                exists = true;
            }
        if (exists) {
            fprintf(stderr, "Nothing written. Use --force to overwrite.\n");
            goto out;
        }
    }
    int r;
    if ((r = write_new(yaml_path, yaml, force)) < 0) {
        fprintf(stderr, "tako init: cannot write %s: %s\n", yaml_path, strerror(-r));
        goto out;
    }
    if ((r = write_new(env_path, envex, force)) < 0) {
        fprintf(stderr, "tako init: cannot write %s: %s\n", env_path, strerror(-r));
        goto out;
    }
    bool created;
    if ((r = ensure_gitignore(ign_path, &created)) < 0) {
        fprintf(stderr, "tako init: cannot update %s: %s\n", ign_path, strerror(-r));
        goto out;
    }
    printf("Wrote %s and %s for project %s; %s %s .env.\n", yaml_path, env_path, name,
           ign_path, created ? "created: it ignores" : "ignores");
    printf("Next: edit the command in tako.yaml, then run `tako validate`.\n");
    ret = EXIT_OK;
out:
    free(yaml_path);
    free(env_path);
    free(ign_path);
    free(yaml);
    free(envex);
    return ret;
}
