/* setup.c — prepare a server for tako: checks, the binary, the unit or its
 * fallback, the state directory (see remote.h). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "core/sha256.h"
#include "core/util.h"
#include "remote/remote.h"
#include "runtime/docker_api.h"

#define SETUP_MIN_FREE_KB (64u * 1024) /* below this a deploy would fail half-way */

const char *remote_sudo(const struct ssh_conn *c)
{
    return ssh_is_root(c) ? "" : "sudo -n ";
}

/* key=value lines of the probe's answer. */
static const char *kv(const char *out, const char *key, char *buf, size_t len)
{
    size_t kl = strlen(key);
    for (const char *p = out; p && *p;) {
        const char *nl = strchr(p, '\n');
        size_t ll = nl ? (size_t)(nl - p) : strlen(p);
        if (ll > kl && strncmp(p, key, kl) == 0 && p[kl] == '=') {
            size_t vl = ll - kl - 1 < len - 1 ? ll - kl - 1 : len - 1;
            memcpy(buf, p + kl + 1, vl);
            buf[vl] = '\0';
            return buf;
        }
        p = nl ? nl + 1 : NULL;
    }
    buf[0] = '\0';
    return NULL;
}

/* The machine type this binary runs on, as `uname -m` names it on Linux: what
 * it was compiled for, not the kernel's (a 32-bit build on a 64-bit kernel). */
static const char *build_arch(const struct utsname *un)
{
#if defined(__x86_64__)
    (void)un;
    return "x86_64";
#elif defined(__aarch64__)
    (void)un;
    return "aarch64";
#elif defined(__i386__)
    (void)un;
    return "i686";
#elif defined(__riscv) && __riscv_xlen == 64
    (void)un;
    return "riscv64";
#else
    return un->machine;
#endif
}

static int self_sum(char path[PATH_MAX], char hex[65], unsigned long long *size)
{
    ssize_t n = readlink("/proc/self/exe", path, PATH_MAX - 1);
    if (n <= 0)
        return -errno;
    path[n] = '\0';
    int fd = open(path, O_RDONLY | O_CLOEXEC);
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
    close(fd);
    sha256_hex(&h, hex);
    return 0;
}

/* Run a command that must succeed; its stderr becomes the error. */
static int must(struct ssh_conn *c, const char *what, const char *cmd, int in_fd, char *err,
                size_t errlen)
{
    char *eout = NULL;
    int rc = ssh_run(c, cmd, in_fd, NULL, NULL, &eout);
    if (rc != 0) {
        eout[strcspn(eout, "\n")] = '\0';
        snprintf(err, errlen, "server %s (%s): %s failed (exit %d): %s", ssh_name(c),
                 ssh_where(c), what, rc, *eout ? eout : "no message");
    }
    free(eout);
    return rc == 0 ? 0 : -1;
}

static void say(const struct setup_opts *o, struct ssh_conn *c, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void say(const struct setup_opts *o, struct ssh_conn *c, const char *fmt, ...)
{
    if (o->quiet)
        return;
    printf("server %s: ", ssh_name(c));
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

int remote_docker_check(void)
{
    char why[1024];
    struct dk_client *dc = NULL;
    if (dk_open(NULL, &dc, why, sizeof(why)) < 0) {
        fprintf(stderr, "%s\n", why);
        return 1;
    }
    printf("unix://%s API %s\n", dk_socket(dc), dk_version(dc));
    dk_close(dc);
    return 0;
}

/* The server's engine, asked by the server's own tako with takod's
 * environment: what the deploy's builds and containers will meet. */
static int docker_check(struct ssh_conn *c, const char *sudo, char *err, size_t errlen)
{
    char *cmd = xasprintf("%ssh -c '" REMOTE_ENV_SH "exec " REMOTE_BIN " remote docker'", sudo);
    char *out = NULL, *eout = NULL;
    int rc = ssh_run(c, cmd, -1, &out, NULL, &eout);
    free(cmd);
    free(out);
    if (rc != 0) {
        eout[strcspn(eout, "\n")] = '\0';
        snprintf(err, errlen,
                 "server %s (%s): a service of the environment has runtime: docker, and Docker "
                 "does not answer there: %s\n"
                 "Install Docker on the server (Debian/Ubuntu: `apt-get install docker.io`, or "
                 "Docker's own packages) and start it (`systemctl enable --now docker`); for an "
                 "engine on another socket, put DOCKER_HOST=unix:///PATH in " REMOTE_ENV_FILE
                 " on the server.",
                 ssh_name(c), ssh_where(c), *eout ? eout : "no message");
        free(eout);
        return -1;
    }
    free(eout);
    return 0;
}

char *setup_probe(const char *sudo, unsigned http_port)
{
    char *portcheck = http_port ? xasprintf("echo port=$(ss -Hltnp \"sport = :%u\" | head -1 | "
                                               "tr -s \" \" | tr \"=\" \":\"); ",
                                               http_port)
                                   : xstrdup("");
    char *probe = xasprintf(
        "%ssh -c '"
        "echo os=$(uname -s); echo arch=$(uname -m); echo uid=$(id -u); "
        "if [ -x " REMOTE_BIN " ]; then echo sum=$(sha256sum " REMOTE_BIN " | cut -d\" \" -f1); fi; "
        "[ -d /run/systemd/system ] && echo systemd=yes; "
        "[ -d " REMOTE_HOME " ] && echo home=$(stat -c %%a " REMOTE_HOME "); "
        "p=$(cat " REMOTE_HOME "/takod.pid 2>/dev/null); "
        "[ -n \"$p\" ] && kill -0 \"$p\" 2>/dev/null && echo takod=$p; "
        "[ -f " REMOTE_UNIT " ] && echo unit=yes && "
        "grep -qx \"EnvironmentFile=-" REMOTE_ENV_FILE "\" " REMOTE_UNIT " && echo unit_env=yes; "
        "d=/var/lib; [ -d " REMOTE_HOME " ] && d=" REMOTE_HOME "; echo free_dir=$d; "
        "echo free_kb=$(df -Pk $d | awk \"NR==2{print \\$4}\"); "
        "%s"
        "true'",
        sudo, portcheck);
    free(portcheck);
    return probe;
}

int setup_server(struct ssh_conn *c, const struct setup_opts *o, bool *changed, char *err,
                 size_t errlen)
{
    *changed = false;
    const char *sudo = remote_sudo(c);
    if (*sudo) {
        /* Everything tako does on the server needs root: a login user that is
         * not root works through `sudo -n` (never a prompt). */
        char *out = NULL, *eout = NULL;
        int rc = ssh_run(c, "sudo -n true", -1, &out, NULL, &eout);
        free(out);
        if (rc < 0 || rc == 255) { /* ssh itself failed: not an answer of sudo */
            snprintf(err, errlen, "server %s (%s): cannot run a command there: %s", ssh_name(c),
                     ssh_where(c), rc < 0 ? strerror(-rc) : (eout ? eout : "ssh failed"));
            if (rc == 255)
                err[strcspn(err, "\n")] = '\0';
            free(eout);
            return -1;
        }
        if (rc != 0) {
            eout[strcspn(eout, "\n")] = '\0';
            const char *u = ssh_user(c);
            snprintf(err, errlen,
                     "server %s (%s): user %s is not root and %s (%s); tako needs root there. "
                     "Either give %s passwordless sudo: add the line `%s ALL=(root) NOPASSWD: "
                     "ALL` to /etc/sudoers.d/tako on the server (as root: `visudo -f "
                     "/etc/sudoers.d/tako`), or set servers.%s.user: root",
                     ssh_name(c), ssh_where(c), u,
                     rc == 127 ? "sudo is not installed there" : "cannot run sudo without a password",
                     *eout ? eout : "no message", u, u, ssh_name(c));
            free(eout);
            return -1;
        }
        free(eout);
    }
    char *probe = setup_probe(sudo, o->http_port);
    char *out = NULL, *eout = NULL;
    int rc = ssh_run(c, probe, -1, &out, NULL, &eout);
    free(probe);
    if (rc != 0) {
        eout[strcspn(eout, "\n")] = '\0';
        snprintf(err, errlen, "server %s (%s): cannot inspect the server: %s", ssh_name(c),
                 ssh_where(c), eout);
        free(out);
        free(eout);
        return -1;
    }
    free(eout);
    char os[64], arch[64], sum[80], systemd[8], home[8], takod[32], port[512], freekb[32],
        freedir[256], unit[8], unit_env[8];
    kv(out, "os", os, sizeof(os));
    kv(out, "arch", arch, sizeof(arch));
    kv(out, "sum", sum, sizeof(sum));
    kv(out, "systemd", systemd, sizeof(systemd));
    kv(out, "home", home, sizeof(home));
    kv(out, "takod", takod, sizeof(takod));
    if (strspn(takod, "0123456789") != strlen(takod)) /* a pid, or not running */
        takod[0] = '\0';
    kv(out, "port", port, sizeof(port));
    kv(out, "free_kb", freekb, sizeof(freekb));
    if (!kv(out, "free_dir", freedir, sizeof(freedir)))
        snprintf(freedir, sizeof(freedir), "/var/lib");
    kv(out, "unit", unit, sizeof(unit));
    kv(out, "unit_env", unit_env, sizeof(unit_env));
    free(out);

    /* Every problem in one message. */
    struct utsname un;
    uname(&un);
    char problems[2048] = "";
    size_t pl = 0;
#define PROBLEM(...)                                                                               \
    pl += (size_t)snprintf(problems + pl, pl < sizeof(problems) ? sizeof(problems) - pl : 0,       \
                           "\n  - " __VA_ARGS__)
    if (strcmp(os, "Linux") != 0)
        PROBLEM("the operating system is %s; tako runs on Linux", os[0] ? os : "unknown");
    const char *mine = build_arch(&un);
    if (strcmp(arch, mine) != 0)
        PROBLEM("the server's architecture is %s and this tako binary is built for %s; tako "
                "installs its own binary on the server, so deploy to it with a tako built for %s",
                arch[0] ? arch : "unknown", mine, arch[0] ? arch : "matching");
    /* tako's own data plane keeps the port while takod is down (it
     * outlives takod by design): that owner is not a problem either */
    bool ours = strstr(port, "((\"tako\"") != NULL;
    if (port[0] && !ours && !takod[0])
        PROBLEM("port %u is in use by another program (%s); free it or set "
                "environments.ENV.http to another port",
                o->http_port, port);
    else if (port[0] && !ours)
        PROBLEM("port %u is in use by another program (%s)", o->http_port, port);
    unsigned long long fk = strtoull(freekb, NULL, 10);
    if (freekb[0] && fk < SETUP_MIN_FREE_KB)
        PROBLEM("no space left on device: only %llu KB free in %s; tako needs at least %u KB "
                "there for the app's files, logs and state (free some space and try again)",
                fk, freedir, SETUP_MIN_FREE_KB);
#undef PROBLEM
    if (pl) {
        snprintf(err, errlen, "server %s (%s) cannot run tako:%s", ssh_name(c), ssh_where(c),
                 problems);
        return -1;
    }

    char self[PATH_MAX], hex[65];
    unsigned long long size = 0;
    if (self_sum(self, hex, &size) < 0) {
        snprintf(err, errlen, "cannot read this tako binary: %s", strerror(errno));
        return -1;
    }
    bool installed = false;
    if (strcmp(sum, hex) != 0) {
        int fd = open(self, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            snprintf(err, errlen, "cannot read %s: %s", self, strerror(errno));
            return -1;
        }
        /* Verified before it replaces anything; rename is atomic, so a running
         * takod keeps its old file and a new one starts from the new file. */
        char *cmd = xasprintf(
            "%ssh -c 'set -e; umask 022; mkdir -p /usr/local/bin; t=" REMOTE_BIN ".new.$$; "
            "trap \"rm -f $t\" EXIT; cat > $t; "
            "echo \"%s  $t\" | sha256sum -c --status || { echo \"checksum mismatch\" >&2; exit 1; }; "
            "chmod 0755 $t; $t version >/dev/null; mv -f $t " REMOTE_BIN "; trap - EXIT'",
            sudo, hex);
        int r = must(c, "installing tako", cmd, fd, err, errlen);
        free(cmd);
        close(fd);
        if (r < 0)
            return -1;
        char sz[32];
        say(o, c, "tako %s at " REMOTE_BIN " (%s, sha256 %.12s verified)",
            sum[0] ? "updated" : "installed", fmt_bytes(size, sz, sizeof(sz)), hex);
        installed = true;
        *changed = true;
    }
    if (home[0] && strcmp(home, "700") != 0) {
        char *cmd = xasprintf("%schmod 0700 " REMOTE_HOME, sudo);
        int r = must(c, "restricting " REMOTE_HOME, cmd, -1, err, errlen);
        free(cmd);
        if (r < 0)
            return -1;
        say(o, c, "state directory %s restricted to mode 0700 (was %s)", REMOTE_HOME, home);
        *changed = true;
    } else if (!home[0]) {
        char *cmd = xasprintf("%smkdir -p -m 0700 " REMOTE_HOME, sudo);
        int r = must(c, "creating " REMOTE_HOME, cmd, -1, err, errlen);
        free(cmd);
        if (r < 0)
            return -1;
        say(o, c, "state directory %s created", REMOTE_HOME);
        *changed = true;
    }
    if (o->docker && docker_check(c, sudo, err, errlen) < 0)
        return -1;
    bool restart = installed;
    if (systemd[0]) {
        /* A unit of an older tako lacks the EnvironmentFile line: rewritten,
         * and takod restarted so that it reads the file. */
        if (!unit[0] || !unit_env[0]) {
            char *cmd = xasprintf(
                "%ssh -c 'cat > " REMOTE_UNIT ".new && mv -f " REMOTE_UNIT ".new " REMOTE_UNIT
                " && systemctl daemon-reload && systemctl enable tako.service'",
                sudo);
            /* The unit's text goes on stdin. */
            char unitf[] = "/tmp/tako-unit-XXXXXX";
            int ufd = mkstemp(unitf);
            if (ufd < 0) {
                free(cmd);
                snprintf(err, errlen, "cannot write a temporary file: %s", strerror(errno));
                return -1;
            }
            unlink(unitf);
            dprintf(ufd,
                    "[Unit]\nDescription=tako node agent (takod)\nAfter=network-online.target\n"
                    "Wants=network-online.target\n\n[Service]\nType=simple\n"
                    "EnvironmentFile=-" REMOTE_ENV_FILE "\n"
                    "ExecStart=" REMOTE_BIN " daemon --foreground\n"
                    "KillMode=process\nRestart=on-failure\nLimitNOFILE=1048576\n\n"
                    "[Install]\nWantedBy=multi-user.target\n");
            lseek(ufd, 0, SEEK_SET);
            int r = must(c, "installing the systemd unit", cmd, ufd, err, errlen);
            close(ufd);
            free(cmd);
            if (r < 0)
                return -1;
            say(o, c, "systemd unit %s %s", REMOTE_UNIT,
                unit[0] ? "updated (EnvironmentFile=-" REMOTE_ENV_FILE ")" : "installed and enabled");
            restart = restart || unit[0];
            *changed = true;
        }
        if (!takod[0] || restart) {
            char *cmd = xasprintf("%ssystemctl %s tako.service", sudo, takod[0] ? "restart" : "start");
            int r = must(c, "starting takod", cmd, -1, err, errlen);
            free(cmd);
            if (r < 0)
                return -1;
            say(o, c, "takod %s (systemd)", takod[0] ? "restarted" : "started");
            *changed = true;
        }
    } else if (!takod[0] || restart) {
        /* No systemd: takod detaches itself (double fork, own session), so it
         * outlives this ssh session; any later command starts it again through
         * `tako daemon --stdio` if it is gone. */
        /* A restart waits (up to 10 s) for the old takod to be gone, so the new
         * one takes over the data plane now rather than on the next command. */
        char *stop = takod[0] ? xasprintf(REMOTE_BIN " daemon --stop >/dev/null; i=0; "
                                          "while kill -0 %s 2>/dev/null && [ $i -lt 200 ]; do "
                                          "sleep 0.05; i=$((i+1)); done; ",
                                          takod)
                              : xstrdup("");
        char *cmd = xasprintf("%ssh -c '%s" REMOTE_ENV_SH REMOTE_BIN " daemon >/dev/null'", sudo,
                              stop);
        free(stop);
        int r = must(c, "starting takod", cmd, -1, err, errlen);
        free(cmd);
        if (r < 0)
            return -1;
        say(o, c, "takod %s (no systemd: detached background process)",
            takod[0] ? "restarted" : "started");
        *changed = true;
    }
    return 0;
}
