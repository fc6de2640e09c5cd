/* http.h — a strict, in-place HTTP/1.1 message parser: request and response
 * heads into zero-copy header slices, and a chunked-body framer.
 *
 * Nothing here allocates. Slices point into the caller's buffer, which must
 * stay unchanged while they are used. The parser refuses everything that
 * could desynchronise two HTTP implementations (request smuggling): bare CR
 * or LF, obs-fold, whitespace before a colon, duplicate or invalid
 * Content-Length, Content-Length together with Transfer-Encoding, any
 * transfer coding but a lone "chunked", invalid chunk sizes.
 */
#ifndef TAKO_HTTP_HTTP_H
#define TAKO_HTTP_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HTTP_MAX_HEADERS 100

enum http_method {
    HTTP_OTHER = 0,
    HTTP_GET,
    HTTP_HEAD,
    HTTP_POST,
    HTTP_PUT,
    HTTP_DELETE,
    HTTP_OPTIONS,
    HTTP_PATCH,
    HTTP_TRACE,
    HTTP_CONNECT,
};

/* Well-known headers the proxy acts on; everything else is HTTP_H_OTHER. */
enum http_hdr_id {
    HTTP_H_OTHER = 0,
    HTTP_H_HOST,
    HTTP_H_CONTENT_LENGTH,
    HTTP_H_TRANSFER_ENCODING,
    HTTP_H_CONNECTION,
    HTTP_H_KEEP_ALIVE,
    HTTP_H_PROXY_CONNECTION,
    HTTP_H_TE,
    HTTP_H_TRAILER,
    HTTP_H_UPGRADE,
    HTTP_H_EXPECT,
    HTTP_H_X_FORWARDED_FOR,
    HTTP_H_X_FORWARDED_PROTO,
    HTTP_H_X_FORWARDED_HOST,
    HTTP_H_X_REQUEST_ID,
    HTTP_H_COOKIE,
    HTTP_H_PROXY_AUTHORIZATION,
    HTTP_H_PROXY_AUTHENTICATE,
    HTTP_H_FORWARDED,
    HTTP_H_X_REAL_IP,
};

struct http_header {
    const char *name;
    const char *value; /* leading and trailing whitespace trimmed */
    uint16_t name_len;
    uint16_t id; /* enum http_hdr_id */
    uint32_t value_len;
};

/* Flags describing a message head. */
enum {
    HTTP_F_CHUNKED = 1u << 0,    /* Transfer-Encoding: chunked */
    HTTP_F_CLOSE = 1u << 1,      /* Connection: close */
    HTTP_F_KEEPALIVE = 1u << 2,  /* Connection: keep-alive */
    HTTP_F_UPGRADE = 1u << 3,    /* Connection: upgrade and an Upgrade header */
    HTTP_F_EXPECT_100 = 1u << 4, /* Expect: 100-continue */
    HTTP_F_CONN_OTHER = 1u << 5, /* Connection names other headers (hop-by-hop) */
};

struct http_msg {
    /* request line */
    enum http_method method;
    const char *method_s;
    const char *target;
    uint16_t method_len;
    uint32_t target_len;
    /* The target split (RFC 9112 3.2): path is the origin-form to forward
     * ("/p?q", or "*" for OPTIONS), authority the host[:port] of an
     * absolute-form target (NULL otherwise; a Host header that differs from
     * it is refused). */
    const char *path, *authority;
    uint32_t path_len, authority_len;
    /* status line (responses) */
    int status;
    const char *reason;
    uint32_t reason_len;
    /* both */
    uint8_t minor; /* HTTP/1.<minor>: 0 or 1 */
    uint32_t flags;
    int64_t content_length; /* -1 when absent */
    uint32_t head_len;      /* bytes of the head, final CRLF included */
    unsigned nheaders;
    int host; /* index of Host, -1 when absent; likewise below */
    int xff, xrid, cookie, connection;
    struct http_header headers[HTTP_MAX_HEADERS];
};

/* Parse results besides a positive head length. */
enum {
    HTTP_INCOMPLETE = 0,
    HTTP_E_BAD = -400,       /* malformed: answer 400 and close */
    HTTP_E_TOO_LARGE = -431, /* too many headers / line too long */
    HTTP_E_NOT_IMPL = -501,  /* transfer coding we do not speak */
    HTTP_E_VERSION = -505,   /* not HTTP/1.0 or HTTP/1.1 */
};

/* Parse a request head at buf[0..len). The request-target must be
 * origin-form ("/..."), absolute-form with an http or https scheme (its
 * authority must equal Host when both are there; no userinfo), or "*" for
 * OPTIONS; anything else is HTTP_E_BAD. Returns the head length (> 0) when a
 * complete, valid head is there, HTTP_INCOMPLETE when more bytes are needed,
 * or a negative HTTP_E_* (the status to answer, negated). Empty lines before
 * the request line are skipped (RFC 9112 2.2) and counted in head_len.
 * max_headers ≤ HTTP_MAX_HEADERS. */
int http_parse_request(const char *buf, size_t len, struct http_msg *m, unsigned max_headers);
/* Parse a response head. The same returns; the caller maps errors to 502. */
int http_parse_response(const char *buf, size_t len, struct http_msg *m, unsigned max_headers);

/* Whether a response to request method `method` with `status` has a body. */
bool http_response_has_body(enum http_method method, int status);
/* Idempotent per RFC 9110 9.2.2 (safe to retry when no response came). */
bool http_method_idempotent(enum http_method method);
const char *http_reason(int status);

/* Case-insensitive token match, e.g. a header name against "host". */
bool http_token_eq(const char *p, size_t n, const char *lit);
/* Whether the comma-separated list value contains token `lit` (any case). */
bool http_list_has(const char *v, size_t n, const char *lit);
/* The list tokenizer every list-valued field goes through (RFC 9110 5.6.1:
 * elements separated by commas, optional whitespace around them, empty
 * elements skipped): puts the next element at *tok / *tlen and returns
 * true, or false at the end. Start with *pos = 0. */
bool http_list_next(const char *v, size_t n, size_t *pos, const char **tok, size_t *tlen);

/* ---- chunked bodies ---- */

struct http_chunked {
    uint8_t state;
    uint8_t size_digits;
    uint16_t line_len; /* bytes in the current trailer/extension line */
    uint8_t name_len;  /* trailer field name bytes kept in name[] */
    char name[20];     /* its start, lower-cased: enough to know the refused names */
    uint64_t left;     /* data bytes left in the current chunk */
    bool done;
};

void http_chunked_init(struct http_chunked *c);
/* Trailer fields (after the last chunk) must be header fields, "name:
 * value" with the head's rules; Content-Length, Transfer-Encoding, Host and
 * the hop-by-hop fields are refused there (a framing error). */
/* Feed p[0..n). Returns the bytes consumed (0 ≤ r ≤ n) or -1 on a framing
 * error. Each call consumes either chunk data or framing: when it consumed
 * data, *data_len = r (the data starts at p); else *data_len = 0. After the
 * last CRLF of the message, c->done is set and nothing more is consumed. */
long http_chunked_feed(struct http_chunked *c, const char *p, size_t n, size_t *data_len);

#endif
