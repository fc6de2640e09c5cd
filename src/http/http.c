/* http.c — strict in-place HTTP/1.1 head parser and chunked framer. */
#include "http/http.h"

#include <string.h>
#include <strings.h>

/* Character classes, one bit each. */
enum {
    C_TOKEN = 1,  /* tchar (RFC 9110 5.6.2) */
    C_VALUE = 2,  /* field-vchar, SP, HTAB, obs-text */
    C_TARGET = 4, /* request-target: visible ASCII and obs-text */
    C_HOST = 8,   /* what a Host value may hold */
    C_HEX = 16,
};

static uint8_t cls[256];

__attribute__((constructor)) static void http_init_classes(void)
{
    const char *tok = "!#$%&'*+-.^_`|~";
    for (int c = 0; c < 256; c++) {
        uint8_t v = 0;
        bool alnum = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
        if (alnum || (c && strchr(tok, c)))
            v |= C_TOKEN;
        if (c == '\t' || (c >= 0x20 && c != 0x7f))
            v |= C_VALUE;
        if (c > 0x20 && c != 0x7f)
            v |= C_TARGET;
        if (alnum || (c && strchr("-._~:[]%!$&'()*+,;=", c)))
            v |= C_HOST;
        if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))
            v |= C_HEX;
        cls[c] = v;
    }
}

#define IS(c, k) (cls[(unsigned char)(c)] & (k))

bool http_token_eq(const char *p, size_t n, const char *lit)
{
    return strlen(lit) == n && strncasecmp(p, lit, n) == 0;
}

bool http_list_next(const char *v, size_t n, size_t *pos, const char **tok, size_t *tlen)
{
    size_t i = *pos;
    while (i < n) {
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t s = i;
        while (i < n && v[i] != ',')
            i++;
        size_t e = i;
        while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
            e--;
        if (e > s) {
            *pos = i;
            *tok = v + s;
            *tlen = e - s;
            return true;
        }
    }
    *pos = n;
    return false;
}

bool http_list_has(const char *v, size_t n, const char *lit)
{
    size_t pos = 0, tl;
    const char *t;
    while (http_list_next(v, n, &pos, &t, &tl))
        if (http_token_eq(t, tl, lit))
            return true;
    return false;
}

static enum http_hdr_id header_id(const char *n, size_t len)
{
#define H(lit, id)                                                                            \
    if (len == sizeof(lit) - 1 && strncasecmp(n, lit, len) == 0)                              \
        return id;
    switch (len) {
    case 2:
        H("te", HTTP_H_TE);
        break;
    case 9:
        H("forwarded", HTTP_H_FORWARDED);
        H("x-real-ip", HTTP_H_X_REAL_IP);
        break;
    case 4:
        H("host", HTTP_H_HOST);
        break;
    case 6:
        H("expect", HTTP_H_EXPECT);
        H("cookie", HTTP_H_COOKIE);
        break;
    case 7:
        H("trailer", HTTP_H_TRAILER);
        H("upgrade", HTTP_H_UPGRADE);
        break;
    case 10:
        H("connection", HTTP_H_CONNECTION);
        H("keep-alive", HTTP_H_KEEP_ALIVE);
        break;
    case 12:
        H("x-request-id", HTTP_H_X_REQUEST_ID);
        break;
    case 14:
        H("content-length", HTTP_H_CONTENT_LENGTH);
        break;
    case 15:
        H("x-forwarded-for", HTTP_H_X_FORWARDED_FOR);
        break;
    case 16:
        H("proxy-connection", HTTP_H_PROXY_CONNECTION);
        H("x-forwarded-host", HTTP_H_X_FORWARDED_HOST);
        break;
    case 17:
        H("transfer-encoding", HTTP_H_TRANSFER_ENCODING);
        H("x-forwarded-proto", HTTP_H_X_FORWARDED_PROTO);
        break;
    case 18:
        H("proxy-authenticate", HTTP_H_PROXY_AUTHENTICATE);
        break;
    case 19:
        H("proxy-authorization", HTTP_H_PROXY_AUTHORIZATION);
        break;
    }
#undef H
    return HTTP_H_OTHER;
}

static enum http_method method_id(const char *m, size_t n)
{
#define M(lit, id)                                                                            \
    if (n == sizeof(lit) - 1 && memcmp(m, lit, n) == 0)                                       \
        return id;
    switch (n) {
    case 3:
        M("GET", HTTP_GET);
        M("PUT", HTTP_PUT);
        break;
    case 4:
        M("HEAD", HTTP_HEAD);
        M("POST", HTTP_POST);
        break;
    case 5:
        M("PATCH", HTTP_PATCH);
        M("TRACE", HTTP_TRACE);
        break;
    case 6:
        M("DELETE", HTTP_DELETE);
        break;
    case 7:
        M("OPTIONS", HTTP_OPTIONS);
        M("CONNECT", HTTP_CONNECT);
        break;
    }
#undef M
    return HTTP_OTHER;
}

/* Parse "HTTP/1.x" at p (8 bytes available or fewer). Returns 1 on success
 * with *minor set, 0 when more bytes are needed, or an HTTP_E_* error. */
static int parse_version(const char *p, const char *end, uint8_t *minor)
{
    static const char pre[] = "HTTP/";
    size_t avail = (size_t)(end - p);
    for (size_t i = 0; i < 5; i++) {
        if (i >= avail)
            return 0;
        if (p[i] != pre[i])
            return HTTP_E_BAD;
    }
    if (avail < 8) {
        for (size_t i = 5; i < avail; i++)
            if (i != 6 ? !(p[i] >= '0' && p[i] <= '9') : p[i] != '.')
                return HTTP_E_BAD;
        return 0;
    }
    if (!(p[5] >= '0' && p[5] <= '9') || p[6] != '.' || !(p[7] >= '0' && p[7] <= '9'))
        return HTTP_E_BAD;
    if (p[5] != '1' || p[7] > '1')
        return HTTP_E_VERSION;
    *minor = (uint8_t)(p[7] - '0');
    return 1;
}

/* Parse header lines from *pp until the empty line. Returns 1 when the
 * empty line was consumed, or 0 / HTTP_E_*. */
static int parse_headers(const char **pp, const char *end, struct http_msg *m,
                         unsigned max_headers)
{
    const char *p = *pp;
    for (;;) {
        if (p >= end)
            return 0;
        if (*p == '\r') {
            if (p + 1 >= end)
                return 0;
            if (p[1] != '\n')
                return HTTP_E_BAD;
            *pp = p + 2;
            return 1;
        }
        /* obs-fold, a line starting with whitespace, and bare LF are refused */
        const char *name = p;
        while (p < end && IS(*p, C_TOKEN))
            p++;
        if (p >= end)
            return 0;
        if (*p != ':' || p == name)
            return HTTP_E_BAD;
        size_t name_len = (size_t)(p - name);
        p++;
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        const char *val = p;
        while (p < end && IS(*p, C_VALUE))
            p++;
        if (p >= end)
            return 0;
        if (*p != '\r')
            return HTTP_E_BAD; /* bare LF, NUL or another control */
        if (p + 1 >= end)
            return 0;
        if (p[1] != '\n')
            return HTTP_E_BAD;
        const char *vend = p;
        while (vend > val && (vend[-1] == ' ' || vend[-1] == '\t'))
            vend--;
        p += 2;
        if (m->nheaders >= max_headers)
            return HTTP_E_TOO_LARGE;
        if (name_len > 0xffff)
            return HTTP_E_TOO_LARGE;
        struct http_header *h = &m->headers[m->nheaders];
        h->name = name;
        h->name_len = (uint16_t)name_len;
        h->value = val;
        h->value_len = (uint32_t)(vend - val);
        h->id = (uint16_t)header_id(name, name_len);
        m->nheaders++;
    }
}

/* Interpret the headers the framing depends on. */
static int apply_headers(struct http_msg *m, bool request)
{
    bool have_cl = false, have_te = false, have_upgrade = false, conn_upgrade = false;
    for (unsigned i = 0; i < m->nheaders; i++) {
        struct http_header *h = &m->headers[i];
        const char *v = h->value;
        size_t n = h->value_len;
        switch (h->id) {
        case HTTP_H_CONTENT_LENGTH: {
            if (have_cl || n == 0 || n > 18)
                return HTTP_E_BAD;
            int64_t cl = 0;
            for (size_t k = 0; k < n; k++) {
                if (v[k] < '0' || v[k] > '9')
                    return HTTP_E_BAD;
                cl = cl * 10 + (v[k] - '0');
            }
            have_cl = true;
            m->content_length = cl;
            break;
        }
        case HTTP_H_TRANSFER_ENCODING:
            if (have_te)
                return HTTP_E_BAD;
            have_te = true;
            if (http_token_eq(v, n, "chunked"))
                m->flags |= HTTP_F_CHUNKED;
            else if (request || !http_list_has(v, n, "chunked"))
                return request ? HTTP_E_NOT_IMPL : HTTP_E_BAD;
            else {
                /* a response "gzip, chunked": chunked must come last */
                size_t e = n;
                while (e > 0 && (v[e - 1] == ' ' || v[e - 1] == '\t'))
                    e--;
                if (e < 7 || strncasecmp(v + e - 7, "chunked", 7) != 0)
                    return HTTP_E_BAD;
                m->flags |= HTTP_F_CHUNKED;
            }
            break;
        case HTTP_H_CONNECTION:
            if (m->connection < 0)
                m->connection = (int)i;
            {
                size_t pos = 0, tl;
                const char *t;
                while (http_list_next(v, n, &pos, &t, &tl)) {
                    if (http_token_eq(t, tl, "close"))
                        m->flags |= HTTP_F_CLOSE;
                    else if (http_token_eq(t, tl, "keep-alive"))
                        m->flags |= HTTP_F_KEEPALIVE;
                    else if (http_token_eq(t, tl, "upgrade"))
                        conn_upgrade = true;
                    else
                        m->flags |= HTTP_F_CONN_OTHER;
                }
            }
            break;
        case HTTP_H_UPGRADE:
            have_upgrade = n > 0;
            break;
        case HTTP_H_HOST:
            if (!request)
                break;
            if (m->host >= 0)
                return HTTP_E_BAD;
            for (size_t k = 0; k < n; k++)
                if (!IS(v[k], C_HOST))
                    return HTTP_E_BAD;
            m->host = (int)i;
            break;
        case HTTP_H_EXPECT:
            if (request && http_token_eq(v, n, "100-continue"))
                m->flags |= HTTP_F_EXPECT_100;
            break;
        case HTTP_H_X_FORWARDED_FOR:
            if (m->xff < 0)
                m->xff = (int)i;
            break;
        case HTTP_H_X_REQUEST_ID:
            if (m->xrid < 0)
                m->xrid = (int)i;
            break;
        case HTTP_H_COOKIE:
            if (m->cookie < 0)
                m->cookie = (int)i;
            break;
        default:
            break;
        }
    }
    if (have_cl && have_te)
        return HTTP_E_BAD;
    if (have_te && m->minor == 0 && request)
        return HTTP_E_BAD;
    if (conn_upgrade && have_upgrade)
        m->flags |= HTTP_F_UPGRADE;
    if (request && m->minor == 1 && m->host < 0)
        return HTTP_E_BAD;
    return 0;
}

/* Split the request-target into path and authority (RFC 9112 3.2). An
 * absolute-form target's authority replaces Host (3.2.2): a Host that
 * differs is refused, so the backend can never see another host than the
 * one the request was routed on. */
static int split_target(struct http_msg *m)
{
    const char *t = m->target;
    size_t n = m->target_len, k;
    if (t[0] == '/') {
        m->path = t;
        m->path_len = (uint32_t)n;
        return 0;
    }
    if (n == 1 && t[0] == '*')
        return m->method == HTTP_OPTIONS ? (m->path = t, m->path_len = 1, 0) : HTTP_E_BAD;
    if (n > 7 && strncasecmp(t, "http://", 7) == 0)
        k = 7;
    else if (n > 8 && strncasecmp(t, "https://", 8) == 0)
        k = 8;
    else
        return HTTP_E_BAD;
    size_t a = k;
    while (k < n && t[k] != '/' && t[k] != '?' && t[k] != '#')
        k++;
    if (k == a || (k < n && t[k] == '#'))
        return HTTP_E_BAD;
    for (size_t i = a; i < k; i++)
        if (!IS(t[i], C_HOST) || t[i] == '@')
            return HTTP_E_BAD; /* userinfo or junk in the authority */
    m->authority = t + a;
    m->authority_len = (uint32_t)(k - a);
    if (k == n) {
        m->path = "/";
        m->path_len = 1;
    } else {
        m->path = t + k;
        m->path_len = (uint32_t)(n - k);
    }
    if (m->host >= 0) {
        const struct http_header *h = &m->headers[m->host];
        if (h->value_len != m->authority_len || strncasecmp(h->value, m->authority, h->value_len) != 0)
            return HTTP_E_BAD;
    }
    return 0;
}

static void msg_reset(struct http_msg *m)
{
    m->method = HTTP_OTHER;
    m->method_s = m->target = m->reason = NULL;
    m->path = m->authority = NULL;
    m->method_len = 0;
    m->target_len = m->reason_len = 0;
    m->path_len = m->authority_len = 0;
    m->status = 0;
    m->minor = 1;
    m->flags = 0;
    m->content_length = -1;
    m->head_len = 0;
    m->nheaders = 0;
    m->host = m->xff = m->xrid = m->cookie = m->connection = -1;
}

int http_parse_request(const char *buf, size_t len, struct http_msg *m, unsigned max_headers)
{
    const char *p = buf, *end = buf + len;
    msg_reset(m);
    if (max_headers > HTTP_MAX_HEADERS)
        max_headers = HTTP_MAX_HEADERS;
    /* empty lines before the request line */
    while (end - p >= 2 && p[0] == '\r' && p[1] == '\n')
        p += 2;
    if (p >= end || (end - p == 1 && *p == '\r'))
        return HTTP_INCOMPLETE;
    const char *meth = p;
    while (p < end && IS(*p, C_TOKEN))
        p++;
    if (p >= end)
        return HTTP_INCOMPLETE;
    if (*p != ' ' || p == meth || p - meth > 32)
        return HTTP_E_BAD;
    m->method_s = meth;
    m->method_len = (uint16_t)(p - meth);
    m->method = method_id(meth, (size_t)(p - meth));
    p++;
    const char *tgt = p;
    while (p < end && IS(*p, C_TARGET))
        p++;
    if (p >= end)
        return HTTP_INCOMPLETE;
    if (*p != ' ' || p == tgt)
        return HTTP_E_BAD;
    m->target = tgt;
    m->target_len = (uint32_t)(p - tgt);
    p++;
    int r = parse_version(p, end, &m->minor);
    if (r <= 0)
        return r;
    p += 8;
    if (p >= end || (*p == '\r' && p + 1 >= end))
        return HTTP_INCOMPLETE;
    if (p[0] != '\r' || p[1] != '\n')
        return HTTP_E_BAD;
    p += 2;
    r = parse_headers(&p, end, m, max_headers);
    if (r <= 0)
        return r;
    r = apply_headers(m, true);
    if (r < 0)
        return r;
    if (m->method == HTTP_CONNECT)
        return HTTP_E_NOT_IMPL;
    r = split_target(m);
    if (r < 0)
        return r;
    m->head_len = (uint32_t)(p - buf);
    return (int)m->head_len;
}

int http_parse_response(const char *buf, size_t len, struct http_msg *m, unsigned max_headers)
{
    const char *p = buf, *end = buf + len;
    msg_reset(m);
    if (max_headers > HTTP_MAX_HEADERS)
        max_headers = HTTP_MAX_HEADERS;
    int r = parse_version(p, end, &m->minor);
    if (r <= 0)
        return r == HTTP_E_VERSION ? HTTP_E_BAD : r;
    p += 8;
    /* " SSS" */
    for (int i = 0; i < 4; i++) {
        if (p + i >= end)
            return HTTP_INCOMPLETE;
        if (i == 0 ? p[i] != ' ' : !(p[i] >= '0' && p[i] <= '9'))
            return HTTP_E_BAD;
    }
    m->status = (p[1] - '0') * 100 + (p[2] - '0') * 10 + (p[3] - '0');
    if (m->status < 100)
        return HTTP_E_BAD;
    p += 4;
    if (p >= end)
        return HTTP_INCOMPLETE;
    if (*p == ' ') {
        p++;
        m->reason = p;
        while (p < end && IS(*p, C_VALUE))
            p++;
        m->reason_len = (uint32_t)(p - m->reason);
    }
    if (p >= end || (*p == '\r' && p + 1 >= end))
        return HTTP_INCOMPLETE;
    if (p[0] != '\r' || p[1] != '\n')
        return HTTP_E_BAD;
    p += 2;
    r = parse_headers(&p, end, m, max_headers);
    if (r <= 0)
        return r;
    r = apply_headers(m, false);
    if (r < 0)
        return HTTP_E_BAD;
    m->head_len = (uint32_t)(p - buf);
    return (int)m->head_len;
}

bool http_response_has_body(enum http_method method, int status)
{
    if (method == HTTP_HEAD)
        return false;
    return !(status < 200 || status == 204 || status == 304);
}

bool http_method_idempotent(enum http_method method)
{
    switch (method) {
    case HTTP_GET:
    case HTTP_HEAD:
    case HTTP_OPTIONS:
    case HTTP_PUT:
    case HTTP_DELETE:
    case HTTP_TRACE:
        return true;
    default:
        return false;
    }
}

const char *http_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 417: return "Expectation Failed";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

/* ---- chunked framing (RFC 9112 7.1) ---- */

enum {
    CH_SIZE,      /* hex digits of the chunk size */
    CH_EXT,       /* ;extension up to CR */
    CH_SIZE_LF,   /* LF after the size line's CR */
    CH_DATA,      /* chunk data */
    CH_DATA_CR,   /* CR after the data */
    CH_DATA_LF,   /* LF after the data */
    CH_TRAILER,   /* start of a trailer line, or the final CR */
    CH_TRAILER_NAME,
    CH_TRAILER_LINE,
    CH_TRAILER_LF,
    CH_END_LF, /* final LF */
};

#define CH_MAX_LINE 4096
#define CH_MAX_SIZE_DIGITS 15 /* < 2^60: no overflow, absurd sizes refused */

void http_chunked_init(struct http_chunked *c) { memset(c, 0, sizeof(*c)); }

/* Fields that frame, route or are hop-by-hop: never in a trailer section
 * (RFC 9110 6.5.1), where a recipient that merged them would reframe. */
static bool trailer_name_refused(const struct http_chunked *c)
{
    static const char *const refused[] = {
        "content-length", "transfer-encoding", "host", "connection", "keep-alive",
        "te", "upgrade", "proxy-connection",
    };
    if (c->name_len > sizeof(c->name))
        return false; /* longer than any refused name */
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
        if (strlen(refused[i]) == c->name_len && memcmp(refused[i], c->name, c->name_len) == 0)
            return true;
    return false;
}

long http_chunked_feed(struct http_chunked *c, const char *p, size_t n, size_t *data_len)
{
    *data_len = 0;
    if (c->done)
        return 0;
    if (c->state == CH_DATA) {
        size_t k = n < c->left ? n : (size_t)c->left;
        c->left -= k;
        if (c->left == 0)
            c->state = CH_DATA_CR;
        *data_len = k;
        return (long)k;
    }
    size_t i = 0;
    while (i < n) {
        unsigned char ch = (unsigned char)p[i];
        switch (c->state) {
        case CH_SIZE:
            if (IS(ch, C_HEX)) {
                if (c->size_digits >= CH_MAX_SIZE_DIGITS)
                    return -1;
                unsigned d = ch <= '9' ? ch - '0' : (ch | 0x20) - 'a' + 10;
                c->left = c->left * 16 + d;
                c->size_digits++;
            } else if (c->size_digits == 0) {
                return -1;
            } else if (ch == ';') {
                c->state = CH_EXT;
                c->line_len = 0;
            } else if (ch == '\r') {
                c->state = CH_SIZE_LF;
            } else {
                return -1;
            }
            break;
        case CH_EXT:
            if (ch == '\r')
                c->state = CH_SIZE_LF;
            else if (!IS(ch, C_VALUE) || ++c->line_len > CH_MAX_LINE)
                return -1;
            break;
        case CH_SIZE_LF:
            if (ch != '\n')
                return -1;
            c->size_digits = 0;
            if (c->left == 0) {
                c->state = CH_TRAILER;
            } else {
                c->state = CH_DATA;
                return (long)(i + 1); /* data starts on the next call */
            }
            break;
        case CH_DATA:
            return (long)i;
        case CH_DATA_CR:
            if (ch != '\r')
                return -1;
            c->state = CH_DATA_LF;
            break;
        case CH_DATA_LF:
            if (ch != '\n')
                return -1;
            c->state = CH_SIZE;
            c->left = 0;
            break;
        case CH_TRAILER:
            if (ch == '\r') {
                c->state = CH_END_LF;
            } else if (IS(ch, C_TOKEN)) {
                c->state = CH_TRAILER_NAME;
                c->line_len = 1;
                c->name[0] = (char)(ch | (ch >= 'A' && ch <= 'Z' ? 0x20 : 0));
                c->name_len = 1;
            } else {
                return -1;
            }
            break;
        case CH_TRAILER_NAME:
            if (ch == ':') {
                if (trailer_name_refused(c))
                    return -1;
                c->state = CH_TRAILER_LINE;
            } else if (!IS(ch, C_TOKEN) || ++c->line_len > CH_MAX_LINE) {
                return -1; /* not a field line: "GET /x HTTP/1.1" is no trailer */
            } else if (c->name_len < sizeof(c->name)) {
                c->name[c->name_len++] = (char)(ch | (ch >= 'A' && ch <= 'Z' ? 0x20 : 0));
            } else {
                c->name_len = sizeof(c->name) + 1; /* too long to be a refused name */
            }
            break;
        case CH_TRAILER_LINE:
            if (ch == '\r')
                c->state = CH_TRAILER_LF;
            else if (!IS(ch, C_VALUE) || ++c->line_len > CH_MAX_LINE)
                return -1;
            break;
        case CH_TRAILER_LF:
            if (ch != '\n')
                return -1;
            c->state = CH_TRAILER;
            break;
        case CH_END_LF:
            if (ch != '\n')
                return -1;
            c->done = true;
            return (long)(i + 1);
        }
        i++;
    }
    return (long)i;
}
