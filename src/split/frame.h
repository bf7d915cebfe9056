/* Wire format of the butterfly split protocol (docs/protocol.md).
 *
 * A frame is a 64-byte header, a body of body_len bytes and a 4-byte CRC32
 * (zlib's polynomial) of header + body. All integers little-endian. This file
 * is pure: no I/O, no allocation except in bf_frame_build, so the parser is
 * what the fuzzer exercises. */
#ifndef BF_FRAME_H
#define BF_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define BF_FRAME_MAGIC "BFLY"
#define BF_FRAME_VERSION 1
#define BF_FRAME_HEADER 64
#define BF_FRAME_TRAILER 4
#define BF_MODEL_ID_LEN 32
#define BF_TOPK 5

typedef enum bf_msg_type {
  BF_MSG_INFER = 1,        /* client -> server: quantised features of one image */
  BF_MSG_INFER_IMAGE = 2,  /* client -> server: RGB8 image (cloud-only baseline) */
  BF_MSG_STATUS = 3,       /* client -> server: load query (empty body) */
  BF_MSG_RESULT = 17,      /* server -> client: top-k and timings */
  BF_MSG_STATUS_REPLY = 18,/* server -> client: load and models */
  BF_MSG_ERROR = 19        /* server -> client: error code + message; connection closes */
} bf_msg_type;

typedef enum bf_qscheme {
  BF_Q_F32 = 0,         /* raw float32 features, no quantisation */
  BF_Q_U8_TENSOR = 1,   /* uint8 affine, one (scale, zero point) */
  BF_Q_U8_CHANNEL = 2,  /* uint8 affine, one pair per channel */
  BF_Q_U8_PIXELS = 3    /* uint8 RGB pixels (INFER_IMAGE), no parameters */
} bf_qscheme;

/* BF_CODEC_RANS: the model's static rANS tables (rans.h), uint8 schemes only */
typedef enum bf_codec { BF_CODEC_RAW = 0, BF_CODEC_ZSTD = 1, BF_CODEC_RANS = 2 } bf_codec;

typedef enum bf_err_code {
  BF_PERR_BAD_FRAME = 1,     /* magic, version, type, CRC, field values */
  BF_PERR_TOO_LARGE = 2,     /* body_len above the server's cap */
  BF_PERR_UNKNOWN_MODEL = 3, /* model id not served here */
  BF_PERR_BAD_SHAPE = 4,     /* shape / quantisation does not match the model */
  BF_PERR_TIMEOUT = 5,       /* frame not completed within the frame timeout */
  BF_PERR_BUSY = 6,          /* request queue full */
  BF_PERR_TOO_MANY_CONN = 7, /* connection cap reached */
  BF_PERR_INTERNAL = 8,      /* inference failed */
  BF_PERR_SHUTDOWN = 9,      /* server is stopping */
  BF_PERR_BAD_PAYLOAD = 10,  /* payload does not decode (zstd, rans, sizes) */
  BF_PERR_FORBIDDEN = 11     /* TLS client certificate not allowed this model */
} bf_err_code;

const char *bf_perr_name(uint32_t code);
const char *bf_msg_name(uint32_t type);

/* Header fields (offsets in docs/protocol.md). */
typedef struct bf_frame {
  uint8_t version, type;
  uint16_t flags;          /* reserved, 0 */
  uint32_t body_len;
  uint32_t request_id;
  uint8_t model_id[BF_MODEL_ID_LEN];
  uint8_t qscheme, codec;
  uint16_t n, h, w, c;
  uint32_t raw_len;        /* payload bytes after decompression */
  /* set by bf_frame_parse: */
  const uint8_t *body;     /* body_len bytes */
  const uint8_t *qparams;  /* nq * 8 bytes (f32 scale, i32 zero point) */
  uint32_t nq;
  const uint8_t *payload;  /* payload_len bytes (possibly zstd or rans) */
  uint32_t payload_len;
} bf_frame;

/* A frame of a body_len-byte body: header + body + CRC. */
static inline uint64_t bf_frame_len(uint64_t body_len) { return BF_FRAME_HEADER + body_len + BF_FRAME_TRAILER; }

/* An INFER body is nq quantisation pairs (f32 scale, i32 zero point) of
 * BF_QPAIR_BYTES each, then the payload, raw_len bytes before any codec.
 * bf_infer_sizes gives both for scheme q and shape n*h*w*c (INFER_IMAGE:
 * q = BF_Q_U8_PIXELS); -1 for a scheme INFER does not carry. The one place
 * this layout is written: the parser, the encoder and every byte count use it. */
#define BF_QPAIR_BYTES 8
int bf_infer_sizes(int q, uint64_t elems, uint32_t c, uint64_t *nq, uint64_t *raw_len);
/* Frame bytes of one image's features sent without a codec (codec raw). */
static inline uint64_t bf_infer_raw_frame_len(int q, uint64_t elems, uint32_t c) {
  uint64_t nq = 0, raw = 0;
  bf_infer_sizes(q, elems, c, &nq, &raw);
  return bf_frame_len(nq * BF_QPAIR_BYTES + raw);
}

/* Upper bound of a zstd frame holding `raw` bytes that the parser accepts. */
uint64_t bf_frame_zstd_bound(uint64_t raw);

/* Validates the 64-byte header (magic, version, type, reserved fields,
 * body_len <= max_body). buf holds at least BF_FRAME_HEADER bytes.
 * Returns 0 or a bf_err_code with a message (bf_last_error). */
int bf_frame_parse_header(const uint8_t *buf, uint32_t max_body, bf_frame *f);
/* Validates a whole frame of exactly `len` bytes: header, CRC, and the
 * body's structure for its type (sizes consistent with shape and scheme).
 * Pointers in *f point into buf. Returns 0 or a bf_err_code. */
int bf_frame_parse(const uint8_t *buf, size_t len, uint32_t max_body, bf_frame *f);

/* Serialises header fields of *f (body_len taken from body_len argument)
 * followed by body and CRC into a malloc'ed buffer. */
int bf_frame_build(const bf_frame *f, const void *body, size_t body_len, uint8_t **out, size_t *out_len);

/* ---- typed bodies ---- */
typedef struct bf_result {
  uint32_t k, num_classes;
  float server_ms, compute_ms; /* server_ms: queue wait + compute */
  uint32_t cls[BF_TOPK];
  float logit[BF_TOPK], prob[BF_TOPK];
} bf_result;
#define BF_RESULT_BODY (16 + 12 * BF_TOPK)
/* Top-k (k = min(5, C)) of logits with softmax probabilities. */
void bf_result_topk(const float *logits, int C, bf_result *r);
void bf_result_pack(const bf_result *r, uint8_t out[BF_RESULT_BODY]);
/* num_classes: the reader's own class count (its manifest); the body must
 * agree with it (k = min(5, C), classes < C, finite logits, probabilities in
 * 0..1). */
int bf_result_unpack(const uint8_t *body, size_t len, uint32_t num_classes, bf_result *r);

#define BF_STATUS_MAX_MODELS 64
typedef struct bf_status_model {
  uint8_t id[BF_MODEL_ID_LEN];
  uint16_t split_after, d_r;
  float base_ms;      /* profiled server-half time on an idle server */
  float full_base_ms; /* profiled whole-model time (cloud-only); 0 if unknown */
} bf_status_model;
typedef struct bf_status {
  uint32_t queue_depth, connections, workers, served;
  float recent_service_ms; /* EWMA of queue wait + compute */
  float load_factor;       /* EWMA of compute / profiled compute (1 = idle) */
  uint32_t n_models;
  bf_status_model models[BF_STATUS_MAX_MODELS];
} bf_status;
size_t bf_status_body_len(uint32_t n_models);
void bf_status_pack(const bf_status *s, uint8_t *out);
int bf_status_unpack(const uint8_t *body, size_t len, bf_status *s);
/* If s lists model `id`, its split point and D_r must be the manifest's. */
int bf_status_check_model(const bf_status *s, const uint8_t *id, int split_after, int d_r);

/* ERROR body: u32 code, u32 length, message bytes (not NUL terminated). */
int bf_error_unpack(const uint8_t *body, size_t len, uint32_t *code, char *msg, size_t msg_cap);

/* Little-endian helpers. */
static inline void bf_put_u16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8); }
static inline void bf_put_u32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8), p[2] = (uint8_t)(v >> 16), p[3] = (uint8_t)(v >> 24);
}
static inline uint16_t bf_get_u16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static inline uint32_t bf_get_u32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
void bf_put_f32(uint8_t *p, float v);
float bf_get_f32(const uint8_t *p);

#endif
