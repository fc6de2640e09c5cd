/* store.c — the state store's dispatch through its ops table, and the
 * keepers for callers that continue only with the answer (see store.h). */
#include "store/store.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"

void store_close(struct store *s)
{
    if (s)
        s->ops->close(s);
}

int store_service_save(struct store *s, const struct store_service *svc, store_cb cb, void *data)
{
    return s->ops->service_save(s, svc, cb, data);
}

int store_service_delete(struct store *s, const char *project, const char *env,
                         const char *service, store_cb cb, void *data)
{
    return s->ops->service_delete(s, project, env, service, cb, data);
}

int store_services_load(struct store *s, const char *project, store_cb cb, void *data)
{
    return s->ops->services_load(s, project, cb, data);
}

int store_revision_add(struct store *s, const char *project, const char *env,
                       const char *service, const char *revision, json_t *config,
                       const char *source, store_cb cb, void *data)
{
    return s->ops->revision_add(s, project, env, service, revision, config, source, cb, data);
}

int store_revision_get(struct store *s, const char *project, const char *env,
                       const char *service, const char *revision, store_cb cb, void *data)
{
    return s->ops->revision_get(s, project, env, service, revision, cb, data);
}

int store_history_begin(struct store *s, const char *project, const char *env,
                        const char *kind, const char *revision, const char *detail,
                        store_cb cb, void *data)
{
    return s->ops->history_begin(s, project, env, kind, revision, detail, cb, data);
}

int store_history_end(struct store *s, int64_t id, const char *status, const char *message,
                      store_cb cb, void *data)
{
    return s->ops->history_end(s, id, status, message, cb, data);
}

int store_history_list(struct store *s, const char *project, const char *env, int limit,
                       store_cb cb, void *data)
{
    return s->ops->history_list(s, project, env, limit, cb, data);
}

int store_event(struct store *s, const char *project, const char *service, const char *kind,
                const char *message, json_t *evdata, store_cb cb, void *data)
{
    return s->ops->event(s, project, service, kind, message, evdata, cb, data);
}

int store_events_list(struct store *s, const char *project, const char *service,
                      const char *kind, int limit, store_cb cb, void *data)
{
    return s->ops->events_list(s, project, service, kind, limit, cb, data);
}

int store_kv_set(struct store *s, const char *key, const char *value, store_cb cb, void *data)
{
    return s->ops->kv_set ? s->ops->kv_set(s, key, value, cb, data) : -ENOSYS;
}

int store_kv_list(struct store *s, const char *prefix, store_cb cb, void *data)
{
    return s->ops->kv_list ? s->ops->kv_list(s, prefix, cb, data) : -ENOSYS;
}

int store_events_count(struct store *s, const char *kind, store_cb cb, void *data)
{
    return s->ops->events_count ? s->ops->events_count(s, kind, cb, data) : -ENOSYS;
}

int store_lock(struct store *s, const char *key, const char *owner, const char *info,
               uint64_t ttl_ms, store_cb cb, void *data)
{
    return s->ops->lock(s, key, owner, info, ttl_ms, cb, data);
}

int store_unlock(struct store *s, const char *key, const char *owner, store_cb cb, void *data)
{
    return s->ops->unlock(s, key, owner, cb, data);
}

/* ---- keepers ---- */

void store_keep_json(void *data, int rc, void *result)
{
    struct store_result *r = data;
    r->done = true;
    r->rc = rc;
    r->json = result ? json_incref(result) : NULL;
}

void store_keep_id(void *data, int rc, void *result)
{
    struct store_result *r = data;
    r->done = true;
    r->rc = rc;
    r->id = result ? *(const int64_t *)result : 0;
}

void store_keep_lease(void *data, int rc, void *result)
{
    struct store_result *r = data;
    r->done = true;
    r->rc = rc;
    if (result)
        r->lease = *(const struct store_lease *)result;
}

void store_keep_services(void *data, int rc, void *result)
{
    struct store_result *r = data;
    const struct store_services *v = result;
    r->done = true;
    r->rc = rc;
    if (!v || v->n == 0)
        return;
    r->services.v = xcalloc(v->n, sizeof(*v->v));
    r->services.n = v->n;
    for (size_t i = 0; i < v->n; i++) {
        r->services.v[i] = v->v[i];
        json_incref(r->services.v[i].config);
        json_incref(r->services.v[i].placement);
    }
}

void store_result_clear(struct store_result *r)
{
    json_decref(r->json);
    for (size_t i = 0; i < r->services.n; i++) {
        json_decref(r->services.v[i].config);
        json_decref(r->services.v[i].placement);
    }
    free(r->services.v);
    memset(r, 0, sizeof(*r));
}
