/* orch_peers.c — several servers per environment: the slot rule that names
 * local replicas, and a service's placement (slots, this server's peer
 * listener, the other servers and their replica counts) from deploy and
 * scale requests. */
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/net.h"
#include "core/sha256.h"
#include "core/util.h"
#include "proxy/proxy.h"
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

/* ---- peer backends and the peer listener ---- */

bool orch__peer_source(const struct orch_service *s, char *buf, size_t len)
{
    struct net_addr a;
    if (!s->peer_listen[0] || net_parse_addr(s->peer_listen, NULL, &a) < 0)
        return false;
    char as[64];
    net_addr_str(&a, as, sizeof(as));
    char *colon = strrchr(as, ':');
    if (colon)
        *colon = '\0';
    const char *ip = as[0] == '[' ? as + 1 : as;
    size_t n = strlen(ip);
    if (n && ip[n - 1] == ']')
        n--;
    if ((n == 7 && strncmp(ip, "0.0.0.0", 7) == 0) || (n == 2 && strncmp(ip, "::", 2) == 0))
        return false; /* every address: the kernel picks the route's */
    snprintf(buf, len, "%.*s", (int)n, ip);
    return true;
}

size_t orch__peer_specs(struct orch_service *s, struct proxy_backend_spec *specs, struct sha256 *h)
{
    size_t n = 0;
    for (size_t i = 0; i < s->npeers; i++) {
        const struct orch_peer *p = &s->peers[i];
        if (p->replicas == 0)
            continue; /* nothing of this service there to send to */
        struct proxy_backend_spec *sp = &specs[n];
        if (net_parse_addr(p->address, NULL, &sp->addr) < 0)
            continue;
        /* ids live as long as the service's peers: in a scratch of the spec array's owner */
        snprintf(s->peers[i].id, sizeof(s->peers[i].id), "peer:%s", p->name);
        sp->id = s->peers[i].id;
        sp->peer = true;
        sp->weight = p->replicas;
        /* The pool's health path: a check through the peer's listener goes
         * to whichever revision runs there. */
        sp->health_path = NULL;
        n++;
        char w[16];
        snprintf(w, sizeof(w), "%u", p->replicas);
        sha256_update(h, sp->id, strlen(sp->id) + 1);
        sha256_update(h, p->address, strlen(p->address) + 1);
        sha256_update(h, w, strlen(w) + 1);
    }
    return n;
}

static struct orch_peer_listener *pl_get(struct orch *o, const char *addr)
{
    for (struct orch_peer_listener *l = o->peer_listeners; l; l = l->next)
        if (strcmp(l->addr, addr) == 0)
            return l;
    struct orch_peer_listener *l = xcalloc(1, sizeof(*l));
    snprintf(l->addr, sizeof(l->addr), "%s", addr);
    l->next = o->peer_listeners;
    o->peer_listeners = l;
    return l;
}

static void pl_free(struct orch_peer_listener *l)
{
    for (size_t i = 0; i < l->nroutes; i++)
        free(l->routes[i]);
    free(l->routes);
    free(l->pools);
    free(l);
}

static bool svc_on(const struct orch_service *s, const struct orch_peer_listener *l)
{
    return s->pool && !s->removing && strcmp(s->peer_listen, l->addr) == 0;
}

/* The allow list of l: every peer address of every service it serves (a
 * server that runs several environments knows all of their servers). */
static size_t pl_allow(struct orch *o, const struct orch_peer_listener *l, struct proxy_cidr **out,
                       uint8_t sig[ORCH_SIG_LEN])
{
    size_t cap = 0, n = 0;
    for (struct orch_service *s = o->services; s; s = s->next)
        if (svc_on(s, l))
            cap += s->npeers;
    *out = xcalloc(cap ? cap : 1, sizeof(**out));
    for (struct orch_service *s = o->services; s; s = s->next) {
        if (!svc_on(s, l))
            continue;
        for (size_t i = 0; i < s->npeers; i++) {
            struct net_addr a;
            if (net_parse_addr(s->peers[i].address, NULL, &a) < 0)
                continue;
            struct proxy_cidr c = {0};
            if (a.ss.ss_family == AF_INET) {
                c.family = AF_INET;
                memcpy(c.addr, &((struct sockaddr_in *)&a.ss)->sin_addr, 4);
                c.prefix = 32;
            } else {
                c.family = AF_INET6;
                memcpy(c.addr, &((struct sockaddr_in6 *)&a.ss)->sin6_addr, 16);
                c.prefix = 128;
            }
            bool dup = false;
            for (size_t k = 0; k < n && !dup; k++)
                dup = memcmp(&(*out)[k], &c, sizeof(c)) == 0;
            if (!dup)
                (*out)[n++] = c;
        }
    }
    struct sha256 h;
    sha256_init(&h);
    sha256_update(&h, *out, n * sizeof(**out));
    sha256_final(&h, sig);
    return n;
}

/* Routes of l: drop the ones no service wants, add or repoint the others. */
static void pl_routes(struct orch *o, struct orch_peer_listener *l, const struct net_addr *a)
{
    for (size_t i = 0; i < l->nroutes;) {
        bool keep = false;
        for (struct orch_service *s = o->services; s && !keep; s = s->next) {
            char key[200];
            snprintf(key, sizeof(key), "%s/%s/%s", s->project, s->env, s->name);
            keep = svc_on(s, l) && strcmp(key, l->routes[i]) == 0;
            if (keep && s->pool != l->pools[i] &&
                proxy_route_host(o->proxy, a, key, s->pool) == 0)
                l->pools[i] = s->pool; /* a replaced pool: repointed, never unrouted */
        }
        if (keep) {
            i++;
            continue;
        }
        proxy_route_host(o->proxy, a, l->routes[i], NULL);
        free(l->routes[i]);
        l->routes[i] = l->routes[l->nroutes - 1];
        l->pools[i] = l->pools[l->nroutes - 1];
        l->nroutes--;
    }
    for (struct orch_service *s = o->services; s; s = s->next) {
        if (!svc_on(s, l))
            continue;
        char key[200];
        snprintf(key, sizeof(key), "%s/%s/%s", s->project, s->env, s->name);
        bool have = false;
        for (size_t i = 0; i < l->nroutes && !have; i++)
            have = strcmp(l->routes[i], key) == 0;
        if (have)
            continue;
        if (proxy_route_host(o->proxy, a, key, s->pool) < 0)
            continue;
        l->routes = xrealloc(l->routes, (l->nroutes + 1) * sizeof(*l->routes));
        l->pools = xrealloc(l->pools, (l->nroutes + 1) * sizeof(*l->pools));
        l->routes[l->nroutes] = xstrdup(key);
        l->pools[l->nroutes] = s->pool;
        l->nroutes++;
    }
}

int orch__sync_peer_listeners(struct orch *o, char *err, size_t errlen)
{
    int rc = 0;
    for (struct orch_peer_listener *l = o->peer_listeners; l; l = l->next)
        l->wanted = false;
    for (struct orch_service *s = o->services; s; s = s->next)
        if (s->pool && !s->removing && s->peer_listen[0])
            pl_get(o, s->peer_listen)->wanted = true;
    for (struct orch_peer_listener **pp = &o->peer_listeners; *pp;) {
        struct orch_peer_listener *l = *pp;
        struct net_addr a;
        if (net_parse_addr(l->addr, NULL, &a) < 0) {
            l->wanted = false; /* validated at deploy: only a stored oddity gets here */
        }
        if (!l->wanted) {
            if (l->bound)
                proxy_unlisten(o->proxy, &a);
            *pp = l->next;
            pl_free(l);
            continue;
        }
        pp = &l->next;
        struct proxy_cidr *allow;
        uint8_t sig[ORCH_SIG_LEN];
        size_t n = pl_allow(o, l, &allow, sig);
        if (!l->bound) {
            int r = proxy_listen_peer(o->proxy, &a, allow, n);
            if (r < 0) {
                if (rc == 0)
                    snprintf(err, errlen, "cannot listen for the other servers on %s: %s",
                             l->addr, strerror(-r));
                rc = rc ? rc : r;
                free(allow);
                continue;
            }
            l->bound = true;
            memcpy(l->allow_sig, sig, ORCH_SIG_LEN);
        } else if (memcmp(sig, l->allow_sig, ORCH_SIG_LEN) != 0) {
            if (proxy_listener_peer_allow(o->proxy, &a, allow, n) == 0)
                memcpy(l->allow_sig, sig, ORCH_SIG_LEN);
        }
        free(allow);
        pl_routes(o, l, &a);
    }
    return rc;
}

void orch__peer_listeners_free(struct orch *o)
{
    while (o->peer_listeners) {
        struct orch_peer_listener *l = o->peer_listeners;
        o->peer_listeners = l->next;
        pl_free(l);
    }
}

json_t *orch__peers_json(const struct orch_service *s, const struct proxy_backend_stats *st,
                         size_t nst)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < s->npeers; i++) {
        const struct orch_peer *p = &s->peers[i];
        char id[80];
        snprintf(id, sizeof(id), "peer:%s", p->name);
        const struct proxy_backend_stats *b = orch__find_stats(st, nst, id);
        /* never checked yet (or not in the pool: no replica there) */
        const char *health = "unknown";
        if (b && b->healthy)
            health = "healthy";
        else if (b && (b->ever_healthy || b->consecutive_failures > 0))
            health = "unhealthy";
        json_array_append_new(arr, json_pack("{s:s, s:s, s:i, s:s}", "server", p->name, "address",
                                             p->address, "replicas", (int)p->replicas, "health",
                                             health));
    }
    return arr;
}
