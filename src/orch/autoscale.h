/* autoscale.h — the autoscaler of the reconciler (see autoscale.c). */
#ifndef TAKO_ORCH_AUTOSCALE_H
#define TAKO_ORCH_AUTOSCALE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

struct orch_service;

/* The autoscaled desired count (starts at min). */
unsigned orch_autoscale_desired(struct orch_service *s);
/* Evaluate when the interval has passed; true when the count changed (an
 * "autoscale" event explains it). */
bool orch_autoscale_eval(struct orch_service *s, uint64_t now_ms);
/* Bounds, targets and the last evaluation (new reference). */
json_t *orch_autoscale_view(struct orch_service *s);
void orch_autoscale_free(struct orch_service *s);

#endif
