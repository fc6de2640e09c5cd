/* test_daemon.c — takod's control API helpers (the store: test_store.c). */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/api.h"
#include "unit.h"

TEST(api_query_decodes)
{
    struct api_req r = {.query = "project=my%20app&env=prod&flag&service=a+b"};
    char b[64];
    CHECK_STR(api_query(&r, "project", b, sizeof(b)), "my app");
    CHECK_STR(api_query(&r, "env", b, sizeof(b)), "prod");
    CHECK_STR(api_query(&r, "service", b, sizeof(b)), "a b");
    CHECK_STR(api_query(&r, "flag", b, sizeof(b)), "");
    CHECK(api_query(&r, "nope", b, sizeof(b)) == NULL);
    CHECK(api_query(&r, "proj", b, sizeof(b)) == NULL);
}
