/* logs.c — GET /v1/logs: the replicas' captured output, read through their
 * runtime drivers and streamed to the client: the sources, the last lines
 * merged by time, then (follow) each new line as it is written, including
 * those of replicas that appear later. The CLI never reads log files. */
#include "daemon/logs.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ev.h"
#include "core/util.h"
#include "daemon/api.h"
#include "runtime/rt.h"

#define LOGS_RESCAN_MS 1000 /* new replicas (scaling) are picked up this often */

struct logs_src {
    struct rt_log_ref ref;
    struct rt_log_follow *follow;
};

struct logs_stream {
    struct api_conn *conn;
    struct rt *rt;
    struct ev_loop *loop;
    char project[128], service[128], instance[128];
    struct logs_src *srcs;
    size_t nsrcs;
    struct ev_timer rescan;
};

struct logs_line {
    const char *name;
    char *text;
};

static int cmp_line(const void *a, const void *b)
{
    const struct logs_line *x = a, *y = b;
    /* Lines start with an ISO-8601 UTC timestamp: text order is time order. */
    int c = strncmp(x->text, y->text, 24);
    return c ? c : strcmp(x->name, y->name);
}

/* The sources of the request: instance alone, or project (and service). */
static void list_sources(struct rt *rt, const char *project, const char *service,
                         const char *instance, struct rt_log_ref **out, size_t *n)
{
    rt_logs_list(rt, instance ? NULL : project, instance ? NULL : service, out, n);
    if (!instance)
        return;
    size_t k = 0;
    for (size_t i = 0; i < *n; i++)
        if (strcmp((*out)[i].name, instance) == 0)
            (*out)[k++] = (*out)[i];
    *n = k;
}

static void on_line(void *data, const char *name, const char *text)
{
    struct logs_stream *s = data;
    api_stream_json(s->conn, json_pack("{s:s, s:s, s:s}", "type", "line", "name", name, "text",
                                       text));
}

static void stream_free(struct logs_stream *s)
{
    ev_timer_stop(s->loop, &s->rescan);
    for (size_t i = 0; i < s->nsrcs; i++)
        rt_logs_unfollow(s->srcs[i].follow);
    free(s->srcs);
    free(s);
}

static void on_closed(struct api_conn *c, void *data)
{
    (void)c;
    stream_free(data);
}

/* Follow src; from_start for replicas that appeared after the tail. */
static void follow_add(struct logs_stream *s, const struct rt_log_ref *ref, bool from_start)
{
    s->srcs = xrealloc(s->srcs, (s->nsrcs + 1) * sizeof(*s->srcs));
    struct logs_src *src = &s->srcs[s->nsrcs++];
    src->ref = *ref;
    src->follow = NULL;
    rt_logs_follow(s->rt, ref->driver, ref->name, from_start, on_line, s, &src->follow);
}

static void on_rescan(struct ev_loop *loop, struct ev_timer *t)
{
    struct logs_stream *s = t->data;
    struct rt_log_ref *v = NULL;
    size_t n = 0;
    list_sources(s->rt, s->project[0] ? s->project : NULL, s->service[0] ? s->service : NULL,
                 s->instance[0] ? s->instance : NULL, &v, &n);
    for (size_t i = 0; i < n; i++) {
        bool known = false;
        for (size_t j = 0; j < s->nsrcs && !known; j++)
            known = strcmp(s->srcs[j].ref.name, v[i].name) == 0;
        if (known)
            continue;
        api_stream_json(s->conn, json_pack("{s:s, s:s}", "type", "source", "name", v[i].name));
        follow_add(s, &v[i], true);
    }
    free(v);
    ev_timer_start(loop, &s->rescan, LOGS_RESCAN_MS);
}

void logs_handle(struct api_req *r, struct rt *rt, struct ev_loop *loop)
{
    char p[128], sv[128], in[128], tl[32], sn[32], fo[8];
    const char *project = api_query(r, "project", p, sizeof(p));
    const char *service = api_query(r, "service", sv, sizeof(sv));
    const char *instance = api_query(r, "instance", in, sizeof(in));
    const char *tail_s = api_query(r, "tail", tl, sizeof(tl));
    const char *since_s = api_query(r, "since_ms", sn, sizeof(sn));
    const char *follow_s = api_query(r, "follow", fo, sizeof(fo));
    project = project && *project ? project : NULL;
    service = service && *service ? service : NULL;
    instance = instance && *instance ? instance : NULL;
    uint64_t tail = 100, since = 0;
    if ((tail_s && *tail_s && parse_uint(tail_s, 100000000, &tail) < 0) ||
        (since_s && *since_s && parse_uint(since_s, UINT64_MAX, &since) < 0)) {
        api_reply_error(r->conn, 400, "logs: tail and since_ms are non-negative integers");
        return;
    }
    bool follow = follow_s && (strcmp(follow_s, "1") == 0 || strcmp(follow_s, "true") == 0);

    struct rt_log_ref *refs = NULL;
    size_t n = 0;
    list_sources(rt, project, service, instance, &refs, &n);
    struct logs_stream *s = NULL;
    if (follow) {
        s = xcalloc(1, sizeof(*s));
        s->conn = r->conn;
        s->rt = rt;
        s->loop = loop;
        ev_timer_init(&s->rescan, on_rescan, s);
        snprintf(s->project, sizeof(s->project), "%s", project ? project : "");
        snprintf(s->service, sizeof(s->service), "%s", service ? service : "");
        snprintf(s->instance, sizeof(s->instance), "%s", instance ? instance : "");
    }
    api_stream_begin(r->conn, follow ? on_closed : NULL, s);
    json_t *names = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(names, json_string(refs[i].name));
    api_stream_json(r->conn, json_pack("{s:s, s:o}", "type", "sources", "names", names));

    /* The tail: every source's last lines, merged by time, the last N kept. */
    struct logs_line *lines = NULL;
    size_t nl = 0;
    for (size_t i = 0; i < n; i++) {
        char **l = NULL;
        size_t k = 0;
        if (rt_logs_tail(rt, refs[i].driver, refs[i].name, tail, since, &l, &k) < 0)
            continue;
        lines = xrealloc(lines, (nl + k + 1) * sizeof(*lines));
        for (size_t j = 0; j < k; j++) {
            lines[nl].name = refs[i].name;
            lines[nl].text = l[j];
            nl++;
        }
        free(l); /* the strings moved into lines */
    }
    if (nl)
        qsort(lines, nl, sizeof(*lines), cmp_line);
    size_t first = tail && nl > tail ? nl - tail : 0;
    for (size_t i = first; i < nl; i++)
        api_stream_json(r->conn, json_pack("{s:s, s:s, s:s}", "type", "line", "name",
                                           lines[i].name, "text", lines[i].text));
    for (size_t i = 0; i < nl; i++)
        free(lines[i].text);
    free(lines);

    if (!follow) {
        free(refs);
        api_stream_end(r->conn);
        return;
    }
    if (!api_conn_alive(r->conn)) { /* on_closed ran already: s is gone */
        free(refs);
        return;
    }
    for (size_t i = 0; i < n; i++)
        follow_add(s, &refs[i], false);
    free(refs);
    ev_timer_start(s->loop, &s->rescan, LOGS_RESCAN_MS);
}
