/* The CPU backend: memory is ordinary host memory, GEMMs go to OpenBLAS and
 * every other loop is OpenMP-parallel. */
#include <cblas.h>
#include <float.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cpu_internal.h"
#include "pixel_math.h"
#include "quant_math.h"

double *cpu_scratch(bf_backend *be, size_t n) {
  cpu_impl *im = be->impl;
  if (n > im->red_len) {
    double *p = bf_alloc_aligned(n * sizeof(double), "cpu backend scratch");
    if (!p) return NULL;
    free(im->red);
    im->red = p;
    im->red_len = n;
  }
  return im->red;
}

static void *cpu_alloc(bf_backend *be, size_t bytes) {
  (void)be;
  return bf_alloc_aligned(bytes, "cpu tensor");
}
static void cpu_free(bf_backend *be, void *p) {
  (void)be;
  free(p);
}
static int cpu_memcpy(bf_backend *be, void *dst, const void *src, size_t bytes) {
  (void)be;
  if (bytes) memmove(dst, src, bytes);
  return BF_OK;
}
static void *cpu_host_alloc(bf_backend *be, size_t bytes) {
  (void)be;
  return bf_alloc_aligned(bytes, "host staging");
}
static int cpu_zero(bf_backend *be, void *dst, size_t bytes) {
  (void)be;
  if (bytes) memset(dst, 0, bytes);
  return BF_OK;
}
static int cpu_sync(bf_backend *be) {
  (void)be;
  return BF_OK;
}
static void cpu_destroy(bf_backend *be) {
  cpu_impl *im = be->impl;
  cpu_dnnl_release(im);
  free(im->red);
  free(im);
  free(be);
}

static int cpu_relu_forward(bf_backend *be, size_t n, const float *x, float *y) {
  cpu_enter(be);
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; i++) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
  return BF_OK;
}

static int cpu_relu_backward(bf_backend *be, size_t n, const float *y, const float *dy, float *dx) {
  cpu_enter(be);
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; i++) dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
  return BF_OK;
}

int cpu_bias_act_forward(bf_backend *be, int rows, int c, const float *x, const float *bias,
                         const float *residual, int relu, float *y) {
  cpu_enter(be);
#pragma omp parallel for schedule(static)
  for (long r = 0; r < rows; r++) {
    const float *xr = x + r * c, *rr = residual ? residual + r * c : NULL;
    float *yr = y + r * c;
    for (int ch = 0; ch < c; ch++) {
      float v = xr[ch] + bias[ch] + (rr ? rr[ch] : 0.0f);
      yr[ch] = relu && v < 0.0f ? 0.0f : v;
    }
  }
  return BF_OK;
}

static int cpu_add(bf_backend *be, size_t n, const float *a, const float *b, float *y) {
  cpu_enter(be);
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; i++) y[i] = a[i] + b[i];
  return BF_OK;
}

static int cpu_quant_forward(bf_backend *be, size_t n, const float *x, const float *clip, int bits, float *y,
                             uint8_t *codes) {
  if (bits < BF_QUANT_BITS_MIN || bits > BF_QUANT_BITS_MAX)
    return bf_error(BF_EINVAL, "quant_forward: bits %d outside %d..%d", bits, BF_QUANT_BITS_MIN, BF_QUANT_BITS_MAX);
  cpu_enter(be);
  const float s = bf_quant_scale(*clip, bits);
  const int qmax = bf_quant_qmax(bits);
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; i++) {
    int q = bf_quant_code(x[i], s, qmax);
    y[i] = (float)q * s;
    if (codes) codes[i] = (uint8_t)q;
  }
  return BF_OK;
}

static int cpu_quant_backward(bf_backend *be, size_t n, const float *x, const float *clip, int bits, const float *dy,
                              float *dx, float *dclip) {
  if (bits < BF_QUANT_BITS_MIN || bits > BF_QUANT_BITS_MAX)
    return bf_error(BF_EINVAL, "quant_backward: bits %d outside %d..%d", bits, BF_QUANT_BITS_MIN, BF_QUANT_BITS_MAX);
  cpu_enter(be);
  const float c = *clip;
  /* one pass in index order: the clip's gradient does not depend on the
   * thread count (the tensor is small: batch x feature map x D_r) */
  double sum = 0;
  for (size_t i = 0; i < n; i++) {
    const float g = dy[i]; /* read before dx, which may alias dy, is written */
    sum += (double)g * bf_quant_dclip(x[i], c, bits);
    dx[i] = bf_quant_passes(x[i], c) ? g : 0.0f;
  }
  *dclip = (float)sum;
  return BF_OK;
}

static int cpu_maxpool_forward(bf_backend *be, const bf_pool_desc *d, const float *x, float *y) {
  cpu_enter(be);
  const int H = d->h, W = d->w, C = d->c, OH = d->oh, OW = d->ow, K = d->kernel, S = d->stride, P = d->pad;
#pragma omp parallel for collapse(2) schedule(static)
  for (int n = 0; n < d->n; n++) {
    for (int oh = 0; oh < OH; oh++) {
      for (int ow = 0; ow < OW; ow++) {
        float *yr = y + (((size_t)n * OH + oh) * OW + ow) * C;
        for (int c = 0; c < C; c++) yr[c] = -INFINITY;
        for (int kh = 0; kh < K; kh++) {
          int ih = oh * S - P + kh;
          if (ih < 0 || ih >= H) continue;
          for (int kw = 0; kw < K; kw++) {
            int iw = ow * S - P + kw;
            if (iw < 0 || iw >= W) continue;
            const float *xr = x + (((size_t)n * H + ih) * W + iw) * C;
            for (int c = 0; c < C; c++) yr[c] = (xr[c] > yr[c] || xr[c] != xr[c]) ? xr[c] : yr[c];
          }
        }
      }
    }
  }
  return BF_OK;
}

static int cpu_maxpool_backward(bf_backend *be, const bf_pool_desc *d, const float *x, const float *dy, float *dx) {
  cpu_enter(be);
  const int H = d->h, W = d->w, C = d->c, OH = d->oh, OW = d->ow, K = d->kernel, S = d->stride, P = d->pad;
  /* Windows overlap, so parallelise over images only. */
#pragma omp parallel for schedule(static)
  for (int n = 0; n < d->n; n++) {
    float *dxn = dx + (size_t)n * H * W * C;
    const float *xn = x + (size_t)n * H * W * C;
    memset(dxn, 0, (size_t)H * W * C * sizeof(float));
    for (int oh = 0; oh < OH; oh++) {
      for (int ow = 0; ow < OW; ow++) {
        const float *g = dy + (((size_t)n * OH + oh) * OW + ow) * C;
        for (int c = 0; c < C; c++) {
          float best = -INFINITY;
          size_t at = (size_t)-1;
          for (int kh = 0; kh < K; kh++) {
            int ih = oh * S - P + kh;
            if (ih < 0 || ih >= H) continue;
            for (int kw = 0; kw < K; kw++) {
              int iw = ow * S - P + kw;
              if (iw < 0 || iw >= W) continue;
              size_t idx = ((size_t)ih * W + iw) * C + c;
              /* As PyTorch: start at the first in-bounds position, strict '>'
               * keeps the first maximum, and a NaN wins. */
              if (at == (size_t)-1) at = idx;
              if (xn[idx] > best || isnan(xn[idx])) {
                best = xn[idx];
                at = idx;
              }
            }
          }
          if (at != (size_t)-1) dxn[at] += g[c];
        }
      }
    }
  }
  return BF_OK;
}

static int cpu_avgpool_global_forward(bf_backend *be, int n, int hw, int c, const float *x, float *y) {
  cpu_enter(be);
  const float inv = 1.0f / (float)hw;
  /* one image is one thread's work: no team to wake (inference at batch 1) */
#pragma omp parallel for schedule(static) if (n > 1)
  for (int i = 0; i < n; i++) {
    float *yr = y + (size_t)i * c;
    memset(yr, 0, (size_t)c * sizeof(float));
    const float *xi = x + (size_t)i * hw * c;
    for (int p = 0; p < hw; p++)
      for (int ch = 0; ch < c; ch++) yr[ch] += xi[(size_t)p * c + ch];
    for (int ch = 0; ch < c; ch++) yr[ch] *= inv;
  }
  return BF_OK;
}

static int cpu_avgpool_global_backward(bf_backend *be, int n, int hw, int c, const float *dy, float *dx) {
  cpu_enter(be);
  const float inv = 1.0f / (float)hw;
#pragma omp parallel for collapse(2) schedule(static)
  for (int i = 0; i < n; i++)
    for (int p = 0; p < hw; p++) {
      float *d = dx + ((size_t)i * hw + p) * c;
      const float *g = dy + (size_t)i * c;
      for (int ch = 0; ch < c; ch++) d[ch] = g[ch] * inv;
    }
  return BF_OK;
}

static int cpu_linear_forward(bf_backend *be, int n, int in, int out, const float *x, const float *w, const float *b,
                              float *y) {
  cpu_enter(be);
  for (int i = 0; i < n; i++) memcpy(y + (size_t)i * out, b, (size_t)out * sizeof(float));
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, out, in, 1.0f, x, in, w, in, 1.0f, y, out);
  return BF_OK;
}

static int cpu_linear_backward(bf_backend *be, int n, int in, int out, const float *x, const float *w,
                               const float *dy, float *dx, float *dw, float *db) {
  cpu_enter(be);
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, n, 1.0f, dy, out, x, in, 0.0f, dw, in);
  for (int o = 0; o < out; o++) {
    double s = 0;
    for (int i = 0; i < n; i++) s += dy[(size_t)i * out + o];
    db[o] = (float)s;
  }
  if (dx) cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, in, out, 1.0f, dy, out, w, in, 0.0f, dx, in);
  return BF_OK;
}

static int cpu_softmax_xent(bf_backend *be, int n, int c, const float *logits, const int32_t *labels,
                            float smoothing, float *loss, float *dlogits) {
  (void)be;
  if (n <= 0 || c <= 0) return bf_error(BF_EINVAL, "softmax_xent: bad shape n=%d c=%d", n, c);
  if (!(smoothing >= 0.0f && smoothing < 1.0f))
    return bf_error(BF_EINVAL, "softmax_xent: label smoothing %g outside [0, 1)", (double)smoothing);
  for (int i = 0; i < n; i++)
    if (labels[i] < 0 || labels[i] >= c)
      return bf_error(BF_EINVAL, "softmax_xent: label %d of sample %d outside [0, %d)", labels[i], i, c);
  double total = 0;
  for (int i = 0; i < n; i++) {
    const float *z = logits + (size_t)i * c;
    double m = -INFINITY;
    for (int j = 0; j < c; j++) m = z[j] > m ? z[j] : m;
    double se = 0, sz = 0;
    for (int j = 0; j < c; j++) {
      se += exp((double)z[j] - m);
      sz += (double)z[j] - m;
    }
    double lse = log(se);
    double nll = lse - ((double)z[labels[i]] - m);
    double smooth = lse - sz / c; /* mean_j(-log p_j) */
    total += (1.0 - smoothing) * nll + smoothing * smooth;
    if (dlogits) {
      float *g = dlogits + (size_t)i * c;
      for (int j = 0; j < c; j++) {
        double p = exp((double)z[j] - m - lse);
        double t = smoothing / c + (j == labels[i] ? 1.0 - smoothing : 0.0);
        g[j] = (float)((p - t) / n);
      }
    }
  }
  *loss = (float)(total / n);
  if (!isfinite(*loss)) return bf_error(BF_ENUM, "softmax_xent: loss is %g (non-finite logits)", (double)*loss);
  return BF_OK;
}

static int cpu_sgd_step(bf_backend *be, size_t n, float *p, const float *g, float *m, const bf_sgd_params *hp) {
  cpu_enter(be);
  const float lr = hp->lr, mu = hp->momentum, wd = hp->weight_decay;
  const int nesterov = hp->nesterov;
  if (mu == 0.0f) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) p[i] -= lr * (g[i] + wd * p[i]);
    return BF_OK;
  }
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; i++) {
    float gi = g[i] + wd * p[i];
    float mi = mu * m[i] + gi;
    m[i] = mi;
    p[i] -= lr * (nesterov ? gi + mu * mi : mi);
  }
  return BF_OK;
}

static int cpu_count_correct(bf_backend *be, int n, int c, const float *logits, const int32_t *labels,
                             float *correct) {
  (void)be;
  if (n <= 0 || c <= 0) return bf_error(BF_EINVAL, "count_correct: bad shape n=%d c=%d", n, c);
  int k = 0;
  for (int i = 0; i < n; i++) {
    const float *l = logits + (size_t)i * c;
    int am = 0;
    for (int j = 1; j < c; j++) am = l[j] > l[am] ? j : am;
    k += am == labels[i];
  }
  *correct = (float)k;
  return BF_OK;
}

static int cpu_normalize_u8(bf_backend *be, size_t pixels, const uint8_t *x, const float mean[3],
                            const float std[3], float *y) {
  cpu_enter(be);
  float lut[3][256]; /* the formula tabulated: 768 evaluations instead of one per byte */
  for (int k = 0; k < 3; k++)
    for (int v = 0; v < 256; v++) lut[k][v] = bf_pixel_normalize((uint8_t)v, mean[k], std[k]);
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < pixels; i++)
    for (int k = 0; k < 3; k++) y[3 * i + k] = lut[k][x[3 * i + k]];
  return BF_OK;
}

int bf_backend_cpu_create(bf_backend **out, int threads) {
  *out = NULL;
  if (threads <= 0) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    threads = n > 0 ? (int)n : 1;
  }
  bf_backend *be = bf_calloc(1, sizeof *be, "cpu backend");
  cpu_impl *im = bf_calloc(1, sizeof *im, "cpu backend");
  if (!be || !im) {
    free(be);
    free(im);
    return BF_ENOMEM;
  }
  /* No process-wide thread setting here: each op applies im->threads to its
   * calling thread (cpu_enter), so contexts with different counts coexist. */
  im->threads = threads;
  be->name = "cpu";
  be->threads = threads;
  be->impl = im;
  be->alloc = cpu_alloc;
  be->free = cpu_free;
  be->upload = cpu_memcpy;
  be->download = cpu_memcpy;
  be->copy = cpu_memcpy;
  be->zero = cpu_zero;
  be->sync = cpu_sync;
  be->host_alloc = cpu_host_alloc;
  be->host_free = cpu_free;
  be->upload_async = cpu_memcpy;
  be->count_correct = cpu_count_correct;
  be->destroy = cpu_destroy;
  be->conv2d_workspace = cpu_conv2d_workspace;
  be->conv2d_forward = cpu_conv2d_forward;
  be->conv2d_backward_data = cpu_conv2d_backward_data;
  be->conv2d_backward_filter = cpu_conv2d_backward_filter;
  be->batchnorm_forward_train = cpu_bn_forward_train;
  be->batchnorm_forward_eval = cpu_bn_forward_eval;
  be->batchnorm_backward = cpu_bn_backward;
  be->batchnorm_backward_eval = cpu_bn_backward_eval;
  be->relu_forward = cpu_relu_forward;
  be->relu_backward = cpu_relu_backward;
  be->add = cpu_add;
  be->quant_forward = cpu_quant_forward;
  be->quant_backward = cpu_quant_backward;
  be->bias_act_forward = cpu_bias_act_forward;
  be->conv_infer_create = cpu_conv_infer_create;
  be->conv_infer_forward = cpu_conv_infer_forward;
  be->conv_infer_free = cpu_conv_infer_free;
  be->maxpool_forward = cpu_maxpool_forward;
  be->maxpool_backward = cpu_maxpool_backward;
  be->avgpool_global_forward = cpu_avgpool_global_forward;
  be->avgpool_global_backward = cpu_avgpool_global_backward;
  be->linear_forward = cpu_linear_forward;
  be->linear_backward = cpu_linear_backward;
  be->softmax_xent = cpu_softmax_xent;
  be->sgd_step = cpu_sgd_step;
  be->normalize_u8 = cpu_normalize_u8;
  *out = be;
  return BF_OK;
}
