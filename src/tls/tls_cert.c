/* tls_cert.c — certificates as data: what a PEM certificate says (names,
 * validity), and self-signed certificates for tests and placeholders. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/asn1.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "core/util.h"
#include "tls/tls.h"

static int64_t asn1_time_unix(const ASN1_TIME *t)
{
    struct tm tm;
    if (!t || !ASN1_TIME_to_tm(t, &tm))
        return 0;
    return (int64_t)timegm(&tm);
}

static int info_of(X509 *x, struct tls_cert_info *out)
{
    memset(out, 0, sizeof(*out));
    out->not_before = asn1_time_unix(X509_get0_notBefore(x));
    out->not_after = asn1_time_unix(X509_get0_notAfter(x));
    X509_NAME_oneline(X509_get_subject_name(x), out->subject, sizeof(out->subject));
    X509_NAME_oneline(X509_get_issuer_name(x), out->issuer, sizeof(out->issuer));
    GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    size_t off = 0;
    for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        if (g->type != GEN_DNS)
            continue;
        int n = snprintf(out->names + off, sizeof(out->names) - off, "%s%.*s", off ? "," : "",
                         ASN1_STRING_length(g->d.dNSName),
                         (const char *)ASN1_STRING_get0_data(g->d.dNSName));
        if (n < 0 || (size_t)n >= sizeof(out->names) - off)
            break;
        off += (size_t)n;
    }
    GENERAL_NAMES_free(gens);
    return 0;
}

int tls_cert_info(const char *pem, size_t len, struct tls_cert_info *out)
{
    if (len > INT32_MAX)
        return -EINVAL;
    BIO *b = BIO_new_mem_buf(pem, (int)len);
    if (!b)
        return -ENOMEM;
    X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
    BIO_free(b);
    if (!x) {
        ERR_clear_error();
        return -EINVAL;
    }
    info_of(x, out);
    X509_free(x);
    return 0;
}

int tls_cert_info_file(const char *path, struct tls_cert_info *out)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return -errno;
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    if (!x) {
        ERR_clear_error();
        return -EINVAL;
    }
    info_of(x, out);
    X509_free(x);
    return 0;
}

static char *bio_string(BIO *b)
{
    char *p = NULL;
    long n = BIO_get_mem_data(b, &p);
    return xstrndup(p, n > 0 ? (size_t)n : 0);
}

int tls_selfsigned(const char *names, int days, char **cert_pem, char **key_pem)
{
    int rc = -EINVAL;
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    BIO *cb = BIO_new(BIO_s_mem()), *kb = BIO_new(BIO_s_mem());
    char *san = NULL;
    if (!key || !x || !cb || !kb)
        goto out;
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), (long)(time(NULL) & 0x7fffffff));
    long secs = (long)days * 86400;
    if (days >= 0) {
        X509_gmtime_adj(X509_getm_notBefore(x), -3600);
        X509_gmtime_adj(X509_getm_notAfter(x), secs);
    } else {
        X509_gmtime_adj(X509_getm_notBefore(x), secs - 86400);
        X509_gmtime_adj(X509_getm_notAfter(x), secs);
    }
    X509_set_pubkey(x, key);
    char first[256];
    snprintf(first, sizeof(first), "%s", names);
    char *comma = strchr(first, ',');
    if (comma)
        *comma = '\0';
    X509_NAME *nm = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_ASC, (const unsigned char *)first, -1, -1, 0);
    X509_set_issuer_name(x, nm);
    /* "DNS:a,DNS:b" */
    size_t cap = strlen(names) * 2 + 16;
    san = xmalloc(cap);
    size_t off = 0;
    const char *p = names;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        off += (size_t)snprintf(san + off, cap - off, "%sDNS:%.*s", off ? "," : "", (int)l, p);
        p += l + (e ? 1 : 0);
    }
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, san);
    if (!ext)
        goto out;
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    if (!X509_sign(x, key, EVP_sha256()))
        goto out;
    if (!PEM_write_bio_X509(cb, x) || !PEM_write_bio_PrivateKey(kb, key, NULL, NULL, 0, NULL, NULL))
        goto out;
    *cert_pem = bio_string(cb);
    *key_pem = bio_string(kb);
    rc = 0;
out:
    ERR_clear_error();
    free(san);
    BIO_free(cb);
    BIO_free(kb);
    X509_free(x);
    EVP_PKEY_free(key);
    return rc;
}
