/* fuzz_http_request.c — libFuzzer target for the strict HTTP parser.
 *
 * The first byte picks how the input is fed: as one request head, as a
 * response head, or as a chunked body. Properties checked besides memory
 * safety: a parse result never changes when bytes are appended after a
 * complete head (no reading past head_len); every prefix of a complete head
 * is HTTP_INCOMPLETE or the same error; header slices stay inside the input;
 * the chunked framer consumes the same bytes whatever the feeding split. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/http.h"

static struct http_msg m1, m2;

static void check_slices(const struct http_msg *m, const uint8_t *d, size_t n)
{
    for (unsigned i = 0; i < m->nheaders; i++) {
        const struct http_header *h = &m->headers[i];
        if ((const uint8_t *)h->name < d || (const uint8_t *)h->value + h->value_len > d + n)
            abort();
    }
}

static void fuzz_head(const uint8_t *d, size_t n, bool request)
{
    int (*parse)(const char *, size_t, struct http_msg *, unsigned) =
        request ? http_parse_request : http_parse_response;
    int r = parse((const char *)d, n, &m1, HTTP_MAX_HEADERS);
    if (r > 0) {
        if ((size_t)r > n)
            abort();
        check_slices(&m1, d, n);
        /* the head alone parses the same */
        int r2 = parse((const char *)d, (size_t)r, &m2, HTTP_MAX_HEADERS);
        if (r2 != r || m2.nheaders != m1.nheaders || m2.content_length != m1.content_length ||
            m2.flags != m1.flags)
            abort();
        /* any shorter prefix is incomplete or an error, never complete */
        for (size_t cut = 0; cut < (size_t)r; cut += 1 + cut / 8) {
            int rp = parse((const char *)d, cut, &m2, HTTP_MAX_HEADERS);
            if (rp > 0)
                abort();
        }
    }
}

static void fuzz_chunked(const uint8_t *d, size_t n, size_t step)
{
    struct http_chunked a, b;
    http_chunked_init(&a);
    http_chunked_init(&b);
    size_t ia = 0, ib = 0, da = 0, db = 0;
    long ra = 0, rb = 0;
    while (ia < n && !a.done) {
        size_t dl;
        ra = http_chunked_feed(&a, (const char *)d + ia, n - ia, &dl);
        if (ra < 0)
            break;
        if (ra == 0 && !a.done)
            break;
        ia += (size_t)ra;
        da += dl;
    }
    while (ib < n && !b.done) {
        size_t avail = n - ib < step ? n - ib : step;
        size_t dl;
        rb = http_chunked_feed(&b, (const char *)d + ib, avail, &dl);
        if (rb < 0)
            break;
        if (dl > avail || (size_t)rb > avail)
            abort();
        if (rb == 0 && !b.done && avail == n - ib)
            break;
        ib += (size_t)rb;
        db += dl;
    }
    if ((ra < 0) != (rb < 0))
        abort();
    if (ra >= 0 && (a.done != b.done || (a.done && (ia != ib || da != db))))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t mode = data[0];
    data++;
    size--;
    switch (mode % 3) {
    case 0:
        fuzz_head(data, size, true);
        break;
    case 1:
        fuzz_head(data, size, false);
        break;
    default:
        fuzz_chunked(data, size, 1 + (mode >> 2) % 13);
        break;
    }
    return 0;
}
