/* The fixed-range b-bit quantiser of the butterfly unit's output, written
 * once: the training op (CPU backend and CUDA kernel, quantisation-aware
 * fine-tuning, model.quant_bits), the folded engine's quantiser step
 * (bf-infer, bf-client --local) and bf-client's encoder (src/split/quant.c)
 * all call these, so training and deployment produce the same codes for the
 * same features, bit for bit.
 *
 *   clip' = bf_quant_clip(clip)             (the learned clip, kept > 0)
 *   s     = clip' / (2^bits - 1)            (float division, as below)
 *   q     = clamp(rint(x / s), 0, 2^bits-1) (ties to even; NaN -> 0)
 *   x'    = q * s
 *
 * Float division rather than a multiply by 1/s: nvcc's default (-prec-div)
 * and C give the correctly rounded quotient, so both sides agree; rintf
 * rounds half to even in the default rounding mode, which nothing here
 * changes. The reduction output is post-ReLU (>= 0): zero point 0, codes
 * 0..2^bits-1, and the protocol's uint8 per-tensor frame carries them with
 * scale s and zero point 0 (docs/split.md). */
#ifndef BF_QUANT_MATH_H
#define BF_QUANT_MATH_H

#include <math.h>

#include "bf_hd.h"

#define BF_QUANT_BITS_MIN 2
#define BF_QUANT_BITS_MAX 8
/* The smallest clip the quantiser uses: a learned clip that SGD drove to or
 * below 0 (or NaN) would make s useless; this keeps s a positive normal float
 * (and inside the protocol's valid scales, quant.h) for every bits. */
#define BF_QUANT_CLIP_MIN 1e-4f

static inline BF_HD float bf_quant_clip(float clip) { return clip >= BF_QUANT_CLIP_MIN ? clip : BF_QUANT_CLIP_MIN; }

static inline BF_HD int bf_quant_qmax(int bits) { return (1 << bits) - 1; }

static inline BF_HD float bf_quant_scale(float clip, int bits) {
  return bf_quant_clip(clip) / (float)bf_quant_qmax(bits);
}

static inline BF_HD int bf_quant_code(float x, float s, int qmax) {
  float r = rintf(x / s);
  if (!(r >= 0.0f)) return 0; /* also NaN */
  return r > (float)qmax ? qmax : (int)r;
}

/* Straight-through region of the input gradient: 1 where the input passes
 * the clamp (0 <= x < clip'), 0 where it is clamped. */
static inline BF_HD int bf_quant_passes(float x, float clip) { return x >= 0.0f && x < bf_quant_clip(clip); }

/* d x' / d clip with the straight-through estimator for the rounding only
 * (as LSQ; PACT's own gradient keeps only the clipped term):
 *   x >= clip':      x' = clip'                       -> 1
 *   0 <= x < clip':  x' = s q(x/s), s = clip'/qmax    -> (q - x/s) / qmax
 *   x < 0:           x' = 0                           -> 0
 * The middle term, the rounding error's sign, is what moves the clip when
 * (nearly) nothing is clipped: with PACT's gradient alone a clip that starts
 * above the features only shrinks by weight decay. */
static inline BF_HD float bf_quant_dclip(float x, float clip, int bits) {
  const float c = bf_quant_clip(clip);
  if (x >= c) return 1.0f;
  if (!(x >= 0.0f)) return 0.0f;
  const int qmax = bf_quant_qmax(bits);
  const float s = c / (float)qmax;
  return ((float)bf_quant_code(x, s, qmax) - x / s) / (float)qmax;
}

#endif
