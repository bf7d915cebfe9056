/* The fused inference convolution on CUDA (backend.h, conv_infer_*): the
 * cuDNN forward convolution of cuda_conv.cu (its plan cache, its precision
 * modes) followed by the bias/residual/ReLU epilogue kernel of
 * cuda_elementwise.cu. cuDNN takes our OHWI weights as they are (NHWC filter
 * format), so nothing is packed and the plan keeps the caller's pointers.
 * cudnnConvolutionBiasActivationForward would save the epilogue's pass but
 * supports only some algorithms and no separate residual; the GPU side is not
 * this path's bottleneck (the CPU one is).
 *
 * With a residual, the convolution writes into the tail of the workspace and
 * the epilogue reads the residual from wherever it is, so the residual may be
 * y itself (the engine writes a block's output over its shortcut). */
#include <stdlib.h>

#include "cuda_common.h"

struct bf_conv_infer {
  bf_conv_desc d;
  int relu, has_residual;
  const float *w, *bias;
  size_t conv_ws; /* bytes cuDNN's forward needs; the residual case adds y after it */
};

static size_t align256(size_t n) { return (n + 255) / 256 * 256; }

int cuda_conv_infer_create(bf_backend *be, const bf_conv_desc *d, const float *w, const float *bias, int relu,
                           int has_residual, bf_conv_infer **out, size_t *ws_bytes) {
  *out = NULL;
  size_t need = 0;
  BF_TRY(cuda_conv2d_workspace(be, d, &need));
  bf_conv_infer *p = (bf_conv_infer *)bf_calloc(1, sizeof *p, "conv_infer plan");
  if (!p) return BF_ENOMEM;
  p->d = *d, p->relu = relu, p->has_residual = has_residual, p->w = w, p->bias = bias;
  p->conv_ws = align256(need);
  *ws_bytes = p->conv_ws + (has_residual ? (size_t)d->n * d->oh * d->ow * d->k * sizeof(float) : 0);
  *out = p;
  return BF_OK;
}

int cuda_conv_infer_forward(bf_backend *be, bf_conv_infer *p, const float *x, const float *residual, float *y,
                            void *ws, size_t ws_bytes) {
  const bf_conv_desc *d = &p->d;
  if (!residual != !p->has_residual)
    return bf_error(BF_EINVAL, "conv_infer_forward: planned %s a residual, called %s one",
                    p->has_residual ? "with" : "without", residual ? "with" : "without");
  size_t ny = (size_t)d->n * d->oh * d->ow * d->k;
  size_t need = p->conv_ws + (residual ? ny * sizeof(float) : 0);
  if (ws_bytes < need || (need && !ws))
    return bf_error(BF_EINVAL, "conv_infer_forward: workspace of %zu bytes given, %zu needed", ws_bytes, need);
  float *conv_out = residual ? (float *)((char *)ws + p->conv_ws) : y;
  BF_TRY(cuda_conv2d_forward(be, d, x, p->w, conv_out, ws, p->conv_ws));
  return cuda_bias_act_forward(be, (int)((size_t)d->n * d->oh * d->ow), d->k, conv_out, p->bias, residual, p->relu,
                               y);
}

void cuda_conv_infer_free(bf_backend *be, bf_conv_infer *p) {
  (void)be;
  free(p);
}
