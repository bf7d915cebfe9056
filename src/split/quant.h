/* Feature coding: uint8 affine quantisation of the reduction unit's output
 * (per tensor or per channel) and an optional lossless stage (zstd, or rANS
 * with the model's static tables: rans.h).
 *
 *   q = clamp(round(x / scale) + zero_point, 0, 255)
 *   x' = (q - zero_point) * scale
 *
 * The range always includes 0 (so 0, the most common value after ReLU, is
 * exact); scale = (max - min) / 255, zero_point = round(-min / scale).
 *
 * Valid scales: BF_QSCALE_MIN <= scale <= BF_QSCALE_MAX (so not NaN, not
 * infinite, not zero or negative, not denormal). The encoder never writes
 * another (a range below 255 * MIN quantises to zeros with scale 1, a wider one
 * than 255 * MAX saturates) and the server refuses any other (BAD_FRAME): at
 * FLT_MAX, (q - zp) * scale overflows and the logits become NaN. The bounds
 * leave the reduction unit's outputs (ReLU features, |x| << 1e8) untouched. */
#ifndef BF_QUANT_H
#define BF_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "frame.h"

#define BF_QSCALE_MIN 1e-12f
#define BF_QSCALE_MAX 1e6f
static inline int bf_qscale_valid(float s) { return s >= BF_QSCALE_MIN && s <= BF_QSCALE_MAX; }

/* Parameters for x[rows, c] (NHWC); per_channel gives c pairs, else 1. */
void bf_quant_params(const float *x, size_t rows, int c, int per_channel, float *scale, int32_t *zp);
void bf_quantize(const float *x, size_t rows, int c, int per_channel, const float *scale, const int32_t *zp,
                 uint8_t *q);
void bf_dequantize(const uint8_t *q, size_t rows, int c, int per_channel, const float *scale, const int32_t *zp,
                   float *x);

/* The fixed-range quantiser of a quantisation-aware model (manifest
 * quantization.bits and .clip): codes bf_quant_code(x, s, 2^bits - 1) with
 * s = bf_quant_scale(clip, bits), the formulas training used
 * (src/nn/quant_math.h), sent as uint8 per tensor with scale s and zero
 * point 0, so the server dequantises q * s as training did. */
typedef struct bf_qfixed {
  int bits;   /* 2..8 */
  float clip; /* > 0 */
} bf_qfixed;
/* The bits of the codes: fx's, or 8 (fx NULL: the range of each image). */
static inline int bf_qfixed_bits(const bf_qfixed *fx) { return fx ? fx->bits : 8; }
/* q[i] for x[0..n); *scale = s. */
void bf_quantize_fixed(const float *x, size_t n, const bf_qfixed *fx, uint8_t *q, float *scale);

/* Builds the body of an INFER frame for features x[h, w, c] (n = 1):
 * quantisation pairs + payload, coded with `codec` (zstd level `level`).
 * Fills the frame's shape/scheme fields. *body is malloc'ed. */
int bf_features_encode(const float *x, int h, int w, int c, bf_qscheme scheme, bf_codec codec, int level,
                       bf_frame *f, uint8_t **body, size_t *body_len);
/* The same with the fixed-range quantiser when fixed is not NULL (scheme
 * must then be BF_Q_U8_TENSOR; NULL: the range of each image) and the
 * model's rANS tables rt (rans.h; needed for BF_CODEC_RANS, whose tables must
 * be of the codes' bits: fixed->bits, else 8; NULL: codec rans is an error). */
struct bf_rans_tables;
int bf_features_encode_ex(const float *x, int h, int w, int c, bf_qscheme scheme, const bf_qfixed *fixed,
                          bf_codec codec, int level, const struct bf_rans_tables *rt, bf_frame *f, uint8_t **body,
                          size_t *body_len);
/* Decodes a parsed INFER / INFER_IMAGE frame's payload: float features
 * (dequantised) into out[raw elements] for INFER; for INFER_IMAGE the pixels
 * as floats 0..255. out holds n*h*w*c floats. Returns 0 or BF_PERR_BAD_PAYLOAD. */
int bf_features_decode(const bf_frame *f, float *out);
/* The same with the served model's rANS tables (NULL: a rans payload is
 * BAD_PAYLOAD); their channels must be f->c. */
int bf_features_decode_with(const bf_frame *f, const struct bf_rans_tables *rt, float *out);

/* Command-line spellings shared by bf-export and bf-client:
 * "per-tensor" | "per-channel" | "none", and "raw" | "zstd" | "rans". Return 0, or
 * BF_EINVAL with a message naming the flag. */
int bf_qscheme_parse_cli(const char *flag, const char *v, bf_qscheme *out);
int bf_codec_parse_cli(const char *flag, const char *v, bf_codec *out);

#endif
