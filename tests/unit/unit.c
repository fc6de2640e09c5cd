/* unit.c — the runner behind unit.h. `test_x [NAME...]` runs all tests or
 * the named ones; exit status 1 when any failed. */
#include "unit.h"

#include <stdarg.h>
#include <stdlib.h>

static struct unit_test *head, **tail = &head;
int unit_current_failed;

void unit_register(struct unit_test *t)
{
    *tail = t;
    tail = &t->next;
}

void unit_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "  %s:%d: ", file, line);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    unit_current_failed = 1;
}

static int wanted(const char *name, int argc, char **argv)
{
    if (argc < 2)
        return 1;
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], name) == 0)
            return 1;
    return 0;
}

int main(int argc, char **argv)
{
    int passed = 0, failed = 0;
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (struct unit_test *t = head; t; t = t->next) {
        if (!wanted(t->name, argc, argv))
            continue;
        unit_current_failed = 0;
        t->fn();
        if (unit_current_failed) {
            printf("FAIL %s\n", t->name);
            failed++;
        } else {
            printf("ok   %s\n", t->name);
            passed++;
        }
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
