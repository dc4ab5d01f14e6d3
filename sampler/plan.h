/* A training plan: the members of a catalog mixture with everything the sampler needs per dataset
 * (task, shard pattern, batch size, effective weights), and the per-step choice of one dataset with
 * probability proportional to its sampling weight (paper §4.2: each GPU samples its own task). */
#ifndef UPM_PLAN_H
#define UPM_PLAN_H

#include <stdint.h>

#include "catalog_ops.h"

typedef struct upm_plan_member {
    upm_dataset dataset;
    upm_task task;
    double sampling_weight; /* effective: the member's, else the dataset's */
    double loss_weight;     /* effective: the member's, else the dataset's, else the task's */
    uint64_t id;            /* stable per dataset name (hash), keys the dataset's random streams */
} upm_plan_member;

typedef struct upm_plan {
    char mixture[UPM_NAME_MAX + 1];
    int n;
    upm_plan_member *members; /* sorted by dataset name */
    double total_weight;
} upm_plan;

/* Loads a mixture. Fails when it is empty, when every weight is 0, or when a member with weight > 0
 * has no shard URL yet (naming it). */
int upm_plan_load(upm_catalog *cat, const char *mixture, upm_plan *out, upm_err *err);
void upm_plan_free(upm_plan *p);

/* The member rank `rank` trains on at `step`: a pure function of (seed, rank, step). */
int upm_plan_pick(const upm_plan *p, uint64_t seed, int rank, uint64_t step);

/* 64-bit FNV-1a of a string: stable ids for dataset names. */
uint64_t upm_hash_name(const char *s);

#endif
