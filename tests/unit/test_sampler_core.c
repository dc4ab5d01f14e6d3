/* Unit test for the sampler's pure parts: per-step dataset choice by weight, shard orders per epoch
 * and rank, block shuffles, the cursor's JSON, and the batch layout with its attribute bytes. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "batch.h"
#include "check.h"
#include "cursor.h"
#include "order.h"
#include "plan.h"

static void test_pick(void)
{
    upm_plan p;
    memset(&p, 0, sizeof p);
    upm_plan_member m[4];
    memset(m, 0, sizeof m);
    double w[4] = {0.2486, 0.0, 0.275, 0.01};
    for (int i = 0; i < 4; i++)
        m[i].sampling_weight = w[i], p.total_weight += w[i];
    p.n = 4;
    p.members = m;
    int count[4] = {0};
    const int draws = 200000;
    for (int s = 0; s < draws; s++)
        count[upm_plan_pick(&p, 7, 3, (uint64_t)s)]++;
    CHECK(count[1] == 0); /* weight 0: never */
    for (int i = 0; i < 4; i++) {
        double expect = draws * w[i] / p.total_weight, sd = sqrt(expect + 1);
        CHECK(fabs(count[i] - expect) < 5 * sd);
    }
    CHECK(upm_plan_pick(&p, 7, 3, 12345) == upm_plan_pick(&p, 7, 3, 12345));
    int differ = 0;
    for (int s = 0; s < 100; s++)
        differ += upm_plan_pick(&p, 7, 0, (uint64_t)s) != upm_plan_pick(&p, 7, 1, (uint64_t)s);
    CHECK(differ > 20); /* ranks choose independently */
}

static void test_shards(void)
{
    enum { S = 103, W = 4 };
    int seen[S] = {0};
    int64_t out[S];
    for (int r = 0; r < W; r++) {
        int64_t n = upm_rank_shards(1, 99, 0, S, r, W, out);
        CHECK(n == (S - r + W - 1) / W);
        for (int64_t i = 0; i < n; i++)
            seen[out[i]]++;
    }
    for (int i = 0; i < S; i++)
        CHECK(seen[i] == 1); /* every shard read by exactly one rank per epoch */
    int64_t a[S], b[S], c[S];
    upm_rank_shards(1, 99, 0, S, 0, 1, a);
    upm_rank_shards(1, 99, 0, S, 0, 1, b);
    upm_rank_shards(1, 99, 1, S, 0, 1, c);
    CHECK(memcmp(a, b, sizeof a) == 0);
    CHECK(memcmp(a, c, sizeof a) != 0); /* a new order every epoch */
    int64_t one[1];
    CHECK(upm_rank_shards(1, 99, 0, 2, 3, 8, one) == 1 && one[0] >= 0 && one[0] < 2); /* fewer shards than ranks */
    CHECK(upm_rank_shards(1, 99, 0, 2, 8, 8, one) == 0);                             /* rank out of range */
}

static void test_block(void)
{
    uint32_t p[100], q[100];
    int used[100] = {0};
    upm_block_perm(5, 1, 0, 7, 100, p);
    for (int i = 0; i < 100; i++)
        used[p[i]]++;
    for (int i = 0; i < 100; i++)
        CHECK(used[i] == 1);
    upm_block_perm(5, 1, 0, 7, 100, q);
    CHECK(memcmp(p, q, sizeof p) == 0);
    upm_block_perm(5, 1, 0, 8, 100, q);
    CHECK(memcmp(p, q, sizeof p) != 0);
}

static void test_cursor(void)
{
    upm_dataset_cursor d[2] = {{.name = "imagenet-21k",
                                .block_start = {.epoch = 3, .rr = 1, .readers = 2, .lane = {{17, 250, 0}, {16, 3, 1}}},
                                .block = 9000000000ULL, .offset = 12, .samples = 5, .bad_samples = 1, .bad_shards = 0},
                               {.name = "books-wiki", .block_start = {.readers = 1}}};
    upm_cursor c = {.mixture = "m", .seed = 18446744073709551615ULL, .rank = 2, .world = 4, .block_size = 256,
                    .step = 1000, .n = 2, .datasets = d};
    char *json = upm_cursor_to_json(&c);
    upm_cursor back;
    upm_err err;
    CHECK(upm_cursor_from_json(json, &back, &err) == 0);
    CHECK(back.seed == c.seed && back.rank == 2 && back.world == 4 && back.step == 1000 && back.n == 2);
    CHECK(back.block_size == 256 && strcmp(back.mixture, "m") == 0);
    CHECK(back.n == 2 && back.datasets[0].block == 9000000000ULL && back.datasets[0].block_start.lane[0].shard_pos == 17);
    CHECK(back.n == 2 && back.datasets[0].block_start.rr == 1 && back.datasets[0].block_start.lane[1].done == 1);
    CHECK(back.n == 2 && back.datasets[0].offset == 12 && back.datasets[0].bad_samples == 1);
    char *again = upm_cursor_to_json(&back);
    CHECK(strcmp(json, again) == 0);
    upm_cursor_free(&back);
    free(again);
    free(json);
    CHECK(upm_cursor_from_json("{", &back, &err) == UPM_EINVAL);
    CHECK(upm_cursor_from_json("{\"version\":1,\"mixture\":\"m\",\"seed\":\"1\",\"world\":2,\"rank\":2,"
                               "\"block_size\":8,\"step\":\"0\",\"datasets\":[]}", &back, &err) == UPM_EINVAL &&
          strstr(err.msg, "rank"));
}

static void test_batch(void)
{
    upm_task t;
    memset(&t, 0, sizeof t);
    snprintf(t.name, sizeof t.name, "image-caption");
    t.formulation = UPM_FORM_VOCAB_CAPTION;
    t.causal = 1;
    t.n_inputs = 2;
    t.inputs[0].modality = UPM_MOD_IMAGE;
    t.inputs[1].modality = UPM_MOD_TEXT;
    t.target_modality = UPM_MOD_TEXT;
    upm_batch_shape sh = {.B = 3, .nseg = 2};
    sh.seg[0].field = "jpg", sh.seg[0].side = UPM_SIDE_INPUT, sh.seg[0].modality = UPM_MOD_IMAGE;
    sh.seg[0].T = 1, sh.seg[0].H = 160, sh.seg[0].W = 160;
    sh.seg[1].field = "txt", sh.seg[1].side = UPM_SIDE_INPUT, sh.seg[1].modality = UPM_MOD_TEXT, sh.seg[1].L = 32;
    upm_batch b;
    upm_err err;
    CHECK(upm_batch_alloc(&b, &t, &sh, &err) == 0);
    CHECK(upm_segment_tokens(&b.seg[0]) == 100 && upm_segment_tokens(&b.seg[1]) == 32);
    CHECK(((uintptr_t)b.seg[0].pixels % 64) == 0 && ((uintptr_t)b.seg[1].ids % 64) == 0);
    CHECK(b.seg[0].attrs[0] == 0x9b && b.seg[0].attrs[3 * 100 - 1] == 0x9b); /* [1,1,0,1,1,0,0,1] */
    CHECK(b.seg[1].attrs[0] == 0xeb && b.seg[1].attn == UPM_ATTN_CAUSAL);    /* [1,1,0,1,0,1,1,1] */
    CHECK(b.seg[0].attn == UPM_ATTN_FULL && b.spe_attr[UPM_SIDE_INPUT] == 0x9b);
    uint64_t h = upm_batch_checksum(&b);
    b.seg[1].ids[5] = 7;
    CHECK(upm_batch_checksum(&b) != h);
    upm_batch_free(&b);
}

int main(void)
{
    test_pick();
    test_shards();
    test_block();
    test_cursor();
    test_batch();
    return CHECK_RESULT("test_sampler_core");
}
