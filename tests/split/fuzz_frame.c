/* libFuzzer target for the frame parser and the payload decoder (the code a
 * hostile client reaches first). Built with clang -fsanitize=fuzzer,address
 * by tests/split/fuzz_frame.sh. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "fuzz_rans.h"
#include "quant.h"
#include "rans.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  bf_frame f;
  /* header only, as the server sees it first */
  if (size >= BF_FRAME_HEADER) (void)bf_frame_parse_header(data, 1u << 20, &f);
  /* whole frame; copy so the parser cannot rely on bytes past the end */
  uint8_t *buf = malloc(size ? size : 1);
  if (!buf) return 0;
  memcpy(buf, data, size);
  if (bf_frame_parse(buf, size, 1u << 20, &f) == 0) {
    if (f.type == BF_MSG_INFER || f.type == BF_MSG_INFER_IMAGE) {
      size_t n = (size_t)f.n * f.h * f.w * f.c;
      float *out = n <= (1u << 22) ? malloc(n * sizeof(float)) : NULL;
      /* codec rans: tables of the frame's width, as a server's manifest would give */
      bf_rans_tables t = {0};
      uint64_t *counts = f.codec == BF_CODEC_RANS && f.c <= 64 ? malloc((size_t)f.c * 256 * sizeof *counts) : NULL;
      if (counts) {
        fuzz_rans_counts(f.c, 8, 0, counts);
        if (bf_rans_tables_from_counts(&t, f.c, 8, counts)) abort();
        for (int ch = 1; ch < t.channels; ch += 2) t.pred[ch] = BF_RANS_PRED_MEDIAN;
      }
      if (out) (void)bf_features_decode_with(&f, t.channels ? &t : NULL, out);
      bf_rans_tables_free(&t);
      free(counts);
      free(out);
    } else if (f.type == BF_MSG_RESULT) {
      bf_result r;
      (void)bf_result_unpack(f.body, f.body_len, 1000, &r);
    } else if (f.type == BF_MSG_STATUS_REPLY) {
      bf_status s;
      (void)bf_status_unpack(f.body, f.body_len, &s);
    } else if (f.type == BF_MSG_ERROR) {
      uint32_t code;
      char msg[64];
      (void)bf_error_unpack(f.body, f.body_len, &code, msg, sizeof msg);
    }
  }
  free(buf);
  return 0;
}
