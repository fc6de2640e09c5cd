/* proxy_tls.c — the proxy's HTTPS surface: TLS listeners over one
 * certificate store (src/tls), certificates in and out, HTTP → HTTPS
 * redirects and HSTS per listener, ticket key rotation, and the table of
 * ACME HTTP-01 tokens the plain listeners answer. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/util.h"
#include "proxy/proxy_int.h"
#include "tls/tls.h"

/* Session ticket keys: a new one this often; the previous one still
 * decrypts, so a ticket lives for up to two periods. */
#define TICKET_ROTATE_MS (12ull * 3600 * 1000)

struct tls_server *proxy__tls(struct proxy *p)
{
    pthread_mutex_lock(&p->lock);
    if (!p->tls) {
        char err[256];
        struct tls_server *t = tls_server_new(err, sizeof(err));
        if (!t)
            die(1, "proxy: %s", err);
        __atomic_store_n(&p->tls, t, __ATOMIC_RELEASE);
    }
    struct tls_server *t = p->tls;
    pthread_mutex_unlock(&p->lock);
    return t;
}

int proxy_listen_tls(struct proxy *p, const struct net_addr *addr, struct proxy_pool *default_pool)
{
    return proxy_listen_xprt(p, addr, default_pool, &xprt_tls, proxy__tls(p));
}

bool proxy__tls_has_name(struct proxy *p, const char *host, size_t len)
{
    /* p->tls is set once and never replaced before proxy_free */
    struct tls_server *t = __atomic_load_n(&p->tls, __ATOMIC_ACQUIRE);
    return t && tls_server_has_name(t, host, len);
}

int proxy_tls_set_cert(struct proxy *p, const char *id, const char *cert_pem, size_t cert_len,
                       const char *key_pem, size_t key_len, char *err, size_t errlen)
{
    return tls_server_set_cert(proxy__tls(p), id, cert_pem, cert_len, key_pem, key_len, err,
                               errlen);
}

int proxy_tls_set_cert_files(struct proxy *p, const char *id, const char *cert_path,
                             const char *key_path, char *err, size_t errlen)
{
    return tls_server_set_cert_files(proxy__tls(p), id, cert_path, key_path, err, errlen);
}

int proxy_tls_del_cert(struct proxy *p, const char *id)
{
    return tls_server_del_cert(proxy__tls(p), id);
}

bool proxy_tls_has_name(struct proxy *p, const char *host)
{
    return tls_server_has_name(proxy__tls(p), host, strlen(host));
}

static struct listener *find(struct proxy *p, const struct net_addr *a)
{
    for (struct listener *l = p->listeners; l; l = l->next)
        if (l->addr.len == a->len && memcmp(&l->addr.ss, &a->ss, a->len) == 0)
            return l;
    return NULL;
}

int proxy_listener_https_redirect(struct proxy *p, const struct net_addr *addr, unsigned https_port)
{
    if (https_port)
        proxy__tls(p); /* has_name must find a store */
    pthread_mutex_lock(&p->lock);
    struct listener *l = find(p, addr);
    if (l)
        atomic_store(&l->https_redirect, https_port);
    pthread_mutex_unlock(&p->lock);
    return l ? 0 : -ENOENT;
}

int proxy_listener_hsts(struct proxy *p, const struct net_addr *addr, uint64_t max_age_s)
{
    pthread_mutex_lock(&p->lock);
    struct listener *l = find(p, addr);
    if (l)
        atomic_store(&l->hsts, max_age_s);
    pthread_mutex_unlock(&p->lock);
    return l ? 0 : -ENOENT;
}

void proxy_challenge_set(struct proxy *p, const char *token, const char *keyauth)
{
    struct chal *c = xcalloc(1, sizeof(*c));
    c->token = xstrdup(token);
    c->keyauth = xstrdup(keyauth);
    pthread_mutex_lock(&p->chal_lock);
    c->next = p->chals;
    p->chals = c;
    atomic_fetch_add(&p->nchals, 1);
    pthread_mutex_unlock(&p->chal_lock);
}

void proxy_challenge_del(struct proxy *p, const char *token)
{
    pthread_mutex_lock(&p->chal_lock);
    for (struct chal **pp = &p->chals; *pp; pp = &(*pp)->next) {
        struct chal *c = *pp;
        if (strcmp(c->token, token) == 0) {
            *pp = c->next;
            atomic_fetch_sub(&p->nchals, 1);
            free(c->token);
            free(c->keyauth);
            free(c);
            break;
        }
    }
    pthread_mutex_unlock(&p->chal_lock);
}

bool proxy__challenge_get(struct proxy *p, const char *token, size_t len, char *buf, size_t cap)
{
    if (atomic_load_explicit(&p->nchals, memory_order_relaxed) == 0)
        return false;
    bool found = false;
    pthread_mutex_lock(&p->chal_lock);
    for (struct chal *c = p->chals; c && !found; c = c->next)
        if (strlen(c->token) == len && memcmp(c->token, token, len) == 0 &&
            strlen(c->keyauth) < cap) {
            strcpy(buf, c->keyauth);
            found = true;
        }
    pthread_mutex_unlock(&p->chal_lock);
    return found;
}

void proxy__tls_tick(struct proxy *p, uint64_t now_ms)
{
    if (!p->tickets_rotated) {
        p->tickets_rotated = now_ms;
        return;
    }
    if (now_ms - p->tickets_rotated < TICKET_ROTATE_MS)
        return;
    p->tickets_rotated = now_ms;
    pthread_mutex_lock(&p->lock);
    struct tls_server *t = p->tls;
    pthread_mutex_unlock(&p->lock);
    if (t)
        tls_server_rotate_tickets(t);
}

void proxy__tls_free(struct proxy *p)
{
    for (struct chal *c = p->chals, *n; c; c = n) {
        n = c->next;
        free(c->token);
        free(c->keyauth);
        free(c);
    }
    p->chals = NULL;
    tls_server_free(p->tls);
    p->tls = NULL;
    pthread_mutex_destroy(&p->chal_lock);
}
