/* dk_tool.c — runs one Docker Engine API call of src/runtime/docker_api.h
 * from the command line, so end-to-end tests can check each call against
 * a real dockerd (DOCKER_HOST names its socket).
 *
 * Usage: dk_tool CMD ARGS...; the last stdout line is a JSON result
 * {"ok":true|false,"errno":N,"error":"...",...}; exit status 0 when ok.
 *   ping
 *   build DIR TAG [DOCKERFILE]     progress lines are printed as "| LINE"
 *   create JSON                    {"name","hostname","image","cmd":[..],"env":[..],
 *                                   "labels":{..},"host_network":bool,"publish":N,
 *                                   "port":N,"stop_timeout":N}
 *   start|inspect|rm|rmf ID        stop ID SECONDS        kill ID [SIGNAL]
 *   logs ID [TAIL]                 records printed as "1|TEXT" / "2|TEXT"
 *   follow ID SECONDS              logs with follow, cancelled after SECONDS
 *   stats ID                       one sample with precpu (stream=false)
 *   list LABEL                     containers with that label
 *   events LABEL N SECONDS         print N events (or until SECONDS), one per line
 *   image-inspect|image-rm NAME    image-tag SRC REPO TAG     image-list REF [LABEL]
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "runtime/docker_api.h"

static void result(int rc, const char *err, json_t *extra)
{
    json_t *o = extra ? extra : json_object();
    json_object_set_new(o, "ok", json_boolean(rc == 0));
    json_object_set_new(o, "errno", json_integer(-rc));
    if (rc != 0)
        json_object_set_new(o, "error", json_string(err));
    char *s = json_dumps(o, JSON_COMPACT);
    printf("%s\n", s);
    fflush(stdout);
    free(s);
    json_decref(o);
}

static void on_progress(void *data, const char *line)
{
    (void)data;
    printf("| %s\n", line);
    fflush(stdout);
}

static int on_log(void *data, int stream, const char *buf, size_t len)
{
    (void)data;
    /* records may split lines: print each record's lines prefixed */
    static int at_line_start = 1;
    for (size_t i = 0; i < len; i++) {
        if (at_line_start)
            printf("%d|", stream);
        putchar(buf[i]);
        at_line_start = buf[i] == '\n';
    }
    fflush(stdout);
    return 0;
}

struct evctx {
    int want, got;
};

static int on_event(void *data, json_t *ev)
{
    struct evctx *c = data;
    const char *name = json_string_value(
        json_object_get(json_object_get(json_object_get(ev, "Actor"), "Attributes"), "name"));
    json_t *o = json_pack("{s:s?,s:s?,s:s?}", "type", "event", "status",
                          json_string_value(json_object_get(ev, "status")), "name", name);
    char *s = json_dumps(o, JSON_COMPACT);
    printf("%s\n", s);
    fflush(stdout);
    free(s);
    json_decref(o);
    return ++c->got >= c->want;
}

static volatile bool cancel_flag;
static void *canceller(void *arg)
{
    sleep((unsigned)(long)arg);
    cancel_flag = true;
    return NULL;
}

static const char **strv(json_t *a)
{
    if (!json_is_array(a))
        return NULL;
    const char **v = calloc(json_array_size(a) + 1, sizeof(*v));
    for (size_t i = 0; i < json_array_size(a); i++)
        v[i] = json_string_value(json_array_get(a, i));
    return v;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: dk_tool CMD ARGS...\n");
        return 2;
    }
    char err[4096] = "";
    struct dk_client *c = NULL;
    int rc = dk_open(NULL, &c, err, sizeof(err));
    if (rc < 0) {
        result(rc, err, NULL);
        return 1;
    }
    const char *cmd = argv[1];
    const char *a1 = argc > 2 ? argv[2] : "", *a2 = argc > 3 ? argv[3] : NULL,
               *a3 = argc > 4 ? argv[4] : NULL;
    json_t *extra = json_object();
    if (strcmp(cmd, "ping") == 0) {
        rc = dk_ping(c, err, sizeof(err));
        json_object_set_new(extra, "version", json_string(dk_version(c)));
        json_object_set_new(extra, "socket", json_string(dk_socket(c)));
    } else if (strcmp(cmd, "build") == 0) {
        char id[128] = "";
        struct dk_build_opts o = {.dir = a1, .tag = a2, .dockerfile = a3,
                                  .progress = on_progress};
        const char *labels[] = {"tako.test", "1", NULL};
        o.label_kv = labels;
        rc = dk_build(c, &o, id, sizeof(id), err, sizeof(err));
        json_object_set_new(extra, "id", json_string(id));
    } else if (strcmp(cmd, "create") == 0) {
        json_t *s = json_loads(a1, 0, NULL);
        if (!s) {
            fprintf(stderr, "create: bad JSON\n");
            return 2;
        }
        json_t *lab = json_object_get(s, "labels");
        const char **kv = calloc(2 * json_object_size(lab) + 1, sizeof(*kv));
        size_t k = 0;
        const char *key;
        json_t *val;
        json_object_foreach(lab, key, val)
        {
            kv[k++] = key;
            kv[k++] = json_string_value(val);
        }
        const char **cmdv = strv(json_object_get(s, "cmd")), **env = strv(json_object_get(s, "env"));
        struct dk_create o = {
            .name = json_string_value(json_object_get(s, "name")),
            .hostname = json_string_value(json_object_get(s, "hostname")),
            .image = json_string_value(json_object_get(s, "image")),
            .cmd = (char *const *)cmdv,
            .env = env,
            .label_kv = kv,
            .host_network = json_is_true(json_object_get(s, "host_network")),
            .publish_host_port = (uint16_t)json_integer_value(json_object_get(s, "publish")),
            .container_port = (uint16_t)json_integer_value(json_object_get(s, "port")),
            .stop_timeout_s = (unsigned)json_integer_value(json_object_get(s, "stop_timeout")),
        };
        char id[72] = "";
        rc = dk_container_create(c, &o, id, err, sizeof(err));
        json_object_set_new(extra, "id", json_string(id));
        free(kv), free(cmdv), free(env);
        json_decref(s);
    } else if (strcmp(cmd, "start") == 0) {
        rc = dk_container_start(c, a1, err, sizeof(err));
    } else if (strcmp(cmd, "stop") == 0) {
        rc = dk_container_stop(c, a1, a2 ? (unsigned)atoi(a2) : 10, err, sizeof(err));
    } else if (strcmp(cmd, "kill") == 0) {
        rc = dk_container_kill(c, a1, a2, err, sizeof(err));
    } else if (strcmp(cmd, "rm") == 0 || strcmp(cmd, "rmf") == 0) {
        rc = dk_container_remove(c, a1, strcmp(cmd, "rmf") == 0, err, sizeof(err));
    } else if (strcmp(cmd, "inspect") == 0) {
        json_t *j = NULL;
        rc = dk_container_inspect(c, a1, &j, err, sizeof(err));
        if (j)
            json_object_set_new(extra, "inspect", j);
    } else if (strcmp(cmd, "list") == 0) {
        json_t *j = NULL;
        rc = dk_container_list(c, a1, &j, err, sizeof(err));
        if (j)
            json_object_set_new(extra, "list", j);
    } else if (strcmp(cmd, "logs") == 0) {
        rc = dk_container_logs(c, a1, false, a2 ? atoi(a2) : -1, false, on_log, NULL,
                               NULL, err, sizeof(err));
    } else if (strcmp(cmd, "follow") == 0) {
        pthread_t t;
        pthread_create(&t, NULL, canceller, (void *)(long)(a2 ? atoi(a2) : 2));
        pthread_detach(t);
        rc = dk_container_logs(c, a1, true, -1, false, on_log, NULL, &cancel_flag, err,
                               sizeof(err));
        json_object_set_new(extra, "cancelled", json_boolean(cancel_flag));
    } else if (strcmp(cmd, "stats") == 0) {
        struct dk_stats st;
        rc = dk_container_stats(c, a1, false, &st, err, sizeof(err));
        json_object_set_new(extra, "cpu_percent", json_real(dk_cpu_percent(&st, NULL)));
        json_object_set_new(extra, "mem", json_integer((json_int_t)dk_mem_used(&st)));
        json_object_set_new(extra, "limit", json_integer((json_int_t)st.mem_limit));
        json_object_set_new(extra, "pids", json_integer(st.pids));
        json_object_set_new(extra, "has_pre", json_boolean(st.has_pre));
    } else if (strcmp(cmd, "events") == 0) {
        struct evctx ctx = {.want = a2 ? atoi(a2) : 1};
        pthread_t t;
        pthread_create(&t, NULL, canceller, (void *)(long)(a3 ? atoi(a3) : 10));
        pthread_detach(t);
        rc = dk_events(c, a1, 0, on_event, &ctx, &cancel_flag, err, sizeof(err));
        json_object_set_new(extra, "events", json_integer(ctx.got));
    } else if (strcmp(cmd, "image-inspect") == 0) {
        json_t *j = NULL;
        rc = dk_image_inspect(c, a1, &j, err, sizeof(err));
        if (j)
            json_object_set_new(extra, "inspect", j);
    } else if (strcmp(cmd, "image-rm") == 0) {
        rc = dk_image_remove(c, a1, false, err, sizeof(err));
    } else if (strcmp(cmd, "image-tag") == 0) {
        rc = dk_image_tag(c, a1, a2, a3, err, sizeof(err));
    } else if (strcmp(cmd, "image-list") == 0) {
        json_t *j = NULL;
        rc = dk_image_list(c, a1, a2, &j, err, sizeof(err));
        if (j)
            json_object_set_new(extra, "list", j);
    } else {
        fprintf(stderr, "dk_tool: unknown command %s\n", cmd);
        return 2;
    }
    result(rc, err, extra);
    dk_close(c);
    return rc == 0 ? 0 : 1;
}
