/* test_docker.c — unit tests of the Docker client's pure parts: glob and
 * .dockerignore rules, image references, the build-context tar, the log
 * stream demultiplexer, the CPU percent formula, the pull rule and registry
 * credentials. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "core/util.h"
#include "runtime/docker_api.h"
#include "unit.h"

TEST(glob_stars_stay_in_one_component_and_double_stars_cross)
{
    CHECK(dk_glob("*.log", "a.log"));
    CHECK(!dk_glob("*.log", "dir/a.log"));
    CHECK(dk_glob("**/*.log", "dir/sub/a.log"));
    CHECK(dk_glob("**/*.log", "a.log"));
    CHECK(dk_glob("node_modules", "node_modules"));
    CHECK(dk_glob("a/**/b", "a/b"));
    CHECK(dk_glob("a/**/b", "a/x/y/b"));
    CHECK(!dk_glob("a/**/b", "a/x/y/c"));
    CHECK(dk_glob("file?.txt", "file1.txt"));
    CHECK(!dk_glob("file?.txt", "file/.txt"));
    CHECK(dk_glob("[a-c]x", "bx"));
    CHECK(!dk_glob("[!a-c]x", "bx"));
    CHECK(dk_glob("\\*", "*"));
    CHECK(!dk_glob("\\*", "a"));
}

TEST(dockerignore_last_match_wins_and_parents_exclude_children)
{
    struct dk_ignore *ig = dk_ignore_parse("# comment\n"
                                           "node_modules\n"
                                           "  *.md  \n"
                                           "!README.md\n"
                                           "/build/\n"
                                           "./tmp/../cache\n"
                                           "\n");
    CHECK(dk_ignore_match(ig, "node_modules"));
    CHECK(dk_ignore_match(ig, "node_modules/x/index.js"));
    CHECK(dk_ignore_match(ig, "NOTES.md"));
    CHECK(!dk_ignore_match(ig, "README.md"));
    CHECK(!dk_ignore_match(ig, "docs/NOTES.md")); /* '*' stays in the top directory */
    CHECK(dk_ignore_match(ig, "build/out.o"));
    CHECK(dk_ignore_match(ig, "cache/a"));
    CHECK(!dk_ignore_match(ig, "tmp/a"));
    CHECK(!dk_ignore_match(ig, "src/index.js"));
    dk_ignore_free(ig);
    CHECK(!dk_ignore_match(NULL, "x"));
}

TEST(image_references_are_checked_like_docker_does)
{
    char err[256];
    CHECK_INT(dk_ref_check("scaling-web:abc123", err, sizeof(err)), 0);
    CHECK_INT(dk_ref_check("busybox", err, sizeof(err)), 0);
    CHECK_INT(dk_ref_check("localhost:5000/team/app:v1.2", err, sizeof(err)), 0);
    CHECK_INT(dk_ref_check("registry.example.com/a_b/c__d:latest", err, sizeof(err)), 0);
    CHECK_INT(dk_ref_check("app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                           err, sizeof(err)),
              0);
    CHECK_INT(dk_ref_check("Scaling-Web", err, sizeof(err)), -EINVAL);
    CHECK_CONTAINS(err, "lower-case");
    CHECK_INT(dk_ref_check("app:", err, sizeof(err)), -EINVAL);
    CHECK_CONTAINS(err, "invalid tag");
    CHECK_INT(dk_ref_check("app:-x", err, sizeof(err)), -EINVAL);
    CHECK_INT(dk_ref_check("a//b", err, sizeof(err)), -EINVAL);
    CHECK_INT(dk_ref_check("-app", err, sizeof(err)), -EINVAL);
    CHECK_INT(dk_ref_check("app..x", err, sizeof(err)), -EINVAL);
    CHECK_INT(dk_ref_check("", err, sizeof(err)), -EINVAL);
    CHECK_INT(dk_ref_check("app@sha256:zz", err, sizeof(err)), -EINVAL);

    char name[128], tag[128];
    dk_ref_split("localhost:5000/app", name, sizeof(name), tag, sizeof(tag));
    CHECK_STR(name, "localhost:5000/app");
    CHECK_STR(tag, "latest");
    dk_ref_split("scaling-web:r7", name, sizeof(name), tag, sizeof(tag));
    CHECK_STR(name, "scaling-web");
    CHECK_STR(tag, "r7");
}

static void write_file(const char *dir, const char *rel, const char *text)
{
    char p[1024];
    snprintf(p, sizeof(p), "%s/%s", dir, rel);
    FILE *f = fopen(p, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static unsigned long long oct(const char *p, size_t n)
{
    unsigned long long v = 0;
    for (size_t i = 0; i < n && p[i] >= '0' && p[i] <= '7'; i++)
        v = v * 8 + (unsigned)(p[i] - '0');
    return v;
}

/* Names in a tar buffer (PAX paths applied), joined by ',' into out. */
static int tar_names(const char *b, size_t len, char *out, size_t outlen)
{
    size_t off = 0, o = 0;
    char pax_path[4096] = "";
    out[0] = '\0';
    while (off + 512 <= len) {
        const char *h = b + off;
        if (h[0] == '\0')
            return 0;
        unsigned sum = 0;
        for (size_t i = 0; i < 512; i++)
            sum += (i >= 148 && i < 156) ? ' ' : (unsigned char)h[i];
        if (sum != oct(h + 148, 8))
            return -1;
        unsigned long long size = oct(h + 124, 12);
        if (h[156] == 'x') {
            const char *r = strstr(b + off + 512, " path=");
            if (r) {
                const char *e = strchr(r, '\n');
                snprintf(pax_path, sizeof(pax_path), "%.*s", (int)(e - r - 6), r + 6);
            }
        } else {
            int nlen = pax_path[0] ? (int)strlen(pax_path) : (int)strnlen(h, 100);
            const char *name = pax_path[0] ? pax_path : h;
            o += (size_t)snprintf(out + o, outlen - o, "%s%.*s", o ? "," : "", nlen, name);
            pax_path[0] = '\0';
        }
        off += 512 + (size + 511) / 512 * 512;
    }
    return -1;
}

TEST(build_context_tar_honours_dockerignore_but_always_sends_dockerfile)
{
    char tmpl[] = "/tmp/tako-dk-unit-XXXXXX";
    char *d = mkdtemp(tmpl);
    CHECK(d != NULL);
    char p[1024];
    snprintf(p, sizeof(p), "%s/src", d);
    mkdir(p, 0755);
    snprintf(p, sizeof(p), "%s/node_modules", d);
    mkdir(p, 0755);
    write_file(d, "Dockerfile", "FROM scratch\n");
    write_file(d, ".dockerignore", "node_modules\nDockerfile\n*.secret\n");
    write_file(d, "src/app.js", "console.log(1)\n");
    write_file(d, "node_modules/x.js", "x\n");
    write_file(d, "key.secret", "s\n");
    char longname[300];
    memset(longname, 'a', 150);
    strcpy(longname + 150, ".txt");
    write_file(d, longname, "long\n");
    snprintf(p, sizeof(p), "%s/link", d);
    CHECK_INT(symlink("src/app.js", p), 0);

    char *buf = NULL;
    size_t len = 0;
    char err[256];
    CHECK_INT(dk_tar_context(d, NULL, &buf, &len, err, sizeof(err)), 0);
    CHECK_INT(len % 512, 0);
    char names[4096];
    CHECK_INT(tar_names(buf, len, names, sizeof(names)), 0);
    char want[1024];
    snprintf(want, sizeof(want), ".dockerignore,Dockerfile,%s,link,src/,src/app.js", longname);
    CHECK_STR(names, want);
    /* file content follows its header */
    CHECK(memmem(buf, len, "console.log(1)\n", 15) != NULL);
    CHECK(memmem(buf, len, "x\n\0", 3) == NULL || memmem(buf, len, "node_modules", 12) == NULL);
    free(buf);

    CHECK_INT(dk_tar_context("/nonexistent-tako-dir", NULL, &buf, &len, err, sizeof(err)),
              -ENOENT);
    CHECK_CONTAINS(err, "/nonexistent-tako-dir");
    char *cmd = xasprintf("rm -rf '%s'", d);
    CHECK_INT(system(cmd), 0);
    free(cmd);
}

struct collected {
    char out[256], errs[256];
    int calls;
};

static int collect(void *data, int stream, const char *buf, size_t len)
{
    struct collected *c = data;
    char *dst = stream == 2 ? c->errs : c->out;
    strncat(dst, buf, len);
    c->calls++;
    return 0;
}

TEST(log_stream_frames_are_split_across_any_chunking)
{
    /* stdout "hello\n", stderr "oops\n", stdout "bye\n" */
    const unsigned char frames[] = {1, 0, 0, 0, 0, 0, 0, 6, 'h', 'e', 'l', 'l', 'o', '\n',
                                    2, 0, 0, 0, 0, 0, 0, 5, 'o', 'o', 'p', 's', '\n',
                                    1, 0, 0, 0, 0, 0, 0, 4, 'b', 'y', 'e', '\n'};
    for (size_t step = 1; step <= sizeof(frames); step++) {
        struct collected c = {0};
        struct dk_demux d;
        dk_demux_init(&d, collect, &c);
        for (size_t off = 0; off < sizeof(frames); off += step) {
            size_t n = sizeof(frames) - off < step ? sizeof(frames) - off : step;
            CHECK_INT(dk_demux_feed(&d, (const char *)frames + off, n), 0);
        }
        CHECK_STR(c.out, "hello\nbye\n");
        CHECK_STR(c.errs, "oops\n");
    }
}

TEST(cpu_percent_is_of_one_cpu_like_docker_stats)
{
    struct dk_stats a = {.cpu_total_ns = 1000000000ull, .system_ns = 100000000000ull,
                         .online_cpus = 2};
    struct dk_stats b = {.cpu_total_ns = 1500000000ull, .system_ns = 102000000000ull,
                         .online_cpus = 2};
    /* 0.5 s of CPU over 1 s of wall time on 2 CPUs (2 s of system time) */
    double p = dk_cpu_percent(&a, &b);
    CHECK(p > 49.9 && p < 50.1);
    CHECK(dk_cpu_percent(&a, NULL) == 0.0); /* no precpu part */
    struct dk_stats s = {.mem_usage = 5000, .mem_cache = 1000};
    CHECK_INT(dk_mem_used(&s), 4000);
}

TEST(open_names_the_socket_tried_when_nothing_listens)
{
    struct dk_client *c = (struct dk_client *)1;
    char err[512];
    int rc = dk_open("unix:///tmp/tako-no-such-docker.sock", &c, err, sizeof(err));
    CHECK_INT(rc, -EHOSTDOWN);
    CHECK(c == NULL);
    CHECK_CONTAINS(err, "unix:///tmp/tako-no-such-docker.sock");
    CHECK_CONTAINS(err, "dockerd");
    CHECK_INT(dk_open("tcp://127.0.0.1:2375", &c, err, sizeof(err)), -EINVAL);
    CHECK_CONTAINS(err, "unix://");
}

TEST(pull_rule_and_arguments_follow_the_reference)
{
    char from[256], tag[64], host[128];
    /* a tag that moves is pulled at every start; a fixed tag or a digest only when missing */
    CHECK(dk_ref_floating("nginx"));
    CHECK(dk_ref_floating("nginx:latest"));
    CHECK(dk_ref_floating("127.0.0.1:5000/app"));
    CHECK(dk_ref_floating("127.0.0.1:5000/app:latest"));
    CHECK(!dk_ref_floating("127.0.0.1:5000/app:1"));
    CHECK(!dk_ref_floating("redis:7"));
    CHECK(!dk_ref_floating("app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"));
    dk_ref_pull_args("127.0.0.1:5000/scaling-web:1", from, sizeof(from), tag, sizeof(tag));
    CHECK_STR(from, "127.0.0.1:5000/scaling-web");
    CHECK_STR(tag, "1");
    dk_ref_pull_args("127.0.0.1:5000/scaling-web", from, sizeof(from), tag, sizeof(tag));
    CHECK_STR(from, "127.0.0.1:5000/scaling-web");
    CHECK_STR(tag, "latest"); /* never every tag of the repository */
    dk_ref_pull_args("app@sha256:0123456789abcdef0123456789abcdef", from, sizeof(from), tag,
                     sizeof(tag));
    CHECK_STR(from, "app@sha256:0123456789abcdef0123456789abcdef");
    CHECK_STR(tag, "");
    dk_ref_registry("127.0.0.1:5000/a/b:1", host, sizeof(host));
    CHECK_STR(host, "127.0.0.1:5000");
    dk_ref_registry("ghcr.io/org/app", host, sizeof(host));
    CHECK_STR(host, "ghcr.io");
    dk_ref_registry("localhost/app", host, sizeof(host));
    CHECK_STR(host, "localhost");
    dk_ref_registry("library/redis:7", host, sizeof(host));
    CHECK_STR(host, "docker.io");
    dk_ref_registry("redis", host, sizeof(host));
    CHECK_STR(host, "docker.io");
}

/* The X-Registry-Auth value decoded back to its JSON. */
static json_t *auth_json(const char *b64url)
{
    char *s = xstrdup(b64url);
    size_t n = strlen(s);
    for (char *p = s; *p; p++)
        *p = *p == '-' ? '+' : *p == '_' ? '/' : *p;
    unsigned char out[1024];
    int k = EVP_DecodeBlock(out, (unsigned char *)s, (int)n);
    free(s);
    if (k < 0)
        return NULL;
    while (k > 0 && out[k - 1] == '\0')
        k--;
    return json_loadb((char *)out, (size_t)k, 0, NULL);
}

TEST(registry_credentials_come_from_docker_logins_config)
{
    char err[256] = "";
    char *auth = NULL;
    /* "auth" is base64("tako:s3cret") */
    const char *cfg = "{\"auths\": {\"127.0.0.1:5000\": {\"auth\": \"dGFrbzpzM2NyZXQ=\"},"
                      " \"https://index.docker.io/v1/\": {\"username\": \"hub\","
                      " \"password\": \"pw\"}}}";
    CHECK_INT(dk_auth_from_config(cfg, "127.0.0.1:5000/app:1", &auth, err, sizeof(err)), 0);
    CHECK(auth != NULL);
    json_t *j = auth_json(auth);
    CHECK(j != NULL);
    CHECK_STR(json_string_value(json_object_get(j, "username")), "tako");
    CHECK_STR(json_string_value(json_object_get(j, "password")), "s3cret");
    CHECK_STR(json_string_value(json_object_get(j, "serveraddress")), "127.0.0.1:5000");
    json_decref(j);
    free(auth);
    CHECK_INT(dk_auth_from_config(cfg, "redis:7", &auth, err, sizeof(err)), 0);
    j = auth_json(auth);
    CHECK_STR(json_string_value(json_object_get(j, "username")), "hub");
    json_decref(j);
    free(auth);
    /* another registry: no credentials, anonymous */
    CHECK_INT(dk_auth_from_config(cfg, "ghcr.io/x/y:1", &auth, err, sizeof(err)), 0);
    CHECK(auth == NULL);
    /* a credential helper is named, not run */
    CHECK_INT(dk_auth_from_config("{\"credsStore\": \"desktop\"}", "ghcr.io/x/y:1", &auth, err,
                                  sizeof(err)),
              -ENOTSUP);
    CHECK_CONTAINS(err, "credential helpers");
    CHECK_INT(dk_auth_from_config("{\"auths\": {\"r.io\": {\"auth\": \"bm9jb2xvbg==\"}}}",
                                  "r.io/a", &auth, err, sizeof(err)),
              -EINVAL); /* "nocolon" */
    CHECK_CONTAINS(err, "USER:PASSWORD");
    CHECK_INT(dk_auth_from_config("{not json", "r.io/a", &auth, err, sizeof(err)), -EINVAL);
}

TEST(a_program_runc_cannot_run_is_named_with_the_image)
{
    char out[512];
    CHECK_INT(dk_start_error("OCI runtime create failed: container_linux.go:380: starting "
                             "container process caused: exec: \"nosuch\": executable file not "
                             "found in $PATH: unknown",
                             "app:1", out, sizeof(out)),
              0);
    CHECK_STR(out, "command: cannot run \"nosuch\" in image app:1: executable file not found in "
                   "$PATH");
    CHECK_INT(dk_start_error("... caused: exec: \"/srv/x\": stat /srv/x: no such file or "
                             "directory: unknown",
                             "app:1", out, sizeof(out)),
              0);
    CHECK_STR(out, "command: cannot run \"/srv/x\" in image app:1: stat /srv/x: no such file or "
                   "directory");
    CHECK_INT(dk_start_error("driver failed programming external connectivity", "app:1", out,
                             sizeof(out)),
              -ENOENT);
}
