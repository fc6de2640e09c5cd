/* orch_peers.c — several servers per environment: the slot rule that names
 * local replicas, and a service's placement (slots, this server's peer
 * listener, the other servers and their replica counts) from deploy and
 * scale requests. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/net.h"
#include "core/util.h"
#include "orch/orch_internal.h"

unsigned orch__slot(const struct orch_service *s, unsigned j)
{
    unsigned first = s->slot_first ? s->slot_first : 1, stride = s->slot_stride ? s->slot_stride : 1;
    return first + (j - 1) * stride;
}

unsigned orch__local_index(const struct orch_service *s, unsigned slot)
{
    unsigned first = s->slot_first ? s->slot_first : 1, stride = s->slot_stride ? s->slot_stride : 1;
    if (slot < first || (slot - first) % stride != 0)
        return ORCH_FOREIGN_INDEX + slot;
    return (slot - first) / stride + 1;
}

/* A slot number of a request: absent → def; else an integer from 1 up. */
static int slot_num(const json_t *v, const char *what, unsigned def, unsigned *out, char *err,
                    size_t errlen)
{
    if (!v) {
        *out = def;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 1 ||
        json_integer_value(v) > 100 * CFG_MAX_REPLICAS) {
        snprintf(err, errlen, "%s: must be an integer from 1 to %d", what, 100 * CFG_MAX_REPLICAS);
        return -EINVAL;
    }
    *out = (unsigned)json_integer_value(v);
    return 0;
}

/* "ADDR:PORT" with a numeric address and a port (what the balancer connects to). */
static int peer_addr_ok(const char *a, bool port_needed)
{
    struct net_addr na;
    if (!a || net_parse_addr(a, NULL, &na) < 0)
        return -EINVAL;
    return port_needed && net_addr_port(&na) == 0 ? -EINVAL : 0;
}

/* Replica counts per peer: {"b": 2}, every name one of servers. */
static int peer_counts_ok(const json_t *pr, const json_t *servers, const char *what, char *err,
                          size_t errlen)
{
    if (!pr)
        return 0;
    if (!json_is_object(pr)) {
        snprintf(err, errlen, "%s: must be an object {server: replicas}", what);
        return -EINVAL;
    }
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)pr, k, v) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 ||
            json_integer_value(v) > CFG_MAX_REPLICAS) {
            snprintf(err, errlen, "%s.%s: must be an integer from 0 to %d", what, k,
                     CFG_MAX_REPLICAS);
            return -EINVAL;
        }
        bool known = false;
        size_t i;
        json_t *sv;
        json_array_foreach((json_t *)servers, i, sv) {
            const char *n = json_string_value(json_object_get(sv, "name"));
            if (n && strcmp(n, k) == 0)
                known = true;
        }
        if (!known) {
            snprintf(err, errlen, "%s.%s: no server %s in peers.servers", what, k, k);
            return -EINVAL;
        }
    }
    return 0;
}

int orch__placement_of(const json_t *peers, const struct orch_deploy_item *it, json_t **out,
                       char *err, size_t errlen)
{
    *out = NULL;
    if (!peers && !it->slot_first && !it->slot_stride && !it->peer_replicas)
        return 0; /* one server: exactly as before */
    char what[160];
    unsigned first, stride;
    snprintf(what, sizeof(what), "services.%s.slot_first", it->name);
    if (slot_num(it->slot_first, what, 1, &first, err, errlen) < 0)
        return -EINVAL;
    snprintf(what, sizeof(what), "services.%s.slot_stride", it->name);
    if (slot_num(it->slot_stride, what, 1, &stride, err, errlen) < 0)
        return -EINVAL;
    json_t *servers = json_object_get(peers, "servers");
    const char *listen = json_string_value(json_object_get(peers, "listen"));
    if (peers && !json_is_object(peers)) {
        snprintf(err, errlen, "peers: must be an object {listen, servers}");
        return -EINVAL;
    }
    if (peers && peer_addr_ok(listen, true) < 0) {
        snprintf(err, errlen, "peers.listen: a numeric ADDR:PORT is needed, got %s",
                 listen ? listen : "nothing");
        return -EINVAL;
    }
    if (servers && (!json_is_array(servers) || json_array_size(servers) > ORCH_MAX_PEERS)) {
        snprintf(err, errlen, "peers.servers: must be an array of at most %d servers",
                 ORCH_MAX_PEERS);
        return -EINVAL;
    }
    size_t i;
    json_t *sv;
    json_array_foreach(servers, i, sv) {
        const char *n = json_string_value(json_object_get(sv, "name"));
        const char *a = json_string_value(json_object_get(sv, "address"));
        if (!n || !*n || strlen(n) >= sizeof(((struct orch_peer *)0)->name)) {
            snprintf(err, errlen, "peers.servers[%zu].name: a server name is needed", i);
            return -EINVAL;
        }
        if (peer_addr_ok(a, true) < 0 || strlen(a) >= sizeof(((struct orch_peer *)0)->address)) {
            snprintf(err, errlen,
                     "peers.servers[%zu].address (server %s): a numeric ADDR:PORT is needed, got %s",
                     i, n, a ? a : "nothing");
            return -EINVAL;
        }
        for (size_t k = 0; k < i; k++)
            if (strcmp(n, json_string_value(json_object_get(json_array_get(servers, k), "name"))) ==
                0) {
                snprintf(err, errlen, "peers.servers[%zu].name: server %s is listed twice", i, n);
                return -EINVAL;
            }
    }
    snprintf(what, sizeof(what), "services.%s.peer_replicas", it->name);
    if (peer_counts_ok(it->peer_replicas, servers, what, err, errlen) < 0)
        return -EINVAL;
    json_t *pl = json_pack("{s:i, s:i, s:s, s:[]}", "first", (json_int_t)first, "stride",
                           (json_int_t)stride, "listen", listen ? listen : "", "peers");
    json_t *arr = json_object_get(pl, "peers");
    json_array_foreach(servers, i, sv) {
        const char *n = json_string_value(json_object_get(sv, "name"));
        json_t *c = json_object_get(it->peer_replicas, n);
        json_array_append_new(arr, json_pack("{s:s, s:s, s:i}", "name", n, "address",
                                             json_string_value(json_object_get(sv, "address")),
                                             "replicas", c ? json_integer_value(c) : 0));
    }
    *out = pl;
    return 0;
}

bool orch__placement_set(struct orch_service *s, json_t *pl)
{
    unsigned of = s->slot_first ? s->slot_first : 1, os = s->slot_stride ? s->slot_stride : 1;
    json_decref(s->placement);
    s->placement = pl;
    free(s->peers);
    s->peers = NULL;
    s->npeers = 0;
    s->peer_listen[0] = '\0';
    s->slot_first = s->slot_stride = 1;
    if (pl) {
        json_int_t f = json_integer_value(json_object_get(pl, "first"));
        json_int_t st = json_integer_value(json_object_get(pl, "stride"));
        s->slot_first = f >= 1 ? (unsigned)f : 1;
        s->slot_stride = st >= 1 ? (unsigned)st : 1;
        snprintf(s->peer_listen, sizeof(s->peer_listen), "%s",
                 json_string_value(json_object_get(pl, "listen")) ?: "");
        json_t *arr = json_object_get(pl, "peers");
        size_t n = json_array_size(arr);
        s->peers = xcalloc(n ? n : 1, sizeof(*s->peers));
        for (size_t i = 0; i < n && i < ORCH_MAX_PEERS; i++) {
            json_t *p = json_array_get(arr, i);
            struct orch_peer *op = &s->peers[s->npeers++];
            snprintf(op->name, sizeof(op->name), "%s",
                     json_string_value(json_object_get(p, "name")) ?: "?");
            snprintf(op->address, sizeof(op->address), "%s",
                     json_string_value(json_object_get(p, "address")) ?: "");
            json_int_t r = json_integer_value(json_object_get(p, "replicas"));
            op->replicas = r > 0 ? (unsigned)r : 0;
        }
    }
    return of != s->slot_first || os != s->slot_stride;
}

int orch__placement_scaled(const struct orch_service *s, const json_t *peer_replicas,
                           const json_t *slots, json_t **out, char *err, size_t errlen)
{
    *out = NULL;
    char what[160];
    json_t *servers = json_array();
    for (size_t i = 0; i < s->npeers; i++)
        json_array_append_new(servers, json_pack("{s:s}", "name", s->peers[i].name));
    snprintf(what, sizeof(what), "peer_replicas.%s", s->name);
    int rc = peer_counts_ok(peer_replicas, servers, what, err, errlen);
    json_decref(servers);
    if (rc < 0)
        return rc;
    if (slots && !json_is_object(slots)) {
        snprintf(err, errlen, "slots.%s: must be an object {first, stride}", s->name);
        return -EINVAL;
    }
    unsigned first, stride;
    snprintf(what, sizeof(what), "slots.%s.first", s->name);
    if (slot_num(json_object_get(slots, "first"), what, s->slot_first ? s->slot_first : 1, &first,
                 err, errlen) < 0)
        return -EINVAL;
    snprintf(what, sizeof(what), "slots.%s.stride", s->name);
    if (slot_num(json_object_get(slots, "stride"), what, s->slot_stride ? s->slot_stride : 1,
                 &stride, err, errlen) < 0)
        return -EINVAL;
    json_t *pl = s->placement ? json_deep_copy(s->placement)
                              : json_pack("{s:s, s:[]}", "listen", "", "peers");
    json_object_set_new(pl, "first", json_integer(first));
    json_object_set_new(pl, "stride", json_integer(stride));
    if (peer_replicas) {
        /* The map is the whole truth for this service: a server it leaves
         * out runs none of its replicas. */
        size_t i;
        json_t *p;
        json_array_foreach(json_object_get(pl, "peers"), i, p) {
            json_t *c = json_object_get(peer_replicas, json_string_value(json_object_get(p, "name")));
            json_object_set_new(p, "replicas", json_integer(c ? json_integer_value(c) : 0));
        }
    }
    *out = pl;
    return 0;
}

void orch__reindex(struct orch_service *s)
{
    /* A new slot rule: a replica whose name the rule still gives keeps
     * running in its new local slot; the others get indexes beyond every
     * slot and are drained once the new ones serve. No new replica can take
     * a name that runs: slot(j) running means it already is local j. */
    struct orch_replica *list = s->replicas, *sorted = NULL;
    while (list) {
        struct orch_replica *r = list;
        list = r->next;
        r->index = orch__local_index(s, r->slot);
        struct orch_replica **pp = &sorted;
        while (*pp && ((*pp)->index < r->index ||
                       ((*pp)->index == r->index && (*pp)->started_ms <= r->started_ms)))
            pp = &(*pp)->next;
        r->next = *pp;
        *pp = r;
    }
    s->replicas = sorted;
}
