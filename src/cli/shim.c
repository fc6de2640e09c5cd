/* shim.c — `tako shim`: the hidden subcommand that runs a replica's
 * supervisor (see src/runtime/shim.c). */
#include "cli/cli.h"
#include "runtime/rt_proc.h"

int cmd_shim(int argc, char **argv)
{
    return rt_proc_shim_main(argc, argv);
}
