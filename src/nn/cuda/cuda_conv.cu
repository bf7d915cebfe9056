/* Convolutions with cuDNN 9 (the legacy-but-supported cudnnConvolution* API):
 * NHWC float activations, NHWC filter format (= KRSC = our OHWI weights), no
 * layout conversions anywhere.
 *
 * Algorithm cache: the first time a shape (a bf_conv_desc) is seen, descriptors
 * are built and one algorithm per direction (forward, backward data, backward
 * filter) is chosen with the cudnnGet*Algorithm_v7 heuristics (no benchmarking,
 * no device memory needed, deterministic choice for a given cuDNN + GPU). The
 * plan is kept in a small table and reused; the model asks for every shape at
 * plan time (conv2d_workspace), so the training step only looks plans up.
 *
 * Workspace: conv2d_workspace gives the max over the three chosen algorithms
 * for that shape (and fails there, at planning, when the plan cannot be
 * built), so the model's single workspace arena (max over all layers)
 * covers every call. Algorithms needing more than CONV_WS_CAP are skipped
 * unless no other algorithm works for that shape.
 *
 * Precision: in FP32 mode the convolution descriptor carries CUDNN_FMA_MATH
 * (CUDNN_DEFAULT_MATH would allow TF32 tensor cores for float data on sm80+),
 * and heuristic results that need tensor-op math are skipped.
 *
 * BF16 mode (mixed precision): the model's tensors stay float32 (master
 * weights, BN statistics, loss, optimizer); each conv rounds its inputs to
 * bf16 copies (activations and weights, round to nearest even), runs cuDNN on
 * bf16 tensors with float accumulation (CUDNN_DATA_FLOAT compute type, tensor
 * cores) and widens the bf16 result back to float. The copies live in the
 * caller's workspace, after cuDNN's part: conv2d_workspace includes them, so
 * the step allocates nothing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_bf16.h>

#include "cuda_common.h"

#define CONV_WS_CAP ((size_t)512 << 20)

static int same_desc(const bf_conv_desc *a, const bf_conv_desc *b) {
  return a->n == b->n && a->h == b->h && a->w == b->w && a->c == b->c && a->k == b->k && a->kh == b->kh &&
         a->kw == b->kw && a->stride == b->stride && a->pad == b->pad && a->oh == b->oh && a->ow == b->ow;
}

static void plan_release(cuda_conv_plan *p) {
  if (p->xd) cudnnDestroyTensorDescriptor(p->xd);
  if (p->yd) cudnnDestroyTensorDescriptor(p->yd);
  if (p->wd) cudnnDestroyFilterDescriptor(p->wd);
  if (p->cd) cudnnDestroyConvolutionDescriptor(p->cd);
  memset(p, 0, sizeof *p);
}

int cuda_conv_init(bf_backend *be) {
  cuda_impl *im = cuda_im(be);
  im->plans = NULL;
  im->n_plans = im->cap_plans = 0;
  return BF_OK;
}

void cuda_conv_destroy(bf_backend *be) {
  cuda_impl *im = cuda_im(be);
  if (!im) return;
  for (int i = 0; i < im->n_plans; i++) plan_release(&im->plans[i]);
  free(im->plans);
  im->plans = NULL;
  im->n_plans = im->cap_plans = 0;
}

/* FP32 mode must not run TF32/FP16 tensor-op kernels; no mode accepts the
 * down-conversion to FP16. */
static int math_ok(const cuda_impl *im, cudnnMathType_t m) {
  if (m == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION) return 0;
  if (im->precision == CUDA_PREC_FP32 && m == CUDNN_TENSOR_OP_MATH) return 0;
  return 1;
}

/* One direction's candidates, whatever its cuDNN enum type: the heuristic
 * results as (algo, status, math type) and a workspace query per algorithm. */
#define CONV_MAX_ALGOS 8
static_assert(CUDNN_CONVOLUTION_FWD_ALGO_COUNT <= CONV_MAX_ALGOS && CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT <= CONV_MAX_ALGOS &&
                  CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT <= CONV_MAX_ALGOS,
              "conv_dir holds every algorithm of each direction");

typedef struct conv_dir {
  const char *name; /* "forward", "backward-data", "backward-filter" */
  int n_algos;      /* size of the direction's algorithm enum */
  int got;
  int algo[CONV_MAX_ALGOS];
  cudnnStatus_t status[CONV_MAX_ALGOS];
  cudnnMathType_t math[CONV_MAX_ALGOS];
} conv_dir;

static cudnnStatus_t dir_ws(cuda_impl *im, const cuda_conv_plan *p, int dir, int algo, size_t *ws) {
  switch (dir) {
  case 0:
    return cudnnGetConvolutionForwardWorkspaceSize(im->cudnn, p->xd, p->wd, p->cd, p->yd,
                                                   (cudnnConvolutionFwdAlgo_t)algo, ws);
  case 1:
    return cudnnGetConvolutionBackwardDataWorkspaceSize(im->cudnn, p->wd, p->yd, p->cd, p->xd,
                                                        (cudnnConvolutionBwdDataAlgo_t)algo, ws);
  default:
    return cudnnGetConvolutionBackwardFilterWorkspaceSize(im->cudnn, p->xd, p->yd, p->cd, p->wd,
                                                          (cudnnConvolutionBwdFilterAlgo_t)algo, ws);
  }
}

/* Copies a perf array of any direction into d (the three perf structs share
 * the fields used here). */
template <typename Perf>
static void dir_fill(conv_dir *d, const Perf *perf, int got) {
  d->got = got < CONV_MAX_ALGOS ? got : CONV_MAX_ALGOS;
  for (int i = 0; i < d->got; i++) {
    d->algo[i] = (int)perf[i].algo;
    d->status[i] = perf[i].status;
    d->math[i] = perf[i].mathType;
  }
}

/* Runs the heuristics of direction dir (0 forward, 1 backward data, 2
 * backward filter) into d. */
static int dir_heuristics(cuda_impl *im, const cuda_conv_plan *p, int dir, conv_dir *d, const char *op) {
  int got = 0;
  if (dir == 0) {
    cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    *d = conv_dir{"forward", CUDNN_CONVOLUTION_FWD_ALGO_COUNT, 0, {}, {}, {}};
    CUDNN_CHECK(op, cudnnGetConvolutionForwardAlgorithm_v7(im->cudnn, p->xd, p->wd, p->cd, p->yd,
                                                           CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &got, perf));
    dir_fill(d, perf, got);
  } else if (dir == 1) {
    cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    *d = conv_dir{"backward-data", CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, 0, {}, {}, {}};
    CUDNN_CHECK(op, cudnnGetConvolutionBackwardDataAlgorithm_v7(im->cudnn, p->wd, p->yd, p->cd, p->xd,
                                                                CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &got, perf));
    dir_fill(d, perf, got);
  } else {
    cudnnConvolutionBwdFilterAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    *d = conv_dir{"backward-filter", CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, 0, {}, {}, {}};
    CUDNN_CHECK(op, cudnnGetConvolutionBackwardFilterAlgorithm_v7(
                        im->cudnn, p->xd, p->yd, p->cd, p->wd, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &got, perf));
    dir_fill(d, perf, got);
  }
  return BF_OK;
}

/* One rule for the three directions: the first heuristic result that is
 * supported, allowed by the precision mode, and whose workspace (queried, not
 * taken from the perf struct) fits CONV_WS_CAP; else the supported result with
 * the smallest workspace; else every algorithm of the enum in order. */
static int pick_algo(cuda_impl *im, const cuda_conv_plan *p, int dir, int *algo, size_t *ws_out, const char *op) {
  conv_dir d;
  BF_TRY(dir_heuristics(im, p, dir, &d, op));
  int found = 0, best = 0;
  size_t best_ws = 0;
  for (int i = 0; i < d.got; i++) {
    size_t ws = 0;
    if (d.status[i] != CUDNN_STATUS_SUCCESS || !math_ok(im, d.math[i])) continue;
    if (dir_ws(im, p, dir, d.algo[i], &ws) != CUDNN_STATUS_SUCCESS) continue;
    if (!found || ws < best_ws) best = d.algo[i], best_ws = ws, found = 1;
    if (ws <= CONV_WS_CAP) {
      best = d.algo[i], best_ws = ws;
      break;
    }
  }
  for (int a = 0; !found && a < d.n_algos; a++) {
    size_t ws = 0;
    if (dir_ws(im, p, dir, a, &ws) == CUDNN_STATUS_SUCCESS) best = a, best_ws = ws, found = 1;
  }
  if (!found) return bf_error(BF_EBACKEND, "%s: cuDNN offers no %s algorithm for this shape", op, d.name);
  *algo = best;
  *ws_out = best_ws;
  return BF_OK;
}

/* Descriptors + algorithm choice for one shape. On failure p is released. */
static int plan_build(cuda_impl *im, const bf_conv_desc *d, cuda_conv_plan *p, const char *op) {
  memset(p, 0, sizeof *p);
  p->key = *d;
  int rc = BF_OK;
  do {
    cudnnStatus_t s;
#define PLAN_TRY(call)                                                                                            \
  if ((s = (call)) != CUDNN_STATUS_SUCCESS) {                                                                     \
    rc = bf_error(BF_EBACKEND, "%s: %s failed: %s (%s:%d)", op, #call, cudnnGetErrorString(s), __FILE__, __LINE__); \
    break;                                                                                                        \
  }
    PLAN_TRY(cudnnCreateTensorDescriptor(&p->xd));
    PLAN_TRY(cudnnCreateTensorDescriptor(&p->yd));
    PLAN_TRY(cudnnCreateFilterDescriptor(&p->wd));
    PLAN_TRY(cudnnCreateConvolutionDescriptor(&p->cd));
    /* Dimensions are always given as N,C,H,W; the format says the memory
     * order: NHWC tensors, and for filters NHWC means K,R,S,C = our OHWI. */
    const cudnnDataType_t dt = im->precision == CUDA_PREC_BF16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT;
    PLAN_TRY(cudnnSetTensor4dDescriptor(p->xd, CUDNN_TENSOR_NHWC, dt, d->n, d->c, d->h, d->w));
    PLAN_TRY(cudnnSetTensor4dDescriptor(p->yd, CUDNN_TENSOR_NHWC, dt, d->n, d->k, d->oh, d->ow));
    PLAN_TRY(cudnnSetFilter4dDescriptor(p->wd, dt, CUDNN_TENSOR_NHWC, d->k, d->c, d->kh, d->kw));
    /* Cross-correlation = what deep-learning frameworks call convolution. */
    PLAN_TRY(cudnnSetConvolution2dDescriptor(p->cd, d->pad, d->pad, d->stride, d->stride, 1, 1,
                                             CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    /* the compute type stays float in every mode: bf16 data, float accumulation */
    PLAN_TRY(cudnnSetConvolutionMathType(p->cd, im->precision == CUDA_PREC_FP32   ? CUDNN_FMA_MATH
                                                : im->precision == CUDA_PREC_BF16 ? CUDNN_TENSOR_OP_MATH
                                                                                  : CUDNN_DEFAULT_MATH));
    int on = 0, oc = 0, oh = 0, ow = 0;
    PLAN_TRY(cudnnGetConvolution2dForwardOutputDim(p->cd, p->xd, p->wd, &on, &oc, &oh, &ow));
#undef PLAN_TRY
    if (on != d->n || oc != d->k || oh != d->oh || ow != d->ow) {
      rc = bf_error(BF_EINVAL, "%s: cuDNN computes output %dx%dx%dx%d, the descriptor says %dx%dx%dx%d", op, on, oh,
                    ow, oc, d->n, d->oh, d->ow, d->k);
      break;
    }
    /* A direction without a usable algorithm is remembered, not fatal: the
     * stem's backward data, e.g., is never called. */
    int a = 0;
    if ((p->err_fwd = pick_algo(im, p, 0, &a, &p->ws_fwd, op)))
      snprintf(p->msg_fwd, sizeof p->msg_fwd, "%s", bf_last_error());
    p->fwd = (cudnnConvolutionFwdAlgo_t)a;
    a = 0;
    if ((p->err_bwd_data = pick_algo(im, p, 1, &a, &p->ws_bwd_data, op)))
      snprintf(p->msg_bwd_data, sizeof p->msg_bwd_data, "%s", bf_last_error());
    p->bwd_data = (cudnnConvolutionBwdDataAlgo_t)a;
    a = 0;
    if ((p->err_bwd_filter = pick_algo(im, p, 2, &a, &p->ws_bwd_filter, op)))
      snprintf(p->msg_bwd_filter, sizeof p->msg_bwd_filter, "%s", bf_last_error());
    p->bwd_filter = (cudnnConvolutionBwdFilterAlgo_t)a;
  } while (0);
  if (rc) plan_release(p);
  return rc;
}

/* The cached plan for d, built on first use. */
static int plan_get(bf_backend *be, const bf_conv_desc *d, const char *op, cuda_conv_plan **out) {
  cuda_impl *im = cuda_im(be);
  *out = NULL;
  for (int i = 0; i < im->n_plans; i++)
    if (same_desc(&im->plans[i].key, d)) {
      *out = &im->plans[i];
      return BF_OK;
    }
  if (d->n <= 0 || d->c <= 0 || d->k <= 0 || d->oh <= 0 || d->ow <= 0)
    return bf_error(BF_EINVAL, "%s: bad conv descriptor (use bf_conv_desc_init)", op);
  if (im->n_plans == im->cap_plans) {
    int cap = im->cap_plans ? 2 * im->cap_plans : 64;
    cuda_conv_plan *np = (cuda_conv_plan *)realloc(im->plans, (size_t)cap * sizeof *np);
    if (!np) return bf_error(BF_ENOMEM, "%s: out of memory growing the conv plan cache", op);
    im->plans = np;
    im->cap_plans = cap;
  }
  BF_TRY(plan_build(im, d, &im->plans[im->n_plans], op));
  *out = &im->plans[im->n_plans++];
  return BF_OK;
}

/* ---------------- bf16 staging ----------------
 * Workspace layout in BF16 mode: [cuDNN's part | x16 | w16 | y16], each part
 * 256-byte aligned; x16, w16, y16 hold bf16 copies of x (or dx), w (or dw),
 * y (or dy). */
static size_t align256(size_t b) { return (b + 255) / 256 * 256; }

typedef struct bf16_ws {
  void *lib;  /* cuDNN's workspace */
  __nv_bfloat16 *x, *w, *y;
} bf16_ws;

static size_t stage_bytes(const bf_conv_desc *d) {
  return align256((size_t)d->n * d->h * d->w * d->c * 2) + align256((size_t)d->k * d->kh * d->kw * d->c * 2) +
         align256((size_t)d->n * d->oh * d->ow * d->k * 2);
}

static size_t lib_ws(const cuda_conv_plan *p) {
  size_t m = p->err_fwd ? 0 : p->ws_fwd;
  if (!p->err_bwd_data && p->ws_bwd_data > m) m = p->ws_bwd_data;
  if (!p->err_bwd_filter && p->ws_bwd_filter > m) m = p->ws_bwd_filter;
  return m;
}

static size_t total_ws(const cuda_impl *im, const cuda_conv_plan *p) {
  return im->precision == CUDA_PREC_BF16 ? align256(lib_ws(p)) + stage_bytes(&p->key) : lib_ws(p);
}

static bf16_ws split_ws(const cuda_conv_plan *p, void *ws) {
  const bf_conv_desc *d = &p->key;
  char *b = (char *)ws;
  bf16_ws s;
  s.lib = b;
  b += align256(lib_ws(p));
  s.x = (__nv_bfloat16 *)b;
  b += align256((size_t)d->n * d->h * d->w * d->c * 2);
  s.w = (__nv_bfloat16 *)b;
  b += align256((size_t)d->k * d->kh * d->kw * d->c * 2);
  s.y = (__nv_bfloat16 *)b;
  return s;
}

__global__ void k_to_bf16(size_t n, const float *__restrict__ x, __nv_bfloat16 *__restrict__ y) {
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    y[i] = __float2bfloat16_rn(x[i]);
}

/* y = widen(x), or y += widen(x) when accumulate (y is not read otherwise, so
 * it may hold garbage, as cuDNN's beta 0). */
__global__ void k_from_bf16(size_t n, const __nv_bfloat16 *__restrict__ x, float *__restrict__ y, int accumulate) {
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    const float v = __bfloat162float(x[i]);
    y[i] = accumulate ? y[i] + v : v;
  }
}

static int to_bf16(cudaStream_t st, size_t n, const float *x, __nv_bfloat16 *y, const char *op) {
  k_to_bf16<<<cuda_blocks(n, CUDA_THREADS), CUDA_THREADS, 0, st>>>(n, x, y);
  CUDA_LAUNCH_CHECK(op, "k_to_bf16");
  return BF_OK;
}

static int from_bf16(cudaStream_t st, size_t n, const __nv_bfloat16 *x, float *y, int accumulate, const char *op) {
  k_from_bf16<<<cuda_blocks(n, CUDA_THREADS), CUDA_THREADS, 0, st>>>(n, x, y, accumulate);
  CUDA_LAUNCH_CHECK(op, "k_from_bf16");
  return BF_OK;
}

static int check_ws(const char *op, size_t need, const void *ws, size_t ws_bytes) {
  if (need && (!ws || ws_bytes < need))
    return bf_error(BF_EINVAL, "%s: workspace of %zu bytes given, %zu needed", op, ws_bytes, need);
  return BF_OK;
}

int cuda_conv2d_workspace(bf_backend *be, const bf_conv_desc *d, size_t *bytes) {
  cuda_conv_plan *p;
  *bytes = 0;
  BF_TRY(plan_get(be, d, "conv2d_workspace", &p));
  *bytes = total_ws(cuda_im(be), p);
  return BF_OK;
}

int cuda_conv2d_forward(bf_backend *be, const bf_conv_desc *d, const float *x, const float *w, float *y, void *ws,
                        size_t ws_bytes) {
  const char *op = "conv2d_forward";
  cuda_impl *im = cuda_im(be);
  cuda_conv_plan *p;
  BF_TRY(plan_get(be, d, op, &p));
  if (p->err_fwd) return bf_error(p->err_fwd, "%s: %s", op, p->msg_fwd);
  const float one = 1.0f, zero = 0.0f;
  if (im->precision != CUDA_PREC_BF16) {
    BF_TRY(check_ws(op, p->ws_fwd, ws, ws_bytes));
    CUDNN_CHECK(op, cudnnConvolutionForward(im->cudnn, &one, p->xd, x, p->wd, w, p->cd, p->fwd, ws, p->ws_fwd, &zero,
                                            p->yd, y));
    return BF_OK;
  }
  BF_TRY(check_ws(op, total_ws(im, p), ws, ws_bytes));
  bf16_ws s = split_ws(p, ws);
  const size_t nx = (size_t)d->n * d->h * d->w * d->c, nw = (size_t)d->k * d->kh * d->kw * d->c,
               ny = (size_t)d->n * d->oh * d->ow * d->k;
  BF_TRY(to_bf16(im->stream, nx, x, s.x, op));
  BF_TRY(to_bf16(im->stream, nw, w, s.w, op));
  CUDNN_CHECK(op, cudnnConvolutionForward(im->cudnn, &one, p->xd, s.x, p->wd, s.w, p->cd, p->fwd, s.lib, p->ws_fwd,
                                          &zero, p->yd, s.y));
  return from_bf16(im->stream, ny, s.y, y, 0, op);
}

int cuda_conv2d_backward_data(bf_backend *be, const bf_conv_desc *d, const float *dy, const float *w, float *dx,
                              float beta, void *ws, size_t ws_bytes) {
  const char *op = "conv2d_backward_data";
  cuda_impl *im = cuda_im(be);
  if (beta != 0.0f && beta != 1.0f) return bf_error(BF_EINVAL, "%s: beta must be 0 or 1, got %g", op, (double)beta);
  cuda_conv_plan *p;
  BF_TRY(plan_get(be, d, op, &p));
  if (p->err_bwd_data) return bf_error(p->err_bwd_data, "%s: %s", op, p->msg_bwd_data);
  const float one = 1.0f, zero = 0.0f;
  if (im->precision != CUDA_PREC_BF16) {
    BF_TRY(check_ws(op, p->ws_bwd_data, ws, ws_bytes));
    /* beta 0: dx is overwritten without being read (cuDNN's blending rule),
     * so a dx holding NaN garbage is fine; beta 1: dx += conv_transpose(dy, w). */
    CUDNN_CHECK(op, cudnnConvolutionBackwardData(im->cudnn, &one, p->wd, w, p->yd, dy, p->cd, p->bwd_data, ws,
                                                 p->ws_bwd_data, &beta, p->xd, dx));
    return BF_OK;
  }
  /* bf16: the result is computed into the bf16 x slot with beta 0, then
   * widened into dx (added when beta is 1), so the accumulation is float. */
  BF_TRY(check_ws(op, total_ws(im, p), ws, ws_bytes));
  bf16_ws s = split_ws(p, ws);
  const size_t nx = (size_t)d->n * d->h * d->w * d->c, nw = (size_t)d->k * d->kh * d->kw * d->c,
               ny = (size_t)d->n * d->oh * d->ow * d->k;
  BF_TRY(to_bf16(im->stream, ny, dy, s.y, op));
  BF_TRY(to_bf16(im->stream, nw, w, s.w, op));
  CUDNN_CHECK(op, cudnnConvolutionBackwardData(im->cudnn, &one, p->wd, s.w, p->yd, s.y, p->cd, p->bwd_data, s.lib,
                                               p->ws_bwd_data, &zero, p->xd, s.x));
  return from_bf16(im->stream, nx, s.x, dx, beta != 0.0f, op);
}

int cuda_conv2d_backward_filter(bf_backend *be, const bf_conv_desc *d, const float *x, const float *dy, float *dw,
                                void *ws, size_t ws_bytes) {
  const char *op = "conv2d_backward_filter";
  cuda_impl *im = cuda_im(be);
  cuda_conv_plan *p;
  BF_TRY(plan_get(be, d, op, &p));
  if (p->err_bwd_filter) return bf_error(p->err_bwd_filter, "%s: %s", op, p->msg_bwd_filter);
  const float one = 1.0f, zero = 0.0f;
  if (im->precision != CUDA_PREC_BF16) {
    BF_TRY(check_ws(op, p->ws_bwd_filter, ws, ws_bytes));
    CUDNN_CHECK(op, cudnnConvolutionBackwardFilter(im->cudnn, &one, p->xd, x, p->yd, dy, p->cd, p->bwd_filter, ws,
                                                   p->ws_bwd_filter, &zero, p->wd, dw));
    return BF_OK;
  }
  /* bf16 in, bf16 weight gradient widened into the float gradient buffer
   * (the master weights and the optimizer stay float). */
  BF_TRY(check_ws(op, total_ws(im, p), ws, ws_bytes));
  bf16_ws s = split_ws(p, ws);
  const size_t nx = (size_t)d->n * d->h * d->w * d->c, nw = (size_t)d->k * d->kh * d->kw * d->c,
               ny = (size_t)d->n * d->oh * d->ow * d->k;
  BF_TRY(to_bf16(im->stream, nx, x, s.x, op));
  BF_TRY(to_bf16(im->stream, ny, dy, s.y, op));
  CUDNN_CHECK(op, cudnnConvolutionBackwardFilter(im->cudnn, &one, p->xd, s.x, p->yd, s.y, p->cd, p->bwd_filter, s.lib,
                                                 p->ws_bwd_filter, &zero, p->wd, s.w));
  return from_bf16(im->stream, nw, s.w, dw, 0, op);
}
