/* logs.c — GET /v1/logs: the replicas' captured output, read through their
 * runtime drivers and streamed to the client: the sources, the last lines
 * merged by time, then (follow) each new line as it is written, including
 * those of replicas that appear later. The CLI never reads log files.
 *
 * Lines go out through one queue at the pace the client reads (at most
 * LOGS_PENDING_MAX bytes waiting in the connection), so a tail of every
 * rotated file is not cut off by the API's limit for readers that stopped
 * reading, and followed lines keep their order after the tail. */
#include "daemon/logs.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ev.h"
#include "core/log.h"
#include "core/util.h"
#include "daemon/api.h"
#include "runtime/rt.h"

#define LOGS_RESCAN_MS 1000         /* new replicas (scaling) are picked up this often */
#define LOGS_PENDING_MAX (1u << 20) /* bytes waiting in the connection before we wait too */
#define LOGS_PUMP_MS 5              /* then look again this much later */
#define LOGS_BACKLOG_MAX 200000     /* followed lines queued for a client that stopped reading */

struct logs_line {
    const char *name; /* into refs or a follower: lives as long as the stream */
    char *text;
};

struct logs_stream {
    struct api_conn *conn;
    struct rt *rt;
    struct ev_loop *loop;
    char project[128], service[128], instance[128];
    bool follow, tail_done, closed, busy;
    struct rt_log_ref *refs; /* the sources of the tail */
    size_t nrefs;
    struct {
        struct rt_log_ref ref;
        struct rt_log_follow *follow;
    } *srcs;
    size_t nsrcs;
    struct logs_line *q; /* lines not sent yet: [qhead, qlen) */
    size_t qhead, qlen, qcap;
    struct ev_timer rescan, pump;
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

static void enqueue(struct logs_stream *s, const char *name, char *text)
{
    if (s->qlen == s->qcap) {
        s->qcap = s->qcap ? s->qcap * 2 : 256;
        s->q = xrealloc(s->q, s->qcap * sizeof(*s->q));
    }
    s->q[s->qlen].name = name;
    s->q[s->qlen].text = text;
    s->qlen++;
}

static void stream_free(struct logs_stream *s)
{
    ev_timer_stop(s->loop, &s->rescan);
    ev_timer_stop(s->loop, &s->pump);
    for (size_t i = 0; i < s->nsrcs; i++)
        rt_logs_unfollow(s->srcs[i].follow);
    for (size_t i = s->qhead; i < s->qlen; i++)
        free(s->q[i].text);
    free(s->q);
    free(s->srcs);
    free(s->refs);
    free(s);
}

static void on_closed(struct api_conn *c, void *data)
{
    (void)c;
    struct logs_stream *s = data;
    s->closed = true;
    if (!s->busy) /* else the pump that was writing frees it */
        stream_free(s);
}

static void follow_add(struct logs_stream *s, const struct rt_log_ref *ref, bool from_start);

/* Send queued lines while the client keeps up; then end (no follow), or
 * start following once the tail is out. */
static void pump(struct logs_stream *s)
{
    s->busy = true;
    while (s->qhead < s->qlen && !s->closed && api_conn_pending(s->conn) < LOGS_PENDING_MAX) {
        struct logs_line *l = &s->q[s->qhead++];
        api_stream_json(s->conn, json_pack("{s:s, s:s, s:s}", "type", "line", "name", l->name,
                                           "text", l->text));
        free(l->text);
    }
    s->busy = false;
    if (s->closed) {
        stream_free(s);
        return;
    }
    if (s->qhead == s->qlen)
        s->qhead = s->qlen = 0;
    if (s->qhead < s->qlen) {
        if (s->tail_done && s->qlen - s->qhead > LOGS_BACKLOG_MAX) {
            log_warn("logs: a follower stopped reading; ending its stream");
            api_stream_end(s->conn);
            stream_free(s);
            return;
        }
        ev_timer_start(s->loop, &s->pump, LOGS_PUMP_MS);
        return;
    }
    if (s->tail_done)
        return;
    s->tail_done = true;
    if (!s->follow) {
        api_stream_end(s->conn);
        stream_free(s);
        return;
    }
    ev_timer_start(s->loop, &s->rescan, LOGS_RESCAN_MS);
}

static void on_pump(struct ev_loop *loop, struct ev_timer *t)
{
    (void)loop;
    pump(t->data);
}

/* A followed line: queued behind what is not sent yet, sent from the pump
 * (never from inside the follower's own callback). */
static void on_line(void *data, const char *name, const char *text)
{
    struct logs_stream *s = data;
    enqueue(s, name, xstrdup(text));
    if (!ev_timer_active(&s->pump))
        ev_timer_start(s->loop, &s->pump, 0);
}

/* Follow ref; from_start for replicas that appeared after the tail. */
static void follow_add(struct logs_stream *s, const struct rt_log_ref *ref, bool from_start)
{
    s->srcs = xrealloc(s->srcs, (s->nsrcs + 1) * sizeof(*s->srcs));
    s->srcs[s->nsrcs].ref = *ref;
    s->srcs[s->nsrcs].follow = NULL;
    rt_logs_follow(s->rt, ref->driver, ref->name, from_start, on_line, s,
                   &s->srcs[s->nsrcs].follow);
    s->nsrcs++;
}

static void on_rescan(struct ev_loop *loop, struct ev_timer *t)
{
    struct logs_stream *s = t->data;
    struct rt_log_ref *v = NULL;
    size_t n = 0;
    list_sources(s->rt, s->project[0] ? s->project : NULL, s->service[0] ? s->service : NULL,
                 s->instance[0] ? s->instance : NULL, &v, &n);
    s->busy = true; /* a close while we write only marks it */
    for (size_t i = 0; i < n; i++) {
        bool known = false;
        for (size_t j = 0; j < s->nsrcs && !known; j++)
            known = strcmp(s->srcs[j].ref.name, v[i].name) == 0;
        if (known)
            continue;
        /* Announced before any of its lines, which queue behind this. */
        api_stream_json(s->conn, json_pack("{s:s, s:s}", "type", "source", "name", v[i].name));
        if (s->closed)
            break;
        follow_add(s, &v[i], true);
    }
    free(v);
    s->busy = false;
    if (s->closed) {
        stream_free(s);
        return;
    }
    ev_timer_start(loop, &s->rescan, LOGS_RESCAN_MS);
}

/* Every source's last tail lines (0 = all) since since_ms, merged by time,
 * the last tail of them kept, into the queue. */
static void queue_tail(struct logs_stream *s, uint64_t tail, uint64_t since)
{
    for (size_t i = 0; i < s->nrefs; i++) {
        char **l = NULL;
        size_t k = 0;
        if (rt_logs_tail(s->rt, s->refs[i].driver, s->refs[i].name, tail, since, &l, &k) < 0)
            continue;
        for (size_t j = 0; j < k; j++)
            enqueue(s, s->refs[i].name, l[j]);
        free(l); /* the strings moved into the queue */
    }
    if (s->qlen)
        qsort(s->q, s->qlen, sizeof(*s->q), cmp_line);
    while (tail && s->qlen - s->qhead > tail)
        free(s->q[s->qhead++].text);
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
    struct logs_stream *s = xcalloc(1, sizeof(*s));
    s->conn = r->conn;
    s->rt = rt;
    s->loop = loop;
    s->follow = follow_s && (strcmp(follow_s, "1") == 0 || strcmp(follow_s, "true") == 0);
    ev_timer_init(&s->rescan, on_rescan, s);
    ev_timer_init(&s->pump, on_pump, s);
    snprintf(s->project, sizeof(s->project), "%s", project ? project : "");
    snprintf(s->service, sizeof(s->service), "%s", service ? service : "");
    snprintf(s->instance, sizeof(s->instance), "%s", instance ? instance : "");
    list_sources(rt, project, service, instance, &s->refs, &s->nrefs);

    s->busy = true; /* a close while we write marks it; we free below */
    api_stream_begin(r->conn, on_closed, s);
    json_t *names = json_array();
    for (size_t i = 0; i < s->nrefs; i++)
        json_array_append_new(names, json_string(s->refs[i].name));
    api_stream_json(r->conn, json_pack("{s:s, s:o}", "type", "sources", "names", names));
    s->busy = false;
    if (s->closed) {
        stream_free(s);
        return;
    }
    queue_tail(s, tail, since);
    /* Followers start where the tail was read, their lines queue behind it. */
    if (s->follow)
        for (size_t i = 0; i < s->nrefs; i++)
            follow_add(s, &s->refs[i], false);
    pump(s);
}
