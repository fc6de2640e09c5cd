/* store_sqlite.c — the state store in SQLite (store.h's first
 * implementation): every call runs its statement at once and completes
 * before it returns. */
#include "store/store_sqlite.h"

#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/util.h"
#include "store/store.h"

struct sq_store {
    struct store base;
    sqlite3 *db;
};

#define SQ(s) ((struct sq_store *)(s))

static const struct store_ops sq_ops;

/* Complete a call: SQLite has the answer now. */
static int done(store_cb cb, void *data, int rc, void *result)
{
    if (cb)
        cb(data, rc, result);
    return 0;
}

static const char schema[] =
    "PRAGMA journal_mode=WAL;"
    "PRAGMA synchronous=NORMAL;"
    "CREATE TABLE IF NOT EXISTS services ("
    "  project TEXT NOT NULL, env TEXT NOT NULL, service TEXT NOT NULL,"
    "  revision TEXT NOT NULL, config TEXT NOT NULL, replicas INTEGER NOT NULL,"
    "  scale_override INTEGER NOT NULL DEFAULT -1, stopped INTEGER NOT NULL DEFAULT 0,"
    "  http_port INTEGER NOT NULL DEFAULT 0,"
    "  updated_ms INTEGER NOT NULL, placement TEXT,"
    "  PRIMARY KEY (project, env, service));"
    "CREATE TABLE IF NOT EXISTS revisions ("
    "  project TEXT NOT NULL, env TEXT NOT NULL, service TEXT NOT NULL,"
    "  revision TEXT NOT NULL, config TEXT NOT NULL, source TEXT, created_ms INTEGER NOT NULL,"
    "  PRIMARY KEY (project, env, service, revision));"
    "CREATE TABLE IF NOT EXISTS history ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT, project TEXT NOT NULL, env TEXT NOT NULL,"
    "  kind TEXT NOT NULL, revision TEXT, detail TEXT, status TEXT NOT NULL DEFAULT 'running',"
    "  message TEXT, started_ms INTEGER NOT NULL, finished_ms INTEGER);"
    "CREATE TABLE IF NOT EXISTS events ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT, ts_ms INTEGER NOT NULL, project TEXT,"
    "  service TEXT, kind TEXT NOT NULL, message TEXT NOT NULL, data TEXT);"
    "CREATE INDEX IF NOT EXISTS events_by_service ON events(project, service, id);"
    "CREATE TABLE IF NOT EXISTS leases ("
    "  key TEXT PRIMARY KEY, owner TEXT NOT NULL, info TEXT NOT NULL,"
    "  acquired_ms INTEGER NOT NULL, expires_ms INTEGER NOT NULL);"
    /* One takod per database (takod.lock): a previous one's leases are void. */
    "DELETE FROM leases;"
    "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);";

struct store *store_sqlite_open(const char *path, char *err, size_t errlen)
{
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                        NULL) != SQLITE_OK) {
        snprintf(err, errlen, "cannot open %s: %s", path, db ? sqlite3_errmsg(db) : "out of memory");
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db, 5000);
    char *msg = NULL;
    if (sqlite3_exec(db, schema, NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, errlen, "cannot initialise %s: %s", path, msg ? msg : "?");
        sqlite3_free(msg);
        sqlite3_close(db);
        return NULL;
    }
    /* A database of an older tako has no placement column yet (several
     * servers per environment); adding it twice fails harmlessly. */
    sqlite3_exec(db, "ALTER TABLE services ADD COLUMN placement TEXT", NULL, NULL, NULL);
    struct sq_store *s = xcalloc(1, sizeof(*s));
    s->base.ops = &sq_ops;
    s->db = db;
    return &s->base;
}

static void sq_close(struct store *s)
{
    sqlite3_close(SQ(s)->db);
    free(SQ(s));
}

static sqlite3_stmt *prep(struct store *st_, const char *sql)
{
    struct sq_store *s = SQ(st_);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK) {
        log_error("store: %s: %s", sqlite3_errmsg(s->db), sql);
        return NULL;
    }
    return st;
}

/* Run a prepared write to completion and finalize it. */
static int step_done(struct store *st_, sqlite3_stmt *st)
{
    struct sq_store *s = SQ(st_);
    int r = sqlite3_step(st);
    sqlite3_finalize(st);
    if (r != SQLITE_DONE) {
        log_error("store: write failed: %s", sqlite3_errmsg(s->db));
        return -EIO;
    }
    return 0;
}

/* A write completed: the callback hears of success only (a failed write
 * fails the call itself). */
static int write_done(struct store *s, sqlite3_stmt *st, store_cb cb, void *data)
{
    int rc = step_done(s, st);
    return rc < 0 ? rc : done(cb, data, 0, NULL);
}

static void bind_json(sqlite3_stmt *st, int i, json_t *j)
{
    if (!j) {
        sqlite3_bind_null(st, i);
        return;
    }
    char *txt = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    sqlite3_bind_text(st, i, txt ? txt : "null", -1, SQLITE_TRANSIENT);
    free(txt);
}

static json_t *col_json(sqlite3_stmt *st, int i)
{
    const char *t = (const char *)sqlite3_column_text(st, i);
    if (!t)
        return json_null();
    json_t *j = json_loads(t, JSON_DECODE_ANY, NULL);
    return j ? j : json_string(t);
}

static void col_copy(sqlite3_stmt *st, int i, char *dst, size_t len)
{
    const char *t = (const char *)sqlite3_column_text(st, i);
    snprintf(dst, len, "%s", t ? t : "");
}

static int sq_service_save(struct store *s, const struct store_service *svc, store_cb cb,
                           void *data)
{
    sqlite3_stmt *st = prep(s, "INSERT OR REPLACE INTO services (project, env, service, revision,"
                               " config, replicas, scale_override, stopped, updated_ms, http_port,"
                               " placement) VALUES (?,?,?,?,?,?,?,?,?,?,?)");
    if (!st)
        return -EIO;
    sqlite3_bind_text(st, 1, svc->project, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, svc->env, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, svc->service, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, svc->revision, -1, SQLITE_STATIC);
    bind_json(st, 5, svc->config);
    sqlite3_bind_int(st, 6, svc->replicas);
    sqlite3_bind_int(st, 7, svc->scale_override);
    sqlite3_bind_int(st, 8, svc->stopped ? 1 : 0);
    sqlite3_bind_int64(st, 9, (sqlite3_int64)time_wall_ms());
    sqlite3_bind_int(st, 10, (int)svc->http_port);
    bind_json(st, 11, svc->placement);
    return write_done(s, st, cb, data);
}

static int sq_service_delete(struct store *s, const char *project, const char *env,
                             const char *service, store_cb cb, void *data)
{
    sqlite3_stmt *st =
        prep(s, "DELETE FROM services WHERE project = ? AND env = ? AND service = ?");
    if (!st)
        return -EIO;
    sqlite3_bind_text(st, 1, project, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, env, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, service, -1, SQLITE_STATIC);
    return write_done(s, st, cb, data);
}

static int sq_services_load(struct store *s, const char *project, store_cb cb, void *data)
{
    sqlite3_stmt *st = prep(s, "SELECT project, env, service, revision, config, replicas,"
                                " scale_override, stopped, updated_ms, http_port, placement FROM services"
                               " WHERE ?1 IS NULL OR project = ?1 ORDER BY project, env, service");
    if (!st)
        return -EIO;
    if (project)
        sqlite3_bind_text(st, 1, project, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 1);
    struct store_service *v = NULL;
    size_t len = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        v = xrealloc(v, (len + 1) * sizeof(*v));
        struct store_service *e = &v[len++];
        memset(e, 0, sizeof(*e));
        col_copy(st, 0, e->project, sizeof(e->project));
        col_copy(st, 1, e->env, sizeof(e->env));
        col_copy(st, 2, e->service, sizeof(e->service));
        col_copy(st, 3, e->revision, sizeof(e->revision));
        e->config = col_json(st, 4);
        e->replicas = sqlite3_column_int(st, 5);
        e->scale_override = sqlite3_column_int(st, 6);
        e->stopped = sqlite3_column_int(st, 7) != 0;
        e->updated_ms = (uint64_t)sqlite3_column_int64(st, 8);
        e->http_port = (unsigned)sqlite3_column_int(st, 9);
        e->placement = sqlite3_column_type(st, 10) == SQLITE_NULL ? NULL : col_json(st, 10);
    }
    sqlite3_finalize(st);
    struct store_services res = {v, len};
    done(cb, data, 0, &res);
    for (size_t i = 0; i < len; i++) {
        json_decref(v[i].config);
        json_decref(v[i].placement);
    }
    free(v);
    return 0;
}

static int sq_revision_add(struct store *s, const char *project, const char *env,
                           const char *service, const char *revision, json_t *config,
                           const char *source, store_cb cb, void *data)
{
    sqlite3_stmt *st = prep(s, "INSERT OR IGNORE INTO revisions (project, env, service, revision,"
                               " config, source, created_ms) VALUES (?,?,?,?,?,?,?)");
    if (!st)
        return -EIO;
    sqlite3_bind_text(st, 1, project, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, env, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, service, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, revision, -1, SQLITE_STATIC);
    bind_json(st, 5, config);
    sqlite3_bind_text(st, 6, source ? source : "", -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 7, (sqlite3_int64)time_wall_ms());
    return write_done(s, st, cb, data);
}

static int sq_revision_get(struct store *s, const char *project, const char *env,
                           const char *service, const char *revision, store_cb cb, void *data)
{
    sqlite3_stmt *st = prep(s, "SELECT config FROM revisions WHERE project = ? AND env = ?"
                               " AND service = ? AND revision = ?");
    if (!st)
        return -EIO;
    sqlite3_bind_text(st, 1, project, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, env, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, service, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, revision, -1, SQLITE_STATIC);
    json_t *j = NULL;
    if (sqlite3_step(st) == SQLITE_ROW)
        j = col_json(st, 0);
    sqlite3_finalize(st);
    done(cb, data, j ? 0 : -ENOENT, j);
    json_decref(j);
    return 0;
}

static int sq_history_begin(struct store *s, const char *project, const char *env,
                            const char *kind, const char *revision, const char *detail,
                            store_cb cb, void *data)
{
    sqlite3_stmt *st = prep(s, "INSERT INTO history (project, env, kind, revision, detail,"
                               " started_ms) VALUES (?,?,?,?,?,?)");
    if (!st)
        return -EIO;
    sqlite3_bind_text(st, 1, project, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, env, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, kind, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, revision ? revision : "", -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, detail ? detail : "", -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, (sqlite3_int64)time_wall_ms());
    if (step_done(s, st) < 0)
        return -EIO;
    int64_t id = (int64_t)sqlite3_last_insert_rowid(SQ(s)->db);
    return done(cb, data, 0, &id);
}

static int sq_history_end(struct store *s, int64_t id, const char *status, const char *message,
                          store_cb cb, void *data)
{
    sqlite3_stmt *st =
        prep(s, "UPDATE history SET status = ?, message = ?, finished_ms = ? WHERE id = ?");
    if (!st)
        return -EIO;
    sqlite3_bind_text(st, 1, status, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, message ? message : "", -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)time_wall_ms());
    sqlite3_bind_int64(st, 4, id);
    return write_done(s, st, cb, data);
}

static int sq_history_list(struct store *s, const char *project, const char *env, int limit,
                           store_cb cb, void *data)
{
    sqlite3_stmt *st = prep(s, "SELECT id, kind, revision, detail, status, message, started_ms,"
                               " finished_ms, env FROM history WHERE project = ?1"
                               " AND (?2 IS NULL OR env = ?2) ORDER BY id DESC LIMIT ?3");
    if (!st)
        return -EIO;
    json_t *arr = json_array();
    sqlite3_bind_text(st, 1, project, -1, SQLITE_STATIC);
    if (env)
        sqlite3_bind_text(st, 2, env, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 2);
    sqlite3_bind_int(st, 3, limit > 0 ? limit : 50);
    while (sqlite3_step(st) == SQLITE_ROW) {
        json_t *row = json_object();
        json_object_set_new(row, "id", json_integer(sqlite3_column_int64(st, 0)));
        json_object_set_new(row, "kind", json_string((const char *)sqlite3_column_text(st, 1)));
        json_object_set_new(row, "revision",
                            json_string((const char *)sqlite3_column_text(st, 2) ?: ""));
        json_object_set_new(row, "detail", json_string((const char *)sqlite3_column_text(st, 3) ?: ""));
        json_object_set_new(row, "status", json_string((const char *)sqlite3_column_text(st, 4)));
        json_object_set_new(row, "message",
                            json_string((const char *)sqlite3_column_text(st, 5) ?: ""));
        json_object_set_new(row, "started_ms", json_integer(sqlite3_column_int64(st, 6)));
        if (sqlite3_column_type(st, 7) != SQLITE_NULL)
            json_object_set_new(row, "finished_ms", json_integer(sqlite3_column_int64(st, 7)));
        json_object_set_new(row, "env", json_string((const char *)sqlite3_column_text(st, 8)));
        json_array_append_new(arr, row);
    }
    sqlite3_finalize(st);
    done(cb, data, 0, arr);
    json_decref(arr);
    return 0;
}

static int sq_event(struct store *s, const char *project, const char *service, const char *kind,
                    const char *message, json_t *evdata, store_cb cb, void *data)
{
    sqlite3_stmt *st = prep(s, "INSERT INTO events (ts_ms, project, service, kind, message, data)"
                               " VALUES (?,?,?,?,?,?)");
    if (!st)
        return -EIO;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)time_wall_ms());
    sqlite3_bind_text(st, 2, project ? project : "", -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, service ? service : "", -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, kind, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, message, -1, SQLITE_STATIC);
    bind_json(st, 6, evdata);
    return write_done(s, st, cb, data);
}

static int sq_events_list(struct store *s, const char *project, const char *service,
                          const char *kind, int limit, store_cb cb, void *data)
{
    sqlite3_stmt *st = prep(s, "SELECT id, ts_ms, project, service, kind, message, data FROM events"
                               " WHERE (?1 IS NULL OR project = ?1) AND (?2 IS NULL OR service = ?2)"
                               " AND (?3 IS NULL OR kind = ?3) ORDER BY id DESC LIMIT ?4");
    if (!st)
        return -EIO;
    json_t *arr = json_array();
    const char *args[] = {project, service, kind};
    for (int i = 0; i < 3; i++) {
        if (args[i])
            sqlite3_bind_text(st, i + 1, args[i], -1, SQLITE_STATIC);
        else
            sqlite3_bind_null(st, i + 1);
    }
    sqlite3_bind_int(st, 4, limit > 0 ? limit : 100);
    while (sqlite3_step(st) == SQLITE_ROW) {
        json_t *row = json_object();
        json_object_set_new(row, "id", json_integer(sqlite3_column_int64(st, 0)));
        json_object_set_new(row, "ts_ms", json_integer(sqlite3_column_int64(st, 1)));
        json_object_set_new(row, "project", json_string((const char *)sqlite3_column_text(st, 2) ?: ""));
        json_object_set_new(row, "service", json_string((const char *)sqlite3_column_text(st, 3) ?: ""));
        json_object_set_new(row, "kind", json_string((const char *)sqlite3_column_text(st, 4)));
        json_object_set_new(row, "message", json_string((const char *)sqlite3_column_text(st, 5)));
        if (sqlite3_column_type(st, 6) != SQLITE_NULL)
            json_object_set_new(row, "data", col_json(st, 6));
        json_array_append_new(arr, row);
    }
    sqlite3_finalize(st);
    done(cb, data, 0, arr);
    json_decref(arr);
    return 0;
}

static int sq_kv_set(struct store *s, const char *key, const char *value, store_cb cb,
                     void *data)
{
    sqlite3_stmt *st = value ? prep(s, "INSERT OR REPLACE INTO kv (key, value) VALUES (?,?)")
                             : prep(s, "DELETE FROM kv WHERE key = ?");
    if (!st)
        return -EIO;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    if (value)
        sqlite3_bind_text(st, 2, value, -1, SQLITE_STATIC);
    return write_done(s, st, cb, data);
}

static int sq_kv_list(struct store *s, const char *prefix, store_cb cb, void *data)
{
    sqlite3_stmt *st = prep(s, "SELECT key, value FROM kv WHERE substr(key, 1, length(?1)) = ?1"
                               " ORDER BY key");
    if (!st)
        return -EIO;
    sqlite3_bind_text(st, 1, prefix, -1, SQLITE_STATIC);
    json_t *obj = json_object();
    while (sqlite3_step(st) == SQLITE_ROW)
        json_object_set_new(obj, (const char *)sqlite3_column_text(st, 0),
                            json_string((const char *)sqlite3_column_text(st, 1) ?: ""));
    sqlite3_finalize(st);
    done(cb, data, 0, obj);
    json_decref(obj);
    return 0;
}

static int sq_events_count(struct store *s, const char *kind, store_cb cb, void *data)
{
    sqlite3_stmt *st = prep(s, "SELECT project, service, COUNT(*) FROM events WHERE kind = ?"
                               " GROUP BY project, service");
    if (!st)
        return -EIO;
    sqlite3_bind_text(st, 1, kind, -1, SQLITE_STATIC);
    json_t *obj = json_object();
    while (sqlite3_step(st) == SQLITE_ROW) {
        char k[256];
        snprintf(k, sizeof(k), "%s\t%s", (const char *)sqlite3_column_text(st, 0) ?: "",
                 (const char *)sqlite3_column_text(st, 1) ?: "");
        json_object_set_new(obj, k, json_integer(sqlite3_column_int64(st, 2)));
    }
    sqlite3_finalize(st);
    done(cb, data, 0, obj);
    json_decref(obj);
    return 0;
}

/* ---- leases ---- */

static int sq_lock(struct store *s, const char *key, const char *owner, const char *info,
                   uint64_t ttl_ms, store_cb cb, void *data)
{
    /* Read and write in one transaction: no second writer between them. */
    sqlite3 *db = SQ(s)->db;
    if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return -EIO;
    sqlite3_stmt *st = prep(s, "SELECT owner, info, acquired_ms, expires_ms FROM leases"
                               " WHERE key = ?");
    if (!st) {
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        return -EIO;
    }
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    uint64_t now = time_wall_ms(), acquired = now;
    struct store_lease held;
    memset(&held, 0, sizeof(held));
    bool busy = false;
    if (sqlite3_step(st) == SQLITE_ROW) {
        snprintf(held.key, sizeof(held.key), "%s", key);
        col_copy(st, 0, held.owner, sizeof(held.owner));
        col_copy(st, 1, held.info, sizeof(held.info));
        held.acquired_ms = (uint64_t)sqlite3_column_int64(st, 2);
        held.expires_ms = (uint64_t)sqlite3_column_int64(st, 3);
        if (strcmp(held.owner, owner) == 0)
            acquired = held.acquired_ms; /* a renewal */
        else if (held.expires_ms > now)
            busy = true;
    }
    sqlite3_finalize(st);
    if (busy) {
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        return done(cb, data, -EBUSY, &held);
    }
    st = prep(s, "INSERT OR REPLACE INTO leases (key, owner, info, acquired_ms, expires_ms)"
                 " VALUES (?,?,?,?,?)");
    if (!st) {
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        return -EIO;
    }
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, owner, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, info ? info : "", -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, (sqlite3_int64)acquired);
    sqlite3_bind_int64(st, 5, (sqlite3_int64)(now + ttl_ms));
    int rc = step_done(s, st);
    sqlite3_exec(db, rc < 0 ? "ROLLBACK" : "COMMIT", NULL, NULL, NULL);
    return rc < 0 ? rc : done(cb, data, 0, NULL);
}

static int sq_unlock(struct store *s, const char *key, const char *owner, store_cb cb, void *data)
{
    sqlite3_stmt *st = prep(s, "DELETE FROM leases WHERE key = ? AND owner = ?");
    if (!st)
        return -EIO;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, owner, -1, SQLITE_STATIC);
    return write_done(s, st, cb, data);
}

static const struct store_ops sq_ops = {
    .name = "sqlite",
    .close = sq_close,
    .service_save = sq_service_save,
    .service_delete = sq_service_delete,
    .services_load = sq_services_load,
    .revision_add = sq_revision_add,
    .revision_get = sq_revision_get,
    .history_begin = sq_history_begin,
    .history_end = sq_history_end,
    .history_list = sq_history_list,
    .event = sq_event,
    .events_list = sq_events_list,
    .lock = sq_lock,
    .unlock = sq_unlock,
    .kv_set = sq_kv_set,
    .kv_list = sq_kv_list,
    .events_count = sq_events_count,
};
