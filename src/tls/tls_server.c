/* tls_server.c — the certificate store chosen by SNI, the shared OpenSSL
 * server configuration, and rotating session-ticket keys. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "core/util.h"
#include "tls/tls.h"

#define TICKET_KEYS 2

struct ticket_key {
    unsigned char name[16];
    unsigned char aes[32];
    unsigned char hmac[32];
};

/* One installed certificate: its own SSL_CTX (so a swap never touches a
 * context a live connection holds) and the names it serves. */
struct cert_ent {
    char *id;
    SSL_CTX *ctx;
    char **names; /* lower case; "*.example.com" for wildcards */
    size_t nnames;
};

struct tls_server {
    SSL_CTX *front; /* every SSL starts here; SNI moves it to a cert's ctx */
    pthread_rwlock_t lock;
    struct cert_ent *certs;
    size_t ncerts;
    char *default_id;
    pthread_mutex_t tk_lock;
    struct ticket_key tk[TICKET_KEYS]; /* [0] encrypts; all decrypt */
};

static void set_err(char *err, size_t errlen, const char *what)
{
    char e[200];
    snprintf(err, errlen, "%s: %s", what, tls_last_error(e, sizeof(e)));
}

const char *tls_last_error(char *buf, size_t len)
{
    unsigned long e = ERR_get_error(), last = e;
    while (e) {
        last = e;
        e = ERR_get_error();
    }
    if (!last)
        snprintf(buf, len, "unknown error");
    else
        ERR_error_string_n(last, buf, len);
    return buf;
}

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned inlen, void *arg)
{
    (void)ssl;
    (void)arg;
    static const unsigned char h11[] = "http/1.1";
    /* in: length-prefixed list. Offer only http/1.1; a client asking for
     * something else only gets no ALPN (not a failed handshake), as curl and
     * browsers fall back to HTTP/1.1 then. */
    for (unsigned i = 0; i < inlen;) {
        unsigned l = in[i];
        if (i + 1 + l > inlen)
            break;
        if (l == 8 && memcmp(in + i + 1, h11, 8) == 0) {
            *out = in + i + 1;
            *outlen = 8;
            return SSL_TLSEXT_ERR_OK;
        }
        i += 1 + l;
    }
    return SSL_TLSEXT_ERR_NOACK;
}

/* The shared configuration of every context of the store. Protocol range
 * and cipher lists live in the SSL object (taken from the front context at
 * SSL_new), but a context switched in by SNI also contributes callbacks, so
 * all contexts get the same settings. */
static int ctx_configure(SSL_CTX *c)
{
    if (!SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION) ||
        !SSL_CTX_set_max_proto_version(c, TLS1_3_VERSION))
        return -EINVAL;
    if (!SSL_CTX_set_cipher_list(c, TLS_CIPHERS_INTERMEDIATE))
        return -EINVAL;
    if (!SSL_CTX_set1_groups_list(c, "X25519:prime256v1:secp384r1"))
        return -EINVAL;
    SSL_CTX_set_dh_auto(c, 1);
    /* Mozilla intermediate: the client chooses among equally strong
     * ciphers (it knows whether it has AES hardware) */
    SSL_CTX_set_options(c, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    /* Idle connections give their buffers back (memory per idle client). */
    SSL_CTX_set_mode(c, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                            SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* One recv takes a whole record (and what follows it) instead of its
     * 5-byte header first and its body next: a syscall less per request.
     * Bytes left inside OpenSSL are read before XC_RD is cleared
     * (xprt_tls.c), so none wait for an edge that never comes. */
    SSL_CTX_set_read_ahead(c, 1);
    /* Stateless tickets only: no server-side cache to grow or share. */
    SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(c, 1);
    SSL_CTX_set_alpn_select_cb(c, alpn_select, NULL);
    static const unsigned char sid[] = "tako";
    SSL_CTX_set_session_id_context(c, sid, sizeof(sid) - 1);
    return 0;
}

static void tk_fill(struct ticket_key *k)
{
    if (RAND_bytes((unsigned char *)k, sizeof(*k)) != 1)
        die(1, "tls: no randomness for session ticket keys");
}

/* OpenSSL's ticket hook (called on the front context for every ticket,
 * whatever context SNI chose). enc=1: fill name/iv and keys with the current
 * key. enc=0: find the key by name; 1 = ok, 2 = ok but renew the ticket
 * (older key, or TLS 1.3), 0 = unknown key (full handshake). */
static int ticket_cb(SSL *ssl, unsigned char key_name[16], unsigned char iv[16],
                     EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
    /* After SNI this is the certificate's context; every context of the
     * store points back at it. */
    struct tls_server *s = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    if (!s)
        return 0;
    struct ticket_key k;
    int ret = 1;
    pthread_mutex_lock(&s->tk_lock);
    if (enc) {
        k = s->tk[0];
    } else {
        int found = -1;
        for (int i = 0; i < TICKET_KEYS; i++)
            if (memcmp(key_name, s->tk[i].name, 16) == 0)
                found = i;
        if (found < 0) {
            pthread_mutex_unlock(&s->tk_lock);
            return 0;
        }
        k = s->tk[found];
        /* TLS 1.3 tickets are for one use (RFC 8446, C.4), and OpenSSL
         * sends a resumed connection a new one only when told to renew:
         * without it, every other connection of a client would be a full
         * handshake. */
        ret = found == 0 && SSL_version(ssl) != TLS1_3_VERSION ? 1 : 2;
    }
    pthread_mutex_unlock(&s->tk_lock);
    static char sha256[] = "SHA256";
    OSSL_PARAM params[3];
    params[0] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, k.hmac, sizeof(k.hmac));
    params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, sha256, 0);
    params[2] = OSSL_PARAM_construct_end();
    if (enc) {
        memcpy(key_name, k.name, 16);
        if (RAND_bytes(iv, 16) != 1)
            return -1;
        if (!EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k.aes, iv))
            return -1;
    } else {
        if (!EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k.aes, iv))
            return -1;
    }
    if (!EVP_MAC_CTX_set_params(hctx, params))
        return -1;
    OPENSSL_cleanse(&k, sizeof(k));
    return ret;
}

/* SNI: move the connection to the context of the certificate that names the
 * host, or the default. No certificate at all: fail the handshake. */
static int sni_cb(SSL *ssl, int *alert, void *arg)
{
    struct tls_server *s = arg;
    const char *host = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    int rc = SSL_TLSEXT_ERR_OK;
    pthread_rwlock_rdlock(&s->lock);
    struct cert_ent *best = NULL;
    if (host) {
        size_t hl = strlen(host);
        const char *dot = strchr(host, '.');
        for (size_t i = 0; i < s->ncerts && !best; i++)
            for (size_t j = 0; j < s->certs[i].nnames; j++) {
                const char *n = s->certs[i].names[j];
                if (strcasecmp(n, host) == 0 ||
                    (n[0] == '*' && dot && strcasecmp(n + 1, dot) == 0 && hl > 0)) {
                    best = &s->certs[i];
                    break;
                }
            }
    }
    if (!best && s->default_id)
        for (size_t i = 0; i < s->ncerts; i++)
            if (strcmp(s->certs[i].id, s->default_id) == 0)
                best = &s->certs[i];
    if (best)
        SSL_set_SSL_CTX(ssl, best->ctx); /* takes its own reference */
    else {
        *alert = SSL_AD_UNRECOGNIZED_NAME;
        rc = SSL_TLSEXT_ERR_ALERT_FATAL;
    }
    pthread_rwlock_unlock(&s->lock);
    return rc;
}

struct tls_server *tls_server_new(char *err, size_t errlen)
{
    struct tls_server *s = xcalloc(1, sizeof(*s));
    pthread_rwlock_init(&s->lock, NULL);
    pthread_mutex_init(&s->tk_lock, NULL);
    for (int i = 0; i < TICKET_KEYS; i++)
        tk_fill(&s->tk[i]);
    s->front = SSL_CTX_new(TLS_server_method());
    if (!s->front || ctx_configure(s->front) < 0) {
        set_err(err, errlen, "TLS setup");
        tls_server_free(s);
        return NULL;
    }
    SSL_CTX_set_app_data(s->front, s);
    SSL_CTX_set_tlsext_servername_callback(s->front, sni_cb);
    SSL_CTX_set_tlsext_servername_arg(s->front, s);
    SSL_CTX_set_tlsext_ticket_key_evp_cb(s->front, ticket_cb);
    return s;
}

static void ent_free(struct cert_ent *e)
{
    free(e->id);
    SSL_CTX_free(e->ctx);
    for (size_t i = 0; i < e->nnames; i++)
        free(e->names[i]);
    free(e->names);
}

void tls_server_free(struct tls_server *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->ncerts; i++)
        ent_free(&s->certs[i]);
    free(s->certs);
    free(s->default_id);
    SSL_CTX_free(s->front);
    OPENSSL_cleanse(s->tk, sizeof(s->tk));
    pthread_rwlock_destroy(&s->lock);
    pthread_mutex_destroy(&s->tk_lock);
    free(s);
}

static void add_name(struct cert_ent *e, const char *n, size_t len)
{
    if (len == 0 || len > 253)
        return;
    for (size_t i = 0; i < e->nnames; i++)
        if (strlen(e->names[i]) == len && strncasecmp(e->names[i], n, len) == 0)
            return;
    char *c = xstrndup(n, len);
    for (char *q = c; *q; q++)
        if (*q >= 'A' && *q <= 'Z')
            *q = (char)(*q - 'A' + 'a');
    e->names = xrealloc(e->names, (e->nnames + 1) * sizeof(char *));
    e->names[e->nnames++] = c;
}

static void collect_names(X509 *x, struct cert_ent *e)
{
    GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    if (gens) {
        for (int i = 0; i < sk_GENERAL_NAME_num(gens); i++) {
            const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
            if (g->type == GEN_DNS)
                add_name(e, (const char *)ASN1_STRING_get0_data(g->d.dNSName),
                         (size_t)ASN1_STRING_length(g->d.dNSName));
        }
        GENERAL_NAMES_free(gens);
    }
    if (e->nnames == 0) {
        char cn[256];
        int n = X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn,
                                          sizeof(cn));
        if (n > 0)
            add_name(e, cn, (size_t)n);
    }
}

int tls_server_set_cert(struct tls_server *s, const char *id, const char *cert_pem,
                        size_t cert_len, const char *key_pem, size_t key_len, char *err,
                        size_t errlen)
{
    int rc = -EINVAL;
    struct cert_ent e = {0};
    BIO *cb = NULL, *kb = NULL;
    X509 *leaf = NULL;
    EVP_PKEY *key = NULL;
    ERR_clear_error();
    if (cert_len > INT32_MAX || key_len > INT32_MAX) {
        snprintf(err, errlen, "certificate or key too large");
        return -EINVAL;
    }
    cb = BIO_new_mem_buf(cert_pem, (int)cert_len);
    kb = BIO_new_mem_buf(key_pem, (int)key_len);
    if (!cb || !kb) {
        set_err(err, errlen, "memory");
        goto out;
    }
    leaf = PEM_read_bio_X509(cb, NULL, NULL, NULL);
    if (!leaf) {
        set_err(err, errlen, "certificate does not parse as PEM");
        goto out;
    }
    key = PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL);
    if (!key) {
        set_err(err, errlen, "private key does not parse as PEM");
        goto out;
    }
    e.ctx = SSL_CTX_new(TLS_server_method());
    if (!e.ctx || ctx_configure(e.ctx) < 0) {
        set_err(err, errlen, "TLS setup");
        goto out;
    }
    SSL_CTX_set_app_data(e.ctx, s);
    if (!SSL_CTX_use_certificate(e.ctx, leaf)) {
        set_err(err, errlen, "certificate refused");
        goto out;
    }
    for (;;) { /* the chain after the leaf */
        X509 *ca = PEM_read_bio_X509(cb, NULL, NULL, NULL);
        if (!ca)
            break;
        if (!SSL_CTX_add0_chain_cert(e.ctx, ca)) {
            X509_free(ca);
            set_err(err, errlen, "chain certificate refused");
            goto out;
        }
    }
    ERR_clear_error(); /* the end of the chain reads as "no start line" */
    if (!SSL_CTX_use_PrivateKey(e.ctx, key) || !SSL_CTX_check_private_key(e.ctx)) {
        snprintf(err, errlen, "the private key does not match the certificate");
        ERR_clear_error();
        goto out;
    }
    collect_names(leaf, &e);
    if (e.nnames == 0) {
        snprintf(err, errlen, "the certificate names no host (no DNS subjectAltName or CN)");
        goto out;
    }
    e.id = xstrdup(id);
    pthread_rwlock_wrlock(&s->lock);
    size_t i = 0;
    while (i < s->ncerts && strcmp(s->certs[i].id, id) != 0)
        i++;
    struct cert_ent old = {0};
    if (i < s->ncerts) {
        old = s->certs[i];
        s->certs[i] = e;
    } else {
        s->certs = xrealloc(s->certs, (s->ncerts + 1) * sizeof(*s->certs));
        s->certs[s->ncerts++] = e;
    }
    if (!s->default_id)
        s->default_id = xstrdup(id);
    pthread_rwlock_unlock(&s->lock);
    memset(&e, 0, sizeof(e));
    if (old.id)
        ent_free(&old); /* live connections hold their own ref on old.ctx */
    rc = 0;
out:
    if (rc < 0)
        ent_free(&e);
    X509_free(leaf);
    EVP_PKEY_free(key);
    BIO_free(cb);
    BIO_free(kb);
    return rc;
}

static char *slurp(const char *path, size_t *len, int *errp)
{
    FILE *f = fopen(path, "re");
    if (!f) {
        *errp = -errno;
        return NULL;
    }
    size_t cap = 8192, n = 0;
    char *b = xmalloc(cap);
    for (;;) {
        size_t r = fread(b + n, 1, cap - n, f);
        n += r;
        if (n < cap)
            break;
        if (cap >= (1 << 20)) {
            fclose(f);
            free(b);
            *errp = -EFBIG;
            return NULL;
        }
        cap *= 2;
        b = xrealloc(b, cap);
    }
    fclose(f);
    *len = n;
    return b;
}

int tls_server_set_cert_files(struct tls_server *s, const char *id, const char *cert_path,
                              const char *key_path, char *err, size_t errlen)
{
    size_t cl = 0, kl = 0;
    int e = 0;
    char *c = slurp(cert_path, &cl, &e);
    if (!c) {
        snprintf(err, errlen, "%s: %s", cert_path, strerror(-e));
        return e;
    }
    char *k = slurp(key_path, &kl, &e);
    if (!k) {
        snprintf(err, errlen, "%s: %s", key_path, strerror(-e));
        free(c);
        return e;
    }
    char m[256];
    int r = tls_server_set_cert(s, id, c, cl, k, kl, m, sizeof(m));
    if (r < 0)
        snprintf(err, errlen, "%s: %s", cert_path, m);
    OPENSSL_cleanse(k, kl);
    free(c);
    free(k);
    return r;
}

int tls_server_del_cert(struct tls_server *s, const char *id)
{
    pthread_rwlock_wrlock(&s->lock);
    size_t i = 0;
    while (i < s->ncerts && strcmp(s->certs[i].id, id) != 0)
        i++;
    if (i == s->ncerts) {
        pthread_rwlock_unlock(&s->lock);
        return -ENOENT;
    }
    struct cert_ent old = s->certs[i];
    s->certs[i] = s->certs[--s->ncerts];
    if (s->default_id && strcmp(s->default_id, id) == 0) {
        free(s->default_id);
        s->default_id = s->ncerts ? xstrdup(s->certs[0].id) : NULL;
    }
    pthread_rwlock_unlock(&s->lock);
    ent_free(&old);
    return 0;
}

bool tls_server_has_name(struct tls_server *s, const char *host, size_t len)
{
    char h[254];
    if (len == 0 || len >= sizeof(h))
        return false;
    memcpy(h, host, len);
    h[len] = '\0';
    char *colon = strrchr(h, ':');
    if (colon && h[0] != '[')
        *colon = '\0';
    const char *dot = strchr(h, '.');
    bool found = false;
    pthread_rwlock_rdlock(&s->lock);
    for (size_t i = 0; i < s->ncerts && !found; i++)
        for (size_t j = 0; j < s->certs[i].nnames && !found; j++) {
            const char *n = s->certs[i].names[j];
            found = strcasecmp(n, h) == 0 || (n[0] == '*' && dot && strcasecmp(n + 1, dot) == 0);
        }
    pthread_rwlock_unlock(&s->lock);
    return found;
}

size_t tls_server_ncerts(struct tls_server *s)
{
    pthread_rwlock_rdlock(&s->lock);
    size_t n = s->ncerts;
    pthread_rwlock_unlock(&s->lock);
    return n;
}

void tls_server_rotate_tickets(struct tls_server *s)
{
    struct ticket_key k;
    tk_fill(&k);
    pthread_mutex_lock(&s->tk_lock);
    memmove(&s->tk[1], &s->tk[0], (TICKET_KEYS - 1) * sizeof(s->tk[0]));
    s->tk[0] = k;
    pthread_mutex_unlock(&s->tk_lock);
    OPENSSL_cleanse(&k, sizeof(k));
}

/* ---- the socket under a connection: a BIO of our own ----
 *
 * OpenSSL's socket BIO reads and writes with read(2) and write(2), which go
 * through the file layer first; recv(2) and send(2) go straight to the
 * socket (and send takes MSG_NOSIGNAL). Ours also notes, on every read,
 * whether the kernel buffer was drained (a short read), which is what the
 * transport needs to wait for the next epoll edge instead of a read that
 * would only say EAGAIN. */

struct sock_bio {
    int fd;
    bool *drained;
};

static int sock_bio_read(BIO *b, char *buf, size_t len, size_t *got)
{
    struct sock_bio *sb = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    ssize_t n;
    do
        n = recv(sb->fd, buf, len, 0);
    while (n == -1 && errno == EINTR);
    *sb->drained = n < (ssize_t)len;
    if (n > 0) {
        *got = (size_t)n;
        return 1;
    }
    *got = 0;
    if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
        BIO_set_retry_read(b);
    else if (n == 0)
        BIO_set_flags(b, BIO_FLAGS_IN_EOF);
    return 0;
}

static int sock_bio_write(BIO *b, const char *buf, size_t len, size_t *put)
{
    struct sock_bio *sb = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    ssize_t n;
    do
        n = send(sb->fd, buf, len, MSG_NOSIGNAL);
    while (n == -1 && errno == EINTR);
    if (n >= 0) {
        *put = (size_t)n;
        return 1;
    }
    *put = 0;
    if (errno == EAGAIN || errno == EWOULDBLOCK)
        BIO_set_retry_write(b);
    return 0;
}

static long sock_bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)num;
    struct sock_bio *sb = BIO_get_data(b);
    switch (cmd) {
    case BIO_CTRL_FLUSH:
        return 1; /* nothing is buffered here */
    case BIO_CTRL_EOF:
        return BIO_test_flags(b, BIO_FLAGS_IN_EOF) != 0;
    case BIO_C_GET_FD:
        if (ptr)
            *(int *)ptr = sb->fd;
        return sb->fd;
    default:
        return 0;
    }
}

static int sock_bio_destroy(BIO *b)
{
    free(BIO_get_data(b));
    BIO_set_data(b, NULL);
    return 1;
}

static BIO_METHOD *sock_bio_method;
static pthread_once_t sock_bio_once = PTHREAD_ONCE_INIT;

static void sock_bio_make(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK | BIO_TYPE_DESCRIPTOR,
                                 "tako socket");
    if (m && BIO_meth_set_read_ex(m, sock_bio_read) && BIO_meth_set_write_ex(m, sock_bio_write) &&
        BIO_meth_set_ctrl(m, sock_bio_ctrl) && BIO_meth_set_destroy(m, sock_bio_destroy)) {
        sock_bio_method = m;
        return;
    }
    BIO_meth_free(m);
}

SSL *tls_conn_new(struct tls_server *s, int fd, bool *drained)
{
    if (tls_server_ncerts(s) == 0)
        return NULL;
    pthread_once(&sock_bio_once, sock_bio_make);
    if (!sock_bio_method)
        return NULL;
    SSL *ssl = SSL_new(s->front);
    BIO *b = ssl ? BIO_new(sock_bio_method) : NULL;
    if (!b) {
        SSL_free(ssl);
        return NULL;
    }
    struct sock_bio *sb = xcalloc(1, sizeof(*sb));
    sb->fd = fd;
    sb->drained = drained;
    *drained = false;
    BIO_set_data(b, sb);
    BIO_set_init(b, 1);
    SSL_set_bio(ssl, b, b); /* one reference for both directions */
    SSL_set_accept_state(ssl);
    return ssl;
}
