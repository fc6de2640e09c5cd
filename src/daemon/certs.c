/* certs.c — takod's certificates: reads what the services want from the
 * reconciler once a second, feeds the ACME manager (src/acme) its domains,
 * loads own certificate files into the proxy and reloads them when they
 * change, and records the manager's events in the store. */
#include "daemon/certs.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include "acme/acme.h"
#include "core/ev.h"
#include "core/log.h"
#include "core/util.h"
#include "store/store.h"
#include "orch/orch.h"
#include "proxy/proxy.h"
#include "tls/tls.h"

#define CERTS_TICK_MS 1000

/* An own certificate file pair in use. */
struct ufile {
    char *cert, *key, *project, *service;
    struct timespec cmt, kmt;
    bool ok, seen;
    char err[512];
    struct tls_cert_info ci;
    struct ufile *next;
};

/* An event from the ACME thread waiting for the loop thread. */
struct qev {
    char *domain, *kind, *msg;
    struct qev *next;
};

struct takod_certs {
    struct ev_loop *loop;
    struct orch *orch;
    struct proxy *proxy;
    struct store *store;
    struct certmgr *mgr;
    struct ev_timer tick;
    char *acme_sig;
    json_t *wanted;   /* last orch_tls_wanted() */
    json_t *acme_ids; /* domains installed from ACME: {domain: true} */
    struct ufile *files;
    pthread_mutex_t qlock;
    struct qev *q, **qtail;
};

/* ---- hooks called on the ACME thread: proxy API (thread-safe) or queue ---- */

static void h_install(void *arg, const char *domain, const char *cert, const char *key)
{
    struct takod_certs *c = arg;
    char id[300], err[512];
    snprintf(id, sizeof(id), "acme:%s", domain);
    if (proxy_tls_set_cert(c->proxy, id, cert, strlen(cert), key, strlen(key), err, sizeof(err)) < 0)
        log_error("certificate %s: the proxy refused it: %s", domain, err);
}

static void h_present(void *arg, const char *token, const char *ka)
{
    struct takod_certs *c = arg;
    proxy_challenge_set(c->proxy, token, ka);
}

static void h_cleanup(void *arg, const char *token)
{
    struct takod_certs *c = arg;
    proxy_challenge_del(c->proxy, token);
}

static void h_event(void *arg, const char *domain, const char *kind, const char *msg)
{
    struct takod_certs *c = arg;
    struct qev *e = xcalloc(1, sizeof(*e));
    e->domain = xstrdup(domain);
    e->kind = xstrdup(kind);
    e->msg = xstrdup(msg);
    pthread_mutex_lock(&c->qlock);
    *c->qtail = e;
    c->qtail = &e->next;
    pthread_mutex_unlock(&c->qlock);
}

/* ---- the loop thread ---- */

/* The service that asked for domain (for the event's project/service). */
static json_t *owner(struct takod_certs *c, const char *domain)
{
    size_t i, k;
    json_t *w, *d;
    json_array_foreach(c->wanted, i, w)
        json_array_foreach(json_object_get(w, "domains"), k, d)
            if (strcasecmp(json_string_value(d), domain) == 0)
                return w;
    return NULL;
}

static void drain_events(struct takod_certs *c)
{
    pthread_mutex_lock(&c->qlock);
    struct qev *e = c->q;
    c->q = NULL;
    c->qtail = &c->q;
    pthread_mutex_unlock(&c->qlock);
    while (e) {
        struct qev *n = e->next;
        json_t *w = owner(c, e->domain);
        char *m = xasprintf("%s: %s", e->domain, e->msg);
        json_t *data = json_pack("{s:s}", "domain", e->domain); /* borrowed by the store */
        store_event(c->store, w ? json_string_value(json_object_get(w, "project")) : "",
                    w ? json_string_value(json_object_get(w, "service")) : "", e->kind, m, data, NULL, NULL);
        json_decref(data);
        free(m);
        free(e->domain);
        free(e->kind);
        free(e->msg);
        free(e);
        e = n;
    }
}

static bool same_time(const struct timespec *a, const struct timespec *b)
{
    return a->tv_sec == b->tv_sec && a->tv_nsec == b->tv_nsec;
}

/* Load (or reload when either file changed) one own certificate pair. */
static void file_refresh(struct takod_certs *c, struct ufile *f)
{
    struct stat cs, ks;
    if (stat(f->cert, &cs) != 0 || stat(f->key, &ks) != 0) {
        char e[512];
        snprintf(e, sizeof(e), "%s: %s", stat(f->cert, &cs) != 0 ? f->cert : f->key,
                 strerror(errno));
        if (strcmp(e, f->err) != 0) {
            snprintf(f->err, sizeof(f->err), "%s", e);
            log_warn("certificate %s: %s%s", f->cert, e, f->ok ? " (the loaded one stays in use)" : "");
            store_event(c->store, f->project, f->service, "cert.failed", e, NULL, NULL, NULL);
        }
        return;
    }
    if (f->seen && same_time(&cs.st_mtim, &f->cmt) && same_time(&ks.st_mtim, &f->kmt))
        return;
    f->seen = true;
    f->cmt = cs.st_mtim;
    f->kmt = ks.st_mtim;
    char id[4200], err[512];
    snprintf(id, sizeof(id), "file:%s", f->cert);
    if (proxy_tls_set_cert_files(c->proxy, id, f->cert, f->key, err, sizeof(err)) < 0) {
        snprintf(f->err, sizeof(f->err), "%s", err);
        char *m = xasprintf("%s%s", err, f->ok ? " (the loaded certificate stays in use)" : "");
        log_warn("certificate: %s", m);
        store_event(c->store, f->project, f->service, "cert.failed", m, NULL, NULL, NULL);
        free(m);
        return;
    }
    bool reload = f->ok;
    f->ok = true;
    f->err[0] = '\0';
    tls_cert_info_file(f->cert, &f->ci);
    char *m = xasprintf("%s %s (%s)", reload ? "reloaded" : "loaded", f->cert, f->ci.names);
    log_info("certificate: %s", m);
    store_event(c->store, f->project, f->service, reload ? "cert.reloaded" : "cert.loaded", m, NULL, NULL, NULL);
    free(m);
}

static void sync_wanted(struct takod_certs *c)
{
    json_t *w = orch_tls_wanted(c->orch);
    json_decref(c->wanted);
    c->wanted = w;
    /* ACME domains: one signature for "nothing changed" */
    size_t i, k, n = 0;
    json_t *s, *d;
    json_array_foreach(w, i, s)
        if (!json_object_get(s, "cert"))
            n += json_array_size(json_object_get(s, "domains"));
    struct certmgr_domain *dd = xcalloc(n + 1, sizeof(*dd));
    size_t nd = 0;
    char *sig = xstrdup("");
    json_t *now_ids = json_object();
    json_array_foreach(w, i, s) {
        if (json_object_get(s, "cert"))
            continue;
        json_array_foreach(json_object_get(s, "domains"), k, d) {
            dd[nd].name = json_string_value(d);
            dd[nd].email = json_string_value(json_object_get(s, "email"));
            dd[nd].directory = json_string_value(json_object_get(s, "acme"));
            char *ns = xasprintf("%s%s|%s|%s;", sig, dd[nd].name, dd[nd].email ? dd[nd].email : "",
                                 dd[nd].directory ? dd[nd].directory : "");
            free(sig);
            sig = ns;
            json_object_set_new(now_ids, dd[nd].name, json_true());
            nd++;
        }
    }
    if (!c->acme_sig || strcmp(sig, c->acme_sig) != 0) {
        certmgr_set_domains(c->mgr, dd, nd);
        /* a domain no longer wanted: its certificate leaves the proxy */
        const char *key;
        json_t *v;
        json_object_foreach(c->acme_ids, key, v)
            if (!json_object_get(now_ids, key)) {
                char id[300];
                snprintf(id, sizeof(id), "acme:%s", key);
                proxy_tls_del_cert(c->proxy, id);
            }
        json_decref(c->acme_ids);
        c->acme_ids = json_incref(now_ids);
        free(c->acme_sig);
        c->acme_sig = sig;
        sig = NULL;
    }
    json_decref(now_ids);
    free(sig);
    free(dd);
    /* own files: add new pairs, refresh all, drop the ones gone */
    struct ufile *keep = NULL;
    json_array_foreach(w, i, s) {
        const char *cp = json_string_value(json_object_get(s, "cert"));
        const char *kp = json_string_value(json_object_get(s, "key"));
        if (!cp || !kp)
            continue;
        struct ufile **pp = &c->files, *f = NULL;
        while (*pp) {
            if (strcmp((*pp)->cert, cp) == 0 && strcmp((*pp)->key, kp) == 0) {
                f = *pp;
                *pp = f->next;
                break;
            }
            pp = &(*pp)->next;
        }
        if (!f) {
            f = xcalloc(1, sizeof(*f));
            f->cert = xstrdup(cp);
            f->key = xstrdup(kp);
            f->project = xstrdup(json_string_value(json_object_get(s, "project")));
            f->service = xstrdup(json_string_value(json_object_get(s, "service")));
        }
        f->next = keep;
        keep = f;
        file_refresh(c, f);
    }
    for (struct ufile *f = c->files, *n2; f; f = n2) {
        n2 = f->next;
        char id[4200];
        snprintf(id, sizeof(id), "file:%s", f->cert);
        proxy_tls_del_cert(c->proxy, id);
        free(f->cert);
        free(f->key);
        free(f->project);
        free(f->service);
        free(f);
    }
    c->files = keep;
}

static void on_tick(struct ev_loop *loop, struct ev_timer *t)
{
    struct takod_certs *c = t->data;
    sync_wanted(c);
    drain_events(c);
    ev_timer_start(loop, t, CERTS_TICK_MS);
}

struct takod_certs *certs_new(struct ev_loop *loop, struct orch *orch, struct proxy *proxy,
                              struct store *store, const char *home, char *err, size_t errlen)
{
    struct takod_certs *c = xcalloc(1, sizeof(*c));
    c->loop = loop;
    c->orch = orch;
    c->proxy = proxy;
    c->store = store;
    c->acme_ids = json_object();
    c->wanted = json_array();
    pthread_mutex_init(&c->qlock, NULL);
    c->qtail = &c->q;
    char dir[4200];
    snprintf(dir, sizeof(dir), "%s/certs", home);
    uint64_t retry = 0;
    const char *rv = getenv("TAKO_ACME_RETRY_MIN");
    if (rv && *rv && parse_duration_ms(rv, &retry) < 0)
        log_warn("TAKO_ACME_RETRY_MIN=%s is not a duration; using the default", rv);
    struct certmgr_opts o = {
        .dir = dir,
        .retry_min_ms = retry,
        .hooks = {.install = h_install, .present = h_present, .cleanup = h_cleanup,
                  .event = h_event, .arg = c},
    };
    c->mgr = certmgr_new(&o, err, errlen);
    if (!c->mgr) {
        certs_free(c);
        return NULL;
    }
    ev_timer_init(&c->tick, on_tick, c);
    ev_timer_start(loop, &c->tick, 10);
    return c;
}

void certs_free(struct takod_certs *c)
{
    if (!c)
        return;
    if (c->loop)
        ev_timer_stop(c->loop, &c->tick);
    certmgr_free(c->mgr); /* joins the thread: no hook runs after this */
    c->mgr = NULL;
    drain_events(c);
    for (struct ufile *f = c->files, *n; f; f = n) {
        n = f->next;
        free(f->cert);
        free(f->key);
        free(f->project);
        free(f->service);
        free(f);
    }
    json_decref(c->wanted);
    json_decref(c->acme_ids);
    free(c->acme_sig);
    pthread_mutex_destroy(&c->qlock);
    free(c);
}

json_t *certs_status(struct takod_certs *c)
{
    json_t *arr = json_array();
    json_t *acme = certmgr_status(c->mgr);
    size_t i;
    json_t *v;
    json_array_foreach(acme, i, v) {
        json_t *w = owner(c, json_string_value(json_object_get(v, "domain")));
        if (w) {
            json_object_set(v, "project", json_object_get(w, "project"));
            json_object_set(v, "service", json_object_get(w, "service"));
        }
        json_array_append(arr, v);
    }
    json_decref(acme);
    int64_t now = (int64_t)time(NULL);
    for (struct ufile *f = c->files; f; f = f->next) {
        json_t *j = json_pack("{s:s,s:s,s:s,s:s}", "domain", f->ok ? f->ci.names : "-", "project",
                              f->project, "service", f->service, "source", "file");
        /* failing while a broken file is there, even if the last good
         * certificate is still served */
        const char *st = f->err[0] || !f->ok ? "failing" : f->ci.not_after <= now ? "expired" : "valid";
        json_object_set_new(j, "state", json_string(st));
        json_object_set_new(j, "file", json_string(f->cert));
        if (f->ok) {
            json_object_set_new(j, "not_after", json_integer(f->ci.not_after));
            json_object_set_new(j, "issuer", json_string(f->ci.issuer));
        }
        if (f->err[0])
            json_object_set_new(j, "error", json_string(f->err));
        json_array_append_new(arr, j);
    }
    return arr;
}

void certs_annotate_ps(struct takod_certs *c, json_t *services)
{
    json_t *all = certs_status(c);
    size_t i, k;
    json_t *s, *ce;
    json_array_foreach(services, i, s) {
        json_t *mine = json_array();
        json_array_foreach(all, k, ce) {
            const char *p = json_string_value(json_object_get(ce, "project"));
            const char *n = json_string_value(json_object_get(ce, "service"));
            if (p && n && strcmp(p, json_string_value(json_object_get(s, "project")) ?: "") == 0 &&
                strcmp(n, json_string_value(json_object_get(s, "service")) ?: "") == 0)
                json_array_append(mine, ce);
        }
        if (json_array_size(mine))
            json_object_set_new(s, "certificates", mine);
        else
            json_decref(mine);
    }
    json_decref(all);
}
