/* place.c — spread a service's replicas over its environment's servers:
 * which servers are eligible (placement), how many each runs, and the slot
 * numbers that keep replica names unique across the environment. */
#include <string.h>

#include "config/config.h"

bool cfg_server_eligible(const struct cfg_service *s, const struct cfg_server *sv)
{
    if (!sv)
        return false;
    if (s->placement_servers_len) {
        bool listed = false;
        for (size_t i = 0; i < s->placement_servers_len && !listed; i++)
            listed = strcmp(s->placement_servers[i], sv->name) == 0;
        if (!listed)
            return false;
    }
    for (size_t i = 0; i < s->placement_labels_len; i++) {
        const struct cfg_kv *want = &s->placement_labels[i];
        bool found = false;
        for (size_t j = 0; j < sv->labels_len && !found; j++)
            found = strcmp(sv->labels[j].key, want->key) == 0 &&
                    strcmp(sv->labels[j].value, want->value) == 0;
        if (!found)
            return false;
    }
    return true;
}

size_t cfg_place(const struct cfg_file *f, const struct cfg_env *e, const struct cfg_service *s,
                 unsigned replicas, struct cfg_place *out)
{
    size_t n = 0;
    for (size_t i = 0; i < e->servers_len; i++) {
        out[i] = (struct cfg_place){.server = cfg_find_server(f, e->servers[i])};
        out[i].eligible = cfg_server_eligible(s, out[i].server);
        if (out[i].eligible)
            n++;
    }
    size_t p = 0;
    for (size_t i = 0; i < e->servers_len; i++) {
        out[i].slot_stride = (unsigned)(n ? n : 1);
        if (!out[i].eligible)
            continue;
        out[i].replicas = (unsigned)(replicas / n + (p < replicas % n ? 1 : 0));
        out[i].slot_first = (unsigned)p + 1;
        p++;
    }
    return n;
}
