/* obs_total.c — totals over restarting instances (see obs_total.h). */
#include "daemon/obs_total.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

uint64_t obs_fnv(uint64_t h, const char *s)
{
    if (!h)
        h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static void fold(struct obs_total *t, size_t i)
{
    for (size_t k = 0; k < t->n; k++)
        t->base[k] += t->inst[i].v[k];
    t->inst[i] = t->inst[--t->ninst];
}

/* One instance's current values. Returns true when the total moved. */
bool obs_total_feed(struct obs_total *t, uint64_t id, const uint64_t *v, uint64_t now)
{
    size_t i = 0;
    while (i < t->ninst && t->inst[i].id != id)
        i++;
    if (i < t->ninst) {
        for (size_t k = 0; k < t->n; k++)
            if (v[k] < t->inst[i].v[k]) { /* restarted under the same identity */
                fold(t, i);
                i = t->ninst;
                break;
            }
    }
    if (i == t->ninst) {
        if (t->ninst == OBS_MAX_INST) { /* fold the one seen longest ago */
            size_t old = 0;
            for (size_t k = 1; k < t->ninst; k++)
                if (t->inst[k].seen_ms < t->inst[old].seen_ms)
                    old = k;
            fold(t, old);
        }
        i = t->ninst++;
        memset(&t->inst[i], 0, sizeof(t->inst[i]));
        t->inst[i].id = id;
    }
    bool moved = memcmp(t->inst[i].v, v, t->n * sizeof(*v)) != 0;
    memcpy(t->inst[i].v, v, t->n * sizeof(*v));
    t->inst[i].seen_ms = now;
    return moved;
}

/* Instances not seen for a while are gone: their counts join the base (the
 * total does not change). Kept until then so one that shows up again (a
 * proxy that outlived takod) continues instead of counting twice. */
void obs_total_age(struct obs_total *t, uint64_t now)
{
    for (size_t i = 0; i < t->ninst;)
        if (now - t->inst[i].seen_ms > OBS_FORGET_MS)
            fold(t, i);
        else
            i++;
}

uint64_t obs_total_get(const struct obs_total *t, size_t k)
{
    uint64_t v = t->base[k];
    for (size_t i = 0; i < t->ninst; i++)
        v += t->inst[i].v[k];
    return v;
}

json_t *obs_total_json(const struct obs_total *t)
{
    json_t *b = json_array(), *in = json_array();
    for (size_t k = 0; k < t->n; k++)
        json_array_append_new(b, json_integer((json_int_t)t->base[k]));
    for (size_t i = 0; i < t->ninst; i++) {
        json_t *v = json_array();
        for (size_t k = 0; k < t->n; k++)
            json_array_append_new(v, json_integer((json_int_t)t->inst[i].v[k]));
        /* ids are 64-bit hashes: as text, JSON numbers would round them */
        char id[24];
        snprintf(id, sizeof(id), "%llx", (unsigned long long)t->inst[i].id);
        json_array_append_new(in, json_pack("[s, o]", id, v));
    }
    return json_pack("{s:o, s:o}", "base", b, "inst", in);
}

void obs_total_load(struct obs_total *t, json_t *j, uint64_t now)
{
    json_t *b = json_object_get(j, "base"), *in = json_object_get(j, "inst");
    for (size_t k = 0; k < t->n && k < json_array_size(b); k++)
        t->base[k] = (uint64_t)json_integer_value(json_array_get(b, k));
    for (size_t i = 0; i < json_array_size(in) && t->ninst < OBS_MAX_INST; i++) {
        json_t *e = json_array_get(in, i);
        const char *id = json_string_value(json_array_get(e, 0));
        json_t *v = json_array_get(e, 1);
        if (!id)
            continue;
        struct obs_inst *x = &t->inst[t->ninst++];
        memset(x, 0, sizeof(*x));
        x->id = strtoull(id, NULL, 16);
        x->seen_ms = now;
        for (size_t k = 0; k < t->n && k < json_array_size(v); k++)
            x->v[k] = (uint64_t)json_integer_value(json_array_get(v, k));
    }
}
