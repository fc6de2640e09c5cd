/* certmgr.c — keeps one certificate per domain valid: loads what the state
 * directory holds, obtains missing ones, renews a third of the lifetime
 * before expiry, retries failures with jittered exponential backoff (one
 * order at a time, so a wrong domain never becomes a retry storm), and
 * hands every certificate to the proxy through a hook. Runs on its own
 * thread; the data plane never waits for it. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "acme/acme.h"
#include "core/log.h"
#include "core/util.h"
#include "tls/tls.h"

#define MAX_BACKOFF_MS (24ull * 3600 * 1000)

struct mdom {
    char *name, *email, *directory;
    enum cert_state st;
    bool wanted;
    bool loaded;        /* the store was looked at */
    bool have;          /* a certificate is installed */
    int64_t not_before, not_after;
    char issuer[256];
    char err[768];
    uint64_t next_ms;   /* wall clock: next look */
    unsigned fails;
    struct mdom *next;
};

struct certmgr {
    char *dir, *directory, *ca_bundle;
    bool env_directory; /* TAKO_ACME_DIRECTORY set: it wins over proxy.acme */
    uint64_t retry_min_ms;
    struct certmgr_hooks h;
    pthread_t th;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    volatile bool stop;
    struct mdom *doms;
};

const char *cert_state_name(enum cert_state s)
{
    switch (s) {
    case CERT_NONE: return "none";
    case CERT_OBTAINING: return "obtaining";
    case CERT_VALID: return "valid";
    case CERT_RENEWING: return "renewing";
    case CERT_FAILING: return "failing";
    }
    return "?";
}

static uint64_t wall_ms(void) { return time_wall_ms(); }

static uint64_t jitter(uint64_t span)
{
    uint64_t r = 0;
    if (span == 0)
        return 0;
    RAND_bytes((unsigned char *)&r, sizeof(r));
    return r % span;
}

/* When to renew: a third of the lifetime before expiry, a little earlier
 * at random so many certificates issued together do not renew together. */
static uint64_t renew_at(const struct mdom *d)
{
    int64_t life = d->not_after - d->not_before;
    if (life <= 0)
        life = 1;
    int64_t at = d->not_after - life / 3;
    uint64_t ms = at > 0 ? (uint64_t)at * 1000 : 0;
    uint64_t j = jitter((uint64_t)life * 1000 / 20);
    return ms > j ? ms - j : 0;
}

static char *slurp(const char *path, int *errp)
{
    FILE *f = fopen(path, "re");
    if (!f) {
        *errp = -errno;
        return NULL;
    }
    size_t cap = 4096, n = 0;
    char *b = xmalloc(cap);
    size_t r;
    while ((r = fread(b + n, 1, cap - n - 1, f)) > 0) {
        n += r;
        if (n + 1 == cap) {
            if (cap >= (1 << 20))
                break;
            cap *= 2;
            b = xrealloc(b, cap);
        }
    }
    fclose(f);
    b[n] = '\0';
    return b;
}

/* Write data to path atomically, mode 0600. */
static int store_file(const char *path, const char *data)
{
    char tmp[600];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd == -1)
        return -errno;
    size_t n = strlen(data), off = 0;
    while (off < n) {
        ssize_t w = write(fd, data + off, n - off);
        if (w < 0) {
            int e = -errno;
            close(fd);
            unlink(tmp);
            return e;
        }
        off += (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        unlink(tmp);
        return -EIO;
    }
    if (rename(tmp, path) != 0) {
        int e = -errno;
        unlink(tmp);
        return e;
    }
    return 0;
}

static void paths(struct certmgr *m, const char *domain, char *dir, char *cert, char *key,
                  size_t len)
{
    snprintf(dir, len, "%s/%s", m->dir, domain);
    snprintf(cert, len, "%s/%s/cert.pem", m->dir, domain);
    snprintf(key, len, "%s/%s/key.pem", m->dir, domain);
}

static void event(struct certmgr *m, const char *domain, const char *kind, const char *msg)
{
    if (strcmp(kind, "cert.failed") == 0)
        log_warn("certificate %s: %s", domain, msg);
    else
        log_info("certificate %s: %s", domain, msg);
    if (m->h.event)
        m->h.event(m->h.arg, domain, kind, msg);
}

/* Install cert+key and note its dates; -EINVAL with a message when the
 * PEM is unusable or expired. */
static int take(struct certmgr *m, struct mdom *d, const char *cert, const char *key, char *err,
                size_t errlen)
{
    struct tls_cert_info ci;
    if (tls_cert_info(cert, strlen(cert), &ci) < 0) {
        snprintf(err, errlen, "the certificate does not parse");
        return -EINVAL;
    }
    if (ci.not_after * 1000 <= (int64_t)wall_ms()) {
        snprintf(err, errlen, "the certificate expired");
        return -EINVAL;
    }
    if (!strstr(key, "PRIVATE KEY-----")) {
        snprintf(err, errlen, "the key does not parse");
        return -EINVAL;
    }
    m->h.install(m->h.arg, d->name, cert, key);
    pthread_mutex_lock(&m->lock);
    d->have = true;
    d->not_before = ci.not_before;
    d->not_after = ci.not_after;
    snprintf(d->issuer, sizeof(d->issuer), "%s", ci.issuer);
    pthread_mutex_unlock(&m->lock);
    return 0;
}

/* The first look at a domain: its stored certificate, if any. */
static void load_stored(struct certmgr *m, struct mdom *d)
{
    char dir[512], cp[512], kp[512], err[768];
    paths(m, d->name, dir, cp, kp, sizeof(dir));
    int e = 0;
    char *cert = slurp(cp, &e);
    if (!cert)
        return; /* none yet */
    char *key = slurp(kp, &e);
    int r = key ? take(m, d, cert, key, err, sizeof(err)) : -EINVAL;
    if (!key)
        snprintf(err, sizeof(err), "%s: %s", kp, strerror(-e));
    if (r < 0) {
        char msg[2048], aside[600];
        snprintf(aside, sizeof(aside), "%s.bad", cp);
        rename(cp, aside);
        snprintf(msg, sizeof(msg), "stored certificate unusable (%s); kept as %s, obtaining a new one",
                 err, aside);
        event(m, d->name, "cert.failed", msg);
    } else {
        char msg[300];
        struct tls_cert_info ci;
        tls_cert_info(cert, strlen(cert), &ci);
        time_t t = (time_t)ci.not_after;
        struct tm tm;
        char ts[32];
        gmtime_r(&t, &tm);
        strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
        snprintf(msg, sizeof(msg), "loaded from the state directory, valid until %s", ts);
        event(m, d->name, "cert.loaded", msg);
    }
    if (key)
        OPENSSL_cleanse(key, strlen(key));
    free(cert);
    free(key);
}

static void present(void *arg, const char *token, const char *ka)
{
    struct certmgr *m = arg;
    m->h.present(m->h.arg, token, ka);
}

static void cleanup(void *arg, const char *token)
{
    struct certmgr *m = arg;
    m->h.cleanup(m->h.arg, token);
}

/* One order for d; updates its state, stores and installs the result. */
static void obtain(struct certmgr *m, struct mdom *d, const char *email, const char *directory)
{
    char dir[512], cp[512], kp[512], acct[512], err[768] = "";
    paths(m, d->name, dir, cp, kp, sizeof(dir));
    snprintf(acct, sizeof(acct), "%s/account.key", m->dir);
    bool renewal = d->have;
    pthread_mutex_lock(&m->lock);
    d->st = renewal ? CERT_RENEWING : CERT_OBTAINING;
    pthread_mutex_unlock(&m->lock);
    struct acme_opts o = {
        .directory = directory,
        .ca_bundle = m->ca_bundle,
        .email = email,
        .account_key = acct,
        .present = present,
        .cleanup = cleanup,
        .arg = m,
        .stop = &m->stop,
    };
    const char *doms[1] = {d->name};
    char *cert = NULL, *key = NULL;
    int r = acme_obtain(&o, doms, 1, &cert, &key, err, sizeof(err));
    if (r == 0) {
        if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
            snprintf(err, sizeof(err), "%s: %s", dir, strerror(errno));
            r = -errno;
        } else if ((r = store_file(kp, key)) < 0 || (r = store_file(cp, cert)) < 0) {
            snprintf(err, sizeof(err), "cannot store the certificate in %s: %s", dir, strerror(-r));
        } else {
            r = take(m, d, cert, key, err, sizeof(err));
        }
    }
    if (key)
        OPENSSL_cleanse(key, strlen(key));
    free(cert);
    free(key);
    if (m->stop)
        return;
    pthread_mutex_lock(&m->lock);
    if (r == 0) {
        d->st = CERT_VALID;
        d->fails = 0;
        d->err[0] = '\0';
        d->next_ms = renew_at(d);
    } else {
        d->st = CERT_FAILING;
        d->fails++;
        uint64_t b = m->retry_min_ms;
        for (unsigned i = 1; i < d->fails && b < MAX_BACKOFF_MS; i++)
            b *= 2;
        if (b > MAX_BACKOFF_MS)
            b = MAX_BACKOFF_MS;
        b = b - b / 10 + jitter(b / 5 + 1); /* ±10 % */
        d->next_ms = wall_ms() + b;
        snprintf(d->err, sizeof(d->err), "%s", err);
    }
    pthread_mutex_unlock(&m->lock);
    if (r == 0) {
        char msg[300], ts[32];
        time_t t = (time_t)d->not_after;
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
        snprintf(msg, sizeof(msg), "%s, valid until %s", renewal ? "renewed" : "issued", ts);
        event(m, d->name, renewal ? "cert.renewed" : "cert.issued", msg);
    } else {
        char msg[1000];
        snprintf(msg, sizeof(msg), "%s%s; next attempt in %llu s", err,
                 renewal ? " (the current certificate stays in use)" : "",
                 (unsigned long long)((d->next_ms - wall_ms()) / 1000));
        event(m, d->name, "cert.failed", msg);
    }
}

static void *run(void *arg)
{
    struct certmgr *m = arg;
    pthread_mutex_lock(&m->lock);
    while (!m->stop) {
        uint64_t now = wall_ms(), soonest = UINT64_MAX;
        struct mdom *due = NULL;
        for (struct mdom *d = m->doms; d; d = d->next) {
            if (!d->wanted)
                continue;
            if (d->next_ms <= now && (!due || d->next_ms < due->next_ms))
                due = d;
            if (d->next_ms < soonest)
                soonest = d->next_ms;
        }
        if (!due) {
            if (soonest == UINT64_MAX) {
                pthread_cond_wait(&m->cond, &m->lock);
            } else {
                struct timespec ts;
                uint64_t wait = soonest - now;
                clock_gettime(CLOCK_REALTIME, &ts);
                ts.tv_sec += (time_t)(wait / 1000);
                ts.tv_nsec += (long)(wait % 1000) * 1000000;
                if (ts.tv_nsec >= 1000000000) {
                    ts.tv_sec++;
                    ts.tv_nsec -= 1000000000;
                }
                pthread_cond_timedwait(&m->cond, &m->lock, &ts);
            }
            continue;
        }
        /* Domains are never freed while the thread runs (unwanted ones are
         * only marked), so d stays valid without the lock. */
        struct mdom *d = due;
        char email[320], directory[1024];
        snprintf(email, sizeof(email), "%s", d->email ? d->email : "");
        snprintf(directory, sizeof(directory), "%s",
                 d->directory && !m->env_directory ? d->directory : m->directory);
        bool first = !d->loaded;
        d->loaded = true;
        d->next_ms = UINT64_MAX; /* being worked on */
        pthread_mutex_unlock(&m->lock);
        if (first)
            load_stored(m, d);
        bool need = !d->have || wall_ms() >= renew_at(d);
        if (need)
            obtain(m, d, email[0] ? email : NULL, directory);
        pthread_mutex_lock(&m->lock);
        if (!need) {
            d->st = CERT_VALID;
            d->next_ms = renew_at(d);
        }
    }
    pthread_mutex_unlock(&m->lock);
    return NULL;
}

struct certmgr *certmgr_new(const struct certmgr_opts *o, char *err, size_t errlen)
{
    if (mkdir(o->dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "%s: %s", o->dir, strerror(errno));
        return NULL;
    }
    struct certmgr *m = xcalloc(1, sizeof(*m));
    m->dir = xstrdup(o->dir);
    const char *ed = getenv("TAKO_ACME_DIRECTORY"), *eb = getenv("TAKO_ACME_CA_BUNDLE");
    m->directory = xstrdup(ed && *ed ? ed : o->directory ? o->directory : ACME_LETSENCRYPT);
    m->env_directory = ed && *ed;
    m->ca_bundle = eb && *eb ? xstrdup(eb) : o->ca_bundle ? xstrdup(o->ca_bundle) : NULL;
    m->retry_min_ms = o->retry_min_ms ? o->retry_min_ms : 5 * 60 * 1000;
    m->h = o->hooks;
    pthread_mutex_init(&m->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_cond_init(&m->cond, &ca);
    pthread_condattr_destroy(&ca);
    int r = pthread_create(&m->th, NULL, run, m);
    if (r != 0) {
        snprintf(err, errlen, "cannot start the certificate thread: %s", strerror(r));
        certmgr_free(m);
        return NULL;
    }
    return m;
}

void certmgr_set_domains(struct certmgr *m, const struct certmgr_domain *dd, size_t n)
{
    pthread_mutex_lock(&m->lock);
    for (struct mdom *d = m->doms; d; d = d->next)
        d->wanted = false;
    for (size_t i = 0; i < n; i++) {
        struct mdom *d = m->doms;
        while (d && strcasecmp(d->name, dd[i].name) != 0)
            d = d->next;
        if (!d) {
            d = xcalloc(1, sizeof(*d));
            d->name = xstrdup(dd[i].name);
            d->next = m->doms;
            m->doms = d;
        }
        /* email and directory are read by the thread under the lock only */
        free(d->email);
        d->email = dd[i].email ? xstrdup(dd[i].email) : NULL;
        free(d->directory);
        d->directory = dd[i].directory ? xstrdup(dd[i].directory) : NULL;
        if (!d->wanted && d->next_ms != UINT64_MAX && (!d->loaded || d->st == CERT_NONE))
            d->next_ms = 0;
        d->wanted = true;
    }
    pthread_cond_signal(&m->cond);
    pthread_mutex_unlock(&m->lock);
}

json_t *certmgr_status(struct certmgr *m)
{
    json_t *a = json_array();
    pthread_mutex_lock(&m->lock);
    for (struct mdom *d = m->doms; d; d = d->next) {
        if (!d->wanted)
            continue;
        json_t *j = json_object();
        json_object_set_new(j, "domain", json_string(d->name));
        json_object_set_new(j, "state", json_string(cert_state_name(d->st)));
        json_object_set_new(j, "source", json_string("acme"));
        if (d->have) {
            json_object_set_new(j, "not_after", json_integer(d->not_after));
            json_object_set_new(j, "issuer", json_string(d->issuer));
        }
        if (d->err[0])
            json_object_set_new(j, "error", json_string(d->err));
        if (d->next_ms != UINT64_MAX && d->next_ms)
            json_object_set_new(j, "next_attempt", json_integer((json_int_t)(d->next_ms / 1000)));
        json_array_append_new(a, j);
    }
    pthread_mutex_unlock(&m->lock);
    return a;
}

void certmgr_free(struct certmgr *m)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->lock);
    m->stop = true;
    pthread_cond_signal(&m->cond);
    pthread_mutex_unlock(&m->lock);
    if (m->th)
        pthread_join(m->th, NULL);
    for (struct mdom *d = m->doms, *n; d; d = n) {
        n = d->next;
        free(d->name);
        free(d->email);
        free(d->directory);
        free(d);
    }
    pthread_mutex_destroy(&m->lock);
    pthread_cond_destroy(&m->cond);
    free(m->dir);
    free(m->directory);
    free(m->ca_bundle);
    free(m);
}
