/* Batch norm over an NHWC activation seen as [rows, c]. Per-channel sums are
 * accumulated in double, per thread, then reduced: float accumulation over
 * 200k rows (224x224 batch 16 after the stem) loses digits PyTorch keeps. */
#include <omp.h>
#include <string.h>

#include "bn_math.h"
#include "cpu_internal.h"

static int check_rows(int rows, int c) {
  if (rows < 2)
    return bf_error(BF_EINVAL, "batchnorm (train): need more than 1 value per channel, got %d (batch too small for "
                               "this spatial size)", rows);
  if (c <= 0) return bf_error(BF_EINVAL, "batchnorm: bad channel count %d", c);
  return BF_OK;
}

/* Fills sum[c] and sum2[c] (sum of x*y and, if y is NULL, sum of x) over all
 * rows. Layout of scratch: per thread [2c] partials. */
static int channel_sums(bf_backend *be, int rows, int c, const float *a, const float *b, const float *mask,
                        double *sum_a, double *sum_ab, int ab_is_sq) {
  int T = ((cpu_impl *)be->impl)->threads;
  double *red = cpu_scratch(be, (size_t)2 * T * c);
  if (!red) return BF_ENOMEM;
#pragma omp parallel num_threads(T)
  {
    int t = omp_get_thread_num(), nt = omp_get_num_threads();
    double *s = red + (size_t)2 * t * c, *q = s + c;
    memset(s, 0, (size_t)2 * c * sizeof(double));
    long r0 = (long)rows * t / nt, r1 = (long)rows * (t + 1) / nt;
    for (long r = r0; r < r1; r++) {
      const float *ar = a + r * c;
      if (ab_is_sq) {
        for (int ch = 0; ch < c; ch++) {
          double v = ar[ch];
          s[ch] += v;
          q[ch] += v * v;
        }
      } else {
        const float *br = b + r * c;
        const float *mr = mask ? mask + r * c : NULL;
        for (int ch = 0; ch < c; ch++) {
          double g = ar[ch];
          if (mr && !(mr[ch] > 0.0f)) g = 0.0;
          s[ch] += g;
          q[ch] += g * br[ch];
        }
      }
    }
#pragma omp barrier
#pragma omp for schedule(static)
    for (int ch = 0; ch < c; ch++) {
      double ss = 0, qq = 0;
      for (int u = 0; u < nt; u++) {
        ss += red[(size_t)2 * u * c + ch];
        qq += red[(size_t)2 * u * c + c + ch];
      }
      sum_a[ch] = ss;
      sum_ab[ch] = qq;
    }
  }
  return BF_OK;
}

/* y = act(x*scale + shift + residual) */
static void apply_affine(int rows, int c, const float *x, const float *scale, const float *shift,
                         const float *residual, int relu, float *y) {
#pragma omp parallel for schedule(static)
  for (long r = 0; r < rows; r++) {
    const float *xr = x + r * c;
    float *yr = y + r * c;
    const float *rr = residual ? residual + r * c : NULL;
    if (rr) {
      for (int ch = 0; ch < c; ch++) {
        float v = xr[ch] * scale[ch] + shift[ch] + rr[ch];
        yr[ch] = relu ? (v > 0.0f ? v : 0.0f) : v;
      }
    } else {
      for (int ch = 0; ch < c; ch++) {
        float v = xr[ch] * scale[ch] + shift[ch];
        yr[ch] = relu ? (v > 0.0f ? v : 0.0f) : v;
      }
    }
  }
}

int cpu_bn_forward_train(bf_backend *be, int rows, int c, const float *x, const float *gamma, const float *beta,
                         const float *residual, int relu, float *y, float *save_mean, float *save_invstd,
                         float *running_mean, float *running_var, float momentum, float eps) {
  BF_TRY(check_rows(rows, c));
  int T = cpu_enter(be);
  /* scratch: partials [2*T*c] | sums [2c] | scale,shift as floats [c] */
  double *base = cpu_scratch(be, (size_t)2 * T * c + 3 * (size_t)c);
  if (!base) return BF_ENOMEM;
  double *sum = base + (size_t)2 * T * c, *sq = sum + c;
  float *scale = (float *)(sq + c), *shift = scale + c;
  BF_TRY(channel_sums(be, rows, c, x, NULL, NULL, sum, sq, 1));
  int n = rows;
  if (be->bn_sync) { /* synchronised BN: the sums of every process (backend.h) */
    BF_TRY(be->bn_sync(be->bn_sync_ctx, sum, 2 * (size_t)c));
    n = rows * be->bn_sync_ranks;
  }
  for (int ch = 0; ch < c; ch++)
    bf_bn_train_coef(sum[ch], sq[ch], n, gamma[ch], beta[ch], momentum, eps, &save_mean[ch], &save_invstd[ch],
                     running_mean ? &running_mean[ch] : NULL, running_var ? &running_var[ch] : NULL, &scale[ch],
                     &shift[ch]);
  apply_affine(rows, c, x, scale, shift, residual, relu, y);
  return BF_OK;
}

int cpu_bn_forward_eval(bf_backend *be, int rows, int c, const float *x, const float *gamma, const float *beta,
                        const float *running_mean, const float *running_var, const float *residual, int relu,
                        float eps, float *y) {
  if (rows < 1 || c < 1) return bf_error(BF_EINVAL, "batchnorm: bad shape rows=%d c=%d", rows, c);
  cpu_enter(be);
  double *base = cpu_scratch(be, (size_t)c);
  if (!base) return BF_ENOMEM;
  float *scale = (float *)base, *shift = scale + c;
  for (int ch = 0; ch < c; ch++)
    bf_bn_eval_coef(gamma[ch], beta[ch], running_mean[ch], running_var[ch], eps, &scale[ch], &shift[ch]);
  apply_affine(rows, c, x, scale, shift, residual, relu, y);
  return BF_OK;
}

/* dx = bf_bn_dx(...) per element, dy masked by (relu_out > 0) when given. */
static void apply_backward(int rows, int c, const float *x, const float *dy, const float *relu_out,
                           const float *k1, const float *k2, const float *k3, const float *mean, float *dx) {
#pragma omp parallel for schedule(static)
  for (long r = 0; r < rows; r++) {
    const float *xr = x + r * c, *gr = dy + r * c;
    const float *mr = relu_out ? relu_out + r * c : NULL;
    float *dr = dx + r * c;
    if (mr) {
      for (int ch = 0; ch < c; ch++) {
        float g = mr[ch] > 0.0f ? gr[ch] : 0.0f;
        dr[ch] = bf_bn_dx(k1[ch], k2[ch], k3[ch], mean[ch], g, xr[ch]);
      }
    } else {
      for (int ch = 0; ch < c; ch++) dr[ch] = bf_bn_dx(k1[ch], k2[ch], k3[ch], mean[ch], gr[ch], xr[ch]);
    }
  }
}

int cpu_bn_backward(bf_backend *be, int rows, int c, const float *x, const float *dy, const float *relu_out,
                    const float *gamma, const float *save_mean, const float *save_invstd, float *dx, float *dgamma,
                    float *dbeta) {
  BF_TRY(check_rows(rows, c));
  int T = cpu_enter(be);
  double *base = cpu_scratch(be, (size_t)2 * T * c + 2 * (size_t)c + 2 * (size_t)c);
  if (!base) return BF_ENOMEM;
  double *sdy = base + (size_t)2 * T * c, *sdyx = sdy + c;
  float *k1 = (float *)(sdyx + c), *k2 = k1 + c, *k3 = k2 + c, *mean = k3 + c;
  /* sum(g) and sum(g * x); sum(g * xhat) = invstd * (sum(g*x) - mean*sum(g)) */
  BF_TRY(channel_sums(be, rows, c, dy, x, relu_out, sdy, sdyx, 0));
  for (int ch = 0; ch < c; ch++) {
    bf_bn_backward_coef(sdy[ch], sdyx[ch], rows, gamma[ch], save_mean[ch], save_invstd[ch], &dgamma[ch], &dbeta[ch],
                        &k1[ch], &k2[ch], &k3[ch]);
    mean[ch] = save_mean[ch];
  }
  if (be->bn_sync) { /* dgamma, dbeta stay local; dx follows the sums of every process (backend.h) */
    BF_TRY(be->bn_sync(be->bn_sync_ctx, sdy, 2 * (size_t)c));
    for (int ch = 0; ch < c; ch++) {
      float dg, db;
      bf_bn_backward_coef(sdy[ch], sdyx[ch], rows * be->bn_sync_ranks, gamma[ch], save_mean[ch], save_invstd[ch], &dg,
                          &db, &k1[ch], &k2[ch], &k3[ch]);
    }
  }
  apply_backward(rows, c, x, dy, relu_out, k1, k2, k3, mean, dx);
  return BF_OK;
}

int cpu_bn_backward_eval(bf_backend *be, int rows, int c, const float *x, const float *dy, const float *relu_out,
                         const float *gamma, const float *running_mean, const float *running_var, float eps,
                         float *dx, float *dgamma, float *dbeta) {
  if (rows < 1 || c < 1) return bf_error(BF_EINVAL, "batchnorm: bad shape rows=%d c=%d", rows, c);
  int T = cpu_enter(be);
  double *base = cpu_scratch(be, (size_t)2 * T * c + 2 * (size_t)c + 2 * (size_t)c);
  if (!base) return BF_ENOMEM;
  double *sdy = base + (size_t)2 * T * c, *sdyx = sdy + c;
  float *k1 = (float *)(sdyx + c), *k2 = k1 + c, *k3 = k2 + c;
  BF_TRY(channel_sums(be, rows, c, dy, x, relu_out, sdy, sdyx, 0));
  for (int ch = 0; ch < c; ch++)
    bf_bn_eval_backward_coef(sdy[ch], sdyx[ch], gamma[ch], running_mean[ch], running_var[ch], eps, &dgamma[ch],
                             &dbeta[ch], &k1[ch], &k2[ch], &k3[ch]);
  apply_backward(rows, c, x, dy, relu_out, k1, k2, k3, running_mean, dx);
  return BF_OK;
}
