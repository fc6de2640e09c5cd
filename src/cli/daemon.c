/* daemon.c — `tako daemon`: run takod, ask it to stop or report its status,
 * or bridge stdin/stdout to its socket (--stdio, how a remote CLI reaches it
 * through ssh). */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/client.h"
#include "core/log.h"
#include "daemon/home.h"
#include "daemon/takod.h"

const char help_daemon[] =
    "Usage: tako daemon [--foreground] [--log-level LEVEL] [--access-log FILE]\n"
    "       tako daemon --stop | --status | --stdio\n"
    "\n"
    "Run takod, the node agent: it keeps the desired state in SQLite, runs the\n"
    "replicas, drives the data plane (the load balancer, its own process: it keeps\n"
    "serving while takod is down) and serves the control API on the unix socket\n"
    "$TAKO_HOME/takod.sock (mode 0600; see docs/api.md). Every command that needs\n"
    "takod starts it in the background, so running it by hand is rarely needed.\n"
    "\n"
    "State directory: $TAKO_HOME, else /var/lib/tako as root, else ~/.local/state/tako.\n"
    "Files there: takod.pid, takod.sock, takod.log, state.db, replicas/<name>/,\n"
    "dataplane.pid, dataplane.sock, dataplane.log.\n"
    "\n"
    "Options:\n"
    "  --foreground        stay in the foreground, log to stderr (for systemd;\n"
    "                      see contrib/tako.service)\n"
    "  --log-level LEVEL   debug, info (default), warn or error\n"
    "  --access-log FILE   one line per proxied request (default: none; also\n"
    "                      $TAKO_ACCESS_LOG; \"-\" is standard output; format in\n"
    "                      docs/proxy.md; not rotated by takod)\n"
    "  --stop              ask a running takod to stop (replicas keep running)\n"
    "  --status            print whether takod runs, its pid and version\n"
    "  --stdio             connect standard input and output to takod's socket,\n"
    "                      starting takod in the background when it is not running;\n"
    "                      a CLI on another machine runs `ssh HOST tako daemon\n"
    "                      --stdio` to speak the control API (docs/servers.md)\n"
    "\n"
    "SIGTERM or SIGINT stop takod; replicas and the data plane keep running and\n"
    "are adopted by the next takod, which upgrades the data plane in place when it\n"
    "is another build (docs/operations.md). `tako down` stops a project's replicas.\n"
    "\n"
    "Exit status: 0, 1 takod failed to start or stopped with an error, 2 usage\n"
    "error, 3 takod is not running (--status) or cannot be reached (--stdio).\n";

/* Copy bytes both ways until takod closes its side. Our stdin's EOF (the
 * remote CLI finished sending) half-closes the socket so takod still
 * answers. */
static int bridge(int sock)
{
    struct pollfd p[2] = {{.fd = 0, .events = POLLIN}, {.fd = sock, .events = POLLIN}};
    char buf[65536];
    bool in_open = true;
    for (;;) {
        p[0].fd = in_open ? 0 : -1;
        if (poll(p, 2, -1) == -1) {
            if (errno == EINTR)
                continue;
            return EXIT_FAILED;
        }
        if (in_open && (p[0].revents & (POLLIN | POLLHUP | POLLERR))) {
            ssize_t n = read(0, buf, sizeof(buf));
            if (n == -1 && errno == EINTR)
                continue;
            if (n <= 0) {
                in_open = false;
                shutdown(sock, SHUT_WR);
            } else {
                for (ssize_t off = 0; off < n;) {
                    ssize_t w = send(sock, buf + off, (size_t)(n - off), MSG_NOSIGNAL);
                    if (w == -1 && errno == EINTR)
                        continue;
                    if (w <= 0)
                        return EXIT_OK; /* takod went away; it has said what it had to say */
                    off += w;
                }
            }
        }
        if (p[1].revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = recv(sock, buf, sizeof(buf), 0);
            if (n == -1 && errno == EINTR)
                continue;
            if (n <= 0)
                return EXIT_OK;
            for (ssize_t off = 0; off < n;) {
                ssize_t w = write(1, buf + off, (size_t)(n - off));
                if (w == -1 && errno == EINTR)
                    continue;
                if (w <= 0)
                    return EXIT_FAILED; /* the client is gone */
                off += w;
            }
        }
    }
}

int cmd_daemon(int argc, char **argv)
{
    static const struct option opts[] = {{"foreground", no_argument, NULL, 'f'},
                                         {"log-level", required_argument, NULL, 'l'},
                                         {"stop", no_argument, NULL, 's'},
                                         {"status", no_argument, NULL, 'S'},
                                         {"stdio", no_argument, NULL, 'i'},
                                         {"access-log", required_argument, NULL, 'a'},
                                         {0}};
    bool foreground = false, stop = false, status = false, stdio = false;
    const char *access_log = getenv("TAKO_ACCESS_LOG");
    if (access_log && !*access_log)
        access_log = NULL;
    int o;
    optind = 1;
    opterr = 0;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'f': foreground = true; break;
        case 's': stop = true; break;
        case 'S': status = true; break;
        case 'i': stdio = true; break;
        case 'a': access_log = optarg; break;
        case 'l': {
            enum log_level lv;
            if (log_parse_level(optarg, &lv) < 0)
                return cli_usage_error("daemon", "invalid --log-level '%s'", optarg);
            log_set_level(lv);
            break;
        }
        default:
            return cli_usage_error("daemon", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return cli_usage_error("daemon", "unexpected argument '%s'", argv[optind]);
    if (foreground + stop + status + stdio > 1)
        return cli_usage_error("daemon", "--foreground, --stop, --status and --stdio exclude "
                                         "each other");
    const char *home = tako_home();
    if (!home) {
        fprintf(stderr, "tako daemon: cannot create the state directory: %s\n", strerror(errno));
        return EXIT_FAILED;
    }
    if (stdio) {
        if (access_log)
            setenv("TAKO_ACCESS_LOG", access_log, 1);
        int fd = client_connect(true);
        if (fd < 0)
            return client_unavailable(fd);
        int rc = bridge(fd);
        close(fd);
        return rc;
    }
    if (stop || status) {
        json_t *resp = NULL;
        int fd = client_connect(false);
        if (fd < 0) {
            printf("takod is not running (%s)\n", home);
            return status ? EXIT_UNAVAIL : EXIT_OK;
        }
        close(fd);
        int st = client_call(stop ? "POST" : "GET", stop ? "/v1/shutdown" : "/v1/version", NULL,
                             &resp);
        if (status && st == 200)
            printf("takod %s running, pid %lld, state in %s\n",
                   json_string_value(json_object_get(resp, "version")),
                   (long long)json_integer_value(json_object_get(resp, "pid")), home);
        else if (stop)
            printf("takod stopped\n");
        json_decref(resp);
        return st == 200 ? EXIT_OK : EXIT_FAILED;
    }
    if (!foreground) {
        if (access_log) /* the background takod reads it from its environment */
            setenv("TAKO_ACCESS_LOG", access_log, 1);
        int fd = client_connect(true);
        if (fd < 0)
            return client_unavailable(fd);
        close(fd);
        printf("takod running (state in %s)\n", home);
        return EXIT_OK;
    }
    struct takod_opts to = {.home = home, .access_log = access_log};
    return takod_run(&to) == 0 ? EXIT_OK : EXIT_FAILED;
}
