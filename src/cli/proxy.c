/* proxy.c — `tako proxy`: the load balancer as a standalone command, built
 * on the proxy module's API (src/proxy/proxy.h). SIGHUP re-reads
 * --backends-file; SIGTERM/SIGINT stop gracefully. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/ev.h"
#include "core/log.h"
#include "core/net.h"
#include "core/util.h"
#include "proxy/proxy.h"

const char help_proxy[] =
    "Usage: tako proxy --listen ADDR --backend ADDR [--backend ADDR ...] [OPTIONS]\n"
    "\n"
    "Run the HTTP/1.1 load balancer in front of a set of backends.\n"
    "\n"
    "Addresses are HOST:PORT, [V6]:PORT or PORT. A backend may be named: ID=HOST:PORT\n"
    "(the id defaults to the address).\n"
    "\n"
    "Options:\n"
    "  --listen ADDR            address to accept clients on (repeatable)\n"
    "  --backend [ID=]ADDR      a backend (repeatable)\n"
    "  --backends-file FILE     more backends, one per line ([ID=]ADDR, # comments);\n"
    "                           re-read on SIGHUP without dropping a connection\n"
    "  --strategy NAME          round_robin (default), least_connections, ip_hash,\n"
    "                           random, sticky, p2c\n"
    "  --health-path PATH       active HTTP check (2xx/3xx = pass); default: TCP connect\n"
    "  --health-interval DUR    between checks of a backend (2s)\n"
    "  --health-timeout DUR     one check (1s)\n"
    "  --rise N                 passes to bring a failed backend back (2)\n"
    "  --fall N                 failures to take a backend out (3)\n"
    "  --threads N              worker threads, each with its own event loop (CPU count)\n"
    "  --access-log FILE|-      one line per request (time, client, method, path,\n"
    "                           status, bytes, upstream, duration, request id)\n"
    "  --access-log-format F    text (default) or json\n"
    "  --metrics ADDR           serve Prometheus metrics on ADDR (GET /metrics)\n"
    "  --retries N              extra attempts on other backends when safe (2)\n"
    "  --connect-timeout DUR    upstream connect (5s); then retry or 504\n"
    "  --timeout DUR            upstream inactivity during a request (60s); then 504\n"
    "  --header-timeout DUR     to receive a request head (10s); then 408\n"
    "  --body-timeout DUR       a request body may take this long (20s), plus 1s per\n"
    "                           --min-body-rate bytes received; then 408\n"
    "  --min-body-rate SIZE     bytes per second a body must keep up after that (500)\n"
    "  --idle-timeout DUR       keep-alive connection without a request (60s)\n"
    "  --tunnel-timeout DUR     Upgrade (WebSocket) tunnel inactivity (1h)\n"
    "  --drain-timeout DUR      how long a removed backend is reported draining (30s)\n"
    "  --all-down-wait DUR      wait for a healthy backend before 503 (5s; 0 = none)\n"
    "  --max-conns N            open client connections, all threads (10000)\n"
    "  --max-conns-per-backend N  requests in flight per backend (0 = no limit);\n"
    "                           more wait in a queue\n"
    "  --max-queue N            requests waiting for a backend under that limit (256);\n"
    "                           more get 503\n"
    "  --queue-timeout DUR      how long a request may wait in that queue (5s); then 503\n"
    "  --max-header-size SIZE   request line + headers (8k); more gets 431\n"
    "  --sticky-cookie NAME     cookie of the sticky strategy (tako_backend)\n"
    "  --ipv6-prefix BITS       ip_hash: IPv6 client prefix hashed (64)\n"
    "  --trusted-proxy CIDR     believe X-Forwarded-For from these peers (repeatable)\n"
    "  --log-level LEVEL        debug, info (default), warn, error\n"
    "\n"
    "HTTPS:\n"
    "  --https ADDR             accept TLS clients on ADDR (repeatable); needs a certificate\n"
    "  --tls-cert FILE          certificate chain (PEM, leaf first); pairs with the next\n"
    "  --tls-key FILE           --tls-key (repeatable: one pair per certificate, chosen\n"
    "                           by SNI; the first is the default); re-read on SIGHUP\n"
    "  --redirect-https         plain listeners answer 308 to https:// for hosts that\n"
    "                           have a certificate\n"
    "  --hsts DUR               send Strict-Transport-Security with this max-age\n"
    "\n"
    "Durations: 250ms, 2s, 1m. See docs/proxy.md for the exact semantics.\n";

enum {
    O_LISTEN = 256, O_BACKEND, O_BACKENDS_FILE, O_STRATEGY, O_HPATH, O_HINT, O_HTIMEOUT, O_RISE,
    O_FALL, O_THREADS, O_ALOG, O_ALOG_FMT, O_METRICS, O_RETRIES, O_CTIMEOUT, O_TIMEOUT,
    O_HDR_TIMEOUT, O_IDLE_TIMEOUT, O_TUN_TIMEOUT, O_DRAIN, O_ALLDOWN, O_MAXCONNS, O_MAXHDR,
    O_STICKY, O_V6PREFIX, O_TRUSTED, O_LOGLEVEL, O_HTTPS, O_TLS_CERT, O_TLS_KEY, O_REDIRECT,
    O_HSTS, O_BODY_TIMEOUT, O_MIN_BODY_RATE, O_MAXCONNS_BE, O_MAXQUEUE, O_QUEUE_TIMEOUT,
};

static const struct option opts[] = {
    {"listen", required_argument, NULL, O_LISTEN},
    {"backend", required_argument, NULL, O_BACKEND},
    {"backends-file", required_argument, NULL, O_BACKENDS_FILE},
    {"strategy", required_argument, NULL, O_STRATEGY},
    {"health-path", required_argument, NULL, O_HPATH},
    {"health-interval", required_argument, NULL, O_HINT},
    {"health-timeout", required_argument, NULL, O_HTIMEOUT},
    {"rise", required_argument, NULL, O_RISE},
    {"fall", required_argument, NULL, O_FALL},
    {"threads", required_argument, NULL, O_THREADS},
    {"access-log", required_argument, NULL, O_ALOG},
    {"access-log-format", required_argument, NULL, O_ALOG_FMT},
    {"metrics", required_argument, NULL, O_METRICS},
    {"retries", required_argument, NULL, O_RETRIES},
    {"connect-timeout", required_argument, NULL, O_CTIMEOUT},
    {"timeout", required_argument, NULL, O_TIMEOUT},
    {"header-timeout", required_argument, NULL, O_HDR_TIMEOUT},
    {"idle-timeout", required_argument, NULL, O_IDLE_TIMEOUT},
    {"tunnel-timeout", required_argument, NULL, O_TUN_TIMEOUT},
    {"drain-timeout", required_argument, NULL, O_DRAIN},
    {"all-down-wait", required_argument, NULL, O_ALLDOWN},
    {"max-conns", required_argument, NULL, O_MAXCONNS},
    {"max-header-size", required_argument, NULL, O_MAXHDR},
    {"sticky-cookie", required_argument, NULL, O_STICKY},
    {"ipv6-prefix", required_argument, NULL, O_V6PREFIX},
    {"trusted-proxy", required_argument, NULL, O_TRUSTED},
    {"log-level", required_argument, NULL, O_LOGLEVEL},
    {"https", required_argument, NULL, O_HTTPS},
    {"tls-cert", required_argument, NULL, O_TLS_CERT},
    {"tls-key", required_argument, NULL, O_TLS_KEY},
    {"redirect-https", no_argument, NULL, O_REDIRECT},
    {"hsts", required_argument, NULL, O_HSTS},
    {"body-timeout", required_argument, NULL, O_BODY_TIMEOUT},
    {"min-body-rate", required_argument, NULL, O_MIN_BODY_RATE},
    {"max-conns-per-backend", required_argument, NULL, O_MAXCONNS_BE},
    {"max-queue", required_argument, NULL, O_MAXQUEUE},
    {"queue-timeout", required_argument, NULL, O_QUEUE_TIMEOUT},
    {NULL, 0, NULL, 0},
};

struct bspec_list {
    struct proxy_backend_spec *v;
    char **ids;
    size_t n, cap;
};

static int bl_add(struct bspec_list *l, const char *arg)
{
    const char *eq = strchr(arg, '=');
    const char *addr = eq ? eq + 1 : arg;
    struct net_addr a;
    if (net_parse_addr(addr, "127.0.0.1", &a) < 0)
        return -EINVAL;
    if (eq && (eq == arg || (size_t)(eq - arg) >= 64))
        return -EINVAL;
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 8;
        l->v = xrealloc(l->v, l->cap * sizeof(*l->v));
        l->ids = xrealloc(l->ids, l->cap * sizeof(*l->ids));
    }
    l->ids[l->n] = eq ? xstrndup(arg, (size_t)(eq - arg)) : xstrdup(arg);
    memset(&l->v[l->n], 0, sizeof(l->v[l->n]));
    l->v[l->n].id = l->ids[l->n];
    l->v[l->n].addr = a;
    l->n++;
    return 0;
}

static void bl_clear(struct bspec_list *l, size_t keep)
{
    for (size_t i = keep; i < l->n; i++)
        free(l->ids[i]);
    l->n = keep;
}

/* Read FILE into l after the first `keep` entries. Returns 0 or -errno;
 * *line is the line of a parse error. */
static int read_backends_file(const char *path, struct bspec_list *l, int *line)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -errno;
    char buf[512];
    *line = 0;
    while (fgets(buf, sizeof(buf), f)) {
        (*line)++;
        char *h = strchr(buf, '#');
        if (h)
            *h = '\0';
        char *s = buf;
        while (*s == ' ' || *s == '\t')
            s++;
        char *e = s + strlen(s);
        while (e > s && (e[-1] == '\n' || e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t'))
            *--e = '\0';
        if (!*s)
            continue;
        if (bl_add(l, s) < 0) {
            fclose(f);
            return -EINVAL;
        }
    }
    fclose(f);
    return 0;
}

static int dur(const char *flag, const char *v, uint64_t *out)
{
    if (parse_duration_ms(v, out) < 0)
        return cli_usage_error("proxy", "%s: invalid duration '%s'", flag, v);
    return 0;
}

static int num(const char *flag, const char *v, uint64_t max, unsigned *out)
{
    uint64_t x;
    if (parse_uint(v, max, &x) < 0)
        return cli_usage_error("proxy", "%s: expected a number up to %llu, not '%s'", flag,
                               (unsigned long long)max, v);
    *out = (unsigned)x;
    return 0;
}

static struct {
    struct proxy *p;
    struct proxy_pool *pool;
    struct bspec_list backends;
    size_t flag_backends;
    const char *file;
    struct ev_loop loop;
    const char *certs[16], *keys[16];
    size_t ncerts, nkeys;
} g;

/* Load every --tls-cert/--tls-key pair (id = the certificate's path).
 * Returns 0, or -EINVAL after printing which pair failed. */
static int load_certs(bool at_start)
{
    int rc = 0;
    for (size_t i = 0; i < g.ncerts; i++) {
        char err[512];
        if (proxy_tls_set_cert_files(g.p, g.certs[i], g.certs[i], g.keys[i], err, sizeof(err)) < 0) {
            if (at_start)
                fprintf(stderr, "tako proxy: --tls-cert %s: %s\n", g.certs[i], err);
            else
                log_error("proxy: %s; keeping the certificate in use", err);
            rc = -EINVAL;
        }
    }
    if (rc == 0 && !at_start && g.ncerts)
        log_info("proxy: %zu certificates re-read", g.ncerts);
    return rc;
}

static void reload(void)
{
    int line = 0;
    bl_clear(&g.backends, g.flag_backends);
    int r = read_backends_file(g.file, &g.backends, &line);
    if (r < 0) {
        if (r == -EINVAL)
            log_error("proxy: %s:%d: invalid backend; keeping the current set", g.file, line);
        else
            log_error("proxy: %s: %s; keeping the current set", g.file, strerror(-r));
        return;
    }
    r = proxy_pool_set_backends(g.pool, g.backends.v, g.backends.n);
    if (r < 0)
        log_error("proxy: %s: %s (a duplicate id?); keeping the current set", g.file, strerror(-r));
    else
        log_info("proxy: %zu backends from %s", g.backends.n - g.flag_backends, g.file);
}

static void on_signal(struct ev_loop *loop, struct ev_signal *s, int signo)
{
    (void)s;
    if (signo == SIGHUP) {
        if (g.file)
            reload();
        load_certs(false);
        return;
    }
    log_info("proxy: %s: stopping", signo == SIGINT ? "SIGINT" : "SIGTERM");
    ev_loop_stop(loop);
}

int cmd_proxy(int argc, char **argv)
{
    struct proxy_opts po = {0};
    struct proxy_pool_opts pp = {.name = "default", .initial_up = true};
    struct net_addr listens[16], https[16];
    size_t nlisten = 0, nhttps = 0;
    bool redirect = false;
    uint64_t hsts_ms = 0;
    struct proxy_cidr trusted[32];
    size_t ntrusted = 0;
    struct net_addr metrics;
    uint64_t v;
    int c, r;
    memset(&g, 0, sizeof(g));
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        const char *a = optarg;
        switch (c) {
        case O_LISTEN:
            if (nlisten == ARRAY_LEN(listens))
                return cli_usage_error("proxy", "--listen: at most %zu", ARRAY_LEN(listens));
            if (net_parse_addr(a, "0.0.0.0", &listens[nlisten]) < 0)
                return cli_usage_error("proxy", "--listen: invalid address '%s'", a);
            nlisten++;
            break;
        case O_HTTPS:
            if (nhttps == ARRAY_LEN(https))
                return cli_usage_error("proxy", "--https: at most %zu", ARRAY_LEN(https));
            if (net_parse_addr(a, "0.0.0.0", &https[nhttps]) < 0)
                return cli_usage_error("proxy", "--https: invalid address '%s'", a);
            nhttps++;
            break;
        case O_TLS_CERT:
            if (g.ncerts == ARRAY_LEN(g.certs))
                return cli_usage_error("proxy", "--tls-cert: at most %zu", ARRAY_LEN(g.certs));
            g.certs[g.ncerts++] = a;
            break;
        case O_TLS_KEY:
            if (g.nkeys == ARRAY_LEN(g.keys))
                return cli_usage_error("proxy", "--tls-key: at most %zu", ARRAY_LEN(g.keys));
            g.keys[g.nkeys++] = a;
            break;
        case O_REDIRECT:
            redirect = true;
            break;
        case O_HSTS:
            if ((r = dur("--hsts", a, &hsts_ms)))
                return r;
            break;
        case O_BACKEND:
            if (bl_add(&g.backends, a) < 0)
                return cli_usage_error("proxy", "--backend: invalid backend '%s' (want [ID=]HOST:PORT)", a);
            break;
        case O_BACKENDS_FILE:
            g.file = a;
            break;
        case O_STRATEGY: {
            enum lb_kind k;
            if (lb_kind_parse(a, &k) < 0)
                return cli_usage_error("proxy", "--strategy: unknown '%s' (round_robin, least_connections, ip_hash, random, sticky, p2c)", a);
            pp.strategy = k;
            break;
        }
        case O_HPATH:
            if (a[0] != '/' || strpbrk(a, " \r\n"))
                return cli_usage_error("proxy", "--health-path: must start with / and hold no spaces");
            pp.health_path = a;
            break;
        case O_HINT:
            if ((r = dur("--health-interval", a, &pp.health_interval_ms)))
                return r;
            break;
        case O_HTIMEOUT:
            if ((r = dur("--health-timeout", a, &pp.health_timeout_ms)))
                return r;
            break;
        case O_RISE:
            if ((r = num("--rise", a, 100, &pp.rise)))
                return r;
            break;
        case O_FALL:
            if ((r = num("--fall", a, 100, &pp.fall)))
                return r;
            break;
        case O_THREADS:
            if ((r = num("--threads", a, 256, &po.threads)))
                return r;
            break;
        case O_ALOG:
            po.access_log = a;
            break;
        case O_ALOG_FMT:
            if (strcmp(a, "json") == 0)
                po.access_log_format = PROXY_LOG_JSON;
            else if (strcmp(a, "text") == 0)
                po.access_log_format = PROXY_LOG_TEXT;
            else
                return cli_usage_error("proxy", "--access-log-format: text or json, not '%s'", a);
            break;
        case O_METRICS:
            if (net_parse_addr(a, "127.0.0.1", &metrics) < 0)
                return cli_usage_error("proxy", "--metrics: invalid address '%s'", a);
            po.metrics_addr = &metrics;
            break;
        case O_RETRIES:
            if ((r = num("--retries", a, 7, &pp.retries)))
                return r;
            pp.retries_set = true;
            break;
        case O_CTIMEOUT:
            if ((r = dur("--connect-timeout", a, &po.connect_timeout_ms)))
                return r;
            break;
        case O_TIMEOUT:
            if ((r = dur("--timeout", a, &po.timeout_ms)))
                return r;
            break;
        case O_HDR_TIMEOUT:
            if ((r = dur("--header-timeout", a, &po.header_timeout_ms)))
                return r;
            break;
        case O_IDLE_TIMEOUT:
            if ((r = dur("--idle-timeout", a, &po.idle_timeout_ms)))
                return r;
            break;
        case O_TUN_TIMEOUT:
            if ((r = dur("--tunnel-timeout", a, &po.tunnel_timeout_ms)))
                return r;
            break;
        case O_DRAIN:
            if ((r = dur("--drain-timeout", a, &pp.drain_timeout_ms)))
                return r;
            break;
        case O_ALLDOWN:
            if ((r = dur("--all-down-wait", a, &pp.all_down_wait_ms)))
                return r;
            pp.all_down_wait_set = true;
            break;
        case O_MAXCONNS:
            if ((r = num("--max-conns", a, 10000000, &po.max_conns)))
                return r;
            break;
        case O_BODY_TIMEOUT:
            if ((r = dur("--body-timeout", a, &pp.body_timeout_ms)))
                return r;
            break;
        case O_MIN_BODY_RATE:
            if (parse_size_bytes(a, &v) < 0 || v < 1 || v > (1u << 30))
                return cli_usage_error("proxy", "--min-body-rate: bytes per second from 1 to 1g, not '%s'", a);
            pp.min_body_rate = (unsigned)v;
            break;
        case O_MAXCONNS_BE:
            if ((r = num("--max-conns-per-backend", a, 1000000, &pp.max_conns_per_backend)))
                return r;
            break;
        case O_MAXQUEUE:
            if ((r = num("--max-queue", a, 1000000, &pp.max_queue)))
                return r;
            break;
        case O_QUEUE_TIMEOUT:
            if ((r = dur("--queue-timeout", a, &pp.queue_timeout_ms)))
                return r;
            break;
        case O_MAXHDR:
            if (parse_size_bytes(a, &v) < 0 || v < 256 || v > (1u << 20))
                return cli_usage_error("proxy", "--max-header-size: a size from 256 to 1m, not '%s'", a);
            po.max_header_size = (unsigned)v;
            break;
        case O_STICKY:
            if (!*a || strpbrk(a, " ;=,\"\t\r\n"))
                return cli_usage_error("proxy", "--sticky-cookie: invalid cookie name '%s'", a);
            pp.sticky_cookie = a;
            break;
        case O_V6PREFIX:
            if ((r = num("--ipv6-prefix", a, 128, &pp.ipv6_prefix)))
                return r;
            break;
        case O_TRUSTED:
            if (ntrusted == ARRAY_LEN(trusted) || proxy_cidr_parse(a, &trusted[ntrusted]) < 0)
                return cli_usage_error("proxy", "--trusted-proxy: invalid CIDR '%s'", a);
            ntrusted++;
            break;
        case O_LOGLEVEL: {
            enum log_level lv;
            if (log_parse_level(a, &lv) < 0)
                return cli_usage_error("proxy", "--log-level: debug, info, warn or error");
            log_set_level(lv);
            break;
        }
        default:
            return cli_usage_error("proxy", "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return cli_usage_error("proxy", "unexpected argument '%s'", argv[optind]);
    if (!nlisten && !nhttps)
        return cli_usage_error("proxy", "--listen is required (or --https ADDR for TLS only)");
    if (g.ncerts != g.nkeys)
        return cli_usage_error("proxy", "--tls-cert and --tls-key come in pairs (%zu certificates, %zu keys)",
                               g.ncerts, g.nkeys);
    if (nhttps && !g.ncerts)
        return cli_usage_error("proxy", "--https needs a certificate: give --tls-cert and --tls-key");
    g.flag_backends = g.backends.n;
    if (g.file) {
        int line = 0;
        r = read_backends_file(g.file, &g.backends, &line);
        if (r == -EINVAL)
            return cli_usage_error("proxy", "%s:%d: invalid backend (want [ID=]HOST:PORT)", g.file, line);
        if (r < 0)
            return cli_usage_error("proxy", "--backends-file %s: %s", g.file, strerror(-r));
    }
    if (!g.backends.n && !g.file)
        return cli_usage_error("proxy", "no backend: give --backend or --backends-file");
    po.trusted = trusted;
    po.ntrusted = ntrusted;

    g.p = proxy_new(&po);
    if (!g.p) {
        fprintf(stderr, "tako proxy: --access-log %s: %s\n", po.access_log, strerror(errno));
        return EXIT_FAILED;
    }
    g.pool = proxy_pool_new(g.p, &pp);
    r = proxy_pool_set_backends(g.pool, g.backends.v, g.backends.n);
    if (r < 0) {
        proxy_free(g.p);
        return cli_usage_error("proxy", "backend ids must be unique and shorter than 64 bytes");
    }
    if (load_certs(true) < 0) {
        proxy_free(g.p);
        return EXIT_FAILED;
    }
    for (size_t i = 0; i < nlisten + nhttps; i++) {
        bool tls = i >= nlisten;
        const struct net_addr *la = tls ? &https[i - nlisten] : &listens[i];
        r = tls ? proxy_listen_tls(g.p, la, g.pool) : proxy_listen(g.p, la, g.pool);
        if (r < 0) {
            char b[64];
            fprintf(stderr, "tako proxy: cannot listen on %s: %s\n", net_addr_str(la, b, sizeof(b)),
                    strerror(-r));
            proxy_free(g.p);
            return EXIT_FAILED;
        }
        if (!tls && redirect && nhttps)
            proxy_listener_https_redirect(g.p, la, net_addr_port(&https[0]));
        if (tls && hsts_ms)
            proxy_listener_hsts(g.p, la, hsts_ms / 1000);
    }
    /* Signals become events of this thread's loop; blocked before the
     * workers start so that none of them takes one. */
    if (ev_loop_init(&g.loop) < 0)
        die(EXIT_FAILED, "event loop: %s", strerror(errno));
    struct ev_signal shup, sterm, sint;
    ev_signal_start(&g.loop, &shup, SIGHUP, on_signal, NULL);
    ev_signal_start(&g.loop, &sterm, SIGTERM, on_signal, NULL);
    ev_signal_start(&g.loop, &sint, SIGINT, on_signal, NULL);
    r = proxy_start(g.p);
    if (r < 0) {
        fprintf(stderr, "tako proxy: %s\n", strerror(-r));
        proxy_free(g.p);
        return EXIT_FAILED;
    }
    log_info("proxy: %zu backends, strategy %s, %u threads", g.backends.n,
             lb_kind_name(pp.strategy), po.threads ? po.threads : 0);
    ev_run(&g.loop);
    proxy_stop(g.p);
    proxy_free(g.p);
    ev_loop_close(&g.loop);
    bl_clear(&g.backends, 0);
    free(g.backends.v);
    free(g.backends.ids);
    return EXIT_OK;
}
