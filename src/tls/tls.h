/* tls.h — the TLS server side with OpenSSL: a certificate store chosen by
 * SNI, one shared configuration (TLS 1.2 + 1.3, Mozilla "intermediate"
 * ciphers, ALPN http/1.1), stateless session tickets with rotating keys, and
 * non-blocking per-connection I/O for the proxy's transport layer.
 *
 * A struct tls_server may be used from any thread: certificates are swapped
 * under a lock while handshakes run on worker threads; a connection keeps the
 * certificate it was given, new handshakes get the new one. Functions return
 * 0 or -errno unless said otherwise. See docs/internals/tls.md. */
#ifndef TAKO_TLS_TLS_H
#define TAKO_TLS_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <openssl/ssl.h>

struct tls_server;

/* Mozilla "intermediate" (TLS 1.2 list; TLS 1.3 suites are OpenSSL's). */
#define TLS_CIPHERS_INTERMEDIATE                                                              \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                              \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                              \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"                              \
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305"

/* What a certificate says about itself (tls_cert_info). */
struct tls_cert_info {
    int64_t not_before, not_after; /* unix seconds */
    char subject[256];             /* one line, e.g. "CN=scaling.test" */
    char issuer[256];
    char names[512];               /* DNS SANs, comma-separated */
};

/* A new server store with no certificate. NULL with a message in err when
 * OpenSSL cannot be set up. */
struct tls_server *tls_server_new(char *err, size_t errlen);
/* Free it; connections still open keep their own references. */
void tls_server_free(struct tls_server *s);

/* Install or replace the certificate known as `id` (e.g. "acme:example.com"
 * or a file path) from PEM text: the leaf first, then its chain; the key in
 * PKCS#8 / traditional PEM. It serves every DNS name of the leaf (SANs, or
 * its CN when it has none; "*.example.com" serves one label below). Refused
 * with -EINVAL and a message in err when the PEM does not parse, the key does
 * not match, or the leaf names no host; the previous certificate with that id
 * stays in use then. The first certificate installed is the default for
 * clients that send no (or an unknown) server name, until it is removed. */
int tls_server_set_cert(struct tls_server *s, const char *id, const char *cert_pem,
                        size_t cert_len, const char *key_pem, size_t key_len, char *err,
                        size_t errlen);
/* The same from files. */
int tls_server_set_cert_files(struct tls_server *s, const char *id, const char *cert_path,
                              const char *key_path, char *err, size_t errlen);
/* Forget the certificate known as id; -ENOENT. */
int tls_server_del_cert(struct tls_server *s, const char *id);
/* Whether a handshake naming `host` (port stripped, any case) would get a
 * certificate that names it. */
bool tls_server_has_name(struct tls_server *s, const char *host, size_t len);
/* Number of certificates installed. */
size_t tls_server_ncerts(struct tls_server *s);

/* Make a new ticket key current; tickets under the previous key still
 * decrypt (and are renewed), older ones no longer. Call every few hours. */
void tls_server_rotate_tickets(struct tls_server *s);

/* ---- per connection ---- */

/* A new server-side SSL on the non-blocking socket fd (not owned). NULL when
 * there is no certificate at all (the caller closes the connection).
 * *drained (which must outlive ssl) is kept up to date: true when OpenSSL's
 * last read of the socket got less than it asked for (the kernel buffer
 * was empty then: with edge-triggered epoll, later bytes bring an event). */
SSL *tls_conn_new(struct tls_server *s, int fd, bool *drained);
/* Drive the handshake: 0 done, -EAGAIN (*want_write tells which event to wait
 * for), or -EPROTO (failed: close; nothing more to send). */
int tls_conn_handshake(SSL *ssl, bool *want_write);
/* Read into buf: bytes read (> 0), 0 on a clean close or EOF, -EAGAIN (see
 * *want_write), or -EPROTO / -ECONNRESET. */
ssize_t tls_conn_read(SSL *ssl, void *buf, size_t n, bool *want_write);
/* Write from buf: bytes written (> 0), -EAGAIN (see *want_write; retry with
 * the same buffer), -EPIPE. */
ssize_t tls_conn_write(SSL *ssl, const void *buf, size_t n, bool *want_write);
/* Send close_notify once, best effort (never blocks). */
void tls_conn_shutdown(SSL *ssl);
void tls_conn_free(SSL *ssl);
/* The negotiated ALPN protocol ("" when none) and version ("TLSv1.3"). */
const char *tls_conn_alpn(SSL *ssl, char *buf, size_t len);

/* What the first bytes of a connection on a TLS port are: TLS (a handshake
 * record), plain HTTP (a request line), or garbage. n ≥ 1. */
enum tls_sniff { TLS_SNIFF_TLS, TLS_SNIFF_HTTP, TLS_SNIFF_GARBAGE };
enum tls_sniff tls_sniff(const unsigned char *buf, size_t n);
/* The answer to plain HTTP on a TLS port (a complete 400 response). */
extern const char tls_plain_http_reply[];

/* ---- certificates as data ---- */

/* Parse the first certificate of a PEM text; -EINVAL. */
int tls_cert_info(const char *pem, size_t len, struct tls_cert_info *out);
/* Read and parse a PEM file; -errno / -EINVAL. */
int tls_cert_info_file(const char *path, struct tls_cert_info *out);
/* A self-signed certificate for `names` (comma-separated DNS names) valid for
 * `days` (may be negative to make an expired one, for tests), EC P-256 key.
 * Heap PEM strings (caller frees). */
int tls_selfsigned(const char *names, int days, char **cert_pem, char **key_pem);
/* The last OpenSSL error as text (drains the queue). */
const char *tls_last_error(char *buf, size_t len);

#endif
