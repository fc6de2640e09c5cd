/* acme_driver.c — runs one ACME order (src/acme) for the e2e tests:
 * answers HTTP-01 on 127.0.0.1:PORT from its own tiny server thread, then
 * prints the certificate facts or the error.
 *
 *   acme_driver DIRECTORY CA_BUNDLE ACCOUNT_KEY PORT EMAIL DOMAIN...
 * Output: "ok NOT_AFTER NAMES ISSUER" or "error MESSAGE"; exit 0 / 1. */
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <curl/curl.h>

#include "acme/acme.h"
#include "tls/tls.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static char tokens[8][256], auths[8][512];
static int lfd;

static void present(void *arg, const char *token, const char *ka)
{
    (void)arg;
    pthread_mutex_lock(&lock);
    for (int i = 0; i < 8; i++)
        if (!tokens[i][0]) {
            snprintf(tokens[i], sizeof(tokens[i]), "%s", token);
            snprintf(auths[i], sizeof(auths[i]), "%s", ka);
            break;
        }
    pthread_mutex_unlock(&lock);
}

static void cleanup(void *arg, const char *token)
{
    (void)arg;
    pthread_mutex_lock(&lock);
    for (int i = 0; i < 8; i++)
        if (strcmp(tokens[i], token) == 0)
            tokens[i][0] = '\0';
    pthread_mutex_unlock(&lock);
}

static void *serve(void *arg)
{
    (void)arg;
    for (;;) {
        int c = accept(lfd, NULL, NULL);
        if (c < 0)
            continue;
        char req[2048];
        ssize_t n = read(c, req, sizeof(req) - 1);
        req[n > 0 ? n : 0] = '\0';
        const char *pre = "GET /.well-known/acme-challenge/";
        char out[1024];
        snprintf(out, sizeof(out), "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        if (strncmp(req, pre, strlen(pre)) == 0) {
            char *t = req + strlen(pre);
            t[strcspn(t, " ")] = '\0';
            pthread_mutex_lock(&lock);
            for (int i = 0; i < 8; i++)
                if (tokens[i][0] && strcmp(tokens[i], t) == 0)
                    snprintf(out, sizeof(out),
                             "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
                             strlen(auths[i]), auths[i]);
            pthread_mutex_unlock(&lock);
        }
        ssize_t w = write(c, out, strlen(out));
        (void)w;
        close(c);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 7) {
        fprintf(stderr, "usage: acme_driver DIRECTORY CA_BUNDLE ACCOUNT_KEY PORT EMAIL DOMAIN...\n");
        return 2;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    lfd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[4])),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(lfd, 16) != 0) {
        perror("bind");
        return 2;
    }
    pthread_t th;
    pthread_create(&th, NULL, serve, NULL);
    struct acme_opts o = {
        .directory = argv[1],
        .ca_bundle = argv[2][0] ? argv[2] : NULL,
        .account_key = argv[3],
        .email = argv[5][0] ? argv[5] : NULL,
        .present = present,
        .cleanup = cleanup,
        .timeout_ms = 60000,
    };
    char *cert = NULL, *key = NULL, err[1024];
    int r = acme_obtain(&o, (const char *const *)argv + 6, (size_t)(argc - 6), &cert, &key, err,
                        sizeof(err));
    if (r < 0) {
        printf("error %s\n", err);
        return 1;
    }
    struct tls_cert_info ci;
    tls_cert_info(cert, strlen(cert), &ci);
    printf("ok %lld %s %s\n", (long long)ci.not_after, ci.names, ci.issuer);
    free(cert);
    free(key);
    return 0;
}
