/* Batch norm over an NHWC activation seen as a row-major [rows, c] matrix,
 * with our own kernels reproducing cpu/cpu_batchnorm.c:
 *   - per-channel sums accumulated in double (as the CPU does), in a fixed
 *     order, so results are deterministic run to run;
 *   - the per-channel formulas of bn_math.h, shared with the CPU backend
 *     (mean, invstd, running stats, scale/shift, k1/k2/k3, the centred dx).
 *
 * Reduction (two levels, no atomics):
 *   1. bn_partial: grid (ceil(c/32) channel tiles, G row chunks), block 32x8.
 *      threadIdx.x walks channels, so a warp reads 32 consecutive floats of
 *      one row (128 bytes, coalesced in NHWC); the 8 threadIdx.y lanes stride
 *      over the chunk's rows; the block then sums its 8 lanes in shared memory
 *      and writes one partial per (chunk, channel).
 *   2. a per-channel finalize kernel sums the G partials in chunk order and
 *      computes the per-channel coefficients.
 *   3. an elementwise kernel applies them (fused residual add + ReLU forward,
 *      fused ReLU mask backward).
 * Scratch (backend scratch, no allocation in steady state): partials
 * [2][G][c] doubles, then 4*c floats of coefficients. */
#include <math.h>

#include "cuda_common.h"
#include "bn_math.h"

#define BN_TX 32
#define BN_TY 8
#define BN_TARGET_BLOCKS 2048 /* enough partial-sum blocks to fill an H100 a few times */
#define BN_MIN_ROWS_PER_CHUNK 256

static int check_rows(int rows, int c) {
  if (rows < 2)
    return bf_error(BF_EINVAL, "batchnorm (train): need more than 1 value per channel, got %d (batch too small for "
                               "this spatial size)", rows);
  if (c <= 0) return bf_error(BF_EINVAL, "batchnorm: bad channel count %d", c);
  return BF_OK;
}

/* Number of row chunks for the partial sums. */
static int bn_chunks(int rows, int c) {
  long ctiles = (c + BN_TX - 1) / BN_TX;
  long by_rows = ((long)rows + BN_MIN_ROWS_PER_CHUNK - 1) / BN_MIN_ROWS_PER_CHUNK;
  long by_blocks = BN_TARGET_BLOCKS / ctiles;
  long g = by_rows < by_blocks ? by_rows : by_blocks;
  if (g < 1) g = 1;
  if (g > 65535) g = 65535; /* gridDim.y limit */
  return (int)g;
}

/* Scratch: partials (16*G*c bytes) then 6*c floats (coefficients, and the
 * discarded dgamma/dbeta of a synchronised backward). */
static int bn_scratch(bf_backend *be, int G, int c, const char *op, double **part, float **coef) {
  size_t part_bytes = (size_t)2 * G * c * sizeof(double);
  void *s = cuda_scratch(be, part_bytes + (size_t)6 * c * sizeof(float), op);
  if (!s) return BF_ENOMEM;
  *part = (double *)s;
  *coef = (float *)((char *)s + part_bytes);
  return BF_OK;
}

/* mode 0: sums of a and a*a. mode 1: sums of g and g*b, g = a masked by
 * (mask > 0) when mask is given (gradient through the fused ReLU). */
template <int MODE>
__global__ void bn_partial(int rows, int c, int G, const float *__restrict__ a, const float *__restrict__ b,
                           const float *__restrict__ mask, double *__restrict__ part) {
  __shared__ double s_sum[BN_TY][BN_TX], s_sq[BN_TY][BN_TX];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int ch = blockIdx.x * BN_TX + tx;
  const int g = blockIdx.y;
  const long r0 = (long)rows * g / G, r1 = (long)rows * (g + 1) / G;
  double s = 0.0, q = 0.0;
  if (ch < c) {
    for (long r = r0 + ty; r < r1; r += BN_TY) {
      const size_t i = (size_t)r * c + ch;
      if (MODE == 0) {
        const double v = a[i];
        s += v;
        q += v * v;
      } else {
        double gv = a[i];
        if (mask && !(mask[i] > 0.0f)) gv = 0.0;
        s += gv;
        q += gv * b[i];
      }
    }
  }
  s_sum[ty][tx] = s;
  s_sq[ty][tx] = q;
  __syncthreads();
  if (ty == 0 && ch < c) {
    double ss = 0.0, qq = 0.0;
    for (int k = 0; k < BN_TY; k++) {
      ss += s_sum[k][tx];
      qq += s_sq[k][tx];
    }
    part[(size_t)g * c + ch] = ss;
    part[((size_t)G + g) * c + ch] = qq;
  }
}

/* Synchronised BN (backend.h bn_sync): one thread per channel sums its G
 * partials in chunk order into part[ch] and part[c + ch], the G = 1 layout
 * that is handed to the hook. Each thread reads and writes only its channel. */
__global__ void bn_collapse(int c, int G, double *part) {
  const int ch = blockIdx.x * blockDim.x + threadIdx.x;
  if (ch >= c) return;
  double s = 0.0, q = 0.0;
  for (int g = 0; g < G; g++) {
    s += part[(size_t)g * c + ch];
    q += part[((size_t)G + g) * c + ch];
  }
  part[ch] = s;
  part[(size_t)c + ch] = q;
}

static int bn_collapse_sums(bf_backend *be, const char *op, int c, int G, double *part) {
  bn_collapse<<<(unsigned)((c + CUDA_THREADS - 1) / CUDA_THREADS), CUDA_THREADS, 0, cuda_im(be)->stream>>>(c, G, part);
  CUDA_LAUNCH_CHECK(op, "bn_collapse");
  return BF_OK;
}

/* One thread per channel: the G partials in chunk order, then bn_math.h. */
__global__ void bn_finalize_train(int rows, int c, int G, const double *__restrict__ part,
                                  const float *__restrict__ gamma, const float *__restrict__ beta,
                                  float *__restrict__ save_mean, float *__restrict__ save_invstd,
                                  float *__restrict__ running_mean, float *__restrict__ running_var, float momentum,
                                  float eps, float *__restrict__ scale, float *__restrict__ shift) {
  const int ch = blockIdx.x * blockDim.x + threadIdx.x;
  if (ch >= c) return;
  double sum = 0.0, sq = 0.0;
  for (int g = 0; g < G; g++) {
    sum += part[(size_t)g * c + ch];
    sq += part[((size_t)G + g) * c + ch];
  }
  bf_bn_train_coef(sum, sq, rows, gamma[ch], beta[ch], momentum, eps, &save_mean[ch], &save_invstd[ch],
                   running_mean ? &running_mean[ch] : NULL, running_var ? &running_var[ch] : NULL, &scale[ch],
                   &shift[ch]);
}

__global__ void bn_finalize_eval(int c, const float *__restrict__ gamma, const float *__restrict__ beta,
                                 const float *__restrict__ running_mean, const float *__restrict__ running_var,
                                 float eps, float *__restrict__ scale, float *__restrict__ shift) {
  const int ch = blockIdx.x * blockDim.x + threadIdx.x;
  if (ch >= c) return;
  bf_bn_eval_coef(gamma[ch], beta[ch], running_mean[ch], running_var[ch], eps, &scale[ch], &shift[ch]);
}

/* y = act(x*scale + shift + residual); act = ReLU (v > 0 ? v : 0, so NaN -> 0
 * as on the CPU) when relu. y may alias x or residual (same-index access). */
__global__ void bn_apply(size_t total, int c, const float *x, const float *__restrict__ scale,
                         const float *__restrict__ shift, const float *residual, int relu, float *y) {
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
    const int ch = (int)(i % (size_t)c);
    float v = x[i] * scale[ch] + shift[ch];
    if (residual) v = v + residual[i];
    y[i] = relu ? (v > 0.0f ? v : 0.0f) : v;
  }
}

__global__ void bn_finalize_backward(int rows, int c, int G, const double *__restrict__ part,
                                     const float *__restrict__ gamma, const float *__restrict__ save_mean,
                                     const float *__restrict__ save_invstd, float *__restrict__ dgamma,
                                     float *__restrict__ dbeta, float *__restrict__ k1, float *__restrict__ k2,
                                     float *__restrict__ k3) {
  const int ch = blockIdx.x * blockDim.x + threadIdx.x;
  if (ch >= c) return;
  double sdy = 0.0, sdyx = 0.0;
  for (int g = 0; g < G; g++) {
    sdy += part[(size_t)g * c + ch];
    sdyx += part[((size_t)G + g) * c + ch];
  }
  bf_bn_backward_coef(sdy, sdyx, rows, gamma[ch], save_mean[ch], save_invstd[ch], &dgamma[ch], &dbeta[ch], &k1[ch],
                      &k2[ch], &k3[ch]);
}

__global__ void bn_finalize_backward_eval(int c, int G, const double *__restrict__ part,
                                          const float *__restrict__ gamma, const float *__restrict__ running_mean,
                                          const float *__restrict__ running_var, float eps,
                                          float *__restrict__ dgamma, float *__restrict__ dbeta,
                                          float *__restrict__ k1, float *__restrict__ k2, float *__restrict__ k3) {
  const int ch = blockIdx.x * blockDim.x + threadIdx.x;
  if (ch >= c) return;
  double sdy = 0.0, sdyx = 0.0;
  for (int g = 0; g < G; g++) {
    sdy += part[(size_t)g * c + ch];
    sdyx += part[((size_t)G + g) * c + ch];
  }
  bf_bn_eval_backward_coef(sdy, sdyx, gamma[ch], running_mean[ch], running_var[ch], eps, &dgamma[ch], &dbeta[ch],
                           &k1[ch], &k2[ch], &k3[ch]);
}

__global__ void bn_apply_backward(size_t total, int c, const float *x, const float *dy, const float *mask,
                                  const float *__restrict__ k1, const float *__restrict__ k2,
                                  const float *__restrict__ k3, const float *__restrict__ mean, float *dx) {
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
    const int ch = (int)(i % (size_t)c);
    float g = dy[i];
    if (mask) g = mask[i] > 0.0f ? g : 0.0f;
    dx[i] = bf_bn_dx(k1[ch], k2[ch], k3[ch], mean[ch], g, x[i]);
  }
}

int cuda_bn_forward_train(bf_backend *be, int rows, int c, const float *x, const float *gamma, const float *beta,
                          const float *residual, int relu, float *y, float *save_mean, float *save_invstd,
                          float *running_mean, float *running_var, float momentum, float eps) {
  const char *op = "batchnorm_forward_train";
  BF_TRY(check_rows(rows, c));
  cudaStream_t st = cuda_im(be)->stream;
  const int G = bn_chunks(rows, c);
  double *part;
  float *coef;
  BF_TRY(bn_scratch(be, G, c, op, &part, &coef));
  float *scale = coef, *shift = coef + c;

  dim3 grid((unsigned)((c + BN_TX - 1) / BN_TX), (unsigned)G), block(BN_TX, BN_TY);
  bn_partial<0><<<grid, block, 0, st>>>(rows, c, G, x, NULL, NULL, part);
  CUDA_LAUNCH_CHECK(op, "bn_partial");
  int n = rows, g_fin = G;
  if (be->bn_sync) {
    BF_TRY(bn_collapse_sums(be, op, c, G, part));
    BF_TRY(be->bn_sync(be->bn_sync_ctx, part, 2 * (size_t)c));
    n = rows * be->bn_sync_ranks;
    g_fin = 1;
  }
  bn_finalize_train<<<(unsigned)((c + CUDA_THREADS - 1) / CUDA_THREADS), CUDA_THREADS, 0, st>>>(
      n, c, g_fin, part, gamma, beta, save_mean, save_invstd, running_mean, running_var, momentum, eps, scale, shift);
  CUDA_LAUNCH_CHECK(op, "bn_finalize_train");
  const size_t total = (size_t)rows * c;
  bn_apply<<<cuda_blocks(total, CUDA_THREADS), CUDA_THREADS, 0, st>>>(total, c, x, scale, shift, residual, relu, y);
  CUDA_LAUNCH_CHECK(op, "bn_apply");
  return BF_OK;
}

int cuda_bn_forward_eval(bf_backend *be, int rows, int c, const float *x, const float *gamma, const float *beta,
                         const float *running_mean, const float *running_var, const float *residual, int relu,
                         float eps, float *y) {
  const char *op = "batchnorm_forward_eval";
  if (rows < 1 || c < 1) return bf_error(BF_EINVAL, "batchnorm: bad shape rows=%d c=%d", rows, c);
  cudaStream_t st = cuda_im(be)->stream;
  float *coef = (float *)cuda_scratch(be, (size_t)2 * c * sizeof(float), op);
  if (!coef) return BF_ENOMEM;
  float *scale = coef, *shift = coef + c;
  bn_finalize_eval<<<(unsigned)((c + CUDA_THREADS - 1) / CUDA_THREADS), CUDA_THREADS, 0, st>>>(
      c, gamma, beta, running_mean, running_var, eps, scale, shift);
  CUDA_LAUNCH_CHECK(op, "bn_finalize_eval");
  const size_t total = (size_t)rows * c;
  bn_apply<<<cuda_blocks(total, CUDA_THREADS), CUDA_THREADS, 0, st>>>(total, c, x, scale, shift, residual, relu, y);
  CUDA_LAUNCH_CHECK(op, "bn_apply");
  return BF_OK;
}

/* The three passes of both backward modes: per-channel sums of the (masked)
 * gradient and of gradient*x, the per-channel coefficients (train: from the
 * saved batch statistics; eval: from the running statistics, only read,
 * k2 = k3 = 0), then dx. `mean` centres x in the last pass; `stat` is the
 * saved 1/sqrt(var+eps) (train) or the running variance (eval). */
static int bn_backward_passes(bf_backend *be, const char *op, int eval, int rows, int c, const float *x,
                              const float *dy, const float *relu_out, const float *gamma, const float *mean,
                              const float *stat, float eps, float *dx, float *dgamma, float *dbeta) {
  cudaStream_t st = cuda_im(be)->stream;
  const int G = bn_chunks(rows, c);
  double *part;
  float *coef;
  BF_TRY(bn_scratch(be, G, c, op, &part, &coef));
  float *k1 = coef, *k2 = coef + c, *k3 = coef + 2 * (size_t)c;

  dim3 grid((unsigned)((c + BN_TX - 1) / BN_TX), (unsigned)G), block(BN_TX, BN_TY);
  bn_partial<1><<<grid, block, 0, st>>>(rows, c, G, dy, x, relu_out, part);
  CUDA_LAUNCH_CHECK(op, "bn_partial");
  const unsigned cb = (unsigned)((c + CUDA_THREADS - 1) / CUDA_THREADS);
  if (eval) {
    bn_finalize_backward_eval<<<cb, CUDA_THREADS, 0, st>>>(c, G, part, gamma, mean, stat, eps, dgamma, dbeta, k1, k2,
                                                           k3);
    CUDA_LAUNCH_CHECK(op, "bn_finalize_backward_eval");
  } else if (!be->bn_sync) {
    bn_finalize_backward<<<cb, CUDA_THREADS, 0, st>>>(rows, c, G, part, gamma, mean, stat, dgamma, dbeta, k1, k2, k3);
    CUDA_LAUNCH_CHECK(op, "bn_finalize_backward");
  } else { /* dgamma, dbeta from this process's sums; k1..k3 from everyone's (backend.h) */
    BF_TRY(bn_collapse_sums(be, op, c, G, part));
    bn_finalize_backward<<<cb, CUDA_THREADS, 0, st>>>(rows, c, 1, part, gamma, mean, stat, dgamma, dbeta, k1, k2, k3);
    CUDA_LAUNCH_CHECK(op, "bn_finalize_backward");
    BF_TRY(be->bn_sync(be->bn_sync_ctx, part, 2 * (size_t)c));
    float *dg_all = coef + 4 * (size_t)c, *db_all = coef + 5 * (size_t)c;
    bn_finalize_backward<<<cb, CUDA_THREADS, 0, st>>>(rows * be->bn_sync_ranks, c, 1, part, gamma, mean, stat, dg_all,
                                                      db_all, k1, k2, k3);
    CUDA_LAUNCH_CHECK(op, "bn_finalize_backward");
  }
  const size_t total = (size_t)rows * c;
  bn_apply_backward<<<cuda_blocks(total, CUDA_THREADS), CUDA_THREADS, 0, st>>>(total, c, x, dy, relu_out, k1, k2,
                                                                              k3, mean, dx);
  CUDA_LAUNCH_CHECK(op, "bn_apply_backward");
  return BF_OK;
}

int cuda_bn_backward(bf_backend *be, int rows, int c, const float *x, const float *dy, const float *relu_out,
                     const float *gamma, const float *save_mean, const float *save_invstd, float *dx, float *dgamma,
                     float *dbeta) {
  BF_TRY(check_rows(rows, c));
  return bn_backward_passes(be, "batchnorm_backward", 0, rows, c, x, dy, relu_out, gamma, save_mean, save_invstd,
                            0.0f, dx, dgamma, dbeta);
}

int cuda_bn_backward_eval(bf_backend *be, int rows, int c, const float *x, const float *dy, const float *relu_out,
                          const float *gamma, const float *running_mean, const float *running_var, float eps,
                          float *dx, float *dgamma, float *dbeta) {
  if (rows < 1 || c < 1) return bf_error(BF_EINVAL, "batchnorm: bad shape rows=%d c=%d", rows, c);
  return bn_backward_passes(be, "batchnorm_backward_eval", 1, rows, c, x, dy, relu_out, gamma, running_mean,
                            running_var, eps, dx, dgamma, dbeta);
}
