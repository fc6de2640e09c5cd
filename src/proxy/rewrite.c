/* rewrite.c — request and response heads as the proxy forwards them. */
#include "proxy/rewrite.h"

#include <string.h>
#include <strings.h>

static void ob_hdr(struct obuf *o, const struct http_header *h)
{
    ob_put(o, h->name, h->name_len);
    ob_put(o, ": ", 2);
    ob_put(o, h->value, h->value_len);
    ob_put(o, "\r\n", 2);
}

static void ob_u64(struct obuf *o, uint64_t v)
{
    char b[24];
    int i = (int)sizeof(b);
    do {
        b[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    ob_put(o, b + i, sizeof(b) - (size_t)i);
}

/* Whether header h is named in the Connection header(s) of m. */
static bool conn_listed(const struct http_msg *m, const struct http_header *h)
{
    for (unsigned i = 0; i < m->nheaders; i++) {
        const struct http_header *c = &m->headers[i];
        if (c->id != HTTP_H_CONNECTION)
            continue;
        size_t pos = 0, tl;
        const char *t;
        while (http_list_next(c->value, c->value_len, &pos, &t, &tl))
            if (tl == h->name_len && strncasecmp(t, h->name, tl) == 0)
                return true;
    }
    return false;
}

bool rw_name_forwardable(const char *name, size_t len) { return memchr(name, '_', len) == NULL; }

/* Headers removed as hop-by-hop (RFC 9110 7.6.1). The fixed ones always;
 * others when the Connection header names them — except that a Connection
 * header never removes a field meant for every recipient: everything with
 * a known id (framing, Host, identity, X-Request-Id, Cookie, Expect...) is
 * decided by the rules of the caller, never by the sender's list. */
static bool hop_by_hop(const struct http_msg *m, const struct http_header *h, bool keep_upgrade)
{
    switch (h->id) {
    case HTTP_H_CONNECTION:
    case HTTP_H_KEEP_ALIVE:
    case HTTP_H_PROXY_CONNECTION:
    case HTTP_H_TE:
    case HTTP_H_TRAILER:
        return true;
    case HTTP_H_UPGRADE:
        return !keep_upgrade;
    case HTTP_H_OTHER:
        return (m->flags & HTTP_F_CONN_OTHER) && conn_listed(m, h);
    default:
        return false;
    }
}

static bool is_identity(unsigned id)
{
    return id == HTTP_H_X_FORWARDED_FOR || id == HTTP_H_X_FORWARDED_PROTO ||
           id == HTTP_H_X_FORWARDED_HOST || id == HTTP_H_FORWARDED || id == HTTP_H_X_REAL_IP;
}

/* The values of every header `id` of m, comma-joined, in order; false when
 * there is none. */
static bool put_joined(struct obuf *o, const struct http_msg *m, unsigned id)
{
    bool any = false;
    for (unsigned i = 0; i < m->nheaders; i++) {
        const struct http_header *h = &m->headers[i];
        if (h->id != id || h->value_len == 0)
            continue;
        if (any)
            ob_put(o, ", ", 2);
        ob_put(o, h->value, h->value_len);
        any = true;
    }
    return any;
}

static const struct http_header *first(const struct http_msg *m, unsigned id)
{
    for (unsigned i = 0; i < m->nheaders; i++)
        if (m->headers[i].id == id && m->headers[i].value_len)
            return &m->headers[i];
    return NULL;
}

/* A Forwarded node (RFC 7239 6): IPv6 in brackets and quotes. */
static void put_forwarded_for(struct obuf *o, const char *ip)
{
    if (strchr(ip, ':')) {
        ob_str(o, "for=\"[");
        ob_str(o, ip);
        ob_str(o, "]\"");
    } else {
        OB_LIT(o, "for=");
        ob_str(o, ip);
    }
}

/* A quoted-string value: the host is token-ish but may hold ':' or '['. */
static void put_quoted(struct obuf *o, const char *v, size_t n)
{
    ob_put(o, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        if (v[i] == '"' || v[i] == '\\')
            ob_put(o, "\\", 1);
        ob_put(o, v + i, 1);
    }
    ob_put(o, "\"", 1);
}

void rw_request_head(struct obuf *o, const struct http_msg *m, const struct rw_req *r)
{
    ob_put(o, m->method_s, m->method_len);
    ob_put(o, " ", 1);
    ob_put(o, m->path, m->path_len); /* origin-form: an absolute URI's authority went to Host */
    OB_LIT(o, " HTTP/1.1\r\n");
    for (unsigned i = 0; i < m->nheaders; i++) {
        const struct http_header *h = &m->headers[i];
        if (!rw_name_forwardable(h->name, h->name_len))
            continue;
        if (h->id == HTTP_H_CONTENT_LENGTH || h->id == HTTP_H_TRANSFER_ENCODING)
            continue; /* framing is ours, written below */
        if (is_identity(h->id))
            continue; /* written below, from the peer or a trusted proxy */
        if (hop_by_hop(m, h, r->upgrade))
            continue;
        if (h->id == HTTP_H_OTHER && ((h->name_len == 14 && strncasecmp(h->name, "x-tako-service", 14) == 0) ||
                                      (h->name_len == 17 && strncasecmp(h->name, "x-tako-peer-check", 17) == 0)))
            continue; /* between servers only: set per backend by the connection code */
        ob_hdr(o, h);
    }
    const char *host = NULL;
    size_t host_len = 0;
    if (m->host >= 0) {
        host = m->headers[m->host].value;
        host_len = m->headers[m->host].value_len;
    } else if (m->authority) {
        host = m->authority;
        host_len = m->authority_len;
        OB_LIT(o, "Host: ");
        ob_put(o, host, host_len);
        ob_put(o, "\r\n", 2);
    } else {
        OB_LIT(o, "Host: ");
        ob_str(o, r->listen_addr);
        ob_put(o, "\r\n", 2);
    }
    if (r->body == RW_BODY_LENGTH || (r->body == RW_BODY_NONE && m->content_length == 0)) {
        OB_LIT(o, "Content-Length: ");
        ob_u64(o, r->body == RW_BODY_LENGTH ? r->content_length : 0);
        ob_put(o, "\r\n", 2);
    } else if (r->body == RW_BODY_CHUNKED) {
        OB_LIT(o, "Transfer-Encoding: chunked\r\n");
    }
    /* identity: a trusted proxy's chain is kept and extended, anyone else's
     * claims are dropped and replaced by what this hop knows */
    OB_LIT(o, "X-Forwarded-For: ");
    if (r->peer_trusted && put_joined(o, m, HTTP_H_X_FORWARDED_FOR))
        ob_put(o, ", ", 2);
    ob_str(o, r->peer_ip);
    ob_put(o, "\r\n", 2);
    const struct http_header *tp = r->peer_trusted ? first(m, HTTP_H_X_FORWARDED_PROTO) : NULL;
    OB_LIT(o, "X-Forwarded-Proto: ");
    if (tp)
        ob_put(o, tp->value, tp->value_len);
    else
        ob_str(o, r->scheme);
    ob_put(o, "\r\n", 2);
    const struct http_header *th = r->peer_trusted ? first(m, HTTP_H_X_FORWARDED_HOST) : NULL;
    if (th || host) {
        OB_LIT(o, "X-Forwarded-Host: ");
        if (th)
            ob_put(o, th->value, th->value_len);
        else
            ob_put(o, host, host_len);
        ob_put(o, "\r\n", 2);
    }
    OB_LIT(o, "X-Real-IP: ");
    ob_str(o, r->client_ip);
    ob_put(o, "\r\n", 2);
    OB_LIT(o, "Forwarded: ");
    if (r->peer_trusted && put_joined(o, m, HTTP_H_FORWARDED))
        ob_put(o, ", ", 2);
    put_forwarded_for(o, r->peer_ip);
    if (host) {
        OB_LIT(o, ";host=");
        put_quoted(o, host, host_len);
    }
    OB_LIT(o, ";proto=");
    ob_str(o, r->scheme);
    ob_put(o, "\r\n", 2);
    if (r->rid) {
        OB_LIT(o, "X-Request-Id: ");
        ob_put(o, r->rid, r->rid_len);
        ob_put(o, "\r\n", 2);
    }
    if (r->upgrade)
        OB_LIT(o, "Connection: upgrade\r\n");
    ob_put(o, "\r\n", 2);
}

void rw_response_head(struct obuf *o, const struct http_msg *m, const struct rw_rsp *r)
{
    char sl[13] = "HTTP/1.1 000 ";
    sl[9] = (char)('0' + m->status / 100 % 10);
    sl[10] = (char)('0' + m->status / 10 % 10);
    sl[11] = (char)('0' + m->status % 10);
    ob_put(o, sl, sizeof(sl));
    if (m->reason_len)
        ob_put(o, m->reason, m->reason_len);
    else
        ob_str(o, http_reason(m->status));
    ob_put(o, "\r\n", 2);
    bool is101 = m->status == 101;
    for (unsigned i = 0; i < m->nheaders; i++) {
        const struct http_header *h = &m->headers[i];
        if (h->id == HTTP_H_CONTENT_LENGTH)
            continue; /* framing is ours, written below */
        if (h->id == HTTP_H_TRANSFER_ENCODING) {
            /* passed through chunked: the codings stay as the backend said */
            if (r->body == RW_RSP_CHUNKED)
                ob_hdr(o, h);
            continue;
        }
        if (hop_by_hop(m, h, is101))
            continue;
        if (h->id == HTTP_H_OTHER && h->name_len == 11 && strncasecmp(h->name, "x-tako-peer", 11) == 0)
            continue; /* another server's word to this one (its own 503), not the client's */
        ob_hdr(o, h);
    }
    if (r->body == RW_RSP_LENGTH ||
        (r->body == RW_RSP_NONE && r->content_length >= 0 && m->status >= 200 && m->status != 204)) {
        OB_LIT(o, "Content-Length: ");
        ob_u64(o, (uint64_t)r->content_length);
        ob_put(o, "\r\n", 2);
    }
    if (r->set_cookie_name) {
        OB_LIT(o, "Set-Cookie: ");
        ob_str(o, r->set_cookie_name);
        ob_put(o, "=", 1);
        ob_str(o, r->set_cookie_val);
        OB_LIT(o, "; Path=/; HttpOnly\r\n");
    }
    if (r->hsts_max_age && m->status >= 200) {
        ob_str(o, "Strict-Transport-Security: max-age=");
        ob_u64(o, r->hsts_max_age);
        ob_put(o, "\r\n", 2);
    }
    if (is101)
        OB_LIT(o, "Connection: upgrade\r\n");
    else if (m->status >= 200 && r->close)
        OB_LIT(o, "Connection: close\r\n");
    else if (m->status >= 200 && r->client_http10)
        OB_LIT(o, "Connection: keep-alive\r\n");
    ob_put(o, "\r\n", 2);
}
