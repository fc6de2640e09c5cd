/* fuzz_core_parsers.c — libFuzzer target for the strict value parsers of
 * src/core: parse_duration_ms, parse_size_bytes, parse_percent, parse_uint
 * and net_parse_addr. They take text from tako.yaml and the command line.
 *
 * Besides "never crash", it checks the contract every parser documents: on
 * failure the output is left untouched, and the error is -EINVAL or -ERANGE.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/net.h"
#include "core/util.h"

#define INPUT_MAX 256 /* config values are short; longer inputs add nothing */

static void check_rc(int rc)
{
    if (rc != 0 && rc != -EINVAL && rc != -ERANGE)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char s[INPUT_MAX + 1];
    if (size > INPUT_MAX)
        size = INPUT_MAX;
    memcpy(s, data, size);
    s[size] = '\0';

    const uint64_t sentinel = 0xdeadbeefcafef00dull;
    uint64_t v = sentinel;
    int rc = parse_duration_ms(s, &v);
    check_rc(rc);
    if (rc != 0 && v != sentinel)
        abort();

    if (rc == 0) {
        /* What tako prints must read back, no larger than the value and
         * within the precision shown (tenths of s under 1m, then s, m, h). */
        char buf[64];
        uint64_t back = sentinel;
        fmt_duration(v, buf, sizeof(buf));
        if (parse_duration_ms(buf, &back) != 0 || back > v)
            abort();
        uint64_t slack = v < 1000 ? 0 : v < 60000 ? 99 : v < 3600000 ? 999
                         : v < 86400000 ? 59999 : 3599999;
        if (v - back > slack)
            abort();
    }

    v = sentinel;
    rc = parse_size_bytes(s, &v);
    check_rc(rc);
    if (rc != 0 && v != sentinel)
        abort();

    v = sentinel;
    rc = parse_uint(s, 65535, &v);
    check_rc(rc);
    if (rc != 0 && v != sentinel)
        abort();
    if (rc == 0 && v > 65535)
        abort();

    double d = -1.0;
    rc = parse_percent(s, &d);
    check_rc(rc);
    if (rc != 0 && d != -1.0)
        abort();
    if (rc == 0 && !(d >= 0.0))
        abort();

    struct net_addr a;
    rc = net_parse_addr(s, "127.0.0.1", &a);
    if (rc == 0) {
        /* A parsed address must print and keep its port. */
        char buf[128];
        net_addr_str(&a, buf, sizeof(buf));
        struct net_addr b;
        if (net_parse_addr(buf, NULL, &b) != 0 || net_addr_port(&b) != net_addr_port(&a))
            abort();
    } else if (rc != -EINVAL) {
        abort();
    }
    return 0;
}
