/* home.c — the state directory. */
#include "daemon/home.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

static int mkdir_p(const char *path, mode_t mode)
{
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(tmp, 0755) == -1 && errno != EEXIST)
                return -1;
            *p = '/';
        }
    }
    if (mkdir(tmp, mode) == -1 && errno != EEXIST)
        return -1;
    return 0;
}

const char *tako_home(void)
{
    static char home[4096];
    if (home[0])
        return home;
    const char *e = getenv("TAKO_HOME");
    if (e && *e) {
        snprintf(home, sizeof(home), "%s", e);
    } else if (geteuid() == 0) {
        snprintf(home, sizeof(home), "/var/lib/tako");
    } else {
        const char *h = getenv("HOME");
        snprintf(home, sizeof(home), "%s/.local/state/tako", h && *h ? h : "/tmp");
    }
    size_t l = strlen(home);
    while (l > 1 && home[l - 1] == '/')
        home[--l] = '\0';
    if (mkdir_p(home, 0700) == -1) {
        home[0] = '\0';
        return NULL;
    }
    return home;
}

const char *tako_home_path(const char *name, char *buf, size_t len)
{
    const char *h = tako_home();
    snprintf(buf, len, "%s/%s", h ? h : ".", name);
    return buf;
}

int tako_home_space(const char *home, char *err, size_t errlen)
{
    struct statvfs vf;
    if (statvfs(home, &vf) == -1)
        return 0; /* nothing to judge by: the writes themselves will tell */
    /* f_bavail: what an unprivileged writer may use; root's reserve does not
     * count, as a replica need not run as root. */
    unsigned long long free_kb = (unsigned long long)vf.f_bavail * vf.f_frsize / 1024;
    if (free_kb >= TAKO_HOME_MIN_FREE_KB)
        return 0;
    snprintf(err, errlen,
             "no space left on device: the state directory %s has %llu KB free and tako needs "
             "at least %u KB there to record the change and start replicas; nothing was changed "
             "(free some space and try again)",
             home, free_kb, TAKO_HOME_MIN_FREE_KB);
    return -ENOSPC;
}
