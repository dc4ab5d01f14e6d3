/* upmoe-jobs list [--state S] [--json]: the jobs, newest last. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static int print_row(const upm_job *j, void *ctx)
{
    int json = *(int *)ctx;
    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "id", (double)j->id);
        cJSON_AddStringToObject(o, "name", j->name);
        cJSON_AddStringToObject(o, "state", j->state);
        cJSON_AddNumberToObject(o, "priority", (double)j->priority);
        cJSON_AddNumberToObject(o, "attempt", (double)j->attempt);
        cJSON_AddStringToObject(o, "backend", j->backend);
        cJSON_AddNumberToObject(o, "ranks", j->ranks);
        cJSON_AddStringToObject(o, "submitted_at", j->submitted_at);
        char *s = cJSON_PrintUnformatted(o);
        printf("%s\n", s ? s : "{}");
        free(s);
        cJSON_Delete(o);
    } else
        printf("%-6lld %-24s %-10s %8lld %7lld %-7s %5d  %s\n", (long long)j->id, j->name, j->state,
               (long long)j->priority, (long long)j->attempt, j->backend, j->ranks, j->submitted_at);
    return 0;
}

int cmd_list(upm_catalog *cat, int argc, char **argv)
{
    const char *state = NULL;
    int json = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json"))
            json = 1;
        else if (!strcmp(argv[i], "--state") && i + 1 < argc)
            state = argv[++i];
        else
            return usage_error("list: unknown or incomplete option '%s'", argv[i]);
    }
    if (state && strcmp(state, "queued") && strcmp(state, "running") && strcmp(state, "succeeded") &&
        strcmp(state, "failed") && strcmp(state, "cancelled"))
        return usage_error("--state must be queued, running, succeeded, failed or cancelled, not '%s'", state);
    if (!json)
        printf("%-6s %-24s %-10s %8s %7s %-7s %5s  %s\n", "ID", "NAME", "STATE", "PRIORITY", "ATTEMPT", "BACKEND",
               "RANKS", "SUBMITTED");
    upm_err err = {0};
    return upm_job_foreach(cat, state, print_row, &json, &err) ? fail(&err) : 0;
}

