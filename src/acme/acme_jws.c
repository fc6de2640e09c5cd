/* acme_jws.c — the ACME account key (EC P-256), its JWK and thumbprint,
 * ES256 flattened JWS, and the CSR of a new certificate key. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "acme/acme.h"
#include "core/util.h"
#include "tls/tls.h"

char *acme_b64url(const unsigned char *p, size_t n)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    char *o = xmalloc(n * 4 / 3 + 4);
    size_t j = 0, i = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        o[j++] = tab[v >> 18];
        o[j++] = tab[(v >> 12) & 63];
        o[j++] = tab[(v >> 6) & 63];
        o[j++] = tab[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)p[i] << 16;
        o[j++] = tab[v >> 18];
        o[j++] = tab[(v >> 12) & 63];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
        o[j++] = tab[v >> 18];
        o[j++] = tab[(v >> 12) & 63];
        o[j++] = tab[(v >> 6) & 63];
    }
    o[j] = '\0';
    return o;
}

EVP_PKEY *acme_key_load_or_create(const char *path, char *err, size_t errlen)
{
    char e[200];
    FILE *f = fopen(path, "re");
    if (f) {
        EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
        fclose(f);
        if (!k || EVP_PKEY_get_base_id(k) != EVP_PKEY_EC) {
            snprintf(err, errlen, "%s: not an EC private key in PEM (%s); move it away to make a new one",
                     path, tls_last_error(e, sizeof(e)));
            EVP_PKEY_free(k);
            return NULL;
        }
        return k;
    }
    if (errno != ENOENT) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    EVP_PKEY *k = EVP_EC_gen("P-256");
    if (!k) {
        snprintf(err, errlen, "cannot make a key: %s", tls_last_error(e, sizeof(e)));
        return NULL;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    FILE *w = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!w || !PEM_write_PrivateKey(w, k, NULL, NULL, 0, NULL, NULL) || fflush(w) != 0 ||
        fsync(fileno(w)) != 0) {
        snprintf(err, errlen, "%s: cannot store the key: %s", path, strerror(errno));
        if (w)
            fclose(w);
        else if (fd >= 0)
            close(fd);
        unlink(path);
        EVP_PKEY_free(k);
        return NULL;
    }
    fclose(w);
    return k;
}

/* x and y of the public point (32 bytes each). */
static int ec_xy(EVP_PKEY *key, unsigned char x[32], unsigned char y[32])
{
    unsigned char pt[65];
    size_t len = 0;
    if (!EVP_PKEY_get_octet_string_param(key, OSSL_PKEY_PARAM_PUB_KEY, pt, sizeof(pt), &len) ||
        len != 65 || pt[0] != 4)
        return -EINVAL;
    memcpy(x, pt + 1, 32);
    memcpy(y, pt + 33, 32);
    return 0;
}

json_t *acme_jwk(EVP_PKEY *key)
{
    unsigned char x[32], y[32];
    if (ec_xy(key, x, y) < 0)
        return NULL;
    char *xs = acme_b64url(x, 32), *ys = acme_b64url(y, 32);
    json_t *j = json_pack("{s:s,s:s,s:s,s:s}", "crv", "P-256", "kty", "EC", "x", xs, "y", ys);
    free(xs);
    free(ys);
    return j;
}

char *acme_thumbprint(EVP_PKEY *key)
{
    unsigned char x[32], y[32], md[32];
    if (ec_xy(key, x, y) < 0)
        return NULL;
    char *xs = acme_b64url(x, 32), *ys = acme_b64url(y, 32);
    /* RFC 7638: the required members in lexical order, no white space. */
    char *s = xasprintf("{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}", xs, ys);
    unsigned mdlen = 0;
    EVP_Digest(s, strlen(s), md, &mdlen, EVP_sha256(), NULL);
    free(xs);
    free(ys);
    free(s);
    return acme_b64url(md, 32);
}

/* ES256: the DER ECDSA signature turned into r || s, 32 bytes each. */
static char *es256(EVP_PKEY *key, const char *msg)
{
    EVP_MD_CTX *mc = EVP_MD_CTX_new();
    unsigned char der[80];
    size_t dlen = sizeof(der);
    char *out = NULL;
    if (!mc || !EVP_DigestSignInit(mc, NULL, EVP_sha256(), NULL, key) ||
        !EVP_DigestSign(mc, der, &dlen, (const unsigned char *)msg, strlen(msg)))
        goto done;
    const unsigned char *p = der;
    ECDSA_SIG *sig = d2i_ECDSA_SIG(NULL, &p, (long)dlen);
    if (!sig)
        goto done;
    unsigned char raw[64];
    const BIGNUM *r, *s;
    ECDSA_SIG_get0(sig, &r, &s);
    if (BN_bn2binpad(r, raw, 32) == 32 && BN_bn2binpad(s, raw + 32, 32) == 32)
        out = acme_b64url(raw, 64);
    ECDSA_SIG_free(sig);
done:
    EVP_MD_CTX_free(mc);
    ERR_clear_error();
    return out;
}

char *acme_jws(EVP_PKEY *key, const char *kid, const char *nonce, const char *url,
               const char *payload)
{
    json_t *prot = json_pack("{s:s,s:s,s:s}", "alg", "ES256", "nonce", nonce, "url", url);
    if (kid)
        json_object_set_new(prot, "kid", json_string(kid));
    else
        json_object_set_new(prot, "jwk", acme_jwk(key));
    char *ps = json_dumps(prot, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(prot);
    char *p64 = acme_b64url((const unsigned char *)ps, strlen(ps));
    char *b64 = payload ? acme_b64url((const unsigned char *)payload, strlen(payload)) : xstrdup("");
    char *input = xasprintf("%s.%s", p64, b64);
    char *sig = es256(key, input);
    char *out = NULL;
    if (sig) {
        json_t *j = json_pack("{s:s,s:s,s:s}", "protected", p64, "payload", b64, "signature", sig);
        out = json_dumps(j, JSON_COMPACT);
        json_decref(j);
    }
    free(ps);
    free(p64);
    free(b64);
    free(input);
    free(sig);
    return out;
}

char *acme_csr(const char *const *domains, size_t n, EVP_PKEY **key_out)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509_REQ *req = X509_REQ_new();
    char *out = NULL, *san = NULL;
    STACK_OF(X509_EXTENSION) *exts = NULL;
    if (!key || !req || n == 0)
        goto done;
    X509_REQ_set_version(req, 0);
    X509_NAME *nm = X509_REQ_get_subject_name(req);
    X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_ASC, (const unsigned char *)domains[0], -1, -1, 0);
    size_t cap = 16;
    for (size_t i = 0; i < n; i++)
        cap += strlen(domains[i]) + 5;
    san = xmalloc(cap);
    size_t off = 0;
    for (size_t i = 0; i < n; i++)
        off += (size_t)snprintf(san + off, cap - off, "%sDNS:%s", i ? "," : "", domains[i]);
    exts = sk_X509_EXTENSION_new_null();
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, san);
    if (!exts || !ext) {
        X509_EXTENSION_free(ext);
        goto done;
    }
    sk_X509_EXTENSION_push(exts, ext);
    if (!X509_REQ_add_extensions(req, exts) || !X509_REQ_set_pubkey(req, key) ||
        !X509_REQ_sign(req, key, EVP_sha256()))
        goto done;
    unsigned char *der = NULL;
    int dl = i2d_X509_REQ(req, &der);
    if (dl <= 0)
        goto done;
    out = acme_b64url(der, (size_t)dl);
    OPENSSL_free(der);
    *key_out = key;
    key = NULL;
done:
    ERR_clear_error();
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    free(san);
    X509_REQ_free(req);
    EVP_PKEY_free(key);
    return out;
}
