/* lb_table.c — the balancing strategies. A strategy's number (enum
 * lb_kind, enum cfg_lb) is its row, its name is what tako.yaml says. A new
 * strategy is one lb_NAME.c filling a struct lb_ops and one row here. */
#include "proxy/lb.h"

const struct lb_ops *const lb_table[] = {
    &lb_round_robin_ops, /* LB_ROUND_ROBIN */
    &lb_least_conn_ops,  /* LB_LEAST_CONN */
    &lb_ip_hash_ops,     /* LB_IP_HASH */
    &lb_random_ops,      /* LB_RANDOM */
    &lb_sticky_ops,      /* LB_STICKY */
    &lb_p2c_ops,         /* LB_P2C */
    NULL,
};
