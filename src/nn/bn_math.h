/* Batch-norm per-channel formulas, written once for both backends: the CPU
 * backend includes this from C, the CUDA backend from its kernels (BF_HD makes
 * every function __host__ __device__ under nvcc). Only the reductions (sums
 * over rows) and the elementwise loops differ between backends; everything
 * computed from the sums is here, so the two cannot drift apart.
 *
 * Precision rules (measured against PyTorch by tests/nn/torch_reference.py):
 * sums arrive in double; per-channel
 * coefficients are computed in double and rounded to float once; the backward
 * centres x before scaling (bf_bn_dx), because the uncentred k2*x + k3' form
 * cancels catastrophically when a channel's mean is large next to its spread
 * (a 1.9e-2 gradient error against PyTorch's 2e-6 on such inputs, commit
 * 4e5df97). */
#ifndef BF_BN_MATH_H
#define BF_BN_MATH_H

#include <math.h>

#include "bf_hd.h"

/* BatchNorm epsilon of every BN in the model (PyTorch's default): the
 * training model's forward and the exported, folded halves. */
#define BF_BN_EPS 1e-5

/* Train-mode statistics from sum(x) and sum(x*x) over `rows` values: the
 * saved mean and 1/sqrt(var+eps) (biased variance, as used for normalising),
 * the running statistics updated with momentum and the unbiased variance
 * (PyTorch semantics; running_mean/running_var may be NULL), and the affine
 * coefficients of y = x*scale + shift. */
static inline BF_HD void bf_bn_train_coef(double sum, double sumsq, int rows, float gamma, float beta,
                                          float momentum, float eps, float *save_mean, float *save_invstd,
                                          float *running_mean, float *running_var, float *scale, float *shift) {
  double mean = sum / rows;
  double var = sumsq / rows - mean * mean;
  if (var < 0) var = 0;
  double invstd = 1.0 / sqrt(var + eps);
  *save_mean = (float)mean;
  *save_invstd = (float)invstd;
  if (running_mean) *running_mean = (float)((1.0 - momentum) * *running_mean + momentum * mean);
  if (running_var) *running_var = (float)((1.0 - momentum) * *running_var + momentum * var * rows / (rows - 1.0));
  *scale = (float)(gamma * invstd);
  *shift = (float)(beta - mean * gamma * invstd);
}

/* Eval-mode affine coefficients from the running statistics. The product
 * running_mean * gamma is rounded to float before widening: that is the
 * rounding every result so far (checkpoints, exported engines) was made with. */
static inline BF_HD void bf_bn_eval_coef(float gamma, float beta, float running_mean, float running_var, float eps,
                                         float *scale, float *shift) {
  double invstd = 1.0 / sqrt((double)running_var + eps);
  float mg = running_mean * gamma;
  *scale = (float)(gamma * invstd);
  *shift = (float)(beta - mg * invstd);
}

/* Backward coefficients from sum(g) and sum(g*x) over `rows` values (g = dy,
 * masked by the fused ReLU). sum(g*xhat) = invstd*(sum(g*x) - mean*sum(g)).
 * dx = gamma*invstd*(g - sum(g)/M - xhat*sum(g*xhat)/M)
 *    = k1*g + k2*(x - mean) + k3   (see bf_bn_dx). */
static inline BF_HD void bf_bn_backward_coef(double sum_g, double sum_gx, int rows, float gamma, float save_mean,
                                             float save_invstd, float *dgamma, float *dbeta, float *k1, float *k2,
                                             float *k3) {
  double inv = save_invstd;
  double gx = inv * (sum_gx - save_mean * sum_g);
  *dgamma = (float)gx;
  *dbeta = (float)sum_g;
  double a = gamma * inv;
  *k1 = (float)a;
  *k2 = (float)(-a * inv * gx / rows);
  *k3 = (float)(-a * sum_g / rows);
}

/* Eval-mode backward: the statistics are constants (running mean and
 * variance), so only the affine map is differentiated:
 * dgamma = sum(g*xhat) = invstd*(sum(g*x) - running_mean*sum(g)),
 * dbeta = sum(g), dx = gamma*invstd*g, i.e. bf_bn_dx with k2 = k3 = 0.
 * invstd is computed as in bf_bn_eval_coef. */
static inline BF_HD void bf_bn_eval_backward_coef(double sum_g, double sum_gx, float gamma, float running_mean,
                                                  float running_var, float eps, float *dgamma, float *dbeta,
                                                  float *k1, float *k2, float *k3) {
  double inv = 1.0 / sqrt((double)running_var + eps);
  *dgamma = (float)(inv * (sum_gx - running_mean * sum_g));
  *dbeta = (float)sum_g;
  *k1 = (float)(gamma * inv);
  *k2 = 0.0f;
  *k3 = 0.0f;
}

/* One element of the backward: x is centred before it is scaled. */
static inline BF_HD float bf_bn_dx(float k1, float k2, float k3, float mean, float g, float x) {
  return k1 * g + k2 * (x - mean) + k3;
}

#endif
