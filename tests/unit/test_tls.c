/* test_tls.c — the TLS server store: SNI per domain, default certificate,
 * swapping a certificate under a live connection, refused inputs, ALPN,
 * protocol floor, ticket resumption across key rotation, the first-byte
 * sniffer and certificate facts. Handshakes run over socketpairs in one
 * thread, both ends non-blocking. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/x509.h>

#include "tls/tls.h"
#include "unit.h"

struct pair {
    int sfd, cfd;
    SSL *srv, *cli;
    SSL_CTX *cctx;
    bool drained;
};

static SSL_CTX *client_ctx(void)
{
    SSL_CTX *c = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(c, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_CLIENT);
    return c;
}

/* Connect a client (SNI host, may be NULL) to the server store; returns 0
 * when both handshakes completed, -1 when either failed. */
static int connect_pair(struct tls_server *s, SSL_CTX *cctx, const char *host,
                        SSL_SESSION *sess, struct pair *pp)
{
    int sv[2];
    memset(pp, 0, sizeof(*pp));
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == -1)
        return -1;
    pp->sfd = sv[0];
    pp->cfd = sv[1];
    pp->srv = tls_conn_new(s, pp->sfd, &pp->drained);
    if (!pp->srv)
        return -1;
    pp->cli = SSL_new(cctx);
    SSL_set_fd(pp->cli, pp->cfd);
    if (host)
        SSL_set_tlsext_host_name(pp->cli, host);
    static const unsigned char alpn[] = "\x02h2\x08http/1.1";
    SSL_set_alpn_protos(pp->cli, alpn, sizeof(alpn) - 1);
    if (sess)
        SSL_set_session(pp->cli, sess);
    SSL_set_connect_state(pp->cli);
    bool sdone = false, cdone = false;
    for (int i = 0; i < 100 && !(sdone && cdone); i++) {
        if (!cdone) {
            int r = SSL_do_handshake(pp->cli);
            if (r == 1)
                cdone = true;
            else {
                int e = SSL_get_error(pp->cli, r);
                if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
                    return -1;
            }
        }
        if (!sdone) {
            bool ww;
            int r = tls_conn_handshake(pp->srv, &ww);
            if (r == 0)
                sdone = true;
            else if (r != -EAGAIN)
                return -1;
        }
    }
    ERR_clear_error();
    return sdone && cdone ? 0 : -1;
}

static void pair_free(struct pair *pp)
{
    if (pp->srv)
        tls_conn_free(pp->srv);
    if (pp->cli)
        SSL_free(pp->cli);
    if (pp->sfd > 0)
        close(pp->sfd);
    if (pp->cfd > 0)
        close(pp->cfd);
    memset(pp, 0, sizeof(*pp));
}

/* The CN of the certificate the client got. */
static const char *peer_cn(SSL *cli, char *buf, size_t len)
{
    X509 *x = SSL_get1_peer_certificate(cli);
    buf[0] = '\0';
    if (x) {
        X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, buf, (int)len);
        X509_free(x);
    }
    return buf;
}

static int add_selfsigned(struct tls_server *s, const char *id, const char *names)
{
    char *c = NULL, *k = NULL, err[256];
    if (tls_selfsigned(names, 30, &c, &k) < 0)
        return -1;
    int r = tls_server_set_cert(s, id, c, strlen(c), k, strlen(k), err, sizeof(err));
    free(c);
    free(k);
    return r;
}

/* Round trip bytes client → server → client over an established pair. */
static int echo(struct pair *pp, const char *msg)
{
    bool ww;
    char buf[64];
    size_t n = strlen(msg);
    if (SSL_write(pp->cli, msg, (int)n) != (int)n)
        return -1;
    ssize_t r = -EAGAIN;
    for (int i = 0; i < 50 && r == -EAGAIN; i++)
        r = tls_conn_read(pp->srv, buf, sizeof(buf), &ww);
    if (r != (ssize_t)n || memcmp(buf, msg, n) != 0)
        return -1;
    if (tls_conn_write(pp->srv, buf, n, &ww) != (ssize_t)n)
        return -1;
    int g = SSL_read(pp->cli, buf, sizeof(buf));
    return g == (int)n && memcmp(buf, msg, n) == 0 ? 0 : -1;
}

TEST(no_certificate_no_connection)
{
    char err[256];
    struct tls_server *s = tls_server_new(err, sizeof(err));
    CHECK(s);
    bool drained;
    CHECK(tls_conn_new(s, 0, &drained) == NULL);
    tls_server_free(s);
}

TEST(sni_chooses_certificate_and_default_serves_the_rest)
{
    char err[256], cn[128];
    struct tls_server *s = tls_server_new(err, sizeof(err));
    SSL_CTX *cc = client_ctx();
    CHECK_INT(add_selfsigned(s, "a", "a.test,www.a.test"), 0);
    CHECK_INT(add_selfsigned(s, "b", "b.test"), 0);
    CHECK_INT(add_selfsigned(s, "w", "*.wild.test"), 0);
    struct pair pp;
    CHECK_INT(connect_pair(s, cc, "b.test", NULL, &pp), 0);
    CHECK_STR(peer_cn(pp.cli, cn, sizeof(cn)), "b.test");
    CHECK_INT(echo(&pp, "hello"), 0);
    pair_free(&pp);
    CHECK_INT(connect_pair(s, cc, "WWW.A.TEST", NULL, &pp), 0);
    CHECK_STR(peer_cn(pp.cli, cn, sizeof(cn)), "a.test");
    pair_free(&pp);
    CHECK_INT(connect_pair(s, cc, "x.wild.test", NULL, &pp), 0);
    CHECK_STR(peer_cn(pp.cli, cn, sizeof(cn)), "*.wild.test");
    pair_free(&pp);
    /* no SNI and an unknown name: the first certificate installed */
    CHECK_INT(connect_pair(s, cc, NULL, NULL, &pp), 0);
    CHECK_STR(peer_cn(pp.cli, cn, sizeof(cn)), "a.test");
    pair_free(&pp);
    CHECK_INT(connect_pair(s, cc, "other.test", NULL, &pp), 0);
    CHECK_STR(peer_cn(pp.cli, cn, sizeof(cn)), "a.test");
    pair_free(&pp);
    CHECK(tls_server_has_name(s, "b.test:8443", 11));
    CHECK(tls_server_has_name(s, "deep.wild.test", 14));
    CHECK(!tls_server_has_name(s, "a.b.wild.test", 13));
    CHECK(!tls_server_has_name(s, "other.test", 10));
    CHECK_INT(tls_server_del_cert(s, "a"), 0);
    CHECK_INT(tls_server_del_cert(s, "a"), -ENOENT);
    CHECK(!tls_server_has_name(s, "a.test", 6));
    SSL_CTX_free(cc);
    tls_server_free(s);
}

TEST(swap_keeps_live_connection_and_new_handshakes_get_new_cert)
{
    char err[256];
    struct tls_server *s = tls_server_new(err, sizeof(err));
    SSL_CTX *cc = client_ctx();
    CHECK_INT(add_selfsigned(s, "acme:s.test", "s.test"), 0);
    struct pair old;
    CHECK_INT(connect_pair(s, cc, "s.test", NULL, &old), 0);
    X509 *x1 = SSL_get1_peer_certificate(old.cli);
    CHECK_INT(add_selfsigned(s, "acme:s.test", "s.test"), 0);
    CHECK_INT(tls_server_ncerts(s), 1);
    CHECK_INT(echo(&old, "still here"), 0); /* the old one keeps working */
    struct pair nw;
    CHECK_INT(connect_pair(s, cc, "s.test", NULL, &nw), 0);
    X509 *x2 = SSL_get1_peer_certificate(nw.cli);
    CHECK(x1 && x2 && X509_cmp(x1, x2) != 0);
    X509_free(x1);
    X509_free(x2);
    CHECK_INT(echo(&old, "again"), 0);
    pair_free(&old);
    pair_free(&nw);
    SSL_CTX_free(cc);
    tls_server_free(s);
}

/* The socket under the connection: the drained mark follows the kernel
 * buffer, EOF and a reset peer are told apart from "again", and writing to
 * a closed peer is an error, not SIGPIPE. */
TEST(socket_reads_mark_drained_and_writes_never_raise_sigpipe)
{
    char err[256], buf[64];
    struct tls_server *s = tls_server_new(err, sizeof(err));
    SSL_CTX *cc = client_ctx();
    CHECK_INT(add_selfsigned(s, "own:d.test", "d.test"), 0);
    struct pair pp;
    CHECK_INT(connect_pair(s, cc, "d.test", NULL, &pp), 0);
    bool ww;
    /* nothing sent: a read finds the buffer empty */
    CHECK_INT(tls_conn_read(pp.srv, buf, sizeof(buf), &ww), -EAGAIN);
    CHECK(pp.drained);
    CHECK(!ww);
    /* two records in the buffer: OpenSSL's first read takes less than
     * everything only if it asks for less; after the last byte it is drained */
    CHECK_INT(SSL_write(pp.cli, "one", 3), 3);
    CHECK_INT(SSL_write(pp.cli, "two", 3), 3);
    ssize_t a = tls_conn_read(pp.srv, buf, sizeof(buf), &ww);
    CHECK_INT(a, 3);
    CHECK(!pp.drained || SSL_has_pending(pp.srv)); /* the second record is not lost */
    CHECK_INT(tls_conn_read(pp.srv, buf, sizeof(buf), &ww), 3);
    CHECK(memcmp(buf, "two", 3) == 0);
    CHECK_INT(tls_conn_read(pp.srv, buf, sizeof(buf), &ww), -EAGAIN);
    CHECK(pp.drained);
    /* the peer closes without close_notify: writing to it fails (EPIPE)
     * instead of killing the process, and a read says EOF or reset, never
     * "again" */
    SSL_free(pp.cli);
    pp.cli = NULL;
    close(pp.cfd);
    pp.cfd = -1;
    CHECK_INT(tls_conn_write(pp.srv, "x", 1, &ww), -EPIPE);
    CHECK(tls_conn_read(pp.srv, buf, sizeof(buf), &ww) != -EAGAIN);
    pair_free(&pp);
    SSL_CTX_free(cc);
    tls_server_free(s);
}

TEST(bad_inputs_refused_and_old_certificate_stays)
{
    char err[256], cn[64];
    struct tls_server *s = tls_server_new(err, sizeof(err));
    CHECK_INT(add_selfsigned(s, "x", "x.test"), 0);
    char *c1, *k1, *c2, *k2;
    CHECK_INT(tls_selfsigned("x.test", 30, &c1, &k1), 0);
    CHECK_INT(tls_selfsigned("x.test", 30, &c2, &k2), 0);
    CHECK_INT(tls_server_set_cert(s, "x", c1, strlen(c1), k2, strlen(k2), err, sizeof(err)),
              -EINVAL);
    CHECK_CONTAINS(err, "does not match");
    CHECK_INT(tls_server_set_cert(s, "x", "garbage", 7, k1, strlen(k1), err, sizeof(err)), -EINVAL);
    CHECK_CONTAINS(err, "certificate does not parse");
    CHECK_INT(tls_server_set_cert(s, "x", c1, strlen(c1), "nope", 4, err, sizeof(err)), -EINVAL);
    CHECK_CONTAINS(err, "private key does not parse");
    CHECK_INT(tls_server_set_cert_files(s, "x", "/nonexistent/c.pem", "/k", err, sizeof(err)),
              -ENOENT);
    CHECK_CONTAINS(err, "/nonexistent/c.pem");
    SSL_CTX *cc = client_ctx();
    struct pair pp;
    CHECK_INT(connect_pair(s, cc, "x.test", NULL, &pp), 0);
    CHECK_STR(peer_cn(pp.cli, cn, sizeof(cn)), "x.test");
    pair_free(&pp);
    free(c1);
    free(k1);
    free(c2);
    free(k2);
    SSL_CTX_free(cc);
    tls_server_free(s);
}

TEST(alpn_http11_and_tls12_13_only)
{
    char err[256], buf[32];
    struct tls_server *s = tls_server_new(err, sizeof(err));
    CHECK_INT(add_selfsigned(s, "x", "x.test"), 0);
    SSL_CTX *cc = client_ctx();
    struct pair pp;
    CHECK_INT(connect_pair(s, cc, "x.test", NULL, &pp), 0);
    CHECK_STR(tls_conn_alpn(pp.srv, buf, sizeof(buf)), "http/1.1"); /* h2 offered first, not taken */
    CHECK_STR(SSL_get_version(pp.srv), "TLSv1.3");
    pair_free(&pp);
    SSL_CTX_set_max_proto_version(cc, TLS1_2_VERSION);
    CHECK_INT(connect_pair(s, cc, "x.test", NULL, &pp), 0);
    CHECK_STR(SSL_get_version(pp.srv), "TLSv1.2");
    pair_free(&pp);
    /* A TLS 1.1 client (its own security level lowered so it may try). */
    SSL_CTX *old = client_ctx();
    SSL_CTX_set_cipher_list(old, "DEFAULT:@SECLEVEL=0");
    SSL_CTX_set_min_proto_version(old, TLS1_VERSION);
    SSL_CTX_set_max_proto_version(old, TLS1_1_VERSION);
    CHECK_INT(connect_pair(s, old, "x.test", NULL, &pp), -1);
    pair_free(&pp);
    SSL_CTX_free(old);
    SSL_CTX_free(cc);
    tls_server_free(s);
}

/* Resume with the session of the previous connection (TLS 1.2 so the
 * ticket arrives with the handshake). */
static int resumed_after(struct tls_server *s, SSL_CTX *cc, int rotations)
{
    struct pair pp;
    if (connect_pair(s, cc, "x.test", NULL, &pp) < 0)
        return -1;
    SSL_SESSION *sess = SSL_get1_session(pp.cli);
    SSL_shutdown(pp.cli); /* a session of an unclean close is not resumable */
    pair_free(&pp);
    for (int i = 0; i < rotations; i++)
        tls_server_rotate_tickets(s);
    if (connect_pair(s, cc, "x.test", sess, &pp) < 0) {
        SSL_SESSION_free(sess);
        return -1;
    }
    int r = SSL_session_reused(pp.cli);
    SSL_SESSION_free(sess);
    pair_free(&pp);
    return r;
}

TEST(tickets_resume_across_one_rotation_not_two)
{
    char err[256];
    struct tls_server *s = tls_server_new(err, sizeof(err));
    CHECK_INT(add_selfsigned(s, "x", "x.test"), 0);
    SSL_CTX *cc = client_ctx();
    SSL_CTX_set_max_proto_version(cc, TLS1_2_VERSION);
    CHECK_INT(resumed_after(s, cc, 0), 1);
    CHECK_INT(resumed_after(s, cc, 1), 1);
    CHECK_INT(resumed_after(s, cc, 2), 0);
    SSL_CTX_free(cc);
    tls_server_free(s);
}

/* TLS 1.3 tickets are for one use (RFC 8446, C.4; OpenSSL's clients use
 * each once): a resumed connection must bring a new one, or every other
 * connection of a client is a full handshake. */
TEST(tls13_resumed_connection_gets_a_fresh_ticket)
{
    char err[256];
    struct tls_server *s = tls_server_new(err, sizeof(err));
    CHECK_INT(add_selfsigned(s, "x", "x.test"), 0);
    SSL_CTX *cc = client_ctx();
    struct pair pp;
    CHECK_INT(connect_pair(s, cc, "x.test", NULL, &pp), 0);
    CHECK_INT(echo(&pp, "first"), 0); /* the client reads the ticket */
    SSL_SESSION *sess = SSL_get1_session(pp.cli);
    CHECK(sess && SSL_SESSION_is_resumable(sess));
    SSL_shutdown(pp.cli);
    pair_free(&pp);
    for (int i = 0; i < 3; i++) {
        CHECK_INT(connect_pair(s, cc, "x.test", sess, &pp), 0);
        CHECK_INT(SSL_session_reused(pp.cli), 1);
        CHECK_INT(echo(&pp, "again"), 0);
        SSL_SESSION *next = SSL_get1_session(pp.cli);
        CHECK(next && next != sess && SSL_SESSION_is_resumable(next));
        SSL_shutdown(pp.cli);
        pair_free(&pp);
        SSL_SESSION_free(sess);
        sess = next;
    }
    SSL_SESSION_free(sess);
    SSL_CTX_free(cc);
    tls_server_free(s);
}

TEST(sniff_first_bytes)
{
    CHECK_INT(tls_sniff((const unsigned char *)"\x16\x03\x01", 3), TLS_SNIFF_TLS);
    CHECK_INT(tls_sniff((const unsigned char *)"\x16", 1), TLS_SNIFF_TLS);
    CHECK_INT(tls_sniff((const unsigned char *)"GET / HTTP/1.1\r\n", 16), TLS_SNIFF_HTTP);
    CHECK_INT(tls_sniff((const unsigned char *)"PO", 2), TLS_SNIFF_HTTP);
    CHECK_INT(tls_sniff((const unsigned char *)"\x00\xff garbage", 10), TLS_SNIFF_GARBAGE);
    CHECK_INT(tls_sniff((const unsigned char *)"get /", 5), TLS_SNIFF_GARBAGE);
    CHECK_CONTAINS(tls_plain_http_reply, "400 Bad Request");
    const char *body = strstr(tls_plain_http_reply, "\r\n\r\n") + 4;
    CHECK_INT(strlen(body), 45);
}

TEST(cert_info_reads_names_and_dates)
{
    char *c, *k;
    struct tls_cert_info ci;
    CHECK_INT(tls_selfsigned("a.test,b.test", 10, &c, &k), 0);
    CHECK_INT(tls_cert_info(c, strlen(c), &ci), 0);
    CHECK_STR(ci.names, "a.test,b.test");
    CHECK_CONTAINS(ci.subject, "CN=a.test");
    int64_t now = (int64_t)time(NULL);
    CHECK(ci.not_after > now + 9 * 86400 && ci.not_after <= now + 10 * 86400 + 5);
    free(c);
    free(k);
    CHECK_INT(tls_selfsigned("old.test", -1, &c, &k), 0);
    CHECK_INT(tls_cert_info(c, strlen(c), &ci), 0);
    CHECK(ci.not_after < now);
    CHECK_INT(tls_cert_info("-----BEGIN CERTIFICATE-----\nxx\n", 31, &ci), -EINVAL);
    free(c);
    free(k);
}
