/* store_sqlite.h — the SQLite state store: one database file, every write
 * one transaction, every call completed before it returns. */
#ifndef TAKO_STORE_STORE_SQLITE_H
#define TAKO_STORE_STORE_SQLITE_H

#include <stddef.h>

struct store;

/* Open (creating) the database at path and apply the schema. One takod
 * owns a database at a time (takod.lock), so leases left by a previous
 * takod are dropped here. Returns NULL with a message in err on failure. */
struct store *store_sqlite_open(const char *path, char *err, size_t errlen);

#endif
