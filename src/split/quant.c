#include "quant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "bf_core.h"
#include "quant_math.h"
#include "rans.h"

static void range_params(float lo, float hi, float *scale, int32_t *zp) {
  if (!(lo <= 0.0f)) lo = 0.0f; /* also catches NaN */
  if (!(hi >= 0.0f)) hi = 0.0f;
  double s = ((double)hi - (double)lo) / 255.0;
  if (!(s >= BF_QSCALE_MIN)) { /* also NaN: everything quantises to 0 */
    *scale = 1.0f;
    *zp = 0;
    return;
  }
  if (s > BF_QSCALE_MAX) s = BF_QSCALE_MAX; /* the extremes saturate */
  double z = nearbyint(-(double)lo / s);
  if (z < 0) z = 0;
  if (z > 255) z = 255;
  *scale = (float)s;
  *zp = (int32_t)z;
}

void bf_quant_params(const float *x, size_t rows, int c, int per_channel, float *scale, int32_t *zp) {
  if (!per_channel) {
    float lo = 0.0f, hi = 0.0f;
    size_t n = rows * (size_t)c;
    for (size_t i = 0; i < n; i++) {
      if (x[i] < lo) lo = x[i];
      if (x[i] > hi) hi = x[i];
    }
    range_params(lo, hi, scale, zp);
    return;
  }
  for (int ch = 0; ch < c; ch++) {
    float lo = 0.0f, hi = 0.0f;
    for (size_t r = 0; r < rows; r++) {
      float v = x[r * (size_t)c + ch];
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    range_params(lo, hi, &scale[ch], &zp[ch]);
  }
}

void bf_quantize(const float *x, size_t rows, int c, int per_channel, const float *scale, const int32_t *zp,
                 uint8_t *q) {
  for (size_t r = 0; r < rows; r++)
    for (int ch = 0; ch < c; ch++) {
      int k = per_channel ? ch : 0;
      size_t i = r * (size_t)c + ch;
      double v = nearbyint((double)x[i] / scale[k]) + zp[k];
      if (!(v >= 0)) v = 0; /* NaN -> 0 */
      if (v > 255) v = 255;
      q[i] = (uint8_t)v;
    }
}

void bf_dequantize(const uint8_t *q, size_t rows, int c, int per_channel, const float *scale, const int32_t *zp,
                   float *x) {
  for (size_t r = 0; r < rows; r++)
    for (int ch = 0; ch < c; ch++) {
      int k = per_channel ? ch : 0;
      size_t i = r * (size_t)c + ch;
      x[i] = (float)((int32_t)q[i] - zp[k]) * scale[k];
    }
}

void bf_quantize_fixed(const float *x, size_t n, const bf_qfixed *fx, uint8_t *q, float *scale) {
  const float s = bf_quant_scale(fx->clip, fx->bits);
  const int qmax = bf_quant_qmax(fx->bits);
  for (size_t i = 0; i < n; i++) q[i] = (uint8_t)bf_quant_code(x[i], s, qmax);
  *scale = s;
}

int bf_features_encode(const float *x, int h, int w, int c, bf_qscheme scheme, bf_codec codec, int level,
                       bf_frame *f, uint8_t **body, size_t *body_len) {
  return bf_features_encode_ex(x, h, w, c, scheme, NULL, codec, level, NULL, f, body, body_len);
}

int bf_features_encode_ex(const float *x, int h, int w, int c, bf_qscheme scheme, const bf_qfixed *fixed,
                          bf_codec codec, int level, const bf_rans_tables *rt, bf_frame *f, uint8_t **body,
                          size_t *body_len) {
  *body = NULL;
  if (fixed && (scheme != BF_Q_U8_TENSOR || fixed->bits < BF_QUANT_BITS_MIN || fixed->bits > BF_QUANT_BITS_MAX ||
                !bf_qscale_valid(bf_quant_scale(fixed->clip, fixed->bits))))
    return bf_error(BF_EINVAL, "features: fixed-range quantiser (bits %d, clip %g) needs per-tensor uint8",
                    fixed->bits, (double)fixed->clip);
  if (codec == BF_CODEC_RANS && (!rt || (scheme != BF_Q_U8_TENSOR && scheme != BF_Q_U8_CHANNEL)))
    return bf_error(BF_EINVAL, "features: codec rans needs uint8 features and the model's rans tables%s",
                    rt ? "" : " (this export has none: bf-export --rans-data)");
  if (codec == BF_CODEC_RANS && rt->channels != c)
    return bf_error(BF_EINVAL, "features: rans tables for %d channels, features have %d", rt->channels, c);
  /* per-image range codes span 8 bits, a quantisation-aware model's its own */
  if (codec == BF_CODEC_RANS && rt->bits != bf_qfixed_bits(fixed))
    return bf_error(BF_EINVAL, "features: rans tables of %d bits, the codes have %d", rt->bits,
                    bf_qfixed_bits(fixed));
  if (h < 1 || w < 1 || c < 1 || h > 65535 || w > 65535 || c > 65535)
    return bf_error(BF_EINVAL, "features: shape %dx%dx%d not encodable", h, w, c);
  if (scheme != BF_Q_F32 && scheme != BF_Q_U8_TENSOR && scheme != BF_Q_U8_CHANNEL)
    return bf_error(BF_EINVAL, "features: scheme %d", (int)scheme);
  size_t rows = (size_t)h * w, elems = rows * (size_t)c;
  int per_ch = scheme == BF_Q_U8_CHANNEL;
  uint64_t nq64, raw64;
  bf_infer_sizes(scheme, elems, (uint32_t)c, &nq64, &raw64);
  uint32_t nq = (uint32_t)nq64;
  size_t raw = (size_t)raw64, qb = (size_t)nq * BF_QPAIR_BYTES; /* the pairs before the payload */
  if (raw > 0xFFFF0000u) return bf_error(BF_EINVAL, "features: %zu bytes too large", raw);
  uint8_t *rawbuf = bf_malloc(raw ? raw : 1, "feature payload");
  float *scale = bf_malloc((nq ? nq : 1) * sizeof(float), "scales");
  int32_t *zp = bf_malloc((nq ? nq : 1) * sizeof(int32_t), "zero points");
  if (!rawbuf || !scale || !zp) {
    free(rawbuf), free(scale), free(zp);
    return BF_ENOMEM;
  }
  if (scheme == BF_Q_F32) {
    for (size_t i = 0; i < elems; i++) bf_put_f32(rawbuf + 4 * i, x[i]);
  } else if (fixed) {
    bf_quantize_fixed(x, elems, fixed, rawbuf, scale);
    zp[0] = 0;
  } else {
    bf_quant_params(x, rows, c, per_ch, scale, zp);
    bf_quantize(x, rows, c, per_ch, scale, zp, rawbuf);
  }
  size_t cap = qb + (codec == BF_CODEC_ZSTD   ? ZSTD_compressBound(raw)
                     : codec == BF_CODEC_RANS ? (size_t)bf_rans_bound(raw)
                                              : raw);
  uint8_t *b = bf_malloc(cap, "INFER body");
  int rc = BF_OK;
  size_t plen = 0;
  if (!b) {
    rc = BF_ENOMEM;
    goto done;
  }
  for (uint32_t i = 0; i < nq; i++) {
    bf_put_f32(b + BF_QPAIR_BYTES * i, scale[i]);
    bf_put_u32(b + BF_QPAIR_BYTES * i + 4, (uint32_t)zp[i]);
  }
  if (codec == BF_CODEC_ZSTD) {
    size_t r = ZSTD_compress(b + qb, cap - qb, rawbuf, raw, level);
    if (ZSTD_isError(r)) {
      rc = bf_error(BF_EBACKEND, "features: zstd: %s", ZSTD_getErrorName(r));
      goto done;
    }
    plen = r;
    if (plen > bf_frame_zstd_bound(raw)) {
      rc = bf_error(BF_EINVAL, "features: zstd expanded %zu bytes to %zu", raw, plen);
      goto done;
    }
  } else if (codec == BF_CODEC_RANS) {
    if ((rc = bf_rans_encode(rt, rawbuf, raw, w, b + qb, cap - qb, &plen))) goto done;
  } else {
    memcpy(b + qb, rawbuf, raw);
    plen = raw;
  }
  f->qscheme = (uint8_t)scheme;
  f->codec = (uint8_t)codec;
  f->n = 1, f->h = (uint16_t)h, f->w = (uint16_t)w, f->c = (uint16_t)c;
  f->raw_len = (uint32_t)raw;
  *body = b;
  *body_len = qb + plen;
  b = NULL;
done:
  free(b);
  free(rawbuf);
  free(scale);
  free(zp);
  return rc;
}

int bf_features_decode(const bf_frame *f, float *out) { return bf_features_decode_with(f, NULL, out); }

int bf_features_decode_with(const bf_frame *f, const bf_rans_tables *rt, float *out) {
  size_t elems = (size_t)f->n * f->h * f->w * f->c;
  const uint8_t *raw = f->payload;
  uint8_t *tmp = NULL;
  if (f->codec == BF_CODEC_RANS) {
    if (!rt) return bf_error(BF_PERR_BAD_PAYLOAD, "payload: rans, but this model has no rans tables");
    if (rt->channels != f->c)
      return bf_error(BF_PERR_BAD_PAYLOAD, "payload: rans tables for %d channels, frame has %u", rt->channels, f->c);
    if (f->qscheme != BF_Q_U8_TENSOR && f->qscheme != BF_Q_U8_CHANNEL)
      return bf_error(BF_PERR_BAD_PAYLOAD, "payload: rans codes uint8 features only");
    tmp = malloc(elems ? elems : 1);
    if (!tmp) return bf_error(BF_PERR_INTERNAL, "out of memory decoding a payload");
    int r = bf_rans_decode(rt, f->payload, f->payload_len, f->w, tmp, elems);
    if (r) {
      free(tmp);
      return r;
    }
    raw = tmp;
  } else if (f->codec == BF_CODEC_ZSTD) {
    /* Exactly one standard frame that declares raw_len bytes: ZSTD_decompress
     * alone would also take concatenated frames, skippable frames and (if
     * built with them) legacy formats, each more decoder surface than the
     * protocol needs. */
    if (f->payload_len < 4 || bf_get_u32(f->payload) != ZSTD_MAGICNUMBER)
      return bf_error(BF_PERR_BAD_PAYLOAD, "payload: not a zstd frame (magic number)");
    size_t fsz = ZSTD_findFrameCompressedSize(f->payload, f->payload_len);
    if (ZSTD_isError(fsz) || fsz != f->payload_len)
      return bf_error(BF_PERR_BAD_PAYLOAD, "payload: not exactly one zstd frame (%s)",
                      ZSTD_isError(fsz) ? ZSTD_getErrorName(fsz) : "bytes after the first frame");
    unsigned long long csz = ZSTD_getFrameContentSize(f->payload, f->payload_len);
    if (csz != f->raw_len)
      return bf_error(BF_PERR_BAD_PAYLOAD, "payload: the zstd frame declares %s, raw_len is %u",
                      csz == ZSTD_CONTENTSIZE_UNKNOWN ? "no content size"
                      : csz == ZSTD_CONTENTSIZE_ERROR ? "an invalid header"
                                                      : "another content size",
                      f->raw_len);
    tmp = malloc(f->raw_len ? f->raw_len : 1);
    if (!tmp) return bf_error(BF_PERR_INTERNAL, "out of memory decoding a payload");
    size_t r = ZSTD_decompress(tmp, f->raw_len, f->payload, f->payload_len);
    if (ZSTD_isError(r) || r != f->raw_len) {
      free(tmp);
      return bf_error(BF_PERR_BAD_PAYLOAD, "payload: zstd stream does not decode to %u bytes (%s)", f->raw_len,
                      ZSTD_isError(r) ? ZSTD_getErrorName(r) : "size mismatch");
    }
    raw = tmp;
  }
  int rc = BF_OK;
  if (f->qscheme == BF_Q_F32) {
    for (size_t i = 0; i < elems && !rc; i++) {
      out[i] = bf_get_f32(raw + 4 * i);
      if (!isfinite(out[i])) rc = bf_error(BF_PERR_BAD_PAYLOAD, "payload: non-finite feature at %zu", i);
    }
  } else if (f->qscheme == BF_Q_U8_PIXELS) {
    for (size_t i = 0; i < elems; i++) out[i] = raw[i];
  } else {
    int per_ch = f->qscheme == BF_Q_U8_CHANNEL;
    float scale[65536 / 64]; /* small fast path; large c below */
    int32_t zp[65536 / 64];
    float *sp = scale;
    int32_t *zpp = zp;
    if (f->nq > sizeof scale / sizeof scale[0]) {
      sp = malloc(f->nq * sizeof(float));
      zpp = malloc(f->nq * sizeof(int32_t));
      if (!sp || !zpp) {
        free(sp), free(zpp), free(tmp);
        return bf_error(BF_PERR_INTERNAL, "out of memory decoding a payload");
      }
    }
    for (uint32_t i = 0; i < f->nq; i++) {
      sp[i] = bf_get_f32(f->qparams + BF_QPAIR_BYTES * i);
      zpp[i] = (int32_t)bf_get_u32(f->qparams + BF_QPAIR_BYTES * i + 4);
    }
    bf_dequantize(raw, elems / f->c, f->c, per_ch, sp, zpp, out);
    if (sp != scale) free(sp), free(zpp);
  }
  free(tmp);
  return rc;
}

int bf_qscheme_parse_cli(const char *flag, const char *v, bf_qscheme *out) {
  if (!strcmp(v, "per-tensor")) *out = BF_Q_U8_TENSOR;
  else if (!strcmp(v, "per-channel")) *out = BF_Q_U8_CHANNEL;
  else if (!strcmp(v, "none")) *out = BF_Q_F32;
  else return bf_error(BF_EINVAL, "%s: '%s' is not per-tensor, per-channel or none", flag, v);
  return BF_OK;
}

int bf_codec_parse_cli(const char *flag, const char *v, bf_codec *out) {
  if (!strcmp(v, "raw")) *out = BF_CODEC_RAW;
  else if (!strcmp(v, "zstd")) *out = BF_CODEC_ZSTD;
  else if (!strcmp(v, "rans")) *out = BF_CODEC_RANS;
  else return bf_error(BF_EINVAL, "%s: '%s' is not raw, zstd or rans", flag, v);
  return BF_OK;
}
