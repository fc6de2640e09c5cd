/* tls_conn.c — non-blocking I/O on one server-side TLS connection, and the
 * cheap first-byte check that keeps plain HTTP and garbage away from
 * OpenSSL. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>

#include "tls/tls.h"

const char tls_plain_http_reply[] =
    "HTTP/1.1 400 Bad Request\r\n"
    "Content-Type: text/plain\r\n"
    "Content-Length: 45\r\n"
    "Connection: close\r\n"
    "\r\n"
    "This port speaks HTTPS; use https:// instead\n";

enum tls_sniff tls_sniff(const unsigned char *buf, size_t n)
{
    /* A TLS record: type 22 (handshake), then version major 3. */
    if (buf[0] == 0x16 && (n < 2 || buf[1] == 0x03))
        return TLS_SNIFF_TLS;
    /* A request line starts with an upper-case token and a space. */
    size_t i = 0;
    while (i < n && i < 16 && buf[i] >= 'A' && buf[i] <= 'Z')
        i++;
    if (i > 0 && (i == n || buf[i] == ' '))
        return TLS_SNIFF_HTTP;
    return TLS_SNIFF_GARBAGE;
}

/* Map an SSL_get_error() result; 1 = retry (want set), 0 = EOF, -errno. */
static int classify(SSL *ssl, int ret, bool *want_write)
{
    int e = SSL_get_error(ssl, ret);
    switch (e) {
    case SSL_ERROR_WANT_READ:
        *want_write = false;
        return 1;
    case SSL_ERROR_WANT_WRITE:
        *want_write = true;
        return 1;
    case SSL_ERROR_ZERO_RETURN:
        return 0;
    case SSL_ERROR_SYSCALL:
        ERR_clear_error();
        if (errno == EAGAIN) {
            *want_write = false;
            return 1;
        }
        return errno == EPIPE || errno == ECONNRESET ? -ECONNRESET : (errno ? -ECONNRESET : 0);
    default:
        ERR_clear_error();
        return -EPROTO;
    }
}

int tls_conn_handshake(SSL *ssl, bool *want_write)
{
    ERR_clear_error();
    int r = SSL_do_handshake(ssl);
    if (r == 1)
        return 0;
    int c = classify(ssl, r, want_write);
    return c == 1 ? -EAGAIN : -EPROTO;
}

ssize_t tls_conn_read(SSL *ssl, void *buf, size_t n, bool *want_write)
{
    size_t got = 0;
    ERR_clear_error();
    int r = SSL_read_ex(ssl, buf, n, &got);
    if (r == 1)
        return (ssize_t)got;
    int c = classify(ssl, r, want_write);
    return c == 1 ? -EAGAIN : c;
}

ssize_t tls_conn_write(SSL *ssl, const void *buf, size_t n, bool *want_write)
{
    size_t put = 0;
    ERR_clear_error();
    int r = SSL_write_ex(ssl, buf, n, &put);
    if (r == 1)
        return (ssize_t)put;
    int c = classify(ssl, r, want_write);
    return c == 1 ? -EAGAIN : -EPIPE;
}

void tls_conn_shutdown(SSL *ssl)
{
    if (!(SSL_get_shutdown(ssl) & SSL_SENT_SHUTDOWN) && SSL_is_init_finished(ssl)) {
        ERR_clear_error();
        (void)SSL_shutdown(ssl); /* one try: the socket is non-blocking */
        ERR_clear_error();
    }
}

void tls_conn_free(SSL *ssl) { SSL_free(ssl); }

const char *tls_conn_alpn(SSL *ssl, char *buf, size_t len)
{
    const unsigned char *p = NULL;
    unsigned n = 0;
    SSL_get0_alpn_selected(ssl, &p, &n);
    snprintf(buf, len, "%.*s", (int)n, p ? (const char *)p : "");
    return buf;
}
