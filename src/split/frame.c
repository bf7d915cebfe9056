#include "frame.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "bf_core.h"
#include "quant.h"
#include "rans.h"

const char *bf_perr_name(uint32_t code) {
  switch (code) {
    case BF_PERR_BAD_FRAME: return "BAD_FRAME";
    case BF_PERR_TOO_LARGE: return "TOO_LARGE";
    case BF_PERR_UNKNOWN_MODEL: return "UNKNOWN_MODEL";
    case BF_PERR_BAD_SHAPE: return "BAD_SHAPE";
    case BF_PERR_TIMEOUT: return "TIMEOUT";
    case BF_PERR_BUSY: return "BUSY";
    case BF_PERR_TOO_MANY_CONN: return "TOO_MANY_CONNECTIONS";
    case BF_PERR_INTERNAL: return "INTERNAL";
    case BF_PERR_SHUTDOWN: return "SHUTDOWN";
    case BF_PERR_BAD_PAYLOAD: return "BAD_PAYLOAD";
    case BF_PERR_FORBIDDEN: return "FORBIDDEN";
    default: return "UNKNOWN_ERROR";
  }
}

const char *bf_msg_name(uint32_t type) {
  switch (type) {
    case BF_MSG_INFER: return "INFER";
    case BF_MSG_INFER_IMAGE: return "INFER_IMAGE";
    case BF_MSG_STATUS: return "STATUS";
    case BF_MSG_RESULT: return "RESULT";
    case BF_MSG_STATUS_REPLY: return "STATUS_REPLY";
    case BF_MSG_ERROR: return "ERROR";
    default: return "UNKNOWN";
  }
}

void bf_put_f32(uint8_t *p, float v) {
  uint32_t u;
  memcpy(&u, &v, 4);
  bf_put_u32(p, u);
}

float bf_get_f32(const uint8_t *p) {
  uint32_t u = bf_get_u32(p);
  float v;
  memcpy(&v, &u, 4);
  return v;
}

uint64_t bf_frame_zstd_bound(uint64_t raw) { return raw + raw / 128 + 1024; }

static int known_type(uint8_t t) {
  return t == BF_MSG_INFER || t == BF_MSG_INFER_IMAGE || t == BF_MSG_STATUS || t == BF_MSG_RESULT ||
         t == BF_MSG_STATUS_REPLY || t == BF_MSG_ERROR;
}

int bf_frame_parse_header(const uint8_t *b, uint32_t max_body, bf_frame *f) {
  memset(f, 0, sizeof *f);
  if (memcmp(b, BF_FRAME_MAGIC, 4) != 0)
    return bf_error(BF_PERR_BAD_FRAME, "frame: bad magic %02x%02x%02x%02x (expected 'BFLY')", b[0], b[1], b[2], b[3]);
  f->version = b[4];
  f->type = b[5];
  f->flags = bf_get_u16(b + 6);
  f->body_len = bf_get_u32(b + 8);
  f->request_id = bf_get_u32(b + 12);
  memcpy(f->model_id, b + 16, BF_MODEL_ID_LEN);
  f->qscheme = b[48];
  f->codec = b[49];
  uint16_t reserved = bf_get_u16(b + 50);
  f->n = bf_get_u16(b + 52);
  f->h = bf_get_u16(b + 54);
  f->w = bf_get_u16(b + 56);
  f->c = bf_get_u16(b + 58);
  f->raw_len = bf_get_u32(b + 60);
  if (f->version != BF_FRAME_VERSION)
    return bf_error(BF_PERR_BAD_FRAME, "frame: version %u not supported (this build speaks %d)", f->version,
                    BF_FRAME_VERSION);
  if (!known_type(f->type)) return bf_error(BF_PERR_BAD_FRAME, "frame: unknown message type %u", f->type);
  if (f->flags != 0 || reserved != 0) return bf_error(BF_PERR_BAD_FRAME, "frame: reserved fields are not zero");
  if (f->body_len > max_body)
    return bf_error(BF_PERR_TOO_LARGE, "frame: body of %u bytes exceeds the limit of %u", f->body_len, max_body);
  return BF_OK;
}

int bf_infer_sizes(int q, uint64_t elems, uint32_t c, uint64_t *nq, uint64_t *raw_len) {
  switch (q) {
    case BF_Q_F32: *nq = 0, *raw_len = elems * 4; return 0;
    case BF_Q_U8_TENSOR: *nq = 1, *raw_len = elems; return 0;
    case BF_Q_U8_CHANNEL: *nq = c, *raw_len = elems; return 0;
    case BF_Q_U8_PIXELS: *nq = 0, *raw_len = elems; return 0;
    default: *nq = 0, *raw_len = 0; return -1;
  }
}

static int parse_tensor_body(bf_frame *f) {
  if (f->n != 1) return bf_error(BF_PERR_BAD_SHAPE, "frame: batch n=%u (only 1 is supported)", f->n);
  if (!f->h || !f->w || !f->c) return bf_error(BF_PERR_BAD_SHAPE, "frame: empty shape %ux%ux%u", f->h, f->w, f->c);
  if (f->codec > BF_CODEC_RANS) return bf_error(BF_PERR_BAD_FRAME, "frame: unknown codec %u", f->codec);
  uint64_t elems = (uint64_t)f->n * f->h * f->w * f->c;
  uint64_t raw, nq;
  if (f->type == BF_MSG_INFER_IMAGE) {
    if (f->qscheme != BF_Q_U8_PIXELS || f->c != 3)
      return bf_error(BF_PERR_BAD_SHAPE, "frame: INFER_IMAGE needs qscheme %d and 3 channels (got %u, %u)",
                      BF_Q_U8_PIXELS, f->qscheme, f->c);
  }
  /* pixels are INFER_IMAGE's scheme only */
  if ((f->type != BF_MSG_INFER_IMAGE && f->qscheme == BF_Q_U8_PIXELS) ||
      bf_infer_sizes(f->qscheme, elems, f->c, &nq, &raw))
    return bf_error(BF_PERR_BAD_FRAME, "frame: INFER with unknown qscheme %u", f->qscheme);
  if (f->raw_len != raw)
    return bf_error(BF_PERR_BAD_SHAPE, "frame: raw_len %u does not match shape %ux%ux%ux%u (%llu bytes)", f->raw_len,
                    f->n, f->h, f->w, f->c, (unsigned long long)raw);
  if ((uint64_t)f->body_len < nq * BF_QPAIR_BYTES)
    return bf_error(BF_PERR_BAD_FRAME, "frame: body of %u bytes cannot hold %llu quantisation pairs", f->body_len,
                    (unsigned long long)nq);
  f->nq = (uint32_t)nq;
  f->qparams = f->body;
  f->payload = f->body + nq * BF_QPAIR_BYTES;
  f->payload_len = f->body_len - (uint32_t)(nq * BF_QPAIR_BYTES);
  if (f->codec == BF_CODEC_RAW && f->payload_len != raw)
    return bf_error(BF_PERR_BAD_FRAME, "frame: raw payload of %u bytes, expected %llu", f->payload_len,
                    (unsigned long long)raw);
  if (f->codec == BF_CODEC_ZSTD && (f->payload_len == 0 || f->payload_len > bf_frame_zstd_bound(raw)))
    return bf_error(BF_PERR_BAD_FRAME, "frame: zstd payload of %u bytes for %llu raw bytes", f->payload_len,
                    (unsigned long long)raw);
  if (f->codec == BF_CODEC_RANS && f->qscheme != BF_Q_U8_TENSOR && f->qscheme != BF_Q_U8_CHANNEL)
    return bf_error(BF_PERR_BAD_FRAME, "frame: rans codes uint8 features only, not qscheme %u", f->qscheme);
  if (f->codec == BF_CODEC_RANS && (f->payload_len < 4 || f->payload_len > bf_rans_bound(raw)))
    return bf_error(BF_PERR_BAD_FRAME, "frame: rans payload of %u bytes for %llu symbols", f->payload_len,
                    (unsigned long long)raw);
  for (uint32_t i = 0; i < f->nq; i++) {
    float s = bf_get_f32(f->qparams + BF_QPAIR_BYTES * i);
    uint32_t zp = bf_get_u32(f->qparams + BF_QPAIR_BYTES * i + 4);
    if (!bf_qscale_valid(s) || zp > 255)
      return bf_error(BF_PERR_BAD_FRAME, "frame: quantisation pair %u invalid (scale %g, zero point %u)", i, s, zp);
  }
  return BF_OK;
}

int bf_frame_parse(const uint8_t *buf, size_t len, uint32_t max_body, bf_frame *f) {
  if (len < BF_FRAME_HEADER + BF_FRAME_TRAILER)
    return bf_error(BF_PERR_BAD_FRAME, "frame: %zu bytes is shorter than header + CRC", len);
  BF_TRY(bf_frame_parse_header(buf, max_body, f));
  if ((uint64_t)len != (uint64_t)BF_FRAME_HEADER + f->body_len + BF_FRAME_TRAILER)
    return bf_error(BF_PERR_BAD_FRAME, "frame: %zu bytes but the header announces a body of %u", len, f->body_len);
  uint32_t want = bf_get_u32(buf + BF_FRAME_HEADER + f->body_len);
  uint32_t got = (uint32_t)crc32(0L, buf, (uInt)(BF_FRAME_HEADER + f->body_len));
  if (want != got) return bf_error(BF_PERR_BAD_FRAME, "frame: CRC32 mismatch (frame %08x, computed %08x)", want, got);
  f->body = buf + BF_FRAME_HEADER;
  switch (f->type) {
    case BF_MSG_INFER:
    case BF_MSG_INFER_IMAGE: return parse_tensor_body(f);
    case BF_MSG_STATUS:
      if (f->body_len) return bf_error(BF_PERR_BAD_FRAME, "frame: STATUS with a %u-byte body", f->body_len);
      return BF_OK;
    case BF_MSG_RESULT:
      if (f->body_len != BF_RESULT_BODY)
        return bf_error(BF_PERR_BAD_FRAME, "frame: RESULT body of %u bytes (expected %d)", f->body_len,
                        BF_RESULT_BODY);
      return BF_OK;
    case BF_MSG_STATUS_REPLY:
    case BF_MSG_ERROR: return BF_OK; /* checked by the unpackers */
  }
  return bf_error(BF_PERR_BAD_FRAME, "frame: unknown message type %u", f->type);
}

int bf_frame_build(const bf_frame *f, const void *body, size_t body_len, uint8_t **out, size_t *out_len) {
  *out = NULL;
  if (body_len > 0xFFFFFFF0u) return bf_error(BF_EINVAL, "frame: body of %zu bytes too large", body_len);
  size_t len = BF_FRAME_HEADER + body_len + BF_FRAME_TRAILER;
  uint8_t *b = bf_malloc(len, "frame");
  if (!b) return BF_ENOMEM;
  memset(b, 0, BF_FRAME_HEADER);
  memcpy(b, BF_FRAME_MAGIC, 4);
  b[4] = BF_FRAME_VERSION;
  b[5] = f->type;
  bf_put_u16(b + 6, f->flags);
  bf_put_u32(b + 8, (uint32_t)body_len);
  bf_put_u32(b + 12, f->request_id);
  memcpy(b + 16, f->model_id, BF_MODEL_ID_LEN);
  b[48] = f->qscheme;
  b[49] = f->codec;
  bf_put_u16(b + 52, f->n);
  bf_put_u16(b + 54, f->h);
  bf_put_u16(b + 56, f->w);
  bf_put_u16(b + 58, f->c);
  bf_put_u32(b + 60, f->raw_len);
  if (body_len) memcpy(b + BF_FRAME_HEADER, body, body_len);
  bf_put_u32(b + BF_FRAME_HEADER + body_len, (uint32_t)crc32(0L, b, (uInt)(BF_FRAME_HEADER + body_len)));
  *out = b;
  *out_len = len;
  return BF_OK;
}

void bf_result_pack(const bf_result *r, uint8_t out[BF_RESULT_BODY]) {
  memset(out, 0, BF_RESULT_BODY);
  bf_put_u32(out, r->k);
  bf_put_u32(out + 4, r->num_classes);
  bf_put_f32(out + 8, r->server_ms);
  bf_put_f32(out + 12, r->compute_ms);
  for (uint32_t i = 0; i < r->k && i < BF_TOPK; i++) {
    bf_put_u32(out + 16 + 12 * i, r->cls[i]);
    bf_put_f32(out + 20 + 12 * i, r->logit[i]);
    bf_put_f32(out + 24 + 12 * i, r->prob[i]);
  }
}

int bf_result_unpack(const uint8_t *b, size_t len, uint32_t num_classes, bf_result *r) {
  memset(r, 0, sizeof *r);
  if (len != BF_RESULT_BODY) return bf_error(BF_EINVAL, "RESULT body of %zu bytes", len);
  r->k = bf_get_u32(b);
  r->num_classes = bf_get_u32(b + 4);
  r->server_ms = bf_get_f32(b + 8);
  r->compute_ms = bf_get_f32(b + 12);
  /* Checked against the reader's own class count, never against the
   * num_classes the peer claims: the class index selects a class name. */
  if (r->num_classes != num_classes)
    return bf_error(BF_EINVAL, "RESULT: %u classes, the manifest has %u (another model?)", r->num_classes,
                    num_classes);
  if (r->k != (num_classes < BF_TOPK ? num_classes : BF_TOPK))
    return bf_error(BF_EINVAL, "RESULT: k=%u with %u classes", r->k, num_classes);
  if (!(r->server_ms >= 0 && r->server_ms < 1e9f) || !(r->compute_ms >= 0 && r->compute_ms < 1e9f))
    return bf_error(BF_EINVAL, "RESULT: server times %g / %g ms not valid", r->server_ms, r->compute_ms);
  for (uint32_t i = 0; i < r->k; i++) {
    r->cls[i] = bf_get_u32(b + 16 + 12 * i);
    r->logit[i] = bf_get_f32(b + 20 + 12 * i);
    r->prob[i] = bf_get_f32(b + 24 + 12 * i);
    if (r->cls[i] >= num_classes) return bf_error(BF_EINVAL, "RESULT: class %u of %u classes", r->cls[i], num_classes);
    if (!isfinite(r->logit[i]) || !(r->prob[i] >= 0 && r->prob[i] <= 1))
      return bf_error(BF_EINVAL, "RESULT: rank %u has logit %g, probability %g", i, r->logit[i], r->prob[i]);
  }
  return BF_OK;
}

#define STATUS_FIXED 28
#define STATUS_MODEL 44

size_t bf_status_body_len(uint32_t n_models) { return STATUS_FIXED + (size_t)n_models * STATUS_MODEL; }

void bf_status_pack(const bf_status *s, uint8_t *o) {
  bf_put_u32(o, s->queue_depth);
  bf_put_u32(o + 4, s->connections);
  bf_put_u32(o + 8, s->workers);
  bf_put_u32(o + 12, s->served);
  bf_put_f32(o + 16, s->recent_service_ms);
  bf_put_f32(o + 20, s->load_factor);
  bf_put_u32(o + 24, s->n_models);
  for (uint32_t i = 0; i < s->n_models; i++) {
    uint8_t *m = o + STATUS_FIXED + STATUS_MODEL * i;
    memcpy(m, s->models[i].id, BF_MODEL_ID_LEN);
    bf_put_u16(m + 32, s->models[i].split_after);
    bf_put_u16(m + 34, s->models[i].d_r);
    bf_put_f32(m + 36, s->models[i].base_ms);
    bf_put_f32(m + 40, s->models[i].full_base_ms);
  }
}

int bf_status_unpack(const uint8_t *b, size_t len, bf_status *s) {
  memset(s, 0, sizeof *s);
  if (len < STATUS_FIXED) return bf_error(BF_EINVAL, "STATUS_REPLY body of %zu bytes", len);
  s->queue_depth = bf_get_u32(b);
  s->connections = bf_get_u32(b + 4);
  s->workers = bf_get_u32(b + 8);
  s->served = bf_get_u32(b + 12);
  s->recent_service_ms = bf_get_f32(b + 16);
  s->load_factor = bf_get_f32(b + 20);
  s->n_models = bf_get_u32(b + 24);
  if (s->n_models > BF_STATUS_MAX_MODELS || len != bf_status_body_len(s->n_models))
    return bf_error(BF_EINVAL, "STATUS_REPLY: %u models in %zu bytes", s->n_models, len);
  if (!(s->recent_service_ms >= 0 && s->recent_service_ms < 1e9f) || !(s->load_factor >= 0 && s->load_factor < 1e9f))
    return bf_error(BF_EINVAL, "STATUS_REPLY: load figures %g ms / %g not valid", s->recent_service_ms,
                    s->load_factor);
  for (uint32_t i = 0; i < s->n_models; i++) {
    const uint8_t *m = b + STATUS_FIXED + STATUS_MODEL * i;
    memcpy(s->models[i].id, m, BF_MODEL_ID_LEN);
    s->models[i].split_after = bf_get_u16(m + 32);
    s->models[i].d_r = bf_get_u16(m + 34);
    s->models[i].base_ms = bf_get_f32(m + 36);
    s->models[i].full_base_ms = bf_get_f32(m + 40);
    if (!(s->models[i].base_ms >= 0 && s->models[i].base_ms < 1e9f) ||
        !(s->models[i].full_base_ms >= 0 && s->models[i].full_base_ms < 1e9f))
      return bf_error(BF_EINVAL, "STATUS_REPLY: model %u has times %g / %g ms", i, s->models[i].base_ms,
                      s->models[i].full_base_ms);
  }
  return BF_OK;
}

int bf_status_check_model(const bf_status *s, const uint8_t *id, int split_after, int d_r) {
  for (uint32_t i = 0; i < s->n_models; i++)
    if (!memcmp(s->models[i].id, id, BF_MODEL_ID_LEN) &&
        (s->models[i].split_after != split_after || s->models[i].d_r != d_r))
      return bf_error(BF_EINVAL,
                      "STATUS_REPLY: the server lists this model as split %u, D_r %u; the manifest says split %d, "
                      "D_r %d",
                      s->models[i].split_after, s->models[i].d_r, split_after, d_r);
  return BF_OK;
}

int bf_error_unpack(const uint8_t *b, size_t len, uint32_t *code, char *msg, size_t cap) {
  if (len < 8) return bf_error(BF_EINVAL, "ERROR body of %zu bytes", len);
  *code = bf_get_u32(b);
  uint32_t n = bf_get_u32(b + 4);
  if ((uint64_t)n + 8 != len) return bf_error(BF_EINVAL, "ERROR body: message length %u in %zu bytes", n, len);
  size_t k = n < cap - 1 ? n : cap - 1;
  for (size_t i = 0; i < k; i++) msg[i] = (b[8 + i] >= 32 && b[8 + i] < 127) ? (char)b[8 + i] : '?';
  msg[k] = 0;
  return BF_OK;
}

void bf_result_topk(const float *lg, int C, bf_result *r) {
  double mx = lg[0], sum = 0;
  for (int i = 1; i < C; i++)
    if (lg[i] > mx) mx = lg[i];
  for (int i = 0; i < C; i++) sum += exp((double)lg[i] - mx);
  r->num_classes = (uint32_t)C;
  r->k = C < BF_TOPK ? (uint32_t)C : BF_TOPK;
  for (uint32_t j = 0; j < r->k; j++) {
    int best = -1;
    for (int i = 0; i < C; i++) {
      int taken = 0;
      for (uint32_t t = 0; t < j; t++) taken |= r->cls[t] == (uint32_t)i;
      if (!taken && (best < 0 || lg[i] > lg[best])) best = i;
    }
    r->cls[j] = (uint32_t)best;
    r->logit[j] = lg[best];
    r->prob[j] = (float)(exp((double)lg[best] - mx) / sum);
  }
}
