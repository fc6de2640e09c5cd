/* test_http.c — the strict HTTP/1.1 parser: valid heads, every smuggling
 * vector it must refuse, incremental input, and the chunked framer. */
#include <stdlib.h>
#include <string.h>

#include "http/http.h"
#include "unit.h"

static struct http_msg m;

static int req(const char *s) { return http_parse_request(s, strlen(s), &m, HTTP_MAX_HEADERS); }
static int rsp(const char *s) { return http_parse_response(s, strlen(s), &m, HTTP_MAX_HEADERS); }

TEST(request_simple)
{
    const char *s = "GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t\r\n\r\nBODY";
    CHECK_INT(req(s), (int)strlen(s) - 4);
    CHECK_INT(m.method, HTTP_GET);
    CHECK_INT(m.minor, 1);
    CHECK_INT(m.target_len, 6);
    CHECK(memcmp(m.target, "/a?b=1", 6) == 0);
    CHECK_INT(m.nheaders, 2);
    CHECK_INT(m.host, 0);
    CHECK_INT(m.headers[0].value_len, 11);
    CHECK(memcmp(m.headers[1].value, "t", 1) == 0);
    CHECK_INT(m.content_length, -1);
    CHECK_INT(m.flags, 0);
}

TEST(request_every_prefix_is_incomplete)
{
    const char *s = "POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nConnection: keep-alive, Foo\r\n\r\n";
    size_t n = strlen(s);
    for (size_t i = 0; i < n; i++)
        CHECK_INT(http_parse_request(s, i, &m, HTTP_MAX_HEADERS), HTTP_INCOMPLETE);
    CHECK_INT(http_parse_request(s, n, &m, HTTP_MAX_HEADERS), (int)n);
    CHECK_INT(m.content_length, 3);
    CHECK(m.flags & HTTP_F_KEEPALIVE);
    CHECK(m.flags & HTTP_F_CONN_OTHER);
}

TEST(request_value_trimmed_and_leading_crlf)
{
    CHECK(req("\r\n\r\nGET / HTTP/1.0\r\nX:  a b \t\r\n\r\n") > 0);
    CHECK_INT(m.minor, 0);
    CHECK_INT(m.headers[0].value_len, 3);
    CHECK(memcmp(m.headers[0].value, "a b", 3) == 0);
    CHECK_INT(m.host, -1); /* HTTP/1.0 may omit Host */
}

TEST(request_flags)
{
    CHECK(req("GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n") > 0);
    CHECK(m.flags & HTTP_F_UPGRADE);
    CHECK(req("PUT /u HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n") > 0);
    CHECK(m.flags & HTTP_F_EXPECT_100);
    CHECK(m.flags & HTTP_F_CHUNKED);
    CHECK(req("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n") > 0);
    CHECK(m.flags & HTTP_F_CLOSE);
}

TEST(request_refused)
{
    static const struct {
        const char *in;
        int want;
    } cases[] = {
        /* smuggling */
        {"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", HTTP_E_BAD},
        {"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n", HTTP_E_BAD},
        {"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 3\r\n\r\n", HTTP_E_BAD},
        {"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +3\r\n\r\n", HTTP_E_BAD},
        {"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x3\r\n\r\n", HTTP_E_BAD},
        {"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: \r\n\r\n", HTTP_E_BAD},
        {"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999\r\n\r\n", HTTP_E_BAD},
        {"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", HTTP_E_BAD},
        {"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", HTTP_E_NOT_IMPL},
        {"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n", HTTP_E_NOT_IMPL},
        {"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", HTTP_E_BAD},
        {"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding : chunked\r\n\r\n", HTTP_E_BAD},
        {"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n", HTTP_E_BAD}, /* obs-fold */
        {"GET / HTTP/1.1\r\n Host: h\r\n\r\n", HTTP_E_BAD},
        {"GET / HTTP/1.1\nHost: h\r\n\r\n", HTTP_E_BAD},                   /* bare LF */
        {"GET / HTTP/1.1\r\nHost: h\nX: y\r\n\r\n", HTTP_E_BAD},
        {"GET / HTTP/1.1\r\nHost: h\rX: y\r\n\r\n", HTTP_E_BAD},           /* bare CR */
        {"GET / HTTP/1.1\r\nHost: h\r\n\rX\r\n", HTTP_E_BAD},
        /* request line */
        {"GET  / HTTP/1.1\r\nHost: h\r\n\r\n", HTTP_E_BAD},
        {"GET / HTTP/1.1 \r\nHost: h\r\n\r\n", HTTP_E_BAD},
        {"GET /a b HTTP/1.1\r\nHost: h\r\n\r\n", HTTP_E_BAD},
        {"G(T / HTTP/1.1\r\nHost: h\r\n\r\n", HTTP_E_BAD},
        {"GET / HTTP/2.0\r\nHost: h\r\n\r\n", HTTP_E_VERSION},
        {"GET / HTTP/1.2\r\nHost: h\r\n\r\n", HTTP_E_VERSION},
        {"GET / HTTX/1.1\r\nHost: h\r\n\r\n", HTTP_E_BAD},
        {"GET / HTTP/1.1\r\n\r\n", HTTP_E_BAD},                              /* no Host */
        {"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", HTTP_E_BAD},
        {"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", HTTP_E_BAD},
        {"GET / HTTP/1.1\r\nHost: h\r\n: v\r\n\r\n", HTTP_E_BAD},
        {"CONNECT h:443 HTTP/1.1\r\nHost: h\r\n\r\n", HTTP_E_NOT_IMPL},
        {"\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", HTTP_E_BAD},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int r = req(cases[i].in);
        if (r != cases[i].want) {
            unit_fail(__FILE__, __LINE__, "case %zu: got %d want %d", i, r, cases[i].want);
            return;
        }
    }
}

TEST(request_nul_in_value)
{
    static const char s[] = "GET / HTTP/1.1\r\nHost: h\r\nX: a\0b\r\n\r\n";
    CHECK_INT(http_parse_request(s, sizeof(s) - 1, &m, HTTP_MAX_HEADERS), HTTP_E_BAD);
}

TEST(request_too_many_headers)
{
    char buf[4096];
    size_t n = (size_t)snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\nHost: h\r\n");
    for (int i = 0; i < 10; i++)
        n += (size_t)snprintf(buf + n, sizeof(buf) - n, "X-%d: v\r\n", i);
    n += (size_t)snprintf(buf + n, sizeof(buf) - n, "\r\n");
    CHECK_INT(http_parse_request(buf, n, &m, 5), HTTP_E_TOO_LARGE);
    CHECK_INT(http_parse_request(buf, n, &m, 11), (int)n);
}

TEST(response_parse)
{
    const char *s = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
    CHECK_INT(rsp(s), (int)strlen(s) - 5);
    CHECK_INT(m.status, 200);
    CHECK_INT(m.content_length, 5);
    CHECK(m.flags & HTTP_F_CLOSE);
    CHECK(rsp("HTTP/1.1 204\r\n\r\n") > 0);
    CHECK_INT(m.status, 204);
    CHECK(rsp("HTTP/1.0 200 \r\nTransfer-Encoding: gzip, chunked\r\n\r\n") > 0);
    CHECK(m.flags & HTTP_F_CHUNKED);
    CHECK_INT(rsp("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"), HTTP_E_BAD);
    CHECK_INT(rsp("HTTP/1.1 20 OK\r\n\r\n"), HTTP_E_BAD);
    CHECK_INT(rsp("HTTP/1.1 200 OK\r\nX: y\n\r\n"), HTTP_E_BAD);
    CHECK_INT(rsp("HTTP/1.1 200 OK\r\nContent-Le"), HTTP_INCOMPLETE);
    CHECK(!http_response_has_body(HTTP_HEAD, 200));
    CHECK(!http_response_has_body(HTTP_GET, 304));
    CHECK(http_response_has_body(HTTP_GET, 200));
}

static int chunk_all(const char *s, size_t step, char *out, size_t *out_len, size_t *consumed)
{
    struct http_chunked c;
    http_chunked_init(&c);
    size_t n = strlen(s), i = 0;
    *out_len = 0;
    while (i < n && !c.done) {
        size_t avail = n - i < step ? n - i : step;
        size_t dl;
        long r = http_chunked_feed(&c, s + i, avail, &dl);
        if (r < 0)
            return -1;
        if (dl) {
            memcpy(out + *out_len, s + i, dl);
            *out_len += dl;
        }
        i += (size_t)r;
        if (r == 0 && !c.done && avail == n - i)
            break;
    }
    *consumed = i;
    return c.done ? 1 : 0;
}

TEST(chunked_framing)
{
    char out[256];
    size_t ol, used;
    const char *s = "5\r\nhello\r\n1;ext=1\r\n \r\nA\r\n0123456789\r\n0\r\nTrailer: x\r\n\r\nNEXT";
    for (size_t step = 1; step < 40; step++) {
        CHECK_INT(chunk_all(s, step, out, &ol, &used), 1);
        CHECK_INT(ol, 16);
        CHECK(memcmp(out, "hello 0123456789", 16) == 0);
        CHECK_INT(used, strlen(s) - 4);
    }
    CHECK_INT(chunk_all("0\r\n\r\n", 3, out, &ol, &used), 1);
    CHECK_INT(chunk_all("5\r\nhelloX\r\n0\r\n\r\n", 64, out, &ol, &used), -1);
    CHECK_INT(chunk_all("-5\r\nhello\r\n0\r\n\r\n", 64, out, &ol, &used), -1);
    CHECK_INT(chunk_all("5 \r\nhello\r\n0\r\n\r\n", 64, out, &ol, &used), -1);
    CHECK_INT(chunk_all("5\nhello\r\n0\r\n\r\n", 64, out, &ol, &used), -1);
    CHECK_INT(chunk_all("fffffffffffffffff\r\n", 64, out, &ol, &used), -1);
    CHECK_INT(chunk_all("\r\n0\r\n\r\n", 64, out, &ol, &used), -1);
    CHECK_INT(chunk_all("0\r\n\n", 64, out, &ol, &used), -1);
}

/* Issue defect 4: after the last chunk only field lines may follow; a
 * request line there, and framing or routing fields, are refused. */
TEST(chunked_trailers_validated)
{
    char out[256];
    size_t ol, used;
    for (size_t step = 1; step < 8; step++) {
        CHECK_INT(chunk_all("0\r\nGET /SMUGGLED HTTP/1.1\r\nHost: x\r\n\r\n", step, out, &ol, &used), -1);
        CHECK_INT(chunk_all("0\r\nContent-Length: 5\r\n\r\n", step, out, &ol, &used), -1);
        CHECK_INT(chunk_all("0\r\ntransfer-ENCODING: chunked\r\n\r\n", step, out, &ol, &used), -1);
        CHECK_INT(chunk_all("0\r\nHost: evil\r\n\r\n", step, out, &ol, &used), -1);
        CHECK_INT(chunk_all("0\r\nX: a\r\n : folded\r\n\r\n", step, out, &ol, &used), -1);
        CHECK_INT(chunk_all("0\r\nNoColon\r\n\r\n", step, out, &ol, &used), -1);
        CHECK_INT(chunk_all("0\r\nX-Checksum: abc\r\nX-Content-Length-Like-But-Longer-Name: 1\r\n\r\n",
                            step, out, &ol, &used), 1);
    }
}

/* Issue defect 3: an absolute-form target's authority is the host. */
TEST(request_target_forms)
{
    CHECK_INT(req("GET http://evil.example/abs HTTP/1.1\r\nHost: good.example\r\n\r\n"), HTTP_E_BAD);
    const char *s = "GET http://Good.Example:8080/abs?x HTTP/1.1\r\nHost: good.example:8080\r\n\r\n";
    CHECK_INT(req(s), (int)strlen(s));
    CHECK_INT(m.authority_len, 17);
    CHECK(memcmp(m.authority, "Good.Example:8080", 17) == 0);
    CHECK_INT(m.path_len, 6);
    CHECK(memcmp(m.path, "/abs?x", 6) == 0);
    s = "GET https://h HTTP/1.0\r\n\r\n";
    CHECK_INT(req(s), (int)strlen(s));
    CHECK_INT(m.path_len, 1);
    CHECK(m.path[0] == '/');
    CHECK_INT(req("GET http://user@h/ HTTP/1.1\r\nHost: h\r\n\r\n"), HTTP_E_BAD);
    CHECK_INT(req("GET http:///x HTTP/1.1\r\nHost: h\r\n\r\n"), HTTP_E_BAD);
    CHECK_INT(req("GET ftp://h/x HTTP/1.1\r\nHost: h\r\n\r\n"), HTTP_E_BAD);
    CHECK_INT(req("GET x/y HTTP/1.1\r\nHost: h\r\n\r\n"), HTTP_E_BAD);
    CHECK_INT(req("GET * HTTP/1.1\r\nHost: h\r\n\r\n"), HTTP_E_BAD);
    s = "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n";
    CHECK_INT(req(s), (int)strlen(s));
    s = "GET /p HTTP/1.1\r\nHost: h\r\n\r\n";
    CHECK_INT(req(s), (int)strlen(s));
    CHECK(m.authority == NULL && m.path == m.target);
}

TEST(list_and_token)
{
    CHECK(http_list_has("a, keep-alive ,b", 16, "Keep-Alive"));
    CHECK(!http_list_has("a, keep-alivex", 14, "keep-alive"));
    /* one tokenizer: elements between commas, whitespace around them trimmed */
    const char *v = " ,a ,\tb c ,, d,", *t;
    size_t pos = 0, tl, n = strlen(v);
    CHECK(http_list_next(v, n, &pos, &t, &tl) && tl == 1 && t[0] == 'a');
    CHECK(http_list_next(v, n, &pos, &t, &tl) && tl == 3 && memcmp(t, "b c", 3) == 0);
    CHECK(http_list_next(v, n, &pos, &t, &tl) && tl == 1 && t[0] == 'd');
    CHECK(!http_list_next(v, n, &pos, &t, &tl));
    CHECK(http_token_eq("HoSt", 4, "host"));
    CHECK(http_method_idempotent(HTTP_PUT));
    CHECK(!http_method_idempotent(HTTP_POST));
}
