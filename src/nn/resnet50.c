/* The ResNet-50 (torchvision v1.5) layout: the one place that knows how the
 * 16 residual blocks are grouped into stages and what their channels and
 * strides are. The model, the split engine and the exporter all ask here. */
#include "model.h"

#include <stdio.h>

#include "bf_core.h"
#include "quant_math.h"

/* Blocks per stage (torchvision layer1..layer4). */
static const int k_stage_blocks[4] = {3, 4, 6, 3};

int bf_rb_layout(int k, bf_rb_info *out) {
  if (k < 1 || k > BF_NUM_RB) return bf_error(BF_EINVAL, "residual block RB%d outside 1..%d", k, BF_NUM_RB);
  int first = 1, s = 0;
  while (k >= first + k_stage_blocks[s]) first += k_stage_blocks[s++];
  out->stage = s;
  out->index = k - first;
  out->mid = 64 << s;
  out->out_c = out->mid * 4;
  /* the first block of a stage takes the previous stage's output (the stem's 64 for stage 0) */
  out->in_c = out->index ? out->out_c : (s ? out->mid * 2 : BF_STEM_C);
  out->stride = (out->index == 0 && s > 0) ? 2 : 1; /* v1.5: the stride sits in the 3x3 conv */
  out->has_downsample = out->index == 0;
  out->out_stride = 4 << s;
  snprintf(out->prefix, sizeof out->prefix, "layer%d.%d", s + 1, out->index);
  return BF_OK;
}

int bf_rb_channels(int k) {
  bf_rb_info r;
  return bf_rb_layout(k, &r) ? 0 : r.out_c;
}

int bf_rb_stride(int k) {
  bf_rb_info r;
  return bf_rb_layout(k, &r) ? 0 : r.out_stride;
}

int bf_model_config_check(const bf_model_config *cfg) {
  if (cfg->num_classes < 1 || cfg->num_classes > 1000000)
    return bf_error(BF_EINVAL, "num_classes %d outside 1..1000000", cfg->num_classes);
  if (cfg->split_after < 0 || cfg->split_after > BF_NUM_RB)
    return bf_error(BF_EINVAL, "split_after %d outside 0..16 (0 = no butterfly, k = after residual block RBk)",
                    cfg->split_after);
  if (cfg->split_after > 0) {
    int D = bf_rb_channels(cfg->split_after);
    if (cfg->d_r < 1 || cfg->d_r > D)
      return bf_error(BF_EINVAL, "d_r %d outside 1..%d (channels of RB%d)", cfg->d_r, D, cfg->split_after);
  }
  if (cfg->quant_bits != 0 && (cfg->quant_bits < BF_QUANT_BITS_MIN || cfg->quant_bits > BF_QUANT_BITS_MAX))
    return bf_error(BF_EINVAL, "quant_bits %d is neither 0 (off) nor in %d..%d", cfg->quant_bits, BF_QUANT_BITS_MIN,
                    BF_QUANT_BITS_MAX);
  if (cfg->quant_bits && !cfg->split_after)
    return bf_error(BF_EINVAL, "quant_bits %d needs a butterfly unit (split_after > 0): it quantises the reduction's "
                    "output", cfg->quant_bits);
  return BF_OK;
}

/* Conv weights are OHWI in memory (NHWC convolutions) and OIHW in files. */
void bf_layout_ohwi_to_oihw(const float *src, float *dst, const int64_t s[4]) {
  int64_t O = s[0], I = s[1], H = s[2], W = s[3];
  for (int64_t o = 0; o < O; o++)
    for (int64_t h = 0; h < H; h++)
      for (int64_t w = 0; w < W; w++)
        for (int64_t i = 0; i < I; i++) dst[((o * I + i) * H + h) * W + w] = src[((o * H + h) * W + w) * I + i];
}

void bf_layout_oihw_to_ohwi(const float *src, float *dst, const int64_t s[4]) {
  int64_t O = s[0], I = s[1], H = s[2], W = s[3];
  for (int64_t o = 0; o < O; o++)
    for (int64_t h = 0; h < H; h++)
      for (int64_t w = 0; w < W; w++)
        for (int64_t i = 0; i < I; i++) dst[((o * H + h) * W + w) * I + i] = src[((o * I + i) * H + h) * W + w];
}
