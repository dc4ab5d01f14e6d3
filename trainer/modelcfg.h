/* The model configuration as JSON (cJSON), for the runs table and checkpoints' state.json. */
#ifndef UPM_MODELCFG_H
#define UPM_MODELCFG_H

#include <cjson/cJSON.h>

#include "config.h"

cJSON *upm_model_config_json(const upm_model_config *c);
/* Reads every field back and checks the result (upm_model_config_check). */
int upm_model_config_from_json(const cJSON *j, upm_model_config *c, upm_err *err);

#endif
