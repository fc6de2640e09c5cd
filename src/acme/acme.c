/* acme.c — one ACME (RFC 8555) order from start to chain: directory,
 * nonces (badNonce retried), account by key, order, HTTP-01 challenges,
 * finalize with a CSR, certificate download. Blocking, over libcurl. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/pem.h>

#include "acme/acme.h"
#include "core/log.h"
#include "core/util.h"

#define MAX_BODY (1 << 20)

struct buf {
    char *p;
    size_t n;
};

struct resp {
    long status;
    struct buf body;
    char nonce[128];
    char location[1024];
    unsigned retry_after; /* seconds, 0 = none */
};

struct acme {
    const struct acme_opts *o;
    CURL *curl;
    EVP_PKEY *key;
    char *kid;
    char *thumb;
    char nonce[128];
    json_t *dir;
    uint64_t deadline;
    char *err;
    size_t errlen;
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static size_t on_body(char *p, size_t sz, size_t nm, void *arg)
{
    struct buf *b = arg;
    size_t n = sz * nm;
    if (b->n + n > MAX_BODY)
        return 0; /* aborts the transfer */
    b->p = xrealloc(b->p, b->n + n + 1);
    memcpy(b->p + b->n, p, n);
    b->n += n;
    b->p[b->n] = '\0';
    return n;
}

static void header_value(const char *h, size_t n, const char *name, char *out, size_t outlen)
{
    size_t nl = strlen(name);
    if (n <= nl + 1 || strncasecmp(h, name, nl) != 0 || h[nl] != ':')
        return;
    const char *v = h + nl + 1;
    const char *e = h + n;
    while (v < e && (*v == ' ' || *v == '\t'))
        v++;
    while (e > v && (e[-1] == '\r' || e[-1] == '\n' || e[-1] == ' '))
        e--;
    snprintf(out, outlen, "%.*s", (int)(e - v), v);
}

static int on_progress(void *arg, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
    (void)a;
    (void)b;
    (void)c;
    (void)d;
    const volatile bool *stop = arg;
    return stop && *stop ? 1 : 0;
}

static size_t on_header(char *p, size_t sz, size_t nm, void *arg)
{
    struct resp *r = arg;
    size_t n = sz * nm;
    header_value(p, n, "Replay-Nonce", r->nonce, sizeof(r->nonce));
    header_value(p, n, "Location", r->location, sizeof(r->location));
    char ra[32] = "";
    header_value(p, n, "Retry-After", ra, sizeof(ra));
    if (ra[0])
        r->retry_after = (unsigned)strtoul(ra, NULL, 10);
    return n;
}

static void resp_free(struct resp *r)
{
    free(r->body.p);
    memset(r, 0, sizeof(*r));
}

/* One HTTP exchange. body NULL: GET (or HEAD with head=true). */
static int http(struct acme *a, const char *url, const char *body, bool head, struct resp *r)
{
    memset(r, 0, sizeof(*r));
    CURL *c = a->curl;
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https,http");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 30000L);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "tako/" TAKO_VERSION);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r->body);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, a->o->stop);
    if (a->o->ca_bundle)
        curl_easy_setopt(c, CURLOPT_CAINFO, a->o->ca_bundle);
    struct curl_slist *h = NULL;
    if (body) {
        h = curl_slist_append(h, "Content-Type: application/jose+json");
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    } else if (head) {
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    }
    h = curl_slist_append(h, "Accept: application/json, application/pem-certificate-chain");
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    char detail[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, detail);
    CURLcode cr = curl_easy_perform(c);
    curl_slist_free_all(h);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, NULL);
    if (cr != CURLE_OK) {
        snprintf(a->err, a->errlen, "cannot reach the ACME server at %s: %s%s%s%s", url,
                 curl_easy_strerror(cr), detail[0] ? " (" : "", detail, detail[0] ? ")" : "");
        resp_free(r);
        return -EHOSTUNREACH;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    if (r->nonce[0])
        snprintf(a->nonce, sizeof(a->nonce), "%s", r->nonce);
    return 0;
}

/* The CA's problem document as one line: "detail (type)" plus subproblems. */
static void problem(struct acme *a, const char *what, const struct resp *r)
{
    json_t *j = r->body.p ? json_loads(r->body.p, 0, NULL) : NULL;
    const char *type = json_string_value(json_object_get(j, "type"));
    const char *detail = json_string_value(json_object_get(j, "detail"));
    if (detail)
        snprintf(a->err, a->errlen, "%s: the CA answered %ld: %s (%s)", what, r->status, detail,
                 type ? type : "no type");
    else
        snprintf(a->err, a->errlen, "%s: the CA answered %ld", what, r->status);
    json_decref(j);
}

static bool is_bad_nonce(const struct resp *r)
{
    if (r->status != 400 || !r->body.p)
        return false;
    return strstr(r->body.p, "urn:ietf:params:acme:error:badNonce") != NULL;
}

/* A signed POST; retried with a fresh nonce on badNonce (RFC 8555 6.5). */
static int post(struct acme *a, const char *url, const char *payload, bool use_kid,
                struct resp *r)
{
    for (int attempt = 0; attempt < 5; attempt++) {
        if (!a->nonce[0]) {
            struct resp nr;
            const char *nu = json_string_value(json_object_get(a->dir, "newNonce"));
            if (!nu) {
                snprintf(a->err, a->errlen, "the ACME directory names no newNonce");
                return -EPROTO;
            }
            int rc = http(a, nu, NULL, true, &nr);
            resp_free(&nr);
            if (rc < 0)
                return rc;
            if (!a->nonce[0]) {
                snprintf(a->err, a->errlen, "the ACME server gave no Replay-Nonce");
                return -EPROTO;
            }
        }
        char nonce[128];
        snprintf(nonce, sizeof(nonce), "%s", a->nonce);
        a->nonce[0] = '\0';
        char *jws = acme_jws(a->key, use_kid ? a->kid : NULL, nonce, url, payload);
        if (!jws) {
            snprintf(a->err, a->errlen, "cannot sign the ACME request");
            return -EINVAL;
        }
        int rc = http(a, url, jws, false, r);
        free(jws);
        if (rc < 0)
            return rc;
        if (!is_bad_nonce(r))
            return 0;
        resp_free(r); /* the error carried a fresh nonce: try again */
    }
    snprintf(a->err, a->errlen, "the ACME server refused every nonce (badNonce)");
    return -EPROTO;
}

static json_t *body_json(const struct resp *r)
{
    return r->body.p ? json_loads(r->body.p, 0, NULL) : NULL;
}

static bool expired(struct acme *a)
{
    if (a->o->stop && *a->o->stop) {
        snprintf(a->err, a->errlen, "stopped");
        return true;
    }
    if (now_ms() < a->deadline)
        return false;
    snprintf(a->err, a->errlen, "the order did not complete within %llu s",
             (unsigned long long)(a->o->timeout_ms / 1000));
    return true;
}

static void wait_poll(const struct resp *r)
{
    unsigned s = r->retry_after;
    if (s == 0)
        usleep(500 * 1000);
    else
        sleep(s > 10 ? 10 : s);
}

static int account(struct acme *a)
{
    const char *url = json_string_value(json_object_get(a->dir, "newAccount"));
    if (!url) {
        snprintf(a->err, a->errlen, "the ACME directory names no newAccount");
        return -EPROTO;
    }
    json_t *p = json_pack("{s:b}", "termsOfServiceAgreed", 1);
    if (a->o->email) {
        char *m = xasprintf("mailto:%s", a->o->email);
        json_object_set_new(p, "contact", json_pack("[s]", m));
        free(m);
    }
    char *ps = json_dumps(p, JSON_COMPACT);
    json_decref(p);
    struct resp r;
    int rc = post(a, url, ps, false, &r);
    free(ps);
    if (rc < 0)
        return rc;
    if ((r.status != 200 && r.status != 201) || !r.location[0]) {
        problem(a, "account registration", &r);
        resp_free(&r);
        return -EACCES;
    }
    a->kid = xstrdup(r.location);
    resp_free(&r);
    return 0;
}

/* Answer the HTTP-01 challenge of one authorization and wait for its end. */
static int authorize(struct acme *a, const char *authz_url)
{
    struct resp r;
    int rc = post(a, authz_url, NULL, true, &r);
    if (rc < 0)
        return rc;
    json_t *az = body_json(&r);
    if (r.status != 200 || !az) {
        problem(a, "authorization", &r);
        resp_free(&r);
        json_decref(az);
        return -EPROTO;
    }
    resp_free(&r);
    const char *domain = json_string_value(json_object_get(json_object_get(az, "identifier"), "value"));
    char dom[256];
    snprintf(dom, sizeof(dom), "%s", domain ? domain : "?");
    if (strcmp(json_string_value(json_object_get(az, "status")) ?: "", "valid") == 0) {
        json_decref(az);
        return 0; /* authorized recently: nothing to answer */
    }
    json_t *ch = NULL, *v;
    size_t i;
    json_array_foreach(json_object_get(az, "challenges"), i, v)
        if (strcmp(json_string_value(json_object_get(v, "type")) ?: "", "http-01") == 0)
            ch = v;
    if (!ch) {
        snprintf(a->err, a->errlen, "%s: the CA offers no http-01 challenge", dom);
        json_decref(az);
        return -EPROTO;
    }
    char token[256], curl_s[1024];
    snprintf(token, sizeof(token), "%s", json_string_value(json_object_get(ch, "token")) ?: "");
    snprintf(curl_s, sizeof(curl_s), "%s", json_string_value(json_object_get(ch, "url")) ?: "");
    json_decref(az);
    if (!token[0] || !curl_s[0] || strspn(token, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") != strlen(token)) {
        snprintf(a->err, a->errlen, "%s: the CA sent a malformed http-01 challenge", dom);
        return -EPROTO;
    }
    char *ka = xasprintf("%s.%s", token, a->thumb);
    a->o->present(a->o->arg, token, ka);
    free(ka);
    rc = post(a, curl_s, "{}", true, &r);
    if (rc == 0 && r.status != 200) {
        problem(a, dom, &r);
        rc = -EPROTO;
    }
    resp_free(&r);
    while (rc == 0) {
        if (expired(a)) {
            rc = -ETIMEDOUT;
            break;
        }
        rc = post(a, authz_url, NULL, true, &r);
        if (rc < 0)
            break;
        json_t *j = body_json(&r);
        const char *st = json_string_value(json_object_get(j, "status")) ?: "";
        if (strcmp(st, "valid") == 0) {
            json_decref(j);
            resp_free(&r);
            break;
        }
        if (strcmp(st, "pending") != 0 && strcmp(st, "processing") != 0) {
            /* invalid: the challenge's error says why (DNS, connection, 404…) */
            const char *detail = NULL, *type = NULL;
            json_array_foreach(json_object_get(j, "challenges"), i, v) {
                json_t *e = json_object_get(v, "error");
                if (e) {
                    detail = json_string_value(json_object_get(e, "detail"));
                    type = json_string_value(json_object_get(e, "type"));
                }
            }
            snprintf(a->err, a->errlen, "%s: validation %s: %s (%s)", dom, st[0] ? st : "failed",
                     detail ? detail : "no reason given", type ? type : "no type");
            json_decref(j);
            resp_free(&r);
            rc = -EACCES;
            break;
        }
        json_decref(j);
        wait_poll(&r);
        resp_free(&r);
    }
    a->o->cleanup(a->o->arg, token);
    return rc;
}

static int order(struct acme *a, const char *const *domains, size_t n, char **cert_pem,
                 char **key_pem)
{
    const char *url = json_string_value(json_object_get(a->dir, "newOrder"));
    if (!url) {
        snprintf(a->err, a->errlen, "the ACME directory names no newOrder");
        return -EPROTO;
    }
    json_t *ids = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(ids, json_pack("{s:s,s:s}", "type", "dns", "value", domains[i]));
    json_t *p = json_pack("{s:o}", "identifiers", ids);
    char *ps = json_dumps(p, JSON_COMPACT);
    json_decref(p);
    struct resp r;
    int rc = post(a, url, ps, true, &r);
    free(ps);
    if (rc < 0)
        return rc;
    json_t *o = body_json(&r);
    if (r.status != 201 || !o || !r.location[0]) {
        problem(a, "new order", &r);
        resp_free(&r);
        json_decref(o);
        return -EPROTO;
    }
    char order_url[1024];
    snprintf(order_url, sizeof(order_url), "%s", r.location);
    resp_free(&r);
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(o, "authorizations"), i, v) {
        rc = authorize(a, json_string_value(v) ?: "");
        if (rc < 0) {
            json_decref(o);
            return rc;
        }
    }
    char fin[1024];
    snprintf(fin, sizeof(fin), "%s", json_string_value(json_object_get(o, "finalize")) ?: "");
    json_decref(o);
    EVP_PKEY *ck = NULL;
    char *csr = acme_csr(domains, n, &ck);
    if (!csr) {
        snprintf(a->err, a->errlen, "cannot make the certificate request (CSR)");
        return -EINVAL;
    }
    json_t *fp = json_pack("{s:s}", "csr", csr);
    free(csr);
    ps = json_dumps(fp, JSON_COMPACT);
    json_decref(fp);
    rc = post(a, fin, ps, true, &r);
    free(ps);
    if (rc == 0 && r.status != 200) {
        problem(a, "finalize", &r);
        rc = -EPROTO;
    }
    char cert_url[1024] = "";
    while (rc == 0) {
        json_t *j = body_json(&r);
        const char *st = json_string_value(json_object_get(j, "status")) ?: "";
        if (strcmp(st, "valid") == 0) {
            snprintf(cert_url, sizeof(cert_url), "%s",
                     json_string_value(json_object_get(j, "certificate")) ?: "");
            json_decref(j);
            break;
        }
        if (strcmp(st, "processing") != 0 && strcmp(st, "pending") != 0 &&
            strcmp(st, "ready") != 0) {
            snprintf(a->err, a->errlen, "the order became %s", st[0] ? st : "unreadable");
            json_decref(j);
            rc = -EPROTO;
            break;
        }
        json_decref(j);
        if (expired(a)) {
            rc = -ETIMEDOUT;
            break;
        }
        wait_poll(&r);
        resp_free(&r);
        rc = post(a, order_url, NULL, true, &r);
    }
    resp_free(&r);
    if (rc == 0 && !cert_url[0]) {
        snprintf(a->err, a->errlen, "the valid order names no certificate");
        rc = -EPROTO;
    }
    if (rc == 0) {
        rc = post(a, cert_url, NULL, true, &r);
        if (rc == 0 && (r.status != 200 || !r.body.p ||
                        !strstr(r.body.p, "-----BEGIN CERTIFICATE-----"))) {
            problem(a, "certificate download", &r);
            rc = -EPROTO;
        }
        if (rc == 0) {
            *cert_pem = r.body.p;
            r.body.p = NULL;
            BIO *b = BIO_new(BIO_s_mem());
            PEM_write_bio_PrivateKey(b, ck, NULL, NULL, 0, NULL, NULL);
            char *kp = NULL;
            long kl = BIO_get_mem_data(b, &kp);
            *key_pem = xstrndup(kp, (size_t)kl);
            BIO_free(b);
        }
        resp_free(&r);
    }
    EVP_PKEY_free(ck);
    return rc;
}

int acme_obtain(const struct acme_opts *o, const char *const *domains, size_t n,
                char **cert_pem, char **key_pem, char *err, size_t errlen)
{
    struct acme a = {.o = o, .err = err, .errlen = errlen};
    uint64_t to = o->timeout_ms ? o->timeout_ms : 120000;
    struct acme_opts oo = *o;
    oo.timeout_ms = to;
    a.o = &oo;
    a.deadline = now_ms() + to;
    err[0] = '\0';
    int rc;
    a.curl = curl_easy_init();
    if (!a.curl) {
        snprintf(err, errlen, "libcurl cannot start");
        return -ENOMEM;
    }
    a.key = acme_key_load_or_create(o->account_key, err, errlen);
    if (!a.key) {
        rc = -EINVAL;
        goto out;
    }
    a.thumb = acme_thumbprint(a.key);
    struct resp r;
    rc = http(&a, o->directory, NULL, false, &r);
    if (rc < 0)
        goto out;
    a.dir = body_json(&r);
    if (r.status != 200 || !json_is_object(a.dir)) {
        snprintf(err, errlen, "%s is not an ACME directory (HTTP %ld)", o->directory, r.status);
        resp_free(&r);
        rc = -EPROTO;
        goto out;
    }
    resp_free(&r);
    rc = account(&a);
    if (rc == 0)
        rc = order(&a, domains, n, cert_pem, key_pem);
out:
    json_decref(a.dir);
    free(a.kid);
    free(a.thumb);
    EVP_PKEY_free(a.key);
    curl_easy_cleanup(a.curl);
    return rc;
}
