/* lb_sticky.c — a cookie pins a client to a backend. The cookie's value is
 * the hex of the backend id's hash; the set keeps an open-addressing table
 * from that hash to the backend. No cookie, an unknown value or an unusable
 * backend: round robin picks one, and the response sets the cookie to it (a
 * dead backend's clients are re-pinned). The strategy reads and writes its
 * cookie itself (on_request, on_response): the connection code knows no
 * cookie. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "http/http.h"
#include "proxy/proxy_int.h"

struct sticky {
    size_t cap; /* power of two ≥ 2n */
    int32_t *slot;
};

static int sticky_build(struct lb_set *set)
{
    struct sticky *s = xcalloc(1, sizeof(*s));
    s->cap = 4;
    while (s->cap < set->n * 2)
        s->cap *= 2;
    s->slot = xmalloc(s->cap * sizeof(int32_t));
    for (size_t i = 0; i < s->cap; i++)
        s->slot[i] = -1;
    for (size_t i = 0; i < set->n; i++) {
        size_t k = set->b[i]->id_hash & (s->cap - 1);
        while (s->slot[k] >= 0)
            k = (k + 1) & (s->cap - 1);
        s->slot[k] = (int32_t)i;
    }
    set->data = s;
    return 0;
}

static void sticky_destroy(struct lb_set *set)
{
    struct sticky *s = set->data;
    if (s) {
        free(s->slot);
        free(s);
    }
    set->data = NULL;
}

static bool parse_hex64(const char *p, size_t n, uint64_t *out)
{
    if (n != 16)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        unsigned d;
        if (c >= '0' && c <= '9')
            d = (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            d = (unsigned)(c - 'a' + 10);
        else
            return false;
        v = v << 4 | d;
    }
    *out = v;
    return true;
}

static struct backend *sticky_pick(struct lb_set *set, struct lb_req *r)
{
    struct sticky *s = set->data;
    uint64_t h;
    if (r->cookie && parse_hex64(r->cookie, r->cookie_len, &h)) {
        for (size_t k = h & (s->cap - 1);; k = (k + 1) & (s->cap - 1)) {
            int32_t i = s->slot[k];
            if (i < 0)
                break;
            if (set->b[i]->id_hash == h) {
                if (lb_usable(set->b[i], r))
                    return set->b[i];
                break;
            }
        }
    }
    return lb_rr_next(set, r);
}

/* The pool's cookie in the request's Cookie headers; a value of the
 * right length is the pin. */
static void sticky_on_request(const struct proxy_pool *pool, const struct http_msg *m,
                              struct lb_req *r)
{
    const char *name = pool->sticky_cookie;
    size_t nl = pool->sticky_cookie_len;
    for (unsigned i = 0; i < m->nheaders; i++) {
        const struct http_header *h = &m->headers[i];
        if (h->id != HTTP_H_COOKIE)
            continue;
        const char *v = h->value;
        size_t n = h->value_len, k = 0;
        while (k < n) {
            while (k < n && (v[k] == ' ' || v[k] == ';'))
                k++;
            size_t s = k;
            while (k < n && v[k] != ';')
                k++;
            if (k - s > nl && memcmp(v + s, name, nl) == 0 && v[s + nl] == '=') {
                size_t vl = k - s - nl - 1;
                if (vl == 16) {
                    memcpy(r->key, v + s + nl + 1, 16);
                    r->key[16] = '\0';
                    r->cookie = r->key;
                    r->cookie_len = 16;
                }
                return;
            }
        }
    }
}

/* Pin the client to the backend that answered, unless it already is. */
static const char *sticky_on_response(const struct proxy_pool *pool, const struct lb_req *r,
                                      const struct backend *b, char val[LB_KEY_MAX])
{
    snprintf(val, LB_KEY_MAX, "%016llx", (unsigned long long)b->id_hash);
    if (r->cookie && r->cookie_len == 16 && memcmp(val, r->cookie, 16) == 0)
        return NULL;
    return pool->sticky_cookie;
}

const struct lb_ops lb_sticky_ops = {
    .name = "sticky",
    .needs = LB_NEED_HDR | LB_NEED_RSP,
    .build = sticky_build,
    .destroy = sticky_destroy,
    .pick = sticky_pick,
    .update = NULL,
    .on_request = sticky_on_request,
    .on_response = sticky_on_response,
};
