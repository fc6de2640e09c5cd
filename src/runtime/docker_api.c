/* docker_api.c — Docker Engine API calls over the engine's unix socket with
 * libcurl: version negotiation, images, containers, logs, stats, events.
 *
 * libcurl rather than src/http: the engine answers with chunked bodies,
 * long-lived streams (build progress, logs, events) and needs request
 * bodies, timeouts and cancellation; curl does all of that on a unix socket
 * (CURLOPT_UNIX_SOCKET_PATH), while src/http is the proxy's message parser
 * with no client side. Calls are blocking: the driver makes them on worker
 * threads, never on takod's loop.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "core/util.h"
#include "runtime/docker_api.h"

#define DK_BODY_MAX (64u << 20) /* a JSON answer larger than this is refused */

struct dk_client {
    char sock[108];
    char version[16];
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init(void) { curl_global_init(CURL_GLOBAL_NOTHING); }

static void seterr(char *err, size_t errlen, const char *fmt, ...) TAKO_PRINTF(3, 4);
static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

const char *dk_socket_for(const char *host)
{
    static __thread char buf[108];
    if (!host || !*host)
        host = getenv("DOCKER_HOST");
    if (!host || !*host)
        host = "unix://" DK_DEFAULT_SOCK;
    if (str_starts_with(host, "unix://"))
        host += 7;
    snprintf(buf, sizeof(buf), "%s", host);
    return buf;
}

const char *dk_socket(const struct dk_client *c) { return c->sock; }
const char *dk_version(const struct dk_client *c) { return c->version; }

/* ---- one request ---- */

struct buf {
    char *p;
    size_t len, cap;
    bool too_big;
};

static void buf_add(struct buf *b, const char *p, size_t n)
{
    if (b->len + n + 1 > DK_BODY_MAX) {
        b->too_big = true;
        return;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        b->p = xrealloc(b->p, cap);
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
    b->p[b->len] = '\0';
}

/* A streaming body consumer: returns 0 to go on, non-zero to stop. */
typedef int (*stream_fn)(void *data, const char *p, size_t n);

struct req {
    const char *method;
    char *path; /* after /vX.Y, e.g. "/containers/json?all=1" */
    const char *body;
    size_t body_len;
    const char *content_type;
    const char *header; /* one extra request header line, or NULL */
    long timeout_s; /* 0: none */
    stream_fn stream; /* NULL: collect the body */
    void *stream_data;
    const volatile bool *cancel;
    /* results */
    long status;
    struct buf resp;
    int stream_rc;
    CURL *h;
};

static size_t on_write(char *p, size_t size, size_t n, void *data)
{
    struct req *r = data;
    size_t len = size * n;
    if (r->status == 0)
        curl_easy_getinfo(r->h, CURLINFO_RESPONSE_CODE, &r->status);
    if (r->stream && r->status >= 200 && r->status < 300) {
        int rc = r->stream(r->stream_data, p, len);
        if (rc) {
            r->stream_rc = rc;
            return 0; /* curl stops with CURLE_WRITE_ERROR */
        }
        return len;
    }
    buf_add(&r->resp, p, len);
    return len;
}

static int on_progress(void *data, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
    (void)a, (void)b, (void)c, (void)d;
    const struct req *r = data;
    return r->cancel && *r->cancel ? 1 : 0;
}

static char *esc(const char *s)
{
    char *e = curl_easy_escape(NULL, s, 0);
    char *out = xstrdup(e ? e : "");
    curl_free(e);
    return out;
}

/* The engine's {"message": "..."} of an error answer, or its body. */
static void api_message(const struct req *r, char *msg, size_t len)
{
    msg[0] = '\0';
    if (r->resp.p) {
        json_t *j = json_loadb(r->resp.p, r->resp.len, 0, NULL);
        const char *m = j ? json_string_value(json_object_get(j, "message")) : NULL;
        snprintf(msg, len, "%s", m ? m : r->resp.p);
        json_decref(j);
        size_t n = strlen(msg);
        while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
            msg[--n] = '\0';
    }
}

static int do_req(struct dk_client *c, struct req *r, char *err, size_t errlen)
{
    pthread_once(&curl_once, curl_init);
    CURL *h = curl_easy_init();
    if (!h) {
        seterr(err, errlen, "cannot initialise libcurl");
        return -ENOMEM;
    }
    r->h = h;
    char *url = xasprintf("http://docker/v%s%s", c->version[0] ? c->version : DK_API_MIN,
                          r->path);
    if (strcmp(r->path, "/_ping") == 0 && !c->version[0]) {
        free(url);
        url = xstrdup("http://docker/_ping");
    }
    struct curl_slist *hdrs = NULL;
    char errbuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_UNIX_SOCKET_PATH, c->sock);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, r->method);
    if (r->timeout_s > 0)
        curl_easy_setopt(h, CURLOPT_TIMEOUT, r->timeout_s);
    if (r->cancel) {
        curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
        curl_easy_setopt(h, CURLOPT_XFERINFODATA, r);
    }
    if (strcmp(r->method, "POST") == 0 || r->body) {
        curl_easy_setopt(h, CURLOPT_POST, 1L);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, r->body ? r->body : "");
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(r->body ? r->body_len : 0));
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, r->method);
        char *ct = xasprintf("Content-Type: %s",
                             r->content_type ? r->content_type : "application/json");
        hdrs = curl_slist_append(hdrs, ct);
        free(ct);
        hdrs = curl_slist_append(hdrs, "Expect:");
    }
    if (r->header)
        hdrs = curl_slist_append(hdrs, r->header);
    if (hdrs)
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    CURLcode cc = curl_easy_perform(h);
    if (r->status == 0)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(h);
    r->h = NULL;
    free(url);

    if (cc == CURLE_WRITE_ERROR && r->stream_rc)
        return 0; /* the consumer stopped the stream */
    if (cc == CURLE_ABORTED_BY_CALLBACK)
        return -ECANCELED;
    if (cc == CURLE_COULDNT_CONNECT || cc == CURLE_COULDNT_RESOLVE_HOST) {
        seterr(err, errlen,
               "Docker is not reachable at unix://%s (%s); start it (`systemctl start docker`, "
               "or `dockerd &`) or point DOCKER_HOST at its socket",
               c->sock, errbuf[0] ? errbuf : curl_easy_strerror(cc));
        return -EHOSTDOWN;
    }
    if (cc == CURLE_OPERATION_TIMEDOUT) {
        seterr(err, errlen, "Docker at unix://%s did not answer %s %s in %lds", c->sock,
               r->method, r->path, r->timeout_s);
        return -ETIMEDOUT;
    }
    if (cc != CURLE_OK) {
        seterr(err, errlen, "Docker at unix://%s: %s %s: %s", c->sock, r->method, r->path,
               errbuf[0] ? errbuf : curl_easy_strerror(cc));
        return (cc == CURLE_RECV_ERROR || cc == CURLE_GOT_NOTHING || cc == CURLE_PARTIAL_FILE)
                   ? -EPIPE
                   : -EIO;
    }
    if (r->resp.too_big) {
        seterr(err, errlen, "Docker's answer to %s %s is larger than %u bytes", r->method,
               r->path, DK_BODY_MAX);
        return -E2BIG;
    }
    if (r->status == 304 || (r->status >= 200 && r->status < 300))
        return 0;
    char msg[1024];
    api_message(r, msg, sizeof(msg));
    seterr(err, errlen, "%s", msg[0] ? msg : "Docker answered an error without a message");
    switch (r->status) {
    case 404:
        return -ENOENT;
    case 409:
        return -EEXIST;
    case 400:
        return -EINVAL;
    default:
        return -EIO;
    }
}

static void req_free(struct req *r)
{
    free(r->path);
    free(r->resp.p);
}

/* A request with a JSON answer into *out (may be NULL). */
static int json_call(struct dk_client *c, const char *method, char *path, json_t *body,
                     long timeout_s, json_t **out, char *err, size_t errlen)
{
    struct req r = {.method = method, .path = path, .timeout_s = timeout_s};
    char *text = NULL;
    if (body) {
        text = json_dumps(body, JSON_COMPACT);
        r.body = text;
        r.body_len = strlen(text);
    }
    int rc = do_req(c, &r, err, errlen);
    free(text);
    if (rc == 0 && out) {
        json_error_t je;
        *out = r.resp.p ? json_loadb(r.resp.p, r.resp.len, 0, &je) : NULL;
        if (!*out) {
            seterr(err, errlen, "Docker's answer to %s %s is not JSON", method, r.path);
            rc = -EIO;
        }
    }
    req_free(&r);
    return rc;
}

/* ---- version ---- */

static int ver_cmp(const char *a, const char *b)
{
    unsigned a1 = 0, a2 = 0, b1 = 0, b2 = 0;
    sscanf(a, "%u.%u", &a1, &a2);
    sscanf(b, "%u.%u", &b1, &b2);
    if (a1 != b1)
        return a1 < b1 ? -1 : 1;
    return a2 < b2 ? -1 : a2 > b2;
}

static size_t on_header(char *p, size_t size, size_t n, void *data)
{
    char *ver = data;
    size_t len = size * n;
    if (len > 12 && strncasecmp(p, "API-Version:", 12) == 0) {
        const char *v = p + 12;
        while (*v == ' ')
            v++;
        size_t k = 0;
        while (k < 15 && v + k < p + len && ((v[k] >= '0' && v[k] <= '9') || v[k] == '.')) {
            ver[k] = v[k];
            k++;
        }
        ver[k] = '\0';
    }
    return len;
}

int dk_ping(struct dk_client *c, char *err, size_t errlen)
{
    struct req r = {.method = "GET", .path = xstrdup("/_ping"), .timeout_s = 10};
    int rc = do_req(c, &r, err, errlen);
    req_free(&r);
    return rc;
}

int dk_open(const char *host, struct dk_client **out, char *err, size_t errlen)
{
    *out = NULL;
    const char *h = host && *host ? host : getenv("DOCKER_HOST");
    if (h && *h && !str_starts_with(h, "unix://")) {
        seterr(err, errlen,
               "DOCKER_HOST=%s: only unix:// sockets are supported (the engine on this host)", h);
        return -EINVAL;
    }
    struct dk_client *c = xcalloc(1, sizeof(*c));
    const char *sock = dk_socket_for(host);
    if (strlen(sock) >= sizeof(c->sock)) {
        seterr(err, errlen, "Docker socket path too long: %s", sock);
        free(c);
        return -ENAMETOOLONG;
    }
    snprintf(c->sock, sizeof(c->sock), "%s", sock);

    /* GET /_ping, reading the API-Version header */
    pthread_once(&curl_once, curl_init);
    CURL *hd = curl_easy_init();
    if (!hd) {
        free(c);
        return -ENOMEM;
    }
    char ver[16] = "";
    char errbuf[CURL_ERROR_SIZE] = "";
    struct buf body = {0};
    struct req r = {.method = "GET", .path = (char *)"/_ping", .h = hd};
    curl_easy_setopt(hd, CURLOPT_URL, "http://docker/_ping");
    curl_easy_setopt(hd, CURLOPT_UNIX_SOCKET_PATH, c->sock);
    curl_easy_setopt(hd, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(hd, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(hd, CURLOPT_TIMEOUT, 10L);
    curl_easy_setopt(hd, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(hd, CURLOPT_HEADERDATA, ver);
    curl_easy_setopt(hd, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(hd, CURLOPT_WRITEDATA, &r);
    CURLcode cc = curl_easy_perform(hd);
    long status = 0;
    curl_easy_getinfo(hd, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(hd);
    body = r.resp;
    free(body.p);
    if (cc != CURLE_OK) {
        seterr(err, errlen,
               "Docker is not reachable at unix://%s (%s); start it (`systemctl start docker`, "
               "or `dockerd &`) or point DOCKER_HOST at its socket",
               c->sock, errbuf[0] ? errbuf : curl_easy_strerror(cc));
        free(c);
        return -EHOSTDOWN;
    }
    if (status != 200) {
        seterr(err, errlen, "unix://%s answered /_ping with HTTP %ld: not a Docker engine?",
               c->sock, status);
        free(c);
        return -EPROTO;
    }
    if (!ver[0])
        snprintf(ver, sizeof(ver), "%s", DK_API_MIN); /* engines before 1.25 sent none */
    if (ver_cmp(ver, DK_API_MIN) < 0) {
        seterr(err, errlen, "the Docker engine at unix://%s speaks API %s; tako needs %s or newer",
               c->sock, ver, DK_API_MIN);
        free(c);
        return -EPROTO;
    }
    snprintf(c->version, sizeof(c->version), "%s", ver_cmp(ver, DK_API_MAX) < 0 ? ver : DK_API_MAX);
    *out = c;
    return 0;
}

void dk_close(struct dk_client *c) { free(c); }

/* ---- images ---- */

struct build_state {
    struct buf line;
    char tail[DK_BUILD_TAIL][512];
    unsigned ntail;
    char error[1024];
    char id[80];
    dk_line_cb progress;
    void *data;
    bool pull; /* objects of POST /images/create, not of /build */
};

static void build_text_line(struct build_state *b, const char *s, size_t n)
{
    while (n && (s[n - 1] == '\r' || s[n - 1] == '\n'))
        n--;
    char line[512];
    snprintf(line, sizeof(line), "%.*s", (int)n, s);
    if (!line[0])
        return;
    snprintf(b->tail[b->ntail % DK_BUILD_TAIL], sizeof(b->tail[0]), "%s", line);
    b->ntail++;
    if (b->progress)
        b->progress(b->data, line);
}

/* One object of a pull's progress: "ID: status" lines, without the
 * byte-by-byte "Downloading"/"Extracting" updates (a line per chunk would
 * flood the deploy's output); their start and end ("Pulling fs layer",
 * "Pull complete") are shown. */
static void pull_object(struct build_state *b, json_t *o)
{
    const char *er = json_string_value(json_object_get(o, "error"));
    if (er) {
        if (!b->error[0])
            snprintf(b->error, sizeof(b->error), "%s", er);
        return;
    }
    const char *st = json_string_value(json_object_get(o, "status"));
    if (!st || json_object_get(json_object_get(o, "progressDetail"), "current"))
        return;
    const char *id = json_string_value(json_object_get(o, "id"));
    char line[512];
    /* "Pulling from NAME" comes with the tag as its id: not a layer */
    if (id && *id && !str_starts_with(st, "Pulling from "))
        snprintf(line, sizeof(line), "%s: %s", id, st);
    else
        snprintf(line, sizeof(line), "%s", st);
    build_text_line(b, line, strlen(line));
}

static void build_object(struct build_state *b, json_t *o)
{
    if (b->pull) {
        pull_object(b, o);
        return;
    }
    const char *s = json_string_value(json_object_get(o, "stream"));
    if (s) {
        while (*s) {
            const char *e = strchr(s, '\n');
            size_t n = e ? (size_t)(e - s) : strlen(s);
            build_text_line(b, s, n);
            s += n + (e ? 1 : 0);
        }
    }
    const char *st = json_string_value(json_object_get(o, "status"));
    if (st)
        build_text_line(b, st, strlen(st));
    const char *er = json_string_value(json_object_get(o, "error"));
    if (er && !b->error[0])
        snprintf(b->error, sizeof(b->error), "%s", er);
    const char *id = json_string_value(json_object_get(json_object_get(o, "aux"), "ID"));
    if (id)
        snprintf(b->id, sizeof(b->id), "%s", id);
}

static int build_stream(void *data, const char *p, size_t n)
{
    struct build_state *b = data;
    buf_add(&b->line, p, n);
    size_t start = 0;
    for (size_t i = 0; i < b->line.len; i++) {
        if (b->line.p[i] != '\n')
            continue;
        json_t *o = json_loadb(b->line.p + start, i - start, 0, NULL);
        if (o) {
            build_object(b, o);
            json_decref(o);
        }
        start = i + 1;
    }
    memmove(b->line.p, b->line.p + start, b->line.len - start);
    b->line.len -= start;
    return 0;
}

static void build_fail_msg(const struct build_state *b, const char *first, char *err,
                           size_t errlen)
{
    if (!err)
        return;
    size_t off = (size_t)snprintf(err, errlen, "%s", first);
    unsigned n = b->ntail < DK_BUILD_TAIL ? b->ntail : DK_BUILD_TAIL;
    if (n && off < errlen)
        off += (size_t)snprintf(err + off, errlen - off, "\nlast lines of the build:");
    for (unsigned i = b->ntail - n; i < b->ntail && off < errlen; i++)
        off += (size_t)snprintf(err + off, errlen - off, "\n  %s", b->tail[i % DK_BUILD_TAIL]);
}

int dk_build(struct dk_client *c, const struct dk_build_opts *o, char *image_id, size_t idlen,
             char *err, size_t errlen)
{
    char *tar = NULL;
    size_t tlen = 0;
    char terr[512] = "";
    int rc = dk_tar_context(o->dir, o->dockerfile, &tar, &tlen, terr, sizeof(terr));
    if (rc < 0) {
        seterr(err, errlen, "cannot read the build context: %s", terr);
        return rc;
    }
    json_t *labels = json_object();
    for (const char *const *kv = o->label_kv; kv && kv[0] && kv[1]; kv += 2)
        json_object_set_new(labels, kv[0], json_string(kv[1]));
    char *ltext = json_dumps(labels, JSON_COMPACT);
    json_decref(labels);
    char *t = esc(o->tag), *df = esc(o->dockerfile ? o->dockerfile : "Dockerfile"),
         *lb = esc(ltext);
    free(ltext);
    struct build_state *b = xcalloc(1, sizeof(*b));
    b->progress = o->progress;
    b->data = o->data;
    struct req r = {.method = "POST",
                    /* RUN steps on the host's network, like the replicas: an
                     * engine without a bridge (--bridge=none) has no other */
                    .path = xasprintf("/build?t=%s&dockerfile=%s&labels=%s&rm=1&forcerm=1"
                                      "&networkmode=host",
                                      t, df, lb),
                    .body = tar,
                    .body_len = tlen,
                    .content_type = "application/x-tar",
                    .timeout_s = DK_BUILD_TIMEOUT_S,
                    .stream = build_stream,
                    .stream_data = b};
    free(t), free(df), free(lb);
    char cerr[1024] = "";
    rc = do_req(c, &r, cerr, sizeof(cerr));
    if (b->line.len) { /* a last object without its newline */
        json_t *obj = json_loadb(b->line.p, b->line.len, 0, NULL);
        if (obj) {
            build_object(b, obj);
            json_decref(obj);
        }
    }
    if (rc < 0) {
        char first[1200];
        snprintf(first, sizeof(first), "docker build of %s failed: %s", o->tag, cerr);
        build_fail_msg(b, first, err, errlen);
    } else if (b->error[0]) {
        char first[1200];
        snprintf(first, sizeof(first), "docker build of %s failed: %s", o->tag, b->error);
        build_fail_msg(b, first, err, errlen);
        rc = -EIO;
    } else if (image_id) {
        snprintf(image_id, idlen, "%s", b->id);
    }
    free(tar);
    free(b->line.p);
    free(b);
    req_free(&r);
    return rc;
}

int dk_image_pull(struct dk_client *c, const char *ref, const char *auth, dk_line_cb progress,
                  void *data, char *err, size_t errlen)
{
    char from[512], tag[160];
    dk_ref_pull_args(ref, from, sizeof(from), tag, sizeof(tag));
    char *f = esc(from), *t = esc(tag);
    struct build_state *b = xcalloc(1, sizeof(*b));
    b->progress = progress;
    b->data = data;
    b->pull = true;
    char *hdr = auth && *auth ? xasprintf("X-Registry-Auth: %s", auth) : NULL;
    struct req r = {.method = "POST",
                    .path = tag[0] ? xasprintf("/images/create?fromImage=%s&tag=%s", f, t)
                                   : xasprintf("/images/create?fromImage=%s", f),
                    .header = hdr,
                    .timeout_s = DK_PULL_TIMEOUT_S,
                    .stream = build_stream,
                    .stream_data = b};
    free(f), free(t);
    char cerr[1024] = "";
    int rc = do_req(c, &r, cerr, sizeof(cerr));
    if (b->line.len) { /* a last object without its newline */
        json_t *obj = json_loadb(b->line.p, b->line.len, 0, NULL);
        if (obj) {
            build_object(b, obj);
            json_decref(obj);
        }
    }
    char reg[256];
    dk_ref_registry(ref, reg, sizeof(reg));
    /* the engine answers an unknown image or an unreachable registry before
     * streaming (HTTP 404/500 with a message), a failure later in the stream
     * as {"error": ...}: both carry the registry's own words */
    if (rc < 0 && rc != -EHOSTDOWN && rc != -ECANCELED) {
        seterr(err, errlen, "pulling image %s from %s failed: %s", ref, reg, cerr);
        rc = rc == -ENOENT ? -ENOENT : -EIO;
    } else if (rc < 0) {
        seterr(err, errlen, "%s", cerr);
    } else if (b->error[0]) {
        seterr(err, errlen, "pulling image %s from %s failed: %s", ref, reg, b->error);
        rc = -EIO;
    }
    free(hdr);
    free(b->line.p);
    free(b);
    req_free(&r);
    return rc;
}

int dk_image_inspect(struct dk_client *c, const char *name, json_t **out, char *err,
                     size_t errlen)
{
    char *n = esc(name);
    int rc = json_call(c, "GET", xasprintf("/images/%s/json", n), NULL, 30, out, err, errlen);
    free(n);
    return rc;
}

int dk_image_tag(struct dk_client *c, const char *src, const char *repo, const char *tag,
                 char *err, size_t errlen)
{
    char *s = esc(src), *rp = esc(repo), *tg = esc(tag);
    int rc = json_call(c, "POST", xasprintf("/images/%s/tag?repo=%s&tag=%s", s, rp, tg), NULL,
                       30, NULL, err, errlen);
    free(s), free(rp), free(tg);
    return rc;
}

int dk_image_remove(struct dk_client *c, const char *name, bool force, char *err, size_t errlen)
{
    char *n = esc(name);
    int rc = json_call(c, "DELETE", xasprintf("/images/%s?force=%d", n, force ? 1 : 0), NULL, 60,
                       NULL, err, errlen);
    free(n);
    return rc;
}

static char *filters(const char *key, const char *value, const char *key2, const char *value2)
{
    json_t *f = json_object();
    if (key && value)
        json_object_set_new(f, key, json_pack("[s]", value));
    if (key2 && value2)
        json_object_set_new(f, key2, json_pack("[s]", value2));
    char *s = json_dumps(f, JSON_COMPACT);
    json_decref(f);
    char *e = esc(s);
    free(s);
    return e;
}

int dk_image_list(struct dk_client *c, const char *ref, const char *label, json_t **out,
                  char *err, size_t errlen)
{
    char *f = filters("reference", ref, "label", label);
    int rc = json_call(c, "GET", xasprintf("/images/json?filters=%s", f), NULL, 30, out, err,
                       errlen);
    free(f);
    return rc;
}

int dk_network_inspect(struct dk_client *c, const char *name, json_t **out, char *err,
                       size_t errlen)
{
    char *n = esc(name);
    int rc = json_call(c, "GET", xasprintf("/networks/%s", n), NULL, 30, out, err, errlen);
    free(n);
    return rc;
}

/* ---- containers ---- */

int dk_container_create(struct dk_client *c, const struct dk_create *o, char id[72], char *err,
                        size_t errlen)
{
    json_t *body = json_object();
    json_object_set_new(body, "Image", json_string(o->image));
    if (o->hostname)
        json_object_set_new(body, "Hostname", json_string(o->hostname));
    if (o->cmd) {
        json_t *a = json_array();
        for (char *const *p = o->cmd; *p; p++)
            json_array_append_new(a, json_string(*p));
        json_object_set_new(body, "Cmd", a);
    }
    if (o->env) {
        json_t *a = json_array();
        for (const char *const *p = o->env; *p; p++)
            json_array_append_new(a, json_string(*p));
        json_object_set_new(body, "Env", a);
    }
    json_t *labels = json_object();
    for (const char *const *kv = o->label_kv; kv && kv[0] && kv[1]; kv += 2)
        json_object_set_new(labels, kv[0], json_string(kv[1]));
    json_object_set_new(body, "Labels", labels);
    if (o->workdir)
        json_object_set_new(body, "WorkingDir", json_string(o->workdir));
    if (o->stop_timeout_s)
        json_object_set_new(body, "StopTimeout", json_integer(o->stop_timeout_s));
    json_t *hc = json_object();
    json_object_set_new(hc, "RestartPolicy", json_pack("{s:s}", "Name", "no"));
    if (o->host_network) {
        json_object_set_new(hc, "NetworkMode", json_string("host"));
    } else if (o->container_port) {
        char port[32], hp[16];
        snprintf(port, sizeof(port), "%u/tcp", o->container_port);
        snprintf(hp, sizeof(hp), "%u", o->publish_host_port);
        json_object_set_new(body, "ExposedPorts", json_pack("{s:{}}", port));
        json_object_set_new(hc, "PortBindings",
                            json_pack("{s:[{s:s,s:s}]}", port, "HostIp", "127.0.0.1", "HostPort",
                                      hp));
    }
    json_object_set_new(body, "HostConfig", hc);
    char *n = esc(o->name);
    json_t *resp = NULL;
    int rc = json_call(c, "POST", xasprintf("/containers/create?name=%s", n), body, 60, &resp,
                       err, errlen);
    free(n);
    json_decref(body);
    if (rc == 0) {
        const char *i = json_string_value(json_object_get(resp, "Id"));
        snprintf(id, 72, "%s", i ? i : "");
    }
    json_decref(resp);
    return rc;
}

static int simple_post(struct dk_client *c, char *path, long timeout_s, char *err,
                       size_t errlen)
{
    return json_call(c, "POST", path, NULL, timeout_s, NULL, err, errlen);
}

int dk_container_start(struct dk_client *c, const char *id, char *err, size_t errlen)
{
    char *i = esc(id);
    int rc = simple_post(c, xasprintf("/containers/%s/start", i), 60, err, errlen);
    free(i);
    return rc;
}

int dk_container_stop(struct dk_client *c, const char *id, unsigned timeout_s, char *err,
                      size_t errlen)
{
    char *i = esc(id);
    int rc = simple_post(c, xasprintf("/containers/%s/stop?t=%u", i, timeout_s),
                         (long)timeout_s + 60, err, errlen);
    free(i);
    return rc;
}

int dk_container_kill(struct dk_client *c, const char *id, const char *signal, char *err,
                      size_t errlen)
{
    char *i = esc(id), *s = esc(signal ? signal : "SIGKILL");
    int rc = simple_post(c, xasprintf("/containers/%s/kill?signal=%s", i, s), 30, err, errlen);
    free(i), free(s);
    return rc;
}

int dk_container_remove(struct dk_client *c, const char *id, bool force, char *err,
                        size_t errlen)
{
    char *i = esc(id);
    int rc = json_call(c, "DELETE", xasprintf("/containers/%s?force=%d&v=1", i, force ? 1 : 0),
                       NULL, 60, NULL, err, errlen);
    free(i);
    return rc;
}

int dk_container_inspect(struct dk_client *c, const char *id, json_t **out, char *err,
                         size_t errlen)
{
    char *i = esc(id);
    int rc = json_call(c, "GET", xasprintf("/containers/%s/json", i), NULL, 30, out, err, errlen);
    free(i);
    return rc;
}

int dk_container_list(struct dk_client *c, const char *label, json_t **out, char *err,
                      size_t errlen)
{
    char *f = filters("label", label, NULL, NULL);
    int rc = json_call(c, "GET", xasprintf("/containers/json?all=1&filters=%s", f), NULL, 30, out,
                       err, errlen);
    free(f);
    return rc;
}

/* ---- logs ---- */

void dk_demux_init(struct dk_demux *d, dk_log_cb cb, void *data)
{
    memset(d, 0, sizeof(*d));
    d->cb = cb;
    d->data = data;
}

int dk_demux_feed(struct dk_demux *d, const char *buf, size_t len)
{
    while (len > 0 && !d->stop) {
        if (d->left == 0) {
            size_t need = 8 - d->head_len;
            size_t k = len < need ? len : need;
            memcpy(d->head + d->head_len, buf, k);
            d->head_len += k;
            buf += k;
            len -= k;
            if (d->head_len < 8)
                break;
            d->head_len = 0;
            d->stream = d->head[0];
            d->left = ((size_t)d->head[4] << 24) | ((size_t)d->head[5] << 16) |
                      ((size_t)d->head[6] << 8) | d->head[7];
            continue;
        }
        size_t k = len < d->left ? len : d->left;
        d->stop = d->cb(d->data, d->stream, buf, k);
        d->left -= k;
        buf += k;
        len -= k;
    }
    return d->stop;
}

static int logs_stream(void *data, const char *p, size_t n)
{
    return dk_demux_feed(data, p, n);
}

int dk_container_logs(struct dk_client *c, const char *id, bool follow, int tail,
                      bool timestamps, dk_log_cb cb, void *data, const volatile bool *cancel,
                      char *err, size_t errlen)
{
    struct dk_demux d;
    dk_demux_init(&d, cb, data);
    char *i = esc(id);
    char tl[24];
    if (tail >= 0)
        snprintf(tl, sizeof(tl), "%d", tail);
    else
        snprintf(tl, sizeof(tl), "all");
    struct req r = {.method = "GET",
                    .path = xasprintf("/containers/%s/logs?stdout=1&stderr=1&follow=%d&tail=%s"
                                      "&timestamps=%d",
                                      i, follow ? 1 : 0, tl, timestamps ? 1 : 0),
                    .timeout_s = follow ? 0 : 60,
                    .stream = logs_stream,
                    .stream_data = &d,
                    .cancel = cancel};
    free(i);
    int rc = do_req(c, &r, err, errlen);
    req_free(&r);
    return rc == -ECANCELED ? 0 : rc;
}

/* ---- stats ---- */

static uint64_t ju(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    return json_is_integer(v) ? (uint64_t)json_integer_value(v) : 0;
}

int dk_container_stats(struct dk_client *c, const char *id, bool one_shot, struct dk_stats *out,
                       char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    char *i = esc(id);
    json_t *j = NULL;
    bool os = one_shot && ver_cmp(c->version, "1.41") >= 0;
    int rc = json_call(c, "GET",
                       xasprintf("/containers/%s/stats?stream=false%s", i,
                                 os ? "&one-shot=true" : ""),
                       NULL, 30, &j, err, errlen);
    free(i);
    if (rc < 0)
        return rc;
    json_t *cpu = json_object_get(j, "cpu_stats"), *pre = json_object_get(j, "precpu_stats");
    out->cpu_total_ns = ju(json_object_get(cpu, "cpu_usage"), "total_usage");
    out->system_ns = ju(cpu, "system_cpu_usage");
    out->online_cpus = (unsigned)ju(cpu, "online_cpus");
    if (!out->online_cpus)
        out->online_cpus = (unsigned)json_array_size(
            json_object_get(json_object_get(cpu, "cpu_usage"), "percpu_usage"));
    out->precpu_total_ns = ju(json_object_get(pre, "cpu_usage"), "total_usage");
    out->presystem_ns = ju(pre, "system_cpu_usage");
    out->has_pre = out->presystem_ns != 0;
    json_t *mem = json_object_get(j, "memory_stats"), *ms = json_object_get(mem, "stats");
    out->mem_usage = ju(mem, "usage");
    out->mem_limit = ju(mem, "limit");
    /* what `docker stats` subtracts: inactive file pages (cgroup v1 total_,
     * v2 plain), else the page cache of older engines */
    if (json_object_get(ms, "total_inactive_file"))
        out->mem_cache = ju(ms, "total_inactive_file");
    else if (json_object_get(ms, "inactive_file"))
        out->mem_cache = ju(ms, "inactive_file");
    else
        out->mem_cache = ju(ms, "cache");
    out->pids = (unsigned)ju(json_object_get(j, "pids_stats"), "current");
    json_decref(j);
    return 0;
}

double dk_cpu_percent(const struct dk_stats *a, const struct dk_stats *b)
{
    uint64_t c0, c1, s0, s1;
    unsigned cpus;
    if (b) {
        c0 = a->cpu_total_ns, c1 = b->cpu_total_ns, s0 = a->system_ns, s1 = b->system_ns;
        cpus = b->online_cpus;
    } else {
        if (!a->has_pre)
            return 0.0;
        c0 = a->precpu_total_ns, c1 = a->cpu_total_ns, s0 = a->presystem_ns, s1 = a->system_ns;
        cpus = a->online_cpus;
    }
    if (c1 <= c0 || s1 <= s0 || cpus == 0)
        return 0.0;
    return (double)(c1 - c0) / (double)(s1 - s0) * cpus * 100.0;
}

uint64_t dk_mem_used(const struct dk_stats *s)
{
    return s->mem_usage > s->mem_cache ? s->mem_usage - s->mem_cache : s->mem_usage;
}

/* ---- events ---- */

struct ev_state {
    struct buf line;
    dk_event_cb cb;
    void *data;
};

static int events_stream(void *data, const char *p, size_t n)
{
    struct ev_state *s = data;
    buf_add(&s->line, p, n);
    size_t start = 0;
    int stop = 0;
    for (size_t i = 0; i < s->line.len && !stop; i++) {
        if (s->line.p[i] != '\n')
            continue;
        json_t *o = json_loadb(s->line.p + start, i - start, 0, NULL);
        if (o) {
            stop = s->cb(s->data, o);
            json_decref(o);
        }
        start = i + 1;
    }
    memmove(s->line.p, s->line.p + start, s->line.len - start);
    s->line.len -= start;
    return stop;
}

int dk_events(struct dk_client *c, const char *label, long long since, dk_event_cb cb,
              void *data, const volatile bool *cancel, char *err, size_t errlen)
{
    char *f = filters("type", "container", "label", label);
    struct ev_state s = {.cb = cb, .data = data};
    char sn[32] = "";
    if (since > 0)
        snprintf(sn, sizeof(sn), "&since=%lld", since);
    struct req r = {.method = "GET",
                    .path = xasprintf("/events?filters=%s%s", f, sn),
                    .stream = events_stream,
                    .stream_data = &s,
                    .cancel = cancel};
    free(f);
    int rc = do_req(c, &r, err, errlen);
    free(s.line.p);
    bool stopped_by_cb = r.stream_rc != 0;
    req_free(&r);
    if (rc == -ECANCELED || stopped_by_cb)
        return 0;
    if (rc == 0) {
        seterr(err, errlen, "the Docker engine at unix://%s closed the event stream", c->sock);
        return -EPIPE;
    }
    return rc;
}

/* runc's words for a program it could not run: `... starting container
 * process caused: exec: "PROG": REASON: unknown`. */
int dk_start_error(const char *msg, const char *image, char *out, size_t len)
{
    const char *e = strstr(msg, "exec: \"");
    if (!e)
        return -ENOENT;
    const char *prog = e + 7, *q = strstr(prog, "\": ");
    if (!q)
        return -ENOENT;
    const char *why = q + 3;
    size_t wl = strlen(why);
    while (wl && (why[wl - 1] == '\n' || why[wl - 1] == ' '))
        wl--;
    if (wl > 9 && strncmp(why + wl - 9, ": unknown", 9) == 0)
        wl -= 9;
    snprintf(out, len, "command: cannot run \"%.*s\" in image %s: %.*s", (int)(q - prog), prog,
             image, (int)wl, why);
    return 0;
}
