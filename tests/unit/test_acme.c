/* test_acme.c — the ACME client's crypto pieces: base64url, the account key
 * stored 0600 and read back, the RFC 7638 thumbprint, an ES256 JWS whose
 * signature OpenSSL verifies over exactly protected.payload, and a CSR that
 * names the domains; plus the certificate manager's state names. */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "acme/acme.h"
#include "unit.h"

TEST(b64url_vectors)
{
    /* RFC 4648 test vectors, URL alphabet, no padding */
    static const struct {
        const char *in, *out;
    } v[] = {{"", ""},         {"f", "Zg"},         {"fo", "Zm8"},          {"foo", "Zm9v"},
             {"foob", "Zm9vYg"}, {"fooba", "Zm9vYmE"}, {"foobar", "Zm9vYmFy"}};
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        char *o = acme_b64url((const unsigned char *)v[i].in, strlen(v[i].in));
        CHECK_STR(o, v[i].out);
        free(o);
    }
    const unsigned char raw[] = {0xfb, 0xff, 0xfe};
    char *o = acme_b64url(raw, 3);
    CHECK_STR(o, "-__-"); /* '-' and '_' instead of '+' and '/' */
    free(o);
}

static int b64url_decode(const char *s, unsigned char *out, size_t cap)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t n = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (; *s; s++) {
        const char *p = strchr(tab, *s);
        if (!p)
            return -1;
        acc = acc << 6 | (uint32_t)(p - tab);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (n == cap)
                return -1;
            out[n++] = (unsigned char)(acc >> bits);
        }
    }
    return (int)n;
}

TEST(account_key_made_0600_and_read_back)
{
    char dir[] = "/tmp/tako-acme-unit-XXXXXX";
    CHECK(mkdtemp(dir));
    char path[128], err[256];
    snprintf(path, sizeof(path), "%s/account.key", dir);
    EVP_PKEY *k1 = acme_key_load_or_create(path, err, sizeof(err));
    CHECK(k1);
    struct stat st;
    CHECK_INT(stat(path, &st), 0);
    CHECK_INT(st.st_mode & 0777, 0600);
    EVP_PKEY *k2 = acme_key_load_or_create(path, err, sizeof(err));
    CHECK(k2);
    char *t1 = acme_thumbprint(k1), *t2 = acme_thumbprint(k2);
    CHECK_STR(t1, t2); /* the same account on the next start */
    CHECK_INT(strlen(t1), 43); /* SHA-256, base64url without padding */
    free(t1);
    free(t2);
    EVP_PKEY_free(k1);
    EVP_PKEY_free(k2);
    /* a file that is not a key is an error naming it, never replaced */
    int fd = open(path, O_WRONLY | O_TRUNC);
    CHECK(write(fd, "junk\n", 5) == 5);
    close(fd);
    CHECK(acme_key_load_or_create(path, err, sizeof(err)) == NULL);
    CHECK_CONTAINS(err, path);
    CHECK_CONTAINS(err, "not an EC private key");
    unlink(path);
    rmdir(dir);
}

TEST(jwk_has_exactly_the_thumbprint_members)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    json_t *j = acme_jwk(k);
    CHECK(j);
    CHECK_INT(json_object_size(j), 4);
    CHECK_STR(json_string_value(json_object_get(j, "kty")), "EC");
    CHECK_STR(json_string_value(json_object_get(j, "crv")), "P-256");
    CHECK_INT(strlen(json_string_value(json_object_get(j, "x"))), 43);
    CHECK_INT(strlen(json_string_value(json_object_get(j, "y"))), 43);
    /* the thumbprint is SHA-256 over the members in lexical order */
    char *canon = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    unsigned char md[32];
    unsigned mdl = 0;
    EVP_Digest(canon, strlen(canon), md, &mdl, EVP_sha256(), NULL);
    char *want = acme_b64url(md, 32), *got = acme_thumbprint(k);
    CHECK_STR(got, want);
    free(canon);
    free(want);
    free(got);
    json_decref(j);
    EVP_PKEY_free(k);
}

TEST(jws_es256_verifies)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    char *s = acme_jws(k, NULL, "nonce-1", "https://ca.test/new-acct", "{\"a\":1}");
    CHECK(s);
    json_t *j = json_loads(s, 0, NULL);
    CHECK(j);
    const char *prot = json_string_value(json_object_get(j, "protected"));
    const char *pay = json_string_value(json_object_get(j, "payload"));
    const char *sig = json_string_value(json_object_get(j, "signature"));
    CHECK(prot && pay && sig);
    unsigned char buf[1024];
    int n = b64url_decode(prot, buf, sizeof(buf) - 1);
    CHECK(n > 0);
    buf[n] = '\0';
    json_t *ph = json_loads((char *)buf, 0, NULL);
    CHECK_STR(json_string_value(json_object_get(ph, "alg")), "ES256");
    CHECK_STR(json_string_value(json_object_get(ph, "nonce")), "nonce-1");
    CHECK_STR(json_string_value(json_object_get(ph, "url")), "https://ca.test/new-acct");
    CHECK(json_object_get(ph, "jwk") && !json_object_get(ph, "kid"));
    json_decref(ph);
    n = b64url_decode(pay, buf, sizeof(buf) - 1);
    buf[n] = '\0';
    CHECK_STR((char *)buf, "{\"a\":1}");
    /* r || s, 64 bytes, back to DER for OpenSSL's verifier */
    unsigned char rs[64];
    CHECK_INT(b64url_decode(sig, rs, sizeof(rs)), 64);
    ECDSA_SIG *es = ECDSA_SIG_new();
    ECDSA_SIG_set0(es, BN_bin2bn(rs, 32, NULL), BN_bin2bn(rs + 32, 32, NULL));
    unsigned char *der = NULL;
    int dl = i2d_ECDSA_SIG(es, &der);
    char *input = NULL;
    CHECK(asprintf(&input, "%s.%s", prot, pay) > 0);
    EVP_MD_CTX *mc = EVP_MD_CTX_new();
    CHECK(EVP_DigestVerifyInit(mc, NULL, EVP_sha256(), NULL, k) == 1);
    CHECK_INT(EVP_DigestVerify(mc, der, (size_t)dl, (unsigned char *)input, strlen(input)), 1);
    input[0] ^= 1; /* any other input fails */
    CHECK(EVP_DigestVerifyInit(mc, NULL, EVP_sha256(), NULL, k) == 1);
    CHECK(EVP_DigestVerify(mc, der, (size_t)dl, (unsigned char *)input, strlen(input)) != 1);
    EVP_MD_CTX_free(mc);
    free(input);
    OPENSSL_free(der);
    ECDSA_SIG_free(es);
    json_decref(j);
    free(s);
    /* with a kid: no jwk; POST-as-GET: empty payload */
    s = acme_jws(k, "https://ca.test/acct/1", "n2", "https://ca.test/order/1", NULL);
    j = json_loads(s, 0, NULL);
    CHECK_STR(json_string_value(json_object_get(j, "payload")), "");
    n = b64url_decode(json_string_value(json_object_get(j, "protected")), buf, sizeof(buf) - 1);
    buf[n] = '\0';
    ph = json_loads((char *)buf, 0, NULL);
    CHECK_STR(json_string_value(json_object_get(ph, "kid")), "https://ca.test/acct/1");
    CHECK(!json_object_get(ph, "jwk"));
    json_decref(ph);
    json_decref(j);
    free(s);
    EVP_PKEY_free(k);
}

TEST(csr_names_the_domains)
{
    const char *doms[] = {"a.test", "www.a.test"};
    EVP_PKEY *key = NULL;
    char *b64 = acme_csr(doms, 2, &key);
    CHECK(b64 && key);
    unsigned char der[2048];
    int n = b64url_decode(b64, der, sizeof(der));
    CHECK(n > 0);
    const unsigned char *p = der;
    X509_REQ *req = d2i_X509_REQ(NULL, &p, n);
    CHECK(req);
    CHECK_INT(X509_REQ_verify(req, key), 1); /* signed by the new key */
    STACK_OF(X509_EXTENSION) *exts = X509_REQ_get_extensions(req);
    GENERAL_NAMES *gens = NULL;
    for (int i = 0; i < sk_X509_EXTENSION_num(exts) && !gens; i++) {
        X509_EXTENSION *e = sk_X509_EXTENSION_value(exts, i);
        if (OBJ_obj2nid(X509_EXTENSION_get_object(e)) == NID_subject_alt_name)
            gens = X509V3_EXT_d2i(e);
    }
    CHECK(gens);
    CHECK_INT(sk_GENERAL_NAME_num(gens), 2);
    const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, 1);
    CHECK_INT(g->type, GEN_DNS);
    CHECK(memcmp(ASN1_STRING_get0_data(g->d.dNSName), "www.a.test", 10) == 0);
    GENERAL_NAMES_free(gens);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    X509_REQ_free(req);
    EVP_PKEY_free(key);
    free(b64);
}

TEST(cert_state_names)
{
    CHECK_STR(cert_state_name(CERT_NONE), "none");
    CHECK_STR(cert_state_name(CERT_OBTAINING), "obtaining");
    CHECK_STR(cert_state_name(CERT_VALID), "valid");
    CHECK_STR(cert_state_name(CERT_RENEWING), "renewing");
    CHECK_STR(cert_state_name(CERT_FAILING), "failing");
}
