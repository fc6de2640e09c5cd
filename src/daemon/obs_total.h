/* obs_total.h — counters that only go up although what they count restarts:
 * the total of a series over its instances (a backend of one load balancer
 * process, a replica's supervisor), each counting from zero when it is new.
 * Pure data, no I/O: takod's obs.c feeds it, tests/unit/test_obs.c checks it. */
#ifndef TAKO_DAEMON_OBS_TOTAL_H
#define TAKO_DAEMON_OBS_TOTAL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define OBS_MAXC 32         /* counters in one group */
#define OBS_MAX_INST 4      /* live instances of one group (old + new process, ...) */
#define OBS_FORGET_MS 10000 /* an instance unseen this long is folded into the base */

struct obs_inst {
    uint64_t id;
    uint64_t v[OBS_MAXC];
    uint64_t seen_ms;
};

/* Zero-initialise and set n (≤ OBS_MAXC) before use. */
struct obs_total {
    size_t n;
    uint64_t base[OBS_MAXC]; /* folded from instances gone or restarted */
    struct obs_inst inst[OBS_MAX_INST];
    size_t ninst;
};

/* The current values v[0..n) of instance id at time now (ms). A new id
 * counts from zero; a known id whose value went down restarted and is
 * counted again from zero (its old values stay in the total). Returns true
 * when the total moved. */
bool obs_total_feed(struct obs_total *t, uint64_t id, const uint64_t *v, uint64_t now);
/* Fold instances unseen for OBS_FORGET_MS into the base (the total does not
 * change). Kept until then so one that shows up again continues instead of
 * counting twice. */
void obs_total_age(struct obs_total *t, uint64_t now);
/* Counter k: base + every instance's value. */
uint64_t obs_total_get(const struct obs_total *t, size_t k);
/* {"base": [...], "inst": [[id-hex, [...]], ...]} (new reference) and back;
 * loaded instances count as seen at now. */
json_t *obs_total_json(const struct obs_total *t);
void obs_total_load(struct obs_total *t, json_t *j, uint64_t now);

/* FNV-1a of s continuing from h (0 = start): instance ids from names. */
uint64_t obs_fnv(uint64_t h, const char *s);

#endif
