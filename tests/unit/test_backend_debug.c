/* Unit test for the backend registry, the debug backend and the error path (model/backend_registry.c,
 * backend_debug.c, backend.h status): names the registry refuses and how; the debug backend computes what
 * the CPU backend computes, through upload/download; each misuse it exists to catch ends the process in a
 * child: the host dereferencing backend memory (a fault), a host pointer given to an op, backend memory
 * given as a host buffer, a freed buffer, a matmul running past its buffer (aborts naming the op and the
 * argument); and a failed op becomes the backend's sticky status, which the model's next pass returns as
 * an error naming the op. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backend.h"
#include "check.h"
#include "model.h"

static upm_backend *be;

typedef void (*misuse_fn)(void);

/* Runs fn in a child; 1 when the child died (a signal, or a sanitizer's non-zero exit) and its standard
 * error contains want (NULL: anything). */
static int dies(misuse_fn fn, const char *want)
{
    int fd[2];
    if (pipe(fd))
        return 0;
    fflush(stdout), fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fd[1], 2);
        close(fd[0]);
        fn();
        _exit(0); /* survived: the misuse went unnoticed */
    }
    close(fd[1]);
    char buf[4096] = "";
    size_t n = 0;
    ssize_t r;
    while ((r = read(fd[0], buf + n, sizeof buf - 1 - n)) > 0)
        n += (size_t)r;
    buf[n] = 0;
    close(fd[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    int died = WIFSIGNALED(st) || (WIFEXITED(st) && WEXITSTATUS(st) != 0);
    if (!died || (want && !strstr(buf, want)))
        fprintf(stderr, "child: status %d, stderr:\n%s\n", st, buf);
    return died && (!want || strstr(buf, want));
}

static void deref(void)
{
    float *x = be->alloc(be, 64);
    volatile float *v = x;
    v[0] = 1.0f; /* the host writing backend memory */
}

static void host_to_op(void)
{
    float host[4] = {0}, *x = be->alloc(be, sizeof host);
    be->axpy(be, x, host, 1.0f, 4);
}

static void dev_as_host(void)
{
    float *x = be->alloc(be, 16), *y = be->alloc(be, 16);
    be->download(be, y, x, 16);
}

static void after_free(void)
{
    float *x = be->alloc(be, 16);
    be->free(be, x);
    be->zero(be, x, 16);
}

static void gemm_overrun(void)
{
    float *A = be->alloc(be, sizeof(float) * 4 * 4), *B = be->alloc(be, sizeof(float) * 4 * 4),
          *C = be->alloc(be, sizeof(float) * 5 * 4);
    be->gemm(be, 0, 0, 5, 4, 4, 1.0f, A, 4, B, 4, 0.0f, C, 4); /* M = 5 rows of a 4-row A (C has 5) */
}

/* An upload from host_alloc memory may still be in flight until a download, sync or event: rewriting its
 * source before one of them is the race a GPU would lose. */
static void rewrite_in_flight(void)
{
    float *h = be->host_alloc(be, 256), *x = be->alloc(be, 256), out[4];
    memset(h, 0, 256);
    be->upload(be, x, h, 256);
    h[3] = 1.0f; /* the batch handed back to the decoding thread too early */
    be->download(be, out, x, sizeof out);
}

static void rewrite_before_wait(void)
{
    float *h = be->host_alloc(be, 256), *x = be->alloc(be, 256);
    upm_event *ev = be->event_new(be);
    memset(h, 0, 256);
    be->upload(be, x, h, 256);
    be->record(be, ev);
    h[0] = 2.0f;
    be->wait(be, ev);
}

static void host_free_twice(void)
{
    void *h = be->host_alloc(be, 64);
    be->host_free(be, h);
    be->host_free(be, h);
}

int main(void)
{
    upm_err err;
    char list[256];
    upm_backend_list(list, sizeof list);
    CHECK(strncmp(list, "cpu, debug", 10) == 0); /* then ", cuda" on a machine with a GPU */
    upm_backend *x = NULL;
    CHECK(upm_backend_open("nope", NULL, &x, &err) == UPM_EUSAGE && !x);
    CHECK(strstr(err.msg, "unknown backend 'nope'") && strstr(err.msg, "backends here: cpu, debug"));
    char why[512];
    if (upm_backend_why_not("cuda", why, sizeof why)) { /* no GPU here (or no CUDA in this build): refused, saying so */
        CHECK(upm_backend_open("cuda", NULL, &x, &err) == UPM_EUSAGE && !x);
        CHECK(strstr(err.msg, "backend 'cuda'") && strstr(err.msg, why) && strstr(err.msg, "backends here: cpu, debug"));
        printf("cuda refused as it should be here: %s\n", err.msg);
    }
    CHECK(upm_backend_open("cpu", &(upm_backend_opts){.threads = -1}, &x, &err) == UPM_EUSAGE);
    setenv("UPMOE_BACKEND", "debug", 1);
    CHECK(strcmp(upm_backend_default(), "debug") == 0);
    unsetenv("UPMOE_BACKEND");
    CHECK(strcmp(upm_backend_default(), "cpu") == 0);

    /* the same numbers as the CPU backend, through upload/download only */
    upm_backend *cpu = NULL;
    CHECK(upm_backend_open("debug", &(upm_backend_opts){.threads = 1}, &be, &err) == 0 && !strcmp(be->name, "debug"));
    CHECK(upm_backend_open("cpu", &(upm_backend_opts){.threads = 1}, &cpu, &err) == 0);
    enum { M = 7, N = 5, K = 3 };
    float a[M * K], b[K * N], c1[M * N], c2[M * N];
    for (int i = 0; i < M * K; i++)
        a[i] = (float)(i % 5) - 2.0f;
    for (int i = 0; i < K * N; i++)
        b[i] = (float)(i % 3) * 0.5f;
    upm_backend *both[2] = {be, cpu};
    float *outs[2] = {c1, c2};
    for (int k = 0; k < 2; k++) {
        upm_backend *u = both[k];
        float *A = u->alloc(u, sizeof a), *B = u->alloc(u, sizeof b), *C = u->alloc(u, sizeof c1);
        u->upload(u, A, a, sizeof a);
        u->upload(u, B, b, sizeof b);
        u->gemm(u, 0, 0, M, N, K, 1.0f, A, K, B, N, 0.0f, C, N);
        u->gelu_fwd(u, C, C, M * N);
        u->download(u, outs[k], C, sizeof c1);
        u->free(u, A), u->free(u, B), u->free(u, C);
    }
    CHECK(memcmp(c1, c2, sizeof c1) == 0);
    float *p = be->alloc(be, 64);
    CHECK(p && ((uintptr_t)p >> 52 & 1)); /* tagged: not an address the host can use */
    be->free(be, p);

    CHECK(dies(deref, NULL));
    CHECK(dies(host_to_op, "axpy: x is a host pointer where backend memory belongs"));
    CHECK(dies(dev_as_host, "download: host_dst is backend memory where host memory belongs"));
    CHECK(dies(after_free, "zero: p is not in a live allocation"));
    CHECK(dies(gemm_overrun, "gemm: A runs past the end of its allocation"));
    CHECK(dies(rewrite_in_flight, "download: host_alloc memory was rewritten while its upload (256 bytes)"));
    CHECK(dies(rewrite_before_wait, "wait: host_alloc memory was rewritten"));
    CHECK(dies(host_free_twice, "host_free: p is not a live host_alloc block"));
    { /* the rule kept: rewritten after the download (and after a sync, for ordinary memory at once) */
        float *h = be->host_alloc(be, 256), *d = be->alloc(be, 256), out[4], plain[64] = {0};
        memset(h, 0, 256);
        be->upload(be, d, h, 256);
        be->download(be, out, d, sizeof out);
        h[3] = 1.0f;
        be->upload(be, d, h, 256);
        be->sync(be);
        h[3] = 2.0f;
        be->upload(be, d, plain, sizeof plain);
        plain[0] = 3.0f; /* ordinary memory is read before upload returns */
        be->download(be, out, d, sizeof out);
        CHECK(out[0] == 0.0f && out[3] == 0.0f);
        be->host_free(be, h), be->free(be, d);
    }

    /* the error path, on both backends: a model's pass runs, then an op fails (leading dimensions oneDNN
     * refuses); the status names it, sticks, and the next pass returns it instead of NaN features */
    for (int k = 0; k < 2; k++) {
        upm_backend *u = both[k];
        upm_model_config cfg = {.dim = 32, .heads = 2, .layers = 1, .mlp = 64, .vocab = 50, .max_text = 8,
                                .max_frames = 1, .moe = UPM_MOE_NONE, .layerscale_init = 1e-3f, .ln_eps = 1e-5f,
                                .gate_noise = -1};
        upm_model *m = NULL;
        CHECK(upm_model_new(&cfg, u, 1, &m, &err) == 0);
        int32_t ids[2 * 4] = {1, 2, 3, 4, 5, 6, 7, 8}, lens[2] = {4, 2};
        uint8_t at[2 * 4];
        memset(at, 0xab, sizeof at);
        upm_seq_input in = {.nseq = 2, .spe_attr = 0xab, .nseg = 1};
        in.seg[0] = (upm_seq_segment){.kind = UPM_SEG_TEXT, .L = 4, .ids = ids, .lengths = lens, .attrs = at};
        upm_pass *ps = upm_pass_new();
        CHECK(m && upm_pass_forward(m, ps, &in, NULL, &err) == 0 && u->status(u, &err) == 0);
        float *A = u->alloc(u, sizeof(float) * 16), *B = u->alloc(u, sizeof(float) * 16),
              *C = u->alloc(u, sizeof(float) * 16);
        u->gemm(u, 0, 0, 4, 4, 4, 1.0f, A, 1, B, 4, 0.0f, C, 4); /* lda 1 < K 4 */
        memset(&err, 0, sizeof err);
        CHECK(u->status(u, &err) == UPM_EBACKEND && strstr(err.msg, "gemm: oneDNN sgemm refused"));
        memset(&err, 0, sizeof err);
        CHECK(m && upm_pass_forward(m, ps, &in, NULL, &err) == UPM_EBACKEND && strstr(err.msg, "gemm"));
        CHECK(u->status(u, &err) == UPM_EBACKEND); /* still */
        u->free(u, A), u->free(u, B), u->free(u, C);
        upm_pass_free(m, ps);
        upm_model_free(m);
    }
    upm_backend_free(be);
    upm_backend_free(cpu);
    return CHECK_RESULT("test_backend_debug");
}
