/* split.c — split a `command:` string into argv the way a POSIX shell splits
 * words, without running a shell (so no expansion, no operators). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "core/util.h"

void cfg_argv_free(char **argv)
{
    if (!argv)
        return;
    for (char **a = argv; *a; a++)
        free(*a);
    free(argv);
}

int cfg_split_command(const char *s, char ***argv_out, char *err, size_t errlen)
{
    int ret = -EINVAL;
    size_t n = 0, cap = 4;
    char **argv = xcalloc(cap, sizeof(char *));
    char *word = xmalloc(strlen(s) + 1);
    size_t wl = 0;
    bool in_word = false;
    const char *p = s;
    while (*p) {
        char ch = *p;
        if (ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r') {
            p++;
            if (!in_word)
                continue;
        } else if (ch == '\'') {
            const char *e = strchr(p + 1, '\'');
            if (!e) {
                snprintf(err, errlen, "unterminated single quote at offset %zu", (size_t)(p - s));
                goto out;
            }
            memcpy(word + wl, p + 1, (size_t)(e - p - 1));
            wl += (size_t)(e - p - 1);
            in_word = true;
            p = e + 1;
            continue;
        } else if (ch == '"') {
            const char *q = p + 1;
            for (;; q++) {
                if (!*q) {
                    snprintf(err, errlen, "unterminated double quote at offset %zu",
                             (size_t)(p - s));
                    goto out;
                }
                if (*q == '"')
                    break;
                if (*q == '\\' && q[1] && strchr("\"\\$`\n", q[1]))
                    q++;
                word[wl++] = *q;
            }
            in_word = true;
            p = q + 1;
            continue;
        } else if (ch == '\\') {
            if (!p[1]) {
                snprintf(err, errlen, "trailing backslash");
                goto out;
            }
            word[wl++] = p[1];
            in_word = true;
            p += 2;
            continue;
        } else if (strchr("|&;<>()`", ch) || (ch == '$' && p[1] == '(')) {
            snprintf(err, errlen,
                     "shell syntax '%.*s' is not supported in command (tako runs the program "
                     "directly; use command: [sh, -c, \"...\"] for a shell)",
                     ch == '$' ? 2 : 1, p);
            goto out;
        } else {
            word[wl++] = ch;
            in_word = true;
            p++;
            continue;
        }
        /* A blank ended a word. */
        if (n + 2 > cap) {
            cap *= 2;
            argv = xrealloc(argv, cap * sizeof(char *));
        }
        argv[n++] = xstrndup(word, wl);
        argv[n] = NULL;
        wl = 0;
        in_word = false;
    }
    if (in_word) {
        if (n + 2 > cap) {
            cap *= 2;
            argv = xrealloc(argv, cap * sizeof(char *));
        }
        argv[n++] = xstrndup(word, wl);
        argv[n] = NULL;
    }
    if (n == 0) {
        snprintf(err, errlen, "empty command");
        goto out;
    }
    *argv_out = argv;
    argv = NULL;
    ret = 0;
out:
    free(word);
    if (argv) {
        for (size_t i = 0; i < n; i++)
            free(argv[i]);
        free(argv);
    }
    return ret;
}
