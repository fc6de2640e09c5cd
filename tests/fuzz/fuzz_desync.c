/* fuzz_desync.c — the desync oracle: libFuzzer target that runs arbitrary
 * bytes through the proxy's own parse → frame → rewrite path (src/http and
 * src/proxy/rewrite.c, as conn.c uses them) and re-reads what the proxy
 * would send with a separate, strict reference parser standing for the next
 * hop. The next hop must see exactly the messages the proxy parsed: the
 * same count, methods, targets (origin-form), statuses and body lengths,
 * with one Host and unambiguous framing, and nothing left over.
 *
 * Byte 0 picks the direction: even = a client's request stream (bit 1:
 * the peer is a trusted proxy), odd = a backend's response stream to GET
 * requests (bit 1: the client is HTTP/1.0). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http/http.h"
#include "proxy/rewrite.h"

#define MAXMSG 16
#define OUTCAP (1u << 20)

struct seen {
    char method[33];
    char target[512];
    size_t target_len;
    int status;
    uint64_t body;
};

static struct http_msg m;
static char out[OUTCAP];
static struct seen want[MAXMSG], got[MAXMSG];

#define FAIL() __builtin_trap()

/* ---- the reference next hop: strict, written apart from src/http ---- */

static int tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* One CRLF-terminated line at p[0..n): its length without CRLF, or -1. Bare
 * CR or LF inside a line is a failure of the sender (the proxy). */
static long line(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\r') {
            if (i + 1 >= n || p[i + 1] != '\n')
                FAIL();
            return (long)i;
        }
        if (p[i] == '\n' || p[i] == '\0')
            FAIL();
    }
    return -1;
}

struct ref_head {
    int64_t cl;
    bool chunked, close, has_host;
};

/* Header lines until the empty line; the framing fields must be
 * unambiguous. Returns bytes consumed, -1 when incomplete. */
static long ref_headers(const char *p, size_t n, struct ref_head *h, bool request)
{
    size_t k = 0;
    int ncl = 0, nte = 0, nhost = 0;
    h->cl = -1;
    h->chunked = h->close = false;
    for (;;) {
        long l = line(p + k, n - k);
        if (l < 0)
            return -1;
        const char *s = p + k;
        k += (size_t)l + 2;
        if (l == 0)
            break;
        long c = 0;
        while (c < l && tchar((unsigned char)s[c]))
            c++;
        if (c == 0 || c >= l || s[c] != ':')
            FAIL(); /* not a field line */
        const char *v = s + c + 1, *e = s + l;
        while (v < e && (*v == ' ' || *v == '\t'))
            v++;
        while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        size_t vl = (size_t)(e - v);
        if (c == 14 && strncasecmp(s, "content-length", 14) == 0) {
            ncl++;
            if (vl == 0 || vl > 18)
                FAIL();
            int64_t x = 0;
            for (size_t i = 0; i < vl; i++) {
                if (v[i] < '0' || v[i] > '9')
                    FAIL();
                x = x * 10 + (v[i] - '0');
            }
            h->cl = x;
        } else if (c == 17 && strncasecmp(s, "transfer-encoding", 17) == 0) {
            nte++;
            /* a request's coding must be exactly chunked; a response may
             * name others before it */
            if (vl >= 7 && strncasecmp(e - 7, "chunked", 7) == 0 && (!request || vl == 7))
                h->chunked = true;
            else
                FAIL();
        } else if (c == 4 && strncasecmp(s, "host", 4) == 0) {
            nhost++;
        } else if (c == 10 && strncasecmp(s, "connection", 10) == 0) {
            for (size_t i = 0; i + 5 <= vl; i++)
                if (strncasecmp(v + i, "close", 5) == 0)
                    h->close = true;
        }
    }
    if (ncl > 1 || nte > 1 || (ncl && nte))
        FAIL();
    if (request && nhost != 1)
        FAIL();
    h->has_host = nhost == 1;
    return (long)k;
}

/* A chunked body; returns bytes consumed (*data = decoded length), -1 when
 * incomplete. Trailer lines must be field lines. */
static long ref_chunked(const char *p, size_t n, uint64_t *data)
{
    size_t k = 0;
    *data = 0;
    for (;;) {
        long l = line(p + k, n - k);
        if (l < 0)
            return -1;
        uint64_t sz = 0;
        long i = 0;
        for (; i < l && i < 15; i++) {
            char ch = p[k + (size_t)i];
            int d = ch >= '0' && ch <= '9' ? ch - '0' : (ch | 0x20) >= 'a' && (ch | 0x20) <= 'f' ? (ch | 0x20) - 'a' + 10 : -1;
            if (d < 0)
                break;
            sz = sz * 16 + (uint64_t)d;
        }
        if (i == 0 || (i < l && p[k + (size_t)i] != ';'))
            FAIL();
        k += (size_t)l + 2;
        if (sz == 0)
            break;
        if (n - k < sz + 2)
            return -1;
        if (p[k + sz] != '\r' || p[k + sz + 1] != '\n')
            FAIL();
        k += sz + 2;
        *data += sz;
    }
    for (;;) { /* trailers */
        long l = line(p + k, n - k);
        if (l < 0)
            return -1;
        const char *s = p + k;
        k += (size_t)l + 2;
        if (l == 0)
            return (long)k;
        long c = 0;
        while (c < l && tchar((unsigned char)s[c]))
            c++;
        if (c == 0 || c >= l || s[c] != ':')
            FAIL();
        if ((c == 14 && strncasecmp(s, "content-length", 14) == 0) ||
            (c == 17 && strncasecmp(s, "transfer-encoding", 17) == 0) ||
            (c == 4 && strncasecmp(s, "host", 4) == 0))
            FAIL();
    }
}

/* ---- the proxy's side ---- */

static size_t body_of(const char *p, size_t n, bool chunked, int64_t cl, uint64_t *data, bool *ok)
{
    *ok = true;
    *data = 0;
    if (chunked) {
        struct http_chunked ch;
        http_chunked_init(&ch);
        size_t k = 0;
        while (!ch.done) {
            size_t dl;
            long r = http_chunked_feed(&ch, p + k, n - k, &dl);
            if (r < 0 || (r == 0 && !ch.done)) {
                *ok = false;
                return 0;
            }
            *data += dl;
            k += (size_t)r;
        }
        return k;
    }
    if (cl > 0) {
        if ((uint64_t)cl > n) {
            *ok = false;
            return 0;
        }
        *data = (uint64_t)cl;
        return (size_t)cl;
    }
    return 0;
}

static void requests(const char *in, size_t n, bool trusted)
{
    size_t pos = 0, olen = 0;
    int nw = 0;
    while (nw < MAXMSG && pos < n) {
        int r = http_parse_request(in + pos, n - pos, &m, HTTP_MAX_HEADERS);
        if (r <= 0)
            break; /* incomplete, or answered by the proxy itself */
        if (m.path == NULL || m.path_len == 0)
            FAIL();
        struct obuf o = {.p = out + olen, .cap = (uint32_t)(OUTCAP - olen)};
        bool chunked = (m.flags & HTTP_F_CHUNKED) != 0;
        struct rw_req rq = {
            .peer_ip = "192.0.2.1",
            .client_ip = "192.0.2.1",
            .peer_trusted = trusted,
            .scheme = "http",
            .listen_addr = "127.0.0.1:80",
            .rid = m.xrid < 0 ? "0123456789abcdef0123456789abcdef" : NULL,
            .rid_len = 32,
            .body = chunked ? RW_BODY_CHUNKED : m.content_length > 0 ? RW_BODY_LENGTH : RW_BODY_NONE,
            .content_length = m.content_length > 0 ? (uint64_t)m.content_length : 0,
            .upgrade = (m.flags & HTTP_F_UPGRADE) != 0,
        };
        rw_request_head(&o, &m, &rq);
        if (o.overflow)
            break;
        struct seen *w = &want[nw];
        memcpy(w->method, m.method_s, m.method_len);
        w->method[m.method_len] = '\0';
        w->target_len = m.path_len < sizeof(w->target) ? m.path_len : sizeof(w->target);
        memcpy(w->target, m.path, w->target_len);
        bool ok;
        size_t bl = body_of(in + pos + r, n - pos - (size_t)r, chunked, m.content_length, &w->body, &ok);
        if (!ok)
            break;
        /* the body goes as it came (a chunked one with its framing) */
        if (bl > OUTCAP - olen - o.len)
            break;
        memcpy(out + olen + o.len, in + pos + (size_t)r, bl);
        olen += o.len + bl;
        pos += (size_t)r + bl;
        nw++;
        if (rq.upgrade)
            break; /* a tunnel follows: no more HTTP */
    }
    /* the next hop reads it back */
    size_t k = 0;
    int ng = 0;
    while (k < olen) {
        if (ng >= nw)
            FAIL(); /* more requests than the proxy parsed */
        long l = line(out + k, olen - k);
        if (l < 0)
            FAIL();
        const char *s = out + k;
        const char *sp1 = memchr(s, ' ', (size_t)l);
        if (!sp1)
            FAIL();
        const char *sp2 = memchr(sp1 + 1, ' ', (size_t)(s + l - sp1 - 1));
        if (!sp2 || (size_t)(s + l - sp2) != 9 || memcmp(sp2, " HTTP/1.1", 9) != 0)
            FAIL();
        struct seen *g = &got[ng];
        size_t ml = (size_t)(sp1 - s);
        if (ml == 0 || ml > 32)
            FAIL();
        memcpy(g->method, s, ml);
        g->method[ml] = '\0';
        g->target_len = (size_t)(sp2 - sp1 - 1);
        if (g->target_len > sizeof(g->target))
            g->target_len = sizeof(g->target);
        memcpy(g->target, sp1 + 1, g->target_len);
        k += (size_t)l + 2;
        struct ref_head h;
        long hl = ref_headers(out + k, olen - k, &h, true);
        if (hl < 0)
            FAIL();
        k += (size_t)hl;
        g->body = 0;
        if (h.chunked) {
            long bl = ref_chunked(out + k, olen - k, &g->body);
            if (bl < 0)
                FAIL();
            k += (size_t)bl;
        } else if (h.cl > 0) {
            if ((uint64_t)h.cl > olen - k)
                FAIL();
            g->body = (uint64_t)h.cl;
            k += (size_t)h.cl;
        }
        if (strcmp(g->method, want[ng].method) != 0 || g->target_len != want[ng].target_len ||
            memcmp(g->target, want[ng].target, g->target_len) != 0 || g->body != want[ng].body)
            FAIL();
        ng++;
    }
    if (ng != nw)
        FAIL();
}

static void responses(const char *in, size_t n, bool client10)
{
    size_t pos = 0, olen = 0;
    int nw = 0;
    bool closed = false;
    while (nw < MAXMSG && pos < n && !closed) {
        int r = http_parse_response(in + pos, n - pos, &m, HTTP_MAX_HEADERS);
        if (r <= 0)
            break; /* incomplete, or a 502 of the proxy's own */
        struct obuf o = {.p = out + olen, .cap = (uint32_t)(OUTCAP - olen)};
        if (m.status < 200 && m.status != 101) {
            /* interim: passed on to an HTTP/1.1 client, rewritten */
            if (!client10) {
                struct rw_rsp ri = {.body = RW_RSP_NONE, .content_length = -1};
                rw_response_head(&o, &m, &ri);
                if (o.overflow)
                    break;
                olen += o.len;
                want[nw].status = m.status;
                want[nw].body = 0;
                nw++;
            }
            pos += (size_t)r;
            continue;
        }
        if (m.status == 101)
            break; /* never expected to a plain GET: the proxy answers 502 */
        bool has_body = http_response_has_body(HTTP_GET, m.status);
        bool chunked = has_body && (m.flags & HTTP_F_CHUNKED);
        enum rw_rbody rb = !has_body ? RW_RSP_NONE
                           : chunked ? (client10 ? RW_RSP_UNTIL_CLOSE : RW_RSP_CHUNKED)
                           : m.content_length >= 0 ? RW_RSP_LENGTH
                                                   : RW_RSP_UNTIL_CLOSE;
        struct rw_rsp rs = {
            .body = rb,
            .content_length = m.content_length,
            .close = rb == RW_RSP_UNTIL_CLOSE,
            .client_http10 = client10,
        };
        rw_response_head(&o, &m, &rs);
        if (o.overflow)
            break;
        size_t head_at = olen; /* an incomplete message is left out whole */
        olen += o.len;
        want[nw].status = m.status;
        pos += (size_t)r;
        if (rb == RW_RSP_UNTIL_CLOSE && !chunked) {
            /* until the backend closes: the rest of the input */
            size_t bl = n - pos;
            if (bl > OUTCAP - olen) {
                olen = head_at;
                break;
            }
            memcpy(out + olen, in + pos, bl);
            olen += bl;
            want[nw++].body = bl;
            closed = true;
            break;
        }
        bool ok;
        uint64_t data;
        size_t bl = 0;
        ok = true;
        data = 0;
        if (has_body)
            bl = body_of(in + pos, n - pos, chunked, m.content_length, &data, &ok);
        if (!ok) {
            olen = head_at;
            break;
        }
        if (rb == RW_RSP_UNTIL_CLOSE) {
            /* de-chunked for an HTTP/1.0 client: only the data goes */
            struct http_chunked ch;
            http_chunked_init(&ch);
            size_t k = 0;
            while (!ch.done) {
                size_t dl;
                long rr = http_chunked_feed(&ch, in + pos + k, bl - k, &dl);
                if (rr <= 0 && !ch.done)
                    FAIL();
                if (dl) {
                    if (dl > OUTCAP - olen)
                        return;
                    memcpy(out + olen, in + pos + k, dl);
                    olen += dl;
                }
                k += (size_t)rr;
            }
            want[nw++].body = data;
            closed = true;
            break;
        }
        if (bl > OUTCAP - olen) {
            olen = head_at;
            break;
        }
        memcpy(out + olen, in + pos, bl);
        olen += bl;
        pos += bl;
        want[nw++].body = data;
    }
    /* the client reads it back: every response answers a GET */
    size_t k = 0;
    int ng = 0;
    while (k < olen) {
        if (ng >= nw)
            FAIL();
        long l = line(out + k, olen - k);
        if (l < 12 || memcmp(out + k, "HTTP/1.1 ", 9) != 0)
            FAIL();
        int st = (out[k + 9] - '0') * 100 + (out[k + 10] - '0') * 10 + (out[k + 11] - '0');
        k += (size_t)l + 2;
        struct ref_head h;
        long hl = ref_headers(out + k, olen - k, &h, false);
        if (hl < 0)
            FAIL();
        k += (size_t)hl;
        uint64_t body = 0;
        if (st < 200 || st == 204 || st == 304) {
            body = 0;
        } else if (h.chunked) {
            long bl = ref_chunked(out + k, olen - k, &body);
            if (bl < 0)
                FAIL();
            k += (size_t)bl;
        } else if (h.cl >= 0) {
            if ((uint64_t)h.cl > olen - k)
                FAIL();
            body = (uint64_t)h.cl;
            k += (size_t)h.cl;
        } else {
            if (!h.close && !client10)
                FAIL(); /* close-delimited must be announced to a keep-alive client */
            body = olen - k;
            k = olen;
        }
        if (st != want[ng].status || body != want[ng].body)
            FAIL();
        ng++;
    }
    if (ng != nw)
        FAIL();
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
    if (n < 1)
        return 0;
    if (d[0] & 1)
        responses((const char *)d + 1, n - 1, (d[0] & 2) != 0);
    else
        requests((const char *)d + 1, n - 1, (d[0] & 2) != 0);
    return 0;
}
