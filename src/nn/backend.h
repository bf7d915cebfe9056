/* The op interface: one table of function pointers per backend (ggml-style).
 * Model and trainer code call ops only through this table and never branch on
 * the device.
 *
 * Conventions
 * - Activations are NHWC float32; an activation with `rows` = N*H*W rows and
 *   `c` channels is a row-major [rows, c] matrix.
 * - Conv weights are OHWI ([out, kh, kw, in]) internally; files hold OIHW.
 * - Every pointer passed to an op is memory of that backend (bf_backend.alloc).
 * - Activation gradients are ASSIGNED unless a `beta`/`accumulate` argument
 *   says otherwise; parameter gradients are ASSIGNED too (each parameter is
 *   used once per step in this network).
 * - Ops return BF_OK or a BF_E* code with a message (bf_last_error()).
 * - Ops may run asynchronously (CUDA); `sync` waits and reports errors.
 *
 * Contexts and threads
 * A bf_backend is a context. Everything an op needs is owned by the context:
 * its thread count (`threads`), its scratch (CPU reduction buffers; CUDA
 * stream, cuDNN/cuBLAS handles, workspaces, error flag, conv plans) and every
 * allocation made through it. Nothing is process-wide, so:
 * - One thread at a time per context. A context (and the memory, models and
 *   engines built on it) may move between threads, but calls into it must not
 *   overlap; the caller serialises them.
 * - Different contexts may run at the same time in different threads of one
 *   process, and give the same results as when they run one after another.
 * - CPU: an op runs on at most `threads` threads whichever thread calls it; it
 *   sets the calling thread's OpenMP thread count (omp_set_num_threads) to the
 *   context's on entry, which is also what bounds OpenBLAS (OpenMP build).
 *   Results depend on the thread count (batch-norm partial sums, OpenBLAS's
 *   partitioning), never on what other contexts do.
 * - CUDA: each context has its own stream and handles on the device it was
 *   created for; every entry point makes that device current for the calling
 *   thread first, so any thread may call. Contexts share the GPU.
 * Memory of one context must not be passed to another.
 */
#ifndef BF_BACKEND_H
#define BF_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "bf_core.h"

typedef struct bf_conv_desc {
  int n, h, w, c;      /* input NHWC */
  int k;               /* output channels */
  int kh, kw;          /* kernel */
  int stride, pad;     /* same in both dimensions */
  int oh, ow;          /* output spatial size, filled by bf_conv_desc_init */
} bf_conv_desc;

/* Fills oh/ow; fails on shapes that give an empty output. */
int bf_conv_desc_init(bf_conv_desc *d, int n, int h, int w, int c, int k, int kh, int kw, int stride, int pad);

typedef struct bf_pool_desc {
  int n, h, w, c;
  int kernel, stride, pad;
  int oh, ow;
} bf_pool_desc;

int bf_pool_desc_init(bf_pool_desc *d, int n, int h, int w, int c, int kernel, int stride, int pad);

typedef struct bf_sgd_params {
  float lr, momentum, weight_decay;
  int nesterov;
} bf_sgd_params;

typedef struct bf_backend bf_backend;
/* A fused inference convolution prepared for one shape (backend private). */
typedef struct bf_conv_infer bf_conv_infer;

struct bf_backend {
  const char *name; /* "cpu", "cuda" */
  int threads;      /* CPU threads this context computes with (CUDA: 1) */
  void *impl;       /* backend private state */

  /* ---- memory ---- */
  void *(*alloc)(bf_backend *be, size_t bytes); /* NULL + message on failure */
  void (*free)(bf_backend *be, void *p);
  int (*upload)(bf_backend *be, void *dst, const void *host_src, size_t bytes);
  int (*download)(bf_backend *be, void *host_dst, const void *src, size_t bytes);
  int (*zero)(bf_backend *be, void *dst, size_t bytes);
  int (*copy)(bf_backend *be, void *dst, const void *src, size_t bytes);
  int (*sync)(bf_backend *be);
  void (*destroy)(bf_backend *be);
  /* Host staging memory for upload_async (pinned on CUDA; NULL + message on
   * failure) and its release. */
  void *(*host_alloc)(bf_backend *be, size_t bytes);
  void (*host_free)(bf_backend *be, void *p);
  /* Queues a copy from host_alloc memory and returns at once (CUDA: on a copy
   * stream; later ops wait for it). host_src must stay unchanged until the
   * next sync or download. Waits for nothing and reports nothing itself. */
  int (*upload_async)(bf_backend *be, void *dst, const void *host_src, size_t bytes);

  /* ---- convolution (no bias) ---- */
  /* *bytes = scratch each conv call of this shape needs; the caller passes at
   * least this much. Called at planning: a shape the backend cannot run
   * (e.g. no cuDNN plan) fails here, not at the first conv. */
  int (*conv2d_workspace)(bf_backend *be, const bf_conv_desc *d, size_t *bytes);
  /* y[n,oh,ow,k] = conv(x[n,h,w,c], w[k,kh,kw,c]) */
  int (*conv2d_forward)(bf_backend *be, const bf_conv_desc *d, const float *x, const float *w, float *y,
                        void *ws, size_t ws_bytes);
  /* dx = beta*dx + conv_transpose(dy, w); beta is 0 or 1 */
  int (*conv2d_backward_data)(bf_backend *be, const bf_conv_desc *d, const float *dy, const float *w, float *dx,
                              float beta, void *ws, size_t ws_bytes);
  /* dw = grad wrt w (assigned) */
  int (*conv2d_backward_filter)(bf_backend *be, const bf_conv_desc *d, const float *x, const float *dy, float *dw,
                                void *ws, size_t ws_bytes);

  /* ---- fused inference convolution (eval only, no backward) ----
   * y = act(conv(x, w) + bias[k] + (residual ? residual : 0)), act = ReLU if
   * relu: a conv whose batch norm was folded into it, with the block's
   * residual add and ReLU in its epilogue.
   * conv_infer_create prepares shape d once: the weights (OHWI, this
   * backend's memory) are packed into the layout the kernel wants (CPU with
   * oneDNN) or used as they are (CUDA, the CPU fallback), and *ws_bytes is
   * the scratch each forward call needs. w and bias must outlive the plan.
   * has_residual fixes whether forward gets a residual.
   * conv_infer_forward allocates nothing. residual may alias y (the engine
   * writes a block's output over its shortcut); x must not. */
  int (*conv_infer_create)(bf_backend *be, const bf_conv_desc *d, const float *w, const float *bias, int relu,
                           int has_residual, bf_conv_infer **out, size_t *ws_bytes);
  int (*conv_infer_forward)(bf_backend *be, bf_conv_infer *p, const float *x, const float *residual, float *y,
                            void *ws, size_t ws_bytes);
  void (*conv_infer_free)(bf_backend *be, bf_conv_infer *p);

  /* ---- batch norm over [rows, c], optionally fused with residual add and ReLU ----
   * train: batch statistics (biased variance for normalisation), running stats
   *   updated with momentum and unbiased variance (PyTorch semantics);
   *   saves mean and 1/sqrt(var+eps) per channel for the backward pass.
   * y = act(gamma * xhat + beta + (residual ? residual : 0)), act = ReLU if relu. */
  int (*batchnorm_forward_train)(bf_backend *be, int rows, int c, const float *x, const float *gamma,
                                 const float *beta, const float *residual, int relu, float *y, float *save_mean,
                                 float *save_invstd, float *running_mean, float *running_var, float momentum,
                                 float eps);
  int (*batchnorm_forward_eval)(bf_backend *be, int rows, int c, const float *x, const float *gamma,
                                const float *beta, const float *running_mean, const float *running_var,
                                const float *residual, int relu, float eps, float *y);
  /* Gradient through a train-mode batch norm. If relu_out is non-NULL, dy is
   * first masked by (relu_out > 0) (the fused ReLU's output). dx assigned;
   * dgamma, dbeta assigned. */
  int (*batchnorm_backward)(bf_backend *be, int rows, int c, const float *x, const float *dy,
                            const float *relu_out, const float *gamma, const float *save_mean,
                            const float *save_invstd, float *dx, float *dgamma, float *dbeta);
  /* Gradient through an eval-mode batch norm (running statistics held
   * constant, as PyTorch's model.eval()): dx = dy*gamma/sqrt(var+eps),
   * dgamma = sum(dy*xhat), dbeta = sum(dy), dy masked as above. dx, dgamma,
   * dbeta assigned; the running statistics are only read. */
  int (*batchnorm_backward_eval)(bf_backend *be, int rows, int c, const float *x, const float *dy,
                                 const float *relu_out, const float *gamma, const float *running_mean,
                                 const float *running_var, float eps, float *dx, float *dgamma, float *dbeta);

  /* ---- elementwise ---- */
  int (*relu_forward)(bf_backend *be, size_t n, const float *x, float *y);
  /* dx = dy * (y > 0); dx may alias dy */
  int (*relu_backward)(bf_backend *be, size_t n, const float *y, const float *dy, float *dx);
  /* y = act(x + bias[ch] + residual) over [rows, c]: the epilogue of a conv
   * whose batch norm was folded into it (inference engines). residual may be
   * NULL; y may alias x. */
  int (*bias_act_forward)(bf_backend *be, int rows, int c, const float *x, const float *bias,
                          const float *residual, int relu, float *y);
  /* y = a + b (any of them may alias) */
  int (*add)(bf_backend *be, size_t n, const float *a, const float *b, float *y);

  /* ---- fake quantisation of the butterfly unit's output (quantisation-aware
   * training; formulas in quant_math.h, shared with bf-client's encoder) ----
   * clip: 1 float, backend memory (the model's learned clip);
   * s = bf_quant_scale(*clip, bits), q = bf_quant_code(x, s, 2^bits - 1),
   * y = q * s, and codes[i] = q when codes is not NULL. bits in 2..8. y may
   * alias x. */
  int (*quant_forward)(bf_backend *be, size_t n, const float *x, const float *clip, int bits, float *y,
                       uint8_t *codes);
  /* Straight-through estimator: dx = dy where bf_quant_passes(x, *clip),
   * else 0; *dclip (1 float, backend memory, assigned) = sum of
   * dy * bf_quant_dclip(x, *clip, bits), summed in double in a fixed order
   * (the same for every thread count). dx may alias dy. */
  int (*quant_backward)(bf_backend *be, size_t n, const float *x, const float *clip, int bits, const float *dy,
                        float *dx, float *dclip);

  /* ---- pooling ---- */
  int (*maxpool_forward)(bf_backend *be, const bf_pool_desc *d, const float *x, float *y);
  /* dx assigned; the argmax is recomputed from x (first maximum in kh,kw scan
   * order, as PyTorch) */
  int (*maxpool_backward)(bf_backend *be, const bf_pool_desc *d, const float *x, const float *dy, float *dx);
  /* y[n,c] = mean over h,w of x[n,h,w,c] */
  int (*avgpool_global_forward)(bf_backend *be, int n, int hw, int c, const float *x, float *y);
  int (*avgpool_global_backward)(bf_backend *be, int n, int hw, int c, const float *dy, float *dx);

  /* ---- linear: y[n,o] = x[n,i] w[o,i]^T + b[o] ---- */
  int (*linear_forward)(bf_backend *be, int n, int in, int out, const float *x, const float *w, const float *b,
                        float *y);
  /* dx (assigned, may be NULL), dw, db (assigned) */
  int (*linear_backward)(bf_backend *be, int n, int in, int out, const float *x, const float *w, const float *dy,
                         float *dx, float *dw, float *db);

  /* ---- loss: mean softmax cross-entropy with label smoothing ----
   * labels int32 [n] in [0, c). loss (1 float, backend memory) = mean over n;
   * dlogits (may be NULL) = d loss / d logits. Labels out of range -> BF_EINVAL. */
  int (*softmax_xent)(bf_backend *be, int n, int c, const float *logits, const int32_t *labels, float smoothing,
                      float *loss, float *dlogits);

  /* *correct (1 float, backend memory) = number of the n rows whose argmax
   * is the label; argmax = the scan am = 0, am = l[j] > l[am] ? j : am (first
   * maximum; a NaN never replaces and is never replaced). A label out of
   * range never matches (softmax_xent reports it). */
  int (*count_correct)(bf_backend *be, int n, int c, const float *logits, const int32_t *labels, float *correct);

  /* ---- optimizer: PyTorch SGD (dampening 0) over a contiguous range ----
   * g' = g + wd*p; m = momentum*m + g'; step = nesterov ? g' + momentum*m : m;
   * p -= lr*step. With momentum == 0, step = g' and m is untouched. */
  int (*sgd_step)(bf_backend *be, size_t n, float *p, const float *g, float *m, const bf_sgd_params *hp);

  /* ---- data: NHWC uint8 -> normalised float32 ((x/255 - mean[ch]) / std[ch]) ---- */
  int (*normalize_u8)(bf_backend *be, size_t pixels, const uint8_t *x, const float mean[3], const float std[3],
                      float *y);

  /* ---- collectives of data-parallel training (src/train/dist.c) ----
   * NULL on a backend whose memory the host's MPI reads directly (cpu): the
   * caller then runs MPI on the pointers. A device backend fills them with
   * its own transport (cuda: NCCL, on the context's stream), bootstrapped by
   * the caller: rank 0 writes comm_id_bytes bytes with comm_id_create, the
   * caller broadcasts them, every rank calls comm_init. allreduce works in
   * place on n elements of this backend's memory (f64: doubles, else floats),
   * summing or (mean) averaging over the ranks, after every op queued before. */
  size_t comm_id_bytes;
  int (*comm_id_create)(bf_backend *be, void *id);
  int (*comm_init)(bf_backend *be, const void *id, int nranks, int rank);
  int (*allreduce)(bf_backend *be, void *buf, size_t n, int f64, int mean);

  /* Synchronised batch norm: NULL (every process normalises with its own
   * batch) unless data-parallel training sets it. Then the train-mode batch
   * norm hands its per-channel double sums (this backend's memory; forward:
   * sum x, sum x^2; backward: sum g, sum g*x; n = 2c) to bn_sync, which sums
   * them over the bn_sync_ranks processes in place, and normalises with
   * rows * bn_sync_ranks values. dgamma and dbeta stay this process's own
   * (the gradient average adds them up, as PyTorch's SyncBatchNorm). */
  int (*bn_sync)(void *ctx, double *sums, size_t n);
  void *bn_sync_ctx;
  int bn_sync_ranks;
};

/* Backend registry: "cpu" always; "cuda" when built with BF_CUDA.
 * Creates a new context (see "Contexts and threads" above); threads <= 0
 * means all cores. Creating a context changes no process-wide setting. */
int bf_backend_create(bf_backend **out, const char *name, int threads);
/* The same with an arithmetic: "fp32"; "bf16" (mixed precision: bf16
 * convolutions, fp32 master weights, statistics and loss) and "tf32" on cuda
 * only. NULL: fp32, or on cuda the environment variable BF_CUDA_MATH (tools
 * and tests). */
int bf_backend_create_precision(bf_backend **out, const char *name, int threads, const char *precision);
void bf_backend_destroy(bf_backend *be);
/* Comma-separated list of compiled-in backends, e.g. "cpu,cuda". */
const char *bf_backend_list(void);
/* Devices the backend can use in this process: 1 for cpu, the visible GPUs
 * for cuda (an error when cuda is not compiled in). */
int bf_backend_device_count(const char *name, int *count);

int bf_backend_cpu_create(bf_backend **out, int threads);
#ifdef BF_HAVE_CUDA
int bf_backend_cuda_create(bf_backend **out, int threads, const char *precision);
int bf_backend_cuda_device_count(int *count);
#endif

/* Placement of worker processes (bf-search --jobs, Slurm tasks): callers
 * ask here instead of testing the backend's name.
 * A backend with per-process devices (cuda) pins each worker to one of
 * `ids` by setting the environment variable `env` to it; a backend without
 * (cpu: n = 0, env NULL) shares the host's cores between the workers. */
#define BF_BACKEND_MAX_WORKER_DEVICES 16
typedef struct bf_backend_placement {
  int per_process_device; /* 1: one device per worker (and per Slurm task) */
  const char *env;        /* e.g. "CUDA_VISIBLE_DEVICES"; NULL without per-process devices */
  int n;                  /* devices the workers can be pinned to */
  char ids[BF_BACKEND_MAX_WORKER_DEVICES][32];
} bf_backend_placement;
/* Does `name` run each process on one device of its own? (No device query:
 * usable where the devices are not visible, e.g. when writing a Slurm script.) */
int bf_backend_per_process_device(const char *name);
/* The devices of this host that workers can be pinned to (the visible ones:
 * `env` if it is set, else all). An error when a per-process-device backend
 * sees none. */
int bf_backend_worker_placement(const char *name, bf_backend_placement *out);

#endif
