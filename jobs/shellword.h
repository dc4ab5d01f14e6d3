/* Commands shown to people (status, --dry-run, job logs) are written as a shell would need them to
 * read them back, so a pasted command runs what the job ran. Nothing in upmoe-jobs runs a shell. */
#ifndef UPM_JOBS_SHELLWORD_H
#define UPM_JOBS_SHELLWORD_H

#include <stddef.h>

/* Appends " WORD" (no space when *len is 0) to buf of size cap, single-quoted when it holds anything
 * but [A-Za-z0-9@%+=:,./_-]; stops silently at the end of buf (always NUL-terminated). */
void upm_shell_append(char *buf, size_t cap, size_t *len, const char *word);

#endif
