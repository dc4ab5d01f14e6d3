/* Shell quoting for display (see shellword.h). */
#include "shellword.h"

#include <string.h>

static void put(char *buf, size_t cap, size_t *len, char c)
{
    if (*len + 1 < cap)
        buf[(*len)++] = c;
}

void upm_shell_append(char *buf, size_t cap, size_t *len, const char *word)
{
    if (!cap)
        return;
    if (*len)
        put(buf, cap, len, ' ');
    static const char safe[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789@%+=:,./_-";
    int plain = *word && strspn(word, safe) == strlen(word);
    if (!plain)
        put(buf, cap, len, '\'');
    for (const char *s = word; *s; s++) {
        if (*s == '\'' && !plain) { /* close, escaped quote, reopen */
            put(buf, cap, len, '\'');
            put(buf, cap, len, '\\');
            put(buf, cap, len, '\'');
        }
        put(buf, cap, len, *s);
    }
    if (!plain)
        put(buf, cap, len, '\'');
    buf[*len < cap ? *len : cap - 1] = 0;
}
