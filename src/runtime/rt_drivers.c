/* rt_drivers.c — the table of runtime drivers; the first is the default.
 * A new driver is one file filling a struct rt_driver_ops and one row here. */
#include "runtime/rt_driver.h"
#include "runtime/rt_docker.h"
#include "runtime/rt_proc.h"

const struct rt_driver_ops *const rt_driver_table[] = {
    &rt_proc_ops,
    &rt_docker_ops,
    NULL,
};
