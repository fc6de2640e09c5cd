/* rt_docker.h — the Docker driver: replicas as containers of the Docker
 * engine on this host (DOCKER_HOST or /var/run/docker.sock). Everything
 * but image retention goes through rt.h; see docs/runtime.md. */
#ifndef TAKO_RUNTIME_RT_DOCKER_H
#define TAKO_RUNTIME_RT_DOCKER_H

#include <stdbool.h>
#include <stddef.h>

struct rt_driver_ops;

extern const struct rt_driver_ops rt_docker_ops;

#define RT_DOCKER_KEEP_IMAGES 3 /* built images of past revisions kept for rollback */

/* Images tako built for a project (label tako.project; of one service, or
 * all when service is NULL): keep the image of keep_revision and the
 * `keep` newest others, remove the rest (all: every one). Images given by
 * `image:` are never touched; images a container still uses are kept.
 * Returns how many tags were removed, or -errno with a message (Docker not
 * reachable). Blocking. */
int rt_docker_prune_images(const char *project, const char *service, const char *keep_revision,
                           unsigned keep, bool all, char *err, size_t errlen);

#endif
