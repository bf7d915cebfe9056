/* Convolution on the CPU: NHWC activations, OHWI weights, OpenBLAS sgemm.
 *
 * A 1x1 stride-1 unpadded conv is a plain GEMM on the [N*H*W, C] matrix. Any
 * other conv is lowered with im2col into a [rows, kh*kw*C] matrix; to bound
 * the workspace (the 7x7 stem at 224x224 would need 118 MB per 16 images)
 * the batch is processed in chunks of whole images. Whole images matter for
 * the backward-data pass: col2im is done as a gather per input pixel, which is
 * race-free across threads only when a chunk never splits an image. */
#include <cblas.h>
#include <string.h>

#include "cpu_internal.h"

/* Workspace budget per conv call; one image's columns always fit. */
#define CONV_WS_TARGET_BYTES ((size_t)48 << 20)

static int is_pointwise(const bf_conv_desc *d) {
  return d->kh == 1 && d->kw == 1 && d->stride == 1 && d->pad == 0;
}

static size_t col_row_len(const bf_conv_desc *d) { return (size_t)d->kh * d->kw * d->c; }

static int images_per_chunk(const bf_conv_desc *d) {
  size_t per_image = (size_t)d->oh * d->ow * col_row_len(d) * sizeof(float);
  size_t n = CONV_WS_TARGET_BYTES / (per_image ? per_image : 1);
  if (n < 1) n = 1;
  if (n > (size_t)d->n) n = (size_t)d->n;
  return (int)n;
}

static size_t need_bytes(const bf_conv_desc *d) {
  if (is_pointwise(d)) return 0;
  return (size_t)images_per_chunk(d) * d->oh * d->ow * col_row_len(d) * sizeof(float);
}

int cpu_conv2d_workspace(bf_backend *be, const bf_conv_desc *d, size_t *bytes) {
  (void)be;
  *bytes = need_bytes(d);
  return BF_OK;
}

/* col[(i,oh,ow), (kh,kw,c)] for images [n0, n0+nb) */
static void im2col(const bf_conv_desc *d, const float *x, int n0, int nb, float *col) {
  const int H = d->h, W = d->w, C = d->c, OH = d->oh, OW = d->ow, KH = d->kh, KW = d->kw;
  const size_t rowlen = col_row_len(d);
  const size_t csz = (size_t)C * sizeof(float);
#pragma omp parallel for collapse(2) schedule(static)
  for (int i = 0; i < nb; i++) {
    for (int oh = 0; oh < OH; oh++) {
      const float *xi = x + (size_t)(n0 + i) * H * W * C;
      for (int ow = 0; ow < OW; ow++) {
        float *dst = col + (((size_t)i * OH + oh) * OW + ow) * rowlen;
        for (int kh = 0; kh < KH; kh++) {
          int ih = oh * d->stride - d->pad + kh;
          if (ih < 0 || ih >= H) {
            memset(dst, 0, (size_t)KW * csz);
            dst += (size_t)KW * C;
            continue;
          }
          for (int kw = 0; kw < KW; kw++, dst += C) {
            int iw = ow * d->stride - d->pad + kw;
            if (iw < 0 || iw >= W)
              memset(dst, 0, csz);
            else
              memcpy(dst, xi + ((size_t)ih * W + iw) * C, csz);
          }
        }
      }
    }
  }
}

/* dx[i, ih, iw, :] (+)= sum of the column entries that read that pixel. */
static void col2im_gather(const bf_conv_desc *d, const float *col, int n0, int nb, float *dx, int accumulate) {
  const int H = d->h, W = d->w, C = d->c, OH = d->oh, OW = d->ow, KH = d->kh, KW = d->kw, S = d->stride,
            P = d->pad;
  const size_t rowlen = col_row_len(d);
#pragma omp parallel for collapse(2) schedule(static)
  for (int i = 0; i < nb; i++) {
    for (int ih = 0; ih < H; ih++) {
      for (int iw = 0; iw < W; iw++) {
        float *dst = dx + (((size_t)(n0 + i) * H + ih) * W + iw) * C;
        if (!accumulate) memset(dst, 0, (size_t)C * sizeof(float));
        for (int kh = 0; kh < KH; kh++) {
          int t = ih + P - kh;
          if (t < 0 || t % S) continue;
          int oh = t / S;
          if (oh >= OH) continue;
          for (int kw = 0; kw < KW; kw++) {
            int u = iw + P - kw;
            if (u < 0 || u % S) continue;
            int ow = u / S;
            if (ow >= OW) continue;
            const float *src = col + (((size_t)i * OH + oh) * OW + ow) * rowlen + ((size_t)kh * KW + kw) * C;
            for (int c = 0; c < C; c++) dst[c] += src[c];
          }
        }
      }
    }
  }
}

static int check_ws(const bf_conv_desc *d, void *ws, size_t ws_bytes) {
  size_t need = need_bytes(d);
  if (need && (!ws || ws_bytes < need))
    return bf_error(BF_EINVAL, "conv2d: workspace of %zu bytes given, %zu needed", ws_bytes, need);
  return BF_OK;
}

int cpu_conv2d_forward(bf_backend *be, const bf_conv_desc *d, const float *x, const float *w, float *y, void *ws,
                       size_t ws_bytes) {
  return cpu_conv2d_forward_beta(be, d, x, w, y, 0.0f, ws, ws_bytes);
}

int cpu_conv2d_forward_beta(bf_backend *be, const bf_conv_desc *d, const float *x, const float *w, float *y,
                            float beta, void *ws, size_t ws_bytes) {
  cpu_enter(be);
  const int K = d->k;
  if (is_pointwise(d)) {
    int M = d->n * d->h * d->w;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, K, d->c, 1.0f, x, d->c, w, d->c, beta, y, K);
    return BF_OK;
  }
  BF_TRY(check_ws(d, ws, ws_bytes));
  float *col = ws;
  const int rowlen = (int)col_row_len(d), chunk = images_per_chunk(d), ohw = d->oh * d->ow;
  for (int n0 = 0; n0 < d->n; n0 += chunk) {
    int nb = d->n - n0 < chunk ? d->n - n0 : chunk;
    im2col(d, x, n0, nb, col);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nb * ohw, K, rowlen, 1.0f, col, rowlen, w, rowlen, beta,
                y + (size_t)n0 * ohw * K, K);
  }
  return BF_OK;
}

int cpu_conv2d_backward_data(bf_backend *be, const bf_conv_desc *d, const float *dy, const float *w, float *dx,
                             float beta, void *ws, size_t ws_bytes) {
  cpu_enter(be);
  const int K = d->k;
  if (is_pointwise(d)) {
    int M = d->n * d->h * d->w;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, d->c, K, 1.0f, dy, K, w, d->c, beta, dx, d->c);
    return BF_OK;
  }
  BF_TRY(check_ws(d, ws, ws_bytes));
  float *col = ws;
  const int rowlen = (int)col_row_len(d), chunk = images_per_chunk(d), ohw = d->oh * d->ow;
  for (int n0 = 0; n0 < d->n; n0 += chunk) {
    int nb = d->n - n0 < chunk ? d->n - n0 : chunk;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nb * ohw, rowlen, K, 1.0f, dy + (size_t)n0 * ohw * K, K,
                w, rowlen, 0.0f, col, rowlen);
    col2im_gather(d, col, n0, nb, dx, beta != 0.0f);
  }
  return BF_OK;
}

int cpu_conv2d_backward_filter(bf_backend *be, const bf_conv_desc *d, const float *x, const float *dy, float *dw,
                               void *ws, size_t ws_bytes) {
  cpu_enter(be);
  const int K = d->k;
  if (is_pointwise(d)) {
    int M = d->n * d->h * d->w;
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, d->c, M, 1.0f, dy, K, x, d->c, 0.0f, dw, d->c);
    return BF_OK;
  }
  BF_TRY(check_ws(d, ws, ws_bytes));
  float *col = ws;
  const int rowlen = (int)col_row_len(d), chunk = images_per_chunk(d), ohw = d->oh * d->ow;
  for (int n0 = 0; n0 < d->n; n0 += chunk) {
    int nb = d->n - n0 < chunk ? d->n - n0 : chunk;
    im2col(d, x, n0, nb, col);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, rowlen, nb * ohw, 1.0f, dy + (size_t)n0 * ohw * K, K,
                col, rowlen, n0 == 0 ? 0.0f : 1.0f, dw, rowlen);
  }
  return BF_OK;
}
