/* orch_op.c — operations: deploy, scale, restart/stop/start/down and
 * rollback only change services' targets and then watch for convergence;
 * each holds its project's lease in the state store and a history row. */
#include "orch/orch.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "core/assert.h"
#include "core/ev.h"
#include "core/log.h"
#include "core/net.h"
#include "core/sha256.h"
#include "core/util.h"
#include "orch/autoscale.h"
#include "orch/orch_internal.h"
#include "proxy/proxy.h"
#include "proxy/proxy_admin.h"
#include "runtime/rt.h"
#include "store/store.h"

static void lease_key(const char *project, char *buf, size_t len)
{
    snprintf(buf, len, "project/%s", project);
}

/* The history row of an operation: begun when the operation starts, ended
 * when it finishes; a store that answers later may end it after the
 * operation is gone from the list, so the row's end waits for its id. */
static void hist_end(struct orch *o, struct orch_op *op)
{
    store_history_end(o->store, op->hist_id, op->hist_status, op->hist_msg, NULL, NULL);
    free(op);
}

static void on_hist_begun(void *data, int rc, void *result)
{
    struct orch_op *op = data;
    op->hist_pending = false;
    op->hist_id = rc == 0 && result ? *(const int64_t *)result : 0;
    if (op->finished)
        hist_end(op->o, op);
}

void orch__op_finish(struct orch *o, struct orch_op *op)
{
    BUG_ON(op->finished);
    for (struct orch_op **pp = &o->ops; *pp; pp = &(*pp)->next)
        if (*pp == op) {
            *pp = op->next;
            break;
        }
    bool ok = !op->failed;
    char msg[1200];
    for (struct orch_service *s = o->services; s; s = s->next)
        if (strcmp(s->project, op->project) == 0)
            s->in_op = false;
    if (ok)
        snprintf(msg, sizeof(msg), "%s", op->ok_msg[0] ? op->ok_msg : "done");
    else if (op->rolling_back)
        snprintf(msg, sizeof(msg), "%s; rolled back to the previous revision", op->fail_msg);
    else
        snprintf(msg, sizeof(msg), "%s", op->fail_msg);
    char key[128];
    lease_key(op->project, key, sizeof(key));
    store_unlock(o->store, key, op->owner, NULL, NULL);
    if (op->cb)
        op->cb(op->data, NULL, ok ? "info" : "error", msg, true, ok);
    snprintf(op->hist_status, sizeof(op->hist_status), "%s",
             ok ? "ok" : (op->rolling_back ? "rolled-back" : "failed"));
    snprintf(op->hist_msg, sizeof(op->hist_msg), "%s", msg);
    op->finished = true;
    if (!op->hist_pending)
        hist_end(o, op);
}

/* A renewal refused: another writer holds the project now. */
static void on_lease_renewed(void *data, int rc, void *result)
{
    struct orch *o = data;
    const struct store_lease *held = result;
    if (rc != -EBUSY || !held || strncmp(held->key, "project/", 8) != 0)
        return;
    struct orch_op *op = NULL;
    for (struct orch_op *x = o->ops; x; x = x->next)
        if (strcmp(x->project, held->key + 8) == 0)
            op = x;
    if (op && !op->failed) {
        op->failed = true;
        snprintf(op->fail_msg, sizeof(op->fail_msg), "lost the lease on project %s to %s",
                 op->project, held->owner);
    }
}

/* Leases are renewed well before they expire. */
void orch__ops_renew(struct orch *o, uint64_t now)
{
    for (struct orch_op *op = o->ops; op; op = op->next) {
        if (now - op->renewed_ms < ORCH_LEASE_MS / 3)
            continue;
        op->renewed_ms = now;
        char key[128];
        lease_key(op->project, key, sizeof(key));
        store_lock(o->store, key, op->owner, op->kind, ORCH_LEASE_MS, on_lease_renewed, o);
    }
}

static struct orch_op *op_begin(struct orch *o, const char *kind, const char *project,
                                const char *env, const char *revision, const char *detail,
                                orch_progress_cb cb, void *data, char *err, size_t errlen)
{
    /* One operation per project, for every writer of the store: a lease. */
    char key[128];
    lease_key(project, key, sizeof(key));
    /* Each operation owns its lease: a second one from this takod is refused too. */
    char owner[sizeof(((struct orch_op *)0)->owner)];
    snprintf(owner, sizeof(owner), "%s/op-%llu", o->owner, (unsigned long long)++o->op_seq);
    struct store_result lr = {0};
    int rc = store_lock(o->store, key, owner, kind, ORCH_LEASE_MS, store_keep_lease, &lr);
    if (rc == 0 && !lr.done) {
        /* The reconciler needs the answer before it changes targets. */
        snprintf(err, errlen, "the state store did not answer at once; try again");
        return NULL;
    }
    if (rc < 0 || lr.rc < 0) {
        if (rc == 0 && lr.rc == -EBUSY) {
            char d[32];
            uint64_t wall = time_wall_ms();
            fmt_duration(wall > lr.lease.acquired_ms ? wall - lr.lease.acquired_ms : 0, d,
                         sizeof(d));
            snprintf(err, errlen,
                     "a %s of project %s is in progress (started %s ago); wait for it to finish",
                     lr.lease.info, project, d);
        } else {
            snprintf(err, errlen, "cannot lock project %s in the state store: %s", project,
                     strerror(-(rc < 0 ? rc : lr.rc)));
        }
        return NULL;
    }
    struct orch_op *op = xcalloc(1, sizeof(*op));
    op->o = o;
    snprintf(op->project, sizeof(op->project), "%s", project);
    snprintf(op->env, sizeof(op->env), "%s", env ? env : "");
    snprintf(op->kind, sizeof(op->kind), "%s", kind);
    snprintf(op->owner, sizeof(op->owner), "%s", owner);
    op->cb = cb;
    op->data = data;
    op->started_ms = orch__now(o);
    op->renewed_ms = op->started_ms;
    op->hist_pending = true;
    if (store_history_begin(o->store, project, env ? env : "", kind, revision, detail,
                            on_hist_begun, op) < 0)
        op->hist_pending = false;
    op->next = o->ops;
    o->ops = op;
    return op;
}

void orch_detach(struct orch *o, void *data)
{
    for (struct orch_op *op = o->ops; op; op = op->next)
        if (op->data == data) {
            op->cb = NULL;
            op->data = NULL;
        }
}

struct orch_service *orch__svc_new(struct orch *o, const char *project, const char *env,
                                    const char *name)
{
    struct orch_service *s = xcalloc(1, sizeof(*s));
    s->o = o;
    snprintf(s->project, sizeof(s->project), "%s", project);
    snprintf(s->env, sizeof(s->env), "%s", env);
    snprintf(s->name, sizeof(s->name), "%s", name);
    s->scale_override = -1;
    /* Append: `ps` lists services in the order they were deployed. */
    struct orch_service **pp = &o->services;
    while (*pp)
        pp = &(*pp)->next;
    *pp = s;
    return s;
}

/* Set a service's target configuration (takes ownership of cfg and j). */
void orch__set_target(struct orch_service *s, struct cfg_service *cfg, json_t *j,
                           const char *revision)
{
    if (s->cfg) {
        if (s->prev_cfg)
            cfg_service_free(s->prev_cfg);
        json_decref(s->prev_json);
        s->prev_cfg = s->cfg;
        s->prev_json = s->cfg_json;
        s->prev_replicas = s->cfg_replicas;
        snprintf(s->prev_revision, sizeof(s->prev_revision), "%s", s->revision);
    }
    s->cfg = cfg;
    s->cfg_json = j;
    s->cfg_replicas = cfg->replicas;
    snprintf(s->revision, sizeof(s->revision), "%s", revision);
}

/* Parse and check every item before anything changes: cfgs[i] for each,
 * or -errno with the message. */
static int deploy_validate(struct orch *o, const struct orch_deploy_req *req,
                           struct cfg_service **cfgs, json_t **pls, char *err, size_t errlen)
{
    for (size_t i = 0; i < req->n_items; i++) {
        if (orch__placement_of(req->peers, &req->items[i], &pls[i], err, errlen) < 0)
            return -EINVAL;
    }
    for (size_t i = 0; i < req->n_items; i++) {
        char e[256];
        cfgs[i] = cfg_service_from_json(req->items[i].config, e, sizeof(e));
        if (!cfgs[i]) {
            snprintf(err, errlen, "service %s: invalid configuration: %s", req->items[i].name, e);
            return -EINVAL;
        }
        struct orch_service *other = orch__svc_find(o, req->project, req->items[i].name);
        if (other && strcmp(other->env, req->env) != 0 && !other->removing) {
            snprintf(err, errlen,
                     "project %s already runs service %s of environment %s on this machine; "
                     "run 'tako down %s' first",
                     req->project, req->items[i].name, other->env, other->env);
            return -EEXIST;
        }
    }
    return 0;
}

static bool listed_in(const struct orch_deploy_req *req, const char *name)
{
    for (size_t i = 0; i < req->n_items; i++)
        if (strcmp(req->items[i].name, name) == 0)
            return true;
    return false;
}

/* Would the deploy change anything that runs? */
static bool deploy_changes(struct orch *o, const struct orch_deploy_req *req,
                           struct cfg_service **cfgs, json_t **pls)
{
    if (req->force)
        return true;
    for (size_t i = 0; i < req->n_items; i++) {
        if (req->only_service && strcmp(req->only_service, req->items[i].name) != 0)
            continue;
        struct orch_service *s = orch__svc_find(o, req->project, req->items[i].name);
        if (!s || strcmp(s->revision, req->items[i].revision) != 0 || s->stopped ||
            s->removing || s->http_port != req->http_port || !orch__converged(s) ||
            s->cfg_replicas != cfgs[i]->replicas ||
            !(pls[i] ? s->placement && json_equal(pls[i], s->placement) : !s->placement))
            return true;
    }
    if (req->prune && !req->only_service)
        for (struct orch_service *s = o->services; s; s = s->next)
            if (strcmp(s->project, req->project) == 0 && !listed_in(req, s->name))
                return true;
    return false;
}

/* "nothing changed", and still where the running state differs from the file. */
static void deploy_unchanged_msg(struct orch *o, const struct orch_deploy_req *req,
                                 struct cfg_service **cfgs, char *err, size_t errlen)
{
    size_t el = (size_t)snprintf(err, errlen,
                                 "nothing changed: every service runs its current revision");
    for (size_t i = 0; i < req->n_items && el < errlen; i++) {
        struct orch_service *s = orch__svc_find(o, req->project, req->items[i].name);
        if (s && s->scale_override >= 0 && (unsigned)s->scale_override != cfgs[i]->replicas)
            el += (size_t)snprintf(err + el, errlen - el,
                                   "\nwarning: %s is scaled to %d by 'tako scale' but "
                                   "tako.yaml says %u; keeping %d",
                                   s->name, s->scale_override, cfgs[i]->replicas,
                                   s->scale_override);
    }
}

/* A `tako scale` override against tako.yaml's count: a changed count in
 * the file wins; an unchanged one keeps the override, with a warning. */
static void deploy_override(struct orch_service *s, bool fresh, unsigned yaml_replicas)
{
    if (s->scale_override < 0)
        return;
    if (!fresh && s->cfg_replicas != yaml_replicas) {
        orch__report(s, "info", NULL,
                     "tako.yaml now asks for %u replicas: dropping the scale override of %d",
                     yaml_replicas, s->scale_override);
        s->scale_override = -1;
    } else if ((unsigned)s->scale_override != yaml_replicas) {
        orch__report(s, "warn", NULL,
                     "warning: %s is scaled to %d by 'tako scale' but tako.yaml says %u; "
                     "keeping %d (change replicas in tako.yaml or run 'tako scale %s=%u')",
                     s->name, s->scale_override, yaml_replicas, s->scale_override, s->name,
                     yaml_replicas);
    }
}

/* Set one service's new target (takes *cfg when the revision changes). */
static void deploy_item(struct orch *o, const struct orch_deploy_req *req,
                        const struct orch_deploy_item *it, struct cfg_service **cfg, json_t **pl)
{
    struct orch_service *s = orch__svc_find(o, req->project, it->name);
    bool fresh = !s;
    if (!s)
        s = orch__svc_new(o, req->project, req->env, it->name);
    s->removing = false;
    deploy_override(s, fresh, (*cfg)->replicas);
    if (fresh || strcmp(s->revision, it->revision) != 0 || req->force) {
        store_revision_add(o->store, req->project, req->env, it->name, it->revision, it->config,
                           it->source, NULL, NULL);
        orch__set_target(s, *cfg, json_incref(it->config), it->revision);
        *cfg = NULL;
        if (req->force && !fresh)
            s->gen++;
    } else {
        s->cfg_replicas = (*cfg)->replicas;
    }
    s->stopped = false;
    s->in_op = true;
    s->http_port = req->http_port;
    if (orch__placement_set(s, *pl))
        orch__reindex(s);
    *pl = NULL;
    orch__ensure_pool(s);
    orch__sync_pool(s);
    orch__persist(s);
    orch__report(s, "info", "deploy", "deploying revision %s: %u replica%s", s->revision,
                 orch__desired(s), orch__desired(s) == 1 ? "" : "s");
}

int orch_deploy(struct orch *o, const struct orch_deploy_req *req, orch_progress_cb cb,
                void *data, char *err, size_t errlen)
{
    /* Validate everything before changing anything. */
    struct cfg_service **cfgs = xcalloc(req->n_items + 1, sizeof(*cfgs));
    json_t **pls = xcalloc(req->n_items + 1, sizeof(*pls));
    int rc = deploy_validate(o, req, cfgs, pls, err, errlen);
    if (rc < 0)
        goto out;
    if (!deploy_changes(o, req, cfgs, pls)) {
        rc = 1; /* nothing to do */
        deploy_unchanged_msg(o, req, cfgs, err, errlen);
        goto out;
    }
    char detail[256] = "";
    size_t dl = 0;
    for (size_t i = 0; i < req->n_items; i++) {
        int w = snprintf(detail + dl, sizeof(detail) - dl, "%s%s@%s", i ? " " : "",
                         req->items[i].name, req->items[i].revision);
        if (w > 0 && (size_t)w < sizeof(detail) - dl)
            dl += (size_t)w;
    }
    const char *rev0 = req->n_items == 1 ? req->items[0].revision : "";
    struct orch_op *op = op_begin(o, "deploy", req->project, req->env, rev0, detail, cb, data, err,
                                  errlen);
    if (!op) {
        rc = -EBUSY;
        goto out;
    }
    for (size_t i = 0; i < req->n_items; i++)
        if (!req->only_service || strcmp(req->only_service, req->items[i].name) == 0)
            deploy_item(o, req, &req->items[i], &cfgs[i], &pls[i]);
    if (req->prune && !req->only_service) {
        for (struct orch_service *s = o->services; s; s = s->next) {
            if (strcmp(s->project, req->project) != 0 || listed_in(req, s->name) || s->removing)
                continue;
            orch__report(s, "info", NULL, "%s is no longer in tako.yaml: removing it", s->name);
            s->removing = true;
            s->in_op = true;
        }
    }
    char lerr[256];
    if (orch__sync_listeners(o, lerr, sizeof(lerr)) < 0) {
        op->failed = true;
        snprintf(op->fail_msg, sizeof(op->fail_msg), "%s", lerr);
    }
    snprintf(op->ok_msg, sizeof(op->ok_msg), "deployed");
out:
    for (size_t i = 0; i < req->n_items; i++) {
        if (cfgs[i])
            cfg_service_free(cfgs[i]);
        json_decref(pls[i]);
    }
    free(cfgs);
    free(pls);
    return rc;
}

/* The services a scale's peer_replicas / slots name exist, and their new
 * placements (pls: one per service of the project, NULL where unchanged). */
static int scale_placements(struct orch *o, const char *project, const char *env,
                            json_t *peer_replicas, json_t *slots, json_t *pls, char *err,
                            size_t errlen)
{
    json_t *maps[2] = {peer_replicas, slots};
    const char *what[2] = {"peer_replicas", "slots"};
    for (int m = 0; m < 2; m++) {
        if (!maps[m])
            continue;
        if (!json_is_object(maps[m])) {
            snprintf(err, errlen, "%s: must be an object {service: ...}", what[m]);
            return -EINVAL;
        }
        const char *name;
        json_t *v;
        json_object_foreach(maps[m], name, v) {
            struct orch_service *s = orch__svc_find(o, project, name);
            if (!s || s->removing || (env && *env && strcmp(s->env, env) != 0)) {
                snprintf(err, errlen, "%s: project %s has no deployed service %s", what[m],
                         project, name);
                return -ENOENT;
            }
            if (json_object_get(pls, name))
                continue;
            json_t *pl;
            if (orch__placement_scaled(s, json_object_get(peer_replicas, name),
                                       json_object_get(slots, name), &pl, err, errlen) < 0)
                return -EINVAL;
            json_object_set_new(pls, name, pl);
        }
    }
    return 0;
}

int orch_scale(struct orch *o, const char *project, const char *env, json_t *counts,
               json_t *peer_replicas, json_t *slots, orch_progress_cb cb, void *data, char *err,
               size_t errlen)
{
    const char *name;
    json_t *v;
    bool placed = peer_replicas || slots;
    if (counts ? !json_is_object(counts) : !placed) {
        snprintf(err, errlen, "nothing to scale: give SERVICE=COUNT");
        return -EINVAL;
    }
    if (json_object_size(counts) == 0 && !placed) {
        snprintf(err, errlen, "nothing to scale: give SERVICE=COUNT");
        return -EINVAL;
    }
    json_t *pls = json_object();
    int prc = scale_placements(o, project, env, peer_replicas, slots, pls, err, errlen);
    if (prc < 0) {
        json_decref(pls);
        return prc;
    }
    json_object_foreach(counts, name, v) {
        struct orch_service *s = orch__svc_find(o, project, name);
        if (!s || s->removing || (env && *env && strcmp(s->env, env) != 0)) {
            snprintf(err, errlen, "project %s has no deployed service %s", project, name);
            json_decref(pls);
            return -ENOENT;
        }
        if (!json_is_integer(v) || json_integer_value(v) < 0 ||
            json_integer_value(v) > CFG_MAX_REPLICAS) {
            snprintf(err, errlen,
                     "%s: replicas must be an integer from 0 to %d (the limit per service)", name,
                     CFG_MAX_REPLICAS);
            json_decref(pls);
            return -EINVAL;
        }
        if (s->cfg->autoscale.enabled) {
            snprintf(err, errlen,
                     "%s is autoscaled (min %u, max %u): change replicas.min/max in tako.yaml "
                     "instead",
                     name, s->cfg->autoscale.min, s->cfg->autoscale.max);
            json_decref(pls);
            return -EINVAL;
        }
    }
    struct orch_op *op = op_begin(o, "scale", project, env, "", "", cb, data, err, errlen);
    if (!op) {
        json_decref(pls);
        return -EBUSY;
    }
    json_object_foreach(pls, name, v) {
        struct orch_service *s = orch__svc_find(o, project, name);
        if (orch__placement_set(s, json_incref(v)))
            orch__reindex(s);
        s->in_op = true;
        orch__sync_pool(s);
        orch__persist(s);
    }
    json_decref(pls);
    json_object_foreach(counts, name, v) {
        struct orch_service *s = orch__svc_find(o, project, name);
        int want = (int)json_integer_value(v);
        unsigned before = orch__desired(s);
        s->scale_override = want == (int)s->cfg_replicas ? -1 : want;
        s->in_op = true;
        orch__persist(s);
        orch__report(s, "info", "scale", "scaling %s from %u to %d replica%s", s->name, before, want,
               want == 1 ? "" : "s");
    }
    snprintf(op->ok_msg, sizeof(op->ok_msg), "scaled");
    return 0;
}

int orch_action(struct orch *o, const char *kind, const char *project, const char *env,
                const char *service, orch_progress_cb cb, void *data, char *err,
                size_t errlen)
{
    bool any = false;
    for (struct orch_service *s = o->services; s; s = s->next)
        if (strcmp(s->project, project) == 0 && (!env || !*env || strcmp(s->env, env) == 0) &&
            (!service || strcmp(s->name, service) == 0) && !s->removing)
            any = true;
    if (!any) {
        if (service)
            snprintf(err, errlen, "project %s has no deployed service %s", project, service);
        else
            snprintf(err, errlen, "project %s has nothing deployed", project);
        return -ENOENT;
    }
    struct orch_op *op = op_begin(o, kind, project, env, "", service ? service : "", cb, data,
                                  err, errlen);
    if (!op)
        return -EBUSY;
    for (struct orch_service *s = o->services; s; s = s->next) {
        if (strcmp(s->project, project) != 0 || (env && *env && strcmp(s->env, env) != 0) ||
            (service && strcmp(s->name, service) != 0) || s->removing)
            continue;
        if (strcmp(kind, "restart") == 0) {
            s->gen++;
            s->stopped = false;
            orch__report(s, "info", kind, "restarting %s, one replica at a time", s->name);
        } else if (strcmp(kind, "stop") == 0) {
            s->stopped = true;
            orch__report(s, "info", kind, "stopping %s", s->name);
        } else if (strcmp(kind, "start") == 0) {
            s->stopped = false;
            orch__report(s, "info", kind, "starting %s", s->name);
        } else if (strcmp(kind, "down") == 0) {
            s->removing = true;
            orch__report(s, "info", kind, "removing %s", s->name);
        }
        s->in_op = true;
        orch__persist(s);
    }
    snprintf(op->ok_msg, sizeof(op->ok_msg), "%s", strcmp(kind, "down") == 0 ? "removed" : "done");
    return 0;
}

/* The revision s goes back to: the one asked for, the previous target,
 * or (after a takod restart, when that is not in memory) the last
 * successful deploy of another revision in the history. Returns 1 with
 * rev set, 0 when there is none, -EAGAIN when the store has not answered. */
static int rollback_revision(struct orch *o, struct orch_service *s, const char *revision,
                             char rev[64])
{
    rev[0] = '\0';
    const char *want = revision && *revision ? revision : s->prev_revision;
    if (want[0]) {
        snprintf(rev, 64, "%s", want);
        return 1;
    }
    struct store_result hr = {0};
    store_history_list(o->store, s->project, s->env, 50, store_keep_json, &hr);
    if (!hr.done)
        return -EAGAIN;
    char key[80];
    snprintf(key, sizeof(key), "%s@", s->name);
    size_t i;
    json_t *row;
    json_array_foreach(hr.json, i, row) {
        const char *d = json_string_value(json_object_get(row, "detail"));
        const char *st = json_string_value(json_object_get(row, "status"));
        const char *p = d ? strstr(d, key) : NULL;
        if (!p || !st || strcmp(st, "ok") != 0)
            continue;
        char rv[64];
        snprintf(rv, sizeof(rv), "%.*s", (int)strcspn(p + strlen(key), " "), p + strlen(key));
        if (strcmp(rv, s->revision) != 0) {
            snprintf(rev, 64, "%s", rv);
            break;
        }
    }
    store_result_clear(&hr);
    return rev[0] ? 1 : 0;
}

int orch_rollback(struct orch *o, const char *project, const char *env, const char *service,
                  const char *revision, orch_progress_cb cb, void *data, char *err,
                  size_t errlen)
{
    /* Pick the services and the revisions to go back to first. */
    struct { struct orch_service *s; json_t *j; char rev[64]; } plan[64];
    memset(plan, 0, sizeof(plan));
    size_t np = 0;
    for (struct orch_service *s = o->services; s && np < ARRAY_LEN(plan); s = s->next) {
        if (strcmp(s->project, project) != 0 || (env && *env && strcmp(s->env, env) != 0) ||
            (service && strcmp(s->name, service) != 0) || s->removing)
            continue;
        int found = rollback_revision(o, s, revision, plan[np].rev);
        if (found < 0)
            goto store_late;
        if (found == 0 || strcmp(plan[np].rev, s->revision) == 0)
            continue;
        struct store_result vr = {0};
        store_revision_get(o->store, project, s->env, s->name, plan[np].rev, store_keep_json,
                           &vr);
        if (!vr.done)
            goto store_late;
        plan[np].j = vr.json;
        if (!plan[np].j) {
            if (revision && *revision) {
                snprintf(err, errlen, "service %s has no revision %s (see 'tako history')",
                         s->name, revision);
                for (size_t k = 0; k < np; k++)
                    json_decref(plan[k].j);
                return -ENOENT;
            }
            continue;
        }
        plan[np].s = s;
        np++;
    }
    if (np == 0) {
        snprintf(err, errlen, "no previous revision to roll back to (see 'tako history')");
        return -ENOENT;
    }
    struct orch_op *op = op_begin(o, "rollback", project, env, plan[0].rev, "", cb, data, err, errlen);
    if (!op) {
        for (size_t k = 0; k < np; k++)
            json_decref(plan[k].j);
        return -EBUSY;
    }
    for (size_t k = 0; k < np; k++) {
        char e[256];
        struct cfg_service *c = cfg_service_from_json(plan[k].j, e, sizeof(e));
        if (!c) {
            json_decref(plan[k].j);
            continue;
        }
        struct orch_service *s = plan[k].s;
        orch__report(s, "info", "rollback", "rolling back %s from %s to %s", s->name, s->revision,
               plan[k].rev);
        orch__set_target(s, c, plan[k].j, plan[k].rev);
        s->stopped = false;
        s->in_op = true;
        orch__ensure_pool(s);
        orch__persist(s);
    }
    char lerr[256];
    orch__sync_listeners(o, lerr, sizeof(lerr));
    snprintf(op->ok_msg, sizeof(op->ok_msg), "rolled back");
    return 0;
store_late:
    /* The plan needs the history and the revisions before anything changes. */
    for (size_t k = 0; k < np; k++)
        json_decref(plan[k].j);
    snprintf(err, errlen, "the state store did not answer at once; try again");
    return -EAGAIN;
}
