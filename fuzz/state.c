/* Fuzz target "state": what a resume reads from a checkpoint's state.json: the model configuration
 * (upm_model_config_from_json and its checks) and the sampler cursors, each parsed, regrouped for another
 * world size as a resume on fewer or more ranks does, written back and parsed again (the round trip must
 * give the same text). The whole input is also tried as a lone cursor (state version 1's "cursor"). */
#include <string.h>

#include "cursor.h"
#include "fuzz.h"
#include "modelcfg.h"

/* Parses one cursor; when it parses, its JSON must parse back to the same JSON. */
static int cursor_round_trip(const char *text, upm_cursor *c)
{
    upm_err err = {0};
    if (upm_cursor_from_json(text, c, &err)) {
        FUZZ_CHECK(err.msg[0]);
        return -1;
    }
    char *a = upm_cursor_to_json(c);
    FUZZ_CHECK(a);
    upm_cursor again;
    FUZZ_CHECK(upm_cursor_from_json(a, &again, &err) == 0);
    char *b = upm_cursor_to_json(&again);
    FUZZ_CHECK(b && !strcmp(a, b));
    free(a), free(b);
    upm_cursor_free(&again);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_cstring(data, size);
    if (!text)
        return 0;
    upm_cursor lone;
    if (cursor_round_trip(text, &lone) == 0)
        upm_cursor_free(&lone);
    cJSON *j = cJSON_Parse(text);
    free(text);
    if (!j)
        return 0;
    upm_err err = {0};
    upm_model_config cfg;
    if (upm_model_config_from_json(cJSON_GetObjectItemCaseSensitive(j, "model"), &cfg, &err) == 0) {
        cJSON *back = upm_model_config_json(&cfg);
        upm_model_config again;
        FUZZ_CHECK(back && upm_model_config_from_json(back, &again, &err) == 0);
        cJSON_Delete(back);
    }
    const cJSON *curs = cJSON_GetObjectItemCaseSensitive(j, "cursors");
    int n = cJSON_IsArray(curs) ? cJSON_GetArraySize(curs) : 0;
    if (n > 0 && n <= 64) {
        upm_cursor *old = calloc((size_t)n, sizeof *old);
        int parsed = 0;
        for (; old && parsed < n; parsed++) {
            char *t = cJSON_PrintUnformatted(cJSON_GetArrayItem(curs, parsed));
            int rc = t ? cursor_round_trip(t, &old[parsed]) : -1;
            free(t);
            if (rc)
                break;
        }
        for (int world = 1; old && parsed == n && world <= 3; world++) {
            upm_cursor c;
            if (upm_cursor_regroup(old, n, world - 1, world, 2, &c, &err) == 0) {
                char *t = upm_cursor_to_json(&c);
                upm_cursor back;
                FUZZ_CHECK(t && cursor_round_trip(t, &back) == 0);
                upm_cursor_free(&back);
                free(t);
                upm_cursor_free(&c);
            } else {
                FUZZ_CHECK(err.msg[0]);
            }
        }
        for (int i = 0; i < parsed; i++)
            upm_cursor_free(&old[i]);
        free(old);
    }
    cJSON_Delete(j);
    return 0;
}
