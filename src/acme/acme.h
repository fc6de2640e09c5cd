/* acme.h — an ACME (RFC 8555) client: account, order, HTTP-01 challenge,
 * finalize with a CSR, certificate chain download; and the certificate
 * manager that keeps one certificate per domain valid (stored, renewed,
 * retried with backoff) on its own thread.
 *
 * acme_obtain blocks (libcurl, OpenSSL): call it from a thread of its own,
 * never from an event loop. Functions return 0 or -errno; messages go to
 * err (the CA's own error text when it sent one). See docs/https.md. */
#ifndef TAKO_ACME_ACME_H
#define TAKO_ACME_ACME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <openssl/evp.h>

#define ACME_LETSENCRYPT "https://acme-v02.api.letsencrypt.org/directory"
#define ACME_LETSENCRYPT_STAGING "https://acme-staging-v02.api.letsencrypt.org/directory"

/* HTTP-01: publish token → key authorization while the CA validates. */
typedef void (*acme_present_fn)(void *arg, const char *token, const char *keyauth);
typedef void (*acme_cleanup_fn)(void *arg, const char *token);

struct acme_opts {
    const char *directory;   /* directory URL */
    const char *ca_bundle;   /* NULL: the system's trust store */
    const char *email;       /* account contact; NULL: none */
    const char *account_key; /* path of the account key (made, mode 0600, if missing) */
    acme_present_fn present;
    acme_cleanup_fn cleanup;
    void *arg;
    uint64_t timeout_ms;     /* whole order (default 120 s) */
    const volatile bool *stop; /* set from another thread: give up (-ECANCELED) */
};

/* Run one order for `domains` to the end. On success *cert_pem is the chain
 * (leaf first) and *key_pem the new certificate key (PKCS#8), both heap
 * strings the caller frees. */
int acme_obtain(const struct acme_opts *o, const char *const *domains, size_t n,
                char **cert_pem, char **key_pem, char *err, size_t errlen);

/* ---- JWS / keys (acme_jws.c) ---- */

/* base64url without padding; heap string. */
char *acme_b64url(const unsigned char *p, size_t n);
/* Load an EC P-256 key from path, or make one and store it there mode 0600. */
EVP_PKEY *acme_key_load_or_create(const char *path, char *err, size_t errlen);
/* {"crv","kty","x","y"} of the key (new reference) and its RFC 7638
 * thumbprint (base64url, heap). */
json_t *acme_jwk(EVP_PKEY *key);
char *acme_thumbprint(EVP_PKEY *key);
/* A flattened JWS (ES256) over payload (NULL: POST-as-GET, empty payload),
 * with kid when given, else the jwk. Heap JSON text. */
char *acme_jws(EVP_PKEY *key, const char *kid, const char *nonce, const char *url,
               const char *payload);
/* A DER CSR for domains with a new P-256 key; base64url (heap), *key_out
 * owned by the caller. */
char *acme_csr(const char *const *domains, size_t n, EVP_PKEY **key_out);

/* ---- certificate manager (certmgr.c) ---- */

struct certmgr;

enum cert_state { CERT_NONE, CERT_OBTAINING, CERT_VALID, CERT_RENEWING, CERT_FAILING };
const char *cert_state_name(enum cert_state s);

struct certmgr_hooks {
    /* a certificate to serve (new, renewed, or loaded from the store) */
    void (*install)(void *arg, const char *domain, const char *cert_pem, const char *key_pem);
    acme_present_fn present;
    acme_cleanup_fn cleanup;
    /* an event worth recording: kind "cert.issued", "cert.renewed",
     * "cert.failed", "cert.loaded"; message carries the CA's text */
    void (*event)(void *arg, const char *domain, const char *kind, const char *message);
    void *arg;
};

struct certmgr_opts {
    const char *dir;          /* state: <dir>/<domain>/{cert.pem,key.pem}, account.key */
    const char *directory;    /* default ACME directory (env TAKO_ACME_DIRECTORY wins) */
    const char *ca_bundle;    /* env TAKO_ACME_CA_BUNDLE wins */
    uint64_t retry_min_ms;    /* first retry after a failure (5 min); doubles to 24 h */
    struct certmgr_hooks hooks;
};

struct certmgr_domain {
    const char *name;
    const char *email;
    const char *directory; /* NULL: the manager's */
};

/* Start the manager thread. NULL with a message when the directory cannot
 * be created. */
struct certmgr *certmgr_new(const struct certmgr_opts *o, char *err, size_t errlen);
/* Replace the set of domains to keep certificates for (copied). Domains
 * that stay keep their state; new ones are looked at now. */
void certmgr_set_domains(struct certmgr *m, const struct certmgr_domain *d, size_t n);
/* [{domain, state, not_after, issuer, error, next_attempt}] (new reference). */
json_t *certmgr_status(struct certmgr *m);
/* Stop the thread (an order in progress is given up at its next step). */
void certmgr_free(struct certmgr *m);

#endif
