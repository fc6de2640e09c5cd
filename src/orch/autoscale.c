/* autoscale.c — replicas: {min, max, cpu: 70%, requests: 100}: the
 * Kubernetes HPA algorithm on tako's own numbers (the runtime's CPU per
 * replica, the proxy's request counters), every decision explained.
 *
 *   desired = ceil(current × metric / target), per metric; skipped within
 *   the tolerance; the larger recommendation of cpu and requests wins;
 *   scale-up is limited to max(+100%, +4) per interval and scale-down to
 *   -50%; clamped to [min, max]; a scale-down takes the highest
 *   recommendation of the stabilization window (5 min), a scale-up the
 *   lowest of its window (0 s); replicas not yet ready are left out of the
 *   metric and a missing metric never scales down.
 */
#include "orch/autoscale.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ev.h"
#include "core/util.h"
#include "store/store.h"
#include "orch/orch_internal.h"
#include "proxy/proxy.h"
#include "runtime/rt.h"

#define AS_HISTORY 512

struct as_rec {
    uint64_t at;
    unsigned value;
};

struct orch_autoscale {
    uint64_t last_eval;
    uint64_t last_requests; /* sum over the pool's backends at last_eval */
    bool have_requests;
    unsigned desired;
    struct as_rec hist[AS_HISTORY];
    size_t nhist, hpos;
    json_t *last; /* the last evaluation, explained */
};

static void as_free_cb(struct orch_service *s)
{
    if (!s->as)
        return;
    json_decref(s->as->last);
    free(s->as);
    s->as = NULL;
}

void orch_autoscale_free(struct orch_service *s) { as_free_cb(s); }

unsigned orch_autoscale_desired(struct orch_service *s)
{
    const struct cfg_autoscale *a = &s->cfg->autoscale;
    if (!s->as) {
        s->as = xcalloc(1, sizeof(*s->as));
        s->as->desired = a->min;
    }
    if (s->as->desired < a->min)
        s->as->desired = a->min;
    if (s->as->desired > a->max)
        s->as->desired = a->max;
    return s->as->desired;
}

static void hist_add(struct orch_autoscale *as, uint64_t now, unsigned v)
{
    as->hist[as->hpos] = (struct as_rec){now, v};
    as->hpos = (as->hpos + 1) % AS_HISTORY;
    if (as->nhist < AS_HISTORY)
        as->nhist++;
}

/* Highest (or lowest) recommendation recorded within window_ms of now. */
static unsigned hist_extreme(const struct orch_autoscale *as, uint64_t now, uint64_t window_ms,
                             bool highest, unsigned fallback)
{
    unsigned best = fallback;
    bool any = false;
    for (size_t i = 0; i < as->nhist; i++) {
        const struct as_rec *r = &as->hist[i];
        if (now - r->at > window_ms)
            continue;
        if (!any || (highest ? r->value > best : r->value < best))
            best = r->value;
        any = true;
    }
    return best;
}

static unsigned ceil_ratio(unsigned current, double metric, double target)
{
    double d = ceil((double)current * metric / target - 1e-9);
    if (d < 0)
        d = 0;
    if (d > 1e6)
        d = 1e6;
    return (unsigned)d;
}

/* One evaluation. Returns true when the desired count changed. */
bool orch_autoscale_eval(struct orch_service *s, uint64_t now)
{
    const struct cfg_autoscale *a = &s->cfg->autoscale;
    struct orch_autoscale *as = s->as;
    if (!a->enabled || !as || s->stopped || s->removing)
        return false;
    if (as->last_eval && now - as->last_eval < a->interval_ms)
        return false;
    uint64_t elapsed = as->last_eval ? now - as->last_eval : 0;
    as->last_eval = now;

    /* Inputs: ready replicas only. */
    unsigned ready = 0;
    double cpu_sum = 0;
    for (struct orch_replica *r = s->replicas; r; r = r->next) {
        if (r->phase != P_READY)
            continue;
        struct rt_info info;
        rt_info(r->rt, &info);
        if (info.state != RT_RUNNING)
            continue;
        ready++;
        cpu_sum += info.cpu_percent;
    }
    uint64_t total_requests = 0;
    bool have_pool_stats = false;
    if (s->pool) {
        struct proxy_backend_stats *st = NULL;
        size_t n = 0;
        if (proxy_pool_stats(s->pool, &st, &n) == 0) {
            have_pool_stats = true;
            for (size_t i = 0; i < n; i++)
                total_requests += st[i].requests;
            proxy_pool_stats_free(st);
        }
    }
    unsigned current = as->desired;
    json_t *ev = json_object();
    json_object_set_new(ev, "current", json_integer(current));
    json_object_set_new(ev, "ready", json_integer(ready));
    json_object_set_new(ev, "min", json_integer(a->min));
    json_object_set_new(ev, "max", json_integer(a->max));

    bool metric_missing = ready == 0;
    unsigned rec = 0;
    bool any_rec = false;
    char why[512] = "";
    size_t wl = 0;
#define WHY(...)                                                                                   \
    do {                                                                                           \
        int w_ = snprintf(why + wl, sizeof(why) - wl, __VA_ARGS__);                                \
        if (w_ > 0 && (size_t)w_ < sizeof(why) - wl)                                               \
            wl += (size_t)w_;                                                                      \
    } while (0)

    if (a->cpu_percent > 0) {
        if (ready > 0) {
            double cpu = cpu_sum / ready;
            double ratio = cpu / a->cpu_percent;
            unsigned r = fabs(ratio - 1.0) <= a->tolerance ? current
                                                            : ceil_ratio(current, cpu, a->cpu_percent);
            json_object_set_new(ev, "cpu", json_real(round(cpu * 10) / 10));
            json_object_set_new(ev, "cpu_target", json_real(a->cpu_percent));
            json_object_set_new(ev, "cpu_recommendation", json_integer(r));
            WHY("cpu %.1f%% vs target %.0f%% → %u%s; ", cpu, a->cpu_percent, r,
                fabs(ratio - 1.0) <= a->tolerance ? " (within tolerance)" : "");
            rec = r;
            any_rec = true;
        } else {
            WHY("cpu: no ready replica; ");
        }
    }
    if (a->requests_per_s > 0) {
        if (have_pool_stats && as->have_requests && elapsed > 0 && ready > 0 &&
            total_requests >= as->last_requests) {
            double rps = (double)(total_requests - as->last_requests) * 1000.0 / (double)elapsed;
            double per = rps / ready;
            double ratio = per / a->requests_per_s;
            unsigned r = fabs(ratio - 1.0) <= a->tolerance
                             ? current
                             : ceil_ratio(current, per, a->requests_per_s);
            json_object_set_new(ev, "requests_per_s", json_real(round(per * 10) / 10));
            json_object_set_new(ev, "requests_target", json_real(a->requests_per_s));
            json_object_set_new(ev, "requests_recommendation", json_integer(r));
            WHY("requests %.1f/s per replica vs target %.0f → %u%s; ", per, a->requests_per_s, r,
                fabs(ratio - 1.0) <= a->tolerance ? " (within tolerance)" : "");
            if (!any_rec || r > rec)
                rec = r;
            any_rec = true;
        } else {
            WHY("requests: no rate yet; ");
            metric_missing = true;
        }
    }
    as->last_requests = total_requests;
    as->have_requests = have_pool_stats;

    const char *rule = "unchanged";
    unsigned desired = current;
    if (!any_rec) {
        rule = "no metric: keep";
    } else {
        unsigned raw = rec;
        if (metric_missing && raw < current) {
            raw = current; /* a missing metric never scales down */
            rule = "missing metric: no scale-down";
        }
        json_object_set_new(ev, "raw", json_integer(raw));
        hist_add(as, now, raw);
        desired = raw;
        if (desired > current) {
            unsigned up_limit = current * 2 > current + 4 ? current * 2 : current + 4;
            unsigned stab = hist_extreme(as, now, a->up_stabilization_ms, false, desired);
            if (stab < desired) {
                desired = stab > current ? stab : current;
                rule = "scale-up stabilization window";
            } else {
                rule = "scale up";
            }
            if (desired > up_limit) {
                desired = up_limit;
                rule = "scale-up step limit (max(+100%, +4))";
            }
        } else if (desired < current) {
            unsigned stab = hist_extreme(as, now, a->down_stabilization_ms, true, desired);
            if (stab > desired) {
                desired = stab < current ? stab : current;
                rule = desired == current ? "scale-down stabilization window (holding)"
                                          : "scale-down stabilization window";
            } else {
                rule = "scale down";
            }
            unsigned down_limit = (current + 1) / 2;
            if (desired < down_limit) {
                desired = down_limit;
                rule = "scale-down step limit (-50%)";
            }
        } else if (strcmp(rule, "unchanged") == 0) {
            rule = "within tolerance or on target";
        }
    }
    if (desired < a->min) {
        desired = a->min;
        rule = "clamped to min";
    }
    if (desired > a->max) {
        desired = a->max;
        rule = "clamped to max";
    }
    json_object_set_new(ev, "desired", json_integer(desired));
    json_object_set_new(ev, "rule", json_string(rule));
    char ts[32];
    time_iso8601(ts);
    json_object_set_new(ev, "time", json_string(ts));
    if (wl >= 2)
        why[wl - 2] = '\0';
    json_object_set_new(ev, "inputs", json_string(why));
    json_decref(as->last);
    as->last = json_incref(ev);
    bool changed = desired != current;
    if (changed) {
        char msg[768];
        snprintf(msg, sizeof(msg), "%u → %u replicas: %s (%s)", current, desired, rule, why);
        store_event(s->o->store, s->project, s->name, "autoscale", msg, ev, NULL, NULL);
        as->desired = desired;
    }
    json_decref(ev);
    return changed;
#undef WHY
}

json_t *orch_autoscale_view(struct orch_service *s)
{
    const struct cfg_autoscale *a = &s->cfg->autoscale;
    json_t *j = json_object();
    json_object_set_new(j, "min", json_integer(a->min));
    json_object_set_new(j, "max", json_integer(a->max));
    if (a->cpu_percent > 0)
        json_object_set_new(j, "cpu_target", json_real(a->cpu_percent));
    if (a->requests_per_s > 0)
        json_object_set_new(j, "requests_target", json_real(a->requests_per_s));
    json_object_set_new(j, "interval_ms", json_integer((json_int_t)a->interval_ms));
    json_object_set_new(j, "scale_up_stabilization_ms",
                        json_integer((json_int_t)a->up_stabilization_ms));
    json_object_set_new(j, "scale_down_stabilization_ms",
                        json_integer((json_int_t)a->down_stabilization_ms));
    json_object_set_new(j, "tolerance", json_real(a->tolerance));
    json_object_set_new(j, "desired", json_integer(s->as ? s->as->desired : a->min));
    if (s->as && s->as->last)
        json_object_set_new(j, "last", json_incref(s->as->last));
    return j;
}
